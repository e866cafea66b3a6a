//! Headers the operator adds to public responses (websocketd's `--header`,
//! `--header-ws`, `--header-http`): every response gets `all`, a successful
//! upgrade (`101`) also `ws`, any other response also `http`, as websocketd
//! adds them. A tide middleware, so every answer of the public site passes
//! through it; answers written before routing (a busy listener's 503, a
//! malformed request's 400) carry none, and neither does a refused upgrade
//! (403, 404, 429), as in websocketd 0.4.1.

use tide::{Next, Request, StatusCode};

use crate::config::ResponseHeaders;

/// The middleware; installed only when a header was given.
pub struct ExtraHeaders(pub ResponseHeaders);

#[tide::utils::async_trait]
impl<S: Clone + Send + Sync + 'static> tide::Middleware<S> for ExtraHeaders {
    async fn handle(&self, req: Request<S>, next: Next<'_, S>) -> tide::Result {
        let upgrade = crate::ws::upgrade::is_upgrade(&req);
        let mut res = next.run(req).await;
        if upgrade && res.status() != StatusCode::SwitchingProtocols {
            return Ok(res);
        }
        let more = if res.status() == StatusCode::SwitchingProtocols { &self.0.ws } else { &self.0.http };
        for (name, value) in self.0.all.iter().chain(more) {
            res.append_header(name.as_str(), value.as_str());
        }
        Ok(res)
    }
}
