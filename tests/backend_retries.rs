//! A backend request is sent at most once (docs/BACKENDS.md). Fake FastCGI
//! and HTTP servers record every request they receive; one message makes
//! them drop the connection without answering, after they received it. The
//! event must then fail once (logged as `backend unavailable`), never be
//! sent again on a fresh connection. A kept-alive connection the server
//! closed while idle is still replaced transparently: nothing had been
//! written to it.

mod common;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use async_tungstenite::tungstenite::Message;
use common::*;

/// What the fake server saw: (event, payload) per request, and how many
/// connections it closed on its own.
#[derive(Default)]
struct Record {
    requests: Vec<(String, String)>,
    closed: usize,
}

type Shared = Arc<Mutex<Record>>;

/// What the fake server does with one request.
enum Reply {
    /// Answers `ok PAYLOAD` and keeps the connection.
    Answer(String),
    /// Answers, then closes the connection (an idle close the pool must notice).
    AnswerThenClose(String),
    /// Closes the connection without a byte of answer.
    Drop,
}

fn reply_to(payload: &str) -> Reply {
    match payload {
        // open and close: nothing to say.
        "" => Reply::Answer(String::new()),
        "drop" => Reply::Drop,
        "bye" => Reply::AnswerThenClose(format!("ok {payload}\n")),
        _ => Reply::Answer(format!("ok {payload}\n")),
    }
}

/// Serves every connection of `listener` on a thread of its own with
/// `serve_conn`, which returns `false` when it closed the connection.
fn serve(listener: TcpListener, rec: Shared, serve_conn: fn(TcpStream, &Shared) -> bool) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let rec = rec.clone();
            std::thread::spawn(move || {
                if !serve_conn(conn, &rec) {
                    rec.lock().unwrap().closed += 1;
                }
            });
        }
    });
}

// --- HTTP/1.1 --------------------------------------------------------------

fn http_conn(conn: TcpStream, rec: &Shared) -> bool {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let mut event = String::new();
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return true; // ws2http closed it
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                match n.to_ascii_lowercase().as_str() {
                    "ws-event" => event = v.trim().to_owned(),
                    "content-length" => len = v.trim().parse().unwrap(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        let payload = String::from_utf8_lossy(&body).into_owned();
        rec.lock().unwrap().requests.push((event, payload.clone()));
        let answer = |w: &mut TcpStream, text: &str| {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", text.len());
            w.write_all(format!("{head}{text}").as_bytes()).unwrap();
        };
        match reply_to(&payload) {
            Reply::Answer(text) => answer(&mut w, &text),
            Reply::AnswerThenClose(text) => {
                answer(&mut w, &text);
                return false;
            }
            Reply::Drop => return false,
        }
    }
}

// --- FastCGI (responder, FCGI_KEEP_CONN) -------------------------------------

fn read_record(r: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 8];
    r.read_exact(&mut h).ok()?;
    let len = u16::from_be_bytes([h[4], h[5]]) as usize;
    let mut body = vec![0u8; len + h[6] as usize];
    r.read_exact(&mut body).ok()?;
    body.truncate(len);
    Some((h[1], body))
}

fn record(kind: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![1, kind, 0, 1];
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(content);
    out
}

/// WS_EVENT from FastCGI name-value pairs.
fn ws_event(params: &[u8]) -> String {
    let mut i = 0;
    let len = |i: &mut usize| -> usize {
        if params[*i] & 0x80 == 0 {
            *i += 1;
            params[*i - 1] as usize
        } else {
            let n = u32::from_be_bytes([params[*i] & 0x7f, params[*i + 1], params[*i + 2], params[*i + 3]]);
            *i += 4;
            n as usize
        }
    };
    while i < params.len() {
        let (n, v) = (len(&mut i), len(&mut i));
        let (name, value) = (&params[i..i + n], &params[i + n..i + n + v]);
        i += n + v;
        if name == b"WS_EVENT" {
            return String::from_utf8_lossy(value).into_owned();
        }
    }
    String::new()
}

fn fastcgi_conn(conn: TcpStream, rec: &Shared) -> bool {
    let mut r = conn.try_clone().unwrap();
    let mut w = conn;
    loop {
        let (mut params, mut stdin) = (Vec::new(), Vec::new());
        loop {
            let Some((kind, body)) = read_record(&mut r) else { return true };
            match kind {
                4 => params.extend_from_slice(&body), // FCGI_PARAMS
                5 if body.is_empty() => break,        // end of FCGI_STDIN
                5 => stdin.extend_from_slice(&body),  // FCGI_STDIN
                _ => {}                               // FCGI_BEGIN_REQUEST
            }
        }
        let payload = String::from_utf8_lossy(&stdin).into_owned();
        rec.lock().unwrap().requests.push((ws_event(&params), payload.clone()));
        let answer = |w: &mut TcpStream, text: &str| {
            let mut out = record(6, format!("Content-Type: text/plain\r\n\r\n{text}").as_bytes());
            out.extend(record(6, b""));
            out.extend(record(3, &[0; 8])); // FCGI_END_REQUEST, complete
            w.write_all(&out).unwrap();
        };
        match reply_to(&payload) {
            Reply::Answer(text) => answer(&mut w, &text),
            Reply::AnswerThenClose(text) => {
                answer(&mut w, &text);
                return false;
            }
            Reply::Drop => return false,
        }
    }
}

// --- the scenario, the same for both backends ----------------------------------

fn times(rec: &Shared, payload: &str) -> usize {
    rec.lock().unwrap().requests.iter().filter(|(e, p)| e == "message" && p == payload).count()
}

async fn sent_at_most_once(flag: &str, path: &str, serve_conn: fn(TcpStream, &Shared) -> bool) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rec: Shared = Arc::default();
    serve(listener, rec.clone(), serve_conn);
    let route = match flag {
        "--fastcgi" => format!("{path}=127.0.0.1:{port}"),
        _ => format!("{path}=http://127.0.0.1:{port}{path}"),
    };
    let s = Server::start(&[flag, &route, "--timeout", "5"]);
    let mut ws = connect(&s.url(path)).await;
    // Warm the pool: the open and this message leave one kept-alive connection.
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "ok one");

    // Received, then the connection dropped without an answer: the event
    // fails once; it is not sent again on a new connection.
    ws.send(Message::text("drop")).await.unwrap();
    s.wait_log("backend unavailable");
    assert!(s.log().contains("not retried"), "{}", s.log());
    ws.send(Message::text("two")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "ok two", "the connection stays open and the next event works");
    assert_eq!(times(&rec, "drop"), 1, "the dropped request was sent again");

    // A pooled connection the server closed while idle is replaced before
    // anything is written to it: the next event simply works, once.
    ws.send(Message::text("bye")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "ok bye");
    wait_for("the server to close the idle connection", || (rec.lock().unwrap().closed == 2).then_some(()));
    ws.send(Message::text("three")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "ok three");
    for p in ["one", "two", "bye", "three"] {
        assert_eq!(times(&rec, p), 1, "{p} was sent {} times", times(&rec, p));
    }
    assert_eq!(s.log().matches("backend unavailable").count(), 1, "{}", s.log());
}

#[async_std::test]
async fn fastcgi_requests_are_sent_at_most_once() {
    sent_at_most_once("--fastcgi", "/mirror.sh", fastcgi_conn).await;
}

#[async_std::test]
async fn http_requests_are_sent_at_most_once() {
    sent_at_most_once("--backend-url", "/app", http_conn).await;
}
