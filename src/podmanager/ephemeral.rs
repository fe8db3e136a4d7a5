//! Which ephemeral containers (`kubectl debug`) to start, as the kubelet's `computePodActions`
//! decides it (`EphemeralContainersToStart`): one that has never had an instance is started,
//! even while init containers have not finished; one that has is never started again, whatever
//! became of it and whatever the pod's restart policy. A `targetContainerName` needs that
//! container running: the new one joins its PID namespace.

use crate::api::{self, EphemeralContainer};
use crate::runtime::{ContainerState, ContainerStatus};

/// What to do now with one ephemeral container.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Start it; in the PID namespace of this container (its id) when it has a target.
    Start {
        /// The id of the target container whose PID namespace it joins (`None`: the pod's).
        pid_target: Option<String>,
    },
    /// Not yet: its target container does not run. The waiting message says so.
    Wait(String),
}

/// The ephemeral containers of `spec` to act on now, with their plan. `instances` are every
/// instance of the pod's containers the runtime holds; `reported` the pod's last status,
/// whose `ephemeralContainerStatuses` remember a container whose instance is gone (removed
/// after a reboot or by hand): it is not started again either.
pub fn to_start<'a>(
    spec: &'a api::PodSpec,
    instances: &[ContainerStatus],
    reported: Option<&api::PodStatus>,
) -> Vec<(&'a EphemeralContainer, Plan)> {
    let ran_before = |name: &str| {
        instances.iter().any(|c| c.name == name)
            || reported.is_some_and(|s| {
                s.ephemeral_container_statuses
                    .iter()
                    .any(|e| e.name == name && e.container_id.is_some())
            })
    };
    spec.ephemeral_containers
        .iter()
        .filter(|ec| !ran_before(&ec.container.name))
        .map(|ec| (ec, plan(ec, instances)))
        .collect()
}

fn plan(ec: &EphemeralContainer, instances: &[ContainerStatus]) -> Plan {
    let Some(target) = ec
        .target_container_name
        .as_deref()
        .filter(|t| !t.is_empty())
    else {
        return Plan::Start { pid_target: None };
    };
    match crate::kuberuntime::instances::latest(instances, target) {
        Some(c) if c.state == ContainerState::Running => Plan::Start {
            pid_target: Some(c.id.clone()),
        },
        _ => Plan::Wait(format!(
            "target container \"{target}\" is not running: ephemeral container \"{}\" starts when it runs",
            ec.container.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Container, PodSpec, PodStatus};
    use std::time::{Duration, UNIX_EPOCH};

    fn ec(name: &str, target: Option<&str>) -> EphemeralContainer {
        EphemeralContainer {
            container: Container {
                name: name.into(),
                image: "busybox".into(),
                ..Default::default()
            },
            target_container_name: target.map(str::to_string),
        }
    }

    fn instance(id: &str, name: &str, attempt: u32, state: ContainerState) -> ContainerStatus {
        let created = UNIX_EPOCH + Duration::from_secs(attempt as u64);
        ContainerStatus {
            image: "busybox".into(),
            ..ContainerStatus::for_test(id, "u", name, attempt, state, created)
        }
    }

    fn reported(name: &str, id: Option<&str>) -> PodStatus {
        PodStatus {
            ephemeral_container_statuses: vec![api::ContainerStatus {
                name: name.into(),
                container_id: id.map(str::to_string),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn each_starts_once_and_never_again() {
        use ContainerState::*;
        let spec = PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ..Default::default()
            }],
            ephemeral_containers: vec![ec("dbg", None), ec("peek", Some("app"))],
            ..Default::default()
        };
        let start = |t: Option<&str>| Plan::Start {
            pid_target: t.map(str::to_string),
        };
        let wait_app = Plan::Wait(
            "target container \"app\" is not running: ephemeral container \"peek\" starts when it runs"
                .into(),
        );
        // (instances, last status, expected (name, plan)).
        type Case = (
            Vec<ContainerStatus>,
            Option<PodStatus>,
            Vec<(&'static str, Plan)>,
        );
        let cases: Vec<Case> = vec![
            // Nothing yet, the target not made: the plain one starts, the targeted one waits.
            (
                vec![],
                None,
                vec![("dbg", start(None)), ("peek", wait_app.clone())],
            ),
            // The target runs (its newest instance): joined by id.
            (
                vec![
                    instance("a0", "app", 0, Exited),
                    instance("a1", "app", 1, Running),
                ],
                None,
                vec![("dbg", start(None)), ("peek", start(Some("a1")))],
            ),
            // The target's newest instance exited: wait.
            (
                vec![instance("a1", "app", 1, Exited)],
                None,
                vec![("dbg", start(None)), ("peek", wait_app.clone())],
            ),
            // Any instance, in any state, means it ran: never started again.
            (
                vec![
                    instance("a1", "app", 0, Running),
                    instance("d", "dbg", 0, Exited),
                    instance("p", "peek", 0, Created),
                ],
                None,
                vec![],
            ),
            (
                vec![
                    instance("a1", "app", 0, Running),
                    instance("d", "dbg", 0, Unknown),
                ],
                None,
                vec![("peek", start(Some("a1")))],
            ),
            // Its instance gone but the last status had one: not again.
            (
                vec![instance("a1", "app", 0, Running)],
                Some(reported("dbg", Some("containerd://d"))),
                vec![("peek", start(Some("a1")))],
            ),
            // A status that only waited (never made): it starts.
            (
                vec![instance("a1", "app", 0, Running)],
                Some(reported("dbg", None)),
                vec![("dbg", start(None)), ("peek", start(Some("a1")))],
            ),
        ];
        for (i, (instances, status, want)) in cases.into_iter().enumerate() {
            let got: Vec<(&str, Plan)> = to_start(&spec, &instances, status.as_ref())
                .into_iter()
                .map(|(e, p)| (e.container.name.as_str(), p))
                .collect();
            assert_eq!(got, want, "case {i}");
        }
    }

    /// Adding an ephemeral container is a pod update that must restart nothing: the regular
    /// containers' hashes stay.
    #[test]
    fn adding_one_changes_no_container_hash() {
        let before = serde_json::json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "9"]}]}});
        let mut after = before.clone();
        after["spec"]["ephemeralContainers"] = serde_json::json!([{"name": "dbg", "image": "busybox", "stdin": true,
                                "targetContainerName": "app"}]);
        let (a, b) = (
            crate::podmanager::decode_pod(&before).unwrap(),
            crate::podmanager::decode_pod(&after).unwrap(),
        );
        assert_eq!(b.spec.ephemeral_containers.len(), 1);
        let hash = |p: &api::Pod| crate::kuberuntime::container_hash(&p.spec.containers[0]);
        assert_eq!(hash(&a), hash(&b));
        assert!(crate::kuberuntime::hash_matches(
            &hash(&a),
            &b.spec.containers[0]
        ));
    }

    /// The ConfigMaps and Secrets an ephemeral container's env names are fetched for it.
    #[test]
    fn its_env_objects_are_fetched() {
        let v = serde_json::json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}],
                     "ephemeralContainers": [{"name": "dbg", "image": "busybox",
                        "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                        "envFrom": [{"configMapRef": {"name": "cm"}}]}]}});
        let pod = crate::podmanager::decode_pod(&v).unwrap();
        let refs: Vec<(api::Kind, String)> = crate::volume::PodObjects::references(&pod)
            .into_iter()
            .map(|r| (r.kind, r.name))
            .collect();
        assert_eq!(
            refs,
            [
                (api::Kind::ConfigMap, "cm".to_string()),
                (api::Kind::Secret, "s".to_string())
            ]
        );
    }

    #[test]
    fn a_pod_without_ephemeral_containers_starts_none() {
        let spec = PodSpec::default();
        assert!(to_start(&spec, &[], None).is_empty());
    }
}
