//! The store's small JSON index of images and layers, replaced atomically (write a temp
//! file, fsync, rename, fsync the directory): a crash leaves the old or the new one.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{ImageError, IoContext, Result};

/// One image of the store.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// The config digest (`sha256:...`): the image id.
    pub id: String,
    /// Normalized references naming it (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// Chain ids of its layers, bottom first.
    pub layers: Vec<String>,
    /// Bytes of its unpacked layers (shared layers counted in each image).
    pub size: u64,
    /// `created` of the image config (RFC 3339), when it has one.
    #[serde(default)]
    pub created: Option<String>,
    /// `os/arch[/variant]`.
    #[serde(default)]
    pub platform: String,
    /// When it was imported, seconds since the epoch.
    pub imported_at: u64,
    /// When a container last got a rootfs from it, seconds since the epoch.
    #[serde(default)]
    pub last_used: Option<u64>,
}

/// An unpacked layer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    /// Digest of the uncompressed layer tar.
    pub diff_id: String,
    /// Bytes of its regular files.
    pub size: u64,
}

/// What `import_dir` remembers of an archive, to skip it cheaply next time.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ArchiveStamp {
    /// File size when imported.
    pub size: u64,
    /// File mtime when imported, in nanoseconds.
    pub mtime_ns: i128,
    /// The images it gave.
    pub images: Vec<String>,
}

/// The index file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Index {
    #[serde(default)]
    /// Every image.
    pub images: Vec<Image>,
    /// Unpacked layers by chain id.
    #[serde(default)]
    pub layers: BTreeMap<String, LayerRecord>,
    /// Archives imported from the image directory, by path.
    #[serde(default)]
    pub archives: BTreeMap<String, ArchiveStamp>,
}

impl Index {
    /// Reads `path`; a missing file is an empty index.
    pub fn load(path: &Path) -> Result<Index> {
        match fs::read(path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| {
                ImageError::invalid(
                    path.display().to_string(),
                    "read index",
                    format!(
                        "{e}: the image index is damaged; move it away and import the images again"
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(ImageError::io(path.display().to_string(), "read index", &e)),
        }
    }

    /// Replaces `path` atomically with this index.
    pub fn save(&self, path: &Path) -> Result<()> {
        let data = serde_json::to_vec_pretty(self).map_err(|e| {
            ImageError::invalid(path.display().to_string(), "write index", e.to_string())
        })?;
        save_file(path, &data)
    }
}

/// Replaces `path` with `data` atomically (see [`crate::paths::write_atomic`]), readable by
/// all as the store's other files.
pub fn save_file(path: &Path, data: &[u8]) -> Result<()> {
    crate::paths::write_atomic(path, data, 0o644).ctx(path.display(), "write")
}
