//! Reading a container's CRI log as the kubelet's `kuberuntime/logs` (ReadLogs) does, for
//! `edged logs` and the HTTP API alike: `<RFC3339Nano> <stream> <P|F> <text>` lines with
//! partial (`P`) lines joined per stream, the rotated files (`<n>.log.<YYYYMMDD-HHMMSS>[.k]`,
//! written by `runtime::logs`) read oldest first, then the live `<n>.log`; `tail`, `since`,
//! `timestamps` and `limit_bytes` as `PodLogOptions` means them. Following keeps reading the
//! live file across a rotation (the file renamed and a new one made) until the caller says the
//! container ended ([`LogReader::finish`]).
//!
//! Unlike the kubelet, `tail` counts whole lines (a line split into partial pieces counts
//! once), and rotated files are read too (the kubelet reads only the live file).
//!
//! The files are opened when reading starts (the live one first), so a rotation meanwhile hides
//! no line.
//!
//! The reader itself never blocks waiting: [`LogReader::read`] returns [`Step::Idle`] at the
//! end of the live file when following, and the caller waits on a [`Watch`] (inotify on the
//! log directory) and checks the container.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How much is read from a file at a time.
const CHUNK: usize = 64 * 1024;

/// What to read, as the kubelet's `LogOptions` (from `v1.PodLogOptions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep reading new lines until the container ends.
    pub follow: bool,
    /// Only the last this many lines (whole lines); `None`: all.
    pub tail: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Prefix each line with its RFC 3339 time (nanoseconds, 9 digits).
    pub timestamps: bool,
    /// Stop after this many bytes of output (a line may be cut).
    pub limit_bytes: Option<u64>,
}

/// What [`LogReader::read`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Output was added (more may follow at once).
    Data,
    /// Following: at the end of the live file, nothing new; wait and read again.
    Idle,
    /// Nothing more will come.
    Done,
}

/// One physical line of a CRI log.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// When the runtime wrote it.
    pub time: SystemTime,
    /// 0 for stdout, 1 for stderr.
    pub stream: usize,
    /// A piece of a longer line (`P`), more follows on the same stream.
    pub partial: bool,
    /// The text, without the line end.
    pub text: &'a [u8],
}

/// Parses one CRI log line (without its `\n`); `None` for anything else.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let time = crate::api::parse_rfc3339(time)?;
    let stream = match parts.next()? {
        b"stdout" => 0,
        b"stderr" => 1,
        _ => return None,
    };
    // Tags are `:`-separated; the first says partial or full (forward compatible, as CRI).
    let tags = parts.next()?;
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    Some(Entry {
        time,
        stream,
        partial,
        text: parts.next().unwrap_or_default(),
    })
}

/// The rotated files of `live`, oldest first, ordered by their `<stamp>[.<k>]` names (as the
/// writer names them; file times are too coarse to order quick rotations).
pub fn rotated_files(live: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<((String, u64), PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let file = e.file_name().to_string_lossy().to_string();
                    let key = rotation_key(file.strip_prefix(&prefix)?)?;
                    Some((key, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// `YYYYMMDD-HHMMSS[.k]` as a sort key; `None` for other names.
fn rotation_key(rest: &str) -> Option<(String, u64)> {
    let (stamp, k) = match rest.split_once('.') {
        Some((s, k)) => (s, k.parse().ok()?),
        None => (rest, 0),
    };
    let ok = stamp.len() == 15
        && stamp
            .char_indices()
            .all(|(i, c)| if i == 8 { c == '-' } else { c.is_ascii_digit() });
    ok.then(|| (stamp.to_string(), k))
}

/// A file of the log to read: opened already, or the live path, to open when reached (it
/// was not there: renamed, the new one not made yet).
enum Source {
    Open(File, u64),
    Live,
}

/// The log's files, opened now, oldest first: the rotated ones, then the live one. The live
/// file is opened first, so a rotation meanwhile hides no file (the one renamed is read as
/// the live one, and found again by its inode when its end is reached). With `after`, only
/// the files newer than the one of that inode.
fn snapshot(live: &Path, after: Option<u64>) -> std::io::Result<Vec<Source>> {
    let opened = |p: &Path| -> std::io::Result<Option<(File, u64)>> {
        match File::open(p) {
            Ok(f) => {
                let ino = f.metadata()?.ino();
                Ok(Some((f, ino)))
            }
            // Pruned meanwhile, or (the live one) not made yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let live_file = opened(live)?;
    let live_ino = live_file.as_ref().map(|(_, i)| *i);
    if after.is_some() && after == live_ino {
        return Ok(Vec::new());
    }
    let mut rotated = Vec::new();
    for p in rotated_files(live) {
        if let Some((f, ino)) = opened(&p)? {
            if Some(ino) != live_ino {
                rotated.push((f, ino));
            }
        }
    }
    if let Some(a) = after {
        // Not among them: pruned already, so every rotated file left is newer.
        if let Some(i) = rotated.iter().position(|(_, ino)| *ino == a) {
            rotated.drain(..=i);
        }
    }
    let mut out: Vec<Source> = rotated
        .into_iter()
        .map(|(f, ino)| Source::Open(f, ino))
        .collect();
    out.push(match live_file {
        Some((f, ino)) => Source::Open(f, ino),
        None => Source::Live,
    });
    Ok(out)
}

/// Calls `visit(offset, line)` for each line of `f` from the last to the first (without
/// the `\n`), until it returns true. Returns whether it stopped early.
fn lines_backward(f: &File, mut visit: impl FnMut(u64, &[u8]) -> bool) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut pos = f.metadata()?.len();
    // The bytes after `pos` not yet handed out: the start of a line whose beginning is before.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        if pos == 0 {
            return Ok(!carry.is_empty() && visit(0, &carry));
        }
        let start = pos.saturating_sub(CHUNK as u64);
        let mut data = vec![0u8; (pos - start) as usize];
        // Positional reads: the file's offset stays where reading will start.
        f.read_exact_at(&mut data, start)?;
        data.extend_from_slice(&carry);
        let mut end = data.len();
        while let Some(nl) = data[..end].iter().rposition(|b| *b == b'\n') {
            let line = &data[nl + 1..end];
            if !line.is_empty() && visit(start + nl as u64 + 1, line) {
                return Ok(true);
            }
            end = nl;
        }
        carry = data[..end].to_vec();
        pos = start;
    }
}

/// Where reading starts for the last `n` lines: the index in `files`, the offset in it, and
/// how many whole lines read from there are not among the last `n` and are dropped (the
/// lines of the other stream between the partial pieces of a counted line).
/// A line is a full (`F`) line with the partial pieces of its stream before it.
fn tail_start(files: &[Source], n: u64) -> std::io::Result<(usize, u64, u64)> {
    let last = files.len().saturating_sub(1);
    if n == 0 {
        let len = match files.get(last) {
            Some(Source::Open(f, _)) => f.metadata()?.len(),
            _ => 0,
        };
        return Ok((last, len, 0));
    }
    let mut count = 0;
    let mut start = (0, 0);
    // Per stream: a counted line whose first piece is further back.
    let mut open = [false; 2];
    // Lines not counted seen since `start` last moved, and those behind `start` now.
    let (mut extra, mut skip) = (0, 0);
    for (i, f) in files.iter().enumerate().rev() {
        let Source::Open(f, _) = f else {
            continue;
        };
        let stopped = lines_backward(f, |off, line| {
            let Some(e) = parse_line(line) else {
                return false;
            };
            let s = e.stream;
            if count < n || (e.partial && open[s]) {
                if !e.partial {
                    count += 1;
                }
                open[s] = true;
                start = (i, off);
                skip += extra;
                extra = 0;
            } else if !e.partial {
                // Not counted; a counted line of this stream starts right after it.
                open[s] = false;
                extra += 1;
            }
            count == n && !open.iter().any(|o| *o)
        })?;
        if stopped {
            break;
        }
    }
    Ok((start.0, start.1, skip))
}

/// A container log being read.
pub struct LogReader {
    live: PathBuf,
    opts: LogOptions,
    /// Files still to read after the current one.
    queue: VecDeque<Source>,
    /// Where to start in the first file (the tail's start).
    first_offset: u64,
    /// Whole lines still to drop (see [`tail_start`]).
    skip: u64,
    file: Option<(File, u64)>,
    /// Bytes read but not yet a whole physical line.
    raw: Vec<u8>,
    /// Per stream: the time and text of a line whose partial pieces came so far.
    pending: [Option<(SystemTime, Vec<u8>)>; 2],
    /// Output bytes still allowed.
    remain: u64,
    /// The live file was seen renamed: read the old one to its end once more, then go on.
    rotation: Option<Vec<Source>>,
    done: bool,
}

impl LogReader {
    /// Starts reading the log whose live file is `live`.
    pub fn open(live: &Path, opts: LogOptions) -> std::io::Result<LogReader> {
        let files = snapshot(live, None)?;
        if !files.iter().any(|f| matches!(f, Source::Open(..))) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no log file at {}", live.display()),
            ));
        }
        let (first, first_offset, skip) = match opts.tail {
            Some(n) => tail_start(&files, n)?,
            None => (0, 0, 0),
        };
        Ok(LogReader {
            live: live.to_path_buf(),
            remain: opts.limit_bytes.unwrap_or(u64::MAX),
            done: opts.limit_bytes == Some(0),
            opts,
            queue: files.into_iter().skip(first).collect(),
            first_offset,
            skip,
            file: None,
            raw: Vec::new(),
            pending: [None, None],
            rotation: None,
        })
    }

    /// The container ended: read what is left, then stop.
    pub fn finish(&mut self) {
        self.opts.follow = false;
    }

    /// Whether the reader still follows (was asked to and [`finish`](Self::finish) was not called).
    pub fn following(&self) -> bool {
        self.opts.follow
    }

    /// Appends output to `out` until it holds about `max` bytes or nothing is left to read now.
    pub fn read(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<Step> {
        let start_len = out.len();
        let mut buf = vec![0u8; CHUNK];
        loop {
            if self.done {
                return Ok(if out.len() > start_len {
                    Step::Data
                } else {
                    Step::Done
                });
            }
            if out.len() >= max {
                return Ok(Step::Data);
            }
            if self.file.is_none() && !self.open_next()? {
                // Nothing to open (the live file is gone): the end, unless following.
                if self.opts.follow {
                    return Ok(self.idle(out, start_len));
                }
                self.end(out);
                continue;
            }
            let Some((f, _)) = self.file.as_mut() else {
                continue;
            };
            let n = match f.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n > 0 {
                self.raw.extend_from_slice(&buf[..n]);
                self.lines(out);
                continue;
            }
            // The end of the current file.
            if !self.queue.is_empty() {
                self.next_file();
                continue;
            }
            if let Some(next) = self.rotation.take() {
                // The old file was read to its end after the rename: on to its successors.
                self.queue = next.into();
                self.next_file();
                continue;
            }
            if let Some(next) = self.rotated_away()? {
                // Renamed: what was written before the rename is read first.
                self.rotation = Some(next);
                continue;
            }
            if self.opts.follow {
                return Ok(self.idle(out, start_len));
            }
            self.end(out);
        }
    }

    fn idle(&self, out: &[u8], start_len: usize) -> Step {
        if out.len() > start_len {
            Step::Data
        } else {
            Step::Idle
        }
    }

    /// No more input: pieces of a line never finished go out as they are, without a line end.
    fn end(&mut self, out: &mut Vec<u8>) {
        for s in 0..2 {
            if let Some((t, text)) = self.pending[s].take() {
                self.emit(out, t, &text, false);
            }
        }
        self.done = true;
    }

    fn next_file(&mut self) {
        // A file ends with a whole line; anything else left is dropped with it.
        self.raw.clear();
        self.file = None;
    }

    /// Opens the next file of the queue; false when there is none (or the live one is not
    /// there yet).
    fn open_next(&mut self) -> std::io::Result<bool> {
        let Some(src) = self.queue.pop_front() else {
            return Ok(false);
        };
        let (mut f, ino) = match src {
            Source::Open(f, ino) => (f, ino),
            Source::Live => match File::open(&self.live) {
                Ok(f) => {
                    let ino = f.metadata()?.ino();
                    (f, ino)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Try again later.
                    self.queue.push_front(Source::Live);
                    return Ok(false);
                }
                Err(e) => return Err(e),
            },
        };
        let offset = std::mem::take(&mut self.first_offset);
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))?;
        }
        self.file = Some((f, ino));
        Ok(true)
    }

    /// If the file being read is no longer the live file (rotated), the files to read after
    /// it, opened: the rotated ones newer than it, then the live one.
    fn rotated_away(&self) -> std::io::Result<Option<Vec<Source>>> {
        let Some((_, ino)) = &self.file else {
            return Ok(None);
        };
        let ino = *ino;
        match std::fs::metadata(&self.live) {
            Ok(m) if m.ino() == ino => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Renamed and the new one not made yet: go on only if ours shows among the
                // rotated files (else it is being renamed, or was removed: wait).
                let seen = rotated_files(&self.live)
                    .iter()
                    .any(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == ino));
                if !seen {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
        let next = snapshot(&self.live, Some(ino))?;
        Ok((!next.is_empty()).then_some(next))
    }

    /// Turns the whole physical lines read so far into output.
    fn lines(&mut self, out: &mut Vec<u8>) {
        let raw = std::mem::take(&mut self.raw);
        let mut start = 0;
        while let Some(pos) = raw[start..].iter().position(|b| *b == b'\n') {
            let line = &raw[start..start + pos];
            start += pos + 1;
            if self.done {
                break;
            }
            let Some(e) = parse_line(line) else {
                continue;
            };
            let slot = &mut self.pending[e.stream];
            let (time, mut text) = slot.take().unwrap_or((e.time, Vec::new()));
            text.extend_from_slice(e.text);
            if e.partial {
                *slot = Some((time, text));
            } else {
                self.emit(out, time, &text, true);
            }
        }
        if !self.done {
            self.raw = raw[start..].to_vec();
        }
    }

    /// Writes one line (filtered by `since`, prefixed, cut by the byte limit).
    fn emit(&mut self, out: &mut Vec<u8>, time: SystemTime, text: &[u8], newline: bool) {
        if newline && self.skip > 0 {
            self.skip -= 1;
            return;
        }
        if self.opts.since.is_some_and(|s| time < s) {
            return;
        }
        let mut line = Vec::with_capacity(text.len() + 32);
        if self.opts.timestamps {
            line.extend_from_slice(crate::api::rfc3339_nanos(time).as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(text);
        if newline {
            line.push(b'\n');
        }
        let take = (line.len() as u64).min(self.remain) as usize;
        out.extend_from_slice(&line[..take]);
        self.remain -= take as u64;
        if self.remain == 0 {
            self.done = true;
        }
    }
}

/// What a watch's events said of the files asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// No event of them.
    Nothing,
    /// A change begun: a file made or written to, its writer maybe still writing.
    Begun,
    /// A change ended: a file closed after writing, renamed in or out, or removed.
    Ended,
}

/// Wakes a follower when its log directory changes (a write, a new or renamed file).
pub struct Watch {
    inotify: nix::sys::inotify::Inotify,
}

impl Watch {
    /// Watches the directory of `live`.
    pub fn new(live: &Path) -> std::io::Result<Watch> {
        Watch::dir(live.parent().unwrap_or(Path::new(".")))
    }

    /// Watches directory `dir` (files written, made, renamed in or out, removed).
    pub fn dir(dir: &Path) -> std::io::Result<Watch> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_CLOSE_WRITE,
        )?;
        Ok(Watch { inotify })
    }

    /// Drops the events that came (they only say "read again").
    pub fn clear(&self) {
        while matches!(self.inotify.read_events(), Ok(ev) if !ev.is_empty()) {}
    }

    /// Drops the events that came, telling whether one of them ends a change: a file closed
    /// after writing, renamed in or out, or removed. `false` when they only begin one (a file
    /// made or written to, its writer maybe still writing).
    pub fn drain(&self) -> bool {
        self.drain_for(|_| true) == Activity::Ended
    }

    /// As [`drain`](Self::drain), for the files whose names `relevant` picks: events of other
    /// files (a writer's hidden temporary file) say nothing; an event without a name (of the
    /// directory itself, or a queue overflow) counts as an ended change.
    pub fn drain_for(&self, relevant: impl Fn(&str) -> bool) -> Activity {
        use nix::sys::inotify::AddWatchFlags as F;
        let ends = F::IN_CLOSE_WRITE | F::IN_MOVED_TO | F::IN_MOVED_FROM | F::IN_DELETE;
        let mut seen = Activity::Nothing;
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for e in &events {
                let counts = match &e.name {
                    Some(n) => n.to_str().is_some_and(&relevant),
                    None => true,
                };
                if !counts {
                    continue;
                }
                if e.name.is_none() || e.mask.intersects(ends) {
                    seen = Activity::Ended;
                } else if seen == Activity::Nothing {
                    seen = Activity::Begun;
                }
            }
        }
        seen
    }

    /// Waits until something changed or `timeout` passed (blocking).
    pub fn wait(&self, timeout: std::time::Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let ms = timeout.as_millis().min(u16::MAX as u128) as u16;
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(ms));
        self.clear();
    }
}

/// The inotify descriptor, for an async caller to wait on (`smol::Async<Watch>`).
impl std::os::fd::AsFd for Watch {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

/// Reads a log to `out` (blocking), following while `ended` says the container has not
/// ended (asked at most once a second, and only when there is nothing new to read).
pub fn copy(
    reader: &mut LogReader,
    out: &mut dyn std::io::Write,
    mut ended: impl FnMut() -> bool,
) -> std::io::Result<()> {
    let watch = if reader.following() {
        Some(Watch::new(&reader.live)?)
    } else {
        None
    };
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        buf.clear();
        let step = reader.read(&mut buf, CHUNK)?;
        out.write_all(&buf)?;
        out.flush()?;
        match step {
            Step::Data => {}
            Step::Done => return Ok(()),
            Step::Idle => {
                if ended() {
                    reader.finish();
                } else if let Some(w) = &watch {
                    w.wait(std::time::Duration::from_secs(1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_tells_a_finished_change_from_a_begun_one() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let w = Watch::dir(d.path()).unwrap();
        assert!(!w.drain(), "no event yet");
        let mut f = std::fs::File::create(d.path().join("pod.yaml")).unwrap();
        f.write_all(b"kind: Pod\n").unwrap();
        assert!(!w.drain(), "made and written, still open: begun only");
        drop(f);
        assert!(w.drain(), "closed after writing");
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("b.yaml"), "x").unwrap();
        std::fs::rename(other.path().join("b.yaml"), d.path().join("b.yaml")).unwrap();
        assert!(w.drain(), "renamed into place");
        std::fs::remove_file(d.path().join("b.yaml")).unwrap();
        assert!(w.drain(), "removed");
        assert!(!w.drain(), "nothing after");
        // A writer's hidden temporary file says nothing of the manifests; its rename does.
        let manifest = |n: &str| crate::manifest::read::is_manifest_name(n);
        let mut f = std::fs::File::create(d.path().join(".c.yaml.tmp")).unwrap();
        f.write_all(b"kind: Pod\n").unwrap();
        drop(f);
        assert_eq!(w.drain_for(manifest), Activity::Nothing);
        std::fs::rename(d.path().join(".c.yaml.tmp"), d.path().join("c.yaml")).unwrap();
        assert_eq!(w.drain_for(manifest), Activity::Ended);
        let _f = std::fs::File::create(d.path().join("d.yaml")).unwrap();
        assert_eq!(w.drain_for(manifest), Activity::Begun);
    }
    use crate::runtime::logs::cri_line;
    use std::io::Write;
    use std::time::Duration;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    /// Writes CRI lines `(second, stream, partial, text)` to `path`.
    fn write(path: &Path, lines: &[(u64, &str, bool, &str)]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for (s, stream, p, text) in lines {
            f.write_all(&cri_line(at(*s), stream, *p, text.as_bytes()))
                .unwrap();
        }
    }

    fn read_all(live: &Path, opts: LogOptions) -> String {
        let mut r = LogReader::open(live, opts).unwrap();
        let mut out = Vec::new();
        // Small steps: the result must not depend on where a read stops.
        loop {
            let max = out.len() + 7;
            if r.read(&mut out, max).unwrap() == Step::Done {
                break;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// A log rotated twice (two rotations in the same second, numbered `.1`), with a long
    /// line split into partial pieces interleaved with the other stream.
    fn rotated_log(d: &Path) -> PathBuf {
        let live = d.join("0.log");
        write(
            &d.join("0.log.20231114-221320"),
            &[(1, "stdout", false, "one"), (2, "stdout", true, "tw")],
        );
        write(
            &d.join("0.log.20231114-221320.1"),
            &[
                (3, "stderr", false, "err"),
                (4, "stdout", true, "o-"),
                (5, "stdout", false, "two"),
            ],
        );
        // An older-looking name that sorts first must come first; junk names are ignored.
        std::fs::write(d.join("0.log.tmp"), "junk\n").unwrap();
        std::fs::write(d.join("1.log"), "other attempt\n").unwrap();
        write(
            &live,
            &[
                (6, "stdout", false, "three"),
                (7, "stdout", false, ""),
                (8, "stderr", false, "four"),
            ],
        );
        live
    }

    #[test]
    fn parses_lines() {
        let e = parse_line(b"2023-11-14T22:13:21.000000005Z stderr P:x some text").unwrap();
        assert_eq!(e.stream, 1);
        assert!(e.partial);
        assert_eq!(e.text, b"some text");
        assert_eq!(e.time, at(1) + Duration::from_nanos(5));
        assert_eq!(
            parse_line(b"2023-11-14T22:13:21Z stdout F").unwrap().text,
            b""
        );
        for bad in [
            &b""[..],
            b"nonsense",
            b"2023-11-14T22:13:21Z stdin F x",
            b"x stdout F y",
        ] {
            assert!(parse_line(bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            rotation_key("20231114-221320"),
            Some(("20231114-221320".into(), 0))
        );
        assert_eq!(
            rotation_key("20231114-221320.12"),
            Some(("20231114-221320".into(), 12))
        );
        assert_eq!(rotation_key("tmp"), None);
        assert_eq!(rotation_key("20231114-221320.x"), None);
    }

    #[test]
    fn reads_rotated_files_in_order_and_joins_partial_lines() {
        let d = tempfile::tempdir().unwrap();
        let live = rotated_log(d.path());
        assert_eq!(
            read_all(&live, LogOptions::default()),
            "one\nerr\ntwo-two\nthree\n\nfour\n"
        );
    }

    #[test]
    fn tail_counts_whole_lines() {
        let d = tempfile::tempdir().unwrap();
        let live = rotated_log(d.path());
        let tail = |n| {
            read_all(
                &live,
                LogOptions {
                    tail: Some(n),
                    ..Default::default()
                },
            )
        };
        assert_eq!(tail(0), "");
        assert_eq!(tail(1), "four\n");
        assert_eq!(tail(3), "three\n\nfour\n");
        // The joined line reaches back into the oldest file for its first piece.
        assert_eq!(tail(4), "two-two\nthree\n\nfour\n");
        assert_eq!(tail(6), "one\nerr\ntwo-two\nthree\n\nfour\n");
        assert_eq!(tail(100), tail(6));

        // Past one read block (64 KiB), lines across block edges.
        let big = d.path().join("big/0.log");
        std::fs::create_dir_all(big.parent().unwrap()).unwrap();
        let texts: Vec<String> = (0..5000).map(|i| format!("line {i:05}")).collect();
        let lines: Vec<(u64, &str, bool, &str)> = texts
            .iter()
            .map(|t| (1, "stdout", false, t.as_str()))
            .collect();
        write(&big, &lines);
        for n in [1u64, 3, 4000, 5000, 6000] {
            let got = read_all(
                &big,
                LogOptions {
                    tail: Some(n),
                    ..Default::default()
                },
            );
            let from = 5000usize.saturating_sub(n as usize);
            let want: String = texts[from..].iter().map(|t| format!("{t}\n")).collect();
            assert_eq!(got, want, "tail {n}");
        }
    }

    #[test]
    fn since_timestamps_and_limit() {
        let d = tempfile::tempdir().unwrap();
        let live = rotated_log(d.path());
        let since = LogOptions {
            since: Some(at(5)),
            ..Default::default()
        };
        // A joined line has the time of its first piece (4): before `since`.
        assert_eq!(read_all(&live, since), "three\n\nfour\n");
        let ts = LogOptions {
            timestamps: true,
            tail: Some(2),
            ..Default::default()
        };
        assert_eq!(
            read_all(&live, ts),
            "2023-11-14T22:13:27.000000000Z \n2023-11-14T22:13:28.000000000Z four\n"
        );
        for (limit, want) in [(0, ""), (1, "o"), (4, "one\n"), (9, "one\nerr\nt")] {
            let o = LogOptions {
                limit_bytes: Some(limit),
                ..Default::default()
            };
            assert_eq!(read_all(&live, o), want, "limit {limit}");
        }
    }

    #[test]
    fn an_unfinished_line_goes_out_as_it_is() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("0.log");
        write(
            &live,
            &[(1, "stdout", false, "a"), (2, "stdout", true, "b")],
        );
        // And a torn last line (the writer mid-write) is not read.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&live)
            .unwrap()
            .write_all(b"2023-11-14T22:13:2")
            .unwrap();
        assert_eq!(read_all(&live, LogOptions::default()), "a\nb");
        assert_eq!(
            read_all(
                &live,
                LogOptions {
                    tail: Some(1),
                    ..Default::default()
                }
            ),
            "a\nb"
        );
    }

    #[test]
    fn a_rotation_right_after_opening_hides_no_line() {
        // The files are taken when the reader opens: the live one renamed before a byte of it
        // was read is still read, then the new one.
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("0.log");
        write(
            &d.path().join("0.log.20231114-221320"),
            &[(1, "stdout", false, "a")],
        );
        write(&live, &[(2, "stdout", false, "b")]);
        for tail in [None, Some(2)] {
            let mut r = LogReader::open(
                &live,
                LogOptions {
                    tail,
                    ..Default::default()
                },
            )
            .unwrap();
            let rotated = d.path().join("0.log.20231114-221321");
            std::fs::rename(&live, &rotated).unwrap();
            write(&live, &[(3, "stdout", false, "c")]);
            let mut out = Vec::new();
            while r.read(&mut out, 1 << 20).unwrap() != Step::Done {}
            assert_eq!(String::from_utf8_lossy(&out), "a\nb\nc\n", "tail {tail:?}");
            // Back as it was for the next round.
            std::fs::remove_file(&live).unwrap();
            std::fs::rename(&rotated, &live).unwrap();
        }
    }

    #[test]
    fn a_missing_log_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let e = LogReader::open(&d.path().join("0.log"), LogOptions::default())
            .err()
            .unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn follow_goes_across_rotations_and_ends_when_told() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("0.log");
        write(&live, &[(1, "stdout", false, "first")]);
        let mut r = LogReader::open(
            &live,
            LogOptions {
                follow: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut out = Vec::new();
        assert_eq!(r.read(&mut out, 1 << 20).unwrap(), Step::Data);
        assert_eq!(r.read(&mut out, 1 << 20).unwrap(), Step::Idle);
        // Two rotations while the follower looks away, a partial line across them.
        write(&live, &[(2, "stdout", true, "sec")]);
        std::fs::rename(&live, d.path().join("0.log.20231114-221322")).unwrap();
        write(&live, &[(3, "stdout", false, "ond")]);
        std::fs::rename(&live, d.path().join("0.log.20231114-221322.1")).unwrap();
        // The newest file is not made yet: the follower waits for it.
        assert_eq!(r.read(&mut out, 1 << 20).unwrap(), Step::Data);
        assert_eq!(r.read(&mut out, 1 << 20).unwrap(), Step::Idle);
        write(&live, &[(4, "stdout", false, "third")]);
        while r.read(&mut out, 1 << 20).unwrap() == Step::Data {}
        assert_eq!(String::from_utf8_lossy(&out), "first\nsecond\nthird\n");
        write(&live, &[(5, "stderr", false, "last words")]);
        r.finish();
        while r.read(&mut out, 1 << 20).unwrap() != Step::Done {}
        assert_eq!(
            String::from_utf8_lossy(&out),
            "first\nsecond\nthird\nlast words\n"
        );
    }

    #[test]
    fn copy_follows_until_the_container_ends() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("0.log");
        write(&live, &[(1, "stdout", false, "start")]);
        let writer = {
            let live = live.clone();
            std::thread::spawn(move || {
                for i in 0..5u64 {
                    std::thread::sleep(Duration::from_millis(50));
                    write(&live, &[(2 + i, "stdout", false, &format!("line {i}"))]);
                }
            })
        };
        let mut r = LogReader::open(
            &live,
            LogOptions {
                follow: true,
                tail: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        let mut out = Vec::new();
        copy(&mut r, &mut out, || writer.is_finished()).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "start\nline 0\nline 1\nline 2\nline 3\nline 4\n"
        );
    }
}
