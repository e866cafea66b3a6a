//! Status codes the HTTP library has no name for (420, 499, 522, 599, 306,
//! 299 …) go out as they are: from a classic CGI page, an open event's
//! rejection and an HTTP backend's answer. A 1xx is still no final answer
//! (502). Headers a `Connection` header nominates are not passed on.
//! Checked on the exact status line, over raw HTTP, against the real binary.
mod common;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use common::*;

fn status_line(resp: &str) -> &str {
    resp.split("\r\n").next().unwrap_or_default()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// Answers with the status in its query string, on every event and page.
const STATUS: &str = r#"printf 'Status: %s\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Kept: 1\r\n\r\nanswer %s\n' "$QUERY_STRING" "$QUERY_STRING""#;

#[test]
fn unnamed_statuses_from_pages_and_open_rejections_are_kept() {
    let s = Server::start_in(&cgi_bin(&[("status.sh", STATUS)]), &[]);
    for code in [420, 499, 522, 599, 306, 299] {
        let resp = raw_http(s.port, &get(&format!("/status.sh?{code}")));
        assert_eq!(status_line(&resp), format!("HTTP/1.1 {code} "), "page: {resp}");
        assert!(resp.contains(&format!("answer {code}\n")), "page: {resp}");
        let resp = raw_http(s.port, &upgrade_request(&format!("/status.sh?{code}"), ""));
        if code / 100 == 2 {
            assert!(resp.starts_with("HTTP/1.1 101 "), "a 2xx accepts the open: {resp}");
            continue;
        }
        assert_eq!(status_line(&resp), format!("HTTP/1.1 {code} "), "open: {resp}");
        assert!(resp.ends_with(&format!("answer {code}\n")), "open: {resp}");
        s.wait_log(&format!("open: rejected {code}"));
    }
    // Known codes keep their reason phrase; nominated headers are dropped.
    let resp = raw_http(s.port, &get("/status.sh?404"));
    assert_eq!(status_line(&resp), "HTTP/1.1 404 Not Found", "{resp}");
    let head = resp.to_ascii_lowercase();
    assert!(head.contains("\r\nx-kept: 1\r\n") && !head.contains("x-hop"), "{resp}");
    // A 1xx, named or not, is not a final answer.
    for code in [100, 199] {
        let resp = raw_http(s.port, &get(&format!("/status.sh?{code}")));
        assert_eq!(status_line(&resp), "HTTP/1.1 502 Bad Gateway", "{code}: {resp}");
    }
}

/// A one-connection HTTP server answering every request with `status`
/// (and the event name as the body), closing after each.
fn backend(statuses: Vec<u16>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (conn, status) in l.incoming().zip(statuses) {
            let conn = conn.unwrap();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            r.read_exact(&mut body).unwrap();
            let answer = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\
                 Connection: close\r\n\r\nrefused\n"
            );
            (&conn).write_all(answer.as_bytes()).unwrap();
        }
    });
    port
}

#[test]
fn unnamed_statuses_from_an_http_backend_are_kept() {
    let port = backend(vec![499, 299]);
    let s = Server::start(&["--backend-url", &format!("/app=http://127.0.0.1:{port}/app")]);
    let resp = raw_http(s.port, &upgrade_request("/app", ""));
    assert_eq!(status_line(&resp), "HTTP/1.1 499 ", "{resp}");
    assert!(resp.ends_with("\r\n\r\nrefused\n"), "{resp}");
    let resp = raw_http(s.port, &upgrade_request("/app", ""));
    assert!(resp.starts_with("HTTP/1.1 101 "), "a 299 accepts the open: {resp}");
    assert!(!s.log().contains("backend unavailable"), "{}", s.log());
}
