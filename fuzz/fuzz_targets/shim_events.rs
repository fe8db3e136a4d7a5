//! The ttrpc frames shims write to edged's events service (`$TTRPC_ADDRESS`): the frame
//! header (length, stream id, type), the ttrpc `Request`, the `ForwardRequest` and its
//! `Envelope`, and the TaskExit/TaskOOM events inside ([`EventSink::answer`]).
//!
//! The first byte picks the form: 0, the rest is the connection's bytes as given; 1, the rest
//! is a `ForwardRequest` sent as a Forward call; 2 and 3, the rest is a TaskExit or TaskOOM
//! event sent in one (so the fuzzer reaches each layer of protobuf without building the
//! others). No input may panic; every request frame gets one response frame, and the bytes
//! left over are less than one frame.
#![no_main]

use edged::runtime::shim::proto::events;
use edged::runtime::shim::EventSink;
use libfuzzer_sys::fuzz_target;
use protobuf::Message;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A ttrpc request frame for the Forward call carrying `payload`.
fn forward_frame(payload: Vec<u8>) -> Vec<u8> {
    let mut req = ttrpc::Request::new();
    req.service = "containerd.services.events.ttrpc.v1.Events".into();
    req.method = "Forward".into();
    req.payload = payload;
    let body = req.write_to_bytes().expect("a request encodes");
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
    out.extend_from_slice(&body);
    out
}

fn forward_request(type_url: &str, event: &[u8]) -> Vec<u8> {
    let env = events::Envelope {
        topic: "/tasks/exit".into(),
        namespace: "edged".into(),
        event: protobuf::MessageField::some(protobuf::well_known_types::any::Any {
            type_url: type_url.into(),
            value: event.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    events::ForwardRequest {
        envelope: protobuf::MessageField::some(env),
        ..Default::default()
    }
    .write_to_bytes()
    .expect("a forward request encodes")
}

/// The request frames (type 1) among the whole frames at the start of `b`.
fn requests(b: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while b.len() >= at + 10 {
        let len = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        if len > 4 << 20 || b.len() < at + 10 + len {
            break;
        }
        n += usize::from(b[at + 8] == 1);
        at += 10 + len;
    }
    n
}

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let mut buf = match form % 4 {
        0 => rest.to_vec(),
        1 => forward_frame(rest.to_vec()),
        2 => forward_frame(forward_request("containerd.events.TaskExit", rest)),
        _ => forward_frame(forward_request("/containerd.events.TaskOOM", rest)),
    };
    let asked = requests(&buf);
    let (tx, rx) = async_channel::unbounded();
    let sink = EventSink::new(tx, Arc::new(Mutex::new(HashSet::new())));
    let Some(out) = sink.answer(&mut buf) else {
        return;
    };
    assert_eq!(count_responses(&out), asked);
    if buf.len() >= 10 {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert!(buf.len() < 10 + len, "a whole frame was left unread");
    }
    while let Ok(e) = rx.try_recv() {
        assert!(e.container_id.len() <= data.len());
    }
});

/// The response frames (type 2) `out` holds; all of it must be whole frames.
fn count_responses(out: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while at < out.len() {
        assert!(out.len() >= at + 10, "a cut response header");
        let len = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]) as usize;
        assert_eq!(out[at + 8], 2, "a response frame's type");
        assert!(out.len() >= at + 10 + len, "a cut response");
        n += 1;
        at += 10 + len;
    }
    n
}
