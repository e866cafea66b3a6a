//! The few places that name the async runtime. async-std is deprecated in
//! favour of smol; everything else in the crate goes through these helpers or
//! through runtime-neutral crates (async-io, async-channel, futures-lite),
//! so a future swap touches this file and the listener code only.

use std::future::Future;
use std::time::Duration;

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
/// Costs no system call (see `deadline`).
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, ()> {
    crate::deadline::timeout(d, fut).await
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
}
