//! The AppArmor profile a pod asks for, read as the kubelet reads it: a container's
//! `securityContext.appArmorProfile`, else the pod's, else the deprecated annotation
//! `container.apparmor.security.beta.kubernetes.io/<container>`; nothing asked gives the
//! runtime default where the host applies one (as containerd), else none.

use crate::api::{AppArmorProfile, Container, Pod};
use crate::runtime::apparmor::AppArmor;

/// The deprecated per-container annotation's prefix.
pub const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

fn from_field(p: &AppArmorProfile) -> Result<AppArmor, String> {
    match p.kind.as_str() {
        "Unconfined" => Ok(AppArmor::Unconfined),
        "RuntimeDefault" => Ok(AppArmor::RuntimeDefault),
        "Localhost" => match p.localhost_profile.as_deref().filter(|s| !s.is_empty()) {
            Some(name) => Ok(AppArmor::Localhost(name.to_string())),
            None => Err("type Localhost needs localhostProfile (a loaded profile's name)".into()),
        },
        other => Err(format!(
            "type `{other}` is not one of RuntimeDefault, Localhost, Unconfined"
        )),
    }
}

fn from_annotation(v: &str) -> Result<AppArmor, String> {
    match v {
        "unconfined" => Ok(AppArmor::Unconfined),
        "runtime/default" => Ok(AppArmor::RuntimeDefault),
        _ => match v.strip_prefix("localhost/").filter(|s| !s.is_empty()) {
            Some(name) => Ok(AppArmor::Localhost(name.to_string())),
            None => Err(format!(
                "`{v}` is not runtime/default, localhost/<profile> or unconfined"
            )),
        },
    }
}

/// What the pod asks for container `c` (`None`: nothing), or what is wrong with it, with the
/// field's path.
pub fn asked(pod: &Pod, c: &Container) -> Result<Option<AppArmor>, (String, String)> {
    let own = c
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref());
    if let Some(p) = own {
        return from_field(p)
            .map(Some)
            .map_err(|e| ("securityContext.appArmorProfile".into(), e));
    }
    let pods = pod
        .spec
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref());
    if let Some(p) = pods {
        return from_field(p)
            .map(Some)
            .map_err(|e| ("spec.securityContext.appArmorProfile".into(), e));
    }
    let key = format!("{ANNOTATION_PREFIX}{}", c.name);
    match pod.metadata.annotations.get(&key) {
        Some(v) => from_annotation(v)
            .map(Some)
            .map_err(|e| (format!("metadata.annotations[{key}]"), e)),
        None => Ok(None),
    }
}

/// Whether the pod needs AppArmor from the host (a profile other than Unconfined asked for
/// any container): the kubelet's `isRequired`.
pub fn required(pod: &Pod) -> bool {
    pod.spec
        .init_containers
        .iter()
        .chain(pod.spec.containers.iter())
        .any(|c| {
            matches!(asked(pod, c), Ok(Some(a)) if a != AppArmor::Unconfined)
                || asked(pod, c).is_err()
        })
}

/// The kubelet's AppArmor admission: `Err(message)` when the pod asks for AppArmor the host
/// cannot give, or names a profile wrongly.
pub fn admit(pod: &Pod, host_enabled: bool) -> Result<(), String> {
    for c in pod
        .spec
        .init_containers
        .iter()
        .chain(pod.spec.containers.iter())
    {
        if let Err((field, e)) = asked(pod, c) {
            return Err(format!("container {}: {field}: {e}", c.name));
        }
    }
    if required(pod) && !host_enabled {
        return Err("AppArmor is not enabled on the host".into());
    }
    Ok(())
}

/// The confinement of container `c`: what it asks, else the runtime default where
/// `default_applies` (never for privileged containers, as containerd).
pub fn of_container(pod: &Pod, c: &Container, default_applies: bool) -> AppArmor {
    let privileged = c
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    match asked(pod, c) {
        Ok(Some(a)) => a,
        _ if default_applies && !privileged => AppArmor::RuntimeDefault,
        _ => AppArmor::Unconfined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn container_over_pod_over_annotation() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "annotations": {
                "container.apparmor.security.beta.kubernetes.io/b": "localhost/k8s-old",
                "container.apparmor.security.beta.kubernetes.io/c": "localhost/k8s-old"}},
            "spec": {"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}},
                "containers": [
                    {"name": "a", "securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-a"}}},
                    {"name": "b"}]}
        }));
        assert_eq!(
            asked(&p, &p.spec.containers[0]),
            Ok(Some(AppArmor::Localhost("k8s-a".into())))
        );
        assert_eq!(
            asked(&p, &p.spec.containers[1]),
            Ok(Some(AppArmor::RuntimeDefault))
        );
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "annotations": {
                "container.apparmor.security.beta.kubernetes.io/b": "localhost/k8s-old"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]}
        }));
        assert_eq!(asked(&p, &p.spec.containers[0]), Ok(None));
        assert_eq!(
            asked(&p, &p.spec.containers[1]),
            Ok(Some(AppArmor::Localhost("k8s-old".into())))
        );
    }

    #[test]
    fn admission_as_the_kubelet() {
        let asks = |sc: serde_json::Value| {
            pod(serde_json::json!({"metadata": {"name": "p"},
                "spec": {"containers": [{"name": "a", "securityContext": sc}]}}))
        };
        let unconfined = asks(serde_json::json!({"appArmorProfile": {"type": "Unconfined"}}));
        let default = asks(serde_json::json!({"appArmorProfile": {"type": "RuntimeDefault"}}));
        let none = asks(serde_json::json!({}));
        let bad = asks(serde_json::json!({"appArmorProfile": {"type": "Localhost"}}));
        // (pod, host has AppArmor, admitted)
        for (p, host, ok) in [
            (&unconfined, false, true),
            (&none, false, true),
            (&default, false, false),
            (&default, true, true),
            (&bad, true, false),
        ] {
            assert_eq!(
                admit(p, host).is_ok(),
                ok,
                "{:?} host {host}",
                p.spec.containers[0]
            );
        }
        assert_eq!(
            admit(&default, false).unwrap_err(),
            "AppArmor is not enabled on the host"
        );
        assert!(admit(&bad, true).unwrap_err().contains("localhostProfile"));
    }

    #[test]
    fn the_default_applies_unasked_but_not_to_privileged_containers() {
        let p = pod(serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b", "securityContext": {"privileged": true}}]}}));
        assert_eq!(
            of_container(&p, &p.spec.containers[0], true),
            AppArmor::RuntimeDefault
        );
        assert_eq!(
            of_container(&p, &p.spec.containers[0], false),
            AppArmor::Unconfined
        );
        assert_eq!(
            of_container(&p, &p.spec.containers[1], true),
            AppArmor::Unconfined
        );
    }
}
