//! The control API in-process: requests straight into the routes, a hub
//! with real connections behind them (no sockets, no scripts).

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use tide::http::{Method, Request, Response, Url};

use super::state::ApiState;
use crate::action::{caps, Action};
use crate::event::{ConnInfo, RequestInfo, Target};
use crate::hub::local::Hub;
use crate::hub::outgoing::OutgoingBudget;
use crate::hub::shared::ConnShared;
use crate::hub::Applied;
use crate::id::ConnId;
use crate::metrics;

/// The API's state as the default flags make it, around a local hub.
fn app() -> Arc<ApiState> {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgi-bin");
    let cli = crate::config::Cli::try_parse_from(["ws2http", "--cgi-bin", fixtures]).expect("flags");
    let cfg = cli.into_config().expect("config");
    let outgoing =
        OutgoingBudget::new(cfg.max_outgoing_bytes, cfg.max_outgoing_bytes_total, &metrics::get().outgoing_bytes);
    let hub = Arc::new(Hub::new(cfg.out_queue, outgoing));
    Arc::new(ApiState::new(&cfg, hub.clone(), hub, SocketAddr::from(([127, 0, 0, 1], 9))))
}

fn connect(app: &ApiState, id: &str) -> (crate::hub::shared::Outgoing, Arc<ConnShared>) {
    let target =
        Target { filename: "/c.sh".into(), script_name: "/c.sh".into(), path_info: String::new(), interpreter: None };
    let info = ConnInfo { id: ConnId::parse(id).expect("id"), target, request: RequestInfo::default() };
    app.hub.register(Arc::new(info))
}

/// `method path` with `body`, as a program on loopback sends it.
fn call(app: &Arc<ApiState>, method: Method, path: &str, body: &str) -> (u16, serde_json::Value) {
    call_with(app, method, path, &[], body)
}

/// [`call`] with more headers.
fn call_with(
    app: &Arc<ApiState>,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = Request::new(method, Url::parse(&format!("http://127.0.0.1:9{path}")).expect("url"));
    req.insert_header("Host", "127.0.0.1:9");
    for (name, value) in headers {
        req.insert_header(*name, *value);
    }
    req.set_body(body);
    let routes = super::routes(app.clone());
    crate::runtime::block_on(async move {
        let mut res: Response = routes.respond(req).await.expect("a response");
        let text = res.body_string().await.expect("a body");
        (u16::from(res.status()), serde_json::from_str(&text).expect("JSON"))
    })
}

#[test]
fn actions_refused_by_a_cap_are_not_counted_as_applied() {
    let app = app();
    let (rx, _shared) = connect(&app, "full");
    for i in 0..caps::ROOMS {
        let join = Action::Join { conn: ConnId::parse("full").expect("id"), room: format!("r{i}") };
        assert_eq!(app.delivery.apply(join), Applied::Reached(1));
    }
    let body = "@join full one-too-many\n@send full hi\n@room r0 all\n";
    assert_eq!(call(&app, Method::Post, "/actions", body), (200, serde_json::json!({"applied": 2, "delivered": 2})));
    assert_eq!(rx.len(), 2);
    let (status, rooms) = call(&app, Method::Get, "/rooms", "");
    assert_eq!((status, rooms.get("one-too-many")), (200, None));
}

#[test]
fn pushes_and_presence_go_through_the_delivery() {
    let app = app();
    let (rx_a, _a) = connect(&app, "a");
    let (_rx_b, _b) = connect(&app, "b");
    let body = "@join a lobby\n@join b lobby\n@set a nick al\n";
    assert_eq!(call(&app, Method::Post, "/actions", body), (200, serde_json::json!({"applied": 3, "delivered": 0})));
    assert_eq!(call(&app, Method::Post, "/rooms/lobby", "hi"), (200, serde_json::json!({"delivered": 2})));
    assert_eq!(call(&app, Method::Post, "/send/a", "you"), (200, serde_json::json!({"delivered": 1})));
    assert_eq!(call(&app, Method::Post, "/send/nobody", "x").0, 404);
    assert_eq!(rx_a.len(), 2);
    assert_eq!(call(&app, Method::Get, "/rooms", ""), (200, serde_json::json!({"lobby": 2})));
    let (status, a) = call(&app, Method::Get, "/connections/a", "");
    assert_eq!((status, &a["metadata"]), (200, &serde_json::json!({"nick": "al"})));
    assert_eq!(call(&app, Method::Delete, "/connections/a?code=4000", ""), (200, serde_json::json!({"closed": 1})));
}

#[test]
fn only_sec_fetch_site_none_exactly_passes_for_a_page() {
    let app = app();
    for site in ["None", "NONE", " none-ish", "cross-site"] {
        let (status, _) = call_with(&app, Method::Get, "/rooms", &[("Sec-Fetch-Site", site)], "");
        assert_eq!(status, 403, "Sec-Fetch-Site: {site}");
    }
    assert_eq!(call_with(&app, Method::Get, "/rooms", &[("Sec-Fetch-Site", "none")], "").0, 200);
}

#[test]
fn closing_through_the_api_takes_the_codes_and_reasons_at_close_does() {
    let app = app();
    let (_rx, _shared) = connect(&app, "a");
    for bad in ["code=1005", "code=999", "code=x", &format!("code=4000&reason={}", "r".repeat(124))] {
        let (status, body) = call(&app, Method::Delete, &format!("/connections/a?{bad}"), "");
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let ok = format!("/connections/a?code=4000&reason={}", "r".repeat(123));
    assert_eq!(call(&app, Method::Delete, &ok, ""), (200, serde_json::json!({"closed": 1})));
}
