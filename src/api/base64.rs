//! Base64 (RFC 4648 standard alphabet), as Kubernetes writes Secret `data` and ConfigMap
//! `binaryData`. Small enough not to be worth a crate.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64. Line breaks (`\r`, `\n`) are skipped, as Go's decoder does, and
/// missing trailing padding is accepted. The error says what is wrong and where.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut pad = 0usize;
    let mut symbols = 0usize;
    for (pos, c) in text.bytes().enumerate() {
        let v = match c {
            b'\r' | b'\n' => continue,
            b'=' => {
                pad += 1;
                continue;
            }
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => {
                return Err(format!(
                    "not base64: byte {pos} is {:?}; encode the value with `base64 -w0`",
                    c as char
                ))
            }
        };
        if pad > 0 {
            return Err(format!(
                "not base64: data after padding at byte {pos}; encode the value with `base64 -w0`"
            ));
        }
        symbols += 1;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    let rem = symbols % 4;
    let bad_pad = pad > 2 || (pad > 0 && !(rem + pad).is_multiple_of(4));
    if rem == 1 || bad_pad {
        return Err(format!(
            "not base64: {symbols} symbols and {pad} padding characters do not make whole groups; \
             encode the value with `base64 -w0`"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            let e = encode(s.as_bytes());
            assert_eq!(decode(&e).unwrap(), s.as_bytes(), "{e}");
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8=");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn decodes_what_kubectl_writes() {
        assert_eq!(decode("cGFzc3dvcmQ=").unwrap(), b"password");
        assert_eq!(decode("cGFzc3dvcmQ").unwrap(), b"password");
        assert_eq!(decode("cGFz\nc3dv\r\ncmQ=").unwrap(), b"password");
    }

    #[test]
    fn refuses_garbage() {
        assert!(decode("cGFz c3dv").unwrap_err().contains("byte 4"));
        assert!(decode("Zm8=Zm8=").is_err());
        assert!(decode("Z").is_err());
        assert!(decode("Zm===").is_err());
        assert!(decode("Zg=").is_err());
    }
}
