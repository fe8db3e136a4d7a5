//! A container's seccomp filter (`seccompProfile`) as the OCI spec's `linux.seccomp`:
//!
//! - `Unconfined` (the kubelet's default): no filter.
//! - `RuntimeDefault`: edged's built-in profile, in the spirit of containerd's (moby's)
//!   default: everything allowed but the calls that reach beyond the container (kernel
//!   modules, the clock, reboot, keyrings, mounts and new namespaces, tracing other
//!   processes, BPF, perf, io_uring...), each allowed back when the container has the
//!   capability the default profile grants it for. Refused calls fail with EPERM; `clone3`
//!   with ENOSYS (C libraries fall back to `clone`, whose namespace flags are checked).
//! - `Localhost`: a profile file in the Docker/containerd format (`defaultAction`,
//!   `architectures`, `syscalls` with `names`, `action`, `args`, `includes`/`excludes` by
//!   capability and architecture), read when the container is made.
//!
//! Privileged containers get no filter, as containerd gives them none.

use serde_json::{json, Value};
use std::path::PathBuf;

/// The profile a container runs under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// No filter.
    #[default]
    Unconfined,
    /// The built-in profile.
    RuntimeDefault,
    /// A profile file (absolute path, under `--seccomp-profile-root`).
    Localhost(PathBuf),
}

/// EPERM: what a refused call returns.
const EPERM: u32 = 1;
/// ENOSYS: `clone3` looks unimplemented, so C libraries use `clone`.
const ENOSYS: u32 = 38;

/// Calls refused unless the container has the capability (`None`: refused to all).
const GUARDED: &[(Option<&str>, &[&str])] = &[
    (
        None,
        &[
            "create_module",
            "get_kernel_syms",
            "query_module",
            "nfsservctl",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "vm86",
            "vm86old",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "kexec_file_load",
        ],
    ),
    (
        Some("CAP_SYS_ADMIN"),
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "lookup_dcookie",
            "bpf",
            "perf_event_open",
            "fanotify_init",
            "name_to_handle_at",
            "add_key",
            "keyctl",
            "request_key",
            "clone3",
        ],
    ),
    (
        Some("CAP_SYS_MODULE"),
        &["init_module", "finit_module", "delete_module"],
    ),
    (Some("CAP_SYS_BOOT"), &["reboot", "kexec_load"]),
    (
        Some("CAP_SYS_TIME"),
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Some("CAP_SYS_PACCT"), &["acct"]),
    (Some("CAP_SYS_RAWIO"), &["iopl", "ioperm"]),
    (Some("CAP_SYSLOG"), &["syslog"]),
    (
        Some("CAP_SYS_PTRACE"),
        &[
            "kcmp",
            "process_vm_readv",
            "process_vm_writev",
            "pidfd_getfd",
        ],
    ),
    (
        Some("CAP_SYS_NICE"),
        &["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
    ),
    (Some("CAP_DAC_READ_SEARCH"), &["open_by_handle_at"]),
];

/// The namespace flags of `clone` a container without CAP_SYS_ADMIN may not pass:
/// CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
const CLONE_NS_FLAGS: &[u64] = &[
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// The built-in profile for a container with capabilities `caps` (`CAP_*` names).
pub fn runtime_default(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut eperm: Vec<&str> = Vec::new();
    let mut clone3_enosys = false;
    for (cap, names) in GUARDED {
        if cap.is_some_and(has) {
            continue;
        }
        for n in *names {
            if *n == "clone3" {
                clone3_enosys = true;
            } else {
                eperm.push(n);
            }
        }
    }
    let mut rules = vec![json!({"names": eperm, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM})];
    if clone3_enosys {
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    if !has("CAP_SYS_ADMIN") {
        for flag in CLONE_NS_FLAGS {
            rules.push(json!({
                "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": native_architectures(),
        "syscalls": rules,
    })
}

/// The seccomp architectures of this machine (its own and the compatible ones).
fn native_architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "arm" => vec!["SCMP_ARCH_ARM"],
        "x86" => vec!["SCMP_ARCH_X86"],
        "riscv64" => vec!["SCMP_ARCH_RISCV64"],
        "s390x" => vec!["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        "powerpc64" => vec!["SCMP_ARCH_PPC64LE"],
        _ => Vec::new(),
    }
}

/// The OCI filter of a profile file's text (Docker/containerd format), for a container with
/// `caps`: rules whose `includes` the container does not meet, or whose `excludes` it does,
/// are left out; `archMap` becomes the architectures of this machine's entry.
pub fn localhost(text: &str, caps: &[String]) -> Result<Value, String> {
    let p: Value =
        serde_json::from_str(text).map_err(|e| format!("not a seccomp profile (JSON): {e}"))?;
    let action = p
        .get("defaultAction")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or("no `defaultAction`")?;
    let mut out = json!({"defaultAction": action});
    if let Some(v) = p.get("defaultErrnoRet").filter(|v| !v.is_null()) {
        out["defaultErrnoRet"] = v.clone();
    }
    if let Some(v) = p.get("flags").filter(|v| !v.is_null()) {
        out["flags"] = v.clone();
    }
    let native = native_architectures();
    let mut arches: Vec<Value> = p
        .get("architectures")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for m in p
        .get("archMap")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let arch = m.get("architecture").and_then(Value::as_str).unwrap_or("");
        if native.first() == Some(&arch) {
            arches.push(json!(arch));
            for s in m
                .get("subArchitectures")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                arches.push(s.clone());
            }
        }
    }
    if !arches.is_empty() {
        out["architectures"] = Value::Array(arches);
    }
    let this_arch = std::env::consts::ARCH;
    let meets = |f: &Value| -> (bool, bool) {
        // (every listed capability held, this architecture listed); empty lists say nothing.
        let list = |k: &str| -> Vec<String> {
            f.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        let (c, a) = (list("caps"), list("arches"));
        let caps_ok = !c.is_empty() && c.iter().all(|x| caps.contains(x));
        let arch_ok = !a.is_empty() && a.iter().any(|x| arch_matches(x, this_arch));
        (caps_ok || c.is_empty(), arch_ok || a.is_empty())
    };
    let mut rules = Vec::new();
    for (i, s) in p
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(inc) = s.get("includes").filter(|v| v.is_object()) {
            let (c, a) = meets(inc);
            if !(c && a) {
                continue;
            }
        }
        if let Some(exc) = s.get("excludes").filter(|v| v.is_object()) {
            let has = |k: &str| {
                exc.get(k)
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
            };
            let (c, a) = meets(exc);
            if (has("caps") && c) || (has("arches") && a) {
                continue;
            }
        }
        let mut names: Vec<Value> = s
            .get("names")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(n) = s.get("name").and_then(Value::as_str) {
            names.push(json!(n));
        }
        let act = s
            .get("action")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("syscalls[{i}]: no `action`"))?;
        if names.is_empty() {
            return Err(format!("syscalls[{i}]: no `names`"));
        }
        let mut r = json!({"names": names, "action": act});
        for k in ["errnoRet", "args"] {
            if let Some(v) = s.get(k).filter(|v| !v.is_null()) {
                r[k] = v.clone();
            }
        }
        rules.push(r);
    }
    out["syscalls"] = Value::Array(rules);
    Ok(out)
}

/// Whether an `arches` entry of a profile (`amd64`, `arm64`, ...) names this machine.
fn arch_matches(name: &str, rust_arch: &str) -> bool {
    matches!(
        (name, rust_arch),
        ("amd64", "x86_64")
            | ("x86_64", "x86_64")
            | ("x32", "x86_64")
            | ("arm64", "aarch64")
            | ("aarch64", "aarch64")
            | ("arm", "arm")
            | ("386", "x86")
            | ("riscv64", "riscv64")
            | ("s390x", "s390x")
            | ("ppc64le", "powerpc64")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &Value, action: &str, errno: u32) -> Vec<String> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == action && r["errnoRet"] == errno && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().iter())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn runtime_default_refuses_what_no_capability_grants() {
        let p = runtime_default(&["CAP_CHOWN".into(), "CAP_NET_BIND_SERVICE".into()]);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        let refused = names(&p, "SCMP_ACT_ERRNO", EPERM);
        for n in [
            "mount",
            "unshare",
            "setns",
            "init_module",
            "reboot",
            "bpf",
            "keyctl",
        ] {
            assert!(refused.contains(&n.to_string()), "{n}");
        }
        // ptrace is allowed, as in containerd's profile on kernels since 4.8.
        assert!(!refused.contains(&"ptrace".to_string()));
        assert_eq!(names(&p, "SCMP_ACT_ERRNO", ENOSYS), ["clone3"]);
        let clone_rules = p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["names"] == json!(["clone"]))
            .count();
        assert_eq!(clone_rules, 7);
    }

    #[test]
    fn capabilities_give_their_calls_back() {
        let p = runtime_default(&["CAP_SYS_ADMIN".into(), "CAP_SYS_TIME".into()]);
        let refused = names(&p, "SCMP_ACT_ERRNO", EPERM);
        for n in ["mount", "unshare", "setns", "settimeofday", "clock_settime"] {
            assert!(!refused.contains(&n.to_string()), "{n}");
        }
        for n in ["init_module", "reboot", "userfaultfd"] {
            assert!(refused.contains(&n.to_string()), "{n}");
        }
        assert!(names(&p, "SCMP_ACT_ERRNO", ENOSYS).is_empty());
        assert!(!p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["names"] == json!(["clone"])));
    }

    #[test]
    fn localhost_profiles_in_the_docker_format() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_CHOWN"]}},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
            ]}"#;
        let p = localhost(text, &["CAP_CHOWN".into()]).unwrap();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<&Value> = p["syscalls"].as_array().unwrap().iter().collect();
        assert_eq!(allowed.len(), 2, "{p}");
        assert_eq!(allowed[0]["names"], json!(["read", "write"]));
        assert_eq!(allowed[1]["args"][0]["op"], "SCMP_CMP_EQ");
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                p["architectures"],
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
            );
        }
        let p = localhost(text, &["CAP_SYS_ADMIN".into()]).unwrap();
        assert_eq!(p["syscalls"].as_array().unwrap().len(), 4);

        for (bad, says) in [
            ("nope", "not a seccomp profile"),
            ("{}", "defaultAction"),
            (
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"]}]}"#,
                "syscalls[0]: no `action`",
            ),
        ] {
            let e = localhost(bad, &[]).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
