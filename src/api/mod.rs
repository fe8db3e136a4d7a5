//! The Kubernetes v1 objects edged works with (Pod, ConfigMap, Secret, Service, PodStatus), as
//! kubectl users write them.
//!
//! Only the fields edged acts on are typed; unknown fields are ignored on decode (the store keeps
//! the object as it came, so nothing is lost). Decoding names the object and the field path that
//! is wrong: see [`decode`].

pub mod base64;
pub mod quantity;
pub mod reason;
pub mod restart;
pub mod validate;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The three kinds of object the store holds for pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A `Pod` (resource type `pod`).
    Pod,
    /// A `ConfigMap` (resource type `configmap`).
    ConfigMap,
    /// A `Secret` (resource type `secret`).
    Secret,
}

impl Kind {
    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }

    /// The beehive resource type (`pod`, `configmap`, `secret`).
    pub fn resource_type(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }

    /// Parses a `kind` string.
    pub fn from_kind(s: &str) -> Option<Kind> {
        match s {
            "Pod" => Some(Kind::Pod),
            "ConfigMap" => Some(Kind::ConfigMap),
            "Secret" => Some(Kind::Secret),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field of an object that is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectError {
    /// `Pod default/web`, or what is known of the object.
    pub object: String,
    /// Field path, such as `spec.containers[0].image`.
    pub field: String,
    /// What is wrong with the field (the decoder's or the check's message).
    pub reason: String,
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "{}: {}", self.object, self.reason)
        } else {
            write!(
                f,
                "{}: field `{}`: {}",
                self.object, self.field, self.reason
            )
        }
    }
}

impl std::error::Error for ObjectError {}

/// Decodes a typed view of `value`, naming `object` and the field path on failure. A `null`
/// field reads as an absent one (its zero value), as Go's decoder reads it: Kubernetes clients
/// send `"initContainers": null` and the like.
pub fn decode<T: DeserializeOwned>(
    object: &str,
    value: &serde_json::Value,
) -> Result<T, ObjectError> {
    let stripped;
    let value = if has_null_field(value) {
        stripped = without_null_fields(value.clone());
        &stripped
    } else {
        value
    };
    serde_path_to_error::deserialize(value).map_err(|e| ObjectError {
        object: object.to_string(),
        field: e.path().to_string(),
        reason: e.inner().to_string(),
    })
}

fn has_null_field(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m.values().any(|x| x.is_null() || has_null_field(x)),
        serde_json::Value::Array(a) => a.iter().any(has_null_field),
        _ => false,
    }
}

fn without_null_fields(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k, without_null_fields(x)))
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(without_null_fields).collect())
        }
        other => other,
    }
}

/// Decodes a pod from a message or store row: the namespace defaults to `default`, a uid and
/// a container are required, and every field that becomes a path on the host is checked with
/// [`validate::pod_paths`]. Errors name the pod and the field.
pub fn decode_pod(v: &serde_json::Value) -> Result<Pod, ObjectError> {
    let ns = v
        .pointer("/metadata/namespace")
        .and_then(|x| x.as_str())
        .filter(|x| !x.is_empty())
        .unwrap_or("default");
    let name = v
        .pointer("/metadata/name")
        .and_then(|x| x.as_str())
        .unwrap_or("?");
    let object = format!("Pod {ns}/{name}");
    let mut pod: Pod = decode(&object, v)?;
    if pod.metadata.namespace.is_empty() {
        pod.metadata.namespace = "default".into();
    }
    let fail = |field: &str, reason: String| ObjectError {
        object: object.clone(),
        field: field.into(),
        reason,
    };
    if pod.metadata.uid.is_empty() {
        return Err(fail("metadata.uid", "a pod needs a uid".into()));
    }
    if pod.spec.containers.is_empty() {
        return Err(fail(
            "spec.containers",
            "a pod needs at least one container".into(),
        ));
    }
    validate::pod_paths(&pod).map_err(|(field, reason)| fail(&field, reason))?;
    validate::ephemeral_containers(&pod).map_err(|(field, reason)| fail(&field, reason))?;
    Ok(pod)
}

/// `metadata` of any object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// `metadata.name`: the object's name, unique in its namespace.
    pub name: String,
    /// `metadata.namespace`: the object's namespace (empty on decode: [`decode_pod`] makes it
    /// `default`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `metadata.uid`: the cluster-wide unique id the API server gave the object (empty: not set).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// `metadata.resourceVersion`: the API server's version of the object, opaque (empty: not set).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// `metadata.creationTimestamp`: when the API server created the object, RFC 3339 (None: not
    /// set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// `metadata.deletionTimestamp`: set when the object is being deleted gracefully, RFC 3339
    /// (None: not being deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// `metadata.deletionGracePeriodSeconds`: the grace period of the pending deletion, seconds
    /// (None: not being deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    /// `metadata.labels`: key/value labels (empty: none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`: key/value annotations (empty: none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Pod (typed view).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    /// `metadata`: the pod's name, namespace, uid, labels and annotations.
    pub metadata: ObjectMeta,
    /// `spec`: what the pod should run.
    pub spec: PodSpec,
    /// The status the cloud holds, as it came with the pod: read only for conditions others
    /// own (readiness gates); the node's own status is built by the status manager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

/// `spec` of a pod: its containers, volumes and how they run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// `spec.initContainers`: containers run one after another to completion before the app
    /// containers start (`restartPolicy: Always` ones are sidecars that keep running).
    pub init_containers: Vec<Container>,
    /// `spec.containers`: the app containers (at least one).
    pub containers: Vec<Container>,
    /// Containers added to the running pod for debugging (`kubectl debug`, the API server's
    /// `ephemeralcontainers` subresource): started once each, never restarted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ephemeral_containers: Vec<EphemeralContainer>,
    /// `spec.volumes`: the volumes the containers can mount, by name.
    pub volumes: Vec<Volume>,
    /// `Always` (default), `OnFailure`, `Never`.
    pub restart_policy: Option<String>,
    /// `spec.terminationGracePeriodSeconds`: seconds between the stop signal and the kill (None:
    /// 30, see [`PodSpec::grace_period_seconds`]).
    pub termination_grace_period_seconds: Option<i64>,
    /// `spec.activeDeadlineSeconds`: seconds the pod may run from its start before the node fails
    /// it (None: no deadline).
    pub active_deadline_seconds: Option<i64>,
    /// The pod's priority (set by the API server from its priority class); 0 when unset.
    pub priority: Option<i32>,
    /// `spec.nodeName`: the node the pod is bound to (empty: not scheduled).
    pub node_name: String,
    /// `spec.hostNetwork`: the pod uses the node's network namespace (no pod IP of its own).
    pub host_network: bool,
    /// `spec.hostPID`: the pod uses the node's PID namespace.
    #[serde(rename = "hostPID")]
    pub host_pid: bool,
    /// `spec.hostIPC`: the pod uses the node's IPC namespace.
    #[serde(rename = "hostIPC")]
    pub host_ipc: bool,
    /// `spec.hostname`: the pod's hostname (None: the pod's name).
    pub hostname: Option<String>,
    /// `spec.subdomain`: with `hostname`, makes the pod's FQDN
    /// `<hostname>.<subdomain>.<ns>.svc.<domain>` (None: no FQDN).
    pub subdomain: Option<String>,
    /// `spec.hostnameOverride`: the pod's hostname and FQDN, exactly (a DNS subdomain), over
    /// `hostname` and `subdomain` (which still name it in the cluster's DNS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname_override: Option<String>,
    /// The kernel hostname is the pod's FQDN (`<hostname>.<subdomain>.<ns>.svc.<domain>`).
    #[serde(rename = "setHostnameAsFQDN")]
    pub set_hostname_as_fqdn: Option<bool>,
    /// One PID namespace for all the pod's containers.
    pub share_process_namespace: Option<bool>,
    /// `spec.securityContext`: pod-level security settings (users, groups, sysctls, seccomp) (None:
    /// defaults).
    pub security_context: Option<PodSecurityContext>,
    /// `spec.dnsPolicy`: `ClusterFirst` (the API server's default), `ClusterFirstWithHostNet`,
    /// `Default` or `None`.
    pub dns_policy: Option<String>,
    /// `spec.dnsConfig`: nameservers, searches and options added to (or, with `dnsPolicy: None`,
    /// making) the pod's resolv.conf.
    pub dns_config: Option<PodDnsConfig>,
    /// `spec.hostAliases`: entries added to the pod's /etc/hosts (empty: none).
    pub host_aliases: Vec<HostAlias>,
    /// The pod's service account (the API server defaults it to `default`).
    pub service_account_name: Option<String>,
    /// The deprecated alias of `serviceAccountName`, still written by the API server.
    pub service_account: Option<String>,
    /// `spec.automountServiceAccountToken`: whether the API server's admission adds the token's
    /// projected volume (None: as the service account says); edged mounts the volumes it finds.
    pub automount_service_account_token: Option<bool>,
    /// `os.name`: `linux` or `windows`; a Linux node refuses `windows` pods.
    pub os: Option<PodOs>,
    /// Secrets (in the pod's namespace) holding registry credentials for its images.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// `false` asks for a user namespace, which this node does not make (refused at
    /// admission, never ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_users: Option<bool>,
    /// Conditions that must be `True` in the pod's status (set by others through the API)
    /// before the pod is Ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub readiness_gates: Vec<PodReadinessGate>,
    /// `spec.enableServiceLinks`: whether the services of the pod's namespace become
    /// environment variables of its containers (None: true, the API server's default); the
    /// master service `default/kubernetes` is given either way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
}

/// `spec.readinessGates[]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodReadinessGate {
    /// The pod condition type that must be `True`.
    pub condition_type: String,
}

/// `appArmorProfile` (pod or container security context).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppArmorProfile {
    /// `RuntimeDefault`, `Localhost` or `Unconfined`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The name of a loaded profile (with `Localhost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

/// A reference to an object by name in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalObjectReference {
    /// `name`: the referenced object's name, in the pod's namespace.
    pub name: String,
}

/// `spec.os`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodOs {
    /// `spec.os.name`: `linux` or `windows`.
    pub name: String,
}

impl PodSpec {
    /// The restart policy, `Always` when unset.
    pub fn restart_policy(&self) -> &str {
        self.restart_policy.as_deref().unwrap_or("Always")
    }

    /// `terminationGracePeriodSeconds`, 30 when unset (as the API server defaults it).
    pub fn grace_period_seconds(&self) -> i64 {
        self.termination_grace_period_seconds.unwrap_or(30).max(0)
    }

    /// The service account: `serviceAccountName`, else the deprecated `serviceAccount`, else
    /// `default` (as the API server's ServiceAccount admission sets it).
    pub fn service_account_name(&self) -> &str {
        [&self.service_account_name, &self.service_account]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|s| !s.is_empty())
            .unwrap_or("default")
    }
}

/// `spec.securityContext`: the pod-level security settings, defaults for every container's own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSecurityContext {
    /// `runAsUser`: the UID the containers' processes run as (None: the image's user).
    pub run_as_user: Option<i64>,
    /// `runAsGroup`: the primary GID of the containers' processes (None: the image's).
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`: refuse to start a container whose user would be UID 0 (None: false).
    pub run_as_non_root: Option<bool>,
    /// `supplementalGroups`: GIDs added to every container's first process (empty: none).
    pub supplemental_groups: Vec<i64>,
    /// `fsGroup`: a GID that owns the pod's volumes and is added to every container's groups (None:
    /// no change of ownership).
    pub fs_group: Option<i64>,
    /// `Always` (the default) or `OnRootMismatch`.
    pub fs_group_change_policy: Option<String>,
    /// `Merge` (the default: the groups of the user in the image's /etc/group too) or
    /// `Strict` (only runAsGroup, fsGroup and supplementalGroups).
    pub supplemental_groups_policy: Option<String>,
    /// Namespaced kernel parameters of the pod.
    pub sysctls: Vec<Sysctl>,
    /// The seccomp profile of the pod's containers (each container's own wins).
    pub seccomp_profile: Option<SeccompProfile>,
    /// The AppArmor profile of the pod's containers (each container's own wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_armor_profile: Option<AppArmorProfile>,
}

/// `seccompProfile`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SeccompProfile {
    /// `RuntimeDefault`, `Unconfined` or `Localhost`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The profile file under the seccomp profile root (with `Localhost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

/// One of `securityContext.sysctls`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sysctl {
    /// `name`: the sysctl's name, such as `net.ipv4.ip_local_port_range`.
    pub name: String,
    /// `value`: the value written to it.
    pub value: String,
}

/// `spec.dnsConfig`: DNS settings for the pod's resolv.conf.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodDnsConfig {
    /// `spec.dnsConfig.nameservers`: nameserver IPs (empty: none added).
    pub nameservers: Vec<String>,
    /// `spec.dnsConfig.searches`: search domains (empty: none added).
    pub searches: Vec<String>,
    /// `spec.dnsConfig.options`: resolver options (empty: none added).
    pub options: Vec<PodDnsConfigOption>,
}

/// `spec.dnsConfig.options[]`: one resolver option.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodDnsConfigOption {
    /// `name`: the option's name, such as `ndots`.
    pub name: String,
    /// `value`: the option's value (None: a flag without one).
    pub value: Option<String>,
}

/// `spec.hostAliases[]`: one /etc/hosts entry of the pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostAlias {
    /// `ip`: the address the hostnames resolve to.
    pub ip: String,
    /// `hostnames`: the names given to `ip`.
    pub hostnames: Vec<String>,
}

/// A container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// `name`: the container's name, unique in the pod.
    pub name: String,
    /// `image`: the image reference (`registry/repo:tag` or `@digest`).
    pub image: String,
    /// `command`: the entrypoint, overriding the image's (empty: the image's); `$(VAR)` is
    /// expanded.
    pub command: Vec<String>,
    /// `args`: the entrypoint's arguments, overriding the image's (empty: the image's); `$(VAR)` is
    /// expanded.
    pub args: Vec<String>,
    /// `workingDir`: the process's working directory (None: the image's).
    pub working_dir: Option<String>,
    /// `env`: environment variables set in the container.
    pub env: Vec<EnvVar>,
    /// `envFrom`: ConfigMaps and Secrets whose keys all become environment variables.
    pub env_from: Vec<EnvFromSource>,
    /// `resources`: the container's resource requests and limits.
    pub resources: ResourceRequirements,
    /// `volumeMounts`: the pod volumes mounted into the container.
    pub volume_mounts: Vec<VolumeMount>,
    /// `livenessProbe`: a failing one restarts the container (None: no probe).
    pub liveness_probe: Option<Probe>,
    /// `readinessProbe`: decides whether the container is Ready (None: Ready while running).
    pub readiness_probe: Option<Probe>,
    /// `startupProbe`: holds off the other probes until it succeeds; failing kills the container
    /// (None: no probe).
    pub startup_probe: Option<Probe>,
    /// `lifecycle`: the postStart and preStop hooks (None: none).
    pub lifecycle: Option<Lifecycle>,
    /// `Always`, `IfNotPresent`, `Never`; defaulted as the API server does (see
    /// [`Container::image_pull_policy`]).
    pub image_pull_policy: Option<String>,
    /// `securityContext`: the container's security settings, over the pod's (None: the pod's).
    pub security_context: Option<SecurityContext>,
    /// `ports`: the ports the container listens on (informational, except `hostPort`).
    pub ports: Vec<ContainerPort>,
    /// `terminationMessagePath`: the file in the container whose contents become the termination
    /// message (None: `/dev/termination-log`).
    pub termination_message_path: Option<String>,
    /// `File` (the default) or `FallbackToLogsOnError`. Left out of the JSON when unset, so
    /// the container hash of pods that do not name it is the same as before the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: Option<String>,
    /// `stdin`: keep a stdin open for the container's process (for attach).
    pub stdin: bool,
    /// Close stdin after the first attach session ends. Left out of the JSON when false, so
    /// the container hash of pods that do not set it is the same as before the field.
    #[serde(skip_serializing_if = "is_false")]
    pub stdin_once: bool,
    /// `tty`: give the container's process a terminal.
    pub tty: bool,
    /// The container's own restart policy: on an init container `Always` makes a sidecar;
    /// on an app container it overrides the pod's (ContainerRestartRules). Left out of the
    /// JSON when unset (the container hash stays the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Rules on the exit code that decide a restart before the policy ([`restart`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_policy_rules: Vec<restart::ContainerRestartRule>,
}

/// An ephemeral container: the fields of a [`Container`] (those the API server allows for one:
/// see [`validate::ephemeral_containers`]) and the container whose PID namespace it joins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EphemeralContainer {
    /// The container's own fields, flattened into the ephemeral container's object.
    #[serde(flatten)]
    pub container: Container,
    /// A container of `spec.containers` (or `initContainers`) whose PID namespace this one
    /// joins: it sees that container's processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_container_name: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Container {
    /// The pull policy, defaulted as Kubernetes does: `Always` for `:latest` or untagged
    /// images, else `IfNotPresent`.
    pub fn image_pull_policy(&self) -> &str {
        if let Some(p) = self.image_pull_policy.as_deref() {
            return p;
        }
        let last = self.image.rsplit('/').next().unwrap_or("");
        let tagged = last.contains(':') && !last.ends_with(":latest");
        if tagged || self.image.contains('@') {
            "IfNotPresent"
        } else {
            "Always"
        }
    }
}

/// `ports[]`: a port a container listens on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    /// `name`: the port's name, for probes and Services that name it (None: unnamed).
    pub name: Option<String>,
    /// `containerPort`: the port number in the container's network namespace.
    pub container_port: i32,
    /// `hostPort`: the node port forwarded to this container port (None or 0: none).
    pub host_port: Option<i32>,
    /// `protocol`: `TCP` (the default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
}

/// `env[]`: one environment variable of a container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    /// `name`: the variable's name.
    pub name: String,
    /// `value`: its value, with `$(VAR)` references expanded (None: see `valueFrom`, else empty).
    pub value: Option<String>,
    /// `valueFrom`: where the value comes from instead (a ConfigMap or Secret key, a pod field, a
    /// resource).
    pub value_from: Option<EnvVarSource>,
}

/// `env[].valueFrom`: the source of an environment variable's value (exactly one field set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVarSource {
    /// `configMapKeyRef`: a key of a ConfigMap in the pod's namespace.
    pub config_map_key_ref: Option<KeySelector>,
    /// `secretKeyRef`: a key of a Secret in the pod's namespace.
    pub secret_key_ref: Option<KeySelector>,
    /// `fieldRef`: a field of the pod, such as `metadata.name` or `status.podIP`.
    pub field_ref: Option<FieldSelector>,
    /// `resourceFieldRef`: a container's resource request or limit, such as `limits.memory`.
    pub resource_field_ref: Option<ResourceFieldSelector>,
}

/// `configMapKeyRef` / `secretKeyRef`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeySelector {
    /// `name`: the ConfigMap's or Secret's name, in the pod's namespace.
    pub name: String,
    /// `key`: the key whose value is used.
    pub key: String,
    /// `optional`: a missing object or key is no error (None: false).
    pub optional: Option<bool>,
}

/// `fieldRef`: a pod field selected by path (downward API).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FieldSelector {
    /// `fieldPath`: the field's path, such as `metadata.labels['app']` or `status.podIP`.
    pub field_path: String,
}

/// `resourceFieldRef`: a container's resource request or limit (downward API).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceFieldSelector {
    /// `containerName`: the container whose resources are read (None: the current one; required in
    /// volumes).
    pub container_name: Option<String>,
    /// `resource`: `limits.cpu`, `requests.memory`, `limits.ephemeral-storage` and so on.
    pub resource: String,
    /// `divisor`: the unit the value is divided by, a quantity (None: 1).
    pub divisor: Option<serde_json::Value>,
}

/// `envFrom[]`: a ConfigMap or Secret whose keys all become environment variables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvFromSource {
    /// `prefix`: prepended to every key's variable name (None: none).
    pub prefix: Option<String>,
    /// `configMapRef`: the ConfigMap to read (exclusive with `secretRef`).
    pub config_map_ref: Option<LocalRef>,
    /// `secretRef`: the Secret to read (exclusive with `configMapRef`).
    pub secret_ref: Option<LocalRef>,
}

/// `envFrom[].configMapRef` / `secretRef`: an object in the pod's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalRef {
    /// `name`: the object's name.
    pub name: String,
    /// `optional`: a missing object is no error (None: false).
    pub optional: Option<bool>,
}

/// `resources`: quantities as strings or numbers (see [`quantity`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceRequirements {
    /// `limits`: the most a container may use, per resource name (`cpu`, `memory`, ...) (empty: no
    /// limits).
    pub limits: BTreeMap<String, serde_json::Value>,
    /// `requests`: what a container is guaranteed, per resource name (a missing one reads as its
    /// limit, as the API server defaults it).
    pub requests: BTreeMap<String, serde_json::Value>,
}

/// `volumeMounts[]`: a pod volume mounted into a container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    /// `name`: the pod volume's name (`spec.volumes[].name`).
    pub name: String,
    /// `mountPath`: where in the container the volume is mounted.
    pub mount_path: String,
    /// `subPath`: a path in the volume mounted instead of its root (None: the root).
    pub sub_path: Option<String>,
    /// A subPath with `$(VAR)` references to the container's env, expanded when the
    /// container is made (exclusive with `subPath`). Left out of the JSON when unset, so the
    /// version-1 container hash of pods that do not use it is the same as before the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path_expr: Option<String>,
    /// `readOnly`: mount read-only.
    pub read_only: bool,
    /// `mountPropagation`: `None` (the default), `HostToContainer` or `Bidirectional`.
    pub mount_propagation: Option<String>,
}

/// `securityContext` of a container: over the pod's settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecurityContext {
    /// `runAsUser`: the UID the process runs as (None: the pod's, else the image's).
    pub run_as_user: Option<i64>,
    /// `runAsGroup`: the primary GID of the process (None: the pod's, else the image's).
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`: refuse to start if the user would be UID 0 (None: the pod's).
    pub run_as_non_root: Option<bool>,
    /// `privileged`: run with every capability and the host's devices (None: false).
    pub privileged: Option<bool>,
    /// `readOnlyRootFilesystem`: mount the container's root filesystem read-only (None: false).
    pub read_only_root_filesystem: Option<bool>,
    /// `allowPrivilegeEscalation`: whether a process may gain more privileges than its parent
    /// (`no_new_privs` off) (None: true).
    pub allow_privilege_escalation: Option<bool>,
    /// `capabilities`: Linux capabilities added to and dropped from the runtime's default set
    /// (None: the default set).
    pub capabilities: Option<Capabilities>,
    /// Left out of the JSON when unset (the version-1 container hash stays the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
    /// `Default` or `Unmasked` (the latter needs a user namespace: refused here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proc_mount: Option<String>,
    /// The container's AppArmor profile (over the pod's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_armor_profile: Option<AppArmorProfile>,
}

/// `securityContext.capabilities`: changes to the default capability set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Capabilities {
    /// `add`: capabilities added, such as `NET_ADMIN` (without `CAP_`).
    pub add: Vec<String>,
    /// `drop`: capabilities dropped (`ALL` drops every one).
    pub drop: Vec<String>,
}

/// A probe (liveness, readiness or startup).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Probe {
    /// `exec`: run a command in the container; exit code 0 is success.
    pub exec: Option<ExecAction>,
    /// `httpGet`: an HTTP GET to the pod; a status from 200 to 399 is success.
    pub http_get: Option<HttpGetAction>,
    /// `tcpSocket`: a TCP connect to the pod; a connection is success.
    pub tcp_socket: Option<TcpSocketAction>,
    /// A gRPC health check. Left out of the JSON when unset (the version-1 container hash
    /// stays the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcAction>,
    /// `initialDelaySeconds`: seconds after the container starts before the first probe (None: 0).
    pub initial_delay_seconds: Option<i32>,
    /// `periodSeconds`: seconds between probes (None: 10).
    pub period_seconds: Option<i32>,
    /// `timeoutSeconds`: seconds a probe may take (None: 1).
    pub timeout_seconds: Option<i32>,
    /// `successThreshold`: successes in a row that make a failed probe succeed (None: 1).
    pub success_threshold: Option<i32>,
    /// `failureThreshold`: failures in a row that make the probe fail (None: 3).
    pub failure_threshold: Option<i32>,
    /// The grace period of a kill this probe's failure causes (liveness and startup), over
    /// the pod's. Left out of the JSON when unset (the container hash stays the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

impl Probe {
    /// `periodSeconds`, default 10.
    pub fn period(&self) -> i32 {
        self.period_seconds.filter(|v| *v > 0).unwrap_or(10)
    }
    /// `timeoutSeconds`, default 1.
    pub fn timeout(&self) -> i32 {
        self.timeout_seconds.filter(|v| *v > 0).unwrap_or(1)
    }
    /// `successThreshold`, default 1.
    pub fn success_threshold(&self) -> i32 {
        self.success_threshold.filter(|v| *v > 0).unwrap_or(1)
    }
    /// `failureThreshold`, default 3.
    pub fn failure_threshold(&self) -> i32 {
        self.failure_threshold.filter(|v| *v > 0).unwrap_or(3)
    }
    /// `initialDelaySeconds`, default 0.
    pub fn initial_delay(&self) -> i32 {
        self.initial_delay_seconds.unwrap_or(0).max(0)
    }
}

/// `exec` action of a probe or hook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecAction {
    /// `command`: the command and its arguments, run without a shell.
    pub command: Vec<String>,
}

/// `httpGet` action of a probe or hook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpGetAction {
    /// `path`: the request path (None: `/`).
    pub path: Option<String>,
    /// A number or a named container port.
    pub port: serde_json::Value,
    /// `host`: the host to connect to (None: the pod's IP).
    pub host: Option<String>,
    /// `scheme`: `HTTP` (the default) or `HTTPS` (certificate not verified).
    pub scheme: Option<String>,
    /// `httpHeaders`: headers added to the request.
    pub http_headers: Vec<HttpHeader>,
}

/// `httpGet.httpHeaders[]`: one request header.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpHeader {
    /// `name`: the header's name.
    pub name: String,
    /// `value`: the header's value.
    pub value: String,
}

/// `tcpSocket` action of a probe or hook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSocketAction {
    /// `port`: a number or a named container port.
    pub port: serde_json::Value,
    /// `host`: the host to connect to (None: the pod's IP).
    pub host: Option<String>,
}

/// A grpc probe: `grpc.health.v1.Health/Check` on the pod's `port`, for `service` (the
/// server's overall health when unset or empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcAction {
    /// `port`: the port of the gRPC server, a number.
    pub port: i32,
    /// `service`: the service name in the health request (None or empty: the server's overall
    /// health).
    pub service: Option<String>,
}

/// `lifecycle` of a container: its hooks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Lifecycle {
    /// `postStart`: run right after the container starts; a failure kills it (None: none).
    pub post_start: Option<LifecycleHandler>,
    /// `preStop`: run before the container is stopped, within the grace period (None: none).
    pub pre_stop: Option<LifecycleHandler>,
}

/// `lifecycle.postStart` / `preStop`: one hook (exactly one action set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LifecycleHandler {
    /// `exec`: run a command in the container.
    pub exec: Option<ExecAction>,
    /// `httpGet`: an HTTP GET to the pod.
    pub http_get: Option<HttpGetAction>,
    /// `tcpSocket`: a TCP connect to the pod (deprecated in hooks).
    pub tcp_socket: Option<TcpSocketAction>,
    /// Wait this long (`sleep: {seconds: N}`). Left out of the JSON when unset (the
    /// version-1 container hash stays the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepAction>,
}

/// `lifecycle.*.sleep`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SleepAction {
    /// `seconds`: how long to sleep.
    pub seconds: i64,
}

/// A volume of a pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    /// `name`: the volume's name, unique in the pod, used by `volumeMounts[].name`.
    pub name: String,
    /// `emptyDir`: a new empty directory for the pod's life.
    pub empty_dir: Option<EmptyDirVolume>,
    /// `hostPath`: a file or directory of the node.
    pub host_path: Option<HostPathVolume>,
    /// `configMap`: a ConfigMap's keys as files.
    pub config_map: Option<ConfigMapVolume>,
    /// `secret`: a Secret's keys as files.
    pub secret: Option<SecretVolume>,
    /// `downwardAPI`: pod fields and resources as files.
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApiVolume>,
    /// `projected`: several sources (Secrets, ConfigMaps, downward API, token) in one directory.
    pub projected: Option<ProjectedVolume>,
}

/// `emptyDir` volume: an empty directory made for the pod, deleted with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmptyDirVolume {
    /// `""` (disk) or `Memory` (tmpfs).
    pub medium: Option<String>,
    /// `sizeLimit`: the most the volume may hold, a quantity (None: no limit but the node's).
    pub size_limit: Option<serde_json::Value>,
}

/// `hostPath` volume: a path on the node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostPathVolume {
    /// `path`: the path on the node.
    pub path: String,
    /// `type`: `DirectoryOrCreate`, `Directory`, `FileOrCreate`, `File`, `Socket`, `CharDevice`,
    /// `BlockDevice` (None or empty: no check).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `items[]` of a ConfigMap, Secret or projected volume: one key as one file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyToPath {
    /// `key`: the key of the object.
    pub key: String,
    /// `path`: the file's relative path in the volume.
    pub path: String,
    /// `mode`: the file's permission bits (None: the volume's `defaultMode`).
    pub mode: Option<u32>,
}

/// `configMap` volume: a ConfigMap's keys as files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigMapVolume {
    /// `name`: the ConfigMap's name, in the pod's namespace.
    pub name: String,
    /// `items`: the keys to project and where (empty: every key, as a file named after it).
    pub items: Vec<KeyToPath>,
    /// `defaultMode`: the permission bits of the files (None: 0644).
    pub default_mode: Option<u32>,
    /// `optional`: a missing ConfigMap or key is no error (None: false).
    pub optional: Option<bool>,
}

/// `secret` volume: a Secret's keys as files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretVolume {
    /// `secretName`: the Secret's name, in the pod's namespace.
    pub secret_name: String,
    /// `items`: the keys to project and where (empty: every key, as a file named after it).
    pub items: Vec<KeyToPath>,
    /// `defaultMode`: the permission bits of the files (None: 0644).
    pub default_mode: Option<u32>,
    /// `optional`: a missing Secret or key is no error (None: false).
    pub optional: Option<bool>,
}

/// `downwardAPI` volume: pod fields and resources as files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardApiVolume {
    /// `items`: the files to write.
    pub items: Vec<DownwardApiFile>,
    /// `defaultMode`: the permission bits of the files (None: 0644).
    pub default_mode: Option<u32>,
}

/// `downwardAPI.items[]`: one file of pod information.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardApiFile {
    /// `path`: the file's relative path in the volume.
    pub path: String,
    /// `fieldRef`: the pod field written (exclusive with `resourceFieldRef`).
    pub field_ref: Option<FieldSelector>,
    /// `resourceFieldRef`: the container resource written (exclusive with `fieldRef`).
    pub resource_field_ref: Option<ResourceFieldSelector>,
    /// `mode`: the file's permission bits (None: the volume's `defaultMode`).
    pub mode: Option<u32>,
}

/// A `projected` volume: several sources in one directory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectedVolume {
    /// `sources`: the sources, written into the volume in order.
    pub sources: Vec<VolumeProjection>,
    /// Mode of files without their own (the API server defaults it to 420, 0644).
    pub default_mode: Option<u32>,
}

/// One source of a projected volume (exactly one field is set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeProjection {
    /// `secret`: keys of a Secret.
    pub secret: Option<ObjectProjection>,
    /// `configMap`: keys of a ConfigMap.
    pub config_map: Option<ObjectProjection>,
    /// `downwardAPI`: pod fields and resources.
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApiProjection>,
    /// `serviceAccountToken`: a token of the pod's service account.
    pub service_account_token: Option<ServiceAccountTokenProjection>,
    /// Not supported by edged (kept to name it in the error).
    pub cluster_trust_bundle: Option<serde_json::Value>,
    /// Not supported by edged (kept to name it in the error).
    pub pod_certificate: Option<serde_json::Value>,
}

/// The `configMap` or `secret` source of a projected volume (both use `name`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectProjection {
    /// `name`: the ConfigMap's or Secret's name, in the pod's namespace.
    pub name: String,
    /// `items`: the keys to project and where (empty: every key, as a file named after it).
    pub items: Vec<KeyToPath>,
    /// `optional`: a missing object or key is no error (None: false).
    pub optional: Option<bool>,
}

/// The `downwardAPI` source of a projected volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardApiProjection {
    /// `items`: the files to write.
    pub items: Vec<DownwardApiFile>,
}

/// The `serviceAccountToken` source of a projected volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceAccountTokenProjection {
    /// The token's audience (empty: the API server's own).
    pub audience: Option<String>,
    /// Requested lifetime, at least 600 (3600 when unset, as the API server defaults it).
    pub expiration_seconds: Option<i64>,
    /// The file's path in the volume.
    pub path: String,
}

impl ServiceAccountTokenProjection {
    /// `expirationSeconds`, 3600 when unset.
    pub fn expiration_seconds(&self) -> i64 {
        self.expiration_seconds.unwrap_or(3600)
    }

    /// `audience`, empty when unset.
    pub fn audience(&self) -> &str {
        self.audience.as_deref().unwrap_or("")
    }
}

/// A ConfigMap (typed view).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigMap {
    /// `metadata`: the ConfigMap's name, namespace and uid.
    pub metadata: ObjectMeta,
    /// `data`: UTF-8 values by key.
    pub data: BTreeMap<String, String>,
    /// Base64 values.
    pub binary_data: BTreeMap<String, String>,
    /// `immutable`: the data can no longer change (None: false).
    pub immutable: Option<bool>,
}

impl ConfigMap {
    /// Every key's bytes: `binaryData` decoded from base64, then `data`. `Err` names the key
    /// whose base64 is bad.
    pub fn values(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.binary_data {
            out.insert(
                k.clone(),
                base64::decode(v).map_err(|e| format!("binaryData `{k}`: {e}"))?,
            );
        }
        for (k, v) in &self.data {
            out.insert(k.clone(), v.as_bytes().to_vec());
        }
        Ok(out)
    }
}

impl Secret {
    /// Every key's bytes: `data` decoded from base64, then `stringData` (which wins, as the
    /// API server merges them). `Err` names the key whose base64 is bad.
    pub fn values(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.data {
            out.insert(
                k.clone(),
                base64::decode(v).map_err(|e| format!("data `{k}`: {e}"))?,
            );
        }
        for (k, v) in &self.string_data {
            out.insert(k.clone(), v.as_bytes().to_vec());
        }
        Ok(out)
    }
}

/// A Secret (typed view).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Secret {
    /// `metadata`: the Secret's name, namespace and uid.
    pub metadata: ObjectMeta,
    /// Base64 values.
    pub data: BTreeMap<String, String>,
    /// Plain values (write-only in Kubernetes; manifests use it).
    pub string_data: BTreeMap<String, String>,
    /// `type`: such as `Opaque` or `kubernetes.io/dockerconfigjson` (None: `Opaque`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `immutable`: the data can no longer change (None: false).
    pub immutable: Option<bool>,
}

/// A Service (typed view): the fields the kubelet makes a pod's service environment
/// variables of. Every field may be missing (its zero value), as Go reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Service {
    /// `metadata`: the Service's name and namespace.
    pub metadata: ObjectMeta,
    /// `spec`: its cluster IP and ports.
    pub spec: ServiceSpec,
}

/// `spec` of a Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// `spec.clusterIP`: the service's virtual IP (empty: none, as for `ExternalName`;
    /// `None`: headless).
    #[serde(rename = "clusterIP")]
    pub cluster_ip: String,
    /// `spec.ports`: the ports the service serves (only the first may be unnamed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// Whether the service has a cluster IP (the kubelet's `IsServiceIPSet`: set and not
    /// `None`): only such services become environment variables.
    pub fn has_cluster_ip(&self) -> bool {
        !self.spec.cluster_ip.is_empty() && self.spec.cluster_ip != "None"
    }
}

/// `spec.ports[]` of a Service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    /// `name`: the port's name (empty: unnamed).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `protocol`: `TCP` (None: TCP, the API server's default), `UDP` or `SCTP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// `port`: the port the service serves on its cluster IP.
    pub port: i32,
}

/// One of a pod's IPs (`status.podIPs[]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodIP {
    /// `ip`: the address, IPv4 or IPv6.
    pub ip: String,
}

/// The v1 PodStatus the status manager builds and sends upstream (`status` of a pod).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    /// `conditions`: `PodScheduled`, `Initialized`, `ContainersReady`, `Ready` and the like (empty:
    /// none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
    /// `message`: why the pod is in its phase, for people (None: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `reason`: a CamelCase word why the pod is in its phase, such as `Evicted` (None: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `hostIP`: the node's IP (None: not known yet).
    #[serde(rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// `podIP`: the pod's first IP (None: not assigned yet).
    #[serde(rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// All the pod's IPs (IPv4 first), `podIP` the first.
    #[serde(rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIP>,
    /// `startTime`: when the node accepted the pod, RFC 3339 (None: not yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// `initContainerStatuses`: one for each of `spec.initContainers`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_container_statuses: Vec<ContainerStatus>,
    /// `containerStatuses`: one for each of `spec.containers`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// One for each of `spec.ephemeralContainers`; never ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ephemeral_container_statuses: Vec<ContainerStatus>,
    /// `qosClass`: `Guaranteed`, `Burstable` or `BestEffort`, from the containers' resources.
    #[serde(rename = "qosClass", skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<String>,
}

/// `status.conditions[]`: one condition of a pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodCondition {
    /// `type`: such as `Ready`, `ContainersReady`, `Initialized`, `PodScheduled`, or a readiness
    /// gate's.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    /// `lastProbeTime`: when the condition was last checked, RFC 3339 (None: not written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    /// `lastTransitionTime`: when `status` last changed, RFC 3339 (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// `reason`: a CamelCase word why the condition is as it is (None: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `message`: why the condition is as it is, for people (None: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `status.containerStatuses[]` (and the init and ephemeral lists): one container's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatus {
    /// `name`: the container's name in the spec.
    pub name: String,
    /// `state`: the container's current state.
    pub state: ContainerState,
    /// `lastState`: the state the last run of the container ended in (empty: no earlier run).
    #[serde(skip_serializing_if = "ContainerState::is_empty")]
    pub last_state: ContainerState,
    /// `ready`: the container passes its readiness probe (or runs, without one).
    pub ready: bool,
    /// `restartCount`: how many times the container was restarted.
    pub restart_count: i32,
    /// `image`: the image the container runs, as the spec names it.
    pub image: String,
    /// `imageID`: the image's id in the runtime, such as `sha256:...` (empty: not known).
    #[serde(rename = "imageID")]
    pub image_id: String,
    /// `containerID`: `<runtime>://<id>` of the container (None: not created yet).
    #[serde(rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `started`: the startup probe has passed (or the container runs, without one) (None: not
    /// reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
}

/// Exactly one of the three is set (none in an empty `lastState`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerState {
    /// `waiting`: not running yet (or again), and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<StateWaiting>,
    /// `running`: running, and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<StateRunning>,
    /// `terminated`: exited, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminated: Option<StateTerminated>,
}

impl ContainerState {
    /// No state set.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_none() && self.running.is_none() && self.terminated.is_none()
    }
}

/// `state.waiting`: a container that is not running yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StateWaiting {
    /// `reason`: why it waits, such as `ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`
    /// (None: not said).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `message`: more detail for people (None: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `state.running`: a running container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StateRunning {
    /// `startedAt`: when the container started, RFC 3339 (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// `state.terminated`: a container that exited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StateTerminated {
    /// `exitCode`: the process's exit status.
    pub exit_code: i32,
    /// `signal`: the signal that ended the process (None: not known or not by signal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// `reason`: such as `Completed`, `Error`, `OOMKilled` (None: not said).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `message`: the termination message, or more detail (None: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `startedAt`: when the container started, RFC 3339 (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// `finishedAt`: when the container exited, RFC 3339 (None: not known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// `containerID`: `<runtime>://<id>` of the container (None: not known).
    #[serde(rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// RFC 3339 time in UTC with second precision, as Kubernetes writes `metav1.Time`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (date, secs) = civil(d.as_secs() as i64);
    format!(
        "{date}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// RFC 3339 time in UTC with nanoseconds, as CRI log lines carry.
pub fn rfc3339_nanos(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (date, secs) = civil(d.as_secs() as i64);
    format!(
        "{date}T{:02}:{:02}:{:02}.{:09}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        d.subsec_nanos()
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac]Z` (what [`rfc3339`] writes, and what Kubernetes sends).
pub fn parse_rfc3339(s: &str) -> Option<std::time::SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !s.ends_with('Z') {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + se;
    let mut t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    if let Some(frac) = s.get(20..s.len() - 1).filter(|_| b[19] == b'.') {
        let digits: String = frac.chars().take(9).collect();
        if let Ok(n) = format!("{digits:0<9}").parse::<u64>() {
            t += std::time::Duration::from_nanos(n);
        }
    }
    Some(t)
}

/// Splits Unix seconds into `YYYY-MM-DD` and seconds of the day.
fn civil(secs: i64) -> (String, i64) {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (format!("{y:04}-{m:02}-{d:02}"), rem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_579_226);
        let s = rfc3339(t);
        assert_eq!(s, "2025-12-01T08:53:46Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
        let n = rfc3339_nanos(t + Duration::from_nanos(5));
        assert_eq!(n, "2025-12-01T08:53:46.000000005Z");
        assert_eq!(parse_rfc3339(&n), Some(t + Duration::from_nanos(5)));
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59Z")
                .map(rfc3339)
                .as_deref(),
            Some("2024-02-29T23:59:59Z")
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn decode_names_the_field() {
        let v = serde_json::json!({"metadata":{"name":"web"},"spec":{"containers":[{"name":"a","image":5}]}});
        let e = decode::<Pod>("Pod default/web", &v).unwrap_err();
        assert_eq!(e.field, "spec.containers[0].image");
        assert!(e.to_string().contains("Pod default/web"), "{e}");
    }

    /// The pod kube-apiserver stored for `kubectl run` (issue 22): every defaulted field reads,
    /// in the agent's decoder and in the manifest check alike.
    #[test]
    fn a_pod_as_the_api_server_stores_it() {
        let text = include_str!("../../tests/fixtures/kubectl-run-pod.yaml");
        let v: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        let pod = crate::podmanager::decode_pod(&v).unwrap();
        assert_eq!(pod.spec.service_account_name(), "default");
        assert_eq!(pod.spec.grace_period_seconds(), 30);
        assert_eq!(pod.spec.dns_policy.as_deref(), Some("ClusterFirst"));
        let c = &pod.spec.containers[0];
        assert_eq!(c.image_pull_policy(), "Always");
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert!(c.volume_mounts[0].read_only);
        let vol = &pod.spec.volumes[0];
        assert_eq!(vol.name, "kube-api-access-54k5t");
        let p = vol.projected.as_ref().expect("a projected volume");
        assert_eq!(p.default_mode, Some(420));
        let t = p.sources[0].service_account_token.as_ref().unwrap();
        assert_eq!(
            (t.expiration_seconds(), t.path.as_str(), t.audience()),
            (3607, "token", "")
        );
        let cm = p.sources[1].config_map.as_ref().unwrap();
        assert_eq!(cm.name, "kube-root-ca.crt");
        assert_eq!(
            (cm.items[0].key.as_str(), cm.items[0].path.as_str()),
            ("ca.crt", "ca.crt")
        );
        let d = p.sources[2].downward_api.as_ref().unwrap();
        assert_eq!(
            d.items[0].field_ref.as_ref().unwrap().field_path,
            "metadata.namespace"
        );
        let docs = crate::manifest::read::documents(text).unwrap();
        let checked = crate::manifest::check::check(&docs[0], "t.yaml", "edge-node").unwrap();
        assert_eq!(checked.name, "t");
        // Defaults when the fields are absent.
        let bare = ServiceAccountTokenProjection::default();
        assert_eq!(bare.expiration_seconds(), 3600);
        assert_eq!(PodSpec::default().service_account_name(), "default");
        let alias = PodSpec {
            service_account: Some("old".into()),
            ..Default::default()
        };
        assert_eq!(alias.service_account_name(), "old");
    }

    #[test]
    fn null_fields_read_as_absent() {
        let p: Pod = decode(
            "Pod default/p",
            &serde_json::json!({"metadata": {"name": "p", "labels": null},
                "spec": {"initContainers": null, "containers": [{"name": "c", "image": "i",
                         "env": null, "command": null}], "volumes": null}}),
        )
        .unwrap();
        assert!(p.spec.init_containers.is_empty());
        assert_eq!(p.spec.containers[0].name, "c");
    }

    #[test]
    fn pull_policy_defaults() {
        let c = |image: &str| Container {
            image: image.into(),
            ..Default::default()
        };
        assert_eq!(c("busybox").image_pull_policy(), "Always");
        assert_eq!(c("busybox:latest").image_pull_policy(), "Always");
        assert_eq!(c("busybox:1.36").image_pull_policy(), "IfNotPresent");
        assert_eq!(c("localhost:5000/busybox").image_pull_policy(), "Always");
    }
}
