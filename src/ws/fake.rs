//! A transport for the WebSocket side's unit tests: it answers each event
//! with the CGI output a closure gives (through the gateway's real line
//! pump and output parser) and records what it was asked to run, so that
//! the handshake, dispatch and the event worker run with no process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::{Event, EventKind};
use crate::gateway::slots::Slots;
use crate::gateway::{BoxFuture, Call, Limits, Outcome, Transport};

/// What the script says to one event: its output, or that it failed
/// (after printing the output).
pub(crate) type Answer = Result<String, String>;

pub(crate) struct Scripted {
    answer: Box<dyn Fn(&Event) -> Answer + Send + Sync>,
    /// Each event it ran, in order: `open`, the message's text, or
    /// `close CODE CAUSE`.
    pub(crate) seen: Mutex<Vec<String>>,
    limits: Limits,
    slots: Arc<Slots>,
}

impl Scripted {
    pub(crate) fn new(answer: impl Fn(&Event) -> Answer + Send + Sync + 'static) -> Arc<Self> {
        let limits = Limits { timeout: Duration::from_secs(30), max_output: 4096 };
        Arc::new(Scripted { answer: Box::new(answer), seen: Mutex::default(), limits, slots: Slots::new(4) })
    }

    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

/// How [`Scripted::seen`] names an event.
pub(crate) fn name(kind: &EventKind) -> String {
    match kind {
        EventKind::Open => "open".into(),
        EventKind::Message { payload, .. } => String::from_utf8_lossy(payload).into_owned(),
        EventKind::Close { code, cause, .. } => format!("close {code} {}", cause.as_str()),
        EventKind::Resume { count, .. } => format!("resume {count}"),
    }
}

impl Transport for Scripted {
    fn via(&self) -> &str {
        " (scripted)"
    }
    fn limits(&self) -> &Limits {
        &self.limits
    }
    fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }
    fn exchange<'a>(&'a self, event: &'a Event, call: &'a mut Call<'_>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.seen.lock().expect("lock").push(name(&event.kind));
            let answer = (self.answer)(event);
            let output = match &answer {
                Ok(out) | Err(out) => out.as_bytes(),
            };
            if call.pump(&mut futures_lite::io::BufReader::new(output)).await.is_err() {
                return Outcome::Failed("output cut".into());
            }
            match answer {
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Failed("exited with status 1".into()),
            }
        })
    }
}

/// A connection as the handshake registers one (hub entry, queue budget,
/// event queue, connection slot), for unit tests that build its event
/// worker or its resident process without a socket.
pub(crate) struct TestConn {
    pub conn: Arc<crate::event::ConnInfo>,
    /// Held so the connection stays registered as writable while a test runs.
    pub _outgoing: crate::hub::shared::Outgoing,
    pub shared: Arc<crate::hub::shared::ConnShared>,
    pub budget: Arc<crate::ws::limits::ConnBudget>,
    pub tx: crate::ws::event_queue::EventTx,
    pub rx: crate::ws::event_queue::EventRx,
    pub slot: crate::conn_limits::Slot,
}

/// Registers a connection to `/x` in `app`.
pub(crate) fn test_conn(app: &crate::ws::state::WsState) -> TestConn {
    let target = crate::event::Target {
        filename: "/x".into(),
        script_name: "/x".into(),
        path_info: String::new(),
        interpreter: None,
    };
    let conn =
        Arc::new(crate::event::ConnInfo { id: crate::id::ConnId::random(), target, request: Default::default() });
    let (outgoing, shared) = app.hub.register(conn.clone());
    let budget = app.queue_budget.conn(Box::new(|_| {}));
    let (tx, rx) = crate::ws::event_queue::event_queue(&shared);
    let slot = app.conn_limits.reserve("192.0.2.1".parse().ok()).expect("slot");
    TestConn { conn, _outgoing: outgoing, shared, budget, tx, rx, slot }
}
