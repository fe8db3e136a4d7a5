//! The events service shims publish to (`$TTRPC_ADDRESS`): edged serves
//! `containerd.services.events.ttrpc.v1.Events/Forward` itself and turns TaskExit and TaskOOM
//! into hints for the backend. Wait/State stay the truth.

use super::frame::{self, MessageType};
use super::proto::{events, task_events};
use nix::sys::eventfd::{EfdFlags, EventFd};
use protobuf::Message;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the backend hears from shims.
#[derive(Clone, Debug, PartialEq)]
pub enum ShimEvent {
    /// A container's init process exited.
    Exit {
        container_id: String,
        exit_status: u32,
        at: SystemTime,
    },
}

/// Decodes an envelope into an event of interest (`None` for the others).
pub fn decode(env: &events::Envelope, oom: &Mutex<HashSet<String>>) -> Option<ShimEvent> {
    let any = env.event.as_ref()?;
    match any.type_url.trim_start_matches('/') {
        t if t.ends_with("containerd.events.TaskExit") => {
            let e = task_events::TaskExit::parse_from_bytes(&any.value).ok()?;
            // Exits of exec'd processes carry their exec id.
            if !e.id.is_empty() && e.id != e.container_id {
                return None;
            }
            let at = e
                .exited_at
                .as_ref()
                .map(|t| UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
                .unwrap_or_else(SystemTime::now);
            Some(ShimEvent::Exit {
                container_id: e.container_id,
                exit_status: e.exit_status,
                at,
            })
        }
        t if t.ends_with("containerd.events.TaskOOM") => {
            let e = task_events::TaskOOM::parse_from_bytes(&any.value).ok()?;
            tracing::info!(container = %e.container_id, "OOM event");
            oom.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(e.container_id);
            None
        }
        _ => None,
    }
}

const FORWARD: (&str, &str) = ("containerd.services.events.ttrpc.v1.Events", "Forward");

/// What the server hands on: exits on the backend's channel, OOMs into its set.
pub struct Sink {
    tx: async_channel::Sender<crate::runtime::ExitEvent>,
    oom: Arc<Mutex<HashSet<String>>>,
}

impl Sink {
    /// A sink handing exits to `tx` and OOMs to `oom`.
    pub fn new(
        tx: async_channel::Sender<crate::runtime::ExitEvent>,
        oom: Arc<Mutex<HashSet<String>>>,
    ) -> Sink {
        Sink { tx, oom }
    }

    /// Answers every complete ttrpc frame at the start of `buf` (a shim's bytes so far; the
    /// frames read are drained, a partial one stays): the response frames to write back, or
    /// `None` when a frame is not ttrpc's (it claims more than 4 MiB, or names no message
    /// type): the connection is then dropped. Frames other than requests are skipped.
    pub fn answer(&self, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        while let Some((h, data)) = frame::decode(buf).ok()? {
            let answer = (h.kind == MessageType::Request).then(|| self.handle(data));
            buf.drain(..frame::HEADER_LEN + h.data_len);
            if let Some(body) = answer {
                // Only a response echoing names of nearly 4 MiB could be too long.
                out.extend(frame::encode(MessageType::Response, h.stream_id, &body).ok()?);
            }
        }
        Some(out)
    }

    /// Handles one ttrpc request frame; returns the response payload.
    fn handle(&self, payload: &[u8]) -> Vec<u8> {
        let mut res = ttrpc::Response::new();
        let status = match ttrpc::Request::parse_from_bytes(payload) {
            Ok(req) if (req.service.as_str(), req.method.as_str()) == FORWARD => {
                match events::ForwardRequest::parse_from_bytes(&req.payload) {
                    Ok(f) => {
                        if let Some(env) = f.envelope.as_ref() {
                            self.forward(env);
                        }
                        ttrpc::get_status(ttrpc::Code::OK, "")
                    }
                    Err(e) => ttrpc::get_status(ttrpc::Code::INVALID_ARGUMENT, e.to_string()),
                }
            }
            Ok(req) => ttrpc::get_status(
                ttrpc::Code::UNIMPLEMENTED,
                format!("/{}/{} is not served by edged", req.service, req.method),
            ),
            Err(e) => ttrpc::get_status(ttrpc::Code::INVALID_ARGUMENT, e.to_string()),
        };
        res.set_status(status);
        res.write_to_bytes().unwrap_or_default()
    }

    fn forward(&self, env: &events::Envelope) {
        if let Some(ShimEvent::Exit {
            container_id,
            exit_status,
            at,
        }) = decode(env, &self.oom)
        {
            tracing::debug!(container = %container_id, exit_status, "exit event");
            let _ = self.tx.try_send(crate::runtime::ExitEvent {
                container_id,
                exit_code: exit_status as i32,
                at,
            });
        }
    }
}

/// One shim's connection and the bytes of its unfinished frame.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads what arrived and answers every complete request; false: the connection is done.
    fn serve(&mut self, sink: &Sink) -> bool {
        let mut chunk = [0u8; 8192];
        let n = match self.stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            Err(_) => return false,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        match sink.answer(&mut self.buf) {
            None => false,
            Some(out) => out.is_empty() || self.stream.write_all(&out).is_ok(),
        }
    }
}

/// Serves the events service on a unix socket until dropped: one thread for every shim (the
/// traffic is a few small messages per container life, so no pool per connection).
pub struct EventServer {
    quit: Arc<AtomicBool>,
    /// Wakes the thread's poll to see `quit` (the thread sleeps with no timeout).
    wake: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket: PathBuf,
    /// `unix://<socket>`, for the shims' `TTRPC_ADDRESS`.
    pub address: String,
}

impl EventServer {
    /// Binds `socket` (replacing a stale one) and starts serving.
    pub fn start(
        socket: &Path,
        tx: async_channel::Sender<crate::runtime::ExitEvent>,
        oom: Arc<Mutex<HashSet<String>>>,
    ) -> Result<EventServer, String> {
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove stale {}: {e}", socket.display())),
        }
        let listener =
            UnixListener::bind(socket).map_err(|e| format!("bind {}: {e}", socket.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("{}: {e}", socket.display()))?;
        let quit = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| format!("events eventfd: {e}"))?,
        );
        let sink = Sink::new(tx, oom);
        let (q, w) = (quit.clone(), wake.clone());
        let thread = std::thread::Builder::new()
            .name("shim-events".into())
            .stack_size(256 * 1024)
            .spawn(move || serve(listener, sink, &q, &w))
            .map_err(|e| format!("events thread: {e}"))?;
        Ok(EventServer {
            quit,
            wake,
            thread: Some(thread),
            socket: socket.to_path_buf(),
            address: format!("unix://{}", socket.display()),
        })
    }
}

/// Serves until `quit`, sleeping in poll() with no timeout: a shim's message, a new
/// connection or `wake` (the server's drop) wakes it, nothing else.
fn serve(listener: UnixListener, sink: Sink, quit: &AtomicBool, wake: &EventFd) {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let mut conns: Vec<Conn> = Vec::new();
    while !quit.load(Ordering::Relaxed) {
        let ready: Vec<bool> = {
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                conns
                    .iter()
                    .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)),
            );
            if let Err(e) = nix::poll::poll(&mut fds, PollTimeout::NONE) {
                if e != nix::errno::Errno::EINTR {
                    tracing::warn!(error = %e, "events poll failed");
                    std::thread::sleep(Duration::from_millis(200));
                }
                continue;
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let mut keep = Vec::with_capacity(conns.len());
        if ready[1] {
            let _ = wake.read();
        }
        for (c, r) in conns.drain(..).zip(ready.iter().skip(2)) {
            let mut c = c;
            if !*r || c.serve(&sink) {
                keep.push(c);
            }
        }
        conns = keep;
        if ready[0] {
            while let Ok((stream, _)) = listener.accept() {
                // Blocking reads only after poll said so; small writes do not block.
                let _ = stream.set_nonblocking(false);
                conns.push(Conn {
                    stream,
                    buf: Vec::new(),
                });
            }
        }
    }
}

impl Drop for EventServer {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(
        client: &ttrpc::Client,
        topic: &str,
        type_url: &str,
        event: Vec<u8>,
    ) -> ttrpc::Result<ttrpc::Response> {
        let env = events::Envelope {
            topic: topic.into(),
            namespace: "edged".into(),
            event: protobuf::MessageField::some(protobuf::well_known_types::any::Any {
                type_url: type_url.into(),
                value: event,
                ..Default::default()
            }),
            ..Default::default()
        };
        let fwd = events::ForwardRequest {
            envelope: protobuf::MessageField::some(env),
            ..Default::default()
        };
        let mut req = ttrpc::Request::new();
        req.service = FORWARD.0.into();
        req.method = FORWARD.1.into();
        req.payload = fwd.write_to_bytes().unwrap();
        req.timeout_nano = 5_000_000_000;
        client.request(req)
    }

    #[test]
    fn serves_forward_to_a_ttrpc_client() {
        let d = tempfile::tempdir().unwrap();
        let (tx, rx) = async_channel::unbounded();
        let oom = Arc::new(Mutex::new(HashSet::new()));
        let server = EventServer::start(&d.path().join("ev.sock"), tx, oom.clone()).unwrap();
        let client = ttrpc::Client::connect(&server.address).unwrap();
        let exit = task_events::TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            exit_status: 3,
            ..Default::default()
        };
        forward(
            &client,
            "/tasks/exit",
            "containerd.events.TaskExit",
            exit.write_to_bytes().unwrap(),
        )
        .unwrap();
        let oom_ev = task_events::TaskOOM {
            container_id: "c2".into(),
            ..Default::default()
        };
        forward(
            &client,
            "/tasks/oom",
            "containerd.events.TaskOOM",
            oom_ev.write_to_bytes().unwrap(),
        )
        .unwrap();
        // An exec's exit is not the container's.
        let exec_exit = task_events::TaskExit {
            container_id: "c1".into(),
            id: "exec-1".into(),
            ..Default::default()
        };
        forward(
            &client,
            "/tasks/exit",
            "containerd.events.TaskExit",
            exec_exit.write_to_bytes().unwrap(),
        )
        .unwrap();
        let ev = rx.try_recv().unwrap();
        assert_eq!((ev.container_id.as_str(), ev.exit_code), ("c1", 3));
        assert!(rx.try_recv().is_err());
        assert!(oom.lock().unwrap().contains("c2"));
        // Other services are refused, and the connection stays usable.
        let mut req = ttrpc::Request::new();
        req.service = "x.Y".into();
        req.method = "Z".into();
        req.timeout_nano = 5_000_000_000;
        match client.request(req) {
            Err(ttrpc::Error::RpcStatus(s)) => assert_eq!(s.code(), ttrpc::Code::UNIMPLEMENTED),
            other => panic!("{other:?}"),
        }
        drop(server);
        assert!(!d.path().join("ev.sock").exists());
    }

    #[test]
    fn answers_whole_request_frames_and_keeps_a_partial_one() {
        let (tx, _rx) = async_channel::unbounded();
        let sink = Sink::new(tx, Arc::new(Mutex::new(HashSet::new())));
        let mut req = ttrpc::Request::new();
        req.service = "x.Y".into();
        req.method = "Z".into();
        let body = req.write_to_bytes().unwrap();
        let frame = |id, kind, body: &[u8]| frame::encode(kind, id, body).unwrap();
        // A request, a response (skipped), then half of a request.
        let mut buf = frame(1, MessageType::Request, &body);
        buf.extend(frame(3, MessageType::Response, b"xyz"));
        let second = frame(5, MessageType::Request, &body);
        buf.extend_from_slice(&second[..12]);
        let out = sink.answer(&mut buf).unwrap();
        assert_eq!(buf, second[..12]);
        let (h, data) = frame::decode(&out).unwrap().unwrap();
        assert_eq!((h.stream_id, h.kind), (1, MessageType::Response));
        assert_eq!(out.len(), frame::HEADER_LEN + h.data_len, "one response");
        let res = ttrpc::Response::parse_from_bytes(data).unwrap();
        assert_eq!(res.status.code(), ttrpc::Code::UNIMPLEMENTED);
        // The rest arrives: its answer; a frame over the limit, or of no known type, ends the
        // connection.
        buf.extend_from_slice(&second[12..]);
        let out = sink.answer(&mut buf).unwrap();
        assert_eq!(frame::decode(&out).unwrap().unwrap().0.stream_id, 5);
        assert!(buf.is_empty());
        let mut huge = ((frame::MAX_DATA_LEN + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 6]);
        assert_eq!(sink.answer(&mut huge), None);
        let mut odd = frame(7, MessageType::Request, &body);
        odd[8] = 9;
        assert_eq!(sink.answer(&mut odd), None);
    }
}
