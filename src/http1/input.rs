//! The reading side of one HTTP connection: request heads and bodies come
//! out of one buffer, so bytes a client sends early (a pipelined request,
//! the first WebSocket frame right after the handshake) are never lost.
//!
//! Costs grow with what the client sends, never with time: every read
//! happens because the socket is readable, the head's end is searched only
//! in new bytes, and the buffer never grows past `--max-request-head`. A
//! client that stops sending in the middle of a body is cut off after
//! `--http-timeout` without a byte.
//!
//! The body reader handed to a handler shares this state (behind a mutex
//! held only while polling); a reader left over from an earlier request on
//! the same connection reads nothing.

use std::future::Future;
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::runtime;
use crate::tls::Stream;
use futures_lite::io::{AsyncRead, AsyncWrite};

use super::fields::is_field_value;
use super::head::{self, Framing, Head, Refusal};

/// Longest chunk-size line (RFC 9112 §7.1) or trailer line.
const MAX_LINE: usize = 4096;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Most heads fit; a bigger one grows the buffer (up to `--max-request-head`).
const FIRST_BUFFER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    /// Trailer bytes read so far (dropped; bounded like a head).
    Trailers(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Done,
    Length(u64),
    Chunked(Chunk),
}

/// Why no head came.
#[derive(Debug)]
pub enum HeadError {
    /// The client closed (or went quiet) before sending a byte of it.
    Gone,
    /// The head is not acceptable; answer with this status.
    Refused(Refusal),
}

pub struct Input {
    stream: Stream,
    /// Grows from [`FIRST_BUFFER`] up to `max_head` when a head needs it.
    buf: Vec<u8>,
    max_head: usize,
    start: usize,
    end: usize,
    /// Bytes of the current head already searched for its end.
    scanned: usize,
    body: Body,
    /// Which request the body belongs to (stale readers read nothing).
    generation: u64,
    /// `100 Continue` bytes still to send before the body is read.
    continue_due: usize,
    stall_limit: Duration,
    stall: Option<runtime::Timer>,
    /// The body's framing was broken: the connection cannot carry another request.
    pub broken: bool,
}

pub type Shared = Arc<Mutex<Input>>;

pub fn lock(s: &Shared) -> MutexGuard<'_, Input> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, why.to_owned())
}

impl Input {
    pub fn new(stream: Stream, max_head: usize, stall_limit: Duration) -> Self {
        Input {
            stream,
            buf: vec![0; FIRST_BUFFER.min(max_head)],
            max_head,
            start: 0,
            end: 0,
            scanned: 0,
            body: Body::Done,
            generation: 0,
            continue_due: 0,
            stall_limit,
            stall: None,
            broken: false,
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    /// `stalls` applies `--http-timeout` to this wait (bodies; a head has
    /// one deadline for all of it instead).
    fn poll_fill(&mut self, cx: &mut Context<'_>, stalls: bool) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            (self.start, self.end, self.scanned) = (0, 0, 0);
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.end, self.start) = (self.end - self.start, 0);
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= self.max_head {
                return Poll::Ready(Err(io::Error::new(ErrorKind::OutOfMemory, "request head buffer full")));
            }
            self.buf.resize((self.buf.len() * 2).min(self.max_head), 0);
        }
        match Pin::new(&mut self.stream).poll_read(cx, &mut self.buf[self.end..]) {
            Poll::Ready(r) => {
                self.stall = None;
                let n = r?;
                self.end += n;
                Poll::Ready(Ok(n))
            }
            Poll::Pending if stalls => {
                let limit = self.stall_limit;
                let timer = self.stall.get_or_insert_with(|| runtime::Timer::after(limit));
                ready!(Pin::new(timer).poll(cx));
                Poll::Ready(Err(io::Error::new(ErrorKind::TimedOut, "the client stopped sending")))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The next request head, checked ([`head::parse`]).
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, HeadError>> {
        loop {
            if self.scanned == 0 {
                let blank = head::leading_blank_lines(&self.buf[self.start..self.end]);
                self.start += blank;
            }
            let pending = &self.buf[self.start..self.end];
            if let Some(len) = head::find_end(pending, self.scanned) {
                let parsed = head::parse(&pending[..len]);
                self.start += len;
                self.scanned = 0;
                return Poll::Ready(parsed.map_err(HeadError::Refused));
            }
            if let Some(refusal) = head::not_a_request_line(pending) {
                return Poll::Ready(Err(HeadError::Refused(refusal)));
            }
            self.scanned = pending.len();
            match ready!(self.poll_fill(cx, false)) {
                Ok(0) => return Poll::Ready(Err(HeadError::Gone)),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::OutOfMemory => return Poll::Ready(Err(self.too_big())),
                Err(_) => return Poll::Ready(Err(HeadError::Gone)),
            }
        }
    }

    /// A head that does not fit: 414 when even the request line does not.
    fn too_big(&self) -> HeadError {
        let max = self.max_head;
        HeadError::Refused(match self.buf[self.start..self.end].contains(&b'\n') {
            true => Refusal::new(431, format!("the request head is over {max} bytes (--max-request-head)")),
            false => Refusal::new(414, format!("the request line is over {max} bytes (--max-request-head)")),
        })
    }

    /// `true` when nothing of a next request has arrived.
    pub fn is_idle(&self) -> bool {
        self.start == self.end
    }

    /// Starts reading the body of the request whose head was just read;
    /// returns its generation for [`BodyReader`].
    pub fn begin_body(&mut self, head: &Head) -> u64 {
        self.generation += 1;
        self.body = match head.framing {
            Framing::None => Body::Done,
            Framing::Length(n) => Body::Length(n),
            Framing::Chunked => Body::Chunked(Chunk::Size),
        };
        self.continue_due = if head.expect_continue { CONTINUE.len() } else { 0 };
        self.generation
    }

    /// Reads body bytes into `out`; `Ok(0)` at the end of the body.
    fn poll_body(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.body != Body::Done && self.continue_due > 0 {
            ready!(self.poll_continue(cx))?;
        }
        let result = ready!(self.poll_body_inner(cx, out));
        if result.is_err() {
            self.broken = true;
        }
        Poll::Ready(result)
    }

    /// Before the final response goes out: a `100 Continue` not yet begun
    /// is dropped (it may not follow the final response), one half written
    /// is finished (it may not be cut either).
    /// `Ok(true)` when a `100 Continue` was dropped while the body is still
    /// unread: the client may or may not send it now, so the connection
    /// cannot carry another request.
    pub fn poll_settle_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let dropped = self.continue_due == CONTINUE.len() && self.body != Body::Done;
        if self.continue_due == CONTINUE.len() {
            self.continue_due = 0;
        }
        ready!(self.poll_continue(cx))?;
        Poll::Ready(Ok(dropped))
    }

    /// The handler is done with this request: a body reader it left behind
    /// (in a task still running) reads nothing more, so it cannot compete
    /// with [`discard_body`] for the socket, nor read the next request.
    pub fn retire_readers(&mut self) {
        self.generation += 1;
    }

    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.continue_due > 0 {
            let from = CONTINUE.len() - self.continue_due;
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &CONTINUE[from..]))?;
            if n == 0 {
                return Poll::Ready(Err(ErrorKind::WriteZero.into()));
            }
            self.continue_due -= n;
        }
        // What TLS still buffers of it (nothing on plain TCP).
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_body_inner(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.body {
                Body::Done => return Poll::Ready(Ok(0)),
                Body::Length(left) | Body::Chunked(Chunk::Data(left)) => {
                    if self.start == self.end && ready!(self.poll_fill(cx, true))? == 0 {
                        return Poll::Ready(Err(ErrorKind::UnexpectedEof.into()));
                    }
                    let n = (self.end - self.start).min(out.len()).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
                    self.start += n;
                    let left = left - n as u64;
                    self.body = match (self.body, left) {
                        (Body::Length(_), 0) => Body::Done,
                        (Body::Length(_), l) => Body::Length(l),
                        (_, 0) => Body::Chunked(Chunk::DataEnd),
                        (_, l) => Body::Chunked(Chunk::Data(l)),
                    };
                    return Poll::Ready(Ok(n));
                }
                Body::Chunked(Chunk::Size) => {
                    let (a, b) = ready!(self.poll_line(cx))?;
                    self.body = match chunk_size(&self.buf[a..b])? {
                        0 => Body::Chunked(Chunk::Trailers(0)),
                        n => Body::Chunked(Chunk::Data(n)),
                    };
                }
                Body::Chunked(Chunk::DataEnd) => {
                    let (a, b) = ready!(self.poll_line(cx))?;
                    if a != b {
                        return Poll::Ready(Err(invalid("chunk data longer than its size")));
                    }
                    self.body = Body::Chunked(Chunk::Size);
                }
                Body::Chunked(Chunk::Trailers(seen)) => {
                    let (a, b) = ready!(self.poll_line(cx))?;
                    let seen = seen + b - a + 2;
                    if seen > self.max_head {
                        return Poll::Ready(Err(invalid("trailer section too long")));
                    }
                    self.body = if a == b { Body::Done } else { Body::Chunked(Chunk::Trailers(seen)) };
                }
            }
        }
    }

    /// The next CRLF-terminated line of a chunked body, as a range of the
    /// buffer (consumed).
    fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(usize, usize)>> {
        loop {
            if let Some(i) = self.buf[self.start..self.end].iter().position(|&b| b == b'\n') {
                let (a, nl) = (self.start, self.start + i);
                if nl == a || self.buf[nl - 1] != b'\r' {
                    return Poll::Ready(Err(invalid("chunked body lines must end with CRLF")));
                }
                self.start = nl + 1;
                return Poll::Ready(Ok((a, nl - 1)));
            }
            if self.end - self.start > MAX_LINE {
                return Poll::Ready(Err(invalid("chunk-size line too long")));
            }
            if ready!(self.poll_fill(cx, true))? == 0 {
                return Poll::Ready(Err(ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// What is left of the connection for an upgrade: the socket and the
    /// bytes that already arrived after the head.
    pub fn take_rest(&mut self) -> (Stream, Vec<u8>) {
        let rest = self.buf[self.start..self.end].to_vec();
        (self.start, self.end) = (0, 0);
        (self.stream.clone(), rest)
    }
}

/// `1f;ext=x` → 31. Hex digits only, at most 16, then optional extensions
/// (ignored, but held to the field-value characters, so none can end the line early).
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let ext_ok = rest.is_empty() || {
        let ws = rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        rest.get(ws) == Some(&b';') && is_field_value(rest)
    };
    if digits == 0 || digits > 16 || !ext_ok {
        return Err(invalid("malformed chunk size"));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| invalid("malformed chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| invalid("malformed chunk size"))
}

/// A request body, as the handler reads it.
pub struct BodyReader {
    input: Shared,
    generation: u64,
}

impl BodyReader {
    pub fn new(input: Shared, generation: u64) -> Self {
        BodyReader { input, generation }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut input = lock(&self.input);
        if input.generation != self.generation {
            return Poll::Ready(Ok(0));
        }
        input.poll_body(cx, out)
    }
}

/// Reads and drops what is left of the current body, up to `limit` bytes;
/// `false` when it could not (too much, broken, or the client went quiet):
/// the connection must then close.
pub async fn discard_body(input: &Shared, limit: usize) -> bool {
    lock(input).retire_readers();
    let mut scratch = vec![0u8; 8192];
    let mut total = 0;
    loop {
        let r = std::future::poll_fn(|cx| lock(input).poll_body(cx, &mut scratch)).await;
        match r {
            Ok(0) => return !lock(input).broken,
            Ok(n) if total + n <= limit => total += n,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1f").expect("valid"), 31);
        assert_eq!(chunk_size(b"0").expect("valid"), 0);
        assert_eq!(chunk_size(b"A;name=v").expect("valid"), 10);
        assert_eq!(chunk_size(b"a ;x").expect("valid"), 10);
        for bad in [&b""[..], b"+1", b" 1", b"1 x", b"g", b"11111111111111111", b"1;\x01"] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
    }
}
