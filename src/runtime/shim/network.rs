//! The pod's network, asked of CNI when its sandbox is made and given back when it goes: the
//! only caller of [`crate::network::Cni`]. The sandbox record keeps the network an ADD was
//! begun for (a DEL is owed, even after a failed ADD, an agent kill or a power cut) and the
//! IPs it gave. A sandbox adopted from an earlier agent is CHECKed once; a failed CHECK
//! remakes the sandbox, as the kubelet does when a sandbox's network is broken.

use super::store::{self, SandboxMeta};
use super::{err, io_err, sandbox, ErrorKind, PodSandboxConfig, Result, ShimRuntime};
use crate::network::PodNetwork;
use std::time::Duration;

/// How long the containers of a pod whose network CHECK failed get to stop before the
/// sandbox is remade.
const BROKEN_NETWORK_GRACE: Duration = Duration::from_secs(10);

/// What to do about a sandbox's network when the sandbox is (re)made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NetAction {
    /// Nothing: hostNetwork, no CNI, or attached and already seen by this agent.
    Keep,
    /// Attached by an earlier agent: CHECK it.
    Check,
    /// ADD; `del_first`: a DEL is owed first (an earlier ADD, maybe cut short, or
    /// namespaces made again).
    Add { del_first: bool },
}

/// The decision, from the sandbox record and what just happened to its namespaces.
pub(super) fn net_action(
    cni: bool,
    host_network: bool,
    owed: bool,
    has_ips: bool,
    namespaces_new: bool,
    seen_by_this_agent: bool,
) -> NetAction {
    if !cni || host_network {
        NetAction::Keep
    } else if has_ips && !namespaces_new {
        if seen_by_this_agent {
            NetAction::Keep
        } else {
            NetAction::Check
        }
    } else {
        NetAction::Add { del_first: owed }
    }
}

impl ShimRuntime {
    fn pod_network(&self, sb: &SandboxMeta, config: Option<&PodSandboxConfig>) -> PodNetwork {
        let netns = sandbox::ns_file(&self.sandbox_dir(&sb.uid).join("ns"), "net");
        PodNetwork {
            id: sb.uid.clone(),
            netns_pinned: sandbox::is_pinned(&netns),
            netns,
            namespace: sb.namespace.clone(),
            name: sb.name.clone(),
            uid: sb.uid.clone(),
            capability_args: config.map(|c| c.network.args()).unwrap_or_default(),
        }
    }

    fn save_sandbox(&self, pod: &str, meta: &SandboxMeta) -> Result<()> {
        let _g = self.lock();
        store::write_json(&self.sandbox_dir(&meta.uid).join("meta.json"), meta)
            .map_err(|e| io_err(pod, "save sandbox", e))
    }

    /// Attaches a sandbox just made (or found) to the pod network; returns its record with
    /// the IPs, and points the pod's name at its IP in its hosts file. `namespaces_new`: its
    /// namespaces were made by this call.
    pub(super) fn attach_network(
        &self,
        config: &PodSandboxConfig,
        meta: SandboxMeta,
        namespaces_new: bool,
    ) -> Result<SandboxMeta> {
        let meta = self.attach(config, meta, namespaces_new)?;
        if let Some(ip) = meta.ips.first() {
            let hosts = crate::runtime::hosts_with_ip(&config.hosts, ip);
            std::fs::write(self.sandbox_dir(&meta.uid).join("hosts"), hosts)
                .map_err(|e| io_err(&meta.uid, "write sandbox files", e))?;
        }
        Ok(meta)
    }

    fn attach(
        &self,
        config: &PodSandboxConfig,
        mut meta: SandboxMeta,
        namespaces_new: bool,
    ) -> Result<SandboxMeta> {
        let pod = format!("{}/{}", meta.namespace, meta.name);
        let seen = !self
            .net_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(meta.uid.clone());
        let Some(cni) = &self.cni else {
            return Ok(meta);
        };
        let owed = meta.cni_network.is_some() || !meta.ips.is_empty();
        let action = net_action(
            true,
            meta.host_network,
            owed,
            !meta.ips.is_empty(),
            namespaces_new,
            seen,
        );
        let net = self.pod_network(&meta, Some(config));
        match action {
            NetAction::Keep => return Ok(meta),
            NetAction::Check => {
                let check = cni.check(&net);
                let Err(e) = check else {
                    tracing::info!(pod = %pod, ips = ?meta.ips, "pod network CHECK passed: adopted");
                    return Ok(meta);
                };
                // As the kubelet: a sandbox whose network is broken is made again.
                tracing::warn!(pod = %pod, error = %e, "pod network CHECK failed: the sandbox is made again");
                self.stop_pod_containers(&meta.uid, BROKEN_NETWORK_GRACE)?;
                cni.del(&net)
                    .map_err(|e| err(&pod, "network teardown (CNI DEL)", ErrorKind::Other, e))?;
                {
                    let _g = self.lock();
                    sandbox::remove(&self.sandbox_dir(&meta.uid).join("ns"))
                        .map_err(|e| err(&pod, "remove sandbox", ErrorKind::Other, e))?;
                    meta.cni_network = None;
                    meta.ips.clear();
                }
                self.save_sandbox(&pod, &meta)?;
                return crate::runtime::Runtime::run_pod_sandbox(self, config).map(|_| {
                    store::read_json(&self.sandbox_dir(&meta.uid).join("meta.json")).unwrap_or(meta)
                });
            }
            NetAction::Add { del_first } => {
                if del_first {
                    cni.del(&net).map_err(|e| {
                        err(&pod, "network teardown (CNI DEL)", ErrorKind::Other, e)
                    })?;
                }
            }
        }
        // No network configured and nothing owed: loopback only, and nothing written (every
        // sync of a running pod comes here; a full disk must not fail it).
        if !owed && cni.config().is_none() {
            return Ok(meta);
        }
        // Recorded before the ADD: whatever happens to it, a DEL is owed from now on.
        meta.cni_network = Some(String::new());
        meta.ips.clear();
        self.save_sandbox(&pod, &meta)?;
        match cni.add(&net) {
            Ok(None) => {
                meta.cni_network = None;
                tracing::debug!(pod = %pod, "no CNI network configured: loopback only");
            }
            Ok(Some(a)) => {
                meta.cni_network = Some(a.network);
                meta.ips = a.ips.iter().map(|i| i.to_string()).collect();
                tracing::info!(pod = %pod, ips = ?meta.ips, "pod network attached");
            }
            Err(e) => {
                return Err(err(&pod, "network setup (CNI ADD)", ErrorKind::Other, e));
            }
        }
        self.save_sandbox(&pod, &meta)?;
        Ok(meta)
    }

    /// Gives the pod's network back before its sandbox goes (DEL with the cached ADD; the
    /// namespace may be gone). Nothing owed: nothing runs.
    pub(super) fn detach_network(&self, pod_uid: &str) -> Result<()> {
        self.net_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pod_uid);
        let Some(cni) = &self.cni else {
            return Ok(());
        };
        let meta: Option<SandboxMeta> =
            store::read_json(&self.sandbox_dir(pod_uid).join("meta.json")).ok();
        let owed = meta
            .as_ref()
            .is_some_and(|m| m.cni_network.is_some() || !m.ips.is_empty())
            || !crate::network::cache::find(
                &cni.settings().cache_dir,
                pod_uid,
                crate::network::cni::IFNAME,
            )
            .is_empty();
        if !owed || meta.as_ref().is_some_and(|m| m.host_network) {
            return Ok(());
        }
        let meta = meta.unwrap_or_else(|| SandboxMeta {
            uid: pod_uid.into(),
            namespace: String::new(),
            name: String::new(),
            hostname: String::new(),
            host_network: false,
            host_pid: false,
            host_ipc: false,
            share_pid: false,
            labels: Default::default(),
            created_ns: 0,
            ready: false,
            boot_id: String::new(),
            cni_network: None,
            ips: Vec::new(),
        });
        cni.del(&self.pod_network(&meta, None))
            .map_err(|e| err(pod_uid, "network teardown (CNI DEL)", ErrorKind::Other, e))?;
        tracing::info!(pod = pod_uid, "pod network detached");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_sandbox_needs_of_the_network() {
        use NetAction::*;
        // (cni, hostNetwork, owed, has ips, namespaces new, seen) -> action
        let cases = [
            ((false, false, false, false, true, false), Keep),
            ((true, true, false, false, true, false), Keep),
            (
                (true, false, false, false, true, false),
                Add { del_first: false },
            ),
            // A failed or cut-short ADD before: DEL first.
            (
                (true, false, true, false, false, true),
                Add { del_first: true },
            ),
            // Attached, same agent: a resync.
            ((true, false, true, true, false, true), Keep),
            // Attached by an earlier agent.
            ((true, false, true, true, false, false), Check),
            // Namespaces remade (reboot): the old attachment is given back, then a new one.
            (
                (true, false, true, true, true, false),
                Add { del_first: true },
            ),
        ];
        for ((c, h, o, i, n, s), want) in cases {
            assert_eq!(
                net_action(c, h, o, i, n, s),
                want,
                "{:?}",
                (c, h, o, i, n, s)
            );
        }
    }
}
