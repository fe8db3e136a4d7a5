//! The volume manager's error: every variant names the pod (`ns/name`), the volume and, where
//! there is one, the path.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A volume that could not be made ready, refreshed or torn down. In every variant `pod` is
/// the pod's `namespace/name` (its uid for [`teardown`](super::VolumeManager::teardown)) and
/// `volume` the volume's name (empty for errors of the whole pod).
#[derive(Debug)]
pub enum VolumeError {
    /// A ConfigMap or Secret the pod needs is not known locally (the worker retries once the
    /// object arrives).
    MissingObject {
        /// The pod, `namespace/name`.
        pod: String,
        /// The volume's name.
        volume: String,
        /// ConfigMap or Secret.
        kind: crate::api::Kind,
        /// The object's name, in the pod's namespace.
        name: String,
    },
    /// `items` names a key the object does not hold (and the volume is not optional).
    MissingKey {
        /// The pod, `namespace/name`.
        pod: String,
        /// The volume's name.
        volume: String,
        /// The object, such as ``ConfigMap `name` ``.
        object: String,
        /// The key `items[].key` names.
        key: String,
    },
    /// A path from the pod spec (`items[].path`, `subPath`, a key) is not acceptable.
    InvalidPath {
        /// The pod, `namespace/name`.
        pod: String,
        /// The volume's name.
        volume: String,
        /// The path as the spec gives it.
        path: String,
        /// Why it is refused (absolute, `..`, ...).
        reason: String,
    },
    /// A hostPath is not what its `type` asks for.
    HostPathType {
        /// The pod, `namespace/name`.
        pod: String,
        /// The volume's name.
        volume: String,
        /// The hostPath on the node.
        path: PathBuf,
        /// The `type` asked for, such as `Directory` or `Socket`.
        expected: String,
        /// What is there: `missing`, `a directory`, `a regular file`, `a socket`, ...
        found: String,
    },
    /// The volume's spec is wrong or unsupported (no source, a bad `sizeLimit`, bad base64, a
    /// volumeMount naming no volume...).
    InvalidSpec {
        /// The pod, `namespace/name`.
        pod: String,
        /// The volume's name (empty for the pod as a whole).
        volume: String,
        /// What is wrong.
        reason: String,
    },
    /// A filesystem or mount call failed.
    Io {
        /// The pod, `namespace/name` (its uid in a teardown).
        pod: String,
        /// The volume's name (empty for the pod as a whole).
        volume: String,
        /// The call, such as `mount`, `chmod` or `create directory`.
        op: &'static str,
        /// The path it was made on.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

impl VolumeError {
    /// An I/O failure of `op` on `path`.
    pub(crate) fn io(
        pod: &str,
        volume: &str,
        op: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        VolumeError::Io {
            pod: pod.to_string(),
            volume: volume.to_string(),
            op,
            path: path.into(),
            source,
        }
    }

    /// A bad path from the spec.
    pub(crate) fn path(pod: &str, volume: &str, path: &str, reason: impl Into<String>) -> Self {
        VolumeError::InvalidPath {
            pod: pod.to_string(),
            volume: volume.to_string(),
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    /// A wrong or unsupported spec.
    pub(crate) fn spec(pod: &str, volume: &str, reason: impl Into<String>) -> Self {
        VolumeError::InvalidSpec {
            pod: pod.to_string(),
            volume: volume.to_string(),
            reason: reason.into(),
        }
    }

    /// True when the pod should wait for an object to arrive rather than fail.
    pub fn is_missing_object(&self) -> bool {
        matches!(self, VolumeError::MissingObject { .. })
    }
}

/// `volume `v`: ` or nothing for pod-level errors.
struct Vol<'a>(&'a str);

impl fmt::Display for Vol<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "volume `{}`: ", self.0)
        }
    }
}

impl fmt::Display for VolumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeError::MissingObject {
                pod,
                volume,
                kind,
                name,
            } => write!(
                f,
                "pod {pod}: {}{kind} `{name}` not found; create it or mark the \
                 reference `optional: true`",
                Vol(volume)
            ),
            VolumeError::MissingKey {
                pod,
                volume,
                object,
                key,
            } => write!(
                f,
                "pod {pod}: {}{object} has no key `{key}` named in `items`; add \
                 the key or mark the volume `optional: true`",
                Vol(volume)
            ),
            VolumeError::InvalidPath {
                pod,
                volume,
                path,
                reason,
            } => write!(f, "pod {pod}: {}path `{path}`: {reason}", Vol(volume)),
            VolumeError::HostPathType {
                pod,
                volume,
                path,
                expected,
                found,
            } => write!(
                f,
                "pod {pod}: {}hostPath {} is {found}, but type {expected} was \
                 asked for",
                Vol(volume),
                path.display()
            ),
            VolumeError::InvalidSpec {
                pod,
                volume,
                reason,
            } => write!(f, "pod {pod}: {}{reason}", Vol(volume)),
            VolumeError::Io {
                pod,
                volume,
                op,
                path,
                source,
            } => write!(
                f,
                "pod {pod}: {}{op} {}: {source}",
                Vol(volume),
                path.display()
            ),
        }
    }
}

impl std::error::Error for VolumeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VolumeError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
