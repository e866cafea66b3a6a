//! One open connection: reads frames into events, writes queued messages,
//! and makes sure the close event runs exactly once, whatever ended it.
//!
//! Events of a connection run strictly in order on its own worker; different
//! connections run in parallel.
//!
//! A client that breaks a limit or the protocol is closed with its own code
//! (1009 too big, 1013 queue full, 1008 a message too slow, 1002/1007
//! protocol error) and one log line: the reader asks for the close and stops reading, so nothing the
//! client sends afterwards costs memory or log lines.
//!
//! Once a connection has ended, what becomes of the message events it still
//! had queued depends on how it ended. The client closed it (a close frame:
//! `ws.send(x); ws.close()` in a browser): they still run, in order, then the
//! close event; a message event can act for others (`@room`, `@set`), and
//! the client said all it had to say before saying goodbye. Otherwise (the
//! TCP connection dropped, a limit, a protocol error, `@close`, the control
//! API, shutdown) they are dropped with one log line: nobody is there to
//! have wanted them, and running them only held script slots that live
//! clients wait for.
//!
//! A panic while an event is dispatched (a bug in a backend) is caught: the
//! event counts as failed and the worker goes on, so the close event still
//! runs exactly once and the connection leaves the hub.
//!
//! The writer sends a message over 16 KiB in fragments: tungstenite's write
//! buffer never shrinks, so whole frames left every connection holding the
//! largest message it was ever sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use async_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::WebSocketStream;
use async_tungstenite::{WebSocketReceiver, WebSocketSender};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use futures_util::future::select;

use crate::action::{CloseCause, Message};
use crate::event::{ConnInfo, Event, EventKind};
use crate::gateway::slots::Slot;
use crate::gateway::{self, Outcome, Output, Sink, Transport};
use crate::hub::shared::{CloseRequest, ConnShared, Ending, Outgoing};
use crate::ws::limits::{ConnBudget, Evict, OverBudget, Refused};
use crate::ws::pinger::Pinger;
use crate::ws::state::WsState;
use crate::{metrics, runtime};

pub use crate::ws::event_queue::{event_queue, EventRx, EventTx};

/// How long the server waits for the client to answer its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs one event through the gateway and `transport` (the one the
/// handshake's route chose for the connection), sending its output to
/// `out` as it comes: the hub's apply for message and close events, a
/// buffer for the open event (its actions wait until the handshake is
/// answered). Logs one line and counts the event.
pub async fn dispatch(
    app: &WsState,
    conn: &Arc<ConnInfo>,
    transport: &dyn Transport,
    kind: EventKind,
    out: &mut Sink<'_>,
    slot: Option<Slot>,
) -> Outcome {
    dispatch_with(app, conn, transport, kind, out, slot, None).await
}

/// [`dispatch`], with `direct` applying the actions as `out` does (see
/// [`gateway::Call::direct`]).
async fn dispatch_with(
    app: &WsState,
    conn: &Arc<ConnInfo>,
    transport: &dyn Transport,
    kind: EventKind,
    out: &mut Sink<'_>,
    slot: Option<Slot>,
    direct: Option<gateway::Apply>,
) -> Outcome {
    let (rooms, meta) = app.hub.snapshot(&conn.id);
    let event = Event { kind, conn: conn.clone(), rooms, meta };
    let started = Instant::now();
    // The status an open script refused the connection with, if it did
    // (the last header block counts, as for the handshake's answer).
    let mut rejected = None;
    let is_open = event.kind == EventKind::Open;
    let mut watch = |o: Output| {
        if let (Output::Head(h), true) = (&o, is_open) {
            // A 1xx is not an answer: the handshake gets 502 (`upgrade::rejection`).
            rejected = (!h.is_success()).then(|| if h.is_interim() { 502 } else { h.status.unwrap_or(500) });
        }
        out(o)
    };
    let slot = match slot {
        Some(slot) => slot,
        None => transport.slots().acquire().await,
    };
    let outcome = gateway::run_with(transport, &event, &mut watch, slot, direct).await;
    let took = started.elapsed();
    let kind = kind_index(&event.kind);
    let result = match outcome {
        Outcome::Success => 0,
        Outcome::Failed(_) => 1,
        Outcome::Unavailable(_) => 2,
    };
    metrics::get().event(kind, result, took);
    let (id, ep, name) = (&conn.id, conn.target.endpoint(), event.kind.name());
    // `{:.1?}` of the duration, written for less (`logging::Took`).
    let took = crate::logging::Took(took);
    match &outcome {
        Outcome::Success => match rejected {
            Some(status) => log::info!("[{id}] {ep} {name}: rejected {status} in {took}"),
            None => log::info!("[{id}] {ep} {name}: ok in {took}"),
        },
        Outcome::Failed(why) => log::warn!("[{id}] {ep} {name}: script failed after {took}: {why}"),
        Outcome::Unavailable(why) => log::warn!("[{id}] {ep} {name}: backend unavailable after {took}: {why}"),
    }
    outcome
}

/// Runs the message and close events of one connection, in order.
/// Holds the connection's slot (`--max-connections`) until the close event ran.
///
/// Once the connection has ended, the message events still queued run only
/// when the client closed it ([`drops_queue`]); the close event runs exactly
/// once, whatever happens to the events before it.
// An `async move` block, not an `async fn`: an `async fn` keeps its arguments
// twice (rust-lang/rust#62958), in every idle connection's task.
#[allow(clippy::manual_async_fn)]
pub fn event_worker(
    app: Arc<WsState>,
    conn: Arc<ConnInfo>,
    transport: Arc<dyn Transport>,
    mut events: EventRx,
    shared: Arc<ConnShared>,
    budget: Arc<ConnBudget>,
    slot: crate::conn_limits::Slot,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let (mut dropped, mut closed) = (0usize, false);
        loop {
            // (`let else`, not `while let`: the latter keeps its `Option`
            // beside the event's box below.)
            let Some(kind) = events.next().await else { break };
            let last = matches!(kind, EventKind::Close { .. });
            // Boxed, all of it: an event's states (its slot, its script, the
            // follower after it) live on the heap while it runs, not in every
            // idle connection's task (the worker future is sized for its
            // largest await point: +1.2 KiB per idle connection with the
            // script's state inline, measured with the bench's idle workload).
            // One box per event, for all of them.
            Box::pin(run_event(&app, &conn, &transport, &shared, &budget, kind, &mut dropped)).await;
            if last {
                closed = true;
                break;
            }
        }
        // The queue ended without a close event: the session moves elsewhere.
        if !closed && shared.session.is_some() {
            // Held here too (it moved on before its previous instance's word
            // came): this instance has run its events only once those have
            // run, so its own word waits for that one.
            if let Some(session) = shared.session.as_deref().filter(|s| s.is_held()) {
                Box::pin(session.wait_released(&conn.id)).await;
            }
            if let Some(to) = crate::hub::session::take_out(&app.hub, &conn, &shared) {
                app.delivery.events_ran(&conn.id, &to);
            }
        } else {
            app.hub.remove(&conn.id);
            metrics::add(&metrics::get().connections_closed, 1);
        }
        drop(slot);
    }
}

/// One event of [`event_worker`]'s (`dropped`: message events dropped so
/// far, logged with the close event).
async fn run_event(
    app: &Arc<WsState>,
    conn: &Arc<ConnInfo>,
    transport: &Arc<dyn Transport>,
    shared: &Arc<ConnShared>,
    budget: &Arc<ConnBudget>,
    kind: EventKind,
    dropped: &mut usize,
) {
    // A session moved here waits until its previous instance has run
    // the events it had queued there (`hub::session::hold`); the event
    // still counts against --max-queue meanwhile.
    if let Some(session) = shared.session.as_deref().filter(|s| s.is_held()) {
        session.wait_released(&conn.id).await;
    }
    metrics::get().events_queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if matches!(kind, EventKind::Message { .. } | EventKind::Resume { .. }) {
        budget.event_taken();
    }
    let last = matches!(kind, EventKind::Close { .. });
    if let EventKind::Close { code, reason, cause } = &kind {
        log_closed(conn, shared, *code, reason, *cause);
    }
    if last && *dropped > 0 {
        metrics::add(&metrics::get().events_dropped, *dropped as u64);
        log::info!("[{}] the connection ended with {dropped} message event(s) still queued; dropped them", conn.id);
    }
    let len = match &kind {
        EventKind::Message { payload, .. } => Some(payload.len()),
        _ => None,
    };
    // A message waits for its --max-procs slot here, and runs only if
    // its connection is still wanted once it has one: one that waited
    // while the client went away (or the server began to shut down) is
    // dropped like the queued ones (docs/PROTOCOL.md).
    let slot = match len.is_some() && !drops_queue(app, shared) && app.events.wants(&kind) {
        true => Some(transport.slots().acquire().await),
        false => None,
    };
    if len.is_some() && drops_queue(app, shared) {
        *dropped += 1;
    } else if app.events.wants(&kind) {
        // Messages not in --events never get here (the reader drops
        // them); the close event always does, to end the worker.
        dispatch_guarded(app, conn, &**transport, kind, slot).await;
    }
    if let Some(len) = len {
        budget.done(len);
        crate::ws::follow::session(app, conn, transport, shared, budget).await;
    }
}

/// Why and how the connection closed: logged by its worker once the events
/// before the close have run, so that a connection's lines come out in the
/// order things happened to it (the reader, the writer and other
/// connections only note why, in [`ConnShared::note_close`]).
pub(crate) fn log_closed(conn: &ConnInfo, shared: &ConnShared, code: u16, reason: &str, cause: CloseCause) {
    let (id, ep) = (&conn.id, conn.target.endpoint());
    if let Some(why) = shared.take_close_note() {
        log::warn!("[{id}] {ep} {why}");
    }
    log::info!("[{id}] {ep} closed: {code} {} ({})", crate::logging::quoted(reason), cause.as_str());
}

/// `true` when the message events still waiting must be dropped: the server
/// is shutting down (it waits only for close events, whether or not the
/// client answered the close yet), or the connection has ended, and not by
/// the client's close frame (cause `client`).
pub(crate) fn drops_queue(app: &WsState, shared: &ConnShared) -> bool {
    app.hub.is_shutting_down() || (shared.has_ended() && shared.close_cause() != Some(CloseCause::Client))
}

/// [`dispatch`], surviving a panic inside it (a bug in a backend): the
/// event is logged and counted as failed, and the worker goes on.
pub(crate) async fn dispatch_guarded(
    app: &WsState,
    conn: &Arc<ConnInfo>,
    transport: &dyn Transport,
    kind: EventKind,
    slot: Option<Slot>,
) -> Outcome {
    let (name, index) = (kind.name(), kind_index(&kind));
    let started = Instant::now();
    let mut apply = |o: Output| {
        if let Output::Action(a) = o {
            app.delivery.apply(a);
        }
    };
    // The same apply, for a transport that applies where it reads the
    // output (a spawned script's worker thread: the reply goes out without
    // waking this task first).
    let direct = app.apply.clone();
    let run = std::panic::AssertUnwindSafe(dispatch_with(app, conn, transport, kind, &mut apply, slot, Some(direct)));
    match futures_lite::FutureExt::catch_unwind(run).await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let took = started.elapsed();
            metrics::get().event(index, 1, took);
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            log::error!(
                "[{}] {} {name}: panicked after {took:.1?} ({why}); counted as failed, the connection goes on",
                conn.id,
                conn.target.endpoint()
            );
            Outcome::Failed(format!("panicked: {why}"))
        }
    }
}

/// The event's index in the `ws2http_events_total` counters.
fn kind_index(kind: &EventKind) -> usize {
    match kind {
        EventKind::Open => 0,
        EventKind::Message { .. } => 1,
        EventKind::Close { .. } => 2,
        EventKind::Resume { .. } => 3,
    }
}

/// Serves an upgraded connection until it ends, then queues its close event.
///
/// Split here, outside the future: what a future is given stays in it for
/// its whole life, and the stream (432 bytes) would stay in every idle
/// connection's task after the split moved it out. An `async move` block,
/// not an `async fn`: an `async fn` keeps its arguments twice (as given,
/// and moved into its body: rust-lang/rust#62958); so are the reader and
/// the writer.
pub fn serve<S>(
    ws: WebSocketStream<S>,
    app: Arc<WsState>,
    conn: Arc<ConnInfo>,
    outgoing: Outgoing,
    shared: Arc<ConnShared>,
    events: EventTx,
    budget: Arc<ConnBudget>,
) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    async move {
        // The select itself, not through `run_socket`: its references would
        // be one more layer in every idle connection's task.
        {
            let parked = AtomicBool::new(false);
            let writer = write_loop(sink, &app, &outgoing, &shared, &parked);
            let reader = read_loop(stream, &app, &conn, &shared, &events, &budget, &parked);
            select(std::pin::pin!(reader), std::pin::pin!(writer)).await;
        }
        drop(outgoing);
        finish(&app, &conn, &shared, &events).await;
    }
}

/// Reads and writes one socket of the connection until either side ends
/// it (a resumable session serves several in turn: `ws::session`).
pub(crate) async fn run_socket<S>(
    (sink, stream): (WebSocketSender<S>, WebSocketReceiver<S>),
    app: &WsState,
    conn: &ConnInfo,
    outgoing: &Outgoing,
    shared: &ConnShared,
    events: &EventTx,
    budget: &ConnBudget,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let parked = AtomicBool::new(false);
    let writer = write_loop(sink, app, outgoing, shared, &parked);
    let reader = read_loop(stream, app, conn, shared, events, budget, &parked);
    // Whichever ends first ends the socket.
    select(std::pin::pin!(reader), std::pin::pin!(writer)).await;
}

/// What the writer does next.
enum Step {
    Send(Message),
    Ended,
    Tick,
    Abort,
}

/// Sends queued messages and pings until the queue ends (the hub asked for
/// a close: then the close frame goes out) or the connection is aborted.
// An `async move` block, not an `async fn`: an `async fn` keeps its arguments
// twice (rust-lang/rust#62958), in every idle connection's task.
#[allow(clippy::manual_async_fn)]
fn write_loop<'a, S>(
    mut sink: WebSocketSender<S>,
    app: &'a WsState,
    outgoing: &'a Outgoing,
    shared: &'a ConnShared,
    reader_parked: &'a AtomicBool,
) -> impl std::future::Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    async move {
        let mut watch = Watch { pinger: Pinger::new(app.ping_interval), shared };
        // A session's first frames: its session message, then what it replays.
        if !Box::pin(super::session::prelude(&mut sink, shared, &mut watch)).await {
            return super::session::farewell(&mut sink, shared);
        }
        loop {
            let step = std::future::poll_fn(|cx| next_step(cx, outgoing, &mut watch)).await;
            // A message from the queue: the hub's direct writes wait until it is sent.
            let queued = matches!(step, Step::Send(_));
            // A session asks for an acknowledgement now (`session::ask_ack`).
            let mut ack = false;
            // `step` is moved into the match (`identity`), not matched in
            // place: it would stay in the future beside the send's box below.
            let frame = match std::convert::identity(step) {
                Step::Send(msg) => {
                    // Off the queue: no longer counted against --max-outgoing-bytes.
                    // (Its buffer stays in the total until its last fragment is
                    // handed to tungstenite.)
                    shared.taken(msg.len());
                    ack = shared.session.as_deref().is_some_and(|s| s.number(&msg, app.hub.outgoing()));
                    one_frame(msg)
                }
                Step::Ended => break,
                // A session handed to another instance tells its client (1012).
                Step::Abort => return super::session::farewell(&mut sink, shared),
                // Not when the answer may be in the socket, unread while a
                // follower runs an event (`ws::follow`): then it pings again.
                Step::Tick if watch.pinger.unanswered(shared) && !shared.wire.lent_with_bytes() => {
                    return watch.pinger.time_out(shared)
                }
                Step::Tick => {
                    watch.pinger.pinged();
                    // A session's pings carry its sent count: their pongs acknowledge it.
                    Ok(WsMessage::Ping(shared.session.as_deref().map(|s| s.ping_payload()).unwrap_or_default()))
                }
            };
            // Boxed, as every state but the wait for the next step: the task
            // of every idle connection is as large as its largest await point.
            if !Box::pin(send_step(&mut sink, frame, (queued, ack), &mut watch)).await {
                return super::session::farewell(&mut sink, shared);
            }
        }
        // The queue ends when the hub asks for a close (or the connection is
        // already over): send the close frame, then give the client a moment
        // to answer it. Not when the reader stopped at a limit (1009 and the
        // like): nothing reads the answer then (tungstenite cannot resume in
        // the middle of a refused frame), and a client still sending the
        // refused message would learn of the close only when the grace ended.
        Box::pin(close_handshake(sink, shared, reader_parked)).await
    }
}

/// What the writer does next, in this order when several are ready: a
/// queued message (or the queue's end), the ping timer's tick, the abort
/// signal. Polled in place (each registers the task's waker): futures for
/// them would stay in every idle connection's task.
fn next_step(cx: &mut std::task::Context<'_>, outgoing: &Outgoing, watch: &mut Watch<'_>) -> Poll<Step> {
    if let Poll::Ready(msg) = outgoing.poll_recv(cx) {
        return Poll::Ready(msg.map_or(Step::Ended, Step::Send));
    }
    if watch.pinger.poll_tick(cx).is_ready() {
        return Poll::Ready(Step::Tick);
    }
    match watch.shared.poll_aborted(cx) {
        Poll::Ready(()) => Poll::Ready(Step::Abort),
        Poll::Pending => Poll::Pending,
    }
}

/// The rest of one step of the writer: `frame` sent (`Err`: a message
/// that goes in fragments, [`one_frame`]), the direct path told when it
/// was a queued message, and a session's acknowledgement asked for
/// (`ack`); `false` as [`send_one`].
async fn send_step<S>(
    sink: &mut WebSocketSender<S>,
    frame: Result<WsMessage, Message>,
    (queued, ack): (bool, bool),
    watch: &mut Watch<'_>,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sent = match frame {
        Ok(frame) => send_one(sink, frame, watch).await,
        Err(big) => send_fragments(sink, big, watch).await,
    };
    if !sent {
        return false;
    }
    if queued {
        watch.shared.wire.sent();
    }
    !ack || super::session::ask_ack(sink, watch.shared, watch).await
}

/// Sends the close frame the hub asked for (unless the client's close is
/// being answered), then waits for the client's answer while the reader
/// still reads; pending for good when no close was asked for.
async fn close_handshake<S>(mut sink: WebSocketSender<S>, shared: &ConnShared, reader_parked: &AtomicBool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(req) = shared.close_request() {
        // 1005, 1006 and 1015 are never sent in a frame (RFC 6455 §7.4.1).
        if req.cause != CloseCause::Client && !matches!(req.code, 1005 | 1006 | 1015) {
            let frame = CloseFrame { code: CloseCode::from(req.code), reason: req.reason.clone().into() };
            let _ = runtime::timeout(CLOSE_GRACE, sink.send(WsMessage::Close(Some(frame)))).await;
        }
        if !reader_parked.load(Ordering::SeqCst) {
            runtime::sleep(CLOSE_GRACE).await;
        }
    } else {
        std::future::pending::<()>().await;
    }
}

/// Largest frame the writer sends: a longer message goes out in fragments
/// (RFC 6455 §5.4; websocketd's Go library does the same at 4 KiB).
/// tungstenite copies each frame into its write buffer, which keeps its
/// size for the life of the connection: whole frames of 1 MiB left 1 MiB
/// behind in every connection that once got one (200 clients after one
/// broadcast: +201 MiB for good; with fragments: about 16 KiB each).
pub(super) const FRAGMENT: usize = 16 * 1024;

/// A message as the one frame it goes out in, or back when it is longer
/// than [`FRAGMENT`] and goes out in fragments ([`send_fragments`]).
pub(super) fn one_frame(msg: Message) -> Result<WsMessage, Message> {
    match msg {
        Message::Text(t) if t.len() <= FRAGMENT => Ok(WsMessage::Text(t)),
        Message::Binary(b) if b.len() <= FRAGMENT => Ok(WsMessage::Binary(b)),
        big => Err(big),
    }
}

/// Sends a message longer than [`FRAGMENT`] in fragments of that size
/// (they share its buffer: no copy); `false` as [`send_one`].
pub(super) async fn send_fragments<S>(sink: &mut WebSocketSender<S>, msg: Message, watch: &mut Watch<'_>) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (bytes, data) = match msg {
        Message::Text(t) => (bytes::Bytes::from(t), Data::Text),
        Message::Binary(b) => (b, Data::Binary),
    };
    let mut start = 0;
    while start < bytes.len() {
        let end = (start + FRAGMENT).min(bytes.len());
        let opcode = OpCode::Data(if start == 0 { data } else { Data::Continue });
        let frame = Frame::message(bytes.slice(start..end), opcode, end == bytes.len());
        if !send_one(sink, WsMessage::Frame(frame), watch).await {
            return false;
        }
        start = end;
    }
    true
}

/// Sends one frame; `false` when the connection must end: the write failed,
/// the connection was aborted (slow consumer), or the client answered no
/// ping while the write was blocked (it reads nothing: the ping timeout
/// holds even then).
pub(super) async fn send_one<S>(sink: &mut WebSocketSender<S>, frame: WsMessage, watch: &mut Watch<'_>) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Watch { pinger, shared } = watch;
    let mut send = std::pin::pin!(sink.send(frame));
    let mut stood_in = false;
    loop {
        // The write, then the abort signal, then the ping timer.
        let step = std::future::poll_fn(|cx| {
            if let Poll::Ready(sent) = send.as_mut().poll(cx) {
                return Poll::Ready(Some(sent.is_ok()));
            }
            if shared.poll_aborted(cx).is_ready() {
                return Poll::Ready(Some(false));
            }
            pinger.poll_tick(cx).map(|()| None)
        })
        .await;
        match step {
            Some(sent) => {
                if stood_in {
                    // The client got no real ping: the next tick sends one.
                    pinger.sent_at = None;
                }
                return sent;
            }
            // No ping can go out behind the blocked write: since the last
            // tick the client must have sent something or taken some bytes.
            None if pinger.stalled(shared) => {
                pinger.time_out(shared);
                return false;
            }
            None => {
                pinger.pinged();
                stood_in = true;
            }
        }
    }
}

/// What the writer watches besides its queue, also while a write is
/// blocked: the connection's abort signal (through `shared`) and its ping
/// timer.
pub(super) struct Watch<'a> {
    pinger: Pinger,
    shared: &'a ConnShared,
}

/// Reads frames into events until the stream ends. When the client hits a
/// limit or breaks the protocol, asks for the close (one log line) and stops
/// reading: the writer sends the close frame and ends the connection.
// An `async move` block, not an `async fn`: an `async fn` keeps its arguments
// twice (rust-lang/rust#62958), in every idle connection's task.
#[allow(clippy::manual_async_fn)]
fn read_loop<'a, S>(
    mut stream: WebSocketReceiver<S>,
    app: &'a WsState,
    conn: &'a ConnInfo,
    shared: &'a ConnShared,
    events: &'a EventTx,
    budget: &'a ConnBudget,
    parked: &'a AtomicBool,
) -> impl std::future::Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + 'a,
{
    async move {
        let id = &conn.id;
        loop {
            let Some(item) = stream.next().await else { return };
            shared.seen();
            let kind = match item {
                Ok(WsMessage::Text(t)) => EventKind::Message { payload: t.into(), binary: false },
                Ok(WsMessage::Binary(b)) => EventKind::Message { payload: b, binary: true },
                Ok(WsMessage::Close(frame)) => {
                    if super::session::is_resuming(shared, frame.as_ref()) {
                        log::debug!("[{id}] the client leaves this socket to resume on another (4499): a drop");
                        return;
                    }
                    let (req, note) = client_close(frame, shared.client_close_code());
                    shared.request_close(req, Ending::Record, note);
                    // Keep reading: tungstenite sends the reply, then ends the stream.
                    continue;
                }
                Ok(WsMessage::Pong(p)) => {
                    if let Some(session) = shared.session.as_deref() {
                        session.pong(&p);
                    }
                    continue;
                }
                // Pings are answered by tungstenite; control frames cost no budget.
                Ok(WsMessage::Ping(_) | WsMessage::Frame(_)) => continue,
                Err(e) => match read_error(&e, budget) {
                    Some(limit) => {
                        // Closed for another connection's read: logged then.
                        let note = (budget.refused() != Some(Refused::HeldMost)).then(|| limit_note(&limit, &e));
                        // The writer sends the close frame and ends the connection.
                        parked.store(true, Ordering::SeqCst);
                        close_for(shared, limit, note);
                        break;
                    }
                    None => {
                        log::debug!("[{id}] read error: {e}");
                        return;
                    }
                },
            };
            if let Some(session) = shared.session.as_deref() {
                session.read_one();
            }
            if let Err(full) = enqueue(app, events, budget, kind) {
                let note =
                    (!matches!(full, QueueFull::Bytes(OverBudget::Closed))).then(|| format!("{full}; closing (1013)"));
                parked.store(true, Ordering::SeqCst);
                close_for(shared, Limit::QueueFull, note);
                break;
            }
        }
        // Parked out here, not where the limit was found: the read's error
        // and item would stay in the future (and so in every idle
        // connection's task) for the await's sake.
        std::future::pending().await
    }
}

/// A close frame from the client, as the close event will report it, and
/// why in words when that is not the client's choice. tungstenite answers a
/// close code a client may not send (1005, 1006, 1015, below 1000, ...)
/// with 1002 and reports that instead; `sent` is the code as it was on the
/// wire ([`ConnShared::client_close_code`]), which tells that protocol error
/// from a client that closed with 1002 itself.
fn client_close(frame: Option<CloseFrame>, sent: Option<u16>) -> (CloseRequest, Option<String>) {
    match frame {
        Some(f) if sent.is_some_and(|c| !CloseCode::from(c).is_allowed()) => (
            CloseRequest { code: 1002, reason: f.reason.to_string(), cause: CloseCause::ProtocolError },
            Some("the client sent a close code it may not use; closed with 1002".into()),
        ),
        Some(f) => {
            (CloseRequest { code: u16::from(f.code), reason: f.reason.to_string(), cause: CloseCause::Client }, None)
        }
        None => (CloseRequest { code: 1005, reason: String::new(), cause: CloseCause::Client }, None),
    }
}

/// A limit (or protocol rule) a client broke; each closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    /// A message over `--max-message`: 1009.
    TooBig,
    /// Invalid UTF-8 in a text message or close reason: 1007.
    InvalidUtf8,
    /// Any other breach of RFC 6455 (bad frame, reserved bits, unmasked, ...): 1002.
    Protocol,
    /// `--max-queue`, `--max-queue-bytes` or `--max-queue-bytes-total`: 1013.
    QueueFull,
    /// A message that arrives too slowly (beyond `--http-timeout`, under
    /// 1 KiB/s on average): 1008.
    TooSlow,
}

impl Limit {
    fn close(self) -> (u16, &'static str, CloseCause) {
        match self {
            Limit::TooBig => (1009, "message too big", CloseCause::TooBig),
            Limit::InvalidUtf8 => (1007, "invalid UTF-8", CloseCause::ProtocolError),
            Limit::Protocol => (1002, "protocol error", CloseCause::ProtocolError),
            Limit::QueueFull => (1013, "too many events waiting", CloseCause::QueueFull),
            Limit::TooSlow => (1008, "message too slow", CloseCause::TooSlow),
        }
    }
}

/// Which limit a read error means; `None` when the connection just went
/// away (reset, end of stream without a close frame: cause `dropped`).
fn read_error(e: &WsError, budget: &ConnBudget) -> Option<Limit> {
    match e {
        WsError::Capacity(_) => Some(Limit::TooBig),
        WsError::Utf8(_) => Some(Limit::InvalidUtf8),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Protocol(_) => Some(Limit::Protocol),
        WsError::Io(_) => match budget.refused()? {
            Refused::Total | Refused::HeldMost => Some(Limit::QueueFull),
            Refused::TooSlow => Some(Limit::TooSlow),
        },
        _ => None,
    }
}

/// The one log line (without the connection) for a read error that
/// closes the connection.
fn limit_note(limit: &Limit, e: &WsError) -> String {
    let code = limit.close().0;
    match (limit, e) {
        (Limit::TooBig, WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
            format!("message of {size} bytes is over --max-message {max_size}; closing ({code})")
        }
        (Limit::QueueFull | Limit::TooSlow, WsError::Io(e)) => format!("{e}; closing ({code})"),
        _ => format!("protocol error from the client: {e}; closing ({code})"),
    }
}

/// Queues a message event (or drops it when `--events` leaves messages
/// out); `Err` when the connection's queue is full.
fn enqueue(app: &WsState, events: &EventTx, budget: &ConnBudget, kind: EventKind) -> Result<(), QueueFull> {
    let EventKind::Message { payload, .. } = &kind else { return Ok(()) };
    let len = payload.len();
    metrics::add(&metrics::get().messages_in, 1);
    metrics::add(&metrics::get().bytes_in, len as u64);
    if !app.events.wants(&kind) {
        let _ = budget.message_read(len, false); // --events without message: read and dropped
        return Ok(());
    }
    if budget.events_waiting() >= app.max_queue {
        let _ = budget.message_read(len, false);
        return Err(QueueFull::Events(app.max_queue));
    }
    budget.message_read(len, true).map_err(QueueFull::Bytes)?;
    metrics::get().events_queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    budget.event_queued();
    if events.unbounded_send(kind).is_err() {
        metrics::get().events_queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        budget.event_taken();
        budget.done(len);
    }
    Ok(())
}

/// Why a message could not be queued.
#[derive(Debug)]
enum QueueFull {
    /// `--max-queue` events already wait.
    Events(usize),
    /// Over a byte budget.
    Bytes(OverBudget),
}

impl std::fmt::Display for QueueFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueFull::Events(n) => write!(f, "more than {n} events waiting (--max-queue)"),
            QueueFull::Bytes(over) => over.fmt(f),
        }
    }
}

/// Closes the connection for `limit` (`note`: why, for the log): the
/// writer sends what is queued, then the close frame.
fn close_for(shared: &ConnShared, limit: Limit, note: Option<String>) {
    let (code, reason, cause) = limit.close();
    shared.request_close(CloseRequest { code, reason: reason.into(), cause }, Ending::Drain, note);
}

/// What drops connection `id` (with its one log line) when it holds the
/// most bytes while another connection's read goes over
/// `--max-queue-bytes-total`. At once, without a close frame (its close
/// event says 1013, `queue-full`): the bytes it held are counted out of
/// the total at once, so its buffers must go now, not after a close
/// handshake (a 2 s grace let 600 clients take +313 MiB over a 64 MiB total).
pub fn evictor(shared: &Arc<ConnShared>) -> Evict {
    let shared = shared.clone();
    Box::new(move |why| {
        let (code, reason, cause) = Limit::QueueFull.close();
        // Already closing (for a limit of its own: logged then) or not, its
        // buffers go now.
        let req = CloseRequest { code, reason: reason.into(), cause };
        shared.request_close(req, Ending::Drop, Some(format!("{why}; dropping it (1013)")));
    })
}

/// The connection is over: stop deliveries and queue the close event.
pub async fn finish(app: &WsState, conn: &ConnInfo, shared: &ConnShared, events: &EventTx) {
    let req = shared.end();
    app.hub.detach(&conn.id);
    // The `closed:` line is the worker's (see [`log_closed`]).
    // The worker is alive until it has run this event, so this cannot fail
    // (the queue is unbounded: --max-queue is the reader's).
    metrics::get().events_queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = events.unbounded_send(EventKind::Close { code: req.code, reason: req.reason, cause: req.cause });
}

#[cfg(test)]
mod tests;

/// An idle connection's memory is mostly its task: the worker future is as
/// large as its largest await point, so an event's state must not be inline
/// in it (+1.2 KiB per idle connection, measured with the bench's idle
/// workload, until the event was boxed).
#[cfg(test)]
mod idle_size {
    use super::*;

    #[test]
    fn the_event_worker_future_holds_no_event_inline() {
        let t = crate::ws::fake::Scripted::new(|_| Ok(String::new()));
        let app = crate::ws::state::for_tests(&[], t.clone());
        let crate::ws::fake::TestConn { conn, shared, budget, rx, slot, _outgoing, .. } =
            crate::ws::fake::test_conn(&app);
        let worker = event_worker(app.clone(), conn.clone(), t.clone(), rx, shared, budget, slot);
        let mut sink = |_: Output| {};
        let one_event = dispatch(&app, &conn, &*t, EventKind::Open, &mut sink, None);
        let (worker, event) = (std::mem::size_of_val(&worker), std::mem::size_of_val(&one_event));
        assert!(worker < event, "the worker ({worker} bytes) holds an event ({event} bytes) inline");
        // 304 bytes as an `async fn` (its arguments twice) with a box per
        // await point; 120 with one box per event in an `async move` block.
        assert!(worker <= 160, "the worker future grew to {worker} bytes");
    }
}
