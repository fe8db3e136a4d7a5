//! The order of a container's instances (the kubelet's `byAttempt`): by restart count, then
//! creation time, then id. The id only breaks exact ties, so that the pod worker, the status
//! and container GC always agree on which instance is the latest.

use crate::runtime::ContainerStatus;
use std::cmp::Ordering;

/// Orders two instances of one container oldest first: lower attempt, then earlier
/// creation, then lower id. Start times play no part (an instance that never started still
/// has its place).
pub fn oldest_first(a: &ContainerStatus, b: &ContainerStatus) -> Ordering {
    (a.attempt, a.created_at, &a.id).cmp(&(b.attempt, b.created_at, &b.id))
}

/// Orders two instances of one container newest first: the reverse of [`oldest_first`].
pub fn newest_first(a: &ContainerStatus, b: &ContainerStatus) -> Ordering {
    oldest_first(b, a)
}

/// The latest instance of the container `name` among `all`, if it has one.
pub fn latest<'a>(all: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    all.iter()
        .filter(|c| c.name == name)
        .max_by(|a, b| oldest_first(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ContainerState;
    use std::time::{Duration, UNIX_EPOCH};

    fn inst(id: &str, name: &str, attempt: u32, created_s: u64, started_s: u64) -> ContainerStatus {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        ContainerStatus {
            started_at: Some(at(started_s)),
            ..ContainerStatus::for_test(
                id,
                "uid",
                name,
                attempt,
                ContainerState::Exited,
                at(created_s),
            )
        }
    }

    fn ids(v: &[&ContainerStatus]) -> Vec<String> {
        v.iter().map(|c| c.id.clone()).collect()
    }

    #[test]
    fn attempt_first_then_creation_then_id() {
        let all = [
            // A higher attempt wins over a later creation (a clock stepped back).
            inst("a", "app", 2, 10, 10),
            inst("b", "app", 1, 50, 50),
            // Same attempt: the later creation wins, whatever the start times say.
            inst("c", "app", 3, 20, 90),
            inst("d", "app", 3, 30, 30),
            // Another container is never looked at.
            inst("z", "side", 9, 99, 99),
        ];
        assert_eq!(latest(&all, "app").map(|c| c.id.as_str()), Some("d"));
        assert_eq!(latest(&all, "side").map(|c| c.id.as_str()), Some("z"));
        assert_eq!(latest(&all, "gone"), None);
        let mut v: Vec<&ContainerStatus> = all[..4].iter().collect();
        v.sort_by(|a, b| newest_first(a, b));
        assert_eq!(ids(&v), ["d", "c", "a", "b"]);
        v.sort_by(|a, b| oldest_first(a, b));
        assert_eq!(ids(&v), ["b", "a", "c", "d"]);
    }

    #[test]
    fn exact_ties_go_by_id_whatever_the_input_order() {
        let x = inst("x", "app", 1, 5, 5);
        let y = inst("y", "app", 1, 5, 6);
        for all in [[x.clone(), y.clone()], [y.clone(), x.clone()]] {
            assert_eq!(latest(&all, "app").map(|c| c.id.as_str()), Some("y"));
            let mut v: Vec<&ContainerStatus> = all.iter().collect();
            v.sort_by(|a, b| newest_first(a, b));
            assert_eq!(ids(&v), ["y", "x"]);
        }
        assert_eq!(oldest_first(&x, &x), Ordering::Equal);
    }
}
