//! Hostile manifests against the real agent (issue 20): identifiers that would become paths
//! outside the agent's dirs, long names, a relative `--root-dir`, `--pod-max-pids`.
//! The real `edged` binary runs with its own dirs, real shims and runc containers.
//! Run as root: `cargo test --test hostile`.

#[path = "common/host.rs"]
#[allow(dead_code)]
mod host;

use host::{tail, wait_until, Host, BIN, IMAGE};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// One agent with its dirs under a temp dir (`root/`, `logs/`, `manifests/`).
struct Agent {
    dir: tempfile::TempDir,
    host: Host,
    child: Option<Child>,
}

impl Agent {
    /// Starts an agent; `relative`: from inside its dir, with relative `--root-dir`,
    /// `--pod-log-dir` and `--pod-manifest-path`.
    fn started(tag: &str, relative: bool, extra: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix(&format!("edged-hostile-{tag}-"))
            .tempdir_in("/tmp")
            .expect("temp dir");
        for d in ["root", "logs", "manifests"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let host = Host::new(dir.path());
        host.import_test_image();
        let at = |d: &str| {
            if relative {
                PathBuf::from(d)
            } else {
                dir.path().join(d)
            }
        };
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(BIN)
            .current_dir(dir.path())
            .arg("--root-dir")
            .arg(at("root"))
            .arg("--pod-log-dir")
            .arg(at("logs"))
            .arg("--pod-manifest-path")
            .arg(at("manifests"))
            .args([
                "--file-check-frequency",
                "1s",
                "--node-name",
                "hostile-node",
                "--node-ip",
                "127.0.0.1",
                "--log-level",
                "debug",
                "--image-gc-high-threshold",
                "100",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start edged");
        Agent {
            dir,
            host,
            child: Some(child),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    fn write(&self, file: &str, object: &Value) {
        let tmp = self.path("manifests").join(format!(".{file}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(object).unwrap()).unwrap();
        std::fs::rename(&tmp, self.path("manifests").join(file)).unwrap();
    }

    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.log(), f)
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.host
            .get("pods")
            .into_iter()
            .find(|p| p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name)
    }

    /// Waits until the pod's container `c` runs.
    fn wait_running(&self, ns: &str, name: &str) -> Value {
        self.wait_for(&format!("pod {ns}/{name} Running"), || {
            self.pod(ns, name)
                .filter(|p| p["status"]["phase"] == "Running")
        })
    }

    /// Log directories of the agent's pods.
    fn log_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path("logs"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("agent log tail:\n{}", tail(&self.log(), 60));
        }
        self.host.clean_up();
    }
}

fn pod(ns: &str, name: &str, uid: Option<&str>, script: &str) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
             "command": ["sh", "-c", script]}]}});
    if let Some(u) = uid {
        p["metadata"]["uid"] = json!(u);
    }
    p
}

/// The reported attack: a pod with uid `x` runs (its log dir is made), the file is edited to
/// uid `x/../../victim`, then removed. The edit is refused naming the pod and the field, and
/// removing the pod removes its own log dir only: the victim, outside, is intact.
#[test]
fn a_uid_that_climbs_out_deletes_nothing() {
    let a = Agent::started("uid", false, &[]);
    let ns = "hostile-uid";
    let victim = a.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), "keep me").unwrap();
    a.write("pod.json", &pod(ns, "web", Some("x"), "exec sleep 1000"));
    a.wait_running(ns, "web");
    assert_eq!(a.log_dirs(), vec![format!("{ns}_web_x")]);
    // logs/<ns>_web_x/../../victim is <dir>/victim.
    a.write(
        "pod.json",
        &pod(ns, "web", Some("x/../../victim"), "exec sleep 1000"),
    );
    a.wait_for("the edit refused, naming the pod and metadata.uid", || {
        a.log()
            .lines()
            .find(|l| l.contains("Pod hostile-uid/web") && l.contains("metadata.uid"))
            .map(str::to_string)
    });
    std::fs::remove_file(a.path("manifests/pod.json")).unwrap();
    a.wait_for("the pod and its log dir gone", || {
        (a.pod(ns, "web").is_none() && a.log_dirs().is_empty() && a.host.runc().is_empty())
            .then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(victim.join("precious")).unwrap(),
        "keep me"
    );
    // The store never held the hostile uid.
    assert!(!a.log().contains("uid=x/../../victim"), "{}", a.log());
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The root dir and its trees are root's only, and a container's config.json (env values
/// from Secrets) is 0600; an agent started on a root dir left 0755 narrows it.
#[test]
fn the_root_dir_and_bundles_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let a = Agent::started("modes", false, &[]);
    let ns = "hostile-modes";
    a.write(
        "pod.json",
        &pod(ns, "quiet", None, "echo $TOKEN >/dev/null; exec sleep 1000"),
    );
    let p = a.wait_running(ns, "quiet");
    let id = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|s| s.strip_prefix("containerd://"))
        .expect("container id")
        .to_string();
    let root = a.path("root");
    for d in [
        "",
        "meta",
        "pods",
        "images",
        "images/layers",
        "images/snapshots",
        "runtime",
        "runtime/containers",
        "runtime/sandboxes",
    ] {
        assert_eq!(mode(&root.join(d)), 0o700, "root/{d}");
    }
    let bundle = root.join("runtime/containers").join(&id);
    assert_eq!(mode(&bundle.join("config.json")), 0o600);
    assert_eq!(mode(&root.join("meta/data.mdb")), 0o600);
    // Even with the root dir opened by hand, the trees keep other users out.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "stat",
        ])
        .arg(bundle.join("rootfs/bin/busybox"))
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "stat",
        ])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "the check itself works: {out:?}");
}

/// A relative `--root-dir` (and log and manifest dirs) from the agent's working directory:
/// made absolute at start, so the shim, runc and the overlay mounts find them.
#[test]
fn a_relative_root_dir_runs_pods() {
    let a = Agent::started("relative", true, &[]);
    let ns = "hostile-relative";
    a.write(
        "pod.json",
        &pod(ns, "rel", None, "echo hello; exec sleep 1000"),
    );
    a.wait_running(ns, "rel");
    let dirs = a.log_dirs();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    a.wait_for("the container's log", || {
        std::fs::read_to_string(a.path("logs").join(&dirs[0]).join("app/0.log"))
            .ok()
            .filter(|t| t.contains("hello"))
    });
}

/// A valid 253-character pod name: the log dir `<ns>_<name>_<uid>` would pass 255 bytes, so
/// the name part is shortened with a hash (the kubelet does not shorten it and fails there).
#[test]
fn a_pod_with_a_253_character_name_runs_and_logs() {
    let a = Agent::started("longname", false, &[]);
    let ns = "hostile-longname";
    let label = "a".repeat(62) + "b";
    let name = [label.as_str(); 4].join(".")[..253].to_string();
    assert_eq!(name.len(), 253);
    a.write(
        "pod.json",
        &pod(ns, &name, None, "echo long; exec sleep 1000"),
    );
    a.wait_running(ns, &name);
    let dirs = a.log_dirs();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(dirs[0].len() <= 255 && dirs[0].starts_with(&format!("{ns}_aaaa")));
    a.wait_for("the container's log", || {
        std::fs::read_to_string(a.path("logs").join(&dirs[0]).join("app/0.log"))
            .ok()
            .filter(|t| t.contains("long"))
    });
    std::fs::remove_file(a.path("manifests/pod.json")).unwrap();
    a.wait_for("the pod and its log dir gone", || {
        (a.pod(ns, &name).is_none() && a.log_dirs().is_empty()).then_some(())
    });
}

/// `--pod-max-pids 20`: the pod's cgroup holds at most 20 processes; a fork bomb in it is
/// refused by the kernel (pids.events counts the refusals) and the node keeps its pids.
#[test]
fn pod_max_pids_stops_a_fork_bomb_in_the_pod() {
    let a = Agent::started("pids", false, &["--pod-max-pids", "20"]);
    let ns = "hostile-pids";
    let mut p = pod(
        ns,
        "bomb",
        None,
        "for i in $(seq 1 60); do sleep 1000 & done; echo forked; exec sleep 1000",
    );
    p["spec"]["restartPolicy"] = json!("Never");
    a.write("pod.json", &p);
    let uid = a.wait_for("the pod's uid", || {
        a.pod(ns, "bomb")
            .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
    });
    let cg = a.host.pod_cgroups();
    let dir = a.wait_for("the pod's pids cgroup", || {
        let v2 = PathBuf::from(format!("/sys/fs/cgroup/edged/pod{uid}"));
        let v1 = PathBuf::from(format!("/sys/fs/cgroup/pids/edged/pod{uid}"));
        [v1, v2].into_iter().find(|d| d.join("pids.max").exists())
    });
    assert_eq!(
        std::fs::read_to_string(dir.join("pids.max"))
            .unwrap()
            .trim(),
        "20",
        "{cg:?}"
    );
    // The kernel counts a refused fork in pids.events of the forking process's cgroup (the
    // container's, below the pod's).
    let refused = a.wait_for("forks refused in pids.events", || {
        let n: u64 = host::walk_dirs(&dir)
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("pids.events")).ok())
            .filter_map(|ev| {
                ev.lines()
                    .find_map(|l| l.strip_prefix("max "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .sum();
        (n > 0).then_some(n)
    });
    // The shell could not make its 60 children: it says so, and never gets to `forked`.
    let log = a.wait_for("the fork failure in the container's log", || {
        let dirs = a.log_dirs();
        let text =
            std::fs::read_to_string(a.path("logs").join(dirs.first()?).join("app/0.log")).ok()?;
        text.contains("can't fork").then_some(text)
    });
    assert!(!log.contains("forked"), "{log}");
    eprintln!("forks refused: {refused}");
}
