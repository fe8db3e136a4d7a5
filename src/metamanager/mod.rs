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

pub mod change;
pub mod check;
pub mod store;

pub use change::{Change, PodRef};
pub use store::{key, Store, StoreError, Table, Write, EXIT_STORE_DAMAGED};

use crate::message::{module, op, Message, Resource};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
                if table == Table::Pod {
                    // Fields that become host paths are checked before anything is stored.
                    crate::api::decode_pod(&msg.content).map_err(|e| MetaError::BadMessage {
                        resource: msg.route.resource.clone(),
                        reason: e.to_string(),
                    })?;
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
