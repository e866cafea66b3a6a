//! TLS to `https://` HTTP backends: one rustls client configuration for
//! every route, built once at start-up (reading the system's roots takes a
//! few milliseconds and a few hundred certificates' worth of memory, so it
//! is done only when an `https://` URL is given).
//!
//! Which certificates are trusted is [`crate::tls::roots`]' one rule: the
//! system's roots, plus `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, plus
//! every certificate of `--backend-ca FILE` (a private CA, a self-signed
//! backend). A certificate none of them signed is refused: the event fails
//! like an unreachable backend (502 for an open), and the log line says
//! which flag fixes it. There is no switch to skip verification.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;

/// What follows a refused certificate in the log line.
pub const HINT: &str = "trust its CA with --backend-ca FILE (or SSL_CERT_FILE)";

/// The client configuration: the trusted roots plus the certificates of
/// `ca_file`; ALPN `http/1.1`, the only protocol we speak.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    crate::tls::roots::client_config(ca_file, "--backend-ca").map_err(|e| match ca_file {
        Some(_) if e.starts_with("--backend-ca") => e,
        _ => format!("https:// backend: {e}"),
    })
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
