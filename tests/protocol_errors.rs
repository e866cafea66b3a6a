//! A client that breaks RFC 6455 is closed with 1002 (protocol error) or
//! 1007 (invalid UTF-8), and its close event says `protocol-error`: not
//! `client`, not `dropped`. Everyone else goes on.

mod common;
mod rawws;

use std::io::Write;

use common::*;
use rawws::{frame, frame_with, BINARY, CLOSE, CONTINUATION, PING, TEXT};

/// Opens a mirror.sh connection by hand, sends `bytes`, and returns the
/// code of the server's close frame with the close event's line.
fn break_it(s: &Server, bytes: &[u8]) -> (Option<u16>, String) {
    let mut tcp = rawws::open(s.port, "/mirror.sh");
    let id = rawws::read_text(&mut tcp).strip_prefix("id ").expect("id line").to_owned();
    tcp.write_all(bytes).expect("send");
    let code = rawws::read_close(&mut tcp).map(|(code, _)| code);
    let line = s.wait_event("the close event", |l| l.starts_with(&format!("close {id} ")));
    (code, line)
}

#[test]
fn protocol_errors_close_with_1002_or_1007_and_say_so() {
    let s = Server::start(&[]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("invalid UTF-8 in a text message", frame(TEXT, &[b'a', 0xff, 0xfe]), 1007),
        (
            "invalid UTF-8 across fragments",
            [frame_with(false, 0, TEXT, &[0xe2], true), frame_with(true, 0, CONTINUATION, &[0x28, 0xa1], true)]
                .concat(),
            1007,
        ),
        ("a close reason that is not UTF-8", frame(CLOSE, &[0x03, 0xe8, 0xff]), 1007),
        ("a ping over 125 bytes", frame(PING, &[0; 126]), 1002),
        ("a fragmented ping", frame_with(false, 0, PING, b"x", true), 1002),
        ("reserved bits set", frame_with(true, 4, TEXT, b"x", true), 1002),
        ("an unmasked frame", frame_with(true, 0, TEXT, b"x", false), 1002),
        ("an unknown opcode", frame(0x3, b"x"), 1002),
        ("a continuation with nothing to continue", frame(CONTINUATION, b"x"), 1002),
        (
            "a new message inside a fragmented one",
            [frame_with(false, 0, BINARY, b"a", true), frame(TEXT, b"b")].concat(),
            1002,
        ),
        ("a one-byte close payload", frame(CLOSE, &[0x03]), 1002),
        ("a close code no endpoint may send (1005)", frame(CLOSE, &[0x03, 0xed]), 1002),
    ];
    // All at once: each connection lingers for the close handshake.
    std::thread::scope(|scope| {
        let s = &s;
        let runs: Vec<_> = cases.iter().map(|(_, bytes, _)| scope.spawn(move || break_it(s, bytes))).collect();
        for ((what, _, want), run) in cases.iter().zip(runs) {
            let (code, line) = run.join().expect("case");
            assert_eq!(code, Some(*want), "{what}: close frame");
            assert!(line.contains(&format!(" {want} protocol-error")), "{what}: close event {line:?}");
        }
    });
    // One log line per broken connection.
    let log = s.log();
    let lines =
        log.lines().filter(|l| l.contains("protocol error from the client") || l.contains("close code it may not use"));
    assert_eq!(lines.count(), cases.len(), "{log}");
}

#[async_std::test]
async fn a_broken_client_does_not_disturb_others() {
    let s = Server::start(&[]);
    let (mut healthy, _) = mirror(&s, "/mirror.sh").await;
    let (code, line) = break_it(&s, &frame_with(true, 2, BINARY, b"x", true));
    assert_eq!(code, Some(1002));
    assert!(line.contains(" 1002 protocol-error"), "{line}");
    healthy.send(async_tungstenite::tungstenite::Message::text("still here")).await.expect("send");
    assert_eq!(next_text(&mut healthy).await, "still here");
}

#[test]
fn a_well_formed_close_is_still_the_clients() {
    let s = Server::start(&[]);
    let (code, line) = break_it(&s, &frame(CLOSE, &[0x0f, 0xa0, b'b', b'y', b'e']));
    assert_eq!(code, Some(4000));
    assert!(line.contains(" 4000 client bye"), "{line}");
}

/// The cause comes from the code on the wire, not from tungstenite's words:
/// a client that closes with 1002 "Protocol violation" itself closed it.
#[test]
fn a_client_closing_with_1002_and_the_libraries_words_is_still_the_clients() {
    let s = Server::start(&[]);
    let (code, line) = break_it(&s, &frame(CLOSE, &[&[0x03, 0xea][..], b"Protocol violation"].concat()));
    assert_eq!(code, Some(1002));
    assert!(line.contains(" 1002 client Protocol violation"), "{line}");
    assert!(!s.log().contains("close code it may not use"), "{}", s.log());
}
