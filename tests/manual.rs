//! `ws2http completions SHELL` and `ws2http man`: generated from clap, so
//! every flag `--help` lists must be in every completion script and in the
//! manual page, and the page must be valid roff that `man` renders.

mod common;
use common::*;
use ws2http_test_suite::suite;

use std::process::{Command, Stdio};

/// Runs `ws2http ARGS` and returns its stdout, asserting success and an
/// empty stderr.
fn run(args: &[&str]) -> String {
    let out = ws2http().args(args).stderr(Stdio::piped()).output().expect("run ws2http");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ws2http {args:?} failed: {err}");
    assert!(err.is_empty(), "ws2http {args:?} wrote to stderr: {err}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The long flags of `ws2http [SUBCOMMAND] --help`, without --help/--version.
fn long_flags(sub: &[&str]) -> Vec<String> {
    let mut args = sub.to_vec();
    args.push("--help");
    let help = run(&args);
    // The options, not the EXAMPLES at the end (they quote subcommands' flags).
    let help = help.split("\nEXAMPLES:").next().unwrap_or_default();
    let mut flags: Vec<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2 && !["--help", "--version"].contains(w))
        .map(str::to_owned)
        .collect();
    flags.sort_unstable();
    flags.dedup();
    flags
}

/// A tool the test needs, or a failure that says how to install it.
fn need(tool: &str, install: &str) {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    assert!(found, "{tool} is not installed: {install}");
}

#[test]
fn completions_name_every_flag_for_every_shell() {
    let flags = long_flags(&[]);
    assert!(flags.len() > 20, "too few flags in --help: {flags:?}");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = run(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: a short completion script:\n{script}");
        for flag in &flags {
            // fish names long options `-l NAME`, the others spell them out.
            let name = flag.trim_start_matches("--");
            let listed = script.contains(flag.as_str()) || script.contains(&format!("-l {name} "));
            assert!(listed, "{shell} completions do not mention {flag}");
        }
        for sub in ["try", "completions", "man"] {
            assert!(script.contains(sub), "{shell} completions do not mention the subcommand {sub}");
        }
    }
}

#[test]
fn bash_completion_completes_a_flag_and_a_shell_name() {
    need("bash", "apt-get install bash");
    let script = common::scratch().join("ws2http.bash");
    std::fs::write(&script, run(&["completions", "bash"])).expect("write the bash completion script");
    // What bash does on TAB after `ws2http --cgi` and `ws2http completions z`.
    let probe = format!(
        "source {}; \
         COMP_WORDS=(ws2http --cgi); COMP_CWORD=1; _ws2http ws2http --cgi ws2http; echo \"${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(ws2http completions z); COMP_CWORD=2; _ws2http ws2http z completions; echo \"${{COMPREPLY[*]}}\"",
        script.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().expect("run bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "--cgi-bin\nzsh\n", "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn completions_refuse_an_unknown_shell() {
    let out = ws2http().args(["completions", "tcsh"]).stderr(Stdio::piped()).output().expect("run ws2http");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

/// roff source with its escaped hyphens turned back into plain ones.
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-")
}

#[test]
fn man_page_names_every_flag_and_subcommand() {
    let page = run(&["man"]);
    assert!(page.contains(".TH ws2http 1"), "no .TH title line:\n{page}");
    for section in ["NAME", "SYNOPSIS", "OPTIONS", "SUBCOMMANDS", "FILES", "SEE ALSO"] {
        assert!(page.contains(&format!(".SH {section}")), "no {section} section");
    }
    let text = plain(&page);
    for flag in long_flags(&[]) {
        assert!(text.contains(&format!("\\fB{flag}\\fR")), "ws2http(1) does not describe {flag}");
    }
    for sub in ["ws2http-try(1)", "ws2http-completions(1)", "ws2http-man(1)"] {
        assert!(text.contains(&format!("\\fB{sub}")) || text.contains(sub), "ws2http(1) does not list {sub}");
    }
    let try_page = plain(&run(&["man", "try"]));
    assert!(try_page.contains(".TH ws2http-try 1"), "{try_page}");
    for flag in long_flags(&["try"]) {
        assert!(try_page.contains(&format!("\\fB{flag}\\fR")), "ws2http-try(1) does not describe {flag}");
    }
}

#[suite("man")]
#[test]
fn man_page_is_valid_roff_that_man_renders() {
    require_suite("man"); // groff and man (tests/suites.txt)
    let dir = common::scratch();
    run(&["man", "--out-dir", dir.to_str().expect("UTF-8 path")]);
    for page in ["ws2http.1", "ws2http-try.1", "ws2http-completions.1", "ws2http-man.1"] {
        let path = dir.join(page);
        assert!(path.is_file(), "man --out-dir did not write {page}");
        // -ww: every warning; -z: parse only. Valid roff prints nothing.
        let out = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(&path).output().expect("groff");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.is_empty(), "groff on {page}: {err}");
    }
    let out = Command::new("man")
        .arg("-l")
        .arg(dir.join("ws2http.1"))
        .env("MANWIDTH", "200")
        .env("MANPAGER", "cat")
        .output()
        .expect("man -l");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "man -l: {}", String::from_utf8_lossy(&out.stderr));
    for needle in ["SYNOPSIS", "--cgi-bin <DIR>", "/etc/ws2http/ws2http.toml", "ws2http-try(1)"] {
        assert!(text.contains(needle), "man -l output lacks {needle:?}:\n{text}");
    }
}

#[test]
fn man_names_the_subcommands_it_knows() {
    let out = ws2http().args(["man", "nope"]).stderr(Stdio::piped()).output().expect("run ws2http");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"nope\"") && err.contains("try"), "{err}");
}

#[test]
fn a_config_file_does_not_leak_into_man_or_completions() {
    // WS2HTTP_CONFIG would otherwise turn into server flags before the subcommand.
    let dir = common::scratch();
    let cfg = dir.join("ws2http.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\n").expect("write config");
    for args in [&["man"][..], &["completions", "bash"][..]] {
        let out = ws2http().args(args).env("WS2HTTP_CONFIG", &cfg).stderr(Stdio::piped()).output().expect("run");
        assert!(out.status.success(), "{args:?} with WS2HTTP_CONFIG: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn man_page_has_one_preformatted_examples_section_matching_help() {
    let page = run(&["man"]);
    assert!(!page.contains(".SH EXTRA"), "--help's after_help leaked into a section EXTRA");
    assert_eq!(page.matches(".SH EXAMPLES").count(), 1, "{page}");
    let section = page.split(".SH EXAMPLES\n").nth(1).expect("an EXAMPLES section");
    let body = section.strip_prefix(".nf\n").expect("EXAMPLES preformatted (.nf)");
    let body = plain(body.split("\n.fi\n").next().expect("a .fi after the examples"));
    // The same lines as --help's EXAMPLES, without their indent.
    let help = run(&["--help"]);
    let examples = help.split("EXAMPLES:\n").nth(1).expect("EXAMPLES in --help");
    let from_help: Vec<&str> = examples.lines().map(|l| l.strip_prefix("  ").unwrap_or(l)).collect();
    assert_eq!(body.lines().collect::<Vec<_>>(), from_help);
}
