//! One `edged exec`/`edged attach` session: a WebSocket `v5.channel.k8s.io` client (our
//! [`crate::wsframe`], client side) of the running agent's kubelet API. Stdin goes out on
//! channel 0 (its end as the v5 close signal), the window size on channel 4 at the start and
//! on every SIGWINCH, stdout and stderr come back on 1 and 2, the command's Status on 3.

use super::exec::{self, Plan};
use super::term;
use crate::flags::Flags;
use crate::wsframe::{self, close, opcode, Decoder};
use smol::future;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;
use smol::stream::StreamExt;
use std::net::{IpAddr, SocketAddr};

/// The subprotocol asked for.
const PROTOCOL: &str = "v5.channel.k8s.io";
/// The largest message read from the server.
const MAX_MESSAGE: usize = 1 << 20;
/// How much stdin goes in one message.
const STDIN_CHUNK: usize = 32 * 1024;

/// Runs a session; the process's exit code (the command's, or 1 with the reason on stderr).
pub fn run(flags: &Flags, plan: Plan) -> i32 {
    let addr = match api_address(flags.address, flags.port) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("edged: {e}");
            return 1;
        }
    };
    let mut raw: Option<term::RawMode> = None;
    let code = smol::block_on(session(addr, plan, &mut raw));
    if let Some(mut r) = raw {
        r.restore();
    }
    code
}

/// Where the agent's API is, from its `--address`/`--port`; `Err` when the CLI cannot use it.
pub fn api_address(address: IpAddr, port: u16) -> Result<SocketAddr, String> {
    if port == 0 {
        return Err(
            "the agent's kubelet API is off (--port 0): run the agent with --port (default 10350) and give the same --port here, before the command".into(),
        );
    }
    let ip = if address.is_loopback() {
        address
    } else {
        return Err(format!(
            "the kubelet API on {address} serves TLS with client certificates only; this command speaks to a loopback API: run the agent with --address 127.0.0.1 (the default), or use kubectl"
        ));
    };
    Ok(SocketAddr::new(ip, port))
}

fn unreachable(addr: SocketAddr, e: std::io::Error) -> String {
    format!(
        "cannot reach the agent's kubelet API at {addr} ({e}): is the agent running with its API on? Give the agent's --address and --port before the command (edged --port N exec ...)"
    )
}

async fn session(addr: SocketAddr, plan: Plan, raw: &mut Option<term::RawMode>) -> i32 {
    let container = match &plan.container {
        Some(c) => c.clone(),
        None => match default_container(addr, &plan).await {
            Ok((c, notice)) => {
                if let Some(n) = notice {
                    eprintln!("{n}");
                }
                c
            }
            Err(e) => {
                eprintln!("edged: {e}");
                return 1;
            }
        },
    };
    let target = exec::target(&plan, &container);
    let (stream, early) = match upgrade(addr, &target).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if plan.tty && plan.stdin && term::stdin_is_tty() {
        match term::RawMode::enter() {
            Ok(r) => *raw = Some(r),
            Err(e) => eprintln!("edged: the terminal cannot go in raw mode ({e}); going on"),
        }
    }
    let signals = async_signal::Signals::new([
        async_signal::Signal::Term,
        async_signal::Signal::Hup,
        async_signal::Signal::Int,
    ]);
    let stopped = async {
        match signals {
            Ok(mut s) => match s.next().await {
                Some(Ok(sig)) => 128 + sig as i32,
                _ => future::pending().await,
            },
            Err(_) => future::pending().await,
        }
    };
    future::or(streams(stream, early, &plan), stopped).await
}

/// The container to use, from the agent's `GET /pods`.
async fn default_container(
    addr: SocketAddr,
    plan: &Plan,
) -> Result<(String, Option<String>), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(addr, e))?;
    let req = format!("GET /pods HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| unreachable(addr, e))?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .await
        .map_err(|e| format!("reading the node's pods from {addr}: {e}"))?;
    let (status, body) =
        split_response(&all).ok_or_else(|| format!("{addr} did not answer GET /pods with HTTP"))?;
    if status != 200 {
        return Err(exec::http_error(status, body));
    }
    let pods: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the node's pods from {addr} are not JSON: {e}"))?;
    exec::choose_container(&pods, &plan.namespace, &plan.pod)
}

/// A whole response's status and body (read to the end of the connection).
fn split_response(all: &[u8]) -> Option<(u16, &[u8])> {
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut hs);
    match r.parse(all) {
        Ok(httparse::Status::Complete(n)) => Some((r.code?, &all[n..])),
        _ => None,
    }
}

/// Connects and upgrades to WebSocket; the stream and the bytes read past the 101's head.
async fn upgrade(addr: SocketAddr, target: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("edged: {}", unreachable(addr, e)))?;
    let key = crate::api::base64::encode(&fastrand::u128(..).to_le_bytes());
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("edged: {}", unreachable(addr, e)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("edged: reading the upgrade's answer from {addr}: {e}"))?;
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut hs);
        let parsed = r.parse(&buf);
        match parsed {
            Ok(httparse::Status::Complete(len)) => {
                let code = r.code.unwrap_or(0);
                let header = |name: &str| {
                    r.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                if code != 101 {
                    // The body: what the server sent, to its end.
                    let length = header("content-length").and_then(|l| l.parse::<usize>().ok());
                    let mut body = buf[len..].to_vec();
                    while length.is_none_or(|l| body.len() < l) {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => body.extend_from_slice(&chunk[..n]),
                        }
                    }
                    return Err(exec::http_error(code, &body));
                }
                if header("sec-websocket-accept").as_deref()
                    != Some(wsframe::accept_key(&key).as_str())
                {
                    return Err("edged: the kubelet API answered the upgrade with a wrong Sec-WebSocket-Accept".into());
                }
                if header("sec-websocket-protocol").as_deref() != Some(PROTOCOL) {
                    return Err(format!(
                        "edged: the kubelet API did not agree to {PROTOCOL} (it chose {:?}); is it an edged agent?",
                        header("sec-websocket-protocol")
                    ));
                }
                let rest = buf[len..].to_vec();
                return Ok((s, rest));
            }
            Ok(httparse::Status::Partial) if n > 0 && buf.len() < 16 * 1024 => continue,
            Ok(httparse::Status::Partial) => {
                return Err(format!(
                    "edged: {addr} ended or sent a head over 16 KiB before answering the upgrade"
                ))
            }
            Err(e) => return Err(format!("edged: {addr} answered with bad HTTP: {e}")),
        }
    }
}

fn mask() -> [u8; 4] {
    fastrand::u32(..).to_le_bytes()
}

/// A data message for `channel`.
fn data_frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(data.len() + 1);
    payload.push(channel);
    payload.extend_from_slice(data);
    wsframe::client_frame(opcode::BINARY, &payload, mask())
}

/// A resize message for the current window size (`None`: no terminal).
fn resize_frame() -> Option<Vec<u8>> {
    let (w, h) = term::window_size()?;
    let json = serde_json::json!({"Width": w, "Height": h}).to_string();
    Some(data_frame(4, json.as_bytes()))
}

/// Runs the streams until the server closes; the exit code.
async fn streams<S: AsyncRead + AsyncWrite + Unpin>(stream: S, early: Vec<u8>, plan: &Plan) -> i32 {
    let (mut rd, mut wr) = smol::io::split(stream);
    let (out_tx, out_rx) = async_channel::bounded::<Vec<u8>>(16);
    let writer = async {
        while let Ok(f) = out_rx.recv().await {
            if wr.write_all(&f).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    };
    let stdin = async {
        if !plan.stdin {
            return;
        }
        let mut input = smol::Unblock::new(std::io::stdin());
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            match input.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out_tx.send(data_frame(0, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The end of input: the v5 close signal for channel 0.
        let close = wsframe::client_frame(opcode::BINARY, &[255, 0], mask());
        let _ = out_tx.send(close).await;
    };
    let resize = async {
        if !plan.tty {
            return;
        }
        if let Some(f) = resize_frame() {
            let _ = out_tx.send(f).await;
        }
        let Ok(mut winch) = async_signal::Signals::new([async_signal::Signal::Winch]) else {
            return;
        };
        while winch.next().await.is_some() {
            if let Some(f) = resize_frame() {
                if out_tx.send(f).await.is_err() {
                    return;
                }
            }
        }
    };
    let reader = async {
        let mut stdout = smol::Unblock::new(std::io::stdout());
        let mut stderr = smol::Unblock::new(std::io::stderr());
        let mut dec = Decoder::new(MAX_MESSAGE);
        dec.feed(&early);
        let mut error: Option<Vec<u8>> = None;
        let mut buf = vec![0u8; 64 * 1024];
        'read: loop {
            loop {
                let msg = match dec.next_message() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("edged: the kubelet API broke the protocol: {e}");
                        break 'read;
                    }
                };
                match msg.opcode {
                    opcode::CLOSE => {
                        let _ = out_tx
                            .send(wsframe::client_frame(
                                opcode::CLOSE,
                                &wsframe::close_payload(close::NORMAL, ""),
                                mask(),
                            ))
                            .await;
                        break 'read;
                    }
                    opcode::PING => {
                        let _ = out_tx
                            .send(wsframe::client_frame(opcode::PONG, &msg.payload, mask()))
                            .await;
                    }
                    opcode::PONG => {}
                    _ => match msg.payload.split_first() {
                        Some((1, data)) if !data.is_empty() => {
                            let _ = stdout.write_all(data).await;
                            let _ = stdout.flush().await;
                        }
                        Some((2, data)) if !data.is_empty() => {
                            let _ = stderr.write_all(data).await;
                            let _ = stderr.flush().await;
                        }
                        Some((3, data)) if !data.is_empty() => {
                            error.get_or_insert_with(Vec::new).extend_from_slice(data)
                        }
                        _ => {}
                    },
                }
            }
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dec.feed(&buf[..n]),
            }
        }
        let _ = stdout.flush().await;
        error
    };
    let error = future::or(reader, async {
        future::zip(writer, future::zip(stdin, resize)).await;
        future::pending().await
    })
    .await;
    // The close answer may not go out: the server also ends when this process leaves.
    let (code, message) = exec::exit_status(error.as_deref());
    if let Some(m) = message {
        eprintln!("{m}");
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_the_api_is() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(
            api_address(lo, 10350).unwrap().to_string(),
            "127.0.0.1:10350"
        );
        // Beyond loopback (0.0.0.0 included) the agent serves TLS only.
        assert!(api_address(IpAddr::from([0, 0, 0, 0]), 1).is_err());
        assert!(api_address(lo, 0).unwrap_err().contains("--port 0"));
        assert!(api_address(IpAddr::from([10, 0, 0, 1]), 10350)
            .unwrap_err()
            .contains("TLS"));
    }

    #[test]
    fn responses_split() {
        assert_eq!(
            split_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n"),
            Some((404, &b"no\n"[..]))
        );
        assert_eq!(split_response(b"garbage"), None);
    }
}
