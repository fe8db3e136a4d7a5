//! Restart policies: the pod's `restartPolicy`, a container's own `restartPolicy` and its
//! `restartPolicyRules` (ContainerRestartRules), and the one decision made from them, whether
//! a container that ended with an exit code starts again. The kubelet's
//! `podutil.ContainerShouldRestart` (pkg/api/v1/pod/util.go) is the model.
//!
//! An init container whose own policy is `Always` is a sidecar (a restartable init
//! container): it keeps running beside the app containers; [`is_sidecar`] tells.

use super::{Container, PodSpec};
use serde::{Deserialize, Serialize};

/// A restart policy, of a pod or of one container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever the exit code (the pod default).
    #[default]
    Always,
    /// Restart when the exit code is not 0.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Reads the API's spelling (`Always`, `OnFailure`, `Never`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Always" => Some(RestartPolicy::Always),
            "OnFailure" => Some(RestartPolicy::OnFailure),
            "Never" => Some(RestartPolicy::Never),
            _ => None,
        }
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        }
    }

    /// Whether a container ended with `exit_code` starts again under this policy.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// One of a container's `restartPolicyRules`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerRestartRule {
    /// `Restart` (restart this container) or `RestartAllContainers` (not admitted here).
    pub action: String,
    /// The exit codes the rule matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_codes: Option<RestartRuleOnExitCodes>,
}

/// `restartPolicyRules[].exitCodes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RestartRuleOnExitCodes {
    /// `In` or `NotIn`.
    pub operator: String,
    /// The codes compared with.
    pub values: Vec<i32>,
}

impl ContainerRestartRule {
    /// Whether the rule matches a container that ended with `exit_code`.
    fn matches(&self, exit_code: i32) -> bool {
        match &self.exit_codes {
            None => false,
            Some(e) => match e.operator.as_str() {
                "In" => e.values.contains(&exit_code),
                "NotIn" => !e.values.contains(&exit_code),
                _ => false,
            },
        }
    }
}

/// The pod's restart policy (`Always` when unset).
pub fn pod_policy(spec: &PodSpec) -> RestartPolicy {
    spec.restart_policy
        .as_deref()
        .and_then(RestartPolicy::parse)
        .unwrap_or_default()
}

/// A container's own restart policy, if it names one (and it is one).
pub fn container_policy(c: &Container) -> Option<RestartPolicy> {
    c.restart_policy.as_deref().and_then(RestartPolicy::parse)
}

/// Whether an init container is a sidecar: its own restart policy is `Always`.
pub fn is_sidecar(c: &Container) -> bool {
    container_policy(c) == Some(RestartPolicy::Always)
}

/// Whether container `c` of the pod, ended with `exit_code`, starts again: the first of its
/// `restartPolicyRules` that matches decides (`Restart`: yes), else its own `restartPolicy`,
/// else the pod's. The rules count only beside a container policy (the API refuses them
/// alone), as in the kubelet.
pub fn should_restart(spec: &PodSpec, c: &Container, exit_code: i32) -> bool {
    if let Some(own) = container_policy(c) {
        if let Some(rule) = c.restart_policy_rules.iter().find(|r| r.matches(exit_code)) {
            return rule.action == "Restart";
        }
        return own.restarts(exit_code);
    }
    pod_policy(spec).restarts(exit_code)
}

/// Whether the container may ever start again after it ends (a restart policy other than
/// `Never` or a `Restart` rule): the kubelet's `IsContainerRestartable`.
pub fn is_restartable(spec: &PodSpec, c: &Container) -> bool {
    if let Some(own) = container_policy(c) {
        return own != RestartPolicy::Never
            || c.restart_policy_rules.iter().any(|r| r.action == "Restart");
    }
    pod_policy(spec) != RestartPolicy::Never
}

/// Checks the restart fields of a pod as the API server and the kubelet's admission do:
/// `Err((field, reason))` for a policy that is not one, rules without a container policy, an
/// unknown operator or action, and `RestartAllContainers` (not supported by this node).
pub fn check(spec: &PodSpec) -> Result<(), (String, String)> {
    let groups = [
        ("spec.initContainers", &spec.init_containers),
        ("spec.containers", &spec.containers),
    ];
    for (list, containers) in groups {
        for (i, c) in containers.iter().enumerate() {
            let at = format!("{list}[{i}]");
            if let Some(p) = &c.restart_policy {
                if RestartPolicy::parse(p).is_none() {
                    return Err((
                        format!("{at}.restartPolicy"),
                        format!("`{p}` is not Always, OnFailure or Never"),
                    ));
                }
            }
            if !c.restart_policy_rules.is_empty() && c.restart_policy.is_none() {
                return Err((
                    format!("{at}.restartPolicyRules"),
                    "rules need the container's own restartPolicy".into(),
                ));
            }
            for (j, r) in c.restart_policy_rules.iter().enumerate() {
                let rat = format!("{at}.restartPolicyRules[{j}]");
                match r.action.as_str() {
                    "Restart" => {}
                    "RestartAllContainers" => {
                        return Err((
                            format!("{rat}.action"),
                            "RestartAllContainers is not supported by this node".into(),
                        ))
                    }
                    other => {
                        return Err((format!("{rat}.action"), format!("`{other}` is not Restart")))
                    }
                }
                match &r.exit_codes {
                    None => {
                        return Err((format!("{rat}.exitCodes"), "required".into()));
                    }
                    Some(e) if !matches!(e.operator.as_str(), "In" | "NotIn") => {
                        return Err((
                            format!("{rat}.exitCodes.operator"),
                            format!("`{}` is not In or NotIn", e.operator),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pod_policy: Option<&str>, c: serde_json::Value) -> (PodSpec, Container) {
        let c: Container = serde_json::from_value(c).unwrap();
        let spec = PodSpec {
            restart_policy: pod_policy.map(String::from),
            containers: vec![c.clone()],
            ..Default::default()
        };
        (spec, c)
    }

    #[test]
    fn the_decision_table() {
        let rule = |op: &str, v: &[i32]| serde_json::json!([{"action": "Restart", "exitCodes": {"operator": op, "values": v}}]);
        // (pod policy, container policy, rules, exit code, restarts)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            serde_json::Value,
            i32,
            bool,
        );
        let cases: Vec<Case> = vec![
            (None, None, serde_json::json!([]), 0, true),
            (Some("Always"), None, serde_json::json!([]), 1, true),
            (Some("OnFailure"), None, serde_json::json!([]), 0, false),
            (Some("OnFailure"), None, serde_json::json!([]), 2, true),
            (Some("Never"), None, serde_json::json!([]), 2, false),
            // The container's own policy wins over the pod's.
            (
                Some("Never"),
                Some("Always"),
                serde_json::json!([]),
                0,
                true,
            ),
            (
                Some("Always"),
                Some("Never"),
                serde_json::json!([]),
                1,
                false,
            ),
            (
                Some("Never"),
                Some("OnFailure"),
                serde_json::json!([]),
                1,
                true,
            ),
            // Rules: the first match decides; no match falls back to the container policy.
            (Some("Never"), Some("Never"), rule("In", &[42]), 42, true),
            (Some("Never"), Some("Never"), rule("In", &[42]), 1, false),
            (Some("Never"), Some("Never"), rule("NotIn", &[0]), 3, true),
            (Some("Never"), Some("Never"), rule("NotIn", &[0]), 0, false),
            (Some("Always"), Some("Always"), rule("In", &[7]), 0, true),
        ];
        for (pp, cp, rules, code, want) in cases {
            let (s, c) = spec(
                pp,
                serde_json::json!({"name": "c", "restartPolicy": cp, "restartPolicyRules": rules}),
            );
            assert_eq!(
                should_restart(&s, &c, code),
                want,
                "pod {pp:?} container {cp:?} rules {:?} code {code}",
                c.restart_policy_rules
            );
        }
    }

    #[test]
    fn restartable_and_sidecars() {
        let (s, c) = spec(Some("Never"), serde_json::json!({"name": "c"}));
        assert!(!is_restartable(&s, &c));
        let (s, c) = spec(
            Some("Never"),
            serde_json::json!({"name": "c", "restartPolicy": "Never",
                "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [1]}}]}),
        );
        assert!(is_restartable(&s, &c));
        let (_, c) = spec(
            None,
            serde_json::json!({"name": "c", "restartPolicy": "Always"}),
        );
        assert!(is_sidecar(&c));
    }

    #[test]
    fn checks_name_the_field() {
        let cases = [
            (
                serde_json::json!({"name": "c", "restartPolicy": "Sometimes"}),
                "spec.containers[0].restartPolicy",
            ),
            (
                serde_json::json!({"name": "c", "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [1]}}]}),
                "spec.containers[0].restartPolicyRules",
            ),
            (
                serde_json::json!({"name": "c", "restartPolicy": "Never", "restartPolicyRules": [{"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [1]}}]}),
                "spec.containers[0].restartPolicyRules[0].action",
            ),
            (
                serde_json::json!({"name": "c", "restartPolicy": "Never", "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "Is", "values": [1]}}]}),
                "spec.containers[0].restartPolicyRules[0].exitCodes.operator",
            ),
            (
                serde_json::json!({"name": "c", "restartPolicy": "Never", "restartPolicyRules": [{"action": "Restart"}]}),
                "spec.containers[0].restartPolicyRules[0].exitCodes",
            ),
        ];
        for (c, field) in cases {
            let (s, _) = spec(None, c);
            assert_eq!(check(&s).unwrap_err().0, field);
        }
        let (s, _) = spec(
            Some("Never"),
            serde_json::json!({"name": "c", "restartPolicy": "Never", "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]}),
        );
        assert!(check(&s).is_ok());
    }
}
