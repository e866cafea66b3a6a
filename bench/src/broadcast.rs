//! The fan-out baseline, run as a separate process (`ws2http-bench
//! __broadcast-server`) so that it stands where ws2http stands: the least a
//! WebSocket server on the same stack (async-std + async-tungstenite for the
//! handshake) can do to deliver one message to N clients. It keeps the raw
//! sockets and, when triggered, writes one pre-encoded frame to each in turn:
//! one `write` per client, no queues, no tasks, no copies.
//!
//! Rooms as with ws2http's `join` fixture: a client connecting to
//! `/join?fan1k+fan10k` is a member of `fan1k` and `fan10k`.
//!
//! Prints `ws ADDR trigger ADDR`. On the trigger connection, each line
//! `ROOM TEXT` sends TEXT to the members of ROOM and answers
//! `ok DELIVERED`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_tungstenite::tungstenite::handshake::server::{Request, Response};

use async_std::io::prelude::BufReadExt;
use async_std::io::{BufReader, WriteExt};
use async_std::net::{TcpListener, TcpStream};

/// A server-to-client (unmasked) text frame.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

// The handshake callback's signature is tungstenite's.
#[allow(clippy::result_large_err)]
pub fn run() {
    async_std::task::block_on(async {
        let ws = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let trigger = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("ws {} trigger {}", ws.local_addr().expect("addr"), trigger.local_addr().expect("addr"));
        let rooms: Arc<Mutex<HashMap<String, Vec<TcpStream>>>> = Arc::default();
        let r2 = rooms.clone();
        async_std::task::spawn(async move {
            loop {
                let Ok((s, _)) = ws.accept().await else { continue };
                let rooms = r2.clone();
                async_std::task::spawn(async move {
                    let _ = s.set_nodelay(true);
                    let mut query = String::new();
                    let cb = |req: &Request, resp: Response| {
                        query = req.uri().query().unwrap_or("").to_owned();
                        Ok(resp)
                    };
                    if let Ok(w) = async_tungstenite::accept_hdr_async(s, cb).await {
                        let raw = w.into_inner();
                        let mut rooms = rooms.lock().unwrap_or_else(|e| e.into_inner());
                        for room in query.split(['+', '&']).filter(|r| !r.is_empty()) {
                            rooms.entry(room.to_owned()).or_default().push(raw.clone());
                        }
                    }
                });
            }
        });
        loop {
            let Ok((t, _)) = trigger.accept().await else { continue };
            let mut w = t.clone();
            let mut lines = BufReader::new(t).lines();
            use futures_util::StreamExt;
            while let Some(Ok(line)) = lines.next().await {
                let (room, text) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                let frame = text_frame(text.as_bytes());
                let targets: Vec<TcpStream> =
                    rooms.lock().unwrap_or_else(|e| e.into_inner()).get(room).cloned().unwrap_or_default();
                let mut delivered = 0;
                for mut s in targets {
                    if s.write_all(&frame).await.is_ok() {
                        delivered += 1;
                    }
                }
                if w.write_all(format!("ok {delivered}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
}
