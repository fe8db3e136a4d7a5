//! WebSocket framing (RFC 6455), with no UTF-8 check of text messages: the client side of the
//! EdgeStream tunnel and of `edged exec`, the server side of the kubelet API's streaming
//! sessions.
//!
//! KubeEdge writes tunnel frames as websocket TEXT messages holding raw bytes
//! (`pkg/stream/tunnel.go`), which stop being valid UTF-8 once a connect id passes 127 or a
//! payload is binary; CloudStream also refuses anything but TEXT. A websocket library that
//! validates text (as tungstenite does) cannot read or write them, so the tunnel frames its
//! messages here: [`client_frame`] encodes (masked, as a client must), [`Decoder`] reads
//! messages back (fragments joined, control frames passed up), bounded by a size limit.
//!
//! A server writes [`server_frame`]s (unmasked) and reads with [`Decoder::server`], which
//! refuses unmasked frames (RFC 6455, 5.1); [`close_payload`] and [`close_code`] write and read
//! a CLOSE frame's status code.

use std::fmt;

/// Frame opcodes.
pub mod opcode {
    /// A later fragment of a data message.
    pub const CONTINUATION: u8 = 0x0;
    /// A UTF-8 text message.
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// A close frame (payload: status code and reason).
    pub const CLOSE: u8 = 0x8;
    /// A ping; the peer answers with a pong of the same payload.
    pub const PING: u8 = 0x9;
    /// A pong: the answer to a ping.
    pub const PONG: u8 = 0xA;
}

/// The GUID of the opening handshake (RFC 6455, 1.3).
pub const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A broken frame or a message over the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError(pub String);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "websocket: {}", self.0)
    }
}

impl std::error::Error for FrameError {}

/// A whole message (data fragments joined) or a control frame.
#[derive(Debug, Clone, PartialEq)]
pub struct WsMessage {
    /// TEXT or BINARY for data; CLOSE, PING or PONG for control frames.
    pub opcode: u8,
    /// The message's bytes, fragments joined (a control frame's payload for control frames).
    pub payload: Vec<u8>,
}

/// One frame from a client: FIN set, masked with `mask`.
pub fn client_frame(op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | (op & 0x0F));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// One frame from a server: FIN set, unmasked.
pub fn server_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | (op & 0x0F));
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Close status codes (RFC 6455, 7.4.1).
pub mod close {
    /// The purpose of the connection is fulfilled.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
    /// An unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// A CLOSE frame's payload: the code, then a reason cut to fit the 125-byte control frame
/// limit (at a character boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

/// A CLOSE frame's code (`None`: the frame carried none, RFC 6455's 1005).
pub fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`.
pub fn accept_key(key: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    crate::api::base64::encode(d.as_ref())
}

/// Reads messages out of the bytes a connection delivers.
pub struct Decoder {
    buf: Vec<u8>,
    /// A data message being assembled from fragments: its opcode and bytes so far.
    partial: Option<(u8, Vec<u8>)>,
    max: usize,
    /// Refuse unmasked frames (a server reading a client).
    masked_only: bool,
}

impl Decoder {
    /// A decoder refusing messages over `max` bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            partial: None,
            max,
            masked_only: false,
        }
    }

    /// A server's decoder: as [`Decoder::new`], and every frame must be masked.
    pub fn server(max: usize) -> Decoder {
        Decoder {
            masked_only: true,
            ..Decoder::new(max)
        }
    }

    /// Adds bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` until more bytes are fed.
    pub fn next_message(&mut self) -> Result<Option<WsMessage>, FrameError> {
        loop {
            let Some((fin, op, payload, used)) = self.frame()? else {
                return Ok(None);
            };
            self.buf.drain(..used);
            if op >= 0x8 {
                return Ok(Some(WsMessage {
                    opcode: op,
                    payload,
                }));
            }
            match (op, self.partial.as_mut()) {
                (opcode::CONTINUATION, Some((_, so_far))) => {
                    if so_far.len() + payload.len() > self.max {
                        return Err(FrameError(format!("a message over {} bytes", self.max)));
                    }
                    so_far.extend_from_slice(&payload);
                }
                (opcode::CONTINUATION, None) => {
                    return Err(FrameError("a continuation frame with no message".into()))
                }
                (opcode::TEXT | opcode::BINARY, None) => self.partial = Some((op, payload)),
                (opcode::TEXT | opcode::BINARY, Some(_)) => {
                    return Err(FrameError("a new message inside a fragmented one".into()))
                }
                (other, _) => return Err(FrameError(format!("unknown opcode {other:#x}"))),
            }
            if fin {
                if let Some((opcode, payload)) = self.partial.take() {
                    return Ok(Some(WsMessage { opcode, payload }));
                }
            }
        }
    }

    /// The first whole frame in the buffer: FIN, opcode, unmasked payload, bytes used.
    #[allow(clippy::type_complexity)]
    fn frame(&self) -> Result<Option<(bool, u8, Vec<u8>, usize)>, FrameError> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0] & 0x70 != 0 {
            return Err(FrameError(
                "reserved bits set (no extension was agreed)".into(),
            ));
        }
        let fin = b[0] & 0x80 != 0;
        let op = b[0] & 0x0F;
        let masked = b[1] & 0x80 != 0;
        if self.masked_only && !masked {
            return Err(FrameError(
                "an unmasked frame from a client (RFC 6455 requires clients to mask)".into(),
            ));
        }
        let (len, mut at) = match b[1] & 0x7F {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(l), 10)
            }
            n => (n as u64, 2),
        };
        if op >= 0x8 && (len > 125 || !fin) {
            return Err(FrameError(
                "a control frame is fragmented or too long".into(),
            ));
        }
        if len > self.max as u64 {
            return Err(FrameError(format!(
                "a frame of {len} bytes, over the {} byte limit",
                self.max
            )));
        }
        let mask = if masked {
            if b.len() < at + 4 {
                return Ok(None);
            }
            let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        let len = len as usize;
        if b.len() < at + len {
            return Ok(None);
        }
        let mut payload = b[at..at + len].to_vec();
        if let Some(m) = mask {
            for (i, x) in payload.iter_mut().enumerate() {
                *x ^= m[i % 4];
            }
        }
        Ok(Some((fin, op, payload, at + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as a server sends it (unmasked), FIN chosen.
    fn server_frame_fin(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | op];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn the_handshake_key_of_the_rfc() {
        // RFC 6455, 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn text_with_invalid_utf8_fragments_and_control_frames() {
        let mut d = Decoder::new(1 << 20);
        // Connect id 128 as a uvarint (0x80 0x01) starts the payload: not UTF-8.
        let raw = [0x80u8, 0x01, 0x03, 0xff, 0xfe];
        let mut bytes = server_frame_fin(false, opcode::TEXT, &raw[..2]);
        bytes.extend(server_frame_fin(true, opcode::PING, b"hi"));
        bytes.extend(server_frame_fin(true, opcode::CONTINUATION, &raw[2..]));
        // Fed a byte at a time.
        let mut got = Vec::new();
        for b in &bytes {
            d.feed(std::slice::from_ref(b));
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(
            got,
            vec![
                WsMessage {
                    opcode: opcode::PING,
                    payload: b"hi".to_vec()
                },
                WsMessage {
                    opcode: opcode::TEXT,
                    payload: raw.to_vec()
                },
            ]
        );
        // Long lengths, both forms.
        for n in [200usize, 70_000] {
            let p = vec![7u8; n];
            d.feed(&server_frame_fin(true, opcode::BINARY, &p));
            assert_eq!(d.next_message().unwrap().unwrap().payload, p);
        }
    }

    #[test]
    fn client_frames_are_masked_and_read_back() {
        for n in [0usize, 5, 125, 126, 65_535, 65_536] {
            let p: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let f = client_frame(opcode::TEXT, &p, [1, 2, 3, 4]);
            assert_eq!(f[0], 0x81);
            assert!(f[1] & 0x80 != 0, "clients mask");
            let mut d = Decoder::new(1 << 20);
            d.feed(&f);
            assert_eq!(d.next_message().unwrap().unwrap().payload, p);
        }
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0xC1, 0x00],                                    // RSV1
            vec![0x89, 126, 0, 200],                             // long ping
            vec![0x80, 0x01, b'x'],                              // continuation first
            vec![0x83, 0x00],                                    // opcode 3
            vec![0x81, 127, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], // 2^64-ish
        ];
        for c in cases {
            let mut d = Decoder::new(1 << 20);
            d.feed(&c);
            assert!(d.next_message().is_err(), "{c:?}");
        }
        let mut d = Decoder::new(10);
        d.feed(&server_frame_fin(true, opcode::TEXT, &[0; 11]));
        assert!(d.next_message().is_err());
    }

    #[test]
    fn server_frames_match_the_test_helper_and_read_back() {
        for n in [0usize, 1, 125, 126, 65_535, 65_536] {
            let p: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let f = server_frame(opcode::BINARY, &p);
            assert_eq!(f, server_frame_fin(true, opcode::BINARY, &p), "{n}");
            assert!(f[1] & 0x80 == 0, "servers do not mask");
            let mut d = Decoder::new(1 << 20);
            d.feed(&f);
            assert_eq!(d.next_message().unwrap().unwrap().payload, p);
        }
        // Recorded from gorilla/websocket (Go) as a server: WriteMessage(BinaryMessage,
        // "\x01hello") and a close frame with code 1000 and reason "done".
        let recorded = [
            0x82, 0x06, 0x01, b'h', b'e', b'l', b'l', b'o', 0x88, 0x06, 0x03, 0xe8, b'd', b'o',
            b'n', b'e',
        ];
        let mut ours = server_frame(opcode::BINARY, b"\x01hello");
        ours.extend(server_frame(
            opcode::CLOSE,
            &close_payload(close::NORMAL, "done"),
        ));
        assert_eq!(ours, recorded);
    }

    #[test]
    fn a_server_requires_masked_frames() {
        let mut d = Decoder::server(1 << 20);
        d.feed(&server_frame(opcode::BINARY, b"x"));
        let e = d.next_message().unwrap_err();
        assert!(e.0.contains("unmasked"), "{e}");
        let mut d = Decoder::server(1 << 20);
        d.feed(&client_frame(opcode::BINARY, b"\x00hi", [9, 8, 7, 6]));
        d.feed(&client_frame(opcode::PING, b"", [1, 1, 1, 1]));
        assert_eq!(d.next_message().unwrap().unwrap().payload, b"\x00hi");
        assert_eq!(d.next_message().unwrap().unwrap().opcode, opcode::PING);
        assert_eq!(d.next_message().unwrap(), None);
        // Recorded from gorilla/websocket (Go) as a client (random masks): "\x00hi", the v5
        // close signal for stdin, then CLOSE 1000.
        let recorded = [
            0x82, 0x83, 0x82, 0x45, 0xf6, 0xf3, 0x82, 0x2d, 0x9f, 0x82, 0x82, 0x5f, 0x39, 0x81,
            0xf0, 0xa0, 0x39, 0x88, 0x82, 0x0b, 0xf5, 0x0d, 0x0a, 0x08, 0x1d,
        ];
        let mut d = Decoder::server(1 << 20);
        d.feed(&recorded);
        let mut got = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            got.push((m.opcode, m.payload));
        }
        assert_eq!(
            got,
            [
                (opcode::BINARY, b"\x00hi".to_vec()),
                (opcode::BINARY, vec![255, 0]),
                (opcode::CLOSE, vec![0x03, 0xe8]),
            ]
        );
    }

    #[test]
    fn close_payloads() {
        assert_eq!(close_payload(1000, ""), [0x03, 0xe8]);
        assert_eq!(close_code(&close_payload(1002, "bad")), Some(1002));
        assert_eq!(close_code(&[]), None);
        // The reason is cut to fit a control frame, at a character boundary.
        let long = "é".repeat(100);
        let p = close_payload(1000, &long);
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }
}
