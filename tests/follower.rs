//! After a message event a follower thread may hold a connection's socket
//! (`ws::follow`): it reads what the socket has (up to 16 KiB in one go),
//! runs the whole simple messages at its head, and gives the rest back to
//! the connection's reader. Whichever thread reads a client's bytes, the
//! client must see the same replies, pongs, close codes and order. Each
//! test writes once the message events before have ended (the follower's
//! moment; whether it took the socket is timing) and asserts what the
//! client sees either way.

mod common;
mod rawws;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use rawws::{frame, frame_with, BINARY, CLOSE, CONTINUATION, PING, TEXT};

const PONG: u8 = 0xa;

/// Message events that ended well so far (`GET /metrics`).
fn messages_run(s: &Server) -> u64 {
    s.metric("ws2http_events_total{event=\"message\",outcome=\"ok\"}").expect("the message events' counter")
}

/// Sends `first` (one message, or `n`) and reads the replies (`reply`),
/// then waits until their message events have ended: from then on a
/// follower may hold the socket.
fn behind_messages(s: &Server, tcp: &mut TcpStream, (first, n): (&[u8], u64), reply: impl FnOnce(&mut TcpStream)) {
    let before = messages_run(s);
    tcp.write_all(first).expect("send");
    reply(tcp);
    let until = Instant::now() + Duration::from_secs(10);
    while messages_run(s) < before + n {
        assert!(Instant::now() < until, "the first message event never ended");
    }
}

/// A hold.sh connection whose first message has run (a follower may hold
/// its socket now) and whose next message will wait for the flag file,
/// removed: the socket, the connection's id, the flag's path.
fn held_behind_first(s: &Server) -> (TcpStream, String, std::path::PathBuf) {
    let flag = s.dir.join("flag");
    std::fs::write(&flag, "").expect("flag");
    let mut tcp = rawws::open(s.port, "/hold.sh");
    let id = rawws::read_text(&mut tcp).strip_prefix("id ").expect("id line").to_owned();
    behind_messages(s, &mut tcp, (&frame(TEXT, b"first"), 1), |tcp| {
        assert_eq!(rawws::read_text(tcp), "done 5");
    });
    std::fs::remove_file(&flag).expect("no flag");
    (tcp, id, flag)
}

/// The next frame from the server: FIN, opcode, payload (`None`: the
/// connection ended first).
fn read_frame(tcp: &mut TcpStream) -> Option<(bool, u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    tcp.read_exact(&mut h).ok()?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).ok()?;
    Some((h[0] & 0x80 != 0, h[0] & 0x0f, payload))
}

/// The next whole data message (fragments joined) with its opcode; pongs
/// met on the way are added to `pongs`; `Err` with the close code (or
/// `None`: the connection ended without a close frame).
fn read_message(tcp: &mut TcpStream, pongs: &mut Vec<Vec<u8>>) -> Result<(u8, Vec<u8>), Option<u16>> {
    let mut message: Option<(u8, Vec<u8>)> = None;
    loop {
        let Some((fin, opcode, payload)) = read_frame(tcp) else { return Err(None) };
        match opcode {
            PONG => pongs.push(payload),
            CLOSE => return Err(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
            CONTINUATION => message.as_mut().expect("a continuation of nothing").1.extend(payload),
            _ => {
                assert!(message.is_none(), "a new message inside a fragmented one");
                message = Some((opcode, payload));
            }
        }
        if fin && opcode != PONG {
            return Ok(message.take().expect("message"));
        }
    }
}

/// Client payloads of many sizes: small ones many to a read, and ones
/// across and beyond the follower's 16 KiB (16- and 64-bit lengths).
fn payloads() -> Vec<Vec<u8>> {
    let mut seed = 0x2545_f491_u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    (0..300)
        .map(|i| {
            let len = match i % 50 {
                7 => 16 * 1024 - 6,
                19 => 20_000,
                33 => 70_000,
                _ => 1 + (next() % 300) as usize,
            };
            (0..len).map(|_| next() as u8).collect()
        })
        .collect()
}

/// Messages pipelined behind a message, in bursts written once the
/// message events before them have ended, across many 16 KiB reads, some
/// larger than that: each is echoed once, whole and in order, whichever
/// thread read its bytes.
#[test]
fn pipelined_messages_of_every_size_are_echoed_once_each_in_order() {
    let s = Server::start(&["--max-queue", "1000"]);
    let mut tcp = rawws::open(s.port, "/binary.sh");
    let mut pongs = Vec::new();
    let payloads = payloads();
    let mut burst: Vec<&[u8]> = vec![b"first"];
    for (n, chunk) in payloads.chunks(30).enumerate() {
        let bytes: Vec<u8> = burst.iter().flat_map(|p| frame(BINARY, p)).collect();
        behind_messages(&s, &mut tcp, (&bytes, burst.len() as u64), |tcp| {
            for (i, want) in burst.iter().enumerate() {
                let got = read_message(tcp, &mut pongs).unwrap_or_else(|c| panic!("burst {n}, {i}: closed {c:?}"));
                assert!(got == (BINARY, want.to_vec()), "burst {n}, {i} ({} bytes): {:?}", want.len(), got.1.len());
            }
        });
        burst = chunk.iter().map(|p| &p[..]).collect();
    }
    let bytes: Vec<u8> = burst.iter().flat_map(|p| frame(BINARY, p)).collect();
    tcp.write_all(&bytes).expect("send");
    for want in burst {
        assert_eq!(read_message(&mut tcp, &mut pongs), Ok((BINARY, want.to_vec())));
    }
    tcp.write_all(&frame(CLOSE, &1000u16.to_be_bytes())).expect("close");
    assert_eq!(read_message(&mut tcp, &mut pongs), Err(Some(1000)));
    assert!(pongs.is_empty());
}

/// Behind a message, what the follower cannot run is the reader's, and
/// each closes or is answered as it would be on the reader: a message
/// over --max-message (1009, its first 16 KiB read by either), a message
/// in fragments with a ping between them, a message that stops arriving
/// or dribbles in a byte at a time (1008), a close frame right behind two messages (the events before
/// it, then the close event last).
#[test]
fn behind_a_message_what_the_follower_cannot_run_ends_as_on_the_reader() {
    let s = Server::start(&["--max-message", "20000", "--http-timeout", "0.5"]);
    let echo = |tcp: &mut TcpStream, text: &str| {
        let mut pongs = Vec::new();
        assert_eq!(read_message(tcp, &mut pongs), Ok((TEXT, text.as_bytes().to_vec())));
    };
    let open = || {
        let mut tcp = rawws::open(s.port, "/mirror.sh");
        let id = rawws::read_text(&mut tcp).strip_prefix("id ").expect("id line").to_owned();
        behind_messages(&s, &mut tcp, (&frame(TEXT, b"first"), 1), |tcp| echo(tcp, "first"));
        (tcp, id)
    };

    // Over --max-message, behind a message it may run.
    let (mut tcp, _) = open();
    tcp.write_all(&[frame(TEXT, b"second"), frame(BINARY, &[7; 30_000])].concat()).expect("send");
    let mut pongs = Vec::new();
    let mut got = Vec::new();
    let code = loop {
        match read_message(&mut tcp, &mut pongs) {
            Ok((_, m)) => got.push(String::from_utf8(m).expect("UTF-8")),
            Err(code) => break code,
        }
    };
    assert!(got.is_empty() || got == ["second"], "{got:?}");
    assert_eq!(code, Some(1009), "over --max-message");

    // A message in fragments with a ping between them.
    let (mut tcp, _) = open();
    let fragments = [
        frame_with(false, 0, TEXT, b"frag", true),
        frame(PING, b"p"),
        frame_with(false, 0, CONTINUATION, b"men", true),
        frame_with(true, 0, CONTINUATION, b"ted", true),
        frame(TEXT, b"after"),
    ];
    tcp.write_all(&fragments.concat()).expect("send");
    let mut pongs = Vec::new();
    assert_eq!(read_message(&mut tcp, &mut pongs), Ok((TEXT, b"fragmented".to_vec())));
    assert_eq!(read_message(&mut tcp, &mut pongs), Ok((TEXT, b"after".to_vec())));
    assert_eq!(pongs, [b"p".to_vec()], "the ping answered once");

    // A message that stops arriving: half of it, then nothing.
    let (mut tcp, id) = open();
    let whole = frame(BINARY, &[1; 4000]);
    tcp.write_all(&whole[..2000]).expect("send");
    assert_eq!(rawws::read_close(&mut tcp), Some((1008, "message too slow".to_owned())));
    let close = s.wait_event("the close event", |l| l.starts_with(&format!("close {id} ")));
    assert!(close.starts_with(&format!("close {id} 1008 too-slow")), "{close}");

    // A message dribbled a byte at a time (its first bytes read by
    // either), far under the pace a message must keep.
    let (mut tcp, id) = open();
    let mut dribbler = tcp.try_clone().expect("clone");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let dribble = std::thread::spawn(move || {
        for byte in frame(BINARY, &[2; 4000]) {
            if stopped.load(std::sync::atomic::Ordering::SeqCst) || dribbler.write_all(&[byte]).is_err() {
                return;
            }
            // The client's pace (50 bytes/s), not a wait for the server.
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert_eq!(rawws::read_close(&mut tcp), Some((1008, "message too slow".to_owned())));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    dribble.join().expect("dribbler");
    let close = s.wait_event("the close event", |l| l.starts_with(&format!("close {id} ")));
    assert!(close.starts_with(&format!("close {id} 1008 too-slow")), "{close}");

    // A close frame right behind two messages.
    let (mut tcp, id) = open();
    let bye = [&1000u16.to_be_bytes()[..], b"bye"].concat();
    tcp.write_all(&[frame(TEXT, b"m2"), frame(TEXT, b"m3"), frame(CLOSE, &bye)].concat()).expect("send");
    echo(&mut tcp, "m2");
    echo(&mut tcp, "m3");
    assert_eq!(rawws::read_close(&mut tcp), Some((1000, "bye".to_owned())));
    s.wait_event("the close event", |l| l.starts_with(&format!("close {id} ")));
    let mine: Vec<String> = s.events().into_iter().filter(|l| l.contains(&id)).collect();
    let want = [format!("open {id}"), format!("message {id}"), format!("message {id}"), format!("message {id}")];
    assert_eq!(mine[..4], want, "{mine:?}");
    assert!(mine[4].starts_with(&format!("close {id} 1000 client bye")), "{mine:?}");
    assert_eq!(mine.len(), 5, "{mine:?}");
}

/// A flood of pings behind a message, more than one read holds, then a
/// message: the pongs come in the pings' order, the last ping's among
/// them, and the message is answered after them.
#[test]
fn a_ping_flood_behind_a_message_is_answered_in_order() {
    let s = Server::start(&[]);
    let mut tcp = rawws::open(s.port, "/mirror.sh");
    rawws::read_text(&mut tcp);
    let mut pongs = Vec::new();
    behind_messages(&s, &mut tcp, (&frame(TEXT, b"first"), 1), |tcp| {
        assert_eq!(read_message(tcp, &mut pongs), Ok((TEXT, b"first".to_vec())));
    });
    let n = 3000u32;
    let flood: Vec<u8> = (0..n).flat_map(|i| frame(PING, &i.to_be_bytes())).chain(frame(TEXT, b"after")).collect();
    assert!(flood.len() > 16 * 1024);
    tcp.write_all(&flood).expect("send");
    assert_eq!(read_message(&mut tcp, &mut pongs), Ok((TEXT, b"after".to_vec())));
    let numbers: Vec<u32> = pongs.iter().map(|p| u32::from_be_bytes(p[..].try_into().expect("4 bytes"))).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "pongs out of order: {numbers:?}");
    assert_eq!(numbers.last(), Some(&(n - 1)), "the last ping answered");
}

/// The server shuts down while a message runs on the follower with the
/// next already read behind it: the client is closed with 1001, the
/// message read and not run is dropped (never run after the close), the
/// close event is the connection's last, and the server exits.
#[test]
fn shutting_down_while_a_follower_holds_read_messages_drops_them_and_exits() {
    let mut s = Server::start(&[]);
    let (mut tcp, id, flag) = held_behind_first(&s);
    tcp.write_all(&[frame(TEXT, b"m2"), frame(TEXT, b"m3"), frame(PING, b"p")].concat()).expect("send");
    let mine = |s: &Server| s.events().into_iter().filter(|l| l.contains(&id)).collect::<Vec<_>>();
    wait_for("m2 running", || (mine(&s).len() == 3).then_some(()));
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let mut pongs = Vec::new();
    // Nothing after the shutdown began: m2's reply would come once the
    // flag is there, m3 must never run.
    let code = read_message(&mut tcp, &mut pongs).expect_err("a message after the shutdown began");
    assert_eq!(code, Some(1001));
    tcp.write_all(&frame(CLOSE, &1001u16.to_be_bytes())).expect("close");
    std::fs::write(&flag, "").expect("flag");
    let status = wait_for("the server's exit", || s.child.try_wait().expect("wait"));
    assert!(status.success(), "{status:?} {}", s.log());
    let events = mine(&s);
    assert_eq!(events.len(), 4, "m3 dropped: {events:?}");
    assert!(events[3].starts_with(&format!("close {id} 1001 shutdown")), "{events:?}");
}

/// The next frame that is not a ping, answering each ping on the way with
/// its pong (counted in `answered`); `None`: the connection ended.
fn answering_pings(tcp: &mut TcpStream, answered: &mut usize) -> Option<(u8, Vec<u8>)> {
    loop {
        let (_, opcode, payload) = read_frame(tcp)?;
        if opcode != PING {
            return Some((opcode, payload));
        }
        tcp.write_all(&frame(PONG, &payload)).ok()?;
        *answered += 1;
    }
}

/// A message that runs for several ping intervals on the follower: the
/// client answers every ping, and its pongs wait in the socket while the
/// follower runs the event. It is not dropped for a ping timeout, as it is
/// not when the reader reads them. A client that answers none still is.
#[test]
fn pongs_waiting_behind_a_follower_are_an_answer_and_silence_is_not() {
    let s = Server::start(&["--ping-interval", "0.5"]);
    let flag = s.dir.join("flag");
    for answer in [true, false] {
        std::fs::write(&flag, "").expect("flag");
        let mut tcp = rawws::open(s.port, "/hold.sh");
        let mut answered = 0;
        let (_, id) = answering_pings(&mut tcp, &mut answered).expect("the id line");
        let id = String::from_utf8(id).expect("UTF-8").strip_prefix("id ").expect("id line").to_owned();
        behind_messages(&s, &mut tcp, (&frame(TEXT, b"first"), 1), |tcp| {
            assert_eq!(answering_pings(tcp, &mut answered), Some((TEXT, b"done 5".to_vec())));
        });
        std::fs::remove_file(&flag).expect("no flag");
        tcp.write_all(&frame(TEXT, b"m2")).expect("send");
        let line = format!("message {id} 2");
        wait_for("m2 running", || s.events().contains(&line).then_some(()));
        if answer {
            // Three pings answered while m2 runs (the second unanswered
            // one would drop it).
            for _ in 0..3 {
                match read_frame(&mut tcp) {
                    Some((_, PING, payload)) => tcp.write_all(&frame(PONG, &payload)).expect("pong"),
                    other => panic!("{other:?} while answering pings:\n{}", s.log()),
                }
            }
            std::fs::write(&flag, "").expect("flag");
            assert_eq!(answering_pings(&mut tcp, &mut answered), Some((TEXT, b"done 2".to_vec())));
            assert!(!s.log().contains(&format!("[{id}] /hold.sh no answer to a ping")), "{}", s.log());
        } else {
            // Pings never answered: dropped while m2 still runs (nothing is
            // delivered to it any more), and it says why.
            let gone = || {
                let r = post(&s.api(&format!("/send/{id}")), "x");
                r.status == 404 || r.json()["delivered"] == 0
            };
            wait_for("the drop", || gone().then_some(()));
            assert!(!s.events().iter().any(|l| l.starts_with(&format!("close {id}"))), "m2 still runs");
            std::fs::write(&flag, "").expect("flag");
            let close = s.wait_event("the close event", |l| l.starts_with(&format!("close {id} ")));
            assert_eq!(close, format!("close {id} 1006 ping-timeout"));
            s.wait_log(&format!("[{id}] /hold.sh no answer to a ping within 500ms; dropping the connection"));
        }
    }
}

/// A connection the server ends while a follower runs its message (here
/// the control API's close): the client sees the TCP connection end once
/// the close handshake is done, not when the script ends (the follower's
/// copy of the socket kept it open until then).
#[test]
fn a_connection_ended_while_a_follower_runs_its_message_ends_at_once() {
    let s = Server::start(&[]);
    let (mut tcp, id, flag) = held_behind_first(&s);
    tcp.write_all(&frame(TEXT, b"m2")).expect("send");
    let line = format!("message {id} 2");
    wait_for("m2 running", || s.events().contains(&line).then_some(()));
    let r = api("DELETE", &s.api(&format!("/connections/{id}")), None, None, b"");
    assert!(r.status < 300, "the API's close: {}", r.status);
    assert_eq!(rawws::read_close(&mut tcp).map(|(code, _)| code), Some(1000));
    tcp.write_all(&frame(CLOSE, &1000u16.to_be_bytes())).expect("close reply");
    // The end of the stream, while m2 still waits for the flag (hold.sh
    // gives up after 20 s; this read, after 15).
    tcp.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let mut rest = Vec::new();
    let end = tcp.read_to_end(&mut rest);
    assert!(end.is_ok(), "the connection was not ended while m2 ran: {end:?}");
    let closed = |s: &Server| s.events().iter().any(|l| l.starts_with(&format!("close {id} ")));
    assert!(!closed(&s), "m2 (and so the close event) had not ended yet");
    std::fs::write(&flag, "").expect("flag");
    wait_for("the close event", || closed(&s).then_some(()));
}

/// Sent right behind a message, in the same write as a second one, each
/// broken frame still closes with its code, a ping is still answered, and
/// no reply comes out of order.
#[test]
fn behind_a_message_broken_frames_close_the_same_and_a_ping_is_answered() {
    let s = Server::start(&[]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("invalid UTF-8", frame(TEXT, &[b'a', 0xff]), 1007),
        ("reserved bits set", frame_with(true, 4, TEXT, b"x", true), 1002),
        ("an unmasked frame", frame_with(true, 0, TEXT, b"x", false), 1002),
        ("a one-byte close payload", frame(CLOSE, &[0x03]), 1002),
        ("a well-formed close", frame(CLOSE, &4000u16.to_be_bytes()), 4000),
    ];
    for (what, broken, want) in cases {
        let mut tcp = rawws::open(s.port, "/mirror.sh");
        rawws::read_text(&mut tcp);
        behind_messages(&s, &mut tcp, (&frame(TEXT, b"first"), 1), |tcp| {
            assert_eq!(rawws::read_text(tcp), "first", "{what}");
        });
        tcp.write_all(&[frame(TEXT, b"second"), frame(PING, b"p"), frame(TEXT, b"third"), broken].concat())
            .expect("send");
        let (mut texts, mut pongs) = (Vec::new(), Vec::new());
        let code = loop {
            match read_message(&mut tcp, &mut pongs) {
                Ok((TEXT, p)) => texts.push(String::from_utf8(p).expect("UTF-8")),
                Ok(other) => panic!("{what}: {other:?}"),
                Err(code) => break code,
            }
        };
        // On the follower, "second" ran before the ping was seen; on the
        // reader, the close went out first, and a reply after it is dropped.
        assert!(["second".to_owned(), "third".to_owned()].starts_with(&texts), "{what}: {texts:?}");
        assert_eq!(pongs, [b"p".to_vec()], "{what}: the ping answered");
        assert_eq!(code, Some(want), "{what}");
    }
}
