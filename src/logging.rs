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

/// A log message, its controls escaped ([`escape_controls`]); one string,
/// made once (a plain message without arguments is not even copied twice).
fn escaped_args(args: &std::fmt::Arguments<'_>) -> std::borrow::Cow<'static, str> {
    let text = match args.as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(args.to_string()),
    };
    let needs = needs_escape;
    match text {
        std::borrow::Cow::Borrowed(s) if !s.chars().any(needs) => std::borrow::Cow::Borrowed(s),
        std::borrow::Cow::Owned(s) if !s.chars().any(needs) => std::borrow::Cow::Owned(s),
        other => std::borrow::Cow::Owned(escape_controls(&other)),
    }
}

/// What [`escape_controls`] escapes.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `a\nb` → `a\\nb`: C0 and C1 controls, DEL and the Unicode line and
/// paragraph separators as visible escapes; everything else unchanged.
pub fn escape_controls(s: &str) -> String {
    let needs = needs_escape;
    if !s.chars().any(needs) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
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
    use super::{escape_controls, quoted, quoted_short};

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

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("plain text: ok"), "plain text: ok");
        assert_eq!(escape_controls("x\n[2026 WARN] FORGED"), "x\\n[2026 WARN] FORGED");
        assert_eq!(escape_controls("a\r\tb\x1b[31m\x7f"), "a\\r\\tb\\x1b[31m\\x7f");
        assert_eq!(escape_controls("c1\u{85} ls\u{2028} é ✓"), "c1\\x85 ls\\u{2028} é ✓");
    }
}
