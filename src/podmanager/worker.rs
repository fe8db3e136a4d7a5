//! A pod's worker: the one task that syncs its pod. It waits for work (a spec change, a
//! container or probe event, a ConfigMap change) or for its next timer (a back-off ending, the
//! periodic resync), then makes the runtime match the spec.

use super::actions::{self, grace, Action, Disposition};
use super::{pod_name, unknown, PodManager, Work};
use crate::api::reason::Reason;
use crate::api::{self, Container, Pod};
use crate::events::{EventType, PodEvent};
use crate::kuberuntime::{self, instances::latest, PodContext};
use crate::prober::{ProbeKind, Target};
use crate::runtime::{ContainerState, ContainerStatus, ErrorKind, Sandbox, Stage};
use crate::status::generate::{self, StatusInputs, Waiting};
use crate::volume::{PodObjects, PodVolumes, TokenKey};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

/// Retry of a pod that cannot start yet (missing object, volume error, sandbox error).
const RETRY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    /// Container name → (current delay, last restart).
    backoff: HashMap<String, (Duration, Instant)>,
    waiting: BTreeMap<String, Waiting>,
    pod_message: Option<String>,
    volumes: Option<PodVolumes>,
    refresh: bool,
    /// The tokens the volumes were last written with.
    tokens: BTreeMap<TokenKey, String>,
    sandbox: Option<Sandbox>,
    probed: HashSet<String>,
    start_time: Option<SystemTime>,
    /// Container id → the termination message of an ended instance (read once).
    termination: HashMap<String, Option<String>>,
    /// A sandbox that failed: the current back-off, when, and the error (the pod's message
    /// until the next try).
    sandbox_retry: Option<(Duration, Instant, String)>,
    /// Set once the pod is evicted: nothing of it runs again until it is deleted.
    evicted: Option<crate::eviction::Eviction>,
    /// Set once the deleted pod's containers are stopped: its phase is final.
    terminal: bool,
}

/// A pod's worker: takes the pod's work from `rx` and does it until the pod is forgotten.
///
/// The future lives as long as the pod and is allocated at its full size, so every long step
/// is boxed while it runs: a resting pod holds the worker's loop state only (issue 19).
pub(super) async fn run(pm: Rc<PodManager>, mut pod: Rc<Pod>, rx: async_channel::Receiver<Work>) {
    // Both on the heap (the pod shared with the manager's handle): an async fn's arguments
    // and locals each take room in its future.
    let mut st = Box::new(State {
        start_time: Some(pm.clock.now_wall()),
        ..State::default()
    });
    Box::pin(restore(&pm, &pod, &mut st)).await;
    let mut next = Duration::ZERO;
    loop {
        let timer = pm.clock.sleep(next);
        let work = smol::future::or(async { rx.recv().await.ok() }, async {
            timer.await;
            Some(Work::Sync)
        })
        .await;
        let Some(first) = work else { return };
        match Box::pin(step(&pm, &mut pod, &mut st, first, &rx)).await {
            Some(n) => next = n,
            None => return,
        }
    }
}

/// One round of a pod's work: `first` and whatever else waits in `rx`, folded, then done.
/// Returns when to look again, or `None` once the pod is forgotten.
async fn step(
    pm: &Rc<PodManager>,
    pod: &mut Rc<Pod>,
    st: &mut State,
    first: Work,
    rx: &async_channel::Receiver<Work>,
) -> Option<Duration> {
    let mut deleted = false;
    // A pod written again after its delete (a static pod keeps its uid) runs again once
    // the old one is stopped.
    let mut again: Option<Pod> = None;
    let mut evict: Option<crate::eviction::Eviction> = None;
    for w in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
        match w {
            Work::Update(p) if deleted => again = Some(Rc::unwrap_or_clone(p)),
            Work::Update(p) => {
                if volumes_changed(pod, &p) {
                    st.refresh = true;
                }
                *pod = p;
            }
            Work::Delete => {
                deleted = true;
                again = None;
            }
            Work::ObjectsChanged => st.refresh = true,
            Work::Evict(e) => evict = Some(*e),
            Work::Sync => {}
        }
    }
    let now = pm.clock.now_wall();
    let started = st.start_time.unwrap_or(now);
    match actions::disposition(pod, deleted, st.evicted.is_some(), evict, started, now) {
        Disposition::Sync { deadline_in } => {
            let next = Box::pin(sync(pm, pod, st)).await;
            Some(deadline_in.map_or(next, |left| next.min(left)))
        }
        Disposition::Evict(e) => {
            evict_pod(pm, pod, st, e).await;
            // Nothing runs again; the worker waits for the delete.
            Some(Duration::from_secs(3600))
        }
        Disposition::Idle => Some(Duration::from_secs(3600)),
        Disposition::Terminate => {
            match stop_deleted(
                pm,
                Rc::unwrap_or_clone(std::mem::take(pod)),
                st,
                rx,
                deleted,
                again,
            )
            .await
            {
                Some(p) => {
                    tracing::info!(pod = %pod_name(&p), "pod added again while it stopped; starting it again");
                    pm.clear_deleted(&p.metadata.uid);
                    *pod = Rc::new(p);
                    *st = State {
                        start_time: Some(pm.clock.now_wall()),
                        ..State::default()
                    };
                    // The stopped incarnation's status (running containers, its
                    // address) goes now: until the new sandbox is up it would say the
                    // pod runs.
                    set_status(pm, pod, st, &[]).await;
                    Some(Duration::ZERO)
                }
                None => None,
            }
        }
    }
}

/// What a pod's earlier incarnation left (the agent restarted): its start time, and an
/// eviction it stays under.
async fn restore(pm: &Rc<PodManager>, pod: &Pod, st: &mut State) {
    let prev = match pm.status.get(&pod.metadata.uid) {
        Some(prev) => Some(prev),
        None => pm
            .meta
            .pod_status(&pod.metadata.namespace, &pod.metadata.name)
            .await
            .ok()
            .flatten(),
    };
    if let Some(prev) = prev {
        st.start_time = prev
            .start_time
            .as_deref()
            .and_then(api::parse_rfc3339)
            .or(st.start_time);
        if let Some(e) = crate::eviction::recorded(pod, &prev) {
            // Evicted before the agent restarted: it stays evicted (and stopped).
            tracing::info!(pod = %pod_name(pod), "pod was evicted; not started again");
            st.evicted = Some(e);
            pm.status.set(pod, prev).await;
            stop_and_release(pm, pod, st, Duration::ZERO).await;
        }
    }
}

/// Stops a deleted pod and releases it: a shorter grace period sent while the pod stops (a
/// second delete) cuts the stop short, a running preStop hook too, as the kubelet's pod
/// worker does. `deleted`: the source removed it (else the cloud deleted it gracefully and
/// the store forgets it here). Returns the pod written again meanwhile (to run again), or
/// `None` once the pod is forgotten.
async fn stop_deleted(
    pm: &Rc<PodManager>,
    mut pod: Pod,
    st: &mut State,
    rx: &async_channel::Receiver<Work>,
    deleted: bool,
    mut again: Option<Pod>,
) -> Option<Pod> {
    loop {
        let shorter = std::cell::RefCell::new(None);
        let readd = std::cell::RefCell::new(None);
        let done = smol::future::or(
            async {
                terminate(pm, &pod, st).await;
                true
            },
            async {
                watch_shorter(rx, &pod, &shorter, &readd).await;
                false
            },
        )
        .await;
        if let Some(p) = readd.into_inner() {
            again = Some(p);
        }
        match shorter.into_inner() {
            Some(p) if !done => {
                tracing::info!(pod = %pod_name(&p), grace_seconds = grace(&p).as_secs(), "a shorter grace period: stopping the pod again with it");
                pod = p;
            }
            _ => break,
        }
    }
    if pod.metadata.deletion_timestamp.is_some() && !deleted {
        // A graceful delete from the cloud ends here: forget the pod and tell the cloud.
        if let Err(e) = pm
            .meta
            .remove_pod(&pod.metadata.namespace, &pod.metadata.name)
            .await
        {
            tracing::error!(pod = %pod_name(&pod), error = %e, "cannot remove the deleted pod from the store");
        }
    }
    // What came while the pod stopped: the manager still sent it here.
    take_readds(rx, &mut again);
    if again.is_none() {
        pm.status.remove(&pod).await;
        take_readds(rx, &mut again);
    }
    match again.take() {
        Some(p) if p.metadata.deletion_timestamp.is_none() => Some(p),
        _ => {
            pm.forget(&pod.metadata.uid);
            None
        }
    }
}

/// Waits, while the pod stops, for a delete with a shorter grace period than `pod`'s (into
/// `shorter`, then returns); a pod written again meanwhile goes to `readd` (a delete clears
/// it), everything else is dropped as the stop makes it moot.
async fn watch_shorter(
    rx: &async_channel::Receiver<Work>,
    pod: &Pod,
    shorter: &std::cell::RefCell<Option<Pod>>,
    readd: &std::cell::RefCell<Option<Pod>>,
) {
    loop {
        match rx.recv().await {
            Ok(Work::Update(p)) if p.metadata.deletion_timestamp.is_some() => {
                if grace(&p) < grace(pod) {
                    *shorter.borrow_mut() = Some(Rc::unwrap_or_clone(p));
                    return;
                }
            }
            Ok(Work::Update(p)) => *readd.borrow_mut() = Some(Rc::unwrap_or_clone(p)),
            Ok(Work::Delete) => *readd.borrow_mut() = None,
            Ok(_) => {}
            Err(_) => std::future::pending::<()>().await,
        }
    }
}

/// Takes the work that arrived for a stopping pod: the last spec written after the delete, if
/// no delete followed it.
fn take_readds(rx: &async_channel::Receiver<Work>, again: &mut Option<Pod>) {
    while let Ok(w) = rx.try_recv() {
        match w {
            Work::Update(p) => *again = Some(Rc::unwrap_or_clone(p)),
            Work::Delete => *again = None,
            Work::Sync | Work::ObjectsChanged | Work::Evict(_) => {}
        }
    }
}

/// Whether an update from `a` to `b` changes what the pod's volumes hold: their sources, or
/// the labels and annotations a downwardAPI file may show (the kubelet rewrites those files
/// on such an update, without a restart).
fn volumes_changed(a: &Pod, b: &Pod) -> bool {
    a.spec.volumes != b.spec.volumes
        || a.metadata.labels != b.metadata.labels
        || a.metadata.annotations != b.metadata.annotations
}

/// The ConfigMaps and Secrets the pod needs; `Err` names a required one that is missing.
async fn fetch_objects(pm: &PodManager, pod: &Pod) -> Result<PodObjects, String> {
    let mut objects = PodObjects::default();
    let ns = &pod.metadata.namespace;
    for r in PodObjects::references(pod) {
        let found = match r.kind {
            api::Kind::ConfigMap => pm.objects.config_map(ns, &r.name).await.map(|o| {
                o.map(|c| objects.config_maps.insert(r.name.clone(), c))
                    .is_some()
            }),
            api::Kind::Secret => pm.objects.secret(ns, &r.name).await.map(|o| {
                o.map(|s| objects.secrets.insert(r.name.clone(), s))
                    .is_some()
            }),
            api::Kind::Pod => Ok(true),
        };
        match found {
            Ok(true) => {}
            Ok(false) if r.optional => {}
            // Not stored and the cloud is away: an optional one is done without.
            Err(crate::metamanager::MetaError::Upstream(
                crate::metamanager::UpstreamError::Offline,
            )) if r.optional => {}
            Ok(false) => {
                return Err(format!(
                    "{} \"{}\" not found",
                    r.kind.resource_type(),
                    r.name
                ))
            }
            Err(e) => return Err(format!("{} \"{}\": {e}", r.kind.resource_type(), r.name)),
        }
    }
    Ok(objects)
}

/// The service-account tokens of the pod's projected volumes, and when the first of them is
/// due for a refresh. `Err`: a message naming the volume and why, and when to ask again.
async fn fetch_tokens(
    pm: &PodManager,
    pod: &Pod,
) -> Result<(BTreeMap<TokenKey, String>, Option<Duration>), (String, Duration)> {
    let mut out = BTreeMap::new();
    let mut wake: Option<Duration> = None;
    for v in &pod.spec.volumes {
        let sources = v.projected.iter().flat_map(|p| &p.sources);
        for src in sources.filter_map(|s| s.service_account_token.as_ref()) {
            let key = crate::volume::token_key(src);
            // An invalid source is the volume manager's to name.
            if out.contains_key(&key) || crate::token::check_source(src).is_err() {
                continue;
            }
            let spec = crate::token::TokenSpec::new(pod, src);
            match pm.tokens.get(&spec).await {
                Ok(t) => {
                    let due = crate::token::refresh_at(&t)
                        .duration_since(pm.clock.now_wall())
                        .unwrap_or(RETRY)
                        .max(Duration::from_secs(1));
                    wake = Some(wake.map_or(due, |w| w.min(due)));
                    out.insert(key, t.token);
                }
                Err(e) => return Err((format!("volume `{}`: {e}", v.name), e.retry_in)),
            }
        }
    }
    Ok((out, wake))
}

/// The pod's containers as the runtime has them.
async fn pod_containers(pm: &PodManager, uid: &str) -> Vec<ContainerStatus> {
    let rt = pm.runtime.clone();
    let uid = uid.to_string();
    match smol::unblock(move || rt.list_pod_containers(&uid)).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list containers");
            Vec::new()
        }
    }
}

async fn sync(pm: &PodManager, pod: &Pod, st: &mut State) -> Duration {
    let name = pod_name(pod);
    let mut next = pm.cfg.resync;
    st.pod_message = None;
    let objects = match fetch_objects(pm, pod).await {
        Ok(o) => Some(o),
        Err(msg) => {
            tracing::warn!(pod = %name, reason = %msg, "pod waits for an object");
            st.pod_message = Some(msg);
            None
        }
    };
    let mut objects = objects;
    if let Some(o) = objects.as_mut() {
        match fetch_tokens(pm, pod).await {
            Ok((tokens, wake)) => {
                if st.volumes.is_some() && tokens != st.tokens {
                    st.refresh = true;
                }
                st.tokens = tokens.clone();
                o.tokens = tokens;
                if let Some(w) = wake {
                    next = next.min(w);
                }
            }
            Err((msg, retry)) => {
                tracing::warn!(pod = %name, reason = %msg, "pod waits for a service-account token");
                st.pod_message = Some(msg);
                objects = None;
                next = next.min(retry);
            }
        }
    }
    let mut ready_to_run = objects.is_some();
    if let Some(objects) = &objects {
        let vols = pm.volumes.clone();
        let (p, o) = (pod.clone(), objects.clone());
        let result = if st.volumes.is_none() {
            smol::unblock(move || vols.setup(&p, &o)).await.map(Some)
        } else if st.refresh {
            smol::unblock(move || vols.refresh(&p, &o))
                .await
                .map(|_| None)
        } else {
            Ok(None)
        };
        match result {
            Ok(Some(v)) => st.volumes = Some(v),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "volumes not ready");
                pm.events.record(PodEvent::new(
                    pod,
                    None,
                    EventType::Warning,
                    "FailedMount",
                    format!("MountVolume.SetUp failed: {e}"),
                ));
                st.pod_message = Some(e.to_string());
                ready_to_run = false;
            }
        }
        if ready_to_run {
            st.refresh = false;
        }
    }
    let now = pm.clock.now_mono();
    let waiting_out = st.sandbox_retry.as_ref().and_then(|(delay, at, msg)| {
        delay
            .checked_sub(now.saturating_duration_since(*at))
            .map(|w| (w, msg.clone()))
    });
    if ready_to_run && st.sandbox.is_none() {
        if let Some((wait, msg)) = waiting_out {
            // A sandbox (or its network) that failed is tried again after its back-off.
            st.pod_message = Some(msg);
            ready_to_run = false;
            next = next.min(wait);
        } else {
            let rt = pm.runtime.clone();
            let made = match kuberuntime::sandbox_config(pod, &pm.cfg.dns) {
                Ok(cfg) => smol::unblock(move || rt.run_pod_sandbox(&cfg))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match made {
                Ok(s) => {
                    st.sandbox = Some(s);
                    st.sandbox_retry = None;
                }
                Err(e) => {
                    tracing::error!(pod = %name, error = %e, "cannot make the pod sandbox");
                    let delay = sandbox_backoff(st.sandbox_retry.as_ref().map(|r| r.0));
                    st.sandbox_retry = Some((delay, pm.clock.now_mono(), e.to_string()));
                    st.pod_message = Some(e.to_string());
                    ready_to_run = false;
                    next = next.min(delay);
                }
            }
        }
    }
    let mut containers = pod_containers(pm, &pod.metadata.uid).await;
    if ready_to_run {
        let objects = objects.unwrap_or_default();
        let mut changed = false;
        let wake = run_containers(pm, pod, st, &objects, &containers, &mut changed).await;
        next = next.min(wake);
        if changed {
            containers = pod_containers(pm, &pod.metadata.uid).await;
        }
    } else {
        next = next.min(RETRY);
        for c in pod
            .spec
            .init_containers
            .iter()
            .chain(pod.spec.containers.iter())
        {
            st.waiting.entry(c.name.clone()).or_insert(Waiting {
                reason: Reason::ContainerCreating,
                message: st.pod_message.clone(),
            });
        }
    }
    update_probes(pm, pod, st, &containers);
    set_status(pm, pod, st, &containers).await;
    next
}

/// Starts, restarts and replaces containers as the spec says: decides
/// ([`actions::compute_pod_actions`]), then [`execute`]s. Returns when to sync next.
async fn run_containers(
    pm: &PodManager,
    pod: &Pod,
    st: &mut State,
    objects: &PodObjects,
    all: &[ContainerStatus],
    changed: &mut bool,
) -> Duration {
    let probe = |id: &str, kind: ProbeKind| pm.prober.result(id, kind);
    let reported = pm.status.get(&pod.metadata.uid);
    let plan = actions::compute_pod_actions(
        pod,
        &actions::SyncView {
            instances: all,
            sandbox: st.sandbox.as_ref(),
            probe: &probe,
            backoff: &st.backoff,
            reported: reported.as_ref(),
            now: actions::Clock {
                mono: pm.clock.now_mono(),
                wall: pm.clock.now_wall(),
            },
            resync: pm.cfg.resync,
        },
    );
    execute(pm, pod, st, objects, all, plan.actions, changed).await;
    plan.wake
}

/// Carries out a sync's actions in order (the kubelet's `SyncPod`); `changed` is set when the
/// runtime changed.
async fn execute(
    pm: &PodManager,
    pod: &Pod,
    st: &mut State,
    objects: &PodObjects,
    all: &[ContainerStatus],
    todo: Vec<Action>,
    changed: &mut bool,
) {
    let specs = all_specs(pod);
    let spec = |name: &str| specs.iter().copied().find(|c| c.name == name);
    let instance = |id: &str| all.iter().find(|l| l.id == id);
    // The services, once for every container this sync creates (none when it creates none).
    let creates = todo.iter().any(|a| matches!(a, Action::Start { .. }));
    let services = if creates {
        fetch_services(pm, pod).await
    } else {
        Vec::new()
    };
    let inputs = Inputs {
        objects,
        services: &services,
    };
    for action in todo {
        match action {
            Action::Kill {
                container,
                id,
                grace,
                message,
                why,
            } => {
                let (Some(c), Some(l)) = (spec(&container), instance(&id)) else {
                    continue;
                };
                let verb = if why.restarts() {
                    "restarting"
                } else {
                    "stopping"
                };
                tracing::info!(pod = %pod_name(pod), container = %c.name, "{verb} container: {}", why.as_str());
                kill_container(pm, pod, c, l, grace, message, &[]).await;
                if why.restarts() {
                    pm.prober.remove(&id);
                    st.probed.remove(&id);
                }
                *changed = true;
            }
            Action::KillUnknown { container, id } => {
                if let (Some(c), Some(l)) = (spec(&container), instance(&id)) {
                    kill_unknown(pm, pod, c, l).await;
                    *changed = true;
                }
            }
            Action::StartCreated { container, id } => {
                if let (Some(c), Some(l)) = (spec(&container), instance(&id)) {
                    start_created(pm, pod, st, c, l).await;
                    *changed = true;
                }
            }
            Action::Start {
                container,
                attempt,
                pid_target,
            } => {
                if let Some(c) = spec(&container) {
                    *changed |= start_in(pm, pod, st, &inputs, c, attempt, pid_target).await;
                }
            }
            Action::BackOff { container, delay } => {
                let message = format!(
                    "back-off {}s restarting failed container={container} pod={}_{}({})",
                    delay.as_secs(),
                    pod.metadata.name,
                    pod.metadata.namespace,
                    pod.metadata.uid
                );
                backoff_event(pm, pod, &container);
                let w = Waiting {
                    reason: Reason::CrashLoopBackOff,
                    message: Some(message),
                };
                st.waiting.insert(container, w);
            }
            Action::Wait {
                container,
                reason,
                message,
            } => {
                let w = Waiting {
                    reason,
                    message: Some(message),
                };
                st.waiting.insert(container, w);
            }
        }
    }
}

/// The next wait before a failed sandbox is tried again: [`RETRY`] doubling up to
/// [`actions::BACKOFF_MAX`].
fn sandbox_backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(RETRY, |d| (d * 2).min(actions::BACKOFF_MAX))
}

/// The kubelet's BackOff event (repeats are counted and rate-limited by the recorder).
fn backoff_event(pm: &PodManager, pod: &Pod, container: &str) {
    pm.events.record(PodEvent::new(
        pod,
        Some(container),
        EventType::Warning,
        "BackOff",
        format!(
            "Back-off restarting failed container {container} in pod {}_{}({})",
            pod.metadata.name, pod.metadata.namespace, pod.metadata.uid
        ),
    ));
}

/// Moves container `name`'s crash-loop back-off on: it has just restarted.
fn note_restart(st: &mut State, name: &str, now: Instant) {
    let delay = actions::next_backoff(&st.backoff, name, now);
    st.backoff.insert(name.to_string(), (delay, now));
}

/// What a container's config is made from beside the pod and the node.
struct Inputs<'a> {
    /// The pod's ConfigMaps, Secrets and tokens.
    objects: &'a PodObjects,
    /// The cluster's Services (for the service environment variables).
    services: &'a [api::Service],
}

/// The cluster's Services as MetaManager knows them (the cloud's answer, else the stored
/// list); none when even the store cannot say.
async fn fetch_services(pm: &PodManager, pod: &Pod) -> Vec<api::Service> {
    match pm.meta.services(&pm.cfg.node_name).await {
        Ok(services) => {
            tracing::debug!(pod = %pod_name(pod), services = services.len(), "services for the service environment variables");
            services
        }
        Err(e) => {
            tracing::warn!(pod = %pod_name(pod), error = %e, "the stored services cannot be read: containers start without service environment variables");
            Vec::new()
        }
    }
}

/// Creates and starts one instance of `c` with restart count `attempt`, in the PID namespace
/// of container `pid_target` (an id) when given. Returns whether the runtime changed.
async fn start_in(
    pm: &PodManager,
    pod: &Pod,
    st: &mut State,
    inputs: &Inputs<'_>,
    c: &Container,
    attempt: u32,
    pid_target: Option<String>,
) -> bool {
    let name = pod_name(pod);
    let wait = |st: &mut State, reason: Reason, message: String| {
        tracing::warn!(pod = %name, container = %c.name, reason = reason.as_str(), "{message}");
        // The kubelet's events: the image reasons as they are, the rest as Failed.
        let (event_reason, text) = match reason {
            Reason::ErrImageNeverPull => (reason.as_str(), message.clone()),
            // After the puller's own Failed / BackOff event, as the kubelet's runtime does.
            Reason::ErrImagePull | Reason::ImagePullBackOff => {
                ("Failed", format!("Error: {reason}"))
            }
            _ => ("Failed", format!("Error: {message}")),
        };
        pm.events.record(PodEvent::new(
            pod,
            Some(&c.name),
            EventType::Warning,
            event_reason,
            text,
        ));
        st.waiting.insert(
            c.name.clone(),
            Waiting {
                reason,
                message: Some(message),
            },
        );
    };
    // The image: local, or pulled as the policy says (on a blocking thread).
    let policy = c.image_pull_policy().to_string();
    let present = {
        let images = pm.images.clone();
        let image = c.image.clone();
        match smol::unblock(move || images.image_spec(&image)).await {
            Ok(spec) => Some(spec),
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => {
                wait(st, Reason::ErrImageInspect, e.to_string());
                return false;
            }
        }
    };
    let pulled_text = match (super::pull::decide(&policy, present.is_some()), &pm.puller) {
        (super::pull::Decision::UseLocal, _) => {
            format!("Container image \"{}\" already present on machine", c.image)
        }
        (super::pull::Decision::Pull, Some(puller)) => {
            let uid = pod.metadata.uid.clone();
            let deleted = || pm.is_deleted(&uid);
            match puller.pull(pod, c, &pm.objects, &pm.events, &deleted).await {
                Ok(text) => text,
                Err((reason, message)) => {
                    wait(st, reason, message);
                    return false;
                }
            }
        }
        (super::pull::Decision::Pull, None) => {
            wait(
                st,
                Reason::ErrImagePull,
                format!(
                    "image \"{}\" is not on this node and this agent pulls no images: import it with `edged image import`",
                    c.image
                ),
            );
            return false;
        }
        (super::pull::Decision::NeverPull, _) => {
            wait(
                st,
                Reason::ErrImageNeverPull,
                format!(
                    "Container image \"{}\" is not present with pull policy of {policy}",
                    c.image
                ),
            );
            return false;
        }
    };
    // runAsNonRoot against the image's user (the kubelet checks it before making anything).
    let image_user = match present {
        Some(spec) => Ok(spec.user),
        None => {
            let (images, image) = (pm.images.clone(), c.image.clone());
            smol::unblock(move || images.image_spec(&image))
                .await
                .map(|s| s.user)
        }
    };
    match image_user {
        Ok(user) => {
            if let Err(e) = kuberuntime::verify_run_as_non_root(pod, c, &user) {
                wait(st, Stage::Config.waiting_reason(), e);
                return false;
            }
        }
        Err(e) => {
            wait(st, Reason::ErrImageInspect, e.to_string());
            return false;
        }
    }
    let Some(vols) = &st.volumes else {
        return false;
    };
    // The instance's termination-message file, mounted at its terminationMessagePath.
    let message_file = kuberuntime::termination::host_file(
        &pm.volumes.pod_dir(&pod.metadata.uid),
        &c.name,
        attempt,
    );
    let pod_ip = st.sandbox.as_ref().and_then(|s| s.ip.clone());
    let pod_ip = if pod.spec.host_network {
        Some(pm.cfg.host_ip.clone())
    } else {
        pod_ip
    };
    let pod_ips: Vec<String> = match (&st.sandbox, pod.spec.host_network) {
        (Some(s), false) => s.ips.clone(),
        _ => pod_ip.iter().cloned().collect(),
    };
    let ctx = PodContext {
        pod,
        node_name: &pm.cfg.node_name,
        host_ip: &pm.cfg.host_ip,
        pod_ip: pod_ip.as_deref(),
        pod_ips: &pod_ips,
        config_maps: &inputs.objects.config_maps,
        secrets: &inputs.objects.secrets,
        services: inputs.services,
        log_dir: &pm.cfg.log_dir,
        seccomp_root: &pm.cfg.seccomp_root,
    };
    // subPathExpr expanded into subPath, from the container's env.
    let expanded = match kuberuntime::subpath_expr::resolve(&ctx, c) {
        Ok(x) => x,
        Err(e) => {
            wait(st, Stage::Config.waiting_reason(), e.to_string());
            return false;
        }
    };
    let mounts = {
        let (v, p, cc, pv) = (pm.volumes.clone(), pod.clone(), expanded, vols.clone());
        let file = message_file.clone();
        let made = smol::unblock(move || {
            let mut m = v
                .container_mounts(&p, &cc, &pv)
                .map_err(|e| e.to_string())?;
            kuberuntime::termination::prepare(&file)
                .map_err(|e| format!("termination message file {}: {e}", file.display()))?;
            let path = cc
                .termination_message_path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| kuberuntime::termination::DEFAULT_PATH.to_string());
            m.push(crate::runtime::Mount {
                host_path: file,
                container_path: path,
                read_only: false,
            });
            Ok::<_, String>(m)
        });
        match made.await {
            Ok(m) => m,
            Err(e) => {
                wait(st, Stage::Config.waiting_reason(), e);
                return false;
            }
        }
    };
    let mut config = match kuberuntime::container_config(&ctx, c, attempt, mounts) {
        Ok(cfg) => cfg,
        Err(e) => {
            wait(st, Stage::Config.waiting_reason(), e.to_string());
            return false;
        }
    };
    if let Some(sb) = &st.sandbox {
        config.labels.insert(
            kuberuntime::SANDBOX_LABEL.to_string(),
            kuberuntime::sandbox_stamp(sb),
        );
    }
    config.pid_target = pid_target;
    config.labels.insert(
        kuberuntime::termination::LABEL.to_string(),
        message_file.display().to_string(),
    );
    config.labels.insert(
        kuberuntime::termination::POLICY_LABEL.to_string(),
        kuberuntime::termination::Policy::parse(c.termination_message_policy.as_deref())
            .as_str()
            .to_string(),
    );
    let rt = pm.runtime.clone();
    let uid = pod.metadata.uid.clone();
    let result = smol::unblock(move || -> crate::runtime::Result<String> {
        let id = rt.create_container(&uid, &config)?;
        rt.start_container(&id).map(|_| id)
    })
    .await;
    if attempt > 0 {
        note_restart(st, &c.name, pm.clock.now_mono());
    }
    match result {
        Ok(id) => {
            st.waiting.remove(&c.name);
            tracing::info!(pod = %name, container = %c.name, id = %id, attempt, "container started");
            // The kubelet sends Pulled for a pull when it ends; "already present" here.
            let pulled =
                (!pulled_text.starts_with("Successfully")).then_some(("Pulled", pulled_text));
            for (reason, message) in pulled.into_iter().chain([
                ("Created", format!("Created container: {}", c.name)),
                ("Started", format!("Started container {}", c.name)),
            ]) {
                pm.events.record(PodEvent::new(
                    pod,
                    Some(&c.name),
                    EventType::Normal,
                    reason,
                    message,
                ));
            }
            post_start(pm, pod, c, &id).await;
            true
        }
        Err(e) => {
            if attempt == 0 {
                note_restart(st, &c.name, pm.clock.now_mono());
            }
            let reason = e.stage.waiting_reason();
            wait(st, reason, e.to_string());
            true
        }
    }
}

/// Starts an instance that was created but not started (the agent stopped in between).
async fn start_created(
    pm: &PodManager,
    pod: &Pod,
    st: &mut State,
    c: &Container,
    l: &ContainerStatus,
) {
    let rt = pm.runtime.clone();
    let id = l.id.clone();
    match smol::unblock(move || rt.start_container(&id)).await {
        Ok(()) => {
            st.waiting.remove(&c.name);
            post_start(pm, pod, c, &l.id).await;
        }
        Err(e) => {
            let e = e.during(Stage::Start);
            st.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: e.stage.waiting_reason(),
                    message: Some(e.to_string()),
                },
            );
        }
    }
}

async fn post_start(pm: &PodManager, pod: &Pod, c: &Container, id: &str) {
    let handler = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref());
    let action = kuberuntime::lifecycle::action(handler, Duration::MAX);
    if let Err(e) = run_hook(pm, pod, c, id, action, POST_START_TIMEOUT).await {
        tracing::warn!(pod = %pod_name(pod), container = %c.name, error = %e, "postStart hook failed; killing the container");
        // As the kubelet: the hook's output stays out of the event (it may hold secrets).
        pm.events.record(PodEvent::new(
            pod,
            Some(&c.name),
            EventType::Warning,
            "FailedPostStartHook",
            "PostStartHook failed",
        ));
        let (rt, id2) = (pm.runtime.clone(), id.to_string());
        let _ = smol::unblock(move || rt.stop_container(&id2, Duration::ZERO)).await;
    }
}

/// How long a postStart `exec` or `httpGet` may take before it counts as failed.
const POST_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one hook action for container `id`, within `limit`: `Err` says why it failed.
async fn run_hook(
    pm: &PodManager,
    pod: &Pod,
    c: &Container,
    id: &str,
    action: kuberuntime::lifecycle::HookAction,
    limit: Duration,
) -> Result<(), String> {
    use kuberuntime::lifecycle::HookAction;
    match action {
        HookAction::Nothing => Ok(()),
        HookAction::Sleep(d) => {
            pm.clock.sleep(d).await;
            Ok(())
        }
        HookAction::Invalid(why) => Err(why),
        HookAction::Exec(cmd) => {
            let (rt, id) = (pm.runtime.clone(), id.to_string());
            let shown = cmd.join(" ");
            match smol::unblock(move || rt.exec_sync(&id, &cmd, limit)).await {
                Ok(r) if r.exit_code == 0 => Ok(()),
                Ok(r) => Err(format!(
                    "command '{shown}' exited with {}: {}",
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr).trim()
                )),
                Err(e) => Err(format!("command '{shown}': {e}")),
            }
        }
        HookAction::Http(get) => {
            use crate::prober::handlers::{hook_get, HookAnswer};
            let netns = pod_netns(pm, pod).await;
            if let HookAnswer::AnsweredOverHttp(host) =
                hook_get(&get, &c.ports, netns, limit).await?
            {
                // As the kubelet: the pod's event, with no container named.
                pm.events.record(PodEvent::new(
                    pod,
                    None,
                    EventType::Warning,
                    "LifecycleHTTPFallback",
                    format!("request to HTTPS lifecycle hook {host} got HTTP response, retry with HTTP succeeded"),
                ));
            }
            Ok(())
        }
    }
}

/// The pod's network namespace as its sandbox has it (`None`: the host's, for a hostNetwork
/// pod or one whose sandbox is not found).
async fn pod_netns(pm: &PodManager, pod: &Pod) -> Option<std::path::PathBuf> {
    if pod.spec.host_network {
        return None;
    }
    let (rt, uid) = (pm.runtime.clone(), pod.metadata.uid.clone());
    let sandboxes = smol::unblock(move || rt.list_pod_sandboxes()).await.ok()?;
    sandboxes.into_iter().find(|s| s.uid == uid)?.netns
}

/// The kubelet's shortest SIGTERM window once a container's turn has come, however much of
/// its grace period its preStop hook and its wait took (`minimumGracePeriodInSeconds`).
const MIN_TERM_WINDOW: Duration = Duration::from_secs(2);

/// preStop hook, then SIGTERM, then SIGKILL when `grace` runs out. In a termination order
/// ([`kill_running`]), the SIGTERM waits after the hook until every channel of `after` is
/// closed (the containers that must exit first) or the grace period is spent; the container
/// then gets what is left of it, at least [`MIN_TERM_WINDOW`].
async fn kill_container(
    pm: &PodManager,
    pod: &Pod,
    c: &Container,
    l: &ContainerStatus,
    grace: Duration,
    why: Option<String>,
    after: &[async_channel::Receiver<()>],
) {
    let started = pm.clock.now_mono();
    let handler = c.lifecycle.as_ref().and_then(|x| x.pre_stop.as_ref());
    let running = l.state == ContainerState::Running;
    // As the kubelet: no hook for a kill without grace (a forced delete).
    if running && !grace.is_zero() {
        let action = kuberuntime::lifecycle::action(handler, grace);
        if let Err(e) = run_hook(pm, pod, c, &l.id, action, grace).await {
            tracing::warn!(pod = %pod_name(pod), container = %c.name, error = %e, "preStop hook failed");
            pm.events.record(PodEvent::new(
                pod,
                Some(&c.name),
                EventType::Warning,
                "FailedPreStopHook",
                "PreStopHook failed",
            ));
        }
    }
    if running {
        pm.events.record(PodEvent::new(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Killing",
            why.unwrap_or_else(|| format!("Stopping container {}", c.name)),
        ));
    }
    let spent = |pm: &PodManager| pm.clock.now_mono().saturating_duration_since(started);
    let mut left = grace.saturating_sub(spent(pm));
    if !after.is_empty() && !grace.is_zero() {
        smol::future::or(
            async {
                for exited in after {
                    // Closed (an error) once that container has exited.
                    let _ = exited.recv().await;
                }
            },
            pm.clock.sleep(left),
        )
        .await;
        left = grace.saturating_sub(spent(pm)).max(MIN_TERM_WINDOW);
    }
    let (rt, id) = (pm.runtime.clone(), l.id.clone());
    if let Err(e) = smol::unblock(move || rt.stop_container(&id, left)).await {
        tracing::warn!(pod = %pod_name(pod), container = %c.name, error = %e, "cannot stop container");
    }
}

/// Kills a container whose state cannot be read ([`unknown`]); a kill that cannot reach it
/// either is tried again at the next look.
async fn kill_unknown(pm: &PodManager, pod: &Pod, c: &Container, l: &ContainerStatus) {
    tracing::warn!(pod = %pod_name(pod), container = %c.name, id = %l.id, "container state unknown: killing it before anything else");
    let message = unknown::kill_message(&c.name);
    pm.events.record(PodEvent::new(
        pod,
        Some(&c.name),
        EventType::Warning,
        "Killing",
        message.clone(),
    ));
    kill_container(pm, pod, c, l, grace(pod), Some(message), &[]).await;
}

fn update_probes(pm: &PodManager, pod: &Pod, st: &mut State, all: &[ContainerStatus]) {
    let running: HashSet<String> = all
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .map(|c| c.id.clone())
        .collect();
    for id in st.probed.iter().filter(|id| !running.contains(*id)) {
        pm.prober.remove(id);
    }
    st.probed.retain(|id| running.contains(id));
    let netns = if pod.spec.host_network {
        None
    } else {
        st.sandbox.as_ref().and_then(|s| s.netns.clone())
    };
    let sidecars = pod
        .spec
        .init_containers
        .iter()
        .filter(|c| api::restart::is_sidecar(c));
    for spec in pod.spec.containers.iter().chain(sidecars) {
        let has = spec.liveness_probe.is_some()
            || spec.readiness_probe.is_some()
            || spec.startup_probe.is_some();
        let Some(l) = latest(all, &spec.name).filter(|l| l.state == ContainerState::Running) else {
            continue;
        };
        if !has || st.probed.contains(&l.id) {
            continue;
        }
        pm.prober.add(
            Target {
                pod: pod_name(pod),
                pod_uid: pod.metadata.uid.clone(),
                container_id: l.id.clone(),
                container_name: spec.name.clone(),
                started_at: l.started_at.unwrap_or_else(|| pm.clock.now_wall()),
                netns: netns.clone(),
                ports: spec.ports.clone(),
            },
            spec,
        );
        st.probed.insert(l.id.clone());
    }
}

async fn set_status(pm: &PodManager, pod: &Pod, st: &mut State, all: &[ContainerStatus]) {
    // A waiting reason holds only while no instance runs.
    for c in all.iter().filter(|c| c.state == ContainerState::Running) {
        if latest(all, &c.name).map(|l| l.id == c.id).unwrap_or(false) {
            st.waiting.remove(&c.name);
        }
    }
    let mut ready = BTreeMap::new();
    let mut started = BTreeMap::new();
    for c in all.iter().filter(|c| c.state == ContainerState::Running) {
        if let Some(r) = pm.prober.result(&c.id, ProbeKind::Readiness) {
            ready.insert(c.id.clone(), r);
        }
        if let Some(r) = pm.prober.result(&c.id, ProbeKind::Startup) {
            started.insert(c.id.clone(), r);
        }
    }
    // Ended instances carry their termination message (read once per instance).
    let mut with_messages: Vec<ContainerStatus> = Vec::new();
    for c in all {
        let mut c = c.clone();
        if c.state == ContainerState::Exited && c.message.is_none() {
            if let Some(file) = c.labels.get(kuberuntime::termination::LABEL) {
                c.message = match st.termination.get(&c.id) {
                    Some(m) => m.clone(),
                    None => {
                        let (file, log) = (std::path::PathBuf::from(file), c.log_path.clone());
                        let policy = kuberuntime::termination::Policy::parse(
                            c.labels
                                .get(kuberuntime::termination::POLICY_LABEL)
                                .map(String::as_str),
                        );
                        let code = c.exit_code.unwrap_or(0);
                        let m = smol::unblock(move || {
                            kuberuntime::termination::message(&file, policy, code, &log)
                        })
                        .await;
                        st.termination.insert(c.id.clone(), m.clone());
                        m
                    }
                };
            }
        }
        with_messages.push(c);
    }
    let all = &with_messages[..];
    let previous = pm.status.get(&pod.metadata.uid);
    let pod_ips: Vec<String> = if pod.spec.host_network {
        Some(pm.cfg.host_ip.clone())
            .filter(|ip| !ip.is_empty())
            .into_iter()
            .collect()
    } else {
        st.sandbox
            .as_ref()
            .map(|s| s.ips.clone())
            .unwrap_or_default()
    };
    let mut status = generate::pod_status(
        pod,
        &StatusInputs {
            containers: all,
            ready: &ready,
            started: &started,
            waiting: &st.waiting,
            pod_message: st.pod_message.as_deref(),
            host_ip: &pm.cfg.host_ip,
            pod_ips: &pod_ips,
            start_time: st.start_time.unwrap_or_else(|| pm.clock.now_wall()),
            previous: previous.as_ref(),
            terminal: st.terminal,
        },
    );
    if let Some(e) = &st.evicted {
        let now = api::rfc3339(pm.clock.now_wall());
        crate::eviction::mark_evicted(&mut status, e, &now);
    }
    pm.status.set(pod, status).await;
}

/// Evicts the pod: its containers are killed (the grace period of a hard eviction: 1 s under
/// node pressure, none for a local storage limit, as the kubelet), its status says Failed /
/// Evicted, then its containers, sandbox and volumes are released; its logs stay until it is
/// deleted.
async fn evict_pod(pm: &PodManager, pod: &Pod, st: &mut State, e: crate::eviction::Eviction) {
    let grace = if e.pressure.is_some() {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    };
    tracing::warn!(pod = %pod_name(pod), reason = e.reason, message = %e.message.trim_end(), "pod stopped for good");
    let kind = if e.reason == crate::eviction::DEADLINE_EXCEEDED {
        EventType::Normal
    } else {
        EventType::Warning
    };
    pm.events.record(PodEvent::new(
        pod,
        None,
        kind,
        e.reason,
        e.message.trim_end(),
    ));
    st.evicted = Some(e);
    kill_all(pm, pod, st, grace).await;
    let containers = pod_containers(pm, &pod.metadata.uid).await;
    st.waiting.clear();
    set_status(pm, pod, st, &containers).await;
    stop_and_release(pm, pod, st, grace).await;
    // Stored again now that the pod's space is freed: on a full disk the first write may have
    // failed, and an eviction the store lacks would be forgotten at the next agent start.
    if let Some(status) = pm.status.get(&pod.metadata.uid) {
        let (ns, name) = (&pod.metadata.namespace, &pod.metadata.name);
        if let Err(e) = pm.meta.put_pod_status(ns, name, &status).await {
            tracing::error!(pod = %pod_name(pod), error = %e, "cannot store the evicted pod's status");
        }
    }
}

/// Kills every running container of the pod (preStop, SIGTERM, `grace`, SIGKILL) and stops
/// probing them.
async fn kill_all(pm: &PodManager, pod: &Pod, st: &mut State, grace: Duration) {
    let all = pod_containers(pm, &pod.metadata.uid).await;
    kill_running(pm, pod, &all, grace).await;
    for id in st.probed.drain() {
        pm.prober.remove(&id);
    }
}

/// Kills the running instances of `all` with `grace`: every preStop hook at once, then each
/// SIGTERM in the kubelet's termination order ([`actions::termination_order`]: sidecars after
/// the app containers, in reverse order), everything else in parallel.
async fn kill_running(pm: &PodManager, pod: &Pod, all: &[ContainerStatus], grace: Duration) {
    let specs = all_specs(pod);
    let running: Vec<&ContainerStatus> = all
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .collect();
    let names: Vec<&str> = running.iter().map(|l| l.name.as_str()).collect();
    let order = actions::termination_order(pod, &names);
    // One channel per container, closed once it has exited: what the others wait on.
    let exits: HashMap<&str, (async_channel::Sender<()>, async_channel::Receiver<()>)> = names
        .iter()
        .map(|n| (*n, async_channel::bounded(1)))
        .collect();
    let kills = running.iter().map(|l| {
        let spec = specs
            .iter()
            .find(|s| s.name == l.name)
            .map(|s| (*s).clone())
            .unwrap_or_default();
        let after: Vec<async_channel::Receiver<()>> = order
            .get(&l.name)
            .into_iter()
            .flatten()
            .filter_map(|n| exits.get(n.as_str()).map(|(_, rx)| rx.clone()))
            .collect();
        let exited = exits.get(l.name.as_str()).map(|(tx, _)| tx.clone());
        async move {
            kill_container(pm, pod, &spec, l, grace, None, &after).await;
            if let Some(tx) = exited {
                tx.close();
            }
        }
    });
    join_all(kills.map(Box::pin).collect()).await;
}

/// Stops whatever still runs and removes the pod's containers, sandbox and volumes (not its
/// logs, not its status).
async fn stop_and_release(pm: &PodManager, pod: &Pod, st: &mut State, grace: Duration) {
    let name = pod_name(pod);
    kill_all(pm, pod, st, grace).await;
    let all = pod_containers(pm, &pod.metadata.uid).await;
    let rt = pm.runtime.clone();
    let uid = pod.metadata.uid.clone();
    let ids: Vec<String> = all.iter().map(|c| c.id.clone()).collect();
    let r = smol::unblock(move || -> crate::runtime::Result<()> {
        rt.stop_pod_sandbox(&uid, Duration::ZERO)?;
        for id in ids {
            rt.remove_container(&id)?;
        }
        rt.remove_pod_sandbox(&uid)
    })
    .await;
    if let Err(e) = r {
        tracing::error!(pod = %name, error = %e, "cannot remove the evicted pod's containers");
    }
    st.sandbox = None;
    let vols = pm.volumes.clone();
    let uid = pod.metadata.uid.clone();
    if let Err(e) = smol::unblock(move || vols.teardown(&uid)).await {
        tracing::error!(pod = %name, error = %e, "cannot release the evicted pod's volumes");
    }
    st.volumes = None;
}

/// Stops everything of the pod and releases it: preStop hooks, SIGTERM, the grace period,
/// SIGKILL; then containers, sandbox, volumes and logs go.
async fn terminate(pm: &PodManager, pod: &Pod, st: &mut State) {
    let name = pod_name(pod);
    let grace = grace(pod);
    tracing::info!(pod = %name, grace_seconds = grace.as_secs(), "stopping pod");
    let all = pod_containers(pm, &pod.metadata.uid).await;
    // Every container gets the whole grace period, sidecars stopping last.
    kill_running(pm, pod, &all, grace).await;
    for id in st.probed.drain() {
        pm.prober.remove(&id);
    }
    // The status says so before the teardown: containers terminated, no address (it is
    // released next). A static pod written again meanwhile keeps its uid and must not show
    // this incarnation running (nor, in `edged get`, while the new one starts).
    let stopped = pod_containers(pm, &pod.metadata.uid).await;
    st.sandbox = None;
    // A pod that never ran here (sent down again after its delete was confirmed, as the cloud
    // does for one a finalizer keeps) gets no status: one made now would say Pending over
    // the terminated one the cloud has.
    if !all.is_empty() || pm.status.get(&pod.metadata.uid).is_some() {
        st.terminal = true;
        set_status(pm, pod, st, &stopped).await;
    }
    let rt = pm.runtime.clone();
    let uid = pod.metadata.uid.clone();
    let ids: Vec<String> = all.iter().map(|c| c.id.clone()).collect();
    let r = smol::unblock(move || -> crate::runtime::Result<()> {
        rt.stop_pod_sandbox(&uid, Duration::ZERO)?;
        for id in ids {
            rt.remove_container(&id)?;
        }
        rt.remove_pod_sandbox(&uid)
    })
    .await;
    if let Err(e) = r {
        tracing::error!(pod = %name, error = %e, "cannot remove the pod's containers; housekeeping retries");
    }
    let vols = pm.volumes.clone();
    let uid = pod.metadata.uid.clone();
    if let Err(e) = smol::unblock(move || vols.teardown(&uid)).await {
        tracing::error!(pod = %name, error = %e, "cannot release the pod's volumes; housekeeping retries");
    }
    pm.tokens.remove_pod(&pod.metadata.uid).await;
    let log_dir = kuberuntime::pod_log_dir_name(pod);
    if let Err(e) = crate::paths::remove_dir_all_under(&pm.cfg.log_dir, &log_dir) {
        tracing::error!(pod = %name, dir = %log_dir, error = %e, "pod log directory not removed");
    }
    tracing::info!(pod = %name, "pod stopped and removed");
}

/// Every container of the pod: init, regular and ephemeral ones.
fn all_specs(pod: &Pod) -> Vec<&Container> {
    let spec = &pod.spec;
    let ephemeral = spec.ephemeral_containers.iter().map(|e| &e.container);
    spec.init_containers
        .iter()
        .chain(&spec.containers)
        .chain(ephemeral)
        .collect()
}

/// Runs futures side by side until all are done (smol has no `join_all`).
async fn join_all<F: std::future::Future<Output = ()> + Unpin>(mut futs: Vec<F>) {
    std::future::poll_fn(|cx| {
        futs.retain_mut(|f| std::pin::Pin::new(f).poll(cx).is_pending());
        if futs.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests;
