//! Issue 20, items 3 and 5, end to end: the real `edged` binary with real shims and runc
//! containers, facing a damaged store and a frozen shim.
//!
//! Run as root: `cargo test --test robust`.

#[path = "common/host.rs"]
#[allow(dead_code)]
mod host;

use host::{tail, wait_until, Host, BIN, IMAGE, WAIT};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One agent: its dirs, its process, and the cleanup of everything it made.
struct Agent {
    dir: tempfile::TempDir,
    host: Host,
    child: Option<Child>,
    starts: u32,
}

impl Agent {
    fn new(tag: &str) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix(&format!("edged-rb-{tag}-"))
            .tempdir_in("/tmp")
            .expect("temp dir");
        for d in ["root", "logs", "manifests"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let a = Agent {
            host: Host::new(dir.path()),
            dir,
            child: None,
            starts: 0,
        };
        a.host.import_test_image();
        a
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn data_mdb(&self) -> PathBuf {
        self.root().join("meta/data.mdb")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("agent-{}.log", self.starts)))
            .unwrap_or_default()
    }

    fn command(&mut self, extra: &[&str]) -> Command {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{}.log", self.starts)))
            .unwrap();
        let mut c = Command::new(BIN);
        c.arg("--root-dir")
            .arg(self.root())
            .arg("--pod-log-dir")
            .arg(self.dir.path().join("logs"))
            .arg("--pod-manifest-path")
            .arg(self.dir.path().join("manifests"))
            .args([
                "--file-check-frequency",
                "1s",
                "--node-name",
                "robust-node",
                "--node-ip",
                "127.0.0.1",
                "--image-gc-high-threshold",
                "100",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        c
    }

    fn start(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "agent already running");
        let child = self.command(extra).spawn().expect("start edged");
        self.child = Some(child);
    }

    /// Runs the agent expecting it to exit by itself; returns its exit status and log.
    fn run_to_exit(&mut self, extra: &[&str]) -> (std::process::ExitStatus, String) {
        let mut child = self.command(extra).spawn().expect("start edged");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("edged did not exit; log:\n{}", tail(&self.log(), 30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("edged did not stop within 20 s of SIGTERM");
    }

    fn write(&self, file: &str, pod: &Value) {
        let dir = self.dir.path().join("manifests");
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(pod).unwrap()).unwrap();
        std::fs::rename(&tmp, dir.join(file)).unwrap();
    }

    /// `edged get pods -o json` as run by hand: exit code, stdout, stderr.
    fn get_pods(&self) -> (Option<i32>, String, String) {
        let out = Command::new(BIN)
            .arg("--root-dir")
            .arg(self.root())
            .args(["get", "pods", "-o", "json"])
            .output()
            .expect("run edged get");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.host
            .get("pods")
            .into_iter()
            .find(|p| p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name)
    }

    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.log(), f)
    }

    /// Waits until the pod's container `app` runs; returns its container id.
    fn wait_running(&self, ns: &str, name: &str) -> String {
        self.wait_for(&format!("{ns}/{name} running"), || {
            let p = self.pod(ns, name)?;
            let c = &p["status"]["containerStatuses"][0];
            c["state"]["running"]
                .is_object()
                .then(|| c["containerID"].as_str().unwrap_or_default().to_string())
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A test that failed with a shim stopped must not leave it stopped.
        for pid in self.host.shim_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
        self.host.clean_up();
    }
}

fn pod(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [
               {"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo up; sleep 1000"]}]}})
}

/// Damage done to a copy of a good `data.mdb`.
fn damage(good: &[u8], how: &str) -> Vec<u8> {
    match how {
        // The second half gone, as a filesystem that lost the file's tail.
        "truncated" => good[..good.len() / 2].to_vec(),
        // Every page after the two meta pages overwritten.
        "garbage" => {
            let mut b = good.to_vec();
            for (i, x) in b.iter_mut().enumerate().skip(2 * 4096) {
                *x = (i as u8).wrapping_mul(31) ^ 0xa5;
            }
            b
        }
        "empty" => Vec::new(),
        other => panic!("{other}"),
    }
}

#[test]
fn a_damaged_store_is_refused_with_exit_3_and_recovered_from_the_manifests() {
    let mut a = Agent::new("store");
    let ns = "rb-store";
    a.write("web.json", &pod(ns, "web"));
    a.start(&[]);
    let first = a.wait_running(ns, "web");
    a.stop();
    let good = std::fs::read(a.data_mdb()).unwrap();
    assert!(good.len() >= 4 * 4096, "{} bytes", good.len());

    for how in ["truncated", "garbage", "empty"] {
        std::fs::write(a.data_mdb(), damage(&good, how)).unwrap();
        // `edged get`: exit 3 and a message naming the file, not SIGBUS (135).
        let (code, out, err) = a.get_pods();
        assert_eq!(code, Some(3), "{how}: get: {out}{err}");
        assert!(
            err.contains("data.mdb") && err.contains("--store-recover"),
            "{how}: {err}"
        );
        // The agent refuses to start, saying why and what to do.
        let (st, log) = a.run_to_exit(&[]);
        assert_eq!(
            st.code(),
            Some(3),
            "{how}: agent {st:?}:\n{}",
            tail(&log, 20)
        );
        assert!(
            log.contains("data.mdb is damaged") && log.contains("--store-recover"),
            "{how}:\n{}",
            tail(&log, 20)
        );
        // Still damaged, still there: nothing was changed by the refusals.
        assert_eq!(std::fs::read(a.data_mdb()).unwrap(), damage(&good, how));
    }

    // --store-recover: the damaged file moved aside, one warning, the manifest's pod back.
    a.start(&["--store-recover"]);
    let id = a.wait_running(ns, "web");
    let log = a.log();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("store damaged"))
        .collect();
    assert_eq!(warns.len(), 1, "{}", tail(&log, 30));
    let moved: Vec<String> = std::fs::read_dir(a.root().join("meta"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.mdb.damaged-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(
        std::fs::metadata(a.root().join("meta").join(&moved[0]))
            .unwrap()
            .len(),
        0,
        "the last damage (empty) was moved aside"
    );
    // The container is the one left running (adopted) or a new one; either way it runs.
    assert!(!id.is_empty() && !first.is_empty());
    a.stop();
    // A sound store again: get reads it.
    let (code, _, err) = a.get_pods();
    assert_eq!(code, Some(0), "{err}");
}

/// The shim serving container `id`: the shim process whose working directory is its bundle
/// (the pod's first container's), or the one named by the bundle's `shim.pid`.
fn shim_of(a: &Agent, ids: &[String]) -> i32 {
    let bundles: Vec<PathBuf> = ids
        .iter()
        .map(|id| a.root().join("runtime/containers").join(id))
        .collect();
    for pid in a.host.shim_pids() {
        if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
            if bundles.contains(&cwd) {
                return pid;
            }
        }
    }
    panic!("no shim for {ids:?} among {:?}", a.host.shim_pids());
}

/// Fills the accept queue of the unix socket at `address` (a frozen shim's fills as calls
/// pile up; then a blocking connect waits for ever). Returns the connections, to hold.
fn fill_accept_queue(address: &str) -> Vec<std::os::fd::OwnedFd> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    // Room for them: the soft limit of open files up to the hard one.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let path = address.trim_start_matches("unix://");
    let addr = match path.strip_prefix('@') {
        Some(name) => UnixAddr::new_abstract(name.as_bytes()).unwrap(),
        None => UnixAddr::new(path).unwrap(),
    };
    let mut held = Vec::new();
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => held.push(fd),
            Err(nix::errno::Errno::EAGAIN) => return held,
            Err(e) => panic!("connect {address}: {e} after {}", held.len()),
        }
        assert!(held.len() < 200_000, "the queue never filled");
    }
}

#[test]
fn a_frozen_shim_holds_no_other_pod_and_is_killed_and_its_pod_recovered() {
    let mut a = Agent::new("frozen");
    let ns = "rb-frozen";
    a.write("frozen.json", &pod(ns, "frozen"));
    a.write("other.json", &pod(ns, "other"));
    a.start(&[]);
    let frozen_id = a.wait_running(ns, "frozen");
    a.wait_running(ns, "other");
    let id = frozen_id.trim_start_matches("containerd://").to_string();
    let shim = shim_of(&a, std::slice::from_ref(&id));
    let address = std::fs::read_to_string(
        a.root()
            .join("runtime/containers")
            .join(&id)
            .join("address"),
    )
    .unwrap();
    a.stop();

    // The shim stops answering, with its accept queue full, as after minutes of calls.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let held = fill_accept_queue(address.trim());
    eprintln!(
        "accept queue of the frozen shim full after {} connections",
        held.len()
    );

    let start = Instant::now();
    a.start(&[]);
    a.write("added.json", &pod(ns, "added"));
    a.wait_running(ns, "added");
    eprintln!(
        "pod added while a shim is frozen: running {:?} after the agent started",
        start.elapsed()
    );
    // The frozen shim is killed, and its pod runs again in a new container.
    a.wait_for("the frozen shim killed", || {
        let gone = !PathBuf::from(format!("/proc/{shim}")).exists()
            || std::fs::read_to_string(format!("/proc/{shim}/stat"))
                .is_ok_and(|s| s.contains(") Z "));
        gone.then_some(())
    });
    eprintln!(
        "frozen shim killed {:?} after the agent started",
        start.elapsed()
    );
    let recovered = a.wait_for("the frozen pod running again", || {
        let p = a.pod(ns, "frozen")?;
        let c = &p["status"]["containerStatuses"][0];
        (c["state"]["running"].is_object() && c["containerID"] != frozen_id.as_str()).then_some(p)
    });
    eprintln!(
        "frozen pod running again {:?} after the agent started",
        start.elapsed()
    );
    assert_eq!(
        recovered["status"]["containerStatuses"][0]["restartCount"], 1,
        "{recovered}"
    );
    let log = a.log();
    assert!(
        log.contains("shim unresponsive: killed"),
        "{}",
        tail(&log, 30)
    );
    drop(held);
}

/// The processes whose command line holds `marker` (the containers' own, seen from the host).
fn instances(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).replace('\0', " ").trim() == format!("sleep {marker}")
            })
        })
        .count()
}

/// Issue 17: a container whose shim is frozen has an Unknown state. It is never read as
/// exited with code 0 (a `Never` pod must not read Succeeded), and no second instance starts
/// while the first may still run: it is killed first, then its real end decides.
///
/// Note: the shim is frozen while no agent runs, and the next agent's start-up finds it
/// unresponsive and kills it before the pod's worker looks, so this checks the end-to-end
/// promises (never Succeeded, never two instances, Never not run again) rather than the
/// worker's Unknown branch itself, which `podmanager::unknown` and the status tests cover.
#[test]
fn a_container_of_a_frozen_shim_is_unknown_killed_first_and_never_succeeded() {
    for (policy, marker) in [("Never", "1017"), ("Always", "1018")] {
        let mut a = Agent::new(&format!("unknown-{}", policy.to_lowercase()));
        let ns = "rb-unknown";
        let mut p = pod(ns, "u");
        p["spec"]["restartPolicy"] = json!(policy);
        p["spec"]["containers"][0]["command"] =
            json!(["sh", "-c", format!("echo up; exec sleep {marker}")]);
        a.write("u.json", &p);
        a.start(&[]);
        let first = a.wait_running(ns, "u");
        let id = first.trim_start_matches("containerd://").to_string();
        let shim = shim_of(&a, std::slice::from_ref(&id));
        assert_eq!(instances(marker), 1);
        // Frozen while no agent runs: the next agent has no watch on it and must ask it.
        a.stop();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        a.start(&[]);
        let mut phases: Vec<String> = Vec::new();
        let mut most = 0;
        let end = a.wait_for(&format!("{policy}: the frozen container's end"), || {
            most = most.max(instances(marker));
            let p = a.pod(ns, "u")?;
            let phase = p["status"]["phase"].as_str().unwrap_or("").to_string();
            let c = p["status"]["containerStatuses"][0].clone();
            let state = c["state"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default();
            let seen = format!("{phase}/{state}/{}", c["containerID"]);
            if phases.last() != Some(&seen) {
                phases.push(seen);
            }
            let done = match policy {
                "Never" => phase == "Failed",
                _ => c["state"]["running"].is_object() && c["containerID"] != first.as_str(),
            };
            done.then_some(p)
        });
        eprintln!("{policy}: states seen: {phases:?}");

        assert!(
            !phases.iter().any(|s| s.starts_with("Succeeded")),
            "{policy}: {phases:?}"
        );
        assert!(
            most <= 1,
            "{policy}: {most} instances ran at once: {phases:?}"
        );
        let c = &end["status"]["containerStatuses"][0];
        match policy {
            "Never" => {
                let t = &c["state"]["terminated"];
                assert_ne!(t["exitCode"], 0, "{end}");
                assert_eq!(
                    c["containerID"],
                    first.as_str(),
                    "never started again: {end}"
                );
            }
            _ => assert_eq!(c["restartCount"], 1, "{end}"),
        }
        assert_eq!(instances(marker), usize::from(policy == "Always"));
        a.stop();
    }
}
