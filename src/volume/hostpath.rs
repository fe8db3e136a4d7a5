//! hostPath `type` checks, as the kubelet makes them before the bind mount.

use super::VolumeError;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Checks (or creates) `path` as `kind` asks. `""` checks nothing.
pub fn check(pod: &str, volume: &str, path: &Path, kind: &str) -> Result<(), VolumeError> {
    let wrong = |found: &str| VolumeError::HostPathType {
        pod: pod.to_string(),
        volume: volume.to_string(),
        path: path.to_path_buf(),
        expected: kind.to_string(),
        found: found.to_string(),
    };
    // Follows symlinks, as the kubelet does: the bind mount would too.
    let meta = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(VolumeError::io(pod, volume, "stat", path, e)),
    };
    let found = meta.as_ref().map_or("missing", |m| describe(m.file_type()));
    let ft = meta.as_ref().map(|m| m.file_type());
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" if meta.is_none() => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(|e| VolumeError::io(pod, volume, "create directory", path, e))?;
            // The umask must not narrow what the kubelet promises (0755).
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                .map_err(|e| VolumeError::io(pod, volume, "chmod", path, e))
        }
        "Directory" | "DirectoryOrCreate" => ok_if(ft.is_some_and(|t| t.is_dir()), wrong(found)),
        "FileOrCreate" if meta.is_none() => {
            // Like the kubelet, the parent is not created: say so rather than ENOENT.
            if let Some(parent) = path.parent().filter(|p| !p.is_dir()) {
                return Err(VolumeError::io(
                    pod,
                    volume,
                    "create file",
                    path,
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "the parent directory {} does not exist (FileOrCreate does not \
                             create it; add a DirectoryOrCreate volume for it)",
                            parent.display()
                        ),
                    ),
                ));
            }
            let f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map_err(|e| VolumeError::io(pod, volume, "create file", path, e))?;
            f.set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(|e| VolumeError::io(pod, volume, "chmod", path, e))
        }
        "File" | "FileOrCreate" => ok_if(ft.is_some_and(|t| t.is_file()), wrong(found)),
        "Socket" => ok_if(ft.is_some_and(|t| t.is_socket()), wrong(found)),
        "CharDevice" => ok_if(ft.is_some_and(|t| t.is_char_device()), wrong(found)),
        "BlockDevice" => ok_if(ft.is_some_and(|t| t.is_block_device()), wrong(found)),
        other => Err(VolumeError::spec(
            pod,
            volume,
            format!(
                "hostPath type `{other}` is unknown (use \"\", DirectoryOrCreate, Directory, \
                 FileOrCreate, File, Socket, CharDevice or BlockDevice)"
            ),
        )),
    }
}

fn ok_if(ok: bool, err: VolumeError) -> Result<(), VolumeError> {
    if ok {
        Ok(())
    } else {
        Err(err)
    }
}

fn describe(t: fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "something else"
    }
}
