//! ACME end to end against Debian's `pebble` (Let's Encrypt's test CA),
//! started here on loopback ports with a config written here: the first
//! issuance over TLS-ALPN-01 on the server's own port, the certificate
//! served to a client that trusts pebble's root (from its management
//! port), a restart that reuses the cache without a new order, and a
//! renewal of a short-lived certificate (pebble's
//! `certificateValidityPeriod`) while the old one keeps being served.
//!
//! The server side is `ws2http::tls::acme::start`'s resolver behind a
//! TLS accept loop that does what the listener does with it (ALPN
//! `acme-tls/1` offered, a challenge connection closed after its handshake).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::require_suite;
use common::{scratch, wait_for};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use ws2http::tls::acme::{self, AcmeArgs};
use ws2http_test_suite::suite;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A CA made for the test and pebble's HTTPS certificate signed by it
/// (what `--acme-ca` is for: a private ACME server).
fn pebble_https_cert(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "ws2http test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("test-ca.pem"), ca.pem()).unwrap();
    dir.join("test-ca.pem")
}

struct Pebble {
    child: Child,
    dns: Child,
    log: Arc<Mutex<String>>,
    acme_port: u16,
    mgmt_port: u16,
}

impl Pebble {
    /// Pebble validating TLS-ALPN-01 on `tls_port`; `validity` seconds
    /// for its certificates (its default, 5 years, when `None`).
    fn start(dir: &Path, tls_port: u16, validity: Option<u64>) -> Pebble {
        let (acme_port, mgmt_port, dns_port) = (free_port(), free_port(), free_port());
        // Pebble's DNS: every name is 127.0.0.1, so each test has its own
        // real-looking domain (and its own line in the expiry registry).
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let validity = validity.map_or(String::new(), |v| format!(r#", "certificateValidityPeriod": {v}"#));
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{acme_port}", "managementListenAddress": "127.0.0.1:{mgmt_port}",
            "certificate": "{d}/pebble-cert.pem", "privateKey": "{d}/pebble-key.pem", "httpPort": {http},
            "tlsPort": {tls_port}, "ocspResponderURL": "", "externalAccountBindingRequired": false{validity}}}}}"#,
            d = dir.display(),
            http = free_port(),
        );
        std::fs::write(dir.join("pebble.json"), config).unwrap();
        let mut child = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // No random 0-15 s sleep before each validation, no nonce
            // rejected on purpose, a fresh challenge for every order.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        let log = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let p = Pebble { child, dns, log, acme_port, mgmt_port };
        wait_for("pebble's directory", || p.log().contains("ACME directory available").then_some(()));
        p
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// Orders pebble has received (it logs each one with its id).
    fn orders(&self) -> usize {
        self.log().lines().filter(|l| l.contains("Added order")).count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.child, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTPS GET with rustls trusting `roots` only: the server's chain and
/// the response, or the handshake's error.
fn https_get(
    port: u16,
    sni: &str,
    roots: &rustls::RootCertStore,
    path: &str,
) -> Result<(Vec<CertificateDer<'static>>, String), String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    // A peer that closes without close_notify still gave its answer.
    let _ = tls.read_to_end(&mut response);
    let chain = tls.conn.peer_certificates().ok_or("no certificate")?.to_vec();
    Ok((chain, String::from_utf8_lossy(&response).into_owned()))
}

/// Pebble's root (a fresh one per run), from its management port.
fn pebble_root(p: &Pebble, test_ca: &Path) -> rustls::RootCertStore {
    let mut trust_pebble_https = rustls::RootCertStore::empty();
    trust_pebble_https.add_parsable_certificates(CertificateDer::pem_file_iter(test_ca).unwrap().map(Result::unwrap));
    let (_, response) = https_get(p.mgmt_port, "127.0.0.1", &trust_pebble_https, "/roots/0").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(CertificateDer::pem_slice_iter(response.as_bytes()).map(Result::unwrap));
    assert_eq!(roots.len(), 1, "pebble's root in {response:?}");
    roots
}

/// A server as the listener runs one: TLS with ALPN `http/1.1` and
/// `acme-tls/1`, certificates from `start`'s resolver, a challenge
/// connection closed after its handshake, every request answered "hello".
fn serve(listener: TcpListener, settings: acme::Settings) {
    // The module's log lines, shown when a test fails.
    let _ = env_logger::builder().is_test(true).filter_level(log::LevelFilter::Info).try_init();
    let resolver = acme::start(settings).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec(), acme::ACME_TLS_ALPN.to_vec()];
    let config = Arc::new(config);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let mut conn = rustls::ServerConnection::new(config).unwrap();
                let mut tcp = tcp;
                while conn.is_handshaking() {
                    if conn.complete_io(&mut tcp).is_err() {
                        return;
                    }
                }
                if conn.alpn_protocol() == Some(acme::ACME_TLS_ALPN) {
                    return;
                }
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut head = [0u8; 1024];
                let _ = tls.read(&mut head);
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
}

fn settings(p: &Pebble, domain: &str, cache: &Path, test_ca: &Path) -> acme::Settings {
    let args = AcmeArgs {
        acme: vec![domain.to_owned()],
        acme_email: Some("admin@example.com".to_owned()),
        acme_directory: Some(p.directory()),
        acme_cache: Some(cache.to_owned()),
        acme_ca: Some(test_ca.to_owned()),
    };
    args.settings().unwrap().unwrap()
}

fn leaf_dates(chain: &[CertificateDer<'_>]) -> (i64, i64, Vec<u8>) {
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let v = cert.validity();
    (v.not_before.timestamp(), v.not_after.timestamp(), cert.raw_serial().to_vec())
}

/// [`wait_for`] with a later deadline (a renewal comes 20 s after issuance).
fn wait_for_until<T>(deadline: std::time::Instant, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `domain`'s line of `/metrics`' expiry gauge.
fn expiry_metric(domain: &str) -> Option<i64> {
    let mut metrics = String::new();
    ws2http::tls::expiry::render(&mut metrics);
    let prefix = format!("ws2http_tls_cert_not_after_seconds{{domain=\"{domain}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

/// Waits for the first certificate the server serves (a handshake fails
/// until one is issued).
fn first_certificate(port: u16, domain: &str, roots: &rustls::RootCertStore) -> Vec<CertificateDer<'static>> {
    wait_for("a certificate from pebble", || {
        let Ok((chain, body)) = https_get(port, domain, roots, "/") else {
            std::thread::sleep(Duration::from_millis(100));
            return None;
        };
        assert!(body.ends_with("hello"), "{body:?}");
        Some(chain)
    })
}

#[suite("acme")]
#[test]
fn issuance_over_tls_alpn_then_a_restart_reuses_the_cache() {
    require_suite("acme");
    let dir = scratch();
    let test_ca = pebble_https_cert(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pebble = Pebble::start(&dir, port, None);
    let roots = pebble_root(&pebble, &test_ca);
    let cache = dir.join("cache");
    let domain = "issue.ws2http.test";
    serve(listener, settings(&pebble, domain, &cache, &test_ca));
    // Issued, and verified (name and chain) by a client that trusts only pebble's root.
    let chain = first_certificate(port, domain, &roots);
    let (_, not_after, serial) = leaf_dates(&chain);
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    wait_for("the expiry in /metrics", || (expiry_metric(domain) == Some(not_after)).then_some(()));
    let sub = cache.join(format!("127.0.0.1_{}_dir", pebble.acme_port));
    assert!(sub.join(format!("cert-{domain}.pem")).is_file(), "{}", sub.display());
    assert!(sub.join("account-admin@example.com.der").is_file());

    // A restart: a second server on another port, same cache, serves the
    // same certificate at once, and pebble sees no new order.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port2 = listener.local_addr().unwrap().port();
    serve(listener, settings(&pebble, domain, &cache, &test_ca));
    let chain2 = first_certificate(port2, domain, &roots);
    assert_eq!(leaf_dates(&chain2).2, serial, "the cached certificate is served");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pebble.orders(), 1, "no new order after the restart:\n{}", pebble.log());
}

#[suite("acme")]
#[test]
fn a_short_lived_certificate_is_renewed_while_the_old_one_is_served() {
    require_suite("acme");
    let dir = scratch();
    let test_ca = pebble_https_cert(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // 30 s certificates: renewed after 20 s, with 10 s left.
    let pebble = Pebble::start(&dir, port, Some(30));
    let roots = pebble_root(&pebble, &test_ca);
    let domain = "renew.ws2http.test";
    serve(listener, settings(&pebble, domain, &dir.join("cache"), &test_ca));
    let (not_before, not_after, serial) = leaf_dates(&first_certificate(port, domain, &roots));
    assert!(not_after - not_before <= 31, "pebble made a {}-second certificate", not_after - not_before);
    // Every handshake until the new certificate appears gets a valid
    // certificate (the old one while the renewal runs), never a failure.
    let mut served_old = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let renewed = wait_for_until(deadline, "the renewed certificate", || {
        let (chain, _) = https_get(port, domain, &roots, "/").unwrap_or_else(|e| panic!("handshake failed: {e}"));
        let dates = leaf_dates(&chain);
        if dates.2 == serial {
            served_old += 1;
            std::thread::sleep(Duration::from_millis(200));
            return None;
        }
        Some(dates)
    });
    assert!(served_old > 0);
    assert!(renewed.1 > not_after, "{renewed:?} after {not_after}");
    // Not before a third of the lifetime was left, and before the old one expired.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(now >= acme::renewal_time(not_before, not_after), "renewed too early");
    assert!(now <= not_after, "renewed after the old certificate expired ({now} > {not_after})");
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());
    wait_for("the new expiry in /metrics", || (expiry_metric(domain) == Some(renewed.1)).then_some(()));
}
