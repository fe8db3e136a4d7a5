//! gRPC probes end to end (issue 17): a real gRPC health server (grpcio's own
//! `grpc_health.v1` servicer, tests/fixtures/grpc_health_server.py) on the host, and a real
//! agent running a `hostNetwork` pod whose startup, liveness and readiness probes call it.
//! The test changes the served statuses and watches the pod's status and the agent's log.
//! Needs python3 with grpcio and grpcio-health-checking (scripts/setup.sh installs them).
//! Run as root: `cargo test --test probes_grpc`.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;

use agent::{pod, sh, Agent};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The Python health server: its port, its command pipe, and the Check calls it logged.
struct HealthServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    checks: Arc<Mutex<Vec<String>>>,
}

impl HealthServer {
    fn start() -> HealthServer {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/grpc_health_server.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3 (scripts/setup.sh installs it with grpcio)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let checks = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let log = checks.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port = first
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the health server did not start (is grpcio-health-checking installed?): \
                     {first:?} {:?}",
                    checks.lock().unwrap()
                )
            });
        HealthServer {
            child,
            stdin,
            stdout,
            port,
            checks,
        }
    }

    /// Sends one command and waits for its `ok`.
    fn command(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        assert_eq!(answer.trim(), "ok", "health server command {cmd:?}");
    }

    /// How many Check calls named `service` (`-` for "") so far.
    fn checks_of(&self, service: &str) -> usize {
        let prefix = format!("check {service} ");
        let checks = self.checks.lock().unwrap();
        checks.iter().filter(|l| l.starts_with(&prefix)).count()
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn container<'a>(p: &'a Value, name: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&NULL)
}

fn ready_condition(p: &Value) -> &str {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
}

fn restarts(p: &Value) -> i64 {
    container(p, "app")["restartCount"].as_i64().unwrap_or(0)
}

#[test]
fn grpc_probes_follow_the_health_service() {
    let mut server = HealthServer::start();
    server.command("set - SERVING");
    server.command("set db SERVING");
    let port = server.port;
    let mut app = sh("app", "echo started; exec sleep 100000");
    app["startupProbe"] =
        json!({"grpc": {"port": port}, "periodSeconds": 1, "failureThreshold": 30});
    app["livenessProbe"] =
        json!({"grpc": {"port": port}, "periodSeconds": 1, "failureThreshold": 1});
    app["readinessProbe"] = json!({"grpc": {"port": port, "service": "db"}, "periodSeconds": 1});
    let a = Agent::start(
        "grpc-probes",
        &[],
        &[pod("grpc", vec![app], json!({"hostNetwork": true}))],
    );

    // SERVING: started, live and ready; the probes reach the server as the agent's.
    let p = a.wait_pod("grpc", "Ready", |p| {
        ready_condition(p) == "True" && container(p, "app")["state"]["running"].is_object()
    });
    assert_eq!(container(&p, "app")["started"], true, "{p}");
    assert_eq!(restarts(&p), 0, "{p}");
    let probed = server.checks_of("-");
    a.wait_for("five more liveness checks", || {
        (server.checks_of("-") >= probed + 5).then_some(())
    });
    let p = a.pod("grpc").unwrap();
    assert_eq!(
        restarts(&p),
        0,
        "a SERVING liveness probe restarted the container: {p}"
    );
    assert_eq!(ready_condition(&p), "True", "{p}");
    let checks = server.checks.lock().unwrap().clone();
    assert!(
        checks.iter().all(|c| c.ends_with(" kube-probe/edged")),
        "every Check call comes from the agent's probe: {checks:?}"
    );

    // The readiness probe's service becomes unknown: NOT_FOUND makes the pod unready, and
    // readiness does not restart.
    server.command("forget db");
    let p = a.wait_pod("grpc", "not Ready", |p| ready_condition(p) == "False");
    assert_eq!(container(&p, "app")["ready"], false, "{p}");
    assert_eq!(restarts(&p), 0, "{p}");
    a.wait_for("the readiness failure's message in the agent log", || {
        a.agent_log()
            .lines()
            .any(|l| {
                l.contains("probe result changed")
                    && l.contains("Readiness")
                    && l.contains("rpc error: code = NotFound")
            })
            .then_some(())
    });

    // NOT_SERVING: the liveness probe fails and the container is restarted.
    server.command("set - NOT_SERVING");
    let p = a.wait_pod("grpc", "a restart", |p| restarts(p) >= 1);
    assert!(
        container(&p, "app")["lastState"]["terminated"].is_object(),
        "{p}"
    );
    let log = a.agent_log();
    assert!(
        log.contains("restarting container: it failed its liveness probe"),
        "{}",
        host::tail(&log, 40)
    );
    assert!(
        log.lines().any(|l| l.contains("Liveness")
            && l.contains(r#"service unhealthy (responded with "NOT_SERVING")"#)),
        "{}",
        host::tail(&log, 40)
    );
}
