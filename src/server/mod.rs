//! The kubelet's HTTP API on the node (`--address`, `--port`): what KubeEdge's EdgeStream
//! replays `kubectl logs` to, and what a local client can ask.
//!
//! - `GET /healthz`: `ok`.
//! - `GET /pods`: the node's pods (from the store, with their stored status) as a v1 PodList.
//! - `GET /containerLogs/{ns}/{pod}/{container}` with `follow`, `previous`, `tailLines`,
//!   `sinceSeconds`, `sinceTime`, `timestamps`, `limitBytes`: the log as [`crate::containerlogs`]
//!   finds it and [`crate::kuberuntime::logs`] reads it, chunked.
//! - `GET /stats/summary` (`only_cpu_and_memory`), `GET /metrics/resource`: the node's and
//!   pods' usage as [`crate::stats`] reads it ([`stats`]).
//!
//! Plain HTTP/1.1 (keep-alive) on loopback. Bound to any other address it serves TLS only,
//! with a client certificate required (verified against the node certificate's CA, see
//! [`tls`]); without a node certificate it does not start. Every connection is a task on the
//! agent's executor; reading files and the store goes through `smol::unblock` a step at a
//! time, so an idle follower holds no thread: it waits on inotify, a one-second tick (to see
//! the container end) and its socket (to see the client leave).
//!
//! - `/exec`, `/attach` (`GET`/`POST`) and `/portForward`: the connection is upgraded to SPDY/3.1
//!   or WebSocket ([`streaming`]) on the same stream `serve` holds, and the session runs there.

pub mod http;
pub mod routes;
pub mod stats;
pub mod streaming;
pub mod tls;

use crate::containerlogs::{self, ErrorKind, Target};
use crate::kuberuntime::logs::{Step, Watch};
use crate::metamanager::{Store, Table};
use crate::runtime::Runtime;
use routes::Route;
use serde_json::{json, Value};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::cell::Cell;
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use streaming::{spdy, websocket};

/// How long a kept-alive connection may sit idle between requests.
const IDLE: Duration = Duration::from_secs(60);
/// How long a request head (or a TLS handshake) may take once started.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 256;
/// How much log output goes in one chunk.
const LOG_CHUNK: usize = 64 * 1024;
/// How often a follower asks whether its container ended.
const LIVENESS_PERIOD: Duration = Duration::from_secs(1);

/// Where and what the server serves.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--address`.
    pub address: IpAddr,
    /// `--port`; 0: no server.
    pub port: u16,
    /// `--cert-dir`: the node certificate, its key and the CA, for TLS beyond loopback.
    pub cert_dir: PathBuf,
    /// `--pod-log-dir`.
    pub log_dir: PathBuf,
    /// The node's name (the summary's `nodeName`).
    pub node_name: String,
    /// `--root-dir` (nodefs, imagefs, writable layers and volumes, for the stats).
    pub root_dir: PathBuf,
}

struct Ctx {
    store: Arc<Store>,
    runtime: Arc<dyn Runtime>,
    log_dir: PathBuf,
    stats: Arc<stats::StatsCtx>,
    connections: Cell<usize>,
}

/// Serves the API until the task is dropped. A server that cannot start (the port taken, no
/// certificate for a non-loopback address) logs one error line and returns; the agent runs on.
pub async fn run(
    cfg: Config,
    store: Arc<Store>,
    runtime: Arc<dyn Runtime>,
    ex: Rc<smol::LocalExecutor<'static>>,
) {
    if cfg.port == 0 {
        tracing::info!("kubelet API off (--port 0)");
        return;
    }
    let acceptor = if cfg.address.is_loopback() {
        None
    } else {
        match tls::server_config(&cfg.cert_dir) {
            Ok(c) => Some(futures_rustls::TlsAcceptor::from(c)),
            Err(e) => {
                tracing::error!(address = %cfg.address, port = cfg.port, error = %e,
                    "kubelet API not started: beyond loopback it serves only TLS with client certificates, and there is no node certificate");
                return;
            }
        }
    };
    let listener = match smol::net::TcpListener::bind((cfg.address, cfg.port)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %cfg.address, port = cfg.port, error = %e, "kubelet API not started: cannot listen");
            return;
        }
    };
    tracing::info!(address = %cfg.address, port = cfg.port, tls = acceptor.is_some(), "kubelet API listening");
    let stats = Arc::new(stats::StatsCtx {
        sources: crate::stats::Sources {
            node_name: cfg.node_name,
            layout: crate::runtime::cgroups::Layout::detect(),
            root_dir: cfg.root_dir,
            log_dir: cfg.log_dir.clone(),
        },
        rates: crate::stats::rate::RateCache::new(),
    });
    let ctx = Rc::new(Ctx {
        store,
        runtime,
        log_dir: cfg.log_dir,
        stats,
        connections: Cell::new(0),
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "kubelet API: accept failed");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        if ctx.connections.get() >= MAX_CONNECTIONS {
            tracing::warn!(peer = %peer, limit = MAX_CONNECTIONS, "kubelet API: too many connections, closing one");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (ctx, acceptor) = (ctx.clone(), acceptor.clone());
        ex.spawn(async move {
            ctx.connections.set(ctx.connections.get() + 1);
            match acceptor {
                None => serve(stream, &ctx).await,
                Some(a) => match timeout(HEAD_TIMEOUT, a.accept(stream)).await {
                    Some(Ok(s)) => serve(s, &ctx).await,
                    Some(Err(e)) => {
                        tracing::info!(peer = %peer, error = %e, "kubelet API: TLS handshake refused")
                    }
                    None => tracing::info!(peer = %peer, "kubelet API: TLS handshake timed out"),
                },
            }
            ctx.connections.set(ctx.connections.get() - 1);
        })
        .detach();
    }
}

/// `f`, or `None` after `d`.
async fn timeout<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(f.await) }, async {
        smol::Timer::after(d).await;
        None
    })
    .await
}

/// Serves the requests of one connection, one after the other.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, ctx: &Ctx) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let (req, used) = loop {
            match http::parse_request(&buf) {
                Ok(Some(r)) => break r,
                Ok(None) => {}
                Err(e) => {
                    let _ = s.write_all(&http::text(e.status, &e.message, false)).await;
                    let _ = s.close().await;
                    return;
                }
            }
            let wait = if buf.is_empty() { IDLE } else { HEAD_TIMEOUT };
            let mut tmp = [0u8; 4096];
            match timeout(wait, s.read(&mut tmp)).await {
                Some(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
                _ => return,
            }
        };
        buf.drain(..used);
        if req.content_length > 0 {
            // No route takes a body.
            let _ = s
                .write_all(&http::text(400, "request bodies are not accepted", false))
                .await;
            let _ = s.close().await;
            return;
        }
        let reusable = handle(&mut s, &req, ctx, &mut buf).await;
        if s.flush().await.is_err() || !(reusable && req.keep_alive) {
            let _ = s.close().await;
            return;
        }
    }
}

/// Answers one request; whether the connection can take another.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    req: &http::Request,
    ctx: &Ctx,
    buf: &mut Vec<u8>,
) -> bool {
    let ka = req.keep_alive;
    let route = routes::route(&req.method, &req.segments);
    let exec = matches!(route, Route::Exec { .. });
    let answer = match route {
        Route::Healthz => http::response(200, "text/plain; charset=utf-8", b"ok", ka),
        Route::Pods => {
            let store = ctx.store.clone();
            match smol::unblock(move || pod_list(&store)).await {
                Ok(body) => http::response(200, "application/json", &body, ka),
                Err(e) => http::text(500, &e, ka),
            }
        }
        Route::ContainerLogs {
            namespace,
            pod,
            container,
        } => return container_logs(s, ctx, namespace, pod, container, &req.query, ka).await,
        Route::Exec {
            namespace,
            pod,
            container,
        }
        | Route::Attach {
            namespace,
            pod,
            container,
        } => {
            let early = std::mem::take(buf);
            remote_command(s, early, req, ctx, &namespace, &pod, &container, exec).await;
            return false;
        }
        Route::PortForward { namespace, pod } => {
            port_forward(s, std::mem::take(buf), req, ctx, &namespace, &pod).await;
            return false;
        }
        Route::StatsSummary => {
            stats::summary(ctx.store.clone(), ctx.stats.clone(), &req.query, ka).await
        }
        Route::MetricsResource => {
            stats::resource_metrics(ctx.store.clone(), ctx.stats.clone(), ka).await
        }
        Route::MethodNotAllowed => http::text(405, "Method Not Allowed", ka),
        Route::NotFound => http::text(404, "404 page not found", ka),
    };
    s.write_all(&answer).await.is_ok()
}

/// The node's pods, each with its stored status, as a v1 PodList.
fn pod_list(store: &Store) -> Result<Vec<u8>, String> {
    let pods = store.list(Table::Pod).map_err(|e| e.to_string())?;
    let mut items = Vec::with_capacity(pods.len());
    for (key, mut pod) in pods {
        let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
        if let (Some(status), Some(obj)) = (
            containerlogs::stored_status(store, ns, name),
            pod.as_object_mut(),
        ) {
            obj.insert(
                "status".into(),
                serde_json::to_value(status).unwrap_or(Value::Null),
            );
        }
        items.push(pod);
    }
    let list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    serde_json::to_vec(&list).map_err(|e| e.to_string())
}

/// What woke an idle follower.
enum Wake {
    /// The log directory changed, or a second passed.
    Look,
    /// The client closed the connection (or sent something, which a log stream never takes).
    ClientGone,
}

/// Streams a container's log; whether the connection can take another request.
async fn container_logs<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ctx: &Ctx,
    namespace: String,
    pod: String,
    container: String,
    query: &[(String, String)],
    ka: bool,
) -> bool {
    let q = match routes::logs_query(query, SystemTime::now()) {
        Ok(q) => q,
        Err(m) => return s.write_all(&http::text(400, &m, ka)).await.is_ok(),
    };
    let (store, dir) = (ctx.store.clone(), ctx.log_dir.clone());
    let opened = smol::unblock(move || {
        let t =
            containerlogs::resolve(&store, &dir, &namespace, &pod, Some(&container), q.previous)?;
        let r = t.open(q.options)?;
        Ok::<_, containerlogs::LogsError>((t, r))
    })
    .await;
    let (target, mut reader) = match opened {
        Ok(x) => x,
        Err(e) => {
            let status = match e.kind {
                ErrorKind::NotFound => 404,
                ErrorKind::BadRequest => 400,
                ErrorKind::Internal => 500,
            };
            return s
                .write_all(&http::text(status, &e.message, ka))
                .await
                .is_ok();
        }
    };
    let pod_name = format!("{}/{}", target.namespace, target.pod);
    // Watch before reading, so no change between the last read and the wait is missed.
    let watch = if reader.following() {
        match Watch::new(&target.log_path).and_then(smol::Async::new) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(pod = %pod_name, container = %target.container, error = %e, "cannot watch the log; following by the second");
                None
            }
        }
    } else {
        None
    };
    if s.write_all(&http::chunked_head("text/plain; charset=utf-8", ka))
        .await
        .is_err()
    {
        return false;
    }
    let mut checked = Instant::now();
    loop {
        let step = smol::unblock(move || {
            let mut out = Vec::new();
            let step = reader.read(&mut out, LOG_CHUNK);
            (reader, out, step)
        })
        .await;
        let (r, out, step) = step;
        reader = r;
        if !out.is_empty()
            && (s.write_all(&http::chunk(&out)).await.is_err() || s.flush().await.is_err())
        {
            return false;
        }
        match step {
            Ok(Step::Data) => {}
            Ok(Step::Done) => break,
            Ok(Step::Idle) => {
                if checked.elapsed() >= LIVENESS_PERIOD {
                    checked = Instant::now();
                    if ended(ctx, &target).await {
                        reader.finish();
                        continue;
                    }
                }
                match idle_wait(s, watch.as_ref()).await {
                    Wake::Look => {}
                    Wake::ClientGone => return false,
                }
            }
            Err(e) => {
                // Cut short: the client sees the body end without its last chunk.
                tracing::warn!(pod = %pod_name, container = %target.container, error = %e, "log read failed");
                return false;
            }
        }
    }
    s.write_all(http::LAST_CHUNK).await.is_ok()
}

async fn ended(ctx: &Ctx, target: &Target) -> bool {
    let (store, t) = (ctx.store.clone(), target.clone());
    smol::unblock(move || t.ended(&store)).await
}

/// Waits for a change in the log directory, a second, or the client leaving.
async fn idle_wait<S: AsyncRead + Unpin>(s: &mut S, watch: Option<&smol::Async<Watch>>) -> Wake {
    let change = async {
        match watch {
            Some(w) => {
                let _ = w.readable().await;
                w.get_ref().clear();
            }
            None => smol::future::pending::<()>().await,
        }
        Wake::Look
    };
    let tick = async {
        smol::Timer::after(LIVENESS_PERIOD).await;
        Wake::Look
    };
    let client = async {
        let mut probe = [0u8; 1];
        let _ = s.read(&mut probe).await;
        Wake::ClientGone
    };
    smol::future::or(change, smol::future::or(tick, client)).await
}

/// The answer to a streaming request that is no upgrade (as the kubelet's upgrader says).
const NOT_UPGRADED: &str = "unable to upgrade: missing upgrade headers in request";

/// Serves `/exec` or `/attach`: checks the request and the container, then hands the
/// connection to the transport it asks for.
#[allow(clippy::too_many_arguments)]
async fn remote_command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    early: Vec<u8>,
    req: &http::Request,
    ctx: &Ctx,
    namespace: &str,
    pod: &str,
    container: &str,
    exec: bool,
) {
    let ws = websocket::is_upgrade(req);
    if !ws && !spdy::is_upgrade(req) {
        let _ = s.write_all(&http::text(400, NOT_UPGRADED, false)).await;
        return;
    }
    let q = match routes::stream_query(&req.query, exec) {
        Ok(q) => q,
        Err(m) => {
            let _ = s.write_all(&http::text(400, &m, false)).await;
            return;
        }
    };
    let (store, rt) = (ctx.store.clone(), ctx.runtime.clone());
    let (ns, p, c) = (
        namespace.to_string(),
        pod.to_string(),
        container.to_string(),
    );
    let found =
        smol::unblock(move || streaming::exec::find_container(&store, rt.as_ref(), &ns, &p, &c))
            .await;
    let id = match found {
        Ok(id) => id,
        Err(e) => {
            let _ = s.write_all(&http::text(e.status, &e.message, false)).await;
            return;
        }
    };
    tracing::info!(pod = %format!("{namespace}/{pod}"), container, exec, transport = if ws { "websocket" } else { "spdy" }, "stream session");
    let rt = ctx.runtime.clone();
    let opts = q.options;
    let command = q.command;
    let session: streaming::Session = if exec {
        Box::new(move |streams| Box::pin(streaming::exec::exec(rt, id, command, opts, streams)))
    } else {
        Box::new(move |streams| Box::pin(streaming::exec::attach(rt, id, opts, streams)))
    };
    if ws {
        websocket::serve_remotecommand(s, early, req, opts, session).await;
    } else {
        spdy::serve_remotecommand(s, early, req, opts, session).await;
    }
}

/// Serves `/portForward`: connections into the pod's network namespace.
async fn port_forward<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    early: Vec<u8>,
    req: &http::Request,
    ctx: &Ctx,
    namespace: &str,
    pod: &str,
) {
    let ws = websocket::is_upgrade(req);
    if !ws && !spdy::is_upgrade(req) {
        let _ = s.write_all(&http::text(400, NOT_UPGRADED, false)).await;
        return;
    }
    let (store, rt) = (ctx.store.clone(), ctx.runtime.clone());
    let key = format!("{namespace}/{pod}");
    let netns = smol::unblock(move || pod_netns(&store, rt.as_ref(), &key)).await;
    let netns = match netns {
        Ok(n) => n,
        Err((status, m)) => {
            let _ = s.write_all(&http::text(status, &m, false)).await;
            return;
        }
    };
    tracing::info!(pod = %format!("{namespace}/{pod}"), transport = if ws { "websocket" } else { "spdy" }, "port-forward session");
    let dial: streaming::Dial = std::rc::Rc::new(move |port| {
        let netns = netns.clone();
        Box::pin(async move {
            let std_stream = crate::prober::handlers::in_netns(netns, move || {
                std::net::TcpStream::connect(("127.0.0.1", port))
            })
            .await?;
            smol::net::TcpStream::try_from(std_stream)
        })
    });
    if ws {
        websocket::serve_portforward(s, early, req, dial).await;
    } else {
        spdy::serve_portforward(s, early, req, dial).await;
    }
}

/// The network namespace of pod `key` (`None`: the host's, for a hostNetwork pod).
fn pod_netns(store: &Store, rt: &dyn Runtime, key: &str) -> Result<Option<PathBuf>, (u16, String)> {
    let obj = store
        .get(Table::Pod, key)
        .map_err(|e| (500, e.to_string()))?
        .ok_or_else(|| (404, format!("pod {key} not found")))?;
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(|u| u.as_str())
        .unwrap_or_default();
    let sandboxes = rt.list_pod_sandboxes().map_err(|e| (500, e.to_string()))?;
    sandboxes
        .into_iter()
        .find(|sb| sb.uid == uid)
        .map(|sb| sb.netns)
        .ok_or_else(|| (404, format!("pod {key} has no sandbox (not running yet)")))
}
