//! Probe handlers: exec (in the container, through the runtime), httpGet and tcpSocket (from
//! inside the pod's network namespace, so pods on the pod network are reached as they see
//! themselves).

use crate::api::{ContainerPort, HttpGetAction, TcpSocketAction};
use crate::runtime::Runtime;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A probe's outcome, with what to tell the user when it failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// Resolves a probe port: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &serde_json::Value, ports: &[ContainerPort]) -> Result<u16, String> {
    let n = match port {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port as i64),
        },
        _ => None,
    };
    match n {
        Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!(
            "port {port} is not a port number (1-65535) or a named container port"
        )),
    }
}

/// Runs `f` on a fresh thread that has entered `netns` (if any), so the caller's threads
/// never change namespace.
pub async fn in_netns<T, F>(netns: Option<PathBuf>, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = async_channel::bounded(1);
    std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            let run = || -> io::Result<T> {
                if let Some(p) = &netns {
                    let file = std::fs::File::open(p)?;
                    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)?;
                }
                f()
            };
            let _ = tx.send_blocking(run());
        })?;
    rx.recv()
        .await
        .unwrap_or_else(|_| Err(io::Error::other("probe thread ended without an answer")))
}

fn addr(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))
}

/// Where a probe connects: its host (the pod's own loopback when unset: probes run in the
/// pod's network namespace) and its resolved port.
fn target(
    host: &Option<String>,
    port: &serde_json::Value,
    ports: &[ContainerPort],
) -> Result<(String, u16), String> {
    let port = resolve_port(port, ports)?;
    let host = host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into());
    Ok((host, port))
}

/// tcpSocket: success when a connection opens within `timeout`.
pub async fn tcp(
    action: &TcpSocketAction,
    ports: &[ContainerPort],
    netns: Option<PathBuf>,
    timeout: Duration,
) -> Outcome {
    let (host, port) = match target(&action.host, &action.port, ports) {
        Ok(t) => t,
        Err(e) => return Outcome::Failure(e),
    };
    let target = format!("{host}:{port}");
    match in_netns(netns, move || {
        TcpStream::connect_timeout(&addr(&host, port)?, timeout).map(drop)
    })
    .await
    {
        Ok(()) => Outcome::Success,
        Err(e) => Outcome::Failure(format!("dial tcp {target}: {e}")),
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// httpGet: success for a status of 200-399 within `timeout`; HTTPS without verifying the
/// certificate, as the kubelet probes.
pub async fn http(
    action: &HttpGetAction,
    ports: &[ContainerPort],
    netns: Option<PathBuf>,
    timeout: Duration,
) -> Outcome {
    let (host, port) = match target(&action.host, &action.port, ports) {
        Ok(t) => t,
        Err(e) => return Outcome::Failure(e),
    };
    let https = action
        .scheme
        .as_deref()
        .map(|s| s.eq_ignore_ascii_case("HTTPS"))
        .unwrap_or(false);
    let mut path = action.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let url = format!(
        "{}://{host}:{port}{path}",
        if https { "https" } else { "http" }
    );
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let mut has_host = false;
    for h in &action.http_headers {
        has_host |= h.name.eq_ignore_ascii_case("host");
        req.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    if !has_host {
        req.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    req.push_str("User-Agent: kube-probe/edged\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    let result = in_netns(netns, move || -> io::Result<u16> {
        let tcp = TcpStream::connect_timeout(&addr(&host, port)?, timeout)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let mut s: Box<dyn ReadWrite> = if https {
            // As the kubelet: the probe does not verify the pod's certificate.
            let cfg = crate::cloudlink::tls::unverified().map_err(io::Error::other)?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| io::Error::other(format!("`{host}` is not a host name or address")))?;
            let conn = rustls::ClientConnection::new(cfg, name).map_err(io::Error::other)?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        } else {
            Box::new(tcp)
        };
        s.write_all(req.as_bytes())?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = s.read(&mut buf[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let line = String::from_utf8_lossy(&buf[..got]).to_string();
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|_| line.starts_with("HTTP/"))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the answer is not HTTP"))
    })
    .await;
    match result {
        Ok(code) if (200..400).contains(&code) => Outcome::Success,
        Ok(code) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code} ({url})")),
        Err(e) => Outcome::Failure(format!("Get \"{url}\": {e}")),
    }
}

/// exec: success when the command exits 0 within `timeout`.
pub async fn exec(
    runtime: Arc<dyn Runtime>,
    container_id: &str,
    cmd: &[String],
    timeout: Duration,
) -> Outcome {
    let (id, cmd2) = (container_id.to_string(), cmd.to_vec());
    match smol::unblock(move || runtime.exec_sync(&id, &cmd2, timeout)).await {
        Ok(r) if r.exit_code == 0 => Outcome::Success,
        Ok(r) => {
            let out = String::from_utf8_lossy(if r.stdout.is_empty() {
                &r.stderr
            } else {
                &r.stdout
            })
            .trim()
            .to_string();
            Outcome::Failure(format!(
                "command {cmd:?} exited with {}: {out}",
                r.exit_code
            ))
        }
        Err(e) => Outcome::Failure(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn ports() {
        let ports = vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }];
        assert_eq!(resolve_port(&serde_json::json!(80), &ports), Ok(80));
        assert_eq!(resolve_port(&serde_json::json!("http"), &ports), Ok(8080));
        assert!(resolve_port(&serde_json::json!("nope"), &ports).is_err());
        assert!(resolve_port(&serde_json::json!(0), &ports).is_err());
    }

    #[test]
    fn http_and_tcp_on_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for (i, s) in l.incoming().take(3).enumerate() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let code = if i == 1 { "500 Oops" } else { "200 OK" };
                let _ =
                    s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            }
        });
        let t = Duration::from_secs(2);
        let get = HttpGetAction {
            path: Some("/healthz".into()),
            port: serde_json::json!(port),
            ..Default::default()
        };
        smol::block_on(async {
            assert_eq!(http(&get, &[], None, t).await, Outcome::Success);
            assert!(
                matches!(http(&get, &[], None, t).await, Outcome::Failure(m) if m.contains("500"))
            );
            let tcp_ok = TcpSocketAction {
                port: serde_json::json!(port),
                host: None,
            };
            assert_eq!(tcp(&tcp_ok, &[], None, t).await, Outcome::Success);
        });
        server.join().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let tcp_bad = TcpSocketAction {
            port: serde_json::json!(port),
            host: None,
        };
        assert!(matches!(
            smol::block_on(tcp(&tcp_bad, &[], None, t)),
            Outcome::Failure(_)
        ));
    }

    #[test]
    fn https_probe_does_not_verify_the_certificate() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        // A self-signed certificate nobody trusts, as a pod would have.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(crate::cloudlink::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let cfg = Arc::new(cfg);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (tcp, _) = l.accept().unwrap();
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /ready HTTP/1.1"));
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            s.conn.send_close_notify();
            let _ = s.flush();
        });
        let get = HttpGetAction {
            path: Some("/ready".into()),
            port: serde_json::json!(port),
            scheme: Some("HTTPS".into()),
            ..Default::default()
        };
        let r = smol::block_on(http(&get, &[], None, Duration::from_secs(5)));
        assert_eq!(r, Outcome::Success);
        server.join().unwrap();
    }
}
