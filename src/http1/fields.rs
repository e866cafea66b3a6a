//! Header field rules shared by everything that reads or writes HTTP
//! headers (requests, responses, a script's header block, an HTTP
//! backend's answer), kept here, at the lowest HTTP layer, so there is one
//! of each: which values may be sent ([`is_field_value`]), which headers
//! describe a connection rather than the answer ([`HopByHop`]), and how a
//! comma-separated list names a token ([`lists_token`]).

/// `true` for a field value RFC 9110 §5.5 allows, without obsolete text:
/// visible ASCII, spaces and tabs. Anything else (CR, LF, other controls,
/// bytes over 0x7e) could break a head or be read two ways, so a request
/// carrying one is refused, a response header carrying one is dropped, and
/// a value for an HTTP backend that is not one is percent-encoded.
pub fn is_field_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Headers that describe one connection, not the answer (RFC 9110 §7.6.1:
/// `Connection` and what it names — `Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Transfer-Encoding`, `Upgrade` — and `Trailer` from RFC 7230 §4.4):
/// framing is the server's to decide, and a script's `Upgrade` must never
/// turn a page into a protocol switch. `Content-Length` is listed too: it
/// only sizes a body, and the response writer sets its own.
pub const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"];

/// The headers of one message that are not passed on: those
/// [`HOP_BY_HOP`] lists and those its `Connection` header nominates
/// (`Connection: keep-alive, X-Foo` makes `X-Foo` hop-by-hop,
/// RFC 9110 §7.6.1).
#[derive(Debug, Default)]
pub struct HopByHop {
    nominated: Vec<String>,
}

impl HopByHop {
    /// The rule for a message whose `Connection` header values are `connection`.
    pub fn new<'a>(connection: impl IntoIterator<Item = &'a str>) -> Self {
        let nominated = connection
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        HopByHop { nominated }
    }

    /// The rule for a header list given as `(name, value)` pairs.
    pub fn of_pairs<N: AsRef<str>, V: AsRef<str>>(headers: &[(N, V)]) -> Self {
        Self::new(
            headers.iter().filter(|(n, _)| n.as_ref().eq_ignore_ascii_case("connection")).map(|(_, v)| v.as_ref()),
        )
    }

    /// `true` when `name` (any case) is not passed on.
    pub fn contains(&self, name: &str) -> bool {
        HOP_BY_HOP.into_iter().chain(self.nominated.iter().map(String::as_str)).any(|h| name.eq_ignore_ascii_case(h))
    }
}

/// `true` when one of `values`, each a comma-separated list, has `token`
/// as an element (any case): `Connection: keep-alive, Upgrade` lists
/// `upgrade`.
pub fn lists_token<'a>(values: impl IntoIterator<Item = &'a str>, token: &str) -> bool {
    values.into_iter().flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_are_visible_ascii_spaces_and_tabs() {
        assert!(is_field_value(b"text/html; charset=utf-8"));
        assert!(is_field_value(b"a\tb c"));
        assert!(is_field_value(b""));
        for bad in [&b"a\rb"[..], b"a\nb", b"a\x00", b"a\x7f", b"caf\xc3\xa9", b"\x1b[31m"] {
            assert!(!is_field_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_is_the_list_and_what_connection_nominates() {
        let rule = HopByHop::of_pairs(&[("Connection", "keep-alive, X-Foo"), ("connection", "X-Bar"), ("X-Baz", "1")]);
        for gone in [
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Content-Length",
            "x-foo",
            "X-BAR",
        ] {
            assert!(rule.contains(gone), "{gone}");
        }
        assert!(!rule.contains("X-Baz") && !rule.contains("Set-Cookie") && !rule.contains(""));
        assert!(!HopByHop::default().contains("X-Foo"));
    }

    #[test]
    fn comma_lists_name_whole_tokens() {
        assert!(lists_token(["keep-alive, Upgrade"], "upgrade"));
        assert!(lists_token(["close", "x"], "close"));
        assert!(!lists_token(["keep-alive, upgrades"], "upgrade"));
        assert!(!lists_token(["close-ish"], "close"));
        assert!(!lists_token([], "close"));
    }
}
