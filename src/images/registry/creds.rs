//! Registry credentials: `USER:PASS`, docker config files (`config.json` with `auths`, the old
//! `.dockercfg` without), and the pod's `imagePullSecrets` that carry them.

use base64::Engine;
use serde::Deserialize;

/// A user name and password (or an identity token) for one registry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// Parses `USER:PASS` (the password may hold `:`).
    pub fn parse(s: &str) -> Result<Credentials, String> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                username: u.into(),
                password: p.into(),
            }),
            _ => Err("credentials must be USER:PASS".into()),
        }
    }

    /// The `Authorization: Basic` value.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Credentials by registry, first match wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Keyring {
    entries: Vec<(String, Credentials)>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

impl Keyring {
    /// One entry, for `registry` (a reference's domain; empty: every registry).
    pub fn single(registry: &str, c: Credentials) -> Keyring {
        Keyring {
            entries: vec![(normalize_key(registry), c)],
        }
    }

    /// Reads a docker `config.json` (`{"auths": {...}}`).
    pub fn from_config_json(data: &[u8]) -> Result<Keyring, String> {
        let c: ConfigJson =
            serde_json::from_slice(data).map_err(|e| format!("not a docker config.json: {e}"))?;
        Self::from_entries(c.auths)
    }

    /// Reads an old `.dockercfg` (the `auths` map alone).
    pub fn from_dockercfg(data: &[u8]) -> Result<Keyring, String> {
        let m: std::collections::BTreeMap<String, AuthEntry> =
            serde_json::from_slice(data).map_err(|e| format!("not a .dockercfg: {e}"))?;
        Self::from_entries(m)
    }

    fn from_entries(m: std::collections::BTreeMap<String, AuthEntry>) -> Result<Keyring, String> {
        let mut entries = Vec::new();
        for (key, e) in m {
            let creds = match (&e.auth, &e.username, &e.password) {
                (Some(a), _, _) if !a.is_empty() => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .map_err(|err| format!("auths.{key}.auth: not base64: {err}"))?;
                    let s = String::from_utf8(raw)
                        .map_err(|_| format!("auths.{key}.auth: not UTF-8"))?;
                    Credentials::parse(&s).map_err(|err| format!("auths.{key}.auth: {err}"))?
                }
                (_, Some(u), Some(p)) => Credentials {
                    username: u.clone(),
                    password: p.clone(),
                },
                _ => continue,
            };
            entries.push((normalize_key(&key), creds));
        }
        Ok(Keyring { entries })
    }

    /// Appends `other`'s entries after these.
    pub fn extend(&mut self, other: Keyring) {
        self.entries.extend(other.entries);
    }

    /// True with no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials for `registry` (a reference's domain, such as `docker.io`).
    pub fn lookup(&self, registry: &str) -> Option<&Credentials> {
        let want = normalize_key(registry);
        self.entries
            .iter()
            .find(|(k, _)| k == &want || k.is_empty())
            .map(|(_, c)| c)
    }
}

/// `https://index.docker.io/v1/` and the like become `docker.io`; others their `host[:port]`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        h => h.to_string(),
    }
}

/// The keyring of a pull secret (`kubernetes.io/dockerconfigjson` with key `.dockerconfigjson`,
/// or `kubernetes.io/dockercfg` with key `.dockercfg`), from its decoded data.
pub fn from_secret(
    kind: Option<&str>,
    data: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<Keyring, String> {
    match kind {
        Some("kubernetes.io/dockerconfigjson") => data
            .get(".dockerconfigjson")
            .ok_or_else(|| "has no .dockerconfigjson key".to_string())
            .and_then(|d| Keyring::from_config_json(d)),
        Some("kubernetes.io/dockercfg") => data
            .get(".dockercfg")
            .ok_or_else(|| "has no .dockercfg key".to_string())
            .and_then(|d| Keyring::from_dockercfg(d)),
        other => Err(format!(
            "is of type {:?}, not kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg",
            other.unwrap_or("")
        )),
    }
}

/// The node's docker config: `<root-dir>/config.json`, then `$HOME/.docker/config.json`
/// (both when present, in that order). A malformed file is logged and skipped.
pub fn node_keyring(root_dir: &std::path::Path) -> Keyring {
    let mut out = Keyring::default();
    let mut files = vec![root_dir.join("config.json")];
    if let Some(home) = std::env::var_os("HOME") {
        files.push(std::path::Path::new(&home).join(".docker/config.json"));
    }
    for f in files {
        match std::fs::read(&f) {
            Ok(data) => match Keyring::from_config_json(&data) {
                Ok(k) => out.extend(k),
                Err(e) => tracing::warn!(file = %f.display(), "ignoring a docker config: {e}"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %f.display(), "cannot read a docker config: {e}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_auths_by_registry() {
        // "dXNlcjpwYTpzcw==" is base64 of "user:pa:ss".
        let k = Keyring::from_config_json(
            br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                "reg.lan:5000":{"username":"u2","password":"p2"}}}"#,
        )
        .unwrap();
        let hub = k.lookup("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(k.lookup("reg.lan:5000").unwrap().username, "u2");
        assert!(k.lookup("reg.lan").is_none());
        assert!(k.lookup("quay.io").is_none());
    }

    #[test]
    fn secrets_of_both_types() {
        let mut data = std::collections::BTreeMap::new();
        data.insert(
            ".dockercfg".to_string(),
            br#"{"reg.lan":{"auth":"dXNlcjpwYTpzcw=="}}"#.to_vec(),
        );
        let k = from_secret(Some("kubernetes.io/dockercfg"), &data).unwrap();
        assert_eq!(k.lookup("reg.lan").unwrap().username, "user");
        let e = from_secret(Some("kubernetes.io/dockerconfigjson"), &data).unwrap_err();
        assert!(e.contains(".dockerconfigjson"), "{e}");
        let e = from_secret(Some("Opaque"), &data).unwrap_err();
        assert!(e.contains("Opaque"), "{e}");
    }

    #[test]
    fn bad_auth_is_named() {
        let e = Keyring::from_config_json(br#"{"auths":{"r":{"auth":"%%"}}}"#).unwrap_err();
        assert!(e.contains("auths.r.auth"), "{e}");
    }

    #[test]
    fn basic_header() {
        let c = Credentials::parse("aladdin:opensesame").unwrap();
        assert_eq!(c.basic(), "Basic YWxhZGRpbjpvcGVuc2VzYW1l");
        assert!(Credentials::parse("nopass").is_err());
        assert!(!format!("{c:?}").contains("opensesame"));
    }
}
