//! What one connection shares between the hub, its reader, its writer and
//! its event worker, and the one way to close it: [`ConnShared::request_close`].
//!
//! Many parties may want a connection closed (the client's close frame, a
//! limit, a ping timeout, a script's `@close`, the API, a slow consumer, a
//! full byte budget, shutdown, the TCP connection going away); whichever
//! asks first decides the code, reason and cause its close event reports,
//! and the reason noted for the log. Everybody goes through
//! [`ConnShared::request_close`], which applies that rule and starts the
//! close the way the caller needs ([`Ending`]).

use crate::runtime::clock_ms;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use super::queue::{Empty, EventQueue, OutQueue};
use crate::action::{CloseCause, Message};

/// Why and how the server wants a connection closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
    pub cause: CloseCause,
}

/// How a close proceeds once requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Only recorded: the connection is ending by itself already (the
    /// client's close frame, a ping timeout, the TCP connection gone).
    Record,
    /// The writer sends what is queued, then the close frame: the outgoing
    /// queue is closed (when this close is the first).
    Drain,
    /// At once, even while the writer is blocked on a client that reads
    /// nothing, whether or not this close is the first (its buffers must go
    /// now): the abort signal fires and the writer stops without a close
    /// frame (a connection dropped for `--max-queue-bytes-total`).
    Drop,
    /// As [`Ending::Drop`], and the outgoing queue closes too, so later
    /// deliveries to it return at once (a slow consumer). A writer blocked
    /// on the client stops without a close frame; a writer that is idle
    /// sees its queue's end first (the queue goes before the abort signal)
    /// and sends the close frame, with the usual grace for the answer
    /// (docs/bench-notes/rev20.md).
    Abort,
}

/// The first close requested, and why in words (for the log).
#[derive(Default)]
struct Closing {
    request: Option<CloseRequest>,
    note: Option<String>,
}

/// Shared between the hub and one connection's reader, writer and worker.
pub struct ConnShared {
    /// Set once, by the first party that closes the connection (boxed:
    /// 8 bytes instead of 56 in every connection that is not closing).
    close: Mutex<Option<Box<Closing>>>,
    /// Set to abort the connection at once, even while its writer is blocked
    /// on a client that does not read; the writer, the only one that waits
    /// for it, is woken through its queue's waker (nothing allocated).
    killed: AtomicBool,
    /// The connection's outgoing queue (the hub queues, the writer takes
    /// through [`Outgoing`]); closed to end the writer.
    pub(super) outgoing: OutQueue,
    /// The connection's message and close events, in order (its reader
    /// and the end of the connection push, its event worker takes): inline
    /// here, not a channel of its own (see [`super::queue`]).
    pub events: EventQueue,
    /// When the client last sent anything (ms on [`clock_ms`]).
    last_seen: AtomicU64,
    /// When the socket last took bytes we wrote (ms on [`clock_ms`]).
    last_written: AtomicU64,
    /// Set when the connection has ended ([`ConnShared::end`], the one
    /// record of it: the hub reads it too): nothing more is delivered to
    /// it; its message events still queued run only if the client closed it
    /// (cause `client`); then its close event.
    ended: AtomicBool,
    /// Bytes of the messages queued for this client and not yet taken by
    /// its writer (`--max-outgoing-bytes`).
    pub(super) out_queued: AtomicUsize,
    /// The code of the client's close frame as it was on the wire, with
    /// [`SENT`] set; 0 before one arrived.
    client_code: AtomicU32,
    /// The socket, for the hub's direct writes ([`super::socket`]).
    pub wire: super::socket::Wire,
    /// A resumable session's state ([`super::session`]); `None` for a
    /// plain connection (which pays this pointer only).
    pub session: Option<Box<super::session::Session>>,
}

/// The flag in `client_code` that says a code was recorded.
const SENT: u32 = 1 << 16;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-updated in a
    // way that matters more than stopping every connection; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnShared {
    /// The state of a new connection, and the writer's end of its queue.
    pub fn new() -> (Arc<Self>, Outgoing) {
        ConnShared::with_session(None)
    }

    /// [`ConnShared::new`], for a resumable session when `session` is given.
    pub fn with_session(session: Option<Box<super::session::Session>>) -> (Arc<Self>, Outgoing) {
        let shared = Arc::new(ConnShared {
            close: Mutex::new(None),
            killed: AtomicBool::new(false),
            outgoing: OutQueue::default(),
            events: EventQueue::default(),
            last_seen: AtomicU64::new(clock_ms()),
            last_written: AtomicU64::new(clock_ms()),
            ended: AtomicBool::new(false),
            out_queued: AtomicUsize::new(0),
            client_code: AtomicU32::new(0),
            wire: Default::default(),
            session,
        });
        (shared.clone(), Outgoing { shared })
    }

    /// Asks for the connection to close: the one way to close it.
    ///
    /// The first request wins: its code, reason and cause are what the
    /// close frame and the close event report, and its `note` (why, in
    /// words) is what the event worker logs before its `closed:` line;
    /// later requests change neither. `ending` says what happens now (see
    /// [`Ending`]). Returns `true` if this request was the first.
    ///
    /// A session's ping timeout does not count as first: it only records
    /// how the socket went away (the session detaches), so a close asked
    /// for meanwhile replaces it and is not lost.
    pub fn request_close(&self, req: CloseRequest, ending: Ending, note: Option<String>) -> bool {
        let first = {
            let mut closing = lock(&self.close);
            let closing = closing.get_or_insert_with(Box::default);
            let first = closing.request.as_ref().is_none_or(|r| self.replaceable(r));
            if first {
                closing.request = Some(req);
                // Noted before an abort wakes anyone: the reason the
                // connection's own reader would note on waking comes second.
                closing.note = note;
            }
            first
        };
        match ending {
            Ending::Record => {}
            Ending::Drain if first => {
                self.outgoing.close(false);
            }
            Ending::Drain => {}
            Ending::Drop | Ending::Abort => {
                self.killed.store(true, Ordering::SeqCst);
                self.outgoing.wake_writer();
                if ending == Ending::Abort {
                    self.outgoing.close(false);
                }
            }
        }
        first
    }

    /// Records that the client sent something.
    pub fn seen(&self) {
        self.last_seen.store(clock_ms(), Ordering::Relaxed);
    }

    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Records that the socket took some of what we wrote.
    pub fn wrote(&self) {
        self.wrote_at(clock_ms());
    }

    /// [`ConnShared::wrote`] with the time ([`clock_ms`]) already read.
    pub fn wrote_at(&self, now: u64) {
        self.last_written.store(now, Ordering::Relaxed);
    }

    pub fn last_written(&self) -> u64 {
        self.last_written.load(Ordering::Relaxed)
    }

    /// The connection is over: nothing more is read from or written to it,
    /// nor delivered to it. Nobody asked to close it first means the TCP
    /// connection just went away: that is recorded as the close (1006,
    /// cause `dropped`). Returns the close that won, which its close event
    /// reports.
    pub fn end(&self) -> CloseRequest {
        let req = {
            let mut closing = lock(&self.close);
            let closing = closing.get_or_insert_with(Box::default);
            let dropped = || CloseRequest { code: 1006, reason: String::new(), cause: CloseCause::Dropped };
            closing.request.get_or_insert_with(dropped).clone()
        };
        self.ended.store(true, Ordering::SeqCst);
        self.wire.detach();
        req
    }

    /// Bytes of the messages queued for this client and not yet taken by
    /// its writer (what `--max-outgoing-bytes` bounds).
    pub fn queued_bytes(&self) -> usize {
        self.out_queued.load(Ordering::Relaxed)
    }

    /// Messages queued for this client and not yet taken by its writer
    /// (what `--max-outgoing` bounds).
    pub fn queued_messages(&self) -> usize {
        self.outgoing.len()
    }

    /// `true` once [`ConnShared::end`] was called.
    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// `Ready` once the connection has been aborted, or its session must
    /// let go of its socket. Polled by the connection's writer only (it
    /// shares the queue's one waker). A poll, not a future: the writer of
    /// every idle connection would hold one for its whole life.
    pub fn poll_aborted(&self, cx: &mut Context<'_>) -> Poll<()> {
        let done = || self.killed.load(Ordering::SeqCst) || self.session.as_ref().is_some_and(|s| s.must_let_go());
        if done() {
            return Poll::Ready(());
        }
        self.outgoing.register_writer(cx);
        // Checked again once registered: an abort in between is not missed.
        match done() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// `true` once the connection was aborted ([`Ending::Abort`]).
    #[cfg(test)]
    pub fn is_aborted(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// The writer took a message of `len` bytes off the queue.
    pub fn taken(&self, len: usize) {
        self.out_queued.fetch_sub(len, Ordering::Relaxed);
    }

    /// Records the close code the client's close frame carried on the wire
    /// (the reader's frame scanner sees it before tungstenite, which reports
    /// a code a client may not send as 1002). The first one counts.
    pub fn client_sent_close(&self, code: u16) {
        let _ = self.client_code.compare_exchange(0, SENT | u32::from(code), Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The code [`ConnShared::client_sent_close`] recorded, if any.
    pub fn client_close_code(&self) -> Option<u16> {
        let v = self.client_code.load(Ordering::SeqCst);
        (v & SENT != 0).then_some(v as u16)
    }

    /// A session's ping timeout, while the connection has not ended.
    fn replaceable(&self, r: &CloseRequest) -> bool {
        r.cause == CloseCause::PingTimeout && self.session.is_some() && !self.has_ended()
    }

    /// When a session's socket went away: `Some` when it was a drop (no
    /// close requested, or only a ping timeout, which is forgotten here,
    /// under the lock: a close requested meanwhile is never lost), with the
    /// ping timeout's cause if there was one; `None` when a close is final
    /// (or the connection was aborted: its queue may be closed).
    pub fn forget_drop(&self) -> Option<Option<CloseCause>> {
        let mut closing = lock(&self.close);
        if self.killed.load(Ordering::SeqCst) {
            return None;
        }
        match closing.as_ref().and_then(|c| c.request.as_ref()) {
            None => Some(None),
            Some(r) if self.replaceable(r) => {
                *closing = None;
                Some(Some(CloseCause::PingTimeout))
            }
            Some(_) => None,
        }
    }

    /// Registers the task that waits for a detached session's next step:
    /// a delivery, a close or a resume wakes it.
    pub fn register_waiter(&self, cx: &mut std::task::Context<'_>) {
        self.outgoing.register_writer(cx);
    }

    /// Wakes the connection's task (see [`ConnShared::register_waiter`]).
    pub fn wake(&self) {
        self.outgoing.wake_writer();
    }

    /// The reason noted with the first close, once.
    pub fn take_close_note(&self) -> Option<String> {
        lock(&self.close).as_mut().and_then(|c| c.note.take())
    }

    /// The first close requested, if any.
    pub fn close_request(&self) -> Option<CloseRequest> {
        lock(&self.close).as_ref().and_then(|c| c.request.clone())
    }

    /// The cause of the close requested first, if any.
    pub fn close_cause(&self) -> Option<CloseCause> {
        lock(&self.close).as_ref().and_then(|c| c.request.as_ref()).map(|r| r.cause)
    }
}

/// The writer's end of a connection's outgoing queue. Dropped (the writer
/// is gone), it closes the queue and drops what is queued: later
/// deliveries fail at once.
pub struct Outgoing {
    shared: Arc<ConnShared>,
}

impl Outgoing {
    /// The next message, in order; `None` once the queue is closed and
    /// drained. A poll: the writer waits on it beside its ping timer and
    /// abort signal (`ws::connection::next_step`).
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.shared.outgoing.poll_take(cx)
    }

    /// The next message if one is queued now.
    pub fn try_recv(&self) -> Result<Message, Empty> {
        self.shared.outgoing.try_take()
    }

    pub fn is_closed(&self) -> bool {
        self.shared.outgoing.is_closed()
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.shared.outgoing.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.shared.outgoing.close(true);
    }
}

#[cfg(test)]
mod tests;
