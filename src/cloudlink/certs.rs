//! The node's certificate: bootstrap with the join token, renewal with the current
//! certificate, and the files under `--cert-dir` (PEM, mode 0600, written atomically).
//!
//! Bootstrap follows KubeEdge's edge: `GET /ca.crt` without trusting the server, check that
//! `hex(sha256(CA))` is the token's part before the `.`, then `GET /edge.crt` with the CSR as
//! the body, trusting only that CA and sending only the JWT.

use super::{https, CloudError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ClientConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long one certificate request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's identity towards the cloud.
#[derive(Debug)]
pub struct Identity {
    /// The cloud's CA (trusted for the link).
    pub ca: CertificateDer<'static>,
    /// The node's certificate.
    pub cert: CertificateDer<'static>,
    /// Its EC P-256 key (PKCS #8).
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The certificate's `notBefore`.
    pub not_before: SystemTime,
    /// The certificate's `notAfter`: the link needs a new one by then.
    pub not_after: SystemTime,
    /// Where in the lifetime renewal is due, drawn in 0.7..0.9 so nodes do not renew at once.
    pub renew_fraction: f64,
}

impl Identity {
    fn new(
        ca: CertificateDer<'static>,
        cert: CertificateDer<'static>,
        key: PrivatePkcs8KeyDer<'static>,
    ) -> Result<Identity, CloudError> {
        let (not_before, not_after) = validity(&cert).map_err(|reason| CloudError::Cert {
            context: "reading the node certificate's validity".into(),
            reason,
        })?;
        Ok(Identity {
            ca,
            cert,
            key,
            not_before,
            not_after,
            renew_fraction: 0.7 + 0.2 * fastrand::f64(),
        })
    }

    /// When renewal is due.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(self.renew_fraction)
    }

    /// The mTLS client configuration for the link.
    pub fn tls(&self) -> Result<Arc<ClientConfig>, CloudError> {
        Ok(crate::tls::verified(
            &self.ca,
            Some((
                self.cert.clone(),
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )),
        )?)
    }
}

/// The files under `--cert-dir`.
#[derive(Clone, Debug)]
pub struct CertDir(pub PathBuf);

impl CertDir {
    /// The cloud's CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.0.join("ca.crt")
    }
    /// The node certificate.
    pub fn cert(&self) -> PathBuf {
        self.0.join("node.crt")
    }
    /// The node key.
    pub fn key(&self) -> PathBuf {
        self.0.join("node.key")
    }

    /// The stored identity; `Ok(None)` when there is none yet.
    pub fn load(&self) -> Result<Option<Identity>, CloudError> {
        if !self.cert().exists() || !self.key().exists() || !self.ca().exists() {
            return Ok(None);
        }
        let bad = |p: PathBuf| {
            move |e: rustls::pki_types::pem::Error| CloudError::Cert {
                context: format!("reading {}", p.display()),
                reason: format!("{e}; delete it to bootstrap again with a token"),
            }
        };
        let ca = CertificateDer::from_pem_file(self.ca()).map_err(bad(self.ca()))?;
        let cert = CertificateDer::from_pem_file(self.cert()).map_err(bad(self.cert()))?;
        let key = PrivatePkcs8KeyDer::from_pem_file(self.key()).map_err(bad(self.key()))?;
        Identity::new(ca, cert, key).map(Some)
    }

    /// Stores an identity: key first, so a certificate on disk always has its key.
    fn store(&self, id: &Identity) -> Result<(), CloudError> {
        std::fs::create_dir_all(&self.0)
            .map_err(|e| CloudError::io(format!("creating {}", self.0.display()), e))?;
        write_secret(&self.key(), &pem("PRIVATE KEY", id.key.secret_pkcs8_der()))?;
        write_secret(&self.ca(), &pem("CERTIFICATE", &id.ca))?;
        write_secret(&self.cert(), &pem("CERTIFICATE", &id.cert))
    }
}

/// Splits a join token `<hex sha256 of the CA>.<JWT>`.
pub fn split_token(token: &str) -> Result<(&str, &str), CloudError> {
    let token = token.trim();
    match token.split_once('.') {
        Some((hash, jwt))
            if hash.len() == 64
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && !jwt.is_empty() =>
        {
            Ok((hash, jwt))
        }
        _ => Err(CloudError::BadToken(
            "it must be `<sha256 of the CA in hex>.<JWT>`, as `keadm gettoken` prints it".into(),
        )),
    }
}

/// The hex SHA-256 of a certificate's DER, as the token carries it.
pub fn ca_hash(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Gets a first certificate with the join token and stores it.
pub async fn bootstrap(
    dir: &CertDir,
    https_server: &str,
    node: &str,
    token: &str,
) -> Result<Identity, CloudError> {
    let (want_hash, jwt) = split_token(token)?;
    let ca = https::get(
        https_server,
        "/ca.crt",
        &[],
        &[],
        https::Trust::Any,
        REQUEST_TIMEOUT,
    )
    .await?;
    if ca.status != 200 {
        return Err(CloudError::http(
            https_server,
            "/ca.crt",
            ca.status,
            &ca.body,
        ));
    }
    let got_hash = ca_hash(&ca.body);
    if !got_hash.eq_ignore_ascii_case(want_hash) {
        return Err(CloudError::CaHashMismatch {
            server: https_server.to_string(),
            token: want_hash.to_string(),
            server_ca: got_hash,
        });
    }
    let ca = CertificateDer::from(ca.body);
    let auth = format!("Bearer {jwt}");
    let trust = https::Trust::Ca(ca.clone(), None);
    let id = request_cert(https_server, node, ca, trust, &[("Authorization", &auth)]).await?;
    dir.store(&id)?;
    tracing::info!(node, until = %crate::api::rfc3339(id.not_after), "node certificate obtained with the join token");
    Ok(id)
}

/// Renews the certificate with the current one (no token) and stores the new one.
pub async fn renew(
    dir: &CertDir,
    https_server: &str,
    node: &str,
    current: &Identity,
) -> Result<Identity, CloudError> {
    let trust = https::Trust::Ca(
        current.ca.clone(),
        Some((current.cert.clone(), current.key.clone_key())),
    );
    let id = request_cert(https_server, node, current.ca.clone(), trust, &[]).await?;
    dir.store(&id)?;
    tracing::info!(node, until = %crate::api::rfc3339(id.not_after), "node certificate renewed");
    Ok(id)
}

/// A certificate fit for the link: the stored one, renewed when due, or bootstrapped with the
/// token when there is none (or it expired).
pub async fn ensure(
    dir: &CertDir,
    https_server: &str,
    node: &str,
    token: Option<&str>,
) -> Result<Identity, CloudError> {
    let now = SystemTime::now();
    if let Some(id) = dir.load()? {
        if now < id.renew_at() {
            return Ok(id);
        }
        if now < id.not_after {
            return match renew(dir, https_server, node, &id).await {
                Ok(new) => Ok(new),
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the node certificate failed; using the current one");
                    Ok(id)
                }
            };
        }
        tracing::warn!(
            node,
            "the node certificate has expired; bootstrapping with the token"
        );
    }
    let token = token.ok_or(CloudError::NoToken)?;
    bootstrap(dir, https_server, node, token).await
}

/// `GET /edge.crt` with a fresh key's CSR; returns the new identity.
async fn request_cert(
    https_server: &str,
    node: &str,
    ca: CertificateDer<'static>,
    trust: https::Trust,
    extra: &[(&str, &str)],
) -> Result<Identity, CloudError> {
    let (csr, key) = csr(node)?;
    let mut headers = vec![("NodeName", node)];
    headers.extend_from_slice(extra);
    let a = https::get(
        https_server,
        "/edge.crt",
        &headers,
        &csr,
        trust,
        REQUEST_TIMEOUT,
    )
    .await?;
    match a.status {
        200 => {}
        401 | 403 => {
            return Err(CloudError::TokenRejected {
                server: https_server.to_string(),
                status: a.status,
                body: String::from_utf8_lossy(&a.body).trim().to_string(),
            })
        }
        s => return Err(CloudError::http(https_server, "/edge.crt", s, &a.body)),
    }
    Identity::new(ca, CertificateDer::from(a.body), key)
}

/// A CSR (DER) for `system:node:<node>` in `system:nodes`, and its new EC P-256 key.
pub fn csr(node: &str) -> Result<(Vec<u8>, PrivatePkcs8KeyDer<'static>), CloudError> {
    let fail = |e: rcgen::Error| CloudError::Cert {
        context: "making the certificate request".into(),
        reason: e.to_string(),
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    let csr = params.serialize_request(&key).map_err(fail)?;
    Ok((
        csr.der().to_vec(),
        PrivatePkcs8KeyDer::from(key.serialize_der()),
    ))
}

/// Replaces `path` with `bytes` atomically, mode 0600 (keys and certificates).
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), CloudError> {
    crate::paths::write_atomic(path, bytes, 0o600)
        .map_err(|e| CloudError::io(format!("writing {}", path.display()), e))
}

/// PEM armour around DER.
pub(crate) fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A certificate's notBefore and notAfter, read from its DER.
pub fn validity(cert: &[u8]) -> Result<(SystemTime, SystemTime), String> {
    let (cert, _) = tlv(cert, 0x30)?;
    let (mut tbs, _) = tlv(cert, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs, 0xa0)?.1; // version
    }
    let (_, rest) = tlv(tbs, 0x02)?; // serial
    let (_, rest) = tlv(rest, 0x30)?; // signature algorithm
    let (_, rest) = tlv(rest, 0x30)?; // issuer
    let (validity, _) = tlv(rest, 0x30)?;
    let (nb, rest) = time(validity)?;
    let (na, _) = time(rest)?;
    Ok((nb, na))
}

/// One DER element of tag `tag`: (its content, what follows).
fn tlv(b: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    let bad = || format!("not a certificate (expected DER tag {tag:#04x})");
    if b.len() < 2 || b[0] != tag {
        return Err(bad());
    }
    let (len, hdr) = match b[1] {
        l if l < 0x80 => (l as usize, 2),
        l @ 0x81..=0x84 => {
            let n = (l & 0x7f) as usize;
            let bytes = b.get(2..2 + n).ok_or_else(bad)?;
            (
                bytes.iter().fold(0usize, |a, &x| a << 8 | x as usize),
                2 + n,
            )
        }
        _ => return Err(bad()),
    };
    let content = b.get(hdr..hdr + len).ok_or_else(bad)?;
    Ok((content, &b[hdr + len..]))
}

/// A UTCTime or GeneralizedTime.
fn time(b: &[u8]) -> Result<(SystemTime, &[u8]), String> {
    let tag = *b.first().ok_or("certificate validity is cut short")?;
    let (v, rest) = tlv(b, tag)?;
    let s = std::str::from_utf8(v).map_err(|_| "certificate time is not text")?;
    // Digits then `Z`: what DER allows, and what the slicing below needs (ASCII only).
    let digits = s.strip_suffix('Z').unwrap_or("");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "unsupported certificate time `{}`",
            s.escape_debug()
        ));
    }
    let full = match (tag, s.len()) {
        (0x17, 13) => {
            let yy: u32 = s[..2].parse().map_err(|_| "bad UTCTime")?;
            format!("{}{s}", if yy < 50 { "20" } else { "19" })
        }
        (0x18, 15) => s.to_string(),
        _ => return Err(format!("unsupported certificate time `{s}`")),
    };
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[0..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    let t = crate::api::parse_rfc3339(&iso).ok_or_else(|| format!("bad certificate time `{s}`"))?;
    Ok((t, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_times_must_be_digits() {
        // Found by fuzzing: a 13-byte UTCTime with a two-byte character at byte 1 made the
        // year slice panic. Validity SEQUENCE of two UTCTimes, wrapped as tbs and cert.
        let t = |v: &[u8]| [&[0x17, v.len() as u8][..], v].concat();
        let cert = |nb: &[u8]| {
            let validity = [t(nb), t(b"300101000000Z")].concat();
            let tbs = [
                &[0x02, 1, 1][..],
                &[0x30, 0],
                &[0x30, 0],
                &[0x30, validity.len() as u8],
                &validity,
            ]
            .concat();
            let c = [&[0x30, tbs.len() as u8][..], &tbs].concat();
            [&[0x30, c.len() as u8][..], &c].concat()
        };
        let (nb, na) = validity(&cert(b"240101000000Z")).unwrap();
        assert!(nb < na);
        for bad in ["2\u{e9}010100000Z", "24010100000xZ", "2401010000000"] {
            assert_eq!(bad.len(), 13);
            assert!(validity(&cert(bad.as_bytes())).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_shape() {
        let h = "ab".repeat(32);
        assert_eq!(
            split_token(&format!("{h}.x.y.z")).unwrap(),
            (h.as_str(), "x.y.z")
        );
        for bad in [
            "",
            "abc.def",
            &format!("{h}."),
            &h,
            &format!("{}.jwt", "zz".repeat(32)),
        ] {
            assert!(
                matches!(split_token(bad), Err(CloudError::BadToken(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn base64_and_pem() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let der: Vec<u8> = (0..200u8).collect();
        let p = pem("CERTIFICATE", &der);
        assert_eq!(
            CertificateDer::from_pem_slice(&p).unwrap().as_ref(),
            &der[..]
        );
    }

    #[test]
    fn csr_names_the_node() {
        let (der, key) = csr("edge-1").unwrap();
        assert_eq!(der[0], 0x30);
        assert!(der.windows(18).any(|w| w == b"system:node:edge-1"));
        assert!(der.windows(12).any(|w| w == b"system:nodes"));
        assert!(!key.secret_pkcs8_der().is_empty());
    }

    #[test]
    fn validity_and_renewal_point() {
        // A self-signed certificate valid 2030-01-01 .. 2030-01-11 (rcgen writes UTCTime).
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2030, 1, 1);
        p.not_after = rcgen::date_time_ymd(2030, 1, 11);
        let c = p.self_signed(&key).unwrap();
        let (nb, na) = validity(c.der()).unwrap();
        assert_eq!(crate::api::rfc3339(nb), "2030-01-01T00:00:00Z");
        assert_eq!(crate::api::rfc3339(na), "2030-01-11T00:00:00Z");
        let id = Identity::new(
            CertificateDer::from(c.der().to_vec()),
            CertificateDer::from(c.der().to_vec()),
            PrivatePkcs8KeyDer::from(key.serialize_der()),
        )
        .unwrap();
        let at = id.renew_at();
        assert!(
            at >= nb + Duration::from_secs(7 * 86400) && at <= nb + Duration::from_secs(9 * 86400)
        );
        assert!(validity(b"\x30\x03\x02\x01\x00").is_err());
    }
}
