//! The pod manager: pod add, update and delete messages from MetaManager go to queues of
//! their own; queue tasks hand each to the pod's worker (one task per pod: one sync of a pod at
//! a time, pods in parallel). PLEG and prober events and ConfigMap/Secret changes wake the
//! workers of the pods they concern. Housekeeping removes what belongs to no stored pod.

pub mod actions;
pub mod admission;
pub mod ephemeral;
pub mod housekeeping;
pub mod order;
pub mod pull;
pub mod unknown;
mod worker;

use crate::api::{self, Kind, Pod};
use crate::metaclient::MetaClient;
use crate::metamanager::{Change, PodRef};
use crate::objects::ObjectManager;
use crate::pleg::PodLifecycleEvent;
use crate::prober::{ProbeEvent, ProbeManager};
use crate::runtime::{RootfsProvider, Runtime};
use crate::status::StatusManager;
use crate::token::TokenManager;
use crate::volume::{PodObjects, VolumeManager};
use order::Seq;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the pod manager.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node's name (`--node-name`): `spec.nodeName` and the events' host.
    pub node_name: String,
    /// The node's IP (`status.hostIP`, the downward API's `status.hostIP`).
    pub host_ip: String,
    /// `--pod-log-dir`.
    pub log_dir: PathBuf,
    /// A pod with nothing to wait for is synced again after this long.
    pub resync: Duration,
    /// `--max-pods`: pods beyond it are refused (OutOfpods).
    pub max_pods: usize,
    /// `--cluster-dns`, `--cluster-domain`, `--resolv-conf`.
    pub dns: crate::kuberuntime::DnsSettings,
    /// The sysctls pods may set (`--allowed-unsafe-sysctls` and the safe ones).
    pub sysctls: crate::kuberuntime::sysctl::Allowlist,
    /// `--seccomp-profile-root`.
    pub seccomp_root: PathBuf,
}

/// Work for a pod's worker.
#[derive(Debug)]
pub(crate) enum Work {
    /// The pod's spec (new or changed), shared with the manager's handle.
    Update(Rc<Pod>),
    /// The pod is deleted: stop it and release everything.
    Delete,
    /// Something about the pod changed (a container event, a probe result).
    Sync,
    /// A ConfigMap or Secret it refers to changed: refresh volumes.
    ObjectsChanged,
    /// The eviction manager evicts the pod: stop it, release it, report it Failed.
    Evict(Box<crate::eviction::Eviction>),
}

struct Handle {
    /// The pod as its worker has it (one copy for both).
    pod: Rc<Pod>,
    tx: async_channel::Sender<Work>,
    _task: smol::Task<()>,
}

/// Everything a pod worker uses.
pub struct PodManager {
    pub(crate) cfg: Config,
    ex: Rc<smol::LocalExecutor<'static>>,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) images: Arc<dyn RootfsProvider>,
    pub(crate) volumes: Arc<VolumeManager>,
    pub(crate) meta: MetaClient,
    pub(crate) objects: ObjectManager,
    pub(crate) tokens: TokenManager,
    pub(crate) status: Rc<StatusManager>,
    pub(crate) prober: Rc<ProbeManager>,
    /// The node's event recorder (Kubernetes Events sent to the cloud).
    pub(crate) events: crate::events::Recorder,
    /// Pulls missing images from registries (`None`: images come only from archives).
    pub(crate) puller: Option<Rc<pull::Puller>>,
    /// What the workers read the time from and wait on (back-offs, resyncs, grace periods).
    pub(crate) clock: crate::clock::SharedClock,
    pods: RefCell<HashMap<String, Handle>>,
    /// Pods whose delete was sent to their worker and not yet finished (a long step such as
    /// an image pull gives itself up when its pod is here).
    deleting: RefCell<std::collections::HashSet<String>>,
}

/// The parts a pod manager is built from.
pub struct Parts {
    /// The container runtime pods run in.
    pub runtime: Arc<dyn Runtime>,
    /// Where containers' root filesystems come from (the image store).
    pub images: Arc<dyn RootfsProvider>,
    /// Mounts and refreshes the pods' volumes.
    pub volumes: Arc<VolumeManager>,
    /// The door to MetaManager (ConfigMaps, Secrets, statuses).
    pub meta: MetaClient,
    /// Keeps and sends the pods' statuses.
    pub status: Rc<StatusManager>,
    /// Runs the pods' probes.
    pub prober: Rc<ProbeManager>,
    /// Pulls missing images (`None`: images come only from archives).
    pub puller: Option<Rc<pull::Puller>>,
}

impl crate::eviction::Pods for PodManager {
    fn active_pods(&self) -> Vec<Pod> {
        PodManager::active_pods(self)
    }
    fn runtime(&self) -> Arc<dyn Runtime> {
        self.runtime.clone()
    }
    fn volumes(&self) -> Arc<VolumeManager> {
        self.volumes.clone()
    }
    fn evict(&self, e: crate::eviction::Eviction) {
        PodManager::evict(self, e)
    }
}

/// `ns/name` of a pod, for logs.
pub fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace, pod.metadata.name)
}

impl PodManager {
    /// A pod manager spawning its workers on `ex`.
    pub fn new(cfg: Config, ex: Rc<smol::LocalExecutor<'static>>, parts: Parts) -> Rc<Self> {
        Self::with_clock(cfg, ex, parts, crate::clock::SystemClock::shared())
    }

    /// A pod manager as [`PodManager::new`] whose workers keep time on `clock`.
    pub fn with_clock(
        cfg: Config,
        ex: Rc<smol::LocalExecutor<'static>>,
        parts: Parts,
        clock: crate::clock::SharedClock,
    ) -> Rc<Self> {
        let events = crate::events::Recorder::new(&cfg.node_name, parts.meta.upstream());
        Rc::new(PodManager {
            cfg,
            ex,
            runtime: parts.runtime,
            images: parts.images,
            volumes: parts.volumes,
            objects: ObjectManager::new(parts.meta.clone()),
            tokens: TokenManager::new(parts.meta.clone()),
            events,
            meta: parts.meta,
            status: parts.status,
            prober: parts.prober,
            puller: parts.puller,
            clock,
            pods: RefCell::new(HashMap::new()),
            deleting: RefCell::new(std::collections::HashSet::new()),
        })
    }

    /// Uids of the pods the manager runs.
    pub fn pod_uids(&self) -> Vec<String> {
        self.pods.borrow().keys().cloned().collect()
    }

    /// The pods that may still run (their status is neither Failed nor Succeeded): those the
    /// eviction manager looks at.
    pub fn active_pods(&self) -> Vec<Pod> {
        self.pods
            .borrow()
            .iter()
            .filter(|(uid, _)| {
                !self
                    .status
                    .get(uid)
                    .is_some_and(|s| s.phase == "Failed" || s.phase == "Succeeded")
            })
            .map(|(_, h)| Pod::clone(&h.pod))
            .collect()
    }

    /// Hands an eviction to the pod's worker.
    pub fn evict(&self, e: crate::eviction::Eviction) {
        if let Some(h) = self.pods.borrow().get(&e.uid) {
            let _ = h.tx.try_send(Work::Evict(Box::new(e)));
        }
    }

    /// Starts workers for every pod in the store (at start: the node's pods come back without
    /// the cloud), but those named in `skip` (`<ns>/<name>`: deleted, the delete not stored).
    pub async fn load_stored(self: &Rc<Self>, skip: &std::collections::HashSet<String>) {
        match self.meta.pods().await {
            Ok(pods) => {
                for v in pods {
                    match decode_pod(&v) {
                        Ok(pod) if skip.contains(&pod_name(&pod)) => {
                            tracing::info!(pod = %pod_name(&pod), "stored pod not started: it is deleted")
                        }
                        Ok(pod) => self.add(pod),
                        Err(e) => tracing::error!(error = %e, "stored pod cannot be run"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read stored pods"),
        }
    }

    /// Splits MetaManager's changes into the add, update and delete queues, and runs a task
    /// for each queue; ConfigMap and Secret changes are applied as they come. A pod's changes
    /// take effect in the order MetaManager handed them on, whichever queue task runs first
    /// (see [`order`]). Returns when `from_meta` closes.
    pub async fn run(self: Rc<Self>, from_meta: async_channel::Receiver<Change>) {
        let order = Rc::new(RefCell::new(order::Order::default()));
        let (add_tx, add_rx) = async_channel::unbounded::<(Seq, Pod)>();
        let (upd_tx, upd_rx) = async_channel::unbounded::<(Seq, Pod)>();
        let (del_tx, del_rx) = async_channel::unbounded::<(Seq, PodRef)>();
        let drained = {
            let (a, u, d) = (add_tx.clone(), upd_tx.clone(), del_tx.clone());
            Rc::new(move || a.is_empty() && u.is_empty() && d.is_empty())
        };
        let queue = |rx: async_channel::Receiver<(Seq, Pod)>, f: fn(&Rc<PodManager>, Pod)| {
            let (pm, order, drained) = (self.clone(), order.clone(), drained.clone());
            self.ex.spawn(async move {
                while let Ok((seq, pod)) = rx.recv().await {
                    if order.borrow_mut().admit(&pod_name(&pod), seq) {
                        f(&pm, pod);
                    } else {
                        tracing::debug!(pod = %pod_name(&pod), "change superseded by a newer one");
                    }
                    if drained() {
                        order.borrow_mut().drained();
                    }
                }
            })
        };
        let _add = queue(add_rx, |pm, pod| pm.add(pod));
        let _upd = queue(upd_rx, |pm, pod| pm.update(pod));
        let _del = {
            let (pm, order, drained) = (self.clone(), order.clone(), drained.clone());
            self.ex.spawn(async move {
                while let Ok((seq, pod)) = del_rx.recv().await {
                    if order.borrow_mut().admit(&pod.key(), seq) {
                        pm.delete(&pod);
                    } else {
                        tracing::debug!(pod = %pod.key(), "delete superseded by a newer change");
                    }
                    if drained() {
                        order.borrow_mut().drained();
                    }
                }
            })
        };
        let mut seq: Seq = 0;
        while let Ok(change) = from_meta.recv().await {
            seq += 1;
            match change {
                Change::PodAdded(pod) => {
                    let _ = add_tx.send((seq, *pod)).await;
                }
                Change::PodUpdated(pod) => {
                    let _ = upd_tx.send((seq, *pod)).await;
                }
                Change::PodDeleted(pod) => {
                    let _ = del_tx.send((seq, pod)).await;
                }
                Change::ObjectChanged {
                    kind,
                    namespace,
                    name,
                } => self.object_changed(kind, &namespace, &name),
            }
        }
    }

    /// A new pod (or one seen again): start its worker.
    pub fn add(self: &Rc<Self>, pod: Pod) {
        let uid = pod.metadata.uid.clone();
        if let Some(h) = self.pods.borrow_mut().get_mut(&uid) {
            let pod = Rc::new(pod);
            h.pod = pod.clone();
            let _ = h.tx.try_send(Work::Update(pod));
            return;
        }
        // A pod replaced under the same name has a new uid: the old one goes (also when the
        // old one's delete was superseded by this add, see [`order`]).
        let replaced: Vec<PodRef> = self
            .pods
            .borrow()
            .iter()
            .filter(|(u, h)| {
                h.pod.metadata.namespace == pod.metadata.namespace
                    && h.pod.metadata.name == pod.metadata.name
                    && !self.deleting.borrow().contains(*u)
            })
            .map(|(_, h)| PodRef::from(&*h.pod))
            .collect();
        for old in replaced {
            self.delete(&old);
        }
        // The kubelet's admission: a pod the node cannot run as asked fails here.
        let node = admission::Node {
            max_pods: self.cfg.max_pods,
            pods: self.pods.borrow().len(),
            sysctls: &self.cfg.sysctls,
            apparmor: crate::runtime::apparmor::host_enabled(),
        };
        if let Err(r) = admission::admit(&pod, &node) {
            if r.already_recorded(self.status.get(&uid).as_ref()) {
                tracing::debug!(pod = %pod_name(&pod), reason = r.reason, "pod refused at admission again");
                return;
            }
            tracing::warn!(pod = %pod_name(&pod), reason = r.reason, message = %r.message, "pod refused at admission");
            let status = r.status();
            let sm = self.status.clone();
            self.ex
                .spawn(async move { sm.set(&pod, status).await })
                .detach();
            return;
        }
        tracing::info!(pod = %pod_name(&pod), uid = %uid, "pod added");
        let (tx, rx) = async_channel::unbounded();
        let pod = Rc::new(pod);
        let task = self.ex.spawn(worker::run(self.clone(), pod.clone(), rx));
        self.pods.borrow_mut().insert(
            uid,
            Handle {
                pod,
                tx,
                _task: task,
            },
        );
    }

    /// A changed pod: hand the new spec to its worker.
    pub fn update(self: &Rc<Self>, pod: Pod) {
        if self.pods.borrow().contains_key(&pod.metadata.uid) {
            tracing::info!(pod = %pod_name(&pod), "pod updated");
        }
        self.add(pod);
    }

    /// A deleted pod (by uid, else by namespace/name): its worker stops it and then ends.
    pub fn delete(&self, pod: &PodRef) {
        let found = pod
            .uid
            .as_ref()
            .and_then(|uid| self.pods.borrow().get(uid).map(|h| h.tx.clone()));
        let found = found.or_else(|| {
            // A delete may name the pod only: find it by namespace/name.
            self.pods
                .borrow()
                .values()
                .find(|h| {
                    h.pod.metadata.namespace == pod.namespace && h.pod.metadata.name == pod.name
                })
                .map(|h| h.tx.clone())
        });
        match found {
            Some(tx) => {
                tracing::info!(pod = %pod.key(), "pod deleted");
                let uid = self
                    .pods
                    .borrow()
                    .iter()
                    .find(|(_, h)| h.tx.same_channel(&tx))
                    .map(|(u, _)| u.clone());
                if let Some(uid) = uid {
                    self.deleting.borrow_mut().insert(uid);
                }
                let _ = tx.try_send(Work::Delete);
            }
            None => tracing::debug!(pod = %pod.key(), "delete of a pod not running here"),
        }
    }

    /// A pod written again after its delete runs on: its delete is no longer pending.
    pub(crate) fn clear_deleted(&self, uid: &str) {
        self.deleting.borrow_mut().remove(uid);
    }

    /// Whether pod `uid`'s delete has been sent to its worker.
    pub(crate) fn is_deleted(&self, uid: &str) -> bool {
        self.deleting.borrow().contains(uid)
    }

    /// Called by a worker when its pod is gone.
    pub(crate) fn forget(&self, uid: &str) {
        self.deleting.borrow_mut().remove(uid);
        self.events.forget_pod(uid);
        if let Some(h) = self.pods.borrow_mut().remove(uid) {
            // The task is the caller itself: let it finish rather than cancel it.
            h._task.detach();
        }
    }

    /// A container event from PLEG.
    pub fn on_lifecycle_event(&self, ev: &PodLifecycleEvent) {
        if let Some(h) = self.pods.borrow().get(&ev.pod_uid) {
            let _ = h.tx.try_send(Work::Sync);
        }
    }

    /// A probe result change.
    pub fn on_probe_event(&self, ev: &ProbeEvent) {
        if let Some(h) = self.pods.borrow().get(&ev.pod_uid) {
            let kind = match ev.kind {
                crate::prober::ProbeKind::Liveness => "Liveness",
                crate::prober::ProbeKind::Readiness => "Readiness",
                crate::prober::ProbeKind::Startup => "Startup",
            };
            if let Some(w) = &ev.warning {
                self.events.record(crate::events::PodEvent::new(
                    &h.pod,
                    Some(&ev.container_name),
                    crate::events::EventType::Warning,
                    "ProbeWarning",
                    format!("{kind} probe warning: {w}"),
                ));
                return;
            }
            // A pod being stopped: its worker is busy with the stop, so a readiness that
            // falls is put in the status at once (endpoints must stop sending it traffic).
            let stopping =
                h.pod.metadata.deletion_timestamp.is_some() || self.is_deleted(&ev.pod_uid);
            if stopping && !ev.success && ev.kind == crate::prober::ProbeKind::Readiness {
                if let Some(mut status) = self.status.get(&ev.pod_uid) {
                    if crate::status::generate::mark_unready(&mut status, &ev.container_id) {
                        tracing::info!(pod = %pod_name(&h.pod), container = %ev.container_name, "not ready while stopping");
                        let (sm, pod) = (self.status.clone(), h.pod.clone());
                        self.ex
                            .spawn(async move { sm.set(&pod, status).await })
                            .detach();
                    }
                }
            }
            if !ev.success {
                self.events.record(crate::events::PodEvent::new(
                    &h.pod,
                    Some(&ev.container_name),
                    crate::events::EventType::Warning,
                    "Unhealthy",
                    format!(
                        "{kind} probe failed: {}",
                        ev.message.as_deref().unwrap_or("")
                    ),
                ));
            }
            let _ = h.tx.try_send(Work::Sync);
        }
    }

    /// A ConfigMap or Secret changed: drop it from the cache and wake the pods that use it.
    pub fn object_changed(&self, kind: Kind, namespace: &str, name: &str) {
        match kind {
            Kind::ConfigMap => self.objects.config_maps.invalidate(namespace, name),
            Kind::Secret => self.objects.secrets.invalidate(namespace, name),
            Kind::Pod => return,
        }
        for h in self.pods.borrow().values() {
            let uses = h.pod.metadata.namespace == namespace
                && PodObjects::references(&h.pod)
                    .iter()
                    .any(|r| r.kind == kind && r.name == name);
            if uses {
                let _ = h.tx.try_send(Work::ObjectsChanged);
            }
        }
    }

    /// Removes sandboxes, containers, volume and log directories that belong to no pod this
    /// manager runs. Nothing of a known pod is touched, also of one added meanwhile (see
    /// [`housekeeping`]).
    pub async fn housekeeping(&self) {
        let (rt, vols, log_dir) = (
            self.runtime.clone(),
            self.volumes.clone(),
            self.cfg.log_dir.clone(),
        );
        let found = smol::unblock(move || housekeeping::list(&*rt, &vols, &log_dir)).await;
        // The pods known now, after the listing: a pod with anything listed is among them.
        let known: std::collections::HashSet<String> = self.pod_uids().into_iter().collect();
        let orphans = housekeeping::orphans(found, &known);
        if orphans != housekeeping::Found::default() {
            let (rt, vols, log_dir) = (
                self.runtime.clone(),
                self.volumes.clone(),
                self.cfg.log_dir.clone(),
            );
            let removed =
                smol::unblock(move || housekeeping::remove(&*rt, &vols, &log_dir, &orphans)).await;
            for r in removed {
                tracing::info!(what = %r, "orphan removed");
            }
        }
        // Tokens of pods deleted while the agent was down (the pods known now: one added
        // meanwhile keeps its token).
        let now_known = self.pod_uids().into_iter().collect();
        self.tokens.retain_known(now_known).await;
    }

    /// Runs housekeeping every `period`.
    pub async fn run_housekeeping(self: Rc<Self>, period: Duration) {
        loop {
            smol::Timer::after(period).await;
            self.housekeeping().await;
        }
    }
}

/// Decodes a pod from a message or store row, naming what is wrong: see [`api::decode_pod`]
/// (every field that becomes a path is checked there).
pub fn decode_pod(v: &serde_json::Value) -> Result<Pod, api::ObjectError> {
    api::decode_pod(v)
}
