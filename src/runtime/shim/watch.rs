//! Knowing a task runs without asking its shim: a running container's init process and its
//! shim, each named by pid and start time (a reused pid is not taken for them), looked up in
//! /proc. A relist then costs two small /proc reads per running container instead of a State
//! RPC to a Go process; any doubt (a process gone or a zombie, another start time) sends the
//! caller back to the shim, which stays the truth.

use std::path::Path;

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

    #[test]
    fn a_live_process_is_seen_and_a_reaped_one_is_not() {
        let me = Proc::of(std::process::id()).expect("this process is alive");
        assert!(me.alive());
        assert!(
            !Proc {
                start: me.start + 1,
                ..me
            }
            .alive(),
            "another start time is another process"
        );

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = Proc::of(child.id()).expect("the child runs");
        assert!(p.alive());
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

    #[test]
    fn cgroup_and_executable_checks() {
        let me = Proc::of(std::process::id()).unwrap();
        let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = cg
            .lines()
            .next()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        assert!(me.in_cgroup(&path));
        assert!(!me.in_cgroup("0123456789abcdef-no-such-container"));
        let exe = std::env::current_exe().unwrap();
        assert!(me.runs(exe.to_str().unwrap()));
        assert!(me.runs(exe.file_name().unwrap().to_str().unwrap()));
        assert!(!me.runs("containerd-shim-runc-v2"));
        assert!(!me.runs(""));
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
