//! The volume manager against the real kernel: real directories, tmpfs and bind mounts (run
//! as root). Each test works in its own temp dir and tears its pods down.

use edged::api::{self, base64, Kind};
use edged::volume::{ObjectRef, PodObjects, PodVolumes, VolumeError, VolumeManager};
use serde_json::json;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// One mount of /proc/self/mountinfo: mount point, fs type, super options.
#[derive(Debug)]
struct MountLine {
    point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn mountinfo() -> Vec<MountLine> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .map(|l| {
            let (pre, post) = l.split_once(" - ").unwrap();
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            MountLine {
                point: PathBuf::from(pre[4].replace("\\040", " ")),
                fstype: post[0].to_string(),
                super_opts: post.get(2).unwrap_or(&"").to_string(),
            }
        })
        .collect()
}

fn mounts_at(p: &Path) -> Vec<MountLine> {
    let p = fs::canonicalize(p).unwrap();
    mountinfo().into_iter().filter(|m| m.point == p).collect()
}

fn mounts_below(p: &Path) -> Vec<PathBuf> {
    let p = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    mountinfo()
        .into_iter()
        .filter(|m| m.point.starts_with(&p))
        .map(|m| m.point)
        .collect()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    vm: VolumeManager,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pods");
        Fixture {
            vm: VolumeManager::new(root.clone()),
            root,
            _tmp: tmp,
        }
    }

    fn scratch(&self) -> PathBuf {
        let p = self._tmp.path().join("scratch");
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn vol_dir(&self, uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.root
            .join(uid)
            .join("volumes")
            .join(format!("kubernetes.io~{plugin}"))
            .join(name)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Leave no mounts behind even when a test failed half-way.
        for uid in self.vm.pod_dirs().unwrap_or_default() {
            let _ = self.vm.teardown(&uid);
        }
    }
}

fn pod(uid: &str, volumes: serde_json::Value, mounts: serde_json::Value) -> api::Pod {
    let v = json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": uid,
                     "labels": {"app": "web", "tier": "front"},
                     "annotations": {"note": "say \"hi\""}},
        "spec": {
            "containers": [{"name": "app", "image": "busybox", "volumeMounts": mounts}],
            "volumes": volumes,
        }
    });
    api::decode("Pod shop/web", &v).unwrap()
}

fn config_map(name: &str, data: serde_json::Value) -> api::ConfigMap {
    api::decode(
        "ConfigMap",
        &json!({"metadata": {"name": name, "namespace": "shop"}, "data": data}),
    )
    .unwrap()
}

fn objects(cms: Vec<api::ConfigMap>, secrets: Vec<api::Secret>) -> PodObjects {
    PodObjects {
        config_maps: cms
            .into_iter()
            .map(|c| (c.metadata.name.clone(), c))
            .collect(),
        secrets: secrets
            .into_iter()
            .map(|s| (s.metadata.name.clone(), s))
            .collect(),
        ..Default::default()
    }
}

fn teardown_clean(f: &Fixture, uid: &str) {
    f.vm.teardown(uid).unwrap();
    assert!(!f.root.join(uid).exists(), "pod dir removed");
    assert!(
        mounts_below(&f.root).is_empty(),
        "{:?}",
        mounts_below(&f.root)
    );
    f.vm.teardown(uid).unwrap();
}

#[test]
fn empty_dir_on_disk_and_as_sized_tmpfs() {
    let f = Fixture::new();
    let p = pod(
        "uid-empty",
        json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        ]),
        json!([]),
    );
    let vols = f.vm.setup(&p, &PodObjects::default()).unwrap();
    let disk = f.vol_dir("uid-empty", "empty-dir", "scratch");
    let mem = f.vol_dir("uid-empty", "empty-dir", "mem");
    assert_eq!(
        vols.volumes["scratch"].path,
        fs::canonicalize(&disk).unwrap()
    );
    assert!(disk.is_dir());
    assert_eq!(mode(&disk), 0o777);
    assert!(mounts_at(&disk).is_empty(), "the disk emptyDir is no mount");

    let m = mounts_at(&mem);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].fstype, "tmpfs");
    assert!(m[0].super_opts.contains("size=16384k"), "{m:?}");
    // drwxrwxrwt, as the e2e "volume on tmpfs should have the correct mode" test reads it.
    assert_eq!(mode(&mem), 0o1777);
    let st = nix::sys::statvfs::statvfs(&mem).unwrap();
    assert_eq!(
        st.blocks() as u64 * st.fragment_size() as u64,
        16 << 20,
        "tmpfs size"
    );

    // Setup again keeps data and does not mount twice.
    fs::write(mem.join("f"), "x").unwrap();
    fs::write(disk.join("g"), "y").unwrap();
    f.vm.setup(&p, &PodObjects::default()).unwrap();
    assert_eq!(mounts_at(&mem).len(), 1);
    assert_eq!(fs::read_to_string(mem.join("f")).unwrap(), "x");
    assert_eq!(fs::read_to_string(disk.join("g")).unwrap(), "y");

    assert_eq!(f.vm.pod_dirs().unwrap(), vec!["uid-empty".to_string()]);
    teardown_clean(&f, "uid-empty");
    assert!(f.vm.pod_dirs().unwrap().is_empty());
}

#[test]
fn memory_empty_dir_without_size_limit_takes_the_pod_memory_limit() {
    let f = Fixture::new();
    let v = json!({
        "metadata": {"name": "m", "namespace": "shop", "uid": "uid-memlimit"},
        "spec": {
            "containers": [
                {"name": "a", "image": "busybox", "resources": {"limits": {"memory": "8Mi"}}},
                {"name": "b", "image": "busybox", "resources": {"limits": {"memory": "4Mi"}}},
            ],
            "volumes": [
                {"name": "mem", "emptyDir": {"medium": "Memory"}},
                {"name": "big", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "small", "emptyDir": {"medium": "Memory", "sizeLimit": "2Mi"}},
            ],
        }
    });
    let p: api::Pod = api::decode("Pod", &v).unwrap();
    f.vm.setup(&p, &PodObjects::default()).unwrap();
    for (name, size) in [("mem", 12 << 20), ("big", 12 << 20), ("small", 2 << 20)] {
        let dir = f.vol_dir("uid-memlimit", "empty-dir", name);
        let st = nix::sys::statvfs::statvfs(&dir).unwrap();
        assert_eq!(
            st.blocks() as u64 * st.fragment_size() as u64,
            size,
            "{name}"
        );
    }
    teardown_clean(&f, "uid-memlimit");
}

#[test]
fn empty_dir_refuses_bad_medium_and_size() {
    let f = Fixture::new();
    let p = pod(
        "uid-bad",
        json!([{"name": "h", "emptyDir": {"medium": "HugePages"}}]),
        json!([]),
    );
    let e = f.vm.setup(&p, &PodObjects::default()).unwrap_err();
    assert!(
        e.to_string().contains("HugePages") && e.to_string().contains("shop/web"),
        "{e}"
    );
    let p = pod(
        "uid-bad",
        json!([{"name": "h", "emptyDir": {"medium": "Memory", "sizeLimit": "lots"}}]),
        json!([]),
    );
    let e = f.vm.setup(&p, &PodObjects::default()).unwrap_err();
    assert!(e.to_string().contains("sizeLimit"), "{e}");
    let p = pod("uid-bad", json!([{"name": "none"}]), json!([]));
    let e = f.vm.setup(&p, &PodObjects::default()).unwrap_err();
    assert!(e.to_string().contains("volume `none`"), "{e}");
    f.vm.teardown("uid-bad").unwrap();
}

fn host_path_pod(path: &Path, kind: &str) -> api::Pod {
    pod(
        "uid-host",
        json!([{"name": "host", "hostPath": {"path": path, "type": kind}}]),
        json!([]),
    )
}

#[test]
fn host_path_types() {
    let f = Fixture::new();
    let s = f.scratch();
    let dir = s.join("dir");
    let file = s.join("file");
    let sock = s.join("sock");
    let chr = s.join("chr");
    let blk = s.join("blk");
    fs::create_dir(&dir).unwrap();
    fs::write(&file, "x").unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(
        &chr,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &blk,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(7, 0),
    )
    .unwrap();
    let objs = PodObjects::default();

    let cases: [(&str, &Path, &Path); 6] = [
        ("Directory", &dir, &file),
        ("File", &file, &dir),
        ("Socket", &sock, &file),
        ("CharDevice", &chr, &blk),
        ("BlockDevice", &blk, &chr),
        ("DirectoryOrCreate", &dir, &file),
    ];
    for (kind, good, bad) in cases {
        let vols = f.vm.setup(&host_path_pod(good, kind), &objs).unwrap();
        assert_eq!(vols.volumes["host"].path, good, "{kind}");
        let e = f.vm.setup(&host_path_pod(bad, kind), &objs).unwrap_err();
        match &e {
            VolumeError::HostPathType {
                pod,
                volume,
                path,
                expected,
                ..
            } => {
                assert_eq!((pod.as_str(), volume.as_str()), ("shop/web", "host"));
                assert_eq!(path, bad);
                assert_eq!(expected, kind);
            }
            other => panic!("{kind}: {other}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains(&bad.display().to_string()) && msg.contains(kind),
            "{msg}"
        );
    }
    // A missing path is wrong for every checking type, fine for "".
    let gone = s.join("gone");
    for kind in ["Directory", "File", "Socket", "CharDevice", "BlockDevice"] {
        let e = f.vm.setup(&host_path_pod(&gone, kind), &objs).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
    f.vm.setup(&host_path_pod(&gone, ""), &objs).unwrap();
    assert!(!gone.exists(), "no check means no creation");

    // DirectoryOrCreate makes parents, 0755 whatever the umask.
    let made = s.join("a/b/c");
    let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
    let r =
        f.vm.setup(&host_path_pod(&made, "DirectoryOrCreate"), &objs);
    let made_file = s.join("new.sock-file");
    let r2 =
        f.vm.setup(&host_path_pod(&made_file, "FileOrCreate"), &objs);
    nix::sys::stat::umask(old);
    r.unwrap();
    r2.unwrap();
    assert!(made.is_dir());
    assert_eq!(mode(&made), 0o755);
    assert!(made_file.is_file());
    assert_eq!(mode(&made_file), 0o644);
    assert_eq!(fs::metadata(&made_file).unwrap().len(), 0);
    // FileOrCreate keeps an existing file and refuses a directory.
    f.vm.setup(&host_path_pod(&file, "FileOrCreate"), &objs)
        .unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
    let e =
        f.vm.setup(&host_path_pod(&dir, "FileOrCreate"), &objs)
            .unwrap_err();
    assert!(matches!(e, VolumeError::HostPathType { .. }), "{e}");
    // ...and does not create parents, saying so.
    let orphan = s.join("no/such/file");
    let e =
        f.vm.setup(&host_path_pod(&orphan, "FileOrCreate"), &objs)
            .unwrap_err();
    assert!(e.to_string().contains("parent directory"), "{e}");
    assert!(!s.join("no").exists());

    let e = f.vm.setup(&host_path_pod(&dir, "Dir"), &objs).unwrap_err();
    assert!(e.to_string().contains("`Dir` is unknown"), "{e}");
    let e =
        f.vm.setup(&host_path_pod(Path::new("rel/path"), ""), &objs)
            .unwrap_err();
    assert!(e.to_string().contains("absolute"), "{e}");
    teardown_clean(&f, "uid-host");
    assert!(dir.is_dir(), "teardown leaves hostPaths alone");
}

#[test]
fn config_map_items_and_modes() {
    let f = Fixture::new();
    let mut cm = config_map("app-config", json!({"a": "alpha", "b": "beta"}));
    cm.binary_data
        .insert("c".into(), base64::encode(&[0, 159, 146, 150]));
    let p = pod(
        "uid-cm",
        json!([
            {"name": "picked", "configMap": {"name": "app-config", "defaultMode": 0o440,
                "items": [{"key": "a", "path": "conf/a.conf", "mode": 0o600},
                          {"key": "c", "path": "bin"}]}},
            {"name": "all", "configMap": {"name": "app-config"}},
        ]),
        json!([]),
    );
    let objs = objects(vec![cm], vec![]);
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let r = f.vm.setup(&p, &objs);
    nix::sys::stat::umask(old);
    r.unwrap();

    let picked = f.vol_dir("uid-cm", "configmap", "picked");
    assert_eq!(
        fs::read_to_string(picked.join("conf/a.conf")).unwrap(),
        "alpha"
    );
    assert_eq!(mode(&picked.join("conf/a.conf")), 0o600);
    assert_eq!(fs::read(picked.join("bin")).unwrap(), [0, 159, 146, 150]);
    assert_eq!(mode(&picked.join("bin")), 0o440);
    assert!(!picked.join("b").exists(), "items pick keys");
    assert_eq!(
        fs::read_link(picked.join("conf")).unwrap(),
        Path::new("..data/conf")
    );
    assert!(fs::symlink_metadata(picked.join("..data"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(mounts_at(&picked).is_empty(), "configMaps live on disk");

    let all = f.vol_dir("uid-cm", "configmap", "all");
    for (k, v) in [("a", "alpha"), ("b", "beta")] {
        assert_eq!(fs::read_to_string(all.join(k)).unwrap(), v);
        assert_eq!(mode(&all.join(k)), 0o644, "default mode");
    }
    assert_eq!(fs::read(all.join("c")).unwrap(), [0, 159, 146, 150]);

    // A key named in items but absent.
    let p2 = pod(
        "uid-cm",
        json!([{"name": "picked", "configMap": {"name": "app-config",
            "items": [{"key": "zzz", "path": "z"}]}}]),
        json!([]),
    );
    let e = f.vm.setup(&p2, &objs).unwrap_err();
    assert!(
        matches!(&e, VolumeError::MissingKey { key, .. } if key == "zzz"),
        "{e}"
    );
    teardown_clean(&f, "uid-cm");
}

#[test]
fn item_paths_that_escape_are_refused() {
    let f = Fixture::new();
    let objs = objects(vec![config_map("c", json!({"k": "v"}))], vec![]);
    for bad in ["../x", "/etc/passwd", "a/../../x", "..data/k", "a//b"] {
        let p = pod(
            "uid-esc",
            json!([{"name": "cfg", "configMap": {"name": "c",
                "items": [{"key": "k", "path": bad}]}}]),
            json!([]),
        );
        let e = f.vm.setup(&p, &objs).unwrap_err();
        match &e {
            VolumeError::InvalidPath {
                pod, volume, path, ..
            } => {
                assert_eq!(
                    (pod.as_str(), volume.as_str(), path.as_str()),
                    ("shop/web", "cfg", bad)
                );
            }
            other => panic!("{bad}: {other}"),
        }
    }
    assert!(!f.scratch().join("x").exists());
    // Keys that are no file names are refused too.
    let objs = objects(vec![config_map("c", json!({"../evil": "v"}))], vec![]);
    let p = pod(
        "uid-esc",
        json!([{"name": "cfg", "configMap": {"name": "c"}}]),
        json!([]),
    );
    let e = f.vm.setup(&p, &objs).unwrap_err();
    assert!(matches!(e, VolumeError::InvalidPath { .. }), "{e}");
    teardown_clean(&f, "uid-esc");
}

#[test]
fn secret_on_tmpfs_with_mode_and_base64() {
    let f = Fixture::new();
    let secret: api::Secret = api::decode(
        "Secret",
        &json!({"metadata": {"name": "db", "namespace": "shop"},
                "data": {"password": "cGFzc3dvcmQ="},
                "stringData": {"user": "admin"}}),
    )
    .unwrap();
    let p = pod(
        "uid-secret",
        json!([{"name": "creds", "secret": {"secretName": "db", "defaultMode": 256}}]),
        json!([{"name": "creds", "mountPath": "/creds"}]),
    );
    let objs = objects(vec![], vec![secret]);
    let vols = f.vm.setup(&p, &objs).unwrap();
    let dir = f.vol_dir("uid-secret", "secret", "creds");
    let m = mounts_at(&dir);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].fstype, "tmpfs", "secrets never touch the disk");
    assert_eq!(
        fs::read_to_string(dir.join("password")).unwrap(),
        "password"
    );
    assert_eq!(fs::read_to_string(dir.join("user")).unwrap(), "admin");
    assert_eq!(mode(&dir.join("password")), 0o400);
    // The payload's files are on that tmpfs.
    let data_dev = fs::metadata(dir.join("..data/password")).unwrap().dev();
    assert_eq!(data_dev, fs::metadata(&dir).unwrap().dev());
    assert_ne!(data_dev, fs::metadata(&f.root).unwrap().dev());

    let mounts =
        f.vm.container_mounts(&p, &p.spec.containers[0], &vols)
            .unwrap();
    assert_eq!(mounts.len(), 1);
    assert!(mounts[0].read_only, "secret volumes are read-only");

    // Bad base64 names the secret and the key.
    let bad: api::Secret = api::decode(
        "Secret",
        &json!({"metadata": {"name": "db"}, "data": {"password": "not base64!"}}),
    )
    .unwrap();
    let e = f.vm.refresh(&p, &objects(vec![], vec![bad])).unwrap_err();
    assert!(
        e.to_string().contains("`db`") && e.to_string().contains("password"),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("password")).unwrap(),
        "password"
    );
    teardown_clean(&f, "uid-secret");
}

#[test]
fn missing_objects_required_and_optional() {
    let f = Fixture::new();
    let required = pod(
        "uid-missing",
        json!([{"name": "cfg", "configMap": {"name": "absent"}}]),
        json!([]),
    );
    match f.vm.setup(&required, &PodObjects::default()).unwrap_err() {
        VolumeError::MissingObject {
            pod,
            volume,
            kind,
            name,
        } => {
            assert_eq!(pod, "shop/web");
            assert_eq!(volume, "cfg");
            assert_eq!(kind, Kind::ConfigMap);
            assert_eq!(name, "absent");
        }
        other => panic!("{other}"),
    }
    let secret = pod(
        "uid-missing",
        json!([{"name": "s", "secret": {"secretName": "absent"}}]),
        json!([]),
    );
    let e = f.vm.setup(&secret, &PodObjects::default()).unwrap_err();
    assert!(
        e.is_missing_object() && e.to_string().contains("Secret `absent`"),
        "{e}"
    );
    assert!(!f.vol_dir("uid-missing", "secret", "s").exists());

    let optional = pod(
        "uid-missing",
        json!([{"name": "cfg", "configMap": {"name": "absent", "optional": true}},
               {"name": "s", "secret": {"secretName": "absent", "optional": true}}]),
        json!([]),
    );
    f.vm.setup(&optional, &PodObjects::default()).unwrap();
    let dir = f.vol_dir("uid-missing", "configmap", "cfg");
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".."))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert!(fs::symlink_metadata(dir.join("..data")).is_ok());

    // The object arrives: a refresh fills the volume.
    let objs = objects(vec![config_map("absent", json!({"k": "v"}))], vec![]);
    f.vm.refresh(&optional, &objs).unwrap();
    assert_eq!(fs::read_to_string(dir.join("k")).unwrap(), "v");
    teardown_clean(&f, "uid-missing");
}

#[test]
fn downward_api_files() {
    let f = Fixture::new();
    let p = pod(
        "uid-down",
        json!([{"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
            {"path": "meta/name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "meta/namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
            {"path": "meta/uid", "fieldRef": {"fieldPath": "metadata.uid"}, "mode": 0o600},
            {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu",
                                                  "divisor": "1m"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "app",
                                                  "resource": "requests.memory", "divisor": "1Mi"}},
            {"path": "cores", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu"}},
        ]}}]),
        json!([]),
    );
    let mut p = p;
    p.spec.containers[0]
        .resources
        .limits
        .insert("cpu".into(), json!("1500m"));
    p.spec.containers[0]
        .resources
        .requests
        .insert("memory".into(), json!("100M"));
    f.vm.setup(&p, &PodObjects::default()).unwrap();
    let dir = f.vol_dir("uid-down", "downward-api", "info");
    let read = |n: &str| fs::read_to_string(dir.join(n)).unwrap();
    assert_eq!(read("labels"), "app=\"web\"\ntier=\"front\"");
    assert_eq!(read("annotations"), "note=\"say \\\"hi\\\"\"");
    assert_eq!(read("meta/name"), "web");
    assert_eq!(read("meta/namespace"), "shop");
    assert_eq!(read("meta/uid"), "uid-down");
    assert_eq!(read("app"), "web");
    assert_eq!(read("cpu"), "1500");
    assert_eq!(read("mem"), "96", "100M in Mi, rounded up");
    assert_eq!(read("cores"), "2", "1.5 cores rounded up");
    assert_eq!(mode(&dir.join("meta/uid")), 0o600);
    assert_eq!(mode(&dir.join("labels")), 0o644);
    assert_eq!(mounts_at(&dir)[0].fstype, "tmpfs");

    // A label change reaches the file through refresh.
    let mut p2 = p.clone();
    p2.metadata.labels.insert("tier".into(), "back".into());
    f.vm.refresh(&p2, &PodObjects::default()).unwrap();
    assert_eq!(read("labels"), "app=\"web\"\ntier=\"back\"");

    let bad = pod(
        "uid-down",
        json!([{"name": "info", "downwardAPI": {"items": [
            {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]}}]),
        json!([]),
    );
    let e = f.vm.refresh(&bad, &PodObjects::default()).unwrap_err();
    assert!(e.to_string().contains("status.podIP"), "{e}");
    teardown_clean(&f, "uid-down");
}

/// Unmounts a test's own mount even when the test fails half-way.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn payload_dirs(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..") && n != "..data")
        .collect()
}

#[test]
fn projected_volumes_on_tmpfs_or_disk_refreshed_whole() {
    let f = Fixture::new();
    let token_src = json!({"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}});
    let p = pod(
        "uid-proj",
        json!([
            {"name": "all", "projected": {"defaultMode": 420, "sources": [
                token_src,
                {"configMap": {"name": "c", "items": [{"key": "k", "path": "conf/k"}]}},
                {"secret": {"name": "db", "items": [{"key": "password", "path": "pw", "mode": 384}]}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}},
            {"name": "plain", "projected": {"sources": [{"configMap": {"name": "c"}}]}}
        ]),
        json!([{"name": "all", "mountPath": "/all"}]),
    );
    let secret: api::Secret = api::decode(
        "Secret",
        &json!({"metadata": {"name": "db"}, "stringData": {"password": "s3cret"}}),
    )
    .unwrap();
    let mut objs = objects(vec![config_map("c", json!({"k": "v1"}))], vec![secret]);
    // Without its token the volume is not made.
    let e = f.vm.setup(&p, &objs).unwrap_err();
    assert!(e.to_string().contains("service-account token"), "{e}");
    objs.tokens
        .insert((String::new(), 3607), "eyJ.first.token".into());
    let vols = f.vm.setup(&p, &objs).unwrap();
    let dir = f.vol_dir("uid-proj", "projected", "all");
    let m = mounts_at(&dir);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(
        m[0].fstype, "tmpfs",
        "a token or a secret never touches the disk"
    );
    assert_eq!(
        fs::read_to_string(dir.join("token")).unwrap(),
        "eyJ.first.token"
    );
    assert_eq!(fs::read_to_string(dir.join("conf/k")).unwrap(), "v1");
    assert_eq!(fs::read_to_string(dir.join("pw")).unwrap(), "s3cret");
    assert_eq!(fs::read_to_string(dir.join("ns")).unwrap(), "shop");
    assert_eq!(mode(&dir.join("token")), 0o644);
    assert_eq!(mode(&dir.join("pw")), 0o600);
    let plain = f.vol_dir("uid-proj", "projected", "plain");
    assert!(
        mounts_at(&plain).is_empty(),
        "a ConfigMap-only projection is on disk"
    );
    assert_eq!(fs::read_to_string(plain.join("k")).unwrap(), "v1");
    let mounts =
        f.vm.container_mounts(&p, &p.spec.containers[0], &vols)
            .unwrap();
    assert!(mounts[0].read_only, "projected volumes are read-only");

    // A new token and a changed ConfigMap: one swap of `..data`.
    let before = fs::read_link(dir.join("..data")).unwrap();
    objs.tokens
        .insert((String::new(), 3607), "eyJ.second.token".into());
    objs.config_maps
        .insert("c".into(), config_map("c", json!({"k": "v2"})));
    f.vm.refresh(&p, &objs).unwrap();
    assert_ne!(fs::read_link(dir.join("..data")).unwrap(), before);
    assert_eq!(
        fs::read_to_string(dir.join("token")).unwrap(),
        "eyJ.second.token"
    );
    assert_eq!(fs::read_to_string(dir.join("conf/k")).unwrap(), "v2");
    assert_eq!(fs::read_to_string(plain.join("k")).unwrap(), "v2");
    assert_eq!(payload_dirs(&dir).len(), 1, "the old payload is gone");

    // An unsupported source leaves the files as they were and names itself.
    let bad = pod(
        "uid-proj",
        json!([{"name": "all", "projected": {"sources": [
            {"clusterTrustBundle": {"signerName": "example.com/s", "path": "b.pem"}}]}}]),
        json!([]),
    );
    let e = f.vm.refresh(&bad, &objs).unwrap_err().to_string();
    assert!(
        e.contains("clusterTrustBundle") && e.contains("volume `all`"),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("token")).unwrap(),
        "eyJ.second.token"
    );
    teardown_clean(&f, "uid-proj");
}

#[test]
fn refresh_swaps_data_atomically_and_reaches_a_bind_mount() {
    let f = Fixture::new();
    let p = pod(
        "uid-atomic",
        json!([{"name": "cfg", "configMap": {"name": "c"}}]),
        json!([]),
    );
    // Every version is one repeated letter, so a torn read shows as mixed letters.
    let version = |i: usize| {
        let letter = (b'a' + (i % 26) as u8) as char;
        config_map(
            "c",
            json!({"k": letter.to_string().repeat(4096), "other": format!("{i}")}),
        )
    };
    f.vm.setup(&p, &objects(vec![version(0)], vec![])).unwrap();
    let dir = f.vol_dir("uid-atomic", "configmap", "cfg");

    // The container's view: a real bind mount of the volume directory elsewhere.
    let view = f.scratch().join("view");
    fs::create_dir(&view).unwrap();
    nix::mount::mount(
        Some(&dir),
        &view,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    let view_mount = Unmount(view.clone());

    // A reader holding the old file open.
    let held = fs::File::open(dir.join("k")).unwrap();

    // A reader racing the swaps: every read sees a whole version, `..data` always exists.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, view) = (stop.clone(), reads.clone(), view.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                fs::symlink_metadata(view.join("..data"))
                    .map_err(|e| format!("..data missing: {e}"))?;
                let s = fs::read_to_string(view.join("k")).map_err(|e| format!("read: {e}"))?;
                let first = s.as_bytes().first().copied();
                if s.len() != 4096 || !s.bytes().all(|b| Some(b) == first) {
                    return Err(format!("torn read: {} bytes", s.len()));
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };

    for i in 1..=30 {
        f.vm.refresh(&p, &objects(vec![version(i)], vec![]))
            .unwrap();
        // After every swap: `..data` is there, the new content is visible in both views,
        // and only one payload directory is left.
        assert!(fs::symlink_metadata(dir.join("..data"))
            .unwrap()
            .file_type()
            .is_symlink());
        let want = ((b'a' + (i % 26) as u8) as char).to_string().repeat(4096);
        assert_eq!(fs::read_to_string(dir.join("k")).unwrap(), want);
        assert_eq!(fs::read_to_string(view.join("k")).unwrap(), want);
        assert_eq!(
            fs::read_to_string(view.join("other")).unwrap(),
            i.to_string()
        );
        assert_eq!(payload_dirs(&dir).len(), 1, "{:?}", payload_dirs(&dir));
        // Let the reader run at least once against this version.
        let seen = reads.load(Ordering::Relaxed);
        while reads.load(Ordering::Relaxed) == seen && !reader.is_finished() {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap().unwrap();
    assert!(reads.load(Ordering::Relaxed) >= 30);

    // The held reader still reads the old version whole.
    let mut old = String::new();
    std::io::Read::read_to_string(&mut &held, &mut old).unwrap();
    assert_eq!(old, "a".repeat(4096));

    // Same content again: nothing is rewritten.
    let before = fs::read_link(dir.join("..data")).unwrap();
    f.vm.refresh(&p, &objects(vec![version(30)], vec![]))
        .unwrap();
    assert_eq!(fs::read_link(dir.join("..data")).unwrap(), before);

    drop(view_mount);
    teardown_clean(&f, "uid-atomic");
}

#[test]
fn concurrent_refreshes_of_one_pod_are_serialized() {
    let f = Fixture::new();
    let p = pod(
        "uid-conc",
        json!([{"name": "cfg", "configMap": {"name": "c"}},
               {"name": "s", "secret": {"secretName": "c"}}]),
        json!([]),
    );
    let objs = |i: usize| {
        let s: api::Secret = api::decode(
            "Secret",
            &json!({"metadata": {"name": "c"}, "stringData": {"k": format!("{i}")}}),
        )
        .unwrap();
        objects(vec![config_map("c", json!({"k": format!("{i}")}))], vec![s])
    };
    f.vm.setup(&p, &objs(0)).unwrap();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..=4)
            .map(|t| {
                let (vm, p) = (f.vm.clone(), p.clone());
                scope.spawn(move || {
                    for n in 0..25 {
                        vm.refresh(&p, &objs(t * 100 + n)).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    for (plugin, name) in [("configmap", "cfg"), ("secret", "s")] {
        let dir = f.vol_dir("uid-conc", plugin, name);
        assert_eq!(
            payload_dirs(&dir).len(),
            1,
            "{plugin}: {:?}",
            payload_dirs(&dir)
        );
        let v: usize = fs::read_to_string(dir.join("k")).unwrap().parse().unwrap();
        assert!(
            v >= 100 && v % 100 == 24,
            "a last write of some thread: {v}"
        );
    }
    teardown_clean(&f, "uid-conc");
}

#[test]
fn refresh_of_a_pod_never_set_up_creates_nothing() {
    let f = Fixture::new();
    let p = pod(
        "uid-late",
        json!([{"name": "cfg", "configMap": {"name": "c"}}]),
        json!([]),
    );
    f.vm.refresh(
        &p,
        &objects(vec![config_map("c", json!({"k": "v"}))], vec![]),
    )
    .unwrap();
    assert!(!f.root.join("uid-late").exists());
}

fn mount_of<'a>(mounts: &'a [edged::runtime::Mount], at: &str) -> &'a edged::runtime::Mount {
    mounts.iter().find(|m| m.container_path == at).unwrap()
}

#[test]
fn sub_paths_and_read_only_mounts() {
    let f = Fixture::new();
    let p = pod(
        "uid-sub",
        json!([
            {"name": "data", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "c"}},
        ]),
        json!([
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/ro", "readOnly": true},
            {"name": "data", "mountPath": "/logs", "subPath": "logs/app"},
            {"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
            {"name": "cfg", "mountPath": "/cfg", "readOnly": false},
        ]),
    );
    let objs = objects(vec![config_map("c", json!({"app.conf": "x=1"}))], vec![]);
    let vols = f.vm.setup(&p, &objs).unwrap();
    let data = f.vol_dir("uid-sub", "empty-dir", "data");
    let mounts =
        f.vm.container_mounts(&p, &p.spec.containers[0], &vols)
            .unwrap();
    assert_eq!(mounts.len(), 5);

    let m = mount_of(&mounts, "/data");
    assert_eq!(m.host_path, fs::canonicalize(&data).unwrap());
    assert!(!m.read_only);
    assert!(mount_of(&mounts, "/ro").read_only);
    assert!(
        mount_of(&mounts, "/cfg").read_only,
        "configMaps are always read-only"
    );

    // A missing subPath is made as a directory; the mount is a real bind of it.
    let logs = mount_of(&mounts, "/logs");
    assert!(!logs.read_only);
    assert!(data.join("logs/app").is_dir());
    assert_eq!(mode(&data.join("logs/app")), 0o777, "the volume's mode");
    assert_eq!(mounts_at(&logs.host_path).len(), 1);
    assert!(logs
        .host_path
        .starts_with(f.root.join("uid-sub/volume-subpaths/data/app")));
    fs::write(logs.host_path.join("out.log"), "hello").unwrap();
    assert_eq!(
        fs::read_to_string(data.join("logs/app/out.log")).unwrap(),
        "hello"
    );

    // A file subPath of a configMap key (through the writer's symlinks) is a file bind.
    let conf = mount_of(&mounts, "/etc/app.conf");
    assert!(conf.read_only);
    assert!(conf.host_path.is_file());
    assert_eq!(fs::read_to_string(&conf.host_path).unwrap(), "x=1");

    // Again (a container restart): same mounts, none stacked.
    let again =
        f.vm.container_mounts(&p, &p.spec.containers[0], &vols)
            .unwrap();
    assert_eq!(again, mounts);
    assert_eq!(mounts_at(&logs.host_path).len(), 1);

    teardown_clean(&f, "uid-sub");
}

fn sub_path_error(f: &Fixture, vols: &PodVolumes, sub: &str) -> VolumeError {
    let p = pod(
        "uid-subesc",
        json!([{"name": "data", "emptyDir": {}}]),
        json!([{"name": "data", "mountPath": "/x", "subPath": sub}]),
    );
    f.vm.container_mounts(&p, &p.spec.containers[0], vols)
        .unwrap_err()
}

#[test]
fn sub_paths_that_escape_are_refused() {
    let f = Fixture::new();
    let p = pod(
        "uid-subesc",
        json!([{"name": "data", "emptyDir": {}}]),
        json!([]),
    );
    let vols = f.vm.setup(&p, &PodObjects::default()).unwrap();
    let data = f.vol_dir("uid-subesc", "empty-dir", "data");
    let outside = f.scratch().join("secret-place");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, data.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../../../../..", data.join("rel-link")).unwrap();
    fs::create_dir(data.join("inner")).unwrap();
    std::os::unix::fs::symlink("inner", data.join("ok-link")).unwrap();

    for sub in [
        "../x",
        "a/../../x",
        "/etc",
        "abs-link",
        "abs-link/new",
        "rel-link/etc",
    ] {
        match sub_path_error(&f, &vols, sub) {
            VolumeError::InvalidPath {
                pod, volume, path, ..
            } => {
                assert_eq!(
                    (pod.as_str(), volume.as_str(), path.as_str()),
                    ("shop/web", "data", sub)
                );
            }
            other => panic!("{sub}: {other}"),
        }
    }
    assert!(!outside.join("new").exists(), "nothing created outside");
    assert!(mounts_below(&f.root).is_empty(), "no mount made");

    // A symlink that stays inside the volume is fine.
    let p = pod(
        "uid-subesc",
        json!([{"name": "data", "emptyDir": {}}]),
        json!([{"name": "data", "mountPath": "/x", "subPath": "ok-link"}]),
    );
    let m =
        f.vm.container_mounts(&p, &p.spec.containers[0], &vols)
            .unwrap();
    fs::write(m[0].host_path.join("f"), "in").unwrap();
    assert_eq!(fs::read_to_string(data.join("inner/f")).unwrap(), "in");

    // A volumeMount naming no volume.
    let p = pod(
        "uid-subesc",
        json!([{"name": "data", "emptyDir": {}}]),
        json!([{"name": "nope", "mountPath": "/x"}]),
    );
    let e =
        f.vm.container_mounts(&p, &p.spec.containers[0], &vols)
            .unwrap_err();
    assert!(
        e.to_string().contains("`nope`") && e.to_string().contains("container `app`"),
        "{e}"
    );
    teardown_clean(&f, "uid-subesc");
}

#[test]
fn sub_path_of_a_host_path_and_teardown_keeps_the_host_data() {
    let f = Fixture::new();
    let host = f.scratch().join("host");
    fs::create_dir_all(host.join("keep")).unwrap();
    fs::write(host.join("keep/precious"), "data").unwrap();
    let p = pod(
        "uid-hostsub",
        json!([{"name": "h", "hostPath": {"path": host, "type": "Directory"}}]),
        json!([{"name": "h", "mountPath": "/k", "subPath": "keep"}]),
    );
    let vols = f.vm.setup(&p, &PodObjects::default()).unwrap();
    let m =
        f.vm.container_mounts(&p, &p.spec.containers[0], &vols)
            .unwrap();
    assert_eq!(
        fs::read_to_string(m[0].host_path.join("precious")).unwrap(),
        "data"
    );
    teardown_clean(&f, "uid-hostsub");
    assert_eq!(
        fs::read_to_string(host.join("keep/precious")).unwrap(),
        "data"
    );
}

#[test]
fn teardown_after_the_mounts_are_gone() {
    let f = Fixture::new();
    let p = pod(
        "uid-reboot",
        json!([{"name": "mem", "emptyDir": {"medium": "Memory"}},
               {"name": "s", "secret": {"secretName": "s"}}]),
        json!([]),
    );
    let s: api::Secret = api::decode(
        "Secret",
        &json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}),
    )
    .unwrap();
    f.vm.setup(&p, &objects(vec![], vec![s])).unwrap();
    assert_eq!(mounts_below(&f.root).len(), 2);
    // As after a reboot: the tmpfs mounts are gone, the directories stay.
    for m in mounts_below(&f.root) {
        nix::mount::umount(&m).unwrap();
    }
    assert!(f.root.join("uid-reboot").exists());
    teardown_clean(&f, "uid-reboot");
    // A uid that never had a directory, and one that names no directory.
    f.vm.teardown("never-seen").unwrap();
    assert!(f.vm.teardown("../etc").is_err());
}

#[test]
fn teardown_unmounts_a_busy_mount() {
    let f = Fixture::new();
    let p = pod(
        "uid-busy",
        json!([{"name": "mem", "emptyDir": {"medium": "Memory"}}]),
        json!([]),
    );
    let vols = f.vm.setup(&p, &PodObjects::default()).unwrap();
    // An open file keeps the tmpfs busy: the lazy unmount takes it.
    let busy = fs::File::create(vols.volumes["mem"].path.join("open")).unwrap();
    teardown_clean(&f, "uid-busy");
    drop(busy);
}

#[test]
fn references_of_a_pod() {
    let v = json!({
        "metadata": {"name": "r", "namespace": "shop", "uid": "u"},
        "spec": {
            "initContainers": [{"name": "i", "image": "busybox",
                "envFrom": [{"secretRef": {"name": "s1"}}]}],
            "containers": [{"name": "a", "image": "busybox",
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "k", "optional": true}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}},
                    {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm2", "key": "k", "optional": true}}},
                    {"name": "D", "value": "plain"},
                ],
                "envFrom": [{"configMapRef": {"name": "cm3", "optional": true}}]}],
            "volumes": [
                {"name": "v1", "configMap": {"name": "cm1"}},
                {"name": "v2", "secret": {"secretName": "s1", "optional": true}},
                {"name": "v3", "emptyDir": {}},
            ],
        }
    });
    let p: api::Pod = api::decode("Pod", &v).unwrap();
    let r = |kind, name: &str, optional| ObjectRef {
        kind,
        name: name.into(),
        optional,
    };
    assert_eq!(
        PodObjects::references(&p),
        vec![
            r(Kind::ConfigMap, "cm1", false),
            r(Kind::ConfigMap, "cm2", true),
            r(Kind::ConfigMap, "cm3", true),
            r(Kind::Secret, "s1", false),
            r(Kind::Secret, "s2", false),
        ]
    );
}

#[test]
fn pod_dirs_lists_every_pod() {
    let f = Fixture::new();
    assert!(f.vm.pod_dirs().unwrap().is_empty(), "no root yet");
    for uid in ["u2", "u1"] {
        f.vm.setup(
            &pod(uid, json!([{"name": "d", "emptyDir": {}}]), json!([])),
            &PodObjects::default(),
        )
        .unwrap();
    }
    assert_eq!(f.vm.pod_dirs().unwrap(), vec!["u1", "u2"]);
}

/// Removes the test's container (state dir, id) even when the test fails half-way.
struct RuncDelete(PathBuf, String);

impl Drop for RuncDelete {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runc")
            .arg("--root")
            .arg(&self.0)
            .args(["delete", "--force", &self.1])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A real container (runc, busybox) gets the volumes as the runtime would mount them: the
/// configMap read-only and updated in place by a refresh while it runs, the emptyDir writable,
/// a readOnly mount refused, a subPath seen at its own path.
#[test]
fn a_runc_container_sees_the_mounts_and_a_refresh() {
    let f = Fixture::new();
    let p = pod(
        "uid-runc",
        json!([
            {"name": "cfg", "configMap": {"name": "c"}},
            {"name": "data", "emptyDir": {}},
        ]),
        json!([
            {"name": "cfg", "mountPath": "/cfg"},
            {"name": "cfg", "mountPath": "/app.conf", "subPath": "k"},
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/data-ro", "readOnly": true},
            {"name": "data", "mountPath": "/logs", "subPath": "logs"},
        ]),
    );
    let vols =
        f.vm.setup(
            &p,
            &objects(vec![config_map("c", json!({"k": "v1"}))], vec![]),
        )
        .unwrap();
    let mounts =
        f.vm.container_mounts(&p, &p.spec.containers[0], &vols)
            .unwrap();
    let data = f.vol_dir("uid-runc", "empty-dir", "data");

    // Bundle: busybox as the whole rootfs, runc's default spec with our mounts.
    let bundle = f.scratch().join("bundle");
    fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
    fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin/sh")).unwrap();
    let st = std::process::Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .expect("runc is needed (apt-get install -y runc)");
    assert!(st.success());
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let script = "B=/bin/busybox; $B cat /cfg/k; echo; $B cat /app.conf; echo; \
        echo w > /data/w && echo data-rw; \
        (echo w > /data-ro/w) 2>/dev/null && echo data-ro-WRITABLE || echo data-ro-refused; \
        (echo w > /cfg/w) 2>/dev/null && echo cfg-WRITABLE || echo cfg-refused; \
        echo l > /logs/l && echo logs-rw; \
        $B touch /data/started; \
        while [ ! -e /data/go ]; do $B sleep 0.05; done; \
        $B cat /cfg/k; echo; $B cat /app.conf; echo";
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["/bin/sh", "-c", script]);
    let list = spec["mounts"].as_array_mut().unwrap();
    for m in &mounts {
        list.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": ["rbind", if m.read_only { "ro" } else { "rw" }],
        }));
    }
    fs::write(bundle.join("config.json"), spec.to_string()).unwrap();

    let state = f.scratch().join("runc-state");
    let id = format!("edged-volume-test-{}", std::process::id());
    let _cleanup = RuncDelete(state.clone(), id.clone());
    let child = std::process::Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Wait for the container to have read v1 (bounded, so a broken runc fails the test).
    let mut waited = 0;
    while !data.join("started").exists() {
        assert!(waited < 600, "the container did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    f.vm.refresh(
        &p,
        &objects(vec![config_map("c", json!({"k": "v2"}))], vec![]),
    )
    .unwrap();
    fs::write(data.join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "v1",
            "v1",
            "data-rw",
            "data-ro-refused",
            "cfg-refused",
            "logs-rw",
            // The volume mount follows `..data`; a subPath mount is pinned to the file it was
            // made of (as with the kubelet, subPath mounts of a configMap see no updates).
            "v2",
            "v1",
        ],
        "{stdout}"
    );
    assert_eq!(fs::read_to_string(data.join("w")).unwrap(), "w\n");
    assert_eq!(fs::read_to_string(data.join("logs/l")).unwrap(), "l\n");
    drop(_cleanup);
    teardown_clean(&f, "uid-runc");
}
