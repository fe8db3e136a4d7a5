//! Container environment: `env` (with `valueFrom`) and `envFrom`, resolved as the kubelet does,
//! the service environment variables ([`super::svcenv`]), and `$(VAR)` expansion.

use super::{ConfigError, PodContext};
use crate::api::{self, Container};

/// The container's environment, in order: `envFrom` sources first, then `env` entries (a later
/// entry overrides an earlier one of the same name, keeping its first position), then the
/// service variables no entry set (the kubelet's `makeEnvironmentVariables`: explicit
/// variables win, and `$(VAR)` in an `env` value sees them first, then the service ones).
pub fn resolve(ctx: &PodContext<'_>, c: &Container) -> Result<Vec<(String, String)>, ConfigError> {
    let pod = ctx.pod;
    let service_env = super::svcenv::pod_service_env(
        ctx.services,
        &pod.metadata.namespace,
        pod.spec.enable_service_links.unwrap_or(true),
    );
    let object = format!(
        "Pod {}/{} container {}",
        pod.metadata.namespace, pod.metadata.name, c.name
    );
    let fail = |field: String, reason: String| ConfigError {
        object: object.clone(),
        field,
        reason,
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for (i, from) in c.env_from.iter().enumerate() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match ctx.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in &cm.data {
                        if valid_env_name(&format!("{prefix}{k}")) {
                            set(&mut out, format!("{prefix}{k}"), v.clone());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(fail(
                        format!("envFrom[{i}].configMapRef"),
                        format!("configmap \"{}\" not found", r.name),
                    ))
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            match ctx.secrets.get(&r.name) {
                Some(s) => {
                    let values = secret_values(s).map_err(|e| {
                        fail(
                            format!("envFrom[{i}].secretRef"),
                            format!("secret \"{}\": {e}", r.name),
                        )
                    })?;
                    for (k, v) in values {
                        if valid_env_name(&format!("{prefix}{k}")) {
                            set(&mut out, format!("{prefix}{k}"), v);
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(fail(
                        format!("envFrom[{i}].secretRef"),
                        format!("secret \"{}\" not found", r.name),
                    ))
                }
            }
        }
    }
    for (i, e) in c.env.iter().enumerate() {
        let field = format!("env[{i}]");
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    match ctx.config_maps.get(&r.name).map(|cm| cm.data.get(&r.key)) {
                        Some(Some(v)) => Some(v.clone()),
                        Some(None) if r.optional == Some(true) => None,
                        None if r.optional == Some(true) => None,
                        Some(None) => {
                            return Err(fail(
                                format!("{field}.valueFrom.configMapKeyRef"),
                                format!("key \"{}\" not found in configmap \"{}\"", r.key, r.name),
                            ))
                        }
                        None => {
                            return Err(fail(
                                format!("{field}.valueFrom.configMapKeyRef"),
                                format!("configmap \"{}\" not found", r.name),
                            ))
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let v = match ctx.secrets.get(&r.name).map(secret_values) {
                        Some(Err(e)) => {
                            return Err(fail(
                                format!("{field}.valueFrom.secretKeyRef"),
                                format!("secret \"{}\": {e}", r.name),
                            ))
                        }
                        Some(Ok(values)) => Some(values.into_iter().find(|(k, _)| *k == r.key)),
                        None => None,
                    };
                    match v {
                        Some(Some((_, v))) => Some(v),
                        Some(None) | None if r.optional == Some(true) => None,
                        Some(None) => {
                            return Err(fail(
                                format!("{field}.valueFrom.secretKeyRef"),
                                format!("key \"{}\" not found in secret \"{}\"", r.key, r.name),
                            ))
                        }
                        None => {
                            return Err(fail(
                                format!("{field}.valueFrom.secretKeyRef"),
                                format!("secret \"{}\" not found", r.name),
                            ))
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    Some(field_value(ctx, &f.field_path).ok_or_else(|| {
                        fail(
                            format!("{field}.valueFrom.fieldRef.fieldPath"),
                            format!("`{}` is not a supported field path", f.field_path),
                        )
                    })?)
                } else if let Some(r) = &from.resource_field_ref {
                    // The container named, else this one.
                    let target = r
                        .container_name
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(&c.name);
                    Some(
                        crate::volume::payload::resource_value(
                            ctx.pod,
                            target,
                            &r.resource,
                            r.divisor.as_ref(),
                        )
                        .map_err(|e| fail(format!("{field}.valueFrom.resourceFieldRef"), e))?,
                    )
                } else {
                    return Err(fail(format!("{field}.valueFrom"), "names no source".into()));
                }
            }
            (Some(v), None) => Some(expand_with(v, |name| {
                lookup(&out, name).or_else(|| lookup(&service_env, name))
            })),
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            set(&mut out, e.name.clone(), v);
        }
    }
    for (k, v) in service_env {
        if lookup(&out, &k).is_none() {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// The value of `name` in `env` (the last entry of that name).
fn lookup(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// A Secret's values as text (env values are strings; bad base64 names the key).
pub fn secret_values(s: &api::Secret) -> Result<Vec<(String, String)>, String> {
    Ok(s.values()?
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect())
}

/// The downward API value of a field path, as the kubelet resolves it.
pub fn field_value(ctx: &PodContext<'_>, path: &str) -> Option<String> {
    let m = &ctx.pod.metadata;
    let sub = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
    };
    Some(match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => ctx.node_name.to_string(),
        "spec.serviceAccountName" => ctx.pod.spec.service_account_name().to_string(),
        "status.hostIP" => ctx.host_ip.to_string(),
        "status.podIP" => ctx.pod_ip.unwrap_or("").to_string(),
        // As the kubelet: every IP, comma-separated (the one IP when there is no list).
        "status.podIPs" if !ctx.pod_ips.is_empty() => ctx.pod_ips.join(","),
        "status.podIPs" => ctx.pod_ip.unwrap_or("").to_string(),
        _ => {
            if let Some(k) = sub("metadata.labels") {
                m.labels.get(k).cloned().unwrap_or_default()
            } else if let Some(k) = sub("metadata.annotations") {
                m.annotations.get(k).cloned().unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// Expands `$(VAR)` from `env` as Kubernetes does: unknown references stay as written, `$$`
/// is a literal `$`.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    expand_with(s, |name| lookup(env, name))
}

/// Expands `$(VAR)` with `lookup` (`None`: the reference stays as written), `$$` a literal `$`.
pub fn expand_with(s: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    #[test]
    fn expansion() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "1-$(B)-$(A)-$");
        assert_eq!(expand("x$(A", &env), "x$(A");
    }

    #[test]
    fn value_from_sources() {
        let pod: api::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "i",
              "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
              "env": [
                {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "X", "value": "$(K)!"},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}}
              ],
              "resources": {"limits": {"memory": "64Mi"}}}]}
        }))
        .unwrap();
        let mut cms = BTreeMap::new();
        cms.insert(
            "cm".to_string(),
            serde_json::from_value(serde_json::json!({"data": {"k": "v", "1bad": "x"}})).unwrap(),
        );
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "sec".to_string(),
            serde_json::from_value(serde_json::json!({"data": {"pw": "c2VjcmV0"}})).unwrap(),
        );
        let ctx = PodContext {
            pod: &pod,
            node_name: "n1",
            host_ip: "",
            pod_ip: None,
            pod_ips: &[],
            config_maps: &cms,
            secrets: &secrets,
            services: &[],
            log_dir: Path::new("/l"),
            seccomp_root: Path::new("/s"),
        };
        let env = resolve(&ctx, &pod.spec.containers[0]).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CM_k"), Some("v"));
        assert_eq!(get("CM_1bad"), Some("x"));
        assert_eq!(get("K"), Some("v"));
        assert_eq!(get("S"), Some("secret"));
        assert_eq!(get("NS"), Some("ns"));
        assert_eq!(get("APP"), Some("a"));
        assert_eq!(get("NODE"), Some("n1"));
        assert_eq!(get("MEM"), Some("64"));
        assert_eq!(get("X"), Some("v!"));
        assert_eq!(get("OPT"), None);

        let cms = BTreeMap::new();
        let ctx = PodContext {
            config_maps: &cms,
            ..ctx
        };
        let e = resolve(&ctx, &pod.spec.containers[0]).unwrap_err();
        assert_eq!(e.field, "envFrom[0].configMapRef");
        assert!(e.to_string().contains("Pod ns/p container c"), "{e}");
    }

    /// The kubelet's `makeEnvironmentVariables`: explicit variables win over service ones of
    /// the same name, `$(VAR)` sees explicit then service variables, command-line expansion
    /// sees them all, and `enableServiceLinks: false` leaves the master service only.
    #[test]
    fn service_variables_beside_explicit_ones() {
        let services: Vec<api::Service> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "kubernetes", "namespace": "default"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}},
            {"metadata": {"name": "my-svc", "namespace": "ns"},
             "spec": {"clusterIP": "10.0.0.11", "ports": [{"name": "http", "port": 8080}]}}
        ]))
        .unwrap();
        let pod = |links: Option<bool>| -> api::Pod {
            let mut p: api::Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                "spec": {"containers": [{"name": "c", "image": "i",
                  "command": ["echo", "$(MY_SVC_SERVICE_PORT)"],
                  "env": [
                    {"name": "URL", "value": "http://$(MY_SVC_SERVICE_HOST):$(PORT)"},
                    {"name": "PORT", "value": "1"},
                    {"name": "MY_SVC_SERVICE_HOST", "value": "mine"},
                    {"name": "AFTER", "value": "$(MY_SVC_SERVICE_HOST)"}
                  ]}]}
            }))
            .unwrap();
            p.spec.enable_service_links = links;
            p
        };
        let (cms, secrets) = (BTreeMap::new(), BTreeMap::new());
        for links in [None, Some(true), Some(false)] {
            let pod = pod(links);
            let ctx = PodContext {
                pod: &pod,
                node_name: "n",
                host_ip: "",
                pod_ip: None,
                pod_ips: &[],
                config_maps: &cms,
                secrets: &secrets,
                services: &services,
                log_dir: Path::new("/l"),
                seccomp_root: Path::new("/s"),
            };
            let env = resolve(&ctx, &pod.spec.containers[0]).unwrap();
            let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "a name twice: {names:?}");
            assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
            assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
            // The explicit variable wins, whatever the links say.
            assert_eq!(get("MY_SVC_SERVICE_HOST"), Some("mine"));
            assert_eq!(get("AFTER"), Some("mine"));
            if links == Some(false) {
                assert_eq!(get("MY_SVC_SERVICE_PORT"), None, "{env:?}");
                // Not defined yet when URL was made: the reference stays as written.
                assert_eq!(get("URL"), Some("http://$(MY_SVC_SERVICE_HOST):$(PORT)"));
            } else {
                assert_eq!(get("MY_SVC_SERVICE_PORT"), Some("8080"));
                assert_eq!(get("MY_SVC_SERVICE_PORT_HTTP"), Some("8080"));
                // Explicit variables defined so far first (PORT is not yet), then the service.
                assert_eq!(get("URL"), Some("http://10.0.0.11:$(PORT)"));
                let cfg = super::super::container_config(&ctx, &pod.spec.containers[0], 0, vec![])
                    .unwrap();
                assert_eq!(cfg.command, ["echo", "8080"]);
            }
        }
    }

    #[test]
    fn pod_ips_as_the_kubelet_gives_them() {
        let pod: api::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}}
            ]}]}
        }))
        .unwrap();
        let (cms, secrets) = (BTreeMap::new(), BTreeMap::new());
        let ips = ["10.1.0.5".to_string(), "fd00::5".to_string()];
        for (ip, ips, want_ip, want_ips) in [
            (Some("10.1.0.5"), &ips[..], "10.1.0.5", "10.1.0.5,fd00::5"),
            (Some("192.168.1.2"), &[][..], "192.168.1.2", "192.168.1.2"),
            (None, &[][..], "", ""),
        ] {
            let ctx = PodContext {
                pod: &pod,
                node_name: "n",
                host_ip: "",
                pod_ip: ip,
                pod_ips: ips,
                config_maps: &cms,
                secrets: &secrets,
                services: &[],
                log_dir: Path::new("/l"),
                seccomp_root: Path::new("/s"),
            };
            let env = resolve(&ctx, &pod.spec.containers[0]).unwrap();
            let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert_eq!(get("IP").as_deref(), Some(want_ip));
            assert_eq!(get("IPS").as_deref(), Some(want_ips));
        }
    }
}
