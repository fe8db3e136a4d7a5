//! A fault-injecting TCP proxy on loopback, between edged and a test registry: it counts
//! the bytes it passes from the registry, and on request cuts a connection once a number of
//! bytes have passed, stalls one, trickles one below a rate, refuses connections for a while,
//! or caps its rate (a slow link).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to do to the traffic.
#[derive(Default)]
pub struct Faults {
    /// Cut the connection carrying the byte past this total (once).
    pub cut_at: Option<u64>,
    /// From this total on, trickle that connection at `trickle_rate` B/s until the client
    /// gives it up (once).
    pub trickle_at: Option<u64>,
    /// The trickle's rate.
    pub trickle_rate: u64,
    /// From this total on, the connection carrying it goes silent (no byte, not closed) for
    /// 30 s (once).
    pub stall_at: Option<u64>,
    /// Close every connection at once until then.
    pub refuse_until: Option<Instant>,
    /// Cap the rate of every connection (B/s).
    pub cap_rate: Option<u64>,
}

/// A running proxy.
pub struct Proxy {
    /// `127.0.0.1:PORT` to give edged.
    pub addr: String,
    /// Bytes passed from the registry to edged.
    pub down: Arc<AtomicU64>,
    /// Connections accepted.
    pub conns: Arc<AtomicU64>,
    /// Connections refused.
    pub refused: Arc<AtomicU64>,
    /// The faults, changeable while it runs.
    pub faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`).
    pub fn start(upstream: &str, faults: Faults) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let p = Proxy {
            addr,
            down: Arc::default(),
            conns: Arc::default(),
            refused: Arc::default(),
            faults: Arc::new(Mutex::new(faults)),
            stop: Arc::default(),
        };
        let (down, conns, refused, faults, stop) = (
            p.down.clone(),
            p.conns.clone(),
            p.refused.clone(),
            p.faults.clone(),
            p.stop.clone(),
        );
        let upstream = upstream.to_string();
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let c = match l.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = c.set_nonblocking(false);
                let refuse = faults
                    .lock()
                    .unwrap()
                    .refuse_until
                    .is_some_and(|t| Instant::now() < t);
                if refuse {
                    refused.fetch_add(1, Ordering::Relaxed);
                    let _ = c.shutdown(Shutdown::Both);
                    continue;
                }
                conns.fetch_add(1, Ordering::Relaxed);
                let Ok(u) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (c2, u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
                std::thread::spawn(move || pump_up(c2, u2));
                let (down, faults, stop) = (down.clone(), faults.clone(), stop.clone());
                std::thread::spawn(move || pump_down(u, c, down, faults, stop));
            }
        });
        p
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pump_up(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn pump_down(
    mut from: TcpStream,
    mut to: TcpStream,
    down: Arc<AtomicU64>,
    faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = [0u8; 16 << 10];
    let mut trickling = false;
    let started = Instant::now();
    let mut sent: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (chunk, cap) = {
            let mut f = faults.lock().unwrap();
            let total = down.load(Ordering::Relaxed);
            if f.stall_at.is_some_and(|t| total >= t) {
                f.stall_at = None;
                drop(f);
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                break;
            }
            if !trickling && f.trickle_at.is_some_and(|t| total >= t) {
                trickling = true;
            }
            let chunk = if trickling {
                (f.trickle_rate as usize / 10).clamp(1, buf.len())
            } else if let Some(c) = f.cut_at {
                (c.saturating_sub(total) as usize).clamp(1, buf.len())
            } else {
                buf.len()
            };
            (chunk, f.cap_rate)
        };
        let n = match from.read(&mut buf[..chunk]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let total = down.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        sent += n as u64;
        {
            let mut f = faults.lock().unwrap();
            if f.cut_at.is_some_and(|c| total >= c) {
                f.cut_at = None;
                drop(f);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            if trickling {
                f.trickle_at = None;
            }
        }
        if trickling {
            std::thread::sleep(Duration::from_millis(100));
        } else if let Some(cap) = cap {
            let due = Duration::from_secs_f64(sent as f64 / cap as f64);
            if let Some(w) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(w);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
