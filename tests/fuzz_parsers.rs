//! Property-based fuzzing of everything that parses untrusted input: the
//! directive line parser, the script output parser, the classic CGI header
//! parser and the environment builder. Runs a bounded number of cases
//! (PROPTEST_CASES, default 1000 per property) so CI stays quick; set it
//! higher for a longer local run.

use std::sync::Arc;

use proptest::prelude::*;
use ws2http::action::{Action, Message};
use ws2http::backend::Output;
use ws2http::cgi::env::{event_env, EnvSettings};
use ws2http::cgi::output::{parse_all, OutputParser};
use ws2http::directive::{parse_line, Context, Line};
use ws2http::event::{ConnInfo, Event, EventKind, RequestInfo, Target};
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
    fn feeding_lines_one_by_one_equals_parsing_at_once(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let m = me();
        let ctx = Context::Script { conn: &m, endpoint: "/e" };
        let all = format!("{:?}", parse_all(ctx, true, &bytes));
        let mut items = Vec::new();
        let mut p = OutputParser::new(ctx, true);
        let mut push = |o| items.push(o);
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            p.push(line, &mut push);
        }
        p.finish(&mut push);
        prop_assert_eq!(format!("{items:?}"), all);
    }

    #[test]
    fn cgi_header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let mut r = futures_lite::io::BufReader::new(&bytes[..]);
        let _ = futures_lite::future::block_on(ws2http::cgi::http::read_head(&mut r));
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
        let head = futures_lite::future::block_on(ws2http::cgi::http::read_head(&mut r)).expect("a valid head");
        prop_assert_eq!(head.headers, headers);
    }

    #[test]
    fn environment_has_only_safe_header_variables(names in proptest::collection::vec("\\PC{1,20}", 0..20)) {
        let request = RequestInfo {
            headers: names.iter().map(|n| (n.clone(), "v".to_owned())).chain([("Proxy".to_owned(), "x".to_owned())]).collect(),
            ..Default::default()
        };
        let target = Target { filename: "/s".into(), script_name: "/s".into(), path_info: String::new(), interpreter: None };
        let conn = Arc::new(ConnInfo { id: me(), target, request });
        let env = event_env(&EnvSettings::default(), &Event { kind: EventKind::Open, conn, rooms: vec![], meta: vec![] });
        for (k, _) in &env {
            prop_assert!(k != "HTTP_PROXY");
            prop_assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b"!#$%&'*+.^`|~".contains(&b)), "{}", k);
            prop_assert!(!k.contains('='));
        }
    }
}
