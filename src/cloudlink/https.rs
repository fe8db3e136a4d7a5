//! A minimal HTTPS client for CloudHub's certificate server: one request per connection
//! (`Connection: close`), a GET that may carry a body, as KubeEdge's edge sends it.

use super::{tls, with_timeout, CloudError};
use futures_rustls::TlsConnector;
use rustls::ClientConfig;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use std::sync::Arc;
use std::time::Duration;

/// The largest answer read: a certificate is a few kilobytes.
const MAX_ANSWER: usize = 1 << 20;

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
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

/// Sends `GET <path>` with `headers` and `body` to `server` over TLS with `config`.
pub async fn get(
    server: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Answer, CloudError> {
    let what = format!("GET https://{server}{path}");
    with_timeout(timeout, &what, async {
        let (host, _) = split_host_port(server)?;
        let tcp = smol::net::TcpStream::connect(server)
            .await
            .map_err(|e| CloudError::io(format!("{what}: connecting"), e))?;
        let mut s = TlsConnector::from(config)
            .connect(tls::server_name(&host)?, tcp)
            .await
            .map_err(|e| CloudError::io(format!("{what}: TLS handshake"), e))?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {server}\r\nUser-Agent: edged\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        s.write_all(&bytes)
            .await
            .map_err(|e| CloudError::io(format!("{what}: sending"), e))?;
        s.flush()
            .await
            .map_err(|e| CloudError::io(format!("{what}: sending"), e))?;
        read_answer(&mut s, &what).await
    })
    .await
}

/// Reads until the answer is complete: by Content-Length, chunked encoding, or end of stream.
async fn read_answer<S: smol::io::AsyncRead + Unpin>(
    s: &mut S,
    what: &str,
) -> Result<Answer, CloudError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(a) = parse(&buf, false).map_err(|r| CloudError::protocol(what, r))? {
            return Ok(a);
        }
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            // A server that closes without TLS close_notify: what was read is all there is.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(CloudError::io(format!("{what}: reading the answer"), e)),
        };
        if n == 0 {
            return parse(&buf, true)
                .map_err(|r| CloudError::protocol(what, r))?
                .ok_or_else(|| CloudError::protocol(what, "the answer ended early".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_ANSWER {
            return Err(CloudError::protocol(
                what,
                "the answer is over 1 MiB".into(),
            ));
        }
    }
}

/// Parses a complete answer from `buf`; `Ok(None)`: not complete yet (unless `eof`).
fn parse(buf: &[u8], eof: bool) -> Result<Option<Answer>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp
        .parse(buf)
        .map_err(|e| format!("bad HTTP answer: {e}"))?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let rest = &buf[head_len..];
    if header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return Ok(dechunk(rest)?.map(|body| Answer { status, body }));
    }
    if let Some(len) = header("Content-Length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length `{len}`"))?;
        return Ok((rest.len() >= len).then(|| Answer {
            status,
            body: rest[..len].to_vec(),
        }));
    }
    Ok(eof.then(|| Answer {
        status,
        body: rest.to_vec(),
    }))
}

/// Decodes a chunked body; `Ok(None)` until the last chunk is in.
fn dechunk(rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut d = super::chunked::ChunkedDecoder::default();
    let mut body = Vec::new();
    d.decode(rest, &mut body)?;
    Ok(d.is_done().then_some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_length_chunks_and_eof() {
        let a = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false)
            .unwrap()
            .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"abc"[..]));
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", false)
                .unwrap()
                .is_none()
        );
        let c = b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n3\r\npe!\r\n0\r\n\r\n";
        let a = parse(c, false).unwrap().unwrap();
        assert_eq!((a.status, a.body.as_slice()), (401, &b"nope!"[..]));
        assert!(parse(b"HTTP/1.1 200 OK\r\n\r\nxy", false)
            .unwrap()
            .is_none());
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n\r\nxy", true)
                .unwrap()
                .unwrap()
                .body,
            b"xy"
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        // A chunk size that runs past what was sent is an error, not a crash.
        let lie = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc";
        assert!(parse(lie, false).is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab",
            true
        )
        .is_err());
    }

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
