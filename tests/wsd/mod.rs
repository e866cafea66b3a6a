//! Runs the real `websocketd` (Debian package) and ws2http started as
//! `websocketd` (a symlink of that name in a scratch directory) with the
//! same arguments, in the same directory, each on its own free loopback
//! port, so a test can ask both the same question and compare what a
//! client observes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{find_program, require_suite, scratch, wait_for};

/// One running server.
pub struct Side {
    pub name: &'static str,
    pub port: u16,
    child: Child,
    stderr: PathBuf,
}

impl Side {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Side {
    /// SIGTERM first, so each server ends its scripts' process groups (a
    /// SIGKILL would leave them running for the rest of the test run);
    /// SIGKILL only for one that does not exit within 5 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid we spawned and still own (not reaped).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both servers, started with the same arguments.
pub struct Pair {
    pub real: Side,
    pub ours: Side,
}

impl Pair {
    pub fn both(&self) -> [&Side; 2] {
        [&self.real, &self.ours]
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// ws2http under the name `websocketd`.
pub fn ours_as_websocketd() -> PathBuf {
    let dir = scratch().join("bin");
    std::fs::create_dir_all(&dir).expect("bin dir");
    let link = dir.join("websocketd");
    let bin = std::env::var_os("WS2HTTP_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ws2http").into());
    std::os::unix::fs::symlink(bin, &link).expect("symlink");
    link
}

/// The real websocketd (suite "bench" installs it; missing, the test fails
/// with the command that installs it).
pub fn real_websocketd() -> PathBuf {
    require_suite("bench");
    find_program("websocketd").expect("websocketd in PATH")
}

fn start_one(name: &'static str, program: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Side {
    let port = free_port();
    let stderr = scratch().join(format!("{name}.log"));
    let mut cmd = Command::new(program);
    cmd.arg(format!("--port={port}")).arg("--address=127.0.0.1").args(args).current_dir(dir);
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&stderr).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SIGINT and SIGQUIT as a terminal would have them, whoever started
    // the suite: a shell runs a background job (`./test &`) with both
    // ignored, websocketd (unlike ws2http, which resets every signal for
    // its scripts) passes that on, and a script's `trap ... INT` is then
    // refused: the lifetime tests' SIGINT would never arrive.
    use std::os::unix::process::CommandExt;
    // SAFETY: only signal(2), async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut side = Side { name, port, child, stderr };
    wait_for(&format!("{name} listening on {port}"), || {
        if let Ok(Some(status)) = side.child.try_wait() {
            panic!("{name} exited with {status}: {}", side.log());
        }
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    side
}

/// Starts both in `dir` with `args` (after `--port` and `--address=127.0.0.1`).
pub fn start(dir: &Path, args: &[&str]) -> Pair {
    start_env(dir, args, &[])
}

pub fn start_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Pair {
    let real = start_one("websocketd", &real_websocketd(), dir, args, env);
    let ours = start_one("ws2http", &ours_as_websocketd(), dir, args, env);
    Pair { real, ours }
}

/// A directory of `#!/bin/sh` scripts (name, body); names ending in `/`
/// are directories, a body starting with `noexec:` makes a plain file.
pub fn scripts(files: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch().join("scripts");
    std::fs::create_dir_all(&dir).expect("scripts dir");
    for (name, body) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        let (mode, text) = match body.strip_prefix("noexec:") {
            Some(t) => (0o644, t.to_owned()),
            None => (0o755, format!("#!/bin/sh\n{body}\n")),
        };
        std::fs::write(&path, text).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    dir.canonicalize().expect("scripts dir")
}

/// A response: status, head lines (lowercased names), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// Values of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// Sends `request` (its `{port}` replaced) and reads the answer head; a
/// `101` returns the open stream, anything else its body (by
/// Content-Length, or to the end).
pub fn exchange(port: u16, request: &str) -> (Answer, Option<TcpStream>) {
    exchange_at("127.0.0.1", port, request)
}

/// [`exchange`] with the server at `ip` (`127.0.0.1`, `::1`).
pub fn exchange_at(ip: &str, port: u16, request: &str) -> (Answer, Option<TcpStream>) {
    let mut s = TcpStream::connect((ip, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(request.replace("{port}", &port.to_string()).as_bytes()).expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut answer = Answer { status, head, body: Vec::new() };
    if status == 101 {
        return (answer, Some(s));
    }
    match answer.header("content-length").first().and_then(|l| l.parse::<usize>().ok()) {
        Some(n) => {
            answer.body = vec![0; n];
            s.read_exact(&mut answer.body).expect("body");
        }
        None => {
            let _ = s.read_to_end(&mut answer.body);
            if answer.header("transfer-encoding").iter().any(|t| t.eq_ignore_ascii_case("chunked")) {
                answer.body = dechunk(&answer.body);
            }
        }
    }
    (answer, None)
}

/// A whole chunked body, decoded (extensions and trailers ignored).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 4 + size..];
    }
    out
}

/// An upgrade request for `path` with extra head lines (each ending `\r\n`).
pub fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{{port}}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A plain GET for `path`.
pub fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{{port}}\r\nConnection: close\r\n\r\n")
}

/// How the server ended a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// A close frame with this code.
    Close(u16),
    /// TCP closed without a close frame (a browser reports 1006).
    Dropped,
    /// Still open after `until` was seen.
    Open,
}

/// Text messages until one equals `until` (included) or the connection ends.
pub fn texts(s: &mut TcpStream, until: &str) -> (Vec<String>, End) {
    let mut out = Vec::new();
    loop {
        match crate::rawws::read_frame(s) {
            Some((crate::rawws::TEXT, p)) => {
                let t = String::from_utf8(p).expect("UTF-8");
                let last = t == until;
                out.push(t);
                if last {
                    return (out, End::Open);
                }
            }
            Some((crate::rawws::CLOSE, p)) => {
                let code = if p.len() >= 2 { u16::from_be_bytes([p[0], p[1]]) } else { 1005 };
                return (out, End::Close(code));
            }
            Some(_) => {}
            None => return (out, End::Dropped),
        }
    }
}

/// Opens `path` on both and collects the text messages until `until`.
pub fn messages(pair: &Pair, path: &str, until: &str) -> [Vec<String>; 2] {
    pair.both().map(|side| {
        let (answer, stream) = exchange(side.port, &upgrade(path, ""));
        let mut s = stream.unwrap_or_else(|| panic!("{} {path}: {answer:?}\n{}", side.name, side.log()));
        texts(&mut s, until).0
    })
}
