//! The public listener's routing: a WebSocket upgrade goes to its endpoint;
//! a plain request runs a script as classic CGI (spawned or through
//! FastCGI), or gets a static file from `--root`, or the start page.

use std::sync::Arc;

use tide::{Request, Response, StatusCode};

use crate::gateway::resolve::Resolved;
use crate::gateway::response::{Reply, RequestBody};
use crate::http1::request::text_response as text;
use crate::ws;

use super::state::SiteState;

/// The log target of this module's lines: its path before it moved into
/// `http/`, which operators' `RUST_LOG` filters (and tests/logs.rs) name.
const LOG: &str = "ws2http::public";

/// Internal redirects (`Location: /path` from a script) followed per request.
const MAX_LOCAL_REDIRECTS: usize = 5;

/// Every request on the public listener: WebSocket upgrades go to the
/// endpoint's script; plain requests run a script as classic CGI, or get a
/// static file (`--root`), or the start page.
pub async fn handle(mut req: Request<Arc<SiteState>>) -> tide::Result {
    if let Some(refused) = misdirected(&req) {
        return Ok(refused);
    }
    if ws::upgrade::is_upgrade(&req) {
        let (app, attempt) = (req.state().clone(), crate::http::refusals::Attempt::of(&req));
        let res = ws::upgrade::handle(req, &app.ws).await?;
        return Ok(crate::http::refusals::Refusals::note(&app, attempt, res).await);
    }
    if let Some(answer) = crate::http::refusals::Refusals::answer(&req) {
        return Ok(answer);
    }
    let inm = req.header("If-None-Match").map(|h| h.last().as_str());
    if let Some(answer) = crate::http::client_js::answer(req.url().path(), req.method(), inm) {
        return Ok(answer);
    }
    let app = req.state().clone();
    let mut info = crate::http1::request::request_info(&req, app.port);
    let (mut path, _) = crate::http1::request::raw_path_and_query(&req);
    // Read when a script is about to run (a static file or 404 needs no
    // body); a local redirect runs its script with an empty one.
    let mut body = None;
    for _ in 0..=MAX_LOCAL_REDIRECTS {
        let page = app.page_routes.as_ref().map_or(Resolved::NotFound, |r| r.page(&path));
        let (target, pages) = match page {
            Resolved::Found(page) => page,
            // Never a static file instead: its source could leak.
            Resolved::NotRunnable(why) => {
                log::error!(target: LOG, "{path}: {why}");
                return Ok(text(StatusCode::InternalServerError, "the script cannot be run; see the server log"));
            }
            // No script, or its route serves no pages (an HTTP backend,
            // the single script).
            Resolved::NotFound => return Ok(fallback(&app, &path, &req).await),
        };
        let request_body = match body.take() {
            Some(b) => b,
            None => match script_body(&mut req, &info).await {
                Ok(b) => b,
                Err(refused) => return Ok(refused),
            },
        };
        match pages.serve(&info, &target, request_body).await {
            Reply::Response(r) => return Ok(*r),
            Reply::LocalRedirect(location) => {
                body = Some(Default::default());
                log::debug!(target: LOG, "{path}: local redirect to {location}");
                let (p, q) = location.split_once('?').unwrap_or((&location, ""));
                path = p.to_owned();
                info = info.with_request_line("GET", &location, q);
            }
        }
    }
    // The request's last line says what the client got, like every page's.
    log::error!(
        target: LOG,
        "{} {path} {}: more than {MAX_LOCAL_REDIRECTS} local redirects; answering 500",
        info.method(),
        info.remote_addr()
    );
    Ok(text(StatusCode::InternalServerError, "too many local redirects"))
}

/// A request for a name this listener does not answer to (DNS rebinding
/// on loopback, see [`crate::hosts`]): 421 and one log line.
fn misdirected(req: &Request<Arc<SiteState>>) -> Option<Response> {
    let host = req.header("Host").map(|h| h.last().as_str());
    if req.state().public_hosts.allows(host) {
        return None;
    }
    let host = host.unwrap_or_default();
    log::warn!(
        target: LOG, "{}: refused a request for Host {} with 421: not a name of this server (a web page using DNS \
         rebinding, or a name to allow with --allow-host)",
        req.peer_addr().unwrap_or("?"),
        crate::logging::quoted(host)
    );
    let mut r = text(
        StatusCode::MisdirectedRequest,
        &format!(
            "this server does not answer to {}; start ws2http with --allow-host NAME to serve that name",
            crate::logging::quoted(host)
        ),
    );
    r.insert_header("Connection", "close");
    Some(r)
}

/// The request body for a script, read whole before the script runs (see
/// [`crate::http1::body`]); a refusal (413, 503, 400, 408) closes the
/// connection.
async fn script_body(
    req: &mut Request<Arc<SiteState>>,
    info: &crate::event::RequestInfo,
) -> Result<RequestBody, Response> {
    use crate::http1::body::read_for_script;
    let app = req.state().clone();
    let content_type = req.ext::<crate::http1::head::RawHead>().and_then(|raw| raw.content_type.clone());
    let declared = req.len();
    let mut reader = req.take_body();
    let read = read_for_script(&mut reader, declared, &app.body_budget, app.http_timeout).await;
    let (code, why) = match read {
        Ok(body) => return Ok(RequestBody { body, content_type }),
        Err(e) => e.answer(app.body_budget.per_request, "--max-request-body"),
    };
    log::warn!(target: LOG, "{} {} {}: refused with {code}: {why}", info.method(), info.uri(), info.remote_addr());
    let status = StatusCode::try_from(code).unwrap_or(StatusCode::BadRequest);
    let mut r = text(status, &why);
    r.insert_header("Connection", "close");
    if status == StatusCode::ServiceUnavailable {
        r.insert_header("Retry-After", "5");
    }
    Err(r)
}

/// No script: a static file, the start page, or 404; logged at debug
/// (a page's many files would drown the events at the default level).
async fn fallback(app: &SiteState, path: &str, req: &Request<Arc<SiteState>>) -> Response {
    let res = page(app, path, req).await;
    let peer = req.peer_addr().unwrap_or("?");
    log::debug!(target: LOG, "{} {path} {peer}: {}", req.method(), u16::from(res.status()));
    res
}

/// [`fallback`]'s answer.
async fn page(app: &SiteState, path: &str, req: &Request<Arc<SiteState>>) -> Response {
    if app.root.is_none() && !app.console && path == "/" {
        return text(StatusCode::NotFound, crate::http::console::OFF_BODY);
    }
    if let Some(root) = &app.root {
        let not_files = crate::http::static_files::NotFiles {
            scripts: app.routes.resolver(),
            pages: app.page_routes.as_ref().map(|r| r.resolver()),
            named: &app.named_files,
        };
        return crate::http::static_files::serve(root, &not_files, path, req).await;
    }
    // HEAD answers like GET (the writer drops the body, keeps its length).
    if path == "/" && matches!(req.method(), tide::http::Method::Get | tide::http::Method::Head) {
        let mut r = Response::new(StatusCode::Ok);
        r.set_content_type("text/html; charset=utf-8");
        r.set_body(crate::http::console::page(&app.routes.endpoints()));
        return r;
    }
    text(StatusCode::NotFound, "not found")
}
