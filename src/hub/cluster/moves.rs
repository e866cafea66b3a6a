//! The cluster's side of moving a session (issue 17), as steps of its
//! publisher and subscriber: B asks ([`Cluster::bring`]), A cuts and hands
//! over ([`Cluster::on_move`]), B puts the session in and applies what it
//! recorded since the cut. The scripts and the bookkeeping are in
//! [`super::handover`]; the design in docs/notes17/cluster-resume.md.

use std::sync::atomic::Ordering;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use std::sync::Arc;

use super::handover::{self, MoveRefused, HANDOVER_WAIT, MOVED};
use super::{conns_key, to_channel, Cluster, Out};
use crate::hub::session::{Snapshot, Token};
use crate::hub::wire::{encode_move, Move};
use crate::id::ConnId;
use crate::runtime;

/// A Redis error, and how many cross-instance actions it lost.
type WriteError = (redis::RedisError, u64);

/// `EVAL script` with its keys and arguments.
pub(super) fn eval(script: &str, keys: &[&str], args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
    cmd
}

impl Cluster {
    /// Brings the session `token` opens here from the instance holding it,
    /// and puts it in with `put_in` (the resume's, `false` when it could
    /// not); refused when no instance hands it over (the client gets 4410).
    /// `endpoint`: the resume's; a session of another endpoint stays where it is.
    pub async fn bring(
        &self,
        token: &str,
        endpoint: &str,
        put_in: &(dyn Fn(Snapshot) -> bool + Sync),
    ) -> Result<(), MoveRefused> {
        if self.max_snapshot == 0 {
            return Err(MoveRefused::Unknown("sessions are off here".into()));
        }
        if !self.connected.load(Ordering::SeqCst) {
            return Err(MoveRefused::Unreachable);
        }
        let Some(parsed) = Token::parse(token) else {
            return Err(MoveRefused::Unknown("not a token".into()));
        };
        let nonce = ConnId::random().as_str().to_owned();
        let done = self.arrivals.start(&nonce);
        let (token, to, endpoint) = (token.to_owned(), self.instance.clone(), endpoint.to_owned());
        let take = Move::Take { token, nonce: nonce.clone(), to, endpoint };
        // To the instance holding the connection the token names (the
        // `moved` table, else its id's instance): it answers yes or no; when
        // nobody listens there, the publisher refuses at once.
        let payload = encode_move(&self.instance, &take);
        let _ = self.queue.try_send(Out::Ask { id: parsed.conn().clone(), nonce: nonce.clone(), payload });
        let result = match runtime::timeout(HANDOVER_WAIT, done.recv()).await {
            Ok(Ok(result)) => result,
            // It may have arrived just now.
            _ => done.try_recv().map_err(|_| self.give_up(&nonce, parsed.conn()))?,
        };
        // In the same step as the snapshot's receipt: nothing can drop this
        // future between the two and leave the session nowhere.
        let snap = match result {
            Ok(snap) => snap,
            // Handed here meanwhile by its instance, which shuts down (`drain`).
            Err(_) if self.hub.sessions.find(&parsed).is_some() => return Ok(()),
            Err(why) => return Err(why),
        };
        match self.put_in_moved(&nonce, snap, put_in) {
            true => Ok(()),
            false => Err(MoveRefused::Broken("this instance could not take it".into())),
        }
    }

    /// B: puts the session of move `nonce` in with `put_in` (`false` when
    /// it could not), what was recorded for it since its cut applied after
    /// it. This instance's own actions for it take Redis's order until what
    /// it sent before is through ([`super::own`]): set before it is in the
    /// hub, while the subscription applies nothing, so that an echo that is
    /// not recorded for it is applied to it.
    pub(super) fn put_in_moved(&self, nonce: &str, snap: Snapshot, put_in: impl FnOnce(Snapshot) -> bool) -> bool {
        let id = snap.id.clone();
        let _turning = self.own.turning();
        self.own.route(&id);
        self.own.echo(&id);
        if self.arrivals.put_in(nonce, &self.hub, || put_in(snap)) {
            self.departures.forget(&id);
            self.send_settle(&id);
            true
        } else {
            self.own.forget(&id);
            false
        }
    }

    /// B stops waiting for move `nonce` of `id`: its holder did not answer
    /// (stalled, or Redis lost the request); its side of the cut is undone
    /// (even unseen: its subscription may have missed the marker).
    fn give_up(&self, nonce: &str, id: &ConnId) -> MoveRefused {
        self.abandon_incoming(nonce, MoveRefused::Timeout, Some(id));
        MoveRefused::Timeout
    }

    /// A step of a move, from the subscription (in Redis's order). A's
    /// side of the cut is made here, at once (nothing that follows it in
    /// Redis's order may reach the session on this instance); its snapshot
    /// is awaited elsewhere: the subscription never waits for a session.
    pub(super) async fn on_move(self: &Arc<Self>, step: Move) {
        // A `take` for a session handed here at its instance's shutdown waits until it is in.
        let Some(step) = self.defer_take(step) else { return };
        match step {
            Move::Take { token, nonce, to, endpoint } if to != self.instance => {
                self.asked(&token, &endpoint, nonce, to)
            }
            // Routed back here: this instance holds its connection, and its
            // resume found no session with this token here.
            Move::Take { nonce, .. } => {
                self.arrivals.end(&nonce, MoveRefused::Unknown("no such session".into()));
            }
            Move::Cut { id, nonce, to } if to == self.instance => {
                if super::drain::unasked(&nonce) {
                    self.adopt(&id, &nonce);
                }
                // B: from here on, record (unless the resume gave up: its
                // side is undone already, and a late hand-over ends here).
                if self.arrivals.cut(&id, &nonce) {
                    self.cuts.lock().unwrap_or_else(|e| e.into_inner()).insert(nonce, id);
                }
            }
            Move::Cut { id, .. } => self.hand_over(id),
            Move::Handover { id, nonce, key } => {
                let me = self.clone();
                runtime::spawn(async move { me.arrive(id, nonce, key).await });
            }
            Move::Refuse { id, nonce, why } => {
                log::info!("[{id}] resume here refused by its instance: {why}");
                self.abandon_incoming(&nonce, MoveRefused::Unknown(why), None);
            }
            Move::Gone { id } => self.departures.forget(&id),
            Move::Settle { .. } => {}
            // Its previous instance has run the events it had queued.
            Move::Ran { id } => self.arrivals.ran(&self.hub, &id),
        }
    }

    /// A: instance `to` asks for the session of `token` (Redis routed the
    /// request here: this instance holds the connection it names, if any
    /// does); refused when no session here has this token.
    /// A session moves only when no resume here got to it first
    /// ([`crate::hub::session::Session::begin_move`]): of two resumes of
    /// one session at once on two instances, exactly one wins.
    fn asked(&self, token: &str, endpoint: &str, nonce: String, to: String) {
        let Some(token) = Token::parse(token) else { return };
        let found = self.hub.sessions.find(&token);
        let Some((info, session)) = found.as_ref().and_then(|(i, s)| Some((i, s.session.as_deref()?))) else {
            let id = token.conn().clone();
            self.tell(&to, &Move::Refuse { id, nonce, why: "no such session".into() });
            return;
        };
        let id = info.id.clone();
        // As a resume on another endpoint here (4400): the session stays,
        // untouched (the resuming instance may not even serve its endpoint).
        let other = !endpoint.is_empty() && info.target.endpoint() != endpoint;
        let begun = match other {
            true => Err("a session of another endpoint"),
            false => self.move_out(session, &token, &id, &to, &nonce, false),
        };
        if let Err(why) = begun {
            log::info!("[{id}] resume on instance {to} refused: {why}");
            self.tell(&to, &Move::Refuse { id, nonce, why: why.into() });
        }
    }

    /// A: agrees to move `id` to instance `to` (move `nonce`) and queues its
    /// cut; with the cut queued, this instance's own actions for it go after
    /// the cut in Redis's order ([`super::own`]). The refusal's reason when
    /// it is already moving or the cut cannot be queued.
    pub(super) fn start_cut(&self, id: &ConnId, to: &str, nonce: &str) -> Result<(), &'static str> {
        let turning = self.own.turning();
        if !self.departures.agree(id, to, nonce) {
            return Err("the session is already moving");
        }
        self.own.depart(id);
        let cut = Out::Cut { id: id.clone(), to: to.to_owned(), nonce: nonce.to_owned() };
        if self.queue.try_send(cut).is_err() {
            // Nothing was routed for it meanwhile (this holds `turning`):
            // back to local delivery at once.
            self.own.forget(id);
            drop(turning);
            self.abandon_cut(id);
            return Err("its queue to Redis is full");
        }
        Ok(())
    }

    /// A: the cut of `id` passed: everything before it was applied here;
    /// from now on nothing reaches the session here (it is out of
    /// delivery at once), and its snapshot goes to B as soon as its socket
    /// is let go, without waiting for the events it had queued: they still
    /// run here, and their actions on it are routed to B.
    fn hand_over(self: &Arc<Self>, id: ConnId) {
        let Some((to, nonce)) = self.departures.cut(&id) else { return };
        let shared = self.hub.shared_of(&id);
        let snapshot = {
            let _turning = self.own.turning();
            self.own.forget(&id);
            self.departures.moved_away(&id);
            crate::hub::session::export_begin(&self.hub, &id)
        };
        let Some(snapshot) = snapshot else {
            self.departures.forget(&id);
            self.tell(&to, &Move::Refuse { id, nonce, why: "it ended".into() });
            return;
        };
        let me = self.clone();
        runtime::spawn(async move {
            let Ok(mut snapshot) = snapshot.recv().await else {
                // Its connection's task ended first (it cannot: logged if so).
                log::warn!("[{id}] session lost during its move: no snapshot");
                return me.tell(&to, &Move::Refuse { id, nonce, why: "it ended".into() });
            };
            // Whether B's events for it wait for those still queued here.
            snapshot.events_pending =
                shared.as_deref().and_then(|s| s.session.as_deref()).is_some_and(|s| s.events_pending(&to));
            log::info!("[{id}] session moves to instance {to}");
            let snapshot = serde_json::to_string(&snapshot).unwrap_or_default();
            let _ = me.queue.try_send(Out::Handover { id, to, nonce, snapshot });
        });
    }

    /// B: reads the snapshot and hands it to the resume, with what was
    /// recorded for it since the cut.
    async fn arrive(&self, id: ConnId, nonce: String, key: String) {
        let cut = self.cuts.lock().unwrap_or_else(|e| e.into_inner()).remove(&nonce);
        let snapshot = self.read_snapshot(&key).await.and_then(|s| {
            let snap: Snapshot = serde_json::from_str(&s).map_err(|e| format!("malformed snapshot: {e}"))?;
            (snap.id == id).then_some(snap).ok_or_else(|| "the snapshot of another session".to_owned())
        });
        let snap = match snapshot {
            Ok(s) => s,
            Err(why) => {
                log::warn!("[{id}] session from another instance lost: {why}");
                return self.abandon_incoming(&nonce, MoveRefused::Broken(why), cut.as_ref());
            }
        };
        if let Err(snap) = self.arrivals.arrive(&nonce, snap) {
            // The resume gave up (4410): its client starts over. The session
            // is here, and nowhere else: it ends here (its close event runs).
            log::warn!("[{id}] session arrived after its resume gave up; it ends here (resume-expired)");
            let _ = self.orphans.0.try_send(*snap);
            return;
        }
        log::info!("[{id}] session arrived from another instance");
    }

    /// The snapshot in `key`, removed from Redis.
    async fn read_snapshot(&self, key: &str) -> Result<String, String> {
        let mut con = self.connection().await.map_err(|e| e.to_string())?;
        let mut p = redis::pipe();
        p.atomic().get(key).del(key).ignore();
        let (snapshot,): (Option<String>,) = p.query_async(&mut con).await.map_err(|e| {
            self.forget_connection();
            e.to_string()
        })?;
        // No bound on its length here: it is in memory already, and what it
        // keeps is judged by this instance's bounds once parsed (over them,
        // it ends here as an overflow: `Snapshot::take_overflow`). JSON makes
        // text longer by up to 6 times (`\u0001`), so no length fits them all.
        snapshot.ok_or_else(|| "its snapshot expired in Redis".to_owned())
    }

    /// Publishes a step of a move to instance `to`.
    fn tell(&self, to: &str, step: &Move) {
        let payload = encode_move(&self.instance, step);
        let _ = self.queue.try_send(Out::Tell { channel: to_channel(to), payload });
    }

    /// Writes one queued item to Redis.
    pub(super) async fn write_out(
        &self,
        con: &mut MultiplexedConnection,
        item: Out,
        unheard: &mut u64,
    ) -> Result<(), WriteError> {
        let me = self.instance.as_str();
        let lost = |n| move |e| (e, n);
        match item {
            Out::Publish { channel, payload } => {
                con.publish::<_, _, i64>(channel, payload).await.map_err(lost(1))?;
            }
            Out::Tell { channel, payload } => {
                con.publish::<_, _, i64>(channel, payload).await.map_err(lost(0))?;
            }
            Out::Route { id, payload } => {
                let prefix = id.instance().unwrap_or(me);
                let cmd = eval(handover::ROUTE, &[MOVED], &[id.as_str(), prefix, &payload]);
                let n: i64 = cmd.query_async(con).await.map_err(lost(1))?;
                if n == 0 {
                    *unheard += 1;
                }
            }
            Out::Ask { id, nonce, payload } => {
                let prefix = id.instance().unwrap_or(me);
                let cmd = eval(handover::ROUTE, &[MOVED], &[id.as_str(), prefix, &payload]);
                let n: i64 = cmd.query_async(con).await.map_err(lost(0))?;
                if n == 0 {
                    log::info!("[{id}] resume here refused: the instance holding it is gone");
                    self.arrivals.end(&nonce, MoveRefused::Unknown("its instance is gone".into()));
                }
            }
            Out::Presence((id, None)) => {
                // It left the hub: nothing of this instance's is moving for it.
                let turning = self.own.turning();
                self.own.forget(&id);
                drop(turning);
                self.write_presence(con, (id, None)).await.map_err(lost(0))?
            }
            Out::Presence(change) => self.write_presence(con, change).await.map_err(lost(0))?,
            // An error: unsure whether it passed; decided later from Redis
            // (`check_cuts`), the session routed meanwhile.
            Out::Cut { id, to, nonce } => self.cut(con, id, to, nonce).await.map_err(lost(0))?,
            Out::Handover { id, to, nonce, snapshot } => {
                if let Err(e) = self.send_snapshot(con, &id, &to, &nonce, &snapshot).await {
                    // B gives up (4410): the session ends here, its close event runs.
                    self.handover_lost(&id, &snapshot, &e.to_string());
                    return Err((e, 0));
                }
            }
            Out::Flush(done) => {
                let _ = done.try_send(());
            }
            Out::Undo(nonce) => {
                let Some(id) = self.cuts.lock().unwrap_or_else(|e| e.into_inner()).remove(&nonce) else {
                    return Ok(());
                };
                let keys = [MOVED, &conns_key(me), &handover::hosted_key(me)];
                eval(handover::UNDO, &keys, &[id.as_str(), me]).query_async::<i64>(con).await.map_err(lost(0))?;
            }
        }
        Ok(())
    }

    /// A presence change, written only while this instance holds the
    /// connection; an end also ends a move into here.
    async fn write_presence(
        &self,
        con: &mut MultiplexedConnection,
        (id, view): crate::hub::local::PresenceChange,
    ) -> redis::RedisResult<()> {
        let me = self.instance.as_str();
        let prefix = id.instance().unwrap_or(me);
        let conns = conns_key(me);
        let cmd = match view {
            Some(view) => {
                let json = serde_json::to_string(&view).unwrap_or_default();
                eval(handover::PRESENCE, &[MOVED, &conns], &[id.as_str(), prefix, me, &json])
            }
            None => {
                let gone = encode_move(me, &Move::Gone { id: id.clone() });
                let keys = [MOVED, &conns, &handover::hosted_key(me)];
                eval(handover::ENDED, &keys, &[id.as_str(), prefix, me, &gone])
            }
        };
        cmd.query_async::<i64>(con).await.map(drop)
    }

    /// A: the cut (see [`handover::CUT`]); when it cannot be made, B is told.
    async fn cut(
        &self,
        con: &mut MultiplexedConnection,
        id: ConnId,
        to: String,
        nonce: String,
    ) -> redis::RedisResult<()> {
        let me = self.instance.as_str();
        let marker = encode_move(me, &Move::Cut { id: id.clone(), nonce: nonce.clone(), to: to.clone() });
        let (hosted_a, hosted_b) = (handover::hosted_key(me), handover::hosted_key(&to));
        let keys = [MOVED, &conns_key(me), &conns_key(&to), &hosted_a, &hosted_b, &super::alive_key(&to)];
        let args = [id.as_str(), me, &to, id.instance().unwrap_or(me), &marker];
        self.departures.sent(&id);
        let done: i64 = eval(handover::CUT, &keys, &args).query_async(con).await?;
        if done != 1 {
            let why = if done == 0 { "not held here any more" } else { "the resuming instance is gone or shuts down" };
            // To this instance too, in Redis's order ([`super::own`]).
            self.refuse_cut(con, &id, &to, nonce, why).await?;
        }
        Ok(())
    }

    /// A: the snapshot into its key, then the `handover` to B (one transaction).
    async fn send_snapshot(
        &self,
        con: &mut MultiplexedConnection,
        id: &ConnId,
        to: &str,
        nonce: &str,
        snapshot: &str,
    ) -> redis::RedisResult<()> {
        let key = handover::snapshot_key(nonce);
        let step = Move::Handover { id: id.clone(), nonce: nonce.to_owned(), key: key.clone() };
        let mut p = redis::pipe();
        p.atomic().cmd("SET").arg(&key).arg(snapshot).arg("PX").arg(handover::SNAPSHOT_TTL_MS).ignore();
        p.publish(to_channel(to), encode_move(&self.instance, &step)).ignore();
        p.query_async::<()>(con).await
    }
}
