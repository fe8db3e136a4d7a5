//! ttrpc's frame, for both of edged's ends of it (the task client and the events server): a
//! 10-byte header (the data's length and the stream id, each a big-endian u32; the message
//! type; flags), then the data: a protobuf `ttrpc.Request` or `ttrpc.Response`, at most
//! [`MAX_DATA_LEN`] bytes.

use std::fmt;

/// The bytes of a frame's header.
pub const HEADER_LEN: usize = 10;
/// The most data a frame may carry (ttrpc's `messageLengthMax`).
pub const MAX_DATA_LEN: usize = 4 << 20;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// A call (`ttrpc.Request`).
    Request,
    /// A call's answer (`ttrpc.Response`).
    Response,
    /// Data of a streaming call (none of the services edged speaks has one).
    Data,
}

impl MessageType {
    /// The type's byte in a header.
    fn byte(self) -> u8 {
        match self {
            MessageType::Request => 1,
            MessageType::Response => 2,
            MessageType::Data => 3,
        }
    }

    /// The type a header's byte names.
    fn from_byte(b: u8) -> Result<MessageType, FrameError> {
        match b {
            1 => Ok(MessageType::Request),
            2 => Ok(MessageType::Response),
            3 => Ok(MessageType::Data),
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

/// What is wrong with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A header was decoded from fewer than [`HEADER_LEN`] bytes (how many there were).
    ShortHeader(usize),
    /// The data is longer than [`MAX_DATA_LEN`] (its length).
    TooLong(usize),
    /// The header names no ttrpc message type (the byte).
    UnknownType(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ShortHeader(n) => {
                write!(f, "a ttrpc frame header of {n} bytes (it has {HEADER_LEN})")
            }
            FrameError::TooLong(n) => write!(
                f,
                "a ttrpc frame of {n} bytes of data (at most {MAX_DATA_LEN})"
            ),
            FrameError::UnknownType(t) => write!(f, "a ttrpc frame of unknown type {t}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// How many bytes of data follow the header (at most [`MAX_DATA_LEN`]).
    pub data_len: usize,
    /// The call's stream: a client numbers its calls (odd numbers), the answer has its call's.
    pub stream_id: u32,
    /// What the data is.
    pub kind: MessageType,
    /// Flags (of streaming calls; 0 otherwise).
    pub flags: u8,
}

impl Header {
    /// Reads the header at the start of `bytes`, checking its length and type.
    pub fn decode(bytes: &[u8]) -> Result<Header, FrameError> {
        let b: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(FrameError::ShortHeader(bytes.len()))?;
        let data_len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if data_len > MAX_DATA_LEN {
            return Err(FrameError::TooLong(data_len));
        }
        Ok(Header {
            data_len,
            stream_id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            kind: MessageType::from_byte(b[8])?,
            flags: b[9],
        })
    }
}

/// A frame of `kind` on stream `stream_id` carrying `data` (no flags).
pub fn encode(kind: MessageType, stream_id: u32, data: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|_| data.len() <= MAX_DATA_LEN)
        .ok_or(FrameError::TooLong(data.len()))?;
    let mut frame = Vec::with_capacity(HEADER_LEN + data.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.extend_from_slice(&[kind.byte(), 0]);
    frame.extend_from_slice(data);
    Ok(frame)
}

/// The first frame at the start of `buf`, its header and data (the frame is
/// [`HEADER_LEN`] + `data_len` bytes); `Ok(None)` while it has not all arrived. A header that
/// claims too much data or names no type is an error as soon as it is there.
pub fn decode(buf: &[u8]) -> Result<Option<(Header, &[u8])>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let h = Header::decode(buf)?;
    Ok(buf
        .get(HEADER_LEN..HEADER_LEN + h.data_len)
        .map(|data| (h, data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (kind, stream_id, data) in [
            (MessageType::Request, 1, &b"call"[..]),
            (MessageType::Response, u32::MAX, &b""[..]),
            (MessageType::Data, 7, &[0u8; 300][..]),
        ] {
            let f = encode(kind, stream_id, data).unwrap();
            assert_eq!(f.len(), HEADER_LEN + data.len());
            let (h, got) = decode(&f).unwrap().unwrap();
            assert_eq!(
                h,
                Header {
                    data_len: data.len(),
                    stream_id,
                    kind,
                    flags: 0
                }
            );
            assert_eq!(got, data);
            // With the next frame's first bytes behind it, the same frame.
            let mut more = f.clone();
            more.extend_from_slice(&f[..4]);
            assert_eq!(decode(&more).unwrap(), Some((h, data)));
        }
        // ttrpc's bytes: length 3, stream 5, a response, no flags.
        let f = encode(MessageType::Response, 5, b"abc").unwrap();
        assert_eq!(f, [0, 0, 0, 3, 0, 0, 0, 5, 2, 0, b'a', b'b', b'c']);
    }

    #[test]
    fn too_long() {
        let big = vec![0u8; MAX_DATA_LEN + 1];
        assert_eq!(
            encode(MessageType::Request, 1, &big),
            Err(FrameError::TooLong(MAX_DATA_LEN + 1))
        );
        assert!(encode(MessageType::Request, 1, &big[1..]).is_ok());
        // Refused from the header alone, before the data is there.
        let mut h = u32::MAX.to_be_bytes().to_vec();
        h.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        assert_eq!(decode(&h), Err(FrameError::TooLong(u32::MAX as usize)));
        assert!(FrameError::TooLong(5 << 20).to_string().contains("5242880"));
    }

    #[test]
    fn short_header_and_data() {
        let f = encode(MessageType::Request, 3, b"hello").unwrap();
        for cut in [0, 1, HEADER_LEN - 1] {
            assert_eq!(Header::decode(&f[..cut]), Err(FrameError::ShortHeader(cut)));
            assert_eq!(decode(&f[..cut]), Ok(None), "a header still to come");
        }
        assert_eq!(decode(&f[..f.len() - 1]), Ok(None), "data still to come");
        assert_eq!(Header::decode(&f[..HEADER_LEN]).unwrap().data_len, 5);
    }

    #[test]
    fn unknown_type() {
        for t in [0u8, 4, 255] {
            let mut f = encode(MessageType::Request, 1, b"x").unwrap();
            f[8] = t;
            assert_eq!(decode(&f), Err(FrameError::UnknownType(t)));
            assert_eq!(decode(&f[..HEADER_LEN]), Err(FrameError::UnknownType(t)));
            assert!(FrameError::UnknownType(t)
                .to_string()
                .contains(&format!("type {t}")));
        }
    }
}
