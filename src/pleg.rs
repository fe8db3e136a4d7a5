//! PLEG, the pod lifecycle event generator: every `--pleg-relist-period` it lists the
//! runtime's containers, compares with the last list, and sends started / died / removed
//! events to the pods' workers. Exit events from the runtime wake it early; the relist stays
//! the truth.

use crate::clock::{SharedClock, SystemClock};
use crate::runtime::{labels, ContainerState, ContainerStatus, Runtime};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What happened to a container between two relists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Now running (and was not, or was not there, at the last relist).
    ContainerStarted,
    /// Exited since the last relist.
    ContainerDied,
    /// Gone from the runtime since the last relist.
    ContainerRemoved,
    /// Seen for the first time in a state other than running (created, or exited before the
    /// first relist saw it).
    ContainerChanged,
}

/// A lifecycle event of one container of one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodLifecycleEvent {
    /// The pod the container belongs to.
    pub pod_uid: String,
    /// The runtime's id of the container.
    pub container_id: String,
    /// What happened.
    pub kind: EventKind,
}

/// The generic PLEG.
pub struct Pleg {
    runtime: Arc<dyn Runtime>,
    /// What the relist period is waited on.
    clock: SharedClock,
    last: RefCell<HashMap<String, (String, ContainerState)>>,
    relist_time: Cell<Duration>,
    relisted_at: Cell<Option<Instant>>,
}

impl Pleg {
    /// A PLEG over `runtime`.
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Self::with_clock(runtime, SystemClock::shared())
    }

    /// A PLEG over `runtime` waiting out its relist period on `clock`.
    pub fn with_clock(runtime: Arc<dyn Runtime>, clock: SharedClock) -> Self {
        Pleg {
            runtime,
            clock,
            last: RefCell::new(HashMap::new()),
            relist_time: Cell::new(Duration::ZERO),
            relisted_at: Cell::new(None),
        }
    }

    /// How long the last relist took, and when it ended (PLEG health).
    pub fn last_relist(&self) -> (Duration, Option<Instant>) {
        (self.relist_time.get(), self.relisted_at.get())
    }

    /// Lists the runtime's containers once and returns what changed since the last list.
    pub async fn relist(&self) -> Vec<PodLifecycleEvent> {
        let started = Instant::now();
        let rt = self.runtime.clone();
        let list = match smol::unblock(move || rt.list_containers()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "PLEG relist failed");
                return Vec::new();
            }
        };
        let events = diff(&mut self.last.borrow_mut(), &list);
        let took = started.elapsed();
        // Relist cost grows with the pods; scripts/bench.sh reads this line.
        tracing::debug!(
            containers = list.len(),
            took_us = took.as_micros() as u64,
            "PLEG relist"
        );
        self.relist_time.set(took);
        self.relisted_at.set(Some(Instant::now()));
        events
    }

    /// The relist loop: sends events to `tx` until it closes.
    pub async fn run(
        self: std::rc::Rc<Self>,
        period: Duration,
        tx: async_channel::Sender<PodLifecycleEvent>,
    ) {
        let exits = self.runtime.exit_events();
        loop {
            for ev in self.relist().await {
                tracing::debug!(pod_uid = %ev.pod_uid, container = %ev.container_id, kind = ?ev.kind, "PLEG event");
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            // Wake at the period, or early when an exit arrives.
            let timer = self.clock.sleep(period);
            let exit = async {
                let _ = exits.recv().await;
            };
            smol::future::or(timer, exit).await;
        }
    }
}

/// Compares a new list with the last one (which it then replaces).
pub fn diff(
    last: &mut HashMap<String, (String, ContainerState)>,
    now: &[ContainerStatus],
) -> Vec<PodLifecycleEvent> {
    let mut events = Vec::new();
    let mut next = HashMap::with_capacity(now.len());
    for c in now {
        let uid = c
            .labels
            .get(labels::POD_UID)
            .cloned()
            .unwrap_or_else(|| c.pod_uid.clone());
        let before = last.get(&c.id).map(|(_, s)| *s);
        let kind = match (before, c.state) {
            (Some(a), b) if a == b => None,
            (_, ContainerState::Running) => Some(EventKind::ContainerStarted),
            (Some(ContainerState::Running), ContainerState::Exited | ContainerState::Unknown) => {
                Some(EventKind::ContainerDied)
            }
            (None, ContainerState::Exited) => Some(EventKind::ContainerDied),
            _ => Some(EventKind::ContainerChanged),
        };
        if let Some(kind) = kind {
            events.push(PodLifecycleEvent {
                pod_uid: uid.clone(),
                container_id: c.id.clone(),
                kind,
            });
        }
        next.insert(c.id.clone(), (uid, c.state));
    }
    for (id, (uid, _)) in last.iter() {
        if !next.contains_key(id) {
            events.push(PodLifecycleEvent {
                pod_uid: uid.clone(),
                container_id: id.clone(),
                kind: EventKind::ContainerRemoved,
            });
        }
    }
    *last = next;
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn c(id: &str, state: ContainerState) -> ContainerStatus {
        ContainerStatus::for_test(id, "u", "c", 0, state, UNIX_EPOCH)
    }

    #[test]
    fn events_follow_changes() {
        let mut last = HashMap::new();
        let e = diff(
            &mut last,
            &[
                c("a", ContainerState::Running),
                c("b", ContainerState::Created),
            ],
        );
        assert_eq!(
            e.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![EventKind::ContainerStarted, EventKind::ContainerChanged]
        );
        assert!(diff(
            &mut last,
            &[
                c("a", ContainerState::Running),
                c("b", ContainerState::Created)
            ]
        )
        .is_empty());
        let e = diff(&mut last, &[c("a", ContainerState::Exited)]);
        let kinds: Vec<_> = e
            .iter()
            .map(|e| (e.container_id.as_str(), e.kind))
            .collect();
        assert!(kinds.contains(&("a", EventKind::ContainerDied)));
        assert!(kinds.contains(&("b", EventKind::ContainerRemoved)));
        assert_eq!(e.len(), 2);
    }
}
