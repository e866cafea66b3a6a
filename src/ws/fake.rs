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
