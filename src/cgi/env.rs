//! Builds the clean environment a script runs with: RFC 3875 §4.1 variables,
//! one HTTP_* per request header, and the WS_* variables of the event.
//!
//! Nothing from the server's own environment leaks in except PATH and the
//! names the operator passed with `--pass-env`.

use std::path::PathBuf;

use crate::event::{Event, EventKind, RequestInfo, Target};

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
}

pub type Env = Vec<(String, String)>;

fn set(env: &mut Env, k: &str, v: impl Into<String>) {
    env.push((k.to_owned(), v.into()));
}

/// `true` when `name` is an HTTP token (RFC 9110 §5.6.2).
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Variables shared by WebSocket events and classic CGI requests.
pub fn request_env(env: &mut Env, s: &EnvSettings, req: &RequestInfo, target: &Target, method: &str) {
    set(env, "GATEWAY_INTERFACE", "CGI/1.1");
    set(env, "SERVER_SOFTWARE", concat!("ws2http/", env!("CARGO_PKG_VERSION")));
    set(env, "SERVER_NAME", req.server_name.as_str());
    set(env, "SERVER_PORT", req.server_port.as_str());
    set(env, "SERVER_PROTOCOL", "HTTP/1.1");
    set(env, "REQUEST_METHOD", method);
    set(env, "SCRIPT_NAME", target.script_name.as_str());
    set(env, "SCRIPT_FILENAME", target.filename.to_string_lossy());
    set(env, "PATH_INFO", target.path_info.as_str());
    if !target.path_info.is_empty() {
        let translated = s.document_root.join(target.path_info.trim_start_matches('/'));
        set(env, "PATH_TRANSLATED", translated.to_string_lossy());
    }
    set(env, "QUERY_STRING", req.query.as_str());
    set(env, "REQUEST_URI", req.uri.as_str());
    set(env, "REMOTE_ADDR", req.remote_addr.as_str());
    set(env, "REMOTE_PORT", req.remote_port.as_str());
    set(env, "REDIRECT_STATUS", "200");
    // One HTTP_<NAME> per header; repeated headers joined as HTTP allows.
    let mut http: Vec<(String, String)> = Vec::new();
    for (name, value) in &req.headers {
        if !is_token(name) {
            continue;
        }
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        // httpoxy: a client must never be able to set a proxy for the script.
        if key == "HTTP_PROXY" || key == "HTTP_CONTENT_LENGTH" || key == "HTTP_CONTENT_TYPE" {
            continue;
        }
        match http.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.push_str(if key == "HTTP_COOKIE" { "; " } else { ", " });
                v.push_str(value);
            }
            None => http.push((key, value.clone())),
        }
    }
    env.extend(http);
    env.extend(s.inherited.iter().cloned());
}

/// The whole environment for a plain HTTP request (classic CGI, spawned or
/// through FastCGI): the request variables, the body's length and type when
/// the client sent them, and the control API. WS_* variables belong to
/// WebSocket events, so a page finds the API as WS2HTTP_API_URL/TOKEN.
pub fn page_env(
    s: &EnvSettings,
    req: &RequestInfo,
    target: &Target,
    length: Option<u64>,
    content_type: Option<&str>,
) -> Env {
    let mut env = Vec::with_capacity(40);
    request_env(&mut env, s, req, target, &req.method);
    if let Some(len) = length.filter(|&l| l > 0) {
        set(&mut env, "CONTENT_LENGTH", len.to_string());
    }
    if let Some(ct) = content_type {
        set(&mut env, "CONTENT_TYPE", ct);
    }
    set(&mut env, "WS2HTTP_API_URL", s.api_url.as_str());
    set(&mut env, "WS2HTTP_API_TOKEN", s.api_token.as_str());
    env
}

/// The whole environment for one WebSocket event.
pub fn event_env(s: &EnvSettings, ev: &Event) -> Env {
    let mut env = Vec::with_capacity(48);
    let method = if ev.kind == EventKind::Open { "GET" } else { "POST" };
    request_env(&mut env, s, &ev.conn.request, &ev.conn.target, method);
    set(&mut env, "WS_EVENT", ev.kind.name());
    set(&mut env, "WS_CONNECTION_ID", ev.conn.id.as_str());
    match &ev.kind {
        EventKind::Open => {}
        EventKind::Message { payload, binary } => {
            set(&mut env, "CONTENT_LENGTH", payload.len().to_string());
            let (ct, ty) =
                if *binary { ("application/octet-stream", "binary") } else { ("text/plain; charset=utf-8", "text") };
            set(&mut env, "CONTENT_TYPE", ct);
            set(&mut env, "WS_MESSAGE_TYPE", ty);
        }
        EventKind::Close { code, reason, cause } => {
            set(&mut env, "CONTENT_LENGTH", "0");
            set(&mut env, "WS_CLOSE_CODE", code.to_string());
            set(&mut env, "WS_CLOSE_REASON", reason.as_str());
            set(&mut env, "WS_CLOSE_CAUSE", cause.as_str());
        }
    }
    set(&mut env, "WS_ROOMS", ev.rooms.join(" "));
    for (k, v) in &ev.meta {
        env.push((format!("WS_META_{k}"), v.clone()));
    }
    set(&mut env, "WS_API_URL", s.api_url.as_str());
    set(&mut env, "WS_API_TOKEN", s.api_token.as_str());
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::CloseCause;
    use crate::event::ConnInfo;
    use crate::id::ConnId;
    use std::sync::Arc;

    fn event(kind: EventKind) -> Event {
        let request = RequestInfo {
            method: "GET".into(),
            uri: "/chat.sh/lobby?nick=a".into(),
            query: "nick=a".into(),
            headers: vec![
                ("Host".into(), "example.org:8080".into()),
                ("X-Multi".into(), "1".into()),
                ("x-multi".into(), "2".into()),
                ("Proxy".into(), "http://evil".into()),
                ("Bad Name".into(), "x".into()),
            ],
            remote_addr: "127.0.0.1".into(),
            remote_port: "5000".into(),
            server_name: "example.org".into(),
            server_port: "8080".into(),
        };
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
        assert_eq!(get(&env, "PATH_TRANSLATED"), Some("/srv/cgi/lobby"));
        assert_eq!(get(&env, "WS_ROOMS"), Some("a b"));
        assert_eq!(get(&env, "WS_META_nick"), Some("bob"));
        assert_eq!(get(&env, "WS_API_TOKEN"), Some(""));
        assert_eq!(get(&env, "WS_CLOSE_CODE"), None);
    }

    #[test]
    fn page_requests_get_body_variables_and_the_api_but_no_ws_variables() {
        let s = EnvSettings { api_url: "http://127.0.0.1:1".into(), api_token: "t".into(), ..Default::default() };
        let ev = event(EventKind::Open);
        let mut req = ev.conn.request.clone();
        req.method = "POST".into();
        let env = page_env(&s, &req, &ev.conn.target, Some(4), Some("text/plain"));
        assert_eq!(get(&env, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(get(&env, "CONTENT_LENGTH"), Some("4"));
        assert_eq!(get(&env, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&env, "WS2HTTP_API_URL"), Some("http://127.0.0.1:1"));
        assert_eq!(get(&env, "WS2HTTP_API_TOKEN"), Some("t"));
        assert!(env.iter().all(|(k, _)| !k.starts_with("WS_")));
        let env = page_env(&s, &req, &ev.conn.target, Some(0), None);
        assert_eq!((get(&env, "CONTENT_LENGTH"), get(&env, "CONTENT_TYPE")), (None, None));
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
}
