//! What MetaManager hands the pod manager: one typed [`Change`] per stored change of a pod,
//! ConfigMap or Secret. Route strings stop here; nothing below MetaManager reads them.
//!
//! Order: changes are sent on one channel in the order MetaManager applied them to the store,
//! so a receiver sees a pod's insert, updates and delete in the order they were stored.

use super::store::Table;
use crate::api::{Kind, Pod};
use crate::message::{op, Message, Resource};

/// Names a pod whose delete came without a usable pod object (the delete names it only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid, when the message carried it.
    pub uid: Option<String>,
}

impl PodRef {
    /// `<namespace>/<name>`, for logs and as the key pod changes are ordered by.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl From<&Pod> for PodRef {
    fn from(pod: &Pod) -> Self {
        PodRef {
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: Some(pod.metadata.uid.clone()).filter(|u| !u.is_empty()),
        }
    }
}

/// One stored change the pod manager acts on.
#[derive(Debug)]
pub enum Change {
    /// A pod stored for the first time (an `insert`).
    PodAdded(Box<Pod>),
    /// A stored pod's new version (an `update`).
    PodUpdated(Box<Pod>),
    /// A pod removed from the store.
    PodDeleted(PodRef),
    /// A ConfigMap or Secret was stored, changed or removed.
    ObjectChanged {
        /// ConfigMap or Secret.
        kind: Kind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl Change {
    /// The change a stored message makes, `Ok(None)` for one that does not concern the pod
    /// manager (a node row, a status, a query). Errors name the resource and the field.
    pub fn from_message(msg: &Message) -> Result<Option<Change>, String> {
        let Some(res) = Resource::parse(&msg.route.resource) else {
            return Ok(None);
        };
        let change = match Table::from_resource_type(&res.kind) {
            Some(Table::Pod) => match msg.route.operation.as_str() {
                op::INSERT => Change::PodAdded(Box::new(pod_of(msg)?)),
                op::UPDATE => Change::PodUpdated(Box::new(pod_of(msg)?)),
                // A delete's content is the pod as KubeEdge sends it; one that names the pod
                // only (or carries nothing usable) is still a delete of that pod.
                op::DELETE => Change::PodDeleted(match crate::api::decode_pod(&msg.content) {
                    Ok(pod) => PodRef::from(&pod),
                    Err(_) => PodRef {
                        namespace: res.namespace,
                        name: res.name,
                        uid: None,
                    },
                }),
                _ => return Ok(None),
            },
            Some(Table::ConfigMap) | Some(Table::Secret) => {
                if !matches!(
                    msg.route.operation.as_str(),
                    op::INSERT | op::UPDATE | op::DELETE
                ) {
                    return Ok(None);
                }
                let kind = if res.kind == Kind::ConfigMap.resource_type() {
                    Kind::ConfigMap
                } else {
                    Kind::Secret
                };
                Change::ObjectChanged {
                    kind,
                    namespace: res.namespace,
                    name: res.name,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(change))
    }
}

/// `insert ns/pod/name`, `update ...`, `delete ...`, or `change ns/configmap/name`: the change as
/// its message named it, for logs.
impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pod = |p: &Pod| format!("{}/pod/{}", p.metadata.namespace, p.metadata.name);
        match self {
            Change::PodAdded(p) => write!(f, "{} {}", op::INSERT, pod(p)),
            Change::PodUpdated(p) => write!(f, "{} {}", op::UPDATE, pod(p)),
            Change::PodDeleted(r) => write!(f, "{} {}/pod/{}", op::DELETE, r.namespace, r.name),
            Change::ObjectChanged {
                kind,
                namespace,
                name,
            } => write!(f, "change {namespace}/{}/{name}", kind.resource_type()),
        }
    }
}

fn pod_of(msg: &Message) -> Result<Pod, String> {
    crate::api::decode_pod(&msg.content)
        .map_err(|e| format!("message for `{}`: {e}", msg.route.resource))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::module;
    use serde_json::json;

    fn msg(operation: &str, resource: &str, content: serde_json::Value) -> Message {
        Message::new(
            module::METAMANAGER,
            module::META,
            operation,
            resource.to_string(),
        )
        .with_content(content)
    }

    fn pod(name: &str, uid: &str) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": "ns", "uid": uid},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    #[test]
    fn messages_become_typed_changes() {
        let added = Change::from_message(&msg(op::INSERT, "ns/pod/a", pod("a", "u1"))).unwrap();
        assert!(matches!(&added, Some(Change::PodAdded(p)) if p.metadata.uid == "u1"));
        let updated = Change::from_message(&msg(op::UPDATE, "ns/pod/a", pod("a", "u1"))).unwrap();
        assert!(matches!(&updated, Some(Change::PodUpdated(p)) if p.metadata.name == "a"));
        let deleted = Change::from_message(&msg(op::DELETE, "ns/pod/a", pod("a", "u1"))).unwrap();
        let Some(Change::PodDeleted(r)) = deleted else {
            panic!("not a delete: {deleted:?}")
        };
        assert_eq!(
            (r.key(), r.uid.as_deref()),
            ("ns/a".to_string(), Some("u1"))
        );
        for (kind, resource) in [
            (Kind::ConfigMap, "ns/configmap/cm"),
            (Kind::Secret, "ns/secret/cm"),
        ] {
            for o in [op::INSERT, op::UPDATE, op::DELETE] {
                let c = Change::from_message(&msg(o, resource, json!({}))).unwrap();
                assert!(
                    matches!(&c, Some(Change::ObjectChanged { kind: k, namespace, name })
                        if *k == kind && namespace == "ns" && name == "cm"),
                    "{o} {resource}: {c:?}"
                );
            }
        }
    }

    #[test]
    fn a_delete_naming_the_pod_only_is_still_a_delete() {
        let c = Change::from_message(&msg(op::DELETE, "ns/pod/a", json!("gone"))).unwrap();
        let Some(Change::PodDeleted(r)) = c else {
            panic!("not a delete: {c:?}")
        };
        assert_eq!(
            r,
            PodRef {
                namespace: "ns".into(),
                name: "a".into(),
                uid: None
            }
        );
    }

    #[test]
    fn what_is_not_the_pod_managers_is_none() {
        for (o, resource) in [
            (op::QUERY, "ns/pod/a"),
            (op::QUERY, "ns/configmap/cm"),
            (op::UPDATE, "ns/podstatus/a"),
            (op::UPDATE, "null/node/n"),
            (op::INSERT, "not a resource"),
        ] {
            let c = Change::from_message(&msg(o, resource, pod("a", "u1"))).unwrap();
            assert!(c.is_none(), "{o} {resource}: {c:?}");
        }
    }

    #[test]
    fn a_pod_that_does_not_decode_names_the_resource() {
        let e = Change::from_message(&msg(op::INSERT, "ns/pod/a", json!({"spec": 3}))).unwrap_err();
        assert!(e.contains("ns/pod/a"), "{e}");
    }
}
