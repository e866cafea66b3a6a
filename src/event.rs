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

/// The HTTP request that opened a connection (or a classic CGI request).
#[derive(Clone, Debug, Default)]
pub struct RequestInfo {
    pub method: String,
    /// Raw request target as sent (path and query).
    pub uri: String,
    /// Raw query string, without `?`; empty when absent.
    pub query: String,
    /// Header names as received (any case) and values; repeated names kept.
    pub headers: Vec<(String, String)>,
    pub remote_addr: String,
    pub remote_port: String,
    pub server_name: String,
    pub server_port: String,
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
    Message { payload: Bytes, binary: bool },
    Close { code: u16, reason: String, cause: CloseCause },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Open => "open",
            EventKind::Message { .. } => "message",
            EventKind::Close { .. } => "close",
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
