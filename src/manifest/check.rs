//! Checking one manifest object as the API server would, and completing it as the kubelet
//! completes a static pod (namespace, uid, node name, config annotations).

use super::read::Document;
use super::{hash, ANNOTATION_FILE, ANNOTATION_HASH, ANNOTATION_SOURCE};
use crate::api::validate::{
    config_key, dns1123_label, dns1123_subdomain, label_value, qualified_name,
};
use crate::api::{decode, ConfigMap, Container, Kind, ObjectError, Pod, Secret};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// ConfigMaps and Secrets hold at most this much data (the API server's limit).
const MAX_DATA_BYTES: usize = 1 << 20;

/// A checked, completed object, ready to be stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    /// Pod, ConfigMap or Secret.
    pub kind: Kind,
    /// `metadata.namespace`, `default` when the file gives none.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The object as written (unknown fields kept) with what the source adds.
    pub value: Value,
}

impl Checked {
    /// The beehive resource string, `<ns>/<type>/<name>`.
    pub fn resource(&self) -> String {
        format!(
            "{}/{}/{}",
            self.namespace,
            self.kind.resource_type(),
            self.name
        )
    }
}

/// How errors name an object: `Pod default/web`, or its place in the file when the name is
/// not known.
fn label(kind: &str, value: &Value, doc: &Document) -> String {
    let meta = value.get("metadata");
    match meta.and_then(|m| m.get("name")).and_then(Value::as_str) {
        Some(name) if !name.is_empty() => {
            let ns = meta
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default");
            format!("{kind} {ns}/{name}")
        }
        _ => format!("{kind} ({})", doc.place),
    }
}

/// Checks a document from `file` and completes it for node `node`.
pub fn check(doc: &Document, file: &str, node: &str) -> Result<Checked, ObjectError> {
    let value = &doc.value;
    let fail = |object: String, field: &str, reason: String| ObjectError {
        object,
        field: field.to_string(),
        reason,
    };
    if !value.is_object() {
        return Err(fail(
            format!("object ({})", doc.place),
            "",
            "a document must be a mapping with apiVersion, kind and metadata".into(),
        ));
    }
    let kind_str = match value.get("kind") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => {
            return Err(fail(
                format!("object ({})", doc.place),
                "kind",
                "must be a string".into(),
            ))
        }
        None => {
            return Err(fail(
                label("object", value, doc),
                "kind",
                "missing: one of Pod, ConfigMap, Secret".into(),
            ))
        }
    };
    let object = label(kind_str, value, doc);
    let kind = Kind::from_kind(kind_str).ok_or_else(|| {
        fail(
            object.clone(),
            "kind",
            format!(
                "kind `{kind_str}` is not one edged takes from files: Pod, ConfigMap or Secret"
            ),
        )
    })?;
    match value.get("apiVersion") {
        Some(Value::String(v)) if v == "v1" => {}
        Some(v) => {
            return Err(fail(
                object,
                "apiVersion",
                format!("{kind} is `v1`, not {v}"),
            ))
        }
        None => return Err(fail(object, "apiVersion", "missing: write `v1`".into())),
    }
    // Type errors first (they name the path), then the name, then the kind's own rules.
    let (meta, rules) = match kind {
        Kind::Pod => {
            let pod: Pod = decode(&object, value)?;
            let rules = check_pod(&pod);
            (pod.metadata, rules)
        }
        Kind::ConfigMap => {
            let cm: ConfigMap = decode(&object, value)?;
            let rules = check_data(&[
                ("data", &cm.data, false),
                ("binaryData", &cm.binary_data, true),
            ]);
            (cm.metadata, rules)
        }
        Kind::Secret => {
            let s: Secret = decode(&object, value)?;
            let rules = check_data(&[
                ("data", &s.data, true),
                ("stringData", &s.string_data, false),
            ]);
            (s.metadata, rules)
        }
    };
    if meta.name.is_empty() {
        return Err(fail(
            object,
            "metadata.name",
            "required (generateName is not supported in manifest files)".into(),
        ));
    }
    dns1123_subdomain(&meta.name).map_err(|e| fail(object.clone(), "metadata.name", e))?;
    let namespace = if meta.namespace.is_empty() {
        "default".to_string()
    } else {
        meta.namespace.clone()
    };
    dns1123_label(&namespace).map_err(|e| fail(object.clone(), "metadata.namespace", e))?;
    for (k, v) in &meta.labels {
        let at = format!("metadata.labels[{k}]");
        qualified_name(k).map_err(|e| fail(object.clone(), &at, e))?;
        label_value(v).map_err(|e| fail(object.clone(), &at, e))?;
    }
    for k in meta.annotations.keys() {
        qualified_name(k)
            .map_err(|e| fail(object.clone(), &format!("metadata.annotations[{k}]"), e))?;
    }
    rules.map_err(|(field, reason)| fail(object.clone(), &field, reason))?;
    let value = complete(kind, &namespace, &meta.name, value, file, node);
    Ok(Checked {
        kind,
        namespace,
        name: meta.name,
        value,
    })
}

/// A field path and what is wrong with it.
type FieldError = (String, String);

fn check_pod(pod: &Pod) -> Result<(), FieldError> {
    let spec = &pod.spec;
    if spec.containers.is_empty() {
        return Err((
            "spec.containers".into(),
            "at least one container is required".into(),
        ));
    }
    let mut volumes: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let field = format!("spec.volumes[{i}].name");
        dns1123_label(&v.name).map_err(|e| (field.clone(), e))?;
        if let Some(first) = volumes.insert(&v.name, i) {
            return Err((
                field,
                format!(
                    "duplicate volume name `{}` (also spec.volumes[{first}].name)",
                    v.name
                ),
            ));
        }
    }
    let mut names: BTreeMap<&str, String> = BTreeMap::new();
    let lists: [(&str, &Vec<Container>); 2] = [
        ("spec.initContainers", &spec.init_containers),
        ("spec.containers", &spec.containers),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let at = format!("{list}[{i}]");
            dns1123_label(&c.name).map_err(|e| (format!("{at}.name"), e))?;
            if let Some(first) = names.insert(&c.name, format!("{at}.name")) {
                return Err((
                    format!("{at}.name"),
                    format!("duplicate container name `{}` (also {first})", c.name),
                ));
            }
            if c.image.trim().is_empty() {
                return Err((format!("{at}.image"), "required".into()));
            }
            for (j, m) in c.volume_mounts.iter().enumerate() {
                if !volumes.contains_key(m.name.as_str()) {
                    return Err((
                        format!("{at}.volumeMounts[{j}].name"),
                        format!("no volume `{}` in spec.volumes", m.name),
                    ));
                }
                if m.mount_path.is_empty() {
                    return Err((
                        format!("{at}.volumeMounts[{j}].mountPath"),
                        "required".into(),
                    ));
                }
            }
        }
    }
    if let Some(p) = &spec.restart_policy {
        if !matches!(p.as_str(), "Always" | "OnFailure" | "Never") {
            return Err((
                "spec.restartPolicy".into(),
                format!("`{p}` is not Always, OnFailure or Never"),
            ));
        }
    }
    // The uid and hostPath paths, with the rule every source uses.
    crate::api::validate::pod_paths(pod)?;
    crate::api::validate::ephemeral_containers(pod)
}

/// Checks the key maps of a ConfigMap or Secret: valid keys, base64 where it must be, no key
/// twice, 1 MiB in all.
fn check_data(maps: &[(&str, &BTreeMap<String, String>, bool)]) -> Result<(), FieldError> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let mut total = 0;
    for (field, map, base64) in maps {
        for (k, v) in map.iter() {
            let at = format!("{field}[{k}]");
            config_key(k).map_err(|e| (at.clone(), e))?;
            if *base64 && !is_base64(v) {
                return Err((at, "not valid base64".into()));
            }
            if let Some(other) = seen.insert(k, field) {
                return Err((at, format!("key `{k}` is also in {other}")));
            }
            total += v.len();
        }
    }
    if total > MAX_DATA_BYTES {
        return Err((
            maps[0].0.to_string(),
            format!("{total} bytes of data, above the 1 MiB limit"),
        ));
    }
    Ok(())
}

/// Adds what the API server and the kubelet add to a static object: the namespace, a stable
/// uid, the node name, `kubernetes.io/config.*` annotations; a Secret's `stringData` becomes
/// base64 `data` and its type defaults to Opaque.
fn complete(kind: Kind, ns: &str, name: &str, raw: &Value, file: &str, node: &str) -> Value {
    let mut value = raw.clone();
    let Some(obj) = value.as_object_mut() else {
        return value;
    };
    let meta = object_at(obj, "metadata");
    meta.insert("namespace".into(), Value::String(ns.to_string()));
    let has_uid = meta
        .get("uid")
        .and_then(Value::as_str)
        .is_some_and(|u| !u.is_empty());
    if !has_uid {
        meta.insert("uid".into(), Value::String(hash::uid(kind, ns, name)));
    }
    let ann = object_at(meta, "annotations");
    ann.insert(ANNOTATION_SOURCE.into(), Value::String("file".into()));
    ann.insert(ANNOTATION_HASH.into(), Value::String(hash::content(raw)));
    ann.insert(ANNOTATION_FILE.into(), Value::String(file.to_string()));
    match kind {
        Kind::Pod => {
            object_at(obj, "spec").insert("nodeName".into(), Value::String(node.to_string()));
        }
        Kind::Secret => {
            if let Some(Value::Object(plain)) = obj.remove("stringData") {
                let data = object_at(obj, "data");
                for (k, v) in plain {
                    let text = v.as_str().unwrap_or_default();
                    data.insert(
                        k,
                        Value::String(crate::api::base64::encode(text.as_bytes())),
                    );
                }
            }
            if !obj.get("type").is_some_and(Value::is_string) {
                obj.insert("type".into(), Value::String("Opaque".into()));
            }
        }
        Kind::ConfigMap => {}
    }
    value
}

/// The object at `key`, made (or replaced, when null) if needed.
fn object_at<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = obj
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("made an object just above"),
    }
}

/// Standard base64 with padding, as Kubernetes writes `[]byte`.
fn is_base64(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return false;
    }
    let pad = b.iter().rev().take_while(|c| **c == b'=').count();
    pad <= 2
        && b[..b.len() - pad]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

#[cfg(test)]
mod tests {
    use super::super::read::{documents, Place};
    use super::*;
    use serde_json::json;

    fn doc(value: Value) -> Document {
        Document {
            place: Place {
                document: 2,
                item: None,
            },
            value,
        }
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":spec})
    }

    fn err(v: Value) -> ObjectError {
        check(&doc(v), "web.yaml", "node1").unwrap_err()
    }

    #[test]
    fn pod_is_completed() {
        let v = pod(json!({"containers":[{"name":"a","image":"busybox","future":1}]}));
        let c = check(&doc(v.clone()), "web.yaml", "node1").unwrap();
        assert_eq!(c.resource(), "default/pod/web");
        assert_eq!(c.value["spec"]["nodeName"], "node1");
        assert_eq!(c.value["spec"]["containers"][0]["future"], 1);
        let ann = &c.value["metadata"]["annotations"];
        assert_eq!(ann[ANNOTATION_SOURCE], "file");
        assert_eq!(ann[ANNOTATION_FILE], "web.yaml");
        let uid = c.value["metadata"]["uid"].as_str().unwrap().to_string();
        assert_eq!(uid.len(), 36);
        // Same name, other content: same uid, other hash.
        let mut v2 = v.clone();
        v2["spec"]["containers"][0]["image"] = json!("busybox:2");
        let c2 = check(&doc(v2), "other.yaml", "node1").unwrap();
        assert_eq!(c2.value["metadata"]["uid"], uid.as_str());
        assert_ne!(
            c2.value["metadata"]["annotations"][ANNOTATION_HASH],
            ann[ANNOTATION_HASH]
        );
        // A uid written in the file is kept.
        let mut v3 = v;
        v3["metadata"]["uid"] = json!("u-1");
        let c3 = check(&doc(v3), "web.yaml", "node1").unwrap();
        assert_eq!(c3.value["metadata"]["uid"], "u-1");
    }

    #[test]
    fn pod_errors_name_object_and_field() {
        let e = err(pod(json!({"containers":[]})));
        assert_eq!(
            (e.object.as_str(), e.field.as_str()),
            ("Pod default/web", "spec.containers")
        );
        let e = err(pod(
            json!({"containers":[{"name":"a","image":"x"},{"name":"a","image":"y"}]}),
        ));
        assert_eq!(e.field, "spec.containers[1].name");
        let e = err(pod(json!({"containers":[{"name":"A","image":"x"}]})));
        assert_eq!(e.field, "spec.containers[0].name");
        let e = err(pod(json!({"containers":[{"name":"a","image":""}]})));
        assert_eq!(e.field, "spec.containers[0].image");
        let e = err(pod(json!({"containers":[{"name":"a","image":"x",
            "volumeMounts":[{"name":"data","mountPath":"/d"}]}]})));
        assert_eq!(e.field, "spec.containers[0].volumeMounts[0].name");
        assert!(e.reason.contains("data"), "{e}");
        let e = err(pod(json!({"containers":[{"name":"a","image":"x"}],
            "volumes":[{"name":"v","emptyDir":{}},{"name":"v","emptyDir":{}}]})));
        assert_eq!(e.field, "spec.volumes[1].name");
        let e = err(pod(json!({"containers":[{"name":"a","image":5}]})));
        assert_eq!(e.field, "spec.containers[0].image");
        let e = err(json!({"apiVersion":"v1","kind":"Pod","spec":{}}));
        assert_eq!(e.object, "Pod (document 2)");
        let e = err(
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"Web"},
            "spec":{"containers":[{"name":"a","image":"x"}]}}),
        );
        assert_eq!(e.field, "metadata.name");
        let e = err(json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"}}));
        assert_eq!(e.object, "Deployment default/d");
        assert!(e.reason.contains("Deployment"), "{e}");
        let e = err(
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"my app"}},
            "spec":{"containers":[{"name":"a","image":"x"}]}}),
        );
        assert_eq!(e.field, "metadata.labels[app]");
        let e = err(json!({"kind":"Pod","metadata":{"name":"w","namespace":"kube_system"}}));
        assert_eq!(e.field, "apiVersion");
        // Fields that become host paths.
        let e = err(
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","uid":"x/../../victim"},
            "spec":{"containers":[{"name":"a","image":"x"}]}}),
        );
        assert_eq!(
            (e.object.as_str(), e.field.as_str()),
            ("Pod default/web", "metadata.uid")
        );
        let e = err(pod(json!({"containers":[{"name":"a","image":"x"}],
            "volumes":[{"name":"v","hostPath":{"path":"/srv/../etc"}}]})));
        assert_eq!(e.field, "spec.volumes[0].hostPath.path");
        assert!(e.reason.contains("must not contain '..'"), "{e}");
    }

    #[test]
    fn kubectl_dry_run_output_is_accepted() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  creationTimestamp: null\n  labels:\n    run: web\n  name: web\nspec:\n  containers:\n  - image: nginx\n    name: web\n    resources: {}\n  dnsPolicy: ClusterFirst\n  restartPolicy: Always\nstatus: {}\n";
        let docs = documents(text).unwrap();
        let c = check(&docs[0], "web.yaml", "n").unwrap();
        assert_eq!(c.resource(), "default/pod/web");
        // A number where the API wants a string is an error, as kubectl apply says.
        let docs =
            documents("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {port: 80}\n")
                .unwrap();
        let e = check(&docs[0], "c.yaml", "n").unwrap_err();
        assert_eq!(e.field, "data.port");
    }

    #[test]
    fn configmap_and_secret() {
        let e = err(
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},
            "data":{"bad key":"v"}}),
        );
        assert_eq!(e.field, "data[bad key]");
        let e = err(
            json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},
            "data":{"k":"not base64!"}}),
        );
        assert_eq!(e.field, "data[k]");
        let docs = documents(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: apps}\nstringData:\n  pw: hunter2\ndata:\n  a: YQ==\n",
        )
        .unwrap();
        let c = check(&docs[0], "s.yaml", "n").unwrap();
        assert_eq!(c.resource(), "apps/secret/s");
        assert_eq!(c.value["data"]["pw"], "aHVudGVyMg==");
        assert_eq!(c.value["data"]["a"], "YQ==");
        assert_eq!(c.value["type"], "Opaque");
        assert!(c.value.get("stringData").is_none());
    }
}
