//! Certificates obtained and renewed automatically (`--acme DOMAIN`), so a
//! hobby app on a VPS serves `https://` and `wss://` with no certbot and no
//! proxy in front.
//!
//! rustls-acme does the protocol (RFC 8555) and answers the TLS-ALPN-01
//! challenge (RFC 8737) from the resolver this module hands the listener:
//! the CA connects to the listener's own port asking for ALPN `acme-tls/1`
//! and gets the challenge certificate; the listener closes such a
//! connection after the handshake, it is never served. No port 80 needed.
//!
//! The contract and how rustls-acme 0.15 meets it (checked in its
//! `state.rs`):
//! - renewal when a third of the certificate's lifetime is left: its
//!   timer fires at `not_after - (not_after - not_before) / 3`, the same
//!   rule, so a 90-day certificate renews 30 days before it expires and a
//!   6-day one 2 days before;
//! - the old certificate keeps being served while a renewal runs: the
//!   resolver only swaps in the new one once it is issued;
//! - a failed order is retried after 1, 2, 4 … seconds, at most ~18 hours.
//!
//! One log line per step: the cache (`acme/cache.rs`) logs what it
//! finds and stores, this module's driver each deployment (with expiry and
//! renewal date), each renewal start and each error, and rustls-acme's own
//! lines (target `rustls_acme`: challenge triggered, authorizations done,
//! CSR sent, certificate downloaded) are on at the default log level.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_acme::{AcmeConfig, AcmeState, EventOk, ResolvesServerCertAcme};

use super::expiry;
use cache::{FileCache, Seen};

mod cache;

pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The ALPN protocol of a TLS-ALPN-01 challenge connection.
pub use super::ACME_TLS_ALPN;

/// The ACME flags, as typed.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = super::HELP_HEADING)]
pub struct AcmeArgs {
    /// Obtain the HTTPS certificate for DOMAIN automatically (ACME, TLS-ALPN-01 on the listener's own port,
    /// which must be reachable as DOMAIN:443); repeat for more names on one certificate
    #[arg(
        long = "acme",
        env = "WS2HTTP_ACME",
        value_name = "DOMAIN",
        value_delimiter = ',',
        conflicts_with = "tls_cert"
    )]
    pub acme: Vec<String>,
    /// Contact address given to the ACME CA (expiry warnings, policy changes)
    #[arg(long, env = "WS2HTTP_ACME_EMAIL", value_name = "ADDRESS")]
    pub acme_email: Option<String>,
    /// ACME directory URL [default: Let's Encrypt production; staging, for trials:
    /// https://acme-staging-v02.api.letsencrypt.org/directory]
    #[arg(long, env = "WS2HTTP_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Where the account key and certificates are kept (created 0700) [default: $STATE_DIRECTORY/acme under
    /// systemd, else $XDG_STATE_HOME/ws2http/acme or ~/.local/state/ws2http/acme]
    #[arg(long, env = "WS2HTTP_ACME_CACHE", value_name = "DIR")]
    pub acme_cache: Option<PathBuf>,
    /// Also trust this CA (PEM) for the ACME directory's HTTPS, besides the system roots and SSL_CERT_FILE
    #[arg(long, env = "WS2HTTP_ACME_CA", value_name = "FILE")]
    pub acme_ca: Option<PathBuf>,
}

/// Checked ACME settings.
#[derive(Clone)]
pub struct Settings {
    /// Lower case, no trailing dot; the first names the certificate in logs.
    pub domains: Vec<String>,
    /// `mailto:` URLs.
    pub contact: Vec<String>,
    pub directory: String,
    /// Exists, mode 0700.
    pub cache: PathBuf,
    /// For the directory's HTTPS.
    pub roots: Arc<RootCertStore>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("domains", &self.domains)
            .field("directory", &self.directory)
            .field("cache", &self.cache)
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl AcmeArgs {
    /// `None` without `--acme`; every error is one line saying what to do.
    /// Creates the cache directory and reads the CA files (start-up errors,
    /// not a failure hours later).
    pub fn settings(&self) -> Result<Option<Settings>, String> {
        if self.acme.is_empty() {
            return match (&self.acme_email, &self.acme_directory, &self.acme_cache, &self.acme_ca) {
                (None, None, None, None) => Ok(None),
                _ => Err("--acme-email, --acme-directory, --acme-cache and --acme-ca need --acme DOMAIN".into()),
            };
        }
        let mut domains = Vec::new();
        for d in &self.acme {
            let d = domain(d)?;
            if !domains.contains(&d) {
                domains.push(d);
            }
        }
        let contact = match &self.acme_email {
            Some(e) => vec![email(e)?],
            None => Vec::new(),
        };
        let directory = self.acme_directory.clone().unwrap_or_else(|| LETS_ENCRYPT_PRODUCTION.to_owned());
        if !directory.starts_with("https://") || directory.len() <= "https://".len() {
            return Err(format!("--acme-directory {directory:?}: not an https:// URL (ACME runs over HTTPS only), e.g. {LETS_ENCRYPT_STAGING}"));
        }
        let cache = match &self.acme_cache {
            Some(dir) => dir.clone(),
            None => default_cache()?,
        };
        private_dir(&cache)?;
        cert_file_probe(&cache, &directory, &domains)?;
        let roots = Arc::new(roots(self.acme_ca.as_deref(), "--acme-ca")?);
        Ok(Some(Settings { domains, contact, directory, cache, roots }))
    }
}

/// A DNS name a CA can validate with TLS-ALPN-01: no wildcard, no address.
fn domain(raw: &str) -> Result<String, String> {
    let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Err(format!("--acme {raw:?}: {why}; give the site's DNS name, e.g. --acme example.com"));
    if d.starts_with("*.") {
        return bad("wildcard names need the DNS-01 challenge, which ws2http does not do");
    }
    if d.parse::<std::net::IpAddr>().is_ok() {
        return bad("certificates for IP addresses are not supported");
    }
    if !crate::hosts::is_dns_name(&d) {
        return bad("not a DNS name (letters, digits, '-' and '.'; an international name in its xn-- form)");
    }
    Ok(d)
}

fn email(raw: &str) -> Result<String, String> {
    let e = raw.trim().strip_prefix("mailto:").unwrap_or(raw.trim());
    match e.split_once('@') {
        Some((user, host)) if !user.is_empty() && host.contains('.') && !e.contains([' ', ',', '<', '>', '?']) => {
            Ok(format!("mailto:{e}"))
        }
        _ => Err(format!("--acme-email {raw:?}: not an email address, e.g. --acme-email admin@example.com")),
    }
}

/// The state directory the project uses (`contrib/ws2http.service`'s
/// `StateDirectory=ws2http`, which systemd passes as `$STATE_DIRECTORY`),
/// else the XDG one of the user running ws2http.
fn default_cache() -> Result<PathBuf, String> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(state) = std::env::var("STATE_DIRECTORY").ok().and_then(|s| s.split(':').next().map(PathBuf::from)) {
        if !state.as_os_str().is_empty() {
            return Ok(state.join("acme"));
        }
    }
    let xdg = env("XDG_STATE_HOME").or_else(|| env("HOME").map(|h| h.join(".local/state")));
    xdg.map(|d| d.join("ws2http/acme")).ok_or_else(|| {
        "--acme: no state directory (neither STATE_DIRECTORY nor HOME is set); give --acme-cache DIR".into()
    })
}

/// Creates `dir` (0700), or checks that an existing one is readable by its
/// owner only: it will hold private keys.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let shown = dir.display();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("--acme-cache {shown}: cannot create it ({e}); give a writable directory"))?;
    let mode = std::fs::metadata(dir).map_err(|e| format!("--acme-cache {shown}: {e}"))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "--acme-cache {shown}: others may read it (mode {:o}) and it will hold private keys; run chmod 700 {shown} or choose another directory",
            mode & 0o777
        ));
    }
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("--acme-cache {shown}: not writable ({e}); give a directory ws2http's user can write"))
}

/// Creates and removes the certificate's own file in the cache, so a name
/// the file system refuses is a start-up error, not a certificate lost
/// after its issuance (and an order at every restart).
fn cert_file_probe(cache: &Path, directory: &str, domains: &[String]) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = FileCache::new(cache.to_owned()).path(directory, &FileCache::cert_name(domains));
    let probe = path.with_extension("tmp");
    let parent = probe.parent().unwrap_or(cache);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .and_then(|()| std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&probe))
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            format!("--acme-cache: cannot write the certificate file {} ({e}); give a writable --acme-cache DIR or fewer --acme names", path.display())
        })
}

/// The roots for the ACME directory's HTTPS: [`super::roots::store`]
/// (system + `SSL_CERT_FILE`/`SSL_CERT_DIR` + `extra`, named `flag`).
pub fn roots(extra: Option<&Path>, flag: &str) -> Result<RootCertStore, String> {
    super::roots::store(extra, flag)
}

/// A start-up warning when the CA cannot reach the TLS-ALPN-01 challenge
/// on the listeners `listen` (`IP:PORT`): Let's Encrypt validates on port
/// 443 of a public address. Only a warning: port 443 may be forwarded to
/// another port, and a private CA may validate elsewhere.
pub fn listen_warning(settings: &Settings, listen: &[&str]) -> Option<String> {
    let addrs: Vec<std::net::SocketAddr> = listen.iter().filter_map(|a| a.parse().ok()).collect();
    let names = settings.domains.join(",");
    if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
        return Some(format!(
            "--acme {names}: --listen {} is a loopback address, which the CA cannot reach to validate the name; \
             listen on 0.0.0.0:443 (or forward port 443 here)",
            listen.join(",")
        ));
    }
    (!addrs.iter().any(|a| a.port() == 443)).then(|| {
        format!(
            "--acme {names}: the CA validates the name on port 443 and --listen {} is not on it; forward port 443 \
             here, or listen on 0.0.0.0:443",
            listen.join(",")
        )
    })
}

/// Starts obtaining and renewing the certificate in the background and
/// returns the resolver the listener's TLS configuration uses (it also
/// answers the TLS-ALPN-01 challenges, so the configuration must offer
/// ALPN `acme-tls/1`).
pub fn start(settings: Settings) -> Result<Arc<dyn ResolvesServerCert>, String> {
    let (state, seen) = build(&settings)?;
    let resolver = Arc::new(Forward::new(state.resolver(), settings.domains.join(",")));
    log::info!(
        "acme: certificate for {} from {} (cache {})",
        settings.domains.join(","),
        settings.directory,
        settings.cache.display()
    );
    let hup = async_signal::Signals::new([async_signal::Signal::Hup])
        .map_err(|e| format!("cannot install the SIGHUP handler ({e}): an internal error, please report it"))?;
    crate::runtime::spawn(ignore_hup(hup));
    crate::runtime::spawn(drive(state, seen, settings, resolver.clone()));
    Ok(resolver)
}

/// SIGHUP's default action is to end the process, and systemd counts that
/// as a clean exit (no restart): `systemctl reload` (OPERATIONS.md's
/// `ExecReload=kill -HUP`) must not take an HTTPS site down.
async fn ignore_hup(mut hup: async_signal::Signals) {
    while hup.next().await.is_some() {
        log::info!("SIGHUP: nothing to reload (--acme manages the certificate)");
    }
}

/// A fresh rustls-acme state machine (it starts by loading the cache).
fn build(settings: &Settings) -> Result<(AcmeState<std::io::Error>, Seen), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("--acme: TLS client set-up: {e}"))?
        .with_root_certificates(settings.roots.clone())
        .with_no_client_auth();
    let cache = FileCache::new(settings.cache.clone());
    let seen = cache.seen.clone();
    let state = AcmeConfig::new_with_client_config(&settings.domains, Arc::new(client))
        .directory(&settings.directory)
        .contact(&settings.contact)
        .cache(cache)
        .state();
    Ok((state, seen))
}

/// The resolver the listener holds, in front of rustls-acme's, which the
/// watchdog replaces: TLS-ALPN-01 challenges go to the newest state
/// machine (the one ordering), every other handshake to the one that last
/// deployed a certificate, so the old certificate keeps being served
/// while a rebuilt state machine works.
#[derive(Debug)]
pub struct Forward {
    /// `[newest, serving]`.
    inner: RwLock<[Arc<ResolvesServerCertAcme>; 2]>,
    /// The certificate's names, for the "no certificate yet" line.
    names: String,
    /// When that line was last logged (unix seconds): once a second at most.
    told: std::sync::atomic::AtomicU64,
}

impl Forward {
    fn new(first: Arc<ResolvesServerCertAcme>, names: String) -> Self {
        Forward { inner: RwLock::new([first.clone(), first]), names, told: Default::default() }
    }

    /// rustls's own error for this ("no server certificate chain
    /// resolved") tells the operator nothing: one clear line instead.
    fn no_certificate_yet(&self, sni: Option<&str>) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if self.told.swap(now, Relaxed) != now {
            let who = sni.map_or(String::new(), |s| format!(" for {s}"));
            log::warn!(
                "TLS handshake{who} refused: no certificate yet, the ACME order for {} is still running (see the acme: lines)",
                self.names
            );
        }
    }
    fn get(&self) -> std::sync::RwLockReadGuard<'_, [Arc<ResolvesServerCertAcme>; 2]> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
    fn set(&self, which: usize, resolver: Arc<ResolvesServerCertAcme>) {
        self.inner.write().unwrap_or_else(|p| p.into_inner())[which] = resolver;
    }
    /// The newest state machine deployed a certificate: it serves now.
    fn promote(&self) {
        let newest = self.get()[0].clone();
        self.set(1, newest);
    }
}

impl ResolvesServerCert for Forward {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let challenge = hello.alpn().is_some_and(|mut a| a.any(|p| p == ACME_TLS_ALPN));
        let which = if challenge { 0 } else { 1 };
        let resolver = self.get()[which].clone();
        let sni = hello.server_name().map(str::to_owned);
        let key = resolver.resolve(hello);
        if key.is_none() && !challenge {
            self.no_certificate_yet(sni.as_deref());
        }
        key
    }
}

/// How long an order may go without any event before the watchdog
/// rebuilds the state machine: rustls-acme's HTTP client has no timeout,
/// so a CA connection that stalls would leave the order pending for ever.
/// The longest quiet stretch of a healthy order is its polling of a
/// "processing" order (1 + 2 + ... + 512 s, 17 min) plus 31 s of polling
/// per authorization; `WS2HTTP_ACME_STALL_SECS` overrides it (tests).
fn stall_limit(domains: usize) -> Duration {
    let secs = std::env::var("WS2HTTP_ACME_STALL_SECS").ok().and_then(|s| s.parse().ok());
    secs.map_or(Duration::from_secs(30 * 60 + 60 * domains as u64), Duration::from_secs)
}

/// rustls-acme's wait after its `n`-th consecutive error (1 << n s, n at most 16).
fn backoff(errors: u32) -> Duration {
    match errors {
        0 => Duration::ZERO,
        n => Duration::from_secs(1 << (n - 1).min(16)),
    }
}

/// Polls rustls-acme's state machine for ever (it loads, orders, renews
/// and retries when polled), logs each of its events, and rebuilds it
/// when an order goes [`stall_limit`] without an event.
async fn drive(mut state: AcmeState<std::io::Error>, mut seen: Seen, settings: Settings, forward: Arc<Forward>) {
    let (names, domains) = (settings.domains.join(","), &settings.domains);
    let stall = stall_limit(domains.len());
    let mut renew_at: Option<SystemTime> = None;
    // While an order is due (no certificate yet, or renewal time): since
    // when nothing happened, and how many errors in a row.
    let mut quiet_since: Option<Instant> = Some(Instant::now());
    let mut errors = 0;
    loop {
        let next = async { Tick::Event(state.next().await) };
        let renewal = async {
            match renew_at {
                Some(at) => crate::runtime::sleep(at.duration_since(SystemTime::now()).unwrap_or_default()).await,
                None => futures_lite::future::pending::<()>().await,
            }
            Tick::Renew
        };
        let watchdog = async {
            match quiet_since {
                Some(t) => {
                    crate::runtime::sleep((t + stall + backoff(errors)).saturating_duration_since(Instant::now())).await
                }
                None => futures_lite::future::pending::<()>().await,
            }
            Tick::Stalled
        };
        match futures_lite::future::or(next, futures_lite::future::or(renewal, watchdog)).await {
            // The stream never ends.
            Tick::Event(None) => return,
            Tick::Event(Some(Ok(event))) => {
                errors = 0;
                quiet_since = quiet_since.map(|_| Instant::now());
                if matches!(event, EventOk::DeployedNewCert | EventOk::DeployedCachedCert) {
                    forward.promote();
                }
                if let Some(at) = deployed(&event, &seen, domains) {
                    (renew_at, quiet_since) = (Some(at), None);
                }
            }
            Tick::Event(Some(Err(e))) => {
                errors += 1;
                quiet_since = Some(Instant::now());
                log::error!("acme: {names}: {e} (retrying with backoff)");
            }
            Tick::Renew => {
                (renew_at, quiet_since) = (None, Some(Instant::now()));
                log::info!("acme: renewing the certificate for {names}: a third of its lifetime is left");
            }
            Tick::Stalled => match build(&settings) {
                Ok((fresh, fresh_seen)) => {
                    log::warn!(
                        "acme: {names}: no answer from {} for {}; starting the order again (the current certificate, if any, is still served)",
                        settings.directory,
                        humantime::format_duration(stall)
                    );
                    (state, seen) = (fresh, fresh_seen);
                    forward.set(0, state.resolver());
                    (errors, quiet_since) = (0, Some(Instant::now()));
                }
                Err(e) => log::error!("acme: {names}: cannot start the order again: {e}"),
            },
        }
    }
}

/// What woke [`drive`].
enum Tick {
    Event(Option<<AcmeState<std::io::Error> as futures_lite::Stream>::Item>),
    Renew,
    Stalled,
}

/// Logs a deployment; for a certificate whose PEM the cache saw, records
/// its expiry and returns when it will be renewed.
fn deployed(event: &EventOk, seen: &Seen, domains: &[String]) -> Option<SystemTime> {
    let names = domains.join(",");
    let fresh = match event {
        EventOk::DeployedNewCert => {
            log::info!("acme: new certificate for {names} issued and now served");
            return None;
        }
        // The new certificate's PEM reaches the cache right after its deployment.
        EventOk::CertCacheStore => true,
        EventOk::DeployedCachedCert => false,
        EventOk::AccountCacheStore => return None,
    };
    let pem = seen.lock().ok()?.take()?;
    let (not_before, not_after) = match validity(&pem) {
        Ok(v) => v,
        Err(e) => {
            log::warn!("acme: certificate for {names}: cannot read its dates ({e})");
            return None;
        }
    };
    for d in domains {
        expiry::set(d, not_after);
    }
    let renew = renewal_time(not_before, not_after);
    let what = if fresh { "new" } else { "cached" };
    log::info!(
        "acme: {what} certificate for {names} valid until {}, renewal from {}",
        humantime::format_rfc3339_seconds(unix(not_after)),
        humantime::format_rfc3339_seconds(unix(renew))
    );
    Some(unix(renew))
}

fn unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

/// When a third of the lifetime is left (rustls-acme's own rule).
pub fn renewal_time(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before) / 3
}

/// The leaf's `notBefore` and `notAfter` (unix seconds), from a PEM that
/// holds the private key and then the chain.
pub fn validity(pem: &[u8]) -> Result<(i64, i64), String> {
    let leaf = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("no certificate in the PEM")?
        .map_err(|e| format!("bad PEM: {e:?}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).map_err(|e| format!("bad certificate: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

#[cfg(test)]
mod tests;
