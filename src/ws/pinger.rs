//! The writer's ping timer (`--ping-interval`), apart from the connection
//! loop it serves: one timer per connection, and the rule that tells a
//! silent client (drop it, 1006) from a slow one (it is still taking bytes).

use std::task::{Context, Poll};
use std::time::Duration;

use crate::action::CloseCause;
use crate::hub::shared::{CloseRequest, ConnShared, Ending};
use crate::runtime;

/// `--ping-interval`: one timer for the whole connection, not one per
/// message (creating an async-io timer wakes the reactor thread, which cost
/// every recipient of a fan-out a system call).
pub(super) struct Pinger {
    ticks: Option<runtime::Interval>,
    every: Duration,
    /// When the last ping went out (ms on [`runtime::clock_ms`]).
    pub(super) sent_at: Option<u64>,
}

impl Pinger {
    pub(super) fn new(every: Option<Duration>) -> Self {
        Pinger { ticks: every.map(runtime::Interval::new), every: every.unwrap_or_default(), sent_at: None }
    }

    /// `Ready` at the next tick (never, without pings). A poll, not an
    /// `async fn`: the writer waits on it beside its queue in every idle
    /// connection's task, where a future would take room for good.
    pub(super) fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.ticks {
            Some(t) => t.poll_tick(cx),
            None => Poll::Pending,
        }
    }

    pub(super) fn pinged(&mut self) {
        self.sent_at = Some(runtime::clock_ms());
    }

    /// `true` when a ping went out and the client has sent nothing since.
    pub(super) fn unanswered(&self, shared: &ConnShared) -> bool {
        self.sent_at.is_some_and(|sent| shared.last_seen() < sent)
    }

    /// Like [`Pinger::unanswered`] while a write is blocked: the client has
    /// also taken none of the bytes written to it since the last ping.
    pub(super) fn stalled(&self, shared: &ConnShared) -> bool {
        self.unanswered(shared) && self.sent_at.is_some_and(|sent| shared.last_written() < sent)
    }

    /// Drops the connection (1006, no close frame), with its one log line.
    pub(super) fn time_out(&self, shared: &ConnShared) {
        let why = format!("no answer to a ping within {:?}; dropping the connection", self.every);
        let req = CloseRequest { code: 1006, reason: String::new(), cause: CloseCause::PingTimeout };
        shared.request_close(req, Ending::Record, Some(why));
    }
}
