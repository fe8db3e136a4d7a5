//! WebSocket (RFC 6455) as edged reads it: frames from the cloud's tunnel server (client side,
//! unmasked allowed) and from kubelet API clients (server side, masked only), fed in two pieces
//! (the first byte picks the cut), and the kubelet's channel messages of every subprotocol.
//! No input may panic; every message read, framed again by our encoders, reads back the same.
#![no_main]

use edged::server::streaming::websocket::protocol::{self, PORTFORWARD, REMOTECOMMAND};
use edged::wsframe::{self, opcode, Decoder};
use libfuzzer_sys::fuzz_target;

/// The largest message the decoders take here (small, so long lengths are refused quickly).
const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize).min(rest.len());
    for server in [false, true] {
        let mut d = if server {
            Decoder::server(MAX)
        } else {
            Decoder::new(MAX)
        };
        for piece in [&rest[..cut], &rest[cut..]] {
            d.feed(piece);
            while let Ok(Some(m)) = d.next_message() {
                assert!(m.payload.len() <= MAX);
                let _ = wsframe::close_code(&m.payload);
                // Framed again as the other side would: it reads back as it was.
                let bytes = if server {
                    wsframe::client_frame(m.opcode, &m.payload, [cut as u8, 1, 2, 3])
                } else {
                    wsframe::server_frame(m.opcode, &m.payload)
                };
                let mut again = if server {
                    Decoder::server(MAX)
                } else {
                    Decoder::new(MAX)
                };
                again.feed(&bytes);
                assert_eq!(again.next_message().ok().flatten().as_ref(), Some(&m));
                if m.opcode == opcode::BINARY || m.opcode == opcode::TEXT {
                    for p in REMOTECOMMAND.iter().chain(PORTFORWARD) {
                        let _ = protocol::decode(p, &m.payload);
                    }
                }
            }
        }
    }
    // The channel protocols on the raw bytes too, and their encoders' round trip.
    for p in REMOTECOMMAND.iter().chain(PORTFORWARD) {
        let _ = protocol::decode(p, rest);
        let (_, msg) = protocol::encode(p, 1, rest);
        assert_eq!(
            protocol::decode(p, &msg),
            Ok(protocol::Inbound::Data(1, rest.to_vec()))
        );
    }
});
