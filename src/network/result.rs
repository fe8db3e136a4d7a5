//! What plugins print: a result (CNI 0.1/0.2 `ip4`/`ip6`, or 0.3 and later `interfaces` +
//! `ips`), the pod's IPs taken from it, and an error (`code`, `msg`, `details`) turned into
//! one clear message. Parsers of plugin output: nothing here panics, whatever the bytes.

use serde_json::Value;
use std::net::IpAddr;

/// Parses a plugin's successful output: a JSON object.
pub fn parse(stdout: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(stdout) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("the plugin's result is not a JSON object".into()),
        Err(e) => Err(format!("the plugin's result is not JSON: {e}")),
    }
}

/// The address of `a.b.c.d/len` (or a bare address).
fn address(s: &str) -> Option<IpAddr> {
    s.split('/').next()?.trim().parse().ok()
}

/// The pod's IPs in a result: the addresses on interface `ifname` inside the sandbox (an
/// address naming no interface counts too; CNI 0.1/0.2 results have `ip4`/`ip6`), IPv4
/// ones first, as containerd orders a pod's IPs. Duplicates are dropped.
pub fn pod_ips(result: &Value, ifname: &str) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        let ifaces = result
            .get("interfaces")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for ip in ips {
            let on_pod_iface = match ip.get("interface").and_then(Value::as_u64) {
                None => true,
                Some(i) => usize::try_from(i)
                    .ok()
                    .and_then(|i| ifaces.get(i))
                    .is_some_and(|f| {
                        f.get("name").and_then(Value::as_str) == Some(ifname)
                            && f.get("sandbox")
                                .and_then(Value::as_str)
                                .is_some_and(|s| !s.is_empty())
                    }),
            };
            if on_pod_iface {
                found.extend(ip.get("address").and_then(Value::as_str).and_then(address));
            }
        }
    } else {
        for key in ["ip4", "ip6"] {
            found.extend(
                result
                    .get(key)
                    .and_then(|v| v.get("ip"))
                    .and_then(Value::as_str)
                    .and_then(address),
            );
        }
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in found
        .iter()
        .filter(|i| i.is_ipv4())
        .chain(found.iter().filter(|i| i.is_ipv6()))
    {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// The message of a failed plugin: its CNI error (`{"code":..,"msg":..,"details":..}` on
/// stdout) when it printed one, else what it wrote on stderr, else its exit status.
pub fn error_message(stdout: &[u8], stderr: &[u8], status: &str) -> String {
    if let Ok(Value::Object(e)) = serde_json::from_slice::<Value>(stdout) {
        let msg = e.get("msg").and_then(Value::as_str).unwrap_or("").trim();
        let details = e
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        let code = e.get("code").and_then(Value::as_u64);
        if !msg.is_empty() || code.is_some() {
            let mut out = match code {
                Some(c) => format!("{msg} (CNI error {c}: {})", code_name(c)),
                None => msg.to_string(),
            };
            if !details.is_empty() {
                out.push_str(&format!("; {details}"));
            }
            return out;
        }
    }
    let text = |b: &[u8]| -> String {
        let s = String::from_utf8_lossy(b);
        let s = s.trim();
        // One line of a reasonable length: it goes into the pod's status.
        let s = s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if s.chars().count() > 512 {
            format!("{}...", s.chars().take(512).collect::<String>())
        } else {
            s
        }
    };
    let err = text(stderr);
    if !err.is_empty() {
        return format!("{err} ({status})");
    }
    let out = text(stdout);
    if !out.is_empty() {
        return format!("{out} ({status})");
    }
    status.to_string()
}

/// The spec's name of a well-known error code.
fn code_name(code: u64) -> &'static str {
    match code {
        1 => "incompatible CNI version",
        2 => "unsupported field in network configuration",
        3 => "container unknown or does not exist",
        4 => "invalid environment variables",
        5 => "I/O failure",
        6 => "failed to decode content",
        7 => "invalid network config",
        11 => "try again later",
        50 => "plugin not available",
        51 => "limited connectivity",
        _ => "plugin-specific error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ips(v: &[IpAddr]) -> Vec<String> {
        v.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn pod_ips_from_each_result_version() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            // 1.0.0 from bridge: the host-side bridge and veth have no sandbox.
            (
                json!({"cniVersion":"1.0.0","interfaces":[
                    {"name":"cni0","mac":"aa"},{"name":"veth1","mac":"bb"},
                    {"name":"eth0","mac":"cc","sandbox":"/run/netns/x"}],
                  "ips":[{"address":"10.22.0.5/16","gateway":"10.22.0.1","interface":2},
                         {"address":"fd00::5/64","interface":2},
                         {"address":"10.9.9.9/16","interface":0}]}),
                vec!["10.22.0.5", "fd00::5"],
            ),
            // IPv6 listed first: IPv4 still comes first.
            (
                json!({"ips":[{"address":"fd00::7/64"},{"address":"10.0.0.7/24"}]}),
                vec!["10.0.0.7", "fd00::7"],
            ),
            // 0.2.0.
            (
                json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.3/24"},"ip6":{"ip":"2001:db8::3/64"}}),
                vec!["10.1.0.3", "2001:db8::3"],
            ),
            // Interface index out of range, junk addresses, duplicates.
            (
                json!({"interfaces":[],"ips":[{"address":"10.0.0.1/8","interface":7},
                      {"address":"nope"},{"address":5},{"address":"10.0.0.2/8"},{"address":"10.0.0.2/8"}]}),
                vec!["10.0.0.2"],
            ),
            (json!({}), vec![]),
            (json!({"ips": "x", "ip4": 1}), vec![]),
        ];
        for (r, want) in cases {
            assert_eq!(ips(&pod_ips(&r, "eth0")), want, "{r}");
        }
    }

    #[test]
    fn results_must_be_objects() {
        assert!(parse(br#"{"ips":[]}"#).is_ok());
        assert!(parse(b"[]").unwrap_err().contains("not a JSON object"));
        assert!(parse(b"").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn errors_read_as_one_message() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (
                br#"{"cniVersion":"1.0.0","code":7,"msg":"bad subnet","details":"10.0.0.0/33"}"#,
                b"",
                "bad subnet (CNI error 7: invalid network config); 10.0.0.0/33",
            ),
            (
                br#"{"code":999,"msg":"x"}"#,
                b"",
                "x (CNI error 999: plugin-specific error)",
            ),
            (br#"{"msg":"only msg"}"#, b"ignored", "only msg"),
            (
                b"not json",
                b"panic: boom\n\nat x\n",
                "panic: boom; at x (exit status 2)",
            ),
            (b"plain out", b"", "plain out (exit status 2)"),
            (b"", b"", "exit status 2"),
        ];
        for (out, err, want) in cases {
            assert_eq!(error_message(out, err, "exit status 2"), *want);
        }
        let long = vec![b'a'; 5000];
        assert!(error_message(b"", &long, "s").len() < 600);
    }
}
