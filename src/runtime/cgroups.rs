//! The cgroup side of pods (cgroupfs driver): a parent cgroup per pod (`/edged/pod<uid>`) under
//! which runc makes each container's, on a pure v2 host (one hierarchy) or a v1/hybrid one (a
//! hierarchy per controller, maybe a v2 mount at `unified` beside them).

use std::path::{Path, PathBuf};

/// The root every edged cgroup lives under.
pub const EDGED_CGROUP: &str = "edged";

/// How the host mounts cgroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 at the mount point.
    V2(PathBuf),
    /// cgroup v1: the hierarchy directories (`/sys/fs/cgroup/memory`, ...).
    V1(Vec<PathBuf>),
}

impl Layout {
    /// Detects the layout under /sys/fs/cgroup.
    pub fn detect() -> Layout {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    fn detect_at(root: &Path) -> Layout {
        let is_v2 = nix::sys::statfs::statfs(root)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        if is_v2 {
            return Layout::V2(root.to_path_buf());
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    // Mounted hierarchies only: not symlinks (cpu -> cpu,cpuacct), not a plain
                    // directory of the tmpfs (a hierarchy someone meant to mount).
                    .filter(|p| p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false))
                    .filter(|p| {
                        nix::sys::statfs::statfs(p).is_ok_and(|s| {
                            let t = s.filesystem_type();
                            t == nix::sys::statfs::CGROUP_SUPER_MAGIC
                                || t == nix::sys::statfs::CGROUP2_SUPER_MAGIC
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        Layout::V1(dirs)
    }

    /// The cgroup path (absolute, as `cgroupsPath` takes it) of a pod.
    pub fn pod_path(pod_uid: &str) -> String {
        format!("/{EDGED_CGROUP}/pod{pod_uid}")
    }

    /// The cgroup shims live in, out of the agent's own: a restart of the agent's service
    /// (systemd kills its whole cgroup) must not take the shims and their containers along.
    pub const SHIMS: &'static str = "/edged/shims";

    /// The cgroup path of a container of a pod.
    pub fn container_path(pod_uid: &str, container_id: &str) -> String {
        format!("{}/{container_id}", Self::pod_path(pod_uid))
    }

    /// Directories where a cgroup path lives (one on v2, one per hierarchy on v1).
    pub fn dirs(&self, cgroup: &str) -> Vec<PathBuf> {
        let rel = cgroup.trim_start_matches('/');
        match self {
            Layout::V2(root) => vec![root.join(rel)],
            Layout::V1(h) => h.iter().map(|d| d.join(rel)).collect(),
        }
    }

    /// The directory holding a cgroup's memory files.
    pub fn memory_dir(&self, cgroup: &str) -> PathBuf {
        let rel = cgroup.trim_start_matches('/');
        match self {
            Layout::V2(root) => root.join(rel),
            Layout::V1(h) => h
                .iter()
                .find(|d| d.file_name().is_some_and(|n| n == "memory"))
                .cloned()
                .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup/memory"))
                .join(rel),
        }
    }

    /// Makes a pod's parent cgroup in every hierarchy (runc makes the containers' below it).
    pub fn create_pod(&self, pod_uid: &str) -> std::io::Result<()> {
        let path = Self::pod_path(pod_uid);
        if let Layout::V2(root) = self {
            // Let the pod's children use the controllers (runc does it for the leaf).
            let edged = root.join(EDGED_CGROUP);
            std::fs::create_dir_all(&edged)?;
            enable_controllers(root);
            enable_controllers(&edged);
        }
        for d in self.dirs(&path) {
            match std::fs::create_dir_all(&d) {
                Ok(()) => {}
                // Named or read-only hierarchies can refuse: runc copes without them.
                Err(e) if d.starts_with("/sys/fs/cgroup/systemd") => {
                    tracing::debug!(dir = %d.display(), error = %e, "cgroup dir not made");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The directory holding a cgroup's pids files (v2: the cgroup; v1: the `pids`
    /// hierarchy, `None` when the host has none).
    pub fn pids_dir(&self, cgroup: &str) -> Option<PathBuf> {
        let rel = cgroup.trim_start_matches('/');
        match self {
            Layout::V2(root) => Some(root.join(rel)),
            Layout::V1(h) => h
                .iter()
                .find(|d| d.file_name().is_some_and(|n| n == "pids"))
                .map(|d| d.join(rel)),
        }
    }

    /// Sets the pod cgroup's `pids.max` (`--pod-max-pids`): `None` writes `max` (no limit).
    /// The pod's containers are below it, so together they cannot run more processes. A
    /// limit asked for on a host without the pids controller is an error.
    pub fn set_pod_pids_max(&self, pod_uid: &str, max: Option<u64>) -> std::io::Result<()> {
        let value = pids_max_value(max);
        let dir = self.pids_dir(&Self::pod_path(pod_uid));
        let file = dir.as_ref().map(|d| d.join("pids.max"));
        match file {
            Some(f) if f.exists() => std::fs::write(&f, &value)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", f.display()))),
            _ if max.is_none() => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "--pod-max-pids is set but the host has no pids cgroup controller",
            )),
        }
    }

    /// Moves a process into `cgroup` in every hierarchy (made as needed). Best effort: returns
    /// the first failure.
    pub fn move_process(&self, cgroup: &str, pid: u32) -> std::io::Result<()> {
        let mut first = Ok(());
        for d in self.dirs(cgroup) {
            let r = std::fs::create_dir_all(&d)
                .and_then(|()| fill_cpuset(&d))
                .and_then(|()| std::fs::write(d.join("cgroup.procs"), pid.to_string()));
            if let (Err(e), Ok(())) = (r, &first) {
                first = Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", d.display()),
                ));
            }
        }
        first
    }

    /// Removes a pod's cgroups (its containers' first). Best effort: a cgroup with live
    /// processes stays and is reported.
    pub fn remove_pod(&self, pod_uid: &str) -> std::io::Result<()> {
        let mut last = Ok(());
        for d in self.dirs(&Self::pod_path(pod_uid)) {
            if !d.exists() {
                continue;
            }
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        if let Err(err) = std::fs::remove_dir(e.path()) {
                            last = Err(err);
                        }
                    }
                }
            }
            if let Err(err) = std::fs::remove_dir(&d) {
                last = Err(err);
            }
        }
        last
    }

    /// Whether the kernel OOM-killed a process of this cgroup (v1 `memory.oom_control` or v2
    /// `memory.events`, line `oom_kill N`).
    pub fn oom_killed(&self, cgroup: &str) -> bool {
        let dir = self.memory_dir(cgroup);
        ["memory.events", "memory.oom_control"].iter().any(|f| {
            std::fs::read_to_string(dir.join(f))
                .map(|s| {
                    s.lines().any(|l| {
                        l.strip_prefix("oom_kill ")
                            .and_then(|n| n.trim().parse::<u64>().ok())
                            .is_some_and(|n| n > 0)
                    })
                })
                .unwrap_or(false)
        })
    }
}

/// What `pids.max` takes for a limit (`max`: none).
fn pids_max_value(max: Option<u64>) -> String {
    max.map_or_else(|| "max".to_string(), |n| n.to_string())
}

/// A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and takes no process:
/// copy them down from the nearest ancestor that has them (as runc does for its parents).
fn fill_cpuset(dir: &Path) -> std::io::Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        let Ok(value) = std::fs::read_to_string(&own) else {
            return Ok(()); // not a cpuset hierarchy
        };
        if !value.trim().is_empty() {
            continue;
        }
        if let Some(parent) = dir.parent() {
            fill_cpuset(parent)?;
            let inherited = std::fs::read_to_string(parent.join(file))?;
            std::fs::write(&own, inherited.trim())?;
        }
    }
    Ok(())
}

/// Writes every available controller into `cgroup.subtree_control` (v2), best effort.
fn enable_controllers(dir: &Path) {
    let Ok(ctrls) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    for c in ctrls.split_whitespace() {
        // One at a time: a controller the kernel refuses here must not block the others.
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(Layout::container_path("u1", "c1"), "/edged/podu1/c1");
        let v1 = Layout::V1(vec!["/cg/cpu".into(), "/cg/memory".into()]);
        assert_eq!(
            v1.dirs("/edged/podu1"),
            [
                PathBuf::from("/cg/cpu/edged/podu1"),
                "/cg/memory/edged/podu1".into()
            ]
        );
        assert_eq!(v1.memory_dir("/a"), PathBuf::from("/cg/memory/a"));
        let v2 = Layout::V2("/cg".into());
        assert_eq!(v2.memory_dir("/a/b"), PathBuf::from("/cg/a/b"));
        assert_eq!(v1.pids_dir("/a"), None);
        let v1p = Layout::V1(vec!["/cg/memory".into(), "/cg/pids".into()]);
        assert_eq!(v1p.pids_dir("/a"), Some(PathBuf::from("/cg/pids/a")));
        assert_eq!(v2.pids_dir("/a"), Some(PathBuf::from("/cg/a")));
    }

    #[test]
    fn pod_pids_limit() {
        assert_eq!(pids_max_value(None), "max");
        assert_eq!(pids_max_value(Some(20)), "20");
        let d = tempfile::tempdir().unwrap();
        let l = Layout::V2(d.path().into());
        let pod = d.path().join("edged/podu1");
        std::fs::create_dir_all(&pod).unwrap();
        // No pids controller: fine without a limit, an error with one.
        assert!(l.set_pod_pids_max("u1", None).is_ok());
        let e = l.set_pod_pids_max("u1", Some(20)).unwrap_err();
        assert!(e.to_string().contains("pids"), "{e}");
        std::fs::write(pod.join("pids.max"), "max").unwrap();
        l.set_pod_pids_max("u1", Some(20)).unwrap();
        assert_eq!(std::fs::read_to_string(pod.join("pids.max")).unwrap(), "20");
        l.set_pod_pids_max("u1", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(pod.join("pids.max")).unwrap(),
            "max"
        );
    }

    #[test]
    fn oom_counter() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::V2(d.path().into());
        std::fs::create_dir_all(d.path().join("x")).unwrap();
        std::fs::write(
            d.path().join("x/memory.events"),
            "low 0\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(!l.oom_killed("/x"));
        std::fs::write(d.path().join("x/memory.events"), "oom 1\noom_kill 2\n").unwrap();
        assert!(l.oom_killed("/x"));
    }
}
