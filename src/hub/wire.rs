//! What instances of a cluster tell each other through Redis: one action
//! and the instance it comes from, as JSON, `{"o": INSTANCE, "a": ACTION}`.
//!
//! The action is [`Action`]'s own serde form (tagged by `k`; messages as
//! `{"t": text}` or `{"b": base64}`; close causes by their
//! `WS_CLOSE_CAUSE` names), so every variant and every close cause crosses
//! the wire unchanged: a hand-written copy of the format once turned every
//! cause but `script` and `shutdown` into `api`. Instances of different
//! versions are not meant to share a cluster.

use serde::{Deserialize, Serialize};

use crate::action::Action;

/// One message on a cluster channel.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The instance that published it (it ignores its own messages).
    #[serde(rename = "o")]
    pub origin: String,
    #[serde(rename = "a")]
    pub action: Action,
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
