//! A connection's queues: the outgoing one (the hub pushes, the
//! connection's writer takes) and the event one (the reader pushes, the
//! event worker takes), each in order.
//!
//! Why not a channel crate: an idle connection holds its queues for its
//! whole life, and async-channel's unbounded queue cost ~770 bytes of heap
//! (cache-padded to 128-byte alignment) plus an event-listener allocation
//! while the writer waited; futures-channel's (the event queue's before)
//! two allocations (its state, 72 bytes, and a stub node, 48) plus one
//! node per event. This is a `VecDeque` under a mutex, inline in the
//! connection's [`super::shared::ConnShared`], and the taker's waker:
//! nothing is allocated while the queue is empty (the deque's buffer is
//! freed when a burst has drained). The hub holds the outgoing limits
//! (`--max-outgoing`, the byte budget) and checks them against
//! [`Queue::len`] before it pushes; the reader holds `--max-queue`.
//!
//! Only one party takes and waits, from the connection's one task: one
//! stored waker is enough ([`Queue::wake_writer`] also serves the abort
//! signal, which the same writer waits for).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::action::Message;
use crate::event::EventKind;

/// The queue and the waker of the task that takes from it. `KEEP`: the
/// deque capacity kept once a burst has drained; a larger buffer is freed.
pub struct Queue<T, const KEEP: usize> {
    msgs: Mutex<VecDeque<T>>,
    /// Closed: nothing more is pushed; what is queued is still taken. Set
    /// under the lock (a push checks it there); read without it by
    /// [`Queue::is_closed`], which every delivery asks first.
    closed: AtomicBool,
    writer: AtomicWaker,
}

/// The messages queued for a client (the hub pushes, the writer takes);
/// keeps room for 4 once it has been used.
pub type OutQueue = Queue<Message, 4>;

/// A connection's message and close events (the reader pushes, the event
/// worker takes). Its buffer is freed each time it drains, so a connection
/// that once sent messages and went idle holds none (futures-channel, before,
/// kept one node; a kept 4-event buffer would be 4 × 40 bytes).
pub type EventQueue = Queue<EventKind, 0>;

impl<T, const KEEP: usize> Default for Queue<T, KEEP> {
    fn default() -> Self {
        Queue { msgs: Mutex::default(), closed: AtomicBool::new(false), writer: AtomicWaker::new() }
    }
}

/// Why [`Queue::try_take`] gave nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Empty {
    /// Nothing queued now.
    Now,
    /// Nothing queued, and the queue is closed: nothing ever will be.
    Closed,
}

impl<T, const KEEP: usize> Queue<T, KEEP> {
    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // Pushes and takes leave the deque consistent at every step.
        self.msgs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg` for the taker; gives it back if the queue is closed.
    pub fn push(&self, msg: T) -> Result<(), T> {
        {
            let mut q = self.lock();
            if self.closed.load(Ordering::SeqCst) {
                return Err(msg);
            }
            q.push_back(msg);
        }
        self.writer.wake();
        Ok(())
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the queue (later pushes fail) and wakes the writer, which
    /// takes what is queued and then sees the end. With `drop_queued`, what
    /// is queued goes too (nobody will take it).
    pub fn close(&self, drop_queued: bool) {
        let dropped = {
            let mut q = self.lock();
            self.closed.store(true, Ordering::SeqCst);
            drop_queued.then(|| std::mem::take(&mut *q))
        };
        drop(dropped);
        self.writer.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The oldest message queued, or why there is none.
    pub fn try_take(&self) -> Result<T, Empty> {
        let mut q = self.lock();
        match q.pop_front() {
            Some(m) => {
                if q.is_empty() && q.capacity() > KEEP {
                    *q = VecDeque::new();
                }
                Ok(m)
            }
            None if self.closed.load(Ordering::SeqCst) => Err(Empty::Closed),
            None => Err(Empty::Now),
        }
    }

    /// The oldest message queued (`Ready(None)` once closed and drained);
    /// otherwise the task of `cx` is woken when one is pushed or the queue
    /// closes.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.try_take() {
            Ok(m) => return Poll::Ready(Some(m)),
            Err(Empty::Closed) => return Poll::Ready(None),
            Err(Empty::Now) => {}
        }
        self.writer.register(cx.waker());
        // Checked again once registered: a push in between is not missed.
        match self.try_take() {
            Ok(m) => Poll::Ready(Some(m)),
            Err(Empty::Closed) => Poll::Ready(None),
            Err(Empty::Now) => Poll::Pending,
        }
    }

    /// Registers the writer's task for [`Queue::wake_writer`].
    pub fn register_writer(&self, cx: &mut Context<'_>) {
        self.writer.register(cx.waker());
    }

    /// Wakes the writer's task (its abort signal fired).
    pub fn wake_writer(&self) {
        self.writer.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    fn text(s: &str) -> Message {
        Message::text(s.to_owned())
    }

    #[test]
    fn in_order_then_closed_after_what_was_queued() {
        let q = OutQueue::default();
        assert_eq!(q.try_take(), Err(Empty::Now));
        q.push(text("a")).expect("open");
        q.push(text("b")).expect("open");
        assert_eq!(q.len(), 2);
        q.close(false);
        assert_eq!(q.push(text("c")), Err(text("c")), "closed: refused, given back");
        assert_eq!(q.try_take(), Ok(text("a")));
        assert_eq!(q.try_take(), Ok(text("b")));
        assert_eq!(q.try_take(), Err(Empty::Closed));
        let q = OutQueue::default();
        q.push(text("a")).expect("open");
        q.close(true);
        assert_eq!(q.try_take(), Err(Empty::Closed), "dropped with the close");
    }

    #[test]
    fn a_push_or_a_close_wakes_the_waiting_writer() {
        let q = std::sync::Arc::new(OutQueue::default());
        let take = |q: &OutQueue| block_on(poll_once(std::future::poll_fn(|cx| q.poll_take(cx))));
        assert_eq!(take(&q), None, "pending");
        let (tx, rx) = std::sync::mpsc::channel();
        let q2 = q.clone();
        let t = std::thread::spawn(move || {
            let first = block_on(std::future::poll_fn(|cx| q2.poll_take(cx)));
            tx.send(first).expect("open");
            block_on(std::future::poll_fn(|cx| q2.poll_take(cx)))
        });
        q.push(text("x")).expect("open");
        assert_eq!(rx.recv().ok(), Some(Some(text("x"))));
        q.close(false);
        assert_eq!(t.join().ok(), Some(None), "the end of the queue wakes it too");
    }

    #[test]
    fn a_drained_burst_gives_its_buffer_back() {
        let q = OutQueue::default();
        for i in 0..100 {
            q.push(text(&i.to_string())).expect("open");
        }
        assert!(q.lock().capacity() >= 100);
        while q.try_take().is_ok() {}
        assert_eq!(q.lock().capacity(), 0, "an idle connection holds no slots");
    }

    #[test]
    fn the_event_queue_gives_its_buffer_back_after_every_burst() {
        let q = EventQueue::default();
        q.push(EventKind::Open).expect("open");
        assert!(q.lock().capacity() > 0);
        assert_eq!(q.try_take(), Ok(EventKind::Open));
        assert_eq!(q.lock().capacity(), 0, "a connection that went idle holds no event buffer");
    }
}
