//! The line protocol shared by script output and `POST /actions`.
//!
//! A line is either a directive (`@send ID TEXT`, `@join ROOM`, …), an escaped
//! literal (`@@…`), or plain text. Scripts speak for one connection, so their
//! directives may mean "this connection"; the control API speaks for nobody
//! and must name connections explicitly. [`Context`] carries that difference.

use base64::Engine;

use crate::action::{check_close, check_meta, check_room, Action, BadClose, CloseCause, Message, MAX_CLOSE_REASON};
use crate::id::ConnId;

/// Who is speaking.
#[derive(Clone, Copy, Debug)]
pub enum Context<'a> {
    /// A script running for connection `conn` of `endpoint`.
    Script { conn: &'a ConnId, endpoint: &'a str },
    /// The control API: no current connection; `@broadcast` reaches everyone.
    Api,
}

/// What one line means.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Blank line: nothing to do.
    Empty,
    /// A directive, turned into an action.
    Action(Action),
    /// Plain text (already unescaped from `@@`): a message to the speaker.
    Text(String),
}

/// Parses one line (without its line ending). `Err` explains a bad directive,
/// in words meant for the log of the script author.
pub fn parse_line(line: &str, ctx: Context<'_>) -> Result<Line, String> {
    if line.is_empty() {
        return Ok(Line::Empty);
    }
    let Some(rest) = line.strip_prefix('@') else {
        return Ok(Line::Text(line.to_owned()));
    };
    if rest.starts_with('@') {
        return Ok(Line::Text(rest.to_owned()));
    }
    let (name, args) = split1(rest);
    parse_directive(name, args, ctx).map(Line::Action)
}

/// Splits at the first space: `("send", "ID TEXT")`. Without a space the
/// second part is empty.
fn split1(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    }
}

/// A room, key or id argument: one non-empty word.
fn word<'a>(s: &'a str, what: &str) -> Result<&'a str, String> {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        Err(format!("expected {what}"))
    } else {
        Ok(s)
    }
}

/// A room name: one word within [`crate::action::caps::ROOM_NAME`]. Checked
/// here so that `POST /actions` refuses the whole request (400) before
/// anything is applied.
fn room(s: &str) -> Result<String, String> {
    let r = word(s, "a room name")?;
    check_room(r).map_err(|e| format!("room {}: {e}", crate::logging::quoted_short(r, 32)))?;
    Ok(r.to_owned())
}

fn conn_arg(s: &str) -> Result<ConnId, String> {
    ConnId::parse(s).ok_or_else(|| "expected a connection id".to_owned())
}

fn parse_directive(name: &str, args: &str, ctx: Context<'_>) -> Result<Action, String> {
    // Directives that act on "this connection" take it from the context, or,
    // in the control API, from an explicit first argument.
    let (me, args) = match ctx {
        Context::Script { conn, .. } => (Some(conn.clone()), args),
        Context::Api => (None, args),
    };
    let target = |args: &str| -> Result<(ConnId, String), String> {
        match &me {
            Some(id) => Ok((id.clone(), args.to_owned())),
            None => {
                let (id, rest) = split1(args);
                Ok((conn_arg(id)?, rest.to_owned()))
            }
        }
    };
    match name {
        "send" => {
            let (id, text) = split1(args);
            Ok(Action::Send { to: conn_arg(id)?, msg: Message::text(text) })
        }
        "room" => {
            let (r, text) = split1(args);
            Ok(Action::Room { room: room(r)?, msg: Message::text(text), except: None })
        }
        "others" => {
            let Some(me) = me.clone() else {
                return Err("@others needs a current connection; use @room in the control API".into());
            };
            let (r, text) = split1(args);
            Ok(Action::Room { room: room(r)?, msg: Message::text(text), except: Some(me) })
        }
        "broadcast" => {
            let endpoint = match ctx {
                Context::Script { endpoint, .. } => Some(endpoint.to_owned()),
                Context::Api => None,
            };
            Ok(Action::Broadcast { endpoint, msg: Message::text(args) })
        }
        "join" | "leave" => {
            let (conn, r) = target(args)?;
            let room = room(&r)?;
            Ok(if name == "join" { Action::Join { conn, room } } else { Action::Leave { conn, room } })
        }
        "set" => {
            let (conn, rest) = target(args)?;
            let (key, value) = split1(&rest);
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err("@set KEY VALUE: KEY must be letters, digits and _".into());
            }
            let value = (!value.is_empty()).then(|| value.to_owned());
            check_meta(key, value.as_deref())
                .map_err(|e| format!("@set {}: {e}", crate::logging::quoted_short(key, 32)))?;
            Ok(Action::SetMeta { conn, key: key.to_owned(), value })
        }
        "close" => {
            let (conn, rest) = target(args)?;
            let cause = if me.is_some() { CloseCause::Script } else { CloseCause::Api };
            parse_close(conn, &rest, cause)
        }
        "binary" => {
            let Some(me) = me.clone() else {
                return Err(
                    "@binary needs a current connection; use POST /send/{id} with application/octet-stream".into()
                );
            };
            let data = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(args.trim_end_matches('='))
                .map_err(|e| format!("@binary: invalid base64 ({e})"))?;
            Ok(Action::Send { to: me, msg: Message::Binary(data.into()) })
        }
        "" => Err("a line starting with @ needs a directive name (write @@ for a literal @)".into()),
        other => Err(format!("unknown directive @{other} (write @@ for a literal @)")),
    }
}

/// `@close [CODE [REASON]]` once its connection is known.
fn parse_close(conn: ConnId, rest: &str, cause: CloseCause) -> Result<Action, String> {
    let (code, reason) = split1(rest);
    match check_close((!code.is_empty()).then_some(code), reason) {
        Ok(code) => Ok(Action::Close { conn, code, reason: reason.to_owned(), cause }),
        Err(BadClose::Code) => {
            Err(format!("@close: {code} is not a close code a server may send (1000-1003, 1007-1014, 3000-4999)"))
        }
        Err(BadClose::Reason) => Err(format!("@close: the reason is longer than {MAX_CLOSE_REASON} bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ConnId {
        ConnId::parse("me").expect("valid id")
    }

    fn script(line: &str) -> Result<Line, String> {
        parse_line(line, Context::Script { conn: &me(), endpoint: "/chat.sh" })
    }

    fn act(line: &str) -> Action {
        match script(line) {
            Ok(Line::Action(a)) => a,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn text_empty_and_escapes() {
        assert_eq!(script(""), Ok(Line::Empty));
        assert_eq!(script("hello @x"), Ok(Line::Text("hello @x".into())));
        assert_eq!(script("@@x"), Ok(Line::Text("@x".into())));
        assert_eq!(script("@@"), Ok(Line::Text("@".into())));
        assert!(script("@").is_err());
        assert!(script("@nope x").is_err());
    }

    #[test]
    fn every_directive() {
        let id = |s: &str| ConnId::parse(s).expect("valid id");
        assert_eq!(act("@send abc hi there"), Action::Send { to: id("abc"), msg: Message::text("hi there") });
        assert_eq!(act("@send abc"), Action::Send { to: id("abc"), msg: Message::text("") });
        assert_eq!(act("@room r1 a b"), Action::Room { room: "r1".into(), msg: Message::text("a b"), except: None });
        assert_eq!(
            act("@others r1 x"),
            Action::Room { room: "r1".into(), msg: Message::text("x"), except: Some(me()) }
        );
        assert_eq!(
            act("@broadcast all"),
            Action::Broadcast { endpoint: Some("/chat.sh".into()), msg: Message::text("all") }
        );
        assert_eq!(act("@join r"), Action::Join { conn: me(), room: "r".into() });
        assert_eq!(act("@leave r"), Action::Leave { conn: me(), room: "r".into() });
        assert_eq!(
            act("@set nick bob smith"),
            Action::SetMeta { conn: me(), key: "nick".into(), value: Some("bob smith".into()) }
        );
        assert_eq!(act("@set nick"), Action::SetMeta { conn: me(), key: "nick".into(), value: None });
        assert_eq!(act("@set nick "), Action::SetMeta { conn: me(), key: "nick".into(), value: None });
        assert_eq!(
            act("@close"),
            Action::Close { conn: me(), code: 1000, reason: "".into(), cause: CloseCause::Script }
        );
        assert_eq!(
            act("@close 4000 go away"),
            Action::Close { conn: me(), code: 4000, reason: "go away".into(), cause: CloseCause::Script }
        );
        assert_eq!(act("@binary AAH/"), Action::Send { to: me(), msg: Message::Binary(vec![0, 1, 255].into()) });
        assert_eq!(act("@binary AA=="), Action::Send { to: me(), msg: Message::Binary(vec![0].into()) });
        assert_eq!(act("@binary AA"), Action::Send { to: me(), msg: Message::Binary(vec![0].into()) });
    }

    #[test]
    fn malformed_directives_are_errors() {
        for bad in [
            "@room",
            "@room  x",
            "@join",
            "@join a b",
            "@set",
            "@set a-b 1",
            "@close 1005",
            "@close 999",
            "@close x",
            "@binary !!",
            "@send",
        ] {
            assert!(script(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn caps_on_keys_values_and_room_names() {
        use crate::action::caps;
        let ok = |l: &str| script(l).is_ok();
        assert!(ok(&format!("@set {} v", "k".repeat(caps::KEY))));
        assert!(!ok(&format!("@set {} v", "k".repeat(caps::KEY + 1))));
        assert!(ok(&format!("@set k {}", "v".repeat(caps::VALUE))));
        let err = script(&format!("@set k {}", "v".repeat(caps::VALUE + 1))).unwrap_err();
        assert!(err.contains("8193 bytes, over the cap of 8192"), "{err}");
        assert!(!ok("@set k a\0b"));
        let room = "r".repeat(caps::ROOM_NAME);
        let long = "r".repeat(caps::ROOM_NAME + 1);
        for line in ["@join R", "@leave R", "@room R x", "@others R x"] {
            assert!(ok(&line.replace('R', &room)), "{line} with a room name at the cap");
            assert!(!ok(&line.replace('R', &long)), "{line} with a room name over the cap");
            assert!(!ok(&line.replace('R', "a\0b")), "{line} with a NUL byte");
        }
        // The error quotes only the start of a long argument.
        let err = script(&format!("@join {}", "r".repeat(5000))).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn api_context_needs_explicit_connections() {
        let api = |l: &str| parse_line(l, Context::Api);
        assert!(api("@others r x").is_err());
        assert!(api("@binary AA").is_err());
        assert!(api("@join").is_err());
        assert_eq!(
            api("@join c1 r"),
            Ok(Line::Action(Action::Join { conn: ConnId::parse("c1").expect("valid id"), room: "r".into() }))
        );
        assert_eq!(
            api("@close c1 4001 bye"),
            Ok(Line::Action(Action::Close {
                conn: ConnId::parse("c1").expect("valid id"),
                code: 4001,
                reason: "bye".into(),
                cause: CloseCause::Api
            }))
        );
        assert_eq!(
            api("@broadcast x"),
            Ok(Line::Action(Action::Broadcast { endpoint: None, msg: Message::text("x") }))
        );
    }
}
