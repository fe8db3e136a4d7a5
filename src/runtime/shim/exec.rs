//! Commands run in a running container: `exec_sync` (probes), its output to files in the
//! bundle and killed after its timeout; and interactive execs (`kubectl exec`), whose stdio are
//! FIFOs in the bundle the caller holds the other ends of.

use super::proto::shim as pb;
use super::{
    check_name, err, io_err, is_timeout, new_id, rpc_err, ShimRuntime, KILL_WAIT, RPC_QUICK,
    RPC_SLOW,
};
use crate::runtime::{oci, ErrorKind, ExecIo, ExecResult, ExecSpec, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the shim may take to open its side of an exec's stdin.
const STDIN_ATTACH: Duration = Duration::from_secs(10);

/// Opens the writing end of a started exec's stdin FIFO once the shim's reader is open.
///
/// The shim opens both ends of the FIFO itself (a reader to copy from, a writer kept for
/// CloseIO) in background opens that meet each other. Ending input is: our writer closed, then
/// CloseIO closing the shim's. Were our writer gone before the shim's reader opened, that
/// reader could wait for a writer forever (and the command for its end of input), so ours
/// opens only when a reader is there: a non-blocking write-only open fails with ENXIO until
/// then.
pub(super) fn attach_stdin(fifo: &Path) -> std::io::Result<File> {
    let deadline = std::time::Instant::now() + STDIN_ATTACH;
    loop {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(fifo)
        {
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if std::time::Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the shim did not open the exec's stdin in {STDIN_ATTACH:?}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

/// The FIFOs of an interactive exec, in its container's bundle.
fn exec_fifos(bundle: &Path, exec_id: &str) -> [PathBuf; 3] {
    ["stdin", "stdout", "stderr"].map(|s| bundle.join(format!("{exec_id}.{s}")))
}

impl ShimRuntime {
    /// The OCI spec in container `id`'s bundle (an exec's process starts from its process).
    fn bundle_spec(&self, id: &str) -> Result<serde_json::Value> {
        std::fs::read(self.bundle(id).join("config.json"))
            .ok()
            .and_then(|s| serde_json::from_slice(&s).ok())
            .ok_or_else(|| {
                err(
                    id,
                    "exec",
                    ErrorKind::NotFound,
                    "no such container (no spec in its bundle)",
                )
            })
    }

    /// Runs `cmd` in container `id` (its user, env and cwd), killing it after `timeout`.
    pub(super) fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
        check_name(id, "container id")?;
        let b = self.bundle(id);
        let spec = self.bundle_spec(id)?;
        let exec_id = format!("exec-{}", &new_id()[..12]);
        let out = b.join(format!("{exec_id}.out"));
        let errf = b.join(format!("{exec_id}.err"));
        for f in [&out, &errf] {
            crate::paths::write_private(f, b"").map_err(|e| io_err(id, "exec", e))?;
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
            self.rpc(id, &req, RPC_SLOW)
                .map_err(|e| rpc_err(id, "exec", e))?;
            let started = self.rpc(
                id,
                &pb::StartRequest {
                    id: id.into(),
                    exec_id: exec_id.clone(),
                    ..Default::default()
                },
                RPC_SLOW,
            );
            let delete = || {
                let _ = self.rpc(
                    id,
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

    /// Starts an interactive exec (see [`crate::runtime::Runtime::exec_start`]).
    pub(super) fn exec_start(&self, id: &str, want: &ExecSpec) -> Result<ExecIo> {
        check_name(id, "container id")?;
        if want.cmd.is_empty() {
            return Err(err(
                id,
                "exec",
                ErrorKind::InvalidConfig,
                "no command given",
            ));
        }
        let b = self.bundle(id);
        let spec = self.bundle_spec(id)?;
        let exec_id = format!("exec-{}", &new_id()[..12]);
        let [fin, fout, ferr] = exec_fifos(&b, &exec_id);
        // The runc shim opens every output path it is given and refuses an empty one, so the
        // outputs always exist (stderr not with a terminal) and the caller drains what its
        // client did not ask for.
        let stdout_wanted = true;
        let stderr_wanted = !want.tty;
        let mut made = Vec::new();
        for (f, on) in [
            (&fin, want.stdin),
            (&fout, stdout_wanted),
            (&ferr, stderr_wanted),
        ] {
            if on {
                nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| io_err(id, "exec mkfifo", e))?;
                made.push(f.clone());
            }
        }
        let cleanup = || {
            for f in &made {
                let _ = std::fs::remove_file(f);
            }
        };
        // The readers open before the shim opens its writers (non-blocking, so nothing it
        // writes is lost). The stdin writer opens after Start, once the shim's reader is there
        // (see `attach_stdin`).
        let open = |f: &Path, on: bool| -> std::io::Result<Option<File>> {
            if !on {
                return Ok(None);
            }
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(f)
                .map(Some)
        };
        let files = (|| {
            Ok::<_, std::io::Error>((open(&fout, stdout_wanted)?, open(&ferr, stderr_wanted)?))
        })();
        let (stdout, stderr) = match files {
            Ok(f) => f,
            Err(e) => {
                cleanup();
                return Err(io_err(id, "exec open fifos", e));
            }
        };
        let mut process = oci::exec_process(&spec, &want.cmd);
        process["terminal"] = serde_json::json!(want.tty);
        let path = |f: &PathBuf, on: bool| {
            if on {
                f.to_string_lossy().into_owned()
            } else {
                String::new()
            }
        };
        let req = pb::ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.clone(),
            terminal: want.tty,
            stdin: path(&fin, want.stdin),
            stdout: path(&fout, stdout_wanted),
            stderr: path(&ferr, stderr_wanted),
            spec: protobuf::MessageField::some(protobuf::well_known_types::any::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: serde_json::to_vec(&process).map_err(|e| io_err(id, "exec", e))?,
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = self.rpc(id, &req, RPC_SLOW);
        if let Err(e) = r {
            cleanup();
            return Err(rpc_err(id, "exec", e));
        }
        let started = self.rpc(
            id,
            &pb::StartRequest {
                id: id.into(),
                exec_id: exec_id.clone(),
                ..Default::default()
            },
            RPC_SLOW,
        );
        if let Err(e) = started {
            let _ = self.exec_remove(id, &exec_id);
            // The shim's message says why (runc: "exec failed: ... no such file or directory").
            return Err(rpc_err(id, "exec start", e));
        }
        let stdin = if want.stdin {
            match attach_stdin(&fin) {
                Ok(f) => Some(f),
                Err(e) => {
                    let _ = self.exec_remove(id, &exec_id);
                    return Err(io_err(id, "exec stdin", e));
                }
            }
        } else {
            None
        };
        Ok(ExecIo {
            exec_id,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Sets a process's terminal size.
    pub(super) fn exec_resize(&self, id: &str, exec_id: &str, w: u16, h: u16) -> Result<()> {
        let r = self.rpc(
            id,
            &pb::ResizePtyRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                width: w.into(),
                height: h.into(),
                ..Default::default()
            },
            RPC_QUICK,
        );
        r.map(|_| ()).map_err(|e| rpc_err(id, "resize", e))
    }

    /// Closes the shim's side of a process's stdin (CloseIO), its end of input.
    pub(super) fn exec_close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        let r = self.rpc(
            id,
            &pb::CloseIORequest {
                id: id.into(),
                exec_id: exec_id.into(),
                stdin: true,
                ..Default::default()
            },
            RPC_QUICK,
        );
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(rpc_err(id, "close stdin", e)),
        }
    }

    /// Waits up to `timeout` for an exec's exit.
    pub(super) fn exec_wait(&self, id: &str, exec_id: &str, t: Duration) -> Result<Option<i32>> {
        match self.wait(id, exec_id, t) {
            Ok(w) => Ok(Some(w.exit_status as i32)),
            Err(e) if is_timeout(&e) => Ok(None),
            Err(e) => Err(rpc_err(id, "exec wait", e)),
        }
    }

    /// Kills an exec if it runs, deletes it from its shim and removes its FIFOs.
    pub(super) fn exec_remove(&self, id: &str, exec_id: &str) -> Result<()> {
        check_name(id, "container id")?;
        check_name(exec_id, "exec id")?;
        let b = self.bundle(id);
        let _ = self.kill(id, exec_id, libc::SIGKILL as u32);
        let _ = self.wait(id, exec_id, KILL_WAIT);
        // Delete waits (2 s at most) for the shim's copy of the output to finish.
        let r = self.rpc(
            id,
            &pb::DeleteRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
            RPC_SLOW,
        );
        for f in exec_fifos(&b, exec_id) {
            let _ = std::fs::remove_file(f);
        }
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(rpc_err(id, "exec delete", e)),
        }
    }
}
