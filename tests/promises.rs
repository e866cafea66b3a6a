//! Promises of the docs that had no test: each test checks one sentence of
//! docs/PROTOCOL.md, docs/OPERATIONS.md or docs/SECURITY.md through the
//! binary, with scripts written into a scratch `--cgi-bin`.

mod common;
mod procfs;
mod rawws;

use std::io::{Read, Write};
use std::net::TcpStream;

use async_tungstenite::tungstenite::Message;
use common::*;

/// Echoes each message; says nothing on open and close.
const ECHO: &str = r#"[ "$WS_EVENT" = message ] && cat; exit 0"#;

/// Each message names a variable; the reply is `NAME=value` (`NAME=` when unset).
const VAR: &str = r#"[ "$WS_EVENT" = message ] || exit 0
name=$(cat)
printf '%s=%s\n' "$name" "$(printenv "$name")""#;

/// Sends `text` as one message on a raw connection and returns the reply.
fn ask(s: &mut TcpStream, text: &str) -> String {
    s.write_all(&rawws::frame(rawws::TEXT, text.as_bytes())).unwrap();
    rawws::read_text(s)
}

// docs/PROTOCOL.md, Ordering and failures: "A failing open script answers
// 500; nothing it printed is applied."
#[async_std::test]
async fn a_failing_open_applies_nothing_it_printed() {
    let gate = r#"case "$WS_EVENT:$QUERY_STRING" in
open:) exit 0 ;;
open:*) echo "@join lobby"; echo "@set k v"; echo "@room lobby leaked-room"
        echo "@others lobby leaked-others"; echo "@broadcast leaked-broadcast"
        echo "@send $QUERY_STRING leaked-send"; echo "@close 4000 leaked-close"; exit 1 ;;
message:*) cat ;;
esac"#;
    let s = Server::start_in(&cgi_bin(&[("gate.sh", gate)]), &[]);
    let mut w = connect(&s.url("/gate.sh")).await;
    let id = only_id(&s, "/gate.sh");
    w.send(Message::text("@join lobby\njoined")).await.unwrap();
    assert_eq!(next_text(&mut w).await, "joined");

    let resp = raw_http(s.port, &upgrade_request(&format!("/gate.sh?{id}"), ""));
    assert_eq!(status_of(&resp), 500, "{resp}");
    s.wait_log("/gate.sh open: script failed");
    // No message reached the watcher, it is still open, alone in the room.
    sentinel(&s.api(&format!("/send/{id}")), &mut w).await;
    assert_eq!(get(&s.api("/rooms")).body, r#"{"lobby":1}"#);
    assert_eq!(conn_ids(&s.api("/connections")), vec![id.clone()]);
    assert_eq!(get(&s.api(&format!("/connections/{id}"))).json()["metadata"], serde_json::json!({}));
}

// docs/PROTOCOL.md, Decisions: SIGTERM closes every connection with 1001,
// runs the close events, then stops every process group still alive;
// "nothing ws2http started outlives it".
#[async_std::test]
async fn shutdown_stops_a_running_script_and_runs_the_close_event() {
    let sleeper = r#"printf '%s %s\n' "$WS_EVENT" "$WS_CLOSE_CAUSE" >> "$EVENTS_LOG"
[ "$WS_EVENT" = message ] && exec sleep 600
exit 0"#;
    let mut s = Server::start_in(&cgi_bin(&[("sleeper.sh", sleeper)]), &["--timeout", "2"]);
    let mut ws = connect(&s.url("/sleeper.sh")).await;
    ws.send(Message::text("go")).await.unwrap();
    s.wait_event("the message event", |l| l.starts_with("message"));
    let env_var = format!("EVENTS_LOG={}", s.dir.join("events.log").display());
    let pid = s.child.id();
    assert_eq!(procfs::processes_with_env(&env_var, pid).len(), 1, "the sleeping script runs");
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(s.events().contains(&"close shutdown".to_owned()), "{:?}", s.events());
    wait_for("the script's process gone", || procfs::processes_with_env(&env_var, pid).is_empty().then_some(()));
}

// docs/OPERATIONS.md and SECURITY.md: logs carry ids, paths, addresses,
// codes, script stderr; "never request headers, cookies, tokens, or the
// payloads clients send" (at the most verbose level, too).
#[async_std::test]
async fn logs_never_carry_cookies_headers_tokens_or_payloads() {
    let page = r#"printf 'Content-Type: text/plain\n\nok\n'"#;
    let dir = cgi_bin(&[("echo.sh", ECHO), ("page.sh", page)]);
    let s = Server::start_env(
        &dir,
        &["--api-token", "token-secret-5"],
        // ws2http's own most verbose level (what -vv gives).
        &[("RUST_LOG", "ws2http=trace".as_ref())],
    );
    let mut ws = rawws::open_with(
        s.port,
        "/echo.sh",
        &["Host: 127.0.0.1", "Cookie: sid=cookie-secret-1", "X-Note: header-secret-2"],
    );
    assert_eq!(ask(&mut ws, "payload-secret-3"), "payload-secret-3");
    ws.write_all(&rawws::frame(rawws::BINARY, b"binary-secret-4")).unwrap();
    assert_eq!(rawws::read_frame(&mut ws).map(|f| f.1), Some(b"binary-secret-4".to_vec()));
    // A refused handshake and a classic CGI request with a body.
    let refused = raw_http(
        s.port,
        &upgrade_request("/echo.sh", "Origin: http://evil.example\r\nCookie: sid=cookie-secret-6\r\n"),
    );
    assert_eq!(status_of(&refused), 403);
    let page = raw_http(
        s.port,
        "POST /page.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: sid=cookie-secret-7\r\nContent-Length: 13\r\n\
         Connection: close\r\n\r\nbody-secret-8",
    );
    assert_eq!(status_of(&page), 200, "{page}");
    ws.write_all(&rawws::frame(rawws::CLOSE, &1000u16.to_be_bytes())).unwrap();
    s.wait_log("/echo.sh close: ok");
    s.wait_log("/page.sh");
    let log = s.log();
    for secret in ["secret-1", "secret-2", "secret-3", "secret-4", "secret-5", "secret-6", "secret-7", "secret-8"] {
        assert!(!log.contains(secret), "the log holds {secret}:\n{log}");
    }
}

// docs/PROTOCOL.md, Endpoint mapping: percent-encoded backslashes (`%5c`)
// are refused with 404, for upgrades and plain requests alike. A file
// whose name holds a backslash exists, so decoding would find a script.
#[test]
fn an_encoded_backslash_is_refused() {
    let s = Server::start_in(&cgi_bin(&[("a\\b.sh", ECHO)]), &[]);
    for path in ["/a%5cb.sh", "/a%5Cb.sh"] {
        let up = raw_http(s.port, &upgrade_request(path, ""));
        assert_eq!(status_of(&up), 404, "upgrade {path}: {up}");
        let get = raw_http(s.port, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
        assert_eq!(status_of(&get), 404, "GET {path}: {get}");
    }
}

// docs/PROTOCOL.md, Classic CGI: `Connection`, `Transfer-Encoding`,
// `Keep-Alive` and `Upgrade` are the server's to decide; `Content-Length`
// is used as the response length, otherwise the body is sent chunked.
#[test]
fn classic_cgi_hop_by_hop_headers_are_the_servers() {
    let hop = r#"printf 'Content-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: timeout=99\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nContent-Length: 5\r\nX-Kept: yes\r\n\r\nhello'"#;
    let nolen = r#"printf 'Content-Type: text/plain\r\n\r\nhello'"#;
    let s = Server::start_in(&cgi_bin(&[("hop.sh", hop), ("nolen.sh", nolen)]), &[]);
    let resp = raw_http(s.port, "GET /hop.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let (head, body) = resp.split_once("\r\n\r\n").expect("a response head");
    let head = head.to_ascii_lowercase();
    let lines: Vec<&str> = head.lines().collect();
    assert_eq!(lines[0], "http/1.1 200 ok", "{resp}");
    assert!(lines.contains(&"content-length: 5"), "{resp}");
    assert!(lines.contains(&"x-kept: yes"), "{resp}");
    assert!(lines.contains(&"connection: close"), "the server's own Connection: {resp}");
    for name in ["transfer-encoding:", "keep-alive:", "upgrade:", "connection: keep-alive"] {
        assert!(!lines.iter().any(|l| l.starts_with(name)), "{name} passed through: {resp}");
    }
    assert_eq!(body, "hello");

    let resp = raw_http(s.port, "GET /nolen.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let (head, body) = resp.split_once("\r\n\r\n").expect("a response head");
    let head = head.to_ascii_lowercase();
    assert!(head.lines().any(|l| l == "transfer-encoding: chunked"), "{resp}");
    assert!(!head.contains("content-length"), "{resp}");
    assert_eq!(body, "5\r\nhello\r\n0\r\n\r\n");
}

// docs/PROTOCOL.md: --max-message is the largest message a client may
// send, bigger → close 1009 (cause too-big); a message is all its frames.
#[test]
fn max_message_counts_a_message_split_into_many_small_frames() {
    let s = Server::start_in(&cgi_bin(&[("echo.sh", ECHO)]), &["--max-message", "1000"]);
    // 1000 bytes in ten frames: exactly the limit, echoed.
    let mut ok = rawws::open(s.port, "/echo.sh");
    for i in 0..10u8 {
        let op = if i == 0 { rawws::TEXT } else { rawws::CONTINUATION };
        ok.write_all(&rawws::frame_with(i == 9, 0, op, &[b'a' + i; 100], true)).unwrap();
    }
    let want: String = (0..10u8).map(|i| String::from_utf8(vec![b'a' + i; 100]).unwrap()).collect();
    assert_eq!(rawws::read_text(&mut ok), want);
    // 1001 bytes: eleven frames of at most 100 bytes, none big by itself.
    let mut big = rawws::open(s.port, "/echo.sh");
    big.write_all(&rawws::frame_with(false, 0, rawws::TEXT, &[b'x'; 100], true)).unwrap();
    for i in 1..11 {
        let len = if i == 10 { 1 } else { 100 };
        big.write_all(&rawws::frame_with(i == 10, 0, rawws::CONTINUATION, &vec![b'x'; len], true)).unwrap();
    }
    assert_eq!(rawws::read_close(&mut big).map(|c| c.0), Some(1009));
    wait_for("the too-big close in the log", || s.log().contains("too-big").then_some(()));
    // The first connection is unaffected.
    assert_eq!(ask(&mut ok, "still"), "still");
}

// docs/PROTOCOL.md, line mode: `@close [CODE [REASON]]`, CODE 1000–1003,
// 1007–1014 or 3000–4999, REASON at most 123 bytes; a malformed directive
// is logged and skipped.
#[async_std::test]
async fn close_directive_codes_and_reason_length() {
    let s = Server::start_in(&cgi_bin(&[("echo.sh", ECHO)]), &[]);
    let mut ws = connect(&s.url("/echo.sh")).await;
    let long = "r".repeat(124);
    for bad in ["999", "1004", "1005", "1006", "1015", "2999", "5000", &format!("4000 {long}")] {
        ws.send(Message::text(format!("@close {bad}\nstill open"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "still open", "@close {bad} must be skipped");
    }
    assert_eq!(s.log().matches("skipped \"@close ").count(), 8, "{}", s.log());
    // A raw client: a library may refuse codes it does not know (1014).
    let reason = "q".repeat(123);
    for code in [1000u16, 1003, 1007, 1014, 3000, 4999] {
        let mut raw = rawws::open(s.port, "/echo.sh");
        raw.write_all(&rawws::frame(rawws::TEXT, format!("@close {code} {reason}").as_bytes())).unwrap();
        assert_eq!(rawws::read_close(&mut raw), Some((code, reason.clone())), "@close {code}");
    }
}

// docs/PROTOCOL.md, Environment: repeated headers are joined with ", ",
// cookies with "; ".
#[test]
fn repeated_cookie_headers_are_joined_with_semicolons() {
    let s = Server::start_in(&cgi_bin(&[("var.sh", VAR)]), &[]);
    let mut ws = rawws::open_with(
        s.port,
        "/var.sh",
        &["Host: 127.0.0.1", "Cookie: a=1", "X-Multi: x", "Cookie: b=2", "X-Multi: y"],
    );
    assert_eq!(ask(&mut ws, "HTTP_COOKIE"), "HTTP_COOKIE=a=1; b=2");
    assert_eq!(ask(&mut ws, "HTTP_X_MULTI"), "HTTP_X_MULTI=x, y");
}

// docs/PROTOCOL.md, Environment: SERVER_NAME is the host name the client
// connected to, from the Host header; SERVER_PORT the port. The address
// (127.0.0.1) differs from the names used here.
#[test]
fn server_name_comes_from_the_host_header() {
    let page = r#"printf 'Content-Type: text/plain\n\n%s %s\n' "$SERVER_NAME" "$SERVER_PORT""#;
    let s = Server::start_in(&cgi_bin(&[("var.sh", VAR), ("page.sh", page)]), &["--allow-host", "app.example"]);
    for (host, name) in [
        (format!("localhost:{}", s.port), "localhost"),
        ("app.example".to_owned(), "app.example"),
        ("app.example:8443".to_owned(), "app.example"),
    ] {
        let mut ws = rawws::open_with(s.port, "/var.sh", &[&format!("Host: {host}")]);
        assert_eq!(ask(&mut ws, "SERVER_NAME"), format!("SERVER_NAME={name}"), "Host: {host}");
    }
    let resp =
        raw_http(s.port, &format!("GET /page.sh HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n", s.port));
    assert!(resp.contains(&format!("\r\nlocalhost {}\n", s.port)), "{resp}");
}

// docs/PROTOCOL.md, Running: "A repeatable flag given through its
// environment variable takes a comma-separated list"; spaces around
// --pass-env names are dropped.
#[test]
fn repeatable_flags_take_comma_lists_from_their_variables() {
    let dir = cgi_bin(&[("var.sh", VAR)]);
    let s = Server::start_env(
        &dir,
        &[],
        &[
            ("WS2HTTP_PASS_ENV", "FIRST_ONE, SECOND_ONE".as_ref()),
            ("WS2HTTP_ALLOW_ORIGIN", "https://a.example,https://b.example".as_ref()),
            ("FIRST_ONE", "1".as_ref()),
            ("SECOND_ONE", "2".as_ref()),
            ("THIRD_ONE", "3".as_ref()),
        ],
    );
    let mut ws = rawws::open_with(s.port, "/var.sh", &["Host: 127.0.0.1"]);
    assert_eq!(ask(&mut ws, "FIRST_ONE"), "FIRST_ONE=1");
    assert_eq!(ask(&mut ws, "SECOND_ONE"), "SECOND_ONE=2");
    assert_eq!(ask(&mut ws, "THIRD_ONE"), "THIRD_ONE=");
    for (origin, want) in [("https://a.example", 101), ("https://b.example", 101), ("https://c.example", 403)] {
        let resp = raw_http(s.port, &upgrade_request("/var.sh", &format!("Origin: {origin}\r\n")));
        assert_eq!(status_of(&resp), want, "Origin: {origin}: {resp}");
    }
}

// docs/OPERATIONS.md: `--ping-interval` … "`0` turns pings off". A peer
// that never answers stays connected and gets no ping, while a server with
// pings on drops such peers one after another meanwhile.
#[test]
fn ping_interval_zero_turns_pings_off() {
    let dir = cgi_bin(&[("echo.sh", ECHO)]);
    let off = Server::start_in(&dir, &["--ping-interval", "0"]);
    let on = Server::start_in(&dir, &["--ping-interval", "0.1"]);
    let mut quiet = rawws::open(off.port, "/echo.sh");
    let id = only_id(&off, "/echo.sh");
    // Three silent peers dropped in turn by the other server: several of
    // its intervals have passed.
    for n in 1..=3 {
        let _peer = rawws::open(on.port, "/echo.sh");
        wait_for("a ping-timeout", || (on.log().matches("no answer to a ping").count() == n).then_some(()));
    }
    assert_eq!(conn_ids(&off.api("/connections")), [id]);
    quiet.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    match quiet.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("expected nothing from the server, got {other:?}"),
    }
    assert!(!off.log().contains("no answer to a ping"), "{}", off.log());
}

// docs/PROTOCOL.md, Control API: `GET /rooms` is sorted by name; a
// connection's `rooms` is a sorted array; `WS_ROOMS` is sorted. Compared as
// text: a JSON comparison ignores the order of keys.
#[async_std::test]
async fn room_listings_are_sorted_by_name() {
    let s = Server::start_in(&cgi_bin(&[("echo.sh", ECHO), ("var.sh", VAR)]), &[]);
    let mut a = connect(&s.url("/echo.sh")).await;
    let ida = only_id(&s, "/echo.sh");
    let mut b = connect(&s.url("/var.sh")).await;
    let idb = only_id(&s, "/var.sh");
    a.send(Message::text("@join zeta\n@join alpha\n@join Mid\n@join beta-2\n@join 10\ndone")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "done");
    let r = post(&s.api("/actions"), &format!("@join {idb} alpha\n@join {idb} zz\n@join {idb} a"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(get(&s.api("/rooms")).body, r#"{"10":1,"Mid":1,"a":1,"alpha":2,"beta-2":1,"zeta":1,"zz":1}"#);
    let conn = get(&s.api(&format!("/connections/{ida}"))).body;
    assert!(conn.contains(r#""rooms":["10","Mid","alpha","beta-2","zeta"]"#), "{conn}");
    b.send(Message::text("WS_ROOMS")).await.unwrap();
    assert_eq!(next_text(&mut b).await, "WS_ROOMS=a alpha zz");
}
