//! The runtime side of exec and attach sessions (the kubelet's `GetExec`/`GetAttach` through
//! CRI): finds the container; for an exec, starts the command with the runtime's
//! [`crate::runtime::ExecIo`] FIFOs and pumps them to and from a transport's [`Streams`] until
//! the command exits and its output is drained; for an attach, joins the container's own
//! process ([`crate::runtime::AttachIo`]) until its output ends.
//!
//! An exec session dropped half-way (the client gone, the connection cut) kills the command, as
//! containerd's CRI does when the stream's context ends; an attach leaves the container be.

use super::{Outcome, StreamOptions, Streams, TermSize};
use crate::metamanager::{Store, Table};
use crate::runtime::{labels, ContainerState, ExecSpec, Runtime, RuntimeError};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

/// How long one `Wait` call waits before the next (the exec may run for hours).
const WAIT_SLICE: Duration = Duration::from_secs(60);

/// Why a container cannot take an exec: HTTP status and message, as the kubelet answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    /// The HTTP status answered: 404 (no such pod or container), 400 (not running), 500 (the
    /// runtime failed).
    pub status: u16,
    /// Why, sent as the body.
    pub message: String,
}

/// The running container `namespace/pod`'s `container`, as a runtime id (the kubelet's
/// `GetExec` lookup: pod by name, container by name, running).
pub fn find_container(
    store: &Store,
    rt: &dyn Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String, TargetError> {
    let not_found = |message: String| TargetError {
        status: 404,
        message,
    };
    let obj = store
        .get(Table::Pod, &format!("{namespace}/{pod}"))
        .map_err(|e| TargetError {
            status: 500,
            message: e.to_string(),
        })?
        .ok_or_else(|| not_found(format!("pod {namespace}/{pod} not found")))?;
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(|u| u.as_str())
        .unwrap_or_default()
        .to_string();
    let listed = rt.list_pod_containers(&uid).map_err(|e| TargetError {
        status: 500,
        message: e.to_string(),
    })?;
    let named = |c: &&crate::runtime::ContainerStatus| {
        c.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some(container)
    };
    match listed
        .iter()
        .filter(named)
        .find(|c| c.state == ContainerState::Running)
    {
        Some(c) => Ok(c.id.clone()),
        None if listed.iter().any(|c| named(&c)) => Err(TargetError {
            status: 400,
            message: format!("container {container} in pod {namespace}/{pod} is not running"),
        }),
        None => Err(not_found(format!(
            "container {container} is not valid for pod {namespace}/{pod}"
        ))),
    }
}

/// The exit code a shell gives a command it cannot run, for a start the runtime refused
/// because of the command (127: not found, 126: not executable), as `kubectl exec` users know
/// them from Docker; `None` for other failures.
pub fn start_failure_code(message: &str) -> Option<i32> {
    let m = message.to_ascii_lowercase();
    if m.contains("executable file not found") || m.contains("no such file or directory") {
        Some(127)
    } else if m.contains("permission denied") || m.contains("exec format error") {
        Some(126)
    } else {
        None
    }
}

/// Kills and removes the exec if the session ends before it did.
struct Remover {
    rt: Arc<dyn Runtime>,
    id: String,
    exec_id: String,
    armed: bool,
}

impl Drop for Remover {
    fn drop(&mut self) {
        if self.armed {
            let (rt, id, exec_id) = (self.rt.clone(), self.id.clone(), self.exec_id.clone());
            smol::unblock(move || {
                if let Err(e) = rt.exec_remove(&id, &exec_id) {
                    tracing::warn!(container = %id, exec = %exec_id, error = %e, "exec left behind");
                }
            })
            .detach();
        }
    }
}

/// Copies a FIFO to a channel until its writer closes; with no receiver (a stream the client
/// did not ask for, or left) it is drained, so the command never blocks on it.
async fn pump_out(f: File, tx: Option<async_channel::Sender<Vec<u8>>>) -> std::io::Result<()> {
    let mut f = smol::Async::new(f)?;
    let mut buf = vec![0u8; super::MAX_CHUNK];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if let Some(tx) = tx.as_ref().filter(|t| !t.is_closed()) {
            let _ = tx.send(buf[..n].to_vec()).await;
        }
    }
}

/// Applies the client's terminal sizes to process `exec_id` (empty: the container's own) of
/// container `id` until the resize stream ends.
async fn forward_resizes(
    rt: &Arc<dyn Runtime>,
    id: &str,
    exec_id: &str,
    rx: Option<async_channel::Receiver<TermSize>>,
) {
    let Some(rx) = rx else { return };
    while let Ok(TermSize { width, height }) = rx.recv().await {
        let (rt, i, ex) = (rt.clone(), id.to_string(), exec_id.to_string());
        if let Err(e) = smol::unblock(move || rt.exec_resize(&i, &ex, width, height)).await {
            tracing::debug!(container = %id, error = %e, "resize refused");
        }
    }
}

/// Copies a channel to a FIFO until the channel closes; dropping the FIFO is the end of input.
async fn pump_in(f: File, rx: async_channel::Receiver<Vec<u8>>) -> std::io::Result<()> {
    let mut f = smol::Async::new(f)?;
    while let Ok(chunk) = rx.recv().await {
        f.write_all(&chunk).await?;
    }
    Ok(())
}

/// Runs `cmd` in container `id` with the client's streams; the outcome for its error stream.
pub async fn exec(
    rt: Arc<dyn Runtime>,
    id: String,
    cmd: Vec<String>,
    opts: StreamOptions,
    streams: Streams,
) -> Outcome {
    let spec = ExecSpec {
        cmd: cmd.clone(),
        tty: opts.tty,
        stdin: opts.stdin && streams.stdin.is_some(),
        stdout: opts.stdout && streams.stdout.is_some(),
        stderr: opts.stderr && streams.stderr.is_some() && !opts.tty,
    };
    let started = {
        let (rt, id) = (rt.clone(), id.clone());
        smol::unblock(move || rt.exec_start(&id, &spec)).await
    };
    let io = match started {
        Ok(io) => io,
        Err(e) => return refused(&e, &streams).await,
    };
    tracing::info!(container = %id, exec = %io.exec_id, ?cmd, tty = opts.tty, "exec started");
    let mut remover = Remover {
        rt: rt.clone(),
        id: id.clone(),
        exec_id: io.exec_id.clone(),
        armed: true,
    };
    let Streams {
        stdin,
        stdout,
        stderr,
        resize,
    } = streams;
    let input = async {
        if let (Some(f), Some(rx)) = (io.stdin, stdin) {
            if let Err(e) = pump_in(f, rx).await {
                tracing::debug!(container = %id, error = %e, "exec stdin ended");
            }
            let (rt, i, ex) = (rt.clone(), id.clone(), io.exec_id.clone());
            if let Err(e) = smol::unblock(move || rt.exec_close_stdin(&i, &ex)).await {
                tracing::debug!(error = %e, "exec stdin not closed");
            }
        }
    };
    let resizes = async {
        if let (true, Some(rx)) = (opts.tty, resize) {
            while let Ok(TermSize { width, height }) = rx.recv().await {
                let (rt, id, ex) = (rt.clone(), id.clone(), io.exec_id.clone());
                if let Err(e) = smol::unblock(move || rt.exec_resize(&id, &ex, width, height)).await
                {
                    tracing::debug!(error = %e, "exec resize refused");
                }
            }
        }
    };
    let output = |f: Option<File>, tx: Option<async_channel::Sender<Vec<u8>>>| async move {
        if let Some(f) = f {
            if let Err(e) = pump_out(f, tx).await {
                tracing::debug!(error = %e, "exec output ended");
            }
        }
    };
    let exited = async {
        loop {
            let (rt, i, ex) = (rt.clone(), id.clone(), io.exec_id.clone());
            match smol::unblock(move || rt.exec_wait(&i, &ex, WAIT_SLICE)).await {
                Ok(Some(code)) => break Ok(code),
                Ok(None) => continue,
                Err(e) => break Err(e),
            }
        }
    };
    let exec_id = io.exec_id.clone();
    // The command's end, then its removal (the shim copies the last output out and closes
    // the FIFOs), while the output is read: the readers end at the writers' close.
    let finish = async {
        let code = exited.await;
        let (rt, i, ex) = (rt.clone(), id.clone(), exec_id.clone());
        let removed = smol::unblock(move || rt.exec_remove(&i, &ex)).await;
        (code, removed)
    };
    let outputs = smol::future::zip(output(io.stdout, stdout), output(io.stderr, stderr));
    // Input may never end (a client that keeps stdin open): the exit and the drained output
    // end the session.
    let ((code, removed), _) = smol::future::or(smol::future::zip(finish, outputs), async {
        smol::future::zip(input, resizes).await;
        smol::future::pending().await
    })
    .await;
    remover.armed = false;
    if let Err(e) = removed {
        tracing::warn!(container = %id, exec = %exec_id, error = %e, "exec not removed");
    }
    match code {
        Ok(c) => {
            tracing::info!(container = %id, exec = %exec_id, exit_code = c, "exec ended");
            Outcome::Exited(c)
        }
        Err(e) => Outcome::Failed(format!("error executing command in container: {e}")),
    }
}

/// Attaches the client's streams to container `id`'s own process until its output ends (the
/// container exited) or the client leaves. Input goes to its stdin if it was created with one
/// (`stdin: true`); with `stdinOnce`, the end of this session closes that stdin.
pub async fn attach(
    rt: Arc<dyn Runtime>,
    id: String,
    opts: StreamOptions,
    streams: Streams,
) -> Outcome {
    let io = {
        let (rt, id) = (rt.clone(), id.clone());
        match smol::unblock(move || rt.attach(&id)).await {
            Ok(io) => io,
            Err(e) => return Outcome::Failed(format!("error attaching to container: {e}")),
        }
    };
    tracing::info!(container = %id, tty = io.tty, stdin = io.stdin.is_some(), "attached");
    let Streams {
        stdin,
        stdout,
        stderr,
        resize,
    } = streams;
    let tty = io.tty;
    let output = async {
        while let Ok((name, bytes)) = io.output.recv().await {
            // A terminal's output is one stream.
            let to = if name == "stderr" && !tty {
                &stderr
            } else {
                &stdout
            };
            if let Some(tx) = to {
                let _ = tx.send(bytes).await;
            }
        }
    };
    let input = async {
        if let (Some(f), Some(rx)) = (io.stdin, stdin.filter(|_| opts.stdin)) {
            if let Err(e) = pump_in(f, rx).await {
                tracing::debug!(container = %id, error = %e, "attach stdin ended");
            }
            if io.stdin_once {
                let (rt, i) = (rt.clone(), id.clone());
                if let Err(e) = smol::unblock(move || rt.exec_close_stdin(&i, "")).await {
                    tracing::warn!(container = %id, error = %e, "stdinOnce: stdin not closed");
                }
            }
        }
    };
    let resizes = forward_resizes(&rt, &id, "", resize.filter(|_| tty));
    // The session ends with the container's output; input and resizes may never end.
    smol::future::or(output, async {
        smol::future::zip(input, resizes).await;
        smol::future::pending().await
    })
    .await;
    tracing::info!(container = %id, "detached: the container's output ended");
    Outcome::Exited(0)
}

/// The outcome of a start the runtime refused: the message on stderr and 126/127 for a
/// command that cannot run; an internal error otherwise.
async fn refused(e: &RuntimeError, streams: &Streams) -> Outcome {
    let message = e.to_string();
    match start_failure_code(&message) {
        Some(code) => {
            let out = streams.stderr.as_ref().or(streams.stdout.as_ref());
            if let Some(tx) = out {
                let _ = tx.send(format!("{message}\r\n").into_bytes()).await;
            }
            Outcome::Exited(code)
        }
        None => Outcome::Failed(format!("error executing command in container: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_as_a_shell_reports_them() {
        for (m, code) in [
            ("exec failed: unable to start container process: exec: \"nosuch\": executable file not found in $PATH: unknown", Some(127)),
            ("exec: \"/bin/nosuch\": stat /bin/nosuch: no such file or directory", Some(127)),
            ("exec: \"/etc/passwd\": permission denied", Some(126)),
            ("shim is gone", None),
        ] {
            assert_eq!(start_failure_code(m), code, "{m}");
        }
    }
}
