//! Events: what happened on a connection, with everything a backend needs to
//! describe it to a script (the upgrade request, rooms, metadata).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::action::CloseCause;
use crate::id::ConnId;

/// What serves a URL (a script, or an endpoint of a backend server), as
/// the routing table found it (`gateway::routes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Absolute path of the script file (SCRIPT_FILENAME); empty for an
    /// HTTP backend's route, which has no local file.
    pub filename: PathBuf,
    /// URL path of the script (SCRIPT_NAME); empty in single-script mode.
    pub script_name: String,
    /// The rest of the URL path after the script (PATH_INFO), decoded; may be empty.
    pub path_info: String,
    /// Interpreter and its arguments, when a `--handler` matches the extension.
    pub interpreter: Option<Arc<[String]>>,
}

impl Target {
    /// The endpoint name used for `@broadcast` and presence: SCRIPT_NAME, or
    /// `/` in single-script mode.
    pub fn endpoint(&self) -> &str {
        if self.script_name.is_empty() {
            "/"
        } else {
            &self.script_name
        }
    }
}

/// The HTTP request that opened a connection (or a classic CGI request),
/// read through its accessors.
///
/// Every idle connection keeps one for its whole life (each event's
/// environment is made from it), so it is compact: all its text back to
/// back in one allocation, and where each field ends in a second, instead
/// of a `String` per field and two per header (~25 allocations, ~1 KiB
/// with a browser's headers; [`RequestFields`] builds one).
#[derive(Clone, Default)]
pub struct RequestInfo {
    /// The fixed fields in [`Field`] order, then each header's name and value.
    text: Box<str>,
    /// Where each of them ends in `text`: one `u16` each while the text
    /// is shorter than 64 KiB (every request of the default
    /// `--max-request-head`), two (high, low) from there ([`Ends`]); empty
    /// for the default (every field empty, no header).
    ends: Box<[u16]>,
}

/// How [`RequestInfo::ends`] holds each end: told by the text's length,
/// so that it takes no room of its own. Half the bytes of `u32`s for
/// every idle connection's request (17 ends with the bench's 5 headers:
/// a 48-byte heap chunk instead of 80).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ends {
    Narrow,
    Wide,
}

impl Ends {
    fn of(text_len: usize) -> Ends {
        match text_len > usize::from(u16::MAX) {
            true => Ends::Wide,
            false => Ends::Narrow,
        }
    }

    /// `u16`s per end.
    fn width(self) -> usize {
        match self {
            Ends::Narrow => 1,
            Ends::Wide => 2,
        }
    }

    fn push(self, ends: &mut Vec<u16>, end: u32) {
        match self {
            Ends::Narrow => ends.push(end as u16),
            Ends::Wide => ends.extend([(end >> 16) as u16, end as u16]),
        }
    }

    /// The `i`th end.
    fn get(self, ends: &[u16], i: usize) -> Option<usize> {
        match self {
            Ends::Narrow => ends.get(i).map(|&e| usize::from(e)),
            Ends::Wide => {
                let (high, low) = (*ends.get(2 * i)?, *ends.get(2 * i + 1)?);
                Some(usize::from(high) << 16 | usize::from(low))
            }
        }
    }
}

/// The fixed fields of a request, in their order in [`RequestInfo`].
#[derive(Clone, Copy)]
enum Field {
    Method,
    Uri,
    Query,
    RemoteAddr,
    RemotePort,
    ServerName,
    ServerPort,
}

/// How many fixed fields come before the headers.
const FIELDS: usize = 7;

/// The fixed fields of a [`RequestInfo`] to build (the headers are given
/// beside them to [`RequestInfo::new`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFields<'a> {
    pub method: &'a str,
    /// Raw request target as sent (path and query).
    pub uri: &'a str,
    /// Raw query string, without `?`; empty when absent.
    pub query: &'a str,
    pub remote_addr: &'a str,
    pub remote_port: &'a str,
    pub server_name: &'a str,
    pub server_port: &'a str,
}

impl RequestInfo {
    /// `headers`: names as received (any case) and values, in order,
    /// repeated names kept. A request's text is bounded by
    /// `--max-request-head`; past 4 GiB (never reached) the remaining
    /// headers would be left out rather than mis-sliced.
    pub fn new<'h, H>(f: RequestFields<'_>, headers: H) -> RequestInfo
    where
        H: IntoIterator<Item = (&'h str, &'h str)>,
        H::IntoIter: Clone,
    {
        let headers = headers.into_iter();
        let fixed = [f.method, f.uri, f.query, f.remote_addr, f.remote_port, f.server_name, f.server_port];
        // Sized exactly up front: shrinking afterwards leaves a small free
        // chunk behind every idle connection's request (heap holes that
        // showed in its RSS, not in its live heap).
        let len = fixed.iter().map(|s| s.len()).sum::<usize>()
            + headers.clone().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        let mut text = String::with_capacity(len);
        let width = Ends::of(len);
        let mut ends = Vec::with_capacity((FIELDS + 2 * headers.clone().count()) * width.width());
        for s in fixed {
            if !push(&mut text, &mut ends, width, s) {
                push(&mut text, &mut ends, width, "");
            }
        }
        for (name, value) in headers {
            let mark = (text.len(), ends.len());
            if !(push(&mut text, &mut ends, width, name) && push(&mut text, &mut ends, width, value)) {
                text.truncate(mark.0);
                ends.truncate(mark.1);
                break;
            }
        }
        if Ends::of(text.len()) != width {
            // Cut past 4 GiB (never reached) to under 64 KiB: as the text's
            // length tells the readers.
            let all: Vec<u32> = (0..ends.len() / 2).filter_map(|i| width.get(&ends, i)).map(|e| e as u32).collect();
            ends = Vec::with_capacity(all.len());
            all.into_iter().for_each(|e| Ends::Narrow.push(&mut ends, e));
        }
        RequestInfo { text: text.into_boxed_str(), ends: ends.into_boxed_slice() }
    }

    /// The same request with another request line (a page's local
    /// redirect; a test).
    pub fn with_request_line(&self, method: &str, uri: &str, query: &str) -> RequestInfo {
        let f = RequestFields { method, uri, query, ..self.fields() };
        RequestInfo::new(f, self.headers())
    }

    /// The `i`th string: a fixed field, then the headers' names and values.
    fn at(&self, i: usize) -> &str {
        let width = Ends::of(self.text.len());
        let Some(end) = width.get(&self.ends, i) else { return "" };
        let start = if i == 0 { 0 } else { width.get(&self.ends, i - 1).unwrap_or_default() };
        self.text.get(start..end).unwrap_or_default()
    }

    /// How many strings it holds (fields, then names and values).
    fn count(&self) -> usize {
        self.ends.len() / Ends::of(self.text.len()).width()
    }

    fn field(&self, f: Field) -> &str {
        self.at(f as usize)
    }

    pub fn method(&self) -> &str {
        self.field(Field::Method)
    }

    /// Raw request target as sent (path and query).
    pub fn uri(&self) -> &str {
        self.field(Field::Uri)
    }

    /// Raw query string, without `?`; empty when absent.
    pub fn query(&self) -> &str {
        self.field(Field::Query)
    }

    pub fn remote_addr(&self) -> &str {
        self.field(Field::RemoteAddr)
    }

    pub fn remote_port(&self) -> &str {
        self.field(Field::RemotePort)
    }

    pub fn server_name(&self) -> &str {
        self.field(Field::ServerName)
    }

    pub fn server_port(&self) -> &str {
        self.field(Field::ServerPort)
    }

    /// Its fixed fields.
    pub fn fields(&self) -> RequestFields<'_> {
        RequestFields {
            method: self.method(),
            uri: self.uri(),
            query: self.query(),
            remote_addr: self.remote_addr(),
            remote_port: self.remote_port(),
            server_name: self.server_name(),
            server_port: self.server_port(),
        }
    }

    /// How many headers it has.
    pub fn header_count(&self) -> usize {
        self.count().saturating_sub(FIELDS) / 2
    }

    /// The `i`th header: its name as received (any case) and its value.
    pub fn header(&self, i: usize) -> (&str, &str) {
        (self.at(FIELDS + 2 * i), self.at(FIELDS + 2 * i + 1))
    }

    /// Its headers in the order received, repeated names kept.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone + '_ {
        (0..self.header_count()).map(|i| self.header(i))
    }

    /// The value of the first header named `name` (any case).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
}

/// Appends `s` and where it ends; `false` (nothing appended) past 4 GiB.
fn push(text: &mut String, ends: &mut Vec<u16>, width: Ends, s: &str) -> bool {
    match u32::try_from(text.len() + s.len()) {
        Ok(end) => {
            text.push_str(s);
            width.push(ends, end);
            true
        }
        Err(_) => false,
    }
}

impl std::fmt::Debug for RequestInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestInfo")
            .field("fields", &self.fields())
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

/// Everything fixed for the life of one connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub id: ConnId,
    pub target: Target,
    pub request: RequestInfo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Open,
    Message {
        payload: Bytes,
        binary: bool,
    },
    Close {
        code: u16,
        reason: String,
        cause: CloseCause,
    },
    /// A resumable session was resumed (`--events` with `resume`): the
    /// resumes so far, and the address the client resumed from.
    Resume {
        count: u32,
        remote_addr: String,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Open => "open",
            EventKind::Message { .. } => "message",
            EventKind::Close { .. } => "close",
            EventKind::Resume { .. } => "resume",
        }
    }
}

/// One event of one connection, with the connection's state at the moment
/// the event is handed to the backend.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    pub conn: Arc<ConnInfo>,
    /// Sorted room names.
    pub rooms: Vec<String>,
    /// Metadata entries, sorted by key.
    pub meta: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RequestInfo {
        let f = RequestFields {
            method: "GET",
            uri: "/chat?x=1",
            query: "x=1",
            remote_addr: "::1",
            remote_port: "5000",
            server_name: "example.org",
            server_port: "8080",
        };
        RequestInfo::new(f, [("Host", "example.org:8080"), ("X-A", ""), ("x-a", "2"), ("Cookie", "a=b; c=d")])
    }

    #[test]
    fn a_request_reads_back_every_field_and_header_in_order() {
        let r = sample();
        let f = r.fields();
        assert_eq!(
            [f.method, f.uri, f.query, f.remote_addr, f.remote_port, f.server_name, f.server_port],
            ["GET", "/chat?x=1", "x=1", "::1", "5000", "example.org", "8080"]
        );
        assert_eq!(
            r.headers().collect::<Vec<_>>(),
            [("Host", "example.org:8080"), ("X-A", ""), ("x-a", "2"), ("Cookie", "a=b; c=d")]
        );
        assert_eq!((r.header_count(), r.header(2)), (4, ("x-a", "2")));
        assert_eq!(
            (r.header_value("x-A"), r.header_value("cookie"), r.header_value("Origin")),
            (Some(""), Some("a=b; c=d"), None)
        );
        let d = RequestInfo::default();
        assert_eq!((d.method(), d.server_port(), d.header_count()), ("", "", 0));
    }

    #[test]
    fn a_local_redirect_changes_the_request_line_only() {
        let r = sample().with_request_line("POST", "/other", "");
        assert_eq!(
            (r.method(), r.uri(), r.query(), r.remote_addr(), r.server_port()),
            ("POST", "/other", "", "::1", "8080")
        );
        assert_eq!(r.headers().collect::<Vec<_>>(), sample().headers().collect::<Vec<_>>());
    }

    /// Ends are `u16`s while the text is under 64 KiB, pairs of them from
    /// there: every field and header reads back either way, at the edge too.
    #[test]
    fn a_request_over_64_kib_reads_back_as_one_under() {
        let f = RequestFields { method: "GET", uri: "/c", server_port: "80", ..Default::default() };
        let fixed = "GET".len() + "/c".len() + "80".len();
        for total in [65_535, 65_536, 200_000] {
            // Two headers; the second's value fills the text up to `total`.
            let big = "v".repeat(total - fixed - "A".len() - "1".len() - "B".len());
            let r = RequestInfo::new(f, [("A", "1"), ("B", big.as_str())]);
            assert_eq!(r.text.len(), total);
            assert_eq!(r.headers().collect::<Vec<_>>(), [("A", "1"), ("B", big.as_str())], "{total}");
            assert_eq!((r.method(), r.uri(), r.query(), r.server_port()), ("GET", "/c", "", "80"));
            let width = if total > 65_535 { 2 } else { 1 };
            assert_eq!(r.ends.len(), (FIELDS + 2 * 2) * width, "{total}");
        }
    }

    /// The ends are offsets, not counts: more strings than a `u16` counts
    /// (40,000 headers with one-letter names and empty values: 80,007 ends
    /// in a 40,007-byte text) all read back, and a text of exactly 64 KiB
    /// less one byte ends at `u16::MAX` itself.
    #[test]
    fn more_ends_than_a_u16_counts_and_the_last_narrow_end() {
        let f = RequestFields { method: "GET", uri: "/c", server_port: "80", ..Default::default() };
        let names: Vec<String> = (0..40_000).map(|i| ((b'a' + (i % 26) as u8) as char).to_string()).collect();
        let r = RequestInfo::new(f, names.iter().map(|n| (n.as_str(), "")));
        assert_eq!(r.header_count(), 40_000);
        assert_eq!(r.ends.len(), FIELDS + 2 * 40_000, "one u16 per end: the text is under 64 KiB");
        assert!(r.headers().map(|(n, v)| (n.to_owned(), v)).eq(names.iter().map(|n| (n.clone(), ""))));
        assert_eq!(r.fields().server_port, "80");
        // The last header's value ends at 65,535 (narrow) or 65,536 (wide).
        for total in [65_535usize, 65_536] {
            let fill = "v".repeat(total - "GET/c80".len() - 1);
            let r = RequestInfo::new(f, [("Z", fill.as_str())]);
            assert_eq!(r.text.len(), total);
            assert_eq!(r.header_value("z"), Some(fill.as_str()), "{total}");
            assert_eq!(r.at(FIELDS + 1).len(), fill.len(), "{total}");
            assert_eq!(r.at(FIELDS + 2), "", "past the last string, {total}");
        }
    }

    /// Every idle connection keeps its request: two allocations, whatever
    /// its header count (a `String` per field and two per header, ~25
    /// allocations and 192 bytes inline, before).
    #[test]
    fn a_request_is_two_allocations_and_small_inline() {
        assert!(std::mem::size_of::<RequestInfo>() <= 32);
        let r = sample();
        let text: usize = r.fields().uri.len() + 3 + 3 + 3 + 4 + 11 + 4;
        let headers: usize = r.headers().map(|(n, v)| n.len() + v.len()).sum();
        assert_eq!(r.text.len(), text + headers);
        assert_eq!(r.ends.len(), FIELDS + 2 * 4, "one u16 per end under 64 KiB");
    }
}
