//! Open, message and close events: ordering, parallelism, failures, and the
//! close event running exactly once whatever ended the connection.

mod common;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use common::*;

/// `ws2http_messages_out_total`: messages queued to clients, all together.
fn messages_out(s: &Server) -> u64 {
    s.metric("ws2http_messages_out_total").expect("ws2http_messages_out_total in /metrics")
}

fn closes_of(s: &Server, id: &str) -> Vec<String> {
    s.events().into_iter().filter(|l| l.starts_with(&format!("close {id} "))).collect()
}

#[async_std::test]
async fn client_close_code_and_reason_reach_the_close_event_once() {
    let s = Server::start(&[]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    assert_eq!(messages_out(&s), 1, "the open event's \"id\" line");
    a.close(Some(CloseFrame { code: CloseCode::from(4001), reason: "bye".into() })).await.unwrap();
    let line = s.wait_event("close", |l| l.starts_with("close"));
    assert!(line.starts_with(&format!("close {id} 4001 client bye|")), "{line}");
    // mirror.sh's close event prints a line to its own connection: once the
    // event has ended (its lines are applied as they come), nothing more
    // was queued to any client.
    s.wait_log(&format!("[{id}] /mirror.sh close: ok"));
    assert_eq!(messages_out(&s), 1, "the close event's message to itself was queued");
    // And the close event runs only once.
    let (_b, _) = mirror(&s, "/mirror.sh").await;
    assert_eq!(closes_of(&s, &id).len(), 1);
}

#[async_std::test]
async fn close_without_code_is_1005() {
    let s = Server::start(&[]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    a.close(None).await.unwrap();
    let line = s.wait_event("close", |l| l.starts_with("close"));
    assert!(line.starts_with(&format!("close {id} 1005 client |")), "{line}");
}

#[async_std::test]
async fn dropped_tcp_is_1006_and_others_hear_about_it() {
    let s = Server::start(&[]);
    let (mut watcher, _) = mirror(&s, "/mirror.sh").await;
    watcher.send(Message::text("@join room1")).await.unwrap();
    // A client that joins a room and then vanishes without a close frame:
    // we keep a handle on its TCP socket and shut it down under it.
    let tcp = async_std::net::TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let (mut ws, _) = async_tungstenite::client_async(s.url("/mirror.sh"), tcp.clone()).await.unwrap();
    let id = next_text(&mut ws).await.strip_prefix("id ").unwrap().to_owned();
    ws.send(Message::text("@join room1")).await.unwrap();
    wait_for("joined", || (get(&s.api("/rooms")).json()["room1"] == 2).then_some(()));
    tcp.shutdown(std::net::Shutdown::Both).unwrap();
    let line = s.wait_event("close", |l| l.starts_with(&format!("close {id} ")));
    assert!(line.starts_with(&format!("close {id} 1006 dropped |rooms=room1|")), "{line}");
    assert_eq!(next_text(&mut watcher).await, format!("left {id}"));
}

#[async_std::test]
async fn api_close_and_server_close_codes() {
    let s = Server::start(&[]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    let r = api("DELETE", &s.api(&format!("/connections/{id}?code=4100&reason=kicked")), None, None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"closed": 1}));
    match next(&mut a).await {
        Message::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (4100, "kicked")),
        other => panic!("{other:?}"),
    }
    let line = s.wait_event("close", |l| l.starts_with("close"));
    assert!(line.starts_with(&format!("close {id} 4100 api kicked|")), "{line}");
    assert_eq!(api("DELETE", &s.api(&format!("/connections/{id}")), None, None, b"").status, 404);
}

#[async_std::test]
async fn shutdown_closes_everyone_with_1001_and_runs_close_events() {
    let mut s = Server::start(&[]);
    let (mut a, ida) = mirror(&s, "/mirror.sh").await;
    let (mut b, idb) = mirror(&s, "/mirror.sh").await;
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    for ws in [&mut a, &mut b] {
        match next(ws).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("{other:?}"),
        }
    }
    for id in [ida, idb] {
        let c = closes_of(&s, &id);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].starts_with(&format!("close {id} 1001 shutdown server shutdown|")), "{}", c[0]);
    }
}

#[async_std::test]
async fn events_of_one_connection_run_in_order() {
    let s = Server::start(&[]);
    let mut ws = connect(&s.url("/order.sh")).await;
    for i in 0..40 {
        ws.send(Message::text(i.to_string())).await.unwrap();
    }
    for i in 0..40 {
        assert_eq!(next_text(&mut ws).await, i.to_string());
    }
}

#[async_std::test]
async fn events_of_different_connections_run_in_parallel() {
    let s = Server::start(&[]);
    let mut waiter = connect(&s.url("/order.sh")).await;
    let mut goer = connect(&s.url("/order.sh")).await;
    // "wait" blocks its script until another script creates the flag file;
    // run serially, it could never be released.
    waiter.send(Message::text("wait")).await.unwrap();
    let marker = s.dir.join("flag.waiting");
    wait_for("the waiting script to start", || marker.exists().then_some(()));
    goer.send(Message::text("go")).await.unwrap();
    assert_eq!(next_text(&mut goer).await, "went");
    assert_eq!(next_text(&mut waiter).await, "released");
}

#[async_std::test]
async fn failing_scripts_keep_the_connection_open() {
    let s = Server::start(&[]);
    let mut ws = connect(&s.url("/crash.sh")).await;
    ws.send(Message::text("fail")).await.unwrap();
    // Output produced before the failure still applies.
    assert_eq!(next_text(&mut ws).await, "partial");
    s.wait_log("exited with status 3");
    s.wait_log("stderr: failing on purpose");
    ws.send(Message::text("segv")).await.unwrap();
    s.wait_log("killed by signal 11");
    ws.send(Message::text("fine")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "ok fine");
}

#[async_std::test]
async fn open_runs_before_first_message_and_messages_before_close() {
    let s = Server::start(&[]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    a.send(Message::text("x")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "x");
    a.close(None).await.unwrap();
    s.wait_event("close", |l| l.starts_with("close"));
    let mine: Vec<String> =
        s.events().into_iter().filter(|l| l.contains(&id)).map(|l| l.split(' ').next().unwrap().to_owned()).collect();
    assert_eq!(mine, ["open", "message", "close"]);
}

#[async_std::test]
async fn timeout_kills_the_script_and_its_children() {
    let s = Server::start(&["--timeout", "1"]);
    let mut ws = connect(&s.url("/order.sh")).await;
    // "wait" polls for a flag that never comes (5 s); the timeout stops it.
    ws.send(Message::text("wait")).await.unwrap();
    s.wait_log("still running after 1s");
    s.wait_log("timed out after 1s");
    ws.send(Message::text("7")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "7");
}

#[async_std::test]
async fn too_big_message_is_closed_with_1009() {
    let s = Server::start(&["--max-message", "1000"]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    a.send(Message::text("y".repeat(5000))).await.unwrap();
    match next(&mut a).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1009),
        other => panic!("{other:?}"),
    }
    let line = s.wait_event("close", |l| l.starts_with("close"));
    assert!(line.starts_with(&format!("close {id} 1009 too-big")), "{line}");
}

#[async_std::test]
async fn events_flag_runs_only_the_chosen_events() {
    // --events message: no script at the handshake or at the close.
    let s = Server::start(&["--events", "message"]);
    let mut a = connect(&s.url("/mirror.sh")).await;
    // No open script, so no "id" message before this one.
    sentinel(&s.api(&format!("/send/{}", only_id(&s, "/mirror.sh"))), &mut a).await;
    a.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "hello");
    let id = s.wait_event("message", |l| l.starts_with("message ")).split(' ').nth(1).unwrap().to_owned();
    a.close(None).await.unwrap();
    s.wait_log(&format!("[{id}] /mirror.sh closed: 1005"));
    wait_for("connection gone", || conn_ids(&s.api("/connections")).is_empty().then_some(()));
    let events = s.events();
    assert_eq!(events, [format!("message {id}")], "only the message event ran");

    // --events open,close: messages are dropped, open and close run.
    let s = Server::start(&["--events", "open,close"]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    // Events of a connection run in order, the close event last: once it
    // has run, a message event that ran would be in the log (checked below).
    a.send(Message::text("dropped")).await.unwrap();
    a.close(None).await.unwrap();
    s.wait_event("close", |l| l.starts_with(&format!("close {id} 1005")));
    assert!(s.events().iter().all(|l| !l.starts_with("message")), "{:?}", s.events());
}

/// A room large enough to be delivered by several threads at once (the
/// hub splits over 2 × 128 members): every member gets the message, and
/// the metrics count each delivery once, whichever thread made it (each
/// thread adds its part's count once).
#[async_std::test]
async fn a_room_delivered_by_several_threads_counts_every_member_once() {
    let bin = cgi_bin(&[("member.sh", "[ \"$WS_EVENT\" = open ] && echo '@join big'; exit 0")]);
    let s = Server::start_in(&bin, &["--events", "open", "--max-connections-per-ip", "400"]);
    const N: usize = 300;
    let mut members = Vec::new();
    for _ in 0..N {
        members.push(connect(&s.url("/member.sh")).await);
    }
    let joined = || get(&s.api("/rooms")).json()["big"].as_u64();
    wait_for("every member in the room", || (joined() == Some(N as u64)).then_some(()));
    let bytes_out = |s: &Server| s.metric("ws2http_bytes_out_total").expect("ws2http_bytes_out_total in /metrics");
    let (before, bytes_before) = (messages_out(&s), bytes_out(&s));
    let r = post(&s.api("/rooms/big"), "hello");
    assert_eq!(r.json()["delivered"], N as u64, "{}", r.body);
    for ws in &mut members {
        assert_eq!(next_text(ws).await, "hello");
    }
    assert_eq!(messages_out(&s) - before, N as u64);
    assert_eq!(bytes_out(&s) - bytes_before, 5 * N as u64);
}
