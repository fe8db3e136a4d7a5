//! Eviction signals and hard thresholds, as the kubelet names and parses them
//! (`--eviction-hard memory.available<100Mi,nodefs.available<10%`).

use std::fmt;
use std::str::FromStr;

/// A signal the eviction manager observes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// `memory.available`: memory capacity less the node's working set.
    MemoryAvailable,
    /// `nodefs.available`: free bytes of the filesystem of the root dir.
    NodeFsAvailable,
    /// `nodefs.inodesFree`: free inodes of that filesystem.
    NodeFsInodesFree,
    /// `imagefs.available`: free bytes of the filesystem holding images (here the root dir's).
    ImageFsAvailable,
    /// `imagefs.inodesFree`.
    ImageFsInodesFree,
}

impl Signal {
    /// Every signal, in the order they are reported.
    pub const ALL: [Signal; 5] = [
        Signal::MemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
    ];

    /// The kubelet's name of the signal.
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
        }
    }

    /// The resource evicting a pod reclaims (the kubelet's `signalToResource`).
    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable => Resource::Memory,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => Resource::EphemeralStorage,
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => Resource::Inodes,
        }
    }

    /// The node condition the signal stands for.
    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            _ => "DiskPressure",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A resource pods are ranked by and eviction reclaims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `memory`: working set bytes.
    Memory,
    /// `ephemeral-storage`: bytes of writable layers, logs and local volumes.
    EphemeralStorage,
    /// `inodes` of the same.
    Inodes,
}

impl Resource {
    /// The name in eviction messages (`memory`, `ephemeral-storage`, `inodes`).
    pub fn name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
        }
    }
}

/// A threshold's value: an absolute quantity or a fraction of capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// Bytes (or inodes).
    Quantity(u64),
    /// A fraction of capacity, 0 to 1.
    Percentage(f64),
}

/// A hard threshold: the signal is met when what is available falls below the value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    /// What is observed.
    pub signal: Signal,
    /// Below what it is met.
    pub value: Value,
}

impl Threshold {
    /// The value in bytes (or inodes) for a resource of `capacity`.
    pub fn quantity(&self, capacity: u64) -> u64 {
        match self.value {
            Value::Quantity(q) => q,
            Value::Percentage(p) => (capacity as f64 * p) as u64,
        }
    }
}

/// The kubelet's default hard thresholds.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%";

/// A `--eviction-hard` value: the thresholds (none for an empty value).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds(pub Vec<Threshold>);

impl Default for Thresholds {
    fn default() -> Self {
        // The constant parses: the unit tests check it.
        DEFAULT_EVICTION_HARD
            .parse()
            .unwrap_or(Thresholds(Vec::new()))
    }
}

impl fmt::Display for Thresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|t| match t.value {
                Value::Quantity(q) => format!("{}<{}", t.signal, super::decide::binary(q)),
                Value::Percentage(p) => format!("{}<{}%", t.signal, p * 100.0),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for Thresholds {
    type Err = String;
    /// Parses `signal<value,...` as the kubelet does: a value is a quantity (`100Mi`, `1000`)
    /// or a percentage of capacity (`10%`); `0%` and `100%` are ignored; a signal given twice
    /// is an error; an empty value means no thresholds.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out: Vec<Threshold> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, val)) = part.split_once('<') else {
                return Err(format!(
                    "`{part}` is not a threshold: write signal<value, such as nodefs.available<10%"
                ));
            };
            let (name, val) = (name.trim(), val.trim());
            let signal = Signal::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    format!(
                        "unsupported eviction signal `{name}` (one of {})",
                        Signal::ALL.map(Signal::name).join(", ")
                    )
                })?;
            if out.iter().any(|t| t.signal == signal) {
                return Err(format!("eviction signal {signal} is given twice"));
            }
            let value = if let Some(p) = val.strip_suffix('%') {
                if val == "0%" || val == "100%" {
                    continue;
                }
                let p: f64 = p.trim().parse().map_err(|_| {
                    format!("eviction threshold {signal}: `{val}` is not a percentage")
                })?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!(
                        "eviction percentage threshold {signal} must be from 0% to 100%: {val}"
                    ));
                }
                Value::Percentage(p / 100.0)
            } else {
                let q = crate::api::quantity::bytes(&serde_json::Value::String(val.to_string()))
                    .ok_or_else(|| {
                        format!("eviction threshold {signal}: `{val}` is not a quantity (such as 100Mi)")
                    })?;
                if q <= 0 {
                    return Err(format!(
                        "eviction threshold {signal} must be positive: {val}"
                    ));
                }
                Value::Quantity(q as u64)
            };
            out.push(Threshold { signal, value });
        }
        Ok(Thresholds(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_defaults_parse() {
        let t = Thresholds::default().0;
        assert_eq!(
            t,
            vec![
                Threshold {
                    signal: Signal::MemoryAvailable,
                    value: Value::Quantity(100 << 20)
                },
                Threshold {
                    signal: Signal::NodeFsAvailable,
                    value: Value::Percentage(0.10)
                },
                Threshold {
                    signal: Signal::ImageFsAvailable,
                    value: Value::Percentage(0.15)
                },
                Threshold {
                    signal: Signal::NodeFsInodesFree,
                    value: Value::Percentage(0.05)
                },
            ]
        );
        assert_eq!(t[1].quantity(1000), 100);
        assert_eq!(t[0].quantity(1 << 40), 100 << 20);
    }

    #[test]
    fn statements_as_the_kubelet_reads_them() {
        type Case<'a> = (&'a str, Result<Vec<(Signal, Value)>, &'a str>);
        let cases: &[Case] = &[
            ("", Ok(vec![])),
            (
                "nodefs.available<1Gi",
                Ok(vec![(Signal::NodeFsAvailable, Value::Quantity(1 << 30))]),
            ),
            (
                " imagefs.inodesFree < 12.5% , memory.available<500M",
                Ok(vec![
                    (Signal::ImageFsInodesFree, Value::Percentage(0.125)),
                    (Signal::MemoryAvailable, Value::Quantity(500_000_000)),
                ]),
            ),
            (
                "nodefs.inodesFree<1000",
                Ok(vec![(Signal::NodeFsInodesFree, Value::Quantity(1000))]),
            ),
            ("nodefs.available<0%", Ok(vec![])),
            ("nodefs.available<100%", Ok(vec![])),
            ("nodefs.available<101%", Err("0% to 100%")),
            ("nodefs.available<-1%", Err("0% to 100%")),
            ("nodefs.available<x%", Err("not a percentage")),
            ("nodefs.available<0", Err("must be positive")),
            ("nodefs.available<lots", Err("not a quantity")),
            ("nodefs.available>10%", Err("signal<value")),
            (
                "disk.available<10%",
                Err("unsupported eviction signal `disk.available`"),
            ),
            ("nodefs.available<1Gi,nodefs.available<2Gi", Err("twice")),
        ];
        for (text, want) in cases {
            let got = text.parse::<Thresholds>();
            match (want, got) {
                (Ok(w), Ok(g)) => {
                    let g: Vec<(Signal, Value)> = g.0.iter().map(|t| (t.signal, t.value)).collect();
                    assert_eq!(&g, w, "{text}");
                }
                (Err(w), Err(g)) => assert!(g.contains(w), "{text}: {g}"),
                (w, g) => panic!("{text}: want {w:?}, got {g:?}"),
            }
        }
    }
}
