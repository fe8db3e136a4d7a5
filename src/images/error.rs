//! The image store's error: which object (archive, blob, image, container), which step, why.

use std::fmt;
use std::io;

use crate::runtime::{self, RuntimeError};

/// What kind of failure, for callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such image, blob or snapshot.
    NotFound,
    /// The archive, a blob in it, or a reference is malformed or does not verify.
    Invalid,
    /// The image is used by a container's snapshot.
    InUse,
    /// The filesystem holding the store is full.
    NoSpace,
    /// Any other I/O failure.
    Io,
    /// A registry refused the credentials (or asked for some and none were given).
    Auth,
    /// A registry could not be reached, or the link failed or stalled (worth retrying).
    Network,
}

/// An image store failure.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageError {
    /// The archive path, blob digest, image reference or container id concerned.
    pub object: String,
    /// The step that failed: `import`, `unpack`, `resolve`, `prepare rootfs`...
    pub op: String,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Why, and what to do.
    pub message: String,
}

/// Result of image store calls.
pub type Result<T> = std::result::Result<T, ImageError>;

impl ImageError {
    /// A new error.
    pub fn new(
        object: impl Into<String>,
        op: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        ImageError {
            object: object.into(),
            op: op.into(),
            kind,
            message: message.into(),
        }
    }

    /// An `Invalid` error.
    pub fn invalid(object: impl Into<String>, op: &str, message: impl Into<String>) -> Self {
        Self::new(object, op, ErrorKind::Invalid, message)
    }

    /// An I/O error on `object`; ENOSPC becomes [`ErrorKind::NoSpace`] with a hint.
    pub fn io(object: impl Into<String>, op: &str, e: &io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            Self::new(
                object,
                op,
                ErrorKind::NoSpace,
                format!("{e}: free space on the filesystem of the image store (edged image rm, or a larger disk) and try again"),
            )
        } else {
            let kind = if e.kind() == io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Io
            };
            Self::new(object, op, kind, e.to_string())
        }
    }

    /// The same error with `context` put in front of its message (an outer object).
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{}: {}", context, self.message);
        self
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.object, self.message)
    }
}

impl std::error::Error for ImageError {}

impl From<ImageError> for RuntimeError {
    fn from(e: ImageError) -> Self {
        let kind = match e.kind {
            ErrorKind::NotFound => runtime::ErrorKind::NotFound,
            ErrorKind::Invalid => runtime::ErrorKind::InvalidConfig,
            _ => runtime::ErrorKind::Other,
        };
        RuntimeError::new(e.object, e.op, kind, e.message)
    }
}

/// Adds an object and step to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Maps an I/O error to an [`ImageError`] about `object` in step `op`.
    fn ctx(self, object: impl fmt::Display, op: &str) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, object: impl fmt::Display, op: &str) -> Result<T> {
        self.map_err(|e| ImageError::io(object.to_string(), op, &e))
    }
}
