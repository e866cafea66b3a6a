//! Delivery: the hub that owns this instance's connections ([`local`]) and
//! cluster mode, which shares them with other instances through Redis
//! ([`cluster`]).

pub mod cluster;
pub mod local;
pub mod wire;

pub use local::*;
