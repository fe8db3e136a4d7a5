//! Housekeeping: what is on the node for no pod the manager runs (containers, sandboxes,
//! volume and log directories), found ([`list`]), decided ([`orphans`]) and removed
//! ([`remove`]).
//!
//! The order is what makes it safe while pods come and go: the node is listed first, and only
//! then is what was listed checked against the pods known. A pod is known before its worker
//! makes anything for it, so whatever of a pod was listed, its pod was known by the time of the
//! check; a pod added during the listing (whose sandbox or log directory may have been listed)
//! is never taken for an orphan. (Checking against pods known before the listing removed the
//! log directory of a pod added meanwhile: found by the e2e suite, "has run but has no log".)

use crate::runtime::Runtime;
use crate::volume::VolumeManager;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// What housekeeping found on the node, each with the uid of the pod it belongs to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Found {
    /// Containers: (container id, pod uid).
    pub containers: Vec<(String, String)>,
    /// Sandboxes: (pod uid, `<namespace>/<name>` to show).
    pub sandboxes: Vec<(String, String)>,
    /// Pod volume directories: pod uids.
    pub volume_pods: Vec<String>,
    /// Log directories under `--pod-log-dir` (`<namespace>_<name>_<uid>`): (name, pod uid).
    pub log_dirs: Vec<(String, String)>,
}

/// The pod uid of a log directory named `<namespace>_<name>_<uid>` (`None`: not such a name).
pub fn log_dir_uid(name: &str) -> Option<&str> {
    (name.matches('_').count() >= 2)
        .then(|| name.rsplit('_').next())
        .flatten()
        .filter(|uid| !uid.is_empty())
}

/// Lists the node (blocking: run it off the executor). What cannot be listed is left out.
pub fn list(rt: &dyn Runtime, volumes: &VolumeManager, log_dir: &Path) -> Found {
    let mut found = Found::default();
    if let Ok(containers) = rt.list_containers() {
        found.containers = containers.into_iter().map(|c| (c.id, c.pod_uid)).collect();
    }
    if let Ok(sandboxes) = rt.list_pod_sandboxes() {
        found.sandboxes = sandboxes
            .into_iter()
            .map(|s| (s.uid, format!("{}/{}", s.namespace, s.name)))
            .collect();
    }
    found.volume_pods = volumes.pod_dirs().unwrap_or_default();
    if let Ok(dir) = std::fs::read_dir(log_dir) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(uid) = log_dir_uid(&name) {
                let uid = uid.to_string();
                found.log_dirs.push((name, uid));
            }
        }
    }
    found
}

/// Of what was [`list`]ed, what belongs to no pod of `known` (the pods known *after* the
/// listing).
pub fn orphans(found: Found, known: &HashSet<String>) -> Found {
    Found {
        containers: found
            .containers
            .into_iter()
            .filter(|(_, pod)| !known.contains(pod))
            .collect(),
        sandboxes: found
            .sandboxes
            .into_iter()
            .filter(|(uid, _)| !known.contains(uid))
            .collect(),
        volume_pods: found
            .volume_pods
            .into_iter()
            .filter(|uid| !known.contains(uid))
            .collect(),
        log_dirs: found
            .log_dirs
            .into_iter()
            .filter(|(_, uid)| !known.contains(uid))
            .collect(),
    }
}

/// Removes `orphans` (blocking: run it off the executor); what was removed, to log.
pub fn remove(
    rt: &dyn Runtime,
    volumes: &VolumeManager,
    log_dir: &Path,
    orphans: &Found,
) -> Vec<String> {
    let mut removed = Vec::new();
    for (id, _) in &orphans.containers {
        let _ = rt.stop_container(id, Duration::ZERO);
        if rt.remove_container(id).is_ok() {
            removed.push(format!("container {id}"));
        }
    }
    for (uid, shown) in &orphans.sandboxes {
        let _ = rt.stop_pod_sandbox(uid, Duration::ZERO);
        if rt.remove_pod_sandbox(uid).is_ok() {
            removed.push(format!("sandbox {shown} ({uid})"));
        }
    }
    for uid in &orphans.volume_pods {
        if volumes.teardown(uid).is_ok() {
            removed.push(format!("volumes of pod {uid}"));
        }
    }
    for (name, _) in &orphans.log_dirs {
        if crate::paths::remove_dir_all_under(log_dir, name).is_ok() {
            removed.push(format!("log directory {name}"));
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn only_what_belongs_to_no_known_pod_is_an_orphan() {
        let found = Found {
            containers: vec![(s("c1"), s("u1")), (s("c2"), s("gone"))],
            sandboxes: vec![(s("u1"), s("ns/a")), (s("gone"), s("ns/b"))],
            volume_pods: vec![s("u1"), s("gone")],
            log_dirs: vec![(s("ns_a_u1"), s("u1")), (s("ns_b_gone"), s("gone"))],
        };
        // A pod added while the node was listed (u1) is known by the time of the decision.
        let known: HashSet<String> = [s("u1")].into();
        assert_eq!(
            orphans(found.clone(), &known),
            Found {
                containers: vec![(s("c2"), s("gone"))],
                sandboxes: vec![(s("gone"), s("ns/b"))],
                volume_pods: vec![s("gone")],
                log_dirs: vec![(s("ns_b_gone"), s("gone"))],
            }
        );
        assert_eq!(orphans(found.clone(), &HashSet::new()), found);
    }

    #[test]
    fn log_directories_are_read_by_their_last_part() {
        for (name, want) in [
            ("ns_pod_8f0c-uid", Some("8f0c-uid")),
            ("ns_pod_with_underscores_uid", Some("uid")),
            ("ns_pod", None),
            ("plain", None),
            ("ns_pod_", None),
        ] {
            assert_eq!(log_dir_uid(name), want, "{name}");
        }
    }
}
