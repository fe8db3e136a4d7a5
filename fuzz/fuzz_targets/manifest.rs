//! Manifest files (JSON or YAML, multi-document, `kind: List`) as the manifest source reads
//! them: parsing and checking must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(docs) = edged::manifest::read::documents(text) {
        for doc in &docs {
            let _ = edged::manifest::check::check(doc, "fuzz.yaml", "node");
        }
    }
});
