//! The agent: every subsystem a task on one small smol executor, talking over async-channel.

use crate::cloudlink::{CloudLink, LinkConfig};
use crate::flags::Flags;
use crate::metamanager::{MetaManager, Offline, Store, Upstream};
use std::sync::Arc;

/// An agent start-up failure, naming what could not be set up.
#[derive(Debug)]
pub struct AgentError(pub String);

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AgentError {}

/// Runs the agent until SIGTERM or SIGINT. Running containers are left running.
pub fn run(flags: Flags) -> Result<(), AgentError> {
    let node = flags.node_name();
    let store =
        Store::open(&flags.root_dir.join("meta")).map_err(|e| AgentError(format!("{e}")))?;
    let store = Arc::new(store);
    let (to_edged, _from_meta) = async_channel::unbounded();
    // With --cloudhub-server the cloud link is MetaManager's way upstream; else none.
    let link = LinkConfig::from_flags(&flags)
        .map_err(|e| AgentError(format!("{e}")))?
        .map(CloudLink::new);
    let upstream: Arc<dyn Upstream> = match &link {
        Some(l) => Arc::new(l.clone()),
        None => Arc::new(Offline),
    };
    let meta = Arc::new(MetaManager::new(store, to_edged, upstream));
    tracing::info!(node = %node, root = %flags.root_dir.display(), "edged starting");
    let ex = smol::LocalExecutor::new();
    if let Some(l) = link {
        ex.spawn(crate::cloudlink::run(l, meta.clone())).detach();
    }
    smol::block_on(ex.run(async {
        wait_for_signal().await;
    }));
    tracing::info!("edged stopped; containers left running");
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_signal() {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    match Signals::new([Signal::Term, Signal::Int]) {
        Ok(mut s) => {
            if let Some(Ok(sig)) = s.next().await {
                tracing::info!(signal = ?sig, "stopping");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch signals; running until killed");
            smol::future::pending::<()>().await;
        }
    }
}
