//! One shim backend (`ShimRuntime`) on a root of its own, with the busybox test image or images
//! of the test's own, for the tests that drive the backend directly on real shims
//! (`runtime_shim`, `gc`, `shim_grouping`, `shim_spare`: `#[path = "common/backend.rs"] mod
//! backend;` beside `mod rootfs;`). Backends of one test binary run one at a time: they share
//! runc's state dir and the shims' cgroup; a test on real containers without a backend takes
//! the same turn with [`serial`].

use super::rootfs::{BusyboxRootfs, BUSYBOX};
use edged::runtime::shim::{ShimConfig, ShimRuntime};
use edged::runtime::{
    ContainerConfig, ContainerState, ContainerStatus, PodSandboxConfig, Result, RootfsProvider,
    Runtime,
};
use std::any::Any;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// This test binary's turn on real containers (what every [`Backend`] holds).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The runc shim running `runtime_binary`, its logs rotated at 1 MiB with three kept, pods
/// without a pids limit, loopback networking only.
pub fn shim_config(runtime_binary: &str) -> ShimConfig {
    ShimConfig {
        shim_binary: "containerd-shim-runc-v2".into(),
        runtime_binary: runtime_binary.into(),
        log_max_size: 1 << 20,
        log_max_files: 3,
        pod_max_pids: -1,
        network: None,
        ..Default::default()
    }
}

/// A backend and its root; pods left are removed, shims left killed, when dropped, then what
/// it holds, then the root.
pub struct Backend {
    /// The backend as the agent holds it (`None`: none open).
    pub rt: Option<Arc<ShimRuntime>>,
    images: Option<Arc<dyn RootfsProvider>>,
    held: Vec<Box<dyn Any + Send + Sync>>,
    pub dir: tempfile::TempDir,
    _guard: MutexGuard<'static, ()>,
}

impl Backend {
    /// A backend on a new root under /tmp (`edged-<tag>-…`) with the busybox image, opened
    /// with `config` (its `root` set to that root).
    pub fn new(tag: &str, config: ShimConfig) -> Backend {
        let mut b = Backend::root(tag);
        let images = Arc::new(BusyboxRootfs::new(&b.dir.path().join("images")));
        b.open_with(config, images);
        b
    }

    /// A new root under /tmp (`edged-<tag>-…`), this binary's turn taken, with no backend
    /// open yet: for a test that sets its images up in the root first ([`Self::open_with`]).
    pub fn root(tag: &str) -> Backend {
        let guard = serial();
        let dir = tempfile::Builder::new()
            .prefix(&format!("edged-{tag}-"))
            .tempdir_in("/tmp")
            .unwrap();
        Backend {
            rt: None,
            images: None,
            held: Vec::new(),
            dir,
            _guard: guard,
        }
    }

    /// Opens the backend with `config`, its images from `images` (and so do the backends
    /// opened after it on this root).
    pub fn open_with(&mut self, config: ShimConfig, images: Arc<dyn RootfsProvider>) {
        self.images = Some(images);
        self.rt = Some(Arc::new(self.open(config)));
    }

    /// Keeps `v` until the pods are gone, dropping it before the root goes (a filesystem
    /// mounted in the root, say).
    pub fn hold(&mut self, v: impl Any + Send + Sync) {
        self.held.push(Box::new(v));
    }

    /// Opens a backend on this root, with its images, with `config` (its `root` set to this
    /// root).
    pub fn try_open(&self, config: ShimConfig) -> Result<ShimRuntime> {
        ShimRuntime::new(
            ShimConfig {
                root: self.dir.path().to_path_buf(),
                ..config
            },
            self.images.clone().expect("the root's images (open_with)"),
        )
    }

    /// [`Self::try_open`], which must succeed.
    pub fn open(&self, config: ShimConfig) -> ShimRuntime {
        self.try_open(config).unwrap()
    }

    /// Drops the backend and opens a new one on the same root with `config` (what an agent
    /// restart does to the backend).
    pub fn restart(&mut self, config: ShimConfig) {
        self.rt = None;
        self.rt = Some(Arc::new(self.open(config)));
    }

    /// Loses the backend without its `Drop` (as SIGKILL loses it) and opens a new one on the
    /// same root with `config`. The lost one keeps its state dir's lock, so the lock file is
    /// replaced, as a new process of the agent would find it free.
    pub fn reopen_after_kill(&mut self, config: ShimConfig) {
        std::mem::forget(self.rt.take());
        std::fs::remove_file(self.dir.path().join("runtime/lock")).unwrap();
        self.rt = Some(Arc::new(self.open(config)));
    }

    pub fn rt(&self) -> &ShimRuntime {
        self.rt.as_ref().unwrap()
    }

    /// The backend as the agent holds it.
    pub fn shared(&self) -> Arc<dyn Runtime> {
        self.rt.as_ref().unwrap().clone()
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

    /// Where container `name` of pod `pod` logs (its first attempt).
    pub fn log_path(&self, pod: &str, name: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("logs/default_p_{pod}/{name}/0.log"))
    }

    /// A busybox container `name` of pod `pod` running `sh -c script`.
    pub fn config(&self, pod: &str, name: &str, script: &str) -> ContainerConfig {
        ContainerConfig {
            name: name.into(),
            image: BUSYBOX.into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            log_path: self.log_path(pod, name),
            ..Default::default()
        }
    }

    /// Creates and starts `config` in pod `pod`; its id.
    pub fn start(&self, pod: &str, config: &ContainerConfig) -> String {
        let id = self.rt().create_container(pod, config).unwrap();
        self.rt().start_container(&id).unwrap();
        id
    }

    /// Creates and starts a busybox `sleep` container `name` in pod `pod`; its id.
    pub fn run(&self, pod: &str, name: &str) -> String {
        let config = ContainerConfig {
            name: name.into(),
            image: BUSYBOX.into(),
            command: vec!["sleep".into(), "1000".into()],
            log_path: self.log_path(pod, name),
            ..Default::default()
        };
        self.start(pod, &config)
    }

    /// Container `id`'s status once it has exited (within 20 s).
    pub fn wait_exit(&self, id: &str) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.rt().container_status(id).unwrap();
            if s.state == ContainerState::Exited {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not exit: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
    cmdlines()
        .filter(|(pid, cmd)| {
            cmd.contains("containerd-shim")
                && cmd.contains(&root)
                && alive(*pid)
                && !cmd.contains(" start")
                && !cmd.contains(" delete")
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// The processes of /proc with their command lines (arguments apart by spaces).
pub fn cmdlines() -> impl Iterator<Item = (i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
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
