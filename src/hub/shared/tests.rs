//! The one close path: first request wins, with its note; each ending does
//! what it says.

use futures_lite::future::{block_on, poll_once};

use super::*;

fn conn() -> (std::sync::Arc<ConnShared>, Outgoing) {
    ConnShared::new()
}

fn req(code: u16, cause: CloseCause) -> CloseRequest {
    CloseRequest { code, reason: format!("r{code}"), cause }
}

fn aborted(s: &ConnShared) -> bool {
    block_on(poll_once(std::future::poll_fn(|cx| s.poll_aborted(cx)))).is_some()
}

#[test]
fn the_first_request_wins_with_its_note() {
    let (s, _rx) = conn();
    assert_eq!(s.close_request(), None);
    assert!(s.request_close(req(1009, CloseCause::TooBig), Ending::Record, Some("too big".into())));
    assert!(!s.request_close(req(4000, CloseCause::Script), Ending::Record, Some("later".into())));
    assert!(!s.request_close(req(1006, CloseCause::Dropped), Ending::Record, None));
    assert_eq!(s.close_request(), Some(req(1009, CloseCause::TooBig)));
    assert_eq!(s.close_cause(), Some(CloseCause::TooBig));
    assert_eq!(s.take_close_note().as_deref(), Some("too big"));
    assert_eq!(s.take_close_note(), None, "the note is logged once");
}

#[test]
fn a_later_note_never_replaces_the_first_close() {
    let (s, _rx) = conn();
    s.request_close(req(4000, CloseCause::Script), Ending::Drain, None);
    s.request_close(req(1009, CloseCause::TooBig), Ending::Drain, Some("message too big".into()));
    assert_eq!(s.close_cause(), Some(CloseCause::Script));
    assert_eq!(s.take_close_note(), None, "the note belongs to the close that lost");
}

#[test]
fn record_only_records() {
    let (s, rx) = conn();
    s.request_close(req(1000, CloseCause::Client), Ending::Record, None);
    assert!(!rx.is_closed() && !aborted(&s) && !s.is_aborted());
}

#[test]
fn drain_closes_the_queue_after_what_is_queued() {
    let (s, rx) = conn();
    s.outgoing.push(Message::text("queued")).expect("open");
    assert!(s.request_close(req(4001, CloseCause::Api), Ending::Drain, None));
    assert!(rx.is_closed() && !aborted(&s));
    assert_eq!(rx.try_recv().ok(), Some(Message::text("queued")), "the writer still sends it");
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_drain_that_is_not_first_leaves_the_queue_open() {
    let (s, rx) = conn();
    s.request_close(req(1000, CloseCause::Client), Ending::Record, None);
    assert!(!s.request_close(req(4001, CloseCause::Api), Ending::Drain, None));
    assert!(!rx.is_closed());
}

#[test]
fn abort_fires_even_when_another_close_came_first() {
    let (s, rx) = conn();
    s.request_close(req(1009, CloseCause::TooBig), Ending::Drain, Some("mine".into()));
    assert!(!aborted(&s));
    assert!(!s.request_close(req(1013, CloseCause::QueueFull), Ending::Abort, Some("evicted".into())));
    assert!(aborted(&s) && s.is_aborted() && rx.is_closed());
    assert_eq!(s.close_cause(), Some(CloseCause::TooBig));
    assert_eq!(s.take_close_note().as_deref(), Some("mine"));
}

#[test]
fn a_drop_fires_the_abort_signal_and_leaves_the_queue_alone() {
    let (s, rx) = conn();
    assert!(s.request_close(req(1013, CloseCause::QueueFull), Ending::Drop, Some("evicted".into())));
    // The writer stops on the signal, without a close frame: an ended
    // queue would have it send one.
    assert!(aborted(&s) && !rx.is_closed());
    assert!(!s.request_close(req(1013, CloseCause::QueueFull), Ending::Drop, None));
    assert!(aborted(&s));
}

#[test]
fn an_abort_wakes_a_waiting_writer() {
    let (s, _rx) = conn();
    let mut waiting = Box::pin(std::future::poll_fn(|cx| s.poll_aborted(cx)));
    assert!(block_on(poll_once(waiting.as_mut())).is_none());
    s.request_close(req(1008, CloseCause::SlowConsumer), Ending::Abort, None);
    assert!(block_on(poll_once(waiting.as_mut())).is_some());
}

#[test]
fn ending_records_a_dropped_close_unless_one_was_asked_and_returns_the_winner() {
    let (s, _rx) = conn();
    assert!(!s.has_ended());
    let dropped = CloseRequest { code: 1006, reason: String::new(), cause: CloseCause::Dropped };
    assert_eq!(s.end(), dropped);
    assert!(s.has_ended());
    assert_eq!(s.end(), dropped, "a second end changes nothing");
    let (s, _rx) = conn();
    s.request_close(req(1000, CloseCause::Client), Ending::Record, None);
    assert_eq!(s.end(), req(1000, CloseCause::Client));
}

#[test]
fn the_clients_close_code_is_kept_as_it_was_on_the_wire() {
    let (s, _rx) = conn();
    assert_eq!(s.client_close_code(), None);
    s.client_sent_close(0);
    s.client_sent_close(1000);
    assert_eq!(s.client_close_code(), Some(0), "the first one counts, code 0 included");
}

fn session_conn() -> (std::sync::Arc<ConnShared>, Outgoing) {
    let limits = super::super::session::Limits { messages: 10, bytes: 1000 };
    ConnShared::with_session(Some(super::super::session::Session::new(super::super::session::Token::random(), limits)))
}

fn ping_timeout() -> CloseRequest {
    CloseRequest { code: 1006, reason: String::new(), cause: CloseCause::PingTimeout }
}

#[test]
fn a_close_asked_while_a_sessions_ping_timeout_is_recorded_is_not_lost() {
    let (s, _rx) = session_conn();
    assert!(s.request_close(ping_timeout(), Ending::Record, Some("no pong".into())));
    assert!(
        s.request_close(req(4001, CloseCause::Api), Ending::Drain, Some("api".into())),
        "it replaces the ping timeout"
    );
    assert_eq!(s.close_cause(), Some(CloseCause::Api));
    assert_eq!(s.forget_drop(), None, "final: the session does not detach");
    assert_eq!(s.close_cause(), Some(CloseCause::Api), "and the close is still there");
}

#[test]
fn a_sessions_ping_timeout_alone_is_forgotten_as_a_drop() {
    let (s, _rx) = session_conn();
    assert_eq!(s.forget_drop(), Some(None), "nothing asked: dropped");
    s.request_close(ping_timeout(), Ending::Record, None);
    assert_eq!(s.forget_drop(), Some(Some(CloseCause::PingTimeout)));
    assert_eq!(s.close_request(), None);
    assert!(s.request_close(req(1000, CloseCause::Api), Ending::Drain, None), "a later close is first again");
}

#[test]
fn an_aborted_session_never_detaches() {
    let (s, rx) = session_conn();
    s.request_close(ping_timeout(), Ending::Record, None);
    s.request_close(req(1008, CloseCause::SlowConsumer), Ending::Abort, None);
    assert!(rx.is_closed());
    assert_eq!(s.forget_drop(), None);
}

#[test]
fn a_plain_connections_ping_timeout_stays_first() {
    let (s, _rx) = conn();
    s.request_close(ping_timeout(), Ending::Record, None);
    assert!(!s.request_close(req(4001, CloseCause::Api), Ending::Drain, None));
    assert_eq!(s.close_cause(), Some(CloseCause::PingTimeout));
}
