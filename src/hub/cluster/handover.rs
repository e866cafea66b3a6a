//! Moving a resumable session between instances (issue 17): the Redis
//! scripts that make the move one point in Redis's order (the *cut*), and
//! the bookkeeping of each side: the instance a client resumed on (B) waits
//! for the session and records what arrives for it after the cut; the
//! instance that held it (A) hands it over when its own cut marker arrives.
//!
//! Why a cut and not "forward for a while": a relay reorders a sender's
//! messages published just before and just after it learned the move; a
//! send routed by a script that reads the move in the same atomic step lands
//! wholly on one side of it (docs/notes17/cluster-resume.md).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::action::Action;
use crate::id::ConnId;

use super::super::local::Hub;
use super::super::session::{Session, Snapshot};

/// How long B waits for a session it asked for before refusing the resume.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(5);
/// How long a snapshot waits in Redis for B to read it.
pub const SNAPSHOT_TTL_MS: u64 = 10_000;

/// Which instance holds each session living away from the instance its id names.
pub const MOVED: &str = "ws2http:moved";

/// The sessions instance `instance` holds that its id does not name (so
/// that its `moved` entries go with its presence).
pub fn hosted_key(instance: &str) -> String {
    format!("ws2http:hosted:{instance}")
}

/// Where A leaves a snapshot for B.
pub fn snapshot_key(nonce: &str) -> String {
    format!("ws2http:handover:{nonce}")
}

/// Publishes ARGV[3] to the channel of the instance holding ARGV[1]
/// (`moved`, else ARGV[2], the instance its id names): a send is on one side
/// of a cut, never between. KEYS: moved. Returns the subscribers reached.
pub const ROUTE: &str = "local h = redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[2] \
     return redis.call('PUBLISH', 'ws2http:to:' .. h, ARGV[3])";

/// Writes ARGV[4] as the presence of ARGV[1] in this instance's hash only
/// while this instance (ARGV[3]) holds it: an update queued before a cut
/// and written after it does not list the session twice.
/// KEYS: moved, conns:me. ARGV: id, its id's instance, me, view.
pub const PRESENCE: &str = "local h = redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[2] \
     if h == ARGV[3] then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) return 1 end return 0";

/// A connection left this instance: its presence goes; if it had moved in
/// and still belongs here (it ended here, it was not handed on), its move
/// is forgotten and the instance its id names is told (ARGV[4], a `gone`).
/// KEYS: moved, conns:me, hosted:me. ARGV: id, its id's instance, me, gone.
pub const ENDED: &str = "redis.call('HDEL', KEYS[2], ARGV[1]) \
     if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[3] then \
       redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('SREM', KEYS[3], ARGV[1]) \
       redis.call('PUBLISH', 'ws2http:to:' .. ARGV[2], ARGV[4]) end return 1";

/// The cut: if this instance (ARGV[2]) still holds ARGV[1] and B (ARGV[3])
/// is alive and takes sessions (its heartbeat says `2`: not while it
/// shuts down, `drain`) and its subscription listens (a killed instance's
/// heartbeat key outlives it by up to its TTL), records the move, moves the presence entry from A's hash to
/// B's, and publishes the marker ARGV[5] to both. 1 done, 0 not the
/// holder, -1 B is not alive or takes none.
/// KEYS: moved, conns:A, conns:B, hosted:A, hosted:B, alive:B.
/// ARGV: id, A, B, its id's instance, marker.
pub const CUT: &str = "local h = redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[4] \
     if h ~= ARGV[2] then return 0 end \
     if redis.call('GET', KEYS[6]) ~= '2' then return -1 end \
     if redis.call('PUBSUB', 'NUMSUB', 'ws2http:to:' .. ARGV[3])[2] == 0 then return -1 end \
     local view = redis.call('HGET', KEYS[2], ARGV[1]) \
     if view then redis.call('HDEL', KEYS[2], ARGV[1]) redis.call('HSET', KEYS[3], ARGV[1], view) end \
     redis.call('SREM', KEYS[4], ARGV[1]) \
     if ARGV[3] == ARGV[4] then redis.call('HDEL', KEYS[1], ARGV[1]) \
     else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) redis.call('SADD', KEYS[5], ARGV[1]) end \
     redis.call('PUBLISH', 'ws2http:to:' .. ARGV[2], ARGV[5]) \
     redis.call('PUBLISH', 'ws2http:to:' .. ARGV[3], ARGV[5]) return 1";

/// B gave up on a move after its cut: it forgets its side (the move and the
/// presence entry). KEYS: moved, conns:me, hosted:me. ARGV: id, me.
pub const UNDO: &str =
    "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end \
     redis.call('SREM', KEYS[3], ARGV[1]) redis.call('HDEL', KEYS[2], ARGV[1]) return 1";

/// This instance (ARGV[3]) holds ARGV[1]: records it (presence rewritten
/// after Redis lost its data). KEYS: moved, hosted:me. ARGV: id, its id's instance, me.
pub const ADOPT: &str = "if ARGV[2] == ARGV[3] then redis.call('HDEL', KEYS[1], ARGV[1]) \
     else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) redis.call('SADD', KEYS[2], ARGV[1]) end return 1";

/// The presence of ARGV[1], from the instance that holds it, if alive.
/// KEYS: moved. ARGV: id, its id's instance.
pub const FIND: &str = "local h = redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[2] \
     if redis.call('EXISTS', 'ws2http:alive:' .. h) == 0 then return false end \
     return redis.call('HGET', 'ws2http:conns:' .. h, ARGV[1])";

/// Every live instance's presence, read in one step: `{dead, views,
/// mine}`: the instances without a heartbeat, the presence entries of the
/// others, and this instance's (ARGV[1]) own. KEYS: instances.
pub const LIST: &str = "local dead, views, mine = {}, {}, {} \
     for _, i in ipairs(redis.call('SMEMBERS', KEYS[1])) do \
       if i == ARGV[1] then mine = redis.call('HVALS', 'ws2http:conns:' .. i) \
       elseif redis.call('EXISTS', 'ws2http:alive:' .. i) == 1 then \
         for _, v in ipairs(redis.call('HVALS', 'ws2http:conns:' .. i)) do views[#views + 1] = v end \
       else dead[#dead + 1] = i end end \
     return {dead, views, mine}";

/// Removes an instance's presence and the moves into it; when ARGV[2] is
/// `1`, only if its heartbeat key is still gone when Redis runs this (an
/// instance that beat in between keeps it). 1 removed, 0 kept.
/// KEYS: alive, instances, conns, hosted, moved. ARGV: the instance, check.
pub const FORGET: &str = "if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
     redis.call('SREM', KEYS[2], ARGV[1]) redis.call('DEL', KEYS[3]) \
     for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do \
       if redis.call('HGET', KEYS[5], id) == ARGV[1] then redis.call('HDEL', KEYS[5], id) end end \
     redis.call('DEL', KEYS[4]) return 1";

/// Why B could not bring a session here: the resume is refused (4410).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveRefused {
    /// The token names no session, or none that its holder knows.
    Unknown(String),
    /// This session is already moving.
    Busy,
    /// Redis cannot be reached from here.
    Unreachable,
    /// The holder did not answer within [`HANDOVER_WAIT`].
    Timeout,
    /// The snapshot could not be read or put in.
    Broken(String),
}

impl std::fmt::Display for MoveRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MoveRefused::Unknown(why) => write!(f, "the instance holding it refused: {why}"),
            MoveRefused::Busy => f.write_str("it is already moving to another instance"),
            MoveRefused::Unreachable => f.write_str("Redis is unreachable"),
            MoveRefused::Timeout => write!(f, "the instance holding it did not answer within {HANDOVER_WAIT:?}"),
            MoveRefused::Broken(why) => write!(f, "its snapshot is unusable: {why}"),
        }
    }
}

/// A session B asked for, by the nonce of its request (B learns its id at the cut).
struct Incoming {
    /// Known from the cut on: what may concern it is recorded.
    id: Option<ConnId>,
    recorded: Vec<Action>,
    /// Message bytes in `recorded`, and whether some were dropped over the cap.
    bytes: usize,
    overflowed: bool,
    /// Its snapshot went to the resume, which puts it in the hub
    /// ([`Arrivals::put_in`]): what arrives until then is recorded, then
    /// applied to it.
    handed: bool,
    /// When it was handed: one whose resume dropped its future before
    /// putting it in is forgotten after [`HANDED_AGE`].
    handed_at: Option<std::time::Instant>,
    /// Its previous instance has run the events it had queued
    /// (`Move::Ran`): once in the hub, its events need not wait.
    ran: bool,
    done: async_channel::Sender<Result<Snapshot, MoveRefused>>,
}

/// How long a handed session may wait for its resume to put it in before
/// it is forgotten (the resume was dropped: its client went away).
const HANDED_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// B's side: the sessions it is bringing here.
pub struct Arrivals {
    incoming: Mutex<HashMap<String, Incoming>>,
    /// Cap of the message bytes recorded for one move (the snapshot's bound).
    max_recorded: usize,
}

/// What the subscriber holds while it applies an action, so that a session
/// being put in sees each action exactly once: recorded, or applied to it live.
pub struct Recording<'a>(MutexGuard<'a, HashMap<String, Incoming>>);

impl Recording<'_> {
    /// Records `action` for every session past its cut that it may concern
    /// (none is in the hub yet: [`Arrivals::put_in`] ends its recording).
    pub fn record(&mut self, action: &Action, max: usize) {
        for inc in self.0.values_mut() {
            let Some(id) = &inc.id else { continue };
            if !concerns(action, id) {
                continue;
            }
            let len = action.message().map_or(0, |m| m.len());
            if inc.bytes + len > max {
                inc.overflowed = true;
                continue;
            }
            inc.bytes += len;
            inc.recorded.push(action.clone());
        }
    }
}

/// `true` when `action` may reach or change `id` (its rooms are not known
/// before its snapshot: every room message and broadcast may).
fn concerns(action: &Action, id: &ConnId) -> bool {
    match action.addressee() {
        crate::action::Addressee::Conn(c) => c == id,
        _ => true,
    }
}

impl Arrivals {
    pub fn new(max_recorded: usize) -> Arrivals {
        Arrivals { incoming: Mutex::new(HashMap::new()), max_recorded }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Incoming>> {
        self.incoming.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts waiting for the session a request `nonce` asked for.
    pub fn start(&self, nonce: &str) -> async_channel::Receiver<Result<Snapshot, MoveRefused>> {
        let (done, rx) = async_channel::bounded(1);
        let (handed, handed_at, ran) = (false, None, false);
        let inc =
            Incoming { id: None, recorded: Vec::new(), bytes: 0, overflowed: false, handed, handed_at, ran, done };
        let mut map = self.lock();
        map.retain(|_, i| i.handed_at.is_none_or(|at| at.elapsed() < HANDED_AGE));
        map.insert(nonce.to_owned(), inc);
        rx
    }

    /// The cut of move `nonce` (session `id`) passed here: record from now
    /// on. `false` when no such move is waiting (it gave up), or when `id`
    /// is already arriving through another one.
    pub fn cut(&self, id: &ConnId, nonce: &str) -> bool {
        let mut map = self.lock();
        if map.iter().any(|(n, i)| n != nonce && i.id.as_ref() == Some(id)) {
            return false;
        }
        match map.get_mut(nonce) {
            Some(inc) if !inc.handed => {
                inc.id = Some(id.clone());
                true
            }
            _ => false,
        }
    }

    /// `true` when no move into here is under way.
    pub fn is_idle(&self) -> bool {
        self.lock().is_empty()
    }

    /// Held while an action is applied here (see [`Recording`]).
    pub fn recording(&self) -> Recording<'_> {
        Recording(self.lock())
    }

    pub fn max_recorded(&self) -> usize {
        self.max_recorded
    }

    /// Ends move `nonce` (it failed, or gave up): whether it had passed
    /// its cut; `None` if it is not waiting any more.
    pub fn end(&self, nonce: &str, result: MoveRefused) -> Option<bool> {
        let mut map = self.lock();
        if map.get(nonce).is_none_or(|i| i.handed) {
            return None;
        }
        let inc = map.remove(nonce)?;
        let _ = inc.done.try_send(Err(result));
        Some(inc.id.is_some())
    }

    /// The snapshot of move `nonce` is here: what was recorded so far goes
    /// into it, and it goes to the resume, which puts it in the hub with
    /// [`Arrivals::put_in`] (what arrives until then is recorded, and
    /// applied there). A close asked for it meanwhile is applied once it is
    /// in the hub (a snapshot holds no close). The snapshot back when the
    /// move gave up.
    pub fn arrive(&self, nonce: &str, mut snap: Snapshot) -> Result<(), Box<Snapshot>> {
        let mut map = self.lock();
        let Some(inc) = map.get_mut(nonce).filter(|i| !i.handed) else { return Err(Box::new(snap)) };
        let (closes, recorded): (Vec<Action>, Vec<Action>) =
            std::mem::take(&mut inc.recorded).into_iter().partition(|a| matches!(a, Action::Close { .. }));
        inc.recorded = closes;
        let endpoint_of =
            |e: &str| e == "/" || snap.request.path() == e || snap.request.path().starts_with(&format!("{e}/"));
        let fits: Vec<bool> = recorded
            .iter()
            .map(|a| matches!(a, Action::Broadcast { endpoint: Some(e), .. } if !endpoint_of(e)))
            .collect();
        for (action, elsewhere) in recorded.into_iter().zip(fits) {
            if !elsewhere {
                fold(&mut snap, action);
            }
        }
        if inc.overflowed {
            // It ends where it arrives (`resume-overflow`), as a detached
            // session over its bound does: never resumed with a gap.
            log::warn!("[{}] more arrived during its move than its buffer holds; it ends", snap.id);
            snap.overflow = true;
        }
        inc.handed = true;
        inc.handed_at = Some(std::time::Instant::now());
        inc.bytes = 0;
        let _ = inc.done.try_send(Ok(snap));
        Ok(())
    }

    /// The previous instance of session `id` has run the events it had
    /// queued: its events here may run. Arriving (its step can overtake
    /// its snapshot: both come from that instance, on separate paths),
    /// noted until it is in the hub ([`Arrivals::put_in`]); else released
    /// at once. Under the recording lock, as `put_in`.
    pub fn ran(&self, hub: &Hub, id: &ConnId) {
        let mut map = self.lock();
        if let Some(inc) = map.values_mut().find(|i| i.id.as_ref() == Some(id)) {
            inc.ran = true;
            return;
        }
        if hub.with_session(id, Session::release) != Some(true) {
            log::debug!("[{id}] its previous instance's events ran; none of its events waited here");
        }
    }

    /// The resume of move `nonce` puts its session in the hub (`put_in`,
    /// `false` when it could not): done while no action is being recorded
    /// or applied, so that each reaches it exactly once and in order:
    /// folded into its snapshot, recorded then replayed here, or live.
    pub fn put_in(&self, nonce: &str, hub: &Hub, put_in: impl FnOnce() -> bool) -> bool {
        let mut map = self.lock();
        let done = put_in();
        if let Some(Incoming { id: Some(id), recorded, overflowed, ran, .. }) = map.remove(nonce) {
            if done && ran {
                hub.with_session(&id, Session::release);
            }
            match hub.shared_of(&id).filter(|_| done && overflowed) {
                // More came since its snapshot than its buffer holds: it ends.
                Some(shared) => {
                    let why = "more was sent to it during its move than --resume-buffer-bytes".to_owned();
                    crate::hub::session::overflow(&shared, &id, why);
                }
                None if done => drop(replay(hub, &id, recorded)),
                None => {}
            }
        }
        done
    }
}

/// One recorded action applied to a snapshot: its messages queued, its
/// rooms and metadata changed (a close is not folded: [`Arrivals::arrive`]
/// keeps it, to apply once the session is in the hub).
fn fold(snap: &mut Snapshot, action: Action) {
    let id = snap.id.clone();
    match action {
        Action::Send { msg, .. } => snap.queued.push(msg),
        Action::Room { room, msg, except } => {
            if snap.rooms.contains(&room) && except.as_ref() != Some(&id) {
                snap.queued.push(msg);
            }
        }
        Action::Broadcast { msg, .. } => snap.queued.push(msg),
        Action::Join { room, .. } => {
            if let Err(at) = snap.rooms.binary_search(&room) {
                snap.rooms.insert(at, room);
            }
        }
        Action::Leave { room, .. } => snap.rooms.retain(|r| *r != room),
        Action::SetMeta { key, value, .. } => {
            snap.meta.retain(|(k, _)| *k != key);
            if let Some(v) = value {
                let at = snap.meta.partition_point(|(k, _)| *k < key);
                snap.meta.insert(at, (key, v));
            }
        }
        Action::Close { .. } => {}
    }
}

/// Applies to session `id` alone, in order, what was recorded for it:
/// room messages of the rooms it is in at each step, broadcasts to its
/// endpoint, and everything addressed to it.
pub fn replay(hub: &Hub, id: &ConnId, recorded: Vec<Action>) -> usize {
    let mut applied = 0;
    for action in recorded {
        let Some(view) = hub.get(id) else { break };
        let action = match action {
            Action::Room { room, msg, except } => {
                if !view.rooms.contains(&room) || except.as_ref() == Some(id) {
                    continue;
                }
                Action::Send { to: id.clone(), msg }
            }
            Action::Broadcast { endpoint, msg } => {
                if endpoint.as_ref().is_some_and(|e| *e != view.endpoint) {
                    continue;
                }
                Action::Send { to: id.clone(), msg }
            }
            other => other,
        };
        applied += hub.apply(action).reached();
    }
    applied
}

/// A's side: the sessions it agreed to hand over (waiting for their cut)
/// and those it handed away (its actions on them go through [`ROUTE`]).
#[derive(Default)]
pub struct Departures {
    /// id → (B, nonce).
    handing: Mutex<HashMap<ConnId, (String, String)>>,
    /// Those of `handing` whose `CUT` was sent, and when: its marker is
    /// due (it passed, or its reply was lost: [`super::faults`]).
    sent: Mutex<HashMap<ConnId, std::time::Instant>>,
    moved_away: Mutex<HashSet<ConnId>>,
}

impl Departures {
    fn handing(&self) -> MutexGuard<'_, HashMap<ConnId, (String, String)>> {
        self.handing.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn away(&self) -> MutexGuard<'_, HashSet<ConnId>> {
        self.moved_away.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Agrees to hand `id` to `to`; `false` when it is already moving.
    pub fn agree(&self, id: &ConnId, to: &str, nonce: &str) -> bool {
        let mut h = self.handing();
        if h.contains_key(id) {
            return false;
        }
        h.insert(id.clone(), (to.to_owned(), nonce.to_owned()));
        true
    }

    /// `true` while `id` waits for its cut.
    pub fn is_handing(&self, id: &ConnId) -> bool {
        self.handing().contains_key(id)
    }

    /// The cut of `id` came (or failed): its destination and nonce.
    pub fn cut(&self, id: &ConnId) -> Option<(String, String)> {
        let mut h = self.handing();
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        h.remove(id)
    }

    /// The `CUT` of `id` was sent to Redis (its reply may be lost).
    pub fn sent(&self, id: &ConnId) {
        let h = self.handing();
        if h.contains_key(id) {
            self.sent.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), std::time::Instant::now());
        }
    }

    /// The sessions whose `CUT` was sent longer than `after` ago and whose
    /// marker did not come: id, destination, nonce.
    pub fn overdue(&self, after: std::time::Duration) -> Vec<(ConnId, String, String)> {
        let h = self.handing();
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let late = sent.iter().filter(|(_, at)| at.elapsed() >= after);
        late.filter_map(|(id, _)| h.get(id).map(|(to, n)| (id.clone(), to.clone(), n.clone()))).collect()
    }

    /// `id` left this instance; actions on it are routed through Redis.
    pub fn moved_away(&self, id: &ConnId) {
        self.away().insert(id.clone());
    }

    /// `id` is here again, or ended elsewhere.
    pub fn forget(&self, id: &ConnId) {
        self.away().remove(id);
    }

    pub fn is_away(&self, id: &ConnId) -> bool {
        let away = self.away();
        !away.is_empty() && away.contains(id)
    }
}

#[cfg(test)]
mod tests;
