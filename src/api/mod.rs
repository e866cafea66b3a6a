//! The control API: lets any program (a cron job, a later HTTP request, a
//! script's background job) push messages and inspect presence at any time.
//! Every route turns its request into [`Action`]s for the hub.
//!
//! Without `--api-token` (the default on loopback) anything that can reach the
//! port may call it, and that includes every web page open in the user's
//! browser: a cross-site `POST` with a text or form body needs no preflight
//! (CSRF), and DNS rebinding lets a page read the answers. Programs (curl,
//! cron jobs, scripts using `WS_API_URL`) never send `Origin` or
//! `Sec-Fetch-Site` and always name the address they connect to in `Host`;
//! browsers always do the former on cross-site requests and, after a
//! rebinding, send the attacker's name in `Host`. So without a token a
//! request that looks like it comes from a browser is refused (403, 421)
//! before any route runs. With a token a page cannot forge the
//! `Authorization` header, and these checks are not needed.
//!
//! Request bodies are read only up to a cap (`--api-max-body`, and
//! `--max-message` for a pushed message): a bigger one is refused with 413,
//! from its Content-Length before reading anything, or as soon as a chunked
//! body passes the cap.

use percent_encoding::percent_decode_str;
use serde_json::json;
use tide::{Next, Request, Response, StatusCode};

use crate::action::{Action, CloseCause, Message};
use crate::directive::{parse_line, Context, Line};
use crate::hosts::AllowedHosts;
use crate::hub::ConnView;
use crate::id::ConnId;
use crate::listen::RawHead;
use crate::server::App;

pub fn routes(app: App) -> tide::Server<App> {
    let mut api = tide::with_state(app);
    api.with(log_request);
    api.with(auth);
    // HEAD answers like GET (the HTTP layer sends no body); tide would
    // route it to the catch-all below before trying the GET route.
    api.at("/send/:id").post(send);
    api.at("/rooms").get(rooms).head(rooms);
    api.at("/rooms/:room").post(room);
    api.at("/broadcast").post(broadcast);
    api.at("/actions").post(actions);
    api.at("/connections").get(connections).head(connections);
    api.at("/connections/:id").get(connection).head(connection).delete(close);
    api.at("/healthz").get(healthz).head(healthz);
    api.at("/metrics").get(metrics).head(metrics);
    api.at("/").all(not_found);
    api.at("/*").all(not_found);
    api
}

fn json_response(status: StatusCode, body: serde_json::Value) -> tide::Result {
    let mut r = Response::new(status);
    r.set_body(body.to_string());
    r.set_content_type("application/json");
    Ok(r)
}

fn error(status: StatusCode, msg: impl Into<String>) -> tide::Result {
    json_response(status, json!({ "error": msg.into() }))
}

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// One debug line per request, with its status: the API is called for
/// every push a backend makes, so at the default level it says nothing
/// (its refusals are warnings of their own).
fn log_request<'a>(
    req: Request<App>,
    next: Next<'a, App>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = tide::Result> + Send + 'a>> {
    Box::pin(async move {
        let line = format!("api: {} {} {}", req.method(), req.url().path(), req.peer_addr().unwrap_or("?"));
        let res = next.run(req).await;
        log::debug!("{line}: {}", u16::from(res.status()));
        Ok(res)
    })
}

/// Without a token: refuses requests made by a browser (see the module
/// docs), on every route. With one: every route but /healthz needs it.
fn auth<'a>(
    req: Request<App>,
    next: Next<'a, App>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = tide::Result> + Send + 'a>> {
    Box::pin(async move {
        let open_route = req.url().path() == "/healthz";
        if req.state().api_token.is_none() {
            if let Some(refusal) = browser_context(&req, &req.state().api_hosts) {
                return refusal.respond(&req, &req.state().api_hosts);
            }
        }
        if let (Some(token), false) = (req.state().api_token.as_deref(), open_route) {
            let given = req
                .header("Authorization")
                .and_then(|v| v.last().as_str().strip_prefix("Bearer ").map(str::trim).map(str::to_owned));
            let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
            if !ok {
                log::warn!("api: {} {} refused: missing or wrong bearer token", req.method(), req.url().path());
                let mut r =
                    error(StatusCode::Unauthorized, "missing or wrong token: send Authorization: Bearer TOKEN")?;
                r.insert_header("WWW-Authenticate", "Bearer");
                return Ok(r);
            }
        }
        Ok(next.run(req).await)
    })
}

fn param(req: &Request<App>, name: &str) -> String {
    let raw = req.param(name).unwrap_or("");
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

/// The request body as a message: binary for application/octet-stream,
/// otherwise text (which must be UTF-8). At most `--max-message` bytes (and
/// `--api-max-body`).
async fn body_message(req: &mut Request<App>) -> Result<Message, tide::Result> {
    // The HTTP layer labels a body without Content-Type as octet-stream;
    // here no type means text, so look at what the client really sent.
    let sent = match req.ext::<RawHead>() {
        Some(raw) => raw.content_type.clone(),
        None => req.header("Content-Type").map(|v| v.last().as_str().to_owned()),
    };
    let binary =
        sent.is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/octet-stream"));
    let app = req.state().clone();
    let cap = match app.max_message < app.api_max_body {
        true => BodyCap { bytes: app.max_message, flag: "--max-message" },
        false => BodyCap { bytes: app.api_max_body, flag: "--api-max-body" },
    };
    let body = read_body(req, cap).await?;
    if binary {
        Ok(Message::Binary(body.into()))
    } else {
        Message::text_from_bytes(body).ok_or_else(|| {
            error(
                StatusCode::BadRequest,
                "the body is not valid UTF-8; send binary data with Content-Type: application/octet-stream",
            )
        })
    }
}

fn delivered(n: usize) -> tide::Result {
    json_response(StatusCode::Ok, json!({ "delivered": n }))
}

/// Every live connection: this instance's, or the whole cluster's. If Redis
/// cannot be reached, this instance's, with a log line.
async fn views(app: &App) -> Vec<ConnView> {
    match &app.cluster {
        None => app.hub.list(None, None),
        Some(c) => c.list(&app.hub).await.unwrap_or_else(|e| {
            log::warn!("api: {e}");
            app.hub.list(None, None)
        }),
    }
}

/// A live connection here or (cluster) anywhere. If Redis cannot be
/// reached, only this instance's, with a log line.
async fn find(app: &App, id: &ConnId) -> Option<ConnView> {
    match &app.cluster {
        None => app.hub.get(id),
        Some(c) => c.find(&app.hub, id).await.unwrap_or_else(|e| {
            log::warn!("api: {e}");
            app.hub.get(id)
        }),
    }
}

async fn exists(app: &App, id: &ConnId) -> bool {
    find(app, id).await.is_some()
}

/// How many connections a room message or broadcast reaches: counted here,
/// or from the cluster's presence (other instances deliver on their own).
async fn reach(app: &App, action: &Action, local: usize) -> usize {
    if app.cluster.is_none() {
        return local;
    }
    let all = views(app).await;
    match action {
        Action::Room { room, except, .. } => {
            all.iter().filter(|v| v.rooms.contains(room) && except.as_ref().is_none_or(|e| e.as_str() != v.id)).count()
        }
        Action::Broadcast { endpoint, .. } => {
            all.iter().filter(|v| endpoint.as_ref().is_none_or(|e| *e == v.endpoint)).count()
        }
        _ => local,
    }
}

/// Reads the body as a message, applies the action built from it, answers
/// `{"delivered": N}`.
async fn push(mut req: Request<App>, what: String, make: impl FnOnce(Message) -> Action) -> tide::Result {
    let msg = match body_message(&mut req).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let app = req.state().clone();
    let action = make(msg);
    let probe = action.clone();
    let local = app.apply(action);
    let n = reach(&app, &probe, local).await;
    log::debug!("api: {what}: delivered to {n}");
    delivered(n)
}

async fn send(req: Request<App>) -> tide::Result {
    let id = param(&req, "id");
    let app = req.state().clone();
    let to = match ConnId::parse(&id) {
        Some(to) if exists(&app, &to).await => to,
        _ => return error(StatusCode::NotFound, format!("no open connection with id {id:?}")),
    };
    push(req, format!("send to {id}"), |msg| Action::Send { to, msg }).await
}

async fn room(req: Request<App>) -> tide::Result {
    let room = param(&req, "room");
    push(req, format!("room {room}"), |msg| Action::Room { room, msg, except: None }).await
}

async fn broadcast(req: Request<App>) -> tide::Result {
    let endpoint = query(&req, "endpoint");
    push(req, "broadcast".into(), |msg| Action::Broadcast { endpoint, msg }).await
}

/// Directive lines, all parsed before any is applied: one bad line → 400
/// and nothing happens.
async fn actions(mut req: Request<App>) -> tide::Result {
    let cap = BodyCap { bytes: req.state().api_max_body, flag: "--api-max-body" };
    let body = match read_body(&mut req, cap).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body = match String::from_utf8(body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BadRequest, format!("the body must be UTF-8 text of directive lines: {e}")),
    };
    let mut parsed = Vec::new();
    for (i, line) in body.lines().enumerate() {
        match parse_line(line.strip_suffix('\r').unwrap_or(line), Context::Api) {
            Ok(Line::Empty) => {}
            Ok(Line::Action(a)) => parsed.push(a),
            Ok(Line::Text(_)) => {
                return error(
                    StatusCode::BadRequest,
                    format!(
                    "line {}: plain text has no recipient here; use @send ID TEXT, @room ROOM TEXT or @broadcast TEXT",
                    i + 1
                ),
                )
            }
            Err(e) => return error(StatusCode::BadRequest, format!("line {}: {e}", i + 1)),
        }
    }
    let applied = parsed.len();
    let app = req.state().clone();
    let mut reached = 0;
    for a in parsed {
        let is_message = matches!(a, Action::Send { .. } | Action::Room { .. } | Action::Broadcast { .. });
        let probe = is_message.then(|| a.clone());
        let n = app.apply(a);
        if let Some(probe) = probe {
            reached += reach(&app, &probe, n).await;
        }
    }
    log::debug!("api: {applied} action(s), {reached} message(s) delivered");
    json_response(StatusCode::Ok, json!({ "applied": applied, "delivered": reached }))
}

fn query(req: &Request<App>, key: &str) -> Option<String> {
    req.url().query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

async fn connections(req: Request<App>) -> tide::Result {
    let (room, endpoint) = (query(&req, "room"), query(&req, "endpoint"));
    let list: Vec<ConnView> = views(req.state())
        .await
        .into_iter()
        .filter(|v| room.as_ref().is_none_or(|r| v.rooms.contains(r)))
        .filter(|v| endpoint.as_ref().is_none_or(|e| *e == v.endpoint))
        .collect();
    json_response(StatusCode::Ok, serde_json::to_value(list)?)
}

async fn connection(req: Request<App>) -> tide::Result {
    let id = param(&req, "id");
    let found = match ConnId::parse(&id) {
        Some(i) => find(req.state(), &i).await,
        None => None,
    };
    match found {
        Some(c) => json_response(StatusCode::Ok, serde_json::to_value(c)?),
        None => error(StatusCode::NotFound, format!("no open connection with id {id:?}")),
    }
}

async fn close(req: Request<App>) -> tide::Result {
    let id = param(&req, "id");
    let code = match query(&req, "code") {
        None => 1000,
        Some(c) => match c.parse::<u16>() {
            Ok(c) if crate::action::is_sendable_close_code(c) => c,
            _ => return error(StatusCode::BadRequest, format!("code {c:?}: use 1000-1003, 1007-1014 or 3000-4999")),
        },
    };
    let reason = query(&req, "reason").unwrap_or_default();
    if reason.len() > 123 {
        return error(StatusCode::BadRequest, "reason: at most 123 bytes");
    }
    let Some(conn) = ConnId::parse(&id) else {
        return error(StatusCode::NotFound, format!("no open connection with id {id:?}"));
    };
    let app = req.state().clone();
    let n = if exists(&app, &conn).await {
        app.apply(Action::Close { conn, code, reason, cause: CloseCause::Api })
    } else {
        0
    };
    if n == 0 {
        return error(StatusCode::NotFound, format!("no open connection with id {id:?}"));
    }
    log::debug!("api: close {id} with {code}");
    json_response(StatusCode::Ok, json!({ "closed": n }))
}

async fn rooms(req: Request<App>) -> tide::Result {
    let mut rooms = std::collections::BTreeMap::<String, usize>::new();
    for v in views(req.state()).await {
        for r in v.rooms {
            *rooms.entry(r).or_default() += 1;
        }
    }
    json_response(StatusCode::Ok, serde_json::to_value(rooms)?)
}

/// Liveness for load balancers and supervisors: no token needed, reveals
/// nothing but that the server answers.
async fn healthz(req: Request<App>) -> tide::Result {
    let live = req.state().hub.live_count();
    json_response(StatusCode::Ok, json!({ "status": "ok", "connections": live }))
}

/// Prometheus text format.
async fn metrics(req: Request<App>) -> tide::Result {
    let hub = &req.state().hub;
    let text = crate::metrics::get().render(hub.live_count(), hub.rooms().len());
    let mut r = Response::new(StatusCode::Ok);
    r.set_body(text);
    r.insert_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    Ok(r)
}

async fn not_found(req: Request<App>) -> tide::Result {
    // HEAD gets GET's headers, Content-Length included.
    let method = if req.method() == tide::http::Method::Head { tide::http::Method::Get } else { req.method() };
    error(StatusCode::NotFound, format!("no such API route: {method} {}", req.url().path()))
}

/// The most a route reads of a request body, and the flag that sets it.
#[derive(Clone, Copy)]
struct BodyCap {
    bytes: usize,
    flag: &'static str,
}

/// The request body, at most `cap.bytes` of it: a declared Content-Length
/// over the cap is refused before anything is read; a body without one
/// (chunked) is read up to one byte past the cap, then refused. Only what
/// the cap allows is ever held in memory.
async fn read_body(req: &mut Request<App>, cap: BodyCap) -> Result<Vec<u8>, tide::Result> {
    use crate::http1::body::{read_whole, ReadError};
    let declared = req.len();
    let timeout = req.state().http_timeout;
    let mut body = req.take_body();
    match read_whole(&mut body, declared, cap.bytes, timeout, |_| true).await {
        Ok(buf) => Ok(buf),
        Err(ReadError::TooLarge) => {
            let what = declared.map_or("chunked body".to_owned(), |n| format!("Content-Length {n}"));
            Err(too_large(req, &what, cap))
        }
        Err(e) => {
            let (code, why) = e.answer(cap.bytes, cap.flag);
            Err(error(StatusCode::try_from(code).unwrap_or(StatusCode::BadRequest), why))
        }
    }
}

/// 413 for a body over its cap, with one log line. The connection is closed
/// (every API response says `Connection: close`); what the client still sends
/// is not kept.
fn too_large(req: &Request<App>, what: &str, cap: BodyCap) -> tide::Result {
    let (bytes, flag) = (cap.bytes, cap.flag);
    log::warn!("api: {} {} refused (413): {what} over the {bytes}-byte cap ({flag})", req.method(), req.url().path());
    let mut r = error(
        StatusCode::PayloadTooLarge,
        format!("the body is larger than {bytes} bytes ({flag}); send less, or start ws2http with a larger {flag}"),
    )?;
    r.insert_header("Connection", "close");
    Ok(r)
}

/// Why a request is taken for one made by a web browser.
#[derive(Debug, PartialEq, Eq)]
enum BrowserContext {
    /// An `Origin` header (browsers send it on cross-site requests and every POST).
    Origin(String),
    /// `Sec-Fetch-Site` other than `none` (a page made the request).
    FetchSite(String),
    /// A `Host` that is not the API's address (DNS rebinding), or not exactly one.
    Host(Option<String>),
}

fn browser_context(req: &Request<App>, hosts: &AllowedHosts) -> Option<BrowserContext> {
    let one = |name: &str| req.header(name).map(|v| v.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", "));
    if let Some(origin) = one("Origin") {
        return Some(BrowserContext::Origin(origin));
    }
    if let Some(site) = one("Sec-Fetch-Site").filter(|s| !s.trim().eq_ignore_ascii_case("none")) {
        return Some(BrowserContext::FetchSite(site));
    }
    let host = req.header("Host").filter(|v| v.iter().count() == 1).map(|v| v.last().as_str().to_owned());
    match host {
        Some(h) if hosts.allows(&h) => None,
        other => Some(BrowserContext::Host(other)),
    }
}

impl BrowserContext {
    /// 403 or 421 with a JSON error saying what to do, and one log line.
    fn respond(&self, req: &Request<App>, hosts: &AllowedHosts) -> tide::Result {
        let (method, path) = (req.method(), req.url().path());
        let from_page = "without --api-token the control API serves programs (curl, cron jobs, scripts), \
                         not web pages: call it from server-side code, or start ws2http with --api-token \
                         TOKEN and send Authorization: Bearer TOKEN";
        let (status, why, msg) = match self {
            BrowserContext::Origin(o) => (
                StatusCode::Forbidden,
                format!("sent by a web page (Origin {})", crate::logging::quoted(o)),
                format!("refused: this request was made by a web page (Origin header); {from_page}"),
            ),
            BrowserContext::FetchSite(s) => (
                StatusCode::Forbidden,
                format!("sent by a web page (Sec-Fetch-Site {})", crate::logging::quoted(s)),
                format!("refused: this request was made by a web page (Sec-Fetch-Site header); {from_page}"),
            ),
            BrowserContext::Host(h) => {
                let host = h.as_deref().map_or("(missing or repeated)".to_owned(), crate::logging::quoted);
                let msg = format!(
                    "refused: Host {host} is not this API's address; use {} (as WS_API_URL does), \
                     or start ws2http with --api-allow-host NAME to accept another name",
                    hosts.url()
                );
                (StatusCode::MisdirectedRequest, format!("Host {host} is not this API's address"), msg)
            }
        };
        log::warn!("api: {method} {path} refused ({}): {why}", u16::from(status));
        error(status, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
