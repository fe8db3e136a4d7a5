//! A cgroup's CPU and memory as cAdvisor reads them for the kubelet, on either layout:
//!
//! - CPU: cumulative usage, `cpuacct.usage` (v1, the `cpuacct` hierarchy) or `usage_usec` of
//!   `cpu.stat` (v2).
//! - Memory: usage (`memory.usage_in_bytes` / `memory.current`), working set = usage less
//!   inactive file cache (`total_inactive_file` / `inactive_file` of `memory.stat`, floored at
//!   zero), RSS (`total_rss` / `anon`), page faults (`pgfault`, `pgmajfault`), and the limit
//!   (`memory.limit_in_bytes` / `memory.max`) for the available bytes.

use super::parse::{self, ParseError};
use crate::runtime::cgroups::Layout;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A cgroup's memory figures, in bytes (faults in counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2): usage, page cache included.
    pub usage: u64,
    /// Usage less inactive file pages (`total_inactive_file` on v1, `inactive_file` on v2).
    pub working_set: u64,
    /// Anonymous memory: `total_rss` (v1) or `anon` (v2).
    pub rss: u64,
    /// `pgfault` of `memory.stat`, a count.
    pub page_faults: u64,
    /// `pgmajfault` of `memory.stat`, a count.
    pub major_page_faults: u64,
    /// `None`: no limit.
    pub limit: Option<u64>,
}

impl Memory {
    /// What the kubelet reports as available: the limit less the working set (none without
    /// a limit).
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

/// Which cgroup version's files a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// cgroup v1: one hierarchy per controller (`memory.usage_in_bytes`, `cpuacct.usage`).
    V1,
    /// cgroup v2: the unified hierarchy (`memory.current`, `cpu.stat`).
    V2,
}

/// The memory figures from `memory.stat` and the usage and limit files, as cAdvisor computes
/// them.
pub fn memory_from(
    version: Version,
    usage: u64,
    stat: &BTreeMap<String, u64>,
    limit: Option<u64>,
) -> Memory {
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let (inactive, rss) = match version {
        Version::V1 => ("total_inactive_file", "total_rss"),
        Version::V2 => ("inactive_file", "anon"),
    };
    Memory {
        usage,
        working_set: usage.saturating_sub(get(inactive)),
        rss: get(rss),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
        limit,
    }
}

/// Reads a file, the error naming it.
pub fn read(path: &Path) -> Result<String, ParseError> {
    std::fs::read_to_string(path).map_err(|e| ParseError {
        file: path.display().to_string(),
        line: 0,
        message: format!("cannot read: {e}"),
    })
}

fn named(path: &Path) -> String {
    path.display().to_string()
}

/// The v1 hierarchy directory holding a controller (`cpuacct` in `cpu,cpuacct` too).
fn v1_hierarchy(dirs: &[PathBuf], controller: &str) -> Option<PathBuf> {
    dirs.iter()
        .find(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split(',').any(|c| c == controller))
        })
        .cloned()
}

/// The directory of a cgroup's CPU accounting files and their version (`None`: a v1 host
/// without a `cpuacct` hierarchy).
pub fn cpu_dir(layout: &Layout, cgroup: &str) -> Option<(PathBuf, Version)> {
    let rel = cgroup.trim_start_matches('/');
    match layout {
        Layout::V2(root) => Some((root.join(rel), Version::V2)),
        Layout::V1(h) => v1_hierarchy(h, "cpuacct").map(|d| (d.join(rel), Version::V1)),
    }
}

/// The directory of a cgroup's memory files and their version.
pub fn memory_dir(layout: &Layout, cgroup: &str) -> (PathBuf, Version) {
    let v = match layout {
        Layout::V2(_) => Version::V2,
        Layout::V1(_) => Version::V1,
    };
    (layout.memory_dir(cgroup), v)
}

/// Whether the cgroup exists (its memory directory does).
pub fn exists(layout: &Layout, cgroup: &str) -> bool {
    layout.memory_dir(cgroup).is_dir()
}

/// Cumulative CPU time of a cgroup in nanoseconds.
pub fn cpu_usage_ns(layout: &Layout, cgroup: &str) -> Result<u64, ParseError> {
    let (dir, v) = cpu_dir(layout, cgroup).ok_or_else(|| ParseError {
        file: cgroup.to_string(),
        line: 0,
        message: "the host has no cpuacct cgroup hierarchy".into(),
    })?;
    match v {
        Version::V1 => {
            let f = dir.join("cpuacct.usage");
            parse::single(&named(&f), &read(&f)?)
        }
        Version::V2 => {
            let f = dir.join("cpu.stat");
            parse::cpu_stat_usage_ns(&named(&f), &read(&f)?)
        }
    }
}

/// A cgroup's memory figures from its directory (`usage` given for the v2 root, which has no
/// `memory.current`).
pub fn memory_at(dir: &Path, v: Version, usage: Option<u64>) -> Result<Memory, ParseError> {
    let (usage_file, limit_file) = match v {
        Version::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
        Version::V2 => ("memory.current", "memory.max"),
    };
    let usage = match usage {
        Some(u) => u,
        None => {
            let f = dir.join(usage_file);
            parse::single(&named(&f), &read(&f)?)?
        }
    };
    let f = dir.join("memory.stat");
    let stat = parse::flat_keyed(&named(&f), &read(&f)?)?;
    let f = dir.join(limit_file);
    let limit = match std::fs::read_to_string(&f) {
        Ok(t) => parse::limit(&named(&f), &t)?,
        // The v2 root has no memory.max.
        Err(_) => None,
    };
    Ok(memory_from(v, usage, &stat, limit))
}

/// A cgroup's memory figures.
pub fn memory(layout: &Layout, cgroup: &str) -> Result<Memory, ParseError> {
    let (dir, v) = memory_dir(layout, cgroup);
    memory_at(&dir, v, None)
}

/// The processes of a cgroup and of the cgroups below it (from the memory hierarchy).
pub fn procs(layout: &Layout, cgroup: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![layout.memory_dir(cgroup)];
    while let Some(d) = stack.pop() {
        if let Ok(t) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// The number of processes (tasks) in a cgroup: `pids.current` where the pids controller
/// is, else the count of its processes.
pub fn process_count(layout: &Layout, cgroup: &str) -> u64 {
    layout
        .pids_dir(cgroup)
        .map(|d| d.join("pids.current"))
        .and_then(|f| {
            let t = std::fs::read_to_string(&f).ok()?;
            parse::single(&named(&f), &t).ok()
        })
        .unwrap_or_else(|| procs(layout, cgroup).len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn working_set_is_usage_less_inactive_file() {
        let v1 = stat(&[
            ("inactive_file", 1),
            ("total_inactive_file", 300),
            ("rss", 5),
            ("total_rss", 400),
            ("pgfault", 7),
            ("pgmajfault", 2),
        ]);
        let v2 = stat(&[("inactive_file", 300), ("anon", 400), ("pgfault", 7)]);
        for (version, usage, s, limit, want) in [
            (
                Version::V1,
                1000,
                &v1,
                None,
                Memory {
                    usage: 1000,
                    working_set: 700,
                    rss: 400,
                    page_faults: 7,
                    major_page_faults: 2,
                    limit: None,
                },
            ),
            (
                Version::V2,
                1000,
                &v2,
                Some(2000),
                Memory {
                    usage: 1000,
                    working_set: 700,
                    rss: 400,
                    page_faults: 7,
                    major_page_faults: 0,
                    limit: Some(2000),
                },
            ),
            // More inactive cache than usage (the counters are read apart): zero, not a wrap.
            (
                Version::V2,
                100,
                &v2,
                None,
                Memory {
                    usage: 100,
                    working_set: 0,
                    rss: 400,
                    page_faults: 7,
                    major_page_faults: 0,
                    limit: None,
                },
            ),
        ] {
            assert_eq!(memory_from(version, usage, s, limit), want);
        }
        let m = memory_from(Version::V2, 1000, &v2, Some(2000));
        assert_eq!(m.available(), Some(1300));
        assert_eq!(memory_from(Version::V2, 1000, &v2, None).available(), None);
    }

    #[test]
    fn directories_of_each_layout() {
        let v1 = Layout::V1(vec![
            "/cg/cpu,cpuacct".into(),
            "/cg/memory".into(),
            "/cg/unified".into(),
        ]);
        assert_eq!(
            cpu_dir(&v1, "/edged/podu"),
            Some((PathBuf::from("/cg/cpu,cpuacct/edged/podu"), Version::V1))
        );
        let split = Layout::V1(vec!["/cg/cpu".into(), "/cg/cpuacct".into()]);
        assert_eq!(
            cpu_dir(&split, "/a").map(|x| x.0),
            Some(PathBuf::from("/cg/cpuacct/a"))
        );
        assert_eq!(cpu_dir(&Layout::V1(vec!["/cg/memory".into()]), "/a"), None);
        let v2 = Layout::V2("/cg".into());
        assert_eq!(
            cpu_dir(&v2, "/a"),
            Some((PathBuf::from("/cg/a"), Version::V2))
        );
        assert_eq!(
            memory_dir(&v1, "/a"),
            (PathBuf::from("/cg/memory/a"), Version::V1)
        );
    }

    /// Both versions' files, recorded, read from a directory as a cgroup.
    #[test]
    fn reads_recorded_cgroup_dirs() {
        let d = tempfile::tempdir().unwrap();
        let v2 = Layout::V2(d.path().into());
        let pod = d.path().join("edged/podu");
        std::fs::create_dir_all(pod.join("c1")).unwrap();
        std::fs::write(pod.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        std::fs::write(pod.join("memory.current"), "1000\n").unwrap();
        std::fs::write(pod.join("memory.max"), "max\n").unwrap();
        std::fs::write(
            pod.join("memory.stat"),
            "anon 400\ninactive_file 300\npgfault 9\npgmajfault 1\n",
        )
        .unwrap();
        std::fs::write(pod.join("cgroup.procs"), "").unwrap();
        std::fs::write(pod.join("c1/cgroup.procs"), "42\n43\n").unwrap();
        assert_eq!(cpu_usage_ns(&v2, "/edged/podu").unwrap(), 1_500_000);
        let m = memory(&v2, "/edged/podu").unwrap();
        assert_eq!((m.usage, m.working_set, m.rss), (1000, 700, 400));
        assert_eq!((m.page_faults, m.major_page_faults, m.limit), (9, 1, None));
        let mut p = procs(&v2, "/edged/podu");
        p.sort();
        assert_eq!(p, [42, 43]);
        assert_eq!(process_count(&v2, "/edged/podu"), 2);
        std::fs::write(pod.join("pids.current"), "5\n").unwrap();
        assert_eq!(process_count(&v2, "/edged/podu"), 5);
        std::fs::write(pod.join("memory.stat"), "anon 400\ninactive_file ?\n").unwrap();
        let e = memory(&v2, "/edged/podu").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("edged/podu/memory.stat line 2: `?` is not a count"),
            "{e}"
        );

        let v1root = tempfile::tempdir().unwrap();
        let (acct, mem) = (v1root.path().join("cpuacct"), v1root.path().join("memory"));
        std::fs::create_dir_all(acct.join("x")).unwrap();
        std::fs::create_dir_all(mem.join("x")).unwrap();
        let v1 = Layout::V1(vec![acct.clone(), mem.clone()]);
        std::fs::write(acct.join("x/cpuacct.usage"), "223875091711\n").unwrap();
        std::fs::write(mem.join("x/memory.usage_in_bytes"), "5000\n").unwrap();
        std::fs::write(mem.join("x/memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(
            mem.join("x/memory.stat"),
            "rss 1\npgfault 3\ntotal_rss 2000\ntotal_inactive_file 1000\n",
        )
        .unwrap();
        assert_eq!(cpu_usage_ns(&v1, "/x").unwrap(), 223875091711);
        let m = memory(&v1, "/x").unwrap();
        assert_eq!(
            (m.usage, m.working_set, m.rss, m.limit),
            (5000, 4000, 2000, None)
        );
        // The v2 root: no memory.current nor memory.max, usage given (from /proc/meminfo).
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("memory.stat"),
            "anon 10\ninactive_file 40\npgfault 1\n",
        )
        .unwrap();
        let m = memory_at(root.path(), Version::V2, Some(100)).unwrap();
        assert_eq!(
            (m.usage, m.working_set, m.rss, m.limit),
            (100, 60, 10, None)
        );
        let e = cpu_usage_ns(&v1, "/gone").unwrap_err();
        assert!(
            e.to_string().contains("gone/cpuacct.usage: cannot read"),
            "{e}"
        );
    }
}
