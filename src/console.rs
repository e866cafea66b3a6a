//! The page served at `/` when no site is configured: lists the endpoints
//! and lets you talk to one from the browser. Compiled into the binary.

const PAGE: &str = include_str!("console.html");

/// The page with the endpoint list filled in.
pub fn page(endpoints: &[String]) -> String {
    let list = serde_json::to_string(endpoints).unwrap_or_else(|_| "[]".into());
    // `</` cannot end the script element from inside a JSON string.
    PAGE.replace("/*ENDPOINTS*/[]", &list.replace("</", "<\\/"))
}

/// Whether `/` serves the console: never with `--root` (its index is the
/// site), else as `--console`/`--no-console` say, and without either only on
/// a loopback listener. Elsewhere the page would show every endpoint to
/// anyone who reaches the listener, so it waits to be asked for.
pub fn enabled(cfg: &crate::config::Config, public: std::net::SocketAddr) -> bool {
    cfg.root.is_none() && cfg.console.unwrap_or_else(|| public.ip().is_loopback())
}

/// The start-up line that says where the console went when it is not served.
pub fn announce(cfg: &crate::config::Config, public: std::net::SocketAddr, on: bool) {
    match (cfg.root.is_some(), on, cfg.console) {
        (true, ..) => {}
        (false, true, _) if !public.ip().is_loopback() => log::warn!(
            "console: served at http://{public}/ to every client that reaches it (it lists the endpoints); \
             --no-console turns it off"
        ),
        (false, true, _) => {}
        (false, false, Some(false)) => log::info!("console: off (--no-console); GET / answers 404"),
        (false, false, _) => log::info!(
            "console: off because --listen {public} is not a loopback address (the page lists the endpoints to \
             anyone); turn it on with --console"
        ),
    }
}
