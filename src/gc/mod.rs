//! Garbage collection: dead containers every `--container-gc-period` and unused images
//! every `--image-gc-period`, with the kubelet's policies.

pub mod container;
pub mod image;
