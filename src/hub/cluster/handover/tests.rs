//! A move's bookkeeping in-process: what B records after its cut, how it
//! goes into the snapshot, and how what arrives after reaches the session
//! alone, in order.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::*;
use crate::action::Message;
use crate::event::{ConnInfo, RequestFields, RequestInfo, Target};
use crate::hub::local::Carried;
use crate::hub::outgoing::OutgoingBudget;
use crate::hub::session::Request;
use crate::hub::shared::Outgoing;

fn id(s: &str) -> ConnId {
    ConnId::parse(s).expect("id")
}

fn hub() -> Hub {
    let held: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    Hub::new(64, OutgoingBudget::new(1 << 20, usize::MAX / 2, held))
}

/// Registers connection `conn` at /chat with what it brings.
fn register(hub: &Hub, conn: &ConnId, carried: Carried) -> Outgoing {
    let endpoint = "/chat";
    let target =
        Target { filename: endpoint.into(), script_name: endpoint.into(), path_info: String::new(), interpreter: None };
    let request = RequestInfo::new(RequestFields::default(), []);
    hub.register_session(Arc::new(ConnInfo { id: conn.clone(), target, request }), None, carried).0
}

fn got(rx: &Outgoing) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|m| match m {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => format!("bin:{}", b.len()),
        })
        .collect()
}

fn room(r: &str, text: &str, except: Option<&ConnId>) -> Action {
    Action::Room { room: r.into(), msg: Message::text(text.to_owned()), except: except.cloned() }
}

fn send(to: &ConnId, text: &str) -> Action {
    Action::Send { to: to.clone(), msg: Message::text(text.to_owned()) }
}

fn snapshot(x: &ConnId, rooms: &[&str]) -> Snapshot {
    Snapshot {
        id: x.clone(),
        request: Request { uri: "/chat?x=1".into(), ..Default::default() },
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        meta: vec![],
        token: String::new(),
        prev: None,
        overflow: false,
        received: 0,
        resumes: 0,
        floor: 0,
        window: vec![Message::text("old")],
        queued: vec![],
        events_pending: false,
    }
}

fn texts(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| if let Message::Text(t) = m { t.to_string() } else { "bin".into() }).collect()
}

#[test]
fn what_follows_the_cut_goes_into_the_snapshot_following_its_rooms_in_order() {
    let arrivals = Arrivals::new(1 << 20);
    let (x, other) = (id("x"), id("other"));
    let rx = arrivals.start("n1");
    let max = arrivals.max_recorded();
    // Before the cut: the old instance still delivers these (in its snapshot).
    arrivals.recording().record(&room("r", "before", None), max);
    assert!(arrivals.cut(&x, "n1"));
    let after = [
        room("r", "one", None),
        send(&other, "not for x"),
        room("r", "not to x", Some(&x)),
        Action::Join { conn: x.clone(), room: "s".into() },
        room("s", "two", None),
        Action::Broadcast { endpoint: Some("/elsewhere".into()), msg: Message::text("no") },
        Action::Broadcast { endpoint: Some("/chat".into()), msg: Message::text("three") },
        Action::Leave { conn: x.clone(), room: "r".into() },
        room("r", "left", None),
        send(&x, "four"),
        Action::SetMeta { conn: x.clone(), key: "k".into(), value: Some("v".into()) },
    ];
    for a in &after {
        arrivals.recording().record(a, max);
    }
    assert!(arrivals.arrive("n1", snapshot(&x, &["r"])).is_ok());
    let snap = rx.try_recv().expect("answered").expect("a snapshot");
    assert_eq!(texts(&snap.window), ["old"]);
    assert_eq!(texts(&snap.queued), ["one", "two", "three", "four"]);
    assert_eq!(snap.rooms, ["s"]);
    assert_eq!(snap.meta, [("k".to_owned(), "v".to_owned())]);
}

#[test]
fn what_arrives_until_the_resume_puts_it_in_reaches_it_once_after_its_snapshot_then_live() {
    let (arrivals, hub) = (Arrivals::new(1 << 20), hub());
    let x = id("x");
    let rx = arrivals.start("n");
    arrivals.cut(&x, "n");
    arrivals.recording().record(&send(&x, "folded"), 100);
    assert!(arrivals.arrive("n", snapshot(&x, &[])).is_ok());
    let snap = rx.try_recv().expect("answered").expect("a snapshot");
    assert_eq!(texts(&snap.queued), ["folded"]);
    // Not in the hub yet: recorded (and applied to nobody).
    let mut rec = arrivals.recording();
    rec.record(&send(&x, "meanwhile"), 100);
    hub.apply(send(&x, "meanwhile"));
    drop(rec);
    // The resume puts it in, with its snapshot's queue first.
    let mut out = None;
    let put_in = || {
        let carried = Carried { queued: snap.queued, ..Default::default() };
        out = Some(register(&hub, &x, carried));
        true
    };
    assert!(arrivals.put_in("n", &hub, put_in));
    assert!(arrivals.is_idle(), "its move is over");
    let mut rec = arrivals.recording();
    rec.record(&send(&x, "live"), 100);
    hub.apply(send(&x, "live"));
    drop(rec);
    assert_eq!(got(&out.expect("put in")), ["folded", "meanwhile", "live"]);
}

#[test]
fn a_session_the_resume_could_not_put_in_gets_nothing_recorded() {
    let (arrivals, hub) = (Arrivals::new(1 << 20), hub());
    let x = id("x");
    let rx = arrivals.start("n");
    arrivals.cut(&x, "n");
    assert!(arrivals.arrive("n", snapshot(&x, &[])).is_ok());
    let _snap = rx.try_recv().expect("answered");
    arrivals.recording().record(&send(&x, "meanwhile"), 100);
    assert!(!arrivals.put_in("n", &hub, || false));
    assert!(arrivals.is_idle());
    assert!(!hub.is_known(&x));
}

#[test]
fn recording_is_bounded_in_bytes() {
    let arrivals = Arrivals::new(10);
    let x = id("x");
    let rx = arrivals.start("n");
    arrivals.cut(&x, "n");
    for a in [send(&x, "123456"), send(&x, "7890ab"), send(&x, "cd")] {
        arrivals.recording().record(&a, 10);
    }
    assert!(arrivals.arrive("n", snapshot(&x, &[])).is_ok());
    let snap = rx.try_recv().expect("answered").expect("snapshot");
    assert_eq!(texts(&snap.queued), ["123456", "cd"]);
    assert!(snap.overflow, "one was dropped: it ends where it arrives, never resumes with a gap");
    // Within the bound: no overflow.
    let rx = arrivals.start("m");
    arrivals.cut(&x, "m");
    arrivals.recording().record(&send(&x, "12"), 10);
    assert!(arrivals.arrive("m", snapshot(&x, &[])).is_ok());
    assert!(!rx.try_recv().expect("answered").expect("snapshot").overflow);
}

#[test]
fn over_the_bound_after_its_snapshot_came_the_session_ends_as_an_overflow() {
    let (hub, arrivals, x) = (hub(), Arrivals::new(10), id("x"));
    let _rx = arrivals.start("n");
    arrivals.cut(&x, "n");
    assert!(arrivals.arrive("n", snapshot(&x, &[])).is_ok());
    for a in [send(&x, "123456"), send(&x, "7890ab")] {
        arrivals.recording().record(&a, 10);
    }
    let out = std::cell::RefCell::new(None);
    assert!(arrivals.put_in("n", &hub, || out.replace(Some(register(&hub, &x, Carried::default()))).is_none()));
    let close = hub.shared_of(&x).expect("in").close_request().expect("it ends");
    assert_eq!(close.cause, crate::action::CloseCause::ResumeOverflow);
    assert!(got(out.borrow().as_ref().expect("registered")).is_empty(), "nothing replayed with a gap");
}

#[test]
fn a_move_that_gave_up_ignores_its_late_cut_and_snapshot_and_answers_its_waiter() {
    let arrivals = Arrivals::new(100);
    let x = id("x");
    let rx = arrivals.start("n");
    assert_eq!(arrivals.end("n", MoveRefused::Timeout), Some(false), "it had not seen its cut");
    assert_eq!(rx.try_recv().expect("an answer").expect_err("refused"), MoveRefused::Timeout);
    assert!(!arrivals.cut(&x, "n"));
    assert!(arrivals.arrive("n", snapshot(&x, &[])).is_err());
}

#[test]
fn one_session_arrives_through_one_move_at_a_time() {
    let arrivals = Arrivals::new(100);
    let x = id("x");
    let _a = arrivals.start("a");
    let _b = arrivals.start("b");
    assert!(arrivals.cut(&x, "a"));
    assert!(!arrivals.cut(&x, "b"));
}

#[test]
fn departures_track_what_is_moving_and_what_left() {
    let d = Departures::default();
    let x = id("x");
    assert!(d.agree(&x, "bbbbbbbb", "n"));
    assert!(!d.agree(&x, "cccccccc", "m"), "busy while moving");
    assert_eq!(d.cut(&x), Some(("bbbbbbbb".to_owned(), "n".to_owned())));
    assert!(!d.is_away(&x));
    d.moved_away(&x);
    assert!(d.is_away(&x));
    d.forget(&x);
    assert!(!d.is_away(&x));
}

/// A cut whose marker never came is found once `HANDOVER_WAIT` passed
/// (review 18 #4); a cut that came or failed is forgotten.
#[test]
fn a_cut_sent_without_its_marker_is_due_a_check_and_forgotten_once_decided() {
    let d = Departures::default();
    let x = ConnId::random();
    d.sent(&x);
    assert!(d.overdue(std::time::Duration::ZERO).is_empty(), "not agreed: nothing sent");
    assert!(d.agree(&x, "bbbbbbbb", "n1"));
    assert!(d.overdue(std::time::Duration::ZERO).is_empty(), "agreed, not sent yet");
    d.sent(&x);
    assert!(d.overdue(std::time::Duration::from_secs(60)).is_empty(), "not due yet");
    let due = d.overdue(std::time::Duration::ZERO);
    assert_eq!(due, vec![(x.clone(), "bbbbbbbb".to_owned(), "n1".to_owned())]);
    assert_eq!(d.cut(&x), Some(("bbbbbbbb".to_owned(), "n1".to_owned())));
    assert!(d.overdue(std::time::Duration::ZERO).is_empty());
}

/// A move given up before its cut records nothing when the cut comes
/// later (review 18 #9: B keeps no `cuts` entry for it).
#[test]
fn an_incoming_session_is_not_recorded_for_before_its_cut_nor_after_it_ended() {
    let arrivals = Arrivals::new(1000);
    let x = ConnId::random();
    let _rx = arrivals.start("n1");
    assert!(arrivals.cut(&x, "n1"));
    assert!(!arrivals.cut(&x, "n2"), "no such move");
    assert_eq!(arrivals.end("n1", MoveRefused::Timeout), Some(true));
    assert!(arrivals.is_idle());
    assert!(!arrivals.cut(&x, "n1"), "given up: its cut is not recorded (nor undone twice)");
}
