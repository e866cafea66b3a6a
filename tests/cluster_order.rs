//! A resumable session's events keep their order when it moves to another
//! instance (cluster mode, real redis-server): the message events it had
//! queued on its old instance run there first, then those of the messages
//! its client sends after resuming, then its close event, one at a time, as
//! on one instance (docs/PROTOCOL.md "Resumable sessions", cluster part).
//! The old instance's other clients are served meanwhile.

mod common;
use std::path::{Path, PathBuf};

use async_tungstenite::tungstenite::Message;
use common::*;
use ws2http_test_suite::suite;

/// Every event of the session (not of `?other` clients) appends its start
/// and end to one log file both instances write; `slow K` sleeps 1 s.
fn script(log: &Path) -> String {
    let log = log.display();
    format!(
        r#"
case "$QUERY_STRING" in other) [ "$WS_EVENT" = message ] || exit 0 ;; esac
case "$WS_EVENT" in
open) echo "open" >> "{log}" ;;
message) m=$(cat); echo "start $m" >> "{log}"; case "$m" in "slow "*) sleep 1 ;; esac; echo "end $m" >> "{log}"; echo "done $m" ;;
close) echo "close $WS_CLOSE_CAUSE" >> "{log}" ;;
esac"#
    )
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Redis and `N` instances serving [`script`] at /chat.sh, logging to one file.
fn cluster<const N: usize>() -> (Redis, PathBuf, [Server; N]) {
    let redis = Redis::start();
    let log = scratch().join("shared.log");
    let dir = cgi_bin(&[("chat.sh", &script(&log))]);
    let nodes = std::array::from_fn(|_| Server::start_in(&dir, &["--redis", &redis.url()]));
    (redis, log, nodes)
}

/// A session opened on `a`, once its open event ran: its socket, id and token.
async fn first_session(a: &Server, log: &Path) -> (Ws, String, String) {
    let (x, hello) = open_session(&a.url("/chat.sh"), "ws2http.session.v1").await;
    let field = |k: &str| hello[k].as_str().expect("id and token").to_owned();
    wait_for("its open event", || lines(log).contains(&"open".to_owned()).then_some(()));
    (x, field("id"), field("token"))
}

/// The log `events` then the client's close event make.
fn closed_after(events: &[&str]) -> Vec<String> {
    events.iter().map(|s| s.to_string()).chain(["close client".to_owned()]).collect()
}

#[suite("redis")]
#[async_std::test]
async fn a_moved_sessions_events_run_in_order_across_instances_close_last() {
    let (_redis, log, [a, b]) = cluster();
    let (mut x, id, token) = first_session(&a, &log).await;
    // Another client of A's.
    let mut o = connect(&a.url("/chat.sh?other")).await;
    let o_id = wait_for("the other client", || conn_ids(&a.api("/connections")).into_iter().find(|c| *c != id));
    // Two slow message events queued on A; the client drops while the first runs.
    for k in 1..=2 {
        x.send(Message::text(format!("slow {k}"))).await.unwrap();
    }
    wait_for("the first slow event", || lines(&log).contains(&"start slow 1".to_owned()).then_some(()));
    drop(x);
    // It comes back through B, sends at once and closes.
    let resume = format!("ws2http.session.v1, ws2http.resume.{token}.0");
    let (mut x, hello) = open_session(&b.url("/chat.sh"), &resume).await;
    assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id.as_str())), "{hello}");
    x.send(Message::text("fast 3")).await.unwrap();
    x.close(None).await.unwrap();
    // A serves its other clients while X's slow events still run there.
    assert_eq!(post(&a.api(&format!("/send/{o_id}")), "ping").status, 200);
    assert_eq!(next_text(&mut o).await, "ping");
    assert!(!lines(&log).contains(&"end slow 2".to_owned()), "O was served only after X's events: {:?}", lines(&log));
    wait_for("the close event", || lines(&log).iter().any(|l| l.starts_with("close")).then_some(()));
    let want = ["open", "start slow 1", "end slow 1", "start slow 2", "end slow 2", "start fast 3", "end fast 3"];
    assert_eq!(lines(&log), closed_after(&want), "one event at a time, in order, close last");
}

/// A chain of moves, A to B to C, while A's slow events still run: B's
/// event (held for A's) runs after them, C's after B's, then the close,
/// one at a time (the second source review: a `ran` routed to the current
/// holder released C while B's held event still waited).
#[suite("redis")]
#[async_std::test]
async fn a_chain_of_moves_keeps_the_order_of_every_instances_events() {
    let (_redis, log, [a, b, c]) = cluster();
    let (mut x, id, mut token) = first_session(&a, &log).await;
    x.send(Message::text("slow 1")).await.unwrap();
    wait_for("the slow event", || lines(&log).contains(&"start slow 1".to_owned()).then_some(()));
    drop(x);
    // Through B: one message (held there for A's), then away again; through C: one more, and close.
    for (server, msg) in [(&b, "fast 2"), (&c, "fast 3")] {
        let resume = format!("ws2http.session.v1, ws2http.resume.{token}.0");
        let (mut x, hello) = open_session(&server.url("/chat.sh"), &resume).await;
        assert_eq!((hello["ws2http"].as_str(), hello["id"].as_str()), (Some("resumed"), Some(id.as_str())), "{hello}");
        token = hello["token"].as_str().expect("its new token").to_owned();
        x.send(Message::text(msg)).await.unwrap();
        if msg == "fast 3" {
            x.close(None).await.unwrap();
        } else {
            // Gone without a close frame (its message is read before the end of the stream).
            drop(x);
        }
    }
    wait_for("the close event", || lines(&log).iter().any(|l| l.starts_with("close")).then_some(()));
    let want = ["open", "start slow 1", "end slow 1", "start fast 2", "end fast 2", "start fast 3", "end fast 3"];
    assert_eq!(lines(&log), closed_after(&want), "one event at a time, in order, close last");
}
