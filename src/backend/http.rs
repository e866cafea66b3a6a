//! The HTTP backend: each event is an HTTP POST to a URL (any web server:
//! nginx + fcgiwrap, php-fpm behind nginx, an app server), with the event as
//! the body and the connection's data as `WS-*` headers. The response is read
//! exactly like CGI output: its status and headers form the header block,
//! its body is line mode or one message by Content-Type.
//!
//! Connections are kept alive and reused through one [`Pool`] per
//! `host:port`, shared by every route to it (the same pool as the FastCGI
//! backend's: src/pool.rs). A request is written at most once: an idle
//! connection the server closed is replaced before anything is written; a
//! failure after that fails the event and is not retried. An unreachable
//! server is `Outcome::Unavailable` (502 for an open).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use futures_lite::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tide::http::{Method, Request, Url};

use crate::backend::{Backend, BoxFuture, Outcome, Output};
use crate::cgi::output::OutputParser;
use crate::cgi::process::Limits;
use crate::directive::Context;
use crate::event::{Event, EventKind};
use crate::pool::{Address, Pool, Pools, Stream};
use crate::runtime;

pub struct HttpBackend {
    url: Url,
    /// `host:port` to connect to.
    authority: String,
    api_url: String,
    api_token: String,
    limits: Limits,
    /// Connections to `authority`, and the bound on requests in flight.
    pool: Arc<Pool>,
}

/// Response headers that describe the HTTP exchange, not the script's answer.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "transfer-encoding", "content-length", "date", "server", "upgrade"];

impl HttpBackend {
    /// A backend for `url`; its connections come from the pool of its
    /// `host:port` in `pools`.
    pub fn new(url: &str, api_url: String, api_token: String, limits: Limits, pools: &Pools) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("{url}: only http:// URLs are supported (put TLS in front, not behind)"));
        }
        let host = url.host_str().ok_or_else(|| format!("{url}: no host"))?;
        let authority = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
        let pool = pools.get(&Address::Tcp(authority.clone()));
        Ok(HttpBackend { url, authority, api_url, api_token, limits, pool })
    }

    /// The request for one event (documented in docs/BACKENDS.md).
    fn request(&self, event: &Event) -> Request {
        let conn = &event.conn;
        let mut req = Request::new(Method::Post, self.url.clone());
        // Header values must be printable ASCII. Anything else (UTF-8 text,
        // control characters) is percent-encoded, and the header's name is
        // listed in WS-Percent-Encoded so the backend can decode exactly those.
        let mut encoded: Vec<String> = Vec::new();
        let mut h = |req: &mut Request, name: &str, value: &str| {
            if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                req.append_header(name, value);
            } else {
                const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
                req.append_header(name, percent_encoding::utf8_percent_encode(value, SET).to_string().as_str());
                encoded.push(name.to_owned());
            }
        };
        h(&mut req, "WS-Event", event.kind.name());
        h(&mut req, "WS-Connection-Id", conn.id.as_str());
        h(&mut req, "WS-Endpoint", conn.target.endpoint());
        h(&mut req, "WS-Path", &format!("{}{}", conn.target.script_name, conn.target.path_info));
        h(&mut req, "WS-Path-Info", &conn.target.path_info);
        h(&mut req, "WS-Query", &conn.request.query);
        h(&mut req, "WS-Rooms", &event.rooms.join(" "));
        for (k, v) in &event.meta {
            h(&mut req, &format!("WS-Meta-{k}"), v);
        }
        h(&mut req, "WS-Api-Url", &self.api_url);
        if !self.api_token.is_empty() {
            h(&mut req, "WS-Api-Token", &self.api_token);
        }
        let forwarded = ["cookie", "user-agent", "origin", "accept-language", "sec-websocket-protocol"];
        for (name, value) in &conn.request.headers {
            if forwarded.iter().any(|f| name.eq_ignore_ascii_case(f)) {
                h(&mut req, name, value);
            }
        }
        let mut xff: Vec<&str> = conn
            .request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
            .map(|(_, v)| v.as_str())
            .collect();
        xff.push(&conn.request.remote_addr);
        h(&mut req, "X-Forwarded-For", &xff.join(", "));
        if let Some((_, host)) = conn.request.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")) {
            h(&mut req, "X-Forwarded-Host", host);
        }
        match &event.kind {
            // No body, no body type (a CGI script gets no CONTENT_TYPE either).
            EventKind::Open => {}
            EventKind::Message { payload, binary } => {
                h(&mut req, "WS-Message-Type", if *binary { "binary" } else { "text" });
                req.set_body(payload.to_vec());
                req.insert_header(
                    "Content-Type",
                    if *binary { "application/octet-stream" } else { "text/plain; charset=utf-8" },
                );
            }
            EventKind::Close { code, reason, cause } => {
                h(&mut req, "WS-Close-Code", &code.to_string());
                h(&mut req, "WS-Close-Reason", reason);
                h(&mut req, "WS-Close-Cause", cause.as_str());
            }
        }
        if !encoded.is_empty() {
            req.append_header("WS-Percent-Encoded", encoded.join(", ").as_str());
        }
        req
    }
}

impl Backend for HttpBackend {
    fn run<'a>(&'a self, event: &'a Event, out: &'a mut (dyn FnMut(Output) + Send)) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let conn = &event.conn;
            let label = format!("[{}] {} {} (http {})", conn.id, conn.target.endpoint(), event.kind.name(), self.url);
            let ctx = Context::Script { conn: &conn.id, endpoint: conn.target.endpoint() };
            let mut parser = OutputParser::new(ctx, event.kind == EventKind::Open);
            let _slot = self.pool.slot().await;
            let work = self.exchange(event, &label, &mut parser, out);
            let outcome = match runtime::timeout(self.limits.timeout, work).await {
                Ok(o) => o,
                Err(()) => {
                    Outcome::Failed(format!("no complete answer from {} within {:?}", self.url, self.limits.timeout))
                }
            };
            parser.finish(out);
            outcome
        })
    }
}

impl HttpBackend {
    /// One request on a pooled connection, its response fed to `parser` as
    /// CGI output; the connection goes back to the pool only after a clean
    /// exchange the server did not ask to close.
    async fn exchange(
        &self,
        event: &Event,
        label: &str,
        parser: &mut OutputParser<'_>,
        out: &mut (dyn FnMut(Output) + Send),
    ) -> Outcome {
        let mut conn = match self.pool.checkout().await {
            Ok(c) => c,
            Err(e) => return Outcome::Unavailable(format!("cannot connect to {}: {e}", self.authority)),
        };
        let sniffer = HeadSniffer::new(conn.stream().clone());
        let (mut res, sent_type) = match async_h1::connect(sniffer.clone(), self.request(event)).await {
            Ok(res) => (res, sniffer.sent_content_type()),
            Err(e) => {
                return Outcome::Unavailable(format!("{} did not answer ({e}); not retried: it may have run", self.url))
            }
        };
        let status = u16::from(res.status());
        let keep = res.header("Connection").is_none_or(|v| !v.last().as_str().eq_ignore_ascii_case("close"));
        let head = cgi_head(&res, status, sent_type);
        if status >= 500 {
            // A server error page is not a message for the client.
            if keep {
                let mut sink = Vec::new();
                let _ = futures_lite::io::AsyncReadExt::read_to_end(&mut res.take_body(), &mut sink).await;
                conn.checkin();
            }
            return Outcome::Failed(format!("{} answered {status}", self.url));
        }
        for line in head.as_bytes().split_inclusive(|&b| b == b'\n') {
            parser.push(line, out);
        }
        let mut body = BufReader::new(res.take_body());
        if let Err(outcome) = self.read_body(&mut body, label, parser, out).await {
            return outcome;
        }
        if keep {
            conn.checkin();
        }
        Outcome::Success
    }

    /// Feeds the response body to `parser` line by line; fails the event
    /// when it is longer than the output limit or breaks off.
    async fn read_body(
        &self,
        body: &mut (impl AsyncBufRead + Unpin),
        label: &str,
        parser: &mut OutputParser<'_>,
        out: &mut (dyn FnMut(Output) + Send),
    ) -> Result<(), Outcome> {
        let mut line = Vec::new();
        let mut total = 0;
        loop {
            line.clear();
            match body.read_until(b'\n', &mut line).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    total += n;
                    if total > self.limits.max_output {
                        log::warn!(
                            "{label}: more than {} bytes of output; the rest is discarded",
                            self.limits.max_output
                        );
                        return Err(Outcome::Failed("output limit".into()));
                    }
                    parser.push(&line, out);
                }
                Err(e) => return Err(Outcome::Unavailable(format!("{} broke off the response: {e}", self.url))),
            }
        }
    }
}

/// The response as CGI output: its status and headers as a header block
/// (the body follows), without the headers that describe the HTTP exchange.
fn cgi_head(res: &tide::http::Response, status: u16, sent_type: bool) -> String {
    let mut head = format!("Status: {status}\r\n");
    // No body, no message: a server's default Content-Type must
    // not turn "no output" into an empty message.
    let empty = res.len() == Some(0);
    // The HTTP library labels a typeless body application/octet-stream;
    // a server that sent no type gets line mode, like a CGI script.
    let drop_type = empty || !sent_type;
    for (name, values) in res.iter() {
        if HOP_BY_HOP.contains(&name.as_str()) || (drop_type && name.as_str() == "content-type") {
            continue;
        }
        for v in values.iter() {
            head.push_str(&format!("{}: {}\r\n", name.as_str(), v.as_str()));
        }
    }
    head.push_str("\r\n");
    head
}

/// Passes a connection through while keeping the first bytes the server
/// sends (the response head), so we can see which headers it really sent.
#[derive(Clone)]
struct HeadSniffer {
    stream: Stream,
    head: Arc<Mutex<Vec<u8>>>,
}

impl HeadSniffer {
    fn new(stream: Stream) -> Self {
        HeadSniffer { stream, head: Arc::new(Mutex::new(Vec::new())) }
    }

    /// `true` when the response head had a Content-Type header.
    fn sent_content_type(&self) -> bool {
        let head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&head)
            .split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .any(|l| l.split(':').next().is_some_and(|n| n.trim().eq_ignore_ascii_case("content-type")))
    }
}

impl AsyncRead for HeadSniffer {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            let mut head = this.head.lock().unwrap_or_else(|e| e.into_inner());
            if head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                head.extend_from_slice(&buf[..*n]);
            }
        }
        poll
    }
}

impl AsyncWrite for HeadSniffer {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}
