//! The flags of TLS beyond the public listener's certificate: TLS *to*
//! the HTTP backend and to Redis (their CA files), and around the HTTPS
//! listener (`--redirect-http`, `--hsts`). Kept apart from [`crate::config`]
//! (flattened into its `Cli`) so that the listener's own TLS flags and these
//! grow without touching each other.

use std::path::PathBuf;

use clap::Args;

/// `--help`'s heading for the CA files of TLS to the servers behind us.
pub const CLIENT_HEADING: &str = "TLS to backends and Redis";

/// The flags, as clap reads them.
#[derive(Args, Debug, Clone, Default)]
pub struct OutboundArgs {
    /// Also trust the CA certificates in this PEM file for https:// --backend-url servers
    /// (besides the system's and those of SSL_CERT_FILE when set)
    #[arg(long, env = "WS2HTTP_BACKEND_CA", value_name = "FILE", help_heading = CLIENT_HEADING)]
    pub backend_ca: Option<PathBuf>,
    /// Trust only the CA certificates in this PEM file for a rediss:// --redis server
    /// [default: the system's, or SSL_CERT_FILE when set]
    #[arg(long, env = "WS2HTTP_REDIS_CA", value_name = "FILE", help_heading = CLIENT_HEADING)]
    pub redis_ca: Option<PathBuf>,
    /// Also listen for plain HTTP on ADDR and answer every request with a 308 redirect to the
    /// same path on the HTTPS listener, e.g. --redirect-http 0.0.0.0:80 (needs TLS)
    #[arg(long, env = "WS2HTTP_REDIRECT_HTTP", value_name = "ADDR", help_heading = crate::tls::HELP_HEADING)]
    pub redirect_http: Option<String>,
    /// Send Strict-Transport-Security: max-age=SECONDS on every HTTPS response, e.g. --hsts 31536000
    /// (needs TLS; browsers then refuse plain http:// to this host for that long)
    #[arg(long, env = "WS2HTTP_HSTS", value_name = "SECONDS", help_heading = crate::tls::HELP_HEADING)]
    pub hsts: Option<u64>,
}

/// The checked settings.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    pub backend_ca: Option<PathBuf>,
    pub redis_ca: Option<PathBuf>,
    /// `HOST:PORT`, checked like `--listen`.
    pub redirect_http: Option<String>,
    pub hsts: Option<u64>,
}

impl OutboundArgs {
    /// Checks the values that need no other flag (the address); which
    /// need TLS is checked where TLS is known ([`check_needs_tls`]).
    pub fn into_settings(self) -> Result<Outbound, String> {
        let redirect_http = match self.redirect_http {
            Some(a) => Some(crate::cli_checks::listen_addr(&a, "--redirect-http")?),
            None => None,
        };
        Ok(Outbound { backend_ca: self.backend_ca, redis_ca: self.redis_ca, redirect_http, hsts: self.hsts })
    }
}

/// `--redirect-http` and `--hsts` only make sense with an HTTPS listener:
/// without one, a redirect would point at nothing and HSTS would be sent
/// on plain HTTP (where browsers ignore it). One line that says what to add.
pub fn check_needs_tls(o: &Outbound, tls: bool) -> Result<(), String> {
    if tls {
        return Ok(());
    }
    let flag = match (&o.redirect_http, o.hsts) {
        (Some(a), _) => format!("--redirect-http {a}"),
        (None, Some(s)) => format!("--hsts {s}"),
        (None, None) => return Ok(()),
    };
    Err(format!(
        "{flag} needs HTTPS on the public listener: add --tls-cert FILE --tls-key FILE or --acme DOMAIN, \
         or remove {}",
        flag.split(' ').next().unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_and_hsts_are_refused_without_tls() {
        let o = Outbound { redirect_http: Some("0.0.0.0:80".into()), ..Default::default() };
        let e = check_needs_tls(&o, false).expect_err("no TLS");
        assert!(e.starts_with("--redirect-http 0.0.0.0:80 needs HTTPS"), "{e}");
        assert!(e.ends_with("or remove --redirect-http"), "{e}");
        assert_eq!(check_needs_tls(&o, true), Ok(()));
        let o = Outbound { hsts: Some(60), ..Default::default() };
        assert!(check_needs_tls(&o, false).expect_err("no TLS").starts_with("--hsts 60 needs HTTPS"));
        assert_eq!(check_needs_tls(&Outbound::default(), false), Ok(()));
    }

    #[test]
    fn the_redirect_address_is_checked_like_listen() {
        let bad = OutboundArgs { redirect_http: Some("nowhere".into()), ..Default::default() };
        assert!(bad.into_settings().expect_err("bad").contains("--redirect-http"));
        let ok = OutboundArgs { redirect_http: Some("127.0.0.1:0".into()), ..Default::default() };
        assert_eq!(ok.into_settings().expect("ok").redirect_http.as_deref(), Some("127.0.0.1:0"));
    }
}
