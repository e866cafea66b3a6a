//! Classic CGI over HTTP and static files, through the real binary with a
//! plain HTTP client.

mod common;
use std::io::Read;
use std::path::Path;

use common::*;
use ws2http_test_suite::suite;

fn http_cgi() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/http-cgi")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into()
}

struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Got {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut res = agent().run(b.body(body.to_vec()).unwrap()).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers = res.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
    let mut body = Vec::new();
    res.body_mut().as_reader().read_to_end(&mut body).unwrap();
    Got { status: res.status().as_u16(), headers, body }
}

fn http(s: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", s.port)
}

#[test]
fn request_environment_body_status_and_headers() {
    let s = Server::start_in(&http_cgi(), &[]);
    let r = request("POST", &http(&s, "/info.sh/extra?a=1&b=2"), &[("Content-Type", "text/x-demo")], b"hello body");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("set-cookie"), Some("a=1"));
    let customs: Vec<_> = r.headers.iter().filter(|(n, _)| n == "x-custom").map(|(_, v)| v.as_str()).collect();
    assert_eq!(customs, ["one", "two"]);
    assert_eq!(
        r.text(),
        "method=POST\nquery=a=1&b=2\nlength=10\ntype=text/x-demo\npath_info=/extra\nws_event=unset\nbody=hello body"
    );
    let r = request("DELETE", &http(&s, "/info.sh"), &[], b"");
    assert!(r.text().starts_with("method=DELETE\n"), "{}", r.text());
    // HEAD gets the headers only.
    let r = request("HEAD", &http(&s, "/info.sh"), &[], b"");
    assert_eq!((r.status, r.body.len()), (201, 0));
}

#[test]
fn redirects() {
    let s = Server::start_in(&http_cgi(), &[]);
    let r = request("GET", &http(&s, "/redirect.sh?abs"), &[], b"");
    assert_eq!((r.status, r.header("location")), (302, Some("http://example.org/elsewhere")));
    let r = request("GET", &http(&s, "/redirect.sh?other"), &[], b"");
    assert_eq!((r.status, r.header("location")), (303, Some("/info.sh")));
    // A local path without Status is served internally, as a GET.
    let r = request("POST", &http(&s, "/redirect.sh?local"), &[], b"ignored");
    assert_eq!(r.status, 201);
    assert!(r.text().contains("method=GET\nquery=from=redirect\n"), "{}", r.text());
    assert!(r.text().contains("path_info=/after\n"), "{}", r.text());
    let r = request("GET", &http(&s, "/redirect.sh?loop"), &[], b"");
    assert_eq!(r.status, 500);
    s.wait_log("more than 5 local redirects");
}

#[test]
fn bad_output_crash_and_timeout() {
    let s = Server::start_in(&http_cgi(), &["--timeout", "1"]);
    assert_eq!(request("GET", &http(&s, "/noheaders.sh"), &[], b"").status, 500);
    s.wait_log("\"just text, no headers\" is not a header line");
    assert_eq!(request("GET", &http(&s, "/silent.sh"), &[], b"").status, 500);
    s.wait_log("the script printed nothing");
    assert_eq!(request("GET", &http(&s, "/slow.sh"), &[], b"").status, 504);
    assert_eq!(request("GET", &http(&s, "/../etc/passwd"), &[], b"").status, 404);
    assert_eq!(request("GET", &http(&s, "/nope.sh"), &[], b"").status, 404);
    // The server is still fine.
    assert_eq!(request("GET", &http(&s, "/info.sh"), &[], b"").status, 201);
}

#[test]
fn large_responses_stream() {
    let s = Server::start_in(&http_cgi(), &[]);
    let mut res = agent().get(http(&s, "/stream.sh")).call().unwrap();
    let mut reader = res.body_mut().with_config().limit(10 << 20).reader();
    // The first megabyte arrives while the script still waits for the flag:
    // the response is not buffered until the script ends.
    let mut first = vec![0u8; 1 << 20];
    reader.read_exact(&mut first).unwrap();
    std::fs::write(s.dir.join("flag"), "").unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert_eq!(first.len() + rest.len(), 5 << 20);
}

#[suite("php")]
#[test]
fn php_sessions_and_the_same_url_for_websocket() {
    // A test that cannot run fails; it never passes unseen.
    require_suite("php");
    let s = Server::start_in(&http_cgi(), &[]);
    let r =
        request("POST", &http(&s, "/session.php"), &[("Content-Type", "application/x-www-form-urlencoded")], b"x=42");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "count=1 method=POST post=42\n");
    let cookie = r.header("set-cookie").expect("a session cookie").split(';').next().unwrap().to_owned();
    let r = request("GET", &http(&s, "/session.php"), &[("Cookie", &cookie)], b"");
    assert_eq!(r.text(), "count=2 method=GET post=\n");
    // The same URL upgraded to a WebSocket sees the same session.
    async_std::task::block_on(async {
        let both = format!("{cookie}; nick=zed");
        let (mut ws, _) = connect_with(&s.url("/session.php"), &[("Cookie", both.as_str())]).await.unwrap();
        ws.send(async_tungstenite::tungstenite::Message::text("hi")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "ws count=2 nick=zed");
    });
}

#[test]
fn static_files() {
    let root = scratch();
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(root.join("sub/style.css"), "body { color: red; }\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(root.join("sub/big.bin"), &big).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("sub/out-link")).unwrap();
    let s = Server::start_in(&http_cgi(), &["--root", root.to_str().unwrap()]);

    let r = request("GET", &http(&s, "/"), &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = request("GET", &http(&s, "/sub/style.css"), &[], b"");
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    let etag = r.header("etag").unwrap().to_owned();
    let modified = r.header("last-modified").unwrap().to_owned();
    assert_eq!(request("GET", &http(&s, "/sub/style.css"), &[("If-None-Match", &etag)], b"").status, 304);
    assert_eq!(request("GET", &http(&s, "/sub/style.css"), &[("If-Modified-Since", &modified)], b"").status, 304);
    assert_eq!(request("GET", &http(&s, "/sub/style.css"), &[("If-None-Match", "\"other\"")], b"").status, 200);
    let r = request("HEAD", &http(&s, "/sub/big.bin"), &[], b"");
    assert_eq!((r.status, r.header("content-length"), r.body.len()), (200, Some("3000000"), 0));
    let r = request("GET", &http(&s, "/sub/big.bin"), &[("Range", "bytes=1000000-1000099")], b"");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 1000000-1000099/3000000"));
    assert_eq!(r.body, big[1_000_000..1_000_100]);
    let r = request("GET", &http(&s, "/sub/big.bin"), &[("Range", "bytes=-10")], b"");
    assert_eq!(r.body, big[big.len() - 10..]);
    let r = request("GET", &http(&s, "/sub/big.bin"), &[("Range", "bytes=5000000-")], b"");
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */3000000")));
    assert_eq!(request("GET", &http(&s, "/sub/big.bin"), &[], b"").body, big);
    let r = request("GET", &http(&s, "/sub"), &[], b"");
    assert_eq!((r.status, r.header("location")), (301, Some("/sub/")));
    for bad in ["/sub/out-link", "/sub/../../etc/passwd", "/%2e%2e/etc/passwd", "/sub%2fstyle.css", "/missing.txt"] {
        assert_eq!(request("GET", &http(&s, bad), &[], b"").status, 404, "{bad}");
    }
    assert_eq!(request("POST", &http(&s, "/index.html"), &[], b"").status, 405);
    // Scripts still win over static files.
    assert_eq!(request("GET", &http(&s, "/info.sh"), &[], b"").status, 201);
}

#[test]
fn ambiguous_header_blocks_are_refused_and_every_page_has_a_line_with_its_status() {
    let s = Server::start_in(&http_cgi(), &[]);
    // Before: sent with the last length, chunked, both types, the last status.
    for (query, logged) in [
        ("length", "two Content-Length headers"),
        ("notnumber", "Content-Length \"abc\" is not a decimal number"),
        ("type", "two Content-Type headers"),
        ("status", "two Status headers"),
    ] {
        let r = request("GET", &http(&s, &format!("/ambiguous.sh?{query}")), &[], b"");
        assert_eq!(r.status, 500, "{query}: {}", r.text());
        s.wait_log(logged);
        let log = s.log();
        let line = log.lines().find(|l| l.contains(logged)).unwrap();
        assert!(line.contains("GET /ambiguous.sh 127.0.0.1: ") && line.contains("; answering 500"), "{line}");
    }
    assert_eq!(request("GET", &http(&s, "/ambiguous.sh"), &[], b"").text(), "fine");
    // Before: the line said "100, ok", and a second one said 502.
    assert_eq!(request("GET", &http(&s, "/ambiguous.sh?continue"), &[], b"").status, 502);
    s.wait_log("GET /ambiguous.sh 127.0.0.1: the script's status 100, which is not final; answering 502");
    assert!(!s.log().contains("100, ok"), "{}", s.log());
    // Before: the last line of a redirect loop did not say 500.
    assert_eq!(request("GET", &http(&s, "/redirect.sh?loop"), &[], b"").status, 500);
    s.wait_log("more than 5 local redirects; answering 500");
}
