//! The runtime interface: the one plug-in point between EdgeD and an OCI runtime (the seed's
//! "CRI"). EdgeD speaks only [`Runtime`]; a backend (today [`shim`], containerd's shim v2 over
//! ttrpc) turns it into processes.
//!
//! Calls are blocking (the shim client is synchronous); EdgeD calls them through
//! `smol::unblock`. Every call is bounded in time by the backend.

pub mod apparmor;
pub mod cgroups;
#[cfg(test)]
pub mod fake;
pub mod logs;
pub mod oci;
pub mod pidns;
pub mod sandbox;
pub mod seccomp;
pub mod shim;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Labels every container carries, so a relist can tell which pod and container it is.
pub mod labels {
    /// The pod's `metadata.uid`.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The pod's `metadata.name`.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's `metadata.namespace`.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The container's name in the pod spec.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// Hash of the container's spec, to see an update that changes it.
    pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
    /// The restart count (attempt) of this container instance.
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
}

/// A runtime failure: which object, which step, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeError {
    /// Container or sandbox id (or pod namespace/name).
    pub object: String,
    /// The step that failed, such as `create`, `start`, `shim start`: words for the message;
    /// callers act on [`kind`](Self::kind) and [`stage`](Self::stage).
    pub op: String,
    /// Where in a container's creation and start it failed.
    pub stage: Stage,
    /// What kind of failure it is (what a caller may do about it).
    pub kind: ErrorKind,
    /// Why, as the backend or the OS said it.
    pub message: String,
}

/// The stage of a container's creation and start a failure belongs to, as the kubelet tells
/// them apart in a waiting container's reason ([`Stage::waiting_reason`]). A backend sets it
/// by the call that failed, never by the failing step's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    /// The container's configuration is refused before anything is made of it (the kubelet's
    /// generateContainerConfig: no log path, an ephemeral container's target not running).
    Config,
    /// Creating the container (the CRI's CreateContainer): the image's spec, the rootfs, the
    /// bundle and OCI spec, FIFOs and log copier, the pod's shim and the task in it.
    Create,
    /// Starting the created task (the CRI's StartContainer).
    Start,
    /// Not a step of a container's creation or start (stop, status, exec, sandboxes...).
    #[default]
    Other,
}

impl Stage {
    /// The kubelet's waiting reason for a container whose start failed at this stage
    /// (pkg/kubelet/kuberuntime's `ErrCreateContainerConfig` and `ErrCreateContainer`,
    /// pkg/kubelet/container's `ErrRunContainer`, which also stands for any other failure).
    pub fn waiting_reason(self) -> crate::api::reason::Reason {
        use crate::api::reason::Reason;
        match self {
            Stage::Config => Reason::CreateContainerConfigError,
            Stage::Create => Reason::CreateContainerError,
            Stage::Start | Stage::Other => Reason::RunContainerError,
        }
    }
}

/// What kind of failure, for callers that act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such container, sandbox or image.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// A call did not answer in time.
    Timeout,
    /// The shim died or its socket is gone.
    ShimDead,
    /// The configuration is refused (bad spec, missing binary, unsupported cgroup layout...).
    InvalidConfig,
    /// Anything else.
    Other,
}

impl RuntimeError {
    /// A new error, of no stage yet ([`Stage::Other`]; see [`RuntimeError::during`]).
    pub fn new(
        object: impl Into<String>,
        op: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        RuntimeError {
            object: object.into(),
            op: op.into(),
            stage: Stage::Other,
            kind,
            message: message.into(),
        }
    }

    /// The error placed at `stage`, unless a step inside placed it already.
    pub fn during(mut self, stage: Stage) -> Self {
        if self.stage == Stage::Other {
            self.stage = stage;
        }
        self
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.object, self.message)
    }
}

impl std::error::Error for RuntimeError {}

/// Result of runtime calls.
pub type Result<T> = std::result::Result<T, RuntimeError>;

/// What a pod's sandbox (its shared namespaces and cgroup parent) is made from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSandboxConfig {
    /// The pod's uid (the sandbox's id).
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Hostname inside the pod (the pod name unless `spec.hostname`).
    pub hostname: String,
    /// `spec.hostNetwork`: the pod uses the node's network (and UTS) namespace.
    pub host_network: bool,
    /// `spec.hostPID`: the pod's containers see the node's processes.
    pub host_pid: bool,
    /// `spec.hostIPC`: the pod uses the node's IPC namespace.
    pub host_ipc: bool,
    /// One PID namespace for all the pod's containers (`shareProcessNamespace`).
    pub share_process_namespace: bool,
    /// Lines of the pod's /etc/hosts and /etc/resolv.conf, written by the runtime into the
    /// sandbox directory and bind-mounted into every container.
    pub hosts: String,
    /// The pod's resolv.conf (see `hosts`).
    pub resolv_conf: String,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// What CNI plugins get as capability arguments (hostPorts, bandwidth, DNS).
    pub network: crate::network::Capabilities,
}

/// A pod's sandbox as the runtime holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sandbox {
    /// The pod's uid.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's network namespace (`None` for hostNetwork pods): probes enter it.
    pub netns: Option<PathBuf>,
    /// The pod's IP from CNI (none: hostNetwork, or no CNI network configured).
    pub ip: Option<String>,
    /// All the pod's IPs (IPv4 first; `ip` is the first).
    pub ips: Vec<String>,
    /// Its namespaces are pinned and its network attached: containers can join it.
    pub ready: bool,
    /// When it was made.
    pub created_at: SystemTime,
}

/// A bind mount into a container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mount {
    /// The file or directory on the node.
    pub host_path: PathBuf,
    /// Where it appears in the container (`volumeMounts[].mountPath`, with any subPath).
    pub container_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Resource limits of a container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// CPU limit in millicores (quota over a 100 ms period).
    pub cpu_limit_millis: Option<i64>,
    /// CPU request in millicores (shares).
    pub cpu_request_millis: Option<i64>,
    /// Memory limit in bytes (`memory.max`).
    pub memory_limit_bytes: Option<i64>,
}

/// Security settings of a container (pod-level ones already merged in).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Security {
    /// `runAsUser` (`None`: the image's user).
    pub run_as_user: Option<u32>,
    /// `runAsGroup` (`None`: the user's primary group).
    pub run_as_group: Option<u32>,
    /// supplementalGroups and fsGroup.
    pub supplemental_groups: Vec<u32>,
    /// `supplementalGroupsPolicy: Strict`: the image's /etc/group adds no groups.
    pub supplemental_groups_strict: bool,
    /// The pod's sysctls (admitted), set in the namespaces the container joins.
    pub sysctls: BTreeMap<String, String>,
    /// `seccompProfile` (the container's, else the pod's).
    pub seccomp: seccomp::Seccomp,
    /// `appArmorProfile` (the container's, else the pod's, else the runtime default where
    /// the host has AppArmor).
    pub apparmor: apparmor::AppArmor,
    /// `privileged`: every capability, every device, no seccomp, writable /sys.
    pub privileged: bool,
    /// `readOnlyRootFilesystem`.
    pub read_only_rootfs: bool,
    /// Capability names as Kubernetes writes them (`NET_ADMIN`, `ALL`).
    pub capabilities_add: Vec<String>,
    /// Capability names to drop (`ALL` drops every one, then `add` applies).
    pub capabilities_drop: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
}

/// Everything the runtime needs to create one container of a pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerConfig {
    /// The container's name in the pod.
    pub name: String,
    /// The restart count of this instance.
    pub attempt: u32,
    /// The image reference as the pod names it.
    pub image: String,
    /// `command`/`args` as the pod gives them (after `$(VAR)` expansion); the runtime merges
    /// them with the image's Entrypoint/Cmd as Kubernetes does.
    pub command: Vec<String>,
    /// `args` (see `command`).
    pub args: Vec<String>,
    /// `workingDir` (`None`: the image's).
    pub working_dir: Option<String>,
    /// The environment, resolved (ConfigMaps, Secrets, the downward API), in order.
    pub env: Vec<(String, String)>,
    /// Volume mounts and the pod's own files (hosts, resolv.conf, termination log).
    pub mounts: Vec<Mount>,
    /// Where the CRI-format log of this instance goes.
    pub log_path: PathBuf,
    /// Its cgroup limits.
    pub resources: Resources,
    /// Its security settings.
    pub security: Security,
    /// The labels of [`labels`] the runtime keeps with it.
    pub labels: BTreeMap<String, String>,
    /// The process keeps a stdin open for attach (`stdin`); closed after the first attach
    /// session (`stdin_once`); a terminal (`tty`).
    pub stdin: bool,
    /// See `stdin`.
    pub stdin_once: bool,
    /// See `stdin`.
    pub tty: bool,
    /// The id of a running container of the same pod whose PID namespace this one joins
    /// instead of the pod's (an ephemeral container's `targetContainerName`).
    pub pid_target: Option<String>,
}

/// The state of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Made, its process not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended (see the exit code).
    Exited,
    /// The runtime cannot tell (its shim is gone or does not answer).
    Unknown,
}

/// Where a pod's own name points in its hosts file until it has an IP.
pub const LOOPBACK_NAME_IP: &str = "127.0.1.1";

/// The hosts file of a pod given its IP: the loopback line of its name points at the IP.
pub fn hosts_with_ip(hosts: &str, ip: &str) -> String {
    let prefix = format!("{LOOPBACK_NAME_IP}\t");
    hosts
        .lines()
        .map(|l| match l.strip_prefix(&prefix) {
            Some(rest) => format!("{ip}\t{rest}\n"),
            None => format!("{l}\n"),
        })
        .collect()
}

/// A container as the runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerStatus {
    /// The container's id (32 hex characters).
    pub id: String,
    /// The uid of the pod it belongs to.
    pub pod_uid: String,
    /// Its name in the pod spec.
    pub name: String,
    /// Its restart count (0 for the first instance).
    pub attempt: u32,
    /// The image reference it was created from.
    pub image: String,
    /// The image's digest (`sha256:...`).
    pub image_id: String,
    /// Its state now.
    pub state: ContainerState,
    /// Its process's pid on the node, while it runs.
    pub pid: Option<u32>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When its process started.
    pub started_at: Option<SystemTime>,
    /// When its process ended.
    pub finished_at: Option<SystemTime>,
    /// How its process ended (128 + n for signal n).
    pub exit_code: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, or a runtime error's text.
    pub reason: Option<String>,
    /// The termination message, or more of a runtime error.
    pub message: Option<String>,
    /// Its CRI-format log file.
    pub log_path: PathBuf,
    /// The labels it was created with ([`labels`]).
    pub labels: BTreeMap<String, String>,
}

#[cfg(test)]
impl ContainerStatus {
    /// A container for unit tests: container `name` of pod `pod_uid`, `attempt`, `state`,
    /// made at `created_at`; nothing else set (change fields with struct update syntax).
    pub(crate) fn for_test(
        id: &str,
        pod_uid: &str,
        name: &str,
        attempt: u32,
        state: ContainerState,
        created_at: SystemTime,
    ) -> ContainerStatus {
        ContainerStatus {
            id: id.into(),
            pod_uid: pod_uid.into(),
            name: name.into(),
            attempt,
            image: String::new(),
            image_id: String::new(),
            state,
            pid: None,
            created_at,
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            log_path: PathBuf::new(),
            labels: BTreeMap::new(),
        }
    }
}

/// Output of a command run in a container.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecResult {
    /// The command's exit code.
    pub exit_code: i32,
    /// What it wrote to stdout.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// What an interactive exec runs and which of its streams the caller wants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecSpec {
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// A terminal: stdout and stderr are one stream (stdout), resizes apply.
    pub tty: bool,
    /// The caller writes the process's stdin.
    pub stdin: bool,
    /// The caller reads its stdout.
    pub stdout: bool,
    /// The caller reads its stderr (not with a terminal).
    pub stderr: bool,
}

/// A started interactive exec: its id and the caller's ends of its streams (non-blocking
/// FIFOs, opened before the process started, so nothing it writes is lost).
#[derive(Debug)]
pub struct ExecIo {
    /// The exec's id in its shim.
    pub exec_id: String,
    /// Writing end of the process's stdin; its end of input is this dropped, then
    /// [`Runtime::exec_close_stdin`].
    pub stdin: Option<std::fs::File>,
    /// Reading end of its stdout (with a terminal: all its output).
    pub stdout: Option<std::fs::File>,
    /// Reading end of its stderr.
    pub stderr: Option<std::fs::File>,
}

/// A container's own process, attached (`kubectl attach`).
#[derive(Debug)]
pub struct AttachIo {
    /// Writing end of its stdin (a container created with `stdin`), else `None`.
    pub stdin: Option<std::fs::File>,
    /// Its output from now on, `(stream, bytes)`, until it ends; chunks a slow reader has no
    /// room for are dropped (the log keeps everything).
    pub output: async_channel::Receiver<logs::Chunk>,
    /// Created with a terminal: output is one stream, resizes apply.
    pub tty: bool,
    /// Its stdin is to be closed when this first attach session ends.
    pub stdin_once: bool,
}

/// A container exit the runtime saw (a hint: [`Runtime::container_status`] is the truth).
#[derive(Clone, Debug, PartialEq)]
pub struct ExitEvent {
    /// The container whose process exited.
    pub container_id: String,
    /// Its exit code.
    pub exit_code: i32,
    /// When it exited.
    pub at: SystemTime,
}

/// The runtime interface.
pub trait Runtime: Send + Sync {
    /// The backend and the versions under it (for node status and logs).
    fn version(&self) -> Result<String>;

    /// Makes a pod's sandbox: its namespaces, cgroup parent, hosts and resolv.conf. Idempotent.
    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<Sandbox>;
    /// Stops every container of the pod (SIGKILL after `grace`) and releases its shim.
    fn stop_pod_sandbox(&self, pod_uid: &str, grace: Duration) -> Result<()>;
    /// Removes the sandbox and everything left of its containers. Idempotent.
    fn remove_pod_sandbox(&self, pod_uid: &str) -> Result<()>;
    /// Every sandbox the runtime holds (including ones of pods the agent no longer knows).
    fn list_pod_sandboxes(&self) -> Result<Vec<Sandbox>>;

    /// Creates a container in the pod's sandbox; returns its id. Its errors are of
    /// [`Stage::Create`], or [`Stage::Config`] for a configuration refused as it is.
    fn create_container(&self, pod_uid: &str, config: &ContainerConfig) -> Result<String>;
    /// Starts a created container. Its errors are of [`Stage::Start`].
    fn start_container(&self, id: &str) -> Result<()>;
    /// SIGTERM, then SIGKILL after `grace`; returns when the process is gone.
    fn stop_container(&self, id: &str, grace: Duration) -> Result<()>;
    /// Removes a stopped container and what is its own (bundle, rootfs layer, runc state).
    fn remove_container(&self, id: &str) -> Result<()>;
    /// One container's status.
    fn container_status(&self, id: &str) -> Result<ContainerStatus>;
    /// Every container the runtime holds.
    fn list_containers(&self) -> Result<Vec<ContainerStatus>>;
    /// The containers of one pod (what its worker syncs from).
    fn list_pod_containers(&self, pod_uid: &str) -> Result<Vec<ContainerStatus>>;
    /// Runs `cmd` in a running container, killing it after `timeout`.
    fn exec_sync(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecResult>;
    /// Starts an interactive exec in a running container (`kubectl exec`): its streams are
    /// handed back open; it runs until it exits. [`Runtime::exec_remove`] must follow.
    fn exec_start(&self, id: &str, spec: &ExecSpec) -> Result<ExecIo>;
    /// Sets an exec's terminal size (`exec_id` empty: the container's own process).
    fn exec_resize(&self, id: &str, exec_id: &str, width: u16, height: u16) -> Result<()>;
    /// Ends an exec's input (the shim keeps a writer of its own on the stdin FIFO, so the
    /// caller's close alone is not the end).
    fn exec_close_stdin(&self, id: &str, exec_id: &str) -> Result<()>;
    /// Waits up to `timeout` for an exec to exit: its exit code, or `None` if it still runs.
    fn exec_wait(&self, id: &str, exec_id: &str, timeout: Duration) -> Result<Option<i32>>;
    /// Kills an exec if it still runs and removes it from its shim (its output copied out
    /// first) and its FIFOs. Idempotent.
    fn exec_remove(&self, id: &str, exec_id: &str) -> Result<()>;
    /// Attaches to a running container's own process.
    fn attach(&self, id: &str) -> Result<AttachIo>;
    /// Exit events, as they arrive (every call returns the same channel).
    fn exit_events(&self) -> async_channel::Receiver<ExitEvent>;
}

/// What an image says about how to run it (its OCI config).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageSpec {
    /// The image id: its config digest, `sha256:...`.
    pub id: String,
    /// `config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// `config.WorkingDir` (empty: `/`).
    pub working_dir: String,
    /// `uid`, `uid:gid`, or a name (resolved by the runtime from the rootfs /etc/passwd).
    pub user: String,
}

/// A mount making up a container's root filesystem, as containerd's `types.Mount` (handed
/// to the shim's Create as `rootfs`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RootfsMount {
    /// `overlay`, `bind`, ...
    pub kind: String,
    /// What is mounted (a directory, or the overlay's `overlay`).
    pub source: String,
    /// Mount options (`lowerdir=...`, `rbind`, `ro`).
    pub options: Vec<String>,
}

/// Where container root filesystems come from: the image store implements it. The runtime
/// asks it for an image's spec and for a rootfs of a container's own, and releases it when
/// the container is removed.
pub trait RootfsProvider: Send + Sync {
    /// The spec of a local image (`NotFound` when the store has no such image).
    fn image_spec(&self, reference: &str) -> Result<ImageSpec>;
    /// Makes a rootfs for container `container_id` from image `reference` (a writable layer of
    /// its own over the image's layers); idempotent for the same id.
    fn prepare_rootfs(&self, reference: &str, container_id: &str) -> Result<Vec<RootfsMount>>;
    /// Removes the container's writable layer. Idempotent.
    fn release_rootfs(&self, container_id: &str) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_reasons() {
        for (stage, reason) in [
            (Stage::Config, "CreateContainerConfigError"),
            (Stage::Create, "CreateContainerError"),
            (Stage::Start, "RunContainerError"),
            (Stage::Other, "RunContainerError"),
        ] {
            assert_eq!(stage.waiting_reason().as_str(), reason, "{stage:?}");
        }
    }

    /// The innermost stage stands: a config refusal inside a create stays a config error.
    #[test]
    fn the_first_stage_given_stands() {
        let e = RuntimeError::new("c1", "mkfifo", ErrorKind::Other, "EEXIST");
        assert_eq!(e.stage, Stage::Other);
        assert_eq!(e.clone().during(Stage::Create).stage, Stage::Create);
        let e = e.during(Stage::Config).during(Stage::Create);
        assert_eq!(
            e.stage.waiting_reason().as_str(),
            "CreateContainerConfigError"
        );
        assert_eq!(e.to_string(), "mkfifo c1: EEXIST");
    }
}
