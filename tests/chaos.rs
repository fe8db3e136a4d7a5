//! The crash harness, short: a few cycles of pod churn with the agent SIGKILLed at random
//! moments, then a couple of power cuts (shims and containers killed, mounts undone, /run
//! state emptied). The logic is scripts/chaos.sh's (scripts/bench/chaos.py); this test runs it
//! on the agent binary cargo built and fails on any violation it reports (a lost pod, an
//! orphan container, shim, mount or cgroup, a pod that does not converge to its file).
//! Needs root, runc and containerd-shim-runc-v2, as the runtime tests do.

use std::path::Path;
use std::process::Command;

fn chaos(args: &[&str]) {
    chaos_with(args, "")
}

/// The harness with more agent flags (`CHAOS_AGENT_FLAGS`).
fn chaos_with(args: &[&str], flags: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(repo.join("scripts/chaos.sh"))
        .args(args)
        .env("EDGED_BIN", env!("CARGO_BIN_EXE_edged"))
        .env("CHAOS_AGENT_FLAGS", flags)
        .current_dir(repo)
        .output()
        .expect("scripts/chaos.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chaos.sh {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // The harness must have run every cycle it was asked for, not stopped early.
    let want = format!("{}/{} cycles, ok", args[0], args[0]);
    assert!(
        stdout.contains(&want),
        "chaos.sh {args:?}: no `{want}` in its summary:\n{stdout}\n{stderr}"
    );
}

#[test]
fn agent_kills_and_power_cuts_leave_nothing_behind() {
    chaos(&["4"]);
    chaos(&["2", "--power-cut"]);
}

/// With a shim started ahead: at most that one spare beside the pods' shims, none left by a
/// killed agent, and a claimed one serving its pod through kills.
#[test]
fn with_a_spare_shim_kills_and_power_cuts_leave_nothing_behind() {
    chaos_with(&["4"], "--spare-shim");
    chaos_with(&["2", "--power-cut"], "--spare-shim");
}
