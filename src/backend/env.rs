//! Builds the clean environment a script runs with: RFC 3875 §4.1 variables,
//! one HTTP_* per request header, and the WS_* variables of the event.
//!
//! Nothing from the server's own environment leaks in except PATH and the
//! names the operator passed with `--pass-env`.
//!
//! Started as `websocketd`, a WebSocket process gets websocketd 0.4.1's
//! environment instead ([`websocketd_vars`]), so its scripts read the
//! names and values they always did.

use std::path::PathBuf;

use crate::event::{ConnInfo, Event, EventKind, RequestInfo, Target};
use crate::stackbuf::{StackStr, StackVec};

/// The parts of the environment fixed at start-up.
#[derive(Clone, Debug, Default)]
pub struct EnvSettings {
    /// `http://127.0.0.1:PORT` of the control API.
    pub api_url: String,
    pub api_token: String,
    /// PATH and `--pass-env` names with their values, read once at start.
    pub inherited: Vec<(String, String)>,
    /// Directory PATH_INFO is translated against (PATH_TRANSLATED).
    pub document_root: PathBuf,
    /// ws2http's variables, or websocketd's.
    pub flavour: crate::config::CgiFlavour,
    /// The public listeners speak TLS: `HTTPS=on`, `REQUEST_SCHEME=https`.
    pub https: bool,
}

pub type Env = Vec<(String, String)>;

/// Where variables go: a list of pairs (FastCGI parameters, HTTP headers,
/// tests) or, for a spawned script, straight into its `envp` block
/// ([`super::spawn::child::EnvBlock`]) without a `String` per variable.
pub trait EnvSink {
    fn set(&mut self, key: &str, value: &str);
}

impl EnvSink for Env {
    fn set(&mut self, key: &str, value: &str) {
        self.push((key.to_owned(), value.to_owned()));
    }
}

/// `true` for a header name that becomes an `HTTP_*` variable: a token
/// without `_`.
fn usable(name: &str) -> bool {
    crate::http1::head::is_token(name.as_bytes()) && !name.contains('_')
}

/// The `HTTP_*` variables of a request's headers, in the order of each
/// name's first occurrence: every usable name once, its repeated values
/// joined as HTTP allows (`, `, or `; ` for cookies), httpoxy names left out.
///
/// Two names are the same variable when they are equal once uppercased with
/// `-` → `_` (a name with `_` is not usable: it would become the same
/// variable as its `-` twin, which a proxy in front may have set, so such
/// headers are dropped, as Apache and nginx do). Each name is normalised once
/// into one buffer and the names are grouped by sorting, O(h log h): the
/// pairwise comparison this replaces was quadratic in the header count and
/// re-checked every name's token syntax for every pair, ~25,000 instructions
/// per event for a browser's headers.
fn header_vars(env: &mut impl EnvSink, req: &RequestInfo) {
    // On this call's stack (a browser's ~15 headers fit; more take the heap
    // for this event only): no allocation per event, and no buffer kept per
    // thread (docs/bench-notes/cpu20.md).
    let mut keys: StackStr<512> = StackStr::new();
    let mut vars: StackVec<(usize, usize, usize), 32> = StackVec::new();
    let mut runs: StackVec<(usize, usize, usize), 32> = StackVec::new();
    let mut joined: StackStr<256> = StackStr::new();
    // Keys, each `HTTP_<NAME>`, back to back; (start, end, header index) each.
    for (i, (name, _)) in req.headers().enumerate() {
        if usable(name) {
            let start = keys.len();
            keys.push_str("HTTP_");
            for b in name.bytes() {
                keys.push_ascii(if b == b'-' { b'_' } else { b.to_ascii_uppercase() });
            }
            vars.push((start, keys.len(), i));
        }
    }
    let keys = keys.as_str();
    let key = |v: &(usize, usize, usize)| &keys[v.0..v.1];
    let vars = vars.as_mut_slice();
    // Stable: equal keys stay in header order, so a run's first is the first
    // occurrence and its values join in the order they came.
    vars.sort_by(|a, b| key(a).cmp(key(b)));
    // (first header index, run start, run end) per variable, then in the
    // order of first occurrences.
    let mut start = 0;
    for end in 1..=vars.len() {
        if end == vars.len() || key(&vars[end]) != key(&vars[start]) {
            runs.push((vars[start].2, start, end));
            start = end;
        }
    }
    runs.as_mut_slice().sort_unstable_by_key(|r| r.0);
    for &(first, start, end) in runs.as_slice() {
        let k = key(&vars[start]);
        // httpoxy: a client must never be able to set a proxy for the script.
        if k == "HTTP_PROXY" || k == "HTTP_CONTENT_LENGTH" || k == "HTTP_CONTENT_TYPE" {
            continue;
        }
        if end - start == 1 {
            env.set(k, req.header(first).1);
            continue;
        }
        joined.clear();
        for (n, v) in vars[start..end].iter().enumerate() {
            if n > 0 {
                joined.push_str(if k == "HTTP_COOKIE" { "; " } else { ", " });
            }
            joined.push_str(req.header(v.2).1);
        }
        env.set(k, joined.as_str());
    }
}

/// `n` in decimal, written into `buf` (no `String` per event).
fn decimal(n: usize, buf: &mut [u8; 20]) -> &str {
    use std::io::Write as _;
    let mut rest = &mut buf[..];
    // 20 digits hold any usize.
    let _ = write!(rest, "{n}");
    let len = 20 - rest.len();
    std::str::from_utf8(&buf[..len]).unwrap_or("0")
}

/// PATH_INFO mapped onto the document root (RFC 3875 4.1.6), both flavours.
fn path_translated(s: &EnvSettings, path_info: &str) -> String {
    s.document_root.join(path_info.trim_start_matches('/')).to_string_lossy().into_owned()
}

/// Variables shared by WebSocket events and classic CGI requests.
pub fn request_env(env: &mut impl EnvSink, s: &EnvSettings, req: &RequestInfo, target: &Target, method: &str) {
    env.set("GATEWAY_INTERFACE", "CGI/1.1");
    env.set("SERVER_SOFTWARE", concat!("ws2http/", env!("CARGO_PKG_VERSION")));
    env.set("SERVER_NAME", req.server_name());
    env.set("SERVER_PORT", req.server_port());
    env.set("SERVER_PROTOCOL", "HTTP/1.1");
    // Apache's and nginx's names for "the client came over TLS".
    env.set("REQUEST_SCHEME", if s.https { "https" } else { "http" });
    if s.https {
        env.set("HTTPS", "on");
    }
    env.set("REQUEST_METHOD", method);
    env.set("SCRIPT_NAME", &target.script_name);
    env.set("SCRIPT_FILENAME", &target.filename.to_string_lossy());
    env.set("PATH_INFO", &target.path_info);
    if !target.path_info.is_empty() {
        env.set("PATH_TRANSLATED", &path_translated(s, &target.path_info));
    }
    env.set("QUERY_STRING", req.query());
    env.set("REQUEST_URI", req.uri());
    env.set("REMOTE_ADDR", req.remote_addr());
    env.set("REMOTE_PORT", req.remote_port());
    env.set("REDIRECT_STATUS", "200");
    header_vars(env, req);
    for (k, v) in &s.inherited {
        env.set(k, v);
    }
}

/// The whole environment for a plain HTTP request (classic CGI, spawned or
/// through FastCGI), into any sink: the request variables, the body's length
/// and type when the client sent them, and the control API. WS_* variables
/// belong to WebSocket events, so a page finds the API as
/// WS2HTTP_API_URL/TOKEN.
pub fn page_env(
    env: &mut impl EnvSink,
    s: &EnvSettings,
    req: &RequestInfo,
    target: &Target,
    length: Option<u64>,
    content_type: Option<&str>,
) {
    request_env(env, s, req, target, req.method());
    if let Some(len) = length.filter(|&l| l > 0) {
        env.set("CONTENT_LENGTH", &len.to_string());
    }
    if let Some(ct) = content_type {
        env.set("CONTENT_TYPE", ct);
    }
    env.set("WS2HTTP_API_URL", &s.api_url);
    env.set("WS2HTTP_API_TOKEN", &s.api_token);
}

/// The whole environment for one WebSocket event, as a list.
pub fn event_env(s: &EnvSettings, ev: &Event) -> Env {
    let mut env = Vec::with_capacity(48);
    event_vars(&mut env, s, ev);
    env
}

/// The whole environment for one WebSocket event, into any sink:
/// [`conn_vars`], then [`event_own_vars`].
pub fn event_vars(env: &mut impl EnvSink, s: &EnvSettings, ev: &Event) {
    conn_vars(env, s, &ev.conn, matches!(ev.kind, EventKind::Open));
    event_own_vars(env, s, ev);
}

/// The first part of an event's environment: what depends only on the
/// settings, the connection and whether the event is its open event (the
/// method: `GET`, else `POST`), the same for all its other events, so a
/// caller may keep it for the next one (`Spawn::exchange`).
pub fn conn_vars(env: &mut impl EnvSink, s: &EnvSettings, conn: &ConnInfo, open: bool) {
    if s.flavour == crate::config::CgiFlavour::Websocketd {
        return websocketd_vars(env, s, &conn.request, &conn.target, conn.id.as_str());
    }
    request_env(env, s, &conn.request, &conn.target, if open { "GET" } else { "POST" });
}

/// The rest of an event's environment, after [`conn_vars`]: the event's own.
pub fn event_own_vars(env: &mut impl EnvSink, s: &EnvSettings, ev: &Event) {
    if s.flavour == crate::config::CgiFlavour::Websocketd {
        return;
    }
    env.set("WS_EVENT", ev.kind.name());
    env.set("WS_CONNECTION_ID", ev.conn.id.as_str());
    match &ev.kind {
        EventKind::Open => {}
        EventKind::Message { payload, binary } => {
            env.set("CONTENT_LENGTH", decimal(payload.len(), &mut [0; 20]));
            let (ct, ty) =
                if *binary { ("application/octet-stream", "binary") } else { ("text/plain; charset=utf-8", "text") };
            env.set("CONTENT_TYPE", ct);
            env.set("WS_MESSAGE_TYPE", ty);
        }
        EventKind::Close { code, reason, cause } => {
            env.set("CONTENT_LENGTH", "0");
            env.set("WS_CLOSE_CODE", &code.to_string());
            env.set("WS_CLOSE_REASON", reason);
            env.set("WS_CLOSE_CAUSE", cause.as_str());
        }
        EventKind::Resume { count, remote_addr } => {
            env.set("CONTENT_LENGTH", "0");
            env.set("WS_RESUME_COUNT", &count.to_string());
            env.set("WS_RESUME_REMOTE_ADDR", remote_addr);
        }
    }
    env.set("WS_ROOMS", &ev.rooms.join(" "));
    let mut key = String::new();
    for (k, v) in &ev.meta {
        key.clear();
        key.push_str("WS_META_");
        key.push_str(k);
        env.set(&key, v);
    }
    env.set("WS_API_URL", &s.api_url);
    env.set("WS_API_TOKEN", &s.api_token);
}

/// websocketd 0.4.1's environment for a connection's process: its names
/// and values (`GATEWAY_INTERFACE=websocketd-CGI/0.1`, `UNIQUE_ID`,
/// `REMOTE_HOST`, the empty AUTH_TYPE/CONTENT_*/REMOTE_IDENT/REMOTE_USER it
/// sets so nothing leaks from the parent, `SCRIPT_NAME=/` and the whole
/// path in PATH_INFO for a COMMAND), only the `--passenv` variables of
/// ours, and the control API (`WS_CONNECTION_ID`, `WS_API_URL`,
/// `WS_API_TOKEN`, names websocketd scripts never used). Fixed, as
/// README.md "Coming from websocketd" says: `HTTP_HOST` is set (websocketd drops
/// the Host header), `PATH_TRANSLATED` is PATH_INFO translated against the
/// script directory (websocketd gives the URL path), and the header
/// variables follow ws2http's rules (no `HTTP_PROXY`: httpoxy).
pub fn websocketd_vars(env: &mut impl EnvSink, s: &EnvSettings, req: &RequestInfo, target: &Target, id: &str) {
    env.set("SERVER_SOFTWARE", concat!("ws2http/", env!("CARGO_PKG_VERSION"), " (websocketd 0.4.1 compatible)"));
    for (k, v) in &s.inherited {
        env.set(k, v);
    }
    env.set("REMOTE_ADDR", req.remote_addr());
    env.set("REMOTE_HOST", req.remote_addr());
    env.set("SERVER_NAME", req.server_name());
    env.set("SERVER_PORT", req.server_port());
    env.set("SERVER_PROTOCOL", "HTTP/1.1");
    env.set("GATEWAY_INTERFACE", "websocketd-CGI/0.1");
    // As websocketd sets it under --ssl.
    if s.https {
        env.set("HTTPS", "on");
    }
    env.set("REQUEST_METHOD", "GET");
    // A COMMAND handles every path: websocketd's SCRIPT_NAME is `/` then.
    let single = target.script_name.is_empty();
    env.set("SCRIPT_NAME", if single { "/" } else { &target.script_name });
    let path_info = if single && target.path_info.is_empty() { "/" } else { &target.path_info };
    env.set("PATH_INFO", path_info);
    let translated = match path_info {
        "" => String::new(),
        p => path_translated(s, p),
    };
    env.set("PATH_TRANSLATED", &translated);
    env.set("QUERY_STRING", req.query());
    for empty in ["AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "REMOTE_IDENT", "REMOTE_USER"] {
        env.set(empty, "");
    }
    env.set("UNIQUE_ID", id);
    env.set("REMOTE_PORT", req.remote_port());
    env.set("REQUEST_URI", req.uri());
    header_vars(env, req);
    env.set("WS_CONNECTION_ID", id);
    env.set("WS_API_URL", &s.api_url);
    env.set("WS_API_TOKEN", &s.api_token);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::CloseCause;
    use crate::event::ConnInfo;
    use crate::id::ConnId;
    use std::sync::Arc;

    /// The request line and addresses of a plain `GET /chat.sh`.
    fn plain_fields() -> crate::event::RequestFields<'static> {
        crate::event::RequestFields {
            method: "GET",
            uri: "/chat.sh",
            query: "",
            remote_addr: "127.0.0.1",
            remote_port: "5000",
            server_name: "example.org",
            server_port: "8080",
        }
    }

    fn event(kind: EventKind) -> Event {
        let fields = crate::event::RequestFields {
            method: "GET",
            uri: "/chat.sh/lobby?nick=a",
            query: "nick=a",
            remote_addr: "127.0.0.1",
            remote_port: "5000",
            server_name: "example.org",
            server_port: "8080",
        };
        let headers = [
            ("Host", "example.org:8080"),
            ("X-Multi", "1"),
            ("x-multi", "2"),
            ("Proxy", "http://evil"),
            ("Bad Name", "x"),
            ("X_Forwarded_For", "forged"),
            ("X-Forwarded-For", "10.0.0.1"),
        ];
        let request = RequestInfo::new(fields, headers);
        let target = Target {
            filename: "/srv/cgi/chat.sh".into(),
            script_name: "/chat.sh".into(),
            path_info: "/lobby".into(),
            interpreter: None,
        };
        let conn = Arc::new(ConnInfo { id: ConnId::parse("abc").expect("valid id"), target, request });
        Event { kind, conn, rooms: vec!["a".into(), "b".into()], meta: vec![("nick".into(), "bob".into())] }
    }

    fn get<'a>(env: &'a Env, k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn message_event_environment() {
        let s = EnvSettings {
            api_url: "http://127.0.0.1:1".into(),
            document_root: "/srv/cgi".into(),
            ..Default::default()
        };
        let env = event_env(&s, &event(EventKind::Message { payload: "hey".into(), binary: false }));
        assert_eq!(get(&env, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(get(&env, "CONTENT_LENGTH"), Some("3"));
        assert_eq!(get(&env, "WS_MESSAGE_TYPE"), Some("text"));
        assert_eq!(get(&env, "HTTP_X_MULTI"), Some("1, 2"));
        assert_eq!(get(&env, "HTTP_PROXY"), None);
        assert_eq!(get(&env, "HTTP_BAD NAME"), None);
        assert_eq!(get(&env, "HTTP_X_FORWARDED_FOR"), Some("10.0.0.1"), "a name with _ never merges with its - twin");
        assert_eq!(get(&env, "PATH_TRANSLATED"), Some("/srv/cgi/lobby"));
        assert_eq!(get(&env, "WS_ROOMS"), Some("a b"));
        assert_eq!(get(&env, "WS_META_nick"), Some("bob"));
        assert_eq!(get(&env, "WS_API_TOKEN"), Some(""));
        assert_eq!(get(&env, "WS_CLOSE_CODE"), None);
    }

    /// An event's header variables are built in buffers on the stack
    /// ([`header_vars`]): an event never sees the headers of the one before.
    #[test]
    fn an_event_gets_only_its_own_headers_on_a_thread_that_ran_another() {
        let s = EnvSettings::default();
        let first = event_env(&s, &event(EventKind::Open));
        assert_eq!(get(&first, "HTTP_X_MULTI"), Some("1, 2"));
        let mut ev = event(EventKind::Message { payload: "a longer payload".into(), binary: true });
        let conn = &ev.conn;
        let fields = plain_fields();
        let request = RequestInfo::new(fields, [("Cookie", "a=1"), ("cookie", "b=2")]);
        ev.conn = Arc::new(ConnInfo { id: conn.id.clone(), target: conn.target.clone(), request });
        let second = event_env(&s, &ev);
        let http: Vec<_> = second.iter().filter(|(k, _)| k.starts_with("HTTP_")).collect();
        assert_eq!(http, [&("HTTP_COOKIE".to_owned(), "a=1; b=2".to_owned())]);
        assert_eq!(get(&second, "CONTENT_LENGTH"), Some("16"));
    }

    /// More headers, longer names and longer joined values than
    /// [`header_vars`]'s stack buffers hold: the heap fallback gives the
    /// same variables, in the same order.
    #[test]
    fn headers_beyond_the_stack_buffers_become_the_same_variables() {
        let mut ev = event(EventKind::Open);
        let fields = plain_fields();
        let names: Vec<String> = (0..40).map(|i| format!("X-Long-Header-Name-Number-{i:02}")).collect();
        let long = "v".repeat(300);
        let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        headers.push(("x-long-header-name-number-07", &long));
        let request = RequestInfo::new(fields, headers);
        ev.conn = Arc::new(ConnInfo { id: ev.conn.id.clone(), target: ev.conn.target.clone(), request });
        let env = event_env(&EnvSettings::default(), &ev);
        let http: Vec<_> = env.iter().filter(|(k, _)| k.starts_with("HTTP_")).collect();
        assert_eq!(http.len(), 40);
        for (i, (k, v)) in http.iter().enumerate() {
            assert_eq!(k, &format!("HTTP_X_LONG_HEADER_NAME_NUMBER_{i:02}"));
            assert_eq!(v, &if i == 7 { format!("1, {long}") } else { "1".to_owned() });
        }
    }

    #[test]
    fn the_scheme_follows_the_listener() {
        let plain = event_env(&EnvSettings::default(), &event(EventKind::Open));
        assert_eq!((get(&plain, "REQUEST_SCHEME"), get(&plain, "HTTPS")), (Some("http"), None));
        let s = EnvSettings { https: true, ..Default::default() };
        let tls = event_env(&s, &event(EventKind::Open));
        assert_eq!((get(&tls, "REQUEST_SCHEME"), get(&tls, "HTTPS")), (Some("https"), Some("on")));
        let wsd = EnvSettings { flavour: crate::config::CgiFlavour::Websocketd, ..s };
        let tls = event_env(&wsd, &event(EventKind::Open));
        assert_eq!((get(&tls, "REQUEST_SCHEME"), get(&tls, "HTTPS")), (None, Some("on")), "as websocketd --ssl");
    }

    #[test]
    fn page_requests_get_body_variables_and_the_api_but_no_ws_variables() {
        let s = EnvSettings { api_url: "http://127.0.0.1:1".into(), api_token: "t".into(), ..Default::default() };
        let ev = event(EventKind::Open);
        let r = &ev.conn.request;
        let req = r.with_request_line("POST", r.uri(), r.query());
        let mut env = Env::new();
        page_env(&mut env, &s, &req, &ev.conn.target, Some(4), Some("text/plain"));
        assert_eq!(get(&env, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(get(&env, "CONTENT_LENGTH"), Some("4"));
        assert_eq!(get(&env, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&env, "WS2HTTP_API_URL"), Some("http://127.0.0.1:1"));
        assert_eq!(get(&env, "WS2HTTP_API_TOKEN"), Some("t"));
        assert!(env.iter().all(|(k, _)| !k.starts_with("WS_")));
        let mut env = Env::new();
        page_env(&mut env, &s, &req, &ev.conn.target, Some(0), None);
        assert_eq!((get(&env, "CONTENT_LENGTH"), get(&env, "CONTENT_TYPE")), (None, None));
    }

    #[test]
    fn websocketd_flavour_has_its_names_and_values_with_its_bugs_fixed() {
        let s = EnvSettings {
            api_url: "http://127.0.0.1:1".into(),
            document_root: "/srv/cgi".into(),
            inherited: vec![("PATH".into(), "/bin".into())],
            flavour: crate::config::CgiFlavour::Websocketd,
            ..Default::default()
        };
        let env = event_env(&s, &event(EventKind::Open));
        for (k, v) in [
            ("GATEWAY_INTERFACE", "websocketd-CGI/0.1"),
            ("SCRIPT_NAME", "/chat.sh"),
            ("PATH_INFO", "/lobby"),
            ("PATH_TRANSLATED", "/srv/cgi/lobby"),
            ("HTTP_HOST", "example.org:8080"),
            ("REMOTE_HOST", "127.0.0.1"),
            ("UNIQUE_ID", "abc"),
            ("WS_CONNECTION_ID", "abc"),
            ("AUTH_TYPE", ""),
            ("REQUEST_METHOD", "GET"),
            ("PATH", "/bin"),
        ] {
            assert_eq!(get(&env, k), Some(v), "{k}");
        }
        for absent in ["HTTP_PROXY", "WS_EVENT", "SCRIPT_FILENAME", "REDIRECT_STATUS"] {
            assert_eq!(get(&env, absent), None, "{absent}");
        }
        // A COMMAND: SCRIPT_NAME `/`, the whole path in PATH_INFO.
        let ev = event(EventKind::Open);
        let mut target = ev.conn.target.clone();
        target.script_name = String::new();
        target.path_info = String::new();
        let mut env = Env::new();
        websocketd_vars(&mut env, &s, &ev.conn.request, &target, "abc");
        assert_eq!((get(&env, "SCRIPT_NAME"), get(&env, "PATH_INFO")), (Some("/"), Some("/")));
    }

    #[test]
    fn open_and_close_events() {
        let s = EnvSettings::default();
        let env = event_env(&s, &event(EventKind::Open));
        assert_eq!(get(&env, "REQUEST_METHOD"), Some("GET"));
        assert_eq!(get(&env, "CONTENT_LENGTH"), None);
        let env =
            event_env(&s, &event(EventKind::Close { code: 4001, reason: "bye".into(), cause: CloseCause::Client }));
        assert_eq!(get(&env, "WS_CLOSE_CODE"), Some("4001"));
        assert_eq!(get(&env, "WS_CLOSE_REASON"), Some("bye"));
        assert_eq!(get(&env, "WS_CLOSE_CAUSE"), Some("client"));
        assert_eq!(get(&env, "WS_EVENT"), Some("close"));
    }

    /// The quadratic de-duplication `header_vars` replaced, kept as the
    /// reference it must match.
    fn reference_header_vars(headers: &[(String, String)]) -> Env {
        let same = |a: &str, b: &str| {
            let norm = |c: u8| if c == b'-' { b'_' } else { c.to_ascii_uppercase() };
            a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
        };
        let mut env = Env::new();
        for (i, (name, value)) in headers.iter().enumerate() {
            if !usable(name) || headers[..i].iter().any(|(n, _)| usable(n) && same(n, name)) {
                continue;
            }
            let key: String = "HTTP_"
                .chars()
                .chain(name.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }))
                .collect();
            if key == "HTTP_PROXY" || key == "HTTP_CONTENT_LENGTH" || key == "HTTP_CONTENT_TYPE" {
                continue;
            }
            let mut joined = value.clone();
            for (_, v) in headers[i + 1..].iter().filter(|(n, _)| usable(n) && same(n, name)) {
                joined.push_str(if key == "HTTP_COOKIE" { "; " } else { ", " });
                joined.push_str(v);
            }
            env.push((key, joined));
        }
        env
    }

    #[test]
    fn header_variables_match_the_pairwise_rules_on_every_mix() {
        let names = [
            "Host",
            "host",
            "X-A",
            "x-a",
            "X_A",
            "X-a",
            "Cookie",
            "cookie",
            "Proxy",
            "PROXY",
            "Content-Type",
            "content-length",
            "Bad Name",
            "",
            "A",
            "a",
            "A-",
            "-A",
            "Accept",
            "X-A-B",
            "X-AB",
        ];
        // A deterministic walk over lists of up to 12 headers drawn from
        // `names` (xorshift), covering repeats, case, `_` twins and httpoxy.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..5000 {
            let len = (next() % 13) as usize;
            let headers: Vec<(String, String)> = (0..len)
                .map(|j| (names[(next() % names.len() as u64) as usize].to_owned(), format!("v{case}.{j}")))
                .collect();
            let mut env = Env::new();
            let req = RequestInfo::new(Default::default(), headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            header_vars(&mut env, &req);
            assert_eq!(env, reference_header_vars(&headers), "headers {headers:?}");
        }
    }
}
