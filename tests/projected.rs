//! Projected volumes and service-account tokens end to end (issue 22): the real `edged`
//! binary, real shims and runc containers whose processes read the volume's files.
//!
//! - From the manifest directory: a projected volume of a ConfigMap, a Secret and downward API
//!   fields; a ConfigMap change reaches the running container's file without a restart.
//! - Through the CloudHub stand-in (tests/common/cloudhub.rs), whose token answers behave as
//!   CloudCore in front of kube-apiserver: the pod kube-apiserver stored for `kubectl run`,
//!   with its `kube-api-access-*` volume, reads its token, CA and namespace; the stored token
//!   brings the pod back after a reboot with the cloud away; a token the cloud issues for a
//!   short time (`--service-account-max-token-expiration`) is refreshed in the file without a
//!   restart; a refused token holds the pod in ContainerCreating with the reason, and is asked
//!   for again.
//!
//! Run as root: `cargo test --test projected`.

#[path = "common/cloudhub.rs"]
mod cloudhub;
#[path = "common/host.rs"]
mod host;

use cloudhub::{bounded, CloudHub, Lifetime};
use edged::message::{new_uuid, op, Message};
use host::{cri_lines, wait_until, Host, BIN, IMAGE};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// One agent: its dirs, process and cleanup; with a cloud or without.
struct Agent {
    dir: tempfile::TempDir,
    host: Host,
    node: String,
    child: Option<Child>,
    starts: u32,
    cloud: Option<(String, String, String)>,
}

impl Agent {
    fn new(tag: &str, hub: Option<&CloudHub>) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix(&format!("edged-proj-{tag}-"))
            .tempdir_in("/tmp")
            .expect("temp dir");
        for d in ["root", "logs", "manifests"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let mut a = Agent {
            host: Host::new(dir.path()),
            dir,
            node: format!("edge-proj-{tag}"),
            child: None,
            starts: 0,
            cloud: hub.map(|h| (h.ws_addr.clone(), h.https_addr.clone(), h.token())),
        };
        a.host.import_test_image();
        a.restart();
        a
    }

    fn restart(&mut self) {
        assert!(self.child.is_none());
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--root-dir")
            .arg(self.dir.path().join("root"))
            .arg("--pod-log-dir")
            .arg(self.logs())
            .arg("--pod-manifest-path")
            .arg(self.manifests())
            .args(["--node-name", &self.node, "--node-ip", "127.0.0.1"])
            .args(["--file-check-frequency", "1s"])
            .args(["--status-update-frequency", "1s"])
            .args(["--node-status-update-frequency", "1s", "--heartbeat", "1s"])
            .args(["--image-gc-high-threshold", "100"])
            .args(["--image-gc-low-threshold", "95"])
            .args(["--log-level", "debug"]);
        if let Some((ws, https, token)) = &self.cloud {
            let token_file = self.dir.path().join("token");
            std::fs::write(&token_file, format!("{token}\n")).unwrap();
            cmd.args(["--cloudhub-server", ws, "--cloudhub-https-server", https])
                .arg("--token-file")
                .arg(&token_file);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start edged");
        self.child = Some(child);
    }

    /// A reboot: the agent, its shims and containers killed, every mount (the tmpfs volumes
    /// with their tokens) gone.
    fn power_cut(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.host.kill_processes();
        self.wait_for("every container process gone", || {
            self.host
                .container_pids()
                .into_iter()
                .all(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/stat"))
                        .map(|s| {
                            s.rsplit(')')
                                .next()
                                .unwrap_or("")
                                .trim_start()
                                .starts_with('Z')
                        })
                        .unwrap_or(true)
                })
                .then_some(())
        });
        self.host.unmount_all();
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("agent-{}.log", self.starts))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.log(), f)
    }

    fn write(&self, file: &str, objects: &[Value]) {
        let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
        let tmp = self.manifests().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text.join("\n---\n")).unwrap();
        std::fs::rename(&tmp, self.manifests().join(file)).unwrap();
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.host
            .get("pods")
            .into_iter()
            .find(|p| p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name)
    }

    fn wait_pod(&self, ns: &str, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(&format!("pod {ns}/{name} {what}"), || {
            self.pod(ns, name).filter(|p| ok(p))
        })
    }

    /// The log lines of instance `attempt` of a container.
    fn log_lines(&self, ns: &str, pod: &str, container: &str, attempt: u32) -> Vec<String> {
        let prefix = format!("{ns}_{pod}_");
        std::fs::read_dir(self.logs())
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .and_then(|e| {
                std::fs::read_to_string(e.path().join(container).join(format!("{attempt}.log")))
                    .ok()
            })
            .map(|t| cri_lines(&t))
            .unwrap_or_default()
    }

    /// The last line of instance `attempt` that starts with `prefix`, without the prefix.
    fn last_value(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        attempt: u32,
        prefix: &str,
    ) -> Option<String> {
        self.log_lines(ns, pod, container, attempt)
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
    }

    fn running_pid(&self, id: &str) -> Option<u32> {
        self.host
            .runc()
            .get(id)
            .filter(|e| e.status == "running")
            .map(|e| e.pid)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(keep) = std::env::var_os("EDGED_TEST_KEEP_LOGS") {
            let name = self.dir.path().file_name().unwrap_or_default().to_owned();
            let to = Path::new(&keep).join(name);
            let _ = std::fs::create_dir_all(&to);
            for n in 1..=self.starts {
                let f = format!("agent-{n}.log");
                let _ = std::fs::copy(self.dir.path().join(&f), to.join(f));
            }
        }
        self.host.clean_up();
    }
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn app(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn container_id(p: &Value) -> String {
    app(p)["containerID"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("containerd://")
        .to_string()
}

fn running(p: &Value) -> bool {
    app(p)["state"]["running"].is_object()
}

// ---- from the manifest directory ----

/// (a) A projected volume of a ConfigMap (an item), a Secret (an item with its own mode) and
/// downward API fields, read by the container; the ConfigMap changes and the container reads
/// the new value, in the same process; the Secret's file keeps its mode.
#[test]
fn a_projected_volume_from_the_manifest_directory_follows_its_config_map() {
    let a = Agent::new("manifest", None);
    let ns = "proj";
    let cm = |v: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "settings", "namespace": ns}, "data": {"level": v, "unused": "x"}})
    };
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": ns}, "stringData": {"password": "s3cret"}});
    let script = "while true; do \
        echo \"level=$(cat /p/conf/level)\"; \
        echo \"pw=$(cat /p/pw) $(stat -c %a /p/..data/pw)\"; \
        echo \"pod=$(cat /p/pod) $(cat /p/ns)\"; \
        echo \"tmpfs=$(grep ' /p ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1)\"; \
        touch /p/x 2>/dev/null && echo writable || echo read-only; \
        sleep 0.5; done";
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "reader", "namespace": ns, "labels": {"app": "reader"}},
    "spec": {"terminationGracePeriodSeconds": 1,
        "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
            "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "all", "mountPath": "/p"}]}],
        "volumes": [{"name": "all", "projected": {"defaultMode": 0o644, "sources": [
            {"configMap": {"name": "settings", "items": [{"key": "level", "path": "conf/level"}]}},
            {"secret": {"name": "creds", "items": [{"key": "password", "path": "pw", "mode": 0o600}]}},
            {"downwardAPI": {"items": [
                {"path": "pod", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "ns", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}}]}});
    a.write("reader.yaml", &[cm("one"), secret, pod.clone()]);
    let p = a.wait_pod(ns, "reader", "Running", |p| {
        phase(p) == "Running" && running(p)
    });
    let id = container_id(&p);
    let pid = a.running_pid(&id).expect("the container runs");
    a.wait_for("the container reading level=one", || {
        (a.last_value(ns, "reader", "app", 0, "level=").as_deref() == Some("one")).then_some(())
    });
    assert_eq!(
        a.last_value(ns, "reader", "app", 0, "pw=").as_deref(),
        Some("s3cret 600")
    );
    assert_eq!(
        a.last_value(ns, "reader", "app", 0, "pod=").as_deref(),
        Some("reader proj")
    );
    // A Secret in it: the volume is a tmpfs, and read-only in the container.
    assert_eq!(
        a.last_value(ns, "reader", "app", 0, "tmpfs=").as_deref(),
        Some("tmpfs ro")
    );
    let lines = a.log_lines(ns, "reader", "app", 0);
    assert!(lines.iter().any(|l| l == "read-only") && !lines.iter().any(|l| l == "writable"));

    // The ConfigMap changes: the file follows, the process is the same.
    a.write(
        "reader.yaml",
        &[
            cm("two"),
            json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": ns}, "stringData": {"password": "s3cret"}}),
            pod,
        ],
    );
    a.wait_for("the container reading level=two", || {
        (a.last_value(ns, "reader", "app", 0, "level=").as_deref() == Some("two")).then_some(())
    });
    assert_eq!(a.running_pid(&id), Some(pid), "the container was restarted");
    let p = a.pod(ns, "reader").unwrap();
    assert_eq!(app(&p)["restartCount"], 0, "{p}");
    assert_eq!(container_id(&p), id);
}

/// A source edged cannot fill holds the pod in ContainerCreating, naming the source; so does
/// a token source on a node without a cloud.
#[test]
fn unsupported_sources_are_named_in_the_pod_status() {
    let a = Agent::new("unsupported", None);
    let ns = "proj";
    let pod = |name: &str, source: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
                    "command": ["sleep", "1000"],
                    "volumeMounts": [{"name": "v", "mountPath": "/p"}]}],
                "volumes": [{"name": "v", "projected": {"sources": [source]}}]}})
    };
    a.write(
        "pods.yaml",
        &[
            pod(
                "bundle",
                json!({"clusterTrustBundle": {"signerName": "example.com/s", "path": "b.pem"}}),
            ),
            pod(
                "cert",
                json!({"podCertificate": {"signerName": "example.com/s", "keyType": "ED25519"}}),
            ),
            pod("token", json!({"serviceAccountToken": {"path": "token"}})),
        ],
    );
    for (name, needle) in [
        ("bundle", "`clusterTrustBundle`"),
        ("cert", "`podCertificate`"),
        ("token", "service-account token"),
    ] {
        let p = a.wait_pod(ns, name, "waiting with a message", |p| {
            app(p)["state"]["waiting"]["message"].is_string()
        });
        let w = &app(&p)["state"]["waiting"];
        assert_eq!(w["reason"], "ContainerCreating", "{p}");
        let msg = w["message"].as_str().unwrap();
        assert!(
            msg.contains(needle) && msg.contains("volume `v`"),
            "{name}: {msg}"
        );
        assert_eq!(phase(&p), "Pending");
    }
    assert!(a.host.runc().is_empty(), "{:?}", a.host.runc());
}

// ---- through the cloud ----

/// The stand-in's cluster (its API server model answers the registration, the
/// `serviceaccounttoken` queries and the `kube-root-ca.crt` queries, as CloudCore does): the
/// pods it knows and the tokens it issued.
struct Cluster {
    hub: Arc<CloudHub>,
}

impl Cluster {
    fn new(hub: &Arc<CloudHub>) -> Cluster {
        Cluster { hub: hub.clone() }
    }

    /// The longest token the API server issues.
    fn max_expiration(&self, secs: i64) {
        self.hub.api.lock().unwrap().max_token_seconds = Some(secs);
    }

    /// Every answer to a token query so far.
    fn token_answers(&self) -> Vec<Value> {
        self.hub.api.lock().unwrap().token_answers.clone()
    }

    fn issued(&self) -> Vec<String> {
        self.token_answers()
            .iter()
            .filter_map(|a| a["status"]["token"].as_str().map(str::to_string))
            .collect()
    }
}

/// The pod kube-apiserver stored for `kubectl run` (tests/fixtures/kubectl-run-pod.yaml), on
/// this node, with the test image, a new uid, a 1 s grace period and `script` as its args
/// (the image's Cmd is `sh`, as busybox's).
fn admitted_pod(node: &str, name: &str, script: &str, restart: &str) -> Value {
    let text = include_str!("fixtures/kubectl-run-pod.yaml");
    let mut p: Value = serde_yaml_ng::from_str(text).unwrap();
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(new_uuid());
    p["metadata"]["labels"]["run"] = json!(name);
    p["spec"]["nodeName"] = json!(node);
    p["spec"]["restartPolicy"] = json!(restart);
    p["spec"]["terminationGracePeriodSeconds"] = json!(1);
    let c = &mut p["spec"]["containers"][0];
    c["name"] = json!("app");
    c["image"] = json!(IMAGE);
    // A tagged image: what kube-apiserver defaults it to (the fixture's `busybox` had Always).
    c["imagePullPolicy"] = json!("IfNotPresent");
    c["args"] = json!(["sh", "-c", script]);
    p
}

fn pod_message(operation: &str, pod: &Value) -> Message {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    Message::new(
        "edgecontroller",
        "resource",
        operation,
        format!("{ns}/pod/{name}"),
    )
    .with_content(pod.clone())
}

fn known(cluster: &Cluster, pod: &Value) {
    cluster.hub.api.lock().unwrap().add_pod(pod);
}

/// Every second: the token, the first line of the CA and the namespace the container reads.
fn reader_script() -> String {
    format!(
        "while true; do echo \"token=$(cat {SA_DIR}/token)\"; \
         echo \"ca=$(head -n 1 {SA_DIR}/ca.crt)\"; echo \"ns=$(cat {SA_DIR}/namespace)\"; \
         echo \"mode=$(stat -c %a {SA_DIR}/..data/token)\"; sleep 1; done"
    )
}

/// (b) and (d): the pod as kube-apiserver admits it runs and reads its token, CA and
/// namespace; the token request is the one KubeEdge's edge sends. A changed
/// `kube-root-ca.crt` from the cloud reaches the file in place. After a reboot with the cloud
/// away, the pod runs again with its stored token; deleted, its stored token goes.
#[test]
fn an_admitted_pod_reads_its_service_account_and_comes_back_offline() {
    bounded(240, async {
        let hub = Arc::new(CloudHub::start(Lifetime::Long).await);
        let cluster = Cluster::new(&hub);
        let mut a = Agent::new("sa", Some(&hub));
        let pod = admitted_pod(&a.node, "t", &reader_script(), "Always");
        known(&cluster, &pod);
        hub.send(&pod_message(op::INSERT, &pod));
        let p = a.wait_pod("default", "t", "Running", |p| {
            phase(p) == "Running" && running(p)
        });
        a.wait_for("the container reading its token", || {
            a.last_value("default", "t", "app", 0, "token=")
                .filter(|t| !t.is_empty())
        });
        let issued = cluster.issued();
        assert_eq!(issued.len(), 1, "{:?}", cluster.token_answers());
        assert_eq!(
            a.last_value("default", "t", "app", 0, "token=").unwrap(),
            issued[0]
        );
        assert_eq!(
            a.last_value("default", "t", "app", 0, "ca=").as_deref(),
            Some("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(
            a.last_value("default", "t", "app", 0, "ns=").as_deref(),
            Some("default")
        );
        // defaultMode 420.
        assert_eq!(
            a.last_value("default", "t", "app", 0, "mode=").as_deref(),
            Some("644")
        );

        // What the edge asked: the TokenRequest bound to the pod.
        let q = hub.sent(|m| {
            m.route.resource == "default/serviceaccounttoken/default"
                && m.route.operation == op::QUERY
        });
        assert_eq!(q.len(), 1, "{q:?}");
        // The answer is ACKed as every object from the cloud is.
        let acks = hub.sent(|m| {
            m.route.resource == "default/serviceaccounttoken/default"
                && m.route.operation == op::RESPONSE
        });
        assert_eq!(acks.len(), 1, "{acks:?}");
        assert_eq!(acks[0].content, "OK");
        assert_eq!(
            (q[0].route.source.as_str(), q[0].route.group.as_str()),
            ("edged", "meta")
        );
        assert_eq!(q[0].route.operation, op::QUERY);
        let tr = &q[0].content;
        assert_eq!(tr["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(tr["kind"], "TokenRequest");
        assert_eq!(tr["metadata"]["name"], "default");
        assert_eq!(tr["spec"]["expirationSeconds"], 3607);
        assert_eq!(tr["spec"]["audiences"], json!([]));
        assert_eq!(
            tr["spec"]["boundObjectRef"],
            json!({"apiVersion": "v1", "kind": "Pod", "name": "t", "uid": pod["metadata"]["uid"]})
        );

        // The cloud changes kube-root-ca.crt (a CA rotation): the file follows in place.
        let old_id = container_id(&p);
        let pid = a.running_pid(&old_id).expect("t runs");
        let mut rotated = hub.root_ca_config_map("default");
        rotated["data"]["ca.crt"] = json!("ROTATED CA\n");
        rotated["metadata"]["resourceVersion"] = json!("2");
        hub.send(
            &Message::new(
                "edgecontroller",
                "resource",
                op::UPDATE,
                "default/configmap/kube-root-ca.crt",
            )
            .with_content(rotated),
        );
        a.wait_for("the container reading the rotated CA", || {
            (a.last_value("default", "t", "app", 0, "ca=").as_deref() == Some("ROTATED CA"))
                .then_some(())
        });
        assert_eq!(a.running_pid(&old_id), Some(pid), "t was restarted");
        assert_eq!(
            a.last_value("default", "t", "app", 0, "token=").unwrap(),
            issued[0]
        );

        // A reboot with the cloud away: the tmpfs with the token is gone; the stored token
        // brings the pod back.
        hub.refuse.store(true, Ordering::SeqCst);
        hub.drop_connection();
        a.power_cut();
        a.restart();
        let p = a.wait_pod("default", "t", "Running in a new container", |p| {
            phase(p) == "Running" && running(p) && container_id(p) != old_id
        });
        assert_eq!(app(&p)["restartCount"], 1, "{p}");
        a.wait_for("the new container reading its token", || {
            a.last_value("default", "t", "app", 1, "token=")
                .filter(|t| !t.is_empty())
        });
        assert_eq!(
            a.last_value("default", "t", "app", 1, "token=").unwrap(),
            issued[0],
            "not the stored token"
        );
        assert_eq!(
            a.last_value("default", "t", "app", 1, "ca=").as_deref(),
            Some("ROTATED CA")
        );
        assert_eq!(
            cluster.issued().len(),
            1,
            "a token was issued while the cloud was away"
        );

        // The pod deleted: its stored token goes with it.
        hub.refuse.store(false, Ordering::SeqCst);
        let mut del = pod.clone();
        del["metadata"]["deletionTimestamp"] =
            json!(edged::api::rfc3339(std::time::SystemTime::now()));
        del["metadata"]["deletionGracePeriodSeconds"] = json!(1);
        a.wait_for("the link back", || {
            (!hub
                .sent(|m| m.route.resource.contains("/nodepatch/"))
                .is_empty())
            .then_some(())
        });
        hub.send(&pod_message(op::UPDATE, &del));
        a.wait_for("t gone", || a.pod("default", "t").is_none().then_some(()));
        a.power_cut();
        let store = edged::metamanager::Store::open(&a.dir.path().join("root/meta")).unwrap();
        let rows = store
            .list(edged::metamanager::Table::ServiceAccountToken)
            .unwrap();
        assert!(rows.is_empty(), "tokens left: {rows:?}");
    });
}

/// (c) and the refusals: a token the cloud refuses (a uid the cluster does not have for the
/// pod: 409) holds the pod in ContainerCreating with the reason and is asked for again; once
/// issued, for 10 s only (the cluster's max token expiration), it is replaced in the file
/// past 80 % of that, in the same container.
#[test]
fn a_refused_token_is_retried_and_a_short_one_refreshed_in_place() {
    bounded(240, async {
        let hub = Arc::new(CloudHub::start(Lifetime::Long).await);
        let cluster = Cluster::new(&hub);
        cluster.max_expiration(10);
        let a = Agent::new("refresh", Some(&hub));
        let mut pod = admitted_pod(&a.node, "r", &reader_script(), "Always");
        pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
            ["expirationSeconds"] = json!(600);
        // The cluster has a pod of that name with another uid.
        let mut other = pod.clone();
        other["metadata"]["uid"] = json!(new_uuid());
        known(&cluster, &other);
        hub.send(&pod_message(op::INSERT, &pod));
        let p = a.wait_pod("default", "r", "waiting for its token", |p| {
            app(p)["state"]["waiting"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("409"))
        });
        let w = &app(&p)["state"]["waiting"];
        assert_eq!(w["reason"], "ContainerCreating", "{p}");
        let msg = w["message"].as_str().unwrap();
        assert!(
            msg.contains("kube-api-access-54k5t")
                && msg.contains("Conflict")
                && msg.contains("UID"),
            "{msg}"
        );
        assert!(a.host.runc().is_empty());
        // The cluster learns the pod: the next try (after the back-off) gets a token.
        known(&cluster, &pod);
        let p = a.wait_pod("default", "r", "Running", |p| {
            phase(p) == "Running" && running(p)
        });
        let id = container_id(&p);
        let pid = a.running_pid(&id).unwrap();
        let first = a.wait_for("the container reading its first token", || {
            a.last_value("default", "r", "app", 0, "token=")
                .filter(|t| !t.is_empty())
        });
        let answers = cluster.token_answers().clone();
        assert!(answers[0]["ErrStatus"]["code"] == 409, "{answers:?}");
        assert_eq!(answers.last().unwrap()["spec"]["expirationSeconds"], 10);
        // Past 8 s the token is replaced; the container reads the new one without a restart.
        let second = a.wait_for("the container reading a new token", || {
            a.last_value("default", "r", "app", 0, "token=")
                .filter(|t| !t.is_empty() && *t != first)
        });
        assert!(
            cluster.issued().contains(&second),
            "{second} was not issued"
        );
        a.wait_for("a third token", || {
            a.last_value("default", "r", "app", 0, "token=")
                .filter(|t| !t.is_empty() && *t != first && *t != second)
        });
        assert_eq!(a.running_pid(&id), Some(pid), "the container was restarted");
        let p = a.pod("default", "r").unwrap();
        assert_eq!(app(&p)["restartCount"], 0, "{p}");
        // Not asked for more often than the refresh point says: about one per 8 s.
        let n = cluster.issued().len();
        assert!(n <= 4, "{n} tokens issued in about 20 s");
    });
}

/// The stand-in's token answers decide as kube-apiserver's CreateToken: 422 for a name other
/// than the service account's or a lifetime under 10 minutes, 404 for an unknown pod, 409 for
/// another uid; else the TokenRequest with a new token each time and the API server's audience.
#[test]
fn the_stand_in_answers_token_requests_as_the_api_server() {
    let uid = new_uuid();
    let pods: BTreeMap<String, String> = [("default/t".to_string(), uid.clone())].into();
    let request = |name: &str, pod: &str, uid: &str, exp: i64| {
        Message::new("edged", "meta", op::QUERY, "default/serviceaccounttoken/default")
            .with_content(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"audiences": [], "expirationSeconds": exp,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}}}))
    };
    let code = |v: &Value| v["ErrStatus"]["code"].as_i64();
    assert_eq!(
        code(&cloudhub::token_answer(
            &request("other", "t", &uid, 3607),
            &pods,
            None
        )),
        Some(422)
    );
    assert_eq!(
        code(&cloudhub::token_answer(
            &request("default", "t", &uid, 60),
            &pods,
            None
        )),
        Some(422)
    );
    assert_eq!(
        code(&cloudhub::token_answer(
            &request("default", "x", &uid, 3607),
            &pods,
            None
        )),
        Some(404)
    );
    assert_eq!(
        code(&cloudhub::token_answer(
            &request("default", "t", "nope", 3607),
            &pods,
            None
        )),
        Some(409)
    );
    let ok = cloudhub::token_answer(&request("default", "t", &uid, 3607), &pods, None);
    let again = cloudhub::token_answer(&request("default", "t", &uid, 3607), &pods, Some(600));
    assert_eq!(ok["spec"]["audiences"], json!([cloudhub::API_AUDIENCE]));
    assert_eq!(ok["spec"]["expirationSeconds"], 3607);
    assert_eq!(again["spec"]["expirationSeconds"], 600);
    let (a, b) = (
        ok["status"]["token"].as_str().unwrap(),
        again["status"]["token"].as_str().unwrap(),
    );
    assert_ne!(a, b);
    assert_eq!(a.split('.').count(), 3, "{a}");
    assert!(ok["status"]["expirationTimestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}
