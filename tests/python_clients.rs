//! Runs the Python `websockets` client suite (tests/python) against the real
//! binary, so one `cargo test` covers a second, independent client.
//!
//! The suite shows in the summary one test class at a time
//! (`test_api::ApiTest`), the tests of a class that need another suite's
//! programs as their own unit (`test_api::ApiTest[curl]`), so a reader sees
//! what ran. A custom harness (libtest-mimic) lets a unit be `ignored` at
//! run time when `WS2HTTP_TEST_SKIP` names its suite; anything else that
//! cannot run (no Python, no `websockets`, a missing program, a Python-level
//! skip) fails with the command that fixes it, never passes as `ok`.
//! tests/python/cargo_harness.py lists and runs the tests.

#[path = "common/suites.rs"]
mod suites;

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use suites::{check_suite, python, skip_reason};

/// One unit of the summary: the tests of one class needing the same suites.
struct Unit {
    name: String,
    ids: Vec<String>,
    suites: Vec<String>,
}

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The test modules, from the file names (when Python cannot list them).
fn modules() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(python_dir())
        .expect("tests/python")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".py").map(str::to_owned))
        .filter(|n| n.starts_with("test_"))
        .collect();
    names.sort();
    names
}

/// `python3 cargo_harness.py list`, or one line saying why it could not run.
fn list() -> Result<String, String> {
    let py = python();
    let out = Command::new(&py).args(["cargo_harness.py", "list"]).current_dir(python_dir()).output().map_err(|e| {
        format!(
            "cannot run {} ({e}): run `./test`, which makes the virtualenv target/test-venv ({}=python skips \
                 the Python suite on purpose)",
            py.display(),
            suites::SKIP_VAR
        )
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'websockets'") || stderr.contains("No module named \"websockets\"") {
        return Err(format!(
            "the Python packages of tests/python/requirements.txt are not installed for {}: run `./test` \
             (it makes the virtualenv target/test-venv; {}=python skips the Python suite on purpose)",
            py.display(),
            suites::SKIP_VAR
        ));
    }
    if !out.status.success() {
        return Err(format!("{} cargo_harness.py list failed: {}", py.display(), stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Groups the listed tests by class and needed suites, in listing order.
/// An unimportable module becomes an `Err` unit.
fn units(listing: &str) -> Vec<Result<Unit, (String, String)>> {
    let mut units: Vec<Result<Unit, (String, String)>> = Vec::new();
    for line in listing.lines().filter(|l| !l.is_empty()) {
        let (id, extra) = line.split_once('\t').unwrap_or((line, ""));
        if let Some(module) = id.strip_prefix('!') {
            units.push(Err((module.to_owned(), extra.to_owned())));
            continue;
        }
        let class = id.rsplit_once('.').map_or(id, |(c, _)| c).replacen('.', "::", 1);
        let mut suites = vec!["python".to_owned()];
        suites.extend(extra.split(',').filter(|s| !s.is_empty()).map(str::to_owned));
        let name = if extra.is_empty() { class } else { format!("{class}[{extra}]") };
        match units.iter_mut().flatten().find(|u| u.name == name) {
            Some(u) => u.ids.push(id.to_owned()),
            None => units.push(Ok(Unit { name, ids: vec![id.to_owned()], suites })),
        }
    }
    units
}

/// Runs one unit's tests in one Python process.
fn run_unit(ids: &[String], suites: &[String]) -> Result<(), Failed> {
    for s in suites {
        check_suite(s)?;
    }
    let out = Command::new(python())
        .args(["cargo_harness.py", "run"])
        .args(ids)
        .env("WS2HTTP_BIN", env!("CARGO_BIN_EXE_ws2http"))
        .current_dir(python_dir())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python().display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{}\nthe Python tests above failed", String::from_utf8_lossy(&out.stderr)).into())
}

fn trial(unit: Unit) -> Trial {
    let reason = unit.suites.iter().find_map(|s| skip_reason(s));
    Trial::ignorable_test(unit.name, move || match reason {
        Some(r) => Ok(Completion::ignored_with(r)),
        None => run_unit(&unit.ids, &unit.suites).map(|()| Completion::Completed),
    })
    .with_kind("python")
}

/// Every unit (ignored ones included, so the summary names them); when
/// Python cannot list the suite, one unit per module: ignored when the
/// Python suite is skipped, else failing with the fix.
fn trials() -> Vec<Trial> {
    let fallback = |result: Result<(), String>| {
        let per_module = move |m: String| {
            let result = result.clone();
            Trial::ignorable_test(m, move || match (skip_reason("python"), result) {
                (Some(r), _) => Ok(Completion::ignored_with(r)),
                (None, Err(e)) => Err(e.into()),
                (None, Ok(())) => Err("the Python suite could not be listed".into()),
            })
            .with_kind("python")
        };
        modules().into_iter().map(per_module).collect()
    };
    if let Err(e) = check_suite("python") {
        return fallback(Err(e));
    }
    match list() {
        Err(e) => fallback(Err(e)),
        Ok(listing) => units(&listing)
            .into_iter()
            .map(|u| match u {
                Ok(u) => trial(u),
                Err((module, error)) => {
                    Trial::test(module.clone(), move || Err(format!("cannot import {module}: {error}").into()))
                        .with_kind("python")
                }
            })
            .collect(),
    }
}

/// Set in the harness's own checks when they run this binary again.
const CHILD_VAR: &str = "WS2HTTP_HARNESS_CHILD";

/// This binary run again with `args` and `env`: (success, stdout + stderr).
fn run_self(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (bool, String) {
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args(args)
        .env(CHILD_VAR, "1")
        .envs(env.iter().copied())
        .output()
        .expect("run the test binary again");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// With the Python suite skipped on purpose, every unit shows as ignored
/// with the reason, none as ok, and the run passes.
fn skipped_suite_is_ignored() -> Result<(), Failed> {
    let (ok, text) = run_self(&["--test-threads", "1"], &[(suites::SKIP_VAR, "python".as_ref())]);
    let units = text.lines().filter(|l| l.starts_with("test [python] ")).count();
    let ignored = text.lines().filter(|l| l.ends_with("ignored (WS2HTTP_TEST_SKIP=python)")).count();
    if !ok || units < 10 || ignored != units || !text.contains(&format!("0 passed; 0 failed; {units} ignored")) {
        return Err(format!("expected {units} units, all ignored (WS2HTTP_TEST_SKIP=python):\n{text}").into());
    }
    Ok(())
}

/// A PATH without php-cgi: the PHP unit fails with the command that
/// installs it, before any Python runs.
fn missing_program_fails_with_its_fix() -> Result<(), Failed> {
    let bin = std::env::temp_dir().join(format!("ws2http-harness-path-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&bin);
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    // The interpreter itself (python3 in PATH may be a shell-script shim).
    let out = Command::new(python()).args(["-c", "import sys; print(sys.executable)"]).output();
    let py = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(py, bin.join("python3")).map_err(|e| e.to_string())?;
    if suites::find_program("php-cgi").is_some_and(|p| !p.starts_with("/usr/bin")) {
        return Err("php-cgi is installed in an sbin directory: this check cannot hide it".into());
    }
    let env = [("PATH", bin.as_os_str()), (suites::SKIP_VAR, "".as_ref())];
    let (ok, text) = run_self(&["--exact", "test_open::PhpTest[php]"], &env);
    let _ = std::fs::remove_dir_all(&bin);
    let fix = suites::install_command("apt", &["php-cgi"]);
    let failed = text.contains("test [python] test_open::PhpTest[php] ... FAILED");
    if ok || !failed || !text.contains(&format!("php-cgi not installed (suite php): run `{fix}`")) {
        return Err(format!("expected test_open::PhpTest[php] to fail with `{fix}`:\n{text}").into());
    }
    Ok(())
}

/// A test that skips itself in Python fails the unit.
fn python_skip_fails() -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("ws2http-harness-skip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // A skip in the test, and one in setUpClass (whose tests never start,
    // so no count of tests "run" sees them).
    let module = "import unittest\nclass T(unittest.TestCase):\n    def test_a(self):\n        self.skipTest('no')\n\
                  class C(unittest.TestCase):\n    @classmethod\n    def setUpClass(cls):\n        \
                  raise unittest.SkipTest('cls')\n    def test_b(self):\n        pass\n";
    std::fs::write(dir.join("skipping_for_harness.py"), module).map_err(|e| e.to_string())?;
    let out = Command::new(python())
        .args(["cargo_harness.py", "run", "skipping_for_harness.T.test_a", "skipping_for_harness.C.test_b"])
        .env("PYTHONPATH", &dir)
        .current_dir(python_dir())
        .output()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success()
        || !stderr.contains("skipping_for_harness.T.test_a was skipped (no)")
        || !stderr.contains("skipping_for_harness.C.test_b did not run and pass")
    {
        return Err(format!("expected a Python-level skip to fail:\n{stderr}").into());
    }
    Ok(())
}

/// One of the harness's own checks.
type Check = fn() -> Result<(), Failed>;

/// The harness's own checks, run as a subprocess of this binary.
fn harness_checks() -> Vec<Trial> {
    if std::env::var_os(CHILD_VAR).is_some() {
        return Vec::new();
    }
    let checks: [(&str, Check); 3] = [
        ("harness::skipped_suite_is_ignored", skipped_suite_is_ignored),
        ("harness::missing_program_fails_with_its_fix", missing_program_fails_with_its_fix),
        ("harness::python_skip_fails", python_skip_fails),
    ];
    checks.into_iter().map(|(name, f)| Trial::test(name, f)).collect()
}

fn main() {
    let args = Arguments::from_args();
    if let Err(e) = suites::parse_skip() {
        eprintln!("{e}");
        std::process::exit(2);
    }
    let mut trials = trials();
    assert!(trials.len() >= 10, "expected the Python suite to have at least 10 units, got {}", trials.len());
    trials.extend(harness_checks());
    libtest_mimic::run(&args, trials).exit();
}
