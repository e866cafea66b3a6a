//! ws2http: every WebSocket event (open, message, close) runs a CGI script.
//!
//! One event flows one way: connection → [`event::Event`] → [`backend::Backend`]
//! → [`action::Action`]s → [`hub::Hub`]. See docs/PROTOCOL.md for the contract
//! scripts rely on.

pub mod action;
pub mod api;
pub mod backend;
pub mod cgi;
pub mod cli_checks;
pub mod cli_sources;
pub mod config;
pub mod config_file;
pub mod conn_limits;
pub mod connect;
pub mod console;
pub mod directive;
pub mod event;
pub mod fastcgi;
pub mod hosts;
pub mod http1;
pub mod http_backend;
pub mod hub;
pub mod id;
pub mod listen;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod pool;
pub mod public;
pub mod refusals;
pub mod request;
pub mod runtime;
pub mod server;
pub mod startup_warnings;
pub mod static_files;
pub mod try_cmd;
pub mod ws;
