//! `ws2http connect URL`: the client a newcomer needs to try an endpoint
//! without installing one (websocat, wscat). Each line of stdin is sent as
//! a text message; each message received is printed on its own line on
//! stdout (a binary message as `[binary N bytes] HEX`); what is not a
//! message (the banner, the close, errors) goes to stderr, so stdout can be
//! piped.
//!
//! Piped input ends before the replies come back: ws2http runs the events
//! of a connection in order but cannot send anything once the client's
//! close frame has arrived (the WebSocket library answers it at once). So
//! on end of input the client lingers until the connection has been quiet
//! for `--linger` seconds, then sends its close (1000) and prints what
//! still arrives until the server's close, for at most `--close-timeout`.
//!
//! Exit status: 0 when the server closed with 1000 or 1001 (or answered our
//! close), 1 for any other close code, a refused handshake or a lost
//! connection, 2 for a usage error (a bad URL or header).

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::handshake::client::Request;
use async_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_lite::FutureExt;
use futures_util::StreamExt as _;

use crate::config::ConnectArgs;
use crate::runtime;

type Ws = async_tungstenite::WebSocketStream<async_std::net::TcpStream>;

/// Why `connect` ended unsuccessfully: the line to print and the exit status.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub status: i32,
}

impl Failure {
    fn usage(message: String) -> Self {
        Failure { message, status: 2 }
    }
    fn failed(message: String) -> Self {
        Failure { message, status: 1 }
    }
}

/// Runs the client until the connection is closed.
pub fn run(args: ConnectArgs) -> Result<(), Failure> {
    let request = request(&args)?;
    let linger = seconds(args.linger, "--linger")?;
    let close_timeout = seconds(args.close_timeout, "--close-timeout")?;
    runtime::block_on(async move {
        let mut ws = open(request, &args.url).await?;
        if std::io::stdin().is_terminal() {
            eprintln!("connected to {}: type a line and press Enter to send it; Ctrl-D closes, Ctrl-C quits", args.url);
        }
        let lines = stdin_lines();
        if let Some(end) = converse(&mut ws, &lines).await {
            return end;
        }
        if let Some(end) = quiet_for(&mut ws, linger).await {
            return end;
        }
        close(&mut ws, close_timeout).await
    })
}

fn seconds(v: f64, flag: &str) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(v).map_err(|_| Failure::usage(format!("{flag} {v}: expected a number of seconds")))
}

/// The handshake request: the URL, `--origin` and every `-H`.
fn request(args: &ConnectArgs) -> Result<Request, Failure> {
    if args.url.starts_with("wss://") {
        return Err(Failure::usage(format!(
            "{}: wss:// is not supported yet; connect to ws:// directly (ws2http itself speaks plain ws://), \
             or use a TLS-capable client such as `python3 -m websockets {}`",
            args.url, args.url
        )));
    }
    if !args.url.starts_with("ws://") {
        return Err(Failure::usage(format!("{}: expected a ws:// URL, e.g. ws://127.0.0.1:8080/echo.sh", args.url)));
    }
    let mut req = args
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| Failure::usage(format!("{}: not a valid URL ({e})", args.url)))?;
    let mut headers: Vec<(String, String)> = args.origin.iter().map(|o| ("Origin".to_owned(), o.clone())).collect();
    for h in &args.headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(Failure::usage(format!("-H {h:?}: expected 'Name: value', e.g. -H 'Cookie: sid=1'")));
        };
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    for (name, value) in headers {
        let bad = || Failure::usage(format!("header {name:?}: {value:?} is not a valid header"));
        let name_ok = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let value_ok = HeaderValue::from_str(&value).map_err(|_| bad())?;
        req.headers_mut().append(name_ok, value_ok);
    }
    Ok(req)
}

/// TCP connection and handshake; a refusal becomes its status and the
/// first line of its body.
async fn open(req: Request, url: &str) -> Result<Ws, Failure> {
    let host = req.uri().host().unwrap_or("127.0.0.1").trim_matches(|c| c == '[' || c == ']').to_owned();
    let port = req.uri().port_u16().unwrap_or(80);
    let tcp = async_std::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| Failure::failed(format!("cannot connect to {host}:{port}: {e}; is ws2http running there?")))?;
    match async_tungstenite::client_async(req, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(res)) => {
            let body = res.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let first = body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
            let status = res.status();
            let reason = status.canonical_reason().unwrap_or("");
            let sep = if first.is_empty() { "" } else { ": " };
            Err(Failure::failed(format!("{url}: handshake refused: {} {reason}{sep}{first}", status.as_u16())))
        }
        Err(e) => Err(Failure::failed(format!("{url}: handshake failed: {e}"))),
    }
}

/// Lines of stdin, read by a plain thread (reading a terminal blocks); the
/// channel closes at end of input.
fn stdin_lines() -> async_channel::Receiver<String> {
    let (tx, rx) = async_channel::bounded(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send_blocking(line).is_err() {
                break;
            }
        }
    });
    rx
}

enum Step {
    Line(Option<String>),
    Received(Option<Result<Message, WsError>>),
    Quiet,
}

/// Sends lines and prints messages until stdin ends (`None`) or the
/// connection does (`Some(how it ended)`).
async fn converse(ws: &mut Ws, lines: &async_channel::Receiver<String>) -> Option<Result<(), Failure>> {
    loop {
        let step = async { Step::Line(lines.recv().await.ok()) }.or(async { Step::Received(ws.next().await) }).await;
        match step {
            Step::Line(Some(line)) => {
                if let Err(e) = ws.send(Message::text(line)).await {
                    return Some(Err(lost(e)));
                }
            }
            Step::Line(None) => return None,
            Step::Received(m) => {
                if let Some(end) = received(m) {
                    return Some(end);
                }
            }
            Step::Quiet => {}
        }
    }
}

/// After end of input: prints messages until none has arrived for `linger`.
async fn quiet_for(ws: &mut Ws, linger: Duration) -> Option<Result<(), Failure>> {
    loop {
        let step = async { Step::Received(ws.next().await) }
            .or(async {
                runtime::sleep(linger).await;
                Step::Quiet
            })
            .await;
        match step {
            Step::Received(m) => {
                if let Some(end) = received(m) {
                    return Some(end);
                }
            }
            _ => return None,
        }
    }
}

/// Sends our close (1000) and prints what arrives until the server's close.
async fn close(ws: &mut Ws, timeout: Duration) -> Result<(), Failure> {
    let frame = CloseFrame { code: 1000.into(), reason: "".into() };
    if let Err(e) = ws.send(Message::Close(Some(frame))).await {
        return Err(lost(e));
    }
    let drain = async {
        loop {
            if let Some(end) = received(ws.next().await) {
                return end;
            }
        }
    };
    match runtime::timeout(timeout, drain).await {
        Ok(end) => end,
        Err(()) => Err(Failure::failed(format!("the server did not answer our close within {timeout:?}"))),
    }
}

/// Prints one received message; `Some` when the connection is over.
fn received(m: Option<Result<Message, WsError>>) -> Option<Result<(), Failure>> {
    let mut out = std::io::stdout().lock();
    let printed = match m {
        Some(Ok(Message::Text(t))) => writeln!(out, "{}", t.as_str()),
        Some(Ok(Message::Binary(b))) => writeln!(out, "[binary {} bytes] {}", b.len(), hex(&b)),
        Some(Ok(Message::Close(frame))) => return Some(closed(frame)),
        Some(Ok(_)) => Ok(()),
        Some(Err(WsError::ConnectionClosed)) | None => {
            return Some(Err(Failure::failed("the connection closed without a close frame".into())))
        }
        Some(Err(e)) => return Some(Err(lost(e))),
    };
    match printed.and_then(|()| out.flush()) {
        Ok(()) => None,
        // stdout went away (`| head -1`): nobody reads any more.
        Err(_) => Some(Ok(())),
    }
}

/// The server's close frame: printed on stderr, and the exit status.
fn closed(frame: Option<CloseFrame>) -> Result<(), Failure> {
    let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
    let text = if reason.is_empty() { format!("closed: {code}") } else { format!("closed: {code} {reason}") };
    match code {
        1000 | 1001 => {
            eprintln!("{text}");
            Ok(())
        }
        _ => Err(Failure::failed(text)),
    }
}

fn lost(e: WsError) -> Failure {
    Failure::failed(format!("connection lost: {e}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
