//! Cross-Site WebSocket Hijacking protection. Browsers send cookies with a
//! WebSocket handshake from any site, and ws2http hands cookies to scripts,
//! so a handshake from a page of another origin is refused (403) unless the
//! origin is allowed with `--allow-origin`. Clients that send no Origin
//! header (not browsers) are not affected.
//!
//! One exception to the exact comparison: on this listener's own port,
//! `localhost`, `127.0.0.1` and `[::1]` are one site ([`alias`]).
//! A console loaded from `http://localhost:8080` that opens
//! `ws://127.0.0.1:8080/...` (the URL ws2http prints) is the same page of the
//! same server to the user, but two origins to the browser; refusing it was
//! the most common "it does not connect" of a first try.

/// `scheme://host[:port]` → (`host[:port]` without a default port), lowercased.
fn authority_of_origin(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return None;
    }
    Some(strip_default_port(&authority.to_ascii_lowercase(), &scheme.to_ascii_lowercase()))
}

fn strip_default_port(authority: &str, scheme: &str) -> String {
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => "",
    };
    match authority.strip_suffix(default) {
        Some(a) if !default.is_empty() => a.to_owned(),
        _ => authority.to_owned(),
    }
}

/// `true` when a handshake with this Origin header (if any) and Host header
/// may proceed on the public listener bound to `port`.
pub fn allowed(origin: Option<&str>, host: Option<&str>, allow: &[String], port: u16) -> bool {
    same_site(origin, host, allow, port, false)
}

/// [`allowed`] on a TLS listener: the page must also be an `https://` one.
/// A page from `http://host:port` came over plain HTTP (a network attacker
/// may have written it) and may not open `wss://host:port`, although its
/// host and port are the same; `--allow-origin` may still name it.
pub fn allowed_over_tls(origin: Option<&str>, host: Option<&str>, allow: &[String], port: u16) -> bool {
    same_site(origin, host, allow, port, true)
}

/// Both of the above: `tls` wants an `https://` page, and loopback aliases
/// on the listener's own scheme.
fn same_site(origin: Option<&str>, host: Option<&str>, allow: &[String], port: u16, tls: bool) -> bool {
    let Some(origin) = origin.map(str::trim) else { return true };
    if allow.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let (Some(o), Some(h)) = (authority_of_origin(origin), host) else { return false };
    let scheme = origin.split_once("://").map_or("", |(s, _)| s).to_ascii_lowercase();
    let listener_scheme = if tls { "https" } else { "http" };
    if tls && scheme != listener_scheme {
        return false;
    }
    o == strip_default_port(&h.trim().to_ascii_lowercase(), &scheme) || alias(origin, h, port, listener_scheme)
}

/// websocketd's `--origin host[:port],...` (started as `websocketd`): the
/// Origin's host must be listed, with any port when the entry names none,
/// and the same scheme when the entry names one (`https://host`); ports
/// absent from an Origin are the scheme's default (80, 443); `*` allows any
/// origin (ws2http's addition: websocketd's default without the flag). With
/// `--sameorigin` the Origin must also name the Host ([`allowed`]'s rule).
/// As everywhere in ws2http, a client that sends no Origin is not a
/// browser and passes (websocketd refuses it once a list is given).
pub fn listed(origin: Option<&str>, host: Option<&str>, list: &crate::config::OriginHosts, port: u16) -> bool {
    let Some(origin) = origin.map(str::trim) else { return true };
    if list.same_origin && !allowed(Some(origin), host, &[], port) {
        return false;
    }
    if list.hosts.iter().any(|h| h == "*") {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = if scheme == "https" || scheme == "wss" { "443" } else { "80" };
    let (o_host, o_port) = split_port(authority.trim_end_matches('/'), default_port);
    list.hosts.iter().any(|entry| {
        let entry = match entry.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case(&scheme) => rest,
            Some(_) => return false,
            None => entry.as_str(),
        };
        let (e_host, e_port) = split_port(entry.trim_end_matches('/'), "");
        e_host.eq_ignore_ascii_case(o_host) && (e_port.is_empty() || e_port == o_port)
    })
}

/// `host[:port]` (`[v6]:port` too) → (host, port or `default`).
fn split_port<'a>(authority: &'a str, default: &'a str) -> (&'a str, &'a str) {
    match authority.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (h.ends_with(']') || !h.contains(':')) =>
        {
            (h, p)
        }
        _ => (authority, default),
    }
}

/// The names a browser on this machine uses for it, interchangeably.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// `true` when both the page (`origin`) and the WebSocket URL (`host`) name
/// this listener through a loopback name: an origin of the listener's own
/// scheme (`listener_scheme`: `http`, or `https` over TLS) whose host is
/// `localhost`, `127.0.0.1` or `[::1]` and whose port (the scheme's default
/// when absent) is `port`, with a Host of one of those names on that same port.
///
/// Neither side can be set by another site: a page cannot choose its own
/// Origin, and a Host that is a loopback name cannot come from DNS
/// rebinding (the browser sends the name of the URL, the attacker's own).
/// Another port (`localhost:3000`, a dev server), another name
/// (`app.localhost`, `127.0.0.2`), the other scheme and anything that is not exactly `scheme://host[:port]` stay
/// foreign.
fn alias(origin: &str, host: &str, port: u16, listener_scheme: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default = if listener_scheme == "https" { 443 } else { 80 };
    let on_this_port = |authority: &str| {
        crate::hosts::split_host(authority)
            .is_some_and(|(name, p)| LOOPBACK_NAMES.contains(&name.as_str()) && p.unwrap_or(default) == port)
    };
    scheme.eq_ignore_ascii_case(listener_scheme)
        && !authority.contains(['/', '@'])
        && on_this_port(authority)
        && on_this_port(host)
}

#[cfg(test)]
mod tests {
    use super::allowed;

    const P: u16 = 8080;

    #[test]
    fn same_origin_allowed_by_default() {
        assert!(allowed(None, Some("x:1"), &[], P));
        assert!(allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), &[], P));
        assert!(allowed(Some("http://Example.org"), Some("example.org:80"), &[], P));
        assert!(allowed(Some("https://example.org"), Some("example.org"), &[], P));
        assert!(!allowed(Some("http://evil.example"), Some("127.0.0.1:8080"), &[], P));
        assert!(!allowed(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080"), &[], P));
        assert!(!allowed(Some("null"), Some("127.0.0.1:8080"), &[], P));
        assert!(!allowed(Some("http://127.0.0.1:8080"), None, &[], P));
    }

    #[test]
    fn over_tls_the_page_must_be_https() {
        use super::allowed_over_tls as tls;
        let h = Some("example.org:8443");
        assert!(tls(Some("https://example.org:8443"), h, &[], 8443));
        assert!(!tls(Some("http://example.org:8443"), h, &[], 8443), "same host and port, plain page");
        assert!(!tls(Some("https://example.org:9443"), h, &[], 8443));
        assert!(tls(Some("https://example.org"), Some("example.org"), &[], 443), "default ports");
        assert!(tls(None, h, &[], 8443), "not a browser");
        assert!(tls(Some("http://example.org:8443"), h, &["http://example.org:8443".to_owned()], 8443));
        assert!(tls(Some("https://localhost:8443"), Some("127.0.0.1:8443"), &[], 8443), "loopback names");
        assert!(!tls(Some("http://localhost:8443"), Some("127.0.0.1:8443"), &[], 8443));
    }

    #[test]
    fn allow_list() {
        let allow = vec!["https://app.example.org".to_owned()];
        assert!(allowed(Some("https://app.example.org"), Some("ws.example.org"), &allow, P));
        assert!(!allowed(Some("https://other.example.org"), Some("ws.example.org"), &allow, P));
        assert!(allowed(Some("http://anything"), Some("h"), &["*".to_owned()], P));
        assert!(allowed(Some("null"), Some("h"), &["null".to_owned()], P));
    }

    #[test]
    fn loopback_names_are_one_site_on_the_listeners_port() {
        for origin in ["http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080", "http://LocalHost:8080"] {
            for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080"] {
                assert!(allowed(Some(origin), Some(host), &[], P), "{origin} {host}");
            }
        }
        assert!(allowed(Some("http://localhost"), Some("127.0.0.1"), &[], 80));
        for (origin, host) in [
            ("http://localhost:3000", "127.0.0.1:8080"),
            ("http://localhost:8080", "127.0.0.1:3000"),
            ("http://localhost", "127.0.0.1:8080"),
            ("https://localhost:8080", "127.0.0.1:8080"),
            ("http://app.localhost:8080", "127.0.0.1:8080"),
            ("http://127.0.0.2:8080", "127.0.0.1:8080"),
            ("http://localhost.:8080", "127.0.0.1:8080"),
            ("http://evil.localhost.example:8080", "127.0.0.1:8080"),
            ("http://localhost:8080@evil.example", "127.0.0.1:8080"),
            ("http://localhost:8080/x", "127.0.0.1:8080"),
            ("http://localhost:8080", "evil.example:8080"),
            ("http://evil.example:8080", "localhost:8080"),
            ("http://localhost:08080x", "127.0.0.1:8080"),
        ] {
            assert!(!allowed(Some(origin), Some(host), &[], P), "{origin} {host}");
        }
    }
}

#[cfg(test)]
mod websocketd_tests {
    use super::listed;
    use crate::config::OriginHosts;

    fn list(hosts: &[&str], same_origin: bool) -> OriginHosts {
        OriginHosts { hosts: hosts.iter().map(|h| h.to_string()).collect(), same_origin }
    }

    #[test]
    fn websocketd_origin_lists() {
        let l = list(&["a.example", "b.example:8080", "https://c.example"], false);
        let ok = |o: &str| listed(Some(o), Some("srv:1"), &l, 1);
        assert!(ok("http://a.example") && ok("https://a.example:9999"), "no port: any port");
        assert!(ok("http://b.example:8080") && !ok("http://b.example") && !ok("http://b.example:8081"));
        assert!(ok("https://c.example") && !ok("http://c.example"), "a scheme must match");
        assert!(!ok("http://evil.example") && !ok("null") && !ok("http://a.example.evil"));
        assert!(listed(None, Some("srv:1"), &l, 1), "no Origin: not a browser");
        assert!(listed(Some("http://anything"), None, &list(&["*"], false), 1));
        let both = list(&["srv"], true);
        assert!(listed(Some("http://srv:1"), Some("srv:1"), &both, 1));
        assert!(!listed(Some("http://srv:2"), Some("srv:1"), &both, 1), "--sameorigin: the Host's port too");
        assert!(!listed(Some("http://srv:1"), Some("other:1"), &both, 1));
        let v6 = list(&["[::1]:8080"], false);
        assert!(listed(Some("http://[::1]:8080"), None, &v6, 1) && !listed(Some("http://[::1]:80"), None, &v6, 1));
    }
}
