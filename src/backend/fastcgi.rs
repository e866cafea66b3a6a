//! The FastCGI transport: each event becomes one FastCGI request (the
//! responder role) to a server such as php-fpm, with the same parameters a
//! CGI script gets as its environment and the payload as FCGI_STDIN. The
//! FCGI_STDOUT stream is read like a script's stdout ([`Answer`] turns the
//! records back into a byte stream), so a script works unchanged whichever
//! way it is reached. It serves pages too ([`Pages`]).
//!
//! Connections come from one [`Pool`] per server address, shared by every
//! route to it, and are not kept between requests: a kept-alive idle
//! connection pins a php-fpm worker, and nothing tells ws2http how many the
//! server can spare (`super::pool`; docs/BACKENDS.md has the measurement). A
//! request is written at most once: a failure after that fails the event
//! (the server may have run it) and is not retried.
//!
//! The answer is read here rather than by the client library, whose reader
//! ends a response cut by EOF as if it were complete.

use std::io::{Error, ErrorKind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Instant;

use fastcgi_client::conn::KeepAlive;
use fastcgi_client::{Client, Params, Request};
use futures_lite::io::{AsyncRead, BufReader};

use super::env::{event_env, page_env, EnvSettings};
use super::pool::{Checkout, Pool, Stream};
use crate::event::{Event, EventKind};
use crate::gateway::page::{Finished, Page, PageEnd, PageRun, PageTransport, StartError};
use crate::gateway::routes::{Files, Route};
use crate::gateway::slots::Slots;
use crate::gateway::{BoxFuture, Call, Cut, Limits, Outcome, Transport, OUTPUT_LIMIT};
use crate::runtime;

pub struct FastCgi {
    env: EnvSettings,
    limits: Limits,
    /// Connections to the server, and the bound on requests in flight.
    pool: Arc<Pool>,
    /// ` (fastcgi ADDRESS)`, for the log.
    via: String,
}

impl FastCgi {
    /// A transport to the pool's server; every route to the same address
    /// shares one (one pool).
    pub fn new(pool: Arc<Pool>, env: EnvSettings, limits: Limits) -> Self {
        let via = format!(" (fastcgi {})", pool.address());
        FastCgi { env, limits, pool, via }
    }

    /// The pool this transport's requests go through.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Connects (a new or idle pooled connection) and writes one request;
    /// the answer is read from the connection returned. Sent at most once
    /// (see the module docs). `Err` says why the server is unavailable.
    async fn open(&self, params: &Params<'_>, stdin: &[u8]) -> Result<Checkout<'_>, String> {
        let mut conn = self.pool.connect().await?;
        match self.send(conn.stream(), params, stdin).await {
            Ok(()) => Ok(conn),
            Err(e) => Err(self.broke(&e)),
        }
    }

    /// The log's words for a request that broke off after it was written.
    fn broke(&self, e: &dyn std::fmt::Display) -> String {
        format!("{} broke off the request ({e}); not retried: it may have run", self.pool.address())
    }

    /// One event's request: its FCGI_STDOUT goes to the gateway's `call`.
    async fn request(&self, params: &Params<'_>, stdin: &[u8], call: &mut Call<'_>) -> Outcome {
        let mut conn = match self.open(params, stdin).await {
            Ok(c) => c,
            Err(e) => return Outcome::Unavailable(e),
        };
        let mut answer = BufReader::new(Answer::new(conn.stream(), call.label()));
        match call.pump(&mut answer).await {
            Ok(()) => {}
            Err(Cut::TooMuch) => return Outcome::Failed(OUTPUT_LIMIT.into()),
            Err(Cut::Io(e)) => return Outcome::Unavailable(self.broke(&e)),
        }
        drop(answer);
        conn.checkin();
        Outcome::Success
    }

    /// Writes the request. FCGI_KEEP_CONN only when the pool keeps
    /// connections: otherwise the server closes it and its worker goes
    /// straight back to accept().
    async fn send(&self, stream: &mut Stream, params: &Params<'_>, stdin: &[u8]) -> Result<(), String> {
        let request = Request::new(params.clone(), stdin);
        let sent = if self.pool.keeps_idle() {
            let mut client: Client<&mut Stream, KeepAlive> = Client::new_keep_alive(&mut *stream);
            client.execute_stream(request).await.map(drop)
        } else {
            Client::new(&mut *stream).execute_once_stream(request).await.map(drop)
        };
        sent.map_err(|e| e.to_string())
    }
}

fn params(env: Vec<(String, String)>) -> Params<'static> {
    let mut params = Params::default();
    for (k, v) in env {
        params.insert(k.into(), v.into());
    }
    params
}

impl Transport for FastCgi {
    fn via(&self) -> &str {
        &self.via
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn slots(&self) -> &Arc<Slots> {
        self.pool.slots()
    }

    fn exchange<'a>(&'a self, event: &'a Event, call: &'a mut Call<'_>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let params = params(event_env(&self.env, event));
            let stdin: &[u8] = match &event.kind {
                EventKind::Message { payload, .. } => payload,
                _ => &[],
            };
            let timeout = call.timeout();
            match runtime::timeout(timeout, self.request(&params, stdin, call)).await {
                Ok(outcome) => outcome,
                Err(()) => {
                    Outcome::Failed(format!("no complete answer from {} within {timeout:?}", self.pool.address()))
                }
            }
        })
    }
}

impl PageTransport for FastCgi {
    /// A plain HTTP request (a page) through the FastCGI server: the request
    /// is written, and FCGI_STDOUT streams back to the gateway like a
    /// spawned script's stdout.
    fn start_page<'a>(&'a self, page: Page<'a>) -> BoxFuture<'a, Result<PageRun, StartError>> {
        Box::pin(async move {
            let Page { info, target, body, label, .. } = page;
            let mut env = Vec::new();
            page_env(&mut env, &self.env, info, target, Some(body.body.len() as u64), body.content_type.as_deref());
            let mut conn = self.open(&params(env), &body.body).await.map_err(StartError::Unavailable)?;
            // The answer is read by the response body, after this returns;
            // the socket stays open through this clone (the pool keeps no
            // FastCGI connection, so it is not checked in).
            let stream = conn.stream().clone();
            drop(conn);
            let (done, ended) = async_channel::bounded(1);
            let answer = Answer::new(stream.clone(), label.to_owned());
            let body = PageBody { answer, done: Some(done), address: self.pool.address().to_string() };
            let stdout = Box::new(BufReader::new(body));
            Ok(PageRun { stdout, end: Box::new(PageEnding { ended, stream }) })
        })
    }
}

/// A page's FCGI_STDOUT as the response body reads it; says how the answer
/// ended when it does.
struct PageBody {
    answer: Answer<'static, Stream>,
    done: Option<async_channel::Sender<Outcome>>,
    address: String,
}

impl AsyncRead for PageBody {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let read = ready!(Pin::new(&mut this.answer).poll_read(cx, buf));
        let ended = match &read {
            Ok(0) => Some(Outcome::Success),
            Ok(_) => None,
            Err(e) => Some(Outcome::Unavailable(format!("{} broke off the answer ({e})", this.address))),
        };
        // Only at the end: dropping the sender before would end the run at
        // once (no --timeout, no --max-procs slot while the body streams).
        if let Some(outcome) = ended {
            if let Some(done) = this.done.take() {
                let _ = done.try_send(outcome);
            }
        }
        Poll::Ready(read)
    }
}

/// How a page through FastCGI ends: when its answer does.
struct PageEnding {
    ended: async_channel::Receiver<Outcome>,
    stream: Stream,
}

impl PageEnd for PageEnding {
    fn finish(self: Box<Self>, deadline: Instant) -> BoxFuture<'static, Finished> {
        Box::pin(async move {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = match runtime::timeout(remaining, self.ended.recv()).await {
                Ok(Ok(outcome)) => outcome,
                // The response body was dropped before the end (a HEAD
                // request, a client that went away): the server was fine.
                Ok(Err(_)) => Outcome::Success,
                Err(()) => {
                    // The body's next read fails: the response ends cut.
                    self.stream.shutdown();
                    Outcome::Failed("no complete answer within --timeout; the response ends here".into())
                }
            };
            let cut = !matches!(outcome, Outcome::Success);
            Finished { outcome, cut }
        })
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.stream.shutdown();
        Box::pin(async {})
    }
}

/// A FastCGI answer as the byte stream of its FCGI_STDOUT records: stderr
/// records go to the log, FCGI_END_REQUEST ends the stream. A connection
/// closed before it, a rejected request or a record that has no place in an
/// answer is an error (not an early end: that would pass a cut answer off
/// as complete).
pub struct Answer<'a, R> {
    inner: R,
    label: std::borrow::Cow<'a, str>,
    part: Part,
    /// The record header, or a whole non-stdout record body, being read.
    block: Vec<u8>,
    filled: usize,
}

#[derive(Clone, Copy)]
enum Part {
    Header,
    /// Stdout content not yet read, and the padding after it.
    Stdout {
        left: usize,
        padding: usize,
    },
    /// A record body (stderr, end) of `len` bytes, then `padding`.
    Body {
        kind: u8,
        len: usize,
        padding: usize,
    },
    Done,
}

impl<'a, R: AsyncRead + Unpin> Answer<'a, R> {
    pub fn new(inner: R, label: impl Into<std::borrow::Cow<'a, str>>) -> Self {
        Answer { inner, label: label.into(), part: Part::Header, block: Vec::new(), filled: 0 }
    }

    /// Reads exactly `want` bytes into `block`, across polls.
    fn poll_block(&mut self, cx: &mut TaskContext<'_>, want: usize) -> Poll<std::io::Result<()>> {
        self.block.resize(want, 0);
        while self.filled < want {
            let n = ready!(Pin::new(&mut self.inner).poll_read(cx, &mut self.block[self.filled..want]))?;
            if n == 0 {
                return Poll::Ready(Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed before the end of the answer",
                )));
            }
            self.filled += n;
        }
        self.filled = 0;
        Poll::Ready(Ok(()))
    }

    /// What a complete non-stdout record means.
    fn record(&mut self, kind: u8, len: usize) -> std::io::Result<Part> {
        let body = &self.block[..len];
        match kind {
            7 => {
                for line in String::from_utf8_lossy(body).lines() {
                    log::warn!("{}: stderr: {line}", self.label);
                }
                Ok(Part::Header)
            }
            3 if body.get(4) == Some(&0) => Ok(Part::Done),
            3 => Err(Error::other(format!("request rejected (protocol status {:?})", body.get(4)))),
            t => Err(Error::new(ErrorKind::InvalidData, format!("unexpected record type {t} in an answer"))),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Answer<'_, R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.part {
                Part::Done => return Poll::Ready(Ok(0)),
                Part::Stdout { left: 0, padding } => this.part = Part::Body { kind: 0, len: 0, padding },
                Part::Stdout { left, padding } => {
                    let max = left.min(buf.len());
                    let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf[..max]))?;
                    if n == 0 {
                        let eof =
                            Error::new(ErrorKind::UnexpectedEof, "connection closed before the end of the answer");
                        return Poll::Ready(Err(eof));
                    }
                    this.part = Part::Stdout { left: left - n, padding };
                    return Poll::Ready(Ok(n));
                }
                Part::Header => {
                    ready!(this.poll_block(cx, 8))?;
                    let h = &this.block;
                    let (kind, len, padding) = (h[1], usize::from(u16::from_be_bytes([h[4], h[5]])), usize::from(h[6]));
                    this.part = match kind {
                        6 => Part::Stdout { left: len, padding },
                        _ => Part::Body { kind, len, padding },
                    };
                }
                Part::Body { kind, len, padding } => {
                    ready!(this.poll_block(cx, len + padding))?;
                    // kind 0: the padding after stdout content.
                    this.part = if kind == 0 { Part::Header } else { this.record(kind, len)? };
                }
            }
        }
    }
}

/// The routes of `--fastcgi`: one transport (one connection pool) per
/// server address, shared by every route to it, as idle connections pin
/// php-fpm workers and `--max-procs` bounds the requests in flight to that
/// server. They serve pages too, and run local `.php` files without an
/// exec bit.
pub fn routes(setup: &super::Setup<'_>) -> Result<Vec<Route>, String> {
    let pools = super::pool::Pools::new(super::pool::PoolLimits::fastcgi(setup.cfg.max_procs));
    let mut backends: Vec<Arc<FastCgi>> = Vec::new();
    let mut routes = Vec::new();
    for (prefix, addr) in &setup.cfg.fastcgi {
        log::info!("requests and events under {prefix} go to FastCGI server {addr}");
        let pool = pools.get(addr);
        let fcgi = match backends.iter().find(|b| Arc::ptr_eq(b.pool(), &pool)) {
            Some(b) => b.clone(),
            None => Arc::new(FastCgi::new(pool, setup.env.clone(), setup.limits)),
        };
        backends.push(fcgi.clone());
        routes.push(Route {
            prefix: prefix.clone(),
            transport: fcgi.clone(),
            pages: Some(fcgi),
            files: Files::RunByServer,
        });
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, body: &[u8], padding: u8) -> Vec<u8> {
        let len = (body.len() as u16).to_be_bytes();
        let mut r = vec![1, kind, 0, 1, len[0], len[1], padding, 0];
        r.extend_from_slice(body);
        r.extend(std::iter::repeat_n(0, usize::from(padding)));
        r
    }

    fn read(wire: &[u8]) -> std::io::Result<Vec<u8>> {
        futures_lite::future::block_on(async {
            // One byte at a time: every record boundary falls mid-read.
            let slow = BufReader::with_capacity(1, wire);
            let mut out = Vec::new();
            futures_lite::io::AsyncReadExt::read_to_end(&mut Answer::new(slow, "t"), &mut out).await?;
            Ok(out)
        })
    }

    #[test]
    fn stdout_records_become_one_stream() {
        let mut wire = record(6, b"Content-Type: text/plain\r\n\r\nhel", 5);
        wire.extend(record(7, b"a warning\n", 0));
        wire.extend(record(6, b"lo\n", 0));
        wire.extend(record(6, b"", 0));
        wire.extend(record(3, &[0, 0, 0, 0, 0, 0, 0, 0], 0));
        wire.extend(b"trailing bytes are never read");
        assert_eq!(read(&wire).expect("a complete answer"), b"Content-Type: text/plain\r\n\r\nhello\n");
    }

    #[test]
    fn a_cut_or_rejected_answer_is_an_error() {
        let cut = record(6, b"hello\n", 0);
        assert_eq!(read(&cut).expect_err("no end record").kind(), ErrorKind::UnexpectedEof);
        let mut rejected = record(6, b"x", 0);
        rejected.extend(record(3, &[0, 0, 0, 0, 1, 0, 0, 0], 0));
        assert!(read(&rejected).expect_err("rejected").to_string().contains("protocol status"));
        assert!(read(&record(9, b"", 0)).is_err(), "not an answer record");
    }
}
