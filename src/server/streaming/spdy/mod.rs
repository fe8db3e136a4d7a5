//! SPDY/3.1 transport of streaming sessions (exec, attach, port-forward), as the kubelet serves
//! them (`pkg/kubelet/cri/streaming/{remotecommand,portforward}/httpstream.go` over
//! apimachinery's `httpstream/spdy` and moby/spdystream).
//!
//! The client upgrades with `Upgrade: SPDY/3.1` and offers protocols in
//! `X-Stream-Protocol-Version`; we answer 101 with the one chosen ([`handshake`]), or refuse
//! (400 without the header or the upgrade headers, 403 with `X-Accepted-Stream-Protocol-Versions`
//! when none fits). Then the client opens one stream per channel, told apart by the
//! `streamtype` header, and we reply to each:
//! - exec/attach ([`serve_remotecommand`]): `error`, `stdin`, `stdout`, `stderr` and (v3+ with a
//!   tty) `resize`, all within [`STREAM_CREATION_TIMEOUT`]; then the session runs, its outcome
//!   goes on the error stream (v4: a JSON Status; v2/v3: the message; v1 resets the error stream
//!   at once and closes stdin, as 1.0 kubelets did), every stream gets FIN, the connection
//!   GOAWAY.
//! - port-forward ([`serve_portforward`]): any number of (`data`, `error`) pairs with `port` and
//!   `requestID`, each forwarded to `dial(port)` while the connection lasts.
//!
//! [`frame`] and [`zlib`] are the pure wire format; [`conn`] the reading and writing sides.

pub mod conn;
pub mod frame;
pub mod zlib;

use super::{
    parse_resize, status_json, status_text, Dial, Outcome, Session, StreamOptions, Streams,
    TermSize, MAX_CHUNK, STREAM_BUFFER,
};
use crate::server::http::Request;
use conn::{NewStream, Writer};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Exec/attach protocols, preferred first (apimachinery's `SupportedStreamingProtocols`).
pub const REMOTECOMMAND_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// Port-forward protocols.
pub const PORTFORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// How long a client has to open its streams (the kubelet's default streamCreationTimeout).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long output may still come once a session has returned its outcome.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long we wait for the client to close after our GOAWAY.
const LINGER: Duration = Duration::from_secs(5);

/// Whether the request asks for an SPDY/3.1 upgrade (`Upgrade: SPDY/3.1`, Connection: Upgrade).
pub fn is_upgrade(req: &Request) -> bool {
    req.header_tokens("connection")
        .iter()
        .any(|t| t.eq_ignore_ascii_case("upgrade"))
        && req
            .header("upgrade")
            .is_some_and(|u| u.to_ascii_lowercase().contains("spdy/3.1"))
}

/// A refused upgrade: the status, extra headers and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status answered.
    pub status: u16,
    /// Headers added to the answer (`X-Accepted-Stream-Protocol-Versions` when no protocol
    /// matched).
    pub headers: Vec<(&'static str, String)>,
    /// Why, sent as the body.
    pub message: String,
}

impl Refusal {
    /// The whole response (the connection closes after it).
    pub fn response(&self) -> Vec<u8> {
        let reason = match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            _ => "Error",
        };
        let body = format!("{}\n", self.message);
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n",
            self.status
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        out.into_bytes()
    }
}

/// Negotiates as apimachinery's `httpstream.Handshake` then the SPDY upgrader do: the first
/// protocol the client offers that `server` has, or the refusal.
pub fn handshake(req: &Request, server: &[&'static str]) -> Result<&'static str, Refusal> {
    let offered = req.header_tokens("x-stream-protocol-version");
    if offered.is_empty() {
        return Err(Refusal {
            status: 400,
            headers: vec![],
            message: "unable to upgrade: X-Stream-Protocol-Version is required".into(),
        });
    }
    let Some(chosen) = offered
        .iter()
        .find_map(|c| server.iter().find(|s| *s == c).copied())
    else {
        return Err(Refusal {
            status: 403,
            headers: server
                .iter()
                .map(|s| ("X-Accepted-Stream-Protocol-Versions", s.to_string()))
                .collect(),
            message: format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {server:?}"
            ),
        });
    };
    if !is_upgrade(req) {
        return Err(Refusal {
            status: 400,
            headers: vec![],
            message: "unable to upgrade: missing upgrade headers in request (want Connection: Upgrade and Upgrade: SPDY/3.1)".into(),
        });
    }
    Ok(chosen)
}

/// The 101 answer for `protocol`.
pub fn switching(protocol: &str) -> Vec<u8> {
    format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n").into_bytes()
}

/// Answers the handshake: the protocol after a 101, or `None` after a refusal.
async fn upgrade<S: AsyncWrite + Unpin>(
    s: &mut S,
    req: &Request,
    server: &[&'static str],
) -> Option<&'static str> {
    match handshake(req, server) {
        Ok(p) => s.write_all(&switching(p)).await.ok().map(|_| p),
        Err(r) => {
            tracing::info!(status = r.status, reason = %r.message, "SPDY upgrade refused");
            let _ = s.write_all(&r.response()).await;
            let _ = s.flush().await;
            let _ = s.close().await;
            None
        }
    }
}

/// `f`, or `None` after `d`.
async fn timeout<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(f.await) }, async {
        smol::Timer::after(d).await;
        None
    })
    .await
}

/// Runs `protocol` beside the connection's reader (which feeds `tx`); whichever ends first
/// ends the other (a client gone cancels the session).
async fn run_connection<R, W, Fut>(
    r: R,
    early: Vec<u8>,
    w: &Writer<W>,
    tx: async_channel::Sender<NewStream>,
    what: &str,
    protocol: Fut,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    Fut: std::future::Future<Output = ()>,
{
    let reader = async move { Some(conn::read_loop(r, early, w, tx).await) };
    let proto = async {
        protocol.await;
        None
    };
    match smol::future::or(proto, reader).await {
        Some(conn::End::Broken(e)) => {
            tracing::warn!(session = what, reason = %e, "SPDY connection ended: broken")
        }
        Some(end) => {
            tracing::info!(session = what, end = ?end, "SPDY connection ended by the client")
        }
        None => tracing::debug!(session = what, "SPDY session done"),
    }
}

/// Ends the connection our side: GOAWAY, then wait (a little) for the client to close, so its
/// last reads are not cut by a reset.
async fn finish<W: AsyncWrite + Unpin>(
    w: &Writer<W>,
    streams: &async_channel::Receiver<NewStream>,
) {
    w.goaway().await;
    timeout(LINGER, async { while streams.recv().await.is_ok() {} }).await;
}

/// Serves one exec/attach session: negotiates the protocol (answers 101 itself, or the refusal
/// such as 403/400 with a clear text), waits for the client's streams, runs `session` with them,
/// writes the outcome on the error stream (v4: `status_json`; v1-v3: `status_text`), closes.
/// `early`: bytes already read past the request head.
pub async fn serve_remotecommand<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    early: Vec<u8>,
    req: &Request,
    opts: StreamOptions,
    session: Session,
) {
    serve_remotecommand_within(s, early, req, opts, session, STREAM_CREATION_TIMEOUT).await
}

/// [`serve_remotecommand`] with the stream creation timeout given (tests).
pub async fn serve_remotecommand_within<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    early: Vec<u8>,
    req: &Request,
    opts: StreamOptions,
    session: Session,
    creation: Duration,
) {
    let Some(protocol) = upgrade(s, req, REMOTECOMMAND_PROTOCOLS).await else {
        return;
    };
    let version = version_of(protocol);
    let (r, w) = conn::split(s);
    let (tx, rx) = async_channel::bounded(STREAM_BUFFER);
    let proto = remotecommand(&w, rx, version, opts, session, creation);
    run_connection(r, early, &w, tx, "exec", proto).await
}

/// The protocol version (1-4) of a negotiated remotecommand protocol.
pub fn version_of(protocol: &str) -> u8 {
    match protocol {
        "v4.channel.k8s.io" => 4,
        "v3.channel.k8s.io" => 3,
        "v2.channel.k8s.io" => 2,
        _ => 1,
    }
}

/// The streams a remotecommand session waits for.
#[derive(Debug, Default)]
struct Channels {
    error: Option<u32>,
    stdin: Option<NewStream>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<NewStream>,
    /// Every stream we replied to.
    ids: Vec<u32>,
}

/// How many streams the kubelet waits for: error, one per requested std stream (no stderr with
/// a tty), resize with a tty from v3 on.
pub fn expected_streams(opts: &StreamOptions, version: u8) -> usize {
    1 + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr && !opts.tty)
        + usize::from(opts.tty && version >= 3)
}

/// The error stream's bytes for `o` in protocol `version` (empty: nothing to write).
pub fn error_stream_bytes(o: &Outcome, version: u8) -> Vec<u8> {
    if version >= 4 {
        status_json(o)
    } else {
        status_text(o)
    }
}

async fn remotecommand<W: AsyncWrite + Unpin>(
    w: &Writer<W>,
    rx: async_channel::Receiver<NewStream>,
    version: u8,
    opts: StreamOptions,
    session: Session,
    creation: Duration,
) {
    let expected = expected_streams(&opts, version);
    let mut ch = Channels::default();
    let mut deadline = smol::Timer::after(creation);
    let mut received = 0;
    while received < expected {
        let next = smol::future::or(async { Some(rx.recv().await) }, async {
            (&mut deadline).await;
            None
        })
        .await;
        let s = match next {
            None => {
                let msg = format!(
                    "timed out waiting for client to create streams: {received} of {expected} within {}s",
                    creation.as_secs()
                );
                tracing::warn!(reason = %msg, "exec session not started");
                if let Some(id) = ch.error {
                    let bytes = error_stream_bytes(&Outcome::Failed(msg), version);
                    w.data(id, &bytes).await;
                }
                for id in &ch.ids {
                    w.fin(*id).await;
                }
                finish(w, &rx).await;
                return;
            }
            Some(Err(_)) => return,
            Some(Ok(s)) => s,
        };
        if !w.reply(s.id).await {
            return;
        }
        ch.ids.push(s.id);
        let kind = frame::header(&s.headers, "streamtype").unwrap_or("");
        match kind {
            "error" => ch.error = Some(s.id),
            "stdin" => ch.stdin = Some(s),
            "stdout" => ch.stdout = Some(s.id),
            "stderr" => ch.stderr = Some(s.id),
            "resize" if version >= 3 => ch.resize = Some(s),
            other => {
                tracing::info!(
                    stream = s.id,
                    streamtype = other,
                    "exec: unexpected stream type, ignored"
                );
                continue;
            }
        }
        received += 1;
    }
    if version == 1 {
        // What 1.0 kubelets did (and the kubelet keeps for channel.k8s.io): the error stream is
        // reset as soon as the streams are there, and stdin closed our side.
        if let Some(id) = ch.error.take() {
            w.rst(id, frame::RST_CANCEL).await;
        }
        if let Some(s) = &ch.stdin {
            w.fin(s.id).await;
        }
    }

    let (done_tx, done_rx) = async_channel::bounded::<()>(1);
    let mut streams = Streams {
        stdin: ch.stdin.as_ref().map(|s| s.data.clone()),
        ..Streams::default()
    };
    let mut out = None;
    if let Some(id) = ch.stdout {
        let (tx, rx) = async_channel::bounded(STREAM_BUFFER);
        streams.stdout = Some(tx);
        out = Some((id, rx));
    }
    let mut err = None;
    if let Some(id) = ch.stderr {
        let (tx, rx) = async_channel::bounded(STREAM_BUFFER);
        streams.stderr = Some(tx);
        err = Some((id, rx));
    }
    let mut resize_in = None;
    if let Some(s) = ch.resize.take() {
        let (tx, rx) = async_channel::bounded(STREAM_BUFFER);
        streams.resize = Some(rx);
        resize_in = Some((s.data, tx));
    }
    if let Some(s) = ch.stdin.take() {
        // The session holds its clone; ours must not keep the channel open.
        drop(s.data);
    }
    let run = async move {
        let o = session(streams).await;
        drop(done_tx);
        o
    };
    let pumps = smol::future::zip(pump(w, out, done_rx.clone()), pump(w, err, done_rx.clone()));
    let resizes = async {
        if let Some((from, to)) = resize_in {
            resize_pump(from, to).await;
        }
        std::future::pending::<()>().await
    };
    let main = async { smol::future::zip(run, pumps).await.0 };
    let outcome = smol::future::or(main, async {
        resizes.await;
        unreachable_outcome()
    })
    .await;

    tracing::debug!(outcome = ?outcome, version, "exec session ended");
    if let Some(id) = ch.error {
        let bytes = error_stream_bytes(&outcome, version);
        if !bytes.is_empty() {
            w.data(id, &bytes).await;
        }
    }
    for id in &ch.ids {
        if Some(*id) != ch.error || version > 1 {
            w.fin(*id).await;
        }
    }
    finish(w, &rx).await;
}

/// Never called: the resize pump never ends the session (it waits forever once done).
fn unreachable_outcome() -> Outcome {
    Outcome::Failed("resize pump ended".into())
}

/// Writes what the session sends on one output channel as data frames on stream `id`, until
/// the channel closes (or, once the session is over, stays quiet for [`DRAIN_GRACE`]). A dead
/// connection still drains the channel, so the session never blocks on it.
async fn pump<W: AsyncWrite + Unpin>(
    w: &Writer<W>,
    chan: Option<(u32, async_channel::Receiver<Vec<u8>>)>,
    done: async_channel::Receiver<()>,
) {
    let Some((id, rx)) = chan else { return };
    loop {
        let next = smol::future::or(async { rx.recv().await.ok() }, async {
            let _ = done.recv().await;
            smol::Timer::after(DRAIN_GRACE).await;
            None
        })
        .await;
        match next {
            Some(chunk) => {
                w.data(id, &chunk).await;
            }
            None => return,
        }
    }
}

/// Splits the bytes of a resize stream into JSON objects and hands each size on; a malformed
/// one ends the stream, as the kubelet's decoder does.
async fn resize_pump(from: async_channel::Receiver<Vec<u8>>, to: async_channel::Sender<TermSize>) {
    let mut buf = Vec::new();
    while let Ok(chunk) = from.recv().await {
        buf.extend_from_slice(&chunk);
        let (sizes, used, bad) = split_resizes(&buf);
        buf.drain(..used);
        for s in sizes {
            if to.send(s).await.is_err() {
                return;
            }
        }
        if bad {
            tracing::info!("exec: malformed resize message, no more resizes read");
            return;
        }
    }
}

/// The sizes the complete JSON values at the start of `buf` hold, the bytes they take, and
/// whether a malformed value follows.
pub fn split_resizes(buf: &[u8]) -> (Vec<TermSize>, usize, bool) {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde::de::IgnoredAny>();
    let mut sizes = Vec::new();
    let mut start = 0;
    loop {
        match it.next() {
            None => return (sizes, buf.len(), false),
            Some(Ok(_)) => {
                let end = it.byte_offset();
                match parse_resize(&buf[start..end]) {
                    Some(s) => sizes.push(s),
                    None => return (sizes, end, true),
                }
                start = end;
            }
            Some(Err(e)) if e.is_eof() => return (sizes, start, false),
            Some(Err(_)) => return (sizes, start, true),
        }
    }
}

/// Serves one port-forward connection: every (data, error) stream pair with headers `port` and
/// `requestID` is forwarded to `dial(port)`; a failed dial writes its error on the error stream.
pub async fn serve_portforward<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    early: Vec<u8>,
    req: &Request,
    dial: Dial,
) {
    serve_portforward_within(s, early, req, dial, STREAM_CREATION_TIMEOUT).await
}

/// A port-forward request's streams as they arrive.
#[derive(Default)]
struct Pair {
    data: Option<NewStream>,
    error: Option<u32>,
    port: u16,
    started: bool,
}

/// What a port-forward stream's headers ask for: (port, is data, request id), or why it is
/// refused (as the kubelet's `httpStreamReceived`; an old client without `requestID` gets the
/// id the kubelet derives from the stream id).
pub fn portforward_stream(id: u32, h: &frame::Headers) -> Result<(u16, bool, String), String> {
    let port = frame::header(h, "port").unwrap_or("");
    if port.is_empty() {
        return Err("\"port\" header is required".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port < 1 {
        return Err(format!("port {port} must be > 0"));
    }
    let data = match frame::header(h, "streamtype").unwrap_or("") {
        "" => return Err("\"streamType\" header is required".into()),
        "data" => true,
        "error" => false,
        t => return Err(format!("invalid stream type {t:?}")),
    };
    let request = match frame::header(h, "requestid") {
        Some(r) if !r.is_empty() => r.to_string(),
        _ if data => id.saturating_sub(2).to_string(),
        _ => id.to_string(),
    };
    Ok((port, data, request))
}

/// [`serve_portforward`] with the stream creation timeout given (tests).
pub async fn serve_portforward_within<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    early: Vec<u8>,
    req: &Request,
    dial: Dial,
    creation: Duration,
) {
    if upgrade(s, req, PORTFORWARD_PROTOCOLS).await.is_none() {
        return;
    }
    let (r, w) = conn::split(s);
    let (tx, rx) = async_channel::bounded(STREAM_BUFFER);
    let proto = portforward(&w, rx, dial, creation);
    run_connection(r, early, &w, tx, "port-forward", proto).await
}

async fn portforward<W: AsyncWrite + Unpin>(
    w: &Writer<W>,
    rx: async_channel::Receiver<NewStream>,
    dial: Dial,
    creation: Duration,
) {
    let ex = smol::LocalExecutor::new();
    let pairs: Rc<RefCell<HashMap<String, Pair>>> = Rc::default();
    ex.run(async {
        while let Ok(s) = rx.recv().await {
            let (port, is_data, request) = match portforward_stream(s.id, &s.headers) {
                Ok(x) => x,
                Err(e) => {
                    tracing::info!(stream = s.id, reason = %e, "port-forward: stream refused");
                    w.rst(s.id, frame::RST_REFUSED_STREAM).await;
                    continue;
                }
            };
            if !w.reply(s.id).await {
                break;
            }
            let mut map = pairs.borrow_mut();
            let created = !map.contains_key(&request);
            let p = map.entry(request.clone()).or_default();
            p.port = port;
            let dup = if is_data {
                p.data.is_some()
            } else {
                p.error.is_some()
            };
            if dup {
                let msg = format!(
                    "error processing stream for request {request}: {} stream already assigned",
                    if is_data { "data" } else { "error" }
                );
                tracing::info!(reason = %msg, "port-forward");
                if let Some(e) = p.error {
                    ex.spawn(async move { w.data(e, msg.as_bytes()).await })
                        .detach();
                }
                continue;
            }
            if is_data {
                p.data = Some(s);
            } else {
                p.error = Some(s.id);
            }
            if created {
                // The kubelet's monitorStreamPair: a pair not complete in time is dropped.
                let (pairs, request) = (pairs.clone(), request.clone());
                ex.spawn(async move {
                    smol::Timer::after(creation).await;
                    let stale = {
                        let mut map = pairs.borrow_mut();
                        match map.get(&request) {
                            Some(p) if !p.started => map.remove(&request),
                            _ => None,
                        }
                    };
                    if let Some(p) = stale {
                        let msg = format!("timed out waiting for streams of request {request}");
                        tracing::info!(reason = %msg, "port-forward");
                        if let Some(e) = p.error {
                            w.data(e, msg.as_bytes()).await;
                            w.fin(e).await;
                        }
                        if let Some(d) = p.data {
                            w.fin(d.id).await;
                        }
                    }
                })
                .detach();
            }
            if p.data.is_some() && p.error.is_some() {
                p.started = true;
                let data = p.data.take();
                let error = p.error;
                drop(map);
                pairs.borrow_mut().remove(&request);
                if let (Some(data), Some(error)) = (data, error) {
                    ex.spawn(forward(w, dial.clone(), port, data, error))
                        .detach();
                }
            }
        }
    })
    .await;
    finish(w, &rx).await;
}

/// Copies one forwarded connection both ways: the client's data stream to the dialled socket
/// (its FIN half-closes the socket), the socket to the data stream; then FIN on both streams.
async fn forward<W: AsyncWrite + Unpin>(
    w: &Writer<W>,
    dial: Dial,
    port: u16,
    data: NewStream,
    error: u32,
) {
    let tcp = match dial(port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port}: {e}");
            tracing::info!(port, reason = %msg, "port-forward: dial failed");
            w.data(error, msg.as_bytes()).await;
            w.fin(data.id).await;
            w.fin(error).await;
            return;
        }
    };
    let id = data.id;
    let up = {
        let mut tcp = tcp.clone();
        async move {
            while let Ok(chunk) = data.data.recv().await {
                if tcp.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = tcp.shutdown(std::net::Shutdown::Write);
        }
    };
    let down = {
        let mut tcp = tcp.clone();
        async move {
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if !w.data(id, &buf[..n]).await {
                            return;
                        }
                    }
                }
            }
        }
    };
    // The target closing ends the forward (the client then resets or closes its side).
    smol::future::or(
        async { smol::future::zip(up, std::future::pending::<()>()).await.0 },
        down,
    )
    .await;
    w.fin(id).await;
    w.fin(error).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            segments: vec!["exec".into()],
            query: vec![],
            keep_alive: true,
            content_length: 0,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const UP: [(&str, &str); 2] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "SPDY/3.1"),
    ];

    #[test]
    fn upgrades_are_recognised() {
        assert!(is_upgrade(&req(&UP)));
        assert!(is_upgrade(&req(&[
            ("connection", "upgrade"),
            ("upgrade", "spdy/3.1")
        ])));
        assert!(!is_upgrade(&req(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_upgrade(&req(&[("upgrade", "SPDY/3.1")])));
    }

    #[test]
    fn handshakes_as_apimachinery() {
        let with = |protos: &[&str]| {
            let mut h = UP.to_vec();
            for p in protos {
                h.push(("x-stream-protocol-version", p));
            }
            req(&h)
        };
        // The client's order wins.
        let cases: &[(&[&str], Result<&str, u16>)] = &[
            (
                &["v4.channel.k8s.io,v3.channel.k8s.io"],
                Ok("v4.channel.k8s.io"),
            ),
            (
                &["v2.channel.k8s.io", "v4.channel.k8s.io"],
                Ok("v2.channel.k8s.io"),
            ),
            (
                &["v5.channel.k8s.io", " channel.k8s.io "],
                Ok("channel.k8s.io"),
            ),
            (&["v5.channel.k8s.io"], Err(403)),
            (&[], Err(400)),
        ];
        for (offered, want) in cases {
            let got = handshake(&with(offered), REMOTECOMMAND_PROTOCOLS).map_err(|r| r.status);
            assert_eq!(got, *want, "{offered:?}");
        }
        let r = handshake(&with(&["x"]), PORTFORWARD_PROTOCOLS).unwrap_err();
        let text = String::from_utf8(r.response()).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.contains("X-Accepted-Stream-Protocol-Versions: portforward.k8s.io\r\n"));
        // The protocol is checked before the upgrade headers, as the kubelet does.
        let no_upgrade = req(&[("x-stream-protocol-version", "v4.channel.k8s.io")]);
        let r = handshake(&no_upgrade, REMOTECOMMAND_PROTOCOLS).unwrap_err();
        assert_eq!(r.status, 400);
        assert!(r.message.contains("missing upgrade headers"));
        assert!(String::from_utf8(switching("v4.channel.k8s.io"))
            .unwrap()
            .contains("\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"));
    }

    #[test]
    fn expected_streams_as_the_kubelet_counts() {
        let o = |stdin, stdout, stderr, tty| StreamOptions {
            stdin,
            stdout,
            stderr,
            tty,
        };
        let cases = [
            (o(true, true, true, false), 4, 4),
            (o(true, true, true, true), 4, 4), // stderr dropped with a tty, resize added
            (o(true, true, false, true), 3, 4),
            (o(true, true, false, true), 2, 3), // no resize before v3
            (o(false, true, false, false), 1, 2),
        ];
        for (opts, version, want) in cases {
            assert_eq!(
                expected_streams(&opts, version),
                want,
                "{opts:?} v{version}"
            );
        }
        assert_eq!(version_of("v3.channel.k8s.io"), 3);
        assert_eq!(version_of("channel.k8s.io"), 1);
        assert!(error_stream_bytes(&Outcome::Exited(0), 3).is_empty());
        assert!(error_stream_bytes(&Outcome::Exited(0), 4).starts_with(b"{"));
    }

    #[test]
    fn resize_messages_split() {
        let t = |w, h| TermSize {
            width: w,
            height: h,
        };
        let (s, used, bad) = split_resizes(b"{\"Width\":80,\"Height\":24}\n{\"Width\":1");
        assert_eq!((s, used, bad), (vec![t(80, 24)], 24, false));
        let (s, used, bad) =
            split_resizes(b"{\"Width\":1,\"Height\":2}{\"Width\":3,\"Height\":4} ");
        assert_eq!((s, used, bad), (vec![t(1, 2), t(3, 4)], 45, false));
        assert!(split_resizes(b"{\"Width\":-1,\"Height\":2}").2);
        assert!(split_resizes(b"nonsense").2);
        assert_eq!(split_resizes(b""), (vec![], 0, false));
    }

    #[test]
    fn portforward_streams_as_the_kubelet_checks() {
        let h = |kv: &[(&str, &str)]| -> frame::Headers {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ok = portforward_stream(
            5,
            &h(&[("port", "80"), ("streamtype", "data"), ("requestid", "7")]),
        );
        assert_eq!(ok, Ok((80, true, "7".to_string())));
        // Old clients without requestID: the kubelet's derivation from the stream id.
        assert_eq!(
            portforward_stream(5, &h(&[("port", "80"), ("streamtype", "data")]))
                .unwrap()
                .2,
            "3"
        );
        assert_eq!(
            portforward_stream(3, &h(&[("port", "80"), ("streamtype", "error")]))
                .unwrap()
                .2,
            "3"
        );
        let bad: &[(&[(&str, &str)], &str)] = &[
            (&[("streamtype", "data")], "\"port\" header is required"),
            (&[("port", "x"), ("streamtype", "data")], "unable to parse"),
            (
                &[("port", "70000"), ("streamtype", "data")],
                "unable to parse",
            ),
            (&[("port", "0"), ("streamtype", "data")], "must be > 0"),
            (&[("port", "80")], "\"streamType\" header is required"),
            (
                &[("port", "80"), ("streamtype", "stdin")],
                "invalid stream type",
            ),
        ];
        for (kv, says) in bad {
            let e = portforward_stream(1, &h(kv)).unwrap_err();
            assert!(e.contains(says), "{kv:?}: {e}");
        }
    }
}
