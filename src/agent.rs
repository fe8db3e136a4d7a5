//! The agent: every subsystem a task on one small smol executor, talking over async-channel.

use crate::flags::Flags;
use crate::metamanager::{MetaManager, Offline, Store};
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
    let meta = Arc::new(MetaManager::new(store, to_edged, Arc::new(Offline)));
    tracing::info!(node = %node, root = %flags.root_dir.display(), "edged starting");
    let ex = smol::LocalExecutor::new();
    if let Some(dir) = flags.pod_manifest_path.clone() {
        let period = flags.file_check_frequency.0;
        ex.spawn(crate::manifest::run(
            dir,
            period,
            node.clone(),
            meta.clone(),
        ))
        .detach();
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
