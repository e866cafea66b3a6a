//! A connection's event queue, as the two ends of a channel: the reader
//! (and `connection::finish`) push, the connection's event worker takes.
//! The queue itself lives inline in the connection's shared state
//! ([`ConnShared::events`]), so an idle connection allocates nothing for it.

use std::sync::Arc;
use std::task::Poll;

use crate::event::EventKind;
use crate::hub::shared::ConnShared;

/// The pushing end of a connection's event queue (the reader and
/// [`finish`] push, in the connection's one task). The queue is
/// [`ConnShared::events`]: a `VecDeque` and a waker inline in the
/// connection's shared state, nothing allocated while it is empty and
/// waited on (futures-channel's unbounded queue took two allocations, 120
/// bytes, and one more per event; async-channel's 768 bytes, cache-padded).
/// `--max-queue` is counted in the connection's [`ConnBudget`].
///
/// As a channel's ends: once the pushing end is dropped the worker takes
/// what is queued and then sees the end; once the worker's end is dropped,
/// what is queued goes and later pushes fail.
pub struct EventTx {
    shared: Arc<ConnShared>,
}

impl EventTx {
    /// Queues `kind` for the worker; gives it back when the worker is gone.
    pub fn unbounded_send(&self, kind: EventKind) -> Result<(), EventKind> {
        self.shared.events.push(kind)
    }
}

impl Drop for EventTx {
    fn drop(&mut self) {
        self.shared.events.close(false);
    }
}

/// The event worker's end of a connection's event queue (see [`EventTx`]).
pub struct EventRx {
    shared: Arc<ConnShared>,
}

impl EventRx {
    /// The oldest event queued, if one is queued now.
    pub fn try_recv(&mut self) -> Result<EventKind, crate::hub::queue::Empty> {
        self.shared.events.try_take()
    }
}

impl futures_lite::Stream for EventRx {
    type Item = EventKind;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<EventKind>> {
        self.shared.events.poll_take(cx)
    }
}

impl Drop for EventRx {
    fn drop(&mut self) {
        self.shared.events.close(true);
    }
}

/// The two ends of the event queue of the connection `shared` belongs to
/// (made once per connection).
pub fn event_queue(shared: &Arc<ConnShared>) -> (EventTx, EventRx) {
    (EventTx { shared: shared.clone() }, EventRx { shared: shared.clone() })
}
