//! The HTTP transport: each event is an HTTP POST to a URL (any web server:
//! nginx + fcgiwrap, php-fpm behind nginx, an app server), with the event as
//! the body and the connection's data as `WS-*` headers. The response is read
//! like CGI output: its status and headers are the header block (handed to
//! the gateway parsed), its body is line mode or one message by Content-Type.
//! It serves no pages: a plain request under its prefix gets a static file
//! or 404.
//!
//! Connections are kept alive and reused through one [`Pool`] per
//! `host:port`, shared by every route to it (the same pool as the FastCGI
//! transport's: `super::pool`). A request is written at most once: an idle
//! connection the server closed is replaced before anything is written; a
//! failure after that fails the event and is not retried. An unreachable
//! server is `Outcome::Unavailable` (502 for an open).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite, BufReader};
use tide::http::{Method, Request, Url};

use super::pool::{Address, Pool, Pools, Stream};
use crate::event::{Event, EventKind};
use crate::gateway::response::is_hop_by_hop;
use crate::gateway::slots::Slots;
use crate::gateway::{BoxFuture, Call, Cut, Head, Limits, Outcome, Transport};
use crate::runtime;

pub struct Http {
    url: Url,
    api_url: String,
    api_token: String,
    limits: Limits,
    /// Connections to the URL's `host:port`, and the bound on requests in flight.
    pool: Arc<Pool>,
    /// ` (http URL)`, for the log.
    via: String,
}

impl Http {
    /// A backend for `url`; its connections come from the pool of its
    /// `host:port` in `pools`.
    pub fn new(url: &str, api_url: String, api_token: String, limits: Limits, pools: &Pools) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("{url}: only http:// URLs are supported (put TLS in front, not behind)"));
        }
        let host = url.host_str().ok_or_else(|| format!("{url}: no host"))?;
        let authority = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
        let pool = pools.get(&Address::Tcp(authority));
        let via = format!(" (http {url})");
        Ok(Http { url, api_url, api_token, limits, pool, via })
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

impl Transport for Http {
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
            let timeout = call.timeout();
            match runtime::timeout(timeout, self.post(event, call)).await {
                Ok(outcome) => outcome,
                Err(()) => Outcome::Failed(format!("no complete answer from {} within {timeout:?}", self.url)),
            }
        })
    }
}

impl Http {
    /// One request on a pooled connection, its response fed to `call`; the
    /// connection goes back to the pool only after a clean exchange the
    /// server did not ask to close.
    async fn post(&self, event: &Event, call: &mut Call<'_>) -> Outcome {
        let mut conn = match self.pool.connect().await {
            Ok(c) => c,
            Err(e) => return Outcome::Unavailable(e),
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
        if status >= 500 {
            // A server error page is not a message for the client.
            if keep {
                let mut sink = Vec::new();
                let _ = futures_lite::io::AsyncReadExt::read_to_end(&mut res.take_body(), &mut sink).await;
                conn.checkin();
            }
            return Outcome::Failed(format!("{} answered {status}", self.url));
        }
        call.head(head_of(&res, status, sent_type));
        match call.pump(&mut BufReader::new(res.take_body())).await {
            Ok(()) => {}
            Err(Cut::TooMuch) => return Outcome::Failed("output limit".into()),
            Err(Cut::Io(e)) => return Outcome::Unavailable(format!("{} broke off the response: {e}", self.url)),
        }
        if keep {
            conn.checkin();
        }
        Outcome::Success
    }
}

/// The response's status and headers as the event's header block, without
/// the headers that describe the HTTP exchange rather than the script's
/// answer: the hop-by-hop ones (one list, [`is_hop_by_hop`]) and the
/// server's `Date` and `Server`.
fn head_of(res: &tide::http::Response, status: u16, sent_type: bool) -> Head {
    // No body, no message: a server's default Content-Type must
    // not turn "no output" into an empty message.
    let empty = res.len() == Some(0);
    // The HTTP library labels a typeless body application/octet-stream;
    // a server that sent no type gets line mode, like a CGI script.
    let drop_type = empty || !sent_type;
    let mut head = Head { status: Some(status), headers: Vec::new() };
    for (name, values) in res.iter() {
        let name = name.as_str();
        if is_hop_by_hop(name) || name == "date" || name == "server" || (drop_type && name == "content-type") {
            continue;
        }
        for v in values.iter() {
            head.headers.push((name.to_owned(), v.as_str().trim().to_owned()));
        }
    }
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
