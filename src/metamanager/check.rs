//! A look at the store's `data.mdb` before LMDB maps it.
//!
//! LMDB maps the file and trusts it: a page it reaches past the end of a truncated file is a
//! SIGBUS (the agent and `edged get` died of it, exit 135, with nothing logged), and a 0-byte
//! file is taken for a new store (everything forgotten, silently). This reads the file with
//! plain `pread`s instead: both meta pages (magic, version, page size), then every page
//! reachable from the newest meta (the free-page tree, the main tree and each named table in
//! it, overflow pages included), checking that each lies within the file and that its header
//! and node offsets stay inside the page. Only a file that passes is handed to LMDB.
//!
//! Layout facts (LMDB's mdb.c, as built by lmdb-master-sys: no `MDB_DEVEL`, no `MDB_VL32`):
//! a page starts with `pgno` (a `size_t`), `pad: u16`, `flags: u16`, `lower: u16`,
//! `upper: u16` (for an overflow page `lower|upper` is `pages: u32`), then the node offsets
//! (`u16` each). Pages 0 and 1 hold an `MDB_meta` after the header: `magic: u32`
//! (0xBEEFC0DE), `version: u32` (1), `address`, `mapsize`, two `MDB_db` (free and main; the
//! first's `pad` is the page size), `last_pg`, `txnid`. An `MDB_db` is `pad: u32`,
//! `flags: u16`, `depth: u16`, then `branch_pages`, `leaf_pages`, `overflow_pages`, `entries`,
//! `root` (each a `size_t`). A node is `lo: u16`, `hi: u16`, `flags: u16`, `ksize: u16`, then
//! the key and (in a leaf) the data; a branch node's child is `lo | hi << 16 | flags << 32`.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file LMDB keeps the data in.
pub const DATA_FILE: &str = "data.mdb";
/// Written beside `data.mdb` after the first successful open: from then on an empty or
/// missing `data.mdb` is damage, not a new store.
pub const USED_MARKER: &str = "edged-store-used";

const WORD: usize = std::mem::size_of::<usize>();
const MAGIC: u32 = 0xBEEF_C0DE;
const VERSION: u32 = 1;
const PAGE_HEADER: usize = WORD + 8;
const NODE_HEADER: usize = 8;
/// `MDB_db`: pad, flags, depth, then five words.
const DB_SIZE: usize = 8 + 5 * WORD;
/// `MDB_meta`: magic, version, address, mapsize, two `MDB_db`, last_pg, txnid.
const META_SIZE: usize = 8 + 2 * WORD + 2 * DB_SIZE + 2 * WORD;
const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_OVERFLOW: u16 = 0x04;
const P_META: u16 = 0x08;
const P_LEAF2: u16 = 0x20;
const F_BIGDATA: u16 = 0x01;
const F_SUBDATA: u16 = 0x02;
const P_INVALID: u64 = if WORD == 8 { u64::MAX } else { u32::MAX as u64 };
/// Deeper than any B-tree of a file this size can be: a loop in the pages otherwise.
const MAX_TREE_DEPTH: usize = 32;

/// What is wrong with a store file, in words an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the store file {} is damaged: {}; start the agent once with --store-recover to move it aside and rebuild the store from the manifests and the cloud",
            self.file.display(),
            self.reason
        )
    }
}

impl std::error::Error for Damage {}

/// What the check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// No data yet and never used: LMDB makes a new store.
    New,
    /// A sound file, as of the transaction `txnid`.
    Sound {
        /// The id of the last committed transaction (the newer meta page's).
        txnid: u64,
    },
}

/// Checks `dir`'s `data.mdb` before it is mapped. For `edged get` beside a writing agent a
/// walk may meet pages the agent reused after a newer commit: the check is repeated (a few
/// times) while the newest transaction changes under it.
pub fn check(dir: &Path) -> Result<Health, Damage> {
    let mut last = None;
    for _ in 0..5 {
        match check_once(dir) {
            Err((damage, Some(txnid))) if last != Some(txnid) => {
                last = Some(txnid);
                if newest_txnid(dir) == Some(txnid) {
                    return Err(damage);
                }
            }
            Err((damage, _)) => return Err(damage),
            Ok(h) => return Ok(h),
        }
    }
    Err(Damage {
        file: dir.join(DATA_FILE),
        reason: "it kept changing while being checked".into(),
    })
}

fn newest_txnid(dir: &Path) -> Option<u64> {
    let file = File::open(dir.join(DATA_FILE)).ok()?;
    let len = file.metadata().ok()?.len();
    let (m0, m1) = metas(&file, len).ok()?;
    Some(m0.txnid.max(m1.txnid))
}

/// One look. On damage found in the tree, also the transaction whose tree it was.
fn check_once(dir: &Path) -> Result<Health, (Damage, Option<u64>)> {
    let path = dir.join(DATA_FILE);
    let damage = |reason: String| Damage {
        file: path.clone(),
        reason,
    };
    let used = dir.join(USED_MARKER).exists();
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !used => return Ok(Health::New),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                damage("it is missing, but this store held data before".into()),
                None,
            ))
        }
        Err(e) => return Err((damage(format!("cannot read it: {e}")), None)),
    };
    let len = file
        .metadata()
        .map_err(|e| (damage(format!("cannot read it: {e}")), None))?
        .len();
    if len == 0 {
        if used {
            return Err((
                damage("it is empty (0 bytes), but this store held data before".into()),
                None,
            ));
        }
        return Ok(Health::New);
    }
    let (m0, m1) = metas(&file, len).map_err(|r| (damage(r), None))?;
    let meta = if m1.txnid > m0.txnid { m1 } else { m0 };
    let walk = Walk {
        file: &file,
        psize: meta.psize,
        pages: len / meta.psize as u64,
        seen: HashSet::new(),
    };
    walk.run(&meta).map_err(|r| (damage(r), Some(meta.txnid)))?;
    Ok(Health::Sound { txnid: meta.txnid })
}

/// The parts of a meta page the check uses.
#[derive(Clone, Copy, Debug)]
struct Meta {
    psize: usize,
    txnid: u64,
    free_root: u64,
    main_root: u64,
}

fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w[..WORD].copy_from_slice(&b[at..at + WORD]);
    u64::from_le_bytes(w)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads and checks both meta pages.
fn metas(file: &File, len: u64) -> Result<(Meta, Meta), String> {
    let m0 = meta(file, len, 0, 0)?;
    let m1 = meta(file, len, 1, m0.psize)?;
    if m1.psize != m0.psize {
        return Err(format!(
            "its two meta pages disagree on the page size ({} and {})",
            m0.psize, m1.psize
        ));
    }
    Ok((m0, m1))
}

fn meta(file: &File, len: u64, n: u64, psize: usize) -> Result<Meta, String> {
    let off = n * psize as u64;
    let mut b = vec![0u8; PAGE_HEADER + META_SIZE];
    if off + b.len() as u64 > len {
        return Err(format!(
            "it is {len} bytes, too short for meta page {n} (truncated)"
        ));
    }
    file.read_exact_at(&mut b, off)
        .map_err(|e| format!("cannot read meta page {n}: {e}"))?;
    if u16_at(&b, WORD + 2) & P_META == 0 {
        return Err(format!("page {n} is not a meta page"));
    }
    let m = &b[PAGE_HEADER..];
    let magic = u32_at(m, 0);
    if magic != MAGIC {
        return Err(format!(
            "meta page {n} has magic {magic:#x}, not LMDB's {MAGIC:#x} (not an LMDB file, or overwritten)"
        ));
    }
    let version = u32_at(m, 4);
    if version != VERSION {
        return Err(format!(
            "meta page {n} has LMDB format version {version}, not {VERSION}"
        ));
    }
    let dbs = 8 + 2 * WORD;
    let page_size = u32_at(m, dbs) as usize;
    if !(256..=0x10000).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(format!("meta page {n} has a page size of {page_size}"));
    }
    let root = |db: usize| word(m, dbs + db * DB_SIZE + 8 + 4 * WORD);
    let last_pg = word(m, dbs + 2 * DB_SIZE);
    let txnid = word(m, dbs + 2 * DB_SIZE + WORD);
    let meta = Meta {
        psize: page_size,
        txnid,
        free_root: root(0),
        main_root: root(1),
    };
    // The pages of the newest transaction are checked one by one in the walk; `last_pg`
    // only bounds them (pages freed unwritten at the end may lie past the file's end).
    for r in [meta.free_root, meta.main_root] {
        if r != P_INVALID && r > last_pg {
            return Err(format!(
                "meta page {n} has a root page {r} past its last page {last_pg}"
            ));
        }
    }
    Ok(meta)
}

/// A walk over the pages reachable from one meta.
struct Walk<'a> {
    file: &'a File,
    psize: usize,
    /// Whole pages in the file.
    pages: u64,
    seen: HashSet<u64>,
}

impl Walk<'_> {
    fn run(mut self, meta: &Meta) -> Result<(), String> {
        self.tree(meta.free_root, "the free-page table", 0)?;
        self.tree(meta.main_root, "the main table", 0)
    }

    /// Reads page `pgno` (`n` pages of it), checking it lies in the file.
    fn page(&mut self, pgno: u64, n: u64, what: &str) -> Result<Vec<u8>, String> {
        if pgno < 2 || pgno.checked_add(n).is_none_or(|end| end > self.pages) {
            return Err(format!(
                "{what} needs page {pgno} (and {n} from there), but the file holds {} pages of {} bytes (truncated)",
                self.pages, self.psize
            ));
        }
        if !self.seen.insert(pgno) {
            return Err(format!("{what} reaches page {pgno} twice"));
        }
        let mut b = vec![0u8; self.psize];
        self.file
            .read_exact_at(&mut b, pgno * self.psize as u64)
            .map_err(|e| format!("cannot read page {pgno}: {e}"))?;
        if word(&b, 0) != pgno {
            return Err(format!(
                "page {pgno} of {what} says it is page {} (overwritten)",
                word(&b, 0)
            ));
        }
        Ok(b)
    }

    fn tree(&mut self, root: u64, what: &str, depth: usize) -> Result<(), String> {
        if root == P_INVALID {
            return Ok(());
        }
        if depth > MAX_TREE_DEPTH {
            return Err(format!("{what} is deeper than {MAX_TREE_DEPTH} levels"));
        }
        let b = self.page(root, 1, what)?;
        let flags = u16_at(&b, WORD + 2);
        let (lower, upper) = (u16_at(&b, WORD + 4) as usize, u16_at(&b, WORD + 6) as usize);
        let bad = |reason: &str| format!("page {root} of {what}: {reason} (overwritten)");
        if lower < PAGE_HEADER
            || lower > upper
            || upper > self.psize
            || !(lower - PAGE_HEADER).is_multiple_of(2)
        {
            return Err(bad(&format!("bounds {lower}..{upper}")));
        }
        if flags & P_LEAF2 != 0 {
            return Ok(());
        }
        let branch = match (flags & P_BRANCH != 0, flags & P_LEAF != 0) {
            (true, false) => true,
            (false, true) => false,
            _ => return Err(bad(&format!("flags {flags:#x}"))),
        };
        let keys = (lower - PAGE_HEADER) / 2;
        if branch && keys == 0 {
            return Err(bad("a branch page with no keys"));
        }
        for i in 0..keys {
            let at = u16_at(&b, PAGE_HEADER + 2 * i) as usize;
            if at < lower || at + NODE_HEADER > self.psize {
                return Err(bad(&format!("node {i} at offset {at}")));
            }
            let (lo, hi) = (u16_at(&b, at) as u64, u16_at(&b, at + 2) as u64);
            let nflags = u16_at(&b, at + 4);
            let ksize = u16_at(&b, at + 6) as usize;
            let data_at = at + NODE_HEADER + ksize;
            if data_at > self.psize {
                return Err(bad(&format!("node {i}'s key runs past the page")));
            }
            if branch {
                let top = if WORD == 8 { (nflags as u64) << 32 } else { 0 };
                self.tree(lo | hi << 16 | top, what, depth + 1)?;
                continue;
            }
            let dsize = (lo | hi << 16) as usize;
            if nflags & F_BIGDATA != 0 {
                if data_at + WORD > self.psize {
                    return Err(bad(&format!("node {i}'s data runs past the page")));
                }
                let first = word(&b, data_at);
                let head = self.page(first, 1, what)?;
                if u16_at(&head, WORD + 2) & P_OVERFLOW == 0 {
                    return Err(bad(&format!("node {i}'s overflow page {first} is not one")));
                }
                let n = u32_at(&head, WORD + 4) as u64;
                if n == 0 || (n as usize).saturating_mul(self.psize) < PAGE_HEADER + dsize {
                    return Err(bad(&format!(
                        "node {i}'s {dsize} bytes do not fit its {n} overflow pages"
                    )));
                }
                if first.checked_add(n).is_none_or(|end| end > self.pages) {
                    return Err(format!(
                        "{what} needs pages {first} to {} (a value), but the file holds {} pages of {} bytes (truncated)",
                        first + n - 1,
                        self.pages,
                        self.psize
                    ));
                }
                continue;
            }
            if data_at + dsize > self.psize {
                return Err(bad(&format!("node {i}'s data runs past the page")));
            }
            if nflags & F_SUBDATA != 0 {
                if dsize < DB_SIZE {
                    return Err(bad(&format!("node {i}'s table record is {dsize} bytes")));
                }
                let name = String::from_utf8_lossy(&b[at + NODE_HEADER..data_at]).into_owned();
                let sub_root = word(&b, data_at + 8 + 4 * WORD);
                self.tree(sub_root, &format!("table `{name}`"), 0)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metamanager::{Store, Table};
    use serde_json::json;

    /// A store with a few small rows and one value on overflow pages, closed.
    fn store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for i in 0..200 {
            s.put(Table::Pod, &format!("default/p{i}"), &json!({"i": i}))
                .unwrap();
        }
        s.put(
            Table::ConfigMap,
            "default/big",
            &json!({"data": "x".repeat(100_000)}),
        )
        .unwrap();
        dir
    }

    fn data(dir: &Path) -> PathBuf {
        dir.join(DATA_FILE)
    }

    #[test]
    fn sound_new_and_used_stores() {
        let dir = store();
        assert!(matches!(check(dir.path()), Ok(Health::Sound { .. })));
        assert!(dir.path().join(USED_MARKER).exists());
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(check(fresh.path()), Ok(Health::New));
        std::fs::write(data(fresh.path()), b"").unwrap();
        assert_eq!(check(fresh.path()), Ok(Health::New));
    }

    #[test]
    fn truncated_file_is_damage() {
        let dir = store();
        let len = std::fs::metadata(data(dir.path())).unwrap().len();
        for keep in [len - 4096, len / 2, 3 * 4096, 4096 + 100, 100] {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(data(dir.path()))
                .unwrap();
            f.set_len(keep).unwrap();
            let e = check(dir.path()).unwrap_err();
            assert!(e.reason.contains("truncated"), "{keep}: {e}");
            assert!(e.to_string().contains("--store-recover"), "{e}");
            assert!(e.to_string().contains("data.mdb"), "{e}");
        }
    }

    #[test]
    fn garbage_and_bad_magic_are_damage() {
        let dir = store();
        let path = data(dir.path());
        let clean = std::fs::read(&path).unwrap();
        // Garbage over every page past the metas in turn, one page at a time: each one the
        // tree reaches is caught (pages it does not reach, free ones, do not matter).
        let pages = clean.len() / 4096;
        let mut caught = 0;
        for p in 2..pages {
            let mut bytes = clean.clone();
            for (i, b) in bytes[p * 4096..(p + 1) * 4096].iter_mut().enumerate() {
                *b = (i * 7 + p) as u8 | 0x81;
            }
            std::fs::write(&path, &bytes).unwrap();
            if check(dir.path()).is_err() {
                caught += 1;
            }
        }
        assert!(caught >= 3, "{caught} of {pages}");
        let mut bytes = clean.clone();
        bytes[PAGE_HEADER..PAGE_HEADER + 4].copy_from_slice(&[0, 0, 0, 0]);
        std::fs::write(&path, &bytes).unwrap();
        let e = check(dir.path()).unwrap_err();
        assert!(e.reason.contains("magic"), "{e}");
        std::fs::write(&path, &clean).unwrap();
        assert!(check(dir.path()).is_ok());
    }

    #[test]
    fn empty_or_missing_after_use_is_damage() {
        let dir = store();
        std::fs::write(data(dir.path()), b"").unwrap();
        let e = check(dir.path()).unwrap_err();
        assert!(e.reason.contains("0 bytes"), "{e}");
        std::fs::remove_file(data(dir.path())).unwrap();
        let e = check(dir.path()).unwrap_err();
        assert!(e.reason.contains("missing"), "{e}");
    }
}
