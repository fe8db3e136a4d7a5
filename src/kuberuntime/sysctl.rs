//! Pod sysctls (`spec.securityContext.sysctls`) as the kubelet admits them: the safe set is
//! always allowed, others only when `--allowed-unsafe-sysctls` names them (a name, or a prefix
//! ending in `*`), and only sysctls of a namespace the pod has of its own (net.* not with
//! hostNetwork, IPC ones not with hostIPC). A pod asking for another is refused
//! (`SysctlForbidden`). Admitted ones are set in the pod's namespaces by the runtime
//! (`linux.sysctl` of each container, which joins them).

use crate::api::Pod;
use std::collections::BTreeMap;

/// The kubelet's safe sysctls: namespaced and unable to affect other pods or the node.
pub const SAFE: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The namespace a sysctl belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// The network namespace.
    Net,
    /// The IPC namespace.
    Ipc,
    /// The UTS namespace.
    Uts,
}

/// The namespace of sysctl `name` (or of every sysctl under a prefix); `None`: not
/// namespaced (a node-wide setting no pod may change).
pub fn namespace_of(name: &str) -> Option<Namespace> {
    match name {
        "kernel.sem" => return Some(Namespace::Ipc),
        "kernel.hostname" | "kernel.domainname" => return Some(Namespace::Uts),
        _ => {}
    }
    if ["kernel.shm", "kernel.msg", "fs.mqueue."]
        .iter()
        .any(|p| name.starts_with(p))
    {
        return Some(Namespace::Ipc);
    }
    name.starts_with("net.").then_some(Namespace::Net)
}

/// A sysctl name with dots as separators: one written with slashes (`net/ipv4/ip_forward`)
/// has its slashes and dots swapped, as the kubelet reads it (`a/b.c/d` is `a.b/c.d`).
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The sysctls pods may set on this node: the safe ones and `--allowed-unsafe-sysctls`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allowlist {
    names: Vec<String>,
    prefixes: Vec<String>,
}

impl Allowlist {
    /// The safe set and `unsafe_patterns` (names, or prefixes ending in `*`), each of which
    /// must be namespaced.
    pub fn new(unsafe_patterns: &[String]) -> Result<Allowlist, String> {
        let mut a = Allowlist {
            names: SAFE.iter().map(|s| s.to_string()).collect(),
            prefixes: Vec::new(),
        };
        for p in unsafe_patterns {
            let p = normalize(p.trim());
            let (body, prefix) = match p.strip_suffix('*') {
                Some(b) => (b, true),
                None => (p.as_str(), false),
            };
            if body.is_empty() || body.contains('*') {
                return Err(format!(
                    "--allowed-unsafe-sysctls: `{p}` is not a sysctl name or a prefix ending in `*`"
                ));
            }
            if namespace_of(body).is_none() {
                return Err(format!(
                    "--allowed-unsafe-sysctls: `{p}` is not known to be namespaced (only \
                     net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* may be allowed)"
                ));
            }
            if prefix {
                a.prefixes.push(body.to_string());
            } else {
                a.names.push(body.to_string());
            }
        }
        Ok(a)
    }

    /// Why the pod may not have its sysctls (the first refused one), as the kubelet says it.
    pub fn check(&self, pod: &Pod) -> Result<(), String> {
        let Some(sc) = &pod.spec.security_context else {
            return Ok(());
        };
        for s in &sc.sysctls {
            let name = normalize(&s.name);
            let allowed = self.names.contains(&name)
                || self.prefixes.iter().any(|p| name.starts_with(p.as_str()));
            if !allowed {
                return Err(format!("\"{name}\" not allowlisted"));
            }
            let host = match namespace_of(&name) {
                Some(Namespace::Net) if pod.spec.host_network => "net",
                Some(Namespace::Ipc) if pod.spec.host_ipc => "ipc",
                Some(Namespace::Uts) if pod.spec.host_network => "uts",
                _ => continue,
            };
            return Err(format!("\"{name}\" not allowed with host {host} enabled"));
        }
        Ok(())
    }
}

/// The pod's sysctls by normalized name, for the runtime (admitted pods only).
pub fn of_pod(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec
        .security_context
        .iter()
        .flat_map(|sc| &sc.sysctls)
        .map(|s| (normalize(&s.name), s.value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(sysctls: &[(&str, &str)], host_network: bool, host_ipc: bool) -> Pod {
        let mut p = Pod::default();
        p.spec.host_network = host_network;
        p.spec.host_ipc = host_ipc;
        p.spec.security_context = Some(crate::api::PodSecurityContext {
            sysctls: sysctls
                .iter()
                .map(|(n, v)| crate::api::Sysctl {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn names_are_normalized_as_the_kubelet_does() {
        for (given, want) in [
            ("net.ipv4.ip_forward", "net.ipv4.ip_forward"),
            ("net/ipv4/ip_forward", "net.ipv4.ip_forward"),
            (
                "net/ipv4/conf/eno2.100/rp_filter",
                "net.ipv4.conf.eno2/100.rp_filter",
            ),
            ("kernel.shm_rmid_forced", "kernel.shm_rmid_forced"),
        ] {
            assert_eq!(normalize(given), want);
        }
    }

    #[test]
    fn admission() {
        let safe = Allowlist::new(&[]).unwrap();
        let unsafe_ok =
            Allowlist::new(&["kernel.msg*".into(), "net.core.somaxconn".into()]).unwrap();
        // (allowlist, sysctls, hostNetwork, hostIPC) -> refusal
        type Row<'a> = (
            &'a Allowlist,
            &'a [(&'a str, &'a str)],
            bool,
            bool,
            Option<&'a str>,
        );
        let table: [Row; 9] = [
            (&safe, &[], false, false, None),
            (
                &safe,
                &[
                    ("kernel.shm_rmid_forced", "1"),
                    ("net.ipv4.tcp_syncookies", "1"),
                ],
                false,
                false,
                None,
            ),
            (
                &safe,
                &[("net/ipv4/tcp_keepalive_time", "60")],
                false,
                false,
                None,
            ),
            (
                &safe,
                &[("net.core.somaxconn", "1024")],
                false,
                false,
                Some("\"net.core.somaxconn\" not allowlisted"),
            ),
            (
                &unsafe_ok,
                &[("net.core.somaxconn", "1024")],
                false,
                false,
                None,
            ),
            (
                &unsafe_ok,
                &[("kernel.msgmax", "65536")],
                false,
                false,
                None,
            ),
            (
                &unsafe_ok,
                &[("kernel.msgmax", "65536")],
                false,
                true,
                Some("\"kernel.msgmax\" not allowed with host ipc enabled"),
            ),
            (
                &safe,
                &[("net.ipv4.ip_local_port_range", "1024 65000")],
                true,
                false,
                Some("\"net.ipv4.ip_local_port_range\" not allowed with host net enabled"),
            ),
            (&safe, &[("kernel.shm_rmid_forced", "1")], true, false, None),
        ];
        for (allow, sysctls, hn, hi, want) in table {
            assert_eq!(
                allow.check(&pod(sysctls, hn, hi)).err().as_deref(),
                want,
                "{sysctls:?} hostNetwork={hn} hostIPC={hi}"
            );
        }
    }

    #[test]
    fn only_namespaced_unsafe_sysctls_may_be_allowed() {
        for bad in ["kernel.*", "vm.swappiness", "*", "net.*.x"] {
            let e = Allowlist::new(&[bad.into()]).unwrap_err();
            assert!(e.starts_with("--allowed-unsafe-sysctls:"), "{e}");
        }
        assert!(
            Allowlist::new(&["net.*".into(), "fs.mqueue.*".into(), "kernel.sem".into()]).is_ok()
        );
    }

    #[test]
    fn sysctls_for_the_runtime() {
        let p = pod(
            &[
                ("net/ipv4/tcp_syncookies", "1"),
                ("kernel.shm_rmid_forced", "1"),
            ],
            false,
            false,
        );
        let want: BTreeMap<String, String> = [
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
            ("net.ipv4.tcp_syncookies".to_string(), "1".to_string()),
        ]
        .into();
        assert_eq!(of_pod(&p), want);
    }
}
