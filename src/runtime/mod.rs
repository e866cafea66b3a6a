//! The one place that names the async runtime. async-std is deprecated in
//! favour of smol; everything else in the crate goes through these helpers
//! and types or through runtime-neutral crates (async-io, async-channel,
//! futures-lite), so a future swap touches this file only (and the
//! `async-std-runtime` feature of async-tungstenite in Cargo.toml).
//! tests/architecture.rs checks that no other file names `async_std` or
//! `async_io`.

pub mod deadline;

use std::future::Future;
use std::time::Duration;

/// A file descriptor made async (pipes, sockets opened elsewhere) and a
/// one-shot timer, from the reactor the runtime runs on.
pub use async_io::{Async, Timer};
/// The runtime's sockets and files (async-std's, today). They implement the
/// runtime-neutral `futures` I/O traits, which is all the rest relies on.
pub use async_std::fs::File;
pub use async_std::net::{TcpListener, TcpStream};
pub use async_std::os::unix::net::UnixStream;

/// Runs `fut` in the background.
pub fn spawn<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    async_std::task::spawn(fut);
}

pub async fn sleep(d: Duration) {
    async_std::task::sleep(d).await
}

/// `Err(())` when `fut` did not finish within `d`.
/// Costs no system call (see [`deadline`]).
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, ()> {
    deadline::timeout(d, fut).await
}

/// The socket addresses of `host:port` (a name is looked up off the
/// reactor, as the lookup blocks).
pub async fn resolve(host_port: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
    use async_std::net::ToSocketAddrs;
    Ok(host_port.to_socket_addrs().await?.collect())
}

pub fn block_on<F: Future>(fut: F) -> F::Output {
    async_std::task::block_on(fut)
}

/// A periodic timer that stays registered between ticks (creating a timer
/// wakes the reactor thread; a loop should not make one per iteration).
pub struct Interval(async_io::Timer);

impl Interval {
    /// First tick one `period` from now.
    pub fn new(period: Duration) -> Self {
        Interval(async_io::Timer::interval(period))
    }

    pub async fn tick(&mut self) {
        futures_lite::StreamExt::next(&mut self.0).await;
    }

    /// `Ready` at each tick (the waker registered until then).
    pub fn poll_tick(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        futures_lite::Stream::poll_next(std::pin::Pin::new(&mut self.0), cx).map(|_| ())
    }
}

/// Milliseconds since the first call, for cheap "last seen" stamps.
pub fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}
