//! Running the shim binary: `start` (spawns or joins the pod's shim daemon and prints its
//! address) and `delete` (cleans the runc state a dead shim left).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The namespace edged's containers live in (runc state under /run/containerd/runc/edged).
pub const NAMESPACE: &str = "edged";

/// How long a `start` or `delete` invocation may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `cmd` (stdin /dev/null, output captured) and kills it after [`COMMAND_TIMEOUT`].
fn run(mut cmd: Command, what: &str) -> Result<Vec<u8>, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: run {:?}: {e}", cmd.get_program()))?;
    // Reader threads keep the timeout enforceable whatever the child does with its pipes.
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: no answer in {COMMAND_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("{what}: wait: {e}")),
        }
    };
    // Should a daemon inherit a pipe, do not wait for its EOF.
    let grace = Duration::from_secs(1);
    let stdout = out.recv_timeout(grace).unwrap_or_default();
    let stderr = err.recv_timeout(grace).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "{what}: {status}: {}",
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    Ok(stdout)
}

/// Reads a pipe to EOF in a thread; the bytes arrive on the returned channel.
fn reader(pipe: Option<impl std::io::Read + Send + 'static>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut b);
        }
        let _ = tx.send(b);
    });
    rx
}

/// Parses what `start` prints: a plain address (1.6/1.7) or JSON with an `address` (2.x).
pub fn parse_address(out: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(out);
    let text = text.trim();
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        return v.get("address")?.as_str().map(str::to_string);
    }
    (!text.is_empty()).then(|| text.to_string())
}

/// Starts (or, for a pod whose shim runs already, joins) the shim of container `id` whose
/// bundle is `bundle`; returns the shim's ttrpc address.
pub fn start(
    shim_binary: &str,
    bundle: &Path,
    id: &str,
    events_address: &str,
) -> Result<String, String> {
    run_start(start_command(shim_binary, bundle, id, events_address)?)
}

/// [`start`] for a spare shim: the `start` command dies with the calling thread, so an agent
/// killed meanwhile leaves either no shim or one whose `address` is written in `bundle` (the
/// command writes it before it spawns the daemon), never a daemon in a directory the next
/// agent has already cleaned.
pub fn start_spare(
    shim_binary: &str,
    dir: &Path,
    id: &str,
    events_address: &str,
) -> Result<String, String> {
    let mut cmd = start_command(shim_binary, dir, id, events_address)?;
    // SAFETY: the closure runs in the forked child before exec and makes one prctl(2) call,
    // which is async-signal-safe: no allocation, no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    run_start(cmd)
}

fn start_command(
    shim_binary: &str,
    bundle: &Path,
    id: &str,
    events_address: &str,
) -> Result<Command, String> {
    // Without <bundle>/log the shim dies at once and leaves a stale socket.
    let log = bundle.join("log");
    if !log.exists() {
        std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
    }
    let mut cmd = Command::new(shim_binary);
    cmd.current_dir(bundle)
        .env("TTRPC_ADDRESS", events_address)
        .args([
            "-namespace",
            NAMESPACE,
            "-id",
            id,
            "-address",
            events_address,
        ])
        .args(["-publish-binary", "/bin/false", "start"]);
    Ok(cmd)
}

fn run_start(cmd: Command) -> Result<String, String> {
    let out = run(cmd, "shim start")?;
    parse_address(&out).ok_or_else(|| {
        format!(
            "shim start: no address in its output {:?}",
            String::from_utf8_lossy(&out)
        )
    })
}

/// Whether the command line `args` (NUL-separated, as /proc/<pid>/cmdline) is a shim's
/// started by [`start_spare`] for the agent whose events address is `events_address`.
pub fn is_spare_cmdline(args: &[u8], events_address: &str) -> bool {
    let args: Vec<&[u8]> = args.split(|b| *b == 0).collect();
    let value = |flag: &str| {
        args.windows(2)
            .find(|w| w[0] == flag.as_bytes())
            .map(|w| w[1])
    };
    value("-id").is_some_and(|id| id.starts_with(b"spare-"))
        && value("-address") == Some(events_address.as_bytes())
}

/// Cleans what a dead shim left of container `id` (runc state, rootfs mount).
pub fn delete(
    shim_binary: &str,
    bundle: &Path,
    id: &str,
    events_address: &str,
) -> Result<(), String> {
    let mut cmd = Command::new(shim_binary);
    cmd.current_dir(bundle)
        .env("TTRPC_ADDRESS", events_address)
        .args([
            "-namespace",
            NAMESPACE,
            "-address",
            events_address,
            "-id",
            id,
        ])
        .arg("-bundle")
        .arg(bundle)
        .arg("delete");
    run(cmd, "shim delete").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address(b"unix:///run/containerd/s/ab\n").as_deref(),
            Some("unix:///run/containerd/s/ab")
        );
        assert_eq!(
            parse_address(br#"{"version":3,"address":"unix:///x","protocol":"ttrpc"}"#).as_deref(),
            Some("unix:///x")
        );
        assert_eq!(parse_address(b" \n"), None);
    }

    #[test]
    fn spare_command_lines() {
        let ev = "unix:///var/lib/edged/runtime/events.sock";
        let daemon = b"/usr/bin/containerd-shim-runc-v2\0-namespace\0edged\0-id\0spare-ab12\0-address\0unix:///var/lib/edged/runtime/events.sock\0";
        assert!(is_spare_cmdline(daemon, ev));
        // Another agent's spare, a pod's shim, an address that only starts the same.
        assert!(!is_spare_cmdline(
            daemon,
            "unix:///other/runtime/events.sock"
        ));
        let pod = b"containerd-shim-runc-v2\0-namespace\0edged\0-id\0ab12\0-address\0unix:///var/lib/edged/runtime/events.sock\0";
        assert!(!is_spare_cmdline(pod, ev));
        assert!(!is_spare_cmdline(
            daemon,
            "unix:///var/lib/edged/runtime/events"
        ));
        assert!(!is_spare_cmdline(b"", ev));
        assert!(!is_spare_cmdline(b"-id", ev));
    }
}
