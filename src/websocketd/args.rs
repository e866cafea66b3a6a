//! websocketd 0.4.1's command line, parsed as Go's `flag` package parses it:
//! one or two dashes (`-port` = `--port`), a value after `=` or as the next
//! argument, boolean flags true when named alone (`--binary`) and given a
//! value only with `=` (`--binary=false`: `--binary false` makes `false` the
//! COMMAND, as in Go), the last of a repeated flag winning, and parsing
//! stopping at the first argument that is not a flag (`COMMAND [ARGS...]`,
//! whose own flags are its own) or at `--`.
//!
//! [`normalise`] rewrites that syntax into the one clap reads
//! (`--name=value ... -- COMMAND ARGS`), so clap checks and types the values
//! and writes `--help`; a flag websocketd does not have is refused here with
//! Go's own wording.

use clap::{ArgAction, Parser};

/// The flags websocketd 0.4.1 defines, and whether each is boolean.
pub const FLAGS: &[(&str, bool)] = &[
    ("address", false),
    ("binary", true),
    ("cgidir", false),
    ("closems", false),
    ("devconsole", true),
    ("dir", false),
    ("header", false),
    ("header-http", false),
    ("header-ws", false),
    ("license", true),
    ("loglevel", false),
    ("maxforks", false),
    ("origin", false),
    ("passenv", false),
    ("port", false),
    ("redirport", false),
    ("reverselookup", true),
    ("sameorigin", true),
    ("ssl", true),
    ("sslcert", false),
    ("sslkey", false),
    ("staticdir", false),
    ("version", true),
];

/// A command line websocketd would have refused (Go's wording, then where
/// to look).
#[derive(Debug, PartialEq, Eq)]
pub struct ArgError(pub String);

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; see websocketd --help", self.0)
    }
}

/// Go's flag syntax (`args` without the program name) → clap's: every flag
/// as `--name=value` (so a value may start with `-`), `--help` kept, then
/// `--` and the command with its arguments untouched.
pub fn normalise(args: &[String]) -> Result<Vec<String>, ArgError> {
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            break;
        }
        // `-` alone, and anything not starting with `-`, is the COMMAND.
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')).filter(|f| !f.is_empty()) else {
            i -= 1;
            break;
        };
        if flag.starts_with('-') || flag.starts_with('=') {
            return Err(ArgError(format!("bad flag syntax: {arg}")));
        }
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        if matches!(name, "help" | "h") {
            out.push("--help".to_owned());
            continue;
        }
        let Some(&(_, boolean)) = FLAGS.iter().find(|(n, _)| *n == name) else {
            return Err(ArgError(format!("flag provided but not defined: -{name}")));
        };
        let value = match (value, boolean) {
            (Some(v), _) => v,
            (None, true) => "true".to_owned(),
            (None, false) => match args.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => return Err(ArgError(format!("flag needs an argument: -{name}"))),
            },
        };
        out.push(format!("--{name}={value}"));
    }
    if i < args.len() {
        out.push("--".to_owned());
        out.extend(args[i..].iter().cloned());
    }
    Ok(out)
}

/// Go's `strconv.ParseBool`, which `flag` uses for `--name=VALUE`.
fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {s:?} (true or false)")),
    }
}

/// websocketd 0.4.1's options (their help text is websocketd's, shortened,
/// with what ws2http does differently).
#[derive(Parser, Debug, Default)]
#[command(
    name = "websocketd",
    about = "ws2http running websocketd 0.4.1's command line: every connection runs COMMAND (or a script of --dir) \
             and talks to it over stdin/stdout",
    override_usage = "websocketd [OPTIONS] COMMAND [ARGS...]\n       websocketd [OPTIONS] --dir=DIR",
    after_help = "Differences from websocketd: README.md, \"Coming from websocketd\". \
                  `ws2http --help` lists what ws2http adds.",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct WsdArgs {
    /// HTTP port to listen on [default: 80]
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Interface to bind to (e.g. 127.0.0.1 or [::1]) [default: all IPv4 interfaces]; repeatable:
    /// one listener per address, all on --port
    #[arg(long, value_name = "ADDRESS")]
    pub address: Vec<String>,
    /// Restrict upgrades to pages whose Origin names this server's Host
    /// (ws2http does this without the flag too)
    #[arg(long, value_name = "BOOL", value_parser = go_bool, default_missing_value = "true", num_args = 0..=1)]
    pub sameorigin: Option<bool>,
    /// Restrict upgrades to pages of these origins: host[:port][,host[:port]...]; `*` allows any
    #[arg(long, value_name = "LIST")]
    pub origin: Option<String>,
    /// Listen for HTTPS (with --sslcert and --sslkey: ws2http's --tls-cert, --tls-key)
    #[arg(long, value_name = "BOOL", value_parser = go_bool, default_missing_value = "true", num_args = 0..=1)]
    pub ssl: Option<bool>,
    /// Certificate PEM file for --ssl
    #[arg(long, value_name = "FILE")]
    pub sslcert: Option<String>,
    /// Private key PEM file for --ssl
    #[arg(long, value_name = "FILE")]
    pub sslkey: Option<String>,
    /// HTTP port redirecting to --port (not supported)
    #[arg(long, value_name = "PORT")]
    pub redirport: Option<u16>,
    /// Variables passed to scripts, all others cleaned out [default: PATH,LD_LIBRARY_PATH]
    #[arg(long, value_name = "VAR[,VAR...]")]
    pub passenv: Option<String>,
    /// Binary mode: output goes out as binary messages as it comes; messages reach stdin as they are
    #[arg(long, value_name = "BOOL", value_parser = go_bool, default_missing_value = "true", num_args = 0..=1)]
    pub binary: Option<bool>,
    /// Reverse DNS lookups of clients (not done: REMOTE_HOST is the address)
    #[arg(long, value_name = "BOOL", value_parser = go_bool, default_missing_value = "true", num_args = 0..=1)]
    pub reverselookup: Option<bool>,
    /// Every executable in DIR is a WebSocket endpoint (no COMMAND then)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<String>,
    /// Serve static files from DIR over HTTP
    #[arg(long, value_name = "DIR")]
    pub staticdir: Option<String>,
    /// Serve CGI scripts from DIR over HTTP
    #[arg(long, value_name = "DIR")]
    pub cgidir: Option<String>,
    /// WebSocket processes at once (beyond: 429); also the bound of CGI scripts running at once (beyond:
    /// they wait) [default: 0, which is ws2http's 128, not unlimited]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub maxforks: Option<i64>,
    /// Extra milliseconds a process gets after its client left before the signals
    #[arg(long, value_name = "MS")]
    pub closems: Option<u64>,
    /// A header on every response, e.g. "Server: someserver/0.0.1" (repeatable)
    #[arg(long, value_name = "NAME: VALUE")]
    pub header: Vec<String>,
    /// A header on successful upgrades only (repeatable)
    #[arg(long = "header-ws", value_name = "NAME: VALUE")]
    pub header_ws: Vec<String>,
    /// A header on every response but successful upgrades (repeatable)
    #[arg(long = "header-http", value_name = "NAME: VALUE")]
    pub header_http: Vec<String>,
    /// Print the version and exit
    #[arg(long, value_name = "BOOL", value_parser = go_bool, default_missing_value = "true", num_args = 0..=1)]
    pub version: Option<bool>,
    /// Print the license and exit
    #[arg(long, value_name = "BOOL", value_parser = go_bool, default_missing_value = "true", num_args = 0..=1)]
    pub license: Option<bool>,
    /// Serve the development console (ws2http's, at /)
    #[arg(long, value_name = "BOOL", value_parser = go_bool, default_missing_value = "true", num_args = 0..=1)]
    pub devconsole: Option<bool>,
    /// debug, trace, access, info, error or fatal [default: access]
    #[arg(long, value_name = "LEVEL")]
    pub loglevel: Option<String>,
    /// The program each connection runs (looked up in PATH), and its arguments
    #[arg(value_name = "COMMAND", trailing_var_arg = true, allow_hyphen_values = true, action = ArgAction::Append)]
    pub command: Vec<String>,
}

impl WsdArgs {
    /// Parses websocketd's arguments (without the program name); `Err`
    /// carries clap's error (help and bad values included) or ours.
    pub fn parse_go(args: &[String]) -> Result<WsdArgs, ParseError> {
        let normal = normalise(args).map_err(ParseError::Go)?;
        let argv = std::iter::once("websocketd".to_owned()).chain(normal);
        WsdArgs::try_parse_from(argv).map_err(ParseError::Clap)
    }
}

/// A clap refusal of a value in one line with Go's `flag` wording
/// (`invalid value "abc" for flag -port: ...`), then where to look; other
/// refusals: clap's first line.
pub fn one_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let flag = text(ContextKind::InvalidArg).map(|a| a.split([' ', '=']).next().unwrap_or_default().to_owned());
    match (flag, text(ContextKind::InvalidValue)) {
        (Some(flag), Some(value)) => {
            let why = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
            ArgError(format!("invalid value {value:?} for flag -{}{why}", flag.trim_start_matches('-'))).to_string()
        }
        _ => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            ArgError(first.trim_start_matches("error: ").to_owned()).to_string()
        }
    }
}

/// Why a command line did not parse.
#[derive(Debug)]
pub enum ParseError {
    /// Go's flag package would have refused it too.
    Go(ArgError),
    /// A bad value, or `--help` (clap prints both).
    Clap(clap::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn parse(args: &[&str]) -> WsdArgs {
        match WsdArgs::parse_go(&v(args)) {
            Ok(a) => a,
            Err(ParseError::Go(e)) => panic!("{args:?}: {e}"),
            Err(ParseError::Clap(e)) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn a_bad_value_is_one_line_in_go_words() {
        for (arg, want) in [
            ("--port=abc", "invalid value \"abc\" for flag -port: invalid digit found in string"),
            ("--closems=-5", "invalid value \"-5\" for flag -closems: invalid digit found in string"),
            ("--binary=maybe", "invalid value \"maybe\" for flag -binary: invalid boolean value \"maybe\""),
        ] {
            match WsdArgs::parse_go(&v(&[arg, "cat"])) {
                Err(ParseError::Clap(e)) => {
                    let line = one_line(&e);
                    assert!(line.starts_with(want) && line.ends_with("; see websocketd --help"), "{line}");
                    assert_eq!(line.lines().count(), 1, "{line}");
                }
                other => panic!("{arg}: {other:?}"),
            }
        }
    }

    #[test]
    fn one_or_two_dashes_equals_or_next_argument() {
        for args in [
            &["--port=8080", "./count.sh"][..],
            &["--port", "8080", "./count.sh"],
            &["-port=8080", "./count.sh"],
            &["-port", "8080", "./count.sh"],
        ] {
            let a = parse(args);
            assert_eq!((a.port, a.command.clone()), (Some(8080), v(&["./count.sh"])), "{args:?}");
        }
    }

    #[test]
    fn every_flag_parses() {
        let a = parse(&[
            "--port=1",
            "--address=127.0.0.1",
            "--address",
            "[::1]",
            "--sameorigin",
            "--origin=a.example,b.example:8080",
            "--ssl=false",
            "--redirport=2",
            "--passenv=PATH,HOME",
            "--binary",
            "--reverselookup=false",
            "--dir=d",
            "--staticdir=s",
            "--cgidir=c",
            "--maxforks=-1",
            "--closems=250",
            "--header=Server: x",
            "--header-ws",
            "X-Ws: 1",
            "--header-http=X-Http: 2",
            "--devconsole=1",
            "--loglevel=debug",
        ]);
        assert_eq!(a.port, Some(1));
        assert_eq!(a.address, v(&["127.0.0.1", "[::1]"]));
        assert_eq!(a.sameorigin, Some(true));
        assert_eq!(a.origin.as_deref(), Some("a.example,b.example:8080"));
        assert_eq!((a.ssl, a.redirport), (Some(false), Some(2)));
        assert_eq!(a.passenv.as_deref(), Some("PATH,HOME"));
        assert_eq!((a.binary, a.reverselookup), (Some(true), Some(false)));
        assert_eq!((a.dir.as_deref(), a.staticdir.as_deref(), a.cgidir.as_deref()), (Some("d"), Some("s"), Some("c")));
        assert_eq!((a.maxforks, a.closems), (Some(-1), Some(250)));
        assert_eq!((a.header, a.header_ws, a.header_http), (v(&["Server: x"]), v(&["X-Ws: 1"]), v(&["X-Http: 2"])));
        assert_eq!((a.devconsole, a.loglevel.as_deref()), (Some(true), Some("debug")));
        assert!(a.command.is_empty());
        let a = parse(&["-sslcert", "c.pem", "-sslkey=k.pem", "-ssl", "-version", "-license", "x"]);
        assert_eq!((a.sslcert.as_deref(), a.sslkey.as_deref()), (Some("c.pem"), Some("k.pem")));
        assert_eq!((a.ssl, a.version, a.license), (Some(true), Some(true), Some(true)));
    }

    #[test]
    fn the_command_keeps_its_own_flags_and_the_last_repeat_wins() {
        let a = parse(&["--port=1", "--port=2", "python3", "-u", "--port=3", "count.py"]);
        assert_eq!(a.port, Some(2));
        assert_eq!(a.command, v(&["python3", "-u", "--port=3", "count.py"]));
        let a = parse(&["--", "-weird", "x"]);
        assert_eq!(a.command, v(&["-weird", "x"]));
        // A value may start with a dash.
        let a = parse(&["--header", "-x: 1", "cat"]);
        assert_eq!(a.header, v(&["-x: 1"]));
    }

    #[test]
    fn a_boolean_takes_a_value_only_after_equals() {
        let a = parse(&["--binary", "false"]);
        assert_eq!((a.binary, a.command), (Some(true), v(&["false"])));
        for (arg, want) in [("--binary=false", false), ("--binary=0", false), ("--binary=T", true)] {
            assert_eq!(parse(&[arg, "cat"]).binary, Some(want), "{arg}");
        }
        assert!(matches!(WsdArgs::parse_go(&v(&["--binary=yes", "cat"])), Err(ParseError::Clap(_))));
    }

    #[test]
    fn errors_use_gos_words() {
        let err = |args: &[&str]| match WsdArgs::parse_go(&v(args)) {
            Err(ParseError::Go(e)) => e.to_string(),
            other => panic!("{args:?}: {other:?}"),
        };
        assert_eq!(err(&["--listen=1", "cat"]), "flag provided but not defined: -listen; see websocketd --help");
        assert_eq!(err(&["--port"]), "flag needs an argument: -port; see websocketd --help");
        assert_eq!(err(&["---port=1"]), "bad flag syntax: ---port=1; see websocketd --help");
        assert!(matches!(WsdArgs::parse_go(&v(&["--port=x", "cat"])), Err(ParseError::Clap(_))));
        assert!(matches!(WsdArgs::parse_go(&v(&["--port=70000", "cat"])), Err(ParseError::Clap(_))));
        let help = WsdArgs::parse_go(&v(&["-h"]));
        assert!(matches!(help, Err(ParseError::Clap(e)) if e.kind() == clap::error::ErrorKind::DisplayHelp));
    }
}
