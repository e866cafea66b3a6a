//! The wire format round-trips every action and every close cause.

use std::collections::BTreeSet;

use super::*;
use crate::action::{CloseCause, Message};
use crate::id::ConnId;

fn id(s: &str) -> ConnId {
    ConnId::parse(s).expect("valid id")
}

/// The variant names serde knows for a type, from its refusal of an
/// unknown one ("unknown variant `?`, expected one of `a`, `b`"): the
/// derive's own list, so a new variant shows up here by itself.
fn serde_variants(refusal: serde_json::Error) -> BTreeSet<String> {
    let text = refusal.to_string();
    let list = text.split("expected one of ").nth(1).expect("serde lists the variants");
    list.split(", ").map(|v| v.split('`').nth(1).expect("a quoted name").to_owned()).collect()
}

/// The wire name of each variant. Exhaustive: a new variant does not
/// compile until it has a name here (and then an example below).
fn tag(a: &Action) -> &'static str {
    match a {
        Action::Send { .. } => "send",
        Action::Room { .. } => "room",
        Action::Broadcast { .. } => "broadcast",
        Action::Join { .. } => "join",
        Action::Leave { .. } => "leave",
        Action::SetMeta { .. } => "set",
        Action::Close { .. } => "close",
    }
}

/// Every close cause. Exhaustive on purpose, like [`tag`]; the test also
/// compares it with serde's list.
fn every_cause() -> Vec<CloseCause> {
    use CloseCause::*;
    let all = vec![
        Client,
        Dropped,
        Script,
        Api,
        Shutdown,
        TooBig,
        SlowConsumer,
        QueueFull,
        PingTimeout,
        ProtocolError,
        TooSlow,
    ];
    for c in &all {
        match c {
            Client | Dropped | Script | Api | Shutdown | TooBig | SlowConsumer | QueueFull | PingTimeout
            | ProtocolError | TooSlow => {}
        }
    }
    all
}

fn examples() -> Vec<Action> {
    let mut all = vec![
        Action::Send { to: id("abcd1234ff"), msg: Message::text("hi") },
        Action::Send { to: id("a1"), msg: Message::Binary(vec![0, 255, 10, 13].into()) },
        Action::Send { to: id("a1"), msg: Message::text("") },
        Action::Send { to: id("a1"), msg: Message::text("line\nbreak \"quoted\" é ☃ \u{0}") },
        Action::Room { room: "r".into(), msg: Message::text("x"), except: Some(id("b")) },
        Action::Room { room: "r".into(), msg: Message::Binary(Vec::new().into()), except: None },
        Action::Broadcast { endpoint: Some("/chat.sh".into()), msg: Message::text("y") },
        Action::Broadcast { endpoint: None, msg: Message::text("y") },
        Action::Join { conn: id("c"), room: "r".into() },
        Action::Leave { conn: id("c"), room: "r".into() },
        Action::SetMeta { conn: id("c"), key: "k".into(), value: Some("v".into()) },
        Action::SetMeta { conn: id("c"), key: "k".into(), value: Some(String::new()) },
        Action::SetMeta { conn: id("c"), key: "k".into(), value: None },
    ];
    for cause in every_cause() {
        all.push(Action::Close { conn: id("c"), code: 4000, reason: format!("bye {}", cause.as_str()), cause });
    }
    all
}

#[test]
fn every_action_and_close_cause_round_trips() {
    for a in examples() {
        let wire = encode("abcd1234", &a);
        let back = decode(&wire).unwrap_or_else(|e| panic!("{wire}: {e}"));
        assert_eq!(back, Envelope { origin: "abcd1234".into(), action: a }, "{wire}");
    }
}

#[test]
fn the_examples_cover_every_variant_serde_knows() {
    let covered: BTreeSet<String> = examples().iter().map(|a| tag(a).to_owned()).collect();
    let refusal = decode(r#"{"o":"x","a":{"k":"?"}}"#).expect_err("an unknown kind");
    assert_eq!(covered, serde_variants(refusal));
    for a in examples() {
        let json: serde_json::Value = serde_json::from_str(&encode("x", &a)).expect("json");
        assert_eq!(json["a"]["k"], tag(&a), "the tag is the wire name");
    }
}

#[test]
fn close_causes_travel_by_their_ws_close_cause_names() {
    let names: BTreeSet<String> = every_cause().iter().map(|c| c.as_str().to_owned()).collect();
    let refusal = serde_json::from_str::<CloseCause>(r#""?""#).expect_err("an unknown cause");
    assert_eq!(names, serde_variants(refusal), "every cause is listed");
    for c in every_cause() {
        assert_eq!(serde_json::to_string(&c).expect("json"), format!("\"{}\"", c.as_str()));
    }
}

#[test]
fn the_format_is_stated_literally() {
    let close = Action::Close { conn: id("c1"), code: 1008, reason: "r".into(), cause: CloseCause::SlowConsumer };
    assert_eq!(
        encode("abcd1234", &close),
        r#"{"o":"abcd1234","a":{"k":"close","conn":"c1","code":1008,"reason":"r","cause":"slow-consumer"}}"#
    );
    let bin = Action::Room { room: "r".into(), msg: Message::Binary(vec![0, 255].into()), except: None };
    assert_eq!(encode("o", &bin), r#"{"o":"o","a":{"k":"room","room":"r","m":{"b":"AP8="},"except":null}}"#);
    let set = Action::SetMeta { conn: id("c1"), key: "k".into(), value: None };
    assert_eq!(encode("o", &set), r#"{"o":"o","a":{"k":"set","conn":"c1","key":"k","value":null}}"#);
}

#[test]
fn malformed_messages_are_refused() {
    for bad in [
        "",
        "not json",
        r#"{"a":{"k":"send","to":"c","m":{"t":"x"}}}"#,
        r#"{"o":"x","a":{"k":"nope"}}"#,
        r#"{"o":"x","a":{"k":"send","to":"","m":{"t":"x"}}}"#,
        r#"{"o":"x","a":{"k":"send","to":"a b","m":{"t":"x"}}}"#,
        r#"{"o":"x","a":{"k":"send","to":"c","m":{"b":"!!"}}}"#,
        r#"{"o":"x","a":{"k":"send","to":"c","m":{"x":"y"}}}"#,
        r#"{"o":"x","a":{"k":"close","conn":"c","code":70000,"reason":"","cause":"api"}}"#,
        r#"{"o":"x","a":{"k":"close","conn":"c","code":1000,"reason":"","cause":"bogus"}}"#,
    ] {
        assert!(decode(bad).is_err(), "{bad}");
    }
}
