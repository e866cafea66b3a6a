//! HTTP/1.x on the wire, done here rather than by the HTTP library tide
//! ships with, so that the rules are strict and the costs bounded: see
//! [`crate::listen`] for why. `fields` holds the header rules every layer
//! shares (sendable values, hop-by-hop headers, comma lists), `head` checks a request head, `input` reads
//! heads and bodies from the socket, `body` reads a whole body within its
//! bounds, `response` writes answers with the
//! framing decided in one place, `conn` runs a connection's requests
//! one after another, and `request` describes a request in the terms the CGI
//! environment uses (for the WebSocket handshake and the public site alike).

pub mod body;
pub mod conn;
pub mod fields;
pub mod head;
pub mod input;
pub mod request;
pub mod response;
