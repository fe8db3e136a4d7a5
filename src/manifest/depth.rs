//! A cheap look at a manifest's nesting before it is parsed.
//!
//! libyaml's parse time grows with the square of the nesting depth: a 400 KB `x: [[[...]]]`
//! kept a thread busy for minutes before serde's own recursion limit (128) was reached, since
//! the whole document is parsed into events first. This scan counts the depth in one pass over
//! the bytes (flow collections `[` `{` opened where a value starts, outside quotes, comments
//! and block scalars; block collections by their indentation and by compact `- - x` entries)
//! and refuses a file nested deeper than [`MAX_DEPTH`] before the parser sees it.
//!
//! The count is an estimate that never exceeds the real depth by much and never misses flow
//! nesting (the costly kind): a block collection inside a mapping at the same indentation is
//! counted once, so block nesting may be under-counted up to half; serde's limit catches the
//! rest, and deep block nesting costs the writer the square of the depth in indentation bytes.

use std::fmt;

/// The deepest nesting a manifest may have. Kubernetes objects need about 15 levels
/// (`spec.affinity.nodeAffinity...matchExpressions[].values[]`); serde stops at 128.
pub const MAX_DEPTH: usize = 64;

/// A manifest nested deeper than [`MAX_DEPTH`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooDeep {
    /// The YAML document (from 1) where the limit was passed.
    pub document: usize,
    /// The line (from 1) where the limit was passed.
    pub line: usize,
}

impl fmt::Display for TooDeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nesting deeper than {MAX_DEPTH} at line {}: refused before parsing",
            self.line
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Checks that no part of `text` is nested deeper than [`MAX_DEPTH`]. One pass, no
/// allocation beyond the indentation stack (bounded by the limit).
pub fn check(text: &str) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    let mut document = 1;
    let mut line = 1;
    // Open flow collections (`[`, `{`).
    let mut flow = 0usize;
    // Columns of the open block collections.
    let mut block: Vec<usize> = Vec::new();
    let mut quote = Quote::None;
    // A block scalar's content: lines indented deeper than this column (or empty) are text.
    let mut block_scalar: Option<usize> = None;
    // Whether a document has begun (content, or a `---`).
    let mut begun = false;
    let too_deep = |document, line| Err(TooDeep { document, line });
    let mut i = 0;
    while i < bytes.len() {
        // At a line start (outside quotes): indentation, block scalars, documents, block
        // entries.
        let mut col = 0;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
            col += 1;
        }
        let blank = i >= bytes.len() || bytes[i] == b'\n' || bytes[i] == b'\r';
        if quote == Quote::None {
            if let Some(parent) = block_scalar {
                if blank || col > parent {
                    i = skip_line(bytes, i) + 1;
                    line += 1;
                    continue;
                }
                block_scalar = None;
            }
            if flow == 0 && !blank && bytes[i] != b'#' {
                if col == 0 && (bytes[i..].starts_with(b"---") || bytes[i..].starts_with(b"...")) {
                    let after = bytes.get(i + 3).copied();
                    if matches!(after, None | Some(b' ' | b'\t' | b'\n' | b'\r')) {
                        // The first `---` opens document 1 unless content came before it.
                        if bytes[i] == b'-' && std::mem::replace(&mut begun, true) {
                            document += 1;
                        }
                        block.clear();
                        i += 3;
                    }
                }
                while block.last().is_some_and(|&c| c >= col) {
                    block.pop();
                }
            }
        }
        // The rest of the line (and, within quotes or flow collections, beyond it).
        let line_indent = col;
        let mut value_start = quote == Quote::None;
        let mut last_token_block_scalar = false;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' {
                line += 1;
                i += 1;
                break;
            }
            match quote {
                Quote::Double => {
                    if b == b'\\' {
                        i += 1;
                    } else if b == b'"' {
                        quote = Quote::None;
                    }
                    i += 1;
                    continue;
                }
                Quote::Single => {
                    if b == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            quote = Quote::None;
                        }
                    }
                    i += 1;
                    continue;
                }
                Quote::None => {}
            }
            match b {
                b' ' | b'\t' | b'\r' => {
                    i += 1;
                    continue;
                }
                b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n') => {
                    i = skip_line(bytes, i);
                    continue;
                }
                _ => {}
            }
            last_token_block_scalar = false;
            begun = true;
            let next_blank = matches!(
                bytes.get(i + 1).copied(),
                None | Some(b' ' | b'\t' | b'\n' | b'\r')
            );
            if value_start {
                match b {
                    b'[' | b'{' => {
                        flow += 1;
                        if flow + block.len() > MAX_DEPTH {
                            return too_deep(document, line);
                        }
                        i += 1;
                        continue;
                    }
                    b'"' => {
                        quote = Quote::Double;
                        value_start = false;
                        i += 1;
                        continue;
                    }
                    b'\'' => {
                        quote = Quote::Single;
                        value_start = false;
                        i += 1;
                        continue;
                    }
                    b'&' | b'!' => {
                        // An anchor or a tag: the value follows it.
                        while i < bytes.len() && !matches!(bytes[i], b' ' | b'\t' | b'\n') {
                            i += 1;
                        }
                        continue;
                    }
                    b'-' | b'?' if flow == 0 && next_blank => {
                        // A block entry (or complex key): a collection at this column.
                        let c = column(bytes, i);
                        while block.last().is_some_and(|&x| x >= c) {
                            block.pop();
                        }
                        block.push(c);
                        if block.len() > MAX_DEPTH {
                            return too_deep(document, line);
                        }
                        i += 1;
                        continue;
                    }
                    b'|' | b'>' if flow == 0 => {
                        // A block scalar, with its indicators (`|-`, `>+2`).
                        i += 1;
                        while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'0'..=b'9') {
                            i += 1;
                        }
                        last_token_block_scalar = true;
                        value_start = false;
                        continue;
                    }
                    _ => {
                        if flow == 0 {
                            // A mapping key (or a scalar) here: a collection at its column.
                            let c = column(bytes, i);
                            if block.last().is_none_or(|&x| x < c) {
                                block.push(c);
                                if block.len() > MAX_DEPTH {
                                    return too_deep(document, line);
                                }
                            }
                        }
                        value_start = false;
                    }
                }
            }
            match b {
                b'[' | b'{' if flow > 0 => {
                    flow += 1;
                    if flow + block.len() > MAX_DEPTH {
                        return too_deep(document, line);
                    }
                    value_start = true;
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                b',' if flow > 0 => value_start = true,
                b':' if next_blank || flow > 0 => value_start = true,
                _ => {}
            }
            i += 1;
        }
        if quote == Quote::None && flow == 0 && last_token_block_scalar {
            block_scalar = Some(line_indent);
        }
    }
    Ok(())
}

/// The column of byte `i` (bytes since the last newline).
fn column(bytes: &[u8], i: usize) -> usize {
    i - bytes[..i]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1)
}

/// The index just past the end of the line holding `i` (its newline excluded).
fn skip_line(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep_flow(levels: usize) -> String {
        format!("x: {}{}\n", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn ordinary_manifests_pass() {
        for ok in [
            "",
            "kind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: c\n    image: i\n    command: [\"sh\", \"-c\", \"echo [[[[ {{{{\"]\n",
            "{\"kind\":\"Pod\",\"spec\":{\"containers\":[{\"name\":\"c\",\"args\":[\"a[1\"]}]}}",
            "a: |\n  [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\nb: 1\n",
            "a: 'it''s [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\n",
            "a: x[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
            "a: 1 # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        assert_eq!(check(&deep_flow(MAX_DEPTH - 1)), Ok(()));
        // Many documents, each shallow: the count starts again at `---`.
        let many = "---\na:\n  b:\n    c: [[1]]\n".repeat(1000);
        assert_eq!(check(&many), Ok(()));
        // A long flat list.
        let flat = format!("a: [{}1]\n", "1, ".repeat(100_000));
        assert_eq!(check(&flat), Ok(()));
    }

    #[test]
    fn deep_flow_block_and_compact_nesting_refused() {
        let e = check(&deep_flow(200_000)).unwrap_err();
        assert_eq!((e.document, e.line), (1, 1));
        assert!(e.to_string().contains("nesting deeper than 64"), "{e}");
        // Flow nesting split over lines, after an anchor, a tag, in a list, in JSON.
        for deep in [
            format!("kind: Pod\n---\nx:\n  {}\n", "[\n".repeat(100)),
            format!("x: &a {}", "[".repeat(100)),
            format!("x: !!seq {}", "{a: ".repeat(100)),
            format!("- {}", "[".repeat(100)),
            format!("{{\"a\":{}", "[".repeat(100)),
            format!("x: [a\", {}", "[".repeat(100)),
        ] {
            assert!(check(&deep).is_err(), "{deep:.40}");
        }
        assert_eq!(
            check(&format!("kind: Pod\n---\nx: {}", "[".repeat(100)))
                .unwrap_err()
                .document,
            2
        );
        // Compact block sequences on one line, and indented mappings.
        assert!(check(&format!("{}x\n", "- ".repeat(100))).is_err());
        let mut indented = String::new();
        for n in 0..100 {
            indented.push_str(&format!("{}k{n}:\n", " ".repeat(n)));
        }
        assert!(check(&indented).is_err());
    }

    #[test]
    fn every_refused_text_is_also_too_deep_for_the_parser() {
        // What the scan refuses, serde_yaml refuses too (past its 128 limit): the scan only
        // saves the time.
        let deep = deep_flow(200);
        assert!(check(&deep).is_err());
        let parsed: Result<serde_json::Value, _> = serde_yaml_ng::from_str(&deep);
        assert!(parsed.is_err());
    }
}
