//! The eviction decision, apart from measuring and acting: signals, thresholds and what each
//! pod uses in, which pods to evict (and the status message) out. Pods are ranked as the
//! kubelet ranks them (`pkg/kubelet/eviction/helpers.go`).

use super::threshold::{Resource, Signal, Threshold};
use std::collections::BTreeMap;

/// The kubelet's `Reason` of an evicted pod.
pub const REASON: &str = "Evicted";

/// Pods at or above this priority (`system-cluster-critical` and up) are critical: never
/// evicted, as the kubelet does not evict them.
pub const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// One observed signal: what is available of what capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// What is left (bytes or inodes).
    pub available: u64,
    /// The whole (bytes or inodes).
    pub capacity: u64,
}

/// The observed signals (a signal that could not be observed is absent).
pub type Observations = BTreeMap<Signal, Observation>;

/// What one container of a pod asks for and uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerUsage {
    /// The container's name in the spec.
    pub name: String,
    /// `resources.requests.memory`, bytes (0 when unset).
    pub memory_request: u64,
    /// `resources.requests.ephemeral-storage`, bytes (0 when unset).
    pub storage_request: u64,
    /// Working set bytes (None: not measured).
    pub memory: Option<u64>,
    /// Writable layer plus logs, bytes.
    pub disk: Option<u64>,
    /// Inodes of the writable layer and logs.
    pub inodes: Option<u64>,
}

/// What one disk-backed emptyDir of a pod holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeUsage {
    /// The volume's name in the spec.
    pub name: String,
    /// Bytes allocated under it.
    pub bytes: u64,
    /// Inodes under it.
    pub inodes: u64,
    /// `sizeLimit` in bytes, and as written (for the message).
    pub size_limit: Option<(u64, String)>,
}

/// A pod as the eviction manager sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodUsage {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Whether its usage could be measured (pods without stats are ranked first, as the
    /// kubelet ranks them).
    pub measured: bool,
    /// The pod's working set (its cgroup), bytes.
    pub memory: Option<u64>,
    /// Its containers (init containers too).
    pub containers: Vec<ContainerUsage>,
    /// Its disk-backed emptyDirs.
    pub volumes: Vec<VolumeUsage>,
}

impl PodUsage {
    fn memory_request(&self) -> u64 {
        self.containers.iter().map(|c| c.memory_request).sum()
    }

    fn storage_request(&self) -> u64 {
        self.containers.iter().map(|c| c.storage_request).sum()
    }

    fn memory_used(&self) -> u64 {
        self.memory
            .unwrap_or_else(|| self.containers.iter().filter_map(|c| c.memory).sum())
    }

    /// Bytes (or inodes) on disk: writable layers, logs and local volumes.
    fn disk_used(&self, r: Resource) -> u64 {
        let (c, v): (u64, u64) = match r {
            Resource::Inodes => (
                self.containers.iter().filter_map(|c| c.inodes).sum(),
                self.volumes.iter().map(|v| v.inodes).sum(),
            ),
            _ => (
                self.containers.iter().filter_map(|c| c.disk).sum(),
                self.volumes.iter().map(|v| v.bytes).sum(),
            ),
        };
        c + v
    }

    fn used(&self, r: Resource) -> u64 {
        match r {
            Resource::Memory => self.memory_used(),
            _ => self.disk_used(r),
        }
    }

    fn request(&self, r: Resource) -> u64 {
        match r {
            Resource::Memory => self.memory_request(),
            // The kubelet compares inodes with the (absent) inode request: zero.
            Resource::Inodes => 0,
            Resource::EphemeralStorage => self.storage_request(),
        }
    }
}

/// One pod to evict, and what its status is to say.
#[derive(Clone, Debug, PartialEq)]
pub struct Eviction {
    /// The pod's uid.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The status reason: `Evicted`, or `DeadlineExceeded` for a pod past its
    /// `activeDeadlineSeconds` (stopped the same way).
    pub reason: &'static str,
    /// The status message (the kubelet's wording).
    pub message: String,
    /// The node condition behind it (`DiskPressure`, `MemoryPressure`), `None` for a local
    /// storage limit. With one, the pod gets the `DisruptionTarget` condition.
    pub pressure: Option<&'static str>,
}

/// The thresholds met by `obs`, memory first (the kubelet's `byEvictionPriority`).
pub fn thresholds_met(thresholds: &[Threshold], obs: &Observations) -> Vec<Threshold> {
    let mut met: Vec<Threshold> = thresholds
        .iter()
        .filter(|t| {
            obs.get(&t.signal)
                .is_some_and(|o| o.available < t.quantity(o.capacity))
        })
        .copied()
        .collect();
    met.sort_by_key(|t| t.signal != Signal::MemoryAvailable);
    met
}

/// Pods whose disk-backed emptyDir holds more than its `sizeLimit`, with the kubelet's message.
pub fn empty_dir_evictions(pods: &[PodUsage]) -> Vec<Eviction> {
    let mut out = Vec::new();
    for p in pods.iter().filter(|p| p.priority < CRITICAL_PRIORITY) {
        if let Some(v) = p.volumes.iter().find(|v| {
            v.size_limit
                .as_ref()
                .is_some_and(|(l, _)| *l > 0 && v.bytes > *l)
        }) {
            let limit = v.size_limit.as_ref().map(|(_, s)| s.as_str()).unwrap_or("");
            out.push(Eviction {
                reason: REASON,
                uid: p.uid.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                message: format!(
                    "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                    v.name, limit
                ),
                pressure: None,
            });
        }
    }
    out
}

/// Orders pods for eviction under pressure on `r`: those using more than they request first,
/// then lower priority first, then the largest use above the request first; pods that could
/// not be measured go first of all. Ties keep namespace/name order.
pub fn rank(pods: &mut [&PodUsage], r: Resource) {
    pods.sort_by(|a, b| {
        let by_name = || (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name));
        if !a.measured || !b.measured {
            return a.measured.cmp(&b.measured).then_with(by_name);
        }
        let exceeds = |p: &PodUsage| p.used(r) > p.request(r);
        let above = |p: &PodUsage| p.used(r) as i128 - p.request(r) as i128;
        exceeds(b)
            .cmp(&exceeds(a))
            .then_with(|| a.priority.cmp(&b.priority))
            .then_with(|| above(b).cmp(&above(a)))
            .then_with(by_name)
    });
}

/// The one decision of a cycle: pods over an emptyDir limit (all of them), else, when a
/// threshold is met, the first pod of the ranking for the resource it reclaims (one per cycle,
/// as the kubelet evicts one). Critical pods are never chosen.
pub fn decide(thresholds: &[Threshold], obs: &Observations, pods: &[PodUsage]) -> Vec<Eviction> {
    let local = empty_dir_evictions(pods);
    if !local.is_empty() {
        return local;
    }
    let Some(t) = thresholds_met(thresholds, obs).into_iter().next() else {
        return Vec::new();
    };
    let r = t.signal.resource();
    let mut candidates: Vec<&PodUsage> = pods
        .iter()
        .filter(|p| p.priority < CRITICAL_PRIORITY)
        .collect();
    rank(&mut candidates, r);
    let Some(victim) = candidates.first() else {
        return Vec::new();
    };
    let o = obs.get(&t.signal).copied().unwrap_or(Observation {
        available: 0,
        capacity: 0,
    });
    vec![Eviction {
        reason: REASON,
        uid: victim.uid.clone(),
        namespace: victim.namespace.clone(),
        name: victim.name.clone(),
        message: message(r, &t, o, victim),
        pressure: Some(t.signal.condition()),
    }]
}

/// The kubelet's message for a pod evicted under pressure on `r`.
fn message(r: Resource, t: &Threshold, o: Observation, pod: &PodUsage) -> String {
    let fmt_q = |v: u64| match r {
        Resource::Inodes => decimal(v),
        _ => binary(v),
    };
    let mut m = format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
        r.name(),
        binary(t.quantity(o.capacity)),
        fmt_q(o.available)
    );
    if !pod.measured {
        return m;
    }
    for c in &pod.containers {
        let (used, req) = match r {
            Resource::Memory => (c.memory, c.memory_request),
            Resource::EphemeralStorage => (c.disk, c.storage_request),
            Resource::Inodes => (c.inodes, 0),
        };
        if let Some(used) = used.filter(|u| *u > req) {
            m.push_str(&format!(
                "Container {} was using {}, request is {}, has larger consumption of {}. ",
                c.name,
                fmt_q(used),
                fmt_q(req),
                r.name()
            ));
        }
    }
    m
}

/// A byte count as a Kubernetes binary quantity prints it (`5Mi`, `1536Ki`, `1000`).
pub fn binary(v: u64) -> String {
    if v == 0 {
        return "0".into();
    }
    for (i, suf) in ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"].iter().enumerate() {
        let unit = 1u64 << (10 * (6 - i));
        if v.is_multiple_of(unit) {
            return format!("{}{suf}", v / unit);
        }
    }
    v.to_string()
}

/// A count as a Kubernetes decimal quantity prints it (`5k`, `1500`).
pub fn decimal(v: u64) -> String {
    if v == 0 {
        return "0".into();
    }
    for (i, suf) in ["E", "P", "T", "G", "M", "k"].iter().enumerate() {
        let unit = 10u64.pow(3 * (6 - i as u32));
        if v.is_multiple_of(unit) {
            return format!("{}{suf}", v / unit);
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::super::threshold::{Thresholds, Value};
    use super::*;

    const MI: u64 = 1 << 20;

    fn pod(
        name: &str,
        priority: i32,
        mem: u64,
        mem_req: u64,
        disk: u64,
        disk_req: u64,
    ) -> PodUsage {
        PodUsage {
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            name: name.into(),
            priority,
            measured: true,
            memory: Some(mem),
            containers: vec![ContainerUsage {
                name: "c".into(),
                memory_request: mem_req,
                storage_request: disk_req,
                memory: Some(mem),
                disk: Some(disk),
                inodes: Some(disk / 4096),
            }],
            volumes: Vec::new(),
        }
    }

    fn order(pods: &[PodUsage], r: Resource) -> Vec<String> {
        let mut v: Vec<&PodUsage> = pods.iter().collect();
        rank(&mut v, r);
        v.iter().map(|p| p.name.clone()).collect()
    }

    #[test]
    fn memory_ranking_is_the_kubelets() {
        // (name, priority, used, request)
        // (what, pods as (name, priority, used MiB, request MiB), expected order)
        type Case<'a> = (&'a str, &'a [(&'a str, i32, u64, u64)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                "over its request beats a bigger user within its request",
                &[("big-within", 0, 500, 600), ("small-over", 0, 20, 10)],
                &["small-over", "big-within"],
            ),
            (
                "among those over, lower priority first",
                &[("hi", 100, 900, 0), ("lo", -5, 10, 0)],
                &["lo", "hi"],
            ),
            (
                "same priority: the largest use above the request first",
                &[("a", 0, 300, 250), ("b", 0, 200, 0), ("c", 0, 400, 390)],
                &["b", "a", "c"],
            ),
            (
                "within requests: priority, then use above request (negative too)",
                &[("x", 0, 100, 400), ("y", 0, 100, 200), ("z", -1, 1, 500)],
                &["z", "y", "x"],
            ),
        ];
        for (what, ps, want) in cases {
            let pods: Vec<PodUsage> = ps
                .iter()
                .map(|(n, pr, u, r)| pod(n, *pr, u * MI, r * MI, 0, 0))
                .collect();
            assert_eq!(order(&pods, Resource::Memory), *want, "{what}");
        }
    }

    #[test]
    fn disk_ranking_counts_layers_logs_and_volumes() {
        let mut a = pod("a", 0, 0, 0, 10 * MI, 0);
        a.volumes.push(VolumeUsage {
            name: "scratch".into(),
            bytes: 30 * MI,
            inodes: 3,
            size_limit: None,
        });
        let b = pod("b", 0, 0, 0, 25 * MI, 0);
        let c = pod("c", 0, 0, 0, 90 * MI, 100 * MI); // within its request
        let d = pod("d", 10, 0, 0, 60 * MI, 0);
        let pods = vec![a, b, c, d];
        assert_eq!(
            order(&pods, Resource::EphemeralStorage),
            ["a", "b", "d", "c"]
        );
        let mut unmeasured = pod("u", 1000, 0, 0, 0, 0);
        unmeasured.measured = false;
        let mut with_u = pods.clone();
        with_u.push(unmeasured);
        assert_eq!(order(&with_u, Resource::EphemeralStorage)[0], "u");
    }

    fn obs(pairs: &[(Signal, u64, u64)]) -> Observations {
        pairs
            .iter()
            .map(|(s, a, c)| {
                (
                    *s,
                    Observation {
                        available: *a,
                        capacity: *c,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn one_pod_per_cycle_for_the_first_threshold_met() {
        let t: Thresholds = "nodefs.available<10%,memory.available<100Mi"
            .parse()
            .unwrap();
        let pods = vec![
            pod("disk-hog", 0, 10 * MI, 0, 80 * MI, 0),
            pod("mem-hog", 0, 900 * MI, 100 * MI, MI, 0),
        ];
        // Nothing met: nothing evicted.
        let none = obs(&[
            (Signal::NodeFsAvailable, 200 * MI, 1000 * MI),
            (Signal::MemoryAvailable, 2000 * MI, 4000 * MI),
        ]);
        assert!(decide(&t.0, &none, &pods).is_empty());
        // Disk low: the biggest disk user goes, with the kubelet's message.
        let disk = obs(&[
            (Signal::NodeFsAvailable, 50 * MI, 1000 * MI),
            (Signal::MemoryAvailable, 2000 * MI, 4000 * MI),
        ]);
        let e = decide(&t.0, &disk, &pods);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "disk-hog");
        assert_eq!(e[0].pressure, Some("DiskPressure"));
        assert_eq!(
            e[0].message,
            "The node was low on resource: ephemeral-storage. Threshold quantity: 100Mi, available: 50Mi. Container c was using 80Mi, request is 0, has larger consumption of ephemeral-storage. "
        );
        // Both low: memory first.
        let both = obs(&[
            (Signal::NodeFsAvailable, 50 * MI, 1000 * MI),
            (Signal::MemoryAvailable, 60 * MI, 4000 * MI),
        ]);
        let e = decide(&t.0, &both, &pods);
        assert_eq!(e[0].name, "mem-hog");
        assert!(e[0].message.starts_with("The node was low on resource: memory. Threshold quantity: 100Mi, available: 60Mi. Container c was using 900Mi, request is 100Mi"), "{}", e[0].message);
        // A signal not observed is not met.
        assert!(decide(&t.0, &Observations::new(), &pods).is_empty());
        // Critical pods are never evicted.
        let crit = vec![pod("critical", CRITICAL_PRIORITY, 900 * MI, 0, 900 * MI, 0)];
        assert!(decide(&t.0, &both, &crit).is_empty());
    }

    #[test]
    fn empty_dir_over_its_limit_evicts_before_thresholds() {
        let t = vec![Threshold {
            signal: Signal::NodeFsAvailable,
            value: Value::Quantity(1),
        }];
        let mut p = pod("p", 0, 0, 0, 0, 0);
        p.volumes.push(VolumeUsage {
            name: "cache".into(),
            bytes: 5 * MI,
            inodes: 1,
            size_limit: Some((5 * MI, "5Mi".into())),
        });
        let ok = vec![p.clone()];
        assert!(
            decide(&t, &Observations::new(), &ok).is_empty(),
            "at the limit is fine"
        );
        p.volumes[0].bytes = 5 * MI + 1;
        let e = decide(&t, &Observations::new(), &[p]);
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].message,
            "Usage of EmptyDir volume \"cache\" exceeds the limit \"5Mi\". "
        );
        assert_eq!(e[0].pressure, None);
    }

    #[test]
    fn quantities_print_as_kubernetes_prints_them() {
        assert_eq!(binary(0), "0");
        assert_eq!(binary(5 << 20), "5Mi");
        assert_eq!(binary(1536 << 10), "1536Ki");
        assert_eq!(binary(1000), "1000");
        assert_eq!(binary(3 << 30), "3Gi");
        assert_eq!(decimal(5000), "5k");
        assert_eq!(decimal(1500), "1500");
        assert_eq!(decimal(2_000_000), "2M");
    }
}
