//! Container logs end to end (issue 15): the real agent with real shim + runc containers, its
//! logs read through `edged logs` beside it and through its HTTP API (a plain TCP client
//! here): rotation, `--previous` after a restart, `-f` across rotations ending with the
//! container, `--tail`, `--timestamps`, `--limit-bytes`, `--since-time`, the multi-container
//! error; `/healthz`, `/pods`, `/containerLogs` (with follow); and no plain HTTP beyond
//! loopback. Run as root: `cargo test --test logs`.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;

use agent::{http_get, pod, sh, Agent};
use host::BIN;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What the logs tests ask of the shared test agent.
trait LogsAgent {
    fn logs_cmd(&self, args: &[&str]) -> Command;
    fn edged_logs(&self, args: &[&str]) -> Output;
    fn log_dir(&self, pod: &str, container: &str) -> PathBuf;
    fn wait_logs(&self, args: &[&str], needle: &str) -> String;
}

impl LogsAgent for Agent {
    /// `edged logs ARGS` beside the agent.
    fn logs_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root-dir")
            .arg(self.root())
            .arg("--pod-log-dir")
            .arg(self.logs())
            .arg("logs")
            .args(args);
        c
    }

    fn edged_logs(&self, args: &[&str]) -> Output {
        self.logs_cmd(args).output().expect("run edged logs")
    }

    /// The container's log directory.
    fn log_dir(&self, pod: &str, container: &str) -> PathBuf {
        let prefix = format!("default_{pod}_");
        std::fs::read_dir(self.logs())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path().join(container))
            .unwrap_or_else(|| panic!("no log dir of {pod}"))
    }

    /// Waits until `edged logs ARGS` prints a line holding `needle`; returns the output.
    fn wait_logs(&self, args: &[&str], needle: &str) -> String {
        self.wait_for(&format!("{needle:?} in edged logs {args:?}"), || {
            let out = self.edged_logs(args);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains(needle).then_some(text)
        })
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn numbered(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("line {i:03}\n")).collect()
}

/// Files of a container's log dir whose name starts with `<attempt>.log.` (rotated ones).
fn rotated(dir: &std::path::Path, attempt: u32) -> usize {
    let prefix = format!("{attempt}.log.");
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

/// 200 numbered lines, a 40000-byte line (split into partial pieces by the copier), a line
/// on stderr (apart in time: the two streams are copied with no order between them):
/// through rotation at 2 KiB, read by the CLI and the API.
#[test]
fn rotated_logs_tail_timestamps_limit_and_the_api() {
    let script = "i=0; while [ $i -lt 200 ]; do printf 'line %03d\\n' $i; i=$((i+1)); done; \
                  head -c 40000 /dev/zero | tr '\\0' x; echo; sleep 0.5; echo to stderr >&2; sleep 0.5; echo end; \
                  sleep 1000";
    let a = Agent::start(
        "rot",
        &[
            "--container-log-max-size",
            "2Ki",
            "--container-log-max-files",
            "100",
        ],
        &[pod(
            "chatty",
            vec![sh("app", script), sh("side", "sleep 1000")],
            json!({}),
        )],
    );
    let all = a.wait_logs(&["chatty", "-c", "app"], "end\n");
    let long = format!("{}\n", "x".repeat(40000));
    assert_eq!(
        all,
        format!("{}{long}to stderr\nend\n", numbered(0, 200)),
        "every line, in order, across the rotated files"
    );
    let dir = a.log_dir("chatty", "app");
    assert!(rotated(&dir, 0) >= 5, "rotated files in {}", dir.display());

    // Several containers and no -c: kubectl's error, naming them.
    let o = a.edged_logs(&["chatty"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "edged: a container name must be specified for pod chatty, choose one of: [app side]\n"
    );
    for (args, says) in [
        (
            &["nope"][..],
            "pod \"nope\" not found in namespace \"default\"",
        ),
        (
            &["chatty", "-c", "nope"][..],
            "container \"nope\" not found in pod \"chatty\"",
        ),
        (&["chatty", "-c", "app", "-n", "other"][..], "not found"),
    ] {
        let o = a.edged_logs(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }

    // --tail counts whole lines: the long line is one.
    let o = a.edged_logs(&["chatty", "-c", "app", "--tail", "3"]);
    assert_eq!(stdout(&o), format!("{long}to stderr\nend\n"));
    let o = a.edged_logs(&["chatty", "-c", "app", "--tail", "5"]);
    assert_eq!(
        stdout(&o),
        format!("line 198\nline 199\n{long}to stderr\nend\n")
    );
    let o = a.edged_logs(&["chatty", "-c", "app", "--tail", "0"]);
    assert_eq!(stdout(&o), "");

    // --timestamps: RFC 3339 with nanoseconds, then the line.
    let o = a.edged_logs(&["chatty", "-c", "app", "--tail", "2", "--timestamps"]);
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (l, want) in lines.iter().zip(["to stderr", "end"]) {
        let (ts, rest) = l.split_once(' ').unwrap();
        assert_eq!(rest, want);
        assert_eq!(ts.len(), 30, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        assert!(edged::api::parse_rfc3339(ts).is_some(), "{ts}");
    }

    // --limit-bytes cuts the output.
    let o = a.edged_logs(&["chatty", "-c", "app", "--limit-bytes", "20"]);
    assert_eq!(stdout(&o), "line 000\nline 001\nli");

    // --since-time after every line: nothing; --since an hour: everything.
    let o = a.edged_logs(&[
        "chatty",
        "-c",
        "app",
        "--since-time",
        "2999-01-01T00:00:00Z",
    ]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), String::new()));
    let o = a.edged_logs(&["chatty", "-c", "app", "--since", "1h"]);
    assert_eq!(stdout(&o), all);
    let o = a.edged_logs(&[
        "chatty",
        "-c",
        "app",
        "--since",
        "1h",
        "--since-time",
        "2999-01-01T00:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // The HTTP API.
    let (status, _, body) = a.get("/healthz");
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
    let (status, head, body) = a.get("/pods");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"), "{head}");
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"][0]["metadata"]["name"], "chatty");
    assert_eq!(list["items"][0]["spec"]["containers"][1]["name"], "side");
    assert!(list["items"][0]["status"]["phase"].is_string(), "{list}");
    let (status, head, body) = a.get("/containerLogs/default/chatty/app");
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert_eq!(
        (status, String::from_utf8_lossy(&body).to_string()),
        (200, all.clone())
    );
    let (_, _, body) = a.get("/containerLogs/default/chatty/app?tailLines=4&limitBytes=17");
    assert_eq!(String::from_utf8_lossy(&body), "line 199\nxxxxxxxx");
    let (_, _, body) = a.get("/containerLogs/default/chatty/app?tailLines=1&timestamps=true");
    let body = String::from_utf8_lossy(&body).to_string();
    assert!(body.ends_with("Z end\n") && body.len() == 35, "{body:?}");
    for (path, code, says) in [
        (
            "/containerLogs/default/chatty/app?tailLines=x",
            400,
            "tailLines",
        ),
        (
            "/containerLogs/default/chatty/app?sinceSeconds=0",
            400,
            "sinceSeconds",
        ),
        (
            "/containerLogs/default/chatty/app?sinceTime=soon",
            400,
            "sinceTime",
        ),
        (
            "/containerLogs/default/chatty/app?previous=true",
            400,
            "previous terminated container",
        ),
        ("/containerLogs/default/nope/app", 404, "pod \"nope\""),
        (
            "/containerLogs/default/chatty/nope",
            404,
            "container \"nope\"",
        ),
        // Exec is served, but only as an upgrade (SPDY or WebSocket).
        (
            "/exec/default/chatty/app?command=ls",
            400,
            "unable to upgrade",
        ),
        ("/containerLogs/default/chatty", 404, "404 page not found"),
    ] {
        let (status, _, body) = a.get(path);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, code, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    // Two requests on one kept-alive connection.
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: n\r\n\r\nGET /healthz HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut both = String::new();
    s.read_to_string(&mut both).unwrap();
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");
}

/// An instance that restarts: `--previous` shows the one before; `-f` on the current one
/// prints what it writes meanwhile and ends when it exits, by itself.
#[test]
fn previous_after_a_restart_and_follow_until_the_end() {
    // An emptyDir outlives the instances: each one counts itself.
    let script = "n=$(cat /data/n 2>/dev/null || echo 0); echo $((n+1)) > /data/n; \
                  echo instance $n; if [ $n -ge 1 ]; then sleep 4; fi; echo done $n; exit 1";
    let mut c = sh("app", script);
    c["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    let a = Agent::start(
        "prev",
        &[],
        &[pod(
            "restarter",
            vec![c],
            json!({"volumes": [{"name": "data", "emptyDir": {}}]}),
        )],
    );
    // Instance 1 running (it sleeps 4 s before its last line).
    a.wait_pod("restarter", "instance 1 running", |p| {
        let s = &p["status"]["containerStatuses"][0];
        s["restartCount"] == 1 && s["state"]["running"].is_object()
    });
    a.wait_logs(&["restarter"], "instance 1\n");
    let mut follow = a
        .logs_cmd(&["restarter", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let still = a.pod("restarter").unwrap();
    if still["status"]["containerStatuses"][0]["state"]["running"].is_object() {
        assert!(
            follow.try_wait().unwrap().is_none(),
            "-f ended while its container runs"
        );
    }
    let started = Instant::now();
    a.wait_for("edged logs -f to end with its container", || {
        follow.try_wait().unwrap().map(|_| ())
    });
    let mut text = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(follow.wait().unwrap().success());
    assert_eq!(
        text,
        "instance 1\ndone 1\n",
        "(ended after {:?})",
        started.elapsed()
    );

    let prev = a.edged_logs(&["restarter", "--previous"]);
    assert_eq!(stdout(&prev), "instance 0\ndone 0\n", "{}", stderr(&prev));
    // With a third instance, the previous is the second.
    a.wait_logs(&["restarter"], "instance 2\n");
    let prev = a.edged_logs(&["restarter", "--previous"]);
    assert_eq!(stdout(&prev), "instance 1\ndone 1\n");
    let (_, _, body) = a.get("/containerLogs/default/restarter/app?previous=1");
    assert_eq!(String::from_utf8_lossy(&body), "instance 1\ndone 1\n");
}

/// A container writing lines slowly through many rotations (1 KiB files), followed from its
/// start by `edged logs -f` and by two API clients: each gets every line once, in order, and
/// ends when the container exits.
#[test]
fn follow_across_rotations_ends_with_the_container() {
    let script = "sleep 2; i=0; while [ $i -lt 150 ]; do printf 'line %03d\\n' $i; i=$((i+1)); \
                  sleep 0.02; done";
    let a = Agent::start(
        "follow",
        &[
            "--container-log-max-size",
            "1Ki",
            "--container-log-max-files",
            "3",
        ],
        &[pod(
            "slow",
            vec![sh("app", script)],
            json!({"restartPolicy": "Never"}),
        )],
    );
    a.wait_pod("slow", "running", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    let follow = a
        .logs_cmd(&["slow", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let api: Vec<_> = (0..2)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
            std::thread::spawn(move || http_get(s, "/containerLogs/default/slow/app?follow=true"))
        })
        .collect();
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), numbered(0, 150));
    for t in api {
        let (status, _, body) = t.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(String::from_utf8_lossy(&body), numbered(0, 150));
    }
    let dir = a.log_dir("slow", "app");
    assert_eq!(rotated(&dir, 0), 2, "rotated and pruned: {}", dir.display());
    let p = a.pod("slow").unwrap();
    assert!(
        p["status"]["containerStatuses"][0]["state"]["terminated"].is_object(),
        "the follower ended before its container"
    );
}

/// Bound beyond loopback with no node certificate, the API does not start (one error line)
/// and nothing answers plain HTTP; the agent runs on.
#[test]
fn a_non_loopback_address_without_certificates_serves_no_plain_http() {
    let a = Agent::start(
        "tls",
        &["--address", "0.0.0.0"],
        &[pod(
            "idle",
            vec![sh("app", "echo up; sleep 1000")],
            json!({}),
        )],
    );
    let line = a.wait_for("the refusal line", || {
        a.agent_log()
            .lines()
            .find(|l| l.contains("kubelet API not started"))
            .map(str::to_string)
    });
    assert!(
        line.contains("ERROR") && line.contains("no node certificate"),
        "{line}"
    );
    a.wait_logs(&["idle"], "up\n");
    assert!(
        TcpStream::connect(("127.0.0.1", a.port)).is_err(),
        "something listens on the port"
    );
}

/// PEM text of one DER object.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = edged::api::base64::encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A test CA: its certificate as PEM and DER, and the issuer that signs with it.
struct TestCa {
    pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn test_ca() -> TestCa {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "KubeEdge");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    TestCa {
        pem: pem("CERTIFICATE", cert.der()),
        der: cert.der().clone(),
        issuer: rcgen::Issuer::new(p, key),
    }
}

/// A certificate signed by `ca` for `127.0.0.1`: its PEM, its key's PKCS #8 PEM, and both
/// as rustls takes them.
fn signed(
    ca: &TestCa,
    cn: &str,
) -> (
    String,
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (
        pem("CERTIFICATE", cert.der()),
        pem("PRIVATE KEY", &key.serialize_der()),
        cert.der().clone(),
        der_key,
    )
}

/// `GET /healthz` over TLS to `port`, trusting `ca`, presenting `client` if given; the
/// response text, or the error that ended it.
fn tls_healthz(
    port: u16,
    ca: &TestCa,
    client: Option<(
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<String, std::io::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let cfg = match client {
        Some((c, k)) => b.with_client_auth_cert(vec![c], k).unwrap(),
        None => b.with_no_client_auth(),
    };
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    tls.read_to_string(&mut out)?;
    Ok(out)
}

/// Beyond loopback with the node certificate: TLS only, a client certificate from the node
/// certificate's CA required; plain HTTP gets no HTTP answer.
#[test]
fn a_non_loopback_address_serves_tls_with_client_certificates_only() {
    let ca = test_ca();
    let (node_pem, node_key, _, _) = signed(&ca, "system:node:logs-node");
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("ca.crt"), &ca.pem).unwrap();
    std::fs::write(certs.path().join("node.crt"), node_pem).unwrap();
    std::fs::write(certs.path().join("node.key"), node_key).unwrap();
    let cert_dir = certs.path().to_string_lossy().to_string();
    let a = Agent::start(
        "mtls",
        &["--address", "0.0.0.0", "--cert-dir", &cert_dir],
        &[],
    );
    a.wait_for("the API listening with TLS", || {
        a.agent_log()
            .contains("kubelet API listening address=0.0.0.0")
            .then_some(())
    });
    assert!(a.agent_log().contains("tls=true"), "{}", a.agent_log());

    // Plain HTTP: the handshake fails; no HTTP answer comes back.
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: n\r\n\r\n")
        .unwrap();
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    assert!(!back.starts_with(b"HTTP/"), "plain HTTP answered: {back:?}");

    // TLS without a client certificate, or with one from another CA: refused.
    let r = tls_healthz(a.port, &ca, None);
    assert!(r.is_err(), "served without a client certificate: {r:?}");
    let other = test_ca();
    let (_, _, c, k) = signed(&other, "intruder");
    let r = tls_healthz(a.port, &ca, Some((c, k)));
    assert!(r.is_err(), "served a certificate of another CA: {r:?}");

    // With one the node's CA signed: served.
    let (_, _, c, k) = signed(&ca, "cloudstream");
    let r = tls_healthz(a.port, &ca, Some((c, k))).expect("TLS with a client certificate");
    assert!(
        r.starts_with("HTTP/1.1 200 OK") && r.ends_with("\r\n\r\nok"),
        "{r}"
    );
}
