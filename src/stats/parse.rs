//! Parsers of the kernel files the stats read, as pure functions of their text: `cpu.stat`
//! (v2), `cpuacct.usage` (v1), `memory.stat` (both), single-number files (`memory.current`,
//! `memory.max`, `pids.current`...), `/proc/<pid>/net/dev`, `/proc/stat`, `/proc/meminfo`
//! and `/proc/loadavg`. An error names the file and the line (1-based) it could not read.

use std::collections::BTreeMap;
use std::fmt;

/// A file whose contents are not what the kernel writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The file, as the caller named it.
    pub file: String,
    /// The line (1-based; 0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{} line {}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

fn err(file: &str, line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        file: file.to_string(),
        line,
        message: message.into(),
    }
}

fn number(file: &str, line: usize, word: &str) -> Result<u64, ParseError> {
    word.parse()
        .map_err(|_| err(file, line, format!("`{word}` is not a count")))
}

/// A file of `key value` lines (`memory.stat`, `cpu.stat`): every key with its number.
pub fn flat_keyed(file: &str, text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    let mut out = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let mut w = l.split_whitespace();
        let (Some(k), Some(v), None) = (w.next(), w.next(), w.next()) else {
            return Err(err(file, i + 1, format!("`{l}` is not `key value`")));
        };
        out.insert(k.to_string(), number(file, i + 1, v)?);
    }
    Ok(out)
}

/// A file holding one number (`cpuacct.usage`, `memory.current`, `pids.current`).
pub fn single(file: &str, text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(err(file, 1, "empty, a number expected"));
    }
    number(file, 1, t)
}

/// A limit file (`memory.max`, `memory.limit_in_bytes`): `None` for no limit (`max`, or a
/// v1 value above 2^62 as the kubelet reads "unlimited").
pub fn limit(file: &str, text: &str) -> Result<Option<u64>, ParseError> {
    if text.trim() == "max" {
        return Ok(None);
    }
    let n = single(file, text)?;
    Ok((n <= 1 << 62).then_some(n))
}

/// v2 `cpu.stat`: `usage_usec` in nanoseconds.
pub fn cpu_stat_usage_ns(file: &str, text: &str) -> Result<u64, ParseError> {
    let m = flat_keyed(file, text)?;
    m.get("usage_usec")
        .map(|us| us.saturating_mul(1000))
        .ok_or_else(|| err(file, 0, "no usage_usec line"))
}

/// One interface's counters of `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The interface's name, such as `eth0`.
    pub name: String,
    /// Bytes received (first counter).
    pub rx_bytes: u64,
    /// Receive errors (third counter).
    pub rx_errors: u64,
    /// Bytes sent (ninth counter).
    pub tx_bytes: u64,
    /// Send errors (eleventh counter).
    pub tx_errors: u64,
}

/// `/proc/<pid>/net/dev`: every interface (its two header lines skipped).
pub fn net_dev(file: &str, text: &str) -> Result<Vec<Interface>, ParseError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate().skip(2) {
        if l.trim().is_empty() {
            continue;
        }
        let Some((name, rest)) = l.split_once(':') else {
            return Err(err(file, i + 1, format!("`{l}` has no `name:`")));
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 16 {
            return Err(err(
                file,
                i + 1,
                format!("{} counters, 16 expected", f.len()),
            ));
        }
        let n = |k: usize| number(file, i + 1, f[k]);
        out.push(Interface {
            name: name.trim().to_string(),
            rx_bytes: n(0)?,
            rx_errors: n(2)?,
            tx_bytes: n(8)?,
            tx_errors: n(10)?,
        });
    }
    Ok(out)
}

/// What `/proc/stat` says: the CPU time of all CPUs in clock ticks (everything but idle and
/// iowait, and not guest time, which user time already counts), and the boot time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// CPU time of all CPUs but idle and iowait (guest left out), clock ticks (`USER_HZ`).
    pub busy_ticks: u64,
    /// Seconds since the epoch.
    pub boot_time: u64,
}

/// Parses `/proc/stat` (the `cpu` and `btime` lines).
pub fn proc_stat(file: &str, text: &str) -> Result<ProcStat, ParseError> {
    let (mut busy, mut boot) = (None, None);
    for (i, l) in text.lines().enumerate() {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("cpu") => {
                let f = w
                    .map(|x| number(file, i + 1, x))
                    .collect::<Result<Vec<_>, _>>()?;
                if f.len() < 8 {
                    return Err(err(
                        file,
                        i + 1,
                        format!("{} cpu fields, at least 8 expected", f.len()),
                    ));
                }
                // user nice system idle iowait irq softirq steal [guest guest_nice]
                busy = Some(f[0] + f[1] + f[2] + f[5] + f[6] + f[7]);
            }
            Some("btime") => {
                let v = w
                    .next()
                    .ok_or_else(|| err(file, i + 1, "btime without a value"))?;
                boot = Some(number(file, i + 1, v)?);
            }
            _ => {}
        }
    }
    match (busy, boot) {
        (Some(busy_ticks), Some(boot_time)) => Ok(ProcStat {
            busy_ticks,
            boot_time,
        }),
        (None, _) => Err(err(file, 0, "no `cpu` line")),
        (_, None) => Err(err(file, 0, "no `btime` line")),
    }
}

/// `/proc/meminfo` in bytes, by field name (`MemTotal`, `Inactive(file)`...).
pub fn meminfo(file: &str, text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    let mut out = BTreeMap::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(err(file, i + 1, format!("`{l}` has no `name:`")));
        };
        let mut w = v.split_whitespace();
        let n = number(file, i + 1, w.next().unwrap_or(""))?;
        let bytes = match w.next() {
            Some("kB") => n.saturating_mul(1024),
            None => n,
            Some(u) => return Err(err(file, i + 1, format!("unknown unit `{u}`"))),
        };
        out.insert(k.trim().to_string(), bytes);
    }
    Ok(out)
}

/// `/proc/loadavg`: the number of threads on the node (the total of `running/total`).
pub fn loadavg_threads(file: &str, text: &str) -> Result<u64, ParseError> {
    let field = text
        .split_whitespace()
        .nth(3)
        .ok_or_else(|| err(file, 1, "no `running/total` field"))?;
    let (_, total) = field
        .split_once('/')
        .ok_or_else(|| err(file, 1, format!("`{field}` is not `running/total`")))?;
    number(file, 1, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded on this project's test host (kernel 6.18, cgroup v1 memory hierarchy).
    const MEMORY_STAT_V1: &str = "cache 10317824\nrss 4063232\nrss_huge 0\nshmem 9990144\n\
mapped_file 8437760\ndirty 73728\nwriteback 0\nswap 0\npgpgin 25158\npgpgout 21647\n\
pgfault 32691\npgmajfault 0\ninactive_anon 0\nactive_anon 0\ninactive_file 4096\n\
active_file 323584\nunevictable 14053376\nhierarchical_memory_limit 9223372036854771712\n\
total_cache 5664333824\ntotal_rss 9027584\ntotal_pgfault 8302091\ntotal_pgmajfault 1362\n\
total_inactive_file 3781124096\ntotal_active_file 1873219584\n";

    /// A cgroup v2 `memory.stat` (kernel 6.x, abridged) and `cpu.stat`.
    const MEMORY_STAT_V2: &str = "anon 1409024\nfile 2117632\nkernel 540672\n\
kernel_stack 32768\nshmem 0\nfile_mapped 1146880\nactive_anon 1339392\ninactive_anon 0\n\
active_file 0\ninactive_file 2117632\nunevictable 0\npgfault 1701\npgmajfault 13\n";
    const CPU_STAT_V2: &str = "usage_usec 77322\nuser_usec 42145\nsystem_usec 35177\n\
nr_periods 0\nnr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n";

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    6386      58    0    0    0     0          0         0     6386      58    0    0    0     0       0          0
  eth0: 62328432    2619    3    0    0     0          0         0   154477    1458    4    0    0     0       0          0
";

    const PROC_STAT: &str = "cpu  14652 0 5650 3636115 639 0 70 7 0 0
cpu0 5610 0 2154 1820399 118 0 33 3 0 0
cpu1 9042 0 3496 1815716 520 0 37 4 0 0
intr 1 2 3
ctxt 15371423
btime 1796434286
processes 9793
";

    #[test]
    fn memory_stat_both_versions() {
        let v1 = flat_keyed("memory.stat", MEMORY_STAT_V1).unwrap();
        assert_eq!(v1["total_inactive_file"], 3781124096);
        assert_eq!(v1["pgfault"], 32691);
        assert_eq!(v1["hierarchical_memory_limit"], 9223372036854771712);
        let v2 = flat_keyed("memory.stat", MEMORY_STAT_V2).unwrap();
        assert_eq!((v2["anon"], v2["inactive_file"]), (1409024, 2117632));
        assert_eq!((v2["pgfault"], v2["pgmajfault"]), (1701, 13));
    }

    #[test]
    fn cpu_files() {
        assert_eq!(
            cpu_stat_usage_ns("cpu.stat", CPU_STAT_V2).unwrap(),
            77_322_000
        );
        assert_eq!(
            single("cpuacct.usage", "223875091711\n").unwrap(),
            223875091711
        );
        let e = cpu_stat_usage_ns("cpu.stat", "user_usec 1\n").unwrap_err();
        assert_eq!(e.to_string(), "cpu.stat: no usage_usec line");
    }

    #[test]
    fn limits() {
        assert_eq!(limit("memory.max", "max\n").unwrap(), None);
        assert_eq!(limit("memory.max", "1048576\n").unwrap(), Some(1 << 20));
        assert_eq!(
            limit("memory.limit_in_bytes", "9223372036854771712\n").unwrap(),
            None
        );
    }

    #[test]
    fn net_dev_reads_every_interface() {
        let i = net_dev("/proc/7/net/dev", NET_DEV).unwrap();
        assert_eq!(i.len(), 2);
        assert_eq!(
            i[1],
            Interface {
                name: "eth0".into(),
                rx_bytes: 62328432,
                rx_errors: 3,
                tx_bytes: 154477,
                tx_errors: 4
            }
        );
        assert_eq!(i[0].name, "lo");
    }

    #[test]
    fn proc_stat_busy_time_and_boot() {
        let s = proc_stat("/proc/stat", PROC_STAT).unwrap();
        assert_eq!(s.busy_ticks, 14652 + 5650 + 70 + 7);
        assert_eq!(s.boot_time, 1796434286);
    }

    #[test]
    fn meminfo_and_loadavg() {
        let m = meminfo(
            "/proc/meminfo",
            "MemTotal:        1000 kB\nInactive(file):   300 kB\nHugePages_Total:       0\n",
        )
        .unwrap();
        assert_eq!(m["MemTotal"], 1000 * 1024);
        assert_eq!(m["Inactive(file)"], 300 * 1024);
        assert_eq!(m["HugePages_Total"], 0);
        assert_eq!(
            loadavg_threads("/proc/loadavg", "0.33 0.32 0.16 3/109 9792\n").unwrap(),
            109
        );
    }

    /// Malformed contents: an error naming the file and the line, never a panic.
    #[test]
    fn malformed_contents_name_file_and_line() {
        let cases: Vec<(ParseError, &str)> = vec![
            (
                flat_keyed("memory.stat", "anon 1\nfile x\n").unwrap_err(),
                "memory.stat line 2: `x` is not a count",
            ),
            (
                flat_keyed("memory.stat", "anon 1\nfile\n").unwrap_err(),
                "memory.stat line 2: `file` is not `key value`",
            ),
            (
                flat_keyed("cpu.stat", "usage_usec 1 2\n").unwrap_err(),
                "cpu.stat line 1: `usage_usec 1 2` is not `key value`",
            ),
            (
                cpu_stat_usage_ns("cpu.stat", "usage_usec -5\n").unwrap_err(),
                "cpu.stat line 1: `-5` is not a count",
            ),
            (
                single("cpuacct.usage", "").unwrap_err(),
                "cpuacct.usage line 1: empty, a number expected",
            ),
            (
                single("cpuacct.usage", "12ab\n").unwrap_err(),
                "cpuacct.usage line 1: `12ab` is not a count",
            ),
            (
                net_dev("net/dev", "h1\nh2\n  eth0 1 2 3\n").unwrap_err(),
                "net/dev line 3: `  eth0 1 2 3` has no `name:`",
            ),
            (
                net_dev("net/dev", "h1\nh2\n  eth0: 1 2 3\n").unwrap_err(),
                "net/dev line 3: 3 counters, 16 expected",
            ),
            (
                net_dev(
                    "net/dev",
                    "h1\nh2\nlo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\neth0: 1 2 3 4 5 6 7 8 z 10 11 12 13 14 15 16\n",
                )
                .unwrap_err(),
                "net/dev line 4: `z` is not a count",
            ),
            (
                proc_stat("/proc/stat", "cpu 1 2 3\nbtime 5\n").unwrap_err(),
                "/proc/stat line 1: 3 cpu fields, at least 8 expected",
            ),
            (
                proc_stat("/proc/stat", "cpu 1 2 3 4 5 6 7 8\nbtime\n").unwrap_err(),
                "/proc/stat line 2: btime without a value",
            ),
            (
                proc_stat("/proc/stat", "cpu 1 2 3 4 5 6 7 8\n").unwrap_err(),
                "/proc/stat: no `btime` line",
            ),
            (
                proc_stat("/proc/stat", "").unwrap_err(),
                "/proc/stat: no `cpu` line",
            ),
            (
                meminfo("/proc/meminfo", "MemTotal: 1 kB\nMemFree 2 kB\n").unwrap_err(),
                "/proc/meminfo line 2: `MemFree 2 kB` has no `name:`",
            ),
            (
                meminfo("/proc/meminfo", "MemTotal: 1 MB\n").unwrap_err(),
                "/proc/meminfo line 1: unknown unit `MB`",
            ),
            (
                loadavg_threads("/proc/loadavg", "0.1 0.2\n").unwrap_err(),
                "/proc/loadavg line 1: no `running/total` field",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
        // Arbitrary bytes never panic.
        let junk = "\u{0}\u{1}:::\n\n  :  \n\t9 9 9 9 9 9 9 9 9 9 9 9 9 9 9 9 9\ncpu\nbtime x";
        let _ = flat_keyed("f", junk);
        let _ = net_dev("f", junk);
        let _ = proc_stat("f", junk);
        let _ = meminfo("f", junk);
        let _ = loadavg_threads("f", junk);
        let _ = limit("f", junk);
    }
}
