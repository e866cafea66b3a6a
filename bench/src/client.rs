//! The load generator's client side: WebSocket connections from several
//! loopback source addresses (so 10,000+ connections never run out of
//! ephemeral ports), request/reply round trips, and a minimal HTTP client for
//! the control API.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use async_io::Async;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use futures_util::{AsyncReadExt, AsyncWriteExt, StreamExt};

pub type Ws = WebSocketStream<Async<TcpStream>>;

/// Source addresses 127.0.0.1 ..= 127.0.0.SOURCES take turns.
pub const SOURCES: usize = 8;

/// Longest wait for any single client step before the run is declared broken.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

pub type Result<T> = std::result::Result<T, String>;

pub async fn timeout<T>(d: Duration, what: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    async_std::future::timeout(d, f).await.map_err(|_| format!("{what}: no answer within {d:?}"))?
}

/// A TCP connection to `addr` from source address number `i % SOURCES`.
pub async fn tcp(addr: SocketAddr, i: usize) -> io::Result<Async<TcpStream>> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let src = Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCES) as u8);
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    // Pick the source port at connect time, per destination, instead of at
    // bind time for every destination at once.
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd and an int option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    if addr.ip().is_loopback() {
        sock.bind(&SockAddr::from(SocketAddr::new(src.into(), 0)))?;
    }
    sock.set_nonblocking(true)?;
    match sock.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = Async::new(TcpStream::from(sock))?;
    stream.writable().await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(e);
    }
    // What browsers and most clients do.
    stream.get_ref().set_nodelay(true)?;
    Ok(stream)
}

/// Small buffers: the bench holds tens of thousands of client connections.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_write_buffer_size(1 << 20)
}

/// A WebSocket connection to `ws://addr{path}` from source address `i`.
pub async fn connect(addr: SocketAddr, path: &str, i: usize) -> Result<Ws> {
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            async_std::task::sleep(Duration::from_millis(100 * attempt)).await;
        }
        let r = async {
            let stream = tcp(addr, i).await.map_err(|e| format!("connect to {addr}: {e}"))?;
            let url = format!("ws://{addr}{path}");
            let (ws, _) = async_tungstenite::client_async_with_config(url, stream, Some(config()))
                .await
                .map_err(|e| format!("handshake with {addr}{path}: {e}"))?;
            Ok::<_, String>(ws)
        };
        match async_std::future::timeout(STEP_TIMEOUT, r).await {
            Ok(Ok(ws)) => return Ok(ws),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("handshake with {addr}{path}: no answer within {STEP_TIMEOUT:?}"),
        }
    }
    Err(last)
}

/// `n` connections, at most `parallel` handshakes at a time.
pub async fn connect_many(
    addr: SocketAddr,
    path: impl Fn(usize) -> String,
    n: usize,
    parallel: usize,
) -> Result<Vec<Ws>> {
    let futs = (0..n).map(|i| {
        let p = path(i);
        async move { connect(addr, &p, i).await }
    });
    let all: Vec<Result<Ws>> = futures_util::stream::iter(futs).buffered(parallel.max(1)).collect().await;
    all.into_iter().collect()
}

/// The next text message, answering nothing else (tungstenite answers pings).
pub async fn recv_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Binary(b))) => return Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(Message::Close(f))) => return Err(format!("closed by the server: {f:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("the server ended the connection".into()),
        }
    }
}

/// Sends `payload` and waits for the reply; the round-trip time.
pub async fn round_trip(ws: &mut Ws, payload: &str) -> Result<Duration> {
    let t = Instant::now();
    ws.send(Message::text(payload)).await.map_err(|e| format!("send: {e}"))?;
    let reply = timeout(STEP_TIMEOUT, "reply", recv_text(ws)).await?;
    let took = t.elapsed();
    if reply.trim_end() != payload {
        return Err(format!("expected the echo {payload:?}, got {reply:?}"));
    }
    Ok(took)
}

/// A clean close: our close frame, then wait for the server's and the end.
pub async fn close(mut ws: Ws) {
    let _ = async_std::future::timeout(Duration::from_secs(3), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// A one-request HTTP/1.1 POST on an already open connection; returns the
/// status and body.
pub async fn http_post(mut conn: Async<TcpStream>, host: SocketAddr, path: &str, body: &str) -> Result<(u16, String)> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.map_err(|e| format!("POST {path}: {e}"))?;
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await.map_err(|e| format!("POST {path}: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
