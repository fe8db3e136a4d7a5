//! Manifests from a registry: the `Accept` list, what kind an answer is (OCI or Docker v2
//! index or manifest; schema 1 refused), its digest checked, and the platform chosen from an
//! index as the archive importer chooses it ([`oci::platform_score`]).

use crate::images::digest;
use crate::images::error::{ErrorKind, ImageError, Result};
use crate::images::oci::{self, media, Descriptor, Index, Platform};

use super::client::{self, Client};
use super::endpoint::Endpoint;

/// The manifest types asked for, best first.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest read (the registry's own limit is 4 MiB).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// What a manifest answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An image index or manifest list.
    Index,
    /// An image manifest.
    Manifest,
}

/// A fetched manifest, digest-checked.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// `sha256:` of its bytes.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Index or manifest.
    pub kind: Kind,
    /// The bytes as served.
    pub bytes: Vec<u8>,
}

impl Fetched {
    /// A descriptor of it.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            ..Descriptor::default()
        }
    }
}

/// The media type and kind of a manifest answer: the `Content-Type` when it names one, else
/// the body's `mediaType` (an OCI manifest may leave it out: then `config` tells). Schema 1
/// is refused.
pub fn classify(content_type: &str, body: &[u8]) -> std::result::Result<(String, Kind), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
    }
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let peek: Peek =
        serde_json::from_slice(body).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    if peek.schema_version == Some(1)
        || ct.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        return Err("the registry serves this image as a Docker schema 1 manifest, which edged does not pull (deprecated since 2017): push it again with a current client".into());
    }
    let mt = if media::is_index(ct) || media::is_manifest(ct) {
        ct.to_string()
    } else if let Some(m) = peek.media_type.filter(|m| !m.is_empty()) {
        m
    } else if peek.manifests.is_some() {
        media::OCI_INDEX.to_string()
    } else if peek.config.is_some() {
        media::OCI_MANIFEST.to_string()
    } else {
        return Err(format!("unknown manifest type {ct:?}"));
    };
    if media::is_index(&mt) {
        Ok((mt, Kind::Index))
    } else if media::is_manifest(&mt) {
        Ok((mt, Kind::Manifest))
    } else {
        Err(format!("the reference names a {mt}, not an image"))
    }
}

/// The manifest of `index` that fits `host` best (the error lists what the index has).
pub fn choose(index: &Index, host: &Platform) -> std::result::Result<Descriptor, String> {
    let best = index
        .manifests
        .iter()
        .filter(|d| media::is_manifest(&d.media_type) || d.media_type.is_empty())
        .filter_map(|d| Some((oci::platform_score(d.platform.as_ref()?, host)?, d)))
        .max_by_key(|(score, _)| *score);
    match best {
        Some((_, d)) => Ok(d.clone()),
        None => {
            let found: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect();
            Err(format!(
                "no image for this node's platform {host}; the registry has {}",
                if found.is_empty() {
                    "no platform information".into()
                } else {
                    found.join(", ")
                }
            ))
        }
    }
}

/// Fetches the manifest `reference` (a tag or digest) of `repo`; `expect` is the digest it
/// must have (a digest reference, or an index's entry).
pub fn fetch(
    c: &Client,
    ep: &Endpoint,
    domain: &str,
    repo: &str,
    reference: &str,
    expect: Option<&str>,
) -> Result<Fetched> {
    let what = format!("{}/{repo}:{reference}", ep.base);
    let mut resp = c.get(
        ep,
        domain,
        repo,
        &format!("manifests/{reference}"),
        &[("Accept", ACCEPT.to_string())],
    )?;
    let status = resp.status().as_u16();
    if status != 200 {
        let kind = match status {
            404 => ErrorKind::NotFound,
            403 => ErrorKind::Auth,
            s if s >= 500 || s == 429 || s == 408 => ErrorKind::Network,
            _ => ErrorKind::Invalid,
        };
        let msg = client::error_text(resp);
        let hint = if status == 404 {
            ": check the image name and tag"
        } else {
            ""
        };
        return Err(ImageError::new(
            what,
            "pull manifest",
            kind,
            format!("{msg}{hint}"),
        ));
    }
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let served_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_MANIFEST)
        .read_to_vec()
        .map_err(|e| client::net_err(&what, e))?;
    let digest = digest::of_bytes(&bytes);
    for (who, want) in [
        ("the reference", expect),
        (
            "the registry's Docker-Content-Digest",
            served_digest.as_deref(),
        ),
    ] {
        if let Some(w) = want.filter(|w| w.starts_with("sha256:")) {
            if w != digest {
                return Err(ImageError::new(
                    &what,
                    "pull manifest",
                    ErrorKind::Invalid,
                    format!("digest mismatch: {who} says {w}, the manifest served is {digest}"),
                ));
            }
        }
    }
    let (media_type, kind) =
        classify(&ct, &bytes).map_err(|m| ImageError::invalid(&what, "pull manifest", m))?;
    Ok(Fetched {
        digest,
        media_type,
        kind,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_header_then_body() {
        assert_eq!(
            classify(media::DOCKER_MANIFEST, br#"{"schemaVersion":2}"#).unwrap(),
            (media::DOCKER_MANIFEST.to_string(), Kind::Manifest)
        );
        assert_eq!(
            classify("application/json", br#"{"schemaVersion":2,"manifests":[]}"#)
                .unwrap()
                .1,
            Kind::Index
        );
        assert_eq!(
            classify("", br#"{"schemaVersion":2,"config":{}}"#)
                .unwrap()
                .1,
            Kind::Manifest
        );
        let e = classify(
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            br#"{"schemaVersion":1,"fsLayers":[]}"#,
        )
        .unwrap_err();
        assert!(e.contains("schema 1"), "{e}");
        assert!(classify("text/html", b"<html>").is_err());
    }

    fn d(arch: &str, variant: Option<&str>, tag: &str) -> Descriptor {
        Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: tag.into(),
            size: 1,
            annotations: None,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn platform_choice() {
        let idx = Index {
            media_type: None,
            manifests: vec![
                d("amd64", None, "x86"),
                d("arm", Some("v6"), "v6"),
                d("arm", Some("v7"), "v7"),
                d("arm64", Some("v8"), "a64"),
            ],
        };
        let host = |a: &str, v: Option<&str>| Platform {
            architecture: a.into(),
            os: "linux".into(),
            variant: v.map(Into::into),
        };
        assert_eq!(choose(&idx, &host("arm", Some("v7"))).unwrap().digest, "v7");
        assert_eq!(
            choose(&idx, &host("arm64", Some("v8"))).unwrap().digest,
            "a64"
        );
        assert_eq!(choose(&idx, &host("amd64", None)).unwrap().digest, "x86");
        let e = choose(&idx, &host("riscv64", None)).unwrap_err();
        assert!(e.contains("linux/arm/v7") && e.contains("riscv64"), "{e}");
    }
}
