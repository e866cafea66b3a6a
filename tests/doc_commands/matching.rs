//! Comparing what a command printed with what the docs show. Values that
//! differ on every run are matched by kind, so the docs can show realistic
//! ones: `...` (or `…`) stands for any text, a 32-hex-digit id for any such id,
//! an RFC 3339 time for any time, a duration (`3.1ms`, `2s`) for any duration.

#[derive(Debug, PartialEq)]
enum Tok {
    Lit(char),
    Any,
    Hex32,
    Time,
    Duration,
}

/// Whether `actual` is one of the lines `expected` describes (trailing
/// spaces ignored on both).
pub fn line_matches(expected: &str, actual: &str) -> bool {
    let toks = tokens(expected.trim_end());
    let actual: Vec<char> = actual.trim_end().chars().collect();
    matches_from(&toks, &actual)
}

/// The same, with all white space left out of both: for output shown in
/// `# ...` comments, which may wrap a long line.
pub fn loosely_matches(expected: &str, actual: &str) -> bool {
    let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    line_matches(&squeeze(expected), &squeeze(actual))
}

fn tokens(expected: &str) -> Vec<Tok> {
    let e: Vec<char> = expected.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < e.len() {
        let rest = &e[i..];
        let after_word = i > 0 && e[i - 1].is_ascii_alphanumeric();
        let (tok, len) = if rest.starts_with(&['.', '.', '.']) {
            (Tok::Any, 3)
        } else if rest[0] == '…' {
            (Tok::Any, 1)
        } else if let Some(n) = time_len(rest) {
            (Tok::Time, n)
        } else if !after_word && hex32(rest) {
            (Tok::Hex32, 32)
        } else if let Some(n) = duration_len(rest).filter(|_| !after_word && (i == 0 || e[i - 1] != '.')) {
            (Tok::Duration, n)
        } else {
            (Tok::Lit(rest[0]), 1)
        };
        out.push(tok);
        i += len;
    }
    out
}

fn matches_from(toks: &[Tok], a: &[char]) -> bool {
    let Some(first) = toks.first() else { return a.is_empty() };
    let rest = &toks[1..];
    match first {
        Tok::Lit(c) => a.first() == Some(c) && matches_from(rest, &a[1..]),
        Tok::Any => (0..=a.len()).any(|k| matches_from(rest, &a[k..])),
        Tok::Hex32 => hex32(a) && matches_from(rest, &a[32..]),
        Tok::Time => time_len(a).is_some_and(|n| matches_from(rest, &a[n..])),
        Tok::Duration => duration_len(a).is_some_and(|n| matches_from(rest, &a[n..])),
    }
}

/// 32 lowercase hex digits, not followed by another alphanumeric.
fn hex32(s: &[char]) -> bool {
    s.len() >= 32
        && s[..32].iter().all(|c| c.is_ascii_digit() || ('a'..='f').contains(c))
        && s.get(32).is_none_or(|c| !c.is_ascii_alphanumeric())
}

fn digits(s: &[char]) -> usize {
    s.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// `2026-11-24T11:00:00Z`, with optional fraction and a `Z` or `+HH:MM`
/// zone; or a time of day, `11:00:00`.
fn time_len(s: &[char]) -> Option<usize> {
    let clock = "dd:dd:dd";
    let fits = |shape: &str| {
        s.len() >= shape.len() && shape.chars().zip(s).all(|(p, c)| if p == 'd' { c.is_ascii_digit() } else { p == *c })
    };
    if fits(clock) && s.get(clock.len()).is_none_or(|c| !c.is_ascii_digit()) {
        return Some(clock.len());
    }
    let shape = "dddd-dd-ddTdd:dd:dd";
    if !fits(shape) {
        return None;
    }
    let mut n = shape.len();
    if s.get(n) == Some(&'.') && digits(&s[n + 1..]) > 0 {
        n += 1 + digits(&s[n + 1..]);
    }
    match s.get(n) {
        Some('Z') => Some(n + 1),
        Some('+' | '-') if s.len() >= n + 6 && digits(&s[n + 1..]) == 2 && s[n + 3] == ':' => Some(n + 6),
        _ => None,
    }
}

/// `3.1ms`, `12µs`, `2s`: digits, an optional fraction, a unit.
fn duration_len(s: &[char]) -> Option<usize> {
    let mut n = digits(s);
    if n == 0 {
        return None;
    }
    if s.get(n) == Some(&'.') && digits(&s[n + 1..]) > 0 {
        n += 1 + digits(&s[n + 1..]);
    }
    let unit = ["ms", "µs", "us", "ns", "s"].iter().find(|u| s[n..].starts_with(&u.chars().collect::<Vec<_>>()))?;
    let end = n + unit.chars().count();
    s.get(end).is_none_or(|c| !c.is_alphanumeric()).then_some(end)
}

/// The harness's own checks (a `harness = false` test runs no #[test]).
pub mod self_test {
    use super::*;

    pub fn placeholders_match_values_of_their_kind_only() {
        assert!(line_matches("duration: 3.1ms", "duration: 27.25ms"));
        assert!(line_matches("duration: 3.1ms", "duration: 2s"));
        assert!(!line_matches("duration: 3.1ms", "duration: soon"));
        assert!(line_matches(
            "event:    open for connection 301805a76dc3907d26f23b51f1e70272",
            "event:    open for connection 2e83f7d82ea4b972f6cd26ab5ae7a385"
        ));
        assert!(!line_matches("id 301805a76dc3907d26f23b51f1e70272", "id 2E83F7D82EA4B972F6CD26AB5AE7A385"));
        assert!(line_matches(r#"{"at":"2026-11-24T11:00:00Z"}"#, r#"{"at":"2025-01-02T03:04:05.123Z"}"#));
        assert!(line_matches("text \"* welcome to lobby, alice: ...\"", "text \"* welcome to lobby, alice: hi\""));
        assert!(!line_matches("hello", "hello world"));
        assert!(line_matches("hello  ", "hello"));
        assert!(loosely_matches("[{\"a\":1,\n  \"b\":2}]", "[{\"a\":1,\"b\":2}]"));
        assert!(line_matches("ws2http 0.1.0", "ws2http 0.1.0"));
        assert!(line_matches("tick 1/10: 11:00:01 UTC", "tick 1/10: 04:31:59 UTC"));
    }
}
