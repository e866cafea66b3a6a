//! The transport floor of workload 1, run as a separate process
//! (`ws2http-bench __echo-server`): a WebSocket echo server on ws2http's own
//! stack (async-std + async-tungstenite, the same buffer settings) that
//! answers each message at once, with no script. Its round trip is what any
//! server on this stack pays per message before doing any work, so
//! "ws2http p50 − spawn p50 − echo p50" is what ws2http itself adds.
//!
//! With `spawn PROGRAM` it is the *stack floor* instead: each message runs
//! PROGRAM once with the payload on stdin and answers with its stdout, using
//! ws2http's own spawn primitive (posix_spawn, pidfd on the reactor) and
//! nothing else: no environment, no hub, no parsing, no logging, no limits.
//! It is the least a server on this stack can do per event, so ws2http's
//! distance to it is what its own features cost.
//!
//! Prints `ws ADDR`.

use async_std::net::TcpListener;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;

/// Runs `program` once with `input` on stdin; its stdout.
async fn spawn_once(program: &std::path::Path, input: &[u8]) -> Vec<u8> {
    use futures_lite::AsyncReadExt;
    use ws2http::backend::spawn::child as spawn;
    let target = ws2http::event::Target {
        filename: program.to_owned(),
        script_name: String::new(),
        path_info: String::new(),
        interpreter: None,
    };
    let mut path = spawn::EnvBlock::default();
    ws2http::backend::env::EnvSink::set(&mut path, "PATH", "/usr/bin:/bin");
    let budget = ws2http::backend::spawn::groups::Budget::from_now(
        std::time::Duration::from_secs(30),
        std::time::Duration::from_secs(2),
    );
    let Ok(mut child) = spawn::spawn(&target, &path, budget) else { return b"spawn failed".to_vec() };
    if let Some(stdin) = child.stdin.take() {
        spawn::feed(stdin, bytes::Bytes::copy_from_slice(input));
    }
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_end(&mut out).await;
    }
    drop(child.stderr.take());
    let _ = child.status("").await;
    out
}

pub fn run() {
    let program = match (std::env::args().nth(2).as_deref(), std::env::args().nth(3)) {
        (Some("spawn"), Some(p)) => Some(std::path::PathBuf::from(p)),
        _ => None,
    };
    async_std::task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("ws {}", listener.local_addr().expect("addr"));
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            let program = program.clone();
            async_std::task::spawn(async move {
                let _ = s.set_nodelay(true);
                // As ws2http configures its connections.
                let config = WebSocketConfig::default().read_buffer_size(512).write_buffer_size(0);
                let Ok(ws) = async_tungstenite::accept_async_with_config(s, Some(config)).await else { return };
                let (mut tx, mut rx) = ws.split();
                while let Some(Ok(m)) = rx.next().await {
                    if !(m.is_text() || m.is_binary()) {
                        continue;
                    }
                    let reply = match &program {
                        None => m,
                        Some(p) => {
                            Message::text(String::from_utf8_lossy(&spawn_once(p, &m.into_data()).await).into_owned())
                        }
                    };
                    if tx.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}
