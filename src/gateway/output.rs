//! Turns a script's stdout into [`Output`]: the optional CGI header block,
//! then the body in line mode (each line a message or directive, applied as
//! it arrives) or as one whole message.
//!
//! The parser is fed raw lines (each with its `\n`, the last one maybe
//! without), so it works on a pipe, a FastCGI stream or an HTTP body alike.

use super::directive::{parse_line, Context, Line};
use super::head::{header_line, trim_eol, HeadParser, Mode};
use super::{Head, Output};
use crate::action::{Action, Message};

/// How the body after the header block is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyMode {
    /// One message or directive per line.
    Lines,
    /// The whole body is one message, binary or text.
    Whole { binary: bool },
    /// An open event was rejected: the body is the HTTP response body.
    Reject,
}

enum Phase {
    /// Nothing seen yet.
    Start,
    /// The first lines look like headers; waiting for the blank line.
    MaybeHead(Vec<Vec<u8>>),
    Body(BodyMode),
    /// The header block was ambiguous: nothing of this output is acted on;
    /// the event fails with the reason.
    Refused(String),
}

pub struct OutputParser<'a> {
    ctx: Context<'a>,
    /// Open events turn a non-2xx head into a rejection.
    is_open: bool,
    phase: Phase,
    whole: Vec<u8>,
}

impl<'a> OutputParser<'a> {
    pub fn new(ctx: Context<'a>, is_open: bool) -> Self {
        OutputParser { ctx, is_open, phase: Phase::Start, whole: Vec::new() }
    }

    /// Feeds one raw line (ending in `\n` unless it is the last).
    pub fn push(&mut self, line: &[u8], out: &mut dyn FnMut(Output)) {
        match &mut self.phase {
            Phase::Start => {
                if header_line(line).is_some() {
                    self.phase = Phase::MaybeHead(vec![line.to_vec()]);
                } else {
                    self.phase = Phase::Body(BodyMode::Lines);
                    self.body_line(line, out);
                }
            }
            Phase::MaybeHead(lines) => {
                if trim_eol(line).is_empty() {
                    let lines = std::mem::take(lines);
                    self.end_head(&lines, out);
                } else if header_line(line).is_some() {
                    lines.push(line.to_vec());
                } else {
                    let lines = std::mem::take(lines);
                    self.not_a_head(lines, out);
                    self.body_line(line, out);
                }
            }
            Phase::Body(_) => self.body_line(line, out),
            Phase::Refused(_) => {}
        }
    }

    /// The output was cut at `--max-output`: a whole-body message it was
    /// collecting never ended, so it is dropped, not sent short.
    pub fn cut(&mut self) {
        if let Phase::Body(BodyMode::Whole { .. }) = self.phase {
            self.whole = Vec::new();
            self.phase = Phase::Body(BodyMode::Lines);
        }
    }

    /// Why the output was refused (an ambiguous header block), if it was.
    pub fn refused(&self) -> Option<&str> {
        match &self.phase {
            Phase::Refused(why) => Some(why),
            _ => None,
        }
    }

    /// Call at end of output.
    pub fn finish(mut self, out: &mut dyn FnMut(Output)) {
        match std::mem::replace(&mut self.phase, Phase::Start) {
            Phase::MaybeHead(lines) => self.not_a_head(lines, out),
            Phase::Body(BodyMode::Whole { binary }) => {
                let body = std::mem::take(&mut self.whole);
                let msg = if binary {
                    Some(Message::Binary(body.into()))
                } else {
                    Message::text_from_bytes(body).or_else(|| {
                        self.warn("output is not valid UTF-8; the text message was dropped");
                        None
                    })
                };
                if let (Some(msg), Some(to)) = (msg, self.me()) {
                    out(Output::Action(Action::Send { to, msg }));
                }
            }
            Phase::Body(BodyMode::Reject) => out(Output::RejectBody(std::mem::take(&mut self.whole))),
            Phase::Body(BodyMode::Lines) | Phase::Start | Phase::Refused(_) => {}
        }
    }

    /// The first lines looked like headers but no blank line ended them:
    /// they are ordinary body lines after all.
    fn not_a_head(&mut self, lines: Vec<Vec<u8>>, out: &mut dyn FnMut(Output)) {
        self.phase = Phase::Body(BodyMode::Lines);
        for l in lines {
            self.body_line(&l, out);
        }
    }

    fn end_head(&mut self, lines: &[Vec<u8>], out: &mut dyn FnMut(Output)) {
        let mut parser = HeadParser::new(Mode::Lenient);
        for l in lines {
            // Every line passed `header_line`: an invalid Status is only
            // warned about (it becomes 500); an ambiguous block refuses the
            // whole output.
            if let Err(why) = parser.line(l, &mut |what| self.warn(what)) {
                self.warn(&format!("{why}; nothing of this output is used"));
                self.phase = Phase::Refused(why);
                return;
            }
        }
        self.start_body(parser.finish(), out);
    }

    /// A header block parsed elsewhere (an HTTP response's status and
    /// headers): the body's lines follow. Only before any output.
    pub fn head(&mut self, head: Head, out: &mut dyn FnMut(Output)) {
        if matches!(self.phase, Phase::Start) {
            self.start_body(head, out);
        }
    }

    /// Emits the head and picks how the body is read: a rejected open keeps
    /// it raw; otherwise by Content-Type, line mode for text or none.
    fn start_body(&mut self, head: Head, out: &mut dyn FnMut(Output)) {
        let content_type =
            head.get("content-type").map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let mode = if self.is_open && !head.is_success() {
            BodyMode::Reject
        } else {
            match content_type.as_deref() {
                None | Some("") => BodyMode::Lines,
                Some(t) if t.starts_with("text/") => BodyMode::Lines,
                Some("application/octet-stream") => BodyMode::Whole { binary: true },
                Some(_) => BodyMode::Whole { binary: false },
            }
        };
        out(Output::Head(head));
        self.phase = Phase::Body(mode);
    }

    fn body_line(&mut self, raw: &[u8], out: &mut dyn FnMut(Output)) {
        let Phase::Body(mode) = self.phase else { return };
        if mode != BodyMode::Lines {
            self.whole.extend_from_slice(raw);
            return;
        }
        let Ok(line) = std::str::from_utf8(trim_eol(raw)) else {
            self.warn("an output line is not valid UTF-8; it was dropped");
            return;
        };
        match parse_line(line, self.ctx) {
            Ok(Line::Empty) => {}
            Ok(Line::Action(a)) => out(Output::Action(a)),
            Ok(Line::Text(text)) => {
                if let Some(to) = self.me() {
                    out(Output::Action(Action::Send { to, msg: Message::text(text) }));
                }
            }
            Err(e) => self.warn(&format!("skipped {}: {e}", crate::logging::quoted_short(line, 200))),
        }
    }

    fn me(&self) -> Option<crate::id::ConnId> {
        match self.ctx {
            Context::Script { conn, .. } => Some(conn.clone()),
            Context::Api => None,
        }
    }

    fn warn(&self, what: &str) {
        match self.ctx {
            Context::Script { conn, endpoint } => log::warn!("[{conn}] {endpoint}: {what}"),
            Context::Api => log::warn!("api: {what}"),
        }
    }
}

/// Parses a complete output at once (tests; `POST /actions` reads its body
/// line by line with [`super::directive::parse_line`] instead).
pub fn parse_all(ctx: Context<'_>, is_open: bool, output: &[u8]) -> Vec<Output> {
    let mut items = Vec::new();
    let mut p = OutputParser::new(ctx, is_open);
    let mut push = |o| items.push(o);
    for line in output.split_inclusive(|&b| b == b'\n') {
        p.push(line, &mut push);
    }
    p.finish(&mut push);
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ConnId;

    fn run(out: &[u8], open: bool) -> Vec<Output> {
        let me = ConnId::parse("me").expect("valid id");
        parse_all(Context::Script { conn: &me, endpoint: "/e" }, open, out)
    }

    use crate::gateway::sent_texts as texts;

    #[test]
    fn plain_lines_crlf_and_last_line_without_newline() {
        let items = run(b"one\r\ntwo\n\nthree", false);
        assert_eq!(texts(&items), ["one", "two", "three"]);
    }

    #[test]
    fn header_block_then_lines() {
        let items = run(b"Content-Type: text/plain\r\nX-A: 1\r\n\r\nhello\n@join r\n", false);
        assert!(matches!(&items[0], Output::Head(h) if h.get("x-a") == Some("1") && h.status.is_none()));
        assert_eq!(texts(&items), ["hello"]);
        assert!(matches!(&items[2], Output::Action(Action::Join { .. })));
    }

    #[test]
    fn header_like_first_line_without_blank_line_is_text() {
        assert_eq!(texts(&run(b"Status: 403\n", true)), ["Status: 403"]);
        assert_eq!(texts(&run(b"Note: a\nnot a header\n", false)), ["Note: a", "not a header"]);
    }

    #[test]
    fn whole_body_modes() {
        let items = run(b"Content-Type: application/octet-stream\n\n\x00\xff\nx", false);
        assert!(
            matches!(&items[1], Output::Action(Action::Send { msg: Message::Binary(b), .. }) if &b[..] == b"\x00\xff\nx")
        );
        let items = run(b"Content-Type: application/json\n\n{\"a\":\n1}\n", false);
        assert_eq!(texts(&items), ["{\"a\":\n1}\n"]);
        let items = run(b"Content-Type: application/json\n\n\xff", false);
        assert_eq!(items.len(), 1, "invalid UTF-8 in a text body is dropped");
    }

    #[test]
    fn open_rejection_keeps_raw_body() {
        let items = run(b"Status: 403 Forbidden\nContent-Type: text/plain\n\nno entry\n@join x\n", true);
        assert!(matches!(&items[0], Output::Head(h) if h.status == Some(403)));
        assert!(matches!(&items[1], Output::RejectBody(b) if b == b"no entry\n@join x\n"));
        // The same output for a message event is just line mode.
        assert_eq!(texts(&run(b"Status: 403\n\nhi\n", false)), ["hi"]);
    }

    #[test]
    fn an_ambiguous_head_refuses_the_whole_output() {
        let me = ConnId::parse("me").expect("valid id");
        for open in [true, false] {
            let mut p = OutputParser::new(Context::Script { conn: &me, endpoint: "/e" }, open);
            let mut items = Vec::new();
            for l in ["Content-Type: text/plain\n", "Content-Type: application/json\n", "\n", "@join r\n", "hi\n"] {
                p.push(l.as_bytes(), &mut |o| items.push(o));
            }
            assert!(p.refused().is_some_and(|w| w.contains("two Content-Type")), "{:?}", p.refused());
            p.finish(&mut |o| items.push(o));
            assert!(items.is_empty(), "nothing applied: {items:?}");
        }
    }

    #[test]
    fn bad_status_rejects_and_invalid_utf8_line_is_dropped() {
        let items = run(b"Status: abc\n\n", true);
        assert!(matches!(&items[0], Output::Head(h) if h.status == Some(500)));
        assert_eq!(texts(&run(b"ok\n\xff\xfe\nok2\n", false)), ["ok", "ok2"]);
    }
}
