//! Issue 12, "HTTP like nginx (RFC 9110)": the exact bytes a client sees
//! (status line, headers present and absent, body, whether the connection
//! stays open), one test per point of the issue, plus HEAD everywhere.
//!
//! Also covered elsewhere: tests/http_front.rs
//! `malformed_heads_get_a_status_and_a_body_and_http_1_0_is_answered`
//! (every refusal status with a body; HTTP/1.0 to a script).

mod common;
use std::path::{Path, PathBuf};

use common::*;

fn front() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/http-front")
}

/// A site for `--root`: `f.txt` (18 bytes) and `d/index.html`.
fn site() -> PathBuf {
    let root = scratch().join("site");
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::write(root.join("f.txt"), "line1\nline2\nline3\n").unwrap();
    std::fs::write(root.join("d/index.html"), "<p>d</p>\n").unwrap();
    root
}

fn with_root(root: &Path) -> Server {
    Server::start_in(&front(), &["--root", root.to_str().unwrap()])
}

/// One response as bytes: its head (varying values replaced: `date`,
/// `etag`, `last-modified` become `*`) and its body.
#[derive(Debug)]
struct Resp {
    head: String,
    body: Vec<u8>,
}

type Conn = HttpConn;

/// Responses with their exact heads (see [`normalize`]).
impl HttpConn {
    /// The next response head, and a body of `body_len` bytes (`None`:
    /// read until the server closes).
    fn response(&mut self, body_len: impl Fn(&str) -> Option<usize>) -> Resp {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill(), "the connection ended inside a head: {:?}", String::from_utf8_lossy(&self.buf));
        };
        let head = normalize(&String::from_utf8(self.take(end)).unwrap());
        let body = match body_len(&head) {
            Some(n) => self.take(n),
            None => self.rest(),
        };
        Resp { head, body }
    }

    /// A response framed by its Content-Length (none: no body).
    fn framed(&mut self) -> Resp {
        self.response(|h| Some(header(h, "content-length").map_or(0, |n| n.parse().unwrap())))
    }
}

fn normalize(head: &str) -> String {
    head.split("\r\n")
        .map(|l| match l.split_once(": ") {
            Some((n, _)) if ["date", "etag", "last-modified"].contains(&n) => format!("{n}: *"),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| l.split_once(": ").filter(|(n, _)| *n == name).map(|(_, v)| v))
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n")
}

fn head_req(path: &str) -> String {
    format!("HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

/// The control API answers to its own address, port included.
fn to_api(req: String, port: u16) -> String {
    req.replace("Host: 127.0.0.1\r\n", &format!("Host: 127.0.0.1:{port}\r\n"))
}

const TEXT: &str = "content-type: text/plain; charset=utf-8";
const FILE_HEAD: &str = "HTTP/1.1 200 OK\r\naccept-ranges: bytes\r\ncontent-type: text/plain; charset=utf-8\r\n\
                         etag: *\r\nlast-modified: *\r\ndate: *\r\ncontent-length: 18\r\n";

#[test]
fn http_1_0_is_answered_and_closed_unless_it_asks_to_keep_alive_like_apachebench() {
    let root = site();
    let s = with_root(&root);
    // Plain HTTP/1.0 (curl -0, health checkers): answered, `connection:
    // close`, then the end of the connection.
    let mut c = Conn::open(s.port);
    c.send("GET /f.txt HTTP/1.0\r\n\r\n");
    let r = c.framed();
    assert_eq!(r.head, format!("{FILE_HEAD}connection: close\r\n\r\n"));
    assert_eq!(r.body, b"line1\nline2\nline3\n");
    assert!(c.closed_clean());
    // ApacheBench -k: HTTP/1.0 with `Connection: Keep-Alive`, several
    // requests on one connection, each framed by its Content-Length.
    let ab = "GET /f.txt HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1\r\nUser-Agent: ApacheBench/2.3\r\n\
              Accept: */*\r\n\r\n";
    let mut c = Conn::open(s.port);
    for _ in 0..3 {
        c.send(ab);
        let r = c.framed();
        assert_eq!(r.head, format!("{FILE_HEAD}connection: keep-alive\r\n\r\n"));
        assert_eq!(r.body, b"line1\nline2\nline3\n");
    }
    // Without it, the last one closes.
    c.send("GET /f.txt HTTP/1.0\r\nUser-Agent: ApacheBench/2.3\r\n\r\n");
    assert_eq!(c.framed().head, format!("{FILE_HEAD}connection: close\r\n\r\n"));
    assert!(c.closed_clean());
    // A script's body has no length: HTTP/1.0 gets it delimited by the
    // close, even when it asked to keep the connection (no chunked in 1.0).
    let mut c = Conn::open(s.port);
    c.send("GET /env.sh HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response(|_| None);
    assert_eq!(r.head, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: *\r\nconnection: close\r\n\r\n");
    assert_eq!(String::from_utf8_lossy(&r.body), "uri=/env.sh\nx_foo=unset\nlength=unset\nbody=");
}

#[test]
fn connection_close_is_honoured_and_keep_alive_is_the_http_1_1_default() {
    let root = site();
    let s = with_root(&root);
    let mut c = Conn::open(s.port);
    c.send(get("/f.txt", ""));
    assert_eq!(c.framed().head, format!("{FILE_HEAD}\r\n"), "kept: no connection header");
    // `Connection: close` (any case, in a list): answered with
    // `connection: close`, and a request pipelined after it is not read.
    c.send(format!("{}{}", get("/f.txt", "Connection: TE, Close\r\n"), get("/f.txt", "")));
    let r = c.framed();
    assert_eq!(r.head, format!("{FILE_HEAD}connection: close\r\n\r\n"));
    assert_eq!(r.body, b"line1\nline2\nline3\n");
    assert!(c.closed_clean(), "nothing after the close");
}

#[test]
fn malformed_requests_get_400_or_431_with_a_body_then_the_close() {
    let s = Server::start_in(&front(), &["--max-request-head", "2048"]);
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases = [
        (get("/", "X-Bad: a\x01b\r\n"), "400 Bad Request", "Bad Request: malformed request head"),
        (
            get("/", "X-Bad: caf\u{e9}\r\n"),
            "400 Bad Request",
            "Bad Request: header X-Bad has bytes that are not visible ASCII",
        ),
        (
            get("/", &many),
            "431 Request Header Fields Too Large",
            "Request Header Fields Too Large: more than 100 header lines",
        ),
        (
            get("/", &format!("X-Big: {}\r\n", "a".repeat(3000))),
            "431 Request Header Fields Too Large",
            "Request Header Fields Too Large: ",
        ),
    ];
    for (req, status, text) in cases {
        let mut c = Conn::open(s.port);
        c.send(req);
        let r = c.framed();
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.starts_with(text) && body.ends_with('\n'), "{status}: {body:?}");
        assert_eq!(
            r.head,
            format!(
                "HTTP/1.1 {status}\r\n{TEXT}\r\ncontent-length: {}\r\ndate: *\r\nconnection: close\r\n\r\n",
                body.len()
            )
        );
        assert!(c.closed_clean(), "{status}");
    }
}

#[test]
fn not_modified_has_no_length_and_its_own_reason() {
    let root = site();
    let s = with_root(&root);
    let mut c = Conn::open(s.port);
    c.send(get("/f.txt", ""));
    let mut raw = Conn::open(s.port);
    raw.send(get("/f.txt", "Connection: close\r\n"));
    raw.fill();
    let text = String::from_utf8_lossy(&raw.buf).into_owned();
    let etag = text.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().to_owned();
    c.framed();
    c.send(get("/f.txt", &format!("If-None-Match: {etag}\r\n")));
    let r = c.framed();
    assert_eq!(
        r.head,
        "HTTP/1.1 304 Not Modified\r\naccept-ranges: bytes\r\netag: *\r\nlast-modified: *\r\ndate: *\r\n\r\n"
    );
    // No body bytes either: the next answer follows at once.
    c.send(head_req("/f.txt"));
    assert_eq!(c.framed_head_only(), format!("{FILE_HEAD}\r\n"));
}

#[test]
fn a_range_in_another_unit_is_ignored() {
    let root = site();
    let s = with_root(&root);
    let mut c = Conn::open(s.port);
    for unit in ["lines=1-2", "items=0-0", "none"] {
        c.send(get("/f.txt", &format!("Range: {unit}\r\n")));
        let r = c.framed();
        assert_eq!(r.head, format!("{FILE_HEAD}\r\n"), "{unit}");
        assert_eq!(r.body, b"line1\nline2\nline3\n", "{unit}");
    }
    // Bytes still work, the unit in any case.
    c.send(get("/f.txt", "Range: Bytes=0-4\r\n"));
    let r = c.framed();
    assert!(r.head.starts_with("HTTP/1.1 206 Partial Content\r\n"), "{r:?}");
    assert_eq!(header(&r.head, "content-range"), Some("bytes 0-4/18"));
    assert_eq!(r.body, b"line1");
    c.send(get("/f.txt", "Range: bytes=100-200\r\n"));
    assert!(c.framed().head.starts_with("HTTP/1.1 416 Range Not Satisfiable\r\n"));
}

#[test]
fn head_on_the_console_answers_like_get() {
    let s = Server::start_in(&front(), &[]);
    let mut c = Conn::open(s.port);
    c.send(get("/", ""));
    let g = c.framed();
    assert!(g.head.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/html;charset=utf-8\r\n"), "{g:?}");
    assert!(String::from_utf8_lossy(&g.body).contains("ws2http console"));
    c.send(head_req("/"));
    let h = c.framed_head_only();
    assert_eq!(h, g.head);
    c.send(get("/", ""));
    assert_eq!(c.framed().head, g.head, "HEAD sent no body: the next answer is next");
}

impl Conn {
    /// A HEAD response: its head only, whatever its Content-Length says.
    fn framed_head_only(&mut self) -> String {
        self.response(|_| Some(0)).head
    }
}

#[test]
fn the_directory_redirect_keeps_the_query() {
    let root = site();
    let s = with_root(&root);
    let mut c = Conn::open(s.port);
    c.send(get("/d?x=1&y=%20", ""));
    let r = c.framed();
    let body = "Moved Permanently: /d/?x=1&y=%20\n";
    assert_eq!(
        r.head,
        format!(
            "HTTP/1.1 301 Moved Permanently\r\ncontent-type: text/plain;charset=utf-8\r\nlocation: /d/?x=1&y=%20\r\ndate: *\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
    );
    assert_eq!(r.body, body.as_bytes());
}

/// For each path: GET and HEAD have the same head (Content-Length
/// included), and HEAD sends no body: the next response follows at once
/// on a kept connection, or the server closes with nothing more.
fn head_matches_get(port: u16, path: &str, kept: bool) {
    let api = |req: String| if kept { req } else { to_api(req, port) };
    let mut c = Conn::open(port);
    c.send(api(get(path, "")));
    let g = c.framed();
    assert!(!g.head.contains(" 421 "), "{g:?}");
    if !kept {
        c = Conn::open(port);
    }
    c.send(api(head_req(path)));
    let h = c.framed_head_only();
    assert_eq!(h, g.head, "{path}");
    if kept {
        c.send(get(path, ""));
        assert_eq!(c.framed().head, g.head, "{path}: HEAD sent a body");
    } else {
        assert!(c.closed_clean(), "{path}: HEAD sent a body");
    }
}

#[test]
fn head_is_get_without_the_body_everywhere() {
    let root = site();
    let s = with_root(&root);
    for path in ["/f.txt", "/d/", "/d?q", "/missing", "/env.sh/../x"] {
        head_matches_get(s.port, path, true);
    }
    // A script: it runs with REQUEST_METHOD=HEAD; no body, no framing.
    let mut c = Conn::open(s.port);
    c.send(head_req("/env.sh"));
    assert_eq!(c.framed_head_only(), "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: *\r\n\r\n");
    c.send(head_req("/f.txt"));
    assert_eq!(c.framed_head_only(), format!("{FILE_HEAD}\r\n"));
    // The control API closes after every answer.
    for path in ["/healthz", "/connections", "/rooms", "/nope"] {
        head_matches_get(s.api_port, path, false);
    }
    let mut c = Conn::open(s.api_port);
    c.send(to_api(head_req("/healthz"), s.api_port));
    assert_eq!(
        c.framed_head_only(),
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: *\r\ncontent-length: 31\r\nconnection: close\r\n\r\n"
    );
}
