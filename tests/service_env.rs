//! Service environment variables end to end: the real `edged` joined to the CloudHub
//! stand-in (tests/common/cloudhub.rs), whose DynamicController lists the Services of its API
//! server model as CloudCore's does, and busybox containers on real shims and runc printing
//! their environment.
//!
//! - The kubelet's variables for the services of the pod's namespace and the master service
//!   `default/kubernetes` (none for a headless service or another namespace's); only the
//!   master's with `enableServiceLinks: false`; an explicit variable wins; `$(VAR)` expands.
//! - The list is stored: after the cloud went away and the agent restarted, a new container
//!   gets the variables of the stored list.
//! - A CloudCore without the DynamicController (its default) never answers: pods still start,
//!   without service variables, and the agent says once what to enable.
//!
//! Run as root: `cargo test --test service_env`.

#[path = "common/cloudhub.rs"]
mod cloudhub;
#[allow(dead_code)]
#[path = "common/host.rs"]
mod host;

#[allow(dead_code)]
#[path = "common/agent.rs"]
mod agent;
#[path = "common/joined.rs"]
mod joined;

use agent::Agent;
use cloudhub::{bounded, CloudHub, Lifetime};
use host::{cri_lines, IMAGE};
use joined::cloud_agent;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

const NS: &str = "svc-env";
/// What the agent logs when the cloud does not answer lists of services.
const WARNING: &str = "enable modules.dynamicController in cloudcore.yaml";

/// A pod of namespace [`NS`] whose container prints its environment, then `END`, then sleeps;
/// `env` are its explicit variables, `extra` more spec fields.
fn env_pod(name: &str, env: Value, extra: Value) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"terminationGracePeriodSeconds": 1, "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", "env; echo END; sleep 1000"],
                                 "env": env}]}});
    for (k, v) in extra.as_object().unwrap() {
        p["spec"][k] = v.clone();
    }
    p
}

/// The environment container `app` of pod `ns/name` printed (waits for its `END`).
fn env_of(a: &Agent, ns: &str, name: &str) -> BTreeMap<String, String> {
    a.wait_for(&format!("the environment of {ns}/{name}"), || {
        let prefix = format!("{ns}_{name}_");
        let dir = std::fs::read_dir(a.logs())
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))?;
        let lines = cri_lines(&std::fs::read_to_string(dir.path().join("app/0.log")).ok()?);
        lines.iter().any(|l| l == "END").then(|| {
            lines
                .iter()
                .take_while(|l| *l != "END")
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    })
}

/// The services of the tests' cluster beside `default/kubernetes`: `my-svc` in [`NS`] (TCP
/// 8080 `http`, UDP 53 `dns`), a headless one in [`NS`] and one in another namespace.
fn add_services(hub: &CloudHub) {
    let mut api = hub.api.lock().unwrap();
    api.add_service(&json!({"metadata": {"name": "my-svc", "namespace": NS},
        "spec": {"clusterIP": "10.0.0.11", "ports": [
            {"name": "http", "port": 8080, "targetPort": 80},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}}));
    api.add_service(&json!({"metadata": {"name": "headless", "namespace": NS},
        "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}}));
    api.add_service(
        &json!({"metadata": {"name": "other-svc", "namespace": "elsewhere"},
        "spec": {"clusterIP": "10.0.0.12", "ports": [{"port": 80}]}}),
    );
}

fn get<'a>(env: &'a BTreeMap<String, String>, k: &str) -> Option<&'a str> {
    env.get(k).map(String::as_str)
}

/// The kubelet's variables, as the e2e test "Pods should contain environment variables for
/// services" reads them, and the rules around them.
#[test]
fn services_become_environment_variables() {
    bounded(240, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        add_services(&hub);
        let (a, _token) = cloud_agent("svcenv-links", &hub);
        hub.create_pod(
            &env_pod(
                "links",
                json!([
                    {"name": "URL", "value": "http://$(MY_SVC_SERVICE_HOST):$(MY_SVC_SERVICE_PORT)/"},
                    {"name": "MY_SVC_SERVICE_PORT_DNS", "value": "explicit"}
                ]),
                json!({}),
            ),
            "svcenv-links",
        );
        let env = env_of(&a, NS, "links");
        for (k, v) in [
            ("MY_SVC_SERVICE_HOST", "10.0.0.11"),
            ("MY_SVC_SERVICE_PORT", "8080"),
            ("MY_SVC_SERVICE_PORT_HTTP", "8080"),
            ("MY_SVC_PORT", "tcp://10.0.0.11:8080"),
            ("MY_SVC_PORT_8080_TCP", "tcp://10.0.0.11:8080"),
            ("MY_SVC_PORT_8080_TCP_ADDR", "10.0.0.11"),
            ("MY_SVC_PORT_53_UDP", "udp://10.0.0.11:53"),
            ("MY_SVC_PORT_53_UDP_PROTO", "udp"),
            ("MY_SVC_PORT_53_UDP_PORT", "53"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            // The explicit variable wins over the service's of the same name.
            ("MY_SVC_SERVICE_PORT_DNS", "explicit"),
            // `$(VAR)` of service variables expands.
            ("URL", "http://10.0.0.11:8080/"),
        ] {
            assert_eq!(get(&env, k), Some(v), "{k} in {env:?}");
        }
        assert!(
            env.keys()
                .all(|k| !k.starts_with("HEADLESS_") && !k.starts_with("OTHER_SVC_")),
            "a headless service or another namespace's gave variables: {env:?}"
        );

        // enableServiceLinks: false: the master service's only.
        hub.create_pod(
            &env_pod("nolinks", json!([]), json!({"enableServiceLinks": false})),
            "svcenv-links",
        );
        let env = env_of(&a, NS, "nolinks");
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert!(
            env.keys().all(|k| !k.starts_with("MY_SVC_")),
            "enableServiceLinks: false gave my-svc's variables: {env:?}"
        );

        // What the edge asked is what CloudCore reads, and nothing else was sent to it.
        let api = hub.api.lock().unwrap();
        assert!(
            api.application_errors.is_empty(),
            "{:?}",
            api.application_errors
        );
        let asked = &api.applications[0];
        assert_eq!(
            (
                asked.key.as_str(),
                asked.verb.as_str(),
                asked.nodename.as_str()
            ),
            ("/core/v1/services", "list", "svcenv-links")
        );
        assert_eq!(asked.option.as_deref(), Some(&b"{}"[..]));
        assert_eq!(
            api.applications.len(),
            2,
            "one list per pod that creates containers"
        );
    });
}

/// The list the cloud gave is stored: with the cloud away and the agent restarted, a new
/// pod's container (a static pod, from the manifest directory) gets its variables.
#[test]
fn the_stored_list_serves_a_restarted_agent_offline() {
    bounded(240, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        add_services(&hub);
        let (mut a, _token) = cloud_agent("svcenv-offline", &hub);
        hub.create_pod(&env_pod("first", json!([]), json!({})), "svcenv-offline");
        let env = env_of(&a, NS, "first");
        assert_eq!(get(&env, "MY_SVC_SERVICE_HOST"), Some("10.0.0.11"));

        // The cloud goes; the agent is killed and starts again without it.
        hub.refuse.store(true, Ordering::SeqCst);
        hub.drop_connection();
        a.kill9();
        a.restart();
        a.wait_for("the restarted agent trying the cloud", || {
            (hub.refused.load(Ordering::SeqCst) > 0).then_some(())
        });
        a.add_pod(&env_pod("second", json!([]), json!({})));
        let env = env_of(&a, NS, "second");
        for (k, v) in [
            ("MY_SVC_SERVICE_HOST", "10.0.0.11"),
            ("MY_SVC_PORT_53_UDP_PROTO", "udp"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ] {
            assert_eq!(get(&env, k), Some(v), "{k} in {env:?}");
        }
        assert!(env.keys().all(|k| !k.starts_with("HEADLESS_")), "{env:?}");
    });
}

/// CloudCore's DynamicController off (its default): no answer ever comes. Pods start all the
/// same (without service variables), the agent warns once saying what to enable, and the
/// cloud is not asked again for a while.
#[test]
fn a_cloud_without_the_dynamic_controller_still_starts_pods() {
    bounded(240, async {
        let hub = CloudHub::start(Lifetime::Long).await;
        add_services(&hub);
        hub.api.lock().unwrap().dynamic_controller = false;
        let (a, _token) = cloud_agent("svcenv-nodc", &hub);
        hub.create_pod(&env_pod("quiet", json!([]), json!({})), "svcenv-nodc");
        a.wait_running("quiet");
        let env = env_of(&a, NS, "quiet");
        assert!(
            env.keys().all(|k| !k.ends_with("_SERVICE_HOST")),
            "service variables without an answer: {env:?}"
        );
        hub.create_pod(&env_pod("quiet2", json!([]), json!({})), "svcenv-nodc");
        a.wait_running("quiet2");
        let asked = hub.sent(|m| m.route.group == "dynamiccontroller").len();
        assert_eq!(
            asked, 1,
            "the cloud was asked again while it did not answer"
        );
        let warnings = a.agent_log().matches(WARNING).count();
        assert_eq!(warnings, 1, "{}", a.agent_log());
    });
}
