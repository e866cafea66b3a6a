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
//! poll's timeout is the deadline: no timer on the reactor). The async side
//! ([`super::process::run`]) hands one [`Job`] over and gets back one
//! [`Back::Chunk`] per read of stdout, which it feeds to the gateway's one
//! output pipeline ([`crate::gateway::Call::feed`]: line splitting, limits
//! and directives stay there), then [`Back::Done`].
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
use super::groups::{self, Budget, GroupId};
use super::process::{log_stderr_rest, outcome, spawn_failed, ExitResult, Stderr, StderrLines, Time};
use crate::event::ConnInfo;
use crate::gateway::Outcome;
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
    pub back: async_channel::Sender<Back>,
}

/// What a worker hands back.
#[derive(Debug)]
pub enum Back {
    /// Bytes of stdout, as read, and the group to kill if they are too many.
    Chunk(GroupId, Vec<u8>),
    /// The run is over: how it ended.
    Done(Outcome),
}

/// The most stdout read (and handed back) at once.
const CHUNK: usize = 16 * 1024;
/// A payload this small is written at once, even to a blocking pipe: a fresh
/// pipe always has room for one page (even at the per-user pipe limit).
const SMALL: usize = 4096;

/// Runs one job to its end (the pool's job function).
pub fn run(job: Job) {
    let outcome = match child::spawn_fds(&job.conn.target, &job.env, job.time.budget()) {
        Ok(spawned) => Run::new(&job, spawned).finish(),
        Err(e) => Outcome::Failed(spawn_failed(&job.conn.target, &e)),
    };
    let _ = job.back.send_blocking(Back::Done(outcome));
}

/// The script, reaped on every path (see [`groups::reap`]).
struct Proc {
    pid: i32,
    group: GroupId,
    /// `None` on kernels without pidfd: waiting then polls.
    pidfd: Option<OwnedFd>,
    status: Option<std::process::ExitStatus>,
}

impl Proc {
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
    proc: Proc,
    /// The payload's descriptor and how much of it is written.
    stdin: Option<(OwnedFd, usize)>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    errors: StderrLines<'a>,
    /// Stdout bytes handed back.
    sent: usize,
    deadline: Instant,
}

/// Where a `ppoll` set has each descriptor (`usize::MAX`: not polled).
struct Slots {
    stdin: usize,
    stdout: usize,
    stderr: usize,
    exit: usize,
}

impl<'a> Run<'a> {
    fn new(job: &'a Job, s: Spawned) -> Self {
        let pidfd = child::pidfd_open(s.pid);
        let proc = Proc { pid: s.pid, group: s.group, pidfd, status: None };
        let errors = StderrLines::new(job.label.as_str(), &job.stderr);
        let stdin = (!job.stdin.is_empty()).then_some((s.stdin, 0));
        let deadline = job.time.deadline();
        let mut run =
            Run { job, proc, stdin, stdout: Some(s.stdout), stderr: Some(s.stderr), errors, sent: 0, deadline };
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
    fn finish(mut self) -> Outcome {
        let status = self.exchange();
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
            if let (None, Some((status, _))) = (&self.stdout, &exited) {
                return Ok(clone_status(status));
            }
            let now = Instant::now();
            // After the exit, stdout is read for a grace period at most.
            let grace_end = exited.as_ref().map(|(_, at)| *at + self.job.time.grace);
            let until = grace_end.map_or(self.deadline, |g| g.min(self.deadline));
            let mut wait = until.saturating_duration_since(now);
            if exited.is_none() && self.proc.pidfd.is_none() {
                wait = wait.min(nap);
                nap = (nap * 2).min(Duration::from_millis(50));
            }
            let (mut fds, slots) = self.poll_set(exited.is_none());
            let n = poll(&mut fds[..], Some(wait));
            if n == 0 && Instant::now() >= self.deadline {
                return Err(());
            }
            if n == 0 && grace_end.is_some_and(|g| Instant::now() >= g) {
                self.background_holds_stdout();
                continue;
            }
            let ready = |i: usize| i != usize::MAX && fds[i].revents != 0;
            if ready(slots.stdin) {
                self.feed_more();
            }
            if ready(slots.stdout) {
                self.read_stdout();
            }
            if ready(slots.stderr) {
                self.read_stderr();
            }
            if exited.is_none() && (ready(slots.exit) || self.proc.pidfd.is_none()) {
                match self.proc.try_status(&self.job.label) {
                    Ok(Some(s)) => exited = Some((Ok(s), Instant::now())),
                    Ok(None) => {}
                    Err(e) => exited = Some((Err(e), Instant::now())),
                }
            }
        }
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

    /// One read of stdout, handed back as one chunk.
    fn read_stdout(&mut self) {
        let Some(fd) = &self.stdout else { return };
        let mut buf = std::mem::MaybeUninit::<[u8; CHUNK]>::uninit();
        // Never more than one byte past the limit: the gateway cuts there.
        let want = CHUNK.min(self.job.max_output.saturating_add(1) - self.sent);
        // SAFETY: reads into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                log::warn!("{}: reading stdout failed: {e}", self.job.label);
                self.stdout = None;
            }
            return;
        }
        if n == 0 {
            self.stdout = None;
            return;
        }
        self.sent += n as usize;
        // SAFETY: `read` initialised the first `n` bytes.
        let read = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        let chunk = Back::Chunk(self.proc.group, read.to_vec());
        if self.job.back.send_blocking(chunk).is_err() {
            // Nobody reads the output any more: close the pipes, as
            // dropping the event's future did.
            self.stdout = None;
            self.stderr = None;
        } else if self.sent > self.job.max_output {
            self.stdout = None;
        }
    }

    /// One read of stderr into the log.
    fn read_stderr(&mut self) {
        let Some(fd) = &self.stderr else { return };
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a buffer we own, at most its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            return;
        }
        if n <= 0 {
            self.errors.end();
            self.stderr = None;
            return;
        }
        self.errors.feed(&buf[..n as usize]);
    }

    /// What is already in stderr is logged now; if a background job still
    /// holds it open, the rest is read on the reactor.
    fn finish_stderr(&mut self) {
        while let Some(fd) = &self.stderr {
            let mut fds = [pollfd(fd.as_raw_fd(), libc::POLLIN)];
            if poll(&mut fds, Some(Duration::ZERO)) == 0 {
                break;
            }
            self.read_stderr();
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
        log::warn!("{label}: still running after {timeout:?}; terminating its process group");
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
