//! Our own accept loop in front of tide (instead of tide's TcpListener).
//!
//! The HTTP layer rewrites requests before a handler sees them: it
//! normalizes URLs (`/a/../b` becomes `/b`) and labels a body sent without
//! Content-Type as `application/octet-stream`. The contract refuses dot
//! segments outright, gives scripts the request target exactly as sent
//! (REQUEST_URI), and treats a control API body without Content-Type as text.
//! So we peek at the head of each connection's first request, without
//! consuming it, and attach what the client really sent as a [`RawHead`].
//! The control API serves one request per connection (`Connection: close`)
//! so that every API request is a first request. This is also the one place
//! that accepts sockets, so connection limits can live here.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_std::net::TcpStream;

use crate::runtime;

/// The head of a connection's first request, as the client sent it.
#[derive(Clone, Debug)]
pub struct RawHead {
    /// The request target (`/p?q` or `http://host/p?q`).
    pub target: String,
    /// The Content-Type header, if the client sent one.
    pub content_type: Option<String>,
}

impl RawHead {
    /// Path and query of an origin-form (`/p?q`) or absolute-form
    /// (`http://host/p?q`) target.
    pub fn path_and_query(&self) -> (&str, Option<&str>) {
        let t = self.target.as_str();
        let t = match t.split_once("://") {
            Some((scheme, rest)) if !scheme.contains('/') => rest.find('/').map_or("/", |i| &rest[i..]),
            _ => t,
        };
        let t = t.split_once('#').map_or(t, |(a, _)| a);
        match t.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (t, None),
        }
    }
}

/// Serves `app` on `listener` until an accept error. With
/// `one_request_per_connection`, every response closes its connection.
pub async fn serve<S: Clone + Send + Sync + 'static>(
    app: tide::Server<S>,
    listener: TcpListener,
    one_request_per_connection: bool,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = async_std::net::TcpListener::from(listener);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) if is_transient(&e) => {
                log::warn!("accept failed ({e}); retrying");
                runtime::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let app = app.clone();
        runtime::spawn(async move {
            let raw = first_request_head(&stream).await;
            let local = stream.local_addr().ok();
            let first = Arc::new(AtomicBool::new(true));
            let result = async_h1::accept(stream, |mut req| {
                let (app, raw, first) = (app.clone(), raw.clone(), first.clone());
                async move {
                    req.set_local_addr(local);
                    req.set_peer_addr(Some(peer));
                    if first.swap(false, Ordering::Relaxed) {
                        if let Some(raw) = raw {
                            req.ext_mut().insert(raw);
                        }
                    }
                    let mut res: tide::http::Response = app.respond(req).await?;
                    if one_request_per_connection {
                        res.insert_header("Connection", "close");
                    }
                    Ok(res)
                }
            })
            .await;
            if let Err(e) = result {
                log::debug!("connection from {peer}: {e}");
            }
        });
    }
}

/// Errors after which accepting again makes sense (out of fds, aborted
/// connections), as opposed to a broken listener.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Peeks (without consuming) until the first request's head is complete.
/// `None` if it does not arrive quickly, is over 8 KiB or is not HTTP; the
/// request is then served with what the HTTP layer made of it.
async fn first_request_head(stream: &TcpStream) -> Option<RawHead> {
    let mut buf = vec![0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            return parse_head(std::str::from_utf8(&buf[..end]).ok()?);
        }
        if n == buf.len() || Instant::now() > deadline {
            return None;
        }
        // Part of the head is here; wait for the rest.
        runtime::sleep(Duration::from_millis(5)).await;
    }
}

fn parse_head(head: &str) -> Option<RawHead> {
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (_method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/") {
        return None;
    }
    let content_type = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-type").then(|| value.trim().to_owned())
    });
    Some(RawHead { target: target.to_owned(), content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed() {
        let h = parse_head("POST /send/x HTTP/1.1\r\nHost: a\r\ncontent-TYPE:  text/plain ").expect("a head");
        assert_eq!((h.target.as_str(), h.content_type.as_deref()), ("/send/x", Some("text/plain")));
        let h = parse_head("GET /a/../b HTTP/1.1\r\nHost: a").expect("a head");
        assert_eq!((h.target.as_str(), h.content_type), ("/a/../b", None));
        assert!(parse_head("GARBAGE").is_none());
    }

    #[test]
    fn path_and_query_of_targets() {
        let t = |s: &str| RawHead { target: s.into(), content_type: None };
        assert_eq!(t("/a/../b?x=1").path_and_query(), ("/a/../b", Some("x=1")));
        assert_eq!(t("/a").path_and_query(), ("/a", None));
        assert_eq!(t("http://h:1/p/q?z").path_and_query(), ("/p/q", Some("z")));
        assert_eq!(t("http://h").path_and_query(), ("/", None));
    }
}
