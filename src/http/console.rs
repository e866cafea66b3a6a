//! The page served at `/` when no site is configured: lists the endpoints
//! and lets you talk to one from the browser. Compiled into the binary.

const PAGE: &str = include_str!("console.html");

/// The log target of this module's lines: its path before it moved into
/// `http/`, which operators' `RUST_LOG` filters name.
const LOG: &str = "ws2http::console";

/// The page with the endpoint list filled in.
pub fn page(endpoints: &[String]) -> String {
    let list = serde_json::to_string(endpoints).unwrap_or_else(|_| "[]".into());
    // `</` cannot end the script element from inside a JSON string.
    PAGE.replace("/*ENDPOINTS*/[]", &list.replace("</", "<\\/"))
}

/// Whether `/` serves the console: never with `--root` (its index is the
/// site), else as `--console`/`--no-console` say, and without either only
/// where no one but this machine reaches it: a loopback listener that
/// answers to no `--allow-host` name. Elsewhere the page would show every
/// endpoint (and the refusal lookup, keyed by client IP, which behind a
/// proxy is one IP for everyone) to anyone, so it waits to be asked for.
pub fn enabled(cfg: &crate::config::Config, public: std::net::SocketAddr) -> bool {
    cfg.root.is_none() && cfg.console.unwrap_or_else(|| exposure(cfg, public).is_none())
}

/// Why other machines reach the listener, when they do: a non-loopback
/// `--listen`, or an `--allow-host` name (a proxy forwards the world to a
/// loopback listener under that name).
fn exposure(cfg: &crate::config::Config, public: std::net::SocketAddr) -> Option<String> {
    if !public.ip().is_loopback() {
        return Some(format!("--listen {public} is not a loopback address"));
    }
    let names: Vec<String> = cfg.allow_host.iter().map(ToString::to_string).collect();
    (!names.is_empty()).then(|| format!("--allow-host {} names a public host", names.join(",")))
}

/// The start-up line that says where the console went when it is not served.
pub fn announce(cfg: &crate::config::Config, public: std::net::SocketAddr, on: bool) {
    match (cfg.root.is_some(), on, cfg.console, exposure(cfg, public)) {
        (true, ..) => {}
        (false, true, _, Some(why)) => log::warn!(
            target: LOG,
            "console: served at {}://{public}/ to every client that reaches it ({why}; the page lists the \
             endpoints); --no-console turns it off",
            if cfg.tls_enabled() { "https" } else { "http" }
        ),
        (false, true, _, None) => {}
        (false, false, Some(false), _) => log::info!(target: LOG, "console: off (--no-console); GET / answers 404"),
        (false, false, _, why) => log::info!(
            target: LOG,
            "console: off because {} (the page lists the endpoints to anyone); turn it on with --console",
            why.unwrap_or_default()
        ),
    }
}

/// The body of `GET /` when the console is off: what happened and the flag.
pub const OFF_BODY: &str =
    "not found: the console is off on this server; start ws2http with --console to serve it at /";
