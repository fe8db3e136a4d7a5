//! A test image store: one busybox root filesystem (a copy of /bin/busybox plus applet
//! links), and per container an overlay over it, as the real image store hands out.

use edged::runtime::{ErrorKind, ImageSpec, Result, RootfsMount, RootfsProvider, RuntimeError};
use std::path::{Path, PathBuf};

/// The image reference the provider knows.
pub const BUSYBOX: &str = "busybox:test";

const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "env", "id", "hostname", "readlink", "touch", "dd", "head", "tr",
    "true", "false", "ls", "mkdir", "printf", "seq", "yes",
];

/// Busybox rootfs provider rooted at a directory.
pub struct BusyboxRootfs {
    base: PathBuf,
    snapshots: PathBuf,
}

impl BusyboxRootfs {
    /// Lays out the base rootfs under `dir/base`.
    pub fn new(dir: &Path) -> BusyboxRootfs {
        let base = dir.join("base");
        let bin = base.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(base.join("etc")).unwrap();
        for d in ["proc", "sys", "dev", "tmp", "data"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        if !bin.join("busybox").exists() {
            std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        }
        for a in APPLETS {
            let l = bin.join(a);
            if l.symlink_metadata().is_err() {
                std::os::unix::fs::symlink("busybox", l).unwrap();
            }
        }
        std::fs::write(
            base.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(base.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).unwrap();
        BusyboxRootfs { base, snapshots }
    }
}

impl RootfsProvider for BusyboxRootfs {
    fn image_spec(&self, reference: &str) -> Result<ImageSpec> {
        if reference != BUSYBOX {
            return Err(RuntimeError::new(
                reference,
                "image",
                ErrorKind::NotFound,
                "no such image",
            ));
        }
        Ok(ImageSpec {
            id: "sha256:0123456789abcdef".into(),
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into(), "IMAGE_ENV=1".into()],
            working_dir: "/".into(),
            user: String::new(),
        })
    }

    fn prepare_rootfs(&self, _reference: &str, container_id: &str) -> Result<Vec<RootfsMount>> {
        let s = self.snapshots.join(container_id);
        for d in ["upper", "work"] {
            std::fs::create_dir_all(s.join(d)).map_err(|e| {
                RuntimeError::new(container_id, "rootfs", ErrorKind::Other, e.to_string())
            })?;
        }
        Ok(vec![RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={}", self.base.display()),
                format!("upperdir={}", s.join("upper").display()),
                format!("workdir={}", s.join("work").display()),
            ],
        }])
    }

    fn release_rootfs(&self, container_id: &str) -> Result<()> {
        match std::fs::remove_dir_all(self.snapshots.join(container_id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::new(
                container_id,
                "release rootfs",
                ErrorKind::Other,
                e.to_string(),
            )),
        }
    }
}
