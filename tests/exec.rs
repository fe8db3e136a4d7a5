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
        &[pod("spdy-shell", vec![sh("c", "sleep 100000")], json!({}))],
    );
    a.wait_running("spdy-shell");
    let api = a.api();
    let v4 = &["v4.channel.k8s.io"][..];

    // stdin in, both outputs back, the exit code in the Status.
    let path = exec_path(
        "spdy-shell",
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
    let path = exec_path("spdy-shell", "c", &["sh"], "input=1&output=1&tty=1");
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
    let path = exec_path("spdy-shell", "c", &["/no/such/command"], "output=1&error=1");
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
        ("spdy-shell", "container x is not valid"),
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
    let r = Client::connect(&api, &exec_path("spdy-shell", "c", &["true"], ""), v4)
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
            "pf-web",
            vec![sh(
                "httpd",
                "mkdir -p /tmp/www && echo served-from-the-pod > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www",
            )],
            json!({}),
        )],
    );
    a.wait_running("pf-web");
    let mut c = Client::connect(
        &a.api(),
        "/portForward/default/pf-web",
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

#[test]
fn attach_over_spdy_joins_the_containers_own_process() {
    let mut talk = sh(
        "c",
        "while read l; do echo \"got $l\"; echo \"err $l\" >&2; done; echo bye",
    );
    talk["stdin"] = json!(true);
    talk["stdinOnce"] = json!(true);
    let mut term = sh("t", "exec sh");
    term["stdin"] = json!(true);
    term["tty"] = json!(true);
    let a = Agent::start(
        "attach-spdy",
        &[],
        &[
            pod("talk", vec![talk], json!({"restartPolicy": "Never"})),
            pod("term", vec![term], json!({})),
        ],
    );
    a.wait_running("talk");
    a.wait_running("term");
    let api = a.api();
    let v4 = &["v4.channel.k8s.io"][..];

    // Lines in, both streams out; the end of this session's input is the container's
    // (stdinOnce), so it says bye and the session ends with it.
    let mut c = Client::connect(&api, "/attach/default/talk/c?input=1&output=1&error=1", v4)
        .expect("upgraded");
    let err = c.open(&[("streamtype", "error")]);
    let stdin = c.open(&[("streamtype", "stdin")]);
    let stdout = c.open(&[("streamtype", "stdout")]);
    let stderr = c.open(&[("streamtype", "stderr")]);
    for id in [err, stdin, stdout, stderr] {
        assert!(c.wait_reply(id), "stream {id} replied");
    }
    c.write(stdin, b"one\n");
    assert_eq!(c.read_at_least(stdout, 8), b"got one\n");
    c.write(stdin, b"two\n");
    c.close(stdin);
    let s = status(&mut c, err);
    assert_eq!(exit_code(&s), 0, "{s}");
    c.read_all();
    assert_eq!(c.streams[&stdout].data, b"got one\ngot two\nbye\n");
    assert_eq!(c.streams[&stderr].data, b"err one\nerr two\n");
    a.wait_pod("talk", "exited after its stdin closed", |p| {
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    });

    // A terminal: what is typed is run and echoed by the terminal.
    let mut c = Client::connect(&api, "/attach/default/term/t?input=1&output=1&tty=1", v4)
        .expect("upgraded");
    let _err = c.open(&[("streamtype", "error")]);
    let stdin = c.open(&[("streamtype", "stdin")]);
    let stdout = c.open(&[("streamtype", "stdout")]);
    let _resize = c.open(&[("streamtype", "resize")]);
    c.write(stdin, b"echo $((6*7))x\n");
    let mut seen = String::new();
    for _ in 0..50 {
        seen = String::from_utf8_lossy(&c.read_at_least(stdout, seen.len() + 1)).to_string();
        if seen.contains("42x\r\n") {
            break;
        }
    }
    assert!(seen.contains("42x\r\n"), "{seen:?}");
    // Leaving an attach leaves the container running.
    drop(c);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        a.pod("term").unwrap()["status"]["containerStatuses"][0]["state"]["running"].is_object()
    );
}

#[test]
fn edged_exec_runs_commands_in_real_containers() {
    let mut echoer = sh("e", "while read l; do echo \"got $l\"; done; echo bye");
    echoer["stdin"] = json!(true);
    echoer["stdinOnce"] = json!(true);
    let a = Agent::start(
        "exec-cli",
        &[],
        &[
            pod(
                "cli-shell",
                vec![sh("c", "sleep 100000"), sh("side", "sleep 100000")],
                json!({}),
            ),
            pod(
                "cli-echoer",
                vec![echoer],
                json!({"restartPolicy": "Never"}),
            ),
        ],
    );
    a.wait_running("cli-shell");
    a.wait_running("cli-echoer");
    let run = |args: &[&str], input: &[u8]| {
        let mut cmd = a.edged(args);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("edged exec");
        let mut i = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut i, input).unwrap();
        drop(i);
        child.wait_with_output().unwrap()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();

    // Outputs and the exit code, the first container chosen and said so.
    let o = run(
        &[
            "exec",
            "cli-shell",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 4",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "out\n");
    let e = text(&o.stderr);
    assert!(
        e.contains("err\n") && e.contains("Defaulted container \"c\""),
        "{e}"
    );

    // stdin with -i, into a named container.
    let o = run(
        &[
            "exec",
            "-c",
            "side",
            "-i",
            "cli-shell",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z",
        ],
        b"piped in\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "PIPED IN\n");

    // A command that does not exist: 127 and why.
    let o = run(&["exec", "-c", "c", "cli-shell", "--", "/no/such"], b"");
    assert_eq!(o.status.code(), Some(127), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no such file"),
        "{}",
        text(&o.stderr)
    );

    // attach -i: the container's own stdin; its end (stdinOnce) ends the container and the
    // session with it.
    let o = run(&["attach", "-i", "cli-echoer"], b"a\nb\n");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "got a\ngot b\nbye\n");

    // A pod that is not there.
    let o = run(&["exec", "ghost", "--", "true"], b"");
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("ghost"), "{}", text(&o.stderr));
}

#[test]
fn exec_and_port_forward_over_websocket_with_a_crates_io_client() {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let a = Agent::start(
        "exec-ws",
        &[],
        &[pod(
            "ws-web",
            vec![
                sh("c", "sleep 100000"),
                sh(
                    "httpd",
                    "mkdir -p /tmp/www && echo over-websocket > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8081 -h /tmp/www",
                ),
            ],
            json!({}),
        )],
    );
    a.wait_running("ws-web");
    let connect = |path: &str, protocol: &str| {
        let s = std::net::TcpStream::connect(a.api()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut req = format!("ws://{}{path}", a.api())
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (ws, resp) = tungstenite::client::client(req, s).expect("upgraded");
        assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], protocol);
        ws
    };

    // v5 (what kubectl 1.30+ speaks): stdin on channel 0, its end as the close signal.
    let path = exec_path(
        "ws-web",
        "c",
        &["sh", "-c", "cat; exit 6"],
        "stdin=1&stdout=1",
    );
    let mut ws = connect(&path, "v5.channel.k8s.io");
    ws.send(Message::binary(b"\x00over the websocket\n".to_vec()))
        .unwrap();
    ws.send(Message::binary(vec![255, 0])).unwrap();
    let (mut out, mut status) = (Vec::new(), Vec::new());
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) if !b.is_empty() => match b[0] {
                1 => out.extend_from_slice(&b[1..]),
                3 => status.extend_from_slice(&b[1..]),
                _ => {}
            },
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert_eq!(out, b"over the websocket\n");
    let v: Value = serde_json::from_slice(&status).expect("a Status");
    assert_eq!(exit_code(&v), 6, "{v}");

    // Port-forward over WebSocket (v4): the port comes first on each channel, then the bytes.
    let mut ws = connect(
        "/portForward/default/ws-web?ports=8081",
        "v4.channel.k8s.io",
    );
    ws.send(Message::binary(
        [&[0u8][..], b"GET /index.html HTTP/1.0\r\n\r\n"].concat(),
    ))
    .unwrap();
    let mut got = Vec::new();
    let mut first_on = std::collections::HashSet::new();
    while !String::from_utf8_lossy(&got).contains("over-websocket") {
        match ws.read() {
            Ok(Message::Binary(b)) if !b.is_empty() => {
                if first_on.insert(b[0]) {
                    // Each channel opens with the port, little-endian.
                    assert_eq!(&b[1..], &8081u16.to_le_bytes(), "channel {}", b[0]);
                } else if b[0] == 0 {
                    got.extend_from_slice(&b[1..]);
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let got = String::from_utf8_lossy(&got).to_string();
    assert!(
        got.starts_with("HTTP/1.") && got.contains("over-websocket"),
        "{got}"
    );
}

#[test]
fn edged_exec_t_on_a_real_terminal_forwards_resizes_and_restores_it() {
    let a = Agent::start(
        "exec-tty",
        &[],
        &[pod("tty-shell", vec![sh("c", "sleep 100000")], json!({}))],
    );
    a.wait_running("tty-shell");
    let t = a.dir.path();
    // Under `script`, edged's stdin and stdout are a real pseudo-terminal; two seconds in, the
    // terminal is resized (the kernel sends SIGWINCH to edged, the foreground process).
    let run = t.join("run.sh");
    std::fs::write(
        &run,
        format!(
            "(sleep 2; stty rows 50 cols 120 < /dev/tty) &\n\
             stty -g > {t}/before\n\
             {bin} --port {port} exec -i -t tty-shell -- sh -c 'while [ \"$(busybox stty size)\" != \"50 120\" ]; do sleep 0.2; done; echo resized; exit 3'\n\
             echo $? > {t}/rc\n\
             stty -g > {t}/after\n",
            t = t.display(),
            bin = host::BIN,
            port = a.port
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("script")
        .args(["-qec", &format!("sh {}", run.display()), "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    let stdin = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let read = |f: &str| std::fs::read_to_string(t.join(f)).unwrap_or_default();
    assert!(
        text.contains("resized"),
        "{text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read("rc").trim(), "3", "{text:?}");
    // The terminal's settings are what they were before edged put it in raw mode.
    assert!(!read("before").is_empty());
    assert_eq!(read("before"), read("after"));
}
