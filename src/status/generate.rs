//! Builds the v1 PodStatus from what the runtime reports, what the prober found, and what the
//! pod worker knows (waiting reasons), as the kubelet's `generateAPIPodStatus` does.

use crate::api::reason::Reason;
use crate::api::{self, Pod, PodCondition, PodStatus};
use crate::kuberuntime::instances::newest_first;
use crate::runtime::{ContainerState, ContainerStatus};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Why a container is waiting (set by the pod worker).
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    /// `ContainerCreating`, `CrashLoopBackOff`, `ErrImageNeverPull`, `CreateContainerConfigError`...
    pub reason: Reason,
    /// What went wrong, for the user (absent for plain ContainerCreating).
    pub message: Option<String>,
}

/// Inputs of [`pod_status`] beside the pod.
pub struct StatusInputs<'a> {
    /// Every instance of the pod's containers the runtime holds.
    pub containers: &'a [ContainerStatus],
    /// Container id → readiness (absent: no result yet).
    pub ready: &'a BTreeMap<String, bool>,
    /// Container id → startup probe passed (absent: no startup probe or not yet).
    pub started: &'a BTreeMap<String, bool>,
    /// Container name → waiting reason.
    pub waiting: &'a BTreeMap<String, Waiting>,
    /// A reason for the whole pod (such as a volume that cannot be set up).
    pub pod_message: Option<&'a str>,
    /// The node's address (`status.hostIP`).
    pub host_ip: &'a str,
    /// The pod's IPs, IPv4 first (hostNetwork: the host's).
    pub pod_ips: &'a [String],
    /// When the worker first saw the pod.
    pub start_time: SystemTime,
    /// The previous status, to keep transition times of unchanged conditions.
    pub previous: Option<&'a PodStatus>,
    /// The pod was stopped for good (deleted): no container starts again, so the phase is
    /// Succeeded or Failed, as the kubelet's `podIsTerminal`.
    pub terminal: bool,
}

fn time(t: Option<SystemTime>) -> Option<String> {
    t.map(api::rfc3339)
}

/// The container id as Kubernetes shows it.
pub fn container_id(id: &str) -> String {
    format!("containerd://{id}")
}

/// The kubelet's reason (and exit code 137) for a container known gone whose exit status
/// was never read.
pub const STATUS_UNKNOWN: &str = "ContainerStatusUnknown";

fn terminated(c: &ContainerStatus) -> api::StateTerminated {
    if c.exit_code.is_none() {
        // Gone, exit status never read: not a success (as the kubelet reports it).
        return api::StateTerminated {
            exit_code: 137,
            signal: None,
            reason: Some(STATUS_UNKNOWN.into()),
            message: Some("The container is gone and its exit status could not be read".into()),
            started_at: time(c.started_at),
            finished_at: time(c.finished_at),
            container_id: Some(container_id(&c.id)),
        };
    }
    api::StateTerminated {
        exit_code: c.exit_code.unwrap_or(0),
        signal: None,
        reason: c.reason.clone().or_else(|| {
            Some(
                if c.exit_code == Some(0) {
                    "Completed"
                } else {
                    "Error"
                }
                .into(),
            )
        }),
        message: c.message.clone(),
        started_at: time(c.started_at),
        finished_at: time(c.finished_at),
        container_id: Some(container_id(&c.id)),
    }
}

fn container_status(
    spec: &api::Container,
    instances: &[&ContainerStatus],
    inputs: &StatusInputs<'_>,
    has_readiness: bool,
    default_waiting: Reason,
) -> api::ContainerStatus {
    let mut sorted: Vec<&ContainerStatus> = instances.to_vec();
    sorted.sort_by(|a, b| newest_first(a, b));
    let latest = sorted.first().copied();
    let previous = sorted.get(1).copied();
    let mut s = api::ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone(),
        restart_count: latest.map(|c| c.attempt as i32).unwrap_or(0),
        ..Default::default()
    };
    if let Some(p) = previous {
        if p.state == ContainerState::Exited {
            s.last_state.terminated = Some(terminated(p));
        }
    }
    let waiting = inputs.waiting.get(&spec.name);
    match latest {
        Some(c) => {
            s.image_id = c.image_id.clone();
            s.container_id = Some(container_id(&c.id));
            match c.state {
                ContainerState::Running => {
                    s.state.running = Some(api::StateRunning {
                        started_at: time(c.started_at),
                    });
                    let started = inputs
                        .started
                        .get(&c.id)
                        .copied()
                        .unwrap_or(spec.startup_probe.is_none());
                    s.started = Some(started);
                    s.ready = started
                        && if has_readiness {
                            inputs.ready.get(&c.id).copied().unwrap_or(false)
                        } else {
                            true
                        };
                }
                ContainerState::Unknown => {
                    // It may still run: waiting, never terminated (the kubelet collapses an
                    // unknown state to waiting), until a kill confirms it gone.
                    s.started = Some(false);
                    s.state.waiting = Some(api::StateWaiting {
                        reason: Some(STATUS_UNKNOWN.into()),
                        message: Some(
                            "The container's state cannot be read: it is being stopped before it starts again".into(),
                        ),
                    });
                }
                ContainerState::Exited => {
                    s.started = Some(false);
                    if let Some(w) = waiting {
                        // Waiting to restart: the exited instance becomes lastState.
                        s.last_state.terminated = Some(terminated(c));
                        s.state.waiting = Some(api::StateWaiting {
                            reason: Some(w.reason.to_string()),
                            message: w.message.clone(),
                        });
                    } else {
                        s.state.terminated = Some(terminated(c));
                    }
                }
                ContainerState::Created => {
                    // Created, never started: why its start failed (the kubelet's reason
                    // cache, RunContainerError), else still being made.
                    s.started = Some(false);
                    s.state.waiting = Some(match waiting {
                        Some(w) => api::StateWaiting {
                            reason: Some(w.reason.to_string()),
                            message: w.message.clone(),
                        },
                        None => api::StateWaiting {
                            reason: Some(Reason::ContainerCreating.to_string()),
                            message: None,
                        },
                    });
                }
            }
        }
        None => {
            s.started = Some(false);
            let w = waiting.cloned().unwrap_or(Waiting {
                reason: default_waiting,
                message: None,
            });
            s.state.waiting = Some(api::StateWaiting {
                reason: Some(w.reason.to_string()),
                message: w.message,
            });
        }
    }
    s
}

/// The pod's status.
pub fn pod_status(pod: &Pod, inputs: &StatusInputs<'_>) -> PodStatus {
    let of = |name: &str| -> Vec<&ContainerStatus> {
        inputs
            .containers
            .iter()
            .filter(|c| c.name == name)
            .collect()
    };
    // A container not made yet waits for PodInitializing in a pod with init containers (the
    // kubelet's default waiting state), else ContainerCreating.
    let default_waiting = if pod.spec.init_containers.is_empty() {
        Reason::ContainerCreating
    } else {
        Reason::PodInitializing
    };
    let init: Vec<api::ContainerStatus> = pod
        .spec
        .init_containers
        .iter()
        .map(|c| {
            // A sidecar (restartable init container) is probed and ready as an app container.
            let probed = api::restart::is_sidecar(c) && c.readiness_probe.is_some();
            let mut s = container_status(c, &of(&c.name), inputs, probed, default_waiting);
            // A finished init container is ready (the kubelet reports it so).
            if s.state
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == 0)
            {
                s.ready = true;
            }
            s
        })
        .collect();
    let apps: Vec<api::ContainerStatus> = pod
        .spec
        .containers
        .iter()
        .map(|c| {
            container_status(
                c,
                &of(&c.name),
                inputs,
                c.readiness_probe.is_some(),
                default_waiting,
            )
        })
        .collect();
    let succeeded = |s: &api::ContainerStatus| {
        s.state
            .terminated
            .as_ref()
            .map(|t| t.exit_code == 0)
            .unwrap_or(false)
    };
    // Init containers are done: each regular one succeeded, each sidecar started (or the
    // app containers ran already: a sidecar restarting, or stopped at the end, undoes nothing).
    let apps_ran = apps.iter().any(|s| {
        s.state.running.is_some()
            || s.state.terminated.is_some()
            || s.last_state.terminated.is_some()
    });
    // As the kubelet's GeneratePodInitializedCondition: once an app container ran, the pod
    // was initialized (a restarting sidecar undoes nothing).
    let incomplete: Vec<&str> = if apps_ran {
        Vec::new()
    } else {
        pod.spec
            .init_containers
            .iter()
            .zip(&init)
            .filter(|(c, s)| {
                if api::restart::is_sidecar(c) {
                    s.started != Some(true)
                } else {
                    !succeeded(s)
                }
            })
            .map(|(c, _)| c.name.as_str())
            .collect()
    };
    let initialized = incomplete.is_empty();
    // Sidecars, then app containers, not ready (GenerateContainersReadyCondition).
    let unready: Vec<&str> = pod
        .spec
        .init_containers
        .iter()
        .zip(&init)
        .filter(|(c, s)| api::restart::is_sidecar(c) && !s.ready)
        .chain(
            pod.spec
                .containers
                .iter()
                .zip(&apps)
                .filter(|(_, s)| !s.ready),
        )
        .map(|(c, _)| c.name.as_str())
        .collect();
    let phase = phase(pod, &init, &apps, initialized, inputs.terminal);
    let all_ready = initialized && unready.is_empty() && !apps.is_empty();
    let cond = |kind: &str, ok: bool, reason: Option<&str>, message: Option<String>| PodCondition {
        kind: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: if ok { None } else { reason.map(str::to_string) },
        message: if ok { None } else { message },
        ..Default::default()
    };
    // Go prints a []string as `[a b]`: the kubelet's messages read so.
    let listed = |what: &str, names: &[&str]| {
        (!names.is_empty()).then(|| format!("containers with {what} status: [{}]", names.join(" ")))
    };
    // Conditions others own (set through the API, as they came with the pod) are kept; the
    // readiness gates read them.
    let external: Vec<PodCondition> = pod
        .status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .filter(|c| !KUBELET_CONDITIONS.contains(&c.kind.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let gates = readiness_gates(pod, &external);
    let containers_ready = match phase {
        "Succeeded" => cond("ContainersReady", false, Some("PodCompleted"), None),
        "Failed" => cond("ContainersReady", false, Some("PodFailed"), None),
        _ => cond(
            "ContainersReady",
            all_ready,
            Some("ContainersNotReady"),
            listed("unready", &unready),
        ),
    };
    // Ready says what ContainersReady says, until the readiness gates have their say.
    let mut ready = PodCondition {
        kind: "Ready".into(),
        ..containers_ready.clone()
    };
    if ready.status == "True" {
        if let Err(message) = gates {
            ready = cond(
                "Ready",
                false,
                Some("ReadinessGatesNotReady"),
                Some(message),
            );
        }
    }
    let mut conditions = vec![
        cond(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            listed("incomplete", &incomplete),
        ),
        ready,
        containers_ready,
        cond("PodScheduled", true, None, None),
    ];
    conditions.extend(external);
    let now = api::rfc3339(SystemTime::now());
    for c in &mut conditions {
        let before = inputs
            .previous
            .and_then(|p| p.conditions.iter().find(|x| x.kind == c.kind))
            .filter(|x| x.status == c.status)
            .and_then(|x| x.last_transition_time.clone());
        c.last_transition_time = Some(before.unwrap_or_else(|| now.clone()));
    }
    PodStatus {
        phase: phase.into(),
        conditions,
        message: inputs.pod_message.map(str::to_string),
        reason: None,
        host_ip: Some(inputs.host_ip.to_string()).filter(|s| !s.is_empty()),
        pod_ip: inputs.pod_ips.first().cloned(),
        pod_ips: inputs
            .pod_ips
            .iter()
            .map(|ip| api::PodIP { ip: ip.clone() })
            .collect(),
        start_time: Some(api::rfc3339(inputs.start_time)),
        init_container_statuses: init,
        container_statuses: apps,
        ephemeral_container_statuses: ephemeral_statuses(pod, inputs),
        qos_class: Some(qos_class(pod).into()),
    }
}

/// Marks container `id` not ready in a status already built (for a pod whose worker is busy
/// stopping it, where readiness must still fall, as the kubelet's status manager does): the
/// container's `ready`, and the pod's Ready and ContainersReady conditions. Whether anything
/// changed.
pub fn mark_unready(status: &mut PodStatus, id: &str) -> bool {
    let cid = container_id(id);
    let mut changed = false;
    for c in status
        .container_statuses
        .iter_mut()
        .chain(status.init_container_statuses.iter_mut())
        .filter(|c| c.container_id.as_deref() == Some(cid.as_str()) && c.ready)
    {
        c.ready = false;
        changed = true;
    }
    if changed {
        let now = api::rfc3339(SystemTime::now());
        for c in status
            .conditions
            .iter_mut()
            .filter(|c| (c.kind == "Ready" || c.kind == "ContainersReady") && c.status == "True")
        {
            c.status = "False".into();
            c.reason = Some("ContainersNotReady".into());
            c.last_transition_time = Some(now.clone());
        }
    }
    changed
}

/// The pod conditions the node sets; others (readiness gates' conditions) belong to whoever
/// set them through the API.
const KUBELET_CONDITIONS: &[&str] = &[
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
    "PodReadyToStartContainers",
];

/// Whether every `spec.readinessGates` condition is `True` among `conditions`; else the
/// kubelet's message naming each gate that is not.
fn readiness_gates(pod: &Pod, conditions: &[PodCondition]) -> Result<(), String> {
    let mut unready = Vec::new();
    for g in &pod.spec.readiness_gates {
        match conditions.iter().find(|c| c.kind == g.condition_type) {
            None => unready.push(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                g.condition_type
            )),
            Some(c) if c.status != "True" => unready.push(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}.",
                g.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if unready.is_empty() {
        Ok(())
    } else {
        Err(unready.join(", "))
    }
}

/// The status of each of `spec.ephemeralContainers`: the shape of a container's, never ready
/// and without `started` (the kubelet's prober leaves them alone). One that never ran waits
/// (ContainerCreating, or why it cannot start).
fn ephemeral_statuses(pod: &Pod, inputs: &StatusInputs<'_>) -> Vec<api::ContainerStatus> {
    pod.spec
        .ephemeral_containers
        .iter()
        .map(|ec| {
            let c = &ec.container;
            let instances: Vec<&ContainerStatus> = inputs
                .containers
                .iter()
                .filter(|i| i.name == c.name)
                .collect();
            let mut s = container_status(c, &instances, inputs, false, Reason::ContainerCreating);
            s.ready = false;
            s.started = None;
            s
        })
        .collect()
}

/// The pod phase, by the kubelet's rules.
fn phase(
    pod: &Pod,
    init: &[api::ContainerStatus],
    apps: &[api::ContainerStatus],
    initialized: bool,
    terminal: bool,
) -> &'static str {
    let spec_of = |list: &'_ [api::Container], name: &str| -> Option<api::Container> {
        list.iter().find(|c| c.name == name).cloned()
    };
    // A container that ended and will not start again (its own rules and policy, else the
    // pod's: `api::restart`).
    let ended_for_good = |list: &[api::Container], s: &api::ContainerStatus| -> Option<i32> {
        let t = s.state.terminated.as_ref()?;
        let c = spec_of(list, &s.name)?;
        (terminal || !api::restart::should_restart(&pod.spec, &c, t.exit_code))
            .then_some(t.exit_code)
    };
    let init_failed = init
        .iter()
        .any(|s| ended_for_good(&pod.spec.init_containers, s).is_some_and(|code| code != 0));
    if init_failed {
        return "Failed";
    }
    if !initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in apps {
        if s.state.running.is_some() {
            running += 1;
        } else if s.state.terminated.is_some() {
            match ended_for_good(&pod.spec.containers, s) {
                // It starts again: the pod still runs.
                None => running += 1,
                Some(code) => {
                    stopped += 1;
                    if code == 0 {
                        succeeded += 1;
                    }
                }
            }
        } else if s.state.waiting.is_some() {
            // A container waiting after it has run once (back-off) still counts as running
            // for the phase, as in the kubelet.
            if s.last_state.terminated.is_some() {
                running += 1;
            } else {
                waiting += 1;
            }
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 && stopped == apps.len() {
        if succeeded == stopped {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Pending"
    }
}

/// Guaranteed, Burstable or BestEffort.
pub fn qos_class(pod: &Pod) -> &'static str {
    let all: Vec<&api::Container> = pod
        .spec
        .containers
        .iter()
        .chain(pod.spec.init_containers.iter())
        .collect();
    let any = all
        .iter()
        .any(|c| !c.resources.limits.is_empty() || !c.resources.requests.is_empty());
    if !any {
        return "BestEffort";
    }
    let guaranteed = all.iter().all(|c| {
        ["cpu", "memory"].iter().all(|k| {
            let l = c.resources.limits.get(*k);
            l.is_some()
                && c.resources
                    .requests
                    .get(*k)
                    .map(|r| Some(r) == l)
                    .unwrap_or(true)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"restartPolicy": policy,
                "initContainers": [{"name": "init", "image": "i"}],
                "containers": [{"name": "app", "image": "i", "readinessProbe": {"exec": {"command": ["true"]}}}]}
        }))
        .unwrap()
    }

    fn inst(
        name: &str,
        id: &str,
        attempt: u32,
        state: ContainerState,
        exit: Option<i32>,
    ) -> ContainerStatus {
        let created = UNIX_EPOCH + Duration::from_secs(attempt as u64);
        ContainerStatus {
            image: "i".into(),
            image_id: "sha256:1".into(),
            started_at: Some(UNIX_EPOCH),
            finished_at: exit.map(|_| UNIX_EPOCH),
            exit_code: exit,
            ..ContainerStatus::for_test(id, "u", name, attempt, state, created)
        }
    }

    fn status(
        pod: &Pod,
        cs: &[ContainerStatus],
        ready: &[(&str, bool)],
        waiting: &[(&str, Reason)],
    ) -> PodStatus {
        status_of(pod, cs, ready, waiting, false)
    }

    /// [`status`], for a pod stopped for good when `terminal`.
    fn status_of(
        pod: &Pod,
        cs: &[ContainerStatus],
        ready: &[(&str, bool)],
        waiting: &[(&str, Reason)],
        terminal: bool,
    ) -> PodStatus {
        let ready: BTreeMap<String, bool> =
            ready.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let waiting: BTreeMap<String, Waiting> = waiting
            .iter()
            .map(|(k, r)| {
                (
                    k.to_string(),
                    Waiting {
                        reason: *r,
                        message: None,
                    },
                )
            })
            .collect();
        let started = BTreeMap::new();
        pod_status(
            pod,
            &StatusInputs {
                containers: cs,
                ready: &ready,
                started: &started,
                waiting: &waiting,
                pod_message: None,
                host_ip: "10.0.0.1",
                pod_ips: &[],
                start_time: UNIX_EPOCH,
                previous: None,
                terminal,
            },
        )
    }

    fn cond<'a>(s: &'a PodStatus, kind: &str) -> &'a str {
        &s.conditions.iter().find(|c| c.kind == kind).unwrap().status
    }

    #[test]
    fn a_stopped_deleted_pod_is_succeeded_or_failed_whatever_its_restart_policy() {
        let p = pod("Always");
        let phase_of = |app_exit: i32, terminal: bool| {
            let cs = [
                inst("init", "i1", 0, ContainerState::Exited, Some(0)),
                inst("app", "a1", 0, ContainerState::Exited, Some(app_exit)),
            ];
            status_of(&p, &cs, &[], &[], terminal).phase
        };
        // Alive, an ended container of an Always pod starts again: still Running.
        assert_eq!(phase_of(0, false), "Running");
        assert_eq!(phase_of(0, true), "Succeeded");
        assert_eq!(phase_of(137, true), "Failed");
    }

    /// (reason, message) of condition `kind`.
    fn why<'a>(s: &'a PodStatus, kind: &str) -> (Option<&'a str>, Option<&'a str>) {
        let c = s.conditions.iter().find(|c| c.kind == kind).unwrap();
        (c.reason.as_deref(), c.message.as_deref())
    }

    #[test]
    fn conditions_name_the_containers_they_wait_for_as_the_kubelet() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"restartPolicy": "Never",
                "initContainers": [{"name": "init1", "image": "i"}, {"name": "init2", "image": "i"}],
                "containers": [{"name": "run1", "image": "i"}, {"name": "run2", "image": "i"}]}
        }))
        .unwrap();
        let s = status(&p, &[], &[], &[]);
        assert_eq!(
            why(&s, "Initialized"),
            (
                Some("ContainersNotInitialized"),
                Some("containers with incomplete status: [init1 init2]")
            )
        );
        let unready = (
            Some("ContainersNotReady"),
            Some("containers with unready status: [run1 run2]"),
        );
        assert_eq!(why(&s, "ContainersReady"), unready);
        assert_eq!(why(&s, "Ready"), unready);
        let cs = [
            inst("init1", "i1", 0, ContainerState::Exited, Some(0)),
            inst("init2", "i2", 0, ContainerState::Exited, Some(0)),
            inst("run1", "r1", 0, ContainerState::Running, None),
            inst("run2", "r2", 0, ContainerState::Running, None),
        ];
        // run2 not started yet (no readiness probes here: a running one is ready).
        let s = status(&p, &cs[..3], &[], &[]);
        assert_eq!(why(&s, "Initialized"), (None, None));
        assert_eq!(
            why(&s, "Ready"),
            (
                Some("ContainersNotReady"),
                Some("containers with unready status: [run2]")
            )
        );
        // Ended: PodCompleted or PodFailed, with no list.
        let mut done = cs.clone();
        done[2] = inst("run1", "r1", 0, ContainerState::Exited, Some(0));
        done[3] = inst("run2", "r2", 0, ContainerState::Exited, Some(0));
        let s = status(&p, &done, &[], &[]);
        assert_eq!(s.phase, "Succeeded");
        assert_eq!(why(&s, "Ready"), (Some("PodCompleted"), None));
        done[3] = inst("run2", "r2", 0, ContainerState::Exited, Some(1));
        let s = status(&p, &done, &[], &[]);
        assert_eq!(s.phase, "Failed");
        assert_eq!(why(&s, "ContainersReady"), (Some("PodFailed"), None));
    }

    #[test]
    fn pending_until_init_done_then_running_and_ready() {
        let p = pod("Always");
        let s = status(&p, &[], &[], &[]);
        assert_eq!(s.phase, "Pending");
        assert_eq!(
            s.container_statuses[0]
                .state
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("PodInitializing"),
            "app containers wait behind init containers as the kubelet says"
        );
        let cs = [
            inst("init", "i1", 0, ContainerState::Exited, Some(0)),
            inst("app", "a1", 0, ContainerState::Running, None),
        ];
        let s = status(&p, &cs, &[], &[]);
        assert_eq!(s.phase, "Running");
        assert_eq!(cond(&s, "Initialized"), "True");
        assert!(
            s.init_container_statuses[0].ready,
            "a finished init container is ready"
        );
        assert_eq!(cond(&s, "Ready"), "False");
        let s = status(&p, &cs, &[("a1", true)], &[]);
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(cond(&s, "ContainersReady"), "True");
        assert!(s.container_statuses[0].ready);
    }

    /// A created instance whose start failed waits with the start's reason (the kubelet's
    /// reason cache), else with ContainerCreating.
    #[test]
    fn a_created_instance_waits_with_the_reason_its_start_failed() {
        let p = pod("Always");
        let cs = [
            inst("init", "i1", 0, ContainerState::Exited, Some(0)),
            inst("app", "a1", 0, ContainerState::Created, None),
        ];
        let reason = |s: &PodStatus| {
            let w = s.container_statuses[0].state.waiting.as_ref();
            w.and_then(|w| w.reason.clone())
        };
        let s = status(&p, &cs, &[], &[]);
        assert_eq!(reason(&s).as_deref(), Some("ContainerCreating"));
        let s = status(&p, &cs, &[], &[("app", Reason::RunContainerError)]);
        assert_eq!(reason(&s).as_deref(), Some("RunContainerError"));
        assert_eq!(s.phase, "Pending");
    }

    #[test]
    fn crash_loop_and_terminal_phases() {
        let p = pod("Always");
        let cs = [
            inst("init", "i1", 0, ContainerState::Exited, Some(0)),
            inst("app", "a1", 0, ContainerState::Exited, Some(1)),
            inst("app", "a2", 1, ContainerState::Exited, Some(1)),
        ];
        let s = status(&p, &cs, &[], &[("app", Reason::CrashLoopBackOff)]);
        let c = &s.container_statuses[0];
        assert_eq!(c.restart_count, 1);
        assert_eq!(
            c.state.waiting.as_ref().unwrap().reason.as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            c.last_state.terminated.as_ref().unwrap().reason.as_deref(),
            Some("Error")
        );
        assert_eq!(s.phase, "Running");

        let p = pod("Never");
        let cs = [
            inst("init", "i1", 0, ContainerState::Exited, Some(0)),
            inst("app", "a1", 0, ContainerState::Exited, Some(0)),
        ];
        assert_eq!(status(&p, &cs, &[], &[]).phase, "Succeeded");
        let cs = [inst("init", "i1", 0, ContainerState::Exited, Some(3))];
        assert_eq!(status(&p, &cs, &[], &[]).phase, "Failed");
        let p = pod("OnFailure");
        let cs = [
            inst("init", "i1", 0, ContainerState::Exited, Some(0)),
            inst("app", "a1", 0, ContainerState::Exited, Some(0)),
        ];
        let s = status(&p, &cs, &[], &[]);
        assert_eq!(s.phase, "Succeeded");
        assert_eq!(
            s.container_statuses[0]
                .state
                .terminated
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("Completed")
        );
        assert_eq!(cond(&s, "Ready"), "False");
    }

    #[test]
    fn qos() {
        let mut p = pod("Always");
        assert_eq!(qos_class(&p), "BestEffort");
        p.spec.containers[0]
            .resources
            .limits
            .insert("memory".into(), serde_json::json!("1Mi"));
        assert_eq!(qos_class(&p), "Burstable");
    }

    #[test]
    fn an_unknown_container_is_waiting_never_succeeded_and_a_lost_exit_is_137() {
        let p = pod("Never");
        let init = inst("init", "i1", 0, ContainerState::Exited, Some(0));
        let cs = [
            init.clone(),
            inst("app", "a1", 0, ContainerState::Unknown, None),
        ];
        let s = status(&p, &cs, &[], &[]);
        assert_ne!(s.phase, "Succeeded");
        assert_ne!(s.phase, "Failed");
        let app = &s.container_statuses[0];
        assert!(app.state.terminated.is_none(), "{app:?}");
        let w = app.state.waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some(STATUS_UNKNOWN));
        assert!(!app.ready);
        // Killed and gone, its exit status never read: terminated, 137, not a success.
        let cs = [init, inst("app", "a1", 0, ContainerState::Exited, None)];
        let s = status(&p, &cs, &[], &[]);
        assert_eq!(s.phase, "Failed");
        let t = s.container_statuses[0].state.terminated.as_ref().unwrap();
        assert_eq!(
            (t.exit_code, t.reason.as_deref()),
            (137, Some(STATUS_UNKNOWN))
        );
    }

    #[test]
    fn readiness_gates_hold_ready_until_their_conditions_are_true() {
        let cs = [
            inst("init", "i1", 0, ContainerState::Exited, Some(0)),
            inst("app", "a1", 0, ContainerState::Running, None),
        ];
        let with = |conditions: serde_json::Value| -> Pod {
            let mut p = pod("Always");
            p.spec.readiness_gates = vec![
                api::PodReadinessGate {
                    condition_type: "example.com/a".into(),
                },
                api::PodReadinessGate {
                    condition_type: "example.com/b".into(),
                },
            ];
            p.status = Some(
                serde_json::from_value(serde_json::json!({"conditions": conditions})).unwrap(),
            );
            p
        };
        // (conditions the API holds, Ready, message)
        let cases = [
            (serde_json::json!([]), "False", Some("corresponding condition of pod readiness gate \"example.com/a\" does not exist., corresponding condition of pod readiness gate \"example.com/b\" does not exist.")),
            (serde_json::json!([{"type": "example.com/a", "status": "True"}, {"type": "example.com/b", "status": "False"}]), "False", Some("the status of pod readiness gate \"example.com/b\" is not \"True\", but False.")),
            (serde_json::json!([{"type": "example.com/a", "status": "True"}, {"type": "example.com/b", "status": "True"},
                                {"type": "Ready", "status": "False"}]), "True", None),
        ];
        for (conds, want, message) in cases {
            let p = with(conds.clone());
            let s = status(&p, &cs, &[("a1", true)], &[]);
            let ready = s.conditions.iter().find(|c| c.kind == "Ready").unwrap();
            assert_eq!(ready.status, want, "{conds}");
            assert_eq!(ready.message.as_deref(), message, "{conds}");
            if want == "False" {
                assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
            }
            assert_eq!(cond(&s, "ContainersReady"), "True");
            // The gates' own conditions are kept (the node never drops what others set);
            // the node's own Ready is not taken from the API's copy.
            for c in conds.as_array().unwrap() {
                if c["type"] != "Ready" {
                    assert_eq!(
                        cond(&s, c["type"].as_str().unwrap()),
                        c["status"].as_str().unwrap()
                    );
                }
            }
            assert_eq!(s.conditions.iter().filter(|c| c.kind == "Ready").count(), 1);
        }
    }

    #[test]
    fn ephemeral_containers_have_statuses_of_their_own_never_ready() {
        let mut p = pod("Always");
        p.spec.ephemeral_containers = serde_json::from_value(serde_json::json!([
            {"name": "dbg", "image": "busybox"}, {"name": "later", "image": "busybox"}]))
        .unwrap();
        let init = inst("init", "i1", 0, ContainerState::Exited, Some(0));
        let app = inst("app", "a1", 0, ContainerState::Running, None);
        let dbg = inst("dbg", "d1", 0, ContainerState::Running, None);
        let s = status(&p, &[init.clone(), app.clone(), dbg], &[("a1", true)], &[]);
        // Only the regular containers make the phase and readiness.
        assert_eq!((s.phase.as_str(), cond(&s, "Ready")), ("Running", "True"));
        assert_eq!(s.container_statuses.len(), 1);
        let e = &s.ephemeral_container_statuses;
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "dbg");
        assert!(e[0].state.running.is_some());
        assert_eq!(e[0].container_id.as_deref(), Some("containerd://d1"));
        assert_eq!(
            (e[0].ready, e[0].restart_count, e[0].started),
            (false, 0, None)
        );
        assert_eq!(e[0].image_id, "sha256:1");
        let w = e[1].state.waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        // Ended: terminated with its exit code; the pod goes on running.
        let dbg = inst("dbg", "d1", 0, ContainerState::Exited, Some(3));
        let s = status(&p, &[init, app, dbg], &[("a1", true)], &[]);
        let t = s.ephemeral_container_statuses[0]
            .state
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
        assert_eq!(s.phase, "Running");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["ephemeralContainerStatuses"][0]["name"], "dbg");
        assert!(json["ephemeralContainerStatuses"][0]
            .get("started")
            .is_none());
    }

    #[test]
    fn a_container_marked_unready_takes_the_pod_ready_condition_down() {
        let p = pod("Always");
        let cs = [
            inst("init", "i1", 0, ContainerState::Exited, Some(0)),
            inst("app", "a1", 0, ContainerState::Running, None),
        ];
        let mut s = status(&p, &cs, &[("a1", true)], &[]);
        assert_eq!(cond(&s, "Ready"), "True");
        assert!(!mark_unready(&mut s, "other"));
        assert_eq!(cond(&s, "Ready"), "True");
        assert!(mark_unready(&mut s, "a1"));
        assert!(!s.container_statuses[0].ready);
        assert_eq!(cond(&s, "Ready"), "False");
        assert_eq!(cond(&s, "ContainersReady"), "False");
        assert!(!mark_unready(&mut s, "a1"), "nothing more to change");
    }
}
