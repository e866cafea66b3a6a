//! A move's bookkeeping in-process: what B records after its cut, and how
//! the recorded actions reach the arrived session alone, in order.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::*;
use crate::action::Message;
use crate::event::{ConnInfo, RequestFields, RequestInfo, Target};
use crate::hub::outgoing::OutgoingBudget;
use crate::hub::shared::Outgoing;

fn id(s: &str) -> ConnId {
    ConnId::parse(s).expect("id")
}

fn hub() -> Hub {
    let held: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    Hub::new(64, OutgoingBudget::new(1 << 20, usize::MAX / 2, held))
}

fn connect(hub: &Hub, conn: &ConnId, endpoint: &str) -> Outgoing {
    let target =
        Target { filename: endpoint.into(), script_name: endpoint.into(), path_info: String::new(), interpreter: None };
    let request = RequestInfo::new(RequestFields::default(), []);
    hub.register(Arc::new(ConnInfo { id: conn.clone(), target, request })).0
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

#[test]
fn only_actions_after_the_cut_are_recorded_and_only_those_that_may_concern_the_session() {
    let arrivals = Arrivals::new(1 << 20);
    let (x, other) = (id("x"), id("other"));
    let _rx = arrivals.start(&x, "n1").expect("a new move");
    assert!(arrivals.start(&x, "n2").is_none(), "one move per session at a time");
    let max = arrivals.max_recorded();
    // Before the cut: the old instance still delivers these (in the snapshot).
    arrivals.recording().record(&room("r", "before", None), max);
    assert!(!arrivals.cut(&x, "other nonce"), "another move's cut is not this one's");
    assert!(arrivals.cut(&x, "n1"));
    for a in [room("r", "after", None), send(&other, "not for x"), send(&x, "for x")] {
        arrivals.recording().record(&a, max);
    }
    let recorded = arrivals.arrive(&x, "n1", |a| a.recorded.clone()).expect("waiting");
    assert_eq!(recorded, vec![room("r", "after", None), send(&x, "for x")]);
    assert!(arrivals.arrive(&x, "n1", |_| ()).is_none(), "a move arrives once");
}

#[test]
fn recording_is_bounded_in_bytes() {
    let arrivals = Arrivals::new(10);
    let x = id("x");
    let _rx = arrivals.start(&x, "n").expect("new");
    arrivals.cut(&x, "n");
    for a in [send(&x, "123456"), send(&x, "7890ab"), send(&x, "cd")] {
        arrivals.recording().record(&a, 10);
    }
    let (recorded, overflowed) = arrivals.arrive(&x, "n", |a| (a.recorded.clone(), a.overflowed)).expect("waiting");
    assert_eq!(recorded, vec![send(&x, "123456"), send(&x, "cd")]);
    assert!(overflowed, "the move knows something was dropped");
}

#[test]
fn a_move_that_gave_up_ignores_its_late_cut_and_snapshot_and_answers_its_waiter() {
    let arrivals = Arrivals::new(100);
    let x = id("x");
    let rx = arrivals.start(&x, "n").expect("new");
    assert_eq!(arrivals.end(&x, "n", Err(MoveRefused::Timeout)), Some(false), "it had not seen its cut");
    assert_eq!(rx.try_recv().expect("an answer"), Err(MoveRefused::Timeout));
    assert!(!arrivals.cut(&x, "n"));
    assert!(arrivals.arrive(&x, "n", |_| ()).is_none());
    assert!(arrivals.start(&x, "n2").is_some(), "a later resume may try again");
}

#[test]
fn the_replay_reaches_the_arrived_session_alone_following_its_rooms_in_order() {
    let hub = hub();
    let (x, y) = (id("x"), id("y"));
    let rx_x = connect(&hub, &x, "/chat");
    let rx_y = connect(&hub, &y, "/chat");
    hub.apply(Action::Join { conn: y.clone(), room: "r".into() });
    let recorded = vec![
        room("r", "not yet a member", None),
        Action::Join { conn: x.clone(), room: "r".into() },
        room("r", "one", None),
        room("r", "not to x", Some(&x)),
        Action::Broadcast { endpoint: Some("/other".into()), msg: Message::text("elsewhere") },
        Action::Broadcast { endpoint: Some("/chat".into()), msg: Message::text("two") },
        send(&x, "three"),
        Action::Leave { conn: x.clone(), room: "r".into() },
        room("r", "left", None),
    ];
    replay(&hub, &x, recorded);
    assert_eq!(got(&rx_x), ["one", "two", "three"]);
    assert!(got(&rx_y).is_empty(), "the others had these live");
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
