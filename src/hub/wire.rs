//! What instances of a cluster tell each other through Redis: one action
//! and the instance it comes from, as JSON, `{"o": INSTANCE, "a": ACTION}`.
//!
//! The action is [`Action`]'s own serde form (tagged by `k`; messages as
//! `{"t": text}` or `{"b": base64}`; close causes by their
//! `WS_CLOSE_CAUSE` names), so every variant and every close cause crosses
//! the wire unchanged: a hand-written copy of the format once turned every
//! cause but `script` and `shutdown` into `api`. Instances of different
//! versions are not meant to share a cluster.
//!
//! The moves of resumable sessions between instances (issue 17) travel on
//! the same channels, as `{"o": INSTANCE, "s": MOVE}` ([`Move`], tagged by
//! `k`), so that they keep their place in Redis's order among the actions:
//! that order is what makes a move exactly-once
//! (docs/notes17/cluster-resume.md).

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::id::ConnId;

/// One message on a cluster channel.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The instance that published it (it ignores its own messages).
    #[serde(rename = "o")]
    pub origin: String,
    #[serde(rename = "a")]
    pub action: Action,
}

/// One step of moving a session from the instance that holds it (A) to the
/// one its client reached (B).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Move {
    /// B to the instance holding the connection this resume token names
    /// (routed by Redis through the `moved` table): give it to me.
    /// `endpoint`: the resume's; the holder refuses to move a session of
    /// another endpoint (it stays there, untouched; empty: not checked).
    Take {
        token: String,
        nonce: String,
        to: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        endpoint: String,
    },
    /// A to B: no (unknown session, wrong token, already moving).
    Refuse { id: ConnId, nonce: String, why: String },
    /// Published by the cut script to both A and B: from here on in Redis's
    /// order, `id` belongs to `to`.
    Cut { id: ConnId, nonce: String, to: String },
    /// A to B: the session's snapshot is in the key `key`.
    Handover { id: ConnId, nonce: String, key: String },
    /// The instance that held `id` to the instance its id names: it ended.
    Gone { id: ConnId },
    /// An instance to itself: its own actions for the moving session `id`
    /// published before this went through Redis (`hub::cluster::own`).
    Settle { id: ConnId },
    /// The instance `id` moved away from to its holder (routed there like
    /// any action on `id`): its event worker has run every event it had
    /// queued for `id`; the holder's events for it may run now
    /// (`hub::session::hold`).
    Ran { id: ConnId },
}

/// What a Redis message carries: an action or a step of a move.
#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    Action(Action),
    Move(Move),
}

/// A message on a cluster channel, of either kind.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub origin: String,
    pub body: Body,
}

/// `step`, published by `origin`, as the text of a Redis message.
pub fn encode_move(origin: &str, step: &Move) -> String {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        o: &'a str,
        s: &'a Move,
    }
    serde_json::to_string(&Borrowed { o: origin, s: step }).unwrap_or_default()
}

/// The action or move a Redis message carries; `Err` says what is
/// malformed (neither, or both).
pub fn decode_frame(payload: &str) -> Result<Frame, String> {
    #[derive(Deserialize)]
    struct Raw {
        o: String,
        a: Option<Action>,
        s: Option<Move>,
    }
    let raw: Raw = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    let body = match (raw.a, raw.s) {
        (Some(a), None) => Body::Action(a),
        (None, Some(s)) => Body::Move(s),
        _ => return Err("expected exactly one of \"a\" and \"s\"".into()),
    };
    Ok(Frame { origin: raw.o, body })
}

/// `action`, published by `origin`, as the text of a Redis message.
pub fn encode(origin: &str, action: &Action) -> String {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        o: &'a str,
        a: &'a Action,
    }
    // Serializing strings, numbers and options into a String cannot fail.
    serde_json::to_string(&Borrowed { o: origin, a: action }).unwrap_or_default()
}

/// The envelope a Redis message carries; `Err` says what is malformed.
pub fn decode(payload: &str) -> Result<Envelope, serde_json::Error> {
    serde_json::from_str(payload)
}

#[cfg(test)]
mod tests;
