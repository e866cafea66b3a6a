//! `--hsts SECONDS`: `Strict-Transport-Security: max-age=SECONDS` on every
//! answer of the HTTPS listener, so a browser that once reached the site
//! over HTTPS refuses plain `http://` to it (and never sends a cookie in
//! the clear) for that long. Opt-in, as it cannot be taken back before it
//! expires: a site that later drops HTTPS is unreachable for its visitors.
//! No `includeSubDomains` or `preload`: they bind names this server may not
//! own. A tide middleware like [`super::extra_headers`], so answers written
//! before routing (a busy listener's 503, a malformed request's 400) carry
//! none; every page, script, file, console and upgrade answer does.

use tide::{Next, Request};

/// The middleware; installed only on an HTTPS listener with `--hsts`.
pub struct Hsts {
    value: String,
}

impl Hsts {
    pub fn new(max_age: u64) -> Hsts {
        Hsts { value: format!("max-age={max_age}") }
    }
}

#[tide::utils::async_trait]
impl<S: Clone + Send + Sync + 'static> tide::Middleware<S> for Hsts {
    async fn handle(&self, req: Request<S>, next: Next<'_, S>) -> tide::Result {
        let mut res = next.run(req).await;
        // A script's own header wins: it knows its site's policy.
        if res.header("Strict-Transport-Security").is_none() {
            res.insert_header("Strict-Transport-Security", self.value.as_str());
        }
        Ok(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_carries_the_header_unless_it_has_its_own() {
        let mut app = tide::new();
        app.with(Hsts::new(31536000));
        app.at("/").get(|_| async { Ok("hi") });
        app.at("/own").get(|_| async {
            let mut r = tide::Response::new(200);
            r.insert_header("Strict-Transport-Security", "max-age=0");
            Ok(r)
        });
        let get = |path: &str| {
            let req = tide::http::Request::new(tide::http::Method::Get, format!("https://example.org{path}").as_str());
            let res: tide::http::Response = crate::runtime::block_on(app.respond(req)).expect("a response");
            res.header("Strict-Transport-Security").map(|v| v.as_str().to_owned())
        };
        assert_eq!(get("/").as_deref(), Some("max-age=31536000"));
        assert_eq!(get("/missing").as_deref(), Some("max-age=31536000"), "404s too");
        assert_eq!(get("/own").as_deref(), Some("max-age=0"));
    }
}
