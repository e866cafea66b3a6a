//! One connection's events, one at a time and in order, across a move
//! (cluster mode; docs/notes17/cluster-resume.md "Events across a move").
//!
//! When a session moves from instance A to B, A's subscriber does not wait
//! for the message events the session had queued there: they still run on
//! A. So that they do not overlap or follow the events of what its client
//! sends on B (or its close event there), A's snapshot says whether its
//! event worker still had events to run ([`Snapshot::events_pending`]), and
//! B's event worker for the session then waits before its next event
//! (message, resume or close: they stay queued, counted against
//! `--max-queue` as usual) until A says they have run (`Move::Ran`, sent
//! to the instance its snapshot went to), or for [`HOLD_WAIT`] at most: a
//! lost step must not hold the session forever. A chain of moves (A to B to
//! C, or A to B to A) is a chain of holds: B, held, does not report its own
//! events as run before A's word came and they ran, so C waits for B, which
//! waits for A. Shutdown releases every hold (`Hub::close_all`).
//!
//! [`Snapshot::events_pending`]: super::Snapshot::events_pending

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Session;
use crate::id::ConnId;

/// How long a moved session's events wait at most for its previous
/// instance to run the ones it had queued there. Fixed (each instance has
/// its own script timeout and queue bound; B knows neither of A's): with
/// the defaults, a queue of a few slow scripts fits; one longer runs its
/// remaining events on both instances at once, as before, with one log line.
pub const HOLD_WAIT: Duration = Duration::from_secs(30);

/// B's hold on a session's events: closed when released.
pub(in crate::hub) struct Held {
    tx: async_channel::Sender<()>,
    rx: async_channel::Receiver<()>,
    until: Instant,
}

/// A's side: whether its event worker has run everything it had queued
/// (`done`), and the instance its snapshot went to saying it had not
/// (`told`: the step goes there, wherever the session lives by then).
#[derive(Default)]
pub(in crate::hub) struct Ran {
    done: bool,
    told: Option<String>,
}

impl Session {
    /// B: its events wait until [`Session::release`], or [`HOLD_WAIT`].
    pub fn hold(&self) {
        let (tx, rx) = async_channel::bounded(1);
        self.lock().held = Some(Held { tx, rx, until: Instant::now() + HOLD_WAIT });
        self.holding.store(true, Ordering::SeqCst);
    }

    /// B: its previous instance has run the events it had queued; `true`
    /// when they were held.
    pub fn release(&self) -> bool {
        let held = self.lock().held.take();
        self.holding.store(false, Ordering::SeqCst);
        held.is_some_and(|h| h.tx.close())
    }

    /// `true` while its events are held.
    pub fn is_held(&self) -> bool {
        self.holding.load(Ordering::SeqCst)
    }

    /// B's event worker, before its next event: waits while they are held
    /// (at most until [`HOLD_WAIT`] after the hold began).
    pub async fn wait_released(&self, id: &ConnId) {
        let Some((rx, until)) = self.lock().held.as_ref().map(|h| (h.rx.clone(), h.until)) else { return };
        let left = until.saturating_duration_since(Instant::now());
        if crate::runtime::timeout(left, rx.recv()).await.is_ok() {
            return;
        }
        if self.release() {
            log::warn!(
                "[{id}] its previous instance did not report within {HOLD_WAIT:?} that the events it had queued there ran; its events here run now"
            );
        }
    }

    /// A, as its snapshot goes to instance `to`: `true` when its event
    /// worker has not run everything it had queued yet
    /// ([`Session::events_ran`] then says so).
    pub fn events_pending(&self, to: &str) -> bool {
        let mut st = self.lock();
        st.ran.told = (!st.ran.done).then(|| to.to_owned());
        st.ran.told.is_some()
    }

    /// A's event worker has run everything it had queued: the instance
    /// whose snapshot said it had not ([`Session::events_pending`]).
    pub fn events_ran(&self) -> Option<String> {
        let mut st = self.lock();
        st.ran.done = true;
        st.ran.told.take()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Limits, Session, Token};
    use crate::id::ConnId;

    fn session() -> Box<Session> {
        Session::new(Token::random(), Limits { messages: 10, bytes: 1000 })
    }

    #[test]
    fn a_step_goes_only_when_the_snapshot_said_events_were_pending() {
        let s = session();
        assert!(s.events_pending("bbbbbbbb"), "its worker has not finished");
        assert_eq!(s.events_ran().as_deref(), Some("bbbbbbbb"), "the step goes to where the snapshot went");
        let idle = session();
        assert_eq!(idle.events_ran(), None, "finished before its snapshot went: no step");
        assert!(!idle.events_pending("bbbbbbbb"));
    }

    #[test]
    fn held_events_wait_until_released() {
        let s = std::sync::Arc::new(*session());
        assert!(!s.is_held());
        crate::runtime::block_on(s.wait_released(&ConnId::random()));
        s.hold();
        assert!(s.is_held());
        let (tx, rx) = async_channel::bounded(1);
        let waiter = s.clone();
        crate::runtime::spawn(async move {
            waiter.wait_released(&ConnId::random()).await;
            let _ = tx.send(()).await;
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "it waits while held");
        assert!(s.release(), "it was held");
        crate::runtime::block_on(rx.recv()).expect("released");
        assert!(!s.is_held() && !s.release());
    }
}
