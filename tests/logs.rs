//! Issue 12, "Logs": what the server log says, read as a user reads it: a
//! rejected open says so, a connection's lines come in the order things
//! happened to it, the 1009 line names the path, a classic CGI request's
//! line has its status, static files and the control API log at debug.

mod common;
use std::path::PathBuf;

use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;

use common::*;

fn logs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/logs")
}

/// The log lines about connection `id`, from its `open` line on.
fn lines_of(s: &Server, id: &str) -> Vec<String> {
    s.log().lines().filter(|l| l.contains(&format!("[{id}] "))).map(str::to_owned).collect()
}

/// Where the first line containing `what` is in `lines` (it must be there).
fn at(lines: &[String], what: &str) -> usize {
    lines.iter().position(|l| l.contains(what)).unwrap_or_else(|| panic!("no line with {what:?} in {lines:#?}"))
}

/// The id of the connection whose open line came last for `endpoint`.
fn last_id(s: &Server, endpoint: &str) -> String {
    let needle = format!("] {endpoint} open: ok");
    let log = s.log();
    let line = log.lines().rfind(|l| l.contains(&needle)).expect("an open line");
    line.split("] [").nth(1).and_then(|r| r.split(']').next()).expect("an id").to_owned()
}

#[test]
fn a_rejected_open_is_logged_as_rejected_not_ok() {
    let s = Server::start(&[]);
    let r = raw_http(s.port, &upgrade_request("/gate.sh", ""));
    assert!(r.starts_with("HTTP/1.1 403 "), "{r}");
    s.wait_log("/gate.sh open: rejected 403 in ");
    assert!(!s.log().contains("/gate.sh open: ok"), "{}", s.log());
}

#[async_std::test]
async fn a_limit_is_logged_after_the_events_before_it_and_names_the_path() {
    let s = Server::start_in(&logs_bin(), &["--max-message", "1000"]);
    let mut ws = connect(&s.url("/slow.sh/room")).await;
    let id = wait_for("the open line", || s.log().contains("/slow.sh open: ok").then(|| last_id(&s, "/slow.sh")));
    // The reader meets the 1009 while the worker still runs "slow": sent
    // once the script said it started (a message still queued when the
    // connection fails is dropped, not run).
    ws.send(Message::text("slow")).await.unwrap();
    let started = ws.next().await.expect("a message").expect("a frame");
    assert_eq!(started, Message::text("started"));
    ws.send(Message::text("x".repeat(2000))).await.unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if m.is_close() {
            break;
        }
    }
    s.wait_log(&format!("[{id}] /slow.sh close: ok"));
    let lines = lines_of(&s, &id);
    let big = format!("[{id}] /slow.sh message of 2000 bytes is over --max-message 1000; closing (1009)");
    let order = [
        at(&lines, "/slow.sh open: ok"),
        at(&lines, "/slow.sh message: ok"),
        at(&lines, &big),
        at(&lines, "/slow.sh closed: 1009 \"message too big\" (too-big)"),
        at(&lines, "/slow.sh close: ok"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}: {lines:#?}");
}

#[async_std::test]
async fn queued_events_are_logged_before_the_close_that_followed_them() {
    let s = Server::start_in(&logs_bin(), &[]);
    let mut ws = connect(&s.url("/slow.sh")).await;
    let id = wait_for("the open line", || s.log().contains("/slow.sh open: ok").then(|| last_id(&s, "/slow.sh")));
    // Both messages still run after the client's close (it said goodbye
    // after them), and their lines come before the `closed:` line.
    ws.send(Message::text("slow")).await.unwrap();
    ws.send(Message::text("slow")).await.unwrap();
    ws.close(None).await.unwrap();
    s.wait_log(&format!("[{id}] /slow.sh close: ok"));
    let lines = lines_of(&s, &id);
    let oks: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.contains("message: ok")).map(|(i, _)| i).collect();
    assert_eq!(oks.len(), 2, "{lines:#?}");
    let closed = at(&lines, "/slow.sh closed: 1005");
    assert!(oks.iter().all(|&i| i < closed) && closed < at(&lines, "/slow.sh close: ok"), "{lines:#?}");
}

#[test]
fn a_classic_cgi_request_is_logged_with_its_status() {
    let s = Server::start_in(&logs_bin(), &[]);
    let r = raw_http(s.port, "GET /teapot.sh?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 418 "), "{r}");
    s.wait_log("INFO  ws2http::cgi::http] GET /teapot.sh 127.0.0.1: 418, ok in ");
}

fn site() -> PathBuf {
    let root = scratch().join("site");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f.txt"), "hello\n").unwrap();
    root
}

fn lines_with<'a>(log: &'a str, what: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(what)).collect()
}

#[test]
fn static_files_and_the_control_api_log_at_debug_only() {
    let root = site();
    let args = ["--root", root.to_str().unwrap()];
    // At debug (-v): one line each, with the status.
    let s = Server::start_in(&logs_bin(), &args);
    let r = raw_http(s.port, "GET /f.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    assert_eq!(post(&s.api("/broadcast"), "hi").status, 200);
    assert_eq!(get(&s.api("/healthz")).status, 200);
    s.wait_log("DEBUG ws2http::public] GET /f.txt 127.0.0.1:");
    s.wait_log("DEBUG ws2http::api] api: POST /broadcast 127.0.0.1:");
    s.wait_log("DEBUG ws2http::api] api: GET /healthz 127.0.0.1:");
    let log = s.log();
    assert!(lines_with(&log, "GET /f.txt").iter().all(|l| l.contains(" DEBUG ") && l.ends_with(": 200")), "{log}");
    assert!(lines_with(&log, "api: ").iter().all(|l| l.contains(" DEBUG ")), "{log}");
    // At the default level: nothing for them, while a script's page is
    // still logged (and, as it came last, shows the log is written).
    let s = Server::start_env(&logs_bin(), &args, &[("RUST_LOG", "ws2http=info".as_ref())]);
    raw_http(s.port, "GET /f.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(post(&s.api("/broadcast"), "hi").status, 200);
    raw_http(s.port, "GET /teapot.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.wait_log("GET /teapot.sh 127.0.0.1: 418, ok in ");
    let log = s.log();
    assert!(lines_with(&log, "f.txt").is_empty() && lines_with(&log, "api:").is_empty(), "{log}");
}
