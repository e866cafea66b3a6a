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
//!   thousands of clients each half-way through a 1 MiB message. Over the
//!   total, the connections holding the most are closed, not the one whose
//!   read crossed it (a few holders must not get everyone else refused),
//!   and a message being read must keep arriving (`--http-timeout`, then
//!   1 KiB/s on average), so bytes are not held by a message never finished;
//! - bytes of messages queued *to* them ([`crate::hub::outgoing::OutgoingBudget`]):
//!   `--max-outgoing-bytes` per connection and `--max-outgoing-bytes-total`
//!   for the distinct buffers of all of them. A count alone let one client
//!   that never reads make the server hold 1,024 messages of up to 4 MiB.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

use crate::hub::shared::ConnShared;
use crate::hub::socket::MayRead;
use crate::ws::read_ahead::ReadAhead;

/// The byte budget for client messages: `--max-queue-bytes` per connection,
/// `--max-queue-bytes-total` for all of them.
///
/// When a read takes the total over its cap, the connections that hold the
/// most are closed (1013) until it fits, not the one whose read crossed it:
/// a few clients that hold their bytes (a message they never finish, a full
/// queue) would otherwise get every other client's next message refused for
/// as long as they like. The reader that crossed is closed only when it holds
/// the most itself. (A share per address was the other way; it does nothing
/// against an attacker with many addresses, and an IPv6 /64 is 2^64 of them.)
pub struct QueueBudget {
    per_conn: usize,
    total_cap: usize,
    total: AtomicUsize,
    /// Every connection's share, to find the ones holding the most.
    conns: Mutex<Holders>,
}

#[derive(Default)]
struct Holders {
    next: u64,
    all: HashMap<u64, Weak<ConnBudget>>,
}

/// Which byte budget a message went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverBudget {
    /// `--max-queue-bytes` (its value) for this connection.
    Connection(usize),
    /// `--max-queue-bytes-total` (its value) for all connections, while
    /// this connection held the most.
    Total(usize),
    /// Another connection's read went over `--max-queue-bytes-total`
    /// (`cap`) while this one held the most (`held` bytes).
    HeldMost { held: usize, cap: usize },
    /// The connection was already closed for the budget (logged then).
    Closed,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverBudget::Connection(cap) => write!(f, "more than {cap} bytes of messages waiting (--max-queue-bytes)"),
            OverBudget::Total(cap) => {
                write!(f, "more than {cap} bytes of messages held for all connections (--max-queue-bytes-total)")
            }
            OverBudget::HeldMost { held, cap } => write!(
                f,
                "holds the most bytes of messages ({held}) while all connections together are over \
                 --max-queue-bytes-total {cap}"
            ),
            OverBudget::Closed => write!(f, "already closed for the byte budget"),
        }
    }
}

/// Why a connection's reads fail from now on (its close is on the way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its own read went over `--max-queue-bytes-total` and it held the most.
    Total,
    /// Another connection's read went over the total and this one held the
    /// most: closed for it (the closer logged the line).
    HeldMost,
    /// Its message arrived too slowly ([`Metered`]).
    TooSlow,
}

impl Refused {
    fn from_u8(v: u8) -> Option<Refused> {
        match v {
            1 => Some(Refused::Total),
            2 => Some(Refused::HeldMost),
            3 => Some(Refused::TooSlow),
            _ => None,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Refused::Total => 1,
            Refused::HeldMost => 2,
            Refused::TooSlow => 3,
        }
    }
}

/// What closes a connection that holds the most when another one's read
/// goes over the total (it logs the connection's one line).
pub type Evict = Box<dyn Fn(OverBudget) + Send + Sync>;

impl QueueBudget {
    pub fn new(per_conn: usize, total_cap: usize) -> Arc<Self> {
        Arc::new(QueueBudget { per_conn, total_cap, total: AtomicUsize::new(0), conns: Mutex::default() })
    }

    /// The share of one new connection; `evict` closes it when it holds
    /// the most while another one's read goes over the total.
    pub fn conn(self: &Arc<Self>, evict: Evict) -> Arc<ConnBudget> {
        let mut holders = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        holders.next += 1;
        let key = holders.next;
        let conn = Arc::new(ConnBudget {
            budget: self.clone(),
            key,
            reading: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            refused: AtomicU8::new(0),
            waiting: AtomicUsize::new(0),
            evict,
        });
        holders.all.insert(key, Arc::downgrade(&conn));
        conn
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

    /// The total is over its cap after a read by `me`: closes the
    /// connections holding the most (largest first) until what they hold
    /// covers the excess. `false` when `me` holds the most itself, or when
    /// the total still does not fit (bytes of victims' queued messages are
    /// given back only once their events are dropped): `me` is closed too.
    /// Bytes still held by connections already closed for the budget count
    /// as covering the excess: while they go, nobody else is closed for them.
    fn make_room(&self, me: &ConnBudget) -> bool {
        // Taken out of the lock first: the last handle of a connection that
        // goes meanwhile may be one of these, and its drop takes the lock.
        let others: Vec<Arc<ConnBudget>> = {
            let holders = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            holders.all.iter().filter(|(key, _)| **key != me.key).filter_map(|(_, c)| c.upgrade()).collect()
        };
        let going: usize = others.iter().filter(|c| c.refused().is_some()).map(|c| c.held()).sum();
        let mut excess = self.held().saturating_sub(self.total_cap.saturating_add(going));
        let mut victims = Vec::new();
        while excess > 0 {
            let largest =
                others.iter().filter(|c| c.refused().is_none()).map(|c| (c.held(), c)).max_by_key(|(h, _)| *h);
            let Some((held, victim)) = largest.filter(|(held, _)| *held > 0 && *held >= me.held()) else {
                return false;
            };
            // (Another reader over the total may have taken it first.)
            if victim.refuse(Refused::HeldMost) {
                excess = excess.saturating_sub(held);
                victims.push((held, victim));
            }
        }
        for (held, victim) in victims {
            (victim.evict)(OverBudget::HeldMost { held, cap: self.total_cap });
        }
        self.held() <= self.total_cap
    }
}

/// One connection's bytes: data frames read from the socket since its last
/// complete message (`reading`), and payloads of its messages queued or
/// running (`queued`). Whatever is still counted when it goes is given back
/// to the total.
pub struct ConnBudget {
    budget: Arc<QueueBudget>,
    key: u64,
    reading: AtomicUsize,
    queued: AtomicUsize,
    /// 0, or why reads fail ([`Refused`]).
    refused: AtomicU8,
    /// Message events queued and not yet taken by the worker (`--max-queue`).
    waiting: AtomicUsize,
    evict: Evict,
}

impl ConnBudget {
    /// `n` bytes of data frames came off the socket. `Err` when the
    /// connection is closed for the budget (over the total while it holds
    /// the most, or closed for another connection's read).
    fn read(&self, n: usize) -> Result<(), OverBudget> {
        self.reading.fetch_add(n, SeqCst);
        let total = self.budget.total.fetch_add(n, SeqCst) + n;
        if total > self.budget.total_cap && self.refused().is_none() && !self.budget.make_room(self) {
            self.refuse(Refused::Total);
            return Err(OverBudget::Total(self.budget.total_cap));
        }
        if self.refused().is_some() {
            // Closed meanwhile: whatever was read since is dropped at once.
            self.budget.release(self.reading.swap(0, SeqCst));
            return Err(OverBudget::Closed);
        }
        Ok(())
    }

    /// Why reads fail, once the connection is closed for the budget or for
    /// a message that arrived too slowly.
    pub fn refused(&self) -> Option<Refused> {
        Refused::from_u8(self.refused.load(SeqCst))
    }

    /// Marks the connection refused (`false` if it already was) and gives
    /// back the partial message it was reading: it is abandoned, and others
    /// reading while this one closes must not be refused because of it.
    fn refuse(&self, why: Refused) -> bool {
        if self.refused.compare_exchange(0, why.as_u8(), SeqCst, SeqCst).is_err() {
            return false;
        }
        self.budget.release(self.reading.swap(0, SeqCst));
        true
    }

    /// Bytes this connection holds now: being read and queued.
    fn held(&self) -> usize {
        self.reading.load(SeqCst) + self.queued.load(SeqCst)
    }

    /// A data message of `len` payload bytes was read whole. With `queue`
    /// it joins this connection's queue (`Err` when that would go over
    /// `--max-queue-bytes`); otherwise it is dropped. Either way the bytes
    /// read for it are no longer "being read", and they are given back
    /// before the message is counted, so the total never shows both. (A
    /// read may already hold the start of the next frame; at most one read
    /// buffer goes uncounted.)
    pub fn message_read(&self, len: usize, queue: bool) -> Result<(), OverBudget> {
        self.budget.release(self.reading.swap(0, SeqCst));
        if !queue {
            return Ok(());
        }
        if self.refused().is_some() {
            return Err(OverBudget::Closed);
        }
        if self.queued.load(SeqCst) + len > self.budget.per_conn {
            return Err(OverBudget::Connection(self.budget.per_conn));
        }
        self.queued.fetch_add(len, SeqCst);
        self.budget.total.fetch_add(len, SeqCst);
        Ok(())
    }

    /// A data frame of `n` bytes would be read and its message queued
    /// without going over a budget, and nothing refuses reads (a follower
    /// takes only such a message, `ws::follow`; any other is the reader's).
    pub fn fits(&self, n: usize) -> bool {
        self.refused().is_none()
            && self.queued.load(SeqCst) + n <= self.budget.per_conn
            && self.budget.total.load(SeqCst) + n <= self.budget.total_cap
    }

    /// Message events queued and not yet taken by the worker.
    pub fn events_waiting(&self) -> usize {
        self.waiting.load(SeqCst)
    }

    /// A message event joined the connection's queue.
    pub fn event_queued(&self) {
        self.waiting.fetch_add(1, SeqCst);
    }

    /// The worker took a message event off the queue (or it never got there).
    pub fn event_taken(&self) {
        self.waiting.fetch_sub(1, SeqCst);
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
        let mut holders = self.budget.conns.lock().unwrap_or_else(|e| e.into_inner());
        holders.all.remove(&self.key);
    }
}

/// Follows the frames in the bytes read, so that only data frames (header
/// and payload) count against the budget and a message's progress is known.
/// Control frames (pings, pongs, the close frame) are at most 139 bytes each
/// and tungstenite handles each before it reads on, so they hold nothing:
/// counting them by an assumed size let pings with a 64-bit length (a
/// 14-byte header tungstenite accepts) leave 8 bytes each counted for good.
#[derive(Default)]
struct Frames {
    /// The current frame's header as far as it has arrived.
    head: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to come (`in_payload`).
    left: u64,
    in_payload: bool,
    /// The current frame is a data frame (text, binary, continuation).
    data: bool,
    /// Bytes of the data message being read; 0 between messages.
    message: u64,
    /// Data messages whose last byte was read.
    finished: u64,
    /// The current frame is a close frame; its payload's first two bytes
    /// (the code the client sent, unmasked) as far as they arrived.
    close: bool,
    /// The current frame's masking key (zeros when unmasked).
    mask: [u8; 4],
    code: [u8; 2],
    code_have: usize,
    /// The close code of the client's close frame, as it was on the wire
    /// (tungstenite reports a code a client may not send as 1002).
    close_code: Option<u16>,
}

impl Frames {
    /// Follows `bytes`; returns how many of them belong to data frames.
    fn scan(&mut self, mut bytes: &[u8]) -> usize {
        let mut data = 0;
        loop {
            if self.in_payload {
                if bytes.is_empty() {
                    return data;
                }
                let n = self.left.min(bytes.len() as u64) as usize;
                if self.close {
                    self.take_code(&bytes[..n]);
                }
                bytes = &bytes[n..];
                self.left -= n as u64;
                if self.data {
                    data += n;
                    self.message += n as u64;
                }
                if self.left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let need = self.header_len();
            if self.have < need {
                if bytes.is_empty() {
                    return data;
                }
                let n = (need - self.have).min(bytes.len());
                self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                continue;
            }
            data += self.start_frame();
        }
    }

    /// Nothing read of a next frame, and no message left unfinished.
    fn between_messages(&self) -> bool {
        self.message == 0 && !self.in_payload && self.have == 0
    }

    /// Length of the current frame's header (2 until its length byte is in).
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let extra = match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extra + if self.head[1] & 0x80 != 0 { 4 } else { 0 }
    }

    /// The header is complete: the payload comes next. Returns the header's
    /// bytes when it starts a data frame.
    fn start_frame(&mut self) -> usize {
        let header = self.have;
        self.left = match self.head[1] & 0x7f {
            126 => u16::from_be_bytes([self.head[2], self.head[3]]) as u64,
            127 => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or_default()),
            n => n as u64,
        };
        self.data = self.head[0] & 0x08 == 0;
        self.close = self.head[0] & 0x0f == 0x8;
        self.code_have = 0;
        self.mask = [0; 4];
        if self.head[1] & 0x80 != 0 {
            self.mask.copy_from_slice(&self.head[header - 4..header]);
        }
        self.have = 0;
        self.in_payload = true;
        if self.data {
            self.message += header as u64;
        }
        if self.left == 0 {
            self.end_frame();
        }
        if self.data {
            header
        } else {
            0
        }
    }

    /// Keeps a close frame's code bytes from `payload` (its next bytes), unmasked.
    fn take_code(&mut self, payload: &[u8]) {
        for &b in payload.iter().take(2 - self.code_have.min(2)) {
            self.code[self.code_have] = b ^ self.mask[self.code_have];
            self.code_have += 1;
        }
    }

    fn end_frame(&mut self) {
        self.in_payload = false;
        if self.close && self.code_have == 2 && self.close_code.is_none() {
            self.close_code = Some(u16::from_be_bytes(self.code));
        }
        // The final frame of a data message: the message is complete.
        if self.data && self.head[0] & 0x80 != 0 {
            self.message = 0;
            self.finished += 1;
        }
    }
}

/// A message must keep arriving: beyond `--http-timeout`, at
/// [`MIN_RATE`](crate::http1::body::MIN_RATE) bytes per second on average
/// (as request bodies must). Without it a client could hold the bytes of a
/// message it never finishes (and keep the connection with pings) for good.
struct Pace {
    timeout: Duration,
    /// When the message being read was first left unfinished by a read.
    since: Option<Instant>,
    /// Wakes the reader at the deadline while the socket is quiet; armed
    /// only then, and again when it fires early (more bytes came since).
    timer: Option<Alarm>,
}

/// A pending deadline ([`crate::runtime::timeout`] around nothing).
type Alarm = Pin<Box<dyn Future<Output = Result<(), ()>> + Send>>;

impl Pace {
    fn deadline(&self, since: Instant, message: u64) -> Instant {
        since + crate::http1::body::allowance(self.timeout, message)
    }

    /// After a read that leaves `message` bytes of an unfinished message
    /// (0: none), and that finished one (`finished`) or not: `false` once
    /// it is too slow.
    fn after_read(&mut self, message: u64, finished: bool) -> bool {
        if finished || message == 0 {
            // The next message is timed from the end of this read.
            self.since = None;
            self.timer = None;
        }
        if message == 0 {
            return true;
        }
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        now <= self.deadline(since, message)
    }

    /// While the socket has nothing: `Ready` once the unfinished message
    /// (`message` bytes so far) is too slow.
    fn poll_quiet(&mut self, cx: &mut Context<'_>, message: u64) -> Poll<()> {
        let Some(since) = self.since else { return Poll::Pending };
        loop {
            let deadline = self.deadline(since, message);
            let timer = self.timer.get_or_insert_with(|| {
                let left = deadline.saturating_duration_since(Instant::now());
                Box::pin(crate::runtime::timeout(left, std::future::pending::<()>()))
            });
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.timer = None;
            if Instant::now() > deadline {
                return Poll::Ready(());
            }
        }
    }
}

/// The connection's socket, counting the bytes of data frames read against
/// its budget. Over `--max-queue-bytes-total` (or once the connection was
/// closed for it) a read fails (with the bytes dropped), so tungstenite
/// stops and the reader closes the connection with 1013; a message that
/// arrives too slowly ([`Pace`]) fails a read the same way (1008).
/// Writes that go through are recorded too: the ping timeout tells a client
/// that reads nothing from one that reads a big message slowly.
pub struct Metered<S> {
    /// The socket, read ahead in large chunks under tungstenite's small reads.
    inner: ReadAhead<S>,
    budget: Arc<ConnBudget>,
    shared: Arc<ConnShared>,
    frames: Frames,
    pace: Pace,
}

impl<S> Metered<S> {
    /// `timeout`: `--http-timeout`, what a message gets beyond its bytes.
    pub fn new(inner: S, budget: Arc<ConnBudget>, shared: Arc<ConnShared>, timeout: Duration) -> Self {
        Metered {
            inner: ReadAhead::new(inner),
            budget,
            shared,
            frames: Frames::default(),
            pace: Pace { timeout, since: None, timer: None },
        }
    }

    /// The read error for a message that arrives too slowly.
    fn too_slow(&mut self) -> io::Error {
        self.budget.refuse(Refused::TooSlow);
        let (bytes, timeout) = (self.frames.message, self.pace.timeout);
        io::Error::other(format!(
            "a message arrives too slowly: {bytes} bytes in {:.1?}, under {} bytes/s beyond --http-timeout {timeout:?}",
            self.pace.since.map(|s| s.elapsed()).unwrap_or_default(),
            crate::http1::body::MIN_RATE,
        ))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // A follower may hold the socket between messages, or have given
        // it back with bytes it took and did not run (ws::follow): they
        // are read first, through the same scan and budget.
        if this.frames.between_messages() {
            match this.shared.wire.may_read() {
                MayRead::Socket => {}
                MayRead::Wait => return Poll::Pending,
                MayRead::Unread(bytes) => this.inner.put_back(bytes),
            }
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => {
                let finished = this.frames.finished;
                let data = this.frames.scan(&buf[..n]);
                if let Some(code) = this.frames.close_code.take() {
                    this.shared.client_sent_close(code);
                }
                if data > 0 {
                    if let Err(over) = this.budget.read(data) {
                        return Poll::Ready(Err(io::Error::other(over.to_string())));
                    }
                }
                if !this.pace.after_read(this.frames.message, this.frames.finished != finished) {
                    return Poll::Ready(Err(this.too_slow()));
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if this.frames.between_messages() => {
                this.shared.wire.parked();
                Poll::Pending
            }
            Poll::Pending => match this.pace.poll_quiet(cx, this.frames.message) {
                Poll::Ready(()) => Poll::Ready(Err(this.too_slow())),
                Poll::Pending => Poll::Pending,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A share whose closer records why it was closed.
    fn share(b: &Arc<QueueBudget>) -> (Arc<ConnBudget>, Arc<Mutex<Vec<OverBudget>>>) {
        let closed = Arc::new(Mutex::new(Vec::new()));
        let log = closed.clone();
        (b.conn(Box::new(move |why| log.lock().expect("lock").push(why))), closed)
    }

    #[test]
    fn queue_bytes_per_connection_and_in_total() {
        let b = QueueBudget::new(100, 250);
        let ((c1, _), (c2, _)) = (share(&b), share(&b));
        // Reading counts in the total; a complete message moves to the queue.
        assert_eq!(c1.read(70), Ok(()));
        assert_eq!(b.held(), 70);
        assert_eq!(c1.message_read(64, true), Ok(()));
        assert_eq!(b.held(), 64);
        // Over the connection's share: refused, and nothing stays counted for it.
        assert_eq!(c1.read(50), Ok(()));
        assert_eq!(c1.message_read(40, true), Err(OverBudget::Connection(100)));
        assert_eq!(b.held(), 64);
        // Over the total while reading, holding the most: refused.
        assert_eq!(c2.read(150), Ok(()));
        assert_eq!(c2.refused(), None);
        assert_eq!(c2.read(50), Err(OverBudget::Total(250)));
        assert_eq!(c2.refused(), Some(Refused::Total));
        assert_eq!(b.held(), 64, "an abandoned partial message is given back");
        assert_eq!(c2.read(10), Err(OverBudget::Closed), "a refused connection reads nothing more");
        assert_eq!(b.held(), 64);
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
    fn over_the_total_the_connections_holding_the_most_are_closed() {
        let b = QueueBudget::new(1000, 1000);
        let (holders, closed): (Vec<_>, Vec<_>) = (0..3).map(|_| share(&b)).unzip();
        // Three connections each half-way through a message of 300 bytes
        // (one of them further), and one with 50 bytes queued.
        for (c, n) in holders.iter().zip([300, 320, 300]) {
            assert_eq!(c.read(n), Ok(()));
        }
        let (queued, queued_closed) = share(&b);
        assert_eq!(queued.read(50), Ok(()));
        assert_eq!(queued.message_read(50, true), Ok(()));
        assert_eq!(b.held(), 970);
        // Another client's small message goes over: the one holding the
        // most is closed (its partial message given back), not the sender.
        let (small, small_closed) = share(&b);
        assert_eq!(small.read(40), Ok(()));
        assert_eq!(b.held(), 690);
        assert_eq!(holders[1].refused(), Some(Refused::HeldMost));
        assert_eq!(*closed[1].lock().expect("lock"), [OverBudget::HeldMost { held: 320, cap: 1000 }]);
        assert_eq!(holders[1].read(5), Err(OverBudget::Closed), "its reads fail from then on");
        assert_eq!(holders[1].message_read(5, true), Err(OverBudget::Closed));
        assert_eq!(b.held(), 690);
        // A sender that holds the most itself is closed, as before.
        let (big, _) = share(&b);
        assert_eq!(big.read(310), Ok(()));
        assert_eq!(big.read(10), Err(OverBudget::Total(1000)));
        assert_eq!(big.refused(), Some(Refused::Total));
        assert_eq!(b.held(), 690);
        // Nobody else was closed.
        for (c, log) in [(&holders[0], &closed[0]), (&holders[2], &closed[2]), (&queued, &queued_closed)] {
            assert_eq!(c.refused(), None);
            assert!(log.lock().expect("lock").is_empty());
        }
        assert!(small_closed.lock().expect("lock").is_empty());
        // Queued bytes are given back only when their event is done: a
        // victim holding them does not make room at once, so the sender is
        // refused too.
        let b = QueueBudget::new(1000, 100);
        let ((q, q_closed), (s, _)) = (share(&b), share(&b));
        assert_eq!(q.read(90), Ok(()));
        assert_eq!(q.message_read(90, true), Ok(()));
        assert_eq!(s.read(20), Err(OverBudget::Total(100)));
        assert_eq!(*q_closed.lock().expect("lock"), [OverBudget::HeldMost { held: 90, cap: 100 }]);
        assert_eq!(b.held(), 90);
        // While those bytes go, another reader over the total closes nobody
        // else (not a cascade through every connection with a queue).
        let ((r, r_closed), (t, _)) = (share(&b), share(&b));
        assert_eq!(r.read(8), Ok(()));
        assert_eq!(r.message_read(8, true), Ok(()));
        assert_eq!(t.read(5), Err(OverBudget::Total(100)));
        assert!(r_closed.lock().expect("lock").is_empty());
        assert_eq!(r.refused(), None);
        q.done(90);
        r.done(8);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn a_message_read_whole_never_counts_twice() {
        // One connection reads 100-byte messages; another reads 10-byte
        // ones. Together they never hold more than 110 bytes, so neither is
        // ever over a total of 110, whatever the interleaving.
        let b = QueueBudget::new(1000, 110);
        let ((big, _), (small, _)) = (share(&b), share(&b));
        let refused = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..200_000 {
                    if big.read(100).is_err() || big.message_read(100, true).is_err() {
                        refused.fetch_add(1, SeqCst);
                        return;
                    }
                    big.done(100);
                }
            });
            s.spawn(|| {
                for _ in 0..200_000 {
                    if small.read(10).is_err() {
                        refused.fetch_add(1, SeqCst);
                        return;
                    }
                    let _ = small.message_read(10, false);
                }
            });
        });
        assert_eq!(refused.load(SeqCst), 0, "a reader was refused while the total was not exceeded");
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn the_close_code_is_read_off_the_wire_unmasked() {
        // Masked (as a client sends it), arriving a byte at a time.
        let mut f = Frames::default();
        let mut bytes = vec![0x88, 0x82, 0x11, 0x22, 0x33, 0x44];
        bytes.extend_from_slice(&[0x03 ^ 0x11, 0xed ^ 0x22]);
        for byte in &bytes {
            f.scan(std::slice::from_ref(byte));
        }
        assert_eq!(f.close_code, Some(1005));
        // Unmasked, after a data frame; an empty close frame has no code.
        let mut f = Frames::default();
        f.scan(&[0x81, 0x01, b'x', 0x88, 0x02, 0x03, 0xe8]);
        assert_eq!(f.close_code, Some(1000));
        let mut f = Frames::default();
        f.scan(&[0x88, 0x00]);
        assert_eq!(f.close_code, None);
    }

    #[test]
    fn only_data_frames_count_and_a_message_is_followed_to_its_end() {
        let frame = |fin: bool, opcode: u8, len: usize, ext: u8| {
            let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
            match ext {
                0 => f.push(0x80 | len as u8),
                2 => f.extend([0x80 | 126, (len >> 8) as u8, len as u8]),
                _ => {
                    f.push(0x80 | 127);
                    f.extend((len as u64).to_be_bytes());
                }
            }
            f.extend([0; 4]);
            f.extend(std::iter::repeat_n(b'x', len));
            f
        };
        let mut f = Frames::default();
        // Pings, minimal or with a 64-bit length (a 14-byte header): nothing.
        assert_eq!(f.scan(&frame(true, 0x9, 0, 0)), 0);
        assert_eq!(f.scan(&frame(true, 0x9, 3, 8).repeat(100)), 0);
        assert_eq!(f.message, 0);
        // A text message in two fragments with a ping between them, fed one
        // byte at a time: header and payload bytes of the data frames count.
        let bytes = [frame(false, 0x1, 200, 2), frame(true, 0xA, 4, 8), frame(true, 0x0, 5, 0)].concat();
        let mut data = 0;
        for (i, byte) in bytes.iter().enumerate() {
            data += f.scan(std::slice::from_ref(byte));
            if i == 207 {
                assert_eq!(f.message, 208, "the first fragment read");
            }
        }
        assert_eq!(data, 208 + 11);
        assert_eq!((f.message, f.finished), (0, 1), "the message is complete");
        // An empty final frame, and a frame of 70000 bytes, in one read.
        let bytes = [frame(true, 0x2, 0, 0), frame(true, 0x2, 70_000, 8)].concat();
        assert_eq!(f.scan(&bytes), bytes.len());
        assert_eq!((f.message, f.finished), (0, 3));
        // Cut in the middle of the extended length.
        let bytes = frame(false, 0x2, 300, 2);
        assert_eq!(f.scan(&bytes[..3]), 0);
        assert_eq!(f.scan(&bytes[3..100]), 100);
        assert_eq!(f.message, 100);
    }

    /// Bytes a follower took off the socket and gave back (`ws::follow`)
    /// are read first, through the same frame scan and budget as the
    /// socket's: a data frame counts, a close frame's code is seen.
    #[test]
    fn bytes_a_follower_gave_back_are_read_first_scanned_and_counted() {
        use futures_lite::AsyncReadExt;
        use std::io::Write;
        let masked = |opcode: u8, payload: &[u8]| {
            let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 1, 2, 3, 4];
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
            f
        };
        let b = QueueBudget::new(1000, 1000);
        let (budget, _) = share(&b);
        let (shared, _outgoing) = ConnShared::new();
        let (a, mut peer) = std::os::unix::net::UnixStream::pair().expect("pair");
        let (given, later) = (masked(0x1, b"hi"), masked(0x8, &4000u16.to_be_bytes()));
        peer.write_all(&later).expect("write");
        let socket = crate::runtime::UnixStream::from(a);
        let mut m = Metered::new(socket, budget.clone(), shared.clone(), Duration::from_secs(1));
        shared.wire.give_back(given.clone());
        let mut got = vec![0u8; given.len() + later.len()];
        crate::runtime::block_on(m.read_exact(&mut got)).expect("read");
        assert_eq!(got, [given, later].concat());
        assert_eq!(b.held(), 8, "the given-back data frame counted (header and payload)");
        assert_eq!(shared.client_close_code(), Some(4000), "the socket's close frame seen after it");
    }
}
