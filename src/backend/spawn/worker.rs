//! The child side of an event, run with blocking I/O on a worker thread
//! ([`super::pool`]), off the async reactor.
//!
//! Why: a spawned script's pipes and exit, driven through the reactor, cost
//! about 100 system calls per event (epoll registration and re-arming of
//! three pipes and a pidfd, reactor and executor wake-ups), and at 16
//! connections the machine is CPU-bound on exactly that: blocking-thread
//! servers ran the same program 10-20 % faster (issue 14). Here one worker
//! does everything with plain blocking calls: `posix_spawn`, the payload
//! written, stdout and stderr read, the exit awaited, all in one `ppoll`
//! over stdin, stdout, stderr and a pidfd (so a payload bigger than the pipe
//! cannot deadlock with a script that writes a lot before it reads, and the
//! poll's timeout is the deadline: no timer on the reactor). The pidfd only
//! for a script still running when its stdout ended (after one
//! `sched_yield`, [`Run::exit_in_progress`]) or [`WATCH_AFTER`] in: most
//! have exited by then and are reaped without one. The async side
//! ([`super::process::run`]) hands one [`Job`] over and gets back one
//! [`Back::Output`] per read of stdout that holds a line, which it feeds to the gateway's one
//! output pipeline ([`crate::gateway::Call::feed`]: line splitting, limits
//! and directives stay there), then [`Back::Done`].
//!
//! Message and close events, whose actions go straight to the hub
//! ([`crate::gateway::Call::direct`]), skip even that: the worker runs the
//! same pipeline itself (a [`Call`] of its own, fed the same chunks at the
//! same points, ended the same way) and applies the actions from here, so
//! a reply is written to the client's socket (the hub's direct path) as
//! soon as the script's stdout ends, without first waking the event's task;
//! only [`Back::Done`] goes back. Measured (docs/bench-notes/handoff.md):
//! 8.6 % fewer instructions per event, one context switch fewer at 16
//! connections.
//!
//! A follower thread ([`follower`], the transport's `follow`) runs a busy
//! connection's next messages (`ws::follow`): their jobs run on that
//! thread at once ([`inline`]), so a conversation of one message after
//! another stays on one thread, as with a thread per connection.
//!
//! The rules are the async path's, unchanged: at the deadline SIGTERM to the
//! script's process group and SIGKILL after the grace ([`super::groups`]);
//! past `--max-output` the gateway cuts and the async side kills the group
//! at once (the worker stops reading after `--max-output` + 1 bytes, so
//! the bytes in flight stay bounded); a background job holding stdout
//! after the script exited gets the grace period, then SIGTERM; stderr
//! becomes log lines ([`StderrLines`]). If the async side goes away (its
//! event future dropped: shutdown), the next chunk finds the channel closed:
//! the worker closes the pipes, as dropping the future did before, and
//! waits for the exit within the budget as usual.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::child::{self, EnvBlock, Spawned};
use super::groups::{self, GroupId};
use super::process::{log_overrun, log_stderr_rest, outcome, spawn_failed, ExitResult, Stderr, StderrLines, Time};
use crate::event::ConnInfo;
use crate::gateway::{Apply, Call, Limits, Outcome, Output};
use crate::runtime::Async;

/// One event's script, as handed to a worker.
pub struct Job {
    /// Whose target runs (an `Arc`: no copy of the paths).
    pub conn: Arc<ConnInfo>,
    pub env: EnvBlock,
    pub stdin: Bytes,
    pub time: Time,
    /// `--max-output`: the worker reads at most one byte more.
    pub max_output: usize,
    /// The event's label, for the log.
    pub label: String,
    pub stderr: Stderr,
    /// Set: the worker parses the output and applies the actions itself
    /// ([`Call::direct`]), and hands back only [`Back::Done`].
    pub direct: Option<Apply>,
    /// Where the output and the outcome go; `None` on a follower thread,
    /// which runs a direct job itself ([`settle`]): no channel to make.
    pub back: Option<async_channel::Sender<Back>>,
}

/// What a worker hands back.
#[derive(Debug)]
pub enum Back {
    /// Bytes of stdout, and the group to kill if they are too many; `end`:
    /// stdout is over (a last line without a newline is whole).
    Output { group: GroupId, bytes: Vec<u8>, end: bool },
    /// The run is over: how it ended.
    Done(Outcome),
}

/// The most stdout read at once.
const CHUNK: usize = 16 * 1024;
/// How long the end of stdout waits for the script's exit, so that the two
/// travel back together (one wake-up of the event's task, not two); a script
/// that closes stdout and runs on has its output ended after this.
const TAIL_WAIT: Duration = Duration::from_millis(1);
/// How long a script runs before its exit is watched for with a pidfd in
/// the poll (needed while stdout is open: a script that exits and leaves a
/// background job holding stdout gets the grace period from its exit).
/// Most scripts are done sooner: their stdout ends, and they are reaped
/// then without a pidfd (two system calls per event fewer, `pidfd_open`
/// and its `close`; docs/bench-notes/perf18.md). A later start of the
/// grace is the cost: at most this much (2.5 % of the 2 s grace). Not
/// 10 ms: with 16 busy connections on 2 cores a script waits for a CPU, and
/// a third to a half of them were still running at 10 ms, each then paying
/// the pidfd and one more wake-up (docs/bench-notes/reap19.md).
const WATCH_AFTER: Duration = Duration::from_millis(50);
/// A payload this small is written at once, even to a blocking pipe: a fresh
/// pipe always has room for one page (even at the per-user pipe limit).
const SMALL: usize = 4096;

thread_local! {
    /// This thread is a follower ([`follower`]): its events' jobs run here.
    static INLINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A follower thread's job function: the job (a connection's follower)
/// runs events with `block_on`, and their scripts run on this thread
/// ([`inline`]), not handed to another worker and back.
pub fn follower(job: crate::gateway::Follow) {
    INLINE.with(|i| i.set(true));
    crate::logging::lines_on_stack();
    job();
}

/// On a follower thread: a job that applies its output itself
/// ([`Job::direct`]) runs here, at once ([`run`]).
pub fn inline() -> bool {
    INLINE.with(|i| i.get())
}

/// Runs one job to its end (the pool's job function).
pub fn run(job: Job) {
    let outcome = settle(&job);
    if let Some(back) = &job.back {
        let _ = back.send_blocking(Back::Done(outcome));
    }
}

/// Runs one job to its end, and says how it ended.
pub fn settle(job: &Job) -> Outcome {
    let spawned = match child::spawn_fds(&job.conn.target, &job.env, job.time.budget()) {
        Ok(spawned) => spawned,
        Err(e) => return Outcome::Failed(spawn_failed(&job.conn.target, &e)),
    };
    match &job.direct {
        Some(apply) => {
            let mut sink = |o: Output| {
                if let Output::Action(a) = o {
                    apply(a);
                }
            };
            let limits = Limits { timeout: job.time.timeout, max_output: job.max_output };
            let me = (&job.conn.id, job.conn.target.endpoint());
            let call = Call::new(&job.label, limits, me, false, &mut sink);
            let mut run = Run::new(job, spawned, Some(call));
            let outcome = run.finish();
            match run.call.take() {
                Some(call) => call.conclude(outcome),
                None => outcome,
            }
        }
        None => Run::new(job, spawned, None).finish(),
    }
}

/// The script, reaped on every path (see [`groups::reap`]).
struct Proc {
    pid: i32,
    group: GroupId,
    /// Opened only when the exit must be waited for ([`Proc::watch`]);
    /// `None` then on kernels without pidfd: waiting then polls.
    pidfd: Option<OwnedFd>,
    watched: bool,
    status: Option<std::process::ExitStatus>,
}

impl Proc {
    /// Opens the pidfd (once): most scripts have exited by the time their
    /// stdout ended, and are reaped without one (see [`WATCH_AFTER`]).
    fn watch(&mut self) {
        if !self.watched {
            self.watched = true;
            self.pidfd = child::pidfd_open(self.pid);
        }
    }

    fn try_status(&mut self, label: &str) -> io::Result<Option<std::process::ExitStatus>> {
        if self.status.is_none() {
            self.status = groups::reap(self.pid, label)?;
        }
        Ok(self.status)
    }

    /// Waits for the exit until `until` (`None`: for as long as it takes).
    fn wait_until(&mut self, until: Option<Instant>, label: &str) -> Option<ExitResult> {
        let mut nap = Duration::from_millis(1);
        loop {
            if self.status.is_none() {
                self.watch();
            }
            match self.try_status(label) {
                Ok(Some(s)) => return Some(Ok(s)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return None;
            }
            match &self.pidfd {
                Some(fd) => {
                    let mut fds = [pollfd(fd.as_raw_fd(), libc::POLLIN)];
                    poll(&mut fds, left);
                }
                None => {
                    std::thread::sleep(left.map_or(nap, |l| l.min(nap)));
                    nap = (nap * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only on an unexpected path (a panic): its group's budget ends it.
        if self.status.is_none() {
            let _ = self.wait_until(None, "");
        }
    }
}

/// One event's script while it runs.
struct Run<'a> {
    job: &'a Job,
    /// The output pipeline, when the worker applies the output itself
    /// ([`Job::direct`]); else the output is handed back.
    call: Option<Call<'a>>,
    proc: Proc,
    /// The payload's descriptor and how much of it is written.
    stdin: Option<(OwnedFd, usize)>,
    stdout: Option<OwnedFd>,
    /// Stdout read but not handed back yet: bytes after the last newline
    /// read cannot change anything before more come or stdout ends.
    pending: Vec<u8>,
    /// When stdout ended, until its end is handed back.
    eof_at: Option<Instant>,
    /// Stdout past `--max-output`: no longer read, but open until the
    /// script is reaped, so that the script dies of the gateway's SIGKILL,
    /// not of a SIGPIPE that would race it.
    held: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    errors: StderrLines<'a>,
    /// Stdout bytes read.
    sent: usize,
    deadline: Instant,
    /// When the exit is watched for, stdout open or not ([`WATCH_AFTER`]).
    watch_at: Instant,
}

/// Where a `ppoll` set has each descriptor (`usize::MAX`: not polled).
struct Slots {
    stdin: usize,
    stdout: usize,
    stderr: usize,
    exit: usize,
}

impl<'a> Run<'a> {
    fn new(job: &'a Job, s: Spawned, call: Option<Call<'a>>) -> Self {
        let proc = Proc { pid: s.pid, group: s.group, pidfd: None, watched: false, status: None };
        let errors = StderrLines::new(job.label.as_str(), &job.stderr);
        let stdin = (!job.stdin.is_empty()).then_some((s.stdin, 0));
        let deadline = job.time.deadline();
        let (stdout, stderr) = (Some(s.stdout), Some(s.stderr));
        let mut run = Run {
            job,
            call,
            proc,
            stdin,
            stdout,
            pending: Vec::new(),
            eof_at: None,
            held: None,
            stderr,
            errors,
            sent: 0,
            deadline,
            watch_at: Instant::now() + WATCH_AFTER,
        };
        run.start_feeding();
        run
    }

    /// Writes a small payload at once and closes stdin; a bigger one is
    /// written as the pipe takes it, from the poll loop.
    fn start_feeding(&mut self) {
        let Some((fd, _)) = &self.stdin else { return };
        let data = &self.job.stdin;
        if data.len() <= SMALL {
            // SAFETY: a write from a buffer we own to a descriptor we own.
            let _ = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            self.stdin = None;
            return;
        }
        // SAFETY: fcntl on a descriptor we own (our end of the pipe only).
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        self.feed_more();
    }

    /// Writes what the pipe takes now; closes stdin when all is written or
    /// the script will not read it.
    fn feed_more(&mut self) {
        let Some((fd, written)) = &mut self.stdin else { return };
        let data = &self.job.stdin;
        while *written < data.len() {
            let rest = &data[*written..];
            // SAFETY: a write from a buffer we own to a descriptor we own.
            let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                return;
            }
            if n <= 0 {
                break; // EPIPE: a script that does not read its input is fine
            }
            *written += n as usize;
        }
        self.stdin = None;
    }

    /// Runs the script to its end and says how it ended.
    fn finish(&mut self) -> Outcome {
        let status = self.exchange();
        if status.is_ok() && self.eof_at.is_some() {
            self.hand_back(true);
        }
        self.finish_stderr();
        self.stdin = None;
        match status {
            Ok(status) => outcome(status),
            Err(()) => self.timed_out(),
        }
    }

    /// Output and exit, until both are over or the deadline passes (`Err`).
    fn exchange(&mut self) -> Result<ExitResult, ()> {
        let mut exited: Option<(ExitResult, Instant)> = None;
        let mut nap = Duration::from_millis(1);
        loop {
            if exited.is_none() {
                exited = self.look_for_exit();
            }
            if let (None, Some((status, _))) = (&self.stdout, &exited) {
                return Ok(clone_status(status));
            }
            let now = Instant::now();
            // After the exit, stdout is read for a grace period at most.
            let grace_end = exited.as_ref().map(|(_, at)| *at + self.job.time.grace);
            let mut until = grace_end.map_or(self.deadline, |g| g.min(self.deadline));
            let tail_end = self.eof_at.map(|at| at + TAIL_WAIT);
            until = tail_end.map_or(until, |t| t.min(until));
            let mut wait = until.saturating_duration_since(now);
            if exited.is_none() && !self.proc.watched {
                wait = wait.min(self.watch_at.saturating_duration_since(now));
            } else if exited.is_none() && self.proc.pidfd.is_none() {
                wait = wait.min(nap);
                nap = (nap * 2).min(Duration::from_millis(50));
            }
            let (mut fds, slots) = self.poll_set(exited.is_none());
            poll(&mut fds[..], Some(wait));
            // Checked on every pass, not only when nothing was ready: a
            // script flooding stderr keeps the poll busy forever.
            let now = Instant::now();
            if now >= self.deadline {
                return Err(());
            }
            if grace_end.is_some_and(|g| now >= g) {
                self.background_holds_stdout();
                continue;
            }
            if tail_end.is_some_and(|t| now >= t) {
                self.hand_back(true);
            }
            let ready = |i: usize| i != usize::MAX && fds[i].revents != 0;
            if ready(slots.stdin) {
                self.feed_more();
            }
            if ready(slots.stdout) {
                self.read_stdout(fds[slots.stdout].revents);
            }
            if ready(slots.stderr) {
                self.read_stderr(fds[slots.stderr].revents);
            }
            if exited.is_none() && (ready(slots.exit) || (self.proc.watched && self.proc.pidfd.is_none())) {
                match self.proc.try_status(&self.job.label) {
                    Ok(Some(s)) => exited = Some((Ok(s), Instant::now())),
                    Ok(None) => {}
                    Err(e) => exited = Some((Err(e), Instant::now())),
                }
            }
        }
    }

    /// Once stdout has ended, or at [`WATCH_AFTER`]: the script is reaped
    /// if it has exited (usually, when its stdout ended), else its pidfd
    /// joins the poll from now on.
    fn look_for_exit(&mut self) -> Option<(ExitResult, Instant)> {
        if self.proc.watched || (self.stdout.is_some() && Instant::now() < self.watch_at) {
            return None;
        }
        let found = match self.proc.try_status(&self.job.label).transpose() {
            None if self.stdout.is_none() => self.exit_in_progress(),
            found => found,
        };
        if found.is_none() {
            self.proc.watch();
        }
        found.map(|r| (r, Instant::now()))
    }

    /// Stdout has ended but the script is not reapable yet: the kernel
    /// closes a process's files before it becomes a zombie, and the woken
    /// worker often runs first, on the CPU the exiting script needs. One
    /// `sched_yield` lets it finish, and one more `wait4` usually reaps it:
    /// two system calls instead of the pidfd's three (`pidfd_open`, a
    /// `ppoll`, `close`) and its wake-up (docs/bench-notes/reap19.md). A
    /// script that closed its pipes and runs on is watched for as before.
    fn exit_in_progress(&mut self) -> Option<ExitResult> {
        // SAFETY: no arguments; it only gives up the CPU.
        unsafe { libc::sched_yield() };
        self.proc.try_status(&self.job.label).transpose()
    }

    fn poll_set(&self, running: bool) -> ([libc::pollfd; 4], Slots) {
        let mut fds = [pollfd(-1, 0); 4];
        let mut slots = Slots { stdin: usize::MAX, stdout: usize::MAX, stderr: usize::MAX, exit: usize::MAX };
        let mut n = 0;
        let mut add = |fd: RawFd, events: i16, slot: &mut usize| {
            fds[n] = pollfd(fd, events);
            *slot = n;
            n += 1;
        };
        if let Some((fd, _)) = &self.stdin {
            add(fd.as_raw_fd(), libc::POLLOUT, &mut slots.stdin);
        }
        if let Some(fd) = &self.stdout {
            add(fd.as_raw_fd(), libc::POLLIN, &mut slots.stdout);
        }
        if let Some(fd) = &self.stderr {
            add(fd.as_raw_fd(), libc::POLLIN, &mut slots.stderr);
        }
        if let (true, Some(fd)) = (running, &self.proc.pidfd) {
            add(fd.as_raw_fd(), libc::POLLIN, &mut slots.exit);
        }
        (fds, slots)
    }

    /// One read of stdout (`revents`: what the poll saw on it). What it read
    /// is handed back at once when it holds a newline (a line to apply now)
    /// or passes `--max-output` (the gateway cuts there, and nothing more is
    /// read); other bytes wait for more. A pipe the poll saw hung up (every
    /// writer gone) that this read emptied is at its end: no second read
    /// (and poll) to see it return 0.
    fn read_stdout(&mut self, revents: i16) {
        let Some(fd) = &self.stdout else { return };
        let hung_up = revents & libc::POLLHUP != 0;
        if hung_up && revents & libc::POLLIN == 0 {
            return self.stdout_ended();
        }
        let mut buf = std::mem::MaybeUninit::<[u8; CHUNK]>::uninit();
        // Never more than one byte past the limit.
        let want = CHUNK.min(self.job.max_output.saturating_add(1) - self.sent);
        // SAFETY: reads into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                log::warn!("{}: reading stdout failed: {e}", self.job.label);
                // The end of the output: what came before goes back.
                self.stdout = None;
                self.eof_at = Some(Instant::now());
            }
            return;
        }
        if n == 0 {
            return self.stdout_ended();
        }
        self.sent += n as usize;
        // SAFETY: `read` initialised the first `n` bytes.
        let read = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        self.pending.extend_from_slice(read);
        let over = self.sent > self.job.max_output;
        if over {
            self.hand_back(false);
            self.held = self.stdout.take();
        } else if hung_up && (n as usize) < want {
            self.stdout_ended();
        } else if read.contains(&b'\n') {
            self.hand_back(false);
        }
    }

    /// The end of stdout: handed back with the exit (see [`TAIL_WAIT`]), or
    /// applied at once when the worker applies the output (nothing to
    /// travel back with the exit, and the reply goes out while the script
    /// is still exiting).
    fn stdout_ended(&mut self) {
        self.stdout = None;
        self.eof_at = Some(Instant::now());
        if self.call.is_some() {
            self.hand_back(true);
        }
    }

    /// Hands the pending stdout back (and its end), or applies it here.
    fn hand_back(&mut self, end: bool) {
        if end {
            self.eof_at = None;
        }
        let gone = match &mut self.call {
            Some(call) => {
                // Its event's future is gone (shutdown): as a failed send below.
                let gone = self.job.back.as_ref().is_some_and(|b| b.is_closed());
                if !gone && !call.is_cut() {
                    let fed = if end { call.feed_end(&self.pending) } else { call.feed(&self.pending) };
                    if fed.is_err() {
                        groups::kill_now(self.proc.group);
                    }
                }
                self.pending.clear();
                gone
            }
            None => {
                let bytes = std::mem::take(&mut self.pending);
                let back = Back::Output { group: self.proc.group, bytes, end };
                self.job.back.as_ref().is_none_or(|b| b.send_blocking(back).is_err())
            }
        };
        if gone {
            // Nobody reads the output any more: close the pipes, as
            // dropping the event's future did.
            self.stdout = None;
            self.stderr = None;
            self.eof_at = None;
        }
    }

    /// One read of stderr into the log (`revents`: what the poll saw; hung
    /// up with nothing to read is its end, no read needed).
    fn read_stderr(&mut self, revents: i16) {
        let Some(fd) = &self.stderr else { return };
        if revents & libc::POLLIN == 0 && revents & libc::POLLHUP != 0 {
            self.errors.end();
            self.stderr = None;
            return;
        }
        // Not zeroed: 4 KiB of memset per event was 4 % of the server's
        // instructions (callgrind), for a pipe that is nearly always empty.
        let mut buf = std::mem::MaybeUninit::<[u8; 4096]>::uninit();
        // SAFETY: reads into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 4096) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            return;
        }
        if n <= 0 {
            self.errors.end();
            self.stderr = None;
            return;
        }
        // SAFETY: `read` initialised the first `n` bytes.
        let read = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        self.errors.feed(read);
    }

    /// What is already in stderr is logged now; if a background job still
    /// holds it open, the rest is read on the reactor.
    fn finish_stderr(&mut self) {
        while let Some(fd) = &self.stderr {
            let mut fds = [pollfd(fd.as_raw_fd(), libc::POLLIN)];
            if poll(&mut fds, Some(Duration::ZERO)) == 0 {
                break;
            }
            self.read_stderr(fds[0].revents);
        }
        let Some(fd) = self.stderr.take() else { return };
        let lines = std::mem::replace(&mut self.errors, StderrLines::new("", &self.job.stderr)).into_owned();
        if let Ok(pipe) = Async::new(std::fs::File::from(fd)) {
            log_stderr_rest(pipe, lines);
        }
    }

    /// The script exited, but stdout is still open a grace period later.
    fn background_holds_stdout(&mut self) {
        let (label, grace) = (&self.job.label, self.job.time.grace);
        log::warn!(
            "{label}: a background process still holds stdout open after the script exited; \
             SIGTERM to its process group, SIGKILL in {grace:?} (redirect a background job's output, \
             e.g. >/dev/null)"
        );
        groups::terminate(self.proc.group);
        self.stdout = None;
    }

    /// The deadline passed: the group gets SIGTERM, SIGKILL after the grace
    /// (see [`super::process::Script::stop`]), and the script is reaped.
    fn timed_out(&mut self) -> Outcome {
        let (label, timeout, grace) = (&self.job.label, self.job.time.timeout, self.job.time.grace);
        log_overrun(label, &self.job.time, false);
        self.stdout = None;
        groups::terminate(self.proc.group);
        if self.proc.wait_until(Some(Instant::now() + grace), label).is_none() {
            // The group watcher sends it too; this one does not depend on it.
            groups::kill_now(self.proc.group);
            let _ = self.proc.wait_until(None, label);
        }
        Outcome::Failed(format!("timed out after {timeout:?}"))
    }
}

fn clone_status(status: &ExitResult) -> ExitResult {
    match status {
        Ok(s) => Ok(*s),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// `ppoll` over `fds` for `wait` at most (`None`: no limit); how many are
/// ready (0 on timeout or interruption).
fn poll(fds: &mut [libc::pollfd], wait: Option<Duration>) -> usize {
    let ts = wait.map(|w| libc::timespec {
        tv_sec: w.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: w.subsec_nanos() as libc::c_long,
    });
    let used = fds.iter().take_while(|f| f.fd >= 0).count();
    let tp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds[..used]` and `ts` are valid for the call; no signal mask.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), used as libc::nfds_t, tp, std::ptr::null()) };
    n.max(0) as usize
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::super::Spawn;
    use super::*;
    use crate::backend::env::EnvSettings;
    use crate::event::{Event, EventKind, Target};
    use crate::gateway::{self, sent_texts, Limits, Output};
    use crate::id::ConnId;

    /// A spawn transport running `sh -c CMD` for every event.
    fn spawn(limits: Limits, stderr: Stderr) -> Spawn {
        let env = EnvSettings { inherited: vec![("PATH".into(), "/usr/bin:/bin".into())], ..EnvSettings::default() };
        let mut s = Spawn::new(env, limits, stderr, 2);
        s.grace = Duration::from_millis(200);
        s
    }

    fn limits() -> Limits {
        Limits { timeout: Duration::from_secs(30), max_output: 1 << 20 }
    }

    fn event(cmd: &str, payload: Bytes) -> Event {
        let interpreter = Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), cmd.to_owned()].into());
        let target = Target { filename: "/bin/sh".into(), script_name: "/t".into(), path_info: "".into(), interpreter };
        event_for(target, payload)
    }

    fn event_for(target: Target, payload: Bytes) -> Event {
        let conn = Arc::new(ConnInfo { id: ConnId::parse("w").expect("id"), target, request: Default::default() });
        Event { kind: EventKind::Message { payload, binary: false }, conn, rooms: vec![], meta: vec![] }
    }

    /// Runs one event of `cmd`; its outcome and what it sent, in order;
    /// `seen` is called with each text as it comes.
    fn run_event(t: &Spawn, cmd: &str, payload: Bytes, seen: &mut (dyn FnMut(&str) + Send)) -> (Outcome, Vec<String>) {
        let mut items = Vec::new();
        let mut sink = |o: Output| {
            if let Some(text) = sent_texts(std::slice::from_ref(&o)).first() {
                seen(text);
            }
            items.push(o);
        };
        let outcome = crate::runtime::block_on(gateway::run(t, &event(cmd, payload), &mut sink));
        (outcome, sent_texts(&items))
    }

    /// Runs one event of `cmd` with the worker applying the actions itself
    /// (`Call::direct`, as for message and close events in the server):
    /// its outcome and the texts sent; `on_text` sees each as it is applied.
    fn run_direct(
        t: &Spawn,
        cmd: &str,
        payload: Bytes,
        on_text: impl Fn(&str) + Send + Sync + 'static,
    ) -> (Outcome, Vec<String>) {
        let texts = Arc::new(Mutex::new(Vec::new()));
        let seen = texts.clone();
        let apply: gateway::Apply = Arc::new(move |a| {
            if let Some(text) = sent_texts(&[Output::Action(a)]).first() {
                on_text(text);
                seen.lock().expect("lock").push(text.clone());
            }
        });
        let ev = event(cmd, payload);
        let outcome = crate::runtime::block_on(async {
            let slot = gateway::Transport::slots(t).acquire().await;
            let mut nothing = |o: Output| panic!("the worker applies the output itself, not the caller: {o:?}");
            gateway::run_with(t, &ev, &mut nothing, slot, Some(apply)).await
        });
        let texts = texts.lock().expect("lock").clone();
        (outcome, texts)
    }

    /// The worker's own output pipeline gives what the event's task gives:
    /// streamed lines, a last line without newline, a whole-body message,
    /// a refused header block, the output limit, the exit status.
    #[test]
    fn applied_by_the_worker_as_by_the_task() {
        let t = spawn(Limits { timeout: Duration::from_secs(30), max_output: 1000 }, Stderr::Log);
        let cmds = [
            "echo one; echo two; printf three",
            "printf 'Content-Type: application/json\\n\\n{\"a\":\\n1}'",
            "printf 'Content-Type: text/plain\\nContent-Type: text/html\\n\\nhi\\n'",
            "echo a; exit 3",
            "trap '' TERM; while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxx; done",
            "cat",
        ];
        for cmd in cmds {
            let by_task = run_event(&t, cmd, Bytes::from_static(b"payload"), &mut |_| {});
            let by_worker = run_direct(&t, cmd, Bytes::from_static(b"payload"), |_| {});
            if cmd.contains("while") {
                // How many lines fit before the cut depends on the reads.
                assert_eq!(by_task.0, by_worker.0, "{cmd}");
                assert!(by_worker.1.len() > 10 && by_worker.1.len() < 40, "{cmd}: {}", by_worker.1.len());
            } else {
                assert_eq!(by_task, by_worker, "{cmd}");
            }
        }
    }

    /// Applied as they come, while the script runs: the script prints its
    /// second line only once the worker applied the first.
    #[test]
    fn applied_by_the_worker_while_the_script_runs() {
        let t = spawn(limits(), Stderr::Log);
        let flag = std::env::temp_dir().join(format!("ws2http-worker-direct-{}", std::process::id()));
        let _ = std::fs::remove_file(&flag);
        let cmd = format!("echo one; while [ ! -e {0} ]; do sleep 0.01; done; echo two", flag.display());
        let mark = flag.clone();
        let (outcome, texts) = run_direct(&t, &cmd, Bytes::new(), move |text| {
            if text == "one" {
                std::fs::write(&mark, b"").expect("flag");
            }
        });
        let _ = std::fs::remove_file(&flag);
        assert_eq!((outcome, texts), (Outcome::Success, vec!["one".to_owned(), "two".to_owned()]));
    }

    fn gone(pid: i32) -> bool {
        // SAFETY: signal 0 only checks whether the pid exists.
        unsafe { libc::kill(pid, 0) != 0 }
    }

    /// The first line reaches the gateway while the script still runs: the
    /// script prints the second only once the first was applied.
    #[test]
    fn output_is_streamed_in_order_while_the_script_runs() {
        let t = spawn(limits(), Stderr::Log);
        let flag = std::env::temp_dir().join(format!("ws2http-worker-{}", std::process::id()));
        let _ = std::fs::remove_file(&flag);
        let cmd = format!("echo one; while [ ! -e {0} ]; do sleep 0.01; done; echo two; printf three", flag.display());
        let (outcome, texts) = run_event(&t, &cmd, Bytes::new(), &mut |text| {
            if text == "one" {
                std::fs::write(&flag, b"").expect("flag");
            }
        });
        let _ = std::fs::remove_file(&flag);
        assert_eq!(outcome, Outcome::Success);
        assert_eq!(texts, ["one", "two", "three"]);
    }

    /// 1 MiB in, 200 KB out before the script reads a byte: no deadlock.
    #[test]
    fn a_big_payload_and_a_big_output_do_not_deadlock() {
        let t = spawn(limits(), Stderr::Log);
        let payload = Bytes::from(vec![b'a'; 1 << 20]);
        let cmd = "i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done; wc -c";
        let (outcome, texts) = run_event(&t, cmd, payload, &mut |_| {});
        assert_eq!(outcome, Outcome::Success);
        assert_eq!(texts.len(), 20_001);
        assert_eq!(texts[19_999], "line19999");
        assert_eq!(texts[20_000].trim(), "1048576", "the script read the whole payload");
    }

    /// Past --max-output the group is killed at once, even a script that
    /// ignores SIGTERM; what came before the cut was applied.
    #[test]
    fn max_output_kills_the_group_at_once() {
        let t = spawn(Limits { timeout: Duration::from_secs(30), max_output: 1000 }, Stderr::Log);
        let cmd = "trap '' TERM; echo $$; while :; do echo xxxxxxxxxxxxxxxxxxxxxxxxx; done";
        let (outcome, texts) = run_event(&t, cmd, Bytes::new(), &mut |_| {});
        assert_eq!(outcome, Outcome::Failed(format!("{} (killed by signal 9)", gateway::OUTPUT_LIMIT)));
        assert!(texts.len() > 10 && texts.len() < 40, "{} lines", texts.len());
        assert!(gone(texts[0].parse().expect("the script's pid")), "the script was reaped");
    }

    /// At the deadline a script that ignores SIGTERM gets SIGKILL after the
    /// grace, and is reaped; the lines before the deadline were applied.
    #[test]
    fn the_deadline_kills_a_script_that_ignores_sigterm() {
        let t = spawn(Limits { timeout: Duration::from_millis(300), max_output: 1 << 20 }, Stderr::Log);
        let cmd = "trap '' TERM; echo $$; while :; do sleep 0.05; done";
        let (outcome, texts) = run_event(&t, cmd, Bytes::new(), &mut |_| {});
        assert_eq!(outcome, Outcome::Failed("timed out after 300ms".into()));
        assert!(gone(texts[0].parse().expect("the script's pid")), "the script was killed and reaped");
    }

    /// The deadline holds while stderr never stops being ready (the worker
    /// checks it on every pass of its poll, not only when nothing was ready).
    #[test]
    fn the_deadline_holds_while_stderr_floods() {
        let t = spawn(Limits { timeout: Duration::from_millis(300), max_output: 1 << 20 }, Stderr::Log);
        let cmd = "trap '' TERM; echo $$; exec cat /dev/zero >&2";
        let (outcome, texts) = run_event(&t, cmd, Bytes::new(), &mut |_| {});
        assert_eq!(outcome, Outcome::Failed("timed out after 300ms".into()));
        assert!(gone(texts[0].parse().expect("the script's pid")), "the script was killed and reaped");
    }

    /// A script that closes its pipes and runs on is not taken for one that
    /// is exiting (a `sched_yield` and one more `wait4`, then its exit is
    /// watched for): its deadline holds, on both paths, and it is reaped.
    #[test]
    fn the_deadline_holds_for_a_script_that_closed_its_pipes() {
        let t = spawn(Limits { timeout: Duration::from_millis(300), max_output: 1 << 20 }, Stderr::Log);
        let cmd = "echo $$; exec >&- 2>&-; trap '' TERM; sleep 30";
        let timed_out = Outcome::Failed("timed out after 300ms".into());
        let (outcome, texts) = run_event(&t, cmd, Bytes::new(), &mut |_| {});
        assert_eq!(outcome, timed_out);
        assert!(gone(texts[0].parse().expect("the script's pid")), "the script was killed and reaped");
        let (outcome, texts) = run_direct(&t, cmd, Bytes::new(), |_| {});
        assert_eq!(outcome, timed_out);
        assert!(gone(texts[0].parse().expect("the script's pid")), "the script was killed and reaped");
    }

    /// A background job that keeps stdout open and floods stderr after the
    /// script exited is cut at the grace, not at the end of the budget.
    #[test]
    fn a_background_job_flooding_stderr_is_cut_at_the_grace() {
        let t = spawn(Limits { timeout: Duration::from_secs(30), max_output: 1 << 20 }, Stderr::Log);
        let started = Instant::now();
        let cmd = "echo done; cat /dev/zero >&2 & exit 0";
        let (outcome, texts) = run_event(&t, cmd, Bytes::new(), &mut |_| {});
        assert_eq!((outcome, texts), (Outcome::Success, vec!["done".to_owned()]));
        assert!(started.elapsed() < Duration::from_secs(20), "ended at the grace, not at the 30 s budget");
    }

    /// A script that closes stdout and runs on is still waited for (its
    /// exit watched for once its stdout ended), by the task and by the
    /// worker applying the output, and its status is the outcome; so is a
    /// script that exits at once.
    #[test]
    fn the_exit_is_waited_for_after_stdout_ended() {
        let t = spawn(limits(), Stderr::Log);
        let failed = Outcome::Failed("exited with status 3".into());
        for cmd in ["echo one; exec >&- 2>&-; sleep 0.2; exit 3", "echo one; exit 3"] {
            let (outcome, texts) = run_event(&t, cmd, Bytes::new(), &mut |_| {});
            assert_eq!((&outcome, texts), (&failed, vec!["one".to_owned()]), "{cmd}");
            let (outcome, texts) = run_direct(&t, cmd, Bytes::new(), |_| {});
            assert_eq!((&outcome, texts), (&failed, vec!["one".to_owned()]), "{cmd}");
        }
    }

    /// Stderr becomes lines (collected here; logged by the server), a long
    /// one cut, and the exit status is the outcome.
    #[test]
    fn stderr_lines_are_logged_and_the_status_reported() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let t = spawn(limits(), Stderr::Collect(buf.clone()));
        let cmd = "echo err1 >&2; printf '%5000s\\n' x >&2; printf tail >&2; echo out; exit 3";
        let (outcome, texts) = run_event(&t, cmd, Bytes::new(), &mut |_| {});
        assert_eq!(outcome, Outcome::Failed("exited with status 3".into()));
        assert_eq!(texts, ["out"]);
        let got = buf.lock().expect("lock").clone();
        let mut want = b"err1\n".to_vec();
        want.extend_from_slice(&[b' '; 4096]);
        want.extend_from_slice(b"tail");
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    }

    /// A script that cannot start fails the event with the usual text.
    #[test]
    fn a_missing_script_fails_with_the_usual_text() {
        let t = spawn(limits(), Stderr::Log);
        let target = Target {
            filename: "/nonexistent/x.sh".into(),
            script_name: "/x.sh".into(),
            path_info: "".into(),
            interpreter: None,
        };
        let ev = event_for(target, Bytes::new());
        let outcome = crate::runtime::block_on(gateway::run(&t, &ev, &mut |_| {}));
        assert_eq!(
            outcome,
            Outcome::Failed("cannot start /nonexistent/x.sh: the script file is gone (deleted or renamed)".into())
        );
    }
}
