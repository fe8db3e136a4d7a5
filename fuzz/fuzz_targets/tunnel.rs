//! The EdgeStream tunnel's messages as CloudStream sends them (a uvarint connect id, a uvarint
//! type, the payload) and the connect requests they carry (KubeEdge's connector JSON, replayed
//! against the kubelet API). No input may panic; a message read, encoded again, reads back
//! the same; a connect request never yields a target or header that could split the request
//! it is replayed as.
#![no_main]

use edged::cloudlink::stream::{ConnectRequest, TunnelMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = TunnelMessage::decode(data) {
        assert_eq!(TunnelMessage::decode(&m.encode()), Ok(m.clone()));
        if let Ok(r) = ConnectRequest::parse(&m.data) {
            let clean = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n');
            assert!(clean(&r.target) && !r.target.contains(' '));
            assert!(r
                .headers
                .iter()
                .all(|(k, v)| clean(k) && clean(v) && !k.contains(':')));
            assert!(clean(&r.method));
            assert!(r.upgrade.as_deref().is_none_or(clean));
        }
    }
    let _ = ConnectRequest::parse(data);
});
