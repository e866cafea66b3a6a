//! The WebSocket side: the handshake (run inside tide) and the life of one
//! connection after it.

pub mod connection;
pub mod limits;
pub mod origin;
pub mod upgrade;
