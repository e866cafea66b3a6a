//! Classic CGI over HTTP (RFC 3875) from spawned scripts: a plain request
//! runs the script once with the request body on stdin, and its output
//! becomes the HTTP response. Everything about the page (slot, deadline,
//! header block, reply, log line) is the gateway's
//! ([`crate::gateway::page::serve`]); the script starts and stops the one
//! way every script does ([`crate::backend::spawn::process::Script`]). What
//! differs from an event is that the script keeps running in the background
//! while its body streams.

use std::os::unix::process::ExitStatusExt;
use std::time::Instant;

use futures_lite::io::BufReader;

use crate::backend::env::page_env;
use crate::backend::spawn::child::EnvBlock;
use crate::backend::spawn::process::{log_stderr, start, Script, Started, Time};
use crate::backend::spawn::Spawn;
use crate::gateway::page::{Finished, Page, PageEnd, PageRun, PageTransport, StartError};
use crate::gateway::BoxFuture;
use crate::runtime;

impl PageTransport for Spawn {
    fn start_page<'a>(&'a self, page: Page<'a>) -> BoxFuture<'a, Result<PageRun, StartError>> {
        Box::pin(async move {
            let Page { info, target, body, label, started } = page;
            let mut env = EnvBlock::with_capacity(4096, 48);
            page_env(&mut env, &self.env, info, target, Some(body.body.len() as u64), body.content_type.as_deref());
            let time = Time { started, timeout: self.limits.timeout, grace: self.grace };
            let Started { script, stdout, stderr } =
                start(target, &env, body.body, time, true).map_err(StartError::Failed)?;
            log_stderr(stderr, label.to_owned(), &self.stderr);
            let stdout = Box::new(BufReader::with_capacity(64 * 1024, stdout));
            Ok(PageRun { stdout, end: Box::new(Running { script, label: label.to_owned() }) })
        })
    }
}

/// A page's script, running while its body streams.
struct Running {
    script: Script,
    label: String,
}

impl PageEnd for Running {
    fn finish(mut self: Box<Self>, _deadline: Instant) -> BoxFuture<'static, Finished> {
        // The script's own deadline is the page's: both start at `started`.
        // Stopped at the deadline or killed by a signal, its output is cut;
        // an exit status, even a failing one, ends a complete output.
        Box::pin(async move {
            let Running { script, label } = &mut *self;
            let status = runtime::timeout(script.remaining(), script.child.status(label)).await;
            let cut = match &status {
                Ok(Ok(s)) => s.signal().is_some(),
                Ok(Err(_)) | Err(()) => true,
            };
            Finished { outcome: script.ended(status, label).await, cut }
        })
    }

    fn stop(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.script.stop(&self.label).await })
    }
}
