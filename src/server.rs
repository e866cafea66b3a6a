//! Wires everything together: binds the public listeners (one per
//! `--listen`, each serving the same site) and the control API listener,
//! builds each part's state from the configuration ([`WsState`],
//! [`ApiState`], [`SiteState`]), serves until a signal, then shuts down
//! gracefully (every connection closed with 1001 and its close event run).
//! Nothing depends on this module.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{FutureExt, StreamExt};

use crate::action::CloseCause;
use crate::api::state::ApiState;
use crate::backend::env::EnvSettings;
use crate::backend::spawn;
use crate::config::Config;
use crate::gateway::resolve::Resolved;
use crate::gateway::routes::{Files, Routes};
use crate::gateway::Limits;
use crate::http::state::SiteState;
use crate::ws::state::WsState;
use crate::{api, runtime};

/// The parts' states, each built once here from the configuration: the
/// WebSocket side's, the control API's and the public site's (which holds
/// the WebSocket side's, for upgrades).
struct States {
    ws: Arc<WsState>,
    api: Arc<ApiState>,
    site: Arc<SiteState>,
}

fn bind(addr: &str, flag: &str) -> Result<(TcpListener, SocketAddr), String> {
    let l = TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on {addr} ({flag}): {e}; pick another address or port"))?;
    let a = l.local_addr().map_err(|e| format!("{flag}: {e}"))?;
    Ok((l, a))
}

/// The address a local script uses to reach a listener bound to `a`.
fn local_url(mut a: SocketAddr) -> String {
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{a}")
}

/// Raises the soft limit on open files to the hard one (every connection,
/// every script's pipes take descriptors; the usual soft limit of 1024 is
/// far below `--max-connections`), and says so when even that is short.
fn raise_fd_limit(cfg: &Config) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    // A connection takes one descriptor; a running script three more.
    let needed = cfg.max_connections + 2 * cfg.max_http_connections + 4 * cfg.max_procs + 64;
    if (lim.rlim_cur as u128) < needed as u128 {
        log::warn!(
            "only {} open files allowed (ulimit -n) but --max-connections {} and --max-http-connections {} may \
             need {needed}: raise the limit (LimitNOFILE= in a systemd unit) or lower --max-connections",
            lim.rlim_cur,
            cfg.max_connections,
            cfg.max_http_connections
        );
    }
}

pub fn run(cfg: Config) -> Result<(), String> {
    // Ours name ring explicitly; redis's rediss:// builds on the process default (a panic were a second one compiled in).
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::config_outbound::check_needs_tls(&cfg.outbound, cfg.tls_enabled())?;
    raise_fd_limit(&cfg);
    let publics = bind_public(&cfg)?;
    let tls = tls_config(&cfg)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let redirect = redirect_listener(&cfg, publics[0].1.port())?;
    let (control, control_addr) = bind(&cfg.api_listen, "--api-listen")?;
    drop_ambient_capabilities();
    let states = build_states(&cfg, publics[0].1, control_addr, tls.is_some())?;
    // One site per public listener, each with its own names and console.
    let sites: Vec<_> = publics
        .into_iter()
        .enumerate()
        .map(|(i, (l, addr))| {
            let state = if i == 0 { states.site.clone() } else { Arc::new(states.site.for_listener(&cfg, addr)) };
            (site_app(&cfg, state), l, addr)
        })
        .collect();
    let control_app = api::routes(states.api.clone());

    // Installed before the "listening" lines, so a supervisor (or a test) that
    // signals right after reading them gets a graceful shutdown.
    let mut signals = async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let routes = &states.ws.routes;
    warn_missing_handlers(&cfg, routes);
    crate::startup_warnings::warn(&cfg, routes);
    for (_, _, addr) in &sites {
        println!("ws2http: listening on {scheme}://{addr}");
    }
    println!("ws2http: control API on http://{control_addr}");
    if let Some((_, a)) = &redirect {
        println!("ws2http: redirecting http://{a} to https:// on port {}", sites[0].2.port());
    }
    // Per listener (each decides for itself), but "--no-console" once.
    for (i, (app, _, addr)) in sites.iter().enumerate() {
        if i == 0 || cfg.console != Some(false) {
            crate::http::console::announce(&cfg, *addr, app.state().console);
        }
    }
    if let Some(s) = &cfg.script {
        log::info!("single-script mode: every path runs {}", s.display());
    } else {
        match routes.endpoints() {
            e if e.is_empty() && cfg.cgi_bin.as_os_str().is_empty() => log::info!("no WebSocket endpoints"),
            e if e.is_empty() => log::info!("no endpoints in {}", cfg.cgi_bin.display()),
            e => log::info!("endpoints in {}: {}", cfg.cgi_bin.display(), e.join(" ")),
        }
    }

    runtime::block_on(async move {
        let serve = async {
            let mut all: Serving =
                Box::pin(crate::listen::serve(control_app, control, listener(&cfg, "control API", true, None)));
            for (app, l, _) in sites {
                let settings = listener(&cfg, "public listener", false, tls.clone());
                all = Box::pin(all.race(crate::listen::serve(app, l, settings)));
            }
            if let Some((r, _)) = redirect {
                all = Box::pin(all.race(r));
            }
            match all.await {
                Ok(()) => Err("a listener stopped".to_owned()),
                Err(e) => Err(format!("listener failed: {e}")),
            }
        };
        let signalled = async {
            signals.next().await;
            Ok(())
        };
        serve.race(signalled).await?;
        shutdown(&states.ws, &cfg, &mut signals).await;
        Ok(())
    })
}

/// The TLS settings of the public listeners, or `None` for plain HTTP:
/// where the certificate comes from decides the resolver.
fn tls_config(cfg: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let (resolver, acme): (Arc<dyn rustls::server::ResolvesServerCert>, bool) = match (&cfg.tls_files, &cfg.acme) {
        (Some((cert, key)), None) => (crate::tls::files::start(cert, key)?, false),
        // ALPN acme-tls/1 too: the CA's TLS-ALPN-01 validations come to the listener.
        (None, Some(acme)) => (crate::tls::acme::start(acme.clone())?, true),
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => return Err("--tls-cert and --acme both give the certificate: use one of them".into()),
    };
    Ok(Some(crate::tls::server_config(resolver, acme)))
}

/// Every listener's accept loop, raced: the first to stop stops the server.
type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>>;

/// Every public listener (`--listen`, repeatable), bound before anything
/// starts: one that cannot be bound is a one-line error, as for the first.
fn bind_public(cfg: &Config) -> Result<Vec<(TcpListener, SocketAddr)>, String> {
    std::iter::once(&cfg.listen).chain(&cfg.extra_listen).map(|a| bind(a, "--listen")).collect()
}

/// Clears this process's ambient capabilities: every listener is bound by
/// now, and an ambient capability (contrib/ws2http-https.service gives
/// `CAP_NET_BIND_SERVICE` for ports 80 and 443) would pass to every script
/// and program ws2http starts. Without any, this changes nothing.
fn drop_ambient_capabilities() {
    // SAFETY: prctl(2) with integer arguments only; it changes this
    // process's own capability sets and touches no memory.
    let r = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    if r != 0 {
        log::warn!("could not clear the ambient capabilities: {}", std::io::Error::last_os_error());
    }
}

/// `--redirect-http`: bound with the other listeners (one that cannot be
/// bound is a one-line error), served beside them, redirecting to the
/// first public listener's port.
fn redirect_listener(cfg: &Config, tls_port: u16) -> Result<Option<(Serving, SocketAddr)>, String> {
    let Some(addr) = &cfg.outbound.redirect_http else { return Ok(None) };
    let (l, bound) = bind(addr, "--redirect-http")?;
    let app = crate::http::redirect::app(tls_port);
    Ok(Some((Box::pin(crate::listen::serve(app, l, listener(cfg, "redirect listener", false, None))), bound)))
}

/// The public site on one listener: every path to [`crate::http::public::handle`].
fn site_app(cfg: &Config, state: Arc<SiteState>) -> tide::Server<Arc<SiteState>> {
    let mut site = tide::with_state(state);
    site.at("/").all(crate::http::public::handle);
    site.at("/*path").all(crate::http::public::handle);
    if !cfg.response_headers.is_empty() {
        site.with(crate::http::extra_headers::ExtraHeaders(cfg.response_headers.clone()));
    }
    if let Some(max_age) = cfg.outbound.hsts.filter(|_| cfg.tls_enabled()) {
        site.with(crate::http::hsts::Hsts::new(max_age));
    }
    site
}

/// Each part's state: backends and their routes, the hub (and the cluster
/// behind it), and the settings handlers need, all decided here once.
fn build_states(
    cfg: &Config,
    public_addr: SocketAddr,
    control_addr: SocketAddr,
    https: bool,
) -> Result<States, String> {
    let env = EnvSettings {
        api_url: local_url(control_addr),
        api_token: cfg.api_token.clone().unwrap_or_default(),
        inherited: cfg.inherited_env.clone(),
        document_root: cfg.root.clone().unwrap_or_else(|| cfg.cgi_bin.clone()),
        flavour: cfg.cgi_flavour,
        https,
    };
    let limits = Limits { timeout: cfg.timeout, max_output: cfg.max_output };
    let setup = crate::backend::Setup { cfg, env: &env, limits };
    let routes = Arc::new(crate::backend::routes(&setup)?);
    let page_routes = crate::backend::page_routes(&setup, &routes)?;
    let outgoing = crate::hub::outgoing::OutgoingBudget::new(
        cfg.max_outgoing_bytes,
        cfg.max_outgoing_bytes_total,
        &crate::metrics::get().outgoing_bytes,
    );
    let redis =
        cfg.redis.as_deref().map(|url| crate::hub::cluster::Redis { url, ca: cfg.outbound.redis_ca.as_deref() });
    // The message bytes recorded for a session moving here while its
    // snapshot travels (0: sessions off): its buffer's bound with room for
    // the encoding, its request, rooms and metadata. A snapshot itself is
    // judged by what it keeps (`--resume-buffer`, `--resume-buffer-bytes`).
    let snapshot = cfg.resume.map_or(0, |r| r.buffer_bytes / 3 * 4 + cfg.max_request_head + (64 << 10));
    let (hub, delivery) = crate::hub::start(redis, cfg.cluster_queue, cfg.out_queue, outgoing, snapshot)?;
    let ws = Arc::new(WsState::new(cfg, hub.clone(), delivery.clone(), routes, public_addr.port()));
    crate::ws::session::end_orphans(&ws);
    crate::ws::session::adopt_handed(&ws);
    let api = Arc::new(ApiState::new(cfg, hub, delivery, control_addr));
    let mut site = SiteState::new(cfg, ws.clone(), public_addr);
    site.page_routes = page_routes;
    let site = Arc::new(site);
    Ok(States { ws, api, site })
}

fn listener(
    cfg: &Config,
    name: &'static str,
    one_request: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> crate::listen::Listener {
    crate::listen::Listener {
        tls,
        name,
        options: crate::http1::conn::Options { max_head: cfg.max_request_head, timeout: cfg.http_timeout, one_request },
        max_connections: cfg.max_http_connections,
        max_per_ip: cfg.max_http_connections_per_ip,
    }
}

/// Closes every connection with 1001 and waits for the close events to run,
/// then stops every process group a script started that is still alive
/// (SIGTERM, SIGKILL after the grace period): nothing ws2http started
/// outlives it. A second signal SIGKILLs every group and exits at once.
async fn shutdown(app: &WsState, cfg: &Config, signals: &mut async_signal::Signals) {
    let graceful = async {
        // Cluster mode: resumable sessions move to other instances first.
        app.delivery.hand_off().await;
        let n = app.hub.close_all(1001, "server shutdown", CloseCause::Shutdown);
        log::info!("shutting down: closing {n} connection(s)");
        let deadline = Instant::now() + cfg.timeout + Duration::from_secs(5);
        while !app.hub.is_empty() && Instant::now() < deadline {
            runtime::sleep(Duration::from_millis(20)).await;
        }
        if !app.hub.is_empty() {
            log::warn!("shutdown: {} close event(s) did not finish in time", app.hub.len());
        }
        spawn::groups::stop_all(spawn::GRACE).await;
    };
    let again = async {
        signals.next().await;
        let n = spawn::groups::kill_all();
        log::warn!("second signal: SIGKILL to {n} process group(s), exiting now");
        std::process::exit(130);
    };
    graceful.race(again).await;
    app.delivery.leave().await;
    log::info!("shutdown complete");
}

/// One warning per handler program that cannot be started, before the
/// "listening" lines: for every `--handler` given, and for the default
/// `php=php-cgi` when a `.php` script would need it (one in `--cgi-bin`, or
/// the single script, not routed to a FastCGI or HTTP backend).
fn warn_missing_handlers(cfg: &Config, routes: &Routes) {
    let missing = crate::config::missing_handler_programs(&cfg.handlers);
    if missing.is_empty() {
        return;
    }
    // The scripts a handler runs: the spawned ones (a backend server runs
    // its own).
    let spawned = |e: String| match routes.resolve(&e) {
        Resolved::Found(r) if r.route.files == Files::Spawned => Some(r.target.filename.display().to_string()),
        _ => None,
    };
    let scripts: Vec<String> = routes.endpoints().into_iter().filter_map(spawned).collect();
    for (ext, program, fix) in missing {
        let suffix = format!(".{ext}");
        let used = scripts.iter().filter(|s| s.ends_with(&suffix)).count();
        if used == 0 && cfg.default_handlers.contains(&ext) {
            continue;
        }
        log::warn!(
            "handler for .{ext} scripts: {program:?} is not installed or not in PATH; \
             {used} .{ext} script(s) will fail with 500 until it is: {fix}"
        );
    }
}
