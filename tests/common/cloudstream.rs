//! A CloudStream stand-in (KubeEdge's `cloud/pkg/cloudstream/`: tunnelserver.go, session.go,
//! streamserver.go, containerlog_connection.go): the tunnel server the edge dials at
//! `wss://…/v1/kubeedge/connect`, over real TLS that requires the node certificate.
//!
//! As CloudStream does, it takes the session key from `SessionHostNameOverride`, refuses a node
//! the cloud does not know with a CLOSE message, writes every tunnel message as a websocket
//! TEXT frame of raw bytes (`uvarint id, uvarint type, payload`), numbers connections from one
//! counter for the whole server, and turns an API server request into a `*_CONNECT` message
//! whose JSON holds Go's `url.URL` (host `127.0.0.1:10350`) and the request headers; DATA from
//! the edge is the answer's body, REMOVE its end. The websocket framing here is written apart
//! from edged's (`src/cloudlink/wsframe.rs`), from RFC 6455.

#![allow(dead_code)]

use futures_rustls::TlsAcceptor;
use serde_json::json;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a session saw from the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Data(Vec<u8>),
    Removed,
}

/// The tunnel of the node that dialled last.
struct Tunnel {
    node: String,
    ip: String,
    out: async_channel::Sender<Vec<u8>>,
}

/// Shared state of the stand-in.
#[derive(Default)]
struct State {
    tunnel: Option<Tunnel>,
    sessions: HashMap<u64, async_channel::Sender<StreamEvent>>,
}

/// The stand-in.
pub struct CloudStream {
    pub addr: String,
    state: Arc<Mutex<State>>,
    next_id: Arc<AtomicU64>,
    /// Tunnels accepted so far.
    pub tunnels: Arc<AtomicUsize>,
    /// Pings the edge sent.
    pub pings: Arc<AtomicUsize>,
    /// The headers of the last tunnel: SessionHostNameOverride, SessionInternalIP.
    pub last_headers: Arc<Mutex<Option<(String, String)>>>,
    _task: smol::Task<()>,
}

/// One API server request relayed through the tunnel.
pub struct StreamSession {
    pub id: u64,
    rx: async_channel::Receiver<StreamEvent>,
    /// The body so far.
    pub body: Vec<u8>,
    pub removed: bool,
}

impl StreamSession {
    /// Reads events until `done` holds for the body or the edge removed the session; false if
    /// `within` passed first.
    pub async fn read_until(&mut self, within: Duration, done: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = std::time::Instant::now() + within;
        while !done(&self.body) && !self.removed {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ev = smol::future::or(async { self.rx.recv().await.ok() }, async {
                smol::Timer::after(left).await;
                None
            })
            .await;
            match ev {
                Some(StreamEvent::Data(d)) => self.body.extend_from_slice(&d),
                Some(StreamEvent::Removed) => self.removed = true,
                None => return done(&self.body),
            }
        }
        done(&self.body)
    }

    /// Reads until the edge removes the session (the answer ended); false on timeout.
    pub async fn read_to_end(&mut self, within: Duration) -> bool {
        self.read_until(within, |_| false).await;
        self.removed
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The API server's side of an upgraded session through the tunnel, as a blocking byte pipe
/// for a test client (tests/common/spdy.rs). The client writes its own request head first;
/// through the tunnel that request travels in the connector, so the head is dropped here.
pub struct Upgraded {
    pub id: u64,
    rx: async_channel::Receiver<StreamEvent>,
    out: async_channel::Sender<Vec<u8>>,
    unread: Vec<u8>,
    head_dropped: bool,
    written: Vec<u8>,
}

impl std::io::Read for Upgraded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.unread.is_empty() {
            let ev = smol::block_on(smol::future::or(
                async { self.rx.recv().await.ok() },
                async {
                    smol::Timer::after(Duration::from_secs(60)).await;
                    None
                },
            ));
            match ev {
                Some(StreamEvent::Data(d)) => self.unread = d,
                Some(StreamEvent::Removed) | None => return Ok(0),
            }
        }
        let n = buf.len().min(self.unread.len());
        buf[..n].copy_from_slice(&self.unread[..n]);
        self.unread.drain(..n);
        Ok(n)
    }
}

impl std::io::Write for Upgraded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let data = if self.head_dropped {
            buf.to_vec()
        } else {
            self.written.extend_from_slice(buf);
            match self.written.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => {
                    self.head_dropped = true;
                    self.written.split_off(end + 4)
                }
                None => return Ok(buf.len()),
            }
        };
        if !data.is_empty() {
            let frame = server_frame(0x1, &message(self.id, 3, &data));
            self.out
                .send_blocking(frame)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "tunnel gone"))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connector's JSON as StreamServer marshals it: Go's `url.URL` (host `127.0.0.1:10350`),
/// the request's headers, and for exec and attach its method.
fn connector(
    id: u64,
    path_and_query: &str,
    header: serde_json::Value,
    method: Option<&str>,
) -> serde_json::Value {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut c = json!({
        "MessID": id,
        "url": {"Scheme": "http", "Opaque": "", "User": null, "Host": "127.0.0.1:10350",
                "Path": path, "RawPath": "", "OmitHost": false, "ForceQuery": false,
                "RawQuery": query, "Fragment": "", "RawFragment": ""},
        "header": header,
    });
    if let Some(m) = method {
        c["method"] = json!(m);
    }
    c
}

/// A uvarint as Go's `binary.PutUvarint` writes it.
fn uvarint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, x) in b.iter().enumerate().take(10) {
        v |= ((x & 0x7f) as u64) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// A tunnel message: id, type, payload.
fn message(id: u64, kind: u64, data: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    uvarint(id, &mut m);
    uvarint(kind, &mut m);
    m.extend_from_slice(data);
    m
}

/// A server's websocket frame (never masked): FIN, `op`, `payload`.
fn server_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | op];
    let n = payload.len();
    if n < 126 {
        f.push(n as u8);
    } else if n < 65536 {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

impl CloudStream {
    /// Starts the tunnel server; `known` says whether the cloud knows a node (CloudStream
    /// updates the Node's kubelet endpoint and refuses the tunnel of a node it cannot find).
    pub(super) async fn start(
        acceptor: TlsAcceptor,
        known: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> CloudStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let tunnels = Arc::new(AtomicUsize::new(0));
        let pings = Arc::new(AtomicUsize::new(0));
        let last_headers = Arc::new(Mutex::new(None));
        let (st, tn, pg, lh) = (
            state.clone(),
            tunnels.clone(),
            pings.clone(),
            last_headers.clone(),
        );
        let task = smol::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, st, tn, pg, lh, known) = (
                    acceptor.clone(),
                    st.clone(),
                    tn.clone(),
                    pg.clone(),
                    lh.clone(),
                    known.clone(),
                );
                smol::spawn(async move {
                    serve_tunnel(tcp, acceptor, st, tn, pg, lh, known).await;
                })
                .detach();
            }
        });
        CloudStream {
            addr,
            state,
            // CloudStream numbers connections from 1 for the whole server.
            next_id: Arc::new(AtomicU64::new(1)),
            tunnels,
            pings,
            last_headers,
            _task: task,
        }
    }

    /// Whether a tunnel is up.
    pub fn connected(&self) -> bool {
        self.state.lock().unwrap().tunnel.is_some()
    }

    /// Makes the next connect ids start at `n` (to cross the one-byte uvarint boundary).
    pub fn skip_ids_to(&self, n: u64) {
        self.next_id.store(n, Ordering::SeqCst);
    }

    /// Relays an API server request (`kind`: 0 logs, 1 exec, 2 metrics, 6 attach) for
    /// `path_and_query`, as StreamServer does; `None` when no tunnel is up.
    pub fn request(&self, kind: u64, path_and_query: &str) -> Option<StreamSession> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let connector = connector(
            id,
            path_and_query,
            json!({"Accept": ["application/json, */*"], "User-Agent": ["kubectl/v1.37.2"],
                   "X-Forwarded-For": ["10.0.0.1"]}),
            None,
        );
        let (tx, rx) = async_channel::unbounded();
        let mut st = self.state.lock().unwrap();
        let t = st.tunnel.as_ref()?;
        let frame = server_frame(0x1, &message(id, kind, connector.to_string().as_bytes()));
        t.out.try_send(frame).ok()?;
        st.sessions.insert(id, tx);
        Some(StreamSession {
            id,
            rx,
            body: Vec::new(),
            removed: false,
        })
    }

    /// Relays an upgrading API server request (exec 1, attach 6) as StreamServer does: the
    /// connector carries the method and the request's headers (`Upgrade: SPDY/3.1`,
    /// `X-Stream-Protocol-Version`...); the answer and the protocol's bytes come back as DATA,
    /// the client's go down as DATA. `None` when no tunnel is up.
    pub fn upgrade(&self, kind: u64, path_and_query: &str, protocols: &[&str]) -> Option<Upgraded> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let connector = connector(
            id,
            path_and_query,
            json!({"Connection": ["Upgrade"], "Upgrade": ["SPDY/3.1"],
                   "X-Stream-Protocol-Version": protocols,
                   "User-Agent": ["kubectl/v1.37.2"], "X-Forwarded-For": ["10.0.0.1"]}),
            Some("POST"),
        );
        let (tx, rx) = async_channel::unbounded();
        let mut st = self.state.lock().unwrap();
        let t = st.tunnel.as_ref()?;
        let out = t.out.clone();
        out.try_send(server_frame(
            0x1,
            &message(id, kind, connector.to_string().as_bytes()),
        ))
        .ok()?;
        st.sessions.insert(id, tx);
        Some(Upgraded {
            id,
            rx,
            out,
            unread: Vec::new(),
            head_dropped: false,
            written: Vec::new(),
        })
    }

    /// `kubectl logs` ends (the API server's request context is done): REMOVE goes down.
    pub fn remove(&self, id: u64) {
        let mut st = self.state.lock().unwrap();
        st.sessions.remove(&id);
        if let Some(t) = st.tunnel.as_ref() {
            let _ = t.out.try_send(server_frame(0x1, &message(id, 4, &[])));
        }
    }

    /// Cuts the current tunnel (the TCP connection goes, no close frame).
    pub fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        if let Some(t) = st.tunnel.take() {
            t.out.close();
        }
        // The API server's connections see their edge peer gone.
        for (_, s) in st.sessions.drain() {
            let _ = s.try_send(StreamEvent::Removed);
        }
    }
}

/// Reads one HTTP request head; returns its headers.
async fn read_head<S: smol::io::AsyncRead + Unpin>(
    s: &mut S,
) -> Option<(String, Vec<(String, String)>)> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 || buf.len() > 16384 {
            return None;
        }
        buf.push(b[0]);
    }
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut hs);
    req.parse(&buf).ok()?;
    let path = req.path?.to_string();
    let headers = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Some((path, headers))
}

async fn serve_tunnel(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    state: Arc<Mutex<State>>,
    tunnels: Arc<AtomicUsize>,
    pings: Arc<AtomicUsize>,
    last_headers: Arc<Mutex<Option<(String, String)>>>,
    known: Arc<dyn Fn(&str) -> bool + Send + Sync>,
) {
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    let Some((path, headers)) = read_head(&mut tls).await else {
        return;
    };
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    if path != "/v1/kubeedge/connect" || !h("Upgrade").eq_ignore_ascii_case("websocket") {
        let _ = tls
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let key = h("Sec-WebSocket-Key");
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    let accept = edged::api::base64::encode(digest.as_ref());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if tls.write_all(resp.as_bytes()).await.is_err() {
        return;
    }
    let (node, ip) = (h("SessionHostNameOverride"), h("SessionInternalIP"));
    *last_headers.lock().unwrap() = Some((node.clone(), ip.clone()));
    let (mut rd, mut wr) = smol::io::split(tls);
    if !known(&node) {
        // updateNodeKubeletEndpoint failed: CLOSE with the error, and the tunnel ends.
        let err = format!("failed to get node {node}: nodes \"{node}\" not found");
        let _ = wr
            .write_all(&server_frame(0x1, &message(0, 5, err.as_bytes())))
            .await;
        let _ = wr.flush().await;
        return;
    }
    tunnels.fetch_add(1, Ordering::SeqCst);
    let (out_tx, out_rx) = async_channel::unbounded::<Vec<u8>>();
    state.lock().unwrap().tunnel = Some(Tunnel {
        node,
        ip,
        out: out_tx.clone(),
    });
    let writer = async {
        while let Ok(f) = out_rx.recv().await {
            if wr.write_all(&f).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let mut partial: Vec<u8> = Vec::new();
        loop {
            // Whole frames in the buffer.
            loop {
                if buf.len() < 2 {
                    break;
                }
                let fin = buf[0] & 0x80 != 0;
                let op = buf[0] & 0x0f;
                let masked = buf[1] & 0x80 != 0;
                let (len, mut at) = match buf[1] & 0x7f {
                    126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                    127 if buf.len() >= 10 => (
                        u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => break,
                    n => (n as usize, 2),
                };
                // A client must mask (RFC 6455, 5.1): gorilla closes the connection otherwise.
                if !masked {
                    return;
                }
                if buf.len() < at + 4 + len {
                    break;
                }
                let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
                at += 4;
                let payload: Vec<u8> = buf[at..at + len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[i % 4])
                    .collect();
                buf.drain(..at + len);
                match op {
                    0x9 => {
                        pings.fetch_add(1, Ordering::SeqCst);
                        let _ = out_tx.try_send(server_frame(0xA, &payload));
                    }
                    0x8 => return,
                    0xA => {}
                    // CloudStream refuses anything but TEXT.
                    0x2 => return,
                    0x1 | 0x0 => {
                        partial.extend_from_slice(&payload);
                        if !fin {
                            continue;
                        }
                        let m = std::mem::take(&mut partial);
                        let Some((id, n)) = read_uvarint(&m) else {
                            return;
                        };
                        let Some((kind, k)) = read_uvarint(&m[n..]) else {
                            return;
                        };
                        let data = m[n + k..].to_vec();
                        let mut st = state.lock().unwrap();
                        let ev = match kind {
                            3 => StreamEvent::Data(data),
                            4 => StreamEvent::Removed,
                            _ => continue,
                        };
                        let removed = ev == StreamEvent::Removed;
                        if let Some(s) = st.sessions.get(&id) {
                            let _ = s.try_send(ev);
                        }
                        if removed {
                            st.sessions.remove(&id);
                        }
                    }
                    _ => return,
                }
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    smol::future::or(reader, writer).await;
    let mut st = state.lock().unwrap();
    if st
        .tunnel
        .as_ref()
        .is_some_and(|t| t.out.same_channel(&out_tx))
    {
        st.tunnel = None;
        for (_, s) in st.sessions.drain() {
            let _ = s.try_send(StreamEvent::Removed);
        }
    }
}
