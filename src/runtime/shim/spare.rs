//! A shim spawned ahead (`--spare-shim`): one idle shim waits, serving and in the shims'
//! cgroup, so the next pod that needs a shim of its own claims it instead of paying for
//! `shim start` (a Go process that starts the daemon, another Go runtime to come up before the
//! first call). The next spare is started on a short-lived thread once the claiming
//! container has started.
//!
//! A spare lives in `<runtime>/spares/<id>/` (its working directory: `config.json`, `log`,
//! `address`, `shim.pid`). A claimed spare's directory goes once the container's Create has
//! been answered; from then the container's bundle names the shim (`address`, `shim.pid`)
//! and the shim ends as any pod's does, when its last task is deleted.
//!
//! Crash safety: a directory left by a killed agent is dealt with at the next start. Its shim
//! is asked to shut down, which the shim refuses while it serves a task (a spare claimed just
//! before the kill keeps its container); a spare nobody claimed exits. Then the directory
//! goes, with the socket of a shim that died. A spare's `start` dies with its agent, and a
//! spare shim nothing names (no directory, no bundle's `shim.pid`, no task) is killed.

use super::calls::TaskRpc;
use super::client::TaskClient;
use super::proto::shim as pb;
use super::{process, watch, RPC_QUICK};
use crate::runtime::cgroups::Layout;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An idle shim, serving at `address`, that a pod may claim.
#[derive(Debug)]
pub(super) struct Spare {
    /// The shim's ttrpc address.
    pub address: String,
    /// Its working directory under `<runtime>/spares/`, named by the shim's id.
    dir: PathBuf,
}

impl Spare {
    /// The id the shim was started with (`spare-<hex>`).
    pub fn id(&self) -> &str {
        self.dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }
}

/// The spare shim of a backend: none (`--spare-shim` off), or one kept ready.
pub(super) struct Spares {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    dir: PathBuf,
    shim_binary: String,
    events_address: String,
    cgroups: Layout,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    ready: Option<Spare>,
    /// A thread is starting a spare.
    filling: bool,
    /// The backend is going away: a spare started now is shut down at once.
    closed: bool,
}

impl Spares {
    /// No spare: every pod's shim is started when its first container is created.
    pub fn off() -> Spares {
        Spares { inner: None }
    }

    /// Lets go the spares a previous agent left under `dir` (see the module's doc), whether
    /// or not this agent keeps one; whether there were any.
    pub fn clean(dir: &Path) -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut found = false;
        for e in entries.flatten() {
            tracing::info!(dir = %e.path().display(), "spare shim of a previous agent let go");
            remove(&e.path());
            found = true;
        }
        found
    }

    /// Keeps a spare shim ready under `dir` (`<runtime>/spares`, cleaned first with
    /// [`Self::clean`]): starts one now, on a thread of its own.
    pub fn on(dir: PathBuf, shim_binary: &str, events_address: &str, cgroups: Layout) -> Spares {
        if let Err(e) = crate::paths::private_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "spare shims off: no directory");
            return Spares::off();
        }
        let inner = Arc::new(Inner {
            dir,
            shim_binary: shim_binary.to_string(),
            events_address: events_address.to_string(),
            cgroups,
            slot: Mutex::new(Slot::default()),
        });
        let s = Spares { inner: Some(inner) };
        s.refill();
        s
    }

    /// Takes the ready spare, if any. The next is started by [`Self::refill`] once the
    /// claiming container has started: started now, it would take the cores from the very
    /// Create it is meant to speed up.
    pub fn take(&self) -> Option<Spare> {
        self.inner.as_ref()?.slot().ready.take()
    }

    /// A spare found dead when claimed: its socket and directory go.
    pub fn discard(&self, spare: Spare) {
        remove(&spare.dir);
    }

    /// A claimed spare's Create was answered (or failed, and its container abandoned): its
    /// directory goes; the container's bundle now names the shim.
    pub fn release(&self, spare: Spare) {
        if let Err(e) = std::fs::remove_dir_all(&spare.dir) {
            tracing::warn!(dir = %spare.dir.display(), error = %e, "claimed spare shim's directory left");
        }
    }

    /// Kills the spare shims of this agent (by their command line: a `spare-` id and
    /// `events_address`) that no container's bundle names in its `shim.pid` (`serving`):
    /// after [`Self::clean`], no spare directory names them either, so nothing can reach or
    /// end them, and they serve no task.
    pub fn kill_strays(events_address: &str, shim_binary: &str, serving: &HashSet<u32>) {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if serving.contains(&pid) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            if !process::is_spare_cmdline(&cmdline, events_address)
                || !watch::Proc::of(pid).is_some_and(|p| p.runs(shim_binary))
            {
                continue;
            }
            // A shim is its containers' parent: one with a child serves a task, named or not
            // (and where the kernel does not list children, none is killed).
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
            if !children.is_ok_and(|c| c.trim().is_empty()) {
                continue;
            }
            tracing::warn!(
                pid,
                "spare shim nothing names (its agent was killed while starting it): killed"
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Starts a spare on a thread unless one is ready or being started (or spares are off).
    pub fn refill(&self) {
        let Some(inner) = &self.inner else { return };
        {
            let mut slot = inner.slot();
            if slot.ready.is_some() || slot.filling || slot.closed {
                return;
            }
            slot.filling = true;
        }
        let filler = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("edged-spare-shim".into())
            .spawn(move || {
                let r = filler.start();
                let mut slot = filler.slot();
                slot.filling = false;
                match r {
                    Ok(spare) if slot.closed => {
                        drop(slot);
                        remove(&spare.dir);
                    }
                    Ok(spare) => {
                        tracing::debug!(shim = %spare.address, "spare shim ready");
                        slot.ready = Some(spare);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "spare shim not started; pods start their own")
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "spare shim not started: no thread");
            inner.slot().filling = false;
        }
    }

    /// No more spares: the one nobody claimed is shut down now (one being started, when it
    /// is up), and none is started again.
    pub fn close(&self) {
        let Some(inner) = &self.inner else { return };
        let spare = {
            let mut slot = inner.slot();
            slot.closed = true;
            slot.ready.take()
        };
        if let Some(s) = spare {
            remove(&s.dir);
        }
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a shim in a new directory, waits until it answers, and moves it to the shims'
    /// cgroup.
    fn start(&self) -> Result<Spare, String> {
        let id = format!("spare-{}", super::new_id());
        let dir = self.dir.join(&id);
        let r = (|| {
            crate::paths::private_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            // `start` reads the bundle's annotations for a group: none, so the shim is its id's.
            std::fs::write(dir.join("config.json"), b"{}")
                .map_err(|e| format!("write {}/config.json: {e}", dir.display()))?;
            let address = process::start_spare(&self.shim_binary, &dir, &id, &self.events_address)?;
            let c = TaskClient::connect(&address, RPC_QUICK).map_err(|e| e.to_string())?;
            let who = call(
                &c,
                &pb::ConnectRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )?;
            if let Err(e) = self.cgroups.move_process(Layout::SHIMS, who.shim_pid) {
                tracing::warn!(shim_pid = who.shim_pid, error = %e, "spare shim left in the agent's cgroup");
            }
            std::fs::write(dir.join("shim.pid"), who.shim_pid.to_string())
                .map_err(|e| format!("write {}/shim.pid: {e}", dir.display()))?;
            Ok(Spare {
                address,
                dir: dir.clone(),
            })
        })();
        if r.is_err() {
            remove(&dir);
        }
        r
    }
}

/// Removes a spare's directory after asking its shim (if one answers there) to shut down: a
/// shim serving a task refuses and keeps running; a dead one's socket is removed.
fn remove(dir: &Path) {
    if let Some(address) = std::fs::read_to_string(dir.join("address"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
    {
        match TaskClient::connect(&address, Duration::from_secs(1)) {
            Ok(c) => {
                // The shim exits while answering: a disconnect is the expected answer.
                let _ = call(&c, &pb::ShutdownRequest::default());
            }
            Err(_) => {
                let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "spare shim's directory left");
    }
}

fn call<R: TaskRpc>(c: &TaskClient, req: &R) -> Result<R::Response, String> {
    c.call(req, RPC_QUICK).map_err(|e| e.to_string())
}
