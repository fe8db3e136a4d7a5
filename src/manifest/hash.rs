//! Deterministic ids for file objects: a uid that survives rescans, restarts and edits, and a
//! content hash for `kubernetes.io/config.hash`. FNV-1a 128 is enough: these tell a handful of
//! local objects apart, they guard nothing.

use crate::api::Kind;
use serde_json::Value;

const FNV_OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
const FNV_PRIME: u128 = 0x0000000001000000000000000000013B;

fn fnv1a(parts: &[&[u8]]) -> u128 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for b in part.iter() {
            h ^= *b as u128;
            h = h.wrapping_mul(FNV_PRIME);
        }
        // A separator, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The uid of a file object that has none: a UUID (version 8, "custom") hashed from kind,
/// namespace and name. The file's name is left out on purpose, so moving an object from one
/// file to another does not make its pod a new one.
pub fn uid(kind: Kind, namespace: &str, name: &str) -> String {
    let b = fnv1a(&[
        b"edged-manifest",
        kind.as_str().as_bytes(),
        namespace.as_bytes(),
        name.as_bytes(),
    ])
    .to_be_bytes();
    crate::message::format_uuid(b, 8)
}

/// The hash of an object as written (keys sorted: serde_json's map is ordered), 32 hex digits.
pub fn content(value: &Value) -> String {
    let text = serde_json::to_vec(value).unwrap_or_default();
    format!("{:032x}", fnv1a(&[&text]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_distinct() {
        let a = uid(Kind::Pod, "default", "web");
        assert_eq!(a, uid(Kind::Pod, "default", "web"));
        assert_ne!(a, uid(Kind::Pod, "default", "web2"));
        assert_ne!(a, uid(Kind::ConfigMap, "default", "web"));
        assert_eq!(&a[14..15], "8");
        assert_eq!(a.len(), 36);
    }
}
