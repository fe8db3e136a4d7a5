//! What a lifecycle hook (`postStart`, `preStop`) does, decided apart from the worker that
//! runs it: a command in the container, an HTTP GET, or a sleep (the `sleep` action), which
//! the kubelet ends early when the hook's time runs out (a preStop's grace period).

use crate::api::{HttpGetAction, LifecycleHandler};
use std::time::Duration;

/// One hook's action.
#[derive(Clone, Debug, PartialEq)]
pub enum HookAction {
    /// Run this command in the container.
    Exec(Vec<String>),
    /// Wait this long.
    Sleep(Duration),
    /// GET this URL of the pod (or of `host`); any answer is a success, as the kubelet's
    /// hook runner only fails on an error that leaves it without one.
    Http(HttpGetAction),
    /// A handler the kubelet cannot run (`tcpSocket`, kept in the API for old objects): the
    /// hook fails with this message.
    Invalid(String),
    /// No handler.
    Nothing,
}

/// The action of `handler`, a sleep cut to `limit` (a negative one is no wait). The API
/// server allows one handler; should more come, `exec` wins, then `httpGet`, then `sleep`.
pub fn action(handler: Option<&LifecycleHandler>, limit: Duration) -> HookAction {
    let Some(h) = handler else {
        return HookAction::Nothing;
    };
    if let Some(e) = &h.exec {
        return HookAction::Exec(e.command.clone());
    }
    if let Some(g) = &h.http_get {
        return HookAction::Http(g.clone());
    }
    if let Some(s) = &h.sleep {
        let secs = u64::try_from(s.seconds).unwrap_or(0);
        return HookAction::Sleep(Duration::from_secs(secs).min(limit));
    }
    if h.tcp_socket.is_some() {
        return HookAction::Invalid(
            "tcpSocket is not supported as a lifecycle handler (kept in the API only for old objects; use exec, httpGet or sleep)".into(),
        );
    }
    HookAction::Nothing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ExecAction, SleepAction, TcpSocketAction};

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
        let get = HttpGetAction {
            path: Some("/echo?msg=poststart".into()),
            port: serde_json::json!(8080),
            ..Default::default()
        };
        let http = LifecycleHandler {
            http_get: Some(get.clone()),
            ..Default::default()
        };
        let tcp = LifecycleHandler {
            tcp_socket: Some(TcpSocketAction {
                port: serde_json::json!(80),
                host: None,
            }),
            ..Default::default()
        };
        let grace = Duration::from_secs(30);
        let table = [
            (None, HookAction::Nothing),
            (Some(&LifecycleHandler::default()), HookAction::Nothing),
            (Some(&exec), HookAction::Exec(vec!["true".into()])),
            (Some(&http), HookAction::Http(get)),
        ];
        for (h, want) in table {
            assert_eq!(action(h, grace), want);
        }
        assert!(matches!(
            action(Some(&tcp), grace),
            HookAction::Invalid(m) if m.contains("tcpSocket")
        ));
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
