//! Runs one script process: clean environment, payload on stdin, stdout read
//! line by line as it is produced, stderr to the log, and a deadline after
//! which the script's whole process group is terminated, then killed (see
//! [`super::groups`]: SIGKILL follows SIGTERM after the grace period on every
//! path, even when the script itself already exited).

use std::borrow::Cow;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use futures_util::future::{select, Either};

use super::groups::{self, Budget};
use super::spawn::{self, Child, Pipe};
use crate::backend::Outcome;
use crate::event::Target;
use crate::runtime;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest a script may run.
    pub timeout: Duration,
    /// How long a script's process group may keep running after SIGTERM
    /// before SIGKILL, and how long stdout is still read after the script
    /// exited (a background child may hold it open).
    pub grace: Duration,
    /// Most bytes of stdout read per run; the script is killed past it.
    pub max_output: usize,
    pub stderr: Stderr,
}

/// What the log should call this run: `[id] /chat.sh message`.
pub struct Label<'a>(pub &'a str);

/// Reads one line (through `\n`) into `buf`, but never more than `cap`
/// bytes: a script that prints gigabytes without a newline costs no memory.
/// Returns the bytes read (0 at the end of the stream) and `true` when it
/// stopped at `cap` before the end of the line (the rest is still unread).
pub async fn read_line_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    loop {
        let room = cap.saturating_sub(buf.len());
        if room == 0 {
            return Ok((consumed, true));
        }
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok((consumed, false));
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) if i < room => (i + 1, true),
            _ => (available.len().min(room), false),
        };
        buf.extend_from_slice(&available[..take]);
        r.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, false));
        }
    }
}

/// Reads and drops the rest of a line (through `\n`, or to the end).
async fn skip_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<()> {
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(());
        }
        match available.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = available.len();
                r.consume(n);
            }
        }
    }
}

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
pub fn log_stderr(child: &mut Child, prefix: String, dest: &Stderr) {
    if let Some(err) = child.stderr.take() {
        let mut pump = StderrPump::new(err, prefix, dest).into_owned();
        runtime::spawn(async move { pump.run().await });
    }
}

/// Stops a script that overran its time: SIGTERM to its process group,
/// SIGKILL after the grace period (sent by [`groups`] even if the script
/// exits before, for whatever it left running); returns once the script is
/// reaped.
pub async fn terminate(child: &mut Child, grace: Duration, label: &str) {
    let group = child.group();
    groups::terminate(group);
    if runtime::timeout(grace, child.status(label)).await.is_err() {
        // The group watcher sends it too; this one does not depend on it.
        groups::kill_now(group);
        let _ = child.status(label).await;
    }
}

/// How a finished script ended, for the log.
pub fn outcome(status: std::io::Result<std::process::ExitStatus>) -> Outcome {
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

/// Spawns `target` and feeds each stdout line to `on_line` as it arrives.
/// Everything happens in the calling task: the payload is written as the
/// script starts, stdout, stderr and the exit are awaited together.
pub async fn run(
    target: &Target,
    env: &spawn::EnvBlock,
    stdin: Bytes,
    limits: &Limits,
    label: &Label<'_>,
    on_line: &mut (dyn FnMut(&[u8]) + Send),
) -> Outcome {
    let budget = Budget::from_now(limits.timeout, limits.grace);
    let mut child = match spawn::spawn(target, env, budget) {
        Ok(c) => c,
        Err(e) => {
            crate::metrics::add(&crate::metrics::get().spawn_failures, 1);
            return Outcome::Failed(spawn_error(target, &e));
        }
    };
    let group = child.group();
    if let Some(input) = child.stdin.take() {
        spawn::feed(input, stdin);
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Outcome::Failed("stdout was not captured".into());
    };
    let mut errors = StderrPump::new(stderr, label.0, &limits.stderr);

    let work = async {
        let reading = std::pin::pin!(read_lines(stdout, limits.max_output, group, label, on_line));
        let exited = std::pin::pin!(child.status(label.0));
        match select(reading, exited).await {
            Either::Left(((), exited)) => exited.await,
            Either::Right((status, reading)) => {
                // Exited: take what is left in the pipe, but do not wait on
                // a background child that keeps it open.
                if runtime::timeout(limits.grace, reading).await.is_err() {
                    log::warn!(
                        "{}: a background process still holds stdout open after the script exited; \
                         SIGTERM to its process group, SIGKILL in {:?} (redirect a background job's output, \
                         e.g. >/dev/null)",
                        label.0,
                        limits.grace
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
    let status = runtime::timeout(limits.timeout, work).await;
    errors.finish();
    let status = match status {
        Ok(status) => status,
        Err(()) => {
            log::warn!("{}: still running after {:?}; terminating its process group", label.0, limits.timeout);
            terminate(&mut child, limits.grace, label.0).await;
            return Outcome::Failed(format!("timed out after {:?}", limits.timeout));
        }
    };
    outcome(status)
}

async fn read_lines(
    stdout: Pipe,
    max_output: usize,
    group: groups::GroupId,
    label: &Label<'_>,
    on_line: &mut (dyn FnMut(&[u8]) + Send),
) {
    // futures-lite zero-fills its buffer: 4 KiB per event fits the usual
    // output in one read without paying for a big buffer every time.
    let mut r = BufReader::with_capacity(4096, stdout);
    let mut line = Vec::new();
    let mut total = 0usize;
    loop {
        line.clear();
        // Never hold more than the output budget, even for one endless line.
        match read_line_capped(&mut r, &mut line, max_output.saturating_sub(total) + 1).await {
            Ok((0, _)) => return,
            Ok((n, _)) => {
                total += n;
                if total > max_output {
                    log::warn!(
                        "{}: more than {max_output} bytes of output; the rest is discarded and the script's \
                         process group killed",
                        label.0
                    );
                    groups::kill_now(group);
                    return;
                }
                on_line(&line);
            }
            Err(e) => {
                log::warn!("{}: reading stdout failed: {e}", label.0);
                return;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], cap: usize) -> Vec<(Vec<u8>, bool)> {
        futures_lite::future::block_on(async {
            let mut r = BufReader::with_capacity(4, input);
            let mut out = Vec::new();
            loop {
                let mut line = Vec::new();
                let (n, cut) = read_line_capped(&mut r, &mut line, cap).await.expect("read");
                if n == 0 {
                    return out;
                }
                out.push((line, cut));
            }
        })
    }

    #[test]
    fn lines_are_capped_without_reading_past_the_cap() {
        assert_eq!(read(b"ab\ncd", 10), [(b"ab\n".to_vec(), false), (b"cd".to_vec(), false)]);
        // A long line comes in cap-sized pieces: the caller can stop at the first.
        assert_eq!(
            read(b"abcdefg\nh", 3),
            [(b"abc".to_vec(), true), (b"def".to_vec(), true), (b"g\n".to_vec(), false), (b"h".to_vec(), false)]
        );
        assert_eq!(read(b"abc\n", 3), [(b"abc".to_vec(), true), (b"\n".to_vec(), false)]);
    }
}
