//! One upgraded SPDY/3.1 connection, server side: a reader that turns frames into stream
//! events (each new stream with a bounded channel of its data; PINGs answered; RST_STREAM
//! and FIN closing a stream's channel; GOAWAY, EOF or a malformed frame ending the
//! connection), and a writer that serialises frames (one header compression context) onto
//! the socket. Like moby/spdystream, no flow control: WINDOW_UPDATE and SETTINGS are read and
//! ignored, and none are sent.

use super::frame::{self, Decoder, Frame, Headers};
use super::zlib::Deflater;
use crate::server::streaming::{MAX_CHUNK, STREAM_BUFFER};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

/// A stream the client opened.
#[derive(Debug)]
pub struct NewStream {
    /// The stream's id (odd: the client's).
    pub id: u32,
    /// The SYN_STREAM's headers, such as `streamtype` (`stdin`, `stdout`, `error`, `resize`).
    pub headers: Headers,
    /// The stream's data; closed by its FIN, a reset or the connection's end.
    pub data: async_channel::Receiver<Vec<u8>>,
}

/// Why the reading side stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client closed the connection.
    Eof,
    /// The client sent GOAWAY.
    GoAway,
    /// A read failed or a frame was malformed: the reason.
    Broken(String),
}

/// The writing side, shared by every future of the connection.
pub struct Writer<W> {
    io: smol::lock::Mutex<(W, Deflater)>,
    dead: Cell<bool>,
    /// Streams the client reset (nothing more is written on them).
    pub reset: RefCell<HashSet<u32>>,
    /// The highest stream id the client opened.
    pub last_stream: Cell<u32>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer over `w`.
    pub fn new(w: W) -> Self {
        Writer {
            io: smol::lock::Mutex::new((w, Deflater::default())),
            dead: Cell::new(false),
            reset: RefCell::default(),
            last_stream: Cell::new(0),
        }
    }

    /// Writes `f`; false once the connection cannot be written (then nothing more is tried).
    pub async fn send(&self, f: &Frame) -> bool {
        if self.dead.get() {
            return false;
        }
        let mut g = self.io.lock().await;
        let (w, z) = &mut *g;
        let bytes = frame::encode(f, z);
        let ok = w.write_all(&bytes).await.is_ok() && w.flush().await.is_ok();
        if !ok {
            self.dead.set(true);
        }
        ok
    }

    /// Writes `data` on stream `id` in frames of at most [`MAX_CHUNK`] (nothing if the client
    /// reset the stream); false once the connection cannot be written.
    pub async fn data(&self, id: u32, data: &[u8]) -> bool {
        for c in data.chunks(MAX_CHUNK) {
            if self.reset.borrow().contains(&id) {
                return !self.dead.get();
            }
            let f = Frame::Data {
                id,
                fin: false,
                data: c.to_vec(),
            };
            if !self.send(&f).await {
                return false;
            }
        }
        !self.dead.get()
    }

    /// Half-closes stream `id` (an empty data frame with FIN), unless the client reset it.
    pub async fn fin(&self, id: u32) {
        if !self.reset.borrow().contains(&id) {
            self.send(&Frame::Data {
                id,
                fin: true,
                data: Vec::new(),
            })
            .await;
        }
    }

    /// Resets stream `id` with `status`.
    pub async fn rst(&self, id: u32, status: u32) {
        self.reset.borrow_mut().insert(id);
        self.send(&Frame::RstStream { id, status }).await;
    }

    /// Replies to stream `id` (no headers), as spdystream's server does for every stream.
    pub async fn reply(&self, id: u32) -> bool {
        self.send(&Frame::SynReply {
            id,
            fin: false,
            headers: Vec::new(),
        })
        .await
    }

    /// Sends GOAWAY and closes the writing side.
    pub async fn goaway(&self) {
        let last_good = self.last_stream.get();
        self.send(&Frame::GoAway {
            last_good,
            status: 0,
        })
        .await;
        let mut g = self.io.lock().await;
        let _ = g.0.close().await;
        self.dead.set(true);
    }
}

/// Reads frames until the connection ends: new streams go to `streams` (their SYN_REPLY is
/// the caller's), data to each stream's channel (awaiting room: a session that does not read
/// its stdin stops the connection's reading), PINGs are answered through `w`.
pub async fn read_loop<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    early: Vec<u8>,
    w: &Writer<W>,
    streams: async_channel::Sender<NewStream>,
) -> End {
    let mut dec = Decoder::new();
    dec.feed(&early);
    let mut open: HashMap<u32, async_channel::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        loop {
            let f = match dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return End::Broken(e),
            };
            match f {
                Frame::SynStream {
                    id, headers, fin, ..
                } => {
                    if id % 2 == 0 || id <= w.last_stream.get() {
                        // Client streams are odd and increasing (SPDY/3 2.3.2).
                        w.rst(id, frame::RST_PROTOCOL_ERROR).await;
                        continue;
                    }
                    w.last_stream.set(id);
                    let (tx, rx) = async_channel::bounded(STREAM_BUFFER);
                    if !fin {
                        open.insert(id, tx);
                    }
                    let s = NewStream {
                        id,
                        headers,
                        data: rx,
                    };
                    if streams.send(s).await.is_err() {
                        // Nobody takes streams any more.
                        w.rst(id, frame::RST_REFUSED_STREAM).await;
                    }
                }
                Frame::Data { id, fin, data } => {
                    if let Some(tx) = open.get(&id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            open.remove(&id);
                        }
                    }
                    if fin {
                        open.remove(&id);
                    }
                }
                Frame::RstStream { id, .. } => {
                    w.reset.borrow_mut().insert(id);
                    open.remove(&id);
                }
                Frame::Ping { id } => {
                    // Ours would be even; the client's (odd) are echoed.
                    if id % 2 == 1 {
                        w.send(&Frame::Ping { id }).await;
                    }
                }
                Frame::GoAway { .. } => return End::GoAway,
                Frame::Headers { id, fin: true, .. } => {
                    open.remove(&id);
                }
                Frame::SynReply { .. }
                | Frame::Headers { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. } => {}
            }
        }
        match r.read(&mut buf).await {
            Ok(0) => return End::Eof,
            Ok(n) => dec.feed(&buf[..n]),
            Err(e) => return End::Broken(format!("read failed: {e}")),
        }
    }
}

/// Splits `s` into the reading and the writing side.
pub fn split<S: AsyncRead + AsyncWrite + Unpin>(s: S) -> (ReadHalf<S>, Writer<WriteHalf<S>>) {
    let (r, w) = smol::io::split(s);
    (r, Writer::new(w))
}
