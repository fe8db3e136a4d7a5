//! Which handler a request goes to, and the `/containerLogs` query as log options (the
//! kubelet's `PodLogOptions` with its validation), as pure decisions.
//!
//! Routes not served yet (`/exec`, `/attach`, `/portForward`) are 404 here; each becomes a
//! variant of [`Route`] when built.

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
        namespace: String,
        pod: String,
        container: String,
    },
    /// `GET /stats/summary`: the kubelet's stats Summary.
    StatsSummary,
    /// `GET /metrics/resource`: CPU and memory as Prometheus text (for metrics-server).
    MetricsResource,
    /// A known path with another method than GET.
    MethodNotAllowed,
    /// Anything else.
    NotFound,
}

/// Routes a request by its method and path segments.
pub fn route(method: &str, segments: &[String]) -> Route {
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
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
    pub options: LogOptions,
    pub previous: bool,
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
        assert_eq!(
            route("PUT", &segs("/stats/summary")),
            Route::MethodNotAllowed
        );
        for p in [
            "/",
            "/containerLogs/ns/web",
            "/containerLogs/ns/web/app/x",
            "/exec/ns/web/app",
            "/stats",
            "/stats/summary/x",
            "/metrics",
            "/metrics/cadvisor",
        ] {
            assert_eq!(route("GET", &segs(p)), Route::NotFound, "{p}");
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
