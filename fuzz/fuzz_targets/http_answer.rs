//! Answers edged reads as a client: chunked bodies (the kubelet API's answers replayed through
//! the EdgeStream tunnel, the certificate server's), `edged exec`'s view of the kubelet API
//! (the error channel's Status, the pod list, an error answer) and the certificate the cloud's
//! certificate server signs (its validity read from the DER), and a pod's answer to an
//! httpGet probe or hook (status line, headers, bounded body, the redirect it asks). No input may panic; a chunked
//! body decodes the same whether it comes whole or a byte at a time, and a body chunked by our
//! encoder decodes back to itself.
#![no_main]

use edged::cli::exec;
use edged::cloudlink::{certs, chunked::ChunkedDecoder};
use edged::prober::handlers;
use edged::server::http;
use libfuzzer_sys::fuzz_target;

/// The body, the bytes used, and the outcome of decoding `input` fed in pieces of `step`.
fn dechunk(input: &[u8], step: usize) -> (Vec<u8>, usize, bool, bool) {
    let mut d = ChunkedDecoder::default();
    let (mut body, mut used) = (Vec::new(), 0);
    for piece in input.chunks(step.max(1)) {
        match d.decode(piece, &mut body) {
            Ok(n) => {
                used += n;
                if n < piece.len() {
                    break;
                }
            }
            Err(_) => return (body, used, false, d.is_done()),
        }
    }
    (body, used, true, d.is_done())
}

fuzz_target!(|data: &[u8]| {
    let whole = dechunk(data, data.len());
    let bytewise = dechunk(data, 1);
    assert_eq!(
        whole.2, bytewise.2,
        "the same bytes fail or not, however split"
    );
    if whole.2 {
        assert_eq!(whole, bytewise);
        assert!(whole.1 <= data.len());
    }
    if !data.is_empty() {
        let mut coded = http::chunk(data);
        coded.extend_from_slice(http::LAST_CHUNK);
        let (body, used, ok, done) = dechunk(&coded, 7);
        assert!(ok && done && used == coded.len());
        assert_eq!(body, data);
    }
    let _ = exec::exit_status(Some(data));
    let _ = exec::http_error(404, data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = exec::choose_container(&v, "default", "web");
    }
    if let Ok(a) = handlers::read_answer(&mut &data[..]) {
        assert!(a.body.len() <= 3 * handlers::MAX_BODY, "the body is bounded");
        if let Some(l) = &a.location {
            let _ = handlers::redirect_target(l, false, "127.0.0.1", 8080);
        }
    }
    let _ = certs::validity(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = certs::split_token(s);
    }
});
