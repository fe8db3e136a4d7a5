//! The order pod changes are applied in, across the pod manager's three queues.
//!
//! MetaManager hands changes over one channel in the order it stored them. The pod manager
//! serves pod adds, updates and deletes from three queues, a task each (as KubeEdge's edged
//! does). Which of three ready tasks the executor runs first is its own choice, and a task drains
//! its whole queue once it runs: a burst such as `delete b, add a, delete a` could be applied as
//! `delete b, delete a, add a`, leaving a deleted pod running.
//!
//! The guarantee: **a pod's changes take effect in the order MetaManager handed them on**. Each
//! change is numbered as it leaves the channel; [`Order`] keeps, per pod (`namespace/name`), the
//! number of the newest change applied, and a queue drops a change older than that one (it is
//! already superseded: the newer add, update or delete carries what the pod must be). Only
//! changes still in a queue can be out of order, so the record is forgotten whenever every
//! queue is empty, and it never holds more pods than the queues do.

use std::collections::HashMap;

/// The place of a change in MetaManager's channel.
pub type Seq = u64;

/// The newest change applied to each pod with changes still queued.
#[derive(Debug, Default)]
pub struct Order {
    applied: HashMap<String, Seq>,
}

impl Order {
    /// Whether change `seq` of pod `key` (`namespace/name`) is to be applied: it is unless a
    /// newer change of the same pod was applied already. Admitting it records it.
    pub fn admit(&mut self, key: &str, seq: Seq) -> bool {
        match self.applied.get_mut(key) {
            Some(newest) if *newest > seq => false,
            Some(newest) => {
                *newest = seq;
                true
            }
            None => {
                self.applied.insert(key.to_string(), seq);
                true
            }
        }
    }

    /// Every queue is empty: no older change can still come, so nothing needs remembering.
    pub fn drained(&mut self) {
        self.applied.clear();
    }

    /// How many pods are remembered (for tests and logs).
    pub fn len(&self) -> usize {
        self.applied.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changes as handed on (seq = index), applied in `served` order (indices): which are
    /// applied, in the order applied.
    fn serve(changes: &[&str], served: &[usize]) -> Vec<String> {
        let mut order = Order::default();
        let mut out = Vec::new();
        for &i in served {
            let (op, key) = changes[i].split_once(' ').unwrap();
            if order.admit(key, i as Seq) {
                out.push(format!("{op} {key}"));
            }
        }
        out
    }

    #[test]
    fn a_pods_changes_take_effect_in_the_order_handed_on() {
        // (changes handed on, order the three queues served them, what takes effect)
        let cases: &[(&[&str], &[usize], &[&str])] = &[
            // In order: everything applies.
            (&["add a", "delete a"], &[0, 1], &["add a", "delete a"]),
            // The delete queue ran first (it was woken first, for b): a's add is stale.
            (
                &["delete b", "add a", "delete a"],
                &[0, 2, 1],
                &["delete b", "delete a"],
            ),
            // An update served before the add: the add is stale (the update carries the spec).
            (&["add a", "update a"], &[1, 0], &["update a"]),
            // Delete and re-add under the same name: the re-add wins whatever the order.
            (&["delete a", "add a"], &[1, 0], &["add a"]),
            // Other pods are independent.
            (
                &["add a", "add b", "delete a"],
                &[2, 1, 0],
                &["delete a", "add b"],
            ),
        ];
        for (changes, served, want) in cases {
            assert_eq!(
                serve(changes, served),
                *want,
                "{changes:?} served {served:?}"
            );
        }
    }

    #[test]
    fn drained_queues_forget_everything() {
        let mut order = Order::default();
        assert!(order.admit("ns/a", 5));
        assert!(!order.admit("ns/a", 4));
        assert_eq!(order.len(), 1);
        order.drained();
        assert!(order.is_empty());
        // Numbers only grow, so nothing stale can follow a drain.
        assert!(order.admit("ns/a", 6));
    }
}
