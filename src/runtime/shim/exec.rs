//! `exec_sync`: a command run in a running container (probes, `kubectl exec` without a TTY),
//! its output to files in the bundle, killed after its timeout.

use super::proto::shim as pb;
use super::{
    check_name, err, io_err, is_timeout, new_id, rpc_err, ShimRuntime, KILL_WAIT, RPC_SLOW,
};
use crate::runtime::{oci, ErrorKind, ExecResult, Result};
use std::time::Duration;

impl ShimRuntime {
    /// Runs `cmd` in container `id` (its user, env and cwd), killing it after `timeout`.
    pub(super) fn exec(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
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
}
