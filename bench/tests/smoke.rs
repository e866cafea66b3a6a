//! CI smoke run of the benchmark harness: `ws2http-bench --smoke` must run
//! every workload to the end and print every table. The programs it
//! compares against are the suites "bench", "backends", "php" and "redis"
//! of tests/suites.txt: a missing one fails with the command that installs
//! it (the bench runs with `CI=true`, so it never prints a skipped table
//! while this test passes), and `WS2HTTP_TEST_SKIP` naming one of them
//! shows this test as ignored. Speed is never checked: the point is that
//! the harness does not rot.
//!
//! Workload 1's tokio floor is a crate of its own (bench/floors/, outside
//! the workspace so tokio's runtime never reaches the product's build):
//! this test builds it first with the command the bench names, and fails if
//! that fails, rather than running without it.

#[path = "../../tests/common/suites.rs"]
mod suites;

use std::path::{Path, PathBuf};
use std::process::Command;

use ws2http_test_suite::suite;

/// The ws2http binary to drive: target/release/ws2http if it was built,
/// else the one built next to this test's own binary (target/debug).
fn ws2http() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_ws2http-bench"));
    let profile_dir = bench.parent().expect("the bench binary's directory").to_path_buf();
    let target = profile_dir.parent().expect("the target directory").to_path_buf();
    let candidates = [target.join("release").join("ws2http"), profile_dir.join("ws2http")];
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "no ws2http binary in {candidates:?}: build it first (`cargo build`, or run `cargo test` \
             from the workspace root, which builds it)"
        )
    })
}

/// Builds bench/floors/ (the tokio floor) where the bench looks for it,
/// with the command its `--no-build` error names.
fn build_tokio_floor() {
    let cmd = "cargo build --release --locked --manifest-path bench/floors/Cargo.toml";
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--release", "--locked", "--manifest-path", "bench/floors/Cargo.toml"])
        .current_dir(root)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"));
    assert!(st.success(), "`{cmd}` (workload 1's tokio floor) failed: {st}");
}

#[suite("bench", "backends", "php", "redis")]
#[test]
fn smoke_run_prints_every_table() {
    for suite in ["bench", "backends", "php", "redis"] {
        suites::require_suite(suite);
    }
    build_tokio_floor();
    let out = Command::new(env!("CARGO_BIN_EXE_ws2http-bench"))
        .args(["--smoke", "--no-build", "--ws2http"])
        .arg(ws2http())
        // A missing tool fails the bench rather than printing "skipped".
        .env("CI", "true")
        .output()
        .expect("ws2http-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ws2http-bench --smoke failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    for header in [
        "## Workload 1: event throughput",
        "## Workload 2: idle connections",
        "## Workload 3: fan-out",
        "## Workload 4: connection churn",
        "## Workload 5: versus Pushpin",
        "## Workload 6: PHP through FastCGI (php-fpm) vs php-cgi",
        "## Workload 7: cluster (two instances + Redis) vs one instance",
    ] {
        assert!(stdout.contains(header), "missing {header:?} in:\n{stdout}\nstderr:\n{stderr}");
    }
    // Workload 1 measured both floors next to ws2http.
    for column in ["threads floor events/s", "tokio floor events/s", "ws2http ÷ threads floor", "ws2http ÷ tokio floor"]
    {
        assert!(stdout.contains(column), "workload 1 has no column {column:?}:\n{stdout}");
    }
    // Each workload printed a table, none skipped.
    assert!(!stdout.contains("skipped"), "a workload was skipped:\n{stdout}");
    assert!(stdout.matches("| --- |").count() >= 4, "tables missing in:\n{stdout}");
}

/// The `resume` workload (issue 17; not in `all`) at smoke size: every part
/// runs against the real server (sessions resumed, replayed, expired) and
/// prints its table. It needs nothing outside Rust but the C compiler.
#[test]
fn resume_smoke_prints_its_tables() {
    let out = Command::new(env!("CARGO_BIN_EXE_ws2http-bench"))
        .args(["resume", "--smoke", "--no-build", "--ws2http"])
        .arg(ws2http())
        .output()
        .expect("ws2http-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ws2http-bench resume --smoke failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for header in ["## Issue 17: resumable sessions", "### Resume latency", "### Mass resume", "### Idle cost"] {
        assert!(stdout.contains(header), "missing {header:?} in:\n{stdout}\nstderr:\n{stderr}");
    }
    let tables = stdout.lines().filter(|l| l.starts_with("| --- |")).count();
    assert_eq!(tables, 3, "three tables expected in:\n{stdout}");
}
