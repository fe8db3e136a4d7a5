//! Kubernetes Events from the node, as the kubelet's recorder (client-go `tools/record`) makes
//! them and KubeEdge's edge sends them (`edge/pkg/metamanager/client/event.go`): a new event
//! is `insert <ns>/event/<name>` with the v1.Event; a repeat of the same event (same object,
//! field path, type, reason and message) is `patch` with content
//! `{"event": <event>, "patchData": "<merge patch of count, lastTimestamp, message>"}` (the
//! JSON names of KubeEdge's `types.EventPatchInfo`), which CloudCore applies with
//! `PatchWithEventNamespace`. No answer comes back.
//!
//! [`Correlator`] decides (pure, tested below): create, patch a repeat, or drop one over the
//! spam limit (a token bucket per event key: 25 at once, then one per 5 minutes, the
//! recorder's defaults), so a crash loop cannot flood the link. [`Recorder`] sends what it
//! decides, and drops events while the cloud is away (the kubelet's broadcaster does not keep
//! them either).

use crate::api::Pod;
use crate::message::{module, op, Message};
use crate::metamanager::Upstream;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened (`Normal`), such as `Pulled` or `Started`.
    Normal,
    /// Something went wrong (`Warning`), such as `BackOff` or `Unhealthy`.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Burst of the spam filter (client-go's `defaultSpamBurst`).
const SPAM_BURST: f64 = 25.0;
/// One more event per this long (client-go's `defaultSpamQPS` = 1/300).
const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Events remembered for correlation (client-go keeps an LRU of 4096).
const MAX_KEYS: usize = 4096;

/// What the recorder is asked to record about a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEvent {
    /// The pod's namespace (`involvedObject.namespace`).
    pub namespace: String,
    /// The pod's name (`involvedObject.name`).
    pub pod: String,
    /// The pod's uid (`involvedObject.uid`).
    pub uid: String,
    /// `spec.containers{app}`, `spec.initContainers{setup}`, `spec.ephemeralContainers{dbg}`,
    /// or empty for the pod.
    pub field_path: String,
    /// `type`: Normal or Warning.
    pub kind: EventType,
    /// `reason`: a CamelCase word, such as `Pulling` or `Killing`.
    pub reason: String,
    /// `message`: what happened, for people.
    pub message: String,
}

impl PodEvent {
    /// An event about `pod`, or about its container `container` when given.
    pub fn new(
        pod: &Pod,
        container: Option<&str>,
        kind: EventType,
        reason: &str,
        message: impl Into<String>,
    ) -> PodEvent {
        let field_path = match container {
            Some(c) if pod.spec.init_containers.iter().any(|x| x.name == c) => {
                format!("spec.initContainers{{{c}}}")
            }
            Some(c)
                if pod
                    .spec
                    .ephemeral_containers
                    .iter()
                    .any(|x| x.container.name == c) =>
            {
                format!("spec.ephemeralContainers{{{c}}}")
            }
            Some(c) => format!("spec.containers{{{c}}}"),
            None => String::new(),
        };
        PodEvent {
            namespace: pod.metadata.namespace.clone(),
            pod: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            field_path,
            kind,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    fn key(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.uid,
            self.field_path,
            self.kind.as_str(),
            self.reason,
            self.message,
            self.namespace
        )
    }
}

/// What to send for an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A new event: insert it.
    Create(Value),
    /// A repeat: the event with its new count, and the patch of count and lastTimestamp.
    Patch(Value, Value),
    /// Over the spam limit.
    Drop,
}

struct Seen {
    event: Value,
    count: u64,
    /// Spam filter tokens, and when they were last counted.
    tokens: f64,
    at: SystemTime,
}

/// Correlates events as the kubelet's recorder does.
pub struct Correlator {
    node: String,
    seen: HashMap<String, Seen>,
}

impl Correlator {
    /// A correlator for events from `node`.
    pub fn new(node: &str) -> Correlator {
        Correlator {
            node: node.to_string(),
            seen: HashMap::new(),
        }
    }

    /// What to send for `e` at `now`.
    pub fn observe(&mut self, e: &PodEvent, now: SystemTime) -> Action {
        let key = e.key();
        let stamp = crate::api::rfc3339(now);
        if let Some(s) = self.seen.get_mut(&key) {
            let refill = now.duration_since(s.at).unwrap_or_default().as_secs_f64()
                / SPAM_REFILL.as_secs_f64();
            s.tokens = (s.tokens + refill).min(SPAM_BURST);
            s.at = now;
            if s.tokens < 1.0 {
                return Action::Drop;
            }
            s.tokens -= 1.0;
            s.count += 1;
            s.event["count"] = json!(s.count);
            s.event["lastTimestamp"] = json!(stamp);
            let patch = json!({"count": s.count, "lastTimestamp": stamp, "message": e.message});
            return Action::Patch(s.event.clone(), patch);
        }
        if self.seen.len() >= MAX_KEYS {
            // Forget the stalest.
            if let Some(old) = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone())
            {
                self.seen.remove(&old);
            }
        }
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut involved = json!({"kind": "Pod", "namespace": e.namespace, "name": e.pod,
                                  "uid": e.uid, "apiVersion": "v1"});
        if !e.field_path.is_empty() {
            involved["fieldPath"] = json!(e.field_path);
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": format!("{}.{nanos:x}", e.pod), "namespace": e.namespace},
            "involvedObject": involved,
            "reason": e.reason,
            "message": e.message,
            "type": e.kind.as_str(),
            "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
        });
        self.seen.insert(
            key,
            Seen {
                event: event.clone(),
                count: 1,
                tokens: SPAM_BURST - 1.0,
                at: now,
            },
        );
        Action::Create(event)
    }

    /// Forgets the events of a pod that is gone.
    pub fn forget_pod(&mut self, uid: &str) {
        let prefix = format!("{uid}\u{0}");
        self.seen.retain(|k, _| !k.starts_with(&prefix));
    }
}

/// Records events and sends them upstream while the cloud is there.
pub struct Recorder {
    correlator: RefCell<Correlator>,
    upstream: Arc<dyn Upstream>,
}

impl Recorder {
    /// A recorder for `node` sending through `upstream`.
    pub fn new(node: &str, upstream: Arc<dyn Upstream>) -> Recorder {
        Recorder {
            correlator: RefCell::new(Correlator::new(node)),
            upstream,
        }
    }

    /// Records `e` (logged at debug level; sent when the cloud is connected).
    pub fn record(&self, e: PodEvent) {
        tracing::debug!(pod = %format!("{}/{}", e.namespace, e.pod), kind = e.kind.as_str(), reason = %e.reason, message = %e.message, "event");
        if !self.upstream.is_online() {
            return;
        }
        let resource = |ev: &Value| {
            format!(
                "{}/event/{}",
                e.namespace,
                ev["metadata"]["name"].as_str().unwrap_or_default()
            )
        };
        let msg = match self.correlator.borrow_mut().observe(&e, SystemTime::now()) {
            Action::Drop => return,
            Action::Create(ev) => {
                Message::new(module::EDGED, module::META, op::INSERT, resource(&ev))
                    .with_content(ev)
            }
            Action::Patch(ev, patch) => {
                Message::new(module::EDGED, module::META, op::PATCH, resource(&ev))
                    .with_content(json!({"event": ev, "patchData": patch.to_string()}))
            }
        };
        // Fire and forget: CloudCore sends no answer to events.
        // CloudLink queues the message when `send` is called; the future only reports it.
        drop(self.upstream.send(msg));
    }

    /// Forgets a deleted pod's events.
    pub fn forget_pod(&self, uid: &str) {
        self.correlator.borrow_mut().forget_pod(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = "ns".into();
        p.metadata.name = "web".into();
        p.metadata.uid = "u1".into();
        p.spec.containers.push(crate::api::Container {
            name: "app".into(),
            ..Default::default()
        });
        p.spec.init_containers.push(crate::api::Container {
            name: "setup".into(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn created_then_patched_then_rate_limited() {
        let mut c = Correlator::new("node-1");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = PodEvent::new(
            &pod(),
            Some("app"),
            EventType::Warning,
            "BackOff",
            "back-off",
        );
        let Action::Create(ev) = c.observe(&e, t0) else {
            panic!("first is a create")
        };
        assert_eq!(ev["involvedObject"]["fieldPath"], "spec.containers{app}");
        assert_eq!(ev["involvedObject"]["uid"], "u1");
        assert_eq!(
            ev["source"],
            json!({"component": "kubelet", "host": "node-1"})
        );
        assert_eq!(ev["reportingInstance"], "node-1");
        assert_eq!(ev["type"], "Warning");
        assert_eq!(ev["count"], 1);
        assert!(ev["metadata"]["name"].as_str().unwrap().starts_with("web."));
        let Action::Patch(ev2, patch) = c.observe(&e, t0 + Duration::from_secs(1)) else {
            panic!("a repeat is a patch")
        };
        assert_eq!(ev2["metadata"]["name"], ev["metadata"]["name"]);
        assert_eq!(patch["count"], 2);
        assert_eq!(ev2["firstTimestamp"], ev["firstTimestamp"]);
        // 25 at once, then one per 5 minutes.
        let mut sent = 2;
        for i in 0..100 {
            if c.observe(&e, t0 + Duration::from_secs(2 + i)) != Action::Drop {
                sent += 1;
            }
        }
        assert_eq!(sent, 25);
        assert_ne!(
            c.observe(&e, t0 + Duration::from_secs(2 + 100 + 300)),
            Action::Drop
        );
        // Another message is another event; an init container has its own field path.
        let other = PodEvent::new(&pod(), Some("setup"), EventType::Normal, "Started", "x");
        let Action::Create(ev) = c.observe(&other, t0) else {
            panic!()
        };
        assert_eq!(
            ev["involvedObject"]["fieldPath"],
            "spec.initContainers{setup}"
        );
        let whole = PodEvent::new(&pod(), None, EventType::Warning, "DeadlineExceeded", "m");
        let Action::Create(ev) = c.observe(&whole, t0) else {
            panic!()
        };
        assert!(ev["involvedObject"]["fieldPath"].is_null());
        // So has an ephemeral container.
        let mut p = pod();
        p.spec
            .ephemeral_containers
            .push(crate::api::EphemeralContainer {
                container: crate::api::Container {
                    name: "dbg".into(),
                    ..Default::default()
                },
                target_container_name: None,
            });
        let dbg = PodEvent::new(&p, Some("dbg"), EventType::Normal, "Started", "x");
        assert_eq!(dbg.field_path, "spec.ephemeralContainers{dbg}");
        c.forget_pod("u1");
        assert!(matches!(c.observe(&e, t0), Action::Create(_)));
    }
}
