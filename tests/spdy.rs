//! The SPDY/3.1 transport of exec/attach/port-forward, end to end over a socket pair: the
//! server side is `spdy::serve_remotecommand`/`serve_portforward` on a smol thread with an echo
//! session (or a local TCP echo server as the port-forward target), the client side the test
//! client in tests/common/spdy.rs. No containers: `cargo test --test spdy`.
//!
//! `client_go_interop` (ignored) serves the echo session on `SPDY_ECHO_ADDR` for client-go's
//! `remotecommand.NewSPDYExecutor` (a Go program run by hand).

#[allow(dead_code)]
#[path = "common/spdy.rs"]
mod spdy;

use edged::server::http::{parse_request, Request};
use edged::server::streaming::spdy as server;
use edged::server::streaming::{Dial, Outcome, Session, StreamOptions, Streams};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Async;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

type Serve = Box<
    dyn FnOnce(
            Async<UnixStream>,
            Request,
            Vec<u8>,
        ) -> Pin<Box<dyn std::future::Future<Output = ()>>>
        + Send,
>;

/// Reads a request head off `s`: the request and the bytes past it.
async fn read_head(s: &mut Async<UnixStream>) -> (Request, Vec<u8>) {
    let mut buf = Vec::new();
    loop {
        if let Some((r, used)) = parse_request(&buf).unwrap() {
            return (r, buf[used..].to_vec());
        }
        let mut tmp = [0u8; 1024];
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "the client left before its request head");
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// A server thread on one end of a socket pair; the other end for the client.
fn serve(f: Serve) -> (UnixStream, JoinHandle<()>) {
    let (a, b) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        smol::block_on(async move {
            let mut s = Async::new(b).unwrap();
            let (req, early) = read_head(&mut s).await;
            f(s, req, early).await;
        })
    });
    a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    (a, t)
}

/// Echoes stdin to stdout (and to stderr, if asked); each resize is written to stdout as
/// `resize WxH`; a line `exit N` ends the session with code N (else 0 when stdin closes).
fn echo() -> Session {
    Box::new(|mut st: Streams| {
        Box::pin(async move {
            let out = st.stdout.take();
            let err = st.stderr.take();
            let resizes = {
                let out = out.clone();
                let rx = st.resize.take();
                async move {
                    if let Some(rx) = rx {
                        while let Ok(s) = rx.recv().await {
                            if let Some(o) = &out {
                                let _ = o
                                    .send(format!("resize {}x{}\n", s.width, s.height).into_bytes())
                                    .await;
                            }
                        }
                    }
                }
            };
            let input = async {
                let mut code = 0;
                if let Some(rx) = st.stdin.take() {
                    'read: while let Ok(chunk) = rx.recv().await {
                        // Echo up to a line `exit N` (a client may send it with other lines).
                        let text = String::from_utf8_lossy(&chunk).to_string();
                        let mut echoed = String::new();
                        for line in text.split_inclusive('\n') {
                            if let Some(n) = line.trim().strip_prefix("exit ") {
                                code = n.parse().unwrap_or(99);
                                break;
                            }
                            echoed.push_str(line);
                        }
                        if !echoed.is_empty() {
                            if let Some(o) = &out {
                                let _ = o.send(echoed.clone().into_bytes()).await;
                            }
                            if let Some(e) = &err {
                                let _ = e.send(echoed.into_bytes()).await;
                            }
                        }
                        if code != 0 || text.contains("exit 0") {
                            break 'read;
                        }
                    }
                }
                code
            };
            let code = smol::future::or(input, async {
                resizes.await;
                std::future::pending().await
            })
            .await;
            Outcome::Exited(code)
        })
    })
}

fn exec_server(opts: StreamOptions, creation: Duration) -> (UnixStream, JoinHandle<()>) {
    serve(Box::new(move |mut s, req, early| {
        Box::pin(async move {
            server::serve_remotecommand_within(&mut s, early, &req, opts, echo(), creation).await
        })
    }))
}

fn client(a: UnixStream, protocols: &[&str]) -> Result<spdy::Client, spdy::Refused> {
    spdy::Client::upgrade(Box::new(a), "/exec/ns/pod/c?command=sh", protocols, &[])
}

const ALL: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

#[test]
fn v4_exec_echoes_resizes_and_reports_the_exit_code() {
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let (a, t) = exec_server(opts, Duration::from_secs(30));
    let mut c = client(a, ALL).unwrap();
    assert_eq!(c.protocol, "v4.channel.k8s.io");
    let err = c.open(&[("streamtype", "error")]);
    let stdin = c.open(&[("streamtype", "stdin")]);
    let stdout = c.open(&[("streamtype", "stdout")]);
    let resize = c.open(&[("streamtype", "resize")]);
    for id in [err, stdin, stdout, resize] {
        assert!(c.wait_reply(id), "stream {id} replied");
    }
    c.ping(1);
    c.write(stdin, b"hello\n");
    assert_eq!(c.read_at_least(stdout, 6), b"hello\n");
    // Two sizes in one write, the second split across two.
    c.write(resize, b"{\"Width\":80,\"Height\":24}\n{\"Width\":1");
    c.write(resize, b"00,\"Height\":50}\n");
    let seen = c.read_at_least(stdout, 6 + 13 + 14);
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "hello\nresize 80x24\nresize 100x50\n"
    );
    c.write(stdin, b"exit 3\n");
    let status = c.read_to_end(err);
    let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["reason"], "NonZeroExitCode");
    assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(v["details"]["causes"][0]["message"], "3");
    c.read_all();
    assert!(c.goaway, "GOAWAY at the end");
    assert_eq!(c.pongs, [1], "the ping answered");
    for id in [err, stdin, stdout, resize] {
        assert!(c.streams[&id].fin, "stream {id} got FIN");
    }
    drop(c);
    t.join().unwrap();
}

#[test]
fn older_protocols_are_negotiated_and_report_as_the_kubelet_does() {
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    // (offered, chosen, exit line, what the error stream holds, whether it is reset)
    let cases: &[(&[&str], &str, &str, &str, bool)] = &[
        (
            &["v9.channel.k8s.io", "v3.channel.k8s.io"],
            "v3.channel.k8s.io",
            "exit 2\n",
            "command terminated with exit code 2",
            false,
        ),
        (
            &["v2.channel.k8s.io"],
            "v2.channel.k8s.io",
            "exit 0\n",
            "",
            false,
        ),
        (&["channel.k8s.io"], "channel.k8s.io", "exit 4\n", "", true),
        (
            &["v4.channel.k8s.io"],
            "v4.channel.k8s.io",
            "exit 0\n",
            "{\"metadata\":{},\"status\":\"Success\"}",
            false,
        ),
    ];
    for (offered, chosen, exit, says, reset) in cases {
        let (a, t) = exec_server(opts, Duration::from_secs(30));
        let mut c = client(a, offered).unwrap();
        assert_eq!(c.protocol, *chosen);
        let err = c.open(&[("streamtype", "error")]);
        let stdin = c.open(&[("streamtype", "stdin")]);
        let stdout = c.open(&[("streamtype", "stdout")]);
        let stderr = c.open(&[("streamtype", "stderr")]);
        c.write(stdin, b"both\n");
        assert_eq!(c.read_at_least(stdout, 5), b"both\n", "{chosen}");
        assert_eq!(c.read_at_least(stderr, 5), b"both\n", "{chosen}");
        c.write(stdin, exit.as_bytes());
        let status = c.read_to_end(err);
        assert_eq!(String::from_utf8_lossy(&status), *says, "{chosen}");
        c.read_all();
        assert_eq!(
            c.streams[&err].reset, *reset,
            "{chosen}: error stream reset"
        );
        if *reset {
            // v1 also closes stdin our side at once.
            assert!(c.streams[&stdin].fin);
        }
        drop(c);
        t.join().unwrap();
    }
}

#[test]
fn refused_upgrades_say_why() {
    let opts = StreamOptions {
        stdout: true,
        ..Default::default()
    };
    let (a, t) = exec_server(opts, Duration::from_secs(30));
    let r = client(a, &["v9.channel.k8s.io"]).err().unwrap();
    assert_eq!(r.status, 403);
    assert!(r
        .head
        .contains("X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io"));
    assert!(
        r.body.contains("unable to negotiate protocol"),
        "{}",
        r.body
    );
    t.join().unwrap();

    let (a, t) = exec_server(opts, Duration::from_secs(30));
    let r = client(a, &[]).err().unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.contains("X-Stream-Protocol-Version is required"));
    t.join().unwrap();

    // No upgrade headers.
    let (mut a, t) = exec_server(opts, Duration::from_secs(30));
    a.write_all(
        b"GET /exec/a/b/c HTTP/1.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    a.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("missing upgrade headers"));
    t.join().unwrap();
}

#[test]
fn a_missing_stream_times_out_with_a_clear_error() {
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        ..Default::default()
    };
    let (a, t) = exec_server(opts, Duration::from_millis(300));
    let mut c = client(a, ALL).unwrap();
    let err = c.open(&[("streamtype", "error")]);
    let _stdout = c.open(&[("streamtype", "stdout")]);
    // No stdin stream.
    let status = c.read_to_end(err);
    let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("timed out waiting for client to create streams: 2 of 3"),
        "{v}"
    );
    c.read_all();
    assert!(c.goaway);
    drop(c);
    t.join().unwrap();
}

#[test]
fn malformed_frames_end_the_connection_not_the_server() {
    let opts = StreamOptions {
        stdin: true,
        ..Default::default()
    };
    let bad: &[&[u8]] = &[
        // SPDY/2 control frame.
        b"\x80\x02\x00\x01\x00\x00\x00\x00",
        // A SYN_STREAM whose header block is not zlib.
        b"\x80\x03\x00\x01\x00\x00\x00\x0e\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00GET ",
    ];
    for b in bad {
        let (a, t) = exec_server(opts, Duration::from_secs(30));
        let mut c = client(a, ALL).unwrap();
        c.raw(b);
        c.read_all();
        assert!(c.closed && !c.goaway);
        drop(c);
        t.join().unwrap();
    }
    // A client that goes away mid-session ends it (the session is dropped).
    let (a, t) = exec_server(opts, Duration::from_secs(30));
    let mut c = client(a, ALL).unwrap();
    let _e = c.open(&[("streamtype", "error")]);
    let i = c.open(&[("streamtype", "stdin")]);
    assert!(c.wait_reply(i));
    c.goaway();
    c.read_all();
    drop(c);
    t.join().unwrap();
}

/// A TCP echo server on loopback; its port.
fn tcp_echo() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn portforward_server() -> (UnixStream, JoinHandle<()>) {
    serve(Box::new(|mut s, req, early| {
        Box::pin(async move {
            let dial: Dial = Rc::new(|port| {
                Box::pin(async move { smol::net::TcpStream::connect(("127.0.0.1", port)).await })
            });
            server::serve_portforward_within(&mut s, early, &req, dial, Duration::from_millis(500))
                .await;
            let _ = s.close().await;
        })
    }))
}

#[test]
fn port_forward_pairs_reach_their_ports() {
    let echo = tcp_echo().to_string();
    let closed = closed_port().to_string();
    let (a, t) = portforward_server();
    let mut c = spdy::Client::upgrade(
        Box::new(a),
        "/portForward/ns/pod",
        &["portforward.k8s.io"],
        &[],
    )
    .unwrap();
    assert_eq!(c.protocol, "portforward.k8s.io");
    // Two forwards on one connection, interleaved.
    let e0 = c.open(&[("streamtype", "error"), ("port", &echo), ("requestid", "0")]);
    let d0 = c.open(&[("streamtype", "data"), ("port", &echo), ("requestid", "0")]);
    let e1 = c.open(&[("streamtype", "error"), ("port", &echo), ("requestid", "1")]);
    let d1 = c.open(&[("streamtype", "data"), ("port", &echo), ("requestid", "1")]);
    for id in [e0, d0, e1, d1] {
        assert!(c.wait_reply(id));
    }
    c.write(d0, b"zero");
    c.write(d1, b"one");
    assert_eq!(c.read_at_least(d0, 4), b"zero");
    assert_eq!(c.read_at_least(d1, 3), b"one");
    // The client's FIN half-closes the target, whose close ends the forward.
    c.close(d0);
    assert_eq!(c.read_to_end(d0), b"zero");
    assert!(c.read_to_end(e0).is_empty());

    // A port nobody listens on: the dial's error on the error stream.
    let e2 = c.open(&[
        ("streamtype", "error"),
        ("port", &closed),
        ("requestid", "2"),
    ]);
    let d2 = c.open(&[
        ("streamtype", "data"),
        ("port", &closed),
        ("requestid", "2"),
    ]);
    let msg = String::from_utf8(c.read_to_end(e2)).unwrap();
    assert!(
        msg.contains(&format!("error forwarding port {closed}")),
        "{msg}"
    );
    assert!(c.read_to_end(d2).is_empty());

    // A stream without a port is refused; half a pair times out on its error stream.
    let bad = c.open(&[("streamtype", "data")]);
    assert!(!c.wait_reply(bad));
    assert!(c.streams[&bad].reset);
    let e3 = c.open(&[("streamtype", "error"), ("port", &echo), ("requestid", "3")]);
    let msg = String::from_utf8(c.read_to_end(e3)).unwrap();
    assert!(msg.contains("timed out waiting for streams"), "{msg}");

    c.goaway();
    c.read_all();
    drop(c);
    t.join().unwrap();
}

/// For client-go by hand: `SPDY_ECHO_ADDR=127.0.0.1:7777 cargo test --test spdy --
/// --ignored client_go_interop --nocapture`, then run the Go program against it. Serves one
/// exec (stdin, stdout, stderr or tty as the query asks) with the echo session, or a
/// port-forward (`/portForward/...`) to loopback ports, per connection.
#[test]
#[ignore]
fn client_go_interop() {
    let addr = std::env::var("SPDY_ECHO_ADDR").unwrap_or_else(|_| "127.0.0.1:7777".into());
    let count: usize = std::env::var("SPDY_ECHO_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    smol::block_on(async {
        let l = smol::net::TcpListener::bind(&*addr).await.unwrap();
        eprintln!("listening on {addr}");
        for _ in 0..count {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let (req, early) = loop {
                if let Some((r, used)) = parse_request(&buf).unwrap() {
                    break (r, buf[used..].to_vec());
                }
                let mut tmp = [0u8; 1024];
                let n = s.read(&mut tmp).await.unwrap();
                buf.extend_from_slice(&tmp[..n]);
            };
            let q = |k: &str| req.query.iter().any(|(n, v)| n == k && v == "1");
            let opts = StreamOptions {
                stdin: q("stdin"),
                stdout: q("stdout"),
                stderr: q("stderr"),
                tty: q("tty"),
            };
            eprintln!("request {:?} {opts:?}", req.segments);
            if req.segments.first().is_some_and(|p| p == "portForward") {
                let dial: Dial = Rc::new(|port| {
                    Box::pin(
                        async move { smol::net::TcpStream::connect(("127.0.0.1", port)).await },
                    )
                });
                server::serve_portforward(&mut s, early, &req, dial).await;
                eprintln!("session done");
                continue;
            }
            server::serve_remotecommand(&mut s, early, &req, opts, echo()).await;
            eprintln!("session done");
        }
    });
}
