//! The CGI header block (RFC 3875 §6.3), parsed one way with two modes.
//!
//! - [`Mode::Lenient`]: a WebSocket script's output. Headers are optional,
//!   so the output parser ([`super::output`]) only calls it once it saw
//!   header-like lines ended by a blank line; an invalid `Status` is logged
//!   and becomes 500 (the event goes on).
//! - [`Mode::Strict`]: a classic CGI response ([`read_head`]). Headers are
//!   required; anything that is not `Name: value` (a token name, RFC 9110
//!   §5.6.2), an invalid `Status`, or a block over 64 KiB is refused, and
//!   the client gets a 500 rather than a guess.
//!
//! In both modes a block that could be read two ways is refused: two
//! `Status`, two `Content-Type` or two `Content-Length` headers, or a
//! `Content-Length` that is not a decimal number. Which one would the
//! script mean? Strict parsing never guesses (GUIDE: "when a request is
//! ambiguous, refuse it").
//!
//! Header names are HTTP tokens, checked by the one token check of the crate
//! ([`crate::http1::head::is_token`]).

use futures_lite::io::AsyncBufRead;

use crate::http1::head::is_token;

/// The CGI header block of a response (RFC 3875 §6.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// From `Status:`; `None` when the script gave none.
    pub status: Option<u16>,
    /// Every header except `Status`, in order, names as written.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A status outside 200..=299 rejects an open event.
    pub fn is_success(&self) -> bool {
        self.status.is_none_or(|s| (200..300).contains(&s))
    }

    /// A 1xx status: an interim one, not an answer, so a page or a
    /// handshake gets 502 instead.
    pub fn is_interim(&self) -> bool {
        self.status.is_some_and(|s| s < 200)
    }
}

/// A line without its `\n` or `\r\n`.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `Name: value` where Name is a token: the name and the trimmed value.
/// The output parser uses it to tell a header block from body lines.
pub fn header_line(line: &[u8]) -> Option<(&str, &str)> {
    split_header(std::str::from_utf8(trim_eol(line)).ok()?).ok()
}

/// Why a line is not a header.
enum NotHeader<'a> {
    NoColon,
    /// The part before the colon is not a token.
    BadName(&'a str),
}

/// A line (without its line end) split into its token name and trimmed
/// value: the one place a header line is split and checked.
fn split_header(line: &str) -> Result<(&str, &str), NotHeader<'_>> {
    let (name, value) = line.split_once(':').ok_or(NotHeader::NoColon)?;
    match is_token(name.as_bytes()) {
        true => Ok((name, value.trim())),
        false => Err(NotHeader::BadName(name)),
    }
}

/// How a header block is read (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Strict,
    Lenient,
}

/// What one line did to the block.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A header; more may follow.
    More,
    /// The blank line: the block is complete.
    Done,
}

/// Builds a [`Head`] line by line.
#[derive(Debug)]
pub struct HeadParser {
    mode: Mode,
    head: Head,
}

impl HeadParser {
    pub fn new(mode: Mode) -> Self {
        HeadParser { mode, head: Head::default() }
    }

    /// Takes one line (with or without its line end). `Err` says why the
    /// block is invalid, in words for the log; in lenient mode only a line
    /// that is not a header at all is an error (the caller never sends one),
    /// and an invalid `Status` is logged through `warn` and becomes 500.
    pub fn line(&mut self, raw: &[u8], warn: &mut dyn FnMut(&str)) -> Result<Step, String> {
        let text = String::from_utf8_lossy(trim_eol(raw));
        if text.is_empty() {
            if self.mode == Mode::Strict && self.head.headers.is_empty() && self.head.status.is_none() {
                return Err("the output starts with a blank line, so it has no headers".into());
            }
            return Ok(Step::Done);
        }
        let (name, value) = match split_header(&text) {
            Ok(split) => split,
            Err(NotHeader::NoColon) => {
                return Err(format!(
                    "{text:?} is not a header line (Name: value); print headers, a blank line, then the body"
                ))
            }
            Err(NotHeader::BadName(name)) => return Err(format!("{name:?} is not a valid header name")),
        };
        self.unambiguous(name, value)?;
        if !name.eq_ignore_ascii_case("status") {
            self.head.headers.push((name.to_owned(), value.to_owned()));
            return Ok(Step::More);
        }
        let code = value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok());
        self.head.status = match code {
            Some(c) if (100..=599).contains(&c) => Some(c),
            _ if self.mode == Mode::Strict => return Err(format!("invalid Status header {value:?}")),
            _ => {
                warn(&format!("invalid Status header {}; treating it as 500", crate::logging::quoted(value)));
                Some(500)
            }
        };
        Ok(Step::More)
    }

    pub fn finish(self) -> Head {
        self.head
    }

    /// Refuses a header that makes the block mean two things (module docs).
    fn unambiguous(&self, name: &str, value: &str) -> Result<(), String> {
        let twice = if name.eq_ignore_ascii_case("status") {
            self.head.status.is_some()
        } else {
            ["content-type", "content-length"].iter().any(|h| name.eq_ignore_ascii_case(h))
                && self.head.get(name).is_some()
        };
        if twice {
            return Err(format!("the header block has two {name} headers; refused rather than guessing which one"));
        }
        if name.eq_ignore_ascii_case("content-length")
            && (value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("Content-Length {} is not a decimal number", crate::logging::quoted(value)));
        }
        Ok(())
    }
}

/// Why [`read_head`] found no valid header block.
#[derive(Debug, PartialEq, Eq)]
pub struct HeadError {
    pub kind: HeadErrorKind,
    /// In words, for the log.
    pub why: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadErrorKind {
    /// The script's output is not a valid (or not an unambiguous) header
    /// block: its fault, `500`.
    Invalid,
    /// The stream broke off (a FastCGI server went away): `502`.
    Read,
}

impl HeadError {
    fn invalid(why: impl Into<String>) -> Self {
        HeadError { kind: HeadErrorKind::Invalid, why: why.into() }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Largest header block a classic CGI script may print.
pub const MAX_HEAD: usize = 64 * 1024;

/// Reads a classic CGI response's header block up to its blank line,
/// strictly; the body is left in `r`.
pub async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Head, HeadError> {
    let mut parser = HeadParser::new(Mode::Strict);
    let mut line = Vec::new();
    let mut total = 0;
    loop {
        line.clear();
        let (n, _) = super::lines::read_line_capped(r, &mut line, MAX_HEAD + 1)
            .await
            .map_err(|e| HeadError { kind: HeadErrorKind::Read, why: format!("reading its output failed: {e}") })?;
        if n == 0 {
            return Err(HeadError::invalid(if total == 0 {
                "the script printed nothing (a CGI script must print headers, a blank line, then the body)"
            } else {
                "the script's output ended before the blank line that ends the headers"
            }));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(HeadError::invalid(format!("the header block is over {MAX_HEAD} bytes")));
        }
        if parser.line(&line, &mut |_| {}).map_err(HeadError::invalid)? == Step::Done {
            return Ok(parser.finish());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(s: &str) -> Result<Head, String> {
        let mut r = futures_lite::io::BufReader::new(s.as_bytes());
        futures_lite::future::block_on(read_head(&mut r)).map_err(|e| {
            assert_eq!(e.kind, HeadErrorKind::Invalid);
            e.why
        })
    }

    fn lenient(lines: &[&str]) -> (Head, Vec<String>) {
        let mut p = HeadParser::new(Mode::Lenient);
        let mut warnings = Vec::new();
        for l in lines {
            p.line(l.as_bytes(), &mut |w| warnings.push(w.to_owned())).expect("a header line");
        }
        (p.finish(), warnings)
    }

    #[test]
    fn strict_header_blocks() {
        let h = strict("Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-A:  1 \r\n\r\nbody").expect("valid");
        assert_eq!(h.status, Some(404));
        assert_eq!(h.get("x-a"), Some("1"));
        assert_eq!(h.headers.len(), 2, "Status is not a header");
        for bad in ["", "hello world\n\n", "Content-Type: text/plain\n", "\nbody", "Status: abc\n\n", "Status: 99\n\n"]
        {
            assert!(strict(bad).is_err(), "{bad:?}");
        }
        assert_eq!(strict("Bad Name: x\n\n"), Err("\"Bad Name\" is not a valid header name".into()));
        assert!(strict(&format!("X: {}\n\n", "a".repeat(MAX_HEAD))).expect_err("too big").contains("over"));
    }

    #[test]
    fn ambiguous_blocks_are_refused_in_both_modes() {
        let refused = [
            ("Status: 200\nStatus: 404\n\n", "two Status headers"),
            ("Content-Type: text/plain\ncontent-type: text/html\n\n", "two content-type headers"),
            ("Content-Length: 3\nContent-Length: 5\n\nabc", "two Content-Length headers"),
            ("Content-Length: 3\nContent-Length: 3\n\nabc", "two Content-Length headers"),
            ("Content-Length: abc\n\n", "Content-Length \"abc\" is not a decimal number"),
            ("Content-Length: -1\n\n", "not a decimal number"),
            ("Content-Length: 1 2\n\n", "not a decimal number"),
            ("Content-Length:\n\n", "not a decimal number"),
        ];
        for (block, why) in refused {
            let got = strict(block).expect_err(block);
            assert!(got.contains(why), "{block:?}: {got}");
            let mut p = HeadParser::new(Mode::Lenient);
            let lenient = block
                .lines()
                .take_while(|l| !l.is_empty())
                .try_for_each(|l| p.line(l.as_bytes(), &mut |_| {}).map(drop));
            assert!(lenient.expect_err(block).contains(why), "{block:?}");
        }
        // One of each, and repeatable headers, are fine.
        let h = strict("Status: 201\nContent-Type: a/b\nContent-Length: 007\nSet-Cookie: a\nSet-Cookie: b\n\n")
            .expect("valid");
        assert_eq!((h.status, h.get("content-length"), h.get_all("set-cookie").count()), (Some(201), Some("007"), 2));
    }

    #[test]
    fn a_broken_stream_is_a_read_error_not_an_invalid_block() {
        struct Broken;
        impl futures_lite::io::AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
            }
        }
        let mut r = futures_lite::io::BufReader::new(Broken);
        let e = futures_lite::future::block_on(read_head(&mut r)).expect_err("broken");
        assert_eq!(e.kind, HeadErrorKind::Read);
    }

    #[test]
    fn lenient_blocks_turn_a_bad_status_into_500_with_a_warning() {
        let (h, warnings) = lenient(&["Status: abc\n", "X-A: 1\n"]);
        assert_eq!(h.status, Some(500));
        assert_eq!(warnings, ["invalid Status header \"abc\"; treating it as 500"]);
        let (h, warnings) = lenient(&["Status: 302 Found\r\n", "\r\n"]);
        assert_eq!((h.status, warnings.len()), (Some(302), 0));
    }

    #[test]
    fn header_lines() {
        assert_eq!(header_line(b"Content-Type: text/plain\r\n"), Some(("Content-Type", "text/plain")));
        assert_eq!(header_line(b"X-Empty:\n"), Some(("X-Empty", "")));
        for not in [&b"no colon\n"[..], b"Bad Name: x\n", b": x\n", b"caf\xc3\xa9: x\n", b"\xff: x\n"] {
            assert_eq!(header_line(not), None, "{not:?}");
        }
    }
}
