//! What the control API needs, and nothing else: the delivery its actions
//! go to (and the hub, for this instance's counts), its access rules and
//! its body caps. Defined here, by its one user; `server` builds it from
//! the configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::hosts::AllowedHosts;
use crate::hub::local::Hub;
use crate::hub::Delivery;

/// The control API's state, shared by every request.
pub struct ApiState {
    /// This instance's connections (`/healthz`, `/metrics` count them).
    pub hub: Arc<Hub>,
    /// Where actions are applied and connections found.
    pub delivery: Arc<dyn Delivery>,
    /// `--api-token`.
    pub token: Option<String>,
    /// The `Host` values the API accepts without a token.
    pub hosts: AllowedHosts,
    /// Largest request body (`--api-max-body`).
    pub max_body: usize,
    /// Largest pushed message (`--max-message`).
    pub max_message: usize,
    /// `--http-timeout`: how long a client may take to send a body (beyond its bytes).
    pub http_timeout: Duration,
}

impl ApiState {
    /// The state `cfg` asks for, in front of `delivery` (and its `hub`);
    /// `control`: the address the API listens on.
    pub fn new(cfg: &Config, hub: Arc<Hub>, delivery: Arc<dyn Delivery>, control: SocketAddr) -> Self {
        ApiState {
            hub,
            delivery,
            token: cfg.api_token.clone(),
            hosts: AllowedHosts::new(control, &cfg.api_allow_host),
            max_body: cfg.api_max_body,
            max_message: cfg.max_message,
            http_timeout: cfg.http_timeout,
        }
    }
}
