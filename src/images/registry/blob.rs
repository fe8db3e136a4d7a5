//! Blob downloads made for weak links: streamed to a `.part` file beside the store (never
//! whole in memory), resumed with `Range` where the last try (or the last agent) stopped,
//! checked against the `Content-Range` answered, verified by size and digest, and retried with
//! back-off and jitter when the link fails, stalls (no byte for the progress deadline: the
//! client's per-read timeout), or trickles below the minimum rate over its window.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ring::digest::{Context, SHA256};

use crate::images::digest;
use crate::images::error::{ErrorKind, ImageError, IoContext, Result};
use crate::images::oci::Descriptor;
use crate::images::sys;

use super::client::{self, Client};
use super::endpoint::Endpoint;

/// A minimum transfer rate over a window (`--image-pull-min-rate 1KiB/s` over 1m).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second.
    pub bytes_per_sec: u64,
    /// Over how long the rate is measured.
    pub window: Duration,
}

/// How failed tries are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// The first wait.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
    /// Tries in a row without a byte of progress before the pull fails.
    pub max_failures: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            max_failures: 8,
        }
    }
}

impl Retry {
    /// The wait after the `failures`-th failure in a row (1-based): `base` doubling up to
    /// `cap`, then a random part taken off (`jitter` in [0, 1): up to half of it), so pulls
    /// cut together do not come back together.
    pub fn wait(&self, failures: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.cap);
        exp.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
    }
}

/// Bytes seen over time, to tell a trickle from progress.
#[derive(Debug)]
pub struct RateWindow {
    min: MinRate,
    start: Instant,
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    /// A window starting at `now` with 0 bytes.
    pub fn new(min: MinRate, now: Instant) -> RateWindow {
        let mut samples = VecDeque::new();
        samples.push_back((now, 0));
        RateWindow {
            min,
            start: now,
            samples,
        }
    }

    /// Records `total` bytes at `now`; `Some(rate)` (bytes/s) when the last full window
    /// brought less than the minimum.
    pub fn record(&mut self, now: Instant, total: u64) -> Option<u64> {
        if self
            .samples
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(500))
        {
            self.samples.push_back((now, total));
        }
        // Keep one sample at or before the window's start.
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= self.min.window)
        {
            self.samples.pop_front();
        }
        if now.duration_since(self.start) < self.min.window {
            return None;
        }
        let (t0, b0) = *self.samples.front()?;
        let secs = now.duration_since(t0).as_secs_f64().max(0.001);
        let rate = (total.saturating_sub(b0) as f64 / secs) as u64;
        (rate < self.min.bytes_per_sec).then_some(rate)
    }
}

/// `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`): `(start, end, total)`.
pub fn parse_content_range(h: &str) -> Option<(u64, u64, Option<u64>)> {
    let r = h.trim().strip_prefix("bytes ")?;
    let (range, total) = r.split_once('/')?;
    let (s, e) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((s.parse().ok()?, e.parse().ok()?, total))
}

/// Where a blob is fetched from and what it must be.
pub struct Job<'a> {
    /// The client.
    pub client: &'a Client,
    /// The endpoint serving the image.
    pub ep: &'a Endpoint,
    /// The reference's registry.
    pub domain: &'a str,
    /// The repository.
    pub repo: &'a str,
    /// The blob.
    pub desc: &'a Descriptor,
}

/// Counters a download reports to.
pub struct Meter<'a> {
    /// Bytes received over the network (all blobs of a pull).
    pub fetched: &'a AtomicU64,
    /// Set to stop (another blob failed).
    pub cancel: &'a AtomicBool,
    /// Called with (bytes on disk, total) as they grow.
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
}

/// A try's failure, and whether it had moved the blob on.
struct Failed {
    err: ImageError,
    progressed: bool,
}

impl From<ImageError> for Failed {
    fn from(err: ImageError) -> Self {
        Failed {
            err,
            progressed: false,
        }
    }
}

/// The path a complete blob has in `dir`.
pub fn blob_file(dir: &Path, d: &str) -> PathBuf {
    dir.join(digest::hex_of(d))
}

/// Downloads the blob into `dir/<hex>` (through `dir/<hex>.part`, kept between tries and
/// runs) and returns that path. A blob already complete there is not fetched again.
pub fn download(job: &Job, dir: &Path, meter: &Meter) -> Result<PathBuf> {
    let d = &job.desc.digest;
    if !digest::is_sha256(d) {
        return Err(ImageError::invalid(
            d,
            "pull blob",
            "only sha256 digests are supported",
        ));
    }
    let done = blob_file(dir, d);
    let part = dir.join(format!("{}.part", digest::hex_of(d)));
    // One download of a blob at a time (two pulls of one image, or of shared layers): the
    // part file's lock, taken on the file the path still names (a finished download renames
    // it away while another waits for its lock).
    let mut file = loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&part)
            .ctx(part.display(), "pull blob")?;
        sys::flock(file.as_raw_fd(), true).ctx(part.display(), "pull blob")?;
        if done.metadata().is_ok_and(|m| m.len() == job.desc.size) {
            if same_file(&file, &part) {
                let _ = fs::remove_file(&part);
            }
            (meter.progress)(job.desc.size, job.desc.size);
            return Ok(done);
        }
        if same_file(&file, &part) {
            break file;
        }
    };
    let retry = job.client.options().retry;
    let mut hashed: Option<(Context, u64)> = None;
    let mut failures = 0;
    loop {
        if meter.cancel.load(Ordering::Relaxed) {
            return Err(ImageError::new(
                d,
                "pull blob",
                ErrorKind::Network,
                "cancelled: another blob of the pull failed",
            ));
        }
        match attempt(job, &mut file, &part, &mut hashed, meter) {
            Ok(()) => break,
            Err(f) => {
                if f.progressed {
                    failures = 0;
                }
                if f.err.kind != ErrorKind::Network {
                    return Err(f.err);
                }
                failures += 1;
                if failures > retry.max_failures {
                    return Err(f.err.context(format!(
                        "{} tries in a row without progress",
                        retry.max_failures + 1
                    )));
                }
                let wait = retry.wait(failures, fastrand::f64());
                let have = file.metadata().map_or(0, |m| m.len());
                tracing::warn!(blob = %d, have, size = job.desc.size, retry_in = ?wait, "blob download interrupted, resuming: {}", f.err);
                std::thread::sleep(wait);
            }
        }
    }
    file.sync_all().ctx(part.display(), "pull blob")?;
    fs::rename(&part, &done).ctx(done.display(), "pull blob")?;
    Ok(done)
}

/// One try: from what the part file has to the end, or a failure.
fn attempt(
    job: &Job,
    file: &mut File,
    part: &Path,
    hashed: &mut Option<(Context, u64)>,
    meter: &Meter,
) -> std::result::Result<(), Failed> {
    let d = &job.desc.digest;
    let size = job.desc.size;
    let io = |e: std::io::Error| {
        Failed::from(ImageError::io(part.display().to_string(), "pull blob", &e))
    };
    let mut have = file.metadata().map_err(io)?.len();
    if have > size {
        file.set_len(0).map_err(io)?;
        have = 0;
    }
    // The hash must cover what the file has: after a restart, read it again.
    if hashed.as_ref().is_none_or(|(_, n)| *n != have) {
        let mut ctx = Context::new(&SHA256);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut r = (&*file).take(have);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = r.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        *hashed = Some((ctx, have));
    }
    if have < size {
        fetch_rest(job, file, hashed, have, meter, part)?;
    }
    let (ctx, n) = hashed
        .take()
        .ok_or_else(|| Failed::from(ImageError::invalid(d, "pull blob", "internal: no hash")))?;
    let got = format_hash(ctx.finish().as_ref());
    if n != size || &got != d {
        // Start over next time: what is on disk is not the blob.
        let _ = file.set_len(0);
        return Err(Failed::from(ImageError::new(
            d,
            "pull blob",
            ErrorKind::Invalid,
            format!("digest mismatch: got {got} ({n} bytes of {size}): the registry or a proxy served other content"),
        )));
    }
    Ok(())
}

fn fetch_rest(
    job: &Job,
    file: &mut File,
    hashed: &mut Option<(Context, u64)>,
    mut have: u64,
    meter: &Meter,
    part: &Path,
) -> std::result::Result<(), Failed> {
    let d = &job.desc.digest;
    let size = job.desc.size;
    let mut headers = Vec::new();
    if have > 0 {
        headers.push(("Range", format!("bytes={have}-")));
    }
    let resp = job.client.get(
        job.ep,
        job.domain,
        job.repo,
        &format!("blobs/{d}"),
        &headers,
    )?;
    let status = resp.status().as_u16();
    let io = |e: std::io::Error| {
        Failed::from(ImageError::io(part.display().to_string(), "pull blob", &e))
    };
    match status {
        206 => {
            let cr = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            match cr {
                Some((start, _, total)) if start == have && total.is_none_or(|t| t == size) => {}
                other => {
                    file.set_len(0).map_err(io)?;
                    *hashed = None;
                    return Err(Failed::from(ImageError::new(
                        d,
                        "pull blob",
                        ErrorKind::Network,
                        format!("asked for bytes {have}- of {size}, the server answered Content-Range {other:?}: starting the blob over"),
                    )));
                }
            }
        }
        200 => {
            if have > 0 {
                // The server ignores ranges: take the whole blob again.
                file.set_len(0).map_err(io)?;
                have = 0;
                *hashed = Some((Context::new(&SHA256), 0));
            }
        }
        416 => {
            file.set_len(0).map_err(io)?;
            *hashed = None;
            return Err(Failed::from(ImageError::new(
                d,
                "pull blob",
                ErrorKind::Network,
                "the server refused the range (416): starting the blob over",
            )));
        }
        s => {
            let kind = match s {
                404 => ErrorKind::NotFound,
                403 => ErrorKind::Auth,
                408 | 429 => ErrorKind::Network,
                s if s >= 500 => ErrorKind::Network,
                _ => ErrorKind::Invalid,
            };
            let msg = client::error_text(resp);
            return Err(Failed::from(ImageError::new(d, "pull blob", kind, msg)));
        }
    }
    file.seek(SeekFrom::Start(have)).map_err(io)?;
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; 64 << 10];
    let started = have;
    let mut window = job
        .client
        .options()
        .min_rate
        .map(|m| RateWindow::new(m, Instant::now()));
    let progressed = |have: u64| have > started;
    loop {
        if meter.cancel.load(Ordering::Relaxed) {
            return Err(Failed {
                err: ImageError::new(d, "pull blob", ErrorKind::Network, "cancelled"),
                progressed: progressed(have),
            });
        }
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let timed_out = e.kind() == std::io::ErrorKind::TimedOut
                    || e.get_ref()
                        .and_then(|i| i.downcast_ref::<ureq::Error>())
                        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
                let what = if timed_out {
                    format!(
                        "no byte for {:?} (--image-pull-progress-deadline)",
                        job.client.options().progress_deadline
                    )
                } else {
                    e.to_string()
                };
                return Err(Failed {
                    err: ImageError::new(
                        d,
                        "pull blob",
                        ErrorKind::Network,
                        format!("at {have} of {size} bytes: {what}"),
                    ),
                    progressed: progressed(have),
                });
            }
        };
        if n == 0 {
            break;
        }
        meter.fetched.fetch_add(n as u64, Ordering::Relaxed);
        if have + n as u64 > size {
            file.set_len(0).map_err(io)?;
            *hashed = None;
            return Err(Failed::from(ImageError::invalid(
                d,
                "pull blob",
                format!("the registry sent more than the {size} bytes the manifest gives"),
            )));
        }
        file.write_all(&buf[..n]).map_err(|e| Failed {
            err: ImageError::io(part.display().to_string(), "pull blob", &e),
            progressed: false,
        })?;
        if let Some((ctx, count)) = hashed.as_mut() {
            ctx.update(&buf[..n]);
            *count += n as u64;
        }
        have += n as u64;
        (meter.progress)(have, size);
        if let Some(w) = window.as_mut() {
            if let Some(rate) = w.record(Instant::now(), have - started) {
                let m = job.client.options().min_rate.unwrap_or(MinRate {
                    bytes_per_sec: 0,
                    window: Duration::ZERO,
                });
                return Err(Failed {
                    err: ImageError::new(d, "pull blob", ErrorKind::Network, format!(
                        "at {have} of {size} bytes: {rate} B/s over the last {:?}, below --image-pull-min-rate {} B/s: reconnecting",
                        m.window, m.bytes_per_sec
                    )),
                    progressed: progressed(have),
                });
            }
        }
        if have == size {
            break;
        }
    }
    if have < size {
        return Err(Failed {
            err: ImageError::new(
                d,
                "pull blob",
                ErrorKind::Network,
                format!("the connection closed at {have} of {size} bytes"),
            ),
            progressed: progressed(have),
        });
    }
    Ok(())
}

/// Removes downloads (partial or complete) untouched for `max_age` that no pull holds: a
/// pull given up long ago. Partial blobs younger than that stay, to be resumed.
pub fn clean_stale(dir: &Path, max_age: Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if !old {
            continue;
        }
        let free = File::open(&p)
            .ok()
            .is_some_and(|f| matches!(sys::flock(f.as_raw_fd(), false), Ok(true)));
        if free {
            tracing::info!(path = %p.display(), "removing a download untouched for {max_age:?}");
            let _ = fs::remove_file(&p);
        }
    }
}

/// True when `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn format_hash(bytes: &[u8]) -> String {
    let mut s = String::from("sha256:");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let r = Retry {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            max_failures: 5,
        };
        assert_eq!(r.wait(1, 0.0), Duration::from_secs(1));
        assert_eq!(r.wait(2, 0.0), Duration::from_secs(2));
        assert_eq!(r.wait(5, 0.0), Duration::from_secs(16));
        assert_eq!(r.wait(6, 0.0), Duration::from_secs(30));
        assert_eq!(r.wait(60, 0.0), Duration::from_secs(30));
        assert_eq!(r.wait(2, 0.999_999).as_millis(), 1000);
        assert!(r.wait(3, 0.5) < r.wait(3, 0.0));
    }

    #[test]
    fn a_trickle_is_stalled_after_a_full_window() {
        let min = MinRate {
            bytes_per_sec: 1024,
            window: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        let mut w = RateWindow::new(min, t0);
        // 100 B/s: nothing said before the window is full, stalled after.
        let mut stalled = None;
        for s in 1..=70u64 {
            if let Some(r) = w.record(t0 + Duration::from_secs(s), s * 100) {
                stalled = Some((s, r));
                break;
            }
        }
        assert_eq!(stalled, Some((60, 100)));
        // 2 KiB/s is fine however long.
        let mut w = RateWindow::new(min, t0);
        for s in 1..=300u64 {
            assert_eq!(w.record(t0 + Duration::from_secs(s), s * 2048), None);
        }
        // A fast start then a trickle: caught one window after the trickle began.
        let mut w = RateWindow::new(min, t0);
        let mut total = 0;
        let mut when = None;
        for s in 1..=200u64 {
            total += if s <= 100 { 10_000 } else { 10 };
            if w.record(t0 + Duration::from_secs(s), total).is_some() {
                when = Some(s);
                break;
            }
        }
        let when = when.unwrap();
        assert!((150..=161).contains(&when), "{when}");
    }

    #[test]
    fn stale_downloads_go_unless_fresh_or_held() {
        let d = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(10 * 24 * 3600);
        let mk = |name: &str, aged: bool| {
            let f = File::create(d.path().join(name)).unwrap();
            if aged {
                f.set_modified(old).unwrap();
            }
            f
        };
        drop(mk("old.part", true));
        drop(mk("fresh.part", false));
        let held = mk("held.part", true);
        sys::flock(held.as_raw_fd(), true).unwrap();
        clean_stale(d.path(), Duration::from_secs(7 * 24 * 3600));
        let mut left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["fresh.part", "held.part"]);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, 9, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
