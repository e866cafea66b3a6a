//! The HTTP front end (src/http1, src/listen.rs) with raw sockets: strict
//! parsing on every request of a connection, refusals with a status and a
//! body, bounded heads, slow clients cut off, connection limits, and log
//! lines that a client cannot forge.

mod common;
mod rawws;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

fn front() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/http-front")
}

fn start(extra: &[&str]) -> Server {
    Server::start_in(&front(), extra)
}

#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

type Conn = HttpConn;

/// One framed response at a time.
impl HttpConn {
    /// One response (Content-Length, chunked, or until the connection closes).
    fn response(&mut self) -> Resp {
        let mut head = self.line();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            head.push('\n');
            head.push_str(&l);
        }
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let mut r = Resp { status, head, body: String::new() };
        let body = if r.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            loop {
                let size = usize::from_str_radix(self.line().trim(), 16).unwrap();
                if size == 0 {
                    assert_eq!(self.line(), "");
                    break body;
                }
                body.extend(self.take(size));
                assert_eq!(self.line(), "");
            }
        } else if let Some(n) = r.header("content-length") {
            self.take(n.parse().unwrap())
        } else if status == 304 || status == 204 || status / 100 == 1 {
            Vec::new()
        } else {
            self.rest()
        };
        r.body = String::from_utf8_lossy(&body).into_owned();
        r
    }

    /// `true` when the server closes the connection (within 15 s).
    fn closed(&mut self) -> bool {
        while self.fill() {}
        true
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

#[test]
fn dot_segments_and_raw_targets_are_checked_on_every_request_of_a_connection() {
    let s = start(&[]);
    let mut c = Conn::open(s.port);
    c.send(get("/env.sh?a=%41").as_bytes());
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("uri=/env.sh?a=%41\n"), "{r:?}");
    // The same connection, kept alive: the second and third requests are
    // checked (and reported) exactly as sent, like the first.
    c.send(get("/sub/../env.sh").as_bytes());
    assert_eq!(c.response().status, 404);
    c.send(get("/./env.sh?b=%2e").as_bytes());
    assert_eq!(c.response().status, 404);
    c.send(get("/env.sh?c=%41%2F").as_bytes());
    let r = c.response();
    assert!(r.body.contains("uri=/env.sh?c=%41%2F\n"), "{r:?}");
}

#[test]
fn ambiguous_framing_is_refused_never_guessed() {
    let s = start(&[]);
    let cases = [
        ("Content-Length: 3\r\nContent-Length: 5\r\n", 400),
        ("Content-Length: 5\r\nContent-Length: 5\r\n", 400),
        ("Content-Length: +3\r\n", 400),
        ("Content-Length: 0x3\r\n", 400),
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        ("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", 400),
        ("Transfer-Encoding: identity\r\n", 501),
    ];
    for (headers, status) in cases {
        let mut c = Conn::open(s.port);
        c.send(format!("POST /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n3\r\nabc\r\n0\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, status, "{headers:?}: {r:?}");
        assert!(!r.body.is_empty(), "a refusal says why: {r:?}");
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{r:?}");
        assert!(c.closed());
    }
    s.wait_log("refused a request with 501");
    // Everyone else is served.
    let mut c = Conn::open(s.port);
    c.send(b"POST /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.ends_with("body=abcde"), "{r:?}");
}

#[test]
fn malformed_heads_get_a_status_and_a_body_and_http_1_0_is_answered() {
    let s = start(&["--max-request-head", "2048"]);
    let long_header = format!("X-Big: {}\r\n", "a".repeat(3000));
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases = [
        ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: \x01\r\n\r\n".to_string(), 400),
        ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Name: x\r\n\r\n".to_string(), 400),
        ("GET / HTTP/1.1\r\n\r\n".to_string(), 400),
        ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: b\r\n\r\n".to_string(), 400),
        (format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{long_header}\r\n"), 431),
        (format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n"), 431),
        (format!("GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "x".repeat(3000)), 414),
        ("GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n".to_string(), 505),
        ("BREW / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_string(), 501),
    ];
    for (req, status) in cases {
        let mut c = Conn::open(s.port);
        c.send(req.as_bytes());
        let r = c.response();
        assert_eq!(r.status, status, "{:?}: {r:?}", &req[..req.len().min(60)]);
        assert!(r.body.len() > 10, "{r:?}");
    }
    // HTTP/1.0: answered, with the connection closed afterwards.
    let mut c = Conn::open(s.port);
    c.send(b"GET /env.sh HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.head.starts_with("HTTP/1.1 200 OK"), "{r:?}");
    assert!(r.body.contains("uri=/env.sh\n"), "{r:?}");
    assert!(c.closed());
}

/// A script sees the whole request however long its text is: the request's
/// fields and headers are kept as one text with the offsets where each
/// ends, `u16`s under 64 KiB of text and pairs of them from there
/// (src/event.rs). The target counts twice in that text (the URI and its
/// query), so a head within --max-request-head (at most 64 KiB) crosses
/// the edge: these requests' texts run from under 65,535 bytes to over
/// 65,536 (the header `X-P` of one or two bytes takes both parities), and
/// one to ~80,000.
#[test]
fn requests_whose_text_crosses_64_kib_reach_the_script_whole() {
    let s = start(&["--max-request-head", "65536"]);
    let mut c = Conn::open(s.port);
    let lens = (32_690..32_770).chain([40_000]);
    for (n, p) in lens.flat_map(|n| [(n, "a"), (n, "ab")]) {
        let uri = format!("/env.sh?q={}", "x".repeat(n - 2));
        c.send(format!("GET {uri} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-P: {p}\r\nX-Foo: {n}\r\n\r\n"));
        let r = c.response();
        assert_eq!(r.status, 200, "{n} {p}");
        assert!(r.body.contains(&format!("uri={uri}\n")), "{n} {p}: {}", &r.body[r.body.len().saturating_sub(200)..]);
        assert!(r.body.contains(&format!("x_foo={n}\n")), "{n} {p}: {}", &r.body[r.body.len().saturating_sub(200)..]);
    }
}

#[test]
fn underscore_headers_never_merge_with_their_dash_twin() {
    let s = start(&[]);
    let mut c = Conn::open(s.port);
    c.send(b"GET /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nX_Foo: forged\r\nX-Foo: real\r\n\r\n");
    let r = c.response();
    assert!(r.body.contains("x_foo=real\n"), "{r:?}");
    c.send(b"GET /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nX_Foo: forged\r\n\r\n");
    assert!(c.response().body.contains("x_foo=unset\n"));
}

#[test]
fn clients_cannot_forge_log_lines() {
    let s = start(&[]);
    let forged = "/rooms/x%0a[2026-01-01T00:00:00Z%20WARN%20%20ws2http]%20FORGED%1b[31m";
    let r = post(&s.api(forged), "hi");
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_log("FORGED");
    let log = s.log();
    assert!(!log.lines().any(|l| l.starts_with("[2026-01-01T00:00:00Z")), "a forged line:\n{log}");
    assert!(!log.contains('\x1b'), "a terminal escape reached the log");
    assert!(log.contains("x\\n[2026-01-01T00:00:00Z WARN  ws2http] FORGED\\x1b[31m"), "{log}");
}

#[test]
fn slow_clients_are_cut_off_by_the_http_timeout() {
    let s = start(&["--http-timeout", "0.5"]);
    // A head that never ends: 408, then the connection closes.
    let mut c = Conn::open(s.port);
    c.send(b"GET /env.sh HTTP/1.1\r\nHo");
    let r = c.response();
    assert_eq!(r.status, 408, "{r:?}");
    assert!(c.closed());
    // A connection that never says anything is closed without an answer.
    let mut idle = Conn::open(s.port);
    assert!(idle.closed());
    assert!(idle.buf.is_empty());
    // A body that stops halfway: the connection is closed.
    let mut c = Conn::open(s.port);
    c.send(b"POST /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nonly this");
    assert!(c.closed());
    // A kept-alive connection idle after its response is closed too.
    let mut c = Conn::open(s.port);
    c.send(get("/env.sh").as_bytes());
    assert_eq!(c.response().status, 200);
    assert!(c.closed());
}

#[test]
fn http_connections_are_limited_per_address_and_in_all() {
    let s = start(&["--max-http-connections-per-ip", "3"]);
    let held: Vec<Conn> = (0..3).map(|_| Conn::open(s.port)).collect();
    // Make sure the three are accepted before the fourth.
    let mut probe = Conn::open(s.port);
    let r = probe.response();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    assert!(r.body.contains("too many connections"), "{r:?}");
    s.wait_log("refused a connection from 127.0.0.1 with 503");
    drop(held);
    wait_for("a free connection slot", || {
        let mut c = Conn::open(s.port);
        c.send(get("/env.sh").as_bytes());
        (c.response().status == 200).then_some(())
    });
    // The control API has limits of its own.
    let s = start(&["--max-http-connections", "2"]);
    let _held: Vec<Conn> = (0..2).map(|_| Conn::open(s.api_port)).collect();
    let mut c = Conn::open(s.api_port);
    assert_eq!(c.response().status, 503);
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn half_sent_heads_cost_nothing_while_they_wait() {
    let s = start(&["--max-http-connections-per-ip", "2000", "--max-http-connections", "2000"]);
    let mut conns: Vec<Conn> = (0..400).map(|_| Conn::open(s.port)).collect();
    for c in &mut conns {
        c.send(b"G");
    }
    let before = cpu_ticks(s.child.id());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let used = cpu_ticks(s.child.id()) - before;
    // Waiting costs nothing per connection: no polling, only reads when
    // bytes arrive (the old peek loop spent about 1 CPU-second here).
    assert!(used < 25, "400 waiting connections used {used} ticks of CPU in 2 s");
    for c in &mut conns {
        c.send(b"ET /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    }
    for c in &mut conns[..10] {
        assert_eq!(c.response().status, 200);
    }
}

#[test]
fn pipelined_requests_and_early_websocket_frames_are_not_lost() {
    let s = start(&[]);
    let mut c = Conn::open(s.port);
    c.send(format!("{}{}", get("/env.sh?one"), get("/env.sh?two")).as_bytes());
    assert!(c.response().body.contains("uri=/env.sh?one\n"));
    assert!(c.response().body.contains("uri=/env.sh?two\n"));
    // A handshake and the first frame in one write.
    let mut c = Conn::open(s.port);
    let mut bytes = upgrade_request("/ws.sh", "").into_bytes();
    let (mask, payload) = ([1u8, 2, 3, 4], b"early");
    bytes.extend([0x81, 0x80 | payload.len() as u8]);
    bytes.extend(mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    c.send(bytes);
    let r = c.response();
    assert_eq!(r.status, 101, "{r:?}");
    assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none(), "{r:?}");
    let frame = c.take(2);
    assert_eq!(frame[0], 0x81);
    let text = c.take(frame[1] as usize);
    assert_eq!(text, b"got: early");
}

#[test]
fn expect_continue_is_answered_before_the_body() {
    let s = start(&["--http-timeout", "2"]);
    let mut c = Conn::open(s.port);
    c.send(b"POST /upload.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 100, "{r:?}");
    c.send(b"data");
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "body=data", "{r:?}");
    // A script that answers before reading: no 100 Continue after (or
    // inside) the final response.
    c.send(b"POST /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    if r.status == 100 {
        c.send(b"more");
        let r = c.response();
        assert!(r.status == 200 && r.body.ends_with("body=more"), "{r:?}");
    } else {
        assert_eq!(r.status, 200, "{r:?}");
        assert!(!r.body.contains("100 Continue"), "{r:?}");
    }
}

#[test]
fn a_loopback_listener_answers_only_to_its_own_names() {
    let s = start(&[]);
    let ask = |host: &str, req: String| {
        let mut c = Conn::open(s.port);
        c.send(req.replace("Host: 127.0.0.1", &format!("Host: {host}")).as_bytes());
        c.response()
    };
    // DNS rebinding: a page on a name pointed at 127.0.0.1 reads nothing,
    // opens no WebSocket, runs no script.
    for host in ["rebind.evil.example", &format!("rebind.evil.example:{}", s.port), "localhost.evil.example"] {
        for req in [get("/"), get("/env.sh"), upgrade_request("/ws.sh", "")] {
            let r = ask(host, req.clone());
            assert_eq!(r.status, 421, "{host} {req:?}: {r:?}");
            assert!(r.body.contains("--allow-host"), "{r:?}");
        }
    }
    s.wait_log("refused a request for Host \"rebind.evil.example\" with 421");
    for host in ["localhost", &format!("localhost:{}", s.port), "app.localhost:8080", "127.0.0.1:1", "[::1]"] {
        assert_eq!(ask(host, get("/env.sh")).status, 200, "{host}");
    }
    // A name given with --allow-host (the public name a proxy passes).
    let s = start(&["--allow-host", "chat.example.org"]);
    let mut c = Conn::open(s.port);
    c.send(get("/env.sh").replace("127.0.0.1", "chat.example.org").as_bytes());
    assert_eq!(c.response().status, 200);
    c.send(get("/env.sh").replace("127.0.0.1", "other.example.org").as_bytes());
    assert_eq!(c.response().status, 421);
}

#[test]
fn a_slow_body_holds_no_script_slot() {
    // One script at a time: a client trickling its body must not hold it.
    let s = start(&["--max-procs", "1"]);
    let mut slow = Conn::open(s.port);
    slow.send(b"POST /upload.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nab");
    for i in 0..3 {
        let mut c = Conn::open(s.port);
        c.send(get(&format!("/env.sh?other={i}")).as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200, "{r:?}");
    }
    slow.send(b"cdefghij");
    let r = slow.response();
    assert_eq!((r.status, r.body.as_str()), (200, "body=abcdefghij"), "{r:?}");
}

#[test]
fn a_broken_or_short_body_never_reaches_the_script() {
    let s = start(&[]);
    let cases: [&[u8]; 3] = [
        b"POST /upload.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\nEVIL!!\r\n0\r\n\r\n",
        b"POST /upload.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        b"POST /upload.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nhello",
    ];
    for req in cases {
        let mut c = Conn::open(s.port);
        c.send(req);
        let _ = c.s.shutdown(std::net::Shutdown::Write);
        let r = c.response();
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.body.contains("ended early") || r.body.contains("malformed"), "{r:?}");
    }
    assert!(!s.log().contains("POST /upload.sh 127.0.0.1: ok"), "a script ran:\n{}", s.log());
    // A chunked body that is fine reaches the script whole, with its length.
    let mut c = Conn::open(s.port);
    c.send(b"POST /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    let r = c.response();
    assert!(r.body.contains("length=5\n") && r.body.ends_with("body=abcde"), "{r:?}");
}

#[test]
fn request_bodies_for_scripts_are_bounded_per_request_and_in_all() {
    let s = start(&["--max-request-body", "1000", "--max-request-body-total", "1500"]);
    let post = |len: &str| format!("POST /upload.sh HTTP/1.1\r\nHost: 127.0.0.1\r\n{len}\r\n\r\n");
    let mut c = Conn::open(s.port);
    c.send(post("Content-Length: 2000").as_bytes());
    assert_eq!(c.response().status, 413);
    let mut c = Conn::open(s.port);
    c.send(post("Transfer-Encoding: chunked").as_bytes());
    c.send(format!("7d0\r\n{}\r\n0\r\n\r\n", "x".repeat(2000)).as_bytes());
    assert_eq!(c.response().status, 413);
    // Two bodies of 1000 bytes at once do not fit 1500.
    let mut first = Conn::open(s.port);
    first.send(format!("{}x", post("Content-Length: 1000")).as_bytes());
    wait_for("the first body to be held", || {
        common::get(&s.api("/metrics")).body.contains("\nws2http_request_body_bytes 1000\n").then_some(())
    });
    let mut c = Conn::open(s.port);
    c.send(format!("{}{}", post("Content-Length: 1000"), "y".repeat(1000)).as_bytes());
    assert_eq!(c.response().status, 503);
    first.send("x".repeat(999).as_bytes());
    let r = first.response();
    assert_eq!(r.status, 200, "{r:?}");
    s.wait_log("--max-request-body-total");
    wait_for("every body given back", || {
        common::get(&s.api("/metrics")).body.contains("\nws2http_request_body_bytes 0\n").then_some(())
    });
}

#[test]
fn a_client_must_keep_sending_its_body_and_reading_its_response() {
    let s = start(&["--http-timeout", "1"]);
    // A byte every 0.4 s never stalls for a whole --http-timeout, but falls
    // far behind the minimum rate: cut off.
    let mut c = Conn::open(s.port);
    c.send(b"POST /upload.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n");
    let mut answered = None;
    for _ in 0..40 {
        if c.s.write_all(b"z").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(400));
        c.s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let got = c.s.read(&mut b);
        c.s.set_nonblocking(false).unwrap();
        if let Ok(n) = got {
            answered = Some(String::from_utf8_lossy(&b[..n]).into_owned());
            break;
        }
    }
    let answered = answered.expect("the server gave up on the slow body");
    assert!(answered.starts_with("HTTP/1.1 408") || answered.is_empty(), "{answered:?}");
}

#[test]
fn methods_are_case_sensitive_and_upgrades_carry_no_body() {
    let s = start(&[]);
    let mut c = Conn::open(s.port);
    c.send(b"get /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(c.response().status, 501);
    let mut c = Conn::open(s.port);
    let mut req = upgrade_request("/ws.sh", "Content-Length: 4\r\n").into_bytes();
    req.extend([0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
    c.send(req);
    assert_eq!(c.response().status, 400);
    // A 421 ends the connection: a pipelined request after it is not served.
    let mut c = Conn::open(s.port);
    c.send(format!("{}{}", get("/env.sh").replace("127.0.0.1", "evil.example"), get("/env.sh")).as_bytes());
    assert_eq!(c.response().status, 421);
    assert!(c.closed() && c.buf.is_empty(), "{:?}", String::from_utf8_lossy(&c.buf));
}

#[test]
fn an_unanswered_expect_closes_the_connection_and_1xx_is_never_final() {
    let s = start(&[]);
    // The 100 Continue is not sent (404 needs no body): the body the client
    // may still send must not be read as the next request.
    let mut c = Conn::open(s.port);
    c.send(b"POST /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.header("connection").as_deref(), Some("close"), "{r:?}");
    assert!(c.closed());
    // HTTP/1.0 knows no 1xx answers: no 100 Continue for it.
    let mut c = Conn::open(s.port);
    c.send(b"POST /upload.sh HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok");
    let r = c.response();
    assert_eq!((r.status, r.body.as_str()), (200, "body=ok"), "{r:?}");
    // A script's 103 is not a final answer: 502, not a response that never ends.
    let mut c = Conn::open(s.port);
    c.send(get("/early.sh").as_bytes());
    assert_eq!(c.response().status, 502);
    s.wait_log("which is not final; answering 502");
}

/// `--listen` repeated: the same site on each address, each listener with
/// the rules it would have alone. Here a loopback one (Host checked against
/// DNS rebinding, console served) beside one on every interface (any Host,
/// no console), each script told its own listener's port, and a page on
/// either may open a WebSocket on its own port (the Origin check takes the
/// accepting listener's port, not the first one's).
#[test]
fn every_listen_address_serves_the_site_with_its_own_rules() {
    let scripts = cgi_bin(&[(
        "port.sh",
        "if [ -n \"$WS_EVENT\" ]; then echo \"port $SERVER_PORT\"; \
         else printf 'Content-Type: text/plain\\n\\nport %s\\n' \"$SERVER_PORT\"; fi",
    )]);
    let mut child = ws2http()
        .args(["--listen", "127.0.0.1:0", "--listen", "0.0.0.0:0", "--api-listen", "127.0.0.1:0", "--cgi-bin"])
        .arg(&scripts)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ws2http");
    let stdout = child.stdout.take().expect("stdout");
    let _stop = Kill(&mut child);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut next = || lines.next().expect("a start-up line").expect("read stdout");
    let mut port_of = |prefix: &str| -> u16 {
        let line = next();
        let rest = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?} should start with {prefix:?}"));
        rest.parse().expect("port")
    };
    let lo = port_of("ws2http: listening on http://127.0.0.1:");
    let any = port_of("ws2http: listening on http://0.0.0.0:");
    port_of("ws2http: control API on http://127.0.0.1:");
    let request = |port: u16, target: &str, host: &str| {
        raw_http(port, &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"))
    };
    for port in [lo, any] {
        let page = request(port, "/port.sh", &format!("localhost:{port}"));
        assert!(page.starts_with("HTTP/1.1 200") && page.contains(&format!("\r\nport {port}\n")), "{port}: {page}");
        let mut ws = rawws::open_with(
            port,
            "/port.sh",
            &[&format!("Host: localhost:{port}"), &format!("Origin: http://127.0.0.1:{port}")],
        );
        assert_eq!(rawws::read_text(&mut ws), format!("port {port}"));
    }
    // DNS rebinding: refused on the loopback listener only.
    assert_eq!(status_of(&request(lo, "/port.sh", "rebind.evil.example")), 421);
    assert_eq!(status_of(&request(any, "/port.sh", "rebind.evil.example")), 200);
    // The console: on the loopback listener only.
    assert!(request(lo, "/", "127.0.0.1").contains("<title>ws2http console</title>"));
    let off = request(any, "/", "127.0.0.1");
    assert!(off.starts_with("HTTP/1.1 404") && off.contains("the console is off"), "{off}");
}

/// Kills the server when the test ends, passed or not.
struct Kill<'a>(&'a mut std::process::Child);

impl Drop for Kill<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_listen_address_that_cannot_be_bound_is_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = ws2http()
        .args(["--listen", "127.0.0.1:0", "--listen", &format!("127.0.0.1:{port}"), "--api-listen", "127.0.0.1:0"])
        .arg("--cgi-bin")
        .arg(fixtures())
        .output()
        .expect("run ws2http");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port} (--listen)")) && err.lines().count() == 1,
        "{err}"
    );
}
