//! `ws2http connect URL` against the real server: piped echo, a chat
//! between two clients, a refused handshake, a close code from a script,
//! binary messages, and the refusal of wss://.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn connect_cmd(url: &str, extra: &[&str]) -> Command {
    let bin = std::env::var_os("WS2HTTP_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ws2http").into());
    let mut cmd = Command::new(bin);
    cmd.arg("connect").arg(url).args(extra);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `connect` with `input` on stdin until it exits (at most 30 s).
fn run(url: &str, extra: &[&str], input: &str) -> Ran {
    let mut child = connect_cmd(url, extra).spawn().expect("start connect");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    let out = wait_output(child);
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn wait_output(mut child: Child) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("connect did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// What a piped run prints when it closes after the default --linger.
const LINGERED: &str = "stdin ended; closing after 2 s without a message (--linger)\n";

fn demo() -> Server {
    Server::start_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("cgi-bin"), &[])
}

#[test]
fn piped_lines_come_back_from_echo() {
    let s = demo();
    let r = run(&s.url("/echo.sh"), &[], "hello\nsecond line\n");
    assert_eq!(r.stdout, "hello\nsecond line\n", "{}", r.stderr);
    assert_eq!(r.stderr, format!("{LINGERED}closed: 1000\n"));
    assert_eq!(r.code, Some(0));
    s.wait_log("/echo.sh closed: 1000 \"\" (client)");
}

#[test]
fn binary_messages_print_as_hex() {
    let s = Server::start(&[]);
    let r = run(&s.url("/mirror.sh"), &[], "@binary AAH/\n");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("id "), "{}", r.stdout);
    assert_eq!(lines[1..], ["[binary 3 bytes] 0001ff"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn a_close_code_from_the_script_is_shown_and_fails() {
    let s = Server::start(&[]);
    // mirror.sh prints its message: the directive closes the connection.
    let r = run(&s.url("/mirror.sh"), &["--linger", "30"], "@close 4001 go away\n");
    // One form for every close code; only the exit status differs.
    assert_eq!(r.stderr, "closed: 4001 go away\n");
    assert_eq!(r.code, Some(1));
    let r = run(&s.url("/mirror.sh"), &["--linger", "30"], "@close 1000 done\n");
    assert_eq!(r.stderr, "closed: 1000 done\n");
    assert_eq!(r.code, Some(0));
}

#[test]
fn a_refused_handshake_prints_its_status_and_body() {
    let s = demo();
    let url = s.url("/echo.sh");
    let r = run(&url, &["--origin", "http://evil.example"], "");
    assert_eq!(
        r.stderr,
        format!(
            "ws2http connect: {url}: handshake refused: 403 Forbidden: cross-origin WebSocket handshakes are \
             not allowed here\n"
        )
    );
    assert_eq!(r.code, Some(1));
    // A same-origin page (and a header given with -H) is accepted.
    let origin = format!("http://127.0.0.1:{}", s.port);
    let r = run(&url, &["--origin", &origin, "-H", "X-Test: 1"], "ok\n");
    assert_eq!((r.stdout.as_str(), r.code), ("ok\n", Some(0)), "{}", r.stderr);
    let missing = s.url("/nope.sh");
    let r = run(&missing, &[], "");
    assert!(
        r.stderr.starts_with(&format!("ws2http connect: {missing}: handshake refused: 404 Not Found")),
        "{}",
        r.stderr
    );
    assert_eq!(r.code, Some(1));
}

#[test]
fn usage_errors() {
    let r = run("http://127.0.0.1:1/", &[], "");
    assert_eq!(
        r.stderr,
        "ws2http connect: http://127.0.0.1:1/: expected a ws:// or wss:// URL, e.g. ws://127.0.0.1:8080/echo.sh\n"
    );
    assert_eq!(r.code, Some(2));
    let r = run("ws://127.0.0.1:1/", &["-H", "no colon"], "");
    assert_eq!(r.stderr, "ws2http connect: -H \"no colon\": expected 'Name: value', e.g. -H 'Cookie: sid=1'\n");
    assert_eq!(r.code, Some(2));
}

/// A running `connect` whose output lines arrive on a channel.
struct Client {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Client {
    fn start(url: &str) -> Client {
        let mut child = connect_cmd(url, &[]).spawn().expect("start connect");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Client { child, lines }
    }

    fn expect(&self, wanted: &str) {
        let line = self.lines.recv_timeout(Duration::from_secs(15)).expect("a line");
        assert_eq!(line, wanted);
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write");
    }

    /// Ends stdin; returns the exit status and stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        drop(self.child.stdin.take());
        let out = wait_output(self.child);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn two_clients_chat() {
    let s = demo();
    let mut alice = Client::start(&s.url("/chat.sh/den?nick=alice"));
    alice.expect("* welcome to den, alice: type a line to talk to everyone in the room");
    let mut bob = Client::start(&s.url("/chat.sh/den?nick=bob"));
    bob.expect("* welcome to den, bob: type a line to talk to everyone in the room");
    alice.expect("* bob joined");
    bob.say("hi alice");
    alice.expect("bob: hi alice");
    bob.expect("bob: hi alice");
    alice.say("hi bob");
    bob.expect("alice: hi bob");
    assert_eq!(bob.finish(), (Some(0), format!("{LINGERED}closed: 1000\n")));
    alice.expect("alice: hi bob");
    alice.expect("* bob left");
    assert_eq!(alice.finish(), (Some(0), format!("{LINGERED}closed: 1000\n")));
}

/// Runs `connect` with raw bytes on stdin.
fn run_bytes(url: &str, extra: &[&str], input: &[u8]) -> Ran {
    let mut child = connect_cmd(url, extra).spawn().expect("start connect");
    child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    let out = wait_output(child);
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_line_that_is_not_utf8_fails_clearly_instead_of_ending_quietly() {
    let s = demo();
    let r = run_bytes(&s.url("/echo.sh"), &["--linger", "30"], b"ok1\n\xff\xfe\nok2\n");
    assert_eq!(r.stdout, "ok1\n", "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "ws2http connect: stdin line 2 is not UTF-8 text; closing without sending it or anything after it \
         (each line is sent as a text message)\nclosed: 1000\n"
    );
    assert_eq!(r.code, Some(1));
    s.wait_log("/echo.sh closed: 1000 \"\" (client)");
}

#[test]
fn closing_after_the_linger_says_so() {
    // count.sh prints one number a second: a linger shorter than that closes
    // before the rest arrive, and the client must say why it stopped.
    let s = demo();
    let r = run(&s.url("/count.sh"), &["--linger", "0.2"], "go\n");
    assert!(r.stdout.starts_with("send any message and I will count to 10\n"), "{}", r.stdout);
    assert_eq!(r.stderr, "stdin ended; closing after 0.2 s without a message (--linger)\nclosed: 1000\n");
    assert_eq!(r.code, Some(0));
}
