//! Giving freed heap memory back to the kernel after bursts.
//!
//! glibc's malloc keeps memory freed inside its heaps (it only trims the top of the main
//! heap): after a burst (2,000 ConfigMaps from the manifest directory, measured 12 MB RSS at
//! rest, 97 MB after the burst and still 97 MB once they were all deleted) the agent would keep
//! its peak for good. `malloc_trim` returns every free page (the same run: 28 MB). musl's
//! malloc (the device builds) returns freed memory by itself and has no `malloc_trim`.

//!
//! glibc also gives each thread that allocates under contention its own arena (up to 8 per
//! core), each a heap of its own whose free pages stay: at 100 pods the agent's RSS was 16.5
//! MiB, 13.3 MiB with one arena (5.2 MiB of arena heaps gone, the main heap 1.9 MiB bigger).
//! [`limit_arenas`] sets that at start; each thread's tcache still serves small allocations
//! without the arena's lock.
//!
//! It also turns glibc's fastbins off (`M_MXFAST` 0): with fastbins, every request above the
//! small sizes (a pod's sync, boxed while it runs, is about 16 KiB; a directory stream's
//! buffer 32 KiB) first consolidates every freed small chunk, `malloc_consolidate` at 9-10 %
//! of the agent's CPU at rest with 100 pods (`perf record`, issue 19). The tcache in front
//! keeps small allocations as fast; freed chunks are merged as they are freed.

use std::time::Duration;

/// The malloc arenas the agent allows (see the module's docs).
pub const ARENAS: i32 = 1;

/// Caps glibc's malloc arenas at [`ARENAS`] and turns its fastbins off (see the module's
/// docs); call before other threads start. Nothing to do elsewhere (musl has one heap).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter under the allocator's lock; called
        // at start, before any other thread allocates.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
            libc::mallopt(libc::M_MXFAST, 0);
        }
    }
}

/// How often [`run`] trims.
pub const TRIM_PERIOD: Duration = Duration::from_secs(30);

/// Returns the heap's free pages to the kernel. `true` when memory was released (always
/// `false` where the C library has no `malloc_trim`).
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes the allocator's own locks and only releases free pages;
        // it is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every `period` (on a blocking thread: it walks the allocator's free lists).
pub async fn run(period: Duration) {
    loop {
        smol::Timer::after(period).await;
        if smol::unblock(trim).await {
            tracing::debug!("freed heap memory returned to the kernel");
        }
    }
}

#[cfg(test)]
mod tests {
    /// 20 MB of small allocations (below malloc's mmap threshold: they live in the heap), all
    /// freed but one kept past them: glibc keeps the pages until the trim returns them.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn trim_returns_freed_memory() {
        let v: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1000]).collect();
        let keep = vec![1u8; 100];
        drop(v);
        assert!(super::trim(), "nothing returned after freeing 20 MB");
        drop(keep);
    }
}
