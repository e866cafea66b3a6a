//! What a script (or the control API) asks the server to do.
//!
//! Every producer of work — the CGI stdout parser, the control API, later the
//! FastCGI and HTTP backends — turns its input into [`Action`]s. Only the hub
//! executes them, so the rules for delivery live in one place.

use async_tungstenite::tungstenite::Utf8Bytes;
use bytes::Bytes;

use crate::id::ConnId;

/// One outgoing WebSocket message. Cheap to clone: fan-out to a room shares
/// the same buffer between all recipients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Message {
    pub fn text(s: impl Into<Utf8Bytes>) -> Self {
        Message::Text(s.into())
    }

    /// A text message from raw bytes; `None` when they are not UTF-8.
    pub fn text_from_bytes(b: Vec<u8>) -> Option<Self> {
        Utf8Bytes::try_from(b).ok().map(Message::Text)
    }

    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a connection is being closed by the server (reported to the close
/// event as `WS_CLOSE_CAUSE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// The client sent a close frame.
    Client,
    /// The TCP connection ended without a close frame.
    Dropped,
    /// A script printed `@close`.
    Script,
    /// `DELETE /connections/{id}` or `@close` through `POST /actions`.
    Api,
    /// The server is shutting down.
    Shutdown,
    /// The client sent a message larger than `--max-message`.
    TooBig,
    /// The client did not read what it was sent.
    SlowConsumer,
    /// More events waited for this connection than `--max-queue`.
    QueueFull,
    /// No answer to a ping within `--ping-interval`.
    PingTimeout,
}

impl CloseCause {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Client => "client",
            CloseCause::Dropped => "dropped",
            CloseCause::Script => "script",
            CloseCause::Api => "api",
            CloseCause::Shutdown => "shutdown",
            CloseCause::TooBig => "too-big",
            CloseCause::SlowConsumer => "slow-consumer",
            CloseCause::QueueFull => "queue-full",
            CloseCause::PingTimeout => "ping-timeout",
        }
    }
}

/// One thing to do. Targets are always explicit: the parser resolves "this
/// connection" to its id before the hub sees the action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A message to one connection (`@send`, or a plain output line).
    Send {
        to: ConnId,
        msg: Message,
    },
    /// A message to every member of a room, optionally except one (`@others`).
    Room {
        room: String,
        msg: Message,
        except: Option<ConnId>,
    },
    /// A message to every connection, or every connection of one endpoint.
    Broadcast {
        endpoint: Option<String>,
        msg: Message,
    },
    Join {
        conn: ConnId,
        room: String,
    },
    Leave {
        conn: ConnId,
        room: String,
    },
    /// Set (`Some`) or remove (`None`) one metadata entry.
    SetMeta {
        conn: ConnId,
        key: String,
        value: Option<String>,
    },
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
        cause: CloseCause,
    },
}

/// Close codes a server may put in a close frame (RFC 6455 §7.4).
pub fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
