//! Image archives as `edged images import` reads them: the tar index ([`Source::open`]: tar
//! headers, links), and the OCI image layout (`oci-layout`, `index.json`, manifests, configs)
//! or `docker save` layout (`manifest.json`, configs) read from it ([`archive::read`]).
//!
//! The first byte picks the form: 0, the rest is the archive's tar as given; 1, an OCI layout
//! directory; 2, a docker archive directory; 3, an OCI layout that also has `manifest.json`
//! (Docker 25+). In the directory forms the rest is split at `\n--\n` into files: the first is
//! `index.json` (OCI) or `manifest.json` (docker), the others are blobs, stored under their
//! digest (OCI) or as `p1`, `p2`... (docker); in a file, `@D<n>` and `@S<n>` stand for the
//! digest and size of file n (n greater than the file's own number, so the fuzzer can build
//! valid chains without computing hashes). No input may panic.
#![no_main]

#[path = "common/scratch.rs"]
mod scratch;

use edged::images::{archive, digest, source::Source};
use libfuzzer_sys::fuzz_target;

/// The files of a directory form, references to later files filled in.
fn pieces(rest: &[u8]) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut start = 0;
    let sep = b"\n--\n";
    let mut i = 0;
    while i + sep.len() <= rest.len() && parts.len() < 9 {
        if &rest[i..i + sep.len()] == sep {
            parts.push(rest[start..i].to_vec());
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    parts.push(rest[start..].to_vec());
    for i in (0..parts.len()).rev() {
        for j in i + 1..parts.len() {
            let d = digest::of_bytes(&parts[j]);
            let s = parts[j].len().to_string();
            parts[i] = replace(&parts[i], format!("@D{j}").as_bytes(), d.as_bytes());
            parts[i] = replace(&parts[i], format!("@S{j}").as_bytes(), s.as_bytes());
        }
    }
    parts
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch::fresh("archive");
    let src = match form % 4 {
        0 => {
            let file = dir.join("archive.tar");
            std::fs::write(&file, rest).expect("write the archive");
            match Source::open(&file) {
                Ok(s) => s,
                Err(_) => return,
            }
        }
        form => {
            let parts = pieces(rest);
            let oci = form != 2;
            if oci {
                std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
                    .expect("write oci-layout");
                std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir blobs");
            }
            let first = if oci { "index.json" } else { "manifest.json" };
            std::fs::write(dir.join(first), &parts[0]).expect("write the first file");
            for (n, p) in parts.iter().enumerate().skip(1) {
                let name = if oci {
                    format!("blobs/sha256/{}", digest::hex_of(&digest::of_bytes(p)))
                } else {
                    format!("p{n}")
                };
                std::fs::write(dir.join(name), p).expect("write a blob");
            }
            if form == 3 {
                let last = parts.last().expect("one part at least");
                std::fs::write(dir.join("manifest.json"), last).expect("write manifest.json");
            }
            Source::Dir(dir.clone())
        }
    };
    if let Ok(images) = archive::read(&src) {
        for c in &images {
            assert!(digest::is_sha256(&c.config_digest));
            for l in &c.layers {
                let _ = src.open_file(&l.path);
            }
        }
    }
    assert_eq!(scratch::listing(), ["archive"], "reading wrote beside the archive");
    let _ = std::fs::remove_dir_all(&dir);
});
