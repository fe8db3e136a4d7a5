//! The grpc probe: one call of `grpc.health.v1.Health/Check` over HTTP/2 in cleartext (h2c
//! with prior knowledge), as the kubelet makes it (pkg/probe/grpc): success only when the
//! answer's status is SERVING, with the kubelet's failure messages.
//!
//! The client is a minimal blocking HTTP/2 client for exactly this exchange: the preface and
//! an empty SETTINGS, one request on stream 1 (HEADERS of literal fields, one DATA frame that
//! ends the stream), then frames are read until stream 1 ends; SETTINGS are acknowledged and
//! PINGs answered, anything else that does not concern stream 1 is passed over. Every frame,
//! header block and the whole answer are bounded, and the whole exchange must finish within
//! the probe's timeout.

use super::handlers::{in_netns, Outcome};
use super::hpack;
use crate::api::GrpcAction;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest frame payload accepted (SETTINGS_MAX_FRAME_SIZE, left at its default).
pub const MAX_FRAME: usize = 16 * 1024;

/// The largest header block (HEADERS and its CONTINUATIONs) accepted.
pub const MAX_HEADER_BLOCK: usize = 16 * 1024;

/// The most DATA bytes accepted on stream 1 (below the initial flow-control window, so no
/// WINDOW_UPDATE is ever needed).
pub const MAX_DATA: usize = 16 * 1024;

/// The most bytes read from the server in one exchange.
pub const MAX_READ: usize = 256 * 1024;

/// The health method's path.
pub const PATH: &str = "/grpc.health.v1.Health/Check";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// One HTTP/2 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame type (DATA 0, HEADERS 1, SETTINGS 4, ...).
    pub kind: u8,
    /// The type's flags (END_STREAM, END_HEADERS, ...).
    pub flags: u8,
    /// The stream id (0: the connection).
    pub stream: u32,
    /// The frame's payload, padding included.
    pub payload: Vec<u8>,
}

/// A frame's bytes: the 9-byte header, then `payload`.
pub fn encode_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The first frame in `buf` and its length in bytes; `None` while it is incomplete. A
/// payload over [`MAX_FRAME`] is an error (FRAME_SIZE_ERROR).
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    let Some(head) = buf.get(..9) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    if len > MAX_FRAME {
        return Err(format!(
            "the server sent a frame of {len} bytes, over the {MAX_FRAME}-byte maximum (is it an HTTP/2 gRPC server?)"
        ));
    }
    let Some(payload) = buf.get(9..9 + len) else {
        return Ok(None);
    };
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let frame = Frame {
        kind: head[3],
        flags: head[4],
        stream,
        payload: payload.to_vec(),
    };
    Ok(Some((frame, 9 + len)))
}

/// The HealthCheckRequest as a gRPC message: the 5-byte prefix (not compressed, big-endian
/// length), then the protobuf (field 1, `service`, left out when empty).
pub fn health_request(service: &str) -> Vec<u8> {
    let mut pb = Vec::new();
    if !service.is_empty() {
        pb.push(0x0a); // field 1, length-delimited
        put_varint(&mut pb, service.len() as u64);
        pb.extend_from_slice(service.as_bytes());
    }
    let mut out = vec![0];
    out.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    out.extend_from_slice(&pb);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Everything the client sends first: the preface, an empty SETTINGS, and the request on
/// stream 1 (HEADERS with END_HEADERS, DATA with END_STREAM).
pub fn request(authority: &str, service: &str, timeout: Duration) -> Vec<u8> {
    let mut block = Vec::new();
    let timeout = format!("{}m", timeout.as_millis().clamp(1, 99_999_999));
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", PATH),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "kube-probe/edged"),
        ("grpc-timeout", timeout.as_str()),
    ] {
        hpack::encode_literal(&mut block, name, value);
    }
    let mut out = PREFACE.to_vec();
    out.extend(encode_frame(SETTINGS, 0, 0, &[]));
    out.extend(encode_frame(HEADERS, END_HEADERS, 1, &block));
    out.extend(encode_frame(DATA, END_STREAM, 1, &health_request(service)));
    out
}

/// What the server answered on stream 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// `:status` of the response headers.
    pub http_status: Option<String>,
    /// `grpc-status` (of the trailers, or of a trailers-only answer).
    pub grpc_status: Option<String>,
    /// `grpc-message`, percent-decoded.
    pub grpc_message: Option<String>,
    /// The DATA bytes (gRPC length-prefixed messages).
    pub data: Vec<u8>,
}

/// Why the exchange ended without an answer.
#[derive(Debug)]
pub enum Failure {
    /// The connection could not be made.
    Connect(io::Error),
    /// The deadline passed after connecting.
    Timeout,
    /// Anything else: the reason, for the probe's message.
    Other(String),
}

/// The client's state while it reads frames: pure, fed frame by frame.
#[derive(Default)]
pub struct Exchange {
    decoder: hpack::Decoder,
    /// A header block waiting for CONTINUATION frames: (stream, bytes, ends the stream).
    pending: Option<(u32, Vec<u8>, bool)>,
    answer: Answer,
    headers_seen: bool,
}

/// What to do after a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes (maybe none) and read on.
    Continue(Vec<u8>),
    /// Stream 1 ended: the answer is complete.
    Done,
}

/// Strips the padding (and the priority fields) of a DATA or HEADERS payload.
fn unpad(flags: u8, payload: &[u8], priority: bool) -> Result<&[u8], String> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        pad = *p.first().ok_or("a padded frame without its pad length")? as usize;
        p = &p[1..];
    }
    if priority && flags & PRIORITY != 0 {
        p = p
            .get(5..)
            .ok_or("a HEADERS frame too short for its priority")?;
    }
    let end = p
        .len()
        .checked_sub(pad)
        .ok_or("a frame's padding is longer than the frame")?;
    Ok(&p[..end])
}

fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = s.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (s[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Exchange {
    /// The answer so far.
    pub fn answer(&self) -> &Answer {
        &self.answer
    }

    /// The answer, once [`Step::Done`].
    pub fn into_answer(self) -> Answer {
        self.answer
    }

    fn header_block(&mut self, stream: u32, block: &[u8], end: bool) -> Result<Step, String> {
        let fields = self.decoder.decode(block).map_err(|e| e.to_string())?;
        if stream != 1 {
            return Ok(Step::Continue(Vec::new()));
        }
        for (name, value) in fields {
            match name.as_slice() {
                b":status" => {
                    self.answer.http_status = Some(String::from_utf8_lossy(&value).into_owned())
                }
                b"grpc-status" => {
                    self.answer.grpc_status = Some(String::from_utf8_lossy(&value).into_owned())
                }
                b"grpc-message" => self.answer.grpc_message = Some(percent_decode(&value)),
                _ => {}
            }
        }
        self.headers_seen = true;
        Ok(if end {
            Step::Done
        } else {
            Step::Continue(Vec::new())
        })
    }

    /// Takes one frame from the server.
    pub fn on_frame(&mut self, f: &Frame) -> Result<Step, String> {
        if let Some((stream, block, end)) = &mut self.pending {
            if f.kind != CONTINUATION || f.stream != *stream {
                return Err("a header block was interrupted by another frame".into());
            }
            if block.len() + f.payload.len() > MAX_HEADER_BLOCK {
                return Err(format!(
                    "the server's header block is over {MAX_HEADER_BLOCK} bytes"
                ));
            }
            block.extend_from_slice(&f.payload);
            if f.flags & END_HEADERS == 0 {
                return Ok(Step::Continue(Vec::new()));
            }
            let (stream, block, end) = (*stream, std::mem::take(block), *end);
            self.pending = None;
            return self.header_block(stream, &block, end);
        }
        match f.kind {
            DATA if f.stream == 1 => {
                let data = unpad(f.flags, &f.payload, false)?;
                if self.answer.data.len() + data.len() > MAX_DATA {
                    return Err(format!("the answer is over {MAX_DATA} bytes"));
                }
                self.answer.data.extend_from_slice(data);
                Ok(if f.flags & END_STREAM != 0 {
                    Step::Done
                } else {
                    Step::Continue(Vec::new())
                })
            }
            HEADERS => {
                let block = unpad(f.flags, &f.payload, true)?;
                let end = f.flags & END_STREAM != 0;
                if f.flags & END_HEADERS == 0 {
                    self.pending = Some((f.stream, block.to_vec(), end));
                    return Ok(Step::Continue(Vec::new()));
                }
                self.header_block(f.stream, block, end)
            }
            RST_STREAM if f.stream == 1 => {
                let code = f
                    .payload
                    .get(..4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(0);
                Err(format!(
                    "the server reset the stream (HTTP/2 error code {code:#x})"
                ))
            }
            SETTINGS if f.flags & ACK == 0 => {
                if !f.payload.len().is_multiple_of(6) {
                    return Err("a SETTINGS frame of a length not a multiple of 6".into());
                }
                Ok(Step::Continue(encode_frame(SETTINGS, ACK, 0, &[])))
            }
            PING if f.flags & ACK == 0 => {
                if f.payload.len() != 8 {
                    return Err("a PING frame not of 8 bytes".into());
                }
                Ok(Step::Continue(encode_frame(PING, ACK, 0, &f.payload)))
            }
            PUSH_PROMISE => Err("the server pushed a stream, which gRPC never does".into()),
            GOAWAY => {
                let word = |at: usize| {
                    f.payload
                        .get(at..at + 4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .unwrap_or(0)
                };
                let (last, code) = (word(0) & 0x7fff_ffff, word(4));
                // A graceful GOAWAY that covers stream 1 lets the stream finish.
                if last >= 1 && code == 0 {
                    return Ok(Step::Continue(Vec::new()));
                }
                let debug = f.payload.get(8..).unwrap_or_default();
                Err(format!(
                    "the server closed the connection (GOAWAY, HTTP/2 error code {code:#x}{}{})",
                    if debug.is_empty() { "" } else { ": " },
                    String::from_utf8_lossy(&debug[..debug.len().min(200)])
                ))
            }
            CONTINUATION => Err("a CONTINUATION frame without a header block".into()),
            // WINDOW_UPDATE, PRIORITY, acknowledgements, other streams, unknown kinds.
            _ => Ok(Step::Continue(Vec::new())),
        }
    }
}

/// The serving status of a HealthCheckResponse message (the DATA of the answer): field 1,
/// a varint; 0 (UNKNOWN) when absent, as proto3 reads it.
pub fn response_status(data: &[u8]) -> Result<u64, String> {
    let (&flag, rest) = data.split_first().ok_or("the answer has no message")?;
    if flag != 0 {
        return Err("the answer's message is compressed, which was not asked for".into());
    }
    let len = rest
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
        .ok_or("the answer's message prefix is truncated")?;
    let mut pb = rest
        .get(4..4 + len)
        .ok_or("the answer's message is shorter than its prefix says")?;
    let mut status = 0;
    while !pb.is_empty() {
        let tag = varint(&mut pb)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => status = varint(&mut pb)?,
            (_, 0) => {
                varint(&mut pb)?;
            }
            (_, 1) => pb = pb.get(8..).ok_or("a truncated field")?,
            (_, 5) => pb = pb.get(4..).ok_or("a truncated field")?,
            (_, 2) => {
                let n = varint(&mut pb)?;
                pb = usize::try_from(n)
                    .ok()
                    .and_then(|n| pb.get(n..))
                    .ok_or("a truncated field")?;
            }
            (_, w) => return Err(format!("a protobuf field of wire type {w}")),
        }
    }
    Ok(status)
}

fn varint(pb: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = pb.split_first().ok_or("a truncated varint")?;
        *pb = rest;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint over 64 bits".into())
}

/// The name of a serving status, as grpc-go prints it.
pub fn status_name(s: u64) -> String {
    match s {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// The name of a gRPC status code, as grpc-go prints it.
pub fn code_name(code: &str) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    code.parse::<usize>()
        .ok()
        .and_then(|n| NAMES.get(n))
        .map(|n| n.to_string())
        .unwrap_or_else(|| format!("Code({code})"))
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// The probe's outcome for an answer (the kubelet's messages).
pub fn judge(answer: &Answer, timeout: Duration) -> Outcome {
    let rpc_failed = |m: String| Outcome::Failure(format!("error: health rpc probe failed: {m}"));
    let code = answer.grpc_status.as_deref().unwrap_or("");
    let message = answer.grpc_message.clone().unwrap_or_default();
    match code {
        "0" => {}
        "" if answer.http_status.as_deref() != Some("200") => {
            return rpc_failed(format!(
                "rpc error: code = Unknown desc = the server answered HTTP status {} without a grpc-status",
                answer.http_status.as_deref().unwrap_or("(none)")
            ))
        }
        "" => {
            return rpc_failed(
                "rpc error: code = Internal desc = the server's answer has no grpc-status".into(),
            )
        }
        "12" => {
            return Outcome::Failure(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
            ))
        }
        "4" => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {}",
                seconds(timeout)
            ))
        }
        c => {
            return rpc_failed(format!(
                "rpc error: code = {} desc = {message}",
                code_name(c)
            ))
        }
    }
    match response_status(&answer.data) {
        Ok(1) => Outcome::Success,
        Ok(s) => Outcome::Failure(format!(
            "service unhealthy (responded with \"{}\")",
            status_name(s)
        )),
        Err(e) => rpc_failed(format!("rpc error: code = Internal desc = {e}")),
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Runs the exchange on a connected stream: sends the request, reads until stream 1 ends, all
/// within `timeout`. `set_deadline` is called before each read and write with the time left.
pub fn exchange<S: Read + Write>(
    s: &mut S,
    authority: &str,
    service: &str,
    timeout: Duration,
    set_deadline: impl Fn(&mut S, Duration) -> io::Result<()>,
) -> Result<Answer, Failure> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let io_fail = |e: io::Error| {
        if timed_out(&e) {
            Failure::Timeout
        } else {
            Failure::Other(e.to_string())
        }
    };
    let send = |s: &mut S, bytes: &[u8]| -> Result<(), Failure> {
        let t = left().ok_or(Failure::Timeout)?;
        set_deadline(s, t).map_err(io_fail)?;
        s.write_all(bytes).map_err(io_fail)
    };
    send(s, &request(authority, service, timeout))?;
    let mut ex = Exchange::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((frame, used)) = parse_frame(&buf).map_err(Failure::Other)? {
            buf.drain(..used);
            match ex.on_frame(&frame).map_err(Failure::Other)? {
                Step::Done => return Ok(ex.into_answer()),
                Step::Continue(reply) if !reply.is_empty() => send(s, &reply)?,
                Step::Continue(_) => {}
            }
        }
        let t = left().ok_or(Failure::Timeout)?;
        set_deadline(s, t).map_err(io_fail)?;
        let n = s.read(&mut chunk).map_err(io_fail)?;
        if n == 0 {
            return Err(Failure::Other(
                "the server closed the connection before the answer ended".into(),
            ));
        }
        total += n;
        if total > MAX_READ {
            return Err(Failure::Other(format!(
                "the server sent over {MAX_READ} bytes"
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The probe's message for a failed exchange (the kubelet's wording).
pub fn failure_message(f: &Failure, addr: &str, timeout: Duration) -> String {
    match f {
        Failure::Connect(e) if timed_out(e) => format!(
            "timeout: failed to connect service {addr:?} within {}: context deadline exceeded",
            seconds(timeout)
        ),
        Failure::Connect(e) => {
            format!("error: failed to connect service at {addr:?}: dial tcp {addr}: {e}")
        }
        Failure::Timeout => format!(
            "timeout: health rpc did not complete within {}",
            seconds(timeout)
        ),
        Failure::Other(m) => format!("error: health rpc probe failed: {m}"),
    }
}

/// Checks `action.port` (1-65535).
pub fn port(action: &GrpcAction) -> Result<u16, String> {
    u16::try_from(action.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            format!(
                "grpc probe port {} is not a port number (1-65535)",
                action.port
            )
        })
}

/// grpc: from inside `netns` (the host's when `None`), calls the health service at
/// 127.0.0.1:`port`; success when it answers SERVING within `timeout`.
pub async fn probe(action: &GrpcAction, netns: Option<PathBuf>, timeout: Duration) -> Outcome {
    let port = match port(action) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    let service = action.service.clone().unwrap_or_default();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let authority = addr.to_string();
    let result = in_netns(netns, move || {
        let run = || -> Result<Answer, Failure> {
            // One deadline for the whole probe: connecting takes from the exchange's time.
            let start = Instant::now();
            let mut tcp = TcpStream::connect_timeout(&addr, timeout).map_err(Failure::Connect)?;
            let _ = tcp.set_nodelay(true);
            let left = timeout.saturating_sub(start.elapsed());
            exchange(&mut tcp, &authority, &service, left, |s, t| {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            })
        };
        Ok(run())
    })
    .await;
    match result {
        Ok(Ok(answer)) => judge(&answer, timeout),
        Ok(Err(f)) => Outcome::Failure(failure_message(&f, &addr.to_string(), timeout)),
        Err(e) => Outcome::Failure(format!("error: health rpc probe failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // What grpc-go's health server (google.golang.org/grpc v1.85, health.NewServer with ""
    // SERVING and "bad" NOT_SERVING) sent to this client, recorded: its SETTINGS, the ACK of
    // ours, a WINDOW_UPDATE and a PING, then the answer (Huffman-coded, indexed headers).
    const GO_SERVING: &str = "0000060400000000000005000040000000000401000000000000040800000000000000000500000806000000000002041010090e070700000e010400000001885f8b1d75d0620d263d4c4d65640000070000000000010000000002080100001801050000000140889acac8b21234da8f013040899acac8b5254207317f00";
    const GO_NOT_SERVING: &str = "0000060400000000000005000040000000000401000000000000040800000000000000000a00000806000000000002041010090e070700000e010400000001885f8b1d75d0620d263d4c4d65640000070000000000010000000002080200001801050000000140889acac8b21234da8f013040899acac8b5254207317f00";
    const GO_UNKNOWN_SERVICE: &str = "0000060400000000000005000040000000000401000000000000040800000000000000000b00000806000000000002041010090e0707000031010500000001885f8b1d75d0620d263d4c4d656440889acac8b21234da8f013540899acac8b5254207317f8bb6aeb51fc54a20b677310b";
    // The same from a grpc-go server with no health service.
    const GO_UNIMPLEMENTED: &str = "0000060400000000000005000040000000000401000000000000040800000000000000000500000806000000000002041010090e0707000042010500000001885f8b1d75d0620d263d4c4d656440889acac8b21234da8f02313240899acac8b5254207317f9bb6aeb51fc54a20b677310aa4d65645e728e84cebf70af8ca3a133f";

    /// Serves `answer` to one connection, then reads until the client closes; returns its
    /// port and what the client sent.
    fn replay(answer: Vec<u8>) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(&answer).unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            got
        });
        (port, t)
    }

    fn probe_port(port: u16, service: Option<&str>) -> Outcome {
        let action = GrpcAction {
            port: port as i32,
            service: service.map(str::to_string),
        };
        smol::block_on(probe(&action, None, Duration::from_secs(5)))
    }

    #[test]
    fn recorded_grpc_go_answers() {
        for (answer, service, want) in [
            (GO_SERVING, None, Outcome::Success),
            (
                GO_NOT_SERVING,
                Some("bad"),
                Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into()),
            ),
            (
                GO_UNKNOWN_SERVICE,
                Some("nope"),
                Outcome::Failure(
                    "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
                        .into(),
                ),
            ),
            (
                GO_UNIMPLEMENTED,
                None,
                Outcome::Failure(
                    "error: this server does not implement the grpc health protocol \
                     (grpc.health.v1.Health): unknown service grpc.health.v1.Health"
                        .into(),
                ),
            ),
        ] {
            let (port, server) = replay(hex(answer));
            assert_eq!(probe_port(port, service), want, "{service:?}");
            let sent = server.join().unwrap();
            assert!(sent.starts_with(PREFACE));
            // The server's SETTINGS was acknowledged and its PING answered.
            let mut frames = Vec::new();
            let mut rest = &sent[PREFACE.len()..];
            while let Some((f, used)) = parse_frame(rest).unwrap() {
                rest = &rest[used..];
                frames.push(f);
            }
            assert!(rest.is_empty());
            assert!(frames.iter().any(|f| f.kind == SETTINGS && f.flags == ACK));
            assert!(frames.iter().any(|f| f.kind == PING && f.flags == ACK));
        }
    }

    #[test]
    fn the_request_is_what_a_grpc_server_expects() {
        let bytes = request("127.0.0.1:8080", "db", Duration::from_secs(3));
        assert!(bytes.starts_with(PREFACE));
        let mut rest = &bytes[PREFACE.len()..];
        let mut frames = Vec::new();
        while let Some((f, used)) = parse_frame(rest).unwrap() {
            rest = &rest[used..];
            frames.push(f);
        }
        assert!(rest.is_empty());
        let kinds: Vec<_> = frames.iter().map(|f| (f.kind, f.flags, f.stream)).collect();
        assert_eq!(
            kinds,
            [
                (SETTINGS, 0, 0),
                (HEADERS, END_HEADERS, 1),
                (DATA, END_STREAM, 1)
            ]
        );
        assert!(frames[0].payload.is_empty());
        let fields = hpack::Decoder::default()
            .decode(&frames[1].payload)
            .unwrap();
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        let want = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Check"),
            (":authority", "127.0.0.1:8080"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", "kube-probe/edged"),
            ("grpc-timeout", "3000m"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(fields, want);
        assert_eq!(frames[2].payload, [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']);
    }

    #[test]
    fn health_requests() {
        assert_eq!(health_request(""), [0, 0, 0, 0, 0]);
        let long = "s".repeat(200);
        let r = health_request(&long);
        assert_eq!(&r[..8], [0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
        assert_eq!(r.len(), 5 + 203);
    }

    #[test]
    fn frames_parse_and_are_bounded() {
        let f = encode_frame(PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(parse_frame(&f[..16]).unwrap(), None);
        assert_eq!(parse_frame(&f[..5]).unwrap(), None);
        let (frame, used) = parse_frame(&f).unwrap().unwrap();
        assert_eq!(used, 17);
        assert_eq!(frame.kind, PING);
        assert_eq!(frame.payload, [1, 2, 3, 4, 5, 6, 7, 8]);
        // The reserved bit of the stream id is ignored.
        let mut g = encode_frame(DATA, 0, 1, &[]);
        g[5] |= 0x80;
        assert_eq!(parse_frame(&g).unwrap().unwrap().0.stream, 1);
        // An HTTP/1 answer reads as a frame far over the maximum.
        assert!(parse_frame(b"HTTP/1.1 400 Bad Request\r\n").is_err());
    }

    #[test]
    fn response_status_decodes_health_check_responses() {
        for (data, want) in [
            (vec![0, 0, 0, 0, 2, 0x08, 1], Ok(1)),
            (vec![0, 0, 0, 0, 2, 0x08, 2], Ok(2)),
            (vec![0, 0, 0, 0, 0], Ok(0)),
            // Unknown fields (a string, a fixed32) are passed over.
            (
                vec![
                    0, 0, 0, 0, 11, 0x12, 2, b'h', b'i', 0x1d, 1, 2, 3, 4, 0x08, 3,
                ],
                Ok(3),
            ),
        ] {
            assert_eq!(response_status(&data), want, "{data:?}");
        }
        for bad in [
            vec![],
            vec![1, 0, 0, 0, 2, 0x08, 1],
            vec![0, 0, 0],
            vec![0, 0, 0, 0, 9, 0x08, 1],
            vec![0, 0, 0, 0, 2, 0x08, 0x80],
            vec![0, 0, 0, 0, 2, 0x12, 5],
            vec![0, 0, 0, 0, 1, 0x0b],
            vec![
                0, 0, 0, 0, 11, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ] {
            assert!(response_status(&bad).is_err(), "{bad:?}");
        }
    }

    fn answer(grpc: Option<&str>, message: Option<&str>, data: &[u8]) -> Answer {
        Answer {
            http_status: Some("200".into()),
            grpc_status: grpc.map(str::to_string),
            grpc_message: message.map(str::to_string),
            data: data.to_vec(),
        }
    }

    #[test]
    fn judging_answers_as_the_kubelet() {
        let t = Duration::from_secs(2);
        let fail = |m: &str| Outcome::Failure(m.to_string());
        let serving = [0, 0, 0, 0, 2, 0x08, 1];
        for (a, want) in [
            (answer(Some("0"), None, &serving), Outcome::Success),
            (
                answer(Some("0"), None, &[0, 0, 0, 0, 2, 0x08, 3]),
                fail("service unhealthy (responded with \"SERVICE_UNKNOWN\")"),
            ),
            (
                answer(Some("0"), None, &[0, 0, 0, 0, 0]),
                fail("service unhealthy (responded with \"UNKNOWN\")"),
            ),
            (
                answer(Some("0"), None, &[0, 0, 0, 0, 2, 0x08, 9]),
                fail("service unhealthy (responded with \"9\")"),
            ),
            (
                answer(Some("5"), Some("unknown service"), &[]),
                fail("error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"),
            ),
            (
                answer(Some("12"), Some("nope"), &[]),
                fail("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): nope"),
            ),
            (
                answer(Some("4"), None, &[]),
                fail("timeout: health rpc did not complete within 2s"),
            ),
            (
                answer(Some("99"), Some("x"), &[]),
                fail("error: health rpc probe failed: rpc error: code = Code(99) desc = x"),
            ),
            (
                Answer {
                    http_status: Some("404".into()),
                    ..Default::default()
                },
                fail("error: health rpc probe failed: rpc error: code = Unknown desc = the server answered HTTP status 404 without a grpc-status"),
            ),
            (
                answer(Some("0"), None, &[1, 0, 0, 0, 0]),
                fail("error: health rpc probe failed: rpc error: code = Internal desc = the answer's message is compressed, which was not asked for"),
            ),
        ] {
            assert_eq!(judge(&a, t), want, "{a:?}");
        }
    }

    #[test]
    fn failure_messages() {
        let t = Duration::from_secs(1);
        let addr = "127.0.0.1:9";
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(
            failure_message(&Failure::Connect(refused), addr, t).starts_with(
                "error: failed to connect service at \"127.0.0.1:9\": dial tcp 127.0.0.1:9: "
            )
        );
        let slow = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(
            failure_message(&Failure::Connect(slow), addr, t),
            "timeout: failed to connect service \"127.0.0.1:9\" within 1s: context deadline exceeded"
        );
        assert_eq!(
            failure_message(&Failure::Timeout, addr, t),
            "timeout: health rpc did not complete within 1s"
        );
        assert_eq!(
            failure_message(&Failure::Other("x".into()), addr, t),
            "error: health rpc probe failed: x"
        );
    }

    #[test]
    fn the_probe_json_has_grpc_only_when_set() {
        // Left out when unset, so the version-1 container hash of existing probes stays.
        let p = crate::api::Probe {
            period_seconds: Some(1),
            ..Default::default()
        };
        assert!(serde_json::to_value(&p).unwrap().get("grpc").is_none());
        let p: crate::api::Probe = serde_json::from_value(serde_json::json!(
            {"grpc": {"port": 9000, "service": "db"}, "periodSeconds": 1}
        ))
        .unwrap();
        let want = GrpcAction {
            port: 9000,
            service: Some("db".into()),
        };
        assert_eq!(p.grpc, Some(want));
    }

    #[test]
    fn ports_are_checked() {
        for (p, ok) in [
            (1, true),
            (65535, true),
            (0, false),
            (-1, false),
            (65536, false),
        ] {
            let a = GrpcAction {
                port: p,
                service: None,
            };
            assert_eq!(port(&a).is_ok(), ok, "{p}");
        }
        assert_eq!(
            probe_port(0, None),
            Outcome::Failure("grpc probe port 0 is not a port number (1-65535)".into())
        );
    }

    fn headers_block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in fields {
            hpack::encode_literal(&mut b, n, v);
        }
        b
    }

    fn frame(kind: u8, flags: u8, stream: u32, p: &[u8]) -> Frame {
        Frame {
            kind,
            flags,
            stream,
            payload: p.to_vec(),
        }
    }

    #[test]
    fn a_trailers_only_answer_split_over_continuation() {
        let block = headers_block(&[
            (":status", "200"),
            ("grpc-status", "5"),
            ("grpc-message", "no%20such%zz service%"),
        ]);
        let (a, b) = block.split_at(10);
        let mut padded = vec![3];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        let mut ex = Exchange::default();
        let none = Ok(Step::Continue(vec![]));
        assert_eq!(
            ex.on_frame(&frame(HEADERS, END_STREAM | PADDED, 1, &padded)),
            none
        );
        assert_eq!(
            ex.on_frame(&frame(CONTINUATION, END_HEADERS, 1, b)),
            Ok(Step::Done)
        );
        assert_eq!(ex.answer().grpc_status.as_deref(), Some("5"));
        assert_eq!(
            ex.answer().grpc_message.as_deref(),
            Some("no such%zz service%")
        );
    }

    #[test]
    fn a_full_answer_among_other_frames() {
        let mut ex = Exchange::default();
        let none = Ok(Step::Continue(vec![]));
        // SETTINGS and PING are answered; WINDOW_UPDATE, unknown frames, other streams and a
        // graceful GOAWAY that covers stream 1 pass.
        assert_eq!(
            ex.on_frame(&frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
            Ok(Step::Continue(encode_frame(SETTINGS, ACK, 0, &[])))
        );
        assert_eq!(
            ex.on_frame(&frame(PING, 0, 0, &[7; 8])),
            Ok(Step::Continue(encode_frame(PING, ACK, 0, &[7; 8])))
        );
        for f in [
            frame(0x8, 0, 0, &[0, 0, 1, 0]),
            frame(0xfa, 0, 1, b"whatever"),
            frame(DATA, 0, 3, b"not ours"),
            frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            assert_eq!(ex.on_frame(&f), none);
        }
        let block = headers_block(&[(":status", "200")]);
        assert_eq!(ex.on_frame(&frame(HEADERS, END_HEADERS, 1, &block)), none);
        assert_eq!(ex.on_frame(&frame(DATA, 0, 1, &[0, 0, 0, 0, 2])), none);
        assert_eq!(ex.on_frame(&frame(DATA, 0, 1, &[0x08, 1])), none);
        let trailers = headers_block(&[("grpc-status", "0")]);
        assert_eq!(
            ex.on_frame(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &trailers)),
            Ok(Step::Done)
        );
        assert_eq!(judge(ex.answer(), Duration::from_secs(1)), Outcome::Success);
    }

    #[test]
    fn bad_frames_are_errors_and_everything_is_bounded() {
        for f in [
            frame(RST_STREAM, 0, 1, &[0, 0, 0, 7]),
            frame(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 2, b'b', b'y', b'e']),
            frame(GOAWAY, 0, 0, &[0, 0, 0, 0, 0, 0, 0, 0]),
            frame(GOAWAY, 0, 0, &[]),
            frame(SETTINGS, 0, 0, &[1, 2, 3]),
            frame(PING, 0, 0, &[1]),
            frame(CONTINUATION, END_HEADERS, 1, &[]),
            frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2]),
            frame(DATA, PADDED, 1, &[5, 1]),
            frame(DATA, PADDED, 1, &[]),
            frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0]),
            frame(HEADERS, END_HEADERS, 1, &[0x80]),
        ] {
            assert!(Exchange::default().on_frame(&f).is_err(), "{f:?}");
        }
        // A header block interrupted by another frame.
        let mut ex = Exchange::default();
        ex.on_frame(&frame(HEADERS, 0, 1, &[])).unwrap();
        assert!(ex.on_frame(&frame(DATA, 0, 1, &[])).is_err());
        // A header block may not grow without end, nor may the answer's data.
        let chunk = vec![0u8; MAX_FRAME];
        for (first, next) in [
            (Some(frame(HEADERS, 0, 1, &[])), CONTINUATION),
            (None, DATA),
        ] {
            let mut ex = Exchange::default();
            if let Some(f) = first {
                ex.on_frame(&f).unwrap();
            }
            let results: Vec<bool> = (0..3)
                .map(|_| ex.on_frame(&frame(next, 0, 1, &chunk)).is_ok())
                .collect();
            assert!(results.contains(&false), "{next}");
        }
    }

    #[test]
    fn a_silent_server_times_out_and_a_closed_port_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let action = GrpcAction {
            port: port as i32,
            service: None,
        };
        let r = smol::block_on(probe(&action, None, Duration::from_secs(1)));
        assert_eq!(
            r,
            Outcome::Failure("timeout: health rpc did not complete within 1s".into())
        );
        drop(l);
        // A port held bound without listening: a freed port could be taken by a test beside
        // (it was, once in CI, and answered with a reset).
        let (_closed, port) = crate::prober::closed_port();
        let action = GrpcAction {
            port: port as i32,
            service: None,
        };
        let r = smol::block_on(probe(&action, None, Duration::from_secs(1)));
        assert!(
            matches!(&r, Outcome::Failure(m) if m.starts_with("error: failed to connect service at")),
            "{r:?}"
        );
        // A server that hangs up early.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        assert_eq!(
            probe_port(port, None),
            Outcome::Failure(
                "error: health rpc probe failed: the server closed the connection before the answer ended"
                    .into()
            )
        );
        t.join().unwrap();
    }
}
