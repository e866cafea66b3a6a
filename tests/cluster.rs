//! Cluster mode with a real redis-server and three ws2http instances:
//! rooms, sends by id and presence across instances; an instance killed;
//! Redis restarted; a busy instance stays alive; a removed presence comes
//! back; every action lost in an outage is counted.

mod common;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use common::*;
use serde_json::json;
use ws2http_test_suite::suite;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A test that cannot run fails: without redis-server these tests would
/// prove nothing.
fn have_redis() -> bool {
    require_suite("redis");
    true
}

/// One Redis command over RESP, its raw reply.
fn redis_cmd(port: u16, args: &[&str]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).expect("redis reply");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The sum of the counts in the log lines `cluster: N cross-instance
/// action(s) lost WHY`.
fn logged_lost(log: &str, why: &str) -> u64 {
    let suffix = format!(" cross-instance action(s) lost {why}");
    log.lines()
        .filter_map(|l| l.split("cluster: ").nth(1)?.strip_suffix(suffix.as_str()))
        .map(|n| n.parse::<u64>().expect("a count"))
        .sum()
}

/// `ws2http_cluster_lost_total` from an instance's `/metrics`.
fn lost_total(s: &Server) -> u64 {
    s.metric("ws2http_cluster_lost_total").expect("ws2http_cluster_lost_total in /metrics")
}

fn ids(s: &Server) -> Vec<String> {
    conn_ids(&s.api("/connections"))
}

#[suite("redis")]
#[async_std::test]
async fn three_instances_share_rooms_sends_and_presence() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start_on(free_port());
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
    // Nobody got anything twice: a sentinel sent the same way (through
    // node 2 and Redis) comes next.
    for (ws, id) in clients.iter_mut() {
        sentinel(&nodes[2].api(&format!("/send/{id}")), ws).await;
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

#[suite("redis")]
#[async_std::test]
async fn a_killed_instance_leaves_presence_and_redis_restarts_are_survived() {
    if !have_redis() {
        return;
    }
    let port = free_port();
    let mut redis = Redis::start_on(port);
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
    redis = Redis::start_on(port);
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

/// Regression: the heartbeat fired only after 2 s without any other Redis
/// write, so steady traffic suppressed it and after 6 s the other instances
/// dropped every connection of the busy one (404 on POST /send/{id}).
#[suite("redis")]
#[async_std::test]
async fn a_busy_instance_keeps_its_idle_connections_in_presence() {
    have_redis();
    let redis = Redis::start_on(free_port());
    let a = Server::start(&["--redis", &redis.url()]);
    let b = Server::start(&["--redis", &redis.url()]);
    let (mut idle, id) = mirror(&a, "/mirror.sh").await;
    wait_for("a's connection seen from b", || ids(&b).contains(&id).then_some(()));
    // Steady traffic through a (every room message is a Redis publish) for
    // longer than DEAD_AFTER (6 s): b lists a's idle connection and reaches
    // it all along.
    let until = Instant::now() + Duration::from_secs(9);
    let mut n = 0;
    while Instant::now() < until {
        for _ in 0..5 {
            assert_eq!(post(&a.api("/rooms/busy"), "traffic").status, 200);
        }
        assert!(ids(&b).contains(&id), "b dropped a's idle connection after {n} rounds");
        let r = post(&b.api(&format!("/send/{id}")), &format!("ping {n}"));
        assert_eq!((r.status, r.json()), (200, json!({"delivered": 1})), "round {n}");
        assert_eq!(next_text(&mut idle).await, format!("ping {n}"));
        n += 1;
    }
    assert!(!a.log().contains("presence had been removed"), "a was taken for dead:\n{}", a.log());
    eprintln!("busy instance: {} room posts through a and {n} sends from b to a's idle connection in 9 s", 5 * n);
}

/// An instance whose presence another one removed (it found the heartbeat
/// key gone: the instance was stalled, or Redis lost its data) writes its
/// whole presence again, idle connections included.
#[suite("redis")]
#[async_std::test]
async fn a_removed_presence_is_written_again() {
    have_redis();
    let redis = Redis::start_on(free_port());
    let a = Server::start(&["--redis", &redis.url()]);
    let b = Server::start(&["--redis", &redis.url()]);
    let (mut idle, id) = mirror(&a, "/mirror.sh").await;
    wait_for("a's connection seen from b", || ids(&b).contains(&id).then_some(()));
    // What another instance does when it finds a's heartbeat missing.
    let inst = &id[..8];
    redis_cmd(redis.port, &["DEL", &format!("ws2http:alive:{inst}"), &format!("ws2http:conns:{inst}")]);
    redis_cmd(redis.port, &["SREM", "ws2http:instances", inst]);
    assert!(!ids(&b).contains(&id), "the presence was removed");
    let removed = Instant::now();
    wait_for("a's idle connection back in b's view", || ids(&b).contains(&id).then_some(()));
    eprintln!("removed presence back after {:?}", removed.elapsed());
    a.wait_log("presence had been removed from Redis; 1 local connection(s) announced again");
    assert_eq!(post(&b.api(&format!("/send/{id}")), "back").json(), json!({"delivered": 1}));
    assert_eq!(next_text(&mut idle).await, "back");
}

/// Regression: the action whose publish failed was dropped without being
/// counted (n - 1 counted for n lost actions).
#[suite("redis")]
#[async_std::test]
async fn every_action_lost_in_a_redis_outage_is_counted_and_logged() {
    have_redis();
    let port = free_port();
    let mut redis = Redis::start_on(port);
    let a = Server::start(&["--redis", &redis.url()]);
    let b = Server::start(&["--redis", &redis.url()]);
    let (mut ca, _) = mirror(&a, "/mirror.sh").await;
    let (mut cb, _) = mirror(&b, "/mirror.sh").await;
    ca.send(Message::text("@join lobby")).await.unwrap();
    cb.send(Message::text("@join lobby")).await.unwrap();
    wait_for("both in the room", || (get(&a.api("/rooms")).json() == json!({"lobby": 2})).then_some(()));
    assert_eq!(lost_total(&a), 0);

    let _ = redis.child.kill();
    let _ = redis.child.wait();
    const N: u64 = 5;
    for i in 0..N {
        // Delivered here (local delivery goes on); lost for b.
        assert_eq!(post(&a.api("/rooms/lobby"), &format!("lost {i}")).json(), json!({"delivered": 1}));
        assert_eq!(next_text(&mut ca).await, format!("lost {i}"));
    }
    wait_for("every lost action counted", || (lost_total(&a) >= N).then_some(()));
    // One log line per batch, and the batches add up to exactly N.
    let logged = logged_lost(&a.log(), "while Redis was unreachable");
    assert_eq!((lost_total(&a), logged), (N, N), "{}", a.log());

    // Redis back: the cluster recovers by itself.
    redis = Redis::start_on(port);
    let got = async_std::future::timeout(Duration::from_secs(20), async {
        loop {
            let _ = post(&a.api("/rooms/lobby"), "after");
            if let Ok(Some(Ok(Message::Text(t)))) =
                async_std::future::timeout(Duration::from_millis(500), futures_util::StreamExt::next(&mut cb)).await
            {
                if t.as_str() == "after" {
                    return;
                }
            }
        }
    })
    .await;
    assert!(got.is_ok(), "room messages from a did not reach b after Redis came back");
    assert!(!b.log().contains("lost while"), "b lost nothing: {}", b.log());
    drop(redis);
}

/// The queue of actions waiting for Redis is bounded in bytes
/// (`--cluster-queue`): what does not fit is lost, counted and logged, and
/// local delivery goes on.
#[suite("redis")]
#[async_std::test]
async fn a_full_publish_queue_loses_actions_counted_and_logged() {
    have_redis();
    let redis = Redis::start_on(free_port());
    // One byte: no action fits, so every one is refused, deterministically.
    let a = Server::start(&["--redis", &redis.url(), "--cluster-queue", "1"]);
    let b = Server::start(&["--redis", &redis.url()]);
    let (mut ca, _) = mirror(&a, "/mirror.sh").await;
    let (mut cb, idb) = mirror(&b, "/mirror.sh").await;
    ca.send(Message::text("@join lobby")).await.unwrap();
    cb.send(Message::text("@join lobby")).await.unwrap();
    wait_for("both in the room", || (get(&a.api("/rooms")).json() == json!({"lobby": 2})).then_some(()));
    const N: u64 = 4;
    for i in 0..N {
        assert_eq!(post(&a.api("/rooms/lobby"), &format!("m{i}")).status, 200);
        assert_eq!(next_text(&mut ca).await, format!("m{i}"), "local delivery goes on");
    }
    wait_for("the refused actions counted", || (lost_total(&a) >= N).then_some(()));
    assert_eq!(lost_total(&a), N);
    assert_eq!(logged_lost(&a.log(), "(the queue for Redis was full: --cluster-queue)"), N, "{}", a.log());
    assert_eq!(a.log().matches("cross-instance actions are lost until it drains").count(), 1, "{}", a.log());
    // Nothing reached b (the refused actions never left a).
    sentinel(&b.api(&format!("/send/{idb}")), &mut cb).await;
}
