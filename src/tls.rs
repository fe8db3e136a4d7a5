//! rustls on ring for the whole agent: the crypto provider, and the client configurations of
//! the cloud link (fetching the CA before it is trusted, asking for a certificate with the join
//! token, the mTLS link) and of HTTPS probes. The kubelet API server builds its server
//! configuration on [`provider`].

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::fmt;
use std::sync::Arc;

/// The crypto provider: ring (small, builds for armv7/aarch64/x86_64 with the system cc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS configuration that cannot be made: what was being done, and rustls's reason.
#[derive(Debug)]
pub struct TlsError {
    /// What was being set up (`loading the cloud's CA certificate`).
    pub context: &'static str,
    /// Why it failed.
    pub source: rustls::Error,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Maps a rustls error to a [`TlsError`] about `context`.
fn fail(context: &'static str) -> impl FnOnce(rustls::Error) -> TlsError {
    move |source| TlsError { context, source }
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TlsError> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(fail("setting up TLS"))
}

/// Any server (HTTPS probes, as the kubelet's; the certificate server's `GET /ca.crt` goes
/// through [`crate::cloudlink::https::Trust::Any`]): any certificate is accepted; for
/// `/ca.crt` the CA it returns is checked against the token's hash afterwards and nothing
/// secret is sent.
pub fn unverified() -> Result<Arc<ClientConfig>, TlsError> {
    let p = provider();
    let cfg = builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(p)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Trusts only `ca`; presents `client` (certificate and key) when given.
pub fn verified(
    ca: &CertificateDer<'static>,
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(fail("loading the cloud's CA certificate"))?;
    let b = builder()?.with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(vec![cert], key)
            .map_err(fail("loading the node certificate and key"))?,
        None => b.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The server name to check a `host` against (an IP address or a DNS name), `None` when it
/// is neither.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}

/// Accepts any server certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
