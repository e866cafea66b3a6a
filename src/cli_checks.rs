//! Values on the command line that are almost right: instead of the OS's
//! "invalid socket address" or "not a regular file", say what was meant.
//!
//! A bare port (`--listen 8080`) is taken as `127.0.0.1:8080`: loopback is
//! the safe reading. `:8080` is refused: some tools read it as "every
//! interface", and exposing a server is not something to guess.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

/// A listener address (`--listen`, `--api-listen`) as ws2http binds it.
pub fn listen_addr(value: &str, flag: &str) -> Result<String, String> {
    let example = if flag == "--api-listen" { "8081" } else { "8080" };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return match value.parse::<u16>() {
            Ok(port) => Ok(format!("127.0.0.1:{port}")),
            Err(_) => Err(format!("{flag} {value}: a port is a number from 0 to 65535")),
        };
    }
    if let Some(port) = value.strip_prefix(':') {
        if port.parse::<u16>().is_ok() {
            return Err(format!("{flag} {value}: which interface? write {}", choices(flag, port)));
        }
    }
    match value.to_socket_addrs() {
        Ok(addrs) if !addrs.as_slice().is_empty() => Ok(value.to_owned()),
        _ => Err(format!("{flag} {value}: expected HOST:PORT, e.g. {}", choices(flag, example))),
    }
}

/// Every `--listen` as ws2http binds it: the first, and the others. The
/// same address given twice is bound once (port 0 too: a wrapper that adds
/// its own `--listen 127.0.0.1:0` to the user's means one listener); one that an every-interface
/// address on the same port already covers (`0.0.0.0:8080` and
/// `127.0.0.1:8080`; `[::]` covers IPv4 too) is refused here, where the
/// OS would only say "address in use" about ws2http itself.
pub fn listen_addrs(values: &[String]) -> Result<(String, Vec<String>), String> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for v in values {
        let a = listen_addr(v.trim(), "--listen")?;
        if out.contains(&a) {
            continue;
        }
        let parsed = a.parse::<SocketAddr>().ok();
        let covering = |other: &String| {
            let o = other.parse::<SocketAddr>().ok()?;
            let p = parsed?;
            (o.port() == p.port() && o.port() != 0 && (covers(o, p) || covers(p, o))).then(|| other.clone())
        };
        if let Some(other) = out.iter().find_map(covering) {
            return Err(format!(
                "--listen {a} and --listen {other}: one of them listens on every interface on that port, which                  covers the other; give only one"
            ));
        }
        out.push(a);
    }
    if out.is_empty() {
        return Err("--listen: give an address, e.g. 127.0.0.1:8080".into());
    }
    let first = out.remove(0);
    Ok((first, out))
}

/// `wide` (an every-interface address) takes `other`'s port on `other`'s
/// address too: `0.0.0.0` for IPv4, `[::]` for both (Linux binds it
/// dual-stack).
fn covers(wide: SocketAddr, other: SocketAddr) -> bool {
    wide.ip().is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
}

/// The addresses to suggest for `flag`: the control API is loopback unless
/// it has a token (start-up refuses it otherwise), so suggesting every
/// interface there would only lead to the next error.
fn choices(flag: &str, port: &str) -> String {
    if flag == "--api-listen" {
        format!("127.0.0.1:{port} (this machine only; a non-loopback control API also needs --api-token)")
    } else {
        format!("127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every interface)")
    }
}

/// `--cgi-bin` names a file: it was meant as the single SCRIPT.
pub fn cgi_bin_is_a_file(dir: &Path) -> String {
    format!(
        "--cgi-bin {0} is a file, not a directory: to run this one script for every path, \
         give it as SCRIPT: ws2http {0}",
        dir.display()
    )
}

/// SCRIPT names a directory: it was meant as `--cgi-bin`.
pub fn script_is_a_directory(script: &Path) -> String {
    format!(
        "script {0} is a directory: to serve the scripts in it, use --cgi-bin {0} (without SCRIPT)",
        script.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(listen_addr("8080", "--listen").as_deref(), Ok("127.0.0.1:8080"));
        assert_eq!(listen_addr("0", "--listen").as_deref(), Ok("127.0.0.1:0"));
        assert_eq!(listen_addr("0.0.0.0:80", "--listen").as_deref(), Ok("0.0.0.0:80"));
        assert_eq!(listen_addr("[::1]:80", "--listen").as_deref(), Ok("[::1]:80"));
        assert!(listen_addr(":8081", "--api-listen").unwrap_err().contains("127.0.0.1:8081 (this machine only"));
        assert!(!listen_addr(":8081", "--api-listen").unwrap_err().contains("0.0.0.0"));
        assert!(listen_addr("99999", "--listen").unwrap_err().contains("0 to 65535"));
        assert!(listen_addr("localhost", "--listen").unwrap_err().contains("expected HOST:PORT"));
    }

    #[test]
    fn several_listen_addresses() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = |l: &[&str]| listen_addrs(&v(l)).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert_eq!(ok(&["8080"]), ("127.0.0.1:8080".to_owned(), vec![]));
        assert_eq!(ok(&["8080", "[::1]:8080"]), ("127.0.0.1:8080".to_owned(), v(&["[::1]:8080"])));
        assert_eq!(ok(&["8080", "127.0.0.1:8080"]).1, Vec::<String>::new(), "the same address twice: once");
        assert_eq!(ok(&["0", "127.0.0.1:0"]).1, Vec::<String>::new(), "given twice (a wrapper's default): once");
        assert_eq!(ok(&["0", "[::1]:0"]).1, v(&["[::1]:0"]), "a free port on each");
        assert_eq!(ok(&["0.0.0.0:80", "[::1]:80"]).1, v(&["[::1]:80"]), "0.0.0.0 leaves IPv6 free");
        assert_eq!(ok(&["0.0.0.0:80", "127.0.0.1:81"]).1, v(&["127.0.0.1:81"]), "another port");
        for covered in [&["0.0.0.0:80", "127.0.0.1:80"][..], &["127.0.0.1:80", "[::]:80"], &["[::]:80", "0.0.0.0:80"]] {
            let e = listen_addrs(&v(covered)).unwrap_err();
            assert!(e.contains("covers the other; give only one"), "{covered:?}: {e}");
        }
        assert!(listen_addrs(&v(&["8080", ":1"])).unwrap_err().contains("--listen :1: which interface?"));
    }
}
