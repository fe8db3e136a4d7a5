//! The manifest directory source end to end: real files, a real LMDB store, the real
//! MetaManager; and `edged get` run as the real binary against a store written here.

use edged::manifest::{self, Source, ANNOTATION_FILE, ANNOTATION_SOURCE};
use edged::metamanager::{Change, MetaManager, Offline, Store, Table};
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const NODE: &str = "edge-1";

struct Rig {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
    meta: Arc<MetaManager>,
    rx: async_channel::Receiver<Change>,
}

impl Rig {
    fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let dir = tmp.path().join("manifests");
        fs::create_dir_all(&dir).unwrap();
        let (meta, rx) = open_meta(&root);
        Rig {
            _tmp: tmp,
            root,
            dir,
            meta,
            rx,
        }
    }

    /// Drops the store and opens it again, as an agent restart does.
    fn restart(&mut self) {
        let (tx, _) = async_channel::unbounded();
        // LMDB wants one environment per file in a process: put a throwaway store in place
        // first, so the old one (its last Arc) closes before the real one opens again.
        self.meta = Arc::new(MetaManager::new(
            Arc::new(Store::open(&self.root.join("other")).unwrap()),
            tx,
            Arc::new(Offline),
        ));
        let (meta, rx) = open_meta(&self.root);
        self.meta = meta;
        self.rx = rx;
    }

    fn source(&self) -> Source {
        let held = manifest::stored(self.meta.store()).unwrap();
        Source::new(self.dir.clone(), NODE.into(), held)
    }

    fn write(&self, name: &str, text: &str) {
        fs::write(self.dir.join(name), text).unwrap();
    }

    fn sync(&self, source: &mut Source) -> manifest::Report {
        smol::block_on(source.sync(&self.meta))
    }

    /// Every change handed on to edged since the last call (`insert ns/pod/name`, `change
    /// ns/configmap/name`).
    fn handed(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(c) = self.rx.try_recv() {
            out.push(c.to_string());
        }
        out
    }

    fn get(&self, t: Table, key: &str) -> Option<Value> {
        self.meta.store().get(t, key).unwrap()
    }
}

fn open_meta(root: &Path) -> (Arc<MetaManager>, async_channel::Receiver<Change>) {
    let store = Arc::new(Store::open(&root.join("meta")).unwrap());
    let (tx, rx) = async_channel::unbounded();
    (Arc::new(MetaManager::new(store, tx, Arc::new(Offline))), rx)
}

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: main\n    image: {image}\n"
    )
}

fn ops(report: &manifest::Report) -> Vec<String> {
    report
        .applied
        .iter()
        .map(|m| format!("{} {}", m.route.operation, m.route.resource))
        .collect()
}

#[test]
fn insert_update_delete_through_the_directory() {
    let rig = Rig::new();
    let mut src = rig.source();
    rig.write("web.yaml", &pod("web", "busybox:1"));
    rig.write(
        "cfg.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg","namespace":"apps"},"data":{"a":"1"}}"#,
    );
    rig.write("README.md", "not a manifest");
    rig.write(".web.yaml.swp", "garbage");
    let r = rig.sync(&mut src);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        ops(&r),
        ["insert apps/configmap/cfg", "insert default/pod/web"]
    );
    assert_eq!(
        rig.handed(),
        ["change apps/configmap/cfg", "insert default/pod/web"]
    );
    let m = &r.applied[1];
    assert_eq!(
        (m.route.source.as_str(), m.route.group.as_str()),
        ("manifest", "resource")
    );
    assert_eq!(m.content["kind"], "Pod");
    assert_eq!(m.content["apiVersion"], "v1");
    let stored = rig.get(Table::Pod, "default/web").unwrap();
    assert_eq!(stored["metadata"]["namespace"], "default");
    assert_eq!(stored["spec"]["nodeName"], NODE);
    assert_eq!(stored["metadata"]["annotations"][ANNOTATION_SOURCE], "file");
    assert_eq!(
        stored["metadata"]["annotations"][ANNOTATION_FILE],
        "web.yaml"
    );
    assert!(stored["metadata"]["annotations"]["kubernetes.io/config.hash"].is_string());
    assert_eq!(
        rig.get(Table::ConfigMap, "apps/cfg").unwrap()["data"]["a"],
        "1"
    );

    // A rescan with nothing changed sends nothing.
    assert!(rig.sync(&mut src).applied.is_empty());
    assert!(rig.handed().is_empty());

    // An edit is an update with the same uid and creation time.
    rig.write("web.yaml", &pod("web", "busybox:2"));
    let r = rig.sync(&mut src);
    assert_eq!(ops(&r), ["update default/pod/web"]);
    let edited = rig.get(Table::Pod, "default/web").unwrap();
    assert_eq!(edited["spec"]["containers"][0]["image"], "busybox:2");
    assert_eq!(edited["metadata"]["uid"], stored["metadata"]["uid"]);
    assert_eq!(
        edited["metadata"]["creationTimestamp"],
        stored["metadata"]["creationTimestamp"]
    );

    // Removing the file deletes its object.
    fs::remove_file(rig.dir.join("web.yaml")).unwrap();
    let r = rig.sync(&mut src);
    assert_eq!(ops(&r), ["delete default/pod/web"]);
    assert_eq!(
        rig.handed(),
        ["update default/pod/web", "delete default/pod/web"]
    );
    assert!(rig.get(Table::Pod, "default/web").is_none());
    assert!(rig.get(Table::ConfigMap, "apps/cfg").is_some());

    // No directory at all: no objects from files (as the kubelet), and it says so.
    fs::remove_dir_all(&rig.dir).unwrap();
    let r = rig.sync(&mut src);
    assert_eq!(ops(&r), ["delete apps/configmap/cfg"]);
    assert!(
        r.errors.join("\n").contains("does not exist"),
        "{:?}",
        r.errors
    );
}

#[test]
fn multi_document_yaml_and_list() {
    let rig = Rig::new();
    let mut src = rig.source();
    rig.write(
        "app.yml",
        &format!(
            "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{password: s3cret}}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: one}}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: two, namespace: kube-system}}\n",
            pod("app", "busybox")
        ),
    );
    let r = rig.sync(&mut src);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        ops(&r),
        [
            "insert default/configmap/one",
            "insert default/pod/app",
            "insert default/secret/creds",
            "insert kube-system/configmap/two",
        ]
    );
    let secret = rig.get(Table::Secret, "default/creds").unwrap();
    assert_eq!(secret["data"]["password"], "czNjcmV0");
    assert_eq!(secret["type"], "Opaque");

    // Taking one object out of the file deletes that object only.
    rig.write("app.yml", &pod("app", "busybox"));
    let r = rig.sync(&mut src);
    assert_eq!(
        ops(&r),
        [
            "delete default/configmap/one",
            "delete default/secret/creds",
            "delete kube-system/configmap/two",
        ]
    );
}

#[test]
fn a_bad_file_keeps_its_objects_and_names_file_object_field() {
    let rig = Rig::new();
    let mut src = rig.source();
    rig.write(
        "web.yaml",
        &format!("{}---\n{}", pod("web", "busybox"), pod("side", "busybox")),
    );
    rig.write("other.yaml", &pod("other", "busybox"));
    assert_eq!(rig.sync(&mut src).applied.len(), 3);
    let before = rig.get(Table::Pod, "default/web").unwrap();

    // Break the second document: two containers of the same name.
    rig.write(
        "web.yaml",
        &format!(
            "{}---\n{}  - name: main\n    image: busybox\n",
            pod("web", "busybox:2"),
            pod("side", "busybox")
        ),
    );
    fs::remove_file(rig.dir.join("other.yaml")).unwrap();
    let r = rig.sync(&mut src);
    // The other file goes on; the bad one changes nothing.
    assert_eq!(ops(&r), ["delete default/pod/other"]);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let e = &r.errors[0];
    assert!(
        e.contains("web.yaml")
            && e.contains("Pod default/side")
            && e.contains("spec.containers[1].name"),
        "{e}"
    );
    assert!(e.contains("duplicate"), "{e}");
    assert_eq!(rig.get(Table::Pod, "default/web").unwrap(), before);
    assert!(rig.get(Table::Pod, "default/side").is_some());

    // A type error names the path; an object without a name, its document.
    rig.write(
        "web.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: main\n    image: busybox\n    args: 5\n---\napiVersion: v1\nkind: Pod\nspec: {}\n",
    );
    let e = rig.sync(&mut src).errors.join("\n");
    assert!(
        e.contains("web.yaml: Pod default/web: field `spec.containers[0].args`"),
        "{e}"
    );
    rig.write("web.yaml", "apiVersion: v1\nkind: Pod\nspec: {}\n");
    let e = rig.sync(&mut src).errors.join("\n");
    assert!(
        e.contains("Pod (document 1)") && e.contains("metadata.name"),
        "{e}"
    );
    rig.write(
        "web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
    );
    let e = rig.sync(&mut src).errors.join("\n");
    assert!(e.contains("web.yaml") && e.contains("Deployment"), "{e}");
    rig.write("web.yaml", "kind: Pod\n  bad: [indent\n");
    let e = rig.sync(&mut src).errors.join("\n");
    assert!(e.contains("web.yaml") && e.contains("YAML"), "{e}");
    assert_eq!(rig.get(Table::Pod, "default/web").unwrap(), before);

    // Fixed: applied.
    rig.write("web.yaml", &pod("web", "busybox:3"));
    let r = rig.sync(&mut src);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        ops(&r),
        ["update default/pod/web", "delete default/pod/side"]
    );
}

#[test]
fn uid_is_stable_across_rescans_and_restarts_and_start_reconciles() {
    let mut rig = Rig::new();
    let mut src = rig.source();
    rig.write("web.yaml", &pod("web", "busybox"));
    rig.write("gone.yaml", &pod("gone", "busybox"));
    rig.write(
        "ns.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: apps}\n",
    );
    rig.sync(&mut src);
    let uid = rig.get(Table::Pod, "default/web").unwrap()["metadata"]["uid"].clone();
    assert!(uid.as_str().is_some_and(|u| u.len() == 36), "{uid}");
    rig.sync(&mut src);
    assert_eq!(
        rig.get(Table::Pod, "default/web").unwrap()["metadata"]["uid"],
        uid
    );
    drop(src);

    // While the agent is down, one file goes and one changes.
    fs::remove_file(rig.dir.join("gone.yaml")).unwrap();
    rig.write(
        "ns.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: apps}\ndata: {k: v}\n",
    );
    rig.restart();
    let mut src = rig.source();
    assert_eq!(src.held().len(), 3);
    let r = rig.sync(&mut src);
    // The unchanged pod sends nothing; the gone file's pod is deleted.
    assert_eq!(
        ops(&r),
        ["update apps/configmap/c", "delete default/pod/gone"]
    );
    assert_eq!(
        rig.get(Table::Pod, "default/web").unwrap()["metadata"]["uid"],
        uid
    );
    assert!(rig.get(Table::Pod, "default/gone").is_none());
}

#[test]
fn duplicate_object_across_files_first_file_wins() {
    let rig = Rig::new();
    let mut src = rig.source();
    rig.write("10-web.yaml", &pod("web", "first"));
    rig.write("20-web.yaml", &pod("web", "second"));
    let r = rig.sync(&mut src);
    assert_eq!(ops(&r), ["insert default/pod/web"]);
    let e = r.errors.join("\n");
    assert!(
        e.contains("20-web.yaml") && e.contains("10-web.yaml"),
        "{e}"
    );
    let stored = rig.get(Table::Pod, "default/web").unwrap();
    assert_eq!(stored["spec"]["containers"][0]["image"], "first");
    // The first file goes: the second one's definition takes over.
    fs::remove_file(rig.dir.join("10-web.yaml")).unwrap();
    let r = rig.sync(&mut src);
    assert_eq!(ops(&r), ["update default/pod/web"]);
    assert!(r.errors.is_empty());
    let stored = rig.get(Table::Pod, "default/web").unwrap();
    assert_eq!(
        stored["metadata"]["annotations"][ANNOTATION_FILE],
        "20-web.yaml"
    );
}

#[test]
fn unknown_fields_are_kept_and_cloud_objects_untouched() {
    let rig = Rig::new();
    // An object from the cloud, and one the files will also name.
    let cloud = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"cloudy","namespace":"default","uid":"c-1"},
        "spec":{"containers":[{"name":"a","image":"x"}]}});
    let clash = json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"clash","namespace":"default","uid":"c-2"},
        "spec":{"containers":[{"name":"a","image":"x"}]}});
    let store = rig.meta.store().clone();
    store.put(Table::Pod, "default/cloudy", &cloud).unwrap();
    store.put(Table::Pod, "default/clash", &clash).unwrap();
    let mut src = rig.source();
    assert!(src.held().is_empty());
    rig.write(
        "web.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec:\n  futureField: {x: 1}\n  containers:\n  - name: main\n    image: busybox\n    someday: true\n",
    );
    rig.write("clash.yaml", &pod("clash", "mine"));
    let r = rig.sync(&mut src);
    assert_eq!(ops(&r), ["insert default/pod/web"]);
    let e = r.errors.join("\n");
    assert!(
        e.contains("clash.yaml") && e.contains("another source"),
        "{e}"
    );
    let web = rig.get(Table::Pod, "default/web").unwrap();
    assert_eq!(web["spec"]["futureField"]["x"], 1);
    assert_eq!(web["spec"]["containers"][0]["someday"], true);
    assert_eq!(web["metadata"]["labels"]["app"], "web");
    assert_eq!(rig.get(Table::Pod, "default/clash").unwrap(), clash);
    // Removing every file deletes only what the files made.
    fs::remove_file(rig.dir.join("web.yaml")).unwrap();
    fs::remove_file(rig.dir.join("clash.yaml")).unwrap();
    let r = rig.sync(&mut src);
    assert_eq!(ops(&r), ["delete default/pod/web"]);
    assert_eq!(rig.get(Table::Pod, "default/cloudy").unwrap(), cloud);
    assert_eq!(rig.get(Table::Pod, "default/clash").unwrap(), clash);
}

// ---- `edged get`, the real binary ----

fn edged(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edged"))
        .arg("--root-dir")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ago(secs: u64) -> String {
    edged::api::rfc3339(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
}

#[test]
fn edged_get_prints_tables_json_and_yaml() {
    let rig = Rig::new();
    let s = rig.meta.store().clone();
    let mk_pod = |ns: &str, name: &str, containers: usize, created: &str| {
        let cs: Vec<Value> = (0..containers)
            .map(|i| json!({"name": format!("c{i}"), "image": "busybox"}))
            .collect();
        json!({"apiVersion":"v1","kind":"Pod",
               "metadata":{"name":name,"namespace":ns,"creationTimestamp":created},
               "spec":{"containers":cs}})
    };
    s.put(
        Table::Pod,
        "default/web",
        &mk_pod("default", "web", 2, &ago(3 * 3600 + 60)),
    )
    .unwrap();
    s.put(
        Table::Pod,
        "apps/job",
        &mk_pod("apps", "job", 1, &ago(4 * 86400)),
    )
    .unwrap();
    s.put(
        Table::PodStatus,
        "default/web",
        &json!({"phase":"Running","startTime":ago(100),"containerStatuses":[
            {"name":"c0","ready":true,"restartCount":1,"state":{"running":{}},"image":"busybox","imageID":""},
            {"name":"c1","ready":false,"restartCount":4,"state":{"waiting":{"reason":"CrashLoopBackOff"}},"image":"busybox","imageID":""}]}),
    )
    .unwrap();
    s.put(
        Table::ConfigMap,
        "default/cfg",
        &json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg","namespace":"default","creationTimestamp":ago(20 * 60)},
                "data":{"a":"1","b":"2"},"binaryData":{"c":"AA=="}}),
    )
    .unwrap();
    s.put(
        Table::Secret,
        "default/tok",
        &json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"tok","namespace":"default","creationTimestamp":ago(40 * 60)},
                "type":"kubernetes.io/service-account-token","data":{"token":"c2VjcmV0"}}),
    )
    .unwrap();
    s.put(
        Table::Node,
        &format!("null/{NODE}"),
        &json!({"apiVersion":"v1","kind":"Node","metadata":{"name":NODE,"creationTimestamp":ago(86400 * 10),
                "labels":{"node-role.kubernetes.io/edge":"","node-role.kubernetes.io/agent":""}},
                "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.29.5-kubeedge"}}}),
    )
    .unwrap();
    let root = &rig.root;

    let (code, out, err) = edged(root, &["get", "pods"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        cells(lines[0]),
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(
        cells(lines[1]),
        ["apps", "job", "0/1", "Pending", "0", "4d"]
    );
    assert_eq!(
        cells(lines[2]),
        ["default", "web", "1/2", "CrashLoopBackOff", "5", "3h1m"]
    );
    // Columns line up as kubectl's do.
    assert_eq!(lines[0].find("NAME "), lines[1].find("job"));

    let (code, out, _) = edged(root, &["get", "po", "-n", "default"]);
    assert_eq!(code, 0);
    assert_eq!(cells(out.lines().next().unwrap())[0], "NAME");
    assert_eq!(out.lines().count(), 2, "{out}");

    let (_, out, _) = edged(root, &["get", "cm"]);
    assert_eq!(
        cells(out.lines().nth(1).unwrap()),
        ["default", "cfg", "3", "20m"]
    );
    let (_, out, _) = edged(root, &["get", "secret", "-n", "default"]);
    assert_eq!(
        cells(out.lines().nth(1).unwrap()),
        ["tok", "kubernetes.io/service-account-token", "1", "40m"]
    );
    let (_, out, _) = edged(root, &["get", "node"]);
    assert_eq!(
        cells(out.lines().nth(1).unwrap()),
        [NODE, "Ready", "agent,edge", "10d", "v1.29.5-kubeedge"]
    );

    // One pod as JSON: the object with its stored status.
    let (code, out, _) = edged(root, &["get", "pod", "web", "-o", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "Pod");
    assert_eq!(v["status"]["containerStatuses"][1]["restartCount"], 4);
    // Many as a List; secrets printed as stored (base64).
    let (_, out, _) = edged(root, &["get", "secrets", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"][0]["data"]["token"], "c2VjcmV0");
    let (code, out, _) = edged(root, &["get", "pods", "-o", "yaml"]);
    assert_eq!(code, 0);
    let v: Value = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["items"][1]["status"]["phase"], "Running");

    // Mistakes.
    let (code, _, err) = edged(root, &["get", "deployments"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("pods") && err.contains("configmaps") && err.contains("node"),
        "{err}"
    );
    let (code, _, err) = edged(root, &["get", "pods", "-o", "xml"]);
    assert_eq!(code, 2);
    assert!(err.contains("json") && err.contains("yaml"), "{err}");
    let (code, out, _) = edged(root, &["get", "pods", "-o", "wide"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().next().is_some_and(|h| h.contains("IP")),
        "{out}"
    );
    let (code, _, err) = edged(root, &["get", "pod", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("pods \"nope\" not found"), "{err}");
    let (code, _, err) = edged(&rig.root.join("empty"), &["get", "pods"]);
    assert_eq!(code, 1);
    assert!(err.contains("--root-dir"), "{err}");
}

#[test]
fn agent_runs_the_directory_and_edged_get_reads_it_beside() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let dir = tmp.path().join("manifests");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("web.yaml"), pod("web", "busybox")).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_edged"))
        .arg("--root-dir")
        .arg(&root)
        .arg("--pod-manifest-path")
        .arg(&dir)
        .arg("--pod-log-dir")
        .arg(tmp.path().join("logs"))
        .args(["--file-check-frequency", "100ms", "--node-name", NODE])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) for the agent to store the pod; `edged get` reads beside it.
    let mut seen = None;
    for _ in 0..300 {
        let (code, out, _) = edged(&root, &["get", "pods", "-o", "json"]);
        if code == 0 {
            let v: Value = serde_json::from_str(&out).unwrap();
            if v["items"].as_array().is_some_and(|i| !i.is_empty()) {
                seen = Some(v);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The pod's file goes before the agent does, so nothing of the pod (its sandbox's
    // namespace mounts, its cgroup) outlives the test; wait (bounded) for the sandbox to go.
    let v = seen.expect("the agent never stored the manifest's pod");
    fs::remove_file(dir.join("web.yaml")).unwrap();
    let sandboxes = root.join("runtime/sandboxes");
    for _ in 0..600 {
        let left = fs::read_dir(&sandboxes).map(|d| d.count()).unwrap_or(0);
        if left == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = agent.wait().unwrap();
    let left = fs::read_dir(&sandboxes).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the deleted pod's sandbox is still there");
    assert_eq!(v["items"][0]["metadata"]["name"], "web");
    assert_eq!(v["items"][0]["spec"]["nodeName"], NODE);
    assert!(status.success(), "{status}");
    // The delete reached the store too.
    let store = Store::open_read_only(&root.join("meta")).unwrap();
    assert!(store.get(Table::Pod, "default/web").unwrap().is_none());
}

#[test]
fn a_deeply_nested_file_is_refused_at_once_and_holds_no_other() {
    // 200,000 levels of `[` in 400 KB: libyaml took minutes on it (time grows with the square
    // of the depth); it is refused before parsing, and the other file is applied in the same
    // pass. The JSON form too (JSON is read as YAML).
    let rig = Rig::new();
    let mut src = rig.source();
    let levels = 200_000;
    rig.write(
        "deep.yaml",
        &format!("x: {}{}\n", "[".repeat(levels), "]".repeat(levels)),
    );
    rig.write(
        "deep.json",
        &format!("{{\"x\": {}{}}}", "[".repeat(levels), "]".repeat(levels)),
    );
    rig.write("web.yaml", &pod("web", "busybox:1"));
    let start = std::time::Instant::now();
    let r = rig.sync(&mut src);
    eprintln!("pass with two 400 KB deep files took {:?}", start.elapsed());
    assert_eq!(ops(&r), ["insert default/pod/web"]);
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    for (e, file) in r.errors.iter().zip(["deep.json", "deep.yaml"]) {
        assert!(e.starts_with(file), "{e}");
        assert!(e.contains("nesting deeper than 64 at line 1"), "{e}");
    }
}

/// The agent on `<top>/root`, reading `<top>/manifests` every `freq`.
struct Agent(std::process::Child);

impl Agent {
    fn start(top: &Path, freq: &str) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_edged"))
            .arg("--root-dir")
            .arg(top.join("root"))
            .arg("--pod-manifest-path")
            .arg(top.join("manifests"))
            .arg("--pod-log-dir")
            .arg(top.join("logs"))
            .args(["--file-check-frequency", freq, "--node-name", NODE])
            .args(["--port", "0"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Agent(child)
    }

    /// SIGTERM, and waits for it to end.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.0.wait().unwrap();
    }
}

/// The directory is watched with inotify (as the kubelet's file source): with a rescan period
/// of an hour, a file written after the agent started is taken, and its removal seen, within
/// the test's bounded wait (20 s), not at the next rescan.
#[test]
fn a_new_file_is_taken_at_once_without_waiting_for_a_rescan() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let dir = tmp.path().join("manifests");
    fs::create_dir_all(&dir).unwrap();
    let agent = Agent::start(tmp.path(), "1h");
    let pods = |root: &Path| -> usize {
        let (code, out, _) = edged(root, &["get", "pods", "-o", "json"]);
        if code != 0 {
            return usize::MAX;
        }
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["items"].as_array().map(|i| i.len()).unwrap_or(usize::MAX)
    };
    let wait = |what: &str, want: usize| {
        for _ in 0..400 {
            if pods(&root) == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{what} not seen within 20 s with a 1 h rescan period");
    };
    // The first pass (at start) has run once the store answers with no pods.
    wait("the agent's first pass", 0);
    std::thread::sleep(std::time::Duration::from_millis(500));
    fs::write(dir.join("late.yaml"), pod("late", "busybox")).unwrap();
    wait("the new file's pod", 1);
    fs::remove_file(dir.join("late.yaml")).unwrap();
    wait("the removed file's pod gone", 0);
    let sandboxes = root.join("runtime/sandboxes");
    for _ in 0..600 {
        if fs::read_dir(&sandboxes).map(|d| d.count()).unwrap_or(0) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    agent.stop();
}

/// What the directory's inotify watch cannot see is still read every period, not only at the
/// watched-directory look (20 s): a manifest reached through a symlink whose target is
/// edited, and a directory replaced under the same path (watched again).
#[test]
fn what_inotify_cannot_see_is_read_every_period() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let dir = tmp.path().join("manifests");
    fs::create_dir_all(&dir).unwrap();
    let target = tmp.path().join("elsewhere.yaml");
    fs::write(&target, pod("linked", "one")).unwrap();
    std::os::unix::fs::symlink(&target, dir.join("linked.yaml")).unwrap();
    let agent = Agent::start(tmp.path(), "200ms");
    // name → image of the pods the agent holds.
    let pods = |root: &Path| -> Option<Vec<(String, String)>> {
        let (code, out, _) = edged(root, &["get", "pods", "-o", "json"]);
        if code != 0 {
            return None;
        }
        let v: Value = serde_json::from_str(&out).ok()?;
        let mut l: Vec<(String, String)> = v["items"]
            .as_array()?
            .iter()
            .map(|p| {
                let image = p["spec"]["containers"][0]["image"].as_str().unwrap_or("");
                (
                    p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    image.to_string(),
                )
            })
            .collect();
        l.sort();
        Some(l)
    };
    // Well below the 20 s watched-directory look.
    let wait = |what: &str, want: &[(&str, &str)]| {
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, i)| (n.to_string(), i.to_string()))
            .collect();
        let mut last = None;
        for _ in 0..160 {
            last = pods(&root);
            if last.as_ref() == Some(&want) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{what} not seen within 8 s at a 200 ms period: {last:?}");
    };
    wait("the symlinked file's pod", &[("linked", "one")]);
    // Settled (read 2 s after its write): from now on unchanged files are trusted.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let edited = tmp.path().join("edited.yaml");
    fs::write(&edited, pod("linked", "two")).unwrap();
    fs::rename(&edited, &target).unwrap();
    wait("the symlink target's edit", &[("linked", "two")]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    // The directory replaced: the new one's files are read, the old one's objects go.
    let new_dir = tmp.path().join("manifests.new");
    fs::create_dir(&new_dir).unwrap();
    fs::write(new_dir.join("fresh.yaml"), pod("fresh", "three")).unwrap();
    fs::rename(&dir, tmp.path().join("manifests.old")).unwrap();
    fs::rename(&new_dir, &dir).unwrap();
    wait("the replaced directory's files", &[("fresh", "three")]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    // And the new directory is watched: a file written there is taken.
    fs::write(dir.join("late.yaml"), pod("late", "four")).unwrap();
    wait(
        "a file in the new directory",
        &[("fresh", "three"), ("late", "four")],
    );
    agent.stop();
}
