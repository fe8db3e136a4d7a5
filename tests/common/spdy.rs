//! A small blocking SPDY/3.1 client for tests, as client-go's spdy round-tripper and
//! remotecommand use it: upgrade a connection, open streams with headers, write, FIN, read.
//! Its framing ([`wire`]) is written here from the SPDY/3.1 draft, apart from the agent's own:
//! header blocks go out as a zlib stream with the SPDY dictionary's id and stored blocks (which
//! any inflater reads), and the server's header blocks are skipped (the client needs only to
//! know a stream was replied to).
//!
//! ```ignore
//! let mut c = spdy::Client::connect(addr, "/exec/ns/pod/c?command=cat&stdin=1&stdout=1", &["v4.channel.k8s.io"])?;
//! let err = c.open(&[("streamtype", "error")]);
//! let stdin = c.open(&[("streamtype", "stdin")]);
//! let stdout = c.open(&[("streamtype", "stdout")]);
//! c.write(stdin, b"hi\n"); c.close(stdin);
//! let out = c.read_to_end(stdout); let status = c.read_to_end(err);
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;
use wire::{Decoder, Deflater, Frame};

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
        let bytes = wire::encode(f, &mut self.z);
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

/// SPDY/3.1 frames as the draft lays them out, for a client.
pub mod wire {
    /// The frames the client sends or reads.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Frame {
        SynStream {
            id: u32,
            associated: u32,
            priority: u8,
            fin: bool,
            headers: Vec<(String, String)>,
        },
        SynReply {
            id: u32,
            fin: bool,
        },
        RstStream {
            id: u32,
            status: u32,
        },
        Ping {
            id: u32,
        },
        GoAway {
            last_good: u32,
            status: u32,
        },
        Data {
            id: u32,
            fin: bool,
            data: Vec<u8>,
        },
        /// SETTINGS, WINDOW_UPDATE, HEADERS, and types the client does not use.
        Other,
    }

    /// The adler32 of the SPDY/3 header dictionary (the draft's 2.6.10.1), which a zlib
    /// stream compressed with it names in its header.
    const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

    /// The client's header compression: one zlib stream for the connection, every header block
    /// a stored block and an empty one (a sync flush), so each frame's block is complete.
    #[derive(Default)]
    pub struct Deflater {
        started: bool,
    }

    impl Deflater {
        fn block(&mut self, raw: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            if !self.started {
                self.started = true;
                // CMF 0x78, FLG with FDICT (0x78bb % 31 == 0), then the dictionary id.
                out.extend_from_slice(&[0x78, 0xbb]);
                out.extend_from_slice(&DICTIONARY_ID.to_be_bytes());
            }
            for piece in raw.chunks(0xffff) {
                let n = piece.len() as u16;
                out.push(0x00);
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&(!n).to_le_bytes());
                out.extend_from_slice(piece);
            }
            out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
            out
        }
    }

    fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80, 0x03];
        out.extend_from_slice(&kind.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(body);
        out
    }

    /// A frame's bytes.
    pub fn encode(f: &Frame, z: &mut Deflater) -> Vec<u8> {
        match f {
            Frame::SynStream {
                id,
                associated,
                priority,
                fin,
                headers,
            } => {
                let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
                for (k, v) in headers {
                    raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
                    raw.extend_from_slice(k.as_bytes());
                    raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    raw.extend_from_slice(v.as_bytes());
                }
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&associated.to_be_bytes());
                body.extend_from_slice(&[priority << 5, 0]);
                body.extend_from_slice(&z.block(&raw));
                control(1, u8::from(*fin), &body)
            }
            Frame::RstStream { id, status } => {
                control(3, 0, &[id.to_be_bytes(), status.to_be_bytes()].concat())
            }
            Frame::Ping { id } => control(6, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => control(
                7,
                0,
                &[last_good.to_be_bytes(), status.to_be_bytes()].concat(),
            ),
            Frame::Data { id, fin, data } => {
                let mut out = (id & 0x7fff_ffff).to_be_bytes().to_vec();
                out.push(u8::from(*fin));
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                out
            }
            Frame::SynReply { .. } | Frame::Other => Vec::new(),
        }
    }

    /// Reads frames from the bytes fed to it.
    #[derive(Default)]
    pub struct Decoder {
        buf: Vec<u8>,
    }

    impl Decoder {
        pub fn new() -> Decoder {
            Decoder::default()
        }

        pub fn feed(&mut self, b: &[u8]) {
            self.buf.extend_from_slice(b);
        }

        /// The next whole frame, if there is one.
        pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
            if self.buf.len() < 8 {
                return Ok(None);
            }
            let len = u32::from_be_bytes([0, self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if self.buf.len() < 8 + len {
                return Ok(None);
            }
            let head: Vec<u8> = self.buf.drain(..8).collect();
            let body: Vec<u8> = self.buf.drain(..len).collect();
            let flags = head[4];
            let word = |b: &[u8], at: usize| -> Result<u32, String> {
                b.get(at..at + 4)
                    .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                    .ok_or_else(|| format!("a frame body of {} bytes is too short", b.len()))
            };
            if head[0] & 0x80 == 0 {
                return Ok(Some(Frame::Data {
                    id: u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
                    fin: flags & 1 != 0,
                    data: body,
                }));
            }
            let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
            if version != 3 {
                return Err(format!("SPDY version {version}, not 3"));
            }
            Ok(Some(match u16::from_be_bytes([head[2], head[3]]) {
                2 => Frame::SynReply {
                    id: word(&body, 0)? & 0x7fff_ffff,
                    fin: flags & 1 != 0,
                },
                3 => Frame::RstStream {
                    id: word(&body, 0)? & 0x7fff_ffff,
                    status: word(&body, 4)?,
                },
                6 => Frame::Ping {
                    id: word(&body, 0)?,
                },
                7 => Frame::GoAway {
                    last_good: word(&body, 0)? & 0x7fff_ffff,
                    status: word(&body, 4)?,
                },
                _ => Frame::Other,
            }))
        }
    }
}
