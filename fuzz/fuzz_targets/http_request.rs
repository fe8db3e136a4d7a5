//! Request heads as the kubelet API reads them off the network: parsing, routing and the
//! `/containerLogs` query must never panic, and a parsed head never claims more bytes than
//! it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((req, used))) = edged::server::http::parse_request(data) else { return };
    assert!(used <= data.len());
    let _ = edged::server::routes::route(&req.method, &req.segments);
    let _ = edged::server::routes::logs_query(&req.query, std::time::SystemTime::UNIX_EPOCH);
});
