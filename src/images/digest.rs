//! sha256 digests: checking their form, hashing streams, and layer chain ids.

use std::io::{self, Read};

use ring::digest::{Context, SHA256};

/// True for `sha256:` followed by 64 lower-case hex digits.
pub fn is_sha256(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The hex part of a `sha256:` digest (the caller has checked it with [`is_sha256`]).
pub fn hex_of(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

/// `sha256:<hex>` of `data`.
pub fn of_bytes(data: &[u8]) -> String {
    format_hash(ring::digest::digest(&SHA256, data).as_ref())
}

fn format_hash(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A chain id (OCI image spec): the diff id of the bottom layer, then
/// `sha256(parent_chain_id + " " + diff_id)` for each layer above.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => of_bytes(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Context,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Context::new(&SHA256),
            count: 0,
        }
    }

    /// Reads the rest of the stream (so the digest covers all of it).
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// The digest and byte count of what was read so far.
    pub fn finish(self) -> (String, u64) {
        (format_hash(self.hasher.finish().as_ref()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_form() {
        assert!(is_sha256(&of_bytes(b"")));
        assert_eq!(
            of_bytes(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(!is_sha256("sha256:E3B0"));
        assert!(!is_sha256("md5:00"));
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = of_bytes(b"a");
        let b = of_bytes(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], of_bytes(format!("{a} {b}").as_bytes()));
    }
}
