//! `usageNanoCores`: the CPU rate between two samples of a cgroup's cumulative usage. As the
//! kubelet's CRI stats provider, the last sample of each cgroup is kept between scrapes of
//! `/stats/summary`; the first scrape of a cgroup has no rate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// A cumulative CPU usage read at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// When the usage was read.
    pub time: SystemTime,
    /// The cgroup's cumulative CPU usage, nanoseconds.
    pub usage_ns: u64,
}

/// The rate between `prev` and `cur` in nanocores (CPU nanoseconds per second): none without a
/// previous sample, when no time passed (or the clock went back), or when the counter went
/// back (another cgroup under the same name).
pub fn nano_cores(prev: Option<CpuSample>, cur: CpuSample) -> Option<u64> {
    let p = prev?;
    let dt = cur.time.duration_since(p.time).ok()?.as_nanos();
    if dt == 0 || cur.usage_ns < p.usage_ns {
        return None;
    }
    let used = (cur.usage_ns - p.usage_ns) as u128;
    u64::try_from(used * 1_000_000_000 / dt).ok()
}

/// The last CPU sample of each cgroup seen by the latest scrape.
#[derive(Debug, Default)]
pub struct RateCache {
    last: Mutex<HashMap<String, CpuSample>>,
}

impl RateCache {
    /// An empty cache.
    pub fn new() -> RateCache {
        RateCache::default()
    }

    /// The rate of `cgroup` since its last sample; keeps `cur` as the last when it is newer.
    pub fn update(&self, cgroup: &str, cur: CpuSample) -> Option<u64> {
        let mut m = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let prev = m.get(cgroup).copied();
        let rate = nano_cores(prev, cur);
        if prev.is_none_or(|p| cur.time > p.time) {
            m.insert(cgroup.to_string(), cur);
        }
        rate
    }

    /// Forgets every cgroup not in `seen` (gone pods and containers).
    pub fn retain(&self, seen: &std::collections::HashSet<String>) {
        let mut m = self.last.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|k, _| seen.contains(k));
    }

    /// How many cgroups it holds.
    pub fn len(&self) -> usize {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64, usage_ns: u64) -> CpuSample {
        CpuSample {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
            usage_ns,
        }
    }

    #[test]
    fn rates() {
        for (prev, cur, want) in [
            (None, at(1000, 5), None),
            // Half a core for two seconds.
            (
                Some(at(1000, 0)),
                at(3000, 1_000_000_000),
                Some(500_000_000),
            ),
            // Two cores busy.
            (Some(at(0, 0)), at(500, 1_000_000_000), Some(2_000_000_000)),
            (Some(at(1000, 7)), at(1000, 9), None),
            (Some(at(2000, 7)), at(1000, 9), None),
            (Some(at(1000, 9)), at(2000, 7), None),
            (Some(at(1000, 9)), at(2000, 9), Some(0)),
        ] {
            assert_eq!(nano_cores(prev, cur), want, "{prev:?} -> {cur:?}");
        }
    }

    #[test]
    fn cache_keeps_the_newest_and_forgets_the_gone() {
        let c = RateCache::new();
        assert_eq!(c.update("/a", at(1000, 0)), None);
        assert_eq!(c.update("/a", at(2000, 1_000_000_000)), Some(1_000_000_000));
        // An older sample does not replace the newer.
        assert_eq!(c.update("/a", at(1500, 0)), None);
        assert_eq!(c.update("/a", at(3000, 1_500_000_000)), Some(500_000_000));
        c.update("/b", at(1000, 0));
        assert_eq!(c.len(), 2);
        c.retain(&["/b".to_string()].into_iter().collect());
        assert_eq!(c.len(), 1);
        assert_eq!(c.update("/a", at(4000, 2_000_000_000)), None);
    }
}
