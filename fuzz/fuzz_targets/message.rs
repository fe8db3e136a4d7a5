//! Beehive messages as the cloud link receives them: decoding, the typed views MetaManager,
//! the pod manager and the token manager take of their content (pods, ConfigMaps, Secrets, a
//! TokenRequest answer and its times, the DynamicController's answer to a list of services
//! and the service environment variables made of it, the fields of a pod the relay dropped and
//! the pod read back for them), and the answer written back must never
//! panic; a message written and read again keeps its route (content is not compared:
//! serde_json's default float parsing need not round-trip exactly), and an Application
//! written and read again is the same (its `ErrStatus`, free JSON, aside).
#![no_main]

use edged::message::Message;
use edged::metamanager::{relay, services};
use libfuzzer_sys::fuzz_target;
use std::time::UNIX_EPOCH;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::from_json(data) else {
        return;
    };
    let _ = edged::message::Resource::parse(&msg.route.resource);
    let _ = edged::podmanager::decode_pod(&msg.content);
    let _ = edged::api::decode::<edged::api::ConfigMap>("fuzz", &msg.content);
    let _ = edged::api::decode::<edged::api::Secret>("fuzz", &msg.content).map(|s| s.values());
    let spec = edged::token::TokenSpec {
        namespace: "default".into(),
        service_account: "default".into(),
        pod_name: "p".into(),
        pod_uid: "u".into(),
        audience: String::new(),
        expiration_seconds: 3600,
    };
    if let Ok(t) = edged::token::parse_answer(&spec, &msg.content) {
        let _ = edged::token::requires_refresh(&t, UNIX_EPOCH);
    }
    if let Ok(list) = services::parse_answer(&msg.content) {
        for ns in ["default", "app"] {
            let _ = edged::kuberuntime::svcenv::pod_service_env(&list.services, ns, true);
        }
        let _ = services::replace_writes(&[], &list.services);
    }
    if let Ok(app) = edged::api::decode::<edged::metamanager::application::Application>("fuzz", &msg.content) {
        let mut again: edged::metamanager::application::Application = edged::api::decode("fuzz", &app.to_content())
            .expect("a written Application reads back");
        let mut app = app;
        app.error.err_status = serde_json::Value::Null;
        again.error.err_status = serde_json::Value::Null;
        assert_eq!(again, app);
    }
    // A pod whose fields the relay dropped, and the pod read back for it.
    let _ = relay::dropped_fields(&msg.content);
    let _ = relay::reuse(&msg.content, &msg.content);
    let _ = relay::graft(&msg.content, &msg.content);
    if let Ok(pod) = relay::parse_answer(&msg.content) {
        let _ = relay::restore(&msg.content, &pod);
        let _ = relay::reuse(&msg.content, &pod);
        let _ = relay::graft(&msg.content, &pod);
    }
    if let Some(s) = msg.content.as_str() {
        let _ = edged::api::parse_rfc3339(s);
    }
    let _ = msg.response(serde_json::json!("OK")).to_json();
    let again = Message::from_json(&msg.to_json()).expect("a written message reads back");
    assert_eq!(again.route.resource, msg.route.resource);
});
