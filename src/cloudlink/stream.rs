//! The edge side of KubeEdge's EdgeStream tunnel (`edge/pkg/edgestream/`, `pkg/stream/` in
//! kubeedge/kubeedge): how `kubectl logs`, `exec`, `attach` and `top` reach a node the API
//! server cannot dial.
//!
//! The node dials `wss://<cloudstream>/v1/kubeedge/connect` with its certificate and the
//! headers `SessionHostNameOverride` and `SessionInternalIP`, redials every 2 s, pings every
//! 5 s. Each websocket TEXT message is one tunnel message: uvarint connect id, uvarint type,
//! payload (at most 1 MiB). A `*_CONNECT` payload is JSON naming the request the API server
//! made (`url`, `header`); the node replays it against its own kubelet API (plain HTTP GET for
//! logs and metrics) and copies the answer's body back as DATA messages, then REMOVE. A REMOVE
//! from the cloud ends that session; CLOSE ends the tunnel.
//!
//! Sessions are independent tasks; each has its own bounded inbox, and all share one bounded
//! queue to the socket, so a session whose source is slow holds only itself.

use super::certs::CertDir;
use super::{chunked::ChunkedDecoder, https, with_timeout, CloudError};
use crate::wsframe::{self, opcode, Decoder};
use futures_rustls::TlsConnector;
use serde_json::Value;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

/// The most a tunnel message may hold (KubeEdge's `MaxRespBodyLength`).
pub const MAX_MESSAGE: usize = 1 << 20;
/// How often the tunnel is dialled again after it ended.
const REDIAL: Duration = Duration::from_secs(2);
/// How often a ping goes to the cloud.
const PING: Duration = Duration::from_secs(5);
/// How long dialling may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages a session may have waiting for it (KubeEdge: 128).
const SESSION_INBOX: usize = 128;
/// Encoded frames waiting for the socket, all sessions together.
const OUTBOX: usize = 64;
/// The most of an answer's body sent in one DATA message.
const DATA_CHUNK: usize = 32 * 1024;

/// Tunnel message types (`pkg/stream/constants.go`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `LOGS_CONNECT` (0): a `kubectl logs` request to replay against the kubelet API.
    LogsConnect,
    /// `EXEC_CONNECT` (1): a `kubectl exec` request (upgraded to a stream).
    ExecConnect,
    /// `METRIC_CONNECT` (2): a stats or metrics request.
    MetricConnect,
    /// `DATA` (3): bytes of a session, either way.
    Data,
    /// `REMOVE` (4): the session ends (either way).
    Remove,
    /// `CLOSE` (5): the cloud closes the tunnel; the data says why.
    Close,
    /// `ATTACH_CONNECT` (6): a `kubectl attach` request (upgraded to a stream).
    AttachConnect,
}

impl Kind {
    /// The wire number.
    pub fn code(self) -> u64 {
        match self {
            Kind::LogsConnect => 0,
            Kind::ExecConnect => 1,
            Kind::MetricConnect => 2,
            Kind::Data => 3,
            Kind::Remove => 4,
            Kind::Close => 5,
            Kind::AttachConnect => 6,
        }
    }

    /// The type for a wire number.
    pub fn from_code(c: u64) -> Option<Kind> {
        Some(match c {
            0 => Kind::LogsConnect,
            1 => Kind::ExecConnect,
            2 => Kind::MetricConnect,
            3 => Kind::Data,
            4 => Kind::Remove,
            5 => Kind::Close,
            6 => Kind::AttachConnect,
            _ => return None,
        })
    }
}

/// One tunnel message.
#[derive(Clone, Debug, PartialEq)]
pub struct TunnelMessage {
    /// The session (`ConnectID`) the message belongs to.
    pub id: u64,
    /// What the message is.
    pub kind: Kind,
    /// The payload: the request for a `*_CONNECT`, the bytes for `DATA`, the reason for `CLOSE`.
    pub data: Vec<u8>,
}

/// A tunnel message or request that cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamError(pub String);

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream tunnel: {}", self.0)
    }
}

impl std::error::Error for StreamError {}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a uvarint as Go's `binary.ReadUvarint` does; returns it and the bytes used.
fn uvarint(b: &[u8]) -> Result<(u64, usize), StreamError> {
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(10) {
        if i == 9 && *byte > 1 {
            return Err(StreamError("a uvarint overflows 64 bits".into()));
        }
        v |= ((byte & 0x7F) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(StreamError("a message ends inside a uvarint".into()))
}

impl TunnelMessage {
    /// A message.
    pub fn new(id: u64, kind: Kind, data: Vec<u8>) -> TunnelMessage {
        TunnelMessage { id, kind, data }
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 4);
        put_uvarint(&mut out, self.id);
        put_uvarint(&mut out, self.kind.code());
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads a message; a payload past [`MAX_MESSAGE`] is cut there, as KubeEdge reads it.
    pub fn decode(b: &[u8]) -> Result<TunnelMessage, StreamError> {
        let (id, n) = uvarint(b)?;
        let (code, m) = uvarint(&b[n..])?;
        let kind = Kind::from_code(code)
            .ok_or_else(|| StreamError(format!("unknown message type {code} (connect id {id})")))?;
        let rest = &b[n + m..];
        let data = rest[..rest.len().min(MAX_MESSAGE)].to_vec();
        Ok(TunnelMessage { id, kind, data })
    }
}

/// The request a `*_CONNECT` message names: the API server's request, to replay.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectRequest {
    /// Path and query (`/containerLogs/ns/pod/c?follow=true`).
    pub target: String,
    /// Request headers to pass on (hop-by-hop ones left out).
    pub headers: Vec<(String, String)>,
    /// The method (`Method` of KubeEdge's exec connector; GET for the others).
    pub method: String,
    /// The `Upgrade` header the API server sent (exec and attach: `SPDY/3.1`).
    pub upgrade: Option<String>,
}

impl ConnectRequest {
    /// Reads KubeEdge's connector JSON: `{"MessID":..,"url":<Go url.URL>,"header":{k:[v]}}`.
    pub fn parse(data: &[u8]) -> Result<ConnectRequest, StreamError> {
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| StreamError(format!("the connect request is not JSON: {e}")))?;
        let url = &v["url"];
        let path = url["Path"]
            .as_str()
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| StreamError("the connect request has no url.Path".into()))?;
        // The path is replayed as it came (RawPath when set): it must be a plain path.
        let raw = url["RawPath"].as_str().filter(|p| !p.is_empty());
        for (field, p) in [("url.Path", Some(path)), ("url.RawPath", raw)] {
            if p.is_some_and(|p| p.bytes().any(|b| b.is_ascii_control() || b == b' ')) {
                return Err(StreamError(format!(
                    "{field} holds spaces or control bytes"
                )));
            }
        }
        let mut target = raw.unwrap_or(path).to_string();
        if let Some(q) = url["RawQuery"].as_str().filter(|q| !q.is_empty()) {
            if q.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(StreamError(
                    "url.RawQuery holds spaces or control bytes".into(),
                ));
            }
            target.push('?');
            target.push_str(q);
        }
        let mut headers = Vec::new();
        let mut upgrade = None;
        if let Some(h) = v["header"].as_object() {
            for (k, vals) in h {
                if k.eq_ignore_ascii_case("upgrade") {
                    upgrade = vals
                        .get(0)
                        .and_then(Value::as_str)
                        .filter(|u| u.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
                        .map(str::to_string);
                }
                let skip = [
                    "host",
                    "connection",
                    "content-length",
                    "transfer-encoding",
                    "accept-encoding",
                    "upgrade",
                    "keep-alive",
                ];
                if skip.contains(&k.to_ascii_lowercase().as_str())
                    || k.bytes().any(|b| !b.is_ascii_graphic() || b == b':')
                {
                    continue;
                }
                for val in vals
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !val.bytes().any(|b| b == b'\r' || b == b'\n') {
                        headers.push((k.clone(), val.to_string()));
                    }
                }
            }
        }
        let method = v["method"]
            .as_str()
            .or_else(|| v["Method"].as_str())
            .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()))
            .unwrap_or("GET")
            .to_string();
        Ok(ConnectRequest {
            target,
            headers,
            method,
            upgrade,
        })
    }
}

/// Where the tunnel goes and what it says about the node.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// CloudStream's tunnel server, `HOST:PORT` (KubeEdge: 10004).
    pub server: String,
    /// The node's name, sent as `SessionHostNameOverride`.
    pub node: String,
    /// The node's address, sent as `SessionInternalIP` (None: empty).
    pub node_ip: Option<IpAddr>,
    /// Where the node certificate and the cloud's CA are kept.
    pub cert_dir: PathBuf,
    /// The node's kubelet API the requests are replayed against, `HOST:PORT`.
    pub kubelet_api: String,
}

/// Keeps the tunnel up: dial, serve, and 2 s after it ends dial again, forever. While the
/// cloud is away this costs a timer and a failed connect every 2 s; pods are unaffected.
pub async fn run(cfg: StreamConfig) {
    let dir = CertDir(cfg.cert_dir.clone());
    let mut was_up = true;
    loop {
        match dial(&cfg, &dir).await {
            Ok(conn) => {
                tracing::info!(server = %cfg.server, "stream tunnel connected");
                let why = serve(&cfg, conn).await;
                tracing::warn!(server = %cfg.server, reason = %why, "stream tunnel ended; dialling again");
                was_up = true;
            }
            Err(e) => {
                // One line when it goes down, not one every 2 s.
                if was_up {
                    tracing::warn!(server = %cfg.server, error = %e, "cannot open the stream tunnel; retrying every 2s");
                } else {
                    tracing::debug!(server = %cfg.server, error = %e, "stream tunnel still down");
                }
                was_up = false;
            }
        }
        smol::Timer::after(REDIAL).await;
    }
}

type Conn = futures_rustls::client::TlsStream<TcpStream>;

/// TCP, TLS with the node certificate (the server checked against the cloud's CA), then the
/// websocket handshake with the session headers.
async fn dial(cfg: &StreamConfig, dir: &CertDir) -> Result<(Conn, Vec<u8>), CloudError> {
    let id = dir.load()?.ok_or_else(|| CloudError::Config {
        what: "stream tunnel".into(),
        reason: "no node certificate yet (the cloud link gets one first)".into(),
    })?;
    let tls_config = id.tls()?;
    let (host, _) = https::split_host_port(&cfg.server)?;
    let what = format!("dialling wss://{}/v1/kubeedge/connect", cfg.server);
    with_timeout(CONNECT_TIMEOUT, &what, async {
        let tcp = TcpStream::connect(&cfg.server)
            .await
            .map_err(|e| CloudError::io(format!("connecting to {}", cfg.server), e))?;
        let mut s = TlsConnector::from(tls_config)
            .connect(super::server_name(&host)?, tcp)
            .await
            .map_err(|e| CloudError::io(format!("TLS handshake with {}", cfg.server), e))?;
        let key = crate::api::base64::encode(&fastrand::u128(..).to_le_bytes());
        let ip = cfg.node_ip.map(|i| i.to_string()).unwrap_or_default();
        let req = format!(
            "GET /v1/kubeedge/connect HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             SessionHostNameOverride: {}\r\nSessionInternalIP: {ip}\r\n\r\n",
            cfg.server, cfg.node
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| CloudError::io(what.clone(), e))?;
        s.flush().await.map_err(|e| CloudError::io(what.clone(), e))?;
        // The answer's head; bytes after it are the first frames.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| CloudError::io(what.clone(), e))?;
            if n == 0 {
                return Err(CloudError::protocol(&what, "the server closed during the handshake".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut hs);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    if resp.code != Some(101) {
                        return Err(CloudError::protocol(
                            &what,
                            format!("the server answered {} instead of switching to websocket", resp.code.unwrap_or(0)),
                        ));
                    }
                    let accept = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Accept"))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
                    if accept.as_deref() != Some(wsframe::accept_key(&key).as_str()) {
                        return Err(CloudError::protocol(&what, "a wrong Sec-WebSocket-Accept".into()));
                    }
                    let rest = buf[len..].to_vec();
                    return Ok((s, rest));
                }
                Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => continue,
                Ok(httparse::Status::Partial) => {
                    return Err(CloudError::protocol(&what, "a handshake answer over 16 KiB".into()))
                }
                Err(e) => return Err(CloudError::protocol(&what, format!("a bad handshake answer: {e}"))),
            }
        }
    })
    .await
}

fn mask() -> [u8; 4] {
    fastrand::u32(..).to_le_bytes()
}

/// A frame carrying one tunnel message (TEXT, as KubeEdge writes them).
fn tunnel_frame(m: &TunnelMessage) -> Vec<u8> {
    wsframe::client_frame(opcode::TEXT, &m.encode(), mask())
}

/// Serves one tunnel connection until it ends; returns why.
async fn serve(cfg: &StreamConfig, (conn, early): (Conn, Vec<u8>)) -> String {
    let (mut rd, mut wr) = smol::io::split(conn);
    let (out_tx, out_rx) = async_channel::bounded::<Vec<u8>>(OUTBOX);
    let sessions: Rc<RefCell<HashMap<u64, async_channel::Sender<TunnelMessage>>>> =
        Rc::new(RefCell::new(HashMap::new()));
    let ex = Rc::new(smol::LocalExecutor::new());

    let writer = async {
        loop {
            let next = smol::future::or(async { out_rx.recv().await.ok() }, async {
                smol::Timer::after(PING).await;
                Some(wsframe::client_frame(opcode::PING, b"ping you", mask()))
            })
            .await;
            let Some(frame) = next else {
                return "the tunnel's queue closed".to_string();
            };
            if let Err(e) = wr.write_all(&frame).await {
                return format!("writing: {e}");
            }
            if let Err(e) = wr.flush().await {
                return format!("writing: {e}");
            }
        }
    };

    let reader = async {
        let mut dec = Decoder::new(MAX_MESSAGE + 32);
        dec.feed(&early);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            loop {
                let msg = match dec.next_message() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => return e.to_string(),
                };
                match msg.opcode {
                    opcode::CLOSE => return "the cloud closed the websocket".to_string(),
                    opcode::PING => {
                        let pong = wsframe::client_frame(opcode::PONG, &msg.payload, mask());
                        let _ = out_tx.send(pong).await;
                    }
                    opcode::PONG => {}
                    _ => {
                        let m = match TunnelMessage::decode(&msg.payload) {
                            Ok(m) => m,
                            Err(e) => return e.to_string(),
                        };
                        if m.kind == Kind::Close {
                            return format!(
                                "the cloud closed the tunnel: {}",
                                String::from_utf8_lossy(&m.data)
                                    .chars()
                                    .take(200)
                                    .collect::<String>()
                            );
                        }
                        dispatch(cfg, &ex, &sessions, &out_tx, m);
                    }
                }
            }
            let n = match rd.read(&mut chunk).await {
                Ok(0) => return "the cloud closed the connection".to_string(),
                Ok(n) => n,
                Err(e) => return format!("reading: {e}"),
            };
            dec.feed(&chunk[..n]);
        }
    };
    let why = ex.run(smol::future::or(reader, writer)).await;
    // Sessions end with the tunnel: their inboxes close.
    sessions.borrow_mut().clear();
    why
}

/// Starts a session for a `*_CONNECT`, or hands DATA/REMOVE to its session.
fn dispatch(
    cfg: &StreamConfig,
    ex: &Rc<smol::LocalExecutor<'static>>,
    sessions: &Rc<RefCell<HashMap<u64, async_channel::Sender<TunnelMessage>>>>,
    out: &async_channel::Sender<Vec<u8>>,
    m: TunnelMessage,
) {
    match m.kind {
        Kind::LogsConnect | Kind::MetricConnect | Kind::ExecConnect | Kind::AttachConnect => {
            let (tx, rx) = async_channel::bounded(SESSION_INBOX);
            sessions.borrow_mut().insert(m.id, tx);
            let (cfg, out, sessions) = (cfg.clone(), out.clone(), sessions.clone());
            ex.spawn(async move {
                let id = m.id;
                session(&cfg, m, rx, &out).await;
                sessions.borrow_mut().remove(&id);
                let _ = out
                    .send(tunnel_frame(&TunnelMessage::new(
                        id,
                        Kind::Remove,
                        Vec::new(),
                    )))
                    .await;
            })
            .detach();
        }
        Kind::Data | Kind::Remove => {
            let tx = sessions.borrow().get(&m.id).cloned();
            match tx {
                // A REMOVE closes the session.
                Some(tx) if m.kind == Kind::Remove => {
                    tx.close();
                    sessions.borrow_mut().remove(&m.id);
                }
                // The tunnel has no per-session credit: waiting here would stall every session
                // and the link, and dropping bytes would corrupt an exec's stream. A session
                // whose inbox is full (its kubelet-API side does not keep up) is ended instead;
                // its task sends the REMOVE.
                Some(tx) => {
                    let id = m.id;
                    if let Err(async_channel::TrySendError::Full(_)) = tx.try_send(m) {
                        tracing::warn!(
                            connect_id = id,
                            limit = SESSION_INBOX,
                            "stream session ended: it did not keep up with the cloud's data"
                        );
                        tx.close();
                        sessions.borrow_mut().remove(&id);
                    }
                }
                None => tracing::debug!(connect_id = m.id, "tunnel message for no session"),
            }
        }
        Kind::Close => {}
    }
}

/// One session: replays the request against the kubelet API and copies the answer's body up
/// until it ends or the cloud removes the session.
async fn session(
    cfg: &StreamConfig,
    m: TunnelMessage,
    inbox: async_channel::Receiver<TunnelMessage>,
    out: &async_channel::Sender<Vec<u8>>,
) {
    let id = m.id;
    let req = match ConnectRequest::parse(&m.data) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(connect_id = id, kind = ?m.kind, error = %e, "stream request refused");
            return;
        }
    };
    tracing::debug!(connect_id = id, kind = ?m.kind, target = %req.target, "stream session");
    match m.kind {
        Kind::LogsConnect | Kind::MetricConnect => {}
        Kind::ExecConnect | Kind::AttachConnect => {
            if let Err(e) = relay_upgrade(cfg, id, &req, inbox, out).await {
                tracing::warn!(connect_id = id, target = %req.target, error = %e, "stream session failed");
            }
            return;
        }
        _ => return,
    }
    let copy = copy_answer(cfg, id, &req, m.kind == Kind::MetricConnect, out);
    // The session ends when the answer ends, or when the cloud says REMOVE (its inbox closes).
    let removed = async {
        while inbox.recv().await.is_ok() {}
        Ok(())
    };
    if let Err(e) = smol::future::or(copy, removed).await {
        tracing::warn!(connect_id = id, target = %req.target, error = %e, "stream session failed");
    }
}

/// Exec and attach, as KubeEdge's edge does them: the request is written to the kubelet API
/// with its upgrade, then the bytes are copied both ways (the answer's head and the SPDY
/// frames up as DATA, the cloud's DATA down) until either side ends.
async fn relay_upgrade(
    cfg: &StreamConfig,
    id: u64,
    req: &ConnectRequest,
    inbox: async_channel::Receiver<TunnelMessage>,
    out: &async_channel::Sender<Vec<u8>>,
) -> Result<(), String> {
    let s = TcpStream::connect(&cfg.kubelet_api)
        .await
        .map_err(|e| format!("connecting to the kubelet API at {}: {e}", cfg.kubelet_api))?;
    let _ = s.set_nodelay(true);
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: {}\r\n",
        req.method,
        req.target,
        cfg.kubelet_api,
        req.upgrade.as_deref().unwrap_or("SPDY/3.1")
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let (mut rd, mut wr) = (s.clone(), s);
    wr.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let up = async {
        let mut chunk = vec![0u8; DATA_CHUNK];
        loop {
            let n = rd
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading the kubelet API: {e}"))?;
            if n == 0 {
                return Ok(());
            }
            let frame = tunnel_frame(&TunnelMessage::new(id, Kind::Data, chunk[..n].to_vec()));
            if out.send(frame).await.is_err() {
                return Ok(());
            }
        }
    };
    let down = async {
        // The inbox closes on REMOVE or when the tunnel ends.
        while let Ok(m) = inbox.recv().await {
            if m.kind == Kind::Data {
                wr.write_all(&m.data)
                    .await
                    .map_err(|e| format!("writing to the kubelet API: {e}"))?;
            }
        }
        let _ = wr.close().await;
        Ok(())
    };
    smol::future::or(up, down).await
}

/// GETs `req` from the kubelet API and sends the body up as DATA messages.
async fn copy_answer(
    cfg: &StreamConfig,
    id: u64,
    req: &ConnectRequest,
    metrics: bool,
    out: &async_channel::Sender<Vec<u8>>,
) -> Result<(), String> {
    let mut s = TcpStream::connect(&cfg.kubelet_api)
        .await
        .map_err(|e| format!("connecting to the kubelet API at {}: {e}", cfg.kubelet_api))?;
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n",
        req.target, cfg.kubelet_api
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if metrics {
        head.push_str("Accept-Encoding: identity\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; DATA_CHUNK];
    // The answer's head.
    let (body_start, chunked, mut left) = loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Err("the kubelet API closed before answering".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&buf).map_err(|e| format!("a bad answer: {e}"))? {
            httparse::Status::Complete(len) => {
                let h = |name: &str| {
                    resp.headers
                        .iter()
                        .find(|x| x.name.eq_ignore_ascii_case(name))
                        .map(|x| String::from_utf8_lossy(x.value).trim().to_string())
                };
                let chunked =
                    h("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
                let left = h("Content-Length").and_then(|v| v.parse::<u64>().ok());
                break (len, chunked, left);
            }
            httparse::Status::Partial if buf.len() < 64 * 1024 => {}
            httparse::Status::Partial => return Err("an answer head over 64 KiB".into()),
        }
    };
    let mut dechunk = chunked.then(ChunkedDecoder::default);
    let mut pending = buf.split_off(body_start);
    loop {
        let mut body = Vec::new();
        match dechunk.as_mut() {
            Some(d) => {
                d.decode(&pending, &mut body)?;
            }
            None => {
                let take = left.map_or(pending.len(), |l| (l as usize).min(pending.len()));
                body.extend_from_slice(&pending[..take]);
                if let Some(l) = left.as_mut() {
                    *l -= take as u64;
                }
            }
        }
        for piece in body.chunks(DATA_CHUNK) {
            out.send(tunnel_frame(&TunnelMessage::new(
                id,
                Kind::Data,
                piece.to_vec(),
            )))
            .await
            .map_err(|_| "the tunnel closed".to_string())?;
        }
        if dechunk.as_ref().is_some_and(ChunkedDecoder::is_done) || left == Some(0) {
            return Ok(());
        }
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        pending = chunk[..n].to_vec();
    }
}

/// The tunnel's settings from the flags (`None` without a cloud or with the stream off).
pub fn config_from(
    link: &super::LinkConfig,
    server: Option<&str>,
    kubelet_api: &str,
) -> Result<StreamConfig, CloudError> {
    let server = match server {
        Some(s) => s.to_string(),
        None => {
            let (host, _) = https::split_host_port(&link.server)?;
            if host.contains(':') {
                format!("[{host}]:10004")
            } else {
                format!("{host}:10004")
            }
        }
    };
    https::split_host_port(&server)?;
    Ok(StreamConfig {
        server,
        node: link.node.clone(),
        node_ip: link.node_ip,
        cert_dir: link.cert_dir.clone(),
        kubelet_api: kubelet_api.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_that_does_not_keep_up_is_ended_not_fed_partly() {
        let cfg = StreamConfig {
            server: "127.0.0.1:1".into(),
            node: "n".into(),
            node_ip: None,
            cert_dir: PathBuf::from("/nonexistent"),
            kubelet_api: "127.0.0.1:1".into(),
        };
        let ex = Rc::new(smol::LocalExecutor::new());
        let sessions = Rc::new(RefCell::new(HashMap::new()));
        let (out, _out_rx) = async_channel::unbounded();
        let (slow_tx, slow_rx) = async_channel::bounded(SESSION_INBOX);
        let (fast_tx, fast_rx) = async_channel::bounded(SESSION_INBOX);
        sessions.borrow_mut().insert(1, slow_tx);
        sessions.borrow_mut().insert(2, fast_tx);
        for i in 0..SESSION_INBOX {
            dispatch(
                &cfg,
                &ex,
                &sessions,
                &out,
                TunnelMessage::new(1, Kind::Data, vec![i as u8]),
            );
        }
        assert!(!slow_rx.is_closed(), "a full inbox is still whole");
        // One more than it holds: the session ends; what it got is intact, in order.
        dispatch(
            &cfg,
            &ex,
            &sessions,
            &out,
            TunnelMessage::new(1, Kind::Data, vec![0xff]),
        );
        assert!(slow_rx.is_closed());
        assert!(!sessions.borrow().contains_key(&1));
        let got: Vec<u8> = std::iter::from_fn(|| slow_rx.try_recv().ok())
            .map(|m| m.data[0])
            .collect();
        assert_eq!(got, (0..SESSION_INBOX).map(|i| i as u8).collect::<Vec<_>>());
        // The other session is untouched.
        dispatch(
            &cfg,
            &ex,
            &sessions,
            &out,
            TunnelMessage::new(2, Kind::Data, b"x".to_vec()),
        );
        assert_eq!(fast_rx.try_recv().map(|m| m.data), Ok(b"x".to_vec()));
    }

    #[test]
    fn messages_as_kubeedge_writes_them() {
        for (id, kind, data) in [
            (1u64, Kind::LogsConnect, b"{}".to_vec()),
            (127, Kind::Data, vec![0, 1, 2]),
            (128, Kind::Remove, vec![]),
            (300_000, Kind::AttachConnect, vec![0xff; 10]),
        ] {
            let m = TunnelMessage::new(id, kind, data);
            assert_eq!(TunnelMessage::decode(&m.encode()).unwrap(), m);
        }
        // Go's binary.PutUvarint(128) is 0x80 0x01.
        assert_eq!(
            TunnelMessage::new(128, Kind::Data, vec![]).encode(),
            vec![0x80, 0x01, 3]
        );
        assert!(TunnelMessage::decode(&[]).is_err());
        assert!(TunnelMessage::decode(&[0x80]).is_err());
        assert!(TunnelMessage::decode(&[1, 9]).is_err());
        assert!(TunnelMessage::decode(&[0xff; 11]).is_err());
        // Payloads are cut at 1 MiB.
        let mut big = vec![1u8, 3];
        big.extend(vec![0u8; MAX_MESSAGE + 10]);
        assert_eq!(TunnelMessage::decode(&big).unwrap().data.len(), MAX_MESSAGE);
    }

    #[test]
    fn connect_requests_as_cloudstream_sends_them() {
        let data = serde_json::json!({
            "MessID": 7,
            "url": {"Scheme": "http", "Opaque": "", "User": null, "Host": "127.0.0.1:10350",
                    "Path": "/containerLogs/default/web/app", "RawPath": "", "OmitHost": false,
                    "ForceQuery": false, "RawQuery": "follow=true&tailLines=10", "Fragment": "",
                    "RawFragment": ""},
            "header": {"Accept": ["*/*"], "Connection": ["Upgrade"], "X-Evil": ["a\r\nb"],
                       "User-Agent": ["kubectl"]}
        });
        let r = ConnectRequest::parse(data.to_string().as_bytes()).unwrap();
        assert_eq!(
            r.target,
            "/containerLogs/default/web/app?follow=true&tailLines=10"
        );
        assert_eq!((r.method.as_str(), r.upgrade.as_deref()), ("GET", None));
        // An exec connector: its method and upgrade are replayed.
        let exec = serde_json::json!({
            "MessID": 8, "method": "POST",
            "url": {"Path": "/exec/default/web/app", "RawQuery": "command=sh&input=1&output=1&tty=1"},
            "header": {"Upgrade": ["SPDY/3.1"], "Connection": ["Upgrade"],
                       "X-Stream-Protocol-Version": ["v4.channel.k8s.io", "v3.channel.k8s.io"]}
        });
        let x = ConnectRequest::parse(exec.to_string().as_bytes()).unwrap();
        assert_eq!(
            (x.method.as_str(), x.upgrade.as_deref()),
            ("POST", Some("SPDY/3.1"))
        );
        assert_eq!(x.headers.len(), 2, "{:?}", x.headers);
        let mut h = r.headers.clone();
        h.sort();
        assert_eq!(
            h,
            vec![
                ("Accept".into(), "*/*".into()),
                ("User-Agent".into(), "kubectl".into())
            ]
        );
        assert!(ConnectRequest::parse(b"nope").is_err());
        assert!(ConnectRequest::parse(br#"{"url":{"Path":"x"}}"#).is_err());
        assert!(ConnectRequest::parse(br#"{"url":{"Path":"/a b"}}"#).is_err());
        assert!(ConnectRequest::parse(br#"{"url":{"Path":"/a","RawQuery":"x\r\ny"}}"#).is_err());
        // Found by fuzzing: RawPath, replayed in place of Path, is checked as Path is.
        for raw in [" ", "/a b", "/a\r\nX: y"] {
            let req = serde_json::json!({"url": {"Path": "/a", "RawPath": raw}});
            assert!(
                ConnectRequest::parse(req.to_string().as_bytes()).is_err(),
                "{raw:?}"
            );
        }
    }
}
