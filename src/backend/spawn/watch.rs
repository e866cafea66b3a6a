//! One thread watches the stderr and the exit of every per-connection
//! process (`--per-connection`): what an idle one costs the server is memory
//! per connection (issue 15: at most a tenth of websocketd's).
//!
//! Why not the async reactor: there, each watched descriptor is an
//! `async-io` source (~220 B: an `Arc` with a waker and a slab of wakers
//! for each direction), and an idle process had three (stdout, stderr, its
//! pidfd). Only stdout carries the connection's traffic, so it stays there;
//! stderr is rare and the exit happens once. Both are registered here
//! (oneshot) with one epoll of our own (`polling::Poller`), served by one
//! thread: per process one slab entry (the connection's waker, the two
//! descriptors and, only once stderr printed, its line buffer).
//!
//! - Stderr is read by the thread and logged one line per line
//!   ([`StderrLines`], the event scripts' rule), until every writer closed
//!   it: a leftover of the process that still holds it is read on after
//!   the connection ended, as the background pump did before, with no
//!   hand-over.
//! - The pidfd's readiness wakes the connection, whose task reaps the
//!   process ([`super::groups::reap`]) and drops the pidfd with its
//!   [`Watched`]. A readiness seen for a slot that was reused (the old
//!   descriptor fired just before it was dropped) is harmless: the reap
//!   finds nothing and [`Watched::rearm_exit`] waits again.
//!
//! Only this thread closes a stderr, and an entry goes once both its stderr
//! ended and its [`Watched`] was dropped, so the thread reads a stderr
//! without holding the lock (logging must not stall the connections).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use polling::{Event, Events, Poller};
use slab::Slab;

use super::process::{Stderr, StderrLines};
use crate::event::ConnInfo;

/// One watched process.
struct Entry {
    /// Names its stderr lines in the log (made only when it prints).
    conn: Arc<ConnInfo>,
    dest: Stderr,
    /// Until it ends (every writer closed it); registered as key `2 * slot`.
    stderr: Option<File>,
    /// A line whose end has not come yet, once stderr printed.
    lines: Option<Box<StderrLines<'static>>>,
    /// Registered as key `2 * slot + 1`, until the [`Watched`] is dropped.
    pidfd: Option<OwnedFd>,
    /// The pidfd fired since it was (re)armed.
    fired: bool,
    /// The connection's task, woken when the pidfd fires.
    waker: Option<Waker>,
    /// The [`Watched`] was dropped: the entry goes when stderr ends.
    detached: bool,
}

struct Watcher {
    poller: Poller,
    entries: Mutex<Slab<Entry>>,
}

/// The watcher, its thread started on first use; `None` if either could
/// not be made (then no per-connection process can start).
fn watcher() -> Option<&'static Watcher> {
    static WATCHER: OnceLock<Option<&'static Watcher>> = OnceLock::new();
    *WATCHER.get_or_init(|| {
        let poller =
            Poller::new().map_err(|e| log::error!("cannot watch per-connection processes (epoll): {e}")).ok()?;
        let w: &'static Watcher = Box::leak(Box::new(Watcher { poller, entries: Mutex::new(Slab::new()) }));
        let thread = std::thread::Builder::new().name("ws2http-watch".into()).spawn(move || w.run());
        thread.map_err(|e| log::error!("cannot start the thread that watches per-connection processes: {e}")).ok()?;
        Some(w)
    })
}

impl Watcher {
    fn lock(&self) -> MutexGuard<'_, Slab<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        let mut events = Events::new();
        loop {
            events.clear();
            if let Err(e) = self.poller.wait(&mut events, None) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("the watcher of per-connection processes stopped: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                let slot = ev.key / 2;
                if ev.key % 2 == 0 {
                    self.stderr_ready(slot);
                } else {
                    self.exit_ready(slot);
                }
            }
        }
    }

    fn exit_ready(&self, slot: usize) {
        let waker = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(slot) else { return };
            e.fired = true;
            e.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Reads what stderr has (up to [`READ_UP_TO`] bytes, fair to the
    /// others) and logs it; at its end, the entry may go.
    fn stderr_ready(&self, slot: usize) {
        let (fd, mut lines) = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(slot) else { return };
            let Some(fd) = e.stderr.as_ref().map(|f| f.as_raw_fd()) else { return };
            let lines = e.lines.take().unwrap_or_else(|| {
                let prefix = format!("[{}] {} process", e.conn.id, e.conn.target.endpoint());
                Box::new(StderrLines::new(prefix, &e.dest).into_owned())
            });
            (fd, lines)
        };
        // SAFETY: only this thread closes an entry's stderr, below; the
        // `File` is not dropped while `file` is in use (ManuallyDrop: the
        // entry keeps owning the descriptor).
        let file = std::mem::ManuallyDrop::new(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        let ended = read_into(&file, &mut lines);
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(slot) else { return };
        if !ended {
            e.lines = Some(lines);
            if let Some(f) = &e.stderr {
                // Re-armed: a pending readiness reports at once.
                if let Err(err) = self.poller.modify(f, Event::readable(2 * slot)) {
                    log::warn!("[{}] process: stderr is no longer read: {err}", e.conn.id);
                }
            }
            return;
        }
        lines.end();
        if let Some(f) = e.stderr.take() {
            let _ = self.poller.delete(&f);
        }
        if e.detached {
            entries.remove(slot);
        }
    }
}

/// Most bytes of one stderr read at once, and of one readiness.
const CHUNK: usize = 4096;
const READ_UP_TO: usize = 64 * 1024;

/// Reads `file` into `lines` until it would block (`false`) or ends (`true`).
fn read_into(mut file: &File, lines: &mut StderrLines<'static>) -> bool {
    let mut buf = [0u8; CHUNK];
    let mut total = 0;
    while total < READ_UP_TO {
        match file.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                lines.feed(&buf[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

/// A process's stderr and exit, watched for its connection; dropping it
/// stops watching the exit (stderr is read on until it ends).
pub struct Watched {
    slot: usize,
    /// Whether its exit is watched (a kernel without pidfd: the caller polls).
    exit: bool,
}

impl Watched {
    /// Watches `stderr` (made non-blocking here) and `pidfd`: lines logged
    /// under `conn`'s name, to `dest`.
    pub fn new(conn: Arc<ConnInfo>, dest: &Stderr, stderr: OwnedFd, pidfd: Option<OwnedFd>) -> io::Result<Watched> {
        let w = watcher().ok_or_else(|| io::Error::other("the watcher of per-connection processes is not running"))?;
        super::child::set_nonblocking(&stderr)?;
        let exit = pidfd.is_some();
        let mut entries = w.lock();
        let entry = Entry {
            conn,
            dest: dest.clone(),
            stderr: Some(File::from(stderr)),
            lines: None,
            pidfd,
            fired: false,
            waker: None,
            detached: false,
        };
        let slot = entries.insert(entry);
        let e = &entries[slot];
        // SAFETY: both descriptors are deleted from the poller before they
        // are closed (stderr by the thread at its end, the pidfd on drop).
        let added = unsafe {
            let err = e.stderr.as_ref().map(|f| w.poller.add(f, Event::readable(2 * slot)));
            let exit = e.pidfd.as_ref().map(|fd| w.poller.add(fd, Event::readable(2 * slot + 1)));
            err.transpose().and(exit.transpose())
        };
        if let Err(err) = added {
            let e = entries.remove(slot);
            for fd in [e.stderr.as_ref().map(|f| f.as_raw_fd()), e.pidfd.as_ref().map(|f| f.as_raw_fd())] {
                // SAFETY: still open (owned by `e`); deleting one that was
                // not added fails harmlessly.
                let _ = fd.map(|fd| w.poller.delete(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }));
            }
            return Err(err);
        }
        Ok(Watched { slot, exit })
    }

    /// `false` on a kernel without pidfd: [`Watched::poll_exit`] never fires.
    pub fn watches_exit(&self) -> bool {
        self.exit
    }

    /// Ready once the process's pidfd fired (then reap it). No system call.
    pub fn poll_exit(&self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(w) = watcher() else { return Poll::Pending };
        let mut entries = w.lock();
        let Some(e) = entries.get_mut(self.slot) else { return Poll::Pending };
        if e.fired {
            return Poll::Ready(());
        }
        if !e.waker.as_ref().is_some_and(|old| old.will_wake(cx.waker())) {
            e.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The pidfd fired but the process was not there to reap (a readiness
    /// meant for the slot's previous process): wait again.
    pub fn rearm_exit(&self) {
        let Some(w) = watcher() else { return };
        let mut entries = w.lock();
        let Some(e) = entries.get_mut(self.slot) else { return };
        e.fired = false;
        if let Some(fd) = &e.pidfd {
            let _ = w.poller.modify(fd, Event::readable(2 * self.slot + 1));
        }
    }

    /// Stops watching the exit and gives the pidfd back (to reap the
    /// process some other way).
    pub fn take_pidfd(&mut self) -> Option<OwnedFd> {
        let w = watcher()?;
        let mut entries = w.lock();
        let fd = entries.get_mut(self.slot)?.pidfd.take()?;
        let _ = w.poller.delete(&fd);
        Some(fd)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let Some(w) = watcher() else { return };
        let mut entries = w.lock();
        let Some(e) = entries.get_mut(self.slot) else { return };
        if let Some(fd) = e.pidfd.take() {
            let _ = w.poller.delete(&fd);
        }
        e.waker = None;
        e.detached = true;
        if e.stderr.is_none() {
            entries.remove(self.slot);
        }
    }
}
