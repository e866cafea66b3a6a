//! Limits and back-pressure: every limit gives the client a clear result and
//! leaves everyone else unaffected.

mod common;
mod rawws;
use std::io::{Read, Write};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::*;
use futures_util::StreamExt;

fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn cross_origin_handshakes_are_refused() {
    let s = Server::start(&["--allow-origin", "https://app.example"]);
    let req = |origin: &str| raw_http(s.port, &upgrade_request("/mirror.sh", origin));
    assert_eq!(status_of(&req("Origin: http://evil.example\r\n")), 403);
    assert_eq!(status_of(&req("Origin: null\r\n")), 403);
    // Same origin as Host (127.0.0.1), an allowed origin, and no Origin at all.
    assert_eq!(status_of(&req("Origin: http://127.0.0.1\r\n")), 101);
    assert_eq!(status_of(&req("Origin: https://app.example\r\n")), 101);
    assert_eq!(status_of(&req("")), 101);
    s.wait_log("refused a handshake from origin \"http://evil.example\"");
}

#[async_std::test]
async fn connection_limits_answer_503_and_free_up() {
    let s = Server::start(&["--max-connections", "2"]);
    let (mut a, ida) = mirror(&s, "/mirror.sh").await;
    let (_b, _) = mirror(&s, "/mirror.sh").await;
    let resp = raw_http(s.port, &upgrade_request("/mirror.sh", ""));
    assert_eq!(status_of(&resp), 503, "{resp}");
    a.close(None).await.unwrap();
    s.wait_event("a's close event", |l| l.starts_with(&format!("close {ida}")));
    wait_for("a free slot", || (status_of(&raw_http(s.port, &upgrade_request("/mirror.sh", ""))) == 101).then_some(()));

    let s = Server::start(&["--max-connections-per-ip", "1"]);
    let (_a, _) = mirror(&s, "/mirror.sh").await;
    assert_eq!(status_of(&raw_http(s.port, &upgrade_request("/mirror.sh", ""))), 503);
    s.wait_log("PerIp(1)");
}

#[test]
fn one_address_gets_256_connections_by_default() {
    // At the usual soft limit of 1024 file descriptors, the old default
    // (1000) let one address take every descriptor: accept and spawn failed
    // for everyone (docs/SECURITY.md).
    let s = Server::start(&["--events", "message"]);
    let held: Vec<_> = (0..256).map(|_| rawws::open(s.port, "/mirror.sh")).collect();
    let resp = raw_http(s.port, &upgrade_request("/mirror.sh", ""));
    assert_eq!(status_of(&resp), 503, "{resp}");
    s.wait_log("PerIp(256)");
    drop(held);
}

#[test]
fn silent_peers_are_dropped_after_a_ping_interval() {
    let s = Server::start(&["--ping-interval", "0.3"]);
    // A raw client that completes the handshake and then never reads or
    // answers anything.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    tcp.write_all(upgrade_request("/mirror.sh", "").as_bytes()).unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let line = s.wait_event("ping-timeout close", |l| l.starts_with("close "));
    assert!(line.contains(" 1006 ping-timeout"), "{line}");
    assert_eq!(s.log().matches("no answer to a ping").count(), 1, "{}", s.log());
}

#[test]
fn a_peer_that_reads_nothing_is_dropped_even_while_a_write_to_it_is_blocked() {
    let s = Server::start(&["--ping-interval", "0.3", "--max-output", "67108864", "--max-outgoing-bytes", "67108864"]);
    let mut tcp = rawws::open(s.port, "/flood.sh");
    // 200 messages of 256 KiB: more than the socket buffers hold, fewer
    // than --max-outgoing and --max-outgoing-bytes allow (so it is not a
    // slow consumer). The writer blocks
    // on a client that neither reads nor sends anything more.
    tcp.write_all(&rawws::frame(rawws::TEXT, b"200 262144")).expect("send");
    let line = s.wait_event("ping-timeout close", |l| l.starts_with("close "));
    assert!(line.ends_with(" 1006 ping-timeout"), "{line}");
    assert_eq!(s.log().matches("no answer to a ping").count(), 1, "{}", s.log());
}

#[async_std::test]
async fn answering_peers_stay_connected_through_pings() {
    // An interval long enough for a loaded machine to answer in; the test
    // waits for pings, not for time.
    let s = Server::start(&["--ping-interval", "1"]);
    let (mut a, _) = mirror(&s, "/mirror.sh").await;
    // Three pings, each answered (the client library pongs as it reads): a
    // peer whose pong the server missed would be dropped one interval
    // after a ping, so the stream would end before the third.
    let mut pings = 0;
    while pings < 3 {
        let m = async_std::future::timeout(Duration::from_secs(30), a.next())
            .await
            .expect("a ping within 30 s")
            .expect("still connected")
            .expect("read");
        assert!(m.is_ping(), "only pings expected, got {m:?}");
        pings += 1;
    }
    a.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "still here");
    assert!(s.events().iter().all(|l| !l.starts_with("close")));
}

#[async_std::test]
async fn slow_consumers_are_closed_without_delaying_others() {
    let s = Server::start(&["--max-outgoing", "8"]);
    let (mut healthy, _) = mirror(&s, "/mirror.sh").await;
    // A client that never reads after the handshake.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    tcp.write_all(upgrade_request("/mirror.sh", "").as_bytes()).unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).unwrap();
    let big = "z".repeat(256 * 1024);
    let reader = async_std::task::spawn(async move {
        let mut got = 0;
        while got < 60 {
            match next(&mut healthy).await {
                Message::Text(t) if t.len() == 256 * 1024 => got += 1,
                Message::Text(_) => {}
                other => panic!("{other:?}"),
            }
        }
        got
    });
    for _ in 0..60 {
        let r = post(&s.api("/broadcast"), &big);
        assert_eq!(r.status, 200);
    }
    assert_eq!(reader.await, 60, "the healthy client got every broadcast");
    let line = s.wait_event("slow consumer close", |l| l.starts_with("close ") && l.contains("slow-consumer"));
    assert!(line.contains(" 1008 slow-consumer"), "{line}");
    // One log line for the limit, however many broadcasts came after it.
    let log = s.log();
    assert_eq!(log.matches("does not read its messages").count(), 1, "{log}");
    drop(tcp);
}

#[test]
fn a_slow_consumer_is_logged_once() {
    let s = Server::start(&["--max-outgoing", "8", "--max-output", "67108864"]);
    let mut tcp = rawws::open(s.port, "/flood.sh");
    // flood.sh answers with 60 messages of 256 KiB (15 MiB) to this client,
    // which never reads: more than the kernel's socket buffers take (small
    // messages go straight into them while nothing is queued), then far
    // more than --max-outgoing lets wait.
    tcp.write_all(&rawws::frame(rawws::TEXT, b"60 262144")).expect("send");
    let line = s.wait_event("slow consumer close", |l| l.starts_with("close ") && l.contains("slow-consumer"));
    assert!(line.contains(" 1008 slow-consumer"), "{line}");
    let log = s.log();
    assert_eq!(log.matches("does not read its messages").count(), 1, "{log}");
}

#[async_std::test]
async fn full_event_queue_closes_with_1013() {
    let s = Server::start(&["--max-queue", "2"]);
    let mut ws = connect(&s.url("/slow.sh")).await;
    for i in 0..30 {
        if ws.send(Message::text(i.to_string())).await.is_err() {
            break;
        }
    }
    let mut close = None;
    while close.is_none() {
        if let Message::Close(Some(f)) = next(&mut ws).await {
            close = Some(u16::from(f.code));
        }
    }
    assert_eq!(close, Some(1013));
    s.wait_log("queue-full");
    // One log line for the limit, however many messages came after it.
    let log = s.log();
    assert_eq!(log.matches("closing (1013)").count(), 1, "{log}");
}

#[async_std::test]
async fn scripts_share_max_procs_fairly() {
    let s = Server::start(&["--max-procs", "1"]);
    let mut chatty = connect(&s.url("/slow.sh")).await;
    let mut quiet = connect(&s.url("/slow.sh")).await;
    for i in 0..40 {
        chatty.send(Message::text(format!("c{i}"))).await.unwrap();
    }
    // Wait until the chatty client's backlog is being worked through.
    assert_eq!(next_text(&mut chatty).await, "c0");
    quiet.send(Message::text("q")).await.unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = answered.clone();
    let q = async_std::task::spawn(async move {
        let t = next_text(&mut quiet).await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        t
    });
    let mut before = 1;
    while !answered.load(std::sync::atomic::Ordering::SeqCst) {
        next_text(&mut chatty).await;
        before += 1;
        assert!(before < 40, "the quiet client waited for the whole backlog");
    }
    assert_eq!(q.await, "q");
    // Round-robin: the quiet client waited for at most a couple of the
    // chatty client's events, not for its 40-event backlog.
    assert!(before <= 4, "quiet client answered after {before} chatty events");
}

#[async_std::test]
async fn output_limit_kills_the_script_and_the_connection_goes_on() {
    let s = Server::start(&["--max-output", "65536"]);
    let mut ws = connect(&s.url("/bigout.sh")).await;
    ws.send(Message::text("big")).await.unwrap();
    s.wait_log("more than 65536 bytes of output");
    ws.send(Message::text("after")).await.unwrap();
    loop {
        if next_text(&mut ws).await == "after" {
            break;
        }
    }
}

#[async_std::test]
async fn a_background_job_holding_stdout_does_not_hang_the_connection() {
    let s = Server::start(&[]);
    let mut ws = connect(&s.url("/daemon.sh")).await;
    ws.send(Message::text("fork")).await.unwrap();
    let pid: i32 = next_text(&mut ws).await.strip_prefix("forked ").unwrap().parse().unwrap();
    ws.send(Message::text("next")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "next");
    s.wait_log("still holds stdout open");
    wait_for("the background job to be terminated", || (!pid_alive(pid)).then_some(()));
}

#[async_std::test]
async fn timeout_kills_the_whole_process_group() {
    let s = Server::start(&["--timeout", "0.5"]);
    let mut ws = connect(&s.url("/sleepy-child.sh")).await;
    ws.send(Message::text("x")).await.unwrap();
    let child_file = s.dir.join("flag.child");
    let pid: i32 = wait_for("child pid", || std::fs::read_to_string(&child_file).ok()?.trim().parse().ok());
    s.wait_log("timed out after 500ms");
    wait_for("the script's child to be gone", || (!pid_alive(pid)).then_some(()));
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut s = Server::start(&["--timeout", "30"]);
    async_std::task::block_on(async {
        let mut ws = connect(&s.url("/sleepy-child.sh")).await;
        ws.send(Message::text("x")).await.unwrap();
        let child_file = s.dir.join("flag.child");
        wait_for("script running", || child_file.exists().then_some(()));
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
        s.wait_log("shutting down");
        let status = s.terminate();
        assert_eq!(status.code(), Some(130), "{status:?}");
    });
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    // Started with a soft limit of 512: connections beyond it would make
    // accept (and every spawn) fail for everyone.
    let bin = std::env::var("WS2HTTP_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ws2http").to_owned());
    let mut child = std::process::Command::new("sh")
        .args(["-c", "ulimit -Sn 512 && exec \"$0\" --listen 127.0.0.1:0 --api-listen 127.0.0.1:0 --cgi-bin \"$1\""])
        .arg(bin)
        .arg(fixtures())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    read_ports(&mut child);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    let _ = child.kill();
    let _ = child.wait();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums[0], nums[1], "soft limit not raised to the hard one: {line}");
    assert_ne!(nums[0], "512", "{line}");
}
