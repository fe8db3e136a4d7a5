//! Thin wrappers over the `*at` system calls the unpacker uses: every path is one name
//! relative to an open directory, so nothing in a layer can make a write follow a link.

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `name` as a C string (tar names have no NUL; one that has is refused).
pub fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name holds a NUL byte"))
}

/// Opens `name` in `dir`, never following a final symlink.
pub fn openat(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(Some(dir), name, flags, Mode::from_bits_truncate(mode))?;
    // SAFETY: openat returned a new descriptor that nothing else owns or closes.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory by path (the layer's root).
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    openat(libc::AT_FDCWD, &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Makes the directory `dir/name` with `mode`.
pub fn mkdirat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    Ok(nix::sys::stat::mkdirat(
        Some(dir),
        name,
        Mode::from_bits_truncate(mode),
    )?)
}

/// Makes the node `dir/name`: `mode` holds its type (`S_IFCHR`, ...) and permissions.
pub fn mknodat(dir: RawFd, name: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    Ok(nix::sys::stat::mknodat(
        Some(dir),
        name,
        SFlag::from_bits_truncate(mode & libc::S_IFMT),
        Mode::from_bits_truncate(mode & !libc::S_IFMT),
        dev,
    )?)
}

/// Makes the symlink `dir/name` pointing at `target`.
pub fn symlinkat(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    Ok(nix::unistd::symlinkat(target, Some(dir), name)?)
}

/// A hard link `newdir/newname` to `olddir/oldname` (not following a symlink source).
pub fn linkat(olddir: RawFd, oldname: &CStr, newdir: RawFd, newname: &CStr) -> io::Result<()> {
    Ok(nix::unistd::linkat(
        Some(olddir),
        oldname,
        Some(newdir),
        newname,
        AtFlags::empty(),
    )?)
}

/// Removes `dir/name`, a directory when `is_dir`.
pub fn unlinkat(dir: RawFd, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    Ok(nix::unistd::unlinkat(Some(dir), name, flags)?)
}

/// `lchown` relative to `dir`.
pub fn lchownat(dir: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    Ok(nix::unistd::fchownat(
        Some(dir),
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

/// Sets the owner of the open `fd`.
pub fn fchown(fd: &OwnedFd, uid: u32, gid: u32) -> io::Result<()> {
    Ok(nix::unistd::fchown(
        fd.as_raw_fd(),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )?)
}

/// Sets the mode (permissions and set-id bits) of the open `fd`.
pub fn fchmod(fd: &OwnedFd, mode: libc::mode_t) -> io::Result<()> {
    Ok(nix::sys::stat::fchmod(
        fd.as_raw_fd(),
        Mode::from_bits_truncate(mode),
    )?)
}

/// Sets the mode of `dir/name` (following a final symlink, as fchmodat without flags).
pub fn fchmodat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    Ok(nix::sys::stat::fchmodat(
        Some(dir),
        name,
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )?)
}

/// Sets atime and mtime (seconds) of `dir/name` without following a symlink.
pub fn lutimesat(dir: RawFd, name: &CStr, mtime: i64) -> io::Result<()> {
    // nix builds the timespec, so a 64-bit time_t on 32-bit musl needs no change here.
    use nix::sys::time::TimeValLike;
    let t = nix::sys::time::TimeSpec::seconds(mtime);
    Ok(nix::sys::stat::utimensat(
        Some(dir),
        name,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

/// The file type bits (`S_IFMT`) of `dir/name`, `None` when it does not exist.
pub fn lstat_kind(dir: RawFd, name: &CStr) -> io::Result<Option<libc::mode_t>> {
    match nix::sys::stat::fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st.st_mode & libc::S_IFMT)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets the extended attribute `name` of the open `fd` (nix has no xattr calls).
pub fn fsetxattr(fd: &OwnedFd, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: `fd` is an open descriptor for the call's duration, `n` a NUL-terminated
    // string that outlives it, and `value` a live slice whose pointer and length go together.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    cvt(r).map(drop)
}

/// Flushes the whole filesystem holding `fd` (one call instead of an fsync per file).
pub fn syncfs(fd: &OwnedFd) -> io::Result<()> {
    Ok(nix::unistd::syncfs(fd.as_raw_fd())?)
}

/// Takes an exclusive `flock` on `fd`; `block` waits for it, else `Ok(false)` when held. The
/// lock goes with the last descriptor of the open file (nix's `Flock` guard instead unlocks
/// in its drop and panics when that fails; its plain `flock` is deprecated).
pub fn flock(fd: RawFd, block: bool) -> io::Result<bool> {
    let op = libc::LOCK_EX | if block { 0 } else { libc::LOCK_NB };
    // SAFETY: flock takes a descriptor number and flags only: no memory is passed, and a
    // descriptor that is not open gives EBADF.
    match cvt(unsafe { libc::flock(fd, op) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// statvfs: (total, free for unprivileged users, free) in bytes.
pub fn statvfs(path: &std::path::Path) -> io::Result<(u64, u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path)?;
    // The field types are 32 bits wide on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let (f, blocks, avail, free) = (
        st.fragment_size() as u64,
        st.blocks() as u64,
        st.blocks_available() as u64,
        st.blocks_free() as u64,
    );
    Ok((blocks * f, avail * f, free * f))
}
