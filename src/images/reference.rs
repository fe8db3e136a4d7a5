//! Image reference normalization, as Docker and containerd do it: `busybox` is
//! `docker.io/library/busybox:latest`, `foo/bar:1` is `docker.io/foo/bar:1`, a first component
//! with a `.` or `:` (or `localhost`) is a registry and stays.

use std::fmt;

/// The registry of names without one.
const DEFAULT_DOMAIN: &str = "docker.io";
/// The repository prefix of single-component names on the default registry.
const OFFICIAL_PREFIX: &str = "library/";
/// The tag of names without tag or digest.
const DEFAULT_TAG: &str = "latest";

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), `docker.io` by default.
    pub domain: String,
    /// Repository path, such as `library/busybox`.
    pub path: String,
    /// The tag (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// `sha256:<hex>` when the reference pins a manifest digest.
    pub digest: Option<String>,
}

impl Reference {
    /// `domain/path` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Parses and normalizes `s` (Docker's `ParseNormalizedNamed` + `TagNameOnly`). The error
/// says what is wrong with it.
pub fn parse(s: &str) -> Result<Reference, String> {
    if s.is_empty() {
        return Err("empty image reference".into());
    }
    if s.len() > 255 + 7 + 64 + 128 {
        return Err("image reference too long".into());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            check_digest(d)?;
            (r, Some(d.to_string()))
        }
        None => (s, None),
    };
    // The tag follows the last ':' after the last '/'.
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
        None => (rest, None),
    };
    if let Some(t) = &tag {
        check_tag(t)?;
    }
    let (domain, mut path) = split_domain(name);
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("{OFFICIAL_PREFIX}{path}");
    }
    check_domain(&domain)?;
    check_path(&path)?;
    if domain.len() + 1 + path.len() > 255 {
        return Err("repository name longer than 255 characters".into());
    }
    let tag = match (tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (t, _) => t,
    };
    Ok(Reference {
        domain,
        path,
        tag,
        digest,
    })
}

/// `s` normalized to its full form (`docker.io/library/busybox:latest`).
pub fn normalize(s: &str) -> Result<String, String> {
    parse(s).map(|r| r.to_string())
}

/// Splits off the registry: the first component is one when it has a `.` or `:`, is
/// `localhost`, or has upper-case letters (Docker's rule).
fn split_domain(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            let domain = if first == "index.docker.io" {
                DEFAULT_DOMAIN
            } else {
                first
            };
            (domain.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    }
}

fn check_domain(d: &str) -> Result<(), String> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry {d:?}: the port must be a number"));
        }
    }
    let ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("registry {d:?} is not a valid host name"))
    }
}

/// Path components: lower-case letters and digits, separated by `.`, `_`, `__` or dashes.
fn check_path(p: &str) -> Result<(), String> {
    for comp in p.split('/') {
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if comp.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return Err(format!(
                "repository {p:?}: each component must start and end with a lower-case letter or digit"
            ));
        }
        if comp.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("repository {p:?} must be lower-case"));
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &comp[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                return Err(format!("repository {p:?}: bad separator {sep:?}"));
            }
        }
    }
    Ok(())
}

fn check_tag(t: &str) -> Result<(), String> {
    let b = t.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if b.is_empty()
        || b.len() > 128
        || !word(b[0])
        || !b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
    {
        return Err(format!(
            "tag {t:?}: up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

fn check_digest(d: &str) -> Result<(), String> {
    if super::digest::is_sha256(d) {
        Ok(())
    } else {
        Err(format!(
            "digest {d:?}: expected sha256: and 64 lower-case hex digits"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s).unwrap()
    }

    #[test]
    fn official_images_get_library_and_latest() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            n("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn user_repositories_get_docker_io() {
        assert_eq!(n("foo/bar:1"), "docker.io/foo/bar:1");
        assert_eq!(n("foo/bar/baz"), "docker.io/foo/bar/baz:latest");
    }

    #[test]
    fn registries_stay() {
        assert_eq!(n("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(n("localhost/x:2"), "localhost/x:2");
        assert_eq!(n("quay.io/coreos/etcd:v3"), "quay.io/coreos/etcd:v3");
        assert_eq!(n("registry:5000/a/b"), "registry:5000/a/b:latest");
    }

    #[test]
    fn digests_keep_no_default_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            n(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
        assert!(normalize("busybox@sha256:abc").is_err());
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            "Busybox",
            "foo/Bar",
            "busybox:",
            "busybox:.x",
            "a//b",
            "-a",
            "a:b:c/d",
            "host:port/x",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn parse_gives_parts() {
        let r = parse("localhost:5000/team/app:v2").unwrap();
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.path, "team/app");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.name(), "localhost:5000/team/app");
    }
}
