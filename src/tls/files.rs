//! `--tls-cert FILE --tls-key FILE`: the certificate chain and its key,
//! in PEM, checked at start-up (a missing file, a file without PEM in it or
//! a key that is not the certificate's: one line saying which and what to
//! do), then re-read whenever either file changes (looked at every second)
//! or on SIGHUP, so that certbot, or any renewal job, needs no restart.
//! Connections in flight keep the session they have; new handshakes get
//! the new pair. A new pair that does not load is logged and the old one
//! kept: a renewal job caught between writing the certificate and the key
//! costs nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are looked at.
const POLL: Duration = Duration::from_secs(1);

/// Loads the pair: the chain of `cert` (leaf first) and the private key in
/// `key` (PKCS#8, PKCS#1 or SEC1), which must be the certificate's.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let fix = "give the PEM certificate chain (leaf first) in --tls-cert and its private key in --tls-key";
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|all| all.collect::<Result<_, _>>())
        .map_err(|e| format!("--tls-cert {}: {}; {fix}", cert.display(), pem_error(e)))?;
    if chain.is_empty() {
        return Err(format!("--tls-cert {}: no CERTIFICATE in it; {fix}", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {}; {fix}", key.display(), pem_error(e)))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, der, &provider)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "--tls-key {} is not the key of the certificate in --tls-cert {}; give the key the certificate was \
             issued for",
                key.display(),
                cert.display()
            ),
            e => format!("--tls-cert {} / --tls-key {}: {e}; {fix}", cert.display(), key.display()),
        })
        .map(Arc::new)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => format!("cannot read it ({e})"),
        Error::NoItemsFound => "no PEM private key in it".to_owned(),
        e => format!("not valid PEM ({e:?})"),
    }
}

/// Serves the pair loaded last.
#[derive(Debug)]
pub struct FileResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for FileResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Loads the pair (a start-up error when it does not load), records its
/// expiry, and starts watching the files for a new pair.
pub fn start(cert: &Path, key: &Path) -> Result<Arc<FileResolver>, String> {
    let pair = load(cert, key)?;
    note_expiry(&pair);
    let resolver = Arc::new(FileResolver { current: RwLock::new(pair) });
    let hup = async_signal::Signals::new([async_signal::Signal::Hup]).map_err(|e| {
        format!("cannot install the SIGHUP handler (--tls-cert reload): {e}; an internal error, please report it")
    })?;
    let watch = Watch { cert: cert.to_owned(), key: key.to_owned(), stamps: stamps(cert, key) };
    crate::runtime::spawn(watch.run(resolver.clone(), hup));
    Ok(resolver)
}

/// Records the leaf certificate's end of validity under each of its names.
fn note_expiry(pair: &CertifiedKey) {
    // A leaf that does not parse names nothing: the old names go all the same.
    let (not_after, names) =
        pair.cert.first().and_then(|c| super::expiry::of_certificate(c)).unwrap_or((0, Vec::new()));
    // The names of the previous pair that this one lacks are dropped.
    super::expiry::replace("files", &names, not_after);
}

/// What tells a file changed: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamps(cert: &Path, key: &Path) -> [Stamp; 2] {
    let stamp = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
    [stamp(cert), stamp(key)]
}

struct Watch {
    cert: PathBuf,
    key: PathBuf,
    /// The files as last loaded (or last tried).
    stamps: [Stamp; 2],
}

impl Watch {
    async fn run(mut self, resolver: Arc<FileResolver>, mut hup: async_signal::Signals) {
        use futures_lite::StreamExt;
        let mut tick = crate::runtime::Interval::new(POLL);
        loop {
            let signalled = futures_lite::future::or(async { hup.next().await.is_some() }, async {
                tick.tick().await;
                false
            })
            .await;
            let now = stamps(&self.cert, &self.key);
            if signalled || now != self.stamps {
                self.stamps = now;
                self.reload(&resolver, if signalled { "SIGHUP" } else { "the files changed" });
            }
        }
    }

    fn reload(&self, resolver: &FileResolver, why: &str) {
        match load(&self.cert, &self.key) {
            Ok(pair) => {
                note_expiry(&pair);
                *resolver.current.write().unwrap_or_else(|p| p.into_inner()) = pair;
                log::info!("TLS certificate reloaded from {} ({why})", self.cert.display());
            }
            Err(e) => log::error!("TLS certificate not reloaded ({why}), the old one is kept: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair for `names`, written to `dir` as cert.pem/key.pem.
    fn pair(dir: &Path, names: &[&str]) -> Arc<CertifiedKey> {
        let c = rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("a certificate");
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).expect("write key");
        load(&dir.join("cert.pem"), &dir.join("key.pem")).expect("the pair loads")
    }

    #[test]
    fn a_reload_with_other_names_drops_the_old_names_from_metrics() {
        let dir = std::env::temp_dir().join(format!("ws2http-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        note_expiry(&pair(&dir, &["old.files.test", "kept.files.test"]));
        note_expiry(&pair(&dir, &["kept.files.test", "new.files.test"]));
        let mut s = String::new();
        super::super::expiry::render(&mut s);
        assert!(!s.contains("old.files.test"), "{s}");
        assert!(s.contains("{domain=\"kept.files.test\"}") && s.contains("{domain=\"new.files.test\"}"), "{s}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
