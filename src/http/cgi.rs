//! Classic CGI over HTTP (RFC 3875): a plain request to a script runs it
//! once with the request body on stdin, and its output becomes the HTTP
//! response. The body is streamed to the client as the script writes it;
//! only the header block is read up front, strictly
//! ([`crate::gateway::head::read_head`]).
//!
//! The script starts and stops the one way every script does
//! ([`crate::backend::spawn::process`]); what differs from an event is that
//! the script keeps running in the background while its body streams.

use std::time::Instant;

use futures_lite::io::BufReader;
use tide::StatusCode;

use crate::backend::env::page_env;
use crate::backend::spawn::child::{Child, EnvBlock};
use crate::backend::spawn::groups::Budget;
use crate::backend::spawn::process::{log_stderr, outcome, start, terminate, Started};
use crate::backend::spawn::Spawn;
use crate::event::{RequestInfo, Target};
use crate::gateway::head::read_head;
use crate::gateway::response::{page_reply, plain, Reply, RequestBody};
use crate::gateway::routes::Pages;
use crate::gateway::slots::Slot;
use crate::gateway::{BoxFuture, Outcome};
use crate::runtime;

/// The log target of page lines: the module's old path, which operators'
/// `RUST_LOG` filters (and tests/logs.rs) name.
const LOG: &str = "ws2http::cgi::http";

impl Pages for Spawn {
    fn serve<'a>(&'a self, info: &'a RequestInfo, target: &'a Target, body: RequestBody) -> BoxFuture<'a, Reply> {
        Box::pin(run(self, info, target, body))
    }
}

/// Runs `target` for one HTTP request.
pub async fn run(spawn: &Spawn, info: &RequestInfo, target: &Target, body: RequestBody) -> Reply {
    let label = format!("{} {} {}", info.method, target.endpoint(), info.remote_addr);
    let mut env = EnvBlock::with_capacity(4096, 48);
    page_env(&mut env, &spawn.env, info, target, Some(body.body.len() as u64), body.content_type.as_deref());
    crate::metrics::add(&crate::metrics::get().http_cgi_requests, 1);
    let permit = crate::gateway::Transport::slots(spawn).acquire().await;
    let started = Instant::now();
    let (timeout, grace) = (spawn.limits.timeout, spawn.grace);
    let budget = Budget::starting_at(started, timeout, grace);
    let Started { child, stdout, stderr } = match start(target, &env, body.body, budget) {
        Ok(s) => s,
        Err(why) => {
            log::error!(target: LOG, "{label}: {why}");
            return plain(StatusCode::InternalServerError, "the script could not be started; see the server log");
        }
    };
    log_stderr(stderr, label.clone(), &spawn.stderr);
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);

    let head = match runtime::timeout(timeout, read_head(&mut reader)).await {
        Ok(Ok(head)) => head,
        Ok(Err(why)) => {
            log::error!(
                target: LOG,
                "{label}: {why}; answering 500 (if it only speaks WebSocket, connect with a WebSocket client)"
            );
            stop_in_background(child, permit, label, grace);
            return plain(
                StatusCode::InternalServerError,
                "the script's output was not a valid CGI response; see the server log",
            );
        }
        Err(()) => {
            log::error!(target: LOG, "{label}: no response headers within {timeout:?}; answering 504");
            stop_in_background(child, permit, label, grace);
            return plain(StatusCode::GatewayTimeout, "the script did not answer in time");
        }
    };
    let reply = page_reply(head, reader);
    // The status the client got, on the line that says how the script ended.
    let answered = match &reply {
        Reply::Response(r) => crate::http1::response::status_of(r.as_ref().as_ref()).to_string(),
        Reply::LocalRedirect(to) => format!("local redirect to {to}"),
    };
    reap_in_background(child, permit, label, answered, started, timeout, grace);
    reply
}

/// The rest of the run happens in the background while the body streams:
/// wait for the script (it keeps its process slot), stop it at the deadline.
fn reap_in_background(
    mut child: Child,
    permit: Slot,
    label: String,
    answered: String,
    started: Instant,
    timeout: std::time::Duration,
    grace: std::time::Duration,
) {
    let remaining = timeout.saturating_sub(started.elapsed());
    runtime::spawn(async move {
        let _permit = permit;
        match runtime::timeout(remaining, child.status(&label)).await {
            Ok(status) => match outcome(status) {
                Outcome::Success => log::info!(target: LOG, "{label}: {answered}, ok in {:.1?}", started.elapsed()),
                Outcome::Failed(why) | Outcome::Unavailable(why) => {
                    log::warn!(target: LOG, "{label}: {answered}, script failed: {why}")
                }
            },
            Err(()) => {
                log::warn!(
                    target: LOG,
                    "{label}: still running after the timeout; SIGTERM to its process group, SIGKILL in {grace:?}"
                );
                terminate(&mut child, grace, &label).await;
            }
        }
    });
}

/// Answers at once while the script's process group is stopped (SIGTERM,
/// SIGKILL after `grace`) in the background; the script keeps its process
/// slot until it is reaped.
fn stop_in_background(mut child: Child, permit: Slot, label: String, grace: std::time::Duration) {
    runtime::spawn(async move {
        let _permit = permit;
        terminate(&mut child, grace, &label).await;
    });
}
