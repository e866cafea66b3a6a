//! The gateway: everything between an event and the program that answers it.
//!
//! A backend ([`crate::backend`]) is only a *transport*: it carries one
//! [`Event`] to a script or a server and hands back what came out, as raw
//! CGI-style lines (a spawned script, a FastCGI server) or as an already
//! parsed header block plus body lines (an HTTP server). Everything else is
//! done here, once, whatever the transport: the log label, the `--max-procs`
//! slot, the deadline, the output limit ([`lines`]), the header parser
//! ([`head`]), the line protocol ([`output`], [`directive`]), and the end of
//! the output. [`run`] is that one path; [`routes`] decides, once at
//! start-up, which transport serves which path.
//!
//! Adding a backend is a change in three files: `src/backend/NAME.rs` (a
//! [`Transport`], [`routes::Pages`] if it serves pages too, and `routes`,
//! which builds its routes from the configuration), its `pub mod` and its
//! line in `BACKENDS` in `src/backend/mod.rs`, and its flag in
//! `src/config.rs`.

pub mod directive;
pub mod head;
pub mod lines;
pub mod output;
pub mod page;
pub mod resident;
pub mod resolve;
pub mod response;
pub mod routes;
pub mod slots;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::io::AsyncBufRead;

use crate::action::Action;
use crate::event::{Event, EventKind};
use crate::id::ConnId;
pub use head::Head;
use output::OutputParser;

/// One piece of backend output, in the order it was produced.
#[derive(Debug)]
pub enum Output {
    /// The header block; comes first, at most once.
    Head(Head),
    /// Something to do.
    Action(Action),
    /// The raw body, only for an open event whose head rejects it (non-2xx):
    /// it becomes the HTTP response body.
    RejectBody(Vec<u8>),
}

/// Where output goes as it is produced: the hub for message and close
/// events (applied at once, so a long script can stream progress), a buffer
/// for the open event (applied once the handshake is answered).
pub type Sink<'a> = dyn FnMut(Output) + Send + 'a;

/// The texts of the messages sent in `items`, in order (for tests that
/// check what an output became).
#[cfg(test)]
pub(crate) fn sent_texts(items: &[Output]) -> Vec<String> {
    let text = |o: &Output| match o {
        Output::Action(Action::Send { msg: crate::action::Message::Text(t), .. }) => Some(t.to_string()),
        _ => None,
    };
    items.iter().filter_map(text).collect()
}

/// How the work for one event ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The script failed (non-zero exit, killed by a signal, timed out, could
    /// not start); the text says how, for the log.
    Failed(String),
    /// The backend server could not be reached or broke off (FastCGI, HTTP):
    /// like a crash, but a failed open answers 502 instead of 500.
    Unavailable(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Applies an action at once, from any thread (the hub's apply, for message
/// and close events): what a transport that reads the output on a thread of
/// its own may apply it with there ([`Call::direct`]).
pub type Apply = Arc<dyn Fn(Action) + Send + Sync>;

/// Work a transport runs on a plain thread of its own, where its events
/// run inline with blocking I/O ([`Transport::follow`]).
pub type Follow = Box<dyn FnOnce() + Send>;

/// The bounds of one event's run, the same for every transport.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest an event may take (`--timeout`).
    pub timeout: Duration,
    /// Most bytes of output read per event (`--max-output`).
    pub max_output: usize,
}

/// Carries events to whatever runs the application.
///
/// A transport writes the event out (environment, parameters, a request)
/// and feeds the answer to the [`Call`]: raw lines ([`Call::pump`],
/// [`Call::line`]) or a parsed head ([`Call::head`]) then body lines. It
/// applies the deadline ([`Call::timeout`]) itself, at the point where it
/// can still clean up: a spawned script must be stopped and reaped, a
/// network request is simply dropped.
pub trait Transport: Send + Sync + 'static {
    /// What the event's log label adds after `[id] /endpoint kind`:
    /// `" (fastcgi 127.0.0.1:9000)"`, or `""` for a spawned script.
    fn via(&self) -> &str;
    /// The event's limits.
    fn limits(&self) -> &Limits;
    /// Bounds the events in flight through this transport (`--max-procs`,
    /// for all scripts, or per backend server).
    fn slots(&self) -> &Arc<slots::Slots>;
    /// Runs one event.
    fn exchange<'a>(&'a self, event: &'a Event, call: &'a mut Call<'_>) -> BoxFuture<'a, Outcome>;
    /// Runs `job` now on a plain thread on which this transport's events
    /// run inline, with blocking I/O (`block_on` of [`run`] there never
    /// waits on another thread), if such a thread is free: a connection's
    /// follower (`ws::follow`). `Err` gives the job back: the transport
    /// cannot, or has no thread free.
    fn follow(&self, job: Follow) -> Result<(), Follow> {
        Err(job)
    }
    /// Starts one process per connection (`--per-connection`), if this
    /// transport can: only local scripts can.
    fn starter(&self) -> Option<&dyn resident::Starter> {
        None
    }
}

/// One event in flight: what a transport feeds its answer to.
pub struct Call<'a> {
    label: &'a str,
    limits: Limits,
    parser: OutputParser<'a>,
    out: &'a mut Sink<'a>,
    /// Output bytes read so far (against `--max-output`).
    read: usize,
    /// The output was cut at `--max-output` (see [`run`]).
    cut: bool,
    /// The start of a line whose end has not come yet ([`Call::feed`]).
    partial: Vec<u8>,
    /// See [`Call::direct`].
    direct: Option<Apply>,
}

/// Why [`Call::pump`] stopped before the end of the output.
#[derive(Debug)]
pub enum Cut {
    /// More than `--max-output`: the script's fault (logged here).
    TooMuch,
    /// The stream failed.
    Io(std::io::Error),
}

impl<'a> Call<'a> {
    /// A call for one script's output: `label` names it in the log, `conn`
    /// and `endpoint` are the script's, `is_open` for the open event (a
    /// non-2xx head rejects it), `out` gets the output as it is parsed.
    pub fn new(
        label: &'a str,
        limits: Limits,
        (conn, endpoint): (&'a ConnId, &'a str),
        is_open: bool,
        out: &'a mut Sink<'a>,
    ) -> Self {
        let parser = OutputParser::new(directive::Context::Script { conn, endpoint }, is_open);
        Call { label, limits, parser, out, read: 0, cut: false, partial: Vec::new(), direct: None }
    }

    /// When set, every [`Output`] but [`Output::Action`] is of no use to the
    /// caller, and actions may be applied with this from any thread: a
    /// transport that reads the output on a thread of its own (the spawn
    /// transport's workers) may then run the whole output pipeline there,
    /// through a [`Call::new`] of its own whose actions go to this, and end
    /// it with [`Call::conclude`], instead of handing each chunk back to
    /// this call (a thread wake-up each, before the reply can go out). This
    /// call is then not fed at all, and its end changes nothing: the
    /// outcome is the transport's.
    pub fn direct(&self) -> Option<&Apply> {
        self.direct.as_ref()
    }

    /// `[id] /chat.sh message`: how the log names this run.
    pub fn label(&self) -> &'a str {
        self.label
    }

    /// How long the event may take; the transport stops it then.
    pub fn timeout(&self) -> Duration {
        self.limits.timeout
    }

    /// One raw line of CGI output (ending in `\n` unless it is the last).
    fn line(&mut self, raw: &[u8]) {
        self.parser.push(raw, self.out);
    }

    /// A header block the transport parsed itself (an HTTP response); the
    /// body's lines follow.
    pub fn head(&mut self, head: Head) {
        self.parser.head(head, self.out);
    }

    /// Reads `body` into the parser until its end, within `--max-output`
    /// (see [`Self::feed`]).
    pub async fn pump(&mut self, body: &mut (impl AsyncBufRead + Unpin)) -> Result<(), Cut> {
        use futures_lite::io::AsyncBufReadExt;
        loop {
            let chunk = body.fill_buf().await.map_err(Cut::Io)?;
            if chunk.is_empty() {
                self.end();
                return Ok(());
            }
            let n = chunk.len();
            let fed = self.feed(chunk);
            body.consume(n);
            fed?;
        }
    }

    /// One chunk of raw output, as it was read: split into lines here (a
    /// line may span chunks), each line applied as soon as it is whole,
    /// within `--max-output` (counted over the whole call): a script that
    /// prints gigabytes, with or without newlines, costs no memory. The
    /// one line splitter of every transport: [`Self::pump`] for a stream,
    /// the spawn transport's workers for chunks they read from a pipe.
    /// After `Err`, the rest of the output is to be discarded.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Cut> {
        self.feed_lines(chunk, false)
    }

    /// [`Self::feed`] of the last chunk, then [`Self::end`]: a last line
    /// without a newline that is all in `chunk` is applied from it, not
    /// copied first (an echo's reply is such a line).
    pub fn feed_end(&mut self, chunk: &[u8]) -> Result<(), Cut> {
        self.feed_lines(chunk, true)?;
        self.end();
        Ok(())
    }

    fn feed_lines(&mut self, mut chunk: &[u8], last: bool) -> Result<(), Cut> {
        while !chunk.is_empty() {
            let (piece, whole) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..=i], true),
                None => (chunk, false),
            };
            chunk = &chunk[piece.len()..];
            self.read += piece.len();
            if self.read > self.limits.max_output {
                log::warn!(
                    "{}: more than {} bytes of output; the rest is discarded",
                    self.label,
                    self.limits.max_output
                );
                self.cut = true;
                self.partial = Vec::new();
                return Err(Cut::TooMuch);
            }
            match (whole || last, self.partial.is_empty()) {
                (true, true) => self.line(piece),
                (false, _) => self.partial.extend_from_slice(piece),
                (true, false) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(piece);
                    self.line(&line);
                    line.clear();
                    self.partial = line;
                }
            }
        }
        Ok(())
    }

    /// The end of the output: a last line without a newline is applied.
    pub fn end(&mut self) {
        if !self.partial.is_empty() && !self.cut {
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
        }
    }

    /// The output was cut at `--max-output`.
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

/// The verdict on an event whose output was cut at `--max-output`, the same
/// whatever the transport and whether the script had exited already.
pub const OUTPUT_LIMIT: &str = "output limit";

/// Runs one event through `transport`, sending its output to `out` as it
/// comes: the label, the output parser, a slot among those allowed to run at
/// once, the exchange, and the end of the output (a whole-body message is
/// sent only then, and only when it is whole).
///
/// Output cut at `--max-output` fails the event ([`OUTPUT_LIMIT`]) whatever
/// the transport reported, and a whole-body message it cut is not sent: what
/// was applied before the cut stays applied, a message that never ended was
/// never applied. A header block too ambiguous to act on (see
/// [`head::HeadParser`]) fails the event too.
pub async fn run(transport: &dyn Transport, event: &Event, out: &mut Sink<'_>) -> Outcome {
    let slot = transport.slots().acquire().await;
    run_in_slot(transport, event, out, slot).await
}

/// [`run`], with the `--max-procs` slot already taken (from
/// `transport.slots()`): a caller that waited for it can still decide not
/// to run the event (a message of a connection that ended meanwhile).
pub async fn run_in_slot(transport: &dyn Transport, event: &Event, out: &mut Sink<'_>, slot: slots::Slot) -> Outcome {
    run_with(transport, event, out, slot, None).await
}

/// [`run_in_slot`], with `direct` for a transport that may apply the
/// actions itself (see [`Call::direct`]): only where `out` does nothing but
/// apply the actions it gets with `direct` (message and close events).
pub async fn run_with(
    transport: &dyn Transport,
    event: &Event,
    out: &mut Sink<'_>,
    slot: slots::Slot,
    direct: Option<Apply>,
) -> Outcome {
    let conn = &event.conn;
    let endpoint = conn.target.endpoint();
    let label = label(conn.id.as_str(), endpoint, event.kind.name(), transport.via());
    let mut call = Call::new(&label, *transport.limits(), (&conn.id, endpoint), event.kind == EventKind::Open, out);
    call.direct = direct;
    let outcome = {
        let _slot = slot;
        transport.exchange(event, &mut call).await
    };
    call.conclude(outcome)
}

/// `[id] /endpoint kind via`, the event's log label: built at its exact
/// size (one allocation per event; `format!` grew it twice).
fn label(id: &str, endpoint: &str, kind: &str, via: &str) -> String {
    let mut label = String::with_capacity(id.len() + endpoint.len() + kind.len() + via.len() + 4);
    for part in ["[", id, "] ", endpoint, " ", kind, via] {
        label.push_str(part);
    }
    label
}

impl Call<'_> {
    /// The end of the call, once the transport is done with it: a header
    /// block not ended, a whole-body message, the verdict. Output cut at
    /// `--max-output` fails the event ([`OUTPUT_LIMIT`]) whatever the
    /// transport reported (`outcome`), and a whole-body message it cut is
    /// not sent; an ambiguous header block fails it too.
    pub fn conclude(self, outcome: Outcome) -> Outcome {
        let Call { mut parser, out, cut, .. } = self;
        if cut {
            parser.cut();
        }
        let refused = parser.refused().map(str::to_owned);
        parser.finish(out);
        match (cut, refused) {
            // How the transport ended the cut run, as a detail (a script killed
            // for it: "killed by signal 9"); the verdict is the limit.
            (true, _) => Outcome::Failed(match outcome {
                Outcome::Failed(why) | Outcome::Unavailable(why) if why != OUTPUT_LIMIT => {
                    format!("{OUTPUT_LIMIT} ({why})")
                }
                _ => OUTPUT_LIMIT.into(),
            }),
            (false, Some(why)) => Outcome::Failed(why),
            (false, None) => outcome,
        }
    }
}
