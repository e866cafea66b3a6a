//! The WebSocket handshake, done by hand inside tide: check the request,
//! run the open event, and only then answer `101 Switching Protocols` (or the
//! script's own rejection).

use std::sync::Arc;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::WebSocketStream;
use tide::{Request, Response, StatusCode};

use crate::action::Action;
use crate::conn_limits::Slot;
use crate::event::{ConnInfo, EventKind, Target};
use crate::gateway::resolve::Resolved;
use crate::gateway::{Head, Outcome, Output, Transport};
use crate::http1::fields::{is_field_value, lists_token};
use crate::http1::request::{raw_path_and_query, request_info, text_response as text};
use crate::hub::session::Token;
use crate::runtime;
use crate::ws::limits::Metered;
use crate::ws::session::{self, Asked};
use crate::ws::state::WsState;
use crate::ws::{connection, resident};
use futures_util::future::Either;

/// `true` when the request asks for a WebSocket upgrade.
pub fn is_upgrade<S>(req: &Request<S>) -> bool {
    let has_token = |name: &str, token: &str| {
        req.header(name).is_some_and(|vals| lists_token(vals.iter().map(|v| v.as_str()), token))
    };
    has_token("Upgrade", "websocket") && has_token("Connection", "upgrade")
}

/// Handles an upgrade request end to end: check the request, reserve a
/// connection slot, run the open event, and only then answer `101` and
/// start the connection (or answer the refusal). Generic over the
/// listener's state: the WebSocket side's own is `ws`.
pub async fn handle<S>(req: Request<S>, ws: &Arc<WsState>) -> tide::Result {
    let opening = match check(&req, ws) {
        // Shutting down (its sessions go to other instances): a resume here
        // would pull its session back; the helpers retry, elsewhere.
        Ok(checked) if matches!(checked.asked, Asked::Resume(..)) && ws.delivery.draining() => {
            let mut r =
                text(StatusCode::ServiceUnavailable, "this instance is shutting down; resume through another one");
            r.insert_header("Retry-After", "1");
            return Ok(r);
        }
        Ok(checked) if matches!(checked.asked, Asked::Resume(..) | Asked::Malformed) => {
            let Checked { key, slot, conn, offered, asked, .. } = checked;
            let res = switching_protocols(&key, &Head::default(), &offered, &conn);
            // The socket holds the slot until it is attached or refused.
            return Ok(session::resume(ws, res, &conn, asked, slot).await);
        }
        Ok(checked) => open(ws, checked).await,
        Err(refused) => Err(refused),
    };
    match opening {
        Ok(opening) => {
            // The socket itself, for the hub's direct writes (our HTTP/1 server puts it there).
            let socket = req.ext::<crate::http1::conn::UpgradeSocket>().map(|s| s.0.clone());
            Ok(start(ws.clone(), opening, socket).await)
        }
        Err(refused) => Ok(*refused),
    }
}

/// A handshake that passed the checks: its key, a connection slot, the
/// connection it would be, the transport of its route (chosen here once,
/// for every event of the connection), and the subprotocols the client
/// offered.
struct Checked {
    key: String,
    slot: Slot,
    conn: Arc<ConnInfo>,
    transport: Arc<dyn Transport>,
    offered: Vec<String>,
    /// `--per-connection` selects the endpoint: one process, no events.
    resident: bool,
    /// A session (new or resumed) or a plain connection.
    asked: Asked,
}

/// The checks before any script runs, in order: method, version and key,
/// origin, a connection slot, the endpoint.
fn check<S>(req: &Request<S>, app: &WsState) -> Result<Checked, Refused> {
    let key = handshake_key(req)?;
    let path = raw_path_and_query(req).0;
    check_origin(req, app, &path)?;
    let slot = reserve_slot(req, app, &path)?;
    let (target, transport) = resolve_target(app, &path)?;
    let offered = offered_subprotocols(req);
    let resident = app.residents.selects(&path, target.endpoint(), &*transport);
    let asked = session::asked(app, &offered, resident);
    let conn = Arc::new(ConnInfo { id: app.delivery.new_conn_id(), target, request: request_info(req, app.port) });
    log::debug!("[{}] {} handshake from {}", conn.id, conn.target.endpoint(), conn.request.remote_addr());
    Ok(Checked { key, slot, conn, transport, offered, resident, asked })
}

/// A connection the open event accepted, not started yet: `res` is its
/// `101`, `actions` what the open script printed.
struct Opening {
    conn: Arc<ConnInfo>,
    transport: Arc<dyn Transport>,
    slot: Slot,
    actions: Vec<Action>,
    res: Response,
    /// The connection's process, when it runs one (`--per-connection`).
    session: Option<resident::Session>,
    /// A resumable session (`ws2http.session.v1` selected).
    resumable: bool,
}

/// Runs the open event of a checked handshake: the `101` it earned, or the
/// refusal.
async fn open(app: &WsState, checked: Checked) -> Result<Opening, Refused> {
    let Checked { key, slot, conn, transport, offered, resident, asked } = checked;
    if resident {
        let session = start_process(app, &conn, &*transport)?;
        let mut res = switching_protocols(&key, &Head::default(), &offered, &conn);
        session::select(&mut res, &conn, &asked, &offered);
        let session = Some(session);
        return Ok(Opening { conn, transport, slot, actions: Vec::new(), res, session, resumable: false });
    }
    let accepted = run_open(app, &conn, &*transport).await?;
    let mut res = switching_protocols(&key, &accepted.head, &offered, &conn);
    let resumable = asked == Asked::New;
    session::select(&mut res, &conn, &asked, &offered);
    Ok(Opening { conn, transport, slot, actions: accepted.actions, res, session: None, resumable })
}

/// Starts the process of a per-connection endpoint instead of its open
/// event: 429 when `--max-connection-procs` are running, 500 when it cannot
/// start (`resident::start` logged why).
fn start_process(app: &WsState, conn: &Arc<ConnInfo>, transport: &dyn Transport) -> Result<resident::Session, Refused> {
    let hint = format!("[{}] {}: refused a handshake", conn.id, conn.target.endpoint());
    let refusal = match resident::start(app, conn, transport) {
        Ok(session) => return Ok(session),
        Err(resident::NotStarted::Full(_)) => {
            let mut r = text(StatusCode::TooManyRequests, "too many per-connection processes; try again later");
            r.insert_header("Retry-After", "5");
            r
        }
        Err(resident::NotStarted::Failed) => {
            text(StatusCode::InternalServerError, "the endpoint's process could not be started; see the server log")
        }
    };
    crate::metrics::add(&crate::metrics::get().handshakes_refused, 1);
    Err(refused(refusal, hint))
}

/// A handshake refused: the response that says why (boxed, as a
/// `Response` is large).
type Refused = Box<Response>;

/// The start of the log line the server wrote about a refused handshake,
/// attached to the refusal (a response extension) so the console can tell
/// the user exactly what to look for; none when nothing is logged (a
/// malformed request, an unknown path).
#[derive(Clone, Debug)]
pub struct LogHint(pub String);

/// A refusal, with the start of the log line written about it.
fn refused(mut res: Response, hint: String) -> Refused {
    res.insert_ext(LogHint(hint));
    Box::new(res)
}

/// The method and version checks; the client's `Sec-WebSocket-Key` when
/// they pass.
fn handshake_key<S>(req: &Request<S>) -> Result<String, Refused> {
    if req.method() != tide::http::Method::Get {
        return Err(Box::new(text(StatusCode::MethodNotAllowed, "a WebSocket handshake must be a GET request")));
    }
    if req.header("Sec-WebSocket-Version").map(|v| v.last().as_str().trim()) != Some("13") {
        let mut r = text(StatusCode::UpgradeRequired, "unsupported WebSocket version; this server speaks version 13");
        r.insert_header("Sec-WebSocket-Version", "13");
        return Err(Box::new(r));
    }
    match req.header("Sec-WebSocket-Key") {
        Some(k) => Ok(k.last().as_str().trim().to_owned()),
        None => Err(Box::new(text(StatusCode::BadRequest, "missing Sec-WebSocket-Key header"))),
    }
}

/// Refuses a cross-origin handshake unless `--allow-origin` allows it
/// (web pages in the user's browser are untrusted).
fn check_origin<S>(req: &Request<S>, app: &WsState, path: &str) -> Result<(), Refused> {
    let header = |name: &str| req.header(name).map(|v| v.last().as_str().to_owned());
    let (origin, host) = (header("Origin"), header("Host"));
    let port = crate::http1::request::listener_port(req, app.port);
    let (origin, host) = (origin.as_deref(), host.as_deref());
    // Set by our HTTP/1 server for a connection that came over TLS.
    let tls = req.url().scheme() == "https";
    let allowed = match &app.origin_hosts {
        Some(list) => {
            let same_site = || !list.same_origin || super::origin::allowed_over_tls(origin, host, &[], port);
            super::origin::listed(origin, host, list, port) && (!tls || same_site())
        }
        None if tls => super::origin::allowed_over_tls(origin, host, &app.allow_origin, port),
        None => super::origin::allowed(origin, host, &app.allow_origin, port),
    };
    if allowed {
        return Ok(());
    }
    let hint = format!(
        "{path}: refused a handshake from origin {} (host {})",
        crate::logging::quoted(&header("Origin").unwrap_or_default()),
        crate::logging::quoted(&header("Host").unwrap_or_default())
    );
    log::warn!("{hint}; allow it with --allow-origin");
    crate::metrics::add(&crate::metrics::get().handshakes_refused, 1);
    Err(refused(text(StatusCode::Forbidden, "cross-origin WebSocket handshakes are not allowed here"), hint))
}

/// Takes one of the connection slots (`--max-connections`, per IP and in
/// total), or answers 503 when they are all taken.
fn reserve_slot<S>(req: &Request<S>, app: &WsState, path: &str) -> Result<Slot, Refused> {
    let ip = req.peer_addr().and_then(|a| a.parse::<std::net::SocketAddr>().ok()).map(|a| a.ip());
    app.conn_limits.reserve(ip).map_err(|full| {
        let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
        let hint = format!("{path}: refused a handshake from {ip}:");
        log::warn!("{hint} {full:?} connections reached");
        crate::metrics::add(&crate::metrics::get().handshakes_refused, 1);
        let mut r = text(StatusCode::ServiceUnavailable, "too many connections; try again later");
        r.insert_header("Retry-After", "5");
        refused(r, hint)
    })
}

/// The script behind `path` and the transport of its route: 404 when
/// there is none, 500 when it cannot be run.
fn resolve_target(app: &WsState, path: &str) -> Result<(Target, Arc<dyn Transport>), Refused> {
    match app.routes.resolve(path) {
        Resolved::Found(r) => Ok((r.target, r.route.transport.clone())),
        Resolved::NotFound => Err(Box::new(text(StatusCode::NotFound, "no WebSocket endpoint here"))),
        Resolved::NotRunnable(why) => {
            log::error!("{path}: {why}");
            Err(refused(
                text(StatusCode::InternalServerError, "the endpoint's script cannot be run; see the server log"),
                format!("{path}: "),
            ))
        }
    }
}

/// The subprotocols the client offered, in its order.
fn offered_subprotocols<S>(req: &Request<S>) -> Vec<String> {
    req.header("Sec-WebSocket-Protocol")
        .map(|v| {
            v.iter().flat_map(|p| p.as_str().split(',').map(|s| s.trim().to_owned()).collect::<Vec<_>>()).collect()
        })
        .unwrap_or_default()
}

/// What an open event that accepted the connection said: the header block
/// for the `101`, and the actions to apply once the connection is registered.
struct Accepted {
    head: Head,
    actions: Vec<Action>,
}

/// Runs the open event, which decides whether the connection opens at all
/// (without it in --events, every handshake that got this far is accepted).
/// A failed script is a 500, an unavailable backend a 502, a rejection the
/// script's own response.
async fn run_open(app: &WsState, conn: &Arc<ConnInfo>, transport: &dyn Transport) -> Result<Accepted, Refused> {
    // Buffered: nothing is applied before the handshake is answered.
    let mut items = Vec::new();
    let outcome = match app.events.wants(&EventKind::Open) {
        true => connection::dispatch(app, conn, transport, EventKind::Open, &mut |o| items.push(o), None).await,
        false => Outcome::Success,
    };
    // `dispatch` logged the outcome as "[id] /endpoint open: …".
    let hint = |what: &str| format!("{} open: {what}", conn.target.endpoint());
    match outcome {
        Outcome::Success => {}
        Outcome::Failed(_) => {
            let res = text(StatusCode::InternalServerError, "the endpoint's open script failed; see the server log");
            return Err(refused(res, hint("script failed")));
        }
        Outcome::Unavailable(_) => {
            let res = text(StatusCode::BadGateway, "the endpoint's backend is unavailable; see the server log");
            return Err(refused(res, hint("backend unavailable")));
        }
    }
    let mut head = Head::default();
    let mut actions = Vec::new();
    let mut reject_body = None;
    for item in items {
        match item {
            Output::Head(h) => head = h,
            Output::Action(a) => actions.push(a),
            Output::RejectBody(b) => reject_body = Some(b),
        }
    }
    if !head.is_success() {
        let res = rejection(conn, &head, reject_body.unwrap_or_default());
        let status = crate::http1::response::status_of(res.as_ref());
        return Err(refused(res, hint(&format!("rejected {status}"))));
    }
    Ok(Accepted { head, actions })
}

/// The `101 Switching Protocols` answer, with the open script's cookies and
/// chosen subprotocol (header values that cannot be sent are dropped, and
/// so is a subprotocol the client did not offer).
fn switching_protocols(key: &str, head: &Head, offered: &[String], conn: &ConnInfo) -> Response {
    let mut res = Response::new(StatusCode::SwitchingProtocols);
    res.insert_header("Upgrade", "websocket");
    res.insert_header("Connection", "Upgrade");
    res.insert_header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()));
    for cookie in head.get_all("Set-Cookie") {
        if is_field_value(cookie.as_bytes()) {
            res.append_header("Set-Cookie", cookie);
        } else {
            log::warn!("[{}] dropped a Set-Cookie header that is not printable ASCII", conn.id);
        }
    }
    if let Some(proto) = head.get("Sec-WebSocket-Protocol").filter(|p| is_field_value(p.as_bytes())) {
        // RFC 6455 §4.1: a client fails a connection whose 101 names a
        // subprotocol it did not offer, so such a choice is not sent.
        if !offered.iter().any(|o| o == proto) {
            log::warn!(
                "[{}] open script chose subprotocol {} which the client did not offer ({}); dropped it from the 101",
                conn.id,
                crate::logging::quoted(proto),
                offered.iter().map(|o| crate::logging::quoted(o)).collect::<Vec<_>>().join(", ")
            );
        } else {
            res.insert_header("Sec-WebSocket-Protocol", proto);
        }
    }
    res
}

/// Registers the connection, applies the open script's actions, and spawns
/// the connection's task (its socket io beside its event worker), which
/// starts once `res` (the `101`) has been sent.
async fn start(app: Arc<WsState>, opening: Opening, socket: Option<crate::runtime::TcpStream>) -> Response {
    let Opening { conn, transport, slot, actions, mut res, session, resumable } = opening;
    // Register before answering so the open script's messages are queued
    // ahead of anything else.
    let resume = app.resume.filter(|_| resumable).as_ref().map(session::limits_of);
    let resume = resume.map(|limits| crate::hub::session::Session::new(Token::issue(&conn.id), limits));
    let (outgoing, shared) = app.hub.register_session(conn.clone(), resume, Default::default());
    for a in actions {
        app.delivery.apply(a);
    }
    // Unbounded (no pre-allocated slots per idle connection); the reader
    // enforces --max-queue.
    let (events_tx, events_rx) = connection::event_queue(&shared);
    // The worker runs in the connection's own task, beside its reader and
    // writer: a message's event, its script's reply and the write to the
    // socket then need no hand-off between tasks (each cost a thread wake).
    let budget = app.queue_budget.conn(connection::evictor(&shared));
    let (c, s, b) = (conn.clone(), shared.clone(), budget.clone());
    let worker = match session {
        None => Either::Left(connection::event_worker(app.clone(), c, transport, events_rx, s, b, slot)),
        // Boxed: larger than the event worker (280 bytes against 120), and
        // inline it would make every event connection's task as large.
        Some(session) => Either::Right(Box::pin(resident::run(app.clone(), c, session, events_rx, s, b, slot))),
    };

    let http_res: &mut tide::http::Response = res.as_mut();
    let upgrade = http_res.recv_upgrade().await;
    let live = Live { app, conn, outgoing, shared, events_tx, budget, socket };
    runtime::spawn(connection_task(live, upgrade, worker));
    res
}

/// What a registered connection's task serves it with.
struct Live {
    app: Arc<WsState>,
    conn: Arc<ConnInfo>,
    outgoing: crate::hub::shared::Outgoing,
    shared: Arc<crate::hub::shared::ConnShared>,
    events_tx: connection::EventTx,
    budget: Arc<crate::ws::limits::ConnBudget>,
    /// For the hub's direct writes, attached once the `101` is out.
    socket: Option<crate::runtime::TcpStream>,
}

/// The connection's one task: its socket io (once the `101` went out) beside
/// its event worker. Its size is what every idle connection pays for it
/// (`idle_size` in the tests).
fn connection_task(
    live: Live,
    upgrade: tide::http::upgrade::Receiver,
    worker: impl std::future::Future<Output = ()> + Send,
) -> impl std::future::Future<Output = ()> + Send {
    use futures_util::FutureExt;
    let io = if live.shared.session.is_some() {
        let Live { app, conn, outgoing, shared, events_tx, budget, socket } = live;
        // A session's sockets go without the hub's direct path; this
        // clone, kept, would hold the socket open after a drop.
        drop(socket);
        let parts = session::Parts { app, conn, outgoing, shared, events: events_tx, budget };
        Either::Left(Box::pin(session::run(parts, Some(upgrade))))
    } else {
        // Chained, not one `async` block: a block keeps what it captured
        // beside the futures it hands it to (`serve` here), for the
        // connection's life; a chain's next step takes its place.
        Either::Right(upgrade.then(move |stream| match stream {
            Some(stream) => Either::Left(serve_socket(stream, live)),
            None => Either::Right(async move {
                let Live { app, conn, shared, events_tx, .. } = &live;
                log::warn!("[{}] the connection went away during the handshake", conn.id);
                connection::finish(app, conn, shared, events_tx).await;
            }),
        }))
    };
    // Returned as is: an `async` block around it would store `io` and
    // `worker` twice (captured, then moved into the zip): +2 KiB per idle
    // connection, measured.
    futures_lite::future::zip(io, worker).map(|_| ())
}

/// The upgraded socket as the connection's WebSocket, served until it ends.
fn serve_socket(stream: tide::http::upgrade::Connection, live: Live) -> impl std::future::Future<Output = ()> + Send {
    use futures_util::FutureExt;
    let Live { app, conn, outgoing, shared, events_tx, budget, socket } = live;
    // Every byte of data frames read counts against
    // --max-queue-bytes-total; a message must keep arriving.
    let stream = Metered::new(stream, budget.clone(), shared.clone(), app.http_timeout);
    // The hub may write whole messages between tungstenite's (hub::socket).
    let stream = crate::hub::socket::Gated::new(stream, shared.clone());
    if let Some(socket) = socket {
        shared.wire.attach(socket);
    }
    // Boxed: inline, this step's state (the stream twice, the config)
    // would be the largest of the task, which every idle connection pays
    // for its whole life.
    let ws = Box::pin(WebSocketStream::from_raw_socket(stream, Role::Server, Some(ws_config(app.max_message))));
    ws.then(move |ws| {
        log::info!(
            "[{}] {} open from {}:{}",
            conn.id,
            conn.target.endpoint(),
            conn.request.remote_addr(),
            conn.request.remote_port()
        );
        crate::metrics::add(&crate::metrics::get().connections_opened, 1);
        connection::serve(ws, app, conn, outgoing, shared, events_tx, budget)
    })
}

/// tungstenite's read buffer: what every connection holds for reading.
const READ_BUFFER: usize = 128;

/// The largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The WebSocket settings of every connection, sized for many idle ones.
pub(super) fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        // A control frame (a close reason: up to 125 bytes) is never
        // "too big", whatever --max-message says.
        .max_frame_size(Some(max_message.max(MAX_CONTROL_PAYLOAD)))
        // tungstenite allocates its read buffer up front and reads at most
        // its size per read, so its size is paid by every idle connection:
        // 128 KiB by default (4 KiB measured 12.2 KB of server RSS per idle
        // connection, 512 bytes 8.6 KB). Small, as the socket under it is
        // read ahead in large chunks only while bytes come (`read_ahead`).
        // Bigger frames grow the buffer as needed.
        .read_buffer_size(READ_BUFFER)
        // Send each frame at once (no write batching): lowest latency.
        .write_buffer_size(0)
}

/// The open script said no: its status, headers and body are the response.
fn rejection(conn: &ConnInfo, head: &Head, body: Vec<u8>) -> Response {
    if let (true, Some(status)) = (head.is_interim(), head.status) {
        // Not a final answer, as for pages: 502, and the log says why.
        log::error!(
            "[{}] {} open: Status {status} is an interim status, not an answer; answering 502",
            conn.id,
            conn.target.endpoint()
        );
        return text(StatusCode::BadGateway, "the endpoint's open script answered with an interim (1xx) status");
    }
    let who = format!("[{}] ", conn.id);
    crate::gateway::response::to_response(head, head.status.unwrap_or(500), &who, |_| body.into())
}

#[cfg(test)]
mod tests;
