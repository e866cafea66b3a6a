//! Review 18 #3: an instance that shuts down takes no session. With a real
//! redis-server: a resume reaching it is refused before its upgrade (503,
//! Retry-After: the helpers retry, through the load balancer, elsewhere),
//! and two instances shutting down at once do not swap their sessions
//! (each ends once, with its close event, instead of being pulled onto an
//! instance that is going away and lost there). Redis is paused (SIGSTOP) to hold the
//! instances inside their shutdown's first step.

mod common;

use async_tungstenite::tungstenite::Message;
use common::*;
use ws2http_test_suite::suite;

/// Logs every event with its connection id; joins room r on open.
const CHAT: &str = r#"
case "$WS_EVENT" in
open) echo "open $WS_CONNECTION_ID" >> "$EVENTS_LOG"; echo "@join r" ;;
message) echo "echo $(cat)" ;;
close) echo "close $WS_CONNECTION_ID $WS_CLOSE_CAUSE" >> "$EVENTS_LOG" ;;
esac"#;

fn node(redis: &Redis) -> Server {
    let dir = cgi_bin(&[("chat.sh", CHAT)]);
    Server::start_in(&dir, &["--redis", &redis.url()])
}

/// A session socket: its id and token.
async fn open_session(s: &Server) -> (Ws, String, String) {
    let (ws, hello) = common::open_session(&s.url("/chat.sh"), "ws2http.session.v1").await;
    let field = |k: &str| hello[k].as_str().expect("id and token").to_owned();
    s.wait_event("open", |l| l == format!("open {}", field("id")));
    (ws, field("id"), field("token"))
}

/// One request on `conn`, kept open: the response's head and body.
fn exchange(conn: &mut std::net::TcpStream, request: &str) -> String {
    use std::io::{Read, Write};
    conn.write_all(request.as_bytes()).expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).expect("read");
        assert!(n > 0, "the connection closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let head = text[..end].to_ascii_lowercase();
        let len = head.lines().find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)));
        if buf.len() >= end + 4 + len.unwrap_or(0) {
            return text;
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Prints both instances' logs when the test fails.
struct OnFailure(Vec<std::path::PathBuf>);

impl Drop for OnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for path in &self.0 {
                eprintln!("--- {} ---\n{}", path.display(), std::fs::read_to_string(path).unwrap_or_default());
            }
        }
    }
}

/// Redis stopped until dropped (it goes on even when the test fails).
struct Paused(u32);

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

#[suite("redis")]
#[async_std::test]
async fn a_resume_on_an_instance_that_shuts_down_is_refused_before_its_upgrade() {
    let redis = Redis::start();
    let mut a = node(&redis);
    let _logs = OnFailure(vec![a.stderr_log.clone()]);
    let (ws, id, token) = open_session(&a).await;
    drop(ws);
    a.wait_log(&format!("[{id}] session detached"));
    // A load balancer's kept-alive connection: it outlives the listener,
    // which stops at the signal.
    let mut kept = std::net::TcpStream::connect(("127.0.0.1", a.port)).expect("connect");
    kept.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    assert_eq!(status_of(&exchange(&mut kept, "GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")), 404);
    let paused = Paused(redis.child.id());
    signal(paused.0, libc::SIGSTOP);
    signal(a.child.id(), libc::SIGTERM);
    a.wait_log("shutdown: this instance takes no more sessions");

    let resume = format!("Sec-WebSocket-Protocol: ws2http.session.v1, ws2http.resume.{token}.0\r\n");
    let resp = exchange(&mut kept, &upgrade_request("/chat.sh", &resume));
    assert_eq!(status_of(&resp), 503, "{resp}");
    assert!(resp.to_ascii_lowercase().contains("retry-after: 1"), "{resp}");
    drop(paused);
    assert!(wait_for("A to exit", || a.child.try_wait().expect("try_wait")).success());
    // The session was not pulled back: it ended once, where it was.
    assert_eq!(a.events().iter().filter(|l| l.starts_with("close")).count(), 1, "{:?}", a.events());
}

#[suite("redis")]
#[async_std::test]
async fn two_instances_shutting_down_at_once_do_not_swap_their_sessions() {
    let redis = Redis::start();
    let (mut a, mut b) = (node(&redis), node(&redis));
    let _logs = OnFailure(vec![a.stderr_log.clone(), b.stderr_log.clone()]);
    let (mut x, id_x, _) = open_session(&a).await;
    let (mut y, id_y, _) = open_session(&b).await;
    wait_for("presence", || (conn_ids(&a.api("/connections")).len() == 2).then_some(()));
    {
        // Both are inside their shutdown's first step before Redis answers either.
        let paused = Paused(redis.child.id());
        signal(paused.0, libc::SIGSTOP);
        signal(a.child.id(), libc::SIGTERM);
        signal(b.child.id(), libc::SIGTERM);
        a.wait_log("shutdown: this instance takes no more sessions");
        b.wait_log("shutdown: this instance takes no more sessions");
    }
    for ws in [&mut x, &mut y] {
        loop {
            match next(ws).await {
                // 1001: it ends where it is; 1012: handed over in the instant
                // before the other one's shutdown step (it ends there, once).
                Message::Close(Some(f)) => {
                    assert!([1001, 1012].contains(&u16::from(f.code)), "{f:?}");
                    break;
                }
                Message::Close(None) => panic!("a close frame without a code"),
                _ => {}
            }
        }
    }
    assert!(wait_for("A to exit", || a.child.try_wait().expect("try_wait")).success());
    assert!(wait_for("B to exit", || b.child.try_wait().expect("try_wait")).success());
    // Each session ended once (no close event lost, none twice), and none
    // was pulled back and forth: they cannot both have moved.
    let mut closes: Vec<String> = [&a, &b].iter().flat_map(|s| s.events()).filter(|l| l.starts_with("close")).collect();
    closes.sort();
    let mut want = vec![format!("close {id_x} shutdown"), format!("close {id_y} shutdown")];
    want.sort();
    assert_eq!(closes, want);
    let stayed = |s: &Server, id: &str| s.events().contains(&format!("close {id} shutdown"));
    assert!(stayed(&a, &id_x) || stayed(&b, &id_y), "both moved: {:?} {:?}", a.events(), b.events());
}
