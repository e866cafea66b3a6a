//! What an HTTP request was, in the terms the CGI environment uses: the
//! target as the client sent it, the peer, the headers, the server's name;
//! and the one-line plain-text answer every handler gives when it refuses.

use std::net::SocketAddr;

use tide::{Request, Response, StatusCode};

use crate::event::{RequestFields, RequestInfo};
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
    let host = req.header("Host").map(|h| h.last().as_str().to_owned()).unwrap_or_default();
    let server_name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h.to_owned(),
        _ if !host.is_empty() => host,
        _ => url.host_str().unwrap_or("localhost").to_owned(),
    };
    let (method, server_port) = (req.method().to_string(), listener_port(req, server_port).to_string());
    let fields = RequestFields {
        method: &method,
        uri: &uri,
        query: query.as_deref().unwrap_or_default(),
        remote_addr: &remote_addr,
        remote_port: &remote_port,
        server_name: &server_name,
        server_port: &server_port,
    };
    // Names as sent and in order (the HTTP library keeps neither).
    match req.ext::<RawHead>() {
        Some(raw) if !raw.headers.iter().any(|(n, v)| has_resume_token(n, v)) => {
            RequestInfo::new(fields, raw.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        }
        Some(raw) => {
            let kept = raw.headers.iter().filter_map(|(n, v)| Some((n.as_str(), without_resume_tokens(n, v)?)));
            let kept: Vec<(&str, String)> = kept.collect();
            RequestInfo::new(fields, kept.iter().map(|(n, v)| (*n, v.as_str())))
        }
        None => {
            let all = req.iter().flat_map(|(name, values)| values.iter().map(move |v| (name.as_str(), v.as_str())));
            let kept: Vec<(&str, String)> = all.filter_map(|(n, v)| Some((n, without_resume_tokens(n, v)?))).collect();
            RequestInfo::new(fields, kept.iter().map(|(n, v)| (*n, v.as_str())))
        }
    }
}

/// The start of the subprotocol that carries a session's resume token
/// (`ws2http.resume.<TOKEN>.<RECEIVED>`, see `ws::session`). A token is a
/// secret: it never reaches a script's environment (`HTTP_SEC_WEBSOCKET_PROTOCOL`),
/// even where sessions are off and the handshake is served as a plain one.
pub const RESUME_SUBPROTOCOL: &str = "ws2http.resume.";

fn has_resume_token(name: &str, value: &str) -> bool {
    name.eq_ignore_ascii_case("Sec-WebSocket-Protocol") && value.contains(RESUME_SUBPROTOCOL)
}

/// A header's value without the resume subprotocols it lists (`None`: none
/// left, the header goes).
fn without_resume_tokens(name: &str, value: &str) -> Option<String> {
    if !has_resume_token(name, value) {
        return Some(value.to_owned());
    }
    let kept: Vec<&str> =
        value.split(',').map(str::trim).filter(|p| !p.is_empty() && !p.starts_with(RESUME_SUBPROTOCOL)).collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

/// A short plain-text response (errors and refusals): `body` plus a newline.
pub fn text_response(status: StatusCode, body: &str) -> Response {
    let mut r = Response::new(status);
    r.set_content_type("text/plain; charset=utf-8");
    r.set_body(format!("{body}\n"));
    r
}
