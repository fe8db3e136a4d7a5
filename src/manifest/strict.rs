//! A JSON value read from YAML (or JSON) that refuses a key written twice in one mapping, as
//! kubectl does (`mapping key "name" already defined`): serde_json's own `Value` keeps the
//! last one silently.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Reads one value from `d`, refusing duplicate keys; the error names the key and its path
/// (`metadata.name`).
pub fn value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Strict {
        path: String::new(),
    }
    .deserialize(d)
}

/// The value at `path`.
struct Strict {
    path: String,
}

impl Strict {
    fn at(&self, child: &str) -> Strict {
        let path = if self.path.is_empty() {
            child.to_string()
        } else if child.starts_with('[') {
            format!("{}{child}", self.path)
        } else {
            format!("{}.{child}", self.path)
        };
        Strict { path }
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
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

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
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
        while let Some(k) = map.next_key::<String>()? {
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

#[cfg(test)]
mod tests {
    fn read(text: &str) -> Result<serde_json::Value, String> {
        super::value(serde_yaml_ng::Deserializer::from_str(text)).map_err(|e| e.to_string())
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
}
