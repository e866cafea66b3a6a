//! Classic CGI over HTTP (RFC 3875): a plain request to a script runs it
//! once with the request body on stdin, and its output becomes the HTTP
//! response. The body is streamed to the client as the script writes it;
//! only the header block is read up front.

use std::time::Instant;

use futures_lite::io::BufReader;
use tide::{Body, Response, StatusCode};

use super::env::page_env;
use super::groups::Budget;
use super::process::{log_stderr, outcome, spawn_error, terminate};
use super::slots::Slot;
use super::spawn::{self, Child};
use super::CgiBackend;
use crate::backend::{Head, Outcome};
use crate::event::{RequestInfo, Target};
use crate::runtime;

/// Largest header block a script may print.
const MAX_HEAD: usize = 64 * 1024;

/// What the script answered.
pub enum Reply {
    Response(Box<Response>),
    /// `Location: /local/path` without a status: serve that path instead
    /// (RFC 3875 §6.2.2), as a GET.
    LocalRedirect(String),
}

pub fn plain(status: StatusCode, text: &str) -> Reply {
    Reply::Response(Box::new(crate::request::text_response(status, text)))
}

/// The request body, read whole ([`crate::http1::body`]), and its type.
#[derive(Clone, Default)]
pub struct RequestBody {
    pub body: bytes::Bytes,
    /// Content-Type, when the client sent one.
    pub content_type: Option<String>,
}

/// Runs `target` for one HTTP request.
pub async fn run(cgi: &CgiBackend, info: &RequestInfo, target: &Target, body: RequestBody) -> Reply {
    let label = format!("{} {} {}", info.method, target.endpoint(), info.remote_addr);
    let mut env = spawn::EnvBlock::with_capacity(4096, 48);
    page_env(&mut env, &cgi.env, info, target, Some(body.body.len() as u64), body.content_type.as_deref());
    crate::metrics::add(&crate::metrics::get().http_cgi_requests, 1);
    let permit = cgi.permit().await;
    let started = Instant::now();
    let budget = Budget::starting_at(started, cgi.limits.timeout, cgi.limits.grace);
    let mut child = match spawn::spawn(target, &env, budget) {
        Ok(c) => c,
        Err(e) => {
            crate::metrics::add(&crate::metrics::get().spawn_failures, 1);
            log::error!("{label}: {}", spawn_error(target, &e));
            return plain(StatusCode::InternalServerError, "the script could not be started; see the server log");
        }
    };
    if let Some(stdin) = child.stdin.take() {
        // A script that does not read its input is fine.
        spawn::feed(stdin, body.body);
    }
    log_stderr(&mut child, label.clone(), &cgi.limits.stderr);
    let Some(stdout) = child.stdout.take() else {
        return plain(StatusCode::InternalServerError, "stdout was not captured");
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);

    let head = match runtime::timeout(cgi.limits.timeout, read_head(&mut reader)).await {
        Ok(Ok(head)) => head,
        Ok(Err(why)) => {
            log::error!("{label}: {why}; answering 500 (if it only speaks WebSocket, connect with a WebSocket client)");
            stop_in_background(child, permit, label, cgi.limits.grace);
            return plain(
                StatusCode::InternalServerError,
                "the script's output was not a valid CGI response; see the server log",
            );
        }
        Err(()) => {
            log::error!("{label}: no response headers within {:?}; answering 504", cgi.limits.timeout);
            stop_in_background(child, permit, label, cgi.limits.grace);
            return plain(StatusCode::GatewayTimeout, "the script did not answer in time");
        }
    };

    // The rest of the run happens in the background while the body streams:
    // wait for the script (it keeps its process slot), stop it at the deadline.
    let remaining = cgi.limits.timeout.saturating_sub(started.elapsed());
    let grace = cgi.limits.grace;
    let reply = respond(head, reader);
    // The status the client got, on the line that says how the script ended.
    let answered = match &reply {
        Reply::Response(r) => u16::from(r.status()).to_string(),
        Reply::LocalRedirect(to) => format!("local redirect to {to}"),
    };
    let reaper_label = label.clone();
    runtime::spawn(async move {
        let _permit = permit;
        match runtime::timeout(remaining, child.status(&reaper_label)).await {
            Ok(status) => match outcome(status) {
                Outcome::Success => log::info!("{reaper_label}: {answered}, ok in {:.1?}", started.elapsed()),
                Outcome::Failed(why) | Outcome::Unavailable(why) => {
                    log::warn!("{reaper_label}: {answered}, script failed: {why}")
                }
            },
            Err(()) => {
                log::warn!(
                    "{reaper_label}: still running after the timeout; SIGTERM to its process group, SIGKILL in {grace:?}"
                );
                terminate(&mut child, grace, &reaper_label).await;
            }
        }
    });
    reply
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

/// Turns a parsed header block and the rest of the output into the reply
/// (RFC 3875 §6): status, redirects, headers, the body streamed from `body`.
pub fn respond<R>(head: Head, body: R) -> Reply
where
    R: futures_lite::AsyncBufRead + Unpin + Send + Sync + 'static,
{
    let location = head.get("Location").map(str::to_owned);
    if let Some(loc) = &location {
        if loc.starts_with('/') && !loc.starts_with("//") && head.status.is_none() {
            return Reply::LocalRedirect(loc.clone());
        }
    }
    let status = head.status.unwrap_or(if location.is_some() { 302 } else { 200 });
    let mut res = Response::new(StatusCode::try_from(status).unwrap_or(StatusCode::InternalServerError));
    let mut length = None;
    for (name, value) in &head.headers {
        if !crate::backend::sendable_header_value(value) {
            log::warn!("dropped the response header {name}: its value is not printable ASCII");
            continue;
        }
        match name.to_ascii_lowercase().as_str() {
            // Framing is ours to decide.
            "connection" | "transfer-encoding" | "keep-alive" | "upgrade" => {}
            "content-length" => length = value.trim().parse::<u64>().ok(),
            _ => res.append_header(name.as_str(), value.as_str()),
        }
    }
    let has_type = head.get("Content-Type").is_some();
    res.set_body(Body::from_reader(body, length.map(|l| l as usize)));
    if !has_type {
        // Body::from_reader labels the body application/octet-stream;
        // a script that named no type gets none.
        res.remove_header("Content-Type");
    }
    Reply::Response(Box::new(res))
}

/// Reads the CGI header block up to its blank line (public for the fuzz tests).
pub async fn read_head<R: futures_lite::AsyncBufRead + Unpin>(r: &mut R) -> Result<Head, String> {
    let mut head = Head::default();
    let mut line = Vec::new();
    let mut total = 0;
    loop {
        line.clear();
        let (n, _) = super::process::read_line_capped(r, &mut line, MAX_HEAD + 1)
            .await
            .map_err(|e| format!("reading its output failed: {e}"))?;
        if n == 0 {
            return Err(if total == 0 {
                "the script printed nothing (a CGI script must print headers, a blank line, then the body)".into()
            } else {
                "the script's output ended before the blank line that ends the headers".into()
            });
        }
        total += n;
        if total > MAX_HEAD {
            return Err(format!("the header block is over {MAX_HEAD} bytes"));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            if head.headers.is_empty() && head.status.is_none() {
                return Err("the output starts with a blank line, so it has no headers".into());
            }
            return Ok(head);
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(format!(
                "{text:?} is not a header line (Name: value); print headers, a blank line, then the body"
            ));
        };
        let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(format!("{name:?} is not a valid header name"));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok());
            match code {
                Some(c) if (100..=599).contains(&c) => head.status = Some(c),
                _ => return Err(format!("invalid Status header {value:?}")),
            }
        } else {
            head.headers.push((name.to_owned(), value.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Head, String> {
        let mut r = futures_lite::io::BufReader::new(s.as_bytes());
        futures_lite::future::block_on(read_head(&mut r))
    }

    #[test]
    fn header_blocks() {
        let h = head("Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nbody").expect("valid");
        assert_eq!(h.status, Some(404));
        assert_eq!(h.get("x-a"), Some("1"));
        assert!(head("").is_err());
        assert!(head("hello world\n\n").is_err());
        assert!(head("Content-Type: text/plain\n").is_err());
        assert!(head("\nbody").is_err());
        assert!(head("Status: abc\n\n").is_err());
        assert!(head("Bad Name: x\n\n").is_err());
    }
}
