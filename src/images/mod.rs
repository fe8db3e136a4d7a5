//! The agent's own image store: no containerd daemon, no registry. Images come from OCI
//! layouts and `docker save` archives (files or a directory of them), are verified blob by
//! blob, unpacked once per layer, and given to containers as overlay mounts.
//!
//! - [`store`]: [`ImageStore`]: import, list, resolve, remove, prune, usage.
//! - [`snapshot`]: per-container rootfs (the [`crate::runtime::RootfsProvider`] side).
//! - [`archive`] and [`source`]: reading OCI layouts and docker archives.
//! - [`unpack`]: layer tars to directories, with overlayfs whiteouts.
//! - [`reference`](mod@reference): Docker's name normalization.
//! - [`cli`]: `edged image`.

#![warn(missing_docs)]
pub mod archive;
pub mod cli;
pub mod digest;
pub mod error;
pub mod index;
pub mod oci;
pub mod pressure;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod source;
pub mod store;
mod sys;
pub mod tarerr;
pub mod unpack;

pub use error::{ErrorKind, ImageError, Result};
pub use index::Image;
pub use snapshot::SnapshotMeta;
pub use store::{DiskUsage, ImageStore, ImportDirReport, PruneReport};
