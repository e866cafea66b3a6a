//! Cluster mode (`--redis URL`): several instances behind a load balancer
//! share rooms, sends and presence through Redis.
//!
//! - Connection ids start with their instance's id, so a send to an id goes
//!   to that instance's channel (`ws2http:to:<instance>`); room messages and
//!   broadcasts go to `ws2http:all` and every instance delivers to its own
//!   members, so each client gets each message exactly once.
//! - One publisher connection per instance keeps a sender's messages in order.
//! - Presence: each instance keeps a hash of its connections
//!   (`ws2http:conns:<instance>`) and a heartbeat key with a TTL
//!   (`ws2http:alive:<instance>`); an instance that dies drops out of
//!   `GET /connections` within [`DEAD_AFTER`]. The heartbeat runs on its own
//!   clock, every [`HEARTBEAT`] whatever else is written, so a busy instance
//!   is never taken for a dead one. An instance whose presence another one
//!   removed anyway (it was stalled, or Redis lost its data) finds out on its
//!   next heartbeat and writes its whole presence again, idle connections
//!   included.
//! - Redis down: local delivery goes on; cross-instance actions are lost
//!   (at most once), every one of them counted in `ws2http_cluster_lost_total`
//!   and logged once per batch; instances reconnect by themselves and rewrite
//!   their presence.
//! - The actions waiting to be published are bounded in bytes
//!   (`--cluster-queue`): clients whose scripts publish faster than Redis
//!   takes it (or while Redis is away) cannot grow the queue without bound;
//!   what does not fit is lost the same way.
//! - Resumable sessions (issue 17) move between instances ([`handover`]):
//!   a session that moved is held by the instance in `ws2http:moved`, so an
//!   action on one connection is published by a script that reads it
//!   (`ROUTE`), and presence is written only by the holder (`PRESENCE`).
//!   While a session moves, this instance's own actions on it take Redis's
//!   order too ([`own`]), and the subscriber never waits for a session's
//!   scripts (the old instance takes it out of delivery at its cut at once).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::{FutureExt, StreamExt};
use redis::AsyncCommands;

use crate::action::Action;
use futures_util::future::BoxFuture;

use super::local::{ConnView, Hub, PresenceChange};
use super::session::Snapshot;
use super::wire::Body;
use super::{Applied, Delivery};
use crate::id::ConnId;
use crate::{metrics, runtime};
pub use handover::MoveRefused;
use handover::{Arrivals, Departures, MOVED};
use route::{reached, route, Audience, Route};

/// How often an instance says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a Redis command may take before its connection counts as
/// broken (the client library's default is 500 ms: a pause of Redis that
/// long, a fork for a save say, dropped the publisher's connection and what
/// it had queued, a session's hand-over included). Under [`DEAD_AFTER`],
/// so that a stalled connection is noticed before others count this
/// instance gone.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The configuration of every connection to Redis.
fn connection_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT))
}
/// Presence of an instance that stopped saying so expires after this.
pub const DEAD_AFTER: Duration = Duration::from_secs(6);
const ALL: &str = "ws2http:all";

mod drain;
mod faults;
mod handover;
mod moves;
mod own;
mod route;
const INSTANCES: &str = "ws2http:instances";

fn to_channel(instance: &str) -> String {
    format!("ws2http:to:{instance}")
}
fn alive_key(instance: &str) -> String {
    format!("ws2http:alive:{instance}")
}
fn conns_key(instance: &str) -> String {
    format!("ws2http:conns:{instance}")
}

/// How a publishing session with Redis ended.
struct SessionEnd {
    error: redis::RedisError,
    /// Cross-instance actions it had taken from the queue and could not publish.
    lost: u64,
    /// It had connected (so the reconnect backoff starts over).
    connected: bool,
}

enum Out {
    Publish {
        channel: String,
        payload: String,
    },
    /// A step of a move to one instance (not counted in `--cluster-queue`).
    Tell {
        channel: String,
        payload: String,
    },
    /// An action on connection `id`, published to whoever holds it.
    Route {
        id: ConnId,
        payload: String,
    },
    /// B's request for a session (a `take`), to whoever holds `id`.
    Ask {
        id: ConnId,
        nonce: String,
        payload: String,
    },
    Presence(PresenceChange),
    /// A's part of a move: the cut, then the snapshot.
    Cut {
        id: ConnId,
        to: String,
        nonce: String,
    },
    Handover {
        id: ConnId,
        to: String,
        nonce: String,
        snapshot: String,
    },
    /// B's: forget a move (by its nonce) it gave up after its cut.
    Undo(String),
    /// Answered once everything queued before it is written (shutdown).
    Flush(async_channel::Sender<()>),
}

pub struct Cluster {
    /// 8 hex characters; the first 8 of every local connection id.
    pub instance: String,
    /// This instance's connections.
    hub: Arc<Hub>,
    client: redis::Client,
    queue: async_channel::Sender<Out>,
    queue_rx: async_channel::Receiver<Out>,
    reader: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Payload bytes of the actions in `queue`, and their cap.
    queued_bytes: AtomicUsize,
    max_queued_bytes: usize,
    /// Actions refused because the queue was full, not yet logged.
    overflow: AtomicU64,
    /// The publisher is connected to Redis (a resume is refused at once when not).
    connected: std::sync::atomic::AtomicBool,
    /// The moves of resumable sessions into and out of this instance.
    arrivals: Arrivals,
    departures: Departures,
    /// This instance's own actions on sessions that are moving.
    own: own::Own,
    /// The sessions whose cut passed here, by their move's nonce (to undo it).
    cuts: Mutex<std::collections::HashMap<String, ConnId>>,
    /// The message bytes recorded for one session moving here (0: sessions off).
    max_snapshot: usize,
    /// Sessions whose move was abandoned after their cut, held here: they
    /// end here ([`Delivery::orphans`]).
    orphans: (async_channel::Sender<Snapshot>, async_channel::Receiver<Snapshot>),
    /// Sessions handed to other instances at shutdown, or here by theirs ([`drain`]).
    drain: drain::Drain,
}

/// The channel a hub reports presence changes to: they join the queue
/// for Redis.
fn presence_sender(queue: async_channel::Sender<Out>) -> async_channel::Sender<PresenceChange> {
    let (tx, rx) = async_channel::unbounded::<PresenceChange>();
    runtime::spawn(async move {
        while let Ok(change) = rx.recv().await {
            let _ = queue.send(Out::Presence(change)).await;
        }
    });
    tx
}

/// Where Redis is: `--redis URL` (`redis://`, or `rediss://` for TLS) and
/// `--redis-ca FILE`.
#[derive(Clone, Copy, Debug)]
pub struct Redis<'a> {
    pub url: &'a str,
    pub ca: Option<&'a std::path::Path>,
}

/// The client for `redis`. A `rediss://` URL speaks TLS (the redis crate's
/// rustls support, on the same smol-family I/O as plain connections):
/// the server's certificate is checked against the system's roots (or
/// `SSL_CERT_FILE`), or only against `--redis-ca` when given.
fn client(redis: Redis<'_>) -> Result<redis::Client, String> {
    let url = redis.url;
    // The redis crate reads this fragment as "skip verification", which
    // our build cannot do: it failed at every connection attempt instead.
    if url.split_once('#').is_some_and(|(_, f)| f.eq_ignore_ascii_case("insecure")) {
        return Err(format!(
            "--redis {url}: verification cannot be turned off; remove #insecure and trust the server's CA with --redis-ca FILE"
        ));
    }
    let Some(ca) = redis.ca else {
        return redis::Client::open(url).map_err(|e| format!("--redis {url}: {e}"));
    };
    if !url.get(..9).is_some_and(|s| s.eq_ignore_ascii_case("rediss://")) {
        return Err(format!("--redis-ca {}: --redis {url} is not rediss:// (TLS); remove --redis-ca", ca.display()));
    }
    let pem = std::fs::read(ca).map_err(|e| format!("--redis-ca {}: {e}", ca.display()))?;
    let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
    redis::Client::build_with_tls(url, certs)
        .map_err(|e| format!("--redis {url} with --redis-ca {}: {e}", ca.display()))
}

/// Removes instance `inst`'s presence and the moves into it; with `check`,
/// only if its heartbeat is still missing. `true` when removed.
async fn forget_instance(
    con: &mut redis::aio::MultiplexedConnection,
    inst: &str,
    check: bool,
) -> redis::RedisResult<bool> {
    let keys = [&alive_key(inst), INSTANCES, &conns_key(inst), &handover::hosted_key(inst), MOVED];
    let cmd = moves::eval(handover::FORGET, &keys, &[inst, if check { "1" } else { "0" }]);
    let removed: i64 = cmd.query_async(con).await?;
    Ok(removed == 1)
}

/// A fresh instance id.
pub fn new_instance_id() -> String {
    ConnId::random().as_str()[..8].to_owned()
}

impl Cluster {
    /// Checks the URL and has `hub` report its presence changes here;
    /// nothing connects until [`Cluster::start`].
    /// `max_queued_bytes`: `--cluster-queue`.
    pub fn new(
        redis: Redis<'_>,
        instance: String,
        max_queued_bytes: usize,
        hub: Hub,
        max_snapshot: usize,
    ) -> Result<Arc<Cluster>, String> {
        let client = client(redis)?;
        let (queue, queue_rx) = async_channel::unbounded();
        let hub = Arc::new(hub.with_presence(presence_sender(queue.clone())));
        Ok(Arc::new(Cluster {
            instance,
            hub,
            client,
            queue,
            queue_rx,
            reader: Mutex::new(None),
            queued_bytes: AtomicUsize::new(0),
            max_queued_bytes,
            overflow: AtomicU64::new(0),
            connected: Default::default(),
            arrivals: Arrivals::new(max_snapshot),
            departures: Departures::default(),
            own: Default::default(),
            cuts: Mutex::default(),
            max_snapshot,
            orphans: async_channel::unbounded(),
            drain: Default::default(),
        }))
    }

    /// This instance's hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Starts the publisher, the subscriber and the heartbeat.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        let h = self.hub.clone();
        runtime::spawn(async move { me.publisher(h).await });
        let me = self.clone();
        let h = self.hub.clone();
        runtime::spawn(async move { me.subscriber(h).await });
        log::info!("cluster mode: instance {}", self.instance);
    }

    /// Executes `action` in the cluster: here what is here, through Redis
    /// what is elsewhere (room messages and broadcasts: both). What it did
    /// here; an action for another instance counts 1 once queued for Redis,
    /// 0 when the queue was full (it is lost).
    /// A session that is moving gets this instance's own actions through
    /// Redis's order ([`own`]).
    fn execute(&self, action: Action) -> (Applied, Option<Audience>) {
        let _gate = self.own.gate();
        let here = |id: &ConnId| self.hub.is_known(id) && !self.own.is_routed(id);
        let away = |id: &ConnId| self.departures.is_away(id) || self.own.is_routed(id);
        match route(&action, &self.instance, here, away) {
            Route::Here => (self.hub.apply(action), None),
            Route::To(id) => {
                self.own.count(&id);
                (Applied::Reached(self.publish(Some(id), &action).into()), None)
            }
            Route::Everywhere => {
                let published = self.publish(None, &action);
                let audience = published.then(|| Audience::of(&action)).flatten();
                let here = match self.own.skipped() {
                    None => self.hub.apply(action),
                    Some(skip) => self.hub.apply_skipping(action, &|id| skip.contains(id)),
                };
                (here, audience)
            }
        }
    }

    /// The other instances' live connections; none, with a log line, when
    /// Redis cannot be reached.
    async fn others_or_none(&self) -> Vec<ConnView> {
        self.others(&self.hub.list(None, None)).await.unwrap_or_else(|e| {
            log::warn!("cluster: {e}; showing this instance only");
            Vec::new()
        })
    }

    /// Queues `action` for Redis, unless the queue already holds
    /// `--cluster-queue` bytes: then it is lost (counted and logged with the
    /// next heartbeat, or when the outage ends the session).
    /// `true` when queued. `to`: the connection it is for (published to
    /// whoever holds it), or `None` for everyone.
    fn publish(&self, to: Option<ConnId>, action: &Action) -> bool {
        let payload = super::wire::encode(&self.instance, action);
        let len = payload.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::SeqCst);
        if queued.saturating_add(len) > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
            if self.overflow.fetch_add(1, Ordering::SeqCst) == 0 {
                log::warn!(
                    "cluster: the queue for Redis holds {queued} bytes (--cluster-queue {}); cross-instance actions are lost until it drains",
                    self.max_queued_bytes
                );
            }
            return false;
        }
        let item = match to {
            Some(id) => Out::Route { id, payload },
            None => Out::Publish { channel: ALL.to_owned(), payload },
        };
        // Unbounded and never closed (this holds the receiver too).
        self.queue.try_send(item).is_ok()
    }

    /// Takes the next queued item, releasing its bytes.
    fn taken(&self, item: Out) -> Out {
        if let Out::Publish { payload, .. } | Out::Route { payload, .. } = &item {
            self.queued_bytes.fetch_sub(payload.len(), Ordering::SeqCst);
        }
        item
    }

    /// Counts and logs the actions the full queue refused since last time.
    fn report_overflow(&self) {
        self.lost(self.overflow.swap(0, Ordering::SeqCst), "(the queue for Redis was full: --cluster-queue)");
    }

    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        if let Some(c) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(c);
        }
        let c = self.client.get_multiplexed_async_connection_with_config(&connection_config()).await?;
        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn forget_connection(&self) {
        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The connections listed in Redis that `local` (this instance's own,
    /// read just before) does not hold, read in one atomic step (a cut moves
    /// a presence entry between two hashes: read one by one, a session
    /// moving meanwhile is listed twice or not at all). Instances without a
    /// heartbeat are skipped and their presence removed.
    async fn others(&self, local: &[ConnView]) -> Result<Vec<ConnView>, String> {
        let result: redis::RedisResult<(Vec<String>, Vec<String>, Vec<String>)> = async {
            let mut con = self.connection().await?;
            let cmd = moves::eval(handover::LIST, &[INSTANCES], &[&self.instance]);
            let (dead, views, mine): (Vec<String>, Vec<String>, Vec<String>) = cmd.query_async(&mut con).await?;
            for inst in &dead {
                if forget_instance(&mut con, inst, true).await? {
                    log::info!("cluster: instance {inst} stopped its heartbeat; removed its presence");
                }
            }
            Ok((dead, views, mine))
        }
        .await;
        let (views, mine) = match result {
            Ok((_, views, mine)) => (views, mine),
            Err(e) => {
                self.forget_connection();
                return Err(format!("Redis is unreachable ({e})"));
            }
        };
        let parse = |v: &String| serde_json::from_str::<ConnView>(v).ok();
        // This instance's own entries: a session past its cut into here is
        // listed from them until the hub has it (then `local` may have
        // been read before); one that ended here and whose entry is not
        // removed yet is not listed.
        let moving_in = !self.arrivals.is_idle();
        let mine = mine
            .iter()
            .filter_map(parse)
            .filter(|v| moving_in || ConnId::parse(&v.id).is_some_and(|id| self.hub.is_known(&id)));
        let mut seen: std::collections::HashSet<String> = local.iter().map(|v| v.id.clone()).collect();
        let mut all: Vec<ConnView> = views.iter().filter_map(parse).chain(mine).collect();
        all.retain(|v| seen.insert(v.id.clone()));
        Ok(all)
    }

    /// One connection anywhere in the cluster: its id names the instance
    /// that holds it, so this is one look-up, not a listing.
    async fn find_anywhere(&self, id: &ConnId) -> Result<Option<ConnView>, String> {
        if let Some(v) = self.hub.get(id) {
            return Ok(Some(v));
        }
        // Its id names this instance and it never left: it is not anywhere.
        let Some(inst) = id.instance().filter(|i| *i != self.instance || self.departures.is_away(id)) else {
            return Ok(None);
        };
        let result: redis::RedisResult<Option<String>> = async {
            let mut con = self.connection().await?;
            moves::eval(handover::FIND, &[MOVED], &[id.as_str(), inst]).query_async(&mut con).await
        }
        .await;
        match result {
            Ok(v) => Ok(v.and_then(|v| serde_json::from_str(&v).ok())),
            Err(e) => {
                self.forget_connection();
                Err(format!("Redis is unreachable ({e}); only this instance's connections are known"))
            }
        }
    }

    /// Removes this instance's presence (graceful shutdown).
    async fn withdraw(&self) {
        let result: redis::RedisResult<()> = async {
            let mut con = self.connection().await?;
            let _: () = con.del(alive_key(&self.instance)).await?;
            forget_instance(&mut con, &self.instance, false).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            log::warn!("cluster: could not remove this instance's presence: {e}");
        }
    }

    async fn publisher(self: Arc<Self>, hub: Arc<Hub>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let end = self.publish_session(&hub).await;
            self.connected.store(false, Ordering::SeqCst);
            if end.connected {
                backoff = Duration::from_millis(200);
            }
            log::warn!("cluster: Redis connection for publishing failed ({}); reconnecting in {backoff:?}", end.error);
            self.lost(end.lost + self.drain_queue(), "while Redis was unreachable");
            self.report_overflow();
            runtime::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Drops what waited while Redis was away: cross-instance actions are
    /// at-most-once during an outage; presence is rewritten on reconnect;
    /// moves are ended or kept ([`Cluster::dropped`]).
    /// Returns how many actions were dropped.
    fn drain_queue(&self) -> u64 {
        let (mut lost, mut kept) = (0, Vec::new());
        while let Ok(item) = self.queue_rx.try_recv() {
            lost += self.dropped(self.taken(item), &mut kept);
        }
        for item in kept {
            let _ = self.queue.try_send(item);
        }
        lost
    }

    /// Counts `n` lost cross-instance actions, with one log line for them all.
    fn lost(&self, n: u64, why: &str) {
        if n > 0 {
            metrics::get().cluster_lost.fetch_add(n, Ordering::Relaxed);
            log::warn!("cluster: {n} cross-instance action(s) lost {why}");
        }
    }

    /// Writes this instance's whole presence: its connections, its heartbeat
    /// and its membership, in one transaction. Returns how many connections.
    async fn announce(&self, con: &mut redis::aio::MultiplexedConnection, hub: &Hub) -> redis::RedisResult<usize> {
        let views = hub.list(None, None);
        let hosted = handover::hosted_key(&self.instance);
        let mut p = redis::pipe();
        p.atomic();
        p.del(conns_key(&self.instance)).ignore();
        for v in &views {
            p.hset(conns_key(&self.instance), &v.id, serde_json::to_string(v).unwrap_or_default()).ignore();
            // A session that moved here: its move too (Redis may have lost it).
            if let Some(prefix) = v.id.get(..8).filter(|p| v.id.len() == 32 && *p != self.instance) {
                p.add_command(moves::eval(handover::ADOPT, &[MOVED, &hosted], &[&v.id, prefix, &self.instance]))
                    .ignore();
            }
        }
        p.set_ex(alive_key(&self.instance), self.alive_value(), DEAD_AFTER.as_secs()).ignore();
        p.sadd(INSTANCES, &self.instance).ignore();
        let _: () = p.query_async(con).await?;
        Ok(views.len())
    }

    /// Renews the heartbeat. If this instance had been dropped from the
    /// instance set (another one found its heartbeat missing and removed its
    /// presence, or Redis lost its data), the whole presence is written again.
    async fn heartbeat(&self, con: &mut redis::aio::MultiplexedConnection, hub: &Hub) -> redis::RedisResult<()> {
        let mut p = redis::pipe();
        p.atomic();
        p.set_ex(alive_key(&self.instance), self.alive_value(), DEAD_AFTER.as_secs()).ignore();
        p.sadd(INSTANCES, &self.instance);
        let (added,): (i64,) = p.query_async(con).await?;
        if added == 1 {
            let n = self.announce(con, hub).await?;
            log::warn!("cluster: this instance's presence had been removed from Redis; {n} local connection(s) announced again");
        }
        Ok(())
    }

    /// One connection to Redis for publishing, until it fails: the queue in
    /// order, and the heartbeat every [`HEARTBEAT`] on its own clock, however
    /// busy the queue is.
    async fn publish_session(&self, hub: &Hub) -> SessionEnd {
        let end = |error, lost, connected| SessionEnd { error, lost, connected };
        let mut con = match self.client.get_multiplexed_async_connection_with_config(&connection_config()).await {
            Ok(c) => c,
            Err(e) => return end(e, 0, false),
        };
        match self.announce(&mut con, hub).await {
            Ok(n) => log::info!("cluster: connected to Redis; {n} local connection(s) announced"),
            Err(e) => return end(e, 0, false),
        }
        self.connected.store(true, Ordering::SeqCst);
        let mut next_beat = Instant::now() + HEARTBEAT;
        // Directed actions no instance was subscribed to (it is restarting,
        // or gone): lost too; logged with the next heartbeat.
        let mut unheard = 0;
        loop {
            let wait = next_beat.saturating_duration_since(Instant::now());
            let next = async { self.queue_rx.recv().await.ok().map(|item| self.taken(item)) }
                .or(async {
                    runtime::sleep(wait).await;
                    None
                })
                .await;
            if let Some(item) = next {
                if let Err((e, lost)) = self.write_out(&mut con, item, &mut unheard).await {
                    return end(e, lost, true);
                }
            }
            if Instant::now() >= next_beat {
                if let Err(e) = self.heartbeat(&mut con, hub).await {
                    return end(e, 0, true);
                }
                if let Err(e) = self.check_cuts(&mut con).await {
                    return end(e, 0, true);
                }
                next_beat = Instant::now() + HEARTBEAT;
                self.lost(std::mem::take(&mut unheard), "(sent to an instance that was not subscribed)");
                self.report_overflow();
            }
        }
    }

    async fn subscriber(self: Arc<Self>, hub: Arc<Hub>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let result: redis::RedisResult<()> = async {
                let mut sub = self.client.get_async_pubsub().await?;
                sub.subscribe(ALL).await?;
                sub.subscribe(to_channel(&self.instance)).await?;
                log::info!("cluster: subscribed to {ALL} and {}", to_channel(&self.instance));
                backoff = Duration::from_millis(200);
                self.resettle();
                let mut messages = sub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else { continue };
                    match super::wire::decode_frame(&payload) {
                        Ok(f) => match f.body {
                            Body::Action(action) => {
                                // This instance's own room messages and broadcasts
                                // were applied here when sent, except to the
                                // sessions moving (`own`): applied to them now;
                                // what a script routed to a connection was not.
                                let echo = f.origin == self.instance && msg.get_channel_name() == ALL;
                                // A session arriving here sees it exactly once:
                                // recorded for it, or applied to it live.
                                let mut recording = self.arrivals.recording();
                                recording.record(&action, self.arrivals.max_recorded());
                                match echo {
                                    true => self.own.apply_echo(&hub, &action),
                                    false => {
                                        let _ = hub.apply(action);
                                    }
                                }
                                drop(recording);
                            }
                            Body::Move(step) if f.origin == self.instance && self.on_own_move(&step) => {}
                            Body::Move(step) => self.on_move(step).await,
                        },
                        Err(_) => log::warn!("cluster: ignored a malformed message on {}", msg.get_channel_name()),
                    }
                }
                Ok(())
            }
            .await;
            let why = match result {
                Ok(()) => "the subscription ended".to_owned(),
                Err(e) => e.to_string(),
            };
            log::warn!("cluster: Redis subscription lost ({why}); reconnecting in {backoff:?}");
            runtime::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

impl Delivery for Cluster {
    fn apply(&self, action: Action) -> Applied {
        self.execute(action).0
    }

    /// A room message or broadcast reaches the members here (counted by
    /// the hub) and, once published, the other instances' members (counted
    /// from their presence, listed once for the whole batch).
    fn apply_counted(&self, actions: Vec<Action>) -> BoxFuture<'_, Vec<Applied>> {
        Box::pin(async move {
            let mut others: Option<Vec<ConnView>> = None;
            let mut done = Vec::with_capacity(actions.len());
            for action in actions {
                let (here, audience) = self.execute(action);
                let Some(audience) = audience else {
                    done.push(here);
                    continue;
                };
                if others.is_none() {
                    others = Some(self.others_or_none().await);
                }
                done.push(reached(here, &audience, others.as_deref().unwrap_or_default()));
            }
            done
        })
    }

    /// If Redis cannot be reached, only this instance's, with a log line.
    fn find<'a>(&'a self, id: &'a ConnId) -> BoxFuture<'a, Option<ConnView>> {
        Box::pin(async move {
            self.find_anywhere(id).await.unwrap_or_else(|e| {
                log::warn!("cluster: {e}");
                self.hub.get(id)
            })
        })
    }

    /// If Redis cannot be reached, this instance's, with a log line.
    fn list(&self) -> BoxFuture<'_, Vec<ConnView>> {
        Box::pin(async move {
            let mut all = self.hub.list(None, None);
            match self.others(&all).await {
                Ok(others) => all.extend(others),
                Err(e) => {
                    log::warn!("cluster: {e}; showing this instance only");
                    return all;
                }
            }
            all.sort_by(|a, b| a.connected_at.cmp(&b.connected_at).then_with(|| a.id.cmp(&b.id)));
            all
        })
    }

    fn new_conn_id(&self) -> ConnId {
        ConnId::random_in(&self.instance)
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // What the publisher still holds (a moved session's `ran`, sent
            // when its last events here ended) is in Redis before this goes.
            let (done, written) = async_channel::bounded(1);
            if self.queue.try_send(Out::Flush(done)).is_ok() {
                let _ = runtime::timeout(Duration::from_secs(1), written.recv()).await;
            }
            self.withdraw().await
        })
    }

    /// To the instance its snapshot went to (not to wherever it lives now:
    /// after A to B to C, B's held events run first, then B tells C).
    fn events_ran(&self, id: &ConnId, to: &str) {
        let payload = super::wire::encode_move(&self.instance, &super::wire::Move::Ran { id: id.clone() });
        let _ = self.queue.try_send(Out::Tell { channel: to_channel(to), payload });
    }

    fn orphans(&self) -> Option<async_channel::Receiver<Snapshot>> {
        Some(self.orphans.1.clone())
    }

    fn hand_off(&self) -> BoxFuture<'_, usize> {
        Box::pin(Cluster::hand_off(self))
    }

    fn draining(&self) -> bool {
        self.is_draining()
    }

    fn adopt_with(&self, import: super::Importer) {
        self.set_importer(import);
    }

    /// Refused (logged) when no instance hands it over.
    fn claim_session<'a>(
        &'a self,
        token: &'a str,
        endpoint: &'a str,
        put_in: &'a (dyn Fn(Snapshot) -> bool + Sync),
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            self.bring(token, endpoint, put_in)
                .await
                .map_err(|why| log::warn!("cluster: a resume could not bring its session here: {why}"))
                .is_ok()
        })
    }
}
