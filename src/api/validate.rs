//! Name checks as the API server makes them (DNS-1123), and the one rule for every field of a
//! pod that becomes a path on the host ([`pod_paths`]).

/// A DNS-1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric. Namespaces,
/// container and volume names.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("`{s}` must be 1-63 characters"));
    }
    check_label(s)
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated labels. Pod, ConfigMap and
/// Secret names.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("`{s}` must be 1-253 characters"));
    }
    for part in s.split('.') {
        check_label(part).map_err(|_| {
            format!(
                "`{s}` must be lower-case alphanumeric, '-' or '.', and start and end alphanumeric"
            )
        })?;
    }
    Ok(())
}

fn check_label(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` must be lower-case alphanumeric or '-', and start and end alphanumeric"
        ))
    }
}

/// A uid: it names directories (`<pods>/<uid>`, `<ns>_<name>_<uid>`), so it must be one safe
/// path component: 1-128 of `[A-Za-z0-9-_.]`, not `.` or `..` (Kubernetes uids are UUIDs).
pub fn uid(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid uid: 1-128 of letters, digits, '-', '_' or '.', not `.` or `..`"
        ))
    }
}

/// A hostPath path: set, and without a `..` component (the API server's rule; the volume
/// manager also wants it absolute).
pub fn host_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("required".into());
    }
    if s.split('/').any(|c| c == "..") {
        return Err(format!("`{s}` must not contain '..'"));
    }
    Ok(())
}

/// Every field of a pod that becomes a path on the host, checked with one rule wherever a pod
/// enters (manifest files, cloud messages, store reads): the namespace (a DNS-1123 label), the
/// name (a DNS-1123 subdomain), the uid ([`uid`]; an empty one is left to the caller, which
/// either completes or refuses it), container and volume names (DNS-1123 labels), hostPath
/// paths ([`host_path`]). `Err((field, reason))`.
pub fn pod_paths(pod: &crate::api::Pod) -> Result<(), (String, String)> {
    let meta = &pod.metadata;
    let ns = if meta.namespace.is_empty() {
        "default"
    } else {
        meta.namespace.as_str()
    };
    dns1123_label(ns).map_err(|e| ("metadata.namespace".to_string(), e))?;
    dns1123_subdomain(&meta.name).map_err(|e| ("metadata.name".to_string(), e))?;
    if !meta.uid.is_empty() {
        uid(&meta.uid).map_err(|e| ("metadata.uid".to_string(), e))?;
    }
    let spec = &pod.spec;
    let lists = [
        ("spec.initContainers", &spec.init_containers),
        ("spec.containers", &spec.containers),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            dns1123_label(&c.name).map_err(|e| (format!("{list}[{i}].name"), e))?;
        }
    }
    for (i, c) in spec.ephemeral_containers.iter().enumerate() {
        dns1123_label(&c.container.name)
            .map_err(|e| (format!("spec.ephemeralContainers[{i}].name"), e))?;
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        dns1123_label(&v.name).map_err(|e| (format!("spec.volumes[{i}].name"), e))?;
        if let Some(hp) = &v.host_path {
            host_path(&hp.path).map_err(|e| (format!("spec.volumes[{i}].hostPath.path"), e))?;
        }
    }
    Ok(())
}

/// What the API server refuses in an ephemeral container, as its validation words it.
const NOT_FOR_EPHEMERAL: &str = "cannot be set for an Ephemeral Container";

/// The API server's rules for `spec.ephemeralContainers`: a name no other container of the pod
/// has; a `targetContainerName` naming a container or init container; none of the fields an
/// ephemeral container may not have (`ports`, `resources`, the probes, `lifecycle`, and a
/// volume mount's `subPath` or `subPathExpr`). `Err((field, reason))` names the first wrong
/// field.
pub fn ephemeral_containers(pod: &crate::api::Pod) -> Result<(), (String, String)> {
    let spec = &pod.spec;
    let others: Vec<&str> = spec
        .containers
        .iter()
        .chain(&spec.init_containers)
        .map(|c| c.name.as_str())
        .collect();
    let mut seen: Vec<&str> = others.clone();
    for (i, ec) in spec.ephemeral_containers.iter().enumerate() {
        let at = format!("spec.ephemeralContainers[{i}]");
        let c = &ec.container;
        if seen.contains(&c.name.as_str()) {
            return Err((
                format!("{at}.name"),
                format!(
                    "duplicate container name `{}`: it must differ from every container, init container and ephemeral container of the pod",
                    c.name
                ),
            ));
        }
        seen.push(&c.name);
        if c.image.trim().is_empty() {
            return Err((format!("{at}.image"), "required".into()));
        }
        if let Some(t) = ec
            .target_container_name
            .as_deref()
            .filter(|t| !t.is_empty())
        {
            if !others.contains(&t) {
                return Err((
                    format!("{at}.targetContainerName"),
                    format!("no container or init container `{t}` in the pod"),
                ));
            }
        }
        let forbidden = [
            ("ports", !c.ports.is_empty()),
            ("resources", c.resources != Default::default()),
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
            ("lifecycle", c.lifecycle.is_some()),
        ];
        if let Some((field, _)) = forbidden.iter().find(|(_, set)| *set) {
            return Err((format!("{at}.{field}"), NOT_FOR_EPHEMERAL.into()));
        }
        for (j, m) in c.volume_mounts.iter().enumerate() {
            let sub = [("subPath", &m.sub_path), ("subPathExpr", &m.sub_path_expr)];
            if let Some((field, _)) = sub
                .iter()
                .find(|(_, v)| v.as_deref().is_some_and(|v| !v.is_empty()))
            {
                return Err((
                    format!("{at}.volumeMounts[{j}].{field}"),
                    NOT_FOR_EPHEMERAL.into(),
                ));
            }
        }
    }
    Ok(())
}

/// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253, not `.` or `..`.
pub fn config_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key `{s}` must consist of alphanumerics, '-', '_' or '.'"
        ))
    }
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name at
/// most 63 of `[-._a-zA-Z0-9]`, starting and ending alphanumeric.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        dns1123_subdomain(p).map_err(|e| format!("key `{s}`: prefix {e}"))?;
    }
    if name.is_empty() || name.len() > 63 || !label_chars(name) {
        return Err(format!(
            "key `{s}`: the name part must be 1-63 of alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 of `[-._a-zA-Z0-9]`, starting and ending alphanumeric.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || (s.len() <= 63 && label_chars(s)) {
        Ok(())
    } else {
        Err(format!(
            "value `{s}` must be at most 63 of alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

fn label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_label("web-1").is_ok());
        assert!(dns1123_label("Web").is_err());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("a.b-c.d").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(config_key("app.conf").is_ok());
        assert!(config_key("../x").is_err());
        assert!(qualified_name("app").is_ok());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("Bad Key").is_err());
        assert!(qualified_name("UPPER.io/x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("my app").is_err());
        assert!(uid("0b6f3c1e-2f4a-4c55-9d1e-6a7b8c9d0e1f").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "x/../../victim",
            "a b",
            "a\0",
            &"a".repeat(129),
        ] {
            assert!(uid(bad).is_err(), "{bad:?}");
        }
        assert!(host_path("/var/lib/x").is_ok());
        assert!(host_path("/var/..data").is_ok());
        assert!(host_path("/var/../etc")
            .unwrap_err()
            .contains("must not contain '..'"));
        assert!(host_path("/var/..").is_err());
        assert!(host_path("").is_err());
    }

    /// A pod with one ephemeral container `dbg` whose fields are `ec` (beside name and image).
    fn with_ephemeral(ec: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({"name": "dbg", "image": "busybox"});
        for (k, v) in ec.as_object().unwrap() {
            c[k] = v.clone();
        }
        serde_json::json!({"metadata": {"name": "web", "uid": "u-1"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}],
                     "initContainers": [{"name": "setup", "image": "busybox"}],
                     "ephemeralContainers": [c]}})
    }

    #[test]
    fn ephemeral_containers_decode_with_their_target() {
        let v = with_ephemeral(serde_json::json!({
            "targetContainerName": "app", "stdin": true, "tty": true,
            "command": ["sh"], "env": [{"name": "A", "value": "1"}],
            "securityContext": {"privileged": true},
            "volumeMounts": [{"name": "v", "mountPath": "/v"}],
            "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}));
        let pod = crate::api::decode_pod(&v).unwrap();
        let ec = &pod.spec.ephemeral_containers[0];
        assert_eq!(ec.target_container_name.as_deref(), Some("app"));
        assert_eq!(ec.container.name, "dbg");
        assert_eq!(ec.container.command, ["sh"]);
        assert!(ec.container.stdin && ec.container.tty);
        assert_eq!(ec.container.env[0].name, "A");
        // It writes back as it came (flat, the target beside the container's fields).
        let back = serde_json::to_value(ec).unwrap();
        assert_eq!(back["targetContainerName"], "app");
        assert_eq!(back["name"], "dbg");
        // A wrong type is named by its path.
        let bad = with_ephemeral(serde_json::json!({"stdin": "yes"}));
        let e = crate::api::decode_pod(&bad).unwrap_err();
        assert!(e.to_string().contains("Pod default/web"), "{e}");
        assert!(e.field.starts_with("spec.ephemeralContainers[0]"), "{e}");
        // Without any, the spec writes none (container hashes and stored pods unchanged).
        let plain = crate::api::PodSpec::default();
        assert!(serde_json::to_value(&plain)
            .unwrap()
            .get("ephemeralContainers")
            .is_none());
    }

    #[test]
    fn forbidden_ephemeral_fields_are_refused_by_name() {
        let probe = serde_json::json!({"exec": {"command": ["true"]}});
        let cases = [
            (
                serde_json::json!({"ports": [{"containerPort": 80}]}),
                "spec.ephemeralContainers[0].ports",
            ),
            (
                serde_json::json!({"resources": {"limits": {"cpu": "1"}}}),
                "spec.ephemeralContainers[0].resources",
            ),
            (
                serde_json::json!({"resources": {"requests": {"memory": "1Mi"}}}),
                "spec.ephemeralContainers[0].resources",
            ),
            (
                serde_json::json!({"livenessProbe": probe}),
                "spec.ephemeralContainers[0].livenessProbe",
            ),
            (
                serde_json::json!({"readinessProbe": probe}),
                "spec.ephemeralContainers[0].readinessProbe",
            ),
            (
                serde_json::json!({"startupProbe": probe}),
                "spec.ephemeralContainers[0].startupProbe",
            ),
            (
                serde_json::json!({"lifecycle": {"preStop": probe}}),
                "spec.ephemeralContainers[0].lifecycle",
            ),
            (
                serde_json::json!({"volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "x"}]}),
                "spec.ephemeralContainers[0].volumeMounts[0].subPath",
            ),
            (
                serde_json::json!({"volumeMounts": [{"name": "v", "mountPath": "/v", "subPathExpr": "$(A)"}]}),
                "spec.ephemeralContainers[0].volumeMounts[0].subPathExpr",
            ),
        ];
        for (fields, field) in cases {
            let e = crate::api::decode_pod(&with_ephemeral(fields.clone())).unwrap_err();
            assert_eq!(e.field, field, "{fields}");
            assert_eq!(e.reason, "cannot be set for an Ephemeral Container");
            assert!(e.to_string().contains(field), "{e}");
        }
        // Empty ones are no setting (the API server compares with the zero value).
        let empty = serde_json::json!({"ports": [], "resources": {}});
        assert!(crate::api::decode_pod(&with_ephemeral(empty)).is_ok());
    }

    #[test]
    fn ephemeral_names_and_targets() {
        let field = |ec: serde_json::Value| {
            let e = crate::api::decode_pod(&with_ephemeral(ec)).unwrap_err();
            (e.field, e.reason)
        };
        let (f, why) = field(serde_json::json!({"name": "app"}));
        assert_eq!(f, "spec.ephemeralContainers[0].name");
        assert!(why.contains("duplicate container name `app`"), "{why}");
        assert_eq!(
            field(serde_json::json!({"name": "setup"})).0,
            "spec.ephemeralContainers[0].name"
        );
        assert_eq!(
            field(serde_json::json!({"name": "../x"})).0,
            "spec.ephemeralContainers[0].name"
        );
        assert_eq!(
            field(serde_json::json!({"image": " "})).0,
            "spec.ephemeralContainers[0].image"
        );
        let (f, why) = field(serde_json::json!({"targetContainerName": "nope"}));
        assert_eq!(f, "spec.ephemeralContainers[0].targetContainerName");
        assert!(why.contains("`nope`"), "{why}");
        // Two ephemeral containers of one name.
        let mut v = with_ephemeral(serde_json::json!({}));
        let again = v["spec"]["ephemeralContainers"][0].clone();
        v["spec"]["ephemeralContainers"]
            .as_array_mut()
            .unwrap()
            .push(again);
        let e = crate::api::decode_pod(&v).unwrap_err();
        assert_eq!(e.field, "spec.ephemeralContainers[1].name");
        // An init container is a valid target.
        let ok = with_ephemeral(serde_json::json!({"targetContainerName": "setup"}));
        assert!(crate::api::decode_pod(&ok).is_ok());
    }

    #[test]
    fn pod_path_fields() {
        use crate::api::{Container, HostPathVolume, Pod, Volume};
        let mut pod = Pod::default();
        pod.metadata.name = "web".into();
        pod.metadata.uid = "u-1".into();
        pod.spec.containers.push(Container {
            name: "app".into(),
            ..Default::default()
        });
        assert!(pod_paths(&pod).is_ok());
        let field = |f: &dyn Fn(&mut Pod)| {
            let mut p = pod.clone();
            f(&mut p);
            pod_paths(&p).unwrap_err().0
        };
        assert_eq!(
            field(&|p| p.metadata.uid = "x/../../victim".into()),
            "metadata.uid"
        );
        assert_eq!(
            field(&|p| p.metadata.namespace = "../x".into()),
            "metadata.namespace"
        );
        assert_eq!(field(&|p| p.metadata.name = "a/b".into()), "metadata.name");
        assert_eq!(
            field(&|p| p.spec.containers[0].name = "..".into()),
            "spec.containers[0].name"
        );
        assert_eq!(
            field(&|p| p.spec.volumes.push(Volume {
                name: "v/..".into(),
                ..Default::default()
            })),
            "spec.volumes[0].name"
        );
        assert_eq!(
            field(&|p| p.spec.volumes.push(Volume {
                name: "v".into(),
                host_path: Some(HostPathVolume {
                    path: "/data/../etc".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            "spec.volumes[0].hostPath.path"
        );
    }
}
