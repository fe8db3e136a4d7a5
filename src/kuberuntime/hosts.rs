//! A pod's names: its hostname and domain (`spec.hostname`, `spec.subdomain`), the kernel
//! hostname (the FQDN under `setHostnameAsFQDN`), and its /etc/hosts, all as the kubelet makes
//! them (`GeneratePodHostNameAndDomain`, `GetNodenameForKernel`, `managedHostsFileContent`).

use crate::api::{validate, HostAlias, Pod};

/// The longest FQDN the kernel's nodename field holds.
const FQDN_MAX: usize = 64;

/// The pod's hostname and domain: `spec.hostnameOverride` (a DNS subdomain) with no domain;
/// else `spec.hostname` (a DNS label) or the pod's name, and the domain `<subdomain>.<ns>.svc.
/// <cluster domain>` when `spec.subdomain` is set, else empty. A name over 63 characters is cut
/// there (trailing `-` and `.` trimmed).
pub fn name_and_domain(pod: &Pod, cluster_domain: &str) -> Result<(String, String), String> {
    if let Some(o) = pod.spec.hostname_override.as_deref() {
        validate::dns1123_subdomain(o).map_err(|e| {
            format!("spec.hostnameOverride `{o}` is not a valid DNS subdomain: {e}")
        })?;
        return Ok((cut_hostname(o)?, String::new()));
    }
    let mut name = pod.metadata.name.as_str();
    if let Some(h) = pod.spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        validate::dns1123_label(h)
            .map_err(|e| format!("spec.hostname `{h}` is not a valid DNS label: {e}"))?;
        name = h;
    }
    let name = cut_hostname(name)?;
    let mut domain = String::new();
    if let Some(s) = pod.spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        validate::dns1123_label(s)
            .map_err(|e| format!("spec.subdomain `{s}` is not a valid DNS label: {e}"))?;
        domain = format!("{s}.{}.svc.{cluster_domain}", pod.metadata.namespace);
    }
    Ok((name, domain))
}

/// `name` cut to 63 characters, trailing `-` and `.` trimmed (the kubelet's
/// `truncatePodHostnameIfNeeded`).
fn cut_hostname(name: &str) -> Result<String, String> {
    if name.len() <= 63 {
        return Ok(name.to_string());
    }
    let mut cut = 63;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let name = name[..cut].trim_end_matches(['-', '.']);
    if name.is_empty() {
        return Err("the pod's hostname is empty once cut to 63 characters".into());
    }
    Ok(name.to_string())
}

/// The hostname the kernel gets: the FQDN `<name>.<domain>` under `setHostnameAsFQDN` (when
/// there is a domain), else the name; an FQDN longer than 64 characters is refused.
pub fn kernel_hostname(name: &str, domain: &str, as_fqdn: bool) -> Result<String, String> {
    if domain.is_empty() || !as_fqdn {
        return Ok(name.to_string());
    }
    let fqdn = format!("{name}.{domain}");
    if fqdn.len() > FQDN_MAX {
        return Err(format!(
            "setHostnameAsFQDN: the FQDN {fqdn} is too long ({FQDN_MAX} characters is the \
             max, {} requested); shorten spec.hostname or spec.subdomain",
            fqdn.len()
        ));
    }
    Ok(fqdn)
}

/// The pod's own /etc/hosts: loopback and IPv6 names, the pod's IP with its names (the FQDN
/// first when there is a domain), then the hostAliases.
pub fn managed(ip: &str, name: &str, domain: &str, aliases: &[HostAlias]) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if domain.is_empty() {
        s.push_str(&format!("{ip}\t{name}\n"));
    } else {
        s.push_str(&format!("{ip}\t{name}.{domain}\t{name}\n"));
    }
    s.push_str(&from_aliases(aliases));
    s
}

/// A hostNetwork pod's /etc/hosts: the node's, then the hostAliases.
pub fn host_network(node_hosts: &str, aliases: &[HostAlias]) -> String {
    format!(
        "# Kubernetes-managed hosts file (host network).\n{node_hosts}{}",
        from_aliases(aliases)
    )
}

/// The hostAliases' lines, one per entry (`ip<TAB>name<TAB>name`), after a blank line and a
/// header; nothing when there are none.
fn from_aliases(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        s.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.join("\t")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, hostname: Option<&str>, subdomain: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = "ns1".into();
        p.spec.hostname = hostname.map(Into::into);
        p.spec.subdomain = subdomain.map(Into::into);
        p
    }

    fn overridden(mut p: Pod, name: &str) -> Pod {
        p.spec.hostname_override = Some(name.into());
        p
    }

    #[test]
    fn names_and_domains() {
        let long = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let table = [
            (pod("web", None, None), Ok(("web", ""))),
            (pod("web", Some("busybox-1"), None), Ok(("busybox-1", ""))),
            (
                pod("web", Some("busybox-1"), Some("sub")),
                Ok(("busybox-1", "sub.ns1.svc.cluster.local")),
            ),
            (
                pod(&long, None, None),
                Ok(("a".repeat(62).leak() as &str, "")),
            ),
            (
                pod("web", Some("Bad_Name"), None),
                Err("spec.hostname `Bad_Name`"),
            ),
            (pod("web", None, Some("a.b")), Err("spec.subdomain `a.b`")),
            (
                overridden(
                    pod("web", Some("custom-host"), Some("sub")),
                    "override.example.host",
                ),
                Ok(("override.example.host", "")),
            ),
            (
                overridden(pod("web", None, None), "Not_A_Name"),
                Err("spec.hostnameOverride `Not_A_Name`"),
            ),
            (
                overridden(pod("web", None, None), ""),
                Err("spec.hostnameOverride ``"),
            ),
        ];
        for (p, want) in table {
            let got = name_and_domain(&p, "cluster.local");
            match want {
                Ok((n, d)) => assert_eq!(got, Ok((n.to_string(), d.to_string())), "{p:?}"),
                Err(says) => assert!(got.unwrap_err().starts_with(says), "{p:?}"),
            }
        }
    }

    #[test]
    fn kernel_hostname_is_the_fqdn_only_when_asked_and_short_enough() {
        let d = "sub.ns1.svc.cluster.local";
        assert_eq!(kernel_hostname("web", d, false).unwrap(), "web");
        assert_eq!(kernel_hostname("web", "", true).unwrap(), "web");
        assert_eq!(
            kernel_hostname("web", d, true).unwrap(),
            "web.sub.ns1.svc.cluster.local"
        );
        // 64 characters is still fine, 65 is not.
        let name64 = "x".repeat(64 - d.len() - 1);
        assert_eq!(kernel_hostname(&name64, d, true).unwrap().len(), 64);
        let e = kernel_hostname(&format!("{name64}x"), d, true).unwrap_err();
        assert!(
            e.contains("too long (64 characters is the max, 65 requested)"),
            "{e}"
        );
    }

    #[test]
    fn hosts_files_as_the_kubelet_writes_them() {
        let aliases = vec![
            HostAlias {
                ip: "127.0.0.1".into(),
                hostnames: vec!["foo.local".into(), "bar.local".into()],
            },
            HostAlias {
                ip: "10.1.2.3".into(),
                hostnames: vec!["foo.remote".into(), "bar.remote".into()],
            },
        ];
        // The documentation's hostAliases page, byte for byte.
        assert_eq!(
            managed("10.244.135.10", "hostaliases-pod", "", &aliases),
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n\
             10.244.135.10\thostaliases-pod\n\
             \n\
             # Entries added by HostAliases.\n\
             127.0.0.1\tfoo.local\tbar.local\n\
             10.1.2.3\tfoo.remote\tbar.remote\n"
        );
        let with_domain = managed("10.0.0.7", "web", "sub.ns1.svc.cluster.local", &[]);
        assert!(with_domain
            .ends_with("fe00::2\tip6-allrouters\n10.0.0.7\tweb.sub.ns1.svc.cluster.local\tweb\n"));
        assert_eq!(
            host_network("127.0.0.1 localhost\n", &aliases[..1]),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n\n\
             # Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\n"
        );
    }
}
