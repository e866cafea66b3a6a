//! The state of a resumable session (issue 17; docs/PROTOCOL.md "Resumable
//! sessions"): what lets a connection outlive its socket.
//!
//! A session connection is a connection like any other in the hub (same
//! id, rooms, metadata, event worker); its [`Session`] (boxed in its
//! [`ConnShared`], so a plain connection pays one pointer) adds:
//!
//! - the **token** the client resumes with ([`Token`]: a lookup key and a
//!   128-bit secret compared in constant time), rotated on every resume.
//!   The token a client resumed with stays good until the client shows it
//!   read the `resumed` message that carried the new one ([`State::prev`]):
//!   a network that dies again right after a resume's `101` must not end
//!   the session;
//! - the **counts**: messages numbered by the writer (sent) and data
//!   messages read from the client (received);
//! - the **window** ([`Window`]): messages written and not yet known to be
//!   received, replayed after a resume. A pong to a ping that carried the
//!   sent count trims it (RFC 6455: the pong follows every frame before its
//!   ping), so does a resume's count;
//! - the **mailbox** through which a resume hands a new socket (or an
//!   export its request) to the connection's task, which alone touches the
//!   socket ([`Session::let_go`]).
//!
//! The sockets themselves are the WebSocket side's (`ws::session`): the
//! hub only keeps the state, finds a session by its token
//! ([`Sessions`]) and bounds what a detached session may hold
//! ([`Session::admit`], called by delivery).

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;

use super::outgoing::OutgoingBudget;
use super::shared::{CloseRequest, ConnShared, Ending};
use crate::action::{CloseCause, Message};
use crate::event::{ConnInfo, RequestFields, RequestInfo};
use crate::id::ConnId;

mod export;
mod hold;

pub use export::{export, export_begin, park, take_out, Request, Snapshot};
pub use hold::HOLD_WAIT;

/// The bounds of one session (`--resume-buffer`, `--resume-buffer-bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub messages: usize,
    pub bytes: usize,
}

/// A resume token: the id of the connection it resumes (whose first 8
/// characters name the instance that created it, in a cluster: a resume
/// reaching another instance asks that one, or the one its move went to),
/// an 8-byte key the session is found by, and a 16-byte secret compared in
/// constant time. On the wire: the id (32 lowercase hex characters), then
/// the 24 bytes of key and secret in base64url without padding (32
/// characters): 64 characters, valid in a subprotocol name.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    conn: ConnId,
    key: [u8; 8],
    secret: [u8; 16],
}

/// `true` for what [`ConnId::random`] makes: 32 lowercase hex characters.
fn is_wire_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Token {
    /// A fresh token for connection `conn`, from the operating system's
    /// random source. (An id that is not 32 hex characters, never one
    /// ws2http makes, is replaced by a random one: it names no instance.)
    pub fn issue(conn: &ConnId) -> Token {
        let mut b = [0u8; 24];
        // As for connection ids: without a random source there is no secret to hand out.
        getrandom::fill(&mut b).expect("the operating system's random source failed");
        let conn = if is_wire_id(conn.as_str()) { conn.clone() } else { ConnId::random() };
        Token::from_bytes(conn, &b)
    }

    /// A token for a random connection (unit tests).
    #[cfg(test)]
    pub fn random() -> Token {
        Token::issue(&ConnId::random())
    }

    fn from_bytes(conn: ConnId, b: &[u8; 24]) -> Token {
        let (mut key, mut secret) = ([0u8; 8], [0u8; 16]);
        key.copy_from_slice(&b[..8]);
        secret.copy_from_slice(&b[8..]);
        Token { conn, key, secret }
    }

    /// The token a client sent; `None` when it is not one (wrong length or alphabet).
    pub fn parse(s: &str) -> Option<Token> {
        if s.len() != 64 || !s.is_char_boundary(32) || !is_wire_id(&s[..32]) {
            return None;
        }
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&s[32..]).ok()?;
        Some(Token::from_bytes(ConnId::parse(&s[..32])?, &b.try_into().ok()?))
    }

    /// `true` when `other` is this token; the secrets are compared in
    /// constant time (the key only finds the session; the id is no secret).
    pub fn matches(&self, other: &Token) -> bool {
        let diff = self.secret.iter().zip(other.secret.iter()).fold(0u8, |d, (a, b)| d | (a ^ b));
        // black_box: the compiler may not turn the fold into an early exit.
        self.key == other.key && self.conn == other.conn && std::hint::black_box(diff) == 0
    }

    pub fn key(&self) -> [u8; 8] {
        self.key
    }

    /// The connection this token claims to resume (not checked: only
    /// [`Token::matches`] against the session's own token proves it).
    pub fn conn(&self) -> &ConnId {
        &self.conn
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.key);
        b[8..].copy_from_slice(&self.secret);
        f.write_str(self.conn.as_str())?;
        f.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
    }
}

/// Never printed: a token in a log line would let its reader resume the session.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The messages of a session written to its client and not yet known to
/// be received, numbered from 1 in the order they were written.
#[derive(Default, Debug)]
pub struct Window {
    /// Messages numbered up to `floor` are acknowledged (or were dropped to
    /// keep the bound while attached: a resume from before them is a gap).
    floor: u64,
    msgs: VecDeque<Message>,
    bytes: usize,
}

/// What a resume's count asks of a window.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Fine: these messages follow, in order.
    From(Vec<Message>),
    /// The client says it received more than was ever sent.
    Bad,
    /// The client missed messages the window no longer holds.
    Gap,
}

impl Window {
    /// A window whose next message is numbered `floor + 1 + msgs.len()`.
    pub fn from_parts(floor: u64, msgs: Vec<Message>) -> Window {
        let bytes = msgs.iter().map(Message::len).sum();
        Window { floor, msgs: msgs.into(), bytes }
    }

    /// Messages numbered so far.
    pub fn sent(&self) -> u64 {
        self.floor + self.msgs.len() as u64
    }

    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Numbers `msg` (the writer is about to write it) and keeps it; drops
    /// the oldest beyond `limits` (the client is attached and reading).
    pub fn push(&mut self, msg: Message, limits: Limits) -> u64 {
        self.bytes += msg.len();
        self.msgs.push_back(msg);
        while self.msgs.len() > limits.messages || (self.bytes > limits.bytes && self.msgs.len() > 1) {
            self.pop();
        }
        self.sent()
    }

    fn pop(&mut self) {
        if let Some(m) = self.msgs.pop_front() {
            self.bytes -= m.len();
            self.floor += 1;
        }
    }

    /// The client has received every message up to number `n`.
    pub fn ack(&mut self, n: u64) {
        while self.floor < n.min(self.sent()) {
            self.pop();
        }
        if self.msgs.is_empty() && self.msgs.capacity() > 4 {
            self.msgs = VecDeque::new();
        }
    }

    /// A resume from a client that received `received` messages: what it
    /// missed (acknowledging the rest), or why it cannot resume.
    pub fn replay(&mut self, received: u64) -> Replay {
        if received > self.sent() {
            return Replay::Bad;
        }
        if received < self.floor {
            return Replay::Gap;
        }
        self.ack(received);
        Replay::From(self.msgs.iter().cloned().collect())
    }

    /// The acknowledged count and the messages after it (a [`Snapshot`]).
    pub fn parts(&self) -> (u64, Vec<Message>) {
        (self.floor, self.msgs.iter().cloned().collect())
    }
}

/// The outgoing byte budget, and the bytes of the delivery's own encoded
/// frame (counted in it while the delivery runs, dropped once it is done).
pub type Total<'a> = (&'a OutgoingBudget, usize);

/// Messages kept between two pings that ask for an acknowledgement.
pub const ACK_EVERY: usize = 32;

/// A connection's sorted rooms, and its metadata sorted by key.
pub type RoomsAndMeta = (Vec<String>, Vec<(String, String)>);

/// The mutable part of a session, behind its lock.
pub struct State {
    pub token: Token,
    /// The token the client last resumed with: still accepted while
    /// `prev_live`, i.e. until the client shows it has `token` (its first
    /// data frame or a pong on the new socket, both after `resumed`; or a
    /// resume with `token`). Kept after that only to forget its key.
    pub prev: Option<Token>,
    pub prev_live: bool,
    pub window: Window,
    /// Data messages read from the client on this session.
    pub received: u64,
    /// Resumes so far.
    pub resumes: u32,
    /// A socket serves the session now.
    pub attached: bool,
    /// A resume handed the session its socket and the connection's task has
    /// not attached or refused it yet (a move out is refused meanwhile).
    pub resuming: bool,
    /// This instance agreed to hand the session to another one (cluster):
    /// a resume here is refused (4410) until the move is over or failed.
    pub moving: bool,
    /// The session has ended (its close event is queued): no resume is handed to it.
    pub ended: bool,
    /// What a resume hands the connection's task: the WebSocket side's
    /// (a new socket); the hub only passes it on.
    pub incoming: Option<Box<dyn Any + Send>>,
    /// An export asked for: where the snapshot goes.
    pub export: Option<async_channel::Sender<Snapshot>>,
    /// An exported session's rooms and metadata, as they were when it was
    /// taken out of delivery ([`export_begin`]): what its snapshot carries.
    pub taken: Option<RoomsAndMeta>,
    /// What the writer sends first on the next socket: the session message
    /// (`session` or `resumed`), then the messages it replays.
    pub prelude: Option<(String, Vec<Message>)>,
    /// B: its events wait for its previous instance's ([`hold`]).
    held: Option<hold::Held>,
    /// A: whether its event worker has run what it had queued ([`hold`]).
    ran: hold::Ran,
}

impl State {
    /// `true` when `token` resumes this session: its current token, or the
    /// one it last resumed with while the client has not shown it has the
    /// current one (the `resumed` message may have been lost).
    pub fn accepts(&self, token: &Token) -> bool {
        let prev = self.prev_live && self.prev.as_ref().is_some_and(|p| p.matches(token));
        !self.ended && (self.token.matches(token) || prev)
    }

    /// Rotates the token at a resume made with `used` (one that
    /// [`State::accepts`]): the new token is registered in `sessions`,
    /// `used` stays good until the client shows it has the new one, and
    /// any other token of the session dies.
    pub fn rotate(&mut self, sessions: &Sessions, used: &Token) -> Token {
        let new = Token::issue(&self.token.conn);
        sessions.alias(self.token.key(), new.key());
        for old in [Some(&self.token), self.prev.as_ref()].into_iter().flatten() {
            if old.key() != used.key() {
                sessions.forget(old.key());
            }
        }
        self.prev = Some(used.clone());
        self.prev_live = true;
        self.token = new.clone();
        new
    }

    /// The keys the session is registered under (to forget them at its end).
    pub fn keys(&self) -> impl Iterator<Item = [u8; 8]> + '_ {
        std::iter::once(self.token.key()).chain(self.prev.as_ref().map(Token::key))
    }
}

/// A resumable session's state, in its connection's [`ConnShared`].
pub struct Session {
    state: Mutex<State>,
    /// Set when the connection's task must let go of its socket (without a
    /// close frame, without an event): a resume took over, or an export.
    let_go: AtomicBool,
    /// Set when the session is exported ([`export_begin`]): from then on
    /// nothing is delivered to it here, and it is not listed, found or
    /// counted here (it lives on elsewhere), while its connection's event
    /// worker still runs the message events it had queued.
    departed: AtomicBool,
    /// Its instance shuts down and hands it to another one: when the task
    /// lets go of its socket, it tells the client so (`1012`, resume elsewhere).
    restarting: AtomicBool,
    /// Its events are held ([`Session::hold`]): read before every event.
    holding: AtomicBool,
    pub limits: Limits,
}

impl Session {
    pub fn new(token: Token, limits: Limits) -> Box<Session> {
        let state = State {
            token,
            prev: None,
            prev_live: false,
            window: Window::default(),
            received: 0,
            resumes: 0,
            attached: false,
            resuming: false,
            moving: false,
            ended: false,
            incoming: None,
            export: None,
            taken: None,
            prelude: None,
            held: None,
            ran: hold::Ran::default(),
        };
        let (let_go, departed, restarting) = (AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false));
        let holding = AtomicBool::new(false);
        Box::new(Session { state: Mutex::new(state), let_go, departed, restarting, holding, limits })
    }

    /// A session brought in from a [`Snapshot`] (detached). The token
    /// its client last resumed with, if still good there, is good here too:
    /// this instance accepts what the other one accepted.
    pub fn restored(snap: &Snapshot, limits: Limits) -> Option<Box<Session>> {
        let s = Session::new(Token::parse(&snap.token)?, limits);
        {
            let mut st = s.lock();
            st.prev = snap.prev.as_deref().and_then(Token::parse);
            st.prev_live = st.prev.is_some();
            st.window = Window::from_parts(snap.floor, snap.window.clone());
            (st.received, st.resumes) = (snap.received, snap.resumes);
        }
        if snap.events_pending {
            s.hold();
        }
        Some(s)
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // Every change leaves the state whole: keep serving after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `true` while the connection's task must let go of its socket.
    pub fn must_let_go(&self) -> bool {
        self.let_go.load(Ordering::SeqCst)
    }

    /// Its instance shuts down and hands it over (`hub::cluster::drain`).
    pub fn restart(&self) {
        self.restarting.store(true, Ordering::SeqCst);
    }

    /// Its hand-over at shutdown did not start after all (see [`Session::restart`]).
    pub fn restart_cancelled(&self) {
        self.restarting.store(false, Ordering::SeqCst);
    }

    /// `true` when the socket it lets go of gets `1012` (see [`Session::restart`]).
    pub fn is_restarting(&self) -> bool {
        self.restarting.load(Ordering::SeqCst) && self.must_let_go()
    }

    /// Asks the connection's task to let go of its socket (see [`Session::let_go`]).
    pub fn let_go(&self, go: bool) {
        self.let_go.store(go, Ordering::SeqCst);
    }

    /// Another instance asks for this session with `token` (cluster: its
    /// client resumed there): `Ok` marks it moving (a resume here is then
    /// refused), the refusal's reason otherwise. Of two resumes of one
    /// session at once on two instances, the one that reached the session
    /// first wins and the other gets 4410: a move is refused while a resume
    /// here is being attached, and when `token` is only the one that a
    /// socket attached here resumed with (that client holds the newer
    /// token; it may not have shown it yet). A move of an attached session
    /// with its current token goes ahead (the client changed networks: its
    /// old socket is dropped, as a resume here would drop it).
    pub fn begin_move(&self, token: &Token) -> Result<(), &'static str> {
        let mut st = self.lock();
        if !st.accepts(token) {
            return Err("no such session");
        }
        if st.moving || st.export.is_some() {
            return Err("already moving");
        }
        if st.resuming || st.incoming.is_some() {
            return Err("a resume on this instance is under way");
        }
        if st.attached && !st.token.matches(token) {
            return Err("a resume on this instance holds it with a newer token");
        }
        st.moving = true;
        Ok(())
    }

    /// The move agreed to by [`Session::begin_move`] did not happen: resumes here are served again.
    pub fn end_move(&self) {
        self.lock().moving = false;
    }

    /// `true` once the session was exported ([`export_begin`]): it is not
    /// here any more, whatever its event worker still runs.
    pub fn departed(&self) -> bool {
        self.departed.load(Ordering::SeqCst)
    }

    /// The writer takes `msg` to write it: numbered and kept. `true` when
    /// the writer should ask for an acknowledgement now (every
    /// [`ACK_EVERY`] messages kept), so that the window of a session with
    /// traffic does not wait for the next timed ping to shrink. While all
    /// clients together hold more than `--max-outgoing-bytes-total`, the
    /// window drops its oldest (down to this message) until they do not.
    pub fn number(&self, msg: &Message, budget: &OutgoingBudget) -> bool {
        let mut st = self.lock();
        st.window.push(msg.clone(), self.limits);
        while st.window.len() > 1 && budget.over_total(0).is_some() {
            st.window.pop();
        }
        st.window.len().is_multiple_of(ACK_EVERY)
    }

    /// A data message was read from the client. A client sends nothing on
    /// a resumed socket before it has read `resumed` (docs/PROTOCOL.md), so
    /// it has the new token: the one it resumed with dies.
    pub fn read_one(&self) {
        let mut st = self.lock();
        st.received += 1;
        st.prev_live = false;
    }

    /// The payload of the next ping: the sent count, in decimal.
    pub fn ping_payload(&self) -> bytes::Bytes {
        bytes::Bytes::from(self.lock().window.sent().to_string())
    }

    /// A pong: what its payload says the client has received.
    pub fn pong(&self, payload: &[u8]) {
        let n = std::str::from_utf8(payload).ok().and_then(|s| s.parse::<u64>().ok());
        if let Some(n) = n {
            let mut st = self.lock();
            st.window.ack(n);
            // Every ping on a socket follows its `resumed` message (the
            // writer sends that first): the client has the new token.
            st.prev_live = false;
        }
    }

    /// Whether a detached session may take one more message of `len`
    /// bytes, with `queued` messages (`queued_bytes` bytes) waiting for
    /// its writer, within its own bounds and `--max-outgoing-bytes-total`
    /// (`Ok(true)`: it may, and it is detached); an attached one always may
    /// (`Ok(false)`: the writer keeps its window within the bounds).
    pub fn admit(&self, queued: usize, queued_bytes: usize, len: usize, total: Total) -> Result<bool, String> {
        let st = self.lock();
        if st.attached {
            return Ok(false);
        }
        let (count, bytes) = (st.window.len() + queued + 1, st.window.bytes() + queued_bytes + len);
        if count > self.limits.messages {
            return Err(format!("{count} messages kept for it while detached, over --resume-buffer"));
        }
        if bytes > self.limits.bytes {
            return Err(format!("{bytes} bytes kept for it while detached, over --resume-buffer-bytes"));
        }
        // All sessions together (and every client's queue): the message is
        // already counted in what is held.
        if let Some((held, cap)) = total.0.over_total(total.1) {
            return Err(format!("{held} bytes held for all clients, over --max-outgoing-bytes-total {cap}"));
        }
        Ok(true)
    }
}

/// Ends a detached session that was sent more than it may keep (cause
/// `resume-overflow`, one log line); a later resume is refused. Returns
/// the deliveries made (none).
pub fn overflow(shared: &ConnShared, id: &ConnId, why: String) -> usize {
    let req = CloseRequest { code: 1006, reason: String::new(), cause: CloseCause::ResumeOverflow };
    if shared.request_close(req, Ending::Abort, None) {
        log::warn!("[{id}] session: {why}; ending it (resume-overflow)");
    }
    0
}

/// Every session of this instance by its token's key: how a resume finds
/// its connection.
#[derive(Default)]
pub struct Sessions {
    by_key: Mutex<HashMap<[u8; 8], Entry>>,
}

/// A session's connection, as [`Sessions`] finds it.
type Entry = (Arc<ConnInfo>, Arc<ConnShared>);

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<[u8; 8], Entry>> {
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session under `key`.
    pub fn insert(&self, key: [u8; 8], info: Arc<ConnInfo>, shared: Arc<ConnShared>) {
        self.map().insert(key, (info, shared));
    }

    /// The session `token` belongs to, if it is live here and the token is
    /// its current one.
    pub fn find(&self, token: &Token) -> Option<(Arc<ConnInfo>, Arc<ConnShared>)> {
        let (info, shared) = self.map().get(&token.key())?.clone();
        let ok = shared.session.as_deref().is_some_and(|s| s.lock().accepts(token));
        ok.then_some((info, shared))
    }

    /// The session under `key` is found under `new` too (its token rotated).
    pub fn alias(&self, key: [u8; 8], new: [u8; 8]) {
        let mut map = self.map();
        if let Some(entry) = map.get(&key).cloned() {
            map.insert(new, entry);
        }
    }

    /// The session under `key` is gone.
    pub fn forget(&self, key: [u8; 8]) {
        self.map().remove(&key);
    }

    /// Sessions registered now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Message {
        Message::text(s.to_owned())
    }

    const WIDE: Limits = Limits { messages: 100, bytes: 1 << 20 };

    /// An outgoing budget of its own (not the server's gauge), `cap` bytes in total.
    fn budget(cap: usize) -> OutgoingBudget {
        OutgoingBudget::new(cap, cap, Box::leak(Box::new(std::sync::atomic::AtomicUsize::new(0))))
    }

    fn wide() -> OutgoingBudget {
        budget(1 << 30)
    }

    #[test]
    fn a_token_round_trips_and_only_its_own_secret_matches() {
        let id = ConnId::random_in("0a1b2c3d");
        let t = Token::issue(&id);
        let text = t.to_string();
        assert_eq!(text.len(), 64);
        assert!(text.starts_with(id.as_str()), "it names its connection, so its instance: {text}");
        assert!(text.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{text}");
        let back = Token::parse(&text).expect("parses");
        assert!(back.matches(&t));
        let mut forged = back.clone();
        forged.secret[15] ^= 1;
        assert!(!forged.matches(&t), "one bit of the secret off");
        assert!(!Token::random().matches(&t));
        let mut other_conn = back.clone();
        other_conn.conn = ConnId::random();
        assert!(!other_conn.matches(&t), "the same secret for another connection");
        let upper = text.to_uppercase();
        for bad in
            ["", "abc", &text[1..], &format!("{}=", &text[1..]), &format!("{}.", &text[1..]), &text[32..], &upper]
        {
            assert!(Token::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(format!("{t:?}"), "Token(..)", "never printed");
    }

    #[test]
    fn the_window_numbers_acks_and_replays_what_the_client_missed() {
        let mut w = Window::default();
        for s in ["a", "b", "c", "d"] {
            w.push(m(s), WIDE);
        }
        assert_eq!(w.sent(), 4);
        w.ack(1);
        assert_eq!((w.len(), w.bytes()), (3, 3));
        assert_eq!(w.replay(5), Replay::Bad, "more than was sent");
        assert_eq!(w.replay(0), Replay::Gap, "1 is acknowledged, no longer kept");
        assert_eq!(w.replay(2), Replay::From(vec![m("c"), m("d")]));
        assert_eq!(w.replay(2), Replay::From(vec![m("c"), m("d")]), "a replay keeps them until acknowledged");
        w.ack(99);
        assert_eq!((w.sent(), w.len()), (4, 0), "an ack beyond what was sent stops at it");
        assert_eq!(w.replay(4), Replay::From(vec![]));
    }

    #[test]
    fn an_attached_window_drops_its_oldest_beyond_the_bounds() {
        let mut w = Window::default();
        let small = Limits { messages: 2, bytes: 10 };
        for s in ["a", "b", "c"] {
            w.push(m(s), small);
        }
        assert_eq!((w.sent(), w.len()), (3, 2));
        assert_eq!(w.replay(0), Replay::Gap);
        assert_eq!(w.replay(1), Replay::From(vec![m("b"), m("c")]));
        w.push(m("0123456789"), small);
        assert_eq!(w.parts(), (3, vec![m("0123456789")]), "bytes bound; one message always kept");
    }

    #[test]
    fn a_detached_session_admits_within_its_bounds_only() {
        let s = Session::new(Token::random(), Limits { messages: 3, bytes: 10 });
        s.number(&m("ab"), &wide());
        assert_eq!(s.admit(1, 2, 2, (&wide(), 0)), Ok(true));
        assert!(s.admit(2, 2, 2, (&wide(), 0)).expect_err("4 messages").contains("--resume-buffer"));
        assert!(s.admit(0, 0, 9, (&wide(), 0)).expect_err("11 bytes").contains("--resume-buffer-bytes"));
        s.lock().attached = true;
        assert_eq!(s.admit(100, 100, 100, (&wide(), 0)), Ok(false), "attached: the writer bounds its window");
    }

    #[test]
    fn every_session_together_counts_in_the_outgoing_total() {
        let total = budget(10);
        let s = Session::new(Token::random(), WIDE);
        // Attached: the window drops its oldest while the total is exceeded.
        let kept: Vec<Message> = ["aaa", "bbb", "ccc"].iter().map(|x| total.count(m(x))).collect();
        for msg in &kept {
            s.number(msg, &total);
        }
        drop(kept);
        assert_eq!((total.held(), s.lock().window.len()), (9, 3), "the window holds them: within 10");
        s.number(&total.count(m("ddd")), &total);
        assert_eq!(total.held(), 9, "12 bytes: its oldest dropped");
        assert_eq!(s.lock().window.parts(), (1, vec![m("bbb"), m("ccc"), m("ddd")]));
        let big = total.count(m("0123456789x"));
        s.number(&big, &total);
        assert_eq!(s.lock().window.parts().0, 4, "down to the message itself, never past it");
        drop(big);
        s.lock().window.ack(5);
        assert_eq!(total.held(), 0);
        // Detached: over the total, the session must end (resume-overflow).
        let other = total.count(m("0123456789x"));
        assert!(s.admit(0, 0, 4, (&total, 0)).expect_err("11 > 10").contains("--max-outgoing-bytes-total 10"));
        assert_eq!(s.admit(0, 0, 4, (&total, 11)), Ok(true), "were they the delivery's own frame: within");
        drop(other);
        assert_eq!(s.admit(0, 0, 4, (&total, 0)), Ok(true));
    }

    #[test]
    fn the_writer_asks_for_an_ack_every_few_messages_kept() {
        let s = Session::new(Token::random(), WIDE);
        let asks: Vec<bool> = (0..2 * ACK_EVERY).map(|i| s.number(&m(&i.to_string()), &wide())).collect();
        assert_eq!(asks.iter().filter(|a| **a).count(), 2);
        assert!(asks[ACK_EVERY - 1] && asks[2 * ACK_EVERY - 1]);
        s.pong(ACK_EVERY.to_string().as_bytes());
        assert_eq!(s.lock().window.len(), ACK_EVERY, "the pong trimmed what it acknowledged");
    }

    #[test]
    fn pongs_carry_the_count_acknowledged() {
        let s = Session::new(Token::random(), WIDE);
        for x in ["a", "b", "c"] {
            s.number(&m(x), &wide());
        }
        assert_eq!(&s.ping_payload()[..], b"3");
        s.pong(b"2");
        s.pong(b"not a number");
        s.pong(b"");
        assert_eq!(s.lock().window.parts(), (2, vec![m("c")]));
    }

    #[test]
    fn the_token_resumed_with_stays_good_until_the_client_shows_it_has_the_new_one() {
        let sessions = Sessions::default();
        let t0 = Token::random();
        let s = Session::new(t0.clone(), WIDE);
        let st = |s: &Session, t: &Token| s.lock().accepts(t);
        let t1 = s.lock().rotate(&sessions, &t0);
        assert!(st(&s, &t0) && st(&s, &t1), "the answer may be lost: t0 still resumes");
        // Lost: the client resumes with t0 again; t1 (never seen by it) dies.
        let t2 = s.lock().rotate(&sessions, &t0);
        assert!(st(&s, &t0) && st(&s, &t2) && !st(&s, &t1));
        s.pong(b"0");
        assert!(!st(&s, &t0) && st(&s, &t2), "a pong on the new socket: t0 dies");
        let t3 = s.lock().rotate(&sessions, &t2);
        s.read_one();
        assert!(!st(&s, &t2) && st(&s, &t3), "a data frame on the new socket: t2 dies");
        let t4 = s.lock().rotate(&sessions, &t3);
        let t5 = s.lock().rotate(&sessions, &t4);
        assert!(!st(&s, &t3) && st(&s, &t4) && st(&s, &t5), "a resume with the new token: the older dies");
        assert_eq!(s.lock().keys().collect::<Vec<_>>(), [t5.key(), t4.key()]);
        s.lock().ended = true;
        assert!(!st(&s, &t4) && !st(&s, &t5), "an ended session takes no resume");
    }

    #[test]
    fn a_move_out_is_refused_to_a_resume_that_came_second() {
        let sessions = Sessions::default();
        let t0 = Token::random();
        let s = Session::new(t0.clone(), WIDE);
        s.lock().incoming = Some(Box::new(()));
        assert_eq!(s.begin_move(&t0), Err("a resume on this instance is under way"));
        s.lock().incoming = None;
        s.lock().resuming = true;
        assert!(s.begin_move(&t0).is_err(), "being attached");
        // Attached here with t0: the client holds t1 (maybe without having shown it).
        let t1 = s.lock().rotate(&sessions, &t0);
        (s.lock().resuming, s.lock().attached) = (false, true);
        assert_eq!(s.begin_move(&t0), Err("a resume on this instance holds it with a newer token"));
        assert_eq!(s.begin_move(&Token::random()), Err("no such session"));
        // With its current token: the client changed networks; it moves.
        assert_eq!(s.begin_move(&t1), Ok(()));
        assert!(s.lock().moving);
        assert_eq!(s.begin_move(&t1), Err("already moving"));
        s.end_move();
        // Detached, the token it resumed with still good: its `resumed` may have been lost.
        s.lock().attached = false;
        assert_eq!(s.begin_move(&t0), Ok(()));
    }

    #[test]
    fn a_snapshot_over_the_bounds_drops_its_messages_and_says_why() {
        let mut snap = Snapshot {
            floor: 2,
            window: vec![m("ab"), m("cd")],
            queued: vec![m("ef")],
            ..Snapshot::bare(Request::default(), &Token::random())
        };
        let fits = snap.clone();
        assert_eq!(snap.take_overflow(Limits { messages: 3, bytes: 6 }), None);
        assert_eq!(snap, fits, "within: untouched");
        let why = snap.take_overflow(Limits { messages: 3, bytes: 5 }).expect("6 bytes");
        assert!(why.contains("--resume-buffer-bytes"), "{why}");
        assert_eq!((snap.floor, snap.window.len(), snap.queued.len()), (4, 0, 0));
        let mut two = fits.clone();
        assert!(two.take_overflow(Limits { messages: 2, bytes: 100 }).expect("3 messages").contains("--resume-buffer"));
        let mut flagged = fits;
        flagged.overflow = true;
        assert!(flagged.take_overflow(WIDE).is_some(), "more came during its move");
    }

    #[test]
    fn an_exported_session_leaves_delivery_at_once_and_its_snapshot_comes_when_parked() {
        use crate::action::Action;
        use crate::hub::local::{Carried, Hub};
        let hub = Hub::new(16, wide());
        let target = crate::event::Target {
            filename: "/cgi-bin/chat.sh".into(),
            script_name: "/chat.sh".into(),
            path_info: String::new(),
            interpreter: None,
        };
        let request = RequestInfo::new(RequestFields { uri: "/chat.sh", ..Default::default() }, []);
        let id = ConnId::random();
        let info = Arc::new(ConnInfo { id: id.clone(), target, request });
        let token = Token::random();
        let carried = Carried { rooms: vec!["r".into()], meta: vec![("k".into(), "v".into())], queued: vec![] };
        let (outgoing, shared) = hub.register_session(info.clone(), Some(Session::new(token.clone(), WIDE)), carried);
        let room = |t: &str| Action::Room { room: "r".into(), msg: m(t), except: None };
        assert_eq!(hub.apply(room("before")).reached(), 1);
        let rx = export_begin(&hub, &id).expect("exported");
        assert!(export_begin(&hub, &id).is_none(), "once");
        // Out of delivery at once: not found, listed or counted here; no
        // message reaches it; its token resumes nothing here.
        assert_eq!(hub.apply(room("after")).reached(), 0);
        assert_eq!(hub.apply(Action::Send { to: id.clone(), msg: m("after") }).reached(), 0);
        assert!(!hub.is_known(&id) && hub.get(&id).is_none() && hub.list(None, None).is_empty());
        assert!(hub.rooms().is_empty() && hub.sessions.find(&token).is_none());
        // Its events still see its rooms and metadata.
        assert_eq!(hub.snapshot(&id), (vec!["r".into()], vec![("k".into(), "v".into())]));
        assert!(rx.try_recv().is_err(), "not before its socket is let go");
        park(&info, &shared, outgoing);
        let snap = rx.try_recv().expect("the snapshot");
        assert_eq!(
            (snap.rooms, snap.meta, snap.queued),
            (vec!["r".into()], vec![("k".into(), "v".into())], vec![m("before")])
        );
        // The same session back under the same id: the old one's end leaves it be.
        let (_, back) =
            hub.register_session(info.clone(), Some(Session::new(Token::random(), WIDE)), Carried::default());
        take_out(&hub, &info, &shared);
        assert!(hub.is_known(&id), "another connection");
        take_out(&hub, &info, &back);
        assert!(!hub.is_known(&id));
    }

    #[test]
    fn a_snapshot_restores_the_counts_and_the_window() {
        let info = RequestInfo::new(
            RequestFields { method: "GET", uri: "/chat.sh?x=1", query: "x=1", ..Default::default() },
            [("Origin", "http://a")],
        );
        let token = Token::random();
        let snap = Snapshot {
            rooms: vec!["r".into()],
            meta: vec![("k".into(), "v".into())],
            received: 7,
            resumes: 2,
            floor: 3,
            window: vec![m("d")],
            queued: vec![m("e")],
            ..Snapshot::bare(Request::of(&info), &token)
        };
        let json = serde_json::to_string(&snap).expect("json");
        let back: Snapshot = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, snap);
        assert_eq!(back.request.path(), "/chat.sh");
        assert_eq!(back.request.info().header_value("origin"), Some("http://a"));
        let s = Session::restored(&back, WIDE).expect("a valid token");
        assert!(s.lock().prev.is_none() && !s.lock().accepts(&Token::random()));
        // The token its client last resumed with, still good there, is good here.
        let prev = Token::random();
        let with_prev = Snapshot { prev: Some(prev.to_string()), ..snap.clone() };
        let json = serde_json::to_string(&with_prev).expect("json");
        let s2 = Session::restored(&serde_json::from_str(&json).expect("parse"), WIDE).expect("restored");
        assert!(s2.lock().accepts(&prev) && s2.lock().accepts(&token));
        assert_eq!(s2.lock().keys().collect::<Vec<_>>(), [token.key(), prev.key()], "found by both");
        let st = s.lock();
        assert!(st.token.matches(&token));
        assert_eq!((st.received, st.resumes, st.window.sent()), (7, 2, 4));
    }
}
