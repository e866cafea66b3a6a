//! Running a file's blocks in order against the binary under test. A
//! command that starts a server starts a *scenario*: the later blocks of the
//! file talk to that server (their 8080/8081 rewritten to its ports) until
//! the next server starts. Background commands and WebSocket clients of a
//! scenario live until it ends.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common;
use crate::matching::{line_matches, loosely_matches};
use crate::parse::{Block, Cmd, Step};

/// How long one shown line may take to appear, and one command to finish.
const LINE_WAIT: Duration = Duration::from_secs(20);
/// A background command's lines may wait for the blocks that follow it.
const BACKGROUND_WAIT: Duration = Duration::from_secs(120);
/// `ws2http` subcommands and flags that do not start a server.
const NOT_SERVER: &[&str] = &["try", "connect", "completions", "man", "help", "--help", "-h", "--version", "-V"];

/// Set for every command run: a doc command that runs the tests again (the
/// harness included) is refused instead of recursing.
pub const NESTED: &str = "WS2HTTP_DOC_COMMAND";

pub struct Ctx {
    pub root: PathBuf,
    /// A directory holding `ws2http` (the binary under test), first on PATH.
    pub bin_dir: PathBuf,
}

struct Server {
    child: Child,
    port: u16,
    api_port: u16,
    stderr: PathBuf,
}

struct Background {
    name: String,
    child: Child,
    driver: JoinHandle<(Option<ChildStdin>, Result<(), String>)>,
}

#[derive(Default)]
pub struct Scenario {
    server: Option<Server>,
    background: Vec<Background>,
    clients: Vec<JoinHandle<()>>,
    /// `NAME=value` lines so far: they hold for the rest of the file, as in
    /// the reader's shell.
    env: Vec<(String, String)>,
}

enum Out {
    Stdout(String),
    Stderr(String),
    Eof,
}

impl Scenario {
    /// Ends the scenario: background commands must have shown their lines.
    pub fn finish(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for mut bg in self.background.drain(..) {
            let (stdin, result) = bg.driver.join().unwrap_or((None, Err("its driver panicked".into())));
            drop(stdin);
            if let Err(e) = result {
                errors.push(format!("{} (background): {e}", bg.name));
            }
            if wait_exit(&mut bg.child, LINE_WAIT).is_none() {
                kill_group(&mut bg.child);
            }
        }
        if let Some(mut s) = self.server.take() {
            // SIGTERM: it closes its connections and stops its scripts' jobs.
            // SAFETY: kill(2) on our own child process.
            unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
            if wait_exit(&mut s.child, LINE_WAIT).is_none() {
                kill_group(&mut s.child);
            }
        }
        // The server is gone, so every client's connection has ended.
        self.clients.drain(..).for_each(|c| drop(c.join()));
        errors
    }

    fn ports(&self, what: &str) -> Result<(u16, u16), String> {
        let s = self.server.as_ref().ok_or_else(|| {
            format!("{what} needs a server, and no block before it started one: add <!-- doc-test: server ARGS -->")
        })?;
        Ok((s.port, s.api_port))
    }

    /// `8080`/`8081` in a command or its output → the scenario's ports.
    fn rewrite(&self, text: &str, what: &str) -> Result<String, String> {
        if !uses_port(text, "8080") && !uses_port(text, "8081") {
            return Ok(text.to_owned());
        }
        let (port, api) = self.ports(what)?;
        Ok(replace_port(&replace_port(text, "8080", &port.to_string()), "8081", &api.to_string()))
    }

    fn start_server(&mut self, ctx: &Ctx, text: &str, env: &[(String, String)]) -> Result<Vec<String>, String> {
        let errors = self.finish();
        let text = replace_port(&replace_port(text, "8080", "0"), "8081", "0");
        let stderr = std::env::temp_dir().join(format!("ws2http-doc-server-{}-{}.log", std::process::id(), unique()));
        let mut child = shell(ctx, &format!("exec {text}"), env)
            .env("WS2HTTP_LISTEN", "127.0.0.1:0")
            .env("WS2HTTP_API_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("start {text:?}: {e}"))?;
        let lines = lines_of(child.stdout.take().expect("piped"), None::<std::fs::File>);
        let ports = startup_port(&lines, "ws2http: listening on http://127.0.0.1:")
            .and_then(|p| Ok((p, startup_port(&lines, "ws2http: control API on http://127.0.0.1:")?)));
        let (port, api_port) = ports.map_err(|e| {
            kill_group(&mut child);
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            format!("the server `{text}` did not start: {e}; its stderr:\n{log}")
        })?;
        self.server = Some(Server { child, port, api_port, stderr });
        Ok(errors)
    }

    /// What a console block shows a server print as it starts: each line is
    /// one of its start-up lines (ports as started) or a line of its log.
    fn check_start_output(&self, shown: &[String]) -> Result<(), String> {
        let Some(s) = &self.server else { return Ok(()) };
        let started = [
            format!("ws2http: listening on http://127.0.0.1:{}", s.port),
            format!("ws2http: control API on http://127.0.0.1:{}", s.api_port),
        ];
        let log = std::fs::read_to_string(&s.stderr).unwrap_or_default();
        for want in shown.iter().filter(|l| !l.trim().is_empty()) {
            let want = self.rewrite(want, "start-up output")?;
            if !started.iter().map(String::as_str).chain(log.lines()).any(|l| line_matches(&want, l)) {
                return Err(format!("the server did not print {want:?} as it started; its log:\n{log}"));
            }
        }
        Ok(())
    }

    /// A WebSocket client on `path`, kept open (and read) until the
    /// scenario ends; returns its connection id.
    fn connect(&mut self, path: &str) -> Result<String, String> {
        let (port, api) = self.ports(&format!("connection {path}"))?;
        let listing = format!("http://127.0.0.1:{api}/connections");
        let before = common::conn_ids(&listing);
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (tx, rx) = channel();
        self.clients.push(std::thread::spawn(move || {
            async_std::task::block_on(async {
                use futures_util::StreamExt;
                let mut ws = common::connect(&url).await;
                let _ = tx.send(());
                while let Some(Ok(_)) = ws.next().await {}
            })
        }));
        rx.recv_timeout(LINE_WAIT).map_err(|_| format!("could not connect a client to {path}"))?;
        let id = common::wait_for("the new connection's id", || {
            common::conn_ids(&listing).into_iter().find(|id| !before.contains(id))
        });
        Ok(id)
    }
}

/// Runs one block's steps in `sc`. Errors name the command.
pub fn run_block(ctx: &Ctx, sc: &mut Scenario, b: &Block, steps: Vec<Step>) -> Result<Vec<String>, String> {
    // Nothing of a block runs when one of its commands must not.
    for step in &steps {
        if let Step::Run(cmd) = step {
            if let Some(why) = must_not_run(&cmd.text) {
                return Err(format!(
                    "{}:{} `{}`: {why}: give its block <!-- doc-test: skip REASON -->",
                    b.file, cmd.line, cmd.text
                ));
            }
        }
    }
    let mut notes_of_earlier = Vec::new();
    if let Some(args) = &b.notes.server {
        notes_of_earlier.extend(sc.start_server(ctx, &format!("ws2http {args}"), &[])?);
    }
    let mut ids = Vec::new();
    for (doc_id, path) in &b.notes.connections {
        ids.push((doc_id.clone(), sc.connect(path)?));
    }
    let mut inputs: VecDeque<String> = b.notes.inputs.iter().cloned().collect();
    for step in steps {
        let env = sc.env.clone();
        match step {
            Step::Assign(n, v) => {
                let v = sc.rewrite(&v, &b.name())?;
                sc.env.push((n, v));
            }
            Step::Run(mut cmd) => {
                let what = format!("{}:{} `{}`", b.file, cmd.line, cmd.text);
                cmd.text = cargo_to_binary(&cmd.text);
                if starts_server(&cmd.text) {
                    notes_of_earlier.extend(sc.start_server(ctx, &cmd.text, &env)?);
                    sc.check_start_output(&cmd.expect).map_err(|e| format!("{what}: {e}"))?;
                    continue;
                }
                for (doc_id, id) in ids.iter().filter(|(d, _)| d != "-") {
                    cmd.text = cmd.text.replace(doc_id, id);
                    cmd.expect.iter_mut().for_each(|l| *l = l.replace(doc_id, id));
                }
                cmd.text = sc.rewrite(&cmd.text, &what)?;
                cmd.expect = cmd.expect.iter().map(|l| sc.rewrite(l, &what)).collect::<Result<_, _>>()?;
                let result = if cmd.console {
                    let script = transcript(&cmd, &mut inputs);
                    run_console(ctx, sc, &cmd, &env, script, b.notes.background.then(|| b.name()))
                } else {
                    run_plain(ctx, &cmd, &env)
                };
                result.map_err(|e| format!("{what}: {e}"))?;
            }
        }
    }
    match inputs.is_empty() {
        true => Ok(notes_of_earlier),
        false => Err(format!("{}: input lines never found in the transcript: {inputs:?}", b.name())),
    }
}

/// The port on a start-up line of a server.
fn startup_port(lines: &Receiver<Out>, prefix: &str) -> Result<u16, String> {
    loop {
        match lines.recv_timeout(LINE_WAIT) {
            Ok(Out::Stdout(l)) => {
                let port = l.strip_prefix(prefix).and_then(|p| p.parse().ok());
                return port.ok_or_else(|| format!("unexpected start-up line {l:?}"));
            }
            Ok(_) => {}
            Err(_) => return Err(format!("no line {prefix}PORT")),
        }
    }
}

/// `cargo run --release -- ARGS` (and without `--release`) → `ws2http ARGS`;
/// `cargo run --release` alone → `ws2http` (not `cargo run -p other`).
fn cargo_to_binary(text: &str) -> String {
    let mut t = text.to_owned();
    for (form, alone) in
        [("cargo run --release --", false), ("cargo run --", false), ("cargo run --release", true), ("cargo run", true)]
    {
        if let Some(i) = t.find(form) {
            let end = i + form.len();
            let rest = &t[end..];
            let fits = if alone { rest.trim().is_empty() } else { rest.chars().next().is_none_or(char::is_whitespace) };
            if fits {
                t.replace_range(i..end, "ws2http");
            }
        }
    }
    t
}

/// Programs that change the machine (or run the tests again): never run
/// without a note saying why they cannot run here.
const SYSTEM: &[&str] =
    &["sudo", "su", "systemctl", "dpkg", "apt-get", "apt", "useradd", "install", "runuser", "chown"];

/// Why a command must not run here, if it must not.
fn must_not_run(text: &str) -> Option<String> {
    let segments = text.split(['\n', ';', '|', '&']).map(str::trim);
    for seg in segments {
        let mut words = seg.split_whitespace().skip_while(|w| w.contains('=') && !w.starts_with('-'));
        let (first, second) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if SYSTEM.contains(&first) || (first == "cargo" && second == "install") {
            return Some(format!("`{first}` changes the machine"));
        }
        if (first == "cargo" && second == "test") || first == "./test" || first == ".ci/run" {
            return Some("it runs the test suite itself".into());
        }
    }
    let mut redirect = text.split(['>']).skip(1).map(|r| r.split_whitespace().next().unwrap_or(""));
    let outside = redirect.find(|p| p.starts_with('/') && *p != "/dev/null" && !p.starts_with("/tmp/"));
    outside.map(|p| format!("it writes {p}"))
}

fn starts_server(text: &str) -> bool {
    let mut words = text.split_whitespace().skip_while(|w| w.contains('=') && !w.starts_with('-'));
    words.next() == Some("ws2http") && words.next().is_none_or(|w| !NOT_SERVER.contains(&w))
}

fn uses_port(text: &str, port: &str) -> bool {
    replace_port(text, port, "X") != text
}

/// `:PORT` not followed by another digit.
fn replace_port(text: &str, from: &str, to: &str) -> String {
    let pat = format!(":{from}");
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(&pat) {
        let end = i + pat.len();
        let whole = !rest[end..].starts_with(|c: char| c.is_ascii_digit());
        out.push_str(&rest[..i]);
        out.push_str(&if whole { format!(":{to}") } else { pat.clone() });
        rest = &rest[end..];
    }
    out + rest
}

fn unique() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

fn shell(ctx: &Ctx, text: &str, env: &[(String, String)]) -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![ctx.bin_dir.clone()];
    dirs.extend(std::env::split_paths(&path));
    let mut c = Command::new("sh");
    // Its own process group: a command that overruns is stopped with all it started.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    c.env(NESTED, "1");
    c.arg("-c").arg(text).current_dir(&ctx.root).env("PATH", std::env::join_paths(dirs).expect("PATH"));
    c.envs(env.iter().map(|(k, v)| (k, v)));
    c
}

/// Lines of stdout (and stderr, when given) as they come; `Eof` once both end.
fn lines_of(stdout: impl Read + Send + 'static, stderr: Option<impl Read + Send + 'static>) -> Receiver<Out> {
    let (tx, rx) = channel();
    let spawn = |r: Box<dyn Read + Send>, err: bool, tx: std::sync::mpsc::Sender<Out>| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(if err { Out::Stderr(line) } else { Out::Stdout(line) });
            }
            let _ = tx.send(Out::Eof);
        })
    };
    spawn(Box::new(stdout), false, tx.clone());
    match stderr {
        Some(e) => drop(spawn(Box::new(e), true, tx)),
        None => drop(tx.send(Out::Eof)),
    }
    rx
}

/// A plain shell command: it must succeed, and print what its `# ...`
/// comment lines show (white space aside), when there are any.
fn run_plain(ctx: &Ctx, cmd: &Cmd, env: &[(String, String)]) -> Result<(), String> {
    let mut child = shell(ctx, &cmd.text, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let (out, err) = (read_all(child.stdout.take()), read_all(child.stderr.take()));
    let Some(status) = wait_exit(&mut child, LINE_WAIT * 3) else {
        kill_group(&mut child);
        return Err("did not finish within 60 s (stopped)".into());
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.success() {
        return Err(format!("failed ({status}); stdout:\n{out}\nstderr:\n{err}"));
    }
    let shown = cmd.expect.join("\n");
    if !shown.is_empty() && !loosely_matches(&shown, &out) {
        return Err(format!("printed\n{out}\nbut the docs show\n{shown}"));
    }
    Ok(())
}

fn read_all(r: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

/// Stops a command and everything it started (its process group).
fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) on the process group of our own child.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One line of a console transcript.
#[derive(Clone)]
enum Shown {
    /// Typed by the reader: written to the command's stdin.
    Input(String),
    /// Printed by the command (on stdout; or on stderr, which may also
    /// print lines the docs leave out).
    Output(String),
    /// A line `...`: any number of lines.
    AnyLines,
}

fn transcript(cmd: &Cmd, inputs: &mut VecDeque<String>) -> Vec<Shown> {
    let mut out = Vec::new();
    for l in &cmd.expect {
        if inputs.front().is_some_and(|i| i == l) {
            out.push(Shown::Input(inputs.pop_front().expect("front")));
        } else if matches!(l.trim(), "..." | "…") {
            out.push(Shown::AnyLines);
        } else {
            out.push(Shown::Output(l.clone()));
        }
    }
    out
}

/// A console command, driven like a terminal: input lines are typed when the
/// transcript reaches them, output lines are awaited in order. Then stdin
/// ends (Ctrl-D); the command must print nothing more on stdout and succeed.
/// In the background the transcript is driven while later blocks run.
fn run_console(
    ctx: &Ctx,
    sc: &mut Scenario,
    cmd: &Cmd,
    env: &[(String, String)],
    script: Vec<Shown>,
    background: Option<String>,
) -> Result<(), String> {
    let mut child = shell(ctx, &cmd.text, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdin = child.stdin.take();
    let rx = lines_of(child.stdout.take().expect("piped"), child.stderr.take());
    if let Some(name) = background {
        let (started_tx, started) = channel();
        let driver = std::thread::spawn(move || {
            let mut stdin = stdin;
            let r = drive(&mut stdin, &rx, &script, BACKGROUND_WAIT, Some(started_tx.clone())).map(|_| ());
            if let Err(e) = &r {
                let _ = started_tx.send(Err(e.clone()));
            }
            (stdin, r)
        });
        sc.background.push(Background { name, child, driver });
        // Its first line shown, the docs go on (a client has connected).
        let first = started.recv_timeout(LINE_WAIT).map_err(|_| "its first line never came".to_owned());
        if first.as_ref().is_ok_and(Result::is_ok) {
            return Ok(());
        }
        if let Some(mut bg) = sc.background.pop() {
            kill_group(&mut bg.child);
        }
        return first?;
    }
    let mut stdin = stdin;
    let rest = drive(&mut stdin, &rx, &script, LINE_WAIT, None);
    drop(stdin);
    let any_after = matches!(script.last(), Some(Shown::AnyLines));
    let mut ends = rest.as_ref().map_or(2, |r| r.1);
    let mut extra = Vec::new();
    while ends < 2 {
        match rx.recv_timeout(LINE_WAIT) {
            Ok(Out::Stdout(l)) if !any_after => extra.push(l),
            Ok(Out::Eof) => ends += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let status = wait_exit(&mut child, LINE_WAIT);
    if status.is_none() {
        kill_group(&mut child);
    }
    let (stderr, _) = rest?;
    if !extra.is_empty() {
        return Err(format!("printed lines the docs do not show: {extra:?}"));
    }
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("exited with {s}; stderr: {stderr:?}")),
        None => Err("did not exit after its input ended".into()),
    }
}

/// Walks the transcript; returns the stderr lines seen (for messages) and
/// how many of the two streams have ended.
fn drive(
    stdin: &mut Option<ChildStdin>,
    rx: &Receiver<Out>,
    script: &[Shown],
    wait: Duration,
    mut started: Option<std::sync::mpsc::Sender<Result<(), String>>>,
) -> Result<(Vec<String>, usize), String> {
    let mut stderr = Vec::new();
    let mut ends = 0;
    let mut skipping = false;
    for shown in script {
        let want = match shown {
            Shown::Input(l) => {
                let w = stdin.as_mut().ok_or("no stdin")?;
                writeln!(w, "{l}").and_then(|_| w.flush()).map_err(|e| format!("typing {l:?}: {e}"))?;
                continue;
            }
            Shown::AnyLines => {
                skipping = true;
                continue;
            }
            Shown::Output(l) => l,
        };
        loop {
            match rx.recv_timeout(wait) {
                Ok(Out::Stdout(a)) if line_matches(want, &a) => break,
                Ok(Out::Stdout(_)) if skipping => {}
                Ok(Out::Stdout(a)) => return Err(format!("expected {want:?}, printed {a:?} (stderr: {stderr:?})")),
                Ok(Out::Stderr(a)) if line_matches(want, &a) => break,
                Ok(Out::Stderr(a)) => stderr.push(a),
                Ok(Out::Eof) => {
                    ends += 1;
                    if ends == 2 {
                        return Err(format!("output ended before {want:?} (stderr: {stderr:?})"));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no line {want:?} within {wait:?} (stderr: {stderr:?})"))
                }
                Err(RecvTimeoutError::Disconnected) => return Err("output ended".into()),
            }
        }
        skipping = false;
        if let Some(tx) = started.take() {
            let _ = tx.send(Ok(()));
        }
    }
    if let Some(tx) = started.take() {
        let _ = tx.send(Ok(()));
    }
    Ok((stderr, ends))
}

/// The server log of the current scenario (for error messages).
pub fn server_log(sc: &Scenario) -> String {
    sc.server.as_ref().map(|s| std::fs::read_to_string(&s.stderr).unwrap_or_default()).unwrap_or_default()
}

/// The harness's own checks (a `harness = false` test runs no #[test]).
pub mod self_test {
    use super::*;

    pub fn commands_that_change_the_machine_are_refused() {
        for cmd in [
            "sudo systemctl restart ws2http",
            "contrib/build-deb && dpkg -i target/debian/ws2http_*.deb",
            "cargo install --path . --locked",
            "ws2http completions bash > /etc/bash_completion.d/ws2http",
            "install -m 755 target/release/ws2http /usr/bin/ws2http",
            "RUST_LOG=debug cargo test",
            "./test",
        ] {
            assert!(must_not_run(cmd).is_some(), "{cmd} would run");
        }
        for cmd in ["ws2http try cgi-bin/echo.sh 2>&1", "curl -s http://127.0.0.1:8081/rooms > /dev/null", "ws2http"] {
            assert!(must_not_run(cmd).is_none(), "{cmd} refused");
        }
        assert_eq!(cargo_to_binary("cargo run --release -- connect ws://x"), "ws2http connect ws://x");
        assert_eq!(cargo_to_binary("cargo run --release"), "ws2http");
        assert_eq!(cargo_to_binary("cargo run --release -p ws2http-bench"), "cargo run --release -p ws2http-bench");
        assert!(starts_server("ws2http --cgi-bin x") && starts_server("RUST_LOG=debug ws2http"));
        assert!(!starts_server("ws2http connect ws://x") && !starts_server("ws2http --help"));
        assert_eq!(replace_port("a:8080/b :80801 :8081", "8080", "1"), "a:1/b :80801 :8081");
    }
}
