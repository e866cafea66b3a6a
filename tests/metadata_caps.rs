//! Metadata and rooms go into the environment of every later spawn
//! (`WS_META_*`, `WS_ROOMS`): their caps keep it under the OS limit, so a
//! script that sets too much can never make later events, or the close
//! event, fail to start (E2BIG).

mod common;
use async_tungstenite::tungstenite::Message;
use common::*;

async fn say(ws: &mut Ws, out: &str) {
    ws.send(Message::text(out)).await.expect("send");
}

#[async_std::test]
async fn oversized_metadata_and_rooms_are_refused_and_events_still_run() {
    let s = Server::start(&[]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    // 200 KB in one value: over the 8 KiB cap (and over Linux's 128 KiB per
    // variable), refused; the next line still applies.
    say(&mut a, &format!("@set big {}\n@set nick alice\nfirst", "v".repeat(200_000))).await;
    assert_eq!(next_text(&mut a).await, "first");
    // Many keys: the connection's metadata stops at 16 KiB in all.
    let keys: String = (0..400).map(|i| format!("@set k{i:03} {}\n", "x".repeat(100))).collect();
    say(&mut a, &format!("{keys}second")).await;
    assert_eq!(next_text(&mut a).await, "second");
    // Many rooms: 64 per connection; a name over 128 bytes is refused.
    let rooms: String = (0..100).map(|i| format!("@join room{i:03}\n")).collect();
    say(&mut a, &format!("{rooms}@join {}\nthird", "r".repeat(129))).await;
    assert_eq!(next_text(&mut a).await, "third");

    let view = get(&s.api(&format!("/connections/{id}"))).json();
    let meta = view["metadata"].as_object().expect("metadata");
    assert!(meta.get("big").is_none());
    assert_eq!(meta["nick"], "alice");
    let bytes: usize = meta.iter().map(|(k, v)| k.len() + v.as_str().unwrap_or("").len() + 32).sum();
    assert!(bytes <= 16 * 1024, "{bytes} bytes of metadata");
    assert!(meta.len() > 100, "keys up to the cap are kept: {}", meta.len());
    assert_eq!(view["rooms"].as_array().expect("rooms").len(), 64);

    // Later events still start, and so does the close event, exactly once.
    say(&mut a, "still here").await;
    assert_eq!(next_text(&mut a).await, "still here");
    a.close(None).await.expect("close");
    s.wait_event("the close event", |l| l.starts_with(&format!("close {id} ")));
    let closes = s.events().iter().filter(|l| l.starts_with(&format!("close {id} "))).count();
    assert_eq!(closes, 1);
    let log = s.log();
    assert!(log.contains("@set \"big\": the value is 200000 bytes, over the cap of 8192"), "{log}");
    assert!(log.contains("over the cap of 16384"), "{log}");
    assert!(log.contains("already in 64 rooms"), "{log}");
    assert!(log.contains("the room name is 129 bytes, over the cap of 128"), "{log}");
    assert!(!log.contains("E2BIG") && !log.contains("Argument list too long"), "{log}");
}

#[async_std::test]
async fn the_control_api_refuses_oversized_directives_whole() {
    let s = Server::start(&[]);
    let (_a, id) = mirror(&s, "/mirror.sh").await;
    let body = format!("@set {id} nick bob\n@set {id} bio {}\n", "b".repeat(8193));
    let r = post(&s.api("/actions"), &body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("line 2") && r.body.contains("8192"), "{}", r.body);
    let body = format!("@join {id} lobby\n@join {id} {}\n", "r".repeat(129));
    let r = post(&s.api("/actions"), &body);
    assert_eq!(r.status, 400, "{}", r.body);
    let view = get(&s.api(&format!("/connections/{id}"))).json();
    assert!(view["metadata"].as_object().expect("metadata").is_empty(), "nothing applied: {view}");
    assert!(view["rooms"].as_array().expect("rooms").is_empty(), "nothing applied: {view}");
    // Within the caps, the same directives apply.
    let body = format!("@set {id} bio {}\n@join {id} {}\n", "b".repeat(8192), "r".repeat(128));
    assert_eq!(post(&s.api("/actions"), &body).status, 200);
    let view = get(&s.api(&format!("/connections/{id}"))).json();
    assert_eq!(view["metadata"]["bio"].as_str().map(str::len), Some(8192));
}
