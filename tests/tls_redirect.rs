//! The HTTPS listener with what goes around it, end to end with the real
//! binary: `--redirect-http` sends plain `http://` to the HTTPS listener
//! (308, the request's host name without its port, the TLS port, path and
//! query kept; 400 without a Host), `--hsts` marks the HTTPS answers (and
//! not the redirects: browsers ignore it over plain HTTP), and curl, trusting
//! only the test CA, follows the redirect to the page. Also: the
//! configuration DEPLOYMENT.md ships (contrib/ws2http-https.toml) starts,
//! with ACME as written and with certificate files instead, and `--help`
//! groups the TLS flags under their own headings.

mod common;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::pki::make_pki;
use common::*;
use ws2http_test_suite::suite;

/// A running server and the ports of its start-up lines.
struct Tls {
    child: Child,
    /// The HTTPS listener.
    port: u16,
    /// The plain redirect listener.
    redirect: u16,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port at the end of `line`, which must start with `prefix`.
fn port_after(line: &str, prefix: &str) -> u16 {
    let rest = line.strip_prefix(prefix).unwrap_or_else(|| panic!("expected {prefix:?}..., got {line:?}"));
    rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|p| p.parse().ok()).expect("a port")
}

/// Starts `cmd` and reads its three start-up lines: the HTTPS listener,
/// the control API and the redirect listener (the way an operator sees
/// which port `--redirect-http 127.0.0.1:0` got). The rest of stdout is
/// drained so that later lines never block or break the server.
fn start(mut cmd: Command) -> Tls {
    let mut child = cmd.stderr(Stdio::null()).spawn().expect("start ws2http");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("a start-up line").expect("read stdout");
    let port = port_after(&next(), "ws2http: listening on https://127.0.0.1:");
    port_after(&next(), "ws2http: control API on http://127.0.0.1:");
    let line = next();
    let redirect = port_after(&line, "ws2http: redirecting http://127.0.0.1:");
    assert!(line.ends_with(&format!(" to https:// on port {port}")), "{line}");
    std::thread::spawn(move || lines.for_each(drop));
    Tls { child, port, redirect }
}

/// curl, trusting only the test CA, on IPv4 (the listeners are on 127.0.0.1).
fn curl(pki: &Path, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-4", "--max-time", "20", "--cacert"])
        .arg(pki.join("ca.pem"))
        .args(args)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n")
}

/// A header's value in a raw or curl-dumped response head (name in any case).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[suite("curl")]
#[suite("backends")]
#[test]
fn plain_http_is_redirected_to_https_which_carries_hsts() {
    require_suite("curl");
    require_suite("backends"); // openssl
    let dir = scratch();
    let pki = make_pki(&dir, "redirect");
    let root = dir.join("public");
    std::fs::create_dir_all(root.join("docs")).expect("root");
    std::fs::write(root.join("docs/page.txt"), "the page\n").expect("page");
    let mut cmd = ws2http();
    cmd.args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--redirect-http", "127.0.0.1:0"])
        .args(["--hsts", "600", "--cgi-bin"])
        .arg(fixtures())
        .arg("--root")
        .arg(&root)
        .arg("--tls-cert")
        .arg(pki.join("cert.pem"))
        .arg("--tls-key")
        .arg(pki.join("key.pem"));
    let s = start(cmd);
    let (port, redirect) = (s.port, s.redirect);

    // The request's host name without its port, the TLS port, the raw path
    // and query; any method (a POST stays a POST with 308).
    for method in ["GET", "POST"] {
        let res = raw_http(
            redirect,
            &format!(
                "{method} /docs/page.txt?a=1&b=%20x HTTP/1.1\r\nHost: localhost:{redirect}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            ),
        );
        assert_eq!(status_of(&res), 308, "{res}");
        let to = format!("https://localhost:{port}/docs/page.txt?a=1&b=%20x");
        assert_eq!(header(&res, "Location"), Some(to.as_str()), "{res}");
        assert_eq!(header(&res, "Strict-Transport-Security"), None, "no HSTS over plain HTTP: {res}");
    }
    // Without a Host there is no name to send the browser to: 400.
    let res = raw_http(redirect, "GET /docs/page.txt HTTP/1.0\r\n\r\n");
    assert_eq!(status_of(&res), 400, "{res}");
    assert_eq!(header(&res, "Location"), None, "{res}");

    // A real client follows the redirect to the page over verified TLS,
    // and the HTTPS answer carries the HSTS header.
    let url = format!("http://localhost:{redirect}/docs/page.txt?x=1");
    let out = curl(&pki, &["-L", "-D", "-", &url]);
    let (first, rest) = out.split_once("\n\n").expect("two answers");
    assert!(first.starts_with("HTTP/1.1 308"), "{out}");
    assert_eq!(header(first, "Location"), Some(format!("https://localhost:{port}/docs/page.txt?x=1").as_str()));
    assert!(rest.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(header(rest, "Strict-Transport-Security"), Some("max-age=600"), "{out}");
    assert!(rest.ends_with("\n\nthe page\n"), "{out}");
    // Every HTTPS answer, a 404 too.
    let out = curl(&pki, &["-D", "-", "-o", "/dev/null", &format!("https://localhost:{port}/missing")]);
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert_eq!(header(&out, "Strict-Transport-Security"), Some("max-age=600"), "{out}");
}

/// contrib/ws2http-https.toml, with `edit` applied to its text.
fn contrib_config(edit: impl Fn(&str) -> String) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("contrib/ws2http-https.toml")).expect("the contrib file");
    let file = scratch().join("ws2http-https.toml");
    std::fs::write(&file, edit(&text)).expect("write the config");
    file
}

/// ws2http on `config`, with the machine-specific settings (ports 443/80,
/// /srv directories) moved to loopback and a scratch directory by flags,
/// which win over the file.
fn with_config(config: &Path, extra: &[&str]) -> Command {
    let dir = scratch();
    std::fs::create_dir_all(dir.join("public")).expect("root");
    let mut cmd = ws2http();
    cmd.arg("--config").arg(config);
    cmd.args(["--listen", "127.0.0.1:0", "--redirect-http", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"]);
    cmd.arg("--cgi-bin").arg(fixtures()).arg("--root").arg(dir.join("public"));
    cmd.args(extra);
    cmd
}

#[test]
fn the_https_config_file_starts_with_acme_as_shipped() {
    let config = contrib_config(str::to_owned);
    let cache = scratch().join("acme");
    std::fs::create_dir(&cache).expect("cache");
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
    // A directory nobody answers on: the certificate is ordered in the
    // background (and retried), the listeners are up meanwhile.
    let mut cmd = with_config(&config, &["--acme-directory", "https://127.0.0.1:1/directory", "--acme-cache"]);
    cmd.arg(&cache);
    start(cmd);
}

#[suite("backends")]
#[test]
fn the_https_config_file_starts_with_certificate_files_and_hsts_uncommented() {
    require_suite("backends"); // openssl
    let pki = make_pki(&scratch(), "config");
    let config = contrib_config(|text| {
        let files = ["# tls-cert = ", "# tls-key = ", "# hsts = "];
        text.lines()
            .filter(|l| !l.starts_with("acme"))
            .map(|l| if files.iter().any(|f| l.starts_with(f)) { &l[2..] } else { l })
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let body = std::fs::read_to_string(&config).expect("read back");
    assert!(body.contains("\ntls-cert = ") && body.contains("\nhsts = ") && !body.contains("\nacme"), "{body}");
    let (cert, key) = (pki.join("cert.pem"), pki.join("key.pem"));
    let cmd =
        with_config(&config, &["--tls-cert", cert.to_str().expect("utf-8"), "--tls-key", key.to_str().expect("utf-8")]);
    let s = start(cmd);
    let res = raw_http(s.redirect, "GET / HTTP/1.1\r\nHost: chat.example.org\r\nConnection: close\r\n\r\n");
    assert_eq!(header(&res, "Location"), Some(format!("https://chat.example.org:{}/", s.port).as_str()), "{res}");
}

#[test]
fn help_lists_every_tls_flag_under_a_tls_heading() {
    let out = ws2http().arg("--help").output().expect("run ws2http --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let section = |heading: &str| -> Vec<String> {
        let start = help.find(&format!("\n{heading}:\n")).unwrap_or_else(|| panic!("no {heading:?} in {help}"));
        let body = &help[start + heading.len() + 3..];
        let body = &body[..body.find("\n\n").unwrap_or(body.len())];
        body.lines().filter_map(|l| l.trim_start().strip_prefix("--")?.split(' ').next()).map(str::to_owned).collect()
    };
    let https = section("HTTPS (TLS on the public listeners)");
    let expected = [
        "tls-cert",
        "tls-key",
        "redirect-http",
        "hsts",
        "acme",
        "acme-email",
        "acme-directory",
        "acme-cache",
        "acme-ca",
    ];
    assert_eq!(https, expected);
    assert_eq!(section("TLS to backends and Redis"), ["backend-ca", "redis-ca"]);
    let options = section("Options");
    assert!(
        options.iter().all(|f| !f.starts_with("tls") && !f.starts_with("acme") && !f.ends_with("-ca")),
        "{options:?}"
    );
}
