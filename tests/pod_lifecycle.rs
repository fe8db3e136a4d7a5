//! Pod lifecycle end to end (issue 4): the real `edged` binary as a child process with its own
//! root, log and manifest dirs, real shims and runc containers. Tests drive it only through
//! manifest files and look through `edged get pods -o json`, the CRI log files and runc's list.
//!
//! Tests may run in parallel: each has its own root dir and pod names; runc's state dir
//! (/run/containerd/runc/edged) is shared, so only the ids of a test's own bundles are looked at.
//! Run as root: `cargo test --test pod_lifecycle -- --test-threads=2`.

#[path = "common/host.rs"]
mod host;

use host::{cri_lines, tail, wait_until, Host, RuncEntry, BIN, IMAGE, RUNC_ROOT, WAIT};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One agent: its dirs, its process, and the cleanup of everything it made.
struct Agent {
    dir: tempfile::TempDir,
    host: Host,
    child: Option<Child>,
    starts: u32,
    /// Flags beside the ones every test agent gets.
    extra: Vec<String>,
}

impl Agent {
    /// Dirs for a new agent with the test image imported; the agent is not started.
    fn new(tag: &str) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix(&format!("edged-lc-{tag}-"))
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
            extra: Vec::new(),
        };
        a.host.import_test_image();
        a
    }

    /// Dirs and a running agent.
    fn started(tag: &str) -> Agent {
        let mut a = Agent::new(tag);
        a.start();
        a
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// The agent's own log of its `n`th start (1-based).
    fn agent_log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("agent-{n}.log"))
    }

    fn agent_log(&self, n: u32) -> String {
        std::fs::read_to_string(self.agent_log_path(n)).unwrap_or_default()
    }

    /// Starts the agent (no cloud: offline).
    fn start(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        self.starts += 1;
        let log = std::fs::File::create(self.agent_log_path(self.starts)).unwrap();
        let child = Command::new(BIN)
            .arg("--root-dir")
            .arg(self.root())
            .arg("--pod-log-dir")
            .arg(self.logs())
            .arg("--pod-manifest-path")
            .arg(self.manifests())
            .args([
                "--file-check-frequency",
                "1s",
                "--node-name",
                "lifecycle-node",
                "--node-ip",
                "127.0.0.1",
                "--log-level",
                "debug",
                // The test disk is shared with other work: image GC (tested in tests/gc.rs)
                // must not take this test's image away when the disk happens to be full.
                "--image-gc-high-threshold",
                "100",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start edged");
        self.child = Some(child);
    }

    /// SIGTERM and wait (the containers keep running).
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

    /// SIGKILL (a power cut of the agent alone).
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Writes a manifest file atomically (a hidden temp name is not read by the source).
    fn write(&self, file: &str, objects: &[Value]) {
        let text: Vec<String> = objects
            .iter()
            .map(|o| serde_json::to_string_pretty(o).unwrap())
            .collect();
        let tmp = self.manifests().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text.join("\n---\n")).unwrap();
        std::fs::rename(&tmp, self.manifests().join(file)).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.manifests().join(file)).unwrap();
    }

    /// `edged get pods -o json`: the items.
    fn pods(&self) -> Vec<Value> {
        self.host.get("pods")
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.pods()
            .into_iter()
            .find(|p| p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name)
    }

    /// Polls the pod until `ok` holds; fails the test with what was seen at the deadline.
    fn wait_pod(&self, ns: &str, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let p = self.pod(ns, name);
            if let Some(p) = &p {
                if ok(p) {
                    return p.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {ns}/{name}: {what} not seen in {WAIT:?}; last seen:\n{}\nagent log tail:\n{}",
                    p.map(|p| serde_json::to_string_pretty(&p["status"]).unwrap())
                        .unwrap_or_else(|| "(no pod)".into()),
                    tail(&self.agent_log(self.starts), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls until `ok` holds for some value `f` returns; fails with `what` at the deadline.
    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.agent_log(self.starts), f)
    }

    /// The CRI log of instance `attempt` of a container.
    fn log_file(&self, ns: &str, pod: &str, container: &str, attempt: u32) -> Option<PathBuf> {
        let prefix = format!("{ns}_{pod}_");
        std::fs::read_dir(self.logs())
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path().join(container).join(format!("{attempt}.log")))
            .filter(|p| p.exists())
    }

    /// The log lines (message part of the CRI format) of one instance.
    fn log_lines(&self, ns: &str, pod: &str, container: &str, attempt: u32) -> Vec<String> {
        self.log_file(ns, pod, container, attempt)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| cri_lines(&t))
            .unwrap_or_default()
    }

    /// Waits for a log line of one instance holding `needle`; returns every line.
    fn wait_log(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        attempt: u32,
        needle: &str,
    ) -> Vec<String> {
        self.wait_for(
            &format!("log line {needle:?} of {ns}/{pod}/{container}#{attempt}"),
            || {
                let lines = self.log_lines(ns, pod, container, attempt);
                lines.iter().any(|l| l.contains(needle)).then_some(lines)
            },
        )
    }

    /// A power cut: the agent, every shim and container process are killed at once, and the
    /// mounts (pinned namespaces, tmpfs volumes, rootfs overlays) go, as after a reboot.
    fn power_cut(&mut self) {
        self.kill9();
        self.host.kill_processes();
        // The processes are gone once their cgroups are empty.
        self.wait_for("every container process gone", || {
            self.host
                .container_pids()
                .into_iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists() || is_zombie(p))
                .then_some(())
        });
        self.host.unmount_all();
    }
}

impl Drop for Agent {
    /// Leaves nothing behind, also when the test failed: the agent, its shims and containers,
    /// runc state of its bundles, its mounts and pod cgroups. With `EDGED_TEST_KEEP_LOGS=DIR`
    /// the agent's own logs are copied there first.
    fn drop(&mut self) {
        self.kill9();
        if let Some(keep) = std::env::var_os("EDGED_TEST_KEEP_LOGS") {
            let name = self.dir.path().file_name().unwrap_or_default().to_owned();
            let to = Path::new(&keep).join(name);
            let _ = std::fs::create_dir_all(&to);
            for n in 1..=self.starts {
                let _ = std::fs::copy(self.agent_log_path(n), to.join(format!("agent-{n}.log")));
            }
        }
        self.host.clean_up();
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

// ---- pod JSON helpers ----

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn condition<'a>(p: &'a Value, kind: &str) -> &'a str {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
}

fn container<'a>(p: &'a Value, name: &str) -> &'a Value {
    container_in(p, "containerStatuses", name)
}

fn container_in<'a>(p: &'a Value, list: &str, name: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    p["status"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&NULL)
}

fn running(p: &Value, name: &str) -> bool {
    container(p, name)["state"]["running"].is_object()
}

fn waiting_reason<'a>(p: &'a Value, name: &str) -> &'a str {
    container(p, name)["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
}

fn restart_count(p: &Value, name: &str) -> i64 {
    container(p, name)["restartCount"].as_i64().unwrap_or(0)
}

/// The runtime id of a container status (`containerd://<id>`).
fn container_id(p: &Value, name: &str) -> String {
    container(p, name)["containerID"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("containerd://")
        .to_string()
}

fn running_and_ready(p: &Value) -> bool {
    phase(p) == "Running" && condition(p, "Ready") == "True"
}

fn time(v: &Value) -> std::time::SystemTime {
    edged::api::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("no time in {v}")))
        .unwrap_or_else(|| panic!("bad time {v}"))
}

/// A busybox container running `script`.
fn sh(name: &str, script: &str) -> Value {
    json!({"name": name, "image": IMAGE, "imagePullPolicy": "Never",
           "command": ["sh", "-c", script]})
}

/// A pod in `ns` with `containers`, a short grace period and `extra` merged into its spec.
fn pod(ns: &str, name: &str, containers: Vec<Value>, extra: Value) -> Value {
    let mut spec = json!({"terminationGracePeriodSeconds": 1, "containers": containers});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn config_map(ns: &str, name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": ns}, "data": data})
}

// ---- tests ----

#[test]
fn init_container_runs_to_success_before_the_app() {
    let a = Agent::started("init");
    let ns = "lc-init";
    let mut init = sh(
        "prepare",
        "sleep 2; echo prepared > /work/ready; echo init done",
    );
    init["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
    let mut app = sh(
        "app",
        "if [ -f /work/ready ]; then echo app saw $(cat /work/ready); else echo app saw nothing; fi; sleep 1000",
    );
    app["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
    a.write(
        "pod.json",
        &[pod(
            ns,
            "web",
            vec![app],
            json!({"initContainers": [init], "volumes": [{"name": "work", "emptyDir": {}}]}),
        )],
    );
    // While the init container runs, the conditions say what they wait for, as the
    // kubelet's do.
    let p = a.wait_pod(ns, "web", "the init container running", |p| {
        container_in(p, "initContainerStatuses", "prepare")["state"]["running"].is_object()
    });
    let initialized = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Initialized"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        initialized["message"], "containers with incomplete status: [prepare]",
        "{p}"
    );
    assert_eq!(waiting_reason(&p, "app"), "PodInitializing", "{p}");
    let p = a.wait_pod(ns, "web", "Running", |p| running(p, "app"));
    assert_eq!(condition(&p, "Initialized"), "True");
    let init = container_in(&p, "initContainerStatuses", "prepare");
    let done = &init["state"]["terminated"];
    assert_eq!(done["exitCode"], 0, "{init}");
    assert_eq!(done["reason"], "Completed", "{init}");
    let app_started = time(&container(&p, "app")["state"]["running"]["startedAt"]);
    assert!(
        app_started >= time(&done["finishedAt"]),
        "the app started before the init container finished: {p}"
    );
    assert!(a
        .log_lines(ns, "web", "prepare", 0)
        .contains(&"init done".to_string()));
    a.wait_log(ns, "web", "app", 0, "app saw");
    assert_eq!(
        a.log_lines(ns, "web", "app", 0),
        vec!["app saw prepared".to_string()]
    );
}

#[test]
fn env_from_a_config_map_key_and_env_from() {
    let a = Agent::started("env");
    let ns = "lc-env";
    let mut c = sh("app", "env | sort; sleep 1000");
    c["env"] = json!([
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]);
    c["envFrom"] = json!([{"prefix": "CFG_", "configMapRef": {"name": "settings"}}]);
    a.write(
        "pod.json",
        &[
            config_map(
                ns,
                "settings",
                json!({"greeting": "hello edge", "level": "3"}),
            ),
            pod(ns, "envpod", vec![c], json!({})),
        ],
    );
    let lines = a.wait_log(ns, "envpod", "app", 0, "GREETING=");
    for want in [
        "GREETING=hello edge",
        "POD=envpod",
        "CFG_greeting=hello edge",
        "CFG_level=3",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want} not in {lines:?}");
    }
}

#[test]
fn secret_volume_with_default_mode_0400() {
    let a = Agent::started("secret");
    let ns = "lc-secret";
    let mut c = sh(
        "app",
        "for f in /etc/creds/*; do stat -L -c 'mode %a %n' $f; done; echo pw=$(cat /etc/creds/password); sleep 1000",
    );
    c["volumeMounts"] = json!([{"name": "creds", "mountPath": "/etc/creds", "readOnly": true}]);
    a.write(
        "pod.json",
        &[
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
                   "type": "Opaque", "stringData": {"password": "hunter2"},
                   "data": {"user": "YWRtaW4="}}),
            pod(
                ns,
                "secpod",
                vec![c],
                json!({"volumes": [{"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}}]}),
            ),
        ],
    );
    let lines = a.wait_log(ns, "secpod", "app", 0, "pw=");
    assert!(
        lines.contains(&"mode 400 /etc/creds/password".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"mode 400 /etc/creds/user".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"pw=hunter2".to_string()), "{lines:?}");
}

#[test]
fn failing_liveness_probe_restarts_the_container() {
    let a = Agent::started("liveness");
    let ns = "lc-live";
    let mut c = sh(
        "app",
        "echo start; touch /tmp/healthy; sleep 2; rm /tmp/healthy; echo unhealthy now; sleep 1000",
    );
    c["livenessProbe"] = json!({"exec": {"command": ["cat", "/tmp/healthy"]},
                                "periodSeconds": 1, "failureThreshold": 1});
    a.write("pod.json", &[pod(ns, "live", vec![c], json!({}))]);
    let first = a.wait_pod(ns, "live", "Running", |p| running(p, "app"));
    let first_id = container_id(&first, "app");
    let p = a.wait_pod(ns, "live", "a restart", |p| restart_count(p, "app") >= 1);
    let last = &container(&p, "app")["lastState"]["terminated"];
    assert!(last.is_object(), "no lastState.terminated: {p}");
    assert_eq!(
        last["containerID"],
        format!("containerd://{first_id}"),
        "{p}"
    );
    assert_ne!(container_id(&p, "app"), first_id);
    a.wait_log(ns, "live", "app", 1, "start");
    assert!(a
        .agent_log(1)
        .contains("restarting container: it failed its liveness probe"));
}

#[test]
fn readiness_flips_true_then_false() {
    let a = Agent::started("ready");
    let ns = "lc-ready";
    let mut c = sh(
        "app",
        "touch /tmp/ready; sleep 4; rm /tmp/ready; echo not ready; sleep 1000",
    );
    c["readinessProbe"] = json!({"exec": {"command": ["cat", "/tmp/ready"]},
                                 "periodSeconds": 1, "failureThreshold": 1});
    a.write("pod.json", &[pod(ns, "flip", vec![c], json!({}))]);
    let p = a.wait_pod(ns, "flip", "Ready True", |p| {
        condition(p, "Ready") == "True"
    });
    assert_eq!(container(&p, "app")["ready"], true);
    assert_eq!(condition(&p, "ContainersReady"), "True");
    let p = a.wait_pod(ns, "flip", "Ready False", |p| {
        condition(p, "Ready") == "False"
    });
    assert_eq!(container(&p, "app")["ready"], false);
    assert_eq!(phase(&p), "Running");
    assert_eq!(
        restart_count(&p, "app"),
        0,
        "readiness must not restart: {p}"
    );
}

#[test]
fn http_and_tcp_probes_reach_the_pod_network_namespace() {
    const PORT: u16 = 18417;
    let a = Agent::started("http");
    let ns = "lc-http";
    let mut web = sh(
        "web",
        &format!("mkdir -p /tmp/www; echo ok > /tmp/www/index.html; exec httpd -f -vv -p {PORT} -h /tmp/www"),
    );
    web["ports"] = json!([{"name": "http", "containerPort": PORT}]);
    web["readinessProbe"] =
        json!({"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1});
    web["livenessProbe"] = json!({"tcpSocket": {"port": PORT}, "periodSeconds": 1});
    // A probe of a page that is not there keeps its container unready.
    let mut miss = sh("miss", "sleep 1000");
    miss["readinessProbe"] =
        json!({"httpGet": {"path": "/missing.html", "port": PORT}, "periodSeconds": 1});
    a.write("pod.json", &[pod(ns, "web", vec![web, miss], json!({}))]);
    let p = a.wait_pod(ns, "web", "web ready", |p| {
        container(p, "web")["ready"] == true
    });
    assert_eq!(container(&p, "miss")["ready"], false, "{p}");
    assert_eq!(condition(&p, "Ready"), "False", "{p}");
    // The probes went to the pod's namespace: the host has no listener on the port.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", PORT)).is_err(),
        "something listens on the host's port {PORT}: the test cannot tell namespaces apart"
    );
    // httpd saw both probes' requests (its -vv log).
    a.wait_log(ns, "web", "web", 0, "/missing.html");
    a.wait_log(ns, "web", "web", 0, "/index.html");
    assert_eq!(restart_count(&p, "web"), 0, "{p}");
}

/// One HTTP server on the node for hooks that name a host: answers every request with a 500
/// (a hook takes any answer as success) and keeps each request line.
fn node_http_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut r = BufReader::new(&conn);
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut h = String::new();
            while r.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
                h.clear();
            }
            kept.lock().unwrap().push(line.trim_end().to_string());
            let _ = (&conn).write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, seen)
}

/// Removes the manifest `file` (the agent's only pods) and returns what `container` of pod
/// `ns/name` logged to its end, read through a handle opened before (the pod's log dir goes
/// with the pod), once every container is removed.
fn remove_and_read_log(a: &Agent, file: &str, ns: &str, name: &str, container: &str) -> String {
    let path = a.wait_for("the container's log file", || {
        a.log_file(ns, name, container, 0)
    });
    let mut log = std::fs::File::open(path).unwrap();
    a.remove(file);
    a.wait_for("the containers removed", || {
        (a.host.bundle_ids().is_empty() && a.host.runc().is_empty()).then_some(())
    });
    let mut text = String::new();
    log.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn http_lifecycle_hooks_reach_a_named_host_and_the_pod_itself() {
    const PORT: u16 = 18421;
    let (node_port, seen) = node_http_server();
    let a = Agent::started("hookhttp");
    let ns = "lc-hookhttp";
    let mut web = sh(
        "web",
        &format!("mkdir -p /tmp/www; exec httpd -f -vv -p {PORT} -h /tmp/www"),
    );
    // postStart to a host the hook names: sent from the node (the test's server); preStop
    // without a host: to the pod itself, from inside its network namespace.
    web["lifecycle"] = json!({
        "postStart": {"httpGet": {"host": "127.0.0.1", "port": node_port, "path": "/echo?msg=poststart"}},
        "preStop": {"httpGet": {"port": PORT, "path": "/prestop?msg=bye"}},
    });
    // tcpSocket is not a hook the kubelet can run: the postStart fails, the container is
    // killed and restarted, and a FailedPostStartHook event is recorded.
    let mut tcp = sh("tcp", "echo up; sleep 1000");
    tcp["lifecycle"] = json!({"postStart": {"tcpSocket": {"port": PORT}}});
    a.write("pod.json", &[pod(ns, "hooks", vec![web, tcp], json!({}))]);
    let p = a.wait_pod(ns, "hooks", "web running, tcp restarted", |p| {
        running(p, "web") && restart_count(p, "tcp") >= 1
    });
    a.wait_for("the postStart GET on the node", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|l| l == "GET /echo?msg=poststart HTTP/1.1")
            .then_some(())
    });
    assert_eq!(
        restart_count(&p, "web"),
        0,
        "a 500 answer is a hook that ran, not a failure: {p}"
    );
    let agent = a.agent_log(1);
    assert!(
        agent.contains("FailedPostStartHook") && agent.contains("container=tcp"),
        "no FailedPostStartHook for the tcpSocket hook:\n{}",
        tail(&agent, 30)
    );
    assert!(
        !agent.contains("container=web error"),
        "{}",
        tail(&agent, 30)
    );
    let text = remove_and_read_log(&a, "pod.json", ns, "hooks", "web");
    assert!(
        text.contains("url:/prestop"),
        "httpd never saw the preStop GET:\n{text}"
    );
}

/// An HTTPS preStop hook to a pod serving plain HTTP (busybox httpd answers the TLS hello
/// with a 400) is sent again over HTTP, as the kubelet's hook runner does, with its
/// LifecycleHTTPFallback warning.
#[test]
fn an_https_hook_answered_in_plain_http_falls_back_to_http() {
    const PORT: u16 = 18422;
    let a = Agent::started("hookfallback");
    let ns = "lc-hookfallback";
    let mut web = sh(
        "web",
        &format!("mkdir -p /tmp/www; exec httpd -f -vv -p {PORT} -h /tmp/www"),
    );
    web["lifecycle"] = json!({"preStop": {"httpGet":
        {"port": PORT, "scheme": "HTTPS", "path": "/prestop-fallback"}}});
    a.write("pod.json", &[pod(ns, "fallback", vec![web], json!({}))]);
    a.wait_pod(ns, "fallback", "web running", |p| running(p, "web"));
    let text = remove_and_read_log(&a, "pod.json", ns, "fallback", "web");
    assert!(
        text.contains("response:400") && text.contains("url:/prestop-fallback"),
        "httpd saw no TLS hello then GET:\n{text}"
    );
    let agent = a.agent_log(1);
    assert!(
        agent.lines().any(|l| l.contains("LifecycleHTTPFallback")
            && l.contains(&format!(
                "request to HTTPS lifecycle hook 127.0.0.1:{PORT} got HTTP response, retry with HTTP succeeded"
            ))),
        "{}",
        tail(&agent, 30)
    );
    assert!(
        !agent.contains("preStop hook failed"),
        "{}",
        tail(&agent, 30)
    );
}

#[test]
fn sidecars_stop_after_the_app_and_its_prestop_hook_in_reverse_order() {
    let a = Agent::started("sideorder");
    let ns = "lc-sideorder";
    let dir = std::env::temp_dir().join(format!("edged-sideorder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let note = |what: &str| format!("echo {what} >> /order/log");
    let term_trap = |name: &str| {
        let mut c = sh(
            name,
            &format!(
                "trap '{}; exit 0' TERM; while true; do sleep 1; done",
                note(&format!("{name}-term"))
            ),
        );
        c["volumeMounts"] = json!([{"name": "order", "mountPath": "/order"}]);
        c
    };
    let mut s1 = term_trap("side1");
    s1["restartPolicy"] = json!("Always");
    let mut s2 = term_trap("side2");
    s2["restartPolicy"] = json!("Always");
    let mut app = term_trap("app");
    // The hook outlasts a sidecar's TERM trap: a sidecar stopped at once would note first.
    app["lifecycle"] = json!({"preStop": {"exec": {"command": ["sh", "-c",
        format!("sleep 2; {}", note("app-hook"))]}}});
    a.write(
        "pod.json",
        &[pod(
            ns,
            "order",
            vec![app],
            json!({"terminationGracePeriodSeconds": 20, "initContainers": [s1, s2],
                   "volumes": [{"name": "order", "hostPath": {"path": dir, "type": "Directory"}}]}),
        )],
    );
    a.wait_pod(ns, "order", "app and sidecars running", |p| {
        running(p, "app")
            && p["status"]["initContainerStatuses"]
                .as_array()
                .is_some_and(|v| {
                    v.len() == 2 && v.iter().all(|c| c["state"]["running"].is_object())
                })
    });
    a.remove("pod.json");
    a.wait_for("the containers removed", || {
        (a.host.bundle_ids().is_empty() && a.host.runc().is_empty()).then_some(())
    });
    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        vec!["app-hook", "app-term", "side2-term", "side1-term"],
        "stop order (the app's hook and TERM, then the sidecars in reverse order)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn delete_honours_the_grace_period_of_a_term_trap() {
    let a = Agent::started("grace");
    let ns = "lc-grace";
    let mut c = sh(
        "app",
        "trap 'echo got TERM; sleep 2; echo bye; exit 0' TERM; echo started; while true; do sleep 1; done",
    );
    c["lifecycle"] =
        json!({"preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop > /proc/1/fd/1"]}}});
    // One that ignores SIGTERM is killed when the grace period ends.
    let stubborn = sh(
        "stubborn",
        "trap 'echo ignoring TERM' TERM; while true; do sleep 1; done",
    );
    a.write(
        "pod.json",
        &[pod(
            ns,
            "trap",
            vec![c, stubborn],
            json!({"terminationGracePeriodSeconds": 4}),
        )],
    );
    let p = a.wait_pod(ns, "trap", "Running", |p| {
        running(p, "app") && running(p, "stubborn")
    });
    let id = container_id(&p, "app");
    let stubborn_id = container_id(&p, "stubborn");
    a.wait_log(ns, "trap", "app", 0, "started");
    // Keep the log open: the pod's log dir goes with the pod.
    let mut log = std::fs::File::open(a.log_file(ns, "trap", "app", 0).unwrap()).unwrap();
    a.remove("pod.json");
    a.wait_for("the containers removed", || {
        (a.host.bundle_ids().is_empty() && a.host.runc().is_empty()).then_some(())
    });
    let mut text = String::new();
    log.read_to_string(&mut text).unwrap();
    let lines = cri_lines(&text);
    assert_eq!(
        lines,
        vec!["started", "pre-stop", "got TERM", "bye"],
        "log: {text}"
    );
    let agent = a.agent_log(1);
    assert!(
        !agent.contains(&format!("grace period over; SIGKILL container={id}")),
        "the container was SIGKILLed:\n{}",
        tail(&agent, 30)
    );
    assert!(
        agent.contains(&format!(
            "grace period over; SIGKILL container={stubborn_id}"
        )),
        "the stubborn container was not SIGKILLed:\n{}",
        tail(&agent, 30)
    );
    a.wait_for("the sandbox removed", || {
        a.host.sandbox_uids().is_empty().then_some(())
    });
}

#[test]
fn a_config_map_that_arrives_late() {
    let a = Agent::started("late");
    let ns = "lc-late";
    let mut c = sh("app", "echo value=$VALUE; sleep 1000");
    c["env"] = json!([{"name": "VALUE", "valueFrom": {"configMapKeyRef": {"name": "late-cm", "key": "v"}}}]);
    a.write("pod.json", &[pod(ns, "late", vec![c], json!({}))]);
    let p = a.wait_pod(ns, "late", "waiting on the configmap", |p| {
        let w = &container(p, "app")["state"]["waiting"];
        w["reason"] == "ContainerCreating"
            && w["message"].as_str().is_some_and(|m| m.contains("late-cm"))
    });
    assert_eq!(phase(&p), "Pending");
    assert!(
        a.host.runc().is_empty(),
        "a container runs without its configmap"
    );
    a.write(
        "cm.json",
        &[config_map(ns, "late-cm", json!({"v": "arrived"}))],
    );
    a.wait_pod(ns, "late", "Running", |p| {
        running(p, "app") && phase(p) == "Running"
    });
    let lines = a.wait_log(ns, "late", "app", 0, "value=");
    assert_eq!(lines, vec!["value=arrived"]);
}

#[test]
fn restart_policies_never_and_on_failure_reach_their_phases() {
    let a = Agent::started("policy");
    let ns = "lc-policy";
    let mut once = sh(
        "app",
        "if [ -f /data/ran ]; then echo second run; exit 0; fi; touch /data/ran; echo first run; exit 1",
    );
    once["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    a.write(
        "pods.json",
        &[
            pod(ns, "ok-never", vec![sh("app", "echo done; exit 0")], json!({"restartPolicy": "Never"})),
            pod(ns, "bad-never", vec![sh("app", "echo failing; exit 3")], json!({"restartPolicy": "Never"})),
            pod(
                ns,
                "onfailure",
                vec![once],
                json!({"restartPolicy": "OnFailure", "volumes": [{"name": "data", "emptyDir": {}}]}),
            ),
        ],
    );
    let p = a.wait_pod(ns, "ok-never", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(
        container(&p, "app")["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(restart_count(&p, "app"), 0);
    let p = a.wait_pod(ns, "bad-never", "Failed", |p| phase(p) == "Failed");
    let t = &container(&p, "app")["state"]["terminated"];
    assert_eq!(t["exitCode"], 3, "{p}");
    assert_eq!(t["reason"], "Error", "{p}");
    assert_eq!(restart_count(&p, "app"), 0, "Never restarted: {p}");
    let p = a.wait_pod(ns, "onfailure", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(restart_count(&p, "app"), 1, "{p}");
    assert_eq!(
        container(&p, "app")["lastState"]["terminated"]["exitCode"],
        1,
        "{p}"
    );
    assert_eq!(a.log_lines(ns, "onfailure", "app", 1), vec!["second run"]);
    for name in ["ok-never", "bad-never", "onfailure"] {
        assert_eq!(condition(&a.pod(ns, name).unwrap(), "Ready"), "False");
    }
}

#[test]
fn crash_loop_backs_off() {
    let a = Agent::started("crash");
    let ns = "lc-crash";
    a.write(
        "pod.json",
        &[pod(
            ns,
            "crash",
            vec![sh("app", "echo crashing; exit 1")],
            json!({}),
        )],
    );
    let p = a.wait_pod(ns, "crash", "CrashLoopBackOff", |p| {
        waiting_reason(p, "app") == "CrashLoopBackOff"
    });
    let c = container(&p, "app");
    assert!(
        c["state"]["waiting"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("back-off 10s"),
        "{c}"
    );
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 1, "{c}");
    assert_eq!(phase(&p), "Running");
    let count = restart_count(&p, "app");
    // The next instance starts only after the back-off: at least 10 s after the last exit.
    let p = a.wait_pod(ns, "crash", "one more restart", |p| {
        restart_count(p, "app") > count
    });
    let c = container(&p, "app");
    let finished = time(&c["lastState"]["terminated"]["finishedAt"]);
    let started = c["state"]["running"]["startedAt"]
        .as_str()
        .or(c["state"]["terminated"]["startedAt"].as_str())
        .map(|s| edged::api::parse_rfc3339(s).unwrap());
    if let Some(started) = started {
        let gap = started.duration_since(finished).unwrap_or_default();
        // rfc3339 times are to the second: allow one second of rounding.
        assert!(
            gap >= Duration::from_secs(9),
            "restarted after {gap:?}: {c}"
        );
    } else {
        // Waiting again: the back-off doubled.
        assert!(
            c["state"]["waiting"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("back-off 20s"),
            "{c}"
        );
    }
}

#[test]
fn an_update_restarts_only_the_changed_container() {
    let mut a = Agent::started("update");
    let ns = "lc-update";
    let make = |version: &str| {
        let mut b = sh("b", "echo b is $VERSION; sleep 1000");
        b["env"] = json!([{"name": "VERSION", "value": version}]);
        pod(ns, "two", vec![sh("a", "echo a; sleep 1000"), b], json!({}))
    };
    a.write("pod.json", &[make("1")]);
    let p = a.wait_pod(ns, "two", "both running", |p| {
        running(p, "a") && running(p, "b")
    });
    let (a_id, b_id) = (container_id(&p, "a"), container_id(&p, "b"));
    let a_pid = a.host.runc()[&a_id].pid;
    a.write("pod.json", &[make("2")]);
    let p = a.wait_pod(ns, "two", "b replaced", |p| {
        running(p, "b") && container_id(p, "b") != b_id
    });
    assert_eq!(container_id(&p, "a"), a_id, "a was restarted: {p}");
    assert_eq!(restart_count(&p, "a"), 0);
    assert_eq!(a.host.runc()[&a_id].pid, a_pid);
    assert_eq!(a.host.runc()[&a_id].status, "running");
    let b_attempt = restart_count(&p, "b") as u32;
    a.wait_log(ns, "two", "b", b_attempt, "b is 2");
    assert!(a
        .host
        .runc()
        .get(&b_id)
        .is_none_or(|e| e.status != "running"));
    a.stop();
}

#[test]
fn pods_beyond_max_pods_are_refused() {
    let mut a = Agent::new("maxpods");
    a.extra = vec!["--max-pods".into(), "1".into()];
    a.start();
    let ns = "lc-maxpods";
    a.write(
        "a.json",
        &[pod(
            ns,
            "first",
            vec![sh("app", "exec sleep 1000")],
            json!({}),
        )],
    );
    a.wait_pod(ns, "first", "Running", |p| phase(p) == "Running");
    a.write(
        "b.json",
        &[pod(
            ns,
            "second",
            vec![sh("app", "exec sleep 1000")],
            json!({}),
        )],
    );
    let p = a.wait_pod(ns, "second", "Failed OutOfpods", |p| {
        phase(p) == "Failed" && p["status"]["reason"] == "OutOfpods"
    });
    let msg = p["status"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("--max-pods 1"), "{msg}");
    // Only the first pod's container runs.
    assert_eq!(
        a.host
            .runc()
            .values()
            .filter(|e| e.status == "running")
            .count(),
        1
    );
    a.stop();
}

#[test]
fn image_pull_policy_never_with_a_missing_image() {
    let a = Agent::started("neverpull");
    let ns = "lc-neverpull";
    let mut c = sh("app", "true");
    c["image"] = json!("docker.io/library/not-here:1.0");
    c["imagePullPolicy"] = json!("Never");
    a.write("pod.json", &[pod(ns, "nopull", vec![c], json!({}))]);
    let p = a.wait_pod(ns, "nopull", "ErrImageNeverPull", |p| {
        waiting_reason(p, "app") == "ErrImageNeverPull"
    });
    let msg = container(&p, "app")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or("");
    assert!(msg.contains("not-here:1.0"), "{msg}");
    assert_eq!(phase(&p), "Pending");
    assert!(a.host.runc().is_empty());
}

/// Two pods using configMap, secret, emptyDir (disk and memory) volumes, with probes and an
/// init container that fills the memory emptyDir (gone after a reboot: it must run again).
fn durable_pods(a: &Agent, ns: &str) {
    let web = |name: &str| {
        let mut c = sh(
            "web",
            "echo greeting=$(cat /cfg/greeting) prep=$(cat /mem/prep); touch /scratch/x /tmp/ready; exec sleep 1000",
        );
        c["volumeMounts"] = json!([
            {"name": "cfg", "mountPath": "/cfg"},
            {"name": "sec", "mountPath": "/sec"},
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "mem", "mountPath": "/mem"}
        ]);
        c["readinessProbe"] =
            json!({"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1});
        c["livenessProbe"] =
            json!({"exec": {"command": ["cat", "/cfg/greeting"]}, "periodSeconds": 1});
        let mut init = sh("prep", "echo prepared > /mem/prep; echo init ran");
        init["volumeMounts"] = json!([{"name": "mem", "mountPath": "/mem"}]);
        pod(
            ns,
            name,
            vec![c, sh("side", "sleep 1000")],
            json!({"initContainers": [init], "volumes": [
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "sec", "secret": {"secretName": "sec"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}}
            ]}),
        )
    };
    a.write(
        "pods.json",
        &[
            config_map(ns, "cfg", json!({"greeting": "hi"})),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": ns},
                   "stringData": {"k": "v"}}),
            web("one"),
            web("two"),
        ],
    );
    // A finished pod: it must stay finished whatever happens to the node.
    let mut init = sh("prep", "echo init ran");
    init["volumeMounts"] = json!([{"name": "mem", "mountPath": "/mem"}]);
    a.write(
        "done.json",
        &[pod(
            ns,
            "done",
            vec![sh("app", "echo finished; exit 0")],
            json!({"restartPolicy": "Never", "initContainers": [init],
                   "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory"}}]}),
        )],
    );
    for name in ["one", "two"] {
        a.wait_pod(ns, name, "Running and Ready", running_and_ready);
        a.wait_log(ns, name, "web", 0, "greeting=hi prep=prepared");
    }
    a.wait_pod(ns, "done", "Succeeded", |p| phase(p) == "Succeeded");
}

/// The finished pod of [`durable_pods`] is still Succeeded, with the same instances.
fn assert_done_unchanged(a: &Agent, ns: &str, before: &Value) {
    let p = a.pod(ns, "done").unwrap();
    assert_eq!(phase(&p), "Succeeded", "{p}");
    assert_eq!(container_id(&p, "app"), container_id(before, "app"), "{p}");
    let init = |p: &Value| container_in(p, "initContainerStatuses", "prep")["containerID"].clone();
    assert_eq!(
        init(&p),
        init(before),
        "the init container of a finished pod ran again: {p}"
    );
    assert_eq!(p["status"]["startTime"], before["status"]["startTime"]);
}

/// The running entries of a runc list.
fn running_ids(m: &BTreeMap<String, RuncEntry>) -> BTreeMap<String, u32> {
    m.values()
        .filter(|e| e.status == "running")
        .map(|e| (e.id.clone(), e.pid))
        .collect()
}

#[test]
fn agent_restart_adopts_running_containers() {
    let mut a = Agent::started("adopt");
    let ns = "lc-adopt";
    durable_pods(&a, ns);
    let before = running_ids(&a.host.runc());
    assert_eq!(before.len(), 4, "{before:?}");
    let bundles = a.host.bundle_ids();
    assert_eq!(
        bundles.len(),
        8,
        "three init containers and five others: {bundles:?}"
    );
    let done = a.pod(ns, "done").unwrap();
    let start_times: Vec<Value> = ["one", "two"]
        .iter()
        .map(|n| a.pod(ns, n).unwrap()["status"]["startTime"].clone())
        .collect();
    a.stop();
    a.start();
    a.wait_for("the new agent adopted the containers", || {
        let log = a.agent_log(2);
        before
            .keys()
            .all(|id| log.contains(&format!("adopted container container={id}")))
            .then_some(())
    });
    // Readiness is probed again by the new agent before the pods are Ready.
    a.wait_for("readiness probed again", || {
        (a.agent_log(2)
            .matches("probe=Readiness result=\"success\"")
            .count()
            >= 2)
            .then_some(())
    });
    for name in ["one", "two"] {
        let p = a.wait_pod(ns, name, "Running and Ready", running_and_ready);
        assert_eq!(restart_count(&p, "web"), 0, "{p}");
        assert_eq!(restart_count(&p, "side"), 0, "{p}");
    }
    assert_eq!(
        running_ids(&a.host.runc()),
        before,
        "containers were replaced"
    );
    // Nothing ran again: the init containers neither.
    assert_eq!(a.host.bundle_ids(), bundles);
    for name in ["one", "two"] {
        let p = a.pod(ns, name).unwrap();
        assert_eq!(
            container_in(&p, "initContainerStatuses", "prep")["restartCount"],
            0,
            "{p}"
        );
    }
    for (name, t) in ["one", "two"].iter().zip(&start_times) {
        assert_eq!(&a.pod(ns, name).unwrap()["status"]["startTime"], t);
    }
    assert_done_unchanged(&a, ns, &done);
    a.stop();
}

#[test]
fn offline_reboot_brings_every_pod_back() {
    let mut a = Agent::started("reboot");
    let ns = "lc-reboot";
    durable_pods(&a, ns);
    let old: BTreeSet<String> = a.host.bundle_ids();
    assert_eq!(old.len(), 8);
    let done = a.pod(ns, "done").unwrap();
    let stored_before = a.host.get("configmaps").len() + a.host.get("secrets").len();
    a.power_cut();
    assert!(
        a.host.mounts().is_empty(),
        "mounts left: {:?}",
        a.host.mounts()
    );
    a.start();
    for name in ["one", "two"] {
        let p = a.wait_pod(ns, name, "Running and Ready again", |p| {
            running_and_ready(p)
                && !old.contains(&container_id(p, "web"))
                && running(p, "side")
                && !old.contains(&container_id(p, "side"))
        });
        assert_eq!(restart_count(&p, "web"), 1, "{p}");
    }
    // The dead instances are cleaned from runc's state (their shims died with them).
    a.wait_for("no runc state of the old instances", || {
        let now = a.host.runc();
        old.iter().all(|id| !now.contains_key(id)).then_some(())
    });
    assert_done_unchanged(&a, ns, &done);
    let now = a.host.runc();
    for id in &old {
        if let Some(e) = now.get(id) {
            assert_ne!(e.status, "running", "old container {id} runs: {now:?}");
        }
    }
    assert_eq!(running_ids(&now).len(), 4, "{now:?}");
    assert_eq!(
        a.host.get("configmaps").len() + a.host.get("secrets").len(),
        stored_before
    );
    assert_eq!(a.pods().len(), 3);
    // The init containers ran again in the new sandbox, and the apps see their volumes.
    for name in ["one", "two"] {
        a.wait_log(ns, name, "web", 1, "greeting=hi prep=prepared");
        let p = a.pod(ns, name).unwrap();
        let init = container_in(&p, "initContainerStatuses", "prep");
        assert!(
            !old.contains(
                &init["containerID"]
                    .as_str()
                    .unwrap_or("")
                    .replace("containerd://", "")
            ),
            "{init}"
        );
    }
    a.stop();
}

#[test]
fn orphans_of_a_pod_gone_from_the_store_are_removed_at_start() {
    let mut a = Agent::started("orphan");
    let ns = "lc-orphan";
    a.write(
        "pod.json",
        &[pod(ns, "lost", vec![sh("app", "sleep 1000")], json!({}))],
    );
    let p = a.wait_pod(ns, "lost", "Running", |p| running(p, "app"));
    let id = container_id(&p, "app");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    a.stop();
    // The pod leaves the store and the manifest dir while the agent is down: only its
    // containers, sandbox, volumes and logs are left.
    a.remove("pod.json");
    {
        let store = edged::metamanager::Store::open(&a.root().join("meta")).unwrap();
        let key = edged::metamanager::key(ns, "lost");
        assert!(store.delete(edged::metamanager::Table::Pod, &key).unwrap());
        store
            .delete(edged::metamanager::Table::PodStatus, &key)
            .unwrap();
    }
    assert!(a.host.runc().contains_key(&id));
    a.start();
    a.wait_for("the orphan removed", || {
        (a.host.runc().is_empty()
            && a.host.bundle_ids().is_empty()
            && a.host.sandbox_uids().is_empty())
        .then_some(())
    });
    assert!(a.agent_log(2).contains("orphan removed"));
    a.wait_for("the orphan's volumes and logs removed", || {
        let pods_dir = a.root().join("pods").join(&uid);
        let logs = std::fs::read_dir(a.logs()).map(|d| d.count()).unwrap_or(0);
        (!pods_dir.exists() && logs == 0).then_some(())
    });
    assert!(a.host.mounts().is_empty(), "{:?}", a.host.mounts());
    a.stop();
}

#[test]
fn a_pod_removed_while_the_agent_is_down_is_stopped_at_start() {
    let mut a = Agent::started("removed");
    let ns = "lc-removed";
    a.write(
        "pod.json",
        &[pod(ns, "gone", vec![sh("app", "sleep 1000")], json!({}))],
    );
    a.wait_pod(ns, "gone", "Running", |p| running(p, "app"));
    a.stop();
    a.remove("pod.json");
    a.start();
    a.wait_for("the pod's containers and sandbox removed", || {
        (a.host.runc().is_empty()
            && a.host.bundle_ids().is_empty()
            && a.host.sandbox_uids().is_empty())
        .then_some(())
    });
    assert!(a.pod(ns, "gone").is_none());
    assert!(a.host.mounts().is_empty(), "{:?}", a.host.mounts());
    a.stop();
}

#[test]
fn a_container_killed_from_outside_is_restarted() {
    let a = Agent::started("killed");
    let ns = "lc-killed";
    a.write(
        "pod.json",
        &[pod(
            ns,
            "victim",
            vec![sh("app", "echo up; sleep 1000")],
            json!({}),
        )],
    );
    let p = a.wait_pod(ns, "victim", "Running", |p| running(p, "app"));
    let id = container_id(&p, "app");
    let pid = a.host.runc()[&id].pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let p = a.wait_pod(ns, "victim", "restarted", |p| {
        restart_count(p, "app") == 1 && running(p, "app")
    });
    let last = &container(&p, "app")["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{p}");
    assert_eq!(last["containerID"], format!("containerd://{id}"), "{p}");
    a.wait_log(ns, "victim", "app", 1, "up");
}

#[test]
fn a_dead_shim_is_noticed_and_its_container_comes_back() {
    let a = Agent::started("shim");
    let ns = "lc-shim";
    a.write(
        "pod.json",
        &[pod(
            ns,
            "orphaned",
            vec![sh("app", "echo up; sleep 1000")],
            json!({}),
        )],
    );
    let p = a.wait_pod(ns, "orphaned", "Running", |p| running(p, "app"));
    let id = container_id(&p, "app");
    let pid = a.host.runc()[&id].pid;
    let shims = a.host.shim_pids();
    assert_eq!(shims.len(), 1, "one shim per pod");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let p = a.wait_pod(ns, "orphaned", "a new instance", |p| {
        running(p, "app") && container_id(p, "app") != id
    });
    assert_eq!(restart_count(&p, "app"), 1, "{p}");
    // The old process does not live on without its shim, and runc forgot it.
    a.wait_for("the old process gone", || {
        (!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid as i32)).then_some(())
    });
    a.wait_for("no runc state of the old instance", || {
        (!a.host.runc().contains_key(&id)).then_some(())
    });
    a.wait_log(ns, "orphaned", "app", 1, "up");
}

#[test]
fn a_pod_written_again_while_it_terminates_runs_again() {
    let a = Agent::started("recreate");
    let ns = "lc-recreate";
    // A slow stop (the trap takes 2 s) keeps the old pod terminating while it comes back.
    let c = sh(
        "app",
        "trap 'sleep 2; exit 0' TERM; echo up; while true; do sleep 1; done",
    );
    let p = pod(
        ns,
        "phoenix",
        vec![c],
        json!({"terminationGracePeriodSeconds": 10}),
    );
    a.write("pod.json", std::slice::from_ref(&p));
    let first = a.wait_pod(ns, "phoenix", "Running", |p| running(p, "app"));
    let old = container_id(&first, "app");
    a.remove("pod.json");
    a.wait_for("the pod deleted from the store", || {
        a.pod(ns, "phoenix").is_none().then_some(())
    });
    a.write("pod.json", &[p]);
    let again = a.wait_pod(ns, "phoenix", "Running with a new container", |p| {
        running(p, "app") && container_id(p, "app") != old
    });
    let id = container_id(&again, "app");
    assert_eq!(
        a.host.runc().get(&id).map(|e| e.status.as_str()),
        Some("running")
    );
    assert!(!a.host.runc().contains_key(&old));
}

#[test]
fn an_update_made_while_the_agent_is_down_restarts_only_that_container() {
    let mut a = Agent::started("offline-update");
    let ns = "lc-offline-update";
    let make = |version: &str| {
        let mut b = sh("b", "echo b is $VERSION; sleep 1000");
        b["env"] = json!([{"name": "VERSION", "value": version}]);
        pod(ns, "two", vec![sh("a", "sleep 1000"), b], json!({}))
    };
    a.write("pod.json", &[make("1")]);
    let p = a.wait_pod(ns, "two", "both running", |p| {
        running(p, "a") && running(p, "b")
    });
    let (a_id, b_id) = (container_id(&p, "a"), container_id(&p, "b"));
    let a_pid = a.host.runc()[&a_id].pid;
    a.stop();
    a.write("pod.json", &[make("2")]);
    a.start();
    let p = a.wait_pod(ns, "two", "b replaced", |p| {
        running(p, "b") && container_id(p, "b") != b_id
    });
    assert_eq!(container_id(&p, "a"), a_id, "a was restarted: {p}");
    assert_eq!(a.host.runc()[&a_id].pid, a_pid);
    a.wait_log(ns, "two", "b", restart_count(&p, "b") as u32, "b is 2");
    a.stop();
}

#[test]
fn liveness_is_probed_again_after_an_agent_restart() {
    let mut a = Agent::started("live-adopt");
    let ns = "lc-live-adopt";
    let mut c = sh("app", "touch /tmp/healthy; echo up; sleep 1000");
    c["livenessProbe"] = json!({"exec": {"command": ["cat", "/tmp/healthy"]},
                                "periodSeconds": 1, "failureThreshold": 1});
    a.write("pod.json", &[pod(ns, "live", vec![c], json!({}))]);
    let p = a.wait_pod(ns, "live", "Running", |p| running(p, "app"));
    let id = container_id(&p, "app");
    a.wait_log(ns, "live", "app", 0, "up");
    a.stop();
    // The container turns unhealthy while no agent watches it.
    let st = Command::new("runc")
        .args(["--root", RUNC_ROOT, "exec", &id, "rm", "/tmp/healthy"])
        .status()
        .unwrap();
    assert!(st.success());
    a.start();
    let p = a.wait_pod(ns, "live", "restarted by the new agent", |p| {
        restart_count(p, "app") >= 1 && running(p, "app")
    });
    assert_eq!(
        container(&p, "app")["lastState"]["terminated"]["containerID"],
        format!("containerd://{id}")
    );
    assert!(a.agent_log(2).contains("it failed its liveness probe"));
    a.stop();
}

#[test]
fn an_image_imported_later_lets_a_waiting_pod_start() {
    let a = Agent::started("late-image");
    let ns = "lc-late-image";
    let reference = "docker.io/library/busybox:late";
    let mut c = sh("app", "echo late image runs; sleep 1000");
    c["image"] = json!(reference);
    c["imagePullPolicy"] = json!("Never");
    a.write("pod.json", &[pod(ns, "waits", vec![c], json!({}))]);
    a.wait_pod(ns, "waits", "ErrImageNeverPull", |p| {
        waiting_reason(p, "app") == "ErrImageNeverPull"
    });
    // `edged image import` beside the running agent, as a user would.
    let tar = a.dir.path().join("late.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-test-image.sh");
    let st = Command::new(script)
        .arg(&tar)
        .args(["--name", reference])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new(BIN)
        .arg("--root-dir")
        .arg(a.root())
        .args(["image", "import"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.wait_pod(ns, "waits", "Running", |p| running(p, "app"));
    a.wait_log(ns, "waits", "app", 0, "late image runs");
}

#[test]
fn a_failing_init_container_is_retried_and_holds_the_app_back() {
    let a = Agent::started("init-retry");
    let ns = "lc-init-retry";
    let mut init = sh(
        "prepare",
        "if [ -f /work/tried ]; then echo second try; exit 0; fi; touch /work/tried; echo first try; exit 1",
    );
    init["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
    let mut app = sh("app", "echo app runs; ls /work; sleep 1000");
    app["volumeMounts"] = json!([{"name": "work", "mountPath": "/work"}]);
    a.write(
        "pod.json",
        &[pod(
            ns,
            "retry",
            vec![app],
            json!({"initContainers": [init], "volumes": [{"name": "work", "emptyDir": {}}]}),
        )],
    );
    let p = a.wait_pod(ns, "retry", "app running", |p| running(p, "app"));
    let init = container_in(&p, "initContainerStatuses", "prepare");
    assert_eq!(init["restartCount"], 1, "{p}");
    assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{p}");
    assert_eq!(init["lastState"]["terminated"]["exitCode"], 1, "{p}");
    assert_eq!(restart_count(&p, "app"), 0);
    // The app started once, after the second try.
    let app_started = time(&container(&p, "app")["state"]["running"]["startedAt"]);
    assert!(
        app_started >= time(&init["state"]["terminated"]["finishedAt"]),
        "{p}"
    );
    assert_eq!(a.log_lines(ns, "retry", "prepare", 1), vec!["second try"]);
    a.wait_log(ns, "retry", "app", 0, "app runs");
}

/// Termination messages (issue 22): what a container writes to its terminationMessagePath is
/// its terminated state's message, also for a non-root user and a path of its own; with
/// FallbackToLogsOnError a failed container with an empty file gets its log's tail; a
/// restarted container's last state keeps its message.
#[test]
fn termination_messages_reach_the_terminated_state() {
    let a = Agent::started("termmsg");
    let ns = "lc-termmsg";
    let mut custom = sh("app", "printf 'custom path' > /tmp/msg; exit 0");
    custom["terminationMessagePath"] = json!("/tmp/msg");
    custom["securityContext"] = json!({"runAsUser": 1000});
    let mut fallback = sh(
        "app",
        "for i in $(seq 1 100); do echo log line $i; done; exit 2",
    );
    fallback["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    let mut file_wins = sh(
        "app",
        "echo from the log; printf 'from the file' > /dev/termination-log; exit 1",
    );
    file_wins["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    let never = json!({"restartPolicy": "Never"});
    let mut restarted = sh("app", "n=$(cat /data/n 2>/dev/null || echo 0); echo $((n+1)) > /data/n; printf \"run $n\" > /dev/termination-log; [ $n -ge 1 ] && sleep 1000; exit 1");
    restarted["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    a.write(
        "pods.json",
        &[
            pod(
                ns,
                "default-path",
                vec![sh(
                    "app",
                    "echo -n 'bye now' > /dev/termination-log; exit 3",
                )],
                never.clone(),
            ),
            pod(ns, "custom", vec![custom], never.clone()),
            pod(ns, "fallback", vec![fallback], never.clone()),
            pod(ns, "file-wins", vec![file_wins], never.clone()),
            pod(
                ns,
                "plain-fail",
                vec![sh("app", "echo only the log; exit 1")],
                never,
            ),
            pod(
                ns,
                "restarted",
                vec![restarted],
                json!({"restartPolicy": "Always", "volumes": [{"name": "data", "emptyDir": {}}]}),
            ),
        ],
    );
    let msg = |p: &Value| container(p, "app")["state"]["terminated"]["message"].clone();
    let p = a.wait_pod(ns, "default-path", "Failed", |p| phase(p) == "Failed");
    assert_eq!(msg(&p), "bye now", "{p}");
    assert_eq!(container(&p, "app")["state"]["terminated"]["exitCode"], 3);
    let p = a.wait_pod(ns, "custom", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(msg(&p), "custom path", "{p}");
    let p = a.wait_pod(ns, "fallback", "Failed", |p| phase(p) == "Failed");
    let tail = msg(&p);
    let tail = tail.as_str().unwrap_or_else(|| panic!("no message: {p}"));
    assert!(tail.ends_with("log line 100\n"), "{tail}");
    assert!(tail.starts_with("log line 21\n"), "{tail}");
    let p = a.wait_pod(ns, "file-wins", "Failed", |p| phase(p) == "Failed");
    assert_eq!(msg(&p), "from the file", "{p}");
    // The default policy (File) never falls back to the log.
    let p = a.wait_pod(ns, "plain-fail", "Failed", |p| phase(p) == "Failed");
    assert!(msg(&p).is_null(), "{p}");
    let p = a.wait_pod(ns, "restarted", "running again", |p| {
        running(p, "app") && restart_count(p, "app") >= 1
    });
    assert_eq!(
        container(&p, "app")["lastState"]["terminated"]["message"],
        "run 0",
        "{p}"
    );
}

/// Issue 23's node conformance points: app containers wait behind init containers with
/// PodInitializing and a finished init container is ready; a `windows` pod is refused with
/// PodOSNotSupported; activeDeadlineSeconds stops a pod with DeadlineExceeded, also when an
/// update lowers it.
#[test]
fn init_waiting_os_admission_and_active_deadline() {
    let a = Agent::started("conform");
    let ns = "lc-conform";
    let mut windows = pod(ns, "windows", vec![sh("app", "sleep 1000")], json!({}));
    windows["spec"]["os"] = json!({"name": "windows"});
    let deadline = pod(
        ns,
        "deadline",
        vec![sh("app", "sleep 1000")],
        json!({"activeDeadlineSeconds": 3}),
    );
    let lowered = pod(
        ns,
        "lowered",
        vec![sh("app", "sleep 1000")],
        json!({"activeDeadlineSeconds": 10000}),
    );
    let init = pod(
        ns,
        "init",
        vec![sh("app", "sleep 1000")],
        json!({"initContainers": [sh("setup", "sleep 4")]}),
    );
    a.write(
        "pods.json",
        &[
            windows.clone(),
            deadline.clone(),
            lowered.clone(),
            init.clone(),
        ],
    );

    let p = a.wait_pod(ns, "init", "the app waiting on its init container", |p| {
        container_in(p, "initContainerStatuses", "setup")["state"]["running"].is_object()
    });
    assert_eq!(waiting_reason(&p, "app"), "PodInitializing", "{p}");
    let p = a.wait_pod(ns, "init", "Running", |p| running(p, "app"));
    let setup = container_in(&p, "initContainerStatuses", "setup");
    assert_eq!(setup["state"]["terminated"]["exitCode"], 0, "{p}");
    assert_eq!(
        setup["ready"], true,
        "a finished init container is ready: {p}"
    );

    let p = a.wait_pod(ns, "windows", "refused", |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "PodOSNotSupported", "{p}");
    assert!(
        p["status"]["containerStatuses"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "a refused pod runs nothing: {p}"
    );

    let p = a.wait_pod(ns, "deadline", "DeadlineExceeded", |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "DeadlineExceeded", "{p}");
    assert_eq!(
        p["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    let id = container_id(&p, "app");
    a.wait_for("the deadline pod's container stopped", || {
        a.host
            .runc()
            .get(&id)
            .is_none_or(|e| e.status != "running")
            .then_some(())
    });

    // An update lowers the deadline of a running pod: it ends then. The same write labels the
    // refused pod: refused again, it is not logged again (a cloud relays such a pod back with
    // each status it is sent).
    a.wait_pod(ns, "lowered", "Running", |p| running(p, "app"));
    let mut lower = lowered;
    lower["spec"]["activeDeadlineSeconds"] = json!(2);
    let mut relabelled = windows;
    relabelled["metadata"]["labels"] = json!({"seen": "again"});
    a.write("pods.json", &[relabelled, deadline, lower, init]);
    let p = a.wait_pod(ns, "lowered", "DeadlineExceeded after the update", |p| {
        phase(p) == "Failed"
    });
    assert_eq!(p["status"]["reason"], "DeadlineExceeded", "{p}");
    let refusals = |again: bool| {
        a.agent_log(a.starts)
            .lines()
            .filter(|l| l.contains("lc-conform/windows") && l.contains("pod refused at admission"))
            .filter(|l| l.contains("admission again") == again)
            .count()
    };
    a.wait_for("the refused pod refused again", || {
        (refusals(true) > 0).then_some(())
    });
    assert_eq!(refusals(false), 1, "{}", a.agent_log(a.starts));
    let p = a.pod(ns, "windows").unwrap();
    assert_eq!(p["status"]["reason"], "PodOSNotSupported", "{p}");
}
