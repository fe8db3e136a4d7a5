//! The node's pod admission (the kubelet's admit handlers): a pod this node cannot run as
//! asked is refused at once, `Failed` with a reason and a message naming the field, never
//! started with part of its spec ignored. [`admit`] decides; the pod manager records the
//! refusal.

use crate::api::{self, Pod};
use crate::kuberuntime::{apparmor, sysctl};

/// What the node offers, for [`admit`].
pub struct Node<'a> {
    /// `--max-pods`.
    pub max_pods: usize,
    /// Pods the node holds now.
    pub pods: usize,
    /// The sysctls pods may set.
    pub sysctls: &'a sysctl::Allowlist,
    /// The kernel enforces AppArmor.
    pub apparmor: bool,
}

/// A refusal: the pod's status reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `status.reason` (the kubelet's where it has one).
    pub reason: &'static str,
    /// `status.message`.
    pub message: String,
}

impl Refusal {
    /// The status this refusal gives the pod: `Failed` with the reason and message.
    pub fn status(&self) -> api::PodStatus {
        api::PodStatus {
            phase: "Failed".into(),
            reason: Some(self.reason.into()),
            message: Some(self.message.clone()),
            ..Default::default()
        }
    }

    /// Whether `known` (the pod's status the node holds) already says this refusal: a
    /// refused pod comes again with each update (its Failed status relayed back from the
    /// cloud, a label), and is refused again without a new log line.
    pub fn already_recorded(&self, known: Option<&api::PodStatus>) -> bool {
        known.is_some_and(|s| {
            s.phase == "Failed"
                && s.reason.as_deref() == Some(self.reason)
                && s.message.as_deref() == Some(self.message.as_str())
        })
    }
}

fn refuse(reason: &'static str, message: String) -> Result<(), Refusal> {
    Err(Refusal { reason, message })
}

/// Admits or refuses `pod`, in the kubelet's order of checks.
pub fn admit(pod: &Pod, node: &Node<'_>) -> Result<(), Refusal> {
    if let Some(os) = pod
        .spec
        .os
        .as_ref()
        .filter(|o| !o.name.is_empty() && o.name != "linux")
    {
        let _ = os;
        return refuse(
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS".into(),
        );
    }
    if let Err(why) = node.sysctls.check(pod) {
        return refuse("SysctlForbidden", format!("forbidden sysctl: {why}"));
    }
    if let Err(e) = apparmor::admit(pod, node.apparmor) {
        return refuse("AppArmor", format!("Cannot enforce AppArmor: {e}"));
    }
    if pod.spec.host_users == Some(false) {
        return refuse(
            "UnsupportedPodSpec",
            "spec.hostUsers: false asks for a user namespace, which this node does not make".into(),
        );
    }
    let all = pod
        .spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| ("spec.initContainers", i, c));
    for (list, i, c) in all.chain(
        pod.spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| ("spec.containers", i, c)),
    ) {
        let pm = c
            .security_context
            .as_ref()
            .and_then(|s| s.proc_mount.as_deref());
        match pm {
            None | Some("Default") => {}
            Some("Unmasked") => {
                return refuse(
                    "UnsupportedPodSpec",
                    format!(
                        "{list}[{i}].securityContext.procMount: Unmasked needs spec.hostUsers: \
                         false (a user namespace), which this node does not make"
                    ),
                )
            }
            Some(other) => {
                return refuse(
                    "UnsupportedPodSpec",
                    format!(
                    "{list}[{i}].securityContext.procMount: `{other}` is not Default or Unmasked"
                ),
                )
            }
        }
    }
    if let Err((field, why)) = api::restart::check(&pod.spec) {
        return refuse("UnsupportedPodSpec", format!("{field}: {why}"));
    }
    if node.pods >= node.max_pods {
        return refuse(
            "OutOfpods",
            format!(
                "Node didn't have enough resource: pods (--max-pods {})",
                node.max_pods
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn each_refusal_with_its_reason() {
        let allow = sysctl::Allowlist::default();
        let node = Node {
            max_pods: 2,
            pods: 0,
            sysctls: &allow,
            apparmor: false,
        };
        let c = serde_json::json!([{"name": "c", "image": "i"}]);
        // (spec, reason or None when admitted, words the message has)
        let cases = [
            (serde_json::json!({"containers": c}), None, ""),
            (
                serde_json::json!({"containers": c, "os": {"name": "linux"}}),
                None,
                "",
            ),
            (
                serde_json::json!({"containers": c, "os": {"name": "windows"}}),
                Some("PodOSNotSupported"),
                "OS field",
            ),
            (
                serde_json::json!({"containers": c, "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}),
                Some("SysctlForbidden"),
                "kernel.msgmax",
            ),
            (
                serde_json::json!({"containers": c, "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}),
                Some("AppArmor"),
                "Cannot enforce AppArmor: AppArmor is not enabled on the host",
            ),
            (
                serde_json::json!({"containers": c, "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}),
                None,
                "",
            ),
            (
                serde_json::json!({"containers": c, "hostUsers": false}),
                Some("UnsupportedPodSpec"),
                "spec.hostUsers",
            ),
            (
                serde_json::json!({"containers": c, "hostUsers": true}),
                None,
                "",
            ),
            (
                serde_json::json!({"containers": [{"name": "c", "securityContext": {"procMount": "Unmasked"}}]}),
                Some("UnsupportedPodSpec"),
                "spec.containers[0].securityContext.procMount: Unmasked",
            ),
            (
                serde_json::json!({"containers": [{"name": "c", "securityContext": {"procMount": "Default"}}]}),
                None,
                "",
            ),
            (
                serde_json::json!({"containers": [{"name": "c", "restartPolicy": "Never", "restartPolicyRules": [{"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [1]}}]}]}),
                Some("UnsupportedPodSpec"),
                "RestartAllContainers",
            ),
        ];
        for (spec, reason, words) in cases {
            let p = pod(spec.clone());
            match (admit(&p, &node), reason) {
                (Ok(()), None) => {}
                (Err(r), Some(want)) => {
                    assert_eq!(r.reason, want, "{spec}");
                    assert!(r.message.contains(words), "{spec}: {}", r.message);
                }
                (got, want) => panic!("{spec}: got {got:?}, want {want:?}"),
            }
        }
        let full = Node { pods: 2, ..node };
        assert_eq!(
            admit(&pod(serde_json::json!({"containers": c})), &full)
                .unwrap_err()
                .reason,
            "OutOfpods"
        );
    }

    #[test]
    fn a_refusal_already_in_the_status_is_not_recorded_again() {
        let r = Refusal {
            reason: "PodOSNotSupported",
            message: "m".into(),
        };
        let other = |reason: &str, message: &str| api::PodStatus {
            phase: "Failed".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..Default::default()
        };
        // (the status the node holds, already recorded)
        let cases = [
            (None, false),
            (Some(r.status()), true),
            (Some(other("PodOSNotSupported", "m")), true),
            (Some(other("SysctlForbidden", "m")), false),
            (Some(other("PodOSNotSupported", "another")), false),
            (
                Some(api::PodStatus {
                    phase: "Pending".into(),
                    ..Default::default()
                }),
                false,
            ),
        ];
        for (known, want) in cases {
            assert_eq!(r.already_recorded(known.as_ref()), want, "{known:?}");
        }
    }
}
