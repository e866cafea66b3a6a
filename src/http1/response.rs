//! Writes one response, with the framing decided here and nowhere else:
//! no body (and no length) for 1xx, 204 and 304; a known length as
//! `Content-Length`; otherwise chunked for HTTP/1.1 and close-delimited for
//! HTTP/1.0. Handlers (and the scripts behind them) never choose framing
//! headers. A client that reads a response more slowly than `--http-timeout`
//! plus one second per [`MIN_RATE`](super::body::MIN_RATE) bytes is cut off.

use std::io::{self, ErrorKind, Write as _};
use std::time::{Duration, SystemTime};

use crate::tls::Stream;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use tide::http::{Method, Response, StatusCode};

use super::body::allowance;
use super::fields::{is_field_value, lists_token, HopByHop};
use super::head::Version;
use crate::runtime;

/// The reason phrase of a status (RFC 9110 §15).
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => StatusCode::try_from(code).map_or("", |s| s.canonical_reason()),
    }
}

/// The status a response really has when the HTTP library's `StatusCode`
/// enum has no name for it (420, 499, 522, 599, 299 …: any code a script or
/// a backend may answer, RFC 9110 §15). Carried as a response extension
/// beside the enum's nearest code (the class's first, see [`with_status`]),
/// so the status line ([`write`]) and the log lines say the real code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawStatus(pub u16);

/// A response with status `code` (100..=599), whether or not the HTTP
/// library knows it: an unknown code is stored as [`RawStatus`], the enum
/// holding its class's first code (420 → 400), so code that looks only at
/// the class still judges it right.
pub fn with_status(code: u16) -> Response {
    if let Ok(known) = StatusCode::try_from(code) {
        return Response::new(known);
    }
    let class = StatusCode::try_from(code / 100 * 100).unwrap_or(StatusCode::InternalServerError);
    let mut res = Response::new(class);
    res.ext_mut().insert(RawStatus(code));
    res
}

/// The status `res` goes out with: its [`RawStatus`], else its status.
pub fn status_of(res: &Response) -> u16 {
    res.ext().get::<RawStatus>().map_or_else(|| res.status().into(), |s| s.0)
}

/// How the body is delimited on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    NoBody,
    Length(u64),
    Chunked,
    /// HTTP/1.0 with an unknown length: the end of the connection ends it.
    UntilClose,
}

/// What to write for one request.
pub struct Reply {
    pub res: Response,
    pub method: Method,
    pub version: Version,
    /// The connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// Writes the response; returns whether the connection may be kept.
pub async fn write(out: &mut Stream, mut reply: Reply, stall: Duration) -> io::Result<bool> {
    let mut pace = Pace { timeout: stall, waited: Duration::ZERO, sent: 0 };
    let status = status_of(&reply.res);
    // Taking the body labels a response without a type octet-stream
    // (http-types); what had no type (a 304, a script's 204) keeps none.
    let typed = reply.res.header("Content-Type").is_some();
    let mut body = reply.res.take_body();
    if !typed {
        reply.res.remove_header("Content-Type");
    }
    let framing = match (status, body.len()) {
        (100..=199 | 204 | 304, _) => Framing::NoBody,
        (_, Some(n)) => Framing::Length(n as u64),
        (_, None) if reply.version == Version::Http11 => Framing::Chunked,
        (_, None) => Framing::UntilClose,
    };
    let wants_close =
        reply.res.header("Connection").is_some_and(|v| lists_token(v.iter().map(|v| v.as_str()), "close"));
    let keep = reply.keep_alive && !wants_close && framing != Framing::UntilClose && status != 101;
    let mut buf =
        head(&reply.res, status, framing, Persist { keep, version: reply.version }, reply.method == Method::Head);
    if reply.method == Method::Head || framing == Framing::NoBody {
        send(out, &buf, &mut pace).await?;
        return Ok(keep);
    }
    let mut chunk = vec![0u8; 16 * 1024];
    let mut sent: u64 = 0;
    loop {
        // The head goes out with the first piece of the body, or alone
        // when the body keeps the client waiting.
        let n = match futures_lite::future::poll_once(body.read(&mut chunk)).await {
            Some(r) => r?,
            None => {
                send(out, &buf, &mut pace).await?;
                buf.clear();
                body.read(&mut chunk).await?
            }
        };
        if let Framing::Length(len) = framing {
            if n == 0 && sent < len {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "the response body ended early"));
            }
            let n = n.min(usize::try_from(len - sent).unwrap_or(usize::MAX));
            buf.extend_from_slice(&chunk[..n]);
            sent += n as u64;
            if sent == len {
                send(out, &buf, &mut pace).await?;
                return Ok(keep);
            }
        } else if framing == Framing::Chunked {
            if n > 0 {
                let _ = write!(buf, "{n:x}\r\n");
            }
            buf.extend_from_slice(&chunk[..n]);
            buf.extend_from_slice(if n > 0 { b"\r\n" } else { b"0\r\n\r\n" });
        } else {
            buf.extend_from_slice(&chunk[..n]);
        }
        send(out, &buf, &mut pace).await?;
        buf.clear();
        if n == 0 {
            return Ok(keep);
        }
    }
}

/// Whether the connection stays open after a response, and the request's
/// version: HTTP/1.0 keeps it only when told so (`connection: keep-alive`).
#[derive(Clone, Copy)]
struct Persist {
    keep: bool,
    version: Version,
}

/// Status line and headers.
fn head(res: &Response, status: u16, framing: Framing, persist: Persist, is_head: bool) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    let _ = write!(h, "HTTP/1.1 {status} {}\r\n", reason(status));
    let hop_by_hop = HopByHop::new(res.header("Connection").into_iter().flat_map(|v| v.iter().map(|v| v.as_str())));
    let mut names: Vec<_> = res.iter().collect();
    names.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    for (name, values) in names {
        let upgrade_header = status == 101 && ["connection", "upgrade"].contains(&name.as_str());
        if hop_by_hop.contains(name.as_str()) && !upgrade_header {
            continue;
        }
        for v in values.iter() {
            if is_field_value(v.as_str().as_bytes()) {
                let _ = write!(h, "{name}: {v}\r\n");
            } else {
                log::warn!("dropped the response header {name}: its value has control characters");
            }
        }
    }
    if res.header("Date").is_none() {
        let _ = write!(h, "date: {}\r\n", httpdate::fmt_http_date(SystemTime::now()));
    }
    match framing {
        Framing::Length(n) => {
            let _ = write!(h, "content-length: {n}\r\n");
        }
        Framing::Chunked if !is_head => h.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !persist.keep && status != 101 {
        h.extend_from_slice(b"connection: close\r\n");
    } else if persist.keep && persist.version == Version::Http10 {
        h.extend_from_slice(b"connection: keep-alive\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// How long a client has been making the server wait to write to it: at
/// most `--http-timeout` plus one second per [`MIN_RATE`](super::body::MIN_RATE) bytes written.
/// Only time spent waiting on the client counts, not time spent waiting on
/// a script that streams slowly.
struct Pace {
    timeout: Duration,
    waited: Duration,
    sent: u64,
}

async fn send(out: &mut Stream, bytes: &[u8], pace: &mut Pace) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    pace.sent += bytes.len() as u64;
    let left = allowance(pace.timeout, pace.sent).saturating_sub(pace.waited);
    let started = std::time::Instant::now();
    // The flush sends what TLS still buffers (nothing to do on plain TCP).
    let r = runtime::timeout(left, async { out.write_all(bytes).await.and(out.flush().await) }).await;
    pace.waited += started.elapsed();
    match r {
        Ok(r) => r,
        Err(()) => Err(io::Error::new(ErrorKind::TimedOut, "the client reads too slowly")),
    }
}

/// A plain-text answer that ends the connection, as bytes: `extra` is
/// more header lines, each ending in CRLF.
pub fn refusal(status: u16, text: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{extra}\
         date: {}\r\nconnection: close\r\n\r\n{text}\n",
        reason(status),
        text.len() + 1,
        httpdate::fmt_http_date(SystemTime::now())
    )
    .into_bytes()
}

/// Sends a [`refusal`] (refused requests).
pub async fn refuse(out: &mut Stream, status: u16, text: &str, stall: Duration) -> io::Result<()> {
    send(out, &refusal(status, text, ""), &mut Pace { timeout: stall, waited: Duration::ZERO, sent: 0 }).await
}

/// Closes without losing the answer just written: a client still sending
/// (a body nobody read) would otherwise get a reset that can destroy the
/// response in flight. Reads and drops what arrives for a short while.
pub async fn linger_close(out: &Stream) {
    out.shutdown_write().await;
    let mut rest = out.clone();
    let mut scratch = [0u8; 4096];
    let mut total = 0;
    let drain = async {
        while total < 1 << 20 {
            match rest.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = runtime::timeout(Duration::from_secs(2), drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Persist = Persist { keep: true, version: Version::Http11 };
    const CLOSE: Persist = Persist { keep: false, version: Version::Http11 };

    #[test]
    fn statuses_the_library_does_not_name_are_kept() {
        for code in [420, 499, 522, 599, 306, 299, 199] {
            let res = with_status(code);
            assert_eq!(status_of(&res), code);
            assert_eq!(u16::from(res.status()), code / 100 * 100, "the class is kept for code that reads the enum");
            let h = String::from_utf8(head(&res, code, Framing::Length(0), KEEP, false)).expect("valid");
            assert!(h.starts_with(&format!("HTTP/1.1 {code} \r\n")), "{h}");
        }
        let res = with_status(404);
        assert_eq!((status_of(&res), res.ext().get::<RawStatus>()), (404, None));
    }

    #[test]
    fn nominated_headers_are_not_written() {
        let mut res = Response::new(200);
        res.insert_header("Connection", "keep-alive, X-Hop");
        res.insert_header("X-Hop", "1");
        res.insert_header("TE", "trailers");
        res.insert_header("X-Kept", "1");
        let h = String::from_utf8(head(&res, 200, Framing::Length(0), KEEP, false)).expect("valid");
        assert!(h.contains("x-kept: 1\r\n") && !h.contains("x-hop") && !h.contains("\r\nte:"), "{h}");
    }

    #[test]
    fn heads_carry_only_our_framing() {
        let mut res = Response::new(200);
        res.insert_header("Content-Length", "99");
        res.insert_header("X-A", "1");
        let h = String::from_utf8(head(&res, 200, Framing::Length(3), KEEP, false)).expect("valid");
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
        assert!(h.contains("content-length: 3\r\n") && !h.contains("99") && h.contains("x-a: 1\r\n"), "{h}");
        assert!(!h.contains("connection"), "{h}");
        let h = String::from_utf8(head(&Response::new(304), 304, Framing::NoBody, CLOSE, false)).expect("valid");
        assert!(h.starts_with("HTTP/1.1 304 Not Modified\r\n") && !h.contains("content-length"), "{h}");
        assert!(h.contains("connection: close\r\n"), "{h}");
        let mut up = Response::new(101);
        up.insert_header("Connection", "Upgrade");
        up.insert_header("Upgrade", "websocket");
        let h = String::from_utf8(head(&up, 101, Framing::NoBody, CLOSE, false)).expect("valid");
        assert!(h.contains("connection: Upgrade\r\n") && h.contains("upgrade: websocket\r\n"), "{h}");
        assert!(!h.contains("close"), "{h}");
        let old = Persist { keep: true, version: Version::Http10 };
        let h = String::from_utf8(head(&Response::new(200), 200, Framing::Length(0), old, false)).expect("valid");
        assert!(h.contains("connection: keep-alive\r\n") && h.contains("content-length: 0\r\n"), "{h}");
    }
}
