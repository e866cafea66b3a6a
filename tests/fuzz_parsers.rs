//! Property-based fuzzing of everything that parses untrusted input: the
//! directive line parser, the script output parser, the classic CGI header
//! parser and the environment builder. Runs a bounded number of cases
//! (PROPTEST_CASES, default 1000 per property) so CI stays quick; set it
//! higher for a longer local run.
//!
//! Expected results are stated independently of the implementation: line
//! mode against a small reference model written from docs/PROTOCOL.md
//! ("Script output", line mode), and the HTTP token characters spelled out
//! from RFC 9110. Library paths used: `ws2http::gateway::output::parse_all`,
//! `ws2http::gateway::directive::parse_line`, `ws2http::gateway::head::read_head`,
//! `ws2http::backend::env::event_env` (plus the types they take and return).

use std::sync::Arc;

use proptest::prelude::*;
use ws2http::action::{Action, Message};
use ws2http::backend::env::{event_env, EnvSettings};
use ws2http::event::{ConnInfo, Event, EventKind, RequestInfo, Target};
use ws2http::gateway::directive::{parse_line, Context, Line};
use ws2http::gateway::output::parse_all;
use ws2http::gateway::Output;
use ws2http::id::ConnId;

fn me() -> ConnId {
    ConnId::parse("me").expect("valid id")
}

fn texts(items: &[Output]) -> Vec<String> {
    items
        .iter()
        .filter_map(|o| match o {
            Output::Action(Action::Send { msg: Message::Text(t), .. }) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

/// The `tchar` of RFC 9110 §5.6.2, written out: the characters an HTTP
/// field name (a token) may contain.
const TCHAR: &str = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// One line of script output in line mode, as docs/PROTOCOL.md lists them.
#[derive(Debug, Clone)]
enum Out {
    /// Anything else: a text message to this connection.
    Plain(String),
    /// `@@rest`: the text `@rest`.
    Escaped(String),
    /// An empty line: ignored.
    Empty,
    /// `@join ROOM`, `@leave ROOM`.
    Join(String),
    Leave(String),
    /// `@set KEY VALUE`: an empty VALUE removes the key.
    Set(String, String),
    /// `@room ROOM TEXT`.
    Room(String, String),
    /// An unknown directive: logged and skipped, never sent.
    Unknown(String),
}

fn out_line() -> impl Strategy<Value = Out> {
    let text = "[^\r\n]{0,30}";
    let room = "[A-Za-z0-9_.#-]{1,20}";
    prop_oneof![
        // No `:`, so that no line can start a header block.
        "[^@\r\n:][^\r\n:]{0,30}".prop_map(Out::Plain),
        text.prop_map(Out::Escaped),
        Just(Out::Empty),
        room.prop_map(Out::Join),
        room.prop_map(Out::Leave),
        ("[A-Za-z0-9_]{1,10}", "[^\r\n\x00]{0,20}").prop_map(|(k, v)| Out::Set(k, v)),
        (room, text).prop_map(|(r, t)| Out::Room(r, t)),
        "[a-z]{1,8}".prop_map(|w| Out::Unknown(format!("zz{w}"))),
    ]
}

/// The line as a script prints it.
fn render(l: &Out) -> String {
    match l {
        Out::Plain(t) => t.clone(),
        Out::Escaped(t) => format!("@@{t}"),
        Out::Empty => String::new(),
        Out::Join(r) => format!("@join {r}"),
        Out::Leave(r) => format!("@leave {r}"),
        Out::Set(k, v) => format!("@set {k} {v}"),
        Out::Room(r, t) => format!("@room {r} {t}"),
        Out::Unknown(w) => format!("@{w} x"),
    }
}

/// What the line does, per docs/PROTOCOL.md, for connection `me`.
fn model(l: &Out, me: &ConnId) -> Option<Action> {
    let send = |t: String| Action::Send { to: me.clone(), msg: Message::text(t.as_str()) };
    match l {
        // A plain line whose text is empty is an empty line: ignored.
        Out::Plain(t) if t.is_empty() => None,
        Out::Plain(t) => Some(send(t.clone())),
        Out::Escaped(t) => Some(send(format!("@{t}"))),
        Out::Empty | Out::Unknown(_) => None,
        Out::Join(r) => Some(Action::Join { conn: me.clone(), room: r.clone() }),
        Out::Leave(r) => Some(Action::Leave { conn: me.clone(), room: r.clone() }),
        Out::Set(k, v) => {
            Some(Action::SetMeta { conn: me.clone(), key: k.clone(), value: (!v.is_empty()).then(|| v.clone()) })
        }
        Out::Room(r, t) => Some(Action::Room { room: r.clone(), msg: Message::text(t.as_str()), except: None }),
    }
}

/// Lines that are plain text: not empty, not starting with `@`, no line breaks,
/// and not looking like a header (no `:`), so no header block can start.
fn plain_line() -> impl Strategy<Value = String> {
    "[^@\r\n:][^\r\n:]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
    ))]

    #[test]
    fn directive_parser_never_panics(line in "\\PC{0,200}") {
        let m = me();
        let _ = parse_line(&line, Context::Script { conn: &m, endpoint: "/e" });
        let _ = parse_line(&line, Context::Api);
    }

    #[test]
    fn text_and_escapes_round_trip(text in "[^@\r\n][^\r\n]{0,80}") {
        let m = me();
        let ctx = Context::Script { conn: &m, endpoint: "/e" };
        prop_assert_eq!(parse_line(&text, ctx), Ok(Line::Text(text.clone())));
        let escaped = format!("@@{text}");
        prop_assert_eq!(parse_line(&escaped, ctx), Ok(Line::Text(format!("@{text}"))));
    }

    #[test]
    fn send_and_room_directives_keep_their_text(id in "[a-f0-9]{1,32}", room in "[^\\s\\x00]{1,20}", text in "[^\r\n]{0,80}") {
        let m = me();
        let ctx = Context::Script { conn: &m, endpoint: "/e" };
        let want = Action::Send { to: ConnId::parse(&id).expect("valid id"), msg: Message::text(text.as_str()) };
        prop_assert_eq!(parse_line(&format!("@send {id} {text}"), ctx), Ok(Line::Action(want)));
        let want = Action::Room { room: room.clone(), msg: Message::text(text.as_str()), except: None };
        prop_assert_eq!(parse_line(&format!("@room {room} {text}"), ctx), Ok(Line::Action(want)));
    }

    #[test]
    fn output_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000), open in any::<bool>()) {
        let m = me();
        let _ = parse_all(Context::Script { conn: &m, endpoint: "/e" }, open, &bytes);
    }

    #[test]
    fn plain_output_lines_become_messages_in_order(lines in proptest::collection::vec(plain_line(), 0..30), crlf in any::<bool>()) {
        let m = me();
        let eol = if crlf { "\r\n" } else { "\n" };
        let out: String = lines.iter().map(|l| format!("{l}{eol}")).collect();
        let items = parse_all(Context::Script { conn: &m, endpoint: "/e" }, false, out.as_bytes());
        prop_assert_eq!(texts(&items), lines);
    }

    #[test]
    fn whole_body_mode_keeps_bytes_exactly(body in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let m = me();
        let mut out = b"Content-Type: application/octet-stream\r\n\r\n".to_vec();
        out.extend_from_slice(&body);
        let items = parse_all(Context::Script { conn: &m, endpoint: "/e" }, false, &out);
        let got: Vec<Vec<u8>> = items.iter().filter_map(|o| match o {
            Output::Action(Action::Send { msg: Message::Binary(b), .. }) => Some(b.to_vec()),
            _ => None,
        }).collect();
        prop_assert_eq!(got, vec![body]);
    }

    #[test]
    fn line_mode_follows_the_reference_model(
        lines in proptest::collection::vec(out_line(), 0..25),
        eols in proptest::collection::vec(any::<bool>(), 25),
        final_newline in any::<bool>(),
    ) {
        let m = me();
        // LF or CRLF per line; the last line may lack its newline.
        let mut out = String::new();
        for (i, l) in lines.iter().enumerate() {
            out.push_str(&render(l));
            if i + 1 < lines.len() || final_newline {
                out.push_str(if eols[i] { "\r\n" } else { "\n" });
            }
        }
        let got: Vec<Action> = parse_all(Context::Script { conn: &m, endpoint: "/e" }, false, out.as_bytes())
            .into_iter()
            .map(|o| match o {
                Output::Action(a) => a,
                other => panic!("line mode yields actions only, got {other:?} from {out:?}"),
            })
            .collect();
        let want: Vec<Action> = lines.iter().filter_map(|l| model(l, &m)).collect();
        prop_assert_eq!(got, want, "output {:?}", out);
    }

    #[test]
    fn cgi_header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let mut r = futures_lite::io::BufReader::new(&bytes[..]);
        let _ = futures_lite::future::block_on(ws2http::gateway::head::read_head(&mut r));
    }

    #[test]
    fn cgi_headers_round_trip(headers in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,15}", "[!-~][ -~]{0,30}"), 1..10)) {
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("status"))
            .map(|(n, v)| (n, v.trim().to_owned()))
            .collect();
        prop_assume!(!headers.is_empty());
        let text: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect::<String>() + "\r\nbody";
        let mut r = futures_lite::io::BufReader::new(text.as_bytes());
        let head = futures_lite::future::block_on(ws2http::gateway::head::read_head(&mut r)).expect("a valid head");
        prop_assert_eq!(head.headers, headers);
    }

    #[test]
    fn header_variables_follow_the_documented_rule(
        raw in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(TCHAR.chars().collect::<Vec<_>>()), 1..16), 1..12)
    ) {
        // docs/PROTOCOL.md, Environment: HTTP_ + the name uppercased with
        // `-` as `_`; a name containing `_` is left out; no HTTP_PROXY.
        let mut names: Vec<String> = Vec::new();
        for n in raw.into_iter().map(|c| c.into_iter().collect::<String>()) {
            if !names.iter().any(|m| m.eq_ignore_ascii_case(&n)) {
                names.push(n);
            }
        }
        let request = RequestInfo::new(Default::default(), names.iter().map(|n| (n.as_str(), "v")));
        let target = Target { filename: "/s".into(), script_name: "/s".into(), path_info: String::new(), interpreter: None };
        let conn = Arc::new(ConnInfo { id: me(), target, request });
        let env = event_env(&EnvSettings::default(), &Event { kind: EventKind::Open, conn, rooms: vec![], meta: vec![] });
        let got: Vec<String> = env.iter().map(|(k, _)| k.clone()).filter(|k| k.starts_with("HTTP_")).collect();
        let var_of = |n: &str| format!("HTTP_{}", n.to_ascii_uppercase().replace('-', "_"));
        for n in &names {
            let var = var_of(n);
            // Kept when some header of that variable is (`_` is left out, `-` is not: `_` and `-` share `HTTP__`).
            let kept = var != "HTTP_PROXY" && names.iter().any(|m| !m.contains('_') && var_of(m) == var);
            prop_assert_eq!(got.contains(&var), kept, "header {:?} -> {:?} in {:?}", n, var, got);
        }
        prop_assert_eq!(got.len(), names.iter().filter(|n| !n.contains('_') && !n.eq_ignore_ascii_case("proxy")).count());
    }

    #[test]
    fn environment_has_only_safe_header_variables(names in proptest::collection::vec("\\PC{1,20}", 0..20)) {
        let request =
            RequestInfo::new(Default::default(), names.iter().map(|n| (n.as_str(), "v")).chain([("Proxy", "x")]));
        let target = Target { filename: "/s".into(), script_name: "/s".into(), path_info: String::new(), interpreter: None };
        let conn = Arc::new(ConnInfo { id: me(), target, request });
        let env = event_env(&EnvSettings::default(), &Event { kind: EventKind::Open, conn, rooms: vec![], meta: vec![] });
        for (k, _) in &env {
            prop_assert!(k != "HTTP_PROXY");
            // A token, except that `-` became `_`.
            prop_assert!(k.chars().all(|c| c != '-' && TCHAR.contains(c)), "{}", k);
            prop_assert!(!k.contains('='));
        }
    }
}
