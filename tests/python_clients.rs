//! Runs the Python `websockets` client suite (tests/python) against the real
//! binary, so one `cargo test` covers a second, independent client.
//! A missing Python package is a failure (with the command that installs
//! it), never a silent pass.

use std::process::Command;

/// A suite that cannot run fails: it never passes unseen.
fn tool_missing(what: &str, fix: &str) {
    panic!("{what} is not installed: run .ci/run, or {fix}");
}

#[test]
fn python_websockets_suite() {
    let root = env!("CARGO_MANIFEST_DIR");
    let has = Command::new("python3").args(["-c", "import websockets"]).output().is_ok_and(|o| o.status.success());
    if !has {
        return tool_missing(
            "python3 with the websockets package",
            "python3 -m pip install -r tests/python/requirements.txt",
        );
    }
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests/python", "-t", "tests/python", "-v"])
        .env("WS2HTTP_BIN", env!("CARGO_BIN_EXE_ws2http"))
        .current_dir(root)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "the Python websockets suite failed (see above)");
    // Guard against an empty discovery passing silently.
    let ran =
        stderr.lines().find_map(|l| l.strip_prefix("Ran ")).and_then(|l| l.split(' ').next()?.parse::<u32>().ok());
    assert!(ran.is_some_and(|n| n >= 10), "expected the Python suite to run at least 10 tests, got {ran:?}");
    assert!(!stderr.contains("skipped="), "the Python suite skipped tests (see above): every test must run");
}
