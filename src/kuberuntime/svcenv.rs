//! Service environment variables, as the kubelet makes them (`getServiceEnvVarMap` in
//! `pkg/kubelet/kubelet_pods.go`, `FromServices` in `pkg/kubelet/envvars/envvars.go`):
//! `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT NAME>]` and the Docker link variables
//! (`<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`).
//!
//! Which services: those with a cluster IP; the master service `default/kubernetes` always,
//! the others of the pod's namespace when `enableServiceLinks` is on (its default). A service
//! of the pod's namespace named `kubernetes` wins over the master one, as in the kubelet.

use crate::api::Service;
use std::collections::BTreeMap;

/// The namespace of the master service.
const MASTER_NAMESPACE: &str = "default";
/// The master service's name.
const MASTER_SERVICE: &str = "kubernetes";

/// The services a pod in `namespace` gets variables for, by name (the kubelet's
/// `serviceMap`).
pub fn services_for_pod<'a>(
    services: &'a [Service],
    namespace: &str,
    enable_service_links: bool,
) -> BTreeMap<&'a str, &'a Service> {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for s in services.iter().filter(|s| s.has_cluster_ip()) {
        let (ns, name) = (s.metadata.namespace.as_str(), s.metadata.name.as_str());
        if ns == MASTER_NAMESPACE && name == MASTER_SERVICE {
            chosen.entry(name).or_insert(s);
        } else if ns == namespace && enable_service_links {
            chosen.insert(name, s);
        }
    }
    chosen
}

/// The service environment variables of a pod in `namespace` (the kubelet's
/// `getServiceEnvVarMap`), one per name, sorted by service name and then in the kubelet's
/// order within a service. A later service's variable of the same name replaces an earlier
/// one's (the kubelet keeps them in a map).
pub fn pod_service_env(
    services: &[Service],
    namespace: &str,
    enable_service_links: bool,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in services_for_pod(services, namespace, enable_service_links).into_values() {
        for (k, v) in service_env(s) {
            match out.iter_mut().find(|(n, _)| *n == k) {
                Some(e) => e.1 = v,
                None => out.push((k, v)),
            }
        }
    }
    out
}

/// The variables of one service (the kubelet's `FromServices` for one; nothing for a
/// service without a cluster IP). A service with no ports (kube-apiserver allows none for a
/// cluster IP) gets its `_SERVICE_HOST` only.
pub fn service_env(s: &Service) -> Vec<(String, String)> {
    if !s.has_cluster_ip() {
        return Vec::new();
    }
    let prefix = env_name(&s.metadata.name);
    let ip = &s.spec.cluster_ip;
    let mut out = vec![(format!("{prefix}_SERVICE_HOST"), ip.clone())];
    let Some(first) = s.spec.ports.first() else {
        return out;
    };
    let port_var = format!("{prefix}_SERVICE_PORT");
    out.push((port_var.clone(), first.port.to_string()));
    for p in s.spec.ports.iter().filter(|p| !p.name.is_empty()) {
        out.push((
            format!("{port_var}_{}", env_name(&p.name)),
            p.port.to_string(),
        ));
    }
    // The Docker link variables.
    for (i, p) in s.spec.ports.iter().enumerate() {
        let protocol = p
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let lower = protocol.to_lowercase();
        let url = format!("{lower}://{}", join_host_port(ip, p.port));
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
        out.push((port_prefix.clone(), url));
        out.push((format!("{port_prefix}_PROTO"), lower));
        out.push((format!("{port_prefix}_PORT"), p.port.to_string()));
        out.push((format!("{port_prefix}_ADDR"), ip.clone()));
    }
    out
}

/// A name as the kubelet's `makeEnvVariableName` makes it: upper case, `-` as `_`.
pub fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// `host:port`, an IPv6 host in brackets (Go's `net.JoinHostPort`: any host with a colon).
pub fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ObjectMeta, ServicePort, ServiceSpec};

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(&str, Option<&str>, i32)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: name.into(),
                namespace: ns.into(),
                ..Default::default()
            },
            spec: ServiceSpec {
                cluster_ip: ip.into(),
                ports: ports
                    .iter()
                    .map(|(n, proto, port)| ServicePort {
                        name: n.to_string(),
                        protocol: proto.map(str::to_string),
                        port: *port,
                    })
                    .collect(),
            },
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// The kubelet's own test case (`TestFromServices`), variable for variable.
    #[test]
    fn one_service_as_the_kubelet_writes_it() {
        let s = svc(
            "ns",
            "super-ipv6",
            "2001:DB8::",
            &[("u-d-p", Some("UDP"), 8084), ("t-c-p", Some("TCP"), 8084)],
        );
        let env = service_env(&s);
        let want = [
            ("SUPER_IPV6_SERVICE_HOST", "2001:DB8::"),
            ("SUPER_IPV6_SERVICE_PORT", "8084"),
            ("SUPER_IPV6_SERVICE_PORT_U_D_P", "8084"),
            ("SUPER_IPV6_SERVICE_PORT_T_C_P", "8084"),
            ("SUPER_IPV6_PORT", "udp://[2001:DB8::]:8084"),
            ("SUPER_IPV6_PORT_8084_UDP", "udp://[2001:DB8::]:8084"),
            ("SUPER_IPV6_PORT_8084_UDP_PROTO", "udp"),
            ("SUPER_IPV6_PORT_8084_UDP_PORT", "8084"),
            ("SUPER_IPV6_PORT_8084_UDP_ADDR", "2001:DB8::"),
            ("SUPER_IPV6_PORT_8084_TCP", "tcp://[2001:DB8::]:8084"),
            ("SUPER_IPV6_PORT_8084_TCP_PROTO", "tcp"),
            ("SUPER_IPV6_PORT_8084_TCP_PORT", "8084"),
            ("SUPER_IPV6_PORT_8084_TCP_ADDR", "2001:DB8::"),
        ];
        for (k, v) in want {
            assert_eq!(get(&env, k), Some(v), "{k} in {env:?}");
        }
        assert_eq!(env.len(), want.len(), "{env:?}");
    }

    #[test]
    fn unnamed_first_port_default_protocol_and_names() {
        let env = service_env(&svc(
            "ns",
            "my-svc",
            "10.0.0.11",
            &[("", None, 8080), ("dns-udp", Some("UDP"), 53)],
        ));
        assert_eq!(get(&env, "MY_SVC_SERVICE_HOST"), Some("10.0.0.11"));
        assert_eq!(get(&env, "MY_SVC_SERVICE_PORT"), Some("8080"));
        // The unnamed port has no `_SERVICE_PORT_<NAME>`; the named one has.
        assert!(env.iter().all(|(k, _)| k != "MY_SVC_SERVICE_PORT_"));
        assert_eq!(get(&env, "MY_SVC_SERVICE_PORT_DNS_UDP"), Some("53"));
        // No protocol is TCP; the first port is the `_PORT` one.
        assert_eq!(get(&env, "MY_SVC_PORT"), Some("tcp://10.0.0.11:8080"));
        assert_eq!(get(&env, "MY_SVC_PORT_8080_TCP_PROTO"), Some("tcp"));
        assert_eq!(get(&env, "MY_SVC_PORT_53_UDP"), Some("udp://10.0.0.11:53"));
        assert_eq!(get(&env, "MY_SVC_PORT_53_UDP_ADDR"), Some("10.0.0.11"));
        // An empty protocol is TCP too; SCTP is kept.
        let env = service_env(&svc(
            "ns",
            "x",
            "10.0.0.2",
            &[("a", Some(""), 1), ("b", Some("SCTP"), 2)],
        ));
        assert_eq!(get(&env, "X_PORT"), Some("tcp://10.0.0.2:1"));
        assert_eq!(get(&env, "X_PORT_2_SCTP_PROTO"), Some("sctp"));
        // No ports: the host only.
        let env = service_env(&svc("ns", "bare", "10.0.0.3", &[]));
        assert_eq!(env, [("BARE_SERVICE_HOST".into(), "10.0.0.3".into())]);
        assert_eq!(env_name("a-b-c"), "A_B_C");
        assert_eq!(join_host_port("fd00::1", 443), "[fd00::1]:443");
        assert_eq!(join_host_port("10.0.0.1", 443), "10.0.0.1:443");
    }

    #[test]
    fn which_services_a_pod_gets() {
        let all = vec![
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[("https", None, 443)],
            ),
            svc("app", "my-svc", "10.0.0.11", &[("http", None, 8080)]),
            svc("app", "headless", "None", &[("http", None, 80)]),
            svc("app", "external", "", &[]),
            svc("other", "elsewhere", "10.0.0.12", &[("", None, 80)]),
            svc("default", "in-default", "10.0.0.13", &[("", None, 80)]),
        ];
        let names = |ns: &str, links: bool| -> Vec<String> {
            services_for_pod(&all, ns, links)
                .values()
                .map(|s| format!("{}/{}", s.metadata.namespace, s.metadata.name))
                .collect()
        };
        // (pod namespace, enableServiceLinks, services given)
        let cases: [(&str, bool, &[&str]); 4] = [
            ("app", true, &["default/kubernetes", "app/my-svc"]),
            ("app", false, &["default/kubernetes"]),
            (
                "default",
                true,
                &["default/in-default", "default/kubernetes"],
            ),
            ("default", false, &["default/kubernetes"]),
        ];
        for (ns, links, want) in cases {
            assert_eq!(names(ns, links), want, "namespace {ns}, links {links}");
        }
        let env = pod_service_env(&all, "app", true);
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get(&env, "MY_SVC_SERVICE_HOST"), Some("10.0.0.11"));
        assert!(env.iter().all(|(k, _)| !k.starts_with("HEADLESS_")
            && !k.starts_with("EXTERNAL_")
            && !k.starts_with("ELSEWHERE_")));
        // A `kubernetes` service of the pod's own namespace wins over the master one, in
        // either order.
        let mut shadow = all.clone();
        shadow.insert(0, svc("app", "kubernetes", "10.0.0.99", &[("", None, 1)]));
        for list in [shadow.clone(), shadow.into_iter().rev().collect()] {
            let env = pod_service_env(&list, "app", true);
            assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.0.0.99"));
            let env = pod_service_env(&list, "app", false);
            assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        }
    }
}
