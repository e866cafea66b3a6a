//! What messages queued *to* clients may cost: bytes per connection
//! (`--max-outgoing-bytes`) and for the distinct buffers of all clients
//! together (`--max-outgoing-bytes-total`). A client that does not keep up
//! is closed with 1008 `slow-consumer`; one that reads is never punished,
//! and one message of any size always fits an empty queue. Messages over
//! 16 KiB go out in fragments, so no connection keeps a write buffer the
//! size of the largest message it was sent.
//!
//! The red-team test prints its memory figures (`--nocapture`);
//! docs/SECURITY.md records them.

mod common;
mod procfs;
mod rawws;

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_util::StreamExt;
use procfs::*;

/// A TCP connection to the server whose receive buffer is tiny (set before
/// connecting, so the window it advertises stays small): what the server
/// writes to a client that never reads piles up in the server.
fn connect_small_rcvbuf(port: u16) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor we own; the TcpStream
    // takes it over.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 4096;
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "setsockopt: {}", std::io::Error::last_os_error());
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// A WebSocket client (hand-written frames) over [`connect_small_rcvbuf`];
/// the handshake response has been read, nothing after it.
fn open_non_reader(port: u16, path: &str) -> TcpStream {
    let mut tcp = connect_small_rcvbuf(port);
    tcp.set_read_timeout(Some(Duration::from_secs(15))).expect("read timeout");
    tcp.set_write_timeout(Some(Duration::from_secs(15))).expect("write timeout");
    tcp.write_all(upgrade_request(path, "").as_bytes()).expect("send handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut tcp, &mut byte).expect("read the handshake response");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}

/// Message events that ran to completion so far.
fn messages_run(s: &Server) -> u64 {
    s.metric("ws2http_events_total{event=\"message\",outcome=\"ok\"}").unwrap_or(0)
}

/// The red team's scenario: one client sends 1 MiB binary messages to the
/// project's own echo.sh and never reads a byte of the answers.
const RED_TEAM_MESSAGES: usize = 200;
const MIB: usize = 1 << 20;

#[test]
fn a_client_that_never_reads_its_echoes_is_closed_with_bounded_memory() {
    let cgi_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("cgi-bin");
    let s = Server::start_in(&cgi_bin, &[]);
    let pid = s.child.id();
    let mut tcp = open_non_reader(s.port, "/echo.sh");
    let before = rss_kib(pid);
    let frame = rawws::frame(rawws::BINARY, &vec![b'e'; MIB]);
    let mut sent = 0;
    // Each message is sent once the previous one was echoed (as fast as the
    // server takes them, without running into the incoming queue's limits),
    // until the server ends the connection.
    while sent < RED_TEAM_MESSAGES {
        if tcp.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
        let ended = wait_for("the echo, or the end of the connection", || {
            let closed = s.log().contains("/echo.sh closed:");
            (closed || messages_run(&s) >= sent as u64).then_some(closed)
        });
        if ended {
            break;
        }
    }
    let (peak, after) = (hwm_kib(pid), rss_kib(pid));
    println!(
        "one client, {sent} messages of 1 MiB echoed to it, none read: RSS before {:.1} MiB, \
         peak {:.1} MiB, after {:.1} MiB",
        mib(before),
        mib(peak),
        mib(after)
    );
    // Old code: every echo stayed queued (1,024 messages allowed): past
    // 200 MiB here, 1 GiB in the report.
    assert!(peak < 100 * 1024, "the server's memory peaked at {:.1} MiB", mib(peak));
    s.wait_log("/echo.sh closed:");
    let log = s.log();
    assert!(log.contains(r#"/echo.sh closed: 1008 "slow consumer" (slow-consumer)"#), "{log}");
    assert_eq!(log.matches("does not read its messages").count(), 1, "{log}");
    assert!(log.contains("more would go over --max-outgoing-bytes 4194304; closing it (1008)"), "{log}");
    assert!(sent < 20, "closed only after {sent} messages");
}

#[async_std::test]
async fn one_big_message_always_fits_an_empty_queue() {
    let s = Server::start(&["--max-outgoing-bytes", "65536"]);
    let (mut ws, id) = mirror(&s, "/mirror.sh").await;
    // 1 MiB (the largest message the API takes), 16 times the budget.
    let big = "b".repeat(MIB);
    let r = post(&s.api(&format!("/send/{id}")), &big);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(next_text(&mut ws).await.len(), MIB);
    // And from a script: a message of the client's own, echoed.
    ws.send(Message::text("m".repeat(MIB / 2))).await.expect("send");
    assert_eq!(next_text(&mut ws).await.len(), MIB / 2);
    ws.send(Message::text("still open")).await.expect("send");
    assert_eq!(next_text(&mut ws).await, "still open");
    assert!(!s.log().contains("does not read its messages"), "{}", s.log());
}

/// A client of mirror.sh that joins `room` and then never reads again.
fn non_reader_in(s: &Server, room: &str) -> (TcpStream, String) {
    let mut tcp = open_non_reader(s.port, "/mirror.sh");
    let id = rawws::read_text(&mut tcp).strip_prefix("id ").expect("id line").to_owned();
    tcp.write_all(&rawws::frame(rawws::TEXT, format!("@join {room}\njoined").as_bytes())).expect("send");
    assert_eq!(rawws::read_text(&mut tcp), "joined");
    (tcp, id)
}

/// Sends the text messages of `ws` to `tx` until the connection ends,
/// except the "left ID" lines mirror.sh sends the room when a member closes.
fn forward(mut ws: Ws, tx: mpsc::Sender<String>) -> async_std::task::JoinHandle<()> {
    async_std::task::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m.clone() {
                if t.starts_with("left ") {
                    continue;
                }
                if tx.send(t.to_string()).is_err() {
                    return;
                }
            }
        }
    })
}

#[async_std::test]
async fn over_the_total_clients_that_do_not_keep_up_are_closed_and_a_reader_gets_everything() {
    // Each client may have 4 MiB queued, all of them together only 4 MiB.
    let s = Server::start(&["--max-outgoing-bytes", "4194304", "--max-outgoing-bytes-total", "4194304"]);
    let (mut reader, reader_id) = mirror(&s, "/mirror.sh").await;
    reader.send(Message::text("@join r\njoined")).await.expect("send");
    assert_eq!(next_text(&mut reader).await, "joined");
    let (tx, rx) = mpsc::channel();
    let reading = forward(reader, tx);
    let slow: Vec<(TcpStream, String)> = (0..3).map(|_| non_reader_in(&s, "r")).collect();
    // Each slow client is sent messages of its own (distinct buffers), and
    // between rounds the room gets one (one buffer for all four).
    let chunk = "s".repeat(256 * 1024);
    let total_hit = "over --max-outgoing-bytes-total 4194304";
    let mut rounds = 0;
    let room_message = |round: usize| {
        let text = format!("room {round}");
        assert_eq!(post(&s.api("/rooms/r"), &text).status, 200);
        let got = rx.recv_timeout(Duration::from_secs(15)).expect("the reader's room message");
        assert_eq!(got, text, "the reader got every room message, in order");
    };
    while !s.log().contains(total_hit) {
        assert!(rounds < 100, "the total was never reached: {}", s.log());
        for (_, id) in &slow {
            post(&s.api(&format!("/send/{id}")), &chunk);
        }
        room_message(rounds);
        rounds += 1;
    }
    // Once over the total, the room goes on: the reader gets every message.
    for round in rounds..rounds + 20 {
        room_message(round);
    }
    // The slow clients over the total were closed, each with one log line;
    // none went over its own budget (4 MiB) first.
    let log = s.log();
    let closed: Vec<&String> =
        slow.iter().map(|(_, id)| id).filter(|id| log.contains(&format!("[{id}] does not read"))).collect();
    assert!(!closed.is_empty(), "{log}");
    for id in &closed {
        assert_eq!(log.matches(&format!("[{id}] does not read its messages")).count(), 1, "{log}");
        let line = s.wait_event("its close event", |l| l.starts_with(&format!("close {id} ")));
        assert!(line.contains(" 1008 slow-consumer"), "{line}");
    }
    assert!(!log.contains("over --max-outgoing-bytes 4194304"), "{log}");
    assert!(!log.contains(&format!("[{reader_id}] does not read")), "{log}");
    // Every byte counted is given back once the connections are gone.
    drop(slow);
    drop(rx);
    reading.cancel().await;
    wait_for("every connection closed", || (s.metric("ws2http_connections") == Some(0)).then_some(()));
    wait_for("the outgoing gauge back to 0", || (s.metric("ws2http_outgoing_bytes") == Some(0)).then_some(()));
}

#[test]
fn a_big_message_goes_out_in_fragments_that_a_client_reassembles() {
    let s = Server::start(&["--events", "message"]);
    let mut tcp = rawws::open(s.port, "/mirror.sh");
    let id = wait_for("the connection", || conn_ids(&s.api("/connections")).pop());
    let big: String = (0..MIB).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    assert_eq!(post(&s.api(&format!("/send/{id}")), &big).status, 200);
    let (mut opcodes, mut payload) = (Vec::new(), Vec::new());
    while payload.len() < MIB {
        let (opcode, part) = rawws::read_frame(&mut tcp).expect("a frame");
        assert!(part.len() <= 16 * 1024, "a frame of {} bytes", part.len());
        opcodes.push(opcode);
        payload.extend_from_slice(&part);
    }
    // A text frame, then continuation frames (RFC 6455 §5.4).
    assert_eq!(opcodes.len(), 64);
    assert_eq!(opcodes[0], rawws::TEXT);
    assert!(opcodes[1..].iter().all(|o| *o == rawws::CONTINUATION), "{opcodes:?}");
    assert!(payload == big.as_bytes(), "the message is reassembled as it was sent");
}

/// Readers that each get one big broadcast.
const READERS: usize = 200;

#[async_std::test]
async fn connections_keep_no_big_write_buffer_after_a_big_message() {
    let s = Server::start(&["--events", "message", "--max-connections-per-ip", "1000"]);
    let pid = s.child.id();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(connect(&s.url("/mirror.sh")).await);
    }
    wait_for("every connection", || (conn_ids(&s.api("/connections")).len() == READERS).then_some(()));
    let before = rss_kib(pid);
    assert_eq!(post(&s.api("/broadcast"), &"w".repeat(MIB)).status, 200);
    for ws in &mut readers {
        assert_eq!(next_text(ws).await.len(), MIB);
    }
    let after = rss_kib(pid);
    println!(
        "{READERS} readers got one 1 MiB broadcast: RSS before {:.1} MiB, after {:.1} MiB (+{:.1})",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before))
    );
    // Whole 1 MiB frames left 1 MiB in every connection's write buffer for
    // good: +201 MiB here. Fragments leave at most one fragment each.
    assert!(after.saturating_sub(before) < 40 * 1024, "memory kept: {:.1} MiB", mib(after.saturating_sub(before)));
    wait_for("the gauge back to 0", || (s.metric("ws2http_outgoing_bytes") == Some(0)).then_some(()));
}

#[test]
fn an_outgoing_total_below_the_per_client_budget_is_refused_at_start_up() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut child = ws2http()
            .args(["--cgi-bin"])
            .arg(fixtures())
            .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        // A server that accepted the settings would run until killed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return (None, "the server started with these settings".to_owned());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("wait");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let want = "--max-outgoing-bytes-total 1000 is smaller than --max-outgoing-bytes 4194304";
    for (code, err) in
        [run(&["--max-outgoing-bytes-total", "1000"], &[]), run(&[], &[("WS2HTTP_MAX_OUTGOING_BYTES_TOTAL", "1000")])]
    {
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(want) && err.lines().count() == 1, "{err}");
    }
}
