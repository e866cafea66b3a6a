//! Starts the real `ws2http` binary on ephemeral loopback ports and gives
//! tests real clients: async-tungstenite for WebSockets, raw TCP for
//! malformed handshakes, ureq for the control API.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::StreamExt;

pub type Ws = WebSocketStream<async_std::net::TcpStream>;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgi-bin")
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub api_port: u16,
    pub dir: PathBuf,
    pub stderr_log: PathBuf,
}

/// A scratch directory unique to one test.
pub fn scratch() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("ws2http-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The binary under test, with stdout piped (for [`read_ports`]).
/// `WS2HTTP_TEST_BIN` runs the tests against another build (for example
/// an older one, to see a new test fail without the fix).
pub fn ws2http() -> Command {
    let bin = std::env::var_os("WS2HTTP_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ws2http").into());
    let mut cmd = Command::new(bin);
    cmd.stdout(Stdio::piped());
    cmd
}

/// Reads a started server's two start-up lines: (public port, API port).
pub fn read_ports(child: &mut std::process::Child) -> (u16, u16) {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut port_of = |prefix: &str| -> u16 {
        let line = lines.next().expect("startup line").expect("read stdout");
        assert!(line.starts_with(prefix), "unexpected startup line {line:?}");
        line.rsplit(':').next().unwrap().parse().unwrap()
    };
    let port = port_of("ws2http: listening on http://127.0.0.1:");
    (port, port_of("ws2http: control API on http://127.0.0.1:"))
}

/// The ids of the connections a control API listing returns, sorted.
pub fn conn_ids(url: &str) -> Vec<String> {
    let mut ids: Vec<String> = get(url)
        .json()
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

impl Server {
    /// Starts the server with the fixture scripts and `extra` flags. Scripts
    /// get EVENTS_LOG and FLAG_FILE inside the server's scratch directory.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_in(&fixtures(), extra)
    }

    pub fn start_in(cgi_bin: &Path, extra: &[&str]) -> Server {
        let dir = scratch();
        let stderr_log = dir.join("stderr.log");
        let mut child = ws2http()
            .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--cgi-bin"])
            .arg(cgi_bin)
            .args(["--pass-env", "EVENTS_LOG", "--pass-env", "FLAG_FILE"])
            .args(extra)
            .env("EVENTS_LOG", dir.join("events.log"))
            .env("FLAG_FILE", dir.join("flag"))
            .env("RUST_LOG", "ws2http=debug")
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("start ws2http");
        let (port, api_port) = read_ports(&mut child);
        Server { child, port, api_port, dir, stderr_log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.stderr_log.clone()).unwrap_or_default()
    }

    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("events.log")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Waits until the events log has a line matching `pred`, returns it.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_for(what, || self.events().into_iter().find(|l| pred(l)))
    }

    pub fn wait_log(&self, needle: &str) {
        wait_for(needle, || self.log().contains(needle).then_some(()));
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, for at most 15 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub async fn connect(url: &str) -> Ws {
    let (ws, _) = connect_with(url, &[]).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// Connects with extra request headers; returns the response too.
pub async fn connect_with(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, async_tungstenite::tungstenite::handshake::client::Response), async_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            async_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let uri = req.uri();
    let addr = format!("{}:{}", uri.host().unwrap_or("127.0.0.1"), uri.port_u16().unwrap_or(80));
    let tcp = async_std::net::TcpStream::connect(addr).await?;
    async_tungstenite::client_async(req, tcp).await
}

/// The next text or binary message, within 10 s.
pub async fn next(ws: &mut Ws) -> Message {
    loop {
        let m = async_std::future::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("read error");
        if m.is_text() || m.is_binary() || m.is_close() {
            return m;
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Opens a mirror.sh connection and returns it with its id.
pub async fn mirror(s: &Server, path: &str) -> (Ws, String) {
    let mut ws = connect(&s.url(path)).await;
    let first = next_text(&mut ws).await;
    let id = first.strip_prefix("id ").expect("mirror.sh says its id first").to_owned();
    (ws, id)
}

/// Proves that nothing reached `ws` before this call: pushes a unique
/// sentinel message through `send_url` (a control API `/send/{id}` URL of
/// the connection) and expects it as the very next message. The hub queues
/// a connection's messages in order, so anything applied earlier (a room
/// message, a broadcast, a reply) would come first. Unlike waiting a while
/// and seeing nothing, this cannot pass just because the machine was slow.
pub async fn sentinel(send_url: &str, ws: &mut Ws) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let text = format!("sentinel {}", N.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let r = post(send_url, &text);
    assert_eq!(r.status, 200, "POST {send_url}: {}", r.body);
    assert_eq!(next_text(ws).await, text, "something reached the connection before the sentinel");
}

/// The id of the one live connection of `endpoint`.
pub fn only_id(s: &Server, endpoint: &str) -> String {
    let ids = conn_ids(&s.api(&format!("/connections?endpoint={endpoint}")));
    assert_eq!(ids.len(), 1, "one connection of {endpoint} expected: {ids:?}");
    ids[0].clone()
}

/// A raw HTTP exchange: sends `request`, returns the whole response head
/// (and as much body as arrives before the server closes or 2 s pass).
pub fn raw_http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head.lines().find_map(|l| {
                        l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if head.starts_with("http/1.1 101") || len.is_some_and(|n| buf.len() >= end + 4 + n) {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A raw upgrade request for `path`.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

pub struct ApiResponse {
    pub status: u16,
    pub body: String,
}

impl ApiResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One control API call (blocking; run from async tests with spawn_blocking
/// not needed: calls are short and the server runs in another process).
pub fn api(method: &str, url: &str, token: Option<&str>, content_type: Option<&str>, body: &[u8]) -> ApiResponse {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    // ureq would label a byte body application/octet-stream (binary).
    req = req.header("Content-Type", content_type.unwrap_or("text/plain; charset=utf-8"));
    let req = req.body(body.to_vec()).unwrap();
    let mut res = agent.run(req).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = res.status().as_u16();
    let body = res.body_mut().read_to_string().unwrap_or_default();
    ApiResponse { status, body }
}

pub fn post(url: &str, body: &str) -> ApiResponse {
    api("POST", url, None, None, body.as_bytes())
}

pub fn get(url: &str) -> ApiResponse {
    api("GET", url, None, None, b"")
}

impl Server {
    /// One series of `GET /metrics`: the value on the line `SERIES VALUE`
    /// (`SERIES` with its labels, e.g.
    /// `ws2http_events_total{event="message",outcome="ok"}`); `None` when
    /// there is no such line.
    pub fn metric(&self, series: &str) -> Option<u64> {
        let body = get(&self.api("/metrics")).body;
        body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Like [`Server::start_in`], with extra variables in the server's own
    /// environment (e.g. a PATH without php-cgi).
    pub fn start_env(cgi_bin: &Path, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Server {
        let dir = scratch();
        let stderr_log = dir.join("stderr.log");
        let mut cmd = ws2http();
        cmd.args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--cgi-bin"])
            .arg(cgi_bin)
            .args(extra)
            .env("RUST_LOG", "ws2http=debug")
            .stderr(std::fs::File::create(&stderr_log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start ws2http");
        let (port, api_port) = read_ports(&mut child);
        Server { child, port, api_port, dir, stderr_log }
    }
}

// Suites of tests that need programs from outside Rust (tests/suites.txt).
// A test that needs, say, redis-server:
//
//     use ws2http_test_suite::suite;
//
//     #[suite("redis")] // above #[test]: `ignored` when WS2HTTP_TEST_SKIP names it
//     #[test]
//     fn cluster_works() {
//         require_suite("redis"); // a missing program fails with the command that installs it
//         ...
//     }
//
// A new suite is one line in tests/suites.txt (its programs and the apt or
// cargo packages that provide them): ./test then installs it, and
// WS2HTTP_TEST_SKIP accepts its name.
mod http_conn;
pub mod pki;
mod redis;
mod redis_proxy;
mod suites;
#[allow(unused_imports)]
pub use http_conn::HttpConn;
#[allow(unused_imports)]
pub use redis::{node, open_session, wait_clustered, Redis, CHAT};
#[allow(unused_imports)]
pub use redis_proxy::{RedisProxy, CUT_MARKER};
#[allow(unused_imports)]
pub use suites::*;

/// The status code of a raw HTTP response (`HTTP/1.1 403 …` → 403; 0 when
/// there is none).
pub fn status_of(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A scratch `--cgi-bin` holding `scripts` (name, shell body after `#!/bin/sh`).
pub fn cgi_bin(scripts: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch().join("cgi-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}
