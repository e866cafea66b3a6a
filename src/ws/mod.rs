//! The WebSocket side: the handshake (run inside tide) and the life of one
//! connection after it, with the state they share ([`state::WsState`]).

pub mod connection;
pub mod event_queue;
pub mod follow;
pub mod limits;
pub mod origin;
mod pinger;
pub mod read_ahead;
pub mod resident;
pub mod session;
pub mod state;
pub mod upgrade;

#[cfg(test)]
mod fake;
