//! Resumable sessions, the WebSocket side (issue 17; docs/PROTOCOL.md
//! "Resumable sessions"): the opt-in at the handshake, the resume
//! handshake, and the life of a session connection's sockets.
//!
//! A session connection is served by its own task like any connection
//! (its event worker beside its socket io), but its io is a loop over
//! sockets ([`run`]): when a socket drops without a close frame (causes
//! `dropped`, `ping-timeout`, a write error) the session **detaches**
//! instead of finishing: same id, rooms and metadata, deliveries queued
//! (within `--resume-buffer`), no close event. A resume hands the task a
//! new socket ([`resume`]); the task checks the client's count, replays
//! what it missed, and serves the socket. Any other end is final, as for
//! a plain connection, and so is `--resume-grace` running out
//! (`resume-expired`).
//!
//! The hub keeps the state ([`crate::hub::session`]); only this task
//! touches the sockets, so a resume of a session whose old socket is still
//! attached (the usual case after a network switch: the server has not
//! noticed yet) asks the task to let go of it first.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::{WebSocketSender, WebSocketStream};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use tide::http::upgrade::{Connection, Receiver};
use tide::Response;

use crate::action::CloseCause;
use crate::conn_limits::Slot;
use crate::event::{ConnInfo, EventKind};
use crate::gateway::resolve::Resolved;
use crate::hub::local::Carried;
use crate::hub::session::{Replay, Session, Snapshot, Token};
use crate::hub::shared::{CloseRequest, ConnShared, Ending, Outgoing};
use crate::id::ConnId;
use crate::metrics::{self, Resumed};
use crate::runtime;
use crate::ws::connection::{self, EventTx};
use crate::ws::limits::{ConnBudget, Metered};
use crate::ws::state::WsState;

/// The subprotocol a client offers to ask for a session.
pub const SUBPROTOCOL: &str = "ws2http.session.v1";

/// The start of the second subprotocol a resume offers:
/// `ws2http.resume.<TOKEN>.<RECEIVED>`.
const RESUME: &str = crate::http1::request::RESUME_SUBPROTOCOL;

/// The close code a session's client sends on a socket it leaves for a
/// resume on another (`/ws2http.js` after the network came back): the
/// server treats it as a drop, not as a final close, and the client's
/// browser stops answering pings on that socket (which would acknowledge
/// messages the app never saw).
pub const RESUMING: u16 = 4499;

/// `true` for a session's close frame with [`RESUMING`].
pub(super) fn is_resuming(shared: &ConnShared, frame: Option<&CloseFrame>) -> bool {
    shared.session.is_some() && frame.is_some_and(|f| u16::from(f.code) == RESUMING)
}

/// What a handshake asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// A plain connection (no session offered, or sessions off here).
    Plain,
    /// A new session.
    New,
    /// A resume: the token and the count of messages the client received.
    Resume(Token, u64),
    /// A resume subprotocol that is not one (refused with 4400).
    Malformed,
}

/// What the client's subprotocols ask for. Sessions are off with
/// `--resume-grace 0` and on a per-connection endpoint (`resident`).
pub fn asked(app: &WsState, offered: &[String], resident: bool) -> Asked {
    if app.resume.is_none() || resident || !offered.iter().any(|o| o == SUBPROTOCOL) {
        return Asked::Plain;
    }
    let resumes: Vec<&str> = offered.iter().filter_map(|o| o.strip_prefix(RESUME)).collect();
    match resumes.as_slice() {
        [] => Asked::New,
        [one] => parse_resume(one).map_or(Asked::Malformed, |(t, n)| Asked::Resume(t, n)),
        _ => Asked::Malformed,
    }
}

/// `<TOKEN>.<RECEIVED>`: RECEIVED in decimal digits only.
fn parse_resume(s: &str) -> Option<(Token, u64)> {
    let (token, count) = s.split_once('.')?;
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Token::parse(token)?, count.parse().ok()?))
}

/// The subprotocol a client offers after [`SUBPROTOCOL`] for ws2http to
/// select where it offers no session (`--resume-grace 0`, a
/// `--per-connection` endpoint): browsers fail a handshake that offered
/// subprotocols when the `101` selects none.
pub const PLAIN: &str = "ws2http.plain";

/// The subprotocol ws2http itself selects in a new connection's `101`, if
/// any: the session's for a new session, `ws2http.plain` when the client
/// offered it and gets no session. Either wins over the open script's
/// choice (one log line when it chose another one).
pub fn select(res: &mut Response, conn: &ConnInfo, asked: &Asked, offered: &[String]) {
    let ours = match asked {
        Asked::New => SUBPROTOCOL,
        _ if offered.iter().any(|o| o == PLAIN) => PLAIN,
        _ => return,
    };
    let chosen = res.header("Sec-WebSocket-Protocol").map(|v| v.last().as_str().to_owned());
    if let Some(chosen) = chosen.filter(|c| c != ours) {
        log::info!(
            "[{}] the open script's subprotocol {} is not sent ({ours} is: the client asked for it)",
            conn.id,
            crate::logging::quoted(&chosen)
        );
    }
    res.insert_header("Sec-WebSocket-Protocol", ours);
}

/// What a session connection's task serves it with (the parts a plain
/// connection's `connection::serve` takes).
pub(crate) struct Parts {
    pub app: Arc<WsState>,
    pub conn: Arc<ConnInfo>,
    pub outgoing: Outgoing,
    pub shared: Arc<ConnShared>,
    pub events: EventTx,
    pub budget: Arc<ConnBudget>,
}

/// A socket handed to a session: its upgrade (the `101` is on its way)
/// and, for a resume, the token and the count the client said it received.
struct Incoming {
    upgrade: Receiver,
    /// A resume's token and the count the client said it received.
    resume: Option<(Token, u64)>,
    /// The address the client resumed from (`WS_RESUME_REMOTE_ADDR`).
    peer: String,
    /// A resume's own connection slot, held until its socket is attached
    /// or refused (the session's first slot is the event worker's).
    slot: Option<Slot>,
}

/// What a session's task does next.
enum Next {
    /// Boxed: a resume's token and slot would make every step's result large.
    Attach(Box<Incoming>),
    Detached,
    Final,
    Export,
}

/// Serves a session connection's sockets, one after the other, until it
/// ends (then queues its close event) or moves elsewhere (export).
/// `first`: the socket of its handshake (none for an imported session,
/// which starts detached).
pub(crate) async fn run(p: Parts, first: Option<Receiver>) {
    let Some(session) = p.shared.session.as_deref() else { return };
    let mut next = match first {
        Some(upgrade) => {
            let hello = serde_json::json!({"ws2http": "session", "id": p.conn.id.as_str(), "token": session.lock().token.to_string()});
            session.lock().prelude = Some((hello.to_string(), Vec::new()));
            Next::Attach(Box::new(Incoming { upgrade, resume: None, peer: String::new(), slot: None }))
        }
        None => Next::Detached,
    };
    loop {
        next = match next {
            Next::Attach(incoming) => Box::pin(attach(&p, session, *incoming)).await,
            Next::Detached => detached(&p, session).await,
            Next::Final => return end(&p, session).await,
            Next::Export => {
                // Its snapshot goes now; the worker runs what is queued,
                // then takes the connection out (`hub::session::take_out`).
                // A resume here that came too late: the session moves away.
                if let Some(i) = take_incoming(&mut session.lock()) {
                    runtime::spawn(refuse_upgrade(i.upgrade, 4410, p.app.max_message, i.slot));
                }
                let Parts { outgoing, conn, shared, .. } = p;
                return crate::hub::session::park(&conn, &shared, outgoing);
            }
        };
    }
}

/// Serves one socket of the session (after checking a resume's count):
/// what follows once it ends.
async fn attach(p: &Parts, session: &Session, incoming: Incoming) -> Next {
    let Incoming { upgrade, resume, peer, slot } = incoming;
    // Until the socket is attached or refused, no move to another instance.
    let resuming = Resuming(session);
    let Some(stream) = upgrade.await else {
        log::info!("[{}] session: the client went away during the handshake", p.conn.id);
        return Next::Detached;
    };
    if let Some((token, received)) = &resume {
        // The session ended while this socket was being set up (say, a
        // delivery went over its bound): no resume, 4410.
        if p.shared.close_request().is_some() {
            log::warn!("[{}] refused a resume: the session ended during its handshake (4410)", p.conn.id);
            metrics::get().resumed(Resumed::Expired);
            runtime::spawn(refuse(stream, 4410, p.app.max_message, slot));
            return Next::Final;
        }
        match check_resume(p, session, token, *received) {
            Ok(count) => resume_event(p, count, peer),
            Err((code, next)) => {
                runtime::spawn(refuse(stream, code, p.app.max_message, slot));
                return next;
            }
        }
    }
    // From here on the session's own slot counts the socket.
    drop(slot);
    {
        // Under the lock a resume hands its socket over with: one that came
        // while this socket was being set up makes it let go at once.
        let mut st = session.lock();
        st.attached = true;
        session.let_go(st.incoming.is_some() || st.export.is_some());
    }
    drop(resuming);
    p.shared.seen();
    let stream = Metered::new(stream, p.budget.clone(), p.shared.clone(), p.app.http_timeout);
    // The hub's direct path stays off (no socket attached to the wire): every
    // message goes through the writer, which numbers it.
    let stream = crate::hub::socket::Gated::new(stream, p.shared.clone());
    let ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(super::upgrade::ws_config(p.app.max_message)))
        .await;
    let (app, conn, shared) = (&p.app, &p.conn, &p.shared);
    if resume.is_none() {
        let r = &conn.request;
        log::info!(
            "[{}] {} open from {}:{} (a session)",
            conn.id,
            conn.target.endpoint(),
            r.remote_addr(),
            r.remote_port()
        );
        metrics::add(&metrics::get().connections_opened, 1);
    }
    connection::run_socket(ws.split(), app, conn, &p.outgoing, shared, &p.events, &p.budget).await;
    after_socket(p, session)
}

/// While held, the session is being resumed here ([`crate::hub::session::State::resuming`]).
struct Resuming<'a>(&'a Session);

impl Drop for Resuming<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        // Another resume may be waiting already: it is being resumed still.
        st.resuming = st.incoming.is_some();
    }
}

/// Queues the resume event (when `--events` lists `resume`): after the
/// message events read before the drop, before those read after it. It
/// counts against `--max-queue` like a message event; when that many wait
/// it is skipped (one log line), so a resume/drop loop cannot pile up
/// scripts to run.
fn resume_event(p: &Parts, count: u32, remote_addr: String) {
    let kind = EventKind::Resume { count, remote_addr };
    if !p.app.events.wants(&kind) {
        return;
    }
    if p.budget.events_waiting() >= p.app.max_queue {
        log::warn!(
            "[{}] resume {count}: its event is skipped, {} events wait (--max-queue)",
            p.conn.id,
            p.app.max_queue
        );
        metrics::add(&metrics::get().events_dropped, 1);
        return;
    }
    metrics::get().events_queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    p.budget.event_queued();
    if p.events.unbounded_send(kind).is_err() {
        metrics::get().events_queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        p.budget.event_taken();
    }
}

/// A resume's count against what the session kept: the replay set up for
/// the writer, the token rotated (the resumes so far); or the refusal
/// (4400: the session stays as it was; 4410 on a gap: the session ends,
/// `resume-gap`).
fn check_resume(p: &Parts, session: &Session, used: &Token, received: u64) -> Result<u32, (u16, Next)> {
    let id = &p.conn.id;
    let mut st = session.lock();
    if !st.accepts(used) {
        // The previous token died (the client showed it had the new one)
        // between the look-up and now.
        log::warn!("[{id}] refused a resume: its token is no longer the session's (4410)");
        metrics::get().resumed(Resumed::Expired);
        return Err((4410, Next::Detached));
    }
    let msgs = match st.window.replay(received) {
        Replay::From(msgs) => msgs,
        Replay::Bad => {
            log::warn!("[{id}] refused a resume: it claims {received} messages, {} were sent (4400)", st.window.sent());
            metrics::get().resumed(Resumed::Bad);
            return Err((4400, Next::Detached));
        }
        Replay::Gap => {
            log::warn!("[{id}] refused a resume from message {received}: the session no longer keeps them (4410)");
            metrics::get().resumed(Resumed::Expired);
            let req = CloseRequest { code: 1006, reason: String::new(), cause: CloseCause::ResumeGap };
            p.shared.request_close(req, Ending::Record, None);
            return Err((4410, Next::Final));
        }
    };
    st.rotate(&p.app.hub.sessions, used);
    st.resumes += 1;
    // Replayed next: the window after the client's count, then what was
    // queued for it meanwhile (the writer is not running: nothing is taken
    // off the queue before the prelude is sent).
    let replayed = msgs.len() + p.outgoing.len();
    let hello = serde_json::json!({
        "ws2http": "resumed",
        "id": id.as_str(),
        "token": st.token.to_string(),
        "received": st.received,
        "replayed": replayed,
    });
    log::info!("[{id}] resumed (resume {}): replaying {replayed} message(s) after {received}", st.resumes);
    metrics::get().resumed(Resumed::Ok);
    st.prelude = Some((hello.to_string(), msgs));
    Ok(st.resumes)
}

/// What follows a socket's end: a close that is final ends the session; an
/// export or a resume that took over comes next; otherwise the socket just
/// went away (`dropped`, `ping-timeout`, a write error): detached.
fn after_socket(p: &Parts, session: &Session) -> Next {
    let mut st = session.lock();
    st.attached = false;
    let Some(cause) = p.shared.forget_drop() else { return Next::Final };
    if st.export.is_some() {
        return Next::Export;
    }
    if let Some(incoming) = take_incoming(&mut st) {
        log::info!("[{}] session: a resume takes over from its socket", p.conn.id);
        return Next::Attach(incoming);
    }
    let why = cause.map_or("dropped", CloseCause::as_str);
    log::info!("[{}] session detached ({why}); it waits for a resume", p.conn.id);
    Next::Detached
}

fn take_incoming(st: &mut crate::hub::session::State) -> Option<Box<Incoming>> {
    st.incoming.take().and_then(|b| b.downcast::<Incoming>().ok())
}

/// A detached session waits for a resume, an export or a final close
/// (delivery over its bound, `@close`, the API, shutdown), at most
/// `--resume-grace`: then it ends (`resume-expired`, 1006).
async fn detached(p: &Parts, session: &Session) -> Next {
    let gauge = &metrics::get().sessions_detached;
    gauge.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let grace = p.app.resume.map_or(Duration::ZERO, |r| r.grace);
    let next = std::future::poll_fn(|cx| {
        p.shared.register_waiter(cx);
        if p.shared.close_request().is_some() {
            return std::task::Poll::Ready(Next::Final);
        }
        let mut st = session.lock();
        if st.export.is_some() {
            return std::task::Poll::Ready(Next::Export);
        }
        take_incoming(&mut st).map_or(std::task::Poll::Pending, |i| std::task::Poll::Ready(Next::Attach(i)))
    })
    .or(async {
        runtime::sleep(grace).await;
        let req = CloseRequest { code: 1006, reason: String::new(), cause: CloseCause::ResumeExpired };
        if p.shared.request_close(req, Ending::Record, None) {
            log::info!("[{}] session not resumed within --resume-grace {grace:?}; it ends", p.conn.id);
        }
        Next::Final
    })
    .await;
    gauge.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    next
}

/// The session is over: no resume reaches it any more (one waiting is
/// refused, 4410), and its close event is queued.
async fn end(p: &Parts, session: &Session) {
    let incoming = {
        let mut st = session.lock();
        st.ended = true;
        st.window = Default::default();
        st.keys().for_each(|k| p.app.hub.sessions.forget(k));
        take_incoming(&mut st)
    };
    if let Some(i) = incoming {
        runtime::spawn(refuse_upgrade(i.upgrade, 4410, p.app.max_message, i.slot));
    }
    connection::finish(&p.app, &p.conn, &p.shared, &p.events).await;
}

/// The writer's first frames on a session's socket: the session message,
/// then the messages replayed (`false`: the socket is gone). Nothing on a
/// plain connection.
pub(super) async fn prelude<S>(
    sink: &mut WebSocketSender<S>,
    shared: &ConnShared,
    watch: &mut connection::Watch<'_>,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(session) = shared.session.as_deref() else { return true };
    let Some((hello, replay)) = session.lock().prelude.take() else { return true };
    if !connection::send_one(sink, WsMessage::text(hello), watch).await {
        return false;
    }
    for msg in replay {
        // As the writer sends a message (`connection::write_loop`).
        let sent = match connection::one_frame(msg) {
            Ok(frame) => connection::send_one(sink, frame, watch).await,
            Err(big) => connection::send_fragments(sink, big, watch).await,
        };
        if !sent {
            return false;
        }
    }
    true
}

/// The close code a session's client gets when its instance shuts down and
/// hands the session to another instance of the cluster: resume it (through
/// the load balancer) at once (docs/PROTOCOL.md "Resumable sessions").
pub const RESTART: u16 = 1012;

/// The writer lets go of a session's socket: when its instance hands the
/// session over at shutdown, the client is told with [`RESTART`]; the socket
/// is dropped right after. Not awaited (the writer of every idle connection
/// is as large as its largest await point): the frame goes if the socket
/// takes it at once, as it does unless the client stopped reading (then it
/// sees a drop, and resumes all the same). Nothing otherwise.
pub(super) fn farewell<S>(sink: &mut WebSocketSender<S>, shared: &ConnShared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !shared.session.as_deref().is_some_and(Session::is_restarting) {
        return;
    }
    let frame = CloseFrame { code: CloseCode::from(RESTART), reason: "service restart".into() };
    let sent = futures_util::FutureExt::now_or_never(sink.send(WsMessage::Close(Some(frame))));
    if !matches!(sent, Some(Ok(()))) {
        log::debug!("session: the socket did not take its 1012 at once; dropped without it");
    }
}

/// Sends a ping carrying the session's sent count right after a message, so
/// that the window of an attached session stays small under traffic (not a
/// timed ping: the ping timeout does not count it); `false`: the socket is gone.
pub(super) async fn ask_ack<S>(
    sink: &mut WebSocketSender<S>,
    shared: &ConnShared,
    watch: &mut connection::Watch<'_>,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let payload = shared.session.as_deref().map(Session::ping_payload).unwrap_or_default();
    connection::send_one(sink, WsMessage::Ping(payload), watch).await
}

/// Answers a resume handshake that passed the usual checks (origin,
/// connection limits, endpoint): always `101` with the session
/// subprotocol (a browser cannot read a refused handshake's status); the
/// socket then goes to the session, or is closed with 4410 (no such
/// session: start over) or 4400 (a malformed resume, another endpoint).
///
/// `slot`: the handshake's connection slot, held by the socket until it is
/// attached to the session or its refusal is over (so refusals count
/// against `--max-connections` and the per-address limit).
pub(super) async fn resume(
    app: &Arc<WsState>,
    mut res: Response,
    conn: &ConnInfo,
    asked: Asked,
    slot: Slot,
) -> Response {
    res.insert_header("Sec-WebSocket-Protocol", SUBPROTOCOL);
    let http_res: &mut tide::http::Response = res.as_mut();
    let upgrade =
        Incoming { upgrade: http_res.recv_upgrade().await, resume: None, peer: String::new(), slot: Some(slot) };
    let refused = match asked {
        Asked::Resume(token, received) => hand_over(app, conn, &token, received, upgrade).await,
        _ => {
            log::warn!(
                "[{}] {} refused a resume: malformed resume subprotocol (4400)",
                conn.id,
                conn.target.endpoint()
            );
            metrics::get().resumed(Resumed::Bad);
            Err((4400, upgrade))
        }
    };
    if let Err((code, i)) = refused {
        runtime::spawn(refuse_upgrade(i.upgrade, code, app.max_message, i.slot));
    }
    res
}

/// A session's bounds from `--resume-buffer` and `--resume-buffer-bytes`.
pub(crate) fn limits_of(r: &crate::config_resume::Resume) -> crate::hub::session::Limits {
    crate::hub::session::Limits { messages: r.buffer, bytes: r.buffer_bytes }
}

/// Gives the new socket to the session `token` opens (brought here from
/// another instance first, in cluster mode); the refusal otherwise.
async fn hand_over(
    app: &Arc<WsState>,
    conn: &ConnInfo,
    token: &Token,
    received: u64,
    mut upgrade: Incoming,
) -> Result<(), (u16, Incoming)> {
    let mut found = app.hub.sessions.find(token);
    if found.is_none() {
        // Brought here, it takes the resume's connection slot.
        let slot = std::sync::Mutex::new(upgrade.slot.take());
        let put_in = |snap: Snapshot| {
            let (id, slot) = (snap.id.clone(), slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            import(app, snap, slot)
                .map_err(|why| log::error!("[{id}] session from another instance lost: {why}"))
                .is_ok()
        };
        if app.delivery.claim_session(&token.to_string(), conn.target.endpoint(), &put_in).await {
            found = app.hub.sessions.find(token);
        }
        upgrade.slot = slot.into_inner().unwrap_or_else(|e| e.into_inner());
    }
    let ep = conn.target.endpoint();
    let Some((info, shared)) = found else {
        log::warn!("[{}] {ep} refused a resume: unknown, expired or ended session (4410)", conn.id);
        metrics::get().resumed(Resumed::Expired);
        return Err((4410, upgrade));
    };
    if info.target.endpoint() != ep {
        log::warn!("[{}] {ep} refused a resume of a session of {} (4400)", info.id, info.target.endpoint());
        metrics::get().resumed(Resumed::Bad);
        return Err((4400, upgrade));
    }
    let Some(session) = shared.session.as_deref() else { return Err((4410, upgrade)) };
    let replaced = {
        let mut st = session.lock();
        if st.ended || st.moving || st.export.is_some() {
            // Moving to another instance: a resume there got to it first.
            log::warn!("[{}] {ep} refused a resume: the session is moving to another instance (4410)", info.id);
            metrics::get().resumed(Resumed::Expired);
            return Err((4410, upgrade));
        }
        st.resuming = true;
        let replaced = take_incoming(&mut st);
        upgrade.resume = Some((token.clone(), received));
        upgrade.peer = conn.request.remote_addr().to_owned();
        st.incoming = Some(Box::new(upgrade));
        if st.attached {
            session.let_go(true);
        }
        replaced
    };
    // Two resumes at once with the same token: the later one wins.
    if let Some(old) = replaced {
        runtime::spawn(refuse_upgrade(old.upgrade, 4410, app.max_message, old.slot));
    }
    shared.wake();
    Ok(())
}

/// How long a refusal's close frame may take to go out, and then the
/// client's answer to come: each, so a refusal ends within twice this.
const REFUSAL: Duration = Duration::from_secs(2);

/// Closes a refused resume's socket with `code` once it is upgraded; its
/// connection `slot` is given back when the socket is gone (within
/// `3 * REFUSAL`, the upgrade included).
async fn refuse_upgrade(upgrade: Receiver, code: u16, max_message: usize, slot: Option<Slot>) {
    let _ = runtime::timeout(3 * REFUSAL, async {
        if let Some(stream) = upgrade.await {
            refuse(stream, code, max_message, None).await;
        }
    })
    .await;
    drop(slot);
}

/// Sends the close frame of a refused resume (4410 `session expired`,
/// 4400 `bad resume request`), then waits briefly for the client's answer;
/// the socket is closed, then `slot` given back.
async fn refuse(stream: Connection, code: u16, max_message: usize, slot: Option<Slot>) {
    let config = super::upgrade::ws_config(max_message);
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await;
    let reason = if code == 4410 { "session expired" } else { "bad resume request" };
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
    if runtime::timeout(REFUSAL, ws.close(Some(frame))).await.is_ok() {
        let _ = runtime::timeout(REFUSAL, async { while ws.next().await.is_some() {} }).await;
    }
    drop(ws);
    drop(slot);
}

/// Takes the session of connection `id` out of this instance, without a
/// close event, as one value (its socket, if attached, is dropped without a
/// close frame): `None` when `id` has no session here, or it ended.
/// See [`crate::hub::session::export`].
pub async fn export(app: &WsState, id: &ConnId) -> Option<Snapshot> {
    crate::hub::session::export(&app.hub, id).await
}

/// Puts a session taken out of another instance ([`export`]) into this
/// one, detached: its client resumes it here within `--resume-grace`.
/// `slot`: the connection slot it takes (a resume's), else one is
/// reserved. `Err` says why not (sessions off here, no such endpoint, a limit).
pub fn import(app: &Arc<WsState>, mut snap: Snapshot, slot: Option<Slot>) -> Result<ConnId, String> {
    let limits = app.resume.ok_or("sessions are off here (--resume-grace 0)")?;
    let path = snap.request.path().to_owned();
    let Resolved::Found(routed) = app.routes.resolve(&path) else { return Err(format!("no endpoint at {path} here")) };
    let ip = snap.request.remote_addr.parse().ok();
    let slot = match slot {
        Some(slot) => slot,
        None => app.conn_limits.reserve(ip).map_err(|full| format!("{full:?} connections reached"))?,
    };
    let limits = limits_of(&limits);
    let overflow = snap.take_overflow(limits);
    let session = Session::restored(&snap, limits).ok_or("the snapshot's token is not a token")?;
    let conn = Arc::new(ConnInfo { id: snap.id.clone(), target: routed.target, request: snap.request.info() });
    let carried = Carried { rooms: snap.rooms, meta: snap.meta, queued: snap.queued };
    let (outgoing, shared) = app.hub.register_session(conn.clone(), Some(session), carried);
    let (events, events_rx) = connection::event_queue(&shared);
    let budget = app.queue_budget.conn(connection::evictor(&shared));
    let (c, s, b, t) = (conn.clone(), shared.clone(), budget.clone(), routed.route.transport.clone());
    let worker = connection::event_worker(app.clone(), c, t, events_rx, s, b, slot);
    if let Some(why) = overflow {
        // As a detached session over its bound here: it ends (its close
        // event runs once, here); a resume gets 4410.
        crate::hub::session::overflow(&shared, &conn.id, why);
    }
    let parts = Parts { app: app.clone(), conn: conn.clone(), outgoing, shared, events, budget };
    runtime::spawn(futures_util::FutureExt::map(futures_lite::future::zip(Box::pin(run(parts, None)), worker), |_| ()));
    log::info!("[{}] {} session imported, detached", conn.id, conn.target.endpoint());
    // Arrived after this instance's shutdown closed everything (a move
    // whose cut ran just before): it ends here, as the others did.
    if app.hub.is_shutting_down() {
        let req = CloseRequest { code: 1001, reason: "server shutdown".into(), cause: CloseCause::Shutdown };
        if let Some(shared) = app.hub.shared_of(&conn.id) {
            shared.request_close(req, Ending::Drain, None);
        }
    }
    Ok(conn.id.clone())
}

/// Has the cluster put in, detached, each session another instance hands
/// here when it shuts down ([`crate::hub::Delivery::adopt_with`]): its
/// client resumes it here within `--resume-grace`, or its close event runs
/// here (`resume-expired`).
pub fn adopt_handed(app: &Arc<WsState>) {
    let app_ref = Arc::downgrade(app);
    app.delivery.adopt_with(Box::new(move |snap: Snapshot| {
        let Some(app) = app_ref.upgrade() else { return false };
        let id = snap.id.clone();
        import(&app, snap, None).map_err(|why| log::error!("[{id}] session handed over lost: {why}")).is_ok()
    }));
}

/// Ends, here, each session whose move to another instance was abandoned
/// after its cut ([`crate::hub::Delivery::orphans`]): its client was
/// refused (4410), and this instance holds the only copy, so its close
/// event runs here, once (`resume-expired`, 1006).
pub fn end_orphans(app: &Arc<WsState>) {
    let Some(orphans) = app.delivery.orphans() else { return };
    let app = app.clone();
    runtime::spawn(async move {
        while let Ok(mut snap) = orphans.recv().await {
            let id = snap.id.clone();
            // Its close event does not wait for the events its previous
            // instance still ran: no word of theirs may come here.
            snap.events_pending = false;
            let shared = import(&app, snap, None).map(|_| app.hub.shared_of(&id));
            match shared {
                Ok(Some(shared)) => {
                    let req = CloseRequest { code: 1006, reason: String::new(), cause: CloseCause::ResumeExpired };
                    if shared.request_close(req, Ending::Record, None) {
                        log::info!("[{id}] session ends here: its move was abandoned (resume-expired)");
                    }
                    // Record does not wake the task (it may wait already).
                    shared.wake();
                }
                Ok(None) => log::warn!("[{id}] session not found after its import; it ends at --resume-grace"),
                Err(why) => log::warn!("[{id}] session lost without its close event: {why}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Message;
    use crate::hub::session::Request;
    use crate::ws::fake::Scripted;

    fn m(s: &str) -> Message {
        Message::text(s.to_owned())
    }

    fn state(grace: &str) -> (Arc<WsState>, Arc<Scripted>) {
        let script = Scripted::new(|_| Ok(String::new()));
        (crate::ws::state::for_tests(&["--resume-grace", grace], script.clone()), script)
    }

    #[test]
    fn only_a_well_formed_resume_is_one() {
        let (app, _) = state("30");
        let offered = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let token = Token::random().to_string();
        let resume = format!("{RESUME}{token}.12");
        assert_eq!(asked(&app, &offered(&["chat"]), false), Asked::Plain);
        assert_eq!(asked(&app, &offered(&[SUBPROTOCOL]), false), Asked::New);
        assert_eq!(asked(&app, &offered(&[SUBPROTOCOL]), true), Asked::Plain, "per-connection endpoints");
        assert_eq!(asked(&app, &offered(&[&resume]), false), Asked::Plain, "a resume without the session");
        let Asked::Resume(t, 12) = asked(&app, &offered(&[SUBPROTOCOL, &resume]), false) else { panic!("a resume") };
        assert_eq!(t.to_string(), token);
        for bad in [
            format!("{RESUME}{token}"),
            format!("{RESUME}{token}.+1"),
            format!("{RESUME}{token}."),
            format!("{RESUME}x.1"),
        ] {
            assert_eq!(asked(&app, &offered(&[SUBPROTOCOL, &bad]), false), Asked::Malformed, "{bad}");
        }
        assert_eq!(asked(&app, &offered(&[SUBPROTOCOL, &resume, &resume]), false), Asked::Malformed, "two");
        let (off, _) = state("0");
        assert_eq!(asked(&off, &offered(&[SUBPROTOCOL, &resume]), false), Asked::Plain, "--resume-grace 0");
    }

    #[test]
    fn a_session_put_in_and_taken_out_again_is_the_same_without_an_event() {
        let (app, script) = state("30");
        let request =
            Request { method: "GET".into(), uri: "/mirror.sh?a=1".into(), query: "a=1".into(), ..Default::default() };
        let snap = Snapshot {
            rooms: vec!["r".into()],
            meta: vec![("k".into(), "v".into())],
            received: 3,
            resumes: 1,
            floor: 2,
            window: vec![m("c")],
            queued: vec![m("d")],
            ..Snapshot::bare(request, &Token::random())
        };
        let id = import(&app, snap.clone(), None).expect("imported");
        let view = app.hub.get(&id).expect("in the hub, live");
        assert_eq!((view.rooms, view.endpoint.as_str()), (vec!["r".to_owned()], "/mirror.sh"));
        let token = Token::parse(&snap.token).expect("a token");
        assert!(app.hub.sessions.find(&token).is_some(), "found by its token");
        let back = runtime::block_on(export(&app, &id)).expect("exported");
        assert_eq!(back, snap);
        assert!(!app.hub.is_known(&id) && app.hub.sessions.find(&token).is_none(), "gone from here");
        assert!(runtime::block_on(export(&app, &id)).is_none(), "once");
        assert!(script.seen().is_empty(), "no open, no close: {:?}", script.seen());
    }

    #[test]
    fn an_imported_session_over_its_bounds_ends_at_once_with_one_close_event() {
        let (app, script) = state("30");
        let request = Request { method: "GET".into(), uri: "/mirror.sh".into(), ..Default::default() };
        let token = Token::random();
        let snap = Snapshot { overflow: true, window: vec![m("a")], ..Snapshot::bare(request, &token) };
        let id = import(&app, snap, None).expect("imported");
        runtime::block_on(async {
            while app.hub.is_known(&id) {
                runtime::sleep(Duration::from_millis(5)).await;
            }
        });
        assert_eq!(script.seen(), ["close 1006 resume-overflow"]);
        assert!(app.hub.sessions.find(&token).is_none(), "a resume gets 4410");
    }

    #[test]
    fn an_imported_session_not_resumed_expires_with_one_close_event() {
        let (app, script) = state("0.05");
        let request = Request { method: "GET".into(), uri: "/mirror.sh".into(), ..Default::default() };
        let snap = Snapshot::bare(request, &Token::random());
        let id = import(&app, snap, None).expect("imported");
        runtime::block_on(async {
            while app.hub.is_known(&id) {
                runtime::sleep(Duration::from_millis(5)).await;
            }
        });
        assert_eq!(script.seen(), ["close 1006 resume-expired"]);
        assert!(app.hub.sessions.is_empty());
    }
}
