//! A pod's namespaces, made by the agent itself (no pause container): a thread unshares the
//! network, IPC and UTS namespaces and bind-mounts `/proc/thread-self/ns/*` onto files, as
//! `ip netns add` does. The files keep the namespaces alive; containers join them by path.

use std::path::{Path, PathBuf};

/// Which namespaces a pod gets of its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct NsSet {
    /// A network namespace of the pod's own (not hostNetwork).
    pub net: bool,
    /// An IPC namespace of the pod's own (not hostIPC).
    pub ipc: bool,
    /// UTS goes with the network namespace (hostNetwork pods keep the host's name).
    pub uts: bool,
}

/// The file a namespace of kind `kind` (`net`, `ipc`, `uts`) is pinned at under `dir`.
pub fn ns_file(dir: &Path, kind: &str) -> PathBuf {
    dir.join(kind)
}

/// Whether `path` is an nsfs bind mount (a pinned namespace).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Makes and pins the namespaces of `set` under `dir` (idempotent: pinned ones are kept),
/// brings `lo` up in a new network namespace and sets the hostname in a new UTS one. Returns
/// whether any namespace was made (false: all were pinned already).
pub fn create(dir: &Path, set: NsSet, hostname: &str) -> Result<bool, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let mut flags = nix::sched::CloneFlags::empty();
    let mut kinds = Vec::new();
    for (want, kind, flag) in [
        (set.net, "net", nix::sched::CloneFlags::CLONE_NEWNET),
        (set.ipc, "ipc", nix::sched::CloneFlags::CLONE_NEWIPC),
        (set.uts, "uts", nix::sched::CloneFlags::CLONE_NEWUTS),
    ] {
        if want && !is_pinned(&ns_file(dir, kind)) {
            flags |= flag;
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Ok(false);
    }
    for k in &kinds {
        let f = ns_file(dir, k);
        std::fs::File::create(&f).map_err(|e| format!("create {}: {e}", f.display()))?;
    }
    let dir = dir.to_path_buf();
    let hostname = hostname.to_string();
    // unshare() changes only the calling thread: a thread of its own that ends afterwards
    // leaves the agent's other threads in the host namespaces.
    std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(flags).map_err(|e| format!("unshare {kinds:?}: {e}"))?;
        for k in &kinds {
            let src = format!("/proc/thread-self/ns/{k}");
            let dst = ns_file(&dir, k);
            nix::mount::mount(
                Some(src.as_str()),
                &dst,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind {src} on {}: {e}", dst.display()))?;
        }
        if kinds.contains(&"net") {
            loopback_up().map_err(|e| format!("bring lo up: {e}"))?;
        }
        if kinds.contains(&"uts") && !hostname.is_empty() {
            nix::unistd::sethostname(&hostname).map_err(|e| format!("sethostname: {e}"))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| "namespace thread panicked".to_string())??;
    Ok(true)
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq; the fd is closed on every path.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// Makes the pod's shared PID namespace under `dir` unless its holder runs (a pin without
/// its holder is a dead namespace: made anew). Returns whether it was made.
pub fn create_pid(dir: &Path) -> Result<bool, String> {
    if super::pidns::holder(dir).is_some() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    super::pidns::remove(dir)?;
    super::pidns::create(dir)?;
    Ok(true)
}

/// Unpins every namespace under `dir` and removes the files. Idempotent.
pub fn remove(dir: &Path) -> Result<(), String> {
    super::pidns::remove(dir)?;
    for k in ["net", "ipc", "uts"] {
        let f = ns_file(dir, k);
        if is_pinned(&f) {
            nix::mount::umount2(&f, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| format!("umount {}: {e}", f.display()))?;
        }
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove {}: {e}", f.display())),
        }
    }
    Ok(())
}
