//! One request head, checked strictly before anything acts on it.
//!
//! Two programs that read the same bytes differently (a proxy in front of
//! ws2http, a CGI script behind it) are how requests get smuggled and
//! values forged, so where HTTP/1.1 (RFC 9110, RFC 9112) allows a guess,
//! this refuses the request instead: one `Content-Length` made of digits,
//! `Transfer-Encoding` only as exactly `chunked` and never with a length,
//! exactly one `Host`, header values of visible ASCII, a request target in
//! origin form (or absolute form naming the same host). httparse does the
//! tokenizing; the rules on top are ours.

use std::fmt;

use super::fields::{is_field_value, lists_token};

/// Most header lines in one request (more → 431).
pub const MAX_HEADERS: usize = 100;

/// A request the server will not act on, with the status that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub why: String,
}

impl Refusal {
    pub fn new(status: u16, why: impl Into<String>) -> Self {
        Refusal { status, why: why.into() }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.why)
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// A checked request head.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    /// The request target exactly as sent.
    pub target: String,
    pub version: Version,
    /// Names as sent, in order; values without surrounding whitespace.
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    /// The authority the request names (Host, or the absolute target's).
    pub host: Option<String>,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: answer `100 Continue` before reading the body.
    pub expect_continue: bool,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Where the head that starts at `buf[0]` ends (just past its blank line),
/// searching from `from` (bytes before it were searched already, so a
/// client that sends a byte at a time costs linear time, not quadratic).
pub fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from.saturating_sub(3);
    while let Some(off) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match buf.get(nl + 1..) {
            Some([b'\n', ..]) => return Some(nl + 2),
            Some([b'\r', b'\n', ..]) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// Empty lines a client may send before a request line (RFC 9112 §2.2).
pub fn leading_blank_lines(buf: &[u8]) -> usize {
    buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count()
}

/// Parses and checks a complete head (request line to blank line).
pub fn parse(bytes: &[u8]) -> Result<Head, Refusal> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refusal::new(400, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(431, format!("more than {MAX_HEADERS} header lines")))
        }
        Err(httparse::Error::Version) => return Err(version_refusal(bytes)),
        Err(e) => return Err(Refusal::new(400, format!("malformed request head: {e}"))),
    }
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default().to_owned();
    let version = if req.version == Some(0) { Version::Http10 } else { Version::Http11 };
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        if !is_field_value(h.value) {
            return Err(Refusal::new(400, format!("header {} has bytes that are not visible ASCII", h.name)));
        }
        // Checked just above: ASCII only.
        let value = String::from_utf8_lossy(h.value).trim_matches([' ', '\t']).to_owned();
        headers.push((h.name.to_owned(), value));
    }
    let mut head = Head {
        method,
        target,
        version,
        headers,
        framing: Framing::None,
        host: None,
        keep_alive: false,
        expect_continue: false,
    };
    check_target(&head.target)?;
    head.host = host_of(&head)?;
    head.framing = framing(&head)?;
    head.keep_alive = keep_alive(&head);
    head.expect_continue = expectation(&head)?;
    check_upgrade(&head)?;
    Ok(head)
}

/// `HTTP/2.0` and friends get 505; anything else that is not a version, 400
/// (also a line of more than three parts: `GET /a b HTTP/1.1` has a raw
/// space in its target, which is malformed, not a version question).
fn version_refusal(bytes: &[u8]) -> Refusal {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts = line.split(|&b| b == b' ').count();
    let proto = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    if parts > 3 {
        Refusal::new(400, "malformed request line: more than three parts (send a space in the target as %20)")
    } else if proto.starts_with(b"HTTP/") {
        Refusal::new(505, "only HTTP/1.0 and HTTP/1.1 are served here")
    } else {
        Refusal::new(400, "malformed request line")
    }
}

/// Origin form (`/path?query`) or absolute form (`http://host/path`); no
/// fragment, nothing but visible ASCII.
fn check_target(target: &str) -> Result<(), Refusal> {
    if target.is_empty() || !target.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(Refusal::new(400, "the request target has bytes that are not visible ASCII"));
    }
    if target.contains('#') {
        return Err(Refusal::new(400, "a request target cannot carry a fragment (#)"));
    }
    if target.starts_with('/') || absolute_authority(target).is_some() {
        Ok(())
    } else {
        Err(Refusal::new(400, "the request target must be a path (/...) or an http:// URL"))
    }
}

/// The authority of an absolute-form target (`http://host:port/p` → `host:port`).
fn absolute_authority(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// `host[:port]` as RFC 3986 allows it in a Host header.
fn valid_authority(a: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b);
    !a.is_empty() && a.bytes().all(ok) && !a.contains('@')
}

/// Exactly one Host for HTTP/1.1 (optional for 1.0); an absolute target
/// must name the same authority.
fn host_of(head: &Head) -> Result<Option<String>, Refusal> {
    let hosts: Vec<&str> = head.all("host").collect();
    if hosts.len() > 1 {
        return Err(Refusal::new(400, "more than one Host header"));
    }
    let host = hosts.first().copied();
    if let Some(h) = host {
        if !valid_authority(h) {
            return Err(Refusal::new(400, "the Host header is not a host name or address"));
        }
    }
    match (absolute_authority(&head.target), host) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
            Err(Refusal::new(400, "the absolute request target names another host than the Host header"))
        }
        (_, None) if head.version == Version::Http11 => Err(Refusal::new(400, "HTTP/1.1 requests need a Host header")),
        (Some(a), None) if !valid_authority(a) => Err(Refusal::new(400, "the request target's host is invalid")),
        (Some(a), None) => Ok(Some(a.to_owned())),
        (_, h) => Ok(h.map(str::to_owned)),
    }
}

/// The body's framing: one Content-Length of digits, or Transfer-Encoding
/// that is exactly `chunked`, never both.
fn framing(head: &Head) -> Result<Framing, Refusal> {
    let lengths: Vec<&str> = head.all("content-length").collect();
    let codings: Vec<&str> = head.all("transfer-encoding").collect();
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(Refusal::new(400, "both Content-Length and Transfer-Encoding"));
        }
        if head.version == Version::Http10 {
            return Err(Refusal::new(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        if codings.len() > 1 || !codings[0].eq_ignore_ascii_case("chunked") {
            return Err(Refusal::new(501, "the only Transfer-Encoding accepted is exactly \"chunked\""));
        }
        return Ok(Framing::Chunked);
    }
    match lengths.as_slice() {
        [] => Ok(Framing::None),
        [one] => match one.bytes().all(|b| b.is_ascii_digit()).then(|| one.parse::<u64>()) {
            Some(Ok(0)) => Ok(Framing::None),
            Some(Ok(n)) => Ok(Framing::Length(n)),
            _ => Err(Refusal::new(400, "Content-Length must be a number of bytes (digits only)")),
        },
        _ => Err(Refusal::new(400, "more than one Content-Length header")),
    }
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes
/// unless told `keep-alive` (ApacheBench `-k`, old proxies), as nginx does.
fn keep_alive(head: &Head) -> bool {
    let has = |token: &str| lists_token(head.all("connection"), token);
    match head.version {
        Version::Http11 => !has("close"),
        Version::Http10 => has("keep-alive") && !has("close"),
    }
}

/// An upgrade needs HTTP/1.1 and no body: bytes after its head belong to
/// the new protocol, and a body there would be read as such (smuggled).
fn check_upgrade(head: &Head) -> Result<(), Refusal> {
    if head.header("upgrade").is_none() {
        return Ok(());
    }
    if head.version == Version::Http10 {
        return Err(Refusal::new(400, "an upgrade needs HTTP/1.1"));
    }
    if head.framing != Framing::None {
        return Err(Refusal::new(400, "an upgrade request cannot carry a body"));
    }
    Ok(())
}

fn expectation(head: &Head) -> Result<bool, Refusal> {
    match head.header("expect") {
        None => Ok(false),
        // HTTP/1.0 clients know no 1xx answers (RFC 9110 §10.1.1).
        Some(e) if e.eq_ignore_ascii_case("100-continue") => {
            Ok(head.framing != Framing::None && head.version == Version::Http11)
        }
        Some(_) => Err(Refusal::new(417, "the only expectation supported is 100-continue")),
    }
}

/// A token character (RFC 9110 §5.6.2): the one token grammar of the
/// crate, here in the lowest HTTP layer so every layer above shares it.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `true` when `s` is an HTTP token (RFC 9110 §5.6.2): header names,
/// methods, a script's header names (the gateway's head parser)
/// and CGI variable names.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A refusal for bytes that cannot begin a request line, known before its
/// end arrives: the method is a token (RFC 9110 §5.6.2), so a first byte
/// like `0x16` (a TLS ClientHello sent to the plain-HTTP port) gets 400 at
/// once rather than a wait for a line end that never comes and a 408.
pub fn not_a_request_line(pending: &[u8]) -> Option<Refusal> {
    let method = pending.split(|&b| b == b' ').next().unwrap_or_default();
    let bad = method.iter().find(|&&b| !is_tchar(b))?;
    // Leading blank lines were skipped already; a line end right after the
    // method is left to the full parse (it says what is wrong).
    if matches!(bad, b'\r' | b'\n') {
        return None;
    }
    Some(match pending.first() {
        Some(0x16) => Refusal::new(
            400,
            "this looks like TLS: the port speaks plain HTTP (use http://, or start ws2http with --tls-cert FILE --tls-key FILE or --acme DOMAIN, or put TLS in a proxy in front)",
        ),
        _ => Refusal::new(400, "malformed request line: it must start with a method (GET, POST, ...)"),
    })
}

/// A request's head as the client sent it.
#[derive(Clone, Debug)]
pub struct RawHead {
    /// The request target (`/p?q` or `http://host/p?q`).
    pub target: String,
    /// The Content-Type header, if the client sent one.
    pub content_type: Option<String>,
    /// Every header line in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl RawHead {
    /// The head's target and headers, the headers moved out (they were
    /// copied into the request already).
    pub fn take_from(h: &mut Head) -> Self {
        RawHead {
            target: h.target.clone(),
            content_type: h.header("content-type").map(str::to_owned),
            headers: std::mem::take(&mut h.headers),
        }
    }

    /// Path and query of an origin-form (`/p?q`) or absolute-form
    /// (`http://host/p?q`) target.
    pub fn path_and_query(&self) -> (&str, Option<&str>) {
        let t = self.target.as_str();
        let t = match t.split_once("://") {
            Some((scheme, rest)) if !scheme.contains('/') => rest.find(['/', '?']).map_or("/", |i| &rest[i..]),
            _ => t,
        };
        let (p, q) = match t.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (t, None),
        };
        (if p.is_empty() { "/" } else { p }, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Result<Head, Refusal> {
        parse(s.as_bytes())
    }

    fn status(s: &str) -> u16 {
        head(s).err().map_or(0, |r| r.status)
    }

    #[test]
    fn path_and_query_of_targets() {
        let t = |s: &str| RawHead { target: s.into(), content_type: None, headers: Vec::new() };
        assert_eq!(t("/a/../b?x=1").path_and_query(), ("/a/../b", Some("x=1")));
        assert_eq!(t("/a").path_and_query(), ("/a", None));
        assert_eq!(t("http://h:1/p/q?z").path_and_query(), ("/p/q", Some("z")));
        assert_eq!(t("http://h").path_and_query(), ("/", None));
        assert_eq!(t("http://h?q").path_and_query(), ("/", Some("q")));
    }

    #[test]
    fn tokens_are_the_rfc_9110_characters() {
        assert!(is_token(b"!#$%&'*+-.^_`|~09azAZ"));
        for not in [&b""[..], b"a b", b"a:b", b"a(b)", b"a\"b", b"a,b", b"a/b", b"\xc3\xa9"] {
            assert!(!is_token(not), "{not:?}");
        }
    }

    #[test]
    fn finds_the_end_of_a_head_incrementally() {
        let h = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        assert_eq!(find_end(h, 0), Some(h.len() - 4));
        for from in 0..h.len() - 4 {
            assert_eq!(find_end(h, from), Some(h.len() - 4), "from {from}");
        }
        assert_eq!(find_end(b"GET / HTTP/1.1\nHost: a\n\nX", 0), Some(24));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(leading_blank_lines(b"\r\n\r\nGET"), 4);
    }

    #[test]
    fn plain_requests_parse() {
        let h = head("POST /a/../b?x=1 HTTP/1.1\r\nHost: h:1\r\nX-A:  v \r\nContent-Length: 3\r\n\r\n").expect("valid");
        assert_eq!((h.method.as_str(), h.target.as_str()), ("POST", "/a/../b?x=1"));
        assert_eq!(h.framing, Framing::Length(3));
        assert_eq!(h.header("x-a"), Some("v"));
        assert_eq!(h.host.as_deref(), Some("h:1"));
        assert!(h.keep_alive && !h.expect_continue);
        let h = head("GET / HTTP/1.0\r\n\r\n").expect("valid");
        assert!(!h.keep_alive && h.host.is_none() && h.version == Version::Http10);
        let h = head("GET http://h:1/p HTTP/1.1\r\nHost: H:1\r\nTransfer-Encoding: Chunked\r\n\r\n").expect("valid");
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n").expect("valid");
        assert!(h.expect_continue);
        assert!(!head("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n").expect("valid").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").expect("valid").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").expect("valid").keep_alive);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let base = "POST / HTTP/1.1\r\nHost: h\r\n";
        assert_eq!(status(&format!("{base}Content-Length: 3\r\nContent-Length: 3\r\n\r\n")), 400);
        assert_eq!(status(&format!("{base}Content-Length: 3\r\nContent-Length: 4\r\n\r\n")), 400);
        assert_eq!(status(&format!("{base}Content-Length: +3\r\n\r\n")), 400);
        assert_eq!(status(&format!("{base}Content-Length: 3 4\r\n\r\n")), 400);
        assert_eq!(status(&format!("{base}Content-Length: -1\r\n\r\n")), 400);
        assert_eq!(status(&format!("{base}Content-Length: 99999999999999999999999\r\n\r\n")), 400);
        assert_eq!(status(&format!("{base}Transfer-Encoding: gzip, chunked\r\n\r\n")), 501);
        assert_eq!(status(&format!("{base}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n")), 501);
        assert_eq!(status(&format!("{base}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")), 400);
        assert_eq!(status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(status(&format!("{base}Content-Length : 3\r\n\r\n")), 400);
    }

    #[test]
    fn bad_heads_are_refused_with_a_fitting_status() {
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400, "no Host");
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("GET /x fake HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET /x fake HTTP/2.0\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / FOO/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET a HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET /#x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX: caf\u{e9}\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"), 417);
        let up = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
        assert_eq!(status(&format!("{up}Content-Length: 4\r\n\r\n")), 400);
        assert_eq!(status(&format!("{up}Transfer-Encoding: chunked\r\n\r\n")), 400);
        assert_eq!(status(&format!("{}\r\n", up.replace("HTTP/1.1", "HTTP/1.0"))), 400);
        assert!(head(&format!("{up}\r\n")).is_ok());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")), 431);
    }

    #[test]
    fn bytes_that_cannot_start_a_request_line_are_refused_early() {
        assert_eq!(not_a_request_line(b"\x16\x03\x01\x00\xa5").map(|r| r.status), Some(400));
        assert_eq!(not_a_request_line(b"GE{T / HT").map(|r| r.status), Some(400));
        for partial in [&b""[..], b"G", b"GET", b"GET / HTTP/1.1\r\nHost", b"M-SEARCH *", b"GET\r\n"] {
            assert_eq!(not_a_request_line(partial), None, "{partial:?}");
        }
    }
}
