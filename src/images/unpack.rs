//! Unpacking one layer (plain, gzip or zstd tar) into an empty directory, converting OCI
//! whiteouts to overlayfs form: `.wh.<name>` becomes a 0/0 character device `<name>`, and
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.
//!
//! Every path is walked one component at a time with `openat(O_NOFOLLOW)`: an entry whose
//! path has `..`, or goes through a symlink or a file, is refused, so no entry (nor a link
//! planted by an earlier one) can write outside the layer directory.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::digest::HashingReader;
use super::sys;
use super::tarerr;

/// Opaque-directory xattr of overlayfs.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Whiteout prefix of the OCI layer format.
const WH_PREFIX: &[u8] = b".wh.";
/// Opaque marker of the OCI layer format.
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
/// PAX records carrying extended attributes.
const PAX_XATTR: &str = "SCHILY.xattr.";

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// A gzip stream.
    Gzip,
    /// A zstd stream.
    Zstd,
}

impl Compression {
    /// The compression the first bytes show.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The compression a media type names, `None` when it names none.
    pub fn of_media_type(m: &str) -> Option<Compression> {
        if m.ends_with("+gzip") || m.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if m.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if m.ends_with(".tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// What unpacking a layer found.
#[derive(Clone, Debug)]
pub struct Unpacked {
    /// Digest and size of the blob as read (compressed).
    pub digest: String,
    /// Size of the blob as read.
    pub blob_size: u64,
    /// Digest of the uncompressed tar (the diff id).
    pub diff_id: String,
    /// Bytes of regular files written.
    pub size: u64,
    /// How it was compressed.
    pub compression: Compression,
}

/// An unpacking failure: `Io` from the disk, `Bad` from the layer's content.
#[derive(Debug)]
pub enum UnpackError {
    /// A disk or read failure.
    Io(io::Error),
    /// The layer's content is malformed or refused.
    Bad(String),
}

impl From<io::Error> for UnpackError {
    fn from(e: io::Error) -> Self {
        UnpackError::Io(e)
    }
}

type Res<T> = std::result::Result<T, UnpackError>;

/// Unpacks the layer read from `blob` into `dest` (an existing empty directory), then
/// flushes the filesystem. `media_type` may be empty (docker archives).
pub fn unpack(blob: impl Read, media_type: &str, dest: &Path) -> Res<Unpacked> {
    let mut buf = BufReader::with_capacity(64 << 10, HashingReader::new(blob));
    let compression = Compression::detect(buf.fill_buf()?);
    if media_type.contains("+encrypted") {
        return Err(UnpackError::Bad(format!(
            "encrypted layers ({media_type}) are not supported"
        )));
    }
    if let Some(said) = Compression::of_media_type(media_type) {
        if said != compression && !(said == Compression::None && compression != Compression::None) {
            return Err(UnpackError::Bad(format!(
                "media type {media_type} says {said:?} but the data is {compression:?}"
            )));
        }
    }
    let root = sys::open_dir(dest)?;
    let (diff_id, size) = {
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut buf)),
            Compression::Zstd => Box::new(ZstdFrames::new(&mut buf)),
            Compression::None => Box::new(&mut buf),
        };
        let mut plain = HashingReader::new(decoder);
        let size = {
            let mut archive = tar::Archive::new(&mut plain);
            let mut u = Unpacker {
                root: &root,
                dirs: Vec::new(),
                size: 0,
            };
            let mut pos = tarerr::Position::default();
            let entries = archive.entries().map_err(bad_tar)?;
            for entry in entries {
                let entry = entry.map_err(|e| bad_header(&pos, e))?;
                let (index, at) = (pos.index, entry.raw_header_position());
                let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                pos.seen(&entry);
                u.entry(entry).map_err(|e| match e {
                    UnpackError::Bad(m) => UnpackError::Bad(format!(
                        "tar entry {index} `{path}` (header at byte {at}): {m}"
                    )),
                    io => io,
                })?;
            }
            u.finish()?;
            u.size
        };
        // The digests cover the tar's end padding and the compressed trailer too.
        plain.drain().map_err(bad_tar)?;
        (plain.finish().0, size)
    };
    io::copy(&mut buf, &mut io::sink()).map_err(bad_tar)?;
    let (digest, blob_size) = buf.into_inner().finish();
    sys::syncfs(&root)?;
    Ok(Unpacked {
        digest,
        blob_size,
        diff_id,
        size,
        compression,
    })
}

/// A read error inside the layer stream: corrupt or truncated data, unless the disk failed.
/// Told without the layer's bytes ([`tarerr::cause`]).
fn bad_tar(e: io::Error) -> UnpackError {
    if e.raw_os_error().is_some() {
        UnpackError::Io(e)
    } else {
        UnpackError::Bad(format!(
            "corrupt or truncated layer data: {}",
            tarerr::cause(&e)
        ))
    }
}

/// A header that could not be read: its index and offset, never its bytes.
fn bad_header(pos: &tarerr::Position, e: io::Error) -> UnpackError {
    if e.raw_os_error().is_some() {
        UnpackError::Io(e)
    } else {
        UnpackError::Bad(format!(
            "corrupt or truncated layer data: {}",
            pos.header_error(&e)
        ))
    }
}

/// Whether a special file of a layer is made on unpack: FIFOs, and character devices 0:0
/// (overlayfs whiteouts, which are no device); no other device node.
fn keeps_node(kind: tar::EntryType, major: u32, minor: u32) -> bool {
    match kind {
        tar::EntryType::Fifo => true,
        tar::EntryType::Char => major == 0 && minor == 0,
        _ => false,
    }
}

struct Unpacker<'a> {
    root: &'a OwnedFd,
    /// Directories and their mtimes, set at the end (entries below change them).
    dirs: Vec<(Vec<Vec<u8>>, i64)>,
    size: u64,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Res<()> {
        let raw = entry.path_bytes().into_owned();
        let comps = components(&raw)?;
        let show = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        use tar::EntryType as T;
        if !matches!(
            kind,
            T::Regular
                | T::Continuous
                | T::GNUSparse
                | T::Directory
                | T::Symlink
                | T::Link
                | T::Char
                | T::Block
                | T::Fifo
        ) {
            // PAX global headers and the like: nothing to write.
            tracing::debug!(entry = %show, kind = ?kind, "skipping a tar entry of a kind layers do not use");
            return Ok(());
        }
        let pax = pax_records(&mut entry)?;
        let mode = entry.header().mode().map_err(bad_tar)? & 0o7777;
        let uid = pax
            .uid
            .map_or_else(|| entry.header().uid().map_err(bad_tar), Ok)? as u32;
        let gid = pax
            .gid
            .map_or_else(|| entry.header().gid().map_err(bad_tar), Ok)? as u32;
        let mtime = pax.mtime.map_or_else(
            || entry.header().mtime().map_err(bad_tar).map(|m| m as i64),
            Ok,
        )?;
        let Some((name, parents)) = comps.split_last() else {
            // The layer's root ("./"): its metadata only.
            if kind.is_dir() {
                sys::fchown(self.root, uid, gid)?;
                sys::fchmod(self.root, mode)?;
                self.dirs.push((Vec::new(), mtime));
            }
            return Ok(());
        };
        let parent = self.open_parents(parents, true, &show)?;
        let pfd = parent.as_ref().unwrap_or(self.root).as_raw_fd();
        let cname = sys::cstr(name)?;

        if name.as_slice() == WH_OPAQUE {
            let dir = parent.as_ref().unwrap_or(self.root);
            return sys::fsetxattr(dir, OsStr::new(OPAQUE_XATTR), b"y")
                .map_err(|e| UnpackError::Bad(format!("{show}: cannot mark the directory opaque ({e}); the store needs a filesystem with trusted xattrs")));
        }
        if let Some(target) = name.strip_prefix(WH_PREFIX) {
            if target.starts_with(WH_PREFIX) {
                return Ok(()); // other AUFS metadata (.wh..wh.plnk...) means nothing here
            }
            let t = sys::cstr(target)?;
            self.remove_existing(pfd, &t)?;
            sys::mknodat(pfd, &t, libc::S_IFCHR, libc::makedev(0, 0))?;
            sys::lchownat(pfd, &t, uid, gid)?;
            return Ok(());
        }

        let xattrs = pax.xattrs;
        let existing = sys::lstat_kind(pfd, &cname)?;
        if kind.is_dir() {
            if existing != Some(libc::S_IFDIR) {
                if existing.is_some() {
                    self.remove_existing(pfd, &cname)?;
                }
                sys::mkdirat(pfd, &cname, 0o700)?;
            }
            let fd = sys::openat(pfd, &cname, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            sys::fchown(&fd, uid, gid)?;
            sys::fchmod(&fd, mode)?;
            set_xattrs(&fd, &xattrs, &show);
            if existing == Some(libc::S_IFCHR) {
                // `.wh.d` then `d/` in one layer: a new directory hiding the old one's
                // content, which overlayfs writes as an opaque directory.
                sys::fsetxattr(&fd, OsStr::new(OPAQUE_XATTR), b"y")?;
            }
            self.dirs.push((comps.clone(), mtime));
            return Ok(());
        }
        if existing.is_some() {
            self.remove_existing(pfd, &cname)?;
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = sys::openat(
                    pfd,
                    &cname,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )?;
                let mut f = File::from(fd);
                self.size += io::copy(&mut entry, &mut f).map_err(bad_tar)?;
                let fd = OwnedFd::from(f);
                // chown first: it clears set-id bits a chmod set.
                sys::fchown(&fd, uid, gid)?;
                sys::fchmod(&fd, mode)?;
                set_xattrs(&fd, &xattrs, &show);
                sys::lutimesat(pfd, &cname, mtime)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Bad(format!("{show}: symlink without target")))?;
                // The target is stored as is: it is never followed while unpacking.
                sys::symlinkat(&sys::cstr(&target)?, pfd, &cname)?;
                sys::lchownat(pfd, &cname, uid, gid)?;
                sys::lutimesat(pfd, &cname, mtime)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::Bad(format!("{show}: hard link without target")))?;
                let tcomps = components(&target)?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(UnpackError::Bad(format!(
                        "{show}: hard link to the layer root"
                    )));
                };
                let tshow = String::from_utf8_lossy(&target).into_owned();
                let tparent = self.open_parents(tparents, false, &tshow)?;
                let tfd = tparent.as_ref().unwrap_or(self.root).as_raw_fd();
                sys::linkat(tfd, &sys::cstr(tname)?, pfd, &cname).map_err(|e| {
                    UnpackError::Bad(format!(
                        "{show}: hard link to {tshow} (not earlier in this layer?): {e}"
                    ))
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                if !keeps_node(kind, major, minor) {
                    // A device node from an image would be a device on the host (CVE-2021-41103's
                    // class); runc makes the container's /dev itself.
                    tracing::debug!(entry = %show, kind = ?kind, major, minor, "device node in a layer not created");
                    return Ok(());
                }
                let ft = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                sys::mknodat(pfd, &cname, ft | 0o600, libc::makedev(major, minor))?;
                sys::lchownat(pfd, &cname, uid, gid)?;
                sys::fchmodat(pfd, &cname, mode)?;
                sys::lutimesat(pfd, &cname, mtime)?;
            }
            _ => {} // filtered above
        }
        Ok(())
    }

    /// Opens the directory `comps` below the root (`None`: the root itself), creating missing
    /// ones when `create`; refuses to pass through anything but a real directory.
    fn open_parents(&self, comps: &[Vec<u8>], create: bool, show: &str) -> Res<Option<OwnedFd>> {
        let mut cur: Option<OwnedFd> = None;
        for c in comps {
            let cname = sys::cstr(c)?;
            let dirfd = cur.as_ref().unwrap_or(self.root).as_raw_fd();
            let flags = libc::O_RDONLY | libc::O_DIRECTORY;
            let fd = match sys::openat(dirfd, &cname, flags, 0) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    sys::mkdirat(dirfd, &cname, 0o755)?;
                    sys::openat(dirfd, &cname, flags, 0)?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    return Err(UnpackError::Bad(format!(
                        "{show}: goes through {:?}, a symlink or file; refused (it could lead out of the layer)",
                        String::from_utf8_lossy(c)
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            cur = Some(fd);
        }
        Ok(cur)
    }

    /// Removes what `name` in the parent holds (an entry replacing an earlier one).
    fn remove_existing(&self, pfd: i32, cname: &CString) -> Res<()> {
        match sys::lstat_kind(pfd, cname)? {
            None => Ok(()),
            Some(libc::S_IFDIR) => {
                // Walk down by descriptor, so a symlink inside cannot redirect the removal.
                let fd = sys::openat(pfd, cname, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                remove_tree(&fd)?;
                sys::unlinkat(pfd, cname, true).map_err(Into::into)
            }
            Some(_) => sys::unlinkat(pfd, cname, false).map_err(Into::into),
        }
    }

    /// Sets directory mtimes, deepest first.
    fn finish(&mut self) -> Res<()> {
        self.dirs.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        for (comps, mtime) in std::mem::take(&mut self.dirs) {
            match comps.split_last() {
                None => sys::lutimesat(self.root.as_raw_fd(), c".", mtime)?,
                Some((name, parents)) => {
                    // A directory replaced later by another kind is skipped.
                    if let Ok(p) = self.open_parents(parents, false, "") {
                        let pfd = p.as_ref().unwrap_or(self.root).as_raw_fd();
                        let _ = sys::lutimesat(pfd, &sys::cstr(name)?, mtime);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Removes everything inside the directory `dir`, by descriptor.
fn remove_tree(dir: &OwnedFd) -> io::Result<()> {
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    for e in std::fs::read_dir(&path)? {
        let e = e?;
        let name = sys::cstr(e.file_name().as_bytes())?;
        if e.file_type()?.is_dir() {
            let sub = sys::openat(
                dir.as_raw_fd(),
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )?;
            remove_tree(&sub)?;
            sys::unlinkat(dir.as_raw_fd(), &name, true)?;
        } else {
            sys::unlinkat(dir.as_raw_fd(), &name, false)?;
        }
    }
    Ok(())
}

/// The path's components, without `.` and empty ones (a leading `/` is the layer's root);
/// `..` is refused.
fn components(raw: &[u8]) -> Res<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(UnpackError::Bad(format!(
                    "entry {:?} has '..': refused (it would leave the layer)",
                    String::from_utf8_lossy(raw)
                )))
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// What an entry's PAX records say beyond its header.
#[derive(Default)]
struct Pax {
    uid: Option<u64>,
    gid: Option<u64>,
    /// Whole seconds (the fraction is dropped).
    mtime: Option<i64>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> Res<Pax> {
    let mut out = Pax::default();
    let Some(exts) = entry.pax_extensions().map_err(bad_tar)? else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(bad_tar)?;
        let value = String::from_utf8_lossy(ext.value_bytes()).into_owned();
        match ext.key_bytes() {
            b"uid" => out.uid = value.parse().ok(),
            b"gid" => out.gid = value.parse().ok(),
            b"mtime" => out.mtime = value.split('.').next().and_then(|v| v.parse().ok()),
            k => {
                if let Some(name) = k.strip_prefix(PAX_XATTR.as_bytes()) {
                    out.xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

/// Sets xattrs; a filesystem or kernel that refuses one is logged, not fatal.
fn set_xattrs(fd: &OwnedFd, xattrs: &[(Vec<u8>, Vec<u8>)], show: &str) {
    for (k, v) in xattrs {
        if let Err(e) = sys::fsetxattr(fd, OsStr::from_bytes(k), v) {
            tracing::warn!(entry = %show, xattr = %String::from_utf8_lossy(k), "cannot set an extended attribute: {e}");
        }
    }
}

/// A zstd stream of one or more frames (ruzstd's decoder reads one).
struct ZstdFrames<R: BufRead> {
    inner: Option<R>,
    frame: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(inner: R) -> Self {
        ZstdFrames {
            inner: Some(inner),
            frame: None,
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(f) = &mut self.frame {
                let n = f.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.inner = self.frame.take().map(|f| f.into_inner());
            }
            let Some(mut inner) = self.inner.take() else {
                return Ok(0);
            };
            if inner.fill_buf()?.is_empty() {
                self.inner = Some(inner);
                return Ok(0);
            }
            let dec = ruzstd::decoding::StreamingDecoder::new(inner)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
            self.frame = Some(dec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::keeps_node;
    use tar::EntryType as T;

    #[test]
    fn device_nodes_are_not_made() {
        assert!(keeps_node(T::Fifo, 0, 0));
        assert!(keeps_node(T::Char, 0, 0), "an overlayfs whiteout");
        assert!(!keeps_node(T::Char, 1, 3), "/dev/null");
        assert!(!keeps_node(T::Char, 0, 1));
        assert!(!keeps_node(T::Block, 8, 0), "/dev/sda");
        assert!(!keeps_node(T::Block, 0, 0));
    }
}
