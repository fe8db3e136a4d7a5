//! The channel subprotocols of the kubelet's WebSocket streams (apimachinery's `wsstream`):
//! which names each endpoint accepts, how one is chosen, and how a message carries a channel.
//!
//! Each message starts with its channel: a byte (`channel.k8s.io` and the `vN.` forms, BINARY
//! messages) or an ASCII digit followed by the data in base64 (`base64.` forms, TEXT
//! messages). In `v5.channel.k8s.io` a client message `[255, n]` closes channel `n` (the client's
//! end of stdin).

/// One subprotocol an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    /// The `Sec-WebSocket-Protocol` name (empty: the client offered none).
    pub name: &'static str,
    /// The remote command protocol version it stands for (1 to 5).
    pub version: u8,
    /// Whether messages are base64 text (else binary).
    pub base64: bool,
}

const fn p(name: &'static str, version: u8, base64: bool) -> Protocol {
    Protocol {
        name,
        version,
        base64,
    }
}

/// What exec and attach accept: the kubelet's names, and the v5, v3 and v2 names client-go's
/// WebSocket executor offers (`pkg/util/remotecommand/constants.go`).
pub const REMOTECOMMAND: &[Protocol] = &[
    p("v5.channel.k8s.io", 5, false),
    p("v4.channel.k8s.io", 4, false),
    p("v4.base64.channel.k8s.io", 4, true),
    p("v3.channel.k8s.io", 3, false),
    p("v2.channel.k8s.io", 2, false),
    p("channel.k8s.io", 1, false),
    p("base64.channel.k8s.io", 1, true),
    p("", 1, false),
];

/// What port-forward accepts (the kubelet's `portforward/websocket.go`).
pub const PORTFORWARD: &[Protocol] = &[
    p("v4.channel.k8s.io", 4, false),
    p("v4.base64.channel.k8s.io", 4, true),
    p("", 4, false),
];

/// The channel byte of a client's close signal (`remotecommand.StreamClose`).
pub const STREAM_CLOSE: u8 = 255;

/// Chooses the first protocol the client offers that `table` holds (the client's order wins,
/// as in Go's `wsstream` handshake); no offer at all chooses the empty name. `Err`: the text
/// of the refusal.
pub fn negotiate(table: &[Protocol], offered: &[&str]) -> Result<Protocol, String> {
    let offered: Vec<&str> = if offered.is_empty() {
        vec![""]
    } else {
        offered.to_vec()
    };
    for o in &offered {
        if let Some(p) = table.iter().find(|p| p.name == *o) {
            return Ok(*p);
        }
    }
    let names: Vec<&str> = table
        .iter()
        .map(|p| p.name)
        .filter(|n| !n.is_empty())
        .collect();
    Err(format!(
        "none of the requested WebSocket subprotocols ({}) is supported; use one of {}",
        offered.join(", "),
        names.join(", ")
    ))
}

/// Whether the client may close a channel with [`STREAM_CLOSE`] (binary v5 only, as the
/// apiserver's `protocolSupportsStreamClose`).
pub fn supports_stream_close(p: &Protocol) -> bool {
    p.name == "v5.channel.k8s.io"
}

/// A message for `channel`: its opcode (BINARY or TEXT) and payload.
pub fn encode(p: &Protocol, channel: u8, data: &[u8]) -> (u8, Vec<u8>) {
    use crate::wsframe::opcode;
    if p.base64 {
        let mut out = vec![b'0'.wrapping_add(channel)];
        out.extend_from_slice(crate::api::base64::encode(data).as_bytes());
        (opcode::TEXT, out)
    } else {
        let mut out = Vec::with_capacity(data.len() + 1);
        out.push(channel);
        out.extend_from_slice(data);
        (opcode::BINARY, out)
    }
}

/// A client message, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Data for a channel.
    Data(u8, Vec<u8>),
    /// The client closed a channel (v5).
    Close(u8),
    /// An empty message (ignored, as the kubelet does).
    Empty,
}

/// Reads a client message. `Err`: a message to log and skip (bad base64, a close signal of the
/// wrong length), as the kubelet skips them.
pub fn decode(p: &Protocol, msg: &[u8]) -> Result<Inbound, String> {
    let Some((&first, rest)) = msg.split_first() else {
        return Ok(Inbound::Empty);
    };
    if supports_stream_close(p) && first == STREAM_CLOSE {
        return match rest {
            [ch] => Ok(Inbound::Close(*ch)),
            _ => Err(format!(
                "a close signal must name one channel, not {} bytes",
                rest.len()
            )),
        };
    }
    if p.base64 {
        let ch = first.wrapping_sub(b'0');
        let text = std::str::from_utf8(rest)
            .map_err(|_| format!("channel {ch}: a base64 message that is not text"))?;
        let data = crate::api::base64::decode(text).map_err(|e| format!("channel {ch}: {e}"))?;
        Ok(Inbound::Data(ch, data))
    } else {
        Ok(Inbound::Data(first, rest.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order() {
        let cases: &[(&[&str], Result<&str, &str>)] = &[
            (
                &["v5.channel.k8s.io", "v4.channel.k8s.io"],
                Ok("v5.channel.k8s.io"),
            ),
            (
                &["v4.channel.k8s.io", "v5.channel.k8s.io"],
                Ok("v4.channel.k8s.io"),
            ),
            (&["x", "base64.channel.k8s.io"], Ok("base64.channel.k8s.io")),
            (&[], Ok("")),
            (&["v3.channel.k8s.io"], Ok("v3.channel.k8s.io")),
            (&["portforward.k8s.io"], Err("portforward.k8s.io")),
            (&["V5.channel.K8S.io"], Err("v5.channel.k8s.io")),
        ];
        for (offered, want) in cases {
            let got = negotiate(REMOTECOMMAND, offered).map(|p| p.name);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, *w, "{offered:?}"),
                (Err(e), Err(says)) => assert!(e.contains(says), "{e}"),
                (g, w) => panic!("{offered:?}: {g:?} != {w:?}"),
            }
        }
        assert_eq!(
            negotiate(
                PORTFORWARD,
                &["v5.channel.k8s.io", "v4.base64.channel.k8s.io"]
            )
            .unwrap()
            .name,
            "v4.base64.channel.k8s.io"
        );
        assert!(negotiate(PORTFORWARD, &["channel.k8s.io"]).is_err());
    }

    #[test]
    fn messages_carry_their_channel() {
        let v5 = negotiate(REMOTECOMMAND, &["v5.channel.k8s.io"]).unwrap();
        let v4 = negotiate(REMOTECOMMAND, &["v4.channel.k8s.io"]).unwrap();
        let b64 = negotiate(REMOTECOMMAND, &["base64.channel.k8s.io"]).unwrap();
        assert_eq!(encode(&v5, 1, b"hi"), (0x2, vec![1, b'h', b'i']));
        // The apimachinery comment's example: "\n" on channel 1 is "1Cg==".
        assert_eq!(encode(&b64, 1, b"\n"), (0x1, b"1Cg==".to_vec()));
        assert_eq!(encode(&b64, 3, b""), (0x1, b"3".to_vec()));
        let cases: &[(&Protocol, &[u8], Result<Inbound, &str>)] = &[
            (&v5, &[0, b'x'], Ok(Inbound::Data(0, b"x".to_vec()))),
            (&v5, &[255, 0], Ok(Inbound::Close(0))),
            (&v5, &[255], Err("one channel")),
            (&v5, &[255, 0, 1], Err("one channel")),
            // Before v5, 255 is just a channel nobody reads.
            (&v4, &[255, 0], Ok(Inbound::Data(255, vec![0]))),
            (&v4, &[], Ok(Inbound::Empty)),
            // "foo\n" on channel 0, as the apimachinery comment writes it.
            (&b64, b"0Zm9vCg==", Ok(Inbound::Data(0, b"foo\n".to_vec()))),
            (&b64, b"0Zm9vCg=", Err("base64")),
            (
                &b64,
                b"4eyJXaWR0aCI6MX0=",
                Ok(Inbound::Data(4, b"{\"Width\":1}".to_vec())),
            ),
        ];
        for (p, msg, want) in cases {
            match (decode(p, msg), want) {
                (Ok(g), Ok(w)) => assert_eq!(&g, w, "{msg:?}"),
                (Err(e), Err(says)) => assert!(e.contains(says), "{e}"),
                (g, w) => panic!("{msg:?}: {g:?} != {w:?}"),
            }
        }
    }
}
