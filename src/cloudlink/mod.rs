//! The cloud link: joins a KubeEdge cluster as its own edge (EdgeHub) does.
//!
//! - [`certs`]: the node certificate (bootstrap with the join token, renewal, files).
//! - [`link`]: the websocket over mTLS to CloudHub, keepalives, reconnects with back-off.
//! - [`node`]: the v1 Node registered upstream and its status, built from the machine's facts.
//! - [`lease`]: the node lease, renewed as the kubelet's lease controller renews it.
//! - [`outbox`]: statuses kept while offline, sent on reconnect.
//!
//! [`CloudLink`] is a cheap handle: it is MetaManager's [`Upstream`] and the API the rest of
//! the agent sends statuses through; [`run`] is the task that keeps the link up.

pub mod certs;
pub mod chunked;
pub mod https;
pub mod lease;
pub mod link;
pub mod node;
pub mod outbox;
pub mod stream;

use crate::message::{module, op, Message};
use crate::metamanager::{MetaManager, Upstream, UpstreamError};
use outbox::Outbox;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// KubeEdge's default project id.
pub const DEFAULT_PROJECT_ID: &str = "e632aba927ea4ac2b575ec1603d56f10";

/// A cloud link failure, naming what was being done and what to do about it.
#[derive(Debug)]
pub enum CloudError {
    /// A flag value that cannot work.
    Config {
        /// The flag or value, such as `cloud server address`.
        what: String,
        /// Why it cannot work.
        reason: String,
    },
    /// No node certificate and no join token to get one.
    NoToken,
    /// The join token is not `<ca-hash>.<jwt>`.
    BadToken(String),
    /// The CA the server sent is not the one the token names.
    CaHashMismatch {
        /// The certificate server, `HOST:PORT`.
        server: String,
        /// The CA hash the token names (hex sha256).
        token: String,
        /// The sha256 of the CA the server sent (hex).
        server_ca: String,
    },
    /// The certificate server refused the token (or the current certificate).
    TokenRejected {
        /// The certificate server, `HOST:PORT`.
        server: String,
        /// The HTTP status it answered.
        status: u16,
        /// Its answer's body.
        body: String,
    },
    /// An unexpected HTTP answer.
    Http {
        /// The server, `HOST:PORT`.
        server: String,
        /// The request path.
        path: String,
        /// The HTTP status answered.
        status: u16,
        /// The answer's body, trimmed, its first 200 characters.
        body: String,
    },
    /// Talking to the cloud broke the protocol.
    Protocol {
        /// What was being done, such as the websocket handshake with a URL.
        what: String,
        /// What the cloud did wrong.
        reason: String,
    },
    /// Network, TLS or file failure.
    Io {
        /// What was being done, such as `connecting to HOST:PORT`.
        context: String,
        /// The failure.
        source: std::io::Error,
    },
    /// A certificate or key that cannot be read or made.
    Cert {
        /// What was being done with the certificate or key.
        context: String,
        /// The failure.
        reason: String,
    },
    /// No answer in time.
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long it was waited for.
        after: Duration,
    },
}

impl From<crate::tls::TlsError> for CloudError {
    fn from(e: crate::tls::TlsError) -> Self {
        CloudError::tls(e.context, e.source)
    }
}

/// The cloud server's name in `host` (an IP address or a DNS name), to check its
/// certificate against.
pub(crate) fn server_name(
    host: &str,
) -> Result<rustls::pki_types::ServerName<'static>, CloudError> {
    crate::tls::server_name(host).ok_or_else(|| CloudError::Config {
        what: "cloud server address".into(),
        reason: format!("`{host}` is neither an IP address nor a DNS name"),
    })
}

impl CloudError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CloudError::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn tls(context: &str, e: impl fmt::Display) -> Self {
        CloudError::Cert {
            context: context.into(),
            reason: e.to_string(),
        }
    }
    pub(crate) fn protocol(what: &str, reason: String) -> Self {
        CloudError::Protocol {
            what: what.into(),
            reason,
        }
    }
    pub(crate) fn http(server: &str, path: &str, status: u16, body: &[u8]) -> Self {
        CloudError::Http {
            server: server.into(),
            path: path.into(),
            status,
            body: String::from_utf8_lossy(body)
                .trim()
                .chars()
                .take(200)
                .collect(),
        }
    }
}

impl fmt::Display for CloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloudError::Config { what, reason } => write!(f, "{what}: {reason}"),
            CloudError::NoToken => write!(
                f,
                "no node certificate yet and no join token: give --token or --token-file (from `keadm gettoken` on the cloud)"
            ),
            CloudError::BadToken(r) => write!(f, "the join token is malformed: {r}"),
            CloudError::CaHashMismatch { server, token, server_ca } => write!(
                f,
                "the CA certificate from {server} has sha256 {server_ca}, but the join token expects {token}: \
                 wrong token or wrong server (the token was not sent)"
            ),
            CloudError::TokenRejected { server, status, body } => write!(
                f,
                "{server} refused the join token or node certificate ({status} {body}): get a fresh token with `keadm gettoken`"
            ),
            CloudError::Http { server, path, status, body } => {
                write!(f, "{server}{path} answered {status}: {body}")
            }
            CloudError::Protocol { what, reason } => write!(f, "{what}: {reason}"),
            CloudError::Io { context, source } => write!(f, "{context}: {source}"),
            CloudError::Cert { context, reason } => write!(f, "{context}: {reason}"),
            CloudError::Timeout { what, after } => {
                write!(f, "{what}: no answer within {}s", after.as_secs_f32())
            }
        }
    }
}

impl std::error::Error for CloudError {}

/// Runs `f`, failing with [`CloudError::Timeout`] after `after`.
pub(crate) async fn with_timeout<T>(
    after: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, CloudError>>,
) -> Result<T, CloudError> {
    smol::future::or(f, async {
        smol::Timer::after(after).await;
        Err(CloudError::Timeout {
            what: what.to_string(),
            after,
        })
    })
    .await
}

/// How the link reaches the cloud.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// CloudHub's websocket server, `HOST:PORT` (KubeEdge: 10000).
    pub server: String,
    /// CloudHub's certificate server, `HOST:PORT` (KubeEdge: 10002).
    pub https_server: String,
    /// `--node-name` (else the hostname): the Node registered, sent as the `node_id` header
    /// and in the websocket path.
    pub node: String,
    /// `--project-id`: KubeEdge's project, sent as the `project_id` header and in the websocket
    /// path ([`DEFAULT_PROJECT_ID`] by default).
    pub project_id: String,
    /// Where the node certificate, its key and the cloud's CA are kept.
    pub cert_dir: PathBuf,
    /// The join token, needed until the node has a certificate.
    pub token: Option<String>,
    /// `--heartbeat`: the keepalive period; a link silent for three of them is taken as broken.
    pub heartbeat: Duration,
    /// First reconnect delay; doubles (with jitter) up to `backoff_max`.
    pub backoff_initial: Duration,
    /// The longest reconnect delay.
    pub backoff_max: Duration,
    /// Extra labels for the registered Node.
    pub node_labels: Vec<(String, String)>,
    /// `--node-ip`: the node's `InternalIP` address (None: the source address of the default
    /// route).
    pub node_ip: Option<IpAddr>,
    /// Whose filesystem the node status reports as ephemeral storage.
    pub root_dir: PathBuf,
    /// `--max-pods`: the node's `pods` capacity and allocatable.
    pub max_pods: u32,
    /// `--port`, reported as the node's kubelet endpoint.
    pub kubelet_port: u16,
}

/// The handle to the cloud link: cheap to clone, usable whether the link is up or not.
#[derive(Clone)]
pub struct CloudLink {
    inner: Arc<Inner>,
}

struct Inner {
    config: LinkConfig,
    online: AtomicBool,
    registered: AtomicBool,
    /// Messages for the current connection's writer.
    out_tx: async_channel::Sender<Message>,
    out_rx: async_channel::Receiver<Message>,
    /// Requests waiting for their answer, by msg_id.
    pending: Mutex<HashMap<String, async_channel::Sender<Message>>>,
    outbox: Mutex<Outbox>,
    /// The Node's uid in the cloud (from the registration answer or a query): the lease's
    /// owner.
    node_uid: Mutex<Option<String>>,
    /// Nodes the cloud sent down (`update null/node/<node>`), newest last.
    cloud_node_tx: async_channel::Sender<Value>,
    cloud_node_rx: async_channel::Receiver<Value>,
}

impl CloudLink {
    /// A link that is not connected yet; [`run`] connects it.
    pub fn new(config: LinkConfig) -> CloudLink {
        let (out_tx, out_rx) = async_channel::unbounded();
        let (cloud_node_tx, cloud_node_rx) = async_channel::bounded(8);
        CloudLink {
            inner: Arc::new(Inner {
                config,
                online: AtomicBool::new(false),
                registered: AtomicBool::new(false),
                out_tx,
                out_rx,
                pending: Mutex::new(HashMap::new()),
                outbox: Mutex::new(Outbox::default()),
                node_uid: Mutex::new(None),
                cloud_node_tx,
                cloud_node_rx,
            }),
        }
    }

    /// The link's settings.
    pub fn config(&self) -> &LinkConfig {
        &self.inner.config
    }

    /// Whether the node registration has been accepted (or was already there).
    pub fn is_registered(&self) -> bool {
        self.inner.registered.load(Ordering::SeqCst)
    }

    /// Messages kept for the next connection.
    pub fn outboxed(&self) -> usize {
        self.outbox().len()
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, async_channel::Sender<Message>>> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `msg` for the connection, or keeps it in the outbox while offline (the newest
    /// per resource).
    pub fn post(&self, msg: Message) {
        if self.is_online() {
            // The receiver lives as long as `inner`: this cannot fail.
            let _ = self.inner.out_tx.try_send(msg);
        } else {
            self.outbox().put(msg);
        }
    }

    fn node_resource(&self, kind: &str) -> String {
        format!("null/{kind}/{}", self.inner.config.node)
    }

    /// Sends the node status: `patch null/nodepatch/<node>`, content a JSON string holding the
    /// strategic-merge patch (`{"status": ...}`), without waiting for the answer.
    pub fn send_node_status(&self, patch: Value) {
        self.post(self.node_status_message(&patch));
    }

    fn node_status_message(&self, patch: &Value) -> Message {
        Message::new(
            module::EDGED,
            module::META,
            op::PATCH,
            self.node_resource("nodepatch"),
        )
        .with_content(Value::String(patch.to_string()))
    }

    /// Patches the node status and waits for CloudCore's answer: the Node as the API server
    /// holds it after the patch (`None` when the answer carries no Node).
    pub async fn patch_node_status(&self, patch: &Value) -> Result<Option<Value>, UpstreamError> {
        let answer = self
            .request(self.node_status_message(patch), Duration::from_secs(10))
            .await?;
        if let Some(e) = answer_error(&answer.content) {
            return Err(e);
        }
        Ok(answer
            .content
            .get("Object")
            .filter(|o| o["status"].is_object())
            .cloned())
    }

    /// The Node's uid in the cloud, once known.
    pub fn node_uid(&self) -> Option<String> {
        self.inner
            .node_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_node_uid(&self, uid: Option<&str>) {
        if let Some(uid) = uid.filter(|u| !u.is_empty()) {
            *self
                .inner
                .node_uid
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(uid.into());
        }
    }

    /// Takes a Node the cloud sent down (kept for the node status task, the newest wins).
    pub(crate) fn cloud_node_seen(&self, node: Value) {
        if let Some(uid) = node["metadata"]["uid"].as_str() {
            self.set_node_uid(Some(uid));
        }
        while self.inner.cloud_node_tx.try_send(node.clone()).is_err() {
            // Full: the oldest goes.
            if self.inner.cloud_node_rx.try_recv().is_err() {
                break;
            }
        }
    }

    /// Waits for the next Node the cloud sends down.
    pub async fn next_cloud_node(&self) -> Option<Value> {
        self.inner.cloud_node_rx.recv().await.ok()
    }

    /// This machine's facts as the node status reports them (reads /proc, statvfs, /etc).
    pub fn node_facts(&self) -> node::NodeFacts {
        let c = &self.inner.config;
        node::NodeFacts::gather(&c.root_dir, &c.node, c.node_ip, c.max_pods, c.kubelet_port)
    }

    /// Registers the node (`insert null/node/<node>`); an AlreadyExists answer is success.
    pub async fn register(&self) -> Result<(), UpstreamError> {
        let c = &self.inner.config;
        let facts = self.node_facts();
        let now = crate::api::rfc3339(std::time::SystemTime::now());
        let obj = node::node_object(&c.node, &c.node_labels, &facts, &now);
        let m = Message::new(
            module::EDGED,
            module::META,
            op::INSERT,
            self.node_resource("node"),
        )
        .with_content(obj);
        let answer = self.request(m, Duration::from_secs(30)).await?;
        match answer_error(&answer.content) {
            None => {
                tracing::info!(node = %c.node, "node registered");
                self.set_node_uid(answer.content["Object"]["metadata"]["uid"].as_str());
            }
            Some(UpstreamError::Status { code: 409, .. }) => {
                tracing::info!(node = %c.node, "node was registered before")
            }
            Some(e) => return Err(e),
        }
        self.inner.registered.store(true, Ordering::SeqCst);
        if self.node_uid().is_none() {
            // The lease names the Node as its owner by uid: ask for it (CloudCore answers a
            // node query with the Node itself).
            let q = Message::new(
                module::EDGED,
                module::META,
                op::QUERY,
                self.node_resource("node"),
            );
            match self.request(q, Duration::from_secs(10)).await {
                Ok(a) if answer_error(&a.content).is_none() => {
                    let node = a.content.get("Object").unwrap_or(&a.content);
                    self.set_node_uid(node["metadata"]["uid"].as_str());
                }
                Ok(a) => {
                    tracing::debug!(error = ?answer_error(&a.content), "the node query was refused; the lease goes without an owner")
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the node query failed; the lease goes without an owner")
                }
            }
        }
        Ok(())
    }
}

/// The error in a cloud answer (`{"Object":..,"Err":{"ErrStatus":..}}` or a bare `ErrStatus`).
pub fn answer_error(content: &Value) -> Option<UpstreamError> {
    let status = content
        .get("Err")
        .filter(|e| !e.is_null())
        .map(|e| e.get("ErrStatus").unwrap_or(e))
        .or_else(|| content.get("ErrStatus"))?;
    Some(UpstreamError::Status {
        code: status["code"].as_i64().unwrap_or(0),
        reason: status["reason"].as_str().unwrap_or("").to_string(),
        message: status["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string()),
    })
}

impl Upstream for CloudLink {
    fn is_online(&self) -> bool {
        self.inner.online.load(Ordering::SeqCst)
    }

    fn request(
        &self,
        msg: Message,
        timeout: Duration,
    ) -> smol::future::Boxed<Result<Message, UpstreamError>> {
        let link = self.clone();
        Box::pin(async move {
            if !link.is_online() {
                return Err(UpstreamError::Offline);
            }
            let id = msg.header.id.clone();
            let (tx, rx) = async_channel::bounded(1);
            link.pending().insert(id.clone(), tx);
            let _ = link.inner.out_tx.try_send(msg);
            let answer = smol::future::or(
                async {
                    rx.recv().await.map_err(|_| {
                        UpstreamError::Link("the connection to the cloud was lost".into())
                    })
                },
                async {
                    smol::Timer::after(timeout).await;
                    Err(UpstreamError::Timeout(timeout))
                },
            )
            .await;
            link.pending().remove(&id);
            answer
        })
    }

    fn send(&self, msg: Message) -> smol::future::Boxed<Result<(), UpstreamError>> {
        self.post(msg);
        Box::pin(async { Ok(()) })
    }
}

/// How often the node status goes up even when nothing changed (the kubelet's 5 min).
const NODE_STATUS_REPORT_PERIOD: Duration = Duration::from_secs(300);
/// The node lease is renewed this often (the kubelet's 10 s; it is valid for 40 s).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// After a failed renewal, the next try comes this soon.
const LEASE_RETRY: Duration = Duration::from_secs(2);

/// Whether the cloud's view of the node (a Node it sent down, or the answer to a status patch)
/// differs from `status`, the status the node would send now: a condition with another status
/// (Unknown, set by the node controller when leases stopped) or missing. Then the status must
/// go up at once, changed here or not (the kubelet compares with the Node it reads back).
pub fn cloud_view_differs(status: &Value, cloud_node: &Value) -> bool {
    let empty = Vec::new();
    let theirs = cloud_node["status"]["conditions"]
        .as_array()
        .unwrap_or(&empty);
    status["conditions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .any(|ours| {
            !theirs
                .iter()
                .any(|c| c["type"] == ours["type"] && c["status"] == ours["status"])
        })
}

/// Sends the node status every `period` when it changed (and every 5 min regardless), at once
/// when the cloud's view of the node differs from it, and keeps what was last sent, with the
/// link's state, in the node's store row (`edged get node`).
pub async fn run_node_status(
    link: CloudLink,
    meta: crate::metaclient::MetaClient,
    period: Duration,
) {
    let node = link.config().node.clone();
    let mut previous: Option<Value> = None;
    let mut sent_at: Option<std::time::Instant> = None;
    let mut was_up = false;
    // Set when the cloud's view differs from ours, or the last send failed: send now.
    let mut resend = false;
    loop {
        let l = link.clone();
        let facts = smol::unblock(move || l.node_facts()).await;
        let now = crate::api::rfc3339(std::time::SystemTime::now());
        let status = node::node_status(&facts, &now, previous.as_ref());
        // Heartbeat times move every time: compare without them.
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(cs) = v["conditions"].as_array_mut() {
                for c in cs {
                    c["lastHeartbeatTime"] = Value::Null;
                }
            }
            v
        };
        let changed = previous
            .as_ref()
            .map(|p| strip(p) != strip(&status))
            .unwrap_or(true);
        let due = sent_at
            .map(|t| t.elapsed() >= NODE_STATUS_REPORT_PERIOD)
            .unwrap_or(true);
        // Before the cloud has the node, a status for it would be refused.
        let up = link.is_online() && link.is_registered();
        // Back after an outage the cloud may have marked the node NotReady (its lease ran
        // out): say at once that it is alive, changed or not.
        let back = up && !was_up;
        was_up = up;
        if up && (changed || due || back || resend) {
            resend = false;
            match link.patch_node_status(&json!({ "status": status })).await {
                Ok(answer) => {
                    sent_at = Some(std::time::Instant::now());
                    previous = Some(status.clone());
                    if answer.is_some_and(|n| cloud_view_differs(&status, &n)) {
                        tracing::info!(%node, "the cloud's node status still differs after a patch; sending again");
                        resend = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "the node status was not accepted; sending it again next period");
                    resend = true;
                }
            }
        } else if previous.is_none() {
            previous = Some(status.clone());
        }
        let mut row = meta
            .node(&node)
            .await
            .ok()
            .flatten()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        row["status"] = previous.clone().unwrap_or(Value::Null);
        row["link"] = json!({ "online": link.is_online(), "registered": link.is_registered(), "checkedAt": now });
        if let Err(e) = meta.put_node(&node, row).await {
            tracing::warn!(error = %e, "cannot store the node record");
        }
        // Sleep a period, or less when the cloud sends a Node whose view differs from ours.
        let wake = smol::future::or(
            async {
                smol::Timer::after(period).await;
                None
            },
            link.next_cloud_node(),
        )
        .await;
        if let Some(cloud) = wake {
            let ours = previous.as_ref().unwrap_or(&status);
            if cloud_view_differs(ours, &cloud) {
                tracing::info!(%node, "the cloud's view of this node differs (Unknown while the node is alive?): sending the node status now");
                resend = true;
            }
        }
    }
}

/// Renews the node lease every 10 s while the link is up and the node registered (at once on
/// a new connection), as the kubelet's lease controller does ([`lease`]).
pub async fn run_lease(link: CloudLink) {
    let node = link.config().node.clone();
    let mut controller = lease::LeaseController::new(&node);
    let mut was_up = false;
    let mut failing = false;
    loop {
        let up = link.is_online() && link.is_registered();
        let wait = if !up {
            Duration::from_millis(500)
        } else {
            let uid = link.node_uid();
            match controller.renew(&link, uid.as_deref()).await {
                Ok(()) => {
                    if failing || !was_up {
                        tracing::info!(%node, "node lease renewed");
                    }
                    failing = false;
                    LEASE_RENEW
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "renewing the node lease failed; trying again");
                    failing = true;
                    LEASE_RETRY
                }
            }
        };
        was_up = up;
        smol::Timer::after(wait).await;
    }
}

/// Keeps the link up until the future is dropped: certificates, connection, reconnects with
/// back-off; cloud messages go to `meta`, whose ACKs go back up. Never fails: while the cloud
/// is away the agent runs offline.
pub async fn run(link: CloudLink, meta: Arc<MetaManager>) {
    link::run(link, meta).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline_link() -> CloudLink {
        CloudLink::new(LinkConfig {
            server: "cloud:10000".into(),
            https_server: "cloud:10002".into(),
            node: "edge-1".into(),
            project_id: DEFAULT_PROJECT_ID.into(),
            cert_dir: "/nonexistent".into(),
            token: None,
            heartbeat: Duration::from_secs(15),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            node_labels: vec![],
            node_ip: None,
            root_dir: "/".into(),
            max_pods: 110,
            kubelet_port: 10350,
        })
    }

    #[test]
    fn upstream_messages_have_kubeedge_shapes() {
        let link = offline_link();
        link.post(Message::pod_status_patch(
            "ns",
            "web",
            "u1",
            &json!({"phase": "Running"}),
        ));
        link.send_node_status(json!({"status": {"conditions": []}}));
        link.post(Message::pod_deleted("ns", "web", "u1"));
        let m = link.outbox().drain();
        let routes: Vec<(&str, &str)> = m
            .iter()
            .map(|m| (m.route.operation.as_str(), m.route.resource.as_str()))
            .collect();
        assert_eq!(
            routes,
            [
                ("patch", "ns/podpatch/web"),
                ("patch", "null/nodepatch/edge-1"),
                ("delete", "ns/pod/web"),
            ]
        );
        assert!(m
            .iter()
            .all(|m| m.route.source == "edged" && m.route.group == "meta"));
        let pod: Value = serde_json::from_str(m[0].content.as_str().unwrap()).unwrap();
        assert_eq!(
            pod,
            json!({"metadata": {"uid": "u1"}, "status": {"phase": "Running"}})
        );
        let node: Value = serde_json::from_str(m[1].content.as_str().unwrap()).unwrap();
        assert_eq!(node, json!({"status": {"conditions": []}}));
        // The delete confirmation is the kubelet's DeleteOptions: CloudCore reads a string as
        // the pod's uid.
        assert_eq!(
            m[2].content,
            json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}})
        );
    }

    #[test]
    fn the_cloud_view_is_compared_by_condition_status() {
        let ours = json!({"conditions": [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": "a"},
            {"type": "DiskPressure", "status": "False"}]});
        let node = |ready: &str| {
            json!({"status": {"conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": "b", "reason": "x"},
                {"type": "DiskPressure", "status": "False"}]}})
        };
        assert!(!cloud_view_differs(&ours, &node("True")));
        assert!(cloud_view_differs(&ours, &node("Unknown")));
        assert!(cloud_view_differs(&ours, &json!({"status": {}})));
        assert!(cloud_view_differs(&ours, &json!({})));
    }

    #[test]
    fn offline_requests_fail_at_once() {
        let link = offline_link();
        let q = Message::new("edged", "meta", op::QUERY, "ns/configmap/c");
        let e = smol::block_on(link.request(q, Duration::from_secs(60))).unwrap_err();
        assert_eq!(e, UpstreamError::Offline);
        // A fire-and-forget message waits for the link instead.
        smol::block_on(link.send(Message::new("edged", "meta", op::PATCH, "ns/podpatch/p")))
            .unwrap();
        assert_eq!(link.outboxed(), 1);
    }

    #[test]
    fn answer_errors() {
        assert_eq!(answer_error(&json!({"Object": {}, "Err": null})), None);
        assert_eq!(answer_error(&json!("OK")), None);
        let e = answer_error(
            &json!({"Err": {"ErrStatus": {"code": 409, "reason": "AlreadyExists", "message": "m"}}}),
        );
        assert_eq!(
            e,
            Some(UpstreamError::Status {
                code: 409,
                reason: "AlreadyExists".into(),
                message: "m".into()
            })
        );
        let e = answer_error(&json!({"ErrStatus": {"code": 404, "reason": "NotFound"}})).unwrap();
        assert!(e.to_string().contains("404 NotFound"), "{e}");
    }
}
