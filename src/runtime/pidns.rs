//! A pod's shared PID namespace (`shareProcessNamespace`). A PID namespace lives only while
//! its first process (its init, PID 1) does, so edged, which has no pause container, starts a
//! small holder process of its own as that init: it is forked from the agent (twice, so it is
//! nobody's child and outlives the agent), closes every inherited descriptor, and reaps the
//! orphans of the pod's containers until it is killed when the sandbox goes. Its namespace is
//! pinned at `<ns dir>/pid` (containers join it by path) and its PID kept in
//! `<ns dir>/pid.holder`; a holder that is gone (or a PID reused by another process) means
//! the namespace is gone, and the sandbox is made anew.
//!
//! Between the forks only raw system calls run (no allocation, no locks), as a fork of a
//! process with threads requires.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The name the holder shows in `ps`.
const HOLDER_NAME: &[u8] = b"edged-pidns\0";

fn holder_file(dir: &Path) -> PathBuf {
    dir.join("pid.holder")
}

/// The holder's host PID, when it runs and is the init of the namespace pinned under `dir`.
pub fn holder(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(holder_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let pinned = std::fs::metadata(super::sandbox::ns_file(dir, "pid")).ok()?;
    let live = std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?;
    (pid > 0
        && super::sandbox::is_pinned(&super::sandbox::ns_file(dir, "pid"))
        && (live.dev(), live.ino()) == (pinned.dev(), pinned.ino()))
        .then_some(pid)
}

/// Starts a holder and pins its namespace under `dir`; returns its PID.
pub fn create(dir: &Path) -> Result<i32, String> {
    let file = super::sandbox::ns_file(dir, "pid");
    std::fs::File::create(&file).map_err(|e| format!("create {}: {e}", file.display()))?;
    let pid = spawn()?;
    let src = format!("/proc/{pid}/ns/pid");
    let pinned = nix::mount::mount(
        Some(src.as_str()),
        &file,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {src} on {}: {e}", file.display()))
    .and_then(|()| {
        std::fs::write(holder_file(dir), pid.to_string())
            .map_err(|e| format!("write {}: {e}", holder_file(dir).display()))
    });
    if let Err(e) = pinned {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        return Err(e);
    }
    Ok(pid)
}

/// Kills the holder (and so every process left in the namespace), unpins the namespace and
/// removes the files. Idempotent.
pub fn remove(dir: &Path) -> Result<(), String> {
    if let Some(pid) = holder(dir) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| format!("kill the PID namespace holder {pid}: {e}"))?;
    }
    let file = super::sandbox::ns_file(dir, "pid");
    if super::sandbox::is_pinned(&file) {
        nix::mount::umount2(&file, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| format!("umount {}: {e}", file.display()))?;
    }
    for f in [file, holder_file(dir)] {
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove {}: {e}", f.display())),
        }
    }
    Ok(())
}

/// Forks the holder: a child that makes the namespace and forks its init, which it reports on
/// a pipe before it exits.
fn spawn() -> Result<i32, String> {
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the child only makes raw system calls (async-signal-safe) and ends in _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            use std::os::fd::AsRawFd;
            // SAFETY: raw system calls on plain values; no allocation or lock after fork.
            unsafe {
                let w = w.as_raw_fd();
                libc::setsid();
                if libc::unshare(libc::CLONE_NEWPID) != 0 {
                    libc::_exit(1);
                }
                let init = libc::fork();
                if init == 0 {
                    holder_main();
                }
                let bytes = init.to_le_bytes();
                let n = libc::write(w, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(if init > 0 && n == 4 { 0 } else { 2 });
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut buf = [0u8; 4];
            let read = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&r), &mut buf);
            let status = nix::sys::wait::waitpid(child, None);
            match (read, status) {
                (Ok(4), Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) => {
                    Ok(i32::from_le_bytes(buf))
                }
                (read, status) => Err(format!(
                    "the PID namespace holder did not start (read {read:?}, child {status:?})"
                )),
            }
        }
    }
}

/// The holder's life: PID 1 of the new namespace. It drops every descriptor and signal
/// handler it inherited, then reaps children for ever (orphans of the containers come to it).
///
/// # Safety
/// Only to be called in a freshly forked child: it never returns.
unsafe fn holder_main() -> ! {
    libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
    libc::prctl(libc::PR_SET_NAME, HOLDER_NAME.as_ptr());
    for sig in 1..32 {
        libc::signal(sig, libc::SIG_DFL);
    }
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    loop {
        let mut status = 0;
        if libc::waitpid(-1, &mut status, 0) < 0 {
            let t = libc::timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            libc::nanosleep(&t, std::ptr::null_mut());
        }
    }
}
