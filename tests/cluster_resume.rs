//! Issue 17 in a cluster, with a real redis-server: a resumable session
//! whose client comes back through another instance moves there (same id,
//! rooms, metadata, every message exactly once and in order, no close or
//! open event, listed once throughout), expires there, and is refused
//! cleanly (4410) when that instance's Redis is down.

mod common;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use ws2http_test_suite::suite;

/// The ids listed by `GET /connections` (repeats kept).
fn listed(s: &Server) -> Vec<String> {
    listed_at(&s.api(""))
}

/// The same, from an API base URL.
fn listed_at(api: &str) -> Vec<String> {
    let v = get(&format!("{api}/connections")).json();
    v.as_array().expect("a list").iter().map(|c| c["id"].as_str().expect("id").to_owned()).collect()
}

fn connection(s: &Server, id: &str) -> Value {
    get(&s.api("/connections")).json().as_array().unwrap().iter().find(|c| c["id"] == id).cloned().expect("listed")
}

/// Senders through the control API: `s<i>` to the session through C,
/// `r<i>` to room r through C, `a<i>` to the session through A. Each
/// sequence must arrive whole, in order, once. Checks meanwhile that every
/// instance lists the session exactly once.
fn traffic(a: &str, c: &str, id: &str, nodes: &[String], stop: &std::sync::atomic::AtomicBool) -> usize {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        assert_eq!(post(&format!("{c}/send/{id}"), &format!("s{n}")).status, 200);
        assert_eq!(post(&format!("{c}/rooms/r"), &format!("r{n}")).status, 200);
        assert_eq!(post(&format!("{a}/send/{id}"), &format!("a{n}")).status, 200);
        for s in nodes {
            let times = listed_at(s).iter().filter(|l| *l == id).count();
            assert_eq!(times, 1, "listed {times} times by {s} at round {n}");
        }
        n += 1;
    }
    n
}

/// [`traffic`] on its own thread (A, B, C: the session's first instance,
/// another, a third that sends), until [`Flow::stop`].
struct Flow {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Flow {
    fn start([a, b, c]: [&Server; 3], id: &str) -> Flow {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a_api, c_api, nodes, id, flag) =
            (a.api(""), c.api(""), [a, b, c].map(|s| s.api("")), id.to_owned(), stop.clone());
        Flow { stop, thread: std::thread::spawn(move || traffic(&a_api, &c_api, &id, &nodes, &flag)) }
    }

    /// Stops it: the rounds sent (each sequence's length).
    fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("traffic and presence checks")
    }
}

/// Checks that `got` holds each of the three sequences 0..n whole, in order, once.
fn check_sequences(got: &[String], n: usize) {
    let mut by: HashMap<char, Vec<usize>> = HashMap::new();
    for m in got {
        let (k, i) = m.split_at(1);
        by.entry(k.chars().next().unwrap()).or_default().push(i.parse().unwrap_or_else(|_| panic!("{m}")));
    }
    for k in ['s', 'r', 'a'] {
        assert_eq!(by.get(&k).cloned().unwrap_or_default(), (0..n).collect::<Vec<_>>(), "sequence {k}");
    }
}

#[suite("redis")]
#[async_std::test]
async fn a_session_resumes_on_another_instance_while_messages_flow() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, &[]), node(&redis, &[]), node(&redis, &[]));
    let (mut ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let id = hello["id"].as_str().expect("id").to_owned();
    let token = hello["token"].as_str().expect("token").to_owned();
    a.wait_event("open", |l| l == format!("open {id}"));
    wait_for("presence everywhere", || [&a, &b, &c].iter().all(|s| listed(s).contains(&id)).then_some(()));

    let flow = Flow::start([&a, &b, &c], &id);
    // Some traffic reaches it on A; then its connection drops (no close frame).
    let mut got = Vec::new();
    while got.len() < 30 {
        got.push(next_text(&mut ws).await);
    }
    drop(ws);
    async_std::task::sleep(Duration::from_millis(300)).await;
    // It comes back through B.
    let resume = format!("ws2http.session.v1, ws2http.resume.{token}.{}", got.len());
    let (mut ws, hello) = open_session(&b.url("/chat.sh"), &resume).await;
    assert_eq!(hello["ws2http"], "resumed", "{hello}");
    assert_eq!(hello["id"], id.as_str(), "same connection id");
    async_std::task::sleep(Duration::from_millis(1500)).await;
    let n = flow.stop();
    // Everything sent is in: every sequence whole, once, in order.
    while got.len() < 3 * n {
        got.push(next_text(&mut ws).await);
    }
    sentinel(&c.api(&format!("/send/{id}")), &mut ws).await;
    check_sequences(&got, n);
    // It lives on B now: rooms and metadata intact, listed once everywhere.
    for s in [&a, &b, &c] {
        assert_eq!(listed(s).iter().filter(|l| **l == id).count(), 1);
        let v = connection(s, &id);
        assert_eq!((v["rooms"].clone(), v["metadata"].clone()), (json!(["r"]), json!({"name": "bob"})));
    }
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo hi", "its events run on B");
    // No close and no second open anywhere; its close event runs once, on B.
    assert!(!a.events().iter().any(|l| l.starts_with("close")), "{:?}", a.events());
    ws.close(None).await.unwrap();
    b.wait_event("close", |l| l.starts_with(&format!("close {id}")));
    let all: Vec<String> = [&a, &b, &c].iter().flat_map(|s| s.events()).collect();
    assert_eq!(all.iter().filter(|l| l.starts_with("open")).count(), 1, "{all:?}");
    assert_eq!(
        all.iter().filter(|l| l.starts_with("close")).collect::<Vec<_>>(),
        [&format!("close {id} client r bob")]
    );
    wait_for("gone from presence", || (!listed(&c).contains(&id)).then_some(()));
}

#[suite("redis")]
#[async_std::test]
async fn a_moved_session_expires_on_its_new_instance_once() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &["--resume-grace", "1"]), node(&redis, &["--resume-grace", "1"]));
    let (ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = (hello["id"].as_str().unwrap().to_owned(), hello["token"].as_str().unwrap().to_owned());
    a.wait_event("open", |l| l.starts_with("open"));
    drop(ws);
    let (ws, hello) = open_session(&b.url("/chat.sh"), &format!("ws2http.session.v1, ws2http.resume.{token}.0")).await;
    assert_eq!(hello["id"], id.as_str());
    drop(ws);
    let line = b.wait_event("the close event on B", |l| l.starts_with("close"));
    assert_eq!(line, format!("close {id} resume-expired r bob"));
    wait_for("gone from presence", || (!listed(&a).contains(&id)).then_some(()));
    assert!(a.events().iter().all(|l| !l.starts_with("close")), "{:?}", a.events());
    assert_eq!(b.events().iter().filter(|l| l.starts_with("close")).count(), 1);
}

#[suite("redis")]
#[async_std::test]
async fn a_resume_where_redis_is_down_is_refused_and_hurts_nobody() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let (ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let token = hello["token"].as_str().unwrap().to_owned();
    let (mut other, _) = open_session(&b.url("/chat.sh"), "ws2http.session.v1").await;
    drop(ws);
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    b.wait_log("reconnecting");
    let (mut ws, _) = connect_with(
        &b.url("/chat.sh"),
        &[("Sec-WebSocket-Protocol", &format!("ws2http.session.v1, ws2http.resume.{token}.0"))],
    )
    .await
    .expect("handshake");
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (4410, "session expired")),
        m => panic!("expected 4410, got {m:?}"),
    }
    other.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut other).await, "echo still here", "B's other clients are served");
}

/// Every message published on the cluster's channels, as (channel, payload),
/// read by `redis-cli psubscribe`.
struct Published {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Published {
    fn watch(redis: &Redis) -> Published {
        let mut child = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "psubscribe", "ws2http:*"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-cli");
        let out = child.stdout.take().expect("its stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let p = Published { child, lines };
        wait_for("redis-cli to subscribe", || (p.lines.lock().unwrap().len() >= 3).then_some(()));
        p
    }

    /// (channel, payload) of every message so far.
    fn messages(&self) -> Vec<(String, String)> {
        let lines = self.lines.lock().unwrap();
        let mut out = Vec::new();
        let mut i = 0;
        while i + 3 < lines.len() {
            if lines[i] == "pmessage" {
                out.push((lines[i + 2].clone(), lines[i + 3].clone()));
                i += 4;
            } else {
                i += 1;
            }
        }
        out
    }

    /// The move steps of kind `k` published so far, by channel.
    fn steps(&self, k: &str) -> Vec<String> {
        let kind = format!("\"k\":\"{k}\"");
        self.messages().into_iter().filter(|(_, p)| p.contains(&kind)).map(|(c, _)| c).collect()
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A resume's first frame is a 4410 close.
async fn expect_4410(url: &str, token: &str) {
    let protocols = format!("ws2http.session.v1, ws2http.resume.{token}.0");
    let (mut ws, _) = connect_with(url, &[("Sec-WebSocket-Protocol", &protocols)]).await.expect("handshake");
    match next(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (4410, "session expired")),
        m => panic!("expected 4410, got {m:?}"),
    }
}

#[suite("redis")]
#[async_std::test]
async fn a_resume_asks_only_the_instance_its_token_names_and_an_unknown_token_is_refused_by_it() {
    let redis = Redis::start();
    let (a, b, c) = (node(&redis, &[]), node(&redis, &[]), node(&redis, &[]));
    let (_ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = (hello["id"].as_str().unwrap().to_owned(), hello["token"].as_str().unwrap().to_owned());
    assert!(token.starts_with(&id), "the token names its connection: {token}");
    let (_wsb, hello_b) = open_session(&b.url("/chat.sh"), "ws2http.session.v1").await;
    let (_wsc, hello_c) = open_session(&c.url("/chat.sh"), "ws2http.session.v1").await;
    let instance = |h: &Value| h["id"].as_str().unwrap()[..8].to_owned();
    let (ia, ib, ic) = (instance(&hello), instance(&hello_b), instance(&hello_c));
    let published = Published::watch(&redis);

    // A token for a connection of A's that A does not know (forged secret).
    let forged = format!("{id}{}", "A".repeat(32));
    expect_4410(&b.url("/chat.sh"), &forged).await;
    wait_for("A's refusal", || (!published.steps("refuse").is_empty()).then_some(()));
    assert_eq!(published.steps("take"), [format!("ws2http:to:{ia}")], "asked A alone");
    assert_eq!(published.steps("refuse"), [format!("ws2http:to:{ib}")], "A said no to B");
    b.wait_log("resume here refused by its instance: no such session");
    assert!(!published.steps("take").iter().any(|ch| ch == "ws2http:all" || *ch == format!("ws2http:to:{ic}")));
    // (redis-cli's pattern would count as a listener of the instance below.)
    drop(published);

    // A token naming an instance that is not there: nobody listens, refused at once.
    let ghost = format!("deadbeef{}{}", &id[8..], "A".repeat(32));
    expect_4410(&c.url("/chat.sh"), &ghost).await;
    c.wait_log("the instance holding it is gone");

    // The real token still resumes, on C.
    let (_ws, hello) = open_session(&c.url("/chat.sh"), &format!("ws2http.session.v1, ws2http.resume.{token}.0")).await;
    assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id.as_str())));
}

/// CHAT, and a message `sleep N` makes its event run N seconds (logged when it starts).
const SLOW: &str = r#"
case "$WS_EVENT" in
open) echo "open $WS_CONNECTION_ID" >> "$EVENTS_LOG"; echo "@join r"; echo "@set name bob" ;;
message) m=$(cat); echo "message $m" >> "$EVENTS_LOG"; case "$m" in "sleep "*) sleep "${m#sleep }" ;; esac; echo "echo $m" ;;
close) echo "close $WS_CONNECTION_ID $WS_CLOSE_CAUSE $WS_ROOMS $WS_META_name" >> "$EVENTS_LOG" ;;
esac"#;

fn slow_node(redis: &Redis) -> Server {
    let dir = cgi_bin(&[("chat.sh", SLOW)]);
    Server::start_in(&dir, &["--redis", &redis.url()])
}

/// `HGET ws2http:moved ID`: the instance a session moved to, once its cut passed.
fn moved_to(redis: &Redis, id: &str) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "hget", "ws2http:moved", id])
        .output()
        .expect("run redis-cli");
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// A session whose message event runs `secs` seconds on A: its client drops
/// while it runs (A's hand-over no longer waits for it: see [`RedisProxy`] to keep a move open).
async fn session_busy_on_a(a: &Server, secs: u32) -> (String, String) {
    let (mut ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = (hello["id"].as_str().unwrap().to_owned(), hello["token"].as_str().unwrap().to_owned());
    a.wait_event("open", |l| l == format!("open {id}"));
    ws.send(Message::text(format!("sleep {secs}"))).await.unwrap();
    a.wait_event("the slow message event", |l| l.starts_with("message sleep"));
    drop(ws);
    (id, token)
}

#[suite("redis")]
#[async_std::test]
async fn a_close_asked_during_a_move_is_applied_after_it() {
    let redis = Redis::start();
    let (a, b, c) = (slow_node(&redis), slow_node(&redis), slow_node(&redis));
    let (id, token) = session_busy_on_a(&a, 2).await;
    let resume = format!("ws2http.session.v1, ws2http.resume.{token}.0");
    let url = b.url("/chat.sh");
    let resumed = async_std::task::spawn(async move {
        let (ws, _) = connect_with(&url, &[("Sec-WebSocket-Protocol", &resume)]).await.expect("handshake");
        ws
    });
    wait_for("the cut", || moved_to(&redis, &id));
    let r = api("DELETE", &c.api(&format!("/connections/{id}?code=4000&reason=bye")), None, None, b"");
    assert_eq!(r.status, 200);
    // The close is applied once the session is in at B: if before the
    // socket is attached, the resume finds it ended (4410), else the
    // socket gets the close itself.
    let mut ws = resumed.await;
    loop {
        match next(&mut ws).await {
            Message::Close(Some(f)) => {
                let got = (u16::from(f.code), f.reason.to_string());
                assert!([(4000, "bye".to_owned()), (4410, "session expired".to_owned())].contains(&got), "{got:?}");
                break;
            }
            Message::Text(t) => assert!(t.contains("resumed") || t.as_str() == "echo sleep 2", "{t}"),
            m => panic!("expected the close, got {m:?}"),
        }
    }
    let line = b.wait_event("the close event on B", |l| l.starts_with("close"));
    assert_eq!(line, format!("close {id} api r bob"));
    assert!(a.events().iter().all(|l| !l.starts_with("close")), "{:?}", a.events());
    assert_eq!(b.events().iter().filter(|l| l.starts_with("close")).count(), 1);
}

/// A's hand-over stalls past B's wait (A stopped): the resume is refused
/// (4410), and the session ends exactly once, `resume-expired`: on B if
/// the hand-over arrives there after B gave up, or on A at its grace's end
/// if A, waking up, finds its publishing connection timed out and keeps it
/// (both are by design; which one depends on what A's publisher was doing
/// when it was stopped).
#[suite("redis")]
#[async_std::test]
async fn a_session_arriving_after_its_resume_gave_up_ends_with_one_close_event() {
    let redis = Redis::start();
    let node = || Server::start_in(&cgi_bin(&[("chat.sh", SLOW)]), &["--redis", &redis.url(), "--resume-grace", "8"]);
    let (a, b) = (node(), node());
    // (A resume on B before it is connected is refused at once: no hand-over to arrive.)
    [&a, &b].into_iter().for_each(wait_clustered);
    let (ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = (hello["id"].as_str().unwrap().to_owned(), hello["token"].as_str().unwrap().to_owned());
    a.wait_event("open", |l| l == format!("open {id}"));
    drop(ws);
    // A stalls: its hand-over, if any, comes after B's 5 s wait; the resume is refused.
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(a.child.id() as i32, libc::SIGSTOP) };
    expect_4410(&b.url("/chat.sh"), &token).await;
    // SAFETY: as above.
    unsafe { libc::kill(a.child.id() as i32, libc::SIGCONT) };
    let closes =
        || -> Vec<String> { [&a, &b].iter().flat_map(|s| s.events()).filter(|l| l.starts_with("close")).collect() };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while closes().is_empty() && std::time::Instant::now() < deadline {
        async_std::task::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(closes(), [format!("close {id} resume-expired r bob")], "A: {}\nB: {}", a.log(), b.log());
    wait_for("gone from presence", || (!listed(&a).contains(&id) && !listed(&b).contains(&id)).then_some(()));
    async_std::task::sleep(Duration::from_millis(500)).await;
    assert_eq!(closes().len(), 1, "exactly one close event");
}

/// A resume's first frame: the `resumed` message, or the close code.
async fn first_frame(url: String, protocols: String) -> (Ws, Result<Value, u16>) {
    let (mut ws, _) = connect_with(&url, &[("Sec-WebSocket-Protocol", &protocols)]).await.expect("handshake");
    let first = match next(&mut ws).await {
        Message::Text(t) => Ok(serde_json::from_str(&t).expect("a session message")),
        Message::Close(Some(f)) => Err(u16::from(f.code)),
        m => panic!("expected resumed or a close, got {m:?}"),
    };
    (ws, first)
}

/// Two resumes of one session at once, one on the instance holding it and
/// one on another (the black-box tester's D3: often the winner was dropped
/// and the session sat detached where the loser had been refused): exactly
/// one gets `resumed` and stays served, the other gets 4410, and a clean
/// close right after is the one close event, cause `client`.
#[suite("redis")]
#[async_std::test]
async fn of_two_resumes_at_once_on_two_instances_exactly_one_wins() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    for trial in 0..6 {
        let home = if trial % 2 == 0 { &a } else { &b };
        let (ws, hello) = open_session(&home.url("/chat.sh"), "ws2http.session.v1").await;
        let (id, token) = (hello["id"].as_str().unwrap().to_owned(), hello["token"].as_str().unwrap().to_owned());
        home.wait_event("open", |l| l == format!("open {id}"));
        drop(ws);
        async_std::task::sleep(Duration::from_millis(200)).await;
        let resume = format!("ws2http.session.v1, ws2http.resume.{token}.0");
        let (ra, rb) = futures_lite::future::zip(
            first_frame(a.url("/chat.sh"), resume.clone()),
            first_frame(b.url("/chat.sh"), resume),
        )
        .await;
        let (mut won, lost) = match (ra, rb) {
            ((ws, Ok(hello)), (_, Err(code))) | ((_, Err(code)), (ws, Ok(hello))) => {
                assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id.as_str())));
                (ws, code)
            }
            ((_, x), (_, y)) => panic!("trial {trial}: expected one resumed and one refused: {x:?} {y:?}"),
        };
        assert_eq!(lost, 4410, "trial {trial}");
        // Once the other resume is over, the winner is still served.
        async_std::task::sleep(Duration::from_millis(300)).await;
        won.send(Message::text("hi")).await.unwrap();
        assert_eq!(next_text(&mut won).await, "echo hi", "trial {trial}: the winner is attached");
        for s in [&a, &b] {
            assert_eq!(listed(s).iter().filter(|l| **l == id).count(), 1, "trial {trial}: listed once");
        }
        won.close(None).await.unwrap();
        let close = wait_for("the close event", || {
            [&a, &b].iter().flat_map(|s| s.events()).find(|l| l.starts_with(&format!("close {id}")))
        });
        assert_eq!(close, format!("close {id} client r bob"), "trial {trial}");
    }
    async_std::task::sleep(Duration::from_millis(300)).await;
    let all: Vec<String> = [&a, &b].iter().flat_map(|s| s.events()).collect();
    assert_eq!(all.iter().filter(|l| l.starts_with("close")).count(), 6, "one close event each: {all:?}");
}

/// A session's buffer full of text that JSON escapes (a control character
/// is 6 bytes in a snapshot) moves whole: its snapshot is longer than 4/3 of
/// `--resume-buffer-bytes` (the bound B used to refuse it by, after A had
/// taken it out: lost, without a close event).
#[suite("redis")]
#[async_std::test]
async fn a_full_buffer_of_escaped_text_moves_whole() {
    let redis = Redis::start();
    let flags = ["--resume-buffer-bytes", "65536"];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let (ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = (hello["id"].as_str().unwrap().to_owned(), hello["token"].as_str().unwrap().to_owned());
    a.wait_event("open", |l| l == format!("open {id}"));
    drop(ws);
    async_std::task::sleep(Duration::from_millis(200)).await;
    let body = |i: usize| format!("{i}{}", "\u{1}\"\\".repeat(330));
    for i in 0..60 {
        assert_eq!(post(&a.api(&format!("/send/{id}")), &body(i)).json()["delivered"], 1, "within its buffer");
    }
    let resume = format!("ws2http.session.v1, ws2http.resume.{token}.0");
    let (mut ws, first) = first_frame(b.url("/chat.sh"), resume).await;
    let hello = first.unwrap_or_else(|code| panic!("refused with {code}:\n{}", b.log()));
    assert_eq!(hello["replayed"], 60, "{hello}");
    for i in 0..60 {
        assert_eq!(next_text(&mut ws).await, body(i));
    }
    ws.close(None).await.unwrap();
    assert_eq!(b.wait_event("close", |l| l.starts_with("close")), format!("close {id} client r bob"));
}

/// More sent during a session's move than B records for it (B records every
/// room message: the session's rooms are not known before its snapshot):
/// it ends where it arrives, as a detached session over its bound does
/// (`resume-overflow`, one close event), and the resume gets 4410. (It used
/// to resume without what came after the recording was full: here the send
/// by id.) A reaches Redis through a proxy that holds its cut marker, and
/// with it its hand-over (which follows within milliseconds), until the
/// traffic is in Redis.
#[suite("redis")]
#[async_std::test]
async fn a_session_sent_more_than_its_buffer_during_its_move_ends_as_an_overflow() {
    let redis = Redis::start();
    let proxy = RedisProxy::start(redis.port, CUT_MARKER);
    let start = |url: &str| {
        let dir = cgi_bin(&[("chat.sh", CHAT)]);
        Server::start_in(&dir, &["--redis", url, "--resume-buffer-bytes", "2000"])
    };
    let (a, b, c) = (start(&proxy.url()), start(&redis.url()), start(&redis.url()));
    [&a, &b, &c].into_iter().for_each(wait_clustered);
    let (ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = (hello["id"].as_str().unwrap().to_owned(), hello["token"].as_str().unwrap().to_owned());
    a.wait_event("open", |l| l == format!("open {id}"));
    drop(ws);
    a.wait_log(&format!("[{id}] session detached"));
    let published = Published::watch(&redis);
    let resume = format!("ws2http.session.v1, ws2http.resume.{token}.0");
    let resumed = async_std::task::spawn(first_frame(b.url("/chat.sh"), resume));
    // The cut went through; A's marker, on which it hands the session over, waits at the proxy.
    proxy.wait_holding();
    assert!(moved_to(&redis, &id).is_some(), "the cut passed");
    let big = "x".repeat(10_000);
    for _ in 0..30 {
        assert_eq!(post(&c.api("/rooms/other"), &big).status, 200);
    }
    assert_eq!(post(&c.api(&format!("/send/{id}")), "after").status, 200);
    // In Redis's order before the hand-over: B records all of it first.
    wait_for("the send in Redis", || {
        published.messages().iter().any(|(ch, p)| ch.starts_with("ws2http:to:") && p.contains("after")).then_some(())
    });
    assert!(proxy.holding(), "the hand-over waited");
    proxy.release();
    let (_ws, first) = resumed.await;
    assert_eq!(first.err(), Some(4410), "refused, not resumed with a gap");
    let line = b.wait_event("the close event on B", |l| l.starts_with("close"));
    assert_eq!(line, format!("close {id} resume-overflow r bob"));
    async_std::task::sleep(Duration::from_millis(300)).await;
    assert!(a.events().iter().all(|l| !l.starts_with("close")), "{:?}", a.events());
    assert_eq!(b.events().iter().filter(|l| l.starts_with("close")).count(), 1);
    wait_for("gone from presence", || (!listed(&b).contains(&id)).then_some(()));
}

/// A resume on another instance through another endpoint's path, which
/// that instance serves, while it does not serve the session's own
/// endpoint (the review's #6: the session was taken out of its instance,
/// could not be put in, and was lost without its close event): the holder
/// refuses to move it, and it stays there untouched.
#[suite("redis")]
#[async_std::test]
async fn a_session_does_not_move_through_another_endpoint() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let b = Server::start_in(&cgi_bin(&[("other.sh", CHAT)]), &["--redis", &redis.url()]);
    let (ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = (hello["id"].as_str().unwrap().to_owned(), hello["token"].as_str().unwrap().to_owned());
    a.wait_event("open", |l| l == format!("open {id}"));
    drop(ws);
    async_std::task::sleep(Duration::from_millis(200)).await;
    expect_4410(&b.url("/other.sh"), &token).await;
    b.wait_log("a session of another endpoint");
    let (mut ws, first) = first_frame(a.url("/chat.sh"), format!("ws2http.session.v1, ws2http.resume.{token}.0")).await;
    let hello = first.unwrap_or_else(|code| panic!("refused with {code}: the session left A\n{}", a.log()));
    assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id.as_str())));
    ws.close(None).await.unwrap();
    assert_eq!(a.wait_event("close", |l| l.starts_with("close")), format!("close {id} client r bob"));
    assert!(b.events().is_empty(), "{:?}", b.events());
}

/// Joins room r and sets name=bob on open (`?other`: room o instead;
/// `?pump`: no room). A message `slow K` runs 2 s (logged when it starts
/// and ends), then sends `done K`; `pump TEXT` sends TEXT to room r and
/// `ok` back; anything else is echoed.
const MOVING: &str = r#"
case "$WS_EVENT" in
open) echo "open $WS_CONNECTION_ID" >> "$EVENTS_LOG"
  case "$QUERY_STRING" in pump) ;; other) echo "@join o" ;; *) echo "@join r"; echo "@set name bob" ;; esac ;;
message) m=$(cat); case "$m" in
  "slow "*) echo "start $m" >> "$EVENTS_LOG"; sleep 2; echo "end $m" >> "$EVENTS_LOG"; echo "done ${m#slow }" ;;
  "pump "*) echo "@room r ${m#pump }"; echo "ok" ;;
  *) echo "echo $m" ;;
  esac ;;
close) echo "close $WS_CONNECTION_ID $WS_CLOSE_CAUSE $WS_ROOMS $WS_META_name" >> "$EVENTS_LOG" ;;
esac"#;

fn moving_node(redis: &Redis) -> Server {
    let dir = cgi_bin(&[("chat.sh", MOVING)]);
    Server::start_in(&dir, &["--redis", &redis.url()])
}

fn instance_of(id: &str) -> String {
    id[..8].to_owned()
}

/// The ids `s` lists other than `but`.
fn other_ids(s: &Server, but: &[&str]) -> Vec<String> {
    listed(s).into_iter().filter(|l| !but.contains(&l.as_str())).collect()
}

#[suite("redis")]
#[async_std::test]
async fn a_move_does_not_wait_for_the_sessions_queued_slow_scripts() {
    let redis = Redis::start();
    let (a, b, c) = (moving_node(&redis), moving_node(&redis), moving_node(&redis));
    let (mut x, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = (hello["id"].as_str().unwrap().to_owned(), hello["token"].as_str().unwrap().to_owned());
    a.wait_event("open", |l| l == format!("open {id}"));
    // Another client of A's, in room o.
    let mut o = connect(&a.url("/chat.sh?other")).await;
    let o_id = wait_for("the other client", || other_ids(&a, &[&id]).pop());
    wait_for("presence everywhere", || [&b, &c].iter().all(|s| listed(s).contains(&o_id)).then_some(()));
    // Four message events of 8 s in all, queued on A.
    for k in 1..=4 {
        x.send(Message::text(format!("slow {k}"))).await.unwrap();
    }
    a.wait_event("the first slow event", |l| l == "start slow 1");
    let flow = Flow::start([&a, &b, &c], &id);
    let mut got = Vec::new();
    while got.len() < 30 {
        got.push(next_text(&mut x).await);
    }
    drop(x);
    let resume = format!("ws2http.session.v1, ws2http.resume.{token}.{}", got.len());
    let (mut x, hello) = open_session(&b.url("/chat.sh"), &resume).await;
    assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id.as_str())), "{hello}");
    assert!(moved_to(&redis, &id).is_some_and(|to| to != instance_of(&id)), "moved");
    // A serves its other clients while X's scripts still run there: a send
    // and a room message from C reach O before the last one has ended.
    assert_eq!(post(&c.api(&format!("/send/{o_id}")), "ping").status, 200);
    assert_eq!(post(&c.api("/rooms/o"), "room ping").status, 200);
    assert_eq!(next_text(&mut o).await, "ping");
    assert_eq!(next_text(&mut o).await, "room ping");
    let events = a.events();
    assert!(!events.contains(&"end slow 4".to_owned()), "O was served only after X's scripts ran: {events:?}");
    // Every one of X's queued events runs on A, once; their messages reach it on B.
    a.wait_event("the last slow event", |l| l == "end slow 4");
    let n = flow.stop();
    while got.len() < 3 * n + 4 {
        got.push(next_text(&mut x).await);
    }
    sentinel(&c.api(&format!("/send/{id}")), &mut x).await;
    let (done, rest): (Vec<String>, Vec<String>) = got.into_iter().partition(|m| m.starts_with("done "));
    assert_eq!(done, ["done 1", "done 2", "done 3", "done 4"]);
    check_sequences(&rest, n);
    for k in 1..=4 {
        assert_eq!(a.events().iter().filter(|l| **l == format!("end slow {k}")).count(), 1);
    }
    assert!(b.events().iter().all(|l| !l.contains("slow")), "{:?}", b.events());
    x.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut x).await, "echo hi", "its events run on B");
    assert!(!a.events().iter().any(|l| l.starts_with("close")), "{:?}", a.events());
    let v = connection(&c, &id);
    assert_eq!((v["rooms"].clone(), v["metadata"].clone()), (json!(["r"]), json!({"name": "bob"})));
}

/// Sends `{prefix}{i}` to room r through the API at `api` until `stop`
/// (paced a little, so that a session moving meanwhile keeps up); how many.
fn room_sender(api: String, prefix: &'static str, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> usize {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        assert_eq!(post(&format!("{api}/rooms/r"), &format!("{prefix}{n}")).status, 200);
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    n
}

/// A client whose script sends `{prefix}{i}` to room r, one message event
/// after the other, until `stop`; how many.
async fn room_pump(url: String, prefix: &'static str, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> usize {
    let mut ws = connect(&format!("{url}?pump")).await;
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        ws.send(Message::text(format!("pump {prefix}{n}"))).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "ok");
        n += 1;
    }
    n
}

/// Checks that `got` holds each sequence `prefix`0..n whole, in order, once.
fn check_each(got: &[String], counts: &[(&str, usize)]) {
    for (prefix, n) in counts {
        let seq: Vec<usize> = got.iter().filter_map(|m| m.strip_prefix(prefix).and_then(|i| i.parse().ok())).collect();
        assert_eq!(seq, (0..*n).collect::<Vec<_>>(), "sequence {prefix}");
    }
}

#[suite("redis")]
#[async_std::test]
async fn room_messages_of_both_instances_of_a_move_reach_the_session_once_in_order() {
    let redis = Redis::start();
    let (a, b, c) = (moving_node(&redis), moving_node(&redis), moving_node(&redis));
    let (mut x, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let id = hello["id"].as_str().unwrap().to_owned();
    let mut token = hello["token"].as_str().unwrap().to_owned();
    a.wait_event("open", |l| l == format!("open {id}"));
    wait_for("presence everywhere", || [&b, &c].iter().all(|s| listed(s).contains(&id)).then_some(()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Room messages from the API of A, B and C, and from scripts on A and B.
    let apis: Vec<_> = [(&a, "ra"), (&b, "rb"), (&c, "rc")]
        .into_iter()
        .map(|(s, p)| {
            let (api, stop) = (s.api(""), stop.clone());
            (p, std::thread::spawn(move || room_sender(api, p, stop)))
        })
        .collect();
    let pumps: Vec<_> = [(&a, "sa"), (&b, "sb")]
        .into_iter()
        .map(|(s, p)| (p, async_std::task::spawn(room_pump(s.url("/chat.sh"), p, stop.clone()))))
        .collect();
    // X moves A → B → A → B → A while they flow.
    let mut got: Vec<String> = Vec::new();
    for to in [&b, &a, &b, &a] {
        let until = got.len() + 60;
        while got.len() < until {
            got.push(next_text(&mut x).await);
        }
        drop(x);
        let resume = format!("ws2http.session.v1, ws2http.resume.{token}.{}", got.len());
        let (ws, hello) = open_session(&to.url("/chat.sh"), &resume).await;
        assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id.as_str())), "{hello}");
        token = hello["token"].as_str().unwrap().to_owned();
        x = ws;
    }
    let until = got.len() + 60;
    while got.len() < until {
        got.push(next_text(&mut x).await);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut counts = Vec::new();
    for (p, t) in apis {
        counts.push((p, t.join().expect("API sender")));
    }
    for (p, t) in pumps {
        counts.push((p, t.await));
    }
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    while got.len() < total {
        match async_std::future::timeout(Duration::from_secs(10), x.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => got.push(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => {
                check_each(&got, &counts);
                panic!("{other:?} after {} of {total}", got.len());
            }
        }
    }
    sentinel(&c.api(&format!("/send/{id}")), &mut x).await;
    check_each(&got, &counts);
    assert_eq!(got.len(), total, "nothing else, nothing twice");
    let all: Vec<String> = [&a, &b, &c].iter().flat_map(|s| s.events()).collect();
    assert!(!all.iter().any(|l| l.starts_with(&format!("close {id}"))), "{all:?}");
}
