//! One real agent for a test: its own dirs, the test image imported, pods in its manifest dir,
//! its own kubelet API port; killed and cleaned up when dropped. Shared by the newer test files
//! (`#[path = "common/agent.rs"] mod agent;` beside `mod host;`).

use super::host::{tail, wait_until, Host, BIN, IMAGE};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running agent.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub host: Host,
    child: Option<Child>,
    /// Its kubelet API port on 127.0.0.1.
    pub port: u16,
    tag: String,
    extra: Vec<String>,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Agent {
    /// Starts an agent with `extra` flags and `pods` in its manifest dir.
    pub fn start(tag: &str, extra: &[&str], pods: &[Value]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix(&format!("edged-{tag}-"))
            .tempdir_in("/tmp")
            .expect("temp dir");
        for d in ["root", "logs", "manifests"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let host = Host::new(dir.path());
        host.import_test_image();
        let mut a = Agent {
            host,
            dir,
            child: None,
            port: free_port(),
            tag: tag.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for p in pods {
            a.add_pod(p);
        }
        a.spawn();
        a
    }

    /// Runs the agent binary (its log appended to `agent.log`).
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("--root-dir")
            .arg(self.root())
            .arg("--pod-log-dir")
            .arg(self.logs())
            .arg("--pod-manifest-path")
            .arg(self.dir.path().join("manifests"))
            .args(["--file-check-frequency", "1s", "--node-name", &self.tag])
            .args(["--node-ip", "127.0.0.1", "--image-gc-high-threshold", "100"])
            .args(["--port", &self.port.to_string()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start edged");
        self.child = Some(child);
    }

    /// SIGKILL: the agent alone goes (its shims and containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: the agent stops as its service manager stops it, and is waited for.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    /// Starts the agent again, with the same dirs and flags, after [`Agent::kill9`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the agent still runs");
        self.spawn();
    }

    /// A power cut: the agent, every shim and container process killed at once, and the
    /// mounts (pinned namespaces, tmpfs volumes, rootfs overlays) undone, as a reboot does.
    pub fn power_cut(&mut self) {
        self.kill9();
        self.host.kill_processes();
        self.wait_for("every container process gone", || {
            self.host
                .container_pids()
                .into_iter()
                .all(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .map(|s| {
                            s.rsplit(')')
                                .next()
                                .unwrap_or("")
                                .trim_start()
                                .starts_with('Z')
                        })
                        .unwrap_or(true)
                })
                .then_some(())
        });
        self.host.unmount_all();
    }

    /// Puts `pod` in the manifest dir.
    pub fn add_pod(&self, pod: &Value) {
        let name = pod["metadata"]["name"].as_str().unwrap();
        std::fs::write(
            self.dir.path().join(format!("manifests/{name}.json")),
            pod.to_string(),
        )
        .unwrap();
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// `127.0.0.1:<port>`.
    pub fn api(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits (up to the harness's limit) for `f` to give something; the agent's log on failure.
    pub fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.agent_log(), f)
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        self.host
            .get("pods")
            .into_iter()
            .find(|p| p["metadata"]["name"] == name)
    }

    /// Waits until the pod's status satisfies `ok`.
    pub fn wait_pod(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(&format!("pod {name}: {what}"), || {
            self.pod(name).filter(|p| ok(p))
        })
    }

    /// Waits until every container of the pod runs.
    pub fn wait_running(&self, name: &str) -> Value {
        self.wait_pod(name, "running", |p| {
            p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|cs| {
                    !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object())
                })
        })
    }

    /// `GET path` on the agent's API: status, head, body (a chunked body decoded).
    pub fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        let s = self.wait_for("the kubelet API to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
        http_get(s, path)
    }

    /// `edged ARGS` beside the agent (its dirs and API port given).
    pub fn edged(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root-dir")
            .arg(self.root())
            .arg("--pod-log-dir")
            .arg(self.logs())
            .args(["--port", &self.port.to_string()])
            .args(args);
        c
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("EDGED_TEST_KEEP_LOGS").is_some() {
            eprintln!("agent log:\n{}", tail(&self.agent_log(), 80));
        }
        self.host.clean_up();
    }
}

/// Sends `GET path` on `s` and reads the whole response: status, head, body.
pub fn http_get(mut s: TcpStream, path: &str) -> (u16, String, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("response head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let body = if head.contains("Transfer-Encoding: chunked") {
        read_chunked(&mut r)
    } else {
        let mut b = Vec::new();
        r.read_to_end(&mut b).unwrap();
        b
    };
    (status, head, body)
}

/// Decodes a chunked body to its end (the last, empty chunk); panics if it is cut short.
pub fn read_chunked(r: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        r.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?} after {} bytes", body.len()));
        let mut chunk = vec![0u8; n + 2];
        r.read_exact(&mut chunk).unwrap();
        assert_eq!(&chunk[n..], b"\r\n", "chunk end");
        if n == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// A container running `sh -c script` from the test image.
pub fn sh(name: &str, script: &str) -> Value {
    json!({"name": name, "image": IMAGE, "imagePullPolicy": "Never",
           "command": ["sh", "-c", script]})
}

/// A pod in `default` with `containers` and `extra` spec fields.
pub fn pod(name: &str, containers: Vec<Value>, extra: Value) -> Value {
    let mut spec = json!({"terminationGracePeriodSeconds": 1, "containers": containers});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}
