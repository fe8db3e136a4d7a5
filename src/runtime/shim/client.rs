//! A ttrpc client of one shim's task service. The service name is picked at run time:
//! [`TASK_V2`] (1.6/1.7 shims), falling back to [`TASK_V3`] (2.x shims, same messages) when
//! the shim answers UNIMPLEMENTED. The framing is ttrpc's (the `ttrpc` crate gives the message
//! types); tests run it against the `ttrpc` crate's server.

use super::calls::{TaskRpc, TASK_V2, TASK_V3};
use super::frame::{self, Header, MessageType, HEADER_LEN};
use protobuf::Message;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

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
///
/// A shim that stops answering (stopped, deadlocked) must not take the agent with it: the
/// connect is bounded too (a frozen shim's accept queue fills, and a blocking connect then
/// waits for ever), at most [`MAX_CALLS`] calls are in flight per shim (more wait for a slot
/// within their own timeout), and consecutive timeouts are counted so the backend can call
/// the shim [`unresponsive`](TaskClient::unresponsive) and treat it as dead.
pub struct TaskClient {
    socket: String,
    /// The shim serves the v3 name (learned on the first refusal of v2).
    v3: AtomicBool,
    /// Calls in flight (Wait aside).
    busy: Mutex<usize>,
    freed: Condvar,
    /// Consecutive timed-out calls, and when the first of them began.
    strikes: Mutex<(u32, Option<Instant>)>,
}

/// The most calls one shim is asked at once; `Wait`, a long poll that lasts a grace period,
/// is not counted.
pub const MAX_CALLS: usize = 4;
/// A shim is unresponsive after this many timed-out calls in a row...
const STRIKES: u32 = 3;
/// ... spanning at least this long with no answer.
const UNRESPONSIVE_FOR: Duration = Duration::from_secs(15);

/// Whether a run of timeouts makes a shim unresponsive (a pure decision, table-tested).
fn unresponsive(strikes: u32, silent_for: Duration) -> bool {
    strikes >= STRIKES && silent_for >= UNRESPONSIVE_FOR
}

/// The stream of a connection's one call (a client's streams are odd).
const STREAM: u32 = 1;

/// A slot among a shim's [`MAX_CALLS`], given back on drop.
struct Slot<'a>(&'a TaskClient);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy -= 1;
        self.0.freed.notify_one();
    }
}

impl TaskClient {
    /// Checks that a shim listens at `address` (`unix:///path` or a plain path).
    /// Waits at most `timeout` for the connection.
    pub fn connect(address: &str, timeout: Duration) -> Result<TaskClient, RpcError> {
        let c = TaskClient::unconnected(address);
        c.open(Instant::now() + timeout)?;
        Ok(c)
    }

    /// A client of a shim that has not accepted a connection yet (calls connect each time).
    pub fn unconnected(address: &str) -> TaskClient {
        TaskClient {
            socket: address.trim_start_matches("unix://").to_string(),
            v3: AtomicBool::new(false),
            busy: Mutex::new(0),
            freed: Condvar::new(),
            strikes: Mutex::new((0, None)),
        }
    }

    /// Connects by `deadline`. The socket is non-blocking while it connects: a unix connect
    /// to a listener whose accept queue is full (a frozen shim's fills up) answers EAGAIN
    /// then, where a blocking one would wait until the shim accepts, maybe never.
    fn open(&self, deadline: Instant) -> Result<UnixStream, RpcError> {
        use nix::errno::Errno;
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
        use std::os::fd::AsRawFd;
        let fail = |e: Errno| RpcError::Disconnected(format!("connect {}: {e}", self.socket));
        let addr = match self.socket.strip_prefix('@') {
            Some(name) => UnixAddr::new_abstract(name.as_bytes()),
            None => UnixAddr::new(self.socket.as_str()),
        }
        .map_err(fail)?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(fail)?;
        loop {
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    if Instant::now() >= deadline {
                        return Err(RpcError::Timeout);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(fail(e)),
            }
        }
        let s = UnixStream::from(fd);
        s.set_nonblocking(false).map_err(io_error)?;
        Ok(s)
    }

    /// Takes one of the shim's call slots, waiting for one until `deadline`.
    fn slot(&self, deadline: Instant) -> Result<Slot<'_>, RpcError> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while *busy >= MAX_CALLS {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(RpcError::Timeout)?;
            busy = self
                .freed
                .wait_timeout(busy, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *busy += 1;
        Ok(Slot(self))
    }

    /// Counts a call's outcome: a timeout is a strike, any answer clears them.
    pub fn note<T>(&self, r: &Result<T, RpcError>, began: Instant) {
        let mut s = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Err(RpcError::Timeout | RpcError::Status(ttrpc::Code::DEADLINE_EXCEEDED, _)) => {
                s.0 += 1;
                s.1.get_or_insert(began);
            }
            _ => *s = (0, None),
        }
    }

    /// Whether the shim's last call timed out (no answer since).
    pub fn timed_out(&self) -> bool {
        self.strikes.lock().unwrap_or_else(|p| p.into_inner()).0 > 0
    }

    /// Whether the shim has let [`STRIKES`] calls in a row time out, over at least
    /// [`UNRESPONSIVE_FOR`]: it is stopped or stuck, and no use to anyone.
    pub fn unresponsive(&self) -> bool {
        let s = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
        s.1.is_some_and(|first| unresponsive(s.0, first.elapsed()))
    }

    /// Calls the task service's method of `req` with a timeout (waiting for a call slot
    /// included). A [long poll](TaskRpc::LONG_POLL) neither takes a slot nor counts as a
    /// strike when it times out: it waits for a process to exit and times out by design.
    pub fn call<R: TaskRpc>(&self, req: &R, timeout: Duration) -> Result<R::Response, RpcError> {
        let began = Instant::now();
        if R::LONG_POLL {
            return self.call_unlimited(req, timeout);
        }
        let slot = self.slot(began + timeout)?;
        let r = self.call_unlimited(req, timeout.saturating_sub(began.elapsed()));
        drop(slot);
        self.note(&r, began);
        r
    }

    fn call_unlimited<R: TaskRpc>(
        &self,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, RpcError> {
        let method = R::METHOD;
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
            R::Response::parse_from_bytes(&bytes)
                .map_err(|e| RpcError::Other(format!("decode {method} answer: {e}")))
        })
    }

    /// One ttrpc request on a fresh connection: a [frame](super::frame) of a `ttrpc.Request`
    /// on stream [`STREAM`]; the answer is that stream's frame of a `ttrpc.Response`.
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
        let request = frame::encode(MessageType::Request, STREAM, &body)
            .map_err(|e| RpcError::Other(format!("request: {e}")))?;

        let mut s = self.open(deadline)?;
        s.set_write_timeout(Some(remaining()?)).map_err(io_error)?;
        s.write_all(&request).map_err(io_error)?;
        loop {
            let mut header = [0u8; HEADER_LEN];
            s.set_read_timeout(Some(remaining()?)).map_err(io_error)?;
            s.read_exact(&mut header).map_err(io_error)?;
            let h = Header::decode(&header)
                .map_err(|e| RpcError::Other(format!("the shim's answer: {e}")))?;
            let mut data = vec![0u8; h.data_len];
            s.set_read_timeout(Some(remaining()?)).map_err(io_error)?;
            s.read_exact(&mut data).map_err(io_error)?;
            if h.stream_id != STREAM || h.kind != MessageType::Response {
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
            let c = TaskClient::connect(&addr, Duration::from_secs(5)).unwrap();
            for _ in 0..2 {
                let r = c
                    .call(
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
                .raw(TASK_V3, "Nope", &[], Duration::from_secs(5))
                .unwrap_err();
            assert!(matches!(e, RpcError::Status(..)), "{e}");
            server.shutdown();
        }
    }

    #[test]
    fn dead_socket_is_disconnected() {
        let d = tempfile::tempdir().unwrap();
        let e = TaskClient::connect(
            &d.path().join("none.sock").display().to_string(),
            Duration::from_secs(5),
        );
        assert!(matches!(e, Err(RpcError::Disconnected(_))));
    }

    #[test]
    fn unresponsive_needs_strikes_over_time() {
        for (strikes, secs, want) in [
            (0, 100, false),
            (2, 100, false),
            (3, 14, false),
            (3, 15, true),
            (10, 60, true),
        ] {
            assert_eq!(
                unresponsive(strikes, Duration::from_secs(secs)),
                want,
                "{strikes} {secs}"
            );
        }
    }

    /// A listener that never accepts, its accept queue full: the connect and every call
    /// time out (they used to block for ever), strikes are counted, and at most
    /// [`MAX_CALLS`] calls wait on the shim at once.
    #[test]
    fn a_full_accept_queue_times_out_and_calls_are_limited() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("frozen.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let addr = path.display().to_string();
        let c = std::sync::Arc::new(TaskClient::connect(&addr, Duration::from_secs(1)).unwrap());
        // Fill the queue (a frozen shim's fills as calls pile up).
        let mut held = Vec::new();
        while let Ok(s) = c.open(Instant::now()) {
            held.push(s);
            assert!(held.len() < 100_000);
        }
        let t = Instant::now();
        let e = c
            .call(&StateRequest::default(), Duration::from_millis(300))
            .unwrap_err();
        assert!(matches!(e, RpcError::Timeout), "{e}");
        assert!(t.elapsed() < Duration::from_secs(20), "bounded");
        assert_eq!(c.strikes.lock().unwrap().0, 1);
        // Slots: with MAX_CALLS taken, one more call waits its timeout for a slot.
        let slots: Vec<Slot> = (0..MAX_CALLS)
            .map(|_| c.slot(Instant::now()).unwrap())
            .collect();
        assert!(matches!(
            c.slot(Instant::now() + Duration::from_millis(50)),
            Err(RpcError::Timeout)
        ));
        drop(slots);
        assert!(c.slot(Instant::now()).is_ok());
        drop(listener);
    }
}
