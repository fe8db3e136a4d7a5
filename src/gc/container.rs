//! Container GC: dead containers go, oldest first, by the kubelet's policy
//! (`pkg/kubelet/kuberuntime/kuberuntime_gc.go`): MinAge (`--minimum-container-ttl-duration`),
//! MaxPerPodContainer (`--maximum-dead-containers-per-container`) and MaxContainers
//! (`--maximum-dead-containers`, a fair share per (pod, container) first). Containers of
//! deleted pods go first and all of them. A running container is never removed, nor the
//! newest instance of a container of a pod that still exists (its worker reads its exit from
//! it). A removed container's CRI log goes with it, rotated files included.
//!
//! As the kubelet: every state but running is evictable (created containers that never
//! started too, unknown ones are stopped first by the runtime), and MinAge counts from
//! creation. Unlike the kubelet, the last MaxContainers step removes by creation time across
//! all containers (the kubelet compares restart counts of different containers there).

use crate::kuberuntime::instances::newest_first;
use crate::runtime::{ContainerState, ContainerStatus, Runtime};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The collection policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// A dead container younger than this is kept.
    pub min_age: Duration,
    /// Dead instances kept per (pod, container); below zero, no limit.
    pub max_per_pod_container: i32,
    /// Dead containers kept on the node; below zero, no limit.
    pub max_containers: i32,
}

/// One evict unit (pod uid, container name): whether its newest instance is dead but kept
/// (protected), and its other evictable instances, newest first.
type Units<'a> = BTreeMap<(String, String), (bool, Vec<&'a ContainerStatus>)>;

/// The ids to remove, in the order to remove them.
pub fn select(
    all: &[ContainerStatus],
    live_pods: &HashSet<String>,
    policy: &Policy,
    now: SystemTime,
) -> Vec<String> {
    let mut remove: Vec<String> = Vec::new();
    // Evict units: (pod uid, container name) → every instance.
    let mut units: BTreeMap<(String, String), Vec<&ContainerStatus>> = BTreeMap::new();
    for c in all {
        units
            .entry((c.pod_uid.clone(), c.name.clone()))
            .or_default()
            .push(c);
    }
    let mut kept: Units = BTreeMap::new();
    for (key, mut instances) in units {
        // Newest first: by restart count, then creation (the kubelet's byAttempt).
        instances.sort_by(|a, b| newest_first(a, b));
        let live = live_pods.contains(&key.0);
        let mut evictable: Vec<&ContainerStatus> = instances
            .iter()
            .copied()
            .filter(|c| c.state != ContainerState::Running)
            .filter(|c| now.duration_since(c.created_at).unwrap_or_default() >= policy.min_age)
            .collect();
        if !live {
            // Deleted pods first, all of their dead containers, oldest first.
            remove.extend(evictable.iter().rev().map(|c| c.id.clone()));
            continue;
        }
        let protected = evictable.first().is_some_and(|c| c.id == instances[0].id);
        if protected {
            evictable.remove(0);
        }
        // Units with nothing evictable are no units to the kubelet (they take no share).
        if protected || !evictable.is_empty() {
            kept.insert(key, (protected, evictable));
        }
    }
    if policy.max_per_pod_container >= 0 {
        enforce(
            &mut kept,
            &mut remove,
            policy.max_per_pod_container as usize,
        );
    }
    if policy.max_containers >= 0 {
        let max = policy.max_containers as usize;
        let total = |k: &Units| {
            k.values()
                .map(|(p, v)| v.len() + *p as usize)
                .sum::<usize>()
        };
        if total(&kept) > max {
            // An equal share per unit first (at least one), then the oldest of what is left.
            let fair = (max / kept.len()).max(1);
            enforce(&mut kept, &mut remove, fair);
            let over = total(&kept).saturating_sub(max);
            let mut rest: Vec<&ContainerStatus> =
                kept.values().flat_map(|(_, v)| v.iter().copied()).collect();
            rest.sort_by_key(|c| (c.created_at, c.attempt));
            remove.extend(rest.iter().take(over).map(|c| c.id.clone()));
        }
    }
    remove
}

/// Keeps at most `keep` dead instances per unit (a protected newest one counts among them),
/// removing the oldest.
fn enforce(units: &mut Units<'_>, remove: &mut Vec<String>, keep: usize) {
    for (protected, instances) in units.values_mut() {
        let keep = keep.saturating_sub(*protected as usize);
        if instances.len() > keep {
            let extra = instances.split_off(keep);
            remove.extend(extra.iter().rev().map(|c| c.id.clone()));
        }
    }
}

/// One collection now: see [`collect_at`].
pub fn collect(runtime: &dyn Runtime, live_pods: &HashSet<String>, policy: &Policy) -> Vec<String> {
    collect_at(runtime, live_pods, policy, SystemTime::now())
}

/// One collection, ages counted at `now`: removes what [`select`] names (the runtime removes
/// bundle, rootfs snapshot and runc state) and their log files. Returns the ids removed, in
/// order.
pub fn collect_at(
    runtime: &dyn Runtime,
    live_pods: &HashSet<String>,
    policy: &Policy,
    now: SystemTime,
) -> Vec<String> {
    let all = match runtime.list_containers() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "container GC: cannot list containers");
            return Vec::new();
        }
    };
    let mut removed = Vec::new();
    for id in select(&all, live_pods, policy, now) {
        let Some(c) = all.iter().find(|c| c.id == id) else {
            continue;
        };
        let pod = c
            .labels
            .get(crate::runtime::labels::POD_NAMESPACE)
            .zip(c.labels.get(crate::runtime::labels::POD_NAME))
            .map(|(ns, n)| format!("{ns}/{n}"))
            .unwrap_or_else(|| c.pod_uid.clone());
        match runtime.remove_container(&id) {
            Ok(()) => {
                remove_logs(&c.log_path);
                tracing::info!(pod = %pod, container = %c.name, id = %id, attempt = c.attempt, "container GC removed a dead container");
                removed.push(id);
            }
            Err(e) => {
                tracing::warn!(pod = %pod, container = %c.name, id = %id, error = %e, "container GC: cannot remove")
            }
        }
    }
    removed
}

/// Removes a container's CRI log and its rotated files (`<n>.log.<stamp>[.<k>]`), as the
/// kubelet's removeContainerLog does.
pub fn remove_logs(log: &Path) {
    if log.as_os_str().is_empty() {
        return;
    }
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return;
    };
    let rotated = format!("{}.", name.to_string_lossy());
    let mut paths = vec![log.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        paths.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&rotated))
                .map(|e| e.path()),
        );
    }
    for p in paths {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "container GC: cannot remove a log file")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn dead(pod: &str, name: &str, attempt: u32, age_s: u64, now: SystemTime) -> ContainerStatus {
        let id = format!("{pod}-{name}-{attempt}");
        let created = now - Duration::from_secs(age_s);
        ContainerStatus {
            exit_code: Some(1),
            ..ContainerStatus::for_test(&id, pod, name, attempt, ContainerState::Exited, created)
        }
    }

    fn policy(min_age: u64, per: i32, max: i32) -> Policy {
        Policy {
            min_age: Duration::from_secs(min_age),
            max_per_pod_container: per,
            max_containers: max,
        }
    }

    #[test]
    fn per_container_limit_keeps_newest() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let all: Vec<_> = (0..4)
            .map(|a| dead("p", "c", a, 100 - a as u64 * 10, now))
            .collect();
        let live: HashSet<String> = ["p".to_string()].into();
        // Default policy: one dead instance kept (the newest).
        assert_eq!(
            select(&all, &live, &policy(0, 1, -1), now),
            vec!["p-c-0", "p-c-1", "p-c-2"]
        );
        assert_eq!(
            select(&all, &live, &policy(0, 2, -1), now),
            vec!["p-c-0", "p-c-1"]
        );
        assert!(select(&all, &live, &policy(0, -1, -1), now).is_empty());
        // MinAge: only containers older than 75 s are candidates; of those the newest stays.
        assert_eq!(
            select(&all, &live, &policy(75, 1, -1), now),
            vec!["p-c-0", "p-c-1"]
        );
        // The newest instance of a live pod's container stays even with a limit of 0.
        assert_eq!(
            select(&all, &live, &policy(0, 0, -1), now),
            vec!["p-c-0", "p-c-1", "p-c-2"]
        );
    }

    #[test]
    fn deleted_pods_first_and_max_containers_fair() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let mut all = vec![
            dead("gone", "c", 0, 500, now),
            dead("gone", "c", 1, 400, now),
        ];
        for a in 0..3 {
            all.push(dead("p1", "c", a, 300 - a as u64 * 10, now));
            all.push(dead("p2", "c", a, 200 - a as u64 * 10, now));
        }
        let live: HashSet<String> = ["p1".to_string(), "p2".to_string()].into();
        let r = select(&all, &live, &policy(0, -1, 2), now);
        assert_eq!(&r[..2], &["gone-c-0", "gone-c-1"]);
        // Two units, max 2: one kept per unit (its newest).
        let rest: HashSet<&str> = r[2..].iter().map(String::as_str).collect();
        assert_eq!(rest, ["p1-c-0", "p1-c-1", "p2-c-0", "p2-c-1"].into());
    }

    #[test]
    fn running_never_removed() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let mut r = dead("gone", "c", 0, 500, now);
        r.state = ContainerState::Running;
        assert!(select(&[r], &HashSet::new(), &policy(0, 0, 0), now).is_empty());
    }

    #[test]
    fn created_containers_are_evictable_but_the_newest_stays() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let mut old = dead("p", "c", 0, 100, now);
        old.state = ContainerState::Created; // never started
        let mut newest = dead("p", "c", 1, 50, now);
        newest.state = ContainerState::Created; // about to start
        let live: HashSet<String> = ["p".to_string()].into();
        assert_eq!(
            select(
                &[old.clone(), newest.clone()],
                &live,
                &policy(0, 0, -1),
                now
            ),
            vec!["p-c-0"]
        );
        // A deleted pod's created containers go too.
        assert_eq!(
            select(&[old, newest], &HashSet::new(), &policy(0, 1, -1), now),
            vec!["p-c-0", "p-c-1"]
        );
    }

    #[test]
    fn fair_share_counts_only_units_with_dead_containers() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let mut all: Vec<ContainerStatus> = (0..4)
            .map(|a| dead("p1", "c", a, 400 - a as u64 * 10, now))
            .collect();
        // Two units with nothing evictable: one running, one too young for MinAge 30 s.
        let mut running = dead("p2", "web", 0, 300, now);
        running.state = ContainerState::Running;
        all.push(running);
        all.push(dead("p3", "c", 0, 10, now));
        let live: HashSet<String> = ["p1", "p2", "p3"].map(String::from).into();
        // Max 2 over one unit (p1/c): its share is 2, so the two oldest go. Counting the
        // other units would give a share of 2/3 → 1 and remove one more.
        assert_eq!(
            select(&all, &live, &policy(30, -1, 2), now),
            vec!["p1-c-0", "p1-c-1"]
        );
    }

    #[test]
    fn max_containers_removes_the_oldest_left_across_units() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        // p1/a: attempts 0..3 created long ago; p2/b: attempts 5..7 created recently.
        let mut all: Vec<ContainerStatus> = (0..3)
            .map(|a| dead("p1", "a", a, 900 - a as u64 * 10, now))
            .collect();
        all.extend((5..8).map(|a| dead("p2", "b", a, 300 - a as u64 * 10, now)));
        let live: HashSet<String> = ["p1", "p2"].map(String::from).into();
        // Max 3 over 2 units: share 1 each (2 kept), per unit 2 removed each; nothing over.
        let r = select(&all, &live, &policy(0, -1, 3), now);
        assert_eq!(r, vec!["p1-a-0", "p1-a-1", "p2-b-5", "p2-b-6"]);
        // Max 5: share 2 each (4 kept, under 5): only the oldest of each unit goes.
        let r = select(&all, &live, &policy(0, -1, 5), now);
        assert_eq!(r, vec!["p1-a-0", "p2-b-5"]);

        // Units whose newest instance runs keep unprotected dead ones after the share: the
        // oldest of those go, by creation time (the kubelet would take b-0 for its lower
        // restart count although a-1 is older).
        let run = |mut c: ContainerStatus| {
            c.state = ContainerState::Running;
            c
        };
        let all = vec![
            run(dead("p1", "a", 2, 10, now)),
            dead("p1", "a", 1, 900, now),
            dead("p1", "a", 0, 950, now),
            run(dead("p2", "b", 1, 10, now)),
            dead("p2", "b", 0, 100, now),
            dead("p3", "c", 0, 50, now),
        ];
        let live: HashSet<String> = ["p1", "p2", "p3"].map(String::from).into();
        // Max 2 over 3 units: share 1 each (a-0 goes), 3 left, the oldest (a-1) goes.
        assert_eq!(
            select(&all, &live, &policy(0, -1, 2), now),
            vec!["p1-a-0", "p1-a-1"]
        );
    }

    #[test]
    fn logs_go_with_their_rotated_files_only() {
        let d = tempfile::tempdir().unwrap();
        let names = [
            "0.log",
            "0.log.20260101-010101",
            "0.log.20260101-010101.1",
            "1.log",
            "10.log",
        ];
        for n in names {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        remove_logs(&d.path().join("0.log"));
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["1.log", "10.log"]);
        remove_logs(Path::new(""));
    }
}
