//! Image GC, as the kubelet's image GC manager (`pkg/kubelet/images/image_gc_manager.go`):
//! when the image filesystem is at or above `--image-gc-high-threshold` percent used
//! (`100 - available * 100 / capacity`), unused images go until it is at or under
//! `--image-gc-low-threshold`. Never-used images go first (by import time), then least
//! recently used first. An image a container uses (running or kept dead) is never removed,
//! nor one imported less than `--image-minimum-gc-age` ago. Each removal also prunes the
//! layers and blobs no image or container snapshot references any more, and usage is
//! measured again (shared layers free nothing, so image sizes are not summed).
//!
//! When GC cannot get under the high threshold the node is under disk pressure: GC leaves
//! the [`Marker`] (DiskPressure itself is [`crate::eviction::pressure`]'s), so image imports
//! (also `edged image import`, another process) refuse and the node's condition says so.

use crate::images::pressure::Marker;
use crate::images::ImageStore;
use crate::runtime::Runtime;
use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

/// The collection policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Percent used at or above which GC runs.
    pub high_percent: u8,
    /// Percent used GC frees down to.
    pub low_percent: u8,
    /// An image imported more recently than this is kept.
    pub min_age: Duration,
}

/// What GC needs to know of an image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageInfo {
    /// The image's id (`sha256:...`), as the runtime's containers name it.
    pub id: String,
    /// Its size on disk, bytes.
    pub size: u64,
    /// When a container last started from it (None: never, so it goes first).
    pub last_used: Option<SystemTime>,
    /// When it was imported (pulled or loaded).
    pub imported_at: SystemTime,
}

/// The images that may go, in the order they go: never used first (by import time), then
/// least recently used first (ties by import time), skipping images in use and images
/// younger than `min_age`.
pub fn candidates(
    images: &[ImageInfo],
    in_use: &HashSet<String>,
    min_age: Duration,
    now: SystemTime,
) -> Vec<String> {
    let mut c: Vec<&ImageInfo> = images
        .iter()
        .filter(|i| !in_use.contains(&i.id))
        .filter(|i| now.duration_since(i.imported_at).unwrap_or_default() >= min_age)
        .collect();
    // `None` sorts before any time: the kubelet's zero lastUsed.
    c.sort_by_key(|i| (i.last_used, i.imported_at));
    c.into_iter().map(|i| i.id.clone()).collect()
}

/// Percent of a filesystem used, as the kubelet computes it: `100 - available * 100 /
/// total`, rounded so that any use past a percent counts as that percent.
pub fn used_percent(total: u64, available: u64) -> u8 {
    if total == 0 {
        return 0;
    }
    let avail = available.min(total) as u128 * 100 / total as u128;
    100 - avail as u8
}

/// What one collection did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Percent used before and after.
    pub used_before: u8,
    /// Percent used after the collection.
    pub used_after: u8,
    /// Image ids removed, in order.
    pub removed: Vec<String>,
    /// Still at or above the high threshold: disk pressure.
    pub pressure: bool,
    /// The policy's thresholds, for messages.
    pub high_percent: u8,
    /// The low threshold: percent used GC frees down to.
    pub low_percent: u8,
    /// How long the pass took (for logs and figures).
    pub took: Duration,
}

/// One collection (see the module doc). Writes or clears the [`Marker`].
pub fn collect(images: &ImageStore, runtime: &dyn Runtime, policy: &Policy) -> Report {
    let start = Instant::now();
    let usage = |images: &ImageStore| images.usage().map(|u| used_percent(u.total, u.available));
    let mut report = Report {
        high_percent: policy.high_percent,
        low_percent: policy.low_percent,
        ..Report::default()
    };
    let mut used = match usage(images) {
        Ok(u) => u,
        Err(e) => {
            // Nothing known: keep whatever pressure state there was.
            tracing::warn!(error = %e, "image GC: cannot read disk usage");
            report.pressure = Marker::read(images.dir()).is_some();
            return report;
        }
    };
    report.used_before = used;
    report.used_after = used;
    if used < policy.high_percent {
        Marker::clear(images.dir());
        report.took = start.elapsed();
        return report;
    }
    // Under lasting pressure every pass finds the same: say it once, then at debug level.
    let was_pressure = Marker::read(images.dir()).is_some();
    if !was_pressure {
        tracing::info!(
            used_percent = used,
            high = policy.high_percent,
            low = policy.low_percent,
            "image GC: disk at or above the high threshold"
        );
    }
    let (after, removed) = free_down_to(images, runtime, policy.min_age, policy.low_percent, used);
    used = after;
    report.removed = removed;
    report.used_after = used;
    report.pressure = used >= policy.high_percent;
    if report.pressure {
        if !was_pressure || !report.removed.is_empty() {
            tracing::warn!(
                used_percent = used,
                high = policy.high_percent,
                "image GC cannot get under the high threshold: disk pressure, image imports refused"
            );
        }
        let old = Marker::read(images.dir());
        let new = Marker {
            used_percent: used,
            high_percent: policy.high_percent,
            low_percent: policy.low_percent,
            since: old
                .as_ref()
                .map(|p| p.since.clone())
                .unwrap_or_else(|| crate::api::rfc3339(SystemTime::now())),
        };
        // Unchanged: no write (edge devices run on flash).
        if old.as_ref() != Some(&new) {
            new.write(images.dir());
        }
    } else {
        if used > policy.low_percent {
            tracing::warn!(
                used_percent = used,
                low = policy.low_percent,
                "image GC could not free down to the low threshold"
            );
        }
        Marker::clear(images.dir());
    }
    report.took = start.elapsed();
    if report.removed.is_empty() {
        tracing::debug!(used_percent = used, "image GC pass removed nothing");
    } else {
        tracing::info!(
            removed = report.removed.len(),
            used_before = report.used_before,
            used_after = report.used_after,
            took_ms = report.took.as_millis() as u64,
            "image GC pass"
        );
    }
    report
}

/// Removes unused images in GC order until the image filesystem is at or under `target`
/// percent (from `used` now); the percent after, and the ids removed. No pressure marker is
/// touched: callers decide what the figures mean.
fn free_down_to(
    images: &ImageStore,
    runtime: &dyn Runtime,
    min_age: Duration,
    target: u8,
    mut used: u8,
) -> (u8, Vec<String>) {
    let usage = |images: &ImageStore| images.usage().map(|u| used_percent(u.total, u.available));
    let candidates = match in_use(runtime).and_then(|in_use| {
        let list = images
            .list()
            .map_err(|e| format!("cannot list images: {e}"))?;
        let secs = |s: u64| std::time::UNIX_EPOCH + Duration::from_secs(s);
        let infos: Vec<ImageInfo> = list
            .iter()
            .map(|i| ImageInfo {
                id: i.id.clone(),
                size: i.size,
                last_used: i.last_used.map(secs),
                imported_at: secs(i.imported_at),
            })
            .collect();
        Ok(candidates(&infos, &in_use, min_age, SystemTime::now()))
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "image GC: nothing removed");
            Vec::new()
        }
    };
    let mut removed = Vec::new();
    for id in candidates {
        if used <= target {
            break;
        }
        match images.remove(&id, false) {
            Ok(img) => {
                let name = img.names.first().map_or(img.id.as_str(), String::as_str);
                match images.prune_unreferenced() {
                    Ok(p) => {
                        tracing::info!(image = %name, id = %img.id, freed_bytes = p.bytes, "image GC removed an unused image")
                    }
                    Err(e) => {
                        tracing::warn!(image = %name, id = %img.id, error = %e, "image GC removed an image but cannot prune its layers")
                    }
                }
                removed.push(img.id);
            }
            // In use since the listing (a container was just created from it), or gone.
            Err(e) => tracing::warn!(id = %id, error = %e, "image GC: cannot remove"),
        }
        used = usage(images).unwrap_or(used);
    }
    (used, removed)
}

/// What a pull of about `need` bytes asks of image GC first, on a filesystem of `total` bytes
/// with `available` free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// The filesystem stays under the high threshold with the pull.
    Fits,
    /// Free down to this percent first (the low threshold less what the pull takes).
    FreeTo(u8),
    /// Even an empty image store would not hold it under the high threshold.
    TooBig,
}

/// Decides [`Room`] for a pull of `need` bytes (the kubelet frees to the low threshold; here
/// so that the pulled image lands at it).
pub fn room_for(total: u64, available: u64, need: u64, policy: &Policy) -> Room {
    if total == 0 || used_percent(total, available.saturating_sub(need)) < policy.high_percent {
        return Room::Fits;
    }
    let need_percent = (need as u128 * 100).div_ceil(total as u128);
    match u8::try_from(need_percent) {
        Ok(n) if n < policy.low_percent => Room::FreeTo(policy.low_percent - n),
        _ => Room::TooBig,
    }
}

/// Makes room for a pull of about `need` bytes (a pull that would take the image filesystem
/// past the high threshold runs image GC first); an error with the figures if GC cannot.
pub fn make_room(
    images: &ImageStore,
    runtime: &dyn Runtime,
    policy: &Policy,
    need: u64,
) -> Result<(), String> {
    let u = images
        .usage()
        .map_err(|e| format!("cannot read the image filesystem's usage: {e}"))?;
    let human = |b: u64| crate::images::cli::human_size(b);
    let refuse = |used: u8| {
        Err(format!(
            "the pull needs about {} and the image filesystem ({} free of {}) would pass image GC's high threshold of {}% (at {}% after image GC): remove images (edged image rm) or free space under {}",
            human(need),
            human(u.available),
            human(u.total),
            policy.high_percent,
            used,
            images.dir().display()
        ))
    };
    match room_for(u.total, u.available, need, policy) {
        Room::Fits => Ok(()),
        Room::TooBig => refuse(used_percent(u.total, u.available)),
        Room::FreeTo(target) => {
            let used = used_percent(u.total, u.available);
            tracing::info!(
                need_bytes = need,
                used_percent = used,
                target_percent = target,
                "image GC before a pull"
            );
            let (_, removed) = free_down_to(images, runtime, policy.min_age, target, used);
            let u2 = images
                .usage()
                .map_err(|e| format!("cannot read the image filesystem's usage: {e}"))?;
            match room_for(u2.total, u2.available, need, policy) {
                Room::Fits => {
                    tracing::info!(removed = removed.len(), "image GC made room for a pull");
                    Ok(())
                }
                _ => refuse(used_percent(u2.total, u2.available)),
            }
        }
    }
}

/// Image ids of every container the runtime holds, running or dead.
fn in_use(runtime: &dyn Runtime) -> Result<HashSet<String>, String> {
    runtime
        .list_containers()
        .map(|cs| cs.into_iter().map(|c| c.image_id).collect())
        .map_err(|e| format!("cannot list containers: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_a_pull() {
        let p = Policy {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::ZERO,
        };
        let (total, mb) = (1000u64 << 20, 1u64 << 20);
        for (available, need, room) in [
            // 50 % used, 100 MB: 60 %, under 85 %.
            (500 * mb, 100 * mb, Room::Fits),
            // 20 % used, 100 MB more: 30 %.
            (800 * mb, 100 * mb, Room::Fits),
            // 80 % used, 100 MB would make 90 %: free to 80 - 10 = 70 % first.
            (200 * mb, 100 * mb, Room::FreeTo(70)),
            // A pull of 850 MB cannot stay under 85 % even on an empty store.
            (900 * mb, 850 * mb, Room::TooBig),
            // More than there is.
            (10 * mb, 2000 * mb, Room::TooBig),
            // Exactly at the threshold after the pull counts as past it, as GC's own check.
            (250 * mb, 100 * mb, Room::FreeTo(70)),
        ] {
            assert_eq!(
                room_for(total, available, need, &p),
                room,
                "{available} {need}"
            );
        }
        assert_eq!(
            room_for(0, 0, 1, &p),
            Room::Fits,
            "no figures: nothing refused"
        );
    }
    use std::time::UNIX_EPOCH;

    fn img(id: &str, used: Option<u64>, imported: u64) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            size: 1,
            last_used: used.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            imported_at: UNIX_EPOCH + Duration::from_secs(imported),
        }
    }

    #[test]
    fn never_used_first_then_lru_skipping_in_use_and_young() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let images = vec![
            img("a", Some(500), 10),
            img("b", None, 20),
            img("c", Some(100), 5),
            img("d", None, 15),
            img("e", Some(100), 1),
            img("young", None, 990),
            img("used", Some(1), 1),
        ];
        let in_use: HashSet<String> = ["used".to_string()].into();
        assert_eq!(
            candidates(&images, &in_use, Duration::from_secs(120), now),
            vec!["d", "b", "e", "c", "a"]
        );
        assert_eq!(
            candidates(&images, &in_use, Duration::ZERO, now),
            vec!["d", "b", "young", "e", "c", "a"]
        );
    }

    #[test]
    fn used_percent_is_the_kubelets() {
        assert_eq!(used_percent(100, 15), 85);
        // 15.5 % available: the kubelet's integer division makes it 85 % used.
        assert_eq!(used_percent(1000, 155), 85);
        assert_eq!(used_percent(1000, 1000), 0);
        assert_eq!(used_percent(1000, 0), 100);
        assert_eq!(used_percent(1000, 2000), 0);
        assert_eq!(used_percent(0, 0), 0);
    }
}
