//! Where an import reads from: a directory, or an uncompressed tar of one (indexed once, then
//! read by seeking, so a large archive is never copied).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::{ErrorKind, ImageError, IoContext, Result};

/// An archive's files, by their path inside it (`index.json`, `blobs/sha256/<hex>`).
pub enum Source {
    /// An unpacked layout directory.
    Dir(PathBuf),
    /// A tar file: path inside it to (data offset, size).
    Tar {
        /// The tar file.
        file: PathBuf,
        /// Path inside the tar to (data offset, size).
        entries: HashMap<String, (u64, u64)>,
    },
}

/// The magic of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl Source {
    /// Opens `path`: a directory, or a tar file (indexed now).
    pub fn open(path: &Path) -> Result<Source> {
        let what = path.display().to_string();
        let meta = std::fs::metadata(path).ctx(&what, "import")?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let mut f = File::open(path).ctx(&what, "import")?;
        let mut magic = [0u8; 2];
        if f.read(&mut magic).ctx(&what, "import")? == 2 && magic == GZIP_MAGIC {
            return Err(ImageError::invalid(
                what,
                "import",
                "the archive is gzip-compressed: decompress it first (gunzip), the store reads plain tar archives",
            ));
        }
        f.seek(SeekFrom::Start(0)).ctx(&what, "import")?;
        let mut entries = HashMap::new();
        let mut links = Vec::new();
        let mut archive = tar::Archive::new(f);
        // Told without the file's bytes: it may be anything, a secret too.
        let bad = |detail: String| {
            ImageError::invalid(
                &what,
                "import",
                format!("not a readable tar archive: {detail}"),
            )
        };
        let file_len = meta.len();
        let mut pos = super::tarerr::Position::default();
        for entry in archive
            .entries()
            .map_err(|e| bad(super::tarerr::cause(&e)))?
        {
            let entry = entry.map_err(|e| bad(pos.header_error(&e)))?;
            pos.seen(&entry);
            let end = entry.raw_file_position() + entry.size();
            if end > file_len {
                return Err(ImageError::invalid(
                    &what,
                    "import",
                    format!(
                        "the archive is truncated: {} needs {end} bytes, the file has {file_len}",
                        String::from_utf8_lossy(&entry.path_bytes())
                    ),
                ));
            }
            let name = clean(&String::from_utf8_lossy(&entry.path_bytes()));
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    entries.insert(name, (entry.raw_file_position(), entry.size()));
                }
                tar::EntryType::Link | tar::EntryType::Symlink => {
                    if let Ok(Some(target)) = entry.link_name() {
                        let target = target.to_string_lossy().into_owned();
                        let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                            // A symlink's target is relative to its own directory.
                            match name.rsplit_once('/') {
                                Some((dir, _)) => format!("{dir}/{target}"),
                                None => target,
                            }
                        } else {
                            target
                        };
                        links.push((name, clean(&target)));
                    }
                }
                _ => {}
            }
        }
        for (name, target) in links {
            if let Some(&t) = entries.get(&target) {
                entries.insert(name, t);
            }
        }
        Ok(Source::Tar {
            file: path.to_path_buf(),
            entries,
        })
    }

    /// The archive, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Dir(p) | Source::Tar { file: p, .. } => p.display().to_string(),
        }
    }

    /// True when the archive holds `name`.
    pub fn has(&self, name: &str) -> bool {
        match self {
            Source::Dir(d) => safe_rel(name).is_some_and(|r| d.join(r).is_file()),
            Source::Tar { entries, .. } => entries.contains_key(&clean(name)),
        }
    }

    /// Opens `name` in the archive: a reader and its size.
    pub fn open_file(&self, name: &str) -> Result<(Box<dyn Read + '_>, u64)> {
        let missing = || {
            ImageError::new(
                self.describe(),
                "import",
                ErrorKind::Invalid,
                format!("the archive has no file {name:?} (incomplete or not an image archive)"),
            )
        };
        match self {
            Source::Dir(d) => {
                let rel = safe_rel(name).ok_or_else(missing)?;
                let f = File::open(d.join(rel)).map_err(|_| missing())?;
                let len = f.metadata().ctx(self.describe(), "import")?.len();
                Ok((Box::new(f), len))
            }
            Source::Tar { file, entries } => {
                let &(offset, size) = entries.get(&clean(name)).ok_or_else(missing)?;
                let mut f = File::open(file).ctx(self.describe(), "import")?;
                f.seek(SeekFrom::Start(offset))
                    .ctx(self.describe(), "import")?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// Reads a whole small file (JSON), refusing more than `limit` bytes.
    pub fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let (r, size) = self.open_file(name)?;
        if size > limit {
            return Err(ImageError::invalid(
                self.describe(),
                "import",
                format!("{name} is {size} bytes, more than the {limit} expected of it"),
            ));
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.take(limit)
            .read_to_end(&mut buf)
            .ctx(self.describe(), "import")?;
        Ok(buf)
    }
}

/// `a/./b`, `./a`, `/a` all become `a/b` / `a`.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// A relative path inside the archive, or `None` when `name` would leave it.
fn safe_rel(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        Some(p.to_path_buf())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean("./blobs/sha256/x"), "blobs/sha256/x");
        assert_eq!(clean("/a//b/./c"), "a/b/c");
        assert_eq!(clean("a/../b"), "b");
        assert!(safe_rel("../x").is_none());
        assert!(safe_rel("/x").is_none());
    }
}
