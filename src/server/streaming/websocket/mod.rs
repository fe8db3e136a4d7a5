//! The WebSocket transport of streaming sessions, as the kubelet serves it (its
//! `cri/streaming/remotecommand/websocket.go` and `portforward/websocket.go` over
//! apimachinery's `wsstream`), plus the v5 close signal of client-go's WebSocket executor.
//!
//! - [`handshake`]: the upgrade's answer (101 with the chosen subprotocol) or its refusal.
//! - [`serve_remotecommand`]: exec and attach. Channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4
//!   resize; an empty message on the lowest output channel once open; the [`super::Outcome`] on
//!   channel 3 ([`super::status_json`] for v4 and v5, [`super::status_text`] before); then
//!   CLOSE 1000 (client-go reads a normal closure as the end of every stream).
//! - [`serve_portforward`]: channels 2i (data) and 2i+1 (error) for the i-th port of the
//!   `port` (or `ports`) query, each opened with the port as two little-endian bytes.
//!
//! [`protocol`] holds the subprotocols and the channel framing, [`conn`] the connection.

pub mod conn;
pub mod protocol;

use super::{Dial, Outcome, Session, StreamOptions, Streams, TermSize, MAX_CHUNK, STREAM_BUFFER};
use crate::server::http::Request;
use crate::wsframe;
use conn::Outbox;
use protocol::{Inbound, Protocol};
use smol::future;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::future::Future;
use std::pin::Pin;

/// Whether the request asks for a WebSocket upgrade (`Upgrade: websocket` and `upgrade`
/// among the `Connection` tokens, as `wsstream.IsWebSocketRequest`).
pub fn is_upgrade(req: &Request) -> bool {
    req.header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        && req
            .header_tokens("connection")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// A refused upgrade: the whole HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status answered.
    pub status: u16,
    /// Why, sent as the body.
    pub message: String,
}

impl Refusal {
    /// The HTTP response (plain text; `Sec-WebSocket-Version: 13` on a version refusal).
    pub fn response(&self) -> Vec<u8> {
        let reason = match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            _ => "Error",
        };
        let body = format!("{}\n", self.message);
        let extra = if self.status == 426 {
            "Sec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// Checks an upgrade request and chooses its subprotocol from `table`: the protocol and the
/// 101 answer, or the refusal.
pub fn handshake(req: &Request, table: &[Protocol]) -> Result<(Protocol, Vec<u8>), Refusal> {
    if req.method != "GET" {
        return Err(refuse(
            405,
            format!("a WebSocket upgrade is a GET, not {}", req.method),
        ));
    }
    if !is_upgrade(req) {
        return Err(refuse(
            400,
            "not a WebSocket upgrade: send Upgrade: websocket and Connection: Upgrade",
        ));
    }
    match req.header("sec-websocket-version") {
        Some("13") => {}
        v => {
            return Err(refuse(
                426,
                format!(
                    "WebSocket version {} is not supported: use version 13",
                    v.unwrap_or("(none)")
                ),
            ))
        }
    }
    let key = match req.header("sec-websocket-key") {
        Some(k) if !k.is_empty() => k,
        _ => {
            return Err(refuse(
                400,
                "the WebSocket upgrade has no Sec-WebSocket-Key",
            ))
        }
    };
    let offered = req.header_tokens("sec-websocket-protocol");
    let proto = protocol::negotiate(table, &offered).map_err(|m| refuse(403, m))?;
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        wsframe::accept_key(key)
    );
    if !proto.name.is_empty() {
        head.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", proto.name));
    }
    head.push_str("\r\n");
    Ok((proto, head.into_bytes()))
}

/// Answers the upgrade: the chosen protocol once the 101 is written; `None` when refused
/// (answered and logged) or the write failed.
async fn upgrade<S: AsyncWrite + Unpin>(
    s: &mut S,
    req: &Request,
    table: &[Protocol],
    what: &str,
) -> Option<Protocol> {
    let (answer, proto) = match handshake(req, table) {
        Ok((p, head)) => (head, Some(p)),
        Err(r) => {
            tracing::info!(
                "{what}: WebSocket upgrade refused ({}): {}",
                r.status,
                r.message
            );
            (r.response(), None)
        }
    };
    if let Err(e) = async {
        s.write_all(&answer).await?;
        s.flush().await
    }
    .await
    {
        tracing::info!("{what}: answering the upgrade: {e}");
        return None;
    }
    proto
}

/// A name for logs: the request's path.
fn describe(req: &Request) -> String {
    format!("websocket /{}", req.segments.join("/"))
}

/// Serves one exec/attach session: negotiates the subprotocol from Sec-WebSocket-Protocol
/// (answers 101 itself, or a refusal with a clear text), runs `session`, writes the outcome on
/// the error channel, closes. `early`: bytes already read past the request head.
pub async fn serve_remotecommand<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    early: Vec<u8>,
    req: &Request,
    opts: StreamOptions,
    session: Session,
) {
    let what = describe(req);
    let Some(proto) = upgrade(s, req, protocol::REMOTECOMMAND, &what).await else {
        return;
    };
    tracing::debug!("{what}: serving over {:?}", proto.name);
    conn::drive(s, early, &what, |out, inbound| {
        remotecommand(proto, opts, session, out, inbound, what.clone())
    })
    .await;
}

/// Sends `data` on `channel` in messages of at most [`MAX_CHUNK`] bytes (empty data: one empty
/// message); `false` once the connection is closing.
async fn send_chunks(out: &Outbox, proto: &Protocol, channel: u8, data: &[u8]) -> bool {
    if data.is_empty() {
        let (op, payload) = protocol::encode(proto, channel, data);
        return out.send(op, &payload).await;
    }
    for piece in data.chunks(MAX_CHUNK) {
        let (op, payload) = protocol::encode(proto, channel, piece);
        if !out.send(op, &payload).await {
            return false;
        }
    }
    true
}

/// Copies one of the runtime's outputs to its channel until the runtime drops it.
async fn pump(
    out: &Outbox,
    proto: &Protocol,
    channel: u8,
    rx: Option<async_channel::Receiver<Vec<u8>>>,
) {
    let Some(rx) = rx else { return };
    while let Ok(chunk) = rx.recv().await {
        if !send_chunks(out, proto, channel, &chunk).await {
            return;
        }
    }
}

fn channel_pair<T>(
    wanted: bool,
) -> (
    Option<async_channel::Sender<T>>,
    Option<async_channel::Receiver<T>>,
) {
    if wanted {
        let (tx, rx) = async_channel::bounded(STREAM_BUFFER);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}

/// The exec/attach application over an open connection.
async fn remotecommand(
    proto: Protocol,
    opts: StreamOptions,
    session: Session,
    out: Outbox,
    inbound: async_channel::Receiver<Vec<u8>>,
    what: String,
) {
    // The empty message on the lowest output channel tells the client the session is open.
    let first = if opts.stdout {
        1
    } else if opts.stderr {
        2
    } else {
        3
    };
    if !send_chunks(&out, &proto, first, &[]).await {
        return;
    }
    let (mut stdin_tx, stdin_rx) = channel_pair::<Vec<u8>>(opts.stdin);
    let (stdout_tx, stdout_rx) = channel_pair::<Vec<u8>>(opts.stdout);
    let (stderr_tx, stderr_rx) = channel_pair::<Vec<u8>>(opts.stderr);
    let (mut resize_tx, resize_rx) = channel_pair::<TermSize>(opts.tty);
    let streams = Streams {
        stdin: stdin_rx,
        stdout: stdout_tx,
        stderr: stderr_tx,
        resize: resize_rx,
    };
    let dispatch = async {
        while let Ok(msg) = inbound.recv().await {
            match protocol::decode(&proto, &msg) {
                Ok(Inbound::Data(0, data)) => {
                    if let Some(tx) = &stdin_tx {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            // The process closed its stdin; what the client sends is dropped.
                            stdin_tx = None;
                        }
                    }
                }
                Ok(Inbound::Data(4, data)) => match (super::parse_resize(&data), &resize_tx) {
                    (Some(size), Some(tx)) => {
                        let _ = tx.send(size).await;
                    }
                    (None, _) => tracing::debug!(
                        "{what}: a resize message that is not {{\"Width\":W,\"Height\":H}}"
                    ),
                    _ => {}
                },
                Ok(Inbound::Close(0)) => stdin_tx = None,
                Ok(Inbound::Close(4)) => resize_tx = None,
                Ok(Inbound::Data(ch, _)) | Ok(Inbound::Close(ch)) => {
                    tracing::debug!("{what}: a message for channel {ch}, which reads nothing")
                }
                Ok(Inbound::Empty) => {}
                Err(e) => tracing::debug!("{what}: a client message skipped: {e}"),
            }
        }
        // The client stopped sending: the end of stdin and of resizes.
        drop(stdin_tx);
        drop(resize_tx);
        future::pending::<Outcome>().await
    };
    let run = async {
        let (outcome, _) = future::zip(
            session(streams),
            future::zip(
                pump(&out, &proto, 1, stdout_rx),
                pump(&out, &proto, 2, stderr_rx),
            ),
        )
        .await;
        outcome
    };
    let outcome = future::or(run, dispatch).await;
    match &outcome {
        Outcome::Exited(code) => tracing::debug!("{what}: exited with {code}"),
        Outcome::Failed(m) => tracing::info!("{what}: failed: {m}"),
    }
    let status = if proto.version >= 4 {
        super::status_json(&outcome)
    } else {
        super::status_text(&outcome)
    };
    if !status.is_empty() {
        send_chunks(&out, &proto, 3, &status).await;
    }
}

/// The ports of a port-forward request: every `port` (or `ports`) value, each a
/// comma-separated list, as the kubelet's `NewV4Options` reads them.
pub fn ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    let mut seen = false;
    for (k, v) in query.iter().filter(|(k, _)| k == "port" || k == "ports") {
        seen = true;
        if v.is_empty() {
            return Err(format!("query parameter `{k}` cannot be empty"));
        }
        for p in v.split(',') {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => out.push(n),
                _ => {
                    return Err(format!(
                        "`{p}` in `{k}={v}` is not a port: write a number from 1 to 65535"
                    ))
                }
            }
        }
    }
    if out.len() > 127 {
        return Err(format!(
            "{} ports asked for: at most 127 fit one connection's channels",
            out.len()
        ));
    }
    if !seen {
        return Err(
            "query parameter `port` is required (the ports to forward, e.g. port=8080,9090)".into(),
        );
    }
    Ok(out)
}

/// Serves one port-forward connection (`ports` in the query; channel pairs per port).
pub async fn serve_portforward<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    early: Vec<u8>,
    req: &Request,
    dial: Dial,
) {
    let what = describe(req);
    let ports = match ports(&req.query) {
        Ok(p) => p,
        Err(m) => {
            tracing::info!("{what}: refused: {m}");
            let _ = s.write_all(&refuse(400, m).response()).await;
            let _ = s.flush().await;
            return;
        }
    };
    let Some(proto) = upgrade(s, req, protocol::PORTFORWARD, &what).await else {
        return;
    };
    let pod = req
        .segments
        .get(1..3)
        .map(|s| s.join("/"))
        .unwrap_or_default();
    conn::drive(s, early, &what, |out, inbound| {
        portforward(proto, ports, dial, out, inbound, pod)
    })
    .await;
}

/// Awaits every future (none of them `Send`; polled on the caller's task).
async fn join_all(mut v: Vec<Pin<Box<dyn Future<Output = ()> + '_>>>) {
    future::poll_fn(|cx| {
        v.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if v.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// The port-forward application over an open connection: one TCP connection per port, ended
/// when every one has ended.
async fn portforward(
    proto: Protocol,
    ports: Vec<u16>,
    dial: Dial,
    out: Outbox,
    inbound: async_channel::Receiver<Vec<u8>>,
    pod: String,
) {
    let mut inputs = Vec::new();
    let mut forwards: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data_ch, err_ch] {
            if !send_chunks(&out, &proto, ch, &port.to_le_bytes()).await {
                return;
            }
        }
        let (tx, rx) = async_channel::bounded::<Vec<u8>>(STREAM_BUFFER);
        inputs.push(tx);
        let (out, dial, pod) = (&out, dial.clone(), &pod);
        forwards.push(Box::pin(async move {
            let tcp = match dial(port).await {
                Ok(t) => t,
                Err(e) => {
                    let m = format!("error forwarding port {port} to pod {pod}: {e}");
                    tracing::info!("{m}");
                    send_chunks(out, &proto, err_ch, m.as_bytes()).await;
                    return;
                }
            };
            let mut up = tcp.clone();
            let to_pod = async move {
                while let Ok(data) = rx.recv().await {
                    if up.write_all(&data).await.is_err() {
                        break;
                    }
                }
                let _ = up.close().await;
                future::pending::<()>().await
            };
            let mut down = tcp;
            let from_pod = async move {
                let mut buf = vec![0u8; MAX_CHUNK];
                loop {
                    match down.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            if !send_chunks(out, &proto, data_ch, &buf[..n]).await {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::debug!("port-forward {pod}:{port}: reading: {e}");
                            break;
                        }
                    }
                }
            };
            future::or(from_pod, to_pod).await
        }));
    }
    let dispatch = async {
        while let Ok(msg) = inbound.recv().await {
            match protocol::decode(&proto, &msg) {
                Ok(Inbound::Data(ch, data)) if ch % 2 == 0 && !data.is_empty() => {
                    if let Some(tx) = inputs.get((ch / 2) as usize) {
                        let _ = tx.send(data).await;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("port-forward {pod}: a client message skipped: {e}"),
            }
        }
        inputs.clear();
        future::pending::<()>().await
    };
    future::or(join_all(forwards), dispatch).await;
}
