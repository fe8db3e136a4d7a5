//! Container and image GC on real parts, as root: containers of the real
//! containerd-shim-runc-v2 + runc over the real image store, images made by
//! scripts/make-test-image.sh, a tmpfs of a few tens of MiB as the image filesystem, and the
//! real agent binary. Tests share runc state and cgroups, so they run one at a time.

#[path = "common/rootfs.rs"]
mod rootfs;

#[allow(dead_code)]
#[path = "common/backend.rs"]
mod backend;

use backend::{serial, shim_config, Backend};
use edged::gc;
use edged::images::pressure::Marker;
use edged::images::{ErrorKind, Image, ImageStore};
use edged::runtime::shim::ShimRuntime;
use edged::runtime::{ContainerConfig, ContainerState, Runtime};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MIB: u64 = 1 << 20;
/// Padding of each test image: its own layer of this many MiB.
const PAD_MB: u64 = 4;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Builds an image archive named `name` (docker.io/library/... when short) with `pad_mb`
/// MiB of its own layer, in `dir`.
fn make_image(dir: &Path, name: &str, pad_mb: u64) -> PathBuf {
    let out = dir.join(format!("{}.tar", name.replace(['/', ':'], "_")));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-test-image.sh");
    let mut cmd = Command::new(script);
    cmd.arg(&out).args(["--name", name]);
    if pad_mb > 0 {
        cmd.args(["--pad-mb", &pad_mb.to_string()]);
    }
    let st = cmd.stdout(Stdio::null()).status().unwrap();
    assert!(st.success(), "make-test-image.sh {name} failed");
    out
}

/// A tmpfs of `mib` MiB mounted at a path, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(format!("size={mib}m").as_str()),
        )
        .unwrap();
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// Sets `last_used` / `imported_at` of images by name in the store's index (the test's
/// stand-in for time passing).
fn set_times(store: &ImageStore, times: &[(&str, Option<u64>, u64)]) {
    let p = store.dir().join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    for img in index["images"].as_array_mut().unwrap() {
        let names: Vec<String> = serde_json::from_value(img["names"].clone()).unwrap();
        if let Some((_, used, imported)) = times
            .iter()
            .find(|(n, _, _)| names.iter().any(|x| x.ends_with(&format!("/{n}"))))
        {
            img["last_used"] = serde_json::json!(used);
            img["imported_at"] = serde_json::json!(imported);
        }
    }
    let tmp = p.with_extension("test-tmp");
    std::fs::write(&tmp, serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
}

fn names(store: &ImageStore) -> BTreeSet<String> {
    store
        .list()
        .unwrap()
        .into_iter()
        .flat_map(|i| i.names)
        .map(|n| n.rsplit('/').next().unwrap().to_string())
        .collect()
}

fn image(store: &ImageStore, short: &str) -> Image {
    store.resolve(short).unwrap()
}

/// The low threshold that makes GC stop after exactly `k` removals of `pad` bytes each
/// from `used` bytes used (half a removal of margin on both sides).
fn low_for(total: u64, used: u64, pad: u64, k: u64) -> u8 {
    let target = used as f64 - (k as f64 - 0.5) * pad as f64;
    (target * 100.0 / total as f64).round() as u8
}

/// Creates and starts a container of `image` running `script`; its log goes to
/// `logs/<pod>/<name>/<attempt>.log`, with a rotated sibling beside it.
fn start(b: &Backend, pod: &str, name: &str, attempt: u32, image: &str, script: &str) -> String {
    let log_path = b
        .dir
        .path()
        .join("logs")
        .join(pod)
        .join(name)
        .join(format!("{attempt}.log"));
    std::fs::create_dir_all(log_path.parent().unwrap()).unwrap();
    std::fs::write(log_path.with_extension("log.20260101-000000"), b"rotated\n").unwrap();
    let config = ContainerConfig {
        attempt,
        image: image.into(),
        log_path,
        ..b.config(pod, name, script)
    };
    b.start(pod, &config)
}

/// A dead container: started, exited at once.
fn dead(b: &Backend, pod: &str, name: &str, attempt: u32, image: &str) -> String {
    let id = start(b, pod, name, attempt, image, &format!("echo run-{attempt}"));
    b.wait_exit(&id);
    id
}

/// What a container leaves on disk: bundle, rootfs snapshot, log and its rotated sibling.
fn traces(b: &Backend, id: &str) -> Vec<PathBuf> {
    let (root, logs) = (b.dir.path(), b.dir.path().join("logs"));
    let s = b.rt().container_status(id).unwrap();
    vec![
        root.join("runtime/containers").join(id),
        root.join("images/snapshots").join(id),
        s.log_path.clone(),
        s.log_path.with_extension("log.20260101-000000"),
    ]
    .into_iter()
    .filter(|p| p.starts_with(root) || p.starts_with(&logs))
    .collect()
}

fn listed(rt: &ShimRuntime) -> BTreeSet<String> {
    rt.list_containers()
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

#[test]
fn container_gc_applies_each_policy_to_real_containers() {
    let mut b = Backend::root("gc");
    let work = tempfile::tempdir().unwrap();
    let store = Arc::new(ImageStore::open(b.dir.path()).unwrap());
    store
        .import(&make_image(work.path(), "busybox:gc", 0))
        .unwrap();
    let img = "busybox:gc";
    b.open_with(shim_config("runc"), store);
    let rt = b.rt();
    let (p1, p2, p3) = (b.pod("one"), b.pod("two"), b.pod("gone"));

    // Old batch: the deleted pod's containers and two of p1/a.
    let x: Vec<String> = (0..2).map(|a| dead(&b, &p3, "x", a, img)).collect();
    let p1a: Vec<String> = (0..2).map(|a| dead(&b, &p1, "a", a, img)).collect();
    let mid = SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    // New batch.
    let p1a: Vec<String> = p1a
        .into_iter()
        .chain((2..4).map(|a| dead(&b, &p1, "a", a, img)))
        .collect();
    let p1b: Vec<String> = (0..2).map(|a| dead(&b, &p1, "b", a, img)).collect();
    let p2a: Vec<String> = (0..3).map(|a| dead(&b, &p2, "a", a, img)).collect();
    let web0 = dead(&b, &p2, "web", 0, img);
    let web1 = start(&b, &p2, "web", 1, img, "exec sleep 1000");
    assert_eq!(listed(rt).len(), 13);

    let all_traces: Vec<(String, Vec<PathBuf>)> = listed(rt)
        .into_iter()
        .map(|id| (id.clone(), traces(&b, &id)))
        .collect();
    for (id, ts) in &all_traces {
        for t in ts {
            assert!(t.exists(), "{id}: {} missing before GC", t.display());
        }
    }
    let gone = |ids: &[&String]| {
        for id in ids {
            let (_, ts) = all_traces.iter().find(|(i, _)| i == *id).unwrap();
            for t in ts {
                assert!(!t.exists(), "{id}: {} left after GC", t.display());
            }
        }
    };
    let policy = |min_age: u64, per: i32, max: i32| gc::container::Policy {
        min_age: Duration::from_secs(min_age),
        max_per_pod_container: per,
        max_containers: max,
    };
    let live: HashSet<String> = [p1.clone(), p2.clone()].into();
    let hour_later = mid + Duration::from_secs(3600);

    // MinAge 1 h, counted an hour after the old batch: the deleted pod's containers go
    // (all, oldest first); p1/a's old ones are candidates but no limit applies.
    let r = gc::container::collect_at(rt, &live, &policy(3600, -1, -1), hour_later);
    assert_eq!(r, x);
    gone(&[&x[0], &x[1]]);
    // MinAge with MaxPerPodContainer 0: only the old instances of p1/a go; its newest
    // (too young) stays, so they are not protected.
    let r = gc::container::collect_at(rt, &live, &policy(3600, 0, -1), hour_later);
    assert_eq!(r, vec![p1a[0].clone(), p1a[1].clone()]);
    gone(&[&p1a[0], &p1a[1]]);

    // MaxContainers 4 over 4 units (p1/a, p1/b, p2/a, p2/web): one each, fairly. p2/a had
    // the most and keeps no more than the others; web keeps its dead instance.
    let (n, t) = (listed(rt).len(), Instant::now());
    let r: Vec<String> = gc::container::collect(rt, &live, &policy(0, -1, 4));
    eprintln!(
        "container GC pass: {} of {n} containers removed in {:?}",
        r.len(),
        t.elapsed()
    );
    let want: BTreeSet<String> = [&p1a[2], &p1b[0], &p2a[0], &p2a[1]]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(r.iter().cloned().collect::<BTreeSet<_>>(), want, "{r:?}");
    let pos = |id: &String| r.iter().position(|x| x == id).unwrap();
    assert!(pos(&p2a[0]) < pos(&p2a[1]), "oldest first: {r:?}");
    gone(&[&p1a[2], &p1b[0], &p2a[0], &p2a[1]]);

    // MaxPerPodContainer 0: web's dead instance goes (its newest runs); the newest dead
    // instances of the others are kept for their pod workers.
    let r = gc::container::collect(rt, &live, &policy(0, 0, -1));
    assert_eq!(r, vec![web0.clone()]);
    gone(&[&web0]);
    assert!(gc::container::collect(rt, &live, &policy(0, 0, 0)).is_empty());

    // p1 deleted: its dead containers go, all of them.
    let live: HashSet<String> = [p2.clone()].into();
    let r = gc::container::collect(rt, &live, &policy(0, 1, -1));
    assert_eq!(
        r.iter().cloned().collect::<BTreeSet<_>>(),
        [p1a[3].clone(), p1b[1].clone()].into()
    );
    gone(&[&p1a[3], &p1b[1]]);

    // Left: p2/a's newest dead instance and the running web container, untouched.
    assert_eq!(listed(rt), [p2a[2].clone(), web1.clone()].into());
    assert_eq!(
        rt.container_status(&web1).unwrap().state,
        ContainerState::Running
    );
    for id in [&p2a[2], &web1] {
        let (_, ts) = all_traces.iter().find(|(i, _)| i == id).unwrap();
        assert!(ts.iter().all(|t| t.exists()), "{id} lost a file");
    }
    // Even with no pod left and every limit at zero, a running container stays.
    let r = gc::container::collect(rt, &HashSet::new(), &policy(0, 0, 0));
    assert_eq!(r, vec![p2a[2].clone()]);
    assert_eq!(listed(rt), [web1.clone()].into());
}

#[test]
fn image_gc_frees_lru_first_to_the_low_threshold_then_reports_pressure() {
    let mut b = Backend::root("igc");
    b.hold(Tmpfs::mount(&b.dir.path().join("images"), 40));
    let work = tempfile::tempdir().unwrap();
    let store = Arc::new(ImageStore::open(b.dir.path()).unwrap());
    let short = ["a:1", "b:1", "c:1", "d:1", "e:1", "used:1"];
    for n in short {
        store
            .import(&make_image(
                work.path(),
                &format!("example.com/{n}"),
                PAD_MB,
            ))
            .unwrap();
    }
    b.open_with(shim_config("runc"), store.clone());
    let (root, rt) = (b.dir.path(), b.rt());
    let pod = b.pod("user");
    let user = dead(&b, &pod, "c", 0, "example.com/used:1");

    // Times: imported two hours ago; c never used (goes first), then LRU: a, b, d, e.
    // `used` is the least recently used but a (dead) container has it.
    let now = now_secs();
    let old = now - 7200;
    set_times(
        &store,
        &[
            ("a:1", Some(now - 500), old),
            ("b:1", Some(now - 400), old),
            ("c:1", None, old),
            ("d:1", Some(now - 300), old),
            ("e:1", Some(now - 200), old),
            ("used:1", Some(now - 10_000), old),
        ],
    );
    // Imported just now: younger than the minimum GC age.
    store
        .import(&make_image(work.path(), "example.com/young:1", PAD_MB))
        .unwrap();
    let ids: Vec<Image> = ["c:1", "a:1", "b:1", "d:1", "e:1"]
        .iter()
        .map(|n| image(&store, &format!("example.com/{n}")))
        .collect();
    let base_layer = ids[0].layers[0].clone();
    assert!(ids
        .iter()
        .all(|i| i.layers[0] == base_layer && i.layers.len() == 2));

    let u = store.usage().unwrap();
    let low = low_for(u.total, u.used, PAD_MB * MIB, 3);
    let policy = gc::image::Policy {
        high_percent: low + 1,
        low_percent: low,
        min_age: Duration::from_secs(3600),
    };
    assert!(u.used_percent >= policy.high_percent, "{u:?} {policy:?}");
    let r = gc::image::collect(&store, rt, &policy);
    eprintln!(
        "image GC pass: {} images removed, {}% -> {}% in {:?}",
        r.removed.len(),
        r.used_before,
        r.used_after,
        r.took
    );
    let want: Vec<String> = ids[..3].iter().map(|i| i.id.clone()).collect();
    assert_eq!(
        r.removed, want,
        "never used first, then LRU, three to reach {low}%"
    );
    assert!(r.used_after <= low && !r.pressure, "{r:?}");
    assert_eq!(
        names(&store),
        ["d:1", "e:1", "used:1", "young:1"].map(String::from).into()
    );
    assert!(!Marker::path(store.dir()).exists());
    // Their own layers and blobs are gone; the shared busybox layer stays.
    for i in &ids[..3] {
        assert!(
            !store.layer_dir(&i.layers[1]).exists(),
            "{} layer left",
            i.id
        );
        for d in [&i.id, &i.manifest_digest] {
            let hex = d.trim_start_matches("sha256:");
            assert!(!store.dir().join("blobs/sha256").join(hex).exists());
        }
    }
    assert!(store.layer_dir(&base_layer).is_dir());
    for i in &ids[3..] {
        assert!(store.layer_dir(&i.layers[1]).is_dir());
    }

    // Thresholds no removal can meet: d and e go (LRU), the in-use and the young image
    // stay, and the disk is under pressure.
    let tight = gc::image::Policy {
        high_percent: 1,
        low_percent: 1,
        ..policy
    };
    let r = gc::image::collect(&store, rt, &tight);
    assert_eq!(
        r.removed,
        vec![ids[3].id.clone(), ids[4].id.clone()],
        "{r:?}"
    );
    assert!(r.pressure);
    assert_eq!(
        names(&store),
        ["used:1", "young:1"].map(String::from).into()
    );
    let p = Marker::read(store.dir()).expect("the pressure marker");
    assert_eq!(
        (p.used_percent, p.high_percent, p.low_percent),
        (r.used_after, 1, 1)
    );
    // Nothing more to remove: still pressure, nothing removed, the marker not rewritten.
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let marker = Marker::path(store.dir());
    let ino = inode(&marker);
    let again = gc::image::collect(&store, rt, &tight);
    assert!(again.pressure && again.removed.is_empty());
    assert_eq!(Marker::read(store.dir()).unwrap(), p);
    assert_eq!(inode(&marker), ino);

    // Imports are refused, in this process, through --image-dir's import_dir, and by the
    // CLI in its own.
    let extra = make_image(work.path(), "example.com/extra:1", 1);
    let e = store.import(&extra).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoSpace, "{e}");
    let msg = e.to_string();
    for part in [
        "disk pressure",
        &format!("{}% used", r.used_after),
        "high threshold of 1%",
        "edged image rm",
    ] {
        assert!(msg.contains(part), "{part:?} not in: {msg}");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&extra, dir.path().join("extra.tar")).unwrap();
    let rep = store.import_dir(dir.path()).unwrap();
    assert!(rep.imported.is_empty(), "{rep:?}");
    assert_eq!(rep.failed.len(), 1);
    assert_eq!(rep.failed[0].1.kind, ErrorKind::NoSpace);
    let (ok, _, err) = cli(root, &["image", "import", extra.to_str().unwrap()]);
    assert!(!ok && err.contains("disk pressure"), "{err}");
    assert!(!names(&store).contains("extra:1"));

    // The container goes: its snapshot is released and its image counts as used now.
    let before = now_secs();
    let snapshot = store.dir().join("snapshots").join(&user);
    assert!(snapshot.is_dir());
    rt.remove_container(&user).unwrap();
    assert!(!snapshot.exists() && !root.join("runtime/containers").join(&user).exists());
    let used = image(&store, "example.com/used:1");
    assert!(used.last_used.unwrap() >= before, "{used:?}");

    // Pressure ends: the marker goes and imports work again.
    let relaxed = gc::image::Policy {
        high_percent: 99,
        low_percent: 98,
        ..policy
    };
    let r = gc::image::collect(&store, rt, &relaxed);
    assert!(!r.pressure && r.removed.is_empty(), "{r:?}");
    assert!(!Marker::path(store.dir()).exists());
    let (ok, out, err) = cli(root, &["image", "import", extra.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("example.com/extra:1"), "{out}");
}

/// Runs `edged --root-dir ROOT ARGS...`: (success, stdout, stderr).
fn cli(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edged"))
        .arg("--root-dir")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn leftovers_of_interrupted_imports_go_at_open() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    store
        .import(&make_image(work.path(), "example.com/kept:1", 1))
        .unwrap();
    let kept = store.resolve("example.com/kept:1").unwrap();
    // A staging dir, a layer renamed in and blobs written before the index (a crash
    // between the renames and the index write).
    let d = store.dir();
    let stage = d.join("tmp/import-0123456789abcdef/layers/x");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::write(stage.join("f"), b"half").unwrap();
    std::fs::write(d.join("tmp/import-0123456789abcdef/.lock"), b"").unwrap();
    let orphan_layer = d.join("layers").join("ab".repeat(32));
    std::fs::create_dir_all(orphan_layer.join("bin")).unwrap();
    std::fs::write(orphan_layer.join("bin/tool"), vec![7u8; 4096]).unwrap();
    let orphan_blob = d.join("blobs/sha256").join("cd".repeat(32));
    std::fs::write(&orphan_blob, b"{}").unwrap();

    let store = ImageStore::open(root.path()).unwrap();
    assert_eq!(std::fs::read_dir(d.join("tmp")).unwrap().count(), 0);
    assert!(!orphan_layer.exists() && !orphan_blob.exists());
    // What the index references is all there and usable.
    assert_eq!(store.resolve("example.com/kept:1").unwrap(), kept);
    for l in &kept.layers {
        assert!(store.layer_dir(l).is_dir());
    }
    let mounts =
        edged::runtime::RootfsProvider::prepare_rootfs(&store, "example.com/kept:1", "c1").unwrap();
    assert_eq!(mounts.len(), 1);
    edged::runtime::RootfsProvider::release_rootfs(&store, "c1").unwrap();
}

/// The agent's node record as `edged get node -o json` prints it (a List, or the object).
fn node_record(root: &Path, node: &str) -> Option<Value> {
    let (ok, out, _) = cli(root, &["get", "node", "-o", "json"]);
    if !ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out).ok()?;
    match v.get("items").and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .find(|i| i["metadata"]["name"] == node)
            .cloned(),
        None => Some(v).filter(|v| v["metadata"]["name"] == node),
    }
}

fn disk_pressure(root: &Path, node: &str) -> Option<String> {
    let v = node_record(root, node)?;
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "DiskPressure")
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

/// Waits (bounded) for `f` to hold.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ids the agent's log says image GC removed, in order.
fn removed_in_log(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("image GC removed an unused image"))
        .filter_map(|l| l.split(" id=").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// The agent process, stopped by SIGTERM when dropped; its log is shown when the test fails.
struct Agent(std::process::Child, PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.1).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("agent log (tail):\n{}", tail.join("\n"));
        }
    }
}

#[test]
fn the_agent_collects_images_and_records_disk_pressure() {
    let _g = serial();
    const NODE: &str = "gc-node";
    let root = tempfile::Builder::new()
        .prefix("edged-agc-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = root.path();
    let fs = Tmpfs::mount(&root.join("images"), 40);
    let work = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root).unwrap();
    for n in ["g1:1", "g2:1", "g3:1", "g4:1"] {
        store
            .import(&make_image(
                work.path(),
                &format!("example.com/{n}"),
                PAD_MB,
            ))
            .unwrap();
    }
    let now = now_secs();
    set_times(
        &store,
        &[
            ("g1:1", Some(now - 300), now - 1000),
            ("g2:1", Some(now - 100), now - 1000),
            ("g3:1", None, now - 1000),
            ("g4:1", Some(now - 200), now - 1000),
        ],
    );
    let order: Vec<String> = ["g3:1", "g1:1", "g4:1", "g2:1"]
        .iter()
        .map(|n| image(&store, &format!("example.com/{n}")).id)
        .collect();
    let u = store.usage().unwrap();
    let low = low_for(u.total, u.used, PAD_MB * MIB, 2);
    let high = low + 1;
    drop(store);

    let log = root.join("agent.log");
    let agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_edged"))
            .arg("--root-dir")
            .arg(root)
            .arg("--pod-log-dir")
            .arg(root.join("logs"))
            .args(["--node-name", NODE, "--image-gc-period", "200ms"])
            .args(["--image-gc-high-threshold", &high.to_string()])
            .args(["--image-gc-low-threshold", &low.to_string()])
            .args([
                "--image-minimum-gc-age",
                "60s",
                "--container-gc-period",
                "1h",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log.clone(),
    );
    // The two least recently used go (never used first); then it stops at the low mark.
    wait_for("two images removed", || removed_in_log(&log).len() >= 2);
    wait_for("DiskPressure False recorded", || {
        disk_pressure(root, NODE).as_deref() == Some("False")
    });
    std::thread::sleep(Duration::from_millis(1000)); // five more GC periods
    assert_eq!(removed_in_log(&log), order[..2].to_vec());
    let (_, ls, _) = cli(root, &["image", "ls"]);
    assert!(ls.contains("g4:1") && ls.contains("g2:1"), "{ls}");
    assert!(!ls.contains("g3:1") && !ls.contains("g1:1"), "{ls}");

    // Something else fills the disk: GC takes the rest (the last one frees the shared
    // busybox layer too, about 2 MiB) and still cannot get under the high mark.
    let u = ImageStore::open(root).unwrap().usage().unwrap();
    let need = (u.total as f64 * (high as f64 + 5.0) / 100.0) as u64 + (2 * PAD_MB + 3) * MIB;
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![1u8; need.saturating_sub(u.used) as usize]).unwrap();
    wait_for("DiskPressure True recorded", || {
        disk_pressure(root, NODE).as_deref() == Some("True")
    });
    assert_eq!(removed_in_log(&log), order);
    let rec = node_record(root, NODE).unwrap();
    let cond = rec["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DiskPressure")
        .unwrap()
        .clone();
    assert_eq!(cond["reason"], "KubeletHasDiskPressure");
    assert!(
        cond["message"]
            .as_str()
            .unwrap()
            .contains(&format!("high threshold of {high}%")),
        "{cond}"
    );
    let (ok, table, err) = cli(root, &["get", "node"]);
    assert!(ok && table.contains(NODE), "{table}{err}");
    let extra = make_image(work.path(), "example.com/extra:1", 1);
    let (ok, _, err) = cli(root, &["image", "import", extra.to_str().unwrap()]);
    assert!(!ok, "import under disk pressure was accepted");
    assert!(
        err.contains("disk pressure") && err.contains(&format!("high threshold of {high}%")),
        "{err}"
    );

    // Space comes back: pressure ends, the marker goes, imports work.
    std::fs::remove_file(&filler).unwrap();
    wait_for("DiskPressure False again", || {
        disk_pressure(root, NODE).as_deref() == Some("False")
    });
    wait_for("the marker removed", || {
        !root.join("images/disk-pressure").exists()
    });
    let (ok, _, err) = cli(root, &["image", "import", extra.to_str().unwrap()]);
    assert!(ok, "{err}");
    drop(agent);
    let text = std::fs::read_to_string(&log).unwrap();
    let passes: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("image GC pass"))
        .collect();
    eprintln!("agent image GC passes:\n{}", passes.join("\n"));
}
