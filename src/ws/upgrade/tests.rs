//! The handshake decision in-process: requests built in memory, a fake
//! transport for the open event, every answer up to (and including) the
//! `101`, with no socket.

use std::sync::Arc;

use tide::http::{Method, Url};

use super::*;
use crate::ws::fake::Scripted;

/// A handshake for `path` as a WebSocket client on loopback sends it, with
/// `changes` applied (`(name, None)` removes a header).
fn request(method: Method, path: &str, changes: &[(&str, Option<&str>)]) -> Request<()> {
    let mut req = tide::http::Request::new(method, Url::parse(&format!("http://127.0.0.1:9{path}")).expect("url"));
    req.set_peer_addr(Some("127.0.0.1:40000"));
    for (name, value) in [
        ("Host", "127.0.0.1:9"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        // RFC 6455 §1.3's example key.
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ] {
        req.insert_header(name, value);
    }
    for (name, value) in changes {
        match value {
            Some(v) => drop(req.insert_header(*name, *v)),
            None => drop(req.remove_header(*name)),
        }
    }
    req.into()
}

/// What the handshake decides, without starting the connection: the `101`
/// (and the open script's actions), or the refusal.
fn decide(ws: &WsState, req: &Request<()>) -> Result<Opening, Refused> {
    runtime::block_on(open(ws, check(req, ws)?))
}

/// Status, a header and the body of a refusal.
fn refusal(res: Refused, header: &str) -> (u16, Option<String>, String) {
    let value = res.header(header).map(|v| v.last().as_str().to_owned());
    let status = u16::from(res.status());
    let mut res = *res;
    let body = runtime::block_on(res.take_body().into_string()).expect("a text body");
    (status, value, body)
}

fn accepting() -> Arc<Scripted> {
    Scripted::new(|_| Ok(String::new()))
}

#[test]
fn only_a_websocket_request_is_an_upgrade() {
    assert!(is_upgrade(&request(Method::Get, "/mirror.sh", &[("Connection", Some("keep-alive, Upgrade"))])));
    assert!(!is_upgrade(&request(Method::Get, "/mirror.sh", &[("Upgrade", None)])));
    assert!(!is_upgrade(&request(Method::Get, "/mirror.sh", &[("Connection", Some("keep-alive"))])));
}

#[test]
fn a_request_that_is_not_a_version_13_get_with_a_key_is_refused() {
    let script = accepting();
    let ws = crate::ws::state::for_tests(&[], script.clone());
    let answer = |method, changes: &[(&str, Option<&str>)]| {
        let res = decide(&ws, &request(method, "/mirror.sh", changes)).err().expect("a refusal");
        refusal(res, "Sec-WebSocket-Version")
    };
    let (status, _, body) = answer(Method::Post, &[]);
    assert_eq!((status, body.as_str()), (405, "a WebSocket handshake must be a GET request\n"));
    for version in [None, Some("8"), Some("14")] {
        let (status, offered, _) = answer(Method::Get, &[("Sec-WebSocket-Version", version)]);
        assert_eq!((status, offered.as_deref()), (426, Some("13")), "version {version:?}");
    }
    let (status, _, body) = answer(Method::Get, &[("Sec-WebSocket-Key", None)]);
    assert_eq!((status, body.as_str()), (400, "missing Sec-WebSocket-Key header\n"));
    assert!(script.seen().is_empty(), "no script ran: {:?}", script.seen());
}

#[test]
fn a_cross_origin_handshake_is_refused_and_a_same_origin_one_is_not() {
    let script = accepting();
    let ws = crate::ws::state::for_tests(&[], script.clone());
    let foreign = request(Method::Get, "/mirror.sh", &[("Origin", Some("http://evil.example"))]);
    let (status, _, body) = refusal(decide(&ws, &foreign).err().expect("a refusal"), "");
    assert_eq!((status, body.as_str()), (403, "cross-origin WebSocket handshakes are not allowed here\n"));
    assert!(script.seen().is_empty());
    let own = request(Method::Get, "/mirror.sh", &[("Origin", Some("http://127.0.0.1:9"))]);
    assert!(decide(&ws, &own).is_ok(), "same origin");
    let ws = crate::ws::state::for_tests(&["--allow-origin", "http://evil.example"], accepting());
    assert!(decide(&ws, &foreign).is_ok(), "allowed with --allow-origin");
}

#[test]
fn a_handshake_over_the_connection_limit_gets_503_and_retry_after() {
    let ws = crate::ws::state::for_tests(&["--max-connections", "1"], accepting());
    let held = ws.conn_limits.reserve("127.0.0.1".parse().ok()).expect("the one slot");
    let res = decide(&ws, &request(Method::Get, "/mirror.sh", &[])).err().expect("a refusal");
    let (status, retry, body) = refusal(res, "Retry-After");
    assert_eq!((status, retry.as_deref(), body.as_str()), (503, Some("5"), "too many connections; try again later\n"));
    drop(held);
    let opening = decide(&ws, &request(Method::Get, "/mirror.sh", &[])).expect("a slot once it is free");
    assert!(ws.conn_limits.reserve("127.0.0.1".parse().ok()).is_err(), "the opening holds the slot");
    drop(opening);
    assert!(ws.conn_limits.reserve("127.0.0.1".parse().ok()).is_ok(), "and gives it back");
}

#[test]
fn a_path_without_an_endpoint_is_404() {
    let script = accepting();
    let ws = crate::ws::state::for_tests(&[], script.clone());
    let res = decide(&ws, &request(Method::Get, "/no-such-endpoint.sh", &[])).err().expect("a refusal");
    let (status, _, body) = refusal(res, "");
    assert_eq!((status, body.as_str()), (404, "no WebSocket endpoint here\n"));
    assert!(script.seen().is_empty());
}

#[test]
fn an_open_script_that_answers_401_is_the_answer() {
    let script = Scripted::new(|_| Ok("Status: 401 Unauthorized\nContent-Type: text/plain\n\nlog in first\n".into()));
    let ws = crate::ws::state::for_tests(&[], script.clone());
    let res = decide(&ws, &request(Method::Get, "/mirror.sh", &[])).err().expect("a rejection");
    let (status, content_type, body) = refusal(res, "Content-Type");
    assert_eq!((status, content_type.as_deref(), body.as_str()), (401, Some("text/plain"), "log in first\n"));
    assert_eq!(script.seen(), ["open"]);
}

#[test]
fn an_open_script_with_an_interim_status_is_502_not_that_status() {
    for interim in ["100 Continue", "101 Switching Protocols", "199"] {
        let answer = format!("Status: {interim}\nContent-Type: text/plain\n\nbody\n");
        let ws = crate::ws::state::for_tests(&[], Scripted::new(move |_| Ok(answer.clone())));
        let res = decide(&ws, &request(Method::Get, "/mirror.sh", &[])).err().expect("a refusal");
        let (status, _, body) = refusal(res, "");
        assert_eq!(
            (status, body.as_str()),
            (502, "the endpoint's open script answered with an interim (1xx) status\n"),
            "{interim}"
        );
    }
}

#[test]
fn an_open_script_that_fails_is_500() {
    let ws = crate::ws::state::for_tests(&[], Scripted::new(|_| Err("@join self lobby\n".into())));
    let res = decide(&ws, &request(Method::Get, "/mirror.sh", &[])).err().expect("a refusal");
    let (status, _, body) = refusal(res, "");
    assert_eq!((status, body.as_str()), (500, "the endpoint's open script failed; see the server log\n"));
}

#[test]
fn an_accepted_open_is_a_101_with_the_accept_key_and_the_scripts_actions() {
    let script =
        Scripted::new(|_| Ok("Sec-WebSocket-Protocol: chat\nSet-Cookie: s=1\n\n@join lobby\nwelcome\n".into()));
    let ws = crate::ws::state::for_tests(&[], script.clone());
    let req = request(Method::Get, "/mirror.sh", &[("Sec-WebSocket-Protocol", Some("chat, superchat"))]);
    let opening = decide(&ws, &req).expect("accepted");
    let header = |name: &str| opening.res.header(name).map(|v| v.last().as_str().to_owned());
    assert_eq!(u16::from(opening.res.status()), 101);
    // RFC 6455 §1.3: the accept value for the example key.
    assert_eq!(header("Sec-WebSocket-Accept").as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert_eq!(header("Upgrade").as_deref(), Some("websocket"));
    assert_eq!(header("Sec-WebSocket-Protocol").as_deref(), Some("chat"));
    assert_eq!(header("Set-Cookie").as_deref(), Some("s=1"));
    let id = &opening.conn.id;
    let expected = vec![
        Action::Join { conn: id.clone(), room: "lobby".into() },
        Action::Send { to: id.clone(), msg: crate::action::Message::text("welcome") },
    ];
    assert_eq!(opening.actions, expected);
    assert_eq!(script.seen(), ["open"]);
    assert!(!ws.hub.is_known(id), "the connection is registered only once the 101 goes out");
}

#[test]
fn a_subprotocol_the_client_did_not_offer_is_not_sent() {
    let script = Scripted::new(|_| Ok("Sec-WebSocket-Protocol: chat\n\nwelcome\n".into()));
    let ws = crate::ws::state::for_tests(&[], script.clone());
    for offer in [None, Some("x, y"), Some("chatty")] {
        let req = request(Method::Get, "/mirror.sh", &[("Sec-WebSocket-Protocol", offer)]);
        let opening = decide(&ws, &req).expect("accepted");
        assert_eq!(u16::from(opening.res.status()), 101, "offer {offer:?}");
        assert!(opening.res.header("Sec-WebSocket-Protocol").is_none(), "offer {offer:?}");
    }
    let req = request(Method::Get, "/mirror.sh", &[("Sec-WebSocket-Protocol", Some("x, chat"))]);
    let opening = decide(&ws, &req).expect("accepted");
    let chosen = opening.res.header("Sec-WebSocket-Protocol").map(|v| v.last().as_str().to_owned());
    assert_eq!(chosen.as_deref(), Some("chat"));
}

#[test]
fn ws2http_selects_its_own_subprotocol_over_the_scripts_when_the_client_asked() {
    let script = Scripted::new(|_| Ok("Sec-WebSocket-Protocol: chat\n\nwelcome\n".into()));
    let chosen = |grace: &str, offer: &str| {
        let ws = crate::ws::state::for_tests(&["--resume-grace", grace], script.clone());
        let req = request(Method::Get, "/mirror.sh", &[("Sec-WebSocket-Protocol", Some(offer))]);
        let opening = decide(&ws, &req).expect("accepted");
        opening.res.header("Sec-WebSocket-Protocol").map(|v| v.last().as_str().to_owned())
    };
    let (session, plain) = ("ws2http.session.v1, ws2http.plain, chat", "ws2http.plain");
    assert_eq!(chosen("30", session).as_deref(), Some("ws2http.session.v1"));
    // Sessions off: a browser would fail a 101 that selects none of its offer.
    assert_eq!(chosen("0", session).as_deref(), Some(plain));
    assert_eq!(chosen("30", "chat, ws2http.plain").as_deref(), Some(plain), "no session asked for");
    assert_eq!(chosen("0", "chat").as_deref(), Some("chat"), "not offered: the script's choice");
}

/// An idle connection's memory is mostly its one task, which is as large as
/// its largest await point: the stream it split, a frame being sent, the
/// close handshake or an event must not sit inline in it (2,232 bytes
/// before they were moved out or boxed; 1,264 until no future kept its
/// arguments twice, the start of the WebSocket was boxed and the writer
/// polled in place: docs/bench-notes/idle20.md; the bench's idle workload
/// measures the whole connection).
#[test]
fn the_connection_task_is_sized_for_an_idle_connection() {
    use crate::ws::limits::Metered;
    let app = crate::ws::state::for_tests(&[], accepting());
    let Ok(Opening { conn, transport, slot, .. }) = decide(&app, &request(Method::Get, "/mirror.sh", &[])) else {
        panic!("refused")
    };
    let (outgoing, shared) = app.hub.register(conn.clone());
    let (events_tx, events_rx) = connection::event_queue(&shared);
    let budget = app.queue_budget.conn(Box::new(|_| {}));
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    let socket = tide::http::upgrade::Connection::new(runtime::UnixStream::from(a));
    let metered = Metered::new(socket, budget.clone(), shared.clone(), std::time::Duration::from_secs(1));
    let ws = runtime::block_on(WebSocketStream::from_raw_socket(metered, Role::Server, None));
    let ws_size = std::mem::size_of_val(&ws);
    let (other, other_outgoing) = crate::hub::shared::ConnShared::new();
    // A queue's pushing end is not `Clone` (one per connection): another's, for the size.
    let (other_tx, _other_rx) = connection::event_queue(&other);
    let serve =
        connection::serve(ws, app.clone(), conn.clone(), other_outgoing, shared.clone(), other_tx, budget.clone());
    let serve_size = std::mem::size_of_val(&serve);
    drop(serve);
    assert!(serve_size < 2 * ws_size, "serve ({serve_size} bytes) keeps the stream ({ws_size} bytes) it split");
    let worker =
        connection::event_worker(app.clone(), conn.clone(), transport, events_rx, shared.clone(), budget.clone(), slot);
    let upgrade = runtime::block_on(tide::http::Response::new(101).recv_upgrade());
    let task = connection_task(Live { app, conn, outgoing, shared, events_tx, budget, socket: None }, upgrade, worker);
    let size = std::mem::size_of_val(&task);
    assert!(size <= 512, "the connection task grew to {size} bytes");
}
