//! The one test command, ./test: README and .ci/run name it; it refuses a
//! typo in WS2HTTP_TEST_SKIP; it installs with apt-get only what is missing
//! (sudo when not root), and without root or sudo prints the one command to
//! run. apt-get, sudo, id and cargo are stubs here: nothing is installed.

mod common;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A directory of stubs: each logs its arguments to `calls` and runs `body`.
fn stubs(stubs: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let dir = scratch().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let calls = dir.join("calls");
    for (name, body) in stubs {
        let path = dir.join(name);
        let script = format!("#!/bin/sh\necho \"{name} $*\" >> '{}'\n{body}\n", calls.display());
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (dir, calls)
}

/// A PATH of only `dir` and links to the programs ./test itself uses, so
/// that every program of the suites is missing (the sbin directories are
/// searched too: `skip` names the suites installed there, if any).
fn bare_path(dir: &Path) -> String {
    for tool in ["bash", "awk", "sort", "paste", "cmp", "cat", "rm", "cp", "dirname", "env", "true"] {
        let real = find_program(tool).unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(real, dir.join(tool)).unwrap();
    }
    dir.display().to_string()
}

fn run_test_script(path: &str, skip: &str, args: &[&str]) -> Output {
    Command::new(root().join("test"))
        .args(args)
        .env("PATH", path)
        .env(SKIP_VAR, skip)
        .env_remove("WS2HTTP_TEST_PYTHON")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ./test")
}

fn calls(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn readme_and_ci_run_the_same_test_command() {
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let last = ci.lines().rfind(|l| !l.trim().is_empty()).unwrap();
    assert_eq!(last, "exec ./test", ".ci/run must end by running the README's test command");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("```sh\n./test\n```"), "README must show the test command ./test in a sh block");
    assert!(!readme.contains("```sh\ncargo test\n```"), "README must not show plain `cargo test` as the test command");
    let mode = std::fs::metadata(root().join("test")).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "./test must be executable");
}

#[test]
fn an_unknown_suite_is_refused_in_one_line() {
    let out = Command::new(root().join("test")).env(SKIP_VAR, "python,nope").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown suite 'nope'; the suites are "), "{stderr}");
    assert!(stderr.contains(&suite_names().join(",")), "{stderr}");
}

/// Not root and no sudo: one line with the exact command, nothing run.
#[test]
fn without_root_or_sudo_it_prints_the_command_to_run() {
    let (dir, log) = stubs(&[("id", "echo 1000"), ("apt-get", "exit 1"), ("cargo", "exit 1")]);
    // The suites installed in sbin directories can't be hidden by PATH.
    let out = run_test_script(&bare_path(&dir), "python,backends", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let cmd = "su -c 'apt-get update && apt-get install -y --no-install-recommends ";
    assert!(stderr.contains(cmd), "{stderr}");
    for package in ["php-cgi", "redis-server", "chromium-driver", "curl"] {
        assert!(stderr.contains(package), "{package} missing from {stderr}");
    }
    assert!(!stderr.contains("nginx-light"), "a skipped suite must not be installed: {stderr}");
    assert!(!calls(&log).contains("apt-get"), "{}", calls(&log));
}

/// Not root, with sudo: apt-get update and install through sudo, then
/// cargo test with the arguments passed through.
#[test]
fn with_sudo_it_installs_what_is_missing_then_runs_cargo_test() {
    let (dir, log) = stubs(&[
        ("id", "echo 1000"),
        ("sudo", "[ \"$1\" = -n ] && shift; exec \"$@\""),
        ("apt-get", ""),
        ("cargo", ""),
    ]);
    let out = run_test_script(&bare_path(&dir), "python,backends", &["--test", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let calls = calls(&log);
    assert!(calls.contains("sudo apt-get update -qq\n"), "{calls}");
    assert!(calls.contains("sudo apt-get install -y -qq --no-install-recommends "), "{calls}");
    assert!(calls.contains(" php-cgi ") && !calls.contains("nginx-light"), "{calls}");
    assert!(calls.ends_with("cargo test --test x\n"), "{calls}");
}

/// Everything installed: no apt-get at all (no update), straight to cargo.
#[test]
fn with_everything_installed_it_runs_cargo_test_only() {
    for suite in suite_names().into_iter().filter(|s| *s != "python") {
        if skip_reason(suite).is_none() {
            require_suite(suite);
        }
    }
    let (dir, log) = stubs(&[("apt-get", "exit 1"), ("sudo", "exit 1"), ("cargo", "")]);
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let mut skip = skipped_suites();
    skip.push("python".into());
    let out = run_test_script(&path, &skip.join(","), &["--no-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(calls(&log), "cargo test --no-run\n");
}

/// `cargo test` in a scratch crate with one `#[suite("redis")]` test.
fn scratch_crate_test(skip: Option<&str>, dir: &Path) -> String {
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.args(["test", "--offline", "--", "--test-threads", "1"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .env_remove(SKIP_VAR);
    if let Some(s) = skip {
        cmd.env(SKIP_VAR, s);
    }
    let out = cmd.output().expect("run cargo");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `#[suite]` compiles a test as ignored, with the reason, when
/// WS2HTTP_TEST_SKIP names its suite, and cargo rebuilds the test when the
/// variable changes; an unknown suite is a compile error.
#[test]
fn the_suite_attribute_ignores_a_skipped_suite() {
    let dir = scratch().join("crate");
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    let attr = root().join("tests/suite-attr");
    let manifest = format!(
        "[package]\nname = \"suite-check\"\nversion = \"0.0.0\"\nedition = \"2021\"\n[lib]\npath = \"lib.rs\"\n\
         [workspace]\n[dev-dependencies]\nws2http-test-suite = {{ path = {:?} }}\n",
        attr.display().to_string()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("lib.rs"), "").unwrap();
    let test = "use ws2http_test_suite::suite;\n#[suite(\"redis\")]\n#[test]\nfn needs_redis() {}\n";
    std::fs::write(dir.join("tests/t.rs"), test).unwrap();

    let out = scratch_crate_test(Some("php,redis"), &dir);
    assert!(out.contains("test needs_redis ... ignored, WS2HTTP_TEST_SKIP=redis"), "{out}");
    let out = scratch_crate_test(Some("php"), &dir);
    assert!(out.contains("test needs_redis ... ok"), "not rebuilt when the variable changed?\n{out}");
    let out = scratch_crate_test(Some("nope"), &dir);
    assert!(out.contains("unknown test suite \"nope\""), "{out}");
    std::fs::write(dir.join("tests/t.rs"), test.replace("(\"redis\")", "(\"redis-typo\")")).unwrap();
    let out = scratch_crate_test(None, &dir);
    assert!(out.contains("unknown test suite \"redis-typo\""), "{out}");
}
