//! The FastCGI backend: each event becomes one FastCGI request (the
//! responder role) to a server such as php-fpm, with the same parameters a
//! CGI script gets as its environment and the payload as FCGI_STDIN. The
//! FCGI_STDOUT stream goes through the same output parser as a script's
//! stdout, so a script works unchanged whichever way it is reached.
//!
//! Connections come from one [`Pool`] per server address, shared by every
//! route to it, and are not kept between requests: a kept-alive idle
//! connection pins a php-fpm worker, and nothing tells ws2http how many the
//! server can spare (src/pool.rs; docs/BACKENDS.md has the measurement). A
//! request is written at most once: a failure after that fails the event
//! (the server may have run it) and is not retried.
//!
//! The answer is read here rather than by the client library, whose reader
//! ends a response cut by EOF as if it were complete.

use std::sync::Arc;

use fastcgi_client::conn::KeepAlive;
use fastcgi_client::{Client, Params, Request};

use crate::backend::{Backend, BoxFuture, Outcome, Output};
use crate::cgi::env::{event_env, page_env, EnvSettings};
use crate::cgi::http::{plain, read_head, respond, Reply, RequestBody};
use crate::cgi::output::OutputParser;
use crate::cgi::process::Limits;
use crate::directive::Context;
use crate::event::{Event, EventKind, RequestInfo, Target};
use crate::pool::{Pool, Stream};
use crate::runtime;

pub use crate::pool::Address;

pub struct FastCgiBackend {
    address: Address,
    env: EnvSettings,
    limits: Limits,
    /// Connections to `address`, and the bound on requests in flight.
    pool: Arc<Pool>,
}

/// Why a request failed.
enum Failure {
    /// The server could not be reached or broke off.
    Down(String),
    /// More output than `--max-output`: the script's fault.
    TooMuch,
}

/// How one exchange on a connection ended.
enum Attempt {
    Done,
    /// Failed after the request was (perhaps partly) written.
    Broken(String),
    /// More output than `--max-output`: the script's fault, not the server's.
    TooMuch,
}

impl FastCgiBackend {
    /// A backend for the server at the pool's address; every route to the
    /// same address shares one backend (one pool).
    pub fn new(pool: Arc<Pool>, env: EnvSettings, limits: Limits) -> Self {
        FastCgiBackend { address: pool.address().clone(), env, limits, pool }
    }

    /// The pool this backend's requests go through.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// One request, on an idle pooled connection or a new one; sent at most
    /// once (see the module docs).
    async fn request(
        &self,
        params: &Params<'_>,
        stdin: &[u8],
        label: &str,
        on_line: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), Failure> {
        let mut conn = match self.pool.checkout().await {
            Ok(c) => c,
            Err(e) => return Err(Failure::Down(format!("cannot connect to {}: {e}", self.address))),
        };
        match self.attempt(conn.stream(), params, stdin, label, on_line).await {
            Attempt::Done => {
                conn.checkin();
                Ok(())
            }
            Attempt::Broken(e) => Err(Failure::Down(format!(
                "{} broke off the request ({e}); not retried: it may have run",
                self.address
            ))),
            Attempt::TooMuch => Err(Failure::TooMuch),
        }
    }

    /// One request on `stream`; stdout lines go to `on_line`, stderr to the log.
    async fn attempt(
        &self,
        stream: &mut Stream,
        params: &Params<'_>,
        stdin: &[u8],
        label: &str,
        on_line: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Attempt {
        // The client library writes the request; the answer is read here,
        // because its reader ends a response cut by EOF as if it were complete.
        // FCGI_KEEP_CONN only when the pool keeps connections: otherwise the
        // server closes it and its worker goes straight back to accept().
        let request = Request::new(params.clone(), stdin);
        let sent = if self.pool.keeps_idle() {
            let mut client: Client<&mut Stream, KeepAlive> = Client::new_keep_alive(&mut *stream);
            client.execute_stream(request).await.map(drop)
        } else {
            Client::new(&mut *stream).execute_once_stream(request).await.map(drop)
        };
        if let Err(e) = sent {
            return Attempt::Broken(e.to_string());
        }
        let mut reader = futures_lite::io::BufReader::new(stream);
        let mut partial: Vec<u8> = Vec::new();
        let mut total = 0usize;
        loop {
            match read_record(&mut reader).await {
                Ok(Record::Stdout(bytes)) => {
                    total += bytes.len();
                    if total > self.limits.max_output {
                        log::warn!(
                            "{label}: more than {} bytes of output; the rest is discarded",
                            self.limits.max_output
                        );
                        return Attempt::TooMuch;
                    }
                    partial.extend_from_slice(&bytes);
                    // Hand over every complete line; keep the rest.
                    let mut start = 0;
                    while let Some(i) = partial[start..].iter().position(|&b| b == b'\n') {
                        on_line(&partial[start..start + i + 1]);
                        start += i + 1;
                    }
                    partial.drain(..start);
                }
                Ok(Record::Stderr(bytes)) => {
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        log::warn!("{label}: stderr: {line}");
                    }
                }
                Ok(Record::End) => break,
                Err(e) => return Attempt::Broken(e.to_string()),
            }
        }
        if !partial.is_empty() {
            on_line(&partial);
        }
        Attempt::Done
    }
}

/// One record of a FastCGI answer.
enum Record {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// FCGI_END_REQUEST: the request completed (protocol status 0).
    End,
}

/// Reads one record. A connection closed before FCGI_END_REQUEST, a
/// rejected request or a record that has no place in an answer is an error.
async fn read_record(r: &mut (impl futures_lite::io::AsyncRead + Unpin)) -> std::io::Result<Record> {
    use futures_lite::io::AsyncReadExt;
    use std::io::{Error, ErrorKind};
    let mut head = [0u8; 8];
    r.read_exact(&mut head).await.map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => Error::new(e.kind(), "connection closed before the end of the answer"),
        _ => e,
    })?;
    let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    let mut body = vec![0u8; len + usize::from(head[6])];
    r.read_exact(&mut body).await?;
    body.truncate(len);
    match head[1] {
        6 => Ok(Record::Stdout(body)),
        7 => Ok(Record::Stderr(body)),
        3 if body.get(4) == Some(&0) => Ok(Record::End),
        3 => Err(Error::other(format!("request rejected (protocol status {:?})", body.get(4)))),
        t => Err(Error::new(ErrorKind::InvalidData, format!("unexpected record type {t} in an answer"))),
    }
}

impl FastCgiBackend {
    /// A plain HTTP request (a page) through the FastCGI server. Unlike
    /// spawned CGI, the request and response bodies are buffered: pages are
    /// small, and the FastCGI client returns the whole response.
    pub async fn serve_http(&self, info: &RequestInfo, target: &Target, body: RequestBody) -> Reply {
        let label = format!("{} {} {} (fastcgi {})", info.method, target.endpoint(), info.remote_addr, self.address);
        let input = body.body;
        let mut env = Vec::new();
        page_env(&mut env, &self.env, info, target, Some(input.len() as u64), body.content_type.as_deref());
        let mut params = Params::default();
        for (k, v) in env {
            params.insert(k.into(), v.into());
        }
        let _slot = self.pool.slot().await;
        let mut stdout = Vec::new();
        let mut on_line = |line: &[u8]| stdout.extend_from_slice(line);
        let work = self.request(&params, &input, &label, &mut on_line);
        match runtime::timeout(self.limits.timeout, work).await {
            Ok(Ok(())) => {}
            Ok(Err(Failure::TooMuch)) => {
                log::error!("{label}: more output than --max-output; answering 500");
                return plain(tide::StatusCode::InternalServerError, "the script's output was too large");
            }
            Ok(Err(Failure::Down(e))) => {
                log::error!("{label}: {e}; answering 502");
                return plain(tide::StatusCode::BadGateway, "the FastCGI server is unavailable; see the server log");
            }
            Err(()) => {
                log::error!("{label}: no answer within {:?}; answering 504", self.limits.timeout);
                return plain(tide::StatusCode::GatewayTimeout, "the FastCGI server did not answer in time");
            }
        }
        let mut rest = futures_lite::io::BufReader::new(futures_lite::io::Cursor::new(stdout));
        match read_head(&mut rest).await {
            Ok(head) => {
                log::info!("{label}: ok");
                respond(head, rest)
            }
            Err(why) => {
                log::error!("{label}: {why}; answering 500");
                plain(
                    tide::StatusCode::InternalServerError,
                    "the script's output was not a valid CGI response; see the server log",
                )
            }
        }
    }
}

impl Backend for FastCgiBackend {
    fn run<'a>(&'a self, event: &'a Event, out: &'a mut (dyn FnMut(Output) + Send)) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let conn_info = &event.conn;
            let label = format!(
                "[{}] {} {} (fastcgi {})",
                conn_info.id,
                conn_info.target.endpoint(),
                event.kind.name(),
                self.address
            );
            let mut params = Params::default();
            for (k, v) in event_env(&self.env, event) {
                params.insert(k.into(), v.into());
            }
            let stdin: &[u8] = match &event.kind {
                EventKind::Message { payload, .. } => payload,
                _ => &[],
            };
            let ctx = Context::Script { conn: &conn_info.id, endpoint: conn_info.target.endpoint() };
            let mut parser = OutputParser::new(ctx, event.kind == EventKind::Open);
            let _slot = self.pool.slot().await;
            let work = async {
                let mut on_line = |line: &[u8]| parser.push(line, out);
                match self.request(&params, stdin, &label, &mut on_line).await {
                    Ok(()) => Outcome::Success,
                    Err(Failure::Down(e)) => Outcome::Unavailable(e),
                    Err(Failure::TooMuch) => Outcome::Failed("more output than --max-output".into()),
                }
            };
            let outcome = match runtime::timeout(self.limits.timeout, work).await {
                Ok(o) => o,
                Err(()) => Outcome::Failed(format!(
                    "no complete answer from {} within {:?}",
                    self.address, self.limits.timeout
                )),
            };
            parser.finish(out);
            outcome
        })
    }
}
