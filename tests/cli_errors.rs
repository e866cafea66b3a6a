//! The command line guides a newcomer: values that are almost right get one
//! line saying what was meant, a config file's mistakes name the file, line
//! and key, a setting given twice says which one won, and a setup that
//! cannot serve anything is reported at start-up. `--help` ends with
//! examples that work.

mod common;
use common::*;

use std::path::Path;
use std::process::{Output, Stdio};

/// Runs the binary to completion (it must refuse to start): (status, stderr).
fn refuse(args: &[&str]) -> (Option<i32>, String) {
    refuse_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

fn refuse_in(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out: Output = ws2http()
        .current_dir(dir)
        .args(args)
        .env_remove("WS2HTTP_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run ws2http");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

const FREE: [&str; 4] = ["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"];

#[test]
fn listen_values_point_the_way() {
    let cases = [
        (
            ["--listen", ":8080"],
            "ws2http: error: --listen :8080: which interface? write 127.0.0.1:8080 (this machine only) \
             or 0.0.0.0:8080 (every interface)\n",
        ),
        (
            ["--api-listen", ":8081"],
            // Not 0.0.0.0: start-up refuses a non-loopback API without a token.
            "ws2http: error: --api-listen :8081: which interface? write 127.0.0.1:8081 (this machine only; \
             a non-loopback control API also needs --api-token)\n",
        ),
        (
            ["--listen", "localhost"],
            "ws2http: error: --listen localhost: expected HOST:PORT, e.g. 127.0.0.1:8080 (this machine only) \
             or 0.0.0.0:8080 (every interface)\n",
        ),
        (["--listen", "70000"], "ws2http: error: --listen 70000: a port is a number from 0 to 65535\n"),
    ];
    for (args, expected) in cases {
        let (code, err) = refuse(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err, expected);
    }
}

#[test]
fn a_bare_port_listens_on_loopback() {
    let mut child = ws2http()
        .args(["--listen", "0", "--api-listen", "0", "--cgi-bin"])
        .arg(fixtures())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    // read_ports checks both lines start with http://127.0.0.1:
    let (port, api_port) = read_ports(&mut child);
    assert!(port > 0 && api_port > 0);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn paths_point_the_way() {
    let (code, err) = refuse(&["--cgi-bin", "cgi-bin/echo.sh"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "ws2http: error: --cgi-bin cgi-bin/echo.sh is a file, not a directory: to run this one script for every \
         path, give it as SCRIPT: ws2http cgi-bin/echo.sh\n"
    );
    let (code, err) = refuse(&["cgi-bin"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "ws2http: error: script cgi-bin is a directory: to serve the scripts in it, use --cgi-bin cgi-bin \
         (without SCRIPT)\n"
    );
}

#[test]
fn script_and_cgi_bin_together_script_wins_and_says_so() {
    let script = fixtures().join("sub/deep.sh");
    let s = Server::start(&[script.to_str().expect("utf-8 path")]);
    s.wait_log("both SCRIPT and --cgi-bin are given: SCRIPT wins and handles every path, --cgi-bin is ignored (leave out one of them)");
    s.wait_log("single-script mode: every path runs");
}

/// A config file in a scratch directory.
fn config(body: &str) -> String {
    let path = scratch().join("ws2http.toml");
    std::fs::write(&path, body).expect("write config");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn config_file_errors_name_the_file_line_and_key() {
    let file = config("# settings\nlisten = \"127.0.0.1:0\"\nmax-procs = \"many\"\n");
    let (code, err) = refuse(&["--config", &file]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        format!(
            "ws2http: error: {file} line 3, key max-procs: invalid value \"many\": invalid digit found in string\n"
        )
    );
    // A value the flag's own check refuses later, at start-up.
    let file = config("api_listen = \"127.0.0.1:0\"\n\nlisten = \":8080\"\n");
    let (code, err) = refuse(&["--config", &file, "--cgi-bin", fixtures().to_str().expect("utf-8")]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        format!(
            "ws2http: error: {file} line 3, key listen: --listen :8080: which interface? write 127.0.0.1:8080 \
             (this machine only) or 0.0.0.0:8080 (every interface)\n"
        )
    );
    let file = config("timeout = 5\nevents = [\"open\", \"talk\"]\n");
    let (_, err) = refuse(&["--config", &file]);
    assert_eq!(
        err,
        format!(
            "ws2http: error: {file} line 2, key events: invalid value \"talk\": expected one of open, message, close, resume\n"
        )
    );
}

#[test]
fn a_setting_given_twice_says_which_won() {
    let file = config("listen = \"127.0.0.1:1\"\ntimeout = 7\n");
    let s = Server::start(&["--config", &file, "--timeout", "5", "--timeout", "9"]);
    // Server::start passes --listen 127.0.0.1:0 on the command line.
    s.wait_log(&format!("--listen: the command line's \"127.0.0.1:0\" wins over {file} line 1, key listen"));
    s.wait_log(&format!("--timeout: the command line's \"9\" wins over {file} line 2, key timeout"));
    s.wait_log("--timeout given 2 times on the command line: the last one, \"9\", wins");
    drop(s);
    let s = Server::start_env(
        &fixtures(),
        &["--timeout", "5", "--api-token", "from-flag"],
        &[("WS2HTTP_TIMEOUT", "3".as_ref()), ("WS2HTTP_API_TOKEN", "secret".as_ref())],
    );
    s.wait_log("--timeout: the command line's \"5\" wins over WS2HTTP_TIMEOUT=\"3\"");
    s.wait_log("--api-token: the command line's (hidden) wins over WS2HTTP_API_TOKEN=(hidden)");
    assert!(!s.log().contains("secret") && !s.log().contains("from-flag"), "{}", s.log());
    // Repeatable flags add up, without a note (Server::start gives --pass-env twice).
    assert!(!s.log().contains("--pass-env given"), "{}", s.log());
}

#[test]
fn a_script_that_cannot_run_is_reported_at_start_up() {
    let script = fixtures().join("not-executable.sh");
    let s = Server::start_in(Path::new("/nonexistent"), &[script.to_str().expect("utf-8")]);
    s.wait_log(&format!(
        "SCRIPT {0} is not executable: every connection will be refused (500) until you run `chmod +x {0}` \
         (with a #! line) or pass --handler sh=PROGRAM",
        script.display()
    ));
}

#[test]
fn an_empty_endpoint_list_is_reported_at_start_up() {
    let dir = scratch().join("cgi-bin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let s = Server::start_in(&dir, &[]);
    s.wait_log(&format!(
        "no WebSocket endpoints: --cgi-bin {} has no runnable script (it has no scripts); add a script and \
         `chmod +x` it (with a #! line), or pass --handler EXT=PROGRAM, or give a single SCRIPT",
        dir.canonicalize().expect("canonical").display()
    ));
    // The info line says so too, rather than `endpoints in DIR: ` and nothing.
    s.wait_log(&format!("no endpoints in {}", dir.canonicalize().expect("canonical").display()));
    drop(s);
    std::fs::write(dir.join("chat.sh"), "#!/bin/sh\n").expect("write");
    let s = Server::start_in(&dir, &[]);
    s.wait_log("(1 file(s) in it are not executable: chat.sh)");
}

#[test]
fn help_ends_with_examples_that_run() {
    let out = ws2http().arg("--help").output().expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let examples = help.split("EXAMPLES:\n").nth(1).expect("an EXAMPLES section");
    for command in [
        "ws2http cgi-bin/echo.sh",
        "ws2http --cgi-bin app/cgi-bin --root app/public",
        "ws2http --config /etc/ws2http/ws2http.toml",
        "ws2http try cgi-bin/echo.sh --data hi",
        "ws2http connect ws://127.0.0.1:8080/echo.sh",
    ] {
        assert!(examples.contains(&format!("  {command} ")), "{command} missing from:\n{examples}");
    }
    // Every description starts in the same column.
    let aligned: Vec<usize> = examples
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let after_cmd = 2 + l[2..].find("  ").unwrap_or(l.len() - 2);
            after_cmd + l[after_cmd..].len() - l[after_cmd..].trim_start().len()
        })
        .collect();
    assert!(aligned.windows(2).all(|w| w[0] == w[1]), "descriptions not aligned ({aligned:?}):\n{examples}");
    // The `try` example works as printed, from the repository.
    let out = ws2http()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["try", "cgi-bin/echo.sh", "--data", "hi"])
        .output()
        .expect("run try");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("text \"hi\""), "{out:?}");
}

#[test]
fn free_ports_are_still_accepted() {
    // The long-standing form keeps working alongside the new ones.
    let s = Server::start(&FREE);
    assert!(s.port > 0);
}

#[test]
fn a_toml_syntax_error_says_what_is_wrong_and_where() {
    let file = config("# settings\nlisten = \"127.0.0.1:0\n");
    let (code, err) = refuse(&["--config", &file]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        format!(
            "ws2http: error: --config {file}: TOML syntax error at line 2, column 22: invalid basic string, \
             expected `\"`\n"
        )
    );
}

#[test]
fn a_console_variable_must_be_a_boolean() {
    let mut child = ws2http()
        .args(FREE)
        .env_remove("WS2HTTP_CONFIG")
        .env("WS2HTTP_NO_CONSOLE", "garbage")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ws2http");
    // It must refuse at once; a server that starts would run forever.
    let started = std::time::Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("ws2http started with WS2HTTP_NO_CONSOLE=garbage");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid value 'garbage'") && err.contains("--no-console"), "{err}");
    // The usual spellings still work (ws2http -V exits at once).
    for yes in ["true", "1", "yes", "on", "false", "0", "no", "off"] {
        let out = ws2http().arg("-V").env("WS2HTTP_NO_CONSOLE", yes).output().expect("run ws2http");
        assert!(out.status.success(), "{yes}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The connection limits' help says what an HTTPS client over them gets
/// (no 503: it could not read a plain answer).
#[test]
fn connection_limit_help_says_what_happens_over_https() {
    let out = ws2http().arg("--help").output().expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    for flag in ["--max-http-connections <N>", "--max-http-connections-per-ip <N>"] {
        let text = help.split(flag).nth(1).expect(flag);
        let text = &text[..text.find("[default").unwrap_or(text.len())];
        assert!(text.contains("(beyond it: 503; HTTPS: closed at once, before the TLS handshake)"), "{flag}: {text}");
    }
}

/// `rediss://...#insecure` (the redis crate's "do not verify") is refused
/// at start-up in one line, not at every connection attempt.
#[test]
fn rediss_insecure_is_refused_at_start_up() {
    let (code, err) = refuse(&[&FREE[..], &["--redis", "rediss://127.0.0.1:1/#insecure"]].concat());
    assert_ne!(code, Some(0));
    assert!(
        err.contains("--redis rediss://127.0.0.1:1/#insecure: verification cannot be turned off; remove #insecure and trust the server's CA with --redis-ca FILE"),
        "{err}"
    );
}
