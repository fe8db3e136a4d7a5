//! The network configuration, as libcni reads it: the first `.conf`, `.conflist` or `.json`
//! file of the config directory in lexical order that parses, a single-plugin `.conf`
//! wrapped into a list of one; and the config each plugin gets on stdin, with the list's
//! `name` and `cniVersion`, the previous plugin's result and the `runtimeConfig` of the
//! capabilities it declares injected.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The file name endings libcni reads as network configs.
pub const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// A network configuration list (a `.conflist`, or a `.conf` as a list of one plugin).
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfList {
    /// The network's name.
    pub name: String,
    /// The CNI version of every plugin's config (`0.1.0` when the file gives none).
    pub cni_version: String,
    /// `disableCheck`: CHECK is skipped.
    pub disable_check: bool,
    /// The plugins' configs, in order.
    pub plugins: Vec<Map<String, Value>>,
    /// The list as JSON (what the result cache keeps, so a DEL runs the config of its ADD).
    pub bytes: Vec<u8>,
}

impl NetConfList {
    /// The plugin type (binary name) of plugin `i`.
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins
            .get(i)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// The config files among `names` (file names of one directory), in the order libcni tries
/// them: lexical, only the known endings.
pub fn candidates(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| {
            Path::new(n.as_str())
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
        })
        .cloned()
        .collect();
    out.sort();
    out
}

/// Parses a config file's bytes: a list when `name` ends in `.conflist`, else one plugin's
/// config wrapped into a list. The error says what is missing.
pub fn parse(name: &str, bytes: &[u8]) -> Result<NetConfList, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("{name}: not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err(format!("{name}: not a JSON object"));
    };
    let version = match obj.get("cniVersion") {
        None => "0.1.0".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(format!("{name}: `cniVersion` must be a non-empty string")),
    };
    let net_name = match obj.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(format!("{name}: `name` is missing (the network's name)")),
    };
    if name.ends_with(".conflist") {
        let disable_check = match obj.get("disableCheck") {
            None => false,
            Some(Value::Bool(b)) => *b,
            // libcni also takes the strings "true"/"false".
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(format!("{name}: `disableCheck` must be a boolean")),
        };
        let Some(Value::Array(list)) = obj.get("plugins") else {
            return Err(format!(
                "{name}: `plugins` is missing (a list of plugin configs)"
            ));
        };
        if list.is_empty() {
            return Err(format!("{name}: `plugins` is empty"));
        }
        let mut plugins = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let Value::Object(p) = p else {
                return Err(format!("{name}: plugins[{i}] is not an object"));
            };
            check_type(name, i, p)?;
            plugins.push(p.clone());
        }
        Ok(NetConfList {
            name: net_name,
            cni_version: version,
            disable_check,
            plugins,
            bytes: bytes.to_vec(),
        })
    } else {
        check_type(name, 0, &obj)?;
        let list = serde_json::json!({
            "cniVersion": version,
            "name": net_name,
            "plugins": [Value::Object(obj.clone())],
        });
        Ok(NetConfList {
            name: net_name,
            cni_version: version,
            disable_check: false,
            plugins: vec![obj],
            bytes: serde_json::to_vec(&list).unwrap_or_default(),
        })
    }
}

fn check_type(name: &str, i: usize, p: &Map<String, Value>) -> Result<(), String> {
    match p.get("type") {
        Some(Value::String(t)) if crate::paths::component_problem(t).is_none() => Ok(()),
        Some(Value::String(t)) => Err(format!(
            "{name}: plugins[{i}]: type {t:?} is not a binary name"
        )),
        _ => Err(format!(
            "{name}: plugins[{i}]: `type` is missing (the plugin binary)"
        )),
    }
}

/// The network config of `dir`: the first candidate file that parses (the others that come
/// before it are returned as problems to log), or `None` when there is none.
pub fn load(dir: &Path) -> (Option<(PathBuf, NetConfList)>, Vec<String>) {
    let names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut problems = Vec::new();
    for n in candidates(&names) {
        let path = dir.join(&n);
        match std::fs::read(&path) {
            Ok(bytes) => match parse(&n, &bytes) {
                Ok(l) => return (Some((path, l)), problems),
                Err(e) => problems.push(format!("{}: {e}", dir.display())),
            },
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    (None, problems)
}

/// Plugin `i`'s stdin: its config with the list's `name` and `cniVersion`, `prevResult`
/// when given, and a `runtimeConfig` holding the entries of `capability_args` the plugin
/// declares in its `capabilities` (none declared, or none given: no `runtimeConfig`).
pub fn plugin_stdin(
    list: &NetConfList,
    i: usize,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Vec<u8> {
    let mut conf = list.plugins.get(i).cloned().unwrap_or_default();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    let mut rc = Map::new();
    if let Some(Value::Object(caps)) = conf.get("capabilities") {
        for (cap, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = capability_args.get(cap) {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

/// `a >= b` for CNI versions (`major.minor.patch`; a missing or odd part counts as 0).
pub fn version_at_least(a: &str, b: &str) -> bool {
    let parts = |s: &str| -> [u64; 3] {
        let mut out = [0; 3];
        for (o, p) in out.iter_mut().zip(s.split('.')) {
            *o = p.trim().parse().unwrap_or(0);
        }
        out
    };
    parts(a) >= parts(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn files_are_tried_in_lexical_order() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["README", "x.yaml"], &[]),
            (
                &["99-b.conf", "10-a.conflist", "50.json", "a.conf.bak"],
                &["10-a.conflist", "50.json", "99-b.conf"],
            ),
            (&["B.conf", "a.conf"], &["B.conf", "a.conf"]),
        ];
        for (given, want) in cases {
            assert_eq!(candidates(&names(given)), names(want), "{given:?}");
        }
    }

    #[test]
    fn lists_and_single_configs_parse() {
        let l = parse(
            "10.conflist",
            br#"{"cniVersion":"1.0.0","name":"n","disableCheck":true,
                 "plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        assert_eq!((l.name.as_str(), l.cni_version.as_str()), ("n", "1.0.0"));
        assert!(l.disable_check);
        assert_eq!((l.plugin_type(0), l.plugin_type(1)), ("bridge", "portmap"));
        let c = parse("10.conf", br#"{"name":"one","type":"ptp"}"#).unwrap();
        assert_eq!(c.cni_version, "0.1.0");
        assert_eq!(c.plugins.len(), 1);
        let back: Value = serde_json::from_slice(&c.bytes).unwrap();
        assert_eq!(back["plugins"][0]["type"], "ptp");
        assert_eq!(back["name"], "one");
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases: &[(&str, &str, &str)] = &[
            ("a.conflist", "nope", "not JSON"),
            ("a.conflist", "[]", "not a JSON object"),
            ("a.conflist", r#"{"name":"n"}"#, "`plugins` is missing"),
            ("a.conflist", r#"{"name":"n","plugins":[]}"#, "empty"),
            (
                "a.conflist",
                r#"{"name":"n","plugins":[1]}"#,
                "not an object",
            ),
            (
                "a.conflist",
                r#"{"name":"n","plugins":[{}]}"#,
                "`type` is missing",
            ),
            (
                "a.conflist",
                r#"{"plugins":[{"type":"x"}]}"#,
                "`name` is missing",
            ),
            (
                "a.conf",
                r#"{"name":"n","type":"../x"}"#,
                "not a binary name",
            ),
            (
                "a.conf",
                r#"{"name":"n","cniVersion":1,"type":"x"}"#,
                "cniVersion",
            ),
            (
                "a.conflist",
                r#"{"name":"n","disableCheck":3,"plugins":[{"type":"x"}]}"#,
                "disableCheck",
            ),
        ];
        for (file, text, want) in cases {
            let e = parse(file, text.as_bytes()).unwrap_err();
            assert!(e.contains(want) && e.contains(file), "{text}: {e}");
        }
    }

    #[test]
    fn load_takes_the_first_valid_file() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).0.is_none());
        assert!(load(&d.path().join("missing")).0.is_none());
        std::fs::write(d.path().join("05-broken.conflist"), "{").unwrap();
        std::fs::write(
            d.path().join("10-a.conf"),
            r#"{"name":"a","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("20-b.conf"),
            r#"{"name":"b","type":"bridge"}"#,
        )
        .unwrap();
        let (got, problems) = load(d.path());
        let (path, l) = got.unwrap();
        assert_eq!(l.name, "a");
        assert!(path.ends_with("10-a.conf"));
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn stdin_injects_name_version_prev_result_and_capabilities() {
        let l = parse(
            "x.conflist",
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[
                {"type":"bridge","name":"ignored"},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}},
                {"type":"bandwidth","capabilities":{"bandwidth":true}}]}"#,
        )
        .unwrap();
        let mut caps = Map::new();
        caps.insert("portMappings".into(), json!([{"hostPort": 80}]));
        caps.insert("bandwidth".into(), json!({"ingressRate": 1}));
        caps.insert("dns".into(), json!({"servers": ["1.1.1.1"]}));
        let prev = json!({"ips": []});
        let s = |i, prev| -> Value {
            serde_json::from_slice(&plugin_stdin(&l, i, prev, &caps)).unwrap()
        };
        let first = s(0, None);
        assert_eq!(first["name"], "net");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert!(first.get("prevResult").is_none());
        assert!(first.get("runtimeConfig").is_none());
        let second = s(1, Some(&prev));
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80}]})
        );
        let third = s(2, Some(&prev));
        assert_eq!(
            third["runtimeConfig"],
            json!({"bandwidth": {"ingressRate": 1}})
        );
        // Declared but not given: no runtimeConfig.
        let none = plugin_stdin(&l, 1, None, &Map::new());
        let none: Value = serde_json::from_slice(&none).unwrap();
        assert!(none.get("runtimeConfig").is_none());
    }

    #[test]
    fn versions_compare() {
        for (a, b, want) in [
            ("1.0.0", "0.4.0", true),
            ("0.4.0", "0.4.0", true),
            ("0.3.1", "0.4.0", false),
            ("0.10.0", "0.4.0", true),
            ("junk", "0.4.0", false),
            ("1.1", "1.0.0", true),
        ] {
            assert_eq!(version_at_least(a, b), want, "{a} >= {b}");
        }
    }
}
