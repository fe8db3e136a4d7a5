//! The CRI log copier: reads a container's stdout and stderr FIFOs and writes
//! `<RFC3339Nano> <stream> <F|P> <text>` lines to its log file, rotating it as the kubelet does
//! (`<n>.log` renamed to `<n>.log.<YYYYMMDD-HHMMSS>`, oldest rotated files removed).

use nix::sys::eventfd::{EfdFlags, EventFd};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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

/// The live log file of a container, shared by its two stream copiers.
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
/// blocks until a reader exists) and read through poll(). A FIFO reads as EOF also before its
/// first writer came, so EOF counts only once `armed`: a writer was seen, the copier was
/// started on an adopted container (its writer is open or gone for good), or it was told to
/// stop.
struct Stream {
    file: File,
    name: &'static str,
    pending: Vec<u8>,
    armed: bool,
    done: bool,
}

impl Stream {
    /// Reads what the FIFO holds and writes the complete lines; whether it read anything.
    fn pump(&mut self, log: &Mutex<LogFile>, buf: &mut [u8], taps: &Taps) -> std::io::Result<bool> {
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
                // The last bytes before EOF count as a full line.
                if !self.pending.is_empty() {
                    write_line(log, self.name, false, &self.pending);
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

/// How often a stopping copier reads its streams (ms).
const STOPPING_READ: u16 = 200;

/// Copies both streams until EOF on each (every writer gone: the container exited and the
/// shim closed its ends), in one thread. It sleeps in poll() until a stream has data or hangs
/// up, or `wake` says the copier is told to stop: an idle container costs no wake-ups.
fn copy_streams(
    mut streams: Vec<Stream>,
    log: &Mutex<LogFile>,
    stop: &AtomicBool,
    wake: &EventFd,
    taps: &Taps,
) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut buf = vec![0u8; 64 * 1024];
    // A FIFO opened with no writer reports no POLLHUP until a writer comes: an adopted
    // container's writer may be gone for good already, so its streams are read once first.
    for s in streams.iter_mut().filter(|s| s.armed) {
        while s.pump(log, &mut buf, taps)? {}
    }
    while streams.iter().any(|s| !s.done) {
        // Done streams stay out of poll: their hang-up would report ready forever.
        let live: Vec<usize> = (0..streams.len()).filter(|i| !streams[*i].done).collect();
        let timeout = if stop.load(Ordering::Relaxed) {
            // Told to stop: read until EOF, also from a writer that never hangs up.
            PollTimeout::from(STOPPING_READ)
        } else {
            PollTimeout::NONE
        };
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = live
                .iter()
                .map(|i| PollFd::new(streams[*i].file.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        if ready.last() == Some(&true) {
            // Clear the eventfd, or poll would return at once from now on.
            let _ = wake.read();
        }
        let stopping = stop.load(Ordering::Relaxed);
        for (i, r) in live.into_iter().zip(ready) {
            let s = &mut streams[i];
            s.armed |= r || stopping;
            if r || stopping {
                s.pump(log, &mut buf, taps)?;
            }
        }
    }
    Ok(())
}

/// An eventfd: [`Copier::stop`] writes it to wake the copier's poll.
fn eventfd() -> std::io::Result<EventFd> {
    Ok(EventFd::from_value_and_flags(
        0,
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?)
}

fn write_line(log: &Mutex<LogFile>, stream: &str, partial: bool, text: &[u8]) {
    let line = cri_line(SystemTime::now(), stream, partial, text);
    let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = l.write_line(&line) {
        tracing::warn!(path = %l.path.display(), error = %e, "log write failed");
    }
}

/// What a tap gets: the stream's name (`stdout`, `stderr`) and the bytes read from it.
pub type Chunk = (&'static str, Vec<u8>);

/// How many chunks a tap holds before it misses some.
const TAP_BUFFER: usize = 64;

/// The copier's listeners besides the log (attach sessions). A tap that does not keep up
/// misses chunks: the log is never held up by a slow client.
#[derive(Default)]
struct Taps(Mutex<Vec<async_channel::Sender<Chunk>>>);

impl Taps {
    fn send(&self, name: &'static str, bytes: &[u8]) {
        let mut taps = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if taps.is_empty() {
            return;
        }
        taps.retain(|t| match t.try_send((name, bytes.to_vec())) {
            Ok(()) | Err(async_channel::TrySendError::Full(_)) => true,
            Err(async_channel::TrySendError::Closed(_)) => false,
        });
    }

    /// Ends every tap (their receivers see the end of output).
    fn close(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A running copier of one container.
pub struct Copier {
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    taps: Arc<Taps>,
    ended: Arc<AtomicBool>,
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
        let log = Arc::new(Mutex::new(LogFile::open(log_path, rotation)?));
        let stop = Arc::new(AtomicBool::new(false));
        // Open here, not in the thread: the shim's Create needs the readers to exist.
        let mut streams = Vec::new();
        for (fifo, name) in [(stdout, "stdout"), (stderr, "stderr")] {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo)?;
            streams.push(Stream {
                file,
                name,
                pending: Vec::new(),
                armed: adopted,
                done: false,
            });
        }
        let wake = Arc::new(eventfd()?);
        let (tag, stop2, wake2) = (tag.to_string(), stop.clone(), wake.clone());
        let taps = Arc::new(Taps::default());
        let ended = Arc::new(AtomicBool::new(false));
        let (taps2, ended2) = (taps.clone(), ended.clone());
        // One small-stacked thread per container: edge devices run many.
        let t = std::thread::Builder::new()
            .name("log-copier".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let r = copy_streams(streams, &log, &stop2, &wake2, &taps2);
                ended2.store(true, Ordering::Relaxed);
                taps2.close();
                if let Err(e) = r {
                    tracing::warn!(container = %tag, error = %e, "log copy stopped");
                }
            })?;
        let threads = vec![t];
        Ok(Copier {
            threads,
            stop,
            wake,
            taps,
            ended,
        })
    }

    /// A copy of everything read from now on, until the container's output ends (the
    /// receiver then closes). Chunks a slow receiver has no room for are dropped.
    pub fn tap(&self) -> async_channel::Receiver<Chunk> {
        let (tx, rx) = async_channel::bounded(TAP_BUFFER);
        let mut taps = self.taps.0.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock the copier's end takes: no tap outlives the output.
        if !self.ended.load(Ordering::Relaxed) {
            taps.push(tx);
        }
        rx
    }

    /// Tells the copier to end at the next EOF even if no writer ever came.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // A full counter (EAGAIN) means the copier is woken already.
        let _ = self.wake.write(1);
    }

    /// Whether both streams reached EOF.
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for both streams to drain (after the process exited).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
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
                assert!(text.contains(" stderr F no newline\n"), "{text}");
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
}
