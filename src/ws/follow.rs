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
//! the socket over ([`crate::hub::socket::Wire::lend`]): it waits for bytes
//! with a blocking `ppoll` (at most [`LINGER`]), reads what the socket has
//! (one `recv`), and while a whole simple message is at the head of what it
//! read (one final, masked text or binary frame within `--max-message`,
//! valid UTF-8 for text) it runs its event there
//! ([`connection::dispatch_guarded`], the same path, log line and
//! metrics), the script on the same thread.
//!
//! Anything else is the reader's, as before: when the follower sees a
//! control frame (ping, pong, close), a fragment, a frame not yet whole,
//! the end of the stream, or when no `--max-procs` slot is free at once
//! (others wait: they go first), the budget would refuse the message, the
//! connection ended or the server shuts down, it gives the socket back
//! with the bytes it read and did not run
//! ([`crate::hub::socket::Wire::give_back`]), wakes the task, and the
//! reader reads those bytes first, then the socket, through the same frame
//! scan and budget. The connection's event worker waits for the follower
//! to end before it takes its next event, so events still run one at a
//! time and in order, the close event last. (The follower used to peek
//! (`MSG_PEEK`) and then discard the frame it ran (`MSG_TRUNC`): two
//! `recv`s per message where one does now; 32.2 → 31.3 system calls per
//! script at 16 connections.)
//!
//! While the follower runs an event, what the client sends next waits in
//! the socket, unread: a pong among it would not be seen, and the writer's
//! ping timeout would drop a client that answered (on the reader it would
//! not). So the follower counts the client as seen when it reads, and the
//! writer does not take a lent socket with bytes waiting for silence
//! ([`crate::hub::socket::Wire::lent_with_bytes`]); a client that sends
//! nothing is still dropped.
//!
//! Never a resumable session's connection: its reader counts every data
//! message it reads (`Session::read_one`), which a follower would skip.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

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
    // Never a session connection's frames: each must be counted by its
    // reader (`Session::read_one`: a resume tells the client how many were
    // read, and a data frame retires the token it resumed with), which the
    // follower does not do. Sessions never attach their socket to the wire
    // (`ws::session::attach`), so `lend` would refuse anyway; this says so
    // where it matters, whatever the wire does later.
    if shared.session.is_some() {
        return;
    }
    let (done, ended) = async_channel::bounded::<()>(1);
    let follower = Follower {
        app: app.clone(),
        conn: conn.clone(),
        transport: transport.clone(),
        shared: shared.clone(),
        budget: budget.clone(),
        socket: None,
        buf: Vec::new(),
        have: 0,
        _done: done,
    };
    if transport.follow(Box::new(move || follower.run())).is_ok() {
        // Ends when the follower is dropped, wherever it ends.
        let _ = ended.recv().await;
    }
}

/// A connection followed on a plain thread; dropped, it gives the socket
/// back to the reader, with the bytes it took and did not run, and ends
/// the session.
struct Follower {
    app: Arc<WsState>,
    conn: Arc<ConnInfo>,
    transport: Arc<dyn Transport>,
    shared: Arc<ConnShared>,
    budget: Arc<ConnBudget>,
    /// The socket once lent (a clone: its descriptor stays open while it
    /// is held).
    socket: Option<crate::runtime::TcpStream>,
    /// Bytes taken off the socket and not run yet: `buf[..have]`.
    buf: Vec<u8>,
    have: usize,
    _done: async_channel::Sender<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        if self.socket.is_some() {
            self.shared.wire.give_back(self.buf[..self.have].to_vec());
        }
    }
}

/// A whole frame seen at the head of the bytes taken.
struct Frame {
    header: usize,
    len: usize,
    binary: bool,
}

impl Frame {
    fn end(&self) -> usize {
        self.header + self.len
    }
}

impl Follower {
    fn run(mut self) {
        // Taken here, not by the task: a reader that read meanwhile keeps
        // the socket (it is no longer parked), and the follower ends.
        let Some(socket) = self.shared.wire.lend() else { return };
        let fd = socket.as_raw_fd();
        self.socket = Some(socket);
        self.buf = vec![0u8; MOST];
        loop {
            if !self.shared.events.is_empty() || drops_queue(&self.app, &self.shared) {
                return;
            }
            let Some(frame) = self.next_frame(fd) else { return };
            // Again: the connection may have ended (or its close event
            // been queued) while the follower waited.
            if !self.shared.events.is_empty() || drops_queue(&self.app, &self.shared) {
                return;
            }
            let Some(kind) = self.take(&frame) else { return };
            let Some(slot) = self.transport.slots().try_acquire() else { return };
            if !self.budget.fits(frame.end()) || self.budget.message_read(frame.len, true).is_err() {
                return;
            }
            self.buf.copy_within(frame.end()..self.have, 0);
            self.have -= frame.end();
            metrics::add(&metrics::get().messages_in, 1);
            metrics::add(&metrics::get().bytes_in, frame.len as u64);
            let run = dispatch_guarded(&self.app, &self.conn, &*self.transport, kind, Some(slot));
            // Pinned here, on this thread's stack: not a box per event.
            futures_lite::future::block_on(std::pin::pin!(run));
            self.budget.done(frame.len);
        }
    }

    /// The whole simple frame at the head of the bytes taken, reading the
    /// socket when none are (waiting up to [`LINGER`]); `None`: give the
    /// socket back.
    fn next_frame(&mut self, fd: std::os::fd::RawFd) -> Option<Frame> {
        if self.have == 0 {
            self.have = read_within(fd, &mut self.buf, LINGER)?;
            // The client sent something (a pong among it, maybe): as the
            // reader would, for the writer's ping timeout. Once per read,
            // not per frame run: every frame run came in a read.
            self.shared.seen();
        }
        // Not whole yet (or not simple): the reader's, with what was taken.
        whole_frame(&self.buf[..self.have], self.app.max_message)
    }

    /// The event of the frame at the head of the bytes taken, unmasked;
    /// `None` for text that is not UTF-8 (the reader closes with 1007).
    fn take(&self, f: &Frame) -> Option<EventKind> {
        let mask = &self.buf[f.header - 4..f.header];
        let payload: Vec<u8> = self.buf[f.header..f.end()].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        if !f.binary && std::str::from_utf8(&payload).is_err() {
            return None;
        }
        Some(EventKind::Message { payload: payload.into(), binary: f.binary })
    }
}

/// Reads what the socket `fd` has into `buf` once something is there,
/// waiting up to `linger`; `None`: nothing came, the end of the stream, or
/// an error (all the reader's to see).
fn read_within(fd: std::os::fd::RawFd, buf: &mut [u8], linger: Duration) -> Option<usize> {
    let mut fds = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
    let ts = libc::timespec { tv_sec: linger.as_secs() as libc::time_t, tv_nsec: linger.subsec_nanos() as _ };
    // SAFETY: one valid pollfd and timespec for the call. (Polled first:
    // after an event the next message is rarely there yet; a `recv` first
    // found nothing 97 % of the time at 16 connections.)
    if unsafe { libc::ppoll(fds.as_mut_ptr(), 1, &ts, std::ptr::null()) } <= 0 {
        return None;
    }
    // SAFETY: reads into `buf`, which we own, at most its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    // Nothing yet (a spurious wake-up), the end or an error: the reader's.
    (n > 0).then_some(n as usize)
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::session as session_of;
    use super::*;
    use crate::gateway::slots::Slots;
    use crate::gateway::{BoxFuture, Call, Follow, Limits, Outcome};
    use crate::hub::socket::MayRead;

    /// Records each event with the thread that ran it; follows on a thread
    /// of its own named `follower`.
    struct Threaded {
        seen: Mutex<Vec<(String, Option<String>)>>,
        limits: Limits,
        slots: Arc<Slots>,
    }

    impl Transport for Threaded {
        fn via(&self) -> &str {
            ""
        }
        fn limits(&self) -> &Limits {
            &self.limits
        }
        fn slots(&self) -> &Arc<Slots> {
            &self.slots
        }
        fn exchange<'a>(&'a self, event: &'a crate::event::Event, _: &'a mut Call<'_>) -> BoxFuture<'a, Outcome> {
            let thread = std::thread::current().name().map(str::to_owned);
            self.seen.lock().expect("lock").push((crate::ws::fake::name(&event.kind), thread));
            Box::pin(async { Outcome::Success })
        }
        fn follow(&self, job: Follow) -> Result<(), Follow> {
            std::thread::Builder::new().name("follower".into()).spawn(job).expect("thread");
            Ok(())
        }
    }

    /// A plain connection of an app whose transport is [`Threaded`], and a
    /// socket pair whose server end is on the connection's wire.
    struct Rig {
        t: Arc<Threaded>,
        transport: Arc<dyn Transport>,
        app: Arc<WsState>,
        c: crate::ws::fake::TestConn,
        client: std::net::TcpStream,
        server: crate::runtime::TcpStream,
    }

    impl Rig {
        fn new() -> Rig {
            let limits = Limits { timeout: Duration::from_secs(30), max_output: 4096 };
            let t = Arc::new(Threaded { seen: Mutex::default(), limits, slots: Slots::new(4) });
            let transport: Arc<dyn Transport> = t.clone();
            let app = crate::ws::state::for_tests(&[], transport.clone());
            let c = crate::ws::fake::test_conn(&app);
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
            let server = crate::runtime::TcpStream::from(listener.accept().expect("accept").0);
            c.shared.wire.attach(server.clone());
            Rig { t, transport, app, c, client, server }
        }
    }

    /// A client frame (masked), as a browser sends it.
    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// What is still unread on the server's end of the socket.
    fn unread(fd: std::os::fd::RawFd) -> Vec<u8> {
        let mut buf = [0u8; 256];
        // SAFETY: peeks into a buffer we own, at most its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        buf[..n.max(0) as usize].to_vec()
    }

    /// How many bytes wait on the server's end of the socket.
    fn waiting(fd: std::os::fd::RawFd) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, which we own.
        unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        n as usize
    }

    #[test]
    fn whole_simple_messages_run_on_the_follower_and_anything_else_stays_for_the_reader() {
        let Rig { t, transport, app, c, mut client, server } = Rig::new();
        let ping = masked(0x9, b"");
        let frames = [masked(0x1, b"one"), masked(0x2, b"two"), ping.clone(), masked(0x1, b"three")].concat();
        client.write_all(&frames).expect("write");
        let after_ping = frames.len() - ping.len() - masked(0x1, b"three").len();
        let session = || crate::runtime::block_on(session(&app, &c.conn, &transport, &c.shared, &c.budget));

        // Not parked (the reader is reading): the follower takes nothing.
        session();
        assert!(t.seen.lock().expect("lock").is_empty());
        c.shared.wire.parked();
        session();
        let follower = Some("follower".to_owned());
        let seen = t.seen.lock().expect("lock").clone();
        assert_eq!(seen, [("one".to_owned(), follower.clone()), ("two".to_owned(), follower)]);
        // The ping (and what follows it) is the reader's, and so is the
        // socket: what the follower read and did not run comes first.
        let MayRead::Unread(mut given) = c.shared.wire.may_read() else { panic!("nothing given back") };
        given.extend(unread(server.as_raw_fd()));
        assert_eq!(given, frames[after_ping..]);
        assert_eq!(c.shared.wire.may_read(), MayRead::Socket);
        assert_eq!(app.queue_budget.held(), 0, "the messages' bytes given back");
    }

    #[test]
    fn a_message_already_queued_goes_first() {
        let Rig { t, transport, app, c, mut client, server } = Rig::new();
        c.shared.wire.parked();
        client.write_all(&masked(0x1, b"later")).expect("write");
        c.tx.unbounded_send(EventKind::Message { payload: "first".into(), binary: false }).expect("queue");
        crate::runtime::block_on(session(&app, &c.conn, &transport, &c.shared, &c.budget));
        assert!(t.seen.lock().expect("lock").is_empty(), "the queued message runs first, on the task");
        assert_eq!(unread(server.as_raw_fd()), masked(0x1, b"later"));
        assert_eq!(c.shared.wire.may_read(), MayRead::Socket, "nothing read, nothing given back");
    }

    /// The start of a frame, and a text frame that is not UTF-8, are read
    /// by the follower and given back whole, in order, ahead of the socket.
    #[test]
    fn what_the_follower_read_and_did_not_run_goes_back_to_the_reader_in_order() {
        let Rig { t, transport, app, c, mut client, server } = Rig::new();
        let session = || crate::runtime::block_on(session(&app, &c.conn, &transport, &c.shared, &c.budget));
        for (what, bytes) in [("a frame cut short", masked(0x2, &[7; 100])), ("not UTF-8", masked(0x1, &[0xff]))] {
            let cut = bytes.len().min(10);
            client.write_all(&bytes[..cut]).expect("write");
            c.shared.wire.parked();
            session();
            client.write_all(&bytes[cut..]).expect("write");
            let mut got = match c.shared.wire.may_read() {
                MayRead::Unread(given) => given,
                other => panic!("{what}: {other:?}"),
            };
            // The rest, from the socket (peeked: it is on its way).
            let rest = bytes.len() - got.len();
            let until = std::time::Instant::now() + Duration::from_secs(10);
            let mut peeked = unread(server.as_raw_fd());
            while peeked.len() < rest && std::time::Instant::now() < until {
                std::thread::yield_now();
                peeked = unread(server.as_raw_fd());
            }
            got.extend(&peeked);
            assert_eq!(got, bytes, "{what}");
            assert!(t.seen.lock().expect("lock").is_empty(), "{what}: no event ran");
            // Read, as the reader would, before the next case.
            let mut sink = vec![0u8; peeked.len()];
            // SAFETY: reads into `sink`, which we own, at most its length.
            unsafe { libc::recv(server.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT) };
        }
    }

    /// Frames pipelined beyond what one `recv` takes ([`MOST`]): the
    /// follower runs the whole ones at the head of what it read, in order,
    /// and from the first it did not run every byte is the reader's,
    /// exactly once and in order (given back, then the socket's), read
    /// through the same scan and budget.
    #[test]
    fn frames_beyond_one_read_run_in_order_and_the_rest_is_read_once_through_the_budget() {
        use futures_lite::AsyncReadExt;
        let Rig { t, transport, app, c, mut client, server } = Rig::new();
        // 106-byte frames: 16 KiB ends inside one.
        let texts: Vec<String> = (0..400).map(|i| format!("{i:0>100}")).collect();
        let frames: Vec<Vec<u8>> = texts.iter().map(|m| masked(0x1, m.as_bytes())).collect();
        let all = frames.concat();
        client.write_all(&all).expect("write");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while waiting(server.as_raw_fd()) < all.len() && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
        assert_eq!(waiting(server.as_raw_fd()), all.len(), "all sent");
        c.shared.wire.parked();
        crate::runtime::block_on(session(&app, &c.conn, &transport, &c.shared, &c.budget));
        let seen = t.seen.lock().expect("lock").clone();
        let ran = MOST / frames[0].len();
        let want: Vec<_> = texts[..ran].iter().map(|m| (m.clone(), Some("follower".to_owned()))).collect();
        assert_eq!(seen, want, "the whole frames of one read, in order, on the follower");
        // The reader's turn, through the connection's own read path.
        let rest = frames[ran..].concat();
        let fd = server.as_raw_fd();
        let mut m =
            crate::ws::limits::Metered::new(server, c.budget.clone(), c.shared.clone(), Duration::from_secs(30));
        let mut got = vec![0u8; rest.len()];
        crate::runtime::block_on(m.read_exact(&mut got)).expect("read");
        assert!(got == rest, "the bytes not run, each once, in order");
        assert_eq!(waiting(fd), 0, "nothing left");
        assert_eq!(app.queue_budget.held(), rest.len(), "every byte the reader read counted, given back or not");
    }

    #[test]
    fn a_session_connections_frames_are_never_taken() {
        use crate::hub::session::{Limits as SessionLimits, Session, Token};
        let Rig { t, transport, app, c, mut client, server } = Rig::new();
        let (id, target) = (crate::id::ConnId::random(), c.conn.target.clone());
        let conn = Arc::new(ConnInfo { id, target, request: Default::default() });
        let session = Session::new(Token::random(), SessionLimits { messages: 10, bytes: 1000 });
        let (_outgoing, shared) = app.hub.register_session(conn.clone(), Some(session), Default::default());
        // As if the socket were on the wire and its reader parked: the
        // follower would take these frames from a plain connection.
        shared.wire.attach(server.clone());
        shared.wire.parked();
        client.write_all(&masked(0x1, b"one")).expect("write");
        crate::runtime::block_on(session_of(&app, &conn, &transport, &shared, &c.budget));
        assert!(t.seen.lock().expect("lock").is_empty(), "no event ran off the reader");
        assert_eq!(unread(server.as_raw_fd()), masked(0x1, b"one"), "the frame is the reader's");
        assert_eq!(shared.session.as_deref().map(|s| s.lock().received), Some(0));
    }

    #[test]
    fn only_a_whole_final_masked_data_frame_is_taken() {
        let text = masked(0x1, b"hi");
        let frame = whole_frame(&text, 100).expect("a whole text frame");
        assert_eq!((frame.header, frame.len, frame.binary), (6, 2, false));
        assert!(whole_frame(&text[..text.len() - 1], 100).is_none(), "not all there yet");
        assert!(whole_frame(&text, 1).is_none(), "over --max-message: the reader's 1009");
        let mut fragment = text.clone();
        fragment[0] &= 0x7f;
        assert!(whole_frame(&fragment, 100).is_none(), "a fragment");
        let mut unmasked = text.clone();
        unmasked[1] &= 0x7f;
        assert!(whole_frame(&unmasked, 100).is_none(), "unmasked: the reader's protocol error");
        assert!(whole_frame(&masked(0x8, b"\x03\xe8"), 100).is_none(), "a close frame");
        let mut rsv = text;
        rsv[0] |= 0x40;
        assert!(whole_frame(&rsv, 100).is_none(), "a reserved bit");
        let long = [&[0x82, 0xfe, 0x01, 0x00][..], &[0; 4], &[7; 256]].concat();
        let frame = whole_frame(&long, 1000).expect("a 16-bit length");
        assert_eq!((frame.header, frame.len, frame.binary), (8, 256, true));
    }
}
