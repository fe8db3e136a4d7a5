//! The cloud behind the CloudHub stand-in: what kube-apiserver, its admission and the node
//! lifecycle controller do, as CloudCore relays them to the edge (checked against a real
//! CloudCore at kubeedge/kubeedge 16cd854 in front of kube-apiserver v1.37.2; read from
//! `cloud/pkg/edgecontroller/controller/upstream.go` for the wire shapes).
//!
//! - Leases (`kube-node-lease/lease/<node>`): query answers `{"Object":..,"Err":..}` with 404
//!   NotFound when absent; insert creates; update creates an absent lease (create-on-update),
//!   refuses a missing resourceVersion with 422 Invalid and a stale one with 409 Conflict.
//! - Node status patches are applied (conditions merged by type) and answered with the Node;
//!   a node query answers the bare Node.
//! - The node lifecycle controller: a node whose lease was not renewed (and whose Ready
//!   heartbeat did not move) for the grace period (40 s) gets every condition Unknown
//!   ("Kubelet stopped posting node status.") and the `unreachable` taints, and CloudCore
//!   sends the changed Node down (`update null/node/<node>`).
//! - Admission ([`ApiServer::admit_pod`]): the v1 defaults, the service-account volume
//!   `kube-api-access-xxxxx`, the default tolerations; a `kube-root-ca.crt` ConfigMap in every
//!   namespace; `metadata.generation` 1 and `metadata.managedFields`, one `Update` entry whose
//!   FieldsV1 names the fields the user submitted ([`fields_v1`]).
//! - CloudCore's relay of pods ([`relayed`]): CloudCore vendors k8s.io/api v1.32, and its typed
//!   informer decode drops every field that version does not know. Of those the stand-in
//!   drops what edged reads: `spec.hostnameOverride` and the `restartPolicyRules` of every
//!   container, init container and ephemeral container (all 1.34+). `metadata.managedFields`
//!   (FieldsV1 is raw JSON) survives and still names them. Every pod message that goes down
//!   (`cloudhub::pod_message`: insert, update, delete, and the pod watch's updates) is so
//!   relayed; the API server's own copy ([`ApiServer::pods`]) keeps every field.
//! - A pod delete from the edge is read as CloudCore's `deletePod` reads it: a *string*
//!   content is the pod's uid precondition, an object is DeleteOptions. A failed uid
//!   precondition leaves the pod in place (and CloudCore still answers "OK" for a string).
//! - Services, and CloudCore's DynamicController listing them for the edge
//!   ([`ApiServer::answer_application`], read from `cloud/pkg/dynamiccontroller/application`
//!   and `pkg/metaserver`): the `kubernetes` service in `default` as kube-apiserver keeps it;
//!   an Application read as Go's encoding/json reads it (its field names, matched exactly or,
//!   as Go does, without regard to case; `[]byte` fields as padded standard base64; unknown
//!   fields ignored; one that does not decode is dropped without an answer, as
//!   `Center.Process` does); a `list` answered `Approved` with the UnstructuredList in
//!   `RespBody`, or `Rejected`. A `get` (`dynamicClient.Resource(gvr).Namespace(ns).Get`,
//!   its Option the GetOptions) of a pod, service or ConfigMap of the model answers the
//!   stored object whole (every field, also those the relay drops) or `Rejected` with the API
//!   server's 404 NotFound. With the DynamicController off (CloudCore's default) nothing
//!   answers at all.

#![allow(dead_code)]

use edged::message::{new_uuid, op, Message};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

/// What the cloud did with a delete the edge sent.
#[derive(Clone, Debug, PartialEq)]
pub enum DeleteOutcome {
    /// The pod was removed.
    Deleted,
    /// The uid precondition failed: the pod stays (`Terminating` in kubectl).
    PreconditionFailed { sent: String, actual: String },
    /// No such pod.
    NotFound,
    /// The pod has finalizers: kube-apiserver keeps it, with `deletionGracePeriodSeconds: 0`,
    /// until they are removed.
    Finalizing,
}

/// The cloud's objects and controllers.
pub struct ApiServer {
    /// Nodes by name.
    pub nodes: HashMap<String, Value>,
    /// Leases by node name.
    pub leases: HashMap<String, Value>,
    /// Pods by `namespace/name`.
    pub pods: HashMap<String, Value>,
    /// ConfigMaps by `namespace/name` (each namespace has `kube-root-ca.crt`).
    pub config_maps: HashMap<String, Value>,
    /// Services by `namespace/name` (`default/kubernetes` from the start).
    pub services: HashMap<String, Value>,
    /// Whether CloudCore's DynamicController runs (`modules.dynamicController.enable`; off by
    /// default in CloudCore, on here): off, Applications get no answer.
    pub dynamic_controller: bool,
    /// Every Application the edge sent that decoded, in order, as CloudCore read it.
    pub applications: Vec<GoApplication>,
    /// What was wrong with Applications the edge sent: one that did not decode (no answer
    /// went), or a field name that is not exactly Go's (Go takes it; the edge should not
    /// rely on that).
    pub application_errors: Vec<String>,
    /// Every delete the edge sent: `namespace/name` and what came of it.
    pub deletes: Vec<(String, DeleteOutcome)>,
    /// Pods the edge's own writes changed in metadata or spec: CloudCore's pod watch sends
    /// each down as an `update` (it leaves status-only changes out).
    pub down: Vec<Value>,
    /// Every lease write the API server accepted: node and when.
    pub renewals: Vec<(String, Instant)>,
    /// Lease writes refused: the code (409, 422).
    pub lease_refusals: Vec<i64>,
    /// How long a node may go without a lease renewal or heartbeat (the node monitor grace
    /// period).
    pub grace: Duration,
    /// Whether registrations (`insert null/node/<node>`) are answered here; tests that hold the
    /// answer back reply themselves.
    pub answer_registrations: bool,
    /// The cluster CA as PEM: `kube-root-ca.crt` in every namespace holds it.
    pub root_ca_pem: String,
    /// The longest token the API server issues (`--service-account-max-token-expiration`).
    pub max_token_seconds: Option<i64>,
    /// Every answer to a `serviceaccounttoken` query, in order.
    pub token_answers: Vec<Value>,
    /// Events by `namespace/name`, as the API server holds them after CloudCore's
    /// `processEvent` (insert: create; patch: the strategic merge patch in `patchData` applied).
    pub events: HashMap<String, Value>,
    /// Event writes the API server refused, and why.
    pub event_refusals: Vec<String>,
    /// The last sign of life of each node.
    probe: HashMap<String, Instant>,
    version: u64,
}

impl Default for ApiServer {
    fn default() -> Self {
        ApiServer {
            nodes: HashMap::new(),
            leases: HashMap::new(),
            pods: HashMap::new(),
            config_maps: HashMap::new(),
            services: HashMap::from([(
                "default/kubernetes".to_string(),
                json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "kubernetes", "namespace": "default",
                                 "uid": "svc-kubernetes", "resourceVersion": "5",
                                 "labels": {"component": "apiserver", "provider": "kubernetes"}},
                    "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                             "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"],
                             "ipFamilyPolicy": "SingleStack",
                             "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                        "targetPort": 6443}],
                             "sessionAffinity": "None", "type": "ClusterIP"},
                    "status": {"loadBalancer": {}}}),
            )]),
            dynamic_controller: true,
            applications: Vec::new(),
            application_errors: Vec::new(),
            deletes: Vec::new(),
            down: Vec::new(),
            renewals: Vec::new(),
            lease_refusals: Vec::new(),
            grace: Duration::from_secs(40),
            answer_registrations: true,
            root_ca_pem: ROOT_CA.to_string(),
            max_token_seconds: None,
            token_answers: Vec::new(),
            events: HashMap::new(),
            event_refusals: Vec::new(),
            probe: HashMap::new(),
            version: 100,
        }
    }
}

/// The CA bundle `kube-root-ca.crt` holds in the stand-in's cluster.
pub const ROOT_CA: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBstand-in-cluster-ca\n-----END CERTIFICATE-----\n";

fn status_error(code: i64, reason: &str, message: &str) -> Value {
    json!({"ErrStatus": {"metadata": {}, "status": "Failure", "message": message,
                         "reason": reason, "code": code}})
}

fn object_resp(obj: Option<&Value>, err: Option<Value>) -> Value {
    json!({"Object": obj.cloned().unwrap_or(Value::Null), "Err": err.unwrap_or(Value::Null)})
}

fn now_rfc3339() -> String {
    edged::api::rfc3339(SystemTime::now())
}

/// The FieldsV1 of a managedFields entry for `pod` as the user submitted it: its labels,
/// annotations and whole `spec`, as kube-apiserver's structured-merge-diff writes a field set:
/// a member of an object is `f:<key>`; an object (below `f:metadata` and `f:spec`) is also
/// itself, `.`; a list of objects that each have a `name` is keyed, `k:{"name":"<n>"}` with
/// `.` and the item's members; any other list, and every scalar, is a leaf `{}`. Null members
/// are not stored, so not listed.
///
/// The real API server also lists the fields admission defaulted (its entry is computed on the
/// stored object), and keys some lists otherwise (`ports` by `containerPort` and `protocol`,
/// `volumeMounts` by `mountPath`); the user's fields alone are enough for the stand-in, whose
/// point is the fields the cloud drops: every field listed here is in the stored pod.
pub fn fields_v1(pod: &Value) -> Value {
    let mut top = serde_json::Map::new();
    let mut metadata = serde_json::Map::new();
    for k in ["labels", "annotations"] {
        if let Some(v) = pod["metadata"].get(k).filter(|v| v.is_object()) {
            metadata.insert(format!("f:{k}"), field_set(v));
        }
    }
    if !metadata.is_empty() {
        top.insert("f:metadata".into(), Value::Object(metadata));
    }
    if let Some(spec) = pod.get("spec").and_then(Value::as_object) {
        top.insert("f:spec".into(), Value::Object(members(spec)));
    }
    Value::Object(top)
}

/// The `f:<key>` of each member of an object that is set.
fn members(o: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    o.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (format!("f:{k}"), field_set(v)))
        .collect()
}

/// The field set below one field of value `v` (see [`fields_v1`]).
fn field_set(v: &Value) -> Value {
    match v {
        Value::Object(o) if !o.is_empty() => {
            let mut set = members(o);
            set.insert(".".into(), json!({}));
            Value::Object(set)
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(|i| i["name"].is_string()) => {
            let set = items
                .iter()
                .map(|i| {
                    let key = json!({"name": i["name"]}).to_string();
                    let mut item = members(i.as_object().expect("an item with a name"));
                    item.insert(".".into(), json!({}));
                    (format!("k:{key}"), Value::Object(item))
                })
                .collect();
            Value::Object(set)
        }
        _ => json!({}),
    }
}

/// The fields of a pod that k8s.io/api v1.32 does not know, which CloudCore's typed decode
/// drops: of the spec, and of each container of these lists.
pub const DROPPED_SPEC_FIELDS: [&str; 1] = ["hostnameOverride"];
/// See [`DROPPED_SPEC_FIELDS`].
pub const DROPPED_CONTAINER_FIELDS: [&str; 1] = ["restartPolicyRules"];
/// The container lists whose entries lose [`DROPPED_CONTAINER_FIELDS`].
pub const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// A pod as CloudCore relays it to the edge: decoded into k8s.io/api v1.32's `v1.Pod` and
/// encoded again, so without the fields that version does not know ([`DROPPED_SPEC_FIELDS`],
/// [`DROPPED_CONTAINER_FIELDS`]). `metadata.managedFields` stays, naming them still.
pub fn relayed(pod: &Value) -> Value {
    let mut p = pod.clone();
    let Some(spec) = p.get_mut("spec").and_then(Value::as_object_mut) else {
        return p;
    };
    for f in DROPPED_SPEC_FIELDS {
        spec.remove(f);
    }
    for list in CONTAINER_LISTS {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            for f in DROPPED_CONTAINER_FIELDS {
                c.remove(f);
            }
        }
    }
    p
}

impl ApiServer {
    /// A cloud whose CA (in `kube-root-ca.crt`) is `root_ca_pem`.
    pub fn with_root_ca(root_ca_pem: String) -> ApiServer {
        ApiServer {
            root_ca_pem,
            ..ApiServer::default()
        }
    }

    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// Answers a message from the edge as CloudCore would, or `None` when it is not one this
    /// model answers (the test answers it, or nobody does).
    pub fn answer(&mut self, m: &Message) -> Option<Message> {
        let parts: Vec<&str> = m.route.resource.splitn(3, '/').collect();
        let [ns, kind, name] = parts[..] else {
            return None;
        };
        if kind == "event" {
            // No answer goes back for events (CloudCore's processEvent).
            self.event(ns, name, &m.route.operation, &m.content);
            return None;
        }
        let content = match (kind, m.route.operation.as_str()) {
            ("lease", o) => self.lease(ns, name, o, &m.content),
            ("node", op::INSERT) if self.answer_registrations => {
                Some(self.register(name, &m.content))
            }
            ("node", op::QUERY) => Some(match self.nodes.get(name) {
                Some(n) => n.clone(),
                None => status_error(404, "NotFound", &format!("nodes \"{name}\" not found")),
            }),
            ("nodepatch", op::PATCH) => Some(self.patch_node(name, &m.content)),
            ("podpatch", op::PATCH) => Some(self.patch_pod(ns, name, &m.content)),
            ("pod", op::DELETE) => Some(self.delete_from_edge(ns, name, &m.content)),
            ("configmap", op::QUERY) => {
                if name == "kube-root-ca.crt" {
                    self.ensure_root_ca(ns);
                }
                self.config_maps.get(&format!("{ns}/{name}")).cloned()
            }
            ("serviceaccounttoken", op::QUERY) => {
                let pods = self
                    .pods
                    .iter()
                    .map(|(k, p)| {
                        let uid = p["metadata"]["uid"].as_str().unwrap_or_default();
                        (k.clone(), uid.to_string())
                    })
                    .collect();
                let a = super::token_answer(m, &pods, self.max_token_seconds);
                self.token_answers.push(a.clone());
                Some(a)
            }
            _ => None,
        }?;
        let mut r = Message::new(
            "edgecontroller",
            "resource",
            op::RESPONSE,
            m.route.resource.clone(),
        );
        r.header.parent_id = m.header.id.clone();
        r.content = content;
        Some(r)
    }

    /// Registers a node as `createNode` does; AlreadyExists when it is there.
    pub fn register(&mut self, name: &str, node: &Value) -> Value {
        if self.nodes.contains_key(name) {
            return object_resp(
                None,
                Some(status_error(
                    409,
                    "AlreadyExists",
                    &format!("nodes \"{name}\" already exists"),
                )),
            );
        }
        let mut n = node.clone();
        n["metadata"]["uid"] = json!(new_uuid());
        n["metadata"]["resourceVersion"] = json!(self.next_version());
        n["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        self.nodes.insert(name.to_string(), n.clone());
        self.probe.insert(name.to_string(), Instant::now());
        object_resp(Some(&n), None)
    }

    fn lease(&mut self, ns: &str, name: &str, operation: &str, content: &Value) -> Option<Value> {
        if ns != "kube-node-lease" {
            return None;
        }
        let not_found = || {
            status_error(
                404,
                "NotFound",
                &format!("leases.coordination.k8s.io \"{name}\" not found"),
            )
        };
        let empty = json!({"metadata": {}, "spec": {}});
        Some(match operation {
            op::QUERY => match self.leases.get(name) {
                Some(l) => object_resp(Some(l), None),
                None => json!({"Object": null, "Err": not_found()}),
            },
            op::INSERT => {
                if self.leases.contains_key(name) {
                    self.lease_refusals.push(409);
                    object_resp(
                        Some(&empty),
                        Some(status_error(
                            409,
                            "AlreadyExists",
                            &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                        )),
                    )
                } else if content["metadata"]["resourceVersion"].is_string() {
                    self.lease_refusals.push(500);
                    object_resp(
                        Some(&empty),
                        Some(status_error(
                            500,
                            "InternalError",
                            "resourceVersion should not be set on objects to be created",
                        )),
                    )
                } else {
                    let l = self.store_lease(name, content);
                    object_resp(Some(&l), None)
                }
            }
            op::UPDATE => {
                let sent = content["metadata"]["resourceVersion"].as_str();
                match (self.leases.get(name), sent) {
                    // Leases allow create-on-update.
                    (None, _) => {
                        let mut c = content.clone();
                        c["metadata"]
                            .as_object_mut()
                            .map(|m| m.remove("resourceVersion"));
                        let l = self.store_lease(name, &c);
                        object_resp(Some(&l), None)
                    }
                    (Some(_), None) => {
                        self.lease_refusals.push(422);
                        object_resp(Some(&empty), Some(status_error(422, "Invalid", &format!(
                            "leases.coordination.k8s.io \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update"))))
                    }
                    (Some(cur), Some(rv)) if cur["metadata"]["resourceVersion"] != rv => {
                        self.lease_refusals.push(409);
                        object_resp(Some(&empty), Some(status_error(409, "Conflict", &format!(
                            "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"))))
                    }
                    (Some(_), Some(_)) => {
                        let l = self.store_lease(name, content);
                        object_resp(Some(&l), None)
                    }
                }
            }
            _ => return None,
        })
    }

    fn store_lease(&mut self, name: &str, content: &Value) -> Value {
        let mut l = content.clone();
        l["metadata"]["namespace"] = json!("kube-node-lease");
        if l["metadata"]["uid"].is_null() {
            l["metadata"]["uid"] = json!(new_uuid());
        }
        l["metadata"]["resourceVersion"] = json!(self.next_version());
        self.leases.insert(name.to_string(), l.clone());
        self.renewals.push((name.to_string(), Instant::now()));
        self.probe.insert(name.to_string(), Instant::now());
        l
    }

    /// Applies a node status patch (a JSON string of `{"status":..}`; conditions merged by
    /// type, other fields replaced) and answers with the Node.
    fn patch_node(&mut self, name: &str, content: &Value) -> Value {
        let patch: Value = match content.as_str().map(serde_json::from_str) {
            Some(Ok(p)) => p,
            _ => {
                return object_resp(
                    None,
                    Some(status_error(
                        400,
                        "BadRequest",
                        "the patch is not a JSON string",
                    )),
                )
            }
        };
        let Some(node) = self.nodes.get_mut(name) else {
            return object_resp(
                None,
                Some(status_error(
                    404,
                    "NotFound",
                    &format!("nodes \"{name}\" not found"),
                )),
            );
        };
        let heartbeat = |n: &Value| {
            n["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| (c["lastHeartbeatTime"].clone(), c["status"].clone()))
        };
        let before = heartbeat(node);
        if let Some(status) = patch["status"].as_object() {
            for (k, v) in status {
                if k == "conditions" {
                    let mut merged = node["status"]["conditions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    for c in v.as_array().into_iter().flatten() {
                        match merged.iter_mut().find(|m| m["type"] == c["type"]) {
                            Some(m) => *m = c.clone(),
                            None => merged.push(c.clone()),
                        }
                    }
                    node["status"]["conditions"] = json!(merged);
                } else {
                    node["status"][k] = v.clone();
                }
            }
        }
        let after = heartbeat(node);
        let ready = after.as_ref().is_some_and(|(_, s)| s == "True");
        if ready {
            // The node lifecycle controller takes the taints off a Ready node.
            if let Some(t) = node
                .pointer_mut("/spec/taints")
                .and_then(Value::as_array_mut)
            {
                t.retain(|t| t["key"] != "node.kubernetes.io/unreachable");
            }
        }
        node["metadata"]["resourceVersion"] = json!((self.version + 1).to_string());
        self.version += 1;
        let out = node.clone();
        if before != after {
            self.probe.insert(name.to_string(), Instant::now());
        }
        object_resp(Some(&out), None)
    }

    fn patch_pod(&mut self, ns: &str, name: &str, content: &Value) -> Value {
        let patch: Value = match content.as_str().map(serde_json::from_str) {
            Some(Ok(p)) => p,
            _ => return status_error(400, "BadRequest", "the podpatch is not a JSON string"),
        };
        let key = format!("{ns}/{name}");
        let Some(pod) = self.pods.get_mut(&key) else {
            return status_error(404, "NotFound", &format!("pods \"{name}\" not found"));
        };
        if patch["metadata"]["uid"] != pod["metadata"]["uid"] {
            return status_error(
                409,
                "Conflict",
                "Precondition failed: UID in precondition does not match",
            );
        }
        pod["status"] = patch["status"].clone();
        json!("OK")
    }

    /// An event from the edge: `insert` creates it (`CreateWithEventNamespace`), `patch`
    /// carries KubeEdge's `EventPatchInfo`, `{"event": .., "patchData": "<patch>"}` (read as
    /// Go's encoding/json does: keys matched without regard to case), and patches the named event
    /// (`PatchWithEventNamespace`). Checked as kube-apiserver's legacy event validation does:
    /// the event's namespace is its involved object's, its name a DNS subdomain.
    fn event(&mut self, ns: &str, name: &str, operation: &str, content: &Value) {
        let (event, patch) = match operation {
            op::INSERT => (content.clone(), None),
            op::PATCH => {
                let field = |tag: &str| {
                    content
                        .as_object()
                        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(tag)))
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Null)
                };
                let data = field("patchData")
                    .as_str()
                    .and_then(|d| serde_json::from_str::<Value>(d).ok());
                (field("event"), data)
            }
            other => {
                self.event_refusals
                    .push(format!("{other} {ns}/{name}: no such operation"));
                return;
            }
        };
        let meta_ns = event["metadata"]["namespace"].as_str().unwrap_or_default();
        let meta_name = event["metadata"]["name"].as_str().unwrap_or_default();
        let involved_ns = event["involvedObject"]["namespace"]
            .as_str()
            .unwrap_or_default();
        let dns = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.split('.').all(|l| {
                    !l.is_empty()
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                })
        };
        let refused = if meta_ns != ns || meta_name != name {
            Some("the route does not name the event".to_string())
        } else if involved_ns != meta_ns {
            Some("involvedObject.namespace: does not match event.namespace".to_string())
        } else if !dns(meta_name) {
            Some(format!(
                "metadata.name: {meta_name:?} is not a DNS subdomain"
            ))
        } else if operation == op::PATCH && patch.is_none() {
            Some("patchData is not a JSON patch".to_string())
        } else {
            None
        };
        if let Some(why) = refused {
            self.event_refusals
                .push(format!("{operation} {ns}/{name}: {why}"));
            return;
        }
        let key = format!("{ns}/{name}");
        match patch {
            None => {
                if self.events.contains_key(&key) {
                    self.event_refusals
                        .push(format!("insert {key}: AlreadyExists"));
                    return;
                }
                self.events.insert(key, event);
            }
            Some(patch) => {
                let Some(stored) = self.events.get_mut(&key) else {
                    self.event_refusals.push(format!("patch {key}: NotFound"));
                    return;
                };
                if let (Some(o), Some(p)) = (stored.as_object_mut(), patch.as_object()) {
                    for (k, v) in p {
                        o.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }

    /// The events about pod `ns/pod` the API server holds: (reason, fieldPath, count, message).
    pub fn events_of(&self, ns: &str, pod: &str) -> Vec<(String, String, u64, String)> {
        let mut out: Vec<_> = self
            .events
            .values()
            .filter(|e| {
                e["involvedObject"]["namespace"] == ns && e["involvedObject"]["name"] == pod
            })
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["involvedObject"]["fieldPath"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    e["count"].as_u64().unwrap_or(0),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// A delete from the edge, read as CloudCore's `deletePod` reads it.
    fn delete_from_edge(&mut self, ns: &str, name: &str, content: &Value) -> Value {
        let key = format!("{ns}/{name}");
        // A string is the pod's uid (older edges); an object is DeleteOptions.
        let (uid, from_string) = match content {
            Value::String(s) => (Some(s.clone()), true),
            Value::Object(_) => (
                content["preconditions"]["uid"].as_str().map(str::to_string),
                false,
            ),
            _ => {
                return status_error(400, "BadRequest", "cannot unmarshal the delete options");
            }
        };
        let Some(pod) = self.pods.get(&key) else {
            self.deletes.push((key, DeleteOutcome::NotFound));
            return json!("OK");
        };
        let actual = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match uid {
            Some(sent) if sent != actual => {
                self.deletes.push((
                    key,
                    DeleteOutcome::PreconditionFailed {
                        sent: sent.clone(),
                        actual: actual.clone(),
                    },
                ));
                let e = status_error(409, "Conflict", &format!(
                    "Operation cannot be fulfilled on pods \"{name}\": Precondition failed: UID in precondition: {sent}, UID in object meta: {actual}"));
                // CloudCore swallows this one for a string content (the message says the
                // object "might have been deleted and then recreated") and answers OK.
                if from_string {
                    json!("OK")
                } else {
                    e
                }
            }
            _ if pod["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty()) =>
            {
                // As kube-apiserver's graceful delete of an object with finalizers: it stays,
                // its grace period now 0, and the change goes to the watchers.
                let rv = self.next_version();
                let p = self.pods.get_mut(&key).expect("checked above");
                if p["metadata"]["deletionTimestamp"].is_null() {
                    p["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                }
                let changed = p["metadata"]["deletionGracePeriodSeconds"] != json!(0);
                p["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                if changed {
                    p["metadata"]["resourceVersion"] = json!(rv);
                    let p = p.clone();
                    self.down.push(p);
                }
                self.deletes.push((key, DeleteOutcome::Finalizing));
                json!("OK")
            }
            _ => {
                self.pods.remove(&key);
                self.deletes.push((key, DeleteOutcome::Deleted));
                json!("OK")
            }
        }
    }

    /// Removes a pod's finalizers (`kubectl patch` as the e2e framework's `RemoveFinalizer`):
    /// a pod already deleted with grace period 0 is gone then; returns it (for the `delete` that
    /// goes down).
    pub fn remove_finalizers(&mut self, ns: &str, name: &str) -> Option<Value> {
        let key = format!("{ns}/{name}");
        let p = self.pods.get_mut(&key)?;
        p["metadata"]
            .as_object_mut()
            .map(|m| m.remove("finalizers"));
        if p["metadata"]["deletionGracePeriodSeconds"] == json!(0) {
            return self.pods.remove(&key);
        }
        None
    }

    /// The node lifecycle controller's look at every node: those silent for the grace period
    /// are marked Unknown and tainted; returns the Nodes CloudCore sends down.
    pub fn monitor(&mut self, now: Instant) -> Vec<Message> {
        let mut down = Vec::new();
        let stale: Vec<String> = self
            .probe
            .iter()
            .filter(|(_, t)| now.duration_since(**t) > self.grace)
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            if let Some(m) = self.mark_unknown(&name) {
                down.push(m);
            }
        }
        down
    }

    /// Marks a node's conditions Unknown and taints it, as the node lifecycle controller does;
    /// returns the `update null/node/<node>` CloudCore sends down (None if it was already so).
    pub fn mark_unknown(&mut self, name: &str) -> Option<Message> {
        let rv = self.next_version();
        let node = self.nodes.get_mut(name)?;
        let now = now_rfc3339();
        let mut changed = false;
        for c in node
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if c["status"] != "Unknown" {
                changed = true;
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(now);
            }
        }
        if !changed {
            return None;
        }
        node["spec"]["taints"] = json!([
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": now},
        ]);
        node["metadata"]["resourceVersion"] = json!(rv);
        let mut n = node.clone();
        n["apiVersion"] = json!("v1");
        n["kind"] = json!("Node");
        Some(
            Message::new(
                "edgecontroller",
                "resource",
                op::UPDATE,
                format!("null/node/{name}"),
            )
            .with_content(n),
        )
    }

    /// The Ready condition's status of a node as the cloud sees it.
    pub fn node_ready(&self, name: &str) -> Option<String> {
        self.nodes.get(name)?["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?["status"]
            .as_str()
            .map(str::to_string)
    }

    /// Makes a pod known to the cloud as it is (already admitted, with its uid).
    pub fn add_pod(&mut self, pod: &Value) {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        self.ensure_root_ca(ns);
        self.pods.insert(format!("{ns}/{name}"), pod.clone());
    }

    /// Admits a pod as a user wrote it, as kube-apiserver does for `kubectl apply` and the
    /// scheduler binds it to `node`: the v1 defaults, ServiceAccount admission (unless
    /// `automountServiceAccountToken: false`), DefaultTolerationSeconds. Stores and returns
    /// it.
    pub fn admit_pod(&mut self, pod: &Value, node: &str) -> Value {
        let mut p = pod.clone();
        p["apiVersion"] = json!("v1");
        p["kind"] = json!("Pod");
        let ns = p["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        p["metadata"]["namespace"] = json!(ns);
        p["metadata"]["uid"] = json!(new_uuid());
        p["metadata"]["resourceVersion"] = json!(self.next_version());
        p["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        p["metadata"]["generation"] = json!(1);
        // The field manager's record of the write (`kubectl apply` without server-side
        // apply): what the user sent, before defaults.
        p["metadata"]["managedFields"] = json!([{
            "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
            "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(pod)}]);
        self.ensure_root_ca(&ns);
        let spec = &mut p["spec"];
        let mut defaults = |k: &str, v: Value| {
            if spec[k].is_null() {
                spec[k] = v;
            }
        };
        defaults("dnsPolicy", json!("ClusterFirst"));
        defaults("restartPolicy", json!("Always"));
        defaults("terminationGracePeriodSeconds", json!(30));
        defaults("schedulerName", json!("default-scheduler"));
        defaults("securityContext", json!({}));
        defaults("serviceAccountName", json!("default"));
        defaults("enableServiceLinks", json!(true));
        defaults("priority", json!(0));
        defaults("preemptionPolicy", json!("PreemptLowerPriority"));
        spec["serviceAccount"] = spec["serviceAccountName"].clone();
        spec["nodeName"] = json!(node);
        let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            if !tolerations.iter().any(|t| t["key"] == key) {
                tolerations.push(
                    json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                        "tolerationSeconds": 300}),
                );
            }
        }
        spec["tolerations"] = json!(tolerations);
        for v in spec
            .get_mut("volumes")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            for kind in ["configMap", "secret", "downwardAPI", "projected"] {
                if v[kind].is_object() && v[kind]["defaultMode"].is_null() {
                    v[kind]["defaultMode"] = json!(420);
                }
            }
        }
        let automount = spec["automountServiceAccountToken"]
            .as_bool()
            .unwrap_or(true);
        let sa_volume = format!("kube-api-access-{}", &new_uuid().replace('-', "")[..5]);
        if automount {
            let mut volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
            volumes.push(json!({"name": sa_volume, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}));
            spec["volumes"] = json!(volumes);
        }
        for list in ["initContainers", "containers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let image = c["image"].as_str().unwrap_or_default().to_string();
                let last = image.rsplit('/').next().unwrap_or_default();
                let tagged =
                    !image.contains('@') && last.contains(':') && !last.ends_with(":latest");
                if c["imagePullPolicy"].is_null() {
                    c["imagePullPolicy"] = json!(if tagged || image.contains('@') {
                        "IfNotPresent"
                    } else {
                        "Always"
                    });
                }
                if c["terminationMessagePath"].is_null() {
                    c["terminationMessagePath"] = json!("/dev/termination-log");
                }
                if c["terminationMessagePolicy"].is_null() {
                    c["terminationMessagePolicy"] = json!("File");
                }
                if c["resources"].is_null() {
                    c["resources"] = json!({});
                }
                if automount {
                    let mut mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
                    let path = "/var/run/secrets/kubernetes.io/serviceaccount";
                    if !mounts.iter().any(|m| m["mountPath"] == path) {
                        mounts
                            .push(json!({"name": sa_volume, "readOnly": true, "mountPath": path}));
                    }
                    c["volumeMounts"] = json!(mounts);
                }
            }
        }
        p["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        self.pods.insert(
            format!(
                "{ns}/{}",
                p["metadata"]["name"].as_str().unwrap_or_default()
            ),
            p.clone(),
        );
        p
    }

    fn ensure_root_ca(&mut self, ns: &str) {
        let key = format!("{ns}/kube-root-ca.crt");
        if !self.config_maps.contains_key(&key) {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "uid": new_uuid(),
                             "resourceVersion": self.next_version()},
                "data": {"ca.crt": self.root_ca_pem}});
            self.config_maps.insert(key, cm);
        }
    }

    /// A label set as `kubectl label` sets it: metadata only, so the generation stays; the
    /// write gets a managedFields entry of its own. Returns the updated pod to send down.
    pub fn label_pod(&mut self, ns: &str, name: &str, key: &str, value: &str) -> Option<Value> {
        let rv = self.next_version();
        let p = self.pods.get_mut(&format!("{ns}/{name}"))?;
        p["metadata"]["labels"][key] = json!(value);
        p["metadata"]["resourceVersion"] = json!(rv);
        let mut entries = p["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        entries.push(json!({"manager": "kubectl-label", "operation": "Update",
            "apiVersion": "v1", "time": now_rfc3339(), "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {format!("f:{key}"): {}}}}}));
        p["metadata"]["managedFields"] = json!(entries);
        Some(p.clone())
    }

    /// A graceful delete as `kubectl delete` makes it: the pod gets its deletionTimestamp and
    /// grace period (the pod's own unless given); returns the updated pod to send down.
    pub fn start_delete(&mut self, ns: &str, name: &str, grace: Option<i64>) -> Option<Value> {
        let rv = self.next_version();
        let p = self.pods.get_mut(&format!("{ns}/{name}"))?;
        let g = grace
            .or_else(|| p["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30);
        p["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        p["metadata"]["deletionGracePeriodSeconds"] = json!(g);
        p["metadata"]["resourceVersion"] = json!(rv);
        Some(p.clone())
    }
}

// ---- Services and CloudCore's DynamicController ----

/// KubeEdge's `metaserver.Application` as CloudCore's `msgToApplication` reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoApplication {
    pub id: String,
    pub key: String,
    pub verb: String,
    pub nodename: String,
    /// `nil` is `None`.
    pub option: Option<Vec<u8>>,
    pub req_body: Option<Vec<u8>>,
    pub subresource: String,
    pub resp_body: Option<Vec<u8>>,
    pub status: String,
    pub reason: String,
    /// `Error.ErrStatus` (`Null` when absent).
    pub err_status: Value,
    /// `Timestamp` as it came (`Null` when absent).
    pub timestamp: Value,
}

/// The Go struct's fields: name and JSON type.
const APPLICATION_FIELDS: [(&str, &str); 12] = [
    ("ID", "string"),
    ("Key", "string"),
    ("Verb", "string"),
    ("Nodename", "string"),
    ("Option", "[]byte"),
    ("ReqBody", "[]byte"),
    ("Subresource", "string"),
    ("RespBody", "[]byte"),
    ("Status", "string"),
    ("Reason", "string"),
    ("Error", "StatusError"),
    ("Timestamp", "time.Time"),
];

/// Decodes `[]byte` as Go's encoding/json: standard base64, padding required (`\r` and `\n`
/// skipped).
fn go_base64(text: &str) -> Result<Vec<u8>, String> {
    let clean: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    if !clean.len().is_multiple_of(4) {
        return Err(format!("illegal base64 data at input byte {}", clean.len()));
    }
    edged::api::base64::decode(&clean)
}

/// Reads an Application as Go's `json.Unmarshal(contentData, app)`: `Err` is the error Go
/// returns (CloudCore then drops the message); the list beside it names fields whose names
/// matched only without regard to case.
pub fn decode_go_application(content: &Value) -> Result<(GoApplication, Vec<String>), String> {
    let Some(obj) = content.as_object() else {
        return Err(format!(
            "json: cannot unmarshal {} into Go value of type metaserver.Application",
            go_type(content)
        ));
    };
    let mut app = GoApplication {
        err_status: Value::Null,
        timestamp: Value::Null,
        ..GoApplication::default()
    };
    let mut inexact = Vec::new();
    for (k, v) in obj {
        // Go prefers an exact match, then any field equal without regard to case.
        let Some((field, ty)) = APPLICATION_FIELDS.iter().find(|(f, _)| f == k).or_else(|| {
            APPLICATION_FIELDS
                .iter()
                .find(|(f, _)| f.eq_ignore_ascii_case(k))
        }) else {
            continue; // unknown fields are ignored
        };
        if field != k {
            inexact.push(format!("`{k}` for `{field}`"));
        }
        if v.is_null() {
            continue; // null leaves the zero value
        }
        let wrong = || {
            format!(
                "json: cannot unmarshal {} into Go struct field Application.{field} of type {ty}",
                go_type(v)
            )
        };
        match *ty {
            "string" => {
                let s = v.as_str().ok_or_else(wrong)?.to_string();
                match *field {
                    "ID" => app.id = s,
                    "Key" => app.key = s,
                    "Verb" => app.verb = s,
                    "Nodename" => app.nodename = s,
                    "Subresource" => app.subresource = s,
                    "Status" => app.status = s,
                    _ => app.reason = s,
                }
            }
            "[]byte" => {
                let b = go_base64(v.as_str().ok_or_else(wrong)?)?;
                match *field {
                    "Option" => app.option = Some(b),
                    "ReqBody" => app.req_body = Some(b),
                    _ => app.resp_body = Some(b),
                }
            }
            "StatusError" => {
                let e = v.as_object().ok_or_else(wrong)?;
                let st = e
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("ErrStatus"))
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null);
                if !(st.is_null() || st.is_object()) {
                    return Err(wrong());
                }
                if st.get("code").is_some_and(|c| !c.is_null() && !c.is_i64()) {
                    return Err(
                        "json: cannot unmarshal into Go struct field Status.Error.ErrStatus.code of type int32".into(),
                    );
                }
                app.err_status = st;
            }
            _ => {
                // time.Time: RFC 3339.
                let t = v.as_str().ok_or_else(wrong)?;
                let b = t.as_bytes();
                let shaped = b.len() >= 20
                    && b[4] == b'-'
                    && b[7] == b'-'
                    && b[10] == b'T'
                    && b[13] == b':'
                    && b[16] == b':';
                if !shaped {
                    return Err(format!(
                        "parsing time {t:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse"
                    ));
                }
                app.timestamp = v.clone();
            }
        }
    }
    Ok((app, inexact))
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// KubeEdge's `metaserver.ParseKey`: `/<group or core>/<version>/<resource>[/<ns>[/<name>]]`
/// to (group, version, resource, namespace, name); an index past the end reads the first
/// (empty) part, as its `IndexCheck` does.
pub fn parse_key(key: &str) -> (String, String, String, String, String) {
    let trimmed = key.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.split('/').collect();
    if trimmed.is_empty() || !parts[0].is_empty() {
        return Default::default();
    }
    let at = |i: usize| parts.get(i).copied().unwrap_or(parts[0]).to_string();
    let group = at(1);
    let group = if group == "core" {
        String::new()
    } else {
        group
    };
    let ns = at(4);
    let ns = if ns == "null" { String::new() } else { ns };
    let name = at(5);
    let name = if name == "null" { String::new() } else { name };
    (group, at(2), at(3), ns, name)
}

impl ApiServer {
    /// Adds a Service as kube-apiserver stores it (uid, resourceVersion, `type: ClusterIP`,
    /// each port's protocol TCP unless given); returns it.
    pub fn add_service(&mut self, svc: &Value) -> Value {
        let mut s = svc.clone();
        s["apiVersion"] = json!("v1");
        s["kind"] = json!("Service");
        let ns = s["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = s["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        s["metadata"]["namespace"] = json!(ns);
        s["metadata"]["uid"] = json!(new_uuid());
        s["metadata"]["resourceVersion"] = json!(self.next_version());
        if s["spec"]["type"].is_null() {
            s["spec"]["type"] = json!("ClusterIP");
        }
        for p in s
            .pointer_mut("/spec/ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if p["protocol"].is_null() {
                p["protocol"] = json!("TCP");
            }
        }
        s["status"] = json!({"loadBalancer": {}});
        self.services.insert(format!("{ns}/{name}"), s.clone());
        s
    }

    /// Answers an Application from the edge of the session `node` as CloudCore's
    /// DynamicController does (`Center.Process`), or `None`: the DynamicController is off, or
    /// the Application does not decode (recorded in `application_errors`).
    pub fn answer_application(&mut self, m: &Message, node: &str) -> Option<Message> {
        if !self.dynamic_controller {
            return None;
        }
        let (mut app, inexact) = match decode_go_application(&m.content) {
            Ok(x) => x,
            Err(e) => {
                self.application_errors.push(e);
                return None;
            }
        };
        for f in inexact {
            self.application_errors
                .push(format!("field name not exactly Go's: {f}"));
        }
        self.applications.push(app.clone());
        let result = if app.nodename != node {
            // CloudHub's authorization: an edge asks for itself only.
            Err(Rejection::Api(json!({"metadata": {}, "status": "Failure",
                "message": format!("node {node} may not act for node {:?}", app.nodename),
                "reason": "Forbidden", "code": 403})))
        } else {
            self.process_application(&app)
        };
        // `Center.Response`: the Application again, its status and result.
        match result {
            Ok(body) => {
                app.status = "Approved".into();
                app.resp_body = Some(body.to_string().into_bytes());
            }
            Err(Rejection::Api(status)) => {
                app.status = "Rejected".into();
                app.err_status = status;
            }
            Err(Rejection::Reason(text)) => {
                app.status = "Rejected".into();
                app.reason = text;
            }
        }
        let b64 = |b: &Option<Vec<u8>>| match b {
            Some(b) => json!(edged::api::base64::encode(b)),
            None => Value::Null,
        };
        let err_status = if app.err_status.is_null() {
            json!({"metadata": {}})
        } else {
            app.err_status.clone()
        };
        let content = json!({"ID": app.id, "Key": app.key, "Verb": app.verb,
            "Nodename": app.nodename, "Status": app.status, "Reason": app.reason,
            "Option": b64(&app.option), "ReqBody": b64(&app.req_body),
            "RespBody": b64(&app.resp_body), "Subresource": app.subresource,
            "Error": {"ErrStatus": err_status}, "Timestamp": "0001-01-01T00:00:00Z"});
        let mut r = Message::new(
            "dynamiccontroller",
            "resource",
            "applicationResponse",
            format!("node/{node}/ignore/Application/ignore"),
        );
        r.header.parent_id = m.header.id.clone();
        r.content = content;
        Some(r)
    }

    /// `Center.ProcessApplication` for what this model serves: lists of services, gets of
    /// pods, services and ConfigMaps.
    fn process_application(&mut self, app: &GoApplication) -> Result<Value, Rejection> {
        let (group, version, resource, ns, name) = parse_key(&app.key);
        match app.verb.as_str() {
            "list" => {
                // `app.OptionTo(&ListOptions)`: json.Unmarshal of the Option bytes.
                option_to(app, "v1.ListOptions")?;
                if (group.as_str(), version.as_str(), resource.as_str()) != ("", "v1", "services") {
                    // The dynamic client's 404, wrapped in a plain error.
                    return Err(Rejection::Reason(
                        "successfully to add listener but failed to get current list, the server could not find the requested resource".into(),
                    ));
                }
                let mut items: Vec<(&String, &Value)> = self
                    .services
                    .iter()
                    .filter(|(_, s)| ns.is_empty() || s["metadata"]["namespace"] == ns.as_str())
                    .collect();
                items.sort_by(|a, b| a.0.cmp(b.0));
                let items: Vec<Value> = items.into_iter().map(|(_, s)| s.clone()).collect();
                Ok(json!({"apiVersion": "v1", "kind": "ServiceList",
                          "metadata": {"resourceVersion": self.version.to_string()},
                          "items": items}))
            }
            "get" => {
                // `app.OptionTo(&GetOptions)`, then the dynamic client's Get, whose error (an
                // API error) goes back as it is.
                option_to(app, "v1.GetOptions")?;
                let store = match (group.as_str(), version.as_str(), resource.as_str()) {
                    ("", "v1", "pods") => &self.pods,
                    ("", "v1", "services") => &self.services,
                    ("", "v1", "configmaps") => &self.config_maps,
                    _ => {
                        // No such resource: kube-apiserver's plain 404 page, which client-go
                        // turns into this NotFound.
                        return Err(Rejection::Api(json!({"metadata": {}, "status": "Failure",
                            "message": "the server could not find the requested resource",
                            "reason": "NotFound",
                            "details": {"causes": [{"reason": "UnexpectedServerResponse",
                                                    "message": "404 page not found"}]},
                            "code": 404})));
                    }
                };
                if name.is_empty() {
                    // The dynamic client refuses before asking.
                    return Err(Rejection::Reason("name is required".into()));
                }
                match store.get(&format!("{ns}/{name}")) {
                    Some(obj) => Ok(obj.clone()),
                    None => Err(Rejection::Api(json!({"metadata": {}, "status": "Failure",
                        "message": format!("{resource} \"{name}\" not found"),
                        "reason": "NotFound",
                        "details": {"name": name, "kind": resource},
                        "code": 404}))),
                }
            }
            other => Err(Rejection::Reason(format!(
                "unsupported Application Verb type :{other}"
            ))),
        }
    }
}

/// `app.OptionTo(&<go_type>)`: json.Unmarshal of the Option bytes into the options struct; its
/// error is a plain one (`Reason`).
fn option_to(app: &GoApplication, go_type: &str) -> Result<(), Rejection> {
    let option = app.option.as_deref().unwrap_or_default();
    match serde_json::from_slice::<Value>(option) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(_) => Err(Rejection::Reason(format!(
            "failed to prase Option bytes, json: cannot unmarshal into Go value of type {go_type}"
        ))),
        Err(_) if option.is_empty() => Err(Rejection::Reason(
            "failed to prase Option bytes, unexpected end of JSON input".into(),
        )),
        Err(e) => Err(Rejection::Reason(format!(
            "failed to prase Option bytes, {e}"
        ))),
    }
}

/// Why the DynamicController rejects an Application.
pub enum Rejection {
    /// An API error: `Error.ErrStatus` is its metav1.Status.
    Api(Value),
    /// Another error: its text is `Reason`.
    Reason(String),
}
