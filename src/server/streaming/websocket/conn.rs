//! One WebSocket connection after the handshake, as a server: a reader (frames in, PINGs
//! answered, CLOSE answered, data messages handed on through a bounded channel), a writer (one
//! bounded queue of frames out) and the application (a session or a port-forward), joined on
//! the caller's task.
//!
//! Ends: the application finishes (the connection sends CLOSE 1000 and waits a moment for the
//! client's CLOSE, so the client reads everything before the socket closes); the client sends
//! CLOSE (answered, then the application is dropped); the client's socket ends or breaks; a
//! malformed frame (CLOSE 1002 with the reason, logged). Every queue is bounded, so a client
//! that reads slowly stalls its own application, and one that does not read its input stalls
//! its own reader.

use crate::wsframe::{self, close, opcode, Decoder};
use smol::future;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::future::Future;
use std::time::Duration;

/// The largest client message read (a stdin chunk, in base64 a third larger).
pub const MAX_INBOUND: usize = 1 << 20;
/// How long a closing handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How many frames wait for the writer.
const OUT_QUEUE: usize = super::super::STREAM_BUFFER;

/// A frame for the writer.
#[derive(Debug)]
pub enum Out {
    /// A data or control frame.
    Frame(Vec<u8>),
    /// A CLOSE frame: the writer's last. `reply`: an answer to the client's CLOSE (the
    /// connection ends once it is written); else ours (the client's answer is awaited).
    Close {
        /// The whole CLOSE frame, as written.
        frame: Vec<u8>,
        /// Whether it answers the client's CLOSE.
        reply: bool,
    },
}

/// The writer's side of a connection, as the application sees it.
#[derive(Clone)]
pub struct Outbox(async_channel::Sender<Out>);

impl Outbox {
    /// Queues a data message; `false` once the connection is closing (stop producing).
    pub async fn send(&self, op: u8, payload: &[u8]) -> bool {
        self.0
            .send(Out::Frame(wsframe::server_frame(op, payload)))
            .await
            .is_ok()
    }
}

/// Why the reader stopped.
#[derive(Debug, PartialEq)]
enum ReadEnd {
    /// The client sent CLOSE (answered).
    Closed,
    /// The client's socket ended.
    Eof,
    /// A read failed.
    Failed(String),
    /// The client broke the protocol (answered with CLOSE and the reason).
    Broken(String),
}

/// Why the writer stopped.
#[derive(Debug, PartialEq)]
enum WriteEnd {
    /// It wrote our CLOSE.
    SentClose,
    /// It wrote the answer to the client's CLOSE.
    Replied,
    /// Nothing more will be queued.
    Drained,
    /// A write failed.
    Failed(String),
}

/// Runs a connection. `app` gets the outbox and the client's data messages (their payloads,
/// in order; the channel closes when the client stops sending). `what` names the connection
/// in logs.
pub async fn drive<S, F, Fut>(s: &mut S, early: Vec<u8>, what: &str, app: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Outbox, async_channel::Receiver<Vec<u8>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (mut rd, mut wr) = smol::io::split(s);
    let (out_tx, out_rx) = async_channel::bounded::<Out>(OUT_QUEUE);
    let (in_tx, in_rx) = async_channel::bounded::<Vec<u8>>(OUT_QUEUE);
    let (rdone_tx, rdone_rx) = async_channel::bounded::<()>(1);
    let (wdone_tx, wdone_rx) = async_channel::bounded::<()>(1);

    let control = out_tx.clone();
    let reader = async move {
        let end = read_loop(&mut rd, early, &in_tx, &control).await;
        drop(in_tx);
        drop(control);
        drop(rdone_tx);
        match &end {
            ReadEnd::Closed => tracing::debug!("{what}: the client closed the websocket"),
            ReadEnd::Eof => tracing::debug!("{what}: the client's connection ended"),
            ReadEnd::Failed(e) => tracing::info!("{what}: reading from the client: {e}"),
            ReadEnd::Broken(e) => {
                tracing::warn!("{what}: ended, the client broke the protocol: {e}")
            }
        }
        if matches!(end, ReadEnd::Closed | ReadEnd::Broken(_)) {
            // Let the writer answer, within limits.
            future::or(
                async {
                    let _ = wdone_rx.recv().await;
                },
                async {
                    smol::Timer::after(CLOSE_WAIT).await;
                },
            )
            .await;
        }
    };
    let writer = async move {
        let end = write_loop(&mut wr, out_rx).await;
        drop(wdone_tx);
        match end {
            WriteEnd::SentClose => {
                // Wait for the client's CLOSE (or its leaving) before the socket is dropped.
                future::or(
                    async {
                        let _ = rdone_rx.recv().await;
                    },
                    async {
                        smol::Timer::after(CLOSE_WAIT).await;
                    },
                )
                .await;
            }
            WriteEnd::Failed(e) => tracing::info!("{what}: writing to the client: {e}"),
            WriteEnd::Replied | WriteEnd::Drained => {}
        }
    };
    let producer = async move {
        app(Outbox(out_tx.clone()), in_rx).await;
        let frame =
            wsframe::server_frame(opcode::CLOSE, &wsframe::close_payload(close::NORMAL, ""));
        let _ = out_tx
            .send(Out::Close {
                frame,
                reply: false,
            })
            .await;
        drop(out_tx);
        future::pending::<()>().await
    };
    future::or(future::or(reader, writer), producer).await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut R,
    early: Vec<u8>,
    data: &async_channel::Sender<Vec<u8>>,
    control: &async_channel::Sender<Out>,
) -> ReadEnd {
    let mut dec = Decoder::server(MAX_INBOUND);
    dec.feed(&early);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        loop {
            let msg = match dec.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    let code = if e.0.contains("limit") || e.0.contains("over") {
                        close::TOO_BIG
                    } else {
                        close::PROTOCOL_ERROR
                    };
                    let frame =
                        wsframe::server_frame(opcode::CLOSE, &wsframe::close_payload(code, &e.0));
                    let _ = control.send(Out::Close { frame, reply: true }).await;
                    return ReadEnd::Broken(e.0);
                }
            };
            match msg.opcode {
                opcode::CLOSE => {
                    // Echo the code (RFC 6455, 5.5.1); none given, none echoed.
                    let payload = match wsframe::close_code(&msg.payload) {
                        Some(c) => c.to_be_bytes().to_vec(),
                        None => Vec::new(),
                    };
                    let frame = wsframe::server_frame(opcode::CLOSE, &payload);
                    let _ = control.send(Out::Close { frame, reply: true }).await;
                    return ReadEnd::Closed;
                }
                opcode::PING => {
                    let _ = control
                        .send(Out::Frame(wsframe::server_frame(
                            opcode::PONG,
                            &msg.payload,
                        )))
                        .await;
                }
                opcode::PONG => {}
                _ => {
                    // The application stopped reading: keep answering control frames.
                    let _ = data.send(msg.payload).await;
                }
            }
        }
        match rd.read(&mut buf).await {
            Ok(0) => return ReadEnd::Eof,
            Ok(n) => dec.feed(&buf[..n]),
            Err(e) => return ReadEnd::Failed(e.to_string()),
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    wr: &mut W,
    queue: async_channel::Receiver<Out>,
) -> WriteEnd {
    while let Ok(out) = queue.recv().await {
        let (frame, last) = match out {
            Out::Frame(f) => (f, None),
            Out::Close { frame, reply } => (
                frame,
                Some(if reply {
                    WriteEnd::Replied
                } else {
                    WriteEnd::SentClose
                }),
            ),
        };
        if let Err(e) = wr.write_all(&frame).await {
            return WriteEnd::Failed(e.to_string());
        }
        if last.is_some() || queue.is_empty() {
            if let Err(e) = wr.flush().await {
                return WriteEnd::Failed(e.to_string());
            }
        }
        if let Some(end) = last {
            return end;
        }
    }
    WriteEnd::Drained
}
