//! Delivery: where actions are applied and connections are found.
//!
//! [`Delivery`] is the one interface the rest of the server uses to act on
//! connections it does not hold itself: scripts' output, the control API.
//! Two implementations:
//!
//! - [`local::Hub`]: this instance's connections, rooms and metadata (the
//!   one place an action is executed);
//! - [`cluster::Cluster`] (`--redis`): the hub, plus the other instances
//!   reached through Redis, in the [`wire`] format.
//!
//! The connection's own life (register, detach, remove, the close it asks
//! for) always talks to the local [`Hub`] ([`local`]; its per-connection state is
//! [`shared`]): a connection lives on one
//! instance. Which implementation runs is decided once, in [`start`]; the
//! API and `ws/` never ask whether this is a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::action::Action;
use crate::id::ConnId;

pub mod cluster;
pub mod local;
pub mod outgoing;
pub mod queue;
pub mod session;
pub mod shared;
pub mod socket;
pub mod wire;

use local::{ConnView, Hub};
use outgoing::OutgoingBudget;

/// What applying one action did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It was carried out: how many connections it reached (messages
    /// queued, connections joined, closed, ...; 0 for nobody).
    Reached(usize),
    /// A cap refused it (logged where it was refused): nothing changed.
    Refused,
}

impl Applied {
    /// Connections reached (0 when refused).
    pub fn reached(self) -> usize {
        match self {
            Applied::Reached(n) => n,
            Applied::Refused => 0,
        }
    }

    /// `false` when a cap refused it.
    pub fn is_applied(self) -> bool {
        self != Applied::Refused
    }
}

/// Puts a session taken out of another instance in here; `false` when it could not.
pub type Importer = Box<dyn Fn(session::Snapshot) -> bool + Send + Sync>;

/// Apply an action, find a connection, list them: on this instance or
/// across the cluster, whichever this server is.
pub trait Delivery: Send + Sync {
    /// Applies `action` wherever its target lives, at once (scripts' output).
    /// What it did here, or [`Applied::Reached`] `(1)` for an action
    /// handed to the instance that holds its target.
    fn apply(&self, action: Action) -> Applied;

    /// Applies `actions` in order and says, for each, how many connections
    /// it reached anywhere (what the control API reports). Asks other
    /// instances for their presence at most once per call.
    fn apply_counted(&self, actions: Vec<Action>) -> BoxFuture<'_, Vec<Applied>>;

    /// A live connection, wherever it is.
    fn find<'a>(&'a self, id: &'a ConnId) -> BoxFuture<'a, Option<ConnView>>;

    /// Every live connection, oldest first.
    fn list(&self) -> BoxFuture<'_, Vec<ConnView>>;

    /// A new id for a connection accepted here (routable to this instance).
    fn new_conn_id(&self) -> ConnId;

    /// This instance is shutting down: withdraw it (cluster presence).
    fn leave(&self) -> BoxFuture<'_, ()>;

    /// A resume arrived here with a token no session of this instance
    /// has: the session, taken out of the instance that holds it
    /// ([`session::export`]) if any does (cluster mode), is given to
    /// `put_in` to be put in here; `true` when it was. `endpoint`: the
    /// resume's (a session of another endpoint does not move).
    fn claim_session<'a>(
        &'a self,
        token: &'a str,
        endpoint: &'a str,
        put_in: &'a (dyn Fn(session::Snapshot) -> bool + Sync),
    ) -> BoxFuture<'a, bool> {
        let _ = (token, endpoint, put_in);
        Box::pin(std::future::ready(false))
    }

    /// The event worker of session `id`, which moved away, has run every
    /// event it had queued here, and its snapshot (sent to instance `to`)
    /// said it had not: its holder's events for it may run (cluster mode;
    /// `session::hold`).
    fn events_ran(&self, id: &ConnId, to: &str) {
        let _ = (id, to);
    }

    /// Sessions whose move to another instance was abandoned after their
    /// cut and that are held here (cluster mode): the WebSocket side puts
    /// each in and ends it (`resume-expired`), so its close event runs once.
    fn orphans(&self) -> Option<async_channel::Receiver<session::Snapshot>> {
        None
    }

    /// This instance shuts down: its resumable sessions move to other live
    /// instances first (cluster mode; `cluster::drain`), within a deadline.
    /// How many did.
    fn hand_off(&self) -> BoxFuture<'_, usize> {
        Box::pin(std::future::ready(0))
    }

    /// `true` once [`Delivery::hand_off`] started: resumes are refused
    /// before their upgrade (503), so that they reach another instance.
    fn draining(&self) -> bool {
        false
    }

    /// How a session another instance hands here at its shutdown is put
    /// in, detached (the WebSocket side's import; cluster mode).
    fn adopt_with(&self, import: Importer) {
        let _ = import;
    }

    /// Room → live members, sorted by name (a room exists while it has members).
    fn rooms(&self) -> BoxFuture<'_, BTreeMap<String, usize>> {
        Box::pin(async move {
            let mut rooms = BTreeMap::<String, usize>::new();
            for v in self.list().await {
                for r in v.rooms {
                    *rooms.entry(r).or_default() += 1;
                }
            }
            rooms
        })
    }
}

/// The hub and the delivery in front of it: the hub itself, or the cluster
/// when `redis` (`--redis URL`) is given (it starts talking to Redis now).
/// `cluster_queue`: `--cluster-queue`; `out_queue`: `--max-outgoing`.
pub fn start(
    redis: Option<cluster::Redis<'_>>,
    cluster_queue: usize,
    out_queue: usize,
    outgoing: OutgoingBudget,
    max_snapshot: usize,
) -> Result<(Arc<Hub>, Arc<dyn Delivery>), String> {
    let hub = Hub::new(out_queue, outgoing);
    match redis {
        None => {
            let hub = Arc::new(hub);
            Ok((hub.clone(), hub))
        }
        Some(redis) => {
            let id = cluster::new_instance_id();
            let cluster = cluster::Cluster::new(redis, id, cluster_queue, hub, max_snapshot)?;
            cluster.start();
            Ok((cluster.hub().clone(), cluster))
        }
    }
}
