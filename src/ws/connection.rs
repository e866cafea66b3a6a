//! One open connection: reads frames into events, writes queued messages,
//! and makes sure the close event runs exactly once, whatever ended it.
//!
//! Events of a connection run strictly in order on its own worker; different
//! connections run in parallel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::WebSocketStream;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt, StreamExt};
use futures_util::future::{select, Either};

use crate::action::{Action, CloseCause, Message};
use crate::backend::{Outcome, Output};
use crate::event::{ConnInfo, Event, EventKind};
use crate::hub::{self, CloseRequest, ConnShared};
use crate::server::App;
use crate::{metrics, runtime};

/// How long the server waits for the client to answer its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs one event through the backend and applies its actions as they come.
/// Returns the collected output instead for open events (`collect`), whose
/// actions must wait until the handshake is answered.
pub async fn dispatch(app: &App, conn: &Arc<ConnInfo>, kind: EventKind, collect: Option<&mut Vec<Output>>) -> Outcome {
    let (rooms, meta) = app.hub.snapshot(&conn.id);
    let event = Event { kind, conn: conn.clone(), rooms, meta };
    let started = Instant::now();
    let outcome = match collect {
        Some(items) => {
            let mut out = |o: Output| items.push(o);
            app.backend_for(&conn.target).run(&event, &mut out).await
        }
        None => {
            let mut out = |o: Output| {
                if let Output::Action(a) = o {
                    app.apply(a);
                }
            };
            app.backend_for(&conn.target).run(&event, &mut out).await
        }
    };
    let took = started.elapsed();
    let kind = match event.kind {
        EventKind::Open => 0,
        EventKind::Message { .. } => 1,
        EventKind::Close { .. } => 2,
    };
    let result = match outcome {
        Outcome::Success => 0,
        Outcome::Failed(_) => 1,
        Outcome::Unavailable(_) => 2,
    };
    metrics::get().event(kind, result, took);
    let (id, ep, name) = (&conn.id, conn.target.endpoint(), event.kind.name());
    match &outcome {
        Outcome::Success => log::info!("[{id}] {ep} {name}: ok in {took:.1?}"),
        Outcome::Failed(why) => log::warn!("[{id}] {ep} {name}: script failed after {took:.1?}: {why}"),
        Outcome::Unavailable(why) => log::warn!("[{id}] {ep} {name}: backend unavailable after {took:.1?}: {why}"),
    }
    outcome
}

/// Runs the message and close events of one connection, in order.
/// Holds the connection's slot (`--max-connections`) until the close event ran.
pub async fn event_worker(
    app: App,
    conn: Arc<ConnInfo>,
    events: async_channel::Receiver<EventKind>,
    _slot: crate::ws::limits::Slot,
) {
    while let Ok(kind) = events.recv().await {
        metrics::get().events_queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let last = matches!(kind, EventKind::Close { .. });
        // Messages not in --events never get here (the reader drops them);
        // the close event always does, to end the worker.
        if app.events.wants(&kind) {
            dispatch(&app, &conn, kind, None).await;
        }
        if last {
            break;
        }
    }
    app.hub.remove(&conn.id);
    metrics::add(&metrics::get().connections_closed, 1);
}

/// Serves an upgraded connection until it ends, then queues its close event.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    app: App,
    conn: Arc<ConnInfo>,
    outgoing: async_channel::Receiver<Message>,
    shared: Arc<ConnShared>,
    events: async_channel::Sender<EventKind>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let id = conn.id.clone();

    let ping_every = app.ping_interval;
    let writer = async {
        enum Step {
            Send(Message),
            Ended,
            Tick,
            Abort,
        }
        // One ping timer and one abort listener for the whole connection,
        // not one per message: creating an async-io timer wakes the reactor
        // thread, which cost every recipient of a fan-out a system call.
        let mut ticks = ping_every.map(runtime::Interval::new);
        let mut aborted = std::pin::pin!(shared.aborted());
        let mut ping_sent_at: Option<u64> = None;
        loop {
            let step = async { outgoing.recv().await.map_or(Step::Ended, Step::Send) }
                .or(async {
                    match &mut ticks {
                        Some(t) => {
                            t.tick().await;
                            Step::Tick
                        }
                        None => std::future::pending().await,
                    }
                })
                .or(async {
                    aborted.as_mut().await;
                    Step::Abort
                })
                .await;
            let frame = match step {
                Step::Send(Message::Text(t)) => WsMessage::Text(t),
                Step::Send(Message::Binary(b)) => WsMessage::Binary(b),
                Step::Ended => break,
                Step::Abort => return,
                Step::Tick => {
                    if ping_sent_at.is_some_and(|sent| shared.last_seen() < sent) {
                        log::warn!(
                            "[{id}] no answer to a ping within {:?}; dropping the connection",
                            ping_every.unwrap_or_default()
                        );
                        shared.request_close(CloseRequest {
                            code: 1006,
                            reason: String::new(),
                            cause: CloseCause::PingTimeout,
                        });
                        return;
                    }
                    ping_sent_at = Some(hub::clock_ms());
                    WsMessage::Ping(Default::default())
                }
            };
            // A client that stops reading blocks this send; an abort (slow
            // consumer, ping timeout) must still end the connection.
            let sent = async { sink.send(frame).await.is_ok() }
                .or(async {
                    aborted.as_mut().await;
                    false
                })
                .await;
            if !sent {
                return;
            }
        }
        // The queue ends when the hub asks for a close (or the connection is
        // already over): send the close frame, then give the client a moment
        // to answer it.
        if let Some(req) = shared.close_request() {
            if req.cause != CloseCause::Client {
                let frame = CloseFrame { code: CloseCode::from(req.code), reason: req.reason.clone().into() };
                let _ = runtime::timeout(CLOSE_GRACE, sink.send(WsMessage::Close(Some(frame)))).await;
            }
            runtime::sleep(CLOSE_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };

    let reader = async {
        while let Some(item) = stream.next().await {
            shared.seen();
            let kind = match item {
                Ok(WsMessage::Text(t)) => EventKind::Message { payload: t.into(), binary: false },
                Ok(WsMessage::Binary(b)) => EventKind::Message { payload: b, binary: true },
                Ok(WsMessage::Close(frame)) => {
                    let (code, reason) = match frame {
                        Some(f) => (u16::from(f.code), f.reason.to_string()),
                        None => (1005, String::new()),
                    };
                    shared.request_close(CloseRequest { code, reason, cause: CloseCause::Client });
                    // Keep reading: tungstenite sends the reply, then ends the stream.
                    continue;
                }
                Ok(_) => continue, // ping, pong: answered by tungstenite
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                    log::warn!("[{id}] message of {size} bytes is over --max-message {max_size}; closing (1009)");
                    too_big(&app, &conn);
                    // The writer sends the close frame and ends the connection.
                    std::future::pending::<()>().await;
                    continue;
                }
                Err(e) => {
                    log::debug!("[{id}] read error: {e}");
                    break;
                }
            };
            if let EventKind::Message { payload, .. } = &kind {
                metrics::add(&metrics::get().messages_in, 1);
                metrics::add(&metrics::get().bytes_in, payload.len() as u64);
            }
            if !app.events.wants(&kind) {
                continue; // --events without message: read and dropped
            }
            metrics::get().events_queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let full = events.len() >= app.max_queue;
            if full || events.try_send(kind).is_err() {
                metrics::get().events_queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                log::warn!("[{id}] more than {} events waiting; closing (1013)", app.max_queue);
                app.hub.apply(Action::Close {
                    conn: id.clone(),
                    code: 1013,
                    reason: "too many events waiting".into(),
                    cause: CloseCause::QueueFull,
                });
            }
        }
    };

    match select(std::pin::pin!(reader), std::pin::pin!(writer)).await {
        Either::Left(_) | Either::Right(_) => {}
    }
    finish(&app, &conn, &shared, &events).await;
}

fn too_big(app: &App, conn: &ConnInfo) {
    app.hub.apply(Action::Close {
        conn: conn.id.clone(),
        code: 1009,
        reason: "message too big".into(),
        cause: CloseCause::TooBig,
    });
}

/// The connection is over: stop deliveries and queue the close event.
pub async fn finish(app: &App, conn: &ConnInfo, shared: &ConnShared, events: &async_channel::Sender<EventKind>) {
    app.hub.detach(&conn.id);
    // Nobody closed it on purpose: the TCP connection just went away.
    shared.request_close(CloseRequest { code: 1006, reason: String::new(), cause: CloseCause::Dropped });
    let req = shared.close_request().unwrap_or(CloseRequest {
        code: 1006,
        reason: String::new(),
        cause: CloseCause::Dropped,
    });
    log::info!(
        "[{}] {} closed: {} {:?} ({})",
        conn.id,
        conn.target.endpoint(),
        req.code,
        req.reason,
        req.cause.as_str()
    );
    // The worker is alive until it has run this event, so this cannot fail;
    // `send` waits for room when the queue is full.
    metrics::get().events_queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = events.send(EventKind::Close { code: req.code, reason: req.reason, cause: req.cause }).await;
}
