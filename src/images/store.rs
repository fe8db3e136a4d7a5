//! The image store: imports verified archives into content-addressed blobs and unpacked
//! layers, names and resolves images, removes and prunes them.
//!
//! ```text
//! <root>/images/index.json            images, layers, imported archives (atomic JSON)
//!              /lock                  flock held by every change of the index
//!              /blobs/sha256/<hex>    manifests and configs
//!              /layers/<hex>/         one unpacked layer per chain id, shared
//!              /snapshots/<id>/       a container's upper and work dirs
//!              /tmp/<stage>/          imports in progress (removed at open when stale)
//! ```
//!
//! An import stages everything under `tmp/`, verified, and commits by renames and one index
//! write under the lock: a failed or interrupted import leaves the store as it was. A
//! directory under `layers/` appears only complete (renamed in) and leaves by being renamed
//! out before it is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::archive::{self, mismatch, Candidate};
use super::digest;
use super::error::{ErrorKind, ImageError, IoContext, Result};
use super::index::{ArchiveStamp, Image, Index, LayerRecord};
use super::oci::{media, Descriptor, ImageConfig, Manifest};
use super::reference;
use super::source::Source;
use super::sys;
use super::unpack::{self, Compression, UnpackError};
use crate::paths::sync_dir;

/// The image store rooted at `<root-dir>/images`.
#[derive(Clone, Debug)]
pub struct ImageStore {
    dir: PathBuf,
}

/// Disk usage of the filesystem holding the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    /// Size of the filesystem.
    pub total: u64,
    /// Bytes in use.
    pub used: u64,
    /// Bytes free for unprivileged writers.
    pub available: u64,
    /// `100 - available * 100 / total`, the kubelet's image GC figure.
    pub used_percent: u8,
}

/// What a prune freed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Layer directories removed.
    pub layers: usize,
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes freed (unpacked layer sizes and blob sizes).
    pub bytes: u64,
}

/// What `import_dir` did with each archive.
#[derive(Debug, Default)]
pub struct ImportDirReport {
    /// Archives imported now, and their images.
    pub imported: Vec<(PathBuf, Vec<Image>)>,
    /// Already imported and unchanged.
    pub skipped: Vec<PathBuf>,
    /// Archives that failed, and why.
    pub failed: Vec<(PathBuf, ImageError)>,
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ImageStore {
    /// Opens (creating) the store under `root_dir/images` and removes what interrupted
    /// imports and releases left: its `tmp/`, and layers and blobs no image or snapshot
    /// references (an import cut between its renames and its index write, a removal cut
    /// before its prune).
    pub fn open(root_dir: &Path) -> Result<ImageStore> {
        let store = ImageStore {
            dir: root_dir.join("images"),
        };
        // Root's only: layers keep the set-id bits their images give, which no host user may
        // reach (the layer dirs below keep their images' modes: they are root filesystems).
        for d in ["", "blobs", "blobs/sha256", "layers", "snapshots", "tmp"] {
            let p = store.dir.join(d);
            crate::paths::private_dir(&p).ctx(p.display(), "open image store")?;
        }
        let lock = store.lock()?;
        store.clean_tmp();
        drop(lock);
        if let Err(e) = store.prune_unreferenced() {
            tracing::warn!(store = %store.dir.display(), "cannot prune unreferenced image data at open: {e}");
        }
        Ok(store)
    }

    /// The store's directory (`<root-dir>/images`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the layer of `chain_id` is unpacked.
    pub fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.dir.join("layers").join(digest::hex_of(chain_id))
    }

    pub(crate) fn blob_path(&self, d: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest::hex_of(d))
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// Takes the store's lock (released when the file is dropped).
    pub(crate) fn lock(&self) -> Result<File> {
        let p = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .ctx(p.display(), "lock image store")?;
        sys::flock(f.as_raw_fd(), true).ctx(p.display(), "lock image store")?;
        Ok(f)
    }

    pub(crate) fn load(&self) -> Result<Index> {
        Index::load(&self.index_path())
    }

    /// Removes stale entries of `tmp/` (those whose `.lock` nobody holds). Under the lock.
    fn clean_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if let Ok(f) = File::open(p.join(".lock")) {
                if !matches!(sys::flock(f.as_raw_fd(), false), Ok(true)) {
                    continue; // an import in progress
                }
            }
            tracing::info!(path = %p.display(), "removing what an interrupted import or removal left");
            let res = if e.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(err) = res {
                tracing::warn!(path = %p.display(), "cannot remove: {err}");
            }
        }
    }

    /// Makes `path` disappear at once (renamed into `tmp/`), then deletes it.
    pub(crate) fn discard(&self, path: &Path) -> Result<()> {
        let gone = self
            .dir
            .join("tmp")
            .join(format!("gone-{:016x}", fastrand::u64(..)));
        match fs::rename(path, &gone) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io(path.display().to_string(), "remove", &e)),
        }
        let res = if gone.is_dir() {
            fs::remove_dir_all(&gone)
        } else {
            fs::remove_file(&gone)
        };
        if let Err(e) = res {
            // It is out of the store already; the next open removes the rest.
            tracing::warn!(path = %gone.display(), "cannot delete: {e}");
        }
        Ok(())
    }

    /// Every image, sorted by name.
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut images = self.load()?.images;
        images.sort_by(|a, b| a.names.first().cmp(&b.names.first()).then(a.id.cmp(&b.id)));
        Ok(images)
    }

    /// The image `reference` names: a name (normalized as Docker does), `name@sha256:...`,
    /// an image id or manifest digest (`sha256:...`), or a unique prefix of an id's hex.
    pub fn resolve(&self, reference: &str) -> Result<Image> {
        find(&self.load()?, reference).cloned()
    }

    /// Imports every image of the archive at `path` (OCI layout or docker save, a directory
    /// or a tar), for this host's platform.
    pub fn import(&self, path: &Path) -> Result<Vec<Image>> {
        self.import_stamped(path, None)
    }

    fn import_stamped(
        &self,
        path: &Path,
        stamp: Option<(String, ArchiveStamp)>,
    ) -> Result<Vec<Image>> {
        self.refuse_under_disk_pressure(path)?;
        let src = Source::open(path)?;
        let candidates = archive::read(&src)?;
        let stage = Stage::new(self)?;
        let known = self.load()?.layers;
        let mut plan = Plan::default();
        for c in &candidates {
            let image = self.stage_image(&src, c, &stage, &known, &mut plan)?;
            plan.images.push(image);
        }
        let images = self.commit(&stage, plan, stamp)?;
        for i in &images {
            tracing::info!(image = %i.names.first().map_or(i.id.as_str(), String::as_str), id = %i.id, archive = %path.display(), "image imported");
        }
        Ok(images)
    }

    /// Unpacks the layers of `c` the store lacks and writes its blobs into the stage.
    fn stage_image(
        &self,
        src: &Source,
        c: &Candidate,
        stage: &Stage,
        known: &BTreeMap<String, LayerRecord>,
        plan: &mut Plan,
    ) -> Result<Image> {
        let diff_ids: Vec<String> = c.layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = digest::chain_ids(&diff_ids);
        let mut size = 0;
        let mut descriptors = Vec::new();
        for (i, (l, chain)) in c.layers.iter().zip(&chains).enumerate() {
            let what = format!("layer {} ({}, diff id {})", i + 1, l.path, l.diff_id);
            let have = plan
                .layers
                .get(chain)
                .or_else(|| known.get(chain).filter(|_| self.layer_dir(chain).is_dir()));
            if let Some(rec) = have {
                size += rec.size;
                if !plan.layers.contains_key(chain) {
                    plan.reused.insert(chain.clone());
                }
                descriptors.push(Descriptor {
                    media_type: media::OCI_LAYER.into(),
                    digest: l.digest.clone().unwrap_or_else(|| l.diff_id.clone()),
                    size: l.size,
                    ..Descriptor::default()
                });
                continue;
            }
            let (reader, actual) = src.open_file(&l.path)?;
            if l.digest.is_some() && actual != l.size {
                return Err(ImageError::invalid(
                    src.describe(),
                    "import",
                    format!("{what}: size mismatch: expected {} bytes, the archive has {actual} (truncated?)", l.size),
                ));
            }
            let dest = stage.dir.join("layers").join(digest::hex_of(chain));
            fs::create_dir_all(&dest).ctx(dest.display(), "import")?;
            let u = unpack::unpack(reader, &l.media_type, &dest).map_err(|e| match e {
                UnpackError::Bad(m) => {
                    ImageError::invalid(src.describe(), "import", format!("{what}: {m}"))
                }
                UnpackError::Io(e) => ImageError::io(src.describe(), "import", &e)
                    .context(format!("{what}: unpacking into {}", dest.display())),
            })?;
            if let Some(d) = &l.digest {
                mismatch(src, &what, d, &u.digest)?;
            }
            if u.blob_size != l.size {
                return Err(ImageError::invalid(
                    src.describe(),
                    "import",
                    format!(
                        "{what}: size mismatch: expected {} bytes, got {}",
                        l.size, u.blob_size
                    ),
                ));
            }
            mismatch(
                src,
                &format!("{what}: uncompressed content"),
                &l.diff_id,
                &u.diff_id,
            )?;
            size += u.size;
            plan.layers.insert(
                chain.clone(),
                LayerRecord {
                    diff_id: u.diff_id.clone(),
                    size: u.size,
                },
            );
            descriptors.push(Descriptor {
                media_type: match u.compression {
                    Compression::None => media::OCI_LAYER,
                    Compression::Gzip => media::OCI_LAYER_GZIP,
                    Compression::Zstd => media::OCI_LAYER_ZSTD,
                }
                .into(),
                digest: u.digest,
                size: u.blob_size,
                ..Descriptor::default()
            });
        }
        let (manifest_digest, manifest_bytes) = match &c.manifest {
            Some(m) => m.clone(),
            None => synthesize_manifest(c, descriptors),
        };
        for (d, bytes) in [
            (&c.config_digest, &c.config_bytes),
            (&manifest_digest, &manifest_bytes),
        ] {
            let p = stage.dir.join("blobs").join(digest::hex_of(d));
            write_synced(&p, bytes).ctx(p.display(), "import")?;
            plan.blobs.insert(d.clone());
        }
        Ok(Image {
            id: c.config_digest.clone(),
            names: c.names.clone(),
            manifest_digest,
            layers: chains,
            size: size + c.config_bytes.len() as u64 + manifest_bytes.len() as u64,
            created: c.config.created.clone(),
            platform: platform_of(&c.config),
            imported_at: now_secs(),
            last_used: None,
        })
    }

    /// Moves the staged layers and blobs into the store and writes the index, all under the
    /// lock; on failure undoes the moves.
    fn commit(
        &self,
        stage: &Stage,
        plan: Plan,
        stamp: Option<(String, ArchiveStamp)>,
    ) -> Result<Vec<Image>> {
        let _lock = self.lock()?;
        let mut index = self.load()?;
        for chain in &plan.reused {
            if !index.layers.contains_key(chain) || !self.layer_dir(chain).is_dir() {
                return Err(ImageError::new(
                    chain,
                    "import",
                    ErrorKind::Io,
                    "the layer was pruned while this import ran: import the archive again",
                ));
            }
        }
        let mut added: Vec<PathBuf> = Vec::new();
        let res = (|| -> Result<Vec<Image>> {
            let layers = self.dir.join("layers");
            for (chain, rec) in &plan.layers {
                let target = self.layer_dir(chain);
                if index.layers.contains_key(chain) && target.is_dir() {
                    continue; // another import committed it meanwhile
                }
                if target.exists() {
                    self.discard(&target)?; // unknown to the index: left by a crash
                }
                let staged = stage.dir.join("layers").join(digest::hex_of(chain));
                fs::rename(&staged, &target).ctx(target.display(), "import")?;
                added.push(target);
                index.layers.insert(chain.clone(), rec.clone());
            }
            sync_dir(&layers).ctx(layers.display(), "import")?;
            for d in &plan.blobs {
                let target = self.blob_path(d);
                if !target.exists() {
                    let staged = stage.dir.join("blobs").join(digest::hex_of(d));
                    fs::rename(&staged, &target).ctx(target.display(), "import")?;
                    added.push(target);
                }
            }
            let blobs = self.dir.join("blobs/sha256");
            sync_dir(&blobs).ctx(blobs.display(), "import")?;
            let mut out = Vec::new();
            for img in plan.images {
                out.push(merge_image(&mut index, img));
            }
            if let Some((key, mut st)) = stamp {
                st.images = out.iter().map(|i| i.id.clone()).collect();
                index.archives.insert(key, st);
            }
            index.save(&self.index_path())?;
            Ok(out)
        })();
        if res.is_err() {
            for p in added.iter().rev() {
                let _ = self.discard(p);
            }
        }
        res
    }

    /// Removes the image `reference` names. A name of an image with other names only
    /// untags it. An image a container's snapshot uses is refused unless `force` (its layers
    /// then stay until the snapshot is released: prune keeps layers of live snapshots).
    /// Disk space comes back with [`prune_unreferenced`](Self::prune_unreferenced).
    pub fn remove(&self, reference: &str, force: bool) -> Result<Image> {
        let _lock = self.lock()?;
        let mut index = self.load()?;
        let img = find(&index, reference)?.clone();
        let by_name = reference::normalize(reference)
            .ok()
            .filter(|n| img.names.contains(n));
        if let Some(name) = by_name.filter(|_| img.names.len() > 1) {
            if let Some(i) = index.images.iter_mut().find(|i| i.id == img.id) {
                i.names.retain(|n| *n != name);
            }
            index.save(&self.index_path())?;
            tracing::info!(image = %name, id = %img.id, "image untagged");
            return Ok(img);
        }
        let users: Vec<String> = self
            .snapshot_metas()?
            .into_iter()
            .filter(|(_, m)| m.image_id == img.id)
            .map(|(c, _)| c)
            .collect();
        if !users.is_empty() && !force {
            return Err(ImageError::new(
                reference,
                "remove image",
                ErrorKind::InUse,
                format!(
                    "used by container(s) {}: remove them first",
                    users.join(", ")
                ),
            ));
        }
        index.images.retain(|i| i.id != img.id);
        index.save(&self.index_path())?;
        tracing::info!(image = %reference, id = %img.id, "image removed");
        Ok(img)
    }

    /// Deletes the layers and blobs no image and no snapshot references.
    pub fn prune_unreferenced(&self) -> Result<PruneReport> {
        let _lock = self.lock()?;
        let mut index = self.load()?;
        let mut layers: BTreeSet<String> = index
            .images
            .iter()
            .flat_map(|i| i.layers.iter().cloned())
            .collect();
        for (_, m) in self.snapshot_metas()? {
            layers.extend(m.layers);
        }
        let blobs: BTreeSet<String> = index
            .images
            .iter()
            .flat_map(|i| [i.id.clone(), i.manifest_digest.clone()])
            .collect();
        let mut report = PruneReport::default();
        let ldir = self.dir.join("layers");
        for e in fs::read_dir(&ldir).ctx(ldir.display(), "prune")?.flatten() {
            let chain = format!("sha256:{}", e.file_name().to_string_lossy());
            if layers.contains(&chain) {
                continue;
            }
            self.discard(&e.path())?;
            report.layers += 1;
            report.bytes += index.layers.get(&chain).map_or(0, |r| r.size);
        }
        index.layers.retain(|c, _| layers.contains(c));
        let bdir = self.dir.join("blobs/sha256");
        for e in fs::read_dir(&bdir).ctx(bdir.display(), "prune")?.flatten() {
            let d = format!("sha256:{}", e.file_name().to_string_lossy());
            if blobs.contains(&d) {
                continue;
            }
            report.bytes += e.metadata().map_or(0, |m| m.len());
            fs::remove_file(e.path()).ctx(e.path().display(), "prune")?;
            report.blobs += 1;
        }
        index.save(&self.index_path())?;
        if report.layers + report.blobs > 0 {
            tracing::info!(
                layers = report.layers,
                blobs = report.blobs,
                bytes = report.bytes,
                "pruned unreferenced image data"
            );
        }
        Ok(report)
    }

    /// Disk usage of the filesystem holding the store.
    pub fn usage(&self) -> Result<DiskUsage> {
        let (total, available, free) = sys::statvfs(&self.dir).ctx(self.dir.display(), "usage")?;
        let used_percent = if total == 0 {
            0
        } else {
            100 - (available as u128 * 100 / total as u128) as u8
        };
        Ok(DiskUsage {
            total,
            used: total.saturating_sub(free),
            available,
            used_percent,
        })
    }

    /// Imports every archive in `dir` (`*.tar` files and OCI layout directories). One already
    /// imported and unchanged (same size and mtime, its images still here) is skipped; a bad
    /// one is logged and skipped.
    pub fn import_dir(&self, dir: &Path) -> Result<ImportDirReport> {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .ctx(dir.display(), "import image dir")?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .filter(|p| {
                (p.is_file() && p.extension().is_some_and(|e| e == "tar"))
                    || p.join("oci-layout").is_file()
            })
            .collect();
        entries.sort();
        let index = self.load()?;
        let mut report = ImportDirReport::default();
        for p in entries {
            let key = p.display().to_string();
            let stamp_of = if p.is_dir() {
                p.join("index.json")
            } else {
                p.clone()
            };
            let stamp = match fs::metadata(&stamp_of) {
                Ok(m) => ArchiveStamp {
                    size: m.len(),
                    mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                    images: Vec::new(),
                },
                Err(e) => {
                    report
                        .failed
                        .push((p.clone(), ImageError::io(key, "import", &e)));
                    continue;
                }
            };
            let seen = index.archives.get(&key).is_some_and(|s| {
                s.size == stamp.size
                    && s.mtime_ns == stamp.mtime_ns
                    && s.images
                        .iter()
                        .all(|id| index.images.iter().any(|i| &i.id == id))
            });
            if seen {
                report.skipped.push(p);
                continue;
            }
            match self.import_stamped(&p, Some((key, stamp))) {
                Ok(images) => report.imported.push((p, images)),
                Err(e) => {
                    tracing::warn!(archive = %p.display(), "skipping an image archive: {e}");
                    report.failed.push((p, e));
                }
            }
        }
        Ok(report)
    }

    /// Refuses imports while image GC reports disk pressure (its marker file) and the disk
    /// is still at or above the GC high threshold.
    pub(crate) fn refuse_under_disk_pressure(&self, path: &Path) -> Result<()> {
        let Some(p) = super::pressure::Marker::read(&self.dir) else {
            return Ok(());
        };
        let used = self.usage().map_or(p.used_percent, |u| u.used_percent);
        if used < p.high_percent {
            return Ok(()); // freed since (or the agent is gone): the marker is stale
        }
        Err(ImageError::new(
            path.display().to_string(),
            "import",
            ErrorKind::NoSpace,
            p.refusal(used),
        ))
    }

    /// The image's config, read from its blob.
    pub(crate) fn config_of(&self, img: &Image) -> Result<ImageConfig> {
        let p = self.blob_path(&img.id);
        let data = fs::read(&p).ctx(p.display(), "read image config")?;
        serde_json::from_slice(&data)
            .map_err(|e| ImageError::invalid(&img.id, "read image config", e.to_string()))
    }
}

/// What an import has staged.
#[derive(Default)]
struct Plan {
    /// Layers unpacked into the stage.
    layers: BTreeMap<String, LayerRecord>,
    /// Layers the store had already.
    reused: BTreeSet<String>,
    blobs: BTreeSet<String>,
    images: Vec<Image>,
}

/// An import's staging directory under `tmp/`, held by an flock on its `.lock` while the
/// import runs and removed when dropped.
struct Stage {
    dir: PathBuf,
    _lock: File,
}

impl Stage {
    fn new(store: &ImageStore) -> Result<Stage> {
        // Under the store lock, so `clean_tmp` never sees the dir before its lock is held.
        let _guard = store.lock()?;
        let dir = store
            .dir
            .join("tmp")
            .join(format!("import-{:016x}", fastrand::u64(..)));
        let res = (|| {
            fs::create_dir_all(dir.join("layers"))?;
            fs::create_dir_all(dir.join("blobs"))?;
            let f = File::create(dir.join(".lock"))?;
            sys::flock(f.as_raw_fd(), true)?;
            Ok(f)
        })();
        match res {
            Ok(f) => Ok(Stage { dir, _lock: f }),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(ImageError::io(dir.display().to_string(), "import", &e))
            }
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), "cannot remove an import's staging dir: {e}");
        }
    }
}

/// Writes a file and fsyncs it.
fn write_synced(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(p)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Adds or updates `img`; its names move to it from any other image (a re-tag).
fn merge_image(index: &mut Index, mut img: Image) -> Image {
    for other in index.images.iter_mut().filter(|i| i.id != img.id) {
        other.names.retain(|n| !img.names.contains(n));
    }
    match index.images.iter_mut().find(|i| i.id == img.id) {
        Some(existing) => {
            for n in img.names.drain(..) {
                if !existing.names.contains(&n) {
                    existing.names.push(n);
                }
            }
            existing.clone()
        }
        None => {
            index.images.push(img.clone());
            img
        }
    }
}

/// An OCI manifest for a docker archive's image (deterministic: the same image gives the
/// same digest on every import).
fn synthesize_manifest(c: &Candidate, layers: Vec<Descriptor>) -> (String, Vec<u8>) {
    let m = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: media::OCI_CONFIG.into(),
            digest: c.config_digest.clone(),
            size: c.config_bytes.len() as u64,
            ..Descriptor::default()
        },
        layers,
    };
    let bytes = serde_json::to_vec(&m).unwrap_or_default();
    (digest::of_bytes(&bytes), bytes)
}

fn platform_of(c: &ImageConfig) -> String {
    let mut s = format!(
        "{}/{}",
        if c.os.is_empty() { "linux" } else { &c.os },
        c.architecture
    );
    if let Some(v) = c.variant.as_deref().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// Finds the image `reference` names in `index` (see [`ImageStore::resolve`]).
pub(crate) fn find<'a>(index: &'a Index, reference: &str) -> Result<&'a Image> {
    let not_found = || {
        ImageError::new(
            reference,
            "resolve image",
            ErrorKind::NotFound,
            "no such image in the store: import it (edged image import FILE) or put its archive in --image-dir",
        )
    };
    if digest::is_sha256(reference) {
        return index
            .images
            .iter()
            .find(|i| i.id == reference || i.manifest_digest == reference)
            .ok_or_else(not_found);
    }
    match reference::parse(reference) {
        Ok(r) => {
            if let Some(d) = &r.digest {
                // A pulled index's digest is in the name the pull gave.
                let name = r.to_string();
                if let Some(i) = index
                    .images
                    .iter()
                    .find(|i| &i.manifest_digest == d || &i.id == d || i.names.contains(&name))
                {
                    return Ok(i);
                }
            } else {
                let name = r.to_string();
                if let Some(i) = index.images.iter().find(|i| i.names.contains(&name)) {
                    return Ok(i);
                }
            }
        }
        Err(e) if !reference.bytes().all(|b| b.is_ascii_hexdigit()) => {
            return Err(ImageError::invalid(reference, "resolve image", e));
        }
        Err(_) => {}
    }
    // A short id, as `image ls` shows it.
    if reference.len() >= 4
        && reference
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        let hits: Vec<&Image> = index
            .images
            .iter()
            .filter(|i| digest::hex_of(&i.id).starts_with(reference))
            .collect();
        match hits.len() {
            1 => return Ok(hits[0]),
            n if n > 1 => {
                return Err(ImageError::invalid(
                    reference,
                    "resolve image",
                    format!("{n} images have ids starting so: give more digits"),
                ))
            }
            _ => {}
        }
    }
    Err(not_found())
}
