//! The spawn transport's side of one process per connection
//! (`--per-connection`): starts the endpoint's script once, when the
//! handshake is accepted, with the environment of an open event, and hands
//! its stdin and stdout to the connection as async pipes (`ws::resident`
//! drives them on the reactor: no thread per connection). Its stderr goes
//! to the log, one line per line, as for event scripts: read by the
//! connection's future too (no pump task, no buffer while idle), handed to
//! a background pump only if a leftover still holds it at the end.
//!
//! The process group's budget is the connection's life, not `--timeout`:
//! the connection ends it ([`Child::end_group`], after the close
//! escalation), and a shutdown stops it with every other group
//! ([`groups::stop_all`]). A process nobody reaped (its connection's task
//! panicked, or it was dropped before it started) is killed with its group
//! when it is dropped: its budget of a hundred years must not make it live
//! until shutdown.

use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use super::child::{self, EnvBlock};
use super::groups::{self, Budget};
use super::process::{log_stderr_rest, outcome, spawn_failed, StderrLines};
use super::Spawn;
use crate::backend::env;
use crate::event::{ConnInfo, Event, EventKind};
use crate::gateway::resident::{self as gw, Process, Signal, Starter};
use crate::gateway::Outcome;

/// Longer than any connection: the group ends with its connection.
const FOREVER: Duration = Duration::from_secs(86_400 * 365 * 100);

impl Starter for Spawn {
    fn start(&self, conn: &Arc<ConnInfo>, grace: Duration) -> Result<Process, String> {
        let mut vars = EnvBlock::with_capacity(4096, 48);
        let event = Event { kind: EventKind::Open, conn: conn.clone(), rooms: Vec::new(), meta: Vec::new() };
        env::event_vars(&mut vars, &self.env, &event);
        let target = &conn.target;
        let budget = Budget::from_now(FOREVER, grace);
        let mut child =
            child::spawn_with_args(target, &self.launch, &vars, budget).map_err(|e| spawn_failed(target, &e))?;
        let label = format!("[{}] {} process", conn.id, target.endpoint());
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
            groups::kill_now(child.group());
            return Err("the process's pipes were not captured".into());
        };
        let stdin = std::fs::File::from(stdin);
        if let Err(e) = set_nonblocking(&stdin) {
            groups::kill_now(child.group());
            return Err(format!("cannot make the process's stdin non-blocking: {e}"));
        }
        let lines = Some(StderrLines::new(label.clone(), &self.stderr).into_owned());
        Ok(Process { stdin, stdout, stderr, child: Box::new(Resident { child, label, lines }) })
    }
}

/// Writes to the pipe return `WouldBlock` instead of waiting: the
/// connection registers it with the reactor only then.
fn set_nonblocking(pipe: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl on a descriptor `pipe` owns, for its flags only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A per-connection process: the child, its log label and its stderr's
/// lines (until they go to a background pump or end).
struct Resident {
    child: child::Child,
    label: String,
    lines: Option<StderrLines<'static>>,
}

impl gw::Child for Resident {
    fn signal(&self, sig: Signal) -> bool {
        let group = self.child.group();
        match sig {
            Signal::Int => groups::interrupt(group),
            Signal::Term => groups::term_now(group),
            Signal::Kill => groups::kill_now(group),
        }
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<String> {
        let status = ready!(self.child.poll_status(cx, &self.label));
        Poll::Ready(match outcome(status) {
            Outcome::Success => "exited with status 0".into(),
            Outcome::Failed(why) | Outcome::Unavailable(why) => why,
        })
    }

    fn end_group(&self) {
        groups::terminate(self.child.group());
    }

    fn stderr(&mut self, data: &[u8]) {
        if let Some(lines) = &mut self.lines {
            lines.feed(data);
        }
    }

    fn stderr_end(&mut self, rest: Option<gw::Pipe>) {
        let Some(mut lines) = self.lines.take() else { return };
        match rest {
            Some(pipe) => log_stderr_rest(pipe, lines),
            None => lines.end(),
        }
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        match self.child.try_status(&self.label) {
            // Reaped: what it left gets SIGTERM, SIGKILL a grace later (a
            // no-op after `end_group`).
            Ok(Some(_)) => groups::terminate(self.child.group()),
            // Still running, nobody will wait for it: it and its group go now.
            Ok(None) | Err(_) => {
                groups::kill_now(self.child.group());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::groups::tests::{serial, tracked};
    use super::*;
    use crate::backend::env::EnvSink;
    use crate::event::Target;

    /// A per-connection process dropped without being reaped (its task
    /// panicked): its group, a background job too, is killed and forgotten.
    #[test]
    fn a_dropped_process_takes_its_group_with_it() {
        let _serial = serial();
        let target = Target {
            filename: "/bin/sh".into(),
            script_name: String::new(),
            path_info: String::new(),
            interpreter: Some(vec!["/bin/sh".into(), "-c".into(), "sleep 300 & sleep 300".into()].into()),
        };
        let mut env = EnvBlock::default();
        env.set("PATH", "/usr/bin:/bin");
        let child = child::spawn(&target, &env, Budget::from_now(FOREVER, Duration::from_secs(1))).expect("spawn sh");
        let pgid = child.id();
        assert!(tracked(pgid));
        drop(Resident { child, label: "test".into(), lines: None });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tracked(pgid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!tracked(pgid), "the group outlived its dropped process");
        // SAFETY: signal 0 only checks whether the group has a member.
        assert_ne!(unsafe { libc::kill(-pgid, 0) }, 0, "a member of the group still runs");
    }
}
