//! The real pod manager and its workers on a [`FakeRuntime`] and a [`ManualClock`]: no
//! root, no shim, no real sleep. Back-offs and resyncs are waited out by moving the clock;
//! PLEG (the real one, over the fake) tells the workers what changed. The volume manager, the
//! LMDB store, the status and probe managers are the real ones, in a temporary directory.

use super::super::{Config, Parts, PodManager};
use crate::api::{self, Pod};
use crate::clock::{Clock, ManualClock};
use crate::metaclient::MetaClient;
use crate::metamanager::{MetaManager, Offline, Store};
use crate::pleg::Pleg;
use crate::prober::ProbeManager;
use crate::runtime::fake::{Call, FakeImages, FakeRuntime, Held};
use crate::runtime::{ContainerState, ErrorKind, Runtime, RuntimeError, Stage};
use crate::status::StatusManager;
use crate::volume::VolumeManager;
use serde_json::json;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One node: the pod manager over the fake runtime, and the means to drive it.
struct Node {
    ex: Rc<smol::LocalExecutor<'static>>,
    clock: ManualClock,
    rt: Arc<FakeRuntime>,
    pm: Rc<PodManager>,
    pleg: Pleg,
    _to_pods: async_channel::Receiver<crate::metamanager::Change>,
    probes: async_channel::Receiver<crate::prober::ProbeEvent>,
    _dir: tempfile::TempDir,
}

/// The agent's resync period.
const RESYNC: Duration = Duration::from_secs(10);

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let rt = Arc::new(FakeRuntime::with_clock(clock.shared()));
        let runtime: Arc<dyn Runtime> = rt.clone();
        let store = Arc::new(Store::open(&dir.path().join("meta")).expect("store"));
        let (tx, to_pods) = async_channel::unbounded();
        let meta = MetaClient::new(Arc::new(MetaManager::new(store, tx, Arc::new(Offline))));
        let ex = Rc::new(smol::LocalExecutor::new());
        let (probe_tx, probes) = async_channel::unbounded();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.53\n").expect("resolv.conf");
        let cfg = Config {
            node_name: "edge-1".into(),
            host_ip: "192.0.2.1".into(),
            log_dir: dir.path().join("logs"),
            resync: RESYNC,
            max_pods: 110,
            dns: crate::kuberuntime::DnsSettings {
                resolv_conf: resolv,
                ..Default::default()
            },
            sysctls: Default::default(),
            seccomp_root: dir.path().join("seccomp"),
        };
        let parts = Parts {
            runtime: runtime.clone(),
            images: Arc::new(FakeImages::new()),
            volumes: Arc::new(VolumeManager::new(dir.path().join("pods"))),
            status: StatusManager::with_clock(meta.clone(), clock.shared()),
            prober: ProbeManager::with_clock(ex.clone(), runtime.clone(), probe_tx, clock.shared()),
            meta,
            puller: None,
        };
        let pm = PodManager::with_clock(cfg, ex.clone(), parts, clock.shared());
        let pleg = Pleg::with_clock(runtime, clock.shared());
        Node {
            ex,
            clock,
            rt,
            pm,
            pleg,
            _to_pods: to_pods,
            probes,
            _dir: dir,
        }
    }

    /// Runs the tasks until each pod worker and each probed container's probe is parked on
    /// its timer (one sleep on the clock each: the tests give a container one probe at
    /// most) and nothing else is left to run.
    fn settle(&self) {
        self.settle_with(|n| n.pm.pod_uids().len() + n.pm.prober.probed().len());
    }

    /// Runs the tasks until as many sleeps as `sleepers` says (as things are now) wait on
    /// the clock and nothing is left to run (twice in a row, a little apart: blocking calls
    /// end on other threads).
    fn settle_with(&self, sleepers: impl Fn(&Node) -> usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut quiet = 0;
        while quiet < 2 {
            if self.ex.try_tick() {
                while self.ex.try_tick() {}
                quiet = 0;
            } else if self.clock.sleepers() >= sleepers(self) {
                quiet += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
            assert!(
                Instant::now() < deadline,
                "the tasks never all went to sleep ({} of {} asleep); probed {:?}; calls {:#?}",
                self.clock.sleepers(),
                sleepers(self),
                self.pm.prober.probed(),
                self.rt.calls()
            );
        }
    }

    /// Runs the workers until `cond` holds.
    fn until(&self, what: &str, cond: impl Fn(&Node) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while self.ex.try_tick() {}
            if cond(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never: {what}; calls: {:#?}",
                self.rt.calls()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// One PLEG relist, its events handed to the workers, then [`settle`](Self::settle).
    fn relist(&self) {
        let events = smol::block_on(self.ex.run(self.pleg.relist()));
        for e in &events {
            self.pm.on_lifecycle_event(e);
        }
        self.settle();
    }

    /// Hands the probe results that changed to the workers, as the agent does.
    fn forward_probes(&self) {
        while let Ok(e) = self.probes.try_recv() {
            self.pm.on_probe_event(&e);
        }
        self.settle();
    }

    fn advance(&self, d: Duration) {
        self.clock.advance(d);
        self.settle();
    }

    fn status(&self, uid: &str) -> api::PodStatus {
        self.pm.status.get(uid).expect("a status")
    }

    /// The (reason, message) container `name` waits with.
    fn waiting(&self, uid: &str, name: &str) -> Option<(String, String)> {
        let s = self.status(uid);
        let c = s
            .init_container_statuses
            .iter()
            .chain(&s.container_statuses)
            .find(|c| c.name == name)?;
        let w = c.state.waiting.as_ref()?;
        Some((
            w.reason.clone().unwrap_or_default(),
            w.message.clone().unwrap_or_default(),
        ))
    }

    /// (container, attempt) of every create so far.
    fn creates(&self) -> Vec<(String, u32)> {
        self.rt
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::CreateContainer { name, attempt, .. } => Some((name, attempt)),
                _ => None,
            })
            .collect()
    }

    /// When (seconds on the test clock since `t0`) each instance of `name` was started.
    fn starts_at(&self, name: &str, t0: Instant) -> Vec<u64> {
        self.rt
            .timed_calls()
            .into_iter()
            .filter(|(_, c)| matches!(c, Call::StartContainer { name: n, .. } if n == name))
            .map(|(at, _)| at.duration_since(t0).as_secs())
            .collect()
    }
}

fn pod(uid: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(
        json!({"metadata": {"name": format!("p-{uid}"), "namespace": "default", "uid": uid}, "spec": spec}),
    )
    .expect("test pod")
}

fn container(name: &str) -> serde_json::Value {
    json!({"name": name, "image": "busybox:1.36"})
}

#[test]
fn init_containers_run_in_order_before_the_app_containers() {
    let n = Node::new();
    n.rt.exit_on_start("init-1", Some(0));
    n.rt.exit_on_start("init-2", Some(0));
    let p = pod(
        "u1",
        json!({
            "initContainers": [container("init-1"), container("init-2")],
            "containers": [container("a"), container("b")],
        }),
    );
    n.pm.add(p);
    n.until("init-1 created", |n| !n.creates().is_empty());
    n.settle();
    assert_eq!(n.creates(), [("init-1".to_string(), 0)]);
    // Its exit, seen by PLEG, moves the pod on: one init step per sync.
    n.relist();
    n.until("init-2 created", |n| n.creates().len() == 2);
    n.relist();
    n.until("the app containers created", |n| n.creates().len() == 4);
    let names: Vec<String> = n.creates().into_iter().map(|(c, _)| c).collect();
    assert_eq!(names, ["init-1", "init-2", "a", "b"]);
    assert_eq!(
        n.rt.calls().first(),
        Some(&Call::RunPodSandbox {
            pod_uid: "u1".into()
        })
    );
    n.relist();
    let s = n.status("u1");
    assert_eq!(s.phase, "Running");
    assert!(s
        .container_statuses
        .iter()
        .all(|c| c.state.running.is_some()));
    let init: Vec<_> = s
        .init_container_statuses
        .iter()
        .map(|c| c.state.terminated.as_ref().map(|t| t.exit_code))
        .collect();
    assert_eq!(init, [Some(0), Some(0)]);
}

#[test]
fn a_crashing_container_restarts_after_a_doubling_back_off() {
    let n = Node::new();
    let t0 = n.clock.now_mono();
    n.rt.exit_on_start("app", Some(1));
    n.pm.add(pod("u1", json!({"containers": [container("app")]})));
    n.until("the first start", |n| n.starts_at("app", t0).len() == 1);
    // The first restart is at once; the back-off is 10 s after it.
    n.relist();
    n.until("the first restart", |n| n.starts_at("app", t0).len() == 2);
    n.relist();
    let (reason, message) = n.waiting("u1", "app").expect("waiting");
    assert_eq!(reason, "CrashLoopBackOff");
    assert!(
        message.starts_with("back-off 10s restarting failed container=app"),
        "{message}"
    );
    let mut expected = vec![0, 0];
    let mut at = 0;
    for delay in [10, 20, 40, 80] {
        n.advance(Duration::from_secs(delay - 1));
        assert_eq!(
            n.starts_at("app", t0).len(),
            expected.len(),
            "started before its {delay} s back-off ended"
        );
        n.advance(Duration::from_secs(1));
        at += delay;
        expected.push(at);
        n.until("the restart after the back-off", |n| {
            n.starts_at("app", t0).len() == expected.len()
        });
        n.relist();
        let (reason, message) = n.waiting("u1", "app").unwrap_or_else(|| {
            panic!(
                "not waiting: {:#?}\n{:#?}",
                n.status("u1").container_statuses,
                n.rt.timed_calls()
            )
        });
        assert_eq!(reason, "CrashLoopBackOff");
        let next = delay * 2;
        assert!(
            message.starts_with(&format!("back-off {next}s ")),
            "{message}"
        );
    }
    assert_eq!(n.starts_at("app", t0), expected);
    let attempts: Vec<u32> = n.creates().into_iter().map(|(_, a)| a).collect();
    assert_eq!(attempts, [0, 1, 2, 3, 4, 5]);
    assert_eq!(n.status("u1").container_statuses[0].restart_count, 5);
}

/// restartPolicy OnFailure restarts a failed container, not a completed one; Never restarts
/// neither.
#[test]
fn restart_policies_on_failure_and_never() {
    for (policy, code, restarts, phase) in [
        ("OnFailure", 1, true, None),
        ("OnFailure", 0, false, Some("Succeeded")),
        ("Never", 1, false, Some("Failed")),
        ("Never", 0, false, Some("Succeeded")),
        ("Always", 0, true, None),
    ] {
        let n = Node::new();
        n.rt.exit_on_start("app", Some(code));
        n.pm.add(pod(
            "u1",
            json!({"restartPolicy": policy, "containers": [container("app")]}),
        ));
        n.until("started", |n| !n.creates().is_empty());
        n.relist();
        n.advance(Duration::from_secs(300));
        n.relist();
        let case = format!("{policy}, exit {code}");
        assert_eq!(n.creates().len() > 1, restarts, "{case}: {:?}", n.creates());
        if let Some(phase) = phase {
            assert_eq!(n.status("u1").phase, phase, "{case}");
            assert_eq!(n.creates().len(), 1, "{case}");
        }
    }
}

#[test]
fn a_delete_stops_and_removes_everything() {
    let n = Node::new();
    let p = pod(
        "u1",
        json!({"containers": [container("a"), container("b")]}),
    );
    n.pm.add(p.clone());
    n.until("both running", |n| {
        n.rt.containers()
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .count()
            == 2
    });
    n.settle();
    n.rt.clear_calls();
    n.pm.delete(&crate::metamanager::PodRef::from(&p));
    n.until("the pod forgotten", |n| n.pm.pod_uids().is_empty());
    let calls = n.rt.calls();
    let stops: Vec<_> = calls
        .iter()
        .filter_map(|c| match c {
            Call::StopContainer { name, grace, .. } => Some((name.as_str(), grace.as_secs())),
            _ => None,
        })
        .collect();
    // Both get the pod's whole grace period (30 s by default), in parallel.
    assert_eq!(stops.len(), 2, "{calls:?}");
    assert!(
        stops.contains(&("a", 30)) && stops.contains(&("b", 30)),
        "{calls:?}"
    );
    let rest: Vec<_> = calls
        .iter()
        .filter(|c| !matches!(c, Call::StopContainer { .. }))
        .map(|c| match c {
            Call::StopPodSandbox { .. } => "stop sandbox".to_string(),
            Call::RemoveContainer { name, .. } => format!("remove {name}"),
            Call::RemovePodSandbox { .. } => "remove sandbox".to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        rest,
        ["stop sandbox", "remove a", "remove b", "remove sandbox"]
    );
    assert!(n.rt.containers().is_empty());
    assert!(n.rt.sandbox_uids().is_empty());
    assert!(n.pm.status.get("u1").is_none());
}

#[test]
fn a_spec_change_restarts_just_that_container() {
    let n = Node::new();
    let p = pod(
        "u1",
        json!({"containers": [container("a"), container("b")]}),
    );
    n.pm.add(p);
    n.until("both created", |n| n.creates().len() == 2);
    n.settle();
    n.rt.clear_calls();
    let mut b = container("b");
    b["env"] = json!([{"name": "MODE", "value": "new"}]);
    n.pm.update(pod("u1", json!({"containers": [container("a"), b]})));
    n.until("b created again", |n| !n.creates().is_empty());
    n.settle();
    let calls = n.rt.calls();
    assert!(
        calls.iter().all(|c| c.container() != Some("a")),
        "{calls:?}"
    );
    let steps: Vec<String> = calls
        .iter()
        .filter_map(|c| match c {
            Call::StopContainer { name, .. } => Some(format!("stop {name}")),
            Call::CreateContainer { name, attempt, .. } => Some(format!("create {name} {attempt}")),
            Call::StartContainer { name, .. } => Some(format!("start {name}")),
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["stop b", "create b 1", "start b"]);
    n.relist();
    let s = n.status("u1");
    let restarts: Vec<(&str, i32)> = s
        .container_statuses
        .iter()
        .map(|c| (c.name.as_str(), c.restart_count))
        .collect();
    assert_eq!(restarts, [("a", 0), ("b", 1)]);
}

/// A failed create or start shows as the kubelet's waiting reason for its stage, and the
/// container is tried again after its back-off.
#[test]
fn a_create_failure_shows_its_stage_in_the_waiting_reason() {
    for (stage, reason) in [
        (Stage::Create, "CreateContainerError"),
        (Stage::Config, "CreateContainerConfigError"),
        (Stage::Start, "RunContainerError"),
    ] {
        let n = Node::new();
        let e = RuntimeError::new("app", "create", ErrorKind::InvalidConfig, "no such binary")
            .during(stage);
        if stage == Stage::Start {
            n.rt.fail_next_start(e);
        } else {
            n.rt.fail_next_create(e);
        }
        n.pm.add(pod("u1", json!({"containers": [container("app")]})));
        n.until("the create tried", |n| !n.creates().is_empty());
        n.settle();
        let (got, message) = n.waiting("u1", "app").expect("waiting");
        assert_eq!(got, reason, "{stage:?}");
        assert!(message.contains("no such binary"), "{message}");
        assert_eq!(n.status("u1").phase, "Pending", "{stage:?}");
        // The failure counts as a restart: the next try waits out the back-off.
        n.advance(Duration::from_secs(10));
        n.until("the next try", |n| {
            n.rt.containers()
                .iter()
                .any(|c| c.state == ContainerState::Running)
        });
        n.settle();
        assert_eq!(n.waiting("u1", "app"), None, "{stage:?}");
    }
}

#[test]
fn pleg_turns_runtime_changes_into_events() {
    use crate::pleg::EventKind::*;
    let n = Node::new();
    let kinds = |n: &Node| -> Vec<(String, crate::pleg::EventKind)> {
        let mut v: Vec<_> = smol::block_on(n.pleg.relist())
            .into_iter()
            .map(|e| {
                (
                    n.rt.container_status(&e.container_id)
                        .map(|c| c.name)
                        .unwrap_or(e.container_id),
                    e.kind,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let rt = &n.rt;
    rt.run_pod_sandbox(&crate::runtime::PodSandboxConfig {
        uid: "u1".into(),
        ..Default::default()
    })
    .expect("sandbox");
    let cfg = |name: &str| crate::runtime::ContainerConfig {
        name: name.into(),
        ..Default::default()
    };
    let a = rt.create_container("u1", &cfg("a")).expect("a");
    rt.start_container(&a).expect("start a");
    let b = rt.create_container("u1", &cfg("b")).expect("b");
    assert_eq!(
        kinds(&n),
        [
            ("a".into(), ContainerStarted),
            ("b".into(), ContainerChanged)
        ]
    );
    assert_eq!(kinds(&n), []);
    rt.exit(&a, 2).expect("exit");
    rt.start_container(&b).expect("start b");
    assert_eq!(
        kinds(&n),
        [("a".into(), ContainerDied), ("b".into(), ContainerStarted)]
    );
    rt.stop_container(&b, Duration::ZERO).expect("stop");
    rt.remove_container(&a).expect("remove");
    assert_eq!(
        kinds(&n),
        [("b".into(), ContainerDied), (a.clone(), ContainerRemoved)]
    );
}

/// PLEG's loop relists every period on its clock, and at once on an exit event.
#[test]
fn pleg_relists_at_its_period_and_on_exits() {
    let n = Node::new();
    let pleg = Rc::new(Pleg::with_clock(n.rt.clone(), n.clock.shared()));
    let (tx, rx) = async_channel::unbounded();
    let _task = n.ex.spawn(pleg.run(Duration::from_secs(1), tx));
    n.settle_with(|_| 1);
    n.rt.run_pod_sandbox(&crate::runtime::PodSandboxConfig {
        uid: "u1".into(),
        ..Default::default()
    })
    .expect("sandbox");
    let cfg = crate::runtime::ContainerConfig {
        name: "a".into(),
        ..Default::default()
    };
    let a = n.rt.create_container("u1", &cfg).expect("create");
    n.rt.start_container(&a).expect("start");
    n.settle_with(|_| 1);
    assert!(rx.try_recv().is_err(), "relisted before its period");
    n.clock.advance(Duration::from_secs(1));
    n.settle_with(|_| 1);
    let e = rx.try_recv().expect("an event after the period");
    assert_eq!(
        (e.container_id.as_str(), e.kind),
        (a.as_str(), crate::pleg::EventKind::ContainerStarted)
    );
    // An exit wakes the loop without the clock moving.
    n.rt.exit(&a, 0).expect("exit");
    n.until("the died event", |_| {
        rx.try_recv()
            .is_ok_and(|e| e.kind == crate::pleg::EventKind::ContainerDied)
    });
}

#[test]
fn a_failing_sandbox_backs_off() {
    let mut d = None;
    let mut seen = Vec::new();
    for _ in 0..8 {
        let n = super::sandbox_backoff(d);
        seen.push(n.as_secs());
        d = Some(n);
    }
    assert_eq!(seen, [5, 10, 20, 40, 80, 160, 300, 300]);
}

/// A liveness probe failing failureThreshold times kills the container, which then restarts
/// (restartPolicy Always) as a new instance, probed again.
#[test]
fn a_failed_liveness_probe_restarts_the_container() {
    let n = Node::new();
    let mut app = container("app");
    app["livenessProbe"] = json!({
        "exec": {"command": ["healthy"]},
        "periodSeconds": 10,
        "failureThreshold": 3,
    });
    n.pm.add(pod(
        "u1",
        json!({"containers": [app], "terminationGracePeriodSeconds": 7}),
    ));
    n.until("app probed", |n| n.pm.prober.probed().len() == 1);
    n.settle();
    let first = n.rt.instances("app")[0].id.clone();
    n.rt.set_exec(
        "app",
        Ok(crate::runtime::ExecResult {
            exit_code: 1,
            stdout: b"sick".to_vec(),
            stderr: Vec::new(),
        }),
    );
    n.rt.clear_calls();
    for _ in 0..2 {
        n.advance(Duration::from_secs(10));
        n.forward_probes();
    }
    assert!(
        !n.rt
            .calls()
            .iter()
            .any(|c| matches!(c, Call::StopContainer { .. })),
        "killed before failureThreshold: {:?}",
        n.rt.calls()
    );
    n.advance(Duration::from_secs(10));
    n.forward_probes();
    n.until("app killed", |n| {
        n.rt.calls()
            .iter()
            .any(|c| matches!(c, Call::StopContainer { .. }))
    });
    n.settle();
    assert!(n.rt.calls().contains(&Call::StopContainer {
        id: first.clone(),
        name: "app".into(),
        grace: Duration::from_secs(7),
    }));
    assert!(
        !n.pm.prober.probed().contains(&first),
        "the killed instance is still probed"
    );
    // Its exit is seen at the next look and it starts again at once (no back-off yet).
    n.rt.set_exec(
        "app",
        Ok(crate::runtime::ExecResult {
            exit_code: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }),
    );
    n.relist();
    n.advance(Duration::from_secs(1));
    n.until("app started again", |n| n.creates().len() == 1);
    n.relist();
    assert_eq!(n.creates(), [("app".to_string(), 1)]);
    let second = n.rt.instances("app")[1].clone();
    assert_eq!(second.state, ContainerState::Running);
    assert_eq!(n.pm.prober.probed(), [second.id]);
}

/// Whether a status shows a running container or an address.
fn shows_running(s: &api::PodStatus) -> bool {
    s.pod_ip.is_some()
        || !s.pod_ips.is_empty()
        || s.container_statuses
            .iter()
            .any(|c| c.state.running.is_some())
}

/// A static pod keeps its uid: written again while its delete stops it, it runs again. From
/// its containers' kill until its new sandbox is up its status (kept, and stored: what
/// `edged get` shows) shows no running container and no address of the stopped incarnation.
#[test]
fn a_pod_added_again_while_it_stops_shows_no_stale_status() {
    let n = Node::new();
    let p = pod("u1", json!({"containers": [container("a")]}));
    let stored = |n: &Node| {
        smol::block_on(n.pm.meta.pod_status("default", "p-u1"))
            .expect("the store answers")
            .expect("a stored status")
    };
    n.pm.add(p.clone());
    n.until("running with an IP", |n| {
        n.pm.status.get("u1").is_some_and(|s| shows_running(&s))
    });
    n.settle();
    n.rt.hold(Held::RemovePodSandbox);
    n.rt.hold(Held::RunPodSandbox);
    n.pm.delete(&crate::metamanager::PodRef::from(&p));
    n.pm.add(p.clone());
    // The old sandbox being torn down, then the new one being made.
    for (call, count) in [(Held::RemovePodSandbox, 1), (Held::RunPodSandbox, 2)] {
        n.until(&format!("{call:?} number {count}"), |n| {
            n.rt.calls()
                .iter()
                .filter(|c| match call {
                    Held::RemovePodSandbox => matches!(c, Call::RemovePodSandbox { .. }),
                    Held::RunPodSandbox => matches!(c, Call::RunPodSandbox { .. }),
                })
                .count()
                == count
        });
        for s in [n.status("u1"), stored(&n)] {
            assert!(!shows_running(&s), "during {call:?}: {s:?}");
        }
        n.rt.release(call);
    }
    n.until("running with an IP again", |n| {
        n.pm.status.get("u1").is_some_and(|s| shows_running(&s))
    });
}

#[test]
fn volumes_change_with_their_sources_labels_and_annotations() {
    let base = pod("u-1", json!({"containers": [container("app")]}));
    let with = |f: &dyn Fn(&mut Pod)| {
        let mut p = base.clone();
        f(&mut p);
        p
    };
    let table: [(&str, Pod, bool); 5] = [
        ("the same pod", base.clone(), false),
        (
            "an image change",
            with(&|p| p.spec.containers[0].image = "other".into()),
            false,
        ),
        (
            "a label",
            with(&|p| {
                p.metadata.labels.insert("tier".into(), "back".into());
            }),
            true,
        ),
        (
            "an annotation",
            with(&|p| {
                p.metadata.annotations.insert("note".into(), "x".into());
            }),
            true,
        ),
        (
            "a volume",
            with(&|p| {
                p.spec.volumes =
                    serde_json::from_value(json!([{"name": "e", "emptyDir": {}}])).unwrap()
            }),
            true,
        ),
    ];
    for (what, b, want) in table {
        assert_eq!(super::volumes_changed(&base, &b), want, "{what}");
    }
}

/// A resting pod holds its worker's future for as long as it runs: the long steps (a sync,
/// a stop) are boxed while they run, and the pod and its state are on the heap, so the
/// future itself stays small (168 bytes in a debug build; it was 15.8 KiB a pod in the
/// release build, the most of the agent's memory per pod at 100 pods: heaptrack, issue 19).
#[test]
fn a_resting_pod_worker_is_small() {
    let n = Node::new();
    let p = pod("u-size", json!({"containers": [container("c")]}));
    let (_tx, rx) = async_channel::unbounded();
    let fut = super::run(n.pm.clone(), Rc::new(p), rx);
    let size = std::mem::size_of_val(&fut);
    assert!(size <= 512, "the pod worker's future is {size} bytes");
}
