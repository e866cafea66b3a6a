//! `--config ws2http.toml`: every flag as a key (`listen = "0.0.0.0:8080"`,
//! `handler = ["php=php-cgi"]`, `max-procs = 8`; `_` and `-` both work).
//! Precedence: defaults < config file < `WS2HTTP_*` variables < flags.
//!
//! The file is turned into flag arguments placed before the command line
//! (see [`crate::cli_sources`]), so clap checks every value exactly as if it
//! had been typed. Each value is also checked here first, by the flag's own
//! parser, so that a bad one is reported with the file, the line and the
//! key the user wrote rather than the flag it became.

use std::ffi::OsString;

use clap::CommandFactory;
use toml::{Spanned, Value};

use crate::config::Cli;

/// One key of the file.
#[derive(Debug, Clone)]
pub struct Setting {
    /// As written in the file (`max_procs`).
    pub key: String,
    /// The long flag it stands for, without dashes (`max-procs`); `script`
    /// for the positional SCRIPT.
    pub flag: String,
    pub values: Vec<String>,
    /// 1-based line of the value.
    pub line: usize,
}

/// A parsed config file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: String,
    pub settings: Vec<Setting>,
}

impl ConfigFile {
    /// "FILE line N, key KEY" for messages.
    pub fn place(&self, s: &Setting) -> String {
        format!("{} line {}, key {}", self.path, s.line, s.key)
    }
}

/// Reads and checks the file: known keys, values each flag accepts.
pub fn read(path: &str) -> Result<ConfigFile, String> {
    let body = std::fs::read_to_string(path).map_err(|e| format!("--config {path}: {e}"))?;
    let table: std::collections::BTreeMap<String, Spanned<Value>> =
        toml::from_str(&body).map_err(|e| format!("--config {path}: {}", syntax_error(&body, &e)))?;
    let cmd = Cli::command();
    let mut file = ConfigFile { path: path.to_owned(), settings: Vec::new() };
    for (key, value) in table {
        let line = body[..value.span().start.min(body.len())].matches('\n').count() + 1;
        let setting = Setting { key: key.clone(), flag: key.replace('_', "-"), values: Vec::new(), line };
        let values = match value.into_inner() {
            Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>(),
            v => scalar(&v).map(|s| vec![s]),
        }
        .map_err(|e| format!("{}: {e}", file.place(&setting)))?;
        let setting = Setting { values, ..setting };
        check(&cmd, &setting).map_err(|e| format!("{}: {e}", file.place(&setting)))?;
        file.settings.push(setting);
    }
    Ok(file)
}

/// A key names a flag (or `script`) and each value is one the flag accepts.
fn check(cmd: &clap::Command, s: &Setting) -> Result<(), String> {
    if s.flag == "script" {
        return match s.values.as_slice() {
            [_] => Ok(()),
            _ => Err("expected one path, e.g. script = \"cgi-bin/echo.sh\"".into()),
        };
    }
    let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(s.flag.as_str()) && s.flag != "config") else {
        return Err("unknown setting (settings are the long flags without --, e.g. max-procs = 8)".into());
    };
    if s.flag == "verbose" {
        return match s.values.as_slice() {
            [n] if n.parse::<u8>().is_ok() => Ok(()),
            _ => Err("expected a number, e.g. verbose = 1 (-v) or 2 (-vv)".into()),
        };
    }
    if !arg.get_action().takes_values() {
        // A switch (`no-console = true`): present or not.
        return match s.values.as_slice() {
            [v] if v == "true" || v == "false" => Ok(()),
            _ => Err(format!("expected true or false, e.g. {} = true", s.key)),
        };
    }
    let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
    if s.values.len() > 1 && !repeatable {
        return Err(format!("takes one value, not a list, e.g. {} = {:?}", s.key, s.values[0]));
    }
    // The flag alone (no variable behind it, no relation to flags that are
    // not in this one-flag command: `--tls-cert` requires `--tls-key`),
    // parsed as clap would. The relations are checked on the whole command.
    use clap::builder::Resettable::Reset;
    let alone = arg.clone().env(None::<&'static str>).requires(Reset).conflicts_with(Reset).overrides_with(Reset);
    let one = clap::Command::new("ws2http").arg(alone);
    for v in &s.values {
        let parts: Vec<&str> = match arg.get_value_delimiter() {
            Some(d) => v.split(d).collect(),
            None => vec![v.as_str()],
        };
        for part in parts {
            let flag = OsString::from(format!("--{}={part}", s.flag));
            one.clone()
                .try_get_matches_from([OsString::from("ws2http"), flag])
                .map_err(|e| format!("invalid value {part:?}: {}", reason(&e)))?;
        }
    }
    Ok(())
}

/// Why clap refused a value, without its `error:` framing and usage.
fn reason(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("expected one of {}", valid.join(", "));
    }
    if let Some(src) = std::error::Error::source(e) {
        return src.to_string();
    }
    one_line(e.to_string().trim_start_matches("error: "))
}

/// A TOML syntax error in one line: where it is and what is wrong there
/// (toml's own text spreads them over several lines, the cause last).
fn syntax_error(body: &str, e: &toml::de::Error) -> String {
    let what = one_line(e.message());
    let Some(at) = e.span().map(|s| s.start.min(body.len())) else {
        return format!("TOML syntax error: {what}");
    };
    let before = &body[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("TOML syntax error at line {line}, column {column}: {what}")
}

/// The first line of a multi-line message.
fn one_line(s: &str) -> String {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_owned()
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
