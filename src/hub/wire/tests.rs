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

fn examples() -> Vec<Action> {
    Action::examples()
}

/// The wire name of an action: its `k`.
fn tag(a: &Action) -> String {
    let json: serde_json::Value = serde_json::from_str(&encode("x", a)).expect("json");
    json["a"]["k"].as_str().expect("a tag").to_owned()
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
    let covered: BTreeSet<String> = examples().iter().map(tag).collect();
    let refusal = decode(r#"{"o":"x","a":{"k":"?"}}"#).expect_err("an unknown kind");
    assert_eq!(covered, serde_variants(refusal));
}

#[test]
fn close_causes_travel_by_their_ws_close_cause_names() {
    let names: BTreeSet<String> = CloseCause::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    let refusal = serde_json::from_str::<CloseCause>(r#""?""#).expect_err("an unknown cause");
    assert_eq!(names, serde_variants(refusal), "every cause is listed");
    for c in CloseCause::ALL {
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

fn moves() -> Vec<Move> {
    let x = id("aaaaaaaa000000000000000000000001");
    vec![
        Move::Take { token: "tok".into(), nonce: "n1".into(), to: "bbbbbbbb".into(), endpoint: "/chat.sh".into() },
        Move::Take { token: "tok".into(), nonce: "n2".into(), to: "bbbbbbbb".into(), endpoint: String::new() },
        Move::Refuse { id: x.clone(), nonce: "n1".into(), why: "unknown session".into() },
        Move::Cut { id: x.clone(), nonce: "n1".into(), to: "bbbbbbbb".into() },
        Move::Handover { id: x.clone(), nonce: "n1".into(), key: "ws2http:handover:n1".into() },
        Move::Gone { id: x.clone() },
        Move::Ran { id: x },
    ]
}

#[test]
fn every_move_round_trips_and_actions_still_decode_as_frames() {
    for m in moves() {
        let wire = encode_move("abcd1234", &m);
        let back = decode_frame(&wire).unwrap_or_else(|e| panic!("{wire}: {e}"));
        assert_eq!(back, Frame { origin: "abcd1234".into(), body: Body::Move(m) }, "{wire}");
    }
    for a in examples() {
        let back = decode_frame(&encode("abcd1234", &a)).expect("an action");
        assert_eq!(back, Frame { origin: "abcd1234".into(), body: Body::Action(a) });
    }
}

#[test]
fn a_frame_with_both_or_neither_is_malformed() {
    let both = r#"{"o":"x","a":{"k":"join","conn":"c","room":"r"},"s":{"k":"gone","id":"c"}}"#;
    assert!(decode_frame(both).is_err());
    assert!(decode_frame(r#"{"o":"x"}"#).is_err());
    assert_eq!(
        encode_move("x", &Move::Gone { id: id("c") }),
        r#"{"o":"x","s":{"k":"gone","id":"c"}}"#,
        "the format is stated literally"
    );
}
