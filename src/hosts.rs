//! Which names a listener answers to: the defence against DNS rebinding.
//!
//! A web page can point a name it owns (`rebind.evil.example`) at
//! `127.0.0.1` and then talk to a server on loopback as if it were the
//! page's own origin: read its answers, open its WebSockets. The browser
//! still sends the page's name in `Host`, so a server that knows which
//! names it is reached by can refuse the others (421).
//!
//! The control API knows exactly ([`AllowedHosts`]: its bound address and
//! port, loopback names on it, `--api-allow-host`). The public listener is
//! reached by whatever name the operator gave it, often through a proxy, so
//! [`PublicHosts`] checks names only, and only where that is safe to
//! assume: on a loopback address (loopback names, the bound address,
//! `--allow-host`), or anywhere once `--allow-host` is given.

use std::net::{IpAddr, SocketAddr};

/// A name the control API answers to besides its own address
/// (`--api-allow-host NAME` for any port, `NAME:PORT` for one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower case; an IPv6 address keeps its brackets.
    name: String,
    port: Option<u16>,
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let (name, port) = split_host(s).ok_or("expected NAME or NAME:PORT, e.g. myapp.internal:8081")?;
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "-._:[]".contains(c);
        if name.is_empty() || !name.chars().all(ok_char) {
            return Err("expected a host name or address, e.g. myapp.internal or myapp.internal:8081".into());
        }
        Ok(HostPattern { name, port })
    }
}

/// `Host` header value → (lower-case name, port if given); `None` when it
/// is not `NAME`, `NAME:PORT`, `[V6]` or `[V6]:PORT`.
pub(crate) fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let host = host.trim();
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let end = rest.find(']')?;
            let after = &rest[end + 1..];
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (&host[..end + 2], port)
        }
        None => match host.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n, Some(p)),
            Some(_) => return None,
            None => (host, None),
        },
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((name.to_ascii_lowercase(), port))
}

/// The `Host` values the control API accepts without a token: the address
/// it is bound to, for a loopback address also `localhost`, `127.0.0.1` and
/// `[::1]` (on its port), and the `--api-allow-host` names.
#[derive(Clone, Debug)]
pub struct AllowedHosts {
    port: u16,
    own: Vec<String>,
    extra: Vec<HostPattern>,
}

impl AllowedHosts {
    pub fn new(bound: SocketAddr, extra: &[HostPattern]) -> AllowedHosts {
        let mut own = vec![ip_name(bound.ip())];
        if bound.ip().is_loopback() {
            own.extend(["localhost", "127.0.0.1", "[::1]"].map(str::to_owned));
        }
        AllowedHosts { port: bound.port(), own, extra: extra.to_vec() }
    }

    /// `true` when `host` (a Host header value) names this API.
    pub fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else { return false };
        let port = port.unwrap_or(80);
        self.own.contains(&name) && port == self.port
            || self.extra.iter().any(|p| p.name == name && p.port.is_none_or(|q| q == port))
    }

    /// The URL to give a user who used another one.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.own[0], self.port)
    }
}

/// An address as it stands in a `Host` header: `[…]` around IPv6.
fn ip_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// `true` for a name that always means this machine: `localhost`, a name
/// under `.localhost` (RFC 6761: browsers never ask DNS for them), or a
/// loopback address.
fn is_loopback_name(name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.ends_with(".localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The names the public listener answers to (ports do not matter: a proxy
/// in front passes the public name with or without its own port).
#[derive(Clone, Debug)]
pub struct PublicHosts {
    /// `false`: any name (not on loopback, no `--allow-host`).
    checked: bool,
    bound: String,
    extra: Vec<HostPattern>,
}

impl PublicHosts {
    pub fn new(bound: SocketAddr, extra: &[HostPattern]) -> PublicHosts {
        let checked = bound.ip().is_loopback() || !extra.is_empty();
        PublicHosts { checked, bound: ip_name(bound.ip()), extra: extra.to_vec() }
    }

    /// `true` when a request with this Host header (if any) may be served.
    pub fn allows(&self, host: Option<&str>) -> bool {
        if !self.checked {
            return true;
        }
        // No Host at all: an HTTP/1.0 client, not a browser.
        let Some(host) = host else { return true };
        let Some((name, _)) = split_host(host) else { return false };
        is_loopback_name(&name) || name == self.bound || self.extra.iter().any(|p| p.name == name)
    }
}

/// As given (lower case): `chat.example.org`, `name:8443`, for start-up lines.
impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A DNS name (or an IPv4 address written as one): letters, digits and
/// `-` in labels of 1 to 63 bytes that neither start nor end with `-`, 253
/// bytes at most, no final dot (callers strip it).
pub fn is_dns_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let v4 = AllowedHosts::new("127.0.0.1:8081".parse().expect("addr"), &[]);
        for ok in ["127.0.0.1:8081", "localhost:8081", "LOCALHOST:8081", "[::1]:8081"] {
            assert!(v4.allows(ok), "{ok}");
        }
        for bad in ["rebind.evil.example:8081", "127.0.0.1:8082", "127.0.0.1", "", "127.0.0.1:8081:1", "[::1]x"] {
            assert!(!v4.allows(bad), "{bad}");
        }
        let v6 = AllowedHosts::new("[::1]:80".parse().expect("addr"), &[]);
        assert!(v6.allows("[::1]") && v6.allows("[::1]:80") && v6.allows("localhost"));
        let extra = [HostPattern::parse("App.Internal").expect("ok"), HostPattern::parse("b.example:9").expect("ok")];
        let other = AllowedHosts::new("127.0.0.2:8081".parse().expect("addr"), &extra);
        assert!(other.allows("127.0.0.2:8081") && other.allows("app.internal:1234") && other.allows("app.internal"));
        assert!(other.allows("b.example:9") && !other.allows("b.example:8081"));
        for bad in ["", "a b", "a:x", "a/b", ":80"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_names() {
        let lo = PublicHosts::new("127.0.0.1:8080".parse().expect("addr"), &[]);
        for ok in ["127.0.0.1:8080", "127.0.0.1", "localhost", "LocalHost:9", "app.localhost:8080", "[::1]:8080"] {
            assert!(lo.allows(Some(ok)), "{ok}");
        }
        assert!(lo.allows(None));
        for bad in ["rebind.evil.example:8080", "evil.example", "localhost.evil.example", "10.0.0.1:8080", "a b"] {
            assert!(!lo.allows(Some(bad)), "{bad}");
        }
        let named = PublicHosts::new(
            "127.0.0.1:8080".parse().expect("addr"),
            &[HostPattern::parse("chat.example.org").expect("ok")],
        );
        assert!(named.allows(Some("chat.example.org")) && named.allows(Some("Chat.Example.Org:443")));
        let public = PublicHosts::new("0.0.0.0:8080".parse().expect("addr"), &[]);
        assert!(public.allows(Some("anything.example")));
        let pinned =
            PublicHosts::new("0.0.0.0:8080".parse().expect("addr"), &[HostPattern::parse("a.example").expect("ok")]);
        assert!(
            pinned.allows(Some("a.example:8080"))
                && pinned.allows(Some("localhost"))
                && !pinned.allows(Some("b.example"))
        );
    }
}
