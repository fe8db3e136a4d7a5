//! KubeEdge's Application: how the edge asks CloudCore's DynamicController to read objects
//! of the API server for it (what EdgeCore's MetaServer does for a `GET` it cannot answer).
//!
//! The request (`pkg/metaserver/application.go`, `edge/.../metaserver/agent/agent.go`): a
//! message from source `metaserver` to group `dynamiccontroller`, resource and operation
//! `null`, whose content is an [`Application`]: Go's struct without JSON tags, so its field
//! names as they are, `[]byte` fields as standard base64, `Key`
//! `/<group or core>/<version>/<resource>[/<namespace>[/<name>]]`, `Verb` `list` or `get`,
//! `Option` the ListOptions or GetOptions `{}`. CloudHub hands it to the DynamicController,
//! which asks kube-apiserver with a dynamic client (unstructured: every field the API server
//! has) and answers with a message whose `parent_msg_id` is the request's id, operation
//! `applicationResponse`: the Application again, `Status` `Approved` with `RespBody` the
//! object or list, or `Rejected` with `Error.ErrStatus` (a metav1.Status) or a `Reason`.
//! Nothing is ACKed.
//!
//! CloudCore's DynamicController is off by default (`modules.dynamicController.enable`): then
//! nothing takes the message and no answer ever comes. So the wait is short
//! ([`ANSWER_TIMEOUT`]), and an unanswered request keeps the cloud from being asked again for
//! [`UNANSWERED_BACKOFF`] ([`AskState`]).

use crate::api;
use crate::message::Message;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// `route.source` of an Application request (EdgeCore's MetaServer).
pub const METASERVER_SOURCE: &str = "metaserver";
/// `route.group` of an Application request: CloudCore's DynamicController.
pub const DYNAMIC_CONTROLLER_GROUP: &str = "dynamiccontroller";
/// `route.operation` of the DynamicController's answer.
pub const APPLICATION_RESPONSE: &str = "applicationResponse";
/// How long a request may wait for its answer: a CloudCore without the DynamicController never
/// answers, and what waits for it waits this long once.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// After an unanswered request the cloud is not asked again for this long.
pub const UNANSWERED_BACKOFF: Duration = Duration::from_secs(300);

/// KubeEdge's `metaserver.Application`, as Go's encoding/json writes it (field names as they
/// are, `[]byte` as standard base64 or `null`). Unknown fields are ignored on decode; a `null`
/// field reads as absent (decode with [`crate::api::decode`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Application {
    /// `ID`: EdgeCore's identifier of the request (sha256 of what it asks, hex).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// `Key`: what is asked for, such as `/core/v1/services`.
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
    /// A `list` of `key` as EdgeCore's MetaServer makes it (ListOptions `{}`).
    pub fn list(node: &str, key: &str) -> Application {
        Application::new(node, key, "list")
    }

    /// A `get` of `key` (`.../<namespace>/<name>`) as EdgeCore's MetaServer makes it
    /// (GetOptions `{}`).
    pub fn get(node: &str, key: &str) -> Application {
        Application::new(node, key, "get")
    }

    /// An Application of `verb` on `key` with empty options (`{}`), no body, its `ID` the
    /// sha256 of node, key, verb, option, body and subresource (EdgeCore's `Identifier`).
    fn new(node: &str, key: &str, verb: &str) -> Application {
        let mut app = Application {
            key: key.to_string(),
            verb: verb.to_string(),
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

/// The request message carrying `app`.
pub fn request(app: &Application) -> Message {
    Message::new(METASERVER_SOURCE, DYNAMIC_CONTROLLER_GROUP, "null", "null")
        .with_content(app.to_content())
}

/// Why an answer gave nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum AnswerError {
    /// The DynamicController refused: what was asked, the API error's code, reason and message
    /// (or its `Reason` text, code 0, when it was no API error).
    Rejected {
        /// What was asked: `<verb> <key>`.
        asked: String,
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
                asked,
                code,
                reason,
                message,
            } => write!(
                f,
                "the cloud refused `{asked}` ({code} {reason}): {message}"
            ),
            AnswerError::Malformed(why) => {
                write!(f, "the DynamicController's answer cannot be read: {why}")
            }
        }
    }
}

impl std::error::Error for AnswerError {}

/// Reads the DynamicController's answer (the message's content): the `RespBody` of an
/// approved Application (never empty).
pub fn parse_answer(content: &serde_json::Value) -> Result<Vec<u8>, AnswerError> {
    if !content.is_object() {
        return Err(AnswerError::Malformed(
            "the content is not an Application (a JSON object)".into(),
        ));
    }
    let app: Application =
        api::decode("Application", content).map_err(|e| AnswerError::Malformed(e.to_string()))?;
    match app.status.as_str() {
        "Approved" => match app.resp_body {
            Some(body) if !body.is_empty() => Ok(body),
            _ => Err(AnswerError::Malformed(
                "the Application is Approved but has no RespBody".into(),
            )),
        },
        "Rejected" => {
            let st = &app.error.err_status;
            let text = |k: &str| st.get(k).and_then(|v| v.as_str()).unwrap_or("");
            let code = st.get("code").and_then(|c| c.as_i64()).unwrap_or(0);
            let message = Some(text("message"))
                .filter(|m| !m.is_empty())
                .unwrap_or(app.reason.as_str());
            Err(AnswerError::Rejected {
                asked: format!("{} {}", app.verb, app.key),
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

/// When the cloud may be asked, and whether the warning about an unanswered request was
/// given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AskState {
    /// Not before then (an unanswered request).
    pub not_before: Option<Instant>,
    /// The warning was given since the last answer.
    pub warned: bool,
}

impl AskState {
    /// Whether the cloud may be asked at `now`.
    pub fn may_ask(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// A request went unanswered at `now`: the cloud is left alone for
    /// [`UNANSWERED_BACKOFF`]. Returns whether to warn (the first since the last answer).
    pub fn unanswered(&mut self, now: Instant) -> bool {
        self.not_before = Some(now + UNANSWERED_BACKOFF);
        !std::mem::replace(&mut self.warned, true)
    }

    /// An answer came: ask freely again, and warn again if it stops answering.
    pub fn answered(&mut self) {
        *self = AskState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let mut app = Application::list("n", "/core/v1/services");
        app.resp_body = Some(vec![0, 1, 2, 255]);
        app.status = "Approved".into();
        let back: Application = api::decode("Application", &app.to_content()).unwrap();
        assert_eq!(back, app);
        // Unknown fields are ignored, nulls read as absent, as Go reads them.
        let v = json!({"Key": "k", "Verb": null, "Extra": 1, "Option": null});
        let a: Application = api::decode("Application", &v).unwrap();
        assert_eq!((a.key.as_str(), a.verb.as_str(), a.option), ("k", "", None));
    }

    #[test]
    fn a_get_names_the_object_and_answers_read() {
        let app = Application::get("edge-1", "/core/v1/pods/ns/p");
        let c = request(&app).content;
        assert_eq!(
            (&c["Verb"], &c["Key"], &c["Option"], &c["Nodename"]),
            (
                &json!("get"),
                &json!("/core/v1/pods/ns/p"),
                &json!("e30="),
                &json!("edge-1")
            )
        );
        assert_ne!(
            c["ID"],
            Application::list("edge-1", "/core/v1/pods/ns/p").id
        );
        let mut ok = app.clone();
        ok.status = "Approved".into();
        ok.resp_body = Some(b"{}".to_vec());
        assert_eq!(parse_answer(&ok.to_content()), Ok(b"{}".to_vec()));
        let mut no = app;
        no.status = "Rejected".into();
        no.error.err_status = json!({"code": 404, "reason": "NotFound",
            "message": "pods \"p\" not found"});
        assert_eq!(
            parse_answer(&no.to_content()).unwrap_err().to_string(),
            "the cloud refused `get /core/v1/pods/ns/p` (404 NotFound): pods \"p\" not found"
        );
    }
}
