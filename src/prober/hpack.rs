//! HPACK (RFC 7541), as much as the gRPC probe needs: a decoder for the server's header
//! blocks (static and dynamic table, literals, Huffman strings), so a trailers-only answer's
//! `grpc-status` and `grpc-message` can be read; and literal fields without indexing and
//! without Huffman for the request. Every length is bounded and checked: the input comes
//! from the probed pod.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// The dynamic table size we allow (SETTINGS_HEADER_TABLE_SIZE, left at its default).
pub const TABLE_SIZE: usize = 4096;

/// The most decoded header bytes (names + values) one block may yield.
pub const MAX_DECODED: usize = 64 * 1024;

/// The static table (RFC 7541 Appendix A), index 1 first.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The Huffman code (RFC 7541 Appendix B): (code, bit length) of bytes 0-255; EOS after.
#[rustfmt::skip]
const HUFFMAN: [(u32, u8); 256] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28),
    (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28),
    (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28),
    (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28),
    (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12),
    (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11),
    (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6),
    (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8),
    (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7),
    (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7),
    (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7),
    (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13),
    (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5),
    (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5),
    (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15),
    (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20),
    (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23),
    (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23),
    (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23),
    (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22),
    (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24),
    (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21),
    (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22),
    (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19),
    (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27),
    (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27),
    (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26),
    (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21),
    (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25),
    (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26),
    (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27),
    (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
];

/// The end-of-string symbol's code: 30 one bits (never valid inside a string).
const EOS: (u32, u8) = (0x3fff_ffff, 30);

/// A header field, decoded (names and values as bytes: HPACK does not promise UTF-8).
pub type Field = (Vec<u8>, Vec<u8>);

/// Why a header block could not be decoded (a connection error, COMPRESSION_ERROR, in HTTP/2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad HPACK header block: {}", self.0)
    }
}

fn err<T>(what: &str) -> Result<T, Error> {
    Err(Error(what.to_string()))
}

/// Appends `value` as an HPACK integer with an `n`-bit prefix; `first` holds the bits above
/// the prefix.
pub fn encode_int(out: &mut Vec<u8>, first: u8, n: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Appends a literal header field without indexing, new name, neither string Huffman-coded.
pub fn encode_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    for s in [name, value] {
        encode_int(out, 0x00, 7, s.len());
        out.extend_from_slice(s.as_bytes());
    }
}

/// A cursor over a header block.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Result<u8, Error> {
        let b = *self.data.get(self.pos).ok_or(Error("truncated".into()))?;
        self.pos += 1;
        Ok(b)
    }

    /// An integer with an `n`-bit prefix (RFC 7541 5.1), at most 2^28.
    fn int(&mut self, n: u8) -> Result<usize, Error> {
        let max = (1usize << n) - 1;
        let mut value = (self.byte()? as usize) & max;
        if value < max {
            return Ok(value);
        }
        for shift in [0, 7, 14, 21] {
            let b = self.byte()?;
            value += ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        err("integer too large")
    }

    /// A string literal (RFC 7541 5.2).
    fn string(&mut self) -> Result<Vec<u8>, Error> {
        let huffman = self.data.get(self.pos).ok_or(Error("truncated".into()))? & 0x80 != 0;
        let len = self.int(7)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.data.len())
            .ok_or(Error("a string runs past the block".into()))?;
        let raw = &self.data[self.pos..end];
        self.pos = end;
        if huffman {
            huffman_decode(raw)
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// The Huffman codes sorted by (length, code), for lookup while reading bits.
fn sorted_codes() -> &'static [(u8, u32, u16)] {
    static CODES: OnceLock<Vec<(u8, u32, u16)>> = OnceLock::new();
    CODES.get_or_init(|| {
        let mut v: Vec<(u8, u32, u16)> = HUFFMAN
            .iter()
            .enumerate()
            .map(|(sym, (code, len))| (*len, *code, sym as u16))
            .collect();
        v.push((EOS.1, EOS.0, 256));
        v.sort_unstable();
        v
    })
}

/// Decodes a Huffman-coded string; the padding must be at most 7 one bits (RFC 7541 5.2).
pub fn huffman_decode(raw: &[u8]) -> Result<Vec<u8>, Error> {
    let codes = sorted_codes();
    let mut out = Vec::with_capacity(raw.len() * 8 / 5 + 1);
    let (mut code, mut len) = (0u32, 0u8);
    for byte in raw {
        for i in (0..8).rev() {
            code = (code << 1) | ((byte >> i) & 1) as u32;
            len += 1;
            if len < 5 {
                continue;
            }
            if let Ok(at) = codes.binary_search_by(|(l, c, _)| (*l, *c).cmp(&(len, code))) {
                match codes[at].2 {
                    256 => return err("EOS inside a Huffman string"),
                    sym => out.push(sym as u8),
                }
                (code, len) = (0, 0);
            } else if len >= EOS.1 {
                return err("no Huffman code matches");
            }
        }
    }
    if len > 7 || code != (1u32 << len) - 1 {
        return err("bad Huffman padding");
    }
    Ok(out)
}

/// An HPACK decoder: the dynamic table of one connection's server-to-client direction.
pub struct Decoder {
    table: VecDeque<Field>,
    size: usize,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(TABLE_SIZE)
    }
}

fn entry_size(f: &Field) -> usize {
    f.0.len() + f.1.len() + 32
}

impl Decoder {
    /// A decoder whose dynamic table may hold `max` bytes (SETTINGS_HEADER_TABLE_SIZE).
    pub fn new(max: usize) -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max,
        }
    }

    /// The dynamic table's size in HPACK's count (entries plus 32 each).
    pub fn table_size(&self) -> usize {
        self.size
    }

    fn get(&self, index: usize) -> Result<Field, Error> {
        match index {
            0 => err("index 0"),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or(Error(format!("index {index} is past the tables"))),
        }
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            match self.table.pop_back() {
                Some(f) => self.size -= entry_size(&f),
                None => break,
            }
        }
    }

    fn insert(&mut self, f: Field) {
        let size = entry_size(&f);
        self.evict(size);
        if size <= self.max {
            self.size += size;
            self.table.push_front(f);
        }
    }

    /// Decodes one complete header block (RFC 7541 6).
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, Error> {
        let mut input = Input {
            data: block,
            pos: 0,
        };
        let mut fields = Vec::new();
        let mut total = 0usize;
        while input.pos < block.len() {
            let first = block[input.pos];
            let field = if first & 0x80 != 0 {
                let index = input.int(7)?;
                self.get(index)?
            } else if first & 0xe0 == 0x20 {
                let size = input.int(5)?;
                if size > TABLE_SIZE {
                    return err("table size update above the allowed size");
                }
                self.max = size;
                self.evict(0);
                continue;
            } else {
                // 01: incremental indexing (6-bit index); 0000 and 0001: not indexed (4-bit).
                let indexing = first & 0xc0 == 0x40;
                let index = input.int(if indexing { 6 } else { 4 })?;
                let name = if index == 0 {
                    input.string()?
                } else {
                    self.get(index)?.0
                };
                let value = input.string()?;
                let field = (name, value);
                if indexing {
                    self.insert(field.clone());
                }
                field
            };
            total += field.0.len() + field.1.len();
            if total > MAX_DECODED {
                return err("the header list is too large");
            }
            fields.push(field);
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn text(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.clone()).unwrap(),
                    String::from_utf8(v.clone()).unwrap(),
                )
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn integers_round_trip_rfc_c1() {
        // C.1.1: 10 in a 5-bit prefix; C.1.2: 1337 in a 5-bit prefix; C.1.3: 42 at a boundary.
        for (value, n, bytes) in [
            (10, 5, vec![0x0a]),
            (1337, 5, vec![0x1f, 0x9a, 0x0a]),
            (42, 8, vec![0x2a]),
        ] {
            let mut out = Vec::new();
            encode_int(&mut out, 0, n, value);
            assert_eq!(out, bytes);
            let mut input = Input { data: &out, pos: 0 };
            assert_eq!(input.int(n).unwrap(), value);
        }
    }

    #[test]
    fn literal_fields_rfc_c2() {
        let mut d = Decoder::default();
        let f = d
            .decode(&hex(
                "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            ))
            .unwrap();
        assert_eq!(text(&f), pairs(&[("custom-key", "custom-header")]));
        assert_eq!(d.table_size(), 55);
        let mut d = Decoder::default();
        let f = d
            .decode(&hex("040c 2f73 616d 706c 652f 7061 7468"))
            .unwrap();
        assert_eq!(text(&f), pairs(&[(":path", "/sample/path")]));
        assert_eq!(d.table_size(), 0);
        let f = d
            .decode(&hex("1008 7061 7373 776f 7264 0673 6563 7265 74"))
            .unwrap();
        assert_eq!(text(&f), pairs(&[("password", "secret")]));
        assert_eq!(d.table_size(), 0);
        assert_eq!(
            text(&d.decode(&[0x82]).unwrap()),
            pairs(&[(":method", "GET")])
        );
    }

    fn requests(blocks: [&str; 3]) {
        let mut d = Decoder::default();
        let base = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        let f = d.decode(&hex(blocks[0])).unwrap();
        assert_eq!(text(&f), pairs(&base));
        assert_eq!(d.table_size(), 57);
        let f = d.decode(&hex(blocks[1])).unwrap();
        let mut want = base.to_vec();
        want.push(("cache-control", "no-cache"));
        assert_eq!(text(&f), pairs(&want));
        assert_eq!(d.table_size(), 110);
        let f = d.decode(&hex(blocks[2])).unwrap();
        let want = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ];
        assert_eq!(text(&f), pairs(&want));
        assert_eq!(d.table_size(), 164);
    }

    #[test]
    fn requests_without_huffman_rfc_c3() {
        requests([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn requests_with_huffman_rfc_c4() {
        requests([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    #[test]
    fn responses_with_huffman_and_eviction_rfc_c6() {
        let mut d = Decoder::new(256);
        let f = d
            .decode(&hex(
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 \
                 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            ))
            .unwrap();
        let mut want = vec![
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ];
        assert_eq!(text(&f), pairs(&want));
        assert_eq!(d.table_size(), 222);
        // ":status: 307" evicts ":status: 302"; the others are found at their new indexes.
        let f = d.decode(&hex("4883 640e ffc1 c0bf")).unwrap();
        want[0] = (":status", "307");
        assert_eq!(text(&f), pairs(&want));
        assert_eq!(d.table_size(), 222);
        assert!(d.decode(&[0xbe + 4]).is_err(), "the evicted entry is gone");
    }

    #[test]
    fn every_byte_huffman_round_trips() {
        // Encode each byte (and all of them) with the table, then decode.
        let all: Vec<u8> = (0..=255).collect();
        let mut bits: Vec<bool> = Vec::new();
        for b in &all {
            let (code, len) = HUFFMAN[*b as usize];
            for i in (0..len).rev() {
                bits.push((code >> i) & 1 == 1);
            }
        }
        while !bits.len().is_multiple_of(8) {
            bits.push(true);
        }
        let raw: Vec<u8> = bits
            .chunks(8)
            .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | *b as u8))
            .collect();
        assert_eq!(huffman_decode(&raw).unwrap(), all);
    }

    #[test]
    fn hostile_blocks_are_errors_not_panics() {
        let mut d = Decoder::default();
        for bad in [
            vec![0x80],                                     // index 0
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // integer overflow
            vec![0xbe],                                     // empty dynamic table
            vec![0x00, 0x05, b'a'],                         // string past the end
            vec![0x00, 0x81, 0x00, 0x00],                   // Huffman padding of zeros
            vec![0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00], // EOS
            vec![0x3f, 0xe2, 0x1f],                         // table size update above 4096
            vec![0x00],                                     // truncated
        ] {
            assert!(d.decode(&bad).is_err(), "{bad:02x?}");
        }
        // A small block that names one big dynamic entry over and over is refused.
        let mut d = Decoder::default();
        let mut block = Vec::new();
        encode_int(&mut block, 0x40, 6, 0);
        encode_int(&mut block, 0, 7, 1);
        block.push(b'x');
        encode_int(&mut block, 0, 7, 3000);
        block.extend(std::iter::repeat_n(b'v', 3000));
        block.extend(std::iter::repeat_n(0xbe, 100));
        assert!(d.decode(&block).is_err());
    }

    #[test]
    fn literal_encoding_decodes() {
        let mut block = Vec::new();
        encode_literal(&mut block, ":path", "/grpc.health.v1.Health/Check");
        encode_literal(&mut block, "te", "trailers");
        let f = Decoder::default().decode(&block).unwrap();
        assert_eq!(
            text(&f),
            pairs(&[
                (":path", "/grpc.health.v1.Health/Check"),
                ("te", "trailers")
            ])
        );
    }
}
