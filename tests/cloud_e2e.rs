//! The agent with a cloud, end to end (issue 8): the real `edged` binary joins a CloudHub
//! stand-in (tests/common/cloudhub.rs: real TLS, real websockets on 127.0.0.1) and runs the
//! pods the cloud sends on real shims and runc containers. Tests look through the stand-in
//! (what the edge sends up), `edged get ... -o json`, the CRI logs and runc's list.
//!
//! Each test has its own agent, root dir, stand-in and pod uids; runc's state dir is shared,
//! so only containers whose bundle lies under a test's own root are looked at. Run as root:
//! `cargo test --test cloud_e2e`.

#[path = "common/cloudhub.rs"]
mod cloudhub;
#[path = "common/host.rs"]
mod host;
#[allow(dead_code)]
#[path = "common/spdy.rs"]
mod spdy;

use cloudhub::{bounded, pod_message, CloudHub, Event, Lifetime};
use edged::message::{new_uuid, op, Message};
use host::{cri_lines, tail, wait_until, Host, BIN, IMAGE, WAIT};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// One agent joined (or trying to join) a stand-in: its dirs, process and cleanup.
struct Agent {
    dir: tempfile::TempDir,
    host: Host,
    node: String,
    child: Option<Child>,
    /// The agent's kubelet API port (its own, so agents of parallel tests do not collide).
    api_port: u16,
}

impl Agent {
    /// Dirs with the test image imported, and the agent started against `hub` with `token`.
    fn start(tag: &str, hub: &CloudHub, token: &str) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix(&format!("edged-cloud-{tag}-"))
            .tempdir_in("/tmp")
            .expect("temp dir");
        for d in ["root", "logs", "manifests"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let mut a = Agent {
            host: Host::new(dir.path()),
            dir,
            node: format!("edge-{tag}"),
            child: None,
            api_port: std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port"),
        };
        a.host.import_test_image();
        let token_file = a.dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let log = std::fs::File::create(a.log_path()).unwrap();
        let child = Command::new(BIN)
            .arg("--root-dir")
            .arg(a.root())
            .arg("--pod-log-dir")
            .arg(a.logs())
            .arg("--pod-manifest-path")
            .arg(a.manifests())
            .args(["--node-name", &a.node, "--node-ip", "127.0.0.1"])
            .args(["--cloudhub-server", &hub.ws_addr])
            .args(["--cloudhub-https-server", &hub.https_addr])
            .args(["--cloudstream-server", &hub.stream.addr])
            .args(["--port", &a.api_port.to_string()])
            .arg("--token-file")
            .arg(&token_file)
            .args(["--status-update-frequency", "1s"])
            .args(["--node-status-update-frequency", "1s"])
            .args(["--heartbeat", "1s", "--file-check-frequency", "1s"])
            // The shared test disk sits near image GC's 85 %: a DiskPressure that flaps would
            // change the node status under the tests' feet.
            .args([
                "--image-gc-high-threshold",
                "100",
                "--image-gc-low-threshold",
                "95",
            ])
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start edged");
        a.child = Some(child);
        a
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// The agent's own log.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the agent process still runs.
    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn pod(&self, name: &str) -> Option<Value> {
        self.host
            .get("pods")
            .into_iter()
            .find(|p| p["metadata"]["name"] == name)
    }

    /// `edged get node -o json`: this node's record.
    fn node_record(&self) -> Option<Value> {
        self.host.get("node").into_iter().next()
    }

    /// Polls until `f` gives a value; fails with `what` and the agent's log at the deadline.
    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.log(), f)
    }

    /// Waits for `fut` (something from the stand-in), failing with `what` and the agent's log.
    async fn within<T>(&self, what: &str, fut: impl std::future::Future<Output = T>) -> T {
        let log = self.log_path();
        smol::future::or(fut, async move {
            smol::Timer::after(WAIT).await;
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!(
                "{what} not seen in {WAIT:?}; agent log tail:\n{}",
                tail(&text, 40)
            );
        })
        .await
    }

    /// The running container `id`'s pid, as runc sees it.
    fn running_pid(&self, id: &str) -> Option<u32> {
        self.host
            .runc()
            .get(id)
            .filter(|e| e.status == "running")
            .map(|e| e.pid)
    }

    /// The log lines (message part of the CRI format) of a container's first instance.
    fn log_lines(&self, pod: &str, container: &str) -> Vec<String> {
        let prefix = format!("default_{pod}_");
        std::fs::read_dir(self.logs())
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .and_then(|e| std::fs::read_to_string(e.path().join(container).join("0.log")).ok())
            .map(|t| cri_lines(&t))
            .unwrap_or_default()
    }
}

impl Drop for Agent {
    /// Leaves nothing behind, also when the test failed: the agent, its shims and containers,
    /// runc state of its bundles, its mounts and pod cgroups. With `EDGED_TEST_KEEP_LOGS=DIR`
    /// the agent's log is copied there first.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(keep) = std::env::var_os("EDGED_TEST_KEEP_LOGS") {
            let name = self.dir.path().file_name().unwrap_or_default().to_owned();
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(self.log_path(), Path::new(&keep).join(name));
        }
        self.host.clean_up();
    }
}

// ---- objects as the cloud sends them ----

/// A full v1 Pod as EdgeController sends it: uid, apiVersion/kind, nodeName, one busybox
/// container running `script`, a 1 s grace period, and `extra` merged into the container.
fn cloud_pod(node: &str, name: &str, uid: &str, script: &str, extra: Value) -> Value {
    let mut c = json!({"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
                       "command": ["sh", "-c", script]});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid,
                     "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": node, "restartPolicy": "Always",
                 "terminationGracePeriodSeconds": 1, "containers": [c]},
        "status": {"phase": "Pending"}
    })
}

/// The same pod being deleted gracefully (what the cloud sends first: an update).
fn deleting(pod: &Value) -> Value {
    let mut p = pod.clone();
    p["metadata"]["deletionTimestamp"] = json!(edged::api::rfc3339(std::time::SystemTime::now()));
    p["metadata"]["deletionGracePeriodSeconds"] = json!(1);
    p["metadata"]["resourceVersion"] = json!("9");
    p
}

/// A podpatch's content (a JSON string) parsed.
fn patch_of(m: &Message) -> Value {
    serde_json::from_str(
        m.content
            .as_str()
            .expect("a podpatch carries a JSON string"),
    )
    .expect("a podpatch's string is JSON")
}

fn phase(patch: &Value) -> &str {
    patch["status"]["phase"].as_str().unwrap_or("")
}

/// The runtime id of the `app` container in a status (`containerd://<id>`).
fn app_id(status: &Value) -> String {
    status["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("containerd://")
        .to_string()
}

/// The first message the edge sent after the `from`th for which `pred` holds (waits for it;
/// unlike `CloudHub::frame` it skips nothing for later waits).
async fn seen(hub: &CloudHub, from: usize, pred: impl Fn(&Message) -> bool) -> Message {
    loop {
        let found = hub
            .log
            .lock()
            .unwrap()
            .iter()
            .skip(from)
            .find(|m| pred(m))
            .cloned();
        if let Some(m) = found {
            return m;
        }
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}

/// Waits for a podpatch of `name` for which `pred` holds; returns it parsed.
async fn podpatch(hub: &CloudHub, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let resource = format!("default/podpatch/{name}");
    let m = hub
        .frame(|m| {
            m.route.operation == op::PATCH && m.route.resource == resource && pred(&patch_of(m))
        })
        .await;
    assert_eq!(
        (m.route.source.as_str(), m.route.group.as_str()),
        ("edged", "meta")
    );
    patch_of(&m)
}

/// Sends `m` and waits for the edge's ACK: `response`, same resource, content "OK".
async fn send_acked(a: &Agent, hub: &CloudHub, m: &Message) {
    hub.send(m);
    let ack = a
        .within(
            &format!("the ACK of {} {}", m.route.operation, m.route.resource),
            hub.ack_of(m),
        )
        .await;
    assert_eq!(ack.route.operation, op::RESPONSE, "{ack:?}");
    assert_eq!(ack.route.resource, m.route.resource, "{ack:?}");
    assert_eq!(ack.content, "OK", "{ack:?}");
}

/// Waits for the registration (the stand-in's API server answers it with the created Node).
async fn accept_registration(a: &Agent, hub: &CloudHub) -> Message {
    a.within(
        "the node registration",
        hub.upstream(op::INSERT, &format!("null/node/{}", a.node)),
    )
    .await
}

// ---- tests ----

/// Scenarios 1, 2, 7 and 8 and the plain delete of 5: join with a token, register, report the
/// node; run a pod the cloud sends; survive a garbled frame; `edged get node`; delete.
#[test]
fn a_node_joins_runs_a_cloud_pod_and_reports_it() {
    bounded(150, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        // This test answers the registration itself, late.
        hub.api.lock().unwrap().answer_registrations = false;
        let mut a = Agent::start("join", &hub, &hub.token());
        match a.within("a websocket connection", hub.connected()).await {
            Event::Connected {
                path,
                node_id,
                connection_use,
                ..
            } => {
                assert_eq!(path, format!("/{}/{}/events", hub.project_id, a.node));
                assert_eq!(node_id, a.node);
                assert_eq!(connection_use, "msg");
            }
            e => panic!("{e:?}"),
        }
        // The certificate was bootstrapped with the token.
        assert!(hub.stats.cert_requests.load(Ordering::SeqCst) >= 1);
        assert!(a.root().join("certs/node.key").exists(), "no node key kept");
        let reg = a
            .within(
                "the node registration",
                hub.upstream(op::INSERT, &format!("null/node/{}", a.node)),
            )
            .await;
        assert_eq!(
            (reg.route.source.as_str(), reg.route.group.as_str()),
            ("edged", "meta")
        );
        assert_eq!(reg.content["kind"], "Node");
        assert_eq!(reg.content["metadata"]["name"], a.node.as_str());
        assert_eq!(
            reg.content["metadata"]["labels"]["node-role.kubernetes.io/edge"],
            ""
        );
        // A slow cloud: nothing about the node may go up before the node exists there.
        smol::Timer::after(Duration::from_millis(2500)).await;
        let early = hub.sent(|m| {
            m.route.resource.contains("/nodepatch/") || m.route.resource.contains("/lease/")
        });
        assert!(
            early.is_empty(),
            "node status or lease sent before the registration was accepted: {early:?}"
        );
        let answer = hub.api.lock().unwrap().register(&a.node, &reg.content);
        hub.reply(&reg, answer);
        let np = a
            .within(
                "the node status",
                hub.upstream(op::PATCH, &format!("null/nodepatch/{}", a.node)),
            )
            .await;
        let np: Value =
            serde_json::from_str(np.content.as_str().expect("nodepatch is a string")).unwrap();
        let ready = np["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(ready["status"], "True", "{np}");
        assert!(
            np["status"]["nodeInfo"]["kubeletVersion"].is_string(),
            "{np}"
        );
        let lease = a
            .within(
                "the node lease",
                hub.frame(|m| {
                    m.route.resource == format!("kube-node-lease/lease/{}", a.node)
                        && matches!(m.route.operation.as_str(), op::INSERT | op::UPDATE)
                }),
            )
            .await;
        assert_eq!(lease.content["spec"]["holderIdentity"], a.node.as_str());

        // A pod from the cloud: ACKed, run, reported Running with its uid.
        let uid = new_uuid();
        let pod = cloud_pod(&a.node, "web", &uid, "echo started; sleep 1000", json!({}));
        let insert = pod_message(op::INSERT, &pod);
        send_acked(&a, &hub, &insert).await;
        let running = a
            .within(
                "a Running podpatch of web",
                podpatch(&hub, "web", |p| phase(p) == "Running"),
            )
            .await;
        assert_eq!(running["metadata"]["uid"], uid.as_str(), "{running}");
        let status = &running["status"];
        assert!(
            status["containerStatuses"][0]["state"]["running"].is_object(),
            "{status}"
        );
        let id = app_id(status);
        let pid = a.running_pid(&id).unwrap_or_else(|| {
            panic!("container {id} is not running in runc: {:?}", a.host.runc())
        });
        a.wait_for("web's log line", || {
            a.log_lines("web", "app")
                .contains(&"started".to_string())
                .then_some(())
        });

        // `edged get node`: the record with the last status sent and the link's state.
        let rec = a.wait_for("the node record with the link up", || {
            a.node_record()
                .filter(|r| r["link"]["online"] == true && r["link"]["registered"] == true)
        });
        let sent: Vec<Value> = hub
            .sent(|m| m.route.resource == format!("null/nodepatch/{}", a.node))
            .iter()
            .map(|m| {
                serde_json::from_str::<Value>(m.content.as_str().unwrap()).unwrap()["status"]
                    .clone()
            })
            .collect();
        assert!(
            sent.contains(&rec["status"]),
            "the node record's status is none of those sent: {}",
            rec["status"]
        );

        // A garbled frame: the link drops the connection, comes back, the pod keeps running.
        hub.send_raw("{this is not a message\n".into());
        a.within("the connection closed after a garbled frame", hub.closed())
            .await;
        a.within("a new connection", hub.connected()).await;
        let cm = Message::new(
            "edgecontroller",
            "resource",
            op::INSERT,
            "default/configmap/after",
        )
        .with_content(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "after", "namespace": "default"}, "data": {"k": "v"}}));
        send_acked(&a, &hub, &cm).await;
        assert_eq!(
            a.running_pid(&id),
            Some(pid),
            "web's container changed after the garbled frame"
        );
        assert!(a.alive(), "the agent died");

        // A plain delete from the cloud: the pod stops and goes, and the edge confirms.
        send_acked(&a, &hub, &pod_message(op::DELETE, &pod)).await;
        let confirm = a
            .within(
                "the edge's delete of default/pod/web",
                hub.upstream(op::DELETE, "default/pod/web"),
            )
            .await;
        assert_eq!(
            (confirm.route.source.as_str(), confirm.route.group.as_str()),
            ("edged", "meta")
        );
        a.wait_for("web's container and sandbox gone", || {
            (a.host.runc().is_empty() && a.host.sandbox_uids().is_empty()).then_some(())
        });
        assert!(
            a.pod("web").is_none(),
            "web still listed: {:?}",
            a.pod("web")
        );
        assert!(a.alive());
    });
}

/// Scenario 3: a ConfigMap the store lacks is asked of the cloud; a NotFound answer leaves
/// the pod waiting with a reason that names it.
#[test]
fn config_maps_the_store_lacks_are_asked_of_the_cloud() {
    bounded(150, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("cm", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        let env = |cm: &str| json!({"env": [{"name": "VALUE", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "v"}}}]});
        let uid = new_uuid();
        let pod = cloud_pod(
            &a.node,
            "app",
            &uid,
            "echo value=$VALUE; sleep 1000",
            env("app-cm"),
        );
        send_acked(&a, &hub, &pod_message(op::INSERT, &pod)).await;
        let q = a
            .within(
                "the query of app-cm",
                hub.upstream(op::QUERY, "default/configmap/app-cm"),
            )
            .await;
        assert_eq!(
            (q.route.source.as_str(), q.route.group.as_str()),
            ("edged", "meta")
        );
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "app-cm", "namespace": "default", "uid": new_uuid()},
            "data": {"v": "from-cloud"}});
        let answer = hub.reply(&q, obj.clone());
        // The answer is an object from the cloud like any other: the edge ACKs it.
        let ack = a
            .within(
                "the ACK of the query's answer",
                seen(&hub, 0, |m| m.header.parent_id == answer.header.id),
            )
            .await;
        assert_eq!(ack.route.operation, op::RESPONSE, "{ack:?}");
        assert_eq!(ack.route.resource, "default/configmap/app-cm", "{ack:?}");
        assert_eq!(ack.content, "OK", "{ack:?}");
        let running = a
            .within(
                "a Running podpatch of app",
                podpatch(&hub, "app", |p| phase(p) == "Running"),
            )
            .await;
        assert_eq!(running["metadata"]["uid"], uid.as_str());
        a.wait_for("app's log line", || {
            let l = a.log_lines("app", "app");
            (!l.is_empty()).then_some(l)
        });
        assert_eq!(
            a.log_lines("app", "app"),
            vec!["value=from-cloud".to_string()]
        );
        let stored = a.host.get("configmaps");
        assert!(
            stored
                .iter()
                .any(|c| c["metadata"]["name"] == "app-cm" && c["data"]["v"] == "from-cloud"),
            "app-cm not stored: {stored:?}"
        );

        // Missing in the cloud too: the pod waits, and says for what.
        let lost = cloud_pod(
            &a.node,
            "lost",
            &new_uuid(),
            "echo value=$VALUE; sleep 1000",
            env("gone-cm"),
        );
        send_acked(&a, &hub, &pod_message(op::INSERT, &lost)).await;
        let q = a
            .within(
                "the query of gone-cm",
                hub.upstream(op::QUERY, "default/configmap/gone-cm"),
            )
            .await;
        hub.reply(
            &q,
            json!({"ErrStatus": {"metadata": {}, "status": "Failure",
                "message": "configmaps \"gone-cm\" not found", "reason": "NotFound",
                "details": {"name": "gone-cm", "kind": "configmaps"}, "code": 404}}),
        );
        let waiting = |s: &Value| {
            let w = &s["containerStatuses"][0]["state"]["waiting"];
            w["reason"] == "ContainerCreating"
                && w["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("\"gone-cm\" not found"))
        };
        let p = a
            .within(
                "a podpatch of lost waiting for gone-cm",
                podpatch(&hub, "lost", |p| waiting(&p["status"])),
            )
            .await;
        assert_eq!(phase(&p), "Pending", "{p}");
        let shown = a.wait_for("lost's status in edged get", || a.pod("lost"));
        assert!(waiting(&shown["status"]), "{}", shown["status"]);
        assert!(
            a.host
                .get("configmaps")
                .iter()
                .all(|c| c["metadata"]["name"] != "gone-cm"),
            "a NotFound answer was stored"
        );
        // Only app's container runs.
        let ids: Vec<String> = a.host.runc().into_keys().collect();
        assert_eq!(ids, vec![app_id(&running["status"])], "{:?}", a.host.runc());
    });
}

/// Scenarios 4 and 5: the cloud goes away; pods keep running; what changed meanwhile goes up
/// on reconnect (the newest per pod); a pod deleted while the node was away goes.
#[test]
fn the_cloud_away_and_back() {
    bounded(170, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("away", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        let web = cloud_pod(&a.node, "web", &new_uuid(), "sleep 1000", json!({}));
        let mut job = cloud_pod(&a.node, "job", &new_uuid(), "sleep 6; echo done", json!({}));
        job["spec"]["restartPolicy"] = json!("Never");
        send_acked(&a, &hub, &pod_message(op::INSERT, &web)).await;
        send_acked(&a, &hub, &pod_message(op::INSERT, &job)).await;
        let w = a
            .within(
                "web Running",
                podpatch(&hub, "web", |p| phase(p) == "Running"),
            )
            .await;
        // Both started together: the job's patch may have come before web's.
        a.within("job Running", async {
            while !hub
                .sent(|m| m.route.resource == "default/podpatch/job")
                .iter()
                .any(|m| phase(&patch_of(m)) == "Running")
            {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
        let web_id = app_id(&w["status"]);
        let web_pid = a.running_pid(&web_id).expect("web runs");

        // The cloud goes: connections are cut and refused.
        hub.refuse.store(true, Ordering::SeqCst);
        hub.drop_connection();
        a.within("the connection closed", hub.closed()).await;
        a.wait_for("the node record saying offline", || {
            a.node_record().filter(|r| r["link"]["online"] == false)
        });
        // The job ends while the node is away; its status waits for the link.
        a.wait_for("job Succeeded locally", || {
            a.pod("job").filter(|p| p["status"]["phase"] == "Succeeded")
        });
        let before = hub.sent(|m| m.route.resource == "default/podpatch/job");
        assert!(
            before.iter().all(|m| phase(&patch_of(m)) != "Succeeded"),
            "the job ended before the cloud went away: the test proves nothing"
        );
        // Past a few status periods, so the statuses are made while offline.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            hub.refused.load(Ordering::SeqCst) >= 1,
            "the agent did not try to reconnect"
        );
        assert_eq!(
            a.running_pid(&web_id),
            Some(web_pid),
            "web's container changed offline"
        );

        let from = hub.log.lock().unwrap().len();
        hub.refuse.store(false, Ordering::SeqCst);
        a.within("a new connection", hub.connected()).await;
        // The cloud may have marked the node NotReady meanwhile: its status goes up at once,
        // changed or not, and so does the lease.
        let node = a.node.clone();
        a.within(
            "the node status after the reconnect",
            seen(&hub, from, |m| {
                m.route.resource == format!("null/nodepatch/{node}")
            }),
        )
        .await;
        a.within(
            "the node lease after the reconnect",
            seen(&hub, from, |m| {
                m.route.resource == format!("kube-node-lease/lease/{node}")
            }),
        )
        .await;
        // The first status of the job after the reconnect is its newest.
        let first = a
            .within(
                "job's podpatch after the reconnect",
                podpatch(&hub, "job", |_| true),
            )
            .await;
        assert_eq!(phase(&first), "Succeeded", "{first}");
        assert_eq!(first["metadata"]["uid"], job["metadata"]["uid"]);
        assert_eq!(
            a.running_pid(&web_id),
            Some(web_pid),
            "web's container changed"
        );

        // Away again; meanwhile the cloud deletes web: on reconnect it sends the graceful delete.
        hub.refuse.store(true, Ordering::SeqCst);
        hub.drop_connection();
        a.within("the connection closed", hub.closed()).await;
        a.wait_for("the node record saying offline", || {
            a.node_record().filter(|r| r["link"]["online"] == false)
        });
        hub.refuse.store(false, Ordering::SeqCst);
        a.within("a new connection", hub.connected()).await;
        send_acked(&a, &hub, &pod_message(op::UPDATE, &deleting(&web))).await;
        a.within(
            "the edge's delete of default/pod/web",
            hub.upstream(op::DELETE, "default/pod/web"),
        )
        .await;
        a.wait_for("web's container gone", || {
            a.running_pid(&web_id).is_none().then_some(())
        });
        a.wait_for("web gone from the store", || {
            a.pod("web").is_none().then_some(())
        });
        assert!(a.pod("job").is_some(), "the job went too");
        let web_uid = web["metadata"]["uid"].as_str().unwrap();
        a.wait_for("web's sandbox gone", || {
            (!a.host.sandbox_uids().contains(web_uid)).then_some(())
        });
    });
}

/// Scenario 6: a bad token is a clear error in the log; the agent runs offline.
#[test]
fn a_bad_token_leaves_the_agent_running_offline() {
    bounded(120, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let token = format!(
            "{}.not.the.jwt",
            edged::cloudlink::certs::ca_hash(&hub.ca_der)
        );
        let mut a = Agent::start("token", &hub, &token);
        let local = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "local", "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
                 "command": ["sh", "-c", "echo local; sleep 1000"]}]}});
        std::fs::write(a.manifests().join("local.json"), local.to_string()).unwrap();
        a.wait_for("the token refusal in the agent's log", || {
            a.log()
                .lines()
                .find(|l| l.contains("ERROR") && l.contains("refused the join token"))
                .map(str::to_string)
        });
        a.wait_for("the manifest pod running", || {
            a.pod("local").filter(|p| p["status"]["phase"] == "Running")
        });
        a.wait_for("local's log line", || {
            a.log_lines("local", "app")
                .contains(&"local".to_string())
                .then_some(())
        });
        assert!(a.alive(), "the agent stopped");
        assert!(hub.stats.cert_requests.load(Ordering::SeqCst) >= 1);
        assert!(hub.log.lock().unwrap().is_empty(), "the agent got through");
        let rec = a.wait_for("the node record", || a.node_record());
        assert_eq!(rec["link"]["online"], false, "{rec}");
        assert_eq!(rec["link"]["registered"], false, "{rec}");
    });
}

/// A weak link: the connection drops while the edge waits for a ConfigMap and while a pod is
/// being deleted. Once back, the ConfigMap is asked for again and the delete is confirmed.
#[test]
fn a_link_lost_mid_way_loses_nothing() {
    bounded(150, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("weak", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        let web = cloud_pod(&a.node, "web", &new_uuid(), "sleep 1000", json!({}));
        send_acked(&a, &hub, &pod_message(op::INSERT, &web)).await;
        let w = a
            .within(
                "web Running",
                podpatch(&hub, "web", |p| phase(p) == "Running"),
            )
            .await;
        let web_id = app_id(&w["status"]);
        let env = json!({"env": [{"name": "VALUE", "valueFrom": {"configMapKeyRef": {"name": "slow-cm", "key": "v"}}}]});
        let slow = cloud_pod(
            &a.node,
            "slow",
            &new_uuid(),
            "echo value=$VALUE; sleep 1000",
            env,
        );
        send_acked(&a, &hub, &pod_message(op::INSERT, &slow)).await;
        // The query goes up; the cloud never answers it on this connection.
        a.within(
            "the query of slow-cm",
            hub.upstream(op::QUERY, "default/configmap/slow-cm"),
        )
        .await;
        // A graceful delete of web: `sleep` as PID 1 ignores SIGTERM, so it takes the 3 s grace.
        let mut del = deleting(&web);
        del["metadata"]["deletionGracePeriodSeconds"] = json!(3);
        send_acked(&a, &hub, &pod_message(op::UPDATE, &del)).await;
        hub.refuse.store(true, Ordering::SeqCst);
        hub.drop_connection();
        a.within("the connection closed", hub.closed()).await;
        a.wait_for("web gone while offline", || {
            (a.pod("web").is_none() && a.running_pid(&web_id).is_none()).then_some(())
        });
        assert!(
            hub.sent(|m| m.route.operation == op::DELETE).is_empty(),
            "web was gone before the link dropped: the test proves nothing"
        );
        // Past the worker's retry (5 s): slow's ConfigMap is looked for again while offline.
        std::thread::sleep(Duration::from_secs(6));
        let from = hub.log.lock().unwrap().len();
        hub.refuse.store(false, Ordering::SeqCst);
        a.within("a new connection", hub.connected()).await;
        let confirm = a
            .within(
                "the edge's delete of default/pod/web after the reconnect",
                seen(&hub, from, |m| {
                    m.route.operation == op::DELETE && m.route.resource == "default/pod/web"
                }),
            )
            .await;
        assert_eq!(confirm.route.source, "edged");
        let q = a
            .within(
                "the query of slow-cm again after the reconnect",
                seen(&hub, from, |m| {
                    m.route.operation == op::QUERY
                        && m.route.resource == "default/configmap/slow-cm"
                }),
            )
            .await;
        hub.reply(
            &q,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "slow-cm", "namespace": "default"}, "data": {"v": "late"}}),
        );
        a.within(
            "slow Running",
            seen(&hub, from, |m| {
                m.route.resource == "default/podpatch/slow" && phase(&patch_of(m)) == "Running"
            }),
        )
        .await;
        a.wait_for("slow's log line", || {
            let l = a.log_lines("slow", "app");
            (!l.is_empty()).then_some(l)
        });
        assert_eq!(a.log_lines("slow", "app"), vec!["value=late".to_string()]);
    });
}

// ---- the cluster as kube-apiserver and CloudCore run it (issue 22) ----

/// A pod as a user writes it for `kubectl apply` (no uid, no defaults).
fn user_pod(name: &str, script: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"run": name}},
           "spec": {"terminationGracePeriodSeconds": 2, "containers": [
               {"name": "app", "image": IMAGE, "command": ["sh", "-c", script]}]}})
}

/// The lease is renewed every 10 s with the resourceVersion of the last answer, so the API
/// server accepts every renewal and the node stays Ready for five minutes; a lease changed by
/// someone else (409) is read again and renewed in the same period; a node the cloud marks
/// Unknown while the agent is alive is Ready again within 15 s.
#[test]
fn the_node_stays_ready_in_the_cluster() {
    const MINUTES: u64 = 5;
    bounded(MINUTES * 60 + 120, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("ready", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        let node = a.node.clone();
        let ready = || hub.api.lock().unwrap().node_ready(&node);
        a.within("the node Ready in the cloud", async {
            while ready().as_deref() != Some("True") {
                smol::Timer::after(Duration::from_millis(200)).await;
            }
        })
        .await;
        // The lease names the Node as its owner, by the uid the registration answered.
        let node_uid = hub.api.lock().unwrap().nodes[&node]["metadata"]["uid"].clone();
        a.within("the lease in the cloud", async {
            while !hub.api.lock().unwrap().leases.contains_key(&node) {
                smol::Timer::after(Duration::from_millis(200)).await;
            }
        })
        .await;
        let lease = hub.api.lock().unwrap().leases[&node].clone();
        assert_eq!(lease["spec"]["holderIdentity"], node.as_str(), "{lease}");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 40, "{lease}");
        assert_eq!(
            lease["metadata"]["ownerReferences"][0]["uid"], node_uid,
            "{lease}"
        );
        assert_eq!(
            lease["metadata"]["ownerReferences"][0]["kind"], "Node",
            "{lease}"
        );

        let start = std::time::Instant::now();
        let mut not_ready = Vec::new();
        let mut conflict_made = false;
        let mut unknown_made: Option<std::time::Instant> = None;
        let mut recovered_in = None;
        while start.elapsed() < Duration::from_secs(MINUTES * 60) {
            smol::Timer::after(Duration::from_millis(500)).await;
            let r = ready();
            let t = start.elapsed().as_secs();
            // Minute 1: someone else writes the lease; the next renewal must read it again.
            if t >= 60 && !conflict_made {
                conflict_made = true;
                let mut api = hub.api.lock().unwrap();
                let l = api.leases.get_mut(&node).unwrap();
                l["metadata"]["resourceVersion"] = json!("999999");
            }
            // Minute 2: the cloud marks the node Unknown though the agent is alive.
            if t >= 120 && unknown_made.is_none() {
                let down = hub
                    .api
                    .lock()
                    .unwrap()
                    .mark_unknown(&node)
                    .expect("node was Ready");
                hub.send(&down);
                unknown_made = Some(std::time::Instant::now());
            }
            match (unknown_made, recovered_in) {
                (Some(at), None) => {
                    if r.as_deref() == Some("True") {
                        recovered_in = Some(at.elapsed());
                    } else {
                        assert!(
                            at.elapsed() < Duration::from_secs(15),
                            "the node was not Ready again within 15 s of being marked Unknown; agent log:\n{}",
                            tail(&a.log(), 40)
                        );
                    }
                }
                _ => {
                    if r.as_deref() != Some("True") {
                        not_ready.push((t, r));
                    }
                }
            }
        }
        assert!(
            not_ready.is_empty(),
            "the node was not Ready in the cloud at (seconds, status): {not_ready:?}; agent log:\n{}",
            tail(&a.log(), 40)
        );
        assert!(
            recovered_in.is_some(),
            "the node never came back after being marked Unknown"
        );
        let api = hub.api.lock().unwrap();
        let times: Vec<std::time::Instant> = api
            .renewals
            .iter()
            .filter(|(n, _)| *n == node)
            .map(|(_, t)| *t)
            .filter(|t| *t >= start)
            .collect();
        // Every 10 s: 30 in five minutes, give or take the edges.
        assert!(
            times.len() as u64 >= MINUTES * 6 - 2,
            "{} renewals in {MINUTES} min",
            times.len()
        );
        let gaps: Vec<u64> = times
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_secs())
            .collect();
        assert!(
            gaps.iter().all(|g| *g < 20),
            "a renewal gap of 20 s or more: {gaps:?}"
        );
        // The one conflict made above, and no 422 (a missing resourceVersion) ever.
        assert!(
            api.lease_refusals.contains(&409),
            "{:?}",
            api.lease_refusals
        );
        assert!(
            !api.lease_refusals.contains(&422),
            "{:?}",
            api.lease_refusals
        );
    });
}

/// A pod a finalizer keeps (as the e2e lifecycle-hook tests make them): the cloud has its
/// containers terminated before the edge confirms the delete; the pod that comes down again
/// (grace period 0) starts nothing and brings no Pending status over the terminated one;
/// once the finalizer goes, so does the pod.
#[test]
fn a_pod_kept_by_a_finalizer_shows_its_containers_terminated() {
    bounded(200, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("finalizer", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        let mut p = user_pod("held", "trap 'exit 0' TERM; while true; do sleep 0.2; done");
        p["metadata"]["finalizers"] = json!(["e2e.example.com/hold"]);
        p["spec"]["automountServiceAccountToken"] = json!(false);
        hub.create_pod(&p, &a.node);
        a.within(
            "held Running",
            podpatch(&hub, "held", |p| phase(p) == "Running"),
        )
        .await;
        hub.delete_pod("default", "held", None).unwrap();
        let finalizing = (
            "default/held".to_string(),
            cloudhub::apiserver::DeleteOutcome::Finalizing,
        );
        a.within("the delete confirmed", async {
            while !hub.api.lock().unwrap().deletes.contains(&finalizing) {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
        let terminated = |status: &Value| {
            let state = &status["containerStatuses"][0]["state"];
            state["terminated"]["exitCode"] == 0 && state["waiting"].is_null()
        };
        let stored = || hub.api.lock().unwrap().pods["default/held"]["status"].clone();
        assert!(terminated(&stored()), "{:#}", stored());
        // The pod came down again with grace period 0: nothing of it runs, and the
        // status in the cloud stays what it was (statuses go up every second here).
        std::thread::sleep(Duration::from_secs(4));
        let now = stored();
        assert!(terminated(&now), "{now:#}");
        // Stopped for good: Succeeded (the container ended with 0 on SIGTERM), as the kubelet
        // reports a terminated pod whatever its restart policy.
        assert_eq!(phase(&json!({"status": now})), "Succeeded", "{now:#}");
        assert!(a.host.sandbox_uids().is_empty());
        hub.remove_finalizers("default", "held");
        a.within("held gone from the cloud", async {
            while hub.has_pod("default", "held") {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(!a.log().contains("panicked"), "{}", tail(&a.log(), 30));
    });
}

/// A pod deleted in the cloud is gone from the cloud within its grace period + 5 s: the edge's
/// confirmation carries the uid precondition CloudCore needs. Also when the delete was made
/// while the node was offline (it goes down on the reconnect).
#[test]
fn cloud_deletes_finish_in_the_cloud() {
    bounded(200, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("delete", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        let mut pods = Vec::new();
        for name in ["web", "later"] {
            let mut p = user_pod(name, "trap 'exit 0' TERM; while true; do sleep 0.2; done");
            p["spec"]["automountServiceAccountToken"] = json!(false);
            let p = hub.create_pod(&p, &a.node);
            a.within(
                &format!("{name} Running"),
                podpatch(&hub, name, |p| phase(p) == "Running"),
            )
            .await;
            pods.push(p);
        }
        // Online: kubectl delete.
        let asked = std::time::Instant::now();
        hub.delete_pod("default", "web", None).unwrap();
        a.within("web gone from the cloud", async {
            while hub.has_pod("default", "web") {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(2 + 5), "web took {took:?} to go");
        let deletes = hub.api.lock().unwrap().deletes.clone();
        assert_eq!(
            deletes,
            vec![(
                "default/web".to_string(),
                cloudhub::apiserver::DeleteOutcome::Deleted
            )]
        );
        let confirm =
            hub.sent(|m| m.route.operation == op::DELETE && m.route.resource == "default/pod/web");
        assert_eq!(
            confirm[0].content,
            json!({"gracePeriodSeconds": 0, "preconditions": {"uid": pods[0]["metadata"]["uid"]}})
        );

        // Offline: the delete waits in the cloud and goes down on the reconnect.
        hub.refuse.store(true, Ordering::SeqCst);
        hub.drop_connection();
        a.within("the connection closed", hub.closed()).await;
        hub.delete_pod("default", "later", None).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        assert!(hub.has_pod("default", "later"));
        hub.refuse.store(false, Ordering::SeqCst);
        a.within("a new connection", hub.connected()).await;
        let back = std::time::Instant::now();
        a.within("later gone from the cloud", async {
            while hub.has_pod("default", "later") {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
        let took = back.elapsed();
        assert!(
            took < Duration::from_secs(2 + 5),
            "later took {took:?} to go after the reconnect"
        );
        a.wait_for("later's sandbox gone", || {
            a.host.sandbox_uids().is_empty().then_some(())
        });
    });
}

// ---- the EdgeStream tunnel (issue 16) ----

/// The node opens the tunnel with its certificate and session headers, pings, and dials again
/// after a cut; connect ids past 127 (two-byte uvarints, not UTF-8) are read.
#[test]
fn the_stream_tunnel_is_kept_up() {
    bounded(120, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("tunnel", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        a.within("the tunnel", async {
            while !hub.stream.connected() {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert_eq!(
            hub.stream.last_headers.lock().unwrap().clone(),
            Some((a.node.clone(), "127.0.0.1".to_string()))
        );
        a.within("a ping on the tunnel", async {
            while hub.stream.pings.load(Ordering::SeqCst) == 0 {
                smol::Timer::after(Duration::from_millis(200)).await;
            }
        })
        .await;
        // Cut: the node dials again within its 2 s redial.
        hub.stream.cut();
        let cut_at = std::time::Instant::now();
        a.within("the tunnel again", async {
            while hub.stream.tunnels.load(Ordering::SeqCst) < 2 {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            cut_at.elapsed() < Duration::from_secs(10),
            "{:?}",
            cut_at.elapsed()
        );
        // A session on a connect id past 127 is served and ended by the edge with REMOVE.
        hub.stream.skip_ids_to(300);
        let mut s = hub
            .stream
            .request(0, "/containerLogs/default/none/app?tailLines=1")
            .expect("tunnel up");
        assert_eq!(s.id, 300);
        assert!(
            s.read_to_end(Duration::from_secs(20)).await,
            "the edge did not end session 300: {:?}",
            s.text()
        );
        // The session ended, not the tunnel.
        assert!(hub.stream.connected());
        assert_eq!(hub.stream.tunnels.load(Ordering::SeqCst), 2);
    });
}

/// `kubectl logs` through the tunnel: CloudStream's LOGS_CONNECT is replayed against the
/// node's kubelet API and the body comes back as DATA; a follow ends with REMOVE from the
/// cloud; ten follows at once on one tunnel each get every line.
#[test]
fn kubectl_logs_through_the_stream_tunnel() {
    bounded(150, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("logs", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        let mut p = user_pod(
            "talker",
            "for i in $(seq 1 5); do echo line $i; done; while true; do echo tick; sleep 0.2; done",
        );
        p["spec"]["automountServiceAccountToken"] = json!(false);
        hub.create_pod(&p, &a.node);
        a.within(
            "talker Running",
            podpatch(&hub, "talker", |p| phase(p) == "Running"),
        )
        .await;
        a.within("the tunnel", async {
            while !hub.stream.connected() {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
        let mut s = hub
            .stream
            .request(0, "/containerLogs/default/talker/app?tailLines=100")
            .expect("tunnel up");
        assert!(
            s.read_to_end(Duration::from_secs(20)).await,
            "no end: {}",
            s.text()
        );
        assert!(s.text().starts_with("line 1\nline 2\n"), "{}", s.text());
        // Ten follows at once.
        let mut follows: Vec<_> = (0..10)
            .map(|_| {
                hub.stream
                    .request(0, "/containerLogs/default/talker/app?follow=true")
                    .expect("tunnel up")
            })
            .collect();
        for f in follows.iter_mut() {
            let got = f
                .read_until(Duration::from_secs(20), |b| {
                    String::from_utf8_lossy(b).matches("tick").count() >= 10
                })
                .await;
            assert!(got, "a follow got {:?}", f.text());
            assert!(f.text().starts_with("line 1\n"), "{}", f.text());
        }
        for f in &follows {
            hub.stream.remove(f.id);
        }
        assert!(hub.stream.connected());
    });
}

/// Runs an exec through the tunnel as the API server would (SPDY v4 over the tunnel's DATA):
/// what `stdin` gets, then its end; returns the exit code and stdout.
async fn tunnel_exec(hub: &CloudHub, path: &str, stdin: &'static [u8]) -> Option<(i64, Vec<u8>)> {
    let up = hub.stream.upgrade(1, path, &["v4.channel.k8s.io"])?;
    let path = path.to_string();
    smol::unblock(move || {
        let mut c = spdy::Client::upgrade(Box::new(up), &path, &["v4.channel.k8s.io"], &[]).ok()?;
        let err = c.open(&[("streamtype", "error")]);
        let input = c.open(&[("streamtype", "stdin")]);
        let out = c.open(&[("streamtype", "stdout")]);
        // A terminal's session waits for its resize stream too, as the kubelet's does; its
        // input stays open as a user's terminal does (closing it hangs the terminal up).
        let tty = path.contains("tty=1");
        if tty {
            c.open(&[("streamtype", "resize")]);
        }
        c.write(input, stdin);
        if !tty {
            c.close(input);
        }
        let status: Value = serde_json::from_slice(&c.read_to_end(err)).ok()?;
        c.read_all();
        let code = match status["status"].as_str() {
            Some("Success") => 0,
            _ => status["details"]["causes"][0]["message"]
                .as_str()?
                .parse()
                .ok()?,
        };
        Some((code, c.streams.get(&out)?.data.clone()))
    })
    .await
}

#[test]
fn kubectl_exec_and_attach_through_the_stream_tunnel() {
    bounded(150, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("exec", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        let mut p = user_pod("shell", "sleep 100000");
        p["spec"]["automountServiceAccountToken"] = json!(false);
        let mut t = user_pod("talk", "while read l; do echo \"heard $l\"; done");
        t["spec"]["automountServiceAccountToken"] = json!(false);
        t["spec"]["containers"][0]["stdin"] = json!(true);
        for p in [p, t] {
            let name = p["metadata"]["name"].as_str().unwrap().to_string();
            hub.create_pod(&p, &a.node);
            a.within(
                &format!("{name} Running"),
                podpatch(&hub, &name, |p| phase(p) == "Running"),
            )
            .await;
        }
        let tunnel_up = || async {
            while !hub.stream.connected() {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        };
        a.within("the tunnel", tunnel_up()).await;
        let cat = "/exec/default/shell/app?command=sh&command=-c&command=cat%3B%20exit%205&input=1&output=1";
        // stdin up the tunnel, stdout and the exit code back; three at once.
        let (r1, (r2, r3)) = smol::future::zip(
            tunnel_exec(&hub, cat, b"first\n"),
            smol::future::zip(
                tunnel_exec(&hub, cat, b"second\n"),
                tunnel_exec(&hub, cat, b"third\n"),
            ),
        )
        .await;
        for (r, want) in [(r1, "first\n"), (r2, "second\n"), (r3, "third\n")] {
            let (code, out) = r.expect("an exec through the tunnel");
            assert_eq!((code, String::from_utf8_lossy(&out).as_ref()), (5, want));
        }
        // With a terminal (kubectl exec -it): what is typed is echoed and run.
        let tty = "/exec/default/shell/app?command=sh&input=1&output=1&tty=1";
        let (code, out) = tunnel_exec(&hub, tty, b"echo $((6*7))x; exit 9\n")
            .await
            .expect("a terminal exec through the tunnel");
        let out = String::from_utf8_lossy(&out).to_string();
        assert_eq!(code, 9, "{out}");
        assert!(out.contains("42x\r\n"), "{out:?}");
        // Ten log follows open on the tunnel, and an exec beside them.
        let mut follows: Vec<_> = (0..10)
            .map(|_| {
                hub.stream
                    .request(0, "/containerLogs/default/shell/app?follow=true")
                    .expect("tunnel up")
            })
            .collect();
        let (code, out) = tunnel_exec(&hub, cat, b"beside ten follows\n")
            .await
            .expect("an exec beside ten follows");
        assert_eq!((code, out.as_slice()), (5, &b"beside ten follows\n"[..]));
        for f in follows.iter_mut() {
            assert!(!f.removed, "a follow ended early: {}", f.text());
            hub.stream.remove(f.id);
        }
        // `kubectl top` (metrics-server through the API server's node proxy): METRIC connects.
        for path in [
            "/stats/summary?only_cpu_and_memory=true",
            "/metrics/resource",
        ] {
            let mut m = hub.stream.request(2, path).expect("tunnel up");
            assert!(
                m.read_to_end(Duration::from_secs(20)).await,
                "{path}: {}",
                m.text()
            );
            let text = m.text();
            if path.starts_with("/stats") {
                let v: Value = serde_json::from_str(&text).expect("a Summary");
                assert_eq!(v["node"]["nodeName"], a.node.as_str(), "{v}");
                let pods = v["pods"].as_array().expect("pods");
                assert!(pods.iter().any(|p| p["podRef"]["name"] == "shell"), "{v}");
            } else {
                assert!(
                    text.contains("container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"shell\"}"),
                    "{text}"
                );
            }
        }
        // attach: the container's own stdin and output.
        let up = hub
            .stream
            .upgrade(
                6,
                "/attach/default/talk/app?input=1&output=1",
                &["v4.channel.k8s.io"],
            )
            .expect("tunnel up");
        let heard = smol::unblock(move || {
            let mut c = spdy::Client::upgrade(
                Box::new(up),
                "/attach/default/talk/app?input=1&output=1",
                &["v4.channel.k8s.io"],
                &[],
            )
            .ok()?;
            let _err = c.open(&[("streamtype", "error")]);
            let input = c.open(&[("streamtype", "stdin")]);
            let out = c.open(&[("streamtype", "stdout")]);
            c.write(input, b"hello\n");
            Some(c.read_at_least(out, 12))
        })
        .await;
        assert_eq!(heard.as_deref(), Some(&b"heard hello\n"[..]));

        // The tunnel cut mid-session: the session ends, the command with it; after the redial
        // new sessions work.
        let long = "/exec/default/shell/app?command=sh&command=-c&command=echo%20up%3B%20sleep%204343%3B%20echo%20never&output=1";
        let up = hub
            .stream
            .upgrade(1, long, &["v4.channel.k8s.io"])
            .expect("tunnel up");
        let tunnels = hub.stream.tunnels.load(Ordering::SeqCst);
        let session = smol::unblock(move || {
            let mut c =
                spdy::Client::upgrade(Box::new(up), long, &["v4.channel.k8s.io"], &[]).ok()?;
            let _err = c.open(&[("streamtype", "error")]);
            let out = c.open(&[("streamtype", "stdout")]);
            let first = c.read_at_least(out, 3);
            Some((c, first))
        })
        .await;
        let (c, first) = session.expect("the long exec started");
        assert_eq!(first, b"up\n");
        hub.stream.cut();
        let ended = smol::unblock(move || {
            let mut c = c;
            c.read_all();
            c.closed || c.goaway
        })
        .await;
        assert!(ended, "the session ends with the tunnel");
        a.within("the redial", async {
            while hub.stream.tunnels.load(Ordering::SeqCst) <= tunnels || !hub.stream.connected() {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
        let (code, out) = tunnel_exec(&hub, cat, b"after\n")
            .await
            .expect("an exec after the redial");
        assert_eq!((code, out.as_slice()), (5, &b"after\n"[..]));
        // The cut session's command was killed with it.
        a.within("the cut exec killed", async {
            let running = || {
                std::fs::read_dir("/proc")
                    .unwrap()
                    .filter_map(|d| d.ok())
                    .any(|d| {
                        std::fs::read(d.path().join("cmdline"))
                            .is_ok_and(|c| c.starts_with(b"sh\x00-c\x00echo up; sleep 4343"))
                    })
            };
            while running() {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        })
        .await;
    });
}

// ---- Kubernetes Events from the node (issue 23) ----

/// The kubelet's events reach the API server through CloudCore's `processEvent`: Created and
/// Started, BackOff of a crash loop (a repeat patched with its count, not sent anew), Unhealthy
/// and Killing for a liveness probe whose local redirect leads to a missing page (followed, as
/// the kubelet does), ProbeWarning for a redirect to another host (a success), Failed for a
/// container refused for running as root under `runAsNonRoot`. Each names the pod by uid and
/// the container by field path, from the kubelet on this node.
#[test]
fn the_kubelets_events_reach_the_cloud() {
    const PORT: u16 = 18431;
    bounded(240, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let a = Agent::start("events", &hub, &hub.token());
        accept_registration(&a, &hub).await;
        // httpd's CGI answers that begin with a status line go out as they are.
        let web = format!(
            "mkdir -p /tmp/www/cgi-bin; cd /tmp/www/cgi-bin; \
             printf '#!/bin/sh\\nprintf \"HTTP/1.1 302 Found\\\\r\\\\nLocation: /missing\\\\r\\\\nContent-Length: 0\\\\r\\\\n\\\\r\\\\n\"\\n' > local; \
             printf '#!/bin/sh\\nprintf \"HTTP/1.1 302 Found\\\\r\\\\nLocation: http://192.0.2.1:81/\\\\r\\\\nContent-Length: 0\\\\r\\\\n\\\\r\\\\n\"\\n' > away; \
             chmod +x local away; exec httpd -f -vv -p {PORT} -h /tmp/www"
        );
        let mut p = user_pod("ev", "exit 1");
        p["spec"]["automountServiceAccountToken"] = json!(false);
        p["spec"]["terminationGracePeriodSeconds"] = json!(1);
        p["spec"]["containers"][0]["name"] = json!("crash");
        p["spec"]["containers"].as_array_mut().unwrap().extend([
            json!({"name": "web", "image": IMAGE, "command": ["sh", "-c", web],
                       "readinessProbe": {"httpGet": {"path": "/cgi-bin/away", "port": PORT},
                                          "periodSeconds": 1}}),
            json!({"name": "live", "image": IMAGE, "command": ["sleep", "3600"],
                       "livenessProbe": {"httpGet": {"path": "/cgi-bin/local", "port": PORT},
                                         "initialDelaySeconds": 2, "periodSeconds": 1,
                                         "failureThreshold": 1}}),
        ]);
        let ev = hub.create_pod(&p, &a.node);
        let mut root = user_pod("rootless", "sleep 3600");
        root["spec"]["automountServiceAccountToken"] = json!(false);
        root["spec"]["securityContext"] = json!({"runAsNonRoot": true});
        let root = hub.create_pod(&root, &a.node);

        let has = |pod: &str, reason: &str, container: &str, min: u64, text: &str| {
            hub.api
                .lock()
                .unwrap()
                .events_of("default", pod)
                .iter()
                .any(|(r, f, n, m)| {
                    r == reason
                        && *f == format!("spec.containers{{{container}}}")
                        && *n >= min
                        && m.contains(text)
                })
        };
        let want: [(&str, &str, &str, u64, &str); 8] = [
            ("ev", "Created", "crash", 1, "Created container: crash"),
            ("ev", "Started", "crash", 1, "Started container crash"),
            (
                "ev",
                "BackOff",
                "crash",
                2,
                "Back-off restarting failed container crash",
            ),
            ("ev", "ProbeWarning", "web", 1, "Probe terminated redirects"),
            ("ev", "Unhealthy", "live", 1, "Liveness probe failed"),
            ("ev", "Killing", "live", 1, "liveness probe"),
            ("ev", "Started", "live", 2, "Started container live"),
            ("rootless", "Failed", "app", 1, "runAsNonRoot"),
        ];
        let missing = || -> Vec<String> {
            want.iter()
                .filter(|(p, r, c, n, t)| !has(p, r, c, *n, t))
                .map(|(p, r, c, n, t)| format!("{p} {r} {c} count>={n} {t:?}"))
                .collect()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(150);
        while !missing().is_empty() && std::time::Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(500)).await;
        }
        let not_seen = missing();
        let api = hub.api.lock().unwrap();
        assert!(
            not_seen.is_empty(),
            "events not seen: {:?}\nseen: {:#?}\nrefused: {:?}\nagent log: {}",
            not_seen,
            api.events_of("default", "ev"),
            api.event_refusals,
            tail(&a.log(), 40)
        );
        assert!(api.event_refusals.is_empty(), "{:?}", api.event_refusals);
        // Every event comes from this node's kubelet and names its pod by uid.
        for e in api.events.values() {
            let pod = match e["involvedObject"]["name"].as_str() {
                Some("ev") => &ev,
                Some("rootless") => &root,
                other => panic!("an event about {other:?}: {e}"),
            };
            assert_eq!(e["involvedObject"]["uid"], pod["metadata"]["uid"], "{e}");
            assert_eq!(e["involvedObject"]["kind"], "Pod", "{e}");
            assert_eq!(
                e["source"],
                json!({"component": "kubelet", "host": a.node}),
                "{e}"
            );
            assert_eq!(e["reportingComponent"], "kubelet", "{e}");
            assert_eq!(e["reportingInstance"], a.node.as_str(), "{e}");
            let warning = ["BackOff", "Unhealthy", "ProbeWarning", "Failed"]
                .contains(&e["reason"].as_str().unwrap_or_default());
            assert_eq!(e["type"], if warning { "Warning" } else { "Normal" }, "{e}");
            assert!(
                e["firstTimestamp"].is_string() && e["lastTimestamp"].is_string(),
                "{e}"
            );
        }
        // The refused container waits with the kubelet's reason, in the status the cloud has.
        let waiting =
            &api.pods["default/rootless"]["status"]["containerStatuses"][0]["state"]["waiting"];
        assert_eq!(waiting["reason"], "CreateContainerConfigError", "{waiting}");
        assert!(
            waiting["message"]
                .as_str()
                .is_some_and(|m| m.contains("image will run as root")),
            "{waiting}"
        );
        // A repeat is a patch of the event first created, not a new one.
        let backoffs = api
            .events_of("default", "ev")
            .into_iter()
            .filter(|(r, f, _, _)| r == "BackOff" && f == "spec.containers{crash}")
            .count();
        assert_eq!(backoffs, 1, "{:#?}", api.events_of("default", "ev"));
        drop(api);
        let patches = hub.sent(|m| {
            m.route.operation == op::PATCH && m.route.resource.starts_with("default/event/ev.")
        });
        assert!(!patches.is_empty());
        for m in &patches {
            assert!(m.content["event"]["metadata"]["name"].is_string(), "{m:?}");
            let data: Value =
                serde_json::from_str(m.content["patchData"].as_str().unwrap()).unwrap();
            assert!(data["count"].as_u64().unwrap() >= 2, "{m:?}");
        }
    });
}
