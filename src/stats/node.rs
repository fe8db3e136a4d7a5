//! The node's own figures: CPU and memory of the root cgroup (as cAdvisor's root container;
//! on a v2 host the root has no `memory.current`, so usage comes from `/proc/meminfo` as runc
//! computes it), boot time from `/proc/stat`, the host's interfaces, filesystems by statvfs,
//! and the process limits.

use super::cgroup::{self, Memory, Version};
use super::parse::{self, Interface, ParseError};
use super::summary::{FsStats, InterfaceStats, NetworkStats, Time};
use crate::runtime::cgroups::Layout;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Clock ticks per second of `/proc/stat` (USER_HZ, 100 on every Linux ABI).
const USER_HZ: u64 = 100;
/// The interface whose counters a network figure shows inline (the kubelet's default).
pub const DEFAULT_INTERFACE: &str = "eth0";

fn read_parsed<T>(
    file: &str,
    f: impl Fn(&str, &str) -> Result<T, ParseError>,
) -> Result<T, ParseError> {
    let text = cgroup::read(Path::new(file))?;
    f(file, &text)
}

/// `/proc/stat`: busy CPU time and boot time.
pub fn proc_stat() -> Result<parse::ProcStat, ParseError> {
    read_parsed("/proc/stat", parse::proc_stat)
}

/// When the node booted.
pub fn boot_time() -> Result<SystemTime, ParseError> {
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(proc_stat()?.boot_time))
}

/// The node's cumulative CPU time in nanoseconds: the root cgroup's, or `/proc/stat`'s busy
/// time where the root cgroup has no CPU accounting.
pub fn cpu_usage_ns(layout: &Layout) -> Result<u64, ParseError> {
    match cgroup::cpu_usage_ns(layout, "/") {
        Ok(n) => Ok(n),
        Err(_) => Ok(proc_stat()?.busy_ticks * (1_000_000_000 / USER_HZ)),
    }
}

/// The node's memory from `/proc/meminfo` alone: usage is total less free, the inactive file
/// cache comes off for the working set, RSS is anonymous pages; the limit is the capacity.
pub fn memory_from_meminfo(m: &BTreeMap<String, u64>) -> Option<Memory> {
    let total = *m.get("MemTotal")?;
    let usage = total.saturating_sub(*m.get("MemFree")?);
    let inactive = m.get("Inactive(file)").copied().unwrap_or(0);
    Some(Memory {
        usage,
        working_set: usage.saturating_sub(inactive),
        rss: m.get("AnonPages").copied().unwrap_or(0),
        page_faults: 0,
        major_page_faults: 0,
        limit: Some(total),
    })
}

/// The node's memory: the root cgroup (v1), or `/proc/meminfo` with the root `memory.stat`
/// when there is one (v2). The limit is the node's capacity (`MemTotal`), so the available
/// bytes are the capacity less the working set.
pub fn memory(layout: &Layout) -> Result<Memory, ParseError> {
    let info = read_parsed("/proc/meminfo", parse::meminfo)?;
    let capacity = info.get("MemTotal").copied();
    let mut m = match layout {
        Layout::V1(_) => {
            let (dir, v) = cgroup::memory_dir(layout, "/");
            cgroup::memory_at(&dir, v, None)?
        }
        Layout::V2(root) => {
            let from_info = memory_from_meminfo(&info).ok_or_else(|| ParseError {
                file: "/proc/meminfo".into(),
                line: 0,
                message: "no MemTotal or MemFree".into(),
            })?;
            match cgroup::memory_at(root, Version::V2, Some(from_info.usage)) {
                Ok(m) => m,
                Err(_) => from_info,
            }
        }
    };
    m.limit = capacity;
    Ok(m)
}

/// Interfaces as the kubelet reports them: `lo` left out (and, for the host, the host ends of
/// container links, as cAdvisor leaves them out), the default one inline.
pub fn network(all: Vec<Interface>, time: Time, host: bool) -> NetworkStats {
    let interfaces: Vec<InterfaceStats> = all
        .into_iter()
        .filter(|i| i.name != "lo")
        .filter(|i| !host || !(i.name.starts_with("veth") || i.name.starts_with("docker")))
        .map(|i| InterfaceStats {
            name: i.name,
            rx_bytes: Some(i.rx_bytes),
            rx_errors: Some(i.rx_errors),
            tx_bytes: Some(i.tx_bytes),
            tx_errors: Some(i.tx_errors),
        })
        .collect();
    let default = interfaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .cloned()
        .unwrap_or_default();
    NetworkStats {
        time,
        default,
        interfaces,
    }
}

/// The interfaces of the network namespace a process is in (`/proc/<pid>/net/dev`).
pub fn interfaces_of(pid: &str) -> Result<Vec<Interface>, ParseError> {
    read_parsed(&format!("/proc/{pid}/net/dev"), parse::net_dev)
}

/// A filesystem by statvfs: its capacity, what an unprivileged writer may still use, what is
/// used (blocks less free blocks), and inodes.
pub fn filesystem(path: &Path, time: Time) -> Option<FsStats> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size() as u64;
    let (blocks, free, avail) = (
        s.blocks() as u64,
        s.blocks_free() as u64,
        s.blocks_available() as u64,
    );
    let (files, files_free) = (s.files() as u64, s.files_free() as u64);
    Some(FsStats {
        time,
        available_bytes: Some(avail * frag),
        capacity_bytes: Some(blocks * frag),
        used_bytes: Some(blocks.saturating_sub(free) * frag),
        inodes_free: Some(files_free),
        inodes: Some(files),
        inodes_used: Some(files.saturating_sub(files_free)),
    })
}

/// The node's process limit (`kernel.pid_max`) and thread count.
pub fn rlimit() -> (Option<i64>, Option<i64>) {
    let max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| parse::single("pid_max", &t).ok());
    let cur = read_parsed("/proc/loadavg", parse::loadavg_threads).ok();
    (max.map(|n| n as i64), cur.map(|n| n as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_meminfo_alone() {
        let m: BTreeMap<String, u64> = [
            ("MemTotal", 1000u64),
            ("MemFree", 200),
            ("Inactive(file)", 300),
            ("AnonPages", 150),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let got = memory_from_meminfo(&m).unwrap();
        assert_eq!((got.usage, got.working_set, got.rss), (800, 500, 150));
        assert_eq!(got.available(), Some(500));
        assert_eq!(memory_from_meminfo(&BTreeMap::new()), None);
    }

    #[test]
    fn network_leaves_out_loopback_and_links() {
        let i = |n: &str, rx| Interface {
            name: n.into(),
            rx_bytes: rx,
            rx_errors: 0,
            tx_bytes: 1,
            tx_errors: 0,
        };
        let all = vec![i("lo", 9), i("eth0", 5), i("veth12", 3), i("wlan0", 2)];
        let pod = network(all.clone(), Time::default(), false);
        let names: Vec<&str> = pod.interfaces.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["eth0", "veth12", "wlan0"]);
        assert_eq!(
            (pod.default.name.as_str(), pod.default.rx_bytes),
            ("eth0", Some(5))
        );
        let host = network(all, Time::default(), true);
        assert_eq!(host.interfaces.len(), 2);
        let none = network(vec![i("lo", 1), i("dummy0", 2)], Time::default(), false);
        assert_eq!(none.default, InterfaceStats::default());
        assert_eq!(none.interfaces.len(), 1);
    }

    /// What this host says: plausible figures, whatever its layout.
    #[test]
    fn reads_this_host() {
        let layout = Layout::detect();
        let cpu = cpu_usage_ns(&layout).unwrap();
        assert!(cpu > 0);
        let m = memory(&layout).unwrap();
        assert!(m.usage > 0 && m.working_set <= m.usage, "{m:?}");
        assert!(m.limit.is_some_and(|l| l >= m.working_set), "{m:?}");
        assert!(boot_time().unwrap() < SystemTime::now());
        let fs = filesystem(Path::new("/"), Time::default()).unwrap();
        assert!(fs.capacity_bytes.unwrap() >= fs.used_bytes.unwrap());
        let (max, cur) = rlimit();
        assert!(max.unwrap() > 0 && cur.unwrap() > 0);
        assert!(!interfaces_of("self").unwrap().is_empty());
    }
}
