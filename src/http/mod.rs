//! The public site: plain HTTP requests on the public listener. [`public`]
//! routes every request (a WebSocket upgrade to [`crate::ws`], a script as
//! classic CGI through [`cgi`] or FastCGI, a file from `--root` through
//! [`static_files`], or the [`console`]; [`client_js`] is the browser
//! helper at `/ws2http.js`); [`refusals`] keeps the refused
//! handshakes the console explains; [`state`] is what they share. Around
//! HTTPS: [`redirect`] is the plain listener that sends browsers there,
//! [`hsts`] the header that keeps them there.

pub mod cgi;
pub mod client_js;
pub mod console;
pub mod extra_headers;
pub mod hsts;
pub mod public;
pub mod redirect;
pub mod refusals;
pub mod state;
pub mod static_files;
