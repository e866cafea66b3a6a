//! What clients may make the server hold:
//!
//! - connections: `--max-connections` and `--max-connections-per-ip`,
//!   counted from the moment a handshake starts (so many concurrent
//!   handshakes cannot overshoot) until the connection's close event has run;
//! - bytes of their messages: `--max-queue-bytes` per connection (messages
//!   waiting for, or running, their script) and `--max-queue-bytes-total`
//!   over all connections, which also counts the bytes of messages still
//!   being read. A count of events alone let 12 clients pin 768 MiB (64
//!   events of 1 MiB each); and tungstenite's read buffer grows with the
//!   frame, so a total that ignored partial messages would not bound
//!   thousands of clients each half-way through a 1 MiB message;
//! - bytes of messages queued *to* them ([`OutgoingBudget`]):
//!   `--max-outgoing-bytes` per connection and `--max-outgoing-bytes-total`
//!   for the distinct buffers of all of them. A count alone let one client
//!   that never reads make the server hold 1,024 messages of up to 4 MiB.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::Utf8Bytes;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};

use crate::action::Message;
use crate::hub::ConnShared;

pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<(usize, HashMap<String, usize>)>,
}

/// A reserved connection slot; released when dropped.
pub struct Slot {
    limits: Arc<ConnLimits>,
    ip: String,
}

/// Why a slot was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    Total(usize),
    PerIp(usize),
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnLimits { max_total, max_per_ip, counts: Mutex::new((0, HashMap::new())) })
    }

    pub fn reserve(self: &Arc<Self>, ip: &str) -> Result<Slot, Full> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.0 >= self.max_total {
            return Err(Full::Total(self.max_total));
        }
        let n = c.1.entry(ip.to_owned()).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Full::PerIp(self.max_per_ip));
        }
        *n += 1;
        c.0 += 1;
        Ok(Slot { limits: self.clone(), ip: ip.to_owned() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.0 -= 1;
        if let Some(n) = c.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.ip);
            }
        }
    }
}

/// The byte budget for client messages: `--max-queue-bytes` per connection,
/// `--max-queue-bytes-total` for all of them.
pub struct QueueBudget {
    per_conn: usize,
    total_cap: usize,
    total: AtomicUsize,
}

/// Which byte budget a message went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverBudget {
    /// `--max-queue-bytes` (its value) for this connection.
    Connection(usize),
    /// `--max-queue-bytes-total` (its value) for all connections.
    Total(usize),
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverBudget::Connection(cap) => write!(f, "more than {cap} bytes of messages waiting (--max-queue-bytes)"),
            OverBudget::Total(cap) => {
                write!(f, "more than {cap} bytes of messages held for all connections (--max-queue-bytes-total)")
            }
        }
    }
}

impl QueueBudget {
    pub fn new(per_conn: usize, total_cap: usize) -> Arc<Self> {
        Arc::new(QueueBudget { per_conn, total_cap, total: AtomicUsize::new(0) })
    }

    /// The share of one new connection.
    pub fn conn(self: &Arc<Self>) -> Arc<ConnBudget> {
        Arc::new(ConnBudget {
            budget: self.clone(),
            reading: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            over_total: AtomicBool::new(false),
        })
    }

    /// Bytes held now, all connections together (`GET /metrics`).
    pub fn held(&self) -> usize {
        self.total.load(SeqCst)
    }

    fn release(&self, n: usize) {
        if n > 0 {
            self.total.fetch_sub(n, SeqCst);
        }
    }
}

/// One connection's bytes: read from the socket since its last complete
/// message (`reading`), and payloads of its messages queued or running
/// (`queued`). Whatever is still counted when the last holder lets go is
/// given back to the total.
pub struct ConnBudget {
    budget: Arc<QueueBudget>,
    reading: AtomicUsize,
    queued: AtomicUsize,
    over_total: AtomicBool,
}

impl ConnBudget {
    /// `n` bytes came off the socket. `Err` when the total is now over its cap.
    fn read(&self, n: usize) -> Result<(), OverBudget> {
        self.reading.fetch_add(n, SeqCst);
        let total = self.budget.total.fetch_add(n, SeqCst) + n;
        if total > self.budget.total_cap {
            // The partial message is abandoned (the connection is closed):
            // give its bytes back at once, so that others reading while
            // this one closes are not refused because of it.
            self.over_total.store(true, SeqCst);
            self.budget.release(self.reading.swap(0, SeqCst));
            return Err(OverBudget::Total(self.budget.total_cap));
        }
        Ok(())
    }

    /// `true` once a read went over `--max-queue-bytes-total`: the read
    /// error the stream reports is this, not a network failure.
    pub fn over_total(&self) -> bool {
        self.over_total.load(SeqCst)
    }

    /// A ping or pong with `payload` bytes was read whole: its frame (6
    /// bytes of masked header, at most 125 of payload) is no longer held.
    pub fn control_read(&self, payload: usize) {
        let frame = payload + 6;
        let released = self.reading.fetch_update(SeqCst, SeqCst, |r| Some(r.saturating_sub(frame)));
        let before = released.unwrap_or(0);
        self.budget.release(before.min(frame));
    }

    /// A data message of `len` payload bytes was read whole. With `queue`
    /// it joins this connection's queue (`Err` when that would go over
    /// `--max-queue-bytes`); otherwise it is dropped. Either way the bytes
    /// read for it are no longer "being read". (A read may already hold the
    /// start of the next frame; at most one read buffer goes uncounted.)
    pub fn message_read(&self, len: usize, queue: bool) -> Result<(), OverBudget> {
        let read = self.reading.swap(0, SeqCst);
        let mut result = Ok(());
        if queue {
            if self.queued.load(SeqCst) + len > self.budget.per_conn {
                result = Err(OverBudget::Connection(self.budget.per_conn));
            } else {
                self.queued.fetch_add(len, SeqCst);
                self.budget.total.fetch_add(len, SeqCst);
            }
        }
        self.budget.release(read);
        result
    }

    /// A queued message of `len` bytes was handled (or dropped).
    pub fn done(&self, len: usize) {
        self.queued.fetch_sub(len, SeqCst);
        self.budget.release(len);
    }
}

impl Drop for ConnBudget {
    fn drop(&mut self) {
        let left = *self.reading.get_mut() + *self.queued.get_mut();
        self.budget.release(left);
    }
}

/// The connection's socket, counting every byte read against its budget.
/// Over `--max-queue-bytes-total` a read fails (with the bytes dropped), so
/// tungstenite stops and the reader closes the connection with 1013.
/// Writes that go through are recorded too: the ping timeout tells a client
/// that reads nothing from one that reads a big message slowly.
pub struct Metered<S> {
    inner: S,
    budget: Arc<ConnBudget>,
    shared: Arc<ConnShared>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, budget: Arc<ConnBudget>, shared: Arc<ConnShared>) -> Self {
        Metered { inner, budget, shared }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => match this.budget.read(n) {
                Ok(()) => Poll::Ready(Ok(n)),
                Err(over) => Poll::Ready(Err(io::Error::other(over.to_string()))),
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            if n > 0 {
                this.shared.wrote();
            }
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The byte budget for messages queued to clients.
///
/// - `--max-outgoing-bytes`, per connection: the bytes of its messages not
///   yet taken by its writer. A message that would go over is refused only
///   when the queue is not empty: one message of any size always fits, so
///   a big message is never refused to a client that keeps up.
/// - `--max-outgoing-bytes-total`, all connections together: the bytes of
///   the *distinct* buffers queued. A room message or a broadcast shares one
///   buffer between its recipients, so it counts once: the hub wraps each
///   message once ([`OutgoingBudget::count`]) and the wrapper gives its bytes
///   back when the last recipient's writer lets go of it. Over the total, a
///   delivery to a client whose queue is not empty (one that does not keep
///   up) is refused; a client with an empty queue still gets the message.
///
/// Why this bounds memory: while the total is exceeded, no queue grows past
/// one message, and a new buffer only goes to clients whose queue is empty.
/// So on top of the total the server holds at most about one message per
/// client that keeps up (each writer's copy of the message it is sending).
pub struct OutgoingBudget {
    per_conn: usize,
    total_cap: usize,
    /// Bytes of the distinct buffers queued now (the `ws2http_outgoing_bytes`
    /// gauge of `GET /metrics`).
    held: &'static AtomicUsize,
}

/// Why a message was not queued for a client: it does not keep up with what
/// it is sent (a slow consumer). Each names the flag it went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumer {
    /// `--max-outgoing` (its value) messages already wait.
    Count(usize),
    /// `queued` bytes wait and `len` more would go over `--max-outgoing-bytes` (`cap`).
    Bytes { queued: usize, len: usize, cap: usize },
    /// `waiting` messages wait while `held` bytes are queued for all
    /// clients, over `--max-outgoing-bytes-total` (`cap`).
    Total { waiting: usize, held: usize, cap: usize },
}

impl std::fmt::Display for SlowConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            SlowConsumer::Count(cap) => write!(f, "{cap} messages queued (--max-outgoing {cap})"),
            SlowConsumer::Bytes { queued, len, cap } => {
                write!(f, "{queued} bytes queued, {len} more would go over --max-outgoing-bytes {cap}")
            }
            SlowConsumer::Total { waiting, held, cap } => write!(
                f,
                "{waiting} messages queued while {held} bytes are queued for all clients, \
                 over --max-outgoing-bytes-total {cap}"
            ),
        }
    }
}

impl OutgoingBudget {
    /// `held` is the gauge to count in (the server passes the one `GET
    /// /metrics` shows).
    pub fn new(per_conn: usize, total_cap: usize, held: &'static AtomicUsize) -> Self {
        OutgoingBudget { per_conn, total_cap, held }
    }

    /// Bytes of the distinct buffers queued now, all clients together.
    pub fn held(&self) -> usize {
        self.held.load(Relaxed)
    }

    /// The same message, its buffer counted in the total until the last
    /// clone of it is dropped. Called once per message action, not per
    /// recipient: one allocation, no copy.
    pub fn count(&self, msg: Message) -> Message {
        match msg {
            Message::Binary(b) if !b.is_empty() => Message::Binary(self.wrap(b)),
            Message::Text(t) if !t.is_empty() => {
                let b = self.wrap(Bytes::from(t));
                // SAFETY: `b` holds the very bytes of a `Utf8Bytes`, unchanged.
                Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(b) })
            }
            other => other,
        }
    }

    fn wrap(&self, bytes: Bytes) -> Bytes {
        self.held.fetch_add(bytes.len(), Relaxed);
        Bytes::from_owner(Counted { bytes, held: self.held })
    }

    /// Whether a message of `len` bytes may join a queue where `waiting`
    /// messages of `queued` bytes wait (`max_waiting`: `--max-outgoing`).
    /// An empty queue takes any message.
    pub fn admit(&self, waiting: usize, max_waiting: usize, queued: usize, len: usize) -> Result<(), SlowConsumer> {
        if waiting == 0 {
            return Ok(());
        }
        if waiting >= max_waiting {
            return Err(SlowConsumer::Count(max_waiting));
        }
        if queued.saturating_add(len) > self.per_conn {
            return Err(SlowConsumer::Bytes { queued, len, cap: self.per_conn });
        }
        let held = self.held();
        if held > self.total_cap {
            return Err(SlowConsumer::Total { waiting, held, cap: self.total_cap });
        }
        Ok(())
    }
}

/// The owner of a counted message buffer: gives its bytes back to the
/// total when the last `Bytes` pointing into it is dropped.
struct Counted {
    bytes: Bytes,
    held: &'static AtomicUsize,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes.len(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_bytes_per_connection_and_in_total() {
        let b = QueueBudget::new(100, 250);
        let (c1, c2) = (b.conn(), b.conn());
        // Reading counts in the total; a complete message moves to the queue.
        assert_eq!(c1.read(70), Ok(()));
        assert_eq!(b.held(), 70);
        assert_eq!(c1.message_read(64, true), Ok(()));
        assert_eq!(b.held(), 64);
        // Over the connection's share: refused, and nothing stays counted for it.
        assert_eq!(c1.read(50), Ok(()));
        assert_eq!(c1.message_read(40, true), Err(OverBudget::Connection(100)));
        assert_eq!(b.held(), 64);
        // A ping frame is given back once read whole.
        assert_eq!(c2.read(10), Ok(()));
        c2.control_read(4);
        assert_eq!(b.held(), 64);
        // Over the total while reading.
        assert_eq!(c2.read(150), Ok(()));
        assert!(!c2.over_total());
        assert_eq!(c2.read(50), Err(OverBudget::Total(250)));
        assert!(c2.over_total());
        assert_eq!(b.held(), 64, "an abandoned partial message is given back");
        drop(c2);
        assert_eq!(b.held(), 64);
        c1.done(64);
        assert_eq!(b.held(), 0);
        // Whatever a connection still holds is released when it goes.
        assert_eq!(c1.read(30), Ok(()));
        assert_eq!(c1.message_read(30, true), Ok(()));
        drop(c1);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn outgoing_bytes_per_connection_and_distinct_buffers_in_total() {
        let held: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let b = OutgoingBudget::new(100, 250, held);
        // An empty queue takes a message of any size.
        assert_eq!(b.admit(0, 8, 0, 10_000), Ok(()));
        assert_eq!(b.admit(1, 8, 60, 40), Ok(()));
        assert_eq!(b.admit(1, 8, 60, 41), Err(SlowConsumer::Bytes { queued: 60, len: 41, cap: 100 }));
        assert_eq!(b.admit(8, 8, 0, 1), Err(SlowConsumer::Count(8)));
        // A buffer counts once however many clones (recipients) hold it,
        // until the last one is dropped.
        let m = b.count(Message::text("x".repeat(200)));
        let clones: Vec<Message> = (0..5).map(|_| m.clone()).collect();
        assert_eq!(b.held(), 200);
        assert_eq!(m, Message::text("x".repeat(200)), "the content is unchanged");
        let other = b.count(Message::Binary(Bytes::from(vec![7u8; 60])));
        assert_eq!(b.held(), 260);
        // Over the total: a client with messages waiting is refused, one
        // with an empty queue is not.
        assert_eq!(b.admit(1, 8, 0, 1), Err(SlowConsumer::Total { waiting: 1, held: 260, cap: 250 }));
        assert_eq!(b.admit(0, 8, 0, 1), Ok(()));
        drop(other);
        assert_eq!(b.admit(1, 8, 0, 1), Ok(()));
        drop(m);
        assert_eq!(b.held(), 200);
        drop(clones);
        assert_eq!(b.held(), 0);
        // Empty messages are not wrapped (nothing to count).
        let _ = b.count(Message::text(""));
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn total_and_per_ip() {
        let l = ConnLimits::new(3, 2);
        let a = l.reserve("1.1.1.1").expect("first");
        let _b = l.reserve("1.1.1.1").expect("second");
        assert_eq!(l.reserve("1.1.1.1").err(), Some(Full::PerIp(2)));
        let _c = l.reserve("2.2.2.2").expect("other ip");
        assert_eq!(l.reserve("3.3.3.3").err(), Some(Full::Total(3)));
        drop(a);
        assert!(l.reserve("1.1.1.1").is_ok());
    }
}
