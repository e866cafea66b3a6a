//! Fixes from the review of issue 17 (resumable sessions; docs/PROTOCOL.md
//! "Resumable sessions"): refused resumes hold their connection slot, and
//! resume tokens never reach scripts.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// A resume offer with a well-formed token that opens no session.
fn forged_resume() -> String {
    format!(
        "Sec-WebSocket-Protocol: ws2http.session.v1, ws2http.resume.{}{}.0\r\n",
        "0123456789abcdef".repeat(2),
        "A".repeat(32)
    )
}

/// Sends `request` and reads until `needle` has arrived; the socket stays open.
fn open_until(port: u16, request: &str, needle: &[u8]) -> (TcpStream, Vec<u8>) {
    open_while(port, request, |buf| !buf.windows(needle.len()).any(|w| w == needle))
}

/// Sends `request` and reads while `more` says so; the socket stays open.
fn open_while(port: u16, request: &str, more: impl Fn(&[u8]) -> bool) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while more(&buf) {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the server closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    (s, buf)
}

#[test]
fn a_refused_resume_holds_its_connection_slot_until_its_socket_is_gone() {
    let s = Server::start(&["--max-connections-per-ip", "1"]);
    let request = upgrade_request("/mirror.sh", &forged_resume());
    // The close frame 4410 (0x88, then the code 0x11 0x3a) comes; the client does not answer it.
    let (refused, got) = open_until(s.port, &request, &[0x11, 0x3a]);
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    let resp = raw_http(s.port, &upgrade_request("/mirror.sh", ""));
    assert_eq!(status_of(&resp), 503, "the refused socket still counts: {resp}");
    drop(refused);
    wait_for("the slot back", || {
        (status_of(&raw_http(s.port, &upgrade_request("/mirror.sh", ""))) == 101).then_some(())
    });
}

/// What a script saw as `HTTP_SEC_WEBSOCKET_PROTOCOL` when a client offered
/// a resume that the server serves as a plain handshake.
fn protocol_seen_by_script(flags: &[&str]) -> String {
    let dir = cgi_bin(&[("proto.sh", r#"echo "proto=[$HTTP_SEC_WEBSOCKET_PROTOCOL]"; [ "$WS_EVENT" = open ] || cat"#)]);
    let s = Server::start_in(&dir, flags);
    let offer = format!(
        "Sec-WebSocket-Protocol: chat, ws2http.session.v1, ws2http.resume.{}{}.0\r\n",
        "0123456789abcdef".repeat(2),
        "B".repeat(32)
    );
    let line = |buf: &[u8]| {
        let got = String::from_utf8_lossy(buf).into_owned();
        let start = got.find("proto=[")?;
        Some(got[start..start + got[start..].find(']')? + 1].to_owned())
    };
    let (_ws, got) = open_while(s.port, &upgrade_request("/proto.sh", &offer), |b| line(b).is_none());
    assert!(got.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&got));
    line(&got).unwrap_or_default()
}

#[test]
fn a_resume_token_never_reaches_a_script() {
    let expected = "proto=[chat, ws2http.session.v1]";
    assert_eq!(protocol_seen_by_script(&["--resume-grace", "0"]), expected, "sessions off");
    assert_eq!(protocol_seen_by_script(&["--per-connection", "/proto.sh"]), expected, "a per-connection endpoint");
}

/// The session message's token (`session` or `resumed`).
async fn token_of(ws: &mut Ws) -> String {
    let hello = next_text(ws).await;
    let v: serde_json::Value = serde_json::from_str(&hello).unwrap();
    v["token"].as_str().unwrap_or_else(|| panic!("a session message: {hello}")).to_owned()
}

async fn session_socket(s: &Server, protocols: &str) -> Ws {
    let (ws, resp) = connect_with(&s.url("/slow-resume.sh"), &[("Sec-WebSocket-Protocol", protocols)]).await.unwrap();
    assert_eq!(resp.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()), Some("ws2http.session.v1"));
    ws
}

#[async_std::test]
async fn resume_events_count_against_max_queue() {
    let script = r#"case "$WS_EVENT" in
resume) echo "resume $WS_RESUME_COUNT" >> "$EVENTS_LOG"
    i=0; while [ ! -e "$FLAG_FILE" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done ;;
message) echo "message" >> "$EVENTS_LOG"; cat ;;
esac"#;
    let dir = cgi_bin(&[("slow-resume.sh", script)]);
    let s = Server::start_in(&dir, &["--events", "open,message,close,resume", "--max-queue", "1"]);
    let mut ws = session_socket(&s, "ws2http.session.v1").await;
    let mut token = token_of(&mut ws).await;
    let mut sockets = vec![ws];
    for n in 1..=4 {
        let offer = format!("ws2http.session.v1, ws2http.resume.{token}.0");
        let mut ws = session_socket(&s, &offer).await;
        token = token_of(&mut ws).await;
        sockets.push(ws);
        if n == 1 {
            s.wait_event("the first resume event running", |l| l == "resume 1");
        }
    }
    s.wait_log("resume 4: its event is skipped");
    std::fs::write(s.dir.join("flag"), "").unwrap();
    s.wait_event("the second resume event", |l| l == "resume 2");
    let ws = sockets.last_mut().unwrap();
    futures_util::SinkExt::send(ws, async_tungstenite::tungstenite::Message::text("hi")).await.unwrap();
    assert_eq!(next_text(ws).await, "hi");
    assert_eq!(s.events(), ["resume 1", "resume 2", "message"], "one running, one waiting (--max-queue 1)");
}

#[async_std::test]
async fn a_sessions_close_frame_4499_is_a_drop_and_the_session_resumes() {
    use async_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    let s = Server::start(&[]);
    let (mut ws, resp) =
        connect_with(&s.url("/mirror.sh"), &[("Sec-WebSocket-Protocol", "ws2http.session.v1")]).await.unwrap();
    assert!(resp.headers().get("Sec-WebSocket-Protocol").is_some());
    let token = token_of(&mut ws).await;
    let id = next_text(&mut ws).await.strip_prefix("id ").expect("the open script's line").to_owned();
    let frame = CloseFrame { code: CloseCode::from(4499), reason: "resuming".into() };
    ws.close(Some(frame)).await.unwrap();
    s.wait_log("session detached");
    let offer = format!("ws2http.session.v1, ws2http.resume.{token}.1");
    let (mut ws, _) = connect_with(&s.url("/mirror.sh"), &[("Sec-WebSocket-Protocol", &offer)]).await.unwrap();
    let hello = next_text(&mut ws).await;
    assert!(hello.contains(r#""ws2http":"resumed""#) && hello.contains(&id), "{hello}");
    assert_eq!(s.events(), [format!("open {id}")], "no close event");
}
