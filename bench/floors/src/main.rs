//! The tokio floor of workload 1 (`ws2http-floor-tokio PROGRAM`): the least a
//! WebSocket server on tokio can do per event. Each connection is a task on
//! the multi-thread runtime (one worker per core); each text or binary
//! message runs PROGRAM once through `tokio::process` with the spawn limit's
//! plumbing (`env_clear` + `PATH`; stdin, stdout and stderr piped; payload
//! written and stdin closed; stdout then stderr read to EOF; exit waited
//! for) and the reply is its stdout. No environment, parsing, logging or
//! limits: a floor, not a server to deploy.
//!
//! It lives outside ws2http's workspace (see Cargo.toml) so that tokio's
//! runtime never reaches the product's build. Prints `ws ADDR` once
//! listening, like the harness's other baseline servers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

/// Runs `program` once with `input` on stdin; its stdout.
async fn spawn_once(program: &Path, path_env: &str, input: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = Command::new(program)
        .env_clear()
        .env("PATH", path_env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A script may exit without reading its stdin.
        let _ = stdin.write_all(input).await;
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut out).await?;
    }
    let mut err = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_end(&mut err).await?;
    }
    child.wait().await?;
    Ok(out)
}

/// One connection: every data message answered by one run of `program`.
async fn serve(stream: TcpStream, program: Arc<(PathBuf, String)>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
    while let Some(Ok(m)) = ws.next().await {
        if !(m.is_text() || m.is_binary()) {
            continue;
        }
        let (path, path_env) = &*program;
        let reply = match spawn_once(path, path_env, &m.into_data()).await {
            Ok(out) => String::from_utf8_lossy(&out).into_owned(),
            Err(e) => format!("spawn {}: {e}", path.display()),
        };
        if ws.send(Message::text(reply)).await.is_err() {
            break;
        }
    }
}

#[tokio::main]
async fn main() {
    let Some(program) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: ws2http-floor-tokio PROGRAM");
        std::process::exit(2);
    };
    let path_env = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let program = Arc::new((program, path_env));
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ws2http-floor-tokio: bind 127.0.0.1:0: {e}");
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "ws {addr}").and_then(|_| stdout.flush());
    loop {
        if let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, program.clone()));
        }
    }
}
