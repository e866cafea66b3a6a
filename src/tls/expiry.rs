//! When each certificate the listeners serve stops being valid, for
//! `/metrics` (`ws2http_tls_cert_not_after_seconds{domain="..."}`, unix
//! time): an alert on it catches a renewal that silently stopped working
//! long before browsers refuse the site. Filled by [`super::files`] for
//! certificate files and by ACME for its certificates.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Domain -> (end of validity, who set it: "files", "acme").
static NOT_AFTER: Mutex<BTreeMap<String, (i64, &'static str)>> = Mutex::new(BTreeMap::new());

/// Records (or updates) the end of validity of `domain`'s certificate.
pub fn set(domain: &str, not_after_unix: i64) {
    let mut all = NOT_AFTER.lock().unwrap_or_else(|p| p.into_inner());
    all.insert(domain.to_owned(), (not_after_unix, "acme"));
}

/// The certificate `source` serves is now the one for `names`: their
/// entries are set and every other name `source` set before is dropped,
/// so a certificate rotated to other names leaves no stale expiry behind
/// (an alert on it would fire for a name no longer served).
pub fn replace(source: &'static str, names: &[String], not_after_unix: i64) {
    let mut all = NOT_AFTER.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|_, (_, by)| *by != source);
    for name in names {
        all.insert(name.clone(), (not_after_unix, source));
    }
}

/// The end of validity of a DER certificate (unix seconds) and the names
/// it is for (its DNS and IP subject alternative names, else its common
/// name); `None` for what does not parse as X.509.
pub fn of_certificate(der: &[u8]) -> Option<(i64, Vec<String>)> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    names.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).ok()?).to_string())
                }
                GeneralName::IPAddress(b) if b.len() == 16 => {
                    names.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).ok()?).to_string())
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_owned));
    }
    Some((not_after, names))
}

/// The metric, in Prometheus text format (nothing without certificates).
pub fn render(s: &mut String) {
    let all = NOT_AFTER.lock().unwrap_or_else(|p| p.into_inner());
    if all.is_empty() {
        return;
    }
    s.push_str(
        "# HELP ws2http_tls_cert_not_after_seconds When the certificate served for the domain expires (unix time).\n",
    );
    s.push_str("# TYPE ws2http_tls_cert_not_after_seconds gauge\n");
    for (domain, (t, _)) in all.iter() {
        let domain = domain.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = writeln!(s, "ws2http_tls_cert_not_after_seconds{{domain=\"{domain}\"}} {t}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_one_line_per_domain() {
        super::set("a.example", 1_900_000_000);
        super::set("b\"x", 5);
        let mut s = String::new();
        super::render(&mut s);
        assert!(s.contains("ws2http_tls_cert_not_after_seconds{domain=\"a.example\"} 1900000000\n"), "{s}");
        assert!(s.contains("{domain=\"b\\\"x\"} 5\n"), "{s}");
        assert!(super::of_certificate(b"not a certificate").is_none());
    }

    #[test]
    fn a_rotation_to_other_names_drops_the_old_names_only() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        super::set("acme.rotation.test", 7);
        super::replace("files", &names(&["old.rotation.test", "both.rotation.test"]), 100);
        super::replace("files", &names(&["both.rotation.test", "new.rotation.test"]), 200);
        let mut s = String::new();
        super::render(&mut s);
        assert!(!s.contains("old.rotation.test"), "{s}");
        assert!(s.contains("{domain=\"both.rotation.test\"} 200\n"), "{s}");
        assert!(s.contains("{domain=\"new.rotation.test\"} 200\n"), "{s}");
        assert!(s.contains("{domain=\"acme.rotation.test\"} 7\n"), "another source's names stay: {s}");
    }
}
