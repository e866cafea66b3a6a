//! TLS to `https://` HTTP backends: one rustls client configuration for
//! every route, built once at start-up (reading the system's roots takes a
//! few milliseconds and a few hundred certificates' worth of memory, so it
//! is done only when an `https://` URL is given).
//!
//! Which certificates are trusted, in the order an operator expects from
//! curl and other OpenSSL programs: the system's roots, or the file in
//! `SSL_CERT_FILE` (or the directories in `SSL_CERT_DIR`) when set (as
//! OpenSSL does, they replace the system's store: `rustls-native-certs`),
//! plus every certificate of `--backend-ca FILE` (a private CA, a
//! self-signed backend). A certificate none of them signed is refused: the
//! event fails like an unreachable backend (502 for an open), and the log
//! line says which flag fixes it. There is no switch to skip verification.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// What follows a refused certificate in the log line.
pub const HINT: &str = "trust its CA with --backend-ca FILE (or SSL_CERT_FILE)";

/// The client configuration: system roots (or `SSL_CERT_FILE`) plus the
/// certificates of `ca_file`; ALPN `http/1.1`, the only protocol we speak.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        log::warn!("system CA certificates: {e}");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = ca_certificates(path)?;
        for cert in certs {
            roots.add(cert).map_err(|e| format!("--backend-ca {}: not a CA certificate ({e})", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "https:// backend: no trusted CA certificate ({added} from the system; is ca-certificates \
             installed?); give one with --backend-ca FILE"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file `path`; at least one.
fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let what = |e: &dyn std::fmt::Display| format!("--backend-ca {}: {e}", path.display());
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

    #[test]
    fn a_missing_or_empty_ca_file_is_one_clear_error() {
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).expect_err("missing");
        assert!(e.starts_with("--backend-ca /nonexistent/ca.pem: "), "{e}");
        let dir = std::env::temp_dir().join(format!("ws2http-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = client_config(Some(&empty)).expect_err("empty");
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
