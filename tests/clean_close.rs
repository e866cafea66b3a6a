//! What becomes of a connection's queued message events when it ends: a
//! client that closes cleanly (a close frame, as `ws.send(x); ws.close()` in
//! a browser) still gets them run, in order, then its close event; a
//! connection that ended otherwise (here: closed through the control API)
//! has them dropped, with one log line.

mod common;
mod rawws;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

/// Opens a connection to `path` by hand; returns it with its id (the
/// fixtures say `id ID` first).
fn open(s: &Server, path: &str) -> (TcpStream, String) {
    let mut tcp = rawws::open(s.port, path);
    let id = rawws::read_text(&mut tcp).strip_prefix("id ").expect("id line").to_owned();
    (tcp, id)
}

/// A close frame with code 1000.
fn close_1000() -> Vec<u8> {
    rawws::frame(rawws::CLOSE, &1000u16.to_be_bytes())
}

#[test]
fn messages_sent_just_before_a_clean_close_still_run_then_the_close_event() {
    let s = Server::start(&[]);
    // b listens in room r.
    let (mut b, _) = open(&s, "/mirror.sh");
    b.write_all(&rawws::frame(rawws::TEXT, b"@join r\njoined")).expect("send");
    assert_eq!(rawws::read_text(&mut b), "joined");
    // a sends ten messages for the room and closes, all in one write.
    let (mut a, a_id) = open(&s, "/mirror.sh");
    let mut bytes: Vec<u8> =
        (0..10).flat_map(|i| rawws::frame(rawws::TEXT, format!("@room r a{i}").as_bytes())).collect();
    bytes.extend(close_1000());
    a.write_all(&bytes).expect("send");
    assert_eq!(rawws::read_close(&mut a).map(|(code, _)| code), Some(1000));
    for i in 0..10 {
        assert_eq!(rawws::read_text(&mut b), format!("a{i}"), "what a's message events sent to the room");
    }
    let close = s.wait_event("a's close event", |l| l.starts_with(&format!("close {a_id} ")));
    assert!(close.contains(" 1000 client"), "{close}");
    // Every message event ran before the close event, none was dropped.
    let events: Vec<String> = s.events().into_iter().filter(|l| l.contains(&a_id)).collect();
    let mut want = vec![format!("open {a_id}")];
    want.extend((0..10).map(|_| format!("message {a_id}")));
    assert_eq!(events[..11], want[..], "{events:?}");
    assert!(events[11].starts_with(&format!("close {a_id} 1000 client")), "{events:?}");
    assert!(!s.log().contains("dropped them"), "{}", s.log());
}

/// One script slot; `a` sends a message that holds it (hold.sh waits for
/// the flag file), then five more that wait in its queue. Returns `a`, its
/// id and the server.
fn five_queued_behind_a_held_one() -> (Server, TcpStream, String) {
    let s = Server::start(&["--max-procs", "1"]);
    let (mut a, a_id) = open(&s, "/hold.sh");
    a.write_all(&rawws::frame(rawws::TEXT, b"held")).expect("send");
    s.wait_event("the held message", |l| l.starts_with(&format!("message {a_id}")));
    for i in 0..5 {
        a.write_all(&rawws::frame(rawws::TEXT, format!("queued {i}").as_bytes())).expect("send");
    }
    wait_for("five queued events", || {
        get(&s.api("/metrics")).body.contains("\nws2http_events_queued 5\n").then_some(())
    });
    (s, a, a_id)
}

fn message_events(s: &Server, id: &str) -> usize {
    s.events().iter().filter(|l| l.starts_with(&format!("message {id}"))).count()
}

#[test]
fn queued_messages_run_after_a_clean_close_but_not_after_an_api_close() {
    // The client closes: its five queued messages run, then the close event.
    let (s, mut a, a_id) = five_queued_behind_a_held_one();
    a.write_all(&close_1000()).expect("send");
    assert_eq!(rawws::read_close(&mut a).map(|(code, _)| code), Some(1000));
    // The server ends the TCP connection once the close event is queued
    // (its `closed:` line comes later, after the queued events ran).
    a.set_read_timeout(Some(std::time::Duration::from_secs(15))).expect("timeout");
    assert_eq!(a.read(&mut [0u8; 64]).expect("the server closes"), 0);
    std::fs::write(s.dir.join("flag"), "").expect("flag");
    let close = s.wait_event("a's close event", |l| l.starts_with(&format!("close {a_id} ")));
    assert_eq!(close, format!("close {a_id} 1000 client"));
    assert_eq!(message_events(&s, &a_id), 6, "{:?}", s.events());
    assert!(!s.log().contains("dropped them"), "{}", s.log());

    // Closed through the control API instead: they are dropped.
    let (s, mut a, a_id) = five_queued_behind_a_held_one();
    assert_eq!(api("DELETE", &s.api(&format!("/connections/{a_id}")), None, None, b"").status, 200);
    assert_eq!(rawws::read_close(&mut a).map(|(code, _)| code), Some(1000));
    a.write_all(&close_1000()).expect("answer the close");
    std::fs::write(s.dir.join("flag"), "").expect("flag");
    let close = s.wait_event("a's close event", |l| l.starts_with(&format!("close {a_id} ")));
    assert_eq!(close, format!("close {a_id} 1000 api"));
    assert_eq!(message_events(&s, &a_id), 1, "{:?}", s.events());
    s.wait_log(&format!("[{a_id}] the connection ended with 5 message event(s) still queued; dropped them"));
}

/// One script slot: `a` sends a message that holds it, then `b` sends one
/// that leaves its queue and waits for the slot. Returns the server, `a`
/// and `b` with their ids.
fn b_waiting_for_as_slot() -> (Server, (TcpStream, String), (TcpStream, String)) {
    let s = Server::start(&["--max-procs", "1"]);
    let (mut a, a_id) = open(&s, "/hold.sh");
    let (mut b, b_id) = open(&s, "/hold.sh");
    a.write_all(&rawws::frame(rawws::TEXT, b"held")).expect("send");
    s.wait_event("the held message", |l| l.starts_with(&format!("message {a_id}")));
    b.write_all(&rawws::frame(rawws::TEXT, b"waiting")).expect("send");
    wait_for("b's message waiting for the slot", || {
        let m = get(&s.api("/metrics")).body;
        (m.contains("\nws2http_messages_in_total 2\n") && m.contains("\nws2http_events_queued 0\n")).then_some(())
    });
    (s, (a, a_id), (b, b_id))
}

/// A message that was taken from the queue but still waits for a
/// `--max-procs` slot is dropped too when its connection ends meanwhile
/// (it ran once the slot came free, after its client was gone).
#[test]
fn a_message_waiting_for_a_slot_is_dropped_when_its_connection_ends() {
    let (s, _a, (mut b, b_id)) = b_waiting_for_as_slot();
    assert_eq!(api("DELETE", &s.api(&format!("/connections/{b_id}")), None, None, b"").status, 200);
    assert_eq!(rawws::read_close(&mut b).map(|(code, _)| code), Some(1000));
    b.write_all(&close_1000()).expect("answer the close");
    std::fs::write(s.dir.join("flag"), "").expect("flag");
    let close = s.wait_event("b's close event", |l| l.starts_with(&format!("close {b_id} ")));
    assert_eq!(close, format!("close {b_id} 1000 api"));
    assert_eq!(message_events(&s, &b_id), 0, "{:?}", s.events());
    s.wait_log(&format!("[{b_id}] the connection ended with 1 message event(s) still queued; dropped them"));
}

/// At shutdown, a message waiting for a `--max-procs` slot is dropped too,
/// also for a client that has not answered the server's close yet: it used
/// to run once the slot came free, and the waiting messages of a busy server
/// ate the time shutdown gives close events.
#[test]
fn at_shutdown_a_message_waiting_for_a_slot_is_dropped_and_every_close_event_runs() {
    let (mut s, (mut a, a_id), (mut b, b_id)) = b_waiting_for_as_slot();
    // The held message ends once shutdown has begun (a thread writes the
    // flag when the log says so, while terminate() waits for the exit).
    let (log, flag) = (s.stderr_log.clone(), s.dir.join("flag"));
    let release = std::thread::spawn(move || {
        wait_for("shutdown begins", || {
            std::fs::read_to_string(&log).unwrap_or_default().contains("shutting down").then_some(())
        });
        std::fs::write(flag, "").expect("flag");
    });
    assert!(s.terminate().success());
    release.join().expect("flag writer");
    for (tcp, who) in [(&mut a, "a"), (&mut b, "b")] {
        assert_eq!(rawws::read_close(tcp).map(|(code, _)| code), Some(1001), "{who}");
    }
    let events = s.events();
    assert!(events.contains(&format!("close {a_id} 1001 shutdown")), "{events:?}");
    assert!(events.contains(&format!("close {b_id} 1001 shutdown")), "{events:?}");
    assert_eq!(message_events(&s, &b_id), 0, "{events:?}");
}
