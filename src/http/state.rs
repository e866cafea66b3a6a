//! What the public site needs: the WebSocket side's state (an upgrade is
//! handed to [`crate::ws::upgrade::handle`] with it), the routing table for
//! pages, `--root`, the request body budget, whether the console is served
//! and the refusals it explains, and the names the listener answers to.
//! One per public listener (`--listen` repeated): the port, the names, the
//! console decision and the refusals are each listener's own, the rest shared.
//! Defined here, by its one user; `server` builds it from the configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::gateway::routes::Routes;
use crate::hosts::PublicHosts;
use crate::http1::body::BodyBudget;
use crate::ws::state::WsState;

use super::refusals::Refusals;

/// The public listener's state, shared by every request.
pub struct SiteState {
    /// The WebSocket side, for upgrades.
    pub ws: Arc<WsState>,
    /// The routing table events use (static files ask it what is a script).
    pub routes: Arc<Routes>,
    /// Which script serves a plain request: `routes` itself, websocketd's
    /// `--cgidir` table, or `None` (no CGI: websocketd without `--cgidir`).
    pub page_routes: Option<Arc<Routes>>,
    /// `--root`, canonical.
    pub root: Option<PathBuf>,
    /// Files the single script's arguments name, never served from `--root`.
    pub named_files: Vec<PathBuf>,
    /// Port of the public listener (SERVER_PORT).
    pub port: u16,
    /// The names the public listener answers to.
    pub public_hosts: PublicHosts,
    /// Request bodies for scripts (`--max-request-body`, `--max-request-body-total`).
    pub body_budget: Arc<BodyBudget>,
    /// `--http-timeout`: how long a client may take to send a body (beyond its bytes).
    pub http_timeout: Duration,
    /// The console page is served at `/` (no `--root`; `--console`/`--no-console`).
    pub console: bool,
    /// Recent refused handshakes, for the console to explain.
    pub refusals: Refusals,
}

impl SiteState {
    /// The state `cfg` asks for around the WebSocket side's `ws` (whose
    /// routing table the pages share); `public`: the listener's address.
    pub fn new(cfg: &Config, ws: Arc<WsState>, public: SocketAddr) -> Self {
        SiteState {
            routes: ws.routes.clone(),
            page_routes: Some(ws.routes.clone()),
            ws,
            root: cfg.root.clone(),
            named_files: match cfg.root {
                Some(_) => super::static_files::named_files(&cfg.script_args),
                None => Vec::new(),
            },
            port: public.port(),
            public_hosts: PublicHosts::new(public, &cfg.allow_host),
            body_budget: BodyBudget::new(cfg.max_request_body, cfg.max_request_body_total),
            http_timeout: cfg.http_timeout,
            console: super::console::enabled(cfg, public),
            refusals: Default::default(),
        }
    }

    /// The state of another public listener (`--listen` repeated) serving
    /// the same site: the same WebSocket side, routes and request body
    /// budget; its own port, the names it answers to and whether it serves
    /// the console, each decided from its own address as if it were the
    /// only one (a loopback listener stays loopback-only beside a public
    /// one), and its own refusals (the console asks the listener it came
    /// from).
    pub fn for_listener(&self, cfg: &Config, public: SocketAddr) -> Self {
        SiteState {
            ws: self.ws.clone(),
            routes: self.routes.clone(),
            page_routes: self.page_routes.clone(),
            root: self.root.clone(),
            named_files: self.named_files.clone(),
            port: public.port(),
            public_hosts: PublicHosts::new(public, &cfg.allow_host),
            body_budget: self.body_budget.clone(),
            http_timeout: self.http_timeout,
            console: super::console::enabled(cfg, public),
            refusals: Default::default(),
        }
    }
}
