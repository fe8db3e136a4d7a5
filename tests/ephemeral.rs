//! Ephemeral containers (`kubectl debug`, issue 23) on real shim + runc containers: a pod
//! update that adds `spec.ephemeralContainers` (here the manifest written again, as the cloud's
//! update would come) starts each new one once in the pod's namespaces, reports it in
//! `ephemeralContainerStatuses`, never restarts it, restarts nothing else, and its log, exec
//! and attach work by its name. Run as root: `cargo test --test ephemeral`.

#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;

#[allow(dead_code)]
#[path = "common/spdy.rs"]
mod spdy;

use agent::{pod, sh, Agent};
use serde_json::{json, Value};
use spdy::Client;

const POD: &str = "dbg-target";

/// The status of ephemeral container `name` of `p`.
fn ephemeral<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["ephemeralContainerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The pod with the given ephemeral containers.
fn target_pod(ephemeral: Vec<Value>) -> Value {
    named_pod(POD, ephemeral)
}

/// [`target_pod`] named `name`. Tests running side by side need pods of their own names: a
/// manifest pod's uid comes from its name, and an agent's clean-up goes by uid.
fn named_pod(name: &str, ephemeral: Vec<Value>) -> Value {
    // httpd on the pod's loopback only; it is PID 1 of its own PID namespace.
    let app = sh(
        "app",
        "mkdir -p /tmp/www && echo served-by-app > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www",
    );
    let mut p = pod(name, vec![app], json!({}));
    if !ephemeral.is_empty() {
        p["spec"]["ephemeralContainers"] = Value::Array(ephemeral);
    }
    p
}

/// The log of container `name` of the pod, through the kubelet API.
fn log(a: &Agent, name: &str) -> String {
    let (status, _, body) = a.get(&format!("/containerLogs/default/{POD}/{name}"));
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 200, "{text}");
    text
}

#[test]
fn ephemeral_containers_join_a_running_pod_once() {
    let a = Agent::start("ephemeral", &[], &[target_pod(vec![])]);
    let before = a.wait_running(POD);
    let app_id = before["status"]["containerStatuses"][0]["containerID"].clone();
    assert!(app_id.is_string(), "{before}");
    // Serve the page before a debugger looks for it.
    a.wait_for("the app to serve", || {
        let o = a
            .edged(&["exec", POD, "--", "wget", "-qO-", "http://127.0.0.1:8080/"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&o.stdout)
            .contains("served-by-app")
            .then_some(())
    });

    // "probe": the pod's shared namespaces only; it runs until told to stop (by an exec in
    // it), then fails with 3. "peek": in the app's PID namespace, talks over attach.
    let probe = sh(
        "probe",
        "echo host=$(hostname); wget -qO- http://127.0.0.1:8080/; ps -o pid,args; \
         echo probe-ready; while [ ! -e /tmp/stop ]; do sleep 0.2; done; exit 3",
    );
    let mut peek = sh(
        "peek",
        "ps -o pid,args; echo peek-ready; while read l; do echo \"got $l\"; done; echo bye",
    );
    peek["targetContainerName"] = json!("app");
    peek["stdin"] = json!(true);
    peek["stdinOnce"] = json!(true);
    a.add_pod(&target_pod(vec![probe.clone(), peek.clone()]));

    let p = a.wait_pod(POD, "ephemeral containers running", |p| {
        ["probe", "peek"]
            .iter()
            .all(|n| ephemeral(p, n)["state"]["running"].is_object())
    });
    for name in ["probe", "peek"] {
        let s = ephemeral(&p, name);
        assert_eq!(s["ready"], false, "{s}");
        assert_eq!(s["restartCount"], 0, "{s}");
        assert!(
            s["containerID"].as_str().is_some_and(|id| !id.is_empty()),
            "{s}"
        );
        assert!(
            s["imageID"].as_str().is_some_and(|id| !id.is_empty()),
            "{s}"
        );
        assert!(
            s["image"].as_str().is_some_and(|i| i.contains("busybox")),
            "{s}"
        );
    }
    // The regular container went on: not restarted, the same instance; the pod still Ready.
    let app = &p["status"]["containerStatuses"][0];
    assert_eq!(app["containerID"], app_id, "{p}");
    assert_eq!(app["restartCount"], 0, "{p}");
    assert!(app["state"]["running"].is_object(), "{p}");
    assert_eq!(
        p["status"]["containerStatuses"].as_array().unwrap().len(),
        1
    );

    // The pod's UTS and network namespaces: its hostname, the app's loopback port. Its own
    // PID namespace (the pod shares none): the app's httpd is not in it.
    let probe_log = a.wait_for("probe's output", || {
        Some(log(&a, "probe")).filter(|l| l.contains("probe-ready"))
    });
    assert!(probe_log.contains(&format!("host={POD}\n")), "{probe_log}");
    assert!(probe_log.contains("served-by-app"), "{probe_log}");
    assert!(!probe_log.contains("httpd -f"), "{probe_log}");
    // targetContainerName: the app's processes, httpd its PID 1.
    let peek_log = a.wait_for("peek's output", || {
        Some(log(&a, "peek")).filter(|l| l.contains("peek-ready"))
    });
    let first = peek_log
        .lines()
        .find(|l| l.contains("httpd -f -p 127.0.0.1:8080"))
        .unwrap_or_else(|| panic!("peek does not see the app's httpd: {peek_log}"));
    assert_eq!(first.split_whitespace().next(), Some("1"), "{peek_log}");

    // Attach (kubectl debug -it): lines in, answers out; the end of its stdin ends it.
    let v4 = &["v4.channel.k8s.io"][..];
    let mut c = Client::connect(
        &a.api(),
        &format!("/attach/default/{POD}/peek?input=1&output=1&error=1"),
        v4,
    )
    .expect("attach upgraded");
    let _err = c.open(&[("streamtype", "error")]);
    let stdin = c.open(&[("streamtype", "stdin")]);
    let stdout = c.open(&[("streamtype", "stdout")]);
    let _stderr = c.open(&[("streamtype", "stderr")]);
    assert!(c.wait_reply(stdin), "stdin stream replied");
    c.write(stdin, b"hello\n");
    assert_eq!(c.read_at_least(stdout, 10), b"got hello\n");
    c.close(stdin);
    let p = a.wait_pod(POD, "peek ended after its stdin closed", |p| {
        ephemeral(p, "peek")["state"]["terminated"]["exitCode"] == 0
    });
    assert_eq!(ephemeral(&p, "peek")["restartCount"], 0);

    // Exec in an ephemeral container by its name; it then exits 3, and stays exited whatever
    // the pod's restartPolicy (Always here).
    let o = a
        .edged(&["exec", "-c", "probe", POD, "--", "touch", "/tmp/stop"])
        .output()
        .expect("edged exec");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = a.wait_pod(POD, "probe terminated with 3", |p| {
        ephemeral(p, "probe")["state"]["terminated"]["exitCode"] == 3
    });
    let probe_id = ephemeral(&p, "probe")["containerID"].clone();
    let t = &ephemeral(&p, "probe")["state"]["terminated"];
    assert_eq!(t["reason"], "Error", "{t}");
    assert_eq!(t["containerID"], probe_id, "{t}");

    // Another update adds a third one: it starts, the ended two are not started again, the
    // app is still the same instance. Its log is read by name.
    let later = sh("later", "echo later-ran; exec sleep 100000");
    a.add_pod(&target_pod(vec![probe, peek, later]));
    let p = a.wait_pod(POD, "later running", |p| {
        ephemeral(p, "later")["state"]["running"].is_object()
    });
    let probe_now = ephemeral(&p, "probe");
    assert_eq!(probe_now["containerID"], probe_id, "{p}");
    assert_eq!(probe_now["state"]["terminated"]["exitCode"], 3, "{p}");
    assert_eq!(probe_now["restartCount"], 0, "{p}");
    assert!(
        ephemeral(&p, "peek")["state"]["terminated"].is_object(),
        "{p}"
    );
    let app = &p["status"]["containerStatuses"][0];
    assert_eq!(
        (&app["containerID"], &app["restartCount"]),
        (&app_id, &json!(0))
    );
    // One instance each: nothing made again behind the status.
    let bundles = a.host.bundle_ids().len();
    assert_eq!(bundles, 4, "app, probe, peek, later");
    a.wait_for("later's log", || {
        Some(log(&a, "later")).filter(|l| l == "later-ran\n")
    });

    // Deleting the pod stops the ephemeral ones too.
    std::fs::remove_file(a.dir.path().join(format!("manifests/{POD}.json"))).unwrap();
    a.wait_for("the pod and every container process gone", || {
        (a.pod(POD).is_none()
            && a.host.container_pids().is_empty()
            && a.host.bundle_ids().is_empty())
        .then_some(())
    });
}

#[test]
fn an_ephemeral_container_with_a_forbidden_field_is_refused() {
    const NAME: &str = "dbg-refused";
    let a = Agent::start("ephemeral-refused", &[], &[named_pod(NAME, vec![])]);
    let before = a.wait_running(NAME);
    let app_id = before["status"]["containerStatuses"][0]["containerID"].clone();
    let mut bad = sh("bad", "sleep 1000");
    bad["ports"] = json!([{"containerPort": 80}]);
    a.add_pod(&named_pod(NAME, vec![bad]));
    a.wait_for("the update refused, naming the field", || {
        let log = a.agent_log();
        (log.contains("spec.ephemeralContainers[0].ports")
            && log.contains("cannot be set for an Ephemeral Container"))
        .then_some(())
    });
    // The pod runs on as it was.
    let p = a.pod(NAME).unwrap();
    assert_eq!(p["status"]["containerStatuses"][0]["containerID"], app_id);
    assert!(p["status"]["ephemeralContainerStatuses"].is_null(), "{p}");
}
