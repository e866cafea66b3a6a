//! What an HTTP request was, in the terms the CGI environment uses: the
//! target as the client sent it, the peer, the headers, the server's name;
//! and the one-line plain-text answer every handler gives when it refuses.

use std::net::SocketAddr;

use tide::{Request, Response, StatusCode};

use crate::event::RequestInfo;
use crate::http1::head::RawHead;

/// Path and query as the client sent them (see [`crate::listen`]); falls
/// back to the parsed URL when the raw request line was not captured.
pub fn raw_path_and_query<S>(req: &Request<S>) -> (String, Option<String>) {
    match req.ext::<RawHead>() {
        Some(raw) => {
            let (p, q) = raw.path_and_query();
            (p.to_owned(), q.map(str::to_owned))
        }
        None => (req.url().path().to_owned(), req.url().query().map(str::to_owned)),
    }
}

/// The port of the listener that accepted `req` (its socket's own
/// address: right for each of several `--listen`), or `fallback` when the
/// request carries none.
pub fn listener_port<S>(req: &Request<S>, fallback: u16) -> u16 {
    req.local_addr().and_then(|a| a.parse::<SocketAddr>().ok()).map_or(fallback, |a| a.port())
}

/// What the request was, as the CGI environment describes it; SERVER_PORT
/// is the accepting listener's ([`listener_port`]).
pub fn request_info<S>(req: &Request<S>, server_port: u16) -> RequestInfo {
    let url = req.url();
    let (path, query) = raw_path_and_query(req);
    let uri = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let (remote_addr, remote_port) = match req.peer_addr().and_then(|a| a.parse::<SocketAddr>().ok()) {
        Some(a) => (a.ip().to_string(), a.port().to_string()),
        None => (req.peer_addr().unwrap_or("").to_owned(), String::new()),
    };
    // Names as sent and in order (the HTTP library keeps neither).
    let headers = match req.ext::<RawHead>() {
        Some(raw) => raw.headers.clone(),
        None => req
            .iter()
            .flat_map(|(name, values)| values.iter().map(|v| (name.as_str().to_owned(), v.as_str().to_owned())))
            .collect(),
    };
    let host = req.header("Host").map(|h| h.last().as_str().to_owned()).unwrap_or_default();
    let server_name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h.to_owned(),
        _ if !host.is_empty() => host,
        _ => url.host_str().unwrap_or("localhost").to_owned(),
    };
    RequestInfo {
        method: req.method().to_string(),
        uri,
        query: query.unwrap_or_default(),
        headers,
        remote_addr,
        remote_port,
        server_name,
        server_port: listener_port(req, server_port).to_string(),
    }
}

/// A short plain-text response (errors and refusals): `body` plus a newline.
pub fn text_response(status: StatusCode, body: &str) -> Response {
    let mut r = Response::new(status);
    r.set_content_type("text/plain; charset=utf-8");
    r.set_body(format!("{body}\n"));
    r
}
