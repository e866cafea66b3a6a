//! The direct path of delivery: the hub writes a message's pre-encoded
//! frame straight into the client's socket, from the thread that delivers
//! it, when the connection's writer has nothing queued or in flight.
//!
//! Why: delivering to a room of 10,000 through the writer tasks cost every
//! member a channel push, a task wake-up, a poll of the whole connection
//! task (whose reader then tried a `recvfrom` that found nothing),
//! tungstenite's encoding and copy of the same payload, and the `sendto`.
//! Only the `sendto` is needed: a frame encoded once per message and one
//! non-blocking send per member, split across threads by the hub.
//!
//! The rules that keep it invisible to the client:
//!
//! - **Order**: the hub counts the messages it queued for the writer
//!   ([`Wire::queued`]) until the writer has sent them ([`Wire::sent`]); the
//!   direct path only runs while that count is 0, so it never overtakes a
//!   queued message.
//! - **Frames whole, messages whole**: tungstenite's bytes pass through
//!   [`Gated`], which follows the frames they carry ([`OutScan`]). A direct
//!   write happens only between two messages (not inside a frame, nor
//!   between the fragments of one message), never after a close frame, and
//!   under the same lock as tungstenite's writes, so bytes never interleave.
//! - **Partial writes**: a socket that takes only part of a frame keeps the
//!   rest in [`Wire`]; it goes out before any other byte (every read and
//!   write through [`Gated`] sends it first), and the connection's task is
//!   woken to send it.
//! - **Budget**: a direct write needs nothing queued, so a client that
//!   keeps up gets it, as an empty queue always takes a message
//!   ([`super::outgoing::OutgoingBudget`]); a socket that takes nothing
//!   sends the message down the queue, where the budget applies as before.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::FrameHeader;
use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};
use futures_util::task::AtomicWaker;

use super::shared::{lock, ConnShared};
use crate::action::Message;

/// Largest message sent by the direct path (the writer's fragment size: a
/// longer message goes through the queue, in fragments).
pub const DIRECT_MAX: usize = 16 * 1024;

/// The socket as the hub may write to it, and what it must know to do so.
#[derive(Default)]
pub struct Wire {
    state: Mutex<WireState>,
    /// Messages queued for the writer and not yet sent by it.
    pending: AtomicUsize,
    /// The connection's task, woken to send [`Spare::rest`].
    task: AtomicWaker,
    /// Set (under the lock) with [`Spare::rest`], cleared by a read
    /// that finds none: reads look at it before taking the lock (a large
    /// message is read 128 bytes at a time, each read used to lock).
    maybe_rest: AtomicBool,
    /// Who reads the socket: the connection's reader ([`READING`]), the
    /// reader at a message boundary waiting for bytes ([`PARKED`]: a
    /// follower may take it), a follower ([`LENT`]; `ws::follow`), or
    /// nobody since a follower gave the socket back with bytes it took
    /// and did not run ([`UNREAD`], in [`Spare::unread`]: the reader reads
    /// them first).
    reader: AtomicU8,
}

/// See [`Wire::reader`].
const READING: u8 = 0;
const PARKED: u8 = 1;
const LENT: u8 = 2;
const UNREAD: u8 = 3;

/// What the connection's reader may do at a message boundary
/// ([`Wire::may_read`]).
#[derive(Debug, PartialEq, Eq)]
pub enum MayRead {
    /// Read the socket.
    Socket,
    /// Wait: a follower has the socket (it wakes the task when it gives it
    /// back).
    Wait,
    /// Read these bytes first, then the socket: a follower took them off
    /// the socket and gave them back (a frame it does not run, or the
    /// start of one).
    Unread(Vec<u8>),
}

#[derive(Default)]
struct WireState {
    /// The socket, from the upgrade until the connection ends (a clone:
    /// its descriptor cannot be reused while it is held).
    socket: Option<crate::runtime::TcpStream>,
    /// The frames tungstenite has written so far.
    scan: OutScan,
    /// What is rarely there (boxed: 8 bytes in every connection, not 56).
    spare: Option<Box<Spare>>,
}

/// The rare parts of [`WireState`].
#[derive(Default)]
struct Spare {
    /// The unsent end of a frame the direct path wrote in part.
    rest: Option<Bytes>,
    /// Bytes a follower took off the socket and gave back
    /// ([`Wire::give_back`]): the reader's, before the socket's.
    unread: Vec<u8>,
}

impl WireState {
    fn rest(&self) -> Option<&Bytes> {
        self.spare.as_ref()?.rest.as_ref()
    }

    fn set_rest(&mut self, rest: Option<Bytes>) {
        self.spare_mut().rest = rest;
        self.tidy();
    }

    fn spare_mut(&mut self) -> &mut Spare {
        self.spare.get_or_insert_with(Box::default)
    }

    /// Frees the box once it holds nothing.
    fn tidy(&mut self) {
        if self.spare.as_ref().is_some_and(|s| s.rest.is_none() && s.unread.is_empty()) {
            self.spare = None;
        }
    }
}

/// What a direct write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Direct {
    /// The whole frame is on its way (or the rest of it will be sent first).
    Sent,
    /// Not now (something queued, inside a message, no socket, the socket
    /// full): queue the message instead.
    Queue,
}

impl Wire {
    /// The connection is upgraded: the hub may write to `socket`.
    pub fn attach(&self, socket: crate::runtime::TcpStream) {
        lock(&self.state).socket = Some(socket);
    }

    /// The connection ended: the socket is no longer the hub's to write
    /// to, and it is shut down, so the client sees the end now: a follower
    /// still running the connection's last message holds a copy of it,
    /// which would keep the connection open until that script ends
    /// (`--timeout` at most).
    pub fn detach(&self) {
        if let Some(socket) = lock(&self.state).socket.take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// What the reader may read now, at a message boundary.
    pub fn may_read(&self) -> MayRead {
        match self.reader.compare_exchange(PARKED, READING, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) | Err(READING) => MayRead::Socket,
            Err(LENT) => MayRead::Wait,
            Err(_) => {
                // UNREAD: only the reader leaves it, so this cannot fail.
                self.reader.store(READING, Ordering::SeqCst);
                let mut st = lock(&self.state);
                let unread = st.spare.as_mut().map(|s| std::mem::take(&mut s.unread)).unwrap_or_default();
                st.tidy();
                MayRead::Unread(unread)
            }
        }
    }

    /// The reader found the socket empty at a message boundary: all it read
    /// was whole messages, and it holds no byte of the next.
    pub fn parked(&self) {
        let _ = self.reader.compare_exchange(READING, PARKED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Takes the socket from a parked reader, for a follower that reads
    /// whole messages from it until [`Wire::give_back`].
    pub fn lend(&self) -> Option<crate::runtime::TcpStream> {
        let st = lock(&self.state);
        let socket = st.socket.clone()?;
        self.reader.compare_exchange(PARKED, LENT, Ordering::SeqCst, Ordering::SeqCst).ok()?;
        Some(socket)
    }

    /// A follower holds the socket and bytes wait in it: the client sent
    /// something that nobody has read yet (the follower reads it once the
    /// event it runs is done). The writer's ping timeout must not take
    /// that for silence: on the reader, the pong would have been seen.
    pub fn lent_with_bytes(&self) -> bool {
        use std::os::fd::AsRawFd;
        if self.reader.load(Ordering::SeqCst) != LENT {
            return false;
        }
        let st = lock(&self.state);
        let Some(socket) = &st.socket else { return false };
        let mut waiting: libc::c_int = 0;
        // SAFETY: the socket is open while we hold it; FIONREAD writes one
        // int, which we own.
        let ok = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut waiting) } == 0;
        ok && waiting > 0
    }

    /// The follower is done: the reader reads again, from a message
    /// boundary, `unread` first: bytes the follower took off the socket
    /// and did not run (its task is woken: it may have been told to wait).
    pub fn give_back(&self, unread: Vec<u8>) {
        if unread.is_empty() {
            self.reader.store(PARKED, Ordering::SeqCst);
        } else {
            lock(&self.state).spare_mut().unread = unread;
            self.reader.store(UNREAD, Ordering::SeqCst);
        }
        self.task.wake();
    }

    /// A message goes to the writer's queue (the direct path waits for it).
    pub fn queued(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// A queued message was not queued after all.
    pub fn unqueued(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// The writer has sent a message it took from the queue.
    pub fn sent(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// Writes `frame` (one whole message, encoded by [`encode`]) to the
    /// socket if nothing is queued and tungstenite is between messages.
    pub fn write(&self, frame: &Bytes) -> Direct {
        if self.pending.load(Ordering::SeqCst) != 0 {
            return Direct::Queue;
        }
        let mut st = lock(&self.state);
        // Checked again under the lock that the writer's bytes also take.
        if self.pending.load(Ordering::SeqCst) != 0 || st.rest().is_some() || !st.scan.between_messages() {
            return Direct::Queue;
        }
        let Some(socket) = &st.socket else { return Direct::Queue };
        match send_now(socket, frame) {
            Ok(n) if n == frame.len() => Direct::Sent,
            Ok(0) | Err(_) => Direct::Queue,
            Ok(n) => {
                st.set_rest(Some(frame.slice(n..)));
                self.maybe_rest.store(true, Ordering::SeqCst);
                drop(st);
                self.task.wake();
                Direct::Sent
            }
        }
    }
}

/// One non-blocking `send` (the socket is non-blocking already; `MSG_NOSIGNAL`:
/// a closed peer is an error, not a signal).
fn send_now(socket: &crate::runtime::TcpStream, frame: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `socket` is open while we hold it; the pointer and length
    // describe `frame`, which outlives the call.
    let n = unsafe { libc::send(socket.as_raw_fd(), frame.as_ptr().cast(), frame.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The unmasked (server) frame of `msg`, header and payload in one buffer;
/// `None` over [`DIRECT_MAX`] (such a message is sent in fragments).
pub fn encode(msg: &Message) -> Option<Bytes> {
    let (data, payload): (Data, &[u8]) = match msg {
        Message::Text(t) => (Data::Text, t.as_bytes()),
        Message::Binary(b) => (Data::Binary, b),
    };
    if payload.len() > DIRECT_MAX {
        return None;
    }
    let header = FrameHeader { opcode: OpCode::Data(data), ..FrameHeader::default() };
    // The exact size (RFC 6455's 2, 4 or 10 header bytes): a `Vec` whose
    // length is its capacity becomes `Bytes` without a second allocation.
    let header_len = match payload.len() {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    let mut f = Vec::with_capacity(header_len + payload.len());
    // Writing into a Vec cannot fail.
    header.format(payload.len() as u64, &mut f).ok()?;
    f.extend_from_slice(payload);
    Some(Bytes::from(f))
}

/// Follows the frames in the bytes written to a client: where the current
/// one ends, whether a message is open (a data frame without FIN went
/// out), whether a close frame went out.
#[derive(Default)]
struct OutScan {
    /// Payload bytes of the current frame still to come.
    left: u64,
    /// Header bytes of the next frame gathered so far.
    head: [u8; 14],
    got: u8,
    /// Inside a fragmented message.
    open: bool,
    /// A close frame went out: no data may follow.
    closed: bool,
}

impl OutScan {
    fn between_messages(&self) -> bool {
        self.left == 0 && self.got == 0 && !self.open && !self.closed
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = self.left.min(bytes.len() as u64);
                self.left -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            self.head[self.got as usize] = bytes[0];
            self.got += 1;
            bytes = &bytes[1..];
            self.header_done();
        }
    }

    /// Parses the gathered header once it is complete (tungstenite's own
    /// header parser: the bytes are tungstenite's).
    fn header_done(&mut self) {
        let mut cursor = std::io::Cursor::new(&self.head[..self.got as usize]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return,
            // Not a frame tungstenite would write: no direct write ever again.
            Err(_) => {
                (self.closed, self.got) = (true, 0);
                return;
            }
        };
        match header.opcode {
            OpCode::Data(_) => self.open = !header.is_final,
            OpCode::Control(Control::Close) => self.closed = true,
            OpCode::Control(_) => {}
        }
        self.left = len;
        self.got = 0;
    }
}

/// The connection's stream as tungstenite sees it: its writes are followed
/// ([`OutScan`]) under the [`Wire`] lock, and the rest of a partial direct
/// write goes out before anything else.
pub struct Gated<S> {
    inner: S,
    shared: Arc<ConnShared>,
}

impl<S> Gated<S> {
    pub fn new(inner: S, shared: Arc<ConnShared>) -> Self {
        Gated { inner, shared }
    }
}

/// Sends the rest of a partial direct write through `inner`, if any:
/// `Ready` once none is left.
fn poll_rest<S: AsyncWrite + Unpin>(inner: &mut S, cx: &mut Context<'_>, st: &mut WireState) -> Poll<io::Result<()>> {
    while let Some(rest) = st.rest() {
        match std::task::ready!(Pin::new(&mut *inner).poll_write(cx, rest)) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) if n == rest.len() => st.set_rest(None),
            Ok(n) => {
                let left = rest.slice(n..);
                st.set_rest(Some(left));
            }
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Gated<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let Gated { inner, shared } = &mut *self;
        shared.wire.task.register(cx.waker());
        if shared.wire.maybe_rest.load(Ordering::SeqCst) {
            let mut st = lock(&shared.wire.state);
            if st.rest().is_some() {
                // An error shows again on the next write; a full socket
                // wakes this task when it has room.
                let _ = poll_rest(inner, cx, &mut st);
            }
            if st.rest().is_none() {
                shared.wire.maybe_rest.store(false, Ordering::SeqCst);
            }
        }
        Pin::new(inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gated<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let Gated { inner, shared } = &mut *self;
        let mut st = lock(&shared.wire.state);
        std::task::ready!(poll_rest(inner, cx, &mut st))?;
        let r = Pin::new(inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            st.scan.feed(&buf[..n]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Gated { inner, shared } = &mut *self;
        std::task::ready!(poll_rest(inner, cx, &mut lock(&shared.wire.state)))?;
        Pin::new(inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Gated { inner, shared } = &mut *self;
        std::task::ready!(poll_rest(inner, cx, &mut lock(&shared.wire.state)))?;
        Pin::new(inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests;
