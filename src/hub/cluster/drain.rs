//! Sessions survive a rolling restart (issue 17: "ws2http itself gets
//! restarted behind a cluster"). On SIGTERM/SIGINT an instance of a
//! cluster hands each of its resumable sessions, attached or detached, to
//! another live instance before anything else of the shutdown runs, with
//! the move machinery a resume on another instance uses
//! (docs/notes17/cluster-resume.md): the same `CUT` script (the `moved`
//! table and the presence entry in one step), the same snapshot in a key
//! with a TTL, the same recording on the receiving side from its cut
//! marker. What differs:
//!
//! - **Nobody asked.** The leaving instance (A) starts the move itself: it
//!   agrees to hand each session to an instance chosen round-robin among the
//!   others that are alive and take sessions (their heartbeat key says so:
//!   [`alive_value`]), and queues its cut. The nonce of such a move
//!   starts with [`NONCE_PREFIX`], which tells the receiver (B), at the cut
//!   marker, to accept a session it did not ask for: it starts recording
//!   then, and puts the session in *detached* once its snapshot is here
//!   (its grace runs on B, and so does its close event if the client never
//!   comes back).
//! - **The client is told.** The socket of an attached session is closed
//!   with `1012` (`service restart`) instead of being dropped silently: the
//!   helpers resume at once (through the load balancer, to any instance).
//! - **A resume may overtake the hand-over.** A client told `1012` may
//!   reach B (or C) before B has put the session in. Its `take` is routed
//!   by the `moved` table, which the cut already pointed at B, so it reaches
//!   B after B's cut marker: B answers it once the session is in
//!   ([`Cluster::defer_take`]).
//!
//! Bounded: A waits at most [`DRAIN_WAIT`] for its sessions to leave (then
//! what is left ends as before, with a close event, `shutdown`), and for its
//! publisher to have written the hand-overs; B waits at most twice that for
//! a snapshot. No live other instance, or Redis unreachable: the shutdown
//! is as before. Single instance (no `--redis`): nothing of this runs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::handover::{MoveRefused, HANDOVER_WAIT};
use super::{moves, Cluster, Out, INSTANCES};
use crate::hub::session::{Snapshot, Token};
use crate::hub::wire::Move;
use crate::hub::Importer;
use crate::id::ConnId;
use crate::runtime;

/// The start of the nonce of a move its session's instance started itself
/// (it shuts down): the receiver accepts it unasked.
pub const NONCE_PREFIX: &str = "drain-";

/// How long a shutting-down instance waits for its sessions to leave.
pub const DRAIN_WAIT: Duration = HANDOVER_WAIT;

/// The live instances other than ARGV[1] that take sessions (their
/// heartbeat key exists and says so: [`alive_value`]); in the same step,
/// ARGV[1]'s own heartbeat stops saying so (it shuts down: `CUT` hands it
/// nothing from here on; of two instances shutting down at once, each sees
/// the other's). KEYS: instances. ARGV: me, the heartbeat's TTL.
const OTHERS: &str = "redis.call('SET', 'ws2http:alive:' .. ARGV[1], '1', 'EX', ARGV[2]) \
     local r = {} \
     for _, i in ipairs(redis.call('SMEMBERS', KEYS[1])) do \
       if i ~= ARGV[1] and redis.call('GET', 'ws2http:alive:' .. i) == '2' then r[#r + 1] = i end end \
     return r";

/// What an instance's heartbeat key holds: `2` when it takes sessions
/// (`--resume-grace` above 0, and not shutting down), `1` otherwise, so that
/// a shutting-down instance hands none to an instance that would lose them,
/// and no move pulls a session onto an instance that is shutting down.
pub fn alive_value(max_snapshot: usize, draining: bool) -> u8 {
    if max_snapshot > 0 && !draining {
        2
    } else {
        1
    }
}

/// `true` for the nonce of a move nobody asked for (see [`NONCE_PREFIX`]).
pub fn unasked(nonce: &str) -> bool {
    nonce.starts_with(NONCE_PREFIX)
}

/// Both sides' state of the hand-overs at shutdown.
#[derive(Default)]
pub struct Drain {
    /// How a session handed here is put in the hub (the WebSocket side's import).
    importer: OnceLock<Importer>,
    /// Sessions handed here, past their cut and not in the hub yet, by id:
    /// the receiver ends (closes) once it is in, or given up.
    pending: Mutex<HashMap<ConnId, async_channel::Receiver<()>>>,
    /// This instance shuts down: it takes no session ([`alive_value`]),
    /// and refuses resumes before their upgrade.
    draining: std::sync::atomic::AtomicBool,
    /// The `settle` of this id, published to itself, tells the shutdown
    /// that its subscriber saw everything Redis published here before.
    barrier: Mutex<Option<(ConnId, async_channel::Sender<()>)>>,
}

impl Drain {
    fn pending(&self) -> MutexGuard<'_, HashMap<ConnId, async_channel::Receiver<()>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets how sessions handed here are put in (once).
    pub fn set_importer(&self, import: Importer) {
        let _ = self.importer.set(import);
    }

    fn import(&self, snap: Snapshot) -> bool {
        self.importer.get().is_some_and(|import| import(snap))
    }
}

impl Cluster {
    /// A, at shutdown: hands every resumable session to another live
    /// instance; returns once they left (or [`DRAIN_WAIT`] passed) and the
    /// hand-overs are written. How many left. Sessions handed here by
    /// another instance shutting down meanwhile are handed on, within the
    /// same deadline.
    pub(super) async fn hand_off(&self) -> usize {
        let started = Instant::now();
        self.drain.draining.store(true, Ordering::SeqCst);
        log::info!("shutdown: this instance takes no more sessions (a resume here gets 503)");
        if self.max_snapshot == 0 || !self.connected.load(Ordering::SeqCst) {
            return 0;
        }
        let ids = self.sessions_here(&HashSet::new());
        let others = runtime::timeout(DRAIN_WAIT, self.live_others()).await;
        // A cut into here that Redis ran before that step (another instance
        // shutting down at once) has its marker seen here now: it is pending.
        let deadline = started + DRAIN_WAIT;
        let _ = runtime::timeout(DRAIN_WAIT, self.barrier()).await;
        let others = match others {
            Ok(Ok(others)) if !others.is_empty() => others,
            Ok(Ok(_)) => {
                log::info!("shutdown: no other live instance with sessions on; {} session(s) end here", ids.len());
                // Those handed here meanwhile end here too, once in (close event once).
                while Instant::now() < deadline && !self.drain.pending().is_empty() {
                    runtime::sleep(Duration::from_millis(20)).await;
                }
                return 0;
            }
            Ok(Err(e)) => {
                log::warn!("shutdown: Redis is unreachable ({e}); {} session(s) end here", ids.len());
                return 0;
            }
            Err(_) => return 0,
        };
        let (mut tried, mut moving) = (HashSet::new(), Vec::new());
        loop {
            let ids = self.sessions_here(&tried);
            if ids.is_empty() && self.drain.pending().is_empty() {
                break;
            }
            self.start_hand_offs(ids, &others, &mut tried, &mut moving);
            while Instant::now() < deadline
                && (moving.iter().any(|id| self.still_leaving(id)) || !self.drain.pending().is_empty())
            {
                runtime::sleep(Duration::from_millis(20)).await;
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        if moving.is_empty() {
            return 0;
        }
        // What the publisher still holds for them (their hand-overs) is in
        // Redis before this instance goes.
        let (done, written) = async_channel::bounded(1);
        let _ = self.queue.try_send(Out::Flush(done));
        let _ =
            runtime::timeout(deadline.saturating_duration_since(Instant::now()) + HANDOVER_WAIT, written.recv()).await;
        let left = moving.iter().filter(|id| !self.hub.is_known(id)).count();
        if left < moving.len() {
            log::warn!("shutdown: {} session(s) could not be handed over; they end here", moving.len() - left);
        }
        left
    }

    /// The resumable sessions here, but those in `tried`.
    fn sessions_here(&self, tried: &HashSet<ConnId>) -> Vec<ConnId> {
        let ids = self.hub.list(None, None).into_iter().filter_map(|v| ConnId::parse(&v.id));
        ids.filter(|id| !tried.contains(id) && self.is_session(id)).collect()
    }

    /// Starts handing `ids` over, round-robin over `others`.
    fn start_hand_offs(
        &self,
        ids: Vec<ConnId>,
        others: &[String],
        tried: &mut HashSet<ConnId>,
        moving: &mut Vec<ConnId>,
    ) {
        let n = ids.len();
        for id in ids {
            tried.insert(id.clone());
            let to = &others[moving.len() % others.len()];
            let nonce = format!("{NONCE_PREFIX}{}", ConnId::random().as_str());
            let Some(shared) = self.hub.shared_of(&id) else { continue };
            let Some(session) = shared.session.as_deref() else { continue };
            // Already moving (its client resumed elsewhere), or a resume here
            // is being attached: that goes on (or it ends here, as before).
            let token = session.lock().token.clone();
            match self.move_out(session, &token, &id, to, &nonce, true) {
                Ok(()) => moving.push(id),
                Err(why) => log::info!("[{id}] shutdown: not handed over ({why}); it ends here"),
            }
        }
        log::info!("shutdown: handing {n} session(s) to {} other instance(s)", others.len());
    }

    /// `true` when `id` is a resumable session that has not ended.
    fn is_session(&self, id: &ConnId) -> bool {
        self.hub.with_session(id, |s| !s.lock().ended).unwrap_or(false)
    }

    /// `true` while `id` is on its way out: still here, its cut queued or passed.
    fn still_leaving(&self, id: &ConnId) -> bool {
        self.hub.is_known(id) && (self.departures.is_handing(id) || self.departures.is_away(id))
    }

    /// Returns once this instance's subscriber saw a marker it published
    /// to itself now (at once when Redis cannot be reached).
    async fn barrier(&self) {
        let probe = ConnId::random();
        let (tx, rx) = async_channel::bounded(1);
        *self.drain.barrier.lock().unwrap_or_else(|e| e.into_inner()) = Some((probe.clone(), tx));
        let payload = crate::hub::wire::encode_move(&self.instance, &Move::Settle { id: probe });
        let sent: redis::RedisResult<i64> = async {
            let mut con = self.connection().await?;
            redis::AsyncCommands::publish(&mut con, super::to_channel(&self.instance), payload).await
        }
        .await;
        if sent.is_ok() {
            let _ = rx.recv().await;
        }
    }

    /// `true` when the `settle` of `id` is [`Cluster::barrier`]'s (it returns now).
    pub(super) fn barrier_passed(&self, id: &ConnId) -> bool {
        let mut barrier = self.drain.barrier.lock().unwrap_or_else(|e| e.into_inner());
        if barrier.as_ref().is_none_or(|(probe, _)| probe != id) {
            return false;
        }
        barrier.take().is_some_and(|(_, done)| done.try_send(()).is_ok())
    }

    /// The live instances but this one.
    async fn live_others(&self) -> redis::RedisResult<Vec<String>> {
        let mut con = self.connection().await?;
        let ttl = super::DEAD_AFTER.as_secs().to_string();
        let result = moves::eval(OTHERS, &[INSTANCES], &[&self.instance, &ttl]).query_async(&mut con).await;
        if result.is_err() {
            self.forget_connection();
        }
        result
    }

    /// B, at the cut marker of a move nobody here asked for: records from
    /// now on, and puts the session in, detached, once its snapshot is here.
    pub(super) fn adopt(self: &Arc<Self>, id: &ConnId, nonce: &str) {
        let done = self.arrivals.start(nonce);
        let (gate, wait) = async_channel::bounded::<()>(1);
        self.drain.pending().insert(id.clone(), wait);
        let (me, id, nonce) = (self.clone(), id.clone(), nonce.to_owned());
        runtime::spawn(async move {
            match runtime::timeout(2 * DRAIN_WAIT, done.recv()).await {
                Ok(Ok(Ok(snap))) => me.put_in_handed(&id, &nonce, snap),
                Ok(Ok(Err(why))) => log::info!("[{id}] the hand-over of this session was abandoned: {why}"),
                _ => {
                    log::warn!("[{id}] its instance shut down and did not hand this session over in time");
                    me.abandon_incoming(&nonce, MoveRefused::Timeout, Some(&id));
                }
            }
            me.drain.pending().remove(&id);
            drop(gate);
        });
    }

    /// B: puts a handed-over session in (what was recorded since its cut
    /// applied after it); when it cannot be, its side of the cut is undone.
    fn put_in_handed(&self, id: &ConnId, nonce: &str, snap: Snapshot) {
        if self.put_in_moved(nonce, snap, |s| self.drain.import(s)) {
            log::info!("[{id}] session handed over by its instance, which shuts down; it waits here for its client");
            return;
        }
        log::warn!("[{id}] session handed over by its instance lost without its close event: it could not be put in");
        self.undo(nonce, Some(id));
    }

    /// A `take` for a session handed here and not in yet is answered once
    /// it is (or given up): `None` when deferred, else the step to handle now.
    pub(super) fn defer_take(self: &Arc<Self>, step: Move) -> Option<Move> {
        let Move::Take { token, .. } = &step else { return Some(step) };
        let Some(id) = Token::parse(token).map(|t| t.conn().clone()) else { return Some(step) };
        let Some(wait) = self.drain.pending().get(&id).cloned() else { return Some(step) };
        log::info!("[{id}] a resume waits for this session: its instance is handing it here");
        let me = self.clone();
        runtime::spawn(async move {
            // Closed (never sent on) once the session is in, or given up.
            let _ = wait.recv().await;
            me.on_move(step).await;
        });
        None
    }

    /// What this instance's heartbeat key holds ([`alive_value`]).
    pub(super) fn alive_value(&self) -> u8 {
        alive_value(self.max_snapshot, self.is_draining())
    }

    /// `true` once this instance started shutting down ([`Cluster::hand_off`]).
    pub(super) fn is_draining(&self) -> bool {
        self.drain.draining.load(Ordering::SeqCst)
    }

    /// Sets how sessions handed here are put in.
    pub(super) fn set_importer(&self, import: Importer) {
        self.drain.set_importer(import);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_instance_takes_sessions_only_with_sessions_on_and_while_not_shutting_down() {
        assert_eq!(super::alive_value(1000, false), 2);
        assert_eq!(super::alive_value(0, false), 1);
        assert_eq!(super::alive_value(1000, true), 1, "shutting down: no session moves here");
    }
}
