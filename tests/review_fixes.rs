//! Fixes from the review of issue 12: the console behind a proxy, the
//! console-off 404, garbage on the HTTP port, one log escape style, prompt
//! 1009 closes, control frames under a small --max-message, and a future
//! `If-Modified-Since`. Each test runs the real binary.
mod common;
mod rawws;
use common::*;

fn body_of(resp: &str) -> String {
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

const CONSOLE_TITLE: &str = "<title>ws2http console</title>";

/// docs/DEPLOYMENT.md's deployment: nginx forwards the world to a loopback
/// listener under `--allow-host chat.example.org`. The console (and its
/// refusal lookup, keyed by an IP every proxied client shares) must not be
/// served there unless asked for.
#[test]
fn the_console_is_off_behind_a_proxy_named_by_allow_host() {
    let s = Server::start(&["--allow-host", "chat.example.org"]);
    let public = "GET / HTTP/1.1\r\nHost: chat.example.org\r\nConnection: close\r\n\r\n";
    let resp = raw_http(s.port, public);
    assert_eq!(status_of(&resp), 404, "{resp}");
    assert!(!resp.contains(CONSOLE_TITLE));
    // Not from a loopback name either: the listener is one and the same.
    let resp = raw_http(s.port, &format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", s.port));
    assert_eq!(status_of(&resp), 404, "{resp}");
    // Nor the refusal lookup.
    let q = "GET /?ws2http-refusal=%2Fnope HTTP/1.1\r\nHost: chat.example.org\r\nConnection: close\r\n\r\n";
    assert!(!raw_http(s.port, q).contains("\"status\""));
    s.wait_log("console: off because --allow-host chat.example.org names a public host");
    s.wait_log("turn it on with --console");

    let s = Server::start(&["--allow-host", "chat.example.org", "--console"]);
    let resp = raw_http(s.port, public);
    assert_eq!((status_of(&resp), resp.contains(CONSOLE_TITLE)), (200, true), "{resp}");
    s.wait_log("console: served at http://127.0.0.1:");
    s.wait_log("--allow-host chat.example.org names a public host");
}

/// With the console off, `GET /` says so and names the flag; a `--root`
/// without an index keeps a plain 404.
#[test]
fn the_console_off_404_says_how_to_turn_it_on() {
    let s = Server::start(&["--no-console"]);
    let resp = raw_http(s.port, &format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", s.port));
    assert_eq!(status_of(&resp), 404, "{resp}");
    let body = body_of(&resp);
    assert!(body.contains("console is off") && body.contains("--console"), "{body}");

    let root = scratch();
    let s = Server::start(&["--root", root.to_str().expect("utf-8 path")]);
    let resp = raw_http(s.port, &format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", s.port));
    assert_eq!(status_of(&resp), 404, "{resp}");
    assert!(!body_of(&resp).contains("console"), "{resp}");
}

/// `curl -k https://127.0.0.1:PORT/` on the plain-HTTP port: nginx answers
/// 400 at once; waiting for a line end that never comes (then 408) is not
/// an answer. With a long --http-timeout a wait would outlast the client.
#[test]
fn a_tls_client_hello_gets_400_at_once() {
    let s = Server::start(&["--http-timeout", "60"]);
    // The start of a ClientHello: handshake record, TLS 1.0, a length.
    let resp = raw_http(s.port, "\u{16}\u{3}\u{1}\u{2}\u{0}\u{1}\u{0}\u{1}\u{fc}\u{3}\u{3}");
    assert_eq!(status_of(&resp), 400, "{resp:?}");
    assert!(resp.contains("TLS"), "{resp}");
}

/// A raw space in the target makes four parts: malformed (400), not a
/// version question (505).
#[test]
fn a_request_line_of_four_parts_is_400() {
    let s = Server::start(&[]);
    let resp = raw_http(s.port, "GET /x fake HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&resp), 400, "{resp}");
    assert!(resp.contains("%20"), "{resp}");
}

/// A client's close reason reaches the log escaped as every other
/// line is (`\n`, `\x1b`, docs/OPERATIONS.md), not as Rust's `{:?}` writes
/// them (`\u{1b}`).
#[async_std::test]
async fn client_strings_are_logged_with_the_one_escape_style() {
    use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use async_tungstenite::tungstenite::protocol::CloseFrame;
    let s = Server::start(&[]);
    let (mut ws, id) = mirror(&s, "/mirror.sh").await;
    let reason = "bye\n\u{1b}[31mred \"q\"";
    ws.close(Some(CloseFrame { code: CloseCode::from(4001), reason: reason.into() })).await.expect("close");
    s.wait_log(&format!(r#"[{id}] /mirror.sh closed: 4001 "bye\n\x1b[31mred \"q\"" (client)"#));
    assert!(!s.log().contains(r"\u{1b}"), "{}", s.log());
}

/// A 2 MB message on the default server (--max-message 1 MiB): the 1009
/// close frame, then the end of the connection and the log line. (The
/// server no longer waits its 2 s close grace for an answer nobody reads:
/// the reader stopped at the refused frame.)
#[test]
fn a_too_big_message_gets_1009_then_the_connection_ends() {
    use std::io::{Read, Write};
    let s = Server::start(&[]);
    let mut ws = rawws::open(s.port, "/mirror.sh");
    let mut sender = ws.try_clone().expect("clone");
    let big = 2_000_000;
    let send = std::thread::spawn(move || {
        let _ = sender.write_all(&rawws::frame(rawws::BINARY, &vec![b'x'; big]));
        // fails once the server is gone
    });
    // mirror.sh says its id first; then the close frame.
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let close = [0x88, 17, 0x03, 0xf1];
    loop {
        let n = ws.read(&mut chunk).expect("read until the close frame");
        assert!(n > 0, "the connection ended without a close frame: {got:?}");
        got.extend_from_slice(&chunk[..n]);
        if let Some(i) = got.windows(4).position(|w| w == close) {
            assert_eq!(&got[i + 4..i + 4 + 15], b"message too big");
            break;
        }
    }
    ws.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    while matches!(ws.read(&mut chunk), Ok(n) if n > 0) {}
    // How soon it ends is a timing, not checked here: before the fix the
    // server slept its 2 s close grace first (measured 2.0 s; now ~1 ms).
    send.join().expect("sender");
    s.wait_log("/mirror.sh closed: 1009 \"message too big\" (too-big)");
}

/// A control frame is at most 125 bytes whatever --max-message says: a
/// close reason of 56 bytes is the client's close, not a 1009.
#[test]
fn a_close_reason_longer_than_max_message_is_the_clients_close() {
    use std::io::Write;
    let s = Server::start(&["--max-message", "10"]);
    let mut ws = rawws::open(s.port, "/mirror.sh");
    let reason = "x".repeat(56);
    let payload = [&4001u16.to_be_bytes()[..], reason.as_bytes()].concat();
    ws.write_all(&rawws::frame(rawws::CLOSE, &payload)).expect("send close");
    s.wait_log(&format!("/mirror.sh closed: 4001 \"{reason}\" (client)"));
    assert!(!s.log().contains("1009"), "{}", s.log());
}

/// `If-Modified-Since` later than now is not a valid date (RFC 9110
/// §13.1.3): the whole file (200), as nginx answers; a past date after the
/// file's time still gets 304.
#[test]
fn an_if_modified_since_in_the_future_is_ignored() {
    let root = scratch();
    std::fs::write(root.join("a.txt"), "hello\n").expect("write a file");
    let s = Server::start(&["--root", root.to_str().expect("utf-8 path")]);
    let ask = |date: &str| {
        raw_http(
            s.port,
            &format!(
                "GET /a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-Modified-Since: {date}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let resp = ask("Fri, 01 Jan 2100 00:00:00 GMT");
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.ends_with("hello\n"), "{resp}");
    let now = raw_http(s.port, "GET /a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let last_modified = now
        .lines()
        .find_map(|l| l.strip_prefix("last-modified: ").or_else(|| l.strip_prefix("Last-Modified: ")))
        .expect("a Last-Modified header")
        .to_owned();
    assert_eq!(status_of(&ask(&last_modified)), 304);
}
