//! The client side of TLS, for `ws2http connect wss://...`: the server's
//! certificate is verified against the system's CA certificates plus those
//! in `SSL_CERT_FILE` / `SSL_CERT_DIR` when set ([`super::roots`]), so a
//! test or private CA works without losing the public ones.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::runtime::TcpStream;

/// The client settings: [`super::roots`] (the system's CAs plus
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`), ALPN `http/1.1`, ring.
pub fn config() -> Result<Arc<ClientConfig>, String> {
    super::roots::client_config(None, "")
}

/// A client connection: plain (`ws://`) or TLS (`wss://`).
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The TLS handshake on `tcp` for the server `host`.
    pub async fn tls(tcp: TcpStream, host: &str, config: Arc<ClientConfig>) -> io::Result<ClientStream> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        let tls = futures_rustls::TlsConnector::from(config).connect(name, tcp).await?;
        Ok(ClientStream::Tls(Box::new(tls)))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_close(cx),
            ClientStream::Tls(t) => Pin::new(t.as_mut()).poll_close(cx),
        }
    }
}
