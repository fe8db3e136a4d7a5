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
    /// The probe passed.
    Success,
    /// Success, with something the user should know (the kubelet's `probe.Warning`: a
    /// redirect to another host); recorded as a ProbeWarning event.
    Warning(String),
    /// The probe failed, and why (the container status message and Unhealthy event).
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

/// The most of an answer's body kept for a message (the kubelet's `maxRespBodyLength`).
pub const MAX_BODY: usize = 10 << 10;
/// The most of an answer's head read.
const MAX_HEAD: usize = 16 << 10;
/// Redirects followed before the probe fails (Go's client stops after 10).
const MAX_REDIRECTS: usize = 10;

/// One HTTP answer as the probe needs it.
#[derive(Debug, PartialEq)]
pub struct Answer {
    /// The status code.
    pub code: u16,
    /// The `Location` header.
    pub location: Option<String>,
    /// Up to [`MAX_BODY`] of the body, lossily UTF-8.
    pub body: String,
}

/// Reads a status line, headers and up to [`MAX_BODY`] of the body from `s` (a pod's server:
/// outside bytes).
pub fn read_answer(s: &mut dyn Read) -> io::Result<Answer> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if data.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the answer's head is too long",
            ));
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            if data.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF"));
            }
            break data.len();
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| status.starts_with("HTTP/"))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the answer is not HTTP"))?;
    let mut location = None;
    let mut length: Option<usize> = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("location") {
                location = Some(v.trim().to_string());
            } else if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok();
            }
        }
    }
    let mut body: Vec<u8> = data.get(head_end + 4..).unwrap_or_default().to_vec();
    let want = length.unwrap_or(MAX_BODY).min(MAX_BODY);
    while body.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    body.truncate(want);
    Ok(Answer {
        code,
        location,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// Where a redirect leads from `(scheme, host, port)`: an absolute URL, or a path on the same
/// server, as `(https, host, port, path)`. `None` when the location is not one the probe can
/// read.
pub fn redirect_target(
    location: &str,
    https: bool,
    host: &str,
    port: u16,
) -> Option<(bool, String, u16, String)> {
    if location.starts_with('/') {
        return Some((https, host.to_string(), port, location.to_string()));
    }
    let (tls, rest) = if let Some(r) = location.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = location.strip_prefix("https://") {
        (true, r)
    } else {
        // A relative path: beside the current one is rare for health checks; from the root.
        return Some((https, host.to_string(), port, format!("/{location}")));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let default = if tls { 443 } else { 80 };
    let (h, p) = if let Some(inner) = authority.strip_prefix('[') {
        let (h, after) = inner.split_once(']')?;
        let p = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        (h.to_string(), p)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), default),
        }
    };
    Some((tls, h, p, path))
}

/// httpGet: success for a status of 200-399 within `timeout`; HTTPS without verifying the
/// certificate, as the kubelet probes. Redirects to the same host are followed (up to 10);
/// one to another host ends the probe as a [`Outcome::Warning`] (success, with the kubelet's
/// ProbeWarning), as the kubelet's redirect checker does.
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
    let (https, path) = scheme_and_path(action);
    let headers = action.http_headers.clone();
    let first_url = url(https, &host, port, &path);
    let result = in_netns(netns, move || -> io::Result<(Answer, String)> {
        let (mut https, mut host, mut port, mut path) = (https, host, port, path);
        let origin = host.clone();
        let mut redirects = 0;
        loop {
            let url = url(https, &host, port, &path);
            let answer = get_once(https, &host, port, &path, &headers, timeout, PROBE_AGENT)?;
            let next = (300..400)
                .contains(&answer.code)
                .then(|| {
                    answer
                        .location
                        .as_deref()
                        .and_then(|l| redirect_target(l, https, &host, port))
                })
                .flatten();
            match next {
                Some(n) if n.1 == origin => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(io::Error::other("stopped after 10 redirects"));
                    }
                    (https, host, port, path) = n;
                }
                // Another host (or no usable Location): this answer ends the probe.
                _ => return Ok((answer, url)),
            }
        }
    })
    .await;
    match result {
        Ok((a, _)) if (300..400).contains(&a.code) => Outcome::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            a.body
        )),
        Ok((a, _)) if (200..300).contains(&a.code) => Outcome::Success,
        Ok((a, url)) => Outcome::Failure(format!(
            "HTTP probe failed with statuscode: {} ({url})",
            a.code
        )),
        Err(e) => Outcome::Failure(format!("Get \"{first_url}\": {e}")),
    }
}

/// How a lifecycle hook's httpGet was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookAnswer {
    /// Answered as the hook asked.
    Answered,
    /// Asked over HTTPS, the server answered in plain HTTP, and the hook, sent again over HTTP
    /// without its `Authorization` header, was answered: the kubelet's fallback, which it
    /// reports with a `LifecycleHTTPFallback` warning naming this `host:port`.
    AnsweredOverHttp(String),
}

/// A lifecycle hook's httpGet, as the kubelet's hook runner does it: to `host` from the node
/// when the action names one, else to the pod itself (its loopback, from inside `pod_netns`);
/// any answer is a success (the kubelet reads no status code from a hook), no answer within
/// `timeout` is the error returned. An HTTPS hook that a plain HTTP server answers is sent
/// again over HTTP ([`HookAnswer::AnsweredOverHttp`]); if that fails too, the HTTPS error is
/// the one returned, as the kubelet returns it.
pub async fn hook_get(
    action: &HttpGetAction,
    ports: &[ContainerPort],
    pod_netns: Option<PathBuf>,
    timeout: Duration,
) -> Result<HookAnswer, String> {
    let (host, port) = target(&action.host, &action.port, ports)?;
    let named_host = action.host.as_deref().is_some_and(|h| !h.is_empty());
    let netns = if named_host { None } else { pod_netns };
    let (https, path) = scheme_and_path(action);
    let url = url(https, &host, port, &path);
    let headers = action.http_headers.clone();
    in_netns(netns, move || {
        let first = get_once(https, &host, port, &path, &headers, timeout, HOOK_AGENT);
        match first {
            Ok(_) => Ok(HookAnswer::Answered),
            Err(e) if https && answered_in_http(&e) => {
                let plain: Vec<_> = headers
                    .iter()
                    .filter(|h| !h.name.eq_ignore_ascii_case("authorization"))
                    .cloned()
                    .collect();
                match get_once(false, &host, port, &path, &plain, timeout, HOOK_AGENT) {
                    Ok(_) => Ok(HookAnswer::AnsweredOverHttp(host_port(&host, port))),
                    Err(_) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|e| format!("Get \"{url}\": {e}"))
}

/// `host:port` as a URL's authority names it (an IPv6 address in brackets).
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An HTTPS request that a plain HTTP server answered: what the TLS handshake read first was
/// `HTTP/` (as Go's client tells it: "server gave HTTP response to HTTPS client").
#[derive(Debug)]
struct HttpAnswerToHttps;

impl std::fmt::Display for HttpAnswerToHttps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("http: server gave HTTP response to HTTPS client")
    }
}

impl std::error::Error for HttpAnswerToHttps {}

/// Whether `e` is [`HttpAnswerToHttps`].
fn answered_in_http(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|x| x.is::<HttpAnswerToHttps>())
}

/// A stream that keeps the first bytes read from it, to tell an HTTP answer to a TLS hello.
struct FirstBytes<S> {
    inner: S,
    seen: Vec<u8>,
}

impl<S> FirstBytes<S> {
    /// How many bytes are kept: as many as `HTTP/`.
    const KEEP: usize = 5;

    fn new(inner: S) -> Self {
        FirstBytes {
            inner,
            seen: Vec::with_capacity(Self::KEEP),
        }
    }

    /// Whether what came first is the start of an HTTP answer.
    fn is_http(&self) -> bool {
        self.seen == b"HTTP/"
    }
}

impl<S: Read> Read for FirstBytes<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let room = Self::KEEP - self.seen.len();
        self.seen.extend_from_slice(&buf[..n.min(room)]);
        Ok(n)
    }
}

impl<S: Write> Write for FirstBytes<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether `action` asks for HTTPS, and its path (`/` when unset, a leading `/` added).
fn scheme_and_path(action: &HttpGetAction) -> (bool, String) {
    let https = action
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let mut path = action.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    (https, path)
}

/// The URL a GET goes to, as errors name it.
fn url(https: bool, host: &str, port: u16, path: &str) -> String {
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}:{port}{path}")
}

/// The User-Agent of probes and of hooks, as the kubelet names them.
const PROBE_AGENT: &str = "kube-probe/edged";
/// See [`PROBE_AGENT`].
const HOOK_AGENT: &str = "kube-lifecycle/edged";

/// One GET on a fresh connection.
fn get_once(
    https: bool,
    host: &str,
    port: u16,
    path: &str,
    headers: &[crate::api::HttpHeader],
    timeout: Duration,
    agent: &str,
) -> io::Result<Answer> {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let mut has_host = false;
    for h in headers {
        has_host |= h.name.eq_ignore_ascii_case("host");
        req.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    if !has_host {
        req.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    req.push_str(&format!(
        "User-Agent: {agent}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ));
    let tcp = TcpStream::connect_timeout(&addr(host, port)?, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    if !https {
        let mut s = tcp;
        s.write_all(req.as_bytes())?;
        return read_answer(&mut s);
    }
    // As the kubelet: the probe does not verify the pod's certificate.
    let cfg = crate::tls::unverified().map_err(io::Error::other)?;
    let name = crate::tls::server_name(host)
        .ok_or_else(|| io::Error::other(format!("`{host}` is not a host name or address")))?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, FirstBytes::new(tcp));
    let answer = s
        .write_all(req.as_bytes())
        .and_then(|()| read_answer(&mut s));
    match answer {
        Err(_) if s.sock.is_http() && s.conn.is_handshaking() => {
            Err(io::Error::other(HttpAnswerToHttps))
        }
        other => other,
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
        let (_closed, port) = crate::prober::closed_port();
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
        let cfg = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
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

    #[test]
    fn redirect_targets() {
        assert_eq!(
            redirect_target("/healthz", false, "10.0.0.5", 8080),
            Some((false, "10.0.0.5".into(), 8080, "/healthz".into()))
        );
        assert_eq!(
            redirect_target("http://0.0.0.0/", false, "127.0.0.1", 8080),
            Some((false, "0.0.0.0".into(), 80, "/".into()))
        );
        assert_eq!(
            redirect_target("https://127.0.0.1:9443/x?y=1", false, "127.0.0.1", 8080),
            Some((true, "127.0.0.1".into(), 9443, "/x?y=1".into()))
        );
        assert_eq!(
            redirect_target("http://[::1]:81", false, "::1", 80),
            Some((false, "::1".into(), 81, "/".into()))
        );
        assert_eq!(redirect_target("http://h:notaport/", false, "h", 80), None);
    }

    #[test]
    fn answers_are_read_bounded() {
        let a = read_answer(
            &mut &b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 3\r\n\r\nabcdef"[..],
        )
        .unwrap();
        assert_eq!(
            a,
            Answer {
                code: 302,
                location: Some("/ok".into()),
                body: "abc".into()
            }
        );
        assert!(read_answer(&mut &b"SSH-2.0-OpenSSH\r\n\r\n"[..]).is_err());
        assert!(read_answer(&mut &b""[..]).is_err());
        let long = vec![b'a'; MAX_HEAD + 10];
        assert!(read_answer(&mut &long[..]).is_err());
    }

    /// A server answering each request by its path: `/go` redirects to `/healthz` (local),
    /// `/away` to another host, `/loop` to itself, `/healthz` with `code`.
    fn redirect_server(code: &'static str, n: usize) -> (u16, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let answer = match path.as_str() {
                    "/go" => "HTTP/1.1 302 Found\r\nLocation: /healthz\r\nContent-Length: 0\r\n\r\n".to_string(),
                    "/away" => "HTTP/1.1 301 Moved\r\nLocation: http://0.0.0.0/\r\nContent-Length: 5\r\n\r\nmoved".to_string(),
                    "/loop" => "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n".to_string(),
                    _ => format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n"),
                };
                let _ = s.write_all(answer.as_bytes());
            }
        });
        (port, t)
    }

    #[test]
    fn local_redirects_are_followed_and_others_end_with_a_warning() {
        let t = Duration::from_secs(2);
        let get = |port: u16, path: &str| HttpGetAction {
            path: Some(path.into()),
            port: serde_json::json!(port),
            ..Default::default()
        };
        // A local redirect to a failing /healthz fails (the kubelet probes the target).
        let (port, server) = redirect_server("500 Oops", 2);
        let r = smol::block_on(http(&get(port, "/go"), &[], None, t));
        assert!(
            matches!(&r, Outcome::Failure(m) if m.contains("statuscode: 500")),
            "{r:?}"
        );
        server.join().unwrap();
        // ... and to a healthy one succeeds.
        let (port, server) = redirect_server("200 OK", 2);
        assert_eq!(
            smol::block_on(http(&get(port, "/go"), &[], None, t)),
            Outcome::Success
        );
        server.join().unwrap();
        // A redirect to another host is not followed: success with the kubelet's warning.
        let (port, server) = redirect_server("200 OK", 1);
        assert_eq!(
            smol::block_on(http(&get(port, "/away"), &[], None, t)),
            Outcome::Warning("Probe terminated redirects, Response body: moved".into())
        );
        server.join().unwrap();
        // A loop stops after 10 redirects.
        let (port, server) = redirect_server("200 OK", 11);
        let r = smol::block_on(http(&get(port, "/loop"), &[], None, t));
        assert!(
            matches!(&r, Outcome::Failure(m) if m.contains("stopped after 10 redirects")),
            "{r:?}"
        );
        server.join().unwrap();
    }

    /// A server taking `n` connections, each read once and kept; `answer` gives what it
    /// writes back for what it read (`None`: close without a word).
    fn recording_server(
        n: usize,
        answer: fn(&[u8]) -> Option<&'static [u8]>,
    ) -> (u16, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for s in l.incoming().take(n) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 4096];
                let got = s.read(&mut buf).unwrap_or(0);
                if let Some(a) = answer(&buf[..got]) {
                    let _ = s.write_all(a);
                }
                seen.push(buf[..got].to_vec());
            }
            seen
        });
        (port, t)
    }

    #[test]
    fn an_https_hook_answered_in_http_is_sent_again_over_http() {
        let t = Duration::from_secs(2);
        let hook = |port: u16| HttpGetAction {
            path: Some("/stop".into()),
            port: serde_json::json!(port),
            scheme: Some("HTTPS".into()),
            http_headers: vec![
                crate::api::HttpHeader {
                    name: "Authorization".into(),
                    value: "Bearer x".into(),
                },
                crate::api::HttpHeader {
                    name: "X-Kept".into(),
                    value: "y".into(),
                },
            ],
            ..Default::default()
        };
        const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        // A plain HTTP server: the TLS hello gets a 400, the GET over HTTP an answer.
        let (port, server) = recording_server(2, |_| Some(BAD_REQUEST));
        let r = smol::block_on(hook_get(&hook(port), &[], None, t));
        assert_eq!(
            r,
            Ok(HookAnswer::AnsweredOverHttp(format!("127.0.0.1:{port}")))
        );
        let seen = server.join().unwrap();
        assert_eq!(seen[0][0], 0x16, "a TLS handshake first");
        let second = String::from_utf8_lossy(&seen[1]).to_string();
        assert!(second.starts_with("GET /stop HTTP/1.1\r\n"), "{second}");
        assert!(second.contains("X-Kept: y\r\n"), "{second}");
        assert!(
            !second.to_ascii_lowercase().contains("authorization"),
            "{second}"
        );

        // Not an HTTP answer: no second try.
        let (port, server) = recording_server(1, |_| Some(b"SSH-2.0-OpenSSH\r\n"));
        let r = smol::block_on(hook_get(&hook(port), &[], None, t));
        assert!(r.is_err(), "{r:?}");
        assert_eq!(server.join().unwrap().len(), 1);

        // HTTP answers the hello, but the HTTP try gets nothing: the HTTPS error is returned.
        let (port, server) =
            recording_server(2, |req| (!req.starts_with(b"GET")).then_some(BAD_REQUEST));
        let r = smol::block_on(hook_get(&hook(port), &[], None, t));
        assert_eq!(
            r,
            Err(format!(
                "Get \"https://127.0.0.1:{port}/stop\": http: server gave HTTP response to HTTPS client"
            ))
        );
        assert_eq!(server.join().unwrap().len(), 2);

        // An HTTP hook answered is just answered.
        let (port, server) = recording_server(1, |_| Some(BAD_REQUEST));
        let mut plain = hook(port);
        plain.scheme = None;
        assert_eq!(
            smol::block_on(hook_get(&plain, &[], None, t)),
            Ok(HookAnswer::Answered)
        );
        server.join().unwrap();
    }
}
