//! A script is never served as a file: not when its handler (php-cgi) is
//! missing, not when its run bit was forgotten, not when `--cgi-bin` sits
//! inside `--root`; a `--root` inside `--cgi-bin` is refused at start. And a
//! static directory redirect is never protocol-relative.

mod common;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn examples(app: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(app)
}

/// A PATH with no php-cgi (nor anything else) in it.
fn empty_path() -> PathBuf {
    let bin = scratch().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    bin
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Status and body of a plain GET on the public listener.
fn get_page(s: &Server, path: &str) -> (u16, String) {
    let res = raw_http(s.port, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"));
    let status = res.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {res:?}"));
    (status, res)
}

/// Runs ws2http with `args` and `env`; (exit code, stderr) once it exits,
/// or `None` for the code when it was still running after 10 s (killed).
fn start_up(args: &[&OsStr], env: &[(&str, &OsStr)]) -> (Option<i32>, String) {
    let err = scratch().join("stderr");
    let mut cmd = ws2http();
    cmd.args(args).stdout(Stdio::null()).stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(err).unwrap_or_default())
}

#[test]
fn without_php_cgi_php_files_fail_loudly_and_are_never_source() {
    let path = empty_path();
    let app = examples("php-chat");
    let (cgi_bin, root) = (app.join("cgi-bin"), app.join("public"));
    let s = Server::start_env(&cgi_bin, &["--root", root.to_str().unwrap()], &[("PATH", path.as_os_str())]);
    // The warning is there before anyone could connect.
    let log = s.log();
    let warning = "handler for .php scripts: \"php-cgi\" is not installed or not in PATH; 3 .php script(s) \
                   will fail with 500 until it is: install it (apt install php-cgi) or name another with \
                   --handler php=PROGRAM";
    assert_eq!(log.matches(warning).count(), 1, "{log}");

    for page in ["/index.php", "/lib.php", "/chat.php", "/chat.php?room=lobby", "/index.php/x"] {
        let (status, res) = get_page(&s, page);
        assert_eq!(status, 500, "{page}: {res}");
        assert!(!res.contains("<?php") && !res.contains("x-httpd-php"), "{page} leaked its source: {res}");
    }
    let missing = "the handler program \"php-cgi\" is not installed or not in PATH";
    s.wait_log(missing);
    // The static files are still served; nothing advises chmod.
    assert_eq!(get_page(&s, "/style.css").0, 200);
    // A WebSocket event names the missing program too.
    let res = raw_http(s.port, &upgrade_request("/chat.php?room=lobby&nick=ann", ""));
    assert!(res.starts_with("HTTP/1.1 500"), "{res}");
    wait_for("the open event's error", || (s.log().matches(missing).count() >= 6).then_some(()));
    let log = s.log();
    assert!(!log.contains("chmod"), "{log}");
}

#[test]
fn a_root_inside_cgi_bin_is_refused_at_start() {
    let app = scratch();
    write(&app.join("index.php"), "<?php echo 'secret';\n", 0o644);
    write(&app.join("forgot.sh"), "#!/bin/sh\necho secret\n", 0o644);
    write(&app.join("public/style.css"), "body {}\n", 0o644);
    let path = empty_path();
    let env = [("PATH", path.as_os_str())];
    for root in [app.clone(), app.join("public")] {
        let args = [
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--api-listen"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--cgi-bin"),
            app.as_os_str(),
            OsStr::new("--root"),
            root.as_os_str(),
        ];
        let (code, err) = start_up(&args, &env);
        assert_eq!(code, Some(2), "{}: started anyway ({err})", root.display());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("ws2http: error: --root {}", root.display())), "{err}");
        assert!(err.contains("--cgi-bin app/cgi-bin --root app/public"), "{err}");
    }
}

#[test]
fn cgi_bin_inside_root_is_never_static() {
    let root = scratch();
    let cgi_bin = root.join("cgi-bin");
    write(&cgi_bin.join("run.sh"), "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nran\\n'\n", 0o755);
    write(&cgi_bin.join("forgot.sh"), "#!/bin/sh\necho SOURCE-OF-FORGOT\n", 0o644);
    write(&cgi_bin.join("page.php"), "<?php echo 'SOURCE-OF-PHP';\n", 0o644);
    write(&cgi_bin.join("index.html"), "SOURCE-OF-INDEX\n", 0o644);
    write(&root.join("index.html"), "home\n", 0o644);
    write(&root.join("old/config.php"), "<?php $password = 'SOURCE-OF-CONFIG';\n", 0o644);
    std::os::unix::fs::symlink(cgi_bin.join("forgot.sh"), root.join("link.sh")).unwrap();
    let path = empty_path();
    let s = Server::start_env(&cgi_bin, &["--root", root.to_str().unwrap()], &[("PATH", path.as_os_str())]);

    let (status, res) = get_page(&s, "/run.sh");
    assert!(status == 200 && res.contains("\r\nran\n"), "{res}");
    assert!(get_page(&s, "/").1.ends_with("home\n"));
    for (page, expected) in [
        ("/cgi-bin/run.sh", 404),
        ("/cgi-bin/forgot.sh", 404),
        ("/cgi-bin/page.php", 404),
        ("/cgi-bin/", 404),
        ("/link.sh", 404),
        ("/old/config.php", 404),
        ("/forgot.sh", 500),
        ("/page.php", 500),
    ] {
        let (status, res) = get_page(&s, page);
        assert_eq!(status, expected, "{page}: {res}");
        assert!(!res.contains("SOURCE-OF"), "{page} leaked a script: {res}");
    }
    let log = s.log();
    assert!(log.contains("forgot.sh is not executable: run `chmod +x"), "{log}");
    assert!(log.contains("is a script (under --cgi-bin, or a handler's extension), never a static file"), "{log}");
}

#[test]
fn the_single_script_is_never_static() {
    let root = scratch();
    write(&root.join("app.sh"), "#!/bin/sh\necho SOURCE-OF-APP\n", 0o755);
    write(&root.join("index.html"), "home\n", 0o644);
    let script = root.join("app.sh");
    let s = Server::start_env(
        Path::new("/nonexistent"),
        &["--root", root.to_str().unwrap(), script.to_str().unwrap()],
        &[],
    );
    let (status, res) = get_page(&s, "/app.sh");
    assert_eq!(status, 404, "{res}");
    assert!(!res.contains("SOURCE-OF"), "{res}");
    assert!(get_page(&s, "/").1.ends_with("home\n"));
}

#[test]
fn directory_redirects_stay_on_this_host_and_keep_the_query() {
    let root = scratch();
    write(&root.join("sub/index.html"), "sub\n", 0o644);
    write(&root.join("d\u{e9}/index.html"), "accent\n", 0o644);
    let s = Server::start_in(&fixtures(), &["--root", root.to_str().unwrap()]);
    for (target, location) in [
        ("/sub", "/sub/"),
        ("//sub", "/sub/"),
        ("///sub", "/sub/"),
        ("/sub?x=1&y=%2F", "/sub/?x=1&y=%2F"),
        ("//sub?x=1", "/sub/?x=1"),
        ("/d%C3%A9", "/d%C3%A9/"),
        ("/d%C3%A9?q", "/d%C3%A9/?q"),
    ] {
        let (status, res) = get_page(&s, target);
        assert_eq!(status, 301, "{target}: {res}");
        let got = res.lines().find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")));
        assert_eq!(got, Some(location), "{target}: {res}");
    }
    assert!(get_page(&s, "//sub/").1.ends_with("sub\n"));
    // A raw (not percent-encoded) UTF-8 target is not a URI: refused.
    assert_eq!(get_page(&s, "/d\u{e9}").0, 400);
}

#[test]
fn missing_handler_programs_are_named_at_start_up() {
    let path = empty_path();
    let env = [("PATH", path.as_os_str())];
    // No .php script here: the default php handler stays quiet; a --handler
    // given on the command line is always checked, by name or by path.
    let s = Server::start_env(&fixtures(), &["--handler", "py=python3 -u", "--handler", "rb=/nonexistent/ruby"], &env);
    let log = s.log();
    assert!(!log.contains("php-cgi"), "{log}");
    for (ext, program) in [("py", "python3"), ("rb", "/nonexistent/ruby")] {
        let line = format!(
            "handler for .{ext} scripts: {program:?} is not installed or not in PATH; 0 .{ext} script(s) will \
             fail with 500 until it is: install it or name another with --handler {ext}=PROGRAM"
        );
        assert_eq!(log.matches(&line).count(), 1, "{log}");
    }
    // Installed programs are not reported.
    let s = Server::start_env(&fixtures(), &["--handler", "sh=/bin/sh"], &[]);
    assert!(!s.log().contains("is not installed"), "{}", s.log());
}
