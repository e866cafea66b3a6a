//! The scripts every workload runs, from bench/scripts/ (compiled into this
//! binary), written to a temporary directory and built there with `cc`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const ECHO_C: &str = include_str!("../scripts/echo.c");
const ECHO_SH: &str = include_str!("../scripts/echo.sh");
const JOIN_C: &str = include_str!("../scripts/join.c");
const HELLO_C: &str = include_str!("../scripts/hello.c");
const WSOH_C: &str = include_str!("../scripts/wsoh.c");
const ECHO_PHP: &str = include_str!("../scripts/echo.php");
const PARAMS_PHP: &str = include_str!("../scripts/params.php");

pub struct Fixtures {
    /// `--cgi-bin` for ws2http: `echo` (C), `echo.sh`, `join` (C), `hello` (C),
    /// `echo.php`, and `fpm/echo.php` + `fpm/params.php` (for `--fastcgi /fpm=...`).
    pub cgi_bin: PathBuf,
    /// lighttpd's document root for Pushpin: `ws.cgi`.
    pub origin_root: PathBuf,
}

impl Fixtures {
    pub fn echo_c(&self) -> PathBuf {
        self.cgi_bin.join("echo")
    }
    pub fn echo_sh(&self) -> PathBuf {
        self.cgi_bin.join("echo.sh")
    }
}

fn cc(src: &str, name: &str, out: &Path, work: &Path) -> Result<(), String> {
    let c = work.join(format!("{name}.c"));
    std::fs::write(&c, src).map_err(|e| e.to_string())?;
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&compiler)
        .args(["-O2", "-o"])
        .arg(out)
        .arg(&c)
        .status()
        .map_err(|e| format!("cannot run the C compiler {compiler:?} (install gcc or set CC): {e}"))?;
    if !st.success() {
        return Err(format!("{compiler} failed to build {name}.c: {st}"));
    }
    Ok(())
}

pub fn build(dir: &Path) -> Result<Fixtures, String> {
    let src = dir.join("src");
    let cgi_bin = dir.join("cgi-bin");
    let origin_root = dir.join("origin");
    for d in [&src, &cgi_bin, &origin_root] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    cc(ECHO_C, "echo", &cgi_bin.join("echo"), &src)?;
    cc(JOIN_C, "join", &cgi_bin.join("join"), &src)?;
    cc(HELLO_C, "hello", &cgi_bin.join("hello"), &src)?;
    cc(WSOH_C, "wsoh", &origin_root.join("ws.cgi"), &src)?;
    let sh = cgi_bin.join("echo.sh");
    std::fs::write(&sh, ECHO_SH).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let fpm = cgi_bin.join("fpm");
    std::fs::create_dir_all(&fpm).map_err(|e| format!("{}: {e}", fpm.display()))?;
    for (path, text) in
        [(cgi_bin.join("echo.php"), ECHO_PHP), (fpm.join("echo.php"), ECHO_PHP), (fpm.join("params.php"), PARAMS_PHP)]
    {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(Fixtures { cgi_bin, origin_root })
}
