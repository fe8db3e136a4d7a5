//! `edged get pods|configmaps|secrets|node [NAME] [-n NS] [-o table|json|yaml]`: what the store
//! holds, read-only beside a running agent, printed as kubectl prints it.

use crate::api::reason::Reason;
use crate::api::{parse_rfc3339, PodStatus};
use crate::flags::GetCmd;
use crate::metamanager::{Store, Table};
use serde_json::{json, Value};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What `edged get` can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// `pods`, `pod`, `po`.
    Pods,
    /// `configmaps`, `configmap`, `cm`.
    ConfigMaps,
    /// `secrets`, `secret`.
    Secrets,
    /// `node`, `nodes`, `no`.
    Node,
}

impl What {
    const ACCEPTED: &'static str =
        "pods (pod, po), configmaps (configmap, cm), secrets (secret), node (nodes, no)";

    /// Parses the resource argument, kubectl's singular and short forms included.
    pub fn parse(s: &str) -> Option<What> {
        match s.to_ascii_lowercase().as_str() {
            "pods" | "pod" | "po" => Some(What::Pods),
            "configmaps" | "configmap" | "cm" => Some(What::ConfigMaps),
            "secrets" | "secret" => Some(What::Secrets),
            "node" | "nodes" | "no" => Some(What::Node),
            _ => None,
        }
    }

    fn table(self) -> Table {
        match self {
            What::Pods => Table::Pod,
            What::ConfigMaps => Table::ConfigMap,
            What::Secrets => Table::Secret,
            What::Node => Table::Node,
        }
    }

    /// kubectl's plural name, used in messages.
    fn plural(self) -> &'static str {
        match self {
            What::Pods => "pods",
            What::ConfigMaps => "configmaps",
            What::Secrets => "secrets",
            What::Node => "nodes",
        }
    }
}

/// How to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Columns, as kubectl prints them.
    Table,
    /// `-o wide`: pods also show IP, NODE, NOMINATED NODE and READINESS GATES.
    Wide,
    /// The object, or a `kind: List`, as JSON.
    Json,
    /// The same as YAML.
    Yaml,
}

impl Output {
    /// Parses `-o`.
    pub fn parse(s: &str) -> Option<Output> {
        match s {
            "table" | "" => Some(Output::Table),
            "wide" => Some(Output::Wide),
            "json" => Some(Output::Json),
            "yaml" => Some(Output::Yaml),
            _ => None,
        }
    }
}

/// An `edged get` failure and the exit code it means (2: bad usage, 1: nothing to show, 3: the
/// store is damaged).
#[derive(Debug)]
pub struct InspectError {
    /// The exit code.
    pub code: i32,
    /// What went wrong, for the user.
    pub message: String,
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InspectError {}

fn fail(code: i32, message: impl Into<String>) -> InspectError {
    InspectError {
        code,
        message: message.into(),
    }
}

/// Runs `edged get` for the store under `root` and prints to stdout; returns the exit code.
pub fn main(root: &Path, cmd: &GetCmd) -> i32 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(root, cmd, SystemTime::now(), &mut out) {
        Ok(()) => 0,
        Err(e) => {
            let _ = out.flush();
            eprintln!("edged: {e}");
            e.code
        }
    }
}

/// Runs `edged get` with `now` as the time ages are counted to, printing to `out`.
pub fn run(
    root: &Path,
    cmd: &GetCmd,
    now: SystemTime,
    out: &mut dyn Write,
) -> Result<(), InspectError> {
    let what = What::parse(&cmd.what).ok_or_else(|| {
        fail(
            2,
            format!("unknown resource `{}`: one of {}", cmd.what, What::ACCEPTED),
        )
    })?;
    let output = Output::parse(&cmd.output).ok_or_else(|| {
        fail(
            2,
            format!(
                "unknown output `{}`: one of table, wide, json, yaml",
                cmd.output
            ),
        )
    })?;
    let store = Store::open_read_only(&root.join("meta")).map_err(|e| {
        let code = if e.is_damage() {
            crate::metamanager::EXIT_STORE_DAMAGED
        } else {
            1
        };
        fail(code, e.to_string())
    })?;
    let objects = collect(&store, what, cmd).map_err(|e| fail(1, e))?;
    if objects.is_empty() {
        if let Some(name) = &cmd.name {
            return Err(fail(1, format!("{} \"{name}\" not found", what.plural())));
        }
    }
    let text = match output {
        Output::Table | Output::Wide => {
            if objects.is_empty() {
                eprintln!("No resources found.");
                return Ok(());
            }
            let all_ns = cmd.namespace.is_none() && what != What::Node;
            table(what, &objects, all_ns, now, output == Output::Wide)
        }
        Output::Json | Output::Yaml => {
            let doc = if cmd.name.is_some() && objects.len() == 1 {
                objects[0].clone()
            } else {
                json!({"apiVersion": "v1", "kind": "List", "items": objects,
                       "metadata": {"resourceVersion": ""}})
            };
            if output == Output::Json {
                let mut s =
                    serde_json::to_string_pretty(&doc).map_err(|e| fail(1, e.to_string()))?;
                s.push('\n');
                s
            } else {
                serde_yaml_ng::to_string(&doc).map_err(|e| fail(1, e.to_string()))?
            }
        }
    };
    out.write_all(text.as_bytes())
        .map_err(|e| fail(1, format!("cannot write the output: {e}")))
}

/// The objects asked for, in key order; pods merged with their stored status.
fn collect(store: &Store, what: What, cmd: &GetCmd) -> Result<Vec<Value>, String> {
    let rows = store.list(what.table()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (key, mut value) in rows {
        let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_string();
        if what != What::Node {
            if let Some(want) = &cmd.namespace {
                if want != ns {
                    continue;
                }
            }
        }
        if cmd.name.as_ref().is_some_and(|n| *n != name) {
            continue;
        }
        if what == What::Pods {
            if let Some(status) = store
                .get(Table::PodStatus, &key)
                .map_err(|e| e.to_string())?
            {
                // A bare v1 PodStatus, or one wrapped as `{"status": ...}`.
                let status = match status.get("status") {
                    Some(inner) if inner.is_object() && status.get("phase").is_none() => {
                        inner.clone()
                    }
                    _ => status,
                };
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("status".into(), status);
                }
            }
        }
        out.push(value);
    }
    Ok(out)
}

/// The table kubectl prints for `objects`.
fn table(what: What, objects: &[Value], all_ns: bool, now: SystemTime, wide: bool) -> String {
    let wide = wide && what == What::Pods;
    let mut rows: Vec<Vec<String>> = Vec::new();
    let header: &[&str] = match what {
        What::Pods => &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        What::ConfigMaps => &["NAME", "DATA", "AGE"],
        What::Secrets => &["NAME", "TYPE", "DATA", "AGE"],
        What::Node => &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
    };
    let mut head: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    if wide {
        head.extend(
            ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
                .iter()
                .map(|s| s.to_string()),
        );
    }
    if all_ns {
        head.insert(0, "NAMESPACE".into());
    }
    rows.push(head);
    for v in objects {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let count = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
        };
        let age = age(v, now);
        let mut row = match what {
            What::Pods => pod_row(v, age),
            What::ConfigMaps => vec![
                s("/metadata/name"),
                (count("/data") + count("/binaryData")).to_string(),
                age,
            ],
            What::Secrets => vec![
                s("/metadata/name"),
                Some(s("/type"))
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "Opaque".into()),
                count("/data").to_string(),
                age,
            ],
            What::Node => node_row(v, age),
        };
        if wide {
            let or_none = |t: String| {
                if t.is_empty() {
                    "<none>".to_string()
                } else {
                    t
                }
            };
            row.push(or_none(s("/status/podIP")));
            row.push(or_none(s("/spec/nodeName")));
            row.push(or_none(s("/status/nominatedNodeName")));
            row.push("<none>".into());
        }
        if all_ns {
            row.insert(0, s("/metadata/namespace"));
        }
        rows.push(row);
    }
    align(&rows)
}

/// Columns as kubectl's tabwriter sets them: at least 6 wide, 3 spaces of padding, the last
/// column not padded.
fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(6)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

/// NAME, READY, STATUS, RESTARTS, AGE, with STATUS worked out as kubectl's printPod does.
fn pod_row(v: &Value, age: String) -> Vec<String> {
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let total = v
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let init_total = v
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let status: PodStatus = v
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let mut reason = status
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| {
            if status.phase.is_empty() {
                "Pending".into()
            } else {
                status.phase.clone()
            }
        });
    let mut restarts = 0;
    let mut initializing = false;
    for (i, c) in status.init_container_statuses.iter().enumerate() {
        restarts += c.restart_count;
        if let Some(t) = &c.state.terminated {
            if t.exit_code == 0 {
                continue;
            }
            reason = match (&t.reason, t.signal) {
                (Some(r), _) if !r.is_empty() => format!("Init:{r}"),
                (_, Some(sig)) if sig != 0 => format!("Init:Signal:{sig}"),
                _ => format!("Init:ExitCode:{}", t.exit_code),
            };
        } else if let Some(r) = c
            .state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_ref())
            .filter(|r| !r.is_empty() && r.as_str() != Reason::PodInitializing.as_str())
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{init_total}");
        }
        initializing = true;
        break;
    }
    let mut ready = 0;
    let mut running = false;
    if !initializing {
        for c in status.container_statuses.iter().rev() {
            restarts += c.restart_count;
            let waiting = c.state.waiting.as_ref().and_then(|w| w.reason.as_ref());
            let terminated = c.state.terminated.as_ref();
            if let Some(r) = waiting.filter(|r| !r.is_empty()) {
                reason = r.clone();
            } else if let Some(t) = terminated {
                reason = match (&t.reason, t.signal) {
                    (Some(r), _) if !r.is_empty() => r.clone(),
                    (_, Some(sig)) if sig != 0 => format!("Signal:{sig}"),
                    _ => format!("ExitCode:{}", t.exit_code),
                };
            } else if c.ready && c.state.running.is_some() {
                running = true;
                ready += 1;
            }
        }
    }
    if !initializing && reason == "Completed" && running {
        reason = "Running".into();
    }
    if v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        reason = "Terminating".into();
    }
    vec![
        name,
        format!("{ready}/{total}"),
        reason,
        restarts.to_string(),
        age,
    ]
}

/// NAME, STATUS, ROLES, AGE, VERSION of a Node.
fn node_row(v: &Value, age: String) -> Vec<String> {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let ready = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if v.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = v
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, val)| {
                    if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                        Some(r.to_string())
                    } else if k == "kubernetes.io/role" {
                        val.as_str().map(str::to_string)
                    } else {
                        None
                    }
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    vec![
        s("/metadata/name"),
        status,
        roles,
        age,
        s("/status/nodeInfo/kubeletVersion"),
    ]
}

/// The object's age, from `metadata.creationTimestamp` (what kubectl shows), or the pod's
/// `status.startTime` when the store has no creation time.
fn age(v: &Value, now: SystemTime) -> String {
    ["/metadata/creationTimestamp", "/status/startTime"]
        .iter()
        .filter_map(|p| v.pointer(p).and_then(Value::as_str))
        .find_map(parse_rfc3339)
        .map_or_else(
            || "<unknown>".to_string(),
            |t| match now.duration_since(t) {
                Ok(d) => human_duration(d),
                // Up to two seconds in the future is clock skew, as kubectl allows.
                Err(e) if e.duration() < Duration::from_secs(2) => "0s".into(),
                Err(_) => "<invalid>".into(),
            },
        )
}

/// kubectl's `HumanDuration`: 45s, 5m30s, 3h, 2d4h, 400d, 3y.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        return match secs % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            dy => format!("{}y{dy}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_kubectl() {
        let s = Duration::from_secs;
        for (d, want) in [
            (s(5), "5s"),
            (s(119), "119s"),
            (s(180), "3m"),
            (s(330), "5m30s"),
            (s(45 * 60), "45m"),
            (s(2 * 3600 + 60 * 5), "125m"),
            (s(3 * 3600 + 60 * 5), "3h5m"),
            (s(20 * 3600), "20h"),
            (s(4 * 86400), "4d"),
            (s(4 * 86400 + 3 * 3600), "4d3h"),
            (s(100 * 86400), "100d"),
            (s(3 * 365 * 86400), "3y"),
            (s(10 * 365 * 86400), "10y"),
        ] {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn wide_pods_show_the_ip() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "edge-1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "10.22.0.5"}});
        let bare = json!({"metadata": {"name": "new"}, "spec": {"containers": []}});
        let out = table(What::Pods, &[pod, bare], false, SystemTime::now(), true);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].contains("IP") && lines[0].ends_with("READINESS GATES"),
            "{out}"
        );
        assert!(
            lines[1].contains("10.22.0.5") && lines[1].contains("edge-1"),
            "{out}"
        );
        assert!(lines[2].contains("<none>"), "{out}");
        let narrow = table(What::Pods, &[], false, SystemTime::now(), false);
        assert!(!narrow.contains("IP"), "{narrow}");
        assert_eq!(Output::parse("wide"), Some(Output::Wide));
    }

    #[test]
    fn pod_status_column() {
        let pod = |status: Value| {
            json!({"metadata":{"name":"w"},"spec":{"containers":[{"name":"a"},{"name":"b"}]},
                   "status": status})
        };
        let row = pod_row(&pod(Value::Null), "1s".into());
        assert_eq!(row[1..4], ["0/2", "Pending", "0"]);
        let row = pod_row(
            &pod(json!({"phase":"Running","containerStatuses":[
                {"name":"a","ready":true,"restartCount":2,"state":{"running":{}}},
                {"name":"b","ready":false,"restartCount":1,
                 "state":{"waiting":{"reason":"CrashLoopBackOff"}}}]})),
            "1s".into(),
        );
        assert_eq!(row[1..4], ["1/2", "CrashLoopBackOff", "3"]);
        let mut p = pod(json!({"phase":"Running"}));
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(pod_row(&p, "1s".into())[2], "Terminating");
        let row = pod_row(
            &pod(json!({"phase":"Pending","initContainerStatuses":[
                {"name":"i","state":{"waiting":{"reason":"ErrImageNeverPull"}}}]})),
            "1s".into(),
        );
        assert_eq!(row[2], "Init:ErrImageNeverPull");
    }

    #[test]
    fn columns_align() {
        let rows = vec![
            vec!["NAME".to_string(), "AGE".to_string()],
            vec!["a-long-name".to_string(), "5s".to_string()],
        ];
        assert_eq!(align(&rows), "NAME          AGE\na-long-name   5s\n");
    }
}
