//! The gateway driven by a fake transport: what each kind of answer
//! becomes, whatever carries it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::slots::Slots;
use super::*;
use crate::action::Message;
use crate::event::{ConnInfo, Target};
use crate::id::ConnId;

/// What the fake backend answers.
enum Answer {
    /// Raw CGI output, read through the gateway's line pump.
    Raw(&'static [u8]),
    /// A parsed head, then raw body lines (how the HTTP transport answers).
    Parsed(Head, &'static [u8]),
}

struct Fake {
    answer: Answer,
    /// The outcome it reports when the output was read to its end.
    outcome: fn() -> Outcome,
    limits: Limits,
    slots: Arc<Slots>,
    /// Slots free while the exchange ran (must be 0: the gateway holds one).
    free_during: Mutex<Option<bool>>,
}

fn fake(answer: Answer) -> Fake {
    let limits = Limits { timeout: Duration::from_secs(30), max_output: 100 };
    Fake { answer, outcome: || Outcome::Success, limits, slots: Slots::new(1), free_during: Mutex::new(None) }
}

impl Transport for Fake {
    fn via(&self) -> &str {
        " (fake)"
    }
    fn limits(&self) -> &Limits {
        &self.limits
    }
    fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }
    fn exchange<'a>(&'a self, _: &'a Event, call: &'a mut Call<'_>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let taken = futures_lite::future::poll_once(Box::pin(self.slots.acquire())).await.is_none();
            *self.free_during.lock().expect("lock") = Some(!taken);
            assert!(call.label().ends_with(" (fake)"), "{}", call.label());
            let body = match &self.answer {
                Answer::Raw(bytes) => bytes,
                Answer::Parsed(head, bytes) => {
                    call.head(head.clone());
                    bytes
                }
            };
            match call.pump(&mut futures_lite::io::BufReader::with_capacity(3, *body)).await {
                // A cut reported as whatever the transport makes of it (a
                // script that had exited already: success).
                Ok(()) | Err(Cut::TooMuch) => (self.outcome)(),
                Err(Cut::Io(e)) => Outcome::Unavailable(e.to_string()),
            }
        })
    }
}

fn event(kind: EventKind) -> Event {
    let target =
        Target { filename: "/s.sh".into(), script_name: "/s.sh".into(), path_info: "".into(), interpreter: None };
    let conn = Arc::new(ConnInfo { id: ConnId::parse("me").expect("id"), target, request: Default::default() });
    Event { kind, conn, rooms: vec![], meta: vec![] }
}

fn message() -> EventKind {
    EventKind::Message { payload: "hi".into(), binary: false }
}

fn run_fake(t: &Fake, kind: EventKind) -> (Outcome, Vec<Output>) {
    let mut items = Vec::new();
    let outcome = crate::runtime::block_on(run(t, &event(kind), &mut |o| items.push(o)));
    (outcome, items)
}

use super::sent_texts as texts;

#[test]
fn a_header_block_then_lines_each_applied_as_it_comes() {
    let t = fake(Answer::Raw(b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nhello\n@join lobby\nbye"));
    let (outcome, items) = run_fake(&t, message());
    assert_eq!(outcome, Outcome::Success);
    assert!(matches!(&items[0], Output::Head(h) if h.get("x-a") == Some("1")));
    assert!(matches!(&items[2], Output::Action(Action::Join { room, .. }) if room == "lobby"));
    assert_eq!(texts(&items), ["hello", "bye"]);
    assert_eq!(*t.free_during.lock().expect("lock"), Some(false), "the event held the only slot");
    assert!(futures_lite::future::block_on(futures_lite::future::poll_once(Box::pin(t.slots.acquire()))).is_some());
}

#[test]
fn a_typed_body_is_one_message_sent_at_the_end() {
    let t = fake(Answer::Raw(b"Content-Type: application/octet-stream\n\n\x00\xff\nrest"));
    let (_, items) = run_fake(&t, message());
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        matches!(&items[1], Output::Action(Action::Send { msg: Message::Binary(b), .. }) if &b[..] == b"\x00\xff\nrest")
    );
}

#[test]
fn a_parsed_head_picks_the_body_mode_like_a_printed_one() {
    let json = Head { status: Some(200), headers: vec![("content-type".into(), "application/json".into())] };
    let (_, items) = run_fake(&fake(Answer::Parsed(json, b"{\"a\":\n1}\n")), message());
    assert_eq!(texts(&items), ["{\"a\":\n1}\n"]);
    let none = Head { status: Some(200), headers: vec![] };
    let (_, items) = run_fake(&fake(Answer::Parsed(none, b"one\ntwo\n")), message());
    assert_eq!(texts(&items), ["one", "two"]);
}

#[test]
fn output_past_the_limit_is_cut_and_the_event_fails() {
    // 100 bytes allowed: the first lines pass, the rest never arrives.
    let t = fake(Answer::Raw(b"01234567890123456789012345678901234567890123456789\n012345678901234567890123456789012345678\nover the limit\n"));
    let (outcome, items) = run_fake(&t, message());
    assert_eq!(outcome, Outcome::Failed(OUTPUT_LIMIT.into()), "the transport said success; the cut decides");
    assert_eq!(texts(&items).len(), 2);
    // One endless line is cut too, without being held whole.
    let mut t = fake(Answer::Raw(&[b'x'; 1000]));
    t.outcome = || Outcome::Failed("killed by signal 9".into());
    let (outcome, items) = run_fake(&t, message());
    assert_eq!(
        outcome,
        Outcome::Failed("output limit (killed by signal 9)".into()),
        "the same verdict, with its detail"
    );
    assert!(items.is_empty());
}

#[test]
fn a_whole_body_cut_by_the_limit_sends_nothing() {
    // Before: the cut body was still sent at the end, as an empty (or short)
    // message, for every transport.
    for answer in [
        Answer::Raw(b"Content-Type: application/json\n\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"),
        Answer::Raw(b"Content-Type: application/octet-stream\n\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
        Answer::Parsed(
            Head { status: Some(200), headers: vec![("Content-Type".into(), "application/x-ws-text".into())] },
            b"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789x",
        ),
    ] {
        let (outcome, items) = run_fake(&fake(answer), message());
        assert_eq!(outcome, Outcome::Failed(OUTPUT_LIMIT.into()));
        assert!(!items.iter().any(|o| matches!(o, Output::Action(_))), "nothing applied: {items:?}");
    }
    // Within the limit it is sent whole.
    let (outcome, items) = run_fake(&fake(Answer::Raw(b"Content-Type: application/json\n\n{}")), message());
    assert_eq!((outcome, texts(&items)), (Outcome::Success, vec!["{}".to_owned()]));
}

#[test]
fn an_ambiguous_head_fails_the_event_and_applies_nothing() {
    for (kind, answer) in [
        (message(), &b"Content-Length: 3\nContent-Length: 5\n\nhello\n@join r\n"[..]),
        (EventKind::Open, b"Status: 200\nStatus: 403\n\n@join r\n"),
        (
            EventKind::Close { code: 1000, reason: String::new(), cause: crate::action::CloseCause::Client },
            b"Content-Length: abc\n\nbye\n",
        ),
    ] {
        let (outcome, items) = run_fake(&fake(Answer::Raw(answer)), kind);
        assert!(
            matches!(&outcome, Outcome::Failed(why) if why.contains("Content-Length") || why.contains("Status")),
            "{outcome:?}"
        );
        assert!(items.is_empty(), "{items:?}");
    }
}

#[test]
fn failed_and_unavailable_outcomes_pass_through_after_the_output() {
    let mut t = fake(Answer::Raw(b"partial\n"));
    t.outcome = || Outcome::Failed("exited with status 3".into());
    let (outcome, items) = run_fake(&t, message());
    assert_eq!(outcome, Outcome::Failed("exited with status 3".into()));
    assert_eq!(texts(&items), ["partial"], "what came before the failure was delivered");
    t.outcome = || Outcome::Unavailable("cannot connect".into());
    assert_eq!(run_fake(&t, EventKind::Open).0, Outcome::Unavailable("cannot connect".into()));
}

#[test]
fn an_open_rejection_keeps_its_body_raw() {
    let t = fake(Answer::Raw(b"Status: 403 Forbidden\nContent-Type: text/plain\n\nno entry\n@join x\n"));
    let (_, items) = run_fake(&t, EventKind::Open);
    assert!(matches!(&items[0], Output::Head(h) if h.status == Some(403)));
    assert!(matches!(&items[1], Output::RejectBody(b) if b == b"no entry\n@join x\n"));
    assert_eq!(items.len(), 2, "no directive of a rejected open is run");
    // A parsed head rejects the same way.
    let head = Head { status: Some(401), headers: vec![] };
    let (_, items) = run_fake(&fake(Answer::Parsed(head, b"go away")), EventKind::Open);
    assert!(matches!(&items[1], Output::RejectBody(b) if b == b"go away"));
    // The same output for a message event is just line mode.
    let (_, items) = run_fake(&fake(Answer::Raw(b"Status: 403\n\nhi\n")), message());
    assert_eq!(texts(&items), ["hi"]);
}

/// The last chunk of a spawned script's output ([`Call::feed_end`]) ends it
/// as `feed` then `end` would: a last line without a newline is applied,
/// a line split across chunks is whole, and the limit cuts as before.
#[test]
fn the_last_chunk_ends_the_output_as_feed_then_end() {
    let limits = Limits { timeout: Duration::from_secs(30), max_output: 12 };
    let id = ConnId::parse("me").expect("id");
    let run = |chunks: &[&[u8]]| {
        let mut items = Vec::new();
        let mut sink = |o| items.push(o);
        let mut call = Call::new("[me] /s.sh message", limits, (&id, "/s.sh"), false, &mut sink);
        let (last, first) = chunks.split_last().expect("a chunk");
        let mut fed = first.iter().try_for_each(|c| call.feed(c));
        if fed.is_ok() {
            fed = call.feed_end(last);
        }
        let outcome = call.conclude(Outcome::Success);
        (fed.is_ok(), outcome, texts(&items))
    };
    let ok = (true, Outcome::Success, vec!["abc".to_owned(), "last".to_owned()]);
    assert_eq!(run(&[b"abc\nlast"]), ok);
    assert_eq!(run(&[b"ab", b"c\nla", b"st"]), ok);
    assert_eq!(run(&[b"abc\n", b"last"]), ok);
    assert_eq!(run(&[b"abc\n", b"last\n"]), ok);
    assert_eq!(run(&[b"abc\n", b""]), (true, Outcome::Success, vec!["abc".to_owned()]));
    let cut = run(&[b"abc\n", b"0123456789"]);
    assert_eq!(cut, (false, Outcome::Failed(OUTPUT_LIMIT.into()), vec!["abc".to_owned()]));
}
