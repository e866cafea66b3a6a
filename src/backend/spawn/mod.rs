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
}

impl Spawn {
    pub fn new(env: EnvSettings, limits: Limits, stderr: Stderr, max_procs: usize) -> Self {
        let workers = pool::Pool::new(max_procs, "ws2http-spawn", worker::run);
        let followers = pool::Pool::new(max_procs, "ws2http-follow", worker::follower);
        let procs = Slots::new(max_procs);
        Spawn { env, limits, grace: GRACE, stderr, procs, workers, followers, launch: child::Launch::PLAIN }
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
            let mut vars = child::EnvBlock::reused(child::SPARE_BYTES, child::SPARE_VARS);
            env::event_vars(&mut vars, &self.env, event);
            let stdin = match &event.kind {
                EventKind::Message { payload, .. } => payload.clone(),
                _ => bytes::Bytes::new(),
            };
            process::run(self, &event.conn, vars, stdin, call).await
        })
    }
}
