//! ws2http started as `websocketd` against the real websocketd 0.4.1
//! (Debian package), both started with the same arguments in the same
//! test: a client asks both the same question and must observe the same
//! answer, except for the differences README.md "Coming from websocketd" documents
//! (each asserted here as a difference, so neither side can drift).
//!
//! These cases do not depend on how long a process lives; the lifetime
//! cases (streaming, stdin, exit, signals, --maxforks, COMMAND ARGS) are in
//! tests/websocketd_lifetime.rs.

mod common;
mod rawws;
mod wsd;

use std::collections::BTreeMap;

use common::*;
use ws2http_test_suite::suite;
use wsd::*;

/// An env dump (`env | sort`, then END) as a map.
fn env_of(lines: &[String]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter(|l| *l != "END")
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Takes `name` out of `env`, checking its value with `check`.
fn take(env: &mut BTreeMap<String, String>, name: &str, check: impl Fn(&str) -> bool) {
    let v = env.remove(name).unwrap_or_else(|| panic!("{name} missing: {env:?}"));
    assert!(check(&v), "{name}={v}");
}

const ENV_DUMP: &str = "env | sort\necho END";

#[suite("bench")]
#[test]
fn the_environment_is_websocketds_with_its_bugs_fixed() {
    let dir = scripts(&[("env.sh", ENV_DUMP), ("sub/e.sh", ENV_DUMP)]);
    let pair = start_env(&dir, &["--dir=."], &[("LD_LIBRARY_PATH", "/opt/lib"), ("SECRET_X", "no")]);
    for path in ["/env.sh/extra/x?q=1&r=%20", "/sub/e.sh"] {
        let [real, ours] = messages(&pair, path, "END");
        let (mut real, mut ours) = (env_of(&real), env_of(&ours));
        // Known, documented differences.
        real.remove("SERVER_SOFTWARE");
        take(&mut ours, "SERVER_SOFTWARE", |v| v.starts_with("ws2http/") && v.contains("websocketd"));
        for env in [&mut real, &mut ours] {
            for name in ["UNIQUE_ID", "REMOTE_PORT", "SERVER_PORT"] {
                take(env, name, |v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric()));
            }
        }
        // websocketd's bugs, fixed: HTTP_HOST set, PATH_TRANSLATED a file path.
        take(&mut ours, "HTTP_HOST", |v| v == format!("127.0.0.1:{}", pair.ours.port));
        let url_path = path.split('?').next().unwrap_or_default();
        take(&mut real, "PATH_TRANSLATED", |v| v == url_path);
        let info = ours["PATH_INFO"].clone();
        let want = if info.is_empty() { String::new() } else { format!("{}{info}", dir.display()) };
        take(&mut ours, "PATH_TRANSLATED", |v| v == want);
        // ws2http's additions.
        take(&mut ours, "WS_CONNECTION_ID", |v| v.len() == 32);
        take(&mut ours, "WS_API_URL", |v| v.starts_with("http://127.0.0.1:"));
        take(&mut ours, "WS_API_TOKEN", str::is_empty);
        // The working directory (PWD, set by sh) is websocketd's own for a
        // script in a subdirectory too (not the script's directory).
        assert_eq!(ours.get("PWD"), Some(&dir.display().to_string()), "{path}");
        assert_eq!(ours, real, "{path}");
        assert_eq!(real["GATEWAY_INTERFACE"], "websocketd-CGI/0.1");
        assert_eq!(real["LD_LIBRARY_PATH"], "/opt/lib", "the default --passenv");
        assert!(!real.contains_key("SECRET_X"));
    }
}

#[suite("bench")]
#[test]
fn passenv_passes_only_what_it_lists() {
    let dir = scripts(&[("env.sh", ENV_DUMP)]);
    for list in ["PATH,FOO", "FOO"] {
        let pair = start_env(&dir, &["--dir=.", &format!("--passenv={list}")], &[("FOO", " bar\nbaz "), ("BAR", "x")]);
        let [real, ours] = messages(&pair, "/env.sh", "END").map(|m| env_of(&m));
        for env in [&real, &ours] {
            assert_eq!(env.get("FOO").map(String::as_str), Some("bar baz"), "{list}");
            assert_eq!(env.contains_key("PATH"), list.contains("PATH"), "{list}");
            assert!(!env.contains_key("BAR"));
        }
    }
}

#[suite("bench")]
#[test]
fn dir_maps_urls_to_the_same_scripts_and_the_same_404s() {
    let show = "echo \"$SCRIPT_NAME|$PATH_INFO|$QUERY_STRING|$REQUEST_URI\"\necho END";
    let dir = scripts(&[("a.sh", show), ("sub/b.sh", show), ("plain.txt", "noexec:text")]);
    let pair = start(&dir, &["--dir=."]);
    for path in ["/a.sh", "/a.sh/x/y?q=1", "/sub/b.sh", "/sub/b.sh/z/", "/a.sh?x=%41"] {
        let [real, ours] = messages(&pair, path, "END");
        assert_eq!(ours, real, "{path}");
    }
    for path in ["/missing.sh", "/sub", "/", "/sub/missing/b.sh"] {
        let [real, ours] = pair.both().map(|s| exchange(s.port, &upgrade(path, "")).0.status);
        assert_eq!((real, ours), (404, 404), "{path}");
    }
    // A plain GET never runs a --dir script (no --cgidir): 404 on both.
    for path in ["/a.sh", "/sub/b.sh"] {
        let [real, ours] = pair.both().map(|s| exchange(s.port, &get_request(path)).0.status);
        assert_eq!((real, ours), (404, 404), "GET {path}");
    }
}

/// Only `--staticdir` (and `--cgidir`, even the same directory): no
/// WebSocket endpoint, the files and CGI scripts served by both.
#[suite("bench")]
#[test]
fn staticdir_or_cgidir_alone_needs_no_dir() {
    let cgi = "printf 'Content-Type: text/plain\\r\\n\\r\\n'\necho cgi";
    let dir = scripts(&[("index.html", "noexec:<h1>hi</h1>\n"), ("page.sh", cgi)]);
    for args in [&["--staticdir=."][..], &["--cgidir=.", "--staticdir=."]] {
        let pair = start(&dir, args);
        for side in pair.both() {
            let (a, _) = exchange(side.port, &get_request("/"));
            assert_eq!((a.status, a.body.as_slice()), (200, &b"<h1>hi</h1>\n"[..]), "{} {args:?}", side.name);
        }
        let cgi = args.len() == 2;
        let [real, ours] = pair.both().map(|s| exchange(s.port, &get_request("/page.sh")).0);
        assert_eq!(real.body == b"cgi\n", cgi, "{args:?}");
        assert_eq!((ours.status, ours.body == b"cgi\n"), (200, cgi), "{args:?}");
        assert!(!pair.ours.log().contains("nonexistent"), "{}", pair.ours.log());
    }
}

/// The COMMAND's PATH_TRANSLATED is PATH_INFO translated against its
/// directory (a documented fix: websocketd gives the URL path); so is the
/// single script's in ws2http's own per-event mode.
#[suite("bench")]
#[test]
fn path_translated_of_the_command_is_a_file_path() {
    let dir = scripts(&[("env.sh", ENV_DUMP)]);
    let pair = start(&dir, &["./env.sh"]);
    let [real, ours] = messages(&pair, "/a/b", "END").map(|m| env_of(&m));
    assert_eq!(real["PATH_TRANSLATED"], "/a/b");
    assert_eq!(ours["PATH_TRANSLATED"], format!("{}/a/b", dir.display()));
    let script = dir.join("env.sh");
    let s = Server::start_env(std::path::Path::new("/nonexistent"), &[script.to_str().unwrap()], &[]);
    let (answer, stream) = exchange(s.port, &upgrade("/a/b", ""));
    let env = env_of(&texts(&mut stream.unwrap_or_else(|| panic!("{answer:?}")), "END").0);
    assert_eq!(env["PATH_TRANSLATED"], format!("{}/a/b", dir.display()), "ws2http per event");
}

/// websocketd runs a script by its `#!` line whatever its name: a `.php`
/// file is not handed to php-cgi (ws2http's default handler elsewhere).
#[suite("bench")]
#[test]
fn a_php_named_script_runs_itself() {
    let greet = "echo \"hello from $SCRIPT_NAME\"\necho END";
    let cgi = "printf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"cgi $SCRIPT_NAME\"";
    let dir = scripts(&[("greet.php", greet), ("cgi/page.php", cgi)]);
    let pair = start(&dir, &["./greet.php"]);
    let [real, ours] = messages(&pair, "/", "END");
    assert_eq!((real.as_slice(), &ours), (&["hello from /".to_owned(), "END".into()][..], &real), "COMMAND");
    let pair = start(&dir, &["--dir=.", "--cgidir=./cgi"]);
    let [real, ours] = messages(&pair, "/greet.php", "END");
    assert_eq!((real[0].as_str(), &ours), ("hello from /greet.php", &real), "--dir");
    let [real, ours] = pair.both().map(|s| exchange(s.port, &get_request("/page.php")).0);
    assert_eq!((real.status, ours.status), (200, 200), "--cgidir");
    // websocketd's CGI swaps SCRIPT_NAME and PATH_INFO (a documented fix).
    assert_eq!(String::from_utf8_lossy(&real.body), "cgi /\n");
    assert_eq!(String::from_utf8_lossy(&ours.body), "cgi /page.php\n");
}

#[suite("bench")]
#[test]
fn staticdir_serves_the_same_files() {
    let root = scratch().join("public");
    std::fs::create_dir_all(root.join("css")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>hi</h1>\n").unwrap();
    std::fs::write(root.join("css/site.css"), "body{}\n").unwrap();
    let dir = scripts(&[("env.sh", ENV_DUMP)]);
    let pair = start(&dir, &["--staticdir", root.to_str().unwrap(), "./env.sh"]);
    for (path, status, body) in [("/", 200, "<h1>hi</h1>\n"), ("/css/site.css", 200, "body{}\n")] {
        for side in pair.both() {
            let (a, _) = exchange(side.port, &get_request(path));
            assert_eq!((a.status, String::from_utf8_lossy(&a.body).as_ref()), (status, body), "{} {path}", side.name);
        }
    }
    for side in pair.both() {
        assert_eq!(exchange(side.port, &get_request("/missing.txt")).0.status, 404, "{}", side.name);
    }
    // The COMMAND still answers upgrades on every path.
    let [real, ours] = messages(&pair, "/any/path", "END").map(|m| env_of(&m));
    assert_eq!((real["PATH_INFO"].as_str(), real["SCRIPT_NAME"].as_str()), ("/any/path", "/"));
    assert_eq!((ours["PATH_INFO"].as_str(), ours["SCRIPT_NAME"].as_str()), ("/any/path", "/"));
    // Documented difference: the tutorial's `--staticdir=. ./count.sh`
    // makes websocketd serve the script's source; ws2http never serves a
    // script as a file.
    let pair = start(&dir, &["--staticdir=.", "./env.sh"]);
    let [real, ours] = pair.both().map(|s| exchange(s.port, &get_request("/env.sh")).0);
    assert_eq!((real.status, String::from_utf8_lossy(&real.body).contains("env | sort")), (200, true));
    assert_eq!(ours.status, 404);
}

/// The sources websocketd serves from `--staticdir` and ws2http never does
/// (a documented difference): a `--cgidir` script, and a script the
/// COMMAND's arguments name (`sh ./count.sh`, `python3 c.py`); other files
/// beside them are served by both.
#[suite("bench")]
#[test]
fn staticdir_never_serves_cgidir_scripts_or_the_commands_script() {
    let cgi = "printf 'Content-Type: text/plain\\r\\n\\r\\n'\necho SECRET-SOURCE";
    let dir =
        scripts(&[("cgi/page.sh", cgi), ("count.sh", "echo SECRET-SOURCE"), ("index.html", "noexec:<h1>hi</h1>\n")]);
    std::fs::write(dir.join("c.py"), "# SECRET-SOURCE\nprint('hi', flush=True)\n").expect("c.py");
    let cgidir = &["--staticdir=.", "--cgidir=./cgi", "sh", "./count.sh"][..];
    let python = &["--staticdir=.", "python3", "c.py"][..];
    // What ws2http answers (websocketd: 200 and the source for all).
    let cases = [(cgidir, [("/cgi/page.sh", 404), ("/count.sh", 404), ("/c.py", 200)]), (python, [("/c.py", 404); 3])];
    for (args, paths) in cases {
        let pair = start(&dir, args);
        for side in pair.both() {
            let (a, _) = exchange(side.port, &get_request("/"));
            assert_eq!((a.status, a.body.as_slice()), (200, &b"<h1>hi</h1>\n"[..]), "{} {args:?}", side.name);
        }
        for (path, want) in paths {
            let [real, ours] = pair.both().map(|s| exchange(s.port, &get_request(path)).0);
            let leaked = |a: &Answer| String::from_utf8_lossy(&a.body).contains("SECRET-SOURCE");
            assert_eq!((real.status, leaked(&real)), (200, true), "websocketd serves {path} ({args:?})");
            assert_eq!((ours.status, leaked(&ours)), (want, want == 200), "ws2http {path} ({args:?})");
        }
    }
}

#[suite("bench")]
#[test]
fn cgidir_runs_the_same_cgi_scripts() {
    let cgi = scripts(&[("hello.sh", "printf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"hello $QUERY_STRING\"")]);
    let pair = start(&cgi, &["--cgidir=."]);
    for side in pair.both() {
        let (a, _) = exchange(side.port, &get_request("/hello.sh?x=1"));
        assert_eq!((a.status, String::from_utf8_lossy(&a.body).as_ref()), (200, "hello x=1\n"), "{}", side.name);
        assert_eq!(exchange(side.port, &get_request("/nope.sh")).0.status, 404, "{}", side.name);
    }
    // Documented difference: without --dir or COMMAND there is no
    // WebSocket endpoint; websocketd then runs the CGI script for an
    // upgrade request as for a plain one, ws2http answers 404.
    let [real, ours] = pair.both().map(|s| exchange(s.port, &upgrade("/hello.sh", "")).0.status);
    assert_eq!((real, ours), (200, 404));
}

#[suite("bench")]
#[test]
fn devconsole_serves_a_console_page() {
    let dir = scripts(&[("env.sh", ENV_DUMP)]);
    let pair = start(&dir, &["--devconsole", "--dir=."]);
    for side in pair.both() {
        let (a, _) = exchange(side.port, &get_request("/"));
        assert_eq!(a.status, 200, "{}", side.name);
        assert!(a.header("content-type")[0].starts_with("text/html"), "{}: {a:?}", side.name);
    }
    // Documented difference: websocketd serves its console at every URL
    // (ws://host/foo is tested at http://host/foo); ws2http's console is
    // at / and lists the endpoints.
    assert_eq!(exchange(pair.real.port, &get_request("/env.sh")).0.status, 200);
    assert_eq!(exchange(pair.ours.port, &get_request("/env.sh")).0.status, 404);
    // Without --devconsole: no console on either.
    let pair = start(&dir, &["--dir=."]);
    for side in pair.both() {
        assert_eq!(exchange(side.port, &get_request("/")).0.status, 404, "{}", side.name);
    }
}

/// The status each side answers an upgrade of /env.sh with, with this
/// Origin header (`None`: none sent).
fn origin_statuses(pair: &Pair, origin: Option<&str>) -> [u16; 2] {
    pair.both().map(|side| {
        let line = origin.map(|o| format!("Origin: {}\r\n", o.replace("{port}", &side.port.to_string())));
        exchange(side.port, &upgrade("/env.sh", &line.unwrap_or_default())).0.status
    })
}

#[suite("bench")]
#[test]
fn origin_and_sameorigin_refuse_the_same_pages() {
    let dir = scripts(&[("env.sh", ENV_DUMP)]);
    let same = Some("http://127.0.0.1:{port}");
    let pair = start(&dir, &["--dir=.", "--sameorigin"]);
    assert_eq!(origin_statuses(&pair, same), [101, 101]);
    assert_eq!(origin_statuses(&pair, Some("http://evil.example")), [403, 403]);
    // websocketd's bug: the refusal's body is two bodies in one.
    let bodies = pair.both().map(|side| {
        let refused = exchange(side.port, &upgrade("/env.sh", "Origin: http://evil.example\r\n")).0;
        String::from_utf8_lossy(&refused.body).into_owned()
    });
    assert_eq!(bodies[0], "Forbidden\n500 Internal Error\n");
    assert!(!bodies[1].contains("500") && bodies[1].lines().count() == 1, "{:?}", bodies[1]);
    assert_eq!(origin_statuses(&pair, Some("http://127.0.0.1:1")), [403, 403], "another port");
    // Documented difference: a client sending no Origin is not a browser;
    // websocketd takes it for the origin `file:` and refuses it.
    assert_eq!(origin_statuses(&pair, None), [403, 101]);
    let pair = start(&dir, &["--dir=.", "--origin=good.example,127.0.0.1:1,https://tls.example"]);
    for (origin, want) in [
        ("http://good.example", 101),
        ("https://good.example:8443", 101),
        ("http://127.0.0.1:1", 101),
        ("http://127.0.0.1:2", 403),
        ("https://tls.example", 101),
        ("http://tls.example", 403),
        ("http://evil.example", 403),
        ("null", 403),
    ] {
        assert_eq!(origin_statuses(&pair, Some(origin)), [want, want], "{origin}");
    }
    // Documented differences: a client sending no Origin (not a browser)
    // passes ws2http's list; and without --origin/--sameorigin, ws2http
    // still refuses pages of other sites (websocketd accepts any).
    assert_eq!(origin_statuses(&pair, None), [403, 101]);
    let pair = start(&dir, &["--dir=."]);
    assert_eq!(origin_statuses(&pair, Some("http://evil.example")), [101, 403]);
    assert_eq!(origin_statuses(&pair, same), [101, 101]);
    let pair = start(&dir, &["--dir=.", "--origin=*"]);
    assert_eq!(origin_statuses(&pair, Some("http://evil.example"))[1], 101, "ws2http's --origin=*");
}

#[suite("bench")]
#[test]
fn header_flags_add_the_same_headers() {
    let dir = scripts(&[("env.sh", ENV_DUMP)]);
    let args = ["--dir=.", "--header=X-All: 1", "--header-ws", "x-ws: 2", "--header-http=X-Http:3"];
    let pair = start(&dir, &args);
    let ours_of = |a: &Answer| ["x-all", "x-ws", "x-http"].map(|h| a.header(h).join(","));
    for side in pair.both() {
        let (a, _) = exchange(side.port, &upgrade("/env.sh", ""));
        assert_eq!((a.status, ours_of(&a)), (101, ["1".into(), "2".into(), String::new()]), "{}", side.name);
    }
    // Documented difference: websocketd's help says --header goes on "each
    // answer", but 0.4.1 sends it on upgrades only; ws2http does what the
    // help says.
    let [real, ours] = pair.both().map(|s| ours_of(&exchange(s.port, &get_request("/missing")).0));
    assert_eq!(real, [String::new(), String::new(), "3".into()]);
    assert_eq!(ours, ["1".to_owned(), String::new(), "3".into()]);
    // A refused upgrade gets none of them on either (404 on both; 403 from
    // ws2http's origin check, which websocketd does not make here).
    let none = || [String::new(), String::new(), String::new()];
    let [real, ours] = pair.both().map(|s| exchange(s.port, &upgrade("/missing.sh", "")).0);
    assert_eq!([(real.status, ours_of(&real)), (ours.status, ours_of(&ours))], [(404, none()), (404, none())]);
    let (ours, _) = exchange(pair.ours.port, &upgrade("/env.sh", "Origin: http://evil.example\r\n"));
    assert_eq!((ours.status, ours_of(&ours)), (403, none()));
}

#[suite("bench")]
#[test]
fn refusals_and_unsupported_flags_are_one_line() {
    let ours = ours_as_websocketd();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&ours).args(args).output().expect("run");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (args, code, start) in [
        (&["--ssl", "--sslcert=c", "cat"][..], 1, "websocketd: error: --ssl needs both --sslcert and --sslkey"),
        (&["--redirport=81", "cat"], 1, "websocketd: error: --redirport: not supported"),
        (&["--port=1"], 1, "websocketd: error: give a COMMAND or --dir"),
        (&["--nope", "cat"], 2, "websocketd: error: flag provided but not defined: -nope"),
        (&["--port=abc", "cat"], 2, "websocketd: error: invalid value \"abc\" for flag -port: "),
        (&["--closems=-5", "cat"], 2, "websocketd: error: invalid value \"-5\" for flag -closems: "),
        (&["--binary=maybe", "cat"], 2, "websocketd: error: invalid value \"maybe\" for flag -binary: "),
        // Every response would fail on it (the HTTP layer writes ASCII only).
        (&["--header=X-A: café", "cat"], 1, "websocketd: error: --header \"X-A: café\": expected"),
        (&["no-such-program-x"], 1, "websocketd: error: COMMAND \"no-such-program-x\": not found in PATH"),
    ] {
        let (got, err) = run(args);
        assert_eq!(got, Some(code), "{args:?}: {err}");
        assert!(err.starts_with(start) && err.lines().count() == 1, "{args:?}: {err}");
    }
    let out = std::process::Command::new(&ours).arg("--version").output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("websocketd (ws2http "));
    // And ws2http itself points a websocketd user the right way.
    let out = ws2http().args(["--port=8080", "./count.sh"]).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.starts_with("ws2http: error: --port is a websocketd flag; in ws2http: --listen"), "{err}");
    assert!(err.contains("`websocketd`") && err.lines().count() == 1, "{err}");
}

/// README's "Coming from websocketd" commands, run as printed (the port
/// aside) by both servers, with the files they name.
#[suite("bench")]
#[test]
fn the_readme_commands_run_the_same_on_both() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let block = readme
        .split("<!-- tests/websocketd.rs runs every `websocketd` line of this block")
        .nth(1)
        .and_then(|rest| rest.split("```text\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README block of websocketd commands");
    let lines: Vec<&str> = block.lines().filter(|l| l.starts_with("websocketd ")).collect();
    assert_eq!(lines.len(), 3, "{block}");
    let dir = scripts(&[("count.sh", "for i in 1 2 3; do echo $i; done"), ("scripts/hello.sh", "echo hello")]);
    std::fs::create_dir_all(dir.join("public")).expect("public");
    std::fs::write(dir.join("public/index.html"), "<h1>hi</h1>\n").expect("index.html");
    let chat = "import sys\nprint(' '.join(sys.argv[1:]), flush=True)\nfor line in sys.stdin:\n    print(line.strip(), flush=True)\n";
    std::fs::write(dir.join("chat.py"), chat).expect("chat.py");
    for line in lines {
        let args: Vec<&str> = line.split_whitespace().skip(1).filter(|a| *a != "--port=8080").collect();
        let pair = start(&dir, &args);
        let (path, until, want): (&str, &str, &[&str]) = match args.last().copied() {
            Some("./count.sh") => ("/", "3", &["1", "2", "3"]),
            Some("--staticdir=./public") => ("/hello.sh", "hello", &["hello"]),
            _ => ("/", "--room lobby", &["--room lobby"]),
        };
        for got in messages(&pair, path, until) {
            assert_eq!(got, want, "{line}");
        }
        if line.contains("--staticdir") {
            for side in pair.both() {
                let (answer, _) = exchange(side.port, &get_request("/"));
                assert_eq!((answer.status, answer.body.as_slice()), (200, &b"<h1>hi</h1>\n"[..]), "{}", side.name);
            }
        }
    }
}

/// `--address` repeated: websocketd binds one listener per address, all on
/// `--port`, and so does ws2http; a script answers on each. The second
/// address is `[::1]`, or `127.0.0.2` (loopback on Linux too) on a machine
/// without IPv6 loopback, said on stderr.
#[suite("bench")]
#[test]
fn repeated_address_listens_on_each() {
    let dir = scripts(&[("hi.sh", "echo \"hi $SERVER_PORT\"")]);
    let (second, second_ip) = match std::net::TcpListener::bind("[::1]:0") {
        Ok(_) => ("[::1]", "::1"),
        Err(e) => {
            eprintln!("no IPv6 loopback ({e}): the second --address is 127.0.0.2");
            ("127.0.0.2", "127.0.0.2")
        }
    };
    // A port free on both addresses.
    let port = loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if std::net::TcpListener::bind((second_ip, p)).is_ok() {
            break p;
        }
    };
    for (name, program) in [("websocketd", real_websocketd()), ("ws2http", ours_as_websocketd())] {
        let child = std::process::Command::new(&program)
            .args([
                format!("--port={port}"),
                "--address=127.0.0.1".into(),
                format!("--address={second}"),
                "./hi.sh".into(),
            ])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start");
        let _stop = Stop(child);
        for (ip, host) in [("127.0.0.1", "127.0.0.1"), (second_ip, second)] {
            wait_for(&format!("{name} listening on {ip} port {port}"), || {
                std::net::TcpStream::connect((ip, port)).ok()
            });
            let request = upgrade("/", "").replace("Host: 127.0.0.1:", &format!("Host: {host}:"));
            let (answer, stream) = exchange_at(ip, port, &request);
            let mut s = stream.unwrap_or_else(|| panic!("{name} on {ip}: {answer:?}"));
            let want = format!("hi {port}");
            assert_eq!(texts(&mut s, &want).0, vec![want], "{name} on {ip}");
        }
    }
}

/// Stops a server when the test ends, passed or not.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
