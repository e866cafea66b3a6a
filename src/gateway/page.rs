//! Classic CGI pages (a plain HTTP request runs a script, RFC 3875), the
//! same way for every transport that serves them: [`serve`] owns the log
//! label (with [`Transport::via`]), the `--max-procs` slot, the deadline
//! (`--timeout`, from one starting point: when the slot is taken), the
//! strict header block ([`read_head`], at most [`super::head::MAX_HEAD`]),
//! the reply and the one log line per request. A transport only starts the
//! run and hands back its raw output as a byte stream ([`PageTransport`]).
//!
//! The body is streamed to the client as the script writes it, whatever the
//! transport, and is not counted against `--max-output`: that limit bounds
//! what ws2http holds for an event (a whole-body message is held until it
//! ends), while a streamed body holds one buffer. A page body is bounded by
//! `--timeout` instead: at the deadline the run is stopped and the response
//! ends there, cut (docs/PROTOCOL.md, "Classic CGI").

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use futures_lite::io::{AsyncBufRead, AsyncRead};
use futures_lite::Stream;
use tide::StatusCode;

use super::head::{read_head, HeadErrorKind};
use super::response::{page_reply, plain, Reply, RequestBody};
use super::routes::Pages;
use super::{BoxFuture, Outcome, Transport};
use crate::event::{RequestInfo, Target};
use crate::runtime;

/// The log target of page lines: the module's old path, which operators'
/// `RUST_LOG` filters (and tests/logs.rs) name.
pub const LOG: &str = "ws2http::cgi::http";

/// One page request, as a transport gets it.
pub struct Page<'a> {
    pub info: &'a RequestInfo,
    pub target: &'a Target,
    pub body: RequestBody,
    /// How the log names this request.
    pub label: &'a str,
    /// When the deadline started (the slot was taken).
    pub started: Instant,
}

/// A page run that started: its raw output, and how it ends.
pub struct PageRun {
    /// The CGI output: header block, blank line, body.
    pub stdout: Box<dyn AsyncBufRead + Send + Sync + Unpin>,
    pub end: Box<dyn PageEnd>,
}

/// How a page run ended.
pub struct Finished {
    /// For the log.
    pub outcome: Outcome,
    /// The run was stopped before its output ended (the deadline) or broke
    /// off: the body must end with an error, not as if it were complete.
    pub cut: bool,
}

/// How a running page ends; the gateway calls one of the two, once.
pub trait PageEnd: Send {
    /// Waits until the run ends by itself, at most until `deadline`, when it
    /// stops it; says how it ended.
    fn finish(self: Box<Self>, deadline: Instant) -> BoxFuture<'static, Finished>;
    /// Stops the run at once (no valid header block, or none in time).
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Why a page run could not start.
#[derive(Debug)]
pub enum StartError {
    /// The script could not be started: `500`.
    Failed(String),
    /// The backend server could not be reached: `502`.
    Unavailable(String),
}

/// A transport that serves pages: it starts a run and moves bytes.
pub trait PageTransport: Transport {
    fn start_page<'a>(&'a self, page: Page<'a>) -> BoxFuture<'a, Result<PageRun, StartError>>;
}

impl<T: PageTransport> Pages for T {
    fn serve<'a>(&'a self, info: &'a RequestInfo, target: &'a Target, body: RequestBody) -> BoxFuture<'a, Reply> {
        Box::pin(serve(self, info, target, body))
    }
}

/// Runs one page request through `transport` (see the module docs).
pub async fn serve(transport: &dyn PageTransport, info: &RequestInfo, target: &Target, body: RequestBody) -> Reply {
    let label = format!("{} {} {}{}", info.method(), target.endpoint(), info.remote_addr(), transport.via());
    crate::metrics::add(&crate::metrics::get().http_cgi_requests, 1);
    let slot = transport.slots().acquire().await;
    let started = Instant::now();
    let timeout = transport.limits().timeout;
    let deadline = started + timeout;
    let page = Page { info, target, body, label: &label, started };
    let PageRun { mut stdout, end } = match runtime::timeout(timeout, transport.start_page(page)).await {
        Ok(Ok(run)) => run,
        Ok(Err(StartError::Failed(why))) => {
            return refuse(&label, &why, StatusCode::InternalServerError, "the script could not be started")
        }
        Ok(Err(StartError::Unavailable(why))) => {
            return refuse(&label, &why, StatusCode::BadGateway, "the backend server is unavailable")
        }
        Err(()) => {
            return refuse(&label, "not started", StatusCode::GatewayTimeout, "the script did not answer in time")
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let refused = match runtime::timeout(remaining, read_head(&mut stdout)).await {
        Ok(Ok(head)) if head.is_interim() => {
            let why = format!("the script's status {}, which is not final; answering 502", head.status.unwrap_or(0));
            Err((why, StatusCode::BadGateway, "the script's answer was not final"))
        }
        Ok(Ok(head)) => Ok(head),
        Ok(Err(e)) if e.kind == HeadErrorKind::Read => {
            Err((format!("{e}; answering 502"), StatusCode::BadGateway, "the script's output broke off"))
        }
        Ok(Err(e)) => Err((
            format!("{e}; answering 500 (if it only speaks WebSocket, connect with a WebSocket client)"),
            StatusCode::InternalServerError,
            "the script's output was not a valid CGI response",
        )),
        Err(()) => Err((
            format!("no response headers within {timeout:?}; answering 504"),
            StatusCode::GatewayTimeout,
            "the script did not answer in time",
        )),
    };
    let head = match refused {
        Ok(head) => head,
        Err((why, status, text)) => {
            log::error!(target: LOG, "{label}: {why}");
            runtime::spawn(async move {
                let _slot = slot;
                end.stop().await;
            });
            return plain(status, &format!("{text}; see the server log"));
        }
    };
    let (ended, end_seen) = async_channel::bounded(1);
    let reply = page_reply(head, RunBody { inner: stdout, end: Box::pin(end_seen), cut: None });
    let answered = match &reply {
        Reply::Response(r) => crate::http1::response::status_of(r.as_ref().as_ref()).to_string(),
        Reply::LocalRedirect(to) => format!("local redirect to {to}"),
    };
    // The rest of the run happens while the body streams: the run keeps its
    // slot until it ends, and is stopped at the deadline. The body's end
    // waits for the run's: a run stopped or broken off ends it with an error.
    runtime::spawn(async move {
        let _slot = slot;
        let Finished { outcome, cut } = end.finish(deadline).await;
        let _ = ended.try_send(cut);
        match outcome {
            Outcome::Success => log::info!(target: LOG, "{label}: {answered}, ok in {:.1?}", started.elapsed()),
            Outcome::Failed(why) | Outcome::Unavailable(why) => {
                log::warn!(target: LOG, "{label}: {answered}, script failed: {why}")
            }
        }
    });
    reply
}

/// A page's body: the run's output, whose end is the run's end. At the end
/// of the output it waits for the run to end, and ends with an error when
/// the run was cut (the HTTP writer then ends the response without its last
/// chunk and closes the connection, RFC 9112 §7.1).
struct RunBody {
    inner: Box<dyn AsyncBufRead + Send + Sync + Unpin>,
    /// Whether the run was cut, once it ended.
    end: Pin<Box<async_channel::Receiver<bool>>>,
    cut: Option<bool>,
}

impl AsyncBufRead for RunBody {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.cut.is_none() && ready!(Pin::new(&mut this.inner).poll_fill_buf(cx))?.is_empty() {
            // `None`: the run's end was dropped (the server shuts down).
            this.cut = Some(ready!(this.end.as_mut().poll_next(cx)).unwrap_or(true));
        }
        if this.cut == Some(true) {
            return Poll::Ready(Err(io::Error::other("the script's run was cut (--timeout or a failure)")));
        }
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.inner).consume(amt)
    }
}

impl AsyncRead for RunBody {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

/// The one log line and the answer of a page that could not run.
fn refuse(label: &str, why: &str, status: StatusCode, text: &str) -> Reply {
    log::error!(target: LOG, "{label}: {why}; answering {}", u16::from(status));
    plain(status, &format!("{text}; see the server log"))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_lite::io::{AsyncReadExt, BufReader, Cursor};

    use super::*;
    use crate::gateway::slots::Slots;
    use crate::gateway::{Call, Limits};

    /// A transport that answers `output` and records what the gateway did.
    struct Fake {
        output: &'static [u8],
        limits: Limits,
        slots: Arc<Slots>,
        /// "label", then "finish" or "stop".
        seen: Arc<Mutex<Vec<String>>>,
        /// The run ends cut (stopped at the deadline).
        cut: bool,
    }

    /// What the gateway did, and whether the run ends cut.
    struct End(Arc<Mutex<Vec<String>>>, bool);

    impl PageEnd for End {
        fn finish(self: Box<Self>, _: Instant) -> BoxFuture<'static, Finished> {
            self.0.lock().expect("lock").push("finish".into());
            let cut = self.1;
            let outcome = if cut { Outcome::Failed("timed out".into()) } else { Outcome::Success };
            Box::pin(async move { Finished { outcome, cut } })
        }
        fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
            self.0.lock().expect("lock").push("stop".into());
            Box::pin(async {})
        }
    }

    impl Transport for Fake {
        fn via(&self) -> &str {
            " (fake)"
        }
        fn limits(&self) -> &Limits {
            &self.limits
        }
        fn slots(&self) -> &Arc<Slots> {
            &self.slots
        }
        fn exchange<'a>(&'a self, _: &'a crate::event::Event, _: &'a mut Call<'_>) -> BoxFuture<'a, Outcome> {
            Box::pin(async { Outcome::Success })
        }
    }

    impl PageTransport for Fake {
        fn start_page<'a>(&'a self, page: Page<'a>) -> BoxFuture<'a, Result<PageRun, StartError>> {
            self.seen.lock().expect("lock").push(page.label.to_owned());
            let stdout = Box::new(BufReader::with_capacity(7, Cursor::new(self.output)));
            Box::pin(async move { Ok(PageRun { stdout, end: Box::new(End(self.seen.clone(), self.cut)) }) })
        }
    }

    /// The status, the body and what the gateway did to the run.
    fn serve_fake(output: &'static [u8]) -> (u16, Vec<u8>, Vec<String>) {
        let (status, body, seen) = serve_fake_run(output, false);
        (status, body.map_err(|e| e.0).expect("a complete body"), seen)
    }

    /// How a body ended with an error, and what came before.
    type CutBody = (io::Error, Vec<u8>);

    /// [`serve_fake`] with a run that ends `cut` or not; `Err` is how the
    /// body ended when it ended with an error, and what came before.
    fn serve_fake_run(output: &'static [u8], cut: bool) -> (u16, Result<Vec<u8>, CutBody>, Vec<String>) {
        let limits = Limits { timeout: Duration::from_secs(30), max_output: 10 };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let t = Fake { output, limits, slots: Slots::new(1), seen: seen.clone(), cut };
        let info = RequestInfo::new(
            crate::event::RequestFields { method: "GET", remote_addr: "1.2.3.4", ..Default::default() },
            [],
        );
        let target =
            Target { filename: "/p.sh".into(), script_name: "/p.sh".into(), path_info: "".into(), interpreter: None };
        runtime::block_on(async {
            let Reply::Response(mut res) = serve(&t, &info, &target, RequestBody::default()).await else {
                panic!("a local redirect")
            };
            let mut body = Vec::new();
            let body = match res.take_body().read_to_end(&mut body).await {
                Ok(_) => Ok(body),
                Err(e) => Err((e, body)),
            };
            // The run ends in the background, with the slot.
            let _slot = t.slots.acquire().await;
            let seen = seen.lock().expect("lock").clone();
            (u16::from(res.status()), body, seen)
        })
    }

    #[test]
    fn a_page_streams_past_max_output_and_its_run_ends_in_the_background() {
        let (status, body, seen) = serve_fake(b"Status: 201\r\nContent-Type: text/plain\r\n\r\n0123456789abcdefghij");
        assert_eq!((status, &body[..]), (201, &b"0123456789abcdefghij"[..]), "20 bytes with --max-output 10");
        assert_eq!(seen, ["GET /p.sh 1.2.3.4 (fake)", "finish"], "labelled with via");
    }

    #[test]
    fn a_cut_run_ends_its_body_with_an_error_after_all_its_output() {
        let output = b"Content-Type: text/plain\r\n\r\nline 1\nline 2\n";
        let (status, body, seen) = serve_fake_run(output, true);
        assert_eq!(status, 200);
        let e = body.expect_err("a cut body must not end as if complete (the writer would send the last chunk)");
        assert!(e.0.to_string().contains("cut"), "{}", e.0);
        assert_eq!(seen.last().map(String::as_str), Some("finish"));
        assert_eq!(e.1, b"line 1\nline 2\n", "all the run's output comes before the error");
    }

    #[test]
    fn refused_heads_answer_at_once_and_stop_the_run() {
        for (output, status) in [
            (&b"Status: 100\n\nbody"[..], 502),
            (b"Status: 199\n\n", 502),
            (b"not a header\n\n", 500),
            (b"Content-Length: 3\nContent-Length: 5\n\nabcde", 500),
            (b"Content-Length: abc\n\nabc", 500),
            (b"Status: 200\nStatus: 404\n\n", 500),
            (b"Content-Type: a/b\nContent-Type: c/d\n\n", 500),
        ] {
            let (got, body, seen) = serve_fake(output);
            assert_eq!(got, status, "{output:?}: {}", String::from_utf8_lossy(&body));
            assert_eq!(seen.last().map(String::as_str), Some("stop"), "{output:?}");
        }
    }
}
