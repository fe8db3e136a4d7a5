//! A [`Runtime`] in memory for unit tests (as the kubelet's
//! `pkg/kubelet/container/testing/fake_runtime.go`): sandboxes and containers are entries in
//! a map, every call that changes something is logged ([`FakeRuntime::calls`]), and a test
//! scripts what happens: the next create or start fails with a given [`RuntimeError`], a
//! container exits with a code when it starts or when told ([`FakeRuntime::exit`], which
//! also sends its [`ExitEvent`]), an exec answers what the test set. Times come from a
//! [`Clock`], the test's [`ManualClock`](crate::clock::ManualClock) when there is one.
//!
//! [`FakeImages`] is the [`RootfsProvider`] beside it: every image is present unless the test
//! says otherwise. Both exist only in tests: the real-container tests (`tests/`) stay on the
//! shim.

use super::{
    labels, AttachIo, ContainerConfig, ContainerState, ContainerStatus, ErrorKind, ExecIo,
    ExecResult, ExecSpec, ExitEvent, ImageSpec, PodSandboxConfig, Result, RootfsMount,
    RootfsProvider, Runtime, RuntimeError, Sandbox, Stage,
};
use crate::clock::{SharedClock, SystemClock};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A call that changed (or tried to change) the fake runtime, as the tests assert on them.
/// Reads (lists, statuses, version) are not logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `run_pod_sandbox`.
    RunPodSandbox {
        /// The pod's uid.
        pod_uid: String,
    },
    /// `stop_pod_sandbox`.
    StopPodSandbox {
        /// The pod's uid.
        pod_uid: String,
    },
    /// `remove_pod_sandbox`.
    RemovePodSandbox {
        /// The pod's uid.
        pod_uid: String,
    },
    /// `create_container`.
    CreateContainer {
        /// The pod's uid.
        pod_uid: String,
        /// The container's name in the pod spec.
        name: String,
        /// The restart count the instance is made with.
        attempt: u32,
    },
    /// `start_container`.
    StartContainer {
        /// The instance.
        id: String,
        /// The container's name in the pod spec.
        name: String,
    },
    /// `stop_container`.
    StopContainer {
        /// The instance.
        id: String,
        /// The container's name in the pod spec.
        name: String,
        /// The grace period given.
        grace: Duration,
    },
    /// `remove_container`.
    RemoveContainer {
        /// The instance.
        id: String,
        /// The container's name in the pod spec.
        name: String,
    },
    /// `exec_sync`.
    ExecSync {
        /// The instance.
        id: String,
        /// The container's name in the pod spec.
        name: String,
        /// The command run.
        cmd: Vec<String>,
    },
}

impl Call {
    /// The container name a container call is about (`None` for sandbox calls).
    pub fn container(&self) -> Option<&str> {
        match self {
            Call::CreateContainer { name, .. }
            | Call::StartContainer { name, .. }
            | Call::StopContainer { name, .. }
            | Call::RemoveContainer { name, .. }
            | Call::ExecSync { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// A call [`FakeRuntime::hold`] can stop half way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// `run_pod_sandbox`: the sandbox and its network being made.
    RunPodSandbox,
    /// `remove_pod_sandbox`: the sandbox and its network being torn down.
    RemovePodSandbox,
}

#[derive(Default)]
struct State {
    next_id: u64,
    sandboxes: BTreeMap<String, Sandbox>,
    /// By id; `seq` keeps creation order.
    containers: HashMap<String, (u64, ContainerStatus)>,
    calls: Vec<(Instant, Call)>,
    fail_create: VecDeque<RuntimeError>,
    fail_start: VecDeque<RuntimeError>,
    fail_sandbox: VecDeque<RuntimeError>,
    /// Container name → the exit code its instances end with as soon as they start.
    exit_on_start: HashMap<String, i32>,
    /// Container name → what an exec in it answers (default: exit 0, no output).
    exec: HashMap<String, Result<ExecResult>>,
}

/// The in-memory [`Runtime`]; see the module docs.
pub struct FakeRuntime {
    clock: SharedClock,
    state: Mutex<State>,
    exits_tx: async_channel::Sender<ExitEvent>,
    exits_rx: async_channel::Receiver<ExitEvent>,
    /// The sandbox calls held: each waits (after logging its call) while it is in the set.
    held: (Mutex<Vec<Held>>, std::sync::Condvar),
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    /// An empty runtime on the real clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::shared())
    }

    /// An empty runtime whose times (created, started, finished, the call log) come from
    /// `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        let (exits_tx, exits_rx) = async_channel::unbounded();
        FakeRuntime {
            clock,
            state: Mutex::new(State::default()),
            exits_tx,
            exits_rx,
            held: (Mutex::new(Vec::new()), std::sync::Condvar::new()),
        }
    }

    /// `call`s from now on wait (logged) until [`release`](Self::release): what a pod shows
    /// while its sandbox and network are being made, or torn down.
    pub fn hold(&self, call: Held) {
        self.held
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call);
    }

    /// Lets held and later `call`s go on.
    pub fn release(&self, call: Held) {
        self.held
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| *c != call);
        self.held.1.notify_all();
    }

    /// Waits while `call` is held.
    fn wait_held(&self, call: Held) {
        let mut held = self.held.0.lock().unwrap_or_else(|p| p.into_inner());
        while held.contains(&call) {
            held = self.held.1.wait(held).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, st: &mut State, call: Call) {
        st.calls.push((self.clock.now_mono(), call));
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.iter().map(|(_, c)| c.clone()).collect()
    }

    /// The calls so far, each with when (on the runtime's clock) it was made.
    pub fn timed_calls(&self) -> Vec<(Instant, Call)> {
        self.lock().calls.clone()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// The next `create_container` fails with `e` (placed at [`Stage::Create`] unless it
    /// has a stage); failures queue up, one per call.
    pub fn fail_next_create(&self, e: RuntimeError) {
        self.lock().fail_create.push_back(e.during(Stage::Create));
    }

    /// The next `start_container` fails with `e` (placed at [`Stage::Start`] unless it has
    /// a stage); the container stays created.
    pub fn fail_next_start(&self, e: RuntimeError) {
        self.lock().fail_start.push_back(e.during(Stage::Start));
    }

    /// The next `run_pod_sandbox` fails with `e`.
    pub fn fail_next_sandbox(&self, e: RuntimeError) {
        self.lock().fail_sandbox.push_back(e);
    }

    /// Every instance of container `name` started from now on exits with `code` at once
    /// (`None`: they run until stopped or [`exit`](Self::exit)ed).
    pub fn exit_on_start(&self, name: &str, code: Option<i32>) {
        let mut st = self.lock();
        match code {
            Some(c) => st.exit_on_start.insert(name.to_string(), c),
            None => st.exit_on_start.remove(name),
        };
    }

    /// What `exec_sync` in container `name` answers from now on.
    pub fn set_exec(&self, name: &str, result: Result<ExecResult>) {
        self.lock().exec.insert(name.to_string(), result);
    }

    /// The running instance `id` exits now with `code` (its exit event is sent).
    pub fn exit(&self, id: &str, code: i32) -> Result<()> {
        let mut st = self.lock();
        let (_, c) = st
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found(id, "exit"))?;
        if c.state != ContainerState::Running {
            return Err(RuntimeError::new(
                id,
                "exit",
                ErrorKind::Other,
                "container is not running",
            ));
        }
        self.end(c, code);
        Ok(())
    }

    /// Ends a running container with `code` and sends its exit event.
    fn end(&self, c: &mut ContainerStatus, code: i32) {
        let at = self.clock.now_wall();
        c.state = ContainerState::Exited;
        c.pid = None;
        c.finished_at = Some(at);
        c.exit_code = Some(code);
        c.reason = Some(if code == 0 { "Completed" } else { "Error" }.into());
        let _ = self.exits_tx.try_send(ExitEvent {
            container_id: c.id.clone(),
            exit_code: code,
            at,
        });
    }

    /// Every container, in creation order.
    pub fn containers(&self) -> Vec<ContainerStatus> {
        let st = self.lock();
        let mut all: Vec<&(u64, ContainerStatus)> = st.containers.values().collect();
        all.sort_by_key(|(seq, _)| *seq);
        all.into_iter().map(|(_, c)| c.clone()).collect()
    }

    /// The instances of container `name` of any pod, oldest first.
    pub fn instances(&self, name: &str) -> Vec<ContainerStatus> {
        self.containers()
            .into_iter()
            .filter(|c| c.name == name)
            .collect()
    }

    /// Uids of the pods with a sandbox.
    pub fn sandbox_uids(&self) -> Vec<String> {
        self.lock().sandboxes.keys().cloned().collect()
    }
}

fn not_found(id: &str, op: &str) -> RuntimeError {
    RuntimeError::new(id, op, ErrorKind::NotFound, "no such container")
}

fn unsupported(id: &str, op: &str) -> RuntimeError {
    RuntimeError::new(
        id,
        op,
        ErrorKind::Other,
        "not supported by the fake runtime",
    )
}

impl Runtime for FakeRuntime {
    fn version(&self) -> Result<String> {
        Ok("fake 0".into())
    }

    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<Sandbox> {
        {
            let mut st = self.lock();
            self.log(
                &mut st,
                Call::RunPodSandbox {
                    pod_uid: config.uid.clone(),
                },
            );
        }
        self.wait_held(Held::RunPodSandbox);
        let mut st = self.lock();
        if let Some(e) = st.fail_sandbox.pop_front() {
            return Err(e);
        }
        if let Some(s) = st.sandboxes.get(&config.uid) {
            return Ok(s.clone());
        }
        let n = st.sandboxes.len() + 2;
        let ip = format!("10.88.0.{n}");
        let s = Sandbox {
            uid: config.uid.clone(),
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            netns: None,
            ip: Some(ip.clone()),
            ips: vec![ip],
            ready: true,
            created_at: self.clock.now_wall(),
        };
        st.sandboxes.insert(config.uid.clone(), s.clone());
        Ok(s)
    }

    fn stop_pod_sandbox(&self, pod_uid: &str, grace: Duration) -> Result<()> {
        let mut st = self.lock();
        self.log(
            &mut st,
            Call::StopPodSandbox {
                pod_uid: pod_uid.into(),
            },
        );
        let _ = grace;
        for (_, c) in st.containers.values_mut() {
            if c.pod_uid == pod_uid && c.state == ContainerState::Running {
                self.end(c, 137);
            }
        }
        if let Some(s) = st.sandboxes.get_mut(pod_uid) {
            s.ready = false;
        }
        Ok(())
    }

    fn remove_pod_sandbox(&self, pod_uid: &str) -> Result<()> {
        {
            let mut st = self.lock();
            self.log(
                &mut st,
                Call::RemovePodSandbox {
                    pod_uid: pod_uid.into(),
                },
            );
        }
        self.wait_held(Held::RemovePodSandbox);
        let mut st = self.lock();
        st.containers.retain(|_, (_, c)| c.pod_uid != pod_uid);
        st.sandboxes.remove(pod_uid);
        Ok(())
    }

    fn list_pod_sandboxes(&self) -> Result<Vec<Sandbox>> {
        Ok(self.lock().sandboxes.values().cloned().collect())
    }

    fn create_container(&self, pod_uid: &str, config: &ContainerConfig) -> Result<String> {
        let mut st = self.lock();
        self.log(
            &mut st,
            Call::CreateContainer {
                pod_uid: pod_uid.into(),
                name: config.name.clone(),
                attempt: config.attempt,
            },
        );
        if let Some(e) = st.fail_create.pop_front() {
            return Err(e);
        }
        if !st.sandboxes.contains_key(pod_uid) {
            return Err(RuntimeError::new(
                pod_uid,
                "create",
                ErrorKind::NotFound,
                "no such sandbox",
            )
            .during(Stage::Create));
        }
        st.next_id += 1;
        let seq = st.next_id;
        let id = format!("fake{seq:04}");
        let mut labels = config.labels.clone();
        labels
            .entry(labels::POD_UID.into())
            .or_insert_with(|| pod_uid.into());
        labels
            .entry(labels::CONTAINER_NAME.into())
            .or_insert_with(|| config.name.clone());
        let c = ContainerStatus {
            id: id.clone(),
            pod_uid: pod_uid.into(),
            name: config.name.clone(),
            attempt: config.attempt,
            image: config.image.clone(),
            image_id: "sha256:fake".into(),
            state: ContainerState::Created,
            pid: None,
            created_at: self.clock.now_wall(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            log_path: config.log_path.clone(),
            labels,
        };
        st.containers.insert(id.clone(), (seq, c));
        Ok(id)
    }

    fn start_container(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        let name = st.containers.get(id).map(|(_, c)| c.name.clone());
        self.log(
            &mut st,
            Call::StartContainer {
                id: id.into(),
                name: name.clone().unwrap_or_default(),
            },
        );
        let Some(name) = name else {
            return Err(not_found(id, "start").during(Stage::Start));
        };
        if let Some(e) = st.fail_start.pop_front() {
            return Err(e);
        }
        let exit = st.exit_on_start.get(&name).copied();
        let Some((seq, c)) = st.containers.get_mut(id) else {
            return Err(not_found(id, "start").during(Stage::Start));
        };
        if c.state != ContainerState::Created {
            return Err(RuntimeError::new(
                id,
                "start",
                ErrorKind::Other,
                format!("container is {:?}, not created", c.state),
            )
            .during(Stage::Start));
        }
        c.state = ContainerState::Running;
        c.pid = Some(1000 + *seq as u32);
        c.started_at = Some(self.clock.now_wall());
        if let Some(code) = exit {
            self.end(c, code);
        }
        Ok(())
    }

    fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let mut st = self.lock();
        let name = st.containers.get(id).map(|(_, c)| c.name.clone());
        self.log(
            &mut st,
            Call::StopContainer {
                id: id.into(),
                name: name.unwrap_or_default(),
                grace,
            },
        );
        let (_, c) = st
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found(id, "stop"))?;
        if c.state == ContainerState::Running {
            // SIGTERM ends it within a grace period; SIGKILL without one.
            self.end(c, if grace.is_zero() { 137 } else { 143 });
        }
        Ok(())
    }

    fn remove_container(&self, id: &str) -> Result<()> {
        let mut st = self.lock();
        let name = st.containers.get(id).map(|(_, c)| c.name.clone());
        self.log(
            &mut st,
            Call::RemoveContainer {
                id: id.into(),
                name: name.unwrap_or_default(),
            },
        );
        if st
            .containers
            .get(id)
            .is_some_and(|(_, c)| c.state == ContainerState::Running)
        {
            return Err(RuntimeError::new(
                id,
                "remove",
                ErrorKind::Other,
                "container is running",
            ));
        }
        st.containers.remove(id);
        Ok(())
    }

    fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        self.lock()
            .containers
            .get(id)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| not_found(id, "status"))
    }

    fn list_containers(&self) -> Result<Vec<ContainerStatus>> {
        Ok(self.containers())
    }

    fn list_pod_containers(&self, pod_uid: &str) -> Result<Vec<ContainerStatus>> {
        Ok(self
            .containers()
            .into_iter()
            .filter(|c| c.pod_uid == pod_uid)
            .collect())
    }

    fn exec_sync(&self, id: &str, cmd: &[String], _timeout: Duration) -> Result<ExecResult> {
        let mut st = self.lock();
        let c = st.containers.get(id).map(|(_, c)| c.clone());
        let name = c.as_ref().map(|c| c.name.clone()).unwrap_or_default();
        self.log(
            &mut st,
            Call::ExecSync {
                id: id.into(),
                name: name.clone(),
                cmd: cmd.to_vec(),
            },
        );
        match c {
            Some(c) if c.state == ContainerState::Running => {}
            Some(_) => {
                return Err(RuntimeError::new(
                    id,
                    "exec",
                    ErrorKind::Other,
                    "container is not running",
                ))
            }
            None => return Err(not_found(id, "exec")),
        }
        st.exec.get(&name).cloned().unwrap_or(Ok(ExecResult {
            exit_code: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }))
    }

    fn exec_start(&self, id: &str, _spec: &ExecSpec) -> Result<ExecIo> {
        Err(unsupported(id, "exec start"))
    }

    fn exec_resize(&self, id: &str, _exec_id: &str, _width: u16, _height: u16) -> Result<()> {
        Err(unsupported(id, "exec resize"))
    }

    fn exec_close_stdin(&self, id: &str, _exec_id: &str) -> Result<()> {
        Err(unsupported(id, "exec close stdin"))
    }

    fn exec_wait(&self, id: &str, _exec_id: &str, _timeout: Duration) -> Result<Option<i32>> {
        Err(unsupported(id, "exec wait"))
    }

    fn exec_remove(&self, _id: &str, _exec_id: &str) -> Result<()> {
        Ok(())
    }

    fn attach(&self, id: &str) -> Result<AttachIo> {
        Err(unsupported(id, "attach"))
    }

    fn exit_events(&self) -> async_channel::Receiver<ExitEvent> {
        self.exits_rx.clone()
    }
}

/// The image side for [`FakeRuntime`]: every image is present (an empty spec) unless
/// [`remove`](Self::remove)d; rootfs mounts are empty.
#[derive(Default)]
pub struct FakeImages {
    missing: Mutex<HashSet<String>>,
}

impl FakeImages {
    /// Every image present.
    pub fn new() -> Self {
        Self::default()
    }

    /// Image `reference` is not on the node from now on.
    pub fn remove(&self, reference: &str) {
        self.missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reference.to_string());
    }
}

impl RootfsProvider for FakeImages {
    fn image_spec(&self, reference: &str) -> Result<ImageSpec> {
        let missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        if missing.contains(reference) {
            return Err(RuntimeError::new(
                reference,
                "image spec",
                ErrorKind::NotFound,
                "no such image",
            ));
        }
        Ok(ImageSpec {
            id: format!("sha256:{:064x}", reference.len()),
            ..ImageSpec::default()
        })
    }

    fn prepare_rootfs(&self, _reference: &str, _container_id: &str) -> Result<Vec<RootfsMount>> {
        Ok(Vec::new())
    }

    fn release_rootfs(&self, _container_id: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn sandbox(uid: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            uid: uid.into(),
            namespace: "default".into(),
            name: "p".into(),
            ..PodSandboxConfig::default()
        }
    }

    fn config(name: &str) -> ContainerConfig {
        ContainerConfig {
            name: name.into(),
            ..ContainerConfig::default()
        }
    }

    #[test]
    fn containers_live_and_die_as_scripted() {
        let clock = ManualClock::new();
        let rt = FakeRuntime::with_clock(clock.shared());
        let exits = rt.exit_events();
        // No sandbox yet: a create is refused at the Create stage.
        let e = rt.create_container("u1", &config("a")).unwrap_err();
        assert_eq!((e.kind, e.stage), (ErrorKind::NotFound, Stage::Create));
        rt.run_pod_sandbox(&sandbox("u1")).unwrap();
        let a = rt.create_container("u1", &config("a")).unwrap();
        assert_eq!(
            rt.container_status(&a).unwrap().state,
            ContainerState::Created
        );
        rt.start_container(&a).unwrap();
        assert_eq!(
            rt.container_status(&a).unwrap().state,
            ContainerState::Running
        );
        clock.advance(Duration::from_secs(5));
        rt.exit(&a, 3).unwrap();
        let s = rt.container_status(&a).unwrap();
        assert_eq!((s.state, s.exit_code), (ContainerState::Exited, Some(3)));
        assert_eq!(
            s.finished_at
                .unwrap()
                .duration_since(s.started_at.unwrap())
                .ok(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(exits.try_recv().map(|e| e.exit_code), Ok(3));
        // Scripted: b exits as it starts; the next start of anything fails.
        rt.exit_on_start("b", Some(1));
        let b = rt.create_container("u1", &config("b")).unwrap();
        rt.start_container(&b).unwrap();
        assert_eq!(rt.container_status(&b).unwrap().exit_code, Some(1));
        rt.fail_next_start(RuntimeError::new("x", "start", ErrorKind::Other, "no"));
        let c = rt.create_container("u1", &config("c")).unwrap();
        assert_eq!(rt.start_container(&c).unwrap_err().stage, Stage::Start);
        assert_eq!(
            rt.container_status(&c).unwrap().state,
            ContainerState::Created
        );
        rt.remove_pod_sandbox("u1").unwrap();
        assert!(rt.containers().is_empty());
        let calls = rt.calls();
        assert_eq!(
            calls.first(),
            Some(&Call::CreateContainer {
                pod_uid: "u1".into(),
                name: "a".into(),
                attempt: 0
            })
        );
        assert_eq!(
            calls.last(),
            Some(&Call::RemovePodSandbox {
                pod_uid: "u1".into()
            })
        );
    }
}
