//! A ttrpc client of one shim's task service. The service name is picked at run time:
//! `containerd.task.v2.Task` (1.6/1.7 shims), falling back to `containerd.task.v3.Task` (2.x
//! shims, same messages) when the shim answers UNIMPLEMENTED. The framing is ttrpc's (the
//! `ttrpc` crate gives the message types); tests run it against the `ttrpc` crate's server.

use protobuf::Message;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";

/// Why an RPC failed, as the backend acts on it.
#[derive(Debug)]
pub enum RpcError {
    /// The shim answered with a status (`NOT_FOUND`, `FAILED_PRECONDITION`...).
    Status(ttrpc::Code, String),
    /// No answer in time.
    Timeout,
    /// The connection is gone (EOF, reset, refused): the shim is dead or going.
    Disconnected(String),
    /// Anything else (encoding...).
    Other(String),
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Status(c, m) => write!(f, "shim answered {c:?}: {m}"),
            RpcError::Timeout => write!(f, "shim did not answer in time"),
            RpcError::Disconnected(m) => write!(f, "shim connection lost: {m}"),
            RpcError::Other(m) => write!(f, "{m}"),
        }
    }
}

impl RpcError {
    /// Whether the shim answered NOT_FOUND.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RpcError::Status(ttrpc::Code::NOT_FOUND, _))
    }
}

/// An I/O failure on the connection: a timeout, or the shim gone.
fn io_error(e: std::io::Error) -> RpcError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => RpcError::Timeout,
        _ => RpcError::Disconnected(e.to_string()),
    }
}

/// Whether a server says it has no such service: Go's ttrpc answers UNIMPLEMENTED, Rust's
/// INVALID_ARGUMENT "... does not exist".
fn unknown_service(e: &RpcError) -> bool {
    match e {
        RpcError::Status(ttrpc::Code::UNIMPLEMENTED, _) => true,
        RpcError::Status(ttrpc::Code::INVALID_ARGUMENT, m) => m.contains("does not exist"),
        _ => false,
    }
}

/// A client of a shim. Every call has a connection of its own (a unix connect costs tens of
/// microseconds): no reader threads per shim, a slow Wait never holds up a State, and a
/// timed-out call leaves nothing behind.
pub struct TaskClient {
    socket: String,
    /// The shim serves the v3 name (learned on the first refusal of v2).
    v3: AtomicBool,
}

const HEADER: usize = 10;
const MAX_MESSAGE: usize = 4 << 20;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;

impl TaskClient {
    /// Checks that a shim listens at `address` (`unix:///path` or a plain path).
    pub fn connect(address: &str) -> Result<TaskClient, RpcError> {
        let c = TaskClient {
            socket: address.trim_start_matches("unix://").to_string(),
            v3: AtomicBool::new(false),
        };
        c.open()?;
        Ok(c)
    }

    fn open(&self) -> Result<UnixStream, RpcError> {
        let r = match self.socket.strip_prefix('@') {
            Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|a| UnixStream::connect_addr(&a)),
            None => UnixStream::connect(&self.socket),
        };
        r.map_err(|e| RpcError::Disconnected(format!("connect {}: {e}", self.socket)))
    }

    /// Calls `method` of the task service with a timeout.
    pub fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let payload = req
            .write_to_bytes()
            .map_err(|e| RpcError::Other(format!("encode {method}: {e}")))?;
        let v3 = self.v3.load(Ordering::Relaxed);
        match self.raw(
            if v3 { TASK_V3 } else { TASK_V2 },
            method,
            &payload,
            timeout,
        ) {
            Err(e) if !v3 && unknown_service(&e) => {
                let r = self.raw(TASK_V3, method, &payload, timeout);
                if r.is_ok() {
                    self.v3.store(true, Ordering::Relaxed);
                }
                r
            }
            r => r,
        }
        .and_then(|bytes| {
            Resp::parse_from_bytes(&bytes)
                .map_err(|e| RpcError::Other(format!("decode {method} answer: {e}")))
        })
    }

    /// One ttrpc request on a fresh connection: a 10-byte header (length, stream id, type,
    /// flags; big-endian) then a `ttrpc.Request`; the answer is a `ttrpc.Response` frame.
    fn raw(
        &self,
        service: &str,
        method: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let deadline = Instant::now() + timeout;
        let remaining = || {
            deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(RpcError::Timeout)
        };
        let mut req = ttrpc::Request::new();
        req.service = service.to_string();
        req.method = method.to_string();
        req.payload = payload.to_vec();
        req.timeout_nano = timeout.as_nanos().min(i64::MAX as u128) as i64;
        let body = req
            .write_to_bytes()
            .map_err(|e| RpcError::Other(format!("encode request: {e}")))?;
        if body.len() > MAX_MESSAGE {
            return Err(RpcError::Other(format!(
                "request of {} bytes is too big",
                body.len()
            )));
        }
        let mut frame = Vec::with_capacity(HEADER + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&[TYPE_REQUEST, 0]);
        frame.extend_from_slice(&body);

        let mut s = self.open()?;
        s.set_write_timeout(Some(remaining()?)).map_err(io_error)?;
        s.write_all(&frame).map_err(io_error)?;
        loop {
            let mut header = [0u8; HEADER];
            s.set_read_timeout(Some(remaining()?)).map_err(io_error)?;
            s.read_exact(&mut header).map_err(io_error)?;
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if len > MAX_MESSAGE {
                return Err(RpcError::Other(format!("answer of {len} bytes is too big")));
            }
            let mut data = vec![0u8; len];
            s.set_read_timeout(Some(remaining()?)).map_err(io_error)?;
            s.read_exact(&mut data).map_err(io_error)?;
            let stream_id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            if stream_id != 1 || header[8] != TYPE_RESPONSE {
                continue;
            }
            let res = ttrpc::Response::parse_from_bytes(&data)
                .map_err(|e| RpcError::Other(format!("decode response: {e}")))?;
            let status = res.status.as_ref();
            return match status.map(|s| s.code()).unwrap_or(ttrpc::Code::OK) {
                ttrpc::Code::OK => Ok(res.payload),
                code => Err(RpcError::Status(
                    code,
                    status.map(|s| s.message.clone()).unwrap_or_default(),
                )),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::shim::proto::shim::{StateRequest, StateResponse};
    use std::collections::HashMap;

    /// Answers State like a shim (pid 42), or UNIMPLEMENTED as Go's ttrpc does.
    struct State {
        unimplemented: bool,
    }

    impl ttrpc::MethodHandler for State {
        fn handler(&self, ctx: ttrpc::TtrpcContext, req: ttrpc::Request) -> ttrpc::Result<()> {
            let mut res = ttrpc::Response::new();
            if self.unimplemented {
                res.set_status(ttrpc::get_status(ttrpc::Code::UNIMPLEMENTED, "service"));
            } else {
                let r = StateRequest::parse_from_bytes(&req.payload).unwrap();
                let answer = StateResponse {
                    id: r.id,
                    pid: 42,
                    ..Default::default()
                };
                res.set_status(ttrpc::get_status(ttrpc::Code::OK, ""));
                res.payload = answer.write_to_bytes().unwrap();
            }
            ctx.respond(ctx.mh.stream_id, res)
        }
    }

    fn serve(dir: &std::path::Path, name: &str, v2_unimplemented: bool) -> (ttrpc::Server, String) {
        let addr = format!("unix://{}", dir.join(name).display());
        let mut methods: HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>> =
            HashMap::new();
        methods.insert(
            "/containerd.task.v3.Task/State".into(),
            Box::new(State {
                unimplemented: false,
            }),
        );
        if v2_unimplemented {
            methods.insert(
                "/containerd.task.v2.Task/State".into(),
                Box::new(State {
                    unimplemented: true,
                }),
            );
        }
        let mut server = ttrpc::Server::new()
            .bind(&addr)
            .unwrap()
            .register_service(methods);
        server.start().unwrap();
        (server, addr)
    }

    #[test]
    fn falls_back_to_v3() {
        let d = tempfile::tempdir().unwrap();
        for (name, go_style) in [("go.sock", true), ("rust.sock", false)] {
            let (server, addr) = serve(d.path(), name, go_style);
            let c = TaskClient::connect(&addr).unwrap();
            for _ in 0..2 {
                let r: StateResponse = c
                    .call(
                        "State",
                        &StateRequest {
                            id: "c1".into(),
                            ..Default::default()
                        },
                        Duration::from_secs(5),
                    )
                    .unwrap();
                assert_eq!((r.id.as_str(), r.pid), ("c1", 42));
            }
            assert!(c.v3.load(Ordering::Relaxed), "{name}: v3 learned");
            let e = c
                .call::<_, StateResponse>("Nope", &StateRequest::default(), Duration::from_secs(5))
                .unwrap_err();
            assert!(matches!(e, RpcError::Status(..)), "{e}");
            server.shutdown();
        }
    }

    #[test]
    fn dead_socket_is_disconnected() {
        let d = tempfile::tempdir().unwrap();
        let e = TaskClient::connect(&d.path().join("none.sock").display().to_string());
        assert!(matches!(e, Err(RpcError::Disconnected(_))));
    }
}
