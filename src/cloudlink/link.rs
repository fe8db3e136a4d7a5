//! The websocket to CloudHub: `wss://<server>/<projectID>/<node>/events` over mTLS, one JSON
//! message per text frame, a keepalive every heartbeat, and reconnects with back-off.
//!
//! One reader and one writer per connection. Downstream messages go, in order, to a worker
//! that hands them to MetaManager and sends its ACK up; answers to our requests resolve them.

use super::certs::{self, CertDir};
use super::{https, with_timeout, CloudError, CloudLink};
use crate::message::{module, op, Message};
use crate::metamanager::{application, MetaManager, Upstream};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::Message as Frame;
use async_tungstenite::WebSocketStream;
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use smol::net::TcpStream;
use smol::stream::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// How long connecting (TCP, TLS, websocket handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a downstream message may wait for the worker before the reader blocks.
const DOWNSTREAM_QUEUE: usize = 64;

/// Reconnect delays: `initial` doubling to `max`, each drawn in 80-120 % so that nodes cut
/// off together do not come back together.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next.mul_f64(0.8 + 0.4 * fastrand::f64()).min(self.max);
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success: start again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The link's task: connect, serve, and after a loss retry with back-off, forever.
pub(super) async fn run(link: CloudLink, meta: Arc<MetaManager>) {
    let (down_tx, down_rx) = async_channel::bounded(DOWNSTREAM_QUEUE);
    smol::future::or(
        downstream(link.clone(), meta, down_rx),
        connections(link, down_tx),
    )
    .await
}

/// Hands cloud messages to MetaManager one at a time (order matters: an insert before its
/// delete) and sends the ACK it returns.
async fn downstream(link: CloudLink, meta: Arc<MetaManager>, rx: async_channel::Receiver<Message>) {
    while let Ok(msg) = rx.recv().await {
        let (operation, resource) = (msg.route.operation.clone(), msg.route.resource.clone());
        match meta.handle(msg).await {
            Ok(ack) => {
                tracing::debug!(%operation, %resource, "cloud message handled; ACK sent");
                // Offline, the ACK is dropped: the cloud resends what it has no ACK for.
                if link.is_online() {
                    let _ = link.inner.out_tx.try_send(ack);
                }
            }
            Err(e) => {
                tracing::warn!(%operation, %resource, error = %e, "cloud message not handled")
            }
        }
    }
}

async fn connections(link: CloudLink, down_tx: async_channel::Sender<Message>) {
    let cfg = link.config().clone();
    let dir = CertDir(cfg.cert_dir.clone());
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    loop {
        match connect(&link, &dir).await {
            Ok(ws) => {
                backoff.reset();
                tracing::info!(server = %cfg.server, node = %cfg.node, "connected to the cloud");
                let why = serve(&link, &dir, ws, &down_tx).await;
                tracing::warn!(server = %cfg.server, reason = %why, "cloud connection lost; pods keep running");
            }
            // A token or certificate problem needs the user; a network one only time.
            Err(
                e @ (CloudError::NoToken
                | CloudError::BadToken(_)
                | CloudError::CaHashMismatch { .. }
                | CloudError::TokenRejected { .. }
                | CloudError::Cert { .. }),
            ) => {
                tracing::error!(server = %cfg.server, error = %e, "cannot join the cloud; running offline")
            }
            Err(e) => {
                tracing::warn!(server = %cfg.server, error = %e, "cannot connect to the cloud; running offline")
            }
        }
        offline(&link);
        let d = backoff.next_delay();
        tracing::info!(
            retry_in_ms = d.as_millis() as u64,
            "reconnecting to the cloud later"
        );
        smol::Timer::after(d).await;
    }
}

/// Certificates, TCP, TLS with the node certificate, then the websocket handshake.
async fn connect(link: &CloudLink, dir: &CertDir) -> Result<Ws, CloudError> {
    let cfg = link.config();
    let id = certs::ensure(dir, &cfg.https_server, &cfg.node, cfg.token.as_deref()).await?;
    let tls_config = id.tls()?;
    let (host, _) = https::split_host_port(&cfg.server)?;
    let url = format!(
        "wss://{}/{}/{}/events",
        cfg.server, cfg.project_id, cfg.node
    );
    with_timeout(CONNECT_TIMEOUT, &format!("connecting to {url}"), async {
        let tcp = TcpStream::connect(&cfg.server)
            .await
            .map_err(|e| CloudError::io(format!("connecting to {}", cfg.server), e))?;
        let stream = TlsConnector::from(tls_config)
            .connect(super::server_name(&host)?, tcp)
            .await
            .map_err(|e| CloudError::io(format!("TLS handshake with {}", cfg.server), e))?;
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| CloudError::protocol(&url, e.to_string()))?;
        let value = |v: &str| {
            HeaderValue::from_str(v).map_err(|_| CloudError::Config {
                what: "node name or project id".into(),
                reason: format!("`{v}` cannot be sent as an HTTP header"),
            })
        };
        let h = req.headers_mut();
        h.insert("node_id", value(&cfg.node)?);
        h.insert("project_id", value(&cfg.project_id)?);
        h.insert("connectionuse", HeaderValue::from_static("msg"));
        let (ws, _) = async_tungstenite::client_async(req, stream)
            .await
            .map_err(|e| {
                CloudError::protocol(&format!("websocket handshake with {url}"), e.to_string())
            })?;
        Ok(ws)
    })
    .await
}

/// Serves one connection until it breaks; returns why it ended.
async fn serve(
    link: &CloudLink,
    dir: &CertDir,
    ws: Ws,
    down_tx: &async_channel::Sender<Message>,
) -> String {
    let (mut tx, mut rx) = ws.split();
    link.inner.online.store(true, Ordering::SeqCst);
    let heartbeat = link.config().heartbeat;
    // When a frame last came, in ms since `started`: a cloud that vanished without a FIN
    // (NAT timeout, dead link) is noticed by its unanswered pings, not by a write failing.
    let started = Instant::now();
    let last_rx = AtomicU64::new(0);

    let writer = async {
        // What waited while offline goes first.
        let kept = link.outbox().drain();
        if !kept.is_empty() {
            tracing::info!(count = kept.len(), "sending what was kept while offline");
        }
        let mut kept = kept.into_iter();
        let mut next_keepalive = Instant::now() + heartbeat;
        loop {
            let mut ping = false;
            let msg = match kept.next() {
                Some(m) => m,
                None => {
                    let next =
                        smol::future::or(async { Some(link.inner.out_rx.recv().await) }, async {
                            smol::Timer::at(next_keepalive).await;
                            None
                        })
                        .await;
                    match next {
                        Some(Ok(m)) => m,
                        Some(Err(_)) => return "the link was shut down".to_string(),
                        None => {
                            next_keepalive = Instant::now() + heartbeat;
                            ping = true;
                            keepalive()
                        }
                    }
                }
            };
            let text = String::from_utf8_lossy(&msg.to_json()).into_owned();
            let mut sent = tx.send(Frame::text(text)).await;
            if ping && sent.is_ok() {
                // CloudHub's websocket library answers pings by itself.
                sent = tx.send(Frame::Ping(Default::default())).await;
            }
            if let Err(e) = sent {
                if worth_keeping(&msg) {
                    let mut outbox = link.outbox();
                    outbox.put(msg);
                    kept.for_each(|m| outbox.put(m));
                }
                return format!("sending: {e}");
            }
        }
    };

    let reader = async {
        loop {
            let next = rx.next().await;
            last_rx.store(started.elapsed().as_millis() as u64, Ordering::SeqCst);
            let bytes = match next {
                None => return "the cloud closed the connection".to_string(),
                Some(Err(e)) => return format!("reading: {e}"),
                Some(Ok(Frame::Text(t))) => t.as_bytes().to_vec(),
                Some(Ok(Frame::Binary(b))) => b.to_vec(),
                Some(Ok(Frame::Close(f))) => {
                    return format!("the cloud closed the connection ({f:?})")
                }
                Some(Ok(_)) => continue, // ping/pong: tungstenite answers pings itself
            };
            let msg = match Message::from_json(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    // As CloudHub does with a frame it cannot read: drop the connection; the
                    // cloud resends what it has no ACK for once we are back.
                    let preview: String =
                        String::from_utf8_lossy(&bytes).chars().take(120).collect();
                    tracing::warn!(error = %e, frame = %preview, "a frame from the cloud does not decode");
                    return format!("undecodable frame from the cloud: {e}");
                }
            };
            dispatch(link, msg, down_tx).await;
        }
    };

    let watchdog = async {
        let limit = heartbeat * 3;
        loop {
            smol::Timer::after(heartbeat).await;
            let seen = Duration::from_millis(last_rx.load(Ordering::SeqCst));
            let silent = started.elapsed().saturating_sub(seen);
            if silent > limit {
                return format!(
                    "nothing from the cloud for {}s, pings unanswered",
                    silent.as_secs_f32().round()
                );
            }
        }
    };

    let register = async {
        while !link.is_registered() {
            match link.register().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "node registration failed; retrying");
                    smol::Timer::after(Duration::from_secs(10)).await;
                }
            }
        }
        smol::future::pending::<String>().await
    };

    smol::future::or(
        smol::future::or(reader, smol::future::or(writer, watchdog)),
        smol::future::or(register, renewal(link, dir)),
    )
    .await
}

/// Answers to our requests resolve them; other answers are only logged; the rest goes to
/// MetaManager.
async fn dispatch(link: &CloudLink, msg: Message, down_tx: &async_channel::Sender<Message>) {
    let parent = &msg.header.parent_id;
    if !parent.is_empty() {
        if let Some(waiter) = link.pending().remove(parent) {
            let _ = waiter.try_send(msg);
            return;
        }
    }
    // The Node itself (CloudCore sends it down when it changed, e.g. marked Unknown by the node
    // controller): for the node status task, not MetaManager (the node's row is its own
    // record). ACKed like any object from the cloud.
    let node_resource = format!("null/node/{}", link.config().node);
    if msg.route.resource == node_resource
        && matches!(msg.route.operation.as_str(), op::INSERT | op::UPDATE)
    {
        if msg.content.is_object() {
            link.cloud_node_seen(msg.content.clone());
        }
        link.post(msg.response(serde_json::json!("OK")));
        return;
    }
    // A DynamicController answer whose request gave up waiting (a late list of services):
    // nothing to store or ACK.
    if msg.route.operation == application::APPLICATION_RESPONSE {
        tracing::debug!(resource = %msg.route.resource, "a late answer of the DynamicController dropped");
        return;
    }
    if matches!(msg.route.operation.as_str(), op::RESPONSE | op::ERROR) {
        match super::answer_error(&msg.content) {
            Some(e) => {
                tracing::warn!(resource = %msg.route.resource, error = %e, "the cloud refused a message")
            }
            None => tracing::debug!(resource = %msg.route.resource, "the cloud answered"),
        }
        return;
    }
    let _ = down_tx.send(msg).await;
}

/// Renews the certificate when due, without dropping the connection (the next one uses it).
/// The wall clock is looked at again every hour: edge devices often set theirs late.
async fn renewal(link: &CloudLink, dir: &CertDir) -> String {
    const RETRY: Duration = Duration::from_secs(600);
    const RECHECK: Duration = Duration::from_secs(3600);
    let cfg = link.config();
    // A certificate already past due was just tried by `connect`: do not try again at once.
    if let Ok(Some(id)) = dir.load() {
        if SystemTime::now() >= id.renew_at() {
            smol::Timer::after(RETRY).await;
        }
    }
    loop {
        let id = match dir.load() {
            Ok(Some(id)) => id,
            _ => return smol::future::pending().await,
        };
        let now = SystemTime::now();
        match id.renew_at().duration_since(now) {
            Ok(wait) => {
                smol::Timer::after(wait.min(RECHECK)).await;
            }
            Err(_) => {
                if let Err(e) = certs::renew(dir, &cfg.https_server, &cfg.node, &id).await {
                    tracing::warn!(error = %e, "renewing the node certificate failed; retrying in 10 minutes");
                }
                // Never more often than this, even if the cloud signs short-lived certificates.
                smol::Timer::after(RETRY).await;
            }
        }
    }
}

/// The link is down: requests fail now, messages queued for the writer wait in the outbox.
fn offline(link: &CloudLink) {
    link.inner.online.store(false, Ordering::SeqCst);
    let mut outbox = link.outbox();
    while let Ok(m) = link.inner.out_rx.try_recv() {
        if worth_keeping(&m) {
            outbox.put(m);
        }
    }
    drop(outbox);
    // Dropping the waiters' senders tells them the connection is gone.
    link.pending().clear();
}

/// Keepalives, ACKs, queries and DynamicController requests (their waiter is gone with the
/// connection) are not worth resending on a later connection.
fn worth_keeping(m: &Message) -> bool {
    !matches!(
        m.route.operation.as_str(),
        op::KEEPALIVE | op::RESPONSE | op::QUERY | op::ERROR
    ) && m.route.group != application::DYNAMIC_CONTROLLER_GROUP
}

/// EdgeHub's keepalive.
pub fn keepalive() -> Message {
    Message::new("websocket", module::RESOURCE, op::KEEPALIVE, "node").with_content("ping".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metamanager::services;

    #[test]
    fn backoff_doubles_with_jitter_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let d: Vec<f64> = (0..10).map(|_| b.next_delay().as_secs_f64()).collect();
        assert!((0.8..=1.2).contains(&d[0]), "{d:?}");
        assert!((1.6..=2.4).contains(&d[1]), "{d:?}");
        assert!((3.2..=4.8).contains(&d[2]), "{d:?}");
        assert!(d[9] <= 60.0 && d[9] >= 48.0, "{d:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1200));
    }

    #[test]
    fn requests_are_not_kept_for_a_later_connection() {
        let list = services::list_request("edge-1");
        assert!(!worth_keeping(&list), "a list of services kept for later");
        let q = Message::new("edged", "meta", op::QUERY, "ns/configmap/c");
        assert!(!worth_keeping(&q));
        let p = Message::new("edged", "meta", op::PATCH, "ns/podpatch/p");
        assert!(worth_keeping(&p));
    }

    #[test]
    fn keepalive_shape() {
        let k = keepalive();
        let v: serde_json::Value = serde_json::from_slice(&k.to_json()).unwrap();
        assert_eq!(
            v["route"],
            serde_json::json!({"source":"websocket","group":"resource","resource":"node","operation":"keepalive"})
        );
        assert_eq!(v["content"], "ping");
    }
}
