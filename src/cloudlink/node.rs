//! The v1 Node the edge registers and the status it patches: built by a pure function from
//! [`NodeFacts`], which [`NodeFacts::gather`] reads from /proc, statvfs and /etc.

use crate::eviction::pressure::{DiskPressure, DISK_AVAILABLE_MIN_PERCENT};
use crate::images::pressure::Marker;
use serde_json::{json, Map, Value};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;

/// Memory available below this is MemoryPressure (the kubelet's default hard eviction).
pub const MEMORY_AVAILABLE_MIN: u64 = 100 << 20;
/// Free PIDs below this percent of pid_max is PIDPressure.
pub const PID_AVAILABLE_MIN_PERCENT: u64 = 10;

/// What the node status says, as read from the machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    /// The node's name: the `Hostname` address.
    pub hostname: String,
    /// The `InternalIP` address (None: none reported).
    pub internal_ip: Option<IpAddr>,
    /// CPUs available to edged: `capacity.cpu`.
    pub cpus: u32,
    /// `MemTotal`, bytes: `capacity.memory`.
    pub memory_bytes: u64,
    /// `MemAvailable`, bytes; below [`MEMORY_AVAILABLE_MIN`] is MemoryPressure.
    pub memory_available: u64,
    /// The filesystem holding the root dir.
    pub disk_bytes: u64,
    /// Bytes available to unprivileged users on that filesystem.
    pub disk_available: u64,
    /// `/proc/sys/kernel/pid_max` (0: not readable, no PIDPressure).
    pub pid_max: u64,
    /// Processes running (entries of /proc).
    pub pids: u64,
    /// `--max-pods`: `capacity.pods`.
    pub max_pods: u32,
    /// The kernel release (`uname -r`): `nodeInfo.kernelVersion`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of /etc/os-release: `nodeInfo.osImage`.
    pub os_image: String,
    /// GOARCH spelling: amd64, arm64, arm.
    pub architecture: String,
    /// /etc/machine-id: `nodeInfo.machineID` and `systemUUID`.
    pub machine_id: String,
    /// /proc/sys/kernel/random/boot_id: `nodeInfo.bootID`.
    pub boot_id: String,
    /// `nodeInfo.containerRuntimeVersion`.
    pub runtime_version: String,
    /// `nodeInfo.kubeletVersion` (`edged/v<version>`).
    pub kubelet_version: String,
    /// The node is Ready (its runtime is up).
    pub runtime_ready: bool,
    /// Image GC's disk pressure marker, when it could not get under its high threshold.
    pub image_gc_pressure: Option<Marker>,
    /// The kubelet API's port (`--port`): `status.daemonEndpoints.kubeletEndpoint.Port`, which
    /// CloudCore moves to its tunnel port and the API server dials through the tunnel.
    pub kubelet_port: u16,
}

/// The status of a node with `facts` at `now` (RFC 3339). Conditions keep their
/// `lastTransitionTime` from `previous` (the last status sent) when unchanged.
pub fn node_status(facts: &NodeFacts, now: &str, previous: Option<&Value>) -> Value {
    let f = facts;
    let mem_pressure = f.memory_available < MEMORY_AVAILABLE_MIN;
    let disk_pressure =
        DiskPressure::new(f.image_gc_pressure.clone(), f.disk_bytes, f.disk_available);
    let pid_pressure = f.pid_max > 0
        && f.pid_max.saturating_sub(f.pids) * 100 < f.pid_max * PID_AVAILABLE_MIN_PERCENT;
    let cond = |kind: &str, status: bool, reason: &str, message: &str| {
        let s = if status { "True" } else { "False" };
        let since = previous
            .and_then(|p| p["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
            .filter(|c| c["status"] == s)
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(now);
        json!({"type": kind, "status": s, "lastHeartbeatTime": now,
               "lastTransitionTime": since, "reason": reason, "message": message})
    };
    let conditions = vec![
        if f.runtime_ready {
            cond("Ready", true, "EdgeReady", "edge is posting ready status")
        } else {
            cond(
                "Ready",
                false,
                "KubeletNotReady",
                "container runtime is down",
            )
        },
        if mem_pressure {
            cond(
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            cond(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        disk_pressure.condition(now, previous.map(|p| &p["conditions"])),
        if pid_pressure {
            cond(
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            )
        } else {
            cond(
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            )
        },
    ];
    let mut addresses = Vec::new();
    if let Some(ip) = f.internal_ip {
        addresses.push(json!({"type": "InternalIP", "address": ip.to_string()}));
    }
    addresses.push(json!({"type": "Hostname", "address": f.hostname}));
    let ki = |b: u64| format!("{}Ki", b / 1024);
    // Allocatable leaves out the eviction reserve, as the kubelet computes it.
    let disk_reserve = f.disk_bytes * DISK_AVAILABLE_MIN_PERCENT / 100;
    json!({
        "capacity": {
            "cpu": f.cpus.to_string(),
            "memory": ki(f.memory_bytes),
            "pods": f.max_pods.to_string(),
            "ephemeral-storage": ki(f.disk_bytes),
        },
        "allocatable": {
            "cpu": f.cpus.to_string(),
            "memory": ki(f.memory_bytes.saturating_sub(MEMORY_AVAILABLE_MIN)),
            "pods": f.max_pods.to_string(),
            "ephemeral-storage": ki(f.disk_bytes.saturating_sub(disk_reserve)),
        },
        "conditions": conditions,
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": f.kubelet_port}},
        "nodeInfo": {
            "machineID": f.machine_id,
            "systemUUID": f.machine_id,
            "bootID": f.boot_id,
            "kernelVersion": f.kernel_version,
            "osImage": f.os_image,
            "containerRuntimeVersion": f.runtime_version,
            "kubeletVersion": f.kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": f.architecture,
        },
    })
}

/// The Node the edge registers: the edge role label (without it the cloud sends no pods),
/// the usual well-known labels, then `labels` (which win).
pub fn node_object(name: &str, labels: &[(String, String)], facts: &NodeFacts, now: &str) -> Value {
    let mut l = Map::new();
    l.insert("node-role.kubernetes.io/edge".into(), json!(""));
    l.insert("kubernetes.io/hostname".into(), json!(name));
    l.insert("kubernetes.io/os".into(), json!("linux"));
    l.insert("kubernetes.io/arch".into(), json!(facts.architecture));
    for (k, v) in labels {
        l.insert(k.clone(), json!(v));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": l},
        "spec": {},
        "status": node_status(facts, now, None),
    })
}

/// GOARCH for the running machine.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "riscv64" => "riscv64",
        other => other,
    }
}

impl NodeFacts {
    /// Reads the facts of this machine. `root_dir`: whose filesystem is the node's disk.
    pub fn gather(
        root_dir: &Path,
        hostname: &str,
        node_ip: Option<IpAddr>,
        max_pods: u32,
        kubelet_port: u16,
    ) -> NodeFacts {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let meminfo = read("/proc/meminfo");
        let (disk_bytes, disk_available) = nix::sys::statvfs::statvfs(root_dir)
            // The field types are 32 bits wide on some 32-bit targets.
            .map(|s| {
                #[allow(clippy::unnecessary_cast)]
                let f = s.fragment_size() as u64;
                #[allow(clippy::unnecessary_cast)]
                (s.blocks() as u64 * f, s.blocks_available() as u64 * f)
            })
            .unwrap_or((0, 0));
        let uname = nix::sys::utsname::uname().ok();
        let pids = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as u64
            })
            .unwrap_or(0);
        NodeFacts {
            hostname: hostname.to_string(),
            internal_ip: node_ip.or_else(default_route_source),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_bytes: meminfo_kib(&meminfo, "MemTotal") * 1024,
            memory_available: meminfo_kib(&meminfo, "MemAvailable") * 1024,
            disk_bytes,
            disk_available,
            pid_max: read("/proc/sys/kernel/pid_max").trim().parse().unwrap_or(0),
            pids,
            max_pods,
            kernel_version: uname
                .as_ref()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            os_image: os_image(&read("/etc/os-release")),
            architecture: go_arch().to_string(),
            machine_id: read("/etc/machine-id").trim().to_string(),
            boot_id: read("/proc/sys/kernel/random/boot_id").trim().to_string(),
            runtime_version: "containerd-shim-v2://1".to_string(),
            kubelet_version: format!("edged/v{}", env!("CARGO_PKG_VERSION")),
            runtime_ready: true,
            // Written by image GC while it cannot free enough.
            image_gc_pressure: Marker::read(&root_dir.join("images")),
            kubelet_port,
        }
    }
}

/// A `/proc/meminfo` field in KiB.
pub fn meminfo_kib(text: &str, field: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `PRETTY_NAME` from os-release.
pub fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

/// The gateway of the IPv4 default route in `/proc/net/route` text.
pub fn default_gateway(route: &str) -> Option<Ipv4Addr> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Iface Destination Gateway Flags ...: destination 0 and mask 0 is the default route.
        if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
            return None;
        }
        let g = u32::from_str_radix(f[2], 16).ok()?;
        // The kernel prints the address in host byte order (little-endian on our targets).
        Some(Ipv4Addr::from(g.to_le_bytes()))
    })
}

/// The address this host would send from on its default route: a UDP socket "connected" to
/// the gateway (connect on UDP sends nothing) tells which local address the kernel picks.
pub fn default_route_source() -> Option<IpAddr> {
    let gw = default_gateway(&std::fs::read_to_string("/proc/net/route").ok()?)?;
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((gw, 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            hostname: "edge-1".into(),
            internal_ip: Some("192.0.2.7".parse().unwrap()),
            cpus: 4,
            memory_bytes: 8 << 30,
            memory_available: 4 << 30,
            disk_bytes: 100 << 30,
            disk_available: 50 << 30,
            pid_max: 1000,
            pids: 100,
            max_pods: 110,
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            architecture: "arm64".into(),
            machine_id: "abc".into(),
            boot_id: "b".into(),
            runtime_version: "containerd-shim-v2://1".into(),
            kubelet_version: "edged/v0.1.0".into(),
            runtime_ready: true,
            image_gc_pressure: None,
            kubelet_port: 10250,
        }
    }

    fn cond<'a>(s: &'a Value, t: &str) -> &'a Value {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap()
    }

    #[test]
    fn capacity_addresses_and_info() {
        let s = node_status(&facts(), "2026-01-01T00:00:00Z", None);
        assert_eq!(s["capacity"]["cpu"], "4");
        // The port of --port, not a constant.
        assert_eq!(s["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(s["capacity"]["memory"], "8388608Ki");
        assert_eq!(
            s["allocatable"]["memory"],
            format!("{}Ki", (8u64 << 20) - 102400)
        );
        assert_eq!(s["capacity"]["pods"], "110");
        assert_eq!(s["capacity"]["ephemeral-storage"], "104857600Ki");
        assert_eq!(s["allocatable"]["ephemeral-storage"], "94371840Ki");
        assert_eq!(
            s["addresses"][0],
            json!({"type":"InternalIP","address":"192.0.2.7"})
        );
        assert_eq!(
            s["addresses"][1],
            json!({"type":"Hostname","address":"edge-1"})
        );
        assert_eq!(s["nodeInfo"]["architecture"], "arm64");
        assert_eq!(s["nodeInfo"]["kubeletVersion"], "edged/v0.1.0");
        assert_eq!(cond(&s, "Ready")["status"], "True");
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(cond(&s, t)["status"], "False", "{t}");
        }
        let mut no_ip = facts();
        no_ip.internal_ip = None;
        let s = node_status(&no_ip, "2026-01-01T00:00:00Z", None);
        assert_eq!(s["addresses"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn pressure_and_transition_times() {
        let t0 = "2026-01-01T00:00:00Z";
        let t1 = "2026-01-01T00:00:10Z";
        let s0 = node_status(&facts(), t0, None);
        let mut low = facts();
        low.memory_available = 50 << 20;
        low.disk_available = 5 << 30;
        low.pids = 950;
        low.runtime_ready = false;
        let s1 = node_status(&low, t1, Some(&s0));
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(cond(&s1, t)["status"], "True", "{t}");
            assert_eq!(cond(&s1, t)["lastTransitionTime"], t1, "{t}");
        }
        assert_eq!(cond(&s1, "Ready")["status"], "False");
        assert_eq!(
            cond(&s1, "MemoryPressure")["reason"],
            "KubeletHasInsufficientMemory"
        );
        // Unchanged: the transition time stays, the heartbeat moves.
        let s2 = node_status(&facts(), t1, Some(&s0));
        assert_eq!(cond(&s2, "Ready")["lastTransitionTime"], t0);
        assert_eq!(cond(&s2, "Ready")["lastHeartbeatTime"], t1);
    }

    #[test]
    fn node_object_carries_the_edge_role() {
        let labels = vec![("zone".to_string(), "a".to_string())];
        let n = node_object("edge-1", &labels, &facts(), "2026-01-01T00:00:00Z");
        assert_eq!(n["kind"], "Node");
        assert_eq!(n["metadata"]["labels"]["node-role.kubernetes.io/edge"], "");
        assert_eq!(n["metadata"]["labels"]["zone"], "a");
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/arch"], "arm64");
    }

    #[test]
    fn proc_parsers() {
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_gateway(route), Some(Ipv4Addr::new(10, 0, 2, 1)));
        assert_eq!(default_gateway("Iface\tDestination\n"), None);
        assert_eq!(
            meminfo_kib("MemTotal:       16318480 kB\nMemFree: 1 kB\n", "MemTotal"),
            16318480
        );
        assert_eq!(meminfo_kib("MemFree: 1 kB\n", "MemTotal"), 0);
        assert_eq!(
            os_image("ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_image(""), "Linux");
    }

    #[test]
    fn gather_reads_this_machine() {
        let f = NodeFacts::gather(Path::new("/"), "h", None, 110, 10350);
        assert!(f.cpus >= 1 && f.memory_bytes > 0 && f.disk_bytes > 0 && f.pid_max > 0);
        assert!(!f.kernel_version.is_empty());
    }
}
