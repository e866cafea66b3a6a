//! `ws2http try`: one event, the same environment, readable output.

mod common;
use std::process::Command;

fn try_run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ws2http")).arg("try").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn shows_actions_stderr_exit_and_duration() {
    let f = common::fixtures();
    let (code, out) = try_run(&[f.join("mirror.sh").to_str().unwrap(), "--data", "@join lobby\nhello\n@send abc hi"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("event:    message (text, 30 bytes) for connection "), "{out}");
    assert_eq!(lines[1], "action:   this connection joins room lobby");
    assert_eq!(lines[2], "action:   send to this connection: text \"hello\"");
    assert_eq!(lines[3], "action:   send to connection abc: text \"hi\"");
    assert_eq!(lines[4], "exit:     ok");
    assert!(lines[5].starts_with("duration: "), "{out}");

    let (code, out) = try_run(&[f.join("crash.sh").to_str().unwrap(), "--data", "fail"]);
    assert_eq!(code, 1);
    assert!(out.contains("action:   send to this connection: text \"partial\"\nstderr:   failing on purpose\nexit:     failed: exited with status 3\n"), "{out}");
}

#[test]
fn same_environment_as_a_real_event() {
    let f = common::fixtures();
    let (code, out) = try_run(&[
        f.join("mirror.sh").to_str().unwrap(),
        "--event",
        "close",
        "--close-code",
        "4001",
        "--close-reason",
        "bye",
        "--meta",
        "nick=ann",
        "--rooms",
        "b,a",
    ]);
    assert_eq!(code, 0, "{out}");
    // mirror.sh's close event tells its room(s) it left.
    assert!(out.contains("action:   to room a except this connection: text \"left "), "{out}");
    assert!(out.contains("action:   to room b except this connection: text \"left "), "{out}");

    let (_, out) = try_run(&[f.join("gate.sh").to_str().unwrap(), "--event", "open"]);
    assert!(out.contains("headers:  Status: 403 | Content-Type: text/plain"), "{out}");
    assert!(out.contains("reject:   the open is refused; response body \"no key, no entry\\n\""), "{out}");
    let (_, out) = try_run(&[f.join("gate.sh").to_str().unwrap(), "--event", "open", "--query", "key=open"]);
    assert!(out.contains("action:   send to this connection: text \"welcome\""), "{out}");
}

#[test]
fn usage_errors_are_one_clear_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_ws2http")).args(["try", "/no/such/script"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("ws2http: error: /no/such/script: "), "{err}");
}
