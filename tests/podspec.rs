//! Pod-spec features of issue 17 on real containers (shim + runc): fsGroup and volume
//! ownership, supplementalGroups and their policy, runAsGroup, subPathExpr, the lifecycle
//! `sleep` action, hostAliases and the pod's hostname. Each container writes what it sees into
//! an emptyDir; the test reads it there from the host. Run as root: `cargo test --test podspec`.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;

use agent::{pod, sh, Agent};
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Writes `docs` as one YAML file of the agent's manifest dir.
fn write_manifests(a: &Agent, file: &str, docs: &[Value]) {
    let text: Vec<String> = docs.iter().map(Value::to_string).collect();
    std::fs::write(
        a.dir.path().join("manifests").join(file),
        text.join("\n---\n"),
    )
    .unwrap();
}

/// The host directory of the pod's volume `name` of plugin `plugin` (`empty-dir`, ...).
fn volume_dir(a: &Agent, pod: &Value, plugin: &str, name: &str) -> PathBuf {
    let uid = pod["metadata"]["uid"].as_str().expect("a uid");
    a.root()
        .join("pods")
        .join(uid)
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(name)
}

/// Waits until the container wrote `file` into the emptyDir at `dir`; its content.
fn wait_file(a: &Agent, dir: &Path, file: &str) -> String {
    let p = dir.join(file);
    a.wait_for(&format!("{} written", p.display()), || {
        std::fs::read_to_string(&p).ok()
    })
}

/// (gid, mode & 07777) of `p`, symlinks followed.
fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.gid(), m.mode() & 0o7777)
}

/// A ConfigMap (`data`) or Secret (`stringData`) in `default`.
fn object(name: &str, kind: &str, data: Value) -> Value {
    let field = if kind == "Secret" {
        "stringData"
    } else {
        "data"
    };
    json!({"apiVersion": "v1", "kind": kind,
           "metadata": {"name": name, "namespace": "default"}, field: data})
}

/// fsGroup as the Kubernetes documentation's task page shows it: the volumes belong to the
/// group (setgid on directories, group read-write on the emptyDir, group read on API data),
/// files the container makes get the group, and the container's process has it.
#[test]
fn fs_group_owns_every_volume_and_joins_the_process() {
    let a = Agent::start("podspec-fsgroup", &[], &[]);
    let cm = object("fsg-cm", "ConfigMap", json!({"k": "v"}));
    let secret = object("fsg-secret", "Secret", json!({"pw": "s3cret"}));
    let script = "id -G > /e/groups.tmp && mv /e/groups.tmp /e/groups; \
        touch /e/made; mkdir /e/sub; \
        cat /s/pw > /e/secret-read 2>&1; echo $? >> /e/secret-read; \
        echo ok > /e/done; sleep 100000";
    let mut c = sh("c", script);
    c["volumeMounts"] = json!([
        {"name": "e", "mountPath": "/e"}, {"name": "cm", "mountPath": "/cm"},
        {"name": "s", "mountPath": "/s"}, {"name": "d", "mountPath": "/d"},
        {"name": "p", "mountPath": "/p"}]);
    let p = pod(
        "fsg-pod",
        vec![c],
        json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                                "fsGroupChangePolicy": "OnRootMismatch"},
            "volumes": [
                {"name": "e", "emptyDir": {}},
                {"name": "cm", "configMap": {"name": "fsg-cm"}},
                {"name": "s", "secret": {"secretName": "fsg-secret", "defaultMode": 0o400}},
                {"name": "d", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"name": "p", "projected": {"defaultMode": 0o400, "sources": [
                    {"configMap": {"name": "fsg-cm"}}]}}]}),
    );
    write_manifests(&a, "fsg.yaml", &[cm, secret, p]);
    let status = a.wait_running("fsg-pod");
    let e = volume_dir(&a, &status, "empty-dir", "e");
    wait_file(&a, &e, "done");

    let groups = wait_file(&a, &e, "groups");
    let mut groups: Vec<&str> = groups.split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["2000", "3000"], "id -G in the container");
    // The user can read a 0400 secret through the group (0440 now).
    assert_eq!(wait_file(&a, &e, "secret-read"), "s3cret0\n");

    assert_eq!(owner(&e), (2000, 0o2777), "emptyDir root");
    assert_eq!(owner(&e.join("made")).0, 2000, "a file the container made");
    let sub = owner(&e.join("sub"));
    assert_eq!(sub.0, 2000, "a directory the container made");
    assert_ne!(sub.1 & 0o2000, 0, "setgid inherited");

    let cm_dir = volume_dir(&a, &status, "configmap", "cm");
    assert_eq!(owner(&cm_dir), (2000, 0o2755));
    assert_eq!(owner(&cm_dir.join("k")), (2000, 0o644));
    assert_eq!(owner(&cm_dir.join("..data")).1 & 0o2000, 0o2000);
    let s_dir = volume_dir(&a, &status, "secret", "s");
    assert_eq!(owner(&s_dir.join("pw")), (2000, 0o440));
    let d_dir = volume_dir(&a, &status, "downward-api", "d");
    assert_eq!(owner(&d_dir.join("name")), (2000, 0o644));
    let p_dir = volume_dir(&a, &status, "projected", "p");
    assert_eq!(owner(&p_dir.join("k")), (2000, 0o440));
}

/// `/proc/self/status`'s `Groups:` line of each container: supplementalGroups and fsGroup
/// join runAsGroup (the pod's, or the container's own), under `supplementalGroupsPolicy:
/// Strict` too; the uid and gid are what runAsUser and runAsGroup say.
#[test]
fn supplemental_groups_and_run_as_group_reach_the_process() {
    let a = Agent::start("podspec-groups", &[], &[]);
    let script = |n: &str| {
        format!(
            "grep -E '^(Uid|Gid|Groups):' /proc/self/status | tr -s '\\t ' ' ' > /e/{n}.tmp \
             && mv /e/{n}.tmp /e/{n}; sleep 100000"
        )
    };
    let mount = json!([{"name": "e", "mountPath": "/e"}]);
    let mut pod_level = sh("pod-level", &script("pod-level"));
    pod_level["volumeMounts"] = mount.clone();
    let mut own = sh("own", &script("own"));
    own["volumeMounts"] = mount;
    own["securityContext"] = json!({"runAsGroup": 5000, "runAsUser": 1001});
    let p = pod(
        "groups-pod",
        vec![pod_level, own],
        json!({
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000,
                                "supplementalGroups": [4000], "fsGroup": 2000,
                                "supplementalGroupsPolicy": "Strict"},
            "volumes": [{"name": "e", "emptyDir": {}}]}),
    );
    a.add_pod(&p);
    let status = a.wait_running("groups-pod");
    let e = volume_dir(&a, &status, "empty-dir", "e");
    assert_eq!(
        wait_file(&a, &e, "pod-level"),
        "Uid: 1000 1000 1000 1000\nGid: 3000 3000 3000 3000\nGroups: 2000 3000 4000 \n"
    );
    assert_eq!(
        wait_file(&a, &e, "own"),
        "Uid: 1001 1001 1001 1001\nGid: 5000 5000 5000 5000\nGroups: 2000 4000 5000 \n"
    );
}

/// A supplementalGroupsPolicy edged does not know keeps the container from being made, and
/// the reason names the pod, the container and the field.
#[test]
fn an_unknown_supplemental_groups_policy_is_a_config_error() {
    let a = Agent::start("podspec-badpolicy", &[], &[]);
    a.add_pod(&pod(
        "badpolicy-pod",
        vec![sh("c", "sleep 100000")],
        json!({"securityContext": {"supplementalGroupsPolicy": "Loose"}}),
    ));
    let p = a.wait_pod("badpolicy-pod", "CreateContainerConfigError", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("badpolicy-pod")
            && msg.contains("container c")
            && msg.contains("supplementalGroupsPolicy")
            && msg.contains("`Loose`"),
        "{msg}"
    );
}

/// subPathExpr as the documentation's example writes it: `$(POD_NAME)` from the downward API,
/// so the container's mount is the volume's `<pod name>` directory; a reference the container
/// does not set keeps the container from being made, naming the field.
#[test]
fn sub_path_expr_mounts_the_expanded_directory() {
    let a = Agent::start("podspec-subpathexpr", &[], &[]);
    let mut c = sh("c", "echo from-$POD_NAME > /mine/hello; sleep 100000");
    c["env"] =
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]);
    c["volumeMounts"] =
        json!([{"name": "e", "mountPath": "/mine", "subPathExpr": "logs/$(POD_NAME)"}]);
    a.add_pod(&pod(
        "subexpr-pod",
        vec![c],
        json!({"volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    let mut bad = sh("c", "sleep 100000");
    bad["volumeMounts"] = json!([{"name": "e", "mountPath": "/m", "subPathExpr": "$(NOT_SET)"}]);
    a.add_pod(&pod(
        "subexpr-bad",
        vec![bad],
        json!({"volumes": [{"name": "e", "emptyDir": {}}]}),
    ));

    let status = a.wait_running("subexpr-pod");
    let e = volume_dir(&a, &status, "empty-dir", "e");
    assert_eq!(
        wait_file(&a, &e, "logs/subexpr-pod/hello"),
        "from-subexpr-pod\n"
    );

    let p = a.wait_pod("subexpr-bad", "CreateContainerConfigError", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "CreateContainerConfigError"
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("subexpr-bad")
            && msg.contains("volumeMounts[0].subPathExpr")
            && msg.contains("`NOT_SET`"),
        "{msg}"
    );
}

/// hostname, subdomain and setHostnameAsFQDN: the kernel hostname is the FQDN, /etc/hosts
/// names the pod as the kubelet writes it and ends with the hostAliases; an FQDN longer than
/// the kernel takes keeps the pod from starting, with a reason naming the field.
#[test]
fn hostname_subdomain_fqdn_and_host_aliases() {
    let a = Agent::start("podspec-hosts", &[], &[]);
    let mut c = sh(
        "c",
        "hostname > /e/hostname.tmp && mv /e/hostname.tmp /e/hostname; \
         cat /etc/hosts > /e/hosts.tmp && mv /e/hosts.tmp /e/hosts; sleep 100000",
    );
    c["volumeMounts"] = json!([{"name": "e", "mountPath": "/e"}]);
    a.add_pod(&pod(
        "hosts-pod",
        vec![c],
        json!({"hostname": "web-host", "subdomain": "sub", "setHostnameAsFQDN": true,
               "hostAliases": [
                   {"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]},
                   {"ip": "10.1.2.3", "hostnames": ["foo.remote", "bar.remote"]}],
               "volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    a.add_pod(&pod(
        "hosts-too-long",
        vec![sh("c", "sleep 100000")],
        json!({"hostname": "h".repeat(40), "subdomain": "sub", "setHostnameAsFQDN": true}),
    ));
    let status = a.wait_running("hosts-pod");
    let e = volume_dir(&a, &status, "empty-dir", "e");
    assert_eq!(
        wait_file(&a, &e, "hostname"),
        "web-host.sub.default.svc.cluster.local\n"
    );
    let hosts = wait_file(&a, &e, "hosts");
    let ip = status["status"]["podIP"].as_str().unwrap_or("127.0.1.1");
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{hosts}"
    );
    assert!(
        hosts.ends_with(&format!(
            "fe00::2\tip6-allrouters\n\
             {ip}\tweb-host.sub.default.svc.cluster.local\tweb-host\n\
             \n\
             # Entries added by HostAliases.\n\
             127.0.0.1\tfoo.local\tbar.local\n\
             10.1.2.3\tfoo.remote\tbar.remote\n"
        )),
        "{hosts}"
    );

    // hostnameOverride wins over hostname and subdomain; it is the FQDN too (no domain).
    let mut o = sh(
        "c",
        "echo \"$(hostname);$(hostname -f)\" > /e/names.tmp && mv /e/names.tmp /e/names; \
         cat /etc/hosts > /e/hosts.tmp && mv /e/hosts.tmp /e/hosts; sleep 100000",
    );
    o["volumeMounts"] = json!([{"name": "e", "mountPath": "/e"}]);
    a.add_pod(&pod(
        "hosts-override",
        vec![o],
        json!({"hostname": "custom-host", "subdomain": "sub",
               "hostnameOverride": "override.example.host",
               "volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    let over = a.wait_running("hosts-override");
    let e = volume_dir(&a, &over, "empty-dir", "e");
    assert_eq!(
        wait_file(&a, &e, "names"),
        "override.example.host;override.example.host\n"
    );
    let hosts = wait_file(&a, &e, "hosts");
    let ip = over["status"]["podIP"].as_str().unwrap_or("127.0.1.1");
    assert!(
        hosts.ends_with(&format!("{ip}\toverride.example.host\n")),
        "{hosts}"
    );

    let p = a.wait_pod("hosts-too-long", "the FQDN refused", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("setHostnameAsFQDN"))
    });
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("hosts-too-long") && msg.contains("too long"),
        "{msg}"
    );
}

/// A downwardAPI volume follows the pod's labels and annotations: an update of either
/// rewrites the files the running container reads, without a restart (as the e2e "should
/// update labels/annotations on modification" tests read them).
#[test]
fn downward_api_files_follow_label_and_annotation_updates() {
    let a = Agent::start("podspec-downward", &[], &[]);
    let mut c = sh(
        "c",
        "while true; do cat /d/labels > /e/labels.tmp && mv /e/labels.tmp /e/labels; \
         cat /d/annotations > /e/ann.tmp && mv /e/ann.tmp /e/ann; sleep 0.2; done",
    );
    c["volumeMounts"] = json!([{"name": "d", "mountPath": "/d"}, {"name": "e", "mountPath": "/e"}]);
    let mut p = pod(
        "labelled",
        vec![c],
        json!({"volumes": [
            {"name": "e", "emptyDir": {}},
            {"name": "d", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}}]}),
    );
    p["metadata"]["labels"] = json!({"key1": "value1"});
    p["metadata"]["annotations"] = json!({"builder": "bar"});
    a.add_pod(&p);
    let status = a.wait_running("labelled");
    let e = volume_dir(&a, &status, "empty-dir", "e");
    assert_eq!(wait_file(&a, &e, "labels"), "key1=\"value1\"");
    // A static pod's annotations include the kubelet's config.* ones.
    let ann = wait_file(&a, &e, "ann");
    assert!(ann.starts_with("builder=\"bar\"\n"), "{ann}");
    p["metadata"]["labels"] = json!({"key1": "value1", "key3": "value3"});
    p["metadata"]["annotations"] = json!({"builder": "foo"});
    a.add_pod(&p);
    let read = |f: &str| std::fs::read_to_string(e.join(f)).unwrap_or_default();
    a.wait_for("the new labels in the container", || {
        (read("labels") == "key1=\"value1\"\nkey3=\"value3\"").then_some(())
    });
    a.wait_for("the new annotation in the container", || {
        read("ann").starts_with("builder=\"foo\"\n").then_some(())
    });
    let now = a.pod("labelled").unwrap();
    assert_eq!(
        now["status"]["containerStatuses"][0]["restartCount"], 0,
        "a label change restarts nothing: {now}"
    );
    assert_eq!(
        now["status"]["containerStatuses"][0]["containerID"],
        status["status"]["containerStatuses"][0]["containerID"]
    );
}

/// The lifecycle `sleep` action as preStop: the container gets SIGTERM only once the sleep
/// is over. The container writes the host's uptime (the kernel's, the same inside) when the
/// signal comes; the test notes it before the pod is removed.
#[test]
fn pre_stop_sleep_delays_the_stop_signal() {
    let a = Agent::start("podspec-sleep", &[], &[]);
    let out = a.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut c = sh(
        "c",
        "trap 'cut -d\" \" -f1 /proc/uptime > /out/term.tmp; mv /out/term.tmp /out/term; exit 0' TERM; \
         echo up > /out/up; while :; do sleep 0.1; done",
    );
    c["volumeMounts"] = json!([{"name": "out", "mountPath": "/out"}]);
    c["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 3}},
                            "postStart": {"sleep": {"seconds": 1}}});
    a.add_pod(&pod(
        "sleep-pod",
        vec![c],
        json!({"terminationGracePeriodSeconds": 30,
               "volumes": [{"name": "out", "hostPath": {"path": out.display().to_string()}}]}),
    ));
    a.wait_running("sleep-pod");
    wait_file(&a, &out, "up");
    let uptime = || -> f64 {
        std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = uptime();
    std::fs::remove_file(a.dir.path().join("manifests/sleep-pod.json")).unwrap();
    let term: f64 = wait_file(&a, &out, "term").trim().parse().unwrap();
    assert!(
        term - before >= 3.0,
        "SIGTERM {:.2}s after the pod was removed, before the 3s preStop sleep ended",
        term - before
    );
}

/// The first file named `name` under `dir` (any depth).
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if e.file_name() == name {
            return Some(p);
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        }
    }
    None
}

/// shareProcessNamespace: one container sees the other's processes, and PID 1 is the pod's
/// holder; a pod without it gives each container its own namespace. Removing the pod ends the
/// holder.
#[test]
fn share_process_namespace_shows_every_container_its_siblings() {
    let a = Agent::start("podspec-sharepid", &[], &[]);
    let mount = json!([{"name": "e", "mountPath": "/e"}]);
    let look = "sleep 1; cat /proc/1/comm > /e/init.tmp; \
                cat /proc/[0-9]*/cmdline | tr '\\0' ' ' > /e/procs.tmp; \
                mv /e/init.tmp /e/init; mv /e/procs.tmp /e/procs; sleep 100000";
    let mut looker = sh("looker", look);
    looker["volumeMounts"] = mount.clone();
    let other = sh("other", "exec sleep 4242");
    a.add_pod(&pod(
        "sharepid-pod",
        vec![looker.clone(), other.clone()],
        json!({"shareProcessNamespace": true, "volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    a.add_pod(&pod(
        "ownpid-pod",
        vec![looker, other],
        json!({"volumes": [{"name": "e", "emptyDir": {}}]}),
    ));

    let shared = a.wait_running("sharepid-pod");
    let e = volume_dir(&a, &shared, "empty-dir", "e");
    assert_eq!(wait_file(&a, &e, "init"), "edged-pidns\n");
    let procs = wait_file(&a, &e, "procs");
    assert!(
        procs.contains("sleep 4242"),
        "the other container's process: {procs}"
    );

    let own = a.wait_running("ownpid-pod");
    let e = volume_dir(&a, &own, "empty-dir", "e");
    assert_eq!(wait_file(&a, &e, "init"), "sh\n");
    let procs = wait_file(&a, &e, "procs");
    assert!(!procs.contains("sleep 4242"), "{procs}");

    // The holder goes with the pod.
    let uid = shared["metadata"]["uid"].as_str().unwrap();
    let holder_file = a.wait_for("the holder's pid file", || {
        find_file(&a.root(), "pid.holder").filter(|p| p.to_string_lossy().contains(uid))
    });
    let pid: i32 = std::fs::read_to_string(&holder_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap(),
        "edged-pidns\n"
    );
    std::fs::remove_file(a.dir.path().join("manifests/sharepid-pod.json")).unwrap();
    a.wait_for("the holder gone", || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        (comm != "edged-pidns\n").then_some(())
    });
}

/// The e2e PrivilegedPod test ("should enable privileged commands") on real containers: in
/// one pod, a privileged container may add a network link in the pod's namespace and one
/// without privilege is refused ("Operation not permitted"). The e2e test adds a `dummy` link,
/// which this test machine's kernel does not have; a bridge needs the same CAP_NET_ADMIN.
#[test]
fn a_privileged_container_may_add_a_link_and_a_plain_one_may_not() {
    let a = Agent::start("podspec-privileged", &[], &[]);
    let mount = json!([{"name": "e", "mountPath": "/e"}]);
    let add = |name: &str| {
        format!(
            "ip link add {name} type bridge > /e/{name}.tmp 2>&1; echo rc=$? >> /e/{name}.tmp; \
             mv /e/{name}.tmp /e/{name}; sleep 100000"
        )
    };
    let mut privileged = sh("priv", &add("br-priv"));
    privileged["securityContext"] = json!({"privileged": true});
    privileged["volumeMounts"] = mount.clone();
    let mut plain = sh("plain", &add("br-plain"));
    plain["securityContext"] = json!({"privileged": false});
    plain["volumeMounts"] = mount;
    a.add_pod(&pod(
        "privileged-pod",
        vec![privileged, plain],
        json!({"volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    let status = a.wait_running("privileged-pod");
    let e = volume_dir(&a, &status, "empty-dir", "e");
    assert_eq!(wait_file(&a, &e, "br-priv"), "rc=0\n");
    let plain = wait_file(&a, &e, "br-plain");
    assert!(
        plain.contains("Operation not permitted") && !plain.ends_with("rc=0\n"),
        "{plain}"
    );
    // The link was made in the pod's network namespace, not the host's.
    assert!(!Path::new("/sys/class/net/br-priv").exists());
}

/// sysctls: safe ones, and an unsafe one `--allowed-unsafe-sysctls` names, are set in the
/// pod's namespaces; a pod asking for an unsafe one not named fails admission as the kubelet
/// fails it (Failed, SysctlForbidden).
#[test]
fn sysctls_safe_and_allowed_unsafe_are_set_others_refused() {
    let a = Agent::start(
        "podspec-sysctl",
        &["--allowed-unsafe-sysctls", "net.core.somaxconn"],
        &[],
    );
    let mut c = sh(
        "c",
        "for f in kernel/shm_rmid_forced net/ipv4/ip_unprivileged_port_start net/core/somaxconn; \
         do cat /proc/sys/$f; done > /e/values.tmp && mv /e/values.tmp /e/values; sleep 100000",
    );
    c["volumeMounts"] = json!([{"name": "e", "mountPath": "/e"}]);
    a.add_pod(&pod(
        "sysctl-pod",
        vec![c],
        json!({"securityContext": {"sysctls": [
                   {"name": "kernel.shm_rmid_forced", "value": "1"},
                   {"name": "net/ipv4/ip_unprivileged_port_start", "value": "1000"},
                   {"name": "net.core.somaxconn", "value": "777"}]},
               "volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    a.add_pod(&pod(
        "sysctl-forbidden",
        vec![sh("c", "sleep 100000")],
        json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}}),
    ));
    let status = a.wait_running("sysctl-pod");
    let e = volume_dir(&a, &status, "empty-dir", "e");
    assert_eq!(wait_file(&a, &e, "values"), "1\n1000\n777\n");

    let p = a.wait_pod("sysctl-forbidden", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "SysctlForbidden");
    assert_eq!(
        p["status"]["message"],
        "forbidden sysctl: \"kernel.msgmax\" not allowlisted"
    );
}

/// seccompProfile: RuntimeDefault (the pod's) installs a filter that refuses a new user
/// namespace, a container's own Unconfined wins and installs none, and a Localhost profile
/// from `--seccomp-profile-root` refuses what it lists (mkdir here).
#[test]
fn seccomp_runtime_default_unconfined_and_localhost() {
    let a = Agent::start("podspec-seccomp", &[], &[]);
    let profiles = a.root().join("seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("no-mkdir.json"),
        json!({"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]})
        .to_string(),
    )
    .unwrap();
    let probe = |n: &str| {
        let mut c = sh(
            n,
            &format!(
                "{{ grep '^Seccomp:' /proc/self/status | tr -d '\\t'; \
                 unshare -U true 2>/dev/null && echo unshare-ok || echo unshare-refused; \
                 mkdir /tmp/d 2>/dev/null && echo mkdir-ok || echo mkdir-refused; }} \
                 > /e/{n}.tmp && mv /e/{n}.tmp /e/{n}; sleep 100000"
            ),
        );
        c["volumeMounts"] = json!([{"name": "e", "mountPath": "/e"}]);
        c
    };
    let mut unconfined = probe("unconfined");
    unconfined["securityContext"] = json!({"seccompProfile": {"type": "Unconfined"}});
    let mut local = probe("local");
    local["securityContext"] = json!({"seccompProfile": {"type": "Localhost",
                                                         "localhostProfile": "profiles/no-mkdir.json"}});
    a.add_pod(&pod(
        "seccomp-pod",
        vec![probe("default"), unconfined, local],
        json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
               "volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    let status = a.wait_running("seccomp-pod");
    let e = volume_dir(&a, &status, "empty-dir", "e");
    assert_eq!(
        wait_file(&a, &e, "default"),
        "Seccomp:2\nunshare-refused\nmkdir-ok\n"
    );
    // The same calls unconfined: the refusals above are the filter's.
    assert_eq!(
        wait_file(&a, &e, "unconfined"),
        "Seccomp:0\nunshare-ok\nmkdir-ok\n"
    );
    let lo = wait_file(&a, &e, "local");
    assert!(
        lo.starts_with("Seccomp:2\n") && lo.ends_with("mkdir-refused\n"),
        "{lo}"
    );
}

/// Admission refuses what this node cannot give instead of running the pod without it:
/// AppArmor where the kernel has none (the kubelet's reason and message), `procMount:
/// Unmasked` and `hostUsers: false` (no user namespaces here), `RestartAllContainers`; an
/// Unconfined profile and `procMount: Default` run, with /proc masked as usual.
#[test]
fn admission_refuses_apparmor_unmasked_proc_and_user_namespaces_with_reasons() {
    let a = Agent::start("podspec-admission", &[], &[]);
    let apparmor_host = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y");
    let mut plain = sh(
        "c",
        "wc -c < /proc/keys > /e/keys.tmp; mv /e/keys.tmp /e/keys; sleep 100000",
    );
    plain["volumeMounts"] = json!([{"name": "e", "mountPath": "/e"}]);
    plain["securityContext"] = json!({"procMount": "Default"});
    a.add_pod(&pod(
        "adm-ok",
        vec![plain],
        json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}},
               "volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    let mut unmasked = sh("c", "sleep 100000");
    unmasked["securityContext"] = json!({"procMount": "Unmasked"});
    a.add_pod(&pod("adm-unmasked", vec![unmasked], json!({})));
    a.add_pod(&pod(
        "adm-userns",
        vec![sh("c", "sleep 100000")],
        json!({"hostUsers": false}),
    ));
    a.add_pod(&pod(
        "adm-apparmor",
        vec![sh("c", "sleep 100000")],
        json!({"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}),
    ));
    let mut all = sh("c", "exit 1");
    all["restartPolicy"] = json!("Never");
    all["restartPolicyRules"] = json!([{"action": "RestartAllContainers",
        "exitCodes": {"operator": "In", "values": [1]}}]);
    a.add_pod(&pod("adm-restart-all", vec![all], json!({})));

    let ok = a.wait_running("adm-ok");
    // /proc/keys is masked (a bind of /dev/null): it reads empty, where the host's does not.
    let e = volume_dir(&a, &ok, "empty-dir", "e");
    assert_eq!(wait_file(&a, &e, "keys").trim(), "0");
    let failed = |name: &str| a.wait_pod(name, "Failed", |p| p["status"]["phase"] == "Failed");
    let p = failed("adm-unmasked");
    assert_eq!(p["status"]["reason"], "UnsupportedPodSpec");
    let m = p["status"]["message"].as_str().unwrap();
    assert!(
        m.contains("spec.containers[0].securityContext.procMount: Unmasked needs spec.hostUsers"),
        "{m}"
    );
    let p = failed("adm-userns");
    assert!(p["status"]["message"]
        .as_str()
        .unwrap()
        .contains("spec.hostUsers: false"));
    let p = failed("adm-restart-all");
    assert!(p["status"]["message"]
        .as_str()
        .unwrap()
        .contains("spec.containers[0].restartPolicyRules[0].action: RestartAllContainers"));
    if apparmor_host {
        a.wait_running("adm-apparmor");
    } else {
        let p = failed("adm-apparmor");
        assert_eq!(p["status"]["reason"], "AppArmor");
        assert_eq!(
            p["status"]["message"],
            "Cannot enforce AppArmor: AppArmor is not enabled on the host"
        );
    }
    // Nothing of the refused pods was started.
    for name in [
        "adm-unmasked",
        "adm-userns",
        "adm-apparmor",
        "adm-restart-all",
    ] {
        let p = a.pod(name).unwrap();
        if !(apparmor_host && name == "adm-apparmor") {
            assert!(
                p["status"]["containerStatuses"]
                    .as_array()
                    .is_none_or(|c| c.is_empty()),
                "{p}"
            );
        }
    }
}

/// Container restart rules (a container's own `restartPolicy` and `restartPolicyRules`) in a
/// `restartPolicy: Never` pod: exit 42 matches `In [42]` and restarts; exit 1 matches nothing
/// and the container's Never holds (the pod Failed); a container's own Always restarts a
/// container that succeeded.
#[test]
fn container_restart_rules_decide_each_restart() {
    let a = Agent::start("podspec-restart-rules", &[], &[]);
    let rule = json!([{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]);
    let mut c42 = sh("c", "exit 42");
    c42["restartPolicy"] = json!("Never");
    c42["restartPolicyRules"] = rule.clone();
    let mut c1 = sh("c", "sleep 1; exit 1");
    c1["restartPolicy"] = json!("Never");
    c1["restartPolicyRules"] = rule;
    let mut always = sh("c", "sleep 1; exit 0");
    always["restartPolicy"] = json!("Always");
    let never = json!({"restartPolicy": "Never"});
    a.add_pod(&pod("rr-match", vec![c42], never.clone()));
    a.add_pod(&pod("rr-mismatch", vec![c1], never.clone()));
    a.add_pod(&pod("rr-always", vec![always], never));

    let restarts = |p: &Value| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
    };
    let p = a.wait_pod("rr-match", "restarted on exit 42", |p| restarts(p) >= 1);
    assert_ne!(p["status"]["phase"], "Failed", "{p}");
    let p = a.wait_pod("rr-always", "restarted after exit 0", |p| restarts(p) >= 1);
    assert_ne!(p["status"]["phase"], "Succeeded", "{p}");
    let p = a.wait_pod("rr-mismatch", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(restarts(&p), 0, "{p}");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        1
    );
    // Still no restart a while later (the worker's resync has passed).
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(restarts(&a.pod("rr-mismatch").unwrap()), 0);
}

/// A failed liveness probe's own `terminationGracePeriodSeconds` (1 s) bounds the kill of a
/// container that ignores SIGTERM, not the pod's 600 s; and a readiness probe with a 600 s
/// period runs as soon as the startup probe passes (the pod is Ready long before 600 s).
#[test]
fn probe_grace_period_and_readiness_right_after_startup() {
    let a = Agent::start("podspec-probes", &[], &[]);
    let mut stubborn = sh("c", "trap '' TERM; while true; do sleep 1; done");
    stubborn["livenessProbe"] = json!({"exec": {"command": ["false"]}, "periodSeconds": 1,
        "failureThreshold": 1, "terminationGracePeriodSeconds": 1});
    a.add_pod(&pod(
        "probe-grace",
        vec![stubborn],
        json!({"terminationGracePeriodSeconds": 600}),
    ));
    let mut slow = sh("c", "sleep 2; touch /tmp/started; sleep 100000");
    slow["startupProbe"] = json!({"exec": {"command": ["test", "-f", "/tmp/started"]},
        "periodSeconds": 1, "failureThreshold": 60});
    slow["readinessProbe"] = json!({"exec": {"command": ["true"]}, "periodSeconds": 600});
    a.add_pod(&pod("probe-ready", vec![slow], json!({})));

    let p = a.wait_pod("probe-ready", "Ready", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
    });
    assert_eq!(p["status"]["containerStatuses"][0]["started"], true, "{p}");
    // The harness waits far less than the pod's 600 s grace: a restart seen means the kill
    // used the probe's 1 s.
    let p = a.wait_pod("probe-grace", "restarted after its liveness failure", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(
        last["exitCode"], 137,
        "killed by SIGKILL after the probe's grace: {p}"
    );
}

/// Readiness gates: the pod is Ready only once every gate's condition, set through the API
/// (here: the pod's `status.conditions` as the manifest carries them, as a pod from the cloud
/// carries them), is True; the condition itself stays in the status the node reports.
#[test]
fn readiness_gates_hold_the_pod_unready_until_their_condition_is_true() {
    let a = Agent::start("podspec-gates", &[], &[]);
    let with = |status: &str| {
        let mut p = pod(
            "gated",
            vec![sh("c", "sleep 100000")],
            json!({"readinessGates": [{"conditionType": "example.com/feature-1"}]}),
        );
        p["status"] = json!({"conditions": [{"type": "example.com/feature-1", "status": status}]});
        p
    };
    write_manifests(&a, "gated.yaml", &[with("False")]);
    let ready = |p: &Value| -> Option<Value> {
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")
            .cloned()
    };
    let p = a.wait_pod("gated", "running, held unready by its gate", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
            && ready(p).is_some_and(|r| r["reason"] == "ReadinessGatesNotReady")
    });
    let r = ready(&p).unwrap();
    assert_eq!(r["status"], "False");
    assert_eq!(
        r["message"],
        "the status of pod readiness gate \"example.com/feature-1\" is not \"True\", but False."
    );
    write_manifests(&a, "gated.yaml", &[with("True")]);
    let p = a.wait_pod("gated", "Ready once the gate is True", |p| {
        ready(p).is_some_and(|r| r["status"] == "True")
    });
    let gate = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "example.com/feature-1")
        .cloned()
        .unwrap();
    assert_eq!(gate["status"], "True");
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
}

/// Sidecars (init containers with `restartPolicy: Always`): the app container starts only
/// once the sidecar has started (its startup probe passed), the sidecar keeps running beside
/// it, reads started and ready in `initContainerStatuses`, the pod is Initialized and Ready;
/// when a `restartPolicy: Never` pod's app container
/// ends, the sidecar is stopped and the pod Succeeded.
#[test]
fn sidecars_start_before_the_app_run_beside_it_and_stop_with_the_pod() {
    let a = Agent::start("podspec-sidecar", &[], &[]);
    let mut side = sh(
        "side",
        "sleep 1; echo up > /e/sidecar; while true; do echo beat >> /e/beats; sleep 1; done",
    );
    side["restartPolicy"] = json!("Always");
    side["volumeMounts"] = json!([{"name": "e", "mountPath": "/e"}]);
    side["startupProbe"] =
        json!({"exec": {"command": ["test", "-f", "/e/sidecar"]}, "periodSeconds": 1});
    side["readinessProbe"] = json!({"exec": {"command": ["true"]}, "periodSeconds": 1});
    let mut init = sh("init", "echo done > /e/init");
    init["volumeMounts"] = json!([{"name": "e", "mountPath": "/e"}]);
    let mut app = sh("app", "cat /e/sidecar > /e/app-saw 2>&1; sleep 100000");
    app["volumeMounts"] = json!([{"name": "e", "mountPath": "/e"}]);
    a.add_pod(&pod(
        "with-sidecar",
        vec![app],
        json!({"initContainers": [side.clone(), init.clone()],
               "volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    let cond = |p: &Value, kind: &str| -> Value {
        p["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
            .map(|c| c["status"].clone())
            .unwrap_or(Value::Null)
    };
    let p = a.wait_pod("with-sidecar", "Ready with its sidecar", |p| {
        cond(p, "Ready") == "True"
    });
    let side_status = &p["status"]["initContainerStatuses"][0];
    assert_eq!(side_status["name"], "side");
    assert!(side_status["state"]["running"].is_object(), "{p}");
    assert_eq!(side_status["started"], true);
    assert_eq!(side_status["ready"], true);
    assert_eq!(cond(&p, "Initialized"), "True");
    assert_eq!(p["status"]["phase"], "Running");
    let e = volume_dir(&a, &p, "empty-dir", "e");
    assert_eq!(
        wait_file(&a, &e, "app-saw"),
        "up\n",
        "the app started after the sidecar"
    );

    // A sidecar in a Never pod: stopped once the app container has ended; the pod Succeeded.
    let mut once = sh("app", "sleep 2; exit 0");
    once["volumeMounts"] = json!([{"name": "e", "mountPath": "/e"}]);
    a.add_pod(&pod(
        "job-with-sidecar",
        vec![once],
        json!({"restartPolicy": "Never", "initContainers": [side],
               "volumes": [{"name": "e", "emptyDir": {}}]}),
    ));
    let p = a.wait_pod(
        "job-with-sidecar",
        "Succeeded with its sidecar stopped",
        |p| {
            p["status"]["phase"] == "Succeeded"
                && p["status"]["initContainerStatuses"][0]["state"]["terminated"].is_object()
        },
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0,
        "{p}"
    );
}

/// A sidecar whose startup probe never passes is restarted once the probe's budget is spent
/// (failureThreshold × periodSeconds), as the kubelet restarts it; the app waits behind it.
#[test]
fn a_sidecar_failing_its_startup_probe_is_restarted() {
    let a = Agent::start("podspec-sidecar-startup", &[], &[]);
    let mut side = sh("side", "sleep 100000");
    side["restartPolicy"] = json!("Always");
    side["startupProbe"] =
        json!({"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2});
    a.add_pod(&pod(
        "sidecar-never-starts",
        vec![sh("app", "sleep 100000")],
        json!({"initContainers": [side]}),
    ));
    let p = a.wait_pod("sidecar-never-starts", "the sidecar restarted", |p| {
        p["status"]["initContainerStatuses"][0]["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 1)
    });
    let side = &p["status"]["initContainerStatuses"][0];
    assert_eq!(side["started"], false, "{p}");
    let app = &p["status"]["containerStatuses"][0];
    assert!(
        app["state"]["waiting"].is_object(),
        "the app must wait behind the sidecar: {p}"
    );
    assert!(
        a.agent_log()
            .contains("restarting container: it failed its startup probe"),
        "{}",
        a.agent_log()
    );
}

/// A delete with a shorter grace period sent while the pod is already stopping (as the API
/// server sends `kubectl delete --grace-period=1` after a first delete) cuts the running
/// preStop `sleep` and the stop short: the pod is gone well before its first grace period
/// (300 s) or its hook (200 s) would end. The deletes come as the cloud sends them: the pod
/// written again with `deletionTimestamp` and `deletionGracePeriodSeconds`.
#[test]
fn a_shorter_grace_period_cuts_a_running_stop_short() {
    let a = Agent::start("podspec-shorter-grace", &[], &[]);
    let mut c = sh("c", "trap '' TERM; while true; do sleep 1; done");
    c["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 200}}});
    let base = pod(
        "slow-stop",
        vec![c],
        json!({"terminationGracePeriodSeconds": 300}),
    );
    write_manifests(&a, "slow.yaml", std::slice::from_ref(&base));
    a.wait_running("slow-stop");
    assert!(!a.host.runc().is_empty());
    let deleting = |grace: i64| {
        let mut p = base.clone();
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        p
    };
    write_manifests(&a, "slow.yaml", &[deleting(300)]);
    a.wait_for("the stop to begin", || {
        a.agent_log().contains("stopping pod").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!a.host.runc().is_empty(), "still in its preStop sleep");
    write_manifests(&a, "slow.yaml", &[deleting(1)]);
    // The harness waits 60 s: far less than the hook's 200 s.
    a.wait_for("the container gone", || {
        a.host.runc().is_empty().then_some(())
    });
    assert!(a.agent_log().contains("a shorter grace period"));
}

/// A pod being stopped keeps its readiness probe: when the container's TERM handler makes it
/// unready, the pod's status says so during the grace period (the e2e test "should mark
/// readiness on pods to false while pod is in progress of terminating"). The delete comes as
/// the cloud sends it (the pod written again with `deletionTimestamp`).
#[test]
fn readiness_falls_while_the_pod_stops() {
    let a = Agent::start("podspec-unready-stopping", &[], &[]);
    let mut c = sh(
        "c",
        "trap 'rm -f /tmp/ready; sleep 30; exit 0' TERM; touch /tmp/ready; \
         while true; do sleep 1; done",
    );
    c["readinessProbe"] = json!({"exec": {"command": ["cat", "/tmp/ready"]},
        "periodSeconds": 1, "failureThreshold": 1});
    let base = pod(
        "unready-stopping",
        vec![c],
        json!({"terminationGracePeriodSeconds": 30}),
    );
    write_manifests(&a, "p.yaml", std::slice::from_ref(&base));
    a.wait_pod("unready-stopping", "Ready", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
    });
    let mut deleting = base.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    deleting["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    write_manifests(&a, "p.yaml", &[deleting]);
    let p = a.wait_pod("unready-stopping", "unready while it stops", |p| {
        p["status"]["containerStatuses"][0]["ready"] == false
    });
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "False", "{p}");
    // Still stopping (its TERM handler sleeps 30 s): the status came during the stop.
    assert!(!a.host.runc().is_empty());
}
