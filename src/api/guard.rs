//! Who may call the control API: a bearer token when one is set, and
//! without one, programs but not web pages (see the module docs of
//! [`crate::api`]).

use tide::{Next, Request, StatusCode};

use super::error;
use super::State;
use crate::hosts::AllowedHosts;

/// Compares without stopping at the first difference, so response timing
/// does not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}
/// Without a token: refuses requests made by a browser (see the module
/// docs), on every route. With one: every route but /healthz needs it.
pub(super) fn auth<'a>(
    req: Request<State>,
    next: Next<'a, State>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = tide::Result> + Send + 'a>> {
    Box::pin(async move {
        let open_route = req.url().path() == "/healthz";
        if req.state().token.is_none() {
            if let Some(refusal) = browser_context(&req, &req.state().hosts) {
                return refusal.respond(&req, &req.state().hosts);
            }
        }
        if let (Some(token), false) = (req.state().token.as_deref(), open_route) {
            let given = req
                .header("Authorization")
                .and_then(|v| v.last().as_str().strip_prefix("Bearer ").map(str::trim).map(str::to_owned));
            let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
            if !ok {
                log::warn!("api: {} {} refused: missing or wrong bearer token", req.method(), req.url().path());
                let mut r =
                    error(StatusCode::Unauthorized, "missing or wrong token: send Authorization: Bearer TOKEN")?;
                r.insert_header("WWW-Authenticate", "Bearer");
                return Ok(r);
            }
        }
        Ok(next.run(req).await)
    })
}
/// Why a request is taken for one made by a web browser.
#[derive(Debug, PartialEq, Eq)]
enum BrowserContext {
    /// An `Origin` header (browsers send it on cross-site requests and every POST).
    Origin(String),
    /// `Sec-Fetch-Site` other than `none` (a page made the request).
    FetchSite(String),
    /// A `Host` that is not the API's address (DNS rebinding), or not exactly one.
    Host(Option<String>),
}

fn browser_context(req: &Request<State>, hosts: &AllowedHosts) -> Option<BrowserContext> {
    let one = |name: &str| req.header(name).map(|v| v.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", "));
    if let Some(origin) = one("Origin") {
        return Some(BrowserContext::Origin(origin));
    }
    // Browsers send exactly `none` for a request the user made (the
    // address bar); anything else, `None` included, is not that.
    if let Some(site) = one("Sec-Fetch-Site").filter(|s| s != "none") {
        return Some(BrowserContext::FetchSite(site));
    }
    let host = req.header("Host").filter(|v| v.iter().count() == 1).map(|v| v.last().as_str().to_owned());
    match host {
        Some(h) if hosts.allows(&h) => None,
        other => Some(BrowserContext::Host(other)),
    }
}

impl BrowserContext {
    /// 403 or 421 with a JSON error saying what to do, and one log line.
    fn respond(&self, req: &Request<State>, hosts: &AllowedHosts) -> tide::Result {
        let (method, path) = (req.method(), req.url().path());
        let from_page = "without --api-token the control API serves programs (curl, cron jobs, scripts), \
                         not web pages: call it from server-side code, or start ws2http with --api-token \
                         TOKEN and send Authorization: Bearer TOKEN";
        let (status, why, msg) = match self {
            BrowserContext::Origin(o) => (
                StatusCode::Forbidden,
                format!("sent by a web page (Origin {})", crate::logging::quoted(o)),
                format!("refused: this request was made by a web page (Origin header); {from_page}"),
            ),
            BrowserContext::FetchSite(s) => (
                StatusCode::Forbidden,
                format!("sent by a web page (Sec-Fetch-Site {})", crate::logging::quoted(s)),
                format!("refused: this request was made by a web page (Sec-Fetch-Site header); {from_page}"),
            ),
            BrowserContext::Host(h) => {
                let host = h.as_deref().map_or("(missing or repeated)".to_owned(), crate::logging::quoted);
                let msg = format!(
                    "refused: Host {host} is not this API's address; use {} (as WS_API_URL does), \
                     or start ws2http with --api-allow-host NAME to accept another name",
                    hosts.url()
                );
                (StatusCode::MisdirectedRequest, format!("Host {host} is not this API's address"), msg)
            }
        };
        log::warn!("api: {method} {path} refused ({}): {why}", u16::from(status));
        error(status, msg)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
