//! A scratch directory for targets that write files: a 64 MiB tmpfs mounted in a mount
//! namespace of the fuzzing process's own (it goes away with the process), so a layer that
//! inflates to gigabytes fills it and fails instead of filling the machine's memory.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The scratch root, made on first use.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edged-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch dir");
        mount_tmpfs(&dir);
        dir
    })
}

/// Mounts a small tmpfs on `dir` in a private mount namespace; without the privilege to, the
/// scratch dir stays on the temp filesystem (and big layers are limited only by it).
fn mount_tmpfs(dir: &Path) {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let target = c(dir.to_str().expect("a UTF-8 temp dir"));
    let (none, root, tmpfs, opts) = (c("none"), c("/"), c("tmpfs"), c("size=64m,mode=0700"));
    // SAFETY: plain syscalls on valid NUL-terminated strings; they change only this process's
    // mount namespace, made private first so nothing propagates to the host's.
    let ok = unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                tmpfs.as_ptr(),
                target.as_ptr(),
                tmpfs.as_ptr(),
                0,
                opts.as_ptr().cast(),
            ) == 0
    };
    if !ok {
        eprintln!(
            "fuzz: no private tmpfs for {} ({}); using the temp filesystem",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
}

/// A fresh empty directory `name` under the scratch root (an old one is removed first).
pub fn fresh(name: &str) -> PathBuf {
    let d = root().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir(&d).expect("create a scratch dir");
    d
}

/// What the scratch root holds, names sorted.
pub fn listing() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root())
        .expect("read the scratch root")
        .map(|e| {
            e.expect("a dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}
