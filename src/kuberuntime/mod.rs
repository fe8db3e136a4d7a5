//! kuberuntime: turns a Pod into what the runtime interface takes (the kubelet's
//! `kuberuntime`): the sandbox config, and for each container its config with env resolved,
//! `$(VAR)` expanded, security contexts merged and the labels a relist needs.

pub mod env;
pub mod hash;
pub mod logs;
pub mod termination;

use crate::api::{self, Container, Pod};
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
    pub field: String,
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
    pub pod: &'a Pod,
    pub node_name: &'a str,
    pub host_ip: &'a str,
    pub pod_ip: Option<&'a str>,
    pub config_maps: &'a BTreeMap<String, api::ConfigMap>,
    pub secrets: &'a BTreeMap<String, api::Secret>,
    /// `--pod-log-dir`.
    pub log_dir: &'a Path,
}

/// The pod's hostname: `spec.hostname`, else its name, cut to 63 characters.
pub fn hostname(pod: &Pod) -> String {
    let h = pod
        .spec
        .hostname
        .clone()
        .unwrap_or_else(|| pod.metadata.name.clone());
    h.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
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

/// The sandbox config of a pod.
pub fn sandbox_config(pod: &Pod) -> PodSandboxConfig {
    let name = hostname(pod);
    let mut hosts = String::from("# Kubernetes-managed hosts file (edged).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if pod.spec.host_network {
        hosts = std::fs::read_to_string("/etc/hosts").unwrap_or(hosts);
    } else {
        // The pod has only loopback until CNI comes: its name resolves there.
        hosts.push_str(&format!("127.0.1.1\t{name}\n"));
    }
    for alias in &pod.spec.host_aliases {
        if !alias.ip.is_empty() && !alias.hostnames.is_empty() {
            hosts.push_str(&format!("{}\t{}\n", alias.ip, alias.hostnames.join("\t")));
        }
    }
    let resolv_conf = resolv_conf(
        pod,
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    );
    let l = pod_labels(pod);
    PodSandboxConfig {
        uid: pod.metadata.uid.clone(),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        hostname: name,
        host_network: pod.spec.host_network,
        host_pid: pod.spec.host_pid,
        host_ipc: pod.spec.host_ipc,
        hosts,
        resolv_conf,
        labels: l,
    }
}

/// The pod's resolv.conf: the node's (there is no cluster DNS on an edge node), with
/// `dnsConfig` merged in; `dnsPolicy: None` uses `dnsConfig` alone.
pub fn resolv_conf(pod: &Pod, host: &str) -> String {
    let mut servers = Vec::new();
    let mut searches = Vec::new();
    let mut options = Vec::new();
    if pod.spec.dns_policy.as_deref() != Some("None") {
        for line in host.lines() {
            let mut f = line.split_whitespace();
            match f.next() {
                Some("nameserver") => servers.extend(f.map(str::to_string)),
                Some("search") => searches.extend(f.map(str::to_string)),
                Some("options") => options.extend(f.map(str::to_string)),
                _ => {}
            }
        }
    }
    if let Some(c) = &pod.spec.dns_config {
        servers.extend(c.nameservers.iter().cloned());
        searches.extend(c.searches.iter().cloned());
        for o in &c.options {
            options.push(match &o.value {
                Some(v) => format!("{}:{}", o.name, v),
                None => o.name.clone(),
            });
        }
    }
    servers.dedup();
    let mut out = String::new();
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
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
    let caps = csc.capabilities.unwrap_or_default();
    Ok(Security {
        run_as_user,
        run_as_group,
        supplemental_groups: groups,
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
            config_maps: &cms,
            secrets: &secrets,
            log_dir: Path::new("/var/log/pods"),
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
    fn sandbox_and_dns() {
        let p = pod();
        let s = sandbox_config(&p);
        assert_eq!(s.hostname, "web");
        assert!(s.hosts.contains("\tweb\n"), "{}", s.hosts);
        let r = resolv_conf(&p, "nameserver 8.8.8.8\nsearch lan\n");
        assert_eq!(
            r,
            "nameserver 8.8.8.8\nnameserver 1.1.1.1\nsearch lan\noptions ndots:2\n"
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
