//! The hub in-process: rooms, metadata, delivery, slow consumers, the
//! connection's life in the hub, shutdown and refusals.

use std::sync::atomic::AtomicUsize;

use super::*;
use crate::event::{RequestFields, RequestInfo, Target};
use crate::hub::shared::Ending;

/// A hub with `--max-outgoing out_queue` and `--max-outgoing-bytes per_conn`.
fn hub_with(out_queue: usize, per_conn: usize) -> Hub {
    let held: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    Hub::new(out_queue, OutgoingBudget::new(per_conn, usize::MAX / 2, held))
}

fn hub() -> Hub {
    hub_with(64, 1 << 20)
}

struct Client {
    id: ConnId,
    rx: Outgoing,
    shared: Arc<ConnShared>,
}

impl Client {
    /// The messages queued for it, in order.
    fn got(&self) -> Vec<String> {
        std::iter::from_fn(|| self.rx.try_recv().ok())
            .map(|m| match m {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => format!("bin:{}", b.len()),
            })
            .collect()
    }
}

fn connect(hub: &Hub, id: &str, endpoint: &str) -> Client {
    let target = Target {
        filename: format!("/cgi-bin{endpoint}").into(),
        script_name: endpoint.into(),
        path_info: String::new(),
        interpreter: None,
    };
    let request =
        RequestInfo::new(RequestFields { remote_addr: "127.0.0.1", remote_port: "5000", ..Default::default() }, []);
    let id = ConnId::parse(id).expect("id");
    let (rx, shared) = hub.register(Arc::new(ConnInfo { id: id.clone(), target, request }));
    Client { id, rx, shared }
}

fn send(to: &Client, text: &str) -> Action {
    Action::Send { to: to.id.clone(), msg: Message::text(text.to_owned()) }
}

fn join(c: &Client, room: &str) -> Action {
    Action::Join { conn: c.id.clone(), room: room.into() }
}

fn to_room(room: &str, text: &str, except: Option<&Client>) -> Action {
    Action::Room { room: room.into(), msg: Message::text(text.to_owned()), except: except.map(|c| c.id.clone()) }
}

fn set(c: &Client, key: &str, value: Option<&str>) -> Action {
    Action::SetMeta { conn: c.id.clone(), key: key.into(), value: value.map(str::to_owned) }
}

fn ids(views: &[ConnView]) -> Vec<&str> {
    views.iter().map(|v| v.id.as_str()).collect()
}

#[test]
fn rooms_deliver_to_their_members_and_count_them() {
    let hub = hub();
    let (a, b, c) = (connect(&hub, "a", "/chat.sh"), connect(&hub, "b", "/chat.sh"), connect(&hub, "c", "/x.sh"));
    for action in [join(&a, "lobby"), join(&b, "lobby"), join(&c, "zoo"), join(&a, "attic"), join(&a, "lobby")] {
        assert_eq!(hub.apply(action), Applied::Reached(1));
    }
    assert_eq!(hub.apply(to_room("lobby", "hi", None)), Applied::Reached(2));
    assert_eq!(hub.apply(to_room("lobby", "not a", Some(&a))), Applied::Reached(1));
    assert_eq!(hub.apply(to_room("nowhere", "x", None)), Applied::Reached(0));
    assert_eq!((a.got(), b.got(), c.got()), (vec!["hi".to_owned()], vec!["hi".into(), "not a".into()], vec![]));
    let rooms: Vec<(String, usize)> = hub.rooms().into_iter().collect();
    assert_eq!(rooms, [("attic".into(), 1), ("lobby".into(), 2), ("zoo".into(), 1)], "sorted by name");
    assert_eq!(ids(&hub.list(Some("lobby"), None)), ["a", "b"]);
    assert_eq!(ids(&hub.list(Some("lobby"), Some("/x.sh"))), Vec::<&str>::new());
    assert_eq!(hub.get(&a.id).map(|v| v.rooms), Some(vec!["attic".into(), "lobby".into()]), "sorted");

    assert_eq!(hub.apply(Action::Leave { conn: a.id.clone(), room: "lobby".into() }), Applied::Reached(1));
    assert_eq!(hub.apply(to_room("lobby", "after", None)), Applied::Reached(1));
    assert_eq!((a.got(), b.got()), (vec![], vec!["after".to_owned()]));
    assert_eq!(hub.rooms().get("lobby"), Some(&1));
    hub.apply(Action::Leave { conn: b.id.clone(), room: "lobby".into() });
    assert_eq!(hub.rooms().get("lobby"), None, "a room exists while it has members");
}

#[test]
fn listing_is_oldest_first_and_shows_the_connection() {
    let hub = hub();
    let names = ["m", "k", "z", "a"];
    for n in names {
        connect(&hub, n, "/chat.sh");
    }
    // Oldest first (by the exact time of connecting), not by id.
    let listed = hub.list(None, None);
    assert_eq!(ids(&listed), names);
    let v = &listed[0];
    assert_eq!((v.endpoint.as_str(), v.remote_addr.as_str()), ("/chat.sh", "127.0.0.1:5000"));
    assert!(v.connected_at.ends_with('Z') && v.connected_at.len() == 20, "RFC 3339 seconds: {}", v.connected_at);
}

#[test]
fn metadata_is_set_removed_and_seen_by_the_next_event() {
    let hub = hub();
    let a = connect(&hub, "a", "/chat.sh");
    assert_eq!(hub.apply(set(&a, "nick", Some("al"))), Applied::Reached(1));
    assert_eq!(hub.apply(set(&a, "badge", Some("gold"))), Applied::Reached(1));
    assert_eq!(hub.apply(set(&a, "nick", Some("alice"))), Applied::Reached(1));
    hub.apply(join(&a, "r"));
    let (rooms, meta) = hub.snapshot(&a.id);
    assert_eq!(rooms, ["r"]);
    assert_eq!(meta, [("badge".to_owned(), "gold".to_owned()), ("nick".into(), "alice".into())]);
    assert_eq!(hub.apply(set(&a, "badge", None)), Applied::Reached(1));
    assert_eq!(
        hub.get(&a.id).map(|v| v.metadata.into_iter().collect::<Vec<_>>()),
        Some(vec![("nick".into(), "alice".into())])
    );
    let nobody = ConnId::parse("nobody").expect("id");
    assert_eq!(hub.apply(Action::SetMeta { conn: nobody.clone(), key: "k".into(), value: None }), Applied::Reached(0));
    assert_eq!(hub.snapshot(&nobody), (vec![], vec![]));
}

#[test]
fn broadcast_reaches_every_connection_or_one_endpoint() {
    let hub = hub();
    let (a, b, c) = (connect(&hub, "a", "/chat.sh"), connect(&hub, "b", "/chat.sh"), connect(&hub, "c", "/x.sh"));
    let all = |endpoint: Option<&str>, text: &str| Action::Broadcast {
        endpoint: endpoint.map(str::to_owned),
        msg: Message::text(text.to_owned()),
    };
    assert_eq!(hub.apply(all(None, "everyone")), Applied::Reached(3));
    assert_eq!(hub.apply(all(Some("/chat.sh"), "chat")), Applied::Reached(2));
    assert_eq!(hub.apply(all(Some("/nope.sh"), "nobody")), Applied::Reached(0));
    assert_eq!(
        hub.apply(Action::Send { to: c.id.clone(), msg: Message::Binary(vec![1, 2].into()) }),
        Applied::Reached(1)
    );
    assert_eq!(a.got(), ["everyone", "chat"]);
    assert_eq!(b.got(), ["everyone", "chat"]);
    assert_eq!(c.got(), ["everyone", "bin:2"]);
    assert_eq!(hub.apply(send(&a, "x")), Applied::Reached(1));
    let nobody = Action::Send { to: ConnId::parse("nobody").expect("id"), msg: Message::text("x") };
    assert_eq!(hub.apply(nobody), Applied::Reached(0));
}

#[test]
fn a_client_over_its_message_count_is_a_slow_consumer() {
    let hub = hub_with(2, 1 << 20);
    let (slow, fast) = (connect(&hub, "slow", "/c.sh"), connect(&hub, "fast", "/c.sh"));
    for action in [join(&slow, "r"), join(&fast, "r")] {
        hub.apply(action);
    }
    assert_eq!(hub.apply(to_room("r", "1", None)), Applied::Reached(2));
    assert_eq!(fast.got(), ["1"], "fast reads");
    assert_eq!(hub.apply(to_room("r", "2", None)), Applied::Reached(2));
    assert_eq!(fast.got(), ["2"]);
    // slow has 2 waiting: --max-outgoing 2.
    assert_eq!(hub.apply(to_room("r", "3", None)), Applied::Reached(1));
    let closed = slow.shared.close_request().expect("closed");
    assert_eq!((closed.code, closed.reason.as_str(), closed.cause), (1008, "slow consumer", CloseCause::SlowConsumer));
    assert!(slow.shared.is_aborted(), "at once, even while its writer is blocked");
    assert_eq!(hub.apply(send(&slow, "4")), Applied::Reached(0), "its queue is closed");
    assert_eq!(slow.got(), ["1", "2"]);
    assert_eq!(fast.got(), ["3"]);
}

#[test]
fn a_client_over_its_byte_budget_is_a_slow_consumer() {
    let hub = hub_with(100, 10);
    let a = connect(&hub, "a", "/c.sh");
    // An empty queue takes any message, however big.
    assert_eq!(hub.apply(send(&a, &"x".repeat(50))), Applied::Reached(1));
    assert_eq!(a.got().len(), 1);
    a.shared.taken(50);
    assert_eq!(hub.apply(send(&a, "12345678")), Applied::Reached(1));
    assert_eq!(hub.apply(send(&a, "12")), Applied::Reached(1), "10 bytes queued: within the budget");
    assert!(a.shared.close_request().is_none());
    assert_eq!(hub.apply(send(&a, "1")), Applied::Reached(0), "11 bytes would go over 10");
    assert_eq!(a.shared.close_cause(), Some(CloseCause::SlowConsumer));
    assert_eq!(a.got(), ["12345678", "12"]);
}

#[test]
fn a_detached_connection_gets_nothing_but_keeps_its_state_until_removed() {
    let hub = hub();
    let (a, b) = (connect(&hub, "a", "/c.sh"), connect(&hub, "b", "/c.sh"));
    hub.apply(join(&a, "r"));
    hub.apply(join(&b, "r"));
    hub.apply(set(&a, "k", Some("v")));
    a.shared.end();
    hub.detach(&a.id);
    assert!(hub.is_known(&a.id) && !hub.is_live(&a.id));
    assert_eq!((hub.live_count(), hub.len()), (1, 2));
    assert_eq!(hub.get(&a.id), None);
    assert_eq!(ids(&hub.list(None, None)), ["b"]);
    assert_eq!(hub.rooms().get("r"), Some(&1), "only live members count");
    assert_eq!(hub.apply(to_room("r", "x", None)), Applied::Reached(1));
    assert_eq!(hub.apply(send(&a, "x")), Applied::Reached(0));
    let close = Action::Close { conn: a.id.clone(), code: 1000, reason: String::new(), cause: CloseCause::Api };
    assert_eq!(hub.apply(close), Applied::Reached(0), "nothing to close");
    assert!(a.got().is_empty());
    // Its close event still sees its rooms and metadata.
    assert_eq!(hub.snapshot(&a.id), (vec!["r".to_owned()], vec![("k".to_owned(), "v".to_owned())]));
    hub.remove(&a.id);
    assert!(!hub.is_known(&a.id));
    assert_eq!(hub.snapshot(&a.id), (vec![], vec![]));
    hub.remove(&b.id);
    assert!(hub.is_empty() && hub.rooms().is_empty());
}

#[test]
fn close_sends_what_is_queued_then_closes() {
    let hub = hub();
    let a = connect(&hub, "a", "/c.sh");
    hub.apply(send(&a, "last"));
    let close = |code| Action::Close { conn: a.id.clone(), code, reason: "bye".into(), cause: CloseCause::Script };
    assert_eq!(hub.apply(close(4000)), Applied::Reached(1));
    assert_eq!(hub.apply(close(4001)), Applied::Reached(1), "still live until it ends");
    assert_eq!(a.shared.close_request().map(|r| r.code), Some(4000), "the first close wins");
    assert!(!a.shared.is_aborted());
    assert_eq!(a.got(), ["last"]);
    assert!(a.rx.is_closed());
}

#[test]
fn close_all_closes_every_live_connection() {
    let hub = hub();
    let (a, b, gone) = (connect(&hub, "a", "/c.sh"), connect(&hub, "b", "/c.sh"), connect(&hub, "gone", "/c.sh"));
    a.shared.request_close(
        CloseRequest { code: 1000, reason: String::new(), cause: CloseCause::Client },
        Ending::Record,
        None,
    );
    gone.shared.end();
    hub.detach(&gone.id);
    assert!(!hub.is_shutting_down());
    assert_eq!(hub.close_all(1001, "server shutdown", CloseCause::Shutdown), 2);
    assert!(hub.is_shutting_down());
    assert_eq!(a.shared.close_cause(), Some(CloseCause::Client), "already closing: unchanged");
    let r = b.shared.close_request().expect("closed");
    assert_eq!((r.code, r.reason.as_str(), r.cause), (1001, "server shutdown", CloseCause::Shutdown));
    assert!(b.rx.is_closed());
    // Ended already (as dropped): not asked again, its queue left alone.
    assert_eq!(gone.shared.close_cause(), Some(CloseCause::Dropped));
    assert!(!gone.rx.is_closed());
}

#[test]
fn caps_refuse_joins_and_metadata() {
    let hub = hub();
    let a = connect(&hub, "a", "/c.sh");
    for i in 0..caps::ROOMS {
        assert_eq!(hub.apply(join(&a, &format!("room{i:02}"))), Applied::Reached(1));
    }
    assert_eq!(hub.apply(join(&a, "one-too-many")), Applied::Refused);
    assert_eq!(hub.apply(join(&a, "room00")), Applied::Reached(1), "a room it is in already");
    assert_eq!(hub.snapshot(&a.id).0.len(), caps::ROOMS);
    assert_eq!(hub.rooms().get("one-too-many"), None);

    let b = connect(&hub, "b", "/c.sh");
    assert_eq!(hub.apply(join(&b, &"r".repeat(caps::ROOM_NAME + 1))), Applied::Refused);
    assert_eq!(hub.apply(join(&b, "nul\0room")), Applied::Refused);
    assert_eq!(hub.apply(set(&b, &"k".repeat(caps::KEY + 1), Some("v"))), Applied::Refused);
    assert_eq!(hub.apply(set(&b, "k", Some(&"v".repeat(caps::VALUE + 1)))), Applied::Refused);
    let value = "v".repeat(caps::VALUE);
    assert_eq!(hub.apply(set(&b, "k1", Some(&value))), Applied::Reached(1));
    assert_eq!(hub.apply(set(&b, "k2", Some(&value))), Applied::Refused, "over the 16 KiB total");
    assert_eq!(hub.apply(set(&b, "k1", Some("small"))), Applied::Reached(1), "replacing frees its bytes");
    assert_eq!(hub.apply(set(&b, "k2", Some(&value))), Applied::Reached(1));
    assert_eq!(hub.snapshot(&b.id), (vec![], vec![("k1".into(), "small".into()), ("k2".into(), value)]));
}

#[test]
fn presence_changes_are_reported() {
    let (tx, rx) = async_channel::unbounded();
    let hub = hub().with_presence(tx);
    let a = connect(&hub, "a", "/c.sh");
    hub.apply(join(&a, "r"));
    hub.apply(set(&a, "k", Some("v")));
    hub.apply(join(&a, &"r".repeat(caps::ROOM_NAME + 1)));
    a.shared.end();
    hub.detach(&a.id);
    let seen: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let rooms: Vec<_> = seen.iter().map(|(id, v)| (id.as_str(), v.as_ref().map(|v| v.rooms.len()))).collect();
    assert_eq!(rooms, [("a", Some(0)), ("a", Some(1)), ("a", Some(1)), ("a", None)], "a refusal changes nothing");
    assert_eq!(seen[2].1.as_ref().map(|v| v.metadata.len()), Some(1));
}

#[test]
fn the_local_delivery_counts_each_action() {
    let hub = Arc::new(hub());
    let a = connect(&hub, "a", "/c.sh");
    let delivery: Arc<dyn Delivery> = hub.clone();
    let over = "r".repeat(caps::ROOM_NAME + 1);
    let done = futures_lite::future::block_on(delivery.apply_counted(vec![
        join(&a, "r"),
        join(&a, &over),
        to_room("r", "hi", None),
    ]));
    assert_eq!(done, [Applied::Reached(1), Applied::Refused, Applied::Reached(1)]);
    assert_eq!(futures_lite::future::block_on(delivery.find(&a.id)).map(|v| v.id), Some("a".into()));
    assert_eq!(futures_lite::future::block_on(delivery.rooms()).get("r"), Some(&1));
    assert_eq!(delivery.new_conn_id().as_str().len(), 32);
}

/// Every idle connection holds a map entry and its shared state: rooms,
/// metadata, a close and the rest of a partial write are allocated only
/// when they exist (was 96 and 280 bytes; 8 of the 216 are the direct
/// path's `maybe_rest`, which spares every read of a large message a lock;
/// 72 are the event queue, inline since it left futures-channel, whose
/// state and stub node took two heap chunks, 144 bytes; the bench's idle
/// workload measures the whole connection; 8 are the pointer to a
/// resumable session's state, `None` on a plain connection).
#[test]
fn an_idle_connections_hub_state_stays_small() {
    let conn = std::mem::size_of::<Conn>();
    let shared = std::mem::size_of::<ConnShared>();
    assert!(conn <= 40, "the hub's entry grew to {conn} bytes");
    assert!(shared <= 296, "ConnShared grew to {shared} bytes");
    // Rooms and metadata come and go with the first join / the last leave.
    let hub = hub();
    let a = connect(&hub, "a", "/c.sh");
    let boxed = |hub: &Hub| lock(&hub.state).conns.get(&a.id).is_some_and(|c| c.joined.is_some());
    assert!(!boxed(&hub));
    hub.apply(join(&a, "r"));
    hub.apply(set(&a, "k", Some("v")));
    assert!(boxed(&hub));
    hub.apply(Action::Leave { conn: a.id.clone(), room: "r".into() });
    assert!(boxed(&hub), "the metadata is still there");
    hub.apply(set(&a, "k", None));
    assert!(!boxed(&hub), "freed with the last of them");
    assert_eq!(hub.snapshot(&a.id), (vec![], vec![]));
}

/// A room large enough to be split across threads (128 recipients per
/// thread, as many threads as cores): every member gets the message exactly
/// once, and the count says so.
#[test]
fn a_large_room_is_delivered_once_to_every_member() {
    let hub = hub();
    let members: Vec<Client> = (0..300).map(|i| connect(&hub, &format!("m{i}"), "/chat")).collect();
    for m in &members {
        assert_eq!(hub.apply(join(m, "big")), Applied::Reached(1));
    }
    assert_eq!(hub.apply(to_room("big", "hello", None)), Applied::Reached(300));
    assert_eq!(hub.apply(to_room("big", "again", Some(&members[7]))), Applied::Reached(299));
    for (i, m) in members.iter().enumerate() {
        let want: &[&str] = if i == 7 { &["hello"] } else { &["hello", "again"] };
        assert_eq!(m.got(), want, "member {i}");
    }
}
