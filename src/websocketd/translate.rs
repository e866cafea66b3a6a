//! websocketd's options → a ws2http [`Config`]. What ws2http has a flag
//! for goes through ws2http's own command line (so the same checks, and a
//! migrating user can be shown the equivalent `ws2http` command); what only
//! websocketd has (its CGI environment, `--header*`, its origin list, CGI
//! from `--cgidir` only) is set on the `Config` afterwards.
//!
//! Decisions (README.md "Coming from websocketd" says why, for users):
//! - Bind all IPv4 interfaces without `--address`, as websocketd does: the
//!   user asked for websocketd by name, and a drop-in that answers only on
//!   loopback breaks every container and VPS deployment. Browsers stay
//!   protected by the origin check, which stays ws2http's (same origin, or
//!   no Origin at all) unless `--origin` lists others: websocketd's "any
//!   origin" default lets every web page in the user's browser drive the
//!   scripts (cross-site WebSocket hijacking).
//! - The control API listens on 127.0.0.1 with a free port (never
//!   colliding with `--port`), without a token: loopback only.
//! - `--maxforks 0` (websocketd: unlimited) keeps ws2http's
//!   `--max-connection-procs` default (128; beyond: 429), safe on a public
//!   address; a larger `--maxforks N` raises it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

use super::args::WsdArgs;
use crate::config::{CgiFlavour, Cli, Config, OriginHosts, PageScripts, PerConnection, ResponseHeaders};

/// What a websocketd command line asks for.
#[derive(Debug)]
pub enum Plan {
    /// Run the server; `level` is the log level `--loglevel` maps to;
    /// `notes` are logged once logging is set up.
    Serve { cfg: Box<Config>, level: &'static str, notes: Vec<String>, equivalent: Vec<String> },
    /// Print this and exit 0 (`--version`, `--license`).
    Print(String),
}

/// websocketd's default `--passenv` (0.4.1 on Linux).
pub const DEFAULT_PASSENV: &str = "PATH,LD_LIBRARY_PATH";

/// The license `--license` prints: ws2http's, which this binary is.
const LICENSE: &str = "ws2http is dual-licensed under the MIT license and the Apache License 2.0 \
(LICENSE-MIT, LICENSE-APACHE in its source). It implements websocketd's command line; websocketd \
(BSD 2-clause, Copyright 2013 Joe Walnes and the websocketd team) is a separate program.";

/// The plan for parsed websocketd options, or one line saying what is wrong.
pub fn plan(a: &WsdArgs) -> Result<Plan, String> {
    if a.version == Some(true) {
        return Ok(Plan::Print(version()));
    }
    if a.license == Some(true) {
        return Ok(Plan::Print(format!("{}\n{LICENSE}", version())));
    }
    refuse_unsupported(a)?;
    let level = log_level(a.loglevel.as_deref())?;
    let mut notes = Vec::new();
    if a.reverselookup == Some(true) {
        notes.push(
            "--reverselookup: not done (every connection would wait on a DNS answer the client controls); \
             REMOTE_HOST is the client's address"
                .to_owned(),
        );
    }
    let command = command(a)?;
    let mut equivalent = ws2http_args(a, command.as_deref())?;
    // As websocketd: the certificate files count only with --ssl.
    if let (Some(true), Some(cert), Some(key)) = (a.ssl, &a.sslcert, &a.sslkey) {
        equivalent.extend(["--tls-cert".into(), cert.clone(), "--tls-key".into(), key.clone()]);
    }
    let mut cfg = if a.dir.is_none() && command.is_none() {
        without_endpoints(a, &equivalent)?
    } else {
        parse_ws2http(&equivalent)?
    };
    cfg.script_args = a.command.iter().skip(1).cloned().collect();
    cfg.script_argv0 = a.command.first().cloned();
    cfg.cgi_flavour = CgiFlavour::Websocketd;
    // websocketd runs every script itself (its `#!` line decides): no
    // `php=php-cgi` default, which would hand a `#!/bin/sh` greet.php to
    // php-cgi.
    cfg.handlers.clear();
    cfg.default_handlers.clear();
    cfg.inherited_env = passenv(a.passenv.as_deref().unwrap_or(DEFAULT_PASSENV));
    cfg.per_connection = per_connection(a, cfg.per_connection.max_procs);
    if let Some(n) = a.maxforks.filter(|&n| n > 0) {
        // websocketd counts its CGI scripts in --maxforks too.
        cfg.max_procs = usize::try_from(n).unwrap_or(usize::MAX);
    }
    cfg.response_headers = response_headers(a)?;
    cfg.page_scripts = match &a.cgidir {
        Some(d) => PageScripts::Dir(existing_dir(d, "--cgidir")?),
        None => PageScripts::Off,
    };
    cfg.origin_hosts = a.origin.as_deref().filter(|o| !o.is_empty()).map(|list| OriginHosts {
        hosts: list.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect(),
        same_origin: a.sameorigin == Some(true),
    });
    // The lifetime flags, shown to the user (parsed by the resident branch's Cli).
    let pc = &cfg.per_connection;
    equivalent.extend(["--per-connection".into(), "'*'".into(), "--close-grace".into()]);
    equivalent.push(format!("{}", pc.close_grace.as_secs_f64()));
    equivalent.extend(["--max-connection-procs".into(), pc.max_procs.to_string()]);
    if pc.binary {
        equivalent.push("--per-connection-binary".into());
    }
    Ok(Plan::Serve { cfg: Box::new(cfg), level, notes, equivalent })
}

fn version() -> String {
    concat!("websocketd (ws2http ", env!("CARGO_PKG_VERSION"), ", websocketd 0.4.1 command line)").to_owned()
}

/// What ws2http cannot do (yet): one line each, saying what to do instead.
fn refuse_unsupported(a: &WsdArgs) -> Result<(), String> {
    if a.ssl == Some(true) && (a.sslcert.is_none() || a.sslkey.is_none()) {
        return Err("--ssl needs both --sslcert and --sslkey (PEM files)".into());
    }
    if a.redirport.is_some() {
        return Err("--redirport: not supported (the plain listener that redirects to --ssl); leave it out".into());
    }
    if a.devconsole == Some(true) && (a.staticdir.is_some() || a.cgidir.is_some()) {
        return Err("--devconsole cannot be used with --staticdir or --cgidir (as in websocketd); pick one".into());
    }
    if !a.command.is_empty() && a.dir.is_some() {
        return Err("both a COMMAND and --dir given; give only one (as in websocketd)".into());
    }
    if a.command.is_empty() && a.dir.is_none() && a.staticdir.is_none() && a.cgidir.is_none() {
        return Err("give a COMMAND or --dir, --staticdir or --cgidir, e.g. websocketd --port=8080 ./count.sh".into());
    }
    Ok(())
}

/// `--loglevel` → the `log` level of ws2http's own lines. websocketd's
/// `access` (one line per connection, its default) is ws2http's `info`;
/// its `info` (start-up lines only) is `warn` (the listening lines are
/// printed whatever the level).
fn log_level(level: Option<&str>) -> Result<&'static str, String> {
    Ok(match level.unwrap_or("access") {
        "debug" => "trace",
        "trace" => "debug",
        "access" => "info",
        "info" => "warn",
        "error" | "fatal" => "error",
        other => return Err(format!("--loglevel {other:?}: expected one of debug, trace, access, info, error, fatal")),
    })
}

/// The COMMAND as websocketd finds it: a name with a `/` as given (relative
/// to the working directory), a bare name looked up in PATH.
fn command(a: &WsdArgs) -> Result<Option<PathBuf>, String> {
    let Some(name) = a.command.first() else { return Ok(None) };
    let found = if name.contains('/') {
        Some(PathBuf::from(name)).filter(|p| is_executable(p))
    } else {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p)))
    };
    match found {
        Some(p) => Ok(Some(p)),
        None => Err(format!(
            "COMMAND {name:?}: not found{}, or not executable (chmod +x)",
            if name.contains('/') { "" } else { " in PATH" }
        )),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn existing_dir(d: &str, flag: &str) -> Result<PathBuf, String> {
    match Path::new(d).canonicalize() {
        Ok(p) if p.is_dir() => Ok(p),
        _ => Err(format!("{flag} {d}: not an accessible directory")),
    }
}

/// The configuration with no WebSocket endpoint at all (only
/// `--staticdir`/`--cgidir`, as websocketd allows): ws2http's checks want a
/// `--cgi-bin`, so they run with `--cgi-bin` set to the given directory and
/// `--root` left out (the two may be the same), then the endpoints are
/// none ([`crate::gateway::resolve::Resolver`]: an empty directory) and
/// `--root` is set back.
fn without_endpoints(a: &WsdArgs, args: &[String]) -> Result<Config, String> {
    let dir = a.staticdir.as_deref().or(a.cgidir.as_deref()).unwrap_or(".");
    let mut checked: Vec<String> = Vec::with_capacity(args.len() + 2);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--root" => {
                rest.next();
            }
            _ => checked.push(arg.clone()),
        }
    }
    checked.extend(["--cgi-bin".to_owned(), dir.to_owned()]);
    let mut cfg = parse_ws2http(&checked)?;
    cfg.cgi_bin = PathBuf::new();
    cfg.root = a.staticdir.as_deref().map(|d| existing_dir(d, "--staticdir")).transpose()?;
    Ok(cfg)
}

/// The `ws2http` command line for what both have (listener, scripts,
/// static files, console), also shown to the user at debug level.
pub fn ws2http_args(a: &WsdArgs, command: Option<&Path>) -> Result<Vec<String>, String> {
    let port = a.port.filter(|&p| p != 0).unwrap_or(80);
    let host = |address: Option<&str>| match address {
        None | Some("") => "0.0.0.0".to_owned(),
        Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        Some(h) => h.to_owned(),
    };
    let mut args: Vec<String> = vec!["ws2http".into()];
    // One listener per --address, all on --port, as websocketd binds them.
    let addresses: Vec<Option<&str>> = match a.address.as_slice() {
        [] => vec![None],
        list => list.iter().map(|h| Some(h.as_str())).collect(),
    };
    for address in addresses {
        args.extend(["--listen".to_owned(), format!("{}:{port}", host(address))]);
    }
    args.extend(["--api-listen", "127.0.0.1:0"].map(String::from));
    if let Some(d) = a.dir.as_deref().filter(|_| command.is_none()) {
        args.extend(["--cgi-bin".to_owned(), d.to_owned()]);
    }
    if let Some(s) = &a.staticdir {
        args.extend(["--root".to_owned(), s.clone()]);
    }
    args.push(if a.devconsole == Some(true) { "--console" } else { "--no-console" }.to_owned());
    if let Some(c) = command {
        args.push(c.to_string_lossy().into_owned());
    }
    Ok(args)
}

/// `args` through ws2http's parser and checks, with no `WS2HTTP_*`
/// variable or config file mixed in (a websocketd command line means what
/// it says), and errors naming websocketd's flags.
fn parse_ws2http(args: &[String]) -> Result<Config, String> {
    let cmd = Cli::command().mut_args(|arg| arg.env(None));
    let matches = cmd.try_get_matches_from(args).map_err(|e| e.to_string())?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    cli.into_config().map_err(|e| websocketd_words(&e))
}

/// An error of ws2http's checks, in websocketd's flag names.
pub fn websocketd_words(err: &str) -> String {
    [("--listen", "--port/--address"), ("--cgi-bin", "--dir"), ("--root", "--staticdir"), ("script ", "COMMAND ")]
        .iter()
        .fold(err.to_owned(), |e, (ours, theirs)| e.replace(ours, theirs))
}

/// websocketd's `--passenv`: only these variables of our environment, with
/// newlines made spaces and surrounding spaces trimmed, empty ones and
/// `HTTPS` left out. Unlike ws2http, PATH is passed only when listed.
pub fn passenv(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty() && *k != "HTTPS")
        .filter_map(|k| {
            let v = std::env::var(k).ok()?;
            let v = v.replace(['\n', '\r'], " ").trim().to_owned();
            (!v.is_empty()).then(|| (k.to_owned(), v))
        })
        .collect()
}

/// Every connection runs its own process (websocketd's only model);
/// `--maxforks` 0 or less (websocketd: unlimited) keeps ws2http's
/// `--max-connection-procs` default (`default_procs`, 128): a server bound
/// to every interface must not fork 10,000 processes for whoever connects.
fn per_connection(a: &WsdArgs, default_procs: usize) -> PerConnection {
    PerConnection {
        patterns: vec!["*".to_owned()],
        directives: false,
        binary: a.binary == Some(true),
        // websocketd signals 100 ms after stdin closed, plus --closems.
        close_grace: Duration::from_millis(100 + a.closems.unwrap_or(0)),
        max_procs: match a.maxforks {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => default_procs,
        },
    }
}

/// `--header*` values, `Name: value` each (Go's canonical name, spaces
/// after the colon dropped); one without a colon, with a name that is not
/// an HTTP token or a value that is not visible ASCII, spaces and tabs
/// (RFC 9110 field-value without obs-text: the HTTP layer writes ASCII
/// only) is refused (websocketd would send it broken).
fn response_headers(a: &WsdArgs) -> Result<ResponseHeaders, String> {
    let parse = |list: &[String], flag: &str| -> Result<Vec<(String, String)>, String> {
        list.iter()
            .map(|h| {
                header(h).ok_or_else(|| {
                    format!(
                        "{flag} {h:?}: expected \"Name: value\" (a name of letters, digits and -, a value of \
                         printable ASCII)"
                    )
                })
            })
            .collect()
    };
    Ok(ResponseHeaders {
        all: parse(&a.header, "--header")?,
        ws: parse(&a.header_ws, "--header-ws")?,
        http: parse(&a.header_http, "--header-http")?,
    })
}

fn header(h: &str) -> Option<(String, String)> {
    let (name, value) = h.split_once(':')?;
    let token = !name.is_empty() && crate::http1::head::is_token(name.as_bytes());
    let clean = value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    (token && clean).then(|| (canonical(name), value.trim_start_matches(' ').to_owned()))
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-my-header` → `X-My-Header`.
fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> WsdArgs {
        let v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        WsdArgs::parse_go(&v).unwrap_or_else(|_| panic!("{list:?}"))
    }

    fn serve(list: &[&str]) -> (Config, &'static str, Vec<String>) {
        match plan(&args(list)) {
            Ok(Plan::Serve { cfg, level, equivalent, .. }) => (*cfg, level, equivalent),
            other => panic!("{list:?}: {other:?}"),
        }
    }

    fn refused(list: &[&str]) -> String {
        match plan(&args(list)) {
            Err(e) => e,
            other => panic!("{list:?}: {other:?}"),
        }
    }

    fn fixtures() -> String {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgi-bin").to_owned()
    }

    #[test]
    fn a_command_with_arguments_runs_per_connection_on_all_interfaces() {
        let (cfg, level, eq) = serve(&["--port=8080", "sh", "-c", "echo hi"]);
        assert_eq!(cfg.listen, "0.0.0.0:8080");
        assert_eq!(cfg.api_listen, "127.0.0.1:0");
        assert!(cfg.script.as_deref().is_some_and(|s| s.is_file()), "sh found in PATH");
        assert_eq!(cfg.script_args, ["-c", "echo hi"]);
        assert_eq!(cfg.cgi_flavour, CgiFlavour::Websocketd);
        assert!(cfg.handlers.is_empty() && cfg.default_handlers.is_empty(), "websocketd runs .php files itself");
        assert_eq!(cfg.per_connection.patterns, ["*"]);
        assert_eq!(cfg.per_connection.close_grace, Duration::from_millis(100));
        assert_eq!(cfg.per_connection.max_procs, 128, "ws2http's default, not unlimited");
        assert_eq!(cfg.page_scripts, PageScripts::Off);
        assert_eq!(cfg.console, Some(false));
        assert_eq!(cfg.origin_hosts, None);
        assert_eq!(level, "info");
        assert_eq!(&eq[..5], ["ws2http", "--listen", "0.0.0.0:8080", "--api-listen", "127.0.0.1:0"]);
        let shown = eq.join(" ");
        assert!(shown.ends_with("--per-connection '*' --close-grace 0.1 --max-connection-procs 128"), "{shown}");
    }

    #[test]
    fn port_and_address() {
        assert_eq!(serve(&["cat"]).0.listen, "0.0.0.0:80", "websocketd's default port");
        assert_eq!(serve(&["--port=0", "cat"]).0.listen, "0.0.0.0:80", "0 is 80 in websocketd");
        assert_eq!(serve(&["--address=127.0.0.1", "--port=9", "cat"]).0.listen, "127.0.0.1:9");
        assert_eq!(serve(&["--address=[::1]", "--port=9", "cat"]).0.listen, "[::1]:9");
        assert_eq!(serve(&["--address=::1", "--port=9", "cat"]).0.listen, "[::1]:9");
        let (cfg, _, eq) = serve(&["--address=127.0.0.1", "--address=::1", "--address=127.0.0.2", "--port=9", "cat"]);
        assert_eq!(
            (cfg.listen.as_str(), cfg.extra_listen),
            ("127.0.0.1:9", vec!["[::1]:9".into(), "127.0.0.2:9".into()])
        );
        assert_eq!(eq[..7], ["ws2http", "--listen", "127.0.0.1:9", "--listen", "[::1]:9", "--listen", "127.0.0.2:9"]);
        assert!(serve(&["--address=127.0.0.1", "cat"]).0.extra_listen.is_empty());
        let e = refused(&["--address=127.0.0.1", "--address=", "--port=9", "cat"]);
        assert!(e.contains("--port/--address 0.0.0.0:9 and --port/--address 127.0.0.1:9"), "{e}");
    }

    #[test]
    fn dir_staticdir_cgidir_devconsole() {
        let f = fixtures();
        let (cfg, _, _) = serve(&["--dir", &f, "--devconsole"]);
        assert_eq!(cfg.cgi_bin, Path::new(&f).canonicalize().expect("fixtures"));
        assert_eq!((cfg.script.as_ref(), cfg.console), (None, Some(true)));
        let (cfg, _, _) = serve(&["--cgidir", &f]);
        assert_eq!(cfg.page_scripts, PageScripts::Dir(Path::new(&f).canonicalize().expect("fixtures")));
        assert_eq!(cfg.cgi_bin, Path::new(""), "no WebSocket endpoints without --dir or COMMAND");
        // The same directory for both, or --staticdir alone: no --dir involved.
        for list in [&["--staticdir", &f][..], &["--staticdir", &f, "--cgidir", &f]] {
            let (cfg, _, eq) = serve(list);
            assert_eq!(
                (cfg.cgi_bin.as_os_str(), cfg.root.clone()),
                ("".as_ref(), Some(PathBuf::from(&f).canonicalize().expect("f")))
            );
            assert!(!eq.contains(&"--cgi-bin".to_owned()), "{eq:?}");
        }
        let tmp = std::env::temp_dir();
        let (cfg, _, _) = serve(&["--staticdir", tmp.to_str().expect("utf-8"), "cat"]);
        assert_eq!(cfg.root, Some(tmp.canonicalize().expect("tmp")));
        let e = refused(&["--dir", &f, "--staticdir", &f]);
        assert!(e.contains("--staticdir") && e.contains("--dir") && !e.contains("--root"), "{e}");
        assert!(refused(&["--devconsole", "--staticdir", &f, "cat"]).contains("--devconsole cannot"));
        assert!(refused(&["--devconsole", "--cgidir", &f, "cat"]).contains("--devconsole cannot"));
        assert!(refused(&["--dir", &f, "cat"]).contains("both a COMMAND and --dir"));
        assert!(refused(&["--port=8080"]).contains("give a COMMAND or --dir"));
        assert!(refused(&["--dir=/nonexistent/x"]).contains("--dir /nonexistent/x"));
        assert!(refused(&["--cgidir=/nonexistent/x", "cat"]).contains("--cgidir /nonexistent/x"));
        assert!(refused(&["no-such-command-x"]).contains("COMMAND \"no-such-command-x\": not found in PATH"));
        assert!(refused(&["./no-such-command-x"]).contains("not found, or not executable"));
    }

    #[test]
    fn processes_signals_binary_and_passenv() {
        let (cfg, _, _) = serve(&["--maxforks=3", "--closems=400", "--binary", "cat"]);
        assert_eq!((cfg.per_connection.max_procs, cfg.max_procs), (3, 3));
        assert_eq!(cfg.per_connection.close_grace, Duration::from_millis(500));
        assert!(cfg.per_connection.binary && !cfg.per_connection.directives);
        for zero in ["--maxforks=-1", "--maxforks=0"] {
            assert_eq!(serve(&[zero, "cat"]).0.per_connection.max_procs, 128, "{zero}");
        }
        assert_eq!(serve(&["--maxforks=5000", "cat"]).0.per_connection.max_procs, 5000);
        let (cfg, _, _) = serve(&["cat"]);
        assert!(cfg.inherited_env.iter().any(|(k, _)| k == "PATH"));
        let (cfg, _, _) = serve(&["--passenv=HOME,HTTPS,NO_SUCH_VAR_X", "cat"]);
        let names: Vec<&str> = cfg.inherited_env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["HOME"], "PATH only when listed, HTTPS never, unset ones left out");
    }

    #[test]
    fn origin_headers_and_log_levels() {
        let (cfg, _, _) = serve(&["--origin=a.example, b.example:8080", "--sameorigin", "cat"]);
        let hosts = cfg.origin_hosts.expect("origin list");
        assert_eq!((hosts.hosts, hosts.same_origin), (vec!["a.example".into(), "b.example:8080".into()], true));
        let (cfg, _, _) = serve(&["--header=x-powered-by:  me", "--header-ws=A: 1", "--header-http=B:2", "cat"]);
        assert_eq!(cfg.response_headers.all, [("X-Powered-By".to_owned(), "me".to_owned())]);
        assert_eq!(cfg.response_headers.ws, [("A".to_owned(), "1".to_owned())]);
        assert_eq!(cfg.response_headers.http, [("B".to_owned(), "2".to_owned())]);
        assert!(refused(&["--header=NoColon", "cat"]).contains("--header \"NoColon\": expected"));
        assert!(refused(&["--header=Bad Name: 1", "cat"]).contains("expected"));
        // The HTTP layer writes ASCII only: a non-ASCII or control byte
        // would fail every response, so it is refused at start-up.
        for bad in ["--header=X-A: café", "--header-ws=X-A: a\u{1}b", "--header-http=X-A: \u{7f}", "--header=Ñ: 1"] {
            let e = refused(&[bad, "cat"]);
            assert!(e.contains("expected \"Name: value\"") && e.contains("printable ASCII"), "{bad}: {e}");
        }
        let (cfg, _, _) = serve(&["--header=X-A: a\tb ~!", "cat"]);
        assert_eq!(cfg.response_headers.all, [("X-A".to_owned(), "a\tb ~!".to_owned())]);
        for (given, level) in [("debug", "trace"), ("trace", "debug"), ("info", "warn"), ("fatal", "error")] {
            assert_eq!(serve(&["--loglevel", given, "cat"]).1, level);
        }
        assert!(refused(&["--loglevel=loud", "cat"]).contains("expected one of debug"));
    }

    #[test]
    fn what_ws2http_cannot_do_is_one_clear_line() {
        for list in [&["--ssl", "cat"][..], &["--ssl", "--sslcert=c", "cat"]] {
            assert!(refused(list).starts_with("--ssl needs both --sslcert and --sslkey"), "{list:?}");
        }
        let (cfg, _, equivalent) = serve(&["--ssl", "--sslcert=c.pem", "--sslkey=k.pem", "cat"]);
        assert_eq!(cfg.tls_files, Some(("c.pem".into(), "k.pem".into())));
        assert!(equivalent.join(" ").contains("--tls-cert c.pem --tls-key k.pem"), "{equivalent:?}");
        assert_eq!(serve(&["--sslcert=c.pem", "cat"]).0.tls_files, None, "as websocketd: only with --ssl");
        assert!(refused(&["--redirport=80", "cat"]).starts_with("--redirport: not supported"));
        match plan(&args(&["--reverselookup", "cat"])) {
            Ok(Plan::Serve { notes, .. }) => assert!(notes[0].starts_with("--reverselookup: not done")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(plan(&args(&["--version"])), Ok(Plan::Print(v)) if v.contains("websocketd 0.4.1")));
        assert!(matches!(plan(&args(&["--license"])), Ok(Plan::Print(v)) if v.contains("MIT")));
    }
}
