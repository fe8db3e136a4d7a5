//! KubeEdge's beehive message: the one envelope every subsystem, the store and the cloud link
//! speak, so a message can be logged, stored and replayed as it is.
//!
//! Wire form (JSON): `{"header":{..},"route":{..},"content":..}`; empty header and route fields
//! are omitted, as beehive does.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Operations a message carries (`route.operation`).
pub mod op {
    /// Create an object (the cloud sends a new pod, ConfigMap, Secret).
    pub const INSERT: &str = "insert";
    /// Replace an object with the content.
    pub const UPDATE: &str = "update";
    /// Change part of an object (edged's pod status and node status patches go up as this).
    pub const PATCH: &str = "patch";
    /// Delete the object the resource names.
    pub const DELETE: &str = "delete";
    /// Ask for an object (edged asks the cloud through MetaManager); answered with `response`.
    pub const QUERY: &str = "query";
    /// The answer to a `query` or a sync message (`parent_msg_id` names it).
    pub const RESPONSE: &str = "response";
    /// A failed `query` or sync message; the content says why.
    pub const ERROR: &str = "error";
    /// The cloud link's ping (content `ping`) and its answer.
    pub const KEEPALIVE: &str = "keepalive";
}

/// Module names used as `route.source` / `route.group`.
pub mod module {
    /// edged itself, the source of what it sends up.
    pub const EDGED: &str = "edged";
    /// The `meta` group: object changes routed through MetaManager.
    pub const META: &str = "meta";
    /// MetaManager, the source of what it hands on.
    pub const METAMANAGER: &str = "metaManager";
    /// EdgeHub, KubeEdge's cloud link module.
    pub const EDGEHUB: &str = "edgehub";
    /// A static pod manifest, the source of what the manifest directory makes.
    pub const MANIFEST: &str = "manifest";
    /// The `resource` group: edge resources (static pods, the link's keepalive).
    pub const RESOURCE: &str = "resource";
}

/// Message header: identity, causality and time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// `msg_id`: the message's id, a random UUID.
    #[serde(rename = "msg_id", default)]
    pub id: String,
    #[serde(
        rename = "parent_msg_id",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    /// `parent_msg_id`: the id of the message this one answers (empty: not an answer).
    pub parent_id: String,
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: i64,
    #[serde(
        rename = "resourceversion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    /// `resourceversion`: the object's `metadata.resourceVersion` the message carries (empty:
    /// none).
    pub resource_version: String,
    /// `sync`: the sender waits for a `response` (omitted when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync: bool,
    /// `type`: the beehive message type (empty: none).
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// Where a message goes and what it does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// `source`: the module that sent the message, such as `edged` or `edgecontroller`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// `destination`: the module it is for (empty: by group).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
    /// `group`: the group of modules it is routed to, such as `meta` or `resource`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// `operation`: what it does, one of [`op`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    /// `resource`: the object, `<namespace>/<type>[/<name>]` (see [`Resource`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
}

/// A beehive message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Identity, causality and time.
    pub header: Header,
    /// Where it goes and what it does.
    pub route: Route,
    /// The payload: an object, a status patch, a list, or `null`.
    #[serde(default)]
    pub content: serde_json::Value,
}

impl Message {
    /// A new message with a fresh id and the current time.
    pub fn new(source: &str, group: &str, operation: &str, resource: impl Into<String>) -> Self {
        Message {
            header: Header {
                id: new_uuid(),
                timestamp: now_millis(),
                ..Header::default()
            },
            route: Route {
                source: source.to_string(),
                group: group.to_string(),
                operation: operation.to_string(),
                resource: resource.into(),
                ..Route::default()
            },
            content: serde_json::Value::Null,
        }
    }

    /// Sets the content.
    pub fn with_content(mut self, content: serde_json::Value) -> Self {
        self.content = content;
        self
    }

    /// EdgeD's patch of a pod's status: `patch <ns>/podpatch/<name>`, content a JSON string
    /// of `{"metadata":{"uid":..},"status":..}` (the uid guards against a recreated pod).
    pub fn pod_status_patch(
        namespace: &str,
        name: &str,
        uid: &str,
        status: &impl serde::Serialize,
    ) -> Self {
        let patch = serde_json::json!({"metadata": {"uid": uid}, "status": status});
        Message::new(
            module::EDGED,
            module::META,
            op::PATCH,
            format!("{namespace}/podpatch/{name}"),
        )
        .with_content(serde_json::Value::String(patch.to_string()))
    }

    /// EdgeD's word that it finished deleting a pod: `delete <ns>/pod/<name>`, content the
    /// DeleteOptions the kubelet's status manager sends (`gracePeriodSeconds` 0 and the pod's
    /// uid as a precondition, so a newer pod of the same name is never deleted). CloudCore
    /// reads a *string* content as the uid (older edges), so it must be an object.
    pub fn pod_deleted(namespace: &str, name: &str, uid: &str) -> Self {
        Message::new(
            module::EDGED,
            module::META,
            op::DELETE,
            format!("{namespace}/pod/{name}"),
        )
        .with_content(serde_json::json!({
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }))
    }

    /// The answer to this message: operation `response`, `parent_msg_id` = this id, same
    /// source, group and resource.
    pub fn response(&self, content: serde_json::Value) -> Self {
        let mut m = Message::new(
            &self.route.source,
            &self.route.group,
            op::RESPONSE,
            self.route.resource.clone(),
        );
        m.header.parent_id = self.header.id.clone();
        m.content = content;
        m
    }

    /// Decodes a message from JSON, naming the field that is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, MessageError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| MessageError {
            path: e.path().to_string(),
            reason: e.inner().to_string(),
        })
    }

    /// Encodes the message as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A Message holds only strings, integers and a serde_json::Value: encoding cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A message that does not decode.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageError {
    /// JSON path of the field that is wrong (`.` when the whole document is).
    pub path: String,
    /// The decoder's message.
    pub reason: String,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed message at `{}`: {}", self.path, self.reason)
    }
}

impl std::error::Error for MessageError {}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A random (version 4) UUID, as beehive and Kubernetes use for ids.
pub fn new_uuid() -> String {
    format_uuid(fastrand::u128(..).to_le_bytes(), 4)
}

/// Formats 16 bytes as a UUID of `version` (RFC 4122 variant bits set).
pub fn format_uuid(mut b: [u8; 16], version: u8) -> String {
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_omits_empty_fields() {
        let m = Message::new(module::EDGED, module::META, op::INSERT, "default/pod/web")
            .with_content(serde_json::json!({"a": 1}));
        let text = String::from_utf8(m.to_json()).unwrap();
        assert!(!text.contains("parent_msg_id"), "{text}");
        assert!(text.contains("\"route\""), "{text}");
        assert_eq!(Message::from_json(text.as_bytes()).unwrap(), m);
    }

    #[test]
    fn response_points_at_parent() {
        let m = Message::new("edgecontroller", "resource", op::UPDATE, "ns/configmap/c");
        let r = m.response(serde_json::json!("OK"));
        assert_eq!(r.header.parent_id, m.header.id);
        assert_eq!(r.route.operation, op::RESPONSE);
        assert_eq!(r.route.resource, m.route.resource);
    }

    #[test]
    fn bad_field_is_named() {
        let e = Message::from_json(br#"{"header":{"timestamp":"x"},"route":{}}"#).unwrap_err();
        assert_eq!(e.path, "header.timestamp");
    }

    #[test]
    fn uuid_shape() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uuid());
    }
}

/// A beehive resource string, `<namespace>/<type>[/<name>]` (node objects use namespace
/// `null`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    /// The namespace (`null` for node objects).
    pub namespace: String,
    /// The resource type, such as `pod`, `configmap`, `podstatus`, `nodestatus`.
    pub kind: String,
    /// The object's name (empty when the resource names a whole type).
    pub name: String,
}

impl Resource {
    /// Builds a resource string's parts.
    pub fn new(namespace: &str, kind: &str, name: &str) -> Self {
        Resource {
            namespace: namespace.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }

    /// Parses `<ns>/<type>[/<name>]`; a name may itself hold slashes.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.splitn(3, '/');
        let namespace = it.next().filter(|p| !p.is_empty())?;
        let kind = it.next().filter(|p| !p.is_empty())?;
        let name = it.next().unwrap_or("");
        Some(Resource::new(namespace, kind, name))
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            write!(f, "{}/{}", self.namespace, self.kind)
        } else {
            write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
        }
    }
}

#[cfg(test)]
mod resource_tests {
    use super::Resource;

    #[test]
    fn parse_and_print() {
        let r = Resource::parse("default/pod/web").unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.kind.as_str(), r.name.as_str()),
            ("default", "pod", "web")
        );
        assert_eq!(r.to_string(), "default/pod/web");
        assert_eq!(
            Resource::parse("null/node").unwrap().to_string(),
            "null/node"
        );
        assert!(Resource::parse("/pod/x").is_none());
        assert!(Resource::parse("ns").is_none());
    }
}
