//! Registry authentication: the `WWW-Authenticate` challenge of a 401 (Basic, or Bearer with
//! a token service), token answers, and the cache of scoped tokens until they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// What a registry asked for in its 401.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic with the registry's own user and password.
    Basic,
    /// A token from `realm`, for `service` and `scope`.
    Bearer {
        /// The token service's URL.
        realm: String,
        /// The `service` parameter to pass on.
        service: Option<String>,
        /// The `scope` the registry named (else the client asks for `repository:R:pull`).
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value (one challenge; the first Basic or Bearer one).
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(char::is_whitespace).unwrap_or((h, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `k="v", k2=v2` pairs (quoted values may hold commas and `\"`).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            it.next();
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            it.next();
        }
        if key.is_empty() {
            return out;
        }
        if it.next() != Some('=') {
            continue;
        }
        let mut val = String::new();
        if it.peek() == Some(&'"') {
            it.next();
            while let Some(c) = it.next() {
                match c {
                    '\\' => {
                        if let Some(n) = it.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                it.next();
            }
        }
        out.push((key.trim().to_string(), val.trim().to_string()));
    }
}

/// A token service's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The token of a token service's answer and how long it lasts (the spec's 60 s when the
/// answer says less or nothing).
pub fn parse_token(body: &[u8]) -> Result<(String, Duration), String> {
    let a: TokenAnswer =
        serde_json::from_slice(body).map_err(|e| format!("bad token answer: {e}"))?;
    let token = a
        .token
        .filter(|t| !t.is_empty())
        .or(a.access_token.filter(|t| !t.is_empty()))
        .ok_or("the token answer has no token")?;
    Ok((
        token,
        Duration::from_secs(a.expires_in.unwrap_or(60).max(60)),
    ))
}

/// The scope a pull asks for.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// An `Authorization` value and when it stops being good (`None`: until refused).
type Entry = (String, Option<Instant>);

/// `Authorization` values by (endpoint, repository), until they expire.
#[derive(Default)]
pub struct TokenCache {
    map: Mutex<HashMap<(String, String), Entry>>,
}

/// Tokens are dropped this long before their end, so none expires in flight.
const MARGIN: Duration = Duration::from_secs(10);

impl TokenCache {
    /// The cached value for `(endpoint, repository)`, if still good at `now`.
    pub fn get(&self, endpoint: &str, repo: &str, now: Instant) -> Option<String> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&(endpoint.to_string(), repo.to_string())) {
            Some((v, None)) => Some(v.clone()),
            Some((v, Some(until))) if now < *until => Some(v.clone()),
            _ => None,
        }
    }

    /// Caches `value` for `ttl` (`None`: Basic, good until refused).
    pub fn put(
        &self,
        endpoint: &str,
        repo: &str,
        value: String,
        ttl: Option<Duration>,
        now: Instant,
    ) {
        let until = ttl.map(|t| now + t.saturating_sub(MARGIN));
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((endpoint.to_string(), repo.to_string()), (value, until));
    }

    /// Forgets the value for `(endpoint, repository)` (refused).
    pub fn forget(&self, endpoint: &str, repo: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(endpoint.to_string(), repo.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=https://r/t, scope="repository:a:pull,push""#),
            Some(Challenge::Bearer {
                realm: "https://r/t".into(),
                service: None,
                scope: Some("repository:a:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn tokens_and_their_life() {
        let (t, d) = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.as_str(), d), ("abc", Duration::from_secs(300)));
        let (t, d) = parse_token(br#"{"access_token":"x"}"#).unwrap();
        assert_eq!((t.as_str(), d), ("x", Duration::from_secs(60)));
        assert!(parse_token(br#"{"expires_in":3}"#).is_err());
    }

    #[test]
    fn cache_expires() {
        let c = TokenCache::default();
        let t0 = Instant::now();
        c.put(
            "e",
            "r",
            "Bearer a".into(),
            Some(Duration::from_secs(60)),
            t0,
        );
        assert_eq!(
            c.get("e", "r", t0 + Duration::from_secs(49)).as_deref(),
            Some("Bearer a")
        );
        assert_eq!(c.get("e", "r", t0 + Duration::from_secs(51)), None);
        assert_eq!(c.get("e", "other", t0), None);
        c.put("e", "r", "Basic b".into(), None, t0);
        assert!(c.get("e", "r", t0 + Duration::from_secs(1 << 20)).is_some());
        c.forget("e", "r");
        assert_eq!(c.get("e", "r", t0), None);
    }
}
