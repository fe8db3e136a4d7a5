//! What the backend keeps on disk so it survives an agent restart: a JSON file per sandbox and
//! per container, written atomically (tmp file, fsync, rename).

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A pod's sandbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// One PID namespace for the pod (`shareProcessNamespace`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub share_pid: bool,
    pub labels: BTreeMap<String, String>,
    pub created_ns: u64,
    /// False once the pod is stopped.
    pub ready: bool,
    /// The kernel's boot id when the namespaces were made: another one means a reboot.
    #[serde(default)]
    pub boot_id: String,
    /// The CNI network an ADD was run (or begun) for: a DEL is owed when the sandbox goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_network: Option<String>,
    /// The pod's IPs from the CNI result, IPv4 first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// A container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub id: String,
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub log_path: PathBuf,
    /// The container's cgroup (`/edged/pod<uid>/<id>`).
    pub cgroup: String,
    pub created_ns: u64,
    /// Set once the shim accepted Create.
    #[serde(default)]
    pub task_created: bool,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub started_ns: Option<u64>,
    #[serde(default)]
    pub finished_ns: Option<u64>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// The shim no longer holds the task (Delete done, or the shim is gone).
    #[serde(default)]
    pub task_deleted: bool,
    /// Created with a stdin FIFO (for attach), closed after the first attach (`stdin_once`),
    /// with a terminal (`tty`).
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    #[serde(default)]
    pub tty: bool,
    /// The shim group it was created in (the `io.containerd.runc.v2.group` annotation);
    /// `None` (records of older agents): its pod's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl ContainerMeta {
    /// The shim group the container's task lives in: containers of one group share a shim.
    pub fn group(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.pod_uid)
    }
}

/// Unix nanoseconds of a time.
pub fn to_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The time of Unix nanoseconds.
pub fn from_ns(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    crate::paths::write_atomic(path, &bytes, 0o600)
}

/// Reads a JSON file written by [`write_json`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("meta.json");
        let m = SandboxMeta {
            uid: "u".into(),
            namespace: "ns".into(),
            name: "n".into(),
            hostname: "h".into(),
            host_network: false,
            host_pid: true,
            host_ipc: false,
            share_pid: false,
            labels: BTreeMap::new(),
            created_ns: 5,
            ready: true,
            cni_network: None,
            ips: Vec::new(),
            boot_id: "b".into(),
        };
        write_json(&p, &m).unwrap();
        let back: SandboxMeta = read_json(&p).unwrap();
        assert_eq!(back.uid, "u");
        assert!(back.host_pid);
        assert!(!d.path().join("meta.json.tmp").exists());
        std::fs::write(&p, b"{").unwrap();
        assert!(read_json::<SandboxMeta>(&p).is_err());
    }
}
