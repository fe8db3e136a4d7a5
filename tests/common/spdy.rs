//! A small blocking SPDY/3.1 client for tests, as client-go's spdy round-tripper and
//! remotecommand use it: upgrade a connection, open streams with headers, write, FIN, read.
//! Frames and header blocks come from the agent's own `spdy::frame` (checked there against
//! bytes recorded from moby/spdystream).
//!
//! ```ignore
//! let mut c = spdy::Client::connect(addr, "/exec/ns/pod/c?command=cat&stdin=1&stdout=1", &["v4.channel.k8s.io"])?;
//! let err = c.open(&[("streamtype", "error")]);
//! let stdin = c.open(&[("streamtype", "stdin")]);
//! let stdout = c.open(&[("streamtype", "stdout")]);
//! c.write(stdin, b"hi\n"); c.close(stdin);
//! let out = c.read_to_end(stdout); let status = c.read_to_end(err);
//! ```

use edged::server::streaming::spdy::frame::{self, Decoder, Frame};
use edged::server::streaming::spdy::zlib::Deflater;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

/// What a stream received.
#[derive(Debug, Default, Clone)]
pub struct Inbound {
    pub data: Vec<u8>,
    pub fin: bool,
    pub reset: bool,
    pub replied: bool,
}

/// The answer to an upgrade that was refused.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Anything a client can talk over.
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// An upgraded connection.
pub struct Client {
    io: Box<dyn Conn>,
    dec: Decoder,
    z: Deflater,
    next_id: u32,
    /// The protocol the server chose.
    pub protocol: String,
    /// Every stream's inbound data so far.
    pub streams: HashMap<u32, Inbound>,
    /// Pings answered.
    pub pongs: Vec<u32>,
    /// Whether the server sent GOAWAY, or closed.
    pub goaway: bool,
    pub closed: bool,
}

impl Client {
    /// Connects over TCP to `addr` and upgrades `GET path_and_query`.
    pub fn connect(
        addr: &str,
        path_and_query: &str,
        protocols: &[&str],
    ) -> Result<Client, Refused> {
        let s = std::net::TcpStream::connect(addr).map_err(|e| Refused {
            status: 0,
            head: String::new(),
            body: format!("connect {addr}: {e}"),
        })?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        Client::upgrade(Box::new(s), path_and_query, protocols, &[])
    }

    /// Upgrades `GET path_and_query` over `io` (`extra`: more request headers).
    pub fn upgrade(
        mut io: Box<dyn Conn>,
        path_and_query: &str,
        protocols: &[&str],
        extra: &[(&str, &str)],
    ) -> Result<Client, Refused> {
        let mut req = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        );
        for p in protocols {
            req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
        }
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let fail = |e: std::io::Error| Refused {
            status: 0,
            head: String::new(),
            body: e.to_string(),
        };
        io.write_all(req.as_bytes()).map_err(fail)?;
        // Read the head byte by byte: what follows it is already SPDY.
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if io.read(&mut b).map_err(fail)? == 0 {
                break;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status != 101 {
            let mut body = String::new();
            let _ = io.read_to_string(&mut body);
            return Err(Refused { status, head, body });
        }
        let protocol = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-stream-protocol-version")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        Ok(Client {
            io,
            dec: Decoder::new(),
            z: Deflater::default(),
            next_id: 1,
            protocol,
            streams: HashMap::new(),
            pongs: Vec::new(),
            goaway: false,
            closed: false,
        })
    }

    fn send(&mut self, f: &Frame) {
        let bytes = frame::encode(f, &mut self.z);
        let _ = self.io.write_all(&bytes);
    }

    /// Opens a stream with `headers` (names lower case); its id.
    pub fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        self.send(&Frame::SynStream {
            id,
            associated: 0,
            priority: 0,
            fin: false,
            headers,
        });
        self.streams.entry(id).or_default();
        id
    }

    /// Writes `data` on stream `id`.
    pub fn write(&mut self, id: u32, data: &[u8]) {
        self.send(&Frame::Data {
            id,
            fin: false,
            data: data.to_vec(),
        });
    }

    /// Half-closes stream `id` (FIN).
    pub fn close(&mut self, id: u32) {
        self.send(&Frame::Data {
            id,
            fin: true,
            data: vec![],
        });
    }

    /// Resets stream `id`.
    pub fn reset(&mut self, id: u32) {
        self.send(&Frame::RstStream { id, status: 5 });
    }

    /// Sends PING `id` (odd: the client's).
    pub fn ping(&mut self, id: u32) {
        self.send(&Frame::Ping { id });
    }

    /// Sends raw bytes (malformed frames in tests).
    pub fn raw(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes);
    }

    /// Sends GOAWAY.
    pub fn goaway(&mut self) {
        self.send(&Frame::GoAway {
            last_good: 0,
            status: 0,
        });
    }

    /// Reads one frame and records it; false once the connection is closed.
    pub fn step(&mut self) -> bool {
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => {
                    self.record(f);
                    return true;
                }
                Ok(None) => {}
                Err(e) => panic!("the server sent a bad frame: {e}"),
            }
            let mut buf = [0u8; 16 * 1024];
            match self.io.read(&mut buf) {
                Ok(0) | Err(_) => {
                    self.closed = true;
                    return false;
                }
                Ok(n) => self.dec.feed(&buf[..n]),
            }
        }
    }

    fn record(&mut self, f: Frame) {
        match f {
            Frame::SynReply { id, fin, .. } => {
                let s = self.streams.entry(id).or_default();
                s.replied = true;
                s.fin |= fin;
            }
            Frame::Data { id, fin, data } => {
                let s = self.streams.entry(id).or_default();
                s.data.extend_from_slice(&data);
                s.fin |= fin;
            }
            Frame::RstStream { id, .. } => self.streams.entry(id).or_default().reset = true,
            Frame::Ping { id } => self.pongs.push(id),
            Frame::GoAway { .. } => self.goaway = true,
            _ => {}
        }
    }

    /// Reads until stream `id` is replied to (or reset, or the connection ends); whether it was.
    pub fn wait_reply(&mut self, id: u32) -> bool {
        while !self.streams.get(&id).is_some_and(|s| s.replied || s.reset) {
            if !self.step() {
                break;
            }
        }
        self.streams.get(&id).is_some_and(|s| s.replied)
    }

    /// Reads until stream `id` has FIN (or reset, or the connection ends); all its data.
    pub fn read_to_end(&mut self, id: u32) -> Vec<u8> {
        while !self.streams.get(&id).is_some_and(|s| s.fin || s.reset) {
            if !self.step() {
                break;
            }
        }
        self.streams
            .get(&id)
            .map(|s| s.data.clone())
            .unwrap_or_default()
    }

    /// Reads until stream `id` holds at least `n` bytes (or ends); its data so far.
    pub fn read_at_least(&mut self, id: u32, n: usize) -> Vec<u8> {
        while self.streams.get(&id).map_or(0, |s| s.data.len()) < n
            && !self.streams.get(&id).is_some_and(|s| s.fin || s.reset)
        {
            if !self.step() {
                break;
            }
        }
        self.streams
            .get(&id)
            .map(|s| s.data.clone())
            .unwrap_or_default()
    }

    /// Reads until the server sends GOAWAY or closes the connection.
    pub fn read_all(&mut self) {
        while !self.goaway && self.step() {}
    }
}
