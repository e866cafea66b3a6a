//! The spawn transport's side of one process per connection
//! (`--per-connection`): starts the endpoint's script once, when the
//! handshake is accepted, with the environment of an open event, and hands
//! its stdin and stdout to the connection as async pipes (`ws::resident`
//! drives them on the reactor: no thread per connection). Its stderr goes
//! to the log, one line per line, as for event scripts, and its exit is
//! noticed through its pidfd: both watched by one thread for every such
//! process ([`super::watch`]; no reactor source, no buffer while idle).
//!
//! The process group's budget is the connection's life, not `--timeout`:
//! the connection ends it ([`Child::end_group`], after the close
//! escalation), and a shutdown stops it with every other group
//! ([`groups::stop_all`]). A process nobody reaped (its connection's task
//! panicked, or it was dropped before it started) is killed with its group
//! when it is dropped: its budget of a hundred years must not make it live
//! until shutdown.

use std::fs::File;
use std::future::Future;
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use super::child::{self, EnvBlock, Spawned};
use super::groups::{self, Budget, GroupId};
use super::process::{outcome, spawn_failed};
use super::watch::Watched;
use super::Spawn;
use crate::backend::env;
use crate::event::{ConnInfo, Event, EventKind};
use crate::gateway::resident::{self as gw, Process, Signal, Starter};
use crate::gateway::Outcome;
use crate::runtime;

/// Longer than any connection: the group ends with its connection.
const FOREVER: Duration = Duration::from_secs(86_400 * 365 * 100);

impl Starter for Spawn {
    fn start(&self, conn: &Arc<ConnInfo>, grace: Duration) -> Result<Process, String> {
        let mut vars = EnvBlock::with_capacity(4096, 48);
        let event = Event { kind: EventKind::Open, conn: conn.clone(), rooms: Vec::new(), meta: Vec::new() };
        env::event_vars(&mut vars, &self.env, &event);
        let target = &conn.target;
        let budget = Budget::from_now(FOREVER, grace);
        let Spawned { pid, group, stdin, stdout, stderr } =
            child::spawn_argv(target, &self.launch, &vars, budget).map_err(|e| spawn_failed(target, &e))?;
        let pidfd = child::pidfd_open(pid);
        // Until `Resident` owns it: a failure below stops and reaps it.
        let failed = |why: String, pidfd: Option<std::os::fd::OwnedFd>| {
            groups::kill_now(group);
            drop(child::adopt(pid, group, pidfd));
            why
        };
        let stdin = File::from(stdin);
        if let Err(e) = child::set_nonblocking(&stdin) {
            return Err(failed(format!("cannot make the process's stdin non-blocking: {e}"), pidfd));
        }
        let stdout = match runtime::Async::new(File::from(stdout)) {
            Ok(out) => out,
            Err(e) => return Err(failed(format!("cannot watch the process's stdout: {e}"), pidfd)),
        };
        // The pidfd's copy goes with a failed `Watched::new`; the process
        // is reaped by polling then.
        let watched = Watched::new(conn.clone(), &self.stderr, stderr, pidfd)
            .map_err(|e| failed(format!("cannot watch the process's stderr and exit: {e}"), None))?;
        let child = Resident { pid, group, status: None, conn: conn.clone(), watched, nap: None };
        Ok(Process { stdin, stdout, child: Box::new(child) })
    }
}

/// A per-connection process: its pid and group, its stderr and exit
/// watched by [`super::watch`] (no reactor source for either), its log
/// label made from the connection only when needed.
struct Resident {
    pid: i32,
    group: GroupId,
    status: Option<ExitStatus>,
    conn: Arc<ConnInfo>,
    watched: Watched,
    /// Without pidfd (kernels before 5.3): the pause before looking again.
    nap: Option<Box<runtime::Timer>>,
}

impl Resident {
    /// Names the run in the log if processes it started outlive it.
    fn label(&self) -> String {
        format!("[{}] {} process", self.conn.id, self.conn.target.endpoint())
    }

    /// Reaps the process if it has exited.
    fn try_status(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = groups::reap(self.pid, &self.label())?;
        }
        Ok(self.status)
    }

    /// The exit status once the process is reaped. A poll before the exit
    /// costs no system call (the pidfd is watched by [`super::watch`]).
    fn poll_status(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<ExitStatus>> {
        loop {
            if let Some(s) = self.status {
                return Poll::Ready(Ok(s));
            }
            if self.watched.watches_exit() {
                ready!(self.watched.poll_exit(cx));
            } else {
                let nap = self.nap.get_or_insert_with(|| Box::new(runtime::Timer::after(Duration::from_millis(20))));
                ready!(std::pin::Pin::new(&mut **nap).poll(cx));
                self.nap = None;
            }
            match self.try_status()? {
                Some(s) => return Poll::Ready(Ok(s)),
                None if self.watched.watches_exit() => self.watched.rearm_exit(),
                None => {}
            }
        }
    }
}

impl gw::Child for Resident {
    fn signal(&self, sig: Signal) -> bool {
        match sig {
            Signal::Int => groups::interrupt(self.group),
            Signal::Term => groups::term_now(self.group),
            Signal::Kill => groups::kill_now(self.group),
        }
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<String> {
        let status = ready!(self.poll_status(cx));
        Poll::Ready(match outcome(status) {
            Outcome::Success => "exited with status 0".into(),
            Outcome::Failed(why) | Outcome::Unavailable(why) => why,
        })
    }

    fn end_group(&self) {
        groups::terminate(self.group);
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        match self.try_status() {
            // Reaped: what it left gets SIGTERM, SIGKILL a grace later (a
            // no-op after `end_group`).
            Ok(Some(_)) => groups::terminate(self.group),
            // Still running, nobody will wait for it: it and its group go
            // now, and it is reaped in the background.
            Ok(None) | Err(_) => {
                groups::kill_now(self.group);
                drop(child::adopt(self.pid, self.group, self.watched.take_pidfd()));
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
    use crate::id::ConnId;

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
        let budget = Budget::from_now(FOREVER, Duration::from_secs(1));
        let Spawned { pid, group, stderr, .. } =
            child::spawn_argv(&target, &child::Launch::PLAIN, &env, budget).expect("spawn sh");
        assert!(tracked(pid));
        let conn = Arc::new(ConnInfo { id: ConnId::parse("r").expect("id"), target, request: Default::default() });
        let watched = Watched::new(conn.clone(), &Default::default(), stderr, child::pidfd_open(pid)).expect("watched");
        drop(Resident { pid, group, status: None, conn, watched, nap: None });
        let pgid = pid;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tracked(pgid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!tracked(pgid), "the group outlived its dropped process");
        // SAFETY: signal 0 only checks whether the group has a member.
        assert_ne!(unsafe { libc::kill(-pgid, 0) }, 0, "a member of the group still runs");
    }
}
