//! `edged exec` and `edged attach`: what to ask the agent's kubelet API for, and what its
//! answer means (pure decisions, table-tested); [`super::session`] carries them out.

use crate::flags::{AttachCmd, ExecCmd, Flags};
use serde_json::Value;

/// What one invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `exec` or `attach`.
    pub verb: &'static str,
    /// The pod's namespace (`-n`, else `default`).
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// `None`: found through `GET /pods`.
    pub container: Option<String>,
    /// The command and its arguments (exec only).
    pub command: Vec<String>,
    /// Send this terminal's input to the process (`-i`).
    pub stdin: bool,
    /// Give the process a terminal (`-t`); its stderr then comes on stdout.
    pub tty: bool,
}

/// The plan of `edged exec`; `Err`: what is wrong with the arguments.
pub fn exec_plan(cmd: &ExecCmd) -> Result<Plan, String> {
    if cmd.command.is_empty() {
        return Err(format!(
            "exec: give the command after the pod and --, e.g. `edged exec {} -- sh -c 'echo hi'`",
            cmd.pod
        ));
    }
    Ok(Plan {
        verb: "exec",
        namespace: cmd.namespace.clone().unwrap_or_else(|| "default".into()),
        pod: cmd.pod.clone(),
        container: cmd.container.clone(),
        command: cmd.command.clone(),
        stdin: cmd.stdin,
        tty: cmd.tty,
    })
}

/// The plan of `edged attach`.
pub fn attach_plan(cmd: &AttachCmd) -> Plan {
    Plan {
        verb: "attach",
        namespace: cmd.namespace.clone().unwrap_or_else(|| "default".into()),
        pod: cmd.pod.clone(),
        container: cmd.container.clone(),
        command: Vec::new(),
        stdin: cmd.stdin,
        tty: cmd.tty,
    }
}

/// Percent-encodes a path segment or query value (unreserved characters kept).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request target for `plan` against `container`: stdout always; stderr apart unless a
/// terminal merges it (as kubectl asks).
pub fn target(plan: &Plan, container: &str) -> String {
    let mut q: Vec<String> = plan
        .command
        .iter()
        .map(|c| format!("command={}", escape(c)))
        .collect();
    q.push(format!("stdin={}", plan.stdin));
    q.push("stdout=true".into());
    q.push(format!("stderr={}", !plan.tty));
    q.push(format!("tty={}", plan.tty));
    format!(
        "/{}/{}/{}/{}?{}",
        plan.verb,
        escape(&plan.namespace),
        escape(&plan.pod),
        escape(container),
        q.join("&")
    )
}

/// The container to use from the node's PodList (`GET /pods`): the pod's
/// `kubectl.kubernetes.io/default-container`, else its only container, else its first, with the
/// notice kubectl prints. `Err`: the pod is not there, or has no container.
pub fn choose_container(
    pods: &Value,
    namespace: &str,
    pod: &str,
) -> Result<(String, Option<String>), String> {
    let found = pods["items"].as_array().and_then(|items| {
        items.iter().find(|p| {
            p["metadata"]["name"] == pod
                && p["metadata"]["namespace"].as_str().unwrap_or("default") == namespace
        })
    });
    let Some(p) = found else {
        return Err(format!(
            "pod {namespace}/{pod} is not on this node (`edged get pods` lists the node's pods)"
        ));
    };
    let names = |key: &str| -> Vec<String> {
        p["spec"][key]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    if let Some(d) =
        p["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"].as_str()
    {
        if containers.iter().any(|c| c == d) {
            return Ok((d.to_string(), None));
        }
    }
    match containers.as_slice() {
        [] => Err(format!("pod {namespace}/{pod} has no containers")),
        [one] => Ok((one.clone(), None)),
        [first, ..] => {
            let mut all = containers.clone();
            all.extend(
                names("initContainers")
                    .into_iter()
                    .map(|c| format!("{c} (init)")),
            );
            Ok((
                first.clone(),
                Some(format!(
                    "Defaulted container \"{first}\" out of: {}",
                    all.join(", ")
                )),
            ))
        }
    }
}

/// The exit code and the message for stderr, from what the error channel carried (a v1
/// Status in v4/v5; `None`: the connection ended without one).
pub fn exit_status(error_channel: Option<&[u8]>) -> (i32, Option<String>) {
    let Some(bytes) = error_channel else {
        return (
            1,
            Some("error: the connection ended before the command's status came".into()),
        );
    };
    if bytes.is_empty() {
        return (0, None);
    }
    let Ok(status) = serde_json::from_slice::<Value>(bytes) else {
        return (
            1,
            Some(format!("error: {}", String::from_utf8_lossy(bytes))),
        );
    };
    if status["status"] == "Success" {
        return (0, None);
    }
    if status["reason"] == "NonZeroExitCode" {
        let code = status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse::<i32>().ok());
        if let Some(code) = code {
            return (
                code,
                Some(format!("command terminated with exit code {code}")),
            );
        }
    }
    let message = status["message"].as_str().unwrap_or("the command failed");
    (1, Some(format!("error: {message}")))
}

/// What to print for an HTTP answer other than the upgrade.
pub fn http_error(status: u16, body: &[u8]) -> String {
    let body = String::from_utf8_lossy(body);
    let body = body.trim();
    let kind = match status {
        400 => "bad request",
        403 => "refused",
        404 => "not found",
        _ => "the kubelet API answered",
    };
    format!("error: {kind} ({status}): {body}")
}

/// Runs `edged exec`; the process's exit code.
pub fn main_exec(flags: &Flags, cmd: &ExecCmd) -> i32 {
    match exec_plan(cmd) {
        Ok(plan) => super::session::run(flags, plan),
        Err(e) => {
            eprintln!("edged: {e}");
            2
        }
    }
}

/// Runs `edged attach`; the process's exit code.
pub fn main_attach(flags: &Flags, cmd: &AttachCmd) -> i32 {
    super::session::run(flags, attach_plan(cmd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Command;
    use serde_json::json;

    fn parse(args: &[&str]) -> Result<Plan, String> {
        let f = Flags::parse(args).map_err(|(m, _)| m)?;
        match f.command {
            Some(Command::Exec(c)) => exec_plan(&c),
            Some(Command::Attach(c)) => Ok(attach_plan(&c)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arguments() {
        let p = parse(&[
            "exec", "web", "-c", "app", "-it", "--", "sh", "-c", "echo hi",
        ]);
        // argh does not join short switches; the flags must be apart.
        assert!(p.is_err(), "{p:?}");
        let p = parse(&[
            "exec", "web", "-c", "app", "-i", "-t", "--", "sh", "-c", "echo hi",
        ])
        .unwrap();
        assert_eq!(
            (p.namespace.as_str(), p.container.as_deref(), p.stdin, p.tty),
            ("default", Some("app"), true, true)
        );
        assert_eq!(p.command, ["sh", "-c", "echo hi"]);
        assert_eq!(
            target(&p, "app"),
            "/exec/default/web/app?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&stderr=false&tty=true"
        );
        let p = parse(&[
            "exec",
            "-n",
            "kube-system",
            "web",
            "--",
            "ls",
            "--color=never",
        ])
        .unwrap();
        assert_eq!(p.command, ["ls", "--color=never"]);
        assert_eq!(
            target(&p, "a b"),
            "/exec/kube-system/web/a%20b?command=ls&command=--color%3Dnever&stdin=false&stdout=true&stderr=true&tty=false"
        );
        let e = parse(&["exec", "web"]).unwrap_err();
        assert!(e.contains("after the pod and --"), "{e}");
        let p = parse(&["--port", "9999", "attach", "web", "-i"]).unwrap();
        assert_eq!(
            target(&p, "app"),
            "/attach/default/web/app?stdin=true&stdout=true&stderr=true&tty=false"
        );
    }

    #[test]
    fn containers_are_defaulted_as_kubectl_does() {
        let pod = |name: &str, cs: &[&str], ann: Option<&str>| {
            let mut p = json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "containers": cs.iter().map(|c| json!({"name": c})).collect::<Vec<_>>(),
                    "initContainers": [{"name": "setup"}],
                },
            });
            if let Some(a) = ann {
                p["metadata"]["annotations"] =
                    json!({"kubectl.kubernetes.io/default-container": a});
            }
            p
        };
        let list = json!({"items": [
            pod("one", &["app"], None),
            pod("two", &["app", "sidecar"], None),
            pod("ann", &["app", "sidecar"], Some("sidecar")),
            pod("badann", &["app", "sidecar"], Some("gone")),
            pod("none", &[], None),
        ]});
        type Want = Result<(&'static str, Option<&'static str>), &'static str>;
        let cases: &[(&str, &str, Want)] = &[
            ("default", "one", Ok(("app", None))),
            (
                "default",
                "two",
                Ok((
                    "app",
                    Some("Defaulted container \"app\" out of: app, sidecar, setup (init)"),
                )),
            ),
            ("default", "ann", Ok(("sidecar", None))),
            (
                "default",
                "badann",
                Ok(("app", Some("Defaulted container"))),
            ),
            ("default", "none", Err("no containers")),
            ("default", "missing", Err("is not on this node")),
            ("other", "one", Err("pod other/one is not on this node")),
        ];
        for (ns, name, want) in cases {
            match (choose_container(&list, ns, name), want) {
                (Ok((c, note)), Ok((wc, wnote))) => {
                    assert_eq!(c, *wc, "{name}");
                    match (note, wnote) {
                        (Some(n), Some(w)) => assert!(n.starts_with(w), "{n}"),
                        (None, None) => {}
                        (n, w) => panic!("{name}: {n:?} != {w:?}"),
                    }
                }
                (Err(e), Err(says)) => assert!(e.contains(says), "{e}"),
                (got, w) => panic!("{name}: {got:?} != {w:?}"),
            }
        }
    }

    #[test]
    fn exit_codes_from_the_status() {
        use crate::server::streaming::{status_json, Outcome};
        type Case = (Option<Vec<u8>>, i32, Option<&'static str>);
        let cases: Vec<Case> = vec![
            (Some(status_json(&Outcome::Exited(0))), 0, None),
            (
                Some(status_json(&Outcome::Exited(42))),
                42,
                Some("command terminated with exit code 42"),
            ),
            (
                Some(status_json(&Outcome::Failed("no such container".into()))),
                1,
                Some("error: no such container"),
            ),
            (Some(Vec::new()), 0, None),
            (
                Some(b"command terminated with exit code 3".to_vec()),
                1,
                Some("error: command terminated"),
            ),
            (None, 1, Some("ended before")),
            // A NonZeroExitCode without a readable cause is a failure.
            (
                Some(br#"{"status":"Failure","reason":"NonZeroExitCode","message":"m"}"#.to_vec()),
                1,
                Some("error: m"),
            ),
        ];
        for (bytes, code, says) in cases {
            let (c, m) = exit_status(bytes.as_deref());
            assert_eq!(c, code, "{bytes:?}");
            match (m, says) {
                (Some(m), Some(s)) => assert!(m.contains(s), "{m}"),
                (None, None) => {}
                (m, s) => panic!("{m:?} != {s:?}"),
            }
        }
        assert_eq!(
            http_error(404, b"container \"x\" not found in pod default/web\n"),
            "error: not found (404): container \"x\" not found in pod default/web"
        );
    }
}
