//! The status manager: keeps each pod's latest v1 PodStatus, stores it (what `edged get`
//! shows), and every `--status-update-frequency` sends the changed ones upstream through
//! MetaClient. A status made while the cloud is away stays marked and the newest one goes up
//! when the link is back.

pub mod generate;

use crate::api::{Pod, PodStatus};
use crate::clock::{SharedClock, SystemClock};
use crate::metaclient::MetaClient;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

struct Entry {
    namespace: String,
    name: String,
    status: PodStatus,
    /// Not yet accepted upstream.
    dirty: bool,
}

/// The status manager (lives on the agent's local executor).
pub struct StatusManager {
    meta: MetaClient,
    /// What the send period is waited on.
    clock: SharedClock,
    pods: RefCell<HashMap<String, Entry>>,
}

impl StatusManager {
    /// A status manager writing through `meta`.
    pub fn new(meta: MetaClient) -> Rc<Self> {
        Self::with_clock(meta, SystemClock::shared())
    }

    /// A status manager writing through `meta`, its send period waited on `clock`.
    pub fn with_clock(meta: MetaClient, clock: SharedClock) -> Rc<Self> {
        Rc::new(StatusManager {
            meta,
            clock,
            pods: RefCell::new(HashMap::new()),
        })
    }

    /// The latest status of a pod (by uid).
    pub fn get(&self, uid: &str) -> Option<PodStatus> {
        self.pods.borrow().get(uid).map(|e| e.status.clone())
    }

    /// Sets a pod's status; stores it when it changed.
    pub async fn set(&self, pod: &Pod, status: PodStatus) {
        let uid = &pod.metadata.uid;
        let changed = self
            .pods
            .borrow()
            .get(uid)
            .map(|e| e.status != status)
            .unwrap_or(true);
        if !changed {
            return;
        }
        let (ns, name) = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
        // The entry goes in before the store write yields, so a `remove` of an older pod of
        // the same name that runs meanwhile sees this one.
        self.pods.borrow_mut().insert(
            uid.clone(),
            Entry {
                namespace: ns.clone(),
                name: name.clone(),
                status: status.clone(),
                dirty: true,
            },
        );
        if let Err(e) = self.meta.put_pod_status(&ns, &name, &status).await {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot store pod status");
        }
        tracing::debug!(pod = %format!("{ns}/{name}"), phase = %status.phase, "pod status changed");
    }

    /// Forgets a deleted pod: its last status goes up if the cloud has not had it (the
    /// containers terminated: a pod a finalizer keeps in the cloud shows them so, as the
    /// kubelet's status manager sends the terminal status before it deletes), then its stored
    /// status goes and the cloud is told. Statuses are stored by namespace/name: when a newer
    /// pod of the same name (another uid) runs already, its status is stored again rather than
    /// left deleted.
    pub async fn remove(&self, pod: &Pod) {
        let last = self.pods.borrow_mut().remove(&pod.metadata.uid);
        let (ns, name) = (&pod.metadata.namespace, &pod.metadata.name);
        if let Some(e) = last.filter(|e| e.dirty) {
            match self
                .meta
                .send_pod_status(ns, name, &pod.metadata.uid, &e.status)
                .await
            {
                Ok(())
                | Err(crate::metamanager::MetaError::Upstream(
                    crate::metamanager::UpstreamError::Offline,
                )) => {}
                Err(err) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %err, "last pod status not sent before the delete");
                }
            }
        }
        if let Err(e) = self.meta.pod_deleted(ns, name, &pod.metadata.uid).await {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot remove pod status");
        }
        let successor = self
            .pods
            .borrow()
            .values()
            .find(|e| e.namespace == *ns && e.name == *name)
            .map(|e| e.status.clone());
        if let Some(status) = successor {
            if let Err(e) = self.meta.put_pod_status(ns, name, &status).await {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot store pod status");
            }
        }
    }

    /// Sends every changed status upstream once; returns how many were accepted.
    pub async fn flush(&self) -> usize {
        let dirty: Vec<(String, String, String, PodStatus)> = self
            .pods
            .borrow()
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(uid, e)| {
                (
                    uid.clone(),
                    e.namespace.clone(),
                    e.name.clone(),
                    e.status.clone(),
                )
            })
            .collect();
        let mut sent = 0;
        for (uid, ns, name, status) in dirty {
            match self.meta.send_pod_status(&ns, &name, &uid, &status).await {
                Ok(()) => {
                    sent += 1;
                    if let Some(e) = self.pods.borrow_mut().get_mut(&uid) {
                        // Only clear the mark if no newer status came meanwhile.
                        if e.status == status {
                            e.dirty = false;
                        }
                    }
                }
                Err(crate::metamanager::MetaError::Upstream(
                    crate::metamanager::UpstreamError::Offline,
                )) => break,
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "pod status not sent; will retry");
                }
            }
        }
        sent
    }

    /// The upstream loop: every `period`, send what changed.
    pub async fn run(self: Rc<Self>, period: Duration) {
        loop {
            self.clock.sleep(period).await;
            self.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metamanager::{MetaManager, Offline, Store};
    use std::sync::Arc;

    fn pod(uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = "default".into();
        p.metadata.name = "web".into();
        p.metadata.uid = uid.into();
        p
    }

    fn status(phase: &str) -> PodStatus {
        PodStatus {
            phase: phase.into(),
            ..PodStatus::default()
        }
    }

    /// A cloud that takes everything sent to it.
    #[derive(Default)]
    struct Cloud(std::sync::Mutex<Vec<crate::message::Message>>);

    impl crate::metamanager::Upstream for Cloud {
        fn is_online(&self) -> bool {
            true
        }
        fn request(
            &self,
            _: crate::message::Message,
            _: Duration,
        ) -> smol::future::Boxed<Result<crate::message::Message, crate::metamanager::UpstreamError>>
        {
            Box::pin(async { Err(crate::metamanager::UpstreamError::Offline) })
        }
        fn send(
            &self,
            msg: crate::message::Message,
        ) -> smol::future::Boxed<Result<(), crate::metamanager::UpstreamError>> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
            Box::pin(async { Ok(()) })
        }
    }

    /// Changed statuses go up once per period, the newest of them; an unchanged one not again.
    #[test]
    fn statuses_are_sent_once_per_period() {
        use crate::clock::ManualClock;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("meta")).unwrap());
        let (tx, _rx) = async_channel::unbounded();
        let cloud = Arc::new(Cloud::default());
        let client = MetaClient::new(Arc::new(MetaManager::new(store, tx, cloud.clone())));
        let clock = ManualClock::new();
        let sm = StatusManager::with_clock(client, clock.shared());
        let ex = smol::LocalExecutor::new();
        let _task = ex.spawn(sm.clone().run(Duration::from_secs(10)));
        let sent = || -> Vec<String> {
            let msgs = cloud.0.lock().unwrap();
            msgs.iter()
                .map(|m| {
                    let patch: serde_json::Value =
                        serde_json::from_str(m.content.as_str().unwrap_or("")).unwrap_or_default();
                    patch["status"]["phase"].as_str().unwrap_or("").to_string()
                })
                .collect()
        };
        let settle = || {
            for _ in 0..2 {
                while ex.try_tick() {}
                assert_eq!(clock.sleepers(), 1, "the loop waits for its period");
            }
        };
        smol::block_on(ex.run(sm.set(&pod("u1"), status("Pending"))));
        settle();
        clock.advance(Duration::from_secs(9));
        settle();
        assert!(sent().is_empty(), "sent before the period");
        clock.advance(Duration::from_secs(1));
        settle();
        assert_eq!(sent(), ["Pending"]);
        clock.advance(Duration::from_secs(10));
        settle();
        assert_eq!(sent(), ["Pending"], "an unchanged status is not sent again");
        smol::block_on(ex.run(async {
            sm.set(&pod("u1"), status("Running")).await;
            sm.set(&pod("u1"), status("Succeeded")).await;
        }));
        clock.advance(Duration::from_secs(10));
        settle();
        assert_eq!(
            sent(),
            ["Pending", "Succeeded"],
            "the newest of a period's changes"
        );
    }

    #[test]
    fn removing_an_old_pod_keeps_the_status_of_its_successor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("meta")).unwrap());
        let (tx, _rx) = async_channel::unbounded();
        let client = MetaClient::new(Arc::new(MetaManager::new(store, tx, Arc::new(Offline))));
        let sm = StatusManager::new(client.clone());
        smol::block_on(async {
            sm.set(&pod("old"), status("Running")).await;
            // The pod is deleted and made again under its name while the old one stops.
            sm.set(&pod("new"), status("Pending")).await;
            sm.remove(&pod("old")).await;
            let stored = client.pod_status("default", "web").await.unwrap();
            assert_eq!(stored.map(|s| s.phase), Some("Pending".to_string()));
            sm.remove(&pod("new")).await;
            assert_eq!(client.pod_status("default", "web").await.unwrap(), None);
        });
    }
}
