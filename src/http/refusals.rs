//! The handshakes the server refused lately, so the console can say why a
//! connection failed.
//!
//! A browser hides a refused handshake: `new WebSocket()` reports only close
//! code 1006, never the HTTP status or body, and a page cannot send an
//! upgrade request by hand (`fetch` may not set `Upgrade` or
//! `Sec-WebSocket-*`). A plain `GET` of the same URL would run the script
//! as classic CGI, so that is no diagnosis either. Instead the server keeps
//! its last few refusals (status, reason, and the log line it wrote), and
//! the console asks for the one of its own address and URL:
//! `GET /?ws2http-refusal=PATH_AND_QUERY` → JSON.
//!
//! Kept only while the console is served, at most [`KEEP`] of them for
//! [`FOR`], each reason cut to [`REASON_BYTES`]; a client reads only
//! refusals of its own IP address (and a page of another site cannot read
//! the answer at all: no CORS).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tide::{Request, Response, StatusCode};

use super::state::SiteState;

const KEEP: usize = 32;
const FOR: Duration = Duration::from_secs(120);
const REASON_BYTES: usize = 300;
/// The query parameter of the console's question.
const PARAM: &str = "ws2http-refusal";

/// One refused handshake.
#[derive(Clone, Debug)]
struct Refusal {
    at: Instant,
    ip: String,
    target: String,
    status: u16,
    reason: String,
    /// Text of the server log line about it, when there is one.
    log: Option<String>,
}

/// The last refusals, newest last.
#[derive(Default)]
pub struct Refusals {
    recent: Mutex<VecDeque<Refusal>>,
}

/// What a handshake asked for, taken before it is handled.
pub struct Attempt {
    ip: String,
    path: String,
    query: Option<String>,
}

impl Attempt {
    /// `None` when the console is not served (nothing is kept then).
    pub fn of(req: &Request<Arc<SiteState>>) -> Option<Attempt> {
        if !req.state().console {
            return None;
        }
        let (path, query) = crate::http1::request::raw_path_and_query(req);
        Some(Attempt { ip: peer_ip(req), path, query })
    }

    fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

fn peer_ip<S>(req: &Request<S>) -> String {
    let peer = req.peer_addr().unwrap_or_default();
    peer.parse::<std::net::SocketAddr>().map_or_else(|_| peer.to_owned(), |a| a.ip().to_string())
}

impl Refusals {
    /// Passes a handshake's answer on, noting it first when it is a
    /// refusal and the console is served.
    pub async fn note(app: &SiteState, attempt: Option<Attempt>, mut res: Response) -> Response {
        let status = crate::http1::response::status_of(res.as_ref());
        let Some(attempt) = attempt.filter(|_| status != 101) else { return res };
        let log = res.ext::<crate::ws::upgrade::LogHint>().map(|h| h.0.clone());
        // The body is already in memory (a short text, or the open script's
        // rejection, bounded by --max-output): read it and put it back.
        let had_type = res.header("Content-Type").is_some();
        let body = res.take_body().into_bytes().await.unwrap_or_default();
        let reason = String::from_utf8_lossy(&body[..body.len().min(REASON_BYTES)]).trim().to_owned();
        res.set_body(body);
        if !had_type {
            res.remove_header("Content-Type");
        }
        let refusal =
            Refusal { at: Instant::now(), ip: attempt.ip.clone(), target: attempt.target(), status, reason, log };
        let mut recent = app.refusals.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(refusal);
        res
    }

    /// The answer to the console's question (`GET /?ws2http-refusal=…`),
    /// or `None` for any other request.
    pub fn answer(req: &Request<Arc<SiteState>>) -> Option<Response> {
        let app = req.state();
        if !app.console || req.url().path() != "/" || req.method() != tide::http::Method::Get {
            return None;
        }
        let (_, target) = req.url().query_pairs().find(|(k, _)| k == PARAM)?;
        let ip = peer_ip(req);
        let found = {
            let recent = app.refusals.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.iter().rev().find(|r| r.ip == ip && r.target == target && r.at.elapsed() < FOR).cloned()
        };
        let body = match found {
            Some(r) => serde_json::json!({
                "found": true, "status": r.status, "reason": r.reason, "log": r.log,
                "seconds_ago": r.at.elapsed().as_secs(),
            }),
            None => serde_json::json!({ "found": false }),
        };
        let mut res = Response::new(StatusCode::Ok);
        res.set_content_type("application/json");
        res.insert_header("Cache-Control", "no-store");
        res.set_body(body.to_string());
        Some(res)
    }
}
