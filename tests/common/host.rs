//! What one test agent leaves on the machine: bundles and sandboxes under its root, runc's
//! state of its containers, its shims, the processes and cgroups of its pods, its mounts. The
//! end-to-end tests check these and clean them up, also when a test fails.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The agent binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_edged");
/// The reference of the test image.
pub const IMAGE: &str = "docker.io/library/busybox:test";
/// runc's state dir for edged's containers (shared by every agent on the machine).
pub const RUNC_ROOT: &str = "/run/containerd/runc/edged";
/// How long any one wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// The busybox test image archive, built by scripts/make-test-image.sh once per test binary
/// (a file of each binary's own: test binaries run side by side).
pub fn image() -> &'static Path {
    static IMAGE_TAR: OnceLock<PathBuf> = OnceLock::new();
    IMAGE_TAR.get_or_init(|| {
        let file = format!("{}-busybox.tar", env!("CARGO_CRATE_NAME"));
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(file);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-test-image.sh");
        let st = Command::new(script)
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/make-test-image.sh");
        assert!(st.success(), "make-test-image.sh failed: {st}");
        out
    })
}

/// A container as runc lists it.
#[derive(Clone, Debug)]
pub struct RuncEntry {
    pub id: String,
    pub pid: u32,
    pub status: String,
}

/// The machine as one test agent left it: its dir (`root/` is its `--root-dir`) and the
/// processes, runc state, cgroups and mounts that belong to it.
pub struct Host {
    dir: PathBuf,
}

impl Host {
    /// The agent whose dirs live under `dir`.
    pub fn new(dir: &Path) -> Host {
        Host {
            dir: dir.to_path_buf(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Imports the test image into the agent's image store (`edged image import`).
    pub fn import_test_image(&self) {
        let out = Command::new(BIN)
            .arg("--root-dir")
            .arg(self.root())
            .args(["image", "import"])
            .arg(image())
            .output()
            .expect("run edged image import");
        assert!(
            out.status.success(),
            "image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `edged get <what> -o json` on the agent's root: the items (none before the store exists).
    pub fn get(&self, what: &str) -> Vec<Value> {
        let out = Command::new(BIN)
            .arg("--root-dir")
            .arg(self.root())
            .args(["get", what, "-o", "json"])
            .output()
            .expect("run edged get");
        if !out.status.success() {
            return Vec::new(); // the store may not exist yet
        }
        let v: Value = serde_json::from_slice(&out.stdout).expect("edged get prints JSON");
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Ids of the container bundles under the agent's root.
    pub fn bundle_ids(&self) -> BTreeSet<String> {
        list_dir(&self.root().join("runtime/containers"))
    }

    /// Pod uids with a sandbox under the agent's root.
    pub fn sandbox_uids(&self) -> BTreeSet<String> {
        list_dir(&self.root().join("runtime/sandboxes"))
    }

    /// runc's list, only the containers whose bundle lies under the agent's root.
    pub fn runc(&self) -> BTreeMap<String, RuncEntry> {
        // runc list fails while another test's container is half made or removed: retry.
        let mut tries = 0;
        let v: Value = loop {
            let out = Command::new("runc")
                .args(["--root", RUNC_ROOT, "list", "-f", "json"])
                .output()
                .expect("run runc list");
            match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(v) if out.status.success() => break v,
                _ if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => panic!(
                    "runc list keeps failing: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            }
        };
        let root = self.root().to_string_lossy().to_string();
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["bundle"].as_str().is_some_and(|b| b.starts_with(&root)))
            .map(|c| {
                let e = RuncEntry {
                    id: c["id"].as_str().unwrap_or_default().to_string(),
                    pid: c["pid"].as_u64().unwrap_or(0) as u32,
                    status: c["status"].as_str().unwrap_or_default().to_string(),
                };
                (e.id.clone(), e)
            })
            .collect()
    }

    /// Processes whose command line names the agent's root (its shims).
    pub fn shim_pids(&self) -> Vec<i32> {
        let root = self.root().to_string_lossy().to_string();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("containerd-shim") && cmdline.contains(&root) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Every process in the cgroups of the agent's pods, and the init of every bundle.
    pub fn container_pids(&self) -> Vec<i32> {
        let mut pids = BTreeSet::new();
        for dir in self.pod_cgroups() {
            for d in walk_dirs(&dir) {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        for id in self.bundle_ids() {
            let p = self
                .root()
                .join("runtime/containers")
                .join(&id)
                .join("init.pid");
            if let Some(pid) = std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                pids.insert(pid);
            }
        }
        pids.into_iter().collect()
    }

    /// The pod cgroup dirs (every controller) of the agent's sandboxes.
    pub fn pod_cgroups(&self) -> Vec<PathBuf> {
        let uids = self.sandbox_uids();
        let mut out = Vec::new();
        for ctrl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for uid in &uids {
                let d = ctrl.path().join("edged").join(format!("pod{uid}"));
                if d.is_dir() {
                    out.push(d);
                }
            }
        }
        out
    }

    /// Mount points under the agent's dir, deepest first.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let base = self.dir.to_string_lossy().to_string();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut m: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&base))
            .map(|p| PathBuf::from(p.replace("\\040", " ")))
            .collect();
        m.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        m.dedup();
        m
    }

    /// Kills every shim and container process of the agent (not the agent itself).
    pub fn kill_processes(&self) {
        for pid in self.shim_pids().into_iter().chain(self.container_pids()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Unmounts everything under the agent's dir (deepest first).
    pub fn unmount_all(&self) {
        for m in self.mounts() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// Leaves nothing of a stopped agent: its processes, runc state, mounts and pod cgroups.
    pub fn clean_up(&self) {
        self.kill_processes();
        for id in self.bundle_ids() {
            let _ = Command::new("runc")
                .args(["--root", RUNC_ROOT, "delete", "-f", &id])
                .stderr(Stdio::null())
                .status();
        }
        self.unmount_all();
        for dir in self.pod_cgroups() {
            let mut dirs = walk_dirs(&dir);
            dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for d in dirs {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

fn list_dir(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `dir` and every directory below it.
pub fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Polls `f` until it gives a value; after [`WAIT`] fails naming `what`, with the tail of the
/// agent's log (`log`).
pub fn wait_until<T>(what: &str, log: impl Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{what} not seen in {WAIT:?}; agent log tail:\n{}",
                tail(&log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The messages of CRI log lines (`<time> <stream> <F|P> <message>`).
pub fn cri_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
