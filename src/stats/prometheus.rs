//! The Prometheus text of `/metrics/resource`, as the kubelet's resource metrics collector
//! writes it from the summary's CPU and memory figures (what metrics-server parses): families
//! in name order, each with its `# HELP` (stability level first) and `# TYPE` lines; labels in
//! name order (`container`, `namespace`, `pod`); values as Go's `strconv` writes a float64
//! (shortest, `%g`); the sample time in milliseconds after CPU and memory values.

use super::summary::{CpuStats, MemoryStats, Summary, Time};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A float as Go's `strconv.FormatFloat(f, 'g', -1, 64)` writes it (and Prometheus'
/// `+Inf`, `-Inf`, `NaN`).
pub fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the shortest digits that read back the same, as Go's shortest.
    let e = format!("{:e}", f.abs());
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        // %e: d.ddde±XX
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        format!("{sign}{digits}{}", "0".repeat(int_len - digits.len()))
    } else {
        let (i, fr) = digits.split_at(int_len);
        format!("{sign}{i}.{fr}")
    }
}

/// A label value escaped as the text format wants (`\`, `"`, newline).
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// One sample: its labels (name order), value, and time when it has one.
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: f64,
    time: Option<Time>,
}

/// A family: help, type and samples.
struct Family {
    help: &'static str,
    kind: &'static str,
    samples: Vec<Sample>,
}

const CONTAINER_CPU: &str = "container_cpu_usage_seconds_total";
const CONTAINER_MEMORY: &str = "container_memory_working_set_bytes";
const CONTAINER_START: &str = "container_start_time_seconds";
const NODE_CPU: &str = "node_cpu_usage_seconds_total";
const NODE_MEMORY: &str = "node_memory_working_set_bytes";
const POD_CPU: &str = "pod_cpu_usage_seconds_total";
const POD_MEMORY: &str = "pod_memory_working_set_bytes";
const SCRAPE_ERROR: &str = "scrape_error";
const RESOURCE_SCRAPE_ERROR: &str = "resource_scrape_error";

fn families() -> BTreeMap<&'static str, Family> {
    let f = |help, kind| Family {
        help,
        kind,
        samples: Vec::new(),
    };
    BTreeMap::from([
        (
            CONTAINER_CPU,
            f(
                "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
                "counter",
            ),
        ),
        (
            CONTAINER_MEMORY,
            f(
                "[STABLE] Current working set of the container in bytes",
                "gauge",
            ),
        ),
        (
            CONTAINER_START,
            f(
                "[STABLE] Start time of the container since unix epoch in seconds",
                "gauge",
            ),
        ),
        (
            NODE_CPU,
            f(
                "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
                "counter",
            ),
        ),
        (
            NODE_MEMORY,
            f("[STABLE] Current working set of the node in bytes", "gauge"),
        ),
        (
            POD_CPU,
            f(
                "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
                "counter",
            ),
        ),
        (
            POD_MEMORY,
            f("[STABLE] Current working set of the pod in bytes", "gauge"),
        ),
        (
            SCRAPE_ERROR,
            f(
                "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise",
                "gauge",
            ),
        ),
        (
            RESOURCE_SCRAPE_ERROR,
            f(
                "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
                "gauge",
            ),
        ),
    ])
}

fn cpu_sample(c: &Option<CpuStats>, labels: Vec<(&'static str, String)>) -> Option<Sample> {
    let c = c.as_ref()?;
    Some(Sample {
        labels,
        value: c.usage_core_nano_seconds? as f64 / 1e9,
        time: Some(c.time),
    })
}

fn memory_sample(m: &Option<MemoryStats>, labels: Vec<(&'static str, String)>) -> Option<Sample> {
    let m = m.as_ref()?;
    Some(Sample {
        labels,
        value: m.working_set_bytes? as f64,
        time: Some(m.time),
    })
}

/// The text of `/metrics/resource` for a summary; `errored`: the summary could not be made
/// whole (`scrape_error 1`).
pub fn resource_metrics(summary: Option<&Summary>, errored: bool) -> String {
    let mut fams = families();
    let mut push = |name: &str, s: Option<Sample>| {
        if let (Some(s), Some(f)) = (s, fams.get_mut(name)) {
            f.samples.push(s);
        }
    };
    let flag = if errored || summary.is_none() {
        1.0
    } else {
        0.0
    };
    for name in [SCRAPE_ERROR, RESOURCE_SCRAPE_ERROR] {
        push(
            name,
            Some(Sample {
                labels: vec![],
                value: flag,
                time: None,
            }),
        );
    }
    if let Some(s) = summary {
        push(NODE_CPU, cpu_sample(&s.node.cpu, vec![]));
        push(NODE_MEMORY, memory_sample(&s.node.memory, vec![]));
        for p in &s.pods {
            let (name, ns) = (&p.pod_ref.name, &p.pod_ref.namespace);
            for c in &p.containers {
                let labels = || {
                    vec![
                        ("container", c.name.clone()),
                        ("namespace", ns.clone()),
                        ("pod", name.clone()),
                    ]
                };
                if c.start_time.seconds() > 0.0 {
                    push(
                        CONTAINER_START,
                        Some(Sample {
                            labels: labels(),
                            value: c.start_time.seconds(),
                            time: None,
                        }),
                    );
                }
                push(CONTAINER_CPU, cpu_sample(&c.cpu, labels()));
                push(CONTAINER_MEMORY, memory_sample(&c.memory, labels()));
            }
            let labels = || vec![("namespace", ns.clone()), ("pod", name.clone())];
            push(POD_CPU, cpu_sample(&p.cpu, labels()));
            push(POD_MEMORY, memory_sample(&p.memory, labels()));
        }
    }
    let mut out = String::new();
    for (name, mut f) in fams {
        if f.samples.is_empty() {
            continue; // Prometheus leaves out a family without samples.
        }
        f.samples.sort_by(|a, b| a.labels.cmp(&b.labels));
        let _ = writeln!(out, "# HELP {name} {}", f.help);
        let _ = writeln!(out, "# TYPE {name} {}", f.kind);
        for s in f.samples {
            out.push_str(name);
            if !s.labels.is_empty() {
                let l: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", l.join(","));
            }
            let _ = write!(out, " {}", go_float(s.value));
            if let Some(t) = s.time {
                let _ = write!(out, " {}", t.millis());
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn floats_as_go_writes_them() {
        for (f, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (0.5, "0.5"),
            (12.345678901, "12.345678901"),
            (100000.0, "100000"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e6, "1e+06"),
            (1.7000000002e9, "1.7000000002e+09"),
            (1.690000000123e9, "1.690000000123e+09"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (-2.5, "-2.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(go_float(f), want, "{f}");
        }
    }

    fn t(ms: u64) -> Time {
        Time(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
    }

    fn cpu(ns: u64, ms: u64) -> Option<CpuStats> {
        Some(CpuStats {
            time: t(ms),
            usage_nano_cores: None,
            usage_core_nano_seconds: Some(ns),
        })
    }

    fn mem(ws: u64, ms: u64) -> Option<MemoryStats> {
        Some(MemoryStats {
            time: t(ms),
            available_bytes: None,
            usage_bytes: None,
            working_set_bytes: Some(ws),
            rss_bytes: None,
            page_faults: None,
            major_page_faults: None,
        })
    }

    #[test]
    fn text_as_the_kubelet_writes_it() {
        let container = |name: &str| ContainerStats {
            name: name.into(),
            start_time: t(1_700_000_000_500),
            cpu: cpu(1_500_000_000, 1_700_000_100_001),
            memory: mem(4096, 1_700_000_100_002),
            rootfs: None,
            logs: None,
        };
        let s = Summary {
            node: NodeStats {
                node_name: "n".into(),
                system_containers: vec![],
                start_time: t(0),
                cpu: cpu(2_000_000_000_000, 1_700_000_100_000),
                memory: mem(1 << 30, 1_700_000_100_000),
                network: None,
                fs: None,
                runtime: None,
                rlimit: None,
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "u".into(),
                },
                start_time: t(0),
                containers: vec![container("side"), container("app")],
                cpu: cpu(3_000_000_000, 1_700_000_100_003),
                memory: mem(8192, 1_700_000_100_004),
                network: None,
                volume_stats: vec![],
                ephemeral_storage: None,
                process_stats: None,
            }],
        };
        let want = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="default",pod="web"} 1.5 1700000100001
container_cpu_usage_seconds_total{container="side",namespace="default",pod="web"} 1.5 1700000100001
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="default",pod="web"} 4096 1700000100002
container_memory_working_set_bytes{container="side",namespace="default",pod="web"} 4096 1700000100002
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="app",namespace="default",pod="web"} 1.7000000005e+09
container_start_time_seconds{container="side",namespace="default",pod="web"} 1.7000000005e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 2000 1700000100000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.073741824e+09 1700000100000
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="web"} 3 1700000100003
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="web"} 8192 1700000100004
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
# HELP scrape_error [ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
"#;
        assert_eq!(resource_metrics(Some(&s), false), want);
        // No summary: only the error flags, set.
        let failed = resource_metrics(None, false);
        assert!(failed.contains("\nscrape_error 1\n"), "{failed}");
        assert!(!failed.contains("node_cpu"), "{failed}");
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
