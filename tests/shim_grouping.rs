//! Shim grouping (`--shim-grouping`, issue 19) on real containerd-shim-runc-v2 + runc
//! containers, as root: `cargo test --test shim_grouping`.
//!
//! With `node`, every pod's containers live in one shim process: a pod deleted leaves the
//! others running in it, the shim goes with the last task, an agent killed and started again
//! adopts every pod in it, and a shim that dies takes every pod's containers with it (each is
//! cleaned with `shim delete` and started again by its pod worker), where `pod` loses one pod.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;

#[path = "common/rootfs.rs"]
mod rootfs;

#[allow(dead_code)]
#[path = "common/backend.rs"]
mod backend;

use agent::{pod, sh, Agent};
use backend::{wait, Backend};
use edged::runtime::cgroups::Layout;
use edged::runtime::shim::{ShimConfig, ShimGrouping, NODE_GROUP};
use edged::runtime::{ContainerState, Runtime};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn grouping(g: ShimGrouping) -> ShimConfig {
    ShimConfig {
        grouping: g,
        ..Default::default()
    }
}

fn env(g: ShimGrouping) -> Backend {
    Backend::new("group", grouping(g))
}

/// The shim address recorded in container `id`'s bundle.
fn address(e: &Backend, id: &str) -> String {
    std::fs::read_to_string(e.bundle(id).join("address"))
        .unwrap()
        .trim()
        .to_string()
}

fn state(e: &Backend, id: &str) -> ContainerState {
    e.rt().container_status(id).unwrap().state
}

fn echo(e: &Backend, id: &str) -> Vec<u8> {
    e.rt()
        .exec_sync(
            id,
            &["echo".into(), "alive".into()],
            Duration::from_secs(10),
        )
        .unwrap()
        .stdout
}

fn kill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn node_grouping_puts_two_pods_in_one_shim() {
    let e = env(ShimGrouping::Node);
    let (pa, pb) = (e.pod("a"), e.pod("b"));
    let a = e.run(&pa, "c");
    let b = e.run(&pb, "c");
    assert_eq!(address(&e, &a), address(&e, &b), "one shim for both pods");
    let shims = e.shims();
    assert_eq!(shims.len(), 1, "one shim daemon: {shims:?}");
    for id in [&a, &b] {
        let spec: Value =
            serde_json::from_slice(&std::fs::read(e.bundle(id).join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            spec["annotations"]["io.containerd.runc.v2.group"],
            NODE_GROUP
        );
    }
    // Pod a goes (its containers stopped, deleted from the shim, removed): b runs on in the
    // same shim, which still answers for it.
    e.rt().stop_pod_sandbox(&pa, Duration::ZERO).unwrap();
    e.rt().remove_pod_sandbox(&pa).unwrap();
    assert!(!e.bundle(&a).exists());
    assert_eq!(state(&e, &b), ContainerState::Running);
    assert_eq!(echo(&e, &b), b"alive\n");
    assert_eq!(e.shims(), shims, "the same shim serves b");
    // The shim goes with the last task, its socket with it.
    let sock = address(&e, &b).trim_start_matches("unix://").to_string();
    e.rt().stop_pod_sandbox(&pb, Duration::ZERO).unwrap();
    e.rt().remove_pod_sandbox(&pb).unwrap();
    wait("the shim to exit", || e.shims().is_empty().then_some(()));
    wait("its socket to go", || {
        (!Path::new(&sock).exists()).then_some(())
    });
}

#[test]
fn pod_grouping_gives_each_pod_its_shim() {
    let e = env(ShimGrouping::Pod);
    let (pa, pb) = (e.pod("a"), e.pod("b"));
    let a = e.run(&pa, "c");
    let a2 = e.run(&pa, "d");
    let b = e.run(&pb, "c");
    assert_eq!(address(&e, &a), address(&e, &a2), "one shim per pod");
    assert_ne!(address(&e, &a), address(&e, &b), "pods do not share shims");
    assert_eq!(e.shims().len(), 2);
}

#[test]
fn node_shim_found_and_killed_after_its_first_bundle_is_gone() {
    // The shim daemon runs in the bundle of the container that started it. Once that
    // container is removed, a hung shim must still be found (its pid in `shim.pid`) and
    // killed when the restarted agent cannot get an answer from it.
    let mut e = env(ShimGrouping::Node);
    let (pa, pb) = (e.pod("first"), e.pod("second"));
    let a = e.run(&pa, "c");
    let b = e.run(&pb, "c");
    let shim = *e.shims().iter().next().unwrap();
    assert_eq!(
        std::fs::read_to_string(e.bundle(&b).join("shim.pid")).unwrap(),
        shim.to_string()
    );
    e.rt().stop_pod_sandbox(&pa, Duration::ZERO).unwrap();
    e.rt().remove_pod_sandbox(&pa).unwrap();
    let cwd = std::fs::read_link(format!("/proc/{shim}/cwd")).unwrap();
    assert!(
        cwd.to_string_lossy().ends_with(" (deleted)"),
        "the shim's bundle is gone: {}",
        cwd.display()
    );
    let _ = a;
    freeze(shim, true);
    e.restart(grouping(ShimGrouping::Node));
    // Thawed (a cgroup v1 freezer holds even a SIGKILLed process), a killed shim is gone at
    // once; a shim left alive would answer again.
    freeze_cleanup(shim);
    let deadline = Instant::now() + Duration::from_secs(5);
    let gone = loop {
        let gone = std::fs::read_to_string(format!("/proc/{shim}/stat")).map_or(true, |s| {
            s.rsplit(')').next().unwrap_or("").trim().starts_with('Z')
        });
        if gone || Instant::now() > deadline {
            break gone;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(gone, "the unanswering shim {shim} was not killed");
    let s = e.rt().container_status(&b).unwrap();
    assert_eq!(s.state, ContainerState::Exited, "{s:?}");
    assert_eq!(s.reason.as_deref(), Some("ShimDied"));
}

#[test]
fn grouping_changed_between_restarts_keeps_each_container_in_its_shim() {
    let mut e = env(ShimGrouping::Pod);
    let pa = e.pod("old");
    let a = e.run(&pa, "c");
    let pod_shim = address(&e, &a);
    e.restart(grouping(ShimGrouping::Node));
    assert_eq!(state(&e, &a), ContainerState::Running, "adopted");
    let pb = e.pod("new");
    let b = e.run(&pb, "c");
    let a2 = e.run(&pa, "d");
    assert_ne!(address(&e, &b), pod_shim);
    assert_eq!(
        address(&e, &a2),
        address(&e, &b),
        "new containers join the node's shim"
    );
    assert_eq!(e.shims().len(), 2);
    // The old pod's shim goes with its last task though the node's shim serves its pod too.
    e.rt().stop_container(&a, Duration::ZERO).unwrap();
    e.rt().remove_container(&a).unwrap();
    wait("the pod's shim to exit", || {
        (e.shims().len() == 1).then_some(())
    });
    assert_eq!(state(&e, &a2), ContainerState::Running);
    assert_eq!(echo(&e, &b), b"alive\n");
}

/// Moves `pid` into a frozen cgroup (`frozen`) or thaws that cgroup; a stopped process would
/// do as well, but SIGCONT from anyone (the kernel, for an orphaned process group) wakes it.
fn freeze(pid: i32, frozen: bool) {
    let (dir, file, on, off) = freezer();
    let dir = Path::new(dir);
    if frozen {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        std::fs::write(dir.join(file), on).unwrap();
    } else {
        std::fs::write(dir.join(file), off).unwrap();
    }
}

fn freezer() -> (&'static str, &'static str, &'static str, &'static str) {
    match Layout::detect() {
        Layout::V1(_) => (
            "/sys/fs/cgroup/freezer/edged-test-group-frozen",
            "freezer.state",
            "FROZEN",
            "THAWED",
        ),
        Layout::V2(_) => (
            "/sys/fs/cgroup/edged-test-group-frozen",
            "cgroup.freeze",
            "1",
            "0",
        ),
    }
}

/// Thaws the freezer cgroup and removes it once the (killed) shim has left it; a shim still
/// alive goes back to the shims' cgroup.
fn freeze_cleanup(pid: i32) {
    freeze(pid, false);
    let dir = Path::new(freezer().0);
    std::thread::sleep(Duration::from_millis(200));
    if Path::new(&format!("/proc/{pid}")).exists() {
        let home = Layout::detect().dirs(Layout::SHIMS);
        if let Some(home) = home.iter().find(|d| d.starts_with(dir.parent().unwrap())) {
            let _ = std::fs::write(home.join("cgroup.procs"), pid.to_string());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --- the real agent -----------------------------------------------------------------------

fn container_id(p: &Value) -> String {
    p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn restarts(p: &Value) -> i64 {
    p["status"]["containerStatuses"][0]["restartCount"]
        .as_i64()
        .unwrap_or(0)
}

/// Pod names of one test: test agents run side by side, and a static pod's uid (so its
/// cgroup) follows from its namespace and name.
fn names(tag: &str) -> [String; 2] {
    [format!("{tag}-one"), format!("{tag}-two")]
}

fn two_pods(tag: &str) -> Vec<Value> {
    names(tag)
        .iter()
        .map(|n| pod(n, vec![sh("c", "sleep 100000")], json!({})))
        .collect()
}

/// Both pods Running with one container; their container ids.
fn running_ids(a: &Agent, tag: &str) -> Vec<String> {
    names(tag)
        .iter()
        .map(|n| container_id(&a.wait_running(n)))
        .collect()
}

#[test]
fn agent_killed_and_restarted_adopts_every_pod_of_the_node_shim() {
    let mut a = Agent::start(
        "grp-adopt",
        &["--shim-grouping", "node"],
        &two_pods("adopt"),
    );
    let ids = running_ids(&a, "adopt");
    let [one, two] = names("adopt");
    let shims = a.host.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the node: {shims:?}");
    a.kill9();
    a.restart();
    a.wait_for("the restarted agent to adopt both pods", || {
        let now: Vec<String> = names("adopt")
            .iter()
            .filter_map(|n| a.pod(n))
            .filter(|p| {
                p["status"]["containerStatuses"][0]["state"]["running"].is_object()
                    && p["status"]["conditions"].is_array()
            })
            .map(|p| container_id(&p))
            .collect();
        (now == ids && a.agent_log().matches("adopted container").count() >= 2).then_some(())
    });
    for n in names("adopt") {
        assert_eq!(restarts(&a.pod(&n).unwrap()), 0, "pod {n} restarted");
    }
    assert_eq!(a.host.shim_pids(), shims, "the same shim, still alone");
    // A pod deleted after the restart leaves the other in the shared shim.
    std::fs::remove_file(a.dir.path().join(format!("manifests/{one}.json"))).unwrap();
    a.wait_for("pod one gone", || a.pod(&one).is_none().then_some(()));
    assert_eq!(a.host.shim_pids(), shims);
    assert_eq!(container_id(&a.wait_running(&two)), ids[1]);
}

/// Kills the shim serving pod one and waits until pod one runs again; pod two is then
/// expected restarted (`two_dies`) or untouched; returns both restart counts.
fn shim_crash(grouping: &str, two_dies: bool) -> Vec<i64> {
    let a = Agent::start(
        &format!("grp-crash-{grouping}"),
        &["--shim-grouping", grouping],
        &two_pods(grouping),
    );
    let ids = running_ids(&a, grouping);
    let [one, two] = names(grouping);
    let shims = a.host.shim_pids();
    assert_eq!(shims.len(), if grouping == "node" { 1 } else { 2 });
    // The shim that serves pod one: the parent of its container's process.
    let init = a.host.runc()[ids[0].trim_start_matches("containerd://")].pid as i32;
    let shim = *shims
        .iter()
        .find(|s| {
            std::fs::read_to_string(format!("/proc/{init}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| l == format!("PPid:\t{s}"))
        })
        .expect("the shim is the container's parent");
    kill(shim);
    let running_again = |name: &str, id: &str| {
        a.wait_for(
            &format!("pod {name} running again in a new container"),
            || {
                a.pod(name).filter(|p| {
                    restarts(p) >= 1
                        && container_id(p) != id
                        && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
                })
            },
        )
    };
    let p1 = running_again(&one, &ids[0]);
    let p2 = if two_dies {
        running_again(&two, &ids[1])
    } else {
        // Long enough for PLEG (1 s) and a status write to show a death, had there been one.
        std::thread::sleep(Duration::from_secs(3));
        let p = a.wait_running(&two);
        assert_eq!(container_id(&p), ids[1], "pod two kept its container");
        p
    };
    assert_eq!(
        p1["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"],
        "ShimDied",
        "{p1}\n{}",
        host::tail(&a.agent_log(), 40)
    );
    vec![restarts(&p1), restarts(&p2)]
}

#[test]
fn a_node_shim_crash_restarts_every_pod() {
    // Both pods' containers die with the shared shim (`shim delete` kills what is left of
    // them) and their workers start them again, in a new shared shim.
    assert_eq!(shim_crash("node", true), vec![1, 1]);
}

#[test]
fn a_pod_shim_crash_restarts_only_its_pod() {
    assert_eq!(shim_crash("pod", false), vec![1, 0]);
}
