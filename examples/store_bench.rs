//! Store benchmark for scripts/bench.sh: write throughput of the LMDB store (each put one
//! fsync'd transaction, as MetaManager writes) and ConfigMap query latency through
//! `MetaClient::config_map` (MetaManager::query plus the typed decode) and through
//! `MetaManager::query` alone, and repeated reads through the ConfigMap manager's cache
//! (`ObjectManager::config_map`, what a pod's volume refresh asks). Prints one JSON object.
//!
//! `cargo run --release --example store_bench -- DIR [OBJECTS]`

use edged::message::Resource;
use edged::metaclient::MetaClient;
use edged::metamanager::{key, MetaManager, Offline, Store, Table};
use edged::objects::ObjectManager;
use std::sync::Arc;
use std::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[k]
}

fn config_map(ns: &str, name: &str) -> serde_json::Value {
    // About 1 KiB of data, a typical small config.
    let data: serde_json::Map<String, serde_json::Value> = (0..8)
        .map(|i| {
            (
                format!("key{i}"),
                serde_json::Value::String("x".repeat(120)),
            )
        })
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "data": data,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: store_bench DIR [OBJECTS]");
        std::process::exit(2);
    };
    let n: usize = match args.get(1).map(|s| s.parse()) {
        None => 10_000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("store_bench: OBJECTS is a positive number");
            std::process::exit(2);
        }
    };
    let store = match Store::open(&std::path::Path::new(dir).join("meta")) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("store_bench: {e}");
            std::process::exit(1);
        }
    };
    let value_bytes = serde_json::to_vec(&config_map("bench", "cm-0"))
        .map(|v| v.len())
        .unwrap_or(0);

    // Writes: one durable transaction per put.
    let mut put_us = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let name = format!("cm-{i}");
        let v = config_map("bench", &name);
        let t = Instant::now();
        if let Err(e) = store.put(Table::ConfigMap, &key("bench", &name), &v) {
            eprintln!("store_bench: {e}");
            std::process::exit(1);
        }
        put_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let puts_per_s = n as f64 / t0.elapsed().as_secs_f64();
    put_us.sort_by(f64::total_cmp);

    // Queries, random keys, as a pod worker asks for its ConfigMaps.
    let (tx, _rx) = async_channel::unbounded();
    let meta = Arc::new(MetaManager::new(store, tx, Arc::new(Offline)));
    let client = MetaClient::new(meta.clone());
    let queries = n.max(1000);
    let (mut q_us, mut raw_us) = (Vec::with_capacity(queries), Vec::with_capacity(queries));
    smol::block_on(async {
        for _ in 0..queries {
            let name = format!("cm-{}", fastrand::usize(0..n));
            let t = Instant::now();
            match client.config_map("bench", &name).await {
                Ok(Some(_)) => {}
                other => {
                    eprintln!("store_bench: query {name}: {:?}", other.err());
                    std::process::exit(1);
                }
            }
            q_us.push(t.elapsed().as_secs_f64() * 1e6);
            let r = Resource::new("bench", "configmap", &name);
            let t = Instant::now();
            if !matches!(meta.query(Table::ConfigMap, &r).await, Ok(Some(_))) {
                eprintln!("store_bench: raw query {name} failed");
                std::process::exit(1);
            }
            raw_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    });
    // Repeated reads of a pod's ConfigMaps through the cache (the first of each is a miss).
    let objects = ObjectManager::new(client.clone());
    let hot: Vec<String> = (0..n.min(100)).map(|i| format!("cm-{i}")).collect();
    let mut cached_us = Vec::with_capacity(queries);
    smol::block_on(async {
        for i in 0..queries {
            let name = &hot[i % hot.len()];
            let t = Instant::now();
            if !matches!(objects.config_map("bench", name).await, Ok(Some(_))) {
                eprintln!("store_bench: cached query {name} failed");
                std::process::exit(1);
            }
            cached_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
    });
    q_us.sort_by(f64::total_cmp);
    raw_us.sort_by(f64::total_cmp);
    cached_us.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "objects": n,
        "value_bytes": value_bytes,
        "puts_per_s": puts_per_s,
        "put_us_p50": percentile(&put_us, 50.0),
        "put_us_p99": percentile(&put_us, 99.0),
        "queries": queries,
        "query_us_p50": percentile(&q_us, 50.0),
        "query_us_p99": percentile(&q_us, 99.0),
        "raw_query_us_p50": percentile(&raw_us, 50.0),
        "raw_query_us_p99": percentile(&raw_us, 99.0),
        "cached_query_us_p50": percentile(&cached_us, 50.0),
        "cached_query_us_p99": percentile(&cached_us, 99.0),
    });
    println!("{out}");
}
