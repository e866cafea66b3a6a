//! The cluster's side of moving a session (issue 17), as steps of its
//! publisher and subscriber: B asks ([`Cluster::bring`]), A cuts and hands
//! over ([`Cluster::on_move`]), B puts the session in and applies what it
//! recorded since the cut. The scripts and the bookkeeping are in
//! [`super::handover`]; the design in docs/notes17/cluster-resume.md.

use std::sync::atomic::Ordering;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use super::handover::{self, MoveRefused, HANDOVER_WAIT, MOVED};
use super::{conns_key, to_channel, Cluster, Out};
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
    /// Brings the session `token` names here from the instance holding it:
    /// `Ok` once it is in this instance's hub (detached), for the resume to
    /// attach to; refused when it cannot be brought (the client gets 4410).
    pub async fn bring(&self, token: &str) -> Result<(), MoveRefused> {
        let unknown = || MoveRefused::Unknown("not a session token".into());
        let id = self.sessions.id_of_token(token).ok_or_else(unknown)?;
        if self.hub.is_known(&id) {
            return Ok(());
        }
        if id.instance().is_none() {
            return Err(unknown());
        }
        if !self.connected.load(Ordering::SeqCst) {
            return Err(MoveRefused::Unreachable);
        }
        let nonce = ConnId::random().as_str().to_owned();
        let done = self.arrivals.start(&id, &nonce).ok_or(MoveRefused::Busy)?;
        let take =
            Move::Take { id: id.clone(), token: token.to_owned(), nonce: nonce.clone(), to: self.instance.clone() };
        let payload = encode_move(&self.instance, &take);
        let _ = self.queue.try_send(Out::Route { id: id.clone(), payload, take: Some(nonce.clone()) });
        if let Ok(Ok(result)) = runtime::timeout(HANDOVER_WAIT, done.recv()).await {
            return result;
        }
        // It may have arrived just now.
        if let Ok(result) = done.try_recv() {
            return result;
        }
        if self.arrivals.end(&id, &nonce, Err(MoveRefused::Timeout)) == Some(true) {
            let _ = self.queue.try_send(Out::Undo(id));
        }
        Err(MoveRefused::Timeout)
    }

    /// A step of a move, from the subscription (in Redis's order).
    pub(super) fn on_move(self: &std::sync::Arc<Self>, step: Move) {
        match step {
            Move::Take { id, token, nonce, to } => self.asked(id, &token, nonce, to),
            Move::Cut { id, nonce, to } if to == self.instance => {
                // B: from here on, record. A move that gave up gets its
                // snapshot anyway (put in, detached).
                self.arrivals.cut(&id, &nonce);
            }
            Move::Cut { id, .. } => self.hand_over(id),
            Move::Handover { id, nonce, key } => {
                let me = self.clone();
                runtime::spawn(async move { me.arrive(id, nonce, key).await });
            }
            Move::Refuse { id, nonce, why } => {
                if self.arrivals.end(&id, &nonce, Err(MoveRefused::Unknown(why))) == Some(true) {
                    let _ = self.queue.try_send(Out::Undo(id));
                }
            }
            Move::Gone { id } => self.departures.forget(&id),
        }
    }

    /// A: instance `to` asks for session `id`.
    fn asked(&self, id: ConnId, token: &str, nonce: String, to: String) {
        let why = if !self.hub.is_known(&id) || !self.sessions.holds(&id, token) {
            "unknown session"
        } else if !self.departures.agree(&id, &to, &nonce) {
            "already moving"
        } else {
            let _ = self.queue.try_send(Out::Cut { id, to, nonce });
            return;
        };
        log::info!("[{id}] resume on instance {to} refused: {why}");
        self.tell(&to, &Move::Refuse { id, nonce, why: why.into() });
    }

    /// A: the cut of `id` passed: everything before it was applied here;
    /// the session leaves (no close event) and its snapshot goes to B.
    fn hand_over(&self, id: ConnId) {
        let Some((to, nonce)) = self.departures.cut(&id) else { return };
        // Away before it leaves: an action on it in between still finds it here.
        self.departures.moved_away(&id);
        match self.sessions.take(&id) {
            Some(snapshot) => {
                log::info!("[{id}] session moves to instance {to}");
                let _ = self.queue.try_send(Out::Handover { id, to, nonce, snapshot });
            }
            None => {
                self.departures.forget(&id);
                self.tell(&to, &Move::Refuse { id, nonce, why: "it ended".into() });
            }
        }
    }

    /// B: reads the snapshot, puts the session in and applies what was
    /// recorded for it since the cut.
    async fn arrive(&self, id: ConnId, nonce: String, key: String) {
        let snapshot = match self.read_snapshot(&key).await {
            Ok(s) => s,
            Err(why) => {
                log::warn!("[{id}] session from another instance lost: {why}");
                if self.arrivals.end(&id, &nonce, Err(MoveRefused::Broken(why))) == Some(true) {
                    let _ = self.queue.try_send(Out::Undo(id));
                }
                return;
            }
        };
        let put = self.arrivals.arrive(&id, &nonce, |arrived| {
            let result = self.sessions.put(&snapshot).map_err(MoveRefused::Broken);
            if result.is_ok() {
                self.departures.forget(&id);
                handover::replay(&self.hub, &id, arrived.recorded.clone());
                if arrived.overflowed {
                    log::warn!("[{id}] more arrived during its move than --resume-buffer-bytes; some was dropped");
                }
            }
            arrived.answer(result.clone());
            result
        });
        match put {
            Some(Ok(())) => log::info!("[{id}] session arrived from another instance"),
            Some(Err(why)) => log::warn!("[{id}] session from another instance not taken: {why}"),
            // The resume gave up: kept detached; its grace runs out here.
            None => match self.sessions.put(&snapshot) {
                Ok(()) => {
                    log::info!("[{id}] session arrived after its resume gave up; kept detached");
                    let _ = self.queue.try_send(Out::Adopt(id));
                }
                Err(why) => log::warn!("[{id}] late session from another instance lost: {why}"),
            },
        }
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
            Out::Route { id, payload, take } => {
                let prefix = id.instance().unwrap_or(me);
                let cmd = eval(handover::ROUTE, &[MOVED], &[id.as_str(), prefix, &payload]);
                let n: i64 = cmd.query_async(con).await.map_err(lost(take.is_none().into()))?;
                match take {
                    _ if n > 0 => {}
                    Some(nonce) => {
                        self.arrivals.end(&id, &nonce, Err(MoveRefused::Unknown("its instance is gone".into())));
                    }
                    None => *unheard += 1,
                }
            }
            Out::Presence(change) => self.write_presence(con, change).await.map_err(lost(0))?,
            Out::Cut { id, to, nonce } => self.cut(con, id, to, nonce).await.map_err(lost(0))?,
            Out::Handover { id, to, nonce, snapshot } => {
                if let Err(e) = self.send_snapshot(con, &id, &to, &nonce, &snapshot).await {
                    // B will give up: the session stays here, detached.
                    log::warn!("[{id}] could not hand the session over ({e}); kept here");
                    self.departures.forget(&id);
                    let _ = self.sessions.put(&snapshot);
                    return Err((e, 0));
                }
            }
            Out::Undo(id) => {
                let keys = [MOVED, &conns_key(me), &handover::hosted_key(me)];
                eval(handover::UNDO, &keys, &[id.as_str(), me]).query_async::<i64>(con).await.map_err(lost(0))?;
            }
            Out::Adopt(id) => {
                let args = [id.as_str(), id.instance().unwrap_or(me), me];
                let cmd = eval(handover::ADOPT, &[MOVED, &handover::hosted_key(me)], &args);
                cmd.query_async::<i64>(con).await.map_err(lost(0))?;
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
