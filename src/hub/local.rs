//! The hub owns every live connection, the rooms and the metadata, and is the
//! only thing that executes [`Action`]s. Scripts, the control API and other
//! instances (through `hub::cluster`) all go through [`Hub::apply`], so
//! delivery rules live here.
//!
//! State sits behind one short-lived mutex: each operation is a few map
//! look-ups and non-blocking channel sends, never I/O.
//!
//! A message to many (a room, a broadcast) is encoded into its frame once
//! and written by the delivering threads straight into each member's socket
//! when its writer has nothing queued ([`super::socket`]); a large room is
//! split across threads, outside the state lock, in the order of a second
//! lock that keeps every member seeing such messages in the same order.
//!
//! A client that does not read what it is sent is closed (1008,
//! `slow-consumer`) rather than held in memory: its queue is bounded in
//! messages and in bytes, and all queues together in bytes
//! ([`OutgoingBudget`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use serde::Serialize;

use bytes::Bytes;

use super::outgoing::{OutgoingBudget, SlowConsumer};
use super::shared::{lock, CloseRequest, ConnShared, Ending, Outgoing};
use super::socket::{encode, Direct};
use super::{Applied, Delivery};
use crate::action::{caps, check_meta, check_room, meta_cost, Action, CloseCause, Message, Refusal};
use crate::event::ConnInfo;
use crate::id::ConnId;

/// A connection in the hub's map: kept small, as every idle connection has
/// one (its rooms and metadata are allocated on its first join or `@set`,
/// and freed when it has none again).
struct Conn {
    info: Arc<ConnInfo>,
    connected_at: SystemTime,
    /// Its shared state; once it has ended ([`ConnShared::end`]) the
    /// connection is no longer live (its close event may still run):
    /// nothing more is delivered to it.
    shared: Arc<ConnShared>,
    /// `None` while it has no room and no metadata.
    joined: Option<Box<Joined>>,
}

/// A connection's rooms and metadata.
#[derive(Default)]
struct Joined {
    rooms: BTreeSet<String>,
    meta: BTreeMap<String, String>,
    /// What `meta` counts against [`caps::META_TOTAL`].
    meta_bytes: usize,
}

/// What a session moved from another instance brings into
/// [`Hub::register_session`] (nothing, for a new connection).
#[derive(Default)]
pub struct Carried {
    /// Room names.
    pub rooms: Vec<String>,
    /// Metadata, by key.
    pub meta: Vec<(String, String)>,
    /// Messages queued for its client, in order.
    pub queued: Vec<Message>,
}

/// What a connection without rooms or metadata reads.
static NOTHING: Joined = Joined { rooms: BTreeSet::new(), meta: BTreeMap::new(), meta_bytes: 0 };

impl Conn {
    /// Not ended yet ([`ConnShared::has_ended`]), nor exported (its session
    /// lives elsewhere now, while its queued events finish here).
    fn live(&self) -> bool {
        !self.shared.has_ended() && !departed(&self.shared)
    }

    /// `max_queued`: `--max-outgoing`.
    fn recipient(&self, max_queued: usize) -> Recipient {
        Recipient { shared: self.shared.clone(), info: self.info.clone(), max_queued }
    }

    fn joined(&self) -> &Joined {
        self.joined.as_deref().unwrap_or(&NOTHING)
    }

    /// Its rooms and metadata, to change (allocated on first use).
    fn joined_mut(&mut self) -> &mut Joined {
        self.joined.get_or_insert_with(Box::default)
    }

    /// Frees the rooms and metadata once there are none.
    fn tidy(&mut self) {
        if self.joined.as_ref().is_some_and(|j| j.rooms.is_empty() && j.meta.is_empty()) {
            self.joined = None;
        }
    }
}

/// What delivery needs of a connection, taken out of the state so that a
/// large room is delivered outside its lock.
struct Recipient {
    shared: Arc<ConnShared>,
    info: Arc<ConnInfo>,
    max_queued: usize,
}

/// The hub map's key: the connection's own id, read through its
/// [`ConnInfo`] (the map looks up by `&ConnId`), so that no second copy of
/// the id is allocated per connection (a 32-byte `Box<str>`: a 48-byte
/// heap chunk and 8 bytes more per map slot).
struct Key(Arc<ConnInfo>);

impl std::borrow::Borrow<ConnId> for Key {
    fn borrow(&self) -> &ConnId {
        &self.0.id
    }
}

/// Hashed and compared as its id is (what [`std::borrow::Borrow`] requires).
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Key {}

#[derive(Default)]
struct State {
    conns: HashMap<Key, Conn>,
    rooms: HashMap<String, HashSet<ConnId>>,
}

impl State {
    /// Takes connection `id` out of the map and out of its rooms.
    fn take(&mut self, id: &ConnId) -> Option<Conn> {
        let c = self.conns.remove(id)?;
        for room in &c.joined().rooms {
            leave_room(&mut self.rooms, room, id);
        }
        Some(c)
    }
}

/// A connection as the control API shows it.
#[derive(Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConnView {
    pub id: String,
    pub endpoint: String,
    pub remote_addr: String,
    pub connected_at: String,
    pub rooms: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A cap refused an action (logged where it was refused).
struct Refused;

/// A change of a connection's presence: its new view, or `None` when it ended.
pub type PresenceChange = (ConnId, Option<ConnView>);

pub struct Hub {
    state: Mutex<State>,
    /// Held while a room message or a broadcast is delivered (outside the
    /// state lock): two of them reach every member in the same order.
    order: Mutex<()>,
    /// Cluster mode: where presence changes go (published to Redis).
    presence: Option<async_channel::Sender<PresenceChange>>,
    /// Capacity of each connection's outgoing queue.
    out_queue: usize,
    /// Bytes of the outgoing queues, per connection and in total.
    outgoing: OutgoingBudget,
    /// Set by [`Hub::close_all`] (server shutdown): message events still
    /// queued are dropped, whatever ended their connection.
    shutting_down: AtomicBool,
    /// The resumable sessions among the connections, by token.
    pub sessions: super::session::Sessions,
}

impl Hub {
    /// The outgoing byte budget (what a session's writer trims its window by).
    pub fn outgoing(&self) -> &OutgoingBudget {
        &self.outgoing
    }

    pub fn new(out_queue: usize, outgoing: OutgoingBudget) -> Self {
        Hub {
            state: Mutex::new(State::default()),
            order: Mutex::new(()),
            presence: None,
            out_queue: out_queue.max(1),
            outgoing,
            shutting_down: AtomicBool::new(false),
            sessions: Default::default(),
        }
    }

    /// Reports every presence change to `tx` (cluster mode).
    pub fn with_presence(mut self, tx: async_channel::Sender<PresenceChange>) -> Self {
        self.presence = Some(tx);
        self
    }

    fn changed(&self, c: &Conn) {
        if let Some(tx) = &self.presence {
            let _ = tx.try_send((c.info.id.clone(), c.live().then(|| view(c))));
        }
    }

    /// `true` while this instance holds `id` (live or with its close event
    /// pending; not once its session was exported).
    pub fn is_known(&self, id: &ConnId) -> bool {
        lock(&self.state).conns.get(id).is_some_and(|c| !departed(&c.shared))
    }

    /// The shared state of connection `id` while this instance holds it.
    pub fn shared_of(&self, id: &ConnId) -> Option<Arc<ConnShared>> {
        lock(&self.state).conns.get(id).map(|c| c.shared.clone())
    }

    /// `f` of the resumable session `id` (`None`: no such connection, or
    /// not a session).
    pub fn with_session<R>(&self, id: &ConnId, f: impl FnOnce(&super::session::Session) -> R) -> Option<R> {
        self.shared_of(id).as_deref().and_then(|s| s.session.as_deref()).map(f)
    }

    /// Adds a connection (before its open event's actions are applied).
    /// Returns the receiving end of its outgoing queue.
    pub fn register(&self, info: Arc<ConnInfo>) -> (Outgoing, Arc<ConnShared>) {
        self.register_session(info, None, Default::default())
    }

    /// [`Hub::register`], with a resumable `session` (found by its token
    /// from now on) and what it comes with from another instance: its
    /// rooms, metadata and queued messages. The messages are queued before
    /// it can be found: whatever reaches it afterwards comes after them.
    pub fn register_session(
        &self,
        info: Arc<ConnInfo>,
        session: Option<Box<super::session::Session>>,
        Carried { rooms, meta, queued }: Carried,
    ) -> (Outgoing, Arc<ConnShared>) {
        // Its current token's key, and (brought from another instance) the previous one's while good.
        let keys: Vec<[u8; 8]> = session.as_ref().map(|s| s.lock().keys().collect()).unwrap_or_default();
        // The queue holds no slots while empty; its limits are enforced in
        // `deliver`.
        let (shared, rx) = ConnShared::with_session(session);
        let mut conn =
            Conn { info: info.clone(), connected_at: SystemTime::now(), shared: shared.clone(), joined: None };
        let r = conn.recipient(self.out_queue);
        for msg in queued {
            deliver_one(&r, self.outgoing.count(msg), None, &self.outgoing);
        }
        let mut st = lock(&self.state);
        for (k, v) in meta {
            let _ = set_meta(&mut conn, k, Some(v));
        }
        for room in rooms {
            if can_join(&conn, &room).is_err() {
                continue;
            }
            conn.joined_mut().rooms.insert(room);
        }
        self.changed(&conn);
        // The same session back while its exported connection's last events
        // still run here: that one's rooms go (it is not delivered to).
        st.take(&info.id);
        for room in conn.joined().rooms.iter() {
            st.rooms.entry(room.clone()).or_default().insert(info.id.clone());
        }
        st.conns.insert(Key(info.clone()), conn);
        for key in keys {
            self.sessions.insert(key, info.clone(), shared.clone());
        }
        (rx, shared)
    }

    /// The connection has ended ([`ConnShared::end`] was called): its
    /// presence goes (cluster mode). Nothing more is delivered to it, but
    /// its rooms and metadata stay until [`Hub::remove`] so that its close
    /// event sees them.
    pub fn detach(&self, id: &ConnId) {
        if let Some(c) = lock(&self.state).conns.get(id) {
            self.changed(c);
        }
    }

    /// Forgets a connection entirely (after its close event ran).
    pub fn remove(&self, id: &ConnId) {
        lock(&self.state).take(id);
    }

    /// [`Hub::remove`], only if `id` is still the connection of `shared`
    /// (an exported session may have come back as a new one meanwhile).
    pub fn remove_if(&self, id: &ConnId, shared: &Arc<ConnShared>) {
        let mut st = lock(&self.state);
        if st.conns.get(id).is_some_and(|c| Arc::ptr_eq(&c.shared, shared)) {
            st.take(id);
        }
    }

    /// Sorted rooms and metadata of a connection, for the next event.
    pub fn snapshot(&self, id: &ConnId) -> (Vec<String>, Vec<(String, String)>) {
        let st = lock(&self.state);
        match st.conns.get(id) {
            Some(c) => {
                let j = c.joined();
                (j.rooms.iter().cloned().collect(), j.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            None => (Vec::new(), Vec::new()),
        }
    }

    /// Executes one action: how many connections it reached (messages
    /// queued, or connections joined, closed, … ), or that a cap refused it.
    pub fn apply(&self, action: Action) -> Applied {
        self.apply_skipping(action, &|_| false)
    }

    /// [`Hub::apply`], except that a room message or broadcast does not
    /// reach the connections `skip` names (cluster mode: sessions moving,
    /// to which this instance's own messages go through Redis's order).
    pub fn apply_skipping(&self, action: Action, skip: &dyn Fn(&ConnId) -> bool) -> Applied {
        Applied::Reached(match self.execute(action, skip) {
            Ok(n) => n,
            Err(Refused) => return Applied::Refused,
        })
    }

    /// [`Hub::apply`], with a refusal as `Err`.
    fn execute(&self, action: Action, skip: &dyn Fn(&ConnId) -> bool) -> Result<usize, Refused> {
        // Each message buffer is counted once, before the lock, however
        // many recipients share it.
        let action = match action {
            Action::Send { to, msg } => Action::Send { to, msg: self.outgoing.count(msg) },
            Action::Room { room, msg, except } => Action::Room { room, msg: self.outgoing.count(msg), except },
            Action::Broadcast { endpoint, msg } => Action::Broadcast { endpoint, msg: self.outgoing.count(msg) },
            other => other,
        };
        // Encoded once, whatever the number of recipients.
        let frame = action.message().and_then(encode).map(|f| self.outgoing.count_frame(f));
        let action = match self.fan_out(action, frame.as_ref(), skip) {
            Ok(reached) => return Ok(reached),
            Err(other) => other,
        };
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let out = &self.outgoing;
        Ok(match action {
            Action::Send { to, msg } => {
                // The recipient is taken under the lock, the delivery (a
                // socket write on the direct path) made after it.
                let Some(r) = st.conns.get(&to).map(|c| c.recipient(self.out_queue)) else { return Ok(0) };
                drop(guard);
                deliver_one(&r, msg, frame.as_ref(), out)
            }
            // Delivered above, outside the state lock.
            Action::Room { .. } | Action::Broadcast { .. } => 0,
            Action::Join { conn, room } => {
                let Some(c) = st.conns.get_mut(&conn) else { return Ok(0) };
                if let Err(why) = can_join(c, &room) {
                    log::warn!(
                        "[{conn}] @join {} refused: {why}",
                        crate::logging::quoted_short(&room, caps::ROOM_NAME)
                    );
                    return Err(Refused);
                }
                c.joined_mut().rooms.insert(room.clone());
                self.changed(c);
                st.rooms.entry(room).or_default().insert(conn);
                1
            }
            Action::Leave { conn, room } => {
                let Some(c) = st.conns.get_mut(&conn) else { return Ok(0) };
                if let Some(j) = &mut c.joined {
                    j.rooms.remove(&room);
                }
                c.tidy();
                self.changed(c);
                leave_room(&mut st.rooms, &room, &conn);
                1
            }
            Action::SetMeta { conn, key, value } => {
                let Some(c) = st.conns.get_mut(&conn) else { return Ok(0) };
                let label = crate::logging::quoted_short(&key, caps::KEY);
                if let Err(why) = set_meta(c, key, value) {
                    log::warn!("[{conn}] @set {label} refused: {why}");
                    return Err(Refused);
                }
                self.changed(c);
                1
            }
            Action::Close { conn, code, reason, cause } => match st.conns.get(&conn) {
                Some(c) if c.live() => {
                    close(c, CloseRequest { code, reason, cause });
                    1
                }
                _ => 0,
            },
        })
    }

    /// A room message or a broadcast (`Err` gives any other action back):
    /// delivered outside the state lock, in the order of the `order` lock.
    fn fan_out(&self, action: Action, frame: Option<&Bytes>, skip: &dyn Fn(&ConnId) -> bool) -> Result<usize, Action> {
        match action {
            Action::Room { room, msg, except } => {
                let _order = lock(&self.order);
                let to: Vec<Recipient> = {
                    let st = lock(&self.state);
                    let Some(members) = st.rooms.get(&room) else { return Ok(0) };
                    members
                        .iter()
                        .filter(|id| Some(*id) != except.as_ref() && !skip(id))
                        .filter_map(|id| st.conns.get(id))
                        .map(|c| c.recipient(self.out_queue))
                        .collect()
                };
                Ok(deliver_all(&to, &msg, frame, &self.outgoing))
            }
            Action::Broadcast { endpoint, msg } => {
                let _order = lock(&self.order);
                let to: Vec<Recipient> = lock(&self.state)
                    .conns
                    .values()
                    .filter(|c| endpoint.as_deref().is_none_or(|e| c.info.target.endpoint() == e))
                    .filter(|c| !skip(&c.info.id))
                    .map(|c| c.recipient(self.out_queue))
                    .collect();
                Ok(deliver_all(&to, &msg, frame, &self.outgoing))
            }
            other => Err(other),
        }
    }

    /// `true` when `id` is a live (not yet ended) connection.
    #[cfg(test)]
    pub fn is_live(&self, id: &ConnId) -> bool {
        lock(&self.state).conns.get(id).is_some_and(Conn::live)
    }

    /// Asks every live connection to close (server shutdown).
    pub fn close_all(&self, code: u16, reason: &str, cause: CloseCause) -> usize {
        self.shutting_down.store(true, Ordering::SeqCst);
        let st = lock(&self.state);
        // Events held for a moved session's previous instance wait no more:
        // its close event runs within the shutdown's deadline.
        st.conns.values().filter_map(|c| c.shared.session.as_deref()).for_each(|s| {
            s.release();
        });
        st.conns
            .values()
            .filter(|c| c.live())
            .map(|c| close(c, CloseRequest { code, reason: reason.to_owned(), cause }))
            .count()
    }

    /// `true` once [`Hub::close_all`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Live (not yet ended) connections.
    pub fn live_count(&self) -> usize {
        lock(&self.state).conns.values().filter(|c| c.live()).count()
    }

    /// Connections still known (live, or with a close event pending).
    pub fn len(&self) -> usize {
        lock(&self.state).conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live connections, optionally only members of `room` / of `endpoint`,
    /// oldest first.
    pub fn list(&self, room: Option<&str>, endpoint: Option<&str>) -> Vec<ConnView> {
        let st = lock(&self.state);
        let mut v: Vec<(SystemTime, ConnView)> = st
            .conns
            .values()
            .filter(|c| c.live())
            .filter(|c| room.is_none_or(|r| c.joined().rooms.contains(r)))
            .filter(|c| endpoint.is_none_or(|e| c.info.target.endpoint() == e))
            .map(|c| (c.connected_at, view(c)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        v.into_iter().map(|(_, c)| c).collect()
    }

    pub fn get(&self, id: &ConnId) -> Option<ConnView> {
        lock(&self.state).conns.get(id).filter(|c| c.live()).map(view)
    }

    /// Room → number of live members.
    pub fn rooms(&self) -> BTreeMap<String, usize> {
        let st = lock(&self.state);
        st.rooms
            .iter()
            .map(|(r, m)| (r.clone(), m.iter().filter(|id| st.conns.get(*id).is_some_and(Conn::live)).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Checks a join against the room caps (the parser checked the name
/// already; actions from other instances are checked again here).
fn can_join(c: &Conn, room: &str) -> Result<(), Refusal> {
    check_room(room)?;
    let rooms = &c.joined().rooms;
    if rooms.len() >= caps::ROOMS && !rooms.contains(room) {
        return Err(Refusal::TooManyRooms);
    }
    Ok(())
}

/// Sets (or removes) one metadata entry within the metadata caps.
fn set_meta(c: &mut Conn, key: String, value: Option<String>) -> Result<(), Refusal> {
    check_meta(&key, value.as_deref())?;
    let j = c.joined();
    let old = j.meta.get(&key).map_or(0, |v| meta_cost(&key, v));
    let new = value.as_deref().map_or(0, |v| meta_cost(&key, v));
    let total = j.meta_bytes - old + new;
    if total > caps::META_TOTAL {
        return Err(Refusal::MetadataFull(total));
    }
    match value {
        Some(v) => {
            let j = c.joined_mut();
            j.meta_bytes = total;
            j.meta.insert(key, v);
        }
        None => {
            if let Some(j) = &mut c.joined {
                j.meta_bytes = total;
                j.meta.remove(&key);
            }
            c.tidy();
        }
    }
    Ok(())
}

fn leave_room(rooms: &mut HashMap<String, HashSet<ConnId>>, room: &str, id: &ConnId) {
    if let Some(m) = rooms.get_mut(room) {
        m.remove(id);
        if m.is_empty() {
            rooms.remove(room);
        }
    }
}

/// Fewest recipients per thread: below that, one thread delivers them all
/// (starting a thread costs about as much as a hundred writes).
const MIN_PER_THREAD: usize = 128;

/// Delivers `msg` to every one of `to`, split across as many threads as
/// there are cores (the calling one included); how many it reached.
fn deliver_all(to: &[Recipient], msg: &Message, frame: Option<&Bytes>, out: &OutgoingBudget) -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = cores.min(to.len() / MIN_PER_THREAD).max(1);
    // The write time is taken once per part and the metrics added once per
    // part: per member, the clock read and the two shared counters (whose
    // cache line every delivering thread pulled to its core in turn) were a
    // good part of the user time of a fan-out.
    let part = |rs: &[Recipient]| {
        let now = crate::runtime::clock_ms();
        count_out(rs.iter().map(|r| deliver(r, msg.clone(), frame, out, now)).sum::<usize>(), msg.len())
    };
    if threads == 1 {
        return part(to);
    }
    let part = &part;
    std::thread::scope(|s| {
        let mut parts = to.chunks(to.len().div_ceil(threads));
        let mine = parts.next().unwrap_or_default();
        let helpers: Vec<_> = parts
            .map(|rs| (rs, std::thread::Builder::new().name("ws2http-fanout".into()).spawn_scoped(s, move || part(rs))))
            .collect();
        let mut n = part(mine);
        for (rs, helper) in helpers {
            // A thread that could not start: its part is delivered here.
            n += match helper {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    log::error!("a fan-out thread panicked; {} recipient(s) may have missed a message", rs.len());
                    0
                }),
                Err(_) => part(rs),
            };
        }
        n
    })
}

/// Sends `msg` to `c`; 1 when sent or queued. Straight into its socket
/// when nothing is queued for it and `frame` (its encoding) is given
/// ([`super::socket::Wire::write`]); otherwise into its queue. A client
/// whose queue is full (in messages or bytes, or while all queues together
/// are over their total) is not reading: it is closed (1008) rather than
/// slowing everyone else down or holding memory. A client whose queue is
/// empty always gets the message.
///
/// `now`: [`crate::runtime::clock_ms`], read once by the caller. The caller
/// adds what was sent to the metrics ([`count_out`]).
fn deliver(c: &Recipient, msg: Message, frame: Option<&Bytes>, budget: &OutgoingBudget, now: u64) -> usize {
    let tx = &c.shared.outgoing;
    if c.shared.has_ended() || tx.is_closed() || departed(&c.shared) {
        // Closing, or already aborted as a slow consumer (logged once then).
        return 0;
    }
    let len = msg.len();
    // A detached session keeps what comes within its own bounds (it is not
    // a slow consumer: nobody reads it until it resumes).
    let total = (budget, frame.map_or(0, Bytes::len));
    let detached = match c.shared.session.as_deref().map(|s| s.admit(tx.len(), c.shared.queued_bytes(), len, total)) {
        Some(Err(why)) => return super::session::overflow(&c.shared, &c.info.id, why),
        Some(Ok(detached)) => detached,
        None => false,
    };
    if frame.is_some_and(|f| c.shared.wire.write(f) == Direct::Sent) {
        c.shared.wrote_at(now);
        return 1;
    }
    let queued = &c.shared.out_queued;
    let waiting = tx.len();
    // A client whose queue is empty keeps up: it takes any message.
    if waiting > 0 && !detached {
        if let Err(why) = budget.admit(waiting, c.max_queued, queued.load(Ordering::Relaxed), len) {
            slow_consumer(c, why);
            return 0;
        }
    }
    // Counted before it is queued: the writer subtracts once it takes it.
    queued.fetch_add(len, Ordering::Relaxed);
    c.shared.wire.queued();
    if tx.push(msg).is_err() {
        // Closed: the connection is closing, or its writer is gone.
        queued.fetch_sub(len, Ordering::Relaxed);
        c.shared.wire.unqueued();
        return 0;
    }
    1
}

/// [`deliver`] to one recipient, with the clock read and the metrics
/// counted for it alone.
fn deliver_one(c: &Recipient, msg: Message, frame: Option<&Bytes>, budget: &OutgoingBudget) -> usize {
    let len = msg.len();
    count_out(deliver(c, msg, frame, budget, crate::runtime::clock_ms()), len)
}

/// Adds `sent` messages of `len` bytes each to the metrics; `sent`.
fn count_out(sent: usize, len: usize) -> usize {
    let m = crate::metrics::get();
    crate::metrics::add(&m.messages_out, sent as u64);
    crate::metrics::add(&m.bytes_out, (sent * len) as u64);
    sent
}

/// `true` once the connection's session was exported (it lives elsewhere).
fn departed(shared: &ConnShared) -> bool {
    shared.session.as_deref().is_some_and(super::session::Session::departed)
}

/// Aborts a client that does not keep up, with the one log line that says
/// which limit it went over; its queue is closed, so later deliveries to it
/// return at once.
fn slow_consumer(c: &Recipient, why: SlowConsumer) {
    log::warn!("[{}] does not read its messages: {why}; closing it (1008)", c.info.id);
    let req = CloseRequest { code: 1008, reason: "slow consumer".into(), cause: CloseCause::SlowConsumer };
    c.shared.request_close(req, Ending::Abort, None);
}

/// Asks for a close: the writer sends what is queued, then the close frame.
fn close(c: &Conn, req: CloseRequest) {
    c.shared.request_close(req, Ending::Drain, None);
}

fn view(c: &Conn) -> ConnView {
    let r = &c.info.request;
    ConnView {
        id: c.info.id.to_string(),
        endpoint: c.info.target.endpoint().to_owned(),
        remote_addr: match (r.remote_port().is_empty(), r.remote_addr().contains(':')) {
            (true, _) => r.remote_addr().to_owned(),
            (false, false) => format!("{}:{}", r.remote_addr(), r.remote_port()),
            (false, true) => format!("[{}]:{}", r.remote_addr(), r.remote_port()),
        },
        connected_at: humantime::format_rfc3339_seconds(c.connected_at).to_string(),
        rooms: c.joined().rooms.iter().cloned().collect(),
        metadata: c.joined().meta.clone(),
    }
}

/// A server without `--redis`: every connection is here.
impl Delivery for Hub {
    fn apply(&self, action: Action) -> Applied {
        Hub::apply(self, action)
    }

    fn apply_counted(&self, actions: Vec<Action>) -> BoxFuture<'_, Vec<Applied>> {
        let done = actions.into_iter().map(|a| Hub::apply(self, a)).collect();
        Box::pin(std::future::ready(done))
    }

    fn find<'a>(&'a self, id: &'a ConnId) -> BoxFuture<'a, Option<ConnView>> {
        Box::pin(std::future::ready(self.get(id)))
    }

    fn list(&self) -> BoxFuture<'_, Vec<ConnView>> {
        Box::pin(std::future::ready(Hub::list(self, None, None)))
    }

    fn new_conn_id(&self) -> ConnId {
        ConnId::random()
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    fn rooms(&self) -> BoxFuture<'_, BTreeMap<String, usize>> {
        Box::pin(std::future::ready(Hub::rooms(self)))
    }
}

#[cfg(test)]
mod tests;
