//! The log: env_logger's usual line (`[time LEVEL target] message`), with
//! every control character in the message escaped.
//!
//! Log lines carry what clients chose (paths, close reasons, header
//! values in refusals) and what scripts printed (stderr, skipped lines).
//! A newline in any of them would start a second, forged line
//! (`POST /rooms/x%0a[2026-… WARN …] FORGED`), and terminal escapes would
//! reach whoever reads the log in a terminal. Escaping here, once, covers
//! every log line, whoever wrote the message.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::stackbuf::StackStr;

/// Sets up logging: our own crate and rustls-acme (its steps of a
/// certificate order, one line each) at `level`, other crates at `warn`,
/// rustls off; `RUST_LOG` overrides them (rustls only if it names `rustls=`).
///
/// Logging to a file or a pipe (a service's usual case, one line per
/// event), the line is written as it is formatted: no colour codes, so
/// env_logger need not pass every byte through anstream's escape-code
/// stripper (5 % of the server's instructions per event, callgrind). On a
/// terminal, or with `RUST_LOG_STYLE` set, env_logger decides as usual.
pub fn init(level: &str) {
    use std::io::IsTerminal;
    let filter = env_logger::Env::default().default_filter_or(format!("warn,ws2http={level},rustls_acme={level}"));
    let mut builder = env_logger::Builder::from_env(filter);
    // rustls itself off unless RUST_LOG names it: it logs what a client
    // sent (a rejected SNI name in full, at warn) once per handshake, so
    // any client could fill the log; a failed handshake is already our
    // own one line (`listen`).
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.split(',').any(|d| d.trim().starts_with("rustls="))) {
        builder.parse_filters("rustls=off");
    }
    let plain = std::env::var_os("RUST_LOG_STYLE").is_none() && !std::io::stderr().is_terminal();
    if plain {
        // Nothing to strip: the format below writes no style when plain.
        builder.write_style(env_logger::WriteStyle::Always);
        // As a "pipe", not env_logger's stderr target: that one asks the
        // kernel whether stderr is a terminal (an `ioctl`) before every
        // line, one system call per event (docs/bench-notes/perf18.md).
        // Still one `write` per line: stderr is unbuffered.
        builder.target(env_logger::Target::Pipe(Box::new(std::io::stderr())));
    }
    builder
        .format(move |buf, record| {
            if plain && ON_STACK.with(|c| c.get()) {
                return write_plain(record, buf.timestamp());
            }
            let message = escaped_args(record.args());
            if plain {
                return writeln!(buf, "[{} {:<5} {}] {message}", buf.timestamp(), record.level(), record.target());
            }
            let style = buf.default_level_style(record.level());
            writeln!(buf, "[{} {style}{:<5}{style:#} {}] {message}", buf.timestamp(), record.level(), record.target())
        })
        .init();
    // A panic (a bug) is one escaped log line too, not several raw ones.
    std::panic::set_hook(Box::new(|info| log::error!("bug: {info}")));
}

thread_local! {
    /// This thread writes its plain lines from the stack ([`write_plain`]).
    static ON_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// From now on this thread formats its plain lines on its stack
/// ([`write_plain`]): for the threads that run message events one after
/// another (followers), three allocations per line less.
pub fn lines_on_stack() {
    ON_STACK.with(|c| c.set(true));
}

/// Room on the stack for a whole log line ([`write_plain`]):
/// an event's line is ~100 bytes; a longer one (a script's long stderr
/// line) takes the heap for that line only ([`crate::stackbuf`]).
const LINE: usize = 1024;

/// Writes a plain line (no styles: not a terminal) to stderr itself, in
/// one `write` (stderr is unbuffered), from a buffer on this call's stack:
/// env_logger's pipe target would first copy every line into a new buffer
/// (its colour adapter), and formatting the message cost two more: three
/// allocations per event (docs/bench-notes/alloc19.md, cpu20.md).
///
/// Only on follower threads ([`lines_on_stack`]): the same cut on the
/// executor threads, which log each handshake, raised idle memory per
/// connection by ~0.1 KiB (docs/bench-notes/cpu20.md).
fn write_plain(record: &log::Record<'_>, timestamp: impl std::fmt::Display) -> std::io::Result<()> {
    let mut line: StackStr<LINE> = StackStr::new();
    plain_line(&mut line, record, timestamp);
    std::io::stderr().write_all(line.as_bytes())
}

/// The plain line of `record`, as env_logger's format in [`init`] writes
/// it: `[time LEVEL target] message`, controls escaped, and a newline.
fn plain_line(line: &mut impl std::fmt::Write, record: &log::Record<'_>, timestamp: impl std::fmt::Display) {
    let _ = write!(line, "[{timestamp} {:<5} {}] ", record.level(), record.target());
    let _ = Escaping(&mut *line).write_fmt(*record.args());
    let _ = line.write_char('\n');
}

/// Writes what it is given with its controls escaped ([`escape_into`]):
/// a message is escaped as it is formatted, piece by piece (a piece is a
/// whole `str`, so the result is [`escape_controls`] of the whole).
struct Escaping<'a, W: std::fmt::Write>(&'a mut W);

impl<W: std::fmt::Write> std::fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if has_escapes(s) {
            escape_into(s, self.0)
        } else {
            self.0.write_str(s)
        }
    }
}

/// A log message, its controls escaped ([`escape_controls`]); one string,
/// made once (a plain message without arguments is not even copied twice).
fn escaped_args(args: &std::fmt::Arguments<'_>) -> std::borrow::Cow<'static, str> {
    let text = match args.as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(args.to_string()),
    };
    match text {
        std::borrow::Cow::Borrowed(s) if !has_escapes(s) => std::borrow::Cow::Borrowed(s),
        std::borrow::Cow::Owned(s) if !has_escapes(&s) => std::borrow::Cow::Owned(s),
        other => std::borrow::Cow::Owned(escape_controls(&other)),
    }
}

/// What [`escape_controls`] escapes.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `true` when `s` has a character [`escape_controls`] escapes. Printable
/// ASCII (most of every log line) is ruled out 16 bytes at a time first
/// (a loop without an early exit, which the compiler vectorises) before
/// characters are decoded: the check per piece of a line was ~6 % of an
/// event's instructions (docs/bench-notes/cpu21.md).
fn has_escapes(s: &str) -> bool {
    let printable = |chunk: &[u8]| chunk.iter().fold(true, |all, b| all & (0x20..0x7f).contains(b));
    !s.as_bytes().chunks(16).all(printable) && s.chars().any(needs_escape)
}

/// A duration as `{:.1?}` writes it (`33.1ms`, `850.0µs`, `1.2s`, `7.0ns`:
/// the largest unit under it, one decimal rounded half to even, a carry staying
/// in the unit: `1000.0ms`), for the one log line every event writes:
/// `Duration`'s `Debug` went through its general formatter, ~1,100
/// instructions per event, this ~150 (docs/bench-notes/cpu21.md).
pub struct Took(pub std::time::Duration);

impl std::fmt::Display for Took {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (secs, nanos) = (self.0.as_secs(), self.0.subsec_nanos());
        // (whole units, the rest in nanoseconds, a tenth of the unit in them)
        let (whole, rest, tenth, unit) = match (secs, nanos) {
            (1.., _) => (secs, nanos, 100_000_000, "s"),
            (0, 1_000_000..) => (u64::from(nanos / 1_000_000), nanos % 1_000_000, 100_000, "ms"),
            (0, 1_000..) => (u64::from(nanos / 1_000), nanos % 1_000, 100, "µs"),
            (0, _) => (u64::from(nanos), 0, 1, "ns"),
        };
        let (mut whole, mut digit, below) = (whole, rest / tenth, rest % tenth);
        // What is left below the tenth rounds half to even, as `Debug` does.
        let half = tenth / 10 * 5;
        if below > 0 && below >= half && !(below == half && digit % 2 == 0) {
            digit += 1;
            if digit == 10 {
                digit = 0;
                // Past u64 seconds only `Debug` knows how to write it.
                let Some(up) = whole.checked_add(1) else { return write!(f, "{:.1?}", self.0) };
                whole = up;
            }
        }
        // Written into one buffer and passed on once: `write!` with three
        // arguments cost as much as the rest.
        let mut buf = [0u8; 32];
        let mut at = 20;
        loop {
            at -= 1;
            buf[at] = b'0' + (whole % 10) as u8;
            whole /= 10;
            if whole == 0 {
                break;
            }
        }
        let (tail, end) = (&mut buf[20..], 2 + unit.len());
        tail[0] = b'.';
        tail[1] = b'0' + digit as u8;
        tail[2..end].copy_from_slice(unit.as_bytes());
        f.write_str(std::str::from_utf8(&buf[at..20 + end]).map_err(|_| std::fmt::Error)?)
    }
}

/// `a\nb` → `a\\nb`: C0 and C1 controls, DEL and the Unicode line and
/// paragraph separators as visible escapes; everything else unchanged.
pub fn escape_controls(s: &str) -> String {
    if !has_escapes(s) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let _ = escape_into(s, &mut out);
    out
}

/// [`escape_controls`], appended to `out`.
fn escape_into(s: &str, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    let needs = needs_escape;
    for c in s.chars() {
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if needs(c) && (c as u32) < 0x100 => write!(out, "\\x{:02x}", c as u32)?,
            c if needs(c) => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// A string a client or script chose, for a log line or an error message:
/// in double quotes, `"` and `\` escaped so the quotes stay unambiguous,
/// controls as [`escape_controls`] writes them (`\n`, `\x1b`). Not Rust's
/// `{:?}`, whose `\u{1b}` differs from every other line of the log.
pub fn quoted(s: &str) -> String {
    let inner = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{}\"", escape_controls(&inner))
}

/// [`quoted`], cut to its first `max` characters for the log (a script that
/// prints a 200 KB directive must not write a 200 KB log line): the cut
/// string ends in `…` inside the quotes, its whole length follows.
pub fn quoted_short(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{} ({} bytes)", quoted(&format!("{}…", &s[..end])), s.len()),
        None => quoted(s),
    }
}

#[cfg(test)]
mod tests {
    use super::{escape_controls, plain_line, quoted, quoted_short, LINE};
    use crate::stackbuf::StackStr;

    #[test]
    fn took_is_written_as_debug_writes_it_with_one_decimal() {
        use std::time::Duration;
        let mut cases: Vec<Duration> =
            [0u64, 1, 9, 999, 1_000, 1_049, 1_050, 1_051, 1_150, 9_950, 99_949, 99_950, 999_949, 999_950, 999_999]
                .into_iter()
                .chain([1_000_000, 1_049_999, 1_050_000, 33_149_999, 33_150_000, 999_949_999, 999_950_000, 999_999_999])
                .chain([1_000_000_000, 1_049_999_999, 1_050_000_000, 59_999_999_999, 3_600_000_000_000])
                .map(Duration::from_nanos)
                .chain([Duration::MAX, Duration::new(u64::MAX, 949_999_999), Duration::new(u64::MAX - 1, 999_999_999)])
                .collect();
        // And a sweep over every unit, with steps that hit each rounding.
        let mut n = 1u64;
        while n < 100_000_000_000 {
            cases.push(Duration::from_nanos(n));
            n = n * 7 / 3 + 1;
        }
        for d in cases {
            assert_eq!(super::Took(d).to_string(), format!("{d:.1?}"), "{d:?}");
        }
    }

    #[test]
    fn the_quick_check_finds_what_the_characters_check_finds() {
        let long = "x".repeat(40);
        let cases = [
            "",
            "plain message: ok in 1.2ms",
            "tab\there",
            "é and ünïcode",
            "\u{85}",
            "\u{2028}",
            "del\u{7f}",
            "\u{1b}[31m",
        ];
        for case in cases.iter().map(|c| c.to_string()).chain(cases.iter().map(|c| format!("{long}{c}{long}"))) {
            assert_eq!(super::has_escapes(&case), case.chars().any(super::needs_escape), "{case:?}");
        }
    }

    #[test]
    fn long_strings_are_cut_for_the_log_with_their_length() {
        assert_eq!(quoted_short("@sned x", 200), "\"@sned x\"");
        assert_eq!(quoted_short("abcdef", 3), "\"abc…\" (6 bytes)");
        let long = format!("@set k {}", "é".repeat(300));
        let q = quoted_short(&long, 200);
        assert!(q.starts_with("\"@set k éé") && q.ends_with("é…\" (607 bytes)"), "{q}");
        assert_eq!(q.chars().filter(|&c| c == 'é').count(), 193);
    }

    #[test]
    fn quoted_strings_escape_like_the_rest_of_the_log() {
        assert_eq!(quoted("bye\n\u{1b}[31mred"), "\"bye\\n\\x1b[31mred\"");
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quoted(""), "\"\"");
    }

    /// A follower's line, formatted on its stack ([`super::write_plain`]):
    /// the same line as env_logger's format, controls escaped wherever the
    /// arguments put them, whole when longer than the stack buffer.
    #[test]
    fn a_line_from_the_stack_is_the_usual_line_escaped() {
        let line = |args: std::fmt::Arguments<'_>| {
            let record = log::Record::builder().args(args).level(log::Level::Info).target("ws2http::x").build();
            let mut out: StackStr<LINE> = StackStr::new();
            plain_line(&mut out, &record, "T");
            (out.as_str().to_owned(), out.spilled())
        };
        let id = "abc";
        assert_eq!(
            line(format_args!("[{id}] /echo message: ok")),
            ("[T INFO  ws2http::x] [abc] /echo message: ok\n".to_owned(), false)
        );
        let forged = "x\n[2026 WARN] FORGED\u{1b}[31m";
        assert_eq!(
            line(format_args!("said {forged}")).0,
            "[T INFO  ws2http::x] said x\\n[2026 WARN] FORGED\\x1b[31m\n"
        );
        let long = "é\t".repeat(LINE);
        let (text, spilled) = line(format_args!("{long}"));
        assert!(spilled, "longer than the stack buffer");
        assert_eq!(text, format!("[T INFO  ws2http::x] {}\n", "é\\t".repeat(LINE)));
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("plain text: ok"), "plain text: ok");
        assert_eq!(escape_controls("x\n[2026 WARN] FORGED"), "x\\n[2026 WARN] FORGED");
        assert_eq!(escape_controls("a\r\tb\x1b[31m\x7f"), "a\\r\\tb\\x1b[31m\\x7f");
        assert_eq!(escape_controls("c1\u{85} ls\u{2028} é ✓"), "c1\\x85 ls\\u{2028} é ✓");
    }

    /// The 16-byte printable-ASCII pass never hides a character that needs
    /// escaping: every character, at each place in and across a chunk.
    #[test]
    fn the_quick_check_agrees_for_every_character_anywhere_in_a_chunk() {
        let mut s = String::new();
        for c in (0..=0x10ffffu32).filter_map(char::from_u32) {
            for lead in [0, 7, 15, 16, 31] {
                s.clear();
                s.extend(std::iter::repeat_n('p', lead));
                s.push(c);
                s.extend(std::iter::repeat_n('q', 40 - lead));
                assert_eq!(super::has_escapes(&s), super::needs_escape(c), "U+{:04x} after {lead}", c as u32);
            }
        }
    }

    /// A line from the stack is env_logger's line with the whole message
    /// escaped at once, whatever the arguments' formatting (padding, Debug,
    /// a multi-byte character split across write_str calls is impossible:
    /// pieces are whole strs) or the characters (DEL, C1 in UTF-8,
    /// U+2028/2029, U+FFFD from an invalid sequence made lossy).
    #[test]
    fn a_line_from_the_stack_equals_the_whole_message_escaped() {
        let lossy = String::from_utf8_lossy(b"bad \xff\xc3 seq").into_owned();
        let pieces = ["a\u{7f}b", "c1 \u{85}\u{9b}[31m", "ls \u{2028} ps \u{2029}", &lossy, "tab\t", "é✓", ""];
        for p in pieces {
            let n = p.len();
            let args = format_args!("[{p:>12}] {p:?} {p:-<20} {n}");
            let whole = super::escape_controls(&args.to_string());
            let record = log::Record::builder().args(args).level(log::Level::Warn).target("ws2http::y").build();
            let mut out: StackStr<LINE> = StackStr::new();
            plain_line(&mut out, &record, "T");
            assert_eq!(out.as_str(), format!("[T WARN  ws2http::y] {whole}\n"), "{p:?}");
        }
    }

    /// `Took` against `{:.1?}` at every tie and its neighbours in every
    /// unit, and at pseudo-random durations.
    #[test]
    fn took_is_debug_at_every_tie_and_at_random() {
        use std::time::Duration;
        let mut cases = Vec::new();
        for (unit, tenth) in [(1u64, 1u64), (1_000, 100), (1_000_000, 100_000), (1_000_000_000, 100_000_000)] {
            for whole in [0u64, 1, 2, 9, 10, 99, 999] {
                for digit in 0..10 {
                    let tie = whole * unit + digit * tenth + tenth / 2;
                    cases.extend([tie.saturating_sub(1), tie, tie + 1].map(Duration::from_nanos));
                }
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = [0, x >> 60, x >> 40, x][(x % 4) as usize];
            cases.push(Duration::new(secs, ((x >> 11) % 1_000_000_000) as u32));
        }
        for d in cases {
            assert_eq!(super::Took(d).to_string(), format!("{d:.1?}"), "{d:?}");
        }
    }
}
