//! The shim started ahead (`--spare-shim`, issue 19) on real containerd-shim-runc-v2 + runc
//! containers, as root: `cargo test --test shim_spare`.
//!
//! One idle shim waits in `<root>/runtime/spares/`; a pod's first container claims it (no
//! `shim start`), the pod's next containers join it, a new spare is started after the claim,
//! and no spare outlives its agent: one left by a killed agent is let go at the next start,
//! unless a container was created in it, and the backend going away shuts its spare down.

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
use backend::{alive, wait, Backend};
use edged::runtime::shim::ShimConfig;
use edged::runtime::{ContainerState, Runtime};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn spare(on: bool) -> ShimConfig {
    ShimConfig {
        spare_shim: on,
        ..Default::default()
    }
}

fn env() -> Backend {
    Backend::new("spare", spare(true))
}

/// The pid of the shim serving container `id` (its bundle's `shim.pid`).
fn shim_of(e: &Backend, id: &str) -> i32 {
    std::fs::read_to_string(e.bundle(id).join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn spares_dir(e: &Backend) -> PathBuf {
    e.dir.path().join("runtime/spares")
}

/// The spare shim once one waits (and is not `not`): its pid.
fn wait_spare(e: &Backend, not: Option<i32>) -> i32 {
    wait("a spare shim", || {
        spare_of(&spares_dir(e)).filter(|p| Some(*p) != not)
    })
}

/// The pid of the shim serving from the one directory under `spares` that holds a live
/// shim's `shim.pid` (its working directory that directory).
fn spare_of(spares: &Path) -> Option<i32> {
    let dirs: Vec<PathBuf> = std::fs::read_dir(spares)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    if dirs.len() != 1 {
        return None;
    }
    let pid: i32 = std::fs::read_to_string(dirs[0].join("shim.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (std::fs::read_link(format!("/proc/{pid}/cwd")).ok()? == dirs[0]).then_some(pid)
}

#[test]
fn a_pod_claims_the_spare_its_next_container_joins_it_and_a_new_spare_waits() {
    let mut e = env();
    let first = wait_spare(&e, None);
    assert_eq!(e.shims(), BTreeSet::from([first]), "the spare alone");
    let p = e.pod("a");
    let c = e.run(&p, "c");
    assert_eq!(
        shim_of(&e, &c),
        first,
        "the pod's first container claimed the spare"
    );
    assert_eq!(
        e.rt().container_status(&c).unwrap().state,
        ContainerState::Running
    );
    // After the start, another spare is started; the claimed one's directory is gone.
    let second = wait_spare(&e, Some(first));
    // The pod's next container joins the claimed shim: its socket is the spare's, which no
    // `shim start` of the pod's group would find.
    let d = e.run(&p, "d");
    assert_eq!(
        shim_of(&e, &d),
        first,
        "the second container joined the pod's shim"
    );
    assert_eq!(e.shims(), BTreeSet::from([first, second]));
    // The pod's shim goes with its last task; the spare stays.
    e.remove_pod(&p);
    wait("the pod's shim to exit", || (!alive(first)).then_some(()));
    assert_eq!(e.shims(), BTreeSet::from([second]));
    // The backend going away (the agent stopping) shuts its spare down, and its directory.
    e.rt = None;
    wait("the spare to exit", || (!alive(second)).then_some(()));
    let left: Vec<_> = std::fs::read_dir(spares_dir(&e))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "spare directories left: {left:?}");
}

#[test]
fn a_spare_left_behind_is_let_go_but_not_if_it_serves_a_container() {
    // What a killed agent leaves: its spare (nobody claimed it) and the directory of a spare
    // it had claimed, whose container was created before the kill.
    let mut e = env();
    let claimed = wait_spare(&e, None);
    let p = e.pod("a");
    let c = e.run(&p, "c");
    assert_eq!(shim_of(&e, &c), claimed);
    let idle = wait_spare(&e, Some(claimed));
    let idle_dir = std::fs::read_link(format!("/proc/{idle}/cwd")).unwrap();
    // The claimed spare's directory as a kill between Create and its removal leaves it.
    let leftover = spares_dir(&e).join("spare-claimed-before-the-kill");
    std::fs::create_dir(&leftover).unwrap();
    std::fs::copy(e.bundle(&c).join("address"), leftover.join("address")).unwrap();
    e.reopen_after_kill(spare(true));
    wait("the idle spare to be let go", || {
        (!alive(idle)).then_some(())
    });
    assert!(
        !idle_dir.exists() && !leftover.exists(),
        "leftover directories removed"
    );
    assert!(alive(claimed), "the shim serving a container was kept");
    assert_eq!(
        e.rt().container_status(&c).unwrap().state,
        ContainerState::Running
    );
    let fresh = wait_spare(&e, Some(idle));
    assert_eq!(e.shims(), BTreeSet::from([claimed, fresh]));
}

#[test]
fn a_spare_killed_while_idle_is_passed_over_and_replaced() {
    let e = env();
    let dead = wait_spare(&e, None);
    let dir = std::fs::read_link(format!("/proc/{dead}/cwd")).unwrap();
    let socket = std::fs::read_to_string(dir.join("address"))
        .unwrap()
        .trim()
        .trim_start_matches("unix://")
        .to_string();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dead),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait("the spare to die", || (!alive(dead)).then_some(()));
    // The pod starts all the same, in a shim of its own started for it.
    let p = e.pod("a");
    let c = e.run(&p, "c");
    assert_ne!(shim_of(&e, &c), dead);
    assert_eq!(
        e.rt().container_status(&c).unwrap().state,
        ContainerState::Running
    );
    assert!(!dir.exists(), "the dead spare's directory removed");
    assert!(
        !Path::new(&socket).exists(),
        "the dead spare's socket removed"
    );
    let fresh = wait_spare(&e, Some(dead));
    assert_eq!(e.shims(), BTreeSet::from([shim_of(&e, &c), fresh]));
}

#[test]
fn a_spare_shim_nothing_names_is_killed_at_the_next_start_one_with_a_task_kept() {
    // An agent killed while its spare's `start` ran, its next start cleaning the directory
    // before the daemon came up, would leave a shim nothing names: made here by removing a
    // live spare's directory. Beside it, a claimed spare whose container's bundle lost its
    // `shim.pid`: it has a task (a child), so it is kept.
    let mut e = env();
    let claimed = wait_spare(&e, None);
    let p = e.pod("a");
    let c = e.run(&p, "c");
    assert_eq!(shim_of(&e, &c), claimed);
    std::fs::remove_file(e.bundle(&c).join("shim.pid")).unwrap();
    let stray = wait_spare(&e, Some(claimed));
    std::fs::remove_dir_all(std::fs::read_link(format!("/proc/{stray}/cwd")).unwrap()).unwrap();
    e.reopen_after_kill(spare(true));
    wait("the stray spare to be killed", || {
        (!alive(stray)).then_some(())
    });
    assert!(alive(claimed), "the shim with a task was kept");
    assert_eq!(
        e.rt().container_status(&c).unwrap().state,
        ContainerState::Running
    );
}

// --- the real agent -----------------------------------------------------------------------

#[test]
fn a_killed_agent_with_a_spare_adopts_its_pod_and_keeps_one_spare() {
    let mut a = Agent::start(
        "spare-kill",
        &["--spare-shim"],
        &[pod(
            "spare-kill-one",
            vec![sh("c", "sleep 100000")],
            json!({}),
        )],
    );
    let p = a.wait_running("spare-kill-one");
    let id = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    let spares = a.root().join("runtime/spares");
    let spare = a.wait_for("a spare shim", || spare_of(&spares));
    assert_eq!(a.host.shim_pids().len(), 2, "the pod's shim and the spare");
    a.kill9();
    a.restart();
    a.wait_for("the old spare let go", || (!alive(spare)).then_some(()));
    let fresh = a.wait_for("a new spare", || spare_of(&spares).filter(|s| *s != spare));
    let p = a.wait_running("spare-kill-one");
    assert_eq!(
        p["status"]["containerStatuses"][0]["containerID"], id,
        "the pod kept its container"
    );
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    let shims = a.host.shim_pids();
    assert_eq!(shims.len(), 2, "the pod's shim and one spare: {shims:?}");
    assert!(shims.contains(&fresh));
    // Stopped (SIGTERM), the agent takes its spare with it and leaves the pod running.
    a.stop();
    a.wait_for("the spare to exit with the agent", || {
        (!alive(fresh)).then_some(())
    });
    let left: Vec<i32> = a
        .host
        .shim_pids()
        .into_iter()
        .filter(|p| alive(*p))
        .collect();
    assert_eq!(left.len(), 1, "the pod's shim alone: {left:?}");
    assert!(std::fs::read_dir(&spares).unwrap().next().is_none());
}

#[test]
fn a_backend_without_the_flag_lets_a_left_spare_go() {
    let mut e = env();
    let left = wait_spare(&e, None);
    e.reopen_after_kill(spare(false));
    wait("the left spare to exit", || (!alive(left)).then_some(()));
    assert!(std::fs::read_dir(spares_dir(&e)).unwrap().next().is_none());
    assert!(e.shims().is_empty(), "no shim: {:?}", e.shims());
}
