//! ACME end to end against Debian's `pebble` (Let's Encrypt's test CA),
//! started here on loopback ports with a config written here: the first
//! issuance over TLS-ALPN-01 on the server's own port, the certificate
//! served to a client that trusts pebble's root (from its management
//! port), a restart that reuses the cache without a new order, and a
//! renewal of a short-lived certificate (pebble's
//! `certificateValidityPeriod`) while the old one keeps being served.
//!
//! The real binary, with the flags a user types; what it logs and what
//! `/metrics` says are checked too.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::require_suite;
use common::{get, scratch, wait_for, Server};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use ws2http::tls::acme;
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

struct Ports {
    acme: u16,
    mgmt: u16,
    dns: u16,
}

fn directory(acme_port: u16) -> String {
    format!("https://127.0.0.1:{acme_port}/dir")
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
        Pebble::run(dir, Pebble::configure(dir, tls_port, validity))
    }

    /// Writes pebble's config (its ports chosen now) without starting it.
    fn configure(dir: &Path, tls_port: u16, validity: Option<u64>) -> Ports {
        let ports = Ports { acme: free_port(), mgmt: free_port(), dns: free_port() };
        let validity = validity.map_or(String::new(), |v| format!(r#", "certificateValidityPeriod": {v}"#));
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{}", "managementListenAddress": "127.0.0.1:{}",
            "certificate": "{d}/pebble-cert.pem", "privateKey": "{d}/pebble-key.pem", "httpPort": {http},
            "tlsPort": {tls_port}, "ocspResponderURL": "", "externalAccountBindingRequired": false{validity}}}}}"#,
            ports.acme,
            ports.mgmt,
            d = dir.display(),
            http = free_port(),
        );
        std::fs::write(dir.join("pebble.json"), config).unwrap();
        ports
    }

    /// Starts pebble with the config [`Pebble::configure`] wrote, and its DNS.
    fn run(dir: &Path, ports: Ports) -> Pebble {
        // Pebble's DNS: every name is 127.0.0.1, so each test has its own
        // real-looking domain (and its own line in /metrics).
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{}", ports.dns), "-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let mut child = Command::new("pebble")
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", ports.dns)])
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
        let p = Pebble { child, dns, log, acme_port: ports.acme, mgmt_port: ports.mgmt };
        wait_for("pebble's directory", || p.log().contains("ACME directory available").then_some(()));
        p
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn directory(&self) -> String {
        directory(self.acme_port)
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

/// `ws2http --acme DOMAIN` on `port` (pebble validates there), the cache
/// in `cache`, trusting the test CA for pebble's HTTPS.
fn start_server(p: &Pebble, port: u16, domain: &str, cache: &Path, test_ca: &Path) -> Server {
    start_server_with(&p.directory(), port, domain, cache, test_ca)
}

fn start_server_with(directory: &str, port: u16, domain: &str, cache: &Path, test_ca: &Path) -> Server {
    start_server_env(directory, port, domain, cache, test_ca, &[])
}

fn start_server_env(
    directory: &str,
    port: u16,
    domain: &str,
    cache: &Path,
    test_ca: &Path,
    env: &[(&str, &str)],
) -> Server {
    let dir = scratch();
    let stderr_log = dir.join("stderr.log");
    let mut child = common::ws2http()
        .args(["--listen", &format!("127.0.0.1:{port}"), "--api-listen", "127.0.0.1:0", "--cgi-bin"])
        .arg(common::fixtures())
        .args(["--acme", domain, "--acme-email", "admin@example.com", "--acme-directory", directory])
        .arg("--acme-cache")
        .arg(cache)
        .arg("--acme-ca")
        .arg(test_ca)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .expect("start ws2http");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let listening = lines.next().expect("the listening line");
    assert_eq!(listening, format!("ws2http: listening on https://127.0.0.1:{port}"));
    let api = lines.next().expect("the control API line");
    let api_port = api.rsplit(':').next().unwrap().parse().unwrap();
    Server { child, port, api_port, dir, stderr_log }
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

/// `domain`'s line of the expiry gauge in the server's `/metrics`.
fn expiry_metric(s: &Server, domain: &str) -> Option<i64> {
    let metrics = get(&s.api("/metrics")).body;
    let prefix = format!("ws2http_tls_cert_not_after_seconds{{domain=\"{domain}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

/// Waits for the first certificate the server serves (a handshake fails
/// until one is issued).
fn first_certificate(port: u16, domain: &str, roots: &rustls::RootCertStore) -> Vec<CertificateDer<'static>> {
    wait_for("a certificate from pebble", || {
        let Ok((chain, response)) = https_get(port, domain, roots, "/") else {
            // Not issued yet (each refused handshake is a log line: no hurry).
            std::thread::sleep(Duration::from_millis(100));
            return None;
        };
        assert!(response.starts_with("HTTP/1.1 "), "{response:?}");
        Some(chain)
    })
}

#[suite("acme")]
#[test]
fn issuance_over_tls_alpn_then_a_restart_reuses_the_cache() {
    require_suite("acme");
    let dir = scratch();
    let test_ca = pebble_https_cert(&dir);
    let port = free_port();
    let pebble = Pebble::start(&dir, port, None);
    let roots = pebble_root(&pebble, &test_ca);
    let cache = dir.join("cache");
    let domain = "issue.ws2http.test";
    let mut server = start_server(&pebble, port, domain, &cache, &test_ca);
    // Issued, and verified (name and chain) by a client that trusts only pebble's root.
    let chain = first_certificate(port, domain, &roots);
    let (_, not_after, serial) = leaf_dates(&chain);
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    wait_for("the expiry in /metrics", || (expiry_metric(&server, domain) == Some(not_after)).then_some(()));
    let sub = cache.join(format!("127.0.0.1_{}_dir", pebble.acme_port));
    assert!(sub.join(format!("cert-{domain}.pem")).is_file(), "{}", sub.display());
    assert!(sub.join("account-admin@example.com.der").is_file());
    // One line per step, at the default log level.
    for step in [
        "acme: no certificate for issue.ws2http.test in the cache",
        "acme: new account key stored in",
        "trigger challenge for issue.ws2http.test",
        "ACME TLS-ALPN-01 validation answered",
        "download certificate",
        "acme: new certificate for issue.ws2http.test issued and now served",
        "acme: certificate for issue.ws2http.test stored in",
        "acme: new certificate for issue.ws2http.test valid until ",
    ] {
        server.wait_log(step);
    }
    // The CA cannot reach a loopback listener: said at start-up.
    server.wait_log("--acme issue.ws2http.test: --listen 127.0.0.1:");

    // A restart on the same port with the same cache serves the same
    // certificate, and pebble sees no new order.
    server.terminate();
    let server = start_server(&pebble, port, domain, &cache, &test_ca);
    let chain = first_certificate(port, domain, &roots);
    assert_eq!(leaf_dates(&chain).2, serial, "the cached certificate is served");
    server.wait_log("acme: cached certificate for issue.ws2http.test valid until ");
    wait_for("the expiry in /metrics", || (expiry_metric(&server, domain) == Some(not_after)).then_some(()));
    assert_eq!(pebble.orders(), 1, "no new order after the restart:\n{}", pebble.log());
    assert!(!server.log().contains("trigger challenge"), "{}", server.log());
}

#[suite("acme")]
#[test]
fn a_short_lived_certificate_is_renewed_while_the_old_one_is_served() {
    require_suite("acme");
    let dir = scratch();
    let test_ca = pebble_https_cert(&dir);
    let port = free_port();
    // 30 s certificates: renewed after 20 s, with 10 s left.
    let pebble = Pebble::start(&dir, port, Some(30));
    let roots = pebble_root(&pebble, &test_ca);
    let domain = "renew.ws2http.test";
    let server = start_server(&pebble, port, domain, &dir.join("cache"), &test_ca);
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
    server.wait_log("acme: renewing the certificate for renew.ws2http.test: a third of its lifetime is left");
    wait_for("the new expiry in /metrics", || (expiry_metric(&server, domain) == Some(renewed.1)).then_some(()));
}

/// A CA that cannot be reached at start-up: an error line, retries, and
/// the certificate once it answers.
#[suite("acme")]
#[test]
fn a_ca_down_at_start_up_is_retried_until_it_answers() {
    require_suite("acme");
    let dir = scratch();
    let test_ca = pebble_https_cert(&dir);
    let port = free_port();
    let ports = Pebble::configure(&dir, port, None);
    let domain = "retry.ws2http.test";
    let server = start_server_with(&directory(ports.acme), port, domain, &dir.join("cache"), &test_ca);
    server.wait_log("ERROR ws2http::tls::acme] acme: retry.ws2http.test: order: ");
    server.wait_log("(retrying with backoff)");
    // The CA comes up: a later attempt (1, 2, 4 ... s apart) gets the certificate.
    let pebble = Pebble::run(&dir, ports);
    let roots = pebble_root(&pebble, &test_ca);
    first_certificate(port, domain, &roots);
    server.wait_log("acme: new certificate for retry.ws2http.test issued and now served");
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
}

/// A TCP relay to `to` that, while paused, accepts connections and holds
/// them without a byte either way: a CA behind a black-holed route.
struct Relay {
    port: u16,
    paused: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = paused.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming().map_while(Result::ok) {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else { continue };
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Relay { port, paused }
    }

    fn resume(&self) {
        self.paused.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A CA connection that stalls (rustls-acme's HTTP client has no timeout):
/// the watchdog logs one line and starts the order again, which gets the
/// certificate once the CA answers.
#[suite("acme")]
#[test]
fn a_stalled_order_is_started_again_by_the_watchdog() {
    require_suite("acme");
    let dir = scratch();
    let test_ca = pebble_https_cert(&dir);
    let port = free_port();
    let pebble = Pebble::start(&dir, port, None);
    let relay = Relay::start(pebble.acme_port);
    let domain = "stall.ws2http.test";
    let env = [("WS2HTTP_ACME_STALL_SECS", "10")];
    let server = start_server_env(&directory(relay.port), port, domain, &dir.join("cache"), &test_ca, &env);
    server.wait_log(&format!(
        "acme: {domain}: no answer from {} for 10s; starting the order again",
        directory(relay.port)
    ));
    relay.resume();
    // (A healthy order is quiet for a few seconds: 10 s lets pebble's finish.)
    let roots = pebble_root(&pebble, &test_ca);
    first_certificate(port, domain, &roots);
    server.wait_log("acme: new certificate for stall.ws2http.test issued and now served");
}

/// `systemctl reload` (SIGHUP) under --acme: one log line, and the server
/// keeps running (SIGHUP's default action ended it). No CA needed.
#[test]
fn sighup_under_acme_is_logged_and_the_server_keeps_running() {
    let dir = scratch();
    let test_ca = pebble_https_cert(&dir);
    let (port, ca_port) = (free_port(), free_port());
    let mut server = start_server_with(&directory(ca_port), port, "hup.ws2http.test", &dir.join("cache"), &test_ca);
    server.wait_log("acme: certificate for hup.ws2http.test");
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) };
    server.wait_log("SIGHUP: nothing to reload (--acme manages the certificate)");
    assert!(server.child.try_wait().unwrap().is_none(), "ws2http ended on SIGHUP");
    assert_eq!(get(&server.api("/metrics")).status, 200);
}

/// A handshake before the first certificate exists: one line that says
/// why, not rustls's "no server certificate chain resolved". No CA needed.
#[test]
fn a_handshake_before_the_first_certificate_is_explained() {
    let dir = scratch();
    let test_ca = pebble_https_cert(&dir);
    let (port, ca_port) = (free_port(), free_port());
    let server = start_server_with(&directory(ca_port), port, "early.ws2http.test", &dir.join("cache"), &test_ca);
    for _ in 0..3 {
        assert!(https_get(port, "early.ws2http.test", &rustls::RootCertStore::empty(), "/").is_err());
    }
    server.wait_log(
        "TLS handshake for early.ws2http.test refused: no certificate yet, the ACME order for early.ws2http.test is \
         still running (see the acme: lines)",
    );
    assert!(!server.log().contains("no server certificate chain resolved"), "{}", server.log());
}

/// Two sources for one certificate: refused before anything starts.
#[test]
fn tls_files_and_acme_together_are_refused_in_one_line() {
    let out = common::ws2http()
        .args(["--tls-cert", "c.pem", "--tls-key", "k.pem", "--acme", "example.com"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--acme") && err.contains("--tls-cert") && err.contains("cannot be used with"), "{err}");
}

/// A bad --acme value is one start-up line saying what to give instead.
#[test]
fn a_wildcard_domain_is_refused_at_start_up() {
    let out = common::ws2http().args(["--acme", "*.example.com"]).stderr(Stdio::piped()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--acme \"*.example.com\": wildcard names need the DNS-01 challenge"), "{err}");
}
