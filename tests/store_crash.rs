//! Crash safety of the store, on real LMDB files.
//!
//! A writer child (this test binary re-executed, running the ignored `crash_writer_child`)
//! opens the store and writes for ever: single puts, deletes, batches, values up to 1 MiB.
//! Before each write it prints what it is about to do (`@@begin`), after the call returns it
//! prints `@@ok`. The parent SIGKILLs it at random moments, reopens the store, and checks that
//! the store holds exactly every acknowledged write (and no acknowledged delete), plus at most
//! the one write in flight at the kill, all of it or none of it (batches are atomic).
//!
//! What this covers, and what it does not:
//! - `kill -9` is process death at any instruction, mid-commit included. It does not lose the
//!   page cache: pages the process wrote are still written back by the kernel. So this proves
//!   LMDB's copy-on-write commit (a transaction is either in the meta page or not) and the
//!   store's handling of a stale lock file, not durability across a power cut.
//! - A power cut also loses unsynced page cache. LMDB's defence (with the flags the store
//!   uses: no NOSYNC, NOMETASYNC, MAPASYNC or WRITEMAP) is to fdatasync the data pages, then
//!   write and fdatasync the meta page, before the commit returns. `commit_syncs_before_ack`
//!   checks, with strace, that a sync follows the last write of every commit before the
//!   writer acknowledges it, and `acknowledged_writes_survive_a_power_cut_image` loses the
//!   page cache for real: it checks a copy of the block device (a loop device) taken right
//!   after the kill. Whether the disk honours the flush is the hardware's part; replaying
//!   writes in every order a disk cache may reorder them needs device-mapper (dm-log-writes),
//!   which this kernel does not offer, so that is not done here.

use edged::metamanager::{Store, Table, Write as StoreWrite};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const DIR_ENV: &str = "EDGED_CRASH_DIR";
const SEED_ENV: &str = "EDGED_CRASH_SEED";
const OPS_ENV: &str = "EDGED_CRASH_OPS";
const TABLES: [Table; 3] = [Table::Pod, Table::ConfigMap, Table::Secret];
const KEYS: usize = 24;
const ROUNDS: usize = 30;

/// One row write of an operation.
#[derive(Clone, Debug, PartialEq)]
enum W {
    Put {
        table: usize,
        key: String,
        id: String,
        len: usize,
    },
    Del {
        table: usize,
        key: String,
    },
}

/// An operation: how it is written (`put`, `del`: one call each; `batch`: one `apply`).
#[derive(Clone, Debug, PartialEq)]
struct Op {
    how: String,
    writes: Vec<W>,
}

/// The value a put writes: its id and `len` bytes of padding.
fn value(id: &str, len: usize) -> Value {
    json!({"id": id, "pad": "x".repeat(len)})
}

fn encode(op: &Op) -> String {
    let items: Vec<String> = op
        .writes
        .iter()
        .map(|w| match w {
            W::Put {
                table,
                key,
                id,
                len,
            } => format!("p {table} {key} {id} {len}"),
            W::Del { table, key } => format!("d {table} {key}"),
        })
        .collect();
    format!("{} {}", op.how, items.join(";"))
}

fn decode(s: &str) -> Op {
    let (how, rest) = s.split_once(' ').unwrap_or((s, ""));
    let writes = rest
        .split(';')
        .map(|item| {
            let f: Vec<&str> = item.split(' ').collect();
            match f[0] {
                "p" => W::Put {
                    table: f[1].parse().unwrap(),
                    key: f[2].into(),
                    id: f[3].into(),
                    len: f[4].parse().unwrap(),
                },
                _ => W::Del {
                    table: f[1].parse().unwrap(),
                    key: f[2].into(),
                },
            }
        })
        .collect();
    Op {
        how: how.into(),
        writes,
    }
}

fn random_write(rng: &mut fastrand::Rng, id: String) -> W {
    let table = rng.usize(..TABLES.len());
    let key = format!("ns/k{}", rng.usize(..KEYS));
    if rng.u8(..4) == 0 {
        return W::Del { table, key };
    }
    let len = match rng.u8(..20) {
        0 => rng.usize(256 << 10..1 << 20),
        1..=5 => rng.usize(1 << 10..64 << 10),
        _ => rng.usize(10..500),
    };
    W::Put {
        table,
        key,
        id,
        len,
    }
}

fn random_op(rng: &mut fastrand::Rng, round: &str, seq: usize) -> Op {
    match rng.u8(..3) {
        0 => Op {
            how: "batch".into(),
            writes: (0..rng.usize(2..8))
                .map(|i| random_write(rng, format!("{round}-{seq}-{i}")))
                .collect(),
        },
        _ => {
            let w = random_write(rng, format!("{round}-{seq}"));
            let how = if matches!(w, W::Del { .. }) {
                "del"
            } else {
                "put"
            };
            Op {
                how: how.into(),
                writes: vec![w],
            }
        }
    }
}

/// The writer: runs only when re-executed by the tests below.
#[test]
#[ignore = "the writer child of the crash tests; they re-execute this binary to run it"]
fn crash_writer_child() {
    let dir = std::env::var(DIR_ENV).expect("run by acknowledged_writes_survive_kill_9 only");
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let ops: usize = std::env::var(OPS_ENV).unwrap().parse().unwrap();
    let store = Store::open(Path::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    // A newline first: the test harness may have printed half a line.
    writeln!(out, "\n@@open").unwrap();
    out.flush().unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let round = seed.to_string();
    for seq in 0..ops {
        let op = random_op(&mut rng, &round, seq);
        writeln!(out, "@@begin {}", encode(&op)).unwrap();
        out.flush().unwrap();
        match (op.how.as_str(), &op.writes[..]) {
            (
                "put",
                [W::Put {
                    table,
                    key,
                    id,
                    len,
                }],
            ) => store.put(TABLES[*table], key, &value(id, *len)).unwrap(),
            ("del", [W::Del { table, key }]) => {
                store.delete(TABLES[*table], key).unwrap();
            }
            _ => {
                let writes: Vec<StoreWrite> = op
                    .writes
                    .iter()
                    .map(|w| match w {
                        W::Put {
                            table,
                            key,
                            id,
                            len,
                        } => StoreWrite::Put(TABLES[*table], key.clone(), value(id, *len)),
                        W::Del { table, key } => StoreWrite::Delete(TABLES[*table], key.clone()),
                    })
                    .collect();
                store.apply(&writes).unwrap()
            }
        }
        writeln!(out, "@@ok").unwrap();
        out.flush().unwrap();
    }
}

/// What the store should hold: (table, key) to the put that wrote it.
type Model = BTreeMap<(usize, String), (String, usize)>;

fn apply_model(model: &Model, op: &Op) -> Model {
    let mut m = model.clone();
    for w in &op.writes {
        match w {
            W::Put {
                table,
                key,
                id,
                len,
            } => {
                m.insert((*table, key.clone()), (id.clone(), *len));
            }
            W::Del { table, key } => {
                m.remove(&(*table, key.clone()));
            }
        }
    }
    m
}

/// Takes one protocol line; `true` when it acknowledged an operation.
fn handle(p: &str, pending: &mut Option<Op>, model: &mut Model) -> bool {
    if let Some(op) = p.strip_prefix("begin ") {
        *pending = Some(decode(op));
    } else if p == "ok" {
        let op = pending.take().expect("ok without begin");
        *model = apply_model(model, &op);
        return true;
    }
    false
}

/// Whether the store holds exactly `model`; the first difference otherwise.
fn matches(store: &Store, model: &Model) -> Result<(), String> {
    for (ti, t) in TABLES.iter().enumerate() {
        let rows = store.list(*t).map_err(|e| e.to_string())?;
        let want: Vec<_> = model.iter().filter(|((mt, _), _)| *mt == ti).collect();
        if rows.len() != want.len() {
            return Err(format!(
                "table {t:?}: {} rows, {} acknowledged",
                rows.len(),
                want.len()
            ));
        }
        for ((k, v), ((_, wk), (id, len))) in rows.iter().zip(want) {
            if k != wk || *v != value(id, *len) {
                return Err(format!(
                    "table {t:?}: row {k} holds id {}, acknowledged {wk} = {id}",
                    v["id"]
                ));
            }
        }
    }
    Ok(())
}

fn spawn_writer(dir: &Path, seed: u64, ops: usize, strace: Option<&Path>) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match strace {
        Some(log) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-s", "24", "-o"]).arg(log).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args([
        "crash_writer_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DIR_ENV, dir)
    .env(SEED_ENV, seed.to_string())
    .env(OPS_ENV, ops.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

/// A protocol line: the text after `@@`, if any.
fn protocol(line: &str) -> Option<&str> {
    line.find("@@").map(|i| &line[i + 2..])
}

/// How one writer life ends.
struct Kill {
    /// Kill once this many operations are acknowledged; 0: once the store is open.
    after_acks: usize,
    /// Then wait this long (the writer goes on meanwhile).
    extra: std::time::Duration,
}

/// Runs one writer life on the store in `dir` and SIGKILLs it as `kill` says; `at_death`
/// runs as soon as it is dead, before the rest of its output is read. Every acknowledged
/// operation is applied to `model`; returns how many there were and the one in flight.
fn writer_life(
    dir: &Path,
    seed: u64,
    kill: &Kill,
    model: &mut Model,
    at_death: impl FnOnce(),
) -> (usize, Option<Op>) {
    let mut child = spawn_writer(dir, seed, 100_000, None);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pending: Option<Op> = None;
    let mut oks = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let Some(p) = protocol(&line) else { continue };
        if kill.after_acks == 0 && p == "open" {
            break;
        }
        if handle(p, &mut pending, model) {
            oks += 1;
            if oks >= kill.after_acks {
                break;
            }
        }
    }
    std::thread::sleep(kill.extra);
    child.kill().unwrap();
    child.wait().unwrap();
    at_death();
    // What the child acknowledged before it died counts too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(p) = protocol(&line) {
            if handle(p, &mut pending, model) {
                oks += 1;
            }
        }
    }
    (oks, pending)
}

/// Checks that `store` holds `model`, or `model` plus all of the write in flight; returns
/// what it holds and whether the write in flight is in it.
fn resolve(store: &Store, model: &Model, pending: Option<&Op>) -> Result<(Model, bool), String> {
    match (matches(store, model), pending) {
        (Ok(()), _) => Ok((model.clone(), false)),
        (Err(e), Some(op)) => {
            let after = apply_model(model, op);
            match matches(store, &after) {
                Ok(()) => Ok((after, true)),
                Err(e2) => Err(format!(
                    "the store matches neither the acknowledged state ({e}) nor it plus the write in flight ({e2}); in flight: {op:?}"
                )),
            }
        }
        (Err(e), None) => Err(e),
    }
}

/// The run's seed: `EDGED_CRASH_SEED` or a random one, printed so a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..1 << 40));
    eprintln!("store_crash seed {seed}");
    seed
}

/// Kill early in some rounds (during open or the first commits), else after a random number
/// of acknowledgements and up to 6 ms more (a few writes further).
fn random_kill(rng: &mut fastrand::Rng, most_acks: usize) -> Kill {
    let early = rng.u8(..6) == 0;
    let us = rng.u64(..if early { 3000 } else { 6000 });
    Kill {
        after_acks: if early { 0 } else { rng.usize(1..most_acks) },
        extra: std::time::Duration::from_micros(us),
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("meta");
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model = Model::new();
    let (mut acked, mut in_flight_landed, mut in_flight_lost) = (0, 0, 0);
    for round in 0..ROUNDS {
        let child_seed = seed.wrapping_mul(1000).wrapping_add(round as u64);
        let kill = random_kill(&mut rng, 250);
        let (oks, pending) = writer_life(&dir, child_seed, &kill, &mut model, || {});
        acked += oks;
        // The agent's restart path: open for writing, check everything.
        let store = Store::open(&dir).unwrap_or_else(|e| {
            panic!("round {round} (seed {seed}): store does not open after kill -9: {e}")
        });
        let (now, landed) = resolve(&store, &model, pending.as_ref())
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
        model = now;
        match (pending.is_some(), landed) {
            (true, true) => in_flight_landed += 1,
            (true, false) => in_flight_lost += 1,
            _ => {}
        }
    }
    eprintln!(
        "store_crash: {ROUNDS} kills, {acked} acknowledged operations, the write in flight at the kill committed {in_flight_landed} times, not committed {in_flight_lost} times"
    );
    assert!(
        acked > ROUNDS,
        "the writer hardly wrote: {acked} acknowledgements"
    );
    // After all that, the store still takes writes and keeps them (in a table the writer
    // does not touch, so the model still describes the others).
    {
        let store = Store::open(&dir).unwrap();
        store
            .put(Table::Node, "null/after", &json!({"after": true}))
            .unwrap();
    }
    let store = Store::open_read_only(&dir).unwrap();
    assert_eq!(
        store.get(Table::Node, "null/after").unwrap(),
        Some(json!({"after": true}))
    );
    matches(&store, &model).unwrap();
}

/// Runs a command, panicking with its output when it fails.
fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd}: {e} (the power-cut test needs util-linux, e2fsprogs and root)")
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An ext4 filesystem on a loop device over `image`, mounted on `at`; unmounted and detached
/// when dropped.
struct LoopFs {
    dev: String,
    at: std::path::PathBuf,
}

impl LoopFs {
    fn mount(image: &Path, at: &Path, format: bool) -> LoopFs {
        let dev = sh("losetup", &["--find", "--show", image.to_str().unwrap()]);
        let fs = LoopFs {
            dev,
            at: at.to_path_buf(),
        };
        if format {
            sh("mkfs.ext4", &["-q", "-F", &fs.dev]);
        }
        std::fs::create_dir_all(at).unwrap();
        // commit=60: ext4 writes its journal only when asked (fsync), not every 5 s, so the
        // device holds only what was synced.
        sh("mount", &["-o", "commit=60", &fs.dev, at.to_str().unwrap()]);
        fs
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Writes one file synced and one not, copies the image, and tells whether the copy has the
/// first and lacks the second.
fn copy_loses_unsynced(disk: &LoopFs, image: &Path, snap: &Path, at: &Path) -> bool {
    let data = vec![7u8; 64 << 10];
    let synced = disk.at.join("probe-synced");
    let unsynced = disk.at.join("probe-unsynced");
    let mut f = std::fs::File::create(&synced).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    std::fs::write(&unsynced, &data).unwrap();
    std::fs::copy(image, snap).unwrap();
    let ok = {
        let cut = LoopFs::mount(snap, at, false);
        let kept = std::fs::read(cut.at.join("probe-synced")).ok() == Some(data.clone());
        let lost = std::fs::read(cut.at.join("probe-unsynced")).ok() != Some(data);
        assert!(kept, "a synced file is missing from the copy of the device");
        lost
    };
    std::fs::remove_file(synced).unwrap();
    std::fs::remove_file(unsynced).unwrap();
    ok
}

/// A power cut, approximated honestly: the store lives on ext4 on a loop device. Right after
/// the writer is killed, the device's backing file is copied: the copy holds what reached the
/// device and not the page cache (the writer's unsynced pages stay dirty for the 30 s of
/// `vm.dirty_expire_centisecs`, far longer than the copy takes). Mounting the copy (ext4
/// replays its journal) and opening the store is a restart after the power came back; every
/// acknowledged write must be there. Not covered: a disk that lies about flushes.
#[test]
fn acknowledged_writes_survive_a_power_cut_image() {
    const CUTS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("disk.img");
    let snap = tmp.path().join("cut.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let disk = LoopFs::mount(&image, &tmp.path().join("disk"), true);
    // The method must lose what was not synced, or the test proves nothing. (Heavy writing
    // elsewhere on the machine can start writeback early: so a few tries.)
    assert!(
        (0..3).any(|_| copy_loses_unsynced(&disk, &image, &snap, &tmp.path().join("cut"))),
        "copying the loop device's image kept unsynced data: this machine cannot simulate a power cut so"
    );
    let dir = disk.at.join("meta");
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut model = Model::new();
    let mut acked = 0;
    for cut in 0..CUTS {
        let child_seed = seed.wrapping_mul(1000).wrapping_add(cut as u64);
        let kill = random_kill(&mut rng, 120);
        let copy = || {
            std::fs::copy(&image, &snap).unwrap();
        };
        let (oks, pending) = writer_life(&dir, child_seed, &kill, &mut model, copy);
        acked += oks;
        {
            let after_cut = LoopFs::mount(&snap, &tmp.path().join("cut"), false);
            let store = Store::open(&after_cut.at.join("meta")).unwrap_or_else(|e| {
                panic!("cut {cut} (seed {seed}): store does not open after a power cut: {e}")
            });
            resolve(&store, &model, pending.as_ref())
                .unwrap_or_else(|e| panic!("cut {cut} (seed {seed}), after the power cut: {e}"));
        }
        // The live disk goes on from where the writer died.
        let store = Store::open(&dir).unwrap();
        model = resolve(&store, &model, pending.as_ref())
            .unwrap_or_else(|e| panic!("cut {cut} (seed {seed}), live disk: {e}"))
            .0;
    }
    eprintln!("store_crash: {CUTS} power cuts, {acked} acknowledged operations");
    assert!(
        acked > CUTS,
        "the writer hardly wrote: {acked} acknowledgements"
    );
}

#[test]
fn commit_syncs_before_ack() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("meta");
    let log = tmp.path().join("strace.log");
    let mut child = spawn_writer(&dir, 7, 40, Some(&log));
    let out = BufReader::new(child.stdout.take().unwrap());
    let oks = out
        .lines()
        .map_while(Result::ok)
        .filter(|l| protocol(l) == Some("ok"))
        .count();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "strace or the writer failed ({status}): strace is needed (apt-get install -y strace)"
    );
    assert_eq!(oks, 40);
    let text = std::fs::read_to_string(&log).unwrap();
    // Walk the calls: between a `begin` and its `ok` on stdout, every write to another file
    // must be followed by a sync, or go through a descriptor opened O_DSYNC/O_SYNC (LMDB
    // writes its meta page so).
    let mut sync_fds = std::collections::BTreeSet::new();
    let (mut in_op, mut dirty, mut synced_ops, mut writes) = (false, false, 0, 0);
    let fd_of = |call: &str| -> Option<u32> {
        let args = call.split_once('(')?.1;
        args.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    for l in text.lines() {
        // With -f, lines start with the thread id.
        let call = l
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        if call.starts_with("open") && (call.contains("O_DSYNC") || call.contains("O_SYNC")) {
            if let Some(fd) = call
                .rsplit("= ")
                .next()
                .and_then(|n| n.trim().parse::<u32>().ok())
            {
                sync_fds.insert(fd);
            }
        } else if call.starts_with("write(1, \"@@begin") {
            in_op = true;
            dirty = false;
        } else if call.starts_with("write(1, \"@@ok") {
            assert!(in_op, "ok without begin in strace log");
            assert!(
                !dirty,
                "a commit was acknowledged with unsynced writes: {l}"
            );
            synced_ops += 1;
            in_op = false;
        } else if in_op
            && ["pwrite", "write(", "writev("]
                .iter()
                .any(|w| call.starts_with(w))
        {
            writes += 1;
            if !fd_of(call).is_some_and(|fd| sync_fds.contains(&fd)) {
                dirty = true;
            }
        } else if in_op
            && ["fdatasync(", "fsync(", "msync("]
                .iter()
                .any(|w| call.starts_with(w))
        {
            dirty = false;
        }
    }
    assert_eq!(synced_ops, 40, "strace log did not show the 40 commits");
    assert!(writes >= 40, "no file writes seen in the strace log");
}
