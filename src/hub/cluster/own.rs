//! This instance's own messages to a session that is moving (issue 17).
//!
//! Another instance's room message or send reaches a moving session `X`
//! exactly once because it lands on one side of the cut in Redis's order
//! (docs/notes17/cluster-resume.md). This instance's own ones are applied
//! here when they are sent, at a moment that has no place in that order:
//! one sent by A while `X` is about to leave could reach `X` at A and be
//! recorded at B; one sent by B before `X` is in B's hub, and echoed after,
//! would miss it. So while `X` moves, this instance's own actions for `X`
//! take Redis's order too:
//!
//! - **routed** (`X` in [`Own::routed`]): an action on `X` is published
//!   through `ROUTE` (it reaches `X` wherever the cut puts it), and a room
//!   message or broadcast skips `X` here; each is counted.
//! - **echoing** (`X` in [`Own::echoing`]): the echo of this instance's own
//!   room message or broadcast, when it comes back from Redis, is applied
//!   to `X` alone.
//!
//! A starts routing `X` when it agrees to hand it over: its cut is queued
//! at that moment, so everything it sends `X` afterwards comes after the cut
//! and reaches `X` on B (recorded there, or live). At its cut marker `X`
//! leaves A. If the cut fails, A hears its own refusal in Redis's order and
//! echoes from there. B routes and echoes `X` from the moment the session is
//! put in its hub (what B sent before that was recorded or reached the
//! snapshot, or is echoed from now). Both go back to plain local delivery
//! through a `settle` marker that the instance sends itself: when it comes
//! back and nothing was routed for `X` since it was sent, nothing of this
//! instance's for `X` is still in Redis, and local delivery cannot overtake
//! it; otherwise another marker follows. Every change of state happens
//! under the gate's write lock, every own action under its read lock, so
//! that each action is wholly on one side of each change.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::action::Action;
use crate::hub::local::Hub;
use crate::hub::wire::{encode_move, Move};
use crate::id::ConnId;

use super::{to_channel, Cluster, Out};

/// The moving sessions this instance's own actions reach through Redis.
#[derive(Default)]
pub struct Own {
    /// Read by each own action, written by each change of state.
    gate: RwLock<()>,
    /// Routed sessions, with the own actions routed for each since its
    /// last `settle` marker was sent.
    routed: Mutex<HashMap<ConnId, Routed>>,
    /// Sessions to which the echoes of own room messages and broadcasts apply.
    echoing: Mutex<HashSet<ConnId>>,
}

/// A routed session.
#[derive(Default)]
struct Routed {
    /// Own actions routed for it since its last `settle` marker was sent.
    since: u64,
    /// This instance agreed to hand it over: it stays routed until its cut
    /// (whatever `settle` marker comes back meanwhile).
    departing: bool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Own {
    /// Held while one own action is routed and applied.
    pub fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held while the state of a session changes.
    pub fn turning(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_routed(&self, id: &ConnId) -> bool {
        let routed = locked(&self.routed);
        !routed.is_empty() && routed.contains_key(id)
    }

    /// An own action routed through Redis for `id`.
    pub fn count(&self, id: &ConnId) {
        if let Some(r) = locked(&self.routed).get_mut(id) {
            r.since += 1;
        }
    }

    /// An own room message or broadcast: the routed sessions it skips here
    /// (each counted), or `None` when there are none.
    pub fn skipped(&self) -> Option<HashSet<ConnId>> {
        let mut routed = locked(&self.routed);
        if routed.is_empty() {
            return None;
        }
        routed.values_mut().for_each(|r| r.since += 1);
        Some(routed.keys().cloned().collect())
    }

    /// From now on, own actions for `id` go through Redis (under
    /// [`Own::turning`]): it arrived here.
    pub fn route(&self, id: &ConnId) {
        locked(&self.routed).insert(id.clone(), Routed::default());
    }

    /// From now on, own actions for `id` go through Redis until its cut
    /// (under [`Own::turning`]): this instance agreed to hand it over.
    pub fn depart(&self, id: &ConnId) {
        locked(&self.routed).entry(id.clone()).or_default().departing = true;
    }

    /// Its cut failed: it stays here (under [`Own::turning`]); `true` when
    /// it was departing.
    pub fn stay(&self, id: &ConnId) -> bool {
        let mut routed = locked(&self.routed);
        let Some(r) = routed.get_mut(id).filter(|r| r.departing) else { return false };
        r.departing = false;
        drop(routed);
        self.echo(id);
        true
    }

    /// From now on, own echoes apply to `id` (under [`Own::turning`]).
    pub fn echo(&self, id: &ConnId) {
        locked(&self.echoing).insert(id.clone());
    }

    pub fn is_echoing(&self, id: &ConnId) -> bool {
        locked(&self.echoing).contains(id)
    }

    /// `id` left this instance, or is back to local delivery (under [`Own::turning`]).
    pub fn forget(&self, id: &ConnId) {
        locked(&self.routed).remove(id);
        locked(&self.echoing).remove(id);
    }

    /// The `settle` marker of `id` came back (under [`Own::turning`]):
    /// `true` when another marker must follow (something was routed for it
    /// since this one was sent); else it is back to local delivery (or, if
    /// it is departing meanwhile, it stays routed until its cut).
    pub fn settle(&self, id: &ConnId) -> bool {
        let mut routed = locked(&self.routed);
        match routed.get_mut(id) {
            Some(r) if r.departing => false,
            Some(r) if r.since > 0 => {
                r.since = 0;
                true
            }
            _ => {
                routed.remove(id);
                locked(&self.echoing).remove(id);
                false
            }
        }
    }

    /// The sessions echoing now.
    pub fn echoing(&self) -> Vec<ConnId> {
        locked(&self.echoing).iter().cloned().collect()
    }

    /// The echo of an own room message or broadcast: applied to each
    /// echoing session here alone (those it concerns).
    pub fn apply_echo(&self, hub: &Hub, action: &Action) {
        for id in self.echoing() {
            super::handover::replay(hub, &id, vec![action.clone()]);
        }
    }
}

impl Cluster {
    /// Queues `id`'s `settle` marker to this instance (under [`Own::turning`]).
    pub(super) fn send_settle(&self, id: &ConnId) {
        let payload = encode_move(&self.instance, &Move::Settle { id: id.clone() });
        let _ = self.queue.try_send(Out::Tell { channel: to_channel(&self.instance), payload });
    }

    /// A step of a move this instance published to itself: `true` when
    /// handled here.
    pub(super) fn on_own_move(&self, step: &Move) -> bool {
        match step {
            Move::Settle { id } if self.barrier_passed(id) => true,
            Move::Settle { id } => {
                let _turning = self.own.turning();
                if self.own.is_echoing(id) && self.own.settle(id) {
                    self.send_settle(id);
                }
                true
            }
            // A's cut of `id` could not be made: what A sent it since it
            // agreed comes after this, skipped here: applied at its echo.
            Move::Refuse { id, .. } => {
                let _turning = self.own.turning();
                if self.own.stay(id) {
                    self.send_settle(id);
                }
                true
            }
            _ => false,
        }
    }

    /// The subscription (re)started: a `settle` marker may have been lost.
    pub(super) fn resettle(&self) {
        let _turning = self.own.turning();
        for id in self.own.echoing() {
            self.send_settle(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_settles_once_nothing_was_routed_for_it_since_its_marker() {
        let own = Own::default();
        let x = ConnId::random();
        assert!(own.skipped().is_none(), "nothing moving: plain delivery");
        own.route(&x);
        own.echo(&x);
        assert!(own.is_routed(&x) && own.is_echoing(&x));
        own.count(&x);
        assert_eq!(own.skipped(), Some([x.clone()].into()));
        assert!(own.settle(&x), "two routed since the marker: another one");
        assert!(own.is_routed(&x));
        own.depart(&x);
        assert!(!own.settle(&x) && own.is_routed(&x), "departing: routed until its cut, whatever comes back");
        assert!(own.stay(&x), "its cut failed");
        own.count(&x);
        assert!(own.settle(&x), "one routed since the last marker");
        assert!(!own.settle(&x), "none since: back to local delivery");
        assert!(!own.is_routed(&x) && !own.is_echoing(&x) && own.skipped().is_none());
    }
}
