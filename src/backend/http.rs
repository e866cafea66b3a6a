//! The HTTP transport: each event is an HTTP POST to a URL (any web server:
//! nginx + fcgiwrap, php-fpm behind nginx, an app server), with the event as
//! the body and the connection's data as `WS-*` headers. The response is read
//! like CGI output: its status and headers are the header block (handed to
//! the gateway parsed), its body is line mode or one message by Content-Type.
//! It serves no pages: a plain request under its prefix gets a static file
//! or 404.
//!
//! Two rules are this transport's own, as they concern HTTP, not CGI: a
//! `5xx` answer is the server saying the application failed (a crashed
//! script behind nginx, a proxy's 502), the HTTP form of a script's
//! non-zero exit, so it fails the event, and since that failure is known
//! before any of the body is read, nothing of the body is applied (what a
//! failed script printed *before* failing stays applied, docs/PROTOCOL.md);
//! and `Date` and `Server` are left out of the header block, as they are the
//! web server's own headers on every answer, not the application's (a CGI
//! script never prints them; the gateway passes on what a script prints).
//!
//! Connections are kept alive and reused through one [`Pool`] per
//! `host:port`, shared by every route to it (the same pool as the FastCGI
//! transport's: `super::pool`). A request is written at most once: an idle
//! connection the server closed is replaced before anything is written; a
//! failure after that fails the event and is not retried. An unreachable
//! server is `Outcome::Unavailable` (502 for an open).
//!
//! `https://` URLs speak TLS to the backend ([`super::tls_client`]: the
//! system's roots or `SSL_CERT_FILE`, plus `--backend-ca`; SNI and the
//! certificate check use the URL's host). A certificate that does not
//! verify is a failed connection like any other: `Unavailable`, one log
//! line that names the flag to fix it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite, BufReader};
use tide::http::{Method, Request, Url};

use super::pool::{Pool, Pools, Stream, TlsTarget};
use crate::config::Address;
use crate::event::{Event, EventKind};
use crate::gateway::routes::{Files, Route};
use crate::gateway::slots::Slots;
use crate::gateway::{BoxFuture, Call, Cut, Head, Limits, Outcome, Transport};
use crate::http1::fields::{is_field_value, lists_token, HopByHop};
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
    /// `X-Forwarded-Proto`: `https` when the public listeners speak TLS.
    pub forwarded_proto: &'static str,
}

impl Http {
    /// A backend for `url`; its connections come from the pool of its
    /// `host:port` in `pools`. `tls`: the client configuration for an
    /// `https://` URL (`None` refuses them).
    pub fn new(
        url: &str,
        (api_url, api_token): (String, String),
        limits: Limits,
        pools: &Pools,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Self, String> {
        let url = Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        let host = url.host_str().ok_or_else(|| format!("{url}: no host"))?;
        let tls = match (url.scheme(), tls) {
            ("http", _) => None,
            ("https", Some(config)) => {
                // An IPv6 literal keeps its brackets in the URL, not in a name.
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(bare.to_owned())
                    .map_err(|e| format!("{url}: {e} (not a name a certificate can carry)"))?;
                Some(TlsTarget { config: config.clone(), name })
            }
            _ => return Err(format!("{url}: only http:// and https:// URLs are supported")),
        };
        let authority = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
        let pool = pools.get_tls(&Address::Tcp(authority), tls);
        let via = format!(" (http {url})");
        Ok(Http { url, api_url, api_token, limits, pool, via, forwarded_proto: "http" })
    }

    /// The request for one event (documented in docs/BACKENDS.md).
    fn request(&self, event: &Event) -> Request {
        let conn = &event.conn;
        let mut req = Request::new(Method::Post, self.url.clone());
        // Header values must be field values (visible ASCII, spaces, tabs:
        // the one rule, `is_field_value`). Anything else (UTF-8 text, other
        // control characters) is percent-encoded, and the header's name is
        // listed in WS-Percent-Encoded so the backend can decode exactly those.
        let mut encoded: Vec<String> = Vec::new();
        let mut h = |req: &mut Request, name: &str, value: &str| {
            if is_field_value(value.as_bytes()) {
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
        h(&mut req, "WS-Query", conn.request.query());
        h(&mut req, "WS-Rooms", &event.rooms.join(" "));
        for (k, v) in &event.meta {
            h(&mut req, &format!("WS-Meta-{k}"), v);
        }
        h(&mut req, "WS-Api-Url", &self.api_url);
        if !self.api_token.is_empty() {
            h(&mut req, "WS-Api-Token", &self.api_token);
        }
        let forwarded = ["cookie", "user-agent", "origin", "accept-language", "sec-websocket-protocol"];
        for (name, value) in conn.request.headers() {
            if forwarded.iter().any(|f| name.eq_ignore_ascii_case(f)) {
                h(&mut req, name, value);
            }
        }
        let mut xff: Vec<&str> =
            conn.request.headers().filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for")).map(|(_, v)| v).collect();
        xff.push(conn.request.remote_addr());
        h(&mut req, "X-Forwarded-For", &xff.join(", "));
        if let Some(host) = conn.request.header_value("host") {
            h(&mut req, "X-Forwarded-Host", host);
        }
        h(&mut req, "X-Forwarded-Proto", self.forwarded_proto);
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
            EventKind::Resume { count, remote_addr } => {
                h(&mut req, "WS-Resume-Count", &count.to_string());
                h(&mut req, "WS-Resume-Remote-Addr", remote_addr);
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
        let (mut res, status, sent_type) = match round_trip(sniffer.clone(), self.request(event)).await {
            Ok((res, status)) => (res, status, sniffer.sent("content-type")),
            Err(e) => {
                return Outcome::Unavailable(format!("{} did not answer ({e}); not retried: it may have run", self.url))
            }
        };
        let keep = keeps_alive(&res);
        if status >= 500 {
            // A server error page is not a message for the client: it is
            // read (within --max-output) only to reuse the connection.
            if keep && drained(&mut res, self.limits.max_output).await {
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

/// The routes of `--backend-url`: one transport per route, their
/// connections pooled per `host:port`. They need no local file and serve no
/// pages.
pub fn routes(setup: &super::Setup<'_>) -> Result<Vec<Route>, String> {
    let pools = Pools::new(super::pool::PoolLimits::http(setup.cfg.max_procs));
    let tls = tls_config(setup.cfg)?;
    let mut routes = Vec::new();
    for (prefix, url) in &setup.cfg.backend_url {
        log::info!("events under {prefix} go to {url}");
        let api = (setup.env.api_url.clone(), setup.env.api_token.clone());
        let mut http =
            Http::new(url, api, setup.limits, &pools, tls.as_ref()).map_err(|e| format!("--backend-url {e}"))?;
        http.forwarded_proto = if setup.env.https { "https" } else { "http" };
        routes.push(Route { prefix: prefix.clone(), transport: Arc::new(http), pages: None, files: Files::None });
    }
    Ok(routes)
}

/// The TLS client configuration, made only when a URL is `https://`
/// (reading the system's roots is not free); `--backend-ca` without one
/// is refused, as it would do nothing.
fn tls_config(cfg: &crate::config::Config) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    let any_https = cfg.backend_url.iter().any(|(_, u)| u.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://")));
    match (any_https, cfg.outbound.backend_ca.as_deref()) {
        (true, ca) => super::tls_client::client_config(ca).map(Some),
        (false, Some(ca)) => Err(format!(
            "--backend-ca {}: no --backend-url is https://; remove --backend-ca or use an https:// URL",
            ca.display()
        )),
        (false, None) => Ok(None),
    }
}

/// `true` unless the server asked to close the connection: `close` among
/// the tokens of any `Connection` header (a comma list, RFC 9110 §7.6.1).
fn keeps_alive(res: &tide::http::Response) -> bool {
    !res.header("Connection").is_some_and(|v| lists_token(v.iter().map(|v| v.as_str()), "close"))
}

/// Reads and drops the body to its end, at most `max` bytes: `true` when
/// it ended within them (the connection can be reused), `false` when it is
/// longer or broke off (the connection is dropped instead).
async fn drained(res: &mut tide::http::Response, max: usize) -> bool {
    use futures_lite::io::AsyncReadExt;
    let mut sink = Vec::new();
    let body = res.take_body();
    match body.take(max as u64 + 1).read_to_end(&mut sink).await {
        Ok(n) => n <= max,
        Err(_) => false,
    }
}

/// Longest status line read from a backend (async-h1 caps the whole head at 8 KiB).
const MAX_STATUS_LINE: usize = 8 * 1024;

/// Sends `req` on `stream` and reads the answer's head; returns it with
/// its real status. async-h1 knows only the statuses the HTTP library's
/// enum names, so the status line is read here first: a valid code it does
/// not know (299, 499 …) reaches it as its class's first code
/// ([`known_status_line`]) and the real one is returned beside it.
async fn round_trip(mut stream: HeadSniffer, req: Request) -> tide::http::Result<(tide::http::Response, u16)> {
    futures_lite::io::copy(&mut async_h1::client::Encoder::new(req), &mut stream).await?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    crate::gateway::lines::read_line_capped(&mut reader, &mut line, MAX_STATUS_LINE).await?;
    let raw = known_status_line(&mut line);
    let head = futures_lite::io::AsyncReadExt::chain(futures_lite::io::Cursor::new(line), reader);
    let res = async_h1::client::decode(head).await?;
    let status = raw.unwrap_or_else(|| res.status().into());
    Ok((res, status))
}

/// For `HTTP/1.x NNN …` with a code in 100..=599 the HTTP library has no
/// name for, puts its class's first code (`299` → `200`) in the line and
/// returns the real one; leaves any other line alone.
fn known_status_line(line: &mut [u8]) -> Option<u16> {
    if !line.starts_with(b"HTTP/1.") || line.get(8) != Some(&b' ') {
        return None;
    }
    let digits = line.get(9..12).filter(|d| d.iter().all(u8::is_ascii_digit))?;
    let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&code) || tide::http::StatusCode::try_from(code).is_ok() {
        return None;
    }
    line[10..12].copy_from_slice(b"00");
    Some(code)
}

/// The response's status and headers as the event's header block, without
/// the headers that describe the HTTP exchange rather than the script's
/// answer: the hop-by-hop ones (one rule, [`HopByHop`]) and the
/// server's `Date` and `Server`.
fn head_of(res: &tide::http::Response, status: u16, sent_type: bool) -> Head {
    // No body, no message: a server's default Content-Type must
    // not turn "no output" into an empty message.
    let empty = res.len() == Some(0);
    // The HTTP library labels a typeless body application/octet-stream;
    // a server that sent no type gets line mode, like a CGI script.
    let drop_type = empty || !sent_type;
    let mut head = Head { status: Some(status), headers: Vec::new() };
    let hop_by_hop = HopByHop::new(res.header("Connection").into_iter().flat_map(|v| v.iter().map(|v| v.as_str())));
    for (name, values) in res.iter() {
        let name = name.as_str();
        if hop_by_hop.contains(name) || name == "date" || name == "server" || (drop_type && name == "content-type") {
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

    /// `true` when the response head had a header `name`, as the HTTP
    /// library's parser (`httparse`, which `async_h1` uses) reads the head.
    fn sent(&self, name: &str) -> bool {
        let head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut res = httparse::Response::new(&mut headers);
        match res.parse(&head) {
            Ok(_) => res.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name)),
            Err(_) => false,
        }
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader as StdBufReader, Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;
    use crate::backend::pool::PoolLimits;
    use crate::event::{ConnInfo, Target};
    use crate::gateway::Output;
    use crate::id::ConnId;

    /// A one-request HTTP server answering `response`; returns its URL.
    /// The request it got (head and body) comes back through the handle.
    fn server(response: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/ws", l.local_addr().expect("addr"));
        let handle = std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            let mut r = StdBufReader::new(s.try_clone().expect("clone"));
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).expect("read");
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().expect("length");
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            r.read_exact(&mut body).expect("body");
            (&s).write_all(response.as_bytes()).expect("write");
            head + &String::from_utf8_lossy(&body)
        });
        (url, handle)
    }

    fn event(kind: EventKind) -> Event {
        let target =
            Target { filename: "".into(), script_name: "/ws".into(), path_info: "/x".into(), interpreter: None };
        let conn = Arc::new(ConnInfo { id: ConnId::parse("me").expect("id"), target, request: Default::default() });
        Event { kind, conn, rooms: vec!["a".into(), "b".into()], meta: vec![] }
    }

    fn run(response: &'static str, kind: EventKind, max_output: usize) -> (Outcome, Vec<Output>, String) {
        let (outcome, items, request, _) = run_pooled(response, kind, max_output);
        (outcome, items, request)
    }

    /// [`run`], and how many connections the pool kept for reuse after it.
    fn run_pooled(response: &'static str, kind: EventKind, max_output: usize) -> (Outcome, Vec<Output>, String, usize) {
        let (url, request) = server(response);
        let limits = Limits { timeout: Duration::from_secs(30), max_output };
        let pools = Pools::new(PoolLimits::http(4));
        let http = Http::new(&url, ("http://api".into(), String::new()), limits, &pools, None).expect("a URL");
        let mut items = Vec::new();
        let outcome = runtime::block_on(crate::gateway::run(&http, &event(kind), &mut |o| items.push(o)));
        (outcome, items, request.join().expect("server"), http.pool.idle())
    }

    #[test]
    fn a_connection_is_reused_only_when_no_connection_token_is_close() {
        let ok = |connection: &str| -> &'static str {
            let r = format!("HTTP/1.1 200 OK\r\nConnection: {connection}\r\nContent-Length: 3\r\n\r\nhi\n");
            Box::leak(r.into_boxed_str())
        };
        assert_eq!(run_pooled(ok("keep-alive"), message(), 100).3, 1);
        assert_eq!(run_pooled(ok("keep-alive, close"), message(), 100).3, 0, "a list with close");
        assert_eq!(run_pooled(ok("Close"), message(), 100).3, 0);
    }

    #[test]
    fn a_server_error_page_is_read_within_the_output_limit_or_the_connection_dropped() {
        let small = "HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops";
        let (outcome, items, _, idle) = run_pooled(small, message(), 10);
        assert!(matches!(&outcome, Outcome::Failed(w) if w.ends_with("answered 500")), "{outcome:?}");
        assert!(items.is_empty(), "{items:?}");
        assert_eq!(idle, 1, "read to its end: the connection is reused");
        let big = "HTTP/1.1 500 Oops\r\nContent-Length: 40\r\n\r\n0123456789012345678901234567890123456789";
        let (outcome, _, _, idle) = run_pooled(big, message(), 10);
        assert!(matches!(&outcome, Outcome::Failed(w) if w.ends_with("answered 500")), "{outcome:?}");
        assert_eq!(idle, 0, "longer than --max-output: dropped, not drained");
    }

    fn message() -> EventKind {
        EventKind::Message { payload: "hi".into(), binary: false }
    }

    use crate::gateway::sent_texts as texts;

    #[test]
    fn status_and_headers_become_the_head_without_the_exchange_headers() {
        let (outcome, items, request) = run(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\
             Server: test\r\nKeep-Alive: timeout=5\r\nContent-Length: 10\r\n\r\nhello\nbye\n",
            message(),
            1000,
        );
        assert_eq!(outcome, Outcome::Success);
        let Output::Head(head) = &items[0] else { panic!("{items:?}") };
        assert_eq!(head.status, Some(200));
        let names: Vec<&str> = head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!((head.get("x-a"), head.get("content-type")), (Some("1"), Some("text/plain")));
        assert_eq!(texts(&items), ["hello", "bye"]);
        assert!(request.starts_with("POST /ws HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("ws-event: message") || request.contains("WS-Event: message"), "{request}");
        assert!(request.to_ascii_lowercase().contains("ws-rooms: a b"), "{request}");
        assert!(request.ends_with("\r\n\r\nhi"), "{request}");
    }

    #[test]
    fn the_body_is_line_mode_or_one_message_by_content_type() {
        let json = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"a\":\n1}\n";
        assert_eq!(texts(&run(json, message(), 1000).1), ["{\"a\":\n1}\n"]);
        // No Content-Type (the HTTP library would say octet-stream): lines.
        let untyped = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\na\nb\n";
        assert_eq!(texts(&run(untyped, message(), 1000).1), ["a", "b"]);
        // No body: no message, whatever its type.
        let empty = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n";
        let (_, items, _) = run(empty, message(), 1000);
        assert_eq!(items.len(), 1, "only the head: {items:?}");
    }

    #[test]
    fn server_errors_fail_the_event_and_rejections_keep_their_body() {
        let error = "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\noops";
        let (outcome, items, _) = run(error, message(), 1000);
        assert!(matches!(&outcome, Outcome::Failed(w) if w.ends_with("answered 502")), "{outcome:?}");
        assert!(items.is_empty(), "an error page is not a message: {items:?}");
        let reject = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nno entry\n";
        let (outcome, items, _) = run(reject, EventKind::Open, 1000);
        assert_eq!(outcome, Outcome::Success);
        assert!(matches!(&items[0], Output::Head(h) if h.status == Some(403)));
        assert!(matches!(&items[1], Output::RejectBody(b) if b == b"no entry\n"));
    }

    #[test]
    fn statuses_the_library_does_not_name_reach_the_head() {
        let answer = "HTTP/1.1 499 Client Closed\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nno\n";
        let (outcome, items, _) = run(answer, EventKind::Open, 1000);
        assert_eq!(outcome, Outcome::Success);
        assert!(matches!(&items[0], Output::Head(h) if h.status == Some(499)), "{items:?}");
        let answer = "HTTP/1.1 299 Fine\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 3\r\n\r\nok\n";
        let (outcome, items, _) = run(answer, message(), 1000);
        assert_eq!(outcome, Outcome::Success);
        assert!(matches!(&items[0], Output::Head(h) if h.status == Some(299) && h.headers.is_empty()), "{items:?}");
        assert_eq!(texts(&items), ["ok"]);
    }

    #[test]
    fn status_lines_with_unnamed_codes_are_made_readable() {
        let mut line = b"HTTP/1.1 499 Client Closed\r\n".to_vec();
        assert_eq!(known_status_line(&mut line), Some(499));
        assert_eq!(line, b"HTTP/1.1 400 Client Closed\r\n");
        for same in [&b"HTTP/1.1 404 Not Found\r\n"[..], b"HTTP/1.1 600 x\r\n", b"HTTP/1.1 4x9\r\n", b"SIP/2.0 499\r\n"]
        {
            let mut line = same.to_vec();
            assert_eq!(known_status_line(&mut line), None);
            assert_eq!(line, same);
        }
    }

    #[test]
    fn a_body_over_the_output_limit_fails_the_event() {
        let big = "HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n0123456789\n0123456789\n01234567\n";
        let (outcome, items, _) = run(big, message(), 25);
        assert_eq!(outcome, Outcome::Failed("output limit".into()));
        assert_eq!(texts(&items), ["0123456789", "0123456789"]);
    }

    #[test]
    fn an_unreachable_server_is_unavailable() {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let limits = Limits { timeout: Duration::from_secs(30), max_output: 100 };
        let pools = Pools::new(PoolLimits::http(4));
        let url = format!("http://127.0.0.1:{port}/");
        let http = Http::new(&url, (String::new(), String::new()), limits, &pools, None).expect("a URL");
        let outcome = runtime::block_on(crate::gateway::run(&http, &event(message()), &mut |_| {}));
        assert!(
            matches!(&outcome, Outcome::Unavailable(w) if w.starts_with("cannot connect to 127.0.0.1:")),
            "{outcome:?}"
        );
    }
}
