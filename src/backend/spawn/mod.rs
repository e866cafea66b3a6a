//! The spawn transport: one fresh process per event, the way CGI always
//! worked.
//!
//! An event's script runs on a worker thread, with blocking I/O
//! ([`worker`], on the bounded, lazily created [`pool`], at most
//! `--max-procs` threads and none while idle): spawning a process is
//! CPU-bound kernel work, and driving its three pipes and its exit through
//! the async reactor cost ~45 more system calls per event than one blocking
//! `ppoll` (epoll registration and re-arming, reactor and executor wake-ups;
//! docs/bench-notes/workers.md). The event's task hands the job over once and
//! feeds the stdout chunks it gets back to the gateway. Classic CGI pages
//! ([`crate::http::cgi`]) stay on the reactor ([`process::Script`]): a page's
//! body streams to an HTTP client at the client's pace, for as long as the
//! script writes, which a bounded pool of threads should not wait on.
//! Both share the start ([`child`]), the process groups ([`groups`]), the
//! stderr rules ([`process::StderrLines`]) and the outcome texts.

pub mod child;
pub mod groups;
pub mod pool;
pub mod process;
pub mod resident;
pub mod watch;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use crate::backend::env::{self, EnvSettings};
use crate::event::{Event, EventKind};
use crate::gateway::slots::Slots;
use crate::gateway::{BoxFuture, Call, Limits, Outcome, Transport};
pub use child::Launch;
pub use process::Stderr;

/// How long a script's process group may keep running after SIGTERM
/// before SIGKILL, and how long stdout is still read after the script
/// exited (a background child may hold it open).
pub const GRACE: Duration = Duration::from_secs(2);

pub struct Spawn {
    pub env: EnvSettings,
    pub limits: Limits,
    /// See [`GRACE`].
    pub grace: Duration,
    pub stderr: Stderr,
    /// Bounds the number of scripts running at once (`--max-procs`), events
    /// and pages together.
    procs: Arc<Slots>,
    /// The threads that run events' scripts ([`worker`]), as many as
    /// `--max-procs` at most.
    workers: pool::Pool<worker::Job>,
    /// Threads that follow a busy connection ([`Transport::follow`]): they
    /// read its next messages and run their events inline
    /// ([`worker::follower`]), at most `--max-procs` of them.
    followers: pool::Pool<crate::gateway::Follow>,
    /// How a per-connection process is started (the single script's
    /// `COMMAND ARGS...`, websocketd's working directory).
    pub launch: child::Launch,
    /// This transport among all made in the process (never reused): names
    /// `env` in a kept environment block ([`Self::env_block`]).
    id: u64,
}

impl Spawn {
    pub fn new(env: EnvSettings, limits: Limits, stderr: Stderr, max_procs: usize) -> Self {
        let workers = pool::Pool::new(max_procs, "ws2http-spawn", worker::run);
        let followers = pool::Pool::new(max_procs, "ws2http-follow", worker::follower);
        let procs = Slots::new(max_procs);
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Spawn { env, limits, grace: GRACE, stderr, procs, workers, followers, launch: child::Launch::PLAIN, id }
    }

    /// The environment block of `event`, straight into the spawn's block:
    /// one buffer, not a `String` per variable. On a thread that ran the
    /// same connection's last event through this transport (a follower),
    /// the block it gave back still starts with the connection's variables
    /// ([`env::conn_vars`]): only the event's own are added (`true`).
    fn env_block(&self, event: &Event) -> (child::EnvBlock, bool) {
        let open = matches!(event.kind, EventKind::Open);
        let tag = self.id << 1 | u64::from(open);
        let (mut vars, kept) = child::EnvBlock::reused_for(&event.conn, tag);
        if !kept {
            env::conn_vars(&mut vars, &self.env, &event.conn, open);
            vars.mark_prefix(&event.conn, tag);
        }
        env::event_own_vars(&mut vars, &self.env, event);
        (vars, kept)
    }
}

impl Transport for Spawn {
    fn via(&self) -> &str {
        ""
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn slots(&self) -> &Arc<Slots> {
        &self.procs
    }

    fn follow(&self, job: crate::gateway::Follow) -> Result<(), crate::gateway::Follow> {
        self.followers.try_submit(job)
    }

    fn starter(&self) -> Option<&dyn crate::gateway::resident::Starter> {
        Some(self)
    }

    fn exchange<'a>(&'a self, event: &'a Event, call: &'a mut Call<'_>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            // Straight into the spawn's environment block: one buffer, not a
            // String per variable.
            let (vars, _) = self.env_block(event);
            let stdin = match &event.kind {
                EventKind::Message { payload, .. } => payload.clone(),
                _ => bytes::Bytes::new(),
            };
            process::run(self, &event.conn, vars, stdin, call).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::env::event_env;
    use crate::event::{ConnInfo, RequestFields, RequestInfo, Target};
    use crate::id::ConnId;

    fn conn(id: &str, host: &str) -> Arc<ConnInfo> {
        let fields = RequestFields { method: "GET", uri: "/e?q=1", query: "q=1", ..Default::default() };
        let request = RequestInfo::new(fields, [("Host", host), ("X-A", "1"), ("x-a", "2")]);
        let target =
            Target { filename: "/srv/e".into(), script_name: "/e".into(), path_info: "/p".into(), interpreter: None };
        Arc::new(ConnInfo { id: ConnId::parse(id).expect("id"), target, request })
    }

    fn event(conn: &Arc<ConnInfo>, kind: EventKind) -> Event {
        Event { kind, conn: conn.clone(), rooms: vec!["r".into()], meta: vec![("k".into(), "v".into())] }
    }

    fn message(text: &str) -> EventKind {
        EventKind::Message { payload: bytes::Bytes::copy_from_slice(text.as_bytes()), binary: false }
    }

    /// Events of one connection after another on one thread (a follower)
    /// reuse the connection's variables from the kept block: every block is
    /// still exactly the event's whole environment, whatever ran before it
    /// (another connection, another transport, an open event: `GET`).
    #[test]
    fn a_kept_blocks_connection_variables_make_the_same_environment() {
        let limits = Limits { timeout: Duration::from_secs(1), max_output: 1024 };
        let spawn = |token: &str| {
            let env = EnvSettings { api_token: token.into(), ..EnvSettings::default() };
            Spawn::new(env, limits, Stderr::default(), 1)
        };
        let (one, two) = (spawn("a"), spawn("b"));
        let (a, b) = (conn("a", "one.example"), conn("b", "two.example"));
        let events = [
            (&one, event(&a, message("hi"))),
            (&one, event(&a, message("a longer message"))),
            (&one, event(&a, EventKind::Open)),
            (&one, event(&a, message(""))),
            (&one, event(&b, message("hi"))),
            (&two, event(&b, message("hi"))),
            (&one, event(&a, message("hi"))),
            (&one, event(&a, message("again"))),
        ];
        let mut reused = 0;
        for (spawn, ev) in &events {
            let (block, kept) = spawn.env_block(ev);
            reused += usize::from(kept);
            let want: Vec<String> = event_env(&spawn.env, ev).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            assert_eq!(block.entries(), want, "{:?} on {}", ev.kind, ev.conn.id);
            block.recycle();
        }
        // Only for the 2nd and the last: the others follow another
        // connection, another method (open: GET; the 4th after the open)
        // or another transport's settings.
        assert_eq!(reused, 2);
    }

    /// The kept block across what may change between a connection's events
    /// (rooms, metadata, close and resume events, a variable that outgrows
    /// the kept size, an event whose block was dropped unreturned as in a
    /// panic, websocketd's flavour, a connection dropped and another made
    /// meanwhile): every block is still exactly the event's environment.
    #[test]
    fn a_kept_block_is_exactly_the_events_environment_whatever_changed_between() {
        let limits = Limits { timeout: Duration::from_secs(1), max_output: 1024 };
        let ws = Spawn::new(EnvSettings::default(), limits, Stderr::default(), 1);
        let websocketd = EnvSettings { flavour: crate::config::CgiFlavour::Websocketd, ..EnvSettings::default() };
        let wd = Spawn::new(websocketd, limits, Stderr::default(), 1);
        let a = conn("a", "one.example");
        let with = |kind: EventKind, rooms: &[&str], meta: &[(&str, &str)]| Event {
            kind,
            conn: a.clone(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            meta: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let big = "m".repeat(2 * child::SPARE_BYTES);
        let close = EventKind::Close { code: 1000, reason: "bye\n".into(), cause: crate::action::CloseCause::Client };
        let resume = EventKind::Resume { count: 2, remote_addr: "10.0.0.9".into() };
        let check = |spawn: &Spawn, ev: &Event, give_back: bool| {
            let (block, kept) = spawn.env_block(ev);
            let want: Vec<String> = event_env(&spawn.env, ev).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            assert_eq!(block.entries(), want, "{:?} rooms {:?} meta {:?}", ev.kind, ev.rooms, ev.meta.len());
            if give_back {
                block.recycle();
            }
            kept
        };
        assert!(!check(&ws, &with(message("1"), &["r"], &[("k", "v")]), true));
        assert!(check(&ws, &with(message("2"), &[], &[]), true), "rooms and metadata are the event's own");
        assert!(check(&ws, &with(message("3"), &["a", "b"], &[("k", "w"), ("n", "1")]), true));
        assert!(check(&ws, &with(resume.clone(), &["a"], &[]), true));
        assert!(check(&ws, &with(close.clone(), &["a"], &[]), true));
        // Outgrew the kept size: not kept, the next one builds again.
        assert!(check(&ws, &with(message("4"), &[], &[("big", &big)]), true));
        assert!(!check(&ws, &with(message("5"), &[], &[]), true));
        // Dropped without being given back (a panic): built again.
        assert!(check(&ws, &with(message("6"), &[], &[]), false));
        assert!(!check(&ws, &with(message("7"), &[], &[]), true));
        // websocketd's flavour: all of it is the connection's.
        assert!(!check(&wd, &with(message("8"), &[], &[]), true));
        assert!(check(&wd, &with(message("9"), &["x"], &[("k", "v")]), true));
        assert!(!check(&wd, &with(EventKind::Open, &[], &[]), true));
        assert!(!check(&ws, &with(message("10"), &[], &[]), true));
        // The connection gone, another made: never taken for it.
        let b_only = {
            let b = conn("b", "two.example");
            Event { kind: message("11"), conn: b, rooms: vec![], meta: vec![] }
        };
        drop(a);
        assert!(!check(&ws, &b_only, true));
        for _ in 0..100 {
            let c = conn("c", "three.example");
            let ev = Event { kind: message("12"), conn: c, rooms: vec![], meta: vec![] };
            assert!(!check(&ws, &ev, true), "a new connection never reuses a gone one's variables");
        }
    }
}
