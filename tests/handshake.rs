//! The handshake: endpoint mapping, traversal refusals, open rejection,
//! cookies and subprotocols, single-script mode.

mod common;
use async_tungstenite::tungstenite::Message;
use common::*;

#[async_std::test]
async fn mapping_and_path_info() {
    let s = Server::start(&[]);
    let mut ws = connect(&s.url("/sub/deep.sh/a/b%20c?q=1")).await;
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "sub /sub/deep.sh /a/b c");
}

#[test]
fn traversal_and_missing_scripts_are_404() {
    let s = Server::start(&[]);
    for path in [
        "/../outside.sh",
        "/%2e%2e/outside.sh",
        "/%2E%2E/outside.sh",
        "/sub%2fdeep.sh",
        "/sub%2Fdeep.sh",
        "/sub/..%2fmirror.sh",
        "/escape.sh",
        "/.%2e/outside.sh",
        "/nope.sh",
        "/sub",
        "/sub/",
        "//etc/passwd",
        "/mirror.sh/..%2f..%2foutside.sh",
        // Dot segments that would resolve inside the directory are refused
        // too: the request target is checked as sent, not as normalized.
        "/sub/../mirror.sh",
        "/./mirror.sh",
        "/sub/%2e%2e/mirror.sh",
        "/%2e/mirror.sh",
        "/mirror.sh/../mirror.sh",
    ] {
        let resp = raw_http(s.port, &upgrade_request(path, ""));
        assert_eq!(status_of(&resp), 404, "{path}: {resp}");
    }
    // An absolute URL in the request line cannot leave the directory either.
    let resp = raw_http(s.port, &upgrade_request("http://127.0.0.1/../../etc/passwd", ""));
    assert_eq!(status_of(&resp), 404, "{resp}");
}

#[test]
fn not_executable_is_500_with_a_clear_log_line() {
    let s = Server::start(&[]);
    let resp = raw_http(s.port, &upgrade_request("/not-executable.sh", ""));
    assert_eq!(status_of(&resp), 500, "{resp}");
    s.wait_log("not-executable.sh is not executable: run `chmod +x");
}

#[test]
fn open_script_rejects_with_its_status_headers_and_body() {
    let s = Server::start(&[]);
    let resp = raw_http(s.port, &upgrade_request("/gate.sh", ""));
    assert_eq!(status_of(&resp), 403, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("content-type: text/plain"), "{resp}");
    assert!(resp.ends_with("\r\n\r\nno key, no entry\n"), "{resp}");
}

#[test]
fn crashing_open_script_is_500() {
    let s = Server::start(&[]);
    let resp = raw_http(s.port, &upgrade_request("/crash.sh?crash", ""));
    assert_eq!(status_of(&resp), 500, "{resp}");
    s.wait_log("stderr: oops");
    s.wait_log("exited with status 7");
}

#[async_std::test]
async fn cookies_subprotocol_and_welcome() {
    let s = Server::start(&[]);
    let (mut ws, resp) =
        connect_with(&s.url("/gate.sh?key=open"), &[("Sec-WebSocket-Protocol", "chat.v1, chat.v2")]).await.unwrap();
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(cookies, ["seen=1; Path=/", "other=2"]);
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "chat.v2");
    assert_eq!(next_text(&mut ws).await, "welcome");
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "got: hi");
}

#[test]
fn bad_handshakes_get_clear_statuses() {
    let s = Server::start(&[]);
    let resp = raw_http(s.port, &upgrade_request("/mirror.sh", "").replace("Version: 13", "Version: 8"));
    assert_eq!(status_of(&resp), 426);
    assert!(resp.to_ascii_lowercase().contains("sec-websocket-version: 13"));
    let no_key = upgrade_request("/mirror.sh", "").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(status_of(&raw_http(s.port, &no_key)), 400);
    // A plain GET runs the script as classic CGI; mirror.sh prints no CGI
    // header block, so that is a 500 with a hint in the log.
    let plain = raw_http(s.port, "GET /mirror.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&plain), 500);
    s.wait_log("if it only speaks WebSocket, connect with a WebSocket client");
    let page = raw_http(s.port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&page), 200);
    assert!(page.contains("\"/mirror.sh\""), "the start page lists endpoints");
}

#[async_std::test]
async fn binary_payloads_survive_both_directions() {
    let s = Server::start(&[]);
    let mut ws = connect(&s.url("/binary.sh")).await;
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    ws.send(Message::binary(all.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(all));
    ws.send(Message::binary(Vec::<u8>::new())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(Vec::<u8>::new()));
}

#[async_std::test]
async fn single_script_mode() {
    let script = fixtures().join("sub/deep.sh");
    let s = Server::start_in(&scratch(), &[script.to_str().unwrap()]);
    let mut ws = connect(&s.url("/any/path/here")).await;
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "sub  /any/path/here");
    let list = get(&s.api("/connections")).json();
    assert_eq!(list[0]["endpoint"], "/");
}
