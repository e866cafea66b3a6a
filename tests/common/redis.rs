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
