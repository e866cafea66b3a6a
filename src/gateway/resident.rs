//! What the WebSocket side needs from a transport to run one process per
//! connection (`--per-connection`, docs/PROTOCOL.md "One process per
//! connection"): a started process with its stdout as an async pipe, its stdin
//! a non-blocking pipe,
//! and a way to signal its process group and wait for it; its stderr is
//! the transport's (logged).
//!
//! Only a transport that spawns local scripts can offer it
//! ([`super::Transport::starter`]); the connection's life around the process
//! (stdin from messages, stdout lines to the hub, the exit and the close
//! escalation) is `ws::resident`'s, so no backend is named there.

use std::sync::Arc;
use std::time::Duration;

use std::task::{Context, Poll};

use crate::event::ConnInfo;

/// One end of a pipe to or from the process, on the reactor.
pub type Pipe = crate::runtime::Async<std::fs::File>;

/// A signal for the process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
    Kill,
}

/// A running per-connection process.
pub trait Child: Send {
    /// Sends `sig` to the process group, if anything of it is still running
    /// (`false`: nothing was). Nothing is scheduled: the caller times the
    /// next step.
    fn signal(&self, sig: Signal) -> bool;
    /// Ready once the process has exited and is reaped (once; may be
    /// polled again): how it ended, for the log. A poll before the exit is
    /// cheap (no system call, no allocation): it is polled at every step.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<String>;
    /// Stops whatever the process left in its group (SIGTERM, SIGKILL a
    /// grace later): the group's budget ends with the connection.
    fn end_group(&self);
}

/// A started process.
pub struct Process {
    /// Non-blocking; not on the reactor yet (registered by the connection
    /// only if a write would block).
    pub stdin: std::fs::File,
    pub stdout: Pipe,
    /// Its stderr goes to the log (read by the transport, until every
    /// writer closed it) and its exit is watched there too.
    pub child: Box<dyn Child>,
}

/// Starts per-connection processes (stderr goes to the log, one line per line).
pub trait Starter: Send + Sync {
    /// Starts the process of `conn`; `grace`: its group's SIGTERM-to-SIGKILL
    /// delay. `Err` says why it could not start, for the log.
    fn start(&self, conn: &Arc<ConnInfo>, grace: Duration) -> Result<Process, String>;
}
