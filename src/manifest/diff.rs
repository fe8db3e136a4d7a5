//! The pure core of the source: read the directory into a [`Scan`], compare it with what the
//! source holds, and say what changes.

use super::check::{check, Checked};
use super::read::{documents, manifest_files};
use super::ManifestError;
use crate::api::ObjectError;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// A manifest file larger than this is not read (it is surely not a manifest).
const MAX_FILE_BYTES: u64 = 8 << 20;

/// An object the file source owns: the file it came from and the object as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Owned {
    /// The file's name within the manifest directory.
    pub file: String,
    /// The object as stored (completed by [`check`]).
    pub value: Value,
}

/// What the file source holds: resource string (`<ns>/<type>/<name>`) to object.
pub type Held = BTreeMap<String, Owned>;

/// One file as read: its objects, or why it is rejected as a whole.
#[derive(Clone, Debug)]
pub struct FileScan {
    /// The file's name within the directory.
    pub name: String,
    /// Its objects in file order, or the first error.
    pub objects: Result<Vec<Checked>, ManifestError>,
}

/// The directory as read, files in name order.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Every manifest file, sorted by name.
    pub files: Vec<FileScan>,
}

/// What the last scans read, so an unchanged file is not read and parsed again each period.
#[derive(Debug, Default)]
pub struct ScanCache {
    files: HashMap<String, Cached>,
    /// How many files the last scan read and parsed (the others came from the cache).
    pub parsed: usize,
    /// The directory as [`ScanCache::unchanged`] last opened it.
    open: Option<OpenDir>,
}

/// The manifest directory kept open between looks: opening it again each time costs glibc a
/// 32 KiB entry buffer, whose allocation and release were most of an idle agent's CPU at a
/// 100 ms period (`perf`, issue 19). A rewound stream reads the directory anew.
#[derive(Debug)]
struct OpenDir {
    dir: nix::dir::Dir,
    /// Device and inode of the directory opened: a directory replaced under the same path
    /// is opened again.
    id: (u64, u64),
}

#[derive(Debug)]
struct Cached {
    stamp: Stamp,
    /// Read when the file had been still for [`SETTLE_SECS`]: a later write cannot share
    /// the stamp, so an equal stamp means equal content.
    trusted: bool,
    /// Reached through a symlink: the target can change with no event in the directory.
    via_symlink: bool,
    objects: Result<Vec<Checked>, ManifestError>,
}

/// What identifies one version of a file: size, inode, change and modification times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl From<&nix::sys::stat::FileStat> for Stamp {
    // `From` and not a bare field: the stat fields are narrower on 32-bit targets (time_t,
    // ino_t), the same types on 64-bit ones (where the conversion is a no-op).
    #[allow(clippy::useless_conversion)]
    fn from(st: &nix::sys::stat::FileStat) -> Stamp {
        Stamp {
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
            len: u64::try_from(st.st_size).unwrap_or(0),
            mtime: (i64::from(st.st_mtime), i64::from(st.st_mtime_nsec)),
            ctime: (i64::from(st.st_ctime), i64::from(st.st_ctime_nsec)),
        }
    }
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        nix::sys::stat::stat(path).ok().map(|st| Stamp::from(&st))
    }

    /// Whether the file's last change is far enough behind `now` that a write within the
    /// same timestamp tick (coarse on some filesystems) cannot follow unseen.
    fn settled(&self, now: SystemTime) -> bool {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        now - self.mtime.0.max(self.ctime.0) >= SETTLE_SECS
    }
}

impl ScanCache {
    /// Whether `dir` holds just the files of the last scan, each with the stamp it had when
    /// it was read, settled: a scan would read nothing and find what the last one found.
    /// Allocates nothing once the directory is open: one `stat` of the directory, its
    /// entries, one `fstatat` per manifest file.
    pub fn unchanged(&mut self, dir: &Path) -> bool {
        let Some(open) = open_dir(&mut self.open, dir) else {
            return false;
        };
        let fd = open.dir.as_raw_fd();
        let mut seen = 0;
        for entry in open.dir.iter() {
            let Ok(entry) = entry else {
                return false;
            };
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if !super::read::is_manifest_name(name) {
                continue;
            }
            // As `manifest_files`: regular files and symlinks to them, nothing else.
            use nix::dir::Type;
            if !matches!(entry.file_type(), Some(Type::File | Type::Symlink) | None) {
                continue;
            }
            let Ok(st) = nix::sys::stat::fstatat(Some(fd), name, nix::fcntl::AtFlags::empty())
            else {
                // Dangling symlink, or removed since the listing: not a manifest.
                continue;
            };
            if nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
                != nix::sys::stat::SFlag::S_IFREG
            {
                continue;
            }
            let same = self
                .files
                .get(name)
                .is_some_and(|c| c.trusted && c.stamp == Stamp::from(&st));
            if !same {
                return false;
            }
            seen += 1;
        }
        seen == self.files.len()
    }

    /// Whether every file of the last scan was settled when read and none is a symlink:
    /// then, while an inotify watch of the directory reports nothing, nothing changed.
    pub fn watchable(&self) -> bool {
        self.files.values().all(|c| c.trusted && !c.via_symlink)
    }
}

/// Device and inode of the directory at `path` (what tells a directory replaced under the
/// same path).
#[allow(clippy::useless_conversion)] // st_dev and st_ino are narrower on 32-bit targets
pub fn dir_id(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::stat::stat(path).ok()?;
    Some((u64::from(st.st_dev), u64::from(st.st_ino)))
}

/// `dir`, open: `open` kept from the last look while the path names the same directory.
fn open_dir<'a>(open: &'a mut Option<OpenDir>, dir: &Path) -> Option<&'a mut OpenDir> {
    use nix::fcntl::OFlag;
    let Some(id) = dir_id(dir) else {
        *open = None;
        return None;
    };
    if open.as_ref().is_none_or(|o| o.id != id) {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        *open = nix::dir::Dir::open(dir, flags, nix::sys::stat::Mode::empty())
            .ok()
            .map(|dir| OpenDir { dir, id });
    }
    open.as_mut()
}

/// A file changed in the last seconds is read again on every scan.
const SETTLE_SECS: i64 = 2;

/// Reads `dir`: every manifest file, each checked for node `node`. A file with one bad
/// object is rejected whole (a half-applied file is harder to reason about than a kept one).
/// A file with the stamp it had when `cache` read it, settled then, is taken from `cache`.
/// `Err` when the directory itself cannot be read: then nothing should change.
pub fn scan(dir: &Path, node: &str, cache: &mut ScanCache) -> std::io::Result<Scan> {
    scan_at(dir, node, cache, SystemTime::now())
}

fn scan_at(
    dir: &Path,
    node: &str,
    cache: &mut ScanCache,
    now: SystemTime,
) -> std::io::Result<Scan> {
    Ok(scan_listed(dir, manifest_files(dir)?, node, cache, now))
}

/// [`scan_at`] of the files `names` of `dir`, as listed. A file removed since it was listed
/// is left out, as if it had not been listed (its objects go as a removed file's), not
/// reported as unreadable; an entry still there that cannot be read (a dangling symlink in an
/// atomic swap) is the file's error, and its objects are kept.
fn scan_listed(
    dir: &Path,
    names: Vec<String>,
    node: &str,
    cache: &mut ScanCache,
    now: SystemTime,
) -> Scan {
    cache.parsed = 0;
    let mut files = Vec::new();
    let mut next = HashMap::new();
    for name in names {
        let path = dir.join(&name);
        let stamp = Stamp::of(&path);
        let objects = match (cache.files.remove(&name), stamp) {
            (Some(c), Some(s)) if c.trusted && c.stamp == s => c.objects,
            _ => {
                cache.parsed += 1;
                read_file(&path, &name, node)
            }
        };
        if objects.is_err()
            && std::fs::symlink_metadata(&path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            continue;
        }
        if let Some(stamp) = stamp {
            let cached = Cached {
                stamp,
                trusted: stamp.settled(now),
                via_symlink: std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink()),
                objects: objects.clone(),
            };
            next.insert(name.clone(), cached);
        }
        files.push(FileScan { name, objects });
    }
    cache.files = next;
    Scan { files }
}

/// Reads and checks one file.
pub fn read_file(path: &Path, name: &str, node: &str) -> Result<Vec<Checked>, ManifestError> {
    let fail = |object: String, field: &str, reason: String| ManifestError {
        file: name.to_string(),
        error: ObjectError {
            object,
            field: field.to_string(),
            reason,
        },
    };
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > MAX_FILE_BYTES {
        return Err(fail(
            "file".into(),
            "",
            format!("{size} bytes, above the {MAX_FILE_BYTES}-byte limit for a manifest"),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail("file".into(), "", format!("cannot read: {e}")))?;
    let docs = documents(&text).map_err(|e| {
        fail(
            format!("object ({})", e.place),
            "",
            format!("not valid YAML or JSON: {}", e.reason),
        )
    })?;
    docs.iter()
        .map(|d| {
            check(d, name, node).map_err(|error| ManifestError {
                file: name.to_string(),
                error,
            })
        })
        .collect()
}

/// A change the source makes.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// An object the source did not hold.
    Insert {
        /// `<ns>/<type>/<name>`.
        resource: String,
        /// The object and its file.
        new: Owned,
    },
    /// An object whose content or file changed.
    Update {
        /// `<ns>/<type>/<name>`.
        resource: String,
        /// What was held.
        old: Owned,
        /// What the files say now.
        new: Owned,
    },
    /// An object no file defines any more.
    Delete {
        /// `<ns>/<type>/<name>`.
        resource: String,
        /// What was held.
        old: Owned,
    },
}

impl Change {
    /// The resource string it concerns.
    pub fn resource(&self) -> &str {
        match self {
            Change::Insert { resource, .. }
            | Change::Update { resource, .. }
            | Change::Delete { resource, .. } => resource,
        }
    }
}

/// The outcome of comparing a scan with what was held.
#[derive(Clone, Debug, Default)]
pub struct Diff {
    /// What the source holds once the changes are applied.
    pub next: Held,
    /// Inserts and updates in resource order, then deletes.
    pub changes: Vec<Change>,
    /// Rejected files and duplicate objects.
    pub errors: Vec<ManifestError>,
}

/// Compares `scan` with `prev`. A rejected file keeps the objects it held before; an object
/// defined in two files is taken from the first by name; `creationTimestamp` is set to `now`
/// when an object is first seen and kept across edits, as the API server does.
pub fn diff(prev: &Held, scan: &Scan, now: &str) -> Diff {
    let mut next = Held::new();
    let mut errors = Vec::new();
    for f in &scan.files {
        match &f.objects {
            Ok(objects) => {
                for c in objects {
                    let resource = c.resource();
                    if let Some(first) = next.get(&resource) {
                        errors.push(ManifestError {
                            file: f.name.clone(),
                            error: ObjectError {
                                object: format!("{} {}/{}", c.kind, c.namespace, c.name),
                                field: String::new(),
                                reason: if first.file == f.name {
                                    "defined twice in this file; the first is used".into()
                                } else {
                                    format!(
                                        "also defined in {}, which comes first and is used",
                                        first.file
                                    )
                                },
                            },
                        });
                        continue;
                    }
                    let mut value = c.value.clone();
                    let created = prev
                        .get(&resource)
                        .and_then(|o| created_at(&o.value))
                        .unwrap_or(now)
                        .to_string();
                    if created_at(&value).is_none() {
                        if let Some(meta) =
                            value.get_mut("metadata").and_then(|m| m.as_object_mut())
                        {
                            meta.insert("creationTimestamp".into(), Value::String(created));
                        }
                    }
                    next.insert(
                        resource,
                        Owned {
                            file: f.name.clone(),
                            value,
                        },
                    );
                }
            }
            Err(e) => {
                errors.push(e.clone());
                for (resource, o) in prev.iter().filter(|(_, o)| o.file == f.name) {
                    next.entry(resource.clone()).or_insert_with(|| o.clone());
                }
            }
        }
    }
    let mut changes = Vec::new();
    for (resource, new) in &next {
        match prev.get(resource) {
            None => changes.push(Change::Insert {
                resource: resource.clone(),
                new: new.clone(),
            }),
            Some(old) if old != new => changes.push(Change::Update {
                resource: resource.clone(),
                old: old.clone(),
                new: new.clone(),
            }),
            Some(_) => {}
        }
    }
    for (resource, old) in prev {
        if !next.contains_key(resource) {
            changes.push(Change::Delete {
                resource: resource.clone(),
                old: old.clone(),
            });
        }
    }
    Diff {
        next,
        changes,
        errors,
    }
}

fn created_at(v: &Value) -> Option<&str> {
    v.get("metadata")?.get("creationTimestamp")?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n  - name: c\n    image: IMAGE\n";

    fn pod(name: &str, image: &str) -> String {
        POD.replace("NAME", name).replace("IMAGE", image)
    }

    fn ops(d: &Diff) -> Vec<String> {
        d.changes
            .iter()
            .map(|c| {
                let op = match c {
                    Change::Insert { .. } => "insert",
                    Change::Update { .. } => "update",
                    Change::Delete { .. } => "delete",
                };
                format!("{op} {}", c.resource())
            })
            .collect()
    }

    #[test]
    fn insert_update_delete_and_kept_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a.yaml"), pod("a", "busybox")).unwrap();
        fs::write(p.join("b.yaml"), pod("b", "busybox")).unwrap();
        fs::write(p.join("notes.txt"), "not a manifest").unwrap();
        let d = diff(
            &Held::new(),
            &scan(p, "n", &mut ScanCache::default()).unwrap(),
            "T1",
        );
        assert_eq!(ops(&d), ["insert default/pod/a", "insert default/pod/b"]);
        assert!(d.errors.is_empty());
        assert_eq!(
            d.next["default/pod/a"].value["metadata"]["creationTimestamp"],
            "T1"
        );
        let held = d.next;
        // Unchanged: nothing.
        assert!(diff(
            &held,
            &scan(p, "n", &mut ScanCache::default()).unwrap(),
            "T2"
        )
        .changes
        .is_empty());
        // Edit a, break b, remove nothing: a updated (creation time kept), b kept.
        fs::write(p.join("a.yaml"), pod("a", "busybox:2")).unwrap();
        fs::write(p.join("b.yaml"), "kind: [").unwrap();
        let d = diff(
            &held,
            &scan(p, "n", &mut ScanCache::default()).unwrap(),
            "T3",
        );
        assert_eq!(ops(&d), ["update default/pod/a"]);
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].file, "b.yaml");
        assert_eq!(
            d.next["default/pod/a"].value["metadata"]["creationTimestamp"],
            "T1"
        );
        assert_eq!(d.next["default/pod/b"], held["default/pod/b"]);
        // Remove b: deleted.
        let held = d.next;
        fs::remove_file(p.join("b.yaml")).unwrap();
        let d = diff(
            &held,
            &scan(p, "n", &mut ScanCache::default()).unwrap(),
            "T4",
        );
        assert_eq!(ops(&d), ["delete default/pod/b"]);
    }

    #[test]
    fn unchanged_settled_files_come_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a.yaml"), pod("a", "one")).unwrap();
        fs::write(p.join("b.yaml"), "kind: [").unwrap();
        let mut cache = ScanCache::default();
        let now = SystemTime::now();
        let later = now + std::time::Duration::from_secs(10);
        let first = scan_at(p, "n", &mut cache, now).unwrap();
        assert_eq!(cache.parsed, 2);
        // Read just after a write: read again, since a write within the same timestamp tick
        // could hide behind the stamp; the first read once the file is settled is trusted.
        assert!(!cache.unchanged(p));
        scan_at(p, "n", &mut cache, later).unwrap();
        assert_eq!(cache.parsed, 2);
        assert!(cache.unchanged(p));
        // Settled and unchanged: nothing read, the same objects and errors.
        let again = scan_at(p, "n", &mut cache, later).unwrap();
        assert_eq!(cache.parsed, 0);
        assert_eq!(again.files.len(), 2);
        assert_eq!(again.files[0].objects, first.files[0].objects);
        assert_eq!(again.files[1].objects, first.files[1].objects);
        // An edit is seen; a new file is read; a removed one is dropped.
        fs::write(p.join("a.yaml"), pod("a", "three")).unwrap();
        fs::write(p.join("c.yaml"), pod("c", "one")).unwrap();
        fs::remove_file(p.join("b.yaml")).unwrap();
        let edited = scan_at(
            p,
            "n",
            &mut cache,
            later + std::time::Duration::from_secs(10),
        );
        let edited = edited.unwrap();
        assert_eq!(cache.parsed, 2);
        let names: Vec<_> = edited.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.yaml", "c.yaml"]);
        let a = edited.files[0].objects.as_ref().unwrap();
        assert_eq!(a[0].value["spec"]["containers"][0]["image"], "three");
        assert_eq!(cache.files.len(), 2);
        assert!(cache.unchanged(p));
        assert!(!ScanCache::default().unchanged(p));
    }

    #[test]
    fn unchanged_sees_every_kind_of_change() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a.yaml"), pod("a", "one")).unwrap();
        let mut cache = ScanCache::default();
        let later = SystemTime::now() + std::time::Duration::from_secs(10);
        assert!(!cache.unchanged(p), "never scanned");
        scan_at(p, "n", &mut cache, SystemTime::now()).unwrap();
        assert!(
            !cache.unchanged(p),
            "read just after its write: not trusted"
        );
        scan_at(p, "n", &mut cache, later).unwrap();
        assert!(cache.unchanged(p));
        // A new file, a removed file, an edit: each is a change.
        fs::write(p.join("b.yaml"), pod("b", "one")).unwrap();
        assert!(!cache.unchanged(p));
        fs::remove_file(p.join("b.yaml")).unwrap();
        assert!(cache.unchanged(p));
        // (Another size: two writes within one timestamp tick look alike; `settled` covers
        // that case outside tests.)
        fs::write(p.join("a.yaml"), pod("a", "three")).unwrap();
        assert!(!cache.unchanged(p));
        fs::remove_file(p.join("a.yaml")).unwrap();
        assert!(!cache.unchanged(p));
    }

    #[test]
    fn unchanged_reads_the_directory_anew_and_follows_it_when_replaced() {
        let top = tempfile::tempdir().unwrap();
        let p = top.path().join("manifests");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("a.yaml"), pod("a", "one")).unwrap();
        // Not manifests: a subdirectory with a manifest's name, a dangling symlink.
        fs::create_dir(p.join("sub.yaml")).unwrap();
        std::os::unix::fs::symlink("gone.yaml", p.join("dangling.yaml")).unwrap();
        let mut cache = ScanCache::default();
        let later = SystemTime::now() + std::time::Duration::from_secs(10);
        let scanned = scan_at(&p, "n", &mut cache, later).unwrap();
        assert_eq!(scanned.files.len(), 1);
        assert!(cache.unchanged(&p));
        // The directory stays open between looks and each look sees what is there now.
        for _ in 0..3 {
            fs::write(p.join("b.yaml"), pod("b", "one")).unwrap();
            assert!(!cache.unchanged(&p));
            fs::remove_file(p.join("b.yaml")).unwrap();
            assert!(cache.unchanged(&p));
        }
        // A symlink to a manifest elsewhere is one.
        fs::write(top.path().join("c.yaml"), pod("c", "one")).unwrap();
        std::os::unix::fs::symlink(top.path().join("c.yaml"), p.join("c.yaml")).unwrap();
        assert!(!cache.unchanged(&p));
        scan_at(&p, "n", &mut cache, later).unwrap();
        assert!(cache.unchanged(&p));
        // The directory replaced by another under the same path: the new one is looked at
        // (the old one, still open, holds files the cache no longer knows).
        let moved = top.path().join("old");
        fs::rename(&p, &moved).unwrap();
        fs::create_dir(&p).unwrap();
        assert!(!cache.unchanged(&p));
        assert!(scan_at(&p, "n", &mut cache, later)
            .unwrap()
            .files
            .is_empty());
        assert!(
            cache.unchanged(&p),
            "the new, empty directory is the one looked at"
        );
        fs::write(p.join("d.yaml"), pod("d", "one")).unwrap();
        assert!(!cache.unchanged(&p));
        // No directory at all: changed (its objects go).
        fs::remove_file(p.join("d.yaml")).unwrap();
        fs::remove_dir(&p).unwrap();
        let mut empty = ScanCache::default();
        assert!(!empty.unchanged(&p));
    }

    #[test]
    fn duplicate_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a.yaml"), pod("web", "one")).unwrap();
        fs::write(
            p.join("b.yaml"),
            format!("{}---\n{}", pod("web", "two"), pod("other", "x")),
        )
        .unwrap();
        let d = diff(
            &Held::new(),
            &scan(p, "n", &mut ScanCache::default()).unwrap(),
            "T",
        );
        assert_eq!(
            ops(&d),
            ["insert default/pod/other", "insert default/pod/web"]
        );
        assert_eq!(
            d.next["default/pod/web"].value["spec"]["containers"][0]["image"],
            "one"
        );
        let e = d.errors[0].to_string();
        assert!(
            e.contains("b.yaml") && e.contains("a.yaml") && e.contains("Pod default/web"),
            "{e}"
        );
    }

    #[test]
    fn unreadable_dir_is_an_error_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            scan(&dir.path().join("nope"), "n", &mut ScanCache::default())
                .unwrap()
                .files
                .is_empty()
        );
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        assert!(scan(&file, "n", &mut ScanCache::default()).is_err());
    }

    #[test]
    fn a_file_removed_after_the_listing_is_left_out_and_a_dangling_link_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("a.yaml"), pod("a", "busybox")).unwrap();
        std::os::unix::fs::symlink(p.join("nowhere.yaml"), p.join("dangling.yaml")).unwrap();
        let names = vec!["a.yaml".into(), "gone.yaml".into(), "dangling.yaml".into()];
        let scan = scan_listed(p, names, "n", &mut ScanCache::default(), SystemTime::now());
        let seen: Vec<(&str, bool)> = scan
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.objects.is_ok()))
            .collect();
        assert_eq!(seen, [("a.yaml", true), ("dangling.yaml", false)]);
    }
}
