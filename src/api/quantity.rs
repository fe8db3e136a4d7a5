//! Kubernetes resource quantities (`500m`, `1.5`, `64Mi`, `1G`, `1e3`).

/// Parses a quantity into its value scaled by `scale` (1000 for millicores, 1 for bytes),
/// rounding up as the kubelet does. `None` when the text is not a quantity.
pub fn parse_scaled(v: &serde_json::Value, scale: f64) -> Option<i64> {
    let text = match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (num, mult) = split_suffix(&text)?;
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Some((n * mult * scale).ceil() as i64)
}

/// CPU in millicores.
pub fn millicores(v: &serde_json::Value) -> Option<i64> {
    parse_scaled(v, 1000.0)
}

/// Memory or storage in bytes.
pub fn bytes(v: &serde_json::Value) -> Option<i64> {
    parse_scaled(v, 1.0)
}

fn split_suffix(s: &str) -> Option<(&str, f64)> {
    const SUFFIXES: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    if s.is_empty() {
        return None;
    }
    for (suf, mult) in SUFFIXES {
        if let Some(num) = s.strip_suffix(suf) {
            return Some((num, mult));
        }
    }
    if let Some(num) = s.strip_suffix('E') {
        return Some((num, 1e18));
    }
    // Plain number, or decimal exponent form (`1e3`), which f64 parsing handles.
    Some((s, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cpu() {
        assert_eq!(millicores(&json!("500m")), Some(500));
        assert_eq!(millicores(&json!("1.5")), Some(1500));
        assert_eq!(millicores(&json!(2)), Some(2000));
        assert_eq!(millicores(&json!("x")), None);
        assert_eq!(millicores(&json!("-1")), None);
    }

    #[test]
    fn memory() {
        assert_eq!(bytes(&json!("64Mi")), Some(64 << 20));
        assert_eq!(bytes(&json!("1G")), Some(1_000_000_000));
        assert_eq!(bytes(&json!("1e3")), Some(1000));
        assert_eq!(bytes(&json!(128)), Some(128));
        assert_eq!(bytes(&json!("")), None);
    }
}
