//! The kubelet's atomic writer, for configMap, secret and downwardAPI volumes.
//!
//! Layout of a volume directory:
//! ```text
//! ..2026_12_01_09_30_00.123456789/   the payload, written once, never changed
//! ..data -> ..2026_12_01_09_30_00.123456789
//! key -> ..data/key                  one symlink per top-level name of the payload
//! ```
//! An update writes a new timestamped directory, then swaps `..data` by renaming a temporary
//! symlink over it (rename(2) is atomic), then removes the old directory. A reader therefore
//! sees the old payload or the new one, whole, and `..data` always exists. A container that
//! bind-mounts the volume directory sees the new `..data` as soon as it is swapped.
//!
//! Nothing is fsynced: after a power loss the payload may be short on disk, but setup compares
//! every file with the object before the pod's containers start and rewrites what differs.
//! One writer per directory at a time: the volume manager serializes calls per pod.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The name of the symlink naming the current payload directory.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    /// The file's content.
    pub data: Vec<u8>,
    /// Permission bits (`0o644`).
    pub mode: u32,
}

/// Relative path (already validated) to file.
pub type Payload = BTreeMap<String, FileProjection>;

/// A failed step: what was done to which path.
#[derive(Debug)]
pub struct WriteError {
    /// The step, such as `rename`.
    pub op: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// Why it failed.
    pub source: io::Error,
}

fn step<T>(op: &'static str, path: &Path, r: io::Result<T>) -> Result<T, WriteError> {
    r.map_err(|source| WriteError {
        op,
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `payload` into `dir` (which exists) atomically. Returns false when the payload on
/// disk is already the same (nothing was written).
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, WriteError> {
    let data_link = dir.join(DATA_DIR);
    let old = match fs::read_link(&data_link) {
        Ok(target) => Some(target),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return step("read symlink", &data_link, Err(e)),
    };
    let top: BTreeMap<&str, ()> = payload
        .keys()
        .map(|p| (p.split('/').next().unwrap_or(p.as_str()), ()))
        .collect();
    if let Some(old) = &old {
        if same_payload(&dir.join(old), payload) && links_present(dir, &top) {
            // Still clear what a crash mid-write may have left.
            remove_stale(dir, &old.to_string_lossy(), &top)?;
            return Ok(false);
        }
    }

    let ts = new_timestamped_dir(dir)?;
    let ts_path = dir.join(&ts);
    for (rel, file) in payload {
        write_file(&ts_path, rel, file)?;
    }

    // Swap `..data`: a new symlink under a temporary name, renamed over the old one.
    let tmp = dir.join(DATA_DIR_TMP);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => step("remove", &tmp, Err(e))?,
        _ => {}
    }
    step("symlink", &tmp, std::os::unix::fs::symlink(&ts, &tmp))?;
    step("rename", &data_link, fs::rename(&tmp, &data_link))?;

    // User-visible names.
    for name in top.keys() {
        let link = dir.join(name);
        match fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => step(
                "create symlink",
                &link,
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not the writer's symlink is in the way",
                )),
            )?,
            Err(_) => step(
                "symlink",
                &link,
                std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link),
            )?,
        }
    }

    remove_stale(dir, &ts, &top)?;
    Ok(true)
}

/// Removes payload directories other than `keep` (the previous one, and any a crash mid-write
/// left), and the writer's symlinks of names the payload no longer has.
fn remove_stale(dir: &Path, keep: &str, top: &BTreeMap<&str, ()>) -> Result<(), WriteError> {
    for entry in step("read dir", dir, fs::read_dir(dir))? {
        let entry = step("read dir", dir, entry)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name.starts_with("..") {
            if name == DATA_DIR_TMP {
                step("remove", &path, fs::remove_file(&path))?;
            } else if name != DATA_DIR && name != keep {
                step("remove", &path, fs::remove_dir_all(&path))?;
            }
        } else if !top.contains_key(name.as_ref()) && is_writer_link(&path, &name) {
            step("remove", &path, fs::remove_file(&path))?;
        }
    }
    Ok(())
}

/// The payload currently visible in `dir` (through `..data`), for tests and inspection.
pub fn read(dir: &Path) -> io::Result<Payload> {
    let mut out = Payload::new();
    collect(&dir.join(DATA_DIR), "", &mut out)?;
    Ok(out)
}

fn collect(dir: &Path, prefix: &str, out: &mut Payload) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = entry.metadata()?;
        if meta.is_dir() {
            collect(&entry.path(), &rel, out)?;
        } else {
            let data = fs::read(entry.path())?;
            let mode = meta.permissions().mode() & 0o7777;
            out.insert(rel, FileProjection { data, mode });
        }
    }
    Ok(())
}

fn same_payload(old_dir: &Path, payload: &Payload) -> bool {
    let mut current = Payload::new();
    collect(old_dir, "", &mut current).is_ok() && current == *payload
}

fn links_present(dir: &Path, top: &BTreeMap<&str, ()>) -> bool {
    top.keys().all(|n| is_writer_link(&dir.join(n), n))
}

/// A symlink `name -> ..data/name`, as this writer makes them.
fn is_writer_link(path: &Path, name: &str) -> bool {
    fs::read_link(path).is_ok_and(|t| t == Path::new(DATA_DIR).join(name))
}

/// `..YYYY_MM_DD_HH_MM_SS.<random>`, as the kubelet names them (mode 0755).
fn new_timestamped_dir(dir: &Path) -> Result<String, WriteError> {
    let now = crate::api::rfc3339(std::time::SystemTime::now());
    let stamp: String = now
        .trim_end_matches('Z')
        .chars()
        .map(|c| if c.is_ascii_digit() { c } else { '_' })
        .collect();
    loop {
        let name = format!("..{stamp}.{}", fastrand::u32(..));
        let path = dir.join(&name);
        match fs::create_dir(&path) {
            Ok(()) => {
                step(
                    "chmod",
                    &path,
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)),
                )?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return step("create dir", &path, Err(e)),
        }
    }
}

fn write_file(root: &Path, rel: &str, file: &FileProjection) -> Result<(), WriteError> {
    let path = root.join(rel);
    let mut parent = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        parent.push(part);
        if !parent.is_dir() {
            step("create dir", &parent, fs::create_dir(&parent))?;
            step(
                "chmod",
                &parent,
                fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)),
            )?;
        }
    }
    let mut f = step(
        "create",
        &path,
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path),
    )?;
    step("write", &path, f.write_all(&file.data))?;
    // Explicitly, so the umask does not change what the pod asked for.
    step(
        "chmod",
        &path,
        f.set_permissions(fs::Permissions::from_mode(file.mode)),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: s.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn writes_swaps_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut p = Payload::new();
        p.insert("a".into(), file("1", 0o644));
        p.insert("sub/b".into(), file("2", 0o400));
        assert!(write(dir, &p).unwrap());
        assert_eq!(read(dir).unwrap(), p);
        assert_eq!(fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        let first = fs::read_link(dir.join(DATA_DIR)).unwrap();
        assert!(first.to_string_lossy().starts_with("..20"), "{first:?}");

        // Same payload: nothing written.
        assert!(!write(dir, &p).unwrap());
        assert_eq!(fs::read_link(dir.join(DATA_DIR)).unwrap(), first);

        // A new payload drops `sub` and adds `c`.
        let mut q = Payload::new();
        q.insert("a".into(), file("1b", 0o644));
        q.insert("c".into(), file("3", 0o644));
        assert!(write(dir, &q).unwrap());
        assert_eq!(read(dir).unwrap(), q);
        assert!(!dir.join(&first).exists(), "old payload dir removed");
        assert!(fs::symlink_metadata(dir.join("sub")).is_err());
        let names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}"); // ..data, ..<ts>, a, c

        // What a crash mid-write leaves is cleared even when the payload is unchanged.
        fs::create_dir(dir.join("..2020_01_01_00_00_00.1")).unwrap();
        std::os::unix::fs::symlink("..2020_01_01_00_00_00.1", dir.join(DATA_DIR_TMP)).unwrap();
        assert!(!write(dir, &q).unwrap());
        assert!(!dir.join("..2020_01_01_00_00_00.1").exists());
        assert!(fs::symlink_metadata(dir.join(DATA_DIR_TMP)).is_err());
        assert_eq!(read(dir).unwrap(), q);
    }
}
