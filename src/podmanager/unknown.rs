//! A container whose state cannot be read (its shim does not answer in time), handled as the
//! kubelet handles `ContainerStateUnknown`: it may still run, so it is killed before anything
//! else ("always try killing it before restart to avoid having 2 running instances", the
//! kubelet's `computePodActions`), and it is never taken for exited. Only once its state can
//! be read again (exited, with its real exit code) does the restart policy decide; a
//! `restartPolicy: Never` pod is then Succeeded or Failed by that code, never by a guess.
//! (The kubelet starts a new instance in the same pass as the kill, whatever the policy;
//! here the start waits for the kill to be confirmed, so two instances never overlap and a
//! `Never` container is not run twice.)

use crate::runtime::ContainerState;
use std::time::Duration;

/// How soon a container in the Unknown state is looked at again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// What to do with the latest instance of a container that is not running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing: it finished and stays so.
    Leave,
    /// Start a new instance (after any back-off).
    Start,
    /// Kill it and start nothing yet: it may still run.
    KillFirst,
}

/// The action for a container in `state` (Exited or Unknown): `restart` is what the restart
/// policy says for its exit code, `spec_changed` whether its spec changed since it started.
pub fn not_running(state: ContainerState, restart: bool, spec_changed: bool) -> Action {
    match state {
        ContainerState::Unknown => Action::KillFirst,
        _ if restart || spec_changed => Action::Start,
        _ => Action::Leave,
    }
}

/// The message of the kill, as the kubelet words it.
pub fn kill_message(container: &str) -> String {
    format!("Container {container} is in \"Unknown\" state, try killing it before restart")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerState::{Exited, Unknown};

    #[test]
    fn unknown_is_killed_before_anything_and_never_read_as_exited() {
        let table = [
            // (state, policy says restart, spec changed) -> action
            (Unknown, false, false, Action::KillFirst),
            (Unknown, true, false, Action::KillFirst),
            (Unknown, false, true, Action::KillFirst),
            (Unknown, true, true, Action::KillFirst),
            (Exited, false, false, Action::Leave),
            (Exited, true, false, Action::Start),
            (Exited, false, true, Action::Start),
            (Exited, true, true, Action::Start),
        ];
        for (state, restart, changed, want) in table {
            assert_eq!(
                not_running(state, restart, changed),
                want,
                "{state:?} restart={restart} changed={changed}"
            );
        }
        assert_eq!(
            kill_message("app"),
            "Container app is in \"Unknown\" state, try killing it before restart"
        );
    }
}
