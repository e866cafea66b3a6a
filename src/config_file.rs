//! `--config ws2http.toml`: every flag as a key (`listen = "0.0.0.0:8080"`,
//! `handler = ["php=php-cgi"]`, `max-procs = 8`; `_` and `-` both work).
//! Precedence: defaults < config file < `WS2HTTP_*` variables < flags.
//!
//! The file is turned into flag arguments placed before the command line,
//! so clap validates every value exactly as if it had been typed.

use std::ffi::OsString;

use clap::CommandFactory;
use toml::Value;

use crate::config::Cli;

/// The command line with the config file's settings inserted, or an error
/// for the user. Without `--config` (or `WS2HTTP_CONFIG`) it is unchanged.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    // Subcommands take no server settings: a config file must not leak into them.
    if text.get(1).is_some_and(|a| ["try", "completions", "man"].contains(&a.as_str())) {
        return Ok(args);
    }
    let mut path = std::env::var("WS2HTTP_CONFIG").ok();
    let mut rest: Vec<OsString> = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let a = &text[i];
        if a == "--config" {
            path = Some(text.get(i + 1).cloned().ok_or("--config needs a file name")?);
            i += 2;
            continue;
        }
        if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.to_owned());
            i += 1;
            continue;
        }
        rest.push(args[i].clone());
        i += 1;
    }
    let Some(path) = path else { return Ok(rest) };
    let body = std::fs::read_to_string(&path).map_err(|e| format!("--config {path}: {e}"))?;
    let table: toml::Table = body.parse().map_err(|e| format!("--config {path}: {e}"))?;
    let on_command_line: Vec<String> = text
        .iter()
        .filter_map(|a| a.strip_prefix("--").map(|f| f.split('=').next().unwrap_or("").to_owned()))
        .collect();
    let cmd = Cli::command();
    let mut inserted: Vec<OsString> = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let known = cmd.get_arguments().find(|a| a.get_long() == Some(flag.as_str()));
        let Some(arg) = known else {
            if flag == "script" {
                // The positional SCRIPT.
                if let Value::String(s) = &value {
                    if !text.iter().skip(1).any(|a| !a.starts_with('-')) {
                        rest.push(s.into());
                    }
                    continue;
                }
            }
            return Err(format!(
                "--config {path}: unknown setting {key:?} (settings are the long flags, e.g. max-procs)"
            ));
        };
        // Flags win, then environment variables.
        if on_command_line.contains(&flag) {
            continue;
        }
        if let Some(env) = arg.get_env() {
            if std::env::var_os(env).is_some() {
                continue;
            }
        }
        let values: Vec<String> = match value {
            Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>(),
            v => scalar(&v).map(|s| vec![s]),
        }
        .map_err(|e| format!("--config {path}: {key}: {e}"))?;
        if flag == "verbose" {
            let n: usize = values.first().and_then(|v| v.parse().ok()).unwrap_or(0);
            inserted.extend(std::iter::repeat_n(OsString::from("--verbose"), n));
            continue;
        }
        for v in values {
            inserted.push(format!("--{flag}={v}").into());
        }
    }
    let mut out = vec![rest.first().cloned().unwrap_or_else(|| "ws2http".into())];
    out.extend(inserted);
    out.extend(rest.into_iter().skip(1));
    Ok(out)
}

fn scalar(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("{other} is not a plain value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(cli.listen, "127.0.0.1:8080");
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
    fn unknown_keys_and_bad_files_are_clear_errors() {
        assert!(run("max_prcs = 8\n", &[]).unwrap_err().contains("unknown setting \"max_prcs\""));
        assert!(run("listen = \n", &[]).is_err());
        assert!(run("verbose = 2\n", &[]).expect("valid").iter().filter(|a| *a == "--verbose").count() == 2);
    }
}
