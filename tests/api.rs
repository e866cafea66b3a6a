//! The control API: every route, its JSON, status codes and authentication.

mod common;
use async_tungstenite::tungstenite::Message;
use common::*;
use serde_json::json;

#[async_std::test]
async fn send_rooms_broadcast_and_actions() {
    let s = Server::start(&[]);
    let (mut a, ida) = mirror(&s, "/mirror.sh").await;
    let (mut b, idb) = mirror(&s, "/mirror.sh").await;
    let mut o = connect(&s.url("/order.sh")).await;

    let r = post(&s.api(&format!("/send/{ida}")), "pushed");
    assert_eq!((r.status, r.json()), (200, json!({"delivered": 1})));
    assert_eq!(next_text(&mut a).await, "pushed");

    let r = post(&s.api("/send/0123456789abcdef0123456789abcdef"), "x");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());

    let all: Vec<u8> = (0..=255u8).collect();
    let r = api("POST", &s.api(&format!("/send/{idb}")), None, Some("application/octet-stream"), &all);
    assert_eq!(r.status, 200);
    assert_eq!(next(&mut b).await, Message::binary(all));
    // Text that is not UTF-8 is refused.
    assert_eq!(api("POST", &s.api(&format!("/send/{idb}")), None, Some("text/plain"), b"\xff").status, 400);

    a.send(Message::text("@join news")).await.unwrap();
    b.send(Message::text("@join news")).await.unwrap();
    wait_for("two in news", || (get(&s.api("/rooms")).json() == json!({"news": 2})).then_some(()));
    let r = post(&s.api("/rooms/news"), "headline");
    assert_eq!(r.json(), json!({"delivered": 2}));
    assert_eq!(next_text(&mut a).await, "headline");
    assert_eq!(next_text(&mut b).await, "headline");
    assert_eq!(post(&s.api("/rooms/empty"), "x").json(), json!({"delivered": 0}));

    let r = post(&s.api("/broadcast?endpoint=/mirror.sh"), "mirror only");
    assert_eq!(r.json(), json!({"delivered": 2}));
    assert_eq!(next_text(&mut a).await, "mirror only");
    assert_eq!(next_text(&mut b).await, "mirror only");
    sentinel(&s.api(&format!("/send/{}", only_id(&s, "/order.sh"))), &mut o).await;
    assert_eq!(post(&s.api("/broadcast"), "all").json(), json!({"delivered": 3}));
    assert_eq!(next_text(&mut o).await, "all");

    let body = format!("@send {ida} one\n\n@room news two\n@broadcast three\n@join {idb} extra\n@set {idb} k v\n");
    let r = post(&s.api("/actions"), &body);
    assert_eq!((r.status, r.json()), (200, json!({"applied": 5, "delivered": 1 + 2 + 3})));
    assert_eq!(next_text(&mut a).await, "all");
    for expected in ["one", "two", "three"] {
        assert_eq!(next_text(&mut a).await, expected);
    }
    let v = get(&s.api(&format!("/connections/{idb}"))).json();
    assert_eq!(v["rooms"], json!(["extra", "news"]));
    assert_eq!(v["metadata"], json!({"k": "v"}));

    // One bad line: 400 and nothing applied.
    for bad in ["plain text", "@send", "@others news x", "@bogus", &format!("@send {ida} ok\nnope")] {
        let r = post(&s.api("/actions"), bad);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"].as_str().unwrap().contains("line"), "{}", r.body);
    }
    // The last bad body began with a valid @send to a: nothing was applied.
    sentinel(&s.api(&format!("/send/{ida}")), &mut a).await;
}

#[async_std::test]
async fn presence_json_shapes() {
    let s = Server::start(&[]);
    let (mut a, ida) = mirror(&s, "/mirror.sh/x?nick=1").await;
    let (_b, idb) = mirror(&s, "/mirror.sh").await;
    a.send(Message::text("@join r\n@set nick ann")).await.unwrap();
    wait_for("join", || (get(&s.api("/rooms")).json() == json!({"r": 1})).then_some(()));
    let list = get(&s.api("/connections")).json();
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], ida.as_str());
    assert_eq!(list[1]["id"], idb.as_str());
    let c = &list[0];
    assert_eq!(c["endpoint"], "/mirror.sh");
    assert!(c["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    let at = c["connected_at"].as_str().unwrap();
    assert!(at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
    assert_eq!(c["rooms"], json!(["r"]));
    assert_eq!(c["metadata"], json!({"nick": "ann"}));
    let only = conn_ids(&s.api("/connections?room=r"));
    assert_eq!(only, std::slice::from_ref(&ida));
    assert_eq!(get(&s.api("/connections?endpoint=/order.sh")).json(), json!([]));
    assert_eq!(get(&s.api("/connections?endpoint=/mirror.sh")).json().as_array().unwrap().len(), 2);
    assert_eq!(get(&s.api(&format!("/connections/{ida}"))).json(), list[0]);
    let r = get(&s.api("/connections/nope"));
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    let r = get(&s.api("/no/such/route"));
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
}

#[async_std::test]
async fn token_is_required_when_set() {
    let s = Server::start(&["--api-token", "s3cret"]);
    let (mut a, id) = mirror(&s, "/mirror.sh").await;
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let r = api("GET", &s.api("/connections"), token, None, b"");
        assert_eq!(r.status, 401, "{token:?}");
        assert!(r.json()["error"].is_string());
        let r = api("POST", &s.api(&format!("/send/{id}")), token, None, b"x");
        assert_eq!(r.status, 401);
    }
    let r = api("POST", &s.api(&format!("/send/{id}")), Some("s3cret"), None, b"authorised");
    assert_eq!(r.status, 200);
    assert_eq!(next_text(&mut a).await, "authorised");
    assert!(!s.log().contains("s3cret"), "the token must not be logged");
}

#[test]
fn refuses_public_api_without_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ws2http"))
        .args(["--listen", "127.0.0.1:0", "--api-listen", "0.0.0.0:0", "--cgi-bin"])
        .arg(fixtures())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-token") && err.lines().count() == 1, "{err}");
}

#[test]
fn clear_errors_for_bad_start_up() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ws2http")).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) =
        run(&["--cgi-bin", "/definitely/not/here", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    assert!(err.starts_with("ws2http: error: --cgi-bin /definitely/not/here"), "{err}");
    let (code, err) = run(&["--handler", "php", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("EXT=PROGRAM"), "{err}");
    let (code, err) = run(&["--bogus"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--bogus"), "{err}");
}

#[test]
fn flags_from_environment_variables() {
    let mut child = ws2http()
        .env("WS2HTTP_LISTEN", "127.0.0.1:0")
        .env("WS2HTTP_API_LISTEN", "127.0.0.1:0")
        .env("WS2HTTP_CGI_BIN", fixtures())
        .env("WS2HTTP_API_TOKEN", "envtoken")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_, port) = read_ports(&mut child);
    let url = format!("http://127.0.0.1:{port}/rooms");
    assert_eq!(api("GET", &url, None, None, b"").status, 401);
    assert_eq!(api("GET", &url, Some("envtoken"), None, b"").status, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[async_std::test]
async fn healthz_and_metrics() {
    let s = Server::start(&["--api-token", "tok"]);
    let (mut a, _) = mirror(&s, "/mirror.sh").await;
    a.send(Message::text("@join r\nhello")).await.unwrap();
    assert_eq!(next_text(&mut a).await, "hello");
    // /healthz needs no token; /metrics does.
    let r = api("GET", &s.api("/healthz"), None, None, b"");
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok", "connections": 1})));
    assert_eq!(api("GET", &s.api("/metrics"), None, None, b"").status, 401);
    let m = api("GET", &s.api("/metrics"), Some("tok"), None, b"");
    assert_eq!(m.status, 200);
    for needle in [
        "ws2http_connections 1\n",
        "ws2http_rooms 1\n",
        "ws2http_events_total{event=\"open\",outcome=\"ok\"} 1\n",
        "ws2http_events_total{event=\"message\",outcome=\"ok\"} 1\n",
        "ws2http_messages_in_total 1\n",
        "ws2http_connections_opened_total 1\n",
        "ws2http_script_duration_seconds_count 2\n",
    ] {
        assert!(m.body.contains(needle), "missing {needle:?} in:\n{}", m.body);
    }
    // messages out: the id line from open and "hello".
    assert!(m.body.contains("ws2http_messages_out_total 2\n"), "{}", m.body);
}

#[test]
fn settings_from_a_config_file_with_flags_winning() {
    let dir = scratch();
    let file = dir.join("ws2http.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\napi-listen = \"127.0.0.1:0\"\ncgi_bin = {:?}\napi_token = \"from-file\"\nmax-procs = 3\n",
            fixtures().to_str().unwrap()
        ),
    )
    .unwrap();
    let start = |extra: &[&str]| {
        let mut child = ws2http()
            .arg("--config")
            .arg(&file)
            .args(extra)
            .env_remove("WS2HTTP_API_TOKEN")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (_, port) = read_ports(&mut child);
        (child, format!("http://127.0.0.1:{port}/rooms"))
    };
    let (mut child, url) = start(&[]);
    assert_eq!(api("GET", &url, None, None, b"").status, 401);
    assert_eq!(api("GET", &url, Some("from-file"), None, b"").status, 200);
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, url) = start(&["--api-token", "from-flag"]);
    assert_eq!(api("GET", &url, Some("from-file"), None, b"").status, 401);
    assert_eq!(api("GET", &url, Some("from-flag"), None, b"").status, 200);
    let _ = child.kill();
    let _ = child.wait();
    // A typo is one clear line.
    std::fs::write(&file, "max_prcs = 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ws2http")).arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1, key max_prcs: unknown setting") && err.lines().count() == 1, "{err}");
}
