//! What the hub may hold for clients that read slower than they are sent
//! to: the outgoing byte budget, per connection and in total, and the
//! refusal ([`SlowConsumer`]) that closes such a client with 1008.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use async_tungstenite::tungstenite::Utf8Bytes;
use bytes::Bytes;

use crate::action::Message;

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

    /// A message's encoded frame ([`super::socket::encode`]), counted in
    /// the total like the message itself until its last clone is dropped.
    pub fn count_frame(&self, frame: Bytes) -> Bytes {
        self.wrap(frame)
    }

    fn wrap(&self, bytes: Bytes) -> Bytes {
        self.held.fetch_add(bytes.len(), Relaxed);
        Bytes::from_owner(Counted { bytes, held: self.held })
    }

    /// `Some((held, cap))` while all clients together hold more than
    /// `--max-outgoing-bytes-total`, not counting `transient` bytes (a
    /// delivery's encoded frame, dropped once it is done): what resumable
    /// sessions keep (their windows and the queues of detached ones)
    /// counts too, and gives way.
    pub fn over_total(&self, transient: usize) -> Option<(usize, usize)> {
        let held = self.held().saturating_sub(transient);
        (held > self.total_cap).then_some((held, self.total_cap))
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
}
