//! The transport floor of workload 1, run as a separate process
//! (`ws2http-bench __echo-server`): a WebSocket echo server on ws2http's own
//! stack (async-std + async-tungstenite, the same buffer settings) that
//! answers each message at once, with no script. Its round trip is what any
//! server on this stack pays per message before doing any work, so
//! "ws2http p50 − spawn p50 − echo p50" is what ws2http itself adds.
//!
//! With `spawn PROGRAM` it is the *stack floor* instead: each message runs
//! PROGRAM once with the payload on stdin and answers with its stdout, using
//! ws2http's own spawn primitive: the spawn transport's worker pool
//! (`ws2http::backend::spawn::{pool, worker}`: one job handed to a blocking
//! worker thread, which spawns, writes the payload, reads stdout and waits for
//! the exit without the reactor, and hands the output back through a
//! channel) and nothing else: no environment beyond PATH, no hub, no
//! directive parsing, no event log line. It is the least a server on this
//! stack and this spawn path can do per event, so ws2http's distance to it
//! is what its own features cost.
//!
//! Prints `ws ADDR`.

use async_std::net::TcpListener;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ws2http::backend::spawn::child::EnvBlock;
use ws2http::backend::spawn::pool::Pool;
use ws2http::backend::spawn::process::{Stderr, Time};
use ws2http::backend::spawn::worker::{self, Back, Job};
use ws2http::event::{ConnInfo, Target};
use ws2http::id::ConnId;

/// The worker pool, as the spawn transport sizes it (`--max-procs`): one
/// thread per connection at most, here 64.
static WORKERS: std::sync::LazyLock<Pool<Job>> = std::sync::LazyLock::new(|| Pool::new(64, "floor-spawn", worker::run));

/// What every job runs: `program`, as a connection's target.
fn conn_of(program: &std::path::Path) -> Arc<ConnInfo> {
    let target = Target {
        filename: program.to_owned(),
        script_name: String::new(),
        path_info: String::new(),
        interpreter: None,
    };
    let id = ConnId::parse("stackfloor").unwrap_or_else(ConnId::random);
    Arc::new(ConnInfo { id, target, request: Default::default() })
}

/// Runs the connection's program once with `input` on stdin, on a worker
/// thread; its stdout.
async fn spawn_once(conn: &Arc<ConnInfo>, input: &[u8]) -> Vec<u8> {
    let mut env = EnvBlock::with_capacity(64, 1);
    ws2http::backend::env::EnvSink::set(&mut env, "PATH", "/usr/bin:/bin");
    let time = Time { started: Instant::now(), timeout: Duration::from_secs(30), grace: Duration::from_secs(2) };
    let (back, answers) = async_channel::bounded(4);
    let job = Job {
        conn: conn.clone(),
        env,
        stdin: bytes::Bytes::copy_from_slice(input),
        time,
        max_output: 1 << 20,
        label: String::new(),
        stderr: Stderr::Log,
        direct: None,
        back: Some(back),
    };
    if WORKERS.submit(job).is_err() {
        return b"spawn failed".to_vec();
    }
    let mut out = Vec::new();
    while let Ok(answer) = answers.recv().await {
        match answer {
            Back::Output { bytes, .. } => out.extend_from_slice(&bytes),
            Back::Done(_) => break,
        }
    }
    out
}

pub fn run() {
    let program = match (std::env::args().nth(2).as_deref(), std::env::args().nth(3)) {
        (Some("spawn"), Some(p)) => Some(conn_of(std::path::Path::new(&p))),
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
