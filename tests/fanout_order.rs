//! A connection's messages keep their order whichever way they reach its
//! socket: written by the hub straight into it (the direct path of a room
//! message, `hub::socket`) or queued for its writer (a message over 16 KiB
//! in fragments, one sent while others wait, a script's reply).

mod common;
use async_tungstenite::tungstenite::Message;
use common::*;

/// Per source, the numbers in the order they arrived.
#[derive(Default, Debug)]
struct Seen {
    me: Vec<usize>,
    room: Vec<usize>,
    send: Vec<usize>,
}

#[async_std::test]
async fn room_messages_api_sends_and_script_output_each_arrive_in_order() {
    // On each message the script prints a burst of lines to its own client.
    let bin = cgi_bin(&[(
        "burst.sh",
        r#"case "$WS_EVENT" in
open) echo "@join r"; echo "id $WS_CONNECTION_ID" ;;
message) read n; i=0; while [ $i -lt 40 ]; do echo "me $((n * 40 + i))"; i=$((i + 1)); done ;;
esac"#,
    )]);
    let s = Server::start_in(&bin, &[]);
    let mut ws = connect(&s.url("/burst.sh")).await;
    let id = next_text(&mut ws).await.strip_prefix("id ").expect("id first").to_owned();
    const N: usize = 60;
    // Room messages, every seventh over 16 KiB (queued, sent in fragments);
    // API sends to the connection; the script's bursts: all at once.
    let room_url = s.api("/rooms/r");
    let rooms = std::thread::spawn(move || {
        for k in 0..N {
            let pad = if k % 7 == 3 { "x".repeat(20_000) } else { String::new() };
            assert_eq!(post(&room_url, &format!("room {k} {pad}")).status, 200);
        }
    });
    let send_url = s.api(&format!("/send/{id}"));
    let sends = std::thread::spawn(move || {
        for k in 0..N {
            assert_eq!(post(&send_url, &format!("send {k}")).status, 200);
        }
    });
    for n in 0..5 {
        ws.send(Message::text(n.to_string())).await.expect("send");
    }
    let mut seen = Seen::default();
    while seen.me.len() < 5 * 40 || seen.room.len() < N || seen.send.len() < N {
        let text = next_text(&mut ws).await;
        let mut words = text.split(' ');
        let (source, k) = (words.next().unwrap_or(""), words.next().and_then(|k| k.parse().ok()));
        let k: usize = k.unwrap_or_else(|| panic!("unexpected message {text:.40}"));
        match source {
            "me" => seen.me.push(k),
            "room" => seen.room.push(k),
            "send" => seen.send.push(k),
            _ => panic!("unexpected message {text:.40}"),
        }
    }
    rooms.join().expect("room poster");
    sends.join().expect("send poster");
    assert_eq!(seen.room, (0..N).collect::<Vec<_>>(), "room messages in order");
    assert_eq!(seen.send, (0..N).collect::<Vec<_>>(), "API sends in order");
    assert_eq!(seen.me, (0..5 * 40).collect::<Vec<_>>(), "script output in order");
    // Nothing else was sent: the next message is a sentinel.
    sentinel(&s.api(&format!("/send/{id}")), &mut ws).await;
}

#[async_std::test]
async fn messages_queued_behind_a_full_socket_go_out_before_later_ones() {
    let bin = cgi_bin(&[("quiet.sh", r#"[ "$WS_EVENT" = open ] && echo "@join q"; exit 0"#)]);
    let flags = ["--max-outgoing", "100000", "--max-outgoing-bytes", "100000000", "--api-max-body", "10000000"];
    let s = Server::start_in(&bin, &flags);
    let mut ws = connect(&s.url("/quiet.sh")).await;
    wait_for("a member", || (get(&s.api("/rooms")).json() == serde_json::json!({"q": 1})).then_some(()));
    // The client reads nothing while 6 MB of room messages go out: its
    // socket fills up, and the rest waits in the writer's queue.
    const QUEUED: usize = 600;
    let body: String = (0..QUEUED).map(|k| format!("@room q {k} {}\n", "x".repeat(10_000))).collect();
    let r = post(&s.api("/actions"), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    // More room messages while the client drains them: each must wait for
    // the queue, not slip into the socket between two queued ones.
    let url = s.api("/rooms/q");
    let poster = std::thread::spawn(move || {
        for k in QUEUED..QUEUED + 300 {
            assert_eq!(post(&url, &k.to_string()).status, 200);
        }
    });
    let mut got = Vec::new();
    while got.len() < QUEUED + 300 {
        let text = next_text(&mut ws).await;
        got.push(text.split(' ').next().and_then(|k| k.parse::<usize>().ok()).expect("a number first"));
    }
    poster.join().expect("poster");
    assert!(got.iter().copied().eq(0..QUEUED + 300), "out of order: {:?}", first_disorder(&got));
}

/// Where the numbers first go backwards.
fn first_disorder(got: &[usize]) -> Option<(usize, usize)> {
    got.windows(2).find(|w| w[1] != w[0] + 1).map(|w| (w[0], w[1]))
}
