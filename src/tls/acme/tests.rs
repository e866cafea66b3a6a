use super::*;

fn args(domains: &[&str]) -> AcmeArgs {
    AcmeArgs { acme: domains.iter().map(|d| d.to_string()).collect(), ..AcmeArgs::default() }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ws2http-acme-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn domains_are_checked_and_normalised() {
    assert_eq!(domain("Example.COM.").unwrap(), "example.com");
    assert_eq!(domain("xn--bcher-kva.example").unwrap(), "xn--bcher-kva.example");
    for bad in ["*.example.com", "127.0.0.1", "::1", "exa mple.com", "-a.example", "a..example", "", "a/b"] {
        let e = domain(bad).unwrap_err();
        assert!(e.starts_with(&format!("--acme {bad:?}: ")), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn email_becomes_a_mailto_contact() {
    assert_eq!(email("admin@example.com").unwrap(), "mailto:admin@example.com");
    assert_eq!(email("mailto:admin@example.com").unwrap(), "mailto:admin@example.com");
    for bad in ["admin", "@example.com", "a@b", "a@b.c,d@e.f"] {
        assert!(email(bad).unwrap_err().starts_with("--acme-email"), "{bad}");
    }
}

#[test]
fn acme_flags_without_a_domain_are_refused() {
    assert!(AcmeArgs::default().settings().unwrap().is_none());
    let only_email = AcmeArgs { acme_email: Some("a@example.com".into()), ..AcmeArgs::default() };
    assert!(only_email.settings().unwrap_err().contains("need --acme DOMAIN"));
}

#[test]
fn settings_default_to_production_and_create_a_private_cache() {
    let dir = temp_dir("settings").join("nested/acme");
    let a = AcmeArgs { acme_cache: Some(dir.clone()), ..args(&["example.com", "WWW.example.com", "example.com"]) };
    let s = a.settings().unwrap().unwrap();
    assert_eq!(s.domains, ["example.com", "www.example.com"]);
    assert_eq!(s.directory, LETS_ENCRYPT_PRODUCTION);
    assert!(s.contact.is_empty());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let plain = AcmeArgs { acme_directory: Some("http://ca.example/dir".into()), ..a.clone() };
    assert!(plain.settings().unwrap_err().contains("not an https:// URL"));
}

#[test]
fn a_cache_others_can_read_is_refused_not_changed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let a = AcmeArgs { acme_cache: Some(dir.clone()), ..args(&["example.com"]) };
    let e = a.settings().unwrap_err();
    assert!(e.contains("mode 755") && e.contains("chmod 700"), "{e}");
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o755);
}

#[test]
fn acme_ca_adds_its_certificates_and_a_bad_file_is_one_clear_error() {
    let dir = temp_dir("ca");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
    let file = dir.join("ca.pem");
    std::fs::write(&file, ca.cert.pem()).unwrap();
    let without = roots(None, "--acme-ca").map(|r| r.len()).unwrap_or(0);
    assert_eq!(roots(Some(&file), "--acme-ca").unwrap().len(), without + 1);
    let missing = roots(Some(&dir.join("nope.pem")), "--acme-ca").unwrap_err();
    assert!(missing.starts_with("--acme-ca ") && missing.contains("nope.pem"), "{missing}");
    std::fs::write(&file, "not pem").unwrap();
    assert!(roots(Some(&file), "--acme-ca").unwrap_err().contains("no PEM certificate in it"));
}

#[test]
fn validity_reads_the_leaf_after_the_private_key() {
    let mut params = rcgen::CertificateParams::new(vec!["example.com".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2030, 1, 1);
    params.not_after = rcgen::date_time_ymd(2030, 1, 7);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = format!("{}\n{}", key.serialize_pem(), cert.pem());
    let (from, to) = validity(pem.as_bytes()).unwrap();
    assert_eq!((from, to), (1_893_456_000, 1_893_456_000 + 6 * 86_400));
    // A 6-day certificate renews with 2 days left; a 90-day one with 30.
    assert_eq!(renewal_time(from, to), to - 2 * 86_400);
    assert_eq!(renewal_time(0, 90 * 86_400), 60 * 86_400);
}

#[test]
fn a_listener_the_ca_cannot_reach_on_443_is_warned_about() {
    let dir = temp_dir("warn");
    let s = AcmeArgs { acme_cache: Some(dir), ..args(&["example.com"]) }.settings().unwrap().unwrap();
    assert!(listen_warning(&s, &["0.0.0.0:443"]).is_none());
    assert!(listen_warning(&s, &["0.0.0.0:8443", "[::]:443"]).is_none());
    let loopback = listen_warning(&s, &["127.0.0.1:443"]).unwrap();
    assert!(loopback.contains("loopback") && loopback.starts_with("--acme example.com: "), "{loopback}");
    assert!(listen_warning(&s, &["0.0.0.0:8443"]).unwrap().contains("not on it; forward port 443"));
}

#[test]
fn a_certificate_file_the_cache_cannot_hold_is_a_start_up_error() {
    let dir = temp_dir("probe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // The directory URL's subdirectory is taken by a file.
    std::fs::write(dir.join("acme-v02.api.letsencrypt.org_directory"), b"").unwrap();
    let a = AcmeArgs { acme_cache: Some(dir.clone()), ..args(&["example.com"]) };
    let e = a.settings().unwrap_err();
    assert!(e.starts_with("--acme-cache: cannot write the certificate file "), "{e}");
    assert!(e.contains("cert-example.com.pem"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
