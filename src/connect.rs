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
//! for `--linger` seconds, says so on stderr (what a slower script sends
//! later is lost, and must not be lost silently), then sends its close
//! (1000) and prints what still arrives until the server's close, for at
//! most `--close-timeout`. A stdin line that cannot be read as text ends the
//! run with status 1, never as a normal end of input.
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
use crate::tls::client::ClientStream;

type Ws = async_tungstenite::WebSocketStream<crate::tls::client::ClientStream>;

/// Why `connect` ended unsuccessfully: the line to print (none when it was
/// already printed, e.g. the server's close) and the exit status.
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
    /// Exit status 1, the reason already on stderr.
    fn reported() -> Self {
        Failure { message: String::new(), status: 1 }
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
        match converse(&mut ws, &lines).await {
            Conversation::Over(end) => end,
            Conversation::InputFailed(why) => {
                eprintln!("ws2http connect: {why}");
                close(&mut ws, close_timeout).await.and(Err(Failure::reported()))
            }
            Conversation::InputEnded => {
                if let Some(end) = quiet_for(&mut ws, linger).await {
                    return end;
                }
                eprintln!("stdin ended; closing after {} s without a message (--linger)", args.linger);
                close(&mut ws, close_timeout).await
            }
        }
    })
}

fn seconds(v: f64, flag: &str) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(v).map_err(|_| Failure::usage(format!("{flag} {v}: expected a number of seconds")))
}

/// The handshake request: the URL, `--origin` and every `-H`.
fn request(args: &ConnectArgs) -> Result<Request, Failure> {
    if !args.url.starts_with("ws://") && !args.url.starts_with("wss://") {
        return Err(Failure::usage(format!(
            "{}: expected a ws:// or wss:// URL, e.g. ws://127.0.0.1:8080/echo.sh",
            args.url
        )));
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
    let secure = req.uri().scheme_str() == Some("wss");
    let port = req.uri().port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = crate::runtime::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| Failure::failed(format!("cannot connect to {host}:{port}: {e}; is ws2http running there?")))?;
    let stream = match secure {
        false => ClientStream::Plain(tcp),
        true => {
            let config = crate::tls::client::config().map_err(Failure::failed)?;
            ClientStream::tls(tcp, &host, config)
                .await
                .map_err(|e| Failure::failed(format!("{url}: TLS handshake failed: {e}")))?
        }
    };
    match async_tungstenite::client_async(req, stream).await {
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

/// A line of stdin, or why it could not be read (its text says which line).
type Input = Result<String, String>;

/// Lines of stdin, read by a plain thread (reading a terminal blocks); the
/// channel closes at end of input. A line that is not UTF-8, or a read
/// error, is sent as an `Err` and ends the input: it must never look like
/// end of input, which would close the connection as if all went well.
fn stdin_lines() -> async_channel::Receiver<Input> {
    let (tx, rx) = async_channel::bounded(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        for number in 1.. {
            buf.clear();
            let input = match stdin.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => line_text(&buf, number),
                Err(e) => Err(format!("cannot read stdin after line {}: {e}", number - 1)),
            };
            let failed = input.is_err();
            if tx.send_blocking(input).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// One line without its `\n` (or `\r\n`), as text.
fn line_text(buf: &[u8], number: u64) -> Input {
    let line = buf.strip_suffix(b"\n").map_or(buf, |l| l.strip_suffix(b"\r").unwrap_or(l));
    String::from_utf8(line.to_vec()).map_err(|_| {
        format!(
            "stdin line {number} is not UTF-8 text; closing without sending it or anything after it \
             (each line is sent as a text message)"
        )
    })
}

/// How the conversation part of a connection ended.
enum Conversation {
    /// The connection ended (the server closed it, or it was lost).
    Over(Result<(), Failure>),
    /// Stdin ended normally.
    InputEnded,
    /// A stdin line could not be read: why.
    InputFailed(String),
}

enum Step {
    Line(Option<Input>),
    Received(Option<Result<Message, WsError>>),
    Quiet,
}

/// Sends lines and prints messages until stdin or the connection ends.
async fn converse(ws: &mut Ws, lines: &async_channel::Receiver<Input>) -> Conversation {
    loop {
        let step = async { Step::Line(lines.recv().await.ok()) }.or(async { Step::Received(ws.next().await) }).await;
        match step {
            Step::Line(Some(Ok(line))) => {
                if let Err(e) = ws.send(Message::text(line)).await {
                    return Conversation::Over(Err(lost(e)));
                }
            }
            Step::Line(Some(Err(why))) => return Conversation::InputFailed(why),
            Step::Line(None) => return Conversation::InputEnded,
            Step::Received(m) => {
                if let Some(end) = received(m) {
                    return Conversation::Over(end);
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

/// The server's close frame: printed on stderr in one form for every code
/// (`closed: CODE REASON`), and the exit status.
fn closed(frame: Option<CloseFrame>) -> Result<(), Failure> {
    let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
    if reason.is_empty() {
        eprintln!("closed: {code}");
    } else {
        eprintln!("closed: {code} {reason}");
    }
    match code {
        1000 | 1001 => Ok(()),
        _ => Err(Failure::reported()),
    }
}

fn lost(e: WsError) -> Failure {
    Failure::failed(format!("connection lost: {e}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
