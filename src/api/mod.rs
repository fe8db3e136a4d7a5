//! The Kubernetes v1 objects edged works with (Pod, ConfigMap, Secret, PodStatus), as kubectl
//! users write them.
//!
//! Only the fields edged acts on are typed; unknown fields are ignored on decode (the store keeps
//! the object as it came, so nothing is lost). Decoding names the object and the field path that
//! is wrong: see [`decode`].

pub mod base64;
pub mod quantity;
pub mod restart;
pub mod validate;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The three kinds of object the store holds for pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    ConfigMap,
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
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Pod (typed view).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    /// The status the cloud holds, as it came with the pod: read only for conditions others
    /// own (readiness gates); the node's own status is built by the status manager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub init_containers: Vec<Container>,
    pub containers: Vec<Container>,
    /// Containers added to the running pod for debugging (`kubectl debug`, the API server's
    /// `ephemeralcontainers` subresource): started once each, never restarted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ephemeral_containers: Vec<EphemeralContainer>,
    pub volumes: Vec<Volume>,
    /// `Always` (default), `OnFailure`, `Never`.
    pub restart_policy: Option<String>,
    pub termination_grace_period_seconds: Option<i64>,
    pub active_deadline_seconds: Option<i64>,
    /// The pod's priority (set by the API server from its priority class); 0 when unset.
    pub priority: Option<i32>,
    pub node_name: String,
    pub host_network: bool,
    #[serde(rename = "hostPID")]
    pub host_pid: bool,
    #[serde(rename = "hostIPC")]
    pub host_ipc: bool,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    /// The kernel hostname is the pod's FQDN (`<hostname>.<subdomain>.<ns>.svc.<domain>`).
    #[serde(rename = "setHostnameAsFQDN")]
    pub set_hostname_as_fqdn: Option<bool>,
    /// One PID namespace for all the pod's containers.
    pub share_process_namespace: Option<bool>,
    pub security_context: Option<PodSecurityContext>,
    pub dns_policy: Option<String>,
    pub dns_config: Option<PodDnsConfig>,
    pub host_aliases: Vec<HostAlias>,
    /// The pod's service account (the API server defaults it to `default`).
    pub service_account_name: Option<String>,
    /// The deprecated alias of `serviceAccountName`, still written by the API server.
    pub service_account: Option<String>,
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
    pub name: String,
}

/// `spec.os`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodOs {
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSecurityContext {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    pub supplemental_groups: Vec<i64>,
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
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodDnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<PodDnsConfigOption>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodDnsConfigOption {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// A container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    pub resources: ResourceRequirements,
    pub volume_mounts: Vec<VolumeMount>,
    pub liveness_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    pub startup_probe: Option<Probe>,
    pub lifecycle: Option<Lifecycle>,
    /// `Always`, `IfNotPresent`, `Never`; defaulted as the API server does (see
    /// [`Container::image_pull_policy`]).
    pub image_pull_policy: Option<String>,
    pub security_context: Option<SecurityContext>,
    pub ports: Vec<ContainerPort>,
    pub termination_message_path: Option<String>,
    /// `File` (the default) or `FallbackToLogsOnError`. Left out of the JSON when unset, so
    /// the container hash of pods that do not name it is the same as before the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: Option<String>,
    pub stdin: bool,
    /// Close stdin after the first attach session ends. Left out of the JSON when false, so
    /// the container hash of pods that do not set it is the same as before the field.
    #[serde(skip_serializing_if = "is_false")]
    pub stdin_once: bool,
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: i32,
    pub host_port: Option<i32>,
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<EnvVarSource>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVarSource {
    pub config_map_key_ref: Option<KeySelector>,
    pub secret_key_ref: Option<KeySelector>,
    pub field_ref: Option<FieldSelector>,
    pub resource_field_ref: Option<ResourceFieldSelector>,
}

/// `configMapKeyRef` / `secretKeyRef`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeySelector {
    pub name: String,
    pub key: String,
    pub optional: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FieldSelector {
    pub field_path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceFieldSelector {
    pub container_name: Option<String>,
    pub resource: String,
    pub divisor: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvFromSource {
    pub prefix: Option<String>,
    pub config_map_ref: Option<LocalRef>,
    pub secret_ref: Option<LocalRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalRef {
    pub name: String,
    pub optional: Option<bool>,
}

/// `resources`: quantities as strings or numbers (see [`quantity`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceRequirements {
    pub limits: BTreeMap<String, serde_json::Value>,
    pub requests: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub sub_path: Option<String>,
    /// A subPath with `$(VAR)` references to the container's env, expanded when the
    /// container is made (exclusive with `subPath`). Left out of the JSON when unset, so the
    /// version-1 container hash of pods that do not use it is the same as before the field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path_expr: Option<String>,
    pub read_only: bool,
    pub mount_propagation: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecurityContext {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    pub privileged: Option<bool>,
    pub read_only_root_filesystem: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Capabilities {
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

/// A probe (liveness, readiness or startup).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Probe {
    pub exec: Option<ExecAction>,
    pub http_get: Option<HttpGetAction>,
    pub tcp_socket: Option<TcpSocketAction>,
    /// A gRPC health check. Left out of the JSON when unset (the version-1 container hash
    /// stays the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcAction>,
    pub initial_delay_seconds: Option<i32>,
    pub period_seconds: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub success_threshold: Option<i32>,
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

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecAction {
    pub command: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpGetAction {
    pub path: Option<String>,
    /// A number or a named container port.
    pub port: serde_json::Value,
    pub host: Option<String>,
    pub scheme: Option<String>,
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSocketAction {
    pub port: serde_json::Value,
    pub host: Option<String>,
}

/// A grpc probe: `grpc.health.v1.Health/Check` on the pod's `port`, for `service` (the
/// server's overall health when unset or empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcAction {
    pub port: i32,
    pub service: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Lifecycle {
    pub post_start: Option<LifecycleHandler>,
    pub pre_stop: Option<LifecycleHandler>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LifecycleHandler {
    pub exec: Option<ExecAction>,
    pub http_get: Option<HttpGetAction>,
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
    pub seconds: i64,
}

/// A volume of a pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    pub name: String,
    pub empty_dir: Option<EmptyDirVolume>,
    pub host_path: Option<HostPathVolume>,
    pub config_map: Option<ConfigMapVolume>,
    pub secret: Option<SecretVolume>,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApiVolume>,
    pub projected: Option<ProjectedVolume>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmptyDirVolume {
    /// `""` (disk) or `Memory` (tmpfs).
    pub medium: Option<String>,
    pub size_limit: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HostPathVolume {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    pub mode: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigMapVolume {
    pub name: String,
    pub items: Vec<KeyToPath>,
    pub default_mode: Option<u32>,
    pub optional: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretVolume {
    pub secret_name: String,
    pub items: Vec<KeyToPath>,
    pub default_mode: Option<u32>,
    pub optional: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardApiVolume {
    pub items: Vec<DownwardApiFile>,
    pub default_mode: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardApiFile {
    pub path: String,
    pub field_ref: Option<FieldSelector>,
    pub resource_field_ref: Option<ResourceFieldSelector>,
    pub mode: Option<u32>,
}

/// A `projected` volume: several sources in one directory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectedVolume {
    pub sources: Vec<VolumeProjection>,
    /// Mode of files without their own (the API server defaults it to 420, 0644).
    pub default_mode: Option<u32>,
}

/// One source of a projected volume (exactly one field is set).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeProjection {
    pub secret: Option<ObjectProjection>,
    pub config_map: Option<ObjectProjection>,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApiProjection>,
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
    pub name: String,
    pub items: Vec<KeyToPath>,
    pub optional: Option<bool>,
}

/// The `downwardAPI` source of a projected volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardApiProjection {
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
    pub metadata: ObjectMeta,
    pub data: BTreeMap<String, String>,
    /// Base64 values.
    pub binary_data: BTreeMap<String, String>,
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
    pub metadata: ObjectMeta,
    /// Base64 values.
    pub data: BTreeMap<String, String>,
    /// Plain values (write-only in Kubernetes; manifests use it).
    pub string_data: BTreeMap<String, String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub immutable: Option<bool>,
}

/// The v1 PodStatus the status manager builds and sends upstream.
/// One of a pod's IPs (`status.podIPs[]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodIP {
    pub ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// All the pod's IPs (IPv4 first), `podIP` the first.
    #[serde(rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIP>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_container_statuses: Vec<ContainerStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// One for each of `spec.ephemeralContainers`; never ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ephemeral_container_statuses: Vec<ContainerStatus>,
    #[serde(rename = "qosClass", skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerState,
    #[serde(skip_serializing_if = "ContainerState::is_empty")]
    pub last_state: ContainerState,
    pub ready: bool,
    pub restart_count: i32,
    pub image: String,
    #[serde(rename = "imageID")]
    pub image_id: String,
    #[serde(rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
}

/// Exactly one of the three is set (none in an empty `lastState`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<StateWaiting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<StateRunning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminated: Option<StateTerminated>,
}

impl ContainerState {
    /// No state set.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_none() && self.running.is_none() && self.terminated.is_none()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StateWaiting {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StateRunning {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StateTerminated {
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
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
