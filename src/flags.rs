//! Command-line flags (argh): the agent is configured by flags only. Names follow the
//! kubelet's where one exists.

use crate::cloudlink::{CloudError, LinkConfig};
use crate::eviction::Thresholds;
use argh::FromArgs;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A duration flag value: `20s`, `1m`, `2m30s`, `500ms`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Dur).ok_or_else(|| {
            format!(
                "`{s}` is not a duration: write it as 20s, 1m, 2m30s, 500ms or 1h (at most 2562047h)"
            )
        })
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

/// The longest duration a flag takes: Go's `time.Duration` limit (2^63-1 ns, about 292
/// years), which the kubelet's flags share. A longer one is refused, not wrapped or clamped.
pub const MAX_DURATION: Duration = Duration::new(9_223_372_036, 854_775_807);

/// Parses a Go-style duration (`1h2m3s`, `250ms`, `1.5h`, `10us`); a bare `0` is zero.
/// `None` for anything else: a sign, an unknown unit, no number, or beyond [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        // Huge or non-finite products are refused here, never handed to from_secs_f64.
        let part = Duration::try_from_secs_f64(n * unit_secs).ok()?;
        total = total.checked_add(part).filter(|t| *t <= MAX_DURATION)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A size flag value: `10Mi`, `512Ki`, `1G`, `1048576`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // The quantity saturates at i64::MAX: a size that large is a mistake, not a limit.
        crate::api::quantity::bytes(&serde_json::Value::String(s.to_string()))
            .filter(|b| (0..i64::MAX).contains(b))
            .map(|b| Size(b as u64))
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a size: write it as 10Mi, 512Ki, 1G or a byte count (below 8Ei)"
                )
            })
    }
}

/// A log level flag value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level(pub tracing::Level);

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(Level(tracing::Level::ERROR)),
            "warn" => Ok(Level(tracing::Level::WARN)),
            "info" => Ok(Level(tracing::Level::INFO)),
            "debug" => Ok(Level(tracing::Level::DEBUG)),
            "trace" => Ok(Level(tracing::Level::TRACE)),
            _ => Err(format!(
                "`{s}` is not a log level: one of error, warn, info, debug, trace"
            )),
        }
    }
}

/// A percentage flag value (0-100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percent(pub u8);

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim_end_matches('%').parse::<u8>() {
            Ok(p) if p <= 100 => Ok(Percent(p)),
            _ => Err(format!(
                "`{s}` is not a percentage: a whole number from 0 to 100"
            )),
        }
    }
}

/// A `--node-labels` value: `k=v,k2=v2` (a value may be empty: `k=`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(pub Vec<(String, String)>);

impl FromStr for Labels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((k, val)) if !k.trim().is_empty() => {
                    v.push((k.trim().to_string(), val.trim().to_string()))
                }
                _ => {
                    return Err(format!(
                        "`{part}` is not a label: write key=value,key2=value2"
                    ))
                }
            }
        }
        Ok(Labels(v))
    }
}

/// edged: an edge-node agent that keeps the pods of this device running, with or without the
/// cloud. With no command, runs the agent.
#[derive(FromArgs, Debug)]
pub struct Flags {
    /// the node's name (default: the hostname)
    #[argh(option)]
    pub node_name: Option<String>,

    /// where edged keeps its store, images, bundles and volumes (default /var/lib/edged)
    #[argh(option, default = "PathBuf::from(\"/var/lib/edged\")")]
    pub root_dir: PathBuf,

    /// a directory of Pod, ConfigMap and Secret manifests (JSON or YAML) to run as static pods
    #[argh(option)]
    pub pod_manifest_path: Option<PathBuf>,

    /// how often the manifest directory is read again (default 20s); changes inotify sees are
    /// read at once, and a watched directory whose files are settled and no symlinks is
    /// read at least every 20s
    #[argh(option, default = "Dur(Duration::from_secs(20))")]
    pub file_check_frequency: Dur,

    /// log level: error, warn, info, debug, trace (default info)
    #[argh(option, default = "Level(tracing::Level::INFO)")]
    pub log_level: Level,

    /// where container logs go, as <dir>/<ns>_<pod>_<uid>/<container>/<n>.log (default /var/log/pods)
    #[argh(option, default = "PathBuf::from(\"/var/log/pods\")")]
    pub pod_log_dir: PathBuf,

    /// a container log is rotated when it reaches this size (default 10Mi)
    #[argh(option, default = "Size(10 << 20)")]
    pub container_log_max_size: Size,

    /// rotated logs kept per container, the current one included (default 5)
    #[argh(option, default = "5")]
    pub container_log_max_files: u32,

    /// the containerd shim v2 binary (default containerd-shim-runc-v2, looked up in PATH)
    #[argh(option, default = "String::from(\"containerd-shim-runc-v2\")")]
    pub runtime_shim: String,

    /// which containers share a shim process: pod (one shim per pod) or node (one shim for
    /// every pod: less memory, but a shim crash restarts every pod) (default pod)
    #[argh(option, default = "crate::runtime::shim::ShimGrouping::Pod")]
    pub shim_grouping: crate::runtime::shim::ShimGrouping,

    /// keep one shim started ahead for the next pod: its first container skips the shim's
    /// start (7-18 ms of a 45-60 ms pod start here), for one idle shim (11.5 MiB RSS)
    #[argh(switch)]
    pub spare_shim: bool,

    /// the OCI runtime the shim runs: runc, crun or a path (default runc)
    #[argh(option, default = "String::from(\"runc\")")]
    pub runtime_binary: String,

    /// a directory of image archives (OCI layout or docker save tars) imported at start
    #[argh(option)]
    pub image_dir: Option<PathBuf>,

    /// how often PLEG relists containers (default 1s)
    #[argh(option, default = "Dur(Duration::from_secs(1))")]
    pub pleg_relist_period: Dur,

    /// how often changed pod statuses go upstream (default 10s)
    #[argh(option, default = "Dur(Duration::from_secs(10))")]
    pub status_update_frequency: Dur,

    /// how often the node status goes upstream when it changed (default 10s)
    #[argh(option, default = "Dur(Duration::from_secs(10))")]
    pub node_status_update_frequency: Dur,

    /// the most pods this node runs (default 110)
    #[argh(option, default = "110")]
    pub max_pods: u32,

    /// the most processes a pod may run (its cgroup's pids.max); -1: no limit (default -1)
    #[argh(option, default = "-1")]
    pub pod_max_pids: i64,

    /// how often dead containers are collected (default 1m)
    #[argh(option, default = "Dur(Duration::from_secs(60))")]
    pub container_gc_period: Dur,

    /// a dead container is kept at least this long (default 0s)
    #[argh(option, default = "Dur(Duration::ZERO)")]
    pub minimum_container_ttl_duration: Dur,

    /// dead instances kept per container; below zero, no limit (default 1)
    #[argh(option, default = "1")]
    pub maximum_dead_containers_per_container: i32,

    /// dead containers kept on the node; below zero, no limit (default -1)
    #[argh(option, default = "-1")]
    pub maximum_dead_containers: i32,

    /// how often image disk usage is checked (default 5s)
    #[argh(option, default = "Dur(Duration::from_secs(5))")]
    pub image_gc_period: Dur,

    /// disk usage percent of the image filesystem above which image GC runs (default 85)
    #[argh(option, default = "Percent(85)")]
    pub image_gc_high_threshold: Percent,

    /// disk usage percent image GC frees down to (default 80)
    #[argh(option, default = "Percent(80)")]
    pub image_gc_low_threshold: Percent,

    /// an unused image is kept at least this long (default 2m)
    #[argh(option, default = "Dur(Duration::from_secs(120))")]
    pub image_minimum_gc_age: Dur,

    /// hard eviction thresholds, signal<quantity or signal<percent, comma-separated
    /// (memory.available, nodefs.available, nodefs.inodesFree, imagefs.available,
    /// imagefs.inodesFree); empty: none (default memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%)
    #[argh(option, default = "Thresholds::default()")]
    pub eviction_hard: Thresholds,

    /// the KubeEdge CloudHub websocket server, HOST:PORT (usually port 10000); unset: no cloud
    #[argh(option)]
    pub cloudhub_server: Option<String>,

    /// the CloudHub certificate server, HOST:PORT (default: the --cloudhub-server host, port 10002)
    #[argh(option)]
    pub cloudhub_https_server: Option<String>,

    /// the join token (`keadm gettoken`), needed until the node has a certificate
    #[argh(option)]
    pub token: Option<String>,

    /// a file holding the join token (keeps it out of the process list)
    #[argh(option)]
    pub token_file: Option<PathBuf>,

    /// the KubeEdge project id (default e632aba927ea4ac2b575ec1603d56f10)
    #[argh(option, default = "String::from(crate::cloudlink::DEFAULT_PROJECT_ID)")]
    pub project_id: String,

    /// where the node certificate, its key and the cloud's CA are kept (default <root-dir>/certs)
    #[argh(option)]
    pub cert_dir: Option<PathBuf>,

    /// how often a keepalive goes to the cloud (default 15s)
    #[argh(option, default = "Dur(Duration::from_secs(15))")]
    pub heartbeat: Dur,

    /// extra labels for the registered Node: key=value,key2=value2
    #[argh(option, default = "Labels::default()")]
    pub node_labels: Labels,

    /// the node's InternalIP (default: the source address of the default route)
    #[argh(option)]
    pub node_ip: Option<std::net::IpAddr>,

    /// the directory of CNI network configs: the first .conf/.conflist/.json in lexical order
    /// is the pod network; none there: pods get loopback only (default /etc/cni/net.d)
    #[argh(option, default = "PathBuf::from(\"/etc/cni/net.d\")")]
    pub cni_conf_dir: PathBuf,

    /// where CNI plugins are looked up, colon-separated (default /opt/cni/bin:/usr/lib/cni)
    #[argh(option, default = "String::from(\"/opt/cni/bin:/usr/lib/cni\")")]
    pub cni_bin_dir: String,

    /// where CNI results are cached for DEL and CHECK (default /var/lib/cni)
    #[argh(option, default = "PathBuf::from(\"/var/lib/cni\")")]
    pub cni_cache_dir: PathBuf,

    /// the longest one CNI plugin call may take before it is killed (default 1m)
    #[argh(option, default = "Dur(Duration::from_secs(60))")]
    pub cni_timeout: Dur,

    /// a cluster DNS server's IP for pods with dnsPolicy ClusterFirst (repeatable)
    #[argh(option)]
    pub cluster_dns: Vec<std::net::IpAddr>,

    /// the cluster's DNS domain (default cluster.local)
    #[argh(option, default = "String::from(\"cluster.local\")")]
    pub cluster_domain: String,

    /// where Localhost seccomp profiles are (default <root-dir>/seccomp)
    #[argh(option)]
    pub seccomp_profile_root: Option<PathBuf>,

    /// unsafe sysctls pods may set besides the safe ones: names or prefixes ending in `*`,
    /// comma-separated (repeatable), such as `kernel.msg*,net.core.somaxconn`
    #[argh(option)]
    pub allowed_unsafe_sysctls: Vec<String>,

    /// the resolv.conf pods with dnsPolicy Default start from (default /etc/resolv.conf)
    #[argh(option, default = "PathBuf::from(\"/etc/resolv.conf\")")]
    pub resolv_conf: PathBuf,

    /// the KubeEdge CloudStream tunnel server, HOST:PORT, for kubectl logs/exec/top (default:
    /// the --cloudhub-server host, port 10004)
    #[argh(option)]
    pub cloudstream_server: Option<String>,

    /// open the EdgeStream tunnel when a cloud is set: true or false (default true)
    #[argh(option, default = "true")]
    pub enable_stream: bool,

    /// a damaged store (truncated, overwritten or emptied data.mdb) is moved aside as
    /// data.mdb.damaged-<seconds> and the agent starts with an empty one, rebuilt from the
    /// manifests and the cloud; without it the agent refuses to start (exit code 3)
    #[argh(switch)]
    pub store_recover: bool,

    /// the address the kubelet API (logs, pods, health) listens on; any other than
    /// loopback serves TLS with client certificates only (default 127.0.0.1)
    #[argh(option, default = "std::net::IpAddr::from([127, 0, 0, 1])")]
    pub address: std::net::IpAddr,

    /// the port of the kubelet API; 0 turns it off (default 10350)
    #[argh(option, default = "10350")]
    pub port: u16,

    /// a blob of an image pull with no byte for this long is retried (default 1m)
    #[argh(option, default = "Dur(Duration::from_secs(60))")]
    pub image_pull_progress_deadline: Dur,

    /// a blob of an image pull slower than this over --image-pull-min-rate-window is retried
    /// (a trickle counts as stalled), such as 1KiB/s; 0 turns it off (default 1KiB/s)
    #[argh(option, default = "ByteRate(1024)")]
    pub image_pull_min_rate: ByteRate,

    /// the window --image-pull-min-rate is measured over (default 1m)
    #[argh(option, default = "Dur(Duration::from_secs(60))")]
    pub image_pull_min_rate_window: Dur,

    /// blobs one image pull downloads at once (default 3)
    #[argh(option, default = "3")]
    pub max_concurrent_downloads: usize,

    /// pull images one at a time: true or false (default true, as the kubelet)
    #[argh(option, default = "true")]
    pub serialize_image_pulls: bool,

    /// with --serialize-image-pulls=false, at most this many pulls at once; 0: no limit
    /// (default 0)
    #[argh(option, default = "0")]
    pub max_parallel_image_pulls: u32,

    /// a mirror of a registry, REGISTRY=URL (docker.io=https://mirror.example); repeat it:
    /// mirrors are tried in order, then the registry itself
    #[argh(option)]
    pub registry_mirror: Vec<Mirror>,

    /// never fall back from a registry's mirrors to the registry
    #[argh(switch)]
    pub registry_mirror_only: bool,

    /// a registry, HOST[:PORT], reached over TLS without verification or plain HTTP; repeat it
    #[argh(option)]
    pub insecure_registry: Vec<String>,

    /// a CA to verify a registry with, HOST[:PORT]=FILE (PEM); repeat it
    #[argh(option)]
    pub registry_ca: Vec<Mirror>,

    /// a command to run instead of the agent (get, logs, exec, attach, image)
    #[argh(subcommand)]
    pub command: Option<Command>,
}

/// A `KEY=VALUE` flag (`--registry-mirror`, `--registry-ca`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror(pub String, pub String);

impl FromStr for Mirror {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok(Mirror(k.into(), v.into())),
            _ => Err(format!(
                "`{s}`: write it as REGISTRY=VALUE, such as docker.io=https://mirror.example"
            )),
        }
    }
}

/// A transfer rate in bytes per second (`1KiB/s`, `500B/s`, `2MiB/s`, `0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRate(pub u64);

impl FromStr for ByteRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a rate: write it as 1KiB/s, 500B/s, 2MiB/s or 0");
        let t = s.trim().strip_suffix("/s").unwrap_or(s.trim());
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = match unit {
            "" | "B" => 1,
            "KiB" | "Ki" => 1 << 10,
            "MiB" | "Mi" => 1 << 20,
            "kB" | "KB" | "k" => 1000,
            "MB" | "M" => 1_000_000,
            _ => return Err(bad()),
        };
        Ok(ByteRate(n.checked_mul(mult).ok_or_else(bad)?))
    }
}

/// Commands beside running the agent.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    /// `edged attach`: a terminal on a container's own process.
    Attach(AttachCmd),
    /// `edged exec`: a command in a running container.
    Exec(ExecCmd),
    /// `edged get`: pods, ConfigMaps, Secrets, the node, from the store.
    Get(GetCmd),
    /// `edged image`: import, list, pull and remove images.
    Image(crate::images::cli::ImageCmd),
    /// `edged logs`: a container's log, as `kubectl logs` prints it.
    Logs(LogsCmd),
}

/// run a command in a container, through the running agent's kubelet API (--address, --port)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "exec")]
pub struct ExecCmd {
    /// the pod
    #[argh(positional)]
    pub pod: String,
    /// the container (default: the pod's only, or first, container)
    #[argh(option, short = 'c')]
    pub container: Option<String>,
    /// the namespace (default: default)
    #[argh(option, short = 'n')]
    pub namespace: Option<String>,
    /// pass this terminal's stdin to the command
    #[argh(switch, short = 'i')]
    pub stdin: bool,
    /// give the command a terminal (this one, in raw mode)
    #[argh(switch, short = 't')]
    pub tty: bool,
    /// the command and its arguments, after --
    #[argh(positional, greedy)]
    pub command: Vec<String>,
}

/// attach to a container's running process, through the running agent's kubelet API
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "attach")]
pub struct AttachCmd {
    /// the pod
    #[argh(positional)]
    pub pod: String,
    /// the container (default: the pod's only, or first, container)
    #[argh(option, short = 'c')]
    pub container: Option<String>,
    /// the namespace (default: default)
    #[argh(option, short = 'n')]
    pub namespace: Option<String>,
    /// pass this terminal's stdin to the process
    #[argh(switch, short = 'i')]
    pub stdin: bool,
    /// the process has a terminal: this one goes in raw mode
    #[argh(switch, short = 't')]
    pub tty: bool,
}

/// show what the store holds (works beside a running agent)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "get")]
pub struct GetCmd {
    /// pods, configmaps, secrets or node
    #[argh(positional)]
    pub what: String,
    /// one object's name
    #[argh(positional)]
    pub name: Option<String>,
    /// the namespace (default: all)
    #[argh(option, short = 'n')]
    pub namespace: Option<String>,
    /// output: table (default), json or yaml
    #[argh(option, short = 'o', default = "String::from(\"table\")")]
    pub output: String,
}

/// print a container's log, as kubectl logs (works beside a running agent)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "logs")]
pub struct LogsCmd {
    /// the pod
    #[argh(positional)]
    pub pod: String,
    /// the container (needed when the pod has several)
    #[argh(option, short = 'c')]
    pub container: Option<String>,
    /// the namespace (default: default)
    #[argh(option, short = 'n')]
    pub namespace: Option<String>,
    /// keep printing new lines until the container ends
    #[argh(switch, short = 'f')]
    pub follow: bool,
    /// the container's instance before the current one
    #[argh(switch)]
    pub previous: bool,
    /// only the last N lines (default: all)
    #[argh(option, default = "-1")]
    pub tail: i64,
    /// only lines newer than this, as 5s, 2m, 3h
    #[argh(option)]
    pub since: Option<Dur>,
    /// only lines written at or after this RFC 3339 time
    #[argh(option)]
    pub since_time: Option<String>,
    /// prefix each line with its time (RFC 3339, nanoseconds)
    #[argh(switch)]
    pub timestamps: bool,
    /// stop after this many bytes
    #[argh(option)]
    pub limit_bytes: Option<u64>,
}

impl Flags {
    /// Parses `args` (without the program name). `Err((text, code))`: print `text`, exit with
    /// `code` (0 for `--help`, 2 for a bad flag).
    pub fn parse(args: &[&str]) -> Result<Flags, (String, i32)> {
        match Flags::from_args(&["edged"], args) {
            Ok(mut f) => f
                .check()
                .and_then(|_| f.absolute_paths())
                .map(|_| f)
                .map_err(|e| (format!("edged: {e}"), 2)),
            Err(early) => match early.status {
                Ok(()) => Err((early.output, 0)),
                Err(()) => Err((format!("edged: {}", early.output.trim_end()), 2)),
            },
        }
    }

    /// Checks of combinations the types alone do not catch.
    fn check(&self) -> Result<(), String> {
        if self.image_gc_low_threshold.0 > self.image_gc_high_threshold.0 {
            return Err(format!(
                "--image-gc-low-threshold ({}) must not be above --image-gc-high-threshold ({})",
                self.image_gc_low_threshold.0, self.image_gc_high_threshold.0
            ));
        }
        if self.pleg_relist_period.0.is_zero() {
            return Err("--pleg-relist-period must be above zero".into());
        }
        if self.container_log_max_files < 2 {
            return Err("--container-log-max-files must be at least 2".into());
        }
        if self.heartbeat.0.is_zero() {
            return Err("--heartbeat must be above zero".into());
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err("give --token or --token-file, not both".into());
        }
        if self.pod_max_pids == 0 || self.pod_max_pids < -1 {
            return Err(format!(
                "--pod-max-pids must be -1 (no limit) or above zero, not {}",
                self.pod_max_pids
            ));
        }
        if self.cni_timeout.0.is_zero() {
            return Err("--cni-timeout must be above zero".into());
        }
        if !self.cluster_domain.is_empty() {
            crate::api::validate::dns1123_subdomain(&self.cluster_domain)
                .map_err(|e| format!("--cluster-domain: {e}"))?;
        }
        if let Some(n) = &self.node_name {
            crate::api::validate::dns1123_subdomain(n).map_err(|e| format!("--node-name: {e}"))?;
        }
        if self.serialize_image_pulls && self.max_parallel_image_pulls > 1 {
            return Err(format!(
                "--max-parallel-image-pulls {} needs --serialize-image-pulls=false",
                self.max_parallel_image_pulls
            ));
        }
        if self.max_concurrent_downloads == 0 {
            return Err("--max-concurrent-downloads must be at least 1".into());
        }
        if self.image_pull_progress_deadline.0.is_zero() {
            return Err("--image-pull-progress-deadline must be above zero".into());
        }
        self.sysctl_allowlist()?;
        Ok(())
    }

    /// The cloud link's settings (`None` when `--cloudhub-server` is unset).
    pub fn link_config(&self) -> Result<Option<LinkConfig>, CloudError> {
        let f = self;
        let Some(server) = f.cloudhub_server.clone() else {
            return Ok(None);
        };
        let (host, _) = crate::cloudlink::https::split_host_port(&server)?;
        let https_server = match &f.cloudhub_https_server {
            Some(s) => s.clone(),
            None if host.contains(':') => format!("[{host}]:10002"),
            None => format!("{host}:10002"),
        };
        let token = match (&f.token, &f.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(p)) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| {
                        CloudError::io(format!("reading --token-file {}", p.display()), e)
                    })?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Ok(Some(LinkConfig {
            server,
            https_server,
            node: f.node_name(),
            project_id: f.project_id.clone(),
            cert_dir: f.cert_dir(),
            token,
            heartbeat: f.heartbeat.0,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            node_labels: f.node_labels.0.clone(),
            node_ip: f.node_ip,
            root_dir: f.root_dir.clone(),
            max_pods: f.max_pods,
            kubelet_port: f.port,
        }))
    }

    /// The registry options of the flags.
    pub fn registry_options(&self) -> crate::images::registry::Options {
        crate::images::registry::Options {
            mirrors: self
                .registry_mirror
                .iter()
                .map(|m| (m.0.clone(), m.1.clone()))
                .collect(),
            mirror_only: self.registry_mirror_only,
            insecure: self.insecure_registry.clone(),
            cas: self
                .registry_ca
                .iter()
                .map(|m| (m.0.clone(), PathBuf::from(&m.1)))
                .collect(),
            progress_deadline: self.image_pull_progress_deadline.0,
            min_rate: (self.image_pull_min_rate.0 > 0
                && !self.image_pull_min_rate_window.0.is_zero())
            .then_some(crate::images::registry::MinRate {
                bytes_per_sec: self.image_pull_min_rate.0,
                window: self.image_pull_min_rate_window.0,
            }),
            max_concurrent_downloads: self.max_concurrent_downloads,
            retry: crate::images::registry::Retry::default(),
        }
    }

    /// Pulls at once: 1 when serialized, else `--max-parallel-image-pulls` (0: no limit).
    pub fn parallel_image_pulls(&self) -> usize {
        if self.serialize_image_pulls {
            1
        } else if self.max_parallel_image_pulls == 0 {
            usize::MAX
        } else {
            self.max_parallel_image_pulls as usize
        }
    }

    /// The sysctls pods may set: the safe ones and `--allowed-unsafe-sysctls`.
    pub fn sysctl_allowlist(&self) -> Result<crate::kuberuntime::sysctl::Allowlist, String> {
        let patterns: Vec<String> = self
            .allowed_unsafe_sysctls
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        crate::kuberuntime::sysctl::Allowlist::new(&patterns)
    }

    /// Makes every path flag absolute (against the working directory at start): the shim,
    /// runc and overlay mounts run elsewhere, and a relative `--root-dir` would name other
    /// directories there. Symlinks are kept (the directories may not exist yet).
    fn absolute_paths(&mut self) -> Result<(), String> {
        let abs = |flag: &str, p: &mut PathBuf| -> Result<(), String> {
            if p.as_os_str().is_empty() {
                return Err(format!("--{flag} must not be empty"));
            }
            *p = std::path::absolute(&*p).map_err(|e| format!("--{flag} {}: {e}", p.display()))?;
            Ok(())
        };
        abs("root-dir", &mut self.root_dir)?;
        abs("pod-log-dir", &mut self.pod_log_dir)?;
        abs("cni-conf-dir", &mut self.cni_conf_dir)?;
        abs("cni-cache-dir", &mut self.cni_cache_dir)?;
        abs("resolv-conf", &mut self.resolv_conf)?;
        for (flag, p) in [
            ("pod-manifest-path", &mut self.pod_manifest_path),
            ("image-dir", &mut self.image_dir),
            ("token-file", &mut self.token_file),
            ("cert-dir", &mut self.cert_dir),
            ("seccomp-profile-root", &mut self.seccomp_profile_root),
        ] {
            if let Some(p) = p {
                abs(flag, p)?;
            }
        }
        Ok(())
    }

    /// Where Localhost seccomp profiles are: `--seccomp-profile-root`, or `<root-dir>/seccomp`.
    pub fn seccomp_profile_root(&self) -> PathBuf {
        self.seccomp_profile_root
            .clone()
            .unwrap_or_else(|| self.root_dir.join("seccomp"))
    }

    /// Where certificates are kept: `--cert-dir`, or `<root-dir>/certs`.
    pub fn cert_dir(&self) -> PathBuf {
        self.cert_dir
            .clone()
            .unwrap_or_else(|| self.root_dir.join("certs"))
    }

    /// The node name: the flag, or the hostname in lower case.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .map(|h| h.to_ascii_lowercase())
                .unwrap_or_else(|| "edge-node".to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_flags() {
        let f = Flags::parse(&[
            "--registry-mirror",
            "docker.io=https://m1",
            "--registry-mirror",
            "docker.io=http://m2:5000",
            "--insecure-registry",
            "reg.lan:5000",
            "--registry-ca",
            "reg.lan=/ca.pem",
            "--image-pull-min-rate",
            "2KiB/s",
        ])
        .unwrap();
        let o = f.registry_options();
        assert_eq!(
            o.mirrors[1],
            ("docker.io".to_string(), "http://m2:5000".to_string())
        );
        assert_eq!(o.cas[0].1, PathBuf::from("/ca.pem"));
        assert_eq!(o.min_rate.unwrap().bytes_per_sec, 2048);
        assert_eq!(o.progress_deadline, Duration::from_secs(60));
        assert_eq!(o.max_concurrent_downloads, 3);
        assert_eq!(f.parallel_image_pulls(), 1);
        assert!(Flags::parse(&["--registry-mirror", "nourl"]).is_err());
        assert!(Flags::parse(&["--image-pull-min-rate", "fast"]).is_err());
        assert!(Flags::parse(&["--max-parallel-image-pulls", "4"]).is_err());
        let f = Flags::parse(&[
            "--serialize-image-pulls",
            "false",
            "--max-parallel-image-pulls",
            "4",
        ])
        .unwrap();
        assert_eq!(f.parallel_image_pulls(), 4);
        let f = Flags::parse(&["--image-pull-min-rate", "0"]).unwrap();
        assert!(f.registry_options().min_rate.is_none());
        assert_eq!("500B/s".parse::<ByteRate>().unwrap().0, 500);
        assert_eq!("1MiB/s".parse::<ByteRate>().unwrap().0, 1 << 20);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m30s"), Some(Duration::from_secs(150)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "s", "20", "1x", "-1s", "1m s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn defaults_and_errors() {
        let f = Flags::parse(&[]).unwrap();
        assert_eq!(f.file_check_frequency.0, Duration::from_secs(20));
        assert_eq!(f.root_dir, PathBuf::from("/var/lib/edged"));
        assert_eq!(f.maximum_dead_containers, -1);
        let (msg, code) = Flags::parse(&["--file-check-frequency", "soon"]).unwrap_err();
        assert_eq!(code, 2);
        assert!(
            msg.contains("--file-check-frequency") && msg.contains("2m30s"),
            "{msg}"
        );
        assert_eq!(f.pod_max_pids, -1);
        assert_eq!(
            Flags::parse(&["--pod-max-pids", "100"])
                .unwrap()
                .pod_max_pids,
            100
        );
        let (msg, code) = Flags::parse(&["--pod-max-pids", "0"]).unwrap_err();
        assert_eq!(code, 2);
        assert!(msg.contains("--pod-max-pids"), "{msg}");
        let (msg, code) = Flags::parse(&["--allowed-unsafe-sysctls", "vm.swappiness"]).unwrap_err();
        assert_eq!(code, 2);
        assert!(
            msg.starts_with("edged: --allowed-unsafe-sysctls: `vm.swappiness`"),
            "{msg}"
        );
        let f =
            Flags::parse(&["--allowed-unsafe-sysctls", "kernel.msg*,net.core.somaxconn"]).unwrap();
        assert!(f.sysctl_allowlist().is_ok());
        let (msg, code) = Flags::parse(&["--image-gc-high-threshold", "70"]).unwrap_err();
        assert_eq!(code, 2);
        assert!(msg.contains("low-threshold"), "{msg}");
        let (msg, code) = Flags::parse(&["--help"]).unwrap_err();
        assert_eq!(code, 0);
        assert!(msg.contains("--pod-manifest-path"), "{msg}");
        let f = Flags::parse(&["--root-dir", "/tmp/x", "get", "pods", "-o", "json"]).unwrap();
        assert!(matches!(f.command, Some(Command::Get(GetCmd { ref what, .. })) if what == "pods"));
        let f = Flags::parse(&[
            "logs", "web", "-c", "app", "-f", "--tail", "5", "--since", "1m",
        ])
        .unwrap();
        let Some(Command::Logs(l)) = f.command else {
            panic!("not logs")
        };
        assert_eq!(
            (l.pod.as_str(), l.container.as_deref()),
            ("web", Some("app"))
        );
        assert!(l.follow && !l.previous && l.tail == 5);
        assert_eq!(l.since, Some(Dur(Duration::from_secs(60))));
        assert_eq!(
            (f.port, f.address.to_string().as_str()),
            (10350, "127.0.0.1")
        );
        let (msg, code) = Flags::parse(&["--port", "70000"]).unwrap_err();
        assert!(code == 2 && msg.contains("--port"), "{msg}");
        use crate::runtime::shim::ShimGrouping;
        assert_eq!(f.shim_grouping, ShimGrouping::Pod);
        assert!(!f.spare_shim, "no spare shim unless asked");
        assert!(Flags::parse(&["--spare-shim"]).unwrap().spare_shim);
        assert_eq!(
            Flags::parse(&["--shim-grouping", "node"])
                .unwrap()
                .shim_grouping,
            ShimGrouping::Node
        );
        let (msg, code) = Flags::parse(&["--shim-grouping", "container"]).unwrap_err();
        assert!(
            code == 2 && msg.contains("--shim-grouping") && msg.contains("pod or node"),
            "{msg}"
        );
    }

    #[test]
    fn relative_paths_are_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        let f = Flags::parse(&[
            "--root-dir",
            "r3",
            "--pod-log-dir",
            "./logs",
            "--pod-manifest-path",
            "m",
            "--cert-dir",
            "/abs/certs",
        ])
        .unwrap();
        assert_eq!(f.root_dir, cwd.join("r3"));
        assert_eq!(f.pod_log_dir, cwd.join("logs"));
        assert_eq!(f.pod_manifest_path, Some(cwd.join("m")));
        assert_eq!(f.cert_dir(), PathBuf::from("/abs/certs"));
        assert!(f.image_dir.is_none());
        let (msg, code) = Flags::parse(&["--root-dir", ""]).unwrap_err();
        assert_eq!(code, 2);
        assert!(msg.contains("--root-dir"), "{msg}");
    }

    #[test]
    fn eviction_hard() {
        let f = Flags::parse(&[]).unwrap();
        assert_eq!(f.eviction_hard, Thresholds::default());
        assert_eq!(f.eviction_hard.0.len(), 4);
        let f = Flags::parse(&["--eviction-hard", ""]).unwrap();
        assert!(f.eviction_hard.0.is_empty());
        let f = Flags::parse(&["--eviction-hard", "nodefs.available<20%"]).unwrap();
        assert_eq!(
            f.eviction_hard.0.len(),
            1,
            "the defaults are replaced, not merged"
        );
        let (msg, code) = Flags::parse(&["--eviction-hard", "pid.available<100"]).unwrap_err();
        assert_eq!(code, 2);
        assert!(
            msg.contains("--eviction-hard") && msg.contains("pid.available"),
            "{msg}"
        );
    }

    #[test]
    fn cloud_flags() {
        let f = Flags::parse(&["--root-dir", "/r"]).unwrap();
        assert_eq!(f.cert_dir(), PathBuf::from("/r/certs"));
        assert_eq!(f.heartbeat.0, Duration::from_secs(15));
        assert_eq!(f.project_id, "e632aba927ea4ac2b575ec1603d56f10");
        assert!(f.cloudhub_server.is_none() && f.node_labels.0.is_empty());
        let f = Flags::parse(&[
            "--cloudhub-server",
            "cloud:10000",
            "--node-labels",
            "zone=a, gpu=",
            "--node-ip",
            "192.0.2.1",
            "--heartbeat",
            "2s",
            "--cert-dir",
            "/c",
        ])
        .unwrap();
        assert_eq!(
            f.node_labels.0,
            vec![("zone".into(), "a".into()), ("gpu".into(), "".into())]
        );
        assert_eq!(f.cert_dir(), PathBuf::from("/c"));
        assert_eq!(f.node_ip, Some("192.0.2.1".parse().unwrap()));
        let (msg, _) = Flags::parse(&["--node-labels", "zone"]).unwrap_err();
        assert!(msg.contains("key=value"), "{msg}");
        let (msg, _) = Flags::parse(&["--token", "a", "--token-file", "b"]).unwrap_err();
        assert!(msg.contains("not both"), "{msg}");
    }

    /// Values that broke or may break a parser: huge, negative, not a number, empty, unicode.
    const HOSTILE: &[&str] = &[
        "99999999999999999999999h",
        "99999999999999999999999",
        "1e308",
        "1e309Ei",
        "99999999999999999999Ei",
        "2562048h",
        "-1",
        "-1s",
        "-0",
        "NaN",
        "nan",
        "inf",
        "-inf",
        "infinity",
        "1.5.5s",
        "",
        " ",
        ",",
        "=",
        "<",
        "%",
        "101%",
        "-5%",
        "ünïcødé",
        "1µs",
        "💥",
        "1\u{0}s",
        "0x10",
        "::::",
        "300.300.300.300",
        "a=b=c,=d",
        "memory.available<-1",
        "memory.available<1e400",
        "memory.available<NaN%",
    ];

    /// Every option of the agent, read from its own `--help`.
    fn options() -> Vec<String> {
        let (help, _) = Flags::parse(&["--help"]).unwrap_err();
        let mut out: Vec<String> = help
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .map(|l| format!("--{}", l.split_whitespace().next().unwrap_or("")))
            .filter(|f| f != "--help")
            .collect();
        out.dedup();
        out
    }

    #[test]
    fn no_flag_value_crashes_and_every_error_is_one_line_naming_the_flag() {
        let flags = options();
        assert!(flags.len() > 30, "{flags:?}");
        assert!(flags.iter().any(|f| f == "--pleg-relist-period"));
        let mut refused = 0;
        for flag in &flags {
            for value in HOSTILE {
                let got = std::panic::catch_unwind(|| Flags::parse(&[flag, value]));
                let Ok(got) = got else {
                    panic!("{flag} {value:?} panicked");
                };
                if let Err((msg, code)) = got {
                    refused += 1;
                    assert_eq!(code, 2, "{flag} {value:?}: {msg}");
                    assert_eq!(msg.lines().count(), 1, "{flag} {value:?}: {msg}");
                    // A boolean flag takes no value: the value is then a stray argument.
                    assert!(
                        msg.contains(flag.as_str()) || msg.contains("Unrecognized argument"),
                        "{flag} {value:?}: {msg}"
                    );
                }
            }
        }
        assert!(refused > 100, "only {refused} refused");
        for (args, flag) in [
            (&["logs", "p", "--since"][..], "--since"),
            (&["logs", "p", "--tail"][..], "--tail"),
        ] {
            for value in HOSTILE {
                let mut a = args.to_vec();
                a.push(value);
                if let Err((msg, code)) = Flags::parse(&a) {
                    assert!(code == 2 && msg.contains(flag), "{a:?}: {msg}");
                }
            }
        }
    }

    #[test]
    fn durations_at_and_beyond_the_go_limit() {
        assert_eq!(
            parse_duration("2562047h"),
            Some(Duration::from_secs(2562047 * 3600))
        );
        assert_eq!(parse_duration("2562048h"), None);
        assert_eq!(parse_duration("99999999999999999999999h"), None);
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("7ns"), Some(Duration::from_nanos(7)));
        let (msg, code) =
            Flags::parse(&["--pleg-relist-period", "99999999999999999999999h"]).unwrap_err();
        assert_eq!(code, 2);
        assert!(
            msg.starts_with("edged: ")
                && msg.contains("--pleg-relist-period")
                && msg.contains("2562047h"),
            "{msg}"
        );
        let (msg, _) =
            Flags::parse(&["--container-log-max-size", "99999999999999999999Ei"]).unwrap_err();
        assert!(msg.contains("--container-log-max-size"), "{msg}");
    }

    #[test]
    fn config_from_flags() {
        let f = Flags::parse(&[]).unwrap();
        assert!(f.link_config().unwrap().is_none());
        let f = Flags::parse(&[
            "--cloudhub-server",
            "10.0.0.1:10000",
            "--token",
            " h.j ",
            "--node-name",
            "n1",
        ])
        .unwrap();
        let c = f.link_config().unwrap().unwrap();
        assert_eq!(c.https_server, "10.0.0.1:10002");
        assert_eq!(c.token.as_deref(), Some("h.j"));
        assert_eq!(c.node, "n1");
        let f = Flags::parse(&["--cloudhub-server", "[::1]:10000"]).unwrap();
        assert_eq!(
            f.link_config().unwrap().unwrap().https_server,
            "[::1]:10002"
        );
        let f = Flags::parse(&["--cloudhub-server", "cloud"]).unwrap();
        assert!(f
            .link_config()
            .unwrap_err()
            .to_string()
            .contains("HOST:PORT"));
        let f =
            Flags::parse(&["--cloudhub-server", "c:1", "--token-file", "/nonexistent/t"]).unwrap();
        assert!(f
            .link_config()
            .unwrap_err()
            .to_string()
            .contains("--token-file"));
    }
}
