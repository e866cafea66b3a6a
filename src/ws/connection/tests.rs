use super::*;
use crate::gateway::resolve::Resolved;
use crate::id::ConnId;
use crate::ws::fake::Scripted;

/// A registered connection of `/mirror.sh` with its event queue, as
/// the handshake leaves it (the worker not started yet).
struct Open {
    conn: Arc<ConnInfo>,
    /// The transport its route chose at the handshake.
    transport: Arc<dyn Transport>,
    outgoing: Outgoing,
    shared: Arc<ConnShared>,
    budget: Arc<ConnBudget>,
    tx: EventTx,
    rx: Option<EventRx>,
}

fn open(app: &WsState) -> Open {
    let Resolved::Found(routed) = app.routes.resolve("/mirror.sh") else { panic!("no /mirror.sh") };
    let (target, transport) = (routed.target, routed.route.transport.clone());
    let conn = Arc::new(ConnInfo { id: ConnId::random(), target, request: Default::default() });
    let (outgoing, shared) = app.hub.register(conn.clone());
    let budget = app.queue_budget.conn(Box::new(|_| {}));
    let (tx, rx) = event_queue(&shared);
    Open { conn, transport, outgoing, shared, budget, tx, rx: Some(rx) }
}

impl Open {
    /// Queues a message event the way the reader does.
    fn message(&self, text: &str) {
        self.budget.message_read(text.len(), true).expect("budget");
        self.budget.event_queued();
        self.tx.unbounded_send(EventKind::Message { payload: text.to_owned().into(), binary: false }).expect("queue");
    }

    /// Runs the event worker until the close event.
    fn run_worker(&mut self, app: &Arc<WsState>) {
        let slot = app.conn_limits.reserve("127.0.0.1".parse().ok()).expect("slot");
        let rx = self.rx.take().expect("one worker");
        let (conn, shared, budget) = (self.conn.clone(), self.shared.clone(), self.budget.clone());
        runtime::block_on(event_worker(app.clone(), conn, self.transport.clone(), rx, shared, budget, slot));
    }
}

fn texts(rx: &Outgoing) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|m| match m {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => format!("{b:?}"),
        })
        .collect()
}

#[test]
fn the_event_queue_ends_like_a_channel() {
    use futures_lite::future::{block_on, poll_once};
    let close = || EventKind::Close { code: 1000, reason: String::new(), cause: CloseCause::Client };
    let message = |t: &str| EventKind::Message { payload: t.to_owned().into(), binary: false };
    // The pushing end gone: what is queued is still taken, in order, then the end.
    let (shared, _out) = ConnShared::new();
    let (tx, mut rx) = event_queue(&shared);
    assert!(block_on(poll_once(rx.next())).is_none(), "empty: the worker waits");
    tx.unbounded_send(message("a")).expect("open");
    tx.unbounded_send(close()).expect("open");
    drop(tx);
    assert_eq!(block_on(rx.next()), Some(message("a")));
    assert_eq!(block_on(rx.next()), Some(close()));
    assert_eq!(block_on(rx.next()), None);
    // The worker gone: what is queued goes, later pushes are refused.
    let (shared, _out) = ConnShared::new();
    let (tx, rx) = event_queue(&shared);
    tx.unbounded_send(message("b")).expect("open");
    drop(rx);
    assert_eq!(shared.events.try_take(), Err(crate::hub::queue::Empty::Closed));
    assert_eq!(tx.unbounded_send(close()), Err(close()));
}

#[test]
fn a_panic_in_one_event_fails_that_event_and_the_close_event_still_runs() {
    let buggy = Scripted::new(|e| match e.kind.name() == "message" && *crate::ws::fake::name(&e.kind) == *"boom" {
        true => panic!("a bug in a backend"),
        false => Ok(String::new()),
    });
    let app = crate::ws::state::for_tests(&[], buggy.clone());
    let mut c = open(&app);
    for m in ["boom", "after"] {
        c.message(m);
    }
    c.tx.unbounded_send(EventKind::Close { code: 1000, reason: String::new(), cause: CloseCause::Client })
        .expect("queue");
    c.run_worker(&app);
    assert_eq!(buggy.seen(), ["boom", "after", "close 1000 client"]);
    assert!(!app.hub.is_known(&c.conn.id), "the connection left the hub");
    assert_eq!(app.queue_budget.held(), 0);
    // The outcome the worker counts (metrics are global: other tests bump them too).
    let boom = EventKind::Message { payload: "boom".to_owned().into(), binary: false };
    let outcome = runtime::block_on(dispatch_guarded(&app, &c.conn, &*buggy, boom, None));
    assert_eq!(outcome, Outcome::Failed("panicked: a bug in a backend".into()));
}

#[test]
fn events_run_in_order_a_failure_stops_nothing_and_actions_reach_other_connections() {
    let other = Arc::new(std::sync::OnceLock::<ConnId>::new());
    let script = {
        let other = other.clone();
        Scripted::new(move |e| {
            let text = crate::ws::fake::name(&e.kind);
            let to = other.get().expect("the other connection");
            match (e.kind.name(), text.as_str()) {
                ("message", "fail") => Err(String::new()),
                ("message", _) => Ok(format!("@send {to} got {text}\necho {text}\n")),
                _ => Ok(String::new()),
            }
        })
    };
    let app = crate::ws::state::for_tests(&[], script.clone());
    let (mut c, b) = (open(&app), open(&app));
    other.set(b.conn.id.clone()).expect("set once");
    for m in ["one", "fail", "two", "three"] {
        c.message(m);
    }
    c.tx.unbounded_send(EventKind::Close { code: 1000, reason: "bye".into(), cause: CloseCause::Client })
        .expect("queue");
    c.run_worker(&app);
    assert_eq!(script.seen(), ["one", "fail", "two", "three", "close 1000 client"]);
    assert_eq!(texts(&b.outgoing), ["got one", "got two", "got three"]);
    assert_eq!(texts(&c.outgoing), ["echo one", "echo two", "echo three"]);
    assert!(app.hub.is_known(&b.conn.id) && !app.hub.is_known(&c.conn.id));
    assert_eq!(app.queue_budget.held(), 0, "every message's bytes given back");
}

#[test]
fn every_event_runs_through_the_transport_the_handshake_chose() {
    let table = Scripted::new(|_| Ok("from the table\n".into()));
    let chosen = Scripted::new(|e| Ok(format!("{} from the handshake\n", crate::ws::fake::name(&e.kind))));
    let app = crate::ws::state::for_tests(&[], table.clone());
    let mut c = open(&app);
    // The connection keeps its route's transport; the table is not asked again.
    c.transport = chosen.clone();
    c.message("hi");
    c.tx.unbounded_send(EventKind::Close { code: 1000, reason: String::new(), cause: CloseCause::Client })
        .expect("queue");
    c.run_worker(&app);
    assert_eq!(chosen.seen(), ["hi", "close 1000 client"]);
    assert!(table.seen().is_empty(), "{:?}", table.seen());
    assert_eq!(texts(&c.outgoing)[0], "hi from the handshake");
}

#[test]
fn a_dropped_connection_drops_its_queued_messages_and_closes_once_as_dropped() {
    let script = Scripted::new(|_| Ok(String::new()));
    let app = crate::ws::state::for_tests(&[], script.clone());
    let mut c = open(&app);
    c.message("one");
    c.message("two");
    // The TCP connection went away; a second end (say, reader and writer
    // both noticing) must not run a second close event.
    runtime::block_on(finish(&app, &c.conn, &c.shared, &c.tx));
    runtime::block_on(finish(&app, &c.conn, &c.shared, &c.tx));
    c.run_worker(&app);
    assert_eq!(script.seen(), ["close 1006 dropped"]);
    assert!(!app.hub.is_known(&c.conn.id));
    assert_eq!(app.queue_budget.held(), 0, "the dropped messages' bytes given back");
}

#[test]
fn a_close_code_the_client_may_not_send_is_told_by_the_code_on_the_wire() {
    // What tungstenite reports for both: 1002 "Protocol violation".
    let reported = || Some(CloseFrame { code: CloseCode::Protocol, reason: "Protocol violation".into() });
    let (req, note) = client_close(reported(), Some(1005));
    assert_eq!((req.code, req.cause, note.is_some()), (1002, CloseCause::ProtocolError, true));
    let (req, note) = client_close(reported(), Some(1002));
    assert_eq!(
        (req.code, req.cause, req.reason.as_str(), note),
        (1002, CloseCause::Client, "Protocol violation", None)
    );
    let (req, _) = client_close(None, None);
    assert_eq!((req.code, req.cause), (1005, CloseCause::Client));
}

#[test]
fn after_a_close_frame_the_queued_messages_still_run_then_the_close_with_its_cause() {
    let script = Scripted::new(|_| Ok(String::new()));
    let app = crate::ws::state::for_tests(&[], script.clone());
    let mut c = open(&app);
    c.message("last words");
    let (req, note) = client_close(Some(CloseFrame { code: CloseCode::Away, reason: "gone".into() }), Some(1001));
    c.shared.request_close(req, Ending::Record, note);
    // The TCP connection then ends: the client's close stays the cause.
    runtime::block_on(finish(&app, &c.conn, &c.shared, &c.tx));
    c.run_worker(&app);
    assert_eq!(script.seen(), ["last words", "close 1001 client"]);
}

/// The worker holds the connection's slot (`--max-connections`) until it
/// has run the close event, whatever ran before it.
#[test]
fn the_worker_holds_the_connection_slot_until_the_close_event_ran() {
    use futures_lite::future::{block_on, poll_once};
    let app = crate::ws::state::for_tests(&[], Scripted::new(|_| Ok(String::new())));
    let mut c = open(&app);
    let limits = crate::conn_limits::ConnLimits::new(1, 1);
    let ip = "127.0.0.1".parse().ok();
    let slot = limits.reserve(ip).expect("slot");
    let rx = c.rx.take().expect("one worker");
    let (conn, shared, budget) = (c.conn.clone(), c.shared.clone(), c.budget.clone());
    let mut worker = Box::pin(event_worker(app.clone(), conn, c.transport.clone(), rx, shared, budget, slot));
    c.message("one");
    assert!(block_on(poll_once(worker.as_mut())).is_none(), "waits for more events");
    assert!(limits.reserve(ip).is_err(), "the slot is held while the connection lives");
    c.tx.unbounded_send(EventKind::Close { code: 1000, reason: String::new(), cause: CloseCause::Client })
        .expect("queue");
    block_on(worker);
    assert!(limits.reserve(ip).is_ok(), "given back once the close event ran");
}

/// The writer's next step, polled in place: a queued message before the
/// abort signal (and the ping timer), the abort once nothing is queued, and
/// the queue's end once it is closed.
#[test]
fn the_writer_takes_what_is_queued_before_an_abort_and_sees_the_queues_end() {
    use futures_lite::future::{block_on, poll_once};
    let app = crate::ws::state::for_tests(&[], Scripted::new(|_| Ok(String::new())));
    let step = |c: &Open| {
        let mut watch = Watch { pinger: Pinger::new(Some(Duration::from_secs(3600))), shared: &c.shared };
        match block_on(poll_once(std::future::poll_fn(|cx| next_step(cx, &c.outgoing, &mut watch)))) {
            None => "pending".to_owned(),
            Some(Step::Send(Message::Text(t))) => format!("send {}", t.as_str()),
            Some(Step::Send(_)) => "send binary".to_owned(),
            Some(Step::Ended) => "ended".to_owned(),
            Some(Step::Tick) => "tick".to_owned(),
            Some(Step::Abort) => "abort".to_owned(),
        }
    };
    let c = open(&app);
    assert_eq!(step(&c), "pending");
    let send = |c: &Open, t: &str| {
        app.hub.apply(crate::action::Action::Send { to: c.conn.id.clone(), msg: Message::Text(t.into()) })
    };
    send(&c, "a");
    let drop_now = CloseRequest { code: 1013, reason: String::new(), cause: CloseCause::QueueFull };
    c.shared.request_close(drop_now, Ending::Drop, None);
    assert_eq!([step(&c), step(&c), step(&c)], ["send a", "abort", "abort"]);
    // A close that drains: what is queued, then the end.
    let d = open(&app);
    send(&d, "b");
    let drain = CloseRequest { code: 1000, reason: String::new(), cause: CloseCause::Api };
    d.shared.request_close(drain, Ending::Drain, None);
    assert_eq!([step(&d), step(&d)], ["send b", "ended"]);
}

/// A waker that counts its wakes.
struct Wakes(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Each of the writer's sources, polled in place by [`next_step`], wakes
/// an idle writer: a message queued, the abort signal, the ping timer
/// (a lost wake-up would leave the connection's writer asleep for good).
/// The queue and the abort signal share one waker slot (`OutQueue`'s).
#[test]
fn an_idle_writer_is_woken_by_its_queue_its_abort_signal_and_its_ping_timer() {
    let app = crate::ws::state::for_tests(&[], Scripted::new(|_| Ok(String::new())));
    let wakes = Arc::new(Wakes(Default::default()));
    let waker = std::task::Waker::from(wakes.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let woken = || wakes.0.load(Ordering::SeqCst);
    let c = open(&app);
    let mut watch = Watch { pinger: Pinger::new(None), shared: &c.shared };
    assert!(next_step(&mut cx, &c.outgoing, &mut watch).is_pending());
    app.hub.apply(crate::action::Action::Send { to: c.conn.id.clone(), msg: Message::Text("a".into()) });
    assert_eq!(woken(), 1, "a queued message wakes the writer");
    assert!(matches!(next_step(&mut cx, &c.outgoing, &mut watch), Poll::Ready(Step::Send(_))));
    assert!(next_step(&mut cx, &c.outgoing, &mut watch).is_pending());
    // (`Ending::Drop`: `Ending::Abort` closes the queue too, whose end
    // comes first, as it did in the `or` chain before.)
    let drop_now = CloseRequest { code: 1013, reason: String::new(), cause: CloseCause::QueueFull };
    c.shared.request_close(drop_now, Ending::Drop, None);
    assert!(woken() >= 2, "the abort signal wakes the writer");
    assert!(matches!(next_step(&mut cx, &c.outgoing, &mut watch), Poll::Ready(Step::Abort)));
    // The ping timer: waited for through the waker alone (a timer whose
    // waker is not registered never ends this wait: the test hangs).
    let d = open(&app);
    let mut watch = Watch { pinger: Pinger::new(Some(Duration::from_millis(5))), shared: &d.shared };
    for _ in 0..3 {
        let step = runtime::block_on(std::future::poll_fn(|cx| next_step(cx, &d.outgoing, &mut watch)));
        assert!(matches!(step, Step::Tick));
    }
}
