//! Issue 17, "ws2http itself gets restarted behind a cluster": with a real
//! redis-server, SIGTERM on an instance hands its resumable sessions
//! (attached or detached) to another live instance; the attached client is
//! told `1012` and both resume there: same id, rooms, metadata, every
//! message exactly once and in order, no close and no open event anywhere.
//! A session whose client never returns ends once, on the new instance, at
//! its grace's end; an instance alone shuts down as before.

mod common;
use std::collections::HashMap;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::*;
use serde_json::{json, Value};
use ws2http_test_suite::suite;

fn id_and_token(hello: &Value) -> (String, String) {
    (hello["id"].as_str().expect("id").to_owned(), hello["token"].as_str().expect("token").to_owned())
}

/// The connections `GET /connections` lists on `s`.
fn listed(s: &Server) -> Vec<Value> {
    get(&s.api("/connections")).json().as_array().expect("a list").clone()
}

fn times_listed(s: &Server, id: &str) -> usize {
    listed(s).iter().filter(|c| c["id"] == id).count()
}

/// SIGTERM to `s`, without waiting for it to exit.
fn sigterm(s: &Server) {
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
}

/// Waits for `s` to exit after its SIGTERM: its exit status.
fn exited(s: &mut Server) -> std::process::ExitStatus {
    wait_for("the instance to exit", || s.child.try_wait().expect("try_wait"))
}

/// Reads `ws` until the server's close frame: the data messages before it, and the close's code and reason.
async fn until_close(ws: &mut Ws) -> (Vec<String>, u16, String) {
    let mut got = Vec::new();
    loop {
        match next(ws).await {
            Message::Text(t) => got.push(t.to_string()),
            Message::Close(Some(f)) => return (got, u16::from(f.code), f.reason.to_string()),
            m => panic!("expected messages then a close, got {m:?}"),
        }
    }
}

/// Through B's API, until `stop`: `s<i>` to session one by id, `t<i>` to
/// session two by id, `r<i>` to room r (both are members). Rounds sent.
fn traffic(b: &str, one: &str, two: &str, stop: &std::sync::atomic::AtomicBool) -> usize {
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        assert_eq!(post(&format!("{b}/send/{one}"), &format!("s{n}")).status, 200);
        assert_eq!(post(&format!("{b}/send/{two}"), &format!("t{n}")).status, 200);
        assert_eq!(post(&format!("{b}/rooms/r"), &format!("r{n}")).status, 200);
        n += 1;
        // Well within --resume-buffer for the detached session.
        std::thread::sleep(Duration::from_millis(5));
    }
    n
}

/// `got` holds each sequence `k` of `kinds`, 0..n, whole, in order, once.
fn check_sequences(got: &[String], kinds: &[char], n: usize) {
    let mut by: HashMap<char, Vec<usize>> = HashMap::new();
    for m in got {
        let (k, i) = m.split_at(1);
        by.entry(k.chars().next().unwrap()).or_default().push(i.parse().unwrap_or_else(|_| panic!("{m}")));
    }
    assert_eq!(by.len(), kinds.len(), "only {kinds:?} expected: {:?}", by.keys());
    for k in kinds {
        assert_eq!(by.get(k).cloned().unwrap_or_default(), (0..n).collect::<Vec<_>>(), "sequence {k}");
    }
}

/// Prints two instances' logs (their files) if the test fails: what moved where, and when.
struct OnFailure(std::path::PathBuf, std::path::PathBuf);

impl Drop for OnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, path) in [("A", &self.0), ("B", &self.1)] {
                eprintln!("--- {name} ---\n{}", std::fs::read_to_string(path).unwrap_or_default());
            }
        }
    }
}

/// What `ws` receives before a last message sent to it through `s`'s API now.
async fn until_last(s: &Server, id: &str, ws: &mut Ws) -> Vec<String> {
    assert_eq!(post(&s.api(&format!("/send/{id}")), "last").status, 200);
    let mut got = Vec::new();
    loop {
        match next_text(ws).await {
            last if last == "last" => return got,
            m => got.push(m),
        }
    }
}

#[suite("redis")]
#[async_std::test]
async fn sessions_move_to_another_instance_when_theirs_shuts_down() {
    let redis = Redis::start();
    let (mut a, b) = (node(&redis, &[]), node(&redis, &[]));
    let (a_log, b_log) = (a.stderr_log.clone(), b.stderr_log.clone());
    let _logs = OnFailure(a_log, b_log);
    // One attached session, one detached (its socket dropped), both on A.
    let (mut one, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id1, token1) = id_and_token(&hello);
    let (two, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id2, token2) = id_and_token(&hello);
    a.wait_event("open", |l| l == format!("open {id2}"));
    drop(two);
    a.wait_log(&format!("[{id2}] session detached"));
    wait_for("presence on B", || (times_listed(&b, &id1) + times_listed(&b, &id2) == 2).then_some(()));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = {
        let (api, one, two, stop) = (b.api(""), id1.clone(), id2.clone(), stop.clone());
        std::thread::spawn(move || traffic(&api, &one, &two, &stop))
    };
    let mut got1 = Vec::new();
    while got1.len() < 20 {
        got1.push(next_text(&mut one).await);
    }
    // A restarts: the attached client is told to resume elsewhere.
    sigterm(&a);
    let (more, code, reason) = until_close(&mut one).await;
    got1.extend(more);
    assert_eq!((code, reason.as_str()), (1012, "service restart"));
    assert!(exited(&mut a).success());

    // Both resume through B: same connections.
    let resume = |token: &str, n: usize| format!("ws2http.session.v1, ws2http.resume.{token}.{n}");
    let (mut one, hello) = open_session(&b.url("/chat.sh"), &resume(&token1, got1.len())).await;
    assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id1.as_str())), "{hello}");
    let (mut two, hello) = open_session(&b.url("/chat.sh"), &resume(&token2, 0)).await;
    assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id2.as_str())), "{hello}");
    async_std::task::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let n = flow.join().expect("traffic");

    // Every message exactly once, in order, across the restart: all that
    // came before a last message sent after them.
    got1.extend(until_last(&b, &id1, &mut one).await);
    let got2 = until_last(&b, &id2, &mut two).await;
    check_sequences(&got1, &['s', 'r'], n);
    check_sequences(&got2, &['t', 'r'], n);
    // Rooms and metadata intact, listed once, on B.
    for id in [&id1, &id2] {
        let views: Vec<Value> = listed(&b).into_iter().filter(|c| c["id"] == id.as_str()).collect();
        assert_eq!(views.len(), 1, "{views:?}");
        assert_eq!((views[0]["rooms"].clone(), views[0]["metadata"].clone()), (json!(["r"]), json!({"name": "bob"})));
    }
    // No close and no open event anywhere; their events run on B now.
    assert!(a.events().iter().all(|l| l.starts_with("open")), "{:?}", a.events());
    assert!(b.events().is_empty(), "{:?}", b.events());
    one.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut one).await, "echo hi");
    one.close(None).await.unwrap();
    assert_eq!(b.wait_event("close", |l| l.starts_with("close")), format!("close {id1} client r bob"));
}

#[suite("redis")]
#[async_std::test]
async fn a_handed_over_session_whose_client_never_returns_ends_once_on_the_new_instance() {
    let redis = Redis::start();
    let (mut a, b) = (node(&redis, &["--resume-grace", "1"]), node(&redis, &["--resume-grace", "1"]));
    let (mut ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, _) = id_and_token(&hello);
    a.wait_event("open", |l| l == format!("open {id}"));
    wait_for("presence on B", || (times_listed(&b, &id) == 1).then_some(()));
    sigterm(&a);
    let (_, code, _) = until_close(&mut ws).await;
    assert_eq!(code, 1012);
    assert!(exited(&mut a).success());
    let line = b.wait_event("the close event on B", |l| l.starts_with("close"));
    assert_eq!(line, format!("close {id} resume-expired r bob"));
    assert_eq!(a.events(), [format!("open {id}")], "no close event on A");
    wait_for("gone from presence", || (times_listed(&b, &id) == 0).then_some(()));
    assert_eq!(b.events().len(), 1, "{:?}", b.events());
}

#[suite("redis")]
#[async_std::test]
async fn an_instance_alone_shuts_its_sessions_down_as_before() {
    let redis = Redis::start();
    let mut a = node(&redis, &[]);
    let (mut ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, _) = id_and_token(&hello);
    a.wait_event("open", |l| l == format!("open {id}"));
    sigterm(&a);
    let (_, code, reason) = until_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1001, "server shutdown"));
    assert!(exited(&mut a).success());
    assert_eq!(a.events(), [format!("open {id}"), format!("close {id} shutdown r bob")]);
}

/// CHAT, and every message event logged.
const LOGGED: &str = r#"
case "$WS_EVENT" in
open) echo "open $WS_CONNECTION_ID" >> "$EVENTS_LOG"; echo "@join r"; echo "@set name bob" ;;
message) m=$(cat); echo "message $m" >> "$EVENTS_LOG"; echo "echo $m" ;;
close) echo "close $WS_CONNECTION_ID $WS_CLOSE_CAUSE $WS_ROOMS $WS_META_name" >> "$EVENTS_LOG" ;;
esac"#;

/// An instance running LOGGED, with Redis at `url` (Redis itself, or a [`RedisProxy`] to it).
fn node_at(url: &str) -> Server {
    Server::start_in(&cgi_bin(&[("chat.sh", LOGGED)]), &["--redis", url])
}

/// A resume (through `at`) of the session `id`/`token`, which A hands over
/// at its shutdown, while A's cut marker (on which it tells its client
/// 1012 and hands the session over) waits at `proxy`: the instance it is
/// handed to (`receiver`) holds the resume until the session is in. Then
/// the marker goes on; the resumed socket, and the old one's close code.
async fn resume_during_the_hand_over(
    old: &mut Ws,
    proxy: &RedisProxy,
    (at, receiver): (&Server, &Server),
    (id, token): (&str, &str),
) -> (Ws, u16) {
    let resume = format!("ws2http.session.v1, ws2http.resume.{token}.0");
    let url = at.url("/chat.sh");
    let resumed = async_std::task::spawn(async move { open_session(&url, &resume).await });
    receiver.wait_log(&format!("[{id}] a resume waits for this session"));
    assert!(proxy.holding(), "the hand-over was still held when the resume reached {}", instance_of(receiver));
    proxy.release();
    let (got, code, _) = until_close(old).await;
    assert!(got.is_empty(), "{got:?}");
    let (ws, hello) = resumed.await;
    assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id)), "{hello}");
    (ws, code)
}

#[suite("redis")]
#[async_std::test]
async fn a_resume_that_overtakes_the_hand_over_waits_for_it() {
    let redis = Redis::start();
    let proxy = RedisProxy::start(redis.port, CUT_MARKER);
    let (mut a, b) = (node_at(&proxy.url()), node_at(&redis.url()));
    [&a, &b].into_iter().for_each(wait_clustered);
    let _logs = OnFailure(a.stderr_log.clone(), b.stderr_log.clone());
    let (mut old, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = id_and_token(&hello);
    wait_for("presence on B", || (times_listed(&b, &id) == 1).then_some(()));
    sigterm(&a);
    // A's cut went through; A has not seen its marker: the move is open.
    proxy.wait_holding();
    let (mut ws, code) = resume_during_the_hand_over(&mut old, &proxy, (&b, &b), (&id, &token)).await;
    assert_eq!(code, 1012, "the old socket was told to resume elsewhere");
    sentinel(&b.api(&format!("/send/{id}")), &mut ws).await;
    assert_eq!(times_listed(&b, &id), 1, "listed once");
    assert!(exited(&mut a).success());
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo hi", "its events run on B");
    assert_eq!(a.events(), [format!("open {id}")], "no close event on A");
    assert_eq!(b.events(), ["message hi"], "no close event on B");
}

/// `HGET ws2http:moved ID`: the instance a session moved to, once its cut passed.
fn moved_to(redis: &Redis, id: &str) -> Option<String> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "hget", "ws2http:moved", id])
        .output()
        .expect("run redis-cli");
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

#[suite("redis")]
#[async_std::test]
async fn a_resume_through_a_third_instance_during_the_hand_over_moves_it_on() {
    let redis = Redis::start();
    let proxy = RedisProxy::start(redis.port, CUT_MARKER);
    let (mut a, b, c) = (node_at(&proxy.url()), node_at(&redis.url()), node_at(&redis.url()));
    [&a, &b, &c].into_iter().for_each(wait_clustered);
    let (mut old, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, token) = id_and_token(&hello);
    wait_for("presence everywhere", || (times_listed(&b, &id) + times_listed(&c, &id) == 2).then_some(()));
    sigterm(&a);
    // A hands it to one of the two; its client comes back through the other, before it is in.
    proxy.wait_holding();
    let to = moved_to(&redis, &id).expect("the cut passed");
    let (receiver, other) = if to == instance_of(&b) { (&b, &c) } else { (&c, &b) };
    let _logs = OnFailure(a.stderr_log.clone(), receiver.stderr_log.clone());
    let (mut ws, code) = resume_during_the_hand_over(&mut old, &proxy, (other, receiver), (&id, &token)).await;
    assert_eq!(code, 1012);
    sentinel(&b.api(&format!("/send/{id}")), &mut ws).await;
    assert_eq!((times_listed(other, &id), times_listed(receiver, &id)), (1, 1), "listed once");
    assert_eq!(moved_to(&redis, &id), Some(instance_of(other)), "it moved on");
    assert!(exited(&mut a).success());
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echo hi", "its events run where it resumed");
    let all: Vec<String> = [&a, &b, &c].iter().flat_map(|s| s.events()).collect();
    assert_eq!(all, [format!("open {id}"), "message hi".to_owned()], "no close event anywhere");
    assert_eq!(other.events(), ["message hi"]);
}

/// The instance id of `s` (the first 8 characters of its connections' ids), from its log.
fn instance_of(s: &Server) -> String {
    let line = s.log().lines().find_map(|l| l.split("cluster mode: instance ").nth(1).map(str::to_owned));
    line.expect("the instance's id in its log").trim().to_owned()
}

#[suite("redis")]
#[async_std::test]
async fn an_instance_without_sessions_is_not_handed_any() {
    let redis = Redis::start();
    let (mut a, off) = (node(&redis, &[]), node(&redis, &["--resume-grace", "0"]));
    let (mut ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, _) = id_and_token(&hello);
    wait_for("presence on the other instance", || (times_listed(&off, &id) == 1).then_some(()));
    sigterm(&a);
    let (_, code, _) = until_close(&mut ws).await;
    assert_eq!(code, 1001, "ends as before: the other instance would lose it");
    assert!(exited(&mut a).success());
    assert_eq!(a.events(), [format!("open {id}"), format!("close {id} shutdown r bob")]);
    assert!(a.log().contains("no other live instance"), "{}", a.log());
}

/// The only other instance was killed a moment ago (its heartbeat key
/// outlives it by up to its TTL): the sessions are not handed to it (they
/// would be lost without a close event); they end here as before.
#[suite("redis")]
#[async_std::test]
async fn sessions_are_not_handed_to_an_instance_killed_a_moment_ago() {
    let redis = Redis::start();
    let (mut a, mut b) = (node(&redis, &[]), node(&redis, &[]));
    let (mut ws, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let (id, _) = id_and_token(&hello);
    a.wait_event("open", |l| l == format!("open {id}"));
    wait_for("presence on B", || (times_listed(&b, &id) == 1).then_some(()));
    b.child.kill().expect("SIGKILL B");
    b.child.wait().expect("B gone");
    sigterm(&a);
    let (_, code, reason) = until_close(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1001, "server shutdown"), "{}", a.log());
    assert!(exited(&mut a).success());
    assert_eq!(a.events(), [format!("open {id}"), format!("close {id} shutdown r bob")]);
}
