//! SPDY/3 header compression: one zlib stream per direction for the whole connection, primed
//! with the SPDY/3 dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1).
//!
//! Reading: [`Inflater`] parses the zlib header itself (miniz_oxide refuses `FDICT`) and runs
//! miniz_oxide's raw inflate over a 32 KiB wrapping window that starts out holding the
//! dictionary, so back-references into it resolve as zlib's `inflateSetDictionary` would.
//! Writing: [`Deflater`] emits stored (uncompressed) deflate blocks in one zlib stream, each
//! header block complete non-final blocks ending in a sync flush, which Go's
//! `zlib.NewReaderDict` reads.

use miniz_oxide::inflate::core::{self, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// The SPDY/3 header dictionary (1423 bytes).
pub const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");
/// The most bytes one header block may inflate to.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The deflate window (and our ring buffer).
const WINDOW: usize = 32 * 1024;

/// Adler-32 of `data` (RFC 1950), the zlib stream's dictionary id.
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

/// The reading side's zlib stream.
pub struct Inflater {
    state: Box<DecompressorOxide>,
    window: Box<[u8; WINDOW]>,
    pos: usize,
    /// Bytes of the zlib header (2 + 4 for the dictionary id) seen so far.
    header: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("pos", &self.pos).finish()
    }
}

impl Inflater {
    /// A stream that has seen nothing yet.
    pub fn new() -> Self {
        let mut window = Box::new([0u8; WINDOW]);
        window[..DICTIONARY.len()].copy_from_slice(DICTIONARY);
        Inflater {
            state: Box::default(),
            window,
            pos: DICTIONARY.len(),
            header: Vec::with_capacity(6),
        }
    }

    /// Inflates the next header block of the stream (all of `input`, which must end on what the
    /// peer flushed), or says why it cannot.
    pub fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, String> {
        while self.header.len() < 6 && !input.is_empty() {
            self.header.push(input[0]);
            input = &input[1..];
            if self.header.len() == 2 {
                let (cmf, flg) = (u32::from(self.header[0]), u32::from(self.header[1]));
                if (cmf * 256 + flg) % 31 != 0 || cmf & 15 != 8 || cmf >> 4 > 7 {
                    return Err("the header block does not start a zlib stream".into());
                }
                if flg & 0x20 == 0 {
                    return Err("the header block's zlib stream has no preset dictionary".into());
                }
            }
            if self.header.len() == 6 {
                let id = u32::from_be_bytes([
                    self.header[2],
                    self.header[3],
                    self.header[4],
                    self.header[5],
                ]);
                if id != adler32(DICTIONARY) {
                    return Err(format!(
                        "the header block's zlib dictionary is {id:08x}, not SPDY/3's"
                    ));
                }
            }
        }
        let mut out = Vec::new();
        loop {
            let (status, used, made) = core::decompress(
                &mut self.state,
                input,
                &mut self.window[..],
                self.pos,
                inflate_flags::TINFL_FLAG_HAS_MORE_INPUT,
            );
            out.extend_from_slice(&self.window[self.pos..self.pos + made]);
            self.pos = (self.pos + made) & (WINDOW - 1);
            input = &input[used..];
            if out.len() > MAX_HEADER_BLOCK {
                return Err(format!(
                    "a header block inflates to more than {MAX_HEADER_BLOCK} bytes"
                ));
            }
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput if input.is_empty() => return Ok(out),
                TINFLStatus::NeedsMoreInput => continue,
                TINFLStatus::Done => return Err("the header zlib stream ended".into()),
                s => return Err(format!("the header block does not inflate ({s:?})")),
            }
        }
    }
}

/// The writing side's zlib stream (stored blocks: our header blocks are a few bytes).
#[derive(Debug, Default)]
pub struct Deflater {
    started: bool,
}

impl Deflater {
    /// The next header block of the stream, as the bytes to put in the frame.
    pub fn deflate(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 16);
        if !self.started {
            self.started = true;
            // CMF 0x78 (deflate, 32 KiB window); FLG 0x20: FDICT, fastest, and 0x7820 % 31 == 0.
            out.extend_from_slice(&[0x78, 0x20]);
            out.extend_from_slice(&adler32(DICTIONARY).to_be_bytes());
        }
        // Stored blocks (BFINAL 0, BTYPE 00, byte-aligned; LEN and NLEN little-endian), then an
        // empty one as zlib's Z_SYNC_FLUSH writes: Go's inflater hands out a stored block's
        // bytes only when the next block starts, so without it the reader would wait on the
        // next frame's bytes and fail the frame's size check.
        for c in block.chunks(0xffff).chain(std::iter::once(&[][..])) {
            out.push(0);
            let len = c.len() as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(c);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        // The id Go's zlib writer puts after its 0x78 0xf9 (recorded below).
        assert_eq!(adler32(DICTIONARY), 0xe3c6a7c2);
        assert_eq!(adler32(b"Wikipedia"), 0x11e60398);
    }

    #[test]
    fn inflates_what_go_compressed() {
        // The header blocks of four SYN_STREAMs as moby/spdystream's framer wrote them, one
        // zlib stream (frames' first 18 bytes stripped).
        let blocks = [
            "78f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff",
            "c22e555c92929907000000ffff",
            "c22ac5565c92925f5a02000000ffff",
            "c22e57945a9c59950a000000ffff",
        ];
        let mut inf = Inflater::new();
        let got: Vec<Vec<u8>> = blocks
            .iter()
            .map(|b| inf.inflate(&hex(b)).unwrap())
            .collect();
        let block = |v: &str| {
            let mut b = vec![0, 0, 0, 1, 0, 0, 0, 10];
            b.extend_from_slice(b"streamtype");
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
            b
        };
        assert_eq!(got[0], block("error"));
        assert_eq!(got[1], block("stdin"));
        assert_eq!(got[2], block("stdout"));
        assert_eq!(got[3], block("resize"));
    }

    #[test]
    fn refuses_bad_streams() {
        assert!(Inflater::new()
            .inflate(&hex("789c"))
            .unwrap_err()
            .contains("no preset"));
        assert!(Inflater::new().inflate(&hex("7820")).is_ok());
        assert!(Inflater::new()
            .inflate(&hex("782000000001"))
            .unwrap_err()
            .contains("not SPDY/3"));
        assert!(Inflater::new().inflate(b"GET / HTTP/1.1").is_err());
        // A block type 3 (reserved) after a good header.
        assert!(Inflater::new()
            .inflate(&hex("7820e3c6a7c207"))
            .unwrap_err()
            .contains("does not inflate"));
    }

    #[test]
    fn round_trips_stored_blocks() {
        let mut d = Deflater::default();
        let mut i = Inflater::new();
        for block in [&b"abc"[..], b"", &vec![7u8; 70_000][..60_000], b"z"] {
            assert_eq!(i.inflate(&d.deflate(block)).unwrap(), block);
        }
    }
}
