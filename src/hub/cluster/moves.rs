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
    pub async fn bring(&self, token: &str, put_in: &(dyn Fn(Snapshot) -> bool + Sync)) -> Result<(), MoveRefused> {
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
        let take = Move::Take { token: token.to_owned(), nonce: nonce.clone(), to: self.instance.clone() };
        // To the instance holding the connection the token names (the
        // `moved` table, else its id's instance): it answers yes or no; when
        // nobody listens there, the publisher refuses at once.
        let payload = encode_move(&self.instance, &take);
        let _ = self.queue.try_send(Out::Ask { id: parsed.conn().clone(), nonce: nonce.clone(), payload });
        let result = match runtime::timeout(HANDOVER_WAIT, done.recv()).await {
            Ok(Ok(result)) => result,
            // It may have arrived just now.
            _ => done.try_recv().map_err(|_| self.give_up(nonce.clone()))?,
        };
        // In the same step as the snapshot's receipt: nothing can drop this
        // future between the two and leave the session nowhere.
        let snap = match result {
            Ok(snap) => snap,
            // Handed here meanwhile by its instance, which shuts down (`drain`).
            Err(_) if self.hub.sessions.find(&parsed).is_some() => return Ok(()),
            Err(why) => return Err(why),
        };
        match self.arrivals.put_in(&nonce, &self.hub, || put_in(snap)) {
            true => Ok(()),
            false => Err(MoveRefused::Broken("this instance could not take it".into())),
        }
    }

    /// B stops waiting for move `nonce`: its holder did not answer
    /// (stalled, or Redis lost the request); after the cut, it is undone.
    fn give_up(&self, nonce: String) -> MoveRefused {
        if self.arrivals.end(&nonce, MoveRefused::Timeout) == Some(true) {
            let _ = self.queue.try_send(Out::Undo(nonce));
        }
        MoveRefused::Timeout
    }

    /// A step of a move, from the subscription (in Redis's order). A's
    /// hand-over is awaited here: nothing that follows the cut in Redis's
    /// order may reach the session on this instance.
    pub(super) async fn on_move(self: &Arc<Self>, step: Move) {
        // A `take` for a session handed here at its instance's shutdown waits until it is in.
        let Some(step) = self.defer_take(step) else { return };
        match step {
            Move::Take { token, nonce, to } if to != self.instance => self.asked(&token, nonce, to),
            // Routed back here: this instance holds its connection, and its
            // resume found no session with this token here.
            Move::Take { nonce, .. } => {
                self.arrivals.end(&nonce, MoveRefused::Unknown("no such session".into()));
            }
            Move::Cut { id, nonce, to } if to == self.instance => {
                if super::drain::unasked(&nonce) {
                    self.adopt(&id, &nonce);
                }
                // B: from here on, record (unless the resume gave up).
                self.arrivals.cut(&id, &nonce);
                self.cuts.lock().unwrap_or_else(|e| e.into_inner()).insert(nonce, id);
            }
            Move::Cut { id, .. } => self.hand_over(id).await,
            Move::Handover { id, nonce, key } => {
                let me = self.clone();
                runtime::spawn(async move { me.arrive(id, nonce, key).await });
            }
            Move::Refuse { id, nonce, why } => {
                log::info!("[{id}] resume here refused by its instance: {why}");
                if self.arrivals.end(&nonce, MoveRefused::Unknown(why)) == Some(true) {
                    let _ = self.queue.try_send(Out::Undo(nonce));
                }
            }
            Move::Gone { id } => self.departures.forget(&id),
        }
    }

    /// A: instance `to` asks for the session of `token` (Redis routed the
    /// request here: this instance holds the connection it names, if any
    /// does); refused when no session here has this token.
    fn asked(&self, token: &str, nonce: String, to: String) {
        let Some(token) = Token::parse(token) else { return };
        let Some((info, _)) = self.hub.sessions.find(&token) else {
            let id = token.conn().clone();
            self.tell(&to, &Move::Refuse { id, nonce, why: "no such session".into() });
            return;
        };
        let id = info.id.clone();
        if !self.departures.agree(&id, &to, &nonce) {
            log::info!("[{id}] resume on instance {to} refused: the session is already moving");
            self.tell(&to, &Move::Refuse { id, nonce, why: "already moving".into() });
            return;
        }
        let _ = self.queue.try_send(Out::Cut { id, to, nonce });
    }

    /// A: the cut of `id` passed: everything before it was applied here;
    /// the session leaves (no close event) and its snapshot goes to B.
    async fn hand_over(&self, id: ConnId) {
        let Some((to, nonce)) = self.departures.cut(&id) else { return };
        // Away before it leaves: an action on it in between still finds it here.
        self.departures.moved_away(&id);
        match crate::hub::session::export(&self.hub, &id).await {
            Some(snapshot) => {
                log::info!("[{id}] session moves to instance {to}");
                let snapshot = serde_json::to_string(&snapshot).unwrap_or_default();
                let _ = self.queue.try_send(Out::Handover { id, to, nonce, snapshot });
            }
            None => {
                self.departures.forget(&id);
                self.tell(&to, &Move::Refuse { id, nonce, why: "it ended".into() });
            }
        }
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
                if self.arrivals.end(&nonce, MoveRefused::Broken(why)) == Some(true) {
                    if let Some(id) = cut {
                        self.cuts.lock().unwrap_or_else(|e| e.into_inner()).insert(nonce.clone(), id);
                    }
                    let _ = self.queue.try_send(Out::Undo(nonce));
                }
                return;
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

    /// The snapshot in `key`, removed from Redis; refused over its bound.
    async fn read_snapshot(&self, key: &str) -> Result<String, String> {
        let mut con = self.connection().await.map_err(|e| e.to_string())?;
        let mut p = redis::pipe();
        p.atomic().get(key).del(key).ignore();
        let (snapshot,): (Option<String>,) = p.query_async(&mut con).await.map_err(|e| {
            self.forget_connection();
            e.to_string()
        })?;
        let snapshot = snapshot.ok_or("its snapshot expired in Redis")?;
        if snapshot.len() > self.max_snapshot {
            return Err(format!("snapshot of {} bytes, over {} bytes", snapshot.len(), self.max_snapshot));
        }
        Ok(snapshot)
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
            Out::Presence(change) => self.write_presence(con, change).await.map_err(lost(0))?,
            Out::Cut { id, to, nonce } => self.cut(con, id, to, nonce).await.map_err(lost(0))?,
            Out::Handover { id, to, nonce, snapshot } => {
                if let Err(e) = self.send_snapshot(con, &id, &to, &nonce, &snapshot).await {
                    // B gives up (4410): the session ends here, its close event runs.
                    log::warn!("[{id}] could not hand the session over ({e}); it ends here (resume-expired)");
                    self.departures.forget(&id);
                    if let Ok(snap) = serde_json::from_str::<Snapshot>(&snapshot) {
                        let _ = self.orphans.0.try_send(snap);
                    }
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
        let done: i64 = eval(handover::CUT, &keys, &args).query_async(con).await?;
        if done != 1 {
            self.departures.cut(&id);
            let why = if done == 0 { "not held here any more" } else { "the resuming instance is gone" };
            log::info!("[{id}] resume on instance {to} refused: {why}");
            let refuse = encode_move(me, &Move::Refuse { id, nonce, why: why.into() });
            con.publish::<_, _, i64>(to_channel(&to), refuse).await?;
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
