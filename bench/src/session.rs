//! The bench's client of resumable sessions (issue 17, docs/PROTOCOL.md
//! "Resumable sessions"): what the `resume` workload needs and nothing more.
//! A session is asked for with the subprotocol `ws2http.session.v1`; a
//! resume offers `ws2http.resume.<TOKEN>.<RECEIVED>` next to it. The first
//! text frame on every socket of a session is the server's session message
//! (`{"ws2http":"session",...}` or `{"ws2http":"resumed",...}`), never
//! counted; refusals arrive as close frames (4410, 4400) after the 101.
//!
//! Written from the wire contract, not from the server's code, so that it
//! checks the contract independently (as the JS and Python helpers do).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;

use crate::client::{self, Ws};

/// The subprotocol that asks for a session.
pub const SESSION: &str = "ws2http.session.v1";

/// The server's session message: the first frame on every socket of a session.
#[derive(Clone, Debug)]
pub struct Hello {
    /// `session` (a new session) or `resumed`.
    pub kind: String,
    pub id: String,
    pub token: String,
    /// `resumed` only: data messages the server has read from us.
    pub received: u64,
    /// `resumed` only: messages replayed next.
    pub replayed: u64,
}

/// A session on the client's side: where it lives and what it has received.
#[derive(Clone, Debug)]
pub struct Session {
    pub path: String,
    pub id: String,
    pub token: String,
    /// Data messages received on this session (session messages not counted).
    pub received: u64,
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_write_buffer_size(1 << 20)
}

/// Parses a session message (`serde_json`, strictly: every field the kind needs).
pub fn parse_hello(text: &str) -> Result<Hello, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("session message {text:?}: {e}"))?;
    let s = |k: &str| v[k].as_str().map(str::to_owned).ok_or_else(|| format!("session message without {k}: {text}"));
    let kind = s("ws2http")?;
    let n = |k: &str| match kind.as_str() {
        "resumed" => v[k].as_u64().ok_or_else(|| format!("resumed message without {k}: {text}")),
        _ => Ok(0),
    };
    if kind != "session" && kind != "resumed" {
        return Err(format!("not a session message: {text}"));
    }
    Ok(Hello { id: s("id")?, token: s("token")?, received: n("received")?, replayed: n("replayed")?, kind })
}

/// The first frame of a session socket: the session message, or the close
/// frame of a refusal (`refused 4410 session expired`).
async fn first_frame(ws: &mut Ws) -> Result<Hello, String> {
    loop {
        match client::timeout(client::STEP_TIMEOUT, "the session message", async { Ok(ws.next().await) }).await? {
            Some(Ok(Message::Text(t))) => return parse_hello(t.as_str()),
            Some(Ok(Message::Close(Some(f)))) => return Err(format!("refused {} {}", u16::from(f.code), f.reason)),
            Some(Ok(Message::Close(None))) => return Err("refused: a close frame without a code".into()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return Err(format!("expected the session message, got {other:?}")),
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("the server ended the connection before the session message".into()),
        }
    }
}

/// A WebSocket handshake on `path` offering `protocols`; the server must
/// select `ws2http.session.v1`. Returns the socket, its session message and
/// when the TCP connect started.
pub async fn handshake(
    addr: SocketAddr,
    path: &str,
    i: usize,
    protocols: &str,
) -> Result<(Ws, Hello, Instant), String> {
    let mut req = format!("ws://{addr}{path}").into_client_request().map_err(|e| e.to_string())?;
    let offer = HeaderValue::from_str(protocols).map_err(|e| format!("subprotocols {protocols:?}: {e}"))?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", offer);
    let t0 = Instant::now();
    let tcp = client::tcp(addr, i).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let step = async_tungstenite::client_async_with_config(req, tcp, Some(config()));
    let (mut ws, resp) = async_std::future::timeout(client::STEP_TIMEOUT, step)
        .await
        .map_err(|_| format!("handshake with {addr}{path}: no answer within {:?}", client::STEP_TIMEOUT))?
        .map_err(|e| format!("handshake with {addr}{path}: {e}"))?;
    let chosen = resp.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
    if chosen != Some(SESSION) {
        return Err(format!(
            "{addr}{path} did not select {SESSION} (got {chosen:?}): is this a build with sessions, \
             and --resume-grace > 0?"
        ));
    }
    let hello = first_frame(&mut ws).await?;
    Ok((ws, hello, t0))
}

/// A new session on `path` (source address number `i`).
pub async fn open(addr: SocketAddr, path: &str, i: usize) -> Result<(Ws, Session), String> {
    let (ws, hello, _) = handshake(addr, path, i, SESSION).await?;
    if hello.kind != "session" {
        return Err(format!("a new session got a {:?} message", hello.kind));
    }
    Ok((ws, Session { path: path.to_owned(), id: hello.id, token: hello.token, received: 0 }))
}

/// Resumes `s` on a new socket; checks the `resumed` message and takes the
/// new token. Returns the socket, the `resumed` message, and when the TCP
/// connect started.
pub async fn resume(addr: SocketAddr, s: &mut Session, i: usize) -> Result<(Ws, Hello, Instant), String> {
    let offer = format!("{SESSION}, ws2http.resume.{}.{}", s.token, s.received);
    let (ws, hello, t0) = handshake(addr, &s.path, i, &offer).await?;
    if hello.kind != "resumed" || hello.id != s.id {
        return Err(format!("resume of {} got {:?} for {:?}", s.id, hello.kind, hello.id));
    }
    s.token = hello.token.clone();
    Ok((ws, hello, t0))
}

/// The next data message of a session (pings answered by tungstenite), counted.
pub async fn recv(ws: &mut Ws, s: &mut Session) -> Result<String, String> {
    let t = client::timeout(client::STEP_TIMEOUT, "a session message", client::recv_text(ws)).await?;
    s.received += 1;
    Ok(t)
}

/// Cuts the TCP stream without a close frame: RST (SO_LINGER 0), as a load
/// balancer that goes away or a network that vanishes would.
pub fn cut(ws: Ws) {
    let sock = socket2::SockRef::from(ws.get_ref().get_ref());
    let _ = sock.set_linger(Some(Duration::ZERO));
    drop(ws);
}
