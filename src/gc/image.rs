//! Image GC: when the image filesystem is above `--image-gc-high-threshold` percent used,
//! unused images go, least recently used first, until it is under
//! `--image-gc-low-threshold`. An image a container uses (running or kept dead) is never
//! removed, nor one younger than `--image-minimum-gc-age`.

use crate::images::ImageStore;
use crate::metaclient::MetaClient;
use crate::runtime::Runtime;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// The collection policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub high_percent: u8,
    pub low_percent: u8,
    pub min_age: Duration,
}

/// What GC needs to know of an image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub size: u64,
    pub last_used: Option<SystemTime>,
    pub imported_at: SystemTime,
}

/// The images that may go, in the order they go: least recently used first (never used:
/// by import time), skipping images in use and images younger than `min_age`.
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
    c.sort_by_key(|i| (i.last_used.unwrap_or(i.imported_at), i.imported_at));
    c.into_iter().map(|i| i.id.clone()).collect()
}

/// Percent of a filesystem used, from statvfs figures (as `df` shows it).
pub fn used_percent(total: u64, available: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (total.saturating_sub(available)) as f64 * 100.0 / total as f64
}

/// The marker file that tells image imports the disk is under pressure (the CLI imports in
/// its own process, so the agent's state must be on disk).
pub fn pressure_marker(images: &ImageStore) -> std::path::PathBuf {
    images.dir().join("disk-pressure")
}

/// One collection. Returns `true` when usage ends at or under the high threshold (no disk
/// pressure).
pub fn collect(images: &ImageStore, runtime: &dyn Runtime, policy: &Policy) -> bool {
    let usage = |images: &ImageStore| images.usage().map(|u| used_percent(u.total, u.available));
    let mut used = match usage(images) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "image GC: cannot read disk usage");
            return true;
        }
    };
    if used < policy.high_percent as f64 {
        let _ = std::fs::remove_file(pressure_marker(images));
        return true;
    }
    let in_use: HashSet<String> = match runtime.list_containers() {
        Ok(cs) => cs.into_iter().map(|c| c.image_id).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "image GC: cannot list containers; nothing removed");
            return false;
        }
    };
    let list = match images.list() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "image GC: cannot list images");
            return false;
        }
    };
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
    tracing::info!(
        used_percent = format!("{used:.1}"),
        high = policy.high_percent,
        low = policy.low_percent,
        "image GC: disk above the high threshold"
    );
    for id in candidates(&infos, &in_use, policy.min_age, SystemTime::now()) {
        if used < policy.low_percent as f64 {
            break;
        }
        match images.remove(&id, false) {
            Ok(img) => {
                let _ = images.prune_unreferenced();
                tracing::info!(image = %img.names.first().unwrap_or(&img.id), id = %img.id, "image GC removed an unused image");
            }
            Err(e) => tracing::warn!(id = %id, error = %e, "image GC: cannot remove"),
        }
        used = usage(images).unwrap_or(used);
    }
    let under = used < policy.high_percent as f64;
    let marker = pressure_marker(images);
    if under {
        let _ = std::fs::remove_file(marker);
    } else {
        tracing::warn!(
            used_percent = format!("{used:.1}"),
            "image GC cannot get under the high threshold: disk pressure"
        );
        let _ = std::fs::write(marker, format!("{used:.1}\n"));
    }
    under
}

/// Records the DiskPressure condition in the node's stored record (the cloud link sends the
/// node status from it).
pub async fn record_disk_pressure(client: &MetaClient, node: &str, pressure: bool) {
    let mut record = client
        .node(node)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| serde_json::json!({}));
    if !record.is_object() {
        record = serde_json::json!({});
    }
    record["diskPressure"] = serde_json::json!({
        "status": if pressure { "True" } else { "False" },
        "lastTransitionTime": crate::api::rfc3339(SystemTime::now()),
    });
    if let Err(e) = client.put_node(node, record).await {
        tracing::warn!(error = %e, "cannot record disk pressure");
    }
    if pressure {
        tracing::warn!(
            node,
            "DiskPressure: image imports are refused until image GC frees space"
        );
    } else {
        tracing::info!(node, "no disk pressure");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn lru_order_skips_in_use_and_young() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let images = vec![
            img("a", Some(500), 10),
            img("b", None, 20),
            img("c", Some(100), 5),
            img("young", None, 990),
            img("used", Some(1), 1),
        ];
        let in_use: HashSet<String> = ["used".to_string()].into();
        assert_eq!(
            candidates(&images, &in_use, Duration::from_secs(120), now),
            vec!["b", "c", "a"]
        );
        assert_eq!(used_percent(100, 15), 85.0);
    }
}
