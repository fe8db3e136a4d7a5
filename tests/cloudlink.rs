//! The cloud link against a CloudHub stand-in (tests/common/cloudhub.rs): certificate
//! bootstrap and renewal over real TLS, and the websocket link with a real LMDB store.

// Included by path: tests/common/ is shared and has no mod.rs of ours.
#[path = "common/cloudhub.rs"]
mod cloudhub;

use cloudhub::{bounded, CloudHub, Event, Lifetime};
use edged::cloudlink::certs::{self, CertDir};
use edged::cloudlink::{CloudError, CloudLink, LinkConfig};
use edged::message::{op, Message, Resource};
use edged::metamanager::{Change, MetaManager, Store, Table, Upstream};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const NODE: &str = "edge-1";

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn bootstrap_with_a_good_token_stores_the_certificate_0600() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let dir = tempfile::tempdir().unwrap();
        let cd = CertDir(dir.path().join("certs"));
        let id = certs::bootstrap(&cd, &hub.https_addr, NODE, &hub.token())
            .await
            .unwrap();
        for p in [cd.ca(), cd.cert(), cd.key()] {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        assert_eq!(id.ca.as_ref(), hub.ca_der.as_slice());
        assert_eq!(
            hub.stats.last_subject.lock().unwrap().clone(),
            Some((NODE.to_string(), format!("system:node:{NODE}")))
        );
        // What was stored loads back as the same identity.
        let loaded = cd.load().unwrap().unwrap();
        assert_eq!(loaded.cert, id.cert);
        assert!(std::time::SystemTime::now() < loaded.renew_at());
    });
}

#[test]
fn a_bad_token_is_refused_and_no_certificate_is_stored() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let dir = tempfile::tempdir().unwrap();
        let cd = CertDir(dir.path().join("certs"));
        let hash = certs::ca_hash(&hub.ca_der);
        let e = certs::bootstrap(&cd, &hub.https_addr, NODE, &format!("{hash}.not.the.jwt"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, CloudError::TokenRejected { status: 401, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("token"), "{e}");
        assert!(!cd.cert().exists() && !cd.key().exists());
        assert!(cd.load().unwrap().is_none());
    });
}

#[test]
fn a_wrong_ca_hash_is_refused_before_the_jwt_is_sent() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let dir = tempfile::tempdir().unwrap();
        let cd = CertDir(dir.path().join("certs"));
        let token = format!("{}.{}", "0".repeat(64), hub.jwt);
        let e = certs::bootstrap(&cd, &hub.https_addr, NODE, &token)
            .await
            .unwrap_err();
        assert!(matches!(e, CloudError::CaHashMismatch { .. }), "{e}");
        assert!(e.to_string().contains("sha256"), "{e}");
        assert_eq!(hub.stats.ca_requests.load(Ordering::SeqCst), 1);
        assert_eq!(hub.stats.cert_requests.load(Ordering::SeqCst), 0);
        assert!(!cd.cert().exists());
    });
}

#[test]
fn a_certificate_due_for_renewal_is_renewed_with_itself() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::RenewalDue).await;
        let dir = tempfile::tempdir().unwrap();
        let cd = CertDir(dir.path().join("certs"));
        let first = certs::bootstrap(&cd, &hub.https_addr, NODE, &hub.token())
            .await
            .unwrap();
        assert!(std::time::SystemTime::now() > first.renew_at());
        // No token: only the current certificate can get a new one.
        let renewed = certs::ensure(&cd, &hub.https_addr, NODE, None)
            .await
            .unwrap();
        assert_eq!(hub.stats.renewals.load(Ordering::SeqCst), 1);
        assert_ne!(renewed.cert, first.cert);
        assert_eq!(cd.load().unwrap().unwrap().cert, renewed.cert);
        assert_eq!(mode(&cd.key()), 0o600);
    });
}

/// A link to `hub` with a real store, running on smol's executor.
struct Edge {
    link: CloudLink,
    meta: Arc<MetaManager>,
    from_meta: async_channel::Receiver<Change>,
    _task: smol::Task<()>,
    _dir: tempfile::TempDir,
}

fn config(hub: &CloudHub, root: &std::path::Path, token: Option<String>) -> LinkConfig {
    LinkConfig {
        server: hub.ws_addr.clone(),
        https_server: hub.https_addr.clone(),
        node: NODE.into(),
        project_id: hub.project_id.clone(),
        cert_dir: root.join("certs"),
        token,
        heartbeat: Duration::from_millis(300),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        node_labels: vec![("zone".into(), "lab".into())],
        node_ip: Some("192.0.2.10".parse().unwrap()),
        root_dir: root.to_path_buf(),
        max_pods: 110,
        kubelet_port: 10350,
    }
}

fn start_edge(hub: &CloudHub) -> Edge {
    // Logs show with --nocapture (and for a failing test).
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("meta")).unwrap());
    let link = CloudLink::new(config(hub, dir.path(), Some(hub.token())));
    let (tx, from_meta) = async_channel::unbounded();
    let meta = Arc::new(MetaManager::new(store, tx, Arc::new(link.clone())));
    let task = smol::spawn(edged::cloudlink::run(link.clone(), meta.clone()));
    Edge {
        link,
        meta,
        from_meta,
        _task: task,
        _dir: dir,
    }
}

/// Connects and answers the registration with AlreadyExists, as a cloud that knew the node.
async fn connect_and_register(hub: &CloudHub, edge: &Edge) -> Message {
    match hub.connected().await {
        Event::Connected {
            path,
            node_id,
            project_id,
            connection_use,
        } => {
            assert_eq!(path, format!("/{}/{NODE}/events", hub.project_id));
            assert_eq!(node_id, NODE);
            assert_eq!(project_id, hub.project_id);
            assert_eq!(connection_use, "msg");
        }
        e => panic!("{e:?}"),
    }
    let reg = hub
        .frame(|m| {
            m.route.operation == op::INSERT && m.route.resource == format!("null/node/{NODE}")
        })
        .await;
    hub.reply(
        &reg,
        json!({"Object": null, "Err": {"ErrStatus": {"code": 409, "reason": "AlreadyExists", "message": "nodes \"edge-1\" already exists"}}}),
    );
    while !edge.link.is_registered() {
        smol::Timer::after(Duration::from_millis(20)).await;
    }
    reg
}

fn configmap_insert(name: &str, v: &str) -> Message {
    Message::new(
        "edgecontroller",
        "resource",
        op::INSERT,
        format!("default/configmap/{name}"),
    )
    .with_content(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}, "data": {"k": v}}))
}

async fn ack_of(hub: &CloudHub, m: &Message) -> Message {
    let id = m.header.id.clone();
    hub.frame(move |f| f.header.parent_id == id).await
}

#[test]
fn connects_registers_and_sends_keepalives() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let edge = start_edge(&hub);
        let reg = connect_and_register(&hub, &edge).await;
        assert_eq!(reg.route.source, "edged");
        assert_eq!(reg.route.group, "meta");
        let labels = &reg.content["metadata"]["labels"];
        assert_eq!(labels["node-role.kubernetes.io/edge"], "");
        assert_eq!(labels["zone"], "lab");
        assert_eq!(
            reg.content["status"]["addresses"][0]["address"],
            "192.0.2.10"
        );
        assert!(edge.link.is_online());
        // Five heartbeats: past the 3-heartbeat silence limit, so the pings must be answered
        // for the connection to stay up.
        let mut keepalives = 0;
        while keepalives < 5 {
            match hub.event().await {
                Event::Frame(k) if k.route.operation == op::KEEPALIVE => {
                    assert_eq!(k.route.source, "websocket");
                    assert_eq!(k.route.group, "resource");
                    assert_eq!(k.route.resource, "node");
                    assert_eq!(k.content, "ping");
                    keepalives += 1;
                }
                Event::Frame(_) => {}
                e => panic!("the connection should stay up: {e:?}"),
            }
        }
        // The certificate it bootstrapped is kept for the next start.
        assert_eq!(mode(&edge.link.config().cert_dir.join("node.key")), 0o600);
    });
}

#[test]
fn a_downstream_configmap_is_stored_acked_and_a_resend_is_harmless() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let edge = start_edge(&hub);
        connect_and_register(&hub, &edge).await;
        let m = configmap_insert("app", "v1");
        hub.send(&m);
        let ack = ack_of(&hub, &m).await;
        assert_eq!(ack.route.operation, op::RESPONSE);
        assert_eq!(ack.route.resource, "default/configmap/app");
        assert_eq!(ack.content, "OK");
        let stored = edge
            .meta
            .store()
            .get(Table::ConfigMap, "default/app")
            .unwrap();
        assert_eq!(stored.unwrap()["data"]["k"], "v1");
        assert_eq!(
            edge.from_meta.recv().await.unwrap().to_string(),
            "change default/configmap/app"
        );
        // The cloud resends (same msg_id) when an ACK is slow: ACKed again, nothing changes.
        hub.send(&m);
        let again = ack_of(&hub, &m).await;
        assert_eq!(again.content, "OK");
        assert!(edge.from_meta.try_recv().is_err());
        let stored = edge
            .meta
            .store()
            .get(Table::ConfigMap, "default/app")
            .unwrap();
        assert_eq!(stored.unwrap()["data"]["k"], "v1");
    });
}

#[test]
fn a_configmap_query_is_answered_by_the_cloud_and_stored() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let edge = start_edge(&hub);
        connect_and_register(&hub, &edge).await;
        let meta = edge.meta.clone();
        let query = smol::spawn(async move {
            meta.query(
                Table::ConfigMap,
                &Resource::new("default", "configmap", "remote"),
            )
            .await
        });
        let q = hub
            .frame(|m| {
                m.route.operation == op::QUERY && m.route.resource == "default/configmap/remote"
            })
            .await;
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "remote", "namespace": "default"}, "data": {"from": "cloud"}});
        hub.reply(&q, obj.clone());
        assert_eq!(query.await.unwrap(), Some(obj.clone()));
        assert_eq!(
            edge.meta
                .store()
                .get(Table::ConfigMap, "default/remote")
                .unwrap(),
            Some(obj)
        );
        // A request nobody answers times out instead of hanging.
        let ask = Message::new("edged", "meta", op::QUERY, "default/secret/none");
        let e = edge
            .link
            .request(ask, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("did not answer"), "{e}");
    });
}

#[test]
fn after_a_drop_the_link_reconnects_and_sends_what_was_kept_offline() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let edge = start_edge(&hub);
        connect_and_register(&hub, &edge).await;
        hub.refuse.store(true, Ordering::SeqCst);
        hub.drop_connection();
        hub.closed().await;
        while edge.link.is_online() {
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        let ask = Message::new("edged", "meta", op::QUERY, "default/secret/s");
        assert_eq!(
            edge.link
                .request(ask, Duration::from_secs(5))
                .await
                .unwrap_err(),
            edged::metamanager::UpstreamError::Offline
        );
        // Two statuses of one pod while offline: only the newest goes up.
        edge.link.post(Message::pod_status_patch(
            "default",
            "web",
            "uid-1",
            &json!({"phase": "Pending"}),
        ));
        edge.link.post(Message::pod_status_patch(
            "default",
            "web",
            "uid-1",
            &json!({"phase": "Running"}),
        ));
        edge.link
            .send_node_status(json!({"status": {"conditions": []}}));
        assert_eq!(edge.link.outboxed(), 2);
        // Let it fail to reconnect a few times (back-off 50..200 ms here), then let it in.
        while hub.refused.load(Ordering::SeqCst) < 3 {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        assert!(!edge.link.is_online());
        hub.refuse.store(false, Ordering::SeqCst);
        hub.connected().await;
        let p = hub.frame(|m| m.route.operation == op::PATCH).await;
        assert_eq!(p.route.resource, "default/podpatch/web");
        let patch: serde_json::Value = serde_json::from_str(p.content.as_str().unwrap()).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {"uid": "uid-1"}, "status": {"phase": "Running"}})
        );
        let n = hub.frame(|m| m.route.operation == op::PATCH).await;
        assert_eq!(n.route.resource, format!("null/nodepatch/{NODE}"));
        assert!(n.content.is_string());
        assert_eq!(edge.link.outboxed(), 0);
    });
}

#[test]
fn a_cloud_that_goes_silent_is_noticed_and_the_link_reconnects() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let edge = start_edge(&hub);
        connect_and_register(&hub, &edge).await;
        // No FIN, no RST: only the unanswered pings (3 heartbeats) tell the link.
        let thaw = hub.freeze();
        while edge.link.is_online() {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        drop(thaw);
        hub.closed().await;
        hub.connected().await;
        let m = configmap_insert("back", "1");
        hub.send(&m);
        assert_eq!(ack_of(&hub, &m).await.content, "OK");
    });
}

#[test]
fn a_garbled_frame_does_not_crash_the_link() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let edge = start_edge(&hub);
        connect_and_register(&hub, &edge).await;
        hub.send_raw("{\"header\":{\"timestamp\":\"soon\"},\"route\":{}}\n".into());
        hub.send_raw("this is not json".into());
        // The link drops the connection, as CloudHub does, and comes back.
        hub.closed().await;
        hub.connected().await;
        let m = configmap_insert("after", "ok");
        hub.send(&m);
        assert_eq!(ack_of(&hub, &m).await.content, "OK");
        assert!(edge
            .meta
            .store()
            .get(Table::ConfigMap, "default/after")
            .unwrap()
            .is_some());
    });
}

#[test]
fn without_a_token_or_certificate_the_link_stays_offline_and_says_why() {
    bounded(60, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let dir = tempfile::tempdir().unwrap();
        let link = CloudLink::new(config(&hub, dir.path(), None));
        let store = Arc::new(Store::open(&dir.path().join("meta")).unwrap());
        let (tx, _rx) = async_channel::unbounded();
        let meta = Arc::new(MetaManager::new(store, tx, Arc::new(link.clone())));
        let task = smol::spawn(edged::cloudlink::run(link.clone(), meta));
        // It keeps retrying without crashing; statuses wait in the outbox.
        link.send_node_status(json!({"status": {}}));
        smol::Timer::after(Duration::from_millis(300)).await;
        assert!(!link.is_online());
        assert_eq!(link.outboxed(), 1);
        drop(task);
        let e = certs::ensure(
            &CertDir(dir.path().join("certs")),
            &hub.https_addr,
            NODE,
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("--token"), "{e}");
    });
}

/// Kills the agent if the test fails before stopping it.
struct Agent(Option<std::process::Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn the_agent_joins_with_its_flags_and_keeps_running() {
    bounded(120, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, hub.token() + "\n").unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_edged"))
            .args([
                "--root-dir",
                dir.path().to_str().unwrap(),
                "--node-name",
                NODE,
            ])
            .args([
                "--cloudhub-server",
                &hub.ws_addr,
                "--cloudhub-https-server",
                &hub.https_addr,
            ])
            .args(["--token-file", token_file.to_str().unwrap()])
            .args(["--node-labels", "site=test", "--heartbeat", "1s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let mut agent = Agent(Some(child));
        let reg = hub
            .frame(|m| {
                m.route.operation == op::INSERT && m.route.resource == format!("null/node/{NODE}")
            })
            .await;
        assert_eq!(reg.content["metadata"]["labels"]["site"], "test");
        hub.reply(&reg, json!({"Object": reg.content, "Err": null}));
        let k = hub.frame(|m| m.route.operation == op::KEEPALIVE).await;
        assert_eq!(k.content, "ping");
        assert_eq!(mode(&dir.path().join("certs/node.key")), 0o600);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut child = agent.0.take().unwrap();
        let status = smol::unblock(move || child.wait()).await.unwrap();
        assert!(status.success(), "{status}");
    });
}
