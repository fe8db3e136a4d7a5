//! Knowing a task runs without asking its shim: a running container's init process and its
//! shim are watched, as pidfds in one epoll set (Linux 5.3+: one `epoll_wait` tells every exit
//! since the last look), or else by pid and start time in /proc (a reused pid is not taken for
//! them). A relist then asks no shim while nothing changed; any doubt (a process gone or
//! exiting, another start time) sends the caller back to the shim, which stays the truth.

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

/// The running tasks being watched, by container id.
pub struct Watcher {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The epoll set of every task's pidfds (`None`: epoll unavailable, /proc only).
    epoll: Option<Epoll>,
    tasks: HashMap<String, Task>,
    /// epoll data → container id.
    tokens: HashMap<u64, String>,
    next_token: u64,
}

struct Task {
    token: u64,
    /// The init and the shim.
    procs: [Proc; 2],
    /// Their pidfds, in the epoll set (empty: checked in /proc each time).
    pidfds: Vec<OwnedFd>,
}

impl Default for Watcher {
    fn default() -> Self {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok();
        Watcher {
            inner: Mutex::new(Inner {
                epoll,
                tasks: HashMap::new(),
                tokens: HashMap::new(),
                next_token: 0,
            }),
        }
    }
}

impl Watcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches task `id`, whose init is `init` and whose shim is `shim`.
    pub fn add(&self, id: &str, init: Proc, shim: Proc) {
        let mut inner = self.lock();
        inner.remove(id);
        let token = inner.next_token;
        inner.next_token += 1;
        let mut pidfds = Vec::new();
        if let Some(epoll) = &inner.epoll {
            let fds: Option<Vec<OwnedFd>> = [init, shim].iter().map(|p| p.pidfd()).collect();
            // Opened after the pid was checked: the same processes only if still alive now.
            let registered = fds
                .filter(|_| init.alive() && shim.alive())
                .is_some_and(|fds| {
                    let ok = fds.iter().all(|fd| {
                        let ev = EpollEvent::new(EpollFlags::EPOLLIN, token);
                        epoll.add(fd, ev).is_ok()
                    });
                    pidfds = fds;
                    ok
                });
            if !registered {
                pidfds.clear();
            }
        }
        inner.tokens.insert(token, id.to_string());
        let task = Task {
            token,
            procs: [init, shim],
            pidfds,
        };
        inner.tasks.insert(id.to_string(), task);
    }

    /// Whether task `id` is watched and its init and shim both live; a task one of whose
    /// processes exited is dropped (the next look asks its shim).
    pub fn running(&self, id: &str) -> bool {
        let mut inner = self.lock();
        inner.reap();
        let alive = match inner.tasks.get(id) {
            None => return false,
            Some(t) if !t.pidfds.is_empty() => true,
            Some(t) => t.procs.iter().all(Proc::alive),
        };
        if !alive {
            inner.remove(id);
        }
        alive
    }

    /// Stops watching `id`.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

impl Inner {
    fn remove(&mut self, id: &str) {
        if let Some(t) = self.tasks.remove(id) {
            self.tokens.remove(&t.token);
        }
    }

    /// Drops every task whose init or shim exited since the last look (one `epoll_wait`).
    fn reap(&mut self) {
        let mut events = [EpollEvent::empty(); 64];
        loop {
            let Some(epoll) = &self.epoll else {
                return;
            };
            let n = match epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) if n > 0 => n,
                _ => return,
            };
            let exited: Vec<String> = events[..n]
                .iter()
                .filter_map(|e| self.tokens.get(&e.data()).cloned())
                .collect();
            // Removing a task closes its pidfds, which takes them out of the set.
            for id in exited {
                self.remove(&id);
            }
            if n < events.len() {
                return;
            }
        }
    }
}

/// A process as /proc shows it: its pid and its start time (clock ticks after boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proc {
    pid: u32,
    start: u64,
}

impl Proc {
    /// The live process `pid`, or `None` when there is none (or only its zombie).
    pub fn of(pid: u32) -> Option<Proc> {
        let st = stat(pid)?;
        (pid > 0 && !st.exiting()).then_some(Proc {
            pid,
            start: st.start,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether this same process is still there and not exiting.
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|st| st.start == self.start && !st.exiting())
    }

    /// Whether the process's cgroup path names `needle` (a container id): the pid a shim
    /// reports is that container's, not another process's.
    pub fn in_cgroup(&self, needle: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid))
            .is_ok_and(|s| s.lines().any(|l| l.contains(needle)))
    }

    /// A pidfd of the process (`None` before Linux 5.3, or when it is gone): readable once
    /// the process exits, whatever runs under its pid later.
    fn pidfd(&self) -> Option<OwnedFd> {
        // SAFETY: pidfd_open takes a pid and flags, no pointers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::pid_t, 0) };
        // SAFETY: a non-negative result is a new fd that we own.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Whether the process runs the executable named `binary` (a path or a file name).
    pub fn runs(&self, binary: &str) -> bool {
        let want = Path::new(binary).file_name();
        std::fs::read_link(format!("/proc/{}/exe", self.pid))
            .is_ok_and(|exe| want.is_some() && exe.file_name() == want)
    }
}

/// What /proc/<pid>/stat says of a process.
#[derive(Debug, PartialEq)]
struct Stat {
    state: char,
    /// Clock ticks after boot.
    start: u64,
    /// Virtual memory size in bytes.
    vsize: u64,
}

impl Stat {
    /// A zombie, or on its way there: a user process whose memory is gone is exiting (its
    /// command line reads empty from then on, before it turns zombie).
    fn exiting(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x') || self.vsize == 0
    }
}

/// Fields 3, 22 and 23 of /proc/<pid>/stat (the name in field 2 may hold spaces and
/// parentheses, so fields are counted after its last ')').
fn stat(pid: u32) -> Option<Stat> {
    use std::io::Read;
    // One open, one read, one close: this runs for every running container every relist.
    let mut buf = [0u8; 1024];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    parse_stat(std::str::from_utf8(&buf[..n]).ok()?)
}

fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    let vsize = fields.next()?.parse().ok()?;
    Some(Stat {
        state,
        start,
        vsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tests look at child processes, not at the test itself: under qemu-user (the cross
    // tests) the kernel's /proc of the test process is qemu's, and qemu fakes its own stat.

    #[test]
    fn a_live_process_is_seen_and_a_reaped_one_is_not() {
        let (mut child, p) = sleeper();
        assert!(p.alive());
        assert!(
            !Proc {
                start: p.start + 1,
                ..p
            }
            .alive(),
            "another start time is another process"
        );
        child.kill().unwrap();
        // Killed but not reaped: a zombie counts as gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while p.alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!p.alive());
        assert!(Proc::of(child.id()).is_none());
        child.wait().unwrap();
        assert!(!p.alive());
    }

    fn sleeper() -> (std::process::Child, Proc) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = Proc::of(child.id()).unwrap();
        (child, p)
    }

    fn watcher_sees_exits(w: Watcher) {
        let (mut init, pi) = sleeper();
        let (mut shim, ps) = sleeper();
        let (mut other, po) = sleeper();
        w.add("a", pi, ps);
        w.add("b", po, ps);
        assert!(w.running("a") && w.running("b"));
        let with_epoll = w.lock().epoll.is_some();
        if with_epoll && pi.pidfd().is_some() {
            assert_eq!(
                w.lock().tasks["a"].pidfds.len(),
                2,
                "pidfds in the epoll set"
            );
        } else {
            assert!(w.lock().tasks["a"].pidfds.is_empty());
        }
        assert!(!w.running("c"), "never watched");
        // The init exits (a zombie until reaped, which counts as exited): "a" goes, "b" stays.
        init.kill().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while w.running("a") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!w.running("a"));
        assert!(w.running("b"));
        // The shim exits: "b" goes too, though its init lives.
        shim.kill().unwrap();
        shim.wait().unwrap();
        assert!(!w.running("b"));
        // Removed by hand, a live task is no longer watched.
        w.add("c", po, po);
        assert!(w.running("c"));
        w.remove("c");
        assert!(!w.running("c"));
        init.wait().unwrap();
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn watcher_with_pidfds() {
        let w = Watcher::default();
        assert!(w.lock().epoll.is_some());
        watcher_sees_exits(w);
    }

    #[test]
    fn watcher_with_proc_only() {
        let w = Watcher::default();
        w.lock().epoll = None;
        watcher_sees_exits(w);
    }

    #[test]
    fn cgroup_and_executable_checks() {
        let (mut child, p) = sleeper();
        let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        let path = cg
            .lines()
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        assert!(p.in_cgroup(&path));
        assert!(!p.in_cgroup("0123456789abcdef-no-such-container"));
        let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).unwrap();
        assert_eq!(exe.file_name().unwrap(), "sleep");
        assert!(p.runs(exe.to_str().unwrap()));
        assert!(p.runs("sleep"));
        assert!(!p.runs("containerd-shim-runc-v2"));
        assert!(!p.runs(""));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn names_with_parentheses_parse() {
        // Field counting starts after the last ')', whatever the command name holds.
        let line = "4242 (sh) x (y)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 2400000 200 18446744073709551615";
        let st = parse_stat(line).unwrap();
        assert_eq!((st.state, st.start, st.vsize), ('S', 987654, 2400000));
        assert!(!st.exiting());
        // Memory gone, not yet a zombie: exiting.
        let exiting = line.replace(" 2400000 ", " 0 ");
        assert!(parse_stat(&exiting).unwrap().exiting());
        assert_eq!(parse_stat("4242 (sh) Z 1"), None, "a cut line is no answer");
        assert!(stat(u32::MAX).is_none());
        assert!(Proc::of(0).is_none());
    }
}
