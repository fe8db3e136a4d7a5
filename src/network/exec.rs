//! Running one plugin: its environment (the CNI_* variables on top of the agent's own, as
//! libcni's invoke does: plugins such as portmap need `PATH` for iptables), its binary found
//! in the bin dirs, and a call bounded in time (a plugin past its time is killed).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one plugin call is about.
#[derive(Clone, Debug, PartialEq)]
pub struct Call<'a> {
    /// `ADD`, `DEL`, `CHECK`.
    pub command: &'a str,
    /// CNI_CONTAINERID: the sandbox's id.
    pub container_id: &'a str,
    /// CNI_NETNS: the pinned netns path (empty: the namespace is gone, DEL only).
    pub netns: &'a str,
    /// CNI_IFNAME.
    pub ifname: &'a str,
    /// CNI_ARGS as `K=V` pairs.
    pub args: &'a [(String, String)],
    /// The plugin directories (CNI_PATH).
    pub bin_dirs: &'a [PathBuf],
}

/// The CNI_ARGS pairs of a pod, as the kubelet passes them.
pub fn pod_args(namespace: &str, name: &str, sandbox_id: &str, uid: &str) -> Vec<(String, String)> {
    [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
        ("K8S_POD_UID", uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The CNI_* variables of a call.
pub fn env(call: &Call) -> Vec<(String, String)> {
    let args: Vec<String> = call.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let path: Vec<String> = call
        .bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    vec![
        ("CNI_COMMAND".into(), call.command.into()),
        ("CNI_CONTAINERID".into(), call.container_id.into()),
        ("CNI_NETNS".into(), call.netns.into()),
        ("CNI_IFNAME".into(), call.ifname.into()),
        ("CNI_ARGS".into(), args.join(";")),
        ("CNI_PATH".into(), path.join(":")),
    ]
}

/// The plugin binary `kind` in the first of `bin_dirs` that has it.
pub fn find_plugin(bin_dirs: &[PathBuf], kind: &str) -> Result<PathBuf, String> {
    if crate::paths::component_problem(kind).is_some() {
        return Err(format!("plugin type {kind:?} is not a binary name"));
    }
    bin_dirs
        .iter()
        .map(|d| d.join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = bin_dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "plugin {kind:?} not found in {} (install it or point --cni-bin-dir at it)",
                dirs.join(":")
            )
        })
}

/// A plugin's outcome: its stdout on success; on failure the message of its CNI error.
pub fn run(
    binary: &Path,
    env: &[(String, String)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let spawn = || {
        Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    // ETXTBSY: a binary just written (an upgrade) is still open in a child of another thread
    // between its fork and exec; it goes away at once.
    let mut tries = 0;
    let mut child = loop {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            r => break r.map_err(|e| format!("cannot run {}: {e}", binary.display()))?,
        }
    };
    let input = stdin.to_vec();
    let mut w = child.stdin.take();
    std::thread::spawn(move || {
        if let Some(w) = w.as_mut() {
            // A plugin that exits without reading all of it: its answer tells.
            let _ = w.write_all(&input);
        }
    });
    let reader = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                // At most 1 MiB: a result is small.
                let _ = r.by_ref().take(1 << 20).read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let out_rx = reader(child.stdout.take().map(|r| Box::new(r) as _));
    let err_rx = reader(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not answer within {:?} (--cni-timeout): killed",
                    binary.display(),
                    timeout
                ));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("waiting for {}: {e}", binary.display())),
        }
    };
    // A child the plugin left behind may hold its pipes open: wait a little, not forever.
    let grace = Duration::from_secs(2);
    let stdout = out_rx.recv_timeout(grace).unwrap_or_default();
    let stderr = err_rx.recv_timeout(grace).unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(super::result::error_message(
            &stdout,
            &stderr,
            &status.to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_of_an_add() {
        let args = pod_args("default", "web", "abc", "u-1");
        let dirs = [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")];
        let call = Call {
            command: "ADD",
            container_id: "abc",
            netns: "/var/lib/edged/runtime/sandboxes/u-1/ns/net",
            ifname: "eth0",
            args: &args,
            bin_dirs: &dirs,
        };
        let e: std::collections::HashMap<String, String> = env(&call).into_iter().collect();
        assert_eq!(e["CNI_COMMAND"], "ADD");
        assert_eq!(e["CNI_CONTAINERID"], "abc");
        assert_eq!(
            e["CNI_NETNS"],
            "/var/lib/edged/runtime/sandboxes/u-1/ns/net"
        );
        assert_eq!(e["CNI_IFNAME"], "eth0");
        assert_eq!(
            e["CNI_ARGS"],
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
        );
        assert_eq!(e["CNI_PATH"], "/opt/cni/bin:/usr/lib/cni");
        assert_eq!(e.len(), 6);
    }

    #[test]
    fn plugins_are_found_in_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("bridge"), "").unwrap();
        std::fs::write(a.path().join("ptp"), "").unwrap();
        std::fs::write(b.path().join("ptp"), "").unwrap();
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            find_plugin(&dirs, "bridge").unwrap(),
            b.path().join("bridge")
        );
        assert_eq!(find_plugin(&dirs, "ptp").unwrap(), a.path().join("ptp"));
        let e = find_plugin(&dirs, "flannel").unwrap_err();
        assert!(e.contains("flannel") && e.contains("--cni-bin-dir"), "{e}");
        assert!(find_plugin(&dirs, "../bridge").is_err());
    }

    fn script(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("plugin");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn a_plugin_reads_stdin_and_env_and_its_error_is_read() {
        let d = tempfile::tempdir().unwrap();
        let ok = script(
            d.path(),
            r#"read line; echo "{\"got\":$line,\"cmd\":\"$CNI_COMMAND\"}""#,
        );
        let env = vec![("CNI_COMMAND".to_string(), "ADD".to_string())];
        let out = run(&ok, &env, b"5\n", Duration::from_secs(20)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["got"], 5);
        assert_eq!(v["cmd"], "ADD");
        let d2 = tempfile::tempdir().unwrap();
        let bad = script(
            d2.path(),
            r#"echo '{"code":11,"msg":"IP pool exhausted"}'; exit 1"#,
        );
        let e = run(&bad, &[], b"", Duration::from_secs(20)).unwrap_err();
        assert!(e.contains("IP pool exhausted") && e.contains("11"), "{e}");
    }

    #[test]
    fn a_hanging_plugin_is_killed() {
        let d = tempfile::tempdir().unwrap();
        let hang = script(d.path(), "exec sleep 600");
        let e = run(&hang, &[], b"", Duration::from_millis(200)).unwrap_err();
        assert!(
            e.contains("did not answer") && e.contains("--cni-timeout"),
            "{e}"
        );
    }
}
