//! Manifest files (JSON or YAML, multi-document, `kind: List`) as the manifest source reads
//! them: parsing and checking must never panic, whatever the bytes. Seeds (a pod, and
//! files nested 1,000-2,000 levels deep that the depth scan must refuse at once) are kept in
//! `fuzz/seeds/manifest/`: `cargo fuzz run manifest fuzz/corpus/manifest fuzz/seeds/manifest`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(docs) = edged::manifest::read::documents(text) {
        for doc in &docs {
            let _ = edged::manifest::check::check(doc, "fuzz.yaml", "node");
        }
    }
});
