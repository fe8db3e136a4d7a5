//! Where a registry's content is fetched from: its mirrors (`--registry-mirror`), in order,
//! then the registry itself (unless `--registry-mirror-only`), over HTTPS, or for an insecure
//! registry HTTPS without verification and then plain HTTP (Docker's order).

use std::path::PathBuf;

use super::Options;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's Distribution API.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// One base URL to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host[:port]` (a mirror's may carry a path), no trailing `/`.
    pub base: String,
    /// A mirror rather than the registry itself.
    pub mirror: bool,
    /// TLS without verifying the server's certificate.
    pub skip_verify: bool,
    /// A CA file to verify the server with (`--registry-ca`), instead of the system's.
    pub ca: Option<PathBuf>,
}

impl Endpoint {
    /// `host[:port]` of the endpoint.
    pub fn host(&self) -> &str {
        let rest = self.base.split_once("://").map_or(&*self.base, |(_, r)| r);
        rest.split('/').next().unwrap_or(rest)
    }

    /// True for plain HTTP.
    pub fn plain(&self) -> bool {
        self.base.starts_with("http://")
    }
}

/// The host serving `domain` (a reference's registry part).
pub fn registry_host(domain: &str) -> &str {
    if domain == DOCKER_HUB {
        DOCKER_HUB_HOST
    } else {
        domain
    }
}

/// True when `host[:port]` is listed in `--insecure-registry` (by itself or its host).
pub fn is_insecure(host: &str, opts: &Options) -> bool {
    let name = strip_port(host);
    opts.insecure.iter().any(|h| h == host || h == name)
}

/// True for loopback hosts, which may also be reached over plain HTTP (as Docker allows),
/// after verified TLS.
pub fn is_loopback(host: &str) -> bool {
    let name = strip_port(host);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

fn ca_for(host: &str, opts: &Options) -> Option<PathBuf> {
    let name = strip_port(host);
    opts.cas
        .iter()
        .find(|(h, _)| h == host)
        .or_else(|| opts.cas.iter().find(|(h, _)| h == name))
        .map(|(_, f)| f.clone())
}

/// The endpoints to try for `domain`, in order.
pub fn endpoints(domain: &str, opts: &Options) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (reg, url) in &opts.mirrors {
        if reg != domain && registry_host(reg) != registry_host(domain) {
            continue;
        }
        let url = url.trim_end_matches('/');
        let base = if url.contains("://") {
            url.to_string()
        } else {
            format!("https://{url}")
        };
        let mut ep = Endpoint {
            base,
            mirror: true,
            skip_verify: false,
            ca: None,
        };
        let host = ep.host().to_string();
        ep.skip_verify = !ep.plain() && is_insecure(&host, opts);
        ep.ca = ca_for(&host, opts);
        out.push(ep);
    }
    if opts.mirror_only && !out.is_empty() {
        return out;
    }
    let host = registry_host(domain);
    let ca = ca_for(host, opts);
    let insecure = is_insecure(host, opts) && ca.is_none();
    out.push(Endpoint {
        base: format!("https://{host}"),
        mirror: false,
        skip_verify: insecure,
        ca,
    });
    if insecure || is_loopback(host) {
        out.push(Endpoint {
            base: format!("http://{host}"),
            mirror: false,
            skip_verify: false,
            ca: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options::default()
    }

    fn bases(v: &[Endpoint]) -> Vec<&str> {
        v.iter().map(|e| e.base.as_str()).collect()
    }

    #[test]
    fn docker_hub_is_served_by_registry_1() {
        assert_eq!(
            bases(&endpoints("docker.io", &opts())),
            ["https://registry-1.docker.io"]
        );
        assert_eq!(bases(&endpoints("quay.io", &opts())), ["https://quay.io"]);
    }

    #[test]
    fn mirrors_come_first_in_order_then_the_registry() {
        let mut o = opts();
        o.mirrors = vec![
            ("docker.io".into(), "https://m1.example/".into()),
            ("quay.io".into(), "https://q.example".into()),
            ("docker.io".into(), "m2.example:5000".into()),
        ];
        assert_eq!(
            bases(&endpoints("docker.io", &o)),
            [
                "https://m1.example",
                "https://m2.example:5000",
                "https://registry-1.docker.io"
            ]
        );
        assert!(endpoints("docker.io", &o)[0].mirror);
        o.mirror_only = true;
        assert_eq!(
            bases(&endpoints("docker.io", &o)),
            ["https://m1.example", "https://m2.example:5000"]
        );
        // No mirror for it: the registry, even with --registry-mirror-only.
        assert_eq!(bases(&endpoints("ghcr.io", &o)), ["https://ghcr.io"]);
    }

    #[test]
    fn insecure_registries_try_tls_unverified_then_plain() {
        let mut o = opts();
        o.insecure = vec!["reg.lan:5000".into()];
        let e = endpoints("reg.lan:5000", &o);
        assert_eq!(bases(&e), ["https://reg.lan:5000", "http://reg.lan:5000"]);
        assert!(e[0].skip_verify);
        assert_eq!(
            bases(&endpoints("reg.lan:5001", &o)),
            ["https://reg.lan:5001"]
        );
        o.insecure = vec!["reg.lan".into()];
        assert_eq!(endpoints("reg.lan:5001", &o).len(), 2);
        // Loopback: verified TLS, then plain HTTP.
        let e = endpoints("127.0.0.1:5000", &opts());
        assert_eq!(
            bases(&e),
            ["https://127.0.0.1:5000", "http://127.0.0.1:5000"]
        );
        assert!(!e[0].skip_verify);
        assert_eq!(endpoints("localhost:5000", &opts()).len(), 2);
    }

    #[test]
    fn a_registry_ca_means_verified_tls() {
        let mut o = opts();
        o.cas = vec![("127.0.0.1:5443".into(), PathBuf::from("/ca.pem"))];
        o.cas.push(("reg.lan".into(), PathBuf::from("/lan.pem")));
        let e = endpoints("reg.lan:5443", &o);
        assert_eq!(e[0].ca.as_deref(), Some(std::path::Path::new("/lan.pem")));
        let e = endpoints("127.0.0.1:5443", &o);
        assert_eq!(e[0].base, "https://127.0.0.1:5443");
        assert!(!e[0].skip_verify);
        assert_eq!(e[0].ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(e[0].host(), "127.0.0.1:5443");
    }
}
