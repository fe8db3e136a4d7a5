//! The containerd shim v2 backend of [`Runtime`]: edged drives `containerd-shim-runc-v2` (or any
//! shim v2) over ttrpc itself, with no containerd daemon. One shim per pod (the runc shim
//! groups containers by the `io.containerd.runc.v2.group` annotation); the agent makes the
//! pod's namespaces, bundles, log copiers and keeps their state on disk so a restarted agent
//! adopts running containers.
//!
//! Layout under `<root>/runtime/`:
//! - `events.sock`: the events service shims publish to.
//! - `sandboxes/<pod uid>/`: `meta.json`, `ns/{net,ipc,uts}`, `hosts`, `resolv.conf`, `hostname`.
//! - `containers/<id>/`: the bundle (`config.json`, `rootfs/`, `address`, `log`), the
//!   `stdout`/`stderr` FIFOs and `meta.json`.

mod client;
mod events;
mod process;
pub mod proto;
mod store;

use self::client::{RpcError, TaskClient};
use self::proto::{options, shim as pb, task as pbtask};
use self::store::{from_ns, to_ns, ContainerMeta, SandboxMeta};
use super::cgroups::Layout;
use super::logs::{Copier, Rotation};
use super::{oci, sandbox};
use super::{
    ContainerConfig, ContainerState, ContainerStatus, ErrorKind, ExecResult, ExitEvent,
    PodSandboxConfig, Result, RootfsProvider, Runtime, RuntimeError, Sandbox,
};
use protobuf::Message;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub use self::process::NAMESPACE;

/// Timeout of quick RPCs (State, Kill, Connect).
const RPC_QUICK: Duration = Duration::from_secs(5);
/// Timeout of RPCs that run the OCI runtime (Create, Start, Delete, Exec).
const RPC_SLOW: Duration = Duration::from_secs(30);
/// How long a SIGKILLed process may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

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
}

impl Default for ShimConfig {
    fn default() -> Self {
        ShimConfig {
            root: PathBuf::from("/var/lib/edged"),
            shim_binary: "containerd-shim-runc-v2".into(),
            runtime_binary: "runc".into(),
            log_max_size: 10 << 20,
            log_max_files: 5,
        }
    }
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
    copiers: Mutex<HashMap<String, Copier>>,
    /// Serializes read-modify-write of metadata files and sandbox setup.
    meta_lock: Mutex<()>,
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
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
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
fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// The state of a task as the shim reports it.
struct TaskState {
    status: pbtask::Status,
    exit_status: u32,
    exited_at: Option<SystemTime>,
}

impl ShimRuntime {
    /// Opens (or creates) the backend's state under `<config.root>/runtime/`, serves the
    /// events socket, and adopts the containers a previous agent left: running ones keep
    /// running (their log copiers reopen the FIFOs), those whose shim died are cleaned and
    /// reported exited. `rootfs` gives images' specs and containers' root filesystems.
    pub fn new(config: ShimConfig, rootfs: Arc<dyn RootfsProvider>) -> Result<ShimRuntime> {
        let dir = config.root.join("runtime");
        for d in [dir.join("sandboxes"), dir.join("containers")] {
            std::fs::create_dir_all(&d)
                .map_err(|e| io_err(&d.display().to_string(), "init", format!("mkdir: {e}")))?;
        }
        let (exit_tx, exit_rx) = async_channel::unbounded();
        let oom = Arc::new(Mutex::new(HashSet::new()));
        let events =
            events::EventServer::start(&dir.join("events.sock"), exit_tx.clone(), oom.clone())
                .map_err(|e| err("events.sock", "init", ErrorKind::Other, e))?;
        let rt = ShimRuntime {
            cfg: config,
            dir,
            rootfs,
            cgroups: Layout::detect(),
            events,
            exit_tx,
            exit_rx,
            oom,
            clients: Mutex::new(HashMap::new()),
            copiers: Mutex::new(HashMap::new()),
            meta_lock: Mutex::new(()),
        };
        rt.adopt();
        Ok(rt)
    }

    /// Reattaches to what a previous agent left: log copiers for live tasks, and a State for
    /// each so dead shims are found and cleaned now.
    fn adopt(&self) {
        for m in self.container_metas() {
            if !m.task_created {
                // No Create runs at start: one cut short by the last agent's death left this.
                self.remove_half_created(&m);
            }
            if !m.task_created || m.task_deleted || m.finished_ns.is_some() {
                continue;
            }
            if let Err(e) = self.start_copier(&m, true) {
                tracing::warn!(container = %m.id, pod = %m.pod_uid, error = %e, "log copier not started");
            }
            match self.container_status(&m.id) {
                Ok(s) => {
                    tracing::info!(container = %m.id, pod = %m.pod_uid, state = ?s.state, "adopted container")
                }
                Err(e) => tracing::warn!(container = %m.id, error = %e, "adopt failed"),
            }
        }
    }

    fn sandbox_dir(&self, uid: &str) -> PathBuf {
        self.dir.join("sandboxes").join(uid)
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join("containers").join(id)
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
        store::read_json(&self.bundle(id).join("meta.json")).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Other
            };
            err(id, "container", kind, format!("no such container ({e})"))
        })
    }

    fn write_meta(&self, m: &ContainerMeta) -> Result<()> {
        store::write_json(&self.bundle(&m.id).join("meta.json"), m)
            .map_err(|e| io_err(&m.id, "save metadata", e))
    }

    /// Applies `f` to a container's metadata under the lock and saves it.
    fn update_meta(&self, id: &str, f: impl FnOnce(&mut ContainerMeta)) -> Result<ContainerMeta> {
        let _g = self.lock();
        let mut m = self.read_meta(id)?;
        f(&mut m);
        self.write_meta(&m)?;
        Ok(m)
    }

    fn container_metas(&self) -> Vec<ContainerMeta> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("containers")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().to_string();
                match self.read_meta(&id) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(container = %id, error = %e, "unreadable container metadata");
                        None
                    }
                }
            })
            .collect()
    }

    fn address(&self, id: &str) -> Option<String> {
        std::fs::read_to_string(self.bundle(id).join("address"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    fn client(&self, address: &str) -> std::result::Result<Arc<TaskClient>, RpcError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(address) {
            return Ok(c.clone());
        }
        let c = Arc::new(TaskClient::connect(address)?);
        clients.insert(address.to_string(), c.clone());
        Ok(c)
    }

    fn forget_client(&self, address: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address);
    }

    /// Calls a task RPC on container `id`'s shim; a broken cached connection is retried once
    /// on a fresh one.
    fn rpc<Req: Message, Resp: Message>(
        &self,
        id: &str,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> std::result::Result<Resp, RpcError> {
        let address = self
            .address(id)
            .ok_or_else(|| RpcError::Disconnected("no shim address in the bundle".into()))?;
        let c = self.client(&address)?;
        match c.call(method, req, timeout) {
            Err(RpcError::Disconnected(_)) => {
                self.forget_client(&address);
                self.client(&address)?.call(method, req, timeout)
            }
            r => r,
        }
    }

    fn state(&self, id: &str) -> std::result::Result<TaskState, RpcError> {
        let r: pb::StateResponse = self.rpc(
            id,
            "State",
            &pb::StateRequest {
                id: id.into(),
                ..Default::default()
            },
            RPC_QUICK,
        )?;
        Ok(TaskState {
            status: r.status.enum_value_or(pbtask::Status::UNKNOWN),
            exit_status: r.exit_status,
            exited_at: r.exited_at.as_ref().and_then(timestamp),
        })
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
            let deadline = Instant::now() + Duration::from_secs(2);
            while !c.finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if c.finished() {
                c.join();
            }
        }
    }

    /// Records an exit seen through State/Wait/Delete: the code and the kubelet's reason.
    fn record_exit(
        &self,
        m: &ContainerMeta,
        code: i32,
        at: Option<SystemTime>,
    ) -> Result<ContainerMeta> {
        let oom = self
            .oom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&m.id)
            || self.cgroups.oom_killed(&m.cgroup);
        let reason = if oom {
            "OOMKilled"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let at = at.unwrap_or_else(SystemTime::now);
        self.update_meta(&m.id, |m| {
            if m.finished_ns.is_none() {
                m.finished_ns = Some(to_ns(at));
                m.exit_code = Some(code);
                m.reason = Some(reason.into());
            }
        })
    }

    /// The shim of `m` is gone (or lost the task): clean its runc state and rootfs mount with
    /// `shim delete`, and report the container exited.
    fn shim_died(&self, m: &ContainerMeta, why: &str) -> Result<ContainerMeta> {
        tracing::warn!(container = %m.id, pod = %m.pod_uid, why, "shim died; cleaning up");
        let b = self.bundle(&m.id);
        if let Err(e) = process::delete(&self.cfg.shim_binary, &b, &m.id, &self.events.address) {
            tracing::warn!(container = %m.id, error = %e, "shim delete failed");
        }
        let rootfs = b.join("rootfs");
        if is_mountpoint(&rootfs) {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(a) = self.address(&m.id) {
            self.forget_client(&a);
            // A dead shim leaves its socket behind; a live one (it lost only this task) keeps it.
            if TaskClient::connect(&a).is_err() {
                let _ = std::fs::remove_file(a.trim_start_matches("unix://"));
            }
        }
        let now = SystemTime::now();
        let first = m.finished_ns.is_none();
        let m = self.update_meta(&m.id, |m| {
            m.task_deleted = true;
            if m.finished_ns.is_none() {
                m.finished_ns = Some(to_ns(now));
                m.exit_code = Some(m.exit_code.unwrap_or(137));
                m.reason = Some("ShimDied".into());
                m.message = Some(format!(
                    "the container's shim died ({why}); its process is gone"
                ));
            }
        })?;
        if first {
            let _ = self.exit_tx.try_send(ExitEvent {
                container_id: m.id.clone(),
                exit_code: m.exit_code.unwrap_or(137),
                at: now,
            });
        }
        self.finish_copier(&m.id);
        Ok(m)
    }

    /// Brings a container's metadata up to date with its shim and returns it with its state.
    fn refresh(&self, id: &str) -> Result<(ContainerMeta, ContainerState)> {
        let m = self.read_meta(id)?;
        if m.finished_ns.is_some() {
            return Ok((m, ContainerState::Exited));
        }
        if m.task_deleted {
            return Ok((m, ContainerState::Exited));
        }
        if !m.task_created {
            return Ok((m, ContainerState::Unknown));
        }
        match self.state(id) {
            Ok(s) => match s.status {
                pbtask::Status::CREATED => Ok((m, ContainerState::Created)),
                pbtask::Status::RUNNING | pbtask::Status::PAUSED | pbtask::Status::PAUSING => {
                    Ok((m, ContainerState::Running))
                }
                pbtask::Status::STOPPED => {
                    let m = self.record_exit(&m, s.exit_status as i32, s.exited_at)?;
                    Ok((m, ContainerState::Exited))
                }
                pbtask::Status::UNKNOWN => Ok((m, ContainerState::Unknown)),
            },
            Err(e) if is_timeout(&e) => {
                tracing::warn!(container = %id, error = %e, "shim slow to answer State");
                Ok((m, ContainerState::Unknown))
            }
            Err(e @ (RpcError::Disconnected(_) | RpcError::Status(ttrpc::Code::NOT_FOUND, _))) => {
                let m = self.shim_died(&m, &e.to_string())?;
                Ok((m, ContainerState::Exited))
            }
            Err(e) => Err(rpc_err(id, "state", e)),
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

    /// Kills a process (`exec_id` empty: the container's init); NOT_FOUND (gone) is success.
    fn kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let r: std::result::Result<protobuf::well_known_types::empty::Empty, _> = self.rpc(
            id,
            "Kill",
            &pb::KillRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                signal,
                all: false,
                ..Default::default()
            },
            RPC_QUICK,
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            // An exited init answers FAILED_PRECONDITION on some versions ("process already finished").
            Err(RpcError::Status(ttrpc::Code::FAILED_PRECONDITION, _)) => Ok(()),
            Err(e) => Err(rpc_err(id, "kill", e)),
        }
    }

    fn wait(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> std::result::Result<pb::WaitResponse, RpcError> {
        self.rpc(
            id,
            "Wait",
            &pb::WaitRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
            timeout,
        )
    }

    /// Deletes the task from its shim (records its exit) and, when it was the shim's last
    /// task, shuts the shim down.
    fn delete_task(&self, m: &ContainerMeta) -> Result<ContainerMeta> {
        if !m.task_created || m.task_deleted {
            return Ok(m.clone());
        }
        let r: std::result::Result<pb::DeleteResponse, _> = self.rpc(
            &m.id,
            "Delete",
            &pb::DeleteRequest {
                id: m.id.clone(),
                ..Default::default()
            },
            RPC_SLOW,
        );
        let m = match r {
            Ok(d) => {
                let m = self.record_exit(
                    m,
                    d.exit_status as i32,
                    d.exited_at.as_ref().and_then(timestamp),
                )?;
                self.update_meta(&m.id, |m| m.task_deleted = true)?
            }
            Err(e @ (RpcError::Disconnected(_) | RpcError::Status(ttrpc::Code::NOT_FOUND, _))) => {
                return self.shim_died(m, &e.to_string());
            }
            Err(e) => return Err(rpc_err(&m.id, "delete task", e)),
        };
        self.finish_copier(&m.id);
        self.shutdown_idle_shim(&m);
        Ok(m)
    }

    /// Shuts the shim of `m` down when no other container of its pod has a task in it.
    fn shutdown_idle_shim(&self, m: &ContainerMeta) {
        let others = self.container_metas().into_iter().any(|o| {
            o.pod_uid == m.pod_uid
                    && o.id != m.id
                    && o.task_created
                    && !o.task_deleted
                    // A record from before a power cut may name a task this shim never had
                    // (or a dead shim's): only a task the shim answers for keeps it running.
                    && !matches!(
                        self.state(&o.id),
                        Err(RpcError::Disconnected(_)
                            | RpcError::Status(ttrpc::Code::NOT_FOUND, _))
                    )
        });
        if !others {
            let r: std::result::Result<protobuf::well_known_types::empty::Empty, _> = self.rpc(
                &m.id,
                "Shutdown",
                &pb::ShutdownRequest {
                    id: m.id.clone(),
                    now: false,
                    ..Default::default()
                },
                RPC_QUICK,
            );
            // The shim exits while answering: a disconnect is the expected answer.
            if let Err(e) = r {
                tracing::debug!(container = %m.id, error = %e, "shim shutdown");
            }
            if let Some(a) = self.address(&m.id) {
                self.forget_client(&a);
            }
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
        // rmdir removes only empty cgroups: one with a live process stays.
        for d in self.cgroups.dirs(&m.cgroup) {
            let _ = std::fs::remove_dir(&d);
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
        match std::fs::remove_dir_all(&b) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(id, "remove bundle", e)),
        }
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
            host_pid: sb.host_pid,
            hosts_file: Some(dir.join("hosts")),
            resolv_file: Some(dir.join("resolv.conf")),
            hostname_file: Some(dir.join("hostname")),
        }
    }

    fn sandbox_of(&self, sb: &SandboxMeta) -> Sandbox {
        Sandbox {
            uid: sb.uid.clone(),
            namespace: sb.namespace.clone(),
            name: sb.name.clone(),
            netns: (!sb.host_network)
                .then(|| sandbox::ns_file(&self.sandbox_dir(&sb.uid).join("ns"), "net")),
            ip: None,
            ready: sb.ready,
            created_at: from_ns(sb.created_ns),
        }
    }

    /// Creates the task of a prepared bundle: starts or joins the pod's shim, then Create.
    fn create_task(&self, id: &str, rootfs: &[super::RootfsMount]) -> Result<u32> {
        let b = self.bundle(id);
        let t0 = Instant::now();
        let address = process::start(&self.cfg.shim_binary, &b, id, &self.events.address)
            .map_err(|e| err(id, "shim start", ErrorKind::Other, e))?;
        let shim_start = t0.elapsed();
        let addr_file = b.join("address");
        if self.address(id).as_deref() != Some(address.as_str()) {
            std::fs::write(&addr_file, &address).map_err(|e| io_err(id, "write address", e))?;
        }
        let opts = options::Options {
            binary_name: self.cfg.runtime_binary.clone(),
            ..Default::default()
        };
        let any = protobuf::well_known_types::any::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: opts.write_to_bytes().map_err(|e| io_err(id, "create", e))?,
            ..Default::default()
        };
        let req = pb::CreateTaskRequest {
            id: id.into(),
            bundle: b.to_string_lossy().into(),
            rootfs: rootfs
                .iter()
                .map(|m| proto::mount::Mount {
                    type_: m.kind.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                    ..Default::default()
                })
                .collect(),
            stdin: String::new(),
            stdout: b.join("stdout").to_string_lossy().into(),
            stderr: b.join("stderr").to_string_lossy().into(),
            options: protobuf::MessageField::some(any),
            ..Default::default()
        };
        let r: pb::CreateTaskResponse = self
            .rpc(id, "Create", &req, RPC_SLOW)
            .map_err(|e| rpc_err(id, "create", e))?;
        tracing::debug!(container = %id, ?shim_start, create = ?(t0.elapsed() - shim_start), "task created");
        Ok(r.pid)
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

    fn stop_pod_containers(&self, pod_uid: &str, grace: Duration) -> Result<()> {
        let metas: Vec<ContainerMeta> = self
            .container_metas()
            .into_iter()
            .filter(|m| m.pod_uid == pod_uid)
            .collect();
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
        let meta = existing.unwrap_or_else(|| SandboxMeta {
            uid: uid.into(),
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            hostname: config.hostname.clone(),
            host_network: config.host_network,
            host_pid: config.host_pid,
            host_ipc: config.host_ipc,
            labels: config.labels.clone(),
            created_ns: to_ns(SystemTime::now()),
            ready: true,
        });
        let set = sandbox::NsSet {
            net: !meta.host_network,
            uts: !meta.host_network,
            ipc: !meta.host_ipc,
        };
        sandbox::create(&dir.join("ns"), set, &meta.hostname)
            .map_err(|e| err(&pod, "sandbox namespaces", ErrorKind::Other, e))?;
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
        let meta = SandboxMeta {
            ready: true,
            ..meta
        };
        store::write_json(&dir.join("meta.json"), &meta)
            .map_err(|e| io_err(&pod, "save sandbox", e))?;
        tracing::info!(pod = %pod, uid, "sandbox ready");
        Ok(self.sandbox_of(&meta))
    }

    fn stop_pod_sandbox(&self, pod_uid: &str, grace: Duration) -> Result<()> {
        check_name(pod_uid, "pod uid")?;
        self.stop_pod_containers(pod_uid, grace)?;
        let _g = self.lock();
        let path = self.sandbox_dir(pod_uid).join("meta.json");
        if let Ok(mut sb) = store::read_json::<SandboxMeta>(&path) {
            sb.ready = false;
            store::write_json(&path, &sb).map_err(|e| io_err(pod_uid, "save sandbox", e))?;
        }
        Ok(())
    }

    fn remove_pod_sandbox(&self, pod_uid: &str) -> Result<()> {
        check_name(pod_uid, "pod uid")?;
        self.stop_pod_containers(pod_uid, Duration::ZERO)?;
        for m in self
            .container_metas()
            .into_iter()
            .filter(|m| m.pod_uid == pod_uid)
        {
            self.remove_container(&m.id)?;
        }
        let dir = self.sandbox_dir(pod_uid);
        sandbox::remove(&dir.join("ns"))
            .map_err(|e| err(pod_uid, "remove sandbox", ErrorKind::Other, e))?;
        if let Err(e) = self.cgroups.remove_pod(pod_uid) {
            tracing::warn!(pod = pod_uid, error = %e, "pod cgroup not removed");
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(pod_uid, "remove sandbox", e)),
        }
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
        let sb = self.read_sandbox(pod_uid)?;
        let pod = format!("{}/{}", sb.namespace, sb.name);
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
        };
        let result = (|| -> Result<()> {
            self.write_meta(&meta)?;
            let mounts = self.rootfs.prepare_rootfs(&config.image, &id)?;
            let layers = oci::rootfs_layers(&mounts);
            let spec = oci::container_spec(&oci::SpecInput {
                container_id: &id,
                config,
                image: &image,
                pod: &self.pod_context(&sb),
                cgroups_path: &cgroup,
                layers: &layers,
            })?;
            let bytes =
                serde_json::to_vec_pretty(&spec).map_err(|e| io_err(&id, "write spec", e))?;
            std::fs::write(b.join("config.json"), bytes)
                .map_err(|e| io_err(&id, "write spec", e))?;
            for f in ["stdout", "stderr"] {
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
            let pid = self.create_task(&id, &mounts)?;
            self.update_meta(&id, |m| {
                m.task_created = true;
                m.pid = Some(pid);
            })?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                tracing::info!(pod = %pod, container = %config.name, id = %id, "container created");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(pod = %pod, container = %config.name, error = %e, "create failed");
                self.abandon(&id);
                Err(e)
            }
        }
    }

    fn start_container(&self, id: &str) -> Result<()> {
        let m = self.read_meta(id)?;
        if !m.task_created || m.task_deleted {
            return Err(err(
                id,
                "start",
                ErrorKind::InvalidConfig,
                "the container has no task to start (create it again)",
            ));
        }
        let r: pb::StartResponse = self
            .rpc(
                id,
                "Start",
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

    fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let (m, state) = self.refresh(id)?;
        if state == ContainerState::Exited {
            return Ok(());
        }
        self.kill(id, "", libc::SIGTERM as u32)?;
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
        let mut out = Vec::new();
        // A hung shim costs one timeout per listing, not one per container.
        let mut slow: HashSet<String> = HashSet::new();
        for m in self.container_metas() {
            let address = self.address(&m.id);
            if address.as_ref().is_some_and(|a| slow.contains(a)) && m.finished_ns.is_none() {
                out.push(self.status_of(m, ContainerState::Unknown));
                continue;
            }
            match self.refresh(&m.id) {
                Ok((m, ContainerState::Unknown)) => {
                    if let Some(a) = address.filter(|_| m.task_created) {
                        slow.insert(a);
                    }
                    out.push(self.status_of(m, ContainerState::Unknown));
                }
                Ok((m, state)) => out.push(self.status_of(m, state)),
                Err(e) => {
                    tracing::warn!(container = %m.id, error = %e, "status unknown");
                    out.push(self.status_of(m, ContainerState::Unknown));
                }
            }
        }
        Ok(out)
    }

    fn exec_sync(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
        check_name(id, "container id")?;
        let b = self.bundle(id);
        let spec: serde_json::Value = std::fs::read(b.join("config.json"))
            .ok()
            .and_then(|s| serde_json::from_slice(&s).ok())
            .ok_or_else(|| {
                err(
                    id,
                    "exec",
                    ErrorKind::NotFound,
                    "no such container (no spec in its bundle)",
                )
            })?;
        let exec_id = format!("exec-{}", &new_id()[..12]);
        let out = b.join(format!("{exec_id}.out"));
        let errf = b.join(format!("{exec_id}.err"));
        for f in [&out, &errf] {
            std::fs::File::create(f).map_err(|e| io_err(id, "exec", e))?;
        }
        let cleanup = || {
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(&errf);
        };
        let process = oci::exec_process(&spec, cmd);
        let run = || -> Result<ExecResult> {
            let req = pb::ExecProcessRequest {
                id: id.into(),
                exec_id: exec_id.clone(),
                stdout: out.to_string_lossy().into(),
                stderr: errf.to_string_lossy().into(),
                spec: protobuf::MessageField::some(protobuf::well_known_types::any::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: serde_json::to_vec(&process).map_err(|e| io_err(id, "exec", e))?,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let _: protobuf::well_known_types::empty::Empty = self
                .rpc(id, "Exec", &req, RPC_SLOW)
                .map_err(|e| rpc_err(id, "exec", e))?;
            let started: std::result::Result<pb::StartResponse, _> = self.rpc(
                id,
                "Start",
                &pb::StartRequest {
                    id: id.into(),
                    exec_id: exec_id.clone(),
                    ..Default::default()
                },
                RPC_SLOW,
            );
            let delete = || {
                let _: std::result::Result<pb::DeleteResponse, _> = self.rpc(
                    id,
                    "Delete",
                    &pb::DeleteRequest {
                        id: id.into(),
                        exec_id: exec_id.clone(),
                        ..Default::default()
                    },
                    RPC_SLOW,
                );
            };
            if let Err(e) = started {
                delete();
                return Err(rpc_err(id, "exec start", e));
            }
            let w = match self.wait(id, &exec_id, timeout.max(Duration::from_millis(1))) {
                Ok(w) => w,
                Err(e) if is_timeout(&e) => {
                    let _ = self.kill(id, &exec_id, libc::SIGKILL as u32);
                    let _ = self.wait(id, &exec_id, KILL_WAIT);
                    delete();
                    return Err(err(
                        id,
                        "exec",
                        ErrorKind::Timeout,
                        format!("{cmd:?} did not finish in {timeout:?}; killed"),
                    ));
                }
                Err(e) => {
                    delete();
                    return Err(rpc_err(id, "exec wait", e));
                }
            };
            // Delete waits for the shim's output copy to finish.
            delete();
            Ok(ExecResult {
                exit_code: w.exit_status as i32,
                stdout: std::fs::read(&out).unwrap_or_default(),
                stderr: std::fs::read(&errf).unwrap_or_default(),
            })
        };
        let r = run();
        cleanup();
        r
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
