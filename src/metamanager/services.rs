//! The cluster's Services, listed from the cloud through KubeEdge CloudCore's DynamicController
//! (what EdgeCore's MetaServer does for `GET /api/v1/services`), for the service environment
//! variables of containers.
//!
//! The request is a `list` [`Application`] of [`SERVICES_KEY`]; its answer's `RespBody` is the
//! UnstructuredList (`kind: ServiceList`, `items`). A CloudCore without the DynamicController
//! never answers: an unanswered list keeps the cloud from being asked again for
//! [`UNANSWERED_BACKOFF`] ([`Lister`]), and pods meanwhile get the list stored from the last
//! answer ([`super::Table::Service`]).

pub use super::application::{AnswerError, Application, AskState, UNANSWERED_BACKOFF};
use crate::api::{self, Service};
use crate::message::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The Application key of every Service of every namespace
/// (`/<group or core>/<version>/<resource>[/<namespace>[/<name>]]`).
pub const SERVICES_KEY: &str = "/core/v1/services";
/// How long a list may wait for its answer (pods wait for it once when the cloud does not
/// answer).
pub const LIST_TIMEOUT: Duration = super::application::ANSWER_TIMEOUT;

/// The request for every Service of every namespace, from `node`.
pub fn list_request(node: &str) -> Message {
    super::application::request(&Application::list(node, SERVICES_KEY))
}

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
    let body = super::application::parse_answer(content)?;
    parse_service_list(&body).map_err(AnswerError::Malformed)
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
}
