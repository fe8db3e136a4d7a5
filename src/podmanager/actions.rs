//! The decision half of a pod sync, as the kubelet's `computePodActions`: from the pod's spec,
//! the instances the runtime holds, the probe results, the crash-loop back-off and the time,
//! [`compute_pod_actions`] says what to do, as data ([`PodActions`]). The worker carries the
//! actions out in order (`worker::execute`); nothing here calls the runtime, so every decision
//! is table-tested without root, a shim or a real clock.
//!
//! [`disposition`] is the decision before it: whether the pod is stopped (deleted), evicted
//! (by the eviction manager or past `activeDeadlineSeconds`), left alone (evicted before), or
//! synced.

use super::{ephemeral, unknown};
use crate::api::reason::Reason;
use crate::api::{self, Container, Pod};
use crate::eviction::Eviction;
use crate::kuberuntime::{self, instances::latest};
use crate::prober::ProbeKind;
use crate::runtime::{labels, ContainerState, ContainerStatus, Sandbox};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

/// The kubelet's crash-loop back-off: 10 s doubling to 5 min, forgotten after 10 min quiet.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest crash-loop back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that has not restarted for this long starts its back-off again at
/// [`BACKOFF_INITIAL`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How soon a pod is looked at again after a container was killed to be restarted (its exit
/// is then seen and its restart decided).
pub const RESTART_RECHECK: Duration = Duration::from_millis(100);
/// How soon a pod is looked at again while a sidecar's startup probe has not passed.
pub const SIDECAR_RECHECK: Duration = Duration::from_millis(500);

/// The two clocks a decision reads: monotonic for the back-off, wall for the runtime's times.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Now, on the monotonic clock ([`Backoff`] times).
    pub mono: Instant,
    /// Now, on the wall clock (the runtime's started/finished times).
    pub wall: SystemTime,
}

impl Clock {
    /// The clocks as they read now.
    pub fn now() -> Self {
        Clock {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// Container name → (the current back-off delay, when the container was last restarted).
pub type Backoff = HashMap<String, (Duration, Instant)>;

/// Everything a decision reads besides the pod.
pub struct SyncView<'a> {
    /// Every instance of the pod's containers the runtime holds (all sandboxes).
    pub instances: &'a [ContainerStatus],
    /// The pod's current sandbox: init containers count only in it (a new sandbox, as after
    /// a reboot, runs them again).
    pub sandbox: Option<&'a Sandbox>,
    /// The last result of a container instance's probe (`None`: none yet, or no probe).
    pub probe: &'a dyn Fn(&str, ProbeKind) -> Option<bool>,
    /// The crash-loop back-off of each container.
    pub backoff: &'a Backoff,
    /// The pod's status as last reported (ephemeral containers that ran once).
    pub reported: Option<&'a api::PodStatus>,
    /// Now.
    pub now: Clock,
    /// When to look again if nothing sooner is due.
    pub resync: Duration,
}

/// One thing to do to the pod's containers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop instance `id` of `container`: its preStop hook, then SIGTERM, SIGKILL when `grace`
    /// runs out; the `Killing` event carries `message` (the kubelet's default without one).
    Kill {
        /// The container's name.
        container: String,
        /// The instance's id.
        id: String,
        /// The grace period of the kill.
        grace: Duration,
        /// Why, as the event says it.
        message: Option<String>,
        /// Why it is killed.
        why: KillReason,
    },
    /// Kill an instance whose state cannot be read before anything else ([`unknown`]).
    KillUnknown {
        /// The container's name.
        container: String,
        /// The instance's id.
        id: String,
    },
    /// Start an instance that was created but never started (the agent stopped in between).
    StartCreated {
        /// The container's name.
        container: String,
        /// The instance's id.
        id: String,
    },
    /// Create and start a new instance of `container` with restart count `attempt`.
    Start {
        /// The container's name (init, app or ephemeral).
        container: String,
        /// The restart count of the new instance.
        attempt: u32,
        /// The id of the running container whose PID namespace it joins (an ephemeral
        /// container's target).
        pid_target: Option<String>,
    },
    /// The container waits out its crash-loop back-off (CrashLoopBackOff, a BackOff event).
    BackOff {
        /// The container's name.
        container: String,
        /// The current back-off delay.
        delay: Duration,
    },
    /// The container cannot start yet; its waiting state says why.
    Wait {
        /// The container's name.
        container: String,
        /// The kubelet's waiting reason.
        reason: Reason,
        /// What to do about it.
        message: String,
    },
}

/// Why a running container is killed during a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillReason {
    /// Its spec changed: it is started again at once.
    SpecChanged,
    /// Its liveness probe failed: it restarts as its policy says.
    Liveness,
    /// Its startup probe failed past its budget.
    Startup,
    /// A sidecar, stopped as the pod's containers have ended for good.
    PodEnded,
}

impl KillReason {
    /// Whether the instance is killed to be restarted (its probes are dropped with it).
    pub fn restarts(self) -> bool {
        self != KillReason::PodEnded
    }

    /// The reason in the agent's log line.
    pub fn as_str(self) -> &'static str {
        match self {
            KillReason::SpecChanged => "its spec changed",
            KillReason::Liveness => "it failed its liveness probe",
            KillReason::Startup => "it failed its startup probe",
            KillReason::PodEnded => "the pod's containers have ended",
        }
    }
}

/// What a sync does: the actions in order, and when to look at the pod again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodActions {
    /// To do, in this order.
    pub actions: Vec<Action>,
    /// When to sync again if nothing wakes the worker sooner.
    pub wake: Duration,
}

impl PodActions {
    fn new(resync: Duration) -> Self {
        PodActions {
            actions: Vec::new(),
            wake: resync,
        }
    }

    fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    fn wake_within(&mut self, d: Duration) {
        self.wake = self.wake.min(d);
    }
}

/// The grace period a pod is stopped with: the delete's own, else the spec's.
pub fn grace(pod: &Pod) -> Duration {
    let s = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or_else(|| pod.spec.grace_period_seconds());
    Duration::from_secs(s.max(0) as u64)
}

/// The kubelet's termination order (`newTerminationOrdering`): for each running container of
/// a pod that has sidecars (init containers with `restartPolicy: Always`), the running
/// containers it must see exit before its own SIGTERM. Every container's preStop hook runs at
/// once; a sidecar is then stopped only after every app container, and after the sidecars
/// declared after it (sidecars stop in reverse order), so a hook can still reach the sidecars
/// it talks through. The wait is bounded by the container's grace period. A pod without
/// sidecars has no order (everything stops in parallel); a container absent from the map
/// waits for nothing.
pub fn termination_order(pod: &Pod, running: &[&str]) -> HashMap<String, Vec<String>> {
    let mut order = HashMap::new();
    let sidecars: Vec<&str> = pod
        .spec
        .init_containers
        .iter()
        .filter(|c| api::restart::is_sidecar(c))
        .map(|c| c.name.as_str())
        .collect();
    if sidecars.is_empty() {
        return order;
    }
    let apps: Vec<String> = pod
        .spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| running.contains(n))
        .map(str::to_string)
        .collect();
    for (i, side) in sidecars.iter().enumerate() {
        if !running.contains(side) {
            continue;
        }
        let mut after = apps.clone();
        after.extend(
            sidecars[i + 1..]
                .iter()
                .filter(|n| running.contains(n))
                .map(|n| n.to_string()),
        );
        order.insert(side.to_string(), after);
    }
    order
}

/// Whether container `c`, ended with `exit_code`, starts again ([`api::restart`]); an exit
/// code never learnt counts as 137, as the kubelet reports such a container.
pub fn restarts(pod: &Pod, c: &Container, exit_code: Option<i32>) -> bool {
    api::restart::should_restart(&pod.spec, c, exit_code.unwrap_or(137))
}

/// Why running container `c` (instance `l`, an app container or a sidecar) is killed for its
/// probes, if it is: liveness failed, or the startup probe failed past its budget. With the
/// kill's message and grace period (the failed probe's own terminationGracePeriodSeconds
/// over the pod's).
fn probe_failure(
    pod: &Pod,
    view: &SyncView<'_>,
    c: &Container,
    l: &ContainerStatus,
    probe: &dyn Fn(&str, ProbeKind) -> Option<bool>,
) -> Option<(KillReason, String, Duration)> {
    let (why, what, spec) = if probe(&l.id, ProbeKind::Liveness) == Some(false) {
        (
            KillReason::Liveness,
            "failed liveness probe",
            c.liveness_probe.as_ref(),
        )
    } else if c.startup_probe.is_some()
        && probe(&l.id, ProbeKind::Startup) == Some(false)
        && startup_expired(c, l, view.now.wall)
    {
        (
            KillReason::Startup,
            "failed startup probe",
            c.startup_probe.as_ref(),
        )
    } else {
        return None;
    };
    let kill_grace = spec
        .and_then(|p| p.termination_grace_period_seconds)
        .map_or_else(|| grace(pod), |s| Duration::from_secs(s.max(0) as u64));
    Some((why, restart_message(c, what), kill_grace))
}

/// A startup probe that failed past its budget (failureThreshold × period after the delay).
fn startup_expired(c: &Container, l: &ContainerStatus, now: SystemTime) -> bool {
    let Some(p) = &c.startup_probe else {
        return false;
    };
    let budget =
        Duration::from_secs((p.initial_delay() + p.failure_threshold() * p.period()) as u64);
    l.started_at
        .and_then(|s| now.duration_since(s).ok())
        .is_some_and(|d| d >= budget)
}

/// `Some((wait, delay))` when container `name`, whose latest instance is `l`, must wait before
/// it restarts. A back-off last moved more than [`BACKOFF_RESET`] ago is forgotten.
fn in_backoff(
    backoff: &Backoff,
    name: &str,
    l: &ContainerStatus,
    now: Clock,
) -> Option<(Duration, Duration)> {
    let (delay, at) = *backoff.get(name)?;
    if now.mono.saturating_duration_since(at) > BACKOFF_RESET {
        return None;
    }
    let finished = l.finished_at.unwrap_or(now.wall);
    let since = now.wall.duration_since(finished).unwrap_or_default();
    (since < delay).then(|| (delay - since, delay))
}

/// The back-off after one more restart of `name` at `now`: [`BACKOFF_INITIAL`], doubling up
/// to [`BACKOFF_MAX`], from the start again after [`BACKOFF_RESET`] without one.
pub fn next_backoff(backoff: &Backoff, name: &str, now: Instant) -> Duration {
    match backoff.get(name) {
        Some((d, at)) if now.saturating_duration_since(*at) <= BACKOFF_RESET => {
            (*d * 2).min(BACKOFF_MAX)
        }
        _ => BACKOFF_INITIAL,
    }
}

fn spec_changed(l: &ContainerStatus, c: &Container) -> bool {
    l.labels
        .get(labels::CONTAINER_HASH)
        .is_some_and(|h| !kuberuntime::hash_matches(h, c))
}

fn restart_message(c: &Container, why: &str) -> String {
    format!("Container {} {why}, will be restarted", c.name)
}

/// What to do to the pod's containers now (the pod is neither deleted nor evicted): the
/// kubelet's `computePodActions`.
///
/// - A pod whose app containers have all ended for good, or whose init container failed for
///   good, is done: only its running sidecars are stopped.
/// - Ephemeral containers that never ran start first (a debugger can join a pod whose init
///   containers fail).
/// - Init containers run in order, each to success, in the current sandbox; a sidecar
///   (`restartPolicy: Always`) runs on, and the next one starts once it has started. One init
///   step per sync.
/// - App containers: a missing one starts; a running one whose spec changed, or whose liveness
///   (or expired startup) probe failed, is killed (and, for a spec change, started again at
///   once); an ended one starts again if its restart policy says so, after its back-off; one
///   in the Unknown state is killed first.
pub fn compute_pod_actions(pod: &Pod, view: &SyncView<'_>) -> PodActions {
    let mut out = PodActions::new(view.resync);
    let all = view.instances;
    let probe = view.probe;
    let all_terminal = !pod.spec.containers.is_empty()
        && pod.spec.containers.iter().all(|c| {
            latest(all, &c.name).is_some_and(|l| {
                l.state == ContainerState::Exited && !restarts(pod, c, l.exit_code)
            })
        });
    let init_failed = pod.spec.init_containers.iter().any(|c| {
        latest(all, &c.name).is_some_and(|l| {
            l.state == ContainerState::Exited
                && l.exit_code != Some(0)
                && !restarts(pod, c, l.exit_code)
        })
    });
    if all_terminal || init_failed {
        // Succeeded or Failed: nothing runs again, not even in a new sandbox after a reboot;
        // sidecars still running are stopped (the kubelet ends them with the pod's work).
        for c in pod
            .spec
            .init_containers
            .iter()
            .filter(|c| api::restart::is_sidecar(c))
        {
            if let Some(l) = latest(all, &c.name).filter(|l| l.state == ContainerState::Running) {
                out.push(Action::Kill {
                    container: c.name.clone(),
                    id: l.id.clone(),
                    grace: grace(pod),
                    message: None,
                    why: KillReason::PodEnded,
                });
            }
        }
        return out;
    }
    for (ec, plan) in ephemeral::to_start(&pod.spec, all, view.reported) {
        let container = ec.container.name.clone();
        out.push(match plan {
            ephemeral::Plan::Start { pid_target } => Action::Start {
                container,
                attempt: 0,
                pid_target,
            },
            ephemeral::Plan::Wait(message) => Action::Wait {
                container,
                reason: Reason::CreateContainerConfigError,
                message,
            },
        });
    }
    if !init_actions(pod, view, &mut out) {
        return out;
    }
    for c in &pod.spec.containers {
        app_actions(pod, view, c, probe, &mut out);
    }
    out
}

/// The init containers' step; `true` when they are all done (or started, for sidecars) and
/// the app containers' turn has come.
fn init_actions(pod: &Pod, view: &SyncView<'_>, out: &mut PodActions) -> bool {
    let all = view.instances;
    let current: Vec<ContainerStatus> = match view.sandbox {
        Some(sb) => all
            .iter()
            .filter(|c| kuberuntime::in_sandbox(c, sb))
            .cloned()
            .collect(),
        None => all.to_vec(),
    };
    for c in &pod.spec.init_containers {
        let sidecar = api::restart::is_sidecar(c);
        let start = |attempt| Action::Start {
            container: c.name.clone(),
            attempt,
            pid_target: None,
        };
        match latest(&current, &c.name) {
            Some(l) if sidecar && l.state == ContainerState::Running => {
                if let Some((why, message, kill_grace)) = probe_failure(pod, view, c, l, view.probe)
                {
                    out.push(Action::Kill {
                        container: c.name.clone(),
                        id: l.id.clone(),
                        grace: kill_grace,
                        message: Some(message),
                        why,
                    });
                    out.wake_within(RESTART_RECHECK);
                    return false;
                }
                let started = c.startup_probe.is_none()
                    || (view.probe)(&l.id, ProbeKind::Startup) == Some(true);
                if started {
                    continue;
                }
                out.wake_within(SIDECAR_RECHECK);
                return false;
            }
            Some(l) if !sidecar && l.state == ContainerState::Exited && l.exit_code == Some(0) => {
                continue
            }
            Some(l) if l.state == ContainerState::Running => return false,
            Some(l) if l.state == ContainerState::Created => {
                out.push(Action::StartCreated {
                    container: c.name.clone(),
                    id: l.id.clone(),
                });
                return false;
            }
            Some(l) if l.state == ContainerState::Unknown => {
                out.push(Action::KillUnknown {
                    container: c.name.clone(),
                    id: l.id.clone(),
                });
                out.wake_within(unknown::RECHECK);
                return false;
            }
            Some(l) => {
                if restarts(pod, c, l.exit_code) {
                    match in_backoff(view.backoff, &c.name, l, view.now) {
                        Some((wait, delay)) => {
                            out.push(Action::BackOff {
                                container: c.name.clone(),
                                delay,
                            });
                            // The back-off ends before any resync.
                            out.wake = wait;
                        }
                        None => out.push(start(l.attempt + 1)),
                    }
                }
                // Otherwise the pod has failed.
                return false;
            }
            None => {
                // The restart count goes on from the instances of earlier sandboxes.
                let attempt = latest(all, &c.name).map_or(0, |l| l.attempt + 1);
                out.push(start(attempt));
                return false;
            }
        }
    }
    true
}

/// The actions for app container `c`.
fn app_actions(
    pod: &Pod,
    view: &SyncView<'_>,
    c: &Container,
    probe: &dyn Fn(&str, ProbeKind) -> Option<bool>,
    out: &mut PodActions,
) {
    let start = |attempt| Action::Start {
        container: c.name.clone(),
        attempt,
        pid_target: None,
    };
    let Some(l) = latest(view.instances, &c.name) else {
        out.push(start(0));
        return;
    };
    match l.state {
        ContainerState::Running => {
            let changed = spec_changed(l, c);
            // The first reason wins.
            let (why, message, kill_grace) = if changed {
                (
                    KillReason::SpecChanged,
                    restart_message(c, "definition changed"),
                    grace(pod),
                )
            } else if let Some(failed) = probe_failure(pod, view, c, l, probe) {
                failed
            } else {
                return;
            };
            out.push(Action::Kill {
                container: c.name.clone(),
                id: l.id.clone(),
                grace: kill_grace,
                message: Some(message),
                why,
            });
            if changed {
                // A changed spec starts again at once, without back-off.
                out.push(start(l.attempt + 1));
            } else if restarts(pod, c, Some(1)) {
                out.wake_within(RESTART_RECHECK);
            }
        }
        ContainerState::Created => out.push(Action::StartCreated {
            container: c.name.clone(),
            id: l.id.clone(),
        }),
        ContainerState::Exited | ContainerState::Unknown => {
            let changed = spec_changed(l, c);
            match unknown::not_running(l.state, restarts(pod, c, l.exit_code), changed) {
                unknown::Action::Leave => {}
                unknown::Action::KillFirst => {
                    out.push(Action::KillUnknown {
                        container: c.name.clone(),
                        id: l.id.clone(),
                    });
                    out.wake_within(unknown::RECHECK);
                }
                unknown::Action::Start => {
                    let backoff = if changed {
                        None
                    } else {
                        in_backoff(view.backoff, &c.name, l, view.now)
                    };
                    match backoff {
                        Some((wait, delay)) => {
                            out.push(Action::BackOff {
                                container: c.name.clone(),
                                delay,
                            });
                            out.wake_within(wait);
                        }
                        None => out.push(start(l.attempt + 1)),
                    }
                }
            }
        }
    }
}

/// What becomes of a pod at the top of its worker's loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Disposition {
    /// Deleted (by the source, or gracefully by the cloud): stop everything and release it.
    Terminate,
    /// Stop it and report it Failed for this reason (evicted, or past its deadline); nothing
    /// of it runs again.
    Evict(Eviction),
    /// Evicted before: nothing runs; wait for the delete.
    Idle,
    /// Sync it; with an `activeDeadlineSeconds`, look again when it runs out at the latest.
    Sync {
        /// Time left before `activeDeadlineSeconds`.
        deadline_in: Option<Duration>,
    },
}

/// The pod's [`Disposition`]: `deleted` when the source removed it, `evicted` when it was
/// evicted before, `evict` an eviction asked for now, `started` when the pod started.
pub fn disposition(
    pod: &Pod,
    deleted: bool,
    evicted: bool,
    evict: Option<Eviction>,
    started: SystemTime,
    now: SystemTime,
) -> Disposition {
    if deleted || pod.metadata.deletion_timestamp.is_some() {
        return Disposition::Terminate;
    }
    if evicted {
        return Disposition::Idle;
    }
    if let Some(e) = evict {
        return Disposition::Evict(e);
    }
    match crate::eviction::past_deadline(pod, started, now) {
        Ok(Some(e)) => Disposition::Evict(e),
        Ok(None) => Disposition::Sync { deadline_in: None },
        Err(left) => Disposition::Sync { deadline_in: left },
    }
}

#[cfg(test)]
mod tests;
