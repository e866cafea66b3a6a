//! Runs one script process: clean environment, payload on stdin, stdout read
//! as it is produced, stderr to the log, and a deadline after which the
//! script's whole process group is terminated, then killed (see
//! [`super::groups`]: SIGKILL follows SIGTERM after the grace period on every
//! path, even when the script itself already exited).
//!
//! An event's side of it ([`run`]) hands the script to a worker thread
//! ([`super::worker`]) and feeds what comes back to the gateway; a page's
//! ([`start`], [`Script`]) runs on the reactor. The rules shared by both
//! (stderr lines, outcome texts, spawn errors) are here.

use std::borrow::Cow;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::BufReader;

use super::child::{self, Child, EnvBlock, Pipe};
use super::groups::{self, Budget};
use super::worker::{Back, Job};
use super::Spawn;
use crate::event::{ConnInfo, Target};
use crate::gateway::{Call, Outcome};
use crate::runtime;

/// The longest stderr line logged (the rest of it is dropped).
const MAX_STDERR_LINE: usize = 4096;

/// Where a script's stderr goes.
#[derive(Clone, Debug, Default)]
pub enum Stderr {
    /// One log line per stderr line (the server).
    #[default]
    Log,
    /// Kept for printing (`ws2http try`).
    Collect(Arc<Mutex<Vec<u8>>>),
}

/// Turns the bytes a script writes to stderr into log lines (or collects
/// them): one log line per line, an over-long line logged only up to
/// [`MAX_STDERR_LINE`] with ` [line cut]` (the rest of it is dropped, but
/// still read: the script must not block on a full pipe). The one rule,
/// for the workers' blocking reads and the async [`StderrPump`].
pub struct StderrLines<'a> {
    line: Vec<u8>,
    /// Dropping the rest of a line that was cut.
    skipping: bool,
    prefix: Cow<'a, str>,
    dest: Cow<'a, Stderr>,
}

impl<'a> StderrLines<'a> {
    pub fn new(prefix: impl Into<Cow<'a, str>>, dest: &'a Stderr) -> Self {
        StderrLines { line: Vec::new(), skipping: false, prefix: prefix.into(), dest: Cow::Borrowed(dest) }
    }

    pub fn into_owned(self) -> StderrLines<'static> {
        StderrLines {
            line: self.line,
            skipping: self.skipping,
            prefix: Cow::Owned(self.prefix.into_owned()),
            dest: Cow::Owned(self.dest.into_owned()),
        }
    }

    /// Some bytes of stderr, as they were read.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            if self.skipping {
                let Some(i) = newline else { return };
                self.skipping = false;
                data = &data[i + 1..];
                continue;
            }
            let room = MAX_STDERR_LINE - self.line.len();
            match newline {
                Some(i) if i < room => {
                    self.line.extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    self.emit(false);
                }
                _ if data.len() >= room => {
                    self.line.extend_from_slice(&data[..room]);
                    data = &data[room..];
                    self.emit(true);
                    self.skipping = true;
                }
                _ => {
                    self.line.extend_from_slice(data);
                    return;
                }
            }
        }
    }

    /// The end of stderr: a last line without a newline is logged too.
    pub fn end(&mut self) {
        if !self.line.is_empty() {
            self.emit(false);
        }
    }

    fn emit(&mut self, cut: bool) {
        let more = if cut { " [line cut]" } else { "" };
        match &*self.dest {
            Stderr::Log => {
                log::warn!("{}: stderr: {}{more}", self.prefix, String::from_utf8_lossy(&self.line).trim_end())
            }
            Stderr::Collect(buf) => buf.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&self.line),
        }
        self.line.clear();
    }
}

/// Reads a script's stderr into [`StderrLines`], from the reactor (classic
/// CGI pages, and what an event's background job still writes after the
/// event ended).
pub struct StderrPump {
    reader: BufReader<Pipe>,
    lines: StderrLines<'static>,
}

impl StderrPump {
    /// Reads until the end of stderr (every writer closed it).
    pub async fn run(&mut self) {
        use futures_lite::io::AsyncBufReadExt;
        while let Ok(data) = self.reader.fill_buf().await {
            if data.is_empty() {
                break;
            }
            let n = data.len();
            self.lines.feed(data);
            self.reader.consume(n);
        }
        self.lines.end();
    }
}

/// Sends what the script writes to stderr to the log (or the collector), in
/// the background.
pub fn log_stderr(stderr: Pipe, prefix: String, dest: &Stderr) {
    log_stderr_rest(stderr, StderrLines::new(prefix, dest).into_owned());
}

/// Goes on reading stderr into `lines` in the background.
pub fn log_stderr_rest(stderr: Pipe, lines: StderrLines<'static>) {
    // Small: futures-lite zero-fills its buffer (stderr is rare).
    let mut pump = StderrPump { reader: BufReader::with_capacity(1024, stderr), lines };
    runtime::spawn(async move { pump.run().await });
}

/// One running script on the reactor, from its start to its reaping: a
/// classic CGI page's ([`crate::http::cgi`]; an event's runs on a worker,
/// [`super::worker`], by the same rules). Its deadline is measured from one point, the
/// `started` it was given (when its slot was taken), and is the same for
/// the script's process group ([`groups`]) and for the wait here.
pub struct Script {
    pub child: Child,
    time: Time,
    /// A page's body is streaming when it overruns; an event just fails.
    page: bool,
}

/// A script that started: the script and its output pipes.
pub struct Started {
    pub script: Script,
    pub stdout: Pipe,
    pub stderr: Pipe,
}

/// How long a script may run, and from when.
#[derive(Clone, Copy, Debug)]
pub struct Time {
    pub started: Instant,
    pub timeout: Duration,
    pub grace: Duration,
}

impl Time {
    /// The group's budget: `timeout` from `started`, then the grace.
    pub fn budget(&self) -> Budget {
        Budget::starting_at(self.started, self.timeout, self.grace)
    }

    /// When the run must be over.
    pub fn deadline(&self) -> Instant {
        let far = self.started + Duration::from_secs(86_400 * 365);
        self.started.checked_add(self.timeout).unwrap_or(far)
    }
}

/// The line logged when a script is still running at its deadline.
pub fn log_overrun(label: &str, time: &Time, page: bool) {
    let (timeout, grace) = (time.timeout, time.grace);
    if page {
        log::warn!("{label}: still running after the timeout ({timeout:?}); the response ends here; SIGTERM to its process group, SIGKILL in {grace:?}");
    } else {
        log::warn!("{label}: still running after {timeout:?}; terminating its process group");
    }
}

/// Starts `target` with `env` on the reactor and writes `stdin` to it.
/// `Err` says why it could not start, for the log.
pub fn start(target: &Target, env: &EnvBlock, stdin: Bytes, time: Time, page: bool) -> Result<Started, String> {
    let mut child = child::spawn(target, env, time.budget()).map_err(|e| spawn_failed(target, &e))?;
    if let Some(input) = child.stdin.take() {
        // A script that does not read its input is fine.
        child::feed(input, stdin);
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("stdout was not captured".into());
    };
    let script = Script { child, time, page };
    Ok(Started { script, stdout, stderr })
}

impl Script {
    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.time.deadline().saturating_duration_since(Instant::now())
    }

    /// How the run ended: `status` came within the deadline, or (`Err`) the
    /// deadline passed, and then the process group is stopped and the
    /// script reaped before the run fails.
    pub async fn ended(&mut self, status: Result<ExitResult, ()>, label: &str) -> Outcome {
        let Err(()) = status else {
            return status.map_or(Outcome::Success, outcome);
        };
        log_overrun(label, &self.time, self.page);
        self.stop(label).await;
        Outcome::Failed(format!("timed out after {:?}", self.time.timeout))
    }

    /// Stops the script now: SIGTERM to its process group, SIGKILL after the
    /// grace period (sent by [`groups`] even if the script exits before, for
    /// whatever it left running); returns once the script is reaped.
    pub async fn stop(&mut self, label: &str) {
        let group = self.child.group();
        groups::terminate(group);
        if runtime::timeout(self.time.grace, self.child.status(label)).await.is_err() {
            // The group watcher sends it too; this one does not depend on it.
            groups::kill_now(group);
            let _ = self.child.status(label).await;
        }
    }
}

/// What waiting for a script gives.
pub type ExitResult = std::io::Result<std::process::ExitStatus>;

/// How a finished script ended, for the log.
pub fn outcome(status: ExitResult) -> Outcome {
    match status {
        Ok(s) if s.success() => Outcome::Success,
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Failed(format!("exited with status {code}")),
            (None, Some(sig)) => Outcome::Failed(format!("killed by signal {sig}")),
            _ => Outcome::Failed(format!("ended with {s}")),
        },
        Err(e) => Outcome::Failed(format!("could not wait for the script: {e}")),
    }
}

/// How many stdout chunks a worker may hand back before the event's task
/// took them: a bound on the bytes in flight, not a pause in practice (the
/// task applies each chunk as it comes).
const CHUNKS_IN_FLIGHT: usize = 4;

/// Runs one event's script on a worker thread ([`super::worker`]): one job
/// handed over, then its stdout, chunk by chunk, into `call` (the gateway's
/// line splitter, limits and parser) as the script produces it. Past
/// `--max-output` the script's group is killed at once; the deadline, the
/// reaping and stderr are the worker's. When the call may be applied
/// directly ([`Call::direct`]: message and close events), the worker runs
/// the output pipeline itself and only its outcome comes back.
pub async fn run(spawn: &Spawn, conn: &Arc<ConnInfo>, env: EnvBlock, stdin: Bytes, call: &mut Call<'_>) -> Outcome {
    let time = Time { started: Instant::now(), timeout: call.timeout(), grace: spawn.grace };
    let job = |back| Job {
        conn: conn.clone(),
        env,
        stdin,
        time,
        max_output: spawn.limits.max_output,
        label: call.label().to_owned(),
        stderr: spawn.stderr.clone(),
        direct: call.direct().cloned(),
        back,
    };
    if call.direct().is_some() && super::worker::inline() {
        // On a follower thread: the job runs here, and only its outcome
        // comes back (no channel).
        let job = job(None);
        let outcome = super::worker::settle(&job);
        // The next event on this thread fills the same block (`exchange`).
        job.env.recycle();
        return outcome;
    }
    let (back, answers) = async_channel::bounded(CHUNKS_IN_FLIGHT);
    if let Err((_, e)) = spawn.workers.submit(job(Some(back))) {
        return Outcome::Failed(format!("cannot start a worker thread for the script: {e}"));
    }
    while let Ok(answer) = answers.recv().await {
        match answer {
            Back::Output { group, bytes, end } => {
                if !call.is_cut() && call.feed(&bytes).is_err() {
                    groups::kill_now(group);
                }
                if end {
                    call.end();
                }
            }
            Back::Done(outcome) => return outcome,
        }
    }
    Outcome::Failed("the worker thread running the script ended without an answer".into())
}

/// Counts a script that could not start, and says why, for the log.
pub fn spawn_failed(target: &Target, e: &std::io::Error) -> String {
    crate::metrics::add(&crate::metrics::get().spawn_failures, 1);
    spawn_error(target, e)
}

pub fn spawn_error(target: &Target, e: &std::io::Error) -> String {
    let script = target.filename.display();
    match (&target.interpreter, e.kind()) {
        (Some(argv), ErrorKind::NotFound) => {
            format!("cannot start {script}: the handler program {:?} is not installed or not in PATH", argv[0])
        }
        (None, ErrorKind::PermissionDenied) => format!("cannot start {script}: permission denied (chmod +x it)"),
        (None, _) if e.raw_os_error() == Some(libc::ENOEXEC) => {
            format!(
                "cannot start {script}: not a program; add a #! line (e.g. #!/bin/sh) or a --handler for its extension"
            )
        }
        (None, ErrorKind::NotFound) if !target.filename.exists() => {
            format!("cannot start {script}: the script file is gone (deleted or renamed)")
        }
        (None, ErrorKind::NotFound) => {
            format!("cannot start {script}: its #! interpreter was not found")
        }
        _ => format!("cannot start {script}: {e}"),
    }
}
