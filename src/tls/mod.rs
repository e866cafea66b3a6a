//! HTTPS on the public listener (issue 16). Placeholder until TLS-CORE's
//! module (the listener's stream and `server_config`) is merged.

pub mod acme;
pub mod expiry;
