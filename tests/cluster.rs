//! Cluster mode with a real redis-server and three ws2http instances:
//! rooms, sends by id and presence across instances; an instance killed;
//! Redis restarted.

mod common;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use common::*;
use serde_json::json;

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        wait_for("redis-server to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        Redis { child, port }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `None` (skip) on a developer machine without redis-server; in CI a
/// missing redis-server fails the test.
fn have_redis() -> bool {
    let ok = Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("redis-server is required in CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}

fn ids(s: &Server) -> Vec<String> {
    conn_ids(&s.api("/connections"))
}

#[async_std::test]
async fn three_instances_share_rooms_sends_and_presence() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start(free_port());
    let url = redis.url();
    let nodes: Vec<Server> = (0..3).map(|_| Server::start(&["--redis", &url])).collect();
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(mirror(n, "/mirror.sh").await);
    }
    for (ws, _) in clients.iter_mut() {
        ws.send(Message::text("@join lobby")).await.unwrap();
    }
    let mut all: Vec<String> = clients.iter().map(|(_, id)| id.clone()).collect();
    all.sort();
    // Presence is complete from every instance.
    for n in &nodes {
        wait_for("cluster-wide presence", || (ids(n) == all).then_some(()));
        wait_for("cluster-wide rooms", || (get(&n.api("/rooms")).json() == json!({"lobby": 3})).then_some(()));
    }
    // A room message from instance 0 reaches everyone once, in order.
    clients[0].0.send(Message::text("@room lobby one\n@room lobby two")).await.unwrap();
    for (ws, _) in clients.iter_mut() {
        assert_eq!(next_text(ws).await, "one");
        assert_eq!(next_text(ws).await, "two");
    }
    // A send by id crosses instances.
    let id2 = clients[2].1.clone();
    clients[0].0.send(Message::text(format!("@send {id2} psst"))).await.unwrap();
    assert_eq!(next_text(&mut clients[2].0).await, "psst");
    // The control API of any instance reaches any connection.
    let r = post(&nodes[1].api(&format!("/send/{}", clients[0].1)), "from api 1");
    assert_eq!(r.json(), json!({"delivered": 1}));
    assert_eq!(next_text(&mut clients[0].0).await, "from api 1");
    assert_eq!(post(&nodes[2].api("/rooms/lobby"), "all of you").json(), json!({"delivered": 3}));
    for (ws, _) in clients.iter_mut() {
        assert_eq!(next_text(ws).await, "all of you");
    }
    // Nobody got anything twice.
    for (ws, _) in clients.iter_mut() {
        assert!(silent(ws, 300).await);
    }
    // A connection closed through another instance's API.
    let id1 = clients[1].1.clone();
    let r = api("DELETE", &nodes[0].api(&format!("/connections/{id1}?code=4100")), None, None, b"");
    assert_eq!(r.status, 200);
    match next(&mut clients[1].0).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4100),
        other => panic!("{other:?}"),
    }
    // Its close event (on instance 1) tells the others it left.
    assert_eq!(next_text(&mut clients[0].0).await, format!("left {id1}"));
    assert_eq!(next_text(&mut clients[2].0).await, format!("left {id1}"));
}

#[async_std::test]
async fn a_killed_instance_leaves_presence_and_redis_restarts_are_survived() {
    if !have_redis() {
        return;
    }
    let port = free_port();
    let mut redis = Redis::start(port);
    let url = redis.url();
    let a = Server::start(&["--redis", &url]);
    let mut b = Server::start(&["--redis", &url]);
    let (mut ca, ida) = mirror(&a, "/mirror.sh").await;
    let (_cb, idb) = mirror(&b, "/mirror.sh").await;
    wait_for("both in presence", || (ids(&a).len() == 2).then_some(()));

    // Kill b without a graceful shutdown: its connection leaves a's view of
    // the cluster once its heartbeat expires.
    let _ = b.child.kill();
    let _ = b.child.wait();
    wait_for("b's connection gone from presence", || (ids(&a) == vec![ida.clone()]).then_some(()));
    assert_eq!(post(&a.api(&format!("/send/{idb}")), "x").status, 404);

    // Redis goes away: local delivery keeps working.
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    ca.send(Message::text("@join r\n@room r still local")).await.unwrap();
    assert_eq!(next_text(&mut ca).await, "still local");
    a.wait_log("reconnecting");
    // Redis comes back on the same port: instances reconnect, a new instance
    // sees a's connection again and cross-instance delivery works.
    redis = Redis::start(port);
    let c = Server::start(&["--redis", &redis.url()]);
    let (mut cc, _) = mirror(&c, "/mirror.sh").await;
    wait_for("a's presence rewritten after the restart", || ids(&c).contains(&ida).then_some(()));
    cc.send(Message::text(format!("@send {ida} after restart"))).await.unwrap();
    // The subscription may need a moment after Redis returns: retry the push.
    let got = async_std::future::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(Some(Ok(Message::Text(t)))) =
                async_std::future::timeout(Duration::from_millis(500), futures_util::StreamExt::next(&mut ca)).await
            {
                if t.as_str() == "after restart" {
                    return;
                }
            }
            let _ = post(&c.api(&format!("/send/{ida}")), "after restart");
        }
    })
    .await;
    assert!(got.is_ok(), "cross-instance delivery did not resume after Redis came back");
    // a announced itself again on the new Redis (once at start, once after).
    wait_for("a's reconnect", || (a.log().matches("cluster: connected to Redis").count() >= 2).then_some(()));
    a.wait_log("cluster: Redis subscription lost");
}
