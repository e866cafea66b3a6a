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
