//! The OCI image types the store reads (index, manifest, config) and platform matching.
//! Docker's schema 2 manifests and manifest lists have the same shape and are read alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Media types the store knows.
pub mod media {
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// A zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// A Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// A Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

    /// True for an index or manifest list.
    pub fn is_index(m: &str) -> bool {
        m == OCI_INDEX || m == DOCKER_LIST
    }

    /// True for an image manifest.
    pub fn is_manifest(m: &str) -> bool {
        m == OCI_MANIFEST || m == DOCKER_MANIFEST
    }
}

/// Annotation naming an image (a full reference, or only a tag).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation holding the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A content descriptor.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    /// What the content is.
    pub media_type: String,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Bytes of the content.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Annotations, such as the image's name.
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The platform of a manifest in an index.
    pub platform: Option<Platform>,
}

/// A platform (os, architecture, variant).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    #[serde(default)]
    /// `amd64`, `arm64`, `arm`...
    pub architecture: String,
    #[serde(default)]
    /// `linux`...
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `v7`, `v8`...
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image index (or Docker manifest list); also the layout's `index.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    /// The index's own media type.
    pub media_type: Option<String>,
    #[serde(default)]
    /// The manifests (or nested indexes) it lists.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The manifest's own media type.
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    #[serde(default)]
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An image configuration (only the fields the store uses).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    /// The CPU architecture it was built for.
    pub architecture: String,
    #[serde(default)]
    /// The OS it was built for.
    pub os: String,
    #[serde(default)]
    /// The CPU variant.
    pub variant: Option<String>,
    #[serde(default)]
    /// When it was built.
    pub created: Option<String>,
    #[serde(default)]
    /// How to run it.
    pub config: Option<RunConfig>,
    /// Its layers' diff ids.
    pub rootfs: RootFs,
}

/// How to run the image.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    /// The program (with arguments) to run.
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    /// Arguments for the entrypoint, or the command.
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    /// `KEY=value` entries.
    pub env: Option<Vec<String>>,
    #[serde(default)]
    /// The working directory.
    pub working_dir: Option<String>,
    #[serde(default)]
    /// `uid[:gid]` or a user name.
    pub user: Option<String>,
}

/// The layers of the image, by uncompressed digest.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    /// Always `layers`.
    pub kind: String,
    #[serde(default)]
    /// Digests of the uncompressed layer tars, bottom first.
    pub diff_ids: Vec<String>,
}

/// The platform this binary runs on, as OCI names it (from the build target).
pub fn host_platform() -> Platform {
    let (arch, variant) = if cfg!(target_arch = "x86_64") {
        ("amd64", None)
    } else if cfg!(target_arch = "aarch64") {
        ("arm64", Some("v8"))
    } else if cfg!(target_arch = "arm") {
        ("arm", Some("v7"))
    } else if cfg!(target_arch = "x86") {
        ("386", None)
    } else if cfg!(target_arch = "riscv64") {
        ("riscv64", None)
    } else if cfg!(target_arch = "powerpc64") {
        ("ppc64le", None)
    } else if cfg!(target_arch = "s390x") {
        ("s390x", None)
    } else {
        ("unknown", None)
    };
    Platform {
        architecture: arch.into(),
        os: "linux".into(),
        variant: variant.map(Into::into),
    }
}

/// How well `p` fits `host`: `None` when it cannot run there, else higher is better (an
/// armv7 host also runs v6 and v5 images; an empty variant means the default one).
pub fn platform_score(p: &Platform, host: &Platform) -> Option<u8> {
    if p.os != host.os || p.architecture != host.architecture {
        return None;
    }
    let v = p.variant.as_deref().unwrap_or("");
    match (host.architecture.as_str(), v) {
        ("arm64", "" | "v8") => Some(3),
        ("arm", "" | "v7") => Some(3),
        ("arm", "v6") => Some(2),
        ("arm", "v5") => Some(1),
        ("amd64", "" | "v1") => Some(3),
        (_, "") => Some(3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, v: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: v.map(Into::into),
        }
    }

    #[test]
    fn arm_variants() {
        let host = p("linux", "arm", Some("v7"));
        assert_eq!(platform_score(&p("linux", "arm", None), &host), Some(3));
        assert_eq!(
            platform_score(&p("linux", "arm", Some("v6")), &host),
            Some(2)
        );
        assert_eq!(platform_score(&p("linux", "arm", Some("v8")), &host), None);
        assert_eq!(platform_score(&p("linux", "arm64", None), &host), None);
        let host = p("linux", "arm64", Some("v8"));
        assert_eq!(platform_score(&p("linux", "arm64", None), &host), Some(3));
        assert_eq!(platform_score(&p("windows", "arm64", None), &host), None);
    }

    #[test]
    fn host_is_linux() {
        assert_eq!(host_platform().os, "linux");
        assert_ne!(host_platform().architecture, "unknown");
    }
}
