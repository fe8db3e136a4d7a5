//! The bound on the blocking pool (`smol::unblock`, the `blocking` crate): at most
//! [`REST_THREADS`] threads for short blocking work, plus one for each long wait in progress.
//!
//! Short work (shim RPCs, LMDB transactions, file reads, volume set-up) shares the bound. A
//! call that waits long — a stop's grace period, an exec's or a probe's wait for its command,
//! an image pull — holds a [`LongWait`] for that time: the bound is one higher while it lasts,
//! so long waits queue neither the short work nor each other (100 pods stopping at once with a
//! 30 s grace stop in about one grace, not 100 / bound graces). When they end the bound comes
//! back down and the pool's threads above it end after 500 ms idle. Unbounded (the crate's
//! default of 500), blocking 1.7 never ends a thread, so every burst's threads stayed for good
//! (about 50 at 100 pods: BENCHMARKS.md finding 6).

use std::num::NonZeroUsize;
use std::sync::Mutex;

/// Blocking threads for short work. The agent's short blocking calls take microseconds to a
/// few milliseconds (an RPC to a local shim, an fsync'd LMDB write, which LMDB serialises
/// anyway); six keep two cores busy while some wait on a disk, and make the agent's threads
/// at rest 10 (main, the async-io reactor, the shim events server, the log copier, the pool).
pub const REST_THREADS: usize = 6;

/// The pool's base bound ([`set_base`]) and the long waits in progress.
static STATE: Mutex<(usize, usize)> = Mutex::new((REST_THREADS, 0));

fn apply(base: usize, long: usize) {
    if let Some(n) = NonZeroUsize::new(base + long) {
        blocking::set_max_blocking_threads(n);
    }
}

/// Sets the pool's bound for short work (`BLOCKING_MAX_THREADS` in the environment, else
/// [`REST_THREADS`]) before the pool's first use.
pub fn init() {
    let base = std::env::var("BLOCKING_MAX_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(REST_THREADS);
    set_base(base);
}

/// Sets the bound for short work to `base` (at least 1).
pub fn set_base(base: usize) {
    let mut s = STATE.lock().unwrap_or_else(|p| p.into_inner());
    s.0 = base.max(1);
    apply(s.0, s.1);
}

/// The bound now: the base plus the long waits in progress.
pub fn bound() -> usize {
    let s = STATE.lock().unwrap_or_else(|p| p.into_inner());
    s.0 + s.1
}

/// A long wait on a pool thread: while it lives, the pool's bound is one higher. Take it
/// right before the wait, on the pool thread that waits.
pub struct LongWait(());

impl LongWait {
    /// Starts a long wait.
    pub fn begin() -> LongWait {
        {
            let mut s = STATE.lock().unwrap_or_else(|p| p.into_inner());
            s.1 += 1;
            apply(s.0, s.1);
        }
        // The pool grows when work is queued: queued work waiting for a thread gets the
        // new one now, not at the next call.
        blocking::unblock(|| ()).detach();
        LongWait(())
    }
}

impl Drop for LongWait {
    fn drop(&mut self) {
        let mut s = STATE.lock().unwrap_or_else(|p| p.into_inner());
        s.1 = s.1.saturating_sub(1);
        apply(s.0, s.1);
    }
}
