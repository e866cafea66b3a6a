//! TLS from ws2http to the servers behind it, with real parts: a test CA
//! and certificate made with openssl, an HTTPS backend (Python's `ssl`
//! and `http.server`) that events run through, and a redis-server
//! speaking only TLS (`--tls-port`) for cluster mode over `rediss://`.
//! A certificate from a CA ws2http does not trust is refused: the open
//! gets 502 and the log one line naming the flag that fixes it.

mod common;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use async_tungstenite::tungstenite::Message;
use common::pki::make_pki;
use common::*;
use ws2http_test_suite::suite;

/// An HTTPS backend: answers a message event with `tls PAYLOAD sni=NAME`
/// (the name the client sent in SNI), any other event with nothing.
struct HttpsBackend {
    child: Child,
    port: u16,
}

const BACKEND: &str = r#"
import http.server, ssl, sys
sni = {"name": None}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = b""
        if self.headers.get("WS-Event") == "message":
            out = b"tls " + body + b" sni=" + str(sni["name"]).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *args):
        pass
def on_sni(sock, name, ctx):
    sni["name"] = name
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
ctx.sni_callback = on_sni
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl HttpsBackend {
    fn start(pki: &Path) -> HttpsBackend {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(BACKEND)
            .arg(pki.join("cert.pem"))
            .arg(pki.join("key.pem"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the backend's port, got {line:?}"));
        HttpsBackend { child, port }
    }
}

impl Drop for HttpsBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require_tools() {
    require_suite("python");
    require_suite("backends"); // openssl
}

#[suite("python")]
#[suite("backends")]
#[async_std::test]
async fn events_run_through_an_https_backend_trusted_by_backend_ca_or_ssl_cert_file() {
    require_tools();
    let pki = make_pki(&scratch(), "one");
    let other = make_pki(&scratch(), "other");
    let backend = HttpsBackend::start(&pki);
    let url = format!("https://localhost:{}/ev", backend.port);
    let empty = cgi_bin(&[]);
    let ca = pki.join("ca.pem");
    let ca = ca.to_str().expect("path");
    // SSL_CERT_FILE names another CA: only --backend-ca makes it trusted.
    let via_flag = Server::start_env(
        &empty,
        &["--backend-url", &url, "--backend-ca", ca],
        &[("SSL_CERT_FILE", other.join("ca.pem").as_os_str())],
    );
    let via_env =
        Server::start_env(&empty, &["--backend-url", &url], &[("SSL_CERT_FILE", pki.join("ca.pem").as_os_str())]);
    for s in [&via_flag, &via_env] {
        let mut ws = connect(&s.url("/chat")).await;
        for payload in ["one", "two"] {
            ws.send(Message::text(payload)).await.expect("send");
            assert_eq!(next_text(&mut ws).await, format!("tls {payload} sni=localhost"));
        }
    }
}

#[suite("python")]
#[suite("backends")]
#[test]
fn a_backend_certificate_from_an_untrusted_ca_fails_the_open_with_502_and_one_log_line() {
    require_tools();
    let pki = make_pki(&scratch(), "one");
    let other = make_pki(&scratch(), "other");
    let backend = HttpsBackend::start(&pki);
    let url = format!("https://localhost:{}/ev", backend.port);
    let s = Server::start_env(
        &cgi_bin(&[]),
        &["--backend-url", &url],
        &[("SSL_CERT_FILE", other.join("ca.pem").as_os_str())],
    );
    let resp = raw_http(s.port, &upgrade_request("/chat", ""));
    assert_eq!(status_of(&resp), 502, "{resp}");
    let needle = "TLS handshake with localhost failed: invalid peer certificate: UnknownIssuer; \
                  trust its CA with --backend-ca FILE (or SSL_CERT_FILE)";
    s.wait_log(needle);
    assert_eq!(s.log().matches(needle).count(), 1, "{}", s.log());
}

#[test]
fn a_bad_backend_ca_or_one_without_https_is_refused_at_start_up() {
    let check = |args: &[&str], want: &str| {
        let out = ws2http().args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"]).args(args).output();
        let out = out.expect("run ws2http");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    };
    check(
        &["--backend-url", "https://localhost:1/", "--backend-ca", "/nonexistent/ca.pem"],
        "--backend-ca /nonexistent/ca.pem: ",
    );
    check(&["--backend-url", "http://localhost:1/", "--backend-ca", "/etc/hostname"], "no --backend-url is https://");
    check(&["--redis", "redis://127.0.0.1:1/", "--redis-ca", "/etc/hostname"], "is not rediss://");
}

struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    /// redis-server with TLS only (`--port 0`): a plain client gets nothing.
    fn start(pki: &Path) -> TlsRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let file = |f: &str| pki.join(f).display().to_string();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--tls-auth-clients", "no"])
            .args(["--tls-cert-file", &file("cert.pem"), "--tls-key-file", &file("key.pem")])
            .args(["--tls-ca-cert-file", &file("ca.pem")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_for("redis-server to listen on its TLS port", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        TlsRedis { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[suite("redis")]
#[suite("backends")]
#[async_std::test]
async fn cluster_mode_speaks_rediss_to_a_tls_only_redis() {
    require_suite("redis");
    require_suite("backends");
    let pki = make_pki(&scratch(), "redis");
    let redis = TlsRedis::start(&pki);
    let url = format!("rediss://localhost:{}/0", redis.port);
    let ca = pki.join("ca.pem");
    let a = Server::start(&["--redis", &url, "--redis-ca", ca.to_str().expect("path")]);
    let b = Server::start_env(&fixtures(), &["--redis", &url], &[("SSL_CERT_FILE", ca.as_os_str())]);
    let (mut ws, id) = mirror(&a, "/mirror.sh").await;
    // Presence went through Redis: b lists a's connection; a send from b's
    // API reaches it through Redis.
    wait_for("a's connection listed by b", || conn_ids(&b.api("/connections")).contains(&id).then_some(()));
    assert_eq!(post(&b.api(&format!("/send/{id}")), "over rediss").status, 200);
    assert_eq!(next_text(&mut ws).await, "over rediss");
}

/// The settings of a unit file: its lines without comments and blanks.
fn unit_lines(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
}

#[test]
fn the_https_unit_is_the_plain_unit_with_the_port_capability_and_its_own_config() {
    let plain = unit_lines("ws2http.service");
    let https = unit_lines("ws2http-https.service");
    let only = |a: &[String], b: &[String]| -> Vec<String> { a.iter().filter(|l| !b.contains(l)).cloned().collect() };
    assert_eq!(
        only(&https, &plain),
        [
            "Description=ws2http: WebSockets for CGI scripts, HTTPS on ports 443 and 80",
            "Conflicts=ws2http.service",
            "ExecStart=/usr/bin/ws2http --config /etc/ws2http/ws2http-https.toml",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        ]
    );
    assert_eq!(
        only(&plain, &https),
        [
            "Description=ws2http: WebSockets for CGI scripts",
            "ExecStart=/usr/bin/ws2http --config /etc/ws2http/ws2http.toml",
            "CapabilityBoundingSet=",
            "AmbientCapabilities=",
        ]
    );
}

/// A port below 1024 nobody listens on.
fn free_low_port() -> u16 {
    (600..1000).find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()).expect("a free port below 1024")
}

/// What contrib/ws2http-https.service does: an unprivileged user with
/// `CAP_NET_BIND_SERVICE` as an ambient capability binds a port below
/// 1024; the scripts ws2http then runs have no capability at all.
#[suite("privileges")]
#[async_std::test]
async fn the_port_capability_binds_low_ports_and_never_reaches_the_scripts() {
    require_suite("privileges");
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root, "this test changes user with setpriv: run it as root, or skip it with WS2HTTP_TEST_SKIP=privileges");
    let dir = cgi_bin(&[("caps.sh", "grep -E '^Cap(Prm|Eff|Amb)' /proc/self/status | tr '\\t\\n' '  '; echo")]);
    let port = free_low_port();
    let bin = std::env::var_os("WS2HTTP_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ws2http").into());
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all,+net_bind_service", "--ambient-caps=+net_bind_service"])
        .arg(bin)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--api-listen", "127.0.0.1:0", "--cgi-bin"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ws2http under setpriv");
    let (bound, _) = read_ports(&mut child);
    assert_eq!(bound, port, "bound below 1024 as an unprivileged user");
    let mut ws = connect(&format!("ws://127.0.0.1:{port}/caps.sh")).await;
    ws.send(Message::text("x")).await.expect("send");
    let caps = next_text(&mut ws).await;
    let _ = child.kill();
    let _ = child.wait();
    let zero = "0000000000000000";
    assert_eq!(caps.trim(), format!("CapPrm: {zero} CapEff: {zero} CapAmb: {zero}"));
}

#[test]
fn the_config_file_takes_the_tls_flags_as_keys() {
    let run = |body: &str| {
        let file = scratch().join("ws2http.toml");
        std::fs::write(&file, body).expect("write the config file");
        let out = ws2http().arg("--config").arg(&file).output().expect("run ws2http");
        assert!(!out.status.success(), "{body}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Each key reaches its flag: the refusal is the flag's own.
    let err = run("listen = \"127.0.0.1:0\"\napi-listen = \"127.0.0.1:0\"\nhsts = 60\n");
    assert!(err.contains("--hsts 60 needs HTTPS on the public listener"), "{err}");
    let err = run("listen = \"127.0.0.1:0\"\napi-listen = \"127.0.0.1:0\"\nredirect_http = \"127.0.0.1:0\"\n");
    assert!(err.contains("--redirect-http 127.0.0.1:0 needs HTTPS"), "{err}");
    let err = run("hsts = \"a year\"\n");
    assert!(err.contains("line 1, key hsts"), "{err}");
    let err = run("listen = \"127.0.0.1:0\"\napi-listen = \"127.0.0.1:0\"\nbackend-url = [\"https://localhost:1/\"]\n\
         backend-ca = \"/nonexistent/ca.pem\"\n");
    assert!(err.contains("--backend-ca /nonexistent/ca.pem: "), "{err}");
    let err =
        run("listen = \"127.0.0.1:0\"\napi-listen = \"127.0.0.1:0\"\nredis-ca = \"/x.pem\"\nredis = \"redis://h/\"\n");
    assert!(err.contains("--redis-ca /x.pem: --redis redis://h/ is not rediss://"), "{err}");
}

#[test]
fn the_configuration_shown_in_deployment_md_is_the_contrib_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/DEPLOYMENT.md")).expect("DEPLOYMENT.md");
    let file = std::fs::read_to_string(root.join("contrib/ws2http-https.toml")).expect("the contrib file");
    let section = &doc[doc.find("## No proxy needed").expect("the section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").expect("its end")];
    for line in block.lines() {
        let setting = line.split('#').next().unwrap_or_default().trim();
        assert!(
            file.lines().any(|l| l.trim_start().starts_with(setting)),
            "{line:?} is not in contrib/ws2http-https.toml"
        );
    }
}
