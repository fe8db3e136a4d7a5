//! Image GC's disk pressure marker in the image store: written when image GC cannot get under
//! its high threshold, removed when it can. The CLI imports in its own process, so the state
//! is a file; imports refuse while it is there and the disk is still that full. DiskPressure
//! itself is [`crate::eviction::pressure`]'s, which reads the marker as one of its causes.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The marker's file name in the image store's directory.
pub const MARKER_FILE: &str = "disk-pressure";

/// The marker: image imports refuse while it is there and the disk is still at or above
/// `high_percent` (a marker left by a stopped agent does not block for ever).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    /// Percent used after the last collection.
    pub used_percent: u8,
    /// Image GC's high threshold, percent used.
    pub high_percent: u8,
    /// Image GC's low threshold, percent used.
    pub low_percent: u8,
    /// When pressure began (RFC 3339).
    pub since: String,
}

impl Marker {
    /// The marker file of the image store in `images_dir`.
    pub fn path(images_dir: &Path) -> PathBuf {
        images_dir.join(MARKER_FILE)
    }

    /// The marker of the image store in `images_dir`, when there is one that reads.
    pub fn read(images_dir: &Path) -> Option<Marker> {
        let data = std::fs::read(Self::path(images_dir)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Writes the marker whole (a reader never sees half of it); a failure is logged.
    pub fn write(&self, images_dir: &Path) {
        let path = Self::path(images_dir);
        let data = serde_json::to_vec(self).unwrap_or_default();
        if let Err(e) = crate::paths::write_atomic(&path, &data, 0o644) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the disk pressure marker");
        }
    }

    /// Removes the marker, if there is one; a failure is logged.
    pub fn clear(images_dir: &Path) {
        let path = Self::path(images_dir);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!("disk pressure over: image imports allowed again"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the disk pressure marker")
            }
        }
    }

    /// The refusal an import gives under pressure (`used_now`: the disk's percent used now).
    pub fn refusal(&self, used_now: u8) -> String {
        format!(
            "disk pressure: the image filesystem is {used_now}% used, at or above the image GC high threshold of {}% (GC frees down to {}%), and image GC found no unused image to remove since {}: remove images (edged image rm) or pods, or give the store more disk, then import again",
            self.high_percent, self.low_percent, self.since
        )
    }
}
