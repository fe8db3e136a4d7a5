//! The clock seam: what the pod worker, PLEG, the prober and the status manager read the
//! time from and wait on. The agent runs on [`SystemClock`]; unit tests run on a
//! [`ManualClock`] they move forward by hand, so a 5-minute back-off or a probe period is
//! waited out in microseconds and without a real sleep.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

/// A wait on a [`Clock`] (local: the agent's tasks live on a local executor).
pub type Sleep = Pin<Box<dyn Future<Output = ()>>>;

/// A source of time: the monotonic and wall clocks, and waits on them.
pub trait Clock: Send + Sync {
    /// Now, on the monotonic clock.
    fn now_mono(&self) -> Instant;
    /// Now, on the wall clock.
    fn now_wall(&self) -> SystemTime;
    /// A future ready once `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> Sleep;
}

/// A clock shared by the components that read it.
pub type SharedClock = Arc<dyn Clock>;

/// The real clocks (`Instant::now`, `SystemTime::now`, `smol::Timer`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The real clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now_mono(&self) -> Instant {
        Instant::now()
    }
    fn now_wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep(&self, d: Duration) -> Sleep {
        Box::pin(async move {
            smol::Timer::after(d).await;
        })
    }
}

#[derive(Debug)]
struct Manual {
    /// Time moved on since the clock was made.
    elapsed: Duration,
    /// Sleeps waiting: (their id, when they are due in `elapsed` terms, their waker).
    timers: Vec<(u64, Duration, Waker)>,
    next_id: u64,
}

/// A clock that moves only when told ([`ManualClock::advance`]); its sleeps end when it is
/// moved past their deadline. Starts at the real now.
#[derive(Clone, Debug)]
pub struct ManualClock {
    mono0: Instant,
    wall0: SystemTime,
    inner: Arc<Mutex<Manual>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at the real now.
    pub fn new() -> Self {
        ManualClock {
            mono0: Instant::now(),
            wall0: SystemTime::now(),
            inner: Arc::new(Mutex::new(Manual {
                elapsed: Duration::ZERO,
                timers: Vec::new(),
                next_id: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Manual> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How far the clock has been moved.
    pub fn elapsed(&self) -> Duration {
        self.lock().elapsed
    }

    /// Moves the clock on by `d` and wakes the sleeps due by then.
    pub fn advance(&self, d: Duration) {
        let due: Vec<Waker> = {
            let mut m = self.lock();
            m.elapsed += d;
            let now = m.elapsed;
            let (due, keep): (Vec<_>, Vec<_>) =
                m.timers.drain(..).partition(|(_, at, _)| *at <= now);
            m.timers = keep;
            due.into_iter().map(|(_, _, w)| w).collect()
        };
        for w in due {
            w.wake();
        }
    }

    /// How long until the earliest pending sleep is due (`None`: nothing sleeps).
    pub fn next_deadline(&self) -> Option<Duration> {
        let m = self.lock();
        m.timers
            .iter()
            .map(|(_, at, _)| at.saturating_sub(m.elapsed))
            .min()
    }

    /// How many sleeps wait on the clock now (polled, not yet due, not dropped): a task
    /// parked on its timer is idle, which tests use to know their tasks are all waiting.
    pub fn sleepers(&self) -> usize {
        self.lock().timers.len()
    }

    /// The clock as an `Arc<dyn Clock>` (the same clock: advancing `self` moves it).
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now_mono(&self) -> Instant {
        self.mono0 + self.elapsed()
    }
    fn now_wall(&self) -> SystemTime {
        self.wall0 + self.elapsed()
    }
    fn sleep(&self, d: Duration) -> Sleep {
        let mut m = self.lock();
        let at = m.elapsed.saturating_add(d);
        m.next_id += 1;
        Box::pin(ManualSleep {
            clock: self.clone(),
            at,
            id: m.next_id,
        })
    }
}

struct ManualSleep {
    clock: ManualClock,
    at: Duration,
    id: u64,
}

impl Future for ManualSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut m = self.clock.lock();
        let id = self.id;
        // One entry per sleep: a repoll replaces the waker it left before.
        m.timers.retain(|(i, _, _)| *i != id);
        if m.elapsed >= self.at {
            return Poll::Ready(());
        }
        m.timers.push((id, self.at, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        let id = self.id;
        self.clock.lock().timers.retain(|(i, _, _)| *i != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_sleep_ends_when_the_clock_passes_it() {
        let clock = ManualClock::new();
        let (mono, wall) = (clock.now_mono(), clock.now_wall());
        let mut sleep = clock.sleep(Duration::from_secs(10));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.next_deadline(), Some(Duration::from_secs(10)));
        clock.advance(Duration::from_secs(9));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.next_deadline(), Some(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        assert_eq!(clock.sleepers(), 0);
        let other = clock.sleep(Duration::from_secs(1));
        let mut other = other;
        assert!(other.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.sleepers(), 1);
        drop(other);
        assert_eq!(clock.sleepers(), 0, "a dropped sleep waits no more");
        assert_eq!(clock.now_mono() - mono, Duration::from_secs(10));
        assert_eq!(
            clock.now_wall().duration_since(wall).ok(),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn advancing_wakes_the_waiting_task() {
        let clock = ManualClock::new();
        let c2 = clock.clone();
        let ex = smol::LocalExecutor::new();
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let d2 = done.clone();
        let task = ex.spawn(async move {
            c2.sleep(Duration::from_secs(300)).await;
            d2.set(true);
        });
        while ex.try_tick() {}
        assert!(!done.get());
        clock.advance(Duration::from_secs(299));
        while ex.try_tick() {}
        assert!(!done.get());
        clock.advance(Duration::from_secs(1));
        while ex.try_tick() {}
        assert!(done.get());
        drop(task);
    }
}
