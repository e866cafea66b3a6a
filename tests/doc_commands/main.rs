//! Every command in README.md, docs/*.md and examples/**/*.md runs here, for
//! real, against the binary under test, and prints what the docs show: docs
//! that are pasted into a terminal must work as printed. A block the harness
//! cannot place fails the run, so a new doc cannot escape it.
//!
//! # How to write a command in the docs
//!
//! - Fence commands as ```` ```sh ```` (commands; output, if shown, as `# ...`
//!   comment lines right below the command, compared without white space) or
//!   ```` ```console ```` (`$ command`, then exactly the lines it prints).
//!   A `#!` first line makes a ```` ```sh ```` block a script, not commands.
//!   Anything that is not a command: ```` ```text ````, ```` ```ini ````, ....
//! - Write `ws2http ...`; `cargo run --release -- ...` also works (both run the
//!   binary under test). A `ws2http` without a subcommand starts a server:
//!   the blocks after it, in the same file, talk to it. Use the default
//!   ports 8080 and 8081 (and `127.0.0.1`): they become the server's ports.
//! - Varying values in shown output: write `...` for any text (a line `...`
//!   alone: any number of lines); a 32-hex-digit id, an RFC 3339 time or a
//!   duration (`3.1ms`) matches any other of its kind.
//! - What the harness cannot infer goes in a note right before the block,
//!   `<!-- doc-test: KEYWORD ARGS -->`, or one `KEYWORD ARGS` per line:
//!   - `skip REASON`: never run here (a benchmark, an install); shown as
//!     ignored with the reason. Required for a command that changes the
//!     machine (`sudo`, `install`, `systemctl`, `dpkg`, `cargo install`, a
//!     redirect to a file outside /tmp) or runs the tests (`cargo test`):
//!     the harness refuses to run those;
//!   - `input LINE` (repeatable): a line the reader types; in a console
//!     transcript it is typed when reached, and output lines are awaited;
//!     stdin then ends (Ctrl-D) and the command must exit 0;
//!   - `background`: the command keeps running while the file goes on (a
//!     second terminal); its first shown line is awaited first, the rest by
//!     the end of the scenario;
//!   - `server ARGS`: start `ws2http ARGS` before this block;
//!   - `connection ID /path?query`: connect a WebSocket client first; `ID`
//!     in the block stands for its real connection id.
//!
//! Run one file: `cargo test --test doc_commands -- README`.

#[path = "../common/mod.rs"]
mod common;
mod matching;
mod parse;
mod run;

use std::path::{Path, PathBuf};

use parse::{Block, Kind};

/// The Markdown files whose commands are run.
fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut md_in = |dir: &Path, deep: bool| {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() && deep {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "md") {
                    files.push(p);
                }
            }
        }
    };
    md_in(&root.join("docs"), false);
    md_in(&root.join("examples"), true);
    files.sort();
    files
}

/// One result line per block that is a command block, ignored or broken.
struct Outcome {
    name: String,
    result: Result<String, String>,
    ignored: Option<String>,
}

fn run_file(ctx: &run::Ctx, blocks: Vec<Block>) -> Vec<Outcome> {
    let mut sc = run::Scenario::default();
    let mut out = Vec::new();
    for b in blocks {
        let name = b.name();
        if let Some(reason) = &b.notes.skip {
            out.push(Outcome { name, result: Ok(String::new()), ignored: Some(reason.clone()) });
            continue;
        }
        let result = match parse::classify(&b) {
            Err(e) => Err(e),
            Ok(Kind::NotCommands | Kind::Script) => continue,
            Ok(Kind::Commands(steps)) => run::run_block(ctx, &mut sc, &b, steps).map(|earlier| {
                // A server starting ends the scenario before it.
                for e in earlier {
                    out.push(Outcome {
                        name: format!("{name} (ending the scenario before it)"),
                        result: Err(e),
                        ignored: None,
                    });
                }
                String::new()
            }),
        };
        let result = result.map_err(|e| format!("{e}\nserver log:\n{}", run::server_log(&sc)));
        out.push(Outcome { name, result, ignored: None });
    }
    for e in sc.finish() {
        out.push(Outcome { name: "end of file".into(), result: Err(e), ignored: None });
    }
    out
}

/// The harness's own checks: what it must refuse, how it matches.
fn self_test() -> Outcome {
    let result = std::panic::catch_unwind(|| {
        parse::self_test::a_block_the_harness_cannot_place_is_an_error();
        parse::self_test::commands_and_their_output_are_read();
        matching::self_test::placeholders_match_values_of_their_kind_only();
        run::self_test::commands_that_change_the_machine_are_refused();
    });
    let result = result.map(|_| String::new()).map_err(|_| "see the panic above".to_owned());
    Outcome { name: "the harness itself".into(), result, ignored: None }
}

fn main() {
    if std::env::var_os(run::NESTED).is_some() {
        eprintln!("doc_commands: a documented command ran the tests again; give its block a skip note");
        std::process::exit(1);
    }
    let mut outcomes = vec![self_test()];
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = common::scratch();
    let bin = std::env::var_os("WS2HTTP_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ws2http").into());
    std::os::unix::fs::symlink(root.join(bin), bin_dir.join("ws2http")).expect("link the binary under test");
    let ctx = std::sync::Arc::new(run::Ctx { root: root.clone(), bin_dir });
    let mut files = Vec::new();
    for path in doc_files(&root) {
        let rel = path.strip_prefix(&root).expect("under root").to_string_lossy().into_owned();
        if !filter.is_empty() && !filter.iter().any(|f| rel.contains(f.as_str())) {
            continue;
        }
        match parse::blocks(&rel, &std::fs::read_to_string(&path).expect("read a doc")) {
            Ok(blocks) => files.push((rel, blocks)),
            Err(e) => outcomes.push(Outcome { name: rel, result: Err(e), ignored: None }),
        }
    }
    // One thread per file: files share nothing (each starts its own servers).
    let threads: Vec<_> = files
        .into_iter()
        .map(|(rel, blocks)| {
            let ctx = ctx.clone();
            (rel, std::thread::spawn(move || run_file(&ctx, blocks)))
        })
        .collect();
    for (rel, t) in threads {
        match t.join() {
            Ok(o) => outcomes.extend(o),
            Err(_) => outcomes.push(Outcome { name: rel, result: Err("the harness panicked".into()), ignored: None }),
        }
    }
    std::process::exit(report(&outcomes));
}

/// Prints libtest-style lines and a summary; the exit code.
fn report(outcomes: &[Outcome]) -> i32 {
    println!("\nrunning {} doc blocks", outcomes.len());
    let (mut passed, mut failed, mut ignored) = (0, Vec::new(), 0);
    for o in outcomes {
        match (&o.ignored, &o.result) {
            (Some(why), _) => {
                ignored += 1;
                println!("test {} ... ignored, {why}", o.name);
            }
            (None, Ok(_)) => {
                passed += 1;
                println!("test {} ... ok", o.name);
            }
            (None, Err(e)) => {
                println!("test {} ... FAILED", o.name);
                failed.push(format!("---- {} ----\n{e}\n", o.name));
            }
        }
    }
    for f in &failed {
        println!("\n{f}");
    }
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    println!("\ntest result: {verdict}. {passed} passed; {} failed; {ignored} ignored\n", failed.len());
    i32::from(!failed.is_empty())
}
