//! The result cache, in libcni's format (`kind: cniCacheV1`) and place
//! (`<cache dir>/results/<network>-<container id>-<ifname>`), so DEL and CHECK run with the
//! config, arguments and result of their ADD, also after an agent restart or a power cut.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// One cached ADD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Always `cniCacheV1`.
    pub kind: String,
    /// CNI_CONTAINERID of the ADD.
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The network config list of the ADD, base64.
    pub config: String,
    /// CNI_IFNAME of the ADD.
    #[serde(rename = "ifName")]
    pub if_name: String,
    /// The network's name.
    #[serde(rename = "networkName")]
    pub network_name: String,
    /// CNI_NETNS of the ADD.
    #[serde(default)]
    pub netns: String,
    /// CNI_ARGS of the ADD, as pairs.
    #[serde(rename = "cniArgs", default)]
    pub cni_args: Vec<(String, String)>,
    /// The capability arguments (`portMappings`, `dns`, `bandwidth`) of the ADD.
    #[serde(rename = "capabilityArgs", default)]
    pub capability_args: Map<String, Value>,
    /// The final result of the ADD.
    #[serde(default)]
    pub result: Option<Value>,
}

/// The kind tag of an entry.
pub const KIND: &str = "cniCacheV1";

/// Where the entry of (`network`, `id`, `ifname`) lives under `dir`; `None` when a part is
/// not one plain path component.
pub fn path(dir: &Path, network: &str, id: &str, ifname: &str) -> Option<PathBuf> {
    crate::paths::under(dir, &["results", &format!("{network}-{id}-{ifname}")]).ok()
}

/// Writes `entry` atomically.
pub fn write(dir: &Path, entry: &Entry) -> Result<(), String> {
    let p = path(
        dir,
        &entry.network_name,
        &entry.container_id,
        &entry.if_name,
    )
    .ok_or_else(|| format!("network {:?}: not a file name", entry.network_name))?;
    let results = dir.join("results");
    crate::paths::private_dir(&results).map_err(|e| format!("mkdir {}: {e}", results.display()))?;
    let bytes = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
    crate::paths::write_atomic(&p, &bytes, 0o600).map_err(|e| format!("write {}: {e}", p.display()))
}

/// Parses an entry's bytes (`None`: not one of ours, or unreadable).
pub fn parse(bytes: &[u8]) -> Option<Entry> {
    serde_json::from_slice::<Entry>(bytes)
        .ok()
        .filter(|e| e.kind == KIND)
}

/// The cached entries of container `id` on `ifname` (any network: the config may have
/// changed since), with their files.
pub fn find(dir: &Path, id: &str, ifname: &str) -> Vec<(PathBuf, Entry)> {
    let suffix = format!("-{id}-{ifname}");
    let Ok(rd) = std::fs::read_dir(dir.join("results")) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Entry)> = rd
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)))
        .filter_map(|e| {
            let p = e.path();
            let entry = parse(&std::fs::read(&p).ok()?)?;
            (entry.container_id == id && entry.if_name == ifname).then_some((p, entry))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(net: &str, id: &str) -> Entry {
        Entry {
            kind: KIND.into(),
            container_id: id.into(),
            config: crate::api::base64::encode(b"{}"),
            if_name: "eth0".into(),
            network_name: net.into(),
            netns: "/x".into(),
            cni_args: vec![("K8S_POD_NAME".into(), "p".into())],
            capability_args: Map::new(),
            result: Some(serde_json::json!({"ips": []})),
        }
    }

    #[test]
    fn entries_round_trip_and_are_found_by_container() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &entry("net", "abc")).unwrap();
        write(d.path(), &entry("other", "abc")).unwrap();
        write(d.path(), &entry("net", "xabc")).unwrap();
        assert!(d.path().join("results/net-abc-eth0").is_file());
        let found = find(d.path(), "abc", "eth0");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1, entry("net", "abc"));
        assert!(find(d.path(), "abc", "eth1").is_empty());
        assert!(find(&d.path().join("none"), "abc", "eth0").is_empty());
        assert!(write(d.path(), &entry("a/b", "abc")).is_err());
    }

    #[test]
    fn libcni_entries_parse() {
        // What libcni writes (fields it has that we do not are ignored).
        let text = br#"{"kind":"cniCacheV1","containerId":"c1","config":"e30=","ifName":"eth0",
            "networkName":"mynet","netns":"/var/run/netns/x","cniArgs":[["K8S_POD_UID","u"]],
            "capabilityArgs":{"portMappings":[]},"result":{"cniVersion":"1.0.0","ips":[]}}"#;
        let e = parse(text).unwrap();
        assert_eq!(e.network_name, "mynet");
        assert_eq!(
            e.cni_args,
            vec![("K8S_POD_UID".to_string(), "u".to_string())]
        );
        assert!(parse(br#"{"kind":"other"}"#).is_none());
        assert!(parse(b"\xff").is_none());
    }
}
