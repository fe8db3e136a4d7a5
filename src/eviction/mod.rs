//! The eviction manager, as the kubelet's: every 10 s it observes the node's signals
//! (`memory.available`, `nodefs.*`, `imagefs.*`) and what each active pod uses, and evicts:
//! every pod whose disk-backed emptyDir holds more than its `sizeLimit`, else, when a
//! `--eviction-hard` threshold is met, one pod per cycle ranked as the kubelet ranks them. An
//! evicted pod's containers are stopped and removed, its volumes released, and its status says
//! phase `Failed`, reason `Evicted` and the kubelet's message; it is not started again until it
//! is deleted and added anew.
//!
//! Layers: [`threshold`] (signals and the flag), [`decide`] (the pure decision), [`measure`]
//! (statvfs, meminfo, cgroups, disk usage), [`pressure`] (DiskPressure); this module runs the
//! cycle, hands evictions to the pod manager and makes [`crate::reserve`] (space kept for
//! deletes on a full disk) again when there is room.
//!
//! Unlike the kubelet, static pods (the manifest directory's) are evicted too: on an edge node
//! they are most of the workload. Pods of priority 2000000000 and above are never evicted.

pub mod decide;
pub mod measure;
pub mod pressure;
pub mod threshold;

pub use decide::{Eviction, PodUsage};
pub use threshold::{Threshold, Thresholds};

use crate::api::{self, Pod};
use crate::runtime::cgroups::Layout;
use crate::runtime::Runtime;
use crate::volume::VolumeManager;
use decide::{ContainerUsage, VolumeUsage};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The kubelet's eviction monitoring period.
pub const MONITORING_PERIOD: Duration = Duration::from_secs(10);

/// Settings of the eviction manager.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--eviction-hard`.
    pub thresholds: Vec<Threshold>,
    /// `--root-dir`: nodefs, and imagefs (`<root>/images`).
    pub root_dir: PathBuf,
    /// `--pod-log-dir`: container logs count as the pod's disk use.
    pub log_dir: PathBuf,
    /// How often signals are observed.
    pub period: Duration,
}

/// What the eviction manager needs of the pod manager (the kubelet hands its eviction manager
/// an `ActivePodsFunc` and a `KillPodFunc` the same way): the pods that may still run, where to
/// measure them, and a way to evict one. The pod manager implements it; this module does not
/// know the pod manager.
pub trait Pods {
    /// The pods that may still run (neither Failed nor Succeeded).
    fn active_pods(&self) -> Vec<Pod>;
    /// The runtime their containers run in.
    fn runtime(&self) -> Arc<dyn Runtime>;
    /// Their volumes (emptyDir usage).
    fn volumes(&self) -> Arc<VolumeManager>;
    /// Stops the pod named by `e` and reports it Failed.
    fn evict(&self, e: Eviction);
}

/// Runs the eviction manager for ever.
pub async fn run<P: Pods>(cfg: Config, pm: Rc<P>) {
    tracing::info!(thresholds = %Thresholds(cfg.thresholds.clone()), every = ?cfg.period, "eviction manager started");
    loop {
        smol::Timer::after(cfg.period).await;
        cycle(&cfg, &pm).await;
    }
}

/// One cycle: observe, decide, evict; and make the reserved space again when there is room.
pub async fn cycle<P: Pods>(cfg: &Config, pm: &Rc<P>) -> Vec<Eviction> {
    let pods = pm.active_pods();
    let (rt, vols) = (pm.runtime(), pm.volumes());
    let c = cfg.clone();
    let (obs, usage) = smol::unblock(move || {
        let layout = Layout::detect();
        let obs = measure::observe(&c.root_dir);
        let usage: Vec<PodUsage> = pods
            .iter()
            .map(|p| pod_usage(p, rt.as_ref(), &vols, &c, &layout))
            .collect();
        (obs, usage)
    })
    .await;
    if let Some(r) = crate::reserve::installed() {
        let room = obs
            .get(&threshold::Signal::NodeFsAvailable)
            .is_some_and(|o| o.available > 4 * r.size());
        if room && !r.is_held() {
            match smol::unblock(move || r.ensure()).await {
                Ok(true) => tracing::info!(file = %r.path().display(), "reserved space made again"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(file = %r.path().display(), error = %e, "cannot make the reserved space")
                }
            }
        }
    }
    let evictions = decide::decide(&cfg.thresholds, &obs, &usage);
    for e in &evictions {
        tracing::warn!(pod = %format!("{}/{}", e.namespace, e.name), message = %e.message.trim_end(), "evicting pod");
        pm.evict(e.clone());
    }
    evictions
}

/// What a pod asks for and uses now.
fn pod_usage(
    pod: &Pod,
    rt: &dyn Runtime,
    vols: &VolumeManager,
    cfg: &Config,
    layout: &Layout,
) -> PodUsage {
    let uid = &pod.metadata.uid;
    let q = |m: &std::collections::BTreeMap<String, serde_json::Value>, k: &str| {
        m.get(k)
            .and_then(api::quantity::bytes)
            .map(|b| b.max(0) as u64)
            .unwrap_or(0)
    };
    let instances = rt.list_pod_containers(uid);
    let measured = instances.is_ok();
    let instances = instances.unwrap_or_default();
    let snapshots = cfg.root_dir.join("images").join("snapshots");
    let logs = crate::kuberuntime::pod_log_dir(&cfg.log_dir, pod);
    let containers = pod
        .spec
        .containers
        .iter()
        .chain(pod.spec.init_containers.iter())
        .map(|c| {
            let mine: Vec<_> = instances.iter().filter(|i| i.name == c.name).collect();
            // Every instance's writable layer holds disk, the dead ones' too; and the logs.
            let (mut disk, mut inodes) = measure::disk_usage(&logs.join(&c.name));
            for i in &mine {
                let (b, n) = measure::disk_usage(&snapshots.join(&i.id).join("upper"));
                disk += b;
                inodes += n;
            }
            let memory = mine
                .iter()
                .filter(|i| i.state == crate::runtime::ContainerState::Running)
                .filter_map(|i| {
                    measure::working_set(&layout.memory_dir(&Layout::container_path(uid, &i.id)))
                })
                .max();
            ContainerUsage {
                name: c.name.clone(),
                memory_request: q(&c.resources.requests, "memory"),
                storage_request: q(&c.resources.requests, "ephemeral-storage"),
                memory,
                disk: Some(disk),
                inodes: Some(inodes),
            }
        })
        .collect();
    let volumes = pod
        .spec
        .volumes
        .iter()
        .filter_map(|v| {
            let e = v.empty_dir.as_ref()?;
            if !e.medium.as_deref().unwrap_or("").is_empty() {
                return None; // a tmpfs is sized by its limit already
            }
            let dir = vols
                .pod_dir(uid)
                .join("volumes")
                .join("kubernetes.io~empty-dir")
                .join(&v.name);
            let (bytes, inodes) = measure::disk_usage(&dir);
            let size_limit = e.size_limit.as_ref().and_then(|l| {
                let b = api::quantity::bytes(l).filter(|b| *b > 0)?;
                let text = match l {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((b as u64, text))
            });
            Some(VolumeUsage {
                name: v.name.clone(),
                bytes,
                inodes,
                size_limit,
            })
        })
        .collect();
    let memory = measure::working_set(&layout.memory_dir(&Layout::pod_path(uid)));
    let usage = PodUsage {
        uid: uid.clone(),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        priority: pod.spec.priority.unwrap_or(0),
        measured,
        memory,
        containers,
        volumes,
    };
    tracing::trace!(pod = %format!("{}/{}", pod.metadata.namespace, pod.metadata.name), ?usage, "pod usage");
    usage
}

/// The reason of a pod stopped for running past `activeDeadlineSeconds`.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

/// Whether a pod that started at `started` is past its `activeDeadlineSeconds` at `now`, and
/// if not, how long until it is (the kubelet's `activeDeadlineHandler`).
pub fn past_deadline(
    pod: &Pod,
    started: std::time::SystemTime,
    now: std::time::SystemTime,
) -> Result<Option<Eviction>, Option<std::time::Duration>> {
    let Some(secs) = pod.spec.active_deadline_seconds.filter(|s| *s >= 0) else {
        return Err(None);
    };
    let deadline = started + std::time::Duration::from_secs(secs as u64);
    match deadline.duration_since(now) {
        Ok(left) if !left.is_zero() => Err(Some(left)),
        _ => Ok(Some(Eviction {
            reason: DEADLINE_EXCEEDED,
            uid: pod.metadata.uid.clone(),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            message: "Pod was active on the node longer than the specified deadline".into(),
            pressure: None,
        })),
    }
}

/// Makes `api::PodStatus` say what the kubelet's eviction says: phase Failed, its reason
/// (Evicted, DeadlineExceeded), the message, and (under node pressure) the `DisruptionTarget`
/// condition.
pub fn mark_evicted(status: &mut api::PodStatus, e: &Eviction, now: &str) {
    status.phase = "Failed".into();
    status.reason = Some(e.reason.into());
    status.message = Some(e.message.clone());
    if e.pressure.is_some() {
        status.conditions.retain(|c| c.kind != "DisruptionTarget");
        status.conditions.push(api::PodCondition {
            kind: "DisruptionTarget".into(),
            status: "True".into(),
            last_transition_time: Some(now.to_string()),
            reason: Some("TerminationByKubelet".into()),
            message: Some(e.message.clone()),
            ..Default::default()
        });
    }
}

/// The eviction a stored status records (after an agent restart), if it records one. Statuses
/// are stored by namespace/name: one of a pod made after that status's pod started (a pod
/// added again under the same name) is another pod's, and does not count.
pub fn recorded(pod: &Pod, status: &api::PodStatus) -> Option<Eviction> {
    // A pod past its deadline stays stopped too; one whose deadline was raised since is
    // checked again by its worker.
    let created = pod
        .metadata
        .creation_timestamp
        .as_deref()
        .and_then(api::parse_rfc3339);
    let started = status.start_time.as_deref().and_then(api::parse_rfc3339);
    if let (Some(c), Some(s)) = (created, started) {
        if c > s {
            return None;
        }
    }
    let reason = match status.reason.as_deref() {
        Some(decide::REASON) => decide::REASON,
        Some(DEADLINE_EXCEEDED) => DEADLINE_EXCEEDED,
        _ => return None,
    };
    (status.phase == "Failed").then(|| Eviction {
        reason,
        uid: pod.metadata.uid.clone(),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        message: status.message.clone().unwrap_or_default(),
        pressure: status
            .conditions
            .iter()
            .any(|c| c.kind == "DisruptionTarget")
            .then_some("DiskPressure"),
    })
}

#[cfg(test)]
mod deadline_tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn active_deadline() {
        let mut pod = Pod::default();
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(past_deadline(&pod, t0, t0), Err(None));
        pod.spec.active_deadline_seconds = Some(5);
        assert_eq!(
            past_deadline(&pod, t0, t0 + Duration::from_secs(2)),
            Err(Some(Duration::from_secs(3)))
        );
        let e = past_deadline(&pod, t0, t0 + Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(e.reason, "DeadlineExceeded");
        assert!(e.message.contains("longer than the specified deadline"));
        // Raised by an update: not past it any more.
        pod.spec.active_deadline_seconds = Some(60);
        assert!(past_deadline(&pod, t0, t0 + Duration::from_secs(5)).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_says_evicted_and_is_recognised_again() {
        let pod = Pod::default();
        let e = Eviction {
            reason: decide::REASON,
            uid: String::new(),
            namespace: String::new(),
            name: String::new(),
            message: "The node was low on resource: ephemeral-storage. ".into(),
            pressure: Some("DiskPressure"),
        };
        let mut s = api::PodStatus {
            phase: "Running".into(),
            ..Default::default()
        };
        mark_evicted(&mut s, &e, "2026-01-01T00:00:00Z");
        assert_eq!(s.phase, "Failed");
        assert_eq!(s.reason.as_deref(), Some("Evicted"));
        assert_eq!(s.conditions[0].kind, "DisruptionTarget");
        assert_eq!(
            recorded(&pod, &s).map(|r| r.message),
            Some(e.message.clone())
        );
        let running = api::PodStatus {
            phase: "Failed".into(),
            ..Default::default()
        };
        assert!(recorded(&pod, &running).is_none());
        // A pod made after the evicted one started is another pod of the same name.
        s.start_time = Some("2026-01-01T00:00:10Z".into());
        let mut same = pod.clone();
        same.metadata.creation_timestamp = Some("2026-01-01T00:00:05Z".into());
        assert!(recorded(&same, &s).is_some());
        let mut newer = pod.clone();
        newer.metadata.creation_timestamp = Some("2026-01-01T00:01:00Z".into());
        assert!(recorded(&newer, &s).is_none());
    }
}
