//! Where each setting came from: the command line, a `WS2HTTP_*` variable or
//! the config file. Precedence is fixed (defaults < config file < variables
//! < command line; the last of a flag repeated on the command line), and a
//! setting given in more than one place is not an error: it is reported at
//! start-up with one log line naming the flag and the value that won, so a
//! forgotten line in a config file cannot silently override what the user
//! thinks they run. An error about a value that came from the config file
//! names the file, the line and the key instead of the flag.

use std::ffi::OsString;

use clap::CommandFactory;

use crate::config::Cli;
use crate::config_file::{ConfigFile, Setting};

/// The command line to hand to clap, and what to say about it.
#[derive(Debug, Default)]
pub struct Expanded {
    pub args: Vec<OsString>,
    /// Start-up log lines (level, text), logged once logging is set up.
    pub notes: Vec<(log::Level, String)>,
    file: Option<ConfigFile>,
}

/// One flag given on the command line.
struct Given {
    flag: String,
    value: Option<String>,
}

impl Expanded {
    /// `err` (an error from checking the settings), with the file, line and
    /// key in front when the first flag it names came from the config file.
    pub fn explain(&self, err: String) -> String {
        let Some(file) = &self.file else { return err };
        let first_flag = err
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .find_map(|w| w.strip_prefix("--").filter(|f| !f.is_empty()));
        let setting = match first_flag {
            Some(flag) => file.settings.iter().find(|s| s.flag == flag && self.came_from_file(flag)),
            None if err.starts_with("script ") => file.settings.iter().find(|s| s.flag == "script"),
            None => None,
        };
        match setting {
            Some(s) => format!("{}: {err}", file.place(s)),
            None => err,
        }
    }

    /// `true` when the value clap saw for `flag` is the config file's.
    fn came_from_file(&self, flag: &str) -> bool {
        let prefix = format!("--{flag}=");
        let n = self.file.as_ref().map_or(0, |f| f.settings.iter().filter(|s| s.flag == flag).count());
        n > 0 && self.args.iter().any(|a| a.to_string_lossy().starts_with(&prefix))
    }
}

/// The command line with the config file's settings inserted before it
/// (those the command line or a variable does not override), and the notes
/// about settings given twice. Subcommands (`try`, `connect`, ...) are left
/// alone: the file configures the server.
pub fn expand(args: Vec<OsString>) -> Result<Expanded, String> {
    let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let cmd = Cli::command();
    if text.get(1).is_some_and(|a| cmd.find_subcommand(a).is_some()) {
        return Ok(Expanded { args, ..Default::default() });
    }
    let scanned = scan(&cmd, &args, &text)?;
    let (given, rest) = (&scanned.given, &scanned.rest);
    let mut out = Expanded::default();
    note_repeats(&cmd, given, &mut out.notes);
    let path = scanned.config.clone().or_else(|| std::env::var("WS2HTTP_CONFIG").ok());
    let file = path.as_deref().map(crate::config_file::read).transpose()?;
    let mut inserted: Vec<OsString> = Vec::new();
    let mut script_from_file = None;
    for s in file.iter().flat_map(|f| f.settings.iter()) {
        let place = file.as_ref().map(|f| f.place(s)).unwrap_or_default();
        if s.flag == "script" {
            script_from_file = Some((s.values[0].clone(), place));
            continue;
        }
        if let Some(winner) = winner_over_file(&cmd, s, given) {
            out.notes.push((log::Level::Info, format!("--{}: {winner} wins over {place}", s.flag)));
            continue;
        }
        if s.flag == "verbose" {
            let n: usize = s.values[0].parse().unwrap_or(0);
            inserted.extend(std::iter::repeat_n(OsString::from("--verbose"), n));
            continue;
        }
        if is_switch(&cmd, &s.flag) {
            // A switch (`no-console = true`): present or not.
            if s.values.iter().any(|v| v == "true") {
                inserted.push(format!("--{}", s.flag).into());
            }
            continue;
        }
        inserted.extend(s.values.iter().map(|v| OsString::from(format!("--{}={v}", s.flag))));
    }
    out.args = vec![rest.first().cloned().unwrap_or_else(|| "ws2http".into())];
    out.args.extend(inserted);
    out.args.extend(rest.iter().skip(1).cloned());
    script_note(&scanned, script_from_file, &mut out);
    out.file = file;
    Ok(out)
}

/// The command line, read the way clap will read it.
struct Scanned {
    /// Flags given, in order.
    given: Vec<Given>,
    /// `--config`'s value.
    config: Option<String>,
    /// The command line without `--config`.
    rest: Vec<OsString>,
    /// A positional argument (SCRIPT) is present.
    script: bool,
}

fn scan(cmd: &clap::Command, args: &[OsString], text: &[String]) -> Result<Scanned, String> {
    let mut out = Scanned { given: Vec::new(), config: None, rest: Vec::with_capacity(args.len()), script: false };
    let mut i = 0;
    while i < args.len() {
        let a = &text[i];
        if a == "--" {
            out.script |= i + 1 < args.len();
            out.rest.extend(args[i..].iter().cloned());
            break;
        }
        if i == 0 || !a.starts_with("--") {
            out.script |= i > 0 && !a.starts_with('-');
            out.rest.push(args[i].clone());
            i += 1;
            continue;
        }
        let (flag, inline) = match a[2..].split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (a[2..].to_owned(), None),
        };
        let takes_value = cmd
            .get_arguments()
            .find(|x| x.get_long() == Some(flag.as_str()))
            .is_some_and(|x| x.get_action().takes_values());
        let n = if inline.is_none() && takes_value { 2 } else { 1 };
        let value = inline.or_else(|| (n == 2).then(|| text.get(i + 1).cloned()).flatten());
        if flag == "config" {
            out.config = Some(value.ok_or("--config needs a file name")?);
        } else {
            out.rest.extend(args[i..(i + n).min(args.len())].iter().cloned());
            out.given.push(Given { flag, value });
        }
        i += n;
    }
    Ok(out)
}

/// A flag the command line gives while its variable is set too: the command
/// line wins; a flag that takes one value, repeated: the last wins.
fn note_repeats(cmd: &clap::Command, given: &[Given], notes: &mut Vec<(log::Level, String)>) {
    let mut seen: Vec<&str> = Vec::new();
    for g in given {
        if seen.contains(&g.flag.as_str()) {
            continue;
        }
        seen.push(&g.flag);
        let Some(arg) = cmd.get_arguments().find(|x| x.get_long() == Some(g.flag.as_str())) else { continue };
        if let Some(env) = arg.get_env().filter(|e| std::env::var_os(e).is_some()) {
            let last = given.iter().rev().find(|x| x.flag == g.flag).and_then(|x| x.value.as_deref());
            let env_value = std::env::var_os(env).unwrap_or_default();
            notes.push((
                log::Level::Info,
                format!(
                    "--{}: the command line's {} wins over {}={}",
                    g.flag,
                    last.map_or_else(|| "value".to_owned(), |v| shown(arg, v)),
                    env.to_string_lossy(),
                    shown(arg, &env_value.to_string_lossy())
                ),
            ));
        }
        if !matches!(arg.get_action(), clap::ArgAction::Set) {
            continue;
        }
        let all: Vec<&Given> = given.iter().filter(|x| x.flag == g.flag).collect();
        if let [.., last] = all.as_slice() {
            if all.len() > 1 {
                let value = shown(arg, last.value.as_deref().unwrap_or(""));
                notes.push((
                    log::Level::Info,
                    format!("--{} given {} times on the command line: the last one, {value}, wins", g.flag, all.len()),
                ));
            }
        }
    }
}

/// What overrides a setting of the config file, if anything: the command
/// line (its last value) or the flag's variable.
fn winner_over_file(cmd: &clap::Command, s: &Setting, given: &[Given]) -> Option<String> {
    let arg = cmd.get_arguments().find(|x| x.get_long() == Some(s.flag.as_str()))?;
    if let Some(g) = given.iter().rev().find(|g| g.flag == s.flag) {
        return Some(match &g.value {
            Some(v) => format!("the command line's {}", shown(arg, v)),
            None => "the command line".to_owned(),
        });
    }
    let env = arg.get_env()?;
    let value = std::env::var_os(env)?;
    Some(format!("{}={}", env.to_string_lossy(), shown(arg, &value.to_string_lossy())))
}

/// A value as a log line may show it (never a secret).
fn shown(arg: &clap::Arg, v: &str) -> String {
    if arg.is_hide_env_values_set() {
        "(hidden)".to_owned()
    } else {
        format!("{v:?}")
    }
}

/// SCRIPT and `--cgi-bin` together: single-script mode wins, said once.
/// The file's `script` is used only when neither the command line nor
/// `WS2HTTP_SCRIPT` gives one.
fn script_note(scanned: &Scanned, from_file: Option<(String, String)>, out: &mut Expanded) {
    let elsewhere = scanned.script || std::env::var_os("WS2HTTP_SCRIPT").is_some();
    let mut script = elsewhere;
    if let Some((path, place)) = from_file {
        if elsewhere {
            out.notes.push((
                log::Level::Info,
                format!("SCRIPT: the command line's (or WS2HTTP_SCRIPT's) wins over {place}"),
            ));
        } else {
            out.args.push(path.into());
            script = true;
        }
    }
    let cgi_bin = scanned.given.iter().any(|g| g.flag == "cgi-bin")
        || std::env::var_os("WS2HTTP_CGI_BIN").is_some()
        || out.args.iter().any(|a| a.to_string_lossy().starts_with("--cgi-bin="));
    if script && cgi_bin {
        out.notes.push((
            log::Level::Warn,
            "both SCRIPT and --cgi-bin are given: SCRIPT wins and handles every path, --cgi-bin is ignored \
             (leave out one of them)"
                .to_owned(),
        ));
    }
}

/// A flag that takes no value (`--no-console`).
fn is_switch(cmd: &clap::Command, flag: &str) -> bool {
    cmd.get_arguments().any(|a| a.get_long() == Some(flag) && !a.get_action().takes_values())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line with the file's settings inserted.
    fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
        super::expand(args).map(|e| e.args)
    }

    fn run(file: &str, cli: &[&str]) -> Result<Vec<String>, String> {
        let path = std::env::temp_dir().join(format!("ws2http-config-{}.toml", crate::id::ConnId::random()));
        std::fs::write(&path, file).expect("write config");
        let mut args: Vec<OsString> = vec!["ws2http".into(), "--config".into(), path.clone().into()];
        args.extend(cli.iter().map(OsString::from));
        let out = expand(args).map(|v| v.into_iter().map(|a| a.to_string_lossy().into_owned()).collect());
        let _ = std::fs::remove_file(path);
        out
    }

    #[test]
    fn the_example_config_in_contrib_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/ws2http.toml");
        let args = expand(vec!["ws2http".into(), "--config".into(), path.into()]).expect("valid");
        let cli = <crate::config::Cli as clap::Parser>::try_parse_from(&args).expect("parses");
        assert_eq!(cli.allow_host, ["chat.example.org"]);
        assert_eq!(cli.allow_origin, ["https://chat.example.org"]);
        assert_eq!(cli.listen, ["127.0.0.1:8080"]);
    }

    #[test]
    fn settings_become_flags_and_flags_win() {
        let out = run(
            "max_procs = 8\nhandler = [\"php=php-cgi\", \"py=python3\"]\ntimeout = 2.5\nlisten = \"127.0.0.1:1\"\n",
            &["--listen", "127.0.0.1:2"],
        )
        .expect("valid");
        assert!(out.contains(&"--max-procs=8".to_owned()), "{out:?}");
        assert!(out.contains(&"--handler=php=php-cgi".to_owned()) && out.contains(&"--handler=py=python3".to_owned()));
        assert!(out.contains(&"--timeout=2.5".to_owned()));
        let events = run("events = [\"open\", \"message\"]\n", &[]).expect("valid");
        let cli = <crate::config::Cli as clap::Parser>::try_parse_from(&events).expect("parses");
        assert_eq!(cli.events, [crate::config::EventArg::Open, crate::config::EventArg::Message]);
        assert!(!out.iter().any(|a| a == "--listen=127.0.0.1:1"), "the flag overrides the file: {out:?}");
        assert_eq!(&out[out.len() - 2..], ["--listen", "127.0.0.1:2"]);
    }

    #[test]
    fn listen_is_a_list_and_the_command_line_replaces_the_files() {
        let parse =
            |out: Vec<String>| <crate::config::Cli as clap::Parser>::try_parse_from(out).expect("parses").listen;
        let file = "listen = [\"127.0.0.1:1\", \"[::1]:1\"]\n";
        assert_eq!(parse(run(file, &[]).expect("valid")), ["127.0.0.1:1", "[::1]:1"]);
        let flags = ["--listen", "127.0.0.1:2", "--listen=127.0.0.2:2,[::1]:2"];
        assert_eq!(parse(run(file, &flags).expect("valid")), ["127.0.0.1:2", "127.0.0.2:2", "[::1]:2"]);
        let mut notes = Vec::new();
        let given = |v: &str| Given { flag: "listen".into(), value: Some(v.into()) };
        note_repeats(&crate::config::Cli::command(), &[given("1"), given("2")], &mut notes);
        assert!(notes.iter().all(|(_, n)| !n.contains("wins")), "every --listen counts: {notes:?}");
    }

    #[test]
    fn unknown_keys_and_bad_files_are_clear_errors() {
        let e = run("\nmax_prcs = 8\n", &[]).unwrap_err();
        assert!(
            e.ends_with(
                "line 2, key max_prcs: unknown setting (settings are the long flags without --, e.g. max-procs = 8)"
            ),
            "{e}"
        );
        assert!(run("listen = \n", &[]).is_err());
        assert!(run("verbose = 2\n", &[]).expect("valid").iter().filter(|a| *a == "--verbose").count() == 2);
        let e = run("timeout = 1\nmax-procs = \"many\"\n", &[]).unwrap_err();
        assert!(e.ends_with("line 2, key max-procs: invalid value \"many\": invalid digit found in string"), "{e}");
        let e = run("events = \"open,talk\"\n", &[]).unwrap_err();
        assert!(
            e.ends_with("line 1, key events: invalid value \"talk\": expected one of open, message, close, resume"),
            "{e}"
        );
        let e = run("api-listen = [\"a:1\", \"b:2\"]\n", &[]).unwrap_err();
        assert!(e.contains("key api-listen: takes one value, not a list"), "{e}");
    }
}
