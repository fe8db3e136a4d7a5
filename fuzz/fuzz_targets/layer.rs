//! Image layers as a registry or an archive serves them: a plain, gzip or zstd tar, its entries
//! (headers, PAX records, whiteouts, links) unpacked into a fresh directory as the image store
//! does ([`edged::images::unpack::unpack`]). The first byte picks the media type the layer is
//! said to have. No input may panic, and nothing may be written outside the layer's directory.
//! Runs in a private 64 MiB tmpfs (see `common/scratch.rs`).
#![no_main]

#[path = "common/scratch.rs"]
mod scratch;

use libfuzzer_sys::fuzz_target;

const MEDIA_TYPES: [&str; 6] = [
    "",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, blob)) = data.split_first() else {
        return;
    };
    let media_type = MEDIA_TYPES[pick as usize % MEDIA_TYPES.len()];
    let dest = scratch::fresh("layer");
    if let Ok(u) = edged::images::unpack::unpack(blob, media_type, &dest) {
        assert_eq!(u.blob_size, blob.len() as u64);
        assert_eq!(u.digest, edged::images::digest::of_bytes(blob));
    }
    assert_eq!(
        scratch::listing(),
        ["layer"],
        "an entry escaped the layer dir"
    );
    let _ = std::fs::remove_dir_all(&dest);
});
