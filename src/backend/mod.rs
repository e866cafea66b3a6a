//! Transports: how an event reaches the program that answers it. Each is a
//! [`crate::gateway::Transport`] and nothing more; the output pipeline they
//! all feed is the gateway's.
//!
//! - [`spawn`]: a fresh process per event (CGI): the local scripts, every
//!   path no other route takes.
//! - [`fastcgi`]: a request to a FastCGI server (php-fpm).
//! - [`http`]: a POST to a web server.
//!
//! [`env`] describes an event the CGI way (for `spawn` and `fastcgi`), and
//! [`pool`] holds the connections of the network transports.
//!
//! Each backend that serves path prefixes builds its own routes from the
//! configuration (`NAME::routes`, beside its transport) and is listed once,
//! in [`BACKENDS`]; [`routes`] builds the whole routing table from them.
//! Nothing else in the program names a backend: a new one is `NAME.rs`, its
//! line here, and its flag in `config.rs`.

pub mod env;
pub mod fastcgi;
pub mod http;
pub mod pool;
pub mod spawn;
pub mod tls_client;

use std::sync::Arc;

use crate::config::Config;
use crate::gateway::resolve::Resolver;
use crate::gateway::routes::{Files, Pages, Route, Routes};
use crate::gateway::Limits;
use env::EnvSettings;

/// What every backend builds its routes from.
pub struct Setup<'a> {
    pub cfg: &'a Config,
    /// The CGI environment's fixed part (the control API's URL and token).
    pub env: &'a EnvSettings,
    /// `--timeout`, `--max-output`.
    pub limits: Limits,
}

/// A backend's routes: one per prefix its flag gives (none without it).
/// The error is the line for the user.
pub type Builder = fn(&Setup<'_>) -> Result<Vec<Route>, String>;

/// Every backend that serves path prefixes. For equal prefixes the first
/// listed wins (then the first given).
pub const BACKENDS: &[Builder] = &[fastcgi::routes, http::routes];

/// The routing table: every backend's routes, and the local scripts for
/// every other path.
pub fn routes(setup: &Setup<'_>) -> Result<Routes, String> {
    let mut prefixed = Vec::new();
    for build in BACKENDS {
        prefixed.extend(build(setup)?);
    }
    let cfg = setup.cfg;
    let resolver = Resolver::new(cfg.cgi_bin.clone(), cfg.script.clone(), cfg.handlers.clone());
    Ok(Routes::new(resolver, prefixed, scripts(setup)))
}

/// The table plain HTTP requests use: the same as the events' (ws2http:
/// `--cgi-bin` scripts serve pages too), one of websocketd's `--cgidir`
/// alone (its WebSocket scripts never run for a plain request), or none.
pub fn page_routes(setup: &Setup<'_>, all: &Arc<Routes>) -> Result<Option<Arc<Routes>>, String> {
    let dir = match &setup.cfg.page_scripts {
        crate::config::PageScripts::CgiBin => return Ok(Some(all.clone())),
        crate::config::PageScripts::Off => return Ok(None),
        crate::config::PageScripts::Dir(dir) => dir,
    };
    let mut cfg = setup.cfg.clone();
    (cfg.cgi_bin, cfg.script, cfg.page_scripts) = (dir.clone(), None, crate::config::PageScripts::CgiBin);
    let env = EnvSettings { document_root: dir.clone(), ..setup.env.clone() };
    Ok(Some(Arc::new(routes(&Setup { cfg: &cfg, env: &env, limits: setup.limits })?)))
}

/// The local scripts' route: spawned, one process per event. The single
/// script speaks WebSocket only: it serves no pages.
fn scripts(setup: &Setup<'_>) -> Route {
    let mut env = setup.env.clone();
    // Without --root, the single script's PATH_INFO is translated against
    // its own directory (there is no --cgi-bin then).
    if let (Some(script), None) = (&setup.cfg.script, &setup.cfg.root) {
        env.document_root = script.parent().map_or_else(|| "/".into(), std::path::Path::to_path_buf);
    }
    let mut spawn = spawn::Spawn::new(env, setup.limits, Default::default(), setup.cfg.max_procs);
    let websocketd = setup.cfg.cgi_flavour == crate::config::CgiFlavour::Websocketd;
    spawn.launch = spawn::Launch {
        args: setup.cfg.script_args.clone(),
        argv0: setup.cfg.script_argv0.clone(),
        keep_cwd: websocketd,
    };
    let spawn = Arc::new(spawn);
    let pages: Option<Arc<dyn Pages>> = match setup.cfg.script {
        Some(_) => None,
        None => Some(spawn.clone()),
    };
    Route { prefix: "/".into(), transport: spawn, pages, files: Files::Spawned }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(args: &[&str]) -> Vec<(String, Files, bool)> {
        use clap::Parser;
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgi-bin");
        let flags = ["ws2http", "--cgi-bin", fixtures].into_iter().chain(args.iter().copied());
        let cfg = crate::config::Cli::try_parse_from(flags).expect("flags").into_config().expect("config");
        let env = EnvSettings {
            api_url: "http://127.0.0.1:1".into(),
            api_token: String::new(),
            inherited: vec![],
            document_root: cfg.cgi_bin.clone(),
            ..EnvSettings::default()
        };
        let limits = Limits { timeout: std::time::Duration::from_secs(1), max_output: 1 };
        let routes = routes(&Setup { cfg: &cfg, env: &env, limits }).expect("routes");
        routes.all().map(|r| (r.prefix.clone(), r.files, r.pages.is_some())).collect()
    }

    #[test]
    fn every_backend_builds_its_own_routes_and_the_local_scripts_take_the_rest() {
        let args = ["--fastcgi", "/php=127.0.0.1:9", "--backend-url", "/api=http://127.0.0.1:9/ws"];
        let expected = [
            ("/php".to_owned(), Files::RunByServer, true),
            ("/api".to_owned(), Files::None, false),
            ("/".to_owned(), Files::Spawned, true),
        ];
        assert_eq!(table(&args), expected);
        assert_eq!(table(&[]), [("/".to_owned(), Files::Spawned, true)]);
        let single = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgi-bin/mirror.sh");
        assert_eq!(table(&[single]), [("/".to_owned(), Files::Spawned, false)], "the single script serves no pages");
    }
}
