//! The built-in console and what a page on this machine may open: the
//! loopback names (`localhost`, `127.0.0.1`, `[::1]`) on the listener's own
//! port are one site for the Origin check, and nothing else is (other ports,
//! look-alike names, DNS rebinding).

mod common;
use common::*;

fn status_of(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

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
