//! The WebSocket transport of exec/attach and port-forward, served over a socket pair to a
//! tungstenite client, with an echo session in place of the runtime.

use edged::server::http::{parse_request, Request};
use edged::server::streaming::websocket::{serve_portforward, serve_remotecommand};
use edged::server::streaming::{Dial, Outcome, Session, StreamOptions, Streams};
use smol::io::AsyncReadExt;
use smol::Async;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// Reads a request head as the server does; the request and the bytes past it.
async fn read_head(s: &mut Async<UnixStream>) -> (Request, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client left before its request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some((req, used)) = parse_request(&buf).unwrap() {
            return (req, buf[used..].to_vec());
        }
    }
}

/// The echo session: stdin back on stdout; each resize as `WxH` on stderr; at the end of
/// stdin, exit with the number of stdin messages seen.
fn echo() -> Session {
    Box::new(|s: Streams| {
        Box::pin(async move {
            let (Some(stdin), Some(stdout)) = (s.stdin, s.stdout) else {
                return Outcome::Failed("echo wants stdin and stdout".into());
            };
            let stderr = s.stderr;
            let resize = s.resize;
            let mut seen = 0;
            loop {
                let next = smol::future::or(async { stdin.recv().await.map(Ok).ok() }, async {
                    match &resize {
                        Some(r) => r.recv().await.map(Err).ok(),
                        None => smol::future::pending().await,
                    }
                })
                .await;
                match next {
                    Some(Ok(data)) => {
                        seen += 1;
                        stdout.send(data).await.unwrap();
                    }
                    Some(Err(size)) => {
                        if let Some(e) = &stderr {
                            let _ = e
                                .send(format!("{}x{}", size.width, size.height).into_bytes())
                                .await;
                        }
                    }
                    None => return Outcome::Exited(seen),
                }
            }
        })
    })
}

/// A session printing `hi` and exiting 0.
fn hello() -> Session {
    Box::new(|s: Streams| {
        Box::pin(async move {
            if let Some(out) = s.stdout {
                out.send(b"hi".to_vec()).await.unwrap();
            }
            Outcome::Exited(0)
        })
    })
}

type Server = std::thread::JoinHandle<()>;

/// Serves one exec request on a socket pair; the client's end, handshake done (or refused).
fn exec(
    path: &str,
    protocols: &str,
    opts: StreamOptions,
    session: fn() -> Session,
) -> (
    Result<WebSocket<UnixStream>, tungstenite::Error>,
    Option<String>,
    Server,
) {
    let (a, b) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        smol::block_on(async {
            let mut s = Async::new(a).unwrap();
            let (req, early) = read_head(&mut s).await;
            serve_remotecommand(&mut s, early, &req, opts, session()).await;
        })
    });
    let mut req = format!("ws://localhost{path}")
        .into_client_request()
        .unwrap();
    if !protocols.is_empty() {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    }
    match tungstenite::client::client(req, b) {
        Ok((ws, resp)) => {
            let proto = resp
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap().to_string());
            (Ok(ws), proto, server)
        }
        Err(tungstenite::HandshakeError::Failure(e)) => (Err(e), None, server),
        Err(e) => panic!("handshake: {e}"),
    }
}

const ALL: StreamOptions = StreamOptions {
    stdin: true,
    stdout: true,
    stderr: true,
    tty: true,
};

/// The next data message as (channel, bytes), answering nothing else.
fn next(ws: &mut WebSocket<UnixStream>) -> Message {
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

fn binary(m: Message) -> Vec<u8> {
    match m {
        Message::Binary(b) => b.to_vec(),
        other => panic!("not binary: {other:?}"),
    }
}

fn expect_close(ws: &mut WebSocket<UnixStream>, code: CloseCode) {
    match next(ws) {
        Message::Close(Some(f)) => assert_eq!(f.code, code, "{f:?}"),
        other => panic!("not a close: {other:?}"),
    }
    // tungstenite answered; the server then ends.
    let _ = ws.flush();
}

#[test]
fn v5_echo_resize_close_signal_and_exit_code() {
    let (ws, proto, server) = exec(
        "/exec/default/web/app?command=sh&stdin=1&stdout=1&stderr=1&tty=1",
        "v5.channel.k8s.io, v4.channel.k8s.io",
        ALL,
        echo,
    );
    let mut ws = ws.unwrap();
    assert_eq!(proto.as_deref(), Some("v5.channel.k8s.io"));
    // The session is open: an empty message on stdout.
    assert_eq!(binary(next(&mut ws)), [1]);
    ws.send(Message::binary(b"\x00hello".to_vec())).unwrap();
    assert_eq!(binary(next(&mut ws)), b"\x01hello");
    ws.send(Message::binary(
        br#"{"Width":100,"Height":40}"#.iter().fold(vec![4u8], |mut v, b| {
            v.push(*b);
            v
        }),
    ))
    .unwrap();
    assert_eq!(binary(next(&mut ws)), b"\x02100x40");
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("not a pong: {other:?}"),
    }
    ws.send(Message::binary(b"\x00again".to_vec())).unwrap();
    assert_eq!(binary(next(&mut ws)), b"\x01again");
    // The client closes its stdin: the echo exits with the count of messages, 2.
    ws.send(Message::binary(vec![255u8, 0])).unwrap();
    let status = binary(next(&mut ws));
    assert_eq!(status[0], 3);
    let v: serde_json::Value = serde_json::from_slice(&status[1..]).unwrap();
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["reason"], "NonZeroExitCode");
    assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(v["details"]["causes"][0]["message"], "2");
    expect_close(&mut ws, CloseCode::Normal);
    server.join().unwrap();
}

#[test]
fn v4_status_success_and_no_stdin() {
    let opts = StreamOptions {
        stdout: true,
        ..Default::default()
    };
    let (ws, proto, server) = exec(
        "/exec/default/web/app?command=x&stdout=1",
        "v4.channel.k8s.io",
        opts,
        hello,
    );
    let mut ws = ws.unwrap();
    assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
    assert_eq!(binary(next(&mut ws)), [1]);
    assert_eq!(binary(next(&mut ws)), b"\x01hi");
    let status = binary(next(&mut ws));
    let v: serde_json::Value = serde_json::from_slice(&status[1..]).unwrap();
    assert_eq!(
        (status[0], &v["status"]),
        (3, &serde_json::json!("Success"))
    );
    expect_close(&mut ws, CloseCode::Normal);
    server.join().unwrap();
}

#[test]
fn base64_protocol_echo_and_text_status() {
    // No close signal before v5: an echo that exits after its first message.
    fn once() -> Session {
        Box::new(|s: Streams| {
            Box::pin(async move {
                let data = s.stdin.unwrap().recv().await.unwrap();
                s.stdout.unwrap().send(data).await.unwrap();
                Outcome::Exited(2)
            })
        })
    }
    let (ws, proto, server) = exec(
        "/attach/default/web/app?stdin=1&stdout=1",
        "base64.channel.k8s.io",
        ALL,
        once,
    );
    let mut ws = ws.unwrap();
    assert_eq!(proto.as_deref(), Some("base64.channel.k8s.io"));
    assert_eq!(next(&mut ws), Message::text("1"));
    ws.send(Message::text("0aGVsbG8=")).unwrap(); // "hello"
    assert_eq!(next(&mut ws), Message::text("1aGVsbG8="));
    // "command terminated with exit code 2", in base64 on channel '3'.
    let Message::Text(t) = next(&mut ws) else {
        panic!("not text")
    };
    assert!(t.starts_with('3'), "{t}");
    let text = edged::api::base64::decode(&t[1..]).unwrap();
    assert_eq!(text, b"command terminated with exit code 2");
    expect_close(&mut ws, CloseCode::Normal);
    server.join().unwrap();
}

#[test]
fn an_unknown_subprotocol_is_refused() {
    let (ws, _, server) = exec(
        "/exec/default/web/app?stdout=1",
        "SPDY/3.1, nope.k8s.io",
        ALL,
        echo,
    );
    match ws {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403);
            let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
            assert!(
                body.contains("nope.k8s.io") && body.contains("v5.channel.k8s.io"),
                "{body}"
            );
        }
        Err(e) => panic!("not refused with a status: {e}"),
        Ok(_) => panic!("accepted"),
    }
    server.join().unwrap();
}

#[test]
fn an_unmasked_frame_ends_the_session_with_a_protocol_error() {
    let (ws, _, server) = exec(
        "/exec/default/web/app?stdin=1&stdout=1",
        "v5.channel.k8s.io",
        ALL,
        echo,
    );
    let mut ws = ws.unwrap();
    assert_eq!(binary(next(&mut ws)), [1]);
    ws.get_mut().write_all(&[0x82, 0x02, 0x00, b'x']).unwrap();
    expect_close(&mut ws, CloseCode::Protocol);
    server.join().unwrap();
}

#[test]
fn the_client_closing_ends_the_session() {
    let (ws, _, server) = exec(
        "/exec/default/web/app?stdin=1&stdout=1",
        "v5.channel.k8s.io",
        ALL,
        echo,
    );
    let mut ws = ws.unwrap();
    assert_eq!(binary(next(&mut ws)), [1]);
    ws.close(None).unwrap();
    // The server answers the close and ends without a status.
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Ok(Message::Ping(_)) => continue,
            Ok(other) => panic!("after close: {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    server.join().unwrap();
    // The socket is closed by the server.
    let mut rest = Vec::new();
    ws.get_mut().read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

/// A TCP echo server on loopback; its port.
fn tcp_echo() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let mut c = c.unwrap();
            std::thread::spawn(move || {
                let mut r = c.try_clone().unwrap();
                std::io::copy(&mut r, &mut c).unwrap();
            });
        }
    });
    port
}

#[test]
fn port_forward_to_a_tcp_echo_and_a_dial_error() {
    let good = tcp_echo();
    // A port nobody listens on: bound, then released.
    let bad = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (a, b) = UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        smol::block_on(async {
            let mut s = Async::new(a).unwrap();
            let (req, early) = read_head(&mut s).await;
            let dial: Dial = std::rc::Rc::new(|port| {
                Box::pin(smol::net::TcpStream::connect(("127.0.0.1", port)))
            });
            serve_portforward(&mut s, early, &req, dial).await;
        })
    });
    let mut req = format!("ws://localhost/portForward/default/web?port={good},{bad}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = tungstenite::client::client(req, b).unwrap();
    // Every channel opens with its port, little-endian.
    let mut opened = Vec::new();
    for _ in 0..4 {
        opened.push(binary(next(&mut ws)));
    }
    let [gl, gh] = good.to_le_bytes();
    let [bl, bh] = bad.to_le_bytes();
    assert_eq!(
        opened,
        [
            vec![0, gl, gh],
            vec![1, gl, gh],
            vec![2, bl, bh],
            vec![3, bl, bh]
        ]
    );
    let err = binary(next(&mut ws));
    assert_eq!(err[0], 3);
    let text = String::from_utf8_lossy(&err[1..]).to_string();
    assert!(
        text.contains(&format!("error forwarding port {bad} to pod default/web")),
        "{text}"
    );
    ws.send(Message::binary(b"\x00ping".to_vec())).unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        let m = binary(next(&mut ws));
        assert_eq!(m[0], 0);
        got.extend_from_slice(&m[1..]);
    }
    assert_eq!(got, b"ping");
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    server.join().unwrap();
}

/// Manual interop: serves the echo session on 127.0.0.1:$EDGED_WS_PORT (every connection an
/// exec with the streams its query asks for) for a real client (client-go's
/// `remotecommand.NewWebSocketExecutor`). Run with
/// `EDGED_WS_PORT=18080 cargo test --test ws_streaming -- --ignored --nocapture interop`.
#[test]
#[ignore]
fn interop_echo_server() {
    let port: u16 = std::env::var("EDGED_WS_PORT")
        .expect("set EDGED_WS_PORT")
        .parse()
        .unwrap();
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    for c in l.incoming() {
        let c = c.unwrap();
        std::thread::spawn(move || {
            smol::block_on(async {
                let mut s = Async::new(c).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let (req, early) = loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some((req, used)) = parse_request(&buf).unwrap() {
                        break (req, buf[used..].to_vec());
                    }
                };
                let on = |k: &str| req.query.iter().any(|(n, v)| n == k && v == "true");
                let opts = StreamOptions {
                    stdin: on("stdin"),
                    stdout: on("stdout"),
                    stderr: on("stderr"),
                    tty: on("tty"),
                };
                println!(
                    "{} {:?} {opts:?}",
                    req.segments.join("/"),
                    req.header("sec-websocket-protocol")
                );
                serve_remotecommand(&mut s, early, &req, opts, echo()).await;
                println!("served");
            })
        });
    }
}

/// A stand-in kubelet API on loopback for `edged exec`: `GET /pods` lists pod `web` (two
/// containers), container `missing` is a 404, anything else an exec of the echo session.
fn stand_in_api() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let c = c.unwrap();
            std::thread::spawn(move || {
                smol::block_on(async {
                    use smol::io::AsyncWriteExt;
                    let mut s = Async::new(c).unwrap();
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    let (req, early) = loop {
                        let n = s.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some((req, used)) = parse_request(&buf).unwrap() {
                            break (req, buf[used..].to_vec());
                        }
                    };
                    if req.segments == ["pods"] {
                        let body = serde_json::json!({"items": [{
                            "metadata": {"name": "web", "namespace": "default"},
                            "spec": {"containers": [{"name": "app"}, {"name": "side"}]},
                        }]})
                        .to_string();
                        let r = edged::server::http::response(
                            200,
                            "application/json",
                            body.as_bytes(),
                            false,
                        );
                        s.write_all(&r).await.unwrap();
                        return;
                    }
                    if req.segments.get(3).map(String::as_str) == Some("missing") {
                        let r = edged::server::http::text(
                            404,
                            "container \"missing\" not found in pod default/web",
                            false,
                        );
                        s.write_all(&r).await.unwrap();
                        return;
                    }
                    let on = |k: &str| req.query.iter().any(|(n, v)| n == k && v == "true");
                    let opts = StreamOptions {
                        stdin: on("stdin"),
                        stdout: on("stdout"),
                        stderr: on("stderr"),
                        tty: on("tty"),
                    };
                    let session = if opts.stdin { echo() } else { hello() };
                    serve_remotecommand(&mut s, early, &req, opts, session).await;
                })
            });
        }
    });
    port
}

fn edged_exec(port: u16, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edged"))
        .arg("--port")
        .arg(port.to_string())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn edged_exec_against_a_stand_in_api() {
    let port = stand_in_api();
    // stdin echoed; its end is the close signal; the echo exits with 1 (one message).
    let out = edged_exec(
        port,
        &["exec", "web", "-c", "app", "-i", "--", "cat"],
        b"hello\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("command terminated with exit code 1"),
        "{out:?}"
    );
    // No -c: the first of two containers, said on stderr; exit 0.
    let out = edged_exec(port, &["exec", "web", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Defaulted container \"app\" out of: app, side"),
        "{out:?}"
    );
    // The server's 404, printed as such.
    let out = edged_exec(port, &["exec", "web", "-c", "missing", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not found (404)") && err.contains("\"missing\""),
        "{err}"
    );
    // A pod that is not there.
    let out = edged_exec(port, &["exec", "db", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default/db is not on this node"));
    // Nobody listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = edged_exec(dead, &["exec", "web", "-c", "app", "--", "true"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the agent's kubelet API") && err.contains("--port"),
        "{err}"
    );
}
