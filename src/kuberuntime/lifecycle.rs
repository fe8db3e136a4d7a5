//! What a lifecycle hook (`postStart`, `preStop`) does, decided apart from the worker that
//! runs it: a command in the container, or a sleep (the `sleep` action), which the kubelet
//! ends early when the hook's time runs out (a preStop's grace period).

use crate::api::LifecycleHandler;
use std::time::Duration;

/// One hook's action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookAction {
    /// Run this command in the container.
    Exec(Vec<String>),
    /// Wait this long.
    Sleep(Duration),
    /// Nothing edged runs (no handler, or only httpGet/tcpSocket).
    Nothing,
}

/// The action of `handler`, a sleep cut to `limit` (a negative one is no wait). `exec` wins
/// over `sleep` (the API server allows only one).
pub fn action(handler: Option<&LifecycleHandler>, limit: Duration) -> HookAction {
    let Some(h) = handler else {
        return HookAction::Nothing;
    };
    if let Some(e) = &h.exec {
        return HookAction::Exec(e.command.clone());
    }
    if let Some(s) = &h.sleep {
        let secs = u64::try_from(s.seconds).unwrap_or(0);
        return HookAction::Sleep(Duration::from_secs(secs).min(limit));
    }
    HookAction::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ExecAction, SleepAction};

    #[test]
    fn actions() {
        let sleep = |n: i64| LifecycleHandler {
            sleep: Some(SleepAction { seconds: n }),
            ..Default::default()
        };
        let exec = LifecycleHandler {
            exec: Some(ExecAction {
                command: vec!["true".into()],
            }),
            ..Default::default()
        };
        let grace = Duration::from_secs(30);
        let table = [
            (None, HookAction::Nothing),
            (Some(&LifecycleHandler::default()), HookAction::Nothing),
            (Some(&exec), HookAction::Exec(vec!["true".into()])),
        ];
        for (h, want) in table {
            assert_eq!(action(h, grace), want);
        }
        assert_eq!(
            action(Some(&sleep(5)), grace),
            HookAction::Sleep(Duration::from_secs(5))
        );
        assert_eq!(action(Some(&sleep(90)), grace), HookAction::Sleep(grace));
        assert_eq!(
            action(Some(&sleep(-3)), grace),
            HookAction::Sleep(Duration::ZERO)
        );
        assert_eq!(
            action(Some(&sleep(0)), grace),
            HookAction::Sleep(Duration::ZERO)
        );
    }
}
