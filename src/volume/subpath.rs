//! subPath mounts, resolved safely (the kubelet's approach): the path is resolved inside the
//! volume, then opened component by component without following symlinks, and that open file
//! is bind-mounted (through `/proc/self/fd/N`) onto a mount point of the pod's own. A symlink a
//! container swaps in later cannot redirect the mount outside the volume.

use super::{mounts, VolumeError};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode, SFlag};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// What a checked subPath is made of: its plain segments.
pub fn segments<'a>(pod: &str, volume: &str, sub: &'a str) -> Result<Vec<&'a str>, VolumeError> {
    if sub.starts_with('/') {
        return Err(VolumeError::path(
            pod,
            volume,
            sub,
            "subPath must be relative to the volume, not absolute",
        ));
    }
    let segs: Vec<&str> = sub
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if segs.contains(&"..") {
        return Err(VolumeError::path(
            pod,
            volume,
            sub,
            "subPath must not contain `..`: it would escape the volume",
        ));
    }
    if segs.is_empty() {
        return Err(VolumeError::path(pod, volume, sub, "subPath names no path"));
    }
    Ok(segs)
}

/// Makes `target` a bind mount of `<base>/<sub>`. A missing subPath is created as a directory
/// (with the mode of the volume's root, as the kubelet does); one that resolves outside the
/// volume is refused.
pub fn mount(
    pod: &str,
    volume: &str,
    base: &Path,
    sub: &str,
    target: &Path,
) -> Result<(), VolumeError> {
    let segs = segments(pod, volume, sub)?;
    let io_err = |op: &'static str, p: &Path, e: io::Error| VolumeError::io(pod, volume, op, p, e);
    let base = fs::canonicalize(base).map_err(|e| io_err("resolve", base, e))?;
    let escape = |to: &Path| {
        VolumeError::path(
            pod,
            volume,
            sub,
            format!(
                "subPath resolves to {}, outside the volume {}",
                to.display(),
                base.display()
            ),
        )
    };

    // Resolve the existing part, symlinks included, and check it stays inside.
    let mut resolved = base.clone();
    let mut missing: Vec<&str> = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let next = resolved.join(seg);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                let real = fs::canonicalize(&next).map_err(|e| io_err("resolve", &next, e))?;
                if !real.starts_with(&base) {
                    return Err(escape(&real));
                }
                resolved = real;
            }
            Ok(_) => resolved = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing = segs[i..].to_vec();
                break;
            }
            Err(e) => return Err(io_err("stat", &next, e)),
        }
    }

    let rel = resolved
        .strip_prefix(&base)
        .map_err(|_| escape(&resolved))?;
    let mut fd = open_beneath(&base, rel).map_err(|e| io_err("open", &resolved, e))?;
    if !missing.is_empty() {
        let mode = fs::metadata(&base)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o755);
        for seg in missing {
            let at = resolved.join(seg);
            match mkdirat(Some(fd.as_raw_fd()), seg, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(io_err("create directory", &at, e.into())),
            }
            fd = open_step(&fd, seg, true).map_err(|e| io_err("open", &at, e))?;
            // mkdirat's mode went through the umask.
            fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
                .map_err(|e| io_err("chmod", &at, e.into()))?;
            resolved = at;
        }
    }

    let st = fstat(fd.as_raw_fd()).map_err(|e| io_err("stat", &resolved, e.into()))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    prepare_target(target, is_dir).map_err(|e| io_err("prepare mount point", target, e))?;
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mounts::bind(&source, target).map_err(|e| io_err("bind mount", target, e))?;
    tracing::debug!(pod, volume, sub_path = sub, target = %target.display(), "subPath mounted");
    Ok(())
}

/// Opens `base/rel` (`rel` already resolved) one component at a time, refusing symlinks: a
/// symlink here means the tree changed under us.
fn open_beneath(base: &Path, rel: &Path) -> io::Result<OwnedFd> {
    let raw = openat(
        None,
        base,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let mut fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for c in rel.components() {
        let Component::Normal(seg) = c else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unexpected path component",
            ));
        };
        fd = open_step(&fd, seg, false)?;
    }
    Ok(fd)
}

fn open_step(
    dir: &OwnedFd,
    seg: impl AsRef<std::ffi::OsStr>,
    want_dir: bool,
) -> io::Result<OwnedFd> {
    // A directory we create is opened for real (to chmod it); O_NOFOLLOW then fails on a
    // symlink. Otherwise O_PATH, which opens a symlink itself, caught by the check below.
    let flags = if want_dir {
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
    } else {
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
    };
    let raw = openat(
        Some(dir.as_raw_fd()),
        Path::new(seg.as_ref()),
        flags,
        Mode::empty(),
    )?;
    // SAFETY: as above.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = fstat(fd.as_raw_fd())?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a symlink appeared while resolving the subPath",
        ));
    }
    Ok(fd)
}

/// An empty directory or file to mount onto; an old mount there is removed first.
fn prepare_target(target: &Path, is_dir: bool) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    mounts::unmount(target)?;
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() == is_dir => return Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir(target)?,
        Ok(_) => fs::remove_file(target)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if is_dir {
        fs::create_dir(target)
    } else {
        fs::File::create(target).map(drop)
    }
}
