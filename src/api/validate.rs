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
    for (i, v) in spec.volumes.iter().enumerate() {
        dns1123_label(&v.name).map_err(|e| (format!("spec.volumes[{i}].name"), e))?;
        if let Some(hp) = &v.host_path {
            host_path(&hp.path).map_err(|e| (format!("spec.volumes[{i}].hostPath.path"), e))?;
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
