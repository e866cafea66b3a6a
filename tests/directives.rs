//! Every output directive, driven from a real client through mirror.sh
//! (whose output is the message it received).

mod common;
use async_tungstenite::tungstenite::Message;
use base64::Engine;
use common::*;

async fn say(ws: &mut Ws, out: &str) {
    ws.send(Message::text(out)).await.unwrap();
}

#[async_std::test]
async fn plain_lines_escapes_and_streaming_order() {
    let s = Server::start(&[]);
    let (mut a, _) = mirror(&s, "/mirror.sh").await;
    say(&mut a, "one\r\n\n@@two\nthree @x").await;
    assert_eq!(next_text(&mut a).await, "one");
    assert_eq!(next_text(&mut a).await, "@two");
    assert_eq!(next_text(&mut a).await, "three @x");
    // Unknown and malformed directives are skipped, never sent as text.
    say(&mut a, "@nope x\n@join\n@close 99\nafter").await;
    assert_eq!(next_text(&mut a).await, "after");
    s.wait_log("unknown directive @nope");
}

#[async_std::test]
async fn send_room_others_broadcast_join_leave() {
    let s = Server::start(&[]);
    let (mut a, ida) = mirror(&s, "/mirror.sh").await;
    let (mut b, idb) = mirror(&s, "/mirror.sh").await;
    let (mut c, _) = mirror(&s, "/mirror.sh/other-path").await;
    let mut other_ep = connect(&s.url("/order.sh")).await;

    say(&mut a, &format!("@send {idb} hello b")).await;
    assert_eq!(next_text(&mut b).await, "hello b");

    say(&mut a, "@join lobby").await;
    say(&mut b, "@join lobby").await;
    // Joins are applied in order with later lines of the same connection,
    // but across connections we wait for the hub to show both members.
    wait_for("two members", || (get(&s.api("/rooms")).json()["lobby"] == 2).then_some(()));

    say(&mut a, "@room lobby to all").await;
    assert_eq!(next_text(&mut a).await, "to all");
    assert_eq!(next_text(&mut b).await, "to all");

    say(&mut a, "@others lobby not to a").await;
    assert_eq!(next_text(&mut b).await, "not to a");
    sentinel(&s.api(&format!("/send/{ida}")), &mut a).await; // @others skips the sender

    say(&mut a, "@leave lobby\n@room lobby only b").await;
    assert_eq!(next_text(&mut b).await, "only b");
    sentinel(&s.api(&format!("/send/{ida}")), &mut a).await; // a left the room

    // @broadcast reaches every connection of this endpoint (path info does
    // not matter), not other endpoints.
    say(&mut b, "@broadcast everyone").await;
    assert_eq!(next_text(&mut a).await, "everyone");
    assert_eq!(next_text(&mut b).await, "everyone");
    assert_eq!(next_text(&mut c).await, "everyone");
    // Other endpoints do not get @broadcast.
    sentinel(&s.api(&format!("/send/{}", only_id(&s, "/order.sh"))), &mut other_ep).await;
}

#[async_std::test]
async fn set_metadata_and_see_it_in_later_events_and_api() {
    let s = Server::start(&[]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    say(&mut a, "@set nick alice smith\n@set color red\n@join r1\n@join r0").await;
    wait_for("metadata", || {
        let v = get(&s.api(&format!("/connections/{id}"))).json();
        (v["metadata"]["color"] == "red").then_some(v)
    });
    let v = get(&s.api(&format!("/connections/{id}"))).json();
    assert_eq!(v["metadata"]["nick"], "alice smith");
    assert_eq!(v["rooms"], serde_json::json!(["r0", "r1"]));
    say(&mut a, "@set color").await;
    wait_for("color removed", || {
        get(&s.api(&format!("/connections/{id}"))).json()["metadata"].get("color").is_none().then_some(())
    });
    // The close event sees the rooms and metadata.
    a.close(None).await.unwrap();
    let line = s.wait_event("close", |l| l.starts_with("close"));
    assert!(line.ends_with("|rooms=r0 r1|nick=alice smith"), "{line}");
}

#[async_std::test]
async fn binary_directive_and_close_directive() {
    let s = Server::start(&[]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    let all: Vec<u8> = (0..=255u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&all);
    say(&mut a, &format!("@binary {b64}")).await;
    assert_eq!(next(&mut a).await, Message::binary(all));
    say(&mut a, "bye soon\n@close 4002 done here").await;
    assert_eq!(next_text(&mut a).await, "bye soon");
    match next(&mut a).await {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4002);
            assert_eq!(f.reason.as_str(), "done here");
        }
        other => panic!("expected close, got {other:?}"),
    }
    let line = s.wait_event("close", |l| l.starts_with("close"));
    assert!(line.starts_with(&format!("close {id} 4002 script done here")), "{line}");
}

#[async_std::test]
async fn lines_are_applied_while_the_script_runs() {
    let s = Server::start(&[]);
    let mut ws = connect(&s.url("/stream.sh")).await;
    say(&mut ws, "go").await;
    assert_eq!(next_text(&mut ws).await, "first");
    // The script is still running (it waits for the flag file): the first
    // line was delivered before the script finished.
    std::fs::write(s.dir.join("flag"), "").unwrap();
    assert_eq!(next_text(&mut ws).await, "second");
}
