//! The container hash (label `io.kubernetes.container.hash`): a change of it restarts the
//! container, so it must change with the spec and with nothing else.
//!
//! As the kubelet's `HashContainer` (pkg/kubelet/container/helpers.go: FNV-32a over the
//! container's JSON, with `omitempty` leaving empty fields out, kubernetes issue 53644),
//! the hash is taken over the container's JSON with what is unset left out: `null`, `""`,
//! `[]`, `{}` at any depth (an object left empty by that is left out too), and a top-level
//! field equal to its value in `Container::default()` (`stdin: false`). A release that adds
//! an optional field (an `Option`, a list, a map, or any field of `Container` itself)
//! therefore keeps every hash. A new field nested deeper must be an `Option` or a
//! collection, or its default would enter the hash.
//!
//! Version 1 (before this) hashed the whole typed JSON with FNV-1a 64 and wrote 16 hex
//! digits; this version writes 8. A container started by version 1 is compared with the
//! version-1 hash ([`matches()`]), so the switch restarts nothing.

use crate::api::Container;
use serde_json::Value;

/// The hash of `c` as written to the label: 8 hex digits.
pub fn hash(c: &Container) -> String {
    let text = serde_json::to_vec(&minimal(c)).unwrap_or_default();
    let mut h: u32 = 0x811c9dc5;
    for b in text {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    format!("{h:08x}")
}

/// The version-1 hash (16 hex digits), for containers started before version 2.
pub fn hash_v1(c: &Container) -> String {
    let text = serde_json::to_string(c).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// Whether the hash label of a running container, `label`, says it was made from `c`: a
/// 16-digit label is version 1 and is compared with [`hash_v1`], any other with [`hash`].
pub fn matches(label: &str, c: &Container) -> bool {
    if label.len() == 16 {
        label == hash_v1(c)
    } else {
        label == hash(c)
    }
}

/// `c` as JSON with what is unset left out (keys sorted: serde_json's map is ordered).
pub fn minimal(c: &Container) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    let defaults = serde_json::to_value(Container::default()).unwrap_or(Value::Null);
    if let (Value::Object(m), Value::Object(d)) = (&mut v, &defaults) {
        m.retain(|k, v| d.get(k) != Some(v));
    }
    prune(&mut v);
    v
}

/// Leaves out `null`, `""`, `[]` and `{}` members of objects, innermost first. List items
/// are kept (their place is meaning), pruned inside.
fn prune(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for child in m.values_mut() {
                prune(child);
            }
            m.retain(|_, v| !is_empty(v));
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(json: &str) -> Container {
        serde_json::from_str(json).unwrap()
    }

    /// Containers and their hashes, pinned: a change here restarts every container on
    /// every node on upgrade. Do not update these values without making [`matches`] accept
    /// the old ones.
    const GOLDEN: &[(&str, &str)] = &[
        (r#"{"name":"app","image":"busybox"}"#, "77970868"),
        (
            r#"{"name":"app","image":"busybox:1.36","command":["sh","-c"],"args":["sleep 3600"]}"#,
            "6d861a95",
        ),
        (
            r#"{"name":"web","image":"nginx","ports":[{"containerPort":80,"protocol":"TCP"}],"env":[{"name":"A","value":"1"}],"resources":{"limits":{"memory":"64Mi"}}}"#,
            "2fa6ed07",
        ),
        (
            r#"{"name":"p","image":"x","livenessProbe":{"exec":{"command":["true"]},"periodSeconds":5},"securityContext":{"runAsUser":0,"allowPrivilegeEscalation":false},"stdin":true}"#,
            "0263af88",
        ),
    ];

    #[test]
    fn golden_hashes() {
        for (json, want) in GOLDEN {
            assert_eq!(hash(&container(json)), *want, "{json}");
        }
    }

    #[test]
    fn unset_fields_leave_the_hash_unchanged() {
        let plain = container(r#"{"name":"app","image":"busybox"}"#);
        let h = hash(&plain);
        // The same container with unset fields spelled out, as a release adding them would
        // serialize it.
        for spelled in [
            r#"{"name":"app","image":"busybox","command":[],"args":[],"env":[],"workingDir":null}"#,
            r#"{"name":"app","image":"busybox","resources":{},"securityContext":null,"stdin":false,"tty":false}"#,
            r#"{"name":"app","image":"busybox","ports":[],"volumeMounts":[],"lifecycle":null}"#,
        ] {
            assert_eq!(hash(&container(spelled)), h, "{spelled}");
        }
        // A field the type does not know yet, unset (null, empty), is left out of the JSON
        // hashed, as a new `Option` field of `Container` would be.
        let mut v = minimal(&plain);
        v["futureField"] = Value::Null;
        v["futureList"] = serde_json::json!([]);
        v["futureObject"] = serde_json::json!({"inner": null, "list": []});
        v["securityContext"] = serde_json::json!({"futureBool": null});
        let mut with_future = v;
        prune(&mut with_future);
        assert_eq!(with_future, minimal(&plain));
        // What is set does change it.
        assert_ne!(hash(&container(r#"{"name":"app","image":"busybox:2"}"#)), h);
        assert_ne!(
            hash(&container(r#"{"name":"app","image":"busybox","tty":true}"#)),
            h
        );
        assert_ne!(
            hash(&container(
                r#"{"name":"app","image":"busybox","securityContext":{"runAsUser":0}}"#
            )),
            h,
            "runAsUser 0 is root, not unset"
        );
    }

    #[test]
    fn containers_started_with_the_version_1_hash_are_not_restarted() {
        let c = container(r#"{"name":"app","image":"busybox","command":["sleep","9"]}"#);
        let v1 = hash_v1(&c);
        assert_eq!(v1.len(), 16);
        assert_eq!(hash(&c).len(), 8);
        assert!(matches(&v1, &c), "a version-1 label still matches");
        assert!(matches(&hash(&c), &c));
        let changed = container(r#"{"name":"app","image":"busybox","command":["sleep","8"]}"#);
        assert!(
            !matches(&v1, &changed),
            "a changed spec under a version-1 label"
        );
        assert!(!matches(&hash(&c), &changed));
        assert!(!matches("", &c) && !matches("zz", &c));
    }
}
