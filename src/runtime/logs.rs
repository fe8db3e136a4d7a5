//! The CRI log copier: reads a container's stdout and stderr FIFOs and writes
//! `<RFC3339Nano> <stream> <F|P> <text>` lines to its log file, rotating it as the kubelet does
//! (`<n>.log` renamed to `<n>.log.<YYYYMMDD-HHMMSS>`, oldest rotated files removed).
//!
//! One thread (`log-copier`) copies for every container of the agent: the FIFOs of all of them
//! sit in one epoll set, and the thread sleeps in `epoll_wait` with no timeout until a FIFO has
//! data or hangs up, or a [`Copier`] is added or told to stop (an eventfd). An idle container
//! costs no thread and no wake-up; a container's copy ends at EOF on both its streams, and
//! whoever waits for that end ([`Copier::join`], [`Copier::wait`]) is woken then.

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// A line longer than this is cut into partial (`P`) lines, as containerd does.
const MAX_LINE: usize = 16 * 1024;

/// Rotation limits of a log file.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    /// Rotate when the file would grow past this many bytes.
    pub max_size: u64,
    /// Keep at most this many files (the live one included).
    pub max_files: u32,
}

/// The live log file of a container, written by the copier thread only.
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl LogFile {
    fn open(path: &Path, rotation: Rotation) -> std::io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.rotation.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let stamp: String = crate::api::rfc3339(SystemTime::now())
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .map(|c| if c == 'T' { '-' } else { c })
            .collect();
        // Several rotations within a second: number them past the highest one there, so a
        // newer file never takes the name of an older one already pruned.
        let taken = rotated_files(&self.path)
            .into_iter()
            .filter(|((s, _), _)| *s == stamp)
            .map(|((_, n), _)| n + 1)
            .max();
        let rotated = match taken {
            None => PathBuf::from(format!("{}.{stamp}", self.path.display())),
            Some(n) => PathBuf::from(format!("{}.{stamp}.{n}", self.path.display())),
        };
        std::fs::rename(&self.path, &rotated)?;
        prune(
            &self.path,
            self.rotation.max_files.saturating_sub(1) as usize,
        );
        *self = LogFile::open(&self.path.clone(), self.rotation)?;
        Ok(())
    }
}

/// The rotated files of `live`, keyed by their name's `<stamp>[.<n>]` (file mtimes are too
/// coarse, a jiffy, to order rotations that follow each other quickly).
fn rotated_files(live: &Path) -> Vec<((String, u64), PathBuf)> {
    let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let file = e.file_name().to_string_lossy().to_string();
                    let rest = file.strip_prefix(&prefix)?;
                    let (stamp, n) = match rest.split_once('.') {
                        Some((s, n)) => (s.to_string(), n.parse().ok()?),
                        None => (rest.to_string(), 0),
                    };
                    Some(((stamp, n), e.path()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the oldest rotated files of `live` beyond `keep`.
fn prune(live: &Path, keep: usize) {
    let mut rotated = rotated_files(live);
    rotated.sort();
    let excess = rotated.len().saturating_sub(keep);
    for (_, p) in rotated.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

/// Formats one CRI log line.
pub fn cri_line(at: SystemTime, stream: &str, partial: bool, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 48);
    out.extend_from_slice(crate::api::rfc3339_nanos(at).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// One of a container's two streams.
///
/// The FIFO is opened non-blocking before the shim's Create (the shim's own open for writing
/// blocks until a reader exists) and read when epoll says so. A FIFO reads as EOF also before
/// its first writer came, so EOF counts only once `armed`: a writer was seen (epoll reported
/// the FIFO), the copier was started on an adopted container (its writer is open or gone for
/// good), or it was told to stop.
struct Stream {
    file: File,
    name: &'static str,
    pending: Vec<u8>,
    armed: bool,
    done: bool,
}

impl Stream {
    /// Reads what the FIFO holds and writes the complete lines; whether it read anything.
    fn pump(&mut self, log: &mut LogFile, buf: &mut [u8], taps: &Shared) -> std::io::Result<bool> {
        use std::io::Read;
        let n = match self.file.read(buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            if self.armed {
                // The last bytes before EOF, with no newline, are a partial line (as
                // containerd's logger writes them): a reader shows them without one.
                if !self.pending.is_empty() {
                    write_line(log, self.name, true, &self.pending);
                    self.pending.clear();
                }
                self.done = true;
            }
            return Ok(false);
        }
        taps.send(self.name, &buf[..n]);
        self.pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let line = &self.pending[start..end];
            if line.is_empty() {
                write_line(log, self.name, false, b"");
            }
            let mut chunks = line.chunks(MAX_LINE).peekable();
            while let Some(c) = chunks.next() {
                write_line(log, self.name, chunks.peek().is_some(), c);
            }
            start = end + 1;
        }
        self.pending.drain(..start);
        // A line longer than MAX_LINE goes out in partial pieces.
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            write_line(log, self.name, true, &self.pending);
            self.pending = rest;
        }
        Ok(true)
    }
}

fn write_line(log: &mut LogFile, stream: &str, partial: bool, text: &[u8]) {
    let line = cri_line(SystemTime::now(), stream, partial, text);
    if let Err(e) = log.write_line(&line) {
        tracing::warn!(path = %log.path.display(), error = %e, "log write failed");
    }
}

/// What a tap gets: the stream's name (`stdout`, `stderr`) and the bytes read from it.
pub type Chunk = (&'static str, Vec<u8>);

/// How many chunks a tap holds before it misses some.
const TAP_BUFFER: usize = 64;

/// What a [`Copier`] handle and the copier thread share: the taps (attach sessions; a tap
/// that does not keep up misses chunks, the log is never held up by a slow client) and
/// whether the copy ended.
#[derive(Default)]
struct Shared {
    taps: Mutex<Vec<async_channel::Sender<Chunk>>>,
    ended: Mutex<bool>,
    ended_cv: Condvar,
}

impl Shared {
    fn send(&self, name: &'static str, bytes: &[u8]) {
        let mut taps = self.taps.lock().unwrap_or_else(|p| p.into_inner());
        if taps.is_empty() {
            return;
        }
        taps.retain(|t| match t.try_send((name, bytes.to_vec())) {
            Ok(()) | Err(async_channel::TrySendError::Full(_)) => true,
            Err(async_channel::TrySendError::Closed(_)) => false,
        });
    }

    /// Marks the copy ended: every tap ends (their receivers see the end of output) and every
    /// waiter wakes.
    fn end(&self) {
        let mut taps = self.taps.lock().unwrap_or_else(|p| p.into_inner());
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = true;
        taps.clear();
        drop(taps);
        self.ended_cv.notify_all();
    }

    fn ended(&self) -> bool {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A container's copy, as the copier thread holds it.
struct Entry {
    tag: String,
    streams: [Stream; 2],
    log: LogFile,
    shared: Arc<Shared>,
}

/// What the copier thread is asked to do.
enum Request {
    /// Copy a new container's streams (key, entry).
    Add(u64, Box<Entry>),
    /// End the copy at the next EOF even if no writer ever came.
    Stop(u64),
}

/// Reads of one stream in a drain before the others get their turn.
const DRAIN_READS: usize = 16;

/// epoll data of the hub's eventfd; a stream's is `key << 1 | stream index`.
const WAKE_TOKEN: u64 = u64::MAX;

/// The copier thread's epoll set and mailbox, one for the process.
struct Hub {
    epoll: Epoll,
    wake: EventFd,
    requests: Mutex<Vec<Request>>,
    next_key: Mutex<u64>,
}

impl Hub {
    /// The process's hub; its thread starts at the first call.
    fn get() -> std::io::Result<&'static Hub> {
        static HUB: OnceLock<&'static Hub> = OnceLock::new();
        static INIT: Mutex<()> = Mutex::new(());
        if let Some(h) = HUB.get() {
            return Ok(h);
        }
        let _once = INIT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = HUB.get() {
            return Ok(h);
        }
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        epoll.add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN))?;
        let hub: &'static Hub = Box::leak(Box::new(Hub {
            epoll,
            wake,
            requests: Mutex::new(Vec::new()),
            next_key: Mutex::new(0),
        }));
        std::thread::Builder::new()
            .name("log-copier".into())
            .stack_size(256 * 1024)
            .spawn(move || hub.run())?;
        let _ = HUB.set(hub);
        Ok(hub)
    }

    fn key(&self) -> u64 {
        let mut k = self.next_key.lock().unwrap_or_else(|p| p.into_inner());
        *k += 1;
        *k
    }

    fn ask(&self, r: Request) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
        // A full counter (EAGAIN) means the thread is woken already.
        let _ = self.wake.write(1);
    }

    /// The copier thread: waits for FIFOs and requests, never on a timer.
    fn run(&self) {
        let mut entries: HashMap<u64, Entry> = HashMap::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut events = [EpollEvent::empty(); 64];
        // Drains cut short, to go on with after a look at the others: a stream whose writers
        // are gone reports nothing more once empty, so its EOF must be read, not awaited.
        let mut again: Vec<(u64, usize)> = Vec::new();
        loop {
            let timeout = if again.is_empty() {
                EpollTimeout::NONE
            } else {
                EpollTimeout::ZERO
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => 0,
                Err(e) => {
                    tracing::warn!(error = %e, "log copier: epoll_wait failed");
                    std::thread::sleep(Duration::from_millis(100));
                    0
                }
            };
            let mut touched = Vec::new();
            for (key, i) in std::mem::take(&mut again) {
                if let Some(e) = entries.get_mut(&key) {
                    if self.pump(e, i, &mut buf, true) {
                        again.push((key, i));
                    }
                    touched.push(key);
                }
            }
            for ev in &events[..n] {
                let data = ev.data();
                if data == WAKE_TOKEN {
                    let _ = self.wake.read();
                    continue;
                }
                let (key, i) = (data >> 1, (data & 1) as usize);
                if let Some(e) = entries.get_mut(&key) {
                    // Reported ready: a writer came (or hung up), so EOF is final now.
                    e.streams[i].armed = true;
                    self.pump(e, i, &mut buf, false);
                    touched.push(key);
                }
            }
            let requests =
                std::mem::take(&mut *self.requests.lock().unwrap_or_else(|p| p.into_inner()));
            for r in requests {
                match r {
                    Request::Add(key, e) => {
                        let mut e = *e;
                        let mut ok = true;
                        for (i, s) in e.streams.iter().enumerate() {
                            let ev = EpollEvent::new(EpollFlags::EPOLLIN, key << 1 | i as u64);
                            if let Err(err) = self.epoll.add(&s.file, ev) {
                                tracing::warn!(container = %e.tag, error = %err, "log copier: cannot watch the FIFO");
                                ok = false;
                            }
                        }
                        if !ok {
                            self.close(&mut e);
                            continue;
                        }
                        // A FIFO opened with no writer reports nothing until a writer comes:
                        // an adopted container's writer may be gone for good already, so its
                        // streams are read first.
                        for i in 0..2 {
                            if e.streams[i].armed && self.pump(&mut e, i, &mut buf, true) {
                                again.push((key, i));
                            }
                        }
                        entries.insert(key, e);
                        touched.push(key);
                    }
                    Request::Stop(key) => {
                        if let Some(e) = entries.get_mut(&key) {
                            for i in 0..2 {
                                e.streams[i].armed = true;
                                if self.pump(e, i, &mut buf, true) {
                                    again.push((key, i));
                                }
                            }
                            touched.push(key);
                        }
                    }
                }
            }
            for key in touched {
                let over = entries
                    .get(&key)
                    .is_some_and(|e| e.streams.iter().all(|s| s.done));
                if over {
                    if let Some(mut e) = entries.remove(&key) {
                        self.close(&mut e);
                    }
                }
            }
        }
    }

    /// Reads stream `i` of `e` once, or with `drain` until it has nothing more but at most
    /// [`DRAIN_READS`] times (a writer faster than the copy must not hold up the others);
    /// whether a drain stopped short. A stream at EOF leaves the epoll set (its hang-up would
    /// report ready forever); a failed one ends the container's copy.
    fn pump(&self, e: &mut Entry, i: usize, buf: &mut [u8], drain: bool) -> bool {
        if e.streams[i].done {
            return false;
        }
        let mut short = false;
        for n in 1.. {
            let s = &mut e.streams[i];
            match s.pump(&mut e.log, buf, &e.shared) {
                Ok(true) if drain && n < DRAIN_READS => continue,
                Ok(more) => {
                    short = drain && more;
                    break;
                }
                Err(err) => {
                    tracing::warn!(container = %e.tag, stream = s.name, error = %err, "log copy stopped");
                    for s in e.streams.iter_mut() {
                        s.done = true;
                    }
                    break;
                }
            }
        }
        if e.streams[i].done {
            let _ = self.epoll.delete(&e.streams[i].file);
        }
        short
    }

    /// Ends a container's copy: out of the epoll set, taps closed, waiters woken.
    fn close(&self, e: &mut Entry) {
        for s in e.streams.iter_mut() {
            let _ = self.epoll.delete(&s.file);
            s.done = true;
        }
        e.shared.end();
    }
}

/// A container's copy on the copier thread. Dropping the handle does not end the copy: it
/// ends at EOF, when the container's writers are gone.
pub struct Copier {
    key: u64,
    shared: Arc<Shared>,
}

impl Copier {
    /// Starts copying `stdout` and `stderr` FIFOs into `log_path`. `adopted`: the container's
    /// shim opened its writers already (a restarted agent), so EOF is final from the start.
    pub fn start(
        tag: &str,
        stdout: &Path,
        stderr: &Path,
        log_path: &Path,
        rotation: Rotation,
        adopted: bool,
    ) -> std::io::Result<Copier> {
        let hub = Hub::get()?;
        let log = LogFile::open(log_path, rotation)?;
        // Open here, not on the copier thread: the shim's Create needs the readers to exist.
        let open = |fifo: &Path, name: &'static str| -> std::io::Result<Stream> {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo)?;
            Ok(Stream {
                file,
                name,
                pending: Vec::new(),
                armed: adopted,
                done: false,
            })
        };
        let streams = [open(stdout, "stdout")?, open(stderr, "stderr")?];
        let shared = Arc::new(Shared::default());
        let key = hub.key();
        hub.ask(Request::Add(
            key,
            Box::new(Entry {
                tag: tag.to_string(),
                streams,
                log,
                shared: shared.clone(),
            }),
        ));
        Ok(Copier { key, shared })
    }

    /// A copy of everything read from now on, until the container's output ends (the
    /// receiver then closes). Chunks a slow receiver has no room for are dropped.
    pub fn tap(&self) -> async_channel::Receiver<Chunk> {
        let (tx, rx) = async_channel::bounded(TAP_BUFFER);
        let mut taps = self.shared.taps.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock the copy's end takes: no tap outlives the output.
        if !self.shared.ended() {
            taps.push(tx);
        }
        rx
    }

    /// Tells the copier to end at the next EOF even if no writer ever came.
    pub fn stop(&self) {
        if let Ok(hub) = Hub::get() {
            hub.ask(Request::Stop(self.key));
        }
    }

    /// Whether both streams reached EOF.
    pub fn finished(&self) -> bool {
        self.shared.ended()
    }

    /// Waits up to `timeout` for both streams to reach EOF; whether they did.
    pub fn wait(&self, timeout: Duration) -> bool {
        let ended = self.shared.ended.lock().unwrap_or_else(|p| p.into_inner());
        let (ended, _) = self
            .shared
            .ended_cv
            .wait_timeout_while(ended, timeout, |e| !*e)
            .unwrap_or_else(|p| p.into_inner());
        *ended
    }

    /// Waits for both streams to drain (after the process exited).
    pub fn join(self) {
        let mut ended = self.shared.ended.lock().unwrap_or_else(|p| p.into_inner());
        while !*ended {
            ended = self
                .shared
                .ended_cv
                .wait(ended)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1, 5);
        assert_eq!(
            cri_line(t, "stdout", false, b"hi"),
            b"1970-01-01T00:00:01.000000005Z stdout F hi\n"
        );
        assert!(cri_line(t, "stderr", true, b"x").ends_with(b"stderr P x\n"));
    }

    fn fifos(d: &Path) -> (PathBuf, PathBuf) {
        let (out, err) = (d.join("out"), d.join("err"));
        for f in [&out, &err] {
            nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        (out, err)
    }

    fn wait_finished(c: &Copier) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !c.finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        c.finished()
    }

    #[test]
    fn stop_wakes_a_copier_whose_writer_never_came() {
        // Idle, the copier sleeps in poll() with no timeout: only stop() can end it.
        let d = tempfile::tempdir().unwrap();
        let (out, err) = fifos(d.path());
        let rot = Rotation {
            max_size: 1 << 20,
            max_files: 2,
        };
        let c = Copier::start("t", &out, &err, &d.path().join("0.log"), rot, false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!c.finished(), "no writer yet: the copier waits");
        c.stop();
        assert!(wait_finished(&c), "stop() did not wake the copier");
        c.join();
    }

    #[test]
    fn an_adopted_copier_ends_when_its_writers_are_gone_already() {
        // The container exited while the agent was down: its output waits in the FIFOs and no
        // writer is left, so no hang-up will ever be reported to the new reader.
        let d = tempfile::tempdir().unwrap();
        let (out, err) = fifos(d.path());
        // A writer's open blocks until a reader exists: a placeholder reader lets them open.
        let hold = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p)
                .unwrap()
        };
        let (r_out, r_err) = (hold(&out), hold(&err));
        let mut w_out = OpenOptions::new().write(true).open(&out).unwrap();
        let w_err = OpenOptions::new().write(true).open(&err).unwrap();
        writeln!(w_out, "before the restart").unwrap();
        drop((w_out, w_err));
        let log = d.path().join("0.log");
        let rot = Rotation {
            max_size: 1 << 20,
            max_files: 2,
        };
        let c = Copier::start("t", &out, &err, &log, rot, true).unwrap();
        drop((r_out, r_err));
        assert!(
            wait_finished(&c),
            "the adopted copier missed its writers' EOF"
        );
        c.join();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains(" stdout F before the restart\n"), "{text}");
    }

    #[test]
    fn copies_and_rotates() {
        let d = tempfile::tempdir().unwrap();
        let (out, err) = (d.path().join("out"), d.path().join("err"));
        for f in [&out, &err] {
            nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        let dir = d.path().join("logs/app");
        let log = dir.join("0.log");
        // Run 1 keeps every file: all lines of both streams are found; run 2 prunes.
        for (max_files, lines) in [(50, 10), (2, 40)] {
            let rot = Rotation {
                max_size: 200,
                max_files,
            };
            // Reader first, then the writers, as at the shim's Create.
            let c = Copier::start("t", &out, &err, &log, rot, false).unwrap();
            let mut w_out = OpenOptions::new().write(true).open(&out).unwrap();
            let mut w_err = OpenOptions::new().write(true).open(&err).unwrap();
            for i in 0..lines {
                writeln!(w_out, "line {i} of stdout").unwrap();
            }
            w_err.write_all(b"no newline").unwrap();
            drop((w_out, w_err));
            c.join();
            let files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            let mut text = String::new();
            for f in &files {
                assert!(
                    std::fs::metadata(f).unwrap().len() <= 200,
                    "{}",
                    f.display()
                );
                text += &std::fs::read_to_string(f).unwrap();
            }
            assert!(
                text.contains(&format!(" stdout F line {} of stdout\n", lines - 1)),
                "{text}"
            );
            if max_files == 50 {
                assert!(text.contains(" stdout F line 0 of stdout\n"), "{text}");
                // Cut off at EOF: a partial line, as containerd writes it.
                assert!(text.contains(" stderr P no newline\n"), "{text}");
            } else {
                assert_eq!(files.len(), 2, "live file plus one rotated: {files:?}");
            }
        }
    }

    #[test]
    fn long_lines_are_partial() {
        let d = tempfile::tempdir().unwrap();
        let (out, err) = (d.path().join("out"), d.path().join("err"));
        for f in [&out, &err] {
            nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        let log = d.path().join("0.log");
        let rot = Rotation {
            max_size: 1 << 20,
            max_files: 2,
        };
        let c = Copier::start("t", &out, &err, &log, rot, false).unwrap();
        let mut w = OpenOptions::new().write(true).open(&out).unwrap();
        let _e = OpenOptions::new().write(true).open(&err).unwrap();
        let long = "x".repeat(MAX_LINE * 2 + 10);
        writeln!(w, "{long}").unwrap();
        writeln!(w).unwrap();
        writeln!(w, "short").unwrap();
        drop((w, _e));
        c.join();
        let text = std::fs::read_to_string(&log).unwrap();
        let tags: Vec<(&str, usize)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                (f[2], f.get(3).map_or(0, |m| m.len()))
            })
            .collect();
        assert_eq!(
            tags,
            [
                ("P", MAX_LINE),
                ("P", MAX_LINE),
                ("F", 10),
                ("F", 0),
                ("F", 5)
            ]
        );
    }

    /// The agent's threads named `name`.
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .count()
    }

    #[test]
    fn many_copiers_share_one_thread() {
        // 40 containers, each its own FIFOs and log file, all copied by one thread; each
        // container's copy ends on its own when its writers close, and not before.
        let d = tempfile::tempdir().unwrap();
        let rot = Rotation {
            max_size: 1 << 20,
            max_files: 2,
        };
        let mut running = Vec::new();
        for n in 0..40 {
            let dir = d.path().join(format!("c{n}"));
            std::fs::create_dir(&dir).unwrap();
            let (out, err) = fifos(&dir);
            let log = dir.join("0.log");
            let c = Copier::start(&format!("c{n}"), &out, &err, &log, rot, false).unwrap();
            let w_out = OpenOptions::new().write(true).open(&out).unwrap();
            let w_err = OpenOptions::new().write(true).open(&err).unwrap();
            running.push((n, c, log, w_out, w_err));
        }
        assert_eq!(threads_named("log-copier"), 1, "one copier thread for all");
        for (n, _, _, w_out, w_err) in running.iter_mut() {
            writeln!(w_out, "out of {n}").unwrap();
            write!(w_err, "err of {n}, no newline").unwrap();
        }
        // The even ones exit: their copies end, the odd ones' go on.
        let (even, odd): (Vec<_>, Vec<_>) = running.into_iter().partition(|r| r.0 % 2 == 0);
        let mut odd_copiers = Vec::new();
        for (n, c, log, w_out, w_err) in even {
            drop((w_out, w_err));
            assert!(
                c.wait(std::time::Duration::from_secs(10)),
                "copy {n} did not end"
            );
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(text.contains(&format!(" stdout F out of {n}\n")), "{text}");
            assert!(
                text.contains(&format!(" stderr P err of {n}, no newline\n")),
                "{text}"
            );
        }
        for (n, c, log, w_out, w_err) in odd {
            assert!(!c.finished(), "copy {n} ended with its writers open");
            odd_copiers.push((n, c, log, w_out, w_err));
        }
        for (n, c, log, mut w_out, w_err) in odd_copiers {
            writeln!(w_out, "last of {n}").unwrap();
            drop((w_out, w_err));
            c.join();
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(text.contains(&format!(" stdout F last of {n}\n")), "{text}");
        }
        assert_eq!(threads_named("log-copier"), 1);
    }

    #[test]
    fn one_writer_closing_leaves_the_other_stream_copied() {
        // stdout's writer goes first (a process that closed it); stderr goes on, and the copy
        // ends only with it.
        let d = tempfile::tempdir().unwrap();
        let (out, err) = fifos(d.path());
        let log = d.path().join("0.log");
        let rot = Rotation {
            max_size: 1 << 20,
            max_files: 2,
        };
        let c = Copier::start("t", &out, &err, &log, rot, false).unwrap();
        let tap = c.tap();
        let mut w_out = OpenOptions::new().write(true).open(&out).unwrap();
        let mut w_err = OpenOptions::new().write(true).open(&err).unwrap();
        write!(w_out, "half").unwrap();
        drop(w_out);
        let read = |pat: &str| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains(pat) || std::time::Instant::now() > deadline {
                    return text;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let text = read(" stdout P half\n");
        assert!(text.contains(" stdout P half\n"), "{text}");
        assert!(!c.finished(), "stderr is still open");
        writeln!(w_err, "still here").unwrap();
        let text = read(" stderr F still here\n");
        assert!(text.contains(" stderr F still here\n"), "{text}");
        drop(w_err);
        assert!(c.wait(std::time::Duration::from_secs(10)));
        // The tap saw both streams and then its end.
        let mut got = Vec::new();
        while let Ok((name, bytes)) = tap.try_recv() {
            got.push((name, bytes));
        }
        assert!(tap.is_closed(), "the tap outlived the output");
        assert!(got.contains(&("stdout", b"half".to_vec())), "{got:?}");
        assert!(
            got.contains(&("stderr", b"still here\n".to_vec())),
            "{got:?}"
        );
        assert!(c.tap().is_closed(), "a tap taken after the end is closed");
    }
}
