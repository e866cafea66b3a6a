//! Warnings logged once at start-up, before the "listening" lines, for a
//! setup that will fail on the first connection: a single SCRIPT that cannot
//! run, a `--cgi-bin` with no endpoint at all, or a `--per-connection`
//! pattern that only a FastCGI or HTTP backend's paths match. Each is one line that says
//! how to fix it. (A handler program missing from PATH is reported by
//! `server::warn_missing_handlers`.)

use std::path::Path;

use crate::config::Config;
use crate::gateway::resolve::Resolved;
use crate::gateway::routes::{Files, Route, Routes};

/// Logs every warning that applies to `cfg`.
pub fn warn(cfg: &Config, routes: &Routes) {
    for line in warnings(cfg, routes) {
        log::warn!("{line}");
    }
}

/// The warning lines for `cfg` (for tests, and for [`warn`]).
pub fn warnings(cfg: &Config, routes: &Routes) -> Vec<String> {
    let mut out = unselectable_patterns(cfg, routes);
    if let Some(acme) = &cfg.acme {
        let listen: Vec<&str> = std::iter::once(&cfg.listen).chain(&cfg.extra_listen).map(String::as_str).collect();
        out.extend(crate::tls::acme::listen_warning(acme, &listen));
    }
    if let Some(script) = &cfg.script {
        if let Resolved::NotRunnable(_) = routes.target("/") {
            out.push(script_not_runnable(script));
        }
        return out;
    }
    // A backend server's routes are endpoints the local scripts cannot see.
    let served_elsewhere = routes.all().any(|r| r.files != Files::Spawned);
    if served_elsewhere || !routes.endpoints().is_empty() {
        return out;
    }
    let idle = not_executable(&cfg.cgi_bin);
    let why = match idle.len() {
        0 => "it has no scripts".to_owned(),
        n => format!("{n} file(s) in it are not executable: {}", idle[..n.min(5)].join(" ")),
    };
    out.push(format!(
        "no WebSocket endpoints: --cgi-bin {} has no runnable script ({why}); add a script and `chmod +x` it \
         (with a #! line), or pass --handler EXT=PROGRAM, or give a single SCRIPT",
        cfg.cgi_bin.display()
    ));
    out
}

/// A `--per-connection` pattern whose every match is served by a FastCGI
/// or HTTP backend selects nothing (only spawned scripts can run one
/// process per connection).
fn unselectable_patterns(cfg: &Config, routes: &Routes) -> Vec<String> {
    let mut out = Vec::new();
    for p in &cfg.per_connection.patterns {
        let lit = &p[..p.find(['*', '?']).unwrap_or(p.len())];
        // The route under which every path the pattern matches lies.
        let under = |r: &&Route| {
            let base = r.prefix.trim_end_matches('/');
            let rest = lit.strip_prefix(base);
            rest.is_some_and(|rest| rest.starts_with('/') || (rest.is_empty() && lit.len() == p.len()))
        };
        let route = routes.all().filter(under).max_by_key(|r| r.prefix.len());
        if let Some(r) = route.filter(|r| r.files != Files::Spawned) {
            out.push(format!(
                "--per-connection {p}: selects nothing: {} is served by a FastCGI or HTTP backend, which runs one \
                 request per event (only local scripts can run one process per connection)",
                r.prefix
            ));
        }
    }
    out
}

fn script_not_runnable(script: &Path) -> String {
    let ext = script.extension().and_then(|e| e.to_str()).filter(|e| !e.is_empty()).unwrap_or("EXT");
    format!(
        "SCRIPT {0} is not executable: every connection will be refused (500) until you run `chmod +x {0}` \
         (with a #! line) or pass --handler {ext}=PROGRAM",
        script.display()
    )
}

/// Names of the files directly in `dir` that are not executable.
fn not_executable(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 == 0))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}
