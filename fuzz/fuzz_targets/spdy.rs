//! SPDY/3 as the kubelet API reads it from `kubectl exec`/`attach`/`port-forward` clients:
//! frames fed in two pieces (the first byte picks the cut), header blocks inflated with the
//! SPDY dictionary and decoded, the port-forward headers of each new stream, and the resize
//! JSON of exec's resize stream. No input may panic; every frame read, written again with our
//! encoder, must read back the same (header pairs compared by name, as the encoder groups them).
#![no_main]

use edged::server::streaming::spdy::{self, frame, zlib};
use libfuzzer_sys::fuzz_target;

/// A frame with its header pairs in a canonical order (the encoder joins pairs of one name).
fn canonical(f: frame::Frame) -> frame::Frame {
    use frame::Frame::*;
    let sorted = |mut h: frame::Headers| {
        h.sort_by(|a, b| a.0.cmp(&b.0));
        h
    };
    match f {
        SynStream {
            id,
            associated,
            priority,
            fin,
            headers,
        } => SynStream {
            id,
            associated,
            priority,
            fin,
            headers: sorted(headers),
        },
        SynReply { id, fin, headers } => SynReply {
            id,
            fin,
            headers: sorted(headers),
        },
        Headers { id, fin, headers } => Headers {
            id,
            fin,
            headers: sorted(headers),
        },
        other => other,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize).min(rest.len());
    let mut d = frame::Decoder::new();
    for piece in [&rest[..cut], &rest[cut..]] {
        d.feed(piece);
        loop {
            let f = match d.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) | Err(_) => break,
            };
            if let frame::Frame::SynStream { id, headers, .. } = &f {
                let _ = spdy::portforward_stream(*id, headers);
            }
            // Written on a fresh connection (our stored blocks may outgrow a frame that was
            // compressed: such a frame is not checked).
            let bytes = frame::encode(&f, &mut zlib::Deflater::default());
            if bytes.len() > 8 + frame::MAX_CONTROL {
                continue;
            }
            let mut again = frame::Decoder::new();
            again.feed(&bytes);
            let back = again
                .next_frame()
                .expect("a frame we encoded reads back")
                .expect("a whole frame was fed");
            assert_eq!(canonical(back), canonical(f));
        }
    }
    // The pieces alone: a header block, an inflater's stream, resize messages.
    let _ = frame::decode_headers(rest);
    let _ = zlib::Inflater::new().inflate(rest);
    let (_, used, _) = spdy::split_resizes(rest);
    assert!(used <= rest.len());
});
