//! What a script (or the control API) asks the server to do.
//!
//! Every producer of work — the output parser every backend shares (spawned
//! scripts, FastCGI, HTTP), the control API, other instances in a cluster —
//! turns its input into [`Action`]s. Only the hub executes them, so the
//! rules for delivery live in one place.

use async_tungstenite::tungstenite::Utf8Bytes;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::ConnId;

/// One outgoing WebSocket message. Cheap to clone: fan-out to a room shares
/// the same buffer between all recipients.
///
/// On the cluster's wire (see `hub::wire`): `{"t": "text"}` or
/// `{"b": "base64"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    #[serde(rename = "t", with = "text_serde")]
    Text(Utf8Bytes),
    #[serde(rename = "b", with = "base64_serde")]
    Binary(Bytes),
}

/// A text message as a JSON string.
mod text_serde {
    use super::Utf8Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Utf8Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Utf8Bytes, D::Error> {
        String::deserialize(d).map(Utf8Bytes::from)
    }
}

/// A binary message as a standard base64 string (JSON has no bytes).
mod base64_serde {
    use super::Bytes;
    use base64::Engine;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text).map(Bytes::from).map_err(D::Error::custom)
    }
}

impl Message {
    pub fn text(s: impl Into<Utf8Bytes>) -> Self {
        Message::Text(s.into())
    }

    /// The message in words: text as a JSON string, binary as its length
    /// and first 16 bytes in hex.
    pub fn describe(&self) -> String {
        match self {
            Message::Text(t) => format!("text {}", serde_json::to_string(t.as_str()).unwrap_or_default()),
            Message::Binary(b) => {
                let hex: Vec<String> = b.iter().take(16).map(|x| format!("{x:02x}")).collect();
                format!("binary {} bytes [{}{}]", b.len(), hex.join(" "), if b.len() > 16 { " …" } else { "" })
            }
        }
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
/// event as `WS_CLOSE_CAUSE`). On the cluster's wire it is the same name
/// as [`CloseCause::as_str`] (a test checks they agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    /// The client broke the WebSocket protocol (invalid UTF-8, a bad
    /// frame): closed with 1002 or 1007.
    ProtocolError,
    /// A message from the client arrived too slowly (beyond `--http-timeout`,
    /// under 1 KiB/s on average): closed with 1008.
    TooSlow,
    /// A resumable session was not resumed within `--resume-grace`.
    ResumeExpired,
    /// A detached session was sent more than `--resume-buffer` (or
    /// `--resume-buffer-bytes`) kept for it.
    ResumeOverflow,
    /// A resume asked for messages the session no longer kept.
    ResumeGap,
}

impl CloseCause {
    /// Every cause, in the order of the docs (tests cover each one).
    pub const ALL: [CloseCause; 14] = [
        CloseCause::Client,
        CloseCause::Dropped,
        CloseCause::Script,
        CloseCause::Api,
        CloseCause::Shutdown,
        CloseCause::TooBig,
        CloseCause::SlowConsumer,
        CloseCause::QueueFull,
        CloseCause::PingTimeout,
        CloseCause::ProtocolError,
        CloseCause::TooSlow,
        CloseCause::ResumeExpired,
        CloseCause::ResumeOverflow,
        CloseCause::ResumeGap,
    ];

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
            CloseCause::ProtocolError => "protocol-error",
            CloseCause::TooSlow => "too-slow",
            CloseCause::ResumeExpired => "resume-expired",
            CloseCause::ResumeOverflow => "resume-overflow",
            CloseCause::ResumeGap => "resume-gap",
        }
    }
}

/// One thing to do. Targets are always explicit: the parser resolves "this
/// connection" to its id before the hub sees the action.
///
/// Serialized, it is the cluster's wire format (see `hub::wire`): an object
/// whose `k` names the variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Action {
    /// A message to one connection (`@send`, or a plain output line).
    Send {
        to: ConnId,
        #[serde(rename = "m")]
        msg: Message,
    },
    /// A message to every member of a room, optionally except one (`@others`).
    Room {
        room: String,
        #[serde(rename = "m")]
        msg: Message,
        except: Option<ConnId>,
    },
    /// A message to every connection, or every connection of one endpoint.
    Broadcast {
        endpoint: Option<String>,
        #[serde(rename = "m")]
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
    #[serde(rename = "set")]
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

/// Whom an action concerns: what the cluster routes by and the control API
/// counts. Each variant says it here, so a new directive is a change in
/// this file, its parser (`gateway::directive`) and its execution
/// (`hub::local`), nowhere else.
#[derive(Debug, PartialEq, Eq)]
pub enum Addressee<'a> {
    /// One connection (a message to it, or a change of its state).
    Conn(&'a ConnId),
    /// Every member of a room, maybe except one.
    Room { room: &'a str, except: Option<&'a ConnId> },
    /// Every connection, or those of one endpoint.
    Endpoint(Option<&'a str>),
}

impl Action {
    pub fn addressee(&self) -> Addressee<'_> {
        match self {
            Action::Send { to, .. } => Addressee::Conn(to),
            Action::Join { conn, .. } | Action::Leave { conn, .. } => Addressee::Conn(conn),
            Action::SetMeta { conn, .. } | Action::Close { conn, .. } => Addressee::Conn(conn),
            Action::Room { room, except, .. } => Addressee::Room { room, except: except.as_ref() },
            Action::Broadcast { endpoint, .. } => Addressee::Endpoint(endpoint.as_deref()),
        }
    }

    /// The message it delivers, for those that deliver one.
    pub fn message(&self) -> Option<&Message> {
        match self {
            Action::Send { msg, .. } | Action::Room { msg, .. } | Action::Broadcast { msg, .. } => Some(msg),
            Action::Join { .. } | Action::Leave { .. } | Action::SetMeta { .. } | Action::Close { .. } => None,
        }
    }

    /// The action in words (`ws2http try`); "this connection" for `me`.
    pub fn describe(&self, me: &ConnId) -> String {
        let who = |id: &ConnId| if id == me { "this connection".to_owned() } else { format!("connection {id}") };
        match self {
            Action::Send { to, msg } => format!("send to {}: {}", who(to), msg.describe()),
            Action::Room { room, msg, except: None } => format!("to room {room}: {}", msg.describe()),
            Action::Room { room, msg, except: Some(_) } => {
                format!("to room {room} except this connection: {}", msg.describe())
            }
            Action::Broadcast { endpoint, msg } => format!(
                "broadcast to every connection of {}: {}",
                endpoint.as_deref().unwrap_or("every endpoint"),
                msg.describe()
            ),
            Action::Join { conn, room } => format!("{} joins room {room}", who(conn)),
            Action::Leave { conn, room } => format!("{} leaves room {room}", who(conn)),
            Action::SetMeta { conn, key, value: Some(v) } => format!("{}: set {key} = {v:?}", who(conn)),
            Action::SetMeta { conn, key, value: None } => format!("{}: remove {key}", who(conn)),
            Action::Close { conn, code, reason, .. } => format!("close {} with {code} {reason:?}", who(conn)),
        }
    }

    /// One or more examples of every variant (and a close for every cause),
    /// for the tests that must cover them all (the cluster's wire format).
    #[cfg(test)]
    pub(crate) fn examples() -> Vec<Action> {
        let id = |s: &str| ConnId::parse(s).expect("valid id");
        let mut all = vec![
            Action::Send { to: id("abcd1234ff"), msg: Message::text("hi") },
            Action::Send { to: id("a1"), msg: Message::Binary(vec![0, 255, 10, 13].into()) },
            Action::Send { to: id("a1"), msg: Message::text("") },
            Action::Send { to: id("a1"), msg: Message::text("line\nbreak \"quoted\" é ☃ \u{0}") },
            Action::Room { room: "r".into(), msg: Message::text("x"), except: Some(id("b")) },
            Action::Room { room: "r".into(), msg: Message::Binary(Vec::new().into()), except: None },
            Action::Broadcast { endpoint: Some("/chat.sh".into()), msg: Message::text("y") },
            Action::Broadcast { endpoint: None, msg: Message::text("y") },
            Action::Join { conn: id("c"), room: "r".into() },
            Action::Leave { conn: id("c"), room: "r".into() },
            Action::SetMeta { conn: id("c"), key: "k".into(), value: Some("v".into()) },
            Action::SetMeta { conn: id("c"), key: "k".into(), value: Some(String::new()) },
            Action::SetMeta { conn: id("c"), key: "k".into(), value: None },
        ];
        for cause in CloseCause::ALL {
            all.push(Action::Close { conn: id("c"), code: 4000, reason: format!("bye {}", cause.as_str()), cause });
        }
        all
    }
}

/// Close codes a server may put in a close frame (RFC 6455 §7.4).
fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Longest close reason: a close frame's payload is at most 125 bytes, two
/// of them the code (RFC 6455 §5.5).
pub const MAX_CLOSE_REASON: usize = 123;

/// What is wrong with a close a script (`@close`) or the control API
/// (`DELETE /connections/ID`) asked for; each words it for its own user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadClose {
    /// Not a number, or not a code a server may send (1000-1003, 1007-1014, 3000-4999).
    Code,
    /// Over [`MAX_CLOSE_REASON`] bytes.
    Reason,
}

/// The one check of a requested close: its code as written (`None`: not
/// given, 1000) and its reason. Returns the code.
pub fn check_close(code: Option<&str>, reason: &str) -> Result<u16, BadClose> {
    let code = match code {
        None => 1000,
        Some(c) => c.parse::<u16>().ok().filter(|&c| is_sendable_close_code(c)).ok_or(BadClose::Code)?,
    };
    if reason.len() > MAX_CLOSE_REASON {
        return Err(BadClose::Reason);
    }
    Ok(code)
}

/// Caps on what a connection carries into the environment of every later
/// spawn: its metadata (`WS_META_<KEY>=VALUE`, one variable per entry) and
/// its rooms (`WS_ROOMS`, the names joined by spaces).
///
/// Linux refuses to start a program (`E2BIG`) when one `NAME=VALUE` string
/// is over 128 KiB (`MAX_ARG_STRLEN`), or when all of them, with one
/// pointer each, are over a quarter of the stack limit and never less than
/// 128 KiB. With these caps the worst case stays under that smallest limit:
///
/// | part | worst case |
/// | --- | ---: |
/// | 16 KiB request head as `HTTP_*`, `REQUEST_URI`, `QUERY_STRING`, `PATH_INFO`, `PATH_TRANSLATED` (each head byte at most 4 times, pointers included) | 64 KiB |
/// | metadata: [`META_TOTAL`] counted with [`ENTRY_OVERHEAD`] per entry (prefix, `=`, NUL and pointer are 18 bytes) | 16 KiB |
/// | `WS_ROOMS`: [`ROOMS`] names of [`ROOM_NAME`] bytes and their spaces | 8.1 KiB |
/// | the fixed variables (`GATEWAY_INTERFACE`, `WS_*`, paths, ...) | < 4 KiB |
/// | **total** (plus `PATH` and `--pass-env`, chosen by the operator) | **< 93 KiB** |
///
/// They are constants, not flags: raising them would bring back the
/// failure they prevent. docs/PROTOCOL.md repeats the arithmetic.
pub mod caps {
    /// Longest metadata key, in bytes.
    pub const KEY: usize = 64;
    /// Largest metadata value, in bytes.
    pub const VALUE: usize = 8 * 1024;
    /// Metadata of one connection: keys and values, plus [`ENTRY_OVERHEAD`] per entry.
    pub const META_TOTAL: usize = 16 * 1024;
    /// What each metadata entry counts on top of its key and value.
    pub const ENTRY_OVERHEAD: usize = 32;
    /// Longest room name, in bytes.
    pub const ROOM_NAME: usize = 128;
    /// Rooms one connection may be in.
    pub const ROOMS: usize = 64;
}

/// Why a directive was refused by a cap (see [`caps`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A metadata key longer than [`caps::KEY`] (its length).
    KeyTooLong(usize),
    /// A metadata value larger than [`caps::VALUE`] (its size).
    ValueTooBig(usize),
    /// A room name longer than [`caps::ROOM_NAME`] (its length).
    RoomNameTooLong(usize),
    /// A value or room name with a NUL byte, which no environment can carry.
    Nul,
    /// The connection's metadata would take this many bytes, over [`caps::META_TOTAL`].
    MetadataFull(usize),
    /// The connection is already in [`caps::ROOMS`] rooms.
    TooManyRooms,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::KeyTooLong(n) => write!(f, "the key is {n} bytes, over the cap of {}", caps::KEY),
            Refusal::ValueTooBig(n) => write!(f, "the value is {n} bytes, over the cap of {}", caps::VALUE),
            Refusal::RoomNameTooLong(n) => {
                write!(f, "the room name is {n} bytes, over the cap of {}", caps::ROOM_NAME)
            }
            Refusal::Nul => write!(f, "it contains a NUL byte, which the environment cannot carry"),
            Refusal::MetadataFull(n) => write!(
                f,
                "the connection's metadata would take {n} bytes, over the cap of {} \
                 (keys and values, plus {} per entry)",
                caps::META_TOTAL,
                caps::ENTRY_OVERHEAD
            ),
            Refusal::TooManyRooms => write!(f, "the connection is already in {} rooms, the cap", caps::ROOMS),
        }
    }
}

/// What one metadata entry counts against [`caps::META_TOTAL`].
pub fn meta_cost(key: &str, value: &str) -> usize {
    key.len() + value.len() + caps::ENTRY_OVERHEAD
}

/// A metadata key and (when setting) value within their caps.
pub fn check_meta(key: &str, value: Option<&str>) -> Result<(), Refusal> {
    if key.len() > caps::KEY {
        return Err(Refusal::KeyTooLong(key.len()));
    }
    match value {
        Some(v) if v.len() > caps::VALUE => Err(Refusal::ValueTooBig(v.len())),
        Some(v) if v.contains('\0') => Err(Refusal::Nul),
        _ => Ok(()),
    }
}

/// A room name within its cap.
pub fn check_room(room: &str) -> Result<(), Refusal> {
    if room.len() > caps::ROOM_NAME {
        Err(Refusal::RoomNameTooLong(room.len()))
    } else if room.contains('\0') {
        Err(Refusal::Nul)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod close_tests {
    use super::*;

    #[test]
    fn one_check_for_a_requested_close() {
        assert_eq!(check_close(None, ""), Ok(1000));
        for ok in ["1000", "1003", "1007", "1014", "3000", "4999"] {
            assert_eq!(check_close(Some(ok), "bye").map(|c| c.to_string()), Ok(ok.to_owned()));
        }
        for bad in ["999", "1004", "1005", "1006", "1015", "2999", "5000", "x", "", "-1"] {
            assert_eq!(check_close(Some(bad), ""), Err(BadClose::Code), "{bad}");
        }
        assert_eq!(check_close(None, &"r".repeat(MAX_CLOSE_REASON)), Ok(1000));
        assert_eq!(check_close(None, &"r".repeat(MAX_CLOSE_REASON + 1)), Err(BadClose::Reason));
    }
}
