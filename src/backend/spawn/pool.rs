//! A bounded pool of plain std threads for blocking work, created lazily
//! and gone when idle.
//!
//! Why threads and not the reactor: see [`super::worker`]. Why this shape:
//! - Bounded: at most `max` threads (the spawn transport sizes it by
//!   `--max-procs`, the number of scripts that may run at once, so there is
//!   never a reason for more). A job that finds every thread busy waits in
//!   the queue; with `--max-procs` slots taken before a job is submitted,
//!   that only happens while a worker still finishes an event whose caller
//!   went away.
//! - Lazy: a thread starts only when a job finds no idle thread, and one
//!   that has had nothing to do for [`IDLE`] exits. An idle server holds no
//!   worker at all, so idle connections cost no thread memory.
//! - One hand-off per job: the job is pushed under the lock and one idle
//!   thread is woken (a busy thread that finishes takes the next job
//!   without any wake-up).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a worker thread waits for a job before it exits: long enough
/// that a steady trickle of events (one a second) reuses its threads, short
/// enough that a burst's threads are gone soon after it.
pub const IDLE: Duration = Duration::from_secs(10);

/// Each worker's stack: the blocking loop needs little (glibc's
/// `posix_spawn` maps its own stack for the child), and only the pages
/// touched count as memory.
const STACK: usize = 256 * 1024;

pub struct Pool<J: Send + 'static> {
    shared: Arc<Shared<J>>,
}

struct Shared<J> {
    state: Mutex<State<J>>,
    /// Signalled once per job pushed while a worker is idle.
    work: Condvar,
    max: usize,
    idle_for: Duration,
    name: &'static str,
    run: fn(J),
}

struct State<J> {
    jobs: VecDeque<J>,
    /// Threads alive (busy or idle).
    workers: usize,
    /// Threads waiting for a job.
    idle: usize,
}

impl<J: Send + 'static> Pool<J> {
    /// A pool of at most `max` threads named `name`, each running `run` on
    /// one job at a time.
    pub fn new(max: usize, name: &'static str, run: fn(J)) -> Self {
        Pool::with_idle(max, name, run, IDLE)
    }

    /// As [`Self::new`], with threads exiting after `idle_for` without a job.
    pub fn with_idle(max: usize, name: &'static str, run: fn(J), idle_for: Duration) -> Self {
        let state = Mutex::new(State { jobs: VecDeque::new(), workers: 0, idle: 0 });
        Pool { shared: Arc::new(Shared { state, work: Condvar::new(), max: max.max(1), idle_for, name, run }) }
    }

    /// Runs `job` on a worker: an idle one, a new one (below the bound), or
    /// the first that finishes its job. `Err` gives the job back when no
    /// thread can run it (none could be started).
    pub fn submit(&self, job: J) -> Result<(), (J, io::Error)> {
        self.push(job, true)
    }

    /// Runs `job` on an idle thread or a new one (below the bound), never
    /// queued behind a busy one: `Err` gives it back when none is free.
    pub fn try_submit(&self, job: J) -> Result<(), J> {
        self.push(job, false).map_err(|(job, _)| job)
    }

    fn push(&self, job: J, queue: bool) -> Result<(), (J, io::Error)> {
        let mut st = self.shared.lock();
        if !queue && st.jobs.len() >= st.idle && st.workers >= self.shared.max {
            return Err((job, io::ErrorKind::WouldBlock.into()));
        }
        st.jobs.push_back(job);
        // Jobs not yet taken beyond the idle threads that will take them.
        if st.jobs.len() > st.idle && st.workers < self.shared.max {
            st.workers += 1;
            let shared = self.shared.clone();
            let started = std::thread::Builder::new()
                .name(self.shared.name.into())
                .stack_size(STACK)
                .spawn(move || shared.serve());
            if let Err(e) = started {
                st.workers -= 1;
                if st.workers == 0 || !queue {
                    if let Some(job) = st.jobs.pop_back() {
                        return Err((job, e));
                    }
                }
                log::warn!("cannot start a {} thread ({e}); the event waits for a busy one", self.shared.name);
            }
        } else if st.idle > 0 {
            // Woken after the lock is released: a thread woken under it
            // would at once block on it again (two more futex calls and a
            // context switch, seen with `perf trace`).
            drop(st);
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// Threads alive now (for tests and metrics).
    pub fn threads(&self) -> usize {
        self.shared.lock().workers
    }
}

impl<J> Shared<J> {
    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One worker: jobs until none came for `idle_for`.
    fn serve(&self) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                drop(st);
                // A panic in a job must not lose the thread's count.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.run)(job)));
                if ran.is_err() {
                    log::error!("a {} thread panicked running a job; the thread goes on", self.name);
                }
                st = self.lock();
                continue;
            }
            st.idle += 1;
            let (guard, waited) = self.work.wait_timeout(st, self.idle_for).unwrap_or_else(|e| e.into_inner());
            st = guard;
            st.idle -= 1;
            if waited.timed_out() && st.jobs.is_empty() {
                st.workers -= 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Instant;

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);

    /// A job that holds its thread until told to go.
    fn hold(job: (mpsc::Receiver<()>, mpsc::Sender<()>)) {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST.fetch_max(now, Ordering::SeqCst);
        let (go, done) = job;
        let _ = go.recv();
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        let _ = done.send(());
    }

    fn until(what: impl Fn() -> bool) -> bool {
        let limit = Instant::now() + Duration::from_secs(10);
        while !what() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
        what()
    }

    #[test]
    fn never_more_threads_than_its_bound_and_none_once_idle() {
        let pool = Pool::with_idle(3, "test-pool", hold, Duration::from_millis(50));
        assert_eq!(pool.threads(), 0, "no thread before the first job");
        let (done_tx, done_rx) = mpsc::channel();
        let mut go = Vec::new();
        for _ in 0..8 {
            let (tx, rx) = mpsc::channel();
            go.push(tx);
            assert!(pool.submit((rx, done_tx.clone())).is_ok());
            assert!(pool.threads() <= 3, "{} threads for a pool of 3", pool.threads());
        }
        assert!(until(|| RUNNING.load(Ordering::SeqCst) == 3), "three jobs run at once");
        for tx in go {
            tx.send(()).expect("job waiting");
        }
        for _ in 0..8 {
            done_rx.recv_timeout(Duration::from_secs(10)).expect("every queued job ran");
        }
        assert_eq!(MOST.load(Ordering::SeqCst), 3, "at most three jobs ran at once");
        assert!(until(|| pool.threads() == 0), "idle threads exit");
        // And come back when needed.
        let (tx, rx) = mpsc::channel();
        assert!(pool.submit((rx, done_tx)).is_ok());
        tx.send(()).expect("job waiting");
        done_rx.recv_timeout(Duration::from_secs(10)).expect("a job after the idle period ran");
    }

    #[test]
    fn try_submit_never_queues_behind_a_busy_thread() {
        fn hold(job: (mpsc::Receiver<()>, mpsc::Sender<()>)) {
            let (go, done) = job;
            let _ = go.recv();
            let _ = done.send(());
        }
        let pool = Pool::with_idle(1, "test-try", hold, Duration::from_secs(10));
        let (done_tx, done_rx) = mpsc::channel();
        let (go, rx) = mpsc::channel();
        assert!(pool.try_submit((rx, done_tx.clone())).is_ok(), "a new thread takes it");
        let (_go2, rx2) = mpsc::channel();
        assert!(pool.try_submit((rx2, done_tx.clone())).is_err(), "the one thread is busy: given back");
        go.send(()).expect("job waiting");
        done_rx.recv_timeout(Duration::from_secs(10)).expect("the first job ran");
        assert!(until(|| pool.shared.lock().idle == 1), "the thread waits for work");
        let (go, rx) = mpsc::channel();
        assert!(pool.try_submit((rx, done_tx)).is_ok(), "the idle thread takes it");
        go.send(()).expect("job waiting");
        done_rx.recv_timeout(Duration::from_secs(10)).expect("the second job ran");
    }
}
