//! The frame scanner and the rules of the direct path, on a real socket pair.

use std::io::Read;

use super::*;
use std::sync::atomic::AtomicBool;

/// A frame as tungstenite formats it (unmasked: the server's).
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    use async_tungstenite::tungstenite::protocol::frame::{coding::OpCode, Frame, FrameHeader};
    let header = FrameHeader { is_final: fin, opcode: OpCode::from(opcode), ..FrameHeader::default() };
    let mut f = Vec::new();
    Frame::from_payload(header, payload.to_vec().into()).format(&mut f).expect("into a Vec");
    f
}

#[test]
fn the_scanner_knows_where_messages_end_whatever_the_write_boundaries() {
    let mut bytes = frame(true, 1, b"hello");
    bytes.extend(frame(false, 2, &[7; 300])); // first fragment
    bytes.extend(frame(true, 9, b"")); // a ping between fragments
    bytes.extend(frame(true, 0, &[8; 70_000])); // last fragment, 64-bit length
                                                // Where a message is complete: after the text frame and after the last fragment.
    let ends = [7, bytes.len()];
    for step in [1, 2, 3, 5, 13, 4096] {
        let mut scan = OutScan::default();
        let mut at = 0;
        let mut seen = Vec::new();
        while at < bytes.len() {
            let n = step.min(bytes.len() - at);
            // Byte by byte where a message could end, so the check sees each boundary.
            for b in &bytes[at..at + n] {
                scan.feed(std::slice::from_ref(b));
                at += 1;
                if scan.between_messages() {
                    seen.push(at);
                }
            }
        }
        assert_eq!(seen, ends, "step {step}");
    }
    let mut scan = OutScan::default();
    scan.feed(&frame(true, 8, &[3, 232]));
    assert!(!scan.between_messages(), "nothing may follow a close frame");
}

#[test]
fn encode_makes_the_frames_tungstenite_would() {
    for n in [0, 1, 125, 126, 65_535.min(DIRECT_MAX), DIRECT_MAX] {
        let text = "x".repeat(n);
        assert_eq!(encode(&Message::text(text.clone())).expect("fits")[..], frame(true, 1, text.as_bytes())[..]);
        let bin = Bytes::from(vec![5u8; n]);
        assert_eq!(encode(&Message::Binary(bin.clone())).expect("fits")[..], frame(true, 2, &bin)[..]);
    }
    assert!(encode(&Message::text("y".repeat(DIRECT_MAX + 1))).is_none(), "sent in fragments instead");
}

/// A connected pair: the server's end as the hub holds it, the client's.
fn pair() -> (crate::runtime::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (server, _) = l.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    (crate::runtime::TcpStream::from(server), client)
}

fn read_exactly(c: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    c.read_exact(&mut buf).expect("read");
    buf
}

#[test]
fn a_direct_write_waits_for_queued_messages_and_for_the_end_of_a_message() {
    let (server, mut client) = pair();
    let wire = Wire::default();
    let f = encode(&Message::text("hi")).expect("small");
    assert_eq!(wire.write(&f), Direct::Queue, "no socket before the upgrade");
    wire.attach(server);
    assert_eq!(wire.write(&f), Direct::Sent);
    assert_eq!(read_exactly(&mut client, f.len()), f[..]);
    // Something queued for the writer goes first.
    wire.queued();
    assert_eq!(wire.write(&f), Direct::Queue);
    wire.sent();
    // Half a frame from tungstenite, then the first fragment of a message:
    // no direct write until the message is over.
    let text = frame(true, 1, b"abcdef");
    lock(&wire.state).scan.feed(&text[..3]);
    assert_eq!(wire.write(&f), Direct::Queue);
    lock(&wire.state).scan.feed(&text[3..]);
    lock(&wire.state).scan.feed(&frame(false, 1, b"part"));
    assert_eq!(wire.write(&f), Direct::Queue);
    lock(&wire.state).scan.feed(&frame(true, 0, b"end"));
    assert_eq!(wire.write(&f), Direct::Sent);
    // After a close frame, nothing; after the connection ended, nothing.
    lock(&wire.state).scan.feed(&frame(true, 8, &[3, 232]));
    assert_eq!(wire.write(&f), Direct::Queue);
    lock(&wire.state).scan = OutScan::default();
    wire.detach();
    assert_eq!(wire.write(&f), Direct::Queue);
}

#[test]
fn the_rest_of_a_partial_write_goes_out_before_the_writers_next_bytes() {
    let (server, mut client) = pair();
    let (shared, _rx) = ConnShared::new();
    shared.wire.attach(server.clone());
    // Fill the socket until a frame goes out only in part.
    let big = encode(&Message::Binary(Bytes::from(vec![1u8; DIRECT_MAX]))).expect("fits");
    let (mut written, mut early) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        if lock(&shared.wire.state).rest().is_some() {
            break;
        }
        match shared.wire.write(&big) {
            Direct::Sent => written.push(big.clone()),
            // Full exactly at a frame's end: make a little room, so that
            // the next frame goes out in part.
            Direct::Queue => early.extend(read_exactly(&mut client, 7000)),
        }
    }
    assert!(lock(&shared.wire.state).rest().is_some(), "the socket filled up in the middle of a frame");
    assert_eq!(shared.wire.write(&big), Direct::Queue, "nothing else while a rest waits");
    // The writer's next frame (tungstenite writing through Gated) follows the rest.
    let mut gated = Gated::new(server, shared.clone());
    let after = frame(true, 1, b"after");
    let reader = std::thread::spawn(move || {
        let total: usize = written.iter().map(|f| f.len()).sum::<usize>() + after.len() - early.len();
        let mut got = early;
        got.extend(read_exactly(&mut client, total));
        let mut expect: Vec<u8> = written.concat();
        expect.extend_from_slice(&after);
        assert!(got == expect, "the bytes on the wire are the frames in order");
    });
    crate::runtime::block_on(async {
        use futures_lite::AsyncWriteExt;
        gated.write_all(&frame(true, 1, b"after")).await.expect("write");
        gated.flush().await.expect("flush");
    });
    reader.join().expect("reader");
    assert!(lock(&shared.wire.state).scan.between_messages());
}

/// [`encode`] sizes its buffer from the header's length (2, 4 or 10 bytes):
/// every length class still makes the frame tungstenite makes.
#[test]
fn an_encoded_frame_is_tungstenites_at_every_header_size() {
    for len in [0, 1, 125, 126, 127, 1000, DIRECT_MAX] {
        let payload = vec![b'a'; len];
        let text = String::from_utf8(payload.clone()).expect("ASCII");
        let encoded = encode(&Message::Text(text.into())).expect("within DIRECT_MAX");
        assert_eq!(encoded[..], frame(true, 1, &payload)[..], "{len} bytes");
        let encoded = encode(&Message::Binary(payload.clone().into())).expect("within DIRECT_MAX");
        assert_eq!(encoded[..], frame(true, 2, &payload)[..], "{len} bytes");
    }
    assert!(encode(&Message::Binary(vec![0; DIRECT_MAX + 1].into())).is_none(), "the writer's");
}

/// A follower that gives the socket back with bytes it read: the reader
/// gets them once, first, and no follower may take the socket before it
/// has (they are the reader's); the box they sat in is freed.
#[test]
fn bytes_given_back_go_to_the_reader_once_and_the_socket_is_not_lent_meanwhile() {
    let (shared, _outgoing) = ConnShared::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let _client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let server = crate::runtime::TcpStream::from(listener.accept().expect("accept").0);
    let wire = &shared.wire;
    wire.attach(server);
    wire.parked();
    assert!(wire.lend().is_some());
    assert!(wire.lend().is_none(), "lent already");
    assert_eq!(wire.may_read(), MayRead::Wait);
    wire.give_back(b"frames".to_vec());
    assert!(wire.lend().is_none(), "the bytes given back are the reader's first");
    assert_eq!(wire.may_read(), MayRead::Unread(b"frames".to_vec()));
    assert!(lock(&wire.state).spare.is_none(), "nothing left in the box");
    assert_eq!(wire.may_read(), MayRead::Socket);
    // Nothing read, nothing given back: the reader reads the socket.
    wire.parked();
    assert!(wire.lend().is_some());
    wire.give_back(Vec::new());
    assert_eq!(wire.may_read(), MayRead::Socket);
}

/// The reader and followers taking turns on one socket, as fast as they
/// can: the reader reads only when [`Wire::may_read`] lets it (given-back
/// bytes first), parks when the socket is empty; a follower takes the
/// socket whenever it may, reads some bytes, runs some of them and gives
/// the rest back. Every byte is run exactly once, in order, whoever read
/// it, and the box the bytes were given back in is freed at the end.
#[test]
fn reader_and_followers_taking_turns_run_every_byte_once_in_order() {
    const N: u32 = 200_000;
    let (shared, _outgoing) = ConnShared::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let _client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    shared.wire.attach(crate::runtime::TcpStream::from(listener.accept().expect("accept").0));
    // The socket (bytes numbered in the order sent), and what was run, in order.
    let turns = Turns { wire: &shared.wire, socket: Mutex::default(), ran: Mutex::default(), done: Default::default() };
    std::thread::scope(|s| {
        s.spawn(|| {
            for chunk in (0..N).collect::<Vec<_>>().chunks(37) {
                lock(&turns.socket).extend(chunk);
                std::thread::yield_now();
            }
        });
        s.spawn(|| turns.follow());
        turns.read(N as usize);
    });
    let ran = turns.ran.into_inner().expect("lock");
    assert!(ran.iter().copied().eq(0..N), "every byte once, in order");
    assert!(lock(&shared.wire.state).spare.is_none(), "nothing left given back");
}

/// A socket of numbered bytes that a reader and followers take turns on.
struct Turns<'a> {
    wire: &'a Wire,
    socket: Mutex<std::collections::VecDeque<u32>>,
    ran: Mutex<Vec<u32>>,
    /// The reader is done: the followers stop.
    done: AtomicBool,
}

impl Turns<'_> {
    /// Followers until the reader is done: each takes what the socket has
    /// (at most 64) and runs a part of it.
    fn follow(&self) {
        let mut turn = 0usize;
        while !self.done.load(Ordering::SeqCst) {
            let Some(_lent) = self.wire.lend() else {
                std::thread::yield_now();
                continue;
            };
            turn += 1;
            let mut got: Vec<u32> = {
                let mut q = lock(&self.socket);
                let n = q.len().min(64);
                q.drain(..n).collect()
            };
            let run = got.len().min(turn % 5 * 7);
            lock(&self.ran).extend(got.drain(..run));
            self.wire.give_back(got.iter().flat_map(|b| b.to_le_bytes()).collect());
        }
    }

    /// The reader, until `n` bytes have run (the followers stop when it
    /// does, even on a failure).
    fn read(&self, n: usize) {
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = Stop(&self.done);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let stuck = || assert!(std::time::Instant::now() < until, "stuck after {} bytes run", lock(&self.ran).len());
        let mut held = std::collections::VecDeque::new();
        while lock(&self.ran).len() < n {
            stuck();
            match self.wire.may_read() {
                MayRead::Wait => {
                    std::thread::yield_now();
                    continue;
                }
                MayRead::Unread(bytes) => {
                    assert!(!bytes.is_empty() && bytes.len() % 4 == 0, "{} bytes given back", bytes.len());
                    let given = bytes.chunks(4).map(|b| u32::from_le_bytes(b.try_into().expect("4")));
                    held = given.chain(held.drain(..)).collect();
                }
                MayRead::Socket => {}
            }
            let next = held.pop_front().or_else(|| lock(&self.socket).pop_front());
            match next {
                Some(b) => lock(&self.ran).push(b),
                None => {
                    self.wire.parked();
                    // Pending: woken when bytes come (a follower may be faster).
                    while lock(&self.socket).is_empty() && self.wire.reader.load(Ordering::SeqCst) == PARKED {
                        stuck();
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
}

/// Bytes waiting in a socket a follower holds are the client's answer to
/// a ping, for the writer's ping timeout; an empty one, or one the reader
/// reads itself (it sees what it reads), is not.
#[test]
fn a_lent_socket_with_bytes_waiting_is_not_silence() {
    use std::io::Write;
    let (shared, _outgoing) = ConnShared::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let server = crate::runtime::TcpStream::from(listener.accept().expect("accept").0);
    let wire = &shared.wire;
    wire.attach(server.clone());
    assert!(!wire.lent_with_bytes(), "no socket lent");
    wire.parked();
    let lent = wire.lend().expect("lent");
    assert!(!wire.lent_with_bytes(), "nothing sent");
    client.write_all(b"\x8a\x80\0\0\0\0").expect("a pong");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !wire.lent_with_bytes() {
        assert!(std::time::Instant::now() < until, "the pong never counted");
        std::thread::yield_now();
    }
    drop(lent);
    wire.give_back(Vec::new());
    assert!(!wire.lent_with_bytes(), "the reader's again: it sees what it reads");
}
