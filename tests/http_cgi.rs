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

/// Sends `GET path` on a new connection, and returns it once the status
/// line has arrived.
fn get_page(port: u16, path: &str) -> HttpConn {
    let mut c = HttpConn::open(port);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    while !c.buf.windows(2).any(|w| w == b"\r\n") {
        assert!(c.fill(), "no answer to GET {path}");
    }
    c
}

/// Reads until the server closes the connection, or until a chunked body's
/// terminating `0\r\n\r\n` (the response then claimed to be complete:
/// returned at once, the connection may be kept). Panics when more than
/// `max_lines` body lines arrive (the page was not bounded) or the server
/// keeps the connection open without a word.
fn read_until_close(mut c: HttpConn, max_lines: usize) -> String {
    loop {
        let text = String::from_utf8_lossy(&c.buf).into_owned();
        assert!(text.matches('\n').count() < max_lines + 20, "not bounded by --timeout: {text}");
        if text.ends_with("\r\n0\r\n\r\n") {
            return text;
        }
        let mut chunk = [0u8; 8192];
        match c.s.read(&mut chunk) {
            Ok(0) => return text,
            Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("the server neither ended the response nor closed ({e}): {text}"),
        }
    }
}

/// The body of a chunked response cut at --timeout: the chunks, without
/// the terminating chunk (RFC 9112 §7.1: a client must see it is incomplete).
fn assert_cut(response: &str, first_line: &str) {
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("transfer-encoding: chunked\r\n"), "{response}");
    assert!(response.contains(first_line), "the output before the deadline streams: {response}");
    assert!(!response.ends_with("\r\n0\r\n\r\n"), "a cut body ended as if complete: {response}");
    assert!(response.ends_with("\r\n"), "ends after a whole chunk: {response}");
}

#[test]
fn a_page_stopped_at_the_timeout_ends_cut_and_closes_the_connection() {
    let s = Server::start_in(&http_cgi(), &["--timeout", "2"]);
    // Before: the body ended with 0\r\n\r\n and the connection stayed open.
    let response = read_until_close(get_page(s.port, "/endless.sh"), 40);
    assert_cut(&response, "line1\n");
    s.wait_log("GET /endless.sh 127.0.0.1: 200, script failed: timed out after 2s");
    // The server is still fine.
    assert_eq!(request("GET", &http(&s, "/info.sh"), &[], b"").status, 201);
}

/// php-fpm on a loopback port, stopped (with its workers) on drop.
struct PhpFpm {
    child: std::process::Child,
    port: u16,
}

impl PhpFpm {
    fn start(dir: &Path) -> PhpFpm {
        let program = find_program("php-fpm*").expect("php-fpm (suite backends)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.join("php-fpm.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = no\n\
                 [www]\nlisten = 127.0.0.1:{port}\npm = static\npm.max_children = 4\n"
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(program);
        cmd.arg("-F").arg("-y").arg(&conf);
        if std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0) {
            cmd.arg("-R");
        }
        let child = cmd.stderr(std::fs::File::create(dir.join("php-fpm.out")).unwrap()).spawn().expect("php-fpm");
        wait_for("php-fpm to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        PhpFpm { child, port }
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[suite("backends")]
#[test]
fn a_php_fpm_page_is_bounded_by_the_timeout_and_holds_its_slot_until_it_ends() {
    require_suite("backends");
    let dir = scratch();
    let app = dir.join("app");
    std::fs::create_dir(&app).unwrap();
    // Each line says when PHP wrote it; so does the other page.
    std::fs::write(
        app.join("endless.php"),
        "<?php header('Content-Type: text/plain');\nwhile (ob_get_level()) ob_end_flush();\n\
         for ($i = 1; ; $i++) { echo \"line$i \", microtime(true), \"\\n\"; flush(); usleep(500000); }\n",
    )
    .unwrap();
    std::fs::write(app.join("now.php"), "<?php echo 'now ', microtime(true), \"\\n\";\n").unwrap();
    let fpm = PhpFpm::start(&dir);
    let fastcgi = format!("127.0.0.1:{}", fpm.port);
    let s = Server::start_in(&app, &["--fastcgi", &fastcgi, "--timeout", "2", "--max-procs", "1"]);
    // The first page holds the one slot; the second is asked for once the
    // first has answered, and must wait for the first's end.
    let first = get_page(s.port, "/endless.php");
    let first = std::thread::spawn(move || read_until_close(first, 40));
    let second = std::thread::spawn({
        let port = s.port;
        move || raw_http(port, "GET /now.php HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    });
    // Before: the page streamed until the client gave up, and its line was
    // written at once ("200, ok in 2ms").
    let response = first.join().unwrap();
    assert_cut(&response, "line1 ");
    s.wait_log("GET /endless.php 127.0.0.1 (fastcgi");
    let log = s.log();
    let line = log.lines().find(|l| l.contains("GET /endless.php")).unwrap();
    assert!(line.contains("200, script failed: no complete answer within --timeout"), "{line}");
    // The second page ran after the first's last line: it waited for the slot.
    let second = second.join().unwrap();
    let time = |text: &str, word: &str| -> f64 {
        let at = text.rfind(word).unwrap_or_else(|| panic!("no {word:?} in {text}")) + word.len();
        let rest = &text[at..];
        rest[rest.find(' ').unwrap() + 1..].split_whitespace().next().unwrap().parse().unwrap()
    };
    let (last, now) = (time(&response, "line"), time(&second, "now"));
    assert!(now > last, "the second page ran at {now} while the first still streamed ({last}): {second}");
}
