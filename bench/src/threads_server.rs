//! The threads floor of workload 1, run as a separate process
//! (`ws2http-bench __threads-server PROGRAM`): the least a WebSocket server
//! can do per event with blocking I/O. One OS thread per connection, blocking
//! tungstenite (the version ws2http's async-tungstenite uses, default
//! settings) and `std::process`; each text or binary message runs PROGRAM
//! once with exactly the spawn limit's plumbing (`throughput::spawn_once`:
//! `env_clear` + `PATH`, three pipes, payload written, stdout and stderr read
//! to EOF, exit waited for) and the reply is its stdout. The child's pipes
//! and exit are waited for by the connection's own thread, in `read` and
//! `waitpid`: no reactor, no hand-off. No environment, parsing, logging or
//! limits: a floor, not a server to deploy.
//!
//! Prints `ws ADDR`. `KEY=VALUE` words after PROGRAM are added to each
//! spawn's environment (`--baseline-env`).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use async_tungstenite::tungstenite::{self, Message};

/// One connection, on its own thread, until it closes or fails.
fn serve(stream: TcpStream, program: &Path, path_env: &str) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tungstenite::accept(stream) else { return };
    while let Ok(m) = ws.read() {
        if !(m.is_text() || m.is_binary()) {
            continue;
        }
        let reply = match crate::throughput::spawn_once(program, path_env, &m.into_data()) {
            Ok(out) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) => e,
        };
        if ws.send(Message::text(reply)).is_err() {
            break;
        }
    }
}

pub fn run() {
    let Some(program) = std::env::args_os().nth(2).map(PathBuf::from) else {
        eprintln!("usage: ws2http-bench __threads-server PROGRAM [KEY=VALUE ...]");
        std::process::exit(2);
    };
    // `--baseline-env`, passed on.
    let _ = crate::throughput::BASELINE_ENV.set(crate::throughput::env_pairs(std::env::args().skip(3)));
    let path_env = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "ws {}", listener.local_addr().expect("addr")).and_then(|_| stdout.flush());
    for stream in listener.incoming().flatten() {
        let (program, path_env) = (program.clone(), path_env.clone());
        std::thread::spawn(move || serve(stream, &program, &path_env));
    }
}
