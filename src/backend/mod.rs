//! Transports: how an event reaches the program that answers it. Each is a
//! [`crate::gateway::Transport`] and nothing more; the output pipeline they
//! all feed is the gateway's.
//!
//! - [`spawn`]: a fresh process per event (CGI).
//! - [`fastcgi`]: a request to a FastCGI server (php-fpm).
//! - [`http`]: a POST to a web server.
//!
//! [`env`] describes an event the CGI way (for `spawn` and `fastcgi`), and
//! [`pool`] holds the connections of the network transports.

pub mod env;
pub mod fastcgi;
pub mod http;
pub mod pool;
pub mod spawn;
