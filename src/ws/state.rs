//! What the WebSocket side needs to run connections, and nothing else: the
//! hub and the delivery in front of it, the routing table its events take,
//! and the limits and settings of a connection's life.
//!
//! Defined here, by its one user, so that `ws` names no other part's state:
//! the public site holds one of these and hands it to
//! [`super::upgrade::handle`]; `server` builds it from the configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Events};
use crate::conn_limits::ConnLimits;
use crate::gateway::routes::Routes;
use crate::hub::local::Hub;
use crate::hub::Delivery;

use super::limits::QueueBudget;

/// The WebSocket side's state, shared by the handshake and every connection.
pub struct WsState {
    /// This instance's connections (their life: register, detach, remove).
    pub hub: Arc<Hub>,
    /// Where actions are applied and connections found: the hub, or
    /// whatever stands in front of it.
    pub delivery: Arc<dyn Delivery>,
    /// Which transport runs which endpoint's events, decided once.
    pub routes: Arc<Routes>,
    /// Port of the first public listener: SERVER_PORT and the origin check
    /// when a request does not carry the port of the listener that accepted it.
    pub port: u16,
    /// `--max-message`.
    pub max_message: usize,
    /// `--max-queue`: message events waiting per connection.
    pub max_queue: usize,
    /// `--max-connections`, `--max-connections-per-ip`.
    pub conn_limits: Arc<ConnLimits>,
    /// `--ping-interval` (`None`: no pings).
    pub ping_interval: Option<Duration>,
    /// `--allow-origin`.
    pub allow_origin: Vec<String>,
    /// websocketd's `--origin` list, checked instead when set.
    pub origin_hosts: Option<crate::config::OriginHosts>,
    /// Which events run the script (`--events`).
    pub events: Events,
    /// `--http-timeout`: how long a message may take to arrive (beyond its bytes).
    pub http_timeout: Duration,
    /// Bytes of client messages held (`--max-queue-bytes`, `--max-queue-bytes-total`).
    pub queue_budget: Arc<QueueBudget>,
    /// `--per-connection`: which endpoints run one process per connection.
    pub residents: Arc<super::resident::Residents>,
    /// Resumable sessions (`--resume-grace`, ...); `None`: off.
    pub resume: Option<crate::config_resume::Resume>,
    /// `delivery.apply` as a [`crate::gateway::Apply`], made once: every
    /// message and close event hands it to its transport (a clone is a
    /// count, not an allocation per event).
    pub apply: crate::gateway::Apply,
}

impl WsState {
    /// The state `cfg` asks for, around a hub (and its delivery) and a
    /// routing table built already; `port`: the public listener's.
    pub fn new(cfg: &Config, hub: Arc<Hub>, delivery: Arc<dyn Delivery>, routes: Arc<Routes>, port: u16) -> Self {
        let to = delivery.clone();
        let apply: crate::gateway::Apply = Arc::new(move |a| {
            to.apply(a);
        });
        WsState {
            apply,
            hub,
            delivery,
            routes,
            port,
            max_message: cfg.max_message,
            max_queue: cfg.max_queue,
            conn_limits: ConnLimits::new(cfg.max_connections, cfg.max_connections_per_ip),
            ping_interval: cfg.ping_interval,
            allow_origin: cfg.allow_origin.clone(),
            origin_hosts: cfg.origin_hosts.clone(),
            events: cfg.events,
            http_timeout: cfg.http_timeout,
            queue_budget: QueueBudget::new(cfg.max_queue_bytes, cfg.max_queue_bytes_total),
            residents: super::resident::Residents::new(cfg),
            resume: cfg.resume,
        }
    }
}

/// A state for unit tests: the flags `args` (after `--cgi-bin` with the
/// test fixtures), a local hub, and `transport` running every local
/// script's events (no pages).
#[cfg(test)]
pub(crate) fn for_tests(args: &[&str], transport: Arc<dyn crate::gateway::Transport>) -> Arc<WsState> {
    use clap::Parser;

    use crate::gateway::resolve::Resolver;
    use crate::gateway::routes::{Files, Route};

    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgi-bin");
    let flags = ["ws2http", "--cgi-bin", fixtures].into_iter().chain(args.iter().copied());
    let cfg = crate::config::Cli::try_parse_from(flags).expect("flags").into_config().expect("config");
    let outgoing = crate::hub::outgoing::OutgoingBudget::new(
        cfg.max_outgoing_bytes,
        cfg.max_outgoing_bytes_total,
        &crate::metrics::get().outgoing_bytes,
    );
    let hub = Arc::new(Hub::new(cfg.out_queue, outgoing));
    let resolver = Resolver::new(cfg.cgi_bin.clone(), cfg.script.clone(), cfg.handlers.clone());
    let scripts = Route { prefix: "/".into(), transport, pages: None, files: Files::Spawned };
    let routes = Arc::new(Routes::new(resolver, Vec::new(), scripts));
    Arc::new(WsState::new(&cfg, hub.clone(), hub, routes, 9))
}
