//! `fsGroup`: volumes group-owned by the pod's fsGroup, as the kubelet's `SetVolumeOwnership`
//! leaves them. Every file and directory gets the group; files get group read-write (read
//! only on volumes mounted read-only: configMap, secret, downwardAPI, projected), directories
//! also group search and setgid, so what containers create later inherits the group. Symlinks
//! get the group but no mode (a chmod would reach their target).
//!
//! `fsGroupChangePolicy: OnRootMismatch` skips the walk when the volume's root already has the
//! group and those bits; `Always` (the default) walks every time ownership is set. The kubelet
//! passes no policy for its emptyDir, configMap, secret, downwardAPI and projected plugins
//! (always walks): edged honours OnRootMismatch on emptyDir, where the walk can be long, and
//! always walks the API-data volumes, whose files the atomic writer makes anew.
//!
//! The walk never follows a symlink: every entry is opened without following one (`O_NOFOLLOW`),
//! its type read from the open file, and the open file is what is changed, so a container that
//! swaps a file for a symlink meanwhile cannot point the change at a host file.

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Group read-write, for files of writable volumes.
const RW_MASK: u32 = 0o660;
/// Group read, for files of read-only volumes.
const RO_MASK: u32 = 0o440;
/// Search (execute) for owner and group, on directories.
const EXEC_MASK: u32 = 0o110;
/// The setgid bit: files made in the directory get its group.
const SETGID: u32 = 0o2000;

/// `fsGroupChangePolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangePolicy {
    /// Walk the whole volume every time (the default).
    Always,
    /// Walk only when the root's group or mode is not what fsGroup asks for.
    OnRootMismatch,
}

/// Reads `fsGroupChangePolicy` (unset: Always); anything else is refused with what to write.
pub fn change_policy(v: Option<&str>) -> Result<ChangePolicy, String> {
    match v.unwrap_or("") {
        "" | "Always" => Ok(ChangePolicy::Always),
        "OnRootMismatch" => Ok(ChangePolicy::OnRootMismatch),
        other => Err(format!(
            "fsGroupChangePolicy `{other}` is not one of Always, OnRootMismatch"
        )),
    }
}

/// The mode an entry gets (`None`: a symlink, whose mode is left alone). `mode` is the
/// entry's permission and special bits.
pub fn new_mode(mode: u32, kind: EntryKind, read_only: bool) -> Option<u32> {
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    match kind {
        EntryKind::Symlink => return None,
        EntryKind::Dir => mask |= SETGID | EXEC_MASK,
        EntryKind::Other => {}
    }
    Some((mode & 0o7777) | mask)
}

/// What an entry of a volume is, for [`new_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A file, or anything else that is not a directory or a symlink.
    Other,
}

/// Whether ownership must be set (the walk done) on a volume whose root has group `gid` and
/// mode `mode`: always under [`ChangePolicy::Always`]; under OnRootMismatch when the root is
/// not a directory, not of the group, or lacks a bit fsGroup asks for (as the kubelet checks).
pub fn needs_change(
    policy: ChangePolicy,
    root: (u32, u32, EntryKind),
    fs_group: u32,
    read_only: bool,
) -> bool {
    let (gid, mode, kind) = root;
    if policy == ChangePolicy::Always || gid != fs_group || kind != EntryKind::Dir {
        return true;
    }
    let want = if read_only { RO_MASK } else { RW_MASK } | EXEC_MASK;
    mode & want != want || mode & SETGID == 0
}

/// A failed step of [`apply`]: what was done to which path.
#[derive(Debug)]
pub struct OwnershipError {
    /// The step, such as `chown`.
    pub op: &'static str,
    /// The entry.
    pub path: PathBuf,
    /// Why it failed.
    pub source: io::Error,
}

fn step<T>(op: &'static str, path: &Path, r: nix::Result<T>) -> Result<T, OwnershipError> {
    r.map_err(|e| OwnershipError {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    })
}

fn kind_of(st: &nix::sys::stat::FileStat) -> EntryKind {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => EntryKind::Dir,
        SFlag::S_IFLNK => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

/// Gives `dir` and everything under it the group `fs_group` as [`new_mode`] says, unless
/// `policy` finds the root already right. Returns whether the walk was done.
pub fn apply(
    dir: &Path,
    fs_group: u32,
    read_only: bool,
    policy: ChangePolicy,
) -> Result<bool, OwnershipError> {
    let raw = step(
        "open",
        dir,
        openat(
            None,
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ),
    )?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = step("stat", dir, fstat(fd.as_raw_fd()))?;
    let root = (st.st_gid, st.st_mode & 0o7777, kind_of(&st));
    if !needs_change(policy, root, fs_group, read_only) {
        return Ok(false);
    }
    change(&fd, &st, dir, fs_group, read_only)?;
    walk(&fd, dir, fs_group, read_only)?;
    Ok(true)
}

/// Changes the entry open as `fd` (not a symlink): its group, then its mode.
fn change(
    fd: &OwnedFd,
    st: &nix::sys::stat::FileStat,
    path: &Path,
    fs_group: u32,
    read_only: bool,
) -> Result<(), OwnershipError> {
    // Through the descriptor's magic link: the open inode, whatever is at `path` now.
    let proc = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    step(
        "chown",
        path,
        nix::unistd::chown(&proc, None, Some(nix::unistd::Gid::from_raw(fs_group))),
    )?;
    if let Some(mode) = new_mode(st.st_mode, kind_of(st), read_only) {
        fs::set_permissions(&proc, fs::Permissions::from_mode(mode)).map_err(|source| {
            OwnershipError {
                op: "chmod",
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Changes every entry under the directory open as `dir_fd`.
fn walk(
    dir_fd: &OwnedFd,
    path: &Path,
    fs_group: u32,
    read_only: bool,
) -> Result<(), OwnershipError> {
    let mut names = Vec::new();
    {
        let mut d = step(
            "read dir",
            path,
            nix::dir::Dir::openat(
                Some(dir_fd.as_raw_fd()),
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ),
        )?;
        for entry in d.iter() {
            let entry = step("read dir", path, entry)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
            }
        }
    }
    for name in names {
        let at = path.join(&name);
        let raw = match openat(
            Some(dir_fd.as_raw_fd()),
            name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Removed meanwhile (a container deleting its file): nothing to change.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return step("open", &at, Err(e)),
        };
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = step("stat", &at, fstat(fd.as_raw_fd()))?;
        match kind_of(&st) {
            EntryKind::Symlink => step(
                "chown",
                &at,
                nix::unistd::fchownat(
                    Some(dir_fd.as_raw_fd()),
                    name.as_os_str(),
                    None,
                    Some(nix::unistd::Gid::from_raw(fs_group)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                ),
            )?,
            EntryKind::Other => change(&fd, &st, &at, fs_group, read_only)?,
            EntryKind::Dir => {
                let raw = step(
                    "open",
                    &at,
                    openat(
                        Some(dir_fd.as_raw_fd()),
                        name.as_os_str(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ),
                )?;
                // SAFETY: openat returned a new descriptor that nothing else owns.
                let sub = unsafe { OwnedFd::from_raw_fd(raw) };
                let st = step("stat", &at, fstat(sub.as_raw_fd()))?;
                change(&sub, &st, &at, fs_group, read_only)?;
                walk(&sub, &at, fs_group, read_only)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn modes_as_the_kubelet_sets_them() {
        use EntryKind::*;
        // (mode, kind, read-only) -> new mode
        let table = [
            (0o644, Other, false, Some(0o664)),
            (0o400, Other, true, Some(0o440)),
            (0o600, Other, false, Some(0o660)),
            (0o755, Dir, true, Some(0o2755)),
            (0o777, Dir, false, Some(0o2777)),
            (0o700, Dir, false, Some(0o2770)),
            (0o4755, Other, false, Some(0o4775)),
            (0o777, Symlink, false, None),
        ];
        for (mode, kind, ro, want) in table {
            assert_eq!(new_mode(mode, kind, ro), want, "{mode:o} {kind:?} ro={ro}");
        }
    }

    #[test]
    fn on_root_mismatch_walks_only_when_the_root_differs() {
        use ChangePolicy::*;
        use EntryKind::*;
        // (policy, root gid, root mode, kind, read-only) -> walk
        let table = [
            (Always, 2000, 0o2777, Dir, false, true),
            (OnRootMismatch, 2000, 0o2777, Dir, false, false),
            (OnRootMismatch, 2000, 0o2770, Dir, false, false),
            (OnRootMismatch, 0, 0o2777, Dir, false, true),
            (OnRootMismatch, 2000, 0o777, Dir, false, true),
            (OnRootMismatch, 2000, 0o2750, Dir, false, true),
            (OnRootMismatch, 2000, 0o2750, Dir, true, false),
            (OnRootMismatch, 2000, 0o2777, Other, false, true),
        ];
        for (p, gid, mode, kind, ro, want) in table {
            assert_eq!(
                needs_change(p, (gid, mode, kind), 2000, ro),
                want,
                "{p:?} gid={gid} {mode:o} {kind:?} ro={ro}"
            );
        }
    }

    #[test]
    fn policy_names() {
        assert_eq!(change_policy(None), Ok(ChangePolicy::Always));
        assert_eq!(change_policy(Some("Always")), Ok(ChangePolicy::Always));
        assert_eq!(
            change_policy(Some("OnRootMismatch")),
            Ok(ChangePolicy::OnRootMismatch)
        );
        let e = change_policy(Some("Never")).unwrap_err();
        assert!(e.contains("`Never`") && e.contains("OnRootMismatch"), "{e}");
    }

    #[test]
    fn apply_walks_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::write(&outside, "x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
        let v = t.path().join("vol");
        fs::create_dir_all(v.join("d/e")).unwrap();
        fs::set_permissions(&v, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(v.join("d/f"), "y").unwrap();
        fs::set_permissions(v.join("d/f"), fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, v.join("link")).unwrap();
        // The test runs as root (integration machine) or as a user in its own group: use
        // a group the process may give.
        let gid = nix::unistd::getegid().as_raw();
        assert!(apply(&v, gid, false, ChangePolicy::Always).unwrap());
        let m = |p: &Path| fs::symlink_metadata(p).unwrap();
        assert_eq!(m(&v).mode() & 0o7777, 0o2775);
        assert_eq!(m(&v.join("d/e")).mode() & 0o7777, 0o2775);
        assert_eq!(m(&v.join("d/f")).mode() & 0o7777, 0o664);
        assert_eq!(m(&v.join("d/f")).gid(), gid);
        // The symlink's target is untouched.
        assert_eq!(m(&outside).mode() & 0o7777, 0o600);
        // Right now, so OnRootMismatch does nothing.
        assert!(!apply(&v, gid, false, ChangePolicy::OnRootMismatch).unwrap());
    }
}
