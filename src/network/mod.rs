//! Pod networking through CNI: the agent is the container runtime, so it runs the CNI plugins
//! itself when a pod's sandbox is made and removed (no containerd does it).
//!
//! - [`config`]: the config list of `--cni-conf-dir` and each plugin's stdin.
//! - [`exec`]: one plugin call (environment, binary lookup in `--cni-bin-dir`, time bound).
//! - [`result`]: plugin output: results, pod IPs, errors.
//! - [`cache`]: the result cache of `--cni-cache-dir` (libcni's format).
//! - [`cni`]: ADD, DEL, CHECK of a config list.

pub mod cache;
pub mod cni;
pub mod config;
pub mod exec;
pub mod result;

pub use self::cni::{Attached, Cni, PodNetwork};

use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Where CNI lives on this node (`--cni-conf-dir`, `--cni-bin-dir`, `--cni-cache-dir`,
/// `--cni-timeout`).
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// The directory of network config files.
    pub conf_dir: PathBuf,
    /// The directories plugins are looked up in, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Where ADD results are cached.
    pub cache_dir: PathBuf,
    /// The longest one plugin call may take.
    pub timeout: Duration,
}

/// Splits a colon-separated `--cni-bin-dir` (empty parts dropped).
pub fn bin_dirs(flag: &str) -> Vec<PathBuf> {
    flag.split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// A hostPort of a container (the `portMappings` capability).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// The port on the host.
    pub host_port: u16,
    /// The port in the pod.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp` (lowercase, as the portmap plugin takes it).
    pub protocol: String,
    /// The host address to bind (empty: all).
    pub host_ip: String,
}

/// The pod's traffic shaping in bits per second (the `bandwidth` capability).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bandwidth {
    /// `kubernetes.io/ingress-bandwidth`.
    pub ingress: Option<u64>,
    /// `kubernetes.io/egress-bandwidth`.
    pub egress: Option<u64>,
}

/// The pod's DNS (the `dns` capability), as its resolv.conf says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    /// Nameservers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// Options.
    pub options: Vec<String>,
}

/// What the runtime passes plugins that declare the capabilities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capabilities {
    /// hostPorts.
    pub port_mappings: Vec<PortMapping>,
    /// Traffic shaping, when an annotation asks for it.
    pub bandwidth: Option<Bandwidth>,
    /// The pod's DNS.
    pub dns: Option<Dns>,
}

/// The burst containerd gives with a rate (Kubernetes has no field for it).
const BURST: u64 = u32::MAX as u64;

impl Capabilities {
    /// The capability arguments as plugins read them in `runtimeConfig`.
    pub fn args(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if !self.port_mappings.is_empty() {
            let pm: Vec<Value> = self
                .port_mappings
                .iter()
                .map(|p| {
                    json!({
                        "hostPort": p.host_port,
                        "containerPort": p.container_port,
                        "protocol": p.protocol,
                        "hostIP": p.host_ip,
                    })
                })
                .collect();
            m.insert("portMappings".into(), Value::Array(pm));
        }
        if let Some(b) = &self.bandwidth {
            let mut bw = Map::new();
            if let Some(r) = b.ingress {
                bw.insert("ingressRate".into(), json!(r));
                bw.insert("ingressBurst".into(), json!(BURST));
            }
            if let Some(r) = b.egress {
                bw.insert("egressRate".into(), json!(r));
                bw.insert("egressBurst".into(), json!(BURST));
            }
            if !bw.is_empty() {
                m.insert("bandwidth".into(), Value::Object(bw));
            }
        }
        if let Some(d) = &self.dns {
            m.insert(
                "dns".into(),
                json!({"servers": d.servers, "searches": d.searches, "options": d.options}),
            );
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_dirs_split_on_colons() {
        assert_eq!(
            bin_dirs("/opt/cni/bin::/usr/lib/cni"),
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert!(bin_dirs("").is_empty());
    }

    #[test]
    fn capability_args_as_plugins_read_them() {
        assert!(Capabilities::default().args().is_empty());
        let c = Capabilities {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            bandwidth: Some(Bandwidth {
                ingress: Some(1_000_000),
                egress: None,
            }),
            dns: Some(Dns {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
        };
        assert_eq!(
            Value::Object(c.args()),
            json!({
                "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
                "bandwidth": {"ingressRate": 1_000_000u64, "ingressBurst": 4294967295u64},
                "dns": {"servers": ["10.96.0.10"], "searches": ["svc.cluster.local"], "options": ["ndots:5"]},
            })
        );
        let empty_bw = Capabilities {
            bandwidth: Some(Bandwidth::default()),
            ..Default::default()
        };
        assert!(empty_bw.args().is_empty());
    }
}
