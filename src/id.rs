//! Connection ids: 128 random bits, hex-encoded, so a client can never guess
//! another client's id and push to it through a script.

use std::fmt;
use std::sync::Arc;

/// Shared (`Arc`), not boxed: the id is cloned into every action a script's
/// output makes (`@send` to itself, the reply) and into the hub's maps; a
/// clone is a count, not an allocation (docs/bench-notes/alloc19.md).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(Arc<str>);

impl ConnId {
    /// A fresh id from the operating system's random source.
    pub fn random() -> ConnId {
        let mut b = [0u8; 16];
        // getrandom only fails when the OS has no entropy source at all; a
        // server without one cannot hand out unguessable ids, so stop loudly.
        getrandom::fill(&mut b).expect("the operating system's random source failed");
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(b) {
            pair[0] = b"0123456789abcdef"[(byte >> 4) as usize];
            pair[1] = b"0123456789abcdef"[(byte & 15) as usize];
        }
        // Hex digits only: ASCII, so always UTF-8.
        ConnId(String::from_utf8_lossy(&hex).into())
    }

    /// A fresh id that starts with `instance` (8 hex characters), so any
    /// instance of a cluster can tell which one holds the connection; the
    /// other 24 characters (96 bits) are random.
    pub fn random_in(instance: &str) -> ConnId {
        let r = ConnId::random();
        ConnId(format!("{instance}{}", &r.0[instance.len().min(32)..]).into())
    }

    /// The instance part of a cluster id.
    pub fn instance(&self) -> Option<&str> {
        (self.0.len() == 32).then(|| &self.0[..8])
    }

    /// An id given by a user (control API, `@send`). Any non-empty token
    /// without whitespace is accepted; unknown ids simply match nothing.
    pub fn parse(s: &str) -> Option<ConnId> {
        (!s.is_empty() && !s.chars().any(char::is_whitespace)).then(|| ConnId(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// On the cluster's wire: the id as a string, parsed like any other.
impl serde::Serialize for ConnId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ConnId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ConnId::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a connection id: {s:?}")))
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_32_hex_and_distinct() {
        let a = ConnId::random();
        let b = ConnId::random();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn parse_rejects_empty_and_spaces() {
        assert!(ConnId::parse("").is_none());
        assert!(ConnId::parse("a b").is_none());
        assert_eq!(ConnId::parse("abc").expect("valid id").as_str(), "abc");
    }
}
