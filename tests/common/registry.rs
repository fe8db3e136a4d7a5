//! A real registry on loopback for the pull tests: Debian's `docker-registry` started with a
//! config in a temp dir on a free port (plain HTTP, TLS with a test CA, or htpasswd basic
//! auth), and images pushed into it by Debian's `skopeo` from OCI layouts made here: the
//! busybox test image, with an incompressible layer of a chosen size on top, and a
//! multi-arch index.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a registry is served.
pub enum Mode {
    /// Plain HTTP.
    Plain,
    /// HTTPS with a certificate for 127.0.0.1 from a test CA (its PEM in `ca.pem`).
    Tls,
    /// Plain HTTP with htpasswd basic auth for this user and password.
    Basic(&'static str, &'static str),
    /// Plain HTTP with bearer tokens from `realm` (a [`TokenServer`]), signed by the
    /// certificate in the PEM file given.
    Token(String, PathBuf),
}

/// A running registry.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its temp dir (config, data, certs).
    pub dir: tempfile::TempDir,
    child: Child,
    creds: Option<String>,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Registry {
    /// Starts a registry in `mode` and waits until it answers.
    pub fn start(mode: Mode) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("edged-registry-")
            .tempdir_in("/tmp")
            .unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut extra = String::new();
        let mut creds = None;
        match mode {
            Mode::Plain => {}
            Mode::Tls => {
                let (ca, cert, key) = test_certs();
                std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
                std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
                std::fs::write(dir.path().join("key.pem"), key).unwrap();
                extra.push_str(&format!(
                    "  tls:\n    certificate: {0}/cert.pem\n    key: {0}/key.pem\n",
                    dir.path().display()
                ));
            }
            Mode::Token(realm, ca) => {
                extra.push_str(&format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    ca.display()
                ));
                creds = Some(format!("{TOKEN_USER}:{TOKEN_PASS}"));
            }
            Mode::Basic(user, pass) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .expect("htpasswd (apache2-utils; scripts/setup.sh installs it)");
                assert!(out.status.success());
                std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
                creds = Some(format!("{user}:{pass}"));
            }
        }
        let (http_extra, auth_extra) = match extra.find("auth:") {
            Some(i) => (extra[..i].to_string(), extra[i..].to_string()),
            None => (extra.clone(), String::new()),
        };
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{http_extra}{auth_extra}",
            dir.path().display()
        );
        if creds.is_some() && auth_extra.is_empty() {
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: edged-test\n    path: {}/htpasswd\n",
                dir.path().display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry (scripts/setup.sh installs it)");
        let r = Registry {
            addr,
            dir,
            child,
            creds,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&r.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The test CA's PEM file (TLS mode).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Pushes `src` (a skopeo source: `oci:DIR`, `oci-archive:FILE`) as `repo:tag`; `args`
    /// go to `skopeo copy` (`--all`, `--format v2s2`).
    pub fn push(&self, src: &str, repo_tag: &str, args: &[&str]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(args);
        if let Some(c) = &self.creds {
            cmd.args(["--dest-creds", c]);
        }
        let out = cmd
            .arg(src)
            .arg(format!("docker://{}/{repo_tag}", self.addr))
            .stdout(Stdio::null())
            .output()
            .expect("skopeo (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "skopeo copy {src}: {}\nregistry: {}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, and a server certificate for 127.0.0.1 it signed, and the server's key (PEM).
fn test_certs() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "edged test registry CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(p, ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut sp = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = sp.signed_by(&key, &issuer).unwrap();
    (
        pem("CERTIFICATE", ca.der()),
        pem("CERTIFICATE", cert.der()),
        pem("PRIVATE KEY", &key.serialize_der()),
    )
}

/// PEM text of `der` (rcgen is built here without its pem feature).
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn sha(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut s = String::from("sha256:");
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn put_blob(dir: &Path, data: &[u8]) -> String {
    let d = sha(data);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
    d
}

fn read_blob(dir: &Path, d: &str) -> Vec<u8> {
    std::fs::read(dir.join("blobs/sha256").join(&d[7..])).unwrap()
}

/// An OCI layout in `dir`: the busybox test image (`busybox_tar`, from
/// scripts/make-test-image.sh) with one more layer, a plain tar holding `pad_mb` MiB of
/// random bytes (so its size on the wire is its size). Returns the bytes of all its blobs
/// (manifest, config, layers), the pull's full size.
pub fn padded_layout(busybox_tar: &Path, dir: &Path, pad_mb: usize, seed: u64) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(busybox_tar)
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mdesc = &index["manifests"][0];
    let mut manifest: Value =
        serde_json::from_slice(&read_blob(dir, mdesc["digest"].as_str().unwrap())).unwrap();
    let mut config: Value = serde_json::from_slice(&read_blob(
        dir,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    // The random layer.
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; pad_mb << 20];
    rng.fill(&mut data);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(1);
    h.set_cksum();
    b.append_data(&mut h, "pad/random", &data[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let ld = put_blob(dir, &layer);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(ld));
    let cbytes = serde_json::to_vec(&config).unwrap();
    let cd = put_blob(dir, &cbytes);
    manifest["config"]["digest"] = json!(cd);
    manifest["config"]["size"] = json!(cbytes.len());
    manifest["layers"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": ld,
        "size": layer.len(),
    }));
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(dir, &mbytes);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": mbytes.len(),
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let layers: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    layers + cbytes.len() as u64 + mbytes.len() as u64
}

/// Turns the single-image layout in `dir` into a multi-arch index: a foreign-platform
/// image (`arch`, its config only differing) listed first, then this one with its platform.
/// Returns the config digest (image id) of the host's image.
pub fn make_multi_arch(dir: &Path, foreign_arch: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mdesc = index["manifests"][0].clone();
    let manifest: Value =
        serde_json::from_slice(&read_blob(dir, mdesc["digest"].as_str().unwrap())).unwrap();
    let host_id = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config: Value = serde_json::from_slice(&read_blob(dir, &host_id)).unwrap();
    let host_arch = config["architecture"].as_str().unwrap().to_string();
    config["architecture"] = json!(foreign_arch);
    let cbytes = serde_json::to_vec(&config).unwrap();
    let mut foreign = manifest.clone();
    foreign["config"]["digest"] = json!(put_blob(dir, &cbytes));
    foreign["config"]["size"] = json!(cbytes.len());
    let fbytes = serde_json::to_vec(&foreign).unwrap();
    let fd = put_blob(dir, &fbytes);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": fd, "size": fbytes.len(),
             "platform": {"os": "linux", "architecture": foreign_arch}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdesc["digest"], "size": mdesc["size"],
             "platform": {"os": "linux", "architecture": host_arch}},
        ]
    });
    let ibytes = serde_json::to_vec(&index).unwrap();
    let id = put_blob(dir, &ibytes);
    let outer = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": ibytes.len()}]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&outer).unwrap()).unwrap();
    host_id
}

/// The token service's name, issuer, and the user and password it wants.
pub const TOKEN_SERVICE: &str = "edged-test-registry";
pub const TOKEN_ISSUER: &str = "edged-test-issuer";
pub const TOKEN_USER: &str = "edge";
pub const TOKEN_PASS: &str = "t0ken";

/// A token service for [`Mode::Token`]: answers `GET /token?service=..&scope=..` with a
/// signed JWT (ES256, its certificate in `x5c`) granting the scope's repository pull and
/// push, to Basic `edge:t0ken` only (else a 401 with a registry-style error).
pub struct TokenServer {
    /// Its realm URL.
    pub realm: String,
    /// The PEM file of its signing certificate (the registry's rootcertbundle).
    pub ca: PathBuf,
    /// Tokens issued.
    pub issued: std::sync::Arc<std::sync::atomic::AtomicU64>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    /// Starts the service on a free loopback port.
    pub fn start() -> TokenServer {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "edged test token signer");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        let ca = dir.path().join("token-ca.pem");
        std::fs::write(&ca, pem("CERTIFICATE", cert.der())).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", l.local_addr().unwrap());
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = issued.clone();
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader, Write};
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{TOKEN_USER}:{TOKEN_PASS}"))
            );
            for c in l.incoming().flatten() {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            auth = v.trim().to_string();
                        }
                    }
                }
                let target = line.split_whitespace().nth(1).unwrap_or("");
                let scope = target
                    .split(['?', '&'])
                    .find_map(|kv| kv.strip_prefix("scope="))
                    .map(|s| {
                        s.replace("%3A", ":")
                            .replace("%2F", "/")
                            .replace("%2C", ",")
                    })
                    .unwrap_or_default();
                let repo = scope.split(':').nth(1).unwrap_or("").to_string();
                let (status, body) = if auth != want {
                    (
                        "401 Unauthorized",
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials for the token service"}]}"#.to_string(),
                    )
                } else {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [x5c]});
                    let claims = serde_json::json!({
                        "iss": TOKEN_ISSUER, "sub": TOKEN_USER, "aud": TOKEN_SERVICE,
                        "exp": now + 300, "nbf": now - 10, "iat": now,
                        "jti": format!("{:x}", fastrand::u64(..)),
                        "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}]
                    });
                    let input = format!(
                        "{}.{}",
                        b64.encode(header.to_string()),
                        b64.encode(claims.to_string())
                    );
                    let sig = signer.sign(&rng, input.as_bytes()).unwrap();
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (
                        "200 OK",
                        serde_json::json!({"token": format!("{input}.{}", b64.encode(sig.as_ref())), "expires_in": 300}).to_string(),
                    )
                };
                let mut c = c;
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            realm,
            ca,
            issued,
            _dir: dir,
        }
    }
}
