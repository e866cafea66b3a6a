//! The Debian package, end to end on the real system: `contrib/build-deb`
//! builds it (release binary, man pages and completions generated from
//! clap, `cargo deb --no-build`), `dpkg-deb -c` lists what it ships,
//! `dpkg -i` installs it, the INSTALLED /usr/bin/ws2http serves the
//! installed demo scripts (console page and a WebSocket echo), `man`
//! renders the installed page, `systemd-analyze verify` accepts the
//! installed unit (it needs no systemd running, and checks the binary and
//! the man page the unit names), and `dpkg --purge` removes it all.
//!
//! It installs into `/` and so needs root (CI runs as root). It shares the
//! release build with the benchmarks: the first run compiles it.

mod common;
use common::*;
use ws2http_test_suite::suite;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Fails with the install commands of every missing tool, and with the
/// command to run as root when not root.
fn check_prerequisites() {
    require_suite("deb"); // tests/suites.txt: cargo-deb, dpkg, man, systemd-analyze
                          // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root, "the package test installs into / with dpkg: run it as root (sudo -E cargo test --test package), or skip it with WS2HTTP_TEST_SKIP=deb");
}

fn root_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command, asserts success, returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::piped()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `contrib/build-deb --output DIR`, and the one .deb it wrote.
fn build_deb() -> PathBuf {
    let out_dir = common::scratch();
    run(Command::new(root_dir().join("contrib/build-deb")).arg("--output").arg(&out_dir).stdout(Stdio::null()));
    let debs: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .expect("read the output directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "build-deb should write one .deb: {debs:?}");
    debs[0].clone()
}

/// The paths `dpkg-deb -c` lists, without the leading `.`.
fn package_contents(deb: &Path) -> Vec<String> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_owned())
        .collect()
}

const SHIPPED: &[&str] = &[
    "/usr/bin/ws2http",
    "/usr/share/man/man1/ws2http.1.gz",
    "/usr/share/man/man1/ws2http-try.1.gz",
    "/usr/share/bash-completion/completions/ws2http",
    "/usr/share/zsh/vendor-completions/_ws2http",
    "/usr/share/fish/vendor_completions.d/ws2http.fish",
    "/usr/lib/systemd/system/ws2http.service",
    "/etc/ws2http/ws2http.toml",
    "/usr/share/doc/ws2http/README.md",
    "/usr/share/doc/ws2http/DEPLOYMENT.md",
    "/usr/share/doc/ws2http/PROTOCOL.md",
    "/usr/share/doc/ws2http/copyright",
    "/usr/share/doc/ws2http/examples/cgi-bin/echo.sh",
    "/usr/share/doc/ws2http/examples/cgi-bin/chat.sh",
    "/usr/share/doc/ws2http/examples/python-chat/cgi-bin/chat.py",
];

/// Removes the package (and its conffile) whatever happens to the test.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "ws2http"]).stdout(Stdio::null()).status();
    }
}

/// The installed binary on the installed demo scripts: the console page
/// and a WebSocket echo.
fn serve_demo_with_installed_binary() {
    let mut child = Command::new("/usr/bin/ws2http")
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args(["--cgi-bin", "/usr/share/doc/ws2http/examples/cgi-bin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start /usr/bin/ws2http");
    let (port, _api) = read_ports(&mut child);
    let page = raw_http(port, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200"), "console page: {page}");
    assert!(page.contains("echo.sh") && page.contains("chat.sh"), "the console lists the demo scripts: {page}");
    async_std::task::block_on(async {
        let mut ws = connect(&format!("ws://127.0.0.1:{port}/echo.sh")).await;
        ws.send(async_tungstenite::tungstenite::Message::text("from the package")).await.expect("send");
        assert_eq!(next_text(&mut ws).await, "from the package");
    });
    let _ = child.kill();
    let _ = child.wait();
}

fn check_man_pages() {
    let page = run(Command::new("man").args(["-l", "/usr/share/man/man1/ws2http.1.gz"]).env("MANWIDTH", "200"));
    assert!(page.contains("--cgi-bin <DIR>") && page.contains("SYNOPSIS"), "man -l ws2http.1.gz:\n{page}");
    // Found by name, as `Documentation=man:ws2http(1)` and users look it up.
    let page = run(Command::new("man").args(["1", "ws2http-try"]).env("MANPAGER", "cat").env("MANWIDTH", "200"));
    assert!(page.contains("--event"), "man ws2http-try:\n{page}");
}

fn check_unit() {
    let unit = "/usr/lib/systemd/system/ws2http.service";
    let text = std::fs::read_to_string(unit).expect("read the installed unit");
    assert!(text.contains("ExecStart=/usr/bin/ws2http "), "the unit runs the packaged binary:\n{text}");
    assert!(text.contains("Documentation=man:ws2http(1)"), "{text}");
    let out = Command::new("systemd-analyze").args(["verify", unit]).output().expect("run systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("ws2http"), "systemd-analyze verify {unit}: {err}");
}

#[suite("deb")]
#[test]
fn debian_package_installs_and_runs() {
    check_prerequisites();
    let deb = build_deb();
    let contents = package_contents(&deb);
    for path in SHIPPED {
        assert!(contents.iter().any(|p| p == path), "{} does not ship {path}; it has:\n{contents:#?}", deb.display());
    }

    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb).stdout(Stdio::null()));
    let listed = run(Command::new("dpkg").args(["-L", "ws2http"]));
    for path in SHIPPED {
        assert!(Path::new(path).exists(), "{path} is listed by dpkg -L but missing (dpkg path-exclude?):\n{listed}");
    }
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", "ws2http"]));
    assert!(conffiles.contains("/etc/ws2http/ws2http.toml"), "not a conffile: {conffiles}");
    let version = run(Command::new("/usr/bin/ws2http").arg("--version"));
    assert!(version.starts_with("ws2http "), "{version}");

    serve_demo_with_installed_binary();
    check_man_pages();
    check_unit();

    run(Command::new("dpkg").args(["--purge", "ws2http"]).stdout(Stdio::null()));
    for path in ["/usr/bin/ws2http", "/etc/ws2http/ws2http.toml", "/usr/lib/systemd/system/ws2http.service"] {
        assert!(!Path::new(path).exists(), "{path} is still there after dpkg --purge");
    }
}
