//! `--redirect-http ADDR`: a plain-HTTP listener whose only job is to send
//! browsers to the HTTPS listener, so that `http://example.org/chat`
//! typed in an address bar still lands on the app: every request, whatever
//! its method, gets `308 Permanent Redirect` to
//! `https://HOST[:TLSPORT]/path?query`.
//!
//! - **308, not 301**: a POST stays a POST with its body (RFC 9110 §15.4.9).
//! - **The host name is the request's own** (`Host` without its port), and
//!   the port is the HTTPS listener's, left out when it is 443. A request
//!   without a usable `Host` (HTTP/1.0 without one, a value that is not a
//!   host name or address) gets 400: guessing a name would send the
//!   browser somewhere the user did not ask for.
//! - **The path and query are kept exactly as sent** (the raw request
//!   target, already checked by [`crate::http1::head`]: visible ASCII, no
//!   dot segments), so the Location header is a valid field value.
//! - It runs no script and serves no file: nothing here depends on the
//!   site. It is bounded like every listener (`--max-http-connections`,
//!   per IP, `--http-timeout`, `--max-request-head`: [`crate::listen`]).
//! - No `Strict-Transport-Security` here: browsers ignore it over plain
//!   HTTP (RFC 6797 §8.1); `--hsts` adds it to the HTTPS answers.

use std::sync::Arc;

use tide::{Request, Response, StatusCode};

use crate::hosts::split_host;
use crate::http1::request::{raw_path_and_query, text_response};

/// What the redirect needs: the HTTPS listener's port.
#[derive(Clone, Copy, Debug)]
pub struct Redirect {
    pub tls_port: u16,
}

/// The redirect listener's app: every path, every method.
pub fn app(tls_port: u16) -> tide::Server<Arc<Redirect>> {
    let mut app = tide::with_state(Arc::new(Redirect { tls_port }));
    app.at("/").all(handle);
    app.at("/*path").all(handle);
    app
}

async fn handle(req: Request<Arc<Redirect>>) -> tide::Result {
    let host = req.header("Host").map(|h| h.last().as_str());
    let (path, query) = raw_path_and_query(&req);
    match location(host, &path, query.as_deref(), req.state().tls_port) {
        Ok(to) => {
            let mut res = Response::new(StatusCode::PermanentRedirect);
            res.insert_header("Location", to.as_str());
            res.set_content_type("text/plain; charset=utf-8");
            res.set_body(format!("This site is served over HTTPS: {to}\n"));
            Ok(res)
        }
        Err(why) => {
            log::debug!("redirect listener: 400 for {} {path}: {why}", req.method());
            Ok(text_response(StatusCode::BadRequest, &format!("Bad Request: {why}")))
        }
    }
}

/// `https://NAME[:PORT]PATH[?QUERY]` for a request with `Host: host`;
/// `Err` with the reason when there is no usable host name.
pub fn location(host: Option<&str>, path: &str, query: Option<&str>, tls_port: u16) -> Result<String, &'static str> {
    let host = host.ok_or("no Host header: cannot tell which https:// URL to redirect to")?;
    let (name, _port) = split_host(host).ok_or("the Host header is not NAME or NAME:PORT")?;
    if !is_host_name(&name) {
        return Err("the Host header is not a host name or address");
    }
    if !path.starts_with('/') {
        return Err("the request target is not a path");
    }
    let port = if tls_port == 443 { String::new() } else { format!(":{tls_port}") };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!("https://{name}{port}{path}{query}"))
}

/// A DNS name or IPv4 address (letters, digits, `-`, `.`; no empty label
/// but an optional final dot) or a bracketed IPv6 address.
fn is_host_name(name: &str) -> bool {
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    crate::hosts::is_dns_name(name.strip_suffix('.').unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_location_keeps_name_path_and_query_and_takes_the_tls_port() {
        let l = |host, path, query, port| location(Some(host), path, query, port);
        assert_eq!(l("example.org", "/chat", None, 443), Ok("https://example.org/chat".into()));
        assert_eq!(l("Example.ORG:80", "/a/b", Some("x=1&y"), 443), Ok("https://example.org/a/b?x=1&y".into()));
        assert_eq!(l("example.org:8080", "/", Some(""), 8443), Ok("https://example.org:8443/?".into()));
        assert_eq!(l("127.0.0.1:80", "/%20x", None, 8443), Ok("https://127.0.0.1:8443/%20x".into()));
        assert_eq!(l("[::1]:80", "/", None, 443), Ok("https://[::1]/".into()));
        assert_eq!(l("example.org.", "/", None, 443), Ok("https://example.org./".into()));
    }

    #[test]
    fn a_missing_or_bad_host_is_refused() {
        assert!(location(None, "/", None, 443).is_err());
        for bad in [
            "",
            ":80",
            "exa mple.org",
            "evil.org/x",
            "evil.org@x",
            "a..b",
            "-a.org",
            "[zz]",
            "[::1",
            "host:port",
            "a:1:2",
            "é.org",
        ] {
            assert!(location(Some(bad), "/", None, 443).is_err(), "{bad:?}");
        }
        assert!(location(Some("ok.org"), "*", None, 443).is_err(), "asterisk form");
    }

    fn respond(req: tide::http::Request) -> tide::http::Response {
        crate::runtime::block_on(app(8443).respond(req)).expect("a response")
    }

    #[test]
    fn every_method_gets_a_308_with_the_location() {
        for method in [tide::http::Method::Get, tide::http::Method::Post, tide::http::Method::Delete] {
            let mut req = tide::http::Request::new(method, "http://example.org/chat/room?x=1");
            req.insert_header("Host", "example.org");
            let res = respond(req);
            assert_eq!(res.status(), StatusCode::PermanentRedirect);
            assert_eq!(res.header("Location").map(|v| v.as_str()), Some("https://example.org:8443/chat/room?x=1"));
        }
    }

    #[test]
    fn a_bad_host_gets_400() {
        let mut req = tide::http::Request::new(tide::http::Method::Get, "http://example.org/");
        req.insert_header("Host", "bad name");
        let res = respond(req);
        assert_eq!(res.status(), StatusCode::BadRequest);
        assert!(res.header("Location").is_none());
    }
}
