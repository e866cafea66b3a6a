//! Which certificate authorities ws2http trusts when it is the TLS client:
//! `ws2http connect wss://...`, `https://` HTTP backends and the ACME
//! directory. One answer for all three, so an operator learns one rule:
//!
//! - the system's roots (what `ca-certificates` installs: the directories
//!   OpenSSL would look in),
//! - **plus** the certificates of `SSL_CERT_FILE` and `SSL_CERT_DIR` when
//!   set (a test or private CA; added to the system's, not instead of them,
//!   so pointing `SSL_CERT_FILE` at one CA does not cut off the others),
//! - **plus** the certificates of the flag's own file (`--backend-ca`,
//!   `--acme-ca`), when given.
//!
//! Unparsable system certificates are skipped, as every TLS client does; a
//! flag's file that cannot be read or holds no certificate is a start-up
//! error naming the flag. An empty result is an error too: a client that
//! trusts nothing fails every handshake, better said once at start-up.
//! (`--redis-ca` is the exception and does not come here: the redis crate
//! takes one PEM file as its only roots.)

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The trusted roots: system + `SSL_CERT_FILE`/`SSL_CERT_DIR` + `ca_file`
/// (named `flag` in errors, e.g. `--backend-ca`).
pub fn store(ca_file: Option<&Path>, flag: &str) -> Result<RootCertStore, String> {
    let mut certs = system_and_env();
    if let Some(file) = ca_file {
        certs.extend(ca_certificates(file, flag)?);
    }
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(certs);
    if store.is_empty() {
        let give = if flag.is_empty() { String::new() } else { format!(" or give {flag} FILE") };
        return Err(format!(
            "no CA certificate to verify HTTPS servers with: install ca-certificates, point SSL_CERT_FILE at a \
             PEM file{give}"
        ));
    }
    Ok(store)
}

/// A client configuration on [`store`]'s roots: ring, TLS 1.2 and 1.3,
/// ALPN `http/1.1` (the only protocol we speak over it).
pub fn client_config(ca_file: Option<&Path>, flag: &str) -> Result<Arc<ClientConfig>, String> {
    let roots = store(ca_file, flag)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The system's certificates and those of `SSL_CERT_FILE`/`SSL_CERT_DIR`.
/// rustls-native-certs reads the variables *instead of* the system's
/// store, so the system's directories are read again when they are set.
fn system_and_env() -> Vec<CertificateDer<'static>> {
    let native = rustls_native_certs::load_native_certs();
    // A mistyped SSL_CERT_FILE shows here; an unreadable system file too.
    for e in &native.errors {
        log::warn!("CA certificates: {e}");
    }
    let mut certs = native.certs;
    if std::env::var_os("SSL_CERT_FILE").is_some() || std::env::var_os("SSL_CERT_DIR").is_some() {
        for dir in openssl_probe::candidate_cert_dirs() {
            certs.extend(rustls_native_certs::load_certs_from_paths(None, Some(dir)).certs);
        }
    }
    certs
}

/// Every certificate in the PEM file `path`; at least one.
fn ca_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let what = |e: &dyn std::fmt::Display| format!("{flag} {}: {e}", path.display());
    let certs: Vec<_> =
        CertificateDer::pem_file_iter(path).map_err(|e| what(&e))?.collect::<Result<_, _>>().map_err(|e| what(&e))?;
    if certs.is_empty() {
        return Err(what(&"no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ws2http-roots-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_ca_file_adds_to_the_system_roots_and_a_bad_one_is_one_clear_error() {
        let dir = temp_dir("file");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).expect("ca");
        let file = dir.join("ca.pem");
        std::fs::write(&file, ca.cert.pem()).expect("write");
        let without = store(None, "--x-ca").map(|r| r.len()).unwrap_or(0);
        assert_eq!(store(Some(&file), "--x-ca").expect("roots").len(), without + 1);
        let e = store(Some(&dir.join("nope.pem")), "--x-ca").expect_err("missing");
        assert!(e.starts_with("--x-ca ") && e.contains("nope.pem"), "{e}");
        std::fs::write(&file, "not pem\n").expect("write");
        assert!(store(Some(&file), "--x-ca").expect_err("empty").contains("no PEM certificate in it"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
