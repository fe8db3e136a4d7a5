//! The shim started ahead (`--spare-shim`, issue 19) on real containerd-shim-runc-v2 + runc
//! containers, as root: `cargo test --test shim_spare`.
//!
//! One idle shim waits in `<root>/runtime/spares/`; a pod's first container claims it (no
//! `shim start`), the pod's next containers join it, a new spare is started after the claim,
//! and no spare outlives its agent: one left by a killed agent is let go at the next start,
//! unless a container was created in it, and the backend going away shuts its spare down.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;

#[path = "common/rootfs.rs"]
mod rootfs;

use agent::{pod, sh, Agent};
use edged::runtime::shim::{ShimConfig, ShimRuntime};
use edged::runtime::{ContainerConfig, ContainerState, PodSandboxConfig, Runtime};
use rootfs::{BusyboxRootfs, BUSYBOX};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The backend tests share runc's state dir and the shims' cgroup: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A shim backend with a spare, on a root of its own.
struct Env {
    _guard: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    provider: Arc<BusyboxRootfs>,
    rt: Option<ShimRuntime>,
}

fn env() -> Env {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::Builder::new()
        .prefix("edged-spare-")
        .tempdir_in("/tmp")
        .unwrap();
    let provider = Arc::new(BusyboxRootfs::new(&dir.path().join("images")));
    let mut e = Env {
        _guard: guard,
        dir,
        provider,
        rt: None,
    };
    e.rt = Some(e.open());
    e
}

impl Env {
    fn open(&self) -> ShimRuntime {
        ShimRuntime::new(
            ShimConfig {
                root: self.dir.path().to_path_buf(),
                spare_shim: true,
                ..Default::default()
            },
            self.provider.clone(),
        )
        .unwrap()
    }

    fn rt(&self) -> &ShimRuntime {
        self.rt.as_ref().unwrap()
    }

    fn pod(&self, name: &str) -> String {
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

    fn run(&self, pod: &str, name: &str) -> String {
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

    fn remove_pod(&self, pod: &str) {
        self.rt().stop_pod_sandbox(pod, Duration::ZERO).unwrap();
        self.rt().remove_pod_sandbox(pod).unwrap();
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.dir.path().join("runtime/containers").join(id)
    }

    /// The pid of the shim serving container `id` (its bundle's `shim.pid`).
    fn shim_of(&self, id: &str) -> i32 {
        std::fs::read_to_string(self.bundle(id).join("shim.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn spares_dir(&self) -> PathBuf {
        self.dir.path().join("runtime/spares")
    }

    /// The shim daemons of this root.
    fn shims(&self) -> BTreeSet<i32> {
        shims_of(self.dir.path())
    }

    /// The spare shim once one waits: its pid, in a directory of its own under `spares/`.
    fn wait_spare(&self, not: Option<i32>) -> i32 {
        wait("a spare shim", || {
            spare_of(&self.spares_dir()).filter(|p| Some(*p) != not)
        })
    }
}

impl Drop for Env {
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

/// The pid of the shim serving from the one directory under `spares` that holds a live
/// shim's `shim.pid` (its working directory that directory).
fn spare_of(spares: &Path) -> Option<i32> {
    let dirs: Vec<PathBuf> = std::fs::read_dir(spares)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    if dirs.len() != 1 {
        return None;
    }
    let pid: i32 = std::fs::read_to_string(dirs[0].join("shim.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (std::fs::read_link(format!("/proc/{pid}/cwd")).ok()? == dirs[0]).then_some(pid)
}

/// Shim daemons (not `start`/`delete` invocations) whose command line names `root`.
fn shims_of(root: &Path) -> BTreeSet<i32> {
    let root = root.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let zombie = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim()
                .starts_with('Z');
            (cmd.contains("containerd-shim")
                && cmd.contains(&root)
                && !zombie
                && !cmd.contains(" start")
                && !cmd.contains(" delete"))
            .then_some(pid)
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim().starts_with('Z'))
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pod_claims_the_spare_its_next_container_joins_it_and_a_new_spare_waits() {
    let mut e = env();
    let first = e.wait_spare(None);
    assert_eq!(e.shims(), BTreeSet::from([first]), "the spare alone");
    let p = e.pod("a");
    let c = e.run(&p, "c");
    assert_eq!(
        e.shim_of(&c),
        first,
        "the pod's first container claimed the spare"
    );
    assert_eq!(
        e.rt().container_status(&c).unwrap().state,
        ContainerState::Running
    );
    // After the start, another spare is started; the claimed one's directory is gone.
    let second = e.wait_spare(Some(first));
    // The pod's next container joins the claimed shim: its socket is the spare's, which no
    // `shim start` of the pod's group would find.
    let d = e.run(&p, "d");
    assert_eq!(
        e.shim_of(&d),
        first,
        "the second container joined the pod's shim"
    );
    assert_eq!(e.shims(), BTreeSet::from([first, second]));
    // The pod's shim goes with its last task; the spare stays.
    e.remove_pod(&p);
    wait("the pod's shim to exit", || (!alive(first)).then_some(()));
    assert_eq!(e.shims(), BTreeSet::from([second]));
    // The backend going away (the agent stopping) shuts its spare down, and its directory.
    e.rt = None;
    wait("the spare to exit", || (!alive(second)).then_some(()));
    let left: Vec<_> = std::fs::read_dir(e.spares_dir())
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "spare directories left: {left:?}");
}

#[test]
fn a_spare_left_behind_is_let_go_but_not_if_it_serves_a_container() {
    // What a killed agent leaves: its spare (nobody claimed it) and the directory of a spare
    // it had claimed, whose container was created before the kill.
    let mut e = env();
    let claimed = e.wait_spare(None);
    let p = e.pod("a");
    let c = e.run(&p, "c");
    assert_eq!(e.shim_of(&c), claimed);
    let idle = e.wait_spare(Some(claimed));
    let idle_dir = std::fs::read_link(format!("/proc/{idle}/cwd")).unwrap();
    // The claimed spare's directory as a kill between Create and its removal leaves it.
    let leftover = e.spares_dir().join("spare-claimed-before-the-kill");
    std::fs::create_dir(&leftover).unwrap();
    std::fs::copy(e.bundle(&c).join("address"), leftover.join("address")).unwrap();
    // The backend lost without its Drop (as SIGKILL loses it), then opened again.
    std::mem::forget(e.rt.take());
    e.rt = Some(reopen(&e));
    wait("the idle spare to be let go", || {
        (!alive(idle)).then_some(())
    });
    assert!(
        !idle_dir.exists() && !leftover.exists(),
        "leftover directories removed"
    );
    assert!(alive(claimed), "the shim serving a container was kept");
    assert_eq!(
        e.rt().container_status(&c).unwrap().state,
        ContainerState::Running
    );
    let fresh = e.wait_spare(Some(idle));
    assert_eq!(e.shims(), BTreeSet::from([claimed, fresh]));
}

#[test]
fn a_spare_killed_while_idle_is_passed_over_and_replaced() {
    let e = env();
    let dead = e.wait_spare(None);
    let dir = std::fs::read_link(format!("/proc/{dead}/cwd")).unwrap();
    let socket = std::fs::read_to_string(dir.join("address"))
        .unwrap()
        .trim()
        .trim_start_matches("unix://")
        .to_string();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dead),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait("the spare to die", || (!alive(dead)).then_some(()));
    // The pod starts all the same, in a shim of its own started for it.
    let p = e.pod("a");
    let c = e.run(&p, "c");
    assert_ne!(e.shim_of(&c), dead);
    assert_eq!(
        e.rt().container_status(&c).unwrap().state,
        ContainerState::Running
    );
    assert!(!dir.exists(), "the dead spare's directory removed");
    assert!(
        !Path::new(&socket).exists(),
        "the dead spare's socket removed"
    );
    let fresh = e.wait_spare(Some(dead));
    assert_eq!(e.shims(), BTreeSet::from([e.shim_of(&c), fresh]));
}

#[test]
fn a_spare_shim_nothing_names_is_killed_at_the_next_start_one_with_a_task_kept() {
    // An agent killed while its spare's `start` ran, its next start cleaning the directory
    // before the daemon came up, would leave a shim nothing names: made here by removing a
    // live spare's directory. Beside it, a claimed spare whose container's bundle lost its
    // `shim.pid`: it has a task (a child), so it is kept.
    let mut e = env();
    let claimed = e.wait_spare(None);
    let p = e.pod("a");
    let c = e.run(&p, "c");
    assert_eq!(e.shim_of(&c), claimed);
    std::fs::remove_file(e.bundle(&c).join("shim.pid")).unwrap();
    let stray = e.wait_spare(Some(claimed));
    std::fs::remove_dir_all(std::fs::read_link(format!("/proc/{stray}/cwd")).unwrap()).unwrap();
    std::mem::forget(e.rt.take());
    e.rt = Some(reopen(&e));
    wait("the stray spare to be killed", || {
        (!alive(stray)).then_some(())
    });
    assert!(alive(claimed), "the shim with a task was kept");
    assert_eq!(
        e.rt().container_status(&c).unwrap().state,
        ContainerState::Running
    );
}

/// Opens the backend again on `e`'s root while the lost one still holds its state dir's lock
/// (a forgotten backend never releases it): the lock file is replaced, as a new boot of the
/// agent's process would find it free.
fn reopen(e: &Env) -> ShimRuntime {
    let lock = e.dir.path().join("runtime/lock");
    std::fs::remove_file(&lock).unwrap();
    e.open()
}

// --- the real agent -----------------------------------------------------------------------

#[test]
fn a_killed_agent_with_a_spare_adopts_its_pod_and_keeps_one_spare() {
    let mut a = Agent::start(
        "spare-kill",
        &["--spare-shim"],
        &[pod(
            "spare-kill-one",
            vec![sh("c", "sleep 100000")],
            json!({}),
        )],
    );
    let p = a.wait_running("spare-kill-one");
    let id = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    let spares = a.root().join("runtime/spares");
    let spare = a.wait_for("a spare shim", || spare_of(&spares));
    assert_eq!(a.host.shim_pids().len(), 2, "the pod's shim and the spare");
    a.kill9();
    a.restart();
    a.wait_for("the old spare let go", || (!alive(spare)).then_some(()));
    let fresh = a.wait_for("a new spare", || spare_of(&spares).filter(|s| *s != spare));
    let p = a.wait_running("spare-kill-one");
    assert_eq!(
        p["status"]["containerStatuses"][0]["containerID"], id,
        "the pod kept its container"
    );
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    let shims = a.host.shim_pids();
    assert_eq!(shims.len(), 2, "the pod's shim and one spare: {shims:?}");
    assert!(shims.contains(&fresh));
    // Stopped (SIGTERM), the agent takes its spare with it and leaves the pod running.
    a.stop();
    a.wait_for("the spare to exit with the agent", || {
        (!alive(fresh)).then_some(())
    });
    let left: Vec<i32> = a
        .host
        .shim_pids()
        .into_iter()
        .filter(|p| alive(*p))
        .collect();
    assert_eq!(left.len(), 1, "the pod's shim alone: {left:?}");
    assert!(std::fs::read_dir(&spares).unwrap().next().is_none());
}

#[test]
fn a_backend_without_the_flag_lets_a_left_spare_go() {
    let mut e = env();
    let spare = e.wait_spare(None);
    std::mem::forget(e.rt.take());
    let lock = e.dir.path().join("runtime/lock");
    std::fs::remove_file(&lock).unwrap();
    e.rt = Some(
        ShimRuntime::new(
            ShimConfig {
                root: e.dir.path().to_path_buf(),
                spare_shim: false,
                ..Default::default()
            },
            e.provider.clone(),
        )
        .unwrap(),
    );
    wait("the left spare to exit", || (!alive(spare)).then_some(()));
    assert!(std::fs::read_dir(e.spares_dir()).unwrap().next().is_none());
    assert!(e.shims().is_empty(), "no shim: {:?}", e.shims());
}
