//! A pausable TCP proxy between one instance and redis-server, for the
//! cluster tests that must act while a session's move is open: after its
//! cut, before its hand-over. The old instance (A) hands the snapshot over
//! a few milliseconds after the cut (it waits for nothing), so a test
//! cannot race it. Instead the proxy holds what Redis sends A on the
//! connection that carries A's cut marker (its subscription), from the
//! chunk holding the marker on, until the test releases it: A hands the
//! session over when its marker arrives, so the hand-over waits, while
//! Redis, B and every other instance go on (B got its own marker: it
//! records, and holds resumes of the session). Nothing in the product knows.
//!
//! Why not hold A's commands (its hand-over's `SET`/`PUBLISH` after its
//! `CUT`): A's publisher gives up on a reply after 500 ms (redis-rs's
//! default response timeout), drops its connection, and the session ends on
//! A; a test's part takes longer than that on a loaded machine. A
//! subscription waits for pushed messages without a timeout.
//!
//! Only the Redis→client bytes of the one connection where the pattern
//! appears first are held, once; everything else is forwarded as it comes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The kind of a cut marker, in the message Redis pushes to A's
/// subscription (and to B's) when the `CUT` script runs.
pub const CUT_MARKER: &str = r#""k":"cut""#;

#[derive(Default)]
struct State {
    /// A connection met the pattern: it holds from there on.
    triggered: bool,
    /// Bytes are waiting to be forwarded.
    holding: bool,
    released: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct RedisProxy {
    pub port: u16,
    state: Shared,
}

impl RedisProxy {
    /// A proxy on a free loopback port to redis-server on `redis_port`,
    /// holding from `pattern` on (see the module's doc).
    pub fn start(redis_port: u16, pattern: &str) -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("its port").port();
        let state: Shared = Arc::default();
        let (shared, pattern) = (state.clone(), pattern.as_bytes().to_vec());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)) else { continue };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                let (shared, pattern) = (shared.clone(), pattern.clone());
                std::thread::spawn(move || copy(client, server));
                std::thread::spawn(move || from_redis(s2, c2, &shared, &pattern));
            }
        });
        RedisProxy { port, state }
    }

    /// The URL an instance is given (`--redis`).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `true` while bytes from the pattern on are held.
    pub fn holding(&self) -> bool {
        lock(&self.state).holding
    }

    /// Waits (at most 15 s) until the pattern came and is held: Redis sent
    /// it (so it ran what published it), the instance has not seen it.
    pub fn wait_holding(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut s = lock(&self.state);
        while !s.holding {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for the proxy to hold its pattern");
            s = self.state.1.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Forwards what is held, and everything after it (for good).
    pub fn release(&self) {
        lock(&self.state).released = true;
        self.state.1.notify_all();
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.release();
    }
}

/// Redis→client: forwards each chunk; on the first connection whose bytes
/// complete the pattern, holds the chunk that completes it and what
/// follows until released.
fn from_redis(mut from: TcpStream, mut to: TcpStream, shared: &Shared, pattern: &[u8]) {
    // The end of the bytes so far, so that a pattern split across chunks is seen.
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tail.extend_from_slice(&buf[..n]);
        if tail.windows(pattern.len()).any(|w| w == pattern) {
            hold(shared);
            tail.clear();
        }
        let keep = tail.len().saturating_sub(pattern.len().saturating_sub(1));
        tail.drain(..keep);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Blocks until released, if this is the first time the pattern came.
fn hold(shared: &Shared) {
    let mut s = lock(shared);
    if s.triggered || s.released {
        return;
    }
    s.triggered = true;
    s.holding = true;
    shared.1.notify_all();
    while !s.released {
        s = shared.1.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    s.holding = false;
}

/// Client→Redis: forwarded as it comes.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
