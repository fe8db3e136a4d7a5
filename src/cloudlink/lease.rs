//! The node lease, renewed as the kubelet's lease controller renews it
//! (`component-helpers/apimachinery/lease`), through KubeEdge's metaclient
//! (`edge/pkg/metamanager/client/lease.go`): `query`, `insert` and `update` of
//! `kube-node-lease/lease/<node>`, each answered by CloudCore with
//! `{"Object": <lease>, "Err": <StatusError or null>}`.
//!
//! kube-apiserver checks `metadata.resourceVersion` on every update: a renewal is an update of
//! **the lease from the last answer** with a new `renewTime`. Without a resourceVersion the
//! answer is 422 Invalid, with a stale one 409 Conflict; on either the lease is read again and
//! the update retried in the same period.
//!
//! [`new_lease`] and [`LeaseAnswer::parse`] are the decisions (pure, tested here);
//! [`LeaseController::renew`] carries them out over an [`Exchange`].

use crate::message::{module, op, Message};
use crate::metamanager::UpstreamError;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// The namespace node leases live in.
pub const NAMESPACE: &str = "kube-node-lease";
/// How long the cloud may wait for a node's answer (the kubelet's lease duration).
pub const DURATION_SECONDS: u32 = 40;
/// Updates tried per renewal before giving up until the next period (the kubelet's 5).
const MAX_UPDATE_RETRIES: usize = 5;
/// How long one lease request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The lease's resource string, `kube-node-lease/lease/<node>`.
pub fn resource(node: &str) -> String {
    format!("{NAMESPACE}/lease/{node}")
}

/// `renewTime` as a MicroTime: RFC 3339 with exactly six fraction digits.
pub fn micro_time(t: SystemTime) -> String {
    let nanos = crate::api::rfc3339_nanos(t);
    format!("{}Z", &nanos[..nanos.len().saturating_sub(4)])
}

/// The lease to send: `base` (the lease from the last answer, resourceVersion and all) with a
/// new renewTime, or a fresh one when there is no base. An ownerReference to the Node is added
/// when the lease has none and the Node's uid is known (the kubelet's `setNodeOwnerFunc`).
pub fn new_lease(
    node: &str,
    base: Option<&Value>,
    node_uid: Option<&str>,
    now: SystemTime,
) -> Value {
    let mut lease = match base {
        Some(b) if b.is_object() => b.clone(),
        _ => json!({
            "metadata": {"name": node, "namespace": NAMESPACE},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": DURATION_SECONDS},
        }),
    };
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    lease["kind"] = json!("Lease");
    if !lease["spec"].is_object() {
        lease["spec"] = json!({});
    }
    if lease["spec"]["holderIdentity"].is_null() {
        lease["spec"]["holderIdentity"] = json!(node);
    }
    if lease["spec"]["leaseDurationSeconds"].is_null() {
        lease["spec"]["leaseDurationSeconds"] = json!(DURATION_SECONDS);
    }
    lease["spec"]["renewTime"] = json!(micro_time(now));
    let owned = lease["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|o| !o.is_empty());
    if let (false, Some(uid)) = (owned, node_uid.filter(|u| !u.is_empty())) {
        lease["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "Node", "name": node, "uid": uid,
        }]);
    }
    lease
}

/// What an answer to a lease request says.
#[derive(Debug, PartialEq)]
pub enum LeaseAnswer {
    /// The lease as the API server holds it now.
    Lease(Value),
    /// The lease does not exist (query answered 404).
    NotFound,
    /// The update was refused because our copy is stale or lacks its resourceVersion
    /// (409 Conflict, 422 Invalid): read it again.
    Stale(UpstreamError),
    /// Any other refusal.
    Refused(UpstreamError),
}

impl LeaseAnswer {
    /// Reads CloudCore's `{"Object":..,"Err":..}` (also a bare `ErrStatus`, as for queries of
    /// other kinds). An `Err` with an empty status (`{"ErrStatus":{"metadata":{}}}`, what a
    /// zero Go StatusError marshals to) is no error.
    pub fn parse(content: &Value) -> LeaseAnswer {
        let err = super::answer_error(content).filter(|e| match e {
            UpstreamError::Status { code, reason, .. } => *code != 0 || !reason.is_empty(),
            _ => true,
        });
        match err {
            Some(UpstreamError::Status { code: 404, .. }) => LeaseAnswer::NotFound,
            Some(
                e @ UpstreamError::Status {
                    code: 409 | 422, ..
                },
            ) => LeaseAnswer::Stale(e),
            Some(e) => LeaseAnswer::Refused(e),
            None => {
                let obj = content.get("Object").unwrap_or(content);
                if obj["metadata"]["name"].is_string() {
                    LeaseAnswer::Lease(obj.clone())
                } else {
                    LeaseAnswer::Refused(UpstreamError::Link(format!(
                        "the answer holds no lease: {}",
                        obj.to_string().chars().take(200).collect::<String>()
                    )))
                }
            }
        }
    }
}

/// How the controller reaches the cloud: a request and its answer (the cloud link, or a test
/// double in the unit tests below).
pub trait Exchange {
    /// Sends `msg` and waits for the answer's content.
    fn ask(&self, msg: Message) -> smol::future::BoxedLocal<Result<Value, UpstreamError>>;
}

impl Exchange for super::CloudLink {
    fn ask(&self, msg: Message) -> smol::future::BoxedLocal<Result<Value, UpstreamError>> {
        use crate::metamanager::Upstream;
        let req = self.request(msg, REQUEST_TIMEOUT);
        Box::pin(async move { req.await.map(|m| m.content) })
    }
}

/// The lease controller's state: the lease from the last answer.
pub struct LeaseController {
    node: String,
    latest: Option<Value>,
}

impl LeaseController {
    /// A controller for `node`'s lease, with no lease known yet.
    pub fn new(node: &str) -> LeaseController {
        LeaseController {
            node: node.to_string(),
            latest: None,
        }
    }

    /// The lease from the last answer.
    pub fn latest(&self) -> Option<&Value> {
        self.latest.as_ref()
    }

    fn message(&self, operation: &str, content: Value) -> Message {
        Message::new(module::EDGED, module::META, operation, resource(&self.node))
            .with_content(content)
    }

    async fn call(&self, x: &dyn Exchange, operation: &str, content: Value) -> LeaseAnswer {
        match x.ask(self.message(operation, content)).await {
            Ok(c) => LeaseAnswer::parse(&c),
            Err(e) => LeaseAnswer::Refused(e),
        }
    }

    /// Reads the lease, creating it when it does not exist (`ensureLease`). Returns the lease
    /// and whether it was just made.
    async fn ensure(
        &self,
        x: &dyn Exchange,
        node_uid: Option<&str>,
    ) -> Result<(Value, bool), UpstreamError> {
        match self.call(x, op::QUERY, Value::Null).await {
            LeaseAnswer::Lease(l) => Ok((l, false)),
            LeaseAnswer::NotFound => {
                let fresh = new_lease(&self.node, None, node_uid, SystemTime::now());
                match self.call(x, op::INSERT, fresh).await {
                    LeaseAnswer::Lease(l) => Ok((l, true)),
                    LeaseAnswer::NotFound => Err(UpstreamError::Link(
                        "creating the lease answered NotFound".into(),
                    )),
                    LeaseAnswer::Stale(e) | LeaseAnswer::Refused(e) => Err(e),
                }
            }
            LeaseAnswer::Stale(e) | LeaseAnswer::Refused(e) => Err(e),
        }
    }

    /// Updates the lease from `base`, reading it again after a conflict (`retryUpdateLease`).
    async fn retry_update(
        &mut self,
        x: &dyn Exchange,
        mut base: Value,
        node_uid: Option<&str>,
    ) -> Result<(), UpstreamError> {
        let mut last = UpstreamError::Link("no update tried".into());
        for _ in 0..MAX_UPDATE_RETRIES {
            let lease = new_lease(&self.node, Some(&base), node_uid, SystemTime::now());
            match self.call(x, op::UPDATE, lease).await {
                LeaseAnswer::Lease(l) => {
                    self.latest = Some(l);
                    return Ok(());
                }
                LeaseAnswer::Stale(e) => {
                    tracing::debug!(error = %e, "lease update refused as stale; reading it again");
                    let (fresh, _) = self.ensure(x, node_uid).await?;
                    base = fresh;
                    last = e;
                }
                LeaseAnswer::NotFound => {
                    last = UpstreamError::Link("the lease update answered NotFound".into());
                }
                // The link is down or slow: the next period tries again.
                LeaseAnswer::Refused(
                    e @ (UpstreamError::Offline
                    | UpstreamError::Timeout(_)
                    | UpstreamError::Link(_)),
                ) => return Err(e),
                LeaseAnswer::Refused(e) => last = e,
            }
        }
        Err(last)
    }

    /// One renewal (the kubelet's `sync`): an update of the last lease; failing that, read
    /// (or create) it and update that.
    pub async fn renew(
        &mut self,
        x: &dyn Exchange,
        node_uid: Option<&str>,
    ) -> Result<(), UpstreamError> {
        if let Some(base) = self.latest.clone() {
            match self.retry_update(x, base, node_uid).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(error = %e, "lease update from the last lease failed; reading it again")
                }
            }
        }
        let (lease, created) = self.ensure(x, node_uid).await?;
        self.latest = Some(lease.clone());
        if created {
            return Ok(());
        }
        self.retry_update(x, lease, node_uid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    #[test]
    fn a_fresh_lease_and_a_renewal_of_the_last_one() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let fresh = new_lease("n1", None, Some("u-1"), t);
        assert_eq!(fresh["metadata"]["name"], "n1");
        assert_eq!(fresh["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(fresh["spec"]["holderIdentity"], "n1");
        assert_eq!(fresh["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(fresh["spec"]["renewTime"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(fresh["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(fresh["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert!(fresh["metadata"]["resourceVersion"].is_null());

        let answered = json!({"metadata": {"name": "n1", "namespace": "kube-node-lease",
            "resourceVersion": "77", "uid": "l-1",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "old"}]},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                     "renewTime": "2023-01-01T00:00:00.000000Z"}});
        let renewed = new_lease("n1", Some(&answered), Some("u-1"), t);
        assert_eq!(renewed["metadata"]["resourceVersion"], "77");
        assert_eq!(renewed["metadata"]["uid"], "l-1");
        assert_eq!(renewed["spec"]["renewTime"], "2023-11-14T22:13:20.123456Z");
        // An existing owner is kept, as the kubelet keeps it.
        assert_eq!(renewed["metadata"]["ownerReferences"][0]["uid"], "old");
        // No node uid known: no owner.
        let bare = new_lease("n1", None, None, t);
        assert!(bare["metadata"]["ownerReferences"].is_null());
    }

    #[test]
    fn answers_read_as_cloudcore_writes_them() {
        let lease = json!({"metadata": {"name": "n1", "resourceVersion": "5"}});
        assert_eq!(
            LeaseAnswer::parse(&json!({"Object": lease, "Err": null})),
            LeaseAnswer::Lease(lease.clone())
        );
        // A zero StatusError, as a Go `apierrors.StatusError{}` marshals: no error.
        assert_eq!(
            LeaseAnswer::parse(&json!({"Object": lease, "Err": {"ErrStatus": {"metadata": {}}}})),
            LeaseAnswer::Lease(lease.clone())
        );
        let err = |code: i64, reason: &str| {
            json!({"Object": {"metadata": {}, "spec": {}},
                   "Err": {"ErrStatus": {"status": "Failure", "reason": reason, "code": code,
                                         "message": "m"}}})
        };
        assert_eq!(
            LeaseAnswer::parse(&err(404, "NotFound")),
            LeaseAnswer::NotFound
        );
        assert!(matches!(
            LeaseAnswer::parse(&err(422, "Invalid")),
            LeaseAnswer::Stale(_)
        ));
        assert!(matches!(
            LeaseAnswer::parse(&err(409, "Conflict")),
            LeaseAnswer::Stale(_)
        ));
        assert!(matches!(
            LeaseAnswer::parse(&err(500, "InternalError")),
            LeaseAnswer::Refused(_)
        ));
        assert!(matches!(
            LeaseAnswer::parse(&json!("OK")),
            LeaseAnswer::Refused(_)
        ));
    }

    /// An API server's lease store behind CloudCore, as kube-apiserver checks updates:
    /// create-on-update, 422 without a resourceVersion, 409 for a stale one.
    #[derive(Default)]
    struct ApiServer {
        lease: RefCell<Option<Value>>,
        version: RefCell<u64>,
        seen: RefCell<Vec<String>>,
        /// Answers to give instead, in order (None: behave).
        scripted: RefCell<VecDeque<Result<Value, UpstreamError>>>,
    }

    fn status(code: i64, reason: &str) -> Value {
        json!({"Object": null, "Err": {"ErrStatus": {"code": code, "reason": reason, "message": reason}}})
    }

    impl Exchange for Rc<ApiServer> {
        fn ask(&self, msg: Message) -> smol::future::BoxedLocal<Result<Value, UpstreamError>> {
            let s = self.clone();
            Box::pin(async move {
                s.seen.borrow_mut().push(msg.route.operation.clone());
                if let Some(a) = s.scripted.borrow_mut().pop_front() {
                    return a;
                }
                let store = |mut l: Value| {
                    let mut v = s.version.borrow_mut();
                    *v += 1;
                    l["metadata"]["resourceVersion"] = json!(v.to_string());
                    *s.lease.borrow_mut() = Some(l.clone());
                    json!({"Object": l, "Err": null})
                };
                let current = s.lease.borrow().clone();
                Ok(match msg.route.operation.as_str() {
                    op::QUERY => match current {
                        Some(l) => json!({"Object": l, "Err": null}),
                        None => status(404, "NotFound"),
                    },
                    op::INSERT if current.is_some() => status(409, "AlreadyExists"),
                    op::INSERT => store(msg.content),
                    op::UPDATE => {
                        let rv = msg.content["metadata"]["resourceVersion"].as_str();
                        match (current.as_ref(), rv) {
                            (None, _) => store(msg.content.clone()),
                            (Some(_), None) => status(422, "Invalid"),
                            (Some(cur), Some(rv))
                                if cur["metadata"]["resourceVersion"].as_str() != Some(rv) =>
                            {
                                status(409, "Conflict")
                            }
                            _ => store(msg.content.clone()),
                        }
                    }
                    other => panic!("unexpected {other}"),
                })
            })
        }
    }

    #[test]
    fn renewals_carry_the_resource_version_and_recover_from_conflicts() {
        let api = Rc::new(ApiServer::default());
        let mut c = LeaseController::new("n1");
        smol::block_on(async {
            // First: query (NotFound), insert; no update right after a create.
            c.renew(&api, Some("u")).await.unwrap();
            assert_eq!(*api.seen.borrow(), ["query", "insert"]);
            assert_eq!(c.latest().unwrap()["metadata"]["resourceVersion"], "1");
            // Then each renewal is one update of the last lease.
            c.renew(&api, Some("u")).await.unwrap();
            c.renew(&api, Some("u")).await.unwrap();
            assert_eq!(*api.seen.borrow(), ["query", "insert", "update", "update"]);
            assert_eq!(c.latest().unwrap()["metadata"]["resourceVersion"], "3");
            // Someone else updated it: 409, read again, update again, in the same renewal.
            {
                let mut l = api.lease.borrow_mut();
                l.as_mut().unwrap()["metadata"]["resourceVersion"] = json!("50");
            }
            api.seen.borrow_mut().clear();
            c.renew(&api, Some("u")).await.unwrap();
            assert_eq!(*api.seen.borrow(), ["update", "query", "update"]);
            assert_eq!(
                api.lease.borrow().as_ref().unwrap()["spec"]["holderIdentity"],
                "n1"
            );
        });
    }

    #[test]
    fn an_offline_renewal_fails_and_the_next_one_recovers() {
        let api = Rc::new(ApiServer::default());
        let mut c = LeaseController::new("n1");
        smol::block_on(async {
            c.renew(&api, None).await.unwrap();
            api.scripted
                .borrow_mut()
                .push_back(Err(UpstreamError::Timeout(Duration::from_secs(10))));
            api.scripted
                .borrow_mut()
                .push_back(Err(UpstreamError::Offline));
            assert!(c.renew(&api, None).await.is_err());
            api.seen.borrow_mut().clear();
            c.renew(&api, None).await.unwrap();
            assert_eq!(*api.seen.borrow(), ["update"]);
            // The lease was deleted in the cloud: an update creates it (create-on-update).
            *api.lease.borrow_mut() = None;
            c.renew(&api, None).await.unwrap();
            assert!(api.lease.borrow().is_some());
        });
    }
}
