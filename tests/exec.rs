//! Exec and port-forward end to end (issues 15 and 16): the real agent with real shim + runc
//! containers, reached on its kubelet API over SPDY/3.1 as the API server (and KubeEdge's
//! tunnel) reach a kubelet; the client is the test SPDY client of tests/common/spdy.rs. Run as
//! root: `cargo test --test exec`.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;

#[allow(dead_code)]
#[path = "common/spdy.rs"]
mod spdy;

use agent::{pod, sh, Agent};
use serde_json::{json, Value};
use spdy::Client;

/// `/exec/default/<pod>/<container>` with `command` and the stream flags as the API server
/// sends them.
fn exec_path(pod: &str, container: &str, cmd: &[&str], flags: &str) -> String {
    let mut p = format!("/exec/default/{pod}/{container}?{flags}");
    for c in cmd {
        p.push_str("&command=");
        p.push_str(
            &c.replace('%', "%25")
                .replace(' ', "%20")
                .replace('&', "%26")
                .replace(';', "%3B")
                .replace('>', "%3E")
                .replace('\'', "%27")
                .replace('"', "%22"),
        );
    }
    p
}

/// Reads the error stream's v1 Status.
fn status(c: &mut Client, err: u32) -> Value {
    let bytes = c.read_to_end(err);
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(&bytes)))
}

fn exit_code(v: &Value) -> i64 {
    match v["status"].as_str() {
        Some("Success") => 0,
        _ => v["details"]["causes"][0]["message"]
            .as_str()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("no exit code in {v}")),
    }
}

#[test]
fn exec_over_spdy_streams_a_real_container() {
    let a = Agent::start(
        "exec-spdy",
        &[],
        &[pod("shell", vec![sh("c", "sleep 100000")], json!({}))],
    );
    a.wait_running("shell");
    let api = a.api();
    let v4 = &["v4.channel.k8s.io"][..];

    // stdin in, both outputs back, the exit code in the Status.
    let path = exec_path(
        "shell",
        "c",
        &["sh", "-c", "cat; echo err >&2; exit 3"],
        "input=1&output=1&error=1",
    );
    let mut c = Client::connect(&api, &path, v4).expect("upgraded");
    assert_eq!(c.protocol, "v4.channel.k8s.io");
    let err = c.open(&[("streamtype", "error")]);
    let stdin = c.open(&[("streamtype", "stdin")]);
    let stdout = c.open(&[("streamtype", "stdout")]);
    let stderr = c.open(&[("streamtype", "stderr")]);
    c.write(stdin, b"hello from stdin\n");
    c.close(stdin);
    let s = status(&mut c, err);
    assert_eq!(exit_code(&s), 3, "{s}");
    assert_eq!(s["reason"], "NonZeroExitCode");
    c.read_all();
    assert_eq!(c.streams[&stdout].data, b"hello from stdin\n");
    assert_eq!(c.streams[&stderr].data, b"err\n");

    // A terminal: one output stream, resized by the client.
    let path = exec_path("shell", "c", &["sh"], "input=1&output=1&tty=1");
    let mut c = Client::connect(&api, &path, v4).expect("upgraded");
    let err = c.open(&[("streamtype", "error")]);
    let stdin = c.open(&[("streamtype", "stdin")]);
    let stdout = c.open(&[("streamtype", "stdout")]);
    let resize = c.open(&[("streamtype", "resize")]);
    c.write(resize, b"{\"Width\":100,\"Height\":40}");
    c.write(
        stdin,
        b"[ -t 0 ] && echo on-a-tty; while [ \"$(busybox stty size)\" != '40 100' ]; do sleep 0.1; done; echo size-ok; exit 0\n",
    );
    let s = status(&mut c, err);
    assert_eq!(exit_code(&s), 0, "{s}");
    c.read_all();
    let out = String::from_utf8_lossy(&c.streams[&stdout].data).to_string();
    // The terminal echoes the input line, so look for the words at line starts.
    assert!(out.contains("\non-a-tty\r\n"), "{out:?}");
    assert!(out.contains("\nsize-ok\r\n"), "{out:?}");

    // A command that does not exist: 127, and why on stderr.
    let path = exec_path("shell", "c", &["/no/such/command"], "output=1&error=1");
    let mut c = Client::connect(&api, &path, v4).expect("upgraded");
    let err = c.open(&[("streamtype", "error")]);
    let _stdout = c.open(&[("streamtype", "stdout")]);
    let stderr = c.open(&[("streamtype", "stderr")]);
    let s = status(&mut c, err);
    assert_eq!(exit_code(&s), 127, "{s}");
    c.read_all();
    let why = String::from_utf8_lossy(&c.streams[&stderr].data).to_string();
    assert!(why.contains("no such file"), "{why}");

    // Unknown pods and containers are refused before the upgrade, as the kubelet does.
    for (p, what) in [
        ("nope", "pod default/nope not found"),
        ("shell", "container x is not valid"),
    ] {
        let path = exec_path(
            p,
            if p == "nope" { "c" } else { "x" },
            &["true"],
            "output=1",
        );
        let r = Client::connect(&api, &path, v4).err().expect("refused");
        assert_eq!(r.status, 404, "{}", r.head);
        assert!(r.body.contains(what), "{}", r.body);
    }
    // Not an upgrade at all: 400.
    let r = Client::connect(&api, &exec_path("shell", "c", &["true"], ""), v4)
        .err()
        .expect("refused");
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn port_forward_over_spdy_reaches_the_pods_loopback() {
    let a = Agent::start(
        "pf-spdy",
        &[],
        &[pod(
            "web",
            vec![sh(
                "httpd",
                "mkdir -p /tmp/www && echo served-from-the-pod > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www",
            )],
            json!({}),
        )],
    );
    a.wait_running("web");
    let mut c = Client::connect(
        &a.api(),
        "/portForward/default/web",
        &["portforward.k8s.io"],
    )
    .expect("upgraded");
    let request = |c: &mut Client, id: &str, port: &str| {
        let err = c.open(&[("streamtype", "error"), ("port", port), ("requestid", id)]);
        let data = c.open(&[("streamtype", "data"), ("port", port), ("requestid", id)]);
        (err, data)
    };
    // Reached only inside the pod: the host has nothing on 127.0.0.1:8080.
    let (_, data) = request(&mut c, "0", "8080");
    c.write(data, b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n");
    let got = String::from_utf8_lossy(&c.read_to_end(data)).to_string();
    assert!(
        got.starts_with("HTTP/1.") && got.contains("served-from-the-pod"),
        "{got}"
    );
    // A port nothing listens on: the error stream says so.
    let (err, _) = request(&mut c, "1", "9");
    let why = String::from_utf8_lossy(&c.read_to_end(err)).to_string();
    assert!(
        why.contains("9") && why.to_lowercase().contains("refused"),
        "{why}"
    );
}
