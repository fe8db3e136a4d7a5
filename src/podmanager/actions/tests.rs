//! Table tests of the pod sync's decisions: no runtime, no root, no real clock.

use super::*;
use crate::runtime::ContainerState::{Created, Exited, Running, Unknown};
use serde_json::json;
use std::time::UNIX_EPOCH;
use Action::*;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(
        json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec}),
    )
    .expect("test pod")
}

/// A fixed now: the monotonic one far enough from boot that `now - 700 s` exists.
fn clock() -> Clock {
    Clock {
        mono: Instant::now() + Duration::from_secs(10_000),
        wall: UNIX_EPOCH + Duration::from_secs(1_000_000),
    }
}

/// Instance `<name>-<attempt>` in `state`; an exited one ended `ended_ago` seconds ago with
/// `exit`, a running one started 100 s ago.
fn inst(
    name: &str,
    attempt: u32,
    state: ContainerState,
    exit: Option<i32>,
    ended_ago: u64,
) -> ContainerStatus {
    let now = clock().wall;
    let mut c = ContainerStatus::for_test(
        &format!("{name}-{attempt}"),
        "u",
        name,
        attempt,
        state,
        now - Duration::from_secs(200),
    );
    c.started_at = Some(now - Duration::from_secs(100));
    if state == Exited {
        c.exit_code = exit;
        c.finished_at = Some(now - Duration::from_secs(ended_ago));
    }
    c
}

fn start(container: &str, attempt: u32) -> Action {
    Start {
        container: container.into(),
        attempt,
        pid_target: None,
    }
}

fn kill(container: &str, id: &str, grace_s: u64, message: Option<&str>, why: KillReason) -> Action {
    Kill {
        container: container.into(),
        id: id.into(),
        grace: Duration::from_secs(grace_s),
        message: message.map(str::to_string),
        why,
    }
}

fn backoff(container: &str, delay_s: u64) -> Action {
    BackOff {
        container: container.into(),
        delay: Duration::from_secs(delay_s),
    }
}

/// One decision: the pod, its instances, probe results (id, kind, result), back-off entries
/// (container, delay s, last restart s ago) -> the actions and the wake (None: the resync).
struct Case {
    what: &'static str,
    spec: serde_json::Value,
    instances: Vec<ContainerStatus>,
    probes: Vec<(&'static str, ProbeKind, bool)>,
    backoff: Vec<(&'static str, u64, u64)>,
    want: Vec<Action>,
    wake: Option<Duration>,
}

const RESYNC: Duration = Duration::from_secs(60);

fn run(cases: Vec<Case>) {
    for case in cases {
        let now = clock();
        let pod = pod(case.spec);
        let backoff: Backoff = case
            .backoff
            .iter()
            .map(|(n, d, ago)| {
                let at = now.mono - Duration::from_secs(*ago);
                (n.to_string(), (Duration::from_secs(*d), at))
            })
            .collect();
        let probes = case.probes.clone();
        let probe = move |id: &str, kind: ProbeKind| {
            probes
                .iter()
                .find(|(i, k, _)| *i == id && *k == kind)
                .map(|(_, _, r)| *r)
        };
        let view = SyncView {
            instances: &case.instances,
            sandbox: None,
            probe: &probe,
            backoff: &backoff,
            reported: None,
            now,
            resync: RESYNC,
        };
        let got = compute_pod_actions(&pod, &view);
        assert_eq!(got.actions, case.want, "{}", case.what);
        assert_eq!(got.wake, case.wake.unwrap_or(RESYNC), "{}: wake", case.what);
    }
}

fn case(what: &'static str, spec: serde_json::Value, instances: Vec<ContainerStatus>) -> Case {
    Case {
        what,
        spec,
        instances,
        probes: vec![],
        backoff: vec![],
        want: vec![],
        wake: None,
    }
}

impl Case {
    fn want(mut self, want: Vec<Action>) -> Self {
        self.want = want;
        self
    }
    fn wake(mut self, d: Duration) -> Self {
        self.wake = Some(d);
        self
    }
    fn probe(mut self, id: &'static str, kind: ProbeKind, ok: bool) -> Self {
        self.probes.push((id, kind, ok));
        self
    }
    fn backoff(mut self, name: &'static str, delay_s: u64, ago_s: u64) -> Self {
        self.backoff.push((name, delay_s, ago_s));
        self
    }
}

fn spec_with(policy: &str) -> serde_json::Value {
    json!({"restartPolicy": policy, "containers": [{"name": "app", "image": "i"}]})
}

#[test]
fn restart_policies_decide_what_ends_for_good() {
    let ended = |code| vec![inst("app", 0, Exited, Some(code), 30)];
    let mut cases = vec![case(
        "a new pod starts its container",
        spec_with("Always"),
        vec![],
    )
    .want(vec![start("app", 0)])];
    // (policy, exit code, restarted)
    for (policy, code, again) in [
        ("Always", 0, true),
        ("Always", 1, true),
        ("OnFailure", 0, false),
        ("OnFailure", 1, true),
        ("Never", 0, false),
        ("Never", 1, false),
    ] {
        let want = if again { vec![start("app", 1)] } else { vec![] };
        cases.push(case("policy and exit code", spec_with(policy), ended(code)).want(want));
    }
    cases.push(
        case(
            "a running container is left alone",
            spec_with("Always"),
            vec![inst("app", 3, Running, None, 0)],
        )
        .want(vec![]),
    );
    cases.push(
        case(
            "the latest instance decides, not an older one",
            spec_with("OnFailure"),
            vec![
                inst("app", 0, Exited, Some(1), 300),
                inst("app", 1, Exited, Some(0), 30),
            ],
        )
        .want(vec![]),
    );
    cases.push(
        case(
            "a container's own restartPolicy wins over the pod's",
            json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "i", "restartPolicy": "Always"}]}),
            ended(0),
        )
        .want(vec![start("app", 1)]),
    );
    cases.push(
        case(
            "a restart rule on the exit code",
            json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "i", "restartPolicy": "Never",
                "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]}]}),
            ended(42),
        )
        .want(vec![start("app", 1)]),
    );
    cases.push(
        case(
            "an instance created but never started is started",
            spec_with("Always"),
            vec![inst("app", 0, Created, None, 0)],
        )
        .want(vec![StartCreated {
            container: "app".into(),
            id: "app-0".into(),
        }]),
    );
    run(cases);
}

#[test]
fn crash_loop_back_off() {
    let ended = |ago| vec![inst("app", 2, Exited, Some(1), ago)];
    run(vec![
        case(
            "inside the back-off: wait out the rest",
            spec_with("Always"),
            ended(3),
        )
        .backoff("app", 10, 3)
        .want(vec![backoff("app", 10)])
        .wake(Duration::from_secs(7)),
        case("past the back-off: restart", spec_with("Always"), ended(11))
            .backoff("app", 10, 11)
            .want(vec![start("app", 3)]),
        case("a longer delay", spec_with("Always"), ended(100))
            .backoff("app", 160, 100)
            .want(vec![backoff("app", 160)])
            .wake(Duration::from_secs(60)),
        case(
            "a back-off not moved for 10 min is forgotten",
            spec_with("Always"),
            ended(5),
        )
        .backoff("app", 300, 601)
        .want(vec![start("app", 3)]),
        case(
            "no back-off yet: the first restart is at once",
            spec_with("Always"),
            ended(0),
        )
        .want(vec![start("app", 3)]),
    ]);
    // The delay doubles from 10 s to 5 min, and starts again after 10 min quiet.
    let now = clock().mono;
    let mut b = Backoff::new();
    let mut seen = vec![];
    for _ in 0..7 {
        let d = next_backoff(&b, "app", now);
        seen.push(d.as_secs());
        b.insert("app".into(), (d, now));
    }
    assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(
        next_backoff(&b, "app", now + Duration::from_secs(601)),
        BACKOFF_INITIAL
    );
}

#[test]
fn init_containers_run_in_order_one_step_a_sync() {
    let spec = |policy: &str| {
        json!({"restartPolicy": policy,
            "initContainers": [{"name": "i1", "image": "i"}, {"name": "i2", "image": "i"}],
            "containers": [{"name": "app", "image": "i"}]})
    };
    run(vec![
        case("the first init container first", spec("Always"), vec![]).want(vec![start("i1", 0)]),
        case(
            "the second once the first succeeded",
            spec("Always"),
            vec![inst("i1", 0, Exited, Some(0), 1)],
        )
        .want(vec![start("i2", 0)]),
        case(
            "nothing while one runs",
            spec("Always"),
            vec![inst("i1", 0, Running, None, 0)],
        )
        .want(vec![]),
        case(
            "the app containers once all succeeded",
            spec("Always"),
            vec![
                inst("i1", 0, Exited, Some(0), 9),
                inst("i2", 0, Exited, Some(0), 1),
            ],
        )
        .want(vec![start("app", 0)]),
        case(
            "a failed init container restarts (OnFailure)",
            spec("OnFailure"),
            vec![inst("i1", 0, Exited, Some(1), 1)],
        )
        .want(vec![start("i1", 1)]),
        case(
            "a failed init container in back-off waits with nothing else",
            spec("Always"),
            vec![inst("i1", 1, Exited, Some(1), 2)],
        )
        .backoff("i1", 20, 2)
        .want(vec![backoff("i1", 20)])
        .wake(Duration::from_secs(18)),
        case(
            "a failed init container under Never fails the pod: nothing runs",
            spec("Never"),
            vec![inst("i1", 0, Exited, Some(1), 1)],
        )
        .want(vec![]),
        case(
            "an init container in the Unknown state is killed first",
            spec("Always"),
            vec![inst("i1", 0, Unknown, None, 0)],
        )
        .want(vec![KillUnknown {
            container: "i1".into(),
            id: "i1-0".into(),
        }])
        .wake(unknown::RECHECK),
    ]);
}

#[test]
fn sidecars_start_before_the_app_and_stop_after_it() {
    let spec = json!({"restartPolicy": "Never",
        "initContainers": [{"name": "side", "image": "i", "restartPolicy": "Always",
            "startupProbe": {"exec": {"command": ["true"]}}}],
        "containers": [{"name": "app", "image": "i"}]});
    let side = || inst("side", 0, Running, None, 0);
    run(vec![
        case(
            "a sidecar whose startup probe has not passed holds the app back",
            spec.clone(),
            vec![side()],
        )
        .wake(SIDECAR_RECHECK),
        case("once started, the app starts", spec.clone(), vec![side()])
            .probe("side-0", ProbeKind::Startup, true)
            .want(vec![start("app", 0)]),
        case(
            "a sidecar failing liveness is killed to restart",
            spec.clone(),
            vec![side()],
        )
        .probe("side-0", ProbeKind::Liveness, false)
        .want(vec![kill(
            "side",
            "side-0",
            30,
            Some("Container side failed liveness probe, will be restarted"),
            KillReason::Liveness,
        )])
        .wake(RESTART_RECHECK),
        case(
            "a sidecar whose startup probe failed past its budget (30 s) is killed to restart",
            spec.clone(),
            vec![side()],
        )
        .probe("side-0", ProbeKind::Startup, false)
        .want(vec![kill(
            "side",
            "side-0",
            30,
            Some("Container side failed startup probe, will be restarted"),
            KillReason::Startup,
        )])
        .wake(RESTART_RECHECK),
        case(
            "a sidecar failing its startup probe inside its budget is waited for",
            spec.clone(),
            vec![{
                let mut young = side();
                young.started_at = Some(clock().wall - Duration::from_secs(5));
                young
            }],
        )
        .probe("side-0", ProbeKind::Startup, false)
        .wake(SIDECAR_RECHECK),
        case(
            "the app ended for good: the sidecar is stopped",
            spec,
            vec![side(), inst("app", 0, Exited, Some(0), 1)],
        )
        .probe("side-0", ProbeKind::Startup, true)
        .want(vec![kill("side", "side-0", 30, None, KillReason::PodEnded)]),
    ]);
}

#[test]
fn spec_changes_and_probes_kill_running_containers() {
    let spec = json!({"terminationGracePeriodSeconds": 30, "containers": [{"name": "app", "image": "i",
        "livenessProbe": {"exec": {"command": ["true"]}, "terminationGracePeriodSeconds": 2},
        "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 10, "failureThreshold": 3}}]});
    let p = pod(spec.clone());
    let c = &p.spec.containers[0];
    let stamped = |hash: String| {
        let mut l = inst("app", 0, Running, None, 0);
        l.labels.insert(labels::CONTAINER_HASH.into(), hash);
        vec![l]
    };
    let mut young = inst("app", 0, Running, None, 0);
    young.started_at = Some(clock().wall - Duration::from_secs(5));
    run(vec![
        case(
            "the same spec: left alone",
            spec.clone(),
            stamped(kuberuntime::container_hash(c)),
        ),
        case(
            "a changed spec: killed and started again at once",
            spec.clone(),
            stamped("0".into()),
        )
        .want(vec![
            kill(
                "app",
                "app-0",
                30,
                Some("Container app definition changed, will be restarted"),
                KillReason::SpecChanged,
            ),
            start("app", 1),
        ]),
        case(
            "a failed liveness probe: killed with the probe's own grace",
            spec.clone(),
            stamped(kuberuntime::container_hash(c)),
        )
        .probe("app-0", ProbeKind::Liveness, false)
        .want(vec![kill(
            "app",
            "app-0",
            2,
            Some("Container app failed liveness probe, will be restarted"),
            KillReason::Liveness,
        )])
        .wake(RESTART_RECHECK),
        case(
            "a failed startup probe past its budget (30 s; started 100 s ago)",
            spec.clone(),
            vec![inst("app", 0, Running, None, 0)],
        )
        .probe("app-0", ProbeKind::Startup, false)
        .want(vec![kill(
            "app",
            "app-0",
            30,
            Some("Container app failed startup probe, will be restarted"),
            KillReason::Startup,
        )])
        .wake(RESTART_RECHECK),
        case(
            "a failed startup probe inside its budget: not yet",
            spec.clone(),
            vec![young],
        )
        .probe("app-0", ProbeKind::Startup, false),
        case(
            "an ended container whose spec changed starts without back-off",
            json!({"restartPolicy": "Always", "containers": [{"name": "app", "image": "i"}]}),
            {
                let mut l = inst("app", 0, Exited, Some(0), 1);
                l.labels.insert(labels::CONTAINER_HASH.into(), "0".into());
                vec![l]
            },
        )
        .backoff("app", 300, 1)
        .want(vec![start("app", 1)]),
        case(
            "a pod that ended for good stays so, even when its spec changes",
            json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": "i"}]}),
            {
                let mut l = inst("app", 0, Exited, Some(0), 1);
                l.labels.insert(labels::CONTAINER_HASH.into(), "0".into());
                vec![l]
            },
        ),
    ]);
}

#[test]
fn unknown_is_killed_before_any_restart() {
    for policy in ["Always", "OnFailure", "Never"] {
        run(vec![case(
            "Unknown: kill first, whatever the policy",
            spec_with(policy),
            vec![inst("app", 0, Unknown, None, 0)],
        )
        .want(vec![KillUnknown {
            container: "app".into(),
            id: "app-0".into(),
        }])
        .wake(unknown::RECHECK)]);
    }
}

#[test]
fn ephemeral_containers_start_once() {
    let spec = json!({"containers": [{"name": "app", "image": "i"}],
        "ephemeralContainers": [{"name": "dbg", "image": "i", "targetContainerName": "app"}]});
    run(vec![
        case(
            "a debugger joins the target's PID namespace",
            spec.clone(),
            vec![inst("app", 0, Running, None, 0)],
        )
        .want(vec![Start {
            container: "dbg".into(),
            attempt: 0,
            pid_target: Some("app-0".into()),
        }]),
        case(
            "one that ran is never started again",
            spec.clone(),
            vec![
                inst("app", 0, Running, None, 0),
                inst("dbg", 0, Exited, Some(0), 1),
            ],
        ),
    ]);
}

#[test]
fn deletion_eviction_and_deadlines() {
    let now = clock().wall;
    let started = now - Duration::from_secs(100);
    let plain = pod(spec_with("Always"));
    let mut deleting = plain.clone();
    deleting.metadata.deletion_timestamp = Some("2026-12-05T00:00:00Z".into());
    let deadline = |s: i64| {
        let mut p = plain.clone();
        p.spec.active_deadline_seconds = Some(s);
        p
    };
    let evict = |p: &Pod| {
        crate::eviction::past_deadline(p, started, now)
            .ok()
            .flatten()
    };
    let asked = evict(&deadline(1)).expect("an eviction");
    // (what, pod, deleted, evicted before, eviction asked) -> disposition
    let cases = [
        (
            "deleted by the source",
            &plain,
            true,
            false,
            None,
            Disposition::Terminate,
        ),
        (
            "deleted gracefully by the cloud",
            &deleting,
            false,
            false,
            None,
            Disposition::Terminate,
        ),
        (
            "a delete wins over an eviction",
            &plain,
            true,
            true,
            Some(asked.clone()),
            Disposition::Terminate,
        ),
        (
            "evicted before: idle",
            &plain,
            false,
            true,
            None,
            Disposition::Idle,
        ),
        (
            "evicted now",
            &plain,
            false,
            false,
            Some(asked.clone()),
            Disposition::Evict(asked.clone()),
        ),
        (
            "no deadline",
            &plain,
            false,
            false,
            None,
            Disposition::Sync { deadline_in: None },
        ),
        (
            "inside the deadline: look again when it runs out",
            &deadline(160),
            false,
            false,
            None,
            Disposition::Sync {
                deadline_in: Some(Duration::from_secs(60)),
            },
        ),
        (
            "past the deadline",
            &deadline(100),
            false,
            false,
            None,
            Disposition::Evict(asked.clone()),
        ),
    ];
    for (what, p, deleted, evicted, asked, want) in cases {
        assert_eq!(
            disposition(p, deleted, evicted, asked, started, now),
            want,
            "{what}"
        );
    }
    assert_eq!(asked.reason, crate::eviction::DEADLINE_EXCEEDED);
}

#[test]
fn sidecars_stop_after_the_apps_and_the_sidecars_declared_after_them() {
    let spec = json!({
        "initContainers": [
            {"name": "init", "image": "i"},
            {"name": "s1", "image": "i", "restartPolicy": "Always"},
            {"name": "s2", "image": "i", "restartPolicy": "Always"}],
        "containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]});
    let p = pod(spec);
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // (what, running, container -> what it waits for)
    type Waits<'a> = Vec<(&'a str, Vec<&'a str>)>;
    let cases: Vec<(&str, Vec<&str>, Waits)> = vec![
        (
            "all running: apps first, then s2, then s1",
            vec!["s1", "s2", "a", "b"],
            vec![("s1", vec!["a", "b", "s2"]), ("s2", vec!["a", "b"])],
        ),
        (
            "an app already gone is not waited for",
            vec!["s1", "s2", "b"],
            vec![("s1", vec!["b", "s2"]), ("s2", vec!["b"])],
        ),
        (
            "a later sidecar not running is not waited for",
            vec!["s1", "a"],
            vec![("s1", vec!["a"])],
        ),
        (
            "only sidecars left: s1 waits for s2",
            vec!["s1", "s2"],
            vec![("s1", vec!["s2"]), ("s2", vec![])],
        ),
    ];
    for (what, running, want) in cases {
        let got = termination_order(&p, &running);
        let want: HashMap<String, Vec<String>> = want
            .into_iter()
            .map(|(k, v)| (k.to_string(), names(&v)))
            .collect();
        assert_eq!(got, want, "{what}");
    }
    let plain = pod(json!({"initContainers": [{"name": "init", "image": "i"}],
        "containers": [{"name": "a", "image": "i"}]}));
    assert!(
        termination_order(&plain, &["a"]).is_empty(),
        "without sidecars everything stops in parallel"
    );
}
