//! Timeouts that cost no system call: one watchdog task owns a single
//! reactor timer and a sorted set of deadlines.
//!
//! Why: every script run has a deadline (`--timeout`), nearly always far
//! away and nearly always cancelled. An async-io timer per deadline wakes the
//! reactor thread twice (to arm and re-arm its timerfd), a cross-thread hop
//! that the per-event benchmark measured. Here registering a deadline is a
//! map insert under a mutex, and the watchdog is only woken when a new
//! deadline is earlier than the one it sleeps until (with one `--timeout`
//! for everyone: almost never). A deadline that is dropped first is just
//! removed from the map.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::runtime;

#[derive(Default)]
struct State {
    /// Pending deadlines → the task to wake when one passes. A key that is
    /// gone while its `Deadline` is registered means it has expired.
    pending: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// When the watchdog will look next (`None`: it sleeps until woken).
    watching_until: Option<Instant>,
    watchdog: Option<Waker>,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    let m = STATE.get_or_init(|| {
        runtime::spawn(watchdog());
        Mutex::default()
    });
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wakes the tasks whose deadline passed, then sleeps until the earliest
/// remaining one (or until a new, earlier deadline arrives).
async fn watchdog() {
    let mut timer = async_io::Timer::never();
    loop {
        std::future::poll_fn(|cx| {
            let mut st = state();
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(entry) = st.pending.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            let next = st.pending.first_key_value().map(|((when, _), _)| *when);
            if next != st.watching_until {
                match next {
                    Some(when) => timer.set_at(when),
                    None => timer = async_io::Timer::never(),
                }
                st.watching_until = next;
            }
            if st.watchdog.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
                st.watchdog = Some(cx.waker().clone());
            }
            drop(st);
            due.into_iter().for_each(Waker::wake);
            // Registers this task with the timer; it fires at `next`.
            match Pin::new(&mut timer).poll(cx) {
                Poll::Ready(_) => {
                    // A fired timer stays quiet until set again.
                    state().watching_until = None;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
    }
}

/// One deadline, registered on first poll and removed on drop.
struct Deadline {
    when: Option<Instant>,
    key: Option<(Instant, u64)>,
}

impl Deadline {
    /// `true` once the deadline has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(when) = self.when else { return false };
        let mut st = state();
        match self.key {
            None => {
                if when <= Instant::now() {
                    return true;
                }
                st.next_id += 1;
                let key = (when, st.next_id);
                st.pending.insert(key, cx.waker().clone());
                self.key = Some(key);
                if st.watching_until.is_none_or(|w| when < w) {
                    let watchdog = st.watchdog.clone();
                    drop(st);
                    if let Some(w) = watchdog {
                        w.wake();
                    }
                }
                false
            }
            Some(key) => match st.pending.get_mut(&key) {
                None => true,
                Some(w) => {
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                    false
                }
            },
        }
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            state().pending.remove(&key);
        }
    }
}

/// `Err(())` when `fut` did not finish within `d`.
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, ()> {
    let mut deadline = Deadline { when: Instant::now().checked_add(d), key: None };
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if deadline.poll_expired(cx) {
            Poll::Ready(Err(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_completes() {
        runtime::block_on(async {
            let slow = timeout(Duration::from_millis(30), runtime::sleep(Duration::from_secs(5)));
            let started = Instant::now();
            assert_eq!(slow.await, Err(()));
            assert!(started.elapsed() >= Duration::from_millis(30));
            assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
            // A later deadline registered first must not delay an earlier one.
            let long = timeout(Duration::from_secs(60), std::future::pending::<()>());
            let short = timeout(Duration::from_millis(20), std::future::pending::<()>());
            let r = futures_lite::future::or(async { Some(long.await) }, async {
                short.await.unwrap_err();
                None
            })
            .await;
            assert_eq!(r, None);
            // Dropped deadlines leave nothing behind.
            assert!(state().pending.is_empty());
        });
    }
}
