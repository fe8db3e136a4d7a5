//! Which handler a request goes to, and the `/containerLogs` query as log options (the
//! kubelet's `PodLogOptions` with its validation), and the `/exec`/`/attach` query as stream
//! options, as pure decisions.

use super::streaming::StreamOptions;
use crate::kuberuntime::logs::LogOptions;
use std::time::{Duration, SystemTime};

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`.
    Healthz,
    /// `GET /pods`: the node's pods as a v1 PodList.
    Pods,
    /// `GET /containerLogs/{namespace}/{pod}/{container}`.
    ContainerLogs {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `/exec/{namespace}/{pod}[/{uid}]/{container}` (GET or POST, upgraded to a stream).
    Exec {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `/attach/{namespace}/{pod}[/{uid}]/{container}` (GET or POST, upgraded).
    Attach {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `/portForward/{namespace}/{pod}[/{uid}]` (GET or POST, upgraded).
    PortForward {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        pod: String,
    },
    /// `GET /stats/summary`: the kubelet's stats Summary.
    StatsSummary,
    /// `GET /metrics/resource`: CPU and memory as Prometheus text (for metrics-server).
    MetricsResource,
    /// A known path with a method it does not take.
    MethodNotAllowed,
    /// Anything else.
    NotFound,
}

/// Routes a request by its method and path segments.
pub fn route(method: &str, segments: &[String]) -> Route {
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (ns, pod, c) = match seg.as_slice() {
        [_, ns, pod, c] | [_, ns, pod, _, c] => (ns.to_string(), pod.to_string(), c.to_string()),
        [_, ns, pod] => (ns.to_string(), pod.to_string(), String::new()),
        _ => Default::default(),
    };
    let streaming = match seg.as_slice() {
        ["exec", ..] if seg.len() == 4 || seg.len() == 5 => Some(Route::Exec {
            namespace: ns,
            pod,
            container: c,
        }),
        ["attach", ..] if seg.len() == 4 || seg.len() == 5 => Some(Route::Attach {
            namespace: ns,
            pod,
            container: c,
        }),
        ["portForward", _, pod_name] | ["portForward", _, pod_name, _] => {
            Some(Route::PortForward {
                namespace: seg[1].to_string(),
                pod: pod_name.to_string(),
            })
        }
        _ => None,
    };
    if let Some(r) = streaming {
        return if method == "GET" || method == "POST" {
            r
        } else {
            Route::MethodNotAllowed
        };
    }
    let found = match seg.as_slice() {
        ["healthz"] => Route::Healthz,
        ["pods"] => Route::Pods,
        ["stats", "summary"] => Route::StatsSummary,
        ["metrics", "resource"] => Route::MetricsResource,
        ["containerLogs", ns, pod, c] => Route::ContainerLogs {
            namespace: ns.to_string(),
            pod: pod.to_string(),
            container: c.to_string(),
        },
        _ => return Route::NotFound,
    };
    if method == "GET" {
        found
    } else {
        Route::MethodNotAllowed
    }
}

/// The options of a `/containerLogs` request, and whether it asks for the previous instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsQuery {
    /// `follow`, `tailLines`, `sinceSeconds`, `limitBytes`, `timestamps` and the like.
    pub options: LogOptions,
    /// `previous`: the logs of the container's last terminated instance.
    pub previous: bool,
}

/// What an exec or attach asks for: its streams and (exec) its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamQuery {
    /// The streams asked for (`stdin`, `stdout`, `stderr`, `tty`).
    pub options: StreamOptions,
    /// `command`, once per argument (exec only; empty for attach).
    pub command: Vec<String>,
}

/// Parses the query of `/exec` and `/attach` as the kubelet's `remotecommand.NewOptions`: the
/// API server sends `input`, `output`, `error`, `tty` as `1` and `command` once per argument;
/// `stdin`, `stdout`, `stderr` (kubectl's names) are read too. A terminal has no separate
/// stderr. An error names what is missing.
pub fn stream_query(query: &[(String, String)], exec: bool) -> Result<StreamQuery, String> {
    let mut q = StreamQuery {
        options: StreamOptions::default(),
        command: Vec::new(),
    };
    for (k, v) in query {
        let on = || boolean(k, v);
        match k.as_str() {
            "input" | "stdin" => q.options.stdin = on()?,
            "output" | "stdout" => q.options.stdout = on()?,
            "error" | "stderr" => q.options.stderr = on()?,
            "tty" => q.options.tty = on()?,
            "command" => q.command.push(v.clone()),
            _ => {}
        }
    }
    if q.options.tty {
        q.options.stderr = false;
    }
    let o = q.options;
    if !o.stdin && !o.stdout && !o.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    if exec && q.command.is_empty() {
        return Err("command: an exec needs a command (command=... once per argument)".into());
    }
    Ok(q)
}

/// Reads a boolean as Go's `strconv.ParseBool` (a bare name means true).
fn boolean(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{name}: `{v}` is not a boolean (true or false)")),
    }
}

fn integer(name: &str, v: &str, min: i64) -> Result<i64, String> {
    let n: i64 = v
        .parse()
        .map_err(|_| format!("{name}: `{v}` is not an integer"))?;
    if n < min {
        return Err(format!("{name}: must be at least {min}, not {n}"));
    }
    Ok(n)
}

/// Parses the query of `/containerLogs` (`follow`, `previous`, `tailLines` (or the older
/// `tail`, where `all` means every line), `sinceSeconds`, `sinceTime`, `timestamps`,
/// `limitBytes`); other parameters are ignored, as the kubelet ignores them. An error names
/// the parameter.
pub fn logs_query(query: &[(String, String)], now: SystemTime) -> Result<LogsQuery, String> {
    let mut q = LogsQuery {
        options: LogOptions::default(),
        previous: false,
    };
    let (mut since_seconds, mut since_time) = (None, None);
    for (k, v) in query {
        match k.as_str() {
            "follow" => q.options.follow = boolean(k, v)?,
            "previous" => q.previous = boolean(k, v)?,
            "timestamps" => q.options.timestamps = boolean(k, v)?,
            "tailLines" => q.options.tail = Some(integer(k, v, 0)? as u64),
            "tail" if v == "all" => q.options.tail = None,
            "tail" => q.options.tail = Some(integer(k, v, 0)? as u64),
            "limitBytes" => q.options.limit_bytes = Some(integer(k, v, 1)? as u64),
            "sinceSeconds" => since_seconds = Some(integer(k, v, 1)? as u64),
            "sinceTime" => {
                since_time = Some(
                    crate::api::parse_rfc3339(v)
                        .ok_or_else(|| format!("sinceTime: `{v}` is not an RFC 3339 time"))?,
                )
            }
            _ => {}
        }
    }
    q.options.since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err("sinceSeconds, sinceTime: at most one may be given".into())
        }
        (Some(s), None) => Some(
            now.checked_sub(Duration::from_secs(s))
                .unwrap_or(SystemTime::UNIX_EPOCH),
        ),
        (None, t) => t,
    };
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", &segs("/healthz")), Route::Healthz);
        assert_eq!(route("GET", &segs("/pods/")), Route::Pods);
        assert_eq!(
            route("GET", &segs("/containerLogs/ns/web/app")),
            Route::ContainerLogs {
                namespace: "ns".into(),
                pod: "web".into(),
                container: "app".into()
            }
        );
        assert_eq!(route("GET", &segs("/stats/summary")), Route::StatsSummary);
        assert_eq!(
            route("GET", &segs("/metrics/resource/")),
            Route::MetricsResource
        );
        assert_eq!(route("POST", &segs("/healthz")), Route::MethodNotAllowed);
        let exec = |c: &str| Route::Exec {
            namespace: "ns".into(),
            pod: "web".into(),
            container: c.into(),
        };
        assert_eq!(route("POST", &segs("/exec/ns/web/app")), exec("app"));
        assert_eq!(route("GET", &segs("/exec/ns/web/uid-1/app")), exec("app"));
        assert_eq!(
            route("POST", &segs("/attach/ns/web/app")),
            Route::Attach {
                namespace: "ns".into(),
                pod: "web".into(),
                container: "app".into()
            }
        );
        let pf = Route::PortForward {
            namespace: "ns".into(),
            pod: "web".into(),
        };
        assert_eq!(route("POST", &segs("/portForward/ns/web")), pf);
        assert_eq!(route("GET", &segs("/portForward/ns/web/uid-1")), pf);
        assert_eq!(
            route("DELETE", &segs("/exec/ns/web/app")),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route("PUT", &segs("/stats/summary")),
            Route::MethodNotAllowed
        );
        for p in [
            "/",
            "/containerLogs/ns/web",
            "/containerLogs/ns/web/app/x",
            "/exec/ns/web",
            "/exec/ns/web/a/b/c",
            "/portForward/ns",
            "/stats",
            "/stats/summary/x",
            "/metrics",
            "/metrics/cadvisor",
        ] {
            assert_eq!(route("GET", &segs(p)), Route::NotFound, "{p}");
        }
    }

    fn pairs(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    #[test]
    fn stream_queries() {
        let q = stream_query(
            &pairs("input=1&output=1&tty=1&error=1&command=sh&command=-c&command=echo hi"),
            true,
        )
        .unwrap();
        assert_eq!(
            q.options,
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            }
        );
        assert_eq!(q.command, ["sh", "-c", "echo hi"]);
        let k = stream_query(&pairs("stdout=true&stderr=true&command=ls"), true).unwrap();
        assert!(k.options.stdout && k.options.stderr && !k.options.stdin);
        assert!(stream_query(&pairs("output=1"), false)
            .unwrap()
            .command
            .is_empty());
        for (bad, says) in [
            ("command=ls", "you must specify"),
            ("output=1", "command"),
            ("output=yes&command=ls", "output"),
        ] {
            let e = stream_query(&pairs(bad), true).unwrap_err();
            assert!(e.starts_with(says), "{bad}: {e}");
        }
    }

    #[test]
    fn log_queries() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let q = |s: &str| -> Result<LogsQuery, String> {
            let pairs: Vec<(String, String)> = s
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            logs_query(&pairs, now)
        };
        let all = q("follow&previous=1&timestamps=true&tailLines=5&limitBytes=9&sinceSeconds=10&container=x")
            .unwrap();
        assert!(all.previous);
        assert_eq!(
            all.options,
            LogOptions {
                follow: true,
                tail: Some(5),
                since: Some(now - Duration::from_secs(10)),
                timestamps: true,
                limit_bytes: Some(9),
            }
        );
        assert_eq!(q("").unwrap().options, LogOptions::default());
        assert_eq!(q("tail=all").unwrap().options.tail, None);
        assert_eq!(q("tail=3").unwrap().options.tail, Some(3));
        assert_eq!(
            q("sinceTime=1970-01-01T00:10:00Z").unwrap().options.since,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(600))
        );
        for (bad, names) in [
            ("follow=yes", "follow"),
            ("tailLines=-1", "tailLines"),
            ("tailLines=x", "tailLines"),
            ("limitBytes=0", "limitBytes"),
            ("sinceSeconds=0", "sinceSeconds"),
            ("sinceTime=yesterday", "sinceTime"),
            (
                "sinceSeconds=5&sinceTime=1970-01-01T00:10:00Z",
                "sinceSeconds, sinceTime",
            ),
            ("previous=2", "previous"),
        ] {
            let e = q(bad).unwrap_err();
            assert!(e.starts_with(names), "{bad}: {e}");
        }
    }
}
