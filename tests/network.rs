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

    /// nat rules naming this network (portmap's comments name it).
    fn nat_rules(&self) -> Vec<String> {
        let out = Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&self.name))
            .map(str::to_string)
            .collect()
    }

    fn clean(&self) {
        for rule in self.nat_rules() {
            if let Some(rest) = rule.strip_prefix("-A ") {
                let _ = Command::new("sh")
                    .arg("-c")
                    .arg(format!("iptables -t nat -D {rest}"))
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
    a.wait_for("network released", || {
        (net.veths() == 0 && net.reservations().is_empty() && net.nat_rules().is_empty())
            .then_some(())
    });
    let cached = std::fs::read_dir(net.cache_dir().join("results"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    assert_eq!(cached, 0, "the result cache is emptied");
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
    let pod = PodNetwork {
        id: "edgedtestdelnetns".into(),
        netns: sandbox::ns_file(&ns_dir, "net"),
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
