//! One shim backend (`ShimRuntime`) on a root of its own, with the busybox test image, for the
//! tests that drive the backend directly on real shims (`#[path = "common/backend.rs"] mod
//! backend;` beside `mod rootfs;`). Backends of one test binary run one at a time: they share
//! runc's state dir and the shims' cgroup.

use super::rootfs::{BusyboxRootfs, BUSYBOX};
use edged::runtime::shim::{ShimConfig, ShimRuntime};
use edged::runtime::{ContainerConfig, PodSandboxConfig, Runtime};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// A backend and its root; pods left are removed, shims left killed, when dropped.
pub struct Backend {
    _guard: MutexGuard<'static, ()>,
    pub dir: tempfile::TempDir,
    provider: Arc<BusyboxRootfs>,
    pub rt: Option<ShimRuntime>,
}

impl Backend {
    /// A backend on a new root under /tmp (`edged-<tag>-…`), opened with `config` (its
    /// `root` set to that root).
    pub fn new(tag: &str, config: ShimConfig) -> Backend {
        let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::Builder::new()
            .prefix(&format!("edged-{tag}-"))
            .tempdir_in("/tmp")
            .unwrap();
        let provider = Arc::new(BusyboxRootfs::new(&dir.path().join("images")));
        let mut b = Backend {
            _guard: guard,
            dir,
            provider,
            rt: None,
        };
        b.rt = Some(b.open(config));
        b
    }

    /// Opens a backend on this root with `config` (its `root` set to this root).
    pub fn open(&self, config: ShimConfig) -> ShimRuntime {
        ShimRuntime::new(
            ShimConfig {
                root: self.dir.path().to_path_buf(),
                ..config
            },
            self.provider.clone(),
        )
        .unwrap()
    }

    /// Drops the backend and opens a new one on the same root with `config` (what an agent
    /// restart does to the backend).
    pub fn restart(&mut self, config: ShimConfig) {
        self.rt = None;
        self.rt = Some(self.open(config));
    }

    /// Loses the backend without its `Drop` (as SIGKILL loses it) and opens a new one on the
    /// same root with `config`. The lost one keeps its state dir's lock, so the lock file is
    /// replaced, as a new process of the agent would find it free.
    pub fn reopen_after_kill(&mut self, config: ShimConfig) {
        std::mem::forget(self.rt.take());
        std::fs::remove_file(self.dir.path().join("runtime/lock")).unwrap();
        self.rt = Some(self.open(config));
    }

    pub fn rt(&self) -> &ShimRuntime {
        self.rt.as_ref().unwrap()
    }

    /// A pod sandbox named `name`; its uid.
    pub fn pod(&self, name: &str) -> String {
        let uid = format!("uid-{}", fastrand::u64(..));
        self.rt()
            .run_pod_sandbox(&PodSandboxConfig {
                uid: uid.clone(),
                namespace: "default".into(),
                name: name.into(),
                hostname: name.into(),
                hosts: "127.0.0.1 localhost\n".into(),
                resolv_conf: "nameserver 127.0.0.53\n".into(),
                ..Default::default()
            })
            .unwrap();
        uid
    }

    /// Creates and starts a busybox `sleep` container `name` in pod `pod`; its id.
    pub fn run(&self, pod: &str, name: &str) -> String {
        let config = ContainerConfig {
            name: name.into(),
            image: BUSYBOX.into(),
            command: vec!["sleep".into(), "1000".into()],
            log_path: self
                .dir
                .path()
                .join(format!("logs/default_p_{pod}/{name}/0.log")),
            ..Default::default()
        };
        let id = self.rt().create_container(pod, &config).unwrap();
        self.rt().start_container(&id).unwrap();
        id
    }

    /// Stops and removes pod `pod`.
    pub fn remove_pod(&self, pod: &str) {
        self.rt().stop_pod_sandbox(pod, Duration::ZERO).unwrap();
        self.rt().remove_pod_sandbox(pod).unwrap();
    }

    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir.path().join("runtime/containers").join(id)
    }

    /// The shim daemons of this root.
    pub fn shims(&self) -> BTreeSet<i32> {
        shims_of(self.dir.path())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.as_ref() {
            for sb in rt.list_pod_sandboxes().unwrap_or_default() {
                if let Err(e) = rt.remove_pod_sandbox(&sb.uid) {
                    eprintln!("cleanup of {}: {e}", sb.uid);
                }
            }
        }
        self.rt = None;
        for pid in shims_of(self.dir.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Live shim daemons (not `start`/`delete` invocations, not zombies) whose command line names
/// `root`.
pub fn shims_of(root: &Path) -> BTreeSet<i32> {
    let root = root.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains("containerd-shim")
                && cmd.contains(&root)
                && alive(pid)
                && !cmd.contains(" start")
                && !cmd.contains(" delete"))
            .then_some(pid)
        })
        .collect()
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim().starts_with('Z'))
}

/// Polls `f` every 20 ms until it answers, for at most 30 s.
pub fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
