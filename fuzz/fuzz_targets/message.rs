//! Beehive messages as the cloud link receives them: decoding, and the typed views MetaManager
//! and the pod manager take of their content, must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = edged::message::Message::from_json(data) else { return };
    let _ = edged::message::Resource::parse(&msg.route.resource);
    let _ = edged::podmanager::decode_pod(&msg.content);
    let _ = edged::api::decode::<edged::api::ConfigMap>("fuzz", &msg.content);
    let _ = edged::api::decode::<edged::api::Secret>("fuzz", &msg.content).map(|s| s.values());
    let _ = msg.response(serde_json::json!("OK")).to_json();
});
