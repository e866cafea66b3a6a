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
//!   pins one of `pm.max_children`, and requests queued behind it (ws2http's
//!   own, nginx's, another instance's) wait until it closes; php-fpm has no
//!   idle timeout of its own. ws2http cannot know how many workers the server
//!   can spare, so the rule is: at most `max_idle` idle connections per
//!   address (FastCGI: 0, so a worker is held only while a request of ours
//!   runs on it; HTTP: 1), one is kept only when no other request of ours to
//!   that address is in flight (it could be queued behind it), and it is
//!   closed after `idle_timeout`.
//! - **Requests in flight are bounded per address** (`--max-procs`), handed
//!   out in arrival order ([`Slots`]), so several routes to one server share
//!   one bound.
//! - **TLS is a property of the pool** (`https://` backends): a pool made
//!   with a [`TlsTarget`] does the handshake (SNI and verification against
//!   the target's name) on every new connection, so a kept-alive connection
//!   carries its TLS session and is reused like a plain one; the EOF peek
//!   looks at the socket under the session (a `close_notify` is a byte too).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use crate::runtime::Async;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::FutureExt;

use crate::config::Address;
use crate::gateway::slots::Slots;
use crate::runtime;

/// Idle connections kept per HTTP backend address.
pub const HTTP_MAX_IDLE: usize = 1;
/// Idle connections kept per FastCGI address: none, each would pin a worker.
pub const FASTCGI_MAX_IDLE: usize = 0;
/// An idle connection is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// A TCP or Unix socket, or a TLS session over TCP, as one stream type.
/// Clones share the socket (and the session).
#[derive(Clone)]
pub enum Stream {
    Tcp(Arc<Async<std::net::TcpStream>>),
    Unix(Arc<Async<std::os::unix::net::UnixStream>>),
    Tls(Arc<TlsConn>),
}

/// A client TLS session and the socket under it (for the EOF peek and
/// shutdown). One exchange at a time uses it, so the lock is never
/// contended; it only makes the session shareable between clones.
pub struct TlsConn {
    tcp: Arc<Async<std::net::TcpStream>>,
    session: Mutex<futures_rustls::client::TlsStream<Stream>>,
}

impl TlsConn {
    fn session(&self) -> std::sync::MutexGuard<'_, futures_rustls::client::TlsStream<Stream>> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// TLS to a backend: the client configuration (roots) and the name its
/// certificate must carry (also sent as SNI).
#[derive(Clone)]
pub struct TlsTarget {
    pub config: Arc<rustls::ClientConfig>,
    pub name: rustls::pki_types::ServerName<'static>,
}

impl TlsTarget {
    /// The TLS session over a fresh TCP connection; a refused certificate
    /// is an error saying which flag fixes it.
    async fn handshake(&self, tcp: Arc<Async<std::net::TcpStream>>) -> std::io::Result<Stream> {
        let connector = futures_rustls::TlsConnector::from(self.config.clone());
        let session = connector.connect(self.name.clone(), Stream::Tcp(tcp.clone())).await.map_err(|e| {
            let name = self.name.to_str();
            std::io::Error::other(format!("TLS handshake with {name} failed: {e}; {}", super::tls_client::HINT))
        })?;
        Ok(Stream::Tls(Arc::new(TlsConn { tcp, session: Mutex::new(session) })))
    }
}

impl Stream {
    async fn connect(address: &Address) -> std::io::Result<Stream> {
        Ok(match address {
            Address::Tcp(a) => {
                let mut last = None;
                for addr in runtime::resolve(a).await? {
                    match Async::<std::net::TcpStream>::connect(addr).await {
                        Ok(s) => {
                            s.get_ref().set_nodelay(true)?;
                            return Ok(Stream::Tcp(Arc::new(s)));
                        }
                        Err(e) => last = Some(e),
                    }
                }
                return Err(last.unwrap_or_else(|| std::io::Error::other(format!("{a}: no address"))));
            }
            Address::Unix(p) => Stream::Unix(Arc::new(Async::<std::os::unix::net::UnixStream>::connect(p).await?)),
        })
    }

    /// Shuts the socket down both ways: a read blocked on it (in any clone)
    /// ends at once.
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.get_ref().shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.get_ref().shutdown(std::net::Shutdown::Both),
            Stream::Tls(s) => s.tcp.get_ref().shutdown(std::net::Shutdown::Both),
        };
    }

    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.tcp.as_raw_fd(),
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
            Stream::Tcp(s) => Pin::new(&mut &**s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(&mut &**s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut *s.session()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(&mut &**s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(&mut &**s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut *s.session()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(&mut &**s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(&mut &**s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut *s.session()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(&mut &**s).poll_close(cx),
            Stream::Unix(s) => Pin::new(&mut &**s).poll_close(cx),
            Stream::Tls(s) => Pin::new(&mut *s.session()).poll_close(cx),
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
    /// Idle connections kept per address (see the module docs).
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl PoolLimits {
    /// FastCGI: no idle connection is kept.
    pub fn fastcgi(max_in_flight: usize) -> Self {
        PoolLimits { max_in_flight, max_idle: FASTCGI_MAX_IDLE, idle_timeout: IDLE_TIMEOUT }
    }

    /// HTTP: one idle connection, while nothing else is in flight.
    pub fn http(max_in_flight: usize) -> Self {
        PoolLimits { max_in_flight, max_idle: HTTP_MAX_IDLE, idle_timeout: IDLE_TIMEOUT }
    }
}

/// Connections to one backend address.
pub struct Pool {
    address: Address,
    /// `Some` for an `https://` backend: every connection speaks TLS.
    tls: Option<TlsTarget>,
    limits: PoolLimits,
    /// Most recently used last: reuse takes the warmest, the rest expire.
    idle: Mutex<Vec<Idle>>,
    slots: Arc<Slots>,
    /// Connections checked out now (requests in flight on a connection).
    busy: AtomicUsize,
    /// Wakes the reaper when a connection goes idle.
    parked: event_listener::Event,
}

/// A connection taken from the pool for one request. Dropped, it is closed;
/// [`Checkout::checkin`] offers it back.
pub struct Checkout<'a> {
    stream: Stream,
    /// Opened for this request (not reused).
    pub fresh: bool,
    pool: &'a Pool,
}

impl Checkout<'_> {
    pub fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Gives the connection back after an exchange that ended cleanly: it is
    /// kept if fewer than `max_idle` are idle and no other request to this
    /// address is in flight (one could be queued behind this connection in
    /// the server); otherwise it is closed.
    pub fn checkin(self) {
        let pool = self.pool;
        let others = pool.busy.load(Ordering::SeqCst).saturating_sub(1);
        let mut idle = pool.lock();
        if others == 0 && idle.len() < pool.limits.max_idle {
            idle.push(Idle { stream: self.stream.clone(), since: Instant::now() });
            drop(idle);
            pool.parked.notify(1);
        }
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        self.pool.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    pub fn new(address: Address, limits: PoolLimits) -> Arc<Pool> {
        Pool::with_tls(address, None, limits)
    }

    /// A pool whose connections speak TLS to `tls` (when `Some`).
    pub fn with_tls(address: Address, tls: Option<TlsTarget>, limits: PoolLimits) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            address,
            tls,
            limits,
            idle: Mutex::new(Vec::new()),
            slots: Slots::new(limits.max_in_flight),
            busy: AtomicUsize::new(0),
            parked: event_listener::Event::new(),
        });
        let weak = Arc::downgrade(&pool);
        runtime::spawn(async move { reap(weak).await });
        pool
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The request slots of this address (arrival order; the gateway holds
    /// one per request).
    pub fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }

    /// [`Pool::checkout`] for a backend: an unreachable server is
    /// [`Outcome::Unavailable`](crate::gateway::Outcome), with one message.
    pub async fn connect(&self) -> Result<Checkout<'_>, String> {
        self.checkout().await.map_err(|e| format!("cannot connect to {}: {e}", self.address))
    }

    /// A connection for one request: the most recently used idle one that
    /// is still usable, else a new one. Idle connections the server closed
    /// are dropped here, before anything is written to them.
    pub async fn checkout(&self) -> std::io::Result<Checkout<'_>> {
        let (stream, fresh) = loop {
            let Some(idle) = self.lock().pop() else {
                break (self.open().await?, true);
            };
            if idle.since.elapsed() < self.limits.idle_timeout && idle.stream.is_reusable() {
                break (idle.stream, false);
            }
            log::debug!("{}: an idle connection was closed by the server or expired; dropped", self.address);
        };
        self.busy.fetch_add(1, Ordering::SeqCst);
        Ok(Checkout { stream, fresh, pool: self })
    }

    /// A new connection, with its TLS session for an `https://` backend.
    async fn open(&self) -> std::io::Result<Stream> {
        let stream = Stream::connect(&self.address).await?;
        match (&self.tls, stream) {
            (Some(tls), Stream::Tcp(tcp)) => tls.handshake(tcp).await,
            (_, stream) => Ok(stream),
        }
    }

    /// `true` when connections may be kept for another request.
    pub fn keeps_idle(&self) -> bool {
        self.limits.max_idle > 0
    }

    /// Idle connections right now.
    #[cfg(test)]
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

/// A pool's key: its address, and the TLS name for an `https://` backend.
type PoolKey = (Address, Option<String>);

/// One pool per address (and TLS name), for the routes of one backend kind.
pub struct Pools {
    limits: PoolLimits,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    pub fn new(limits: PoolLimits) -> Self {
        Pools { limits, pools: Mutex::new(HashMap::new()) }
    }

    /// The pool of `address`, made on first use.
    pub fn get(&self, address: &Address) -> Arc<Pool> {
        self.get_tls(address, None)
    }

    /// The pool of `address` whose connections speak TLS to `tls` (plain
    /// when `None`), made on first use: `http://` and `https://` to one
    /// address, or two names on one address, are separate pools.
    pub fn get_tls(&self, address: &Address, tls: Option<TlsTarget>) -> Arc<Pool> {
        let key = (address.clone(), tls.as_ref().map(|t| t.name.to_str().into_owned()));
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.entry(key).or_insert_with(|| Pool::with_tls(address.clone(), tls, self.limits)).clone()
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
            let pool = Pool::new(a, PoolLimits::http(4));
            let c = pool.checkout().await.expect("connect");
            assert!(c.fresh);
            let (server_side, _) = l.accept().expect("accept");
            c.checkin();
            assert_eq!(pool.idle(), 1);
            let mut c = pool.checkout().await.expect("reuse");
            assert!(!c.fresh, "an open idle connection is reused");
            let probe = c.stream().clone();
            c.checkin();
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
            let pool = Pool::new(a, PoolLimits::http(4));
            let mut c = pool.checkout().await.expect("connect");
            let (mut server_side, _) = l.accept().expect("accept");
            server_side.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").expect("write");
            let probe = c.stream().clone();
            wait(|| !probe.is_reusable());
            c.checkin();
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
            one.checkin();
            assert_eq!(pool.idle(), 0, "not kept while another request is in flight");
            two.checkin();
            assert_eq!(pool.idle(), 1, "the last one is kept");
            // The reaper closes the kept one once it expired: the server
            // sees EOF on both sockets without any further request.
            for s in [&mut s1, &mut s2] {
                s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                assert_eq!(s.read(&mut [0u8; 1]).expect("EOF, not a timeout"), 0);
            }
            assert_eq!(pool.idle(), 0);
        });
    }

    #[test]
    fn fastcgi_pools_keep_nothing_idle() {
        runtime::block_on(async {
            let (l, a) = listener();
            let pool = Pool::new(a, PoolLimits::fastcgi(4));
            let c = pool.checkout().await.expect("connect");
            let (mut server_side, _) = l.accept().expect("accept");
            c.checkin();
            assert_eq!(pool.idle(), 0);
            assert_eq!(server_side.read(&mut [0u8; 1]).expect("EOF"), 0, "closed at once");
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
