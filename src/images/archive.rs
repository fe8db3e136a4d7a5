//! Reading an archive's images: an OCI image layout (`oci-layout`, `index.json`, `blobs/`)
//! or a `docker save` archive (`manifest.json`, `<id>.json`, layer tars). Small blobs
//! (indexes, manifests, configs) are read and verified here; layers are only described, the
//! store streams them into the unpacker.

use serde::Deserialize;

use super::digest;
use super::error::{ImageError, Result};
use super::oci::{self, media, Descriptor, ImageConfig, Index, Manifest, Platform};
use super::reference;
use super::source::Source;

/// Largest index, manifest or config blob accepted.
const SMALL_LIMIT: u64 = 16 << 20;

/// One image found in an archive.
#[derive(Debug)]
pub struct Candidate {
    /// Normalized names.
    pub names: Vec<String>,
    /// Manifest digest and bytes as the archive has them (`None` for a docker archive: the
    /// store writes one from the layers it read).
    pub manifest: Option<(String, Vec<u8>)>,
    /// The config's digest: the image id.
    pub config_digest: String,
    /// The config as the archive holds it.
    pub config_bytes: Vec<u8>,
    /// The parsed config.
    pub config: ImageConfig,
    /// Its layers, bottom first.
    pub layers: Vec<LayerRef>,
}

/// A layer blob inside the archive.
#[derive(Clone, Debug)]
pub struct LayerRef {
    /// Path in the archive.
    pub path: String,
    /// The layer's media type (empty in docker archives).
    pub media_type: String,
    /// Expected digest of the blob (docker archives with `<id>/layer.tar` have none).
    pub digest: Option<String>,
    /// Size of the blob in the archive.
    pub size: u64,
    /// Expected digest of the uncompressed tar, from the config.
    pub diff_id: String,
}

/// Every image of the archive, for this host's platform.
pub fn read(src: &Source) -> Result<Vec<Candidate>> {
    let mut out = if src.has("oci-layout") && src.has("index.json") {
        read_oci(src)?
    } else if src.has("manifest.json") {
        read_docker(src)?
    } else {
        return Err(ImageError::invalid(
            src.describe(),
            "import",
            "neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)",
        ));
    };
    // Docker 25+ archives are OCI layouts that also carry manifest.json with RepoTags.
    if src.has("oci-layout") && src.has("manifest.json") {
        if let Ok(extra) = read_docker_entries(src) {
            for e in extra {
                let cfg = config_digest_from_path(&e.config);
                for c in out
                    .iter_mut()
                    .filter(|c| Some(&c.config_digest) == cfg.as_ref())
                {
                    add_names(&mut c.names, e.repo_tags.iter().flatten(), src);
                }
            }
        }
    }
    // The same image listed twice (two names) is one candidate.
    let mut merged: Vec<Candidate> = Vec::new();
    for c in out {
        match merged
            .iter_mut()
            .find(|m| m.config_digest == c.config_digest)
        {
            Some(m) => {
                for n in c.names {
                    if !m.names.contains(&n) {
                        m.names.push(n);
                    }
                }
            }
            None => merged.push(c),
        }
    }
    if merged.is_empty() {
        return Err(ImageError::invalid(
            src.describe(),
            "import",
            "the archive holds no image",
        ));
    }
    Ok(merged)
}

fn read_oci(src: &Source) -> Result<Vec<Candidate>> {
    let what = src.describe();
    let layout: serde_json::Value = parse(src, "oci-layout", &src.read_small("oci-layout", 4096)?)?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(ImageError::invalid(
            &what,
            "import",
            "oci-layout: imageLayoutVersion is not \"1.0.0\"",
        ));
    }
    let index: Index = parse(
        src,
        "index.json",
        &src.read_small("index.json", SMALL_LIMIT)?,
    )?;
    let host = oci::host_platform();
    let mut out = Vec::new();
    let mut skipped: Vec<Platform> = Vec::new();
    for d in &index.manifests {
        let mut names = Vec::new();
        add_names(&mut names, names_of(d).iter(), src);
        let manifest_desc = if media::is_index(&d.media_type) {
            let nested: Index = parse(src, &d.digest, &read_blob(src, d)?)?;
            select(src, &nested, &host)?
        } else if media::is_manifest(&d.media_type) {
            match &d.platform {
                Some(p) if oci::platform_score(p, &host).is_none() => {
                    skipped.push(p.clone());
                    continue;
                }
                _ => d.clone(),
            }
        } else {
            tracing::debug!(archive = %what, media_type = %d.media_type, "skipping an index entry that is no image");
            continue;
        };
        out.push(candidate(src, &manifest_desc, names, &host)?);
    }
    if out.is_empty() && !skipped.is_empty() {
        return Err(no_platform(src, &host, &skipped));
    }
    Ok(out)
}

/// The manifest of `index` that fits `host` best.
fn select(src: &Source, index: &Index, host: &Platform) -> Result<Descriptor> {
    let best = index
        .manifests
        .iter()
        .filter(|d| media::is_manifest(&d.media_type) || d.media_type.is_empty())
        .filter_map(|d| {
            let p = d.platform.as_ref()?;
            Some((oci::platform_score(p, host)?, d))
        })
        .max_by_key(|(score, _)| *score);
    match best {
        Some((_, d)) => Ok(d.clone()),
        None => {
            let found: Vec<Platform> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.clone())
                .collect();
            Err(no_platform(src, host, &found))
        }
    }
}

fn no_platform(src: &Source, host: &Platform, found: &[Platform]) -> ImageError {
    let list: Vec<String> = found.iter().map(|p| p.to_string()).collect();
    ImageError::invalid(
        src.describe(),
        "import",
        format!(
            "no image for this node's platform {host}; the archive has {}",
            if list.is_empty() {
                "no platform information".into()
            } else {
                list.join(", ")
            }
        ),
    )
}

/// Reads and checks the manifest of `d` and its config.
fn candidate(
    src: &Source,
    d: &Descriptor,
    names: Vec<String>,
    host: &Platform,
) -> Result<Candidate> {
    let manifest_bytes = read_blob(src, d)?;
    let manifest: Manifest = parse(src, &d.digest, &manifest_bytes)?;
    let config_bytes = read_blob(src, &manifest.config)?;
    let config: ImageConfig = parse(src, &manifest.config.digest, &config_bytes)?;
    check_config_platform(src, &config, host)?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::invalid(
            src.describe(),
            "import",
            format!(
                "manifest {} lists {} layers but its config {} has {} diff_ids",
                d.digest,
                manifest.layers.len(),
                manifest.config.digest,
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers.iter().zip(diff_ids) {
        check_digest_form(src, diff_id)?;
        layers.push(LayerRef {
            path: blob_path(src, &l.digest)?,
            media_type: l.media_type.clone(),
            digest: Some(l.digest.clone()),
            size: l.size,
            diff_id: diff_id.clone(),
        });
    }
    Ok(Candidate {
        names,
        manifest: Some((d.digest.clone(), manifest_bytes)),
        config_digest: manifest.config.digest.clone(),
        config_bytes,
        config,
        layers,
    })
}

fn check_config_platform(src: &Source, config: &ImageConfig, host: &Platform) -> Result<()> {
    if config.architecture.is_empty() {
        return Ok(());
    }
    let p = Platform {
        architecture: config.architecture.clone(),
        os: if config.os.is_empty() {
            "linux".into()
        } else {
            config.os.clone()
        },
        variant: config.variant.clone(),
    };
    match oci::platform_score(&p, host) {
        Some(_) => Ok(()),
        None => Err(no_platform(src, host, &[p])),
    }
}

/// `docker save`'s manifest.json entry.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn read_docker_entries(src: &Source) -> Result<Vec<DockerEntry>> {
    parse(
        src,
        "manifest.json",
        &src.read_small("manifest.json", SMALL_LIMIT)?,
    )
}

fn read_docker(src: &Source) -> Result<Vec<Candidate>> {
    let host = oci::host_platform();
    let mut out = Vec::new();
    for e in read_docker_entries(src)? {
        let config_bytes = src.read_small(&e.config, SMALL_LIMIT)?;
        let config_digest = digest::of_bytes(&config_bytes);
        if let Some(expected) = config_digest_from_path(&e.config) {
            mismatch(
                src,
                &format!("config {}", e.config),
                &expected,
                &config_digest,
            )?;
        }
        let config: ImageConfig = parse(src, &e.config, &config_bytes)?;
        check_config_platform(src, &config, &host)?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != e.layers.len() {
            return Err(ImageError::invalid(
                src.describe(),
                "import",
                format!(
                    "manifest.json lists {} layers but config {} has {} diff_ids",
                    e.layers.len(),
                    e.config,
                    diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in e.layers.iter().zip(diff_ids) {
            check_digest_form(src, diff_id)?;
            let (_, size) = src.open_file(path)?;
            layers.push(LayerRef {
                path: path.clone(),
                media_type: String::new(),
                digest: config_digest_from_path(path),
                size,
                diff_id: diff_id.clone(),
            });
        }
        let mut names = Vec::new();
        add_names(&mut names, e.repo_tags.iter().flatten(), src);
        out.push(Candidate {
            names,
            manifest: None,
            config_digest,
            config_bytes,
            config,
            layers,
        });
    }
    Ok(out)
}

/// The digest a docker archive path implies: `<hex>.json` or `blobs/sha256/<hex>`.
fn config_digest_from_path(path: &str) -> Option<String> {
    let base = path.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    let d = format!("sha256:{hex}");
    (digest::is_sha256(&d) && (base.ends_with(".json") || path.contains("sha256/"))).then_some(d)
}

/// The names an index.json entry gives: containerd's full name, or a ref.name that is a
/// full reference (a bare tag such as `latest` names no repository).
fn names_of(d: &Descriptor) -> Vec<String> {
    let Some(a) = &d.annotations else {
        return Vec::new();
    };
    if let Some(n) = a.get(oci::ANNOTATION_CONTAINERD_NAME) {
        return vec![n.clone()];
    }
    match a.get(oci::ANNOTATION_REF_NAME) {
        Some(r) if r.contains(['/', ':', '@']) => vec![r.clone()],
        _ => Vec::new(),
    }
}

fn add_names<'a>(names: &mut Vec<String>, raw: impl Iterator<Item = &'a String>, src: &Source) {
    for r in raw {
        match reference::normalize(r) {
            Ok(n) if !names.contains(&n) => names.push(n),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(archive = %src.describe(), name = %r, "ignoring an image name: {e}")
            }
        }
    }
}

/// Reads blob `d` and checks its size and digest.
fn read_blob(src: &Source, d: &Descriptor) -> Result<Vec<u8>> {
    let path = blob_path(src, &d.digest)?;
    if d.size > SMALL_LIMIT {
        return Err(ImageError::invalid(
            src.describe(),
            "import",
            format!(
                "blob {} ({}) claims {} bytes, too large for its kind",
                d.digest, d.media_type, d.size
            ),
        ));
    }
    let data = src.read_small(&path, SMALL_LIMIT)?;
    if data.len() as u64 != d.size {
        return Err(ImageError::invalid(
            src.describe(),
            "import",
            format!(
                "blob {}: size mismatch: expected {} bytes, got {}",
                d.digest,
                d.size,
                data.len()
            ),
        ));
    }
    mismatch(
        src,
        &format!("blob {}", path),
        &d.digest,
        &digest::of_bytes(&data),
    )?;
    Ok(data)
}

/// An error when `got` is not `expected`.
pub fn mismatch(src: &Source, what: &str, expected: &str, got: &str) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(ImageError::invalid(
            src.describe(),
            "import",
            format!(
                "{what}: digest mismatch: expected {expected}, got {got} (the archive is corrupt)"
            ),
        ))
    }
}

fn check_digest_form(src: &Source, d: &str) -> Result<()> {
    if digest::is_sha256(d) {
        Ok(())
    } else {
        Err(ImageError::invalid(
            src.describe(),
            "import",
            format!("digest {d:?}: only sha256 digests are supported"),
        ))
    }
}

/// `blobs/sha256/<hex>` of a digest.
fn blob_path(src: &Source, d: &str) -> Result<String> {
    check_digest_form(src, d)?;
    Ok(format!("blobs/sha256/{}", digest::hex_of(d)))
}

fn parse<T: serde::de::DeserializeOwned>(src: &Source, name: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| {
        ImageError::invalid(src.describe(), "import", format!("{name}: bad JSON: {e}"))
    })
}
