//! Plain YAML scalars resolved as kubectl and the kubelet resolve them.
//!
//! Both read a manifest with sigs.k8s.io/yaml, which parses YAML with go-yaml v2 (YAML 1.1
//! rules) and writes JSON before any typed decode. serde_yaml_ng follows YAML 1.2, where
//! `0400` is a string; under go-yaml v2 it is the octal 256, `yes`/`on`/`y` are `true`,
//! `1_000` is 1000, and so on. The facts here were recorded from sigs.k8s.io/yaml v1.6.0
//! (go.yaml.in/yaml/v2 v2.4.2, `resolve.go`) with `YAMLToJSON`; the tests keep them.
//!
//! Only plain (unquoted, untagged) scalars are resolved: `'0400'` stays a string. Timestamps
//! stay strings (go-yaml v2 gives them back as strings to an untyped target), sexagesimal
//! `190:20:30` is a string (go-yaml v2 does not read it), and `.inf`/`.nan` cannot be written
//! as JSON, so sigs.k8s.io/yaml refuses the whole file: so does [`resolve`].

use serde_json::{Number, Value};

/// What a plain scalar is under go-yaml v2, as the JSON sigs.k8s.io/yaml writes for it.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    /// A JSON value other than a string (`null`, a bool or a number).
    Value(Value),
    /// A string: the text as written.
    Str,
    /// A float JSON cannot hold (`.inf`, `-.inf`, `.nan`).
    NotJson,
}

/// Resolves the plain scalar `s` as go-yaml v2 does, then as sigs.k8s.io/yaml writes JSON.
pub fn resolve(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Value(Value::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Resolved::Value(Value::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Resolved::Value(Value::Bool(false))
        }
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
        | "-.inf" | "-.Inf" | "-.INF" => return Resolved::NotJson,
        _ => {}
    }
    match s.as_bytes()[0] {
        b'.' => match float(s) {
            Some(f) => Resolved::Value(json_float(f)),
            None => Resolved::Str,
        },
        b'0'..=b'9' | b'+' | b'-' => {
            if looks_like_timestamp(s) {
                return Resolved::Str;
            }
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            if let Some(n) = go_int(&plain) {
                return Resolved::Value(Value::Number(n));
            }
            match float(&plain) {
                Some(f) => Resolved::Value(json_float(f)),
                None => Resolved::Str,
            }
        }
        _ => Resolved::Str,
    }
}

/// The JSON number sigs.k8s.io/yaml writes for a float: Go's encoder writes an integral
/// float without a fraction (`1.0` as `1`, `1e3` as `1000`), so the typed decode reads it
/// as an integer.
pub fn json_float(f: f64) -> Value {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() == 0.0 && f.abs() < TWO_63 {
        // In range and integral: the cast is exact.
        return Value::Number((f as i64).into());
    }
    if f.fract() == 0.0 && (0.0..2.0 * TWO_63).contains(&f) {
        return Value::Number((f as u64).into());
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// `yyyy-` followed by more: go-yaml v2 tries a timestamp first and hands it back as a
/// string; the YAML 1.1 timestamp forms never parse as numbers, so a string either way.
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint(s, 0, 64)`: an optional sign, then
/// `0x`/`0X` hex, `0o`/`0O` or a leading `0` octal, `0b`/`0B` binary, or decimal.
fn go_int(s: &str) -> Option<Number> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &body[2..]),
        Some("0o") => (8, &body[2..]),
        Some("0b") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok()?;
    if negative {
        let v = i64::try_from(magnitude).ok().map(|m| -m).or_else(|| {
            // i64::MIN has no positive counterpart.
            (magnitude == 1u128 << 63).then_some(i64::MIN)
        })?;
        Some(v.into())
    } else if s.starts_with('+') {
        // ParseUint takes no sign: `+` then beyond i64 is no integer.
        i64::try_from(magnitude).ok().map(Number::from)
    } else {
        u64::try_from(magnitude).ok().map(Number::from)
    }
}

/// go-yaml v2's float form `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`, parsed;
/// none when out of range (Go's `ParseFloat` fails there).
fn float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return None;
        }
    } else {
        if digits(&mut i) == 0 {
            return None;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain scalars and the JSON sigs.k8s.io/yaml v1.6.0 `YAMLToJSON` wrote for `v: <scalar>`
    /// (recorded with a Go program; `!` marks the file refused: JSON has no infinity or NaN).
    const GO_YAML_V2: &[(&str, &str)] = &[
        ("0400", "256"),
        ("0777", "511"),
        ("0644", "420"),
        ("0x1ff", "511"),
        ("0X1ff", "511"),
        ("0o400", "256"),
        ("0O400", "256"),
        ("0b101", "5"),
        ("-0b101", "-5"),
        ("+0b101", "5"),
        ("1_000", "1000"),
        ("0x_1f", "31"),
        ("0_400", "256"),
        ("09", "9"),
        ("0", "0"),
        ("-0", "0"),
        ("00", "0"),
        ("-0400", "-256"),
        ("+0400", "256"),
        ("190:20:30", "\"190:20:30\""),
        ("1:20", "\"1:20\""),
        ("y", "true"),
        ("Y", "true"),
        ("yes", "true"),
        ("Yes", "true"),
        ("YES", "true"),
        ("n", "false"),
        ("N", "false"),
        ("no", "false"),
        ("No", "false"),
        ("NO", "false"),
        ("true", "true"),
        ("True", "true"),
        ("TRUE", "true"),
        ("tRUE", "\"tRUE\""),
        ("on", "true"),
        ("On", "true"),
        ("ON", "true"),
        ("off", "false"),
        ("Off", "false"),
        ("OFF", "false"),
        ("false", "false"),
        ("~", "null"),
        ("null", "null"),
        ("Null", "null"),
        ("NULL", "null"),
        ("", "null"),
        (".inf", "!"),
        ("-.inf", "!"),
        ("+.inf", "!"),
        (".Inf", "!"),
        (".INF", "!"),
        (".nan", "!"),
        (".NaN", "!"),
        (".NAN", "!"),
        ("1e3", "1000"),
        ("1.0", "1"),
        ("1.5", "1.5"),
        ("1.", "1"),
        (".5", "0.5"),
        ("-1", "-1"),
        ("+1", "1"),
        ("9223372036854775807", "9223372036854775807"),
        ("9223372036854775808", "9223372036854775808"),
        ("18446744073709551615", "18446744073709551615"),
        ("0x8000000000000000", "9223372036854775808"),
        ("1_0.5", "10.5"),
        ("0x", "\"0x\""),
        ("0b", "\"0b\""),
        ("0o", "\"0o\""),
        ("0b2", "\"0b2\""),
        ("1__0", "10"),
        ("_1", "\"_1\""),
        ("1_", "1"),
        ("0xFF_FF", "65535"),
        ("yES", "\"yES\""),
        ("O", "\"O\""),
        ("inf", "\"inf\""),
        ("nan", "\"nan\""),
        ("1e", "\"1e\""),
        ("1E3", "1000"),
        ("-1.5e-3", "-0.0015"),
        ("0.1_5", "0.15"),
        ("0x1p3", "\"0x1p3\""),
        ("1i", "\"1i\""),
        ("Yes please", "\"Yes please\""),
        ("2024-01-02", "\"2024-01-02\""),
    ];

    #[test]
    fn plain_scalars_resolve_as_go_yaml_v2_does() {
        for (scalar, want) in GO_YAML_V2 {
            let got = match resolve(scalar) {
                Resolved::Value(v) => v.to_string(),
                Resolved::Str => Value::String(scalar.to_string()).to_string(),
                Resolved::NotJson => "!".to_string(),
            };
            assert_eq!(&got, want, "{scalar:?}");
        }
    }

    #[test]
    fn floats_are_written_as_go_writes_them() {
        assert_eq!(json_float(1000.0), Value::from(1000));
        assert_eq!(json_float(-2.0), Value::from(-2));
        assert_eq!(json_float(1.5), Value::from(1.5));
        assert_eq!(json_float(1e19), Value::from(10_000_000_000_000_000_000u64));
        assert!(json_float(1e21).is_f64());
    }
}
