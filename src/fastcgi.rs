//! The FastCGI backend: each event becomes one FastCGI request (the
//! responder role) to a server such as php-fpm, with the same parameters a
//! CGI script gets as its environment and the payload as FCGI_STDIN. The
//! FCGI_STDOUT stream goes through the same output parser as a script's
//! stdout, so a script works unchanged whichever way it is reached.
//!
//! Connections are kept open (FCGI_KEEP_CONN) and reused; the number of
//! requests in flight is bounded. A connection that broke (php-fpm
//! restarted) is replaced, and the event is retried once on a fresh one if
//! nothing had been received yet.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use fastcgi_client::conn::KeepAlive;
use fastcgi_client::response::Content;
use fastcgi_client::{Client, Params, Request, StreamExt};
use futures_lite::io::{AsyncRead, AsyncWrite};

use crate::backend::{Backend, BoxFuture, Outcome, Output};
use crate::cgi::env::{event_env, page_env, EnvSettings};
use crate::cgi::http::{plain, read_head, respond, Reply, RequestBody};
use crate::cgi::output::OutputParser;
use crate::cgi::process::Limits;
use crate::cgi::slots::Slots;
use crate::directive::Context;
use crate::event::{Event, EventKind, RequestInfo, Target};
use crate::runtime;

/// Where the FastCGI server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl Address {
    /// `host:port` or `unix:/path`.
    pub fn parse(s: &str) -> Result<Address, String> {
        match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(Address::Unix(p.into())),
            Some(_) => Err(format!("{s:?}: expected unix:/path/to/socket")),
            None if s.contains(':') => Ok(Address::Tcp(s.to_owned())),
            None => Err(format!("{s:?}: expected HOST:PORT or unix:/path")),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A TCP or Unix socket, as one stream type.
pub enum Stream {
    Tcp(async_std::net::TcpStream),
    Unix(async_std::os::unix::net::UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_close(cx),
            Stream::Unix(s) => Pin::new(s).poll_close(cx),
        }
    }
}

type Conn = Client<Stream, KeepAlive>;

pub struct FastCgiBackend {
    address: Address,
    env: EnvSettings,
    limits: Limits,
    /// Idle kept-alive connections.
    pool: Mutex<Vec<Conn>>,
    /// Bounds requests in flight (and so open connections).
    in_flight: Arc<Slots>,
}

/// Why a request failed.
enum Failure {
    /// The server could not be reached or broke off.
    Down(String),
    /// More output than `--max-output`: the script's fault.
    TooMuch,
}

/// How one attempt ended.
enum Attempt {
    Done,
    /// Failed before anything was received: worth one retry on a fresh connection.
    Early(String),
    Broken(String),
    /// More output than `--max-output`: the script's fault, not the server's.
    TooMuch,
}

impl FastCgiBackend {
    pub fn new(address: Address, env: EnvSettings, limits: Limits, max_in_flight: usize) -> Self {
        FastCgiBackend { address, env, limits, pool: Mutex::new(Vec::new()), in_flight: Slots::new(max_in_flight) }
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        let stream = match &self.address {
            Address::Tcp(a) => {
                let s = async_std::net::TcpStream::connect(a.as_str()).await?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Address::Unix(p) => Stream::Unix(async_std::os::unix::net::UnixStream::connect(p).await?),
        };
        Ok(Client::new_keep_alive(stream))
    }

    fn take_pooled(&self) -> Option<Conn> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give_back(&self, c: Conn) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    /// One request, on a pooled connection or a new one. A pooled connection
    /// may have died with the old server (php-fpm restarted): when it fails
    /// before answering anything, the request is retried once on a new one.
    async fn request(
        &self,
        params: &Params<'_>,
        stdin: &[u8],
        label: &str,
        on_line: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(), Failure> {
        let mut fresh_tried = false;
        loop {
            let (mut conn, fresh) = match self.take_pooled() {
                Some(c) => (c, false),
                None => match self.connect().await {
                    Ok(c) => (c, true),
                    Err(e) => return Err(Failure::Down(format!("cannot connect to {}: {e}", self.address))),
                },
            };
            fresh_tried |= fresh;
            match self.attempt(&mut conn, params, stdin, label, on_line).await {
                Attempt::Done => {
                    self.give_back(conn);
                    return Ok(());
                }
                Attempt::Early(e) if !fresh_tried => {
                    log::debug!("{label}: pooled connection failed ({e}); retrying on a new one");
                    self.pool.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
                Attempt::Early(e) | Attempt::Broken(e) => {
                    return Err(Failure::Down(format!("{} broke off the request: {e}", self.address)))
                }
                Attempt::TooMuch => return Err(Failure::TooMuch),
            }
        }
    }

    /// One request on `conn`; stdout lines go to `on_line`, stderr to the log.
    async fn attempt(
        &self,
        conn: &mut Conn,
        params: &Params<'_>,
        stdin: &[u8],
        label: &str,
        on_line: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Attempt {
        let request = Request::new(params.clone(), stdin);
        let mut stream = match conn.execute_stream(request).await {
            Ok(s) => s,
            Err(e) => return Attempt::Early(e.to_string()),
        };
        let mut got_any = false;
        let mut partial: Vec<u8> = Vec::new();
        let mut total = 0usize;
        while let Some(item) = stream.next().await {
            match item {
                Ok(Content::Stdout(bytes)) => {
                    got_any = true;
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
                Ok(Content::Stderr(bytes)) => {
                    got_any = true;
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        log::warn!("{label}: stderr: {line}");
                    }
                }
                Err(e) if !got_any => return Attempt::Early(e.to_string()),
                Err(e) => return Attempt::Broken(e.to_string()),
            }
        }
        if !partial.is_empty() {
            on_line(&partial);
        }
        Attempt::Done
    }
}

impl FastCgiBackend {
    /// A plain HTTP request (a page) through the FastCGI server. Unlike
    /// spawned CGI, the request and response bodies are buffered: pages are
    /// small, and the FastCGI client returns the whole response.
    pub async fn serve_http(&self, info: &RequestInfo, target: &Target, body: RequestBody) -> Reply {
        let label = format!("{} {} {} (fastcgi {})", info.method, target.endpoint(), info.remote_addr, self.address);
        let mut input = Vec::new();
        let mut reader = body.body;
        if let Err(e) = futures_lite::io::AsyncReadExt::read_to_end(&mut reader, &mut input).await {
            return plain(tide::StatusCode::BadRequest, &format!("cannot read the request body: {e}"));
        }
        let mut env = Vec::new();
        page_env(&mut env, &self.env, info, target, Some(input.len() as u64), body.content_type.as_deref());
        let mut params = Params::default();
        for (k, v) in env {
            params.insert(k.into(), v.into());
        }
        let _slot = self.in_flight.acquire().await;
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
            let _slot = self.in_flight.acquire().await;
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

#[cfg(test)]
mod tests {
    use super::Address;

    #[test]
    fn addresses() {
        assert_eq!(Address::parse("127.0.0.1:9000"), Ok(Address::Tcp("127.0.0.1:9000".into())));
        assert_eq!(Address::parse("unix:/run/php/fpm.sock"), Ok(Address::Unix("/run/php/fpm.sock".into())));
        assert!(Address::parse("unix:").is_err());
        assert!(Address::parse("nowhere").is_err());
    }
}
