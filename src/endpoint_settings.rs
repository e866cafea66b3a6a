//! How endpoints run and present themselves, beyond the flags' plain
//! values: which paths run one process per connection (`--per-connection`,
//! its globs), and what websocketd's command line changes (its CGI
//! environment, `--header*`, `--cgidir`, `--origin` host lists). Apart from
//! config.rs so the flags stay readable there.

use std::path::PathBuf;

use clap::ValueEnum;
use std::time::Duration;

/// websocketd's `--origin host[:port],...` (and `--sameorigin` with it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginHosts {
    /// `host` (any port), `host:port`, `scheme://host[:port]`, or `*` (any origin).
    pub hosts: Vec<String>,
    /// `--sameorigin` too: the Origin must also name the Host.
    pub same_origin: bool,
}

/// The CGI environment a script gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CgiFlavour {
    /// RFC 3875 as ws2http sets it (docs/PROTOCOL.md).
    #[default]
    Ws2http,
    /// websocketd 0.4.1's names and values (`GATEWAY_INTERFACE=websocketd-CGI/0.1`,
    /// `UNIQUE_ID`, `REMOTE_HOST`, ...), with its documented bugs fixed
    /// (README.md "Coming from websocketd").
    Websocketd,
}

/// Extra headers on public responses (websocketd's `--header*` flags), in
/// the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// Every response.
    pub all: Vec<(String, String)>,
    /// Successful upgrades (`101`) only.
    pub ws: Vec<(String, String)>,
    /// Every response but a successful upgrade.
    pub http: Vec<(String, String)>,
}

impl ResponseHeaders {
    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.ws.is_empty() && self.http.is_empty()
    }
}

/// Where a plain HTTP request finds a script to run as classic CGI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PageScripts {
    /// ws2http: the endpoint scripts of `--cgi-bin` serve pages too.
    #[default]
    CgiBin,
    /// websocketd `--cgidir`: only the files of this directory (canonical),
    /// never the WebSocket scripts.
    Dir(PathBuf),
    /// websocketd without `--cgidir`: no script runs for a plain request.
    Off,
}

/// The process-per-connection lifetime (`--per-connection` and the flags
/// around it; docs/PROTOCOL.md, "One process per connection").
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerConnection {
    /// Globs on the URL path (`*` any run of characters, `/` included).
    pub patterns: Vec<String>,
    /// `--per-connection-directives`.
    pub directives: bool,
    /// `--per-connection-binary`.
    pub binary: bool,
    /// `--close-grace`.
    pub close_grace: Duration,
    /// `--max-connection-procs`.
    pub max_procs: usize,
}

impl PerConnection {
    /// `true` when `path` (a URL path, or an endpoint) is one of the patterns'.
    pub fn matches(&self, path: &str) -> bool {
        self.patterns.iter().any(|p| glob(p.as_bytes(), path.as_bytes()))
    }
}

/// `*` matches any run of bytes, `?` one byte, everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t, mut star) = (0, 0, None);
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `--per-connection` patterns: each a URL path glob (`/x`, `/live/*`) or
/// `*`. An empty one (`--per-connection ''`, `/a,,/b`) would select nothing
/// without a word: refused.
pub(crate) fn per_connection_patterns(given: &[String]) -> Result<Vec<String>, String> {
    given
        .iter()
        .map(|p| p.trim())
        .map(|p| match p.starts_with('/') || p.starts_with('*') {
            true => Ok(p.to_owned()),
            false if p.is_empty() => Err("--per-connection '': an empty pattern selects nothing; give a URL path \
                                          pattern (e.g. /count.sh, /live/*) or *"
                .to_owned()),
            false => {
                Err(format!("--per-connection {p}: a URL path pattern starts with / (e.g. /count.sh, /live/*) or is *"))
            }
        })
        .collect()
}

/// One name in `--events`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventArg {
    Open,
    Message,
    Close,
    Resume,
}

/// Which events run the script (`--events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Events {
    pub open: bool,
    pub message: bool,
    pub close: bool,
    /// Off unless listed: a session's resume (docs/PROTOCOL.md).
    pub resume: bool,
}

impl Events {
    pub fn from_list(list: &[EventArg]) -> Self {
        Events {
            open: list.contains(&EventArg::Open),
            message: list.contains(&EventArg::Message),
            close: list.contains(&EventArg::Close),
            resume: list.contains(&EventArg::Resume),
        }
    }

    /// `true` when events of this kind run the script.
    pub fn wants(&self, kind: &crate::event::EventKind) -> bool {
        use crate::event::EventKind;
        match kind {
            EventKind::Open => self.open,
            EventKind::Message { .. } => self.message,
            EventKind::Close { .. } => self.close,
            EventKind::Resume { .. } => self.resume,
        }
    }
}
