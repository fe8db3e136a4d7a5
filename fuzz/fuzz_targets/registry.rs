//! What a registry and its token service answer, as the puller reads them: manifests and
//! indexes (classified by `Content-Type` and body, the platform chosen), image configs,
//! `WWW-Authenticate` challenges, token answers, `Content-Range`, error bodies; and the
//! credentials a pull reads (docker `config.json`, `.dockercfg`) and the image references
//! pods and archives name. No input may panic; a normalized reference normalizes to itself,
//! and an index or manifest read and written again reads back the same.
#![no_main]

use edged::images::oci::{self, Index, Manifest, Platform};
use edged::images::reference;
use edged::images::registry::{auth, blob, client, creds::Keyring, manifest};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [&str; 6] = [
    "",
    "application/json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

fuzz_target!(|data: &[u8]| {
    for ct in CONTENT_TYPES {
        let _ = manifest::classify(ct, data);
    }
    if let Ok(idx) = serde_json::from_slice::<Index>(data) {
        for host in [
            oci::host_platform(),
            Platform {
                architecture: "arm".into(),
                os: "linux".into(),
                variant: Some("v7".into()),
            },
        ] {
            let _ = manifest::choose(&idx, &host);
        }
        let again: Index =
            serde_json::from_slice(&serde_json::to_vec(&idx).expect("an index serializes"))
                .expect("a written index reads back");
        assert_eq!(again.manifests, idx.manifests);
    }
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let again: Manifest =
            serde_json::from_slice(&serde_json::to_vec(&m).expect("a manifest serializes"))
                .expect("a written manifest reads back");
        assert_eq!((again.config, again.layers), (m.config, m.layers));
    }
    let _ = serde_json::from_slice::<oci::ImageConfig>(data);
    let _ = auth::parse_token(data);
    let _ = client::registry_message(401, data);
    for keyring in [
        Keyring::from_config_json(data),
        Keyring::from_dockercfg(data),
    ]
    .into_iter()
    .flatten()
    {
        let _ = keyring.lookup("docker.io");
        let _ = keyring.lookup("localhost:5000");
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = auth::parse_challenge(text);
    let _ = blob::parse_content_range(text);
    if let Ok(n) = reference::normalize(text) {
        assert_eq!(reference::normalize(&n).as_deref(), Ok(n.as_str()));
    }
});
