//! Suites of tests that need programs from outside Rust (tests/suites.txt):
//! a missing program fails the test with the one command that installs it,
//! and `WS2HTTP_TEST_SKIP=a,b` deliberately skips suites, which then show
//! as `ignored` (never `ok`). Standard library only, so that the bench
//! crate can include this file too (`#[path]`).
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The variable that names the suites to skip, comma-separated.
pub const SKIP_VAR: &str = "WS2HTTP_TEST_SKIP";

/// The manifest: suite, installer, packages, programs (one line each).
pub const MANIFEST: &str = include_str!("../suites.txt");

/// One line of tests/suites.txt.
pub struct Requirement {
    pub suite: &'static str,
    pub installer: &'static str,
    pub packages: Vec<&'static str>,
    pub programs: Vec<&'static str>,
}

/// Every line of the manifest.
pub fn requirements() -> Vec<Requirement> {
    MANIFEST
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols.len(), 4, "tests/suites.txt: 4 columns expected in {l:?}");
            Requirement {
                suite: cols[0],
                installer: cols[1],
                packages: cols[2].split(',').collect(),
                programs: cols[3].split(',').collect(),
            }
        })
        .collect()
}

/// The suite names the manifest knows, in order, without repeats.
pub fn suite_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = Vec::new();
    for r in requirements() {
        if !names.contains(&r.suite) {
            names.push(r.suite);
        }
    }
    names
}

/// The suites `WS2HTTP_TEST_SKIP` names, or one line naming an unknown
/// one: a typo must not leave the reader believing a suite was skipped.
pub fn parse_skip() -> Result<Vec<String>, String> {
    let value = std::env::var(SKIP_VAR).unwrap_or_default();
    let names: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    let known = suite_names();
    match names.iter().find(|n| !known.contains(&n.as_str())) {
        Some(bad) => Err(format!("{SKIP_VAR}={value}: unknown suite {bad:?}; the suites are {}", known.join(","))),
        None => Ok(names),
    }
}

/// The suites `WS2HTTP_TEST_SKIP` names; an unknown name panics.
pub fn skipped_suites() -> Vec<String> {
    parse_skip().unwrap_or_else(|e| panic!("{e}"))
}

/// `Some(reason)` when `suite` is skipped on purpose; the reason is what
/// the summary shows next to `ignored`.
pub fn skip_reason(suite: &str) -> Option<String> {
    skipped_suites().iter().any(|s| s == suite).then(|| format!("{SKIP_VAR}={suite}"))
}

/// Whether `program` (a trailing `*` matches any suffix) is an executable
/// in PATH or in the sbin directories (Debian puts nginx, php-fpm8.2 and
/// fcgiwrap there, outside a user's PATH).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0);
    dirs.iter().find_map(|d| match program.strip_suffix('*') {
        None => Some(d.join(program)).filter(|p| executable(p)),
        Some(prefix) => {
            std::fs::read_dir(d).ok()?.flatten().map(|e| e.path()).find(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)) && executable(p)
            })
        }
    })
}

/// The command that installs `packages` with `installer`, as this user
/// would type it.
pub fn install_command(installer: &str, packages: &[&str]) -> String {
    let list = packages.join(" ");
    match installer {
        "apt" => {
            let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
            let sudo = if root { "" } else { "sudo " };
            format!("{sudo}apt-get install -y --no-install-recommends {list}")
        }
        "cargo" => format!("cargo install --locked {list}"),
        other => panic!("tests/suites.txt: unknown installer {other:?} (apt or cargo)"),
    }
}

/// `Err(one line)` naming what `suite` misses and the command that installs
/// it; `Ok` when every program of the suite is there.
pub fn check_suite(suite: &str) -> Result<(), String> {
    let reqs: Vec<Requirement> = requirements().into_iter().filter(|r| r.suite == suite).collect();
    assert!(!reqs.is_empty(), "no suite {suite:?} in tests/suites.txt; the suites are {}", suite_names().join(","));
    for r in reqs {
        let missing: Vec<&str> = r.programs.iter().copied().filter(|p| find_program(p).is_none()).collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} not installed (suite {suite}): run `{}` (or ./test, which installs what every suite needs; \
                 {SKIP_VAR}={suite} skips these tests on purpose)",
                missing.join(", "),
                install_command(r.installer, &r.packages),
            ));
        }
    }
    Ok(())
}

/// Call first in a test that needs `suite`'s programs: a missing one fails
/// the test with the command that installs it, never a silent pass.
pub fn require_suite(suite: &str) {
    if let Err(message) = check_suite(suite) {
        panic!("{message}");
    }
}

/// The Python that runs tests/python: `WS2HTTP_TEST_PYTHON` (./test sets
/// it), else the virtualenv ./test made under the target directory, else
/// `python3` from PATH.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("WS2HTTP_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).or_else(|| {
        // target/debug/deps/NAME-HASH
        Some(std::env::current_exe().ok()?.parent()?.parent()?.parent()?.to_path_buf())
    });
    target.map(|t| t.join("test-venv/bin/python3")).filter(|p| p.is_file()).unwrap_or_else(|| "python3".into())
}
