//! One process per connection (`--per-connection`; docs/PROTOCOL.md, "One
//! process per connection"): the websocketd lifetime, for any endpoint that
//! a pattern selects.
//!
//! The process starts when the handshake is accepted ([`start`]: a process
//! that cannot start refuses the handshake, 500; `--max-connection-procs`
//! reached, 429). Then one future, in the connection's own task beside its
//! reader and writer ([`run`]), drives everything on the reactor with
//! non-blocking pipes, no thread and no task of its own. It is a plain poll
//! function over the process's pipes, its exit and the event queue (no
//! `async` branches raced at each step: they doubled the future, which is
//! memory per connection), and stdin joins the reactor only once a write
//! would block:
//! - the connection's message events (queued by the reader under the usual
//!   `--max-queue` budgets) are written to the process's stdin in order,
//!   each followed by a newline (binary mode: raw); those already queued
//!   when a write starts go in the same write (one system call for many
//!   messages when the client is ahead of the process). A write that makes
//!   no progress for `--timeout` closes the connection (1011): a process that
//!   stops reading its stdin costs the queue's budget, never more;
//! - what the process prints is read as it comes: each line a message at
//!   once (or a directive, with `--per-connection-directives`); a line over
//!   `--max-message` is dropped with one log line; while more than
//!   `--max-outgoing-bytes` / 2 (or `--max-outgoing` / 2 messages) wait for
//!   the client, stdout is not read, and no line is sent while its queue is
//!   full, so a fast printer waits for a slow reader instead of being cut off;
//! - what it writes to stderr is logged one line per line by the
//!   transport, which also watches its exit (not on this future: an idle
//!   connection pays for one reactor source, stdout's);
//! - the process's exit (stdout ended and the process reaped) closes the
//!   connection with 1000, after its last line (with or without a newline);
//! - the connection's end (its close event, seen even while a write to stdin
//!   is pending: what was not written is dropped) closes stdin, then sends SIGINT,
//!   SIGTERM and SIGKILL to the process group, one `--close-grace` apart,
//!   until the process is reaped; then the group's leftovers are stopped.
//!
//! The connection leaves the hub once, after its close event and the reap,
//! whatever ended it, as for event scripts.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::FutureExt;
use futures_lite::StreamExt;

use crate::action::{Action, CloseCause, Message};
use crate::config::{Config, PerConnection};
use crate::event::{ConnInfo, EventKind};
use crate::gateway::directive::{parse_line, Context, Line};
use crate::gateway::resident::{Child, Pipe, Process, Signal};
use crate::gateway::Transport;
use crate::hub::shared::{CloseRequest, ConnShared, Ending};
use crate::metrics;
use crate::runtime;
use crate::ws::connection::{self, EventRx};
use crate::ws::limits::ConnBudget;
use crate::ws::state::WsState;

/// The per-connection settings and the count of processes alive.
pub struct Residents {
    settings: PerConnection,
    /// `--timeout`: how long one write to stdin may make no progress.
    write_timeout: Duration,
    /// Stdout is not read while more than this waits for the client.
    pause_above: usize,
    /// `--max-outgoing`: stdout is not read while more than half of it
    /// waits, and no line is sent while all of it does.
    max_queued: usize,
    /// `--max-message`: the longest line sent.
    max_line: usize,
    running: AtomicUsize,
}

impl Residents {
    pub fn new(cfg: &Config) -> Arc<Self> {
        Arc::new(Residents {
            settings: cfg.per_connection.clone(),
            write_timeout: cfg.timeout,
            pause_above: (cfg.max_outgoing_bytes / 2).max(1),
            max_queued: cfg.out_queue,
            max_line: cfg.max_message,
            running: AtomicUsize::new(0),
        })
    }

    /// `true` when a handshake for `path` (the URL path) of `endpoint`
    /// runs one process per connection: a pattern matches either, and the
    /// route's transport can start one (local scripts only).
    pub fn selects(&self, path: &str, endpoint: &str, transport: &dyn Transport) -> bool {
        let matched = self.settings.matches(path) || self.settings.matches(endpoint);
        matched && transport.starter().is_some()
    }

    /// `true` while the client has over half its outgoing budget (bytes or
    /// messages) waiting: stdout is not read.
    fn paused(&self, shared: &ConnShared) -> bool {
        shared.queued_bytes() > self.pause_above || shared.queued_messages() > self.max_queued / 2
    }

    /// Per-connection processes alive now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Takes one of `--max-connection-procs`.
    fn reserve(self: &Arc<Self>) -> Option<Running> {
        let max = self.settings.max_procs;
        let taken = self.running.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1));
        taken.ok().map(|_| {
            metrics::get().procs_running.fetch_add(1, Ordering::Relaxed);
            Running(self.clone())
        })
    }
}

/// One of `--max-connection-procs`, given back when the process is reaped
/// and its stdout ended (nothing of its group prints any more).
pub struct Running(Arc<Residents>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        metrics::get().procs_running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A started process and its place among `--max-connection-procs`.
pub struct Session {
    process: Process,
    running: Running,
}

/// Why a per-connection process did not start (logged already).
#[derive(Debug)]
pub enum NotStarted {
    /// `--max-connection-procs` processes are alive.
    Full(usize),
    /// The process could not be started.
    Failed,
}

/// Starts the process of a connection whose handshake is accepted.
pub fn start(app: &WsState, conn: &Arc<ConnInfo>, transport: &dyn Transport) -> Result<Session, NotStarted> {
    let res = &app.residents;
    let (id, ep) = (&conn.id, conn.target.endpoint());
    let Some(running) = res.reserve() else {
        let max = res.settings.max_procs;
        log::warn!("[{id}] {ep}: refused a handshake: {max} per-connection processes running (--max-connection-procs)");
        return Err(NotStarted::Full(max));
    };
    let Some(starter) = transport.starter() else { return Err(NotStarted::Failed) };
    match starter.start(conn, res.settings.close_grace) {
        Ok(process) => {
            metrics::add(&metrics::get().procs_started, 1);
            log::debug!("[{id}] {ep} process started");
            Ok(Session { process, running })
        }
        Err(why) => {
            log::error!("[{id}] {ep}: refused a handshake: the per-connection process did not start: {why}");
            Err(NotStarted::Failed)
        }
    }
}

/// The signals that end a process whose connection is gone, in order.
const ESCALATION: [(Signal, &str); 3] = [(Signal::Int, "SIGINT"), (Signal::Term, "SIGTERM"), (Signal::Kill, "SIGKILL")];

/// What happened next to a connection's process.
enum Step {
    /// Stdout gave bytes (handled already), or ended (`true`).
    Read(bool),
    Exited(String),
    /// The next event from the connection's queue (`None`: the queue
    /// ended, taken as the connection's end).
    Event(Option<EventKind>),
    /// Some of the pending messages went into stdin.
    Wrote(std::io::Result<usize>),
    /// The pending messages made no progress for `--timeout`.
    Stalled,
    /// Time for the next signal of the escalation.
    Signal,
}

/// The messages being written to stdin: the one taken and those that were
/// already queued behind it, in one buffer (one `write` for many messages
/// when the client sends faster than the process answers).
struct Pending {
    buf: Vec<u8>,
    off: usize,
    /// Their payloads' length, given back to the budget once written.
    len: usize,
    /// How many messages; all but the first still count in `--max-queue`
    /// until written, as they did while queued.
    count: usize,
    /// When the last byte of it went in (or it was taken).
    progress: Instant,
}

/// Most bytes of queued messages joined into one write to stdin (a pipe's
/// default capacity).
const JOIN_UP_TO: usize = 64 * 1024;

/// The process's stdin: a plain non-blocking pipe, registered with the
/// reactor only once a write would block (writes to a pipe almost always
/// complete at once: an idle connection pays for no registration).
enum Stdin {
    Plain(std::fs::File),
    Watched(Pipe),
}

impl Stdin {
    fn poll_write(
        slot: &mut Option<Stdin>,
        data: &[u8],
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let res = match slot {
                None => return Poll::Pending,
                Some(Stdin::Plain(f)) => (&*f).write(data),
                Some(Stdin::Watched(pipe)) => {
                    ready!(pipe.poll_writable(cx))?;
                    pipe.get_ref().write(data)
                }
            };
            match res {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(Stdin::Plain(f)) = slot.take() {
                        *slot = Some(Stdin::Watched(runtime::Async::new(f)?));
                    }
                    let Some(Stdin::Watched(pipe)) = slot else { return Poll::Pending };
                    ready!(pipe.poll_writable(cx))?;
                }
                res => return Poll::Ready(res),
            }
        }
    }
}

/// The connection a process serves (once: [`Stdout`] is given it too).
struct Ctx {
    app: Arc<WsState>,
    conn: Arc<ConnInfo>,
    shared: Arc<ConnShared>,
}

/// The state of one connection's process. What an idle connection does not
/// use (a write in progress, a timer, the escalation) is boxed when needed:
/// this is memory per connection (see [`Run`]).
struct Life {
    ctx: Ctx,
    budget: Arc<ConnBudget>,
    stdin: Option<Stdin>,
    pending: Option<Box<Pending>>,
    /// Events taken from the queue while a write was pending (to see the
    /// close event behind them at once), or behind the messages joined
    /// into one write; messages still counted in the queue's budgets
    /// until written.
    backlog: VecDeque<EventKind>,
    out: Stdout,
    exited: bool,
    /// Given back once the process is reaped and its stdout ended (or at
    /// the end, after SIGKILL).
    running: Option<Running>,
    /// The close event was taken: the connection is over.
    closed: bool,
    /// The close 1000 for the process's exit was asked for.
    exit_closed: bool,
    /// The next signal (index into [`ESCALATION`]) and when.
    escalation: Option<Box<(usize, Instant)>>,
    /// The one deadline waited for: the pending write's `--timeout` while
    /// the connection lives, the escalation's next signal after it.
    timer: Option<Box<(Instant, runtime::Timer)>>,
    /// Which source [`Life::poll_step`] polls first (round robin: a
    /// process that prints without pause must not starve its stdin).
    turn: u8,
    /// Message events dropped (the process gone, stdin not read, the connection ended).
    dropped: usize,
}

/// Runs a connection's process for the connection's whole life (see the
/// module docs); holds the connection's slot (`--max-connections`) until
/// the process is reaped and the close event was taken.
pub fn run(
    app: Arc<WsState>,
    conn: Arc<ConnInfo>,
    session: Session,
    events: EventRx,
    shared: Arc<ConnShared>,
    budget: Arc<ConnBudget>,
    slot: crate::conn_limits::Slot,
) -> Run {
    let Session { process: Process { stdin, stdout, child }, running } = session;
    let life = Life {
        ctx: Ctx { app, conn, shared },
        budget,
        stdin: Some(Stdin::Plain(stdin)),
        pending: None,
        backlog: VecDeque::new(),
        out: Stdout::new(stdout),
        exited: false,
        running: Some(running),
        closed: false,
        exit_closed: false,
        escalation: None,
        timer: None,
        turn: 0,
        dropped: 0,
    };
    Run { life: Some(life), child, events, steps: 0, _slot: slot }
}

/// [`run`]'s future, written by hand: an `async fn` keeps its arguments
/// beside the locals made from them, and this is memory per connection
/// (`the_run_future_is_small`). Boxed in the connection's task: inline, it
/// would make the slot where an event connection's worker sits (120 bytes)
/// as large as itself (280) in every connection's task.
pub struct Run {
    /// `None` once over.
    life: Option<Life>,
    child: Box<dyn Child>,
    events: EventRx,
    /// Steps since the last yield.
    steps: u8,
    _slot: crate::conn_limits::Slot,
}

impl std::future::Future for Run {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(life) = &mut this.life else { return Poll::Ready(()) };
        while !life.is_over() {
            // A plain poll function, not an `async fn` racing `async`
            // blocks: nothing is kept between steps.
            let step = ready!(life.poll_step(&mut *this.child, &mut this.events, cx));
            life.take(step, &mut *this.child, &mut this.events);
            this.steps = this.steps.wrapping_add(1);
            if this.steps.is_multiple_of(32) {
                // A process printing without pause keeps stdout always
                // ready: let the thread's other tasks run.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        this.child.end_group();
        let (app, id) = (life.ctx.app.clone(), life.ctx.conn.id.clone());
        this.life = None;
        app.hub.remove(&id);
        metrics::add(&metrics::get().connections_closed, 1);
        Poll::Ready(())
    }
}

/// Ready at `at`: `timer` is made (or moved) for it, kept between polls.
fn poll_until(
    timer: &mut Option<Box<(Instant, runtime::Timer)>>,
    at: Instant,
    cx: &mut std::task::Context<'_>,
) -> Poll<()> {
    if timer.as_ref().map(|t| t.0) != Some(at) {
        *timer = Some(Box::new((at, runtime::Timer::at(at))));
    }
    let Some(t) = timer else { return Poll::Pending };
    ready!(std::pin::Pin::new(&mut t.1).poll(cx));
    *timer = None;
    Poll::Ready(())
}

impl Life {
    /// Over once the close event was taken and the process reaped, its
    /// stdout ended (or its group was sent SIGKILL: an escaped process may
    /// hold stdout forever).
    fn is_over(&self) -> bool {
        let killed = self.escalation.as_deref().is_some_and(|&(i, _)| i >= ESCALATION.len());
        self.closed && self.exited && (self.out.ended || killed)
    }

    /// Whatever happened first: stdout, the exit, the queue and stdin, the
    /// escalation's timer, each polled in turn from a rotating start.
    fn poll_step(
        &mut self,
        child: &mut dyn Child,
        events: &mut EventRx,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Step> {
        const SOURCES: u8 = 4;
        let first = self.turn;
        self.turn = (self.turn + 1) % SOURCES;
        for i in 0..SOURCES {
            let step = match (first + i) % SOURCES {
                0 if !self.out.ended => self.out.poll_read(&self.ctx, cx).map(Step::Read),
                1 if !self.exited => child.poll_wait(cx).map(Step::Exited),
                2 if !self.closed => self.poll_input(events, cx),
                3 => self.poll_signal(cx),
                _ => Poll::Pending,
            };
            if step.is_ready() {
                return step;
            }
        }
        Poll::Pending
    }

    /// Writes the pending messages to stdin while watching the queue for
    /// the connection's end (its close event, behind the messages that came
    /// meanwhile), or takes the next event.
    fn poll_input(&mut self, events: &mut EventRx, cx: &mut std::task::Context<'_>) -> Poll<Step> {
        let Some(p) = &self.pending else {
            if let Some(kind) = self.backlog.pop_front() {
                return Poll::Ready(Step::Event(Some(kind)));
            }
            return events.poll_next(cx).map(Step::Event);
        };
        if let Poll::Ready(r) = Stdin::poll_write(&mut self.stdin, &p.buf[p.off..], cx) {
            return Poll::Ready(Step::Wrote(r));
        }
        let deadline = p.progress + self.ctx.app.residents.write_timeout;
        if poll_until(&mut self.timer, deadline, cx).is_ready() {
            return Poll::Ready(Step::Stalled);
        }
        // A close event behind the joined messages ends the wait at once.
        if let Some(i) = self.backlog.iter().position(|k| !matches!(k, EventKind::Message { .. })) {
            return Poll::Ready(Step::Event(self.backlog.remove(i)));
        }
        events.poll_next(cx).map(Step::Event)
    }

    fn poll_signal(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Step> {
        match self.escalation.as_deref().copied() {
            Some((i, at)) if i < ESCALATION.len() => poll_until(&mut self.timer, at, cx).map(|()| Step::Signal),
            _ => Poll::Pending,
        }
    }

    /// Acts on what happened.
    fn take(&mut self, step: Step, child: &mut dyn Child, events: &mut EventRx) {
        match step {
            Step::Read(ended) => self.out.ended = ended,
            Step::Exited(how) => {
                self.exited = true;
                let (id, ep) = (&self.ctx.conn.id, self.ctx.conn.target.endpoint());
                log::info!("[{id}] {ep} process {how}");
            }
            Step::Event(Some(kind)) => self.event(kind, events),
            Step::Event(None) => self.end_input(),
            Step::Wrote(r) => self.wrote(r),
            Step::Stalled => self.stalled(),
            Step::Signal => self.signal(child),
        }
        if self.exited && self.out.ended && self.running.is_some() {
            // Nothing of the group holds stdout any more: its slot is free
            // (a background job still printing keeps it).
            self.running = None;
        }
        if self.exited && self.out.ended && !self.exit_closed {
            // The process is done: its last line was sent, now the close,
            // an action like a script's `@close` (the hub applies it, after
            // the lines it was given before).
            self.exit_closed = true;
            let conn = self.ctx.conn.id.clone();
            let close = Action::Close { conn, code: 1000, reason: String::new(), cause: CloseCause::Script };
            self.ctx.app.delivery.apply(close);
        }
    }

    /// A message to write, or the close event.
    fn event(&mut self, kind: EventKind, events: &mut EventRx) {
        if self.pending.is_some() && matches!(kind, EventKind::Message { .. }) {
            // Behind the pending write: written after it, or dropped if the
            // close event comes first.
            return self.backlog.push_back(kind);
        }
        metrics::get().events_queued.fetch_sub(1, Ordering::Relaxed);
        match kind {
            EventKind::Message { payload, .. } => {
                self.budget.event_taken();
                let gone =
                    self.stdin.is_none() || self.exited || connection::drops_queue(&self.ctx.app, &self.ctx.shared);
                if gone {
                    self.dropped += 1;
                    self.budget.done(payload.len());
                    return;
                }
                let mut buf = Vec::with_capacity(payload.len() + 1);
                self.append(&mut buf, &payload);
                let mut p = Pending { buf, off: 0, len: payload.len(), count: 1, progress: Instant::now() };
                self.join_queued(&mut p, events);
                self.pending = Some(Box::new(p));
            }
            EventKind::Close { code, reason, cause } => {
                connection::log_closed(&self.ctx.conn, &self.ctx.shared, code, &reason, cause);
                self.end_input();
            }
            EventKind::Open | EventKind::Resume { .. } => {}
        }
    }

    /// A message's bytes as the process reads them: followed by a newline
    /// (binary mode: raw).
    fn append(&self, buf: &mut Vec<u8>, payload: &[u8]) {
        buf.extend_from_slice(payload);
        if !self.ctx.app.residents.settings.binary {
            buf.push(b'\n');
        }
    }

    /// Joins the messages already queued behind `p` to it (up to
    /// [`JOIN_UP_TO`] bytes): one write for all. Whatever else comes (the
    /// close event) waits in the backlog, behind them as it was.
    fn join_queued(&mut self, p: &mut Pending, events: &mut EventRx) {
        while p.buf.len() < JOIN_UP_TO && self.backlog.is_empty() {
            let Ok(kind) = events.try_recv() else { return };
            match kind {
                EventKind::Message { payload, .. } => {
                    metrics::get().events_queued.fetch_sub(1, Ordering::Relaxed);
                    self.append(&mut p.buf, &payload);
                    p.len += payload.len();
                    p.count += 1;
                }
                other => self.backlog.push_back(other),
            }
        }
    }

    /// The pending messages are done with (written or dropped): their
    /// bytes leave the budget, those joined leave `--max-queue` too.
    fn release(&mut self, p: &Pending) {
        self.budget.done(p.len);
        for _ in 1..p.count {
            self.budget.event_taken();
        }
    }

    /// The connection is over: what was not written to stdin is dropped
    /// (a process that does not read must not hold its connection's end
    /// for `--timeout`), stdin closed (a `while read` loop ends by itself),
    /// and the escalation starts if anything still runs.
    fn end_input(&mut self) {
        if let Some(p) = self.pending.take() {
            self.release(&p);
            self.dropped += p.count;
        }
        for kind in std::mem::take(&mut self.backlog) {
            metrics::get().events_queued.fetch_sub(1, Ordering::Relaxed);
            if let EventKind::Message { payload, .. } = kind {
                self.budget.event_taken();
                self.budget.done(payload.len());
                self.dropped += 1;
            }
        }
        if self.dropped > 0 {
            metrics::add(&metrics::get().events_dropped, self.dropped as u64);
            log::info!(
                "[{}] {} process: {} message(s) not written to its stdin (the process or the connection had ended)",
                self.ctx.conn.id,
                self.ctx.conn.target.endpoint(),
                self.dropped
            );
        }
        self.closed = true;
        self.stdin = None;
        self.timer = None;
        let grace = self.ctx.app.residents.settings.close_grace;
        if !self.exited || !self.out.ended {
            self.escalation = Some(Box::new((0, Instant::now() + grace)));
        }
    }

    fn wrote(&mut self, r: std::io::Result<usize>) {
        let Some(p) = &mut self.pending else { return };
        match r {
            Ok(n) => {
                p.off += n;
                p.progress = Instant::now();
                if p.off >= p.buf.len() {
                    if let Some(p) = self.pending.take() {
                        self.release(&p);
                    }
                    self.timer = None;
                }
            }
            Err(e) => {
                // EPIPE: the process closed its stdin or exited; what
                // follows is dropped.
                log::debug!("[{}] {} process: stdin: {e}", self.ctx.conn.id, self.ctx.conn.target.endpoint());
                if let Some(p) = self.pending.take() {
                    self.release(&p);
                    self.dropped += p.count;
                }
                self.stdin = None;
                self.timer = None;
            }
        }
    }

    /// The process has not read its stdin for `--timeout`: the connection
    /// closes (1011), its stdin too.
    fn stalled(&mut self) {
        let Some(p) = self.pending.take() else { return };
        self.release(&p);
        self.dropped += p.count;
        self.stdin = None;
        let timeout = self.ctx.app.residents.write_timeout;
        let note = format!("process: has not read its stdin for {timeout:?} (--timeout); closing (1011)");
        let req = CloseRequest {
            code: 1011,
            reason: "the process does not read its input".into(),
            cause: CloseCause::Script,
        };
        self.ctx.shared.request_close(req, Ending::Drain, Some(note));
    }

    /// The next step of the escalation; none once nothing of the group
    /// runs (what still holds stdout left the group: it is not ours).
    fn signal(&mut self, child: &dyn Child) {
        let Some(&(i, _)) = self.escalation.as_deref() else { return };
        let (sig, name) = ESCALATION[i];
        if !child.signal(sig) {
            self.escalation = Some(Box::new((ESCALATION.len(), Instant::now())));
            return;
        }
        log::info!(
            "[{}] {} process: still running after its connection ended; {name}",
            self.ctx.conn.id,
            self.ctx.conn.target.endpoint()
        );
        if sig == Signal::Kill {
            metrics::add(&metrics::get().procs_killed, 1);
        }
        self.escalation = Some(Box::new((i + 1, Instant::now() + self.ctx.app.residents.settings.close_grace)));
    }
}

/// A process's stdout: read as it comes, sent line by line (or chunk by
/// chunk in binary mode) to the connection, or through the line protocol.
struct Stdout {
    pipe: Pipe,
    /// The start of a line whose end has not come yet (at most `--max-message`).
    partial: Vec<u8>,
    /// Read but not sent yet: the client's queue was full (`--max-outgoing`
    /// messages; one read may hold thousands of short lines).
    held: Vec<u8>,
    /// Dropping the rest of a line over `--max-message`.
    skipping: bool,
    ended: bool,
    /// The pause while the client's queue is over half its budget.
    nap: Option<Box<runtime::Timer>>,
}

/// Most bytes read from stdout at once (on the stack, never kept).
const CHUNK: usize = 16 * 1024;

impl Stdout {
    fn new(pipe: Pipe) -> Self {
        Stdout { pipe, partial: Vec::new(), held: Vec::new(), skipping: false, ended: false, nap: None }
    }

    /// Reads what stdout has and sends it; `true` at its end. Nothing is
    /// kept between polls but the pause's timer: bytes read are handled
    /// before returning.
    fn poll_read(&mut self, c: &Ctx, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        // The client's pace: wait while its queue is over half its budget.
        while c.app.residents.paused(&c.shared) && !c.shared.has_ended() {
            let nap = self.nap.get_or_insert_with(|| Box::new(runtime::Timer::after(Duration::from_millis(2))));
            ready!(std::pin::Pin::new(&mut **nap).poll(cx));
            self.nap = None;
        }
        self.nap = None;
        if !self.held.is_empty() {
            let data = std::mem::take(&mut self.held);
            self.chunk(c, &data);
            return Poll::Ready(false);
        }
        loop {
            // Polled, not `readable()`: the waker stays registered between
            // steps (no epoll_ctl per step).
            if ready!(self.pipe.poll_readable(cx)).is_err() {
                self.end(c);
                return Poll::Ready(true);
            }
            let mut buf = [0u8; CHUNK];
            let mut file: &std::fs::File = self.pipe.get_ref();
            match file.read(&mut buf) {
                Ok(0) => {
                    self.end(c);
                    return Poll::Ready(true);
                }
                Ok(n) => {
                    self.chunk(c, &buf[..n]);
                    return Poll::Ready(false);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.end(c);
                    return Poll::Ready(true);
                }
            }
        }
    }

    fn chunk(&mut self, c: &Ctx, mut data: &[u8]) {
        let max = c.app.residents.max_line;
        if c.app.residents.settings.binary {
            while !data.is_empty() && !self.hold(c, data) {
                let (piece, rest) = data.split_at(data.len().min(max));
                self.send(c, Message::Binary(Bytes::copy_from_slice(piece)));
                data = rest;
            }
            return;
        }
        while !data.is_empty() && !self.hold(c, data) {
            let newline = data.iter().position(|&b| b == b'\n');
            let piece = &data[..newline.map_or(data.len(), |i| i)];
            data = &data[newline.map_or(data.len(), |i| i + 1)..];
            if !self.skipping && self.partial.len() + piece.len() > max {
                log::warn!(
                    "[{}] {} process: a line over --max-message ({max} bytes); dropped",
                    c.conn.id,
                    c.conn.target.endpoint()
                );
                self.partial = Vec::new();
                self.skipping = true;
            }
            match (self.skipping, newline.is_some()) {
                (true, true) => self.skipping = false,
                (true, false) => {}
                (false, true) if self.partial.is_empty() => self.line(c, piece),
                (false, true) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(piece);
                    self.line(c, &line);
                }
                (false, false) => self.partial.extend_from_slice(piece),
            }
        }
    }

    /// Keeps `data` for later when the client's queue has `--max-outgoing`
    /// messages (one more would close it, 1008): the process waits for
    /// its reader, as it does on bytes.
    fn hold(&mut self, c: &Ctx, data: &[u8]) -> bool {
        let full = c.shared.queued_messages() >= c.app.residents.max_queued && !c.shared.has_ended();
        if full {
            self.held = data.to_vec();
        }
        full
    }

    /// The end of stdout: a last line without a newline is sent too.
    fn end(&mut self, c: &Ctx) {
        if !self.partial.is_empty() && !self.skipping {
            let line = std::mem::take(&mut self.partial);
            self.line(c, &line);
        }
    }

    /// One line, without its `\n` (and a `\r` before it).
    fn line(&mut self, c: &Ctx, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        if !c.app.residents.settings.directives {
            return self.send(c, Message::text(text.into_owned()));
        }
        let (id, endpoint) = (&c.conn.id, c.conn.target.endpoint());
        match parse_line(&text, Context::Script { conn: id, endpoint }) {
            Ok(Line::Empty) => {}
            Ok(Line::Text(t)) => self.send(c, Message::text(t)),
            Ok(Line::Action(a)) => {
                c.app.delivery.apply(a);
            }
            Err(why) => log::warn!("[{id}] {endpoint} process: {why}"),
        }
    }

    fn send(&self, c: &Ctx, msg: Message) {
        c.app.delivery.apply(Action::Send { to: c.conn.id.clone(), msg });
    }
}

/// The selection rules and the line splitter, without a process.
#[cfg(test)]
mod tests {
    use crate::config::PerConnection;

    #[test]
    fn patterns_match_paths_and_endpoints_as_globs() {
        let p = |pats: &[&str]| PerConnection {
            patterns: pats.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(p(&["*"]).matches("/any/thing"));
        assert!(p(&["/live/*"]).matches("/live/a/b"));
        assert!(!p(&["/live/*"]).matches("/lives"));
        assert!(p(&["/count.sh"]).matches("/count.sh"));
        assert!(!p(&["/count.sh"]).matches("/count.sh/x"));
        assert!(p(&["/a?c", "/x"]).matches("/abc"));
        assert!(!p(&[]).matches("/x"));
    }
}

/// An idle per-connection endpoint pays for the boxed `run` future on top of
/// an event connection: its size is memory per connection.
#[cfg(test)]
mod idle_size {
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use super::*;
    use crate::gateway::resident::{Child, Pipe, Process, Signal};

    struct Fake;
    impl Child for Fake {
        fn signal(&self, _: Signal) -> bool {
            false
        }
        fn poll_wait(&mut self, _: &mut Context<'_>) -> Poll<String> {
            Poll::Pending
        }
        fn end_group(&self) {}
    }

    fn pipe() -> (Pipe, Pipe) {
        let (r, w) = std::io::pipe().expect("pipe");
        let r = runtime::Async::new(std::fs::File::from(std::os::fd::OwnedFd::from(r))).expect("async");
        let w = runtime::Async::new(std::fs::File::from(std::os::fd::OwnedFd::from(w))).expect("async");
        (r, w)
    }

    /// A connection's pieces, its process's stdin as the process reads it.
    struct Setup {
        app: Arc<WsState>,
        budget: Arc<ConnBudget>,
        tx: connection::EventTx,
        stdin: std::io::PipeReader,
        /// Held open: the process's stdout does not end.
        _writer: Pipe,
        run: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
        size: usize,
    }

    fn setup() -> Setup {
        let t = crate::ws::fake::Scripted::new(|_| Ok(String::new()));
        let app = crate::ws::state::for_tests(&[], t.clone());
        let crate::ws::fake::TestConn { conn, shared, budget, tx, rx, slot, .. } = crate::ws::fake::test_conn(&app);
        let (reader, stdin) = std::io::pipe().expect("pipe");
        let stdin = std::fs::File::from(std::os::fd::OwnedFd::from(stdin));
        let (stdout, out_w) = pipe();
        let running = app.residents.reserve().expect("a process slot");
        let process = Process { stdin, stdout, child: Box::new(Fake) };
        let fut = run(app.clone(), conn, Session { process, running }, rx, shared, budget.clone(), slot);
        let size = std::mem::size_of_val(&fut);
        let run = Box::pin(fut);
        Setup { app, budget, tx, stdin: reader, _writer: out_w, run, size }
    }

    /// Every connection to a resident process holds it for its whole life
    /// (boxed beside its socket's io in the connection's task).
    #[test]
    fn the_run_future_is_small() {
        let size = setup().size;
        assert!(
            size <= 288,
            "the run future grew to {size} bytes (1,608 as an async fn racing async blocks, 680 as an async fn, 280 \
             by hand)"
        );
    }

    /// Messages queued behind each other go to stdin in one write, in
    /// order, and each leaves the queue's budgets (bytes and `--max-queue`).
    #[test]
    fn queued_messages_reach_stdin_in_order_and_leave_the_budgets() {
        let mut s = setup();
        for m in ["one", "two", "three"] {
            s.budget.message_read(m.len(), true).expect("within the budget");
            s.budget.event_queued();
            let payload = bytes::Bytes::from_static(m.as_bytes());
            s.tx.unbounded_send(EventKind::Message { payload, binary: false }).expect("queued");
        }
        assert_eq!((s.budget.events_waiting(), s.app.queue_budget.held()), (3, 11));
        let budget = s.budget.clone();
        let app = s.app.clone();
        let drained = async {
            while budget.events_waiting() > 0 || app.queue_budget.held() > 0 {
                runtime::sleep(Duration::from_millis(1)).await;
            }
        };
        let stuck = async {
            runtime::sleep(Duration::from_secs(10)).await;
            let (waiting, held) = (budget.events_waiting(), app.queue_budget.held());
            panic!("after 10 s, {waiting} message(s) and {held} byte(s) still counted in the queue's budgets");
        };
        runtime::block_on(s.run.as_mut().or(drained).or(stuck));
        let mut got = [0u8; 14];
        s.stdin.read_exact(&mut got).expect("what the process read");
        assert_eq!(&got, b"one\ntwo\nthree\n");
    }
}
