//! A real redis-server on a loopback port for the cluster tests (no
//! persistence), killed when dropped.

use std::process::{Child, Command, Stdio};

use super::{require_suite, wait_for};

pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    /// On `port` (a test that restarts Redis starts it again on the same one).
    pub fn start_on(port: u16) -> Redis {
        require_suite("redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_for("redis-server to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        Redis { child, port }
    }

    /// On a free port.
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Redis::start_on(port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until instance `s` publishes to Redis and is subscribed there: a
/// resume on it before then is refused (4410), a cut marker to it is missed.
pub fn wait_clustered(s: &super::Server) {
    s.wait_log("cluster: connected to Redis");
    s.wait_log("cluster: subscribed to");
}

/// Logs every event with its connection id; joins room r and sets name=bob on open.
pub const CHAT: &str = r#"
case "$WS_EVENT" in
open) echo "open $WS_CONNECTION_ID" >> "$EVENTS_LOG"; echo "@join r"; echo "@set name bob" ;;
message) echo "echo $(cat)" ;;
close) echo "close $WS_CONNECTION_ID $WS_CLOSE_CAUSE $WS_ROOMS $WS_META_name" >> "$EVENTS_LOG" ;;
esac"#;

/// An instance of the cluster on `redis` serving CHAT at /chat.sh, with `extra` flags.
pub fn node(redis: &Redis, extra: &[&str]) -> super::Server {
    let dir = super::cgi_bin(&[("chat.sh", CHAT)]);
    let mut args = vec!["--redis".to_owned(), redis.url()];
    args.extend(extra.iter().map(|s| s.to_string()));
    super::Server::start_in(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A session socket and its first message.
pub async fn open_session(url: &str, protocols: &str) -> (super::Ws, serde_json::Value) {
    let (mut ws, _) = super::connect_with(url, &[("Sec-WebSocket-Protocol", protocols)]).await.expect("handshake");
    let first: serde_json::Value = serde_json::from_str(&super::next_text(&mut ws).await).expect("a session message");
    (ws, first)
}
