//! Reads from a connection's socket in large chunks into a buffer that
//! exists only while it holds bytes, under tungstenite's small reads.
//!
//! tungstenite allocates its read buffer when the connection starts and reads
//! at most that many bytes per `read`: a large buffer is paid by every idle
//! connection (512 bytes: ~6 % of an idle connection), a small one costs a
//! system call per few bytes of a large message (512 bytes: 2,048 reads for
//! 1 MiB). So tungstenite's buffer is small ([`super::upgrade`]'s
//! `ws_config`), and this layer reads what the socket has in one go when a
//! read fills the caller's buffer (more is likely waiting): up to
//! [`CHUNK`] bytes, handed out over the next reads, and freed once they are.
//! A read that finds the socket empty frees it too, so a quiet connection
//! holds no buffer here, whatever it was sent before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// Most bytes read ahead in one system call.
pub const CHUNK: usize = 8 * 1024;

/// A socket read in [`CHUNK`]s when its reader asks for less.
pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read and not yet handed out: `buf[pos..]`; empty (no
    /// allocation) between bursts.
    buf: Vec<u8>,
    pos: usize,
    /// The last read filled its buffer: more is likely waiting.
    more: bool,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> Self {
        ReadAhead { inner, buf: Vec::new(), pos: 0, more: false }
    }

    /// Bytes held now, read and not yet handed out (tests).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Puts `bytes` back in front of what is buffered: the next reads hand
    /// them out first (bytes a follower took off the socket, `ws::follow`).
    pub fn put_back(&mut self, mut bytes: Vec<u8>) {
        bytes.extend_from_slice(&self.buf[self.pos..]);
        (self.buf, self.pos) = (bytes, 0);
    }

    /// Hands out buffered bytes; frees the buffer once they are all out.
    fn hand_out(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
        n
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pos < this.buf.len() {
            return Poll::Ready(Ok(this.hand_out(out)));
        }
        if !this.more || out.len() >= CHUNK {
            // The common case (a small message, or a large read): straight
            // into the caller's buffer, nothing allocated.
            let n = std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            this.more = n == out.len() && n > 0;
            return Poll::Ready(Ok(n));
        }
        this.buf = vec![0; CHUNK];
        match Pin::new(&mut this.inner).poll_read(cx, &mut this.buf) {
            Poll::Ready(Ok(n)) => {
                this.more = n == CHUNK;
                this.buf.truncate(n);
                Poll::Ready(Ok(if n == 0 { 0 } else { this.hand_out(out) }))
            }
            other => {
                // Nothing there (or an error): the buffer goes at once.
                this.buf = Vec::new();
                this.more = false;
                other
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
    use futures_lite::AsyncReadExt;

    /// A socket that has `data` and then nothing (pending, as a quiet peer),
    /// counting the reads that reached it.
    struct Quiet {
        data: Vec<u8>,
        reads: usize,
    }

    impl AsyncRead for Quiet {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
            self.reads += 1;
            if self.data.is_empty() {
                return Poll::Pending;
            }
            let n = out.len().min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    /// Reads `n` bytes in reads of `small` bytes, as tungstenite does.
    fn read_small(r: &mut ReadAhead<Quiet>, n: usize, small: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = vec![0; small];
        while got.len() < n {
            let k = crate::runtime::block_on(r.read(&mut chunk)).expect("read");
            got.extend_from_slice(&chunk[..k]);
        }
        got
    }

    #[test]
    fn a_large_message_takes_few_socket_reads_and_nothing_is_held_once_it_is_read() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut r = ReadAhead::new(Quiet { data: data.clone(), reads: 0 });
        assert_eq!(read_small(&mut r, data.len(), 128), data);
        // One small read, then CHUNKs: not one read per 128 bytes.
        assert!(r.inner.reads <= 2 + data.len() / CHUNK, "{} socket reads", r.inner.reads);
        assert_eq!(r.held(), 0, "the bytes were all handed out: no buffer left");
        // The socket is quiet now: a read finds nothing and keeps nothing.
        let mut chunk = [0; 128];
        let waker = std::task::Waker::noop();
        let pending = Pin::new(&mut r).poll_read(&mut Context::from_waker(waker), &mut chunk);
        assert!(pending.is_pending());
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_small_message_is_read_straight_into_the_callers_buffer() {
        let mut r = ReadAhead::new(Quiet { data: b"hello".to_vec(), reads: 0 });
        assert_eq!(read_small(&mut r, 5, 128), b"hello");
        assert_eq!((r.inner.reads, r.held()), (1, 0));
    }

    #[test]
    fn bytes_put_back_come_first_then_what_was_buffered_then_the_socket() {
        let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut r = ReadAhead::new(Quiet { data: data[1000..].to_vec(), reads: 0 });
        // A first small read fills its buffer: the next reads go through CHUNK.
        let mut got = read_small(&mut r, 200, 100);
        r.put_back(data[..1000].to_vec());
        got.extend(read_small(&mut r, data.len() - got.len(), 100));
        let want: Vec<u8> = [&data[1000..1200], &data[..1000], &data[1200..]].concat();
        assert_eq!(got, want);
        assert_eq!(r.held(), 0);
    }
}
