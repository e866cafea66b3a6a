//! Issue 12, `ws2http try`: its output is exactly what README shows, and
//! `--pass-env` means the same for `try` as for the server.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Connection ids (32 hex digits) and the duration, the values that vary
/// from run to run, as placeholders.
fn normalize(out: &str) -> String {
    out.lines()
        .map(|l| {
            if l.starts_with("duration: ") {
                return "duration: <T>".to_owned();
            }
            l.split(' ')
                .map(|w| match w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit()) {
                    true => "<ID>",
                    false => w,
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .map(|l| l + "\n")
        .collect()
}

/// Every `$ ws2http try ...` in README's console blocks, with the output
/// printed under it.
fn readme_examples() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut found = Vec::new();
    for block in readme.split("```console\n").skip(1) {
        let block = block.split("```").next().unwrap();
        let mut lines = block.lines();
        let Some(cmd) = lines.next().and_then(|l| l.strip_prefix("$ ")) else { continue };
        if cmd.starts_with("ws2http try ") {
            let out: String = lines.take_while(|l| !l.starts_with("$ ")).map(|l| format!("{l}\n")).collect();
            found.push((cmd.to_owned(), out));
        }
    }
    found
}

#[test]
fn try_prints_exactly_what_readme_shows() {
    let examples = readme_examples();
    assert!(!examples.is_empty(), "README shows no `$ ws2http try` example");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ws2http"));
    let path = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    for (cmd, shown) in examples {
        // As a user types it, from the repository's top directory.
        let out = Command::new("sh").args(["-c", &cmd]).current_dir(repo()).env("PATH", &path).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        let got = String::from_utf8(out.stdout).unwrap();
        assert_eq!(normalize(&got), normalize(&shown), "{cmd}\nprinted:\n{got}");
        assert!(got.starts_with(&shown[..shown.find(" for connection ").unwrap()]), "{got}");
    }
}

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/pass-env")
}

const ENV: [(&str, &str); 3] = [("PE_A", "1"), ("PE_B", "2"), ("PE_C", "3")];

/// What env.sh saw under `ws2http try` with these flags: the one line it
/// printed, or the error.
fn with_try(flags: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ws2http"));
    cmd.arg("try").arg(fixture().join("env.sh")).args(["--data", "x"]).args(flags).envs(ENV);
    let out = cmd.output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("action:   send to this connection: text "));
    Ok(line.expect("env.sh's line").trim_matches('"').to_owned())
}

/// The same under the server, as a page.
fn with_server(flags: &[&str]) -> Result<String, String> {
    let mut cmd = ws2http();
    cmd.args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--cgi-bin"])
        .arg(fixture())
        .args(flags)
        .envs(ENV)
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut first).unwrap();
    if first.is_empty() {
        let out = child.wait_with_output().unwrap();
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let port: u16 = first.trim().rsplit(':').next().unwrap().parse().unwrap();
    let r = raw_http(port, "GET /env.sh HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let _ = child.kill();
    let _ = child.wait();
    Ok(r.lines().find(|l| l.starts_with("A=")).unwrap_or(&r).to_owned())
}

#[test]
fn pass_env_is_parsed_alike_by_try_and_the_server() {
    let cases: [(&[&str], Result<&str, &str>); 7] = [
        (&["--pass-env", "PE_A,PE_B"], Ok("A=1 B=2 C=unset")),
        (&["--pass-env", "PE_A, PE_B"], Ok("A=1 B=2 C=unset")),
        (&["--pass-env", "PE_A", "--pass-env", "PE_C"], Ok("A=1 B=unset C=3")),
        (&["--pass-env", "PE_A,PE_B", "--pass-env", " PE_C "], Ok("A=1 B=2 C=3")),
        (&["--pass-env", "PE_A,,PE_B"], Err("ws2http: error: --pass-env \"PE_A,,PE_B\": \"\" is not a variable name")),
        (
            &["--pass-env", "PE_A;PE_B"],
            Err("ws2http: error: --pass-env \"PE_A;PE_B\": \"PE_A;PE_B\" is not a variable"),
        ),
        (&["--pass-env", "PE_A,1X"], Err("ws2http: error: --pass-env \"PE_A,1X\": \"1X\" is not a variable name")),
    ];
    for (flags, want) in cases {
        let (t, s) = (with_try(flags), with_server(flags));
        assert_eq!(t, s, "{flags:?}: try and the server differ");
        match (want, t) {
            (Ok(w), Ok(got)) => assert_eq!(got, w, "{flags:?}"),
            (Err(w), Err(got)) => assert!(got.starts_with(w) && !got.contains('\n'), "{flags:?}: {got}"),
            (w, got) => panic!("{flags:?}: wanted {w:?}, got {got:?}"),
        }
    }
}
