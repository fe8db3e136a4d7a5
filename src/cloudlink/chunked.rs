//! HTTP/1.1 chunked transfer coding, decoded as bytes arrive (RFC 9112, 7.1): the one decoder
//! for the certificate server's answers and for bodies streamed through the EdgeStream
//! tunnel. Sizes are checked before use: a server cannot make it index past what it sent.

/// Where the decoder is in the coding.
#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Reading a chunk-size line (hex digits, maybe `;ext`), up to CRLF.
    Size(Vec<u8>),
    /// Inside a chunk: bytes left.
    Data(u64),
    /// The CRLF after a chunk's data: how many of its 2 bytes were seen.
    DataEnd(u8),
    /// After the last (0) chunk: trailer lines up to an empty one; the current line so far.
    Trailer(Vec<u8>),
    /// The whole body was read.
    Done,
}

/// A streaming decoder of a chunked body.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size(Vec::new()),
        }
    }
}

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

impl ChunkedDecoder {
    /// Whether the last chunk and trailer were read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what `input` holds, appending body bytes to `out`; returns how many bytes of
    /// `input` were used (all of them unless the body ended inside it).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut i = 0;
        while i < input.len() {
            match &mut self.state {
                State::Done => return Ok(i),
                State::Size(line) => {
                    let b = input[i];
                    i += 1;
                    if b != b'\n' {
                        line.push(b);
                        if line.len() > MAX_LINE {
                            return Err("a chunk-size line over 4096 bytes".into());
                        }
                        continue;
                    }
                    let text =
                        std::str::from_utf8(line).map_err(|_| "a chunk size that is not text")?;
                    let hex = text
                        .trim_end_matches('\r')
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim();
                    let size = u64::from_str_radix(hex, 16).map_err(|_| {
                        format!(
                            "bad chunk size `{}`",
                            hex.chars().take(20).collect::<String>()
                        )
                    })?;
                    self.state = if size == 0 {
                        State::Trailer(Vec::new())
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    let n = (*left).min((input.len() - i) as u64) as usize;
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::DataEnd(0);
                    }
                }
                State::DataEnd(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if input[i] != want {
                        return Err("a chunk does not end with CRLF".into());
                    }
                    i += 1;
                    if *seen == 0 {
                        *seen = 1;
                    } else {
                        self.state = State::Size(Vec::new());
                    }
                }
                State::Trailer(line) => {
                    let b = input[i];
                    i += 1;
                    if b != b'\n' {
                        line.push(b);
                        if line.len() > MAX_LINE {
                            return Err("a trailer line over 4096 bytes".into());
                        }
                        continue;
                    }
                    if line.is_empty() || line.as_slice() == b"\r" {
                        self.state = State::Done;
                        return Ok(i);
                    }
                    line.clear();
                }
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Result<(Vec<u8>, bool), String> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        d.decode(input, &mut out)?;
        Ok((out, d.is_done()))
    }

    #[test]
    fn whole_split_and_with_extensions_and_trailers() {
        let body = b"2\r\nno\r\n3;x=y\r\npe!\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(all(body).unwrap(), (b"nope!".to_vec(), true));
        // A byte at a time.
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        for b in body {
            assert_eq!(d.decode(std::slice::from_ref(b), &mut out).unwrap(), 1);
        }
        assert!(d.is_done());
        assert_eq!(out, b"nope!");
        // Not finished yet.
        assert_eq!(all(b"5\r\nhel").unwrap(), (b"hel".to_vec(), false));
        // What follows the body is not used.
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        assert_eq!(d.decode(b"0\r\n\r\nNEXT", &mut out).unwrap(), 5);
    }

    #[test]
    fn lies_are_errors() {
        // The size says 2, the data runs on without CRLF.
        assert!(all(b"2\r\nabcdef\r\n0\r\n\r\n").is_err());
        assert!(all(b"zz\r\n").is_err());
        assert!(all(b"ffffffffffffffffffff\r\n").is_err());
        assert!(all(&[b'1'; 5000]).is_err());
        // A huge size is fine until data runs out: nothing is allocated for it.
        assert_eq!(
            all(b"fffffffffffffff\r\nab").unwrap(),
            (b"ab".to_vec(), false)
        );
    }
}
