//! An agent joined to the CloudHub stand-in, for the tests that run pods through the cloud
//! (`tests/service_env.rs`, `tests/cloudcore_relay.rs`). The test crate declares `agent` and
//! `cloudhub` beside this module.

use crate::agent::Agent;
use crate::cloudhub::CloudHub;

/// An agent joined to `hub` (node name `tag`), with 1 s heartbeat and status periods and
/// debug logs; it returns once the node registered. The token file lives as long as the
/// agent.
pub fn cloud_agent(tag: &str, hub: &CloudHub) -> (Agent, tempfile::NamedTempFile) {
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), format!("{}\n", hub.token())).unwrap();
    let token_path = token.path().to_str().unwrap().to_string();
    let a = Agent::start(
        tag,
        &[
            "--cloudhub-server",
            &hub.ws_addr,
            "--cloudhub-https-server",
            &hub.https_addr,
            "--cloudstream-server",
            &hub.stream.addr,
            "--token-file",
            &token_path,
            "--heartbeat",
            "1s",
            "--status-update-frequency",
            "1s",
            "--node-status-update-frequency",
            "1s",
            "--log-level",
            "debug",
        ],
        &[],
    );
    a.wait_for("the node registered", || {
        hub.api
            .lock()
            .unwrap()
            .nodes
            .contains_key(tag)
            .then_some(())
    });
    (a, token)
}
