//! TLS for the kubelet API bound beyond loopback: the node certificate (under `--cert-dir`)
//! as the server's, and a client certificate required and verified against the node
//! certificate's CA (the cloud's), so no unauthenticated request is served off the box.

use crate::cloudlink::certs::CertDir;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// The server configuration from the certificates in `cert_dir`; an error says what is
/// missing or wrong.
pub fn server_config(cert_dir: &Path) -> Result<Arc<ServerConfig>, String> {
    let dir = CertDir(cert_dir.to_path_buf());
    let id = dir.load().map_err(|e| e.to_string())?.ok_or_else(|| {
        format!(
            "no node certificate in {} yet ({}, {}, {})",
            cert_dir.display(),
            dir.ca().display(),
            dir.cert().display(),
            dir.key().display()
        )
    })?;
    let provider = crate::tls::provider();
    let mut roots = RootCertStore::empty();
    roots
        .add(id.ca.clone())
        .map_err(|e| format!("the CA certificate {}: {e}", dir.ca().display()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("client certificate verifier: {e}"))?;
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![id.cert.clone()],
            PrivateKeyDer::Pkcs8(id.key.clone_key()),
        )
        .map_err(|e| format!("the node certificate {}: {e}", dir.cert().display()))?;
    Ok(Arc::new(cfg))
}
