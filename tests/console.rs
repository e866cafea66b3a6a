//! The built-in console and what a page on this machine may open: the
//! loopback names (`localhost`, `127.0.0.1`, `[::1]`) on the listener's own
//! port are one site for the Origin check, and nothing else is (other ports,
//! look-alike names, DNS rebinding).

mod common;
use common::*;

/// An upgrade request with this Host and Origin, as a browser sends it.
fn handshake(port: u16, host: &str, origin: &str) -> u16 {
    let req = format!(
        "GET /mirror.sh HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    status_of(&raw_http(port, &req))
}

#[test]
fn a_page_on_any_loopback_name_of_this_port_may_connect() {
    let s = Server::start(&[]);
    let p = s.port;
    for origin in [format!("http://localhost:{p}"), format!("http://127.0.0.1:{p}"), format!("http://[::1]:{p}")] {
        for host in [format!("localhost:{p}"), format!("127.0.0.1:{p}"), format!("[::1]:{p}")] {
            assert_eq!(handshake(p, &host, &origin), 101, "Origin {origin}, Host {host}");
        }
    }
}

#[test]
fn other_ports_names_and_schemes_stay_foreign() {
    let s = Server::start(&[]);
    let p = s.port;
    let other = if p == 65535 { p - 1 } else { p + 1 };
    for (host, origin) in [
        // Another program on this machine (a dev server on another port).
        (format!("127.0.0.1:{p}"), format!("http://localhost:{other}")),
        (format!("localhost:{p}"), format!("http://127.0.0.1:{other}")),
        (format!("127.0.0.1:{p}"), "http://localhost".to_owned()),
        // Names that only look like loopback ones, or other loopback names.
        (format!("127.0.0.1:{p}"), format!("http://evil.localhost.example:{p}")),
        (format!("127.0.0.1:{p}"), format!("http://app.localhost:{p}")),
        (format!("127.0.0.1:{p}"), format!("http://127.0.0.2:{p}")),
        (format!("127.0.0.1:{p}"), format!("http://localhost:{p}@evil.example")),
        // This listener speaks plain HTTP: an https page is someone else's.
        (format!("127.0.0.1:{p}"), format!("https://localhost:{p}")),
        // A loopback page, but the socket goes to another port (a proxy, a tunnel).
        (format!("127.0.0.1:{other}"), format!("http://localhost:{p}")),
        (format!("127.0.0.1:{p}"), "null".to_owned()),
    ] {
        assert_eq!(handshake(p, &host, &origin), 403, "Origin {origin}, Host {host}");
    }
    s.wait_log(&format!("refused a handshake from origin \"http://localhost:{other}\""));
}

#[test]
fn dns_rebinding_gets_no_loopback_pass() {
    // Rebinding: the attacker's name in Host (421 before any origin check).
    let s = Server::start(&[]);
    let p = s.port;
    assert_eq!(handshake(p, &format!("rebind.evil.example:{p}"), &format!("http://rebind.evil.example:{p}")), 421);
    assert_eq!(handshake(p, &format!("rebind.evil.example:{p}"), &format!("http://localhost:{p}")), 421);
    // Even a served name (--allow-host) is not a loopback name: the exact
    // origin rule applies to it, the loopback one does not.
    let s = Server::start(&["--allow-host", "chat.example"]);
    let p = s.port;
    assert_eq!(handshake(p, &format!("chat.example:{p}"), &format!("http://localhost:{p}")), 403);
    assert_eq!(handshake(p, &format!("localhost:{p}"), &format!("http://chat.example:{p}")), 403);
    assert_eq!(handshake(p, &format!("chat.example:{p}"), &format!("http://chat.example:{p}")), 101);
}

/// `GET /` on the public listener: (status, body).
fn get_root(port: u16, target: &str) -> (u16, String) {
    let resp = raw_http(port, &format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"));
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status_of(&resp), body)
}

const CONSOLE_TITLE: &str = "<title>ws2http console</title>";

/// A server on every address (`0.0.0.0`, reached here through loopback);
/// killed when dropped.
struct Public {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    /// Kept open: the server writes its start-up lines there.
    _stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Public {
    fn start(extra: &[&str]) -> Public {
        use std::io::BufRead;
        let log = scratch().join("stderr.log");
        let mut child = ws2http()
            .args(["--listen", "0.0.0.0:0", "--api-listen", "127.0.0.1:0", "--cgi-bin"])
            .arg(fixtures())
            .args(extra)
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start ws2http");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a start-up line").expect("read stdout");
        let port = first.strip_prefix("ws2http: listening on http://0.0.0.0:").expect("listening line").parse();
        Public { child, port: port.expect("a port"), log, _stdout: lines }
    }

    fn wait_log(&self, needle: &str) {
        wait_for(needle, || std::fs::read_to_string(&self.log).unwrap_or_default().contains(needle).then_some(()));
    }
}

impl Drop for Public {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_console_is_off_by_default_on_a_listener_other_machines_reach() {
    let s = Public::start(&[]);
    let (status, body) = get_root(s.port, "/");
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains(CONSOLE_TITLE));
    s.wait_log(&format!("console: off because --listen 0.0.0.0:{} is not a loopback address", s.port));
    s.wait_log("turn it on with --console");

    let s = Public::start(&["--console"]);
    let (status, body) = get_root(s.port, "/");
    assert_eq!((status, body.contains(CONSOLE_TITLE)), (200, true));
    s.wait_log(&format!("console: served at http://0.0.0.0:{}/ to every client that reaches it", s.port));

    // On loopback it is on without asking, and says nothing about it.
    let s = Server::start(&[]);
    assert_eq!(get_root(s.port, "/").0, 200);
    s.wait_log("endpoints in");
    assert!(!s.log().contains("console:"), "{}", s.log());
}

#[test]
fn no_console_as_flag_variable_and_config_key() {
    let s = Server::start(&["--no-console"]);
    assert_eq!(get_root(s.port, "/").0, 404);
    s.wait_log("console: off (--no-console); GET / answers 404");

    let s = Server::start_env(&fixtures(), &[], &[("WS2HTTP_NO_CONSOLE", "1".as_ref())]);
    assert_eq!(get_root(s.port, "/").0, 404);
    let s = Server::start_env(&fixtures(), &[], &[("WS2HTTP_NO_CONSOLE", "false".as_ref())]);
    assert_eq!(get_root(s.port, "/").0, 200);

    let config = scratch().join("ws2http.toml");
    std::fs::write(&config, "no-console = true\n").expect("write config");
    let s = Server::start(&["--config", config.to_str().expect("utf-8 path")]);
    assert_eq!(get_root(s.port, "/").0, 404);
    std::fs::write(&config, "no_console = false\n").expect("write config");
    let s = Server::start(&["--config", config.to_str().expect("utf-8 path")]);
    assert_eq!(get_root(s.port, "/").0, 200);

    // The last of --console / --no-console wins, as for every flag.
    let s = Server::start(&["--no-console", "--console"]);
    assert_eq!(get_root(s.port, "/").0, 200);
}

/// The console's question about a refused handshake: the JSON answer.
fn refusal(port: u16, target: &str) -> serde_json::Value {
    let encoded: String = target
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = get_root(port, &format!("/?ws2http-refusal={encoded}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// A raw handshake for `target` from a same-origin browser page.
fn refused(port: u16, target: &str, origin: &str) -> u16 {
    status_of(&raw_http(port, &upgrade_request(target, &format!("Origin: {origin}\r\n"))))
}

#[test]
fn a_refused_handshake_is_explained_with_the_log_line_the_server_wrote() {
    let s = Server::start(&[]);
    let same = "http://127.0.0.1";
    assert_eq!(refused(s.port, "/gate.sh?key=no", same), 403);
    assert_eq!(refused(s.port, "/mirror.sh/x?y=1", "http://evil.example"), 403);
    assert_eq!(refused(s.port, "/not-executable.sh", same), 500);
    assert_eq!(refused(s.port, "/nope.sh", same), 404);
    for (target, status, reason, line) in [
        ("/gate.sh?key=no", 403, "no key, no entry", "/gate.sh open: rejected 403"),
        (
            "/mirror.sh/x?y=1",
            403,
            "cross-origin WebSocket handshakes are not allowed here",
            "/mirror.sh/x: refused a handshake from origin \"http://evil.example\" (host \"127.0.0.1\")",
        ),
        ("/not-executable.sh", 500, "the endpoint's script cannot be run; see the server log", "/not-executable.sh: "),
    ] {
        let r = refusal(s.port, target);
        assert_eq!((r["found"].as_bool(), r["status"].as_u64()), (Some(true), Some(status)), "{target}: {r}");
        assert_eq!(r["reason"], reason, "{target}");
        assert_eq!(r["log"], line, "{target}");
        s.wait_log(line);
    }
    s.wait_log("/not-executable.sh: ");
    assert!(s.log().contains("not-executable.sh is not executable"));
    // No log line for a path without a script: the answer says so (null).
    let r = refusal(s.port, "/nope.sh");
    assert_eq!((r["status"].as_u64(), r["log"].is_null()), (Some(404), true), "{r}");
    // Only the URL asked about, and only refusals.
    assert_eq!(refusal(s.port, "/gate.sh?key=other")["found"], false);
    assert_eq!(refused(s.port, "/gate.sh?key=open", same), 101);
    assert_eq!(refusal(s.port, "/gate.sh?key=open")["found"], false);
}

#[async_std::test]
async fn a_full_server_is_explained_too() {
    let s = Server::start(&["--max-connections", "1"]);
    let (_held, _) = mirror(&s, "/mirror.sh").await;
    assert_eq!(refused(s.port, "/mirror.sh", "http://127.0.0.1"), 503);
    let r = refusal(s.port, "/mirror.sh");
    assert_eq!(r["status"], 503, "{r}");
    assert_eq!(r["log"], "/mirror.sh: refused a handshake from 127.0.0.1:");
    s.wait_log("/mirror.sh: refused a handshake from 127.0.0.1:");
}

#[test]
fn without_the_console_nothing_is_kept_or_told() {
    let s = Server::start(&["--no-console"]);
    assert_eq!(refused(s.port, "/gate.sh", "http://127.0.0.1"), 403);
    assert_eq!(get_root(s.port, "/?ws2http-refusal=%2Fgate.sh").0, 404);
}
