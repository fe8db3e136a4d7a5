//! Reading the manifest directory: which files count, and the documents each one holds.

use serde_json::Value;
use std::fmt;
use std::path::Path;

/// Where in a file a document sits: the YAML document (1-based) and, for a `kind: List`, the
/// item (0-based, as field paths count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The YAML document, from 1.
    pub document: usize,
    /// The item of a `kind: List`, from 0.
    pub item: Option<usize>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            None => write!(f, "document {}", self.document),
            Some(i) => write!(f, "document {}, items[{i}]", self.document),
        }
    }
}

/// One object as written in a file, not yet checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Where it is in the file.
    pub place: Place,
    /// The object as parsed.
    pub value: Value,
}

/// Whether a directory entry is a manifest: `*.json`, `*.yaml` or `*.yml`, not hidden. Editor
/// leftovers (`.web.yaml.swp`, `web.yaml~`, `#web.yaml#`, `.#web.yaml`) do not match.
pub fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.')
        && !name.starts_with('#')
        && [".json", ".yaml", ".yml"]
            .iter()
            .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

/// The manifest files of `dir` (regular files, symlinks followed), sorted by name. A missing
/// directory holds none (as the kubelet treats it).
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_manifest_name(&name) {
            continue;
        }
        // Subdirectories are not read (as the kubelet does); a dangling symlink is skipped.
        // The entry's own type needs no stat (the directory has it); only a symlink is
        // followed, so a scan of an unchanged directory costs one stat per file, not two.
        let regular = match entry.file_type() {
            Ok(t) if t.is_symlink() => std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()),
            Ok(t) => t.is_file(),
            Err(_) => false,
        };
        if regular {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A file that does not parse, with the document it stopped at.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// The document that did not parse.
    pub place: Place,
    /// The parser's message (with line and column).
    pub reason: String,
}

/// Splits a file's text into its objects: every YAML document (`---`), the items of a
/// `kind: List`, empty documents skipped. JSON is read as the YAML it is. A text nested deeper
/// than [`super::depth::MAX_DEPTH`] is refused before it is parsed.
pub fn documents(text: &str) -> Result<Vec<Document>, ParseError> {
    super::depth::check(text).map_err(|e| ParseError {
        place: Place {
            document: e.document,
            item: None,
        },
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let place = Place {
            document: i + 1,
            item: None,
        };
        // A key written twice is an error (kubectl's), not the last one silently.
        let value = super::strict::value(doc, text).map_err(|e| ParseError {
            place,
            reason: e.to_string(),
        })?;
        match value {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = match m.get("items") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(items)) => items.clone(),
                    Some(_) => {
                        return Err(ParseError {
                            place,
                            reason: "a `kind: List` needs `items`, a list of objects".into(),
                        })
                    }
                };
                for (n, value) in items.into_iter().enumerate() {
                    out.push(Document {
                        place: Place {
                            document: i + 1,
                            item: Some(n),
                        },
                        value,
                    });
                }
            }
            value => out.push(Document { place, value }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web.yaml", "a.yml", "cm.json", "x.y.yaml"] {
            assert!(is_manifest_name(ok), "{ok}");
        }
        for no in [
            ".web.yaml",
            ".web.yaml.swp",
            "web.yaml~",
            "#web.yaml#",
            ".#web.yaml",
            "4913",
            "notes.txt",
            ".yaml",
            "web.yaml.bak",
        ] {
            assert!(!is_manifest_name(no), "{no}");
        }
    }

    #[test]
    fn multi_document_list_and_json() {
        let text = "---\nkind: Pod\n---\n# only a comment\n---\nkind: List\nitems:\n- kind: ConfigMap\n- kind: Secret\n";
        let docs = documents(text).unwrap();
        let places: Vec<String> = docs.iter().map(|d| d.place.to_string()).collect();
        assert_eq!(
            places,
            ["document 1", "document 3, items[0]", "document 3, items[1]"]
        );
        assert_eq!(docs[2].value["kind"], "Secret");
        let docs = documents(r#"{"kind":"Pod","metadata":{"name":"a\/b"}}"#).unwrap();
        assert_eq!(docs[0].value["metadata"]["name"], "a/b");
        assert!(documents("").unwrap().is_empty());
    }

    #[test]
    fn parse_error_names_the_document() {
        let e = documents("kind: Pod\n---\nkind: [unclosed\n").unwrap_err();
        assert_eq!(e.place.document, 2);
        let e = documents("kind: Pod\n---\nkind: Pod\nmetadata: {name: a}\nkind: Secret\n")
            .unwrap_err();
        assert_eq!(e.place.document, 2);
        assert!(e.reason.contains("duplicate key `kind`"), "{}", e.reason);
        let e = documents("kind: List\nitems: 5\n").unwrap_err();
        assert!(e.reason.contains("items"), "{}", e.reason);
    }
}
