//! Cross-Site WebSocket Hijacking protection. Browsers send cookies with a
//! WebSocket handshake from any site, and ws2http hands cookies to scripts,
//! so a handshake from a page of another origin is refused (403) unless the
//! origin is allowed with `--allow-origin`. Clients that send no Origin
//! header (not browsers) are not affected.

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
/// may proceed.
pub fn allowed(origin: Option<&str>, host: Option<&str>, allow: &[String]) -> bool {
    let Some(origin) = origin.map(str::trim) else { return true };
    if allow.iter().any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let (Some(o), Some(h)) = (authority_of_origin(origin), host) else { return false };
    let scheme = origin.split_once("://").map_or("", |(s, _)| s).to_ascii_lowercase();
    o == strip_default_port(&h.trim().to_ascii_lowercase(), &scheme)
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn same_origin_allowed_by_default() {
        assert!(allowed(None, Some("x:1"), &[]));
        assert!(allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), &[]));
        assert!(allowed(Some("http://Example.org"), Some("example.org:80"), &[]));
        assert!(allowed(Some("https://example.org"), Some("example.org"), &[]));
        assert!(!allowed(Some("http://evil.example"), Some("127.0.0.1:8080"), &[]));
        assert!(!allowed(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080"), &[]));
        assert!(!allowed(Some("null"), Some("127.0.0.1:8080"), &[]));
        assert!(!allowed(Some("http://127.0.0.1:8080"), None, &[]));
    }

    #[test]
    fn allow_list() {
        let allow = vec!["https://app.example.org".to_owned()];
        assert!(allowed(Some("https://app.example.org"), Some("ws.example.org"), &allow));
        assert!(!allowed(Some("https://other.example.org"), Some("ws.example.org"), &allow));
        assert!(allowed(Some("http://anything"), Some("h"), &["*".to_owned()]));
        assert!(allowed(Some("null"), Some("h"), &["null".to_owned()]));
    }
}
