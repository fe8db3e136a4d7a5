//! The CNI runtime side, as libcni runs a network config list: ADD through the plugins in
//! order with each result chained as the next one's `prevResult`, the final result cached;
//! DEL in reverse order with the cached config, arguments and result (idempotent: after a
//! failed ADD, with no cache, and with the netns gone); CHECK with the cached result. Calls
//! for one container are serialised; each plugin call is bounded by `--cni-timeout`.

use super::cache::{self, Entry};
use super::config::{self, NetConfList};
use super::exec::{self, Call};
use super::result;
use super::NetworkConfig;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The interface every pod gets.
pub const IFNAME: &str = "eth0";

/// One pod's side of a CNI call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodNetwork {
    /// CNI_CONTAINERID (and K8S_POD_INFRA_CONTAINER_ID): the sandbox's id.
    pub id: String,
    /// The pod's pinned network namespace.
    pub netns: std::path::PathBuf,
    /// Whether `netns` is still a pinned namespace (the runtime, which pins it, says so): a DEL
    /// of a pod whose namespace is gone passes an empty CNI_NETNS, as the CNI spec asks.
    pub netns_pinned: bool,
    /// The pod's namespace, name and uid (CNI_ARGS).
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid.
    pub uid: String,
    /// The capability arguments (see [`super::Capabilities::args`]).
    pub capability_args: Map<String, Value>,
}

impl PodNetwork {
    fn args(&self) -> Vec<(String, String)> {
        exec::pod_args(&self.namespace, &self.name, &self.id, &self.uid)
    }
}

/// What an ADD gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Attached {
    /// The network's name.
    pub network: String,
    /// The pod's IPs, IPv4 first.
    pub ips: Vec<IpAddr>,
}

/// The CNI runtime.
pub struct Cni {
    cfg: NetworkConfig,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// The CNI_NETNS a DEL passes: the path while the namespace is pinned, else empty (the
/// namespace is gone, as after a power cut: plugins then release what they hold outside it).
pub fn del_netns(path: &Path, pinned: bool) -> String {
    if pinned {
        path.display().to_string()
    } else {
        String::new()
    }
}

impl Cni {
    /// A runtime over `cfg`'s directories.
    pub fn new(cfg: NetworkConfig) -> Cni {
        Cni {
            cfg,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &NetworkConfig {
        &self.cfg
    }

    /// The network config now in the config dir (read at each call, as a network add-on may
    /// write it after the agent starts); broken files before it are logged.
    pub fn config(&self) -> Option<NetConfList> {
        let (found, problems) = config::load(&self.cfg.conf_dir);
        for p in problems {
            tracing::warn!(problem = %p, "CNI config file skipped");
        }
        found.map(|(_, l)| l)
    }

    fn lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Runs `command` through the plugins of `list` (in `order`), each with the previous
    /// result chained when `chain`, else with `prev` fixed. Returns the last result.
    #[allow(clippy::too_many_arguments)]
    fn run_list(
        &self,
        command: &str,
        list: &NetConfList,
        order: &[usize],
        netns: &str,
        id: &str,
        args: &[(String, String)],
        caps: &Map<String, Value>,
        prev: Option<Value>,
        chain: bool,
    ) -> Result<Option<Value>, String> {
        let mut prev = prev;
        for &i in order {
            let kind = list.plugin_type(i);
            let fail =
                |m: String| format!("CNI {command} network {:?}, plugin {kind}: {m}", list.name);
            let bin = exec::find_plugin(&self.cfg.bin_dirs, kind).map_err(fail)?;
            let call = Call {
                command,
                container_id: id,
                netns,
                ifname: IFNAME,
                args,
                bin_dirs: &self.cfg.bin_dirs,
            };
            let stdin = config::plugin_stdin(list, i, prev.as_ref(), caps);
            let out = exec::run(&bin, &exec::env(&call), &stdin, self.cfg.timeout).map_err(fail)?;
            if chain {
                prev = Some(result::parse(&out).map_err(fail)?);
            }
        }
        Ok(prev)
    }

    /// ADD: attaches the pod to the configured network. `None`: no network config (the pod
    /// keeps loopback only). A failed ADD is undone by a DEL before the error returns.
    pub fn add(&self, pod: &PodNetwork) -> Result<Option<Attached>, String> {
        let Some(list) = self.config() else {
            return Ok(None);
        };
        let lock = self.lock(&pod.id);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let netns = pod.netns.display().to_string();
        let args = pod.args();
        let order: Vec<usize> = (0..list.plugins.len()).collect();
        let undo = |why: &str| {
            let rev: Vec<usize> = order.iter().rev().copied().collect();
            if let Err(e) = self.run_list(
                "DEL",
                &list,
                &rev,
                &netns,
                &pod.id,
                &args,
                &pod.capability_args,
                None,
                false,
            ) {
                tracing::warn!(pod = %pod.uid, error = %e, after = why, "CNI DEL after a failed ADD failed");
            }
        };
        let res = match self.run_list(
            "ADD",
            &list,
            &order,
            &netns,
            &pod.id,
            &args,
            &pod.capability_args,
            None,
            true,
        ) {
            Ok(r) => r.unwrap_or(Value::Null),
            Err(e) => {
                undo(&e);
                return Err(e);
            }
        };
        let ips = result::pod_ips(&res, IFNAME);
        if ips.is_empty() {
            undo("no IP");
            return Err(format!(
                "CNI ADD network {:?}: the result gives {IFNAME} no IP address: {res}",
                list.name
            ));
        }
        let entry = Entry {
            kind: cache::KIND.into(),
            container_id: pod.id.clone(),
            config: crate::api::base64::encode(&list.bytes),
            if_name: IFNAME.into(),
            network_name: list.name.clone(),
            netns,
            cni_args: args.clone(),
            capability_args: pod.capability_args.clone(),
            result: Some(res),
        };
        if let Err(e) = cache::write(&self.cfg.cache_dir, &entry) {
            // Without the cache a later DEL runs with the current config: still a DEL.
            tracing::warn!(pod = %pod.uid, error = %e, "CNI result not cached");
        }
        Ok(Some(Attached {
            network: list.name,
            ips,
        }))
    }

    /// The config list a DEL or CHECK of `entry` runs: the one of its ADD.
    fn cached_list(entry: &Entry) -> Option<NetConfList> {
        let bytes = crate::api::base64::decode(&entry.config).ok()?;
        config::parse("cached.conflist", &bytes).ok()
    }

    /// DEL: detaches the pod, with the cached ADD when there is one (else the current
    /// config). Nothing cached and no config: nothing to do. Idempotent.
    pub fn del(&self, pod: &PodNetwork) -> Result<(), String> {
        let lock = self.lock(&pod.id);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        let netns = del_netns(&pod.netns, pod.netns_pinned);
        let cached = cache::find(&self.cfg.cache_dir, &pod.id, IFNAME);
        if cached.is_empty() {
            if let Some(list) = self.config() {
                let rev: Vec<usize> = (0..list.plugins.len()).rev().collect();
                self.run_list(
                    "DEL",
                    &list,
                    &rev,
                    &netns,
                    &pod.id,
                    &pod.args(),
                    &pod.capability_args,
                    None,
                    false,
                )?;
            }
        }
        for (path, entry) in cached {
            let list = Self::cached_list(&entry).or_else(|| self.config());
            if let Some(list) = list {
                let rev: Vec<usize> = (0..list.plugins.len()).rev().collect();
                // CNI 0.4.0 and later DELs get the ADD's result.
                let prev = entry
                    .result
                    .clone()
                    .filter(|_| config::version_at_least(&list.cni_version, "0.4.0"));
                self.run_list(
                    "DEL",
                    &list,
                    &rev,
                    &netns,
                    &pod.id,
                    &entry.cni_args,
                    &entry.capability_args,
                    prev,
                    false,
                )?;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("remove {}: {e}", path.display())),
            }
        }
        drop(_g);
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pod.id);
        Ok(())
    }

    /// CHECK: asks the plugins whether the pod's network is as its ADD left it. No cached
    /// result, or a config that disables or predates CHECK: nothing to ask (Ok).
    pub fn check(&self, pod: &PodNetwork) -> Result<(), String> {
        let lock = self.lock(&pod.id);
        let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
        for (_, entry) in cache::find(&self.cfg.cache_dir, &pod.id, IFNAME) {
            let Some(list) = Self::cached_list(&entry) else {
                continue;
            };
            if list.disable_check || !config::version_at_least(&list.cni_version, "0.4.0") {
                continue;
            }
            // One plugin at a time, so a known false alarm of one does not skip the rest.
            for i in 0..list.plugins.len() {
                let checked = self.run_list(
                    "CHECK",
                    &list,
                    &[i],
                    &pod.netns.display().to_string(),
                    &pod.id,
                    &entry.cni_args,
                    &entry.capability_args,
                    entry.result.clone(),
                    false,
                );
                let Err(e) = checked else {
                    continue;
                };
                let result = entry.result.as_ref().unwrap_or(&Value::Null);
                if !false_check_failure(list.plugin_type(i), &e, result) {
                    return Err(e);
                }
                tracing::warn!(pod = %pod.uid, error = %e, "CNI CHECK failure ignored: portmap before the fix of containernetworking/plugins#819 checks IPv6 rules of an IPv4-only pod");
            }
        }
        Ok(())
    }

    /// The pod IPs of `id`'s cached ADD (empty: none cached).
    pub fn cached_ips(&self, id: &str) -> Vec<IpAddr> {
        cache::find(&self.cfg.cache_dir, id, IFNAME)
            .into_iter()
            .filter_map(|(_, e)| e.result)
            .flat_map(|r| result::pod_ips(&r, IFNAME))
            .collect()
    }
}

/// Whether a CHECK failure is portmap's known false alarm (containernetworking/plugins#819,
/// in Debian's 1.1.1): whenever ip6tables works it checks an IPv6 DNAT chain also for a pod
/// with no IPv6 address, which has none, and fails, after its IPv4 rules passed. `result`: the
/// cached ADD result.
pub fn false_check_failure(plugin: &str, error: &str, result: &Value) -> bool {
    plugin == "portmap"
        && error.contains("could not check ipv6 dnat")
        && !result::pod_ips(result, IFNAME).iter().any(IpAddr::is_ipv6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn portmaps_ipv6_false_alarm_is_told_apart() {
        let v4 = serde_json::json!({"interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.1.0.2/24", "interface": 0}]});
        let dual = serde_json::json!({"interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.1.0.2/24", "interface": 0},
                    {"address": "fd00::2/64", "interface": 0}]});
        let v6_msg = "CNI CHECK network \"n\", plugin portmap: could not check ipv6 dnat: chain CNI-DN-1 not found in iptables table nat";
        let v4_msg = "CNI CHECK network \"n\", plugin portmap: could not check ipv4 dnat: chain CNI-DN-1 not found";
        // (plugin, error, result) -> ignored
        let cases = [
            (("portmap", v6_msg, &v4), true),
            (("portmap", v6_msg, &dual), false),
            (("portmap", v4_msg, &v4), false),
            (("bridge", v6_msg, &v4), false),
            (("portmap", v6_msg, &Value::Null), true),
        ];
        for ((plugin, msg, res), want) in cases {
            assert_eq!(
                false_check_failure(plugin, msg, res),
                want,
                "{plugin} {msg} {res}"
            );
        }
    }
    use std::path::PathBuf;
    use std::time::Duration;

    /// A fake plugin that logs each call (command, plugin, stdin) and answers with a result
    /// built from its prevResult.
    fn fake_plugin(bin: &Path, name: &str, log: &Path, fail_on: &str) {
        let script = format!(
            r#"#!/bin/sh
input=$(cat)
echo "$CNI_COMMAND {name} $CNI_NETNS $input" >> {log}
if [ "$CNI_COMMAND" = "{fail_on}" ]; then echo '{{"code":11,"msg":"{name} says no"}}'; exit 1; fi
if [ "$CNI_COMMAND" = "ADD" ]; then
  echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"'$CNI_NETNS'"}}],"ips":[{{"address":"10.99.0.7/24","interface":0}}]}}'
fi
"#,
            log = log.display()
        );
        let p = bin.join(name);
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn setup(fail_on: &str) -> (tempfile::TempDir, Cni, PodNetwork, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let (conf, bin, cache) = (
            d.path().join("conf"),
            d.path().join("bin"),
            d.path().join("cache"),
        );
        for x in [&conf, &bin, &cache] {
            std::fs::create_dir_all(x).unwrap();
        }
        let log = d.path().join("log");
        fake_plugin(&bin, "first", &log, "");
        fake_plugin(&bin, "second", &log, fail_on);
        std::fs::write(
            conf.join("10-test.conflist"),
            r#"{"cniVersion":"1.0.0","name":"testnet","plugins":[{"type":"first"},
                {"type":"second","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let cni = Cni::new(NetworkConfig {
            conf_dir: conf,
            bin_dirs: vec![d.path().join("nothing"), bin],
            cache_dir: cache,
            timeout: Duration::from_secs(20),
        });
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            serde_json::json!([{"hostPort": 8080}]),
        );
        let pod = PodNetwork {
            id: "sb1".into(),
            netns: d.path().join("netns-file"),
            netns_pinned: false,
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            capability_args: caps,
        };
        (d, cni, pod, log)
    }

    fn calls(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    }

    #[test]
    fn add_chains_caches_and_del_reverses_with_the_cache() {
        let (d, cni, pod, log) = setup("");
        let a = cni.add(&pod).unwrap().unwrap();
        assert_eq!(a.network, "testnet");
        assert_eq!(a.ips, vec!["10.99.0.7".parse::<IpAddr>().unwrap()]);
        let text = std::fs::read_to_string(&log).unwrap();
        let second = text.lines().nth(1).unwrap();
        assert!(second.contains(r#""prevResult""#), "{second}");
        assert!(
            second.contains(r#""runtimeConfig":{"portMappings""#),
            "{second}"
        );
        assert!(d.path().join("cache/results/testnet-sb1-eth0").is_file());
        assert_eq!(cni.cached_ips("sb1"), a.ips);
        cni.check(&pod).unwrap();
        // The config changes: DEL still runs the ADD's list, in reverse.
        std::fs::remove_file(d.path().join("conf/10-test.conflist")).unwrap();
        cni.del(&pod).unwrap();
        assert_eq!(
            calls(&log),
            [
                "ADD first",
                "ADD second",
                "CHECK first",
                "CHECK second",
                "DEL second",
                "DEL first"
            ]
        );
        // The netns file is no pinned namespace: DEL passes an empty CNI_NETNS.
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.lines().last().unwrap().starts_with("DEL first  {"),
            "{text}"
        );
        assert!(!d.path().join("cache/results/testnet-sb1-eth0").exists());
        // Again: nothing cached, no config: nothing runs, still Ok.
        cni.del(&pod).unwrap();
        assert_eq!(calls(&log).len(), 6);
    }

    #[test]
    fn a_failed_add_is_undone_and_reported() {
        let (d, cni, pod, log) = setup("ADD");
        let e = cni.add(&pod).unwrap_err();
        assert!(e.contains("second says no") && e.contains("testnet"), "{e}");
        assert_eq!(
            calls(&log),
            ["ADD first", "ADD second", "DEL second", "DEL first"]
        );
        assert!(!d.path().join("cache/results/testnet-sb1-eth0").exists());
        // A DEL with nothing cached runs the current config.
        cni.del(&pod).unwrap();
        assert_eq!(calls(&log).len(), 6);
    }

    #[test]
    fn no_config_means_no_network() {
        let (d, cni, pod, log) = setup("");
        std::fs::remove_file(d.path().join("conf/10-test.conflist")).unwrap();
        assert_eq!(cni.add(&pod).unwrap(), None);
        cni.del(&pod).unwrap();
        assert!(calls(&log).is_empty());
    }

    #[test]
    fn a_failed_del_keeps_the_cache_for_the_next_try() {
        let (d, cni, pod, _log) = setup("DEL");
        cni.add(&pod).unwrap().unwrap();
        let e = cni.del(&pod).unwrap_err();
        assert!(e.contains("CNI DEL") && e.contains("second says no"), "{e}");
        assert!(d.path().join("cache/results/testnet-sb1-eth0").is_file());
    }

    #[test]
    fn del_netns_is_empty_when_the_namespace_is_gone() {
        assert_eq!(del_netns(Path::new("/a/net"), true), "/a/net");
        assert_eq!(del_netns(Path::new("/a/net"), false), "");
    }
}
