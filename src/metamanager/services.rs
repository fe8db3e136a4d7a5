//! The cluster's Services, listed from the cloud through KubeEdge CloudCore's DynamicController
//! (what EdgeCore's MetaServer does for `GET /api/v1/services`), for the service environment
//! variables of containers.
//!
//! The request (`pkg/metaserver/application.go`, `edge/.../metaserver/agent/agent.go`): a
//! message from source `metaserver` to group `dynamiccontroller`, resource and operation
//! `null`, whose content is an [`Application`]: Go's struct without JSON tags, so its field
//! names as they are, `[]byte` fields as standard base64, `Key` `/core/v1/services` (every
//! namespace), `Verb` `list`, `Option` the ListOptions `{}`. CloudHub hands it to the
//! DynamicController, which lists with a dynamic client and answers with a message whose
//! `parent_msg_id` is the request's id, operation `applicationResponse`: the Application again,
//! `Status` `Approved` with `RespBody` the UnstructuredList (`kind: ServiceList`, `items`), or
//! `Rejected` with `Error.ErrStatus` (a metav1.Status) or a `Reason`. Nothing is ACKed.
//!
//! CloudCore's DynamicController is off by default (`modules.dynamicController.enable`): then
//! nothing takes the message and no answer ever comes. So the wait is short
//! ([`LIST_TIMEOUT`]), an unanswered list keeps the cloud from being asked again for
//! [`UNANSWERED_BACKOFF`] ([`Lister`]), and pods meanwhile get the list stored from the last
//! answer ([`super::Table::Service`]).

use crate::api::{self, Service};
use crate::message::Message;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Application key of every Service of every namespace
/// (`/<group or core>/<version>/<resource>[/<namespace>[/<name>]]`).
pub const SERVICES_KEY: &str = "/core/v1/services";
/// `route.source` of an Application request (EdgeCore's MetaServer).
pub const METASERVER_SOURCE: &str = "metaserver";
/// `route.group` of an Application request: CloudCore's DynamicController.
pub const DYNAMIC_CONTROLLER_GROUP: &str = "dynamiccontroller";
/// `route.operation` of the DynamicController's answer.
pub const APPLICATION_RESPONSE: &str = "applicationResponse";
/// How long a list may wait for its answer: a CloudCore without the DynamicController never
/// answers, and pods wait for this once.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(3);
/// After an unanswered list the cloud is not asked again for this long (the stored list is
/// used).
pub const UNANSWERED_BACKOFF: Duration = Duration::from_secs(300);

/// KubeEdge's `metaserver.Application`, as Go's encoding/json writes it (field names as they
/// are, `[]byte` as standard base64 or `null`). Unknown fields are ignored on decode; a `null`
/// field reads as absent (decode with [`crate::api::decode`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Application {
    /// `ID`: EdgeCore's identifier of the request (sha256 of what it asks, hex).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// `Key`: what is asked for, such as [`SERVICES_KEY`].
    #[serde(rename = "Key", default)]
    pub key: String,
    /// `Verb`: `list`, `get`, `watch`, ...
    #[serde(rename = "Verb", default)]
    pub verb: String,
    /// `Nodename`: the asking node (CloudCore with authorization refuses another node's name).
    #[serde(rename = "Nodename", default)]
    pub nodename: String,
    /// `Option`: the ListOptions (or GetOptions, ...) as JSON.
    #[serde(rename = "Option", default, with = "go_bytes")]
    pub option: Option<Vec<u8>>,
    /// `ReqBody`: the object sent (none for a list).
    #[serde(rename = "ReqBody", default, with = "go_bytes")]
    pub req_body: Option<Vec<u8>>,
    /// `Subresource` (empty: none).
    #[serde(rename = "Subresource", default)]
    pub subresource: String,
    /// `RespBody`: the answer's object as JSON (for a list, the UnstructuredList).
    #[serde(rename = "RespBody", default, with = "go_bytes")]
    pub resp_body: Option<Vec<u8>>,
    /// `Status`: `InApplying` when sent; `Approved` or `Rejected` in the answer.
    #[serde(rename = "Status", default)]
    pub status: String,
    /// `Reason`: why it is in its status (a rejection that is not an API error).
    #[serde(rename = "Reason", default)]
    pub reason: String,
    /// `Error`: the API error of a rejection (`{"ErrStatus": <metav1.Status>}`).
    #[serde(rename = "Error", default)]
    pub error: StatusError,
}

/// Kubernetes' `apierrors.StatusError`: the metav1.Status of an API error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusError {
    /// `ErrStatus`: `code`, `reason`, `message` (Go writes `{"metadata":{}}` when empty).
    #[serde(rename = "ErrStatus", default)]
    pub err_status: serde_json::Value,
}

/// `[]byte` as Go's encoding/json writes it: standard base64 with padding, `null` for nil.
mod go_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&crate::api::base64::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => crate::api::base64::decode(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

impl Application {
    /// A `list` of `key` as EdgeCore's MetaServer makes it: ListOptions `{}`, no body, its
    /// `ID` the sha256 of node, key, verb, option, body and subresource (EdgeCore's
    /// `Identifier`).
    pub fn list(node: &str, key: &str) -> Application {
        let mut app = Application {
            key: key.to_string(),
            verb: "list".into(),
            nodename: node.to_string(),
            option: Some(b"{}".to_vec()),
            status: "InApplying".into(),
            error: StatusError {
                err_status: serde_json::json!({"metadata": {}}),
            },
            ..Application::default()
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [
            app.nodename.as_bytes(),
            app.key.as_bytes(),
            app.verb.as_bytes(),
            app.option.as_deref().unwrap_or_default(),
            app.req_body.as_deref().unwrap_or_default(),
            app.subresource.as_bytes(),
        ] {
            ctx.update(part);
        }
        app.id = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        app
    }

    /// The message content: the Application as Go writes it (with its zero `Timestamp`).
    pub fn to_content(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["Timestamp"] = serde_json::json!("0001-01-01T00:00:00Z");
        v
    }
}

/// The request for every Service of every namespace, from `node`.
pub fn list_request(node: &str) -> Message {
    Message::new(METASERVER_SOURCE, DYNAMIC_CONTROLLER_GROUP, "null", "null")
        .with_content(Application::list(node, SERVICES_KEY).to_content())
}

/// Why a list answer gave no services.
#[derive(Clone, Debug, PartialEq)]
pub enum AnswerError {
    /// The DynamicController refused the list: the API error's code, reason and message (or
    /// its `Reason` text, code 0, when it was no API error).
    Rejected {
        /// `ErrStatus.code` (0 when absent).
        code: i64,
        /// `ErrStatus.reason`, or `Rejected` without one.
        reason: String,
        /// `ErrStatus.message`, else the Application's `Reason`.
        message: String,
    },
    /// The answer cannot be read: what is wrong, naming the field.
    Malformed(String),
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::Rejected {
                code,
                reason,
                message,
            } => write!(
                f,
                "the cloud refused the list of services ({code} {reason}): {message}"
            ),
            AnswerError::Malformed(why) => {
                write!(f, "the cloud's list of services cannot be read: {why}")
            }
        }
    }
}

impl std::error::Error for AnswerError {}

/// The Services of an answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceList {
    /// The Services, as listed.
    pub services: Vec<Service>,
    /// Items that are no Service (each named with its index and the field), left out.
    pub skipped: Vec<String>,
}

/// Reads the DynamicController's answer (the message's content) to [`list_request`].
pub fn parse_answer(content: &serde_json::Value) -> Result<ServiceList, AnswerError> {
    if !content.is_object() {
        return Err(AnswerError::Malformed(
            "the content is not an Application (a JSON object)".into(),
        ));
    }
    let app: Application =
        api::decode("Application", content).map_err(|e| AnswerError::Malformed(e.to_string()))?;
    match app.status.as_str() {
        "Approved" => {
            let body = app.resp_body.as_deref().unwrap_or_default();
            if body.is_empty() {
                return Err(AnswerError::Malformed(
                    "the Application is Approved but has no RespBody".into(),
                ));
            }
            parse_service_list(body).map_err(AnswerError::Malformed)
        }
        "Rejected" => {
            let st = &app.error.err_status;
            let text = |k: &str| st.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let code = st.get("code").and_then(|c| c.as_i64()).unwrap_or(0);
            let message = Some(text("message"))
                .filter(|m| !m.is_empty())
                .unwrap_or(app.reason.as_str());
            Err(AnswerError::Rejected {
                code,
                reason: Some(text("reason"))
                    .filter(|r| !r.is_empty())
                    .unwrap_or("Rejected")
                    .to_string(),
                message: if message.is_empty() {
                    "no reason given".into()
                } else {
                    message.to_string()
                },
            })
        }
        other => Err(AnswerError::Malformed(format!(
            "field `Status`: `{other}` is neither Approved nor Rejected ({})",
            if app.reason.is_empty() {
                "no reason given"
            } else {
                &app.reason
            }
        ))),
    }
}

/// Reads a `RespBody`: an UnstructuredList of Services (`items`; a missing or `null` list is
/// empty). An item that is no Service, or has no name, is left out and named.
pub fn parse_service_list(body: &[u8]) -> Result<ServiceList, String> {
    let list: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("field `RespBody`: not JSON: {e}"))?;
    if !list.is_object() {
        return Err("field `RespBody`: not a list (a JSON object)".into());
    }
    if let Some(kind) = list.get("kind").and_then(|k| k.as_str()) {
        if kind != "ServiceList" {
            return Err(format!(
                "field `RespBody.kind`: `{kind}` is not ServiceList"
            ));
        }
    }
    let items = match list.get("items") {
        None | Some(serde_json::Value::Null) => return Ok(ServiceList::default()),
        Some(serde_json::Value::Array(items)) => items,
        Some(_) => return Err("field `RespBody.items`: not an array".into()),
    };
    let mut out = ServiceList::default();
    for (i, item) in items.iter().enumerate() {
        let object = format!("RespBody.items[{i}]");
        match api::decode::<Service>(&object, item) {
            Ok(s) if !s.metadata.name.is_empty() => out.services.push(trimmed(s)),
            Ok(_) => out
                .skipped
                .push(format!("{object}: field `metadata.name`: empty")),
            Err(e) => out.skipped.push(e.to_string()),
        }
    }
    Ok(out)
}

/// A Service with what the variables need only (name, namespace, cluster IP, ports), as it is
/// stored.
pub fn trimmed(s: Service) -> Service {
    Service {
        metadata: api::ObjectMeta {
            name: s.metadata.name,
            namespace: s.metadata.namespace,
            ..api::ObjectMeta::default()
        },
        spec: s.spec,
    }
}

/// The store row key of a Service: `<namespace>/<name>`.
pub fn row_key(s: &Service) -> String {
    super::key(&s.metadata.namespace, &s.metadata.name)
}

/// The writes that make the stored rows (`stored`, by key) the list `services`: rows of
/// services no longer listed deleted, new and changed ones written, unchanged ones left.
pub fn replace_writes(
    stored: &[(String, serde_json::Value)],
    services: &[Service],
) -> Vec<super::Write> {
    use super::{Table, Write};
    let mut writes = Vec::new();
    let mut listed = std::collections::BTreeMap::new();
    for s in services {
        listed.insert(row_key(s), serde_json::to_value(s).unwrap_or_default());
    }
    for (k, _) in stored {
        if !listed.contains_key(k) {
            writes.push(Write::Delete(Table::Service, k.clone()));
        }
    }
    for (k, v) in listed {
        if !stored.iter().any(|(sk, sv)| *sk == k && *sv == v) {
            writes.push(Write::Put(Table::Service, k, v));
        }
    }
    writes
}

/// When the cloud may be asked for the list, and whether the warning about an unanswered
/// list was given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AskState {
    /// Not before then (an unanswered list).
    pub not_before: Option<Instant>,
    /// The warning was given since the last answer.
    pub warned: bool,
}

impl AskState {
    /// Whether the cloud may be asked at `now`.
    pub fn may_ask(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// A list went unanswered at `now`: the cloud is left alone for [`UNANSWERED_BACKOFF`].
    /// Returns whether to warn (the first since the last answer).
    pub fn unanswered(&mut self, now: Instant) -> bool {
        self.not_before = Some(now + UNANSWERED_BACKOFF);
        !std::mem::replace(&mut self.warned, true)
    }

    /// An answer came: ask freely again, and warn again if it stops answering.
    pub fn answered(&mut self) {
        *self = AskState::default();
    }
}

/// MetaManager's state of the list: one request at a time, the back-off after an unanswered
/// one.
#[derive(Default)]
pub struct Lister {
    /// The back-off and the warning.
    pub state: Mutex<AskState>,
    /// Held while a request waits for its answer: callers meanwhile wait for it and then use
    /// what it stored, instead of asking again.
    pub(super) asking: smol::lock::Mutex<()>,
    /// Requests finished so far.
    pub(super) asked: AtomicU64,
}

impl Lister {
    /// The state, also after a panic elsewhere (it is always consistent).
    pub fn state(&self) -> std::sync::MutexGuard<'_, AskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests finished so far.
    pub(super) fn asked(&self) -> u64 {
        self.asked.load(Ordering::SeqCst)
    }

    /// One more request finished.
    pub(super) fn note_asked(&self) {
        self.asked.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        api::base64::encode(s.as_bytes())
    }

    #[test]
    fn the_request_as_edgecore_sends_it() {
        let m = list_request("edge-1");
        assert_eq!(
            (
                m.route.source.as_str(),
                m.route.group.as_str(),
                m.route.resource.as_str(),
                m.route.operation.as_str()
            ),
            ("metaserver", "dynamiccontroller", "null", "null")
        );
        let c = &m.content;
        assert_eq!(c["Key"], "/core/v1/services");
        assert_eq!(c["Verb"], "list");
        assert_eq!(c["Nodename"], "edge-1");
        // []byte fields: base64 of the ListOptions, nil as null.
        assert_eq!(c["Option"], "e30=");
        assert_eq!(c["ReqBody"], serde_json::Value::Null);
        assert_eq!(c["RespBody"], serde_json::Value::Null);
        assert_eq!(c["Subresource"], "");
        assert_eq!(c["Status"], "InApplying");
        assert_eq!(c["Reason"], "");
        assert_eq!(c["Error"], json!({"ErrStatus": {"metadata": {}}}));
        assert_eq!(c["Timestamp"], "0001-01-01T00:00:00Z");
        // EdgeCore's Identifier: sha256 of nodename, key, verb, option, body, subresource.
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"edge-1/core/v1/serviceslist{}");
        let want: String = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(c["ID"], want.as_str());
        // Every field Go's struct has, and no other (Go ignores others, but the names are
        // the contract).
        let mut keys: Vec<&str> = c.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "Error",
                "ID",
                "Key",
                "Nodename",
                "Option",
                "Reason",
                "ReqBody",
                "RespBody",
                "Status",
                "Subresource",
                "Timestamp",
                "Verb"
            ]
        );
    }

    #[test]
    fn answers_read() {
        let body = json!({"apiVersion": "v1", "kind": "ServiceList",
        "metadata": {"resourceVersion": "42"},
        "items": [
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "kubernetes", "namespace": "default", "uid": "u",
                          "labels": {"component": "apiserver"}},
             "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                      "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                 "targetPort": 6443}],
                      "type": "ClusterIP"},
             "status": {"loadBalancer": {}}},
            {"metadata": {"name": "headless", "namespace": "a"},
             "spec": {"clusterIP": "None", "ports": null}},
            {"metadata": {"name": "bad", "namespace": "a"},
             "spec": {"ports": [{"port": "http"}]}},
            {"metadata": {"namespace": "a"}, "spec": {}}
        ]});
        let answer = |status: &str, extra: serde_json::Value| {
            let mut a = Application::list("n", SERVICES_KEY).to_content();
            a["Status"] = json!(status);
            for (k, v) in extra.as_object().unwrap() {
                a[k] = v.clone();
            }
            a
        };
        // (answer, Ok(service names, skipped count) or Err(text in the error))
        type Want = Result<(&'static [&'static str], usize), &'static str>;
        let cases: Vec<(serde_json::Value, Want)> = vec![
            (
                answer("Approved", json!({"RespBody": b64(&body.to_string())})),
                Ok((&["kubernetes", "headless"], 2)),
            ),
            (
                answer(
                    "Approved",
                    json!({"RespBody": b64(r#"{"kind":"ServiceList","metadata":{}}"#)}),
                ),
                Ok((&[], 0)),
            ),
            (
                answer("Rejected", json!({"Error": {"ErrStatus": {"metadata": {},
                    "status": "Failure", "code": 403, "reason": "Forbidden",
                    "message": "services is forbidden: User \"system:node:n\" cannot list"}}})),
                Err("403 Forbidden): services is forbidden"),
            ),
            (
                answer(
                    "Rejected",
                    json!({"Reason": "successfully to add listener but failed to get current list, boom"}),
                ),
                Err("(0 Rejected): successfully to add listener but failed to get current list, boom"),
            ),
            (answer("Rejected", json!({})), Err("no reason given")),
            (answer("Approved", json!({})), Err("no RespBody")),
            (
                answer("Approved", json!({"RespBody": "not base64!"})),
                Err("`RespBody`: not base64"),
            ),
            (
                answer("Approved", json!({"RespBody": b64("<html>")})),
                Err("`RespBody`: not JSON"),
            ),
            (
                answer("Approved", json!({"RespBody": b64("[1]")})),
                Err("not a list"),
            ),
            (
                answer("Approved", json!({"RespBody": b64(r#"{"kind":"PodList","items":[]}"#)})),
                Err("`PodList` is not ServiceList"),
            ),
            (
                answer("Approved", json!({"RespBody": b64(r#"{"items":{}}"#)})),
                Err("`RespBody.items`: not an array"),
            ),
            (answer("Approved", json!({"RespBody": 7})), Err("RespBody")),
            (answer("InProcessing", json!({})), Err("`InProcessing` is neither")),
            (json!("OK"), Err("not an Application")),
            (json!(null), Err("not an Application")),
        ];
        for (content, want) in cases {
            let got = parse_answer(&content);
            match (got, want) {
                (Ok(list), Ok((names, skipped))) => {
                    let got: Vec<&str> = list
                        .services
                        .iter()
                        .map(|s| s.metadata.name.as_str())
                        .collect();
                    assert_eq!(got, names, "{content}");
                    assert_eq!(list.skipped.len(), skipped, "{:?}", list.skipped);
                }
                (Err(e), Err(text)) => {
                    assert!(e.to_string().contains(text), "{e} lacks {text:?}")
                }
                (got, want) => panic!("{content}: got {got:?}, want {want:?}"),
            }
        }
        // What is kept of a Service: what the variables need.
        let a = answer("Approved", json!({"RespBody": b64(&body.to_string())}));
        let list = parse_answer(&a).unwrap();
        assert_eq!(
            serde_json::to_value(&list.services[0]).unwrap(),
            json!({"metadata": {"name": "kubernetes", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.0.1",
                            "ports": [{"name": "https", "protocol": "TCP", "port": 443}]}})
        );
        assert!(list.skipped[0].contains("items[2]") && list.skipped[0].contains("port"));
        assert!(list.skipped[1].contains("items[3]") && list.skipped[1].contains("name"));
    }

    #[test]
    fn the_stored_list_is_replaced_row_by_row() {
        use super::super::{Table, Write};
        let svc = |ns: &str, name: &str, ip: &str| -> Service {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip}}))
            .unwrap()
        };
        let row = |s: &Service| (row_key(s), serde_json::to_value(s).unwrap());
        let (a, b, c) = (
            svc("x", "a", "10.0.0.1"),
            svc("x", "b", "10.0.0.2"),
            svc("y", "c", "10.0.0.3"),
        );
        let b2 = svc("x", "b", "10.0.0.22");
        let stored = vec![row(&a), row(&b)];
        let writes = replace_writes(&stored, &[b2.clone(), c.clone()]);
        let shown: Vec<String> = writes
            .iter()
            .map(|w| match w {
                Write::Put(Table::Service, k, _) => format!("put {k}"),
                Write::Delete(Table::Service, k) => format!("delete {k}"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(shown, ["delete x/a", "put x/b", "put y/c"]);
        // The same list again: nothing to write.
        assert!(replace_writes(&[row(&b2), row(&c)], &[c, b2]).is_empty());
    }

    #[test]
    fn an_unanswered_list_backs_off_and_warns_once() {
        let t0 = Instant::now();
        let mut s = AskState::default();
        assert!(s.may_ask(t0));
        assert!(s.unanswered(t0), "the first unanswered list warns");
        assert!(!s.may_ask(t0 + Duration::from_secs(299)));
        assert!(s.may_ask(t0 + UNANSWERED_BACKOFF));
        assert!(!s.unanswered(t0 + UNANSWERED_BACKOFF), "warned once only");
        assert!(!s.may_ask(t0 + UNANSWERED_BACKOFF + Duration::from_secs(1)));
        s.answered();
        assert!(s.may_ask(t0 + UNANSWERED_BACKOFF + Duration::from_secs(1)));
        assert!(s.unanswered(t0), "an answer in between: it warns again");
    }

    #[test]
    fn applications_round_trip() {
        let mut app = Application::list("n", SERVICES_KEY);
        app.resp_body = Some(vec![0, 1, 2, 255]);
        app.status = "Approved".into();
        let back: Application = api::decode("Application", &app.to_content()).unwrap();
        assert_eq!(back, app);
        // Unknown fields are ignored, nulls read as absent, as Go reads them.
        let v = json!({"Key": "k", "Verb": null, "Extra": 1, "Option": null});
        let a: Application = api::decode("Application", &v).unwrap();
        assert_eq!((a.key.as_str(), a.verb.as_str(), a.option), ("k", "", None));
    }
}
