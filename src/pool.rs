//! The connection pool of the FastCGI and HTTP backends: one per backend
//! address (not per route), written once for both.
//!
//! Why it is shaped like this:
//! - **A request is sent at most once.** A kept-alive connection the server
//!   closed while it sat idle (php-fpm restarted, a keep-alive timeout) is
//!   found out *before* anything is written to it ([`Stream::is_reusable`]:
//!   a non-blocking peek for EOF or stray bytes) and replaced by another one.
//!   Once a request has been written, a failure is final: the server may have
//!   received it, and running a message event twice is worse than failing it
//!   once. So there is no retry after a write, in either backend.
//! - **Idle connections cost the backend a worker.** A php-fpm worker serves
//!   one connection until it is closed, so every kept-alive idle connection
//!   pins one of `pm.max_children`. The pool keeps at most `max_idle` idle
//!   connections per address (more only while requests wait for a slot, which
//!   takes them at once) and closes every idle connection after
//!   `idle_timeout`, so an idle ws2http pins no worker at all.
//! - **Requests in flight are bounded per address** (`--max-procs`), handed
//!   out in arrival order ([`Slots`]), so several routes to one server share
//!   one bound.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::FutureExt;

use crate::cgi::slots::{Slot, Slots};
use crate::runtime;

/// Idle connections kept per address, unless requests are waiting.
pub const MAX_IDLE: usize = 1;
/// An idle connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a backend server listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl Address {
    /// `host:port` or `unix:/path`.
    pub fn parse(s: &str) -> Result<Address, String> {
        match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(Address::Unix(p.into())),
            Some(_) => Err(format!("{s:?}: expected unix:/path/to/socket")),
            None if s.contains(':') => Ok(Address::Tcp(s.to_owned())),
            None => Err(format!("{s:?}: expected HOST:PORT or unix:/path")),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A TCP or Unix socket, as one stream type. Clones share the socket.
#[derive(Clone)]
pub enum Stream {
    Tcp(async_std::net::TcpStream),
    Unix(async_std::os::unix::net::UnixStream),
}

impl Stream {
    async fn connect(address: &Address) -> std::io::Result<Stream> {
        Ok(match address {
            Address::Tcp(a) => {
                let s = async_std::net::TcpStream::connect(a.as_str()).await?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Address::Unix(p) => Stream::Unix(async_std::os::unix::net::UnixStream::connect(p).await?),
        })
    }

    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// `true` when the idle connection can carry a request: the server has
    /// neither closed it (EOF, reset) nor sent anything unasked. Looks
    /// without waiting and without consuming a byte.
    pub fn is_reusable(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: recv(2) on a socket this stream owns (open for as long as
        // `self` lives), into one byte of our own stack.
        let n = unsafe { libc::recv(self.fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_close(cx),
            Stream::Unix(s) => Pin::new(s).poll_close(cx),
        }
    }
}

struct Idle {
    stream: Stream,
    since: Instant,
}

/// The limits of every pool of one kind.
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    /// Requests in flight per address (`--max-procs`).
    pub max_in_flight: usize,
    /// Idle connections kept per address while no request waits.
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl PoolLimits {
    pub fn new(max_in_flight: usize) -> Self {
        PoolLimits { max_in_flight, max_idle: MAX_IDLE, idle_timeout: IDLE_TIMEOUT }
    }
}

/// Connections to one backend address.
pub struct Pool {
    address: Address,
    limits: PoolLimits,
    /// Most recently used last: reuse takes the warmest, the rest expire.
    idle: Mutex<Vec<Idle>>,
    slots: Arc<Slots>,
    /// Wakes the reaper when a connection goes idle.
    parked: event_listener::Event,
}

/// A connection taken from the pool for one request.
pub struct Checkout {
    pub stream: Stream,
    /// Opened for this request (not reused).
    pub fresh: bool,
}

impl Pool {
    pub fn new(address: Address, limits: PoolLimits) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            address,
            limits,
            idle: Mutex::new(Vec::new()),
            slots: Slots::new(limits.max_in_flight),
            parked: event_listener::Event::new(),
        });
        let weak = Arc::downgrade(&pool);
        runtime::spawn(async move { reap(weak).await });
        pool
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for a request slot (arrival order); hold it for the request.
    pub async fn slot(&self) -> Slot {
        self.slots.acquire().await
    }

    /// A connection for one request: the most recently used idle one that
    /// is still usable, else a new one. Idle connections the server closed
    /// are dropped here, before anything is written to them.
    pub async fn checkout(&self) -> std::io::Result<Checkout> {
        loop {
            let Some(idle) = self.lock().pop() else { break };
            if idle.since.elapsed() < self.limits.idle_timeout && idle.stream.is_reusable() {
                return Ok(Checkout { stream: idle.stream, fresh: false });
            }
            log::debug!("{}: an idle connection was closed by the server or expired; dropped", self.address);
        }
        Ok(Checkout { stream: Stream::connect(&self.address).await?, fresh: true })
    }

    /// Gives back a connection whose exchange ended cleanly. It is kept if
    /// a request is waiting for a slot (it takes it next) or fewer than
    /// `max_idle` are idle; otherwise it is closed.
    pub fn checkin(&self, stream: Stream) {
        let mut idle = self.lock();
        if idle.len() < self.limits.max_idle.max(self.slots.waiting()) {
            idle.push(Idle { stream, since: Instant::now() });
            drop(idle);
            self.parked.notify(1);
        }
    }

    /// Idle connections right now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the idle connections that expired; returns when the next one
    /// expires, if any is idle.
    fn sweep(&self) -> Option<Instant> {
        let mut idle = self.lock();
        let timeout = self.limits.idle_timeout;
        idle.retain(|c| c.since.elapsed() < timeout);
        idle.iter().map(|c| c.since + timeout).min()
    }
}

/// Closes idle connections as they expire, so an idle ws2http holds none.
/// Sleeps while nothing is idle; ends with the pool.
async fn reap(pool: Weak<Pool>) {
    loop {
        let (listener, next) = {
            let Some(pool) = pool.upgrade() else { return };
            let listener = pool.parked.listen();
            (listener, pool.sweep())
        };
        match next {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now()) + Duration::from_millis(5);
                runtime::sleep(wait).or(listener).await;
            }
            None => listener.await,
        }
    }
}

/// One pool per address, for the routes of one backend kind.
pub struct Pools {
    limits: PoolLimits,
    pools: Mutex<HashMap<Address, Arc<Pool>>>,
}

impl Pools {
    pub fn new(limits: PoolLimits) -> Self {
        Pools { limits, pools: Mutex::new(HashMap::new()) }
    }

    /// The pool of `address`, made on first use.
    pub fn get(&self, address: &Address) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.entry(address.clone()).or_insert_with(|| Pool::new(address.clone(), self.limits)).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn addresses() {
        assert_eq!(Address::parse("127.0.0.1:9000"), Ok(Address::Tcp("127.0.0.1:9000".into())));
        assert_eq!(Address::parse("unix:/run/php/fpm.sock"), Ok(Address::Unix("/run/php/fpm.sock".into())));
        assert!(Address::parse("unix:").is_err());
        assert!(Address::parse("nowhere").is_err());
    }

    fn listener() -> (std::net::TcpListener, Address) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = Address::Tcp(l.local_addr().expect("addr").to_string());
        (l, a)
    }

    #[test]
    fn a_connection_the_server_closed_is_not_reused() {
        runtime::block_on(async {
            let (l, a) = listener();
            let pool = Pool::new(a, PoolLimits::new(4));
            let c = pool.checkout().await.expect("connect");
            assert!(c.fresh);
            let (server_side, _) = l.accept().expect("accept");
            pool.checkin(c.stream);
            assert_eq!(pool.idle(), 1);
            let c = pool.checkout().await.expect("reuse");
            assert!(!c.fresh, "an open idle connection is reused");
            let probe = c.stream.clone();
            pool.checkin(c.stream);
            drop(server_side); // the server closes it while it is idle
            wait(|| !probe.is_reusable());
            let c = pool.checkout().await.expect("new connection");
            assert!(c.fresh, "a closed idle connection is dropped, not written to");
        });
    }

    #[test]
    fn stray_bytes_make_an_idle_connection_unusable() {
        runtime::block_on(async {
            let (l, a) = listener();
            let pool = Pool::new(a, PoolLimits::new(4));
            let c = pool.checkout().await.expect("connect");
            let (mut server_side, _) = l.accept().expect("accept");
            server_side.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").expect("write");
            wait(|| !c.stream.is_reusable());
            pool.checkin(c.stream);
            assert!(pool.checkout().await.expect("connect").fresh);
        });
    }

    #[test]
    fn idle_connections_are_bounded_and_expire() {
        runtime::block_on(async {
            let (l, a) = listener();
            let limits = PoolLimits { max_in_flight: 4, max_idle: 1, idle_timeout: Duration::from_millis(100) };
            let pool = Pool::new(a, limits);
            let one = pool.checkout().await.expect("connect");
            let two = pool.checkout().await.expect("connect");
            let (mut s1, _) = l.accept().expect("accept");
            let (mut s2, _) = l.accept().expect("accept");
            pool.checkin(one.stream);
            pool.checkin(two.stream);
            assert_eq!(pool.idle(), 1, "at most max_idle kept");
            // The reaper closes the kept one once it expired: the server
            // sees EOF on both sockets without any further request.
            for s in [&mut s1, &mut s2] {
                s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                assert_eq!(s.read(&mut [0u8; 1]).expect("EOF, not a timeout"), 0);
            }
            assert_eq!(pool.idle(), 0);
        });
    }

    fn wait(f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "condition not met");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
