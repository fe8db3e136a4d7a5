//! A full disk and eviction end to end (issue 20, item 4): the real `edged` binary with its
//! root dir on a small tmpfs (a real filesystem that really fills), real shims and runc
//! containers, driven through manifest files and looked at through `edged get pods -o json`
//! and runc's list.
//!
//! Run as root: `cargo test --test eviction`.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

use host::{tail, wait_until, Host, BIN, IMAGE};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// One agent whose root dir is a tmpfs of a given size.
struct Agent {
    dir: tempfile::TempDir,
    host: Host,
    child: Option<Child>,
    starts: u32,
    flags: Vec<String>,
}

impl Agent {
    /// Dirs (the root a tmpfs of `mib` MiB) with the test image imported; not started.
    fn new(tag: &str, mib: u64, flags: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix(&format!("edged-ev-{tag}-"))
            .tempdir_in("/tmp")
            .expect("temp dir");
        for d in ["root", "logs", "manifests"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        nix::mount::mount(
            Some("tmpfs"),
            &dir.path().join("root"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={mib}m,mode=0755").as_str()),
        )
        .expect("mount the root tmpfs");
        let a = Agent {
            host: Host::new(dir.path()),
            dir,
            child: None,
            starts: 0,
            flags: flags.iter().map(|s| s.to_string()).collect(),
        };
        a.host.import_test_image();
        a
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("agent-{}.log", self.starts)))
            .unwrap_or_default()
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("agent-{}.log", self.starts)))
            .unwrap();
        let child = Command::new(BIN)
            .arg("--root-dir")
            .arg(self.root())
            .arg("--pod-log-dir")
            .arg(self.dir.path().join("logs"))
            .arg("--pod-manifest-path")
            .arg(self.manifests())
            .args([
                "--file-check-frequency",
                "1s",
                "--node-name",
                "eviction-node",
                "--node-ip",
                "127.0.0.1",
                "--log-level",
                "debug",
                "--image-gc-high-threshold",
                "100",
            ])
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start edged");
        self.child = Some(child);
    }

    /// SIGTERM and wait (containers keep running).
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("edged did not stop within 20 s of SIGTERM");
    }

    fn write(&self, file: &str, pod: &Value) {
        let tmp = self.manifests().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(pod).unwrap()).unwrap();
        std::fs::rename(&tmp, self.manifests().join(file)).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.manifests().join(file)).unwrap();
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.host
            .get("pods")
            .into_iter()
            .find(|p| p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name)
    }

    fn wait_for<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        wait_until(what, || self.log(), f)
    }

    fn wait_pod(&self, ns: &str, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(&format!("pod {ns}/{name}: {what}"), || {
            self.pod(ns, name).filter(|p| ok(p))
        })
    }

    /// Ids of the containers runc runs for the pod (by the ids its status names).
    fn running_containers(&self, pod: &Value) -> Vec<String> {
        let ids = container_ids(pod);
        self.host
            .runc()
            .into_values()
            .filter(|e| e.status == "running" && ids.contains(&e.id))
            .map(|e| e.id)
            .collect()
    }

    /// Fills the root filesystem with `file` until a write fails for want of space.
    fn fill(&self, file: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root().join(file))
            .unwrap();
        let chunk = vec![0x5au8; 64 << 10];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the root dir: {e}"),
            }
        }
        // Then byte by byte, until not one more fits.
        while f.write_all(&[0]).is_ok() {}
        assert_eq!(available(&self.root()), 0, "the root dir is not full");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(keep) = std::env::var_os("EDGED_TEST_KEEP_LOGS") {
            let name = self.dir.path().file_name().unwrap_or_default().to_owned();
            let to = Path::new(&keep).join(name);
            let _ = std::fs::create_dir_all(&to);
            for n in 1..=self.starts {
                let f = format!("agent-{n}.log");
                let _ = std::fs::copy(self.dir.path().join(&f), to.join(&f));
            }
        }
        self.host.clean_up();
    }
}

/// Bytes free on the filesystem of `path`.
fn available(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    s.blocks_free() as u64 * s.fragment_size() as u64
}

fn container_ids(pod: &Value) -> Vec<String> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|k| pod["status"][k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| {
            c["containerID"]
                .as_str()
                .map(|s| s.rsplit("://").next().unwrap_or(s).to_string())
        })
        .collect()
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn running(p: &Value) -> bool {
    phase(p) == "Running"
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| {
                !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object())
            })
}

fn pod(ns: &str, name: &str, script: &str, volumes: Value) -> Value {
    let mounts: Vec<Value> = volumes
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| json!({"name": v["name"], "mountPath": format!("/{}", v["name"].as_str().unwrap_or("v"))}))
                .collect()
        })
        .unwrap_or_default();
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"terminationGracePeriodSeconds": 1,
                    "volumes": volumes,
                    "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "Never",
                                    "command": ["sh", "-c", script],
                                    "volumeMounts": mounts}]}})
}

/// Item 4 of issue 20: on a full root dir, removing a pod's file stops the pod and it goes;
/// a pod whose file is removed while the agent is down is not started again at its restart.
#[test]
fn a_full_root_dir_still_deletes_pods_and_a_restart_does_not_start_a_deleted_one() {
    // No eviction here: the full disk must not be resolved by evicting pods.
    let mut a = Agent::new("full", 48, &["--eviction-hard", ""]);
    a.start();
    let ns = "ev-full";
    for name in ["doomed", "keeper", "late"] {
        a.write(
            &format!("{name}.json"),
            &pod(ns, name, "sleep 1000", json!([])),
        );
    }
    let mut uids = std::collections::BTreeMap::new();
    for name in ["doomed", "keeper", "late"] {
        let p = a.wait_pod(ns, name, "Running", running);
        uids.insert(name, p["metadata"]["uid"].as_str().unwrap().to_string());
    }
    let reserve = a.root().join("reserved-space");
    assert_eq!(
        std::fs::metadata(&reserve).map(|m| m.len()).ok(),
        Some(4 * MIB),
        "the reserved space is made at start"
    );

    a.fill("filler");
    a.remove("doomed.json");
    a.wait_for("doomed's sandbox removed", || {
        (!a.host.sandbox_uids().contains(&uids["doomed"])).then_some(())
    });
    a.wait_for("doomed gone from the store", || {
        a.pod(ns, "doomed").is_none().then_some(())
    });
    assert!(
        a.log().contains("reserved space released"),
        "the delete did not need the reserve: the disk was not full?\n{}",
        tail(&a.log(), 30)
    );
    let keeper = a.pod(ns, "keeper").unwrap();
    assert_eq!(a.running_containers(&keeper).len(), 1, "keeper stopped");

    // The agent goes down; `late`'s file goes while it is down, and the disk is full again.
    a.stop();
    a.remove("late.json");
    a.fill("filler2");
    a.start();
    a.wait_for("late's sandbox removed", || {
        (!a.host.sandbox_uids().contains(&uids["late"])).then_some(())
    });
    a.wait_pod(ns, "keeper", "Running after the restart", running);
    assert!(
        !a.log().contains("cannot make the pod sandbox"),
        "a running pod's sandbox failed on the full disk:\n{}",
        tail(&a.log(), 30)
    );
    let keeper2 = a.pod(ns, "keeper").unwrap();
    assert_eq!(
        container_ids(&keeper2),
        container_ids(&keeper),
        "keeper was restarted"
    );
    let log = a.log();
    let started_again: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(&format!("{ns}/late"))
                && (l.contains("pod added") || l.contains("container started"))
        })
        .collect();
    assert!(
        started_again.is_empty(),
        "late was started again: {started_again:?}"
    );

    // Space comes back: the delete is stored and the reserve is made again.
    std::fs::remove_file(a.root().join("filler")).unwrap();
    std::fs::remove_file(a.root().join("filler2")).unwrap();
    a.wait_for("late gone from the store", || {
        a.pod(ns, "late").is_none().then_some(())
    });
    a.wait_for("the reserved space made again", || {
        (std::fs::metadata(&reserve).map(|m| m.len()).ok() == Some(4 * MIB)).then_some(())
    });
    a.stop();
}

/// An emptyDir with `sizeLimit: 5Mi` whose container writes 20 MB: the pod is evicted as the
/// kubelet evicts it, its containers stop and it is not started again (also after a restart).
#[test]
fn an_empty_dir_over_its_size_limit_evicts_the_pod() {
    let mut a = Agent::new("sizelimit", 96, &["--eviction-hard", ""]);
    a.start();
    let ns = "ev-limit";
    a.write(
        "hog.json",
        &pod(
            ns,
            "hog",
            "dd if=/dev/zero of=/cache/fill bs=1M count=20; sleep 1000",
            json!([{"name": "cache", "emptyDir": {"sizeLimit": "5Mi"}}]),
        ),
    );
    a.write(
        "fine.json",
        &pod(
            ns,
            "fine",
            "dd if=/dev/zero of=/cache/fill bs=1M count=2; sleep 1000",
            json!([{"name": "cache", "emptyDir": {"sizeLimit": "5Mi"}}]),
        ),
    );
    let running_hog = a.wait_pod(ns, "hog", "Running", running);
    let p = a.wait_pod(ns, "hog", "Failed", |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "Evicted", "{}", p["status"]);
    assert_eq!(
        p["status"]["message"],
        "Usage of EmptyDir volume \"cache\" exceeds the limit \"5Mi\". "
    );
    a.wait_for("hog's containers stopped", || {
        a.running_containers(&running_hog).is_empty().then_some(())
    });
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    a.wait_for("hog's volumes released", || {
        (!a.root().join("pods").join(&uid).exists()).then_some(())
    });
    let fine = a.wait_pod(ns, "fine", "Running", running);
    assert_eq!(a.running_containers(&fine).len(), 1);

    // Evicted stays evicted, also after the agent restarts.
    a.stop();
    a.start();
    a.wait_for("the restarted agent syncing fine", || {
        a.log().contains("manifest source started").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let p = a.pod(ns, "hog").unwrap();
    assert_eq!(phase(&p), "Failed", "{}", p["status"]);
    assert_eq!(p["status"]["reason"], "Evicted");
    assert!(
        !a.host.sandbox_uids().contains(&uid),
        "the evicted pod got a sandbox again"
    );
    assert!(
        !a.log()
            .lines()
            .any(|l| l.contains(&format!("{ns}/hog")) && l.contains("container started")),
        "the evicted pod was started again"
    );

    // Deleted and written again (writing less), it runs again.
    a.remove("hog.json");
    a.wait_for("hog gone", || a.pod(ns, "hog").is_none().then_some(()));
    a.write(
        "hog.json",
        &pod(
            ns,
            "hog",
            "dd if=/dev/zero of=/cache/fill bs=1M count=1; sleep 1000",
            json!([{"name": "cache", "emptyDir": {"sizeLimit": "5Mi"}}]),
        ),
    );
    a.wait_pod(ns, "hog", "Running again", running);
    a.stop();
}

/// DiskPressure: with `--eviction-hard nodefs.available<X` on a small filesystem, the pod using
/// the most disk above its request is evicted first, and only it (the pressure ends with it).
#[test]
fn disk_pressure_evicts_the_pod_using_the_most_disk_first() {
    // The threshold sits 50 MiB under what is free once the image is in; the pods then take
    // about 64 MiB (40 of them c-big's), and evicting c-big frees them again.
    let probe = Agent::new("probe", 128, &[]);
    let free = available(&probe.root());
    drop(probe);
    let limit = free / MIB - 50;
    let threshold = format!("nodefs.available<{limit}Mi");
    let mut a = Agent::new("pressure", 128, &["--eviction-hard", &threshold]);
    a.start();
    let ns = "ev-pressure";
    // Names sort against the expected order; a-requested writes much but within its request.
    a.write(
        "big.json",
        &pod(
            ns,
            "c-big",
            "dd if=/dev/zero of=/scratch/fill bs=1M count=40; sleep 1000",
            json!([{"name": "scratch", "emptyDir": {}}]),
        ),
    );
    a.write(
        "small.json",
        &pod(
            ns,
            "b-small",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=4; sleep 1000",
            json!([]),
        ),
    );
    let mut requested = pod(
        ns,
        "a-requested",
        "dd if=/dev/zero of=/scratch/fill bs=1M count=20; sleep 1000",
        json!([{"name": "scratch", "emptyDir": {}}]),
    );
    requested["spec"]["containers"][0]["resources"] =
        json!({"requests": {"ephemeral-storage": "64Mi"}});
    a.write("requested.json", &requested);
    let p = a.wait_pod(ns, "c-big", "evicted", |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "Evicted", "{}", p["status"]);
    let msg = p["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(&format!(
            "The node was low on resource: ephemeral-storage. Threshold quantity: {limit}Mi, available: "
        )) && msg.ends_with("has larger consumption of ephemeral-storage. "),
        "{msg}"
    );
    let disruption = p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget").cloned())
        .unwrap_or_else(|| panic!("no DisruptionTarget condition: {}", p["status"]));
    assert_eq!(disruption["reason"], "TerminationByKubelet");
    // The pressure is gone with it: two more cycles and the others still run.
    a.wait_for("space back above the threshold", || {
        (available(&a.root()) > limit * MIB).then_some(())
    });
    std::thread::sleep(Duration::from_secs(21));
    for name in ["a-requested", "b-small"] {
        let p = a.pod(ns, name).unwrap();
        assert!(running(&p), "{name} was evicted too: {}", p["status"]);
        assert_eq!(a.running_containers(&p).len(), 1, "{name}");
    }
    let evictions = a
        .log()
        .lines()
        .filter(|l| l.contains("evicting pod"))
        .count();
    assert_eq!(evictions, 1, "{}", tail(&a.log(), 40));
    a.stop();
}

/// The store's side of item 4: a batch delete on a full filesystem needs free pages (LMDB
/// copies on write) and fails; with the reserve installed, the same delete releases it and
/// succeeds. (The only test of this binary that installs the process's reserve.)
#[test]
fn a_store_delete_on_a_full_filesystem_takes_the_reserved_space() {
    use edged::metamanager::{Store, Table, Write};
    use edged::reserve;
    let dir = tempfile::Builder::new()
        .prefix("edged-ev-store-")
        .tempdir_in("/tmp")
        .unwrap();
    let fs = dir.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &fs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=24m"),
    )
    .unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(fs.clone());
    let store = Store::open(&fs.join("meta")).unwrap();
    // 2000 rows of 1 KiB in one transaction: some 700 leaf pages, none free.
    let rows: Vec<Write> = (0..2000)
        .map(|i| {
            Write::Put(
                Table::Pod,
                format!("ns/p{i:05}"),
                json!({"pad": "x".repeat(1024)}),
            )
        })
        .collect();
    store.apply(&rows).unwrap();
    // Deleting every other row touches every leaf: hundreds of new pages.
    let deletes: Vec<Write> = (0..2000)
        .step_by(2)
        .map(|i| Write::Delete(Table::Pod, format!("ns/p{i:05}")))
        .collect();
    let fill = |name: &str| {
        let mut f = std::fs::File::create(fs.join(name)).unwrap();
        let chunk = vec![1u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[1]).is_ok() {}
    };
    fill("filler");
    let e = store
        .apply(&deletes)
        .expect_err("a delete of 1000 rows fit on a full filesystem: this test proves nothing");
    assert!(e.is_no_space(), "{e}");
    assert_eq!(store.list(Table::Pod).unwrap().len(), 2000, "all or none");

    // Room for the reserve, the reserve made, the filesystem full again.
    let filler = std::fs::OpenOptions::new()
        .write(true)
        .open(fs.join("filler"))
        .unwrap();
    let len = filler.metadata().unwrap().len();
    filler.set_len(len - 6 * MIB).unwrap();
    let r = reserve::install(&fs, 4 * MIB);
    assert!(r.is_held(), "the reserve was not made");
    fill("filler2");
    store.apply(&deletes).unwrap();
    assert!(!r.is_held(), "the reserve is still there");
    assert_eq!(store.list(Table::Pod).unwrap().len(), 1000);
    // Single deletes go through too (on what the reserve left).
    for i in (1..2000).step_by(2).take(20) {
        assert!(store.delete(Table::Pod, &format!("ns/p{i:05}")).unwrap());
    }
}

/// At start the manifest directory is read before stored pods run: a pod whose file went while
/// the agent was down is deleted, and when the store cannot take the delete (a full disk; here
/// a store that refuses writes) the source names it, so the agent does not start it.
#[test]
fn a_delete_the_store_cannot_take_at_start_is_named() {
    use edged::metamanager::{MetaManager, Offline, Store, Table};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (meta_dir, manifests) = (dir.path().join("meta"), dir.path().join("manifests"));
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("late.json"),
        serde_json::to_string(&pod("ev-start", "late", "sleep 1", json!([]))).unwrap(),
    )
    .unwrap();
    smol::block_on(async {
        let (tx, _rx) = async_channel::unbounded();
        let mm = MetaManager::new(
            Arc::new(Store::open(&meta_dir).unwrap()),
            tx,
            Arc::new(Offline),
        );
        let s = edged::manifest::start(manifests.clone(), "n".into(), &mm).await;
        assert!(s.unstored_deletes().is_empty());
        assert_eq!(mm.store().list(Table::Pod).unwrap().len(), 1);
    });
    std::fs::remove_file(manifests.join("late.json")).unwrap();
    smol::block_on(async {
        let (tx, rx) = async_channel::unbounded();
        let store = Arc::new(Store::open_read_only(&meta_dir).unwrap());
        let mm = MetaManager::new(store, tx, Arc::new(Offline));
        let s = edged::manifest::start(manifests.clone(), "n".into(), &mm).await;
        assert_eq!(
            s.unstored_deletes().iter().collect::<Vec<_>>(),
            ["ev-start/pod/late"]
        );
        let handed = rx.try_recv().expect("the delete did not reach edged");
        assert_eq!(handed.to_string(), "delete ev-start/pod/late");
    });
}

/// Memory pressure: with a `memory.available` threshold above the machine's memory the signal
/// is always met; the first pod evicted is the one using the most memory above its request,
/// with the kubelet's message naming its container.
#[test]
fn memory_pressure_evicts_the_biggest_memory_user_first() {
    let mut a = Agent::new("memory", 64, &["--eviction-hard", "memory.available<1Ei"]);
    let ns = "ev-memory";
    // Written before the agent starts, so both run well before the first cycle (10 s).
    // /dev/shm is a tmpfs in the container: its pages count in the container's memory.
    a.write(
        "hog.json",
        &pod(
            ns,
            "b-hog",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40; sleep 1000",
            json!([]),
        ),
    );
    a.write("idle.json", &pod(ns, "a-idle", "sleep 1000", json!([])));
    a.start();
    let p = a.wait_pod(ns, "b-hog", "evicted", |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "Evicted", "{}", p["status"]);
    let msg = p["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(
            "The node was low on resource: memory. Threshold quantity: 1Ei, available: "
        ) && msg.contains("Container main was using ")
            && msg.ends_with("request is 0, has larger consumption of memory. "),
        "{msg}"
    );
    let log = a.log();
    let first = log
        .lines()
        .find(|l| l.contains("evicting pod"))
        .unwrap_or_default();
    assert!(first.contains(&format!("{ns}/b-hog")), "{first}");
    // The signal stays met: the other one goes in a later cycle, one per cycle.
    a.wait_pod(ns, "a-idle", "evicted", |p| phase(p) == "Failed");
    a.stop();
}
