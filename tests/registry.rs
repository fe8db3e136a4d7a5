//! Registry pulls against real parts (issue 13): Debian's `docker-registry` on loopback (plain
//! HTTP, TLS with a test CA, htpasswd basic auth), images pushed by `skopeo` (OCI, Docker v2
//! schema 2, a multi-arch index), pulled by `edged image pull`, through a fault-injecting TCP
//! proxy that cuts, trickles and refuses; and a pull killed midway and run again. Run as root
//! with docker-registry, skopeo and apache2-utils installed (scripts/setup.sh).

#[allow(dead_code)]
#[path = "common/faultproxy.rs"]
mod faultproxy;
#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;
#[allow(dead_code)]
#[path = "common/registry.rs"]
mod registry;

use faultproxy::{Faults, Proxy};
use host::BIN;
use registry::{Mode, Registry};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A temp dir with `root/` for edged.
fn workdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("edged-pull-{tag}-"))
        .tempdir_in("/tmp")
        .unwrap()
}

/// `edged --root-dir ROOT FLAGS image pull REF EXTRA`.
fn pull(root: &Path, flags: &[&str], reference: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--root-dir")
        .arg(root)
        .args(flags)
        .args(["image", "pull", reference])
        .args(extra)
        .env_remove("HOME")
        .output()
        .expect("run edged image pull")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ls(root: &Path) -> String {
    let o = Command::new(BIN)
        .arg("--root-dir")
        .arg(root)
        .args(["image", "ls"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The store's index.json.
fn index(root: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(root.join("images/index.json")).unwrap()).unwrap()
}

/// A padded image layout (`mb` MiB of random bytes on top of busybox) and its size.
fn padded(dir: &Path, mb: usize, seed: u64) -> (PathBuf, u64) {
    let layout = dir.join(format!("layout-{seed}"));
    let size = registry::padded_layout(host::image(), &layout, mb, seed);
    (layout, size)
}

#[test]
fn pulls_oci_docker_v2_multi_arch_and_by_digest() {
    let reg = Registry::start(Mode::Plain);
    let w = workdir("kinds");
    let (layout, _) = padded(w.path(), 1, 1);
    let src = format!("oci:{}", layout.display());
    reg.push(&src, "team/app:oci", &[]);
    // Another image (one config is one image, whatever its manifest's format).
    let (layout2, _) = padded(w.path(), 1, 4);
    reg.push(
        &format!("oci:{}", layout2.display()),
        "team/app:v2",
        &["--format", "v2s2"],
    );
    let multi = w.path().join("multi");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&layout)
        .arg(&multi)
        .status()
        .unwrap();
    assert!(st.success());
    let host_id = registry::make_multi_arch(&multi, "s390x");
    reg.push(
        &format!("oci:{}", multi.display()),
        "team/multi:1",
        &["--all"],
    );

    let root = w.path().join("root");
    for tag in ["team/app:oci", "team/app:v2", "team/multi:1"] {
        let r = format!("{}/{tag}", reg.addr);
        let o = pull(&root, &[], &r, &[]);
        assert!(o.status.success(), "{r}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(&format!("pulled {r}")), "{out}");
        assert!(ls(&root).contains(&r), "{}", ls(&root));
    }
    let idx = index(&root);
    let img = |name: &str| {
        idx["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["names"].as_array().unwrap().iter().any(|n| n == name))
            .unwrap_or_else(|| panic!("{name} not in {idx}"))
            .clone()
    };
    // The multi-arch index gave this platform's image, not the foreign one listed first.
    assert_eq!(
        img(&format!("{}/team/multi:1", reg.addr))["id"],
        host_id.as_str()
    );
    // The v2s2 push is kept as the Docker manifest it is.
    let v2 = img(&format!("{}/team/app:v2", reg.addr));
    let mblob = root
        .join("images/blobs/sha256")
        .join(&v2["manifest_digest"].as_str().unwrap()[7..]);
    let m: Value = serde_json::from_slice(&std::fs::read(mblob).unwrap()).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // The busybox layer is shared.
    assert_eq!(
        v2["layers"][0],
        img(&format!("{}/team/app:oci", reg.addr))["layers"][0]
    );
    // By digest: resolved, and `get`-able by that reference.
    let digest = v2["manifest_digest"].as_str().unwrap();
    let by_digest = format!("{}/team/app@{digest}", reg.addr);
    let o = pull(&root, &[], &by_digest, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 of 2 layers to fetch"),
        "{}",
        text(&o)
    );
    // Nothing left behind.
    assert_eq!(
        std::fs::read_dir(root.join("images/downloads"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(root.join("images/tmp")).unwrap().count(),
        0
    );
    // A missing tag: the registry's answer.
    let o = pull(&root, &[], &format!("{}/team/app:nope", reg.addr), &[]);
    assert!(!o.status.success());
    assert!(text(&o).contains("MANIFEST_UNKNOWN"), "{}", text(&o));
}

#[test]
fn mirrors_serve_in_order_and_mirror_only_keeps_off_the_registry() {
    let reg = Registry::start(Mode::Plain);
    let w = workdir("mirror");
    let (layout, _) = padded(w.path(), 1, 5);
    reg.push(
        &format!("oci:{}", layout.display()),
        "library/mirrored:1",
        &[],
    );
    // A dead mirror first, then the live one; docker.io itself is never tried.
    let dead = format!("docker.io=http://127.0.0.1:{}", registry::free_port());
    let live = format!("docker.io=http://{}", reg.addr);
    let flags = [
        "--registry-mirror",
        dead.as_str(),
        "--registry-mirror",
        live.as_str(),
        "--registry-mirror-only",
    ];
    let o = pull(&w.path().join("root"), &flags, "mirrored:1", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(ls(&w.path().join("root")).contains("docker.io/library/mirrored:1"));
    assert!(
        text(&o).contains("mirror failed, trying the next endpoint"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("registry-1.docker.io"), "{}", text(&o));
}

#[test]
fn tls_needs_the_registry_ca_or_insecure() {
    let reg = Registry::start(Mode::Tls);
    let w = workdir("tls");
    let (layout, _) = padded(w.path(), 1, 2);
    reg.push(&format!("oci:{}", layout.display()), "tls/app:1", &[]);
    let r = format!("{}/tls/app:1", reg.addr);
    let o = pull(&w.path().join("r1"), &[], &r, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("--registry-ca"), "{}", text(&o));
    let ca = format!("{}={}", reg.addr, reg.ca().display());
    let o = pull(&w.path().join("r2"), &["--registry-ca", &ca], &r, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = pull(
        &w.path().join("r3"),
        &["--insecure-registry", &reg.addr],
        &r,
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn basic_auth_from_creds_or_config_json() {
    let reg = Registry::start(Mode::Basic("edge", "s3cret"));
    let w = workdir("auth");
    let (layout, _) = padded(w.path(), 1, 3);
    reg.push(&format!("oci:{}", layout.display()), "private/app:1", &[]);
    let r = format!("{}/private/app:1", reg.addr);
    let o = pull(&w.path().join("r1"), &[], &r, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("requires credentials"), "{}", text(&o));
    let o = pull(&w.path().join("r2"), &[], &r, &["--creds", "edge:wrong"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("refused the credentials"), "{}", text(&o));
    let o = pull(&w.path().join("r3"), &[], &r, &["--creds", "edge:s3cret"]);
    assert!(o.status.success(), "{}", text(&o));
    // The node's docker config in <root-dir>/config.json.
    let root = w.path().join("r4");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"ZWRnZTpzM2NyZXQ="}}}}}}"#,
            reg.addr
        ),
    )
    .unwrap();
    let o = pull(&root, &[], &r, &[]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn bearer_tokens_from_the_challenge_are_fetched_once_per_pull() {
    let ts = registry::TokenServer::start();
    let reg = Registry::start(Mode::Token(ts.realm.clone(), ts.ca.clone()));
    let w = workdir("bearer");
    let (layout, _) = padded(w.path(), 1, 6);
    reg.push(&format!("oci:{}", layout.display()), "tok/app:1", &[]);
    let r = format!("{}/tok/app:1", reg.addr);
    let o = pull(&w.path().join("r1"), &[], &r, &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("bad credentials for the token service"),
        "{}",
        text(&o)
    );
    let before = ts.issued.load(Ordering::Relaxed);
    let o = pull(&w.path().join("r2"), &[], &r, &["--creds", "edge:t0ken"]);
    assert!(o.status.success(), "{}\nregistry: {}", text(&o), reg.log());
    // One token for the manifest, config and both layers: cached, not asked per request.
    assert_eq!(ts.issued.load(Ordering::Relaxed) - before, 1);
}

/// A registry with one padded image behind a proxy with `faults`: the pull's size.
fn faulty(tag: &str, mb: usize, faults: Faults) -> (Registry, Proxy, tempfile::TempDir, u64) {
    let reg = Registry::start(Mode::Plain);
    let w = workdir(tag);
    let (layout, size) = padded(w.path(), mb, 10 + mb as u64);
    reg.push(&format!("oci:{}", layout.display()), "weak/app:1", &[]);
    let proxy = Proxy::start(&reg.addr, faults);
    (reg, proxy, w, size)
}

#[test]
fn a_cut_connection_resumes_where_it_stopped() {
    let (_reg, proxy, w, size) = faulty("cut", 8, Faults::default());
    proxy.faults.lock().unwrap().cut_at = Some(size / 2);
    let r = format!("{}/weak/app:1", proxy.addr);
    let o = pull(&w.path().join("root"), &[], &r, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming"), "{}", text(&o));
    let down = proxy.down.load(Ordering::Relaxed);
    assert!(
        (down as f64) < size as f64 * 1.2,
        "fetched {down} bytes for an image of {size}"
    );
    assert!(
        proxy.faults.lock().unwrap().cut_at.is_none(),
        "the cut happened"
    );
}

#[test]
fn a_trickle_below_the_minimum_rate_is_retried() {
    let (_reg, proxy, w, size) = faulty("trickle", 4, Faults::default());
    {
        let mut f = proxy.faults.lock().unwrap();
        f.trickle_at = Some(size / 3);
        f.trickle_rate = 2048;
    }
    let r = format!("{}/weak/app:1", proxy.addr);
    let flags = [
        "--image-pull-min-rate",
        "64KiB/s",
        "--image-pull-min-rate-window",
        "3s",
    ];
    let o = pull(&w.path().join("root"), &flags, &r, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("below --image-pull-min-rate"),
        "{}",
        text(&o)
    );
    assert!(proxy.conns.load(Ordering::Relaxed) >= 2);
}

#[test]
fn a_silent_connection_is_retried_after_the_progress_deadline() {
    let (_reg, proxy, w, size) = faulty("stall", 4, Faults::default());
    proxy.faults.lock().unwrap().stall_at = Some(size / 2);
    let r = format!("{}/weak/app:1", proxy.addr);
    let flags = ["--image-pull-progress-deadline", "2s"];
    let o = pull(&w.path().join("root"), &flags, &r, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("--image-pull-progress-deadline"),
        "{}",
        text(&o)
    );
    assert!(
        proxy.faults.lock().unwrap().stall_at.is_none(),
        "the stall happened"
    );
    let down = proxy.down.load(Ordering::Relaxed);
    assert!(
        (down as f64) < size as f64 * 1.2,
        "fetched {down} of {size}"
    );
}

#[test]
fn a_refusing_registry_is_retried_with_back_off() {
    let (_reg, proxy, w, _) = faulty("refuse", 1, Faults::default());
    proxy.faults.lock().unwrap().refuse_until = Some(Instant::now() + Duration::from_secs(6));
    let r = format!("{}/weak/app:1", proxy.addr);
    let o = pull(&w.path().join("root"), &[], &r, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let refused = proxy.refused.load(Ordering::Relaxed);
    assert!(refused >= 2, "refused {refused}");
    // Backed off: a few tries in 6 s, not a busy loop.
    assert!(refused < 30, "refused {refused}");
    assert!(text(&o).contains("registry unreachable"), "{}", text(&o));
}

#[test]
fn a_pull_killed_midway_resumes_in_the_next_run() {
    let (_reg, proxy, w, size) = faulty("kill", 8, Faults::default());
    proxy.faults.lock().unwrap().cap_rate = Some(2 << 20);
    let root = w.path().join("root");
    let r = format!("{}/weak/app:1", proxy.addr);
    let mut child = Command::new(BIN)
        .arg("--root-dir")
        .arg(&root)
        .args(["image", "pull", &r])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.down.load(Ordering::Relaxed) < size / 2 {
        assert!(Instant::now() < deadline, "the pull did not get half way");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let parts: Vec<_> = std::fs::read_dir(root.join("images/downloads"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(!parts.is_empty(), "a partial blob is kept");
    proxy.faults.lock().unwrap().cap_rate = None;
    let o = pull(&root, &[], &r, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let down = proxy.down.load(Ordering::Relaxed);
    assert!(
        (down as f64) < size as f64 * 1.2,
        "fetched {down} bytes over both runs for an image of {size}"
    );
}

/// A running agent for the pod tests: its manifests dir, root, logs; killed and cleaned up
/// (containers, mounts, cgroups) when dropped.
struct PodAgent {
    dir: tempfile::TempDir,
    host: host::Host,
    child: std::process::Child,
    flags: Vec<String>,
}

impl PodAgent {
    fn start(tag: &str, objects: &[Value]) -> PodAgent {
        let dir = workdir(tag);
        for d in ["root", "logs", "manifests"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        PodAgent::start_in(dir, objects, &["--image-gc-high-threshold", "100"])
    }

    /// Starts an agent on `dir` (its `root`, `logs`, `manifests` made) with `flags`.
    fn start_in(dir: tempfile::TempDir, objects: &[Value], flags: &[&str]) -> PodAgent {
        for (i, o) in objects.iter().enumerate() {
            std::fs::write(
                dir.path().join(format!("manifests/{i}.json")),
                o.to_string(),
            )
            .unwrap();
        }
        let child = PodAgent::spawn(&dir, flags);
        PodAgent {
            host: host::Host::new(dir.path()),
            dir,
            child,
            flags: flags.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// Starts the agent binary on `dir`, its log appended to `agent.log`.
    fn spawn(dir: &tempfile::TempDir, flags: &[&str]) -> std::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("agent.log"))
            .unwrap();
        Command::new(BIN)
            .arg("--root-dir")
            .arg(dir.path().join("root"))
            .arg("--pod-log-dir")
            .arg(dir.path().join("logs"))
            .arg("--pod-manifest-path")
            .arg(dir.path().join("manifests"))
            .args([
                "--file-check-frequency",
                "1s",
                "--node-name",
                "pull-node",
                "--node-ip",
                "127.0.0.1",
                "--port",
                "0",
            ])
            .args(flags)
            .env_remove("HOME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// kill -9 of the agent (its shims and containers run on), then the agent again.
    fn kill9_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        self.child = PodAgent::spawn(&self.dir, &flags);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Polls pod `name` until `ok` holds for its first container's status.
    fn wait(&self, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        host::wait_until(
            what,
            || host::tail(&self.log(), 40),
            || {
                self.host
                    .get("pods")
                    .into_iter()
                    .find(|p| p["metadata"]["name"] == name)
                    .map(|p| p["status"]["containerStatuses"][0].clone())
                    .filter(|c| ok(c))
            },
        )
    }
}

impl Drop for PodAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.host.clean_up();
    }
}

fn pod(name: &str, image: &str, policy: &str, secrets: &[&str]) -> Value {
    let secrets: Vec<Value> = secrets
        .iter()
        .map(|s| serde_json::json!({"name": s}))
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "pull"},
        "spec": {"terminationGracePeriodSeconds": 1, "imagePullSecrets": secrets,
            "containers": [{"name": "app", "image": image, "imagePullPolicy": policy,
                "command": ["sh", "-c", "echo pulled image runs; sleep 1000"]}]}})
}

fn pull_secret(name: &str, registry: &str, user: &str, pass: &str) -> Value {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let cfg = format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#);
    serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": cfg}})
}

#[test]
fn a_pod_runs_a_registry_image_if_not_present() {
    let reg = Registry::start(Mode::Plain);
    let w = workdir("podimg");
    let (layout, _) = padded(w.path(), 1, 20);
    reg.push(&format!("oci:{}", layout.display()), "pods/app:1", &[]);
    let image = format!("{}/pods/app:1", reg.addr);
    let a = PodAgent::start("pod", &[pod("runs", &image, "IfNotPresent", &[])]);
    a.wait("runs", "the pulled image running", |c| {
        c["state"]["running"].is_object()
    });
    let log = a.log();
    let started = log.lines().filter(|l| l.contains("pulling image")).count();
    let ended = log
        .lines()
        .filter(|l| l.contains("image pulled") && l.contains("bytes="))
        .count();
    assert_eq!((started, ended), (1, 1), "{log}");
}

#[test]
fn pull_secrets_right_runs_wrong_backs_off_with_the_registry_message() {
    let reg = Registry::start(Mode::Basic("edge", "s3cret"));
    let w = workdir("podauth");
    let (layout, _) = padded(w.path(), 1, 21);
    reg.push(&format!("oci:{}", layout.display()), "private/app:1", &[]);
    let image = format!("{}/private/app:1", reg.addr);
    let a = PodAgent::start(
        "podauth",
        &[
            pull_secret("good", &reg.addr, "edge", "s3cret"),
            pull_secret("bad", &reg.addr, "edge", "wrong"),
            pod("good", &image, "IfNotPresent", &["good"]),
            pod("bad", &image, "Always", &["bad"]),
            pod("none", &image, "Always", &[]),
        ],
    );
    a.wait(
        "good",
        "the image pulled with the right secret running",
        |c| c["state"]["running"].is_object(),
    );
    let c = a.wait("bad", "ErrImagePull", |c| {
        c["state"]["waiting"]["reason"] == "ErrImagePull"
    });
    let msg = c["state"]["waiting"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("refused the credentials") && msg.contains("UNAUTHORIZED"),
        "{msg}"
    );
    let c = a.wait("bad", "ImagePullBackOff", |c| {
        c["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    let msg = c["state"]["waiting"]["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(&format!("Back-off pulling image \"{image}\"")),
        "{msg}"
    );
    assert!(msg.contains("UNAUTHORIZED"), "{msg}");
    let c = a.wait("none", "ErrImagePull without a secret", |c| {
        c["state"]["waiting"]["reason"] == "ErrImagePull"
            || c["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    let msg = c["state"]["waiting"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("requires credentials"), "{msg}");
}

#[test]
fn image_gc_makes_room_for_a_pull_and_one_too_big_is_refused_with_the_figures() {
    let reg = Registry::start(Mode::Plain);
    let w = workdir("room");
    for (name, mb, seed) in [("old", 12, 31), ("new", 6, 32), ("huge", 40, 33)] {
        let (layout, _) = padded(w.path(), mb, seed);
        reg.push(
            &format!("oci:{}", layout.display()),
            &format!("room/{name}:1"),
            &[],
        );
    }
    for d in ["root", "logs", "manifests"] {
        std::fs::create_dir_all(w.path().join(d)).unwrap();
    }
    // The root on a 96 MiB tmpfs: a real filesystem that really fills.
    let root = w.path().join("root");
    nix::mount::mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=96m"),
    )
    .expect("mount a tmpfs (as root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(root.clone());
    // An image pulled earlier and not used by any pod, and 45 MiB of other data: about 72 %
    // used, under the 85 % high threshold, so periodic image GC leaves the old image be.
    let o = pull(&root, &[], &format!("{}/room/old:1", reg.addr), &[]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(root.join("filler"), vec![7u8; 45 << 20]).unwrap();
    let new = format!("{}/room/new:1", reg.addr);
    let huge = format!("{}/room/huge:1", reg.addr);
    let a = PodAgent::start_in(
        w,
        &[
            pod("fits", &new, "IfNotPresent", &[]),
            pod("toobig", &huge, "IfNotPresent", &[]),
        ],
        &[
            "--image-gc-high-threshold",
            "85",
            "--image-gc-low-threshold",
            "80",
            "--image-minimum-gc-age",
            "0s",
        ],
    );
    // The 6 MiB image (about 3 x its size on disk while it lands) would pass 85 %: image GC
    // removes the unused one first, and the pull goes ahead.
    a.wait("fits", "running after image GC made room", |c| {
        c["state"]["running"].is_object()
    });
    let log = a.log();
    assert!(log.contains("image GC before a pull"), "{log}");
    assert!(log.contains("image GC made room for a pull"), "{log}");
    let images = ls(&root);
    assert!(
        !images.contains("room/old"),
        "the unused image went: {images}"
    );
    // 40 MiB cannot fit under the threshold whatever GC does: refused, with the figures.
    let c = a.wait("toobig", "ErrImagePull for lack of room", |c| {
        c["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("high threshold"))
    });
    let m = c["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(m.contains("85%") && m.contains("edged image rm"), "{m}");
    drop(a);
}

#[test]
fn an_agent_killed_mid_pull_resumes_the_pull_after_its_restart() {
    let (_reg, proxy, w, size) = faulty("agentkill", 8, Faults::default());
    proxy.faults.lock().unwrap().cap_rate = Some(2 << 20);
    let image = format!("{}/weak/app:1", proxy.addr);
    for d in ["root", "logs", "manifests"] {
        std::fs::create_dir_all(w.path().join(d)).unwrap();
    }
    let mut a = PodAgent::start_in(
        w,
        &[pod("slowpull", &image, "IfNotPresent", &[])],
        &["--image-gc-high-threshold", "100"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.down.load(Ordering::Relaxed) < size / 2 {
        assert!(Instant::now() < deadline, "the pull did not get half way");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill9_and_restart();
    let parts = std::fs::read_dir(a.dir.path().join("root/images/downloads"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .count();
    assert!(parts > 0, "the partial blob is kept across the kill");
    proxy.faults.lock().unwrap().cap_rate = None;
    a.wait("slowpull", "running after the resumed pull", |c| {
        c["state"]["running"].is_object()
    });
    let down = proxy.down.load(Ordering::Relaxed);
    assert!(
        (down as f64) < size as f64 * 1.2,
        "fetched {down} bytes over both agent runs for an image of {size}"
    );
}
