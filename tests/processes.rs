//! A child process never outlives its budget (issue 11, vulnerability 1).
//!
//! Every fixture (tests/fixtures/processes/) starts a "stubborn" child that
//! ignores SIGTERM and logs `stubborn PID` before it sleeps for two minutes:
//! only a SIGKILL to the script's whole process group stops it in time. One
//! test per path that ends a group: event timeout, classic CGI header timeout
//! (504) and invalid header block (500), classic CGI streaming past the
//! timeout, --max-output, a background job holding stdout, the end of the
//! budget of a script that exited normally, graceful shutdown and a second
//! signal; and many events whose jobs outlive their script at once. After
//! each, no process carrying the server's marker (the unique EVENTS_LOG every
//! script inherits) may remain, and the server may have no zombie children.

mod common;
mod procfs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::*;
use procfs::*;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/processes")
}

/// The environment entry every process started for `s` carries.
fn marker(s: &Server) -> String {
    format!("EVENTS_LOG={}", s.dir.join("events.log").display())
}

fn start(flags: &[&str]) -> Server {
    Server::start_in(&fixtures_dir(), flags)
}

/// Waits until a stubborn child has logged that it runs.
fn wait_stubborn(s: &Server) {
    s.wait_event("a stubborn child running", |l| l.starts_with("stubborn "));
}

/// Fails unless every process of `s`'s scripts is gone (within 20 s: a
/// budget end plus the grace period) and, while the server runs, it has no
/// zombie children.
async fn assert_nothing_left(s: &Server, server_alive: bool) {
    let pid = s.child.id();
    let left = wait_until(Duration::from_secs(20), || {
        let l = processes_with_env(&marker(s), pid);
        if l.is_empty() {
            Ok(())
        } else {
            Err(l)
        }
    })
    .await;
    assert!(left.is_ok(), "processes left behind: {left:?}\n{}", s.log());
    if server_alive {
        let zombies = wait_until(Duration::from_secs(10), || {
            let z = zombies_of(pid);
            if z.is_empty() {
                Ok(())
            } else {
                Err(z)
            }
        })
        .await;
        assert!(zombies.is_ok(), "zombie children of the server: {zombies:?}");
    }
}

/// Starts a classic CGI request and returns the connection once the
/// response head (and `until` in the body) has arrived.
fn http_get(s: &Server, path: &str, until: &str) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(until) {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (tcp, String::from_utf8_lossy(&got).into_owned())
}

#[async_std::test]
async fn an_event_timeout_kills_a_child_that_ignores_sigterm() {
    let s = start(&["--timeout", "1"]);
    let mut ws = connect(&s.url("/timeout.sh")).await;
    ws.send(Message::text("go")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hanging");
    wait_stubborn(&s);
    s.wait_log("timed out after 1s");
    assert_nothing_left(&s, true).await;
}

#[async_std::test]
async fn a_classic_cgi_header_timeout_kills_the_whole_group() {
    let s = start(&["--timeout", "1"]);
    let (_tcp, head) = http_get(&s, "/nohead.sh", "\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    wait_stubborn(&s);
    assert_nothing_left(&s, true).await;
}

#[async_std::test]
async fn an_invalid_header_block_kills_the_whole_group() {
    let s = start(&["--timeout", "30"]);
    let (_tcp, head) = http_get(&s, "/badhead.sh", "\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 500"), "{head}");
    wait_stubborn(&s);
    assert_nothing_left(&s, true).await;
}

#[async_std::test]
async fn a_classic_cgi_body_streaming_past_the_timeout_is_stopped() {
    let s = start(&["--timeout", "1"]);
    let (_tcp, got) = http_get(&s, "/stream.sh", "first line");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    wait_stubborn(&s);
    s.wait_log("still running after the timeout");
    assert_nothing_left(&s, true).await;
}

#[async_std::test]
async fn max_output_kills_a_background_child_that_ignores_sigterm() {
    let s = start(&["--max-output", "65536", "--timeout", "30"]);
    let mut ws = connect(&s.url("/bigout.sh")).await;
    ws.send(Message::text("go")).await.unwrap();
    s.wait_log("more than 65536 bytes of output");
    wait_stubborn(&s);
    assert_nothing_left(&s, true).await;
}

#[async_std::test]
async fn a_daemon_holding_stdout_is_killed_after_the_grace_period() {
    let s = start(&["--timeout", "30"]);
    let mut ws = connect(&s.url("/daemon.sh")).await;
    ws.send(Message::text("go")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "started");
    wait_stubborn(&s);
    s.wait_log("still holds stdout open");
    assert_nothing_left(&s, true).await;
}

#[async_std::test]
async fn background_jobs_run_until_the_budget_ends_and_no_longer() {
    let s = start(&["--timeout", "4"]);
    let mut ws = connect(&s.url("/jobs.sh")).await;
    assert_eq!(next_text(&mut ws).await, "jobs started");
    wait_stubborn(&s);
    // A job that ends within the budget is left alone.
    std::fs::write(s.dir.join("flag"), b"").unwrap();
    s.wait_event("the short job to finish", |l| l == "short done");
    // The stubborn one is stopped when the budget ends; the connection stays.
    s.wait_log("at the end of its budget");
    assert_nothing_left(&s, true).await;
    ws.send(Message::text("still there?")).await.unwrap();
    s.wait_log("/jobs.sh message: ok");
}

#[async_std::test]
async fn graceful_shutdown_stops_running_scripts_and_background_jobs() {
    let mut s = start(&["--timeout", "30"]);
    let mut ws = connect(&s.url("/jobs.sh")).await;
    assert_eq!(next_text(&mut ws).await, "jobs started");
    let (_tcp, got) = http_get(&s, "/stream.sh", "first line");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    wait_for("two stubborn children", || {
        (s.events().iter().filter(|l| l.starts_with("stubborn ")).count() == 2).then_some(())
    });
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", s.log());
    assert_nothing_left(&s, false).await;
}

#[async_std::test]
async fn a_second_signal_kills_every_group_at_once() {
    let mut s = start(&["--timeout", "30"]);
    let mut jobs = connect(&s.url("/jobs.sh")).await;
    assert_eq!(next_text(&mut jobs).await, "jobs started");
    let mut hang = connect(&s.url("/timeout.sh")).await;
    hang.send(Message::text("go")).await.unwrap();
    assert_eq!(next_text(&mut hang).await, "hanging");
    wait_for("two stubborn children", || {
        (s.events().iter().filter(|l| l.starts_with("stubborn ")).count() == 2).then_some(())
    });
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    s.wait_log("shutting down");
    let status = s.terminate();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_nothing_left(&s, false).await;
}

#[async_std::test]
async fn try_stops_what_the_script_left_running_before_it_exits() {
    let dir = scratch();
    let log = dir.join("events.log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ws2http"))
        .args(["try", "--event", "open", "--pass-env", "EVENTS_LOG", "--pass-env", "FLAG_FILE"])
        .arg(fixtures_dir().join("jobs.sh"))
        .env("EVENTS_LOG", &log)
        .env("FLAG_FILE", dir.join("flag"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(std::fs::read_to_string(&log).unwrap_or_default().contains("stubborn "), "the job never started");
    assert!(stdout.contains("stopped:  1 process group(s) the script left running"), "{stdout}");
    let marker = format!("EVENTS_LOG={}", log.display());
    let left = wait_until(Duration::from_secs(10), || {
        let l = processes_with_env(&marker, 0);
        if l.is_empty() {
            Ok(())
        } else {
            Err(l)
        }
    })
    .await;
    assert!(left.is_ok(), "processes left behind by try: {left:?}");
}

/// The figure in docs/SECURITY.md and RELIABILITY.md: 100 classic CGI
/// requests and 100 WebSocket events at once, each leaving a child that
/// ignores SIGTERM, all past `--timeout`. Prints `SUMMARY` (`--nocapture`).
#[async_std::test]
async fn a_hundred_timed_out_requests_and_events_leave_nothing() {
    const N: usize = 100;
    let s = start(&["--timeout", "1", "--max-procs", "250"]);
    let port = s.port;
    let requests: Vec<_> = (0..N)
        .map(|_| std::thread::spawn(move || raw_http(port, "GET /nohead.sh HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")))
        .collect();
    let mut conns = Vec::new();
    for _ in 0..N {
        let mut ws = connect(&s.url("/timeout.sh")).await;
        ws.send(Message::text("go")).await.unwrap();
        conns.push(ws);
    }
    let answers: Vec<String> = requests.into_iter().map(|t| t.join().unwrap()).collect();
    let gateway_timeouts = answers.iter().filter(|a| a.starts_with("HTTP/1.1 504")).count();
    assert_eq!(gateway_timeouts, N, "every request answered 504");
    wait_for("every stubborn child running", || {
        (s.events().iter().filter(|l| l.starts_with("stubborn ")).count() == 2 * N).then_some(())
    });
    s.wait_log("timed out after 1s");
    let pid = s.child.id();
    let left = wait_until(Duration::from_secs(30), || {
        let l = processes_with_env(&marker(&s), pid);
        if l.is_empty() {
            Ok(0)
        } else {
            Err(l.len())
        }
    })
    .await;
    let zombies = wait_until(Duration::from_secs(10), || {
        let z = zombies_of(pid).len();
        if z == 0 {
            Ok(0)
        } else {
            Err(z)
        }
    })
    .await;
    println!(
        "SUMMARY processes: {N} classic CGI requests (504) + {N} WebSocket events timed out, each with a \
         SIGTERM-ignoring child: children left={} zombies={}",
        left.unwrap_or_else(|n| n),
        zombies.unwrap_or_else(|n| n)
    );
    assert_eq!(left, Ok(0), "children left behind");
    assert_eq!(zombies, Ok(0), "zombie children of the server");
    drop(conns);
}

/// README's "Push from outside" demo: cgi-bin/clock.sh starts a background
/// job on open that pushes ten ticks through the control API, one a second.
/// The job lives within its group's budget (30 s by default) and is left alone.
#[async_std::test]
async fn the_clock_demo_ticks_ten_times_within_its_budget() {
    let s = Server::start_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("cgi-bin"), &[]);
    let mut ws = connect(&s.url("/clock.sh")).await;
    assert_eq!(next_text(&mut ws).await, "clock started");
    for i in 1..=10 {
        let tick = next_text(&mut ws).await;
        assert!(tick.starts_with(&format!("tick {i}/10: ")), "{tick}");
    }
    assert!(!s.log().contains("end of its budget"), "{}", s.log());
}

/// CPU seconds (user + system) a thread of `pid` named `name` has used, or
/// `None` while there is no such thread.
fn thread_cpu(pid: u32, name: &str) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // After "pid (comm) ": state is field 0, utime 11, stime 12.
        let f: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let ticks: u64 = f.get(11..13).map_or(0, |v| v.iter().filter_map(|x| x.parse::<u64>().ok()).sum());
        return Some(ticks as f64 / tick);
    }
    None
}

/// One client sending to job.sh for `secs`, with `window` messages in flight
/// (fewer than --max-queue). Returns how many were answered.
async fn send_jobs(url: String, secs: u64, window: usize) -> usize {
    let mut ws = connect(&url).await;
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    let (mut sent, mut answered) = (0, 0);
    while sent < window {
        ws.send(Message::text("go")).await.unwrap();
        sent += 1;
    }
    while answered < sent {
        assert_eq!(next_text(&mut ws).await, "job started");
        answered += 1;
        if std::time::Instant::now() < end {
            ws.send(Message::text("go")).await.unwrap();
            sent += 1;
        }
    }
    answered
}

/// The figure in docs/RELIABILITY.md: for 5 s, 4 clients send as fast as the
/// server answers to a script that leaves a 3 s job behind (so hundreds of
/// groups outlive their script at once). Every event is answered, every job
/// ends and is reaped. Prints `SUMMARY` with the CPU time of the thread that
/// watches the groups (`--nocapture`).
#[async_std::test]
async fn events_leaving_jobs_are_all_answered_and_reaped() {
    const CLIENTS: usize = 4;
    let s = start(&["--max-procs", "16"]);
    let pid = s.child.id();
    let clients: Vec<_> = (0..CLIENTS).map(|_| async_std::task::spawn(send_jobs(s.url("/job.sh"), 5, 8))).collect();
    let started = std::time::Instant::now();
    // The watcher starts with the first script.
    let watcher_before = thread_cpu(pid, "ws2http-groups").unwrap_or(0.0);
    let mut events = 0;
    for c in clients {
        events += c.await;
    }
    let took = started.elapsed().as_secs_f64();
    assert_nothing_left(&s, true).await;
    let watcher = thread_cpu(pid, "ws2http-groups").expect("the watcher thread") - watcher_before;
    println!(
        "SUMMARY processes: {events} events in {took:.1} s ({:.0}/s), each leaving a 3 s job: watcher thread \
         CPU {watcher:.2} s until every job was reaped; nothing left, no zombies",
        events as f64 / took
    );
    assert!(!s.log().contains("--max-queue"), "events backed up\n{}", s.log());
}
