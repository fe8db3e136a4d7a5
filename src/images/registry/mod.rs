//! Pulling images from registries (the OCI Distribution API v2), made for weak links.
//!
//! A pull resolves the reference ([`crate::images::reference`]: `nginx` is
//! `docker.io/library/nginx:latest`) against the registry's endpoints ([`endpoint`]: mirrors,
//! then the registry), authenticates as the registry asks ([`auth`], [`client`]), takes the
//! manifest for this node's platform ([`manifest`]), downloads the blobs the store lacks
//! ([`blob`]: resumable, stall-checked, retried, `--max-concurrent-downloads` at a time) into
//! `<root-dir>/images/downloads/`, and hands them to the store's importer as an OCI layout:
//! pulled and imported images are one kind, verified and unpacked by the same code.
//!
//! Everything here blocks: callers on the executor run it through `smol::unblock`.

pub mod auth;
pub mod blob;
pub mod client;
pub mod creds;
pub mod endpoint;
pub mod manifest;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use blob::{MinRate, Retry};
pub use client::Client;
pub use creds::{Credentials, Keyring};

use super::digest;
use super::error::{ErrorKind, ImageError, IoContext, Result};
use super::index::{Image, LayerRecord};
use super::oci::{self, Descriptor, ImageConfig, Index, Manifest};
use super::reference;
use super::store::ImageStore;
use super::sys;

/// Downloads untouched this long are removed by the next pull (a week: a node offline for
/// days still resumes its pull).
const STALE_DOWNLOADS: Duration = Duration::from_secs(7 * 24 * 3600);

/// How pulls reach registries (from the flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// `(registry, URL)` mirrors, tried in order.
    pub mirrors: Vec<(String, String)>,
    /// Never fall back from the mirrors to the registry.
    pub mirror_only: bool,
    /// `host[:port]` of registries reached without TLS verification (or over plain HTTP).
    pub insecure: Vec<String>,
    /// `(host[:port], CA file)`.
    pub cas: Vec<(String, PathBuf)>,
    /// A blob with no byte for this long is retried.
    pub progress_deadline: Duration,
    /// A blob slower than this over its window is retried.
    pub min_rate: Option<MinRate>,
    /// Blobs downloaded at once in one pull.
    pub max_concurrent_downloads: usize,
    /// Back-off of failed tries.
    pub retry: Retry,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mirrors: Vec::new(),
            mirror_only: false,
            insecure: Vec::new(),
            cas: Vec::new(),
            progress_deadline: Duration::from_secs(60),
            min_rate: None,
            max_concurrent_downloads: 3,
            retry: Retry::default(),
        }
    }
}

/// One line of a pull's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The manifest chosen (digest) and how many layers to fetch of how many.
    Resolved {
        /// The image manifest's digest.
        manifest: String,
        /// Layers the store lacks.
        fetch: usize,
        /// Layers of the image.
        layers: usize,
    },
    /// A layer the store already has.
    Exists(String),
    /// Bytes of a layer on disk so far, of its size.
    Bytes {
        /// The layer's digest.
        digest: String,
        /// Bytes so far.
        done: u64,
        /// Its size.
        total: u64,
    },
    /// A layer downloaded and verified.
    Done(String),
    /// Unpacking and storing.
    Unpacking,
}

/// What a pull did.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The image, as the store has it now.
    pub image: Image,
    /// Bytes received over the network.
    pub fetched: u64,
    /// Bytes of the blobs it needed (compressed layers, config, manifest).
    pub size: u64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Asked before the layers are fetched whether the image filesystem has room for about this
/// many bytes (after making it, e.g. by image GC); `Err` says why not.
pub type Room<'a> = &'a (dyn Fn(u64) -> std::result::Result<(), String> + Sync);

/// What a pull's layers take on disk while it runs, per compressed byte: the download, then the
/// unpacked layer (taken as twice the compressed size) before the download goes.
pub const DISK_PER_BYTE: u64 = 3;

/// Pulls `reference` into `store` through `client`, reporting to `progress`; `room` is asked
/// for the disk the missing layers take before they are fetched.
pub fn pull(
    store: &ImageStore,
    client: &Client,
    reference: &str,
    progress: &(dyn Fn(&Progress) + Sync),
    room: Room<'_>,
) -> Result<Pulled> {
    let started = Instant::now();
    let r = reference::parse(reference).map_err(|e| ImageError::invalid(reference, "pull", e))?;
    let name = r.to_string();
    store.refuse_under_disk_pressure(Path::new(&name))?;
    tracing::info!(image = %name, "pulling image");
    let res = pull_inner(store, client, &r, progress, room);
    let elapsed = started.elapsed();
    match res {
        Ok((image, fetched, size)) => {
            let secs = elapsed.as_secs_f64();
            tracing::info!(image = %name, id = %image.id, bytes = fetched, seconds = format!("{secs:.1}"), rate = %rate(fetched, elapsed), "image pulled");
            Ok(Pulled {
                image,
                fetched,
                size,
                elapsed,
            })
        }
        Err(e) => {
            tracing::warn!(image = %name, seconds = format!("{:.1}", elapsed.as_secs_f64()), "image pull failed: {e}");
            Err(e)
        }
    }
}

/// `1.2MB/s` of `bytes` over `d`.
pub fn rate(bytes: u64, d: Duration) -> String {
    let per = bytes as f64 / d.as_secs_f64().max(0.001);
    format!("{}/s", super::cli::human_size(per as u64))
}

fn pull_inner(
    store: &ImageStore,
    client: &Client,
    r: &reference::Reference,
    progress: &(dyn Fn(&Progress) + Sync),
    room: Room<'_>,
) -> Result<(Image, u64, u64)> {
    let name = r.to_string();
    let repo = r.path.as_str();
    let domain = r.domain.as_str();
    let tag_or_digest = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let (ep, top) = resolve(client, r, &tag_or_digest)?;
    let host = oci::host_platform();
    let image_manifest = match top.kind {
        manifest::Kind::Manifest => top.clone(),
        manifest::Kind::Index => {
            let idx: Index = serde_json::from_slice(&top.bytes)
                .map_err(|e| ImageError::invalid(&name, "pull", format!("bad index: {e}")))?;
            let d =
                manifest::choose(&idx, &host).map_err(|m| ImageError::invalid(&name, "pull", m))?;
            let m = manifest::fetch(client, &ep, domain, repo, &d.digest, Some(&d.digest))?;
            if m.kind != manifest::Kind::Manifest {
                return Err(ImageError::invalid(
                    &name,
                    "pull",
                    format!("index entry {} is not an image manifest", d.digest),
                ));
            }
            m
        }
    };
    let m: Manifest = serde_json::from_slice(&image_manifest.bytes).map_err(|e| {
        ImageError::invalid(
            &name,
            "pull",
            format!("bad manifest {}: {e}", image_manifest.digest),
        )
    })?;
    let downloads = store.dir().join("downloads");
    crate::paths::private_dir(&downloads).ctx(downloads.display(), "pull")?;
    blob::clean_stale(&downloads, STALE_DOWNLOADS);
    let fetched = AtomicU64::new(0);
    let cancel = AtomicBool::new(false);
    // The config: small, fetched like any blob, then read.
    if m.config.size > 16 << 20 {
        return Err(ImageError::invalid(
            &name,
            "pull",
            format!("config {} claims {} bytes", m.config.digest, m.config.size),
        ));
    }
    let noop = |_: u64, _: u64| {};
    let job = |desc| blob::Job {
        client,
        ep: &ep,
        domain,
        repo,
        desc,
    };
    let config_path = blob::download(
        &job(&m.config),
        &downloads,
        &blob::Meter {
            fetched: &fetched,
            cancel: &cancel,
            progress: &noop,
        },
    )?;
    let config_bytes = fs::read(&config_path).ctx(config_path.display(), "pull")?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        ImageError::invalid(
            &name,
            "pull",
            format!("bad image config {}: {e}", m.config.digest),
        )
    })?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(ImageError::invalid(
            &name,
            "pull",
            format!(
                "manifest {} lists {} layers but its config has {} diff_ids",
                image_manifest.digest,
                m.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let chains = digest::chain_ids(&config.rootfs.diff_ids);
    // Room first (image GC may run and remove layers this image shares), then what to fetch.
    let missing = |known: &BTreeMap<String, LayerRecord>| {
        m.layers
            .iter()
            .zip(&chains)
            .filter(|(_, chain)| !(known.contains_key(*chain) && store.layer_dir(chain).is_dir()))
            .map(|(l, _)| l.size)
            .sum::<u64>()
    };
    room(missing(&store.load()?.layers).saturating_mul(DISK_PER_BYTE))
        .map_err(|m| ImageError::new(&name, "pull", ErrorKind::NoSpace, m))?;
    let known = store.load()?.layers;
    let mut need: Vec<&Descriptor> = Vec::new();
    for (l, chain) in m.layers.iter().zip(&chains) {
        if known.contains_key(chain) && store.layer_dir(chain).is_dir() {
            progress(&Progress::Exists(l.digest.clone()));
        } else if !need.iter().any(|n| n.digest == l.digest) {
            need.push(l);
        }
    }
    progress(&Progress::Resolved {
        manifest: image_manifest.digest.clone(),
        fetch: need.len(),
        layers: m.layers.len(),
    });
    let size: u64 = need.iter().map(|d| d.size).sum::<u64>()
        + m.config.size
        + image_manifest.bytes.len() as u64;
    let queue = Mutex::new(need.clone());
    let first_err: Mutex<Option<ImageError>> = Mutex::new(None);
    let workers = client
        .options()
        .max_concurrent_downloads
        .clamp(1, 16)
        .min(need.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some(desc) = next else { break };
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
                let report = |done: u64, total: u64| {
                    progress(&Progress::Bytes {
                        digest: desc.digest.clone(),
                        done,
                        total,
                    })
                };
                let meter = blob::Meter {
                    fetched: &fetched,
                    cancel: &cancel,
                    progress: &report,
                };
                match blob::download(&job(desc), &downloads, &meter) {
                    Ok(_) => progress(&Progress::Done(desc.digest.clone())),
                    Err(e) => {
                        cancel.store(true, Ordering::Relaxed);
                        let mut f = first_err.lock().unwrap_or_else(|e| e.into_inner());
                        if f.is_none()
                            || f.as_ref()
                                .is_some_and(|f| f.message.starts_with("cancelled"))
                        {
                            *f = Some(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e.context(format!("pulling {name}")));
    }
    progress(&Progress::Unpacking);
    let layout = Layout::new(store)?;
    layout.write(&name, &top, &image_manifest, &m, &downloads)?;
    let images = store.import(&layout.dir)?;
    drop(layout);
    for d in need.iter().map(|d| &d.digest).chain([&m.config.digest]) {
        let _ = fs::remove_file(blob::blob_file(&downloads, d));
    }
    let image = images.into_iter().next().ok_or_else(|| {
        ImageError::new(
            &name,
            "pull",
            ErrorKind::Invalid,
            "the pulled image did not import",
        )
    })?;
    Ok((image, fetched.load(Ordering::Relaxed), size))
}

/// The first endpoint that serves the manifest, and the manifest; unreachable endpoints
/// are retried with back-off (the link may come back).
fn resolve(
    client: &Client,
    r: &reference::Reference,
    tag_or_digest: &str,
) -> Result<(endpoint::Endpoint, manifest::Fetched)> {
    let eps = endpoint::endpoints(&r.domain, client.options());
    let retry = client.options().retry;
    let mut failures = 0;
    loop {
        let mut errs: Vec<ImageError> = Vec::new();
        for ep in &eps {
            match manifest::fetch(
                client,
                ep,
                &r.domain,
                &r.path,
                tag_or_digest,
                r.digest.as_deref(),
            ) {
                Ok(f) => return Ok((ep.clone(), f)),
                Err(e) if ep.mirror => {
                    tracing::warn!(mirror = %ep.base, image = %r, "mirror failed, trying the next endpoint: {e}");
                    errs.push(e);
                }
                // The registry answered for the image: no other endpoint will do better.
                Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Auth) => return Err(e),
                Err(e) => {
                    tracing::debug!(endpoint = %ep.base, "failed: {e}");
                    errs.push(e);
                }
            }
        }
        let transient = errs.iter().any(|e| e.kind == ErrorKind::Network);
        // The registry's own error says most; the others follow.
        let last = errs.first().cloned().map(|mut e| {
            for other in &errs[1..] {
                e.message = format!("{}; then {}: {}", e.message, other.object, other.message);
            }
            e
        });
        let e = last.unwrap_or_else(|| {
            ImageError::new(r.to_string(), "pull", ErrorKind::Network, "no endpoint")
        });
        if !transient {
            return Err(e);
        }
        failures += 1;
        if failures > retry.max_failures {
            return Err(e.context(format!("{} tries", failures)));
        }
        let wait = retry.wait(failures, fastrand::f64());
        tracing::warn!(image = %r, retry_in = ?wait, "registry unreachable: {e}");
        std::thread::sleep(wait);
    }
}

/// A pull's OCI layout under the store's `tmp/` (removed when dropped, or by the next
/// store open if the agent dies).
struct Layout {
    dir: PathBuf,
    _lock: File,
}

impl Layout {
    fn new(store: &ImageStore) -> Result<Layout> {
        let _guard = store.lock()?;
        let dir = store
            .dir()
            .join("tmp")
            .join(format!("pull-{:016x}", fastrand::u64(..)));
        let res = (|| {
            fs::create_dir_all(dir.join("blobs/sha256"))?;
            let f = File::create(dir.join(".lock"))?;
            sys::flock(f.as_raw_fd(), true)?;
            Ok(f)
        })();
        match res {
            Ok(f) => Ok(Layout { dir, _lock: f }),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(ImageError::io(dir.display().to_string(), "pull", &e))
            }
        }
    }

    /// Writes `oci-layout`, an `index.json` naming the image, the manifests, and links to
    /// the downloaded config and layers.
    fn write(
        &self,
        name: &str,
        top: &manifest::Fetched,
        image: &manifest::Fetched,
        m: &Manifest,
        downloads: &Path,
    ) -> Result<()> {
        let show = self.dir.display().to_string();
        let put = |rel: &str, data: &[u8]| fs::write(self.dir.join(rel), data).ctx(&show, "pull");
        put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut d = top.descriptor();
        d.annotations = Some(
            [(
                oci::ANNOTATION_CONTAINERD_NAME.to_string(),
                name.to_string(),
            )]
            .into(),
        );
        let index = Index {
            media_type: Some(oci::media::OCI_INDEX.into()),
            manifests: vec![d],
        };
        put(
            "index.json",
            &serde_json::to_vec(&index).unwrap_or_default(),
        )?;
        for f in [top, image] {
            put(
                &format!("blobs/sha256/{}", digest::hex_of(&f.digest)),
                &f.bytes,
            )?;
        }
        for d in m.layers.iter().chain([&m.config]) {
            let src = blob::blob_file(downloads, &d.digest);
            let dst = self
                .dir
                .join("blobs/sha256")
                .join(digest::hex_of(&d.digest));
            if src.exists() && !dst.exists() {
                fs::hard_link(&src, &dst).ctx(src.display(), "pull")?;
            }
        }
        Ok(())
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), "cannot remove a pull's layout: {e}");
        }
    }
}
