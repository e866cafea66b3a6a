//! The routing table, built once at start-up: which transport runs the
//! events of a path, whether it serves pages (plain HTTP requests), and
//! whether it needs a local file. Every decision about a path is made here;
//! file lookups follow the [`Resolver`]'s rules.
//!
//! Routes are path prefixes (`--fastcgi PREFIX=…`, `--backend-url
//! PREFIX=…`), longest first; a path under none of them goes to the local
//! scripts (spawned).

use std::path::PathBuf;
use std::sync::Arc;

use percent_encoding::percent_decode_str;

use super::resolve::{has_prefix, is_safe, Located, Resolved, Resolver};
use super::response::{Reply, RequestBody};
use super::{BoxFuture, Transport};
use crate::event::{RequestInfo, Target};

/// Serves a plain HTTP request to a script (classic CGI).
pub trait Pages: Send + Sync {
    fn serve<'a>(&'a self, info: &'a RequestInfo, target: &'a Target, body: RequestBody) -> BoxFuture<'a, Reply>;
}

/// What a route needs on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Files {
    /// A local script that is spawned: executable, or run by a `--handler`.
    Spawned,
    /// A local script a backend server runs (FastCGI): a `.php` file needs
    /// no exec bit.
    RunByServer,
    /// Nothing local (an HTTP backend): the prefix is SCRIPT_NAME, the rest
    /// of the path PATH_INFO.
    None,
}

/// One line of the table.
pub struct Route {
    /// `/` covers every path.
    pub prefix: String,
    pub transport: Arc<dyn Transport>,
    /// `None`: plain requests get a static file or 404 instead.
    pub pages: Option<Arc<dyn Pages>>,
    pub files: Files,
}

/// Where a path leads: a route with no local file, or a local file and
/// the route above it.
enum Place<'r> {
    Remote(Routed<'r>),
    Local(Located, &'r Route),
}

/// A path's target and the route that serves it.
pub struct Routed<'r> {
    pub target: Target,
    pub route: &'r Route,
}

pub struct Routes {
    resolver: Resolver,
    /// Prefix routes, longest prefix first (equal prefixes: first given).
    prefixed: Vec<Route>,
    /// Everything else: the local scripts.
    scripts: Route,
}

impl Routes {
    /// The table: `prefixed` in any order, `scripts` for the rest.
    pub fn new(resolver: Resolver, mut prefixed: Vec<Route>, scripts: Route) -> Self {
        prefixed.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Routes { resolver, prefixed, scripts }
    }

    /// The file rules (static files ask it what is a script).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Resolves a raw (still percent-encoded) URL path: the longest prefix
    /// route that needs no file takes it as is; otherwise the local script
    /// it names, served by the longest route above that script.
    pub fn resolve(&self, raw_path: &str) -> Resolved<Routed<'_>> {
        match self.locate(raw_path) {
            Some(Place::Remote(routed)) => Resolved::Found(routed),
            Some(Place::Local(found, route)) => self.runnable(found, route),
            None => Resolved::NotFound,
        }
    }

    /// What serves a plain HTTP request for a raw URL path: the script and
    /// the route's [`Pages`]. A path whose route serves no pages (an HTTP
    /// backend, the single script, which speaks WebSocket only) is
    /// `NotFound`, runnable or not: the caller serves a static file or 404.
    pub fn page(&self, raw_path: &str) -> Resolved<(Target, Arc<dyn Pages>)> {
        let (found, route) = match self.locate(raw_path) {
            Some(Place::Local(found, route)) if route.pages.is_some() => (found, route),
            _ => return Resolved::NotFound,
        };
        match (self.runnable(found, route), &route.pages) {
            (Resolved::Found(r), Some(pages)) => Resolved::Found((r.target, pages.clone())),
            (Resolved::NotRunnable(why), _) => Resolved::NotRunnable(why),
            _ => Resolved::NotFound,
        }
    }

    /// Every route, the local scripts' last.
    pub fn all(&self) -> impl Iterator<Item = &Route> {
        self.prefixed.iter().chain(std::iter::once(&self.scripts))
    }

    /// Where a path leads, before any check that a local file can be run.
    fn locate(&self, raw_path: &str) -> Option<Place<'_>> {
        let longest = self.prefixed.iter().find(|r| has_prefix(raw_path, &r.prefix));
        if let Some(route) = longest.filter(|r| r.files == Files::None) {
            if !is_safe(raw_path) {
                return None;
            }
            return Some(Place::Remote(Routed { target: remote_target(&route.prefix, raw_path), route }));
        }
        let found = self.resolver.locate(raw_path)?;
        let route = self.route_of(&found.script_name);
        Some(Place::Local(found, route))
    }

    /// A located local file's target on `route`, if it can be run there.
    fn runnable<'r>(&self, found: Located, route: &'r Route) -> Resolved<Routed<'r>> {
        match self.resolver.runnable(found, route.files == Files::RunByServer) {
            Resolved::Found(target) => Resolved::Found(Routed { target, route }),
            Resolved::NotFound => Resolved::NotFound,
            Resolved::NotRunnable(why) => Resolved::NotRunnable(why),
        }
    }

    /// Resolves a path to its target only.
    pub fn target(&self, raw_path: &str) -> Resolved {
        match self.resolve(raw_path) {
            Resolved::Found(r) => Resolved::Found(r.target),
            Resolved::NotFound => Resolved::NotFound,
            Resolved::NotRunnable(why) => Resolved::NotRunnable(why),
        }
    }

    /// Every endpoint under `--cgi-bin` (for listings), as URL paths, sorted.
    pub fn endpoints(&self) -> Vec<String> {
        self.resolver.endpoints_where(&|url| matches!(self.resolve(url), Resolved::Found(_)))
    }

    /// The route of a script's SCRIPT_NAME.
    fn route_of(&self, script_name: &str) -> &Route {
        self.prefixed.iter().find(|r| has_prefix(script_name, &r.prefix)).unwrap_or(&self.scripts)
    }
}

/// The target of a path under `prefix` on a route with no local file.
fn remote_target(prefix: &str, raw_path: &str) -> Target {
    let script_name = if prefix == "/" { String::new() } else { prefix.to_owned() };
    let rest = &raw_path[script_name.len()..];
    let path_info = percent_decode_str(rest).decode_utf8_lossy().into_owned();
    Target { filename: PathBuf::new(), script_name, path_info, interpreter: None }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;
    use crate::event::Event;
    use crate::gateway::slots::Slots;
    use crate::gateway::{Call, Limits, Outcome};

    /// A transport known by its name only.
    struct Named(&'static str, Limits, Arc<Slots>);

    impl Transport for Named {
        fn via(&self) -> &str {
            self.0
        }
        fn limits(&self) -> &Limits {
            &self.1
        }
        fn slots(&self) -> &Arc<Slots> {
            &self.2
        }
        fn exchange<'a>(&'a self, _: &'a Event, _: &'a mut Call<'_>) -> BoxFuture<'a, Outcome> {
            Box::pin(async { Outcome::Success })
        }
    }

    fn route(prefix: &str, name: &'static str, files: Files) -> Route {
        let limits = Limits { timeout: Duration::from_secs(1), max_output: 1 };
        Route { prefix: prefix.into(), transport: Arc::new(Named(name, limits, Slots::new(1))), pages: None, files }
    }

    fn table() -> Routes {
        let root = std::env::temp_dir().join(format!("ws2http-routes-{}", crate::id::ConnId::random()));
        std::fs::create_dir_all(root.join("php/api")).expect("fixture");
        for (p, mode) in [("php/page.php", 0o644), ("php/api/x.php", 0o644), ("run.sh", 0o755), ("page.php", 0o644)] {
            std::fs::write(root.join(p), "x").expect("fixture");
            std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(mode)).expect("fixture");
        }
        let root = root.canonicalize().expect("fixture");
        let prefixed = vec![
            route("/php/api", "http", Files::None),
            route("/php", "fastcgi", Files::RunByServer),
            route("/remote", "http2", Files::None),
        ];
        Routes::new(Resolver::new(root, None, vec![]), prefixed, route("/", "spawn", Files::Spawned))
    }

    /// Serves no page; only its presence on a route is checked.
    struct NoPages;

    impl Pages for NoPages {
        fn serve<'a>(&'a self, _: &'a RequestInfo, _: &'a Target, _: RequestBody) -> BoxFuture<'a, Reply> {
            Box::pin(async { Reply::LocalRedirect("/".into()) })
        }
    }

    #[test]
    fn plain_requests_get_pages_only_from_routes_that_serve_them() {
        let mut r = table();
        r.scripts.pages = Some(Arc::new(NoPages));
        r.prefixed.iter_mut().filter(|p| p.prefix == "/php").for_each(|p| p.pages = Some(Arc::new(NoPages)));
        let page = |r: &Routes, p: &str| match r.page(p) {
            Resolved::Found((t, _)) => Some(t.script_name),
            _ => None,
        };
        assert_eq!(page(&r, "/run.sh/x").as_deref(), Some("/run.sh"));
        assert_eq!(page(&r, "/php/page.php").as_deref(), Some("/php/page.php"));
        assert!(matches!(r.page("/page.php"), Resolved::NotRunnable(_)), "a script is never a static file");
        assert_eq!(page(&r, "/php/api/x.php"), None, "an HTTP backend serves no pages");
        assert!(matches!(r.resolve("/php/api/x.php"), Resolved::Found(_)), "but runs events");
    }

    #[test]
    fn the_single_script_is_a_route_that_serves_no_pages() {
        let dir = std::env::temp_dir().join(format!("ws2http-single-{}", crate::id::ConnId::random()));
        std::fs::create_dir_all(&dir).expect("fixture");
        let (run, idle) = (dir.join("chat.sh"), dir.join("idle.sh"));
        for (p, mode) in [(&run, 0o755), (&idle, 0o644)] {
            std::fs::write(p, "x").expect("fixture");
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("fixture");
        }
        for (script, runnable) in [(run, true), (idle, false)] {
            let resolver = Resolver::new(dir.clone(), Some(script.canonicalize().expect("fixture")), vec![]);
            let r = Routes::new(resolver, vec![], route("/", "spawn", Files::Spawned));
            assert_eq!(matches!(r.resolve("/any/path"), Resolved::Found(_)), runnable);
            // Plain requests never reach it, runnable or not (a static file or 404).
            assert!(matches!(r.page("/any/path"), Resolved::NotFound));
            assert!(matches!(r.page("/"), Resolved::NotFound));
        }
    }

    fn via(routes: &Routes, path: &str) -> Option<(String, String, &'static str)> {
        match routes.resolve(path) {
            Resolved::Found(r) => {
                let name = match r.route.transport.via() {
                    "http" => "http",
                    "http2" => "http2",
                    "fastcgi" => "fastcgi",
                    _ => "spawn",
                };
                Some((r.target.script_name, r.target.path_info, name))
            }
            _ => None,
        }
    }

    #[test]
    fn the_longest_prefix_decides_and_only_local_routes_need_files() {
        let r = table();
        let found = |s: &str, i: &str, n: &'static str| Some((s.to_owned(), i.to_owned(), n));
        assert_eq!(via(&r, "/run.sh/x"), found("/run.sh", "/x", "spawn"));
        // A FastCGI server runs .php without an exec bit; spawned scripts need one.
        assert_eq!(via(&r, "/php/page.php"), found("/php/page.php", "", "fastcgi"));
        assert!(matches!(r.resolve("/page.php"), Resolved::NotRunnable(_)));
        // An HTTP route needs no file: its prefix is SCRIPT_NAME.
        assert_eq!(via(&r, "/php/api/x.php"), found("/php/api", "/x.php", "http"));
        assert_eq!(via(&r, "/remote/a%20b"), found("/remote", "/a b", "http2"));
        assert_eq!(via(&r, "/remote/%2e%2e/x"), None, "the path rules hold on every route");
        assert_eq!(via(&r, "/php/missing.php"), None);
        assert_eq!(r.endpoints(), ["/php/api/x.php", "/php/page.php", "/run.sh"]);
    }
}
