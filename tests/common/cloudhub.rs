//! A CloudHub stand-in for tests: KubeEdge's certificate server (`/ca.crt`, `/edge.crt`) and
//! its websocket endpoint, over real TLS on 127.0.0.1 with a CA made here.
//!
//! It speaks the wire protocol of DESIGN.md: the CA as raw DER, a CSR in the GET body signed
//! when the bearer token (or a client certificate) is good, and one JSON message per text
//! frame on `wss://…/<project>/<node>/events`, which requires the node's client certificate.

#![allow(dead_code)]

#[path = "apiserver.rs"]
pub mod apiserver;
#[path = "cloudstream.rs"]
pub mod cloudstream;

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::Message as Frame;
use edged::message::{op, Message};
use futures_rustls::TlsAcceptor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::stream::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the stand-in saw from the edge.
#[derive(Debug)]
pub enum Event {
    /// A websocket connection was accepted: its path and headers.
    Connected {
        path: String,
        node_id: String,
        project_id: String,
        connection_use: String,
    },
    /// A message from the edge.
    Frame(Message),
    /// The connection ended.
    Closed,
}

enum ToEdge {
    Text(String),
    Drop,
    /// Stop reading and writing, connection left open, until the receiver gets something.
    Freeze(async_channel::Receiver<()>),
}

/// Counters of the certificate server.
#[derive(Default)]
pub struct CertStats {
    pub ca_requests: AtomicUsize,
    pub cert_requests: AtomicUsize,
    /// Requests that came with a valid client certificate (renewals).
    pub renewals: AtomicUsize,
    /// The `NodeName` header and the CSR's common name of the last signed request.
    pub last_subject: Mutex<Option<(String, String)>>,
}

/// The stand-in; dropping it leaves its tasks to end with the test.
pub struct CloudHub {
    pub ca_der: Vec<u8>,
    pub https_addr: String,
    pub ws_addr: String,
    pub jwt: String,
    pub project_id: String,
    pub stats: Arc<CertStats>,
    /// While set, websocket connections are cut before the TLS handshake.
    pub refuse: Arc<AtomicBool>,
    /// Connections cut so.
    pub refused: Arc<AtomicUsize>,
    /// Every message the edge sent, in order (also those `frame` skipped).
    pub log: Arc<Mutex<Vec<Message>>>,
    /// Every message that went down to the edge, in order, as written on the connection
    /// (text frames that are no message left out).
    pub sent_down: Arc<Mutex<Vec<Message>>>,
    /// The cloud behind the hub: answers leases, node status, node queries, deletes, the
    /// ConfigMaps it holds and (its DynamicController) lists of its Services and gets of its
    /// pods as CloudCore and kube-apiserver do, and runs the node lifecycle check (see
    /// `apiserver.rs`).
    pub api: Arc<Mutex<apiserver::ApiServer>>,
    /// The CloudStream stand-in (the EdgeStream tunnel's server), same CA.
    pub stream: cloudstream::CloudStream,
    events: async_channel::Receiver<Event>,
    to_edge: async_channel::Sender<ToEdge>,
    _tasks: Vec<smol::Task<()>>,
}

struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
}

/// How long certificates the stand-in signs live.
pub enum Lifetime {
    /// Valid from an hour ago for a year.
    Long,
    /// Valid from 9 days ago to 1 day ahead: past the renewal point at once.
    RenewalDue,
}

impl CloudHub {
    /// Starts a stand-in for node certificates of `lifetime`.
    pub async fn start(lifetime: Lifetime) -> CloudHub {
        let ca = make_ca();
        let ca_der = ca.der.to_vec();
        let (server_chain, server_key) = server_cert(&ca);
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        // 10002: client certificates optional (bootstrap has none, renewal has one).
        let optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .allow_unauthenticated()
            .build()
            .unwrap();
        let https_cfg = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(optional)
            .with_single_cert(server_chain.clone(), server_key.clone_key())
            .unwrap();
        // 10000: the node certificate is required.
        let required = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .unwrap();
        let ws_cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(required)
            .with_single_cert(server_chain, server_key)
            .unwrap();

        let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https_addr = https.local_addr().unwrap().to_string();
        let ws_addr = ws.local_addr().unwrap().to_string();
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2lnbmF0dXJl".to_string();
        let stats = Arc::new(CertStats::default());
        let refuse = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let (ev_tx, events) = async_channel::unbounded();
        let (to_edge, to_edge_rx) = async_channel::unbounded();
        let project_id = edged::cloudlink::DEFAULT_PROJECT_ID.to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sent_down = Arc::new(Mutex::new(Vec::new()));
        let api = Arc::new(Mutex::new(apiserver::ApiServer::with_root_ca(pem(&ca_der))));

        let cert_task = smol::spawn(serve_certs(
            https,
            TlsAcceptor::from(Arc::new(https_cfg)),
            Arc::new(ca),
            jwt.clone(),
            stats.clone(),
            lifetime,
        ));
        let ws_acceptor = TlsAcceptor::from(Arc::new(ws_cfg));
        let known_api = api.clone();
        let stream = cloudstream::CloudStream::start(
            ws_acceptor.clone(),
            Arc::new(move |node: &str| known_api.lock().unwrap().nodes.contains_key(node)),
        )
        .await;
        let ws_task = smol::spawn(serve_ws(
            ws,
            ws_acceptor,
            ev_tx,
            to_edge_rx,
            refuse.clone(),
            refused.clone(),
            log.clone(),
            sent_down.clone(),
            api.clone(),
        ));
        let monitor_task = smol::spawn(monitor_nodes(api.clone(), to_edge.clone()));
        CloudHub {
            ca_der,
            https_addr,
            ws_addr,
            jwt,
            project_id,
            stats,
            refuse,
            refused,
            log,
            sent_down,
            api,
            stream,
            events,
            to_edge,
            _tasks: vec![cert_task, ws_task, monitor_task],
        }
    }

    /// A join token as `keadm gettoken` prints it.
    pub fn token(&self) -> String {
        format!(
            "{}.{}",
            edged::cloudlink::certs::ca_hash(&self.ca_der),
            self.jwt
        )
    }

    /// The next event.
    pub async fn event(&self) -> Event {
        self.events.recv().await.expect("the stand-in stopped")
    }

    /// The next message from the edge for which `pred` holds (others are skipped).
    pub async fn frame(&self, pred: impl Fn(&Message) -> bool) -> Message {
        loop {
            if let Event::Frame(m) = self.event().await {
                if pred(&m) {
                    return m;
                }
            }
        }
    }

    /// The next message from the edge with this operation and resource.
    pub async fn upstream(&self, operation: &str, resource: &str) -> Message {
        self.frame(|m| m.route.operation == operation && m.route.resource == resource)
            .await
    }

    /// The edge's answer to `m` (its `parent_msg_id` is `m`'s id).
    pub async fn ack_of(&self, m: &Message) -> Message {
        let id = m.header.id.clone();
        self.frame(move |f| f.header.parent_id == id).await
    }

    /// Every message the edge sent so far for which `pred` holds.
    pub fn sent(&self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|m| pred(m))
            .cloned()
            .collect()
    }

    /// The next connection's details.
    pub async fn connected(&self) -> Event {
        loop {
            let e = self.event().await;
            if matches!(e, Event::Connected { .. }) {
                return e;
            }
        }
    }

    /// Waits until the current connection ends.
    pub async fn closed(&self) {
        while !matches!(self.event().await, Event::Closed) {}
    }

    /// Sends a message to the edge.
    pub fn send(&self, m: &Message) {
        self.send_raw(String::from_utf8(m.to_json()).unwrap() + "\n");
    }

    /// Sends a text frame as it is.
    pub fn send_raw(&self, text: String) {
        self.to_edge.try_send(ToEdge::Text(text)).unwrap();
    }

    /// Answers `m` (operation `response`, parent_msg_id = its id) with `content`; returns the
    /// answer sent.
    pub fn reply(&self, m: &Message, content: serde_json::Value) -> Message {
        let mut r = Message::new(
            "edgecontroller",
            "resource",
            "response",
            m.route.resource.clone(),
        );
        r.header.parent_id = m.header.id.clone();
        r.content = content;
        self.send(&r);
        r
    }

    /// Goes silent on the current connection without closing it (a vanished peer) until the
    /// returned sender is used or dropped; then cuts it.
    pub fn freeze(&self) -> async_channel::Sender<()> {
        let (tx, rx) = async_channel::bounded(1);
        self.to_edge.try_send(ToEdge::Freeze(rx)).unwrap();
        tx
    }

    /// Admits `pod` as kube-apiserver does (defaults, service-account volume, tolerations,
    /// managedFields), binds it to `node` and sends it down as EdgeController does (`insert`,
    /// the pod as CloudCore relays it); returns it as the API server stores it.
    pub fn create_pod(&self, pod: &serde_json::Value, node: &str) -> serde_json::Value {
        let p = self.api.lock().unwrap().admit_pod(pod, node);
        self.send(&pod_message(op::INSERT, &p));
        p
    }

    /// Labels a pod as `kubectl label` does (metadata only); the `update` goes down, the pod as
    /// CloudCore relays it. Returns it.
    pub fn label_pod(&self, ns: &str, name: &str, key: &str, value: &str) -> Option<Message> {
        let p = self.api.lock().unwrap().label_pod(ns, name, key, value)?;
        let m = pod_message(op::UPDATE, &p);
        self.send(&m);
        Some(m)
    }

    /// Deletes a pod as `kubectl delete` does (graceful: an `update` with deletionTimestamp
    /// goes down; the pod is gone from the cloud once the edge confirms); returns the update.
    pub fn delete_pod(&self, ns: &str, name: &str, grace: Option<i64>) -> Option<Message> {
        let p = self.api.lock().unwrap().start_delete(ns, name, grace)?;
        let m = pod_message(op::UPDATE, &p);
        self.send(&m);
        Some(m)
    }

    /// Removes a pod's finalizers; a pod whose delete waited on them goes, and its `delete`
    /// goes down.
    pub fn remove_finalizers(&self, ns: &str, name: &str) {
        let gone = self.api.lock().unwrap().remove_finalizers(ns, name);
        if let Some(p) = gone {
            self.send(&pod_message(op::DELETE, &p));
        }
    }

    /// Whether the cloud still has the pod.
    pub fn has_pod(&self, ns: &str, name: &str) -> bool {
        self.api
            .lock()
            .unwrap()
            .pods
            .contains_key(&format!("{ns}/{name}"))
    }

    /// Cuts the current connection without a close frame.
    pub fn drop_connection(&self) {
        self.to_edge.try_send(ToEdge::Drop).unwrap();
    }
}

fn make_ca() -> Ca {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "KubeEdge");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = p.self_signed(&key).unwrap();
    Ca {
        der: cert.der().clone(),
        issuer: rcgen::Issuer::new(p, key),
    }
}

fn server_cert(ca: &Ca) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

async fn serve_certs(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ca: Arc<Ca>,
    jwt: String,
    stats: Arc<CertStats>,
    lifetime: Lifetime,
) {
    let lifetime = Arc::new(lifetime);
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, ca, jwt, stats, lifetime) = (
            acceptor.clone(),
            ca.clone(),
            jwt.clone(),
            stats.clone(),
            lifetime.clone(),
        );
        smol::spawn(async move {
            let Ok(mut s) = acceptor.accept(tcp).await else { return };
            let Some((path, headers, body)) = read_request(&mut s).await else { return };
            let has_client_cert = s.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
            let (status, body) = answer(&path, &headers, &body, has_client_cert, &ca, &jwt, &stats, &lifetime);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.close().await;
        })
        .detach();
    }
}

#[allow(clippy::too_many_arguments)]
fn answer(
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    has_client_cert: bool,
    ca: &Ca,
    jwt: &str,
    stats: &CertStats,
    lifetime: &Lifetime,
) -> (&'static str, Vec<u8>) {
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    match path {
        "/ca.crt" => {
            stats.ca_requests.fetch_add(1, Ordering::SeqCst);
            ("200 OK", ca.der.to_vec())
        }
        "/edge.crt" => {
            stats.cert_requests.fetch_add(1, Ordering::SeqCst);
            if has_client_cert {
                stats.renewals.fetch_add(1, Ordering::SeqCst);
            } else if header("Authorization") != format!("Bearer {jwt}") {
                return ("401 Unauthorized", b"invalid token".to_vec());
            }
            let Ok(mut csr) =
                rcgen::CertificateSigningRequestParams::from_der(&body.to_vec().into())
            else {
                return ("400 Bad Request", b"bad CSR".to_vec());
            };
            let cn = csr
                .params
                .distinguished_name
                .get(&rcgen::DnType::CommonName)
                .map(dn_text)
                .unwrap_or_default();
            *stats.last_subject.lock().unwrap() = Some((header("NodeName"), cn));
            let now = time::OffsetDateTime::now_utc();
            let (nb, na) = match lifetime {
                Lifetime::Long => (
                    now - time::Duration::hours(1),
                    now + time::Duration::days(365),
                ),
                Lifetime::RenewalDue => {
                    (now - time::Duration::days(9), now + time::Duration::days(1))
                }
            };
            csr.params.not_before = nb;
            csr.params.not_after = na;
            csr.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            match csr.signed_by(&ca.issuer) {
                Ok(c) => ("200 OK", c.der().to_vec()),
                Err(_) => ("500 Internal Server Error", b"cannot sign".to_vec()),
            }
        }
        _ => ("404 Not Found", b"not found".to_vec()),
    }
}

fn dn_text(v: &rcgen::DnValue) -> String {
    match v {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

/// Reads one HTTP request: path, headers, body (by Content-Length).
async fn read_request<S: smol::io::AsyncRead + Unpin>(
    s: &mut S,
) -> Option<(String, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
            let hs: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = hs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= n + len {
                return Some((req.path?.to_string(), hs, buf[n..n + len].to_vec()));
            }
        }
        let k = s.read(&mut chunk).await.ok()?;
        if k == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// A message from the cloud (EdgeController) about a pod, the pod as CloudCore relays it
/// (without the fields its k8s.io/api v1.32 does not know: [`apiserver::relayed`]).
pub fn pod_message(operation: &str, pod: &serde_json::Value) -> Message {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    Message::new(
        "edgecontroller",
        "resource",
        operation,
        format!("{ns}/pod/{name}"),
    )
    .with_content(apiserver::relayed(pod))
}

/// The node lifecycle controller: every 250 ms, nodes silent for the grace period are marked
/// Unknown and the changed Node goes down.
async fn monitor_nodes(
    api: Arc<Mutex<apiserver::ApiServer>>,
    to_edge: async_channel::Sender<ToEdge>,
) {
    loop {
        smol::Timer::after(Duration::from_millis(250)).await;
        let down = api.lock().unwrap().monitor(std::time::Instant::now());
        for m in down {
            let _ = to_edge.try_send(ToEdge::Text(String::from_utf8(m.to_json()).unwrap() + "\n"));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_ws(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    events: async_channel::Sender<Event>,
    to_edge: async_channel::Receiver<ToEdge>,
    refuse: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Message>>>,
    sent_down: Arc<Mutex<Vec<Message>>>,
    api: Arc<Mutex<apiserver::ApiServer>>,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        if refuse.load(Ordering::SeqCst) {
            refused.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
            continue;
        }
        // One connection at a time, as CloudHub keeps one per node.
        serve_conn(tcp, &acceptor, &events, &to_edge, &log, &sent_down, &api).await;
        let _ = events.send(Event::Closed).await;
    }
}

async fn serve_conn(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    events: &async_channel::Sender<Event>,
    to_edge: &async_channel::Receiver<ToEdge>,
    log: &Mutex<Vec<Message>>,
    sent_down: &Mutex<Vec<Message>>,
    api: &Mutex<apiserver::ApiServer>,
) {
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let seen = Arc::new(Mutex::new(None));
    let seen2 = seen.clone();
    // The callback's types are tungstenite's.
    #[allow(clippy::result_large_err)]
    let check = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (node, project) = (h("node_id"), h("project_id"));
        let path = req.uri().path().to_string();
        if node.is_empty() || path != format!("/{project}/{node}/events") {
            let mut e = ErrorResponse::new(Some("bad path or headers".into()));
            *e.status_mut() = async_tungstenite::tungstenite::http::StatusCode::BAD_REQUEST;
            return Err(e);
        }
        *seen2.lock().unwrap() = Some(Event::Connected {
            path,
            node_id: node,
            project_id: project,
            connection_use: h("ConnectionUse"),
        });
        Ok(resp)
    };
    let Ok(ws) = async_tungstenite::accept_hdr_async(tls, check).await else {
        return;
    };
    let connected = seen.lock().unwrap().take();
    // The session's node: CloudHub routes what the edge sends as this node's.
    let node = match &connected {
        Some(Event::Connected { node_id, .. }) => node_id.clone(),
        _ => String::new(),
    };
    if let Some(e) = connected {
        let _ = events.send(e).await;
    }
    let (mut tx, mut rx) = ws.split();
    loop {
        let next = smol::future::or(async { Err(rx.next().await) }, async {
            Ok(to_edge.recv().await)
        })
        .await;
        match next {
            Err(Some(Ok(Frame::Text(t)))) => match Message::from_json(t.as_bytes()) {
                Ok(m) => {
                    log.lock().unwrap().push(m.clone());
                    let (answer, down) = {
                        let mut api = api.lock().unwrap();
                        // CloudHub hands group `dynamiccontroller` to the DynamicController.
                        let answer = if m.route.group == "dynamiccontroller" {
                            api.answer_application(&m, &node)
                        } else {
                            api.answer(&m)
                        };
                        (answer, std::mem::take(&mut api.down))
                    };
                    let _ = events.send(Event::Frame(m)).await;
                    let down = down.iter().map(|p| pod_message(op::UPDATE, p));
                    for a in answer.into_iter().chain(down) {
                        let text = String::from_utf8(a.to_json()).unwrap() + "\n";
                        sent_down.lock().unwrap().push(a);
                        if tx.send(Frame::text(text)).await.is_err() {
                            return;
                        }
                    }
                }
                // CloudHub closes the connection on a frame it cannot read.
                Err(_) => return,
            },
            Err(Some(Ok(_))) => {}
            Err(_) => return,
            Ok(Ok(ToEdge::Text(t))) => {
                if let Ok(m) = Message::from_json(t.as_bytes()) {
                    sent_down.lock().unwrap().push(m);
                }
                if tx.send(Frame::text(t)).await.is_err() {
                    return;
                }
            }
            Ok(Ok(ToEdge::Freeze(thaw))) => {
                let _ = thaw.recv().await;
                return;
            }
            Ok(Ok(ToEdge::Drop)) | Ok(Err(_)) => return,
        }
    }
}

/// Runs `f` on a test thread, failing the test if it takes over `secs` seconds.
pub fn bounded<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    smol::block_on(smol::future::or(f, async move {
        smol::Timer::after(Duration::from_secs(secs)).await;
        panic!("the test did not finish within {secs}s");
    }))
}

// ---- service-account tokens (issue 22): CloudCore's CreateToken in front of kube-apiserver ----

/// Tokens issued so far by every stand-in of the test binary (each token differs).
static TOKENS_ISSUED: AtomicUsize = AtomicUsize::new(0);

/// The audience kube-apiserver fills in for a TokenRequest that names none.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

impl CloudHub {
    /// Answers a `query <ns>/serviceaccounttoken/<sa>` as CloudCore and kube-apiserver do (see
    /// [`token_answer`]); `pods` are the pods the cloud knows, `ns/name` to uid. Returns the
    /// answer sent.
    pub fn answer_token_query(
        &self,
        query: &Message,
        pods: &std::collections::BTreeMap<String, String>,
        max_expiration_seconds: Option<i64>,
    ) -> Message {
        self.reply(query, token_answer(query, pods, max_expiration_seconds))
    }

    /// The `kube-root-ca.crt` ConfigMap kube-controller-manager keeps in every namespace: the
    /// cluster's CA as PEM (this stand-in's CA), as CloudCore answers a query for it.
    pub fn root_ca_config_map(&self, namespace: &str) -> serde_json::Value {
        let pem = pem(&self.ca_der);
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": namespace,
                         "uid": format!("root-ca-{namespace}"), "resourceVersion": "1",
                         "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": pem}})
    }
}

/// A certificate as PEM.
pub fn pem(der: &[u8]) -> String {
    let b64 = edged::api::base64::encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// The content CloudCore answers a `serviceaccounttoken` query with, as kube-apiserver's
/// CreateToken decides: a `metadata.name` other than the service account's is 422 Invalid, a
/// bound pod the cloud does not know 404 NotFound, one whose uid differs 409 Conflict, a
/// lifetime under 600 s 422; else the TokenRequest itself with `status.token` (a JWT-shaped
/// string, new each call) and `status.expirationTimestamp`, its empty audiences filled with
/// the API server's, its lifetime cut to `max_expiration_seconds` when longer
/// (`--service-account-max-token-expiration`). Errors are `{"ErrStatus":{...}}`.
pub fn token_answer(
    query: &Message,
    pods: &std::collections::BTreeMap<String, String>,
    max_expiration_seconds: Option<i64>,
) -> serde_json::Value {
    use serde_json::json;
    let mut parts = query.route.resource.splitn(3, '/');
    let (ns, sa) = (
        parts.next().unwrap_or("").to_string(),
        parts.nth(1).unwrap_or("").to_string(),
    );
    let req = &query.content;
    let status = |code: i64, reason: &str, message: String, details: serde_json::Value| {
        json!({"ErrStatus": {"metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}})
    };
    let invalid = |field: &str, value: &serde_json::Value, why: &str| {
        status(
            422,
            "Invalid",
            format!("TokenRequest.authentication.k8s.io \"{sa}\" is invalid: {field}: Invalid value: {value}: {why}"),
            json!({"name": sa, "group": "authentication.k8s.io", "kind": "TokenRequest",
                   "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {why}"), "field": field}]}),
        )
    };
    let name = &req["metadata"]["name"];
    if name.as_str().is_some_and(|n| !n.is_empty() && n != sa) {
        return invalid(
            "metadata.name",
            name,
            "must match the service account name if specified",
        );
    }
    let exp = req["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
    if exp < 600 {
        return invalid(
            "spec.expirationSeconds",
            &req["spec"]["expirationSeconds"],
            "may not specify a duration less than 10 minutes",
        );
    }
    let bound = &req["spec"]["boundObjectRef"];
    let pod = bound["name"].as_str().unwrap_or("");
    let Some(uid) = pods.get(&format!("{ns}/{pod}")) else {
        return status(
            404,
            "NotFound",
            format!("pods \"{pod}\" not found"),
            json!({"name": pod, "kind": "pods"}),
        );
    };
    if bound["uid"].as_str() != Some(uid.as_str()) {
        return status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on Pod \"{pod}\": the UID in the bound object \
                 reference ({}) does not match the UID in record. The object might have been \
                 deleted and then recreated",
                bound["uid"].as_str().unwrap_or("")
            ),
            json!({"name": pod, "kind": "Pod"}),
        );
    }
    let exp = max_expiration_seconds.map_or(exp, |m| exp.min(m));
    let now = std::time::SystemTime::now();
    let iat = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let serial = TOKENS_ISSUED.fetch_add(1, Ordering::SeqCst);
    let mut audiences = req["spec"]["audiences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences.push(json!(API_AUDIENCE));
    }
    let b64url = |v: &serde_json::Value| {
        edged::api::base64::encode(v.to_string().as_bytes())
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    };
    let claims = json!({"aud": audiences, "exp": iat + exp as u64, "iat": iat,
        "iss": API_AUDIENCE, "jti": format!("jti-{serial}"),
        "kubernetes.io": {"namespace": ns, "pod": {"name": pod, "uid": uid},
                          "serviceaccount": {"name": sa, "uid": format!("sa-{ns}-{sa}")}},
        "nbf": iat, "sub": format!("system:serviceaccount:{ns}:{sa}")});
    let token = format!(
        "{}.{}.{}",
        b64url(&json!({"alg": "RS256", "kid": "stand-in"})),
        b64url(&claims),
        b64url(&json!(format!("signature-{serial}")))
    );
    let mut out = req.clone();
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    out["kind"] = json!("TokenRequest");
    out["metadata"]["name"] = json!(sa);
    out["metadata"]["namespace"] = json!(ns);
    out["metadata"]["creationTimestamp"] = serde_json::Value::Null;
    out["spec"]["audiences"] = json!(audiences);
    out["spec"]["expirationSeconds"] = json!(exp);
    out["status"] = json!({"token": token,
        "expirationTimestamp": edged::api::rfc3339(now + Duration::from_secs(exp as u64))});
    out
}
