//! The seam between the WebSocket side and whatever runs the application.
//!
//! A backend turns one [`Event`] into CGI-style output: an optional header
//! block and a stream of [`Action`]s, delivered through a callback as they are
//! produced so that a long script can stream progress. The CGI backend spawns
//! a process; FastCGI or HTTP backends plug in behind the same trait.

use std::future::Future;
use std::pin::Pin;

use crate::action::Action;
use crate::event::Event;

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
}

/// `true` when a header value from a script may go into an HTTP response:
/// printable ASCII and tabs only. Control characters would corrupt the
/// response, and the HTTP library accepts nothing but ASCII.
pub fn sendable_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// One piece of backend output, in the order it was produced.
#[derive(Debug)]
pub enum Output {
    /// The header block; comes first, at most once.
    Head(Head),
    /// Something to do.
    Action(Action),
    /// The raw body, only for an open event whose head rejects it (non-2xx):
    /// it becomes the HTTP response body.
    RejectBody(Vec<u8>),
}

/// How the backend's work for one event ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The script failed (non-zero exit, killed by a signal, timed out, could
    /// not start); the text says how, for the log.
    Failed(String),
    /// The backend server could not be reached or broke off (FastCGI, HTTP):
    /// like a crash, but a failed open answers 502 instead of 500.
    Unavailable(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Backend: Send + Sync + 'static {
    /// Runs `event`, calling `out` for each piece of output as it arrives.
    fn run<'a>(&'a self, event: &'a Event, out: &'a mut (dyn FnMut(Output) + Send)) -> BoxFuture<'a, Outcome>;
}
