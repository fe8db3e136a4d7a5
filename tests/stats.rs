//! `/stats/summary` and `/metrics/resource` end to end: the real agent with a real pod (shim +
//! runc) whose container burns CPU (under a 200m limit) and holds ~20 MB, beside one that
//! writes to its layer and to an emptyDir. The figures are checked against the cgroup and
//! /proc files this test reads itself (cumulative CPU bracketed by reads before and after the
//! scrape; working set = usage - inactive file), the pod's network against traffic this test
//! sends into the pod's namespace, and the Prometheus text parsed line by line. Run as root:
//! `cargo test --test stats`.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;

use agent::Agent;
use host::IMAGE;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What the stats test asks of the shared test agent.
trait StatsAgent {
    fn summary(&self) -> Value;
}

impl StatsAgent for Agent {
    fn summary(&self) -> Value {
        let (status, head, body) = self.get("/stats/summary");
        assert_eq!(status, 200, "{head}{}", String::from_utf8_lossy(&body));
        assert!(head.contains("application/json"), "{head}");
        serde_json::from_slice(&body).expect("summary is JSON")
    }
}

/// A host-side veth end, deleted when dropped (its peer in the pod goes with it).
struct Link(String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// The cgroup files, read by the test's own code (v2 when /sys/fs/cgroup is unified).

fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn hierarchy(controller: &str) -> PathBuf {
    if v2() {
        return PathBuf::from("/sys/fs/cgroup");
    }
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .split(',')
                .any(|c| c == controller)
                && !p.is_symlink()
        })
        .unwrap_or_else(|| panic!("no {controller} hierarchy"))
}

fn read_num(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

fn stat_key(p: &Path, key: &str) -> u64 {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {}", p.display()))
}

/// Cumulative CPU ns of a cgroup (`rel` like `edged/pod<uid>`; "" for the root).
fn cpu_ns(rel: &str) -> u64 {
    if v2() {
        stat_key(
            &Path::new("/sys/fs/cgroup").join(rel).join("cpu.stat"),
            "usage_usec",
        ) * 1000
    } else {
        read_num(&hierarchy("cpuacct").join(rel).join("cpuacct.usage"))
    }
}

/// Working set of a cgroup: usage less inactive file cache.
fn working_set(rel: &str) -> u64 {
    let d = hierarchy("memory").join(rel);
    let (usage, key) = if v2() {
        (read_num(&d.join("memory.current")), "inactive_file")
    } else {
        (
            read_num(&d.join("memory.usage_in_bytes")),
            "total_inactive_file",
        )
    };
    usage.saturating_sub(stat_key(&d.join("memory.stat"), key))
}

/// A `/proc/meminfo` field in bytes.
fn meminfo(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/meminfo"));
    kib * 1024
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn find<'a>(arr: &'a Value, key: &str, name: &str) -> &'a Value {
    arr.as_array()
        .unwrap_or_else(|| panic!("not a list: {arr}"))
        .iter()
        .find(|x| x[key] == name)
        .unwrap_or_else(|| panic!("no {name} in {arr}"))
}

fn pod_stats<'a>(s: &'a Value, name: &str) -> Option<&'a Value> {
    s["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name)
}

/// `name{labels} value [ms]` lines of a Prometheus text, by name; and the names with both
/// `# HELP` and `# TYPE`.
type Series = Vec<(BTreeMap<String, String>, f64, Option<i64>)>;

fn parse_prometheus(text: &str) -> (BTreeMap<String, Series>, Vec<String>) {
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    let (mut help, mut typed) = (Vec::new(), Vec::new());
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            help.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        let (name_labels, rest) = match l.find('}') {
            Some(i) => (&l[..=i], l[i + 1..].trim()),
            None => l.split_once(' ').unwrap(),
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, ls)) => {
                let ls = ls.trim_end_matches('}');
                let m = ls
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_string(), v.trim_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), m)
            }
            None => (name_labels.to_string(), BTreeMap::new()),
        };
        let mut w = rest.split(' ');
        let value: f64 = w.next().unwrap().parse().unwrap();
        let ts = w.next().map(|t| t.parse::<i64>().unwrap());
        series.entry(name).or_default().push((labels, value, ts));
    }
    let both = help.into_iter().filter(|h| typed.contains(h)).collect();
    (series, both)
}

#[test]
fn summary_and_resource_metrics_of_a_busy_pod() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "burner", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [
                {"name": "burn", "image": IMAGE, "imagePullPolicy": "Never",
                 "resources": {"limits": {"cpu": "200m", "memory": "100Mi"}},
                 "command": ["sh", "-c",
                    "x=$(head -c 20000000 /dev/zero | tr '\\0' a); echo holding; while :; do :; done"]},
                {"name": "writer", "image": IMAGE, "imagePullPolicy": "Never",
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                 "command": ["sh", "-c",
                    "head -c 1048576 /dev/zero > /big; head -c 2097152 /dev/zero > /data/f; echo written; sleep 1000"]}
            ]
        }
    });
    let a = Agent::start("stats-node", &[], &[pod]);
    let p = a.wait_for("burner running with both containers", || {
        let p = a.pod("burner")?;
        let running = p["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .filter(|c| c["state"]["running"].is_object())
            .count();
        (running == 2).then_some(p)
    });
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let cid = |name: &str| -> String {
        let c = find(&p["status"]["containerStatuses"], "name", name);
        let id = c["containerID"].as_str().unwrap();
        id.split_once("://").unwrap().1.to_string()
    };
    let pod_cg = format!("edged/pod{uid}");
    let burn_cg = format!("{pod_cg}/{}", cid("burn"));

    // Until the burner holds its memory and the writer has written.
    a.wait_for("the burner's memory and the writer's files", || {
        let s = a.summary();
        let ps = pod_stats(&s, "burner")?;
        let burn = ps["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "burn")?;
        let vol = ps["volume"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == "data")?;
        (burn["memory"]["workingSetBytes"].as_u64()? >= 20_000_000
            && vol["usedBytes"].as_u64()? >= 2 << 20)
            .then_some(())
    });

    // A link into the pod's network namespace, and traffic into it.
    let pid = std::fs::read_to_string(hierarchy("memory").join(&burn_cg).join("cgroup.procs"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let link = Link(format!("edst{}", std::process::id() % 100_000));
    run(Command::new("ip").args([
        "link", "add", &link.0, "type", "veth", "peer", "name", "eth0", "netns", &pid,
    ]));
    run(Command::new("nsenter").args([
        "-t",
        &pid,
        "-n",
        "ip",
        "addr",
        "add",
        "10.213.77.1/30",
        "dev",
        "eth0",
    ]));
    run(Command::new("nsenter").args(["-t", &pid, "-n", "ip", "link", "set", "eth0", "up"]));
    run(Command::new("ip").args(["addr", "add", "10.213.77.2/30", "dev", &link.0]));
    run(Command::new("ip").args(["link", "set", &link.0, "up"]));
    let sock = std::net::UdpSocket::bind("10.213.77.2:0").unwrap();
    for _ in 0..10 {
        sock.send_to(&[7u8; 1000], "10.213.77.1:9").unwrap();
    }

    // First scrape, bracketed by the test's own reads.
    let (node_before, pod_before, burn_before) = (cpu_ns(""), cpu_ns(&pod_cg), cpu_ns(&burn_cg));
    let ws_before = working_set(&burn_cg);
    let s1 = a.summary();
    let (node_after, pod_after, burn_after) = (cpu_ns(""), cpu_ns(&pod_cg), cpu_ns(&burn_cg));
    let ws_after = working_set(&burn_cg);

    // The node.
    let node = &s1["node"];
    assert_eq!(node["nodeName"], "stats-node");
    let btime = stat_key(Path::new("/proc/stat"), "btime");
    let start = edged::api::parse_rfc3339(node["startTime"].as_str().unwrap()).unwrap();
    assert_eq!(
        start
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        btime
    );
    let ncpu = u(&node["cpu"]["usageCoreNanoSeconds"]);
    assert!(
        (node_before..=node_after).contains(&ncpu),
        "node cpu {ncpu} not within {node_before}..={node_after}"
    );
    let total = meminfo("MemTotal");
    let nmem = &node["memory"];
    assert!(u(&nmem["usageBytes"]) <= total, "{nmem}");
    assert!(
        u(&nmem["workingSetBytes"]) <= u(&nmem["usageBytes"]),
        "{nmem}"
    );
    assert_eq!(
        u(&nmem["availableBytes"]) + u(&nmem["workingSetBytes"]),
        total,
        "available = capacity - working set: {nmem}"
    );
    let host_ifaces = node["network"]["interfaces"].as_array().unwrap();
    assert!(
        host_ifaces.iter().all(|i| i["name"] != "lo"),
        "{host_ifaces:?}"
    );
    let root_fs = nix::sys::statvfs::statvfs(&a.root()).unwrap();
    assert_eq!(
        u(&node["fs"]["capacityBytes"]),
        root_fs.blocks() as u64 * root_fs.fragment_size() as u64
    );
    assert!(u(&node["fs"]["usedBytes"]) > 0);
    assert!(
        u(&node["runtime"]["imageFs"]["usedBytes"]) > 0,
        "the busybox layer"
    );
    assert_eq!(
        u(&node["rlimit"]["maxpid"]),
        read_num(Path::new("/proc/sys/kernel/pid_max"))
    );
    assert!(u(&node["rlimit"]["curproc"]) > 0);

    // The pod and its containers.
    let ps = pod_stats(&s1, "burner").expect("the pod in the summary");
    assert_eq!(
        ps["podRef"],
        json!({"name": "burner", "namespace": "default", "uid": uid})
    );
    let pcpu = u(&ps["cpu"]["usageCoreNanoSeconds"]);
    assert!(
        (pod_before..=pod_after).contains(&pcpu),
        "pod cpu {pcpu} not within {pod_before}..={pod_after}"
    );
    let burn = find(&ps["containers"], "name", "burn");
    let bcpu = u(&burn["cpu"]["usageCoreNanoSeconds"]);
    assert!(
        (burn_before..=burn_after).contains(&bcpu),
        "container cpu {bcpu} not within {burn_before}..={burn_after}"
    );
    let bws = u(&burn["memory"]["workingSetBytes"]);
    let (lo, hi) = (ws_before.min(ws_after), ws_before.max(ws_after));
    assert!(
        bws + (1 << 20) >= lo && bws <= hi + (1 << 20),
        "container working set {bws} vs the cgroup's {ws_before}, {ws_after}"
    );
    assert_eq!(
        u(&burn["memory"]["availableBytes"]),
        (100 << 20) - bws,
        "the 100Mi limit less the working set"
    );
    assert!(u(&burn["memory"]["usageBytes"]) >= bws);
    assert!(
        u(&ps["memory"]["workingSetBytes"]) >= bws,
        "the pod holds its containers"
    );
    let started = find(&p["status"]["containerStatuses"], "name", "burn")["state"]["running"]
        ["startedAt"]
        .clone();
    assert_eq!(burn["startTime"], started);
    let writer = find(&ps["containers"], "name", "writer");
    assert!(u(&writer["rootfs"]["usedBytes"]) >= 1 << 20, "{writer}");
    assert!(u(&writer["logs"]["usedBytes"]) > 0, "{writer}");
    let data = find(&ps["volume"], "name", "data");
    assert!(u(&data["usedBytes"]) >= 2 << 20, "{data}");
    assert!(
        u(&ps["ephemeral-storage"]["usedBytes"]) >= (3 << 20),
        "layer + emptyDir: {}",
        ps["ephemeral-storage"]
    );
    assert!(u(&ps["process_stats"]["process_count"]) >= 2);
    // The pod's own namespace: its eth0 (what this test sent), never lo.
    let net = &ps["network"];
    assert_eq!(net["name"], "eth0", "{net}");
    assert!(u(&net["rxBytes"]) >= 10 * 1000, "{net}");
    let names: Vec<&str> = net["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eth0"], "{net}");

    // Second scrape: cumulative CPU goes on, and now there is a rate.
    std::thread::sleep(Duration::from_millis(1500));
    let s2 = a.summary();
    let ps2 = pod_stats(&s2, "burner").unwrap();
    let burn2 = find(&ps2["containers"], "name", "burn");
    assert!(u(&burn2["cpu"]["usageCoreNanoSeconds"]) >= bcpu);
    assert!(u(&ps2["cpu"]["usageCoreNanoSeconds"]) >= pcpu);
    assert!(u(&s2["node"]["cpu"]["usageCoreNanoSeconds"]) >= ncpu);
    let rate = u(&burn2["cpu"]["usageNanoCores"]);
    // Busy under a 200m quota: more than nothing, not more than the quota allows (with slack
    // for the quota's 100 ms periods at the window's edges).
    assert!(rate > 0 && rate <= 400_000_000, "burn at {rate} nanocores");
    assert!(u(&ps2["cpu"]["usageNanoCores"]) > 0);
    assert!(u(&s2["node"]["cpu"]["usageNanoCores"]) > 0);

    // CPU and memory only.
    let (_, _, body) = a.get("/stats/summary?only_cpu_and_memory=true");
    let small: Value = serde_json::from_slice(&body).unwrap();
    assert!(small["node"]["cpu"].is_object() && small["node"]["fs"].is_null());
    let sp = pod_stats(&small, "burner").unwrap();
    assert!(sp["memory"].is_object() && sp["network"].is_null() && sp["volume"].is_null());
    let (status, _, _) = a.get("/stats/summary?only_cpu_and_memory=maybe");
    assert_eq!(status, 400);

    // The resource metrics, as metrics-server reads them.
    let before = cpu_ns(&burn_cg);
    let (status, head, body) = a.get("/metrics/resource");
    let after = cpu_ns(&burn_cg);
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let text = String::from_utf8(body).unwrap();
    let (series, described) = parse_prometheus(&text);
    for family in [
        "node_cpu_usage_seconds_total",
        "node_memory_working_set_bytes",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
        "pod_cpu_usage_seconds_total",
        "pod_memory_working_set_bytes",
        "scrape_error",
    ] {
        assert!(series.contains_key(family), "{family} missing:\n{text}");
        assert!(described.iter().any(|d| d == family), "{family}: HELP/TYPE");
    }
    assert_eq!(series["scrape_error"][0].1, 0.0);
    let labels = |c: Option<&str>| -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("pod".to_string(), "burner".to_string()),
        ]);
        if let Some(c) = c {
            m.insert("container".into(), c.into());
        }
        m
    };
    let sample = |family: &str, l: &BTreeMap<String, String>| {
        series[family]
            .iter()
            .find(|(x, _, _)| x == l)
            .cloned()
            .unwrap_or_else(|| panic!("{family} {l:?} missing:\n{text}"))
    };
    let (_, secs, ts) = sample("container_cpu_usage_seconds_total", &labels(Some("burn")));
    let ns = (secs * 1e9).round() as u64;
    // f64 seconds keep about 16 digits: a microsecond of slack.
    assert!(
        ns + 1000 >= before && ns <= after + 1000,
        "container cpu {ns} not within {before}..={after}"
    );
    assert!(ts.is_some_and(|t| t > 1_600_000_000_000), "a time in ms");
    let (_, ws, _) = sample("container_memory_working_set_bytes", &labels(Some("burn")));
    assert!(ws >= 20_000_000.0, "{ws}");
    let (_, st, ts) = sample("container_start_time_seconds", &labels(Some("writer")));
    assert!(ts.is_none());
    let want = edged::api::parse_rfc3339(
        find(&p["status"]["containerStatuses"], "name", "writer")["state"]["running"]["startedAt"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
    .duration_since(std::time::UNIX_EPOCH)
    .unwrap()
    .as_secs_f64();
    assert_eq!(st, want);
    sample("pod_cpu_usage_seconds_total", &labels(None));
    sample("pod_memory_working_set_bytes", &labels(None));
    let (_, node_cpu, _) = series["node_cpu_usage_seconds_total"][0].clone();
    assert!(node_cpu * 1e9 >= ncpu as f64);
    drop(link);
}
