//! What a move does when Redis fails it (review 18 #2, #4, #5, #9, #10):
//! every way a move can stop half-way ends in one of a few steps, each
//! written once here, so that no session is left out of delivery, in two
//! places, without its close event, or "moving" for good.
//!
//! - A's cut will not be made ([`Cluster::abandon_cut`]): the session stays
//!   here and resumes here are served again.
//! - A's `CUT` was sent but its marker never came back (the reply was lost
//!   when the connection broke, or this instance's subscription dropped
//!   around it): after [`HANDOVER_WAIT`] the publisher asks Redis who holds
//!   the session ([`Cluster::check_cuts`]); moved, the marker is sent again
//!   to this instance (the hand-over follows as usual); not moved, the
//!   refusal goes to this instance and to B through Redis, as for a `CUT`
//!   that returned 0 or -1 ([`Cluster::refuse_cut`]).
//! - B stops waiting for a session ([`Cluster::abandon_incoming`]): its
//!   side of the cut is undone (`UNDO` is conditional, so it is sent even
//!   when B did not see a marker: its subscription may have missed it).
//! - What the publisher held when its connection broke ([`Cluster::dropped`]):
//!   actions are lost as before (at most once); a cut never made is
//!   abandoned; a hand-over never written ends the session here with its
//!   close event (its only copy); undoing, settling and flushing wait for
//!   the next connection.

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use super::handover::{MoveRefused, HANDOVER_WAIT, MOVED};
use super::{to_channel, Cluster, Out};
use crate::hub::session::{Session, Snapshot, Token};
use crate::hub::wire::{encode_move, Move};
use crate::id::ConnId;

impl Cluster {
    /// A: agrees to move `id` (`session`, shown `token`) to instance `to`
    /// and queues its cut; with `restart`, its socket is told `1012` when it
    /// lets go (shutdown). The refusal's reason otherwise.
    pub(super) fn move_out(
        &self,
        session: &Session,
        token: &Token,
        id: &ConnId,
        to: &str,
        nonce: &str,
        restart: bool,
    ) -> Result<(), &'static str> {
        session.begin_move(token)?;
        if restart {
            // Set before the cut, whose marker may be quick.
            session.restart();
        }
        self.start_cut(id, to, nonce).inspect_err(|_| {
            session.end_move();
            session.restart_cancelled();
        })
    }

    /// A: the cut of `id` agreed to will not be made: the session stays
    /// here and resumes here are served again. (Own actions: the caller's.)
    pub(super) fn abandon_cut(&self, id: &ConnId) {
        self.departures.cut(id);
        self.hub.with_session(id, |session| {
            session.end_move();
            session.restart_cancelled();
        });
    }

    /// A: the cut of `id` to `to` was not made: abandoned, and the refusal
    /// published to this instance (own echoes apply to `id` from there on,
    /// [`super::own`]) and to `to`. Redis failing under it, own actions for
    /// `id` go back to local delivery at once.
    pub(super) async fn refuse_cut(
        &self,
        con: &mut MultiplexedConnection,
        id: &ConnId,
        to: &str,
        nonce: String,
        why: &str,
    ) -> redis::RedisResult<()> {
        self.abandon_cut(id);
        log::info!("[{id}] resume on instance {to} refused: {why}");
        let me = self.instance.as_str();
        let refuse = encode_move(me, &Move::Refuse { id: id.clone(), nonce, why: why.into() });
        if let Err(e) = con.publish::<_, _, i64>(to_channel(me), &refuse).await {
            let _turning = self.own.turning();
            self.own.forget(id);
            return Err(e);
        }
        con.publish::<_, _, i64>(to_channel(to), refuse).await.map(drop)
    }

    /// A, from the publisher: every cut sent [`HANDOVER_WAIT`] ago whose
    /// marker did not come is decided from Redis (`moved`): passed, its
    /// marker again to this instance; not, refused.
    pub(super) async fn check_cuts(&self, con: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        for (id, to, nonce) in self.departures.overdue(HANDOVER_WAIT) {
            let me = self.instance.as_str();
            let holder: Option<String> = con.hget(MOVED, id.as_str()).await?;
            if holder.as_deref().or(id.instance()).unwrap_or(me) == to {
                log::warn!("[{id}] its cut to instance {to} passed but its marker did not come here; sent again");
                let marker = encode_move(me, &Move::Cut { id: id.clone(), nonce, to });
                con.publish::<_, _, i64>(to_channel(me), marker).await?;
            } else {
                log::warn!("[{id}] its cut to instance {to} was not made (its reply was lost); it stays here");
                self.refuse_cut(con, &id, &to, nonce, "its cut could not be made").await?;
                if let Some(view) = self.hub.get(&id) {
                    // The cut's presence move did not happen, or was undone by B.
                    let _ = self.queue.try_send(Out::Presence((id, Some(view))));
                }
            }
        }
        Ok(())
    }

    /// A: the hand-over of `id` (`snapshot`) cannot be written: B gives
    /// up (4410), and the session ends here, its close event once.
    pub(super) fn handover_lost(&self, id: &ConnId, snapshot: &str, why: &str) {
        log::warn!("[{id}] could not hand the session over ({why}); it ends here (resume-expired)");
        self.departures.forget(id);
        if let Ok(snap) = serde_json::from_str::<Snapshot>(snapshot) {
            let _ = self.orphans.0.try_send(snap);
        }
    }

    /// B: stops waiting for move `nonce` (of `id`, when known); its side of
    /// the cut is undone if it saw it, or if it may have missed it.
    pub(super) fn abandon_incoming(&self, nonce: &str, why: MoveRefused, id: Option<&ConnId>) {
        match self.arrivals.end(nonce, why) {
            Some(true) => self.undo(nonce, id),
            Some(false) if id.is_some_and(|id| !self.hub.is_known(id)) => self.undo(nonce, id),
            _ => {}
        }
    }

    /// B: queues the undoing of move `nonce` (of `id`, unless its cut recorded it).
    pub(super) fn undo(&self, nonce: &str, id: Option<&ConnId>) {
        if let Some(id) = id {
            let mut cuts = self.cuts.lock().unwrap_or_else(|e| e.into_inner());
            cuts.entry(nonce.to_owned()).or_insert_with(|| id.clone());
        }
        let _ = self.queue.try_send(Out::Undo(nonce.to_owned()));
    }

    /// An item the publisher held when its connection broke: how many
    /// cross-instance actions it loses; what must survive goes to `kept`.
    pub(super) fn dropped(&self, item: Out, kept: &mut Vec<Out>) -> u64 {
        match item {
            Out::Publish { .. } | Out::Route { .. } => return 1,
            // Never made: the session stays here, delivered to as before
            // (what was routed for it since is behind it, lost with it).
            Out::Cut { id, .. } => {
                let turning = self.own.turning();
                self.own.forget(&id);
                drop(turning);
                self.abandon_cut(&id);
            }
            Out::Handover { id, snapshot, .. } => self.handover_lost(&id, &snapshot, "Redis went away"),
            Out::Ask { nonce, .. } => drop(self.arrivals.end(&nonce, MoveRefused::Unreachable)),
            // Rewritten whole on reconnect; an end also ends a move into here.
            Out::Presence((id, None)) => kept.push(Out::Presence((id, None))),
            Out::Presence(_) => {}
            keep @ (Out::Undo(_) | Out::Tell { .. } | Out::Flush(_)) => kept.push(keep),
        }
        0
    }
}
