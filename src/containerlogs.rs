//! A container's logs as the kubelet serves them (`GetKubeletContainerLogs`), for `edged logs`
//! and the HTTP API's `/containerLogs` alike: which pod and container (from the store), which
//! instance (the newest, or with `previous` the one before it), its CRI log file under
//! `--pod-log-dir`, and whether it has ended (from the pod status in the store, which the
//! agent rewrites on every change). The file is read by [`crate::kuberuntime::logs`].
//!
//! Everything here reads files and the store only, so `edged logs` works beside a running
//! agent, and also while the agent is down (then `-f` cannot know the container ended and
//! follows until interrupted).

use crate::api::reason::Reason;
use crate::api::{self, Pod};
use crate::flags::LogsCmd;
use crate::kuberuntime::logs::{self, LogOptions, LogReader};
use crate::metamanager::{Store, Table};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why logs cannot be shown, and what kind of failure it is (the HTTP API's status code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsError {
    /// What kind of failure (the HTTP status to answer).
    pub kind: ErrorKind,
    /// What is wrong, for people.
    pub message: String,
}

/// The kind of a [`LogsError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such pod or container (404).
    NotFound,
    /// The request cannot be served as asked: no container named, nothing started yet, no
    /// previous instance (400).
    BadRequest,
    /// The store or a file could not be read (500).
    Internal,
}

impl fmt::Display for LogsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LogsError {}

fn fail(kind: ErrorKind, message: impl Into<String>) -> LogsError {
    LogsError {
        kind,
        message: message.into(),
    }
}

/// One container instance's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid (part of its log directory's name).
    pub uid: String,
    /// The container's name.
    pub container: String,
    /// The instance (its restart count).
    pub attempt: u32,
    /// Its live log file, `<dir>/<ns>_<pod>_<uid>/<container>/<attempt>.log`.
    pub log_path: PathBuf,
}

/// The container to read: the one named, or the pod's only one. As kubectl, a pod with
/// several containers needs a name.
pub fn choose_container(pod: &Pod, name: Option<&str>) -> Result<String, LogsError> {
    let pod_name = &pod.metadata.name;
    let ephemeral = || pod.spec.ephemeral_containers.iter().map(|e| &e.container);
    let all = || {
        pod.spec
            .containers
            .iter()
            .chain(&pod.spec.init_containers)
            .chain(ephemeral())
    };
    match name {
        Some(n) if all().any(|c| c.name == n) => Ok(n.to_string()),
        Some(n) => Err(fail(
            ErrorKind::NotFound,
            format!("container \"{n}\" not found in pod \"{pod_name}\""),
        )),
        None if pod.spec.containers.len() == 1 => Ok(pod.spec.containers[0].name.clone()),
        None => {
            let names = |v: &[api::Container]| {
                v.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut m = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                names(&pod.spec.containers)
            );
            if !pod.spec.init_containers.is_empty() {
                m.push_str(&format!(
                    " or one of the init containers: [{}]",
                    names(&pod.spec.init_containers)
                ));
            }
            if !pod.spec.ephemeral_containers.is_empty() {
                let e: Vec<&str> = ephemeral().map(|c| c.name.as_str()).collect();
                m.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    e.join(" ")
                ));
            }
            Err(fail(ErrorKind::BadRequest, m))
        }
    }
}

/// The instance to read among the `attempts` whose log files exist: the newest, or with
/// `previous` the newest before it. `status` (the container's status) names why there is
/// none yet.
pub fn choose_attempt(
    attempts: &[u32],
    status: Option<&api::ContainerStatus>,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<u32, String> {
    let mut sorted = attempts.to_vec();
    sorted.sort_unstable();
    if previous {
        return match sorted.len() {
            n if n >= 2 => Ok(sorted[n - 2]),
            _ => Err(format!(
                "previous terminated container \"{container}\" in pod \"{pod}\" not found"
            )),
        };
    }
    sorted.last().copied().ok_or_else(|| {
        let reason = status
            .and_then(|s| s.state.waiting.as_ref())
            .and_then(|w| w.reason.clone())
            .unwrap_or_else(|| Reason::ContainerCreating.to_string());
        format!("container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}")
    })
}

/// Whether instance `attempt` has ended by the container's stored status: a newer instance
/// exists, or this one is terminated (or exited and waiting to restart). A status that does
/// not know this instance yet (written before it started) says it has not.
pub fn instance_ended(attempt: u32, status: Option<&api::ContainerStatus>) -> bool {
    let Some(s) = status else {
        return true;
    };
    let count = s.restart_count.max(0) as u32;
    if count != attempt {
        return count > attempt;
    }
    s.state.terminated.is_some()
        || s.state
            .waiting
            .as_ref()
            .is_some_and(|w| w.reason.as_deref() != Some(Reason::ContainerCreating.as_str()))
}

/// The attempts whose live log file is in `dir` (`<n>.log`).
fn attempts(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    name.to_str()?.strip_suffix(".log")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The stored pod `ns/name`.
fn stored_pod(store: &Store, ns: &str, name: &str) -> Result<Option<Pod>, LogsError> {
    let k = key(ns, name);
    let Some(v) = store
        .get(Table::Pod, &k)
        .map_err(|e| fail(ErrorKind::Internal, e.to_string()))?
    else {
        return Ok(None);
    };
    let mut pod: Pod = api::decode(&format!("Pod {k}"), &v)
        .map_err(|e| fail(ErrorKind::Internal, e.to_string()))?;
    if pod.metadata.namespace.is_empty() {
        pod.metadata.namespace = ns.to_string();
    }
    Ok(Some(pod))
}

/// The stored status of `ns/name` (a bare v1 PodStatus, or wrapped as `{"status": ...}`).
pub fn stored_status(store: &Store, ns: &str, name: &str) -> Option<api::PodStatus> {
    let v = store.get(Table::PodStatus, &key(ns, name)).ok()??;
    let v = match v.get("status") {
        Some(inner) if inner.is_object() && v.get("phase").is_none() => inner.clone(),
        _ => v,
    };
    serde_json::from_value(v).ok()
}

fn container_status<'a>(
    status: Option<&'a api::PodStatus>,
    name: &str,
) -> Option<&'a api::ContainerStatus> {
    let s = status?;
    s.container_statuses
        .iter()
        .chain(&s.init_container_statuses)
        .chain(&s.ephemeral_container_statuses)
        .find(|c| c.name == name)
}

/// Finds the log of a pod's container: `container` `None` for the pod's only one.
pub fn resolve(
    store: &Store,
    log_dir: &Path,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    previous: bool,
) -> Result<Target, LogsError> {
    let p = stored_pod(store, ns, pod)?.ok_or_else(|| {
        fail(
            ErrorKind::NotFound,
            format!("pod \"{pod}\" not found in namespace \"{ns}\""),
        )
    })?;
    let name = choose_container(&p, container)?;
    let dir = crate::kuberuntime::pod_log_dir(log_dir, &p).join(&name);
    let status = stored_status(store, ns, pod);
    let cs = container_status(status.as_ref(), &name);
    let found = attempts(&dir);
    let ran = cs.is_some_and(|c| {
        c.state.running.is_some()
            || c.state.terminated.is_some()
            || c.last_state.terminated.is_some()
    });
    if found.is_empty() && ran {
        // It ran, yet no log is where we look: another --pod-log-dir than the agent's.
        return Err(fail(
            ErrorKind::Internal,
            format!(
                "container \"{name}\" in pod \"{pod}\" has run but has no log under {} (is --pod-log-dir the agent's?)",
                dir.display()
            ),
        ));
    }
    let attempt = choose_attempt(&found, cs, pod, &name, previous)
        .map_err(|m| fail(ErrorKind::BadRequest, m))?;
    Ok(Target {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        uid: p.metadata.uid.clone(),
        container: name.clone(),
        attempt,
        log_path: dir.join(format!("{attempt}.log")),
    })
}

impl Target {
    /// Whether this instance has ended, by the store: the pod gone (or replaced by another
    /// uid), or its status says so.
    pub fn ended(&self, store: &Store) -> bool {
        match stored_pod(store, &self.namespace, &self.pod) {
            Ok(Some(p)) if p.metadata.uid == self.uid => {}
            Ok(_) => return true,
            // The store cannot be read now: keep following.
            Err(_) => return false,
        }
        let status = stored_status(store, &self.namespace, &self.pod);
        instance_ended(
            self.attempt,
            container_status(status.as_ref(), &self.container),
        )
    }

    /// Starts reading this instance's log.
    pub fn open(&self, opts: LogOptions) -> Result<LogReader, LogsError> {
        LogReader::open(&self.log_path, opts).map_err(|e| {
            fail(
                ErrorKind::Internal,
                format!(
                    "cannot read the log of container \"{}\" in pod \"{}\": {e}",
                    self.container, self.pod
                ),
            )
        })
    }
}

/// `edged logs`' options as the reader's (`--since` and `--since-time` exclusive, as kubectl).
pub fn options(cmd: &LogsCmd, now: SystemTime) -> Result<LogOptions, String> {
    if cmd.since.is_some() && cmd.since_time.is_some() {
        return Err("at most one of --since or --since-time may be given".into());
    }
    let since = match (&cmd.since, &cmd.since_time) {
        (Some(d), _) => Some(now.checked_sub(d.0).unwrap_or(SystemTime::UNIX_EPOCH)),
        (_, Some(t)) => Some(
            api::parse_rfc3339(t)
                .ok_or_else(|| format!("--since-time: `{t}` is not an RFC 3339 time"))?,
        ),
        _ => None,
    };
    Ok(LogOptions {
        follow: cmd.follow,
        tail: (cmd.tail >= 0).then_some(cmd.tail as u64),
        since,
        timestamps: cmd.timestamps,
        limit_bytes: cmd.limit_bytes,
    })
}

/// Runs `edged logs` against the store under `root` and the logs under `log_dir`; returns
/// the exit code (2: bad usage, 1: nothing to show).
pub fn main(root: &Path, log_dir: &Path, cmd: &LogsCmd) -> i32 {
    let opts = match options(cmd, SystemTime::now()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("edged: {e}");
            return 2;
        }
    };
    let store = match Store::open_read_only(&root.join("meta")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edged: {e}");
            return 1;
        }
    };
    let ns = cmd.namespace.as_deref().unwrap_or("default");
    let run = || -> Result<(), LogsError> {
        let target = resolve(
            &store,
            log_dir,
            ns,
            &cmd.pod,
            cmd.container.as_deref(),
            cmd.previous,
        )?;
        let mut reader = target.open(opts)?;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match logs::copy(&mut reader, &mut out, || target.ended(&store)) {
            Ok(()) => Ok(()),
            // The reader went away (`| head`): not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(fail(ErrorKind::Internal, e.to_string())),
        }
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("edged: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str], init: &[&str]) -> Pod {
        let list = |v: &[&str]| -> Vec<serde_json::Value> {
            v.iter().map(|n| json!({"name": n, "image": "i"})).collect()
        };
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": list(containers), "initContainers": list(init)}
        }))
        .unwrap()
    }

    fn status(restarts: i32, state: serde_json::Value) -> api::ContainerStatus {
        serde_json::from_value(
            json!({"name": "app", "restartCount": restarts, "state": state,
            "ready": false, "image": "i", "imageID": ""}),
        )
        .unwrap()
    }

    #[test]
    fn container_choice() {
        assert_eq!(choose_container(&pod(&["a"], &[]), None).unwrap(), "a");
        let e = choose_container(&pod(&["a", "b"], &[]), None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert_eq!(
            e.message,
            "a container name must be specified for pod web, choose one of: [a b]"
        );
        let e = choose_container(&pod(&["a", "b"], &["i"]), None).unwrap_err();
        assert!(
            e.message
                .ends_with("choose one of: [a b] or one of the init containers: [i]"),
            "{e}"
        );
        assert_eq!(
            choose_container(&pod(&["a", "b"], &["i"]), Some("i")).unwrap(),
            "i"
        );
        let e = choose_container(&pod(&["a"], &[]), Some("x")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, "container \"x\" not found in pod \"web\"");
        // Ephemeral containers are read by name too, and listed when none is named.
        let mut p = pod(&["a", "b"], &[]);
        p.spec.ephemeral_containers =
            serde_json::from_value(json!([{"name": "dbg", "image": "i"}])).unwrap();
        assert_eq!(choose_container(&p, Some("dbg")).unwrap(), "dbg");
        let e = choose_container(&p, None).unwrap_err();
        assert!(
            e.message
                .ends_with("[a b] or one of the ephemeral containers: [dbg]"),
            "{e}"
        );
    }

    #[test]
    fn attempt_choice() {
        let waiting = status(
            0,
            json!({"waiting": {"reason": "CreateContainerConfigError"}}),
        );
        let cases: &[(&[u32], bool, Result<u32, &str>)] = &[
            (&[0], false, Ok(0)),
            (&[3, 2], false, Ok(3)),
            (&[3, 2], true, Ok(2)),
            // GC kept an older one only.
            (&[5, 1], true, Ok(1)),
            (
                &[0],
                true,
                Err("previous terminated container \"app\" in pod \"web\" not found"),
            ),
            (
                &[],
                false,
                Err("container \"app\" in pod \"web\" is waiting to start: CreateContainerConfigError"),
            ),
        ];
        for (attempts, previous, want) in cases {
            let got = choose_attempt(attempts, Some(&waiting), "web", "app", *previous);
            assert_eq!(got, want.map_err(str::to_string), "{attempts:?} {previous}");
        }
        assert!(choose_attempt(&[], None, "web", "app", false)
            .unwrap_err()
            .ends_with("waiting to start: ContainerCreating"));
    }

    #[test]
    fn ended_by_status() {
        let running = status(2, json!({"running": {}}));
        let crashloop = status(2, json!({"waiting": {"reason": "CrashLoopBackOff"}}));
        let creating = status(2, json!({"waiting": {"reason": "ContainerCreating"}}));
        let done = status(2, json!({"terminated": {"exitCode": 0}}));
        let cases = [
            (2, Some(&running), false),
            (1, Some(&running), true),
            // The status was written before instance 3 started.
            (3, Some(&running), false),
            (2, Some(&crashloop), true),
            (2, Some(&creating), false),
            (2, Some(&done), true),
            (2, None, true),
        ];
        for (attempt, s, want) in cases {
            assert_eq!(instance_ended(attempt, s), want, "{attempt} {s:?}");
        }
    }

    #[test]
    fn resolves_from_the_store_and_the_log_dir() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("meta")).unwrap();
        let logs = d.path().join("logs");
        let p = serde_json::to_value(pod(&["app"], &[])).unwrap();
        store.put(Table::Pod, "default/web", &p).unwrap();
        let e = resolve(&store, &logs, "default", "nope", None, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, "pod \"nope\" not found in namespace \"default\"");
        let e = resolve(&store, &logs, "default", "web", None, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        // Running by its status, but no log where we look.
        let s = json!({"phase": "Running", "containerStatuses": [
            {"name": "app", "restartCount": 1, "state": {"running": {}}, "ready": true,
             "image": "i", "imageID": ""}]});
        store.put(Table::PodStatus, "default/web", &s).unwrap();
        let e = resolve(&store, &logs, "default", "web", None, false).unwrap_err();
        assert!(e.message.contains("--pod-log-dir"), "{e}");
        store.delete(Table::PodStatus, "default/web").unwrap();
        let dir = logs.join("default_web_u1/app");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["0.log", "1.log", "1.log.20231114-221320"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let t = resolve(&store, &logs, "default", "web", None, false).unwrap();
        assert_eq!((t.attempt, t.log_path.clone()), (1, dir.join("1.log")));
        let prev = resolve(&store, &logs, "default", "web", Some("app"), true).unwrap();
        assert_eq!(prev.attempt, 0);
        // No status stored: ended; a running status of instance 1: not.
        assert!(t.ended(&store));
        let s = json!({"phase": "Running", "containerStatuses": [
            {"name": "app", "restartCount": 1, "state": {"running": {}}, "ready": true,
             "image": "i", "imageID": ""}]});
        store.put(Table::PodStatus, "default/web", &s).unwrap();
        assert!(!t.ended(&store));
        assert!(prev.ended(&store));
        store.delete(Table::Pod, "default/web").unwrap();
        assert!(t.ended(&store));
    }
}
