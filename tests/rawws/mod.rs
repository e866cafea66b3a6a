//! A WebSocket client written by hand over a plain TCP stream, for what no
//! well-behaved library sends: invalid UTF-8, oversized or fragmented
//! control frames, reserved bits, unmasked frames, and floods of big frames
//! written as fast as the socket takes them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const CONTINUATION: u8 = 0x0;

/// Connects and completes the handshake for `path`; the response head has
/// been read (and must be a `101`), nothing after it.
pub fn open(port: u16, path: &str) -> TcpStream {
    open_with(port, path, &["Host: 127.0.0.1"])
}

/// [`open`] with the request's other head lines given (`Host` included).
pub fn open_with(port: u16, path: &str, head_lines: &[&str]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).expect("read timeout");
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for l in head_lines {
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read the handshake response");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// One frame as a client sends it: masked (with an all-zero key, so the
/// payload goes out as is) unless `masked` is false; `rsv` sets the reserved
/// bits (0-7).
pub fn frame_with(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(if fin { 0x80 } else { 0 } | (rsv & 7) << 4 | (opcode & 0xf));
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        f.extend_from_slice(&[0, 0, 0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

/// A final, masked frame.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(true, 0, opcode, payload, true)
}

/// The next frame from the server: its opcode and payload (`None` when the
/// connection ended first).
pub fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let mut len = (h[1] & 0x7f) as u64;
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).ok()?;
        len = u16::from_be_bytes(b) as u64;
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).ok()?;
    Some((h[0] & 0x0f, payload))
}

/// The next text message from the server.
pub fn read_text(s: &mut TcpStream) -> String {
    match read_frame(s) {
        Some((TEXT, p)) => String::from_utf8(p).expect("UTF-8 text"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads frames from the server until a close frame; returns its code and
/// reason (`None` when the connection ended without one).
pub fn read_close(s: &mut TcpStream) -> Option<(u16, String)> {
    loop {
        let (opcode, payload) = read_frame(s)?;
        if opcode == CLOSE {
            if payload.len() < 2 {
                return Some((1005, String::new()));
            }
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
        }
    }
}
