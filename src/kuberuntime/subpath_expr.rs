//! `subPathExpr`: a volume mount's subPath with `$(VAR)` references to the container's env,
//! expanded as the kubelet's `ExpandContainerVolumeMounts` does: a reference to a variable the
//! container does not have, or has empty, is an error naming it (the container is not made);
//! `$$` is a literal `$`. The result is then an ordinary subPath, checked and mounted as one.

use super::{env, ConfigError, PodContext};
use crate::api::Container;
use std::collections::BTreeSet;

/// Expands `expr` from `env`; the missing (or empty) variables, sorted, when any.
pub fn expand(expr: &str, env: &[(String, String)]) -> Result<String, Vec<String>> {
    let mut missing = BTreeSet::new();
    let out = env::expand_with(expr, |name| {
        let v = env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if v.is_empty() {
            missing.insert(name.to_string());
        }
        Some(v)
    });
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing.into_iter().collect())
    }
}

/// `c` with every `subPathExpr` expanded into its `subPath` (unchanged when it has none).
/// Errors name the pod, the container and the mount.
pub fn resolve(ctx: &PodContext<'_>, c: &Container) -> Result<Container, ConfigError> {
    if c.volume_mounts
        .iter()
        .all(|m| m.sub_path_expr.as_deref().unwrap_or("").is_empty())
    {
        return Ok(c.clone());
    }
    let pod = ctx.pod;
    let object = format!(
        "Pod {}/{} container {}",
        pod.metadata.namespace, pod.metadata.name, c.name
    );
    let vars = env::resolve(ctx, c)?;
    let mut out = c.clone();
    for (i, m) in out.volume_mounts.iter_mut().enumerate() {
        let Some(expr) = m.sub_path_expr.take().filter(|e| !e.is_empty()) else {
            continue;
        };
        let fail = |reason: String| ConfigError {
            object: object.clone(),
            field: format!("volumeMounts[{i}].subPathExpr"),
            reason,
        };
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(fail(format!(
                "volume `{}`: subPath and subPathExpr are mutually exclusive; give one",
                m.name
            )));
        }
        let sub = expand(&expr, &vars).map_err(|missing| {
            fail(format!(
                "volume `{}`: `{expr}` refers to {} the container's env does not set \
                 (or sets empty)",
                m.name,
                missing
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if sub.starts_with('/') {
            return Err(fail(format!(
                "volume `{}`: `{expr}` expands to the absolute path `{sub}`; it must be \
                 relative to the volume",
                m.name
            )));
        }
        m.sub_path = Some(sub);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn vars() -> Vec<(String, String)> {
        [("POD_NAME", "web-0"), ("NS", "default"), ("EMPTY", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_as_the_kubelet_does_it() {
        let table: [(&str, Result<&str, &[&str]>); 7] = [
            ("$(POD_NAME)", Ok("web-0")),
            ("logs/$(NS)/$(POD_NAME)", Ok("logs/default/web-0")),
            ("plain", Ok("plain")),
            ("$$(POD_NAME)", Ok("$(POD_NAME)")),
            ("$(NOPE)/$(POD_NAME)", Err(&["NOPE"])),
            ("$(EMPTY)", Err(&["EMPTY"])),
            ("$(Z)$(A)", Err(&["A", "Z"])),
        ];
        for (expr, want) in table {
            let got = expand(expr, &vars());
            match want {
                Ok(w) => assert_eq!(got.as_deref(), Ok(w), "{expr}"),
                Err(m) => assert_eq!(got.unwrap_err(), m, "{expr}"),
            }
        }
    }

    fn pod(mounts: serde_json::Value) -> crate::api::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": mounts}]}
        }))
        .unwrap()
    }

    fn run(p: &crate::api::Pod) -> Result<Container, ConfigError> {
        let (cms, secrets) = (BTreeMap::new(), BTreeMap::new());
        let ctx = PodContext {
            pod: p,
            node_name: "n1",
            host_ip: "10.0.0.2",
            pod_ip: None,
            pod_ips: &[],
            config_maps: &cms,
            secrets: &secrets,
            services: &[],
            log_dir: Path::new("/var/log/pods"),
            seccomp_root: Path::new("/var/lib/edged/seccomp"),
        };
        resolve(&ctx, &p.spec.containers[0])
    }

    #[test]
    fn mounts_get_their_sub_path_and_errors_name_the_field() {
        let p = pod(serde_json::json!([
            {"name": "v", "mountPath": "/a", "subPathExpr": "logs/$(POD_NAME)"},
            {"name": "v", "mountPath": "/b", "subPath": "kept"}]));
        let c = run(&p).unwrap();
        assert_eq!(c.volume_mounts[0].sub_path.as_deref(), Some("logs/web"));
        assert_eq!(c.volume_mounts[0].sub_path_expr, None);
        assert_eq!(c.volume_mounts[1].sub_path.as_deref(), Some("kept"));

        let cases = [
            (
                serde_json::json!([{"name": "v", "mountPath": "/a", "subPathExpr": "$(NOPE)"}]),
                "`NOPE`",
            ),
            (
                serde_json::json!([{"name": "v", "mountPath": "/a", "subPath": "x",
                                    "subPathExpr": "$(POD_NAME)"}]),
                "mutually exclusive",
            ),
            (
                serde_json::json!([{"name": "v", "mountPath": "/a", "subPathExpr": "/$(POD_NAME)"}]),
                "absolute",
            ),
        ];
        for (mounts, says) in cases {
            let e = run(&pod(mounts)).unwrap_err();
            assert_eq!(e.field, "volumeMounts[0].subPathExpr");
            let text = e.to_string();
            assert!(
                text.starts_with("Pod default/web container c:") && text.contains(says),
                "{text}"
            );
        }
    }
}
