//! A ttrpc client of one shim's task service. The service name is picked at run time:
//! `containerd.task.v2.Task` (1.6/1.7 shims), falling back to `containerd.task.v3.Task` (2.x
//! shims, same messages) when the shim answers UNIMPLEMENTED.

use protobuf::Message;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

    fn from_ttrpc(e: ttrpc::Error) -> RpcError {
        match e {
            ttrpc::Error::RpcStatus(s) => RpcError::Status(s.code(), s.message().to_string()),
            ttrpc::Error::Socket(m) => RpcError::Disconnected(m),
            ttrpc::Error::Nix(e) => RpcError::Disconnected(e.to_string()),
            ttrpc::Error::Others(m) if m.contains("timeout") => RpcError::Timeout,
            // The client's receiver is gone: the connection broke.
            ttrpc::Error::Others(m) if m.contains("Receiver") || m.contains("Send packet") => {
                RpcError::Disconnected(m)
            }
            other => RpcError::Other(other.to_string()),
        }
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

/// A connection to a shim.
pub struct TaskClient {
    client: ttrpc::Client,
    /// The shim serves the v3 name (learned on the first UNIMPLEMENTED).
    v3: AtomicBool,
}

impl TaskClient {
    /// Connects to a shim's socket (`unix://...` or a plain path).
    pub fn connect(address: &str) -> Result<TaskClient, RpcError> {
        let address = if address.starts_with("unix://") {
            address.to_string()
        } else {
            format!("unix://{address}")
        };
        let client = ttrpc::Client::connect(&address).map_err(|e| match e {
            ttrpc::Error::Others(m) => RpcError::Other(m),
            e => RpcError::Disconnected(e.to_string()),
        })?;
        Ok(TaskClient {
            client,
            v3: AtomicBool::new(false),
        })
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

    fn raw(
        &self,
        service: &str,
        method: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let mut req = ttrpc::Request::new();
        req.service = service.to_string();
        req.method = method.to_string();
        req.payload = payload.to_vec();
        req.timeout_nano = timeout.as_nanos().min(i64::MAX as u128) as i64;
        self.client
            .request(req)
            .map(|r| r.payload)
            .map_err(RpcError::from_ttrpc)
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
