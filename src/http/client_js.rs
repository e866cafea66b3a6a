//! `GET /ws2http.js`: the browser helper for resumable sessions
//! (contrib/ws2http.js, compiled in), served in every mode so a page can
//! load it from the server it talks to, in the version that speaks that
//! server's protocol.
//!
//! The path belongs to ws2http: it is answered before scripts and `--root`,
//! so a stale copy in a site (or a script of that name) never shadows the
//! helper that matches the running binary. A site that wants its own copy
//! serves it under another name. It is cached for a few minutes and then
//! revalidated by its ETag (a hash of the file), so an upgraded server's
//! helper reaches browsers soon without costing a download per page.

use tide::{Response, StatusCode};

/// The path the helper is served at.
pub const PATH: &str = "/ws2http.js";

/// The helper's source, the same bytes as contrib/ws2http.js.
pub const SOURCE: &str = include_str!("../../contrib/ws2http.js");

const CACHE_CONTROL: &str = "public, max-age=300";

/// The ETag: FNV-1a of the source, computed at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const HASH: u64 = fnv1a(SOURCE.as_bytes());

fn etag() -> String {
    format!("\"{HASH:016x}\"")
}

/// The answer for a request to [`PATH`], `None` for any other path:
/// GET and HEAD get the file (or 304 when `If-None-Match` names it),
/// other methods 405.
pub fn answer(path: &str, method: tide::http::Method, if_none_match: Option<&str>) -> Option<Response> {
    use tide::http::Method;
    if path != PATH {
        return None;
    }
    if !matches!(method, Method::Get | Method::Head) {
        let mut r = crate::http1::request::text_response(
            StatusCode::MethodNotAllowed,
            "/ws2http.js is ws2http's client helper: only GET and HEAD",
        );
        r.insert_header("Allow", "GET, HEAD");
        return Some(r);
    }
    let tag = etag();
    let fresh = if_none_match
        .is_some_and(|h| h.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == tag || t == "*"));
    let mut r = Response::new(if fresh { StatusCode::NotModified } else { StatusCode::Ok });
    r.insert_header("Cache-Control", CACHE_CONTROL);
    r.insert_header("ETag", tag.as_str());
    r.insert_header("X-Content-Type-Options", "nosniff");
    if !fresh {
        r.set_body(SOURCE);
        // Spelled out: tide's Mime would print it without the space.
        r.insert_header("Content-Type", "text/javascript; charset=utf-8");
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tide::http::Method;

    #[test]
    fn only_its_path() {
        assert!(answer("/ws2http.jsx", Method::Get, None).is_none());
        assert!(answer("/x/ws2http.js", Method::Get, None).is_none());
    }

    #[test]
    fn get_serves_the_source_and_revalidates_by_etag() {
        let r = answer(PATH, Method::Get, None).expect("served");
        assert_eq!(r.status(), StatusCode::Ok);
        assert_eq!(r.header("Content-Type").map(|h| h.as_str()), Some("text/javascript; charset=utf-8"));
        let tag = r.header("ETag").expect("etag").as_str().to_owned();
        let again = answer(PATH, Method::Get, Some(&format!("\"x\", {tag}"))).expect("served");
        assert_eq!(again.status(), StatusCode::NotModified);
        let other = answer(PATH, Method::Get, Some("\"0\"")).expect("served");
        assert_eq!(other.status(), StatusCode::Ok);
    }

    #[test]
    fn other_methods_get_405() {
        let r = answer(PATH, Method::Post, None).expect("answered");
        assert_eq!(r.status(), StatusCode::MethodNotAllowed);
        assert_eq!(r.header("Allow").map(|h| h.as_str()), Some("GET, HEAD"));
    }

    #[test]
    fn the_served_file_is_the_contrib_copy() {
        assert!(SOURCE.contains("class Ws2httpSocket"));
        assert!(SOURCE.contains("ws2http.session.v1"));
    }
}
