//! Measuring what the eviction decision needs: the node's signals (statvfs of the root dir's
//! filesystem, /proc/meminfo) and what pods use (cgroup working sets, bytes and inodes under
//! their writable layers, logs and emptyDirs).

use super::decide::{Observation, Observations};
use super::threshold::Signal;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A filesystem's size and free space, in bytes and inodes, as a root user may use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    /// The filesystem's size, bytes.
    pub bytes: u64,
    /// Free bytes, the root-reserved ones included (what the agent, as root, can still write).
    pub bytes_available: u64,
    /// The filesystem's inode count.
    pub inodes: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

/// statvfs of the filesystem holding `path`.
pub fn fs(path: &Path) -> Option<FsStats> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size() as u64;
    Some(FsStats {
        bytes: s.blocks() as u64 * frag,
        // What the agent (root) can still write: free blocks, not only those of users.
        bytes_available: s.blocks_free() as u64 * frag,
        inodes: s.files() as u64,
        inodes_free: s.files_free() as u64,
    })
}

/// The node's memory: capacity and what is available (free plus inactive page cache: the
/// capacity less the working set, as the kubelet computes it).
pub fn memory() -> Option<Observation> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    memory_from(&text)
}

fn memory_from(meminfo: &str) -> Option<Observation> {
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    let total = field("MemTotal")?;
    let free = field("MemFree")?;
    let inactive_file = field("Inactive(file)").unwrap_or(0);
    Some(Observation {
        available: (free + inactive_file).min(total),
        capacity: total,
    })
}

/// Every signal observable for a root dir (the image store lives in it: imagefs is the
/// filesystem of `<root>/images`, nodefs the root dir's).
pub fn observe(root_dir: &Path) -> Observations {
    let mut obs = Observations::new();
    if let Some(m) = memory() {
        obs.insert(Signal::MemoryAvailable, m);
    }
    let images = root_dir.join("images");
    for (path, bytes, inodes) in [
        (root_dir, Signal::NodeFsAvailable, Signal::NodeFsInodesFree),
        (
            if images.is_dir() {
                images.as_path()
            } else {
                root_dir
            },
            Signal::ImageFsAvailable,
            Signal::ImageFsInodesFree,
        ),
    ] {
        if let Some(s) = fs(path) {
            obs.insert(
                bytes,
                Observation {
                    available: s.bytes_available,
                    capacity: s.bytes,
                },
            );
            if s.inodes > 0 {
                obs.insert(
                    inodes,
                    Observation {
                        available: s.inodes_free,
                        capacity: s.inodes,
                    },
                );
            }
        }
    }
    obs
}

/// Bytes allocated (blocks, as `du` counts) and inodes under `dir`, not crossing into other
/// filesystems and not following symlinks. A missing dir is zero.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let (mut bytes, mut inodes) = (top.blocks() * 512, 1u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            // A file with several links is counted at each: rare in pods' own files.
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// The working set of a cgroup (usage less inactive page cache), from its memory directory:
/// `memory.current` (v2) or `memory.usage_in_bytes` (v1), less `inactive_file` /
/// `total_inactive_file` of `memory.stat`.
pub fn working_set(memory_dir: &Path) -> Option<u64> {
    let read = |f: &str| std::fs::read_to_string(memory_dir.join(f)).ok();
    let (usage, inactive_key) = match read("memory.current") {
        Some(u) => (u, "inactive_file"),
        None => (read("memory.usage_in_bytes")?, "total_inactive_file"),
    };
    let usage: u64 = usage.trim().parse().ok()?;
    let inactive = read("memory.stat")
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == inactive_key).then(|| v.trim().parse::<u64>().ok())?
            })
        })
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_available_is_free_plus_inactive_file() {
        let text = "MemTotal:        1000 kB\nMemFree:          200 kB\nMemAvailable:     700 kB\nInactive(file):   300 kB\nActive(file):   100 kB\n";
        assert_eq!(
            memory_from(text),
            Some(Observation {
                available: 500 * 1024,
                capacity: 1000 * 1024
            })
        );
        assert_eq!(memory_from("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn disk_usage_counts_blocks_and_inodes() {
        let d = tempfile::tempdir().unwrap();
        let (b0, i0) = disk_usage(d.path());
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), vec![1u8; 1 << 20]).unwrap();
        let (b1, i1) = disk_usage(d.path());
        assert_eq!(i1, i0 + 2);
        assert!(b1 >= b0 + (1 << 20), "{b0} -> {b1}");
        assert_eq!(disk_usage(&d.path().join("missing")), (0, 0));
    }

    #[test]
    fn working_set_from_cgroup_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("memory.current"), "1000\n").unwrap();
        std::fs::write(
            d.path().join("memory.stat"),
            "anon 600\ninactive_file 300\nactive_file 100\n",
        )
        .unwrap();
        assert_eq!(working_set(d.path()), Some(700));
        let v1 = tempfile::tempdir().unwrap();
        std::fs::write(v1.path().join("memory.usage_in_bytes"), "500\n").unwrap();
        std::fs::write(
            v1.path().join("memory.stat"),
            "inactive_file 1\ntotal_inactive_file 200\n",
        )
        .unwrap();
        assert_eq!(working_set(v1.path()), Some(300));
        assert_eq!(working_set(&d.path().join("none")), None);
    }
}
