//! A busy connection's next messages, read and run on one thread.
//!
//! Why: an event handed from the connection's task to a spawn worker and
//! back crosses three threads (the reactor sees the socket readable, an
//! executor thread runs the reader and hands the event over, a worker runs
//! the script): at 16 connections that cost ~20 system calls and 2-3
//! context switches per event more than a thread per connection that does
//! everything with blocking calls (docs/bench-notes/handoff.md,
//! onethread2.md). So after a message event, when the connection's queue is
//! empty, its reader is parked at a message boundary and the transport can
//! run events on a plain thread ([`Transport::follow`]), that thread takes
//! the socket over ([`crate::hub::socket::Wire::lend`]): it waits for the
//! next frame with a blocking `ppoll` (at most [`LINGER`]), and when a whole
//! simple message is there (one final, masked text or binary frame within
//! `--max-message`, valid UTF-8 for text) it takes it off the socket and
//! runs its event there ([`connection::dispatch_guarded`], the same path,
//! log line and metrics), the script on the same thread.
//!
//! Anything else is the reader's, as before: the follower peeks at the
//! socket (`MSG_PEEK`) and takes only a message it will run, so when it
//! sees a control frame (ping, pong, close), a fragment, a frame not yet
//! whole, the end of the stream, or when no `--max-procs` slot is free at
//! once (others wait: they go first), the budget would refuse the message,
//! the connection ended or the server shuts down, it gives the socket back
//! untouched, wakes the task, and the reader reads it. The connection's
//! event worker waits for the follower to end before it takes its next
//! event, so events still run one at a time and in order, the close event
//! last.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{ConnInfo, EventKind};
use crate::gateway::Transport;
use crate::hub::shared::ConnShared;
use crate::metrics;
use crate::ws::connection::{dispatch_guarded, drops_queue};
use crate::ws::limits::ConnBudget;
use crate::ws::state::WsState;

/// How long a follower waits for the connection's next message before it
/// gives the socket back to the reader (a thread per connection waits for
/// ever; this one is shared by `--max-procs` connections at most).
pub const LINGER: Duration = Duration::from_millis(20);

/// The largest frame a follower takes (header and payload): larger
/// messages are the reader's.
const MOST: usize = 16 * 1024;

/// After a message event of a connection: if a follower can take its
/// socket, lets it run the connection's next messages, and returns once it
/// gave the socket back.
pub async fn session(
    app: &Arc<WsState>,
    conn: &Arc<ConnInfo>,
    transport: &Arc<dyn Transport>,
    shared: &Arc<ConnShared>,
    budget: &Arc<ConnBudget>,
) {
    let message = EventKind::Message { payload: bytes::Bytes::new(), binary: false };
    if !app.events.wants(&message) || !shared.events.is_empty() || drops_queue(app, shared) {
        return;
    }
    let Some(socket) = shared.wire.lend() else { return };
    let (done, ended) = async_channel::bounded::<()>(1);
    let follower = Follower {
        app: app.clone(),
        conn: conn.clone(),
        transport: transport.clone(),
        shared: shared.clone(),
        budget: budget.clone(),
        socket,
        _done: done,
    };
    if transport.follow(Box::new(move || follower.run())).is_ok() {
        // Ends when the follower is dropped, wherever it ends.
        let _ = ended.recv().await;
    }
}

/// A connection followed on a plain thread; dropped, it gives the socket
/// back to the reader and ends the session.
struct Follower {
    app: Arc<WsState>,
    conn: Arc<ConnInfo>,
    transport: Arc<dyn Transport>,
    shared: Arc<ConnShared>,
    budget: Arc<ConnBudget>,
    /// A clone of the socket: its descriptor stays open while it is held.
    socket: crate::runtime::TcpStream,
    _done: async_channel::Sender<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.shared.wire.give_back();
    }
}

/// A whole frame seen at the head of the socket.
struct Frame {
    header: usize,
    len: usize,
    binary: bool,
}

impl Follower {
    fn run(self) {
        let mut buf = vec![0u8; MOST];
        loop {
            if !self.shared.events.is_empty() || drops_queue(&self.app, &self.shared) {
                return;
            }
            let Some(frame) = self.next_frame(&mut buf) else { return };
            let Some(kind) = self.take(&buf, &frame) else { return };
            let Some(slot) = self.transport.slots().try_acquire() else { return };
            if self.budget.message_read(frame.len, true).is_err() {
                return;
            }
            if !self.consume(frame.header + frame.len) {
                self.budget.done(frame.len);
                return;
            }
            self.shared.seen();
            metrics::add(&metrics::get().messages_in, 1);
            metrics::add(&metrics::get().bytes_in, frame.len as u64);
            let run = dispatch_guarded(&self.app, &self.conn, &*self.transport, kind, Some(slot));
            futures_lite::future::block_on(Box::pin(run));
            self.budget.done(frame.len);
        }
    }

    /// Waits up to [`LINGER`] for a whole simple frame at the head of the
    /// socket (peeked into `buf`, not taken); `None`: give the socket back.
    fn next_frame(&self, buf: &mut [u8]) -> Option<Frame> {
        let fd = self.socket.as_raw_fd();
        let until = Instant::now() + LINGER;
        loop {
            let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
            // SAFETY: reads into `buf`, which we own, at most its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
            if n > 0 {
                return whole_frame(&buf[..n as usize], self.app.max_message);
            }
            if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
                return None;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
            let ts = libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as _ };
            // SAFETY: one valid pollfd and timespec for the call.
            if unsafe { libc::ppoll(fds.as_mut_ptr(), 1, &ts, std::ptr::null()) } <= 0 {
                return None;
            }
        }
    }

    /// The event of the frame peeked into `buf`, unmasked; `None` for text
    /// that is not UTF-8 (the reader closes with 1007).
    fn take(&self, buf: &[u8], f: &Frame) -> Option<EventKind> {
        let mask = &buf[f.header - 4..f.header];
        let payload: Vec<u8> =
            buf[f.header..f.header + f.len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        if !f.binary && std::str::from_utf8(&payload).is_err() {
            return None;
        }
        Some(EventKind::Message { payload: payload.into(), binary: f.binary })
    }

    /// Takes `n` bytes (the frame peeked) off the socket.
    fn consume(&self, n: usize) -> bool {
        let fd = self.socket.as_raw_fd();
        // SAFETY: MSG_TRUNC discards the bytes (TCP): no buffer is written.
        let got = unsafe { libc::recv(fd, std::ptr::null_mut(), n, libc::MSG_TRUNC | libc::MSG_DONTWAIT) };
        got == n as isize
    }
}

/// The frame at the head of `peeked`, if it is whole and simple: final,
/// text or binary, masked, no reserved bits, within `max_message`.
fn whole_frame(peeked: &[u8], max_message: usize) -> Option<Frame> {
    let (b0, b1) = (*peeked.first()?, *peeked.get(1)?);
    let binary = match b0 {
        0x81 => false,
        0x82 => true,
        _ => return None,
    };
    if b1 & 0x80 == 0 {
        return None;
    }
    let (len, header) = match b1 & 0x7f {
        127 => return None,
        126 => (u16::from_be_bytes([*peeked.get(2)?, *peeked.get(3)?]) as usize, 8),
        n => (n as usize, 6),
    };
    if len > max_message || header + len > peeked.len() {
        return None;
    }
    Some(Frame { header, len, binary })
}
