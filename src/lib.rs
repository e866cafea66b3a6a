//! ws2http: every WebSocket event (open, message, close) runs a CGI script.
//!
//! One event flows one way: connection → [`event::Event`] → [`gateway`]
//! → a [`backend`] transport → [`action::Action`]s → [`hub::local::Hub`]. See docs/PROTOCOL.md for the contract
//! scripts rely on.

pub mod action;
pub mod api;
pub mod backend;
pub mod cli_checks;
pub mod cli_sources;
pub mod config;
pub mod config_file;
pub mod config_outbound;
pub mod config_resume;
pub mod conn_limits;
pub mod connect;
pub mod endpoint_settings;
pub mod event;
pub mod gateway;
pub mod hosts;
pub mod http;
pub mod http1;
pub mod hub;
pub mod id;
pub mod listen;
pub mod logging;
pub mod malloc;
pub mod manual;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod stackbuf;
pub mod startup_warnings;
pub mod subcommand_args;
pub mod tls;
pub mod try_cmd;
pub mod websocketd;
pub mod ws;
