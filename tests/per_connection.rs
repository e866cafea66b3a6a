//! One process per connection (`--per-connection`, docs/PROTOCOL.md "One
//! process per connection"): real sh and Python scripts in the websocketd
//! style, real WebSocket clients. Ordering is proved by making the script
//! wait for the client (an ack on its stdin) before it prints the next
//! line, never by timings.

mod common;
mod procfs;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_util::StreamExt;
use ws2http_test_suite::suite;

/// Writes a Python script into `dir`.
fn python_script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/usr/bin/env python3\nimport os, sys\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The close frame the server sends next (messages before it are returned too).
async fn close_code(ws: &mut Ws) -> (Vec<String>, Option<u16>) {
    let mut texts = Vec::new();
    loop {
        match next(ws).await {
            Message::Text(t) => texts.push(t.to_string()),
            Message::Close(frame) => return (texts, frame.map(|f| u16::from(f.code))),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The value of a metric in the control API's /metrics.
fn metric(s: &Server, name: &str) -> u64 {
    s.metric(name).unwrap_or_else(|| panic!("{name} in {}", get(&s.api("/metrics")).body))
}

const COUNTER: &str = r#"for i in 1 2 3; do echo "$i"; read ack || exit 1; done
printf 'last words'"#;

#[async_std::test]
async fn an_sh_counter_streams_line_by_line_and_its_exit_closes_with_1000() {
    let dir = cgi_bin(&[("count.sh", COUNTER)]);
    let s = Server::start_in(&dir, &["--per-connection", "/count.sh"]);
    let mut ws = connect(&s.url("/count.sh")).await;
    // Each line arrives while the script waits for our ack: it was sent as
    // it was printed, not when the script ended.
    for i in ["1", "2", "3"] {
        assert_eq!(next_text(&mut ws).await, i);
        ws.send(Message::text("ack")).await.unwrap();
    }
    let (rest, code) = close_code(&mut ws).await;
    assert_eq!(rest, ["last words"], "the last line, without a newline, comes before the close");
    assert_eq!(code, Some(1000));
    s.wait_log("closed: 1000");
    assert_eq!(metric(&s, "ws2http_connection_procs"), 0);
    assert!(metric(&s, "ws2http_connection_procs_started_total") >= 1);
}

#[suite("python")]
#[async_std::test]
async fn a_python_counter_and_greeter_stream_as_they_print() {
    require_suite("python");
    let dir = cgi_bin(&[]);
    python_script(
        &dir,
        "count.py",
        "for i in range(3):\n    print(i, flush=True)\n    sys.stdin.readline()\nsys.stdout.write('end')",
    );
    python_script(&dir, "greet.py", "for line in sys.stdin:\n    print('Hello, ' + line.strip() + '!', flush=True)");
    let s = Server::start_in(&dir, &["--per-connection", "*.py"]);
    let mut ws = connect(&s.url("/count.py")).await;
    for i in ["0", "1", "2"] {
        assert_eq!(next_text(&mut ws).await, i);
        ws.send(Message::text("ack")).await.unwrap();
    }
    assert_eq!(close_code(&mut ws).await, (vec!["end".to_owned()], Some(1000)));

    let mut ws = connect(&s.url("/greet.py")).await;
    for name in ["ann", "bob"] {
        ws.send(Message::text(name)).await.unwrap();
        assert_eq!(next_text(&mut ws).await, format!("Hello, {name}!"));
    }
}

#[async_std::test]
async fn a_while_read_greeter_and_a_background_writer_share_the_connection() {
    let greeter = r#"echo "hi $WS_CONNECTION_ID"; while read name; do echo "Hello, $name!"; done"#;
    let writer = r#"(while :; do echo tick; sleep 0.05; done) &
while read line; do echo "got $line"; done"#;
    let dir = cgi_bin(&[("greet.sh", greeter), ("writer.sh", writer)]);
    let s = Server::start_in(&dir, &["--per-connection", "/greet.sh,/writer.sh"]);
    let mut ws = connect(&s.url("/greet.sh")).await;
    let id = only_id(&s, "/greet.sh");
    assert_eq!(next_text(&mut ws).await, format!("hi {id}"));
    ws.send(Message::text("world")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "Hello, world!");
    ws.close(None).await.unwrap();
    wait_for("the greeter gone", || (metric(&s, "ws2http_connection_procs") == 0).then_some(()));

    let mut ws = connect(&s.url("/writer.sh")).await;
    assert_eq!(next_text(&mut ws).await, "tick");
    ws.send(Message::text("x")).await.unwrap();
    // Ticks keep coming while the foreground loop answers.
    loop {
        match next_text(&mut ws).await.as_str() {
            "tick" => continue,
            other => break assert_eq!(other, "got x"),
        }
    }
    ws.close(None).await.unwrap();
    // The background loop goes with its group: no process left.
    wait_for("the writer's group gone", || (metric(&s, "ws2http_connection_procs") == 0).then_some(()));
    let marker = format!("EVENTS_LOG={}", s.dir.join("events.log").display());
    wait_for("no process of the writer left", || {
        procfs::processes_with_env(&marker, s.child.id()).is_empty().then_some(())
    });
}

#[async_std::test]
async fn the_process_gets_the_cgi_and_ws_variables() {
    let dir = cgi_bin(&[("env.sh", "env")]);
    let s = Server::start_in(&dir, &["--per-connection", "/env.sh", "--api-token", "sekret"]);
    let mut ws = connect(&s.url("/env.sh/extra?q=1")).await;
    let (lines, code) = close_code(&mut ws).await;
    assert_eq!(code, Some(1000));
    let has = |l: &str| lines.iter().any(|x| x == l);
    assert!(lines.iter().any(|l| l.starts_with("WS_CONNECTION_ID=") && l.len() > 20), "{lines:?}");
    assert!(has(&format!("WS_API_URL=http://127.0.0.1:{}", s.api_port)), "{lines:?}");
    assert!(has("WS_API_TOKEN=sekret"), "{lines:?}");
    assert!(has("SCRIPT_NAME=/env.sh") && has("PATH_INFO=/extra") && has("QUERY_STRING=q=1"), "{lines:?}");
    assert!(has("GATEWAY_INTERFACE=CGI/1.1") && has("WS_EVENT=open"), "{lines:?}");
}

/// The script records, in order: stdin's end, then each signal it traps.
const TRAPPER: &str = r#"trap 'echo INT >> "$EVENTS_LOG"' INT
trap 'echo TERM >> "$EVENTS_LOG"' TERM
echo ready
while read line; do :; done
echo eof >> "$EVENTS_LOG"
while :; do sleep 1 & wait; done"#;

#[async_std::test]
async fn a_disconnect_closes_stdin_then_sends_sigint_sigterm_sigkill_in_order() {
    let dir = cgi_bin(&[("trap.sh", TRAPPER)]);
    let s = Server::start_in(&dir, &["--per-connection", "/trap.sh", "--close-grace", "0.2"]);
    let killed = metric(&s, "ws2http_connection_procs_killed_total");
    let mut ws = connect(&s.url("/trap.sh")).await;
    assert_eq!(next_text(&mut ws).await, "ready");
    ws.close(None).await.unwrap();
    s.wait_log("process killed by signal 9");
    assert_eq!(s.events(), ["eof", "INT", "TERM"]);
    assert_eq!(metric(&s, "ws2http_connection_procs_killed_total"), killed + 1);
    assert_eq!(metric(&s, "ws2http_connection_procs"), 0);
}

#[async_std::test]
async fn a_process_that_ends_on_stdin_eof_gets_no_signal() {
    let dir = cgi_bin(&[("cat.sh", "cat")]);
    let s = Server::start_in(&dir, &["--per-connection", "/cat.sh"]);
    let mut ws = connect(&s.url("/cat.sh")).await;
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "one");
    ws.close(None).await.unwrap();
    s.wait_log("process exited with status 0");
    assert!(!s.log().contains("SIGINT"), "{}", s.log());
}

#[async_std::test]
async fn max_connection_procs_refuses_with_429_and_frees_the_slot_on_exit() {
    let dir = cgi_bin(&[("once.sh", r#"read l; echo "got $l""#), ("cat.sh", "cat")]);
    let s = Server::start_in(&dir, &["--per-connection", "*", "--max-connection-procs", "1"]);
    let mut first = connect(&s.url("/once.sh")).await;
    let refused = raw_http(s.port, &upgrade_request("/cat.sh", ""));
    assert_eq!(status_of(&refused), 429, "{refused}");
    s.wait_log("--max-connection-procs");
    // The process exits by itself (the client never closes): its slot is free.
    first.send(Message::text("x")).await.unwrap();
    assert_eq!(close_code(&mut first).await, (vec!["got x".to_owned()], Some(1000)));
    wait_for("the slot back", || (metric(&s, "ws2http_connection_procs") == 0).then_some(()));
    let mut again = connect(&s.url("/cat.sh")).await;
    again.send(Message::text("ok")).await.unwrap();
    assert_eq!(next_text(&mut again).await, "ok");
}

/// The script exits at once; its background job holds stdout (and prints
/// later): the slot stays taken until the job is gone too.
#[async_std::test]
async fn a_background_job_holding_stdout_keeps_the_slot() {
    let dir = cgi_bin(&[("bg.sh", "echo started\n(sleep 300; echo late) &"), ("cat.sh", "cat")]);
    let s = Server::start_in(&dir, &["--per-connection", "*", "--max-connection-procs", "1", "--close-grace", "0.1"]);
    let mut first = connect(&s.url("/bg.sh")).await;
    assert_eq!(next_text(&mut first).await, "started");
    s.wait_log("process exited with status 0");
    let refused = raw_http(s.port, &upgrade_request("/cat.sh", ""));
    assert_eq!(status_of(&refused), 429, "the job still runs: {refused}");
    assert_eq!(metric(&s, "ws2http_connection_procs"), 1);
    // The client leaves: the job goes with its group, and the slot is free.
    first.close(None).await.unwrap();
    wait_for("the slot back", || (metric(&s, "ws2http_connection_procs") == 0).then_some(()));
    let mut again = connect(&s.url("/cat.sh")).await;
    again.send(Message::text("ok")).await.unwrap();
    assert_eq!(next_text(&mut again).await, "ok");
}

/// The script ends on stdin's end; what holds its stdout left its group
/// (`setsid`): nothing of the group is left to signal, so nothing is sent,
/// logged or counted as killed, and the connection still leaves.
#[async_std::test]
async fn no_signal_is_logged_or_counted_once_the_group_is_over() {
    let dir = cgi_bin(&[("escape.sh", "setsid sleep 300 &\necho ready\nwhile read l; do :; done")]);
    let s = Server::start_in(&dir, &["--per-connection", "/escape.sh", "--close-grace", "0.1"]);
    let killed = metric(&s, "ws2http_connection_procs_killed_total");
    let mut ws = connect(&s.url("/escape.sh")).await;
    assert_eq!(next_text(&mut ws).await, "ready");
    ws.close(None).await.unwrap();
    s.wait_log("process exited with status 0");
    // Counted once the connection has left the hub, after its last step.
    wait_for("the connection gone", || (metric(&s, "ws2http_connections_closed_total") == 1).then_some(()));
    assert_eq!(metric(&s, "ws2http_connection_procs"), 0);
    let marker = format!("EVENTS_LOG={}", s.dir.join("events.log").display());
    let escaped = procfs::processes_with_env(&marker, s.child.id());
    for (pid, _) in &escaped {
        // SAFETY: kill(2) on the test's own leftover `sleep`.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    assert_eq!(escaped.len(), 1, "the escaped sleep: {escaped:?}");
    assert!(!s.log().contains("SIGKILL"), "{}", s.log());
    assert_eq!(metric(&s, "ws2http_connection_procs_killed_total"), killed);
}

#[async_std::test]
async fn a_process_that_cannot_start_refuses_the_handshake_with_500() {
    let dir = cgi_bin(&[]);
    std::fs::write(dir.join("noshebang.sh"), "echo hi\n").unwrap();
    std::fs::set_permissions(dir.join("noshebang.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = Server::start_in(&dir, &["--per-connection", "*"]);
    let refused = raw_http(s.port, &upgrade_request("/noshebang.sh", ""));
    assert_eq!(status_of(&refused), 500, "{refused}");
    s.wait_log("the per-connection process did not start");
}

const SPEAKER: &str = r#"echo "@join lobby"
echo "@@escaped"
echo "@send $WS_CONNECTION_ID direct"
echo plain
while read l; do echo "re $l"; done"#;

#[async_std::test]
async fn directives_are_read_only_behind_the_switch() {
    let dir = cgi_bin(&[("speak.sh", SPEAKER)]);
    let s = Server::start_in(&dir, &["--per-connection", "/speak.sh"]);
    let mut ws = connect(&s.url("/speak.sh")).await;
    let id = only_id(&s, "/speak.sh");
    for line in ["@join lobby", "@@escaped", &format!("@send {id} direct"), "plain"] {
        assert_eq!(next_text(&mut ws).await, line, "verbatim without --per-connection-directives");
    }
    drop(ws);
    drop(s);

    let s = Server::start_in(&dir, &["--per-connection", "/speak.sh", "--per-connection-directives"]);
    let mut ws = connect(&s.url("/speak.sh")).await;
    for line in ["@escaped", "direct", "plain"] {
        assert_eq!(next_text(&mut ws).await, line);
    }
    // It joined the room: a room message reaches it.
    let r = post(&s.api("/rooms/lobby"), "to the room");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(next_text(&mut ws).await, "to the room");
}

#[async_std::test]
async fn the_control_api_pushes_to_a_per_connection_client() {
    let dir = cgi_bin(&[("cat.sh", "cat")]);
    let s = Server::start_in(&dir, &["--per-connection", "/cat.sh"]);
    let mut ws = connect(&s.url("/cat.sh")).await;
    let id = only_id(&s, "/cat.sh");
    let r = post(&s.api(&format!("/send/{id}")), "pushed");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(next_text(&mut ws).await, "pushed");
    ws.send(Message::text("echoed")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "echoed");
}

#[async_std::test]
async fn binary_mode_passes_bytes_both_ways_without_newlines() {
    let dir = cgi_bin(&[("cat.sh", "cat")]);
    let s = Server::start_in(&dir, &["--per-connection", "/cat.sh", "--per-connection-binary"]);
    let mut ws = connect(&s.url("/cat.sh")).await;
    let bytes = vec![0u8, 1, 2, 255, b'\n', 7];
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    let mut got = Vec::new();
    while got.len() < bytes.len() {
        match next(&mut ws).await {
            Message::Binary(b) => got.extend_from_slice(&b),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    assert_eq!(got, bytes, "no newline added, none split on");
}

#[async_std::test]
async fn endpoints_not_selected_keep_one_process_per_event() {
    let dir =
        cgi_bin(&[("cat.sh", "cat"), ("event.sh", r#"if [ "$WS_EVENT" = message ]; then echo "event $(cat)"; fi"#)]);
    let s = Server::start_in(&dir, &["--per-connection", "/cat.sh"]);
    let mut ws = connect(&s.url("/event.sh")).await;
    ws.send(Message::text("a")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "event a");
    assert_eq!(metric(&s, "ws2http_connection_procs_started_total"), 0);
}

#[async_std::test]
async fn shutdown_ends_every_per_connection_process() {
    let dir = cgi_bin(&[("trap.sh", TRAPPER)]);
    let mut s = Server::start_in(&dir, &["--per-connection", "/trap.sh", "--close-grace", "0.1"]);
    let mut ws = connect(&s.url("/trap.sh")).await;
    assert_eq!(next_text(&mut ws).await, "ready");
    let status = s.terminate();
    assert!(status.success(), "{status:?}\n{}", s.log());
    let marker = format!("EVENTS_LOG={}", s.dir.join("events.log").display());
    assert!(procfs::processes_with_env(&marker, s.child.id()).is_empty(), "a process outlived the server");
    // The client saw the server's close, 1001.
    let (_, code) = close_code(&mut ws).await;
    assert_eq!(code, Some(u16::from(CloseCode::Away)));
    let _ = ws.next().await;
}

#[async_std::test]
async fn what_the_process_writes_to_stderr_is_logged_line_by_line() {
    let script = "echo 'to the log' >&2; echo hi; read ack; printf 'no newline' >&2";
    let dir = cgi_bin(&[("err.sh", script)]);
    let s = Server::start_in(&dir, &["--per-connection", "/err.sh"]);
    let mut ws = connect(&s.url("/err.sh")).await;
    assert_eq!(next_text(&mut ws).await, "hi");
    ws.send(Message::text("ack")).await.unwrap();
    let (rest, code) = close_code(&mut ws).await;
    assert!(rest.is_empty(), "stderr never reaches the client: {rest:?}");
    assert_eq!(code, Some(1000));
    s.wait_log("/err.sh process: stderr: to the log");
    // The last line, without a newline, is logged too.
    s.wait_log("/err.sh process: stderr: no newline");
}

/// Ignores SIGINT and SIGTERM (so does its `sleep`) and never reads stdin:
/// only SIGKILL ends it.
const DEAF: &str = "trap '' INT TERM\necho up\nsleep 1000";

/// How the connection of a process that does not read its stdin ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    TcpDropped,
    CloseFrame,
    ApiDelete,
    ServerShutdown,
}

/// A client fills the stdin of a process that never reads it (a write to
/// stdin stays pending), then its connection ends: the process is killed
/// after the close escalation (three graces), not after `--timeout` (60 s,
/// far beyond what `wait_for` waits).
async fn deaf_process_goes_with_its_connection(ending: Ending) {
    let dir = cgi_bin(&[("deaf.sh", DEAF)]);
    let mut s = Server::start_in(&dir, &["--per-connection", "/deaf.sh", "--close-grace", "0.1", "--timeout", "60"]);
    let mut ws = connect(&s.url("/deaf.sh")).await;
    assert_eq!(next_text(&mut ws).await, "up");
    let id = only_id(&s, "/deaf.sh");
    for _ in 0..60 {
        ws.send(Message::text("x".repeat(4000))).await.unwrap();
    }
    let marker = format!("EVENTS_LOG={}", s.dir.join("events.log").display());
    assert!(!procfs::processes_with_env(&marker, s.child.id()).is_empty(), "the process runs");
    match ending {
        Ending::TcpDropped => drop(ws),
        Ending::CloseFrame => ws.close(None).await.unwrap(),
        Ending::ApiDelete => {
            let r = api("DELETE", &s.api(&format!("/connections/{id}")), None, None, b"");
            assert!(r.status < 300, "{} {}", r.status, r.body);
        }
        Ending::ServerShutdown => {
            let status = s.terminate();
            assert!(status.success(), "{status:?}\n{}", s.log());
        }
    }
    wait_for(&format!("the deaf process killed ({ending:?})"), || {
        procfs::processes_with_env(&marker, s.child.id()).is_empty().then_some(())
    });
    if !matches!(ending, Ending::ServerShutdown) {
        wait_for("the slot back", || (metric(&s, "ws2http_connection_procs") == 0).then_some(()));
        assert_eq!(get(&s.api("/connections")).json(), serde_json::json!([]));
    }
    assert!(!s.log().contains("does not read its input"), "ended by the stall timer:\n{}", s.log());
    assert!(!s.log().contains("did not finish in time"), "{}", s.log());
}

#[async_std::test]
async fn a_process_not_reading_stdin_is_killed_when_its_client_drops_tcp() {
    deaf_process_goes_with_its_connection(Ending::TcpDropped).await;
}

#[async_std::test]
async fn a_process_not_reading_stdin_is_killed_when_its_client_closes() {
    deaf_process_goes_with_its_connection(Ending::CloseFrame).await;
}

#[async_std::test]
async fn a_process_not_reading_stdin_is_killed_on_delete_connection() {
    deaf_process_goes_with_its_connection(Ending::ApiDelete).await;
}

#[async_std::test]
async fn a_process_not_reading_stdin_is_killed_at_shutdown() {
    deaf_process_goes_with_its_connection(Ending::ServerShutdown).await;
}

/// A printer that never pauses and a client that reads nothing for a
/// while: the process waits for its reader (stdout not read, then lines
/// held back) instead of the client being cut off for `--max-outgoing`
/// (1024 messages): each read of its stdout holds about 1500 of these lines.
#[async_std::test]
async fn a_fast_printer_waits_for_a_client_that_does_not_read() {
    let dir = cgi_bin(&[("yes.sh", "exec yes 0123456789")]);
    let s = Server::start_in(&dir, &["--per-connection", "/yes.sh"]);
    let mut ws = connect(&s.url("/yes.sh")).await;
    assert_eq!(next_text(&mut ws).await, "0123456789");
    // Not reading: the server's queue for us and the socket's buffers fill.
    async_std::task::sleep(std::time::Duration::from_secs(3)).await;
    for i in 0..10_000 {
        match next(&mut ws).await {
            Message::Text(t) => assert_eq!(t.as_str(), "0123456789", "message {i}"),
            other => panic!("message {i}: {other:?}\n{}", s.log()),
        }
    }
    assert!(!s.log().contains("slow consumer"), "{}", s.log());
}

/// Runs the binary to completion (it must refuse to start): stderr.
fn refused(args: &[&str]) -> String {
    let out = ws2http()
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("WS2HTTP_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ws2http");
    assert!(!out.status.success(), "it started: {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn settings_that_would_select_nothing_or_starve_stdin_are_refused_or_warned() {
    let dir = cgi_bin(&[("cat.sh", "cat")]);
    let cgi = dir.to_str().unwrap();
    // An empty pattern selected nothing, without a word.
    for empty in ["", "/cat.sh,,/x"] {
        let err = refused(&["--cgi-bin", cgi, "--per-connection", empty]);
        assert!(err.contains("--per-connection '': an empty pattern selects nothing"), "{empty:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // --events without message dropped every message before the process's stdin.
    let err = refused(&["--cgi-bin", cgi, "--per-connection", "/cat.sh", "--events", "open,close"]);
    assert!(err.contains("--per-connection needs message in --events"), "{err}");
    // A pattern only a backend's paths match: a warning at start-up.
    let s =
        Server::start_in(&dir, &["--per-connection", "/app/*,/cat.sh", "--backend-url", "/app=http://127.0.0.1:9/app"]);
    s.wait_log("--per-connection /app/*: selects nothing: /app is served by a FastCGI or HTTP backend");
    assert!(!s.log().contains("--per-connection /cat.sh:"), "{}", s.log());
}

/// A process that never reads its stdin, a client that keeps sending: the
/// write makes no progress for `--timeout`, the connection closes with 1011.
#[async_std::test]
async fn a_process_that_never_reads_stdin_closes_the_connection_with_1011() {
    let dir = cgi_bin(&[("deaf.sh", "echo up\nsleep 1000")]);
    let s = Server::start_in(&dir, &["--per-connection", "/deaf.sh", "--timeout", "1", "--close-grace", "0.1"]);
    let mut ws = connect(&s.url("/deaf.sh")).await;
    assert_eq!(next_text(&mut ws).await, "up");
    for _ in 0..60 {
        ws.send(Message::text("x".repeat(4000))).await.unwrap();
    }
    assert_eq!(close_code(&mut ws).await, (vec![], Some(1011)));
    s.wait_log("has not read its stdin for 1s (--timeout); closing (1011)");
    s.wait_log(r#"closed: 1011 "the process does not read its input" (script)"#);
    wait_for("the process gone", || (metric(&s, "ws2http_connection_procs") == 0).then_some(()));
}

/// A line over `--max-message` is dropped with one log line; the lines
/// after it, and the connection, go on.
#[async_std::test]
async fn an_over_long_line_is_dropped_with_one_log_line_and_the_connection_goes_on() {
    let script = "echo first\nhead -c 5000 /dev/zero | tr '\\0' a\necho\necho after\ncat";
    let dir = cgi_bin(&[("long.sh", script)]);
    let s = Server::start_in(&dir, &["--per-connection", "/long.sh", "--max-message", "1000"]);
    let mut ws = connect(&s.url("/long.sh")).await;
    assert_eq!(next_text(&mut ws).await, "first");
    assert_eq!(next_text(&mut ws).await, "after", "the long line is not sent, not even in part");
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still here");
    assert_eq!(s.log().matches("a line over --max-message (1000 bytes); dropped").count(), 1, "{}", s.log());
}
