//! `--max-procs`: how many scripts may run at once, handed out strictly in
//! arrival order. Each connection has at most one event waiting here (its
//! events run one after another), so first-come-first-served is round-robin
//! across connections: a chatty client cannot starve the others. (A plain
//! semaphore lets the task that just released a slot take it again first.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub struct Slots {
    state: Mutex<State>,
}

struct State {
    free: usize,
    waiting: VecDeque<async_channel::Sender<()>>,
}

/// A running script's slot; the next waiter gets it when this is dropped.
pub struct Slot {
    slots: Arc<Slots>,
}

impl Slots {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Slots { state: Mutex::new(State { free: n.max(1), waiting: VecDeque::new() }) })
    }

    pub async fn acquire(self: &Arc<Self>) -> Slot {
        let rx = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.free > 0 && st.waiting.is_empty() {
                st.free -= 1;
                return Slot { slots: self.clone() };
            }
            let (tx, rx) = async_channel::bounded(1);
            st.waiting.push_back(tx);
            rx
        };
        // If this future is dropped after a slot was handed to it, the guard
        // passes the slot on instead of losing it.
        let guard = Waiting { slots: self.clone(), rx };
        let _ = guard.rx.recv().await;
        // The slot's token has been taken: dropping the guard now finds
        // nothing to pass on, and frees the channel.
        drop(guard);
        Slot { slots: self.clone() }
    }

    /// A slot now, if one is free and nobody waits for one (a caller that
    /// can also queue, and must not overtake those waiting).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.free == 0 || !st.waiting.is_empty() {
            return None;
        }
        st.free -= 1;
        Some(Slot { slots: self.clone() })
    }

    /// Events waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).waiting.len()
    }

    fn release(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(tx) = st.waiting.pop_front() {
            if tx.try_send(()).is_ok() {
                return;
            }
        }
        st.free += 1;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release();
    }
}

struct Waiting {
    slots: Arc<Slots>,
    rx: async_channel::Receiver<()>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.rx.close();
        if self.rx.try_recv().is_ok() {
            self.slots.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn first_come_first_served_and_no_barging() {
        block_on(async {
            let s = Slots::new(1);
            let a = s.acquire().await;
            let mut b = Box::pin(s.acquire());
            assert!(poll_once(&mut b).await.is_none(), "b waits");
            drop(a);
            // The slot was handed to b: a newcomer cannot take it first.
            let mut c = Box::pin(s.acquire());
            assert!(poll_once(&mut c).await.is_none(), "c waits behind b");
            let b = b.await;
            drop(b);
            let _c = c.await;
        });
    }

    #[test]
    fn a_cancelled_waiter_passes_its_slot_on() {
        block_on(async {
            let s = Slots::new(1);
            let a = s.acquire().await;
            let mut b = Box::pin(s.acquire());
            assert!(poll_once(&mut b).await.is_none());
            drop(a); // handed to b ...
            drop(b); // ... which is cancelled before it noticed
            let _c = s.acquire().await; // the slot is not lost
        });
    }

    /// Every waiter's channel and its hold on the slots are freed once it
    /// got its slot (a forgotten guard once leaked ~1.2 KB per waiting
    /// event: docs/RELIABILITY.md).
    #[test]
    fn waiters_leave_nothing_behind() {
        block_on(async {
            let s = Slots::new(1);
            let first = s.acquire().await;
            let mut waiters: Vec<_> = (0..50).map(|_| Box::pin(s.acquire())).collect();
            for w in &mut waiters {
                assert!(poll_once(w).await.is_none(), "every one waits");
            }
            assert_eq!(s.waiting(), 50);
            drop(first);
            for w in waiters {
                drop(w.await);
            }
            assert_eq!(s.waiting(), 0);
            assert_eq!(Arc::strong_count(&s), 1, "no guard, slot or channel still holds the slots");
        });
    }
}
