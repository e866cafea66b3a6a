//! A raw HTTP/1.x client connection for tests that check the exact bytes
//! of responses: send bytes, then read lines, heads and bodies from one
//! buffer. Test files add their own response framing on top (inherent
//! impls in the same test crate).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct HttpConn {
    pub s: TcpStream,
    /// Bytes read and not yet taken.
    pub buf: Vec<u8>,
}

impl HttpConn {
    pub fn open(port: u16) -> HttpConn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("read timeout");
        HttpConn { s, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.s.write_all(bytes.as_ref()).expect("send");
    }

    /// Reads more; false at the end of the stream (or a reset).
    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "the connection ended inside a response");
        }
        self.buf.drain(..n).collect()
    }

    /// The next line, without its CRLF.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = self.take(i + 2);
                return String::from_utf8_lossy(&l[..i]).into_owned();
            }
            assert!(self.fill(), "the connection ended inside a line");
        }
    }

    /// Everything until the server closes.
    pub fn rest(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// `true` when the server has closed and sent nothing more.
    pub fn closed_clean(&mut self) -> bool {
        self.rest().is_empty()
    }
}
