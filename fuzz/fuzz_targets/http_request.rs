//! Request heads as the kubelet API reads them off the network: parsing, routing, the
//! `/containerLogs`, exec and port-forward queries, and the SPDY and WebSocket upgrade
//! handshakes must never panic, and a parsed head never claims more bytes than it was given.
#![no_main]

use edged::server::streaming::{spdy, websocket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((req, used))) = edged::server::http::parse_request(data) else {
        return;
    };
    assert!(used <= data.len());
    let _ = edged::server::routes::route(&req.method, &req.segments);
    let _ = edged::server::routes::logs_query(&req.query, std::time::SystemTime::UNIX_EPOCH);
    for exec in [false, true] {
        let _ = edged::server::routes::stream_query(&req.query, exec);
    }
    for table in [spdy::REMOTECOMMAND_PROTOCOLS, spdy::PORTFORWARD_PROTOCOLS] {
        if let Err(r) = spdy::handshake(&req, table) {
            let _ = r.response();
        }
    }
    for table in [
        websocket::protocol::REMOTECOMMAND,
        websocket::protocol::PORTFORWARD,
    ] {
        match websocket::handshake(&req, table) {
            Ok(_) => {}
            Err(r) => {
                let _ = r.response();
            }
        }
    }
    let _ = websocket::ports(&req.query);
});
