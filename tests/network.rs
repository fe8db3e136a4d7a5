//! Pod networking with real CNI plugins (issue 14): Debian's containernetworking-plugins
//! (bridge + host-local + portmap, in /usr/lib/cni) with a conflist each test writes, a bridge
//! and subnet of its own; what the tests make on the host (bridge, IPAM files, iptables rules)
//! is removed also when a test fails. Run as root: `cargo test --test network`.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;

use agent::{pod, sh, Agent};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PLUGINS: &str = "/usr/lib/cni";

/// A test network: its conflist in a config dir of its own; dropped, it takes its bridge,
/// IPAM reservations and iptables rules with it.
struct TestNet {
    name: String,
    bridge: String,
    /// `10.251.N`.
    prefix: String,
    dir: tempfile::TempDir,
}

impl TestNet {
    fn new(n: u8) -> TestNet {
        let dir = tempfile::tempdir().unwrap();
        let t = TestNet {
            name: format!("edged-test-{n}"),
            bridge: format!("edgedt{n}"),
            prefix: format!("10.251.{n}"),
            dir,
        };
        t.clean();
        std::fs::create_dir_all(t.conf_dir()).unwrap();
        let conf = json!({"cniVersion": "1.0.0", "name": t.name, "plugins": [
            {"type": "bridge", "bridge": t.bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("{}.0/24", t.prefix)}]]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]});
        std::fs::write(t.conf_dir().join("10-test.conflist"), conf.to_string()).unwrap();
        t
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--cni-conf-dir".into(),
            self.conf_dir().display().to_string(),
            "--cni-bin-dir".into(),
            PLUGINS.into(),
            "--cni-cache-dir".into(),
            self.cache_dir().display().to_string(),
        ]
    }

    fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Veths on the bridge.
    fn veths(&self) -> usize {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// IPs host-local holds in this network.
    fn reservations(&self) -> Vec<String> {
        std::fs::read_dir(Path::new("/var/lib/cni/networks").join(&self.name))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// nat rules naming this network (portmap's comments name it) or its subnet (the rules in
    /// portmap's per-pod CNI-DN chains: `-s SUBNET`, `--to-destination IP:PORT`).
    fn nat_rules(&self) -> Vec<String> {
        let out = Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .unwrap();
        let subnet = format!(" {}.", self.prefix);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A ") && (l.contains(&self.name) || l.contains(&subnet)))
            .map(str::to_string)
            .collect()
    }

    /// Result cache files.
    fn cached(&self) -> usize {
        std::fs::read_dir(self.cache_dir().join("results"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    /// The host ends of the veths on the bridge.
    fn veth_names(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// What of this network is still on the host: veths, IPAM reservations, nat rules naming
    /// the network or one of `ips` (portmap's DNAT and SETMARK rules), result cache files.
    fn left_behind(&self, ips: &[String]) -> Vec<String> {
        let mut left: Vec<String> = self.veth_names();
        left.extend(self.reservations().into_iter().map(|r| format!("IPAM {r}")));
        left.extend(self.nat_rules());
        for ip in ips {
            left.extend(rules_naming(ip));
        }
        if self.cached() > 0 {
            left.push(format!("{} cached results", self.cached()));
        }
        left
    }

    /// Waits until nothing of the network is left (see [`TestNet::left_behind`]).
    fn wait_released(&self, a: &Agent, ips: &[String]) {
        a.wait_for("network released", || {
            self.left_behind(ips).is_empty().then_some(())
        });
    }

    fn clean(&self) {
        // portmap's per-pod chains: the targets of the rules naming the network, and the
        // chains of the rules naming the subnet; the rules in shared chains go one by one.
        let mut chains = std::collections::BTreeSet::new();
        for rule in self.nat_rules() {
            let Some(rest) = rule.strip_prefix("-A ") else {
                continue;
            };
            let chain = rest.split(' ').next().unwrap_or_default();
            let target = rest
                .rsplit_once(" -j ")
                .and_then(|(_, t)| t.split(' ').next())
                .unwrap_or_default();
            for c in [chain, target] {
                if c.starts_with("CNI-DN-") {
                    chains.insert(c.to_string());
                }
            }
            if !chain.starts_with("CNI-DN-") {
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("iptables -t nat -D {rest}"))
                    .status();
            }
        }
        for c in chains {
            for op in ["-F", "-X"] {
                let _ = Command::new("iptables")
                    .args(["-t", "nat", op, &c])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(Path::new("/var/lib/cni/networks").join(&self.name));
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.clean();
    }
}

fn start(tag: &str, net: &TestNet, pods: &[Value]) -> Agent {
    let flags = net.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Agent::start(tag, &flags, pods)
}

/// nat rules naming `ip` as a pod address (`-s IP/32`, `--to-destination IP:PORT`).
fn rules_naming(ip: &str) -> Vec<String> {
    let out = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("{ip}/32")) || l.contains(&format!("{ip}:")))
        .map(str::to_string)
        .collect()
}

/// A pod serving `ip=<its status.podIP>` on port 80, published on `host_port`.
fn web(name: &str, host_port: u16) -> Value {
    let mut c = sh(
        "httpd",
        "mkdir -p /tmp/www && echo \"ip=$POD_IP\" > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www",
    );
    c["ports"] = json!([{"containerPort": 80, "hostPort": host_port}]);
    c["env"] =
        json!([{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]);
    pod(name, vec![c], json!({}))
}

/// The pod's IP and its first container's id, once it runs with an IP.
fn ip_and_container(a: &Agent, name: &str) -> (String, String) {
    let p = a.wait_pod(name, "running with an IP", |p| {
        p["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty())
            && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    (
        p["status"]["podIP"].as_str().unwrap().to_string(),
        p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// Waits for the page of a [`web`] pod through its hostPort.
fn page(a: &Agent, net: &TestNet, host_port: u16) -> String {
    a.wait_for("the hostPort answers", || {
        get(&format!("http://{}:{host_port}/index.html", net.gateway()))
    })
    .trim()
    .to_string()
}

/// Removes the pods' manifests and waits until the agent has no pod.
fn delete_all(a: &Agent, names: &[&str]) {
    for p in names {
        std::fs::remove_file(a.dir.path().join(format!("manifests/{p}.json"))).unwrap();
    }
    a.wait_for("pods gone", || a.host.get("pods").is_empty().then_some(()));
}

fn get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let (hostport, path) = addr.split_once('/').unwrap_or((addr, ""));
    let mut s =
        std::net::TcpStream::connect_timeout(&hostport.parse().ok()?, Duration::from_secs(2))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

#[test]
fn pods_get_ips_reach_each_other_and_leave_nothing_behind() {
    let net = TestNet::new(71);
    let server = pod(
        "server",
        vec![{
            let mut c = sh(
                "httpd",
                "mkdir -p /tmp/www && echo \"ip=$POD_IP\" > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www",
            );
            c["ports"] = json!([{"containerPort": 80, "hostPort": 18571}]);
            c["env"] = json!([{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]);
            c
        }],
        json!({}),
    );
    let hostnet = pod(
        "hostnet",
        vec![sh("sleep", "exec sleep 3600")],
        json!({"hostNetwork": true}),
    );
    let a = start("cni-e2e", &net, &[server, hostnet]);
    let s = a.wait_running("server");
    let ip = s["status"]["podIP"].as_str().expect("a pod IP").to_string();
    assert!(ip.starts_with(&format!("{}.", net.prefix)), "{ip}");
    assert_eq!(s["status"]["podIPs"][0]["ip"], ip.as_str());
    let h = a.wait_running("hostnet");
    assert_eq!(
        h["status"]["podIP"], "127.0.0.1",
        "hostNetwork: the node's IP"
    );
    assert_eq!(net.veths(), 1, "one veth: the hostNetwork pod has none");
    assert_eq!(net.reservations(), vec![ip.clone()]);
    // The hostPort, from the host, through portmap; the page holds the downward API's podIP.
    let page = a.wait_for("the hostPort answers", || {
        get(&format!("http://{}:18571/index.html", net.gateway()))
    });
    assert_eq!(page.trim(), format!("ip={ip}"));
    // Another pod reaches it by pod IP.
    a.add_pod(&pod(
        "client",
        vec![sh(
            "wget",
            &format!("wget -qO- http://{ip}/index.html | grep -q 'ip={ip}'"),
        )],
        json!({"restartPolicy": "Never"}),
    ));
    let c = a.wait_pod("client", "finished", |p| {
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
    });
    assert_eq!(c["status"]["phase"], "Succeeded", "{c}");
    let out = a.edged(&["get", "pods", "-o", "wide"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains(" server ") && l.contains(&ip)),
        "{table}"
    );
    assert!(!net.nat_rules().is_empty(), "portmap made its rules");
    // Every pod goes: nothing of the network stays.
    for p in ["server", "hostnet", "client"] {
        std::fs::remove_file(a.dir.path().join(format!("manifests/{p}.json"))).unwrap();
    }
    a.wait_for("pods gone", || a.host.get("pods").is_empty().then_some(()));
    // The result cache goes right after the plugins' DEL returns: waited for with the rest.
    let cached = || {
        std::fs::read_dir(net.cache_dir().join("results"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    };
    a.wait_for("network released and the result cache emptied", || {
        (net.veths() == 0
            && net.reservations().is_empty()
            && net.nat_rules().is_empty()
            && cached() == 0)
            .then_some(())
    });
}

#[test]
fn del_with_the_netns_gone_releases_the_address() {
    use edged::network::{Cni, NetworkConfig, PodNetwork};
    use edged::runtime::sandbox;
    let net = TestNet::new(72);
    let ns_dir = net.dir.path().join("ns");
    sandbox::create(
        &ns_dir,
        sandbox::NsSet {
            net: true,
            ipc: false,
            uts: false,
        },
        "",
    )
    .unwrap();
    let cni = Cni::new(NetworkConfig {
        conf_dir: net.conf_dir(),
        bin_dirs: vec![PathBuf::from(PLUGINS)],
        cache_dir: net.cache_dir(),
        timeout: Duration::from_secs(30),
    });
    let netns = sandbox::ns_file(&ns_dir, "net");
    let mut pod = PodNetwork {
        id: "edgedtestdelnetns".into(),
        netns_pinned: sandbox::is_pinned(&netns),
        netns,
        namespace: "default".into(),
        name: "gone".into(),
        uid: "u-gone".into(),
        capability_args: Default::default(),
    };
    let attached = cni.add(&pod).unwrap().expect("a network");
    assert_eq!(net.reservations(), vec![attached.ips[0].to_string()]);
    cni.check(&pod).unwrap();
    // A power cut: the namespace is gone, the cache and the reservation stay.
    sandbox::remove(&ns_dir).unwrap();
    pod.netns_pinned = sandbox::is_pinned(&pod.netns);
    assert!(!pod.netns_pinned);
    cni.del(&pod).unwrap();
    assert!(net.reservations().is_empty());
    // Again: nothing left to do, still fine.
    cni.del(&pod).unwrap();
}

#[test]
fn a_failing_plugin_keeps_the_pod_creating_with_its_message() {
    let net = TestNet::new(73);
    std::fs::write(
        net.conf_dir().join("10-test.conflist"),
        json!({"cniVersion": "1.0.0", "name": net.name,
               "plugins": [{"type": "edged-no-such-plugin"}]})
        .to_string(),
    )
    .unwrap();
    let a = start(
        "cni-fail",
        &net,
        &[pod("stuck", vec![sh("s", "sleep 3600")], json!({}))],
    );
    let p = a.wait_pod("stuck", "waiting on the network", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("edged-no-such-plugin"))
    });
    let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(w["reason"], "ContainerCreating", "{p}");
    assert!(w["message"].as_str().unwrap().contains("CNI ADD"), "{p}");
}

#[test]
fn fifty_create_delete_cycles_with_a_host_port_leave_nothing_behind() {
    let net = TestNet::new(74);
    let mut a = start("cni-cycles", &net, &[]);
    let cycle = {
        let mut c = sh("sleep", "exec sleep 3600");
        c["ports"] = json!([{"containerPort": 80, "hostPort": 18574}]);
        pod("cycle", vec![c], json!({}))
    };
    let mut ips = Vec::new();
    for i in 0..50 {
        a.add_pod(&cycle);
        let (ip, _) = ip_and_container(&a, "cycle");
        assert!(
            ip.starts_with(&format!("{}.", net.prefix)),
            "cycle {i}: {ip}"
        );
        assert_eq!(
            net.veth_names().len(),
            1,
            "cycle {i}: one veth; pod {}; log:\n{}",
            a.pod("cycle").unwrap_or_default(),
            a.agent_log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(net.reservations(), vec![ip.clone()], "cycle {i}");
        assert!(!rules_naming(&ip).is_empty(), "cycle {i}: portmap's rules");
        assert_eq!(net.cached(), 1, "cycle {i}: one cached result");
        delete_all(&a, &["cycle"]);
        net.wait_released(&a, std::slice::from_ref(&ip));
        ips.push(ip);
    }
    assert!(
        a.agent_log().lines().all(|l| !l.contains("ERROR")),
        "{}",
        a.agent_log()
    );
    // Everything, once more, after the last cycle: no rule of any of the 50 addresses.
    assert!(
        net.left_behind(&ips).is_empty(),
        "{:?}",
        net.left_behind(&ips)
    );
    a.kill9();
}

#[test]
fn pods_adopted_after_an_agent_kill_keep_their_network() {
    let net = TestNet::new(75);
    let idle = pod("idle", vec![sh("sleep", "exec sleep 3600")], json!({}));
    let mut a = start("cni-kill9", &net, &[web("web", 18575), idle]);
    let (ip_web, cid_web) = ip_and_container(&a, "web");
    let (ip_idle, cid_idle) = ip_and_container(&a, "idle");
    assert_eq!(page(&a, &net, 18575), format!("ip={ip_web}"));
    a.kill9();
    a.restart();
    // Both adopted: CHECK ran and passed, nothing restarted, the addresses kept.
    a.wait_for("both pods' network CHECKed", || {
        let log = a.agent_log();
        let passed = |p: &str| {
            log.lines()
                .any(|l| l.contains("CHECK passed") && l.contains(&format!("default/{p}")))
        };
        (passed("web") && passed("idle")).then_some(())
    });
    assert!(!a.agent_log().contains("CHECK failed"), "{}", a.agent_log());
    for (name, ip, cid) in [("web", &ip_web, &cid_web), ("idle", &ip_idle, &cid_idle)] {
        let p = a.wait_running(name);
        assert_eq!(p["status"]["podIP"], ip.as_str(), "{name}: {p}");
        let c = &p["status"]["containerStatuses"][0];
        assert_eq!(c["containerID"], cid.as_str(), "{name}: not restarted: {p}");
        assert_eq!(c["restartCount"], 0, "{name}: {p}");
    }
    assert_eq!(page(&a, &net, 18575), format!("ip={ip_web}"));
    let mut held = net.reservations();
    held.sort();
    let mut want = vec![ip_web.clone(), ip_idle.clone()];
    want.sort();
    assert_eq!(held, want);
    assert_eq!(net.veth_names().len(), 2);
    delete_all(&a, &["web", "idle"]);
    net.wait_released(&a, &[ip_web, ip_idle]);
}

#[test]
fn a_power_cut_releases_the_old_address_and_the_pod_comes_back_with_an_ip() {
    let net = TestNet::new(76);
    let mut a = start("cni-powercut", &net, &[web("web", 18576)]);
    let (ip1, cid1) = ip_and_container(&a, "web");
    assert_eq!(page(&a, &net, 18576), format!("ip={ip1}"));
    assert!(!rules_naming(&ip1).is_empty());
    // The agent, shims and containers die at once; the pinned netns goes with the mounts
    // (and the veth with it); the reservation, portmap's rules and the cache stay.
    a.power_cut();
    a.wait_for("the veth gone with the netns", || {
        net.veth_names().is_empty().then_some(())
    });
    assert_eq!(net.reservations(), vec![ip1.clone()]);
    assert_eq!(net.cached(), 1);
    a.restart();
    let p = a.wait_pod("web", "a new container", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
            && p["status"]["containerStatuses"][0]["containerID"] != cid1.as_str()
            && p["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty())
    });
    let ip2 = p["status"]["podIP"].as_str().unwrap().to_string();
    // DEL ran with the cached result: the old address and its rules are gone.
    assert_eq!(net.reservations(), vec![ip2.clone()], "{}", a.agent_log());
    if ip2 != ip1 {
        assert!(rules_naming(&ip1).is_empty(), "{:?}", rules_naming(&ip1));
    }
    assert_eq!(net.veth_names().len(), 1);
    assert_eq!(net.cached(), 1);
    assert_eq!(page(&a, &net, 18576), format!("ip={ip2}"));
    delete_all(&a, &["web"]);
    net.wait_released(&a, &[ip1, ip2]);
}

#[test]
fn a_failed_check_remakes_the_sandbox_with_a_working_network() {
    let net = TestNet::new(77);
    let mut a = start("cni-check", &net, &[web("web", 18577)]);
    let (ip1, cid1) = ip_and_container(&a, "web");
    assert_eq!(page(&a, &net, 18577), format!("ip={ip1}"));
    a.kill9();
    // Between agent runs the pod's veth goes (its host end; the pair goes with it).
    let veths = net.veth_names();
    assert_eq!(veths.len(), 1, "{veths:?}");
    let st = Command::new("ip")
        .args(["link", "del", &veths[0]])
        .status()
        .unwrap();
    assert!(st.success());
    a.restart();
    // The bridge plugin finds eth0 gone (not a false alarm of portmap's).
    a.wait_for("the failed CHECK", || {
        a.agent_log()
            .lines()
            .any(|l| l.contains("CHECK failed") && l.contains("plugin bridge"))
            .then_some(())
    });
    let p = a.wait_pod("web", "running again in a new sandbox", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
            && p["status"]["containerStatuses"][0]["containerID"] != cid1.as_str()
            && p["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty())
    });
    let ip2 = p["status"]["podIP"].as_str().unwrap().to_string();
    // A working network: the hostPort reaches the new container, which was given the new IP.
    assert_eq!(page(&a, &net, 18577), format!("ip={ip2}"));
    assert_eq!(net.reservations(), vec![ip2.clone()]);
    assert_eq!(net.veth_names().len(), 1);
    if ip2 != ip1 {
        assert!(rules_naming(&ip1).is_empty(), "{:?}", rules_naming(&ip1));
    }
    delete_all(&a, &["web"]);
    net.wait_released(&a, &[ip1, ip2]);
}
