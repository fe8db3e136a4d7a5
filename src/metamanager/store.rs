//! The local store: one LMDB environment (heed), a table per object type, rows keyed
//! `<namespace>/<name>` holding the object's JSON as it came.
//!
//! Every write is one LMDB transaction committed with fsync before it returns, so a write the
//! agent has acknowledged survives `kill -9` and a power cut. Readers (`edged get`) may open the
//! same files while the agent writes.
//!
//! Before LMDB maps `data.mdb`, [`super::check`] reads it (meta pages, every reachable page):
//! a damaged file is refused with [`StoreError::is_damage`] set (exit code
//! [`EXIT_STORE_DAMAGED`]) rather than mapped and met as a SIGBUS. [`Store::open_recovering`]
//! moves a damaged file aside and starts an empty store instead (`--store-recover`).

use super::check::{self, Damage, Health, DATA_FILE, USED_MARKER};
use heed::types::{Bytes, Str};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, WithoutTls};
use std::fmt;
use std::path::{Path, PathBuf};

/// The on-disk format version, kept in the `meta` table. A release that changes the layout
/// bumps it and migrates in [`Store::open`].
pub const FORMAT_VERSION: u32 = 1;

/// The exit code of the agent and of `edged get` when the store is damaged (see
/// [`StoreError::is_damage`]).
pub const EXIT_STORE_DAMAGED: i32 = 3;

/// LMDB's map is address space, not disk: keep it modest on 32-bit devices. The unit tests
/// open many stores in one process (some stay open until it ends, held by the tasks of the
/// test's executor): 32 MiB each there, so a 32-bit test run stays within its 4 GiB.
const MAP_SIZE: usize = if cfg!(target_pointer_width = "64") {
    4 << 30
} else if cfg!(test) {
    32 << 20
} else {
    512 << 20
};

/// The store's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Pods (v1 Pod JSON), keyed `<namespace>/<name>`.
    Pod,
    /// ConfigMaps, keyed `<namespace>/<name>`.
    ConfigMap,
    /// Secrets, keyed `<namespace>/<name>`.
    Secret,
    /// The last pod status sent (v1 PodStatus JSON), keyed `<namespace>/<name>`.
    PodStatus,
    /// The node's own record, keyed `null/<node name>`.
    Node,
    /// Service-account tokens the cloud issued for pods (the TokenRequest answers), keyed by
    /// [`crate::token::row_key`]: `<namespace>/<pod uid>/...`, removed with the pod.
    ServiceAccountToken,
    /// The cluster's Services as the cloud last listed them (trimmed to what the service
    /// environment variables need), keyed `<namespace>/<name>`: the list pods get while the
    /// cloud is away.
    Service,
}

impl Table {
    /// Every table, in the order they are opened.
    pub const ALL: [Table; 7] = [
        Table::Pod,
        Table::ConfigMap,
        Table::Secret,
        Table::PodStatus,
        Table::Node,
        Table::ServiceAccountToken,
        Table::Service,
    ];

    /// The beehive resource type the table holds (`pod`, `configmap`, ...).
    pub fn resource_type(self) -> &'static str {
        match self {
            Table::Pod => "pod",
            Table::ConfigMap => "configmap",
            Table::Secret => "secret",
            Table::PodStatus => "podstatus",
            Table::Node => "node",
            Table::ServiceAccountToken => "serviceaccounttoken",
            Table::Service => "service",
        }
    }

    /// The table for a beehive resource type a source may insert, update, delete or query
    /// (tokens are only asked of the cloud by the token manager, and services listed through
    /// its DynamicController: neither is ever sent down).
    pub fn from_resource_type(s: &str) -> Option<Table> {
        Table::ALL
            .into_iter()
            .filter(|t| !matches!(t, Table::ServiceAccountToken | Table::Service))
            .find(|t| t.resource_type() == s)
    }
}

/// A store failure, with the operation and the row it concerned.
#[derive(Debug)]
pub struct StoreError {
    /// What was being done, such as `read pod/ns/name`, `commit` or `open <dir>`.
    pub context: String,
    /// The failure (LMDB, JSON or the filesystem).
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store: {}: {}", self.context, self.source)
    }
}

impl StoreError {
    /// Whether the store failed for want of disk space.
    pub fn is_no_space(&self) -> bool {
        crate::reserve::is_no_space(self.source.as_ref())
    }

    /// Whether the store's file is damaged (truncated, overwritten, emptied): the agent then
    /// exits with [`EXIT_STORE_DAMAGED`], and `--store-recover` moves the file aside.
    pub fn is_damage(&self) -> bool {
        if self.source.downcast_ref::<Damage>().is_some() {
            return true;
        }
        matches!(
            self.source.downcast_ref::<heed::Error>(),
            Some(heed::Error::Mdb(
                heed::MdbError::Corrupted
                    | heed::MdbError::PageNotFound
                    | heed::MdbError::Invalid
                    | heed::MdbError::Panic
            ))
        )
    }
}

fn damaged(dir: &Path, d: Damage) -> StoreError {
    StoreError {
        context: format!("open {}", dir.display()),
        source: Box::new(d),
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

fn err<E: std::error::Error + Send + Sync + 'static>(
    context: impl Into<String>,
) -> impl FnOnce(E) -> StoreError {
    let context = context.into();
    move |e| StoreError {
        context,
        source: Box::new(e),
    }
}

/// One write of a batch applied by [`Store::apply`].
#[derive(Clone, Debug)]
pub enum Write {
    /// Writes a row: table, key, value.
    Put(Table, String, serde_json::Value),
    /// Deletes a row: table, key.
    Delete(Table, String),
}

/// The MetaManager's LMDB store.
pub struct Store {
    env: Env<WithoutTls>,
    /// One per [`Table::ALL`], in its order; `None`: a table the store was made without (an
    /// older agent's store opened read-only: it reads as empty).
    tables: Vec<Option<Database<Str, Bytes>>>,
    dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, for the agent. A damaged file is
    /// refused (see [`StoreError::is_damage`]).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(err(format!("create {}", dir.display())))?;
        check::check(dir).map_err(|d| damaged(dir, d))?;
        let store = Self::open_checked(dir)?;
        mark_used(dir).map_err(err(format!("write {}", dir.join(USED_MARKER).display())))?;
        Ok(store)
    }

    /// Opens the store in `dir` as [`Store::open`] does, but a damaged `data.mdb` is moved
    /// aside (`data.mdb.damaged-<unix seconds>`) and an empty store made in its place: the
    /// agent then rebuilds it from the manifests and the cloud. Returns where the damaged
    /// file went, if one was.
    pub fn open_recovering(dir: &Path) -> Result<(Store, Option<PathBuf>), StoreError> {
        match Self::open(dir) {
            Ok(s) => Ok((s, None)),
            Err(e) if e.is_damage() => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let from = dir.join(DATA_FILE);
                let to = dir.join(format!("{DATA_FILE}.damaged-{secs}"));
                let moved = if from.exists() {
                    std::fs::rename(&from, &to).map_err(err(format!(
                        "move {} to {}",
                        from.display(),
                        to.display()
                    )))?;
                    Some(to)
                } else {
                    None
                };
                // The lock file describes the old environment; the marker says data was
                // here, which is no longer so.
                for stale in ["lock.mdb", USED_MARKER] {
                    match std::fs::remove_file(dir.join(stale)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(err(format!("remove {}", dir.join(stale).display()))(e))
                        }
                    }
                }
                let s = Self::open(dir)?;
                Ok((s, moved))
            }
            Err(e) => Err(e),
        }
    }

    fn open_checked(dir: &Path) -> Result<Store, StoreError> {
        let env = Self::env(dir, EnvFlags::empty())?;
        let mut wtxn = env.write_txn().map_err(err("begin"))?;
        let mut tables = Vec::new();
        for t in Table::ALL {
            // A table added since the store was made is created here: a store of an older
            // agent opens as it is, with the new table empty.
            let db = env
                .create_database(&mut wtxn, Some(t.resource_type()))
                .map_err(err(format!("create table {}", t.resource_type())))?;
            tables.push(Some(db));
        }
        let meta: Database<Str, Bytes> = env
            .create_database(&mut wtxn, Some("meta"))
            .map_err(err("create table meta"))?;
        match meta.get(&wtxn, "version").map_err(err("read version"))? {
            None => meta
                .put(&mut wtxn, "version", FORMAT_VERSION.to_string().as_bytes())
                .map_err(err("write version"))?,
            Some(v) => {
                let v = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok());
                if v != Some(FORMAT_VERSION) {
                    return Err(StoreError {
                        context: format!("{}", dir.display()),
                        source: format!(
                            "store format version {v:?} is not {FORMAT_VERSION}; this edged cannot read it (move the directory aside to start afresh)"
                        )
                        .into(),
                    });
                }
            }
        }
        wtxn.commit().map_err(err("commit"))?;
        Ok(Store {
            env,
            tables,
            dir: dir.to_path_buf(),
        })
    }

    /// Opens an existing store read-only, beside a running agent (`edged get`).
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        if check::check(dir).map_err(|d| damaged(dir, d))? == Health::New {
            return Err(StoreError {
                context: format!("{}", dir.display()),
                source: "no store here: has the agent run with this --root-dir?".into(),
            });
        }
        let env = Self::env(dir, EnvFlags::READ_ONLY)?;
        let rtxn = env.read_txn().map_err(err("begin"))?;
        let mut tables = Vec::new();
        for t in Table::ALL {
            // Missing: a store an older agent made and no newer one opened yet (read as empty).
            let db = env
                .open_database(&rtxn, Some(t.resource_type()))
                .map_err(err(format!("open table {}", t.resource_type())))?;
            tables.push(db);
        }
        rtxn.commit().map_err(err("end"))?;
        Ok(Store {
            env,
            tables,
            dir: dir.to_path_buf(),
        })
    }

    fn env(dir: &Path, flags: EnvFlags) -> Result<Env<WithoutTls>, StoreError> {
        // Without TLS (MDB_NOTLS) a reader slot is held for one read transaction only. With
        // it, every thread that ever read keeps a slot until it exits, and smol's blocking pool
        // keeps its threads: past 64 of them every read (and `edged get`) failed with
        // MDB_READERS_FULL.
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        // Named tables: those of Table::ALL and `meta`, with room for more (a runtime limit,
        // nothing on disk depends on it).
        opts.map_size(MAP_SIZE).max_dbs(16).max_readers(64);
        // SAFETY: the store's files are opened by this process once (Store is shared by Arc);
        // other processes open them only through LMDB's own locking.
        unsafe {
            opts.flags(flags);
            opts.open(dir)
        }
        .map_err(err(format!("open {}", dir.display())))
    }

    /// The directory holding the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The table's database; `None` for one the store was made without (read-only only).
    fn db(&self, t: Table) -> Option<Database<Str, Bytes>> {
        Table::ALL
            .iter()
            .position(|x| *x == t)
            .and_then(|i| self.tables.get(i).copied().flatten())
    }

    /// The table's database for a write (every table exists in a store opened for writing).
    fn db_for_write(&self, t: Table) -> Result<Database<Str, Bytes>, StoreError> {
        self.db(t).ok_or_else(|| StoreError {
            context: format!("write table {}", t.resource_type()),
            source: "the store has no such table (opened read-only?)".into(),
        })
    }

    /// Reads one row.
    pub fn get(&self, t: Table, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let Some(db) = self.db(t) else {
            return Ok(None);
        };
        let rtxn = self.env.read_txn().map_err(err("begin"))?;
        let ctx = || format!("read {}/{}", t.resource_type(), key);
        match db.get(&rtxn, key).map_err(err(ctx()))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(bytes).map(Some).map_err(err(ctx())),
        }
    }

    /// Reads one row in place: `f` gets the row's bytes as they lie in the store's memory map
    /// (heed's zero-copy read: no copy, no JSON tree) inside a read transaction, and what it
    /// returns is the answer. `None`: no such row. A read takes microseconds and never waits
    /// for a writer (LMDB readers see the last committed state), so callers may read on the
    /// executor instead of a blocking thread.
    pub fn read<R>(
        &self,
        t: Table,
        key: &str,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        let Some(db) = self.db(t) else {
            return Ok(None);
        };
        let rtxn = self.env.read_txn().map_err(err("begin"))?;
        let row = db
            .get(&rtxn, key)
            .map_err(err(format!("read {}/{}", t.resource_type(), key)))?;
        Ok(row.map(f))
    }

    /// Writes one row (durable when it returns).
    pub fn put(&self, t: Table, key: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        self.apply(&[Write::Put(t, key.to_string(), value.clone())])
    }

    /// Deletes one row; `true` when it was there. On a full filesystem the reserved space is
    /// released for it (a delete frees space; it must not need any).
    pub fn delete(&self, t: Table, key: &str) -> Result<bool, StoreError> {
        crate::reserve::retry_when_full(|| self.delete_once(t, key), StoreError::is_no_space)
    }

    fn delete_once(&self, t: Table, key: &str) -> Result<bool, StoreError> {
        let db = self.db_for_write(t)?;
        let mut wtxn = self.env.write_txn().map_err(err("begin"))?;
        let found = db.delete(&mut wtxn, key).map_err(err(format!(
            "delete {}/{}",
            t.resource_type(),
            key
        )))?;
        wtxn.commit().map_err(err("commit"))?;
        Ok(found)
    }

    /// Applies several writes in one transaction: all or none. When the filesystem is full and
    /// the batch deletes something, the reserved space is released for it.
    pub fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let deletes = writes.iter().any(|w| matches!(w, Write::Delete(..)));
        if !deletes {
            return self.apply_once(writes);
        }
        crate::reserve::retry_when_full(|| self.apply_once(writes), StoreError::is_no_space)
    }

    fn apply_once(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn().map_err(err("begin"))?;
        for w in writes {
            match w {
                Write::Put(t, key, value) => {
                    let bytes = serde_json::to_vec(value).map_err(err("encode"))?;
                    self.db_for_write(*t)?
                        .put(&mut wtxn, key, &bytes)
                        .map_err(err(format!("write {}/{}", t.resource_type(), key)))?;
                }
                Write::Delete(t, key) => {
                    self.db_for_write(*t)?
                        .delete(&mut wtxn, key)
                        .map_err(err(format!("delete {}/{}", t.resource_type(), key)))?;
                }
            }
        }
        wtxn.commit().map_err(err("commit"))
    }

    /// Every row of a table, in key order.
    pub fn list(&self, t: Table) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let mut out = Vec::new();
        let Some(db) = self.db(t) else {
            return Ok(out);
        };
        let rtxn = self.env.read_txn().map_err(err("begin"))?;
        let ctx = || format!("list {}", t.resource_type());
        for row in db.iter(&rtxn).map_err(err(ctx()))? {
            let (k, v) = row.map_err(err(ctx()))?;
            let value = serde_json::from_slice(v).map_err(err(format!(
                "read {}/{}",
                t.resource_type(),
                k
            )))?;
            out.push((k.to_string(), value));
        }
        Ok(out)
    }
}

/// Writes the marker saying the store has been used, once, durably (the file and its
/// directory synced), so an emptied `data.mdb` is later seen as damage.
fn mark_used(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(USED_MARKER);
    if path.exists() {
        return Ok(());
    }
    let f = std::fs::File::create(&path)?;
    f.sync_all()?;
    crate::paths::sync_dir(dir)
}

/// The row key of a namespaced object.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put(Table::Pod, "default/web", &json!({"a": 1})).unwrap();
        s.put(Table::ConfigMap, "default/cfg", &json!({"b": 2}))
            .unwrap();
        assert_eq!(
            s.get(Table::Pod, "default/web").unwrap(),
            Some(json!({"a": 1}))
        );
        assert_eq!(s.get(Table::Pod, "default/cfg").unwrap(), None);
        assert_eq!(s.list(Table::Pod).unwrap().len(), 1);
        assert!(s.delete(Table::Pod, "default/web").unwrap());
        assert!(!s.delete(Table::Pod, "default/web").unwrap());
        drop(s);
        let r = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(
            r.get(Table::ConfigMap, "default/cfg").unwrap(),
            Some(json!({"b": 2}))
        );
    }

    #[test]
    fn batch_is_atomic_and_version_checked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.apply(&[
                Write::Put(Table::Pod, "a/x".into(), json!(1)),
                Write::Put(Table::PodStatus, "a/x".into(), json!(2)),
            ])
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get(Table::PodStatus, "a/x").unwrap(), Some(json!(2)));
    }

    /// A store an older agent made, without the tables added since (here: services): it is
    /// read as it is beside it, and the agent's open adds the table and keeps every row.
    #[test]
    fn a_store_of_an_older_agent_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = EnvOpenOptions::new().read_txn_without_tls();
            opts.map_size(MAP_SIZE).max_dbs(8);
            // SAFETY: a fresh directory no one else opens.
            let env = unsafe { opts.open(dir.path()) }.unwrap();
            let mut wtxn = env.write_txn().unwrap();
            for name in [
                "pod",
                "configmap",
                "secret",
                "podstatus",
                "node",
                "serviceaccounttoken",
            ] {
                let db: Database<Str, Bytes> = env.create_database(&mut wtxn, Some(name)).unwrap();
                if name == "pod" {
                    db.put(&mut wtxn, "default/web", br#"{"a":1}"#).unwrap();
                }
            }
            let meta: Database<Str, Bytes> = env.create_database(&mut wtxn, Some("meta")).unwrap();
            meta.put(&mut wtxn, "version", b"1").unwrap();
            wtxn.commit().unwrap();
            std::fs::write(dir.path().join(USED_MARKER), b"").unwrap();
        }
        let r = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(r.list(Table::Service).unwrap(), vec![]);
        assert_eq!(r.get(Table::Service, "default/kubernetes").unwrap(), None);
        assert!(r.get(Table::Pod, "default/web").unwrap().is_some());
        drop(r);
        let s = Store::open(dir.path()).unwrap();
        s.put(Table::Service, "default/kubernetes", &json!({"s": 1}))
            .unwrap();
        assert_eq!(
            s.get(Table::Pod, "default/web").unwrap(),
            Some(json!({"a": 1}))
        );
        drop(s);
        let r = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(r.list(Table::Service).unwrap().len(), 1);
        // Services are never sent down: no source may name them.
        assert_eq!(Table::from_resource_type("service"), None);
        assert_eq!(Table::from_resource_type("pod"), Some(Table::Pod));
    }

    #[test]
    fn read_only_needs_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let e = Store::open_read_only(dir.path()).err().unwrap();
        assert!(e.to_string().contains("--root-dir"), "{e}");
    }

    #[test]
    fn more_reading_threads_than_reader_slots() {
        // Threads that read once and live on (as smol's blocking pool keeps them) must not
        // hold LMDB reader slots: 100 of them, more than the 64 slots, all read.
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        s.put(Table::Pod, "default/a", &serde_json::json!({"a": 1}))
            .unwrap();
        let n = 100;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (s, b) = (s.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let r = s.get(Table::Pod, "default/a").map(|v| v.is_some());
                    b.wait();
                    r
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap().unwrap());
        }
    }
}
