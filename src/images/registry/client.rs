//! The HTTP side of a pull: one ureq agent per TLS setting, requests with the registry's
//! authentication (anonymous first, then what its 401 challenge asks for, cached), and the
//! registry's error answers turned into messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ureq::http::Response;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, Body};

use super::auth::{self, Challenge, TokenCache};
use super::creds::Keyring;
use super::endpoint::Endpoint;
use super::Options;
use crate::images::error::{ErrorKind, ImageError, Result};

/// Where the system's CA bundle is looked for (`SSL_CERT_FILE` first).
const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// Largest error or token answer read.
const SMALL_BODY: u64 = 1 << 20;

/// A registry client for one pull (or many: its tokens are reused).
pub struct Client {
    opts: Options,
    keyring: Keyring,
    agents: Mutex<HashMap<(bool, Option<PathBuf>), Agent>>,
    tokens: TokenCache,
}

impl Client {
    /// A client with `opts` and the credentials of `keyring`.
    pub fn new(opts: Options, keyring: Keyring) -> Client {
        // ureq uses the process's rustls provider; the agent's is ring (a no-op when set).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            opts,
            keyring,
            agents: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
        }
    }

    /// The options it was made with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    fn agent(&self, ep: &Endpoint) -> Result<Agent> {
        let key = (ep.skip_verify, ep.ca.clone());
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = agents.get(&key) {
            return Ok(a.clone());
        }
        let roots = match &ep.ca {
            Some(f) => read_certs(f)?,
            None if ep.skip_verify => Vec::new(),
            None => system_certs(),
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .disable_verification(ep.skip_verify)
            .build();
        let cfg = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(self.opts.progress_deadline))
            .user_agent(concat!("edged/", env!("CARGO_PKG_VERSION")))
            .build();
        let a = Agent::new_with_config(cfg);
        agents.insert(key, a.clone());
        Ok(a)
    }

    /// `GET <endpoint>/v2/<repo>/<path>` with `headers`, authenticated as the registry asks.
    /// Any status but 401 is the caller's; a 401 that credentials cannot answer is an
    /// [`ErrorKind::Auth`] error carrying the registry's message.
    pub fn get(
        &self,
        ep: &Endpoint,
        domain: &str,
        repo: &str,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>> {
        let url = format!("{}/v2/{repo}/{path}", ep.base);
        let agent = self.agent(ep)?;
        let cached = self.tokens.get(&ep.base, repo, Instant::now());
        let had_cached = cached.is_some();
        let resp = send(&agent, &url, headers, cached.as_deref())?;
        if resp.status() != 401 {
            return Ok(resp);
        }
        if had_cached {
            self.tokens.forget(&ep.base, repo);
        }
        let value = self.answer(&agent, ep, domain, repo, &url, resp)?;
        let resp = send(&agent, &url, headers, Some(&value))?;
        if resp.status() == 401 {
            self.tokens.forget(&ep.base, repo);
            let msg = error_text(resp);
            return Err(ImageError::new(
                &url,
                "pull",
                ErrorKind::Auth,
                format!("the registry refused the credentials: {msg}"),
            ));
        }
        Ok(resp)
    }

    /// The `Authorization` value that answers a 401 (cached for the next requests).
    fn answer(
        &self,
        agent: &Agent,
        ep: &Endpoint,
        domain: &str,
        repo: &str,
        url: &str,
        resp: Response<Body>,
    ) -> Result<String> {
        let header = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let creds = self.keyring.lookup(ep.host()).or_else(|| {
            if ep.mirror {
                None
            } else {
                self.keyring.lookup(domain)
            }
        });
        let registry_said = error_text(resp);
        let auth_err = |m: String| ImageError::new(url, "pull", ErrorKind::Auth, m);
        match auth::parse_challenge(&header) {
            None => Err(auth_err(format!(
                "the registry answered 401 ({registry_said}) with no challenge edged knows ({header:?})"
            ))),
            Some(Challenge::Basic) => {
                let c = creds.ok_or_else(|| {
                    auth_err(format!(
                        "the registry requires credentials ({registry_said}): give an imagePullSecret, --creds, or a docker config.json"
                    ))
                })?;
                let v = c.basic();
                self.tokens.put(&ep.base, repo, v.clone(), None, Instant::now());
                Ok(v)
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| auth::pull_scope(repo));
                let mut token_url = ureq::http::Uri::try_from(realm.as_str())
                    .map_err(|e| auth_err(format!("bad token realm {realm:?}: {e}")))?
                    .to_string();
                let mut q = Vec::new();
                if let Some(s) = &service {
                    q.push(format!("service={}", encode(s)));
                }
                q.push(format!("scope={}", encode(&scope)));
                token_url.push(if token_url.contains('?') { '&' } else { '?' });
                token_url.push_str(&q.join("&"));
                let mut req = agent.get(&token_url);
                if let Some(c) = creds {
                    req = req.header("Authorization", c.basic());
                }
                let started = Instant::now();
                let mut tr = req.call().map_err(|e| net_err(&token_url, e))?;
                if tr.status() != 200 {
                    let status = tr.status();
                    let msg = error_text(tr);
                    let kind = if status.is_server_error() {
                        ErrorKind::Network
                    } else {
                        ErrorKind::Auth
                    };
                    return Err(ImageError::new(
                        url,
                        "pull",
                        kind,
                        format!("the token service {realm} refused ({status}): {msg}"),
                    ));
                }
                let body = tr
                    .body_mut()
                    .with_config()
                    .limit(SMALL_BODY)
                    .read_to_vec()
                    .map_err(|e| net_err(&token_url, e))?;
                let (token, ttl) = auth::parse_token(&body).map_err(auth_err)?;
                let v = format!("Bearer {token}");
                self.tokens.put(&ep.base, repo, v.clone(), Some(ttl), started);
                Ok(v)
            }
        }
    }
}

fn send(
    agent: &Agent,
    url: &str,
    headers: &[(&str, String)],
    auth: Option<&str>,
) -> Result<Response<Body>> {
    let mut req = agent.get(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.call().map_err(|e| net_err(url, e))
}

/// A transport failure: worth retrying, unless TLS refused the server (a certificate does
/// not come right by waiting) or the URL is bad.
pub fn net_err(url: &str, e: ureq::Error) -> ImageError {
    let tls_refused = match &e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::Pem(_) => true,
        ureq::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    };
    match e {
        _ if tls_refused => ImageError::new(
            url,
            "pull",
            ErrorKind::Invalid,
            format!("TLS: {e}: give the registry's CA (--registry-ca HOST:PORT=FILE) or list it in --insecure-registry"),
        ),
        ureq::Error::BadUri(_) | ureq::Error::InvalidProxyUrl => {
            ImageError::invalid(url, "pull", e.to_string())
        }
        _ => ImageError::new(url, "pull", ErrorKind::Network, e.to_string()),
    }
}

/// The registry's message from an error answer (its `errors` JSON, else the start of the
/// body, else the status).
pub fn error_text(mut resp: Response<Body>) -> String {
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(SMALL_BODY)
        .read_to_vec()
        .unwrap_or_default();
    registry_message(status.as_u16(), &body)
}

/// See [`error_text`].
pub fn registry_message(status: u16, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Es {
        errors: Vec<E>,
    }
    if let Ok(es) = serde_json::from_slice::<Es>(body) {
        let parts: Vec<String> = es
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect();
        if !parts.is_empty() {
            return format!("{status} {}", parts.join("; "));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        )
    }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn read_certs(f: &std::path::Path) -> Result<Vec<Certificate<'static>>> {
    let data = std::fs::read(f).map_err(|e| {
        ImageError::io(f.display().to_string(), "read registry CA", &e).context("--registry-ca")
    })?;
    let certs = pem_certs(&data);
    if certs.is_empty() {
        return Err(ImageError::invalid(
            f.display().to_string(),
            "read registry CA",
            "no PEM certificate in the file",
        ));
    }
    Ok(certs)
}

fn pem_certs(data: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(data)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// The system's CAs (an empty set, and a warning, when none is found).
fn system_certs() -> Vec<Certificate<'static>> {
    let mut files: Vec<PathBuf> = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    files.extend(SYSTEM_CA_FILES.iter().map(PathBuf::from));
    for f in files {
        if let Ok(data) = std::fs::read(&f) {
            let c = pem_certs(&data);
            if !c.is_empty() {
                return c;
            }
        }
    }
    tracing::warn!(
        "no system CA bundle found (install ca-certificates): registries over TLS will not verify"
    );
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_messages() {
        assert_eq!(
            registry_message(
                401,
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#
            ),
            "401 UNAUTHORIZED: authentication required"
        );
        assert_eq!(registry_message(502, b""), "HTTP 502");
        assert_eq!(registry_message(404, b"nope\n"), "HTTP 404: nope");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
