//! The routes: each turns its request into [`Action`]s for the delivery
//! (this instance's hub, or every instance's: the routes cannot tell) and
//! answers with what they reached.

use serde_json::json;
use tide::{Request, Response, StatusCode};

use super::body::{body_message, read_body, BodyCap};
use super::state::ApiState;
use super::State;
use super::{error, json_response, param, query};
use crate::action::{check_close, Action, BadClose, CloseCause, Message, MAX_CLOSE_REASON};
use crate::gateway::directive::{parse_line, Context, Line};
use crate::hub::local::ConnView;
use crate::hub::Applied;
use crate::id::ConnId;

fn delivered(n: usize) -> tide::Result {
    json_response(StatusCode::Ok, json!({ "delivered": n }))
}
/// A live connection, wherever it is.
async fn exists(app: &ApiState, id: &ConnId) -> bool {
    app.delivery.find(id).await.is_some()
}

/// Applies one action; how many connections it reached anywhere.
async fn apply_counted(app: &ApiState, action: Action) -> Applied {
    app.delivery.apply_counted(vec![action]).await.pop().unwrap_or(Applied::Reached(0))
}

/// Reads the body as a message, applies the action built from it, answers
/// `{"delivered": N}`.
async fn push(mut req: Request<State>, what: String, make: impl FnOnce(Message) -> Action) -> tide::Result {
    let msg = match body_message(&mut req).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let app = req.state().clone();
    let n = apply_counted(&app, make(msg)).await.reached();
    log::debug!("api: {what}: delivered to {n}");
    delivered(n)
}

pub(super) async fn send(req: Request<State>) -> tide::Result {
    let id = param(&req, "id");
    let app = req.state().clone();
    let to = match ConnId::parse(&id) {
        Some(to) if exists(&app, &to).await => to,
        _ => return error(StatusCode::NotFound, format!("no open connection with id {id:?}")),
    };
    push(req, format!("send to {id}"), |msg| Action::Send { to, msg }).await
}

pub(super) async fn room(req: Request<State>) -> tide::Result {
    let room = param(&req, "room");
    push(req, format!("room {room}"), |msg| Action::Room { room, msg, except: None }).await
}

pub(super) async fn broadcast(req: Request<State>) -> tide::Result {
    let endpoint = query(&req, "endpoint");
    push(req, "broadcast".into(), |msg| Action::Broadcast { endpoint, msg }).await
}

/// Directive lines, all parsed before any is applied: one bad line → 400
/// and nothing happens.
pub(super) async fn actions(mut req: Request<State>) -> tide::Result {
    let cap = BodyCap { bytes: req.state().max_body, flag: "--api-max-body" };
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
    // Counted before they go: how many connections a message reached is
    // `delivered`; what a cap refused is not `applied`.
    let messages: Vec<bool> = parsed.iter().map(is_message).collect();
    let done = req.state().delivery.apply_counted(parsed).await;
    let applied = done.iter().filter(|d| d.is_applied()).count();
    let reached: usize = done.iter().zip(messages).filter(|(_, m)| *m).map(|(d, _)| d.reached()).sum();
    log::debug!("api: {applied} action(s), {reached} message(s) delivered");
    json_response(StatusCode::Ok, json!({ "applied": applied, "delivered": reached }))
}

fn is_message(a: &Action) -> bool {
    a.message().is_some()
}

pub(super) async fn connections(req: Request<State>) -> tide::Result {
    let (room, endpoint) = (query(&req, "room"), query(&req, "endpoint"));
    let list: Vec<ConnView> = req
        .state()
        .delivery
        .list()
        .await
        .into_iter()
        .filter(|v| room.as_ref().is_none_or(|r| v.rooms.contains(r)))
        .filter(|v| endpoint.as_ref().is_none_or(|e| *e == v.endpoint))
        .collect();
    json_response(StatusCode::Ok, serde_json::to_value(list)?)
}

pub(super) async fn connection(req: Request<State>) -> tide::Result {
    let id = param(&req, "id");
    let found = match ConnId::parse(&id) {
        Some(i) => req.state().delivery.find(&i).await,
        None => None,
    };
    match found {
        Some(c) => json_response(StatusCode::Ok, serde_json::to_value(c)?),
        None => error(StatusCode::NotFound, format!("no open connection with id {id:?}")),
    }
}

pub(super) async fn close(req: Request<State>) -> tide::Result {
    let id = param(&req, "id");
    let asked = query(&req, "code");
    let reason = query(&req, "reason").unwrap_or_default();
    let code = match check_close(asked.as_deref(), &reason) {
        Ok(code) => code,
        Err(BadClose::Code) => {
            let c = asked.unwrap_or_default();
            return error(StatusCode::BadRequest, format!("code {c:?}: use 1000-1003, 1007-1014 or 3000-4999"));
        }
        Err(BadClose::Reason) => {
            return error(StatusCode::BadRequest, format!("reason: at most {MAX_CLOSE_REASON} bytes"));
        }
    };
    let Some(conn) = ConnId::parse(&id) else {
        return error(StatusCode::NotFound, format!("no open connection with id {id:?}"));
    };
    let app = req.state().clone();
    let n = if exists(&app, &conn).await {
        app.delivery.apply(Action::Close { conn, code, reason, cause: CloseCause::Api }).reached()
    } else {
        0
    };
    if n == 0 {
        return error(StatusCode::NotFound, format!("no open connection with id {id:?}"));
    }
    log::debug!("api: close {id} with {code}");
    json_response(StatusCode::Ok, json!({ "closed": n }))
}

pub(super) async fn rooms(req: Request<State>) -> tide::Result {
    let rooms = req.state().delivery.rooms().await;
    json_response(StatusCode::Ok, serde_json::to_value(rooms)?)
}

/// Liveness for load balancers and supervisors: no token needed, reveals
/// nothing but that the server answers.
pub(super) async fn healthz(req: Request<State>) -> tide::Result {
    let live = req.state().hub.live_count();
    json_response(StatusCode::Ok, json!({ "status": "ok", "connections": live }))
}

/// Prometheus text format.
pub(super) async fn metrics(req: Request<State>) -> tide::Result {
    let hub = &req.state().hub;
    let text = crate::metrics::get().render(hub.live_count(), hub.rooms().len());
    let mut r = Response::new(StatusCode::Ok);
    r.set_body(text);
    r.insert_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    Ok(r)
}

pub(super) async fn not_found(req: Request<State>) -> tide::Result {
    // HEAD gets GET's headers, Content-Length included.
    let method = if req.method() == tide::http::Method::Head { tide::http::Method::Get } else { req.method() };
    error(StatusCode::NotFound, format!("no such API route: {method} {}", req.url().path()))
}
