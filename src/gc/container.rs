//! Container GC: dead containers go, oldest first, by the kubelet's policy: MinAge
//! (`--minimum-container-ttl-duration`), MaxPerPodContainer
//! (`--maximum-dead-containers-per-container`) and MaxContainers (`--maximum-dead-containers`,
//! shared fairly across pods). Containers of deleted pods go first and all of them. A running
//! container is never removed, nor the newest instance of a container of a pod that still
//! exists (its worker reads its exit from it).

use crate::runtime::{ContainerState, ContainerStatus, Runtime};
use std::collections::{BTreeMap, HashSet};
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

/// The ids to remove, in the order to remove them.
pub fn select(
    all: &[ContainerStatus],
    live_pods: &HashSet<String>,
    policy: &Policy,
    now: SystemTime,
) -> Vec<String> {
    let mut remove: Vec<String> = Vec::new();
    // Evict units: (pod uid, container name) → dead instances, newest first.
    let mut units: BTreeMap<(String, String), Vec<&ContainerStatus>> = BTreeMap::new();
    for c in all {
        units
            .entry((c.pod_uid.clone(), c.name.clone()))
            .or_default()
            .push(c);
    }
    // Per unit: whether its newest instance is dead but protected, and the other candidates.
    let mut kept: BTreeMap<(String, String), (bool, Vec<&ContainerStatus>)> = BTreeMap::new();
    for (key, mut instances) in units {
        instances.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
        let live = live_pods.contains(&key.0);
        let mut evictable: Vec<&ContainerStatus> = instances
            .iter()
            .copied()
            .filter(|c| c.state != ContainerState::Running && c.state != ContainerState::Created)
            .filter(|c| now.duration_since(c.created_at).unwrap_or_default() >= policy.min_age)
            .collect();
        if !live {
            // Deleted pods first, all of their dead containers, oldest first.
            remove.extend(evictable.iter().rev().map(|c| c.id.clone()));
            continue;
        }
        let protected = evictable
            .first()
            .map(|c| c.id == instances[0].id)
            .unwrap_or(false);
        if protected {
            evictable.remove(0);
        }
        kept.insert(key, (protected, evictable));
    }
    let limit = |max: i32| if max < 0 { usize::MAX } else { max as usize };
    enforce(&mut kept, &mut remove, limit(policy.max_per_pod_container));
    if policy.max_containers >= 0 {
        let max = policy.max_containers as usize;
        let total = |k: &Units| {
            k.values()
                .map(|(p, v)| v.len() + *p as usize)
                .sum::<usize>()
        };
        if total(&kept) > max && !kept.is_empty() {
            // A fair share per container first, then the oldest of what is left.
            let fair = (max / kept.len()).max(1);
            enforce(&mut kept, &mut remove, fair);
            let over = total(&kept).saturating_sub(max);
            let mut rest: Vec<&ContainerStatus> =
                kept.values().flat_map(|(_, v)| v.iter().copied()).collect();
            rest.sort_by_key(|c| c.created_at);
            remove.extend(rest.iter().take(over).map(|c| c.id.clone()));
        }
    }
    remove
}

type Units<'a> = BTreeMap<(String, String), (bool, Vec<&'a ContainerStatus>)>;

/// Keeps at most `keep` dead instances per unit (a protected newest one counts among them).
fn enforce(units: &mut Units<'_>, remove: &mut Vec<String>, keep: usize) {
    for (protected, instances) in units.values_mut() {
        let keep = keep.saturating_sub(*protected as usize);
        if instances.len() > keep {
            let extra = instances.split_off(keep);
            remove.extend(extra.iter().rev().map(|c| c.id.clone()));
        }
    }
}

/// One collection: removes what [`select`] names, with their log files. Returns the ids
/// removed.
pub fn collect(runtime: &dyn Runtime, live_pods: &HashSet<String>, policy: &Policy) -> Vec<String> {
    let all = match runtime.list_containers() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "container GC: cannot list containers");
            return Vec::new();
        }
    };
    let mut removed = Vec::new();
    for id in select(&all, live_pods, policy, SystemTime::now()) {
        let log = all.iter().find(|c| c.id == id).map(|c| c.log_path.clone());
        match runtime.remove_container(&id) {
            Ok(()) => {
                if let Some(log) = log.filter(|p| !p.as_os_str().is_empty()) {
                    let _ = std::fs::remove_file(&log);
                }
                tracing::info!(container = %id, "container GC removed a dead container");
                removed.push(id);
            }
            Err(e) => tracing::warn!(container = %id, error = %e, "container GC: cannot remove"),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::UNIX_EPOCH;

    fn dead(pod: &str, name: &str, attempt: u32, age_s: u64, now: SystemTime) -> ContainerStatus {
        ContainerStatus {
            id: format!("{pod}-{name}-{attempt}"),
            pod_uid: pod.into(),
            name: name.into(),
            attempt,
            image: String::new(),
            image_id: String::new(),
            state: ContainerState::Exited,
            pid: None,
            created_at: now - Duration::from_secs(age_s),
            started_at: None,
            finished_at: None,
            exit_code: Some(1),
            reason: None,
            message: None,
            log_path: PathBuf::new(),
            labels: Default::default(),
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
}
