//! Pods relayed by CloudCore end to end: the real `edged` joined to the CloudHub stand-in
//! (tests/common/cloudhub.rs), which relays pods as CloudCore does, without the fields its
//! k8s.io/api v1.32 does not know (`spec.hostnameOverride`, a container's
//! `restartPolicyRules`) but with the `metadata.managedFields` that still name them, and
//! busybox containers on real shims and runc.
//!
//! - The agent reads such a pod back whole through CloudCore's DynamicController (an
//!   Application `get` of `/core/v1/pods/<ns>/<name>`) and runs the pod as the user wrote it:
//!   the container's hostname is the `hostnameOverride`, and it is restarted on the exit code
//!   its `restartPolicyRules` name although pod and container say `Never`. Its later
//!   metadata-only updates and its delete keep what was read back without asking again; a pod
//!   that lacks nothing its managedFields name is not read back.
//! - A CloudCore without the DynamicController (its default) never answers: the pods run as
//!   relayed (the hostname is the pod's name), and the agent says once why and what to enable.
//!
//! Run as root: `cargo test --test cloudcore_relay`.

#[path = "common/cloudhub.rs"]
mod cloudhub;
#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;
#[path = "common/joined.rs"]
mod joined;

use agent::Agent;
use cloudhub::apiserver::{decode_go_application, relayed, ApiServer};
use cloudhub::{bounded, CloudHub, Lifetime};
use edged::message::Message;
use host::{cri_lines, IMAGE};
use joined::cloud_agent;
use serde_json::{json, Value};

const NS: &str = "relay";
/// What the agent logs at INFO when it took the spec the API server answered.
const RESTORED: &str = "pod fields the cloud dropped were restored from the API server";
/// What the agent warns once when the cloud does not answer the read of a pod.
const NO_ANSWER: &str = "does not answer reads of pods";
/// What that warning tells to do.
const ENABLE: &str = "enable modules.dynamicController in cloudcore.yaml";
/// The hostname the relayed pods ask for.
const OVERRIDE: &str = "override.example";

/// A pod of namespace [`NS`] with one container `app` running `sh -c script`; `extra` are
/// more spec fields, `container` more fields of the container.
fn relay_pod(name: &str, script: &str, extra: Value, container: Value) -> Value {
    let mut c = json!({"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
                       "command": ["sh", "-c", script]});
    for (k, v) in container.as_object().unwrap() {
        c[k] = v.clone();
    }
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"test": "relay"}},
        "spec": {"terminationGracePeriodSeconds": 1, "automountServiceAccountToken": false,
                 "containers": [c]}});
    for (k, v) in extra.as_object().unwrap() {
        p["spec"][k] = v.clone();
    }
    p
}

/// The lines run `run` of container `app` of pod `ns/name` printed (waits for a first one).
fn output_of(a: &Agent, ns: &str, name: &str, run: u32) -> Vec<String> {
    a.wait_for(&format!("output of run {run} of {ns}/{name}"), || {
        let prefix = format!("{ns}_{name}_");
        let dir = std::fs::read_dir(a.logs())
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?;
        let text = std::fs::read_to_string(dir.path().join(format!("app/{run}.log"))).ok()?;
        let lines = cri_lines(&text);
        (!lines.is_empty()).then_some(lines)
    })
}

/// The Application key of pod `ns/name`.
fn pod_key(ns: &str, name: &str) -> String {
    format!("/core/v1/pods/{ns}/{name}")
}

/// The `get`s of pods the agent sent to the DynamicController, answered or not: (key,
/// nodename, Option).
fn gets_sent(hub: &CloudHub) -> Vec<(String, String, Option<Vec<u8>>)> {
    hub.sent(|m| m.route.group == "dynamiccontroller")
        .iter()
        .filter_map(|m| decode_go_application(&m.content).ok())
        .filter(|(app, _)| app.verb == "get")
        .map(|(app, _)| (app.key, app.nodename, app.option))
        .collect()
}

/// The pod message of `ns/name` that went down first (waits for it to be written).
fn relayed_down(a: &Agent, hub: &CloudHub, ns: &str, name: &str) -> Value {
    let resource = format!("{ns}/pod/{name}");
    a.wait_for(&format!("the pod message of {ns}/{name} sent down"), || {
        hub.sent_down
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.route.resource == resource)
            .map(|m| m.content.clone())
    })
}

/// Whether every field `fields` (a FieldsV1 set) names is in `obj`.
fn named_fields_exist(fields: &Value, obj: &Value) -> Result<(), String> {
    for (k, sub) in fields.as_object().into_iter().flatten() {
        if k == "." {
            continue;
        }
        let found = if let Some(f) = k.strip_prefix("f:") {
            obj.get(f)
        } else if let Some(key) = k.strip_prefix("k:") {
            let key: Value = serde_json::from_str(key).map_err(|e| format!("{k}: {e}"))?;
            obj.as_array()
                .and_then(|items| items.iter().find(|i| i["name"] == key["name"]))
        } else {
            return Err(format!("`{k}` is neither f: nor k:"));
        };
        let Some(found) = found else {
            return Err(format!("`{k}` is not in {obj}"));
        };
        named_fields_exist(sub, found)?;
    }
    Ok(())
}

/// An Application as EdgeCore's MetaServer writes it, to the stand-in's DynamicController.
fn application(node: &str, verb: &str, key: &str, option: &[u8]) -> Message {
    Message::new("metaserver", "dynamiccontroller", "null", "null").with_content(json!({
        "ID": "id", "Key": key, "Verb": verb, "Nodename": node,
        "Option": edged::api::base64::encode(option), "ReqBody": null, "Subresource": "",
        "RespBody": null, "Status": "InApplying", "Reason": "",
        "Error": {"ErrStatus": {"metadata": {}}}, "Timestamp": "0001-01-01T00:00:00Z"}))
}

/// The stand-in itself (no agent): admission writes managedFields naming what the user sent
/// and nothing the stored pod lacks; the relay drops what k8s.io/api v1.32 does not know and
/// keeps the managedFields; the DynamicController's `get` answers the stored pod whole, or
/// the API server's 404.
#[test]
fn the_stand_in_relays_and_reads_pods_as_cloudcore_does() {
    let mut api = ApiServer::default();
    let user = json!({"metadata": {"name": "p", "namespace": NS, "labels": {"app": "x"}},
        "spec": {"hostnameOverride": OVERRIDE, "restartPolicy": "Never",
                 "securityContext": {"runAsUser": 0},
                 "initContainers": [{"name": "i", "image": IMAGE, "restartPolicy": "Never",
                     "restartPolicyRules": [{"action": "Restart",
                         "exitCodes": {"operator": "In", "values": [1]}}]}],
                 "containers": [{"name": "c", "image": IMAGE, "args": ["a", "b"],
                     "env": [{"name": "E", "value": "v"}], "resources": {},
                     "restartPolicy": "Never", "restartPolicyRules": [{"action": "Restart",
                         "exitCodes": {"operator": "In", "values": [42]}}]}]}});
    let stored = api.admit_pod(&user, "n");
    assert_eq!(stored["metadata"]["generation"], 1);
    let entry = &stored["metadata"]["managedFields"][0];
    assert_eq!(
        (
            &entry["manager"],
            &entry["operation"],
            &entry["apiVersion"],
            &entry["fieldsType"]
        ),
        (
            &json!("kubectl-client-side-apply"),
            &json!("Update"),
            &json!("v1"),
            &json!("FieldsV1")
        )
    );
    assert!(
        entry["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{entry}"
    );
    // `restartPolicyRules` is a list of objects without names: a leaf.
    let c = json!({".": {}, "f:name": {}, "f:image": {}, "f:args": {}, "f:resources": {},
        "f:env": {"k:{\"name\":\"E\"}": {".": {}, "f:name": {}, "f:value": {}}},
        "f:restartPolicy": {}, "f:restartPolicyRules": {}});
    let i = json!({".": {}, "f:name": {}, "f:image": {}, "f:restartPolicy": {},
        "f:restartPolicyRules": {}});
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
               "f:spec": {"f:hostnameOverride": {}, "f:restartPolicy": {},
                          "f:securityContext": {".": {}, "f:runAsUser": {}},
                          "f:initContainers": {"k:{\"name\":\"i\"}": i},
                          "f:containers": {"k:{\"name\":\"c\"}": c}}})
    );
    named_fields_exist(&entry["fieldsV1"], &stored).unwrap();

    let down = relayed(&stored);
    assert!(down["spec"].get("hostnameOverride").is_none(), "{down}");
    for list in ["initContainers", "containers"] {
        assert!(
            down["spec"][list][0].get("restartPolicyRules").is_none(),
            "{down}"
        );
        assert!(stored["spec"][list][0]["restartPolicyRules"].is_array());
    }
    assert_eq!(down["metadata"], stored["metadata"]);
    assert_eq!(api.pods[&format!("{NS}/p")], stored);

    let answer = |api: &mut ApiServer, verb: &str, key: &str, option: &[u8]| {
        let m = application("n", verb, key, option);
        let r = api.answer_application(&m, "n").expect("an answer");
        assert_eq!(r.header.parent_id, m.header.id);
        r.content
    };
    let ok = answer(&mut api, "get", &pod_key(NS, "p"), b"{}");
    assert_eq!(ok["Status"], "Approved", "{ok}");
    let body = edged::api::base64::decode(ok["RespBody"].as_str().unwrap()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), stored);

    let missing = answer(&mut api, "get", &pod_key(NS, "gone"), b"{}");
    assert_eq!(missing["Status"], "Rejected", "{missing}");
    assert_eq!(
        missing["Error"]["ErrStatus"],
        json!({"metadata": {}, "status": "Failure", "message": "pods \"gone\" not found",
               "reason": "NotFound", "details": {"name": "gone", "kind": "pods"}, "code": 404})
    );
    let bad = answer(&mut api, "get", &pod_key(NS, "p"), b"[]");
    assert_eq!(
        bad["Reason"],
        "failed to prase Option bytes, json: cannot unmarshal into Go value of type v1.GetOptions"
    );
    let unknown = answer(&mut api, "get", "/core/v1/widgets/ns/w", b"{}");
    assert_eq!(unknown["Error"]["ErrStatus"]["code"], 404, "{unknown}");
    // Lists as before.
    let list = answer(&mut api, "list", "/core/v1/services", b"{}");
    assert_eq!(list["Status"], "Approved", "{list}");
}

/// The fields CloudCore drops are read back through the DynamicController and taken: the
/// container's hostname is `hostnameOverride` and its `restartPolicyRules` restart it on exit
/// 42 (without them, the pod's name would be its hostname and the pod would end Failed, as both
/// policies say `Never`). A later label change and the delete are not read back again (what was
/// read back serves), nor is an ordinary pod.
#[test]
fn fields_cloudcore_drops_are_read_back_through_the_dynamic_controller() {
    bounded(240, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        let node = "relay-dc";
        let (a, _token) = cloud_agent(node, &hub);
        let stored = hub.create_pod(
            &relay_pod(
                "dropped",
                "hostname; sleep 2; exit 42",
                json!({"restartPolicy": "Never", "hostnameOverride": OVERRIDE}),
                json!({"restartPolicy": "Never", "restartPolicyRules": [
                    {"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]}),
            ),
            node,
        );
        // The stand-in's relay: the fields are gone from what went down, and named still in
        // its managedFields; the API server keeps them.
        let down = relayed_down(&a, &hub, NS, "dropped");
        assert!(down["spec"].get("hostnameOverride").is_none(), "{down}");
        assert!(
            down["spec"]["containers"][0]
                .get("restartPolicyRules")
                .is_none(),
            "{down}"
        );
        let fields = &down["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
        assert!(fields["f:hostnameOverride"].is_object(), "{down}");
        assert!(
            fields["f:containers"]["k:{\"name\":\"app\"}"]["f:restartPolicyRules"].is_object(),
            "{down}"
        );
        assert_eq!(down["metadata"]["generation"], 1, "{down}");
        assert_eq!(stored["spec"]["hostnameOverride"], OVERRIDE);

        // The container runs with the spec the user wrote.
        let first = output_of(&a, NS, "dropped", 0);
        assert_eq!(
            first.first().map(String::as_str),
            Some(OVERRIDE),
            "the hostname is not the override: the relayed spec ran"
        );
        let status = a.wait_pod("dropped", "restarted on exit 42", |p| {
            p["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        });
        assert_ne!(status["status"]["phase"], "Failed", "{status}");
        assert_eq!(
            status["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 42,
            "{status}"
        );
        // The cloud is told so too.
        a.wait_for("the restart reported upstream", || {
            let api = hub.api.lock().unwrap();
            let s = &api.pods.get(&format!("{NS}/dropped"))?["status"];
            s["containerStatuses"][0]["restartCount"]
                .as_u64()
                .is_some_and(|n| n >= 1)
                .then_some(())
        });
        let failed: Vec<_> = hub
            .sent(|m| m.route.resource == format!("{NS}/podpatch/dropped"))
            .into_iter()
            .filter(|m| {
                m.content
                    .as_str()
                    .and_then(|c| serde_json::from_str::<Value>(c).ok())
                    .is_some_and(|p| p["status"]["phase"] == "Failed")
            })
            .collect();
        assert!(failed.is_empty(), "reported Failed: {failed:?}");

        // What the agent asked is what CloudCore reads, and it says what it restored.
        {
            let api = hub.api.lock().unwrap();
            assert!(
                api.application_errors.is_empty(),
                "{:?}",
                api.application_errors
            );
            let gets: Vec<_> = api
                .applications
                .iter()
                .filter(|a| a.verb == "get")
                .collect();
            assert_eq!(gets.len(), 1, "{gets:?}");
            assert_eq!(
                (gets[0].key.as_str(), gets[0].nodename.as_str()),
                (pod_key(NS, "dropped").as_str(), node)
            );
            assert_eq!(gets[0].option.as_deref(), Some(&b"{}"[..]));
        }
        let log = a.agent_log();
        let restored: Vec<&str> = log.lines().filter(|l| l.contains(RESTORED)).collect();
        assert_eq!(restored.len(), 1, "{log}");
        assert!(
            restored[0].contains(&format!("{NS}/dropped")),
            "{restored:?}"
        );
        assert!(restored[0].contains("hostnameOverride"), "{restored:?}");
        assert!(restored[0].contains("restartPolicyRules"), "{restored:?}");

        // The agent holds the pod the user wrote.
        let rules = &stored["spec"]["containers"][0]["restartPolicyRules"];
        let held = a.pod("dropped").expect("the pod stored");
        assert_eq!(held["spec"]["hostnameOverride"], OVERRIDE, "{held}");
        assert_eq!(
            &held["spec"]["containers"][0]["restartPolicyRules"], rules,
            "{held}"
        );

        // A label (metadata only, the generation the same): what was read back serves, so no
        // second read, and the fields stay.
        hub.label_pod(NS, "dropped", "changed", "yes");
        let held = a.wait_pod("dropped", "the new label stored", |p| {
            p["metadata"]["labels"]["changed"] == "yes"
        });
        assert_eq!(held["spec"]["hostnameOverride"], OVERRIDE, "{held}");
        assert_eq!(
            &held["spec"]["containers"][0]["restartPolicyRules"], rules,
            "{held}"
        );
        let gets = gets_sent(&hub);
        assert_eq!(gets.len(), 1, "read again for a label: {gets:?}");

        // An ordinary pod: its managedFields name nothing it lacks; no read.
        hub.create_pod(
            &relay_pod("ordinary", "hostname; sleep 1000", json!({}), json!({})),
            node,
        );
        a.wait_running("ordinary");
        assert_eq!(output_of(&a, NS, "ordinary", 0), vec!["ordinary"]);
        let asked: Vec<_> = gets_sent(&hub)
            .into_iter()
            .filter(|(key, _, _)| *key != pod_key(NS, "dropped"))
            .collect();
        assert!(asked.is_empty(), "gets of an ordinary pod: {asked:?}");

        // Deleted: a pod on its way out is not read again, and the delete finishes in the cloud.
        hub.delete_pod(NS, "dropped", None);
        a.wait_for("the delete finished in the cloud", || {
            (!hub.has_pod(NS, "dropped")).then_some(())
        });
        let gets = gets_sent(&hub);
        assert_eq!(gets.len(), 1, "read again while deleting: {gets:?}");
    });
}

/// CloudCore's DynamicController off (its default): the read gets no answer. The pods run as
/// relayed (their hostname their name), the agent warns once what to enable, and the cloud is
/// not asked again for a while.
#[test]
fn without_the_dynamic_controller_the_pod_runs_as_relayed_and_the_agent_says_why() {
    bounded(240, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        hub.api.lock().unwrap().dynamic_controller = false;
        let node = "relay-nodc";
        let (a, _token) = cloud_agent(node, &hub);
        for name in ["quiet", "quiet2"] {
            hub.create_pod(
                &relay_pod(
                    name,
                    "hostname; sleep 1000",
                    json!({"hostnameOverride": OVERRIDE}),
                    json!({}),
                ),
                node,
            );
            a.wait_running(name);
            assert_eq!(
                output_of(&a, NS, name, 0),
                vec![name],
                "not the relayed spec's hostname"
            );
        }
        let gets = gets_sent(&hub);
        assert_eq!(
            gets.len(),
            1,
            "one read, then none while the cloud did not answer: {gets:?}"
        );
        assert_eq!(
            (gets[0].0.as_str(), gets[0].1.as_str()),
            (pod_key(NS, "quiet").as_str(), node)
        );
        let log = a.agent_log();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains(NO_ANSWER)).collect();
        assert_eq!(warnings.len(), 1, "{log}");
        assert!(warnings[0].contains(ENABLE), "{warnings:?}");
        assert!(!log.contains(RESTORED), "{log}");
    });
}
