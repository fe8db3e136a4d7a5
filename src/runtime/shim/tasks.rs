//! Talking to shims about tasks: the RPCs with their timeouts, starting a pod's shim and
//! letting it go, and turning what a shim says (or its death) into a container's state.

use super::calls::TaskRpc;
use super::client::{RpcError, TaskClient};
use super::proto::{options, shim as pb, task as pbtask};
use super::spare::Spare;
use super::store::{to_ns, ContainerMeta};
use super::{
    err, io_err, is_mountpoint, is_timeout, process, rpc_err, timestamp, watch, ShimRuntime,
};
use super::{RPC_QUICK, RPC_SLOW};
use crate::runtime::cgroups::Layout;
use crate::runtime::{ContainerState, ErrorKind, ExitEvent, Result};
use protobuf::Message;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The state of a task as the shim reports it.
pub(super) struct TaskState {
    status: pbtask::Status,
    exit_status: u32,
    exited_at: Option<SystemTime>,
}

impl ShimRuntime {
    /// The client of the shim at `address`. The connect runs outside the clients' lock: a
    /// shim slow to accept must hold up only the calls to itself.
    pub(super) fn client(&self, address: &str) -> std::result::Result<Arc<TaskClient>, RpcError> {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
        {
            return Ok(c.clone());
        }
        let c = Arc::new(TaskClient::connect(address, RPC_QUICK)?);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        Ok(clients.entry(address.to_string()).or_insert(c).clone())
    }

    pub(super) fn forget_client(&self, address: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address);
    }

    /// Calls the task RPC of `req` on container `id`'s shim; a broken cached connection is
    /// retried once on a fresh one. A shim that has become
    /// [unresponsive](TaskClient::unresponsive) is killed here and the call answers
    /// `Disconnected`, so the caller cleans up as for any dead shim (`shim delete`, the
    /// container reported exited, the pod worker restarts it).
    pub(super) fn rpc<R: TaskRpc>(
        &self,
        id: &str,
        req: &R,
        timeout: Duration,
    ) -> std::result::Result<R::Response, RpcError> {
        let address = self
            .address(id)
            .ok_or_else(|| RpcError::Disconnected("no shim address in the bundle".into()))?;
        let began = Instant::now();
        let (c, r) = match self.client(&address) {
            Ok(c) => {
                let r = match c.call(req, timeout) {
                    Err(RpcError::Disconnected(_)) => {
                        self.forget_client(&address);
                        self.client(&address)?.call(req, timeout)
                    }
                    r => r,
                };
                (c, r)
            }
            // Not even connected in time: counted against the shim as a call would be.
            Err(RpcError::Timeout) => {
                let c = self.unconnected(&address);
                let r = Err(RpcError::Timeout);
                c.note(&r, began);
                (c, r)
            }
            Err(e) => return Err(e),
        };
        match r {
            Err(e) if is_timeout(&e) && c.unresponsive() => {
                self.kill_unresponsive_shim(&address);
                Err(RpcError::Disconnected(format!(
                    "the shim stopped answering ({e}) and was killed"
                )))
            }
            r => r,
        }
    }

    /// A client for a shim that did not even accept the connection in time, to count
    /// strikes on (its calls time out the same way).
    fn unconnected(&self, address: &str) -> Arc<TaskClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(address.to_string())
            .or_insert_with(|| Arc::new(TaskClient::unconnected(address)))
            .clone()
    }

    /// SIGKILLs the shim serving `address`: found by the `shim.pid` its start wrote in a
    /// bundle it serves, or by a shim process whose working directory is such a bundle
    /// (checked to run the shim binary either way). Its containers' processes are left to
    /// the dead-shim cleanup (`shim delete`).
    pub(super) fn kill_unresponsive_shim(&self, address: &str) {
        self.forget_client(address);
        let bundles: Vec<std::path::PathBuf> = self
            .container_metas()
            .iter()
            .filter(|m| self.address(&m.id).as_deref() == Some(address))
            .map(|m| self.bundle(&m.id))
            .collect();
        let mut pids: Vec<u32> = bundles
            .iter()
            .filter_map(|b| std::fs::read_to_string(b.join("shim.pid")).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| bundles.contains(&cwd))
                {
                    pids.push(pid);
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            if !watch::Proc::of(pid).is_some_and(|p| p.runs(&self.cfg.shim_binary)) {
                continue;
            }
            tracing::warn!(shim = %address, pid, "shim unresponsive: killed, its containers are cleaned up as a dead shim's");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            // Gone (or a zombie) within moments: SIGKILL works on a stopped process too.
            let deadline = Instant::now() + Duration::from_secs(2);
            while watch::Proc::of(pid).is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub(super) fn state(&self, id: &str) -> std::result::Result<TaskState, RpcError> {
        let r = self.rpc(
            id,
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

    /// Kills a process (`exec_id` empty: the container's init); NOT_FOUND (gone) is success.
    pub(super) fn kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let r = self.rpc(
            id,
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

    pub(super) fn wait(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> std::result::Result<pb::WaitResponse, RpcError> {
        // A Wait lasts up to a grace period or an exec's timeout: outside the pool's bound,
        // so waits queue neither short work nor each other (src/pool.rs).
        let _long = crate::pool::LongWait::begin();
        self.rpc(
            id,
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
    pub(super) fn delete_task(&self, m: &ContainerMeta) -> Result<ContainerMeta> {
        if !m.task_created || m.task_deleted {
            return Ok(m.clone());
        }
        let r = self.rpc(
            &m.id,
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

    /// Shuts the shim of `m` down when no other container of its shim group (its pod, or
    /// the node) has a task in it.
    pub(super) fn shutdown_idle_shim(&self, m: &ContainerMeta) {
        let lock = self.group_lock(m.group());
        let _g = lock.tasks.write().unwrap_or_else(|p| p.into_inner());
        let others = self.container_metas().into_iter().any(|o| {
            o.group() == m.group()
                    && o.id != m.id
                    && o.task_created
                    && !o.task_deleted
                    // A record from before a power cut may name a task this shim never had
                    // (or a dead shim's): only a task the shim answers for keeps it running.
                    && !matches!(
                        self.state(&o.id),
                        Err(RpcError::Disconnected(_) | RpcError::Status(ttrpc::Code::NOT_FOUND, _))
                    )
        });
        if !others {
            let r = self.rpc(
                &m.id,
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

    /// The shim a new container's task goes to, its address written in the bundle: the shim
    /// of its group serving another container already, else a spare claimed for the group
    /// (left in `claimed`), else the one `shim start` starts (or joins) for the group.
    fn shim_for(
        &self,
        meta: &ContainerMeta,
        claimed: &mut Option<Spare>,
    ) -> Result<(String, &'static str)> {
        let id = meta.id.as_str();
        let addr_file = self.bundle(id).join("address");
        {
            let lock = self.group_lock(meta.group());
            let _j = lock.join.lock().unwrap_or_else(|p| p.into_inner());
            let found = match self.group_shim(meta) {
                Some(a) => Some((a, "group")),
                None => self.live_spare().map(|s| {
                    let a = s.address.clone();
                    *claimed = Some(s);
                    (a, "spare")
                }),
            };
            if let Some((address, how)) = found {
                std::fs::write(&addr_file, &address).map_err(|e| io_err(id, "write address", e))?;
                return Ok((address, how));
            }
        }
        let address = process::start(
            &self.cfg.shim_binary,
            &self.bundle(id),
            id,
            &self.events.address,
        )
        .map_err(|e| err(id, "shim start", ErrorKind::Other, e))?;
        if self.address(id).as_deref() != Some(address.as_str()) {
            std::fs::write(&addr_file, &address).map_err(|e| io_err(id, "write address", e))?;
        }
        Ok((address, "started"))
    }

    /// The spare shim, if one waits and still answers; a dead one (killed while idle) is let
    /// go and the container's shim started as without a spare.
    fn live_spare(&self) -> Option<Spare> {
        let spare = self.spares.take()?;
        let answers = self.client(&spare.address).and_then(|c| {
            c.call(
                &pb::ConnectRequest {
                    id: spare.id().to_string(),
                    ..Default::default()
                },
                RPC_QUICK,
            )
        });
        match answers {
            Ok(_) => Some(spare),
            Err(e) => {
                tracing::warn!(shim = %spare.address, error = %e, "spare shim dead; starting a shim");
                self.forget_client(&spare.address);
                self.spares.discard(spare);
                self.spares.refill();
                None
            }
        }
    }

    /// The address of a live shim that serves (or is about to serve) another container of
    /// `meta`'s group: the one a second container of a pod joins without a `shim start`.
    fn group_shim(&self, meta: &ContainerMeta) -> Option<String> {
        let others =
            self.metas_where(|o| o.group() == meta.group() && o.id != meta.id && !o.task_deleted);
        let mut asked = std::collections::HashSet::new();
        for o in others {
            let Some(address) = self.address(&o.id) else {
                continue;
            };
            if !asked.insert(address.clone()) {
                continue;
            }
            let req = pb::ConnectRequest {
                id: o.id.clone(),
                ..Default::default()
            };
            if self
                .client(&address)
                .and_then(|c| c.call(&req, RPC_QUICK))
                .is_ok()
            {
                return Some(address);
            }
        }
        None
    }

    /// Creates the task of a prepared bundle: finds its shim ([`Self::shim_for`]), then
    /// Create. A spare shim claimed on the way is left in `claimed`.
    pub(super) fn create_task(
        &self,
        meta: &ContainerMeta,
        rootfs: &[crate::runtime::RootfsMount],
        claimed: &mut Option<Spare>,
    ) -> Result<u32> {
        let id = meta.id.as_str();
        let b = self.bundle(id);
        let t0 = Instant::now();
        let (_address, shim) = self.shim_for(meta, claimed)?;
        let shim_start = t0.elapsed();
        self.move_shim(id);
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
                .map(|m| super::proto::mount::Mount {
                    type_: m.kind.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                    ..Default::default()
                })
                .collect(),
            // A container with stdin gets a FIFO the shim keeps open (attach writes to it);
            // with a terminal, stdout carries the terminal's output.
            stdin: if meta.stdin {
                b.join("stdin").to_string_lossy().into()
            } else {
                String::new()
            },
            terminal: meta.tty,
            stdout: b.join("stdout").to_string_lossy().into(),
            stderr: b.join("stderr").to_string_lossy().into(),
            options: protobuf::MessageField::some(any),
            ..Default::default()
        };
        let r = self
            .rpc(id, &req, RPC_SLOW)
            .map_err(|e| rpc_err(id, "create", e))?;
        tracing::debug!(container = %id, shim, ?shim_start, create = ?(t0.elapsed() - shim_start), "task created");
        Ok(r.pid)
    }

    /// Connect: the pids of the shim serving `id` and of the task's init.
    fn connect(&self, id: &str) -> std::result::Result<pb::ConnectResponse, RpcError> {
        self.rpc(
            id,
            &pb::ConnectRequest {
                id: id.into(),
                ..Default::default()
            },
            RPC_QUICK,
        )
    }

    /// Moves the shim serving `id` into the shims' cgroup (see [`Layout::SHIMS`]) and writes
    /// its pid to the bundle's `shim.pid` (the runc v2 shim writes none; a shim shared by
    /// several containers must be found by [`Self::kill_unresponsive_shim`] after the bundle
    /// it started in is gone).
    pub(super) fn move_shim(&self, id: &str) {
        match self.connect(id) {
            Ok(c) if c.shim_pid > 0 => {
                let pid_file = self.bundle(id).join("shim.pid");
                if let Err(e) = std::fs::write(&pid_file, c.shim_pid.to_string()) {
                    tracing::warn!(container = %id, shim_pid = c.shim_pid, error = %e, "shim.pid not written");
                }
                if let Err(e) = self.cgroups.move_process(Layout::SHIMS, c.shim_pid) {
                    tracing::warn!(container = %id, shim_pid = c.shim_pid, error = %e, "shim left in the agent's cgroup");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(container = %id, error = %e, "Connect"),
        }
    }

    /// Records an exit seen through State/Wait/Delete: the code and the kubelet's reason.
    pub(super) fn record_exit(
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
        self.unwatch(&m.id);
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
    pub(super) fn shim_died(&self, m: &ContainerMeta, why: &str) -> Result<ContainerMeta> {
        tracing::warn!(container = %m.id, pod = %m.pod_uid, why, "shim died; cleaning up");
        self.unwatch(&m.id);
        let b = self.bundle(&m.id);
        if let Err(e) = process::delete(&self.cfg.shim_binary, &b, &m.id, &self.events.address) {
            tracing::warn!(container = %m.id, error = %e, "shim delete failed");
        }
        let rootfs = b.join("rootfs");
        if is_mountpoint(&rootfs) {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        let mut alive = false;
        if let Some(a) = self.address(&m.id) {
            self.forget_client(&a);
            // A dead shim leaves its socket behind; a live one (it lost only this task) keeps it.
            if TaskClient::connect(&a, Duration::from_secs(1)).is_err() {
                let _ = std::fs::remove_file(a.trim_start_matches("unix://"));
            } else {
                alive = true;
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
        if alive {
            // The shim lives on without this task (the agent died between its Kill and Delete,
            // say): when the pod has no other task there, it must not stay as an orphan.
            self.shutdown_idle_shim(&m);
        }
        Ok(m)
    }

    /// Brings a container's metadata up to date with its shim and returns it with its state.
    pub(super) fn refresh(&self, id: &str) -> Result<(ContainerMeta, ContainerState)> {
        let m = self.read_meta(id)?;
        match self.known_state(&m) {
            Some(state) => Ok((m, state)),
            None => self.ask_state(m),
        }
    }

    /// The state a record tells without the shim: exited once an exit is recorded, unknown
    /// before Create answered, running while its watched processes live; `None`: ask.
    pub(super) fn known_state(&self, m: &ContainerMeta) -> Option<ContainerState> {
        if m.finished_ns.is_some() || m.task_deleted {
            return Some(ContainerState::Exited);
        }
        if !m.task_created {
            return Some(ContainerState::Unknown);
        }
        self.watching(&m.id).then_some(ContainerState::Running)
    }

    /// Whether `id` is watched and its init process and shim both still live.
    fn watching(&self, id: &str) -> bool {
        self.watched.running(id)
    }

    /// Starts watching a task its shim just called running: Connect names its init and the
    /// shim's pid; each must be the process it claims (the init in the container's cgroup,
    /// the shim running the shim binary), else nothing is watched and the shim stays asked.
    fn watch(&self, id: &str) {
        let Ok(c) = self.connect(id) else { return };
        let init = watch::Proc::of(c.task_pid).filter(|p| p.in_cgroup(id));
        let shim = watch::Proc::of(c.shim_pid).filter(|p| p.runs(&self.cfg.shim_binary));
        if let (Some(init), Some(shim)) = (init, shim) {
            self.watched.add(id, init, shim);
        } else {
            tracing::debug!(container = %id, task_pid = c.task_pid, shim_pid = c.shim_pid, "task not watchable in /proc; its shim is asked each time");
        }
    }

    /// Stops watching `id` (it is stopping, or gone).
    pub(super) fn unwatch(&self, id: &str) {
        self.watched.remove(id);
    }

    /// Asks the shim for the state of a created task and records what it says.
    pub(super) fn ask_state(&self, m: ContainerMeta) -> Result<(ContainerMeta, ContainerState)> {
        let id = &m.id.clone();
        match self.state(id) {
            Ok(s) => match s.status {
                pbtask::Status::CREATED => Ok((m, ContainerState::Created)),
                pbtask::Status::RUNNING | pbtask::Status::PAUSED | pbtask::Status::PAUSING => {
                    self.watch(id);
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
}
