//! The CGI backend: one fresh process per event, the way CGI always worked.

pub mod env;
pub mod groups;
pub mod http;
pub mod output;
pub mod process;
pub mod resolve;
pub mod slots;
pub mod spawn;

use std::sync::Arc;

use crate::backend::{Backend, BoxFuture, Outcome, Output};
use crate::directive::Context;
use crate::event::{Event, EventKind};
use env::EnvSettings;
use output::OutputParser;
use process::{Label, Limits};

pub struct CgiBackend {
    pub env: EnvSettings,
    pub limits: Limits,
    /// Bounds the number of scripts running at once (`--max-procs`).
    procs: Arc<slots::Slots>,
}

impl CgiBackend {
    pub fn new(env: EnvSettings, limits: Limits, max_procs: usize) -> Self {
        CgiBackend { env, limits, procs: slots::Slots::new(max_procs) }
    }

    /// A slot among the `--max-procs` scripts allowed to run at once.
    pub async fn permit(&self) -> slots::Slot {
        self.procs.acquire().await
    }
}

impl Backend for CgiBackend {
    fn run<'a>(&'a self, event: &'a Event, out: &'a mut (dyn FnMut(Output) + Send)) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let conn = &event.conn;
            let label = format!("[{}] {} {}", conn.id, conn.target.endpoint(), event.kind.name());
            // Straight into the spawn's environment block: one buffer, not a
            // String per variable.
            let mut env = spawn::EnvBlock::with_capacity(4096, 48);
            env::event_vars(&mut env, &self.env, event);
            let stdin = match &event.kind {
                EventKind::Message { payload, .. } => payload.clone(),
                _ => bytes::Bytes::new(),
            };
            let ctx = Context::Script { conn: &conn.id, endpoint: conn.target.endpoint() };
            let mut parser = OutputParser::new(ctx, event.kind == EventKind::Open);
            let _permit = self.permit().await;
            let outcome = {
                let mut on_line = |line: &[u8]| parser.push(line, out);
                process::run(&conn.target, &env, stdin, &self.limits, &Label(&label), &mut on_line).await
            };
            parser.finish(out);
            outcome
        })
    }
}
