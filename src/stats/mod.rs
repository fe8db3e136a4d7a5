//! Resource usage of the node, its pods and their containers, as the kubelet's
//! `pkg/kubelet/stats` reports it: the `Summary` of `/stats/summary` and the Prometheus text
//! of `/metrics/resource` (what metrics-server and `kubectl top` read).
//!
//! Where the figures come from:
//! - the node's pods and their uids: the MetaManager store; running containers and their
//!   ids and start times: the pod statuses stored beside them;
//! - CPU and memory: the cgroups the runtime makes (`/edged/pod<uid>` and
//!   `/edged/pod<uid>/<container id>`, see [`crate::runtime::cgroups`]), v1 or v2
//!   ([`cgroup`]); the node's from the root cgroup and /proc ([`node`]);
//! - a pod's network: `/proc/<pid>/net/dev` of a process in the pod's cgroups (so in its
//!   network namespace), `lo` left out;
//! - filesystems: statvfs of the root dir (nodefs) and `<root>/images` (imagefs), the
//!   container's writable layer (`images/snapshots/<id>/upper`) and log directory, the pod's
//!   volume directories.
//!
//! `usageNanoCores` needs two samples: [`rate::RateCache`] keeps the last one per cgroup
//! between scrapes of the summary. Everything here blocks (file reads): callers run it
//! through `smol::unblock`.

pub mod cgroup;
pub mod node;
pub mod parse;
pub mod prometheus;
pub mod rate;
pub mod summary;

use crate::api::{self, Pod, PodStatus};
use crate::eviction::measure::disk_usage;
use crate::metamanager::{Store, Table};
use crate::runtime::cgroups::Layout;
use rate::{CpuSample, RateCache};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use summary::*;

/// Where the stats are read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The node's name, written as `node.nodeName`.
    pub node_name: String,
    /// The cgroup version and mount the runtime makes its cgroups under.
    pub layout: Layout,
    /// `--root-dir`: nodefs, and `images/` under it (imagefs, writable layers), `pods/`
    /// (volumes).
    pub root_dir: PathBuf,
    /// `--pod-log-dir`.
    pub log_dir: PathBuf,
}

/// A pod of the store with its stored status.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod as stored.
    pub pod: Pod,
    /// Its status as stored beside it (None: none stored yet).
    pub status: Option<PodStatus>,
}

/// The node's pods from the store, each with its stored status.
pub fn pods_from_store(store: &Store) -> Result<Vec<PodInfo>, String> {
    let rows = store
        .list(Table::Pod)
        .map_err(|e| format!("cannot list the stored pods: {e}"))?;
    let mut out = Vec::with_capacity(rows.len());
    for (key, v) in rows {
        let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
        let mut pod: Pod = match api::decode(&format!("Pod {key}"), &v) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(pod = %key, error = %e, "stored pod unreadable; no stats for it");
                continue;
            }
        };
        if pod.metadata.namespace.is_empty() {
            pod.metadata.namespace = ns.to_string();
        }
        let status = crate::containerlogs::stored_status(store, ns, name);
        out.push(PodInfo { pod, status });
    }
    Ok(out)
}

/// What to gather: everything (`/stats/summary`) or CPU and memory only
/// (`/metrics/resource`, the kubelet's `GetCPUAndMemoryStats`, which keeps no rate sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (`/stats/summary`): CPU, memory, network, filesystems, processes.
    Full,
    /// CPU and memory only (`/metrics/resource`); no rate sample is kept.
    CpuAndMemory,
}

/// A running container of a pod: name, runtime id, start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    /// The container's name in the pod spec.
    pub name: String,
    /// The runtime's container id (without the `containerd://` prefix).
    pub id: String,
    /// `state.running.startedAt` of the stored status (the epoch when unknown).
    pub started: SystemTime,
}

/// The pod's running containers by its stored status (`containerd://<id>`, running state).
pub fn running_containers(status: Option<&PodStatus>) -> Vec<RunningContainer> {
    let Some(s) = status else {
        return Vec::new();
    };
    s.init_container_statuses
        .iter()
        .chain(&s.container_statuses)
        .filter_map(|c| {
            let running = c.state.running.as_ref()?;
            let id = c.container_id.as_deref()?;
            let id = id.split_once("://").map_or(id, |(_, i)| i);
            if id.is_empty() {
                return None;
            }
            let started = running
                .started_at
                .as_deref()
                .and_then(api::parse_rfc3339)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            Some(RunningContainer {
                name: c.name.clone(),
                id: id.to_string(),
                started,
            })
        })
        .collect()
}

/// What could not be read in one pass (left out of the figures; logged at debug level).
#[derive(Debug, Default)]
pub struct Problems {
    /// One message per figure that could not be read.
    pub errors: Vec<String>,
}

impl Problems {
    fn note<T>(&mut self, r: Result<T, impl std::fmt::Display>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(e.to_string());
                None
            }
        }
    }
}

fn cpu_stats(
    layout: &Layout,
    cgroup: &str,
    rates: Option<&RateCache>,
    problems: &mut Problems,
) -> Option<CpuStats> {
    let usage = problems.note(cgroup::cpu_usage_ns(layout, cgroup))?;
    let now = SystemTime::now();
    let nano = rates.and_then(|r| {
        r.update(
            cgroup,
            CpuSample {
                time: now,
                usage_ns: usage,
            },
        )
    });
    Some(CpuStats {
        time: Time(now),
        usage_nano_cores: nano,
        usage_core_nano_seconds: Some(usage),
    })
}

fn memory_stats(m: cgroup::Memory, time: SystemTime) -> MemoryStats {
    MemoryStats {
        time: Time(time),
        available_bytes: m.available(),
        usage_bytes: Some(m.usage),
        working_set_bytes: Some(m.working_set),
        rss_bytes: Some(m.rss),
        page_faults: Some(m.page_faults),
        major_page_faults: Some(m.major_page_faults),
    }
}

/// Usage of a directory on a filesystem: its bytes and inodes, the filesystem's size.
fn usage_on(dir: &Path, fs: Option<&FsStats>, time: Time) -> FsStats {
    let (bytes, inodes) = disk_usage(dir);
    FsStats {
        time,
        available_bytes: fs.and_then(|f| f.available_bytes),
        capacity_bytes: fs.and_then(|f| f.capacity_bytes),
        used_bytes: Some(bytes),
        inodes_free: fs.and_then(|f| f.inodes_free),
        inodes: fs.and_then(|f| f.inodes),
        inodes_used: Some(inodes),
    }
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        _ => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// The node's figures.
fn node_stats(
    src: &Sources,
    scope: Scope,
    rates: Option<&RateCache>,
    p: &mut Problems,
) -> NodeStats {
    let now = SystemTime::now();
    let time = Time(now);
    let start = p.note(node::boot_time()).unwrap_or(SystemTime::UNIX_EPOCH);
    let usage = p.note(node::cpu_usage_ns(&src.layout));
    let cpu = usage.map(|u| CpuStats {
        time,
        usage_nano_cores: rates.and_then(|r| {
            r.update(
                "/",
                CpuSample {
                    time: now,
                    usage_ns: u,
                },
            )
        }),
        usage_core_nano_seconds: Some(u),
    });
    let memory = p
        .note(node::memory(&src.layout))
        .map(|m| memory_stats(m, now));
    let mut n = NodeStats {
        node_name: src.node_name.clone(),
        system_containers: Vec::new(),
        start_time: Time(start),
        cpu,
        memory,
        network: None,
        fs: None,
        runtime: None,
        rlimit: None,
    };
    if scope == Scope::Full {
        n.network = p
            .note(node::interfaces_of("self"))
            .map(|i| node::network(i, time, true));
        n.fs = node::filesystem(&src.root_dir, time);
        let images = src.root_dir.join("images");
        n.runtime = Some(RuntimeStats {
            image_fs: node::filesystem(&images, time).map(|mut f| {
                let (lb, li) = disk_usage(&images.join("layers"));
                let (bb, bi) = disk_usage(&images.join("blobs"));
                f.used_bytes = Some(lb + bb);
                f.inodes_used = Some(li + bi);
                f
            }),
        });
        let (maxpid, curproc) = node::rlimit();
        n.rlimit = Some(RlimitStats {
            time,
            maxpid,
            curproc,
        });
    }
    n
}

/// One pod's figures; `None` when it has no cgroup (not started, or gone).
fn pod_stats(
    src: &Sources,
    info: &PodInfo,
    scope: Scope,
    rates: Option<&RateCache>,
    fs: (Option<&FsStats>, Option<&FsStats>),
    seen: &mut HashSet<String>,
    p: &mut Problems,
) -> Option<PodStats> {
    let uid = &info.pod.metadata.uid;
    if uid.is_empty() {
        return None;
    }
    let pod_cgroup = Layout::pod_path(uid);
    if !cgroup::exists(&src.layout, &pod_cgroup) {
        return None;
    }
    let (node_fs, image_fs) = fs;
    let now = SystemTime::now();
    let time = Time(now);
    let start = info
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_deref())
        .and_then(api::parse_rfc3339)
        .or_else(|| {
            info.pod
                .metadata
                .creation_timestamp
                .as_deref()
                .and_then(api::parse_rfc3339)
        })
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let log_dir = crate::kuberuntime::pod_log_dir(&src.log_dir, &info.pod);
    let mut containers = Vec::new();
    let (mut eph_bytes, mut eph_inodes) = (None, None);
    for c in running_containers(info.status.as_ref()) {
        let cg = Layout::container_path(uid, &c.id);
        if !cgroup::exists(&src.layout, &cg) {
            continue; // ended since the status was written
        }
        seen.insert(cg.clone());
        let cpu = cpu_stats(&src.layout, &cg, rates, p);
        let memory = p
            .note(cgroup::memory(&src.layout, &cg))
            .map(|m| memory_stats(m, SystemTime::now()));
        let (mut rootfs, mut logs) = (None, None);
        if scope == Scope::Full {
            let upper = src
                .root_dir
                .join("images/snapshots")
                .join(&c.id)
                .join("upper");
            let r = usage_on(&upper, image_fs, time);
            let l = usage_on(&log_dir.join(&c.name), node_fs, time);
            eph_bytes = add(eph_bytes, add(r.used_bytes, l.used_bytes));
            eph_inodes = add(eph_inodes, add(r.inodes_used, l.inodes_used));
            rootfs = Some(r);
            logs = Some(l);
        }
        containers.push(ContainerStats {
            name: c.name,
            start_time: Time(c.started),
            cpu,
            memory,
            rootfs,
            logs,
        });
    }
    seen.insert(pod_cgroup.clone());
    let cpu = cpu_stats(&src.layout, &pod_cgroup, rates, p);
    let memory = p
        .note(cgroup::memory(&src.layout, &pod_cgroup))
        .map(|m| memory_stats(m, SystemTime::now()));
    let mut stats = PodStats {
        pod_ref: PodReference {
            name: info.pod.metadata.name.clone(),
            namespace: info.pod.metadata.namespace.clone(),
            uid: uid.clone(),
        },
        start_time: Time(start),
        containers,
        cpu,
        memory,
        network: None,
        volume_stats: Vec::new(),
        ephemeral_storage: None,
        process_stats: None,
    };
    if scope == Scope::Full {
        // A process of the pod is in its network namespace.
        stats.network = cgroup::procs(&src.layout, &pod_cgroup)
            .first()
            .and_then(|pid| node::interfaces_of(&pid.to_string()).ok())
            .map(|i| node::network(i, time, false));
        let volumes = src.root_dir.join("pods").join(uid).join("volumes");
        for plugin in read_dirs(&volumes) {
            let empty_dir = plugin.ends_with("kubernetes.io~empty-dir");
            for v in read_dirs(&plugin) {
                let name = v
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                let vfs = node::filesystem(&v, time);
                let u = usage_on(&v, vfs.as_ref(), time);
                if empty_dir {
                    eph_bytes = add(eph_bytes, u.used_bytes);
                    eph_inodes = add(eph_inodes, u.inodes_used);
                }
                stats.volume_stats.push(VolumeStats { fs: u, name });
            }
        }
        stats.volume_stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats.ephemeral_storage = Some(FsStats {
            time,
            available_bytes: node_fs.and_then(|f| f.available_bytes),
            capacity_bytes: node_fs.and_then(|f| f.capacity_bytes),
            used_bytes: eph_bytes.or(Some(0)),
            inodes_free: node_fs.and_then(|f| f.inodes_free),
            inodes: node_fs.and_then(|f| f.inodes),
            inodes_used: eph_inodes.or(Some(0)),
        });
        stats.process_stats = Some(ProcessStats {
            process_count: Some(cgroup::process_count(&src.layout, &pod_cgroup)),
        });
    }
    Some(stats)
}

fn read_dirs(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The summary of the node and `pods`. With `rates`, CPU rates are computed against the last
/// samples (kept for the next scrape; samples of cgroups no longer seen are dropped). What
/// could not be read is left out and listed in the [`Problems`].
pub fn summary(
    src: &Sources,
    pods: &[PodInfo],
    scope: Scope,
    rates: Option<&RateCache>,
) -> (Summary, Problems) {
    let mut p = Problems::default();
    let node = node_stats(src, scope, rates, &mut p);
    let node_fs = node.fs.clone();
    let image_fs = node.runtime.as_ref().and_then(|r| r.image_fs.clone());
    let mut seen: HashSet<String> = HashSet::from(["/".to_string()]);
    let mut out = Vec::new();
    for info in pods {
        if let Some(s) = pod_stats(
            src,
            info,
            scope,
            rates,
            (node_fs.as_ref(), image_fs.as_ref()),
            &mut seen,
            &mut p,
        ) {
            out.push(s);
        }
    }
    if let Some(r) = rates {
        r.retain(&seen);
    }
    (Summary { node, pods: out }, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn running_containers_from_the_status() {
        let s: PodStatus = serde_json::from_value(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                 "containerID": "containerd://abc",
                 "state": {"running": {"startedAt": "2023-11-14T22:13:20Z"}}},
                {"name": "done", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                 "containerID": "containerd://def",
                 "state": {"terminated": {"exitCode": 0}}},
                {"name": "waiting", "ready": false, "restartCount": 0, "image": "i",
                 "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]
        }))
        .unwrap();
        assert_eq!(
            running_containers(Some(&s)),
            [RunningContainer {
                name: "app".into(),
                id: "abc".into(),
                started: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            }]
        );
        assert!(running_containers(None).is_empty());
    }
}
