//! What a client's messages may cost before their scripts ran: bytes per
//! connection and in total (`--max-queue-bytes`, `--max-queue-bytes-total`),
//! who is closed over the total (the connections holding the most), that
//! pings cost nothing, that a message must keep arriving, and what becomes
//! of the queue of a client that is gone.
//!
//! The flood test prints its memory figures (`--nocapture`);
//! docs/RELIABILITY.md records them.

mod common;
mod procfs;
mod rawws;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use procfs::*;

/// Flooding clients, as in the report that found the problem.
const CLIENTS: usize = 12;
/// The default --max-message.
const MESSAGE: usize = 1 << 20;
/// More messages than the default --max-queue (64) holds.
const FLOOD: usize = 70;

fn close_lines(s: &Server) -> Vec<String> {
    s.events().into_iter().filter(|l| l.starts_with("close ")).collect()
}

/// Writes `frame` up to `times` times, as fast as the socket takes it, and
/// stops at the first error (the server closed the connection). Then reads
/// until the server's close frame: the socket stays open until the server
/// has read everything (closing it with unread data would reset it).
/// Returns how many frames went out whole, and the close code.
fn flood(mut tcp: TcpStream, frame: &[u8], times: usize) -> (usize, Option<u16>) {
    tcp.set_write_timeout(Some(Duration::from_secs(60))).expect("write timeout");
    let written = (0..times).take_while(|_| tcp.write_all(frame).is_ok()).count();
    (written, rawws::read_close(&mut tcp).map(|(code, _)| code))
}

#[test]
fn flooding_clients_are_held_to_the_byte_budget() {
    let s = Server::start(&[]);
    let pid = s.child.id();
    let conns: Vec<TcpStream> = (0..CLIENTS).map(|_| rawws::open(s.port, "/hold.sh")).collect();
    wait_for("every open event", || (s.events().len() >= CLIENTS).then_some(()));
    let before = rss_kib(pid);
    let frame = std::sync::Arc::new(rawws::frame(rawws::BINARY, &vec![b'x'; MESSAGE]));
    let writers: Vec<_> = conns
        .into_iter()
        .map(|tcp| {
            let frame = frame.clone();
            std::thread::spawn(move || flood(tcp, &frame, FLOOD))
        })
        .collect();
    let (sent, codes): (Vec<usize>, Vec<Option<u16>>) = writers.into_iter().map(|w| w.join().expect("writer")).unzip();
    let (peak, after) = (hwm_kib(pid), rss_kib(pid));
    println!(
        "{CLIENTS} clients x {FLOOD} messages of {MESSAGE} bytes to a slow script: messages written {sent:?}; \
         RSS before {:.1} MiB, peak {:.1} MiB (+{:.1}), after {:.1} MiB",
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(after)
    );
    assert!(codes.iter().all(|c| *c == Some(1013)), "close codes {codes:?}");
    // Let the held scripts finish; every flooding client was closed with 1013.
    std::fs::write(s.dir.join("flag"), "").expect("flag");
    wait_for("a close event per client", || (close_lines(&s).len() >= CLIENTS).then_some(()));
    for line in close_lines(&s) {
        assert!(line.ends_with(" 1013 queue-full"), "{line}");
    }
    // The default budget is 64 MiB in total; allocator slack on top.
    assert!(
        peak.saturating_sub(before) < 160 * 1024,
        "memory grew by {:.1} MiB under the flood",
        mib(peak.saturating_sub(before))
    );
}

#[test]
fn the_total_budget_closes_every_flooding_client() {
    // Four connections may each hold 1 MiB, but all of them only 2 MiB.
    let s = Server::start(&[
        "--max-message",
        "262144",
        "--max-queue-bytes",
        "1048576",
        "--max-queue-bytes-total",
        "2097152",
    ]);
    let conns: Vec<TcpStream> = (0..4).map(|_| rawws::open(s.port, "/hold.sh")).collect();
    wait_for("every open event", || (s.events().len() >= 4).then_some(()));
    let frame = std::sync::Arc::new(rawws::frame(rawws::BINARY, &vec![b'y'; 256 * 1024]));
    // First three messages each (768 KiB: under a connection's own budget;
    // 3 MiB together: over the total), so the total trips whatever the
    // order the server reads them in and however fast closed ones free theirs.
    for mut tcp in conns.iter() {
        tcp.set_write_timeout(Some(Duration::from_secs(60))).expect("write timeout");
        for _ in 0..3 {
            if tcp.write_all(&frame).is_err() {
                break; // already closed for the total
            }
        }
    }
    // `write_all` returns once the bytes are in the kernel, not once the
    // server has read them: the floods must wait until the server has read
    // all of the first messages (the total trips then), or one client's
    // flood may close it for its own budget before the others' first
    // messages arrive, and the total never trips.
    wait_for("the total budget to trip", || s.log().contains("--max-queue-bytes-total").then_some(()));
    let writers: Vec<_> = conns
        .into_iter()
        .map(|tcp| {
            let frame = frame.clone();
            std::thread::spawn(move || flood(tcp, &frame, 9))
        })
        .collect();
    // Each is closed with 1013 (over its own budget, or over the total
    // while it held the most), or dropped when another one's message went
    // over the total while it held the most.
    for w in writers {
        let code = w.join().expect("writer").1;
        assert!(matches!(code, Some(1013) | None), "{code:?}");
    }
    std::fs::write(s.dir.join("flag"), "").expect("flag");
    wait_for("a close event per client", || (close_lines(&s).len() >= 4).then_some(()));
    for line in close_lines(&s) {
        assert!(line.ends_with(" 1013 queue-full"), "{line}");
    }
    let log = s.log();
    assert!(log.contains("--max-queue-bytes-total"), "{log}");
    // One line per connection closed, whichever budget it went over.
    assert_eq!(log.matches("closing (1013)").count() + log.matches("dropping it (1013)").count(), 4, "{log}");
}

#[test]
fn a_gone_clients_queued_messages_are_dropped_and_only_its_close_event_runs() {
    // One script slot: whatever a gone client still had queued would hold it.
    let s = Server::start(&["--max-procs", "1"]);
    let mut a = rawws::open(s.port, "/hold.sh");
    let a_id = rawws::read_text(&mut a).strip_prefix("id ").expect("id line").to_owned();
    a.write_all(&rawws::frame(rawws::TEXT, b"first")).expect("send");
    // Its first message is running (held until the flag file exists) ...
    s.wait_event("a's first message", |l| l.starts_with(&format!("message {a_id}")));
    // ... and 20 more wait behind it when the client goes away (FIN after
    // the data: the server reads all 20 before it sees the end).
    for i in 0..20 {
        a.write_all(&rawws::frame(rawws::TEXT, format!("queued {i}").as_bytes())).expect("send");
    }
    a.shutdown(std::net::Shutdown::Write).expect("shutdown");
    // The server ends the TCP connection once the close event is queued
    // (its `closed:` line comes after the events before it ran).
    a.set_read_timeout(Some(std::time::Duration::from_secs(15))).expect("timeout");
    assert_eq!(std::io::Read::read(&mut a, &mut [0u8; 64]).expect("the server closes"), 0);
    std::fs::write(s.dir.join("flag"), "").expect("flag");

    // A new client is served while (and after) the gone client's queue goes.
    let mut b = rawws::open(s.port, "/hold.sh");
    let b_id = rawws::read_text(&mut b).strip_prefix("id ").expect("id line").to_owned();
    b.write_all(&rawws::frame(rawws::TEXT, b"hello")).expect("send");
    assert_eq!(rawws::read_text(&mut b), "done 5");

    s.wait_event("a's close event", |l| l.starts_with(&format!("close {a_id}")));
    let events = s.events();
    let count = |prefix: &str| events.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count(&format!("message {a_id}")), 1, "the gone client's queued messages ran: {events:?}");
    assert_eq!(count(&format!("close {a_id} 1006 dropped")), 1, "{events:?}");
    assert_eq!(count(&format!("message {b_id}")), 1, "{events:?}");
    s.wait_log(&format!("[{a_id}] the connection ended with 20 message event(s) still queued; dropped them"));
    assert!(get(&s.api("/metrics")).body.contains("ws2http_events_dropped_total 20\n"));
}

/// Clients that each stop half-way through a big message.
const HALFWAY: usize = 600;
/// What each of them sends of its message: 600 x 256 KiB = 150 MiB in all,
/// over the default --max-queue-bytes-total (64 MiB).
const FRAGMENT: usize = 256 * 1024;

/// Sends the first fragment of a message and a ping behind it; returns
/// `Ok` once the pong shows the server read both, or the server's close
/// code.
fn start_a_message(port: u16, fragment: &[u8]) -> (TcpStream, Result<(), Option<u16>>) {
    let mut tcp = rawws::open(port, "/hold.sh");
    tcp.write_all(fragment).expect("send the fragment");
    tcp.write_all(&rawws::frame(rawws::PING, b"p")).expect("send the ping");
    loop {
        match rawws::read_frame(&mut tcp) {
            Some((0xA, _)) => return (tcp, Ok(())),
            Some((rawws::CLOSE, p)) => return (tcp, Err(p.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))),
            Some(_) => continue, // the open event's message
            None => return (tcp, Err(None)),
        }
    }
}

#[test]
fn messages_still_being_read_count_in_the_total() {
    let s = Server::start(&["--max-connections-per-ip", "1000"]);
    let pid = s.child.id();
    let before = rss_kib(pid);
    let fragment = rawws::frame_with(false, 0, rawws::BINARY, &vec![b'z'; FRAGMENT], true);
    let mut held = Vec::new();
    for i in 0..HALFWAY {
        let (tcp, result) = start_a_message(s.port, &fragment);
        // Each new client is read whole: over the total, one that holds
        // more (an older one, with its whole fragment) is closed instead.
        assert_eq!(result, Ok(()), "client {i}");
        held.push(tcp);
    }
    // 64 MiB hold 255 such fragments (with their frame headers): each
    // client after that made one of those held close, with 1013.
    let evicted = HALFWAY - 255;
    wait_for("the evicted clients' close events", || (close_lines(&s).len() >= evicted).then_some(()));
    let (peak, after) = (hwm_kib(pid), rss_kib(pid));
    println!(
        "{HALFWAY} clients each {FRAGMENT} bytes into a message: all read, {evicted} of them closed with 1013 \
         to make room; RSS before {:.1} MiB, peak {:.1} MiB (+{:.1}), after {:.1} MiB",
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(after)
    );
    let closes = close_lines(&s);
    assert_eq!(closes.len(), evicted, "{closes:?}");
    assert!(closes.iter().all(|l| l.ends_with(" 1013 queue-full")), "{closes:?}");
    let log = s.log();
    assert_eq!(log.matches("holds the most bytes of messages (262158)").count(), evicted);
    assert_eq!(log.matches("dropping it (1013)").count(), evicted);
    // tungstenite assembles a fragmented message in a copy while its read
    // buffer stays allocated: about twice the bytes counted, plus slack.
    // (Without the total, this grew by 0.52 MiB per client: 312 MiB here.)
    assert!(peak.saturating_sub(before) < 256 * 1024, "memory grew by {:.1} MiB", mib(peak.saturating_sub(before)));
    drop(held);
}

#[test]
fn byte_budgets_that_cannot_hold_one_message_are_refused_at_start_up() {
    let run = |args: &[&str], env: &[(&str, &str)], config: Option<&str>| {
        let dir = scratch();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ws2http"));
        cmd.args(["--cgi-bin"]).arg(fixtures()).args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"]);
        cmd.args(args).envs(env.iter().copied());
        if let Some(toml) = config {
            std::fs::write(dir.join("ws2http.toml"), toml).expect("config");
            cmd.arg("--config").arg(dir.join("ws2http.toml"));
        }
        let out = cmd.output().expect("run");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let want = "--max-queue-bytes 1000 is smaller than --max-message 1048576";
    for (code, err) in [
        run(&["--max-queue-bytes", "1000"], &[], None),
        run(&[], &[("WS2HTTP_MAX_QUEUE_BYTES", "1000")], None),
        run(&[], &[], Some("max-queue-bytes = 1000\n")),
    ] {
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(want) && err.lines().count() == 1, "{err}");
    }
    let (code, err) = run(&["--max-queue-bytes-total", "2000000"], &[], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--max-queue-bytes-total 2000000 is smaller than --max-queue-bytes 4194304"), "{err}");
}

/// Sends `bytes` then a ping `sync`, and reads until its pong: the server
/// has read everything before it. `Err` with the close code if it closed.
fn send_and_sync(tcp: &mut TcpStream, bytes: &[u8]) -> Result<(), Option<u16>> {
    tcp.write_all(bytes).expect("send");
    tcp.write_all(&rawws::frame(rawws::PING, b"sync")).expect("send the ping");
    loop {
        match rawws::read_frame(tcp) {
            Some((0xA, p)) if p == b"sync" => return Ok(()),
            Some((rawws::CLOSE, p)) => return Err(p.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))),
            Some(_) => continue,
            None => return Err(None),
        }
    }
}

#[test]
fn pings_with_a_long_length_encoding_hold_no_bytes() {
    let s =
        Server::start(&["--max-message", "16384", "--max-queue-bytes", "65536", "--max-queue-bytes-total", "65536"]);
    std::fs::write(s.dir.join("flag"), "").expect("flag");
    // 8000 empty pings whose length is written on 64 bits: a 14-byte header,
    // which tungstenite accepts (8 bytes each stayed counted: 64,000 bytes).
    let mut pinger = rawws::open(s.port, "/hold.sh");
    let ping = [0x89u8, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(send_and_sync(&mut pinger, &ping.repeat(8000)), Ok(()));
    // Others' messages still fit in the total.
    for _ in 0..3 {
        let mut other = rawws::open(s.port, "/hold.sh");
        assert!(rawws::read_text(&mut other).starts_with("id "));
        other.write_all(&rawws::frame(rawws::TEXT, &[b'x'; 2000])).expect("send");
        assert_eq!(rawws::read_text(&mut other), "done 2000");
    }
    assert!(!s.log().contains("closing (1013)"), "{}", s.log());
}

#[test]
fn over_the_total_the_connection_holding_the_most_is_closed_not_the_sender() {
    let s = Server::start(&[
        "--max-message",
        "262144",
        "--max-queue-bytes",
        "262144",
        "--max-queue-bytes-total",
        "1048576",
    ]);
    std::fs::write(s.dir.join("flag"), "").expect("flag");
    // 17 clients each 61,000 bytes into a message they never finish (and
    // that answer pings): 1,037,136 bytes held with their frame headers.
    let fragment = rawws::frame_with(false, 0, rawws::BINARY, &[b'z'; 61_000], true);
    let mut holders = Vec::new();
    for _ in 0..17 {
        let mut tcp = rawws::open(s.port, "/hold.sh");
        let id = rawws::read_text(&mut tcp).strip_prefix("id ").expect("id line").to_owned();
        assert_eq!(send_and_sync(&mut tcp, &fragment), Ok(()));
        holders.push((tcp, id));
    }
    // Another client's message of 20,000 bytes goes over the total: it is
    // answered, and one of the holders is dropped instead (at once, no close
    // frame: its buffers must go now; its close event says 1013).
    let mut sender = rawws::open(s.port, "/hold.sh");
    assert!(rawws::read_text(&mut sender).starts_with("id "));
    sender.write_all(&rawws::frame(rawws::BINARY, &[b'y'; 20_000])).expect("send");
    assert_eq!(rawws::read_text(&mut sender), "done 20000");
    let close = s.wait_event("a holder's close event", |l| l.starts_with("close "));
    assert!(close.ends_with(" 1013 queue-full"), "{close}");
    let evicted = holders.iter().position(|(_, id)| close.starts_with(&format!("close {id} "))).expect("a holder");
    let (mut evicted, id) = holders.swap_remove(evicted);
    assert_eq!(rawws::read_close(&mut evicted), None);
    let log = s.log();
    let line = format!(
        "[{id}] /hold.sh holds the most bytes of messages (61008) while all connections together are over \
         --max-queue-bytes-total 1048576; dropping it (1013)"
    );
    assert!(log.contains(&line), "{log}");
    assert_eq!(log.matches("(1013)").count(), 1, "{log}");
    // A sender that holds the most itself is still the one closed: 100,000
    // bytes, more than any holder, do not fit beside them.
    let mut big = rawws::open(s.port, "/hold.sh");
    assert!(rawws::read_text(&mut big).starts_with("id "));
    big.write_all(&rawws::frame(rawws::BINARY, &[b'w'; 100_000])).expect("send");
    assert_eq!(rawws::read_close(&mut big).map(|(code, _)| code), Some(1013));
    s.wait_log(
        "more than 1048576 bytes of messages held for all connections (--max-queue-bytes-total); closing (1013)",
    );
    assert_eq!(s.log().matches("(1013)").count(), 2, "{}", s.log());
    drop(holders);
}

#[test]
fn a_message_that_stops_arriving_is_closed_with_1008() {
    let s = Server::start(&["--http-timeout", "0.5"]);
    std::fs::write(s.dir.join("flag"), "").expect("flag");
    // Half of a message, then nothing but pings (the ping timeout never
    // fires): beyond 0.5 s plus a second per KiB received, it is closed.
    let mut tcp = rawws::open(s.port, "/hold.sh");
    let id = rawws::read_text(&mut tcp).strip_prefix("id ").expect("id line").to_owned();
    let fragment = rawws::frame_with(false, 0, rawws::TEXT, &[b's'; 1000], true);
    assert_eq!(send_and_sync(&mut tcp, &fragment), Ok(()));
    assert_eq!(rawws::read_close(&mut tcp), Some((1008, "message too slow".to_owned())));
    let close = s.wait_event("the close event", |l| l.starts_with(&format!("close {id} ")));
    assert_eq!(close, format!("close {id} 1008 too-slow"));
    let log = s.log();
    assert_eq!(log.matches("a message arrives too slowly").count(), 1, "{log}");
    assert!(log.contains(&format!("[{id}] ")) && log.contains("closing (1008)"), "{log}");
    // A message that keeps arriving (here about 10 KiB/s, in 20 fragments)
    // is not: it takes over a second, beyond the 0.5 s alone.
    let mut tcp = rawws::open(s.port, "/hold.sh");
    assert!(rawws::read_text(&mut tcp).starts_with("id "));
    for i in 0..20 {
        let part = match i {
            0 => rawws::frame_with(false, 0, rawws::TEXT, &[b'k'; 1024], true),
            19 => rawws::frame_with(true, 0, rawws::CONTINUATION, &[b'k'; 1024], true),
            _ => rawws::frame_with(false, 0, rawws::CONTINUATION, &[b'k'; 1024], true),
        };
        tcp.write_all(&part).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(rawws::read_text(&mut tcp), "done 20480");
}
