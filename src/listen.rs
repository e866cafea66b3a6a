//! The accept loop of both listeners, in front of our own HTTP/1.x
//! connection handling ([`crate::http1`]) and tide's routing.
//!
//! Why not tide's listener: the HTTP layer it uses guesses where this
//! server must refuse (the last of two Content-Lengths wins, `gzip,
//! chunked` reads as an empty body), rewrites requests (`/a/../b` becomes
//! `/b`, a body without Content-Type becomes octet-stream), answers
//! nothing to HTTP/1.0 or to a malformed head, and gives a slow client a
//! minute. The contract refuses dot segments and hands scripts the request
//! target exactly as sent, so every request carries its head as the client
//! sent it: a [`RawHead`](crate::http1::head::RawHead). This is also the one place that accepts sockets,
//! so the connection limits live here: `--max-http-connections` in all and
//! `--max-http-connections-per-ip`, counted per listener for as long as a
//! connection speaks HTTP (a WebSocket connection then counts against
//! `--max-connections` instead). With TLS (`--tls-cert`, ACME) the
//! handshake runs here too, in the connection's own task and within
//! `--http-timeout`, like a slow request head: a client that never
//! finishes it holds a connection slot that long at most.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::conn_limits::{ConnLimits, Full};
use crate::http1::conn::{self, Options};
use crate::runtime;
use crate::tls::{Handshake, Stream};

/// One listener's settings.
pub struct Listener {
    pub name: &'static str,
    pub options: Options,
    /// Connections in all, and from one address.
    pub max_connections: usize,
    pub max_per_ip: usize,
    /// HTTPS: every connection starts with a TLS handshake.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Refusals not logged yet (one line per second at most, under a flood).
struct RefusalLog {
    last_second: AtomicU64,
    unlogged: AtomicU64,
}

impl RefusalLog {
    fn note(&self, name: &str, ip: std::net::IpAddr, full: &Full) {
        let now = crate::runtime::clock_ms() / 1000 + 1;
        if self.last_second.swap(now, Ordering::Relaxed) == now {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let more = self.unlogged.swap(0, Ordering::Relaxed);
        let limit = match full {
            Full::Total(n) => format!("{n} connections are open (--max-http-connections)"),
            Full::PerIp(n) => format!("{n} connections from {ip} are open (--max-http-connections-per-ip)"),
        };
        let more = if more > 0 { format!("; {more} more refused in the last second") } else { String::new() };
        log::warn!("{name}: refused a connection from {ip} with 503: {limit}{more}");
    }
}

/// Serves `app` on `listener` until an accept error.
pub async fn serve<S: Clone + Send + Sync + 'static>(
    app: tide::Server<S>,
    listener: TcpListener,
    settings: Listener,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = crate::runtime::TcpListener::from(listener);
    let limits = ConnLimits::new(settings.max_connections, settings.max_per_ip);
    let options = Arc::new(settings.options);
    let log = Arc::new(RefusalLog { last_second: AtomicU64::new(0), unlogged: AtomicU64::new(0) });
    // Accept failures in a row (out of descriptors): logged once, and once
    // more when accepting works again.
    let mut failing = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) if is_transient(&e) => {
                if failing == 0 {
                    log::warn!("{}: accept failed ({e}); retrying every 50 ms", settings.name);
                }
                failing += 1;
                runtime::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if failing > 0 {
            log::warn!("{}: accepting again after {failing} failed attempt(s)", settings.name);
            failing = 0;
        }
        // Small writes (WebSocket frames, short responses) go out at once.
        let _ = stream.set_nodelay(true);
        match limits.reserve(Some(peer.ip())) {
            Ok(slot) => {
                let (app, options) = (app.clone(), options.clone());
                match &settings.tls {
                    None => runtime::spawn(async move {
                        conn::serve(app, Stream::Plain(stream), peer, options).await;
                        drop(slot);
                    }),
                    Some(tls) => runtime::spawn(serve_tls(app, tls.clone(), stream, peer, options, slot)),
                }
            }
            // A TLS client cannot read a plain answer, and a handshake
            // costs more than the refusal should: closed at once.
            Err(full) if settings.tls.is_some() => log.note(settings.name, peer.ip(), &full),
            Err(full) => {
                log.note(settings.name, peer.ip(), &full);
                refuse_busy(stream, peer).await;
            }
        }
    }
}

/// One HTTPS connection: the handshake, then requests as over plain HTTP.
async fn serve_tls<S: Clone + Send + Sync + 'static, T>(
    app: tide::Server<S>,
    tls: Arc<rustls::ServerConfig>,
    tcp: crate::runtime::TcpStream,
    peer: SocketAddr,
    options: Arc<Options>,
    slot: T,
) {
    if !answer_plain_http(&tcp, peer, options.timeout).await {
        drop(slot);
        return;
    }
    match crate::tls::accept(tls, tcp, options.timeout).await {
        Ok(stream) => conn::serve(app, stream, peer, options).await,
        Err(Handshake::TimedOut) => {
            log::info!("{peer}: TLS handshake not done within {:?} (--http-timeout); closed", options.timeout)
        }
        Err(Handshake::Failed(e)) if crate::tls::no_certificate(&e) => log::debug!("{peer}: TLS handshake failed: {e}"),
        Err(Handshake::Failed(e)) => log::info!("{peer}: TLS handshake failed: {e}"),
        Err(Handshake::AcmeChallenge) => log::info!("{peer}: ACME TLS-ALPN-01 validation answered"),
    }
    drop(slot);
}

/// `false` when the client sent plain HTTP (or nothing within `timeout`)
/// to the HTTPS port: like nginx, a plain 400 saying which URL to use
/// (instead of a TLS error the user sees as an empty reply), one write
/// that does not wait, one log line. `true` when the first byte opens a
/// TLS handshake record (0x16).
async fn answer_plain_http(tcp: &crate::runtime::TcpStream, peer: SocketAddr, timeout: std::time::Duration) -> bool {
    use futures_lite::future::poll_once;
    use futures_lite::AsyncWriteExt;
    let mut head = [0u8; 2048];
    let n = match crate::runtime::timeout(timeout, tcp.peek(&mut head)).await {
        Ok(Ok(n)) if n > 0 => n,
        // Nothing, an error or a timeout: the handshake says which, once.
        _ => return true,
    };
    if head[0] == 0x16 {
        return true;
    }
    let port = tcp.local_addr().map(|a| a.port()).unwrap_or_default();
    let host = host_of(&head[..n]).unwrap_or_else(|| match tcp.local_addr() {
        Ok(SocketAddr::V6(a)) => format!("[{}]", a.ip()),
        Ok(a) => a.ip().to_string(),
        Err(_) => "HOST".into(),
    });
    let text = format!("Bad Request: this port speaks HTTPS; use https://{host}:{port}/");
    let mut out = tcp.clone();
    let _ = poll_once(out.write_all(&crate::http1::response::refusal(400, &text, ""))).await;
    // What arrived is dropped first, so the close does not reset the answer away.
    let mut scratch = [0u8; 4096];
    let _ = poll_once(futures_lite::AsyncReadExt::read(&mut out, &mut scratch)).await;
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    log::info!("{peer}: plain HTTP sent to the HTTPS port; answered 400 (use https://)");
    false
}

/// The host name (without its port) of a `Host:` field in `head`, when it
/// is made of the characters a host name or an IPv6 literal may hold.
fn host_of(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    let value = text.split("\r\n").skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("host").then(|| value.trim())
    })?;
    let host = match value.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split_once(']')?.0),
        None => value.split(':').next()?.to_owned(),
    };
    let ok = |b: u8| b.is_ascii_alphanumeric() || b".-:[]".contains(&b);
    (!host.is_empty() && host.len() <= 255 && host.bytes().all(ok)).then_some(host)
}

/// Answers a connection over the limits with 503 and closes it at once,
/// right in the accept loop: the answer fits the socket's send buffer, so
/// one write that does not wait is enough, and a flood of refused
/// connections holds no task and no descriptor.
async fn refuse_busy(mut stream: crate::runtime::TcpStream, peer: SocketAddr) {
    use futures_lite::future::poll_once;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let text = "Service Unavailable: too many connections; try again later";
    let _ = poll_once(stream.write_all(&crate::http1::response::refusal(503, text, "retry-after: 5\r\n"))).await;
    // What already arrived is read and dropped, so that closing with unread
    // bytes does not reset the answer away.
    let mut scratch = [0u8; 4096];
    for _ in 0..4 {
        match poll_once(stream.read(&mut scratch)).await {
            Some(Ok(n)) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    log::debug!("{peer}: refused (connection limits)");
}

/// Errors after which accepting again makes sense (out of fds, aborted
/// connections), as opposed to a broken listener.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
