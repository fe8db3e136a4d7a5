//! The status manager: keeps each pod's latest v1 PodStatus, stores it (what `edged get`
//! shows), and every `--status-update-frequency` sends the changed ones upstream through
//! MetaClient. A status made while the cloud is away stays marked and the newest one goes up
//! when the link is back.

pub mod generate;

use crate::api::{Pod, PodStatus};
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
    pods: RefCell<HashMap<String, Entry>>,
}

impl StatusManager {
    /// A status manager writing through `meta`.
    pub fn new(meta: MetaClient) -> Rc<Self> {
        Rc::new(StatusManager {
            meta,
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
        if let Err(e) = self.meta.put_pod_status(&ns, &name, &status).await {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot store pod status");
        }
        tracing::debug!(pod = %format!("{ns}/{name}"), phase = %status.phase, "pod status changed");
        self.pods.borrow_mut().insert(
            uid.clone(),
            Entry {
                namespace: ns,
                name,
                status,
                dirty: true,
            },
        );
    }

    /// Forgets a deleted pod: its stored status goes and the cloud is told.
    pub async fn remove(&self, pod: &Pod) {
        self.pods.borrow_mut().remove(&pod.metadata.uid);
        let (ns, name) = (&pod.metadata.namespace, &pod.metadata.name);
        if let Err(e) = self.meta.pod_deleted(ns, name).await {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot remove pod status");
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
            smol::Timer::after(period).await;
            self.flush().await;
        }
    }
}
