//! The kubelet's `stats/v1alpha1` `Summary` (what `/stats/summary` answers), as JSON with the
//! kubelet's field names; optional figures are left out when unknown, as its `omitempty`.
//! Times keep their full precision here (the Prometheus text needs milliseconds) and are
//! written as `metav1.Time` writes them, RFC 3339 to the second.

use serde::{Serialize, Serializer};
use std::time::SystemTime;

/// A time written as `metav1.Time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub SystemTime);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::api::rfc3339(self.0))
    }
}

impl Default for Time {
    fn default() -> Time {
        Time(SystemTime::UNIX_EPOCH)
    }
}

impl Time {
    /// Milliseconds since the epoch.
    pub fn millis(&self) -> i64 {
        self.0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    /// Seconds since the epoch, with the fraction.
    pub fn seconds(&self) -> f64 {
        self.0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// The node and its pods.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `node`: the node's own figures.
    pub node: NodeStats,
    /// `pods`: one entry per pod of the store that has a cgroup (not started or gone ones are left
    /// out).
    pub pods: Vec<PodStats>,
}

/// The node's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// `nodeName`: the node's name (`--node-name`, else the hostname).
    pub node_name: String,
    /// `systemContainers`: the kubelet's and runtime's system containers (always empty here; left
    /// out of the JSON).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system_containers: Vec<ContainerStats>,
    /// `startTime`: when the node booted (from `/proc/stat`).
    pub start_time: Time,
    /// `cpu`: the root cgroup's usage (None: not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// `memory`: the root cgroup's and /proc's figures (None: not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// `network`: the host's interfaces, loopback and veth/docker links left out (None: not
    /// gathered or not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// `fs`: nodefs, the filesystem of `--root-dir` (None: not gathered or statvfs failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    /// `runtime`: the image filesystem (None: not gathered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
    /// `rlimit`: the node's PID limit and process count (None: not gathered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
}

/// The runtime's filesystems.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    /// `imageFs`: the filesystem of `<root>/images`, `usedBytes` being its layers and blobs (None:
    /// statvfs failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
}

/// The node's process limits.
#[derive(Debug, Clone, Serialize)]
pub struct RlimitStats {
    /// `time`: when the figures were read.
    pub time: Time,
    /// `maxpid`: `/proc/sys/kernel/pid_max` (None: not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxpid: Option<i64>,
    /// `curproc`: the number of threads on the node, from `/proc/loadavg` (None: not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curproc: Option<i64>,
}

/// Which pod.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PodReference {
    /// `name`: the pod's `metadata.name`.
    pub name: String,
    /// `namespace`: the pod's `metadata.namespace`.
    pub namespace: String,
    /// `uid`: the pod's `metadata.uid`.
    pub uid: String,
}

/// A pod's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// `podRef`: which pod.
    pub pod_ref: PodReference,
    /// `startTime`: the pod's `status.startTime`, else its `metadata.creationTimestamp` (the epoch
    /// when neither is known).
    pub start_time: Time,
    /// `containers`: the pod's running containers that still have a cgroup.
    pub containers: Vec<ContainerStats>,
    /// `cpu`: the pod cgroup's usage (None: not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// `memory`: the pod cgroup's figures (None: not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// `network`: the interfaces of the pod's network namespace, `lo` left out (None: not gathered,
    /// or no process to read it through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// `volume`: usage of each of the pod's volume directories, by volume name (empty: none, or not
    /// gathered).
    #[serde(rename = "volume", skip_serializing_if = "Vec::is_empty")]
    pub volume_stats: Vec<VolumeStats>,
    /// `ephemeral-storage`: the containers' writable layers and logs plus the pod's emptyDir
    /// volumes, on nodefs (None: not gathered).
    #[serde(rename = "ephemeral-storage", skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<FsStats>,
    /// `process_stats`: the pod cgroup's process count (None: not gathered).
    #[serde(rename = "process_stats", skip_serializing_if = "Option::is_none")]
    pub process_stats: Option<ProcessStats>,
}

/// A pod's process count.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStats {
    /// `process_count`: the number of processes in the pod's cgroup (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_count: Option<u64>,
}

/// A container's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// `name`: the container's name in the pod spec.
    pub name: String,
    /// `startTime`: when the container started (`state.running.startedAt` of its stored status).
    pub start_time: Time,
    /// `cpu`: the container cgroup's usage (None: not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// `memory`: the container cgroup's figures (None: not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// `rootfs`: the container's writable layer, on imagefs (None: not gathered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
    /// `logs`: the container's log directory, on nodefs (None: not gathered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<FsStats>,
}

/// CPU usage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// `time`: when the usage was read.
    pub time: Time,
    /// `usageNanoCores`: the CPU rate since the previous scrape, in nanocores (None: no previous
    /// sample, see [`super::rate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// `usageCoreNanoSeconds`: the cumulative CPU time, nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory usage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// `time`: when the figures were read.
    pub time: Time,
    /// `availableBytes`: the limit less the working set, bytes (None: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// `usageBytes`: the cgroup's memory usage, page cache included, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// `workingSetBytes`: usage less inactive file pages, bytes (what eviction and `kubectl top`
    /// use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// `rssBytes`: anonymous memory (`total_rss` on v1, `anon` on v2), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// `pageFaults`: the cumulative count of page faults (`pgfault`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    /// `majorPageFaults`: the cumulative count of major page faults (`pgmajfault`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// One interface's counters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    /// `name`: the interface's name, such as `eth0`.
    pub name: String,
    /// `rxBytes`: bytes received, cumulative (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    /// `rxErrors`: receive errors, cumulative (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_errors: Option<u64>,
    /// `txBytes`: bytes sent, cumulative (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// `txErrors`: send errors, cumulative (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_errors: Option<u64>,
}

/// Network counters: the default interface (`eth0`) inline, and every interface.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkStats {
    /// `time`: when the counters were read.
    pub time: Time,
    /// The counters of `eth0`, written inline (`name`, `rxBytes`, ...); all unset when there is no
    /// `eth0`.
    #[serde(flatten)]
    pub default: InterfaceStats,
    /// `interfaces`: every interface's counters (empty: none; left out of the JSON).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStats>,
}

/// A filesystem's figures (or a part of one: `usedBytes` of a container's layer).
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// `time`: when the figures were read.
    pub time: Time,
    /// `availableBytes`: free bytes for unprivileged users on the filesystem (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// `capacityBytes`: the filesystem's size, bytes (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// `usedBytes`: bytes used by what this entry measures (the filesystem, a layer, a directory)
    /// (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// `inodesFree`: free inodes on the filesystem (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    /// `inodes`: the filesystem's inode count (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// `inodesUsed`: inodes used by what this entry measures (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

/// A volume's usage.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeStats {
    /// The volume directory's usage and its filesystem's figures, written inline.
    #[serde(flatten)]
    pub fs: FsStats,
    /// `name`: the volume's name (`spec.volumes[].name`).
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn json_names_are_the_kubelets() {
        let t = Time(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250));
        assert_eq!(t.millis(), 1_700_000_000_250);
        let net = NetworkStats {
            time: t,
            default: InterfaceStats {
                name: "eth0".into(),
                rx_bytes: Some(1),
                ..Default::default()
            },
            interfaces: vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: Some(1),
                ..Default::default()
            }],
        };
        let pod = PodStats {
            pod_ref: PodReference {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
            },
            start_time: t,
            containers: vec![],
            cpu: Some(CpuStats {
                time: t,
                usage_nano_cores: None,
                usage_core_nano_seconds: Some(5),
            }),
            memory: None,
            network: Some(net),
            volume_stats: vec![VolumeStats {
                fs: FsStats {
                    time: t,
                    used_bytes: Some(3),
                    ..Default::default()
                },
                name: "data".into(),
            }],
            ephemeral_storage: None,
            process_stats: Some(ProcessStats {
                process_count: Some(2),
            }),
        };
        assert_eq!(
            serde_json::to_value(&pod).unwrap(),
            json!({
                "podRef": {"name": "p", "namespace": "ns", "uid": "u"},
                "startTime": "2023-11-14T22:13:20Z",
                "containers": [],
                "cpu": {"time": "2023-11-14T22:13:20Z", "usageCoreNanoSeconds": 5},
                "network": {"time": "2023-11-14T22:13:20Z", "name": "eth0", "rxBytes": 1,
                            "interfaces": [{"name": "eth0", "rxBytes": 1}]},
                "volume": [{"time": "2023-11-14T22:13:20Z", "usedBytes": 3, "name": "data"}],
                "process_stats": {"process_count": 2}
            })
        );
    }
}
