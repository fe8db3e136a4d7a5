//! MetaManager: the local store of pods, ConfigMaps, Secrets and statuses, and the message
//! handling around it.
//!
//! Sources (the manifest directory, the cloud link) hand it beehive messages. An insert, update
//! or delete is stored first, then handed to edged, then acknowledged, so an ACKed object is
//! never lost; handling is idempotent because the cloud resends unacked messages. A query is
//! answered from the store; a ConfigMap or Secret missing there is asked of the cloud through
//! [`Upstream`], stored, handed on and ACKed before it is returned.
//!
//! What is handed on is a typed [`Change`], one channel, in the order the store took them.
//!
//! The cluster's Services are listed from the cloud when pods need them ([`services`]), and
//! the last list is stored for when the cloud is away. A pod whose fields CloudCore's relay
//! dropped is read back whole before it is stored ([`relay`]). Both ask CloudCore's
//! DynamicController ([`application`]).

pub mod application;
pub mod change;
pub mod check;
pub mod relay;
pub mod services;
pub mod store;

pub use change::{Change, PodRef};
pub use store::{key, Store, StoreError, Table, Write, EXIT_STORE_DAMAGED};

use crate::message::{module, op, Message, Resource};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a query to the cloud may take (KubeEdge's value).
pub const REMOTE_QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A MetaManager failure: the message or object it concerned, and why.
#[derive(Debug)]
pub enum MetaError {
    /// The store failed.
    Store(StoreError),
    /// A message that cannot be acted on (names the resource and the field).
    BadMessage {
        /// The message's `route.resource`, as it came.
        resource: String,
        /// What is wrong with it, naming the field.
        reason: String,
    },
    /// The cloud did not answer or answered an error.
    Upstream(UpstreamError),
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::Store(e) => write!(f, "{e}"),
            MetaError::BadMessage { resource, reason } => {
                write!(f, "message for `{resource}`: {reason}")
            }
            MetaError::Upstream(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for MetaError {}

impl From<StoreError> for MetaError {
    fn from(e: StoreError) -> Self {
        MetaError::Store(e)
    }
}

/// The cloud link failed or is away.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamError {
    /// No link to the cloud.
    Offline,
    /// No answer within the timeout.
    Timeout(Duration),
    /// The cloud answered with an error (`ErrStatus` reason and message).
    Status {
        /// The HTTP status code (`ErrStatus.code`), 0 when absent.
        code: i64,
        /// `ErrStatus.reason` (`NotFound`, `Forbidden`, ...).
        reason: String,
        /// `ErrStatus.message`.
        message: String,
    },
    /// The link broke.
    Link(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Offline => write!(f, "the cloud is not connected"),
            UpstreamError::Timeout(d) => {
                write!(f, "the cloud did not answer within {}s", d.as_secs())
            }
            UpstreamError::Status {
                code,
                reason,
                message,
            } => {
                write!(f, "the cloud answered {code} {reason}: {message}")
            }
            UpstreamError::Link(e) => write!(f, "cloud link: {e}"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// The way to the cloud (the cloud link implements it; [`Offline`] when there is none).
pub trait Upstream: Send + Sync {
    /// Whether a link is up now.
    fn is_online(&self) -> bool;
    /// Whether there is a cloud at all (one that is away now may know objects the store
    /// lacks, so a miss then is not an answer).
    fn has_cloud(&self) -> bool {
        true
    }
    /// Sends `msg` and waits up to `timeout` for the message whose `parent_msg_id` is its id.
    fn request(
        &self,
        msg: Message,
        timeout: Duration,
    ) -> smol::future::Boxed<Result<Message, UpstreamError>>;
    /// Sends `msg` without waiting for an answer; kept for later when offline if `keep` says so.
    fn send(&self, msg: Message) -> smol::future::Boxed<Result<(), UpstreamError>>;
}

/// No cloud: every query is answered by the store alone.
pub struct Offline;

impl Upstream for Offline {
    fn is_online(&self) -> bool {
        false
    }
    fn has_cloud(&self) -> bool {
        false
    }
    fn request(
        &self,
        _: Message,
        _: Duration,
    ) -> smol::future::Boxed<Result<Message, UpstreamError>> {
        Box::pin(async { Err(UpstreamError::Offline) })
    }
    fn send(&self, _: Message) -> smol::future::Boxed<Result<(), UpstreamError>> {
        Box::pin(async { Err(UpstreamError::Offline) })
    }
}

/// The MetaManager: store, hand to edged, acknowledge.
pub struct MetaManager {
    store: Arc<Store>,
    to_edged: async_channel::Sender<Change>,
    upstream: Arc<dyn Upstream>,
    /// The list of Services: one request at a time, the back-off of an unanswered one.
    services: services::Lister,
    /// The back-off of reading back pods whose fields the relay dropped ([`relay`]).
    read_back: ReadBack,
}

/// When pods may be read back through the DynamicController (handled one message at a time).
#[derive(Default)]
struct ReadBack(std::sync::Mutex<application::AskState>);

impl ReadBack {
    /// The state, also after a panic elsewhere (it is always consistent).
    fn state(&self) -> std::sync::MutexGuard<'_, application::AskState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MetaManager {
    /// A MetaManager over `store` that hands object changes to `to_edged`.
    pub fn new(
        store: Arc<Store>,
        to_edged: async_channel::Sender<Change>,
        upstream: Arc<dyn Upstream>,
    ) -> Self {
        MetaManager {
            store,
            to_edged,
            upstream,
            services: services::Lister::default(),
            read_back: ReadBack::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The way to the cloud.
    pub fn upstream(&self) -> &Arc<dyn Upstream> {
        &self.upstream
    }

    /// Handles a message from a source. Returns the ACK to send back (for insert, update and
    /// delete: `response` with content `"OK"`; for a query: the object or a NotFound status).
    pub async fn handle(&self, msg: Message) -> Result<Message, MetaError> {
        let resource =
            Resource::parse(&msg.route.resource).ok_or_else(|| MetaError::BadMessage {
                resource: msg.route.resource.clone(),
                reason: "route.resource is not `<namespace>/<type>/<name>`".into(),
            })?;
        let table =
            Table::from_resource_type(&resource.kind).ok_or_else(|| MetaError::BadMessage {
                resource: msg.route.resource.clone(),
                reason: format!(
                    "route.resource type `{}` is not one MetaManager stores",
                    resource.kind
                ),
            })?;
        if resource.name.is_empty() {
            return Err(MetaError::BadMessage {
                resource: msg.route.resource.clone(),
                reason: "route.resource names no object".into(),
            });
        }
        let row = key(&resource.namespace, &resource.name);
        match msg.route.operation.as_str() {
            op::INSERT | op::UPDATE => {
                if !msg.content.is_object() {
                    return Err(MetaError::BadMessage {
                        resource: msg.route.resource.clone(),
                        reason: "content must be the object (a JSON object)".into(),
                    });
                }
                let mut msg = msg;
                if table == Table::Pod {
                    // Fields that become host paths are checked before anything is stored.
                    let check = |content: &serde_json::Value| {
                        crate::api::decode_pod(content).map_err(|e| MetaError::BadMessage {
                            resource: msg.route.resource.clone(),
                            reason: e.to_string(),
                        })
                    };
                    check(&msg.content)?;
                    if msg.route.source != module::MANIFEST {
                        if let Some(whole) = self.read_back_dropped(&resource, &msg.content).await {
                            check(&whole)?;
                            msg.content = whole;
                        }
                    }
                }
                let store = self.store.clone();
                let value = msg.content.clone();
                let same = smol::unblock(move || -> Result<bool, StoreError> {
                    let same = store.get(table, &row)?.as_ref() == Some(&value);
                    if !same {
                        store.put(table, &row, &value)?;
                    }
                    Ok(same)
                })
                .await?;
                // A resend of what is stored already changes nothing: hand nothing on.
                if !same {
                    self.hand_on(msg.clone()).await;
                }
                Ok(msg.response(serde_json::json!("OK")))
            }
            op::DELETE => {
                let store = self.store.clone();
                match smol::unblock(move || store.delete(table, &row)).await {
                    Ok(found) => {
                        if found {
                            self.hand_on(msg.clone()).await;
                        }
                        Ok(msg.response(serde_json::json!("OK")))
                    }
                    Err(e) => {
                        // A delete must not wait for the store (a full disk): edged applies it
                        // now; the source tries the store write again (the cloud resends a delete
                        // it has no ACK for, the manifest source retries next pass).
                        tracing::warn!(resource = %msg.route.resource, error = %e, "delete applied before it is stored");
                        self.hand_on(msg.clone()).await;
                        Err(e.into())
                    }
                }
            }
            op::QUERY => {
                let value = match self.query(table, &resource).await {
                    // Offline, the store answers every query.
                    Err(MetaError::Upstream(UpstreamError::Offline)) => None,
                    other => other?,
                };
                Ok(match value {
                    Some(v) => msg.response(v),
                    None => msg.response(not_found(&resource)),
                })
            }
            other => Err(MetaError::BadMessage {
                resource: msg.route.resource.clone(),
                reason: format!("route.operation `{other}` is not insert, update, delete or query"),
            }),
        }
    }

    /// Reads an object: the store first; a ConfigMap or Secret missing there is asked of the
    /// cloud, stored, and handed on before it is returned. `Ok(None)`: it exists nowhere known;
    /// `Err(Upstream(Offline))`: not stored, and the cloud that may have it is away.
    pub async fn query(
        &self,
        table: Table,
        resource: &Resource,
    ) -> Result<Option<serde_json::Value>, MetaError> {
        let store = self.store.clone();
        let row = key(&resource.namespace, &resource.name);
        let r = row.clone();
        if let Some(v) = smol::unblock(move || store.get(table, &r)).await? {
            return Ok(Some(v));
        }
        if !matches!(table, Table::ConfigMap | Table::Secret) || !self.upstream.has_cloud() {
            return Ok(None);
        }
        if !self.upstream.is_online() {
            // Not "not found": callers must not take this miss for an answer (and cache it).
            return Err(MetaError::Upstream(UpstreamError::Offline));
        }
        let ask = Message::new(module::EDGED, module::META, op::QUERY, resource.to_string());
        let answer = self
            .upstream
            .request(ask, REMOTE_QUERY_TIMEOUT)
            .await
            .map_err(MetaError::Upstream)?;
        if answer.content.get("ErrStatus").is_some() || !answer.content.is_object() {
            return Ok(None);
        }
        let store = self.store.clone();
        let value = answer.content.clone();
        smol::unblock(move || store.put(table, &row, &value)).await?;
        let mut update = Message::new(
            module::METAMANAGER,
            module::META,
            op::UPDATE,
            resource.to_string(),
        );
        update.content = answer.content.clone();
        self.hand_on(update).await;
        // As for any object the cloud sends: stored, handed on, then ACKed.
        let _ = self
            .upstream
            .send(answer.response(serde_json::json!("OK")))
            .await;
        Ok(Some(answer.content))
    }

    /// Asks the cloud for a service-account token as KubeEdge's edge does: `query
    /// <namespace>/serviceaccounttoken/<service account>` with the TokenRequest as content.
    /// CloudCore calls CreateToken and answers with the TokenRequest itself, its `status`
    /// filled; a refusal is `{"ErrStatus":{...}}` ([`UpstreamError::Status`]). The answer is
    /// ACKed as every object from the cloud is, and returned as it came (the caller stores
    /// it). With no cloud at all, or the cloud away: [`UpstreamError::Offline`].
    pub async fn request_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, MetaError> {
        if !self.upstream.has_cloud() || !self.upstream.is_online() {
            return Err(MetaError::Upstream(UpstreamError::Offline));
        }
        let resource = Resource::new(namespace, "serviceaccounttoken", service_account);
        let ask = Message::new(module::EDGED, module::META, op::QUERY, resource.to_string())
            .with_content(request);
        let answer = self
            .upstream
            .request(ask, REMOTE_QUERY_TIMEOUT)
            .await
            .map_err(MetaError::Upstream)?;
        let mut content = answer.content.clone();
        // Tolerate the `{"Object":...,"Err":...}` envelope other queries are answered with.
        if content.get("Object").is_some() && content.get("Err").is_some() {
            content = match content.get("Err").filter(|e| !e.is_null()) {
                Some(err) => err.clone(),
                None => content["Object"].clone(),
            };
        }
        if let Some(status) = content.get("ErrStatus") {
            let text = |k: &str| status.get(k).and_then(|v| v.as_str()).unwrap_or("");
            return Err(MetaError::Upstream(UpstreamError::Status {
                code: status.get("code").and_then(|c| c.as_i64()).unwrap_or(0),
                reason: text("reason").to_string(),
                message: text("message").to_string(),
            }));
        }
        if !content.is_object() {
            return Err(MetaError::BadMessage {
                resource: resource.to_string(),
                reason: "the answer's content is not a TokenRequest (a JSON object)".into(),
            });
        }
        let _ = self
            .upstream
            .send(answer.response(serde_json::json!("OK")))
            .await;
        Ok(content)
    }

    /// The pod `relayed` read back whole through the DynamicController when CloudCore's relay
    /// dropped fields its managedFields name ([`relay`]), or with them copied from the pod as
    /// stored when that was read back before and this one cannot be (no answer, another spec
    /// there now) or need not be (only its status changed, it is being deleted). `None`: nothing
    /// dropped, or nothing to restore them from, and the pod runs as relayed. An unanswered
    /// read warns once and keeps the cloud from being asked for
    /// [`application::UNANSWERED_BACKOFF`].
    async fn read_back_dropped(
        &self,
        resource: &Resource,
        relayed: &serde_json::Value,
    ) -> Option<serde_json::Value> {
        let dropped = relay::dropped_fields(relayed);
        if dropped.is_empty() || !self.upstream.has_cloud() || !self.upstream.is_online() {
            return None;
        }
        let pod = format!("{}/{}", resource.namespace, resource.name);
        let fields = dropped.join(",");
        // Read back before, and only what the relay shows changed since (its status): no need
        // to ask again.
        let store = self.store.clone();
        let row = key(&resource.namespace, &resource.name);
        let earlier = smol::unblock(move || store.get(Table::Pod, &row))
            .await
            .ok()
            .flatten();
        let deleting = relayed.pointer("/metadata/deletionTimestamp").is_some();
        if let Some(earlier) = &earlier {
            let kept = if deleting {
                relay::graft(relayed, earlier)
            } else {
                relay::reuse(relayed, earlier)
            };
            if let Some(whole) = kept {
                tracing::debug!(%pod, %fields, "pod fields the cloud dropped taken from the pod read back before");
                return Some(whole);
            }
        }
        // Unread, a pod keeps what was read back before (the fields CloudCore drops are
        // immutable in a pod's spec) rather than lose it midway.
        let fallback = || earlier.as_ref().and_then(|e| relay::graft(relayed, e));
        if deleting {
            // Going away, and maybe gone from the API server already: not read back.
            return fallback();
        }
        if !self.read_back.state().may_ask(Instant::now()) {
            tracing::debug!(%pod, %fields, "pod fields the cloud dropped not read back: the DynamicController did not answer lately");
            return fallback();
        }
        match self.read_whole(resource, &pod, &fields, relayed).await {
            Some(whole) => Some(whole),
            None => fallback(),
        }
    }

    /// Reads the pod back through the DynamicController (see [`Self::read_back_dropped`]); what
    /// went wrong is logged here.
    async fn read_whole(
        &self,
        resource: &Resource,
        pod: &str,
        fields: &str,
        relayed: &serde_json::Value,
    ) -> Option<serde_json::Value> {
        let node = relayed
            .pointer("/spec/nodeName")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let request = relay::get_request(node, &resource.namespace, &resource.name);
        let answer = match self
            .upstream
            .request(request, application::ANSWER_TIMEOUT)
            .await
        {
            Ok(a) => a,
            Err(UpstreamError::Timeout(d)) => {
                if self.read_back.state().unanswered(Instant::now()) {
                    tracing::warn!(%pod, %fields, timeout_s = d.as_secs(),
                        retry_in_s = application::UNANSWERED_BACKOFF.as_secs(),
                        "the cloud dropped fields of a pod (CloudCore's Kubernetes API is older than the API server's) and does not answer reads of pods: enable modules.dynamicController in cloudcore.yaml; pods run without those fields meanwhile");
                }
                return None;
            }
            Err(e) => {
                tracing::warn!(%pod, %fields, error = %e, "pod fields the cloud dropped not read back");
                return None;
            }
        };
        self.read_back.state().answered();
        let whole = relay::parse_answer(&answer.content)
            .map_err(|e| e.to_string())
            .and_then(|fetched| relay::restore(relayed, &fetched));
        match whole {
            Ok(whole) => {
                let still = relay::dropped_fields(&whole);
                tracing::info!(%pod, %fields, missing_still = %still.join(","),
                    "pod fields the cloud dropped were restored from the API server");
                Some(whole)
            }
            Err(why) => {
                tracing::warn!(%pod, %fields, reason = %why, "pod fields the cloud dropped not read back");
                None
            }
        }
    }

    /// The cluster's Services for `node`'s pods: asked of the cloud ([`Self::list_services`]),
    /// else (no cloud, the cloud away or not answering, a refusal) the list stored from the
    /// last answer. What went wrong with the cloud is logged here; `Err` only when the store
    /// cannot be read.
    pub async fn services(&self, node: &str) -> Result<Vec<crate::api::Service>, MetaError> {
        match self.list_services(node).await {
            Ok(Some(list)) => return Ok(list),
            // Another caller just asked, or the cloud is left alone for a while: the store.
            Ok(None) => {}
            Err(MetaError::Upstream(UpstreamError::Offline)) => {}
            // Logged where it is noticed, once.
            Err(MetaError::Upstream(UpstreamError::Timeout(_))) => {}
            Err(MetaError::Upstream(e @ UpstreamError::Link(_))) => {
                tracing::debug!(error = %e, "services not listed; using the stored list")
            }
            Err(e) => {
                tracing::warn!(error = %e, "services not listed; using the stored list")
            }
        }
        self.stored_services().await
    }

    /// Asks the cloud for every Service (see [`services`]): `Ok(Some)` the list, stored in one
    /// transaction (rows no longer listed removed); `Ok(None)` not asked (another caller's
    /// request just ended, or the cloud left alone after an unanswered one); no cloud or the
    /// cloud away: [`UpstreamError::Offline`]; unanswered within [`services::LIST_TIMEOUT`]:
    /// [`UpstreamError::Timeout`] (warned once); refused: [`UpstreamError::Status`].
    pub async fn list_services(
        &self,
        node: &str,
    ) -> Result<Option<Vec<crate::api::Service>>, MetaError> {
        if !self.upstream.has_cloud() || !self.upstream.is_online() {
            return Err(MetaError::Upstream(UpstreamError::Offline));
        }
        let seen = self.services.asked();
        let _one = self.services.asking.lock().await;
        if self.services.asked() != seen || !self.services.state().may_ask(Instant::now()) {
            return Ok(None);
        }
        let answer = self
            .upstream
            .request(services::list_request(node), services::LIST_TIMEOUT)
            .await;
        self.services.note_asked();
        let answer = match answer {
            Ok(a) => a,
            Err(UpstreamError::Timeout(d)) => {
                if self.services.state().unanswered(Instant::now()) {
                    tracing::warn!(
                        timeout_s = d.as_secs(),
                        retry_in_s = services::UNANSWERED_BACKOFF.as_secs(),
                        "the cloud does not answer lists of services: enable modules.dynamicController in cloudcore.yaml for service environment variables; pods get the stored list meanwhile"
                    );
                } else {
                    tracing::debug!("the list of services went unanswered again");
                }
                return Err(MetaError::Upstream(UpstreamError::Timeout(d)));
            }
            Err(e) => return Err(MetaError::Upstream(e)),
        };
        self.services.state().answered();
        let list = services::parse_answer(&answer.content).map_err(|e| match e {
            services::AnswerError::Rejected {
                code,
                asked: _,
                reason,
                message,
            } => MetaError::Upstream(UpstreamError::Status {
                code,
                reason,
                message,
            }),
            services::AnswerError::Malformed(reason) => MetaError::BadMessage {
                resource: format!("list {}", services::SERVICES_KEY),
                reason,
            },
        })?;
        for why in &list.skipped {
            tracing::warn!(item = %why, "a listed service is left out");
        }
        let store = self.store.clone();
        let listed = list.services.clone();
        let stored = smol::unblock(move || -> Result<usize, StoreError> {
            let writes = services::replace_writes(&store.list(Table::Service)?, &listed);
            if !writes.is_empty() {
                store.apply(&writes)?;
            }
            Ok(writes.len())
        })
        .await;
        match stored {
            Ok(n) => {
                tracing::debug!(
                    services = list.services.len(),
                    changed = n,
                    "services listed"
                )
            }
            // The list is good for now; the store keeps the older one.
            Err(e) => tracing::warn!(error = %e, "the listed services are not stored"),
        }
        Ok(Some(list.services))
    }

    /// The Services stored from the last answer (a row that does not read is left out).
    pub async fn stored_services(&self) -> Result<Vec<crate::api::Service>, MetaError> {
        let store = self.store.clone();
        let rows = smol::unblock(move || store.list(Table::Service)).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| {
                crate::api::decode(&format!("stored Service {k}"), &v)
                    .map_err(|e| tracing::warn!(error = %e, "a stored service is left out"))
                    .ok()
            })
            .collect())
    }

    /// Hands a stored change on to the pod manager, as a typed [`Change`] (only pods,
    /// ConfigMaps and Secrets concern it).
    async fn hand_on(&self, msg: Message) {
        let change = match Change::from_message(&msg) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                // Pods are checked before they are stored; this is a stored row gone bad.
                tracing::error!(error = %e, "stored change not handed on");
                return;
            }
        };
        if self.to_edged.send(change).await.is_err() {
            tracing::debug!("edged is gone; change kept in the store only");
        }
    }
}

/// The `ErrStatus` content KubeEdge answers for a missing object.
pub fn not_found(resource: &Resource) -> serde_json::Value {
    serde_json::json!({"ErrStatus": {
        "metadata": {},
        "status": "Failure",
        "message": format!("{} \"{}\" not found", resource.kind, resource.name),
        "reason": "NotFound",
        "details": {"name": resource.name, "kind": resource.kind},
        "code": 404
    }})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn setup() -> (
        tempfile::TempDir,
        MetaManager,
        async_channel::Receiver<Change>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (tx, rx) = async_channel::unbounded();
        (dir, MetaManager::new(store, tx, Arc::new(Offline)), rx)
    }

    #[test]
    fn insert_is_stored_handed_on_and_acked_once() {
        let (_d, mm, rx) = setup();
        smol::block_on(async {
            let m = Message::new(
                "edgecontroller",
                "resource",
                op::INSERT,
                "default/configmap/c",
            )
            .with_content(json!({"kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"v"}}));
            let ack = mm.handle(m.clone()).await.unwrap();
            assert_eq!(ack.header.parent_id, m.header.id);
            assert_eq!(ack.content, json!("OK"));
            assert_eq!(
                rx.try_recv().unwrap().to_string(),
                "change default/configmap/c"
            );
            // The resend (same msg_id) is ACKed again and changes nothing.
            mm.handle(m).await.unwrap();
            assert!(rx.try_recv().is_err());
            let q = Message::new("edged", "meta", op::QUERY, "default/configmap/c");
            assert_eq!(mm.handle(q).await.unwrap().content["data"]["k"], "v");
        });
    }

    #[test]
    fn a_delete_the_store_cannot_write_is_handed_on_and_not_acked() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path())
            .unwrap()
            .put(Table::Pod, "default/web", &json!({"kind": "Pod"}))
            .unwrap();
        // A store that refuses every write stands for a full disk.
        let store = Arc::new(Store::open_read_only(dir.path()).unwrap());
        let (tx, rx) = async_channel::unbounded();
        let mm = MetaManager::new(store, tx, Arc::new(Offline));
        smol::block_on(async {
            let del = Message::new("edgecontroller", "resource", op::DELETE, "default/pod/web")
                .with_content(json!({"kind": "Pod", "metadata": {"name": "web"}}));
            assert!(
                mm.handle(del).await.is_err(),
                "a delete that was not stored was acked"
            );
            let handed = rx.try_recv().expect("the delete did not reach edged");
            assert_eq!(handed.to_string(), "delete default/pod/web");
        });
    }

    /// A cloud that is away.
    struct Away;

    impl Upstream for Away {
        fn is_online(&self) -> bool {
            false
        }
        fn request(
            &self,
            _: Message,
            _: Duration,
        ) -> smol::future::Boxed<Result<Message, UpstreamError>> {
            Box::pin(async { Err(UpstreamError::Offline) })
        }
        fn send(&self, _: Message) -> smol::future::Boxed<Result<(), UpstreamError>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn a_miss_while_the_cloud_is_away_is_not_an_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (tx, _rx) = async_channel::unbounded();
        let mm = MetaManager::new(store, tx, Arc::new(Away));
        smol::block_on(async {
            let r = Resource::new("default", "configmap", "c");
            let e = mm.query(Table::ConfigMap, &r).await.unwrap_err();
            assert!(
                matches!(e, MetaError::Upstream(UpstreamError::Offline)),
                "{e}"
            );
            // A query message is still answered from the store alone.
            let q = Message::new("edged", "meta", op::QUERY, "default/configmap/c");
            assert_eq!(
                mm.handle(q).await.unwrap().content["ErrStatus"]["code"],
                404
            );
        });
    }

    /// A cloud that answers requests from a script: each request takes the next answer
    /// (content of the DynamicController's reply, or an error), after `delay`.
    struct Scripted {
        answers:
            std::sync::Mutex<std::collections::VecDeque<Result<serde_json::Value, UpstreamError>>>,
        requests: std::sync::Mutex<Vec<Message>>,
        delay: Duration,
    }

    impl Scripted {
        fn new(answers: Vec<Result<serde_json::Value, UpstreamError>>) -> Arc<Scripted> {
            Arc::new(Scripted {
                answers: std::sync::Mutex::new(answers.into()),
                requests: std::sync::Mutex::new(Vec::new()),
                delay: Duration::from_millis(50),
            })
        }
        fn asked(&self) -> usize {
            self.requests.lock().unwrap().len()
        }
    }

    impl Upstream for Scripted {
        fn is_online(&self) -> bool {
            true
        }
        fn request(
            &self,
            msg: Message,
            _: Duration,
        ) -> smol::future::Boxed<Result<Message, UpstreamError>> {
            self.requests.lock().unwrap().push(msg.clone());
            let next = self.answers.lock().unwrap().pop_front();
            let delay = self.delay;
            Box::pin(async move {
                smol::Timer::after(delay).await;
                let content = next.unwrap_or(Err(UpstreamError::Timeout(delay)))?;
                let mut r = Message::new(
                    "dynamiccontroller",
                    "resource",
                    application::APPLICATION_RESPONSE,
                    "node/n/ignore/Application/ignore",
                );
                r.header.parent_id = msg.header.id.clone();
                Ok(r.with_content(content))
            })
        }
        fn send(&self, _: Message) -> smol::future::Boxed<Result<(), UpstreamError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn approved(items: serde_json::Value) -> Result<serde_json::Value, UpstreamError> {
        let body =
            json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": items});
        let mut app = services::Application::list("n", services::SERVICES_KEY).to_content();
        app["Status"] = json!("Approved");
        app["RespBody"] = json!(crate::api::base64::encode(body.to_string().as_bytes()));
        Ok(app)
    }

    fn service(ns: &str, name: &str, ip: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": ns},
               "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
    }

    fn names(list: &[crate::api::Service]) -> Vec<String> {
        list.iter()
            .map(|s| format!("{}/{}", s.metadata.namespace, s.metadata.name))
            .collect()
    }

    /// A pod whose managedFields name fields it lacks, as CloudCore on k8s.io/api v1.32 relays
    /// it; `whole` the pod as the API server has it.
    fn relayed_pod(name: &str, generation: i64) -> (Message, serde_json::Value) {
        let whole = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "generation": generation,
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:hostnameOverride": {}, "f:containers": {
                        "k:{\"name\":\"c\"}": {"f:image": {}, "f:name": {}}}}}}]},
            "spec": {"nodeName": "edge-1", "hostnameOverride": "over.example",
                "containers": [{"name": "c", "image": "busybox"}]}});
        let mut relayed = whole.clone();
        relayed["spec"]
            .as_object_mut()
            .unwrap()
            .remove("hostnameOverride");
        let msg = Message::new(
            "edgecontroller",
            "resource",
            op::INSERT,
            format!("ns/pod/{name}"),
        )
        .with_content(relayed);
        (msg, whole)
    }

    fn approved_pod(pod: &serde_json::Value) -> Result<serde_json::Value, UpstreamError> {
        let mut app = application::Application::get("edge-1", "k").to_content();
        app["Status"] = json!("Approved");
        app["RespBody"] = json!(crate::api::base64::encode(pod.to_string().as_bytes()));
        Ok(app)
    }

    #[test]
    fn a_pod_the_relay_stripped_is_read_back_whole_before_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (tx, rx) = async_channel::unbounded();
        let (a, whole_a) = relayed_pod("a", 1);
        let (b, mut newer_b) = relayed_pod("b", 1);
        newer_b["metadata"]["generation"] = json!(2);
        let (c, _) = relayed_pod("c", 1);
        let cloud = Scripted::new(vec![
            approved_pod(&whole_a),
            approved_pod(&newer_b),
            // c: unanswered (the DynamicController is off).
        ]);
        let mm = MetaManager::new(store.clone(), tx, cloud.clone());
        smol::block_on(async {
            // a: read back; what is stored and handed on has the field.
            mm.handle(a).await.unwrap();
            let asked = cloud.requests.lock().unwrap()[0].clone();
            assert_eq!(asked.content["Key"], "/core/v1/pods/ns/a");
            assert_eq!(asked.content["Verb"], "get");
            assert_eq!(asked.content["Nodename"], "edge-1");
            let stored = store.get(Table::Pod, "ns/a").unwrap().unwrap();
            assert_eq!(stored["spec"]["hostnameOverride"], "over.example");
            match rx.recv().await.unwrap() {
                Change::PodAdded(p) | Change::PodUpdated(p) => {
                    assert_eq!(p.spec.hostname_override.as_deref(), Some("over.example"))
                }
                other => panic!("{other:?}"),
            }
            // a again, relayed for its new status: the spec read back before is kept, unasked.
            let (mut a2, _) = relayed_pod("a", 1);
            a2.route.operation = op::UPDATE.into();
            a2.content["status"] = json!({"phase": "Running"});
            mm.handle(a2).await.unwrap();
            assert_eq!(cloud.asked(), 1);
            let stored = store.get(Table::Pod, "ns/a").unwrap().unwrap();
            assert_eq!(
                (
                    &stored["spec"]["hostnameOverride"],
                    &stored["status"]["phase"]
                ),
                (&json!("over.example"), &json!("Running"))
            );
            // a deleted: its grace period in the spec; the dropped field kept, unasked.
            let (mut a3, _) = relayed_pod("a", 1);
            a3.route.operation = op::UPDATE.into();
            a3.content["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
            a3.content["spec"]["terminationGracePeriodSeconds"] = json!(1);
            mm.handle(a3).await.unwrap();
            assert_eq!(cloud.asked(), 1);
            let stored = store.get(Table::Pod, "ns/a").unwrap().unwrap();
            assert_eq!(
                (
                    &stored["spec"]["hostnameOverride"],
                    &stored["spec"]["terminationGracePeriodSeconds"]
                ),
                (&json!("over.example"), &json!(1))
            );
            // b: the API server has a newer spec: stored as relayed (the newer comes relayed).
            mm.handle(b).await.unwrap();
            let stored = store.get(Table::Pod, "ns/b").unwrap().unwrap();
            assert!(stored["spec"].get("hostnameOverride").is_none());
            // c: no answer; stored as relayed, and the next pod does not ask for a while.
            mm.handle(c).await.unwrap();
            assert!(store.get(Table::Pod, "ns/c").unwrap().is_some());
            assert_eq!(cloud.asked(), 3);
            let (d, _) = relayed_pod("d", 1);
            mm.handle(d).await.unwrap();
            assert_eq!(cloud.asked(), 3, "backed off after the unanswered read");
            // a with a new image, unread (backed off): it keeps the field read back before.
            let (mut a4, _) = relayed_pod("a", 2);
            a4.route.operation = op::UPDATE.into();
            a4.content["spec"]["containers"][0]["image"] = json!("busybox:2");
            mm.handle(a4).await.unwrap();
            let stored = store.get(Table::Pod, "ns/a").unwrap().unwrap();
            assert_eq!(
                (
                    &stored["spec"]["hostnameOverride"],
                    &stored["spec"]["containers"][0]["image"]
                ),
                (&json!("over.example"), &json!("busybox:2"))
            );
            // A pod with nothing dropped is not read back.
            let mut plain = relayed_pod("e", 1).0;
            plain.content["spec"]["hostnameOverride"] = json!("x");
            mm.read_back.state().answered();
            mm.handle(plain).await.unwrap();
            assert_eq!(cloud.asked(), 3);
        });
    }

    #[test]
    fn services_are_listed_stored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (tx, _rx) = async_channel::unbounded();
        let cloud = Scripted::new(vec![
            approved(json!([
                service("default", "kubernetes", "10.96.0.1"),
                service("a", "web", "10.0.0.1")
            ])),
            approved(json!([
                service("default", "kubernetes", "10.96.0.1"),
                service("b", "db", "10.0.0.2")
            ])),
            Ok(
                json!({"Status": "Rejected", "Error": {"ErrStatus": {"code": 403,
                "reason": "Forbidden", "message": "services is forbidden"}}}),
            ),
            Ok(json!({"Status": "Approved", "RespBody": "garbage!"})),
        ]);
        let mm = MetaManager::new(store.clone(), tx, cloud.clone());
        smol::block_on(async {
            let got = mm.services("n").await.unwrap();
            assert_eq!(names(&got), ["default/kubernetes", "a/web"]);
            let m = cloud.requests.lock().unwrap()[0].clone();
            assert_eq!(m.route.group, "dynamiccontroller");
            assert_eq!(m.content["Nodename"], "n");
            // The next list replaces the stored one: a/web goes, b/db comes.
            let got = mm.services("n").await.unwrap();
            assert_eq!(names(&got), ["default/kubernetes", "b/db"]);
            let rows: Vec<String> = store
                .list(Table::Service)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(rows, ["b/db", "default/kubernetes"]);
            // A refusal is an error naming the status; services() falls back to the store.
            let e = mm.list_services("n").await.unwrap_err().to_string();
            assert!(
                e.contains("403 Forbidden") && e.contains("services is forbidden"),
                "{e}"
            );
            let got = mm.services("n").await.unwrap();
            assert_eq!(names(&got), ["b/db", "default/kubernetes"]);
            assert_eq!(cloud.asked(), 4, "the garbage answer was not asked for");
        });
        // Offline (another MetaManager over the same store): the stored list, nothing asked.
        let (tx, _rx) = async_channel::unbounded();
        let away = MetaManager::new(store, tx, Arc::new(Away));
        let got = smol::block_on(away.services("n")).unwrap();
        assert_eq!(names(&got), ["b/db", "default/kubernetes"]);
    }

    #[test]
    fn an_unanswered_list_is_not_asked_again_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store
            .put(
                Table::Service,
                "default/kubernetes",
                &service("default", "kubernetes", "10.96.0.1"),
            )
            .unwrap();
        let (tx, _rx) = async_channel::unbounded();
        // No answer at all (a CloudCore without the DynamicController).
        let cloud = Scripted::new(vec![]);
        let mm = MetaManager::new(store, tx, cloud.clone());
        smol::block_on(async {
            // Pods starting together wait for one request, then use the store.
            let (a, b) = smol::future::zip(mm.services("n"), mm.services("n")).await;
            assert_eq!(names(&a.unwrap()), ["default/kubernetes"]);
            assert_eq!(names(&b.unwrap()), ["default/kubernetes"]);
            assert_eq!(cloud.asked(), 1);
            // Backing off: not asked again.
            assert!(mm.list_services("n").await.unwrap().is_none());
            assert_eq!(
                names(&mm.services("n").await.unwrap()),
                ["default/kubernetes"]
            );
            assert_eq!(cloud.asked(), 1);
            assert!(mm.services.state().warned);
        });
    }

    #[test]
    fn missing_is_not_found_offline_and_bad_messages_are_named() {
        let (_d, mm, _rx) = setup();
        smol::block_on(async {
            let q = Message::new("edged", "meta", op::QUERY, "default/secret/nope");
            let r = mm.handle(q).await.unwrap();
            assert_eq!(r.content["ErrStatus"]["code"], 404);
            let bad =
                Message::new("x", "y", op::INSERT, "default/pod/web").with_content(json!("str"));
            let e = mm.handle(bad).await.unwrap_err().to_string();
            assert!(
                e.contains("default/pod/web") && e.contains("content"),
                "{e}"
            );
            // A pod (from the cloud, as from a file) whose uid would become `../..`: refused
            // before it is stored, naming the pod and the field.
            let evil = Message::new("x", "y", op::INSERT, "default/pod/web").with_content(json!(
                {"kind":"Pod","metadata":{"name":"web","uid":"x/../../victim"},
                 "spec":{"containers":[{"name":"a","image":"i"}]}}
            ));
            let e = mm.handle(evil).await.unwrap_err().to_string();
            assert!(
                e.contains("Pod default/web") && e.contains("metadata.uid"),
                "{e}"
            );
            assert!(mm.store().get(Table::Pod, "default/web").unwrap().is_none());
            let bad =
                Message::new("x", "y", op::INSERT, "default/widget/w").with_content(json!({}));
            assert!(mm
                .handle(bad)
                .await
                .unwrap_err()
                .to_string()
                .contains("widget"));
        });
    }
}
