//! AppArmor on the host: whether the kernel enforces it, which profiles are loaded, and the
//! runtime's default profile (`edged-default`, in the spirit of containerd's
//! `cri-containerd.apparmor.d`), loaded with `apparmor_parser` the first time a container
//! asks for it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The name of the runtime's default profile.
pub const DEFAULT_PROFILE: &str = "edged-default";

/// A container's AppArmor confinement, as the runtime applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AppArmor {
    /// No profile (also what a host without AppArmor gives every container).
    #[default]
    Unconfined,
    /// [`DEFAULT_PROFILE`], loaded on first use.
    RuntimeDefault,
    /// A profile loaded on the host by its administrator, by name.
    Localhost(String),
}

/// Whether the kernel enforces AppArmor (`/sys/module/apparmor/parameters/enabled` is `Y`).
pub fn host_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

/// Whether this host can apply the default profile unasked (as containerd: AppArmor enabled
/// and `apparmor_parser` installed).
pub fn default_applies() -> bool {
    host_enabled()
        && ["/sbin/apparmor_parser", "/usr/sbin/apparmor_parser"]
            .iter()
            .any(|p| Path::new(p).exists())
}

/// Whether profile `name` is loaded (a line `name (mode)` of the kernel's profile list).
pub fn is_loaded(profiles: &str, name: &str) -> bool {
    profiles.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(" ("))
    })
}

fn loaded_profiles() -> String {
    std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").unwrap_or_default()
}

/// The profile name to put in the OCI spec (`process.apparmorProfile`), after making sure it
/// is there: the default one is loaded if missing; a Localhost one must be loaded already.
pub fn prepare(a: &AppArmor) -> Result<Option<String>, String> {
    match a {
        AppArmor::Unconfined => Ok(None),
        AppArmor::Localhost(name) => {
            if is_loaded(&loaded_profiles(), name) {
                Ok(Some(name.clone()))
            } else {
                Err(format!(
                    "AppArmor profile `{name}` is not loaded on this host: load it with \
                     apparmor_parser first"
                ))
            }
        }
        AppArmor::RuntimeDefault => {
            if !is_loaded(&loaded_profiles(), DEFAULT_PROFILE) {
                load(&default_profile()).map_err(|e| {
                    format!("cannot load the AppArmor profile {DEFAULT_PROFILE}: {e}")
                })?;
            }
            Ok(Some(DEFAULT_PROFILE.to_string()))
        }
    }
}

fn load(text: &str) -> std::io::Result<()> {
    let mut child = Command::new("apparmor_parser")
        .args(["-Kr"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The default profile: everything a container normally does, without writes to the kernel's
/// and the host's control files under /proc and /sys, mounts, or ptrace of processes outside
/// the profile (the rules of containerd's default, written for edged).
pub fn default_profile() -> String {
    format!(
        "#include <tunables/global>\n\
         profile {DEFAULT_PROFILE} flags=(attach_disconnected,mediate_deleted) {{\n\
         \x20 #include <abstractions/base>\n\
         \x20 network,\n\
         \x20 capability,\n\
         \x20 file,\n\
         \x20 umount,\n\
         \x20 signal (receive) peer=unconfined,\n\
         \x20 signal (send,receive) peer={DEFAULT_PROFILE},\n\
         \x20 deny @{{PROC}}/* w,\n\
         \x20 deny @{{PROC}}/{{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}}/** w,\n\
         \x20 deny @{{PROC}}/sys/[^k]** w,\n\
         \x20 deny @{{PROC}}/sys/kernel/{{?,??,[^s][^h][^m]**}} w,\n\
         \x20 deny @{{PROC}}/sysrq-trigger rwklx,\n\
         \x20 deny @{{PROC}}/kcore rwklx,\n\
         \x20 deny mount,\n\
         \x20 deny /sys/[^f]*/** wklx,\n\
         \x20 deny /sys/f[^s]*/** wklx,\n\
         \x20 deny /sys/fs/[^c]*/** wklx,\n\
         \x20 deny /sys/fs/c[^g]*/** wklx,\n\
         \x20 deny /sys/fs/cg[^r]*/** wklx,\n\
         \x20 deny /sys/firmware/** rwklx,\n\
         \x20 deny /sys/kernel/security/** rwklx,\n\
         \x20 ptrace (trace,read,tracedby,readby) peer={DEFAULT_PROFILE},\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_profiles_are_read_by_whole_name() {
        let list = "edged-default (enforce)\nk8s-deny-write (complain)\nunconfined-ish (enforce)\n";
        assert!(is_loaded(list, "edged-default"));
        assert!(is_loaded(list, "k8s-deny-write"));
        assert!(!is_loaded(list, "k8s-deny"));
        assert!(!is_loaded(list, "unconfined"));
    }

    #[test]
    fn the_default_profile_names_itself_and_denies_host_control_files() {
        let p = default_profile();
        assert!(p.contains("profile edged-default flags="));
        assert!(p.contains("deny mount,"));
        assert!(p.contains("deny @{PROC}/sysrq-trigger rwklx,"));
        assert_eq!(p.matches('{').count(), p.matches('}').count());
    }

    #[test]
    fn unconfined_needs_nothing_and_a_missing_localhost_profile_is_named() {
        assert_eq!(prepare(&AppArmor::Unconfined), Ok(None));
        if !host_enabled() {
            let e = prepare(&AppArmor::Localhost("k8s-nope".into())).unwrap_err();
            assert!(e.contains("`k8s-nope` is not loaded"), "{e}");
        }
    }
}
