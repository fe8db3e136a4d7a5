//! The prober: liveness, readiness and startup probes of running containers, each a task on
//! the agent's executor, with the kubelet's fields and defaults (initialDelaySeconds,
//! periodSeconds, timeoutSeconds, successThreshold, failureThreshold).
//!
//! Results: readiness starts false, liveness true, startup false; a result changes only after
//! its threshold of consecutive outcomes. While a startup probe has not passed, the other two
//! do not run. A change is sent to the pod's worker, which restarts on liveness or startup
//! failure and rebuilds the status on readiness changes.

pub mod grpc;
pub mod handlers;
pub mod hpack;

use crate::api::{Container, ContainerPort, Probe};
use crate::clock::{SharedClock, SystemClock};
use crate::runtime::Runtime;
use handlers::Outcome;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The three kinds of probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Failing: the container is killed and restarted as its restart policy says.
    Liveness,
    /// Failing: the container (and the pod) is not Ready.
    Readiness,
    /// Until it passes, liveness and readiness are not probed; failing: as liveness.
    Startup,
}

impl ProbeKind {
    fn initial(self) -> bool {
        matches!(self, ProbeKind::Liveness)
    }
}

/// A result change, for the pod's worker.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeEvent {
    /// The probed container's pod.
    pub pod_uid: String,
    /// The probed container instance.
    pub container_id: String,
    /// The container's name in the pod spec.
    pub container_name: String,
    /// Which probe changed.
    pub kind: ProbeKind,
    /// The probe's result now.
    pub success: bool,
    /// The failure's text (for the container's status message and logs).
    pub message: Option<String>,
    /// A success with a warning (a redirect to another host): recorded as a ProbeWarning
    /// event; sent each time, not only on a change.
    pub warning: Option<String>,
}

/// A running container to probe.
#[derive(Clone, Debug)]
pub struct Target {
    /// `namespace/name`, for logs and events.
    pub pod: String,
    /// The pod's uid.
    pub pod_uid: String,
    /// The container instance probed.
    pub container_id: String,
    /// The container's name in the pod spec.
    pub container_name: String,
    /// When the instance started: `initialDelaySeconds` counts from here.
    pub started_at: SystemTime,
    /// The pod's network namespace (`None`: the host's).
    pub netns: Option<PathBuf>,
    /// The container's ports (a probe may name its port).
    pub ports: Vec<ContainerPort>,
}

type Key = (String, ProbeKind);

/// The probe manager (lives on the agent's local executor).
pub struct ProbeManager {
    ex: Rc<smol::LocalExecutor<'static>>,
    runtime: Arc<dyn Runtime>,
    /// What probe periods and initial delays are read and waited on.
    clock: SharedClock,
    events: async_channel::Sender<ProbeEvent>,
    results: Rc<RefCell<HashMap<Key, bool>>>,
    workers: RefCell<HashMap<String, Vec<smol::Task<()>>>>,
}

impl ProbeManager {
    /// A manager spawning probe tasks on `ex` and sending result changes to `events`.
    pub fn new(
        ex: Rc<smol::LocalExecutor<'static>>,
        runtime: Arc<dyn Runtime>,
        events: async_channel::Sender<ProbeEvent>,
    ) -> Rc<Self> {
        Self::with_clock(ex, runtime, events, SystemClock::shared())
    }

    /// A manager as [`ProbeManager::new`] whose probes keep time on `clock`.
    pub fn with_clock(
        ex: Rc<smol::LocalExecutor<'static>>,
        runtime: Arc<dyn Runtime>,
        events: async_channel::Sender<ProbeEvent>,
        clock: SharedClock,
    ) -> Rc<Self> {
        Rc::new(ProbeManager {
            ex,
            runtime,
            clock,
            events,
            results: Rc::new(RefCell::new(HashMap::new())),
            workers: RefCell::new(HashMap::new()),
        })
    }

    /// Starts the container's probes, once per container id.
    pub fn add(&self, target: Target, spec: &Container) {
        if self.workers.borrow().contains_key(&target.container_id) {
            return;
        }
        let mut tasks = Vec::new();
        let has_startup = spec.startup_probe.is_some();
        let (wake, woken) = async_channel::bounded(1);
        let wake_readiness = Rc::new(wake);
        for (kind, probe) in [
            (ProbeKind::Startup, &spec.startup_probe),
            (ProbeKind::Liveness, &spec.liveness_probe),
            (ProbeKind::Readiness, &spec.readiness_probe),
        ] {
            let Some(probe) = probe.clone() else { continue };
            self.results
                .borrow_mut()
                .insert((target.container_id.clone(), kind), kind.initial());
            let w = Worker {
                kind,
                probe,
                target: target.clone(),
                has_startup,
                wake_readiness: wake_readiness.clone(),
                woken: woken.clone(),
                runtime: self.runtime.clone(),
                clock: self.clock.clone(),
                results: self.results.clone(),
                events: self.events.clone(),
            };
            tasks.push(self.ex.spawn(w.run()));
        }
        self.workers.borrow_mut().insert(target.container_id, tasks);
    }

    /// Stops the probes of a container that is gone or being replaced.
    pub fn remove(&self, container_id: &str) {
        self.workers.borrow_mut().remove(container_id);
        self.results
            .borrow_mut()
            .retain(|(id, _), _| id != container_id);
    }

    /// Container ids being probed.
    pub fn probed(&self) -> Vec<String> {
        self.workers.borrow().keys().cloned().collect()
    }

    /// A probe's current result (`None`: the container has no such probe).
    pub fn result(&self, container_id: &str, kind: ProbeKind) -> Option<bool> {
        self.results
            .borrow()
            .get(&(container_id.to_string(), kind))
            .copied()
    }
}

struct Worker {
    kind: ProbeKind,
    probe: Probe,
    target: Target,
    has_startup: bool,
    /// Wakes the readiness worker of the same container (sent by the startup worker).
    wake_readiness: Rc<async_channel::Sender<()>>,
    /// The readiness worker's wake-up.
    woken: async_channel::Receiver<()>,
    runtime: Arc<dyn Runtime>,
    clock: SharedClock,
    results: Rc<RefCell<HashMap<Key, bool>>>,
    events: async_channel::Sender<ProbeEvent>,
}

impl Worker {
    /// An event of this worker's probe on instance `id`.
    fn event(
        &self,
        id: &str,
        success: bool,
        message: Option<String>,
        warning: Option<String>,
    ) -> ProbeEvent {
        ProbeEvent {
            pod_uid: self.target.pod_uid.clone(),
            container_id: id.to_string(),
            container_name: self.target.container_name.clone(),
            kind: self.kind,
            success,
            message,
            warning,
        }
    }

    async fn run(self) {
        let period = Duration::from_secs(self.probe.period() as u64);
        let timeout = Duration::from_secs(self.probe.timeout() as u64);
        let delay = Duration::from_secs(self.probe.initial_delay() as u64);
        let id = self.target.container_id.clone();
        let mut last = self.kind.initial();
        let mut streak: (bool, i32) = (last, 0);
        loop {
            let since_start = self
                .clock
                .now_wall()
                .duration_since(self.target.started_at)
                .unwrap_or_default();
            if since_start < delay {
                self.clock.sleep(delay - since_start).await;
                continue;
            }
            let startup_pending = self.kind != ProbeKind::Startup
                && self.has_startup
                && self.results.borrow().get(&(id.clone(), ProbeKind::Startup)) != Some(&true);
            if !startup_pending {
                let outcome = self.probe_once(timeout).await;
                let ok = !matches!(outcome, Outcome::Failure(_));
                if let Outcome::Warning(w) = &outcome {
                    let _ = self
                        .events
                        .send(self.event(&id, true, None, Some(w.clone())))
                        .await;
                }
                streak = if streak.0 == ok {
                    (ok, streak.1 + 1)
                } else {
                    (ok, 1)
                };
                let needed = if ok {
                    self.probe.success_threshold()
                } else {
                    self.probe.failure_threshold()
                };
                // Liveness and startup need one success to stay up; kubelet forces threshold 1.
                let needed = if ok && self.kind != ProbeKind::Readiness {
                    1
                } else {
                    needed
                };
                if streak.1 >= needed && ok != last {
                    last = ok;
                    if !self.results.borrow().contains_key(&(id.clone(), self.kind)) {
                        return; // removed meanwhile
                    }
                    self.results
                        .borrow_mut()
                        .insert((id.clone(), self.kind), ok);
                    let message = match &outcome {
                        Outcome::Failure(m) => Some(m.clone()),
                        Outcome::Success | Outcome::Warning(_) => None,
                    };
                    tracing::info!(
                        pod = %self.target.pod,
                        container = %self.target.container_name,
                        probe = ?self.kind,
                        result = if ok { "success" } else { "failure" },
                        message = message.as_deref().unwrap_or(""),
                        "probe result changed"
                    );
                    let _ = self.events.send(self.event(&id, ok, message, None)).await;
                }
                // A passed startup probe is not run again; readiness is probed at once.
                if self.kind == ProbeKind::Startup && last {
                    let _ = self.wake_readiness.try_send(());
                    return;
                }
            }
            if self.kind == ProbeKind::Readiness {
                let woken = self.woken.clone();
                smol::future::or(self.clock.sleep(period), async {
                    let _ = woken.recv().await;
                })
                .await;
            } else {
                self.clock.sleep(period).await;
            }
        }
    }

    async fn probe_once(&self, timeout: Duration) -> Outcome {
        let p = &self.probe;
        let t = &self.target;
        if let Some(e) = &p.exec {
            handlers::exec(self.runtime.clone(), &t.container_id, &e.command, timeout).await
        } else if let Some(h) = &p.http_get {
            handlers::http(h, &t.ports, t.netns.clone(), timeout).await
        } else if let Some(s) = &p.tcp_socket {
            handlers::tcp(s, &t.ports, t.netns.clone(), timeout).await
        } else if let Some(g) = &p.grpc {
            grpc::probe(g, t.netns.clone(), timeout).await
        } else {
            Outcome::Failure("the probe names no handler (exec, httpGet, tcpSocket or grpc)".into())
        }
    }
}

/// A local TCP port nothing listens on, for tests of refused connections. The port stays
/// bound (without `listen`) while the returned socket lives, so no other test running beside
/// can take it: a connection to it is refused, never answered by a stranger.
#[cfg(test)]
pub(crate) fn closed_port() -> (std::os::fd::OwnedFd, u16) {
    use nix::sys::socket::{
        bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("a TCP socket");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .expect("bind 127.0.0.1:0");
    let addr: SockaddrIn =
        getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).expect("the bound address");
    (fd, addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::runtime::fake::{Call, FakeRuntime};
    use crate::runtime::{ContainerConfig, ExecResult, PodSandboxConfig};
    use serde_json::json;

    /// Runs the probe tasks until `sleepers` of them wait on the clock and nothing else runs
    /// (twice in a row: the exec ends on a blocking thread).
    fn settle(ex: &smol::LocalExecutor<'static>, clock: &ManualClock, sleepers: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut quiet = 0;
        while quiet < 2 {
            if ex.try_tick() {
                while ex.try_tick() {}
                quiet = 0;
            } else if clock.sleepers() >= sleepers {
                quiet += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
            assert!(std::time::Instant::now() < deadline, "probes never slept");
        }
    }

    fn exec_result(code: i32, out: &str) -> crate::runtime::Result<ExecResult> {
        Ok(ExecResult {
            exit_code: code,
            stdout: out.as_bytes().to_vec(),
            stderr: Vec::new(),
        })
    }

    /// A liveness probe fails only after failureThreshold failures in a row, one period
    /// apart on the probe's clock, and one success brings it back.
    #[test]
    fn liveness_fails_after_its_failure_threshold() {
        let clock = ManualClock::new();
        let rt = Arc::new(FakeRuntime::with_clock(clock.shared()));
        let sandbox = PodSandboxConfig {
            uid: "u1".into(),
            ..Default::default()
        };
        rt.run_pod_sandbox(&sandbox).expect("sandbox");
        let config = ContainerConfig {
            name: "app".into(),
            ..Default::default()
        };
        let id = rt.create_container("u1", &config).expect("create");
        rt.start_container(&id).expect("start");
        rt.set_exec("app", exec_result(1, "down"));
        let ex = Rc::new(smol::LocalExecutor::new());
        let (tx, rx) = async_channel::unbounded();
        let pm = ProbeManager::with_clock(ex.clone(), rt.clone(), tx, clock.shared());
        let spec: Container = serde_json::from_value(json!({
            "name": "app",
            "image": "busybox:1.36",
            "livenessProbe": {
                "exec": {"command": ["check"]},
                "initialDelaySeconds": 5,
                "periodSeconds": 10,
                "failureThreshold": 3,
            },
        }))
        .expect("spec");
        pm.add(
            Target {
                pod: "default/p".into(),
                pod_uid: "u1".into(),
                container_id: id.clone(),
                container_name: "app".into(),
                started_at: clock.now_wall(),
                netns: None,
                ports: Vec::new(),
            },
            &spec,
        );
        let execs = || {
            rt.calls()
                .iter()
                .filter(|c| matches!(c, Call::ExecSync { cmd, .. } if cmd == &["check"]))
                .count()
        };
        settle(&ex, &clock, 1);
        assert_eq!(execs(), 0, "probed within its initial delay");
        clock.advance(Duration::from_secs(5));
        settle(&ex, &clock, 1);
        assert_eq!(execs(), 1);
        clock.advance(Duration::from_secs(10));
        settle(&ex, &clock, 1);
        assert_eq!(execs(), 2);
        assert!(rx.try_recv().is_err(), "failed before its threshold");
        assert_eq!(pm.result(&id, ProbeKind::Liveness), Some(true));
        clock.advance(Duration::from_secs(10));
        settle(&ex, &clock, 1);
        assert_eq!(execs(), 3);
        let e = rx.try_recv().expect("a failure after 3 failed probes");
        assert_eq!(
            (e.kind, e.success, e.container_id.as_str()),
            (ProbeKind::Liveness, false, id.as_str())
        );
        assert!(
            e.message
                .as_deref()
                .unwrap_or("")
                .contains("exited with 1: down"),
            "{e:?}"
        );
        assert_eq!(pm.result(&id, ProbeKind::Liveness), Some(false));
        rt.set_exec("app", exec_result(0, ""));
        clock.advance(Duration::from_secs(10));
        settle(&ex, &clock, 1);
        let e = rx.try_recv().expect("one success brings liveness back");
        assert!(e.success);
        pm.remove(&id);
        settle(&ex, &clock, 0);
        clock.advance(Duration::from_secs(60));
        settle(&ex, &clock, 0);
        assert_eq!(execs(), 4, "a removed container is probed no more");
    }
}
