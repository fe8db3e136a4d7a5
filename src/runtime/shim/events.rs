//! The events service shims publish to (`$TTRPC_ADDRESS`): edged serves
//! `containerd.services.events.ttrpc.v1.Events/Forward` itself and turns TaskExit and TaskOOM
//! into hints for the backend. Wait/State stay the truth.

use super::proto::{events, events_ttrpc, task_events};
use protobuf::Message;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the backend hears from shims.
#[derive(Clone, Debug, PartialEq)]
pub enum ShimEvent {
    /// A container's init process exited.
    Exit {
        container_id: String,
        exit_status: u32,
        at: SystemTime,
    },
}

struct Handler {
    tx: async_channel::Sender<crate::runtime::ExitEvent>,
    oom: Arc<Mutex<HashSet<String>>>,
}

/// Decodes an envelope into an event of interest (`None` for the others).
pub fn decode(env: &events::Envelope, oom: &Mutex<HashSet<String>>) -> Option<ShimEvent> {
    let any = env.event.as_ref()?;
    match any.type_url.trim_start_matches('/') {
        t if t.ends_with("containerd.events.TaskExit") => {
            let e = task_events::TaskExit::parse_from_bytes(&any.value).ok()?;
            // Exits of exec'd processes carry their exec id.
            if !e.id.is_empty() && e.id != e.container_id {
                return None;
            }
            let at = e
                .exited_at
                .as_ref()
                .map(|t| UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
                .unwrap_or_else(SystemTime::now);
            Some(ShimEvent::Exit {
                container_id: e.container_id,
                exit_status: e.exit_status,
                at,
            })
        }
        t if t.ends_with("containerd.events.TaskOOM") => {
            let e = task_events::TaskOOM::parse_from_bytes(&any.value).ok()?;
            tracing::info!(container = %e.container_id, "OOM event");
            oom.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(e.container_id);
            None
        }
        _ => None,
    }
}

impl events_ttrpc::Events for Handler {
    fn forward(
        &self,
        _ctx: &ttrpc::TtrpcContext,
        req: events::ForwardRequest,
    ) -> ttrpc::Result<protobuf::well_known_types::empty::Empty> {
        if let Some(env) = req.envelope.as_ref() {
            if let Some(ShimEvent::Exit {
                container_id,
                exit_status,
                at,
            }) = decode(env, &self.oom)
            {
                tracing::debug!(container = %container_id, exit_status, "exit event");
                let _ = self.tx.try_send(crate::runtime::ExitEvent {
                    container_id,
                    exit_code: exit_status as i32,
                    at,
                });
            }
        }
        Ok(Default::default())
    }
}

/// Serves the events service on a unix socket until dropped.
pub struct EventServer {
    server: Option<ttrpc::Server>,
    /// `unix://<socket>`, for the shims' `TTRPC_ADDRESS`.
    pub address: String,
}

impl EventServer {
    /// Binds `socket` (replacing a stale one) and starts serving.
    pub fn start(
        socket: &Path,
        tx: async_channel::Sender<crate::runtime::ExitEvent>,
        oom: Arc<Mutex<HashSet<String>>>,
    ) -> Result<EventServer, String> {
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("remove stale {}: {e}", socket.display())),
        }
        let address = format!("unix://{}", socket.display());
        let service = events_ttrpc::create_events(Arc::new(Handler { tx, oom }));
        let mut server = ttrpc::Server::new()
            .bind(&address)
            .map_err(|e| format!("bind {address}: {e}"))?
            // One worker per shim connection: events are few, threads per pod add up.
            .set_thread_count_min(0)
            .set_thread_count_default(1)
            .set_thread_count_max(2)
            .register_service(service);
        server
            .start()
            .map_err(|e| format!("serve {address}: {e}"))?;
        Ok(EventServer {
            server: Some(server),
            address,
        })
    }
}

impl Drop for EventServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}
