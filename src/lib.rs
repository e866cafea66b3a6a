//! ws2http: every WebSocket event (open, message, close) runs a CGI script.
//!
//! One event flows one way: connection → [`event::Event`] → [`gateway`]
//! → a [`backend`] transport → [`action::Action`]s → [`hub::Hub`]. See docs/PROTOCOL.md for the contract
//! scripts rely on.

pub mod action;
pub mod api;
pub mod backend;
pub mod cli_checks;
pub mod cli_sources;
pub mod config;
pub mod config_file;
pub mod conn_limits;
pub mod connect;
pub mod event;
pub mod gateway;
pub mod hosts;
pub mod http;
pub mod http1;
pub mod hub;
pub mod id;
pub mod listen;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod startup_warnings;
pub mod try_cmd;
pub mod ws;

/// The line protocol's old path (tests/fuzz_parsers.rs names it).
#[doc(hidden)]
pub use gateway::directive;

/// The old paths of the CGI pieces, for tests/fuzz_parsers.rs until it
/// names their new homes ([`gateway`], [`backend`]); nothing in `src` uses them.
#[doc(hidden)]
pub mod cgi {
    pub use crate::backend::env;
    pub use crate::gateway::output;
    pub mod http {
        pub use crate::gateway::head::read_head;
    }
}
