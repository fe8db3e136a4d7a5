//! OCI runtime spec (`config.json`) of a container, made from its [`ContainerConfig`], its
//! image's [`ImageSpec`] and its pod's sandbox. Pure: no runtime calls, so the unit tests run
//! anywhere (also under qemu for device builds).

use super::{ContainerConfig, ErrorKind, ImageSpec, Result, RuntimeError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The annotation the runc shim groups containers by (one shim per pod).
pub const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";
/// The CRI annotation naming a container's sandbox (also a grouping key of the runc shim).
pub const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The capabilities a container gets by default (containerd's and Docker's default set).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux knows (up to 6.x), for `ALL` and privileged containers.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The pod side of a container's spec: which namespaces to join and the shared files.
#[derive(Clone, Debug, Default)]
pub struct PodContext {
    /// The pod's uid: the shim grouping key.
    pub pod_uid: String,
    /// Hostname inside the pod (unset for hostNetwork pods, which keep the host's).
    pub hostname: Option<String>,
    /// Namespace files to join; `None` means the host's namespace.
    pub netns: Option<PathBuf>,
    /// The pod's IPC namespace file (`None`: the host's).
    pub ipcns: Option<PathBuf>,
    /// The pod's UTS namespace file (`None`: the host's).
    pub utsns: Option<PathBuf>,
    /// A PID namespace of the container's own unless the pod is hostPID...
    pub host_pid: bool,
    /// ...or shares one (`shareProcessNamespace`): this one's file.
    pub pidns: Option<PathBuf>,
    /// The pod's files bind-mounted at /etc/hosts, /etc/resolv.conf and /etc/hostname.
    pub hosts_file: Option<PathBuf>,
    /// Mounted at /etc/resolv.conf.
    pub resolv_file: Option<PathBuf>,
    /// Mounted at /etc/hostname.
    pub hostname_file: Option<PathBuf>,
}

/// Kubernetes' rule for the process arguments: `command` replaces the image's Entrypoint (and
/// then the image's Cmd is ignored); `args` replaces the image's Cmd.
pub fn merge_args(config: &ContainerConfig, image: &ImageSpec) -> Vec<String> {
    if config.command.is_empty() {
        let tail = if config.args.is_empty() {
            &image.cmd
        } else {
            &config.args
        };
        image.entrypoint.iter().chain(tail).cloned().collect()
    } else {
        config.command.iter().chain(&config.args).cloned().collect()
    }
}

/// The environment: the image's, overridden (and extended) by the container's, in order.
pub fn merge_env(
    config: &ContainerConfig,
    image: &ImageSpec,
    hostname: Option<&str>,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    let (k, v) = DEFAULT_PATH.split_once('=').unwrap_or_default();
    set(k, v);
    if let Some(h) = hostname {
        set("HOSTNAME", h);
    }
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(k, v);
    }
    for (k, v) in &config.env {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Where the rootfs' `/etc/passwd` and `/etc/group` can be read before it is mounted: the
/// directories of its layers, top first (the upper dir, then the lower dirs of an overlay, or a
/// bind mount's source).
pub fn rootfs_layers(mounts: &[super::RootfsMount]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for m in mounts {
        if m.kind == "bind" || m.kind == "rbind" {
            dirs.push(PathBuf::from(&m.source));
            continue;
        }
        let opt = |key: &str| m.options.iter().find_map(|o| o.strip_prefix(key));
        if let Some(upper) = opt("upperdir=") {
            dirs.push(PathBuf::from(upper));
        }
        if let Some(lower) = opt("lowerdir=") {
            dirs.extend(lower.split(':').map(PathBuf::from));
        }
    }
    dirs
}

/// Reads `etc/<file>` from the topmost layer that has it.
fn read_layer_file(layers: &[PathBuf], file: &str) -> Option<String> {
    layers
        .iter()
        .find_map(|l| std::fs::read_to_string(l.join("etc").join(file)).ok())
}

/// A passwd or group entry: name, id, and (passwd) the primary gid or (group) the members.
struct Entry<'a> {
    name: &'a str,
    id: u32,
    rest: &'a str,
}

fn entries(db: &str) -> impl Iterator<Item = Entry<'_>> {
    db.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some(Entry {
            name: f.first()?,
            id: f.get(2)?.parse().ok()?,
            rest: f.get(3).copied().unwrap_or(""),
        })
    })
}

/// The identity a container's process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Groups the user is a member of in the image's /etc/group, then the pod's
    /// supplementalGroups.
    pub additional_gids: Vec<u32>,
}

/// Resolves the process user as containerd's CRI does: runAsUser (the image's user ignored)
/// or the image's `user` (`uid`, `uid:gid`, `name`, `name:group`; names looked up in the
/// rootfs' /etc/passwd and /etc/group); the primary group from /etc/passwd unless given;
/// runAsGroup wins.
pub fn resolve_user(
    config: &ContainerConfig,
    image: &ImageSpec,
    layers: &[PathBuf],
    object: &str,
) -> Result<User> {
    let sec = &config.security;
    let err = |what: &str| {
        RuntimeError::new(
            object,
            "spec",
            ErrorKind::InvalidConfig,
            format!("image user {:?}: {what}", image.user),
        )
    };
    let passwd = read_layer_file(layers, "passwd").unwrap_or_default();
    let groups = read_layer_file(layers, "group").unwrap_or_default();
    let by_uid = |uid: u32| {
        entries(&passwd)
            .find(|e| e.id == uid)
            .map(|e| (e.name, e.rest.parse().ok()))
    };
    let (image_user, image_group) = match image.user.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (image.user.as_str(), None),
    };
    let (uid, name, passwd_gid) = match (sec.run_as_user, image_user) {
        (Some(uid), _) => {
            let e = by_uid(uid);
            (uid, e.map(|e| e.0), e.and_then(|e| e.1))
        }
        (None, "") => {
            let e = by_uid(0);
            (0, e.map(|e| e.0), e.and_then(|e| e.1))
        }
        (None, u) => match u.parse::<u32>() {
            Ok(uid) => {
                let e = by_uid(uid);
                (uid, e.map(|e| e.0), e.and_then(|e| e.1))
            }
            Err(_) => {
                let e = entries(&passwd)
                    .find(|e| e.name == u)
                    .ok_or_else(|| err("no such user in the image's /etc/passwd"))?;
                (e.id, Some(e.name), e.rest.parse().ok())
            }
        },
    };
    let mut gid = passwd_gid.unwrap_or(0);
    if let (None, Some(g)) = (sec.run_as_user, image_group) {
        gid = match g.parse::<u32>() {
            Ok(g) => g,
            Err(_) => {
                entries(&groups)
                    .find(|e| e.name == g)
                    .ok_or_else(|| err("no such group in the image's /etc/group"))?
                    .id
            }
        };
    }
    if let Some(g) = sec.run_as_group {
        gid = g;
    }
    let mut member_of: Vec<u32> = Vec::new();
    if let Some(name) = name {
        for e in entries(&groups) {
            if e.rest.split(',').any(|m| m == name) {
                member_of.push(e.id);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids: additional_gids(
            gid,
            &member_of,
            &sec.supplemental_groups,
            sec.supplemental_groups_strict,
        ),
    })
}

/// The supplementary groups of a container's process, as containerd's CRI sets them: the
/// primary group first (containerd keeps it in the set since CVE-2023-25173), then the groups
/// the image's /etc/group lists the user in (`member_of`; left out under
/// `supplementalGroupsPolicy: Strict`), then the pod's (supplementalGroups and fsGroup); each
/// once.
pub fn additional_gids(gid: u32, member_of: &[u32], pod: &[u32], strict: bool) -> Vec<u32> {
    let image: &[u32] = if strict { &[] } else { member_of };
    let mut seen = std::collections::BTreeSet::new();
    std::iter::once(&gid)
        .chain(image)
        .chain(pod)
        .copied()
        .filter(|g| seen.insert(*g))
        .collect()
}

/// The `linux.seccomp` of a container's profile (`None`: unconfined). A Localhost profile is
/// read now: a missing or bad file is the container's error.
fn seccomp_filter(
    profile: &super::seccomp::Seccomp,
    caps: &[String],
    object: &str,
) -> Result<Option<Value>> {
    use super::seccomp::{self, Seccomp};
    Ok(match profile {
        Seccomp::Unconfined => None,
        Seccomp::RuntimeDefault => Some(seccomp::runtime_default(caps)),
        Seccomp::Localhost(path) => {
            let fail = |what: String| {
                RuntimeError::new(
                    object,
                    "spec",
                    ErrorKind::InvalidConfig,
                    format!(
                        "seccompProfile Localhost {}: {what} (profiles live under \
                         --seccomp-profile-root)",
                        path.display()
                    ),
                )
            };
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            Some(seccomp::localhost(&text, caps).map_err(fail)?)
        }
    })
}

/// Normalizes a Kubernetes capability name (`NET_ADMIN`) to the OCI one (`CAP_NET_ADMIN`).
fn cap_name(c: &str) -> String {
    let c = c.to_ascii_uppercase();
    if c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    }
}

/// The capabilities the agent itself may hand out: every known one in its bounding set (a
/// capability outside it makes runc fail; containerd's privileged also means "all current").
pub fn all_caps() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    // ALL_CAPS is in bit order.
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The capability set: the default one (or all the agent has, when privileged), with drops
/// then adds applied as the CRI does (`ALL` in drop empties the set, `ALL` in add fills it).
pub fn capabilities(config: &ContainerConfig) -> Vec<String> {
    let sec = &config.security;
    if sec.privileged {
        return all_caps();
    }
    let is_all = |v: &[String]| v.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    if is_all(&sec.capabilities_add) {
        caps = all_caps();
    }
    if is_all(&sec.capabilities_drop) {
        caps.clear();
    }
    for d in sec.capabilities_drop.iter().map(|c| cap_name(c)) {
        caps.retain(|c| *c != d);
    }
    for a in sec
        .capabilities_add
        .iter()
        .filter(|c| !c.eq_ignore_ascii_case("ALL"))
    {
        let a = cap_name(a);
        if !caps.contains(&a) {
            caps.push(a);
        }
    }
    caps
}

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": kind, "source": source, "options": options})
}

fn bind(dest: &str, source: &Path, read_only: bool) -> Value {
    let rw = if read_only { "ro" } else { "rw" };
    json!({
        "destination": dest,
        "type": "bind",
        "source": source.to_string_lossy(),
        "options": ["rbind", "rprivate", rw],
    })
}

/// Everything a container spec is made from.
pub struct SpecInput<'a> {
    /// The container's id (names it in errors).
    pub container_id: &'a str,
    /// What the pod asks for.
    pub config: &'a ContainerConfig,
    /// What the image says.
    pub image: &'a ImageSpec,
    /// The pod's namespaces and files.
    pub pod: &'a PodContext,
    /// The container's cgroup, absolute (`/edged/pod<uid>/<id>`).
    pub cgroups_path: &'a str,
    /// The rootfs layers, to look up user names (see [`rootfs_layers`]).
    pub layers: &'a [PathBuf],
}

/// Builds the OCI spec of a container.
pub fn container_spec(input: &SpecInput) -> Result<Value> {
    let (config, image, pod) = (input.config, input.image, input.pod);
    let object = input.container_id;
    let args = merge_args(config, image);
    if args.is_empty() {
        return Err(RuntimeError::new(
            object,
            "spec",
            ErrorKind::InvalidConfig,
            format!(
                "container {:?}: no command: neither the pod (command/args) nor the image \
                 {:?} (Entrypoint/Cmd) says what to run",
                config.name, config.image
            ),
        ));
    }
    let cwd = config
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| Some(image.working_dir.clone()).filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    let user = resolve_user(config, image, input.layers, object)?;
    let sec = &config.security;
    let caps = capabilities(config);

    let ro_sys = if sec.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", ro_sys],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro_sys],
        ),
    ];
    for (dest, file) in [
        ("/etc/hosts", &pod.hosts_file),
        ("/etc/resolv.conf", &pod.resolv_file),
        ("/etc/hostname", &pod.hostname_file),
    ] {
        // A user's own mount of the same path wins.
        if let Some(f) = file {
            if !config.mounts.iter().any(|m| m.container_path == dest) {
                mounts.push(bind(dest, f, false));
            }
        }
    }
    for m in &config.mounts {
        mounts.push(bind(&m.container_path, &m.host_path, m.read_only));
    }

    let mut namespaces = vec![json!({"type": "mount"})];
    match (&pod.pidns, pod.host_pid) {
        (_, true) => {}
        (Some(p), false) => namespaces.push(json!({"type": "pid", "path": p.to_string_lossy()})),
        (None, false) => namespaces.push(json!({"type": "pid"})),
    }
    for (kind, path) in [
        ("network", &pod.netns),
        ("ipc", &pod.ipcns),
        ("uts", &pod.utsns),
    ] {
        if let Some(p) = path {
            namespaces.push(json!({"type": kind, "path": p.to_string_lossy()}));
        }
    }

    let mut resources = serde_json::Map::new();
    resources.insert(
        "devices".into(),
        json!([{"allow": sec.privileged, "access": "rwm"}]),
    );
    let r = &config.resources;
    let mut cpu = serde_json::Map::new();
    if let Some(limit) = r.cpu_limit_millis.filter(|l| *l > 0) {
        cpu.insert("quota".into(), json!((limit * 100_000 / 1000).max(1000)));
        cpu.insert("period".into(), json!(100_000u64));
    }
    if let Some(req) = r.cpu_request_millis.or(r.cpu_limit_millis) {
        cpu.insert("shares".into(), json!((req * 1024 / 1000).max(2) as u64));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(mem) = r.memory_limit_bytes.filter(|m| *m > 0) {
        resources.insert("memory".into(), json!({"limit": mem}));
    }

    let mut linux = json!({
        "devices": if sec.privileged { host_devices(Path::new("/dev")) } else { Vec::new() },
        "namespaces": namespaces,
        "sysctl": config.security.sysctls,
        "resources": Value::Object(resources),
        "cgroupsPath": input.cgroups_path,
    });
    if !sec.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        if let Some(filter) = seccomp_filter(&sec.seccomp, &caps, object)? {
            linux["seccomp"] = filter;
        }
    }

    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": config.tty,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
            "args": args,
            "env": merge_env(config, image, pod.hostname.as_deref()),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": sec.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": sec.read_only_rootfs},
        "mounts": mounts,
        "annotations": {
            GROUP_ANNOTATION: pod.pod_uid,
            SANDBOX_ID_ANNOTATION: pod.pod_uid,
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": config.name,
        },
        "linux": linux,
    });
    if let Some(h) = &pod.hostname {
        spec["hostname"] = json!(h);
    }
    let profile = super::apparmor::prepare(&sec.apparmor).map_err(|e| {
        RuntimeError::new(
            object,
            "spec",
            ErrorKind::InvalidConfig,
            format!("appArmorProfile: {e}"),
        )
    })?;
    if let Some(name) = profile {
        spec["process"]["apparmorProfile"] = json!(name);
    }
    Ok(spec)
}

/// The host's device nodes under `dir`, for privileged containers (as containerd's
/// `WithHostDevices`: the kernel's pseudo-filesystems below /dev are skipped).
pub fn host_devices(dir: &Path) -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = md.file_type();
        if ft.is_dir() {
            if !matches!(
                name.as_ref(),
                "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".udev"
            ) {
                out.extend(host_devices(&path));
            }
            continue;
        }
        // runc makes these itself.
        if matches!(name.as_ref(), "console" | "ptmx") {
            continue;
        }
        let kind = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            continue;
        };
        let rdev = md.rdev();
        out.push(json!({
            "path": path.to_string_lossy(),
            "type": kind,
            "major": nix::sys::stat::major(rdev),
            "minor": nix::sys::stat::minor(rdev),
            "fileMode": md.mode() & 0o7777,
            "uid": md.uid(),
            "gid": md.gid(),
        }));
    }
    out
}

/// The process of an exec (`exec_sync`): the container's user, env and cwd with new args.
pub fn exec_process(container_spec: &Value, args: &[String]) -> Value {
    let mut p = container_spec.get("process").cloned().unwrap_or_else(
        || json!({"user": {"uid": 0, "gid": 0}, "cwd": "/", "env": [DEFAULT_PATH]}),
    );
    p["args"] = json!(args);
    p["terminal"] = json!(false);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Mount, Resources, RootfsMount, Security};

    fn image() -> ImageSpec {
        ImageSpec {
            id: "sha256:abc".into(),
            entrypoint: vec!["/entry".into()],
            cmd: vec!["c1".into(), "c2".into()],
            env: vec!["A=image".into(), "B=image".into(), "PATH=/img/bin".into()],
            working_dir: "/img".into(),
            user: String::new(),
        }
    }

    fn config() -> ContainerConfig {
        ContainerConfig {
            name: "app".into(),
            image: "busybox".into(),
            ..Default::default()
        }
    }

    fn pod() -> PodContext {
        PodContext {
            pod_uid: "uid-1".into(),
            hostname: Some("web".into()),
            netns: Some("/ns/net".into()),
            ipcns: Some("/ns/ipc".into()),
            utsns: Some("/ns/uts".into()),
            host_pid: false,
            pidns: None,
            hosts_file: Some("/sb/hosts".into()),
            resolv_file: Some("/sb/resolv.conf".into()),
            hostname_file: None,
        }
    }

    fn spec(config: &ContainerConfig, image: &ImageSpec, layers: &[PathBuf]) -> Result<Value> {
        container_spec(&SpecInput {
            container_id: "c1",
            config,
            image,
            pod: &pod(),
            cgroups_path: "/edged/poduid-1/c1",
            layers,
        })
    }

    #[test]
    fn merge_rule() {
        let img = image();
        let mut c = config();
        assert_eq!(merge_args(&c, &img), ["/entry", "c1", "c2"]);
        c.args = vec!["a".into()];
        assert_eq!(merge_args(&c, &img), ["/entry", "a"]);
        c.command = vec!["/cmd".into()];
        assert_eq!(merge_args(&c, &img), ["/cmd", "a"]);
        c.args.clear();
        assert_eq!(merge_args(&c, &img), ["/cmd"]);
    }

    #[test]
    fn no_command_is_refused() {
        let img = ImageSpec::default();
        let e = spec(&config(), &img, &[]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert!(e.message.contains("no command"), "{e}");
    }

    #[test]
    fn env_overrides_image() {
        let mut c = config();
        c.env = vec![("B".into(), "pod".into()), ("C".into(), "pod".into())];
        let env = merge_env(&c, &image(), Some("web"));
        assert_eq!(
            env,
            ["PATH=/img/bin", "HOSTNAME=web", "A=image", "B=pod", "C=pod"]
        );
    }

    #[test]
    fn spec_fields() {
        let mut c = config();
        c.working_dir = None;
        c.mounts = vec![Mount {
            host_path: "/data".into(),
            container_path: "/mnt".into(),
            read_only: true,
        }];
        c.resources = Resources {
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            memory_limit_bytes: Some(64 << 20),
        };
        c.security = Security {
            run_as_user: Some(1000),
            supplemental_groups: vec![5, 6],
            read_only_rootfs: true,
            no_new_privileges: true,
            capabilities_add: vec!["NET_ADMIN".into()],
            capabilities_drop: vec!["KILL".into()],
            ..Default::default()
        };
        let s = spec(&c, &image(), &[]).unwrap();
        assert_eq!(s["process"]["cwd"], "/img");
        assert_eq!(s["process"]["user"]["uid"], 1000);
        assert_eq!(s["process"]["user"]["gid"], 0);
        assert_eq!(s["process"]["user"]["additionalGids"], json!([0, 5, 6]));
        assert_eq!(s["process"]["noNewPrivileges"], true);
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["hostname"], "web");
        let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(caps.contains(&json!("CAP_NET_ADMIN")));
        assert!(!caps.contains(&json!("CAP_KILL")));
        assert!(caps.contains(&json!("CAP_CHOWN")));
        let lin = &s["linux"];
        assert_eq!(lin["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(lin["resources"]["cpu"]["period"], 100_000);
        assert_eq!(lin["resources"]["cpu"]["shares"], 256);
        assert_eq!(lin["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(lin["cgroupsPath"], "/edged/poduid-1/c1");
        assert_eq!(lin["resources"]["devices"][0]["allow"], false);
        assert!(lin["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
        let ns = lin["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/ns/net"})));
        assert!(ns.contains(&json!({"type": "pid"})));
        let mounts = s["mounts"].as_array().unwrap();
        let find = |d: &str| mounts.iter().find(|m| m["destination"] == d).cloned();
        assert_eq!(
            find("/mnt").unwrap()["options"],
            json!(["rbind", "rprivate", "ro"])
        );
        assert_eq!(find("/etc/hosts").unwrap()["source"], "/sb/hosts");
        assert_eq!(find("/proc").unwrap()["type"], "proc");
        assert!(find("/sys/fs/cgroup").is_some());
        assert_eq!(s["annotations"][GROUP_ANNOTATION], "uid-1");
    }

    #[test]
    fn privileged_and_all() {
        let mut c = config();
        c.security.privileged = true;
        let s = spec(&c, &image(), &[]).unwrap();
        assert_eq!(
            s["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            all_caps().len()
        );
        assert!(s["linux"].get("maskedPaths").is_none());
        let devices = s["linux"]["devices"].as_array().unwrap();
        if Path::new("/dev/null").exists() {
            let null = devices.iter().find(|d| d["path"] == "/dev/null").unwrap();
            assert_eq!(
                (&null["type"], &null["major"], &null["minor"]),
                (&json!("c"), &json!(1), &json!(3))
            );
        }
        assert_eq!(s["linux"]["resources"]["devices"][0]["allow"], true);

        let mut c = config();
        c.security.capabilities_drop = vec!["ALL".into()];
        c.security.capabilities_add = vec!["chown".into()];
        assert_eq!(capabilities(&c), ["CAP_CHOWN"]);
        c.security.capabilities_add = vec!["ALL".into()];
        c.security.capabilities_drop = vec!["SYS_ADMIN".into()];
        let caps = capabilities(&c);
        let all = all_caps();
        let want = all.len() - usize::from(all.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(caps.len(), want);
    }

    #[test]
    fn image_user_numeric_and_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:34::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwww:x:34:\nstaff:x:50:web\nadm:x:4:root,web\n",
        )
        .unwrap();
        let layers = rootfs_layers(&[RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "upperdir=/nonexistent".into(),
                format!("lowerdir={}:/other", dir.path().display()),
            ],
        }]);
        let c = config();
        let mut img = image();
        let user = |c: &ContainerConfig, img: &ImageSpec| {
            let u = resolve_user(c, img, &layers, "c").unwrap();
            (u.uid, u.gid, u.additional_gids)
        };
        for (name, want) in [
            ("", (0, 0, vec![0, 4])),
            ("7", (7, 0, vec![0])),
            ("7:8", (7, 8, vec![8])),
            ("33", (33, 34, vec![34, 50, 4])),
            ("web", (33, 34, vec![34, 50, 4])),
            ("web:staff", (33, 50, vec![50, 4])),
        ] {
            img.user = name.into();
            assert_eq!(user(&c, &img), want, "{name}");
        }
        img.user = "nobody".into();
        assert_eq!(
            resolve_user(&c, &img, &layers, "c").unwrap_err().kind,
            ErrorKind::InvalidConfig
        );
        // runAsUser wins over the image's user (even an unknown one), its gid from passwd.
        let mut c = config();
        c.security.run_as_user = Some(33);
        c.security.supplemental_groups = vec![9, 4];
        assert_eq!(user(&c, &img), (33, 34, vec![34, 50, 4, 9]));
        c.security.run_as_group = Some(2);
        assert_eq!(user(&c, &img), (33, 2, vec![2, 50, 4, 9]));
        // Strict: the image's /etc/group is not read for the user's groups.
        c.security.supplemental_groups_strict = true;
        assert_eq!(user(&c, &img), (33, 2, vec![2, 9, 4]));
    }

    #[test]
    fn additional_gids_merge_and_strict() {
        // (gid, image groups of the user, pod groups, strict) -> additionalGids
        type Row = (u32, &'static [u32], &'static [u32], bool, &'static [u32]);
        let table: [Row; 6] = [
            (3000, &[50000], &[4000], false, &[3000, 50000, 4000]),
            (3000, &[50000], &[4000], true, &[3000, 4000]),
            (0, &[], &[], false, &[0]),
            (
                3000,
                &[3000, 4000],
                &[4000, 2000],
                false,
                &[3000, 4000, 2000],
            ),
            (3000, &[], &[3000], true, &[3000]),
            (1, &[7, 7], &[], false, &[1, 7]),
        ];
        for (gid, image, pod, strict, want) in table {
            assert_eq!(
                additional_gids(gid, image, pod, strict),
                want,
                "{gid} {image:?} {pod:?} strict={strict}"
            );
        }
    }

    #[test]
    fn host_namespaces() {
        let p = PodContext {
            pod_uid: "u".into(),
            host_pid: true,
            ..Default::default()
        };
        let s = container_spec(&SpecInput {
            container_id: "c",
            config: &config(),
            image: &image(),
            pod: &p,
            cgroups_path: "/x",
            layers: &[],
        })
        .unwrap();
        assert_eq!(s["linux"]["namespaces"], json!([{"type": "mount"}]));
        assert!(s.get("hostname").is_none());
        // shareProcessNamespace: the pod's PID namespace joined by path.
        let p = PodContext {
            pod_uid: "u".into(),
            pidns: Some("/sb/ns/pid".into()),
            ..Default::default()
        };
        let s = container_spec(&SpecInput {
            container_id: "c",
            config: &config(),
            image: &image(),
            pod: &p,
            cgroups_path: "/x",
            layers: &[],
        })
        .unwrap();
        assert_eq!(
            s["linux"]["namespaces"],
            json!([{"type": "mount"}, {"type": "pid", "path": "/sb/ns/pid"}])
        );
    }
}
