//! Streaming sessions of the kubelet API (the kubelet's `pkg/kubelet/cri/streaming`): exec,
//! attach and port-forward, each carried over SPDY/3.1 ([`spdy`]) or WebSocket
//! ([`websocket`]).
//!
//! The seam between a transport and the runtime is [`Streams`]: a transport reads the
//! client's streams into bounded channels and writes the runtime's output from them (so a slow
//! client slows its own session, and only its own), then reports the [`Outcome`] on the error
//! stream in the form its protocol version wants ([`status_json`] for v4 and v5). The runtime
//! side (the shim's exec, a container's own process) sees channels only, so each transport is
//! tested with an echo session and the runtime with a channel client.

pub mod exec;
pub mod spdy;
pub mod websocket;

use std::future::Future;
use std::pin::Pin;

/// How many chunks a stream buffers before its writer waits.
pub const STREAM_BUFFER: usize = 16;
/// The largest chunk a transport hands over in one message.
pub const MAX_CHUNK: usize = 32 * 1024;

/// Which of its streams a client asked for (`stdin`, `stdout`, `stderr`, `tty` of the request's
/// query; `input`/`output`/`error` in older clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    /// The client sends input.
    pub stdin: bool,
    /// The client wants the process's output.
    pub stdout: bool,
    /// The client wants the process's error output (none with a terminal: it goes to stdout).
    pub stderr: bool,
    /// The process gets a terminal.
    pub tty: bool,
}

/// A terminal size from the resize stream (JSON `{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// A session's streams as the runtime sees them. A closed `stdin` is the client's end of
/// input; the runtime drops `stdout`/`stderr` when the process's output ends.
#[derive(Debug, Default)]
pub struct Streams {
    /// The client's input (None: not asked for).
    pub stdin: Option<async_channel::Receiver<Vec<u8>>>,
    /// The process's output to the client (None: not asked for).
    pub stdout: Option<async_channel::Sender<Vec<u8>>>,
    /// The process's error output to the client (None: not asked for, or a terminal).
    pub stderr: Option<async_channel::Sender<Vec<u8>>>,
    /// Terminal sizes from the client (None: no terminal or no resize stream).
    pub resize: Option<async_channel::Receiver<TermSize>>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code (0: success).
    Exited(i32),
    /// It could not run, or the session failed: the message for the user.
    Failed(String),
}

/// Runs a session over the streams a transport set up (an exec, an attach).
pub type Session = Box<dyn FnOnce(Streams) -> Pin<Box<dyn Future<Output = Outcome>>>>;

/// The error stream's v1 Status for protocol v4 and v5 (what client-go's
/// `errorDecoderV4` reads): `Success`, or `Failure` with reason `NonZeroExitCode` and the code
/// as an `ExitCode` cause, or `InternalError` with the message.
pub fn status_json(o: &Outcome) -> Vec<u8> {
    let v = match o {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command [...], exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(m) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": m,
            "reason": "InternalError",
            "details": {"causes": [{"message": m}]},
            "code": 500,
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The error stream's text for protocol v1-v3: empty on success, else the message.
pub fn status_text(o: &Outcome) -> Vec<u8> {
    match o {
        Outcome::Exited(0) => Vec::new(),
        Outcome::Exited(code) => format!("command terminated with exit code {code}").into_bytes(),
        Outcome::Failed(m) => m.clone().into_bytes(),
    }
}

/// Reads a resize message (`{"Width":W,"Height":H}`, as client-go's `TerminalSize`).
pub fn parse_resize(b: &[u8]) -> Option<TermSize> {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let s: Size = serde_json::from_slice(b).ok()?;
    Some(TermSize {
        width: s.width,
        height: s.height,
    })
}

/// Opens a TCP connection to a port inside the pod's network namespace (port-forward).
pub type Dial = std::rc::Rc<
    dyn Fn(u16) -> Pin<Box<dyn Future<Output = std::io::Result<smol::net::TcpStream>>>>,
>;
