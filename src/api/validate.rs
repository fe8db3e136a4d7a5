//! Name checks as the API server makes them (DNS-1123).

/// A DNS-1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric. Namespaces,
/// container and volume names.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("`{s}` must be 1-63 characters"));
    }
    check_label(s)
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated labels. Pod, ConfigMap and
/// Secret names.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("`{s}` must be 1-253 characters"));
    }
    for part in s.split('.') {
        check_label(part).map_err(|_| {
            format!(
                "`{s}` must be lower-case alphanumeric, '-' or '.', and start and end alphanumeric"
            )
        })?;
    }
    Ok(())
}

fn check_label(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` must be lower-case alphanumeric or '-', and start and end alphanumeric"
        ))
    }
}

/// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253, not `.` or `..`.
pub fn config_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key `{s}` must consist of alphanumerics, '-', '_' or '.'"
        ))
    }
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name at
/// most 63 of `[-._a-zA-Z0-9]`, starting and ending alphanumeric.
pub fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        dns1123_subdomain(p).map_err(|e| format!("key `{s}`: prefix {e}"))?;
    }
    if name.is_empty() || name.len() > 63 || !label_chars(name) {
        return Err(format!(
            "key `{s}`: the name part must be 1-63 of alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 of `[-._a-zA-Z0-9]`, starting and ending alphanumeric.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || (s.len() <= 63 && label_chars(s)) {
        Ok(())
    } else {
        Err(format!(
            "value `{s}` must be at most 63 of alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

fn label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_label("web-1").is_ok());
        assert!(dns1123_label("Web").is_err());
        assert!(dns1123_label("-a").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_subdomain("a.b-c.d").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(config_key("app.conf").is_ok());
        assert!(config_key("../x").is_err());
        assert!(qualified_name("app").is_ok());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("Bad Key").is_err());
        assert!(qualified_name("UPPER.io/x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("my app").is_err());
    }
}
