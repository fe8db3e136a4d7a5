//! kuberuntime: turns a Pod into what the runtime interface takes (the kubelet's
//! `kuberuntime`): the sandbox config, and for each container its config with env resolved,
//! `$(VAR)` expanded, security contexts merged and the labels a relist needs.

pub mod apparmor;
pub mod dns;
pub mod env;
pub mod hash;
pub mod hosts;
pub mod instances;
pub mod lifecycle;
pub mod logs;
pub mod subpath_expr;
pub mod svcenv;
pub mod sysctl;
pub mod termination;

use crate::api::{self, Container, Pod};
use crate::network::{Bandwidth, Capabilities, PortMapping};
use crate::runtime::{
    labels, ContainerConfig, ContainerStatus, Mount, PodSandboxConfig, Resources, Sandbox, Security,
};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A container whose config cannot be made (kubelet's CreateContainerConfigError).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// `Pod ns/name container c`.
    pub object: String,
    /// The field path, such as `env[0].valueFrom.configMapKeyRef`.
    pub field: String,
    /// Why the config cannot be made.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: field `{}`: {}",
            self.object, self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

/// What a pod's configs are made from beside the pod itself.
pub struct PodContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The node's name (`spec.nodeName` for the downward API).
    pub node_name: &'a str,
    /// The node's IP (`status.hostIP` for the downward API).
    pub host_ip: &'a str,
    /// The pod's first IP (`status.podIP`; None: host network or none yet).
    pub pod_ip: Option<&'a str>,
    /// Every IP of the pod, IPv4 first (`status.podIPs`).
    pub pod_ips: &'a [String],
    /// The pod's ConfigMaps known locally, by name (for env and volumes).
    pub config_maps: &'a BTreeMap<String, api::ConfigMap>,
    /// The pod's Secrets known locally, by name.
    pub secrets: &'a BTreeMap<String, api::Secret>,
    /// The cluster's Services as last known (every namespace): the service environment
    /// variables are made of them ([`svcenv`]); empty without a cloud.
    pub services: &'a [api::Service],
    /// `--pod-log-dir`.
    pub log_dir: &'a Path,
    /// `--seccomp-profile-root`: where Localhost seccomp profiles are.
    pub seccomp_root: &'a Path,
}

/// The labels naming the pod, on its sandbox and every container.
fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    [
        (labels::POD_UID, &pod.metadata.uid),
        (labels::POD_NAME, &pod.metadata.name),
        (labels::POD_NAMESPACE, &pod.metadata.namespace),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

/// The node's DNS settings a pod's resolv.conf is made from.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsSettings {
    /// `--cluster-dns`, `--cluster-domain`.
    pub cluster: dns::ClusterDns,
    /// `--resolv-conf`: the node's resolv.conf.
    pub resolv_conf: PathBuf,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            cluster: dns::ClusterDns {
                servers: Vec::new(),
                domain: "cluster.local".into(),
            },
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// Set once ClusterFirst fell back to Default: the warning is given once.
static DNS_FALLBACK_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The sandbox config of a pod; refused (naming the pod and field) when its hostname cannot
/// be made.
pub fn sandbox_config(
    pod: &Pod,
    dns_settings: &DnsSettings,
) -> Result<PodSandboxConfig, ConfigError> {
    let fail = |field: &str, reason: String| ConfigError {
        object: format!("Pod {}/{}", pod.metadata.namespace, pod.metadata.name),
        field: field.into(),
        reason,
    };
    let (name, domain) = hosts::name_and_domain(pod, &dns_settings.cluster.domain)
        .map_err(|r| fail("spec.hostname", r))?;
    let kernel_name = hosts::kernel_hostname(
        &name,
        &domain,
        pod.spec.set_hostname_as_fqdn.unwrap_or(false),
    )
    .map_err(|r| fail("spec.setHostnameAsFQDN", r))?;
    let hosts = if pod.spec.host_network {
        let node = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        hosts::host_network(&node, &pod.spec.host_aliases)
    } else {
        // Loopback until the pod network gives the pod an IP (the runtime puts it here).
        hosts::managed(
            crate::runtime::LOOPBACK_NAME_IP,
            &name,
            &domain,
            &pod.spec.host_aliases,
        )
    };
    let host_resolv = std::fs::read_to_string(&dns_settings.resolv_conf).unwrap_or_else(|e| {
        tracing::warn!(file = %dns_settings.resolv_conf.display(), error = %e, "--resolv-conf not read: pods get no host DNS");
        String::new()
    });
    let (pod_dns, fell_back) = dns::pod_dns(pod, &dns_settings.cluster, &host_resolv);
    if fell_back && !DNS_FALLBACK_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            pod = %format!("{}/{}", pod.metadata.namespace, pod.metadata.name),
            "dnsPolicy ClusterFirst but no --cluster-dns: pods get the node's DNS (dnsPolicy Default), as the kubelet does"
        );
    }
    let l = pod_labels(pod);
    Ok(PodSandboxConfig {
        uid: pod.metadata.uid.clone(),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        hostname: kernel_name,
        host_network: pod.spec.host_network,
        host_pid: pod.spec.host_pid,
        host_ipc: pod.spec.host_ipc,
        share_process_namespace: pod.spec.share_process_namespace.unwrap_or(false),
        hosts,
        resolv_conf: dns::render(&pod_dns),
        labels: l,
        network: network_capabilities(pod, pod_dns),
    })
}

/// What CNI plugins get of a pod: its containers' hostPorts, the bandwidth annotations and
/// its DNS.
pub fn network_capabilities(pod: &Pod, pod_dns: crate::network::Dns) -> Capabilities {
    let mut port_mappings = Vec::new();
    for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
        for p in &c.ports {
            let (Some(host), Ok(container)) = (
                p.host_port
                    .and_then(|h| u16::try_from(h).ok())
                    .filter(|h| *h > 0),
                u16::try_from(p.container_port),
            ) else {
                continue;
            };
            port_mappings.push(PortMapping {
                host_port: host,
                container_port: container,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                host_ip: String::new(),
            });
        }
    }
    let rate = |key: &str| -> Option<u64> {
        let v = pod.metadata.annotations.get(key)?;
        let r = crate::api::quantity::bytes(&serde_json::Value::String(v.clone()));
        if r.is_none() {
            tracing::warn!(annotation = key, value = %v, "not a quantity: no traffic shaping");
        }
        r.and_then(|r| u64::try_from(r).ok())
    };
    let bw = Bandwidth {
        ingress: rate("kubernetes.io/ingress-bandwidth"),
        egress: rate("kubernetes.io/egress-bandwidth"),
    };
    Capabilities {
        port_mappings,
        bandwidth: (bw != Bandwidth::default()).then_some(bw),
        dns: Some(pod_dns),
    }
}

/// Where an instance's CRI log goes: `<dir>/<ns>_<pod>_<uid>/<container>/<attempt>.log`,
/// refused when a part would not be one plain path component under `dir`.
pub fn log_path(
    dir: &Path,
    pod: &Pod,
    container: &str,
    attempt: u32,
) -> Result<PathBuf, crate::paths::PathError> {
    crate::paths::under(
        dir,
        &[&pod_log_dir_name(pod), container, &format!("{attempt}.log")],
    )
}

/// The pod's log directory: `<dir>/<ns>_<pod>_<uid>` (see [`pod_log_dir_name`]).
pub fn pod_log_dir(dir: &Path, pod: &Pod) -> PathBuf {
    dir.join(pod_log_dir_name(pod))
}

/// The name of the pod's log directory under `--pod-log-dir`: `<ns>_<pod>_<uid>`, as the
/// kubelet names it. The kubelet does not shorten it, so a pod whose name makes it longer than
/// a file name may be (255 bytes) cannot log there; edged shortens the pod name part instead,
/// keeping a prefix and 8 hex digits of a hash of the whole name (stable, and still ending in
/// `_<uid>` for housekeeping). Identifiers are checked where pods enter, so this is one
/// plain path component.
pub fn pod_log_dir_name(pod: &Pod) -> String {
    let (ns, name, uid) = (
        &pod.metadata.namespace,
        &pod.metadata.name,
        &pod.metadata.uid,
    );
    let full = format!("{ns}_{name}_{uid}");
    if full.len() <= crate::paths::NAME_MAX {
        return full;
    }
    let hash = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let tag: String = hash.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // ns (<= 63) + uid (<= 128) + 2 separators + '-' + 8: the name keeps at least 53 bytes.
    let room = crate::paths::NAME_MAX.saturating_sub(ns.len() + uid.len() + 2 + 1 + 8);
    let mut cut = name.len().min(room);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let keep = &name[..cut];
    format!("{ns}_{keep}-{tag}_{uid}")
}

/// The label naming the sandbox (by its creation time) a container was made in.
pub const SANDBOX_LABEL: &str = "io.edged.sandbox.created";

/// The value of [`SANDBOX_LABEL`] for containers made in `sandbox`.
pub fn sandbox_stamp(sandbox: &Sandbox) -> String {
    sandbox
        .created_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default()
}

/// Whether a container was made in `sandbox` (and not in an earlier one of the same pod,
/// before a reboot). Containers without the label count as made in it.
pub fn in_sandbox(c: &ContainerStatus, sandbox: &Sandbox) -> bool {
    c.labels
        .get(SANDBOX_LABEL)
        .is_none_or(|s| *s == sandbox_stamp(sandbox))
}

/// A hash of the container's spec: an update that changes it restarts the container
/// ([`hash`]: unset fields left out, so a new optional field changes no hash).
pub fn container_hash(c: &Container) -> String {
    hash::hash(c)
}

/// Whether a container's hash label says it was made from `c` (either hash version).
pub fn hash_matches(label: &str, c: &Container) -> bool {
    hash::matches(label, c)
}

/// The kubelet's `verifyRunAsNonRoot`: with `runAsNonRoot` in effect (the container's, else
/// the pod's), a container whose user would be root is refused before it is made. With no
/// `runAsUser` the image's user decides (`image_user`, the image config's `User`: empty is
/// root, a name cannot be checked). The error text is the kubelet's.
pub fn verify_run_as_non_root(pod: &Pod, c: &Container, image_user: &str) -> Result<(), String> {
    let psc = pod.spec.security_context.as_ref();
    let csc = c.security_context.as_ref();
    let non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root));
    if non_root != Some(true) {
        return Ok(());
    }
    let who = format!(
        "pod: \"{}_{}({})\", container: {}",
        pod.metadata.name, pod.metadata.namespace, pod.metadata.uid, c.name
    );
    match csc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user))
    {
        Some(0) => {
            return Err(format!(
                "container's runAsUser breaks non-root policy ({who})"
            ))
        }
        Some(_) => return Ok(()),
        None => {}
    }
    let user = image_user.split(':').next().unwrap_or_default();
    match user.parse::<u32>() {
        _ if user.is_empty() => Err(format!(
            "container has runAsNonRoot and image will run as root ({who})"
        )),
        Ok(0) => Err(format!(
            "container has runAsNonRoot and image will run as root ({who})"
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root ({who})"
        )),
    }
}

/// The config of one container instance.
pub fn container_config(
    ctx: &PodContext<'_>,
    container: &Container,
    attempt: u32,
    mounts: Vec<Mount>,
) -> Result<ContainerConfig, ConfigError> {
    let pod = ctx.pod;
    let env = env::resolve(ctx, container)?;
    let command = container
        .command
        .iter()
        .map(|s| env::expand(s, &env))
        .collect();
    let args = container
        .args
        .iter()
        .map(|s| env::expand(s, &env))
        .collect();
    let mut l = pod_labels(pod);
    l.insert(labels::CONTAINER_NAME.to_string(), container.name.clone());
    l.insert(
        labels::CONTAINER_HASH.to_string(),
        container_hash(container),
    );
    l.insert(labels::RESTART_COUNT.to_string(), attempt.to_string());
    Ok(ContainerConfig {
        name: container.name.clone(),
        attempt,
        image: container.image.clone(),
        command,
        args,
        working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
        env,
        mounts,
        log_path: log_path(ctx.log_dir, pod, &container.name, attempt).map_err(|e| {
            ConfigError {
                object: format!(
                    "Pod {}/{} container {}",
                    pod.metadata.namespace, pod.metadata.name, container.name
                ),
                field: "metadata".into(),
                reason: format!("no log path: {e}"),
            }
        })?,
        resources: resources(container),
        security: security(pod, container, ctx)?,
        labels: l,
        stdin: container.stdin,
        stdin_once: container.stdin && container.stdin_once,
        tty: container.tty,
        pid_target: None,
    })
}

fn resources(c: &Container) -> Resources {
    let q = |m: &BTreeMap<String, serde_json::Value>,
             k: &str,
             f: fn(&serde_json::Value) -> Option<i64>| m.get(k).and_then(f);
    Resources {
        cpu_limit_millis: q(&c.resources.limits, "cpu", api::quantity::millicores),
        cpu_request_millis: q(&c.resources.requests, "cpu", api::quantity::millicores)
            .or_else(|| q(&c.resources.limits, "cpu", api::quantity::millicores)),
        memory_limit_bytes: q(&c.resources.limits, "memory", api::quantity::bytes),
    }
}

/// The seccomp profile of a container: its own `seccompProfile`, else the pod's, else
/// Unconfined (the kubelet's default). A Localhost profile is a relative path under `root`
/// without `..`.
pub fn seccomp(
    pod: Option<&api::SeccompProfile>,
    container: Option<&api::SeccompProfile>,
    root: &Path,
) -> Result<crate::runtime::seccomp::Seccomp, String> {
    use crate::runtime::seccomp::Seccomp;
    let Some(p) = container.or(pod) else {
        return Ok(Seccomp::Unconfined);
    };
    match p.kind.as_str() {
        "Unconfined" => Ok(Seccomp::Unconfined),
        "RuntimeDefault" => Ok(Seccomp::RuntimeDefault),
        "Localhost" => {
            let rel = p
                .localhost_profile
                .as_deref()
                .filter(|r| !r.is_empty())
                .ok_or(
                    "type Localhost needs localhostProfile (a file under --seccomp-profile-root)",
                )?;
            if rel.starts_with('/') || rel.split('/').any(|s| s == "..") {
                return Err(format!(
                    "localhostProfile `{rel}` must be a relative path under \
                     --seccomp-profile-root, without `..`"
                ));
            }
            Ok(Seccomp::Localhost(root.join(rel)))
        }
        other => Err(format!(
            "type `{other}` is not one of RuntimeDefault, Unconfined, Localhost"
        )),
    }
}

/// `supplementalGroupsPolicy`: whether it is `Strict` (unset: `Merge`).
pub fn supplemental_groups_strict(policy: Option<&str>) -> Result<bool, String> {
    match policy.unwrap_or("") {
        "" | "Merge" => Ok(false),
        "Strict" => Ok(true),
        other => Err(format!("`{other}` is not one of Merge, Strict")),
    }
}

fn security(pod: &Pod, c: &Container, ctx: &PodContext<'_>) -> Result<Security, ConfigError> {
    let psc = pod.spec.security_context.clone().unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let object = format!(
        "Pod {}/{} container {}",
        pod.metadata.namespace, pod.metadata.name, c.name
    );
    let id = |v: Option<i64>, field: &str| -> Result<Option<u32>, ConfigError> {
        match v {
            None => Ok(None),
            Some(n) if (0..=u32::MAX as i64).contains(&n) => Ok(Some(n as u32)),
            Some(n) => Err(ConfigError {
                object: object.clone(),
                field: field.into(),
                reason: format!("{n} is not a valid id"),
            }),
        }
    };
    let _ = ctx;
    let run_as_user = id(
        csc.run_as_user.or(psc.run_as_user),
        "securityContext.runAsUser",
    )?;
    let run_as_group = id(
        csc.run_as_group.or(psc.run_as_group),
        "securityContext.runAsGroup",
    )?;
    if csc.run_as_non_root.or(psc.run_as_non_root) == Some(true) && run_as_user == Some(0) {
        return Err(ConfigError {
            object,
            field: "securityContext.runAsNonRoot".into(),
            reason: "runAsNonRoot is set but runAsUser is 0".into(),
        });
    }
    let mut groups = Vec::new();
    for g in psc.supplemental_groups.iter().chain(psc.fs_group.iter()) {
        if let Some(g) = id(Some(*g), "securityContext.supplementalGroups")? {
            groups.push(g);
        }
    }
    let supplemental_groups_strict = supplemental_groups_strict(
        psc.supplemental_groups_policy.as_deref(),
    )
    .map_err(|reason| ConfigError {
        object: object.clone(),
        field: "spec.securityContext.supplementalGroupsPolicy".into(),
        reason,
    })?;
    let caps = csc.capabilities.unwrap_or_default();
    Ok(Security {
        run_as_user,
        run_as_group,
        supplemental_groups: groups,
        supplemental_groups_strict,
        sysctls: sysctl::of_pod(pod),
        seccomp: seccomp(
            psc.seccomp_profile.as_ref(),
            csc.seccomp_profile.as_ref(),
            ctx.seccomp_root,
        )
        .map_err(|reason| ConfigError {
            object: object.clone(),
            field: "securityContext.seccompProfile".into(),
            reason,
        })?,
        apparmor: apparmor::of_container(pod, c, crate::runtime::apparmor::default_applies()),
        privileged: csc.privileged.unwrap_or(false),
        read_only_rootfs: csc.read_only_root_filesystem.unwrap_or(false),
        capabilities_add: caps.add,
        capabilities_drop: caps.drop,
        no_new_privileges: csc.allow_privilege_escalation == Some(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `verifyRunAsNonRoot`'s cases: who asks (pod or container), runAsUser, the image user.
    #[test]
    fn run_as_non_root_is_checked_against_the_image_user() {
        use serde_json::json;
        let pod_with = |psc: serde_json::Value, csc: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                "spec": {"securityContext": psc,
                         "containers": [{"name": "c", "image": "i", "securityContext": csc}]}
            }))
            .expect("test pod")
        };
        let root = "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)";
        for (psc, csc, image_user, want) in [
            (json!({}), json!({}), "", Ok(())),
            (json!({"runAsNonRoot": false}), json!({}), "0", Ok(())),
            (json!({"runAsNonRoot": true}), json!({}), "", Err(root.to_string())),
            (json!({"runAsNonRoot": true}), json!({}), "0:0", Err(root.to_string())),
            (json!({"runAsNonRoot": true}), json!({}), "1000", Ok(())),
            (json!({"runAsNonRoot": true}), json!({}), "1000:1000", Ok(())),
            (json!({}), json!({"runAsNonRoot": true}), "", Err(root.to_string())),
            // The container's own setting wins over the pod's.
            (json!({"runAsNonRoot": true}), json!({"runAsNonRoot": false}), "", Ok(())),
            // An explicit runAsUser decides, not the image.
            (json!({"runAsNonRoot": true, "runAsUser": 1000}), json!({}), "", Ok(())),
            (json!({"runAsNonRoot": true}), json!({"runAsUser": 0}), "1000", Err(
                "container's runAsUser breaks non-root policy (pod: \"p_ns(u)\", container: c)".to_string())),
            (json!({"runAsNonRoot": true}), json!({}), "nobody", Err(
                "container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: \"p_ns(u)\", container: c)".to_string())),
        ] {
            let pod = pod_with(psc.clone(), csc.clone());
            let c = &pod.spec.containers[0];
            assert_eq!(
                verify_run_as_non_root(&pod, c, image_user),
                want,
                "{psc} {csc} {image_user:?}"
            );
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "w"}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "command": ["sh", "-c", "echo $(GREETING) $$(NOT)"],
                "env": [{"name": "GREETING", "value": "hi"}],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                "securityContext": {"runAsUser": 1000, "capabilities": {"drop": ["ALL"]}}}],
                "securityContext": {"runAsGroup": 100, "supplementalGroups": [5]},
                "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]}}
        }))
        .unwrap()
    }

    #[test]
    fn config_from_pod() {
        let p = pod();
        let (cms, secrets) = (BTreeMap::new(), BTreeMap::new());
        let ctx = PodContext {
            pod: &p,
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
        let c = container_config(&ctx, &p.spec.containers[0], 2, vec![]).unwrap();
        assert_eq!(c.command, vec!["sh", "-c", "echo hi $(NOT)"]);
        assert_eq!(c.resources.cpu_limit_millis, Some(500));
        assert_eq!(c.resources.memory_limit_bytes, Some(64 << 20));
        assert_eq!(c.security.run_as_user, Some(1000));
        assert_eq!(c.security.run_as_group, Some(100));
        assert_eq!(c.security.supplemental_groups, vec![5]);
        assert_eq!(c.security.capabilities_drop, vec!["ALL"]);
        assert_eq!(
            c.log_path,
            PathBuf::from("/var/log/pods/default_web_u1/c/2.log")
        );
        assert_eq!(c.labels[labels::RESTART_COUNT], "2");
    }

    #[test]
    fn seccomp_profiles() {
        use crate::runtime::seccomp::Seccomp;
        let p = |kind: &str, local: Option<&str>| api::SeccompProfile {
            kind: kind.into(),
            localhost_profile: local.map(Into::into),
        };
        let root = Path::new("/var/lib/edged/seccomp");
        let rd = p("RuntimeDefault", None);
        let un = p("Unconfined", None);
        let lh = p("Localhost", Some("profiles/audit.json"));
        // (pod, container) -> profile
        let table = [
            (None, None, Ok(Seccomp::Unconfined)),
            (Some(&rd), None, Ok(Seccomp::RuntimeDefault)),
            (Some(&rd), Some(&un), Ok(Seccomp::Unconfined)),
            (
                None,
                Some(&lh),
                Ok(Seccomp::Localhost(root.join("profiles/audit.json"))),
            ),
        ];
        for (pod, c, want) in table {
            assert_eq!(seccomp(pod, c, root), want, "{pod:?} {c:?}");
        }
        for (bad, says) in [
            (p("Localhost", None), "needs localhostProfile"),
            (p("Localhost", Some("../etc/x.json")), "without `..`"),
            (p("Localhost", Some("/etc/x.json")), "relative path"),
            (p("Strict", None), "`Strict` is not one of"),
        ] {
            let e = seccomp(None, Some(&bad), root).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn supplemental_groups_policy() {
        assert_eq!(supplemental_groups_strict(None), Ok(false));
        assert_eq!(supplemental_groups_strict(Some("Merge")), Ok(false));
        assert_eq!(supplemental_groups_strict(Some("Strict")), Ok(true));
        let mut p = pod();
        p.spec
            .security_context
            .as_mut()
            .unwrap()
            .supplemental_groups_policy = Some("Loose".into());
        p.spec.security_context.as_mut().unwrap().fs_group = Some(7);
        let (cms, secrets) = (BTreeMap::new(), BTreeMap::new());
        let ctx = PodContext {
            pod: &p,
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
        let e = container_config(&ctx, &p.spec.containers[0], 0, vec![]).unwrap_err();
        assert_eq!(e.field, "spec.securityContext.supplementalGroupsPolicy");
        assert!(
            e.to_string().starts_with("Pod default/web container c:")
                && e.reason.contains("`Loose`"),
            "{e}"
        );
        p.spec
            .security_context
            .as_mut()
            .unwrap()
            .supplemental_groups_policy = Some("Strict".into());
        let ctx = PodContext {
            pod: &p,
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
        let c = container_config(&ctx, &p.spec.containers[0], 0, vec![]).unwrap();
        assert!(c.security.supplemental_groups_strict);
        assert_eq!(c.security.supplemental_groups, vec![5, 7]);
    }

    #[test]
    fn sandbox_and_dns() {
        let p = pod();
        let d = tempfile::tempdir().unwrap();
        let resolv = d.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 8.8.8.8\nsearch lan\n").unwrap();
        let settings = DnsSettings {
            resolv_conf: resolv,
            ..Default::default()
        };
        let s = sandbox_config(&p, &settings).unwrap();
        assert_eq!(s.hostname, "web");
        assert!(s.hosts.contains("127.0.1.1\tweb\n"), "{}", s.hosts);
        assert_eq!(
            s.resolv_conf,
            "search lan\nnameserver 8.8.8.8\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
        assert_eq!(
            crate::runtime::hosts_with_ip(&s.hosts, "10.22.0.5"),
            s.hosts.replace("127.0.1.1\tweb", "10.22.0.5\tweb")
        );
    }

    #[test]
    fn host_ports_and_bandwidth_reach_the_plugins() {
        use crate::api::ContainerPort;
        let mut p = pod();
        p.spec.containers[0].ports = vec![
            ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..Default::default()
            },
            ContainerPort {
                container_port: 53,
                host_port: Some(5353),
                protocol: Some("UDP".into()),
                ..Default::default()
            },
            ContainerPort {
                container_port: 81,
                host_port: None,
                ..Default::default()
            },
            ContainerPort {
                container_port: 82,
                host_port: Some(70000),
                ..Default::default()
            },
        ];
        p.metadata
            .annotations
            .insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
        p.metadata
            .annotations
            .insert("kubernetes.io/egress-bandwidth".into(), "lots".into());
        let c = network_capabilities(&p, Default::default());
        let ports: Vec<(u16, u16, &str)> = c
            .port_mappings
            .iter()
            .map(|m| (m.host_port, m.container_port, m.protocol.as_str()))
            .collect();
        assert_eq!(ports, [(8080, 80, "tcp"), (5353, 53, "udp")]);
        assert_eq!(
            c.bandwidth,
            Some(Bandwidth {
                ingress: Some(10_000_000),
                egress: None
            })
        );
        assert_eq!(
            network_capabilities(&pod(), Default::default()).bandwidth,
            None
        );
    }

    #[test]
    fn long_pod_names_keep_the_log_dir_one_file_name() {
        let mut pod = Pod::default();
        pod.metadata.namespace = "default".into();
        pod.metadata.name = "web".into();
        pod.metadata.uid = "u1".into();
        assert_eq!(pod_log_dir_name(&pod), "default_web_u1");
        assert_eq!(
            log_path(Path::new("/logs"), &pod, "app", 2).unwrap(),
            PathBuf::from("/logs/default_web_u1/app/2.log")
        );
        // Checked where pods enter; the path itself still refuses to climb out.
        assert!(log_path(Path::new("/logs"), &pod, "..", 0).is_err());
        let mut evil = pod.clone();
        evil.metadata.uid = "x/../../victim".into();
        assert!(log_path(Path::new("/logs"), &evil, "app", 0).is_err());
        // A valid 253-character name in a 63-character namespace with a 36-character uid.
        let label = "a".repeat(63);
        pod.metadata.name = [label.as_str(); 4].join(".")[..253].to_string();
        pod.metadata.namespace = "n".repeat(63);
        pod.metadata.uid = "0b6f3c1e-2f4a-4c55-9d1e-6a7b8c9d0e1f".into();
        let a = pod_log_dir_name(&pod);
        assert!(a.len() <= 255, "{}", a.len());
        assert!(
            a.starts_with(&format!("{}_aaaa", pod.metadata.namespace)),
            "{a}"
        );
        assert!(a.ends_with("_0b6f3c1e-2f4a-4c55-9d1e-6a7b8c9d0e1f"), "{a}");
        // Stable, and two names alike in their first bytes do not share a directory.
        assert_eq!(pod_log_dir_name(&pod), a);
        pod.metadata.name.replace_range(252.., "b");
        assert_ne!(pod_log_dir_name(&pod), a);
    }

    #[test]
    fn containers_belong_to_the_sandbox_they_were_made_in() {
        use crate::runtime::ContainerState;
        use std::time::{Duration, UNIX_EPOCH};
        let sandbox = |secs: u64| Sandbox {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web".into(),
            netns: None,
            ip: None,
            ips: Vec::new(),
            ready: true,
            created_at: UNIX_EPOCH + Duration::from_secs(secs),
        };
        let (old, new) = (sandbox(100), sandbox(200));
        let mut c = ContainerStatus {
            id: "c1".into(),
            pod_uid: "u1".into(),
            name: "init".into(),
            attempt: 0,
            image: String::new(),
            image_id: String::new(),
            state: ContainerState::Exited,
            pid: None,
            created_at: UNIX_EPOCH,
            started_at: None,
            finished_at: None,
            exit_code: Some(0),
            reason: None,
            message: None,
            log_path: PathBuf::new(),
            labels: Default::default(),
        };
        // Made by an agent that did not label: counts as made in any sandbox.
        assert!(in_sandbox(&c, &new));
        c.labels
            .insert(SANDBOX_LABEL.to_string(), sandbox_stamp(&old));
        assert!(in_sandbox(&c, &old));
        assert!(!in_sandbox(&c, &new));
    }

    #[test]
    fn hash_follows_spec() {
        let p = pod();
        let mut c = p.spec.containers[0].clone();
        let h = container_hash(&c);
        assert_eq!(h, container_hash(&c.clone()));
        c.image = "busybox:2".into();
        assert_ne!(h, container_hash(&c));
    }
}
