//! The flags of resumable sessions (issue 17; docs/PROTOCOL.md "Resumable
//! sessions"): how long a dropped session waits for its client, and how
//! much it may hold for it meanwhile. Kept apart from [`crate::config`]
//! (flattened into its `Cli`) so that these grow without touching it.
//!
//! Every byte a detached session holds is a byte a client can make the
//! server keep without reading it: both bounds (messages and bytes) have a
//! safe default, and going over them ends the session (`resume-overflow`).
//! All sessions together are bounded by `--max-outgoing-bytes-total`
//! (`hub::session::Session::admit` and `number`): no flag of their own.

use std::time::Duration;

use clap::Args;

/// `--help`'s heading for these flags.
pub const HEADING: &str = "Resumable sessions (subprotocol ws2http.session.v1)";

/// The flags, as clap reads them.
#[derive(Args, Debug, Clone)]
pub struct ResumeArgs {
    /// Seconds a session connection that dropped (no close frame) waits for its client to resume
    /// it, still in its rooms, its messages kept; then its close event runs (0: sessions off)
    #[arg(long, env = "WS2HTTP_RESUME_GRACE", default_value_t = 30.0, value_name = "SECS", help_heading = HEADING)]
    pub resume_grace: f64,
    /// Messages a session keeps for its client (sent and not yet acknowledged, or queued while it
    /// is away); beyond it a detached session ends (resume-overflow)
    #[arg(long, env = "WS2HTTP_RESUME_BUFFER", default_value_t = 1000, value_name = "N", help_heading = HEADING)]
    pub resume_buffer: usize,
    /// Bytes of those messages a session keeps; beyond it a detached session ends (resume-overflow).
    /// All sessions together count in --max-outgoing-bytes-total
    #[arg(long, env = "WS2HTTP_RESUME_BUFFER_BYTES", default_value_t = 1 << 20, value_name = "BYTES", help_heading = HEADING)]
    pub resume_buffer_bytes: usize,
}

/// The checked settings: `None` when sessions are off (`--resume-grace 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub grace: Duration,
    /// Messages kept per session (at least 1).
    pub buffer: usize,
    /// Bytes kept per session (at least 1).
    pub buffer_bytes: usize,
}

impl ResumeArgs {
    /// The settings, or one line that says how to fix the flag.
    pub fn settings(&self) -> Result<Option<Resume>, String> {
        let g = self.resume_grace;
        if !(g.is_finite() && (0.0..=86_400.0).contains(&g)) {
            return Err(format!("--resume-grace {g}: must be 0 (sessions off) or a number of seconds up to 86400"));
        }
        for (flag, v) in [("--resume-buffer", self.resume_buffer), ("--resume-buffer-bytes", self.resume_buffer_bytes)]
        {
            if v == 0 {
                return Err(format!("{flag} 0: must be at least 1 (turn sessions off with --resume-grace 0)"));
            }
        }
        Ok((g > 0.0).then(|| Resume {
            grace: Duration::from_secs_f64(g),
            buffer: self.resume_buffer,
            buffer_bytes: self.resume_buffer_bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(grace: f64, buffer: usize, bytes: usize) -> ResumeArgs {
        ResumeArgs { resume_grace: grace, resume_buffer: buffer, resume_buffer_bytes: bytes }
    }

    #[test]
    fn zero_turns_sessions_off_and_bad_values_say_what_to_do() {
        assert_eq!(args(0.0, 1000, 1 << 20).settings(), Ok(None));
        let on = args(2.5, 10, 100).settings().expect("valid").expect("on");
        assert_eq!((on.grace, on.buffer, on.buffer_bytes), (Duration::from_millis(2500), 10, 100));
        for bad in [args(-1.0, 1, 1), args(f64::NAN, 1, 1), args(1e9, 1, 1)] {
            assert!(bad.settings().expect_err("refused").starts_with("--resume-grace"));
        }
        assert!(args(1.0, 0, 1).settings().expect_err("refused").starts_with("--resume-buffer 0"));
        assert!(args(1.0, 1, 0).settings().expect_err("refused").starts_with("--resume-buffer-bytes 0"));
    }
}
