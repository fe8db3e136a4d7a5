//! Pod fields that CloudCore's relay dropped, and the pod read back whole.
//!
//! CloudCore hands pods to the edge through a typed informer of the Kubernetes API it was built
//! with (KubeEdge master vendors k8s.io/api v1.32). A field newer than that API, such as
//! `spec.hostnameOverride` or a container's `restartPolicyRules` (Kubernetes 1.34), is lost when
//! the pod is decoded, and the pod reaches the node without it. Its `metadata.managedFields`
//! survive (their `fieldsV1` is raw JSON), and they still name every field the pod's writers
//! set. So a field named there but absent from the pod was dropped on the way
//! ([`dropped_fields`]); the node then reads the pod back through the DynamicController, whose
//! dynamic client keeps every field ([`get_request`]), and takes its `spec` when it is the
//! same pod at the same generation ([`restore`]).
//!
//! Should managedFields name a field the API server itself leaves out (a writer's empty
//! value), such a pod is read back once per spec, for nothing lost.

use super::application::{self, Application};
use crate::message::Message;
use serde_json::Value;
use std::collections::BTreeSet;

/// How deep [`dropped_fields`] follows managedFields (a pod spec is far shallower; the bound
/// keeps a hostile message from recursing without end).
const MAX_DEPTH: usize = 24;

/// The spec fields that the pod's `metadata.managedFields` name and the pod lacks, as paths
/// (`spec.hostnameOverride`, `spec.containers[name=c].restartPolicyRules`), sorted. Only
/// `FieldsV1` entries are read; set members (`v:`) and what cannot be read are not checked.
pub fn dropped_fields(pod: &Value) -> Vec<String> {
    let mut out = BTreeSet::new();
    for fields in spec_fields(pod) {
        walk(fields, pod.get("spec"), "spec", 0, &mut out);
    }
    out.into_iter().collect()
}

/// The `f:spec` sets of the pod's `FieldsV1` managedFields entries.
fn spec_fields(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| {
            e.get("fieldsType")
                .and_then(Value::as_str)
                .is_none_or(|t| t == "FieldsV1")
        })
        .filter_map(|e| e.pointer("/fieldsV1/f:spec"))
}

/// One step into an object along a FieldsV1 set: a field by its name (`f:<name>`), or a list
/// item by its key fields (`k:{"name":"c"}`). Set members (`v:`) and what cannot be read are
/// not followed.
enum Step {
    Field(String),
    Item(serde_json::Map<String, Value>),
}

/// The steps of the FieldsV1 node `fields` with what each names below it; none past
/// [`MAX_DEPTH`].
fn steps(fields: &Value, depth: usize) -> Vec<(Step, &Value)> {
    let Some(fields) = fields.as_object().filter(|_| depth < MAX_DEPTH) else {
        return Vec::new();
    };
    fields
        .iter()
        .filter_map(|(k, sub)| {
            if let Some(name) = k.strip_prefix("f:") {
                Some((Step::Field(name.to_string()), sub))
            } else {
                match serde_json::from_str::<Value>(k.strip_prefix("k:")?) {
                    Ok(Value::Object(key)) => Some((Step::Item(key), sub)),
                    _ => None,
                }
            }
        })
        .collect()
}

impl Step {
    /// Where the item is in the list `obj`.
    fn index(&self, obj: &Value) -> Option<usize> {
        let Step::Item(key) = self else {
            return None;
        };
        obj.as_array()?
            .iter()
            .position(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))
    }

    /// What the step reaches in `obj` (a null is absent).
    fn get<'v>(&self, obj: Option<&'v Value>) -> Option<&'v Value> {
        let obj = obj?;
        match self {
            Step::Field(name) => obj.get(name).filter(|v| !v.is_null()),
            Step::Item(_) => obj.get(self.index(obj)?),
        }
    }

    /// What the step reaches in `obj`, to change.
    fn get_mut<'v>(&self, obj: &'v mut Value) -> Option<&'v mut Value> {
        match self {
            Step::Field(name) => obj.get_mut(name.as_str()).filter(|v| !v.is_null()),
            Step::Item(_) => {
                let i = self.index(obj)?;
                obj.get_mut(i)
            }
        }
    }

    /// Removes what the step reaches in `obj`.
    fn remove(&self, obj: &mut Value) {
        match (self, self.index(obj)) {
            (Step::Field(name), _) => {
                if let Some(o) = obj.as_object_mut() {
                    o.remove(name);
                }
            }
            (Step::Item(_), Some(i)) => {
                if let Some(l) = obj.as_array_mut() {
                    l.remove(i);
                }
            }
            _ => {}
        }
    }

    /// Puts `v` where the step reaches in `obj` (an item at the list's end).
    fn insert(&self, obj: &mut Value, v: Value) {
        match self {
            Step::Field(name) => {
                if let Some(o) = obj.as_object_mut() {
                    o.insert(name.clone(), v);
                }
            }
            Step::Item(_) => {
                if let Some(l) = obj.as_array_mut() {
                    l.push(v);
                }
            }
        }
    }

    /// The path below `path` (`spec.hostnameOverride`, `spec.containers[name=c]`).
    fn path(&self, path: &str) -> String {
        match self {
            Step::Field(name) => format!("{path}.{name}"),
            Step::Item(key) => {
                let shown: Vec<String> = key
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect();
                format!("{path}[{}]", shown.join(","))
            }
        }
    }
}

/// Notes in `out` what `fields` names and `obj` (at `path`) lacks.
fn walk(fields: &Value, obj: Option<&Value>, path: &str, depth: usize, out: &mut BTreeSet<String>) {
    for (step, sub) in steps(fields, depth) {
        let p = step.path(path);
        match step.get(obj) {
            Some(child) => walk(sub, Some(child), &p, depth + 1, out),
            None => {
                out.insert(p);
            }
        }
    }
}

/// Removes from `earlier` what `fields` names and `relayed` lacks (what the relay dropped).
fn prune(fields: &Value, relayed: Option<&Value>, earlier: &mut Value, depth: usize) {
    for (step, sub) in steps(fields, depth) {
        match step.get(relayed) {
            Some(r) => {
                if let Some(e) = step.get_mut(earlier) {
                    prune(sub, Some(r), e, depth + 1);
                }
            }
            None => step.remove(earlier),
        }
    }
}

/// Copies into `to` what `fields` names, `to` lacks and `from` has.
fn copy_missing(fields: &Value, to: &mut Value, from: &Value, depth: usize) {
    for (step, sub) in steps(fields, depth) {
        let Some(have) = step.get(Some(from)) else {
            continue;
        };
        match step.get_mut(to) {
            Some(t) => copy_missing(sub, t, have, depth + 1),
            None => step.insert(to, have.clone()),
        }
    }
}

/// The relayed pod with the spec of `earlier` (the same pod as stored, read back before), when
/// its spec without what the relay dropped is the relayed spec: the pod changed only where the
/// relay shows it all (its status, its metadata), so there is nothing to read back again.
pub fn reuse(relayed: &Value, earlier: &Value) -> Option<Value> {
    let uid = |p: &Value| p.pointer("/metadata/uid").cloned();
    if uid(relayed).is_none() || uid(relayed) != uid(earlier) {
        return None;
    }
    let mut pruned = earlier.get("spec")?.clone();
    for fields in spec_fields(relayed) {
        prune(fields, relayed.get("spec"), &mut pruned, 0);
    }
    if Some(&pruned) != relayed.get("spec") || pruned == earlier["spec"] {
        return None;
    }
    let mut whole = relayed.clone();
    whole["spec"] = earlier["spec"].clone();
    Some(whole)
}

/// The DynamicController read of pod `namespace`/`name` for `node` (the pod's `spec.nodeName`:
/// CloudCore with authorization answers a node for itself only).
pub fn get_request(node: &str, namespace: &str, name: &str) -> Message {
    application::request(&Application::get(
        node,
        &format!("/core/v1/pods/{namespace}/{name}"),
    ))
}

/// The relayed pod with the `spec` of `fetched` (the pod as the API server has it), when it is
/// the same pod (uid) at the same spec generation (`metadata.generation`); otherwise why not
/// (a newer spec comes relayed on its own, and is read back then).
pub fn restore(relayed: &Value, fetched: &Value) -> Result<Value, String> {
    let meta = |p: &Value, k: &str| p.pointer(&format!("/metadata/{k}")).cloned();
    if !fetched.get("spec").is_some_and(Value::is_object) {
        return Err("the API server's answer has no spec".into());
    }
    if meta(relayed, "uid") != meta(fetched, "uid") {
        return Err(format!(
            "the API server has another pod of that name (uid {}, relayed {})",
            meta(fetched, "uid").unwrap_or_default(),
            meta(relayed, "uid").unwrap_or_default()
        ));
    }
    if meta(relayed, "generation") != meta(fetched, "generation") {
        return Err(format!(
            "the pod's spec changed since (generation {}, relayed {})",
            meta(fetched, "generation").unwrap_or_default(),
            meta(relayed, "generation").unwrap_or_default()
        ));
    }
    let mut whole = relayed.clone();
    whole["spec"] = fetched["spec"].clone();
    Ok(whole)
}

/// Reads the pod out of the DynamicController's answer to [`get_request`].
pub fn parse_answer(content: &Value) -> Result<Value, application::AnswerError> {
    let body = application::parse_answer(content)?;
    let pod: Value = serde_json::from_slice(&body).map_err(|e| {
        application::AnswerError::Malformed(format!("field `RespBody`: not JSON: {e}"))
    })?;
    if !pod.is_object() || pod.get("kind").is_some_and(|k| k != "Pod") {
        return Err(application::AnswerError::Malformed(
            "field `RespBody`: not a Pod".into(),
        ));
    }
    Ok(pod)
}

/// The relayed pod with what the relay dropped copied from `earlier` (the same pod as stored,
/// read back before), for a pod being deleted: its spec changes on the way out
/// (`terminationGracePeriodSeconds`) where the relay shows it, so [`reuse`] does not apply, and
/// the API server may have it no more. `None`: another pod, or nothing to copy.
pub fn graft(relayed: &Value, earlier: &Value) -> Option<Value> {
    let uid = |p: &Value| p.pointer("/metadata/uid").cloned();
    if uid(relayed).is_none() || uid(relayed) != uid(earlier) {
        return None;
    }
    let mut whole = relayed.clone();
    let spec = whole.get_mut("spec")?;
    for fields in spec_fields(relayed) {
        copy_missing(fields, spec, earlier.get("spec")?, 0);
    }
    (whole != *relayed).then_some(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod as CloudCore relays it: managedFields naming what the writer set.
    fn relayed(spec: Value, fields: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 1,
            "managedFields": [
                {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {"f:gone": {}}}, "f:spec": fields}},
                {"manager": "kubelet", "operation": "Update", "subresource": "status",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:phase": {}}}}]},
            "spec": spec})
    }

    #[test]
    fn fields_named_in_managed_fields_but_absent_are_dropped() {
        let c = |extra: Value| {
            let mut c = json!({"name": "c", "image": "i",
                "ports": [{"containerPort": 80, "protocol": "TCP"}]});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let fields = json!({"f:hostnameOverride": {}, "f:restartPolicy": {},
            "f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {},
                "f:restartPolicyRules": {},
                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {},
                    "f:containerPort": {}}}}}});
        // (spec as relayed, dropped)
        let cases: Vec<(Value, &[&str])> = vec![
            // Everything there: nothing dropped.
            (
                json!({"hostnameOverride": "h", "restartPolicy": "Never",
                    "containers": [c(json!({"restartPolicyRules": []}))]}),
                &[],
            ),
            // CloudCore on k8s.io/api v1.32: both 1.34 fields gone.
            (
                json!({"restartPolicy": "Never", "containers": [c(json!({}))]}),
                &[
                    "spec.containers[name=c].restartPolicyRules",
                    "spec.hostnameOverride",
                ],
            ),
            // A null is absent; a list item by its key, the whole item.
            (
                json!({"hostnameOverride": null, "restartPolicy": "Never",
                    "containers": [{"name": "other"}]}),
                &["spec.containers[name=c]", "spec.hostnameOverride"],
            ),
            (
                json!({"hostnameOverride": "h", "restartPolicy": "Never",
                    "containers": [c(json!({"restartPolicyRules": [], "ports": []}))]}),
                &["spec.containers[name=c].ports[containerPort=80,protocol=TCP]"],
            ),
        ];
        for (spec, want) in cases {
            let got = dropped_fields(&relayed(spec.clone(), fields.clone()));
            assert_eq!(got, want, "{spec}");
        }
        // Metadata and status entries are not the spec's; no managedFields, nothing named.
        assert!(dropped_fields(&json!({"spec": {}})).is_empty());
        // What cannot be read is not checked, and never panics.
        for bad in [
            json!({"metadata": {"managedFields": "x"}}),
            json!({"metadata": {"managedFields": [7, {"fieldsV1": []},
                {"fieldsType": "FieldsV2", "fieldsV1": {"f:spec": {"f:x": {}}}},
                {"fieldsV1": {"f:spec": {"k:not json": {}, "k:[1]": {}, "v:\"a\"": {},
                    "f:containers": "x"}}}]}, "spec": {"containers": 3}}),
        ] {
            assert!(dropped_fields(&bad).is_empty(), "{bad}");
        }
        // A deep one is followed down to the bound only (serde_json reads no deeper than 128).
        let (mut fields, mut spec) = (json!({"f:b": {}}), json!({}));
        for _ in 0..100 {
            fields = json!({ "f:a": fields });
            spec = json!({ "a": spec });
        }
        let pod = json!({"metadata": {"managedFields": [{"fieldsV1": {"f:spec": fields}}]},
            "spec": spec});
        assert!(dropped_fields(&pod).is_empty());
    }

    #[test]
    fn the_spec_is_taken_from_the_same_pod_at_the_same_generation() {
        let pod = |uid: &str, generation: Value, spec: Value| {
            json!({"metadata": {"name": "p", "uid": uid, "generation": generation,
                "deletionTimestamp": "t"}, "spec": spec, "status": {"phase": "Pending"}})
        };
        let relayed = pod("u1", json!(1), json!({"restartPolicy": "Never"}));
        let whole = json!({"restartPolicy": "Never", "hostnameOverride": "h"});
        let got = restore(&relayed, &pod("u1", json!(1), whole.clone())).unwrap();
        assert_eq!(got["spec"], whole);
        // The relayed metadata and status stay (the deletion the relay carries).
        assert_eq!(got["metadata"], relayed["metadata"]);
        assert_eq!(got["status"], relayed["status"]);
        let refused = [
            (pod("u2", json!(1), whole.clone()), "another pod"),
            (
                pod("u1", json!(2), whole.clone()),
                "generation 2, relayed 1",
            ),
            (
                json!({"metadata": {"uid": "u1", "generation": 1}}),
                "no spec",
            ),
        ];
        for (fetched, why) in refused {
            let e = restore(&relayed, &fetched).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn a_pod_read_back_before_is_reused_while_only_what_the_relay_shows_changed() {
        let fields = json!({"f:hostnameOverride": {}, "f:image": {},
            "f:containers": {"k:{\"name\":\"c\"}": {"f:restartPolicyRules": {}}}});
        let spec = |image: &str| {
            json!({"image": image, "hostnameOverride": "h",
                "containers": [{"name": "c", "restartPolicyRules": [1]}, {"name": "d"}]})
        };
        let earlier = relayed(spec("a"), fields.clone());
        let stripped =
            |image: &str| json!({"image": image, "containers": [{"name": "c"}, {"name": "d"}]});
        // Same spec, a new status: the earlier whole spec, the relayed rest.
        let mut now = relayed(stripped("a"), fields.clone());
        now["status"] = json!({"phase": "Running"});
        let got = reuse(&now, &earlier).unwrap();
        assert_eq!(got["spec"], spec("a"));
        assert_eq!(got["status"]["phase"], "Running");
        // The spec changed where the relay shows it, another pod, nothing dropped, no uid:
        // read back again (or not at all).
        assert!(reuse(&relayed(stripped("b"), fields.clone()), &earlier).is_none());
        let mut other = now.clone();
        other["metadata"]["uid"] = json!("u2");
        assert!(reuse(&other, &earlier).is_none());
        assert!(reuse(&relayed(spec("a"), fields.clone()), &earlier).is_none());
        let mut no_uid = now.clone();
        no_uid["metadata"].as_object_mut().unwrap().remove("uid");
        assert!(reuse(&no_uid, &no_uid).is_none());
        // A whole list item the relay lacks is pruned too.
        let item = json!({"f:containers": {"k:{\"name\":\"x\"}": {}}});
        let earlier = relayed(
            json!({"containers": [{"name": "x"}, {"name": "y"}]}),
            item.clone(),
        );
        let now = relayed(json!({"containers": [{"name": "y"}]}), item);
        assert_eq!(reuse(&now, &earlier).unwrap()["spec"], earlier["spec"]);
    }

    #[test]
    fn a_pod_being_deleted_keeps_what_was_read_back_before() {
        let fields = json!({"f:hostnameOverride": {}, "f:terminationGracePeriodSeconds": {},
            "f:containers": {"k:{\"name\":\"c\"}": {"f:restartPolicyRules": {}}}});
        let earlier = relayed(
            json!({"hostnameOverride": "h", "terminationGracePeriodSeconds": 30,
                "containers": [{"name": "c", "restartPolicyRules": [1]}]}),
            fields.clone(),
        );
        // The delete's grace period reached the spec; the 1.34 fields did not.
        let deleting = relayed(
            json!({"terminationGracePeriodSeconds": 1, "containers": [{"name": "c"}]}),
            fields.clone(),
        );
        assert!(reuse(&deleting, &earlier).is_none());
        let got = graft(&deleting, &earlier).unwrap();
        assert_eq!(
            got["spec"],
            json!({"hostnameOverride": "h", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "restartPolicyRules": [1]}]})
        );
        let mut other = deleting.clone();
        other["metadata"]["uid"] = json!("u2");
        assert!(graft(&other, &earlier).is_none());
        // Nothing there to copy.
        assert!(graft(&deleting, &deleting).is_none());
    }

    #[test]
    fn the_read_asks_for_the_pod_of_the_node() {
        let m = get_request("edge-1", "ns", "p");
        assert_eq!(m.route.group, "dynamiccontroller");
        assert_eq!(m.content["Key"], "/core/v1/pods/ns/p");
        assert_eq!(m.content["Verb"], "get");
        assert_eq!(m.content["Nodename"], "edge-1");
        let answer = |body: &str| {
            let mut a = Application::get("edge-1", "/core/v1/pods/ns/p");
            a.status = "Approved".into();
            a.resp_body = Some(body.as_bytes().to_vec());
            a.to_content()
        };
        assert_eq!(
            parse_answer(&answer(r#"{"kind":"Pod","spec":{}}"#)).unwrap()["spec"],
            json!({})
        );
        for (body, why) in [
            ("nope", "not JSON"),
            ("[1]", "not a Pod"),
            (r#"{"kind":"Service"}"#, "not a Pod"),
        ] {
            let e = parse_answer(&answer(body)).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }
}
