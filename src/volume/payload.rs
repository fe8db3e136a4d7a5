//! What configMap, secret and downwardAPI volumes hold: the files built from an object (or the
//! pod itself), checked before anything is written.

use super::atomic::{FileProjection, Payload};
use super::VolumeError;
use crate::api::{self, KeyToPath};
use crate::paths::check_relative;
use std::collections::BTreeMap;

/// The mode files get when neither `mode` nor `defaultMode` says (0644, as in Kubernetes).
pub const DEFAULT_MODE: u32 = 0o644;

fn check_mode(pod: &str, volume: &str, field: &str, mode: u32) -> Result<u32, VolumeError> {
    if mode > 0o777 {
        return Err(VolumeError::spec(
            pod,
            volume,
            format!("{field} {mode} (octal {mode:o}) is not a permission between 0 and 0777"),
        ));
    }
    Ok(mode)
}

/// Checks every path and that no file is also asked to be a directory (`a` and `a/b`).
fn check_paths(pod: &str, volume: &str, payload: &Payload) -> Result<(), VolumeError> {
    for path in payload.keys() {
        check_relative(path).map_err(|r| VolumeError::path(pod, volume, path, r))?;
        let mut prefix = String::new();
        for seg in path.split('/') {
            if !prefix.is_empty() {
                if payload.contains_key(&prefix) {
                    return Err(VolumeError::path(
                        pod,
                        volume,
                        path,
                        format!("`{prefix}` is a file of the volume, it cannot be a directory"),
                    ));
                }
                prefix.push('/');
            }
            prefix.push_str(seg);
        }
    }
    Ok(())
}

/// Projects `data` (key to bytes) through `items` (all keys when empty).
fn project(
    pod: &str,
    volume: &str,
    object: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    default_mode: Option<u32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let default_mode = check_mode(
        pod,
        volume,
        "defaultMode",
        default_mode.unwrap_or(DEFAULT_MODE),
    )?;
    let mut out = Payload::new();
    if items.is_empty() {
        for (key, data) in data {
            api::validate::config_key(&key)
                .map_err(|r| VolumeError::path(pod, volume, &key, format!("{object}: {r}")))?;
            out.insert(
                key,
                FileProjection {
                    data,
                    mode: default_mode,
                },
            );
        }
    } else {
        for item in items {
            let Some(bytes) = data.get(&item.key) else {
                if optional {
                    continue;
                }
                return Err(VolumeError::MissingKey {
                    pod: pod.to_string(),
                    volume: volume.to_string(),
                    object: object.to_string(),
                    key: item.key.clone(),
                });
            };
            let mode = match item.mode {
                Some(m) => check_mode(pod, volume, &format!("items[{}].mode", item.key), m)?,
                None => default_mode,
            };
            out.insert(
                item.path.clone(),
                FileProjection {
                    data: bytes.clone(),
                    mode,
                },
            );
        }
    }
    check_paths(pod, volume, &out)?;
    Ok(out)
}

/// The files of a configMap volume (`cm` is `None` for a missing optional ConfigMap).
pub fn config_map(
    pod: &str,
    volume: &str,
    src: &api::ConfigMapVolume,
    cm: Option<&api::ConfigMap>,
) -> Result<Payload, VolumeError> {
    let object = format!("ConfigMap `{}`", src.name);
    let values = cm.map(|c| c.values());
    object_payload(
        pod,
        volume,
        &object,
        values,
        &src.items,
        src.default_mode,
        src.optional,
    )
}

/// The files of a secret volume (`secret` is `None` for a missing optional Secret).
/// `data` is base64; `stringData` is plain and wins, as the API server merges them.
pub fn secret(
    pod: &str,
    volume: &str,
    src: &api::SecretVolume,
    secret: Option<&api::Secret>,
) -> Result<Payload, VolumeError> {
    let object = format!("Secret `{}`", src.secret_name);
    let values = secret.map(|s| s.values());
    object_payload(
        pod,
        volume,
        &object,
        values,
        &src.items,
        src.default_mode,
        src.optional,
    )
}

/// The files of an object's values (`None`: a missing optional object, no files).
fn object_payload(
    pod: &str,
    volume: &str,
    object: &str,
    values: Option<Result<BTreeMap<String, Vec<u8>>, String>>,
    items: &[KeyToPath],
    default_mode: Option<u32>,
    optional: Option<bool>,
) -> Result<Payload, VolumeError> {
    let Some(values) = values else {
        return Ok(Payload::new());
    };
    let data = values.map_err(|r| VolumeError::spec(pod, volume, format!("{object}: {r}")))?;
    project(
        pod,
        volume,
        object,
        data,
        items,
        default_mode,
        optional.unwrap_or(false),
    )
}

/// The files of a downwardAPI volume.
pub fn downward_api(
    pod_label: &str,
    volume: &str,
    src: &api::DownwardApiVolume,
    pod: &api::Pod,
) -> Result<Payload, VolumeError> {
    let default_mode = check_mode(
        pod_label,
        volume,
        "defaultMode",
        src.default_mode.unwrap_or(DEFAULT_MODE),
    )?;
    let mut out = Payload::new();
    for item in &src.items {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), None) => field_value(pod, &f.field_path).ok_or_else(|| {
                VolumeError::spec(
                    pod_label,
                    volume,
                    format!(
                        "item `{}`: fieldRef `{}` is not supported in a volume (use \
                         metadata.name, metadata.namespace, metadata.uid, metadata.labels, \
                         metadata.annotations, or metadata.labels['<key>'])",
                        item.path, f.field_path
                    ),
                )
            })?,
            (None, Some(r)) => {
                let container = r.container_name.as_deref().unwrap_or("");
                resource_value(pod, container, &r.resource, r.divisor.as_ref()).map_err(|e| {
                    VolumeError::spec(pod_label, volume, format!("item `{}`: {e}", item.path))
                })?
            }
            _ => {
                return Err(VolumeError::spec(
                    pod_label,
                    volume,
                    format!(
                        "item `{}`: give exactly one of fieldRef and resourceFieldRef",
                        item.path
                    ),
                ))
            }
        };
        let mode = match item.mode {
            Some(m) => check_mode(pod_label, volume, &format!("items[{}].mode", item.path), m)?,
            None => default_mode,
        };
        out.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode,
            },
        );
    }
    check_paths(pod_label, volume, &out)?;
    Ok(out)
}

/// The files of a projected volume: every source's files in one payload. A path two sources
/// write is an error, as are sources edged cannot fill (`clusterTrustBundle`,
/// `podCertificate`), named with their index.
pub fn projected(
    pod_label: &str,
    volume: &str,
    src: &api::ProjectedVolume,
    pod: &api::Pod,
    objects: &super::PodObjects,
) -> Result<Payload, VolumeError> {
    let default_mode = check_mode(
        pod_label,
        volume,
        "defaultMode",
        src.default_mode.unwrap_or(DEFAULT_MODE),
    )?;
    let mut out = Payload::new();
    for (i, s) in src.sources.iter().enumerate() {
        let at = |r: String| VolumeError::spec(pod_label, volume, format!("sources[{i}]: {r}"));
        let part = match projection(s).map_err(at)? {
            Projection::ConfigMap(c) => {
                let obj = objects.config_maps.get(&c.name);
                let optional = c.optional.unwrap_or(false);
                if obj.is_none() && !optional {
                    return Err(VolumeError::MissingObject {
                        pod: pod_label.to_string(),
                        volume: volume.to_string(),
                        kind: api::Kind::ConfigMap,
                        name: c.name.clone(),
                    });
                }
                let object = format!("ConfigMap `{}`", c.name);
                let values = obj.map(|o| o.values());
                object_payload(
                    pod_label,
                    volume,
                    &object,
                    values,
                    &c.items,
                    Some(default_mode),
                    c.optional,
                )?
            }
            Projection::Secret(c) => {
                let obj = objects.secrets.get(&c.name);
                let optional = c.optional.unwrap_or(false);
                if obj.is_none() && !optional {
                    return Err(VolumeError::MissingObject {
                        pod: pod_label.to_string(),
                        volume: volume.to_string(),
                        kind: api::Kind::Secret,
                        name: c.name.clone(),
                    });
                }
                let object = format!("Secret `{}`", c.name);
                let values = obj.map(|o| o.values());
                object_payload(
                    pod_label,
                    volume,
                    &object,
                    values,
                    &c.items,
                    Some(default_mode),
                    c.optional,
                )?
            }
            Projection::DownwardApi(d) => {
                let as_volume = api::DownwardApiVolume {
                    items: d.items.clone(),
                    default_mode: Some(default_mode),
                };
                downward_api(pod_label, volume, &as_volume, pod)?
            }
            Projection::Token(t) => {
                crate::token::check_source(t).map_err(at)?;
                let token = objects.tokens.get(&super::token_key(t)).ok_or_else(|| {
                    at(format!(
                        "no service-account token for `{}` issued yet",
                        pod.spec.service_account_name()
                    ))
                })?;
                // The kubelet writes the token with the volume's defaultMode.
                let mut p = Payload::new();
                p.insert(
                    t.path.clone(),
                    FileProjection {
                        data: token.clone().into_bytes(),
                        mode: default_mode,
                    },
                );
                p
            }
        };
        for (path, file) in part {
            if out.contains_key(&path) {
                return Err(VolumeError::path(
                    pod_label,
                    volume,
                    &path,
                    format!("sources[{i}] writes a path an earlier source writes too"),
                ));
            }
            out.insert(path, file);
        }
    }
    check_paths(pod_label, volume, &out)?;
    Ok(out)
}

/// The one source a projection names.
enum Projection<'a> {
    ConfigMap(&'a api::ObjectProjection),
    Secret(&'a api::ObjectProjection),
    DownwardApi(&'a api::DownwardApiProjection),
    Token(&'a api::ServiceAccountTokenProjection),
}

fn projection(s: &api::VolumeProjection) -> Result<Projection<'_>, String> {
    if s.cluster_trust_bundle.is_some() {
        return Err(
            "projected source `clusterTrustBundle` is not supported by edged (the \
                    cloud sends no ClusterTrustBundle objects to edge nodes)"
                .into(),
        );
    }
    if s.pod_certificate.is_some() {
        return Err(
            "projected source `podCertificate` is not supported by edged (it has no \
                    PodCertificateRequest signer flow)"
                .into(),
        );
    }
    let mut found = Vec::new();
    if let Some(c) = &s.config_map {
        found.push(Projection::ConfigMap(c));
    }
    if let Some(c) = &s.secret {
        found.push(Projection::Secret(c));
    }
    if let Some(d) = &s.downward_api {
        found.push(Projection::DownwardApi(d));
    }
    if let Some(t) = &s.service_account_token {
        found.push(Projection::Token(t));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err("names no source (configMap, secret, downwardAPI or serviceAccountToken)".into()),
        _ => Err("names more than one source; give exactly one per entry".into()),
    }
}

/// The value of a downward API field path, as the kubelet renders it.
pub fn field_value(pod: &api::Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    match path {
        "metadata.name" => return Some(m.name.clone()),
        "metadata.namespace" => return Some(m.namespace.clone()),
        "metadata.uid" => return Some(m.uid.clone()),
        "metadata.labels" => return Some(format_map(&m.labels)),
        "metadata.annotations" => return Some(format_map(&m.annotations)),
        _ => {}
    }
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(k) = subscript("metadata.labels['") {
        return Some(m.labels.get(&k).cloned().unwrap_or_default());
    }
    if let Some(k) = subscript("metadata.annotations['") {
        return Some(m.annotations.get(&k).cloned().unwrap_or_default());
    }
    None
}

/// The value of a downward API `resourceFieldRef` (`limits.cpu`, `limits.memory`,
/// `requests.cpu`, `requests.memory`) of container `container`, divided by `divisor` (one
/// unit by default) and rounded up, as the kubelet renders it. An unset limit is the node's
/// capacity (CPUs, MemTotal), as the kubelet uses node allocatable; an unset request is the
/// limit when that is set (the API server's default), else 0.
pub fn resource_value(
    pod: &api::Pod,
    container: &str,
    resource: &str,
    divisor: Option<&serde_json::Value>,
) -> Result<String, String> {
    let c = pod
        .spec
        .containers
        .iter()
        .chain(&pod.spec.init_containers)
        .find(|c| c.name == container)
        .ok_or_else(|| format!("resourceFieldRef names no container `{container}`"))?;
    let (kind, name) = resource
        .split_once('.')
        .filter(|(k, n)| matches!(*k, "limits" | "requests") && matches!(*n, "cpu" | "memory"))
        .ok_or_else(|| {
            format!(
                "resourceFieldRef `{resource}` is not supported (use limits.cpu, limits.memory, \
                 requests.cpu or requests.memory)"
            )
        })?;
    // CPU in millicores, memory in bytes.
    let parse = |v: &serde_json::Value| {
        if name == "cpu" {
            api::quantity::millicores(v)
        } else {
            api::quantity::bytes(v)
        }
    };
    let limit = c.resources.limits.get(name).and_then(parse);
    let value = match kind {
        "limits" => match limit {
            Some(v) => v,
            None => node_capacity(name)?,
        },
        _ => c
            .resources
            .requests
            .get(name)
            .and_then(parse)
            .or(limit)
            .unwrap_or(0),
    };
    // No divisor, or a zero one (kube-apiserver defaults it to "0"), means one unit.
    let one = if name == "cpu" { 1000 } else { 1 };
    let divisor = match divisor {
        None => one,
        Some(d) => match parse(d) {
            Some(0) => one,
            Some(n) if n > 0 => n,
            _ => return Err(format!("divisor {d} is not a quantity of at least zero")),
        },
    };
    Ok(((value + divisor - 1) / divisor).to_string())
}

/// The node's CPUs (in millicores) or memory (bytes).
fn node_capacity(name: &str) -> Result<i64, String> {
    if name == "cpu" {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return Ok(n as i64 * 1000);
    }
    let info =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "/proc/meminfo has no MemTotal".to_string())
}

/// `key="value"` lines, sorted by key, without a trailing newline (the kubelet's format).
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A double-quoted string with Go's `%q` escapes (printable Unicode is kept as is).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubectl_pod() -> api::Pod {
        let v: serde_json::Value =
            serde_yaml_ng::from_str(include_str!("../../tests/fixtures/kubectl-run-pod.yaml"))
                .unwrap();
        crate::podmanager::decode_pod(&v).unwrap()
    }

    #[test]
    fn the_kube_api_access_volume() {
        let pod = kubectl_pod();
        let src = pod.spec.volumes[0].projected.clone().unwrap();
        let mut objects = super::super::PodObjects::default();
        let e = projected("default/t", "v", &src, &pod, &objects).unwrap_err();
        assert!(e.to_string().contains("no service-account token"), "{e}");
        objects
            .tokens
            .insert((String::new(), 3607), "eyJ.a.b".into());
        let e = projected("default/t", "v", &src, &pod, &objects).unwrap_err();
        assert!(e.is_missing_object(), "{e}");
        assert!(e.to_string().contains("kube-root-ca.crt"), "{e}");
        let mut cm = api::ConfigMap::default();
        cm.data.insert("ca.crt".into(), "PEM".into());
        cm.data.insert("other".into(), "x".into());
        objects.config_maps.insert("kube-root-ca.crt".into(), cm);
        let p = projected("default/t", "v", &src, &pod, &objects).unwrap();
        let files: Vec<(&str, &[u8], u32)> = p
            .iter()
            .map(|(k, f)| (k.as_str(), f.data.as_slice(), f.mode))
            .collect();
        assert_eq!(
            files,
            vec![
                ("ca.crt", &b"PEM"[..], 0o644),
                ("namespace", &b"default"[..], 0o644),
                ("token", &b"eyJ.a.b"[..], 0o644),
            ]
        );
    }

    #[test]
    fn projected_sources_modes_conflicts_and_unsupported() {
        let pod = kubectl_pod();
        let mut objects = super::super::PodObjects::default();
        let mut sec = api::Secret::default();
        sec.string_data.insert("pw".into(), "hunter2".into());
        objects.secrets.insert("s".into(), sec);
        let mut cm = api::ConfigMap::default();
        cm.data.insert("a".into(), "1".into());
        objects.config_maps.insert("c".into(), cm);
        let v: api::ProjectedVolume = serde_json::from_value(serde_json::json!({
            "defaultMode": 0o440,
            "sources": [
                {"configMap": {"name": "c"}},
                {"secret": {"name": "s", "items": [{"key": "pw", "path": "sec/pw", "mode": 0o400}]}},
                {"configMap": {"name": "absent", "optional": true}},
                {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
            ]}))
        .unwrap();
        let p = projected("default/t", "v", &v, &pod, &objects).unwrap();
        assert_eq!(p["a"].mode, 0o440);
        assert_eq!(
            (p["sec/pw"].data.as_slice(), p["sec/pw"].mode),
            (&b"hunter2"[..], 0o400)
        );
        assert_eq!(p["labels"].data, b"run=\"t\"");
        // Two sources writing one path.
        let dup: api::ProjectedVolume = serde_json::from_value(serde_json::json!({"sources": [
            {"configMap": {"name": "c"}},
            {"downwardAPI": {"items": [{"path": "a", "fieldRef": {"fieldPath": "metadata.name"}}]}}
        ]}))
        .unwrap();
        let e = projected("default/t", "v", &dup, &pod, &objects).unwrap_err();
        assert!(
            e.to_string().contains("sources[1]") && e.to_string().contains("`a`"),
            "{e}"
        );
        for (src, name) in [
            (
                serde_json::json!({"clusterTrustBundle": {"name": "b", "path": "b.pem"}}),
                "clusterTrustBundle",
            ),
            (
                serde_json::json!({"podCertificate": {"signerName": "x/y", "keyType": "ED25519"}}),
                "podCertificate",
            ),
        ] {
            let v: api::ProjectedVolume = serde_json::from_value(
                serde_json::json!({"sources": [{"configMap": {"name": "c"}}, src]}),
            )
            .unwrap();
            let e = projected("default/t", "v", &v, &pod, &objects)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(name) && e.contains("sources[1]") && e.contains("volume `v`"),
                "{e}"
            );
        }
        let short: api::ProjectedVolume = serde_json::from_value(serde_json::json!({"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 60}}]}))
        .unwrap();
        let e = projected("default/t", "v", &short, &pod, &objects).unwrap_err();
        assert!(e.to_string().contains("expirationSeconds 60"), "{e}");
    }

    #[test]
    fn resources_default_to_the_node() {
        let mut pod = api::Pod::default();
        pod.spec.containers.push(api::Container {
            name: "c".into(),
            ..Default::default()
        });
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(
            resource_value(&pod, "c", "limits.cpu", None).unwrap(),
            cpus.to_string()
        );
        let mem: i64 = resource_value(&pod, "c", "limits.memory", None)
            .unwrap()
            .parse()
            .unwrap();
        assert!(mem > 1 << 20, "{mem}");
        assert_eq!(
            resource_value(&pod, "c", "requests.cpu", None).unwrap(),
            "0"
        );
        assert!(resource_value(&pod, "x", "limits.cpu", None).is_err());
        assert!(resource_value(&pod, "c", "limits.gpu", None).is_err());
        let zero = serde_json::json!("0");
        // kube-apiserver defaults divisor to "0": one unit.
        assert_eq!(
            resource_value(&pod, "c", "limits.cpu", Some(&zero)).unwrap(),
            resource_value(&pod, "c", "limits.cpu", None).unwrap()
        );
        assert!(resource_value(&pod, "c", "limits.cpu", Some(&serde_json::json!("-1"))).is_err());
    }

    #[test]
    fn labels_format() {
        let mut m = BTreeMap::new();
        m.insert("zone".to_string(), "a \"b\"\n".to_string());
        m.insert("app".to_string(), "web".to_string());
        assert_eq!(format_map(&m), "app=\"web\"\nzone=\"a \\\"b\\\"\\n\"");
        assert_eq!(format_map(&BTreeMap::new()), "");
    }

    #[test]
    fn items_and_conflicts() {
        let mut data = BTreeMap::new();
        data.insert("k".to_string(), b"v".to_vec());
        let item = |key: &str, path: &str| KeyToPath {
            key: key.into(),
            path: path.into(),
            mode: None,
        };
        let p = project(
            "ns/p",
            "v",
            "ConfigMap `c`",
            data.clone(),
            &[item("k", "x/y")],
            Some(0o600),
            false,
        )
        .unwrap();
        assert_eq!(p["x/y"].mode, 0o600);
        let e = project(
            "ns/p",
            "v",
            "ConfigMap `c`",
            data.clone(),
            &[item("nope", "x")],
            None,
            false,
        )
        .unwrap_err();
        assert!(matches!(e, VolumeError::MissingKey { .. }), "{e}");
        assert!(project(
            "ns/p",
            "v",
            "c",
            data.clone(),
            &[item("nope", "x")],
            None,
            true
        )
        .unwrap()
        .is_empty());
        let e = project(
            "ns/p",
            "v",
            "c",
            data.clone(),
            &[item("k", "a"), item("k", "a/b")],
            None,
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot be a directory"), "{e}");
        let e = project("ns/p", "v", "c", data, &[item("k", "../x")], None, false).unwrap_err();
        assert!(
            e.to_string().contains("ns/p") && e.to_string().contains("../x"),
            "{e}"
        );
    }
}
