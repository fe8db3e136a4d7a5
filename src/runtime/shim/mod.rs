//! The containerd shim v2 backend of [`Runtime`]: edged drives `containerd-shim-runc-v2` (or any
//! shim v2) over ttrpc itself, with no containerd daemon. The agent makes the pod's namespaces,
//! bundles, log copiers and keeps their state on disk so a restarted agent adopts running
//! containers.
//!
//! Shims and grouping ([`ShimGrouping`], `--shim-grouping`): the runc shim's `start` reads the
//! bundle's `io.containerd.runc.v2.group` annotation and, when a live shim of that group (same
//! events address and namespace) listens, answers its address instead of starting another.
//! Each container records its group; `pod` (the default) gives one shim per pod, `node` one
//! shim for every pod. A new container joins its group's running shim when another container
//! of the group names one in its bundle (no `shim start` then), else claims the spare shim
//! started ahead (`spare.rs`, `--spare-shim`), else runs `shim start`. Either way a
//! container's start and Create hold its group's lock shared and the "last task of this shim
//! gone: shut it down" decision holds it exclusive, so a
//! shutdown never takes a shim a Create has just joined (the shim itself also refuses a
//! Shutdown while it holds a task). A shim's death is every one of its containers' death:
//! each is cleaned with `shim delete` (its processes killed) and reported exited, and the pod
//! workers start them again; with `node` that is every pod of the node at once.
//!
//! Layout under `<root>/runtime/`:
//! - `events.sock`: the events service shims publish to.
//! - `sandboxes/<pod uid>/`: `meta.json`, `ns/{net,ipc,uts}`, `hosts`, `resolv.conf`, `hostname`.
//! - `spares/spare-<id>/`: the working directory of the spare shim (`--spare-shim`).
//! - `containers/<id>/`: the bundle (`config.json`, `rootfs/`, `address`, `log`), the
//!   `stdout`/`stderr` FIFOs and `meta.json`.
//!
//! The containers' `meta.json` files are read once at start and then kept in memory, written
//! through; a running task is watched ([`watch`]: pidfds, or /proc) so a listing asks no shim until
//! something changed.

mod calls;
mod client;
mod events;
mod exec;
mod frame;
mod network;
mod process;
pub mod proto;
mod spare;
mod store;
mod tasks;
mod watch;

use self::client::{RpcError, TaskClient};
use self::proto::shim as pb;
use self::store::{from_ns, to_ns, ContainerMeta, SandboxMeta};
use super::cgroups::Layout;
use super::logs::{Copier, Rotation};
use super::{oci, sandbox};
use super::{
    AttachIo, ContainerConfig, ContainerState, ContainerStatus, ErrorKind, ExecIo, ExecResult,
    ExecSpec, ExitEvent, PodSandboxConfig, Result, RootfsProvider, Runtime, RuntimeError, Sandbox,
    Stage,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

pub use self::events::Sink as EventSink;
pub use self::process::NAMESPACE;

/// Timeout of quick RPCs (State, Kill, Connect).
const RPC_QUICK: Duration = Duration::from_secs(5);
/// Timeout of RPCs that run the OCI runtime (Create, Start, Delete, Exec).
const RPC_SLOW: Duration = Duration::from_secs(30);
/// How long a SIGKILLed process may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How pods' containers are spread over shim processes (`--shim-grouping`): the value of the
/// `io.containerd.runc.v2.group` annotation the runc shim groups by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShimGrouping {
    /// One shim per pod, as containerd's CRI plugin runs them: a shim's crash takes one pod's
    /// containers.
    #[default]
    Pod,
    /// One shim for every pod of the node: one process's memory instead of one per pod, but
    /// its crash (or a hang that gets it killed) takes every pod's containers.
    Node,
}

/// The group of every container under [`ShimGrouping::Node`]: not a valid pod uid (`:`), so
/// no pod's own group can be it.
pub const NODE_GROUP: &str = "edged:node";

impl std::str::FromStr for ShimGrouping {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "pod" => Ok(ShimGrouping::Pod),
            "node" => Ok(ShimGrouping::Node),
            _ => Err(format!("`{s}` is not a shim grouping: pod or node")),
        }
    }
}

impl std::fmt::Display for ShimGrouping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ShimGrouping::Pod => "pod",
            ShimGrouping::Node => "node",
        })
    }
}

impl ShimGrouping {
    /// The shim group of a new container of pod `pod_uid`.
    pub fn group_of(self, pod_uid: &str) -> String {
        match self {
            ShimGrouping::Pod => pod_uid.to_string(),
            ShimGrouping::Node => NODE_GROUP.to_string(),
        }
    }
}

/// How the backend is set up.
#[derive(Clone, Debug)]
pub struct ShimConfig {
    /// The agent's root dir; the backend keeps its state under `<root>/runtime/`.
    pub root: PathBuf,
    /// The shim binary (`--runtime-shim`), e.g. `containerd-shim-runc-v2`.
    pub shim_binary: String,
    /// The OCI runtime the runc shim runs (`--runtime-binary`): `runc`, `crun` or a path.
    pub runtime_binary: String,
    /// Rotate a container's log file past this size.
    pub log_max_size: u64,
    /// Keep this many log files per container (the live one included).
    pub log_max_files: u32,
    /// The most processes a pod may run (`--pod-max-pids`, its cgroup's `pids.max`); -1 (or
    /// anything not above zero): no limit.
    pub pod_max_pids: i64,
    /// CNI (`--cni-*`): pods get their network from its plugins. `None`: loopback only.
    pub network: Option<crate::network::NetworkConfig>,
    /// Which containers share a shim (`--shim-grouping`); containers keep the group they were
    /// created with when the agent restarts with another value.
    pub grouping: ShimGrouping,
    /// Keep one shim started ahead for the next pod (`--spare-shim`, see `spare.rs`).
    pub spare_shim: bool,
}

impl Default for ShimConfig {
    fn default() -> Self {
        ShimConfig {
            root: PathBuf::from("/var/lib/edged"),
            shim_binary: "containerd-shim-runc-v2".into(),
            runtime_binary: "runc".into(),
            log_max_size: 10 << 20,
            log_max_files: 5,
            pod_max_pids: -1,
            network: None,
            grouping: ShimGrouping::Pod,
            spare_shim: false,
        }
    }
}

/// The locks of one shim group.
#[derive(Default)]
struct GroupLock {
    /// Shim starts and Creates (shared) against the "last task gone: shut the shim down"
    /// decision (exclusive).
    tasks: RwLock<()>,
    /// Held while a new container of the group finds its shim (the group's, or the spare it
    /// claims) and writes that shim's address in its bundle, so the next container of the
    /// group finds it there.
    join: Mutex<()>,
}

/// The shim v2 backend.
pub struct ShimRuntime {
    cfg: ShimConfig,
    dir: PathBuf,
    rootfs: Arc<dyn RootfsProvider>,
    cgroups: Layout,
    events: events::EventServer,
    exit_tx: async_channel::Sender<ExitEvent>,
    exit_rx: async_channel::Receiver<ExitEvent>,
    oom: Arc<Mutex<HashSet<String>>>,
    clients: Mutex<HashMap<String, Arc<TaskClient>>>,
    /// Every container's record, as on disk (written through by [`Self::write_meta`]).
    metas: Mutex<HashMap<String, ContainerMeta>>,
    /// Running tasks whose init process and shim are watched (see [`watch`]).
    watched: watch::Watcher,
    copiers: Mutex<HashMap<String, Copier>>,
    /// Serializes read-modify-write of metadata files and sandbox setup.
    meta_lock: Mutex<()>,
    /// Per shim group: shim starts + Creates (shared) and a "last task gone, shut the shim
    /// down" decision (exclusive) never interleave (the shutdown would take the new container's
    /// shim away).
    group_locks: Mutex<HashMap<String, Arc<GroupLock>>>,
    /// The shim started ahead for the next pod (`--spare-shim`).
    spares: spare::Spares,
    /// The pod network's plugins (see [`network`]).
    cni: Option<crate::network::Cni>,
    /// Sandboxes whose network this agent made or checked (others are CHECKed once).
    net_seen: Mutex<HashSet<String>>,
    /// Held for the backend's life: one agent per state dir (dropped last).
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn err(object: &str, op: &str, kind: ErrorKind, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::new(object, op, kind, msg)
}

fn io_err(object: &str, op: &str, e: impl std::fmt::Display) -> RuntimeError {
    err(object, op, ErrorKind::Other, e.to_string())
}

fn rpc_err(object: &str, op: &str, e: RpcError) -> RuntimeError {
    let kind = match &e {
        RpcError::Status(ttrpc::Code::NOT_FOUND, _) => ErrorKind::NotFound,
        RpcError::Status(ttrpc::Code::ALREADY_EXISTS, _) => ErrorKind::AlreadyExists,
        RpcError::Status(ttrpc::Code::DEADLINE_EXCEEDED, _) | RpcError::Timeout => {
            ErrorKind::Timeout
        }
        RpcError::Disconnected(_) => ErrorKind::ShimDead,
        _ => ErrorKind::Other,
    };
    err(object, op, kind, e.to_string())
}

fn is_timeout(e: &RpcError) -> bool {
    matches!(
        e,
        RpcError::Timeout | RpcError::Status(ttrpc::Code::DEADLINE_EXCEEDED, _)
    )
}

fn new_id() -> String {
    (0..32)
        .filter_map(|_| char::from_digit(fastrand::u32(0..16), 16))
        .collect()
}

fn timestamp(t: &protobuf::well_known_types::timestamp::Timestamp) -> Option<SystemTime> {
    (t.seconds > 0)
        .then(|| SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.max(0) as u32))
}

/// Checks that a pod uid or container id names one directory (callers pass them in; they
/// become paths under the state dir).
fn check_name(name: &str, what: &str) -> Result<()> {
    // The same rule as for pod uids everywhere (one safe path component).
    if crate::api::validate::uid(name).is_ok() {
        Ok(())
    } else {
        Err(err(
            name,
            what,
            ErrorKind::InvalidConfig,
            format!("{name:?} is not a valid {what} (letters, digits, '-', '_', '.')"),
        ))
    }
}

/// Whether `path` is a mount point (by /proc/self/mountinfo: bind mounts share st_dev).
/// The kernel's id of this boot (empty when it cannot be read).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

impl ShimRuntime {
    /// Opens (or creates) the backend's state under `<config.root>/runtime/`, serves the
    /// events socket, and adopts the containers a previous agent left: running ones keep
    /// running (their log copiers reopen the FIFOs), those whose shim died are cleaned and
    /// reported exited. `rootfs` gives images' specs and containers' root filesystems.
    pub fn new(config: ShimConfig, rootfs: Arc<dyn RootfsProvider>) -> Result<ShimRuntime> {
        let dir = config.root.join("runtime");
        // Bundles (config.json holds env values from Secrets, rootfs shows set-id files of
        // images) are root's only.
        for d in [dir.clone(), dir.join("sandboxes"), dir.join("containers")] {
            crate::paths::private_dir(&d)
                .map_err(|e| io_err(&d.display().to_string(), "init", format!("mkdir: {e}")))?;
        }
        let lock_path = dir.join("lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path.display().to_string(), "init", e))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| {
                err(
                    &lock_path.display().to_string(),
                    "init",
                    ErrorKind::AlreadyExists,
                    format!("another agent uses this state dir ({e}): stop it first"),
                )
            })?;
        // Bounded: events are hints; with no reader they must not pile up.
        let (exit_tx, exit_rx) = async_channel::bounded(1024);
        let oom = Arc::new(Mutex::new(HashSet::new()));
        let events =
            events::EventServer::start(&dir.join("events.sock"), exit_tx.clone(), oom.clone())
                .map_err(|e| err("events.sock", "init", ErrorKind::Other, e))?;
        let cni = config.network.clone().map(crate::network::Cni::new);
        let mut rt = ShimRuntime {
            cni,
            net_seen: Mutex::new(HashSet::new()),
            cfg: config,
            dir,
            rootfs,
            cgroups: Layout::detect(),
            events,
            exit_tx,
            exit_rx,
            oom,
            clients: Mutex::new(HashMap::new()),
            metas: Mutex::new(HashMap::new()),
            watched: watch::Watcher::default(),
            copiers: Mutex::new(HashMap::new()),
            meta_lock: Mutex::new(()),
            group_locks: Mutex::new(HashMap::new()),
            spares: spare::Spares::off(),
            _lock: lock,
        };
        rt.load_metas();
        rt.adopt();
        let spares = rt.dir.join("spares");
        // Spare shims nothing names can only be left where spares were used: an agent that
        // never kept one does not read /proc and every bundle at start for them.
        if spare::Spares::clean(&spares) || rt.cfg.spare_shim {
            let serving: HashSet<u32> = rt
                .container_metas()
                .iter()
                .filter_map(|m| std::fs::read_to_string(rt.bundle(&m.id).join("shim.pid")).ok())
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            spare::Spares::kill_strays(&rt.events.address, &rt.cfg.shim_binary, &serving);
        }
        if rt.cfg.spare_shim {
            rt.spares = spare::Spares::on(
                spares,
                &rt.cfg.shim_binary,
                &rt.events.address,
                rt.cgroups.clone(),
            );
        }
        Ok(rt)
    }

    /// Shuts the spare shim down (`--spare-shim`) and starts no other: the agent is stopping.
    pub fn stop_spare(&self) {
        self.spares.close();
    }

    /// Reattaches to what a previous agent left: log copiers for live tasks, and a State for
    /// each so dead shims are found and cleaned now.
    fn adopt(&self) {
        let metas = self.metas_where(|m| !m.task_deleted);
        // In parallel: a hung shim costs one RPC timeout, not one per container.
        std::thread::scope(|s| {
            for m in &metas {
                s.spawn(move || self.adopt_one(m));
            }
        });
        // A shim that let its calls time out at adoption (stopped, stuck) would hold its pod
        // unknown while the pod's next start replaces it at its address, leaving it behind:
        // it is killed now and its containers cleaned up as a dead shim's (the pod workers
        // then start them again).
        let stuck: HashSet<String> = metas
            .iter()
            .filter_map(|m| self.address(&m.id))
            .filter(|a| {
                self.clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(a)
                    .is_some_and(|c| c.timed_out())
            })
            .collect();
        for address in &stuck {
            self.kill_unresponsive_shim(address);
        }
        for m in metas
            .iter()
            .filter(|m| self.address(&m.id).is_some_and(|a| stuck.contains(&a)))
        {
            if let Err(e) = self.refresh(&m.id) {
                tracing::warn!(container = %m.id, error = %e, "cleanup after a stuck shim failed");
            }
        }
    }

    fn adopt_one(&self, m: &ContainerMeta) {
        if m.task_created && m.finished_ns.is_some() {
            // An exited task whose shim is gone (a reboot, a killed shim) leaves runc state
            // and maybe a rootfs mount that nothing would clean until the container is
            // removed: clean them now; the exit already recorded is kept.
            if let Err(
                e @ (RpcError::Disconnected(_) | RpcError::Status(ttrpc::Code::NOT_FOUND, _)),
            ) = self.state(&m.id)
            {
                if let Err(e) = self.shim_died(m, &e.to_string()) {
                    tracing::warn!(container = %m.id, error = %e, "cleanup of an exited container failed");
                }
            }
            return;
        }
        if !m.task_created {
            // The previous agent stopped in the middle of a create: the task may exist.
            let known = self.address(&m.id).is_some() && self.state(&m.id).is_ok();
            if !known {
                // No Create runs at start: one cut short by the last agent's death left this.
                self.remove_half_created(m);
                let now = SystemTime::now();
                let r = self.update_meta(&m.id, |m| {
                    m.task_deleted = true;
                    m.finished_ns = Some(to_ns(now));
                    m.exit_code = Some(128);
                    m.reason = Some("CreateInterrupted".into());
                    m.message = Some("the agent stopped while creating this container".into());
                });
                if let Err(e) = r {
                    tracing::warn!(container = %m.id, error = %e, "adopt failed");
                }
                return;
            }
            if let Err(e) = self.update_meta(&m.id, |m| m.task_created = true) {
                tracing::warn!(container = %m.id, error = %e, "adopt failed");
            }
        }
        if let Err(e) = self.start_copier(m, true) {
            tracing::warn!(container = %m.id, pod = %m.pod_uid, error = %e, "log copier not started");
        }
        match self.container_status(&m.id) {
            Ok(s) => {
                tracing::info!(container = %m.id, pod = %m.pod_uid, state = ?s.state, "adopted container")
            }
            Err(e) => tracing::warn!(container = %m.id, error = %e, "adopt failed"),
        }
    }

    fn sandbox_dir(&self, uid: &str) -> PathBuf {
        self.dir.join("sandboxes").join(uid)
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join("containers").join(id)
    }

    /// The locks of shim group `group` (see [`ShimRuntime::group_locks`]).
    fn group_lock(&self, group: &str) -> Arc<GroupLock> {
        self.group_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(group.to_string())
            .or_default()
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.meta_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_sandbox(&self, uid: &str) -> Result<SandboxMeta> {
        check_name(uid, "pod uid")?;
        store::read_json(&self.sandbox_dir(uid).join("meta.json")).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Other
            };
            err(
                uid,
                "sandbox",
                kind,
                format!("no sandbox for this pod ({e})"),
            )
        })
    }

    fn read_meta(&self, id: &str) -> Result<ContainerMeta> {
        check_name(id, "container id")?;
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| err(id, "container", ErrorKind::NotFound, "no such container"))
    }

    /// Saves a container's record (atomically, on disk first) and keeps it in memory.
    fn write_meta(&self, m: &ContainerMeta) -> Result<()> {
        store::write_json(&self.bundle(&m.id).join("meta.json"), m)
            .map_err(|e| io_err(&m.id, "save metadata", e))?;
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(m.id.clone(), m.clone());
        Ok(())
    }

    /// Drops a container whose bundle is gone from memory.
    fn forget(&self, id: &str) {
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.unwatch(id);
    }

    /// Applies `f` to a container's metadata under the lock and saves it. On a full filesystem
    /// (the reserved space released and still no room) the record is kept in memory only: what
    /// it records (a start, an exit, a deleted task) happened, and a stop must not fail on it.
    fn update_meta(&self, id: &str, f: impl FnOnce(&mut ContainerMeta)) -> Result<ContainerMeta> {
        let _g = self.lock();
        let mut m = self.read_meta(id)?;
        f(&mut m);
        let path = self.bundle(&m.id).join("meta.json");
        match crate::reserve::retry_when_full(
            || store::write_json(&path, &m),
            |e| crate::reserve::is_no_space(e),
        ) {
            Ok(()) => {}
            Err(e) if crate::reserve::is_no_space(&e) => {
                tracing::warn!(container = %m.id, pod = %m.pod_uid, error = %e, "container record kept in memory only: no space left");
            }
            Err(e) => return Err(io_err(&m.id, "save metadata", e)),
        }
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(m.id.clone(), m.clone());
        Ok(m)
    }

    fn container_metas(&self) -> Vec<ContainerMeta> {
        self.metas_where(|_| true)
    }

    /// The records `keep` accepts, chosen under the lock so only those are copied (a pod
    /// worker's listing copies its own pod's records, not the node's).
    fn metas_where(&self, keep: impl Fn(&ContainerMeta) -> bool) -> Vec<ContainerMeta> {
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|m| keep(m))
            .cloned()
            .collect()
    }

    /// Reads every container's record from disk (at start; afterwards memory is the copy).
    fn load_metas(&self) {
        let Ok(rd) = std::fs::read_dir(self.dir.join("containers")) else {
            return;
        };
        let mut metas = self.metas.lock().unwrap_or_else(|p| p.into_inner());
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().to_string();
            let path = e.path().join("meta.json");
            let loaded = check_name(&id, "container id")
                .map_err(|e| e.to_string())
                .and_then(|()| store::read_json::<ContainerMeta>(&path).map_err(|e| e.to_string()));
            match loaded {
                Ok(m) if m.id == id => {
                    metas.insert(id, m);
                }
                Ok(m) => {
                    tracing::warn!(container = %id, recorded = %m.id, "container metadata names another id; ignored")
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "unreadable container metadata; ignored")
                }
            }
        }
    }

    fn address(&self, id: &str) -> Option<String> {
        std::fs::read_to_string(self.bundle(id).join("address"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    fn start_copier(&self, m: &ContainerMeta, adopted: bool) -> std::io::Result<()> {
        let b = self.bundle(&m.id);
        let rotation = Rotation {
            max_size: self.cfg.log_max_size,
            max_files: self.cfg.log_max_files.max(1),
        };
        let c = Copier::start(
            &m.id,
            &b.join("stdout"),
            &b.join("stderr"),
            &m.log_path,
            rotation,
            adopted,
        )?;
        self.copiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(m.id.clone(), c);
        Ok(())
    }

    /// Waits (bounded) for a container's log copier to drain and drops it.
    fn finish_copier(&self, id: &str) {
        let c = self
            .copiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(c) = c {
            c.stop();
            // Bounded: a writer some process still holds keeps the copy going, detached.
            c.wait(Duration::from_secs(2));
        }
    }

    fn status_of(&self, m: ContainerMeta, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            id: m.id,
            pod_uid: m.pod_uid,
            name: m.name,
            attempt: m.attempt,
            image: m.image,
            image_id: m.image_id,
            state,
            pid: m
                .pid
                .filter(|_| state == ContainerState::Running || state == ContainerState::Created),
            created_at: from_ns(m.created_ns),
            started_at: m.started_ns.map(from_ns),
            finished_at: m.finished_ns.map(from_ns),
            exit_code: m.exit_code,
            reason: m.reason,
            message: m.message,
            log_path: m.log_path,
            labels: m.labels,
        }
    }

    /// What a Create cut short leaves (the agent died during the RPC, so the shim cancelled
    /// `runc create` half-way): a runc state dir without state.json, which `runc delete`
    /// cannot clean, and the container's empty cgroups.
    fn remove_half_created(&self, m: &ContainerMeta) {
        let state = Path::new("/run/containerd/runc")
            .join(NAMESPACE)
            .join(&m.id);
        if state.is_dir() && !state.join("state.json").exists() {
            if let Err(e) = std::fs::remove_dir_all(&state) {
                tracing::warn!(container = %m.id, dir = %state.display(), error = %e, "runc state of a half-created container not removed");
            }
        }
        // A `runc init` left waiting in the container's cgroup belongs to no container: it
        // goes, then the (now empty) cgroups.
        let dirs = self.cgroups.dirs(&m.cgroup);
        for d in &dirs {
            for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        // runc made the container but no shim took the task: the shim's Create was cut short
        // (its agent, the FIFOs' reader, killed while runc ran) or the shim died. `shim
        // delete` removes runc's container and the rootfs mount, as for a dead shim's.
        if state.join("state.json").exists() {
            let b = self.bundle(&m.id);
            if let Err(e) = process::delete(&self.cfg.shim_binary, &b, &m.id, &self.events.address)
            {
                tracing::warn!(container = %m.id, error = %e, "runc container of a half-created container not deleted");
            }
        }
        for d in &dirs {
            // The killed processes leave the cgroup as they are reaped: retry briefly.
            for _ in 0..50 {
                match std::fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => break,
                }
            }
        }
    }

    /// Removes a bundle without ever following a rootfs mount that is still there.
    fn remove_bundle(&self, id: &str) -> Result<()> {
        let b = self.bundle(id);
        let rootfs = b.join("rootfs");
        if is_mountpoint(&rootfs) {
            nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| io_err(id, "unmount rootfs", e))?;
        }
        match std::fs::remove_dir(&rootfs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io_err(
                    id,
                    "remove bundle",
                    format!(
                        "{} is not empty or still mounted ({e}); left in place",
                        rootfs.display()
                    ),
                ))
            }
        }
        // Only a directory directly under containers/ (a symlink there is not followed).
        crate::paths::remove_dir_all_under(&self.dir.join("containers"), id)
            .map_err(|e| io_err(id, "remove bundle", e))?;
        self.forget(id);
        Ok(())
    }

    fn pod_context(&self, sb: &SandboxMeta) -> oci::PodContext {
        let dir = self.sandbox_dir(&sb.uid);
        let ns = dir.join("ns");
        oci::PodContext {
            pod_uid: sb.uid.clone(),
            hostname: (!sb.host_network).then(|| sb.hostname.clone()),
            netns: (!sb.host_network).then(|| sandbox::ns_file(&ns, "net")),
            utsns: (!sb.host_network).then(|| sandbox::ns_file(&ns, "uts")),
            ipcns: (!sb.host_ipc).then(|| sandbox::ns_file(&ns, "ipc")),
            pidns: sb.share_pid.then(|| sandbox::ns_file(&ns, "pid")),
            host_pid: sb.host_pid,
            hosts_file: Some(dir.join("hosts")),
            resolv_file: Some(dir.join("resolv.conf")),
            hostname_file: Some(dir.join("hostname")),
        }
    }

    /// The PID namespace file of `target`, a running container of pod `pod_uid` (checked to be
    /// that container's process, not one that took its pid).
    fn target_pidns(&self, pod_uid: &str, target: &str) -> Result<PathBuf> {
        let t = self.read_meta(target)?;
        let refuse = |why: &str| {
            err(
                target,
                "join PID namespace",
                ErrorKind::InvalidConfig,
                format!("target container {:?}: {why}", t.name),
            )
        };
        if t.pod_uid != pod_uid {
            return Err(refuse("not of this pod"));
        }
        let running = t.finished_ns.is_none() && !t.task_deleted;
        let proc = t
            .pid
            .filter(|_| running)
            .and_then(watch::Proc::of)
            .filter(|p| p.in_cgroup(target))
            .ok_or_else(|| refuse("not running"))?;
        Ok(PathBuf::from(format!("/proc/{}/ns/pid", proc.pid())))
    }

    fn sandbox_of(&self, sb: &SandboxMeta) -> Sandbox {
        Sandbox {
            uid: sb.uid.clone(),
            namespace: sb.namespace.clone(),
            name: sb.name.clone(),
            netns: (!sb.host_network)
                .then(|| sandbox::ns_file(&self.sandbox_dir(&sb.uid).join("ns"), "net")),
            ip: sb.ips.first().cloned(),
            ips: sb.ips.clone(),
            ready: sb.ready,
            created_at: from_ns(sb.created_ns),
        }
    }

    /// Creates a container ([`Runtime::create_container`]); a configuration it refuses is of
    /// [`Stage::Config`].
    fn create(&self, pod_uid: &str, config: &ContainerConfig) -> Result<String> {
        let sb = self.read_sandbox(pod_uid)?;
        let pod = format!("{}/{}", sb.namespace, sb.name);
        if config.log_path.as_os_str().is_empty() {
            return Err(err(
                &pod,
                "create container",
                ErrorKind::InvalidConfig,
                format!("container {:?}: no log path given", config.name),
            )
            .during(Stage::Config));
        }
        let image = self.rootfs.image_spec(&config.image)?;
        let id = new_id();
        let b = self.bundle(&id);
        std::fs::create_dir_all(b.join("rootfs")).map_err(|e| io_err(&id, "create bundle", e))?;
        let cgroup = Layout::container_path(pod_uid, &id);
        let meta = ContainerMeta {
            id: id.clone(),
            pod_uid: pod_uid.into(),
            name: config.name.clone(),
            attempt: config.attempt,
            image: config.image.clone(),
            image_id: image.id.clone(),
            labels: config.labels.clone(),
            log_path: config.log_path.clone(),
            cgroup: cgroup.clone(),
            created_ns: to_ns(SystemTime::now()),
            task_created: false,
            pid: None,
            started_ns: None,
            finished_ns: None,
            exit_code: None,
            reason: None,
            message: None,
            task_deleted: false,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            tty: config.tty,
            group: Some(self.cfg.grouping.group_of(pod_uid)),
        };
        let mut pod_ctx = self.pod_context(&sb);
        if let Some(target) = &config.pid_target {
            pod_ctx.pidns = Some(
                self.target_pidns(pod_uid, target)
                    .map_err(|e| e.during(Stage::Config))?,
            );
            pod_ctx.host_pid = false;
        }
        // A spare shim this container claimed: its directory goes once the create is settled.
        let mut claimed = None;
        let result = (|| -> Result<()> {
            self.write_meta(&meta)?;
            let mounts = self.rootfs.prepare_rootfs(&config.image, &id)?;
            let layers = oci::rootfs_layers(&mounts);
            let mut spec = oci::container_spec(&oci::SpecInput {
                container_id: &id,
                config,
                image: &image,
                pod: &pod_ctx,
                cgroups_path: &cgroup,
                layers: &layers,
            })?;
            // The shim this container joins (the spec names the pod; `node` puts all in one).
            spec["annotations"][oci::GROUP_ANNOTATION] = serde_json::json!(meta.group());
            let bytes =
                serde_json::to_vec_pretty(&spec).map_err(|e| io_err(&id, "write spec", e))?;
            // The spec carries env values from Secrets: root only.
            crate::paths::write_private(&b.join("config.json"), &bytes)
                .map_err(|e| io_err(&id, "write spec", e))?;
            let fifos: &[&str] = if config.stdin {
                &["stdin", "stdout", "stderr"]
            } else {
                &["stdout", "stderr"]
            };
            for f in fifos {
                nix::unistd::mkfifo(&b.join(f), nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| io_err(&id, "mkfifo", e))?;
            }
            // The reader must exist before Create: the shim's open for writing waits for it.
            self.start_copier(&meta, false).map_err(|e| {
                io_err(
                    &id,
                    "log copier",
                    format!("{}: {e}", meta.log_path.display()),
                )
            })?;
            let lock = self.group_lock(meta.group());
            {
                let _g = lock.tasks.read().unwrap_or_else(|p| p.into_inner());
                let pid = self.create_task(&meta, &mounts, &mut claimed)?;
                self.update_meta(&id, |m| {
                    m.task_created = true;
                    m.pid = Some(pid);
                })?;
            }
            Ok(())
        })();
        let r = match result {
            Ok(()) => {
                tracing::info!(pod = %pod, container = %config.name, id = %id, "container created");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(pod = %pod, container = %config.name, error = %e, "create failed");
                self.abandon(&id);
                Err(e)
            }
        };
        if let Some(s) = claimed {
            self.spares.release(s);
            if r.is_err() {
                self.spares.refill();
            }
        }
        r
    }

    /// Starts a created container ([`Runtime::start_container`]).
    fn start(&self, id: &str) -> Result<()> {
        let m = self.read_meta(id)?;
        if !m.task_created || m.task_deleted {
            return Err(err(
                id,
                "start",
                ErrorKind::InvalidConfig,
                "the container has no task to start (create it again)",
            ));
        }
        let r = self
            .rpc(
                id,
                &pb::StartRequest {
                    id: id.into(),
                    ..Default::default()
                },
                RPC_SLOW,
            )
            .map_err(|e| rpc_err(id, "start", e))?;
        self.update_meta(id, |m| {
            m.started_ns = Some(to_ns(SystemTime::now()));
            m.pid = Some(r.pid);
        })?;
        tracing::info!(container = %id, pod = %m.pod_uid, name = %m.name, pid = r.pid, "container started");
        Ok(())
    }

    /// Undoes a failed create: the task, the rootfs layer and the bundle.
    fn abandon(&self, id: &str) {
        if let Ok(m) = self.read_meta(id) {
            if m.task_created {
                let _ = self.delete_task(&m);
            } else if self.address(id).is_some() {
                // The shim started but Create failed: let it go if it serves nobody else.
                self.shutdown_idle_shim(&m);
                let _ = self.update_meta(id, |m| m.task_deleted = true);
            }
        }
        self.finish_copier(id);
        if let Err(e) = self.remove_bundle(id) {
            tracing::warn!(container = %id, error = %e, "bundle left after a failed create");
        }
        if let Err(e) = self.rootfs.release_rootfs(id) {
            tracing::warn!(container = %id, error = %e, "rootfs left after a failed create");
        }
    }

    /// The containers (of one pod, or all), each brought up to date: from memory and /proc
    /// when that tells (exited, or running and watched), else by asking its shim.
    fn list(&self, pod_uid: Option<&str>) -> Vec<ContainerStatus> {
        let mut out = Vec::new();
        // A hung shim costs one timeout per listing, not one per container.
        let mut slow: HashSet<String> = HashSet::new();
        let metas = self.metas_where(|m| pod_uid.is_none_or(|u| m.pod_uid == u));
        for m in metas {
            if let Some(state) = self.known_state(&m) {
                out.push(self.status_of(m, state));
                continue;
            }
            let address = self.address(&m.id);
            if address.as_ref().is_some_and(|a| slow.contains(a)) {
                out.push(self.status_of(m, ContainerState::Unknown));
                continue;
            }
            let id = m.id.clone();
            match self.ask_state(m.clone()) {
                Ok((m, ContainerState::Unknown)) => {
                    if let Some(a) = address {
                        slow.insert(a);
                    }
                    out.push(self.status_of(m, ContainerState::Unknown));
                }
                Ok((m, state)) => out.push(self.status_of(m, state)),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "status unknown");
                    out.push(self.status_of(m, ContainerState::Unknown));
                }
            }
        }
        out
    }

    fn stop_pod_containers(&self, pod_uid: &str, grace: Duration) -> Result<()> {
        let metas = self.metas_where(|m| m.pod_uid == pod_uid);
        // In parallel: each gets the whole grace period, as the kubelet gives it.
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let hs: Vec<_> = metas
                .iter()
                .map(|m| s.spawn(move || self.stop_container(&m.id, grace)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(err(
                            pod_uid,
                            "stop",
                            ErrorKind::Other,
                            "stop thread panicked",
                        ))
                    })
                })
                .collect()
        });
        for r in results {
            match r {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for m in metas {
            if let Ok(m) = self.read_meta(&m.id) {
                self.delete_task(&m)?;
            }
        }
        Ok(())
    }
}

impl Runtime for ShimRuntime {
    fn version(&self) -> Result<String> {
        let first_line = |bin: &str, arg: &str| -> String {
            std::process::Command::new(bin)
                .arg(arg)
                .stdin(std::process::Stdio::null())
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .map(|l| l.trim().to_string())
                })
                .unwrap_or_else(|| format!("{bin} (version unknown)"))
        };
        Ok(format!(
            "shim-v2 ({}; {})",
            first_line(&self.cfg.shim_binary, "-v"),
            first_line(&self.cfg.runtime_binary, "--version")
        ))
    }

    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<Sandbox> {
        let uid = config.uid.as_str();
        let pod = format!("{}/{}", config.namespace, config.name);
        check_name(uid, "pod uid")?;
        let _g = self.lock();
        let dir = self.sandbox_dir(uid);
        let existing: Option<SandboxMeta> = store::read_json(&dir.join("meta.json")).ok();
        let recorded = existing.as_ref().and_then(|m| serde_json::to_value(m).ok());
        let boot_id = boot_id();
        // A sandbox of an older agent has no boot id: unknown, not a reboot.
        let rebooted = existing
            .as_ref()
            .is_some_and(|m| !m.boot_id.is_empty() && m.boot_id != boot_id);
        let mut meta = existing.unwrap_or_else(|| SandboxMeta {
            uid: uid.into(),
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            hostname: config.hostname.clone(),
            host_network: config.host_network,
            host_pid: config.host_pid,
            host_ipc: config.host_ipc,
            share_pid: config.share_process_namespace && !config.host_pid,
            labels: config.labels.clone(),
            created_ns: to_ns(SystemTime::now()),
            ready: true,
            boot_id: boot_id.clone(),
            cni_network: None,
            ips: Vec::new(),
        });
        let set = sandbox::NsSet {
            net: !meta.host_network,
            uts: !meta.host_network,
            ipc: !meta.host_ipc,
        };
        let mut remade = sandbox::create(&dir.join("ns"), set, &meta.hostname)
            .map_err(|e| err(&pod, "sandbox namespaces", ErrorKind::Other, e))?;
        if meta.share_pid {
            remade |= sandbox::create_pid(&dir.join("ns"))
                .map_err(|e| err(&pod, "sandbox PID namespace", ErrorKind::Other, e))?;
        }
        if rebooted || remade {
            // The namespaces of an existing sandbox were gone (a reboot, or someone unmounted
            // them): it is a new sandbox, and its new creation time tells the pod worker so
            // (init containers run again in it, as after the kubelet makes a new sandbox).
            meta.created_ns = to_ns(SystemTime::now());
            meta.boot_id = boot_id;
        } else if meta.boot_id.is_empty() {
            meta.boot_id = boot_id;
        }
        for (file, text) in [
            ("hosts", config.hosts.clone()),
            ("resolv.conf", config.resolv_conf.clone()),
            ("hostname", format!("{}\n", meta.hostname)),
        ] {
            std::fs::write(dir.join(file), text)
                .map_err(|e| io_err(&pod, "write sandbox files", e))?;
        }
        self.cgroups
            .create_pod(uid)
            .map_err(|e| io_err(&pod, "pod cgroup", e))?;
        if let Some(pid) = meta
            .share_pid
            .then(|| super::pidns::holder(&dir.join("ns")))
            .flatten()
        {
            // In the pod's cgroup (a leaf of its own), out of the agent's: a restart of the
            // agent's service must not kill it, and with it the pod's processes.
            let cg = super::cgroups::Layout::container_path(uid, "pidns");
            if let Err(e) = self.cgroups.move_process(&cg, pid as u32) {
                tracing::warn!(pod = %pod, error = %e, "PID namespace holder not moved to the pod's cgroup");
            }
        }
        let max = u64::try_from(self.cfg.pod_max_pids).ok().filter(|n| *n > 0);
        self.cgroups
            .set_pod_pids_max(uid, max)
            .map_err(|e| io_err(&pod, "pod pids limit", e))?;
        let meta = SandboxMeta {
            ready: true,
            ..meta
        };
        // Unchanged (a sync of a running pod): not written again, so a full disk does not
        // fail the sandbox of a pod that runs.
        if recorded != serde_json::to_value(&meta).ok() {
            store::write_json(&dir.join("meta.json"), &meta)
                .map_err(|e| io_err(&pod, "save sandbox", e))?;
        }
        drop(_g);
        // Outside the state lock: plugins take their time (serialised per pod by CNI).
        let meta = self.attach_network(config, meta, rebooted || remade)?;
        tracing::info!(pod = %pod, uid, ip = ?meta.ips.first(), "sandbox ready");
        Ok(self.sandbox_of(&meta))
    }

    fn stop_pod_sandbox(&self, pod_uid: &str, grace: Duration) -> Result<()> {
        check_name(pod_uid, "pod uid")?;
        self.stop_pod_containers(pod_uid, grace)?;
        let _g = self.lock();
        let path = self.sandbox_dir(pod_uid).join("meta.json");
        if let Ok(mut sb) = store::read_json::<SandboxMeta>(&path) {
            sb.ready = false;
            match crate::reserve::retry_when_full(
                || store::write_json(&path, &sb),
                |e| crate::reserve::is_no_space(e),
            ) {
                Ok(()) => {}
                // The pod is stopped all the same; the record only says it was ready.
                Err(e) if crate::reserve::is_no_space(&e) => {
                    tracing::warn!(pod = pod_uid, error = %e, "sandbox record not updated: no space left");
                }
                Err(e) => return Err(io_err(pod_uid, "save sandbox", e)),
            }
        }
        Ok(())
    }

    fn remove_pod_sandbox(&self, pod_uid: &str) -> Result<()> {
        check_name(pod_uid, "pod uid")?;
        self.stop_pod_containers(pod_uid, Duration::ZERO)?;
        for m in self.metas_where(|m| m.pod_uid == pod_uid) {
            self.remove_container(&m.id)?;
        }
        if self.cfg.grouping == ShimGrouping::Pod {
            self.group_locks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(pod_uid);
        }
        self.detach_network(pod_uid)?;
        let dir = self.sandbox_dir(pod_uid);
        sandbox::remove(&dir.join("ns"))
            .map_err(|e| err(pod_uid, "remove sandbox", ErrorKind::Other, e))?;
        if let Err(e) = self.cgroups.remove_pod(pod_uid) {
            tracing::warn!(pod = pod_uid, error = %e, "pod cgroup not removed");
        }
        crate::paths::remove_dir_all_under(&self.dir.join("sandboxes"), pod_uid)
            .map_err(|e| io_err(pod_uid, "remove sandbox", e))
    }

    fn list_pod_sandboxes(&self) -> Result<Vec<Sandbox>> {
        let rd = std::fs::read_dir(self.dir.join("sandboxes"))
            .map_err(|e| io_err("sandboxes", "list", e))?;
        Ok(rd
            .flatten()
            .filter_map(|e| store::read_json::<SandboxMeta>(&e.path().join("meta.json")).ok())
            .map(|sb| self.sandbox_of(&sb))
            .collect())
    }

    fn create_container(&self, pod_uid: &str, config: &ContainerConfig) -> Result<String> {
        self.create(pod_uid, config)
            .map_err(|e| e.during(Stage::Create))
    }

    fn start_container(&self, id: &str) -> Result<()> {
        let r = self.start(id).map_err(|e| e.during(Stage::Start));
        // After a start, not during the Create a spare was claimed for (see spare::Spares::take).
        self.spares.refill();
        r
    }

    fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let (m, state) = self.refresh(id)?;
        if state == ContainerState::Exited {
            return Ok(());
        }
        match self.kill(id, "", libc::SIGTERM as u32) {
            // No shim to ask (its start was cut short, or it died since): `shim delete`
            // removes the container, and the record says so.
            Err(e) if e.kind == ErrorKind::ShimDead => {
                self.shim_died(&m, &e.message)?;
                return Ok(());
            }
            r => r?,
        }
        let waited = match self.wait(id, "", grace.max(Duration::from_millis(1))) {
            Ok(w) => Some(w),
            Err(e) if is_timeout(&e) => None,
            Err(e @ (RpcError::Disconnected(_) | RpcError::Status(ttrpc::Code::NOT_FOUND, _))) => {
                self.shim_died(&m, &e.to_string())?;
                return Ok(());
            }
            Err(e) => return Err(rpc_err(id, "stop", e)),
        };
        let w = match waited {
            Some(w) => w,
            None => {
                tracing::info!(container = %id, pod = %m.pod_uid, ?grace, "grace period over; SIGKILL");
                self.kill(id, "", libc::SIGKILL as u32)?;
                self.wait(id, "", KILL_WAIT)
                    .map_err(|e| rpc_err(id, "stop (after SIGKILL)", e))?
            }
        };
        self.record_exit(
            &m,
            w.exit_status as i32,
            w.exited_at.as_ref().and_then(timestamp),
        )?;
        Ok(())
    }

    fn remove_container(&self, id: &str) -> Result<()> {
        let m = match self.read_meta(id) {
            Ok(m) => m,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !m.task_deleted && m.task_created {
            let (_, state) = self.refresh(id)?;
            if state != ContainerState::Exited {
                self.stop_container(id, Duration::ZERO)?;
            }
            let m = self.read_meta(id)?;
            self.delete_task(&m)?;
        }
        if !m.task_created {
            self.remove_half_created(&m);
        }
        self.finish_copier(id);
        self.remove_bundle(id)?;
        self.rootfs.release_rootfs(id)?;
        self.oom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        tracing::info!(container = %id, pod = %m.pod_uid, name = %m.name, "container removed");
        Ok(())
    }

    fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let (m, state) = self.refresh(id)?;
        Ok(self.status_of(m, state))
    }

    fn list_containers(&self) -> Result<Vec<ContainerStatus>> {
        Ok(self.list(None))
    }

    fn list_pod_containers(&self, pod_uid: &str) -> Result<Vec<ContainerStatus>> {
        Ok(self.list(Some(pod_uid)))
    }

    fn exec_sync(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
        self.exec(id, cmd, timeout)
    }

    fn exec_start(&self, id: &str, spec: &ExecSpec) -> Result<ExecIo> {
        ShimRuntime::exec_start(self, id, spec)
    }

    fn exec_resize(&self, id: &str, exec_id: &str, width: u16, height: u16) -> Result<()> {
        ShimRuntime::exec_resize(self, id, exec_id, width, height)
    }

    fn attach(&self, id: &str) -> Result<AttachIo> {
        check_name(id, "container id")?;
        let m = self.read_meta(id)?;
        let output = self
            .copiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(Copier::tap)
            .ok_or_else(|| {
                err(
                    id,
                    "attach",
                    ErrorKind::NotFound,
                    "the container is not running",
                )
            })?;
        let stdin = if m.stdin {
            Some(
                exec::attach_stdin(&self.bundle(id).join("stdin"))
                    .map_err(|e| io_err(id, "attach stdin", e))?,
            )
        } else {
            None
        };
        Ok(AttachIo {
            stdin,
            output,
            tty: m.tty,
            stdin_once: m.stdin_once,
        })
    }

    fn exec_close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        ShimRuntime::exec_close_stdin(self, id, exec_id)
    }

    fn exec_wait(&self, id: &str, exec_id: &str, timeout: Duration) -> Result<Option<i32>> {
        ShimRuntime::exec_wait(self, id, exec_id, timeout)
    }

    fn exec_remove(&self, id: &str, exec_id: &str) -> Result<()> {
        ShimRuntime::exec_remove(self, id, exec_id)
    }

    fn exit_events(&self) -> async_channel::Receiver<ExitEvent> {
        self.exit_rx.clone()
    }
}

impl Drop for ShimRuntime {
    fn drop(&mut self) {
        // Containers keep running; copiers end with their FIFOs or the process.
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
