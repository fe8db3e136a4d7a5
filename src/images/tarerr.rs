//! Errors of the tar crate told without the archive's bytes.
//!
//! The tar crate writes header fields into its messages ("numeric field was not a number:
//! login sy when getting cksum for root:x:0:0:root:..."): given a file that is no tar, that
//! echoes its content, which may be a secret. Here an error names the entry (its index, and
//! the path of the last entry read whole) and the byte offset, and says what was wrong in
//! fixed words.

use std::io;

/// What went wrong, in words that never repeat the archive's content: the tar crate's fixed
/// messages are kept, a message carrying header bytes is replaced by the field it was about.
pub fn cause(e: &io::Error) -> String {
    if e.raw_os_error().is_some() {
        // The system's own words: no archive bytes in them.
        return e.to_string();
    }
    let text = e.to_string();
    /// Messages of the tar crate (0.4) that carry no archive bytes.
    const FIXED: &[&str] = &[
        "archive header checksum mismatch",
        "size overflow",
        "unexpected EOF during skip",
        "failed to read entire block",
        "failed to read extension",
        "members found describing a future member but no future member found",
        "two long name entries describing the same member",
        "two pax extensions entries describing the same member",
        "sparse entry type listed but not GNU header",
        "sparse header was not a gnu header",
        "previous block in sparse file was not aligned to 512-byte boundary",
        "out of order or overlapping sparse blocks",
        "more bytes listed in sparse file than u64 can hold",
        "sparse file consumed more data than the header listed",
        "mismatch in sparse file chunks and size in header",
        "mismatch in sparse file chunks and entry size in header",
        "seek position out of bounds",
    ];
    if let Some(fixed) = FIXED.iter().find(|f| text == **f) {
        return (*fixed).to_string();
    }
    /// Header fields the tar crate names in "<error> when getting <field> for <path>".
    const FIELDS: &[&str] = &["size", "mode", "uid", "gid", "mtime", "cksum"];
    if let Some(field) = FIELDS
        .iter()
        .find(|f| text.contains(&format!(" when getting {f} for ")))
    {
        return format!("the header's {field} field is not a number");
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return "the data ends inside an entry (truncated)".into();
    }
    if text.starts_with("numeric field") {
        return "a numeric header field is not a number".into();
    }
    format!("the data is not a valid tar archive ({:?})", e.kind())
}

/// Where a walk over an archive's entries is, for errors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Entries read whole so far.
    pub index: usize,
    /// The byte where the next header starts (of the uncompressed stream).
    pub offset: u64,
    /// The path of the last entry read, as text.
    pub last: Option<String>,
}

impl Position {
    /// Notes an entry read whole: its path, and where its data ends (padded to 512 bytes).
    pub fn seen<R: io::Read>(&mut self, entry: &tar::Entry<'_, R>) {
        let end = entry
            .raw_file_position()
            .saturating_add(entry.size().div_ceil(512).saturating_mul(512));
        self.index += 1;
        self.offset = end;
        self.last = Some(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
    }

    /// The next header could not be read: names its index, its offset and the entry before.
    pub fn header_error(&self, e: &io::Error) -> String {
        let after = match &self.last {
            Some(p) => format!(", after `{p}`"),
            None => String::new(),
        };
        format!(
            "tar entry {} (header at byte {}{after}): {}",
            self.index,
            self.offset,
            cause(e)
        )
    }
}

/// An entry that was read but whose header or data is bad: names it by index and path.
pub fn entry_error<R: io::Read>(index: usize, entry: &tar::Entry<'_, R>, e: &io::Error) -> String {
    format!(
        "tar entry {index} `{}` (header at byte {}): {}",
        String::from_utf8_lossy(&entry.path_bytes()),
        entry.raw_header_position(),
        cause(e)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of /etc/passwd lines, 512 bytes and more: the tar crate's own message holds
    /// its text.
    pub(crate) fn passwd() -> Vec<u8> {
        let mut text = String::new();
        for i in 0..20 {
            text.push_str(&format!(
                "user{i}:x:{i}:{i}:secret-gecos-{i}:/home/user{i}:/bin/sh\n"
            ));
        }
        format!("root:x:0:0:root:/root:/bin/bash\n{text}").into_bytes()
    }

    #[test]
    fn a_file_that_is_no_tar_is_told_without_its_bytes() {
        let data = passwd();
        let mut archive = tar::Archive::new(&data[..]);
        let mut pos = Position::default();
        let mut message = None;
        for entry in archive.entries().unwrap() {
            match entry {
                Ok(e) => pos.seen(&e),
                Err(e) => {
                    // The crate's own words echo the file: what this module exists to stop.
                    assert!(e.to_string().contains("root:x:0:0"), "{e}");
                    message = Some(pos.header_error(&e));
                    break;
                }
            }
        }
        let message = message.expect("no error");
        assert_eq!(
            message,
            "tar entry 0 (header at byte 0): the header's cksum field is not a number"
        );
        for secret in ["root", "secret", "bin", "x:0"] {
            assert!(!message.contains(secret), "{message}");
        }
    }

    #[test]
    fn a_bad_header_after_good_entries_names_the_entry_before_and_its_offset() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(600);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "etc/hosts", &[b'a'; 600][..])
            .unwrap();
        let mut data = b.into_inner().unwrap();
        // The good entry: a header and two data blocks; then passwd text as a header.
        data.truncate(512 * 3);
        data.extend_from_slice(&passwd());
        let mut archive = tar::Archive::new(&data[..]);
        let mut pos = Position::default();
        let mut message = None;
        for entry in archive.entries().unwrap() {
            match entry {
                Ok(e) => pos.seen(&e),
                Err(e) => {
                    message = Some(pos.header_error(&e));
                    break;
                }
            }
        }
        let message = message.expect("no error");
        assert!(
            message.starts_with("tar entry 1 (header at byte 1536, after `etc/hosts`): "),
            "{message}"
        );
        assert!(!message.contains("root"), "{message}");
    }

    #[test]
    fn causes_keep_fixed_words_and_drop_content() {
        let other = |m: &str| io::Error::other(m.to_string());
        assert_eq!(
            cause(&other("archive header checksum mismatch")),
            "archive header checksum mismatch"
        );
        assert_eq!(
            cause(&other(
                "numeric field did not have utf-8 text: \u{fffd} when getting mode for hunter2"
            )),
            "the header's mode field is not a number"
        );
        assert_eq!(
            cause(&other("numeric field was not a number: hunter2")),
            "a numeric header field is not a number"
        );
        let c = cause(&other("something new: hunter2"));
        assert!(!c.contains("hunter2"), "{c}");
        assert_eq!(
            cause(&io::Error::new(io::ErrorKind::UnexpectedEof, "hunter2")),
            "the data ends inside an entry (truncated)"
        );
        // An OS error is shown as the C library words it (glibc "Input/output error", musl
        // "I/O error" on the device builds).
        let eio = io::Error::from_raw_os_error(5);
        assert_eq!(cause(&eio), eio.to_string());
        assert!(cause(&eio).contains("os error 5"));
    }

    #[test]
    fn importing_a_file_that_is_no_tar_names_no_content() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("image.tar");
        std::fs::write(&f, passwd()).unwrap();
        let e = crate::images::source::Source::open(&f)
            .err()
            .expect("read as a tar");
        let e = e.to_string();
        assert!(
            e.contains("not a readable tar archive: tar entry 0 (header at byte 0): the header's cksum field is not a number"),
            "{e}"
        );
        assert!(!e.contains("root:") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn unpacking_a_layer_that_is_no_tar_names_no_content() {
        let d = tempfile::tempdir().unwrap();
        // A good entry, then passwd text where the next header should be.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "etc/motd", &b"hi\n"[..]).unwrap();
        let mut data = b.into_inner().unwrap();
        data.truncate(1024);
        data.extend_from_slice(&passwd());
        let bad = |data: &[u8]| match crate::images::unpack::unpack(data, "", d.path()) {
            Err(crate::images::unpack::UnpackError::Bad(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bad(&data),
            "corrupt or truncated layer data: tar entry 1 (header at byte 1024, after `etc/motd`): the header's cksum field is not a number"
        );
        // A good header whose uid field is not a number: the entry is named by its path.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_path("etc/shadow").unwrap();
        h.as_old_mut().uid.copy_from_slice(b"hunter2\0");
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
        let e = bad(&b.into_inner().unwrap());
        assert_eq!(
            e,
            "tar entry 0 `etc/shadow` (header at byte 0): corrupt or truncated layer data: the header's uid field is not a number"
        );
    }
}
