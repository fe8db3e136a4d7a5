//! The manifest directory source (`--pod-manifest-path`): static Pods, ConfigMaps and Secrets
//! from JSON and YAML files, read again every `--file-check-frequency`, turned into beehive
//! messages for the [`MetaManager`].
//!
//! The source owns only the objects it made: they carry `kubernetes.io/config.source: file`
//! and [`ANNOTATION_FILE`], so objects from the cloud in the same store are never touched, and
//! at start the source finds what it made before (deleting what lost its file).
//!
//! Layers: [`read`] (files and documents, after [`depth`] bounds their nesting), [`check`] (one object, as the API server checks it),
//! [`diff`](mod@diff) (the pure scan/compare core), and [`Source`] (applies changes through MetaManager).

pub mod check;
pub mod depth;
pub mod diff;
pub mod hash;
pub mod read;
mod strict;
pub mod yaml11;

pub use diff::{diff, scan, Change, Diff, Held, Owned, Scan};

use crate::api::ObjectError;
use crate::message::{module, op, Message, Resource};
use crate::metamanager::{key, MetaManager, Store, StoreError, Table};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The kubelet's annotation naming where a pod came from; the source sets it to `file`.
pub const ANNOTATION_SOURCE: &str = "kubernetes.io/config.source";
/// The kubelet's annotation holding a hash of the object as written.
pub const ANNOTATION_HASH: &str = "kubernetes.io/config.hash";
/// The manifest file (name within the directory) an object came from.
pub const ANNOTATION_FILE: &str = "edged.io/manifest-file";

/// A manifest that cannot be used: the file, the object and the field, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestError {
    /// The file's name within the manifest directory.
    pub file: String,
    /// The object, field and reason.
    pub error: ObjectError,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.error)
    }
}

impl std::error::Error for ManifestError {}

/// The file an object came from, when the file source owns it.
pub fn owner_file(value: &Value) -> Option<&str> {
    let ann = value.get("metadata")?.get("annotations")?;
    if ann.get(ANNOTATION_SOURCE)?.as_str()? != "file" {
        return None;
    }
    ann.get(ANNOTATION_FILE)?.as_str()
}

/// The tables the source writes.
const TABLES: [Table; 3] = [Table::Pod, Table::ConfigMap, Table::Secret];

/// What the file source made earlier, read back from the store (rows of the other sources
/// are left out).
pub fn stored(store: &Store) -> Result<Held, StoreError> {
    let mut held = Held::new();
    for t in TABLES {
        for (row, value) in store.list(t)? {
            let Some(file) = owner_file(&value) else {
                continue;
            };
            let Some((ns, name)) = row.split_once('/') else {
                continue;
            };
            held.insert(
                format!("{ns}/{}/{name}", t.resource_type()),
                Owned {
                    file: file.to_string(),
                    value,
                },
            );
        }
    }
    Ok(held)
}

/// What one pass of the source did.
#[derive(Debug, Default)]
pub struct Report {
    /// The messages MetaManager took, in order.
    pub applied: Vec<Message>,
    /// Every problem of this pass (bad files, duplicates, conflicts, store failures).
    pub errors: Vec<String>,
}

/// The manifest directory source.
pub struct Source {
    dir: PathBuf,
    node: String,
    held: Held,
    /// Errors logged by the last pass: an error is logged once, not every rescan.
    logged: BTreeSet<String>,
    /// Files as last read: unchanged ones are not parsed again.
    cache: diff::ScanCache,
    /// The next pass must scan and compare even if no file changed: the first pass, or one
    /// after a change that could not be applied.
    retry: bool,
    /// Resources whose delete the last pass could not store (handed to edged all the same).
    unstored_deletes: BTreeSet<String>,
}

impl Source {
    /// A source reading `dir` for node `node`, holding `held` (see [`stored`]).
    pub fn new(dir: PathBuf, node: String, held: Held) -> Self {
        Source {
            dir,
            node,
            held,
            logged: BTreeSet::new(),
            cache: diff::ScanCache::default(),
            retry: true,
            unstored_deletes: BTreeSet::new(),
        }
    }

    /// Resources (`<ns>/<type>/<name>`) whose file is gone but whose delete the last pass
    /// could not store: at start, stored pods among them must not be started again.
    pub fn unstored_deletes(&self) -> &BTreeSet<String> {
        &self.unstored_deletes
    }

    /// What the source holds now.
    pub fn held(&self) -> &Held {
        &self.held
    }

    /// Whether only a change an inotify watch of the directory reports can give the next
    /// pass something to do: nothing to retry, every file settled when read, none a symlink.
    pub fn quiet_under_watch(&self) -> bool {
        !self.retry && self.cache.watchable()
    }

    /// Reads the directory once and hands every change to `meta`. An object whose change
    /// fails is left as it was, to be tried again next pass.
    pub async fn sync(&mut self, meta: &MetaManager) -> Report {
        let mut report = Report::default();
        // Nothing to read and nothing to retry: nothing can change. This look (one directory
        // read and a stat per file, from the inode cache) is made here, not on the blocking
        // pool: at a 100 ms rescan the hop to a pool thread and back was most of the agent's
        // CPU at rest (two thread wake-ups a rescan).
        if !self.retry && self.cache.unchanged(&self.dir) {
            return report;
        }
        let (dir, node) = (self.dir.clone(), self.node.clone());
        let mut cache = std::mem::take(&mut self.cache);
        let (scanned, cache) = smol::unblock(move || {
            let scanned = diff::scan(&dir, &node, &mut cache);
            (scanned, cache)
        })
        .await;
        self.cache = cache;
        self.retry = true;
        let scanned = match scanned {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(format!(
                    "cannot read the manifest directory {}: {e}; objects are kept as they are",
                    self.dir.display()
                ));
                self.log(&report.errors);
                return report;
            }
        };
        if !self.dir.is_dir() {
            // As the kubelet: no directory, no objects from files (held ones are deleted).
            report.errors.push(format!(
                "the manifest directory {} does not exist: no objects from files",
                self.dir.display()
            ));
        }
        let now = crate::api::rfc3339(std::time::SystemTime::now());
        let d = diff::diff(&self.held, &scanned, &now);
        report.errors.extend(d.errors.iter().map(|e| e.to_string()));
        let mut next = d.next;
        let mut failed = false;
        self.unstored_deletes.clear();
        for change in d.changes {
            match self.apply(meta, &change).await {
                Ok(Some(msg)) => {
                    tracing::info!(
                        operation = %msg.route.operation,
                        resource = %msg.route.resource,
                        "manifest change applied"
                    );
                    report.applied.push(msg);
                }
                Ok(None) => {}
                Err(e) => {
                    report.errors.push(e);
                    failed = true;
                    // Undo in `next`, so the change is tried again next pass.
                    match change {
                        Change::Insert { resource, .. } => {
                            next.remove(&resource);
                        }
                        Change::Delete { resource, old } => {
                            self.unstored_deletes.insert(resource.clone());
                            next.insert(resource, old);
                        }
                        Change::Update { resource, old, .. } => {
                            next.insert(resource, old);
                        }
                    }
                }
            }
        }
        self.held = next;
        self.retry = failed;
        self.log(&report.errors);
        report
    }

    /// Applies one change if the store's row is the source's to change.
    async fn apply(&self, meta: &MetaManager, change: &Change) -> Result<Option<Message>, String> {
        let resource = change.resource().to_string();
        let r = Resource::parse(&resource).ok_or_else(|| format!("bad resource {resource}"))?;
        let table = Table::from_resource_type(&r.kind)
            .ok_or_else(|| format!("{resource}: not a stored type"))?;
        let store = meta.store().clone();
        let row = key(&r.namespace, &r.name);
        let current = smol::unblock(move || store.get(table, &row))
            .await
            .map_err(|e| format!("{resource}: {e}"))?;
        let ours = current.as_ref().map(|v| owner_file(v).is_some());
        let (operation, content, file) = match change {
            Change::Insert { new, .. } | Change::Update { new, .. } => {
                if ours == Some(false) {
                    return Err(format!(
                        "{}: {} {}/{}: the store holds this object from another source (the cloud); the file's definition is not used",
                        new.file,
                        kind_of(&new.value),
                        r.namespace,
                        r.name
                    ));
                }
                let operation = if current.is_none() {
                    op::INSERT
                } else {
                    op::UPDATE
                };
                (operation, new.value.clone(), &new.file)
            }
            Change::Delete { old, .. } => {
                if ours != Some(true) {
                    // Gone already, or another source's now: nothing of ours to delete.
                    return Ok(None);
                }
                (op::DELETE, old.value.clone(), &old.file)
            }
        };
        let msg = Message::new(
            module::MANIFEST,
            module::RESOURCE,
            operation,
            resource.clone(),
        )
        .with_content(content);
        meta.handle(msg.clone()).await.map_err(|e| {
            format!("{file}: {resource}: {operation} failed, tried again next pass: {e}")
        })?;
        Ok(Some(msg))
    }

    /// Logs the errors not logged by the last pass.
    fn log(&mut self, errors: &[String]) {
        let now: BTreeSet<String> = errors.iter().cloned().collect();
        for e in now.difference(&self.logged) {
            tracing::error!(dir = %self.dir.display(), "manifest: {e}");
        }
        for e in self.logged.difference(&now) {
            tracing::info!(dir = %self.dir.display(), "manifest: resolved: {e}");
        }
        self.logged = now;
    }
}

fn kind_of(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("object")
}

/// The source's task: finds what it made before in the store, then reads `dir` every
/// `period` for ever, handing changes to `meta`.
pub async fn run(dir: PathBuf, period: Duration, node_name: String, meta: Arc<MetaManager>) {
    let source = start(dir, node_name, &meta).await;
    keep_reading(source, period, meta).await
}

/// Finds what the source made before in the store and reads the directory once (at agent
/// start, before stored pods run again: a pod whose file went while the agent was down is
/// deleted, not started).
pub async fn start(dir: PathBuf, node_name: String, meta: &MetaManager) -> Source {
    let store = meta.store().clone();
    let held = match smol::unblock(move || stored(&store)).await {
        Ok(h) => h,
        Err(e) => {
            // Without it, files removed while edged was down leave their objects behind.
            tracing::error!(error = %e, "manifest: cannot read what the store holds from files");
            Held::new()
        }
    };
    tracing::info!(
        dir = %dir.display(),
        objects = held.len(),
        "manifest source started"
    );
    let mut source = Source::new(dir, node_name, held);
    source.sync(meta).await;
    source
}

/// With an inotify watch on the directory, the timed look is skipped while nothing could have
/// changed unseen, but made at least this often all the same (the kubelet's default
/// `--file-check-frequency`: the bound on a change inotify cannot see, such as a file
/// changed under a bind mount or on a network filesystem).
pub const WATCHED_LOOK: Duration = Duration::from_secs(20);

/// Reads the directory of a started source again when inotify says something in it changed
/// (as the kubelet's file source watches), and every `period` besides, for what inotify cannot
/// see: a directory replaced (watched again), a symlinked file's target, a file read while
/// its writer could still be writing. While none of those can be, the timed look waits up to
/// [`WATCHED_LOOK`]: at a 100 ms period and 100 files it was a third of the agent's CPU at
/// rest (issue 19).
pub async fn keep_reading(mut source: Source, period: Duration, meta: Arc<MetaManager>) {
    // `--file-check-frequency 0` would spin: read at most ten times a second.
    let period = period.max(Duration::from_millis(100));
    let mut warned = false;
    let mut watch = watch_dir(&source.dir, &mut warned);
    // What changed between the first pass and the watch.
    source.sync(&meta).await;
    let mut last_look = Instant::now();
    loop {
        let changed = async {
            match &watch {
                Some((w, _)) => loop {
                    let _ = w.readable().await;
                    // A file closed after writing, or renamed into place, is read at once
                    // (the kubelet reads on every event); one only made or written to yet
                    // gets 50 ms for its writer to finish what it writes in several steps.
                    // Files that are not manifests (a writer's hidden temporary file before
                    // its rename) wake nothing.
                    use crate::kuberuntime::logs::Activity;
                    match w.get_ref().drain_for(read::is_manifest_name) {
                        Activity::Nothing => continue,
                        Activity::Ended => break,
                        Activity::Begun => {
                            smol::Timer::after(Duration::from_millis(50)).await;
                            w.get_ref().clear();
                            break;
                        }
                    }
                },
                None => std::future::pending::<()>().await,
            }
        };
        let event = smol::future::or(
            async {
                changed.await;
                true
            },
            async {
                smol::Timer::after(period).await;
                false
            },
        )
        .await;
        if !event {
            let now = diff::dir_id(&source.dir);
            let covered = now.is_some() && watch.as_ref().map(|(_, id)| *id) == now;
            if !covered && now.is_some() {
                // A directory made or replaced since: watched before it is read.
                watch = watch_dir(&source.dir, &mut warned);
            }
            if !look_on_timer(covered, source.quiet_under_watch(), last_look.elapsed()) {
                continue;
            }
        }
        last_look = Instant::now();
        source.sync(&meta).await;
    }
}

/// Whether a timed wake looks at the directory (an inotify event always does): not while the
/// watch `covers` the directory at the path, the source is quiet (see
/// [`Source::quiet_under_watch`]) and the last look is less than [`WATCHED_LOOK`] ago.
fn look_on_timer(covers: bool, quiet: bool, since_last_look: Duration) -> bool {
    !(covers && quiet && since_last_look < WATCHED_LOOK)
}

/// An inotify watch of `dir` with the directory's device and inode, or `None` (a warning the
/// first time: then the directory is read every period).
fn watch_dir(
    dir: &Path,
    warned: &mut bool,
) -> Option<(smol::Async<crate::kuberuntime::logs::Watch>, (u64, u64))> {
    let id = diff::dir_id(dir)?;
    match crate::kuberuntime::logs::Watch::dir(dir).and_then(smol::Async::new) {
        Ok(w) => Some((w, id)),
        Err(e) => {
            if !std::mem::replace(warned, true) {
                tracing::warn!(dir = %dir.display(), error = %e, "manifest: no inotify watch; reading every --file-check-frequency only");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_wake_looks_unless_the_watch_sees_everything() {
        let s = Duration::from_secs;
        for (covered, quiet, since, look) in [
            // A watched, quiet directory is not looked at between events...
            (true, true, s(1), false),
            (true, true, s(19), false),
            // ...but at least every WATCHED_LOOK.
            (true, true, WATCHED_LOOK, true),
            // A file still settling, a symlink, a pass to retry: every period.
            (true, false, s(1), true),
            // No watch, or one of a directory replaced since: every period.
            (false, true, s(1), true),
            (false, false, s(1), true),
        ] {
            assert_eq!(
                look_on_timer(covered, quiet, since),
                look,
                "{covered} {quiet} {since:?}"
            );
        }
    }
}
