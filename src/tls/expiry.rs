//! When each certificate the listener serves stops being valid, for
//! `/metrics` (`ws2http_tls_cert_not_after_seconds{domain="..."}`, unix
//! time). An operator alerts on it (`... - time() < 7 * 86400`) whether
//! the certificate comes from files an outside tool renews or from ACME:
//! a renewal that silently keeps failing shows here weeks before browsers
//! refuse the site.
//!
//! A process-wide registry, written by whoever loads a certificate (rare),
//! read by each `/metrics` request.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

static NOT_AFTER: Mutex<BTreeMap<String, i64>> = Mutex::new(BTreeMap::new());

/// Records that `domain`'s certificate (the one now served) expires at
/// `not_after_unix` (seconds since the epoch); replaces the previous one.
pub fn set(domain: &str, not_after_unix: i64) {
    if let Ok(mut map) = NOT_AFTER.lock() {
        map.insert(domain.to_owned(), not_after_unix);
    }
}

/// `domain`'s recorded expiry.
pub fn get(domain: &str) -> Option<i64> {
    NOT_AFTER.lock().ok()?.get(domain).copied()
}

/// Appends the gauge, one sample per domain (nothing without certificates).
pub fn render(out: &mut String) {
    let Ok(map) = NOT_AFTER.lock() else { return };
    if map.is_empty() {
        return;
    }
    let name = "ws2http_tls_cert_not_after_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} When the certificate served for a domain expires (unix time).\n# TYPE {name} gauge"
    );
    for (domain, at) in map.iter() {
        let _ = writeln!(out, "{name}{{domain=\"{}\"}} {at}", label_value(domain));
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_sample_per_domain_with_the_latest_value() {
        set("expiry-test.example", 1);
        set("expiry-test.example", 1_900_000_000);
        set("expiry-\"odd\".example", 5);
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains("# TYPE ws2http_tls_cert_not_after_seconds gauge\n"), "{out}");
        assert!(out.contains("ws2http_tls_cert_not_after_seconds{domain=\"expiry-test.example\"} 1900000000\n"));
        assert!(out.contains("{domain=\"expiry-\\\"odd\\\".example\"} 5\n"), "{out}");
        assert_eq!(get("expiry-test.example"), Some(1_900_000_000));
    }
}
