//! HTTP/1.1 as the kubelet API needs it: request heads read with `httparse`, the path split
//! into percent-decoded segments and the query into pairs; responses with a length, or
//! chunked for streams. No bodies are read (every route is a GET).

use std::fmt;

/// The most bytes a request head may take.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, such as `GET` or `POST`, as sent.
    pub method: String,
    /// The path's segments, percent-decoded (`/a/b%20c` is `["a", "b c"]`).
    pub segments: Vec<String>,
    /// The query's pairs in order, decoded (`+` is a space; a bare `name` has an empty value).
    pub query: Vec<(String, String)>,
    /// Whether the connection may serve another request after this one.
    pub keep_alive: bool,
    /// The body's length (a GET normally has none).
    pub content_length: u64,
    /// Every header in order, names lower-cased, values trimmed (not UTF-8: empty).
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated token of every `name` header, in order (as Go's
    /// `httpstream.ExtractProtocols` reads `X-Stream-Protocol-Version`).
    pub fn header_tokens(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect()
    }
}

/// A request that cannot be read: answered 400 (or 431 for a head too large) and the
/// connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status answered, 400 or 431.
    pub status: u16,
    /// Why, sent as the body.
    pub message: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError {
        status: 400,
        message: message.into(),
    }
}

/// Reads a request head from the start of `buf`: `Ok(None)` while it is incomplete, else the
/// request and the bytes its head took.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HttpError {
                status: 431,
                message: "request head too large".into(),
            })
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("malformed request: {e}"))),
    };
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let version = req.version.unwrap_or(1);
    let mut keep_alive = version >= 1;
    let mut content_length = 0;
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        headers.push((h.name.to_ascii_lowercase(), value.to_string()));
        if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            content_length = value
                .parse()
                .map_err(|_| bad(format!("bad Content-Length `{value}`")))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("request bodies are not accepted (Transfer-Encoding)"));
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(bad(format!("the request target `{path}` is not a path")));
    }
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false).ok_or_else(|| bad(format!("bad path segment `{s}`"))))
        .collect::<Result<Vec<_>, _>>()?;
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (percent_decode(k, true), percent_decode(v, true)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(bad(format!("bad query parameter `{p}`"))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((
        Request {
            method,
            segments,
            query,
            keep_alive,
            content_length,
            headers,
        },
        used,
    )))
}

/// Decodes `%XX` escapes (and `+` as a space in a query); `None` for a bad escape or text
/// that is not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The reason phrase of the status codes this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// A whole response with a body of known length.
pub fn response(status: u16, content_type: &str, body: &[u8], keep_alive: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET\r\n");
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A plain-text response (an error's message, with a line end).
pub fn text(status: u16, message: &str, keep_alive: bool) -> Vec<u8> {
    let body = format!("{message}\n");
    response(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        keep_alive,
    )
}

/// The head of a chunked response.
pub fn chunked_head(content_type: &str, keep_alive: bool) -> Vec<u8> {
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n{close}\r\n"
    )
    .into_bytes()
}

/// One chunk of a chunked body (`data` must not be empty: an empty chunk ends the body).
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let raw = b"GET /containerLogs/kube%2Dsystem/web/app?follow=true&tailLines=10&x HTTP/1.1\r\nHost: n\r\n\r\nrest";
        let (r, used) = parse_request(raw).unwrap().unwrap();
        assert_eq!(used, raw.len() - 4);
        assert_eq!(r.method, "GET");
        assert_eq!(r.segments, ["containerLogs", "kube-system", "web", "app"]);
        assert_eq!(
            r.query,
            [
                ("follow".to_string(), "true".to_string()),
                ("tailLines".into(), "10".into()),
                ("x".into(), "".into())
            ]
        );
        assert!(r.keep_alive);
        assert_eq!(
            parse_request(b"GET /healthz HTTP/1.1\r\nHost:").unwrap(),
            None
        );
        let (r, _) = parse_request(b"GET /a?t=2024-01-01T00%3A00%3A00Z+x HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.query[0].1, "2024-01-01T00:00:00Z x");
        assert!(!r.keep_alive, "HTTP/1.0 closes");
        let (r, _) = parse_request(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive && r.segments.is_empty());
    }

    #[test]
    fn refuses_bad_heads() {
        let cases: &[(&[u8], u16, &str)] = &[
            (
                b"GET /x HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                400,
                "Content-Length",
            ),
            (b"GET /%zz HTTP/1.1\r\n\r\n", 400, "path segment"),
            (b"GET /a?%ff=1 HTTP/1.1\r\n\r\n", 400, "query parameter"),
            (b"GET * HTTP/1.1\r\n\r\n", 400, "not a path"),
            (
                b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
                "bodies",
            ),
            (b"\x00\x01 nonsense\r\n\r\n", 400, "malformed"),
        ];
        for (raw, status, says) in cases {
            let e = parse_request(raw).unwrap_err();
            assert_eq!(e.status, *status, "{e}");
            assert!(e.message.contains(says), "{e}");
        }
        let mut big = b"GET /x HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert_eq!(parse_request(&big).unwrap_err().status, 431);
    }

    #[test]
    fn mutated_heads_never_panic() {
        // What the fuzz target (fuzz/fuzz_targets/http_request.rs) does, briefly, in CI.
        let seed = b"GET /containerLogs/default/web/app?follow=true&tailLines=10&sinceTime=2024-01-01T00%3A00%3A00Z HTTP/1.1\r\nHost: n\r\nConnection: keep-alive\r\n\r\n";
        let mut rng = fastrand::Rng::with_seed(15);
        let bytes = b"%/?&=+\r\n :0aZ\xff\x00";
        for _ in 0..20_000 {
            let mut m = seed.to_vec();
            for _ in 0..rng.usize(1..6) {
                let i = rng.usize(..m.len());
                match rng.u8(..3) {
                    0 => m[i] = bytes[rng.usize(..bytes.len())],
                    1 => m.insert(i, bytes[rng.usize(..bytes.len())]),
                    _ => m.truncate(i.max(1)),
                }
            }
            if let Ok(Some((r, used))) = parse_request(&m) {
                assert!(used <= m.len());
                let _ = super::super::routes::route(&r.method, &r.segments);
                let _ = super::super::routes::logs_query(&r.query, std::time::SystemTime::now());
            }
        }
    }

    #[test]
    fn responses() {
        assert_eq!(
            text(404, "not here", false),
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot here\n"
        );
        assert_eq!(chunk(b"hello, world!!!!!"), b"11\r\nhello, world!!!!!\r\n");
        assert!(String::from_utf8(chunked_head("text/plain", true))
            .unwrap()
            .ends_with("Transfer-Encoding: chunked\r\n\r\n"));
    }
}
