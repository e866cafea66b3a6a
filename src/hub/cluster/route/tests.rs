use super::*;
use crate::action::{CloseCause, Message};

const ME: &str = "aaaaaaaa";

fn id(s: &str) -> ConnId {
    ConnId::parse(s).expect("valid id")
}

fn view(id: &str, endpoint: &str, rooms: &[&str]) -> ConnView {
    ConnView {
        id: id.into(),
        endpoint: endpoint.into(),
        remote_addr: "127.0.0.1:1".into(),
        connected_at: "2026-01-01T00:00:00Z".into(),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        metadata: Default::default(),
    }
}

#[test]
fn ids_carry_their_instance() {
    let id = ConnId::random_in("abcd1234");
    assert_eq!(id.as_str().len(), 32);
    assert!(id.as_str().starts_with("abcd1234"));
    assert_eq!(id.instance(), Some("abcd1234"));
    assert_eq!(ConnId::parse("short").expect("id").instance(), None);
}

#[test]
fn an_action_on_a_connection_goes_to_the_instance_its_id_names() {
    let theirs = ConnId::random_in("bbbbbbbb");
    let mine = ConnId::random_in(ME);
    let nowhere = |_: &ConnId| false;
    let actions = |c: &ConnId| {
        vec![
            Action::Send { to: c.clone(), msg: Message::text("x") },
            Action::Join { conn: c.clone(), room: "r".into() },
            Action::Leave { conn: c.clone(), room: "r".into() },
            Action::SetMeta { conn: c.clone(), key: "k".into(), value: None },
            Action::Close { conn: c.clone(), code: 1000, reason: String::new(), cause: CloseCause::Api },
        ]
    };
    for a in actions(&theirs) {
        assert_eq!(route(&a, ME, nowhere, nowhere), Route::To(theirs.clone()), "{a:?}");
        // A connection this instance holds stays here, whatever its id says.
        assert_eq!(route(&a, ME, |c| *c == theirs, nowhere), Route::Here, "{a:?}");
    }
    for a in actions(&mine).into_iter().chain(actions(&id("not-a-cluster-id"))) {
        assert_eq!(route(&a, ME, nowhere, nowhere), Route::Here, "{a:?}");
    }
    // A session this instance created that moved to another one: through
    // Redis, to whoever holds it now; back here, here again.
    for a in actions(&mine) {
        assert_eq!(route(&a, ME, nowhere, |c| *c == mine), Route::To(mine.clone()), "{a:?}");
        assert_eq!(route(&a, ME, |c| *c == mine, |c| *c == mine), Route::Here, "{a:?}");
    }
}

#[test]
fn room_messages_and_broadcasts_go_everywhere() {
    let room = Action::Room { room: "r".into(), msg: Message::text("x"), except: None };
    let all = Action::Broadcast { endpoint: None, msg: Message::text("x") };
    assert_eq!(route(&room, ME, |_| true, |_| false), Route::Everywhere);
    assert_eq!(route(&all, ME, |_| true, |_| false), Route::Everywhere);
    assert_eq!(Audience::of(&Action::Join { conn: id("c"), room: "r".into() }), None);
}

#[test]
fn a_room_message_counts_the_other_instances_members() {
    let others = [
        view("b1", "/chat.sh", &["lobby"]),
        view("b2", "/chat.sh", &["lobby", "vip"]),
        view("b3", "/other.sh", &["vip"]),
    ];
    let room = |r: &str, except: Option<&str>| Audience::Room { room: r.into(), except: except.map(id) };
    assert_eq!(reached(Applied::Reached(1), &room("lobby", None), &others), Applied::Reached(3));
    assert_eq!(reached(Applied::Reached(0), &room("lobby", Some("b2")), &others), Applied::Reached(1));
    assert_eq!(reached(Applied::Reached(2), &room("empty", None), &others), Applied::Reached(2));
    let endpoint = |e: Option<&str>| Audience::Endpoint(e.map(str::to_owned));
    assert_eq!(reached(Applied::Reached(1), &endpoint(None), &others), Applied::Reached(4));
    assert_eq!(reached(Applied::Reached(0), &endpoint(Some("/chat.sh")), &others), Applied::Reached(2));
    assert_eq!(reached(Applied::Refused, &endpoint(None), &others), Applied::Refused);
}
