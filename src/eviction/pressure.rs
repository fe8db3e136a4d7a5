//! DiskPressure, owned here. Two things put the node under disk pressure:
//!
//! - image GC cannot get under `--image-gc-high-threshold`: it leaves a [`Marker`] file in the
//!   image store, and image imports refuse while the marker is there and the disk still that
//!   full;
//! - the root dir's filesystem has less than [`DISK_AVAILABLE_MIN_PERCENT`] available (the
//!   kubelet's default `nodefs.available` hard eviction).
//!
//! [`DiskPressure`] holds both and makes the one v1 NodeCondition: the node status sends it,
//! and without a cloud link (no node status then) [`record`] keeps image GC's part in the
//! node's store row. The marker is the image store's (image GC writes it, imports read it);
//! here it is one input.

use crate::images::pressure::Marker;
use crate::metaclient::MetaClient;
use serde_json::{json, Value};
use std::path::Path;

/// Disk available below this percent of the root dir's filesystem is DiskPressure.
pub const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;

/// The node's disk pressure and its causes (none: no pressure).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiskPressure {
    /// Image GC's marker, when there is one.
    pub image_gc: Option<Marker>,
    /// Percent of the root dir's filesystem available, when under
    /// [`DISK_AVAILABLE_MIN_PERCENT`].
    pub nodefs_available_percent: Option<u64>,
}

impl DiskPressure {
    /// The pressure from image GC's marker (if any) and the root dir's filesystem figures
    /// (`disk_bytes` 0: unknown, no pressure from them).
    pub fn new(image_gc: Option<Marker>, disk_bytes: u64, disk_available: u64) -> DiskPressure {
        let low = disk_bytes > 0 && disk_available * 100 < disk_bytes * DISK_AVAILABLE_MIN_PERCENT;
        DiskPressure {
            image_gc,
            nodefs_available_percent: low
                .then(|| (disk_available as u128 * 100 / disk_bytes as u128) as u64),
        }
    }

    /// Image GC's part alone, from the marker of the image store in `images_dir`.
    pub fn of_image_gc(images_dir: &Path) -> DiskPressure {
        DiskPressure::new(Marker::read(images_dir), 0, 0)
    }

    /// Whether the node is under disk pressure.
    pub fn is_active(&self) -> bool {
        self.image_gc.is_some() || self.nodefs_available_percent.is_some()
    }

    /// The `DiskPressure` v1 NodeCondition at `now` (RFC 3339); its `lastTransitionTime` is
    /// kept from `previous` (a NodeCondition list) when the status there is the same.
    pub fn condition(&self, now: &str, previous: Option<&Value>) -> Value {
        let (status, reason, message) = if self.is_active() {
            let mut why = Vec::new();
            if let Some(m) = &self.image_gc {
                why.push(format!(
                    "image filesystem {}% used, at or above the image GC high threshold of {}%, and no unused image left to remove: image imports are refused",
                    m.used_percent, m.high_percent
                ));
            }
            if let Some(p) = self.nodefs_available_percent {
                why.push(format!(
                    "the root dir's filesystem has {p}% available, under {DISK_AVAILABLE_MIN_PERCENT}%"
                ));
            }
            ("True", "KubeletHasDiskPressure", why.join("; "))
        } else {
            (
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure".to_string(),
            )
        };
        let since = previous
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "DiskPressure"))
            .filter(|c| c["status"] == status)
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(now);
        json!({"type": "DiskPressure", "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since})
    }
}

/// `record` (a v1 Node, or none: a bare one is made) with its DiskPressure condition set
/// from `pressure`, the other conditions left alone.
pub fn with_condition(
    record: Option<Value>,
    node: &str,
    pressure: &DiskPressure,
    now: &str,
) -> Value {
    let mut record = record
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}));
    if !record["status"].is_object() {
        record["status"] = json!({});
    }
    if !record["status"]["conditions"].is_array() {
        record["status"]["conditions"] = json!([]);
    }
    let condition = pressure.condition(now, Some(&record["status"]["conditions"]));
    if let Some(conditions) = record["status"]["conditions"].as_array_mut() {
        conditions.retain(|c| c["type"] != "DiskPressure");
        conditions.push(condition);
    }
    record
}

/// Records `pressure` in the node's stored record (`status.conditions`). The agent calls it
/// only without a cloud link: with one, the node status task writes the whole status.
pub async fn record(client: &MetaClient, node: &str, pressure: &DiskPressure) {
    let record = client.node(node).await.ok().flatten();
    let now = crate::api::rfc3339(std::time::SystemTime::now());
    let record = with_condition(record, node, pressure, &now);
    if let Err(e) = client.put_node(node, record).await {
        tracing::warn!(node, error = %e, "cannot record disk pressure");
    }
    match &pressure.image_gc {
        Some(m) => tracing::warn!(
            node,
            used_percent = m.used_percent,
            "DiskPressure: image imports are refused until image GC frees space"
        ),
        None if pressure.is_active() => tracing::warn!(node, "DiskPressure"),
        None => tracing::info!(node, "no disk pressure"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> Marker {
        Marker {
            used_percent: 93,
            high_percent: 85,
            low_percent: 80,
            since: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn causes() {
        assert!(
            !DiskPressure::new(None, 100, 10).is_active(),
            "10 % is enough"
        );
        let low = DiskPressure::new(None, 100, 9);
        assert_eq!(low.nodefs_available_percent, Some(9));
        let c = low.condition("t", None);
        assert_eq!(c["status"], "True");
        assert!(
            c["message"].as_str().unwrap().contains("9% available"),
            "{c}"
        );
        assert!(
            !DiskPressure::new(None, 0, 0).is_active(),
            "unknown figures"
        );
        let both = DiskPressure::new(Some(marker()), 100, 5).condition("t", None);
        let msg = both["message"].as_str().unwrap();
        assert!(msg.contains("93% used") && msg.contains("high threshold of 85%"));
        assert!(msg.contains("5% available"), "{msg}");
    }

    #[test]
    fn marker_round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Marker::read(d.path()), None);
        marker().write(d.path());
        assert_eq!(Marker::read(d.path()), Some(marker()));
        assert!(DiskPressure::of_image_gc(d.path()).is_active());
        Marker::clear(d.path());
        assert!(!Marker::path(d.path()).exists());
        assert!(!DiskPressure::of_image_gc(d.path()).is_active());
    }

    #[test]
    fn node_record_gets_a_disk_pressure_condition() {
        let on = DiskPressure::new(Some(marker()), 0, 0);
        let v = with_condition(None, "edge-1", &on, "2026-01-01T00:00:00Z");
        assert_eq!(v["kind"], "Node");
        assert_eq!(v["metadata"]["name"], "edge-1");
        let c = &v["status"]["conditions"][0];
        assert_eq!(c["type"], "DiskPressure");
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "KubeletHasDiskPressure");
        assert!(c["message"].as_str().unwrap().contains("93%"), "{c}");
        // Same status later: transition time kept; other conditions left alone.
        let mut v2 = v.clone();
        v2["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "Ready", "status": "True"}));
        let v3 = with_condition(Some(v2), "edge-1", &on, "2026-01-01T00:05:00Z");
        let conditions = |v: &Value| v["status"]["conditions"].as_array().cloned();
        let cs = conditions(&v3).unwrap_or_default();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["type"], "Ready");
        let dp = &cs[1];
        assert_eq!(dp["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert_eq!(dp["lastHeartbeatTime"], "2026-01-01T00:05:00Z");
        let off = DiskPressure::default();
        let v4 = with_condition(Some(v3), "edge-1", &off, "2026-01-01T00:10:00Z");
        let cs = conditions(&v4).unwrap_or_default();
        let dp = &cs[1];
        assert_eq!(dp["type"], "DiskPressure");
        assert_eq!(dp["status"], "False");
        assert_eq!(dp["reason"], "KubeletHasNoDiskPressure");
        assert_eq!(dp["lastTransitionTime"], "2026-01-01T00:10:00Z");
    }
}
