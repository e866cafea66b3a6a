//! One HTTP/1.x connection, request after request, in front of tide.
//!
//! For every request: read and check its head ([`super::head`]); refuse it
//! with a status and a body when it is not acceptable; otherwise hand tide
//! a request carrying the head exactly as sent ([`RawHead`]), write the
//! response ([`super::response`]), finish the body, and go on while both
//! sides keep the connection. A WebSocket handshake answered with `101`
//! hands the socket (and any bytes already read past the head) to the
//! handler that asked for it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::runtime::TcpStream;
use crate::tls::Stream;
use futures_lite::io::{AsyncRead, AsyncWrite};
use tide::http::{self, Body, Method, Request, Url};

use super::head::{Head, Refusal, Version};
use super::input::{self, BodyReader, HeadError, Input, Shared};
use super::response::{self, Reply};
use crate::http1::head::RawHead;
use crate::runtime;

/// How a listener serves its connections.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--max-request-head`: most bytes of one request head.
    pub max_head: usize,
    /// `--http-timeout`: to send a head, or between two reads or writes.
    pub timeout: Duration,
    /// Close after every response (the control API).
    pub one_request: bool,
}

/// Unread body bytes read and dropped to keep a connection (more: close).
const DISCARD_LIMIT: usize = 64 * 1024;

/// Serves `stream` until either side ends the connection or it is upgraded.
pub async fn serve<S: Clone + Send + Sync + 'static>(
    app: tide::Server<S>,
    stream: Stream,
    peer: SocketAddr,
    opts: Arc<Options>,
) {
    let local = stream.local_addr().ok();
    let scheme = if stream.is_tls() { "https" } else { "http" };
    let input: Shared = Arc::new(Mutex::new(Input::new(stream.clone(), opts.max_head, opts.timeout)));
    let mut out = stream;
    loop {
        let mut head =
            match runtime::timeout(opts.timeout, std::future::poll_fn(|cx| input::lock(&input).poll_head(cx))).await {
                Ok(Ok(head)) => head,
                Ok(Err(HeadError::Gone)) => return,
                Ok(Err(HeadError::Refused(r))) => return refuse(&mut out, peer, &r, &opts).await,
                Err(()) if input::lock(&input).is_idle() => return,
                Err(()) => {
                    let r = Refusal::new(
                        408,
                        format!("no complete request head within {:?} (--http-timeout)", opts.timeout),
                    );
                    return refuse(&mut out, peer, &r, &opts).await;
                }
            };
        let upgrade_asked = head.header("upgrade").is_some();
        let (mut req, version, method) = match request(&mut head, &input, peer, (local, scheme)) {
            Ok(r) => r,
            Err(r) => return refuse(&mut out, peer, &r, &opts).await,
        };
        // The hub's direct writes go to the bare socket: plain connections only.
        if let (true, Stream::Plain(socket)) = (upgrade_asked, &out) {
            req.ext_mut().insert(UpgradeSocket(socket.clone()));
        }
        let mut res: http::Response = match app.respond(req).await {
            Ok(r) => r,
            Err(e) => {
                log::error!("{peer}: {} {}: the handler failed: {e}", head.method, head.target);
                http::Response::new(500)
            }
        };
        let upgrade = (res.status() == 101 && res.has_upgrade()).then(|| res.send_upgrade());
        if upgrade.is_none() && (100..200).contains(&response::status_of(&res)) {
            log::error!(
                "{peer}: {} {}: the answer had status {}, which is not final; answering 502",
                head.method,
                head.target,
                response::status_of(&res)
            );
            res = http::Response::new(502);
        }
        let Ok(dropped_continue) = std::future::poll_fn(|cx| input::lock(&input).poll_settle_continue(cx)).await else {
            return;
        };
        let keep_alive = head.keep_alive && !opts.one_request && !dropped_continue;
        let kept = response::write(&mut out, Reply { res, method, version, keep_alive }, opts.timeout).await;
        if let Some(sender) = upgrade {
            if kept.is_ok() {
                sender.send(upgraded(&input)).await;
            }
            return;
        }
        match kept {
            // What is left of the body, read within --http-timeout in all.
            Ok(true)
                if runtime::timeout(opts.timeout, input::discard_body(&input, DISCARD_LIMIT)).await == Ok(true) =>
            {
                continue
            }
            Ok(_) => return response::linger_close(&out).await,
            Err(e) => {
                log::debug!("{peer}: the response could not be written: {e}");
                return;
            }
        }
    }
}

/// What an upgrade's handler gets: the bytes read past the head, then the
/// bare socket (as before TLS: an idle plain connection costs no more) or
/// the TLS session.
fn upgraded(input: &Shared) -> http::upgrade::Connection {
    match input::lock(input).take_rest() {
        (Stream::Plain(stream), early) => http::upgrade::Connection::new(Upgraded { early, pos: 0, stream }),
        (Stream::Tls(stream), early) => http::upgrade::Connection::new(Upgraded { early, pos: 0, stream }),
    }
}

/// Answers a refused request, logs it once, and closes.
async fn refuse(out: &mut Stream, peer: SocketAddr, r: &Refusal, opts: &Options) {
    log::info!("{peer}: refused a request with {}: {}", r.status, r.why);
    let text = format!("{}: {}", response::reason(r.status), r.why);
    if response::refuse(out, r.status, &text, opts.timeout).await.is_ok() {
        response::linger_close(out).await;
    }
}

/// The tide request for a checked head, with its body reader.
fn request(
    head: &mut Head,
    input: &Shared,
    peer: SocketAddr,
    (local, scheme): (Option<SocketAddr>, &str),
) -> Result<(Request, Version, Method), Refusal> {
    // Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`.
    let method: Method = head
        .method
        .parse()
        .ok()
        .filter(|m: &Method| m.to_string() == head.method)
        .ok_or_else(|| Refusal::new(501, format!("method {} is not supported", head.method)))?;
    let url = match head.target.starts_with('/') {
        true => {
            let host = head.host.clone().or_else(|| local.map(|a| a.to_string())).unwrap_or_else(|| "localhost".into());
            format!("{scheme}://{host}{}", head.target)
        }
        false => head.target.clone(),
    };
    let mut url =
        Url::parse(&url).map_err(|e| Refusal::new(400, format!("the request target is not a valid URL: {e}")))?;
    // What the connection is, whatever an absolute-form target says.
    if url.scheme() != scheme {
        let _ = url.set_scheme(scheme);
    }
    let mut req = Request::new(method, url);
    req.set_version(Some(match head.version {
        Version::Http10 => http::Version::Http1_0,
        Version::Http11 => http::Version::Http1_1,
    }));
    req.set_peer_addr(Some(peer));
    req.set_local_addr(local);
    for (name, value) in &head.headers {
        // Both checked by the head parser: a token, and visible ASCII.
        let name = http::headers::HeaderName::from_string(name.clone())
            .map_err(|_| Refusal::new(400, format!("header name {name:?} is not acceptable")))?;
        let value = http::headers::HeaderValue::from_bytes(value.clone().into_bytes())
            .map_err(|_| Refusal::new(400, format!("the value of {name} is not acceptable")))?;
        req.append_header(name, value);
    }
    let generation = input::lock(input).begin_body(head);
    match head.framing {
        super::head::Framing::None => req.set_body(Body::empty()),
        framing => {
            let len = match framing {
                super::head::Framing::Length(n) => usize::try_from(n).ok(),
                _ => None,
            };
            let reader = futures_lite::io::BufReader::new(BodyReader::new(input.clone(), generation));
            req.set_body(Body::from_reader(reader, len));
        }
    }
    // Setting a body labels it octet-stream when the client named no type;
    // handlers must see what the client really sent.
    if head.header("content-type").is_none() {
        req.remove_header("Content-Type");
    }
    req.ext_mut().insert(RawHead::take_from(head));
    Ok((req, head.version, method))
}

/// The socket of a request that asks for an upgrade (in its extensions):
/// a WebSocket connection lets the hub write to it directly
/// (`hub::socket`), once the `101` is out.
#[derive(Clone)]
pub struct UpgradeSocket(pub TcpStream);

/// An upgraded connection: the bytes that came with the handshake, then the
/// socket (`TcpStream`) or the TLS session on it.
struct Upgraded<S> {
    early: Vec<u8>,
    pos: usize,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Upgraded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        if self.pos < self.early.len() {
            let n = buf.len().min(self.early.len() - self.pos);
            buf[..n].copy_from_slice(&self.early[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.early.len() {
                self.early = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Upgraded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
