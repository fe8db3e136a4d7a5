//! Per-container root filesystems: `snapshots/<container id>/{upper,work}` over the image's
//! shared layers, handed to the runtime as one overlay mount. The store implements
//! [`RootfsProvider`] with them.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{ErrorKind, ImageError, IoContext, Result};
use super::index::save_file;
use super::store::{find, now_secs, ImageStore};
use crate::runtime::{self, ImageSpec, RootfsMount, RootfsProvider};

/// What a snapshot was made from (`snapshots/<id>/image.json`), so prune keeps its layers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SnapshotMeta {
    /// The image (config digest) it was made from.
    pub image_id: String,
    /// Chain ids, bottom first.
    pub layers: Vec<String>,
}

/// The kernel's limit on mount data (one page).
const MOUNT_DATA_MAX: usize = 4095;

fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ImageError::invalid(
            id,
            "prepare rootfs",
            "a container id is 1-128 letters, digits, '-', '_' or '.'",
        ))
    }
}

impl ImageStore {
    fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.dir().join("snapshots").join(id)
    }

    /// Container ids that have a snapshot (for GC and orphan cleanup).
    pub fn snapshots(&self) -> Result<Vec<String>> {
        let d = self.dir().join("snapshots");
        let mut ids: Vec<String> = fs::read_dir(&d)
            .ctx(d.display(), "list snapshots")?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Snapshots with their metadata (those without, half made, are skipped).
    pub(crate) fn snapshot_metas(&self) -> Result<Vec<(String, SnapshotMeta)>> {
        let mut out = Vec::new();
        for id in self.snapshots()? {
            let p = self.snapshot_dir(&id).join("image.json");
            if let Ok(data) = fs::read(&p) {
                match serde_json::from_slice(&data) {
                    Ok(m) => out.push((id, m)),
                    Err(e) => {
                        tracing::warn!(container = %id, "damaged snapshot metadata {}: {e}", p.display())
                    }
                }
            }
        }
        Ok(out)
    }

    /// Makes (or finds) the snapshot of `container_id` from image `reference` and returns
    /// its overlay mount; records the image as used now.
    pub fn prepare(&self, reference: &str, container_id: &str) -> Result<RootfsMount> {
        check_id(container_id)?;
        let _lock = self.lock()?;
        let mut index = self.load()?;
        let img = find(&index, reference)?.clone();
        let dir = self.snapshot_dir(container_id);
        let meta_path = dir.join("image.json");
        let meta = match fs::read(&meta_path) {
            Ok(data) => {
                let m: SnapshotMeta = serde_json::from_slice(&data).map_err(|e| {
                    ImageError::invalid(
                        container_id,
                        "prepare rootfs",
                        format!("snapshot metadata: {e}"),
                    )
                })?;
                if m.image_id != img.id {
                    return Err(ImageError::new(
                        container_id,
                        "prepare rootfs",
                        ErrorKind::Invalid,
                        format!(
                            "the container has a rootfs of image {} already, not {reference}",
                            m.image_id
                        ),
                    ));
                }
                m
            }
            Err(_) => SnapshotMeta {
                image_id: img.id.clone(),
                layers: img.layers.clone(),
            },
        };
        let mut lower = Vec::new();
        for chain in meta.layers.iter().rev() {
            let l = self.layer_dir(chain);
            if !l.is_dir() {
                return Err(ImageError::new(
                    &img.id,
                    "prepare rootfs",
                    ErrorKind::NotFound,
                    format!("layer {chain} is missing from the store: remove the image and import it again"),
                ));
            }
            lower.push(l.display().to_string());
        }
        if lower.is_empty() {
            return Err(ImageError::invalid(
                &img.id,
                "prepare rootfs",
                "the image has no layers: nothing to run",
            ));
        }
        let upper = dir.join("upper");
        let work = dir.join("work");
        for d in [&upper, &work] {
            fs::create_dir_all(d).ctx(d.display(), "prepare rootfs")?;
        }
        let paths = lower
            .iter()
            .cloned()
            .chain([upper.display().to_string(), work.display().to_string()]);
        if paths.clone().any(|p| p.contains([':', ','])) {
            return Err(ImageError::invalid(
                self.dir().display().to_string(),
                "prepare rootfs",
                "the store's path has ':' or ',', which overlay mount options cannot carry: choose another --root-dir",
            ));
        }
        let options = vec![
            format!("lowerdir={}", lower.join(":")),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ];
        let len: usize = options.iter().map(|o| o.len() + 1).sum();
        if len > MOUNT_DATA_MAX {
            return Err(ImageError::invalid(
                &img.id,
                "prepare rootfs",
                format!("{} layers make overlay options of {len} bytes, over the kernel's {MOUNT_DATA_MAX}: use a shorter --root-dir or an image with fewer layers", lower.len()),
            ));
        }
        let data = serde_json::to_vec(&meta).unwrap_or_default();
        save_file(&meta_path, &data)?;
        // Image GC's LRU time is set here on an image's first use only: an image in use is
        // never collected, and `release` sets the time when a container lets it go. Not
        // rewriting the index (two fsyncs) on every container start keeps it off the path.
        if let Some(i) = index
            .images
            .iter_mut()
            .find(|i| i.id == img.id && i.last_used.is_none())
        {
            i.last_used = Some(now_secs());
            index.save(&self.index_path())?;
        }
        Ok(RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options,
        })
    }

    /// Removes the snapshot of `container_id`; refuses while its overlay is mounted here.
    pub fn release(&self, container_id: &str) -> Result<()> {
        check_id(container_id)?;
        let dir = self.snapshot_dir(container_id);
        if !dir.exists() {
            return Ok(());
        }
        let upper = format!("upperdir={}", dir.join("upper").display());
        if let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") {
            if mi.lines().any(|l| l.split([' ', ',']).any(|o| o == upper)) {
                return Err(ImageError::new(
                    container_id,
                    "release rootfs",
                    ErrorKind::InUse,
                    "its rootfs is still mounted: stop and delete the container first",
                ));
            }
        }
        let _lock = self.lock()?;
        // The image was in use until now: image GC's LRU order counts from here.
        let image_id = fs::read(dir.join("image.json"))
            .ok()
            .and_then(|d| serde_json::from_slice::<SnapshotMeta>(&d).ok())
            .map(|m| m.image_id);
        self.discard(&dir)?;
        if let Some(id) = image_id {
            let mut index = self.load()?;
            if let Some(i) = index.images.iter_mut().find(|i| i.id == id) {
                i.last_used = Some(now_secs());
                index.save(&self.index_path())?;
            }
        }
        tracing::debug!(container = %container_id, "rootfs released");
        Ok(())
    }

    /// What the image's config says about running it.
    pub fn spec(&self, reference: &str) -> Result<ImageSpec> {
        let img = self.resolve(reference)?;
        let c = self.config_of(&img)?.config.unwrap_or_default();
        Ok(ImageSpec {
            id: img.id,
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.unwrap_or_default(),
            user: c.user.unwrap_or_default(),
        })
    }
}

impl RootfsProvider for ImageStore {
    fn image_spec(&self, reference: &str) -> runtime::Result<ImageSpec> {
        self.spec(reference).map_err(Into::into)
    }

    fn prepare_rootfs(
        &self,
        reference: &str,
        container_id: &str,
    ) -> runtime::Result<Vec<RootfsMount>> {
        self.prepare(reference, container_id)
            .map(|m| vec![m])
            .map_err(Into::into)
    }

    fn release_rootfs(&self, container_id: &str) -> runtime::Result<()> {
        self.release(container_id).map_err(Into::into)
    }
}
