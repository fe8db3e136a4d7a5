//! A reserve of disk space in the root dir, so that the writes a delete needs can be made on a
//! full filesystem.
//!
//! LMDB copies pages on write, so even a delete needs free pages; a container record is
//! written to a temp file and renamed. On a full filesystem both fail, and the delete of a pod
//! (which would free space) could not happen. The reserve is a file of real (written) blocks
//! in the root dir: when a write the agent cannot do without meets `ENOSPC`, the file is
//! removed and the write tried once more; the eviction manager makes the file again once the
//! filesystem has room.
//!
//! The reserve is one per process (one root dir), installed by the agent at start; the store
//! and the runtime, built apart, reach it through [`retry_when_full`]. Without an installed
//! reserve (tools, unit tests) the retry does nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The reserve file's name in the root dir.
pub const FILE_NAME: &str = "reserved-space";

/// The reserve's size: a store transaction or a container record needs far less.
pub const DEFAULT_SIZE: u64 = 4 << 20;

static RESERVE: OnceLock<Reserve> = OnceLock::new();

/// The reserve file of a root dir.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    size: u64,
    /// Serialises making and releasing the file.
    lock: Mutex<()>,
}

impl Reserve {
    /// The reserve of `root_dir` (nothing made yet).
    pub fn new(root_dir: &Path, size: u64) -> Reserve {
        Reserve {
            path: root_dir.join(FILE_NAME),
            size,
            lock: Mutex::new(()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The reserve's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the file is there, whole.
    pub fn is_held(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() == self.size)
    }

    /// Makes the file if it is not there: `Ok(true)` when it was made now. Written through
    /// (not sparse) and renamed into place, so a half-made one never counts.
    pub fn ensure(&self) -> std::io::Result<bool> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_held() {
            return Ok(false);
        }
        crate::paths::replace_atomic(&self.path, 0o600, |f| {
            let chunk = vec![0u8; 1 << 20];
            let mut left = self.size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            Ok(())
        })?;
        Ok(true)
    }

    /// Removes the file: `true` when it was there (space was freed).
    pub fn release(&self) -> bool {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(tmp) = crate::paths::atomic_tmp(&self.path) {
            let _ = std::fs::remove_file(tmp);
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::warn!(file = %self.path.display(), bytes = self.size, "filesystem full: reserved space released for a write that must not fail");
                true
            }
            Err(_) => false,
        }
    }
}

/// Installs the process's reserve for `root_dir` and makes its file (a failure is logged: the
/// eviction manager tries again). Returns the installed reserve (the first one, if called
/// again).
pub fn install(root_dir: &Path, size: u64) -> &'static Reserve {
    let r = RESERVE.get_or_init(|| Reserve::new(root_dir, size));
    if let Err(e) = r.ensure() {
        tracing::warn!(file = %r.path.display(), error = %e, "cannot make the reserved space now; tried again later");
    }
    r
}

/// The installed reserve, if any.
pub fn installed() -> Option<&'static Reserve> {
    RESERVE.get()
}

/// Whether an error (or one it wraps) is `ENOSPC` (or `EDQUOT`).
pub fn is_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(e) = cur {
        let io = e.downcast_ref::<std::io::Error>().or_else(|| {
            e.downcast_ref::<heed::Error>().and_then(|h| match h {
                heed::Error::Io(io) => Some(io),
                _ => None,
            })
        });
        if let Some(io) = io {
            if matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                || io.kind() == std::io::ErrorKind::StorageFull
            {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// Runs `f`; when it fails for want of space and the installed reserve frees some, runs it
/// once more.
pub fn retry_when_full<T, E>(
    mut f: impl FnMut() -> Result<T, E>,
    no_space: impl Fn(&E) -> bool,
) -> Result<T, E> {
    match f() {
        Err(e) if no_space(&e) => match installed() {
            Some(r) if r.release() => f(),
            _ => Err(e),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_released_and_made_again() {
        let d = tempfile::tempdir().unwrap();
        let r = Reserve::new(d.path(), (3 << 20) + 5);
        assert!(!r.is_held());
        assert!(r.ensure().unwrap());
        assert!(r.is_held());
        assert_eq!(std::fs::metadata(r.path()).unwrap().len(), (3 << 20) + 5);
        assert!(!r.ensure().unwrap(), "already there");
        assert!(r.release());
        assert!(!r.release(), "nothing left to free");
        assert!(r.ensure().unwrap());
    }

    #[test]
    fn no_space_is_found_through_wrappers() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_no_space(&full));
        let h = heed::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(is_no_space(&h));
        let other = std::io::Error::from_raw_os_error(libc::EIO);
        assert!(!is_no_space(&other));
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrap")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert!(is_no_space(&Wrap(std::io::Error::from_raw_os_error(
            libc::ENOSPC
        ))));
    }
}
