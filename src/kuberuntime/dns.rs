//! A pod's DNS, as the kubelet makes it (`pkg/kubelet/network/dns`): `dnsPolicy`
//! ClusterFirst (the cluster's DNS servers, `<ns>.svc.<domain> svc.<domain> <domain>` then the
//! host's searches, `ndots:5`), ClusterFirstWithHostNet, Default (the node's resolv.conf) or
//! None, then `dnsConfig` merged in; ClusterFirst with no `--cluster-dns` falls back to
//! Default. Pure: the host's resolv.conf comes in as text.

use crate::api::Pod;
use crate::network::Dns;
use std::net::IpAddr;

/// The kubelet's limits: nameservers and search domains a resolver reads.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// The node's DNS settings (`--cluster-dns`, `--cluster-domain`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterDns {
    /// The cluster DNS servers.
    pub servers: Vec<IpAddr>,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// Where a pod's DNS comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cluster,
    Host,
    None,
}

/// The pod's DNS and whether ClusterFirst fell back to Default (no `--cluster-dns`).
pub fn pod_dns(pod: &Pod, cluster: &ClusterDns, host_resolv: &str) -> (Dns, bool) {
    let policy = pod.spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let mut kind = match policy {
        "None" => Kind::None,
        "Default" => Kind::Host,
        "ClusterFirstWithHostNet" => Kind::Cluster,
        // ClusterFirst (and anything unknown, as the API server's default): a hostNetwork
        // pod keeps the node's DNS.
        _ if pod.spec.host_network => Kind::Host,
        _ => Kind::Cluster,
    };
    let mut fell_back = false;
    if kind == Kind::Cluster && cluster.servers.is_empty() {
        kind = Kind::Host;
        fell_back = true;
    }
    let host = parse_resolv(host_resolv);
    let mut d = match kind {
        Kind::None => Dns::default(),
        Kind::Host => host,
        Kind::Cluster => {
            let mut searches = Vec::new();
            if !cluster.domain.is_empty() {
                let ns = &pod.metadata.namespace;
                let dom = &cluster.domain;
                searches.push(format!("{ns}.svc.{dom}"));
                searches.push(format!("svc.{dom}"));
                searches.push(dom.clone());
            }
            searches.extend(host.searches);
            Dns {
                servers: cluster.servers.iter().map(|s| s.to_string()).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(c) = &pod.spec.dns_config {
        d.servers.extend(c.nameservers.iter().cloned());
        d.searches.extend(c.searches.iter().cloned());
        let extra: Vec<(String, Option<String>)> = c
            .options
            .iter()
            .map(|o| (o.name.clone(), o.value.clone()))
            .collect();
        d.options = merge_options(&d.options, &extra);
    }
    d.servers = dedup(d.servers);
    d.servers.truncate(MAX_NAMESERVERS);
    d.searches = fit_searches(dedup(d.searches));
    (d, fell_back)
}

/// Nameservers, the last `search` line's domains (`.` and a trailing dot dropped) and all
/// options of a resolv.conf, as the kubelet reads the host's.
pub fn parse_resolv(text: &str) -> Dns {
    let mut d = Dns::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => d.servers.extend(f.next().map(str::to_string)),
            Some("search") => {
                d.searches = f
                    .filter(|s| *s != ".")
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect()
            }
            Some("options") => d.options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    d
}

/// `options` merged as the kubelet merges dnsConfig's: by name, a later value replacing an
/// earlier one in its place, new names after.
fn merge_options(base: &[String], extra: &[(String, Option<String>)]) -> Vec<String> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let split = |o: &str| match o.split_once(':') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (o.to_string(), None),
    };
    for (n, v) in base.iter().map(|o| split(o)).chain(extra.iter().cloned()) {
        match out.iter_mut().find(|(m, _)| *m == n) {
            Some(slot) => slot.1 = v,
            None => out.push((n, v)),
        }
    }
    out.into_iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{n}:{v}"),
            None => n,
        })
        .collect()
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Search domains cut to what resolvers read (32 domains, 2048 characters).
fn fit_searches(v: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = 0;
    for s in v.into_iter().take(MAX_SEARCHES) {
        let add = s.len() + usize::from(!out.is_empty());
        if chars + add > MAX_SEARCH_CHARS {
            break;
        }
        chars += add;
        out.push(s);
    }
    out
}

/// The resolv.conf of `d` (search, nameservers, options: as containerd writes it).
pub fn render(d: &Dns) -> String {
    let mut out = String::new();
    if !d.searches.is_empty() {
        out.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for s in &d.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !d.options.is_empty() {
        out.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PodDnsConfig, PodDnsConfigOption};

    const HOST: &str = "# generated\nnameserver 192.168.1.1\nnameserver 192.168.1.2 # second\nsearch old.lan\nsearch lan. .\noptions edns0 ndots:2\n";

    fn pod(policy: Option<&str>, host_network: bool, cfg: Option<PodDnsConfig>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = "shop".into();
        p.metadata.name = "web".into();
        p.spec.dns_policy = policy.map(str::to_string);
        p.spec.host_network = host_network;
        p.spec.dns_config = cfg;
        p
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            servers: vec!["10.96.0.10".parse().unwrap()],
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn policies_as_the_kubelet() {
        let c = cluster();
        let none = ClusterDns {
            servers: vec![],
            domain: "cluster.local".into(),
        };
        let cf = "search shop.svc.cluster.local svc.cluster.local cluster.local lan\nnameserver 10.96.0.10\noptions ndots:5\n";
        let host =
            "search lan\nnameserver 192.168.1.1\nnameserver 192.168.1.2\noptions edns0 ndots:2\n";
        let cases: Vec<(Pod, &ClusterDns, &str, bool)> = vec![
            (pod(Some("ClusterFirst"), false, None), &c, cf, false),
            (pod(None, false, None), &c, cf, false),
            // hostNetwork with ClusterFirst: the node's DNS; WithHostNet: the cluster's.
            (pod(Some("ClusterFirst"), true, None), &c, host, false),
            (
                pod(Some("ClusterFirstWithHostNet"), true, None),
                &c,
                cf,
                false,
            ),
            (pod(Some("Default"), false, None), &c, host, false),
            (pod(Some("None"), false, None), &c, "", false),
            // No --cluster-dns: Default, and the caller warns.
            (pod(Some("ClusterFirst"), false, None), &none, host, true),
        ];
        for (p, cl, want, fell) in cases {
            let (d, f) = pod_dns(&p, cl, HOST);
            assert_eq!(render(&d), want, "{:?}", p.spec.dns_policy);
            assert_eq!(f, fell, "{:?}", p.spec.dns_policy);
        }
    }

    #[test]
    fn dns_config_is_merged() {
        let cfg = PodDnsConfig {
            nameservers: vec![
                "1.1.1.1".into(),
                "10.96.0.10".into(),
                "8.8.8.8".into(),
                "9.9.9.9".into(),
            ],
            searches: vec!["extra.io".into(), "lan".into()],
            options: vec![
                PodDnsConfigOption {
                    name: "ndots".into(),
                    value: Some("1".into()),
                },
                PodDnsConfigOption {
                    name: "single-request".into(),
                    value: None,
                },
            ],
        };
        let (d, _) = pod_dns(
            &pod(Some("ClusterFirst"), false, Some(cfg.clone())),
            &cluster(),
            HOST,
        );
        assert_eq!(d.servers, ["10.96.0.10", "1.1.1.1", "8.8.8.8"]);
        assert_eq!(
            d.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "lan",
                "extra.io"
            ]
        );
        assert_eq!(d.options, ["ndots:1", "single-request"]);
        let (d, _) = pod_dns(&pod(Some("None"), false, Some(cfg)), &cluster(), HOST);
        assert_eq!(
            render(&d),
            "search extra.io lan\nnameserver 1.1.1.1\nnameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:1 single-request\n"
        );
    }

    #[test]
    fn an_empty_domain_and_long_search_lists() {
        let c = ClusterDns {
            domain: String::new(),
            ..cluster()
        };
        let (d, _) = pod_dns(&pod(None, false, None), &c, "search a b\n");
        assert_eq!(d.searches, ["a", "b"]);
        let many: String = (0..40).map(|i| format!(" d{i}.example")).collect();
        let (d, _) = pod_dns(
            &pod(Some("Default"), false, None),
            &c,
            &format!("search{many}\n"),
        );
        assert_eq!(d.searches.len(), 32);
        let long: String = (0..10)
            .map(|i| format!(" {}{i}", "x".repeat(250)))
            .collect();
        let (d, _) = pod_dns(
            &pod(Some("Default"), false, None),
            &c,
            &format!("search{long}\n"),
        );
        assert!(d.searches.join(" ").len() <= 2048);
        assert_eq!(d.searches.len(), 8);
    }
}
