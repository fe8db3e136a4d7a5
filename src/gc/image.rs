//! Image GC: when the image filesystem is above `--image-gc-high-threshold` percent used,
//! unused images go, least recently used first, until it is under
//! `--image-gc-low-threshold`. An image a container uses (running or kept dead) is never
//! removed, nor one younger than `--image-minimum-gc-age`.

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
