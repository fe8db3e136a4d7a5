//! `/stats/summary` and `/metrics/resource`: the node's pods from the store and their usage as
//! [`crate::stats`] reads it, as the kubelet's Summary JSON and its resource metrics text.
//! The reading runs on a blocking thread (`smol::unblock`).

use super::http;
use crate::metamanager::Store;
use crate::stats::{self, prometheus, rate::RateCache, Scope, Sources};
use std::sync::Arc;

/// What the stats handlers read from, and the CPU samples kept between summaries.
pub struct StatsCtx {
    /// Where the figures are read from.
    pub sources: Sources,
    /// The last CPU sample of each cgroup, for `usageNanoCores`.
    pub rates: RateCache,
}

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The scope a summary request asks for: `only_cpu_and_memory=true` (the kubelet's
/// parameter) or everything. An error names the parameter.
pub fn summary_scope(query: &[(String, String)]) -> Result<Scope, String> {
    let mut scope = Scope::Full;
    for (k, v) in query {
        if k == "only_cpu_and_memory" {
            scope = match v.as_str() {
                "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Scope::CpuAndMemory,
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Scope::Full,
                _ => {
                    return Err(format!(
                        "only_cpu_and_memory: `{v}` is not a boolean (true or false)"
                    ))
                }
            };
        }
    }
    Ok(scope)
}

/// The answer to `GET /stats/summary`.
pub async fn summary(
    store: Arc<Store>,
    ctx: Arc<StatsCtx>,
    query: &[(String, String)],
    ka: bool,
) -> Vec<u8> {
    let scope = match summary_scope(query) {
        Ok(s) => s,
        Err(m) => return http::text(400, &m, ka),
    };
    let built = smol::unblock(move || {
        let pods = stats::pods_from_store(&store)?;
        // Only a full summary moves the CPU samples on, as the kubelet's.
        let rates = (scope == Scope::Full).then_some(&ctx.rates);
        let (s, problems) = stats::summary(&ctx.sources, &pods, scope, rates);
        log_problems(&problems);
        serde_json::to_vec(&s).map_err(|e| format!("cannot encode the summary: {e}"))
    })
    .await;
    match built {
        Ok(body) => http::response(200, "application/json", &body, ka),
        Err(e) => {
            tracing::warn!(error = %e, "stats summary failed");
            http::text(500, &e, ka)
        }
    }
}

/// The answer to `GET /metrics/resource` (`scrape_error 1` when the pods cannot be listed).
pub async fn resource_metrics(store: Arc<Store>, ctx: Arc<StatsCtx>, ka: bool) -> Vec<u8> {
    let text = smol::unblock(move || match stats::pods_from_store(&store) {
        Ok(pods) => {
            let (s, problems) = stats::summary(&ctx.sources, &pods, Scope::CpuAndMemory, None);
            log_problems(&problems);
            prometheus::resource_metrics(Some(&s), false)
        }
        Err(e) => {
            tracing::warn!(error = %e, "resource metrics failed");
            prometheus::resource_metrics(None, true)
        }
    })
    .await;
    http::response(200, PROMETHEUS_TEXT, text.as_bytes(), ka)
}

/// Files that could not be read (a container ending mid-scrape, most often): one line.
fn log_problems(p: &stats::Problems) {
    if let Some(first) = p.errors.first() {
        tracing::debug!(count = p.errors.len(), first = %first, "stats: some figures left out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let q = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(summary_scope(&[]), Ok(Scope::Full));
        assert_eq!(
            summary_scope(&q("only_cpu_and_memory", "true")),
            Ok(Scope::CpuAndMemory)
        );
        assert_eq!(
            summary_scope(&q("only_cpu_and_memory", "")),
            Ok(Scope::CpuAndMemory)
        );
        assert_eq!(
            summary_scope(&q("only_cpu_and_memory", "0")),
            Ok(Scope::Full)
        );
        assert_eq!(summary_scope(&q("other", "x")), Ok(Scope::Full));
        let e = summary_scope(&q("only_cpu_and_memory", "yes")).unwrap_err();
        assert!(e.starts_with("only_cpu_and_memory"), "{e}");
    }
}
