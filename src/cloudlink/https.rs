//! The HTTPS client for CloudHub's certificate server, on the agent's one HTTP client (ureq,
//! the registry pulls' too) run on a blocking thread: a GET that may carry a body, as
//! KubeEdge's edge sends it.

use super::CloudError;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use std::time::Duration;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

/// The largest answer read: a certificate is a few kilobytes.
const MAX_ANSWER: u64 = 1 << 20;

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body (at most 1 MiB read).
    pub body: Vec<u8>,
}

/// Whom the client trusts, and what it presents.
pub enum Trust {
    /// Any server (only for `GET /ca.crt`: the CA it returns is checked against the token's
    /// hash afterwards and nothing secret is sent).
    Any,
    /// Servers `ca` signed; with a client certificate and key when given.
    Ca(
        CertificateDer<'static>,
        Option<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>)>,
    ),
}

/// Splits `host:port` (`[v6]:port` too) into host and port.
pub fn split_host_port(server: &str) -> Result<(String, u16), CloudError> {
    let bad = |reason: &str| CloudError::Config {
        what: "cloud server address".into(),
        reason: format!("`{server}`: {reason}; write it as HOST:PORT"),
    };
    let (host, port) = server.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| bad("the port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host.to_string(), port))
}

fn tls_config(trust: &Trust) -> Result<TlsConfig, CloudError> {
    let b = TlsConfig::builder().provider(TlsProvider::Rustls);
    Ok(match trust {
        Trust::Any => b.disable_verification(true),
        Trust::Ca(ca, client) => {
            let b = b.root_certs(RootCerts::new_with_certs(&[Certificate::from_der(
                ca.as_ref(),
            )
            .to_owned()]));
            match client {
                Some((cert, key)) => {
                    // ureq takes a key by its PEM (its key kinds are not public).
                    let pem = super::certs::pem("PRIVATE KEY", key.secret_pkcs8_der());
                    let key = PrivateKey::from_pem(&pem).map_err(|e| CloudError::Cert {
                        context: "the node key".into(),
                        reason: e.to_string(),
                    })?;
                    b.client_cert(Some(ClientCert::new_with_certs(
                        &[Certificate::from_der(cert.as_ref()).to_owned()],
                        key,
                    )))
                }
                None => b,
            }
        }
    }
    .build())
}

/// Sends `GET <path>` with `headers` and `body` to `server` (`host:port`) over TLS as
/// `trust` says, within `timeout`.
pub async fn get(
    server: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    trust: Trust,
    timeout: Duration,
) -> Result<Answer, CloudError> {
    split_host_port(server)?;
    let url = format!("https://{server}{path}");
    let what = format!("GET {url}");
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = body.to_vec();
    // The ring provider for ureq (a no-op when one is set).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = tls_config(&trust)?;
    smol::unblock(move || {
        let cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(timeout))
            .user_agent("edged")
            .tls_config(tls)
            .build();
        let agent = ureq::Agent::new_with_config(cfg);
        let mut req = agent.get(&url);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let fail = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => CloudError::Timeout {
                what: what.clone(),
                after: timeout,
            },
            e => CloudError::io(what.clone(), e.into_io()),
        };
        let mut resp = req.force_send_body().send(&body[..]).map_err(fail)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    CloudError::protocol(&what, "the answer is over 1 MiB".into())
                }
                e => fail(e),
            })?;
        Ok(Answer { status, body })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("cloud:10002").unwrap(),
            ("cloud".into(), 10002)
        );
        assert_eq!(split_host_port("[::1]:1").unwrap(), ("::1".into(), 1));
        assert!(split_host_port("cloud").is_err());
        assert!(split_host_port(":1").is_err());
        assert!(split_host_port("c:x").is_err());
    }
}
