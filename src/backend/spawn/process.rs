//! Runs one script process: clean environment, payload on stdin, stdout read
//! line by line as it is produced, stderr to the log, and a deadline after
//! which the script's whole process group is terminated, then killed (see
//! [`super::groups`]: SIGKILL follows SIGTERM after the grace period on every
//! path, even when the script itself already exited).

use std::borrow::Cow;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::BufReader;
use futures_util::future::{select, Either};

use super::child::{self, Child, EnvBlock, Pipe};
use super::groups::{self, Budget};
use super::Spawn;
use crate::event::Target;
use crate::gateway::lines::{read_line_capped, skip_line};
use crate::gateway::{Call, Cut, Outcome};
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

/// Reads a script's stderr line by line into the log (or the collector).
/// Its state lives here, not in the future that reads: the reading can be
/// interrupted and resumed (or handed to a task) without losing a byte.
/// The prefix and destination are borrowed while the event runs, and owned
/// only if a background task has to finish the reading.
pub struct StderrPump<'a> {
    reader: BufReader<Pipe>,
    line: Vec<u8>,
    prefix: Cow<'a, str>,
    dest: Cow<'a, Stderr>,
}

impl<'a> StderrPump<'a> {
    pub fn new(pipe: Pipe, prefix: impl Into<Cow<'a, str>>, dest: &'a Stderr) -> Self {
        // Small: futures-lite zero-fills its buffer, per event (stderr is rare).
        let reader = BufReader::with_capacity(1024, pipe);
        StderrPump { reader, line: Vec::new(), prefix: prefix.into(), dest: Cow::Borrowed(dest) }
    }

    fn into_owned(self) -> StderrPump<'static> {
        StderrPump {
            reader: self.reader,
            line: self.line,
            prefix: Cow::Owned(self.prefix.into_owned()),
            dest: Cow::Owned(self.dest.into_owned()),
        }
    }

    /// Reads until the end of stderr (every writer closed it).
    pub async fn run(&mut self) {
        while let Ok((n, cut)) = read_line_capped(&mut self.reader, &mut self.line, MAX_STDERR_LINE).await {
            if n == 0 && !cut {
                if !self.line.is_empty() {
                    self.emit(false);
                }
                break;
            }
            if !cut && self.line.last() != Some(&b'\n') {
                continue; // the end of the stream is next
            }
            // Keep draining an over-long line (the script must not block on
            // a full pipe), but log only its start.
            if cut && skip_line(&mut self.reader).await.is_err() {
                break;
            }
            self.emit(cut);
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

    /// Finishes reading: at once when the script's stderr is already at its
    /// end (the usual case once it exited), else in a background task (a
    /// background child of the script may still hold it open).
    pub fn finish(mut self) {
        let done = {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            std::future::Future::poll(std::pin::pin!(self.run()), &mut cx).is_ready()
        };
        if !done {
            let mut rest = self.into_owned();
            runtime::spawn(async move { rest.run().await });
        }
    }
}

/// Sends what the script writes to stderr to the log (or the collector), in
/// the background.
pub fn log_stderr(stderr: Pipe, prefix: String, dest: &Stderr) {
    let mut pump = StderrPump::new(stderr, prefix, dest).into_owned();
    runtime::spawn(async move { pump.run().await });
}

/// One running script, from its start to its reaping: the one lifecycle of
/// a spawned script, for events ([`run`]) and classic CGI pages
/// ([`crate::http::cgi`]). Its deadline is measured from one point, the
/// `started` it was given (when its slot was taken), and is the same for
/// the script's process group ([`groups`]) and for the wait here.
pub struct Script {
    pub child: Child,
    deadline: Instant,
    timeout: Duration,
    grace: Duration,
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

/// Starts `target` with `env` and writes `stdin` to it: the one way a
/// script starts, for events and pages. `Err` says why it could not start,
/// for the log.
pub fn start(target: &Target, env: &EnvBlock, stdin: Bytes, time: Time, page: bool) -> Result<Started, String> {
    let budget = Budget::starting_at(time.started, time.timeout, time.grace);
    let mut child = child::spawn(target, env, budget).map_err(|e| {
        crate::metrics::add(&crate::metrics::get().spawn_failures, 1);
        spawn_error(target, &e)
    })?;
    if let Some(input) = child.stdin.take() {
        // A script that does not read its input is fine.
        child::feed(input, stdin);
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("stdout was not captured".into());
    };
    let far = time.started + Duration::from_secs(86_400 * 365);
    let deadline = time.started.checked_add(time.timeout).unwrap_or(far);
    let script = Script { child, deadline, timeout: time.timeout, grace: time.grace, page };
    Ok(Started { script, stdout, stderr })
}

impl Script {
    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How the run ended: `status` came within the deadline, or (`Err`) the
    /// deadline passed, and then the process group is stopped and the
    /// script reaped before the run fails.
    pub async fn ended(&mut self, status: Result<ExitResult, ()>, label: &str) -> Outcome {
        let Err(()) = status else {
            return status.map_or(Outcome::Success, outcome);
        };
        let (timeout, grace) = (self.timeout, self.grace);
        if self.page {
            log::warn!("{label}: still running after the timeout ({timeout:?}); the response ends here; SIGTERM to its process group, SIGKILL in {grace:?}");
        } else {
            log::warn!("{label}: still running after {timeout:?}; terminating its process group");
        }
        self.stop(label).await;
        Outcome::Failed(format!("timed out after {timeout:?}"))
    }

    /// Waits for the script to exit, until the deadline (see [`Self::ended`]).
    pub async fn wait(&mut self, label: &str) -> Outcome {
        let status = runtime::timeout(self.remaining(), self.child.status(label)).await;
        self.ended(status, label).await
    }

    /// Stops the script now: SIGTERM to its process group, SIGKILL after the
    /// grace period (sent by [`groups`] even if the script exits before, for
    /// whatever it left running); returns once the script is reaped.
    pub async fn stop(&mut self, label: &str) {
        let group = self.child.group();
        groups::terminate(group);
        if runtime::timeout(self.grace, self.child.status(label)).await.is_err() {
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

/// Runs one event's script: stdout into `call` as it arrives, stderr to
/// the log, the exit awaited alongside, all in the calling task; the
/// deadline and the reaping are [`Script`]'s.
pub async fn run(spawn: &Spawn, target: &Target, env: &EnvBlock, stdin: Bytes, call: &mut Call<'_>) -> Outcome {
    let (grace, label) = (spawn.grace, call.label());
    let time = Time { started: Instant::now(), timeout: call.timeout(), grace };
    let Started { mut script, stdout, stderr } = match start(target, env, stdin, time, false) {
        Ok(s) => s,
        Err(why) => return Outcome::Failed(why),
    };
    let group = script.child.group();
    let mut errors = StderrPump::new(stderr, label, &spawn.stderr);
    let remaining = script.remaining();
    let work = async {
        let reading = std::pin::pin!(read_stdout(stdout, group, call));
        let exited = std::pin::pin!(script.child.status(label));
        match select(reading, exited).await {
            Either::Left(((), exited)) => exited.await,
            Either::Right((status, reading)) => {
                // Exited: take what is left in the pipe, but do not wait on
                // a background child that keeps it open.
                if runtime::timeout(grace, reading).await.is_err() {
                    log::warn!(
                        "{label}: a background process still holds stdout open after the script exited; \
                         SIGTERM to its process group, SIGKILL in {grace:?} (redirect a background job's output, \
                         e.g. >/dev/null)"
                    );
                    groups::terminate(group);
                }
                status
            }
        }
    };
    // stderr is read alongside, in this task; whatever is left when the
    // script is done is finished by `errors.finish()`.
    let work = async {
        let work = std::pin::pin!(work);
        let pump = std::pin::pin!(errors.run());
        match select(work, pump).await {
            Either::Left((status, _)) => status,
            Either::Right(((), work)) => work.await,
        }
    };
    let status = runtime::timeout(remaining, work).await;
    errors.finish();
    script.ended(status, label).await
}

/// Feeds the script's stdout to the gateway; past `--max-output` the
/// script's process group is killed at once.
async fn read_stdout(stdout: Pipe, group: groups::GroupId, call: &mut Call<'_>) {
    // futures-lite zero-fills its buffer: 4 KiB per event fits the usual
    // output in one read without paying for a big buffer every time.
    let mut r = BufReader::with_capacity(4096, stdout);
    match call.pump(&mut r).await {
        Ok(()) => {}
        Err(Cut::TooMuch) => groups::kill_now(group),
        Err(Cut::Io(e)) => log::warn!("{}: reading stdout failed: {e}", call.label()),
    }
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
