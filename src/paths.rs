//! Paths built from identifiers (pod uids, namespaces, names, container and volume names).
//!
//! Identifiers are checked where objects enter ([`crate::api::validate::pod_paths`]);
//! this module is the second line: [`under`] builds a path from plain components and refuses
//! anything that would not stay under its base, and [`remove_dir_all_under`] removes a
//! directory only when it is a real directory directly under the one being cleaned (a symlink
//! there is removed as a link, never followed).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The longest single path component Linux takes (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// A component that cannot be used as one plain path component under `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// The directory the path had to stay under.
    pub base: PathBuf,
    /// The component refused.
    pub component: String,
    /// Why.
    pub reason: &'static str,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} cannot be a path component under {}: {}",
            self.component,
            self.base.display(),
            self.reason
        )
    }
}

impl std::error::Error for PathError {}

impl From<PathError> for io::Error {
    fn from(e: PathError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// Why `s` is not one plain path component, or `None` when it is: non-empty, not `.` or `..`,
/// no `/` and no NUL, at most [`NAME_MAX`] bytes.
pub fn component_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("empty")
    } else if s == "." || s == ".." {
        Some("`.` and `..` name no directory of their own")
    } else if s.contains('/') {
        Some("contains `/`")
    } else if s.contains('\0') {
        Some("contains a NUL byte")
    } else if s.len() > NAME_MAX {
        Some("longer than 255 bytes")
    } else {
        None
    }
}

/// `base/c1/c2/...`, each component checked to be one plain component: the result always
/// stays under `base` lexically (symlinks inside `base` are the caller's concern: see
/// [`remove_dir_all_under`]).
pub fn under(base: &Path, components: &[&str]) -> Result<PathBuf, PathError> {
    let mut p = base.to_path_buf();
    for c in components {
        if let Some(reason) = component_problem(c) {
            return Err(PathError {
                base: base.to_path_buf(),
                component: c.to_string(),
                reason,
            });
        }
        p.push(c);
    }
    Ok(p)
}

/// A relative path inside a volume: not absolute, no `..`, `.` or empty segment, not starting
/// with `..` (reserved for the writer), at most 4096 bytes with segments of at most 255.
pub fn check_relative(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.starts_with('/') {
        return Err("must be a relative path inside the volume, not an absolute one".into());
    }
    if p.len() > 4096 {
        return Err("must be at most 4096 bytes".into());
    }
    if p.starts_with("..") {
        return Err("must not start with `..`".into());
    }
    for seg in p.split('/') {
        match seg {
            ".." => return Err("must not contain `..`: it would escape the volume".into()),
            "" | "." => return Err("must not contain empty or `.` segments".into()),
            s if s.len() > 255 => return Err("each segment must be at most 255 bytes".into()),
            s if s.contains('\0') => return Err("must not contain NUL".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Removes `base/name` and everything under it, where `name` must be one plain component.
/// Nothing there: `Ok`. A symlink there is removed itself, never followed; anything else that
/// is not a directory is refused. The contents are removed without following symlinks
/// (`std::fs::remove_dir_all` works through directory descriptors).
pub fn remove_dir_all_under(base: &Path, name: &str) -> io::Result<()> {
    let path = under(base, &[name])?;
    let md = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let t = md.file_type();
    if t.is_symlink() {
        return std::fs::remove_file(&path);
    }
    if !t.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory; not removed", path.display()),
        ));
    }
    match std::fs::remove_dir_all(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Whether `path` resolves to an entry directly under `base` (both resolved through their
/// symlinks): what a removal checks before it touches a path it did not build itself.
pub fn resolves_directly_under(base: &Path, path: &Path) -> io::Result<bool> {
    let base = std::fs::canonicalize(base)?;
    let real = std::fs::canonicalize(path)?;
    Ok(real.parent() == Some(base.as_path()))
}

/// Makes `dir` (and missing parents) and sets it to 0700: a directory no other host user can
/// enter, for trees holding secrets, image layers (set-id files) and container bundles.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let md = std::fs::symlink_metadata(dir)?;
    if md.permissions().mode() & 0o7777 != 0o700 && md.is_dir() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` readable by root only (0600), also when the file existed with a
/// wider mode: for files holding secrets (a container's `config.json` carries its env).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    create_with_mode(path, 0o600)?.write_all(bytes)
}

/// Opens `path` for writing, truncated, with exactly `mode` (also when it existed with another
/// mode); a symlink there is refused, not written through.
fn create_with_mode(path: &Path, mode: u32) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(f)
}

/// The temporary file an atomic replacement of `path` is written to: `<name>.tmp` beside it
/// (same directory, so the rename stays on one filesystem).
pub fn atomic_tmp(path: &Path) -> io::Result<PathBuf> {
    let mut name = path
        .file_name()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            )
        })?
        .to_os_string();
    name.push(".tmp");
    Ok(path.with_file_name(name))
}

/// Replaces `path` with `bytes` atomically, the file getting `mode` (0600 for secrets and
/// keys): see [`replace_atomic`].
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    replace_atomic(path, mode, |f| f.write_all(bytes))
}

/// Replaces `path` atomically with what `fill` writes: the temporary file [`atomic_tmp`] is
/// made with `mode`, filled, fsynced and renamed over `path`, then the directory is fsynced so
/// the rename itself survives a power cut. A reader sees the old content or the new one, never
/// a part; on failure the temporary file is removed and `path` is left as it was.
pub fn replace_atomic(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = atomic_tmp(path)?;
    let res = (|| {
        let mut f = create_with_mode(&tmp, mode)?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(
            path.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// fsyncs a directory, so the entries just made or renamed in it last.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_checked() {
        let b = Path::new("/base");
        assert_eq!(
            under(b, &["a", "b.c", "..d"]).unwrap(),
            PathBuf::from("/base/a/b.c/..d")
        );
        for bad in ["", ".", "..", "x/../../victim", "a/b", "a\0b"] {
            let e = under(b, &["ok", bad]).unwrap_err();
            assert_eq!(e.component, bad);
            assert!(e.to_string().contains("/base"), "{e}");
        }
        assert!(under(b, &[&"a".repeat(256)]).is_err());
        assert!(under(b, &[&"a".repeat(255)]).is_ok());
    }

    #[test]
    fn removal_stays_under_its_base() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base");
        let victim = d.path().join("victim");
        std::fs::create_dir_all(base.join("pod/sub")).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("keep"), "x").unwrap();
        // A link in the tree and a link as the entry itself: the links go, the victim stays.
        std::os::unix::fs::symlink(&victim, base.join("pod/sub/link")).unwrap();
        std::os::unix::fs::symlink(&victim, base.join("alias")).unwrap();
        remove_dir_all_under(&base, "pod").unwrap();
        remove_dir_all_under(&base, "alias").unwrap();
        assert!(!base.join("pod").exists());
        assert!(std::fs::symlink_metadata(base.join("alias")).is_err());
        assert!(victim.join("keep").exists());
        // Escapes are refused before anything is looked at.
        let e = remove_dir_all_under(&base, "../victim").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(victim.join("keep").exists());
        // Absent: nothing to do.
        remove_dir_all_under(&base, "gone").unwrap();
        // A file is not a directory.
        std::fs::write(base.join("f"), "x").unwrap();
        assert!(remove_dir_all_under(&base, "f").is_err());
        assert!(resolves_directly_under(&base, &base.join("f")).unwrap());
        std::os::unix::fs::symlink(&victim, base.join("alias")).unwrap();
        assert!(!resolves_directly_under(&base, &base.join("alias")).unwrap());
    }

    #[test]
    fn private_dirs_and_files() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let p = d.path().join("a/b");
        private_dir(&p).unwrap();
        assert_eq!(mode(&p), 0o700);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&p).unwrap();
        assert_eq!(mode(&p), 0o700, "an existing wider dir is narrowed");
        let f = p.join("config.json");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&f, b"{}").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"{}");
        // A symlink planted in its place is not written through.
        std::fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), &f).unwrap();
        assert!(write_private(&f, b"{}").is_err());
        assert!(!d.path().join("elsewhere").exists());
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("result");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        write_atomic(&f, b"one", 0o600).unwrap();
        write_atomic(&f, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(mode(&f), 0o600);
        assert!(!d.path().join("result.tmp").exists());
        assert!(write_atomic(Path::new("/"), b"x", 0o600).is_err());
        // The mode asked for, whatever the umask or the old file's mode.
        write_atomic(&f, b"three", 0o644).unwrap();
        assert_eq!(mode(&f), 0o644);
        // A failed fill leaves the old file and no temporary one.
        let e = replace_atomic(&f, 0o600, |_| Err(io::Error::other("no"))).unwrap_err();
        assert_eq!(e.to_string(), "no");
        assert_eq!(std::fs::read(&f).unwrap(), b"three");
        assert!(!d.path().join("result.tmp").exists());
    }

    #[test]
    fn relative_paths() {
        assert!(check_relative("a/b.conf").is_ok());
        assert!(check_relative("..data").is_err());
        assert!(check_relative("../x").is_err());
        assert!(check_relative("a/../../x").is_err());
        assert!(check_relative("/etc/passwd").is_err());
        assert!(check_relative("a//b").is_err());
        assert!(check_relative("").is_err());
    }
}
