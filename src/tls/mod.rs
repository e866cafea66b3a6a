//! HTTPS and `wss://` on the public listeners (`--tls-cert`/`--tls-key`, or
//! ACME certificates): a browser page served over https may only open
//! `wss://`, and without TLS here every real deployment needed a proxy in
//! front. rustls (ring) does the protocol, futures-rustls runs it on our
//! runtime's sockets.
//!
//! The listener hands a [`Stream`] to [`crate::http1::conn::serve`]: the
//! plain variant is the runtime's `TcpStream` as before (no allocation, no
//! lock; a WebSocket connection upgraded from it keeps the bare socket, so
//! an idle plain connection costs what it did), the TLS one shares one
//! session between the connection's reader and writer ([`TlsShared`]).
//! Which certificate a handshake gets is a resolver's choice
//! ([`rustls::server::ResolvesServerCert`]): [`files`] for certificate
//! files, reloaded when they change, and ACME's for its certificates.
//! [`expiry`] keeps each certificate's end of validity for `/metrics`;
//! [`client`] is the other side, for `ws2http connect wss://`; [`roots`] is
//! what every client of ours (connect, https:// backends, ACME) trusts.

pub mod acme;
pub mod client;
pub mod expiry;
pub mod files;
pub mod roots;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite};
use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;

use crate::runtime::{self, TcpStream};

/// `--help`'s heading for the flags of HTTPS on the public listeners
/// (certificate files, ACME, the redirect listener, HSTS).
pub const HELP_HEADING: &str = "HTTPS (TLS on the public listeners)";

/// The ALPN protocol of the TLS-ALPN-01 ACME challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The TLS settings of the public listeners: the certificate from
/// `resolver`, ALPN `http/1.1` (plus `acme-tls/1` for ACME's challenge),
/// the ring provider, TLS 1.2 and 1.3.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>, alpn_acme: bool) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // The ring provider supports the default protocol versions: this cannot fail.
    let builder = match ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(b) => b,
        Err(e) => unreachable!("the ring provider lacks TLS 1.2/1.3: {e}"),
    };
    let mut config = builder.with_no_client_auth().with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if alpn_acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Arc::new(config)
}

/// A connection of a public listener, as the HTTP/1 code reads and writes
/// it. Cloning gives another handle on the same connection (the reader and
/// the writer of [`crate::http1::conn`] each hold one).
#[derive(Clone)]
pub enum Stream {
    Plain(TcpStream),
    Tls(TlsShared),
}

/// One TLS session shared by the handles of a connection. Reads and writes
/// each hold the lock for one poll only: futures-rustls's reads never write
/// to the socket (but for a last alert on an error), nor its writes read,
/// so the reader's and the writer's wakers stay each on its own direction
/// of the socket.
#[derive(Clone)]
pub struct TlsShared(Arc<Mutex<futures_rustls::server::TlsStream<TcpStream>>>);

impl TlsShared {
    fn lock(&self) -> MutexGuard<'_, futures_rustls::server::TlsStream<TcpStream>> {
        // A panic while polling leaves a session nobody else reads: the
        // connection then ends with an error on its next read or write.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a TLS handshake did not give a connection to serve.
#[derive(Debug)]
pub enum Handshake {
    /// Not done within `--http-timeout`.
    TimedOut,
    /// Not TLS, no common version or cipher, a client that went away...
    Failed(io::Error),
    /// An ACME TLS-ALPN-01 validation: done once the handshake is.
    AcmeChallenge,
}

/// Whether a failed handshake is rustls's "no server certificate chain
/// resolved", which the ACME resolver already told the operator about.
pub fn no_certificate(e: &io::Error) -> bool {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    matches!(inner, Some(rustls::Error::General(m)) if m == "no server certificate chain resolved")
}

/// Runs the server side of a TLS handshake on `tcp`, within `timeout` (a
/// client that never finishes it is bounded like a slow request head).
pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream, timeout: Duration) -> Result<Stream, Handshake> {
    let acceptor = futures_rustls::TlsAcceptor::from(config);
    let tls = match runtime::timeout(timeout, acceptor.accept(tcp)).await {
        Err(()) => return Err(Handshake::TimedOut),
        Ok(Err(e)) => return Err(Handshake::Failed(e)),
        Ok(Ok(tls)) => tls,
    };
    if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
        return Err(Handshake::AcmeChallenge);
    }
    Ok(Stream::Tls(TlsShared(Arc::new(Mutex::new(tls)))))
}

impl Stream {
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(s) => s.local_addr(),
            Stream::Tls(t) => t.lock().get_ref().0.local_addr(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Ends the sending side: a TLS close_notify, then the TCP FIN.
    pub async fn shutdown_write(&self) {
        match self {
            Stream::Plain(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            Stream::Tls(t) => {
                let mut t = t.clone();
                let _ = runtime::timeout(Duration::from_secs(2), futures_lite::AsyncWriteExt::close(&mut t)).await;
            }
        }
    }
}

impl AsyncRead for TlsShared {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsShared {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut tls = self.lock();
        let r = Pin::new(&mut *tls).poll_write(cx, buf);
        // What rustls took may still wait in its buffer (the socket was
        // full): pushed out now, so a caller that does not flush (every
        // plain socket user) still sends it; the rest goes with the next
        // write or flush.
        if let Poll::Ready(Ok(_)) = r {
            let _ = Pin::new(&mut *tls).poll_flush(cx);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_close(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(t).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(t) => Pin::new(t).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(t) => Pin::new(t).poll_close(cx),
        }
    }
}
