//! Termination messages, as the kubelet keeps them: every container instance gets a file of
//! its own on the host, mounted at its `terminationMessagePath` (default
//! `/dev/termination-log`); when the instance has ended, the file's first 4096 bytes are its
//! `state.terminated.message`. With `terminationMessagePolicy: FallbackToLogsOnError`, a
//! failed instance whose file is empty gets the tail of its log instead (the last 80 lines, at
//! most 2048 bytes).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The label holding the host file of an instance's termination message.
pub const LABEL: &str = "io.edged.termination-message";
/// The label holding the instance's `terminationMessagePolicy`.
pub const POLICY_LABEL: &str = "io.edged.termination-message-policy";
/// The path a container's message goes to when the pod names none (the API server's default).
pub const DEFAULT_PATH: &str = "/dev/termination-log";
/// The most of the file read (the kubelet's `MaxContainerTerminationMessageLength`).
pub const MAX_BYTES: u64 = 4096;
/// The log tail used by `FallbackToLogsOnError`: lines and bytes.
pub const FALLBACK_LINES: usize = 80;
/// The most bytes of that tail.
pub const FALLBACK_BYTES: usize = 2048;

/// The policy of a container (`File` unless `FallbackToLogsOnError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `File`: the message is the file at `terminationMessagePath` only.
    File,
    /// `FallbackToLogsOnError`: the log tail when the file is empty and the container failed.
    FallbackToLogsOnError,
}

impl Policy {
    /// Reads `terminationMessagePolicy` (absent or anything else: `File`).
    pub fn parse(s: Option<&str>) -> Policy {
        match s {
            Some("FallbackToLogsOnError") => Policy::FallbackToLogsOnError,
            _ => Policy::File,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::File => "File",
            Policy::FallbackToLogsOnError => "FallbackToLogsOnError",
        }
    }
}

/// The host file of one instance: `<pod dir>/containers/<container>/<attempt>`.
pub fn host_file(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir
        .join("containers")
        .join(container)
        .join(attempt.to_string())
}

/// Makes the (empty) file an instance writes its message to. World-writable, as the kubelet
/// makes it, so a container running as any user can write it; its directory is private to
/// the pod's directory.
pub fn prepare(file: &Path) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(file)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o666))
}

/// The message of an ended instance: the file's first [`MAX_BYTES`]; or, for
/// `FallbackToLogsOnError` with a failed exit and nothing in the file, the tail of its CRI
/// log. `None` when there is nothing to say.
pub fn message(file: &Path, policy: Policy, exit_code: i32, log: &Path) -> Option<String> {
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(file) {
        let mut buf = Vec::new();
        if f.take(MAX_BYTES).read_to_end(&mut buf).is_ok() {
            text = String::from_utf8_lossy(&buf).into_owned();
        }
    }
    if text.is_empty() && policy == Policy::FallbackToLogsOnError && exit_code != 0 {
        text = log_tail(log);
    }
    (!text.is_empty()).then_some(text)
}

/// The last [`FALLBACK_LINES`] lines of a CRI log (the text of each line, partial lines
/// joined, rotated files included), cut to the last [`FALLBACK_BYTES`], as the kubelet reads
/// them (ReadLogs into a ring buffer).
pub fn log_tail(log: &Path) -> String {
    let opts = super::logs::LogOptions {
        tail: Some(FALLBACK_LINES as u64),
        ..Default::default()
    };
    let Ok(mut reader) = super::logs::LogReader::open(log, opts) else {
        return String::new();
    };
    let mut out = Vec::new();
    while let Ok(step) = reader.read(&mut out, 64 * 1024) {
        if step == super::logs::Step::Done {
            break;
        }
        let cut = out.len().saturating_sub(FALLBACK_BYTES);
        out.drain(..cut);
    }
    let cut = out.len().saturating_sub(FALLBACK_BYTES);
    String::from_utf8_lossy(&out[cut..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_first_then_the_log_for_failures_only() {
        let d = tempfile::tempdir().unwrap();
        let file = host_file(d.path(), "app", 2);
        assert!(file.ends_with("containers/app/2"));
        prepare(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        let log = d.path().join("0.log");
        let mut lines = String::new();
        for i in 0..100 {
            lines.push_str(&format!(
                "2026-01-01T00:00:00.000000000Z stdout F line {i}\n"
            ));
        }
        lines.push_str("2026-01-01T00:00:00.000000000Z stderr P half \n");
        lines.push_str("2026-01-01T00:00:00.000000000Z stderr F and half\n");
        std::fs::write(&log, lines).unwrap();

        // Empty file: nothing under File; the log tail for a failure under Fallback.
        assert_eq!(message(&file, Policy::File, 1, &log), None);
        assert_eq!(message(&file, Policy::FallbackToLogsOnError, 0, &log), None);
        let tail = message(&file, Policy::FallbackToLogsOnError, 1, &log).unwrap();
        assert!(tail.ends_with("line 99\nhalf and half\n"), "{tail}");
        assert_eq!(tail.lines().count(), 80);
        assert!(tail.starts_with("line 21\n"), "{tail}");

        // The file wins, cut to 4096 bytes.
        std::fs::write(&file, "x".repeat(5000)).unwrap();
        assert_eq!(
            message(&file, Policy::FallbackToLogsOnError, 1, &log)
                .unwrap()
                .len(),
            4096
        );
        // Long log lines: the last 2048 bytes.
        let long: String = (0..80)
            .map(|i| format!("2026-01-01T00:00:00Z stdout F {i:0>60}\n"))
            .collect();
        std::fs::write(&log, long).unwrap();
        assert_eq!(log_tail(&log).len(), 2048);
        assert_eq!(
            Policy::parse(Some("FallbackToLogsOnError")).as_str(),
            "FallbackToLogsOnError"
        );
        assert_eq!(Policy::parse(None), Policy::File);
    }
}
