//! The control API: lets any program (a cron job, a later HTTP request, a
//! script's background job) push messages and inspect presence at any time.
//! Every route turns its request into [`crate::action::Action`]s for the
//! delivery ([`crate::hub::Delivery`]), which finds its connections
//! wherever they are; the routes ([`handlers`]) never ask where.
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
//! Request bodies are read only up to a cap ([`body`]).

mod body;
mod guard;
mod handlers;
pub mod state;

use percent_encoding::percent_decode_str;
use serde_json::json;
use tide::{Next, Request, Response, StatusCode};

use handlers::*;
use state::ApiState;

/// The state every request of the API sees.
type State = std::sync::Arc<ApiState>;

/// The API's routes, around `state`.
pub fn routes(state: State) -> tide::Server<State> {
    let mut api = tide::with_state(state);
    api.with(log_request);
    api.with(guard::auth);
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

/// One debug line per request, with its status: the API is called for
/// every push a backend makes, so at the default level it says nothing
/// (its refusals are warnings of their own).
fn log_request<'a>(
    req: Request<State>,
    next: Next<'a, State>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = tide::Result> + Send + 'a>> {
    Box::pin(async move {
        let line = format!("api: {} {} {}", req.method(), req.url().path(), req.peer_addr().unwrap_or("?"));
        let res = next.run(req).await;
        log::debug!("{line}: {}", u16::from(res.status()));
        Ok(res)
    })
}

fn param(req: &Request<State>, name: &str) -> String {
    let raw = req.param(name).unwrap_or("");
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}
fn query(req: &Request<State>, key: &str) -> Option<String> {
    req.url().query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests;
