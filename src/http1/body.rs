//! Reading a whole request body before anything acts on it, bounded in
//! bytes and in time.
//!
//! Why whole: a script (or FastCGI server) that got its body streamed would
//! hold a `--max-procs` slot while a slow client trickles it in (16 clients
//! sending a byte every few seconds starved every other page and WebSocket
//! event), and a body that broke off or was malformed would reach the script
//! as a normal end of input (it would act on a truncated upload). Read
//! first, a body is complete and well formed before the slot is taken; a
//! chunked one gets its `CONTENT_LENGTH` like any other.
//!
//! Bounds: `--max-request-body` per request (413), `--max-request-body-total`
//! for all bodies held at once (503: memory is the cost, and a body is held
//! until the script has read it), and time: beyond `--http-timeout`, a
//! client must keep sending at [`MIN_RATE`] on average (408), so holding a
//! connection costs an attacker bytes, not just patience.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt};

use crate::runtime;

/// Bytes per second a client must average while it sends a body (or reads
/// a response), beyond the `--http-timeout` it always gets.
pub const MIN_RATE: u64 = 1024;

/// Why a body was not read.
#[derive(Debug)]
pub enum ReadError {
    /// Over the per-request cap (413).
    TooLarge,
    /// Over the total for all bodies held at once (503).
    Busy,
    /// The body broke off or its framing was invalid (400).
    Broken(io::Error),
    /// The client sent too slowly (408).
    TooSlow,
}

impl ReadError {
    /// The status that answers it, and why, for the client and the log
    /// (`cap_flag` names the per-request cap that applied).
    pub fn answer(&self, cap: usize, cap_flag: &str) -> (u16, String) {
        match self {
            ReadError::TooLarge => (413, format!("the body is over {cap} bytes ({cap_flag})")),
            ReadError::Busy => {
                (503, "too many request bodies held at once (--max-request-body-total); try again later".into())
            }
            ReadError::Broken(e) => (400, format!("the body is malformed or ended early: {e}")),
            ReadError::TooSlow => (408, "the body came too slowly".into()),
        }
    }
}

/// How long a client may take to send `received` bytes.
pub fn allowance(timeout: Duration, received: u64) -> Duration {
    timeout + Duration::from_millis(received.saturating_mul(1000) / MIN_RATE)
}

/// Reads all of `body`, at most `cap` bytes; `reserve(n)` is asked before
/// `n` more bytes are kept (and may refuse: [`ReadError::Busy`]). A
/// `declared` length over the cap is refused before anything is read.
pub async fn read_whole(
    body: &mut (impl AsyncRead + Unpin),
    declared: Option<usize>,
    cap: usize,
    timeout: Duration,
    mut reserve: impl FnMut(usize) -> bool,
) -> Result<Vec<u8>, ReadError> {
    if declared.is_some_and(|n| n > cap) {
        return Err(ReadError::TooLarge);
    }
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut reserved = 0;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = allowance(timeout, buf.len() as u64).saturating_sub(started.elapsed());
        let n = match runtime::timeout(left, body.read(&mut chunk)).await {
            Err(()) => return Err(ReadError::TooSlow),
            Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => return Err(ReadError::TooSlow),
            Ok(Err(e)) => return Err(ReadError::Broken(e)),
            Ok(Ok(0)) => return Ok(buf),
            Ok(Ok(n)) => n,
        };
        if buf.len() + n > cap {
            return Err(ReadError::TooLarge);
        }
        if buf.len() + n > reserved {
            // Whole declared length at once, else in steps of 64 KiB.
            let step = declared.unwrap_or(0).max(buf.len() + n).max(reserved + 64 * 1024).min(cap) - reserved;
            if !reserve(step) {
                return Err(ReadError::Busy);
            }
            reserved += step;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `--max-request-body-total`: bytes of request bodies held at once.
pub struct BodyBudget {
    held: AtomicUsize,
    total: usize,
    /// `--max-request-body`.
    pub per_request: usize,
}

impl BodyBudget {
    pub fn new(per_request: usize, total: usize) -> Arc<Self> {
        Arc::new(BodyBudget { held: AtomicUsize::new(0), total, per_request })
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> bool {
        let mut now = self.held.load(Ordering::Relaxed);
        loop {
            if now + n > self.total {
                return false;
            }
            match self.held.compare_exchange_weak(now, now + n, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    crate::metrics::get().request_body_bytes.fetch_add(n, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => now = actual,
            }
        }
    }

    fn give_back(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
        crate::metrics::get().request_body_bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A body's bytes with their share of the budget, given back when the last
/// reference (the script's stdin writer, say) is dropped.
struct Held {
    data: Vec<u8>,
    reserved: usize,
    budget: Arc<BodyBudget>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.give_back(self.reserved);
    }
}

/// A body for a script: read whole within the budget's bounds.
pub async fn read_for_script(
    body: &mut (impl AsyncRead + Unpin),
    declared: Option<usize>,
    budget: &Arc<BodyBudget>,
    timeout: Duration,
) -> Result<Bytes, ReadError> {
    let mut reserved = 0;
    let read = read_whole(body, declared, budget.per_request, timeout, |n| {
        let ok = budget.take(n);
        reserved += if ok { n } else { 0 };
        ok
    })
    .await;
    match read {
        Ok(data) if data.is_empty() => {
            budget.give_back(reserved);
            Ok(Bytes::new())
        }
        Ok(data) => Ok(Bytes::from_owner(Held { data, reserved, budget: budget.clone() })),
        Err(e) => {
            budget.give_back(reserved);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], declared: Option<usize>, budget: &Arc<BodyBudget>) -> Result<Bytes, ReadError> {
        let mut r = futures_lite::io::Cursor::new(input.to_vec());
        runtime::block_on(read_for_script(&mut r, declared, budget, Duration::from_secs(5)))
    }

    #[test]
    fn bodies_are_bounded_and_their_bytes_given_back() {
        let budget = BodyBudget::new(100_000, 150_000);
        let a = read(&[1; 90_000], Some(90_000), &budget).expect("fits");
        assert_eq!(a.len(), 90_000);
        assert_eq!(budget.held(), 90_000);
        assert!(matches!(read(&[1; 90_000], Some(90_000), &budget), Err(ReadError::Busy)));
        let roomy = BodyBudget::new(100_000, 1 << 30);
        assert!(matches!(read(&[1; 100_001], None, &roomy), Err(ReadError::TooLarge)));
        assert!(matches!(read(b"", Some(200_000), &budget), Err(ReadError::TooLarge)));
        assert_eq!(roomy.held(), 0);
        assert_eq!(budget.held(), 90_000, "refused reads keep nothing");
        let b = a.clone();
        drop(a);
        assert_eq!(budget.held(), 90_000, "held while a reference lives");
        drop(b);
        assert_eq!(budget.held(), 0);
        let c = read(&[2; 70_000], None, &budget).expect("chunked-like, in steps");
        assert_eq!((c.len(), budget.held()), (70_000, 100_000));
        drop(c);
        assert_eq!(budget.held(), 0);
        assert!(read(b"", None, &budget).expect("empty").is_empty());
    }

    #[test]
    fn slow_senders_get_time_in_proportion_to_their_bytes() {
        assert_eq!(allowance(Duration::from_secs(10), 0), Duration::from_secs(10));
        assert_eq!(allowance(Duration::from_secs(10), 10 * MIN_RATE), Duration::from_secs(20));
    }
}
