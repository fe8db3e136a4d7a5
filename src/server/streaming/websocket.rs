//! websocket transport of streaming sessions (placeholder until the transport lands).

use super::{Dial, Session, StreamOptions};
use crate::server::http::Request;
use smol::io::{AsyncRead, AsyncWrite};

/// Whether the request asks for this upgrade.
pub fn is_upgrade(_req: &Request) -> bool {
    false
}

/// Serves one exec/attach session.
pub async fn serve_remotecommand<S: AsyncRead + AsyncWrite + Unpin>(
    _s: &mut S,
    _early: Vec<u8>,
    _req: &Request,
    _opts: StreamOptions,
    _session: Session,
) {
}

/// Serves one port-forward connection.
pub async fn serve_portforward<S: AsyncRead + AsyncWrite + Unpin>(
    _s: &mut S,
    _early: Vec<u8>,
    _req: &Request,
    _dial: Dial,
) {
}
