//! A header block as an HTTP response: the one conversion used by classic
//! CGI pages (spawned or FastCGI) and by an open script's rejection, with
//! the one rule for headers a script may not set
//! ([`crate::http1::fields::HopByHop`]).

use tide::{Body, Response, StatusCode};

use super::head::Head;
use crate::http1::fields::{is_field_value, HopByHop};
use crate::http1::response::with_status;

/// The response for `head` with `status` (the caller decides what a head
/// without `Status` means; a code the HTTP library does not know is kept,
/// [`with_status`]), its headers except the hop-by-hop ones (listed or
/// nominated by `Connection`) and those whose value cannot be sent
/// (logged with `who`), and the body `body` makes from the script's
/// `Content-Length`, if it gave a valid one. A head without Content-Type
/// gets none (tide would label the body application/octet-stream).
pub fn to_response(head: &Head, status: u16, who: &str, body: impl FnOnce(Option<u64>) -> Body) -> Response {
    let mut res: Response = with_status(status).into();
    let mut length = None;
    let hop_by_hop = HopByHop::of_pairs(&head.headers);
    for (name, value) in &head.headers {
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<u64>().ok();
            continue;
        }
        if hop_by_hop.contains(name) {
            continue;
        }
        if !is_field_value(value.as_bytes()) {
            log::warn!("{who}dropped the response header {name}: its value is not printable ASCII");
            continue;
        }
        res.append_header(name.as_str(), value.as_str());
    }
    res.set_body(body(length));
    if head.get("Content-Type").is_none() {
        res.remove_header("Content-Type");
    }
    res
}

/// What a page request (classic CGI) got.
pub enum Reply {
    Response(Box<Response>),
    /// `Location: /local/path` without a status: serve that path instead
    /// (RFC 3875 §6.2.2), as a GET.
    LocalRedirect(String),
}

/// A page request's body, read whole ([`crate::http1::body`]), and its type.
#[derive(Clone, Default)]
pub struct RequestBody {
    pub body: bytes::Bytes,
    /// Content-Type, when the client sent one.
    pub content_type: Option<String>,
}

/// A plain-text reply.
pub fn plain(status: StatusCode, text: &str) -> Reply {
    Reply::Response(Box::new(crate::http1::request::text_response(status, text)))
}

/// The reply for a classic CGI response (RFC 3875 §6): a local redirect,
/// or the response with the body streamed from `body`.
pub fn page_reply<R>(head: Head, body: R) -> Reply
where
    R: futures_lite::AsyncBufRead + Unpin + Send + Sync + 'static,
{
    let location = head.get("Location");
    if let Some(loc) = location {
        if loc.starts_with('/') && !loc.starts_with("//") && head.status.is_none() {
            return Reply::LocalRedirect(loc.to_owned());
        }
    }
    let status = head.status.unwrap_or(if location.is_some() { 302 } else { 200 });
    let res = to_response(&head, status, "", |length| Body::from_reader(body, length.map(|l| l as usize)));
    Reply::Response(Box::new(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: Option<u16>, headers: &[(&str, &str)]) -> Head {
        Head { status, headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn hop_by_hop_and_unsendable_headers_are_dropped() {
        let h = head(
            Some(403),
            &[
                ("Connection", "close"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Trailer", "X"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "h2c"),
                ("Proxy-Connection", "keep-alive"),
                ("X-Bad", "caf\u{e9}"),
                ("X-Ok", "1"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
            ],
        );
        let res = to_response(&h, h.status.unwrap_or(500), "", |_| Body::from("no"));
        assert_eq!(u16::from(res.status()), 403);
        let names: Vec<String> = res.iter().map(|(n, _)| n.as_str().to_owned()).collect();
        for gone in ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "x-bad"] {
            assert!(!names.iter().any(|n| n == gone), "{gone} in {names:?}");
        }
        assert_eq!(res.header("X-Ok").map(|v| v.as_str().to_owned()), Some("1".to_owned()));
        assert_eq!(res.header("Set-Cookie").map(|v| v.iter().count()), Some(2));
        assert!(res.header("Content-Type").is_none(), "no type given, none invented");
    }

    #[test]
    fn unnamed_statuses_and_nominated_headers() {
        let h = head(Some(420), &[("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("X-Ok", "1")]);
        let res = to_response(&h, 420, "", |_| Body::from("calm"));
        assert_eq!(crate::http1::response::status_of(res.as_ref()), 420);
        assert!(res.header("X-Hop").is_none() && res.header("X-Ok").is_some());
    }

    #[test]
    fn content_length_sizes_the_body_and_is_not_copied() {
        let h = head(None, &[("Content-Length", " 5 "), ("Content-Type", "text/plain")]);
        let mut seen = None;
        let res = to_response(&h, 200, "", |l| {
            seen = l;
            Body::from("hello")
        });
        assert_eq!(seen, Some(5));
        assert_eq!(res.header("Content-Type").map(|v| v.as_str().to_owned()), Some("text/plain".to_owned()));
    }

    #[test]
    fn local_redirects_and_default_statuses() {
        let body = || futures_lite::io::BufReader::new(futures_lite::io::Cursor::new(Vec::new()));
        let r = page_reply(head(None, &[("Location", "/other?x=1")]), body());
        assert!(matches!(r, Reply::LocalRedirect(l) if l == "/other?x=1"));
        let status = |r: Reply| match r {
            Reply::Response(r) => u16::from(r.status()),
            Reply::LocalRedirect(_) => 0,
        };
        assert_eq!(status(page_reply(head(None, &[("Location", "//evil.example/")]), body())), 302);
        assert_eq!(status(page_reply(head(None, &[("Location", "http://a.example/")]), body())), 302);
        assert_eq!(status(page_reply(head(Some(301), &[("Location", "/x")]), body())), 301);
        assert_eq!(status(page_reply(head(None, &[("X-A", "1")]), body())), 200);
    }
}
