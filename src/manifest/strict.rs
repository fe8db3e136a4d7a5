//! A JSON value read from YAML (or JSON) that refuses a key written twice in one mapping, as
//! kubectl does (`mapping key "name" already defined`): serde_json's own `Value` keeps the
//! last one silently.
//!
//! Plain scalars are resolved here as sigs.k8s.io/yaml resolves them (YAML 1.1, see
//! [`super::yaml11`]): the value made is the JSON kubectl would have made, before any typed
//! decode. Whether a scalar was plain is read from the source text around it: serde_yaml_ng
//! lends plain and quoted scalars as slices of the text, and a quoted one sits between its
//! quotes. A scalar given back owned (escapes, block scalars, folded lines) is a string.

use super::yaml11::{self, Resolved};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Reads one value from `d`, a deserializer over `text`, refusing duplicate keys; the error
/// names the key and its path (`metadata.name`).
pub fn value<'de, D: Deserializer<'de>>(d: D, text: &'de str) -> Result<Value, D::Error> {
    Strict {
        path: String::new(),
        text,
    }
    .deserialize(d)
}

/// The value at `path`, in `text`.
struct Strict<'t> {
    path: String,
    text: &'t str,
}

/// Whether `v`, a slice of `text`, was written as a plain scalar: not between quotes and not
/// after a tag (`!!str 0400` is a string).
fn is_plain(text: &str, v: &str) -> bool {
    let base = text.as_ptr() as usize;
    let start = v.as_ptr() as usize;
    let Some(offset) = start
        .checked_sub(base)
        .filter(|o| o + v.len() <= text.len())
    else {
        return false;
    };
    let bytes = text.as_bytes();
    let before = offset.checked_sub(1).map(|i| bytes[i]);
    let after = bytes.get(offset + v.len()).copied();
    if matches!(before, Some(b'\'' | b'"')) && before == after {
        return false;
    }
    // The token before the scalar on its line: a tag makes it typed.
    let head = text[..offset].trim_end_matches([' ', '\t']);
    let token = head
        .rsplit([' ', '\t', '\n', '[', '{', ','])
        .next()
        .unwrap_or("");
    !token.starts_with('!')
}

/// `v` as the JSON value sigs.k8s.io/yaml makes, or the error it gives.
fn resolve<E: de::Error>(v: &str, path: &str) -> Result<Value, E> {
    match yaml11::resolve(v) {
        Resolved::Value(value) => Ok(value),
        Resolved::Str => Ok(Value::String(v.to_string())),
        Resolved::NotJson => Err(not_json(v, path)),
    }
}

fn not_json<E: de::Error>(v: impl fmt::Display, path: &str) -> E {
    E::custom(format_args!(
        "{v} (at {path}) is infinite or not a number, which JSON cannot hold: quote it or write a finite number"
    ))
}

impl Strict<'_> {
    fn at(&self, child: &str) -> Self {
        let path = if self.path.is_empty() {
            child.to_string()
        } else if child.starts_with('[') {
            format!("{}{child}", self.path)
        } else {
            format!("{}.{child}", self.path)
        };
        Strict {
            path,
            text: self.text,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'de> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'de> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        // Beyond u64 go-yaml v2 reads a float.
        self.visit_f64(v as f64)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        self.visit_f64(v as f64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        if !v.is_finite() {
            return Err(not_json(v, &self.path));
        }
        Ok(yaml11::json_float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Value, E> {
        if is_plain(self.text, v) {
            return resolve(v, &self.path);
        }
        Ok(Value::String(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.at(&format!("[{}]", out.len())))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(Key {
            path: &self.path,
            text: self.text,
        })? {
            let v = map.next_value_seed(self.at(&k))?;
            if out.contains_key(&k) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{k}` (at {})",
                    self.at(&k).path
                )));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key, made a string as sigs.k8s.io/yaml makes it (`yes:` is `"true"`, `0400:`
/// is `"256"`).
struct Key<'p, 't> {
    path: &'p str,
    text: &'t str,
}

impl<'de> DeserializeSeed<'de> for Key<'_, 'de> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, 'de> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a string, number or bool as a key (in {})", self.path)
    }

    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        if !v.is_finite() {
            return Err(not_json(v, self.path));
        }
        Ok(yaml11::json_float(v).to_string())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<String, E> {
        if !is_plain(self.text, v) {
            return Ok(v.to_string());
        }
        match resolve::<E>(v, self.path)? {
            Value::String(s) => Ok(s),
            Value::Null => Err(E::custom(format_args!(
                "a null key `{v}` (in {}): quote it",
                self.path
            ))),
            other => Ok(other.to_string()),
        }
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(E::custom(format_args!(
            "a null key (in {}): quote it",
            self.path
        )))
    }
}

#[cfg(test)]
mod tests {
    fn read(text: &str) -> Result<serde_json::Value, String> {
        super::value(serde_yaml_ng::Deserializer::from_str(text), text).map_err(|e| e.to_string())
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_path() {
        let e = read("kind: Pod\nmetadata:\n  name: a\n  name: b\n").unwrap_err();
        assert!(e.contains("duplicate key `name` (at metadata.name)"), "{e}");
        let e =
            read("spec:\n  containers:\n  - name: a\n    image: x\n    image: y\n").unwrap_err();
        assert!(e.contains("spec.containers[0].image"), "{e}");
        let e = read(r#"{"kind":"Pod","kind":"ConfigMap"}"#).unwrap_err();
        assert!(e.contains("`kind`"), "{e}");
    }

    #[test]
    fn a_manifest_file_with_a_duplicate_key_is_refused_naming_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("web.yaml");
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox\n    image: evil\n";
        std::fs::write(&f, text).unwrap();
        let e = super::super::diff::read_file(&f, "web.yaml", "node")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("web.yaml: ")
                && e.contains("duplicate key `image` (at spec.containers[0].image)"),
            "{e}"
        );
    }

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let text = "a: 1\nb: -2\nc: 1.5\nd: true\ne: null\nf: [x, {g: h}]\ni: '01'\nj: ~\n";
        let strict = read(text).unwrap();
        let plain: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(strict, plain);
        // The same key in two mappings is no duplicate.
        assert!(read("a: {k: 1}\nb: {k: 2}\n").is_ok());
    }

    fn pod_file(text: &str) -> Result<Vec<super::super::check::Checked>, String> {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pod.yaml");
        std::fs::write(&f, text).unwrap();
        super::super::diff::read_file(&f, "pod.yaml", "node").map_err(|e| e.to_string())
    }

    /// The Kubernetes documentation's own spellings ("Configure a Pod to Use a Secret",
    /// "Secrets": `defaultMode: 0400`, items `mode: 0777`, `0644`).
    #[test]
    fn documentation_octal_modes_are_read_as_kubectl_reads_them() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: mypod\nspec:\n  containers:\n  - name: mypod\n    image: redis\n    volumeMounts:\n    - name: foo\n      mountPath: \"/etc/foo\"\n  volumes:\n  - name: foo\n    secret:\n      secretName: mysecret\n      defaultMode: 0400\n      items:\n      - key: username\n        path: my-group/my-username\n        mode: 0777\n  - name: bar\n    configMap:\n      name: cm\n      defaultMode: 0644\n";
        let pods = pod_file(text).unwrap();
        let spec = &pods[0].value["spec"];
        assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 256);
        assert_eq!(spec["volumes"][0]["secret"]["items"][0]["mode"], 511);
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        let pod: crate::api::Pod = serde_json::from_value(pods[0].value.clone()).unwrap();
        let secret = pod.spec.volumes[0].secret.as_ref().unwrap();
        assert_eq!(secret.default_mode, Some(0o400));
    }

    #[test]
    fn quoted_and_tagged_scalars_stay_strings() {
        let v = read("a: '0400'\nb: \"0400\"\nc: !!str 0400\nd: 0400\ne: \"yes\"\nf: yes\ng: |\n  0400\nh: [0x1f, '0x1f', on]\ni: {k: off}\nj: 1_000\nk: \"a\\tb\"\n").unwrap();
        assert_eq!(v["a"], "0400");
        assert_eq!(v["b"], "0400");
        assert_eq!(v["c"], "0400");
        assert_eq!(v["d"], 256);
        assert_eq!(v["e"], "yes");
        assert_eq!(v["f"], true);
        assert_eq!(v["g"], "0400\n");
        assert_eq!(v["h"], serde_json::json!([31, "0x1f", true]));
        assert_eq!(v["i"]["k"], false);
        assert_eq!(v["j"], 1000);
        assert_eq!(v["k"], "a\tb");
        let v = read(r#"{"a": "0400", "b": 0400, "c": 1.0}"#).unwrap();
        assert_eq!(v, serde_json::json!({"a": "0400", "b": 256, "c": 1}));
    }

    #[test]
    fn keys_are_made_strings_as_sigs_k8s_io_yaml_makes_them() {
        let v = read("yes: a\n0400: b\n'on': c\n1e3: d\n0x10: e\n").unwrap();
        assert_eq!(
            v,
            serde_json::json!({"true": "a", "256": "b", "on": "c", "1000": "d", "16": "e"})
        );
        let e = read("~: a\n").unwrap_err();
        assert!(e.contains("null key"), "{e}");
        // `yes` and `true` are the same key once resolved.
        let e = read("yes: a\ntrue: b\n").unwrap_err();
        assert!(e.contains("duplicate key `true`"), "{e}");
    }

    #[test]
    fn infinity_and_nan_refuse_the_file_as_json_cannot_hold_them() {
        for text in ["v: .inf\n", "v: -.Inf\n", "v: .NaN\n", "a: {b: [.inf]}\n"] {
            let e = read(text).unwrap_err();
            assert!(e.contains("JSON cannot hold"), "{text}: {e}");
        }
        assert!(read("v: '.inf'\n").is_ok());
    }

    /// sigs.k8s.io/yaml makes JSON before the typed decode: an unquoted `0400` or `yes` given
    /// to a string field is a number or a bool there, and the decode refuses it, as the
    /// kubelet does (`cannot unmarshal number into Go struct field EnvVar.value of type
    /// string`).
    #[test]
    fn unquoted_numbers_and_booleans_for_string_fields_are_refused() {
        let pod = |value: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n    env:\n    - name: MODE\n      value: {value}\n")
        };
        for bad in ["0400", "yes", "on", "0x1f"] {
            let e = pod_file(&pod(bad)).unwrap_err();
            assert!(e.contains("env") && e.contains("value"), "{bad}: {e}");
        }
        for good in ["'0400'", "\"yes\"", "plain text"] {
            let pods = pod_file(&pod(good)).unwrap();
            let want = good.trim_matches(['\'', '"']);
            assert_eq!(
                pods[0].value["spec"]["containers"][0]["env"][0]["value"],
                want
            );
        }
    }
}
