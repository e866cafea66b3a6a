//! The transport floor of workload 1, run as a separate process
//! (`ws2http-bench __echo-server`): a WebSocket echo server on ws2http's own
//! stack (async-std + async-tungstenite, the same buffer settings) that
//! answers each message at once, with no script. Its round trip is what any
//! server on this stack pays per message before doing any work, so
//! "ws2http p50 − spawn p50 − echo p50" is what ws2http itself adds.
//!
//! Prints `ws ADDR`.

use async_std::net::TcpListener;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use futures_util::StreamExt;

pub fn run() {
    async_std::task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("ws {}", listener.local_addr().expect("addr"));
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            async_std::task::spawn(async move {
                let _ = s.set_nodelay(true);
                // As ws2http configures its connections.
                let config = WebSocketConfig::default().read_buffer_size(512).write_buffer_size(0);
                let Ok(ws) = async_tungstenite::accept_async_with_config(s, Some(config)).await else { return };
                let (mut tx, mut rx) = ws.split();
                while let Some(Ok(m)) = rx.next().await {
                    if (m.is_text() || m.is_binary()) && tx.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}
