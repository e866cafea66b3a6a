//! docs/DEPLOYMENT.md's nginx block, run as written: the only changes are
//! the upstream port (ws2http's), the listen port (a free one, not 443) and
//! a test certificate. A browser-like handshake (Origin and Host with the
//! port) through it must reach ws2http and be accepted: with
//! `proxy_set_header Host $host` nginx dropped the port and ws2http refused
//! every handshake on a port other than 443 as cross-origin.

mod common;
use common::*;
use ws2http_test_suite::suite;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The first ```nginx block of docs/DEPLOYMENT.md.
fn documented_nginx_block() -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/DEPLOYMENT.md"))
        .expect("read docs/DEPLOYMENT.md");
    let start = doc.find("```nginx\n").expect("an ```nginx block in docs/DEPLOYMENT.md") + "```nginx\n".len();
    let len = doc[start..].find("```").expect("the end of the nginx block");
    doc[start..start + len].to_owned()
}

/// Replaces exactly one occurrence, so a change of the documented block
/// that this test would no longer exercise fails loudly.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "expected {from:?} once in the documented nginx block:\n{text}");
    text.replacen(from, to, 1)
}

fn find_tool(name: &str, install: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| panic!("{name} is not installed: {install}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// nginx in the foreground, one process (`master_process off`: killing it
/// leaves no orphaned worker behind), with the documented block.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(block: &str, dir: &Path) -> Nginx {
        let nginx = find_tool("nginx", "apt-get install nginx-light");
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{block}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new(nginx)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Nginx { child, dir: dir.to_owned() }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for chat.example.org: (cert, key).
fn test_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = find_tool("openssl", "apt-get install openssl");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=chat.example.org"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("run openssl req");
    assert!(st.success(), "openssl req failed");
    (cert, key)
}

/// A TLS connection to 127.0.0.1:`port` (SNI chat.example.org) through
/// `openssl s_client`: its stdin and stdout carry the plain bytes.
fn tls_connect(port: u16) -> Child {
    Command::new(find_tool("openssl", "apt-get install openssl"))
        .args(["s_client", "-quiet", "-ign_eof", "-servername", "chat.example.org", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl s_client")
}

/// Reads from `r` until `pred` holds for what was read (or EOF).
fn read_until(r: &mut impl Read, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !pred(&buf) {
        match r.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

/// A masked client text frame (payload under 126 bytes).
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[suite("backends")]
#[test]
fn documented_nginx_block_passes_handshakes_on_a_non_default_port() {
    require_suite("backends"); // nginx and openssl (tests/suites.txt)
    let cgi_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("cgi-bin");
    // As contrib/ws2http.toml says: the public name nginx passes.
    let server = Server::start_in(&cgi_bin, &["--allow-host", "chat.example.org"]);
    let dir = common::scratch();
    let (cert, key) = test_certificate(&dir);
    let port = free_port();

    let block = documented_nginx_block();
    let block = replace_once(&block, "server 127.0.0.1:8080;", &format!("server 127.0.0.1:{};", server.port));
    let block = replace_once(&block, "listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"));
    let block = replace_once(
        &block,
        "/etc/letsencrypt/live/chat.example.org/fullchain.pem",
        cert.to_str().expect("UTF-8 path"),
    );
    let block =
        replace_once(&block, "/etc/letsencrypt/live/chat.example.org/privkey.pem", key.to_str().expect("UTF-8 path"));
    let nginx = Nginx::start(&block, &dir);
    wait_for("nginx to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());

    // What a browser on https://chat.example.org:PORT/ sends.
    let mut tls = tls_connect(port);
    let mut stdin = tls.stdin.take().expect("s_client stdin");
    let mut stdout = tls.stdout.take().expect("s_client stdout");
    let request = format!(
        "GET /echo.sh HTTP/1.1\r\nHost: chat.example.org:{port}\r\nOrigin: https://chat.example.org:{port}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stdin.write_all(request.as_bytes()).expect("send the handshake");
    let head = read_until(&mut stdout, |b| b.windows(4).any(|w| w == b"\r\n\r\n"));
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "handshake through nginx refused:\n{head}\nws2http log:\n{}\nnginx log:\n{}",
        server.log(),
        nginx.error_log()
    );

    // And the connection works both ways through nginx: echo.sh answers.
    stdin.write_all(&text_frame(b"through nginx")).expect("send a message");
    let reply = read_until(&mut stdout, |b| b.len() >= 2 + 13);
    assert_eq!(reply, [&[0x81, 13][..], b"through nginx"].concat(), "echo through nginx");
    drop(stdin);
    let _ = tls.kill();
    let _ = tls.wait();
}
