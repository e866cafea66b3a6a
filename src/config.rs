//! Command line (clap; every flag also from a `WS2HTTP_<FLAG>` variable),
//! checked into a [`Config`] with errors that say how to fix them.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::endpoint_settings::per_connection_patterns;
pub use crate::endpoint_settings::{
    CgiFlavour, EventArg, Events, OriginHosts, PageScripts, PerConnection, ResponseHeaders,
};
use crate::gateway::resolve::Handlers;
pub use crate::subcommand_args::{CompletionsArgs, ConnectArgs, ManArgs, TryArgs};
use clap::{ArgAction, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ws2http",
    version,
    about = "WebSockets for CGI scripts: every WebSocket event runs a script from cgi-bin/",
    args_conflicts_with_subcommands = true,
    args_override_self = true,
    after_help = after_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Read settings from this TOML file (keys are the long flags; flags win)
    #[arg(long, env = "WS2HTTP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Public HTTP/WebSocket listener (port 0 picks a free port); repeatable: the same site on
    /// every address given, e.g. --listen 127.0.0.1:8080 --listen [::1]:8080
    #[arg(long, env = "WS2HTTP_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// HTTPS: serve every --listen over TLS (https://, wss://) with this certificate chain (PEM,
    /// leaf first); re-read when it changes or on SIGHUP. Needs --tls-key
    #[arg(long, env = "WS2HTTP_TLS_CERT", value_name = "FILE", requires = "tls_key", help_heading = crate::tls::HELP_HEADING)]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert
    #[arg(long, env = "WS2HTTP_TLS_KEY", value_name = "FILE", requires = "tls_cert", help_heading = crate::tls::HELP_HEADING)]
    pub tls_key: Option<PathBuf>,
    /// Control API listener
    #[arg(long, env = "WS2HTTP_API_LISTEN", default_value = "127.0.0.1:8081", value_name = "ADDR")]
    pub api_listen: String,
    /// Require `Authorization: Bearer TOKEN` on every control API call
    #[arg(long, env = "WS2HTTP_API_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Directory of scripts that handle WebSocket endpoints
    #[arg(long, env = "WS2HTTP_CGI_BIN", default_value = "./cgi-bin", value_name = "DIR")]
    pub cgi_bin: PathBuf,
    /// Serve static files from this directory (plain HTTP requests that are not scripts)
    #[arg(long, env = "WS2HTTP_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Run scripts with this extension through PROGRAM (repeatable), e.g. php=php-cgi
    #[arg(long = "handler", env = "WS2HTTP_HANDLER", value_name = "EXT=PROGRAM", value_delimiter = ',')]
    pub handlers: Vec<String>,
    /// Deliver events to a FastCGI server (php-fpm) instead of spawning scripts:
    /// HOST:PORT or unix:/path, optionally for one path prefix: /chat.php=127.0.0.1:9000 (repeatable)
    #[arg(long = "fastcgi", env = "WS2HTTP_FASTCGI", value_name = "[PREFIX=]ADDR", value_delimiter = ',')]
    pub fastcgi: Vec<String>,
    /// Deliver events as HTTP POSTs to URL (any web server) instead of spawning scripts,
    /// optionally for one path prefix: /chat=http://127.0.0.1:8088/chat.sh (repeatable)
    #[arg(long = "backend-url", env = "WS2HTTP_BACKEND_URL", value_name = "[PREFIX=]URL", value_delimiter = ',')]
    pub backend_url: Vec<String>,
    /// Cluster mode: share rooms, sends and presence with other instances through Redis,
    /// e.g. redis://127.0.0.1:6379/0
    #[arg(long, env = "WS2HTTP_REDIS", value_name = "URL")]
    pub redis: Option<String>,
    #[command(flatten)]
    pub outbound: crate::config_outbound::OutboundArgs,
    /// `--resume-grace` and the session buffers (src/config_resume.rs).
    #[command(flatten)]
    pub resume: crate::config_resume::ResumeArgs,
    /// Pass this variable of the server's environment on to scripts (repeatable)
    // Lists (A,B) are split by pass_env_names, the same for `try`.
    #[arg(long = "pass-env", env = "WS2HTTP_PASS_ENV", value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Seconds a script and every process it starts may run (its process group is then terminated)
    #[arg(long, env = "WS2HTTP_TIMEOUT", default_value_t = 30.0, value_name = "SECS")]
    pub timeout: f64,
    /// Scripts running at once across all connections [default: 4 x cores]
    #[arg(long, env = "WS2HTTP_MAX_PROCS", value_name = "N")]
    pub max_procs: Option<usize>,
    /// Largest message a client may send, in bytes (bigger: close 1009)
    #[arg(long, env = "WS2HTTP_MAX_MESSAGE", default_value_t = 1 << 20, value_name = "BYTES")]
    pub max_message: usize,
    /// Most bytes of script output read per event (the rest is discarded)
    #[arg(long, env = "WS2HTTP_MAX_OUTPUT", default_value_t = 4 << 20, value_name = "BYTES")]
    pub max_output: usize,
    /// Events waiting per connection (beyond it: close 1013)
    #[arg(long, env = "WS2HTTP_MAX_QUEUE", default_value_t = 64, value_name = "N")]
    pub max_queue: usize,
    /// Messages queued per connection for a client that reads slowly (beyond it: close 1008)
    #[arg(long, env = "WS2HTTP_MAX_OUTGOING", default_value_t = 1024, value_name = "N")]
    pub max_outgoing: usize,
    /// Open WebSocket connections at once (beyond it: 503 at the handshake)
    #[arg(long, env = "WS2HTTP_MAX_CONNECTIONS", default_value_t = 10_000, value_name = "N")]
    pub max_connections: usize,
    /// Open WebSocket connections from one IP address (beyond it: 503)
    #[arg(long, env = "WS2HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = 256, value_name = "N")]
    pub max_connections_per_ip: usize,
    /// Seconds between server pings; a peer silent for that long after a ping is dropped (0: never ping)
    #[arg(long, env = "WS2HTTP_PING_INTERVAL", default_value_t = 30.0, value_name = "SECS")]
    pub ping_interval: f64,
    /// Also accept browser handshakes from this origin (repeatable; `*` for any);
    /// same-origin handshakes and clients that send no Origin are always accepted
    #[arg(long = "allow-origin", env = "WS2HTTP_ALLOW_ORIGIN", value_name = "ORIGIN", value_delimiter = ',')]
    pub allow_origin: Vec<String>,
    /// Which events run the script (comma-separated). Without `open` every
    /// handshake is accepted as it comes; without `close` nothing runs when a
    /// connection ends; without `message` messages are dropped
    #[arg(
        long,
        env = "WS2HTTP_EVENTS",
        value_enum,
        value_delimiter = ',',
        default_value = "open,message,close",
        value_name = "LIST"
    )]
    pub events: Vec<EventArg>,
    /// HTTP connections open at once on each listener, WebSocket handshakes included (beyond it: 503;
    /// HTTPS: closed at once, before the TLS handshake)
    #[arg(long, env = "WS2HTTP_MAX_HTTP_CONNECTIONS", default_value_t = 4096, value_name = "N")]
    pub max_http_connections: usize,
    /// HTTP connections open at once from one IP address, on each listener (beyond it: 503;
    /// HTTPS: closed at once, before the TLS handshake)
    #[arg(long, env = "WS2HTTP_MAX_HTTP_CONNECTIONS_PER_IP", default_value_t = 256, value_name = "N")]
    pub max_http_connections_per_ip: usize,
    /// Seconds an HTTP client may take to send a request head, or stay silent while it sends a
    /// body or should read a response (beyond it: 408 or the connection is closed); beyond it, a
    /// body must arrive at 1 KiB/s on average (408), and so must a WebSocket message (close 1008)
    #[arg(long, env = "WS2HTTP_HTTP_TIMEOUT", default_value_t = 10.0, value_name = "SECS")]
    pub http_timeout: f64,
    /// Largest request head (request line and headers) in bytes (beyond it: 414 or 431)
    #[arg(long, env = "WS2HTTP_MAX_REQUEST_HEAD", default_value_t = 16 * 1024, value_name = "BYTES")]
    pub max_request_head: usize,
    /// Largest request body a page request may send to a script (read whole before the script
    /// runs; bigger: 413)
    #[arg(long, env = "WS2HTTP_MAX_REQUEST_BODY", default_value_t = 8 << 20, value_name = "BYTES")]
    pub max_request_body: usize,
    /// Bytes of request bodies held at once for scripts, all requests together (beyond it: 503)
    #[arg(long, env = "WS2HTTP_MAX_REQUEST_BODY_TOTAL", default_value_t = 64 << 20, value_name = "BYTES")]
    pub max_request_body_total: usize,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
    /// Single-script mode: this script handles every WebSocket path (PATH_INFO carries the path)
    #[arg(env = "WS2HTTP_SCRIPT", value_name = "SCRIPT")]
    pub script: Option<PathBuf>,
    /// Without --api-token the control API answers only requests whose Host is its own
    /// address (or localhost); also accept this name (repeatable): NAME (any port) or NAME:PORT
    #[arg(long = "api-allow-host", env = "WS2HTTP_API_ALLOW_HOST", value_name = "NAME[:PORT]", value_delimiter = ',')]
    pub api_allow_host: Vec<String>,
    /// Largest control API request body (bigger: 413); a pushed message is also at most --max-message
    #[arg(long, env = "WS2HTTP_API_MAX_BODY", default_value_t = 4 << 20, value_name = "BYTES")]
    pub api_max_body: usize,
    /// On a loopback address the public listener answers only to localhost and loopback addresses
    /// (DNS rebinding); also serve this name (repeatable), e.g. the public name a proxy passes.
    /// Elsewhere, when given, only these names (and loopback ones) are served
    #[arg(long = "allow-host", env = "WS2HTTP_ALLOW_HOST", value_name = "NAME", value_delimiter = ',')]
    pub allow_host: Vec<String>,
    /// Cluster mode: bytes of cross-instance actions waiting to be published to Redis
    /// (beyond it they are lost, counted and logged)
    #[arg(long, env = "WS2HTTP_CLUSTER_QUEUE", default_value_t = 64 << 20, value_name = "BYTES")]
    pub cluster_queue: usize,
    /// Bytes of messages waiting for (or running) their script, per connection
    /// (beyond it: close 1013) [default: 4194304, or --max-message if larger]
    #[arg(long, env = "WS2HTTP_MAX_QUEUE_BYTES", value_name = "BYTES")]
    pub max_queue_bytes: Option<usize>,
    /// Bytes of client messages held at once, all connections together: waiting for their
    /// script or still being read (beyond it: the connections holding the most are closed, 1013)
    /// [default: 67108864, or --max-queue-bytes if larger]
    #[arg(long, env = "WS2HTTP_MAX_QUEUE_BYTES_TOTAL", value_name = "BYTES")]
    pub max_queue_bytes_total: Option<usize>,
    /// Bytes of messages queued for one client and not yet sent; a message that would go over
    /// closes it with 1008 (slow consumer), unless its queue is empty (one message always fits)
    #[arg(long, env = "WS2HTTP_MAX_OUTGOING_BYTES", default_value_t = DEFAULT_MAX_OUTGOING_BYTES, value_name = "BYTES")]
    pub max_outgoing_bytes: usize,
    /// Bytes of messages queued for all clients together (a broadcast counts once); beyond it,
    /// a client whose queue is not empty is closed with 1008 (slow consumer)
    /// [default: 67108864, or --max-outgoing-bytes if larger]
    #[arg(long, env = "WS2HTTP_MAX_OUTGOING_BYTES_TOTAL", value_name = "BYTES")]
    pub max_outgoing_bytes_total: Option<usize>,
    /// Paths whose endpoint runs ONE process per connection instead of one per event (a glob on
    /// the URL path, repeatable or comma-separated: /count.sh, /live/*, * for every endpoint):
    /// each message a line on its stdin, each line it prints a message, its exit closes (1000)
    #[arg(long = "per-connection", env = "WS2HTTP_PER_CONNECTION", value_name = "PATTERN", value_delimiter = ',')]
    pub per_connection: Vec<String>,
    /// In a per-connection process, stdout lines starting with @ are directives (@send, @join,
    /// @broadcast, @set, @close ...); without it every line is a message, verbatim
    #[arg(long, env = "WS2HTTP_PER_CONNECTION_DIRECTIVES", value_parser = clap::builder::BoolishValueParser::new())]
    pub per_connection_directives: bool,
    /// Per-connection processes speak binary: stdout bytes go out as binary messages as they
    /// come (no lines), messages are written to stdin as they are (no newline added)
    #[arg(long, env = "WS2HTTP_PER_CONNECTION_BINARY", value_parser = clap::builder::BoolishValueParser::new())]
    pub per_connection_binary: bool,
    /// Seconds between the steps that end a per-connection process once its client is gone:
    /// stdin closed, then SIGINT, SIGTERM and SIGKILL to its process group, one grace apart
    #[arg(long, env = "WS2HTTP_CLOSE_GRACE", default_value_t = 0.25, value_name = "SECS")]
    pub close_grace: f64,
    /// Per-connection processes alive at once; a handshake beyond it is refused with 429
    #[arg(long, env = "WS2HTTP_MAX_CONNECTION_PROCS", default_value_t = 128, value_name = "N")]
    pub max_connection_procs: usize,
    /// Do not serve the console page at / (without --root it is served, by default only when
    /// --listen is a loopback address and no --allow-host is given); GET / then answers 404
    #[arg(long, env = "WS2HTTP_NO_CONSOLE", overrides_with = "console", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_console: bool,
    /// Serve the console page at / also when --listen is not a loopback address or --allow-host
    /// names a public host (it lists the endpoints to everyone who reaches the listener)
    #[arg(long, env = "WS2HTTP_CONSOLE", overrides_with = "no_console", value_parser = clap::builder::BoolishValueParser::new())]
    pub console: bool,
    /// `--acme DOMAIN` and its settings (src/tls/acme.rs).
    #[command(flatten)]
    pub acme: crate::tls::acme::AcmeArgs,
}

/// Where settings come from: the first paragraph after `--help`'s options,
/// and the ENVIRONMENT section of ws2http(1).
pub const SETTINGS_NOTE: &str = "Settings can also come from --config FILE.toml (keys are the long flags) and \
WS2HTTP_<FLAG> variables; flags win over both, variables over the file.";

/// Commands to copy, with what each does: `--help`'s EXAMPLES and
/// ws2http(1)'s are both made from this one list, so they cannot drift.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("ws2http", "the demo (./cgi-bin) on http://127.0.0.1:8080"),
    ("ws2http cgi-bin/echo.sh", "one script handles every WebSocket path"),
    ("ws2http --cgi-bin app/cgi-bin --root app/public", "scripts and the static files of an app"),
    ("ws2http --config /etc/ws2http/ws2http.toml", "settings from a file"),
    ("ws2http try cgi-bin/echo.sh --data hi", "run a script once, as an event would"),
    ("ws2http connect ws://127.0.0.1:8080/echo.sh", "talk to an endpoint (Ctrl-D closes)"),
];

/// [`EXAMPLES`] as aligned lines: the command, then its description in one
/// column for all.
pub fn example_lines() -> Vec<String> {
    let width = EXAMPLES.iter().map(|(cmd, _)| cmd.len()).max().unwrap_or(0);
    EXAMPLES.iter().map(|(cmd, what)| format!("{cmd:<width$}  {what}")).collect()
}

/// The end of `--help`: where settings come from, and commands to copy.
fn after_help() -> String {
    let examples: Vec<String> = example_lines().iter().map(|l| format!("  {l}")).collect();
    format!("{SETTINGS_NOTE}\n\nEXAMPLES:\n{}", examples.join("\n"))
}

// Parsed once at start-up: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a script once for one event, exactly as the server would, and show
    /// the actions it produced, its exit status, stderr and duration
    Try(TryArgs),
    /// An interactive WebSocket client: each line of stdin is sent as a text
    /// message, each message received is printed on its own line
    Connect(ConnectArgs),
    /// Print a shell completion script to stdout, e.g.
    /// `ws2http completions bash > /etc/bash_completion.d/ws2http`
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to stdout, e.g. `ws2http man | man -l -`
    ///
    /// With `--out-dir DIR`, write every page (ws2http.1, ws2http-try.1, ...) into DIR instead.
    Man(ManArgs),
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The first `--listen` (its port is the default SERVER_PORT).
    pub listen: String,
    /// The other `--listen` addresses: the same site, bound at start-up too.
    pub extra_listen: Vec<String>,
    /// `--tls-cert` and `--tls-key`: the public listeners speak TLS.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub api_listen: String,
    pub api_token: Option<String>,
    /// Canonical.
    pub cgi_bin: PathBuf,
    /// Canonical.
    pub script: Option<PathBuf>,
    /// Canonical `--root`.
    pub root: Option<PathBuf>,
    pub handlers: Handlers,
    pub inherited_env: Vec<(String, String)>,
    pub timeout: Duration,
    pub max_procs: usize,
    pub max_message: usize,
    pub max_output: usize,
    pub max_queue: usize,
    pub out_queue: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// `None`: no pings.
    pub ping_interval: Option<Duration>,
    pub allow_origin: Vec<String>,
    pub events: Events,
    pub max_http_connections: usize,
    pub max_http_connections_per_ip: usize,
    pub http_timeout: Duration,
    pub max_request_head: usize,
    pub max_request_body: usize,
    pub max_request_body_total: usize,
    /// Path prefix → FastCGI server.
    pub fastcgi: Vec<(String, Address)>,
    /// Path prefix → URL of the HTTP backend.
    pub backend_url: Vec<(String, String)>,
    pub redis: Option<String>,
    /// `--backend-ca`, `--redis-ca`, `--redirect-http`, `--hsts`.
    pub outbound: crate::config_outbound::Outbound,
    /// Extra names the control API answers to without a token (`--api-allow-host`).
    pub api_allow_host: Vec<crate::hosts::HostPattern>,
    /// Largest control API request body (`--api-max-body`).
    pub api_max_body: usize,
    /// Extra names the public listener answers to (`--allow-host`).
    pub allow_host: Vec<crate::hosts::HostPattern>,
    /// Extensions whose handler was registered by default (`php`), not by a flag.
    pub default_handlers: Vec<String>,
    /// `--cluster-queue`: bytes of actions waiting for Redis.
    pub cluster_queue: usize,
    /// `--max-queue-bytes`: at least `max_message`.
    pub max_queue_bytes: usize,
    /// `--max-queue-bytes-total`: at least `max_queue_bytes`.
    pub max_queue_bytes_total: usize,
    /// `--max-outgoing-bytes`: bytes queued for one client.
    pub max_outgoing_bytes: usize,
    /// `--max-outgoing-bytes-total`: at least `max_outgoing_bytes`.
    pub max_outgoing_bytes_total: usize,
    /// `--per-connection` and its settings.
    pub per_connection: PerConnection,
    /// Arguments after the single script, passed to every process it runs.
    pub script_args: Vec<String>,
    /// The single script's argv[0] as typed (websocketd's COMMAND), when
    /// it differs from its canonical path.
    pub script_argv0: Option<String>,
    /// `--console` (`Some(true)`), `--no-console` (`Some(false)`), or neither:
    /// on only when the public listener is on a loopback address.
    pub console: Option<bool>,
    /// Which CGI environment scripts get: ws2http's, or websocketd 0.4.1's.
    pub cgi_flavour: CgiFlavour,
    /// websocketd's `--header`, `--header-ws`, `--header-http`.
    pub response_headers: ResponseHeaders,
    /// Where plain HTTP requests find classic CGI scripts.
    pub page_scripts: PageScripts,
    /// websocketd's `--origin` list, checked instead of `--allow-origin` when set.
    pub origin_hosts: Option<OriginHosts>,
    /// `--acme`: certificates obtained automatically.
    pub acme: Option<crate::tls::acme::Settings>,
    /// Resumable sessions (`--resume-grace`, ...); `None`: off.
    pub resume: Option<crate::config_resume::Resume>,
}

impl Config {
    /// Whether the public listeners speak HTTPS: certificate files or ACME.
    pub fn tls_enabled(&self) -> bool {
        self.tls_files.is_some() || self.acme.is_some()
    }
}

fn is_loopback(addr: &str) -> Result<bool, String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("--api-listen {addr}: not an address ({e}); use HOST:PORT, e.g. 127.0.0.1:8081"))?
        .collect();
    Ok(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
}

/// `EXT=PROGRAM [ARGS]` flags, plus `php=php-cgi` when no php handler was
/// given. The php handler is registered whether php-cgi is installed or not:
/// a `.php` file is always a script (run, or refused with a 500 naming the
/// missing program), never a file whose source could be served.
pub fn parse_handlers(flags: &[String]) -> Result<Handlers, String> {
    let mut handlers = Vec::new();
    for h in flags {
        let (ext, prog) = h
            .split_once('=')
            .ok_or_else(|| format!("--handler {h:?}: expected EXT=PROGRAM, e.g. --handler php=php-cgi"))?;
        let ext = ext.trim().trim_start_matches('.');
        let argv: Vec<String> = prog.split_whitespace().map(str::to_owned).collect();
        if ext.is_empty() || argv.is_empty() {
            return Err(format!("--handler {h:?}: expected EXT=PROGRAM, e.g. --handler php=php-cgi"));
        }
        handlers.push((ext.to_owned(), Arc::from(argv)));
    }
    if !handlers.iter().any(|(e, _)| e == "php") {
        handlers.push(("php".into(), Arc::from(vec!["php-cgi".to_owned()])));
    }
    Ok(handlers)
}

/// PATH and the `--pass-env` names, with their values from our environment.
pub fn inherited_env(pass_env: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut env =
        vec![("PATH".to_owned(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()))];
    for name in pass_env_names(pass_env)? {
        if let Ok(v) = std::env::var(&name) {
            env.retain(|(n, _)| *n != name);
            env.push((name, v));
        }
    }
    Ok(env)
}

/// `--fastcgi [PREFIX=]ADDR` values.
fn fastcgi_routes(flags: &[String]) -> Result<Vec<(String, Address)>, String> {
    flags
        .iter()
        .map(|f| {
            let (prefix, addr) = split_route(f);
            Address::parse(addr).map(|a| (prefix, a)).map_err(|e| format!("--fastcgi {e}"))
        })
        .collect()
}

/// `[/PREFIX=]TARGET` → (`/PREFIX` or `/`, `TARGET`).
/// [`split_route`], the target owned (`--backend-url`).
pub fn split_route(s: &str) -> (String, &str) {
    match s.split_once('=') {
        Some((p, t)) if p.starts_with('/') => (p.trim_end_matches('/').to_owned(), t),
        _ => ("/".to_owned(), s),
    }
}

/// `--backend-url [PREFIX=]URL` values as (prefix, URL).
fn backend_routes(urls: &[String]) -> Vec<(String, String)> {
    urls.iter()
        .map(|u| {
            let (prefix, url) = split_route(u);
            (prefix, url.to_owned())
        })
        .collect()
}

impl Cli {
    pub fn into_config(mut self) -> Result<Config, String> {
        let (listen, extra_listen) = crate::cli_checks::listen_addrs(&self.listen)?;
        self.api_listen = crate::cli_checks::listen_addr(&self.api_listen, "--api-listen")?;
        self.check_api()?;
        self.check_numbers()?;
        let (cgi_bin, script, root) = self.paths()?;
        let handlers = parse_handlers(&self.handlers)?;
        // parse_handlers appends the default ones after those of the flags.
        let default_handlers = handlers.iter().skip(self.handlers.len()).map(|(e, _)| e.clone()).collect();
        let allow_host = host_patterns(&self.allow_host, "--allow-host")?;
        let api_allow_host = host_patterns(&self.api_allow_host, "--api-allow-host")?;
        let inherited_env = inherited_env(&self.pass_env)?;
        let per_connection = self.per_connection_settings()?;
        let outbound = std::mem::take(&mut self.outbound).into_settings()?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (max_queue_bytes, max_queue_bytes_total) =
            queue_bytes(self.max_message.max(1), self.max_queue_bytes, self.max_queue_bytes_total)?;
        let (max_outgoing_bytes, max_outgoing_bytes_total) =
            outgoing_bytes(self.max_outgoing_bytes, self.max_outgoing_bytes_total)?;
        Ok(Config {
            listen,
            extra_listen,
            tls_files: self.tls_cert.zip(self.tls_key),
            api_listen: self.api_listen,
            api_token: self.api_token,
            cgi_bin,
            script,
            root,
            handlers,
            inherited_env,
            timeout: Duration::from_secs_f64(self.timeout),
            max_procs: self.max_procs.unwrap_or(4 * cores).max(1),
            max_message: self.max_message.max(1),
            max_output: self.max_output.max(1),
            max_queue: self.max_queue.max(1),
            out_queue: self.max_outgoing.max(1),
            max_connections: self.max_connections.max(1),
            max_connections_per_ip: self.max_connections_per_ip.max(1),
            ping_interval: (self.ping_interval > 0.0).then(|| Duration::from_secs_f64(self.ping_interval)),
            allow_origin: self.allow_origin,
            events: Events::from_list(&self.events),
            max_http_connections: self.max_http_connections.max(1),
            max_http_connections_per_ip: self.max_http_connections_per_ip.max(1),
            http_timeout: Duration::from_secs_f64(self.http_timeout),
            max_request_head: self.max_request_head.max(1024),
            max_request_body: self.max_request_body,
            max_request_body_total: self.max_request_body_total,
            fastcgi: fastcgi_routes(&self.fastcgi)?,
            redis: self.redis,
            outbound,
            backend_url: backend_routes(&self.backend_url),
            api_allow_host,
            api_max_body: self.api_max_body.max(1),
            allow_host,
            default_handlers,
            cluster_queue: self.cluster_queue.max(1),
            max_queue_bytes,
            max_queue_bytes_total,
            max_outgoing_bytes,
            max_outgoing_bytes_total,
            per_connection,
            script_args: Vec::new(),
            script_argv0: None,
            console: match (self.console, self.no_console) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            cgi_flavour: CgiFlavour::Ws2http,
            response_headers: ResponseHeaders::default(),
            page_scripts: PageScripts::CgiBin,
            origin_hosts: None,
            acme: self.acme.settings()?,
            resume: self.resume.settings()?,
        })
    }

    /// `--per-connection` and the flags around it.
    fn per_connection_settings(&self) -> Result<PerConnection, String> {
        if !self.per_connection.is_empty() && !self.events.contains(&EventArg::Message) {
            // The reader drops the messages --events leaves out, before any
            // process could read them on its stdin.
            return Err("--per-connection needs message in --events: a per-connection process reads every message \
                        on its stdin (add message to --events)"
                .to_owned());
        }
        Ok(PerConnection {
            patterns: per_connection_patterns(&self.per_connection)?,
            directives: self.per_connection_directives,
            binary: self.per_connection_binary,
            close_grace: Duration::from_secs_f64(self.close_grace),
            max_procs: self.max_connection_procs.max(1),
        })
    }

    /// A token, when given, is not empty; an API reachable from elsewhere has one.
    fn check_api(&self) -> Result<(), String> {
        if self.api_token.as_deref().is_some_and(str::is_empty) {
            return Err("--api-token is empty; give a secret or leave the flag out".into());
        }
        if self.api_token.is_none() && !is_loopback(&self.api_listen)? {
            return Err(format!(
                "--api-listen {} is reachable from other machines but no --api-token is set; \
                 set --api-token (or WS2HTTP_API_TOKEN), or listen on 127.0.0.1",
                self.api_listen
            ));
        }
        Ok(())
    }

    fn check_numbers(&self) -> Result<(), String> {
        if !(self.ping_interval >= 0.0 && self.ping_interval.is_finite()) {
            return Err(format!("--ping-interval {}: must be 0 (off) or a number of seconds", self.ping_interval));
        }
        if self.max_request_head > MAX_REQUEST_HEAD {
            return Err(format!(
                "--max-request-head {}: at most {MAX_REQUEST_HEAD} (the head becomes every script's environment, \
                 which the OS bounds)",
                self.max_request_head
            ));
        }
        let (body, total) = (self.max_request_body, Some(self.max_request_body_total));
        budget_total(body, total, 0, "--max-request-body", "per request")?;
        if !(self.close_grace >= 0.0 && self.close_grace <= 60.0) {
            return Err(format!("--close-grace {}: must be a number of seconds from 0 to 60", self.close_grace));
        }
        for (flag, secs) in [("--http-timeout", self.http_timeout), ("--timeout", self.timeout)] {
            if !(secs > 0.0 && secs.is_finite()) {
                return Err(format!("{flag} {secs}: must be a positive number of seconds"));
            }
        }
        Ok(())
    }

    /// `--cgi-bin`, the single script and `--root`, canonical and checked.
    fn paths(&self) -> Result<(PathBuf, Option<PathBuf>, Option<PathBuf>), String> {
        // The endpoint directory must exist unless one script handles everything.
        let cgi_bin = match self.cgi_bin.canonicalize() {
            Ok(p) if p.is_dir() => p,
            Ok(_) => return Err(crate::cli_checks::cgi_bin_is_a_file(&self.cgi_bin)),
            Err(_) if self.script.is_some() => PathBuf::from("/nonexistent"),
            Err(e) => {
                return Err(format!(
                    "--cgi-bin {}: {e}; create it, pass --cgi-bin DIR, or give a single SCRIPT",
                    self.cgi_bin.display()
                ))
            }
        };
        let script = match &self.script {
            None => None,
            Some(s) => {
                let p = s.canonicalize().map_err(|e| format!("script {}: {e}", s.display()))?;
                if p.is_dir() {
                    return Err(crate::cli_checks::script_is_a_directory(s));
                }
                if !p.is_file() {
                    return Err(format!("script {}: not a regular file", s.display()));
                }
                Some(p)
            }
        };
        let root = match &self.root {
            None => None,
            Some(r) => match r.canonicalize() {
                Ok(p) if p.is_dir() => Some(p),
                Ok(_) => return Err(format!("--root {}: not a directory", r.display())),
                Err(e) => return Err(format!("--root {}: {e}; create it or leave --root out", r.display())),
            },
        };
        if let (Some(root), None) = (&root, &script) {
            check_root_outside_cgi_bin(root, &cgi_bin)?;
        }
        Ok((cgi_bin, script, root))
    }
}

/// The largest `--max-request-head`: four times it (the worst case of
/// environment per head byte) must stay far below what Linux allows a
/// spawn (a quarter of the stack limit, 2 MiB with the usual 8 MiB).
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// `--allow-host` / `--api-allow-host` values.
fn host_patterns(list: &[String], flag: &str) -> Result<Vec<crate::hosts::HostPattern>, String> {
    list.iter().map(|h| crate::hosts::HostPattern::parse(h).map_err(|e| format!("{flag} {h:?}: {e}"))).collect()
}

/// A `--root` equal to or inside `--cgi-bin` would serve scripts as files.
/// (`--cgi-bin` inside `--root` is fine: its files are simply never static.)
fn check_root_outside_cgi_bin(root: &std::path::Path, cgi_bin: &std::path::Path) -> Result<(), String> {
    if !root.starts_with(cgi_bin) {
        return Ok(());
    }
    let how = if root == cgi_bin { "is the same directory as" } else { "is inside" };
    Err(format!(
        "--root {} {how} --cgi-bin {}: scripts would be served as files; \
         give static files a directory of their own, e.g. --cgi-bin app/cgi-bin --root app/public",
        root.display(),
        cgi_bin.display()
    ))
}

/// `true` when `program` can be started: a path to an executable file, or a
/// bare name found in PATH (as posix_spawnp looks it up).
fn program_exists(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let runnable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return runnable(std::path::Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| runnable(&d.join(program))))
}

/// Handlers whose program cannot be started: (extension, program, the fix).
pub fn missing_handler_programs(handlers: &Handlers) -> Vec<(String, String, String)> {
    handlers
        .iter()
        .filter(|(_, argv)| !program_exists(&argv[0]))
        .map(|(ext, argv)| {
            let fix = match argv[0].as_str() {
                "php-cgi" => format!("install it (apt install php-cgi) or name another with --handler {ext}=PROGRAM"),
                _ => format!("install it or name another with --handler {ext}=PROGRAM"),
            };
            (ext.clone(), argv[0].clone(), fix)
        })
        .collect()
}

/// Default `--max-queue-bytes` when `--max-message` is not larger.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 4 << 20;
/// Default `--max-queue-bytes-total` when `--max-queue-bytes` is not larger.
pub const DEFAULT_MAX_QUEUE_BYTES_TOTAL: usize = 64 << 20;

/// Checks the byte budgets against each other: one message of
/// `--max-message` bytes must always fit, or a client could never send one.
fn queue_bytes(max_message: usize, per_conn: Option<usize>, total: Option<usize>) -> Result<(usize, usize), String> {
    let per_conn = match per_conn {
        None => DEFAULT_MAX_QUEUE_BYTES.max(max_message),
        Some(n) if n < max_message => {
            return Err(format!(
                "--max-queue-bytes {n} is smaller than --max-message {max_message}: a message of the allowed \
                 size could never be queued; raise --max-queue-bytes or lower --max-message"
            ))
        }
        Some(n) => n,
    };
    let total = budget_total(per_conn, total, DEFAULT_MAX_QUEUE_BYTES_TOTAL, "--max-queue-bytes", "per connection")?;
    Ok((per_conn, total))
}

/// The total of a budget with a per-connection (or per-request) share: by
/// default `default` (or the share, when larger); never smaller than the
/// share, which could then never be used whole.
fn budget_total(per: usize, total: Option<usize>, default: usize, flag: &str, what: &str) -> Result<usize, String> {
    let total = total.unwrap_or(default.max(per));
    if total < per {
        return Err(format!(
            "{flag}-total {total} is smaller than {flag} {per} ({what}); raise {flag}-total or lower {flag}"
        ));
    }
    Ok(total)
}

/// Default `--max-outgoing-bytes`.
pub const DEFAULT_MAX_OUTGOING_BYTES: usize = 4 << 20;
/// Default `--max-outgoing-bytes-total` when `--max-outgoing-bytes` is not larger.
pub const DEFAULT_MAX_OUTGOING_BYTES_TOTAL: usize = 64 << 20;

/// `--max-outgoing-bytes` and its total, checked against each other.
/// (No relation to a message size: an empty queue takes any message.)
fn outgoing_bytes(per_conn: usize, total: Option<usize>) -> Result<(usize, usize), String> {
    let per_conn = per_conn.max(1);
    let total = budget_total(per_conn, total, DEFAULT_MAX_OUTGOING_BYTES_TOTAL, "--max-outgoing-bytes", "per client")?;
    Ok((per_conn, total))
}

/// The variable names `--pass-env` values give, for the server and for
/// `ws2http try` alike: each value is a comma-separated list (`A,B`, also
/// from `WS2HTTP_PASS_ENV`), spaces around a name are dropped, and an
/// empty item or a name that is not `[A-Za-z_][A-Za-z0-9_]*` is an error
/// (a typo would otherwise pass nothing, silently).
pub fn pass_env_names(values: &[String]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for value in values {
        for item in value.split(',') {
            let name = item.trim();
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "--pass-env {value:?}: {item:?} is not a variable name; expected NAME[,NAME...] \
                     (letters, digits and _)"
                ));
            }
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Where a backend server listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl Address {
    /// `host:port` or `unix:/path`.
    pub fn parse(s: &str) -> Result<Address, String> {
        match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(Address::Unix(p.into())),
            Some(_) => Err(format!("{s:?}: expected unix:/path/to/socket")),
            None if s.contains(':') => Ok(Address::Tcp(s.to_owned())),
            None => Err(format!("{s:?}: expected HOST:PORT or unix:/path")),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_byte_budgets_fit_each_other() {
        let mib = 1 << 20;
        assert_eq!(outgoing_bytes(4 * mib, None), Ok((4 * mib, 64 * mib)));
        assert_eq!(outgoing_bytes(100 * mib, None), Ok((100 * mib, 100 * mib)));
        assert_eq!(outgoing_bytes(mib, Some(mib)), Ok((mib, mib)));
        let e = outgoing_bytes(4 * mib, Some(mib)).unwrap_err();
        assert!(e.contains("--max-outgoing-bytes-total 1048576 is smaller than --max-outgoing-bytes 4194304"), "{e}");
    }

    #[test]
    fn queue_byte_budgets_fit_one_message_and_each_other() {
        let mib = 1 << 20;
        assert_eq!(queue_bytes(mib, None, None), Ok((4 * mib, 64 * mib)));
        // A bigger --max-message raises the defaults with it.
        assert_eq!(queue_bytes(100 * mib, None, None), Ok((100 * mib, 100 * mib)));
        assert_eq!(queue_bytes(mib, Some(mib), Some(mib)), Ok((mib, mib)));
        let e = queue_bytes(mib, Some(mib - 1), None).unwrap_err();
        assert!(e.contains("--max-queue-bytes 1048575 is smaller than --max-message 1048576"), "{e}");
        let e = queue_bytes(mib, None, Some(mib)).unwrap_err();
        assert!(e.contains("--max-queue-bytes-total 1048576 is smaller than --max-queue-bytes 4194304"), "{e}");
    }
}
