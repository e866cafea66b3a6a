//! The servers under test, each started by the bench on loopback ports with
//! its own temporary configuration, each in its own process group, each
//! stopped (group and all) when dropped.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sys;

/// Pids of the server processes alive now (never reaped as orphans).
static MANAGED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn managed() -> HashSet<u32> {
    MANAGED.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
}

/// Kills every server still running (used on a fatal error).
pub fn kill_all() {
    for pid in MANAGED.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        sys::kill(-(*pid as i32), libc::SIGKILL);
    }
}

/// A server process leading its own process group.
pub struct Proc {
    pub child: Child,
    /// Signal for a graceful stop; SIGKILL follows after `grace`.
    stop_signal: i32,
    grace: Duration,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, stop_signal: i32, grace: Duration) -> Result<Proc, String> {
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        MANAGED.lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
        Ok(Proc { child, stop_signal, grace })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.child.id();
        let group = -(pid as i32);
        sys::kill(group, self.stop_signal);
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        sys::kill(group, libc::SIGKILL);
        let _ = self.child.wait();
        MANAGED.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pid);
        // Whatever the group left behind (websocketd's per-connection
        // processes, Pushpin's helpers) was re-parented to us: reap it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            sys::reap_orphans(&managed());
            let left = std::fs::read_dir("/proc")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                        .filter(|p| {
                            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| live_in_group(&s, pid))
                        })
                        .count()
                })
                .unwrap_or(0);
            if left == 0 || Instant::now() > deadline {
                std::thread::sleep(Duration::from_millis(20));
                sys::reap_orphans(&managed());
                break;
            }
            sys::kill(group, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `true` when a /proc/PID/stat line is a live (not zombie) process of
/// process group `pgid`.
fn live_in_group(stat: &str, pgid: u32) -> bool {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return false };
    // state ppid pgrp ...
    let f: Vec<&str> = rest.split_whitespace().take(3).collect();
    f.len() == 3 && f[0] != "Z" && f[2].parse::<u32>().ok() == Some(pgid)
}

/// Where a server's stdout/stderr go: a log file in the bench's temp dir.
fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(format!("{name}.log"))).map(Stdio::from).unwrap_or_else(|_| Stdio::null())
}

pub struct Ws2http {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub api: SocketAddr,
}

/// How ws2http is started.
pub struct Ws2httpOpts<'a> {
    pub bin: &'a Path,
    pub cgi_bin: &'a Path,
    pub log_dir: &'a Path,
    pub max_connections: usize,
    pub max_procs: Option<usize>,
    /// Run under this wrapper (e.g. valgrind) instead of directly.
    pub wrapper: Vec<String>,
    pub tag: &'a str,
    /// Extra environment for ws2http (`--server-env`), e.g. RUST_LOG=warn.
    pub env: &'a [(String, String)],
    /// Extra command-line arguments (`--fastcgi ...`, `--redis ...`).
    pub args: &'a [String],
}

impl Ws2http {
    pub fn start(o: &Ws2httpOpts) -> Result<Ws2http, String> {
        let mut cmd = match o.wrapper.split_first() {
            Some((w, args)) => {
                let mut c = Command::new(w);
                c.args(args).arg(o.bin);
                c
            }
            None => Command::new(o.bin),
        };
        let limit = o.max_connections.to_string();
        cmd.args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--cgi-bin"]).arg(o.cgi_bin).args([
            "--max-connections",
            &limit,
            "--max-connections-per-ip",
            &limit,
        ]);
        if let Some(p) = o.max_procs {
            cmd.args(["--max-procs", &p.to_string()]);
        }
        cmd.args(o.args);
        // The default log level (one info line per event) goes to a file,
        // as it would in production.
        cmd.env_remove("RUST_LOG").envs(o.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log_file(o.log_dir, &format!("ws2http-{}", o.tag)));
        let mut proc = Proc::spawn("ws2http", &mut cmd, libc::SIGTERM, Duration::from_secs(3))?;
        let stdout = proc.child.stdout.take().ok_or("ws2http: no stdout")?;
        // The two start-up lines name the bound addresses.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut found = (None, None);
            while let Some(Ok(l)) = lines.next() {
                // http:// or, with --tls-cert, https:// (the `tls` workload).
                let listening = l.strip_prefix("ws2http: listening on http://");
                if let Some(a) = listening.or_else(|| l.strip_prefix("ws2http: listening on https://")) {
                    found.0 = a.trim().parse::<SocketAddr>().ok();
                } else if let Some(a) = l.strip_prefix("ws2http: control API on http://") {
                    found.1 = a.trim().parse::<SocketAddr>().ok();
                }
                if let (Some(a), Some(b)) = found {
                    let _ = tx.send((a, b));
                    found = (None, None);
                }
            }
        });
        let wait = if o.wrapper.is_empty() { 15 } else { 120 };
        let (addr, api) = rx.recv_timeout(Duration::from_secs(wait)).map_err(|_| {
            format!(
                "ws2http did not print its two start-up lines within {wait}s (see {})",
                o.log_dir.join(format!("ws2http-{}.log", o.tag)).display()
            )
        })?;
        Ok(Ws2http { proc, addr, api })
    }
}

pub struct Websocketd {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Websocketd {
    pub fn available() -> bool {
        which("websocketd").is_some()
    }

    pub fn start(script: &Path, log_dir: &Path, tag: &str) -> Result<Websocketd, String> {
        let port = sys::free_port();
        let mut cmd = Command::new("websocketd");
        cmd.arg(format!("--port={port}"))
            .arg("--address=127.0.0.1")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(log_file(log_dir, &format!("websocketd-{tag}")))
            .stderr(Stdio::null());
        let proc = Proc::spawn("websocketd", &mut cmd, libc::SIGKILL, Duration::from_millis(100))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        wait_listening(addr, Duration::from_secs(10)).map_err(|e| format!("websocketd: {e}"))?;
        Ok(Websocketd { proc, addr })
    }
}

/// nginx terminating TLS in front of a plain ws2http (the `tls` workload):
/// Debian's nginx, its configuration written here, one worker per core,
/// HTTP/1.1 kept-alive connections to the upstream (a tuned proxy).
pub struct Nginx {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Nginx {
    pub fn available() -> bool {
        which("nginx").is_some()
    }

    pub fn start(dir: &Path, tag: &str, cert: &Path, key: &Path, upstream: SocketAddr) -> Result<Nginx, String> {
        let prefix = dir.join(format!("nginx-{tag}"));
        std::fs::create_dir_all(prefix.join("logs")).map_err(|e| format!("{}: {e}", prefix.display()))?;
        let port = sys::free_port();
        let conf = prefix.join("nginx.conf");
        let text = format!(
            "daemon off;\nworker_processes auto;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n  access_log {p}/logs/access.log;\n\
             client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi;\n\
             uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
             upstream ws2http {{ server {upstream}; keepalive 64; }}\n\
             map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {cert}; ssl_certificate_key {key};\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
             location / {{ proxy_pass http://ws2http; proxy_http_version 1.1; proxy_set_header Host $host;\n\
             proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade; }}\n  }}\n}}\n",
            p = prefix.display(),
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
        let mut cmd = Command::new(which("nginx").unwrap_or_else(|| "nginx".into()));
        cmd.arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&prefix, "nginx-stderr"));
        let proc = Proc::spawn("nginx", &mut cmd, libc::SIGQUIT, Duration::from_secs(3))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        wait_listening(addr, Duration::from_secs(10)).map_err(|e| format!("nginx ({}): {e}", conf.display()))?;
        Ok(Nginx { proc, addr })
    }
}

/// Pushpin (WebSocket-over-HTTP) in front of lighttpd running a CGI origin.
pub struct Pushpin {
    /// Held so that dropping the struct stops it.
    #[allow(dead_code)]
    pub pushpin: Proc,
    pub lighttpd: Proc,
    /// Pushpin's client port.
    pub addr: SocketAddr,
}

impl Pushpin {
    pub fn available() -> Vec<&'static str> {
        ["pushpin", "lighttpd", "condure", "zurl"].into_iter().filter(|p| which(p).is_none()).collect()
    }

    /// `docroot` holds `ws.cgi`, the origin.
    pub fn start(dir: &Path, docroot: &Path) -> Result<Pushpin, String> {
        let conf = dir.join("pushpin-conf");
        let run = conf.join("run");
        let logs = conf.join("log");
        std::fs::create_dir_all(&run).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        let lport = sys::free_port();
        let lighttpd_conf = conf.join("lighttpd.conf");
        std::fs::write(
            &lighttpd_conf,
            format!(
                "server.document-root = \"{root}\"\n\
                 server.bind = \"127.0.0.1\"\n\
                 server.port = {lport}\n\
                 server.modules = (\"mod_cgi\")\n\
                 cgi.assign = (\".cgi\" => \"\")\n\
                 server.max-connections = 4096\n\
                 server.errorlog = \"{logs}/lighttpd.err\"\n\
                 server.pid-file = \"{run}/lighttpd.pid\"\n",
                root = docroot.display(),
                logs = logs.display(),
                run = run.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(which("lighttpd").unwrap_or_else(|| "lighttpd".into()));
        cmd.arg("-D")
            .arg("-f")
            .arg(&lighttpd_conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&logs, "lighttpd-stderr"));
        let lighttpd = Proc::spawn("lighttpd", &mut cmd, libc::SIGTERM, Duration::from_secs(3))?;
        wait_listening(format!("127.0.0.1:{lport}").parse().expect("addr"), Duration::from_secs(10))
            .map_err(|e| format!("lighttpd: {e}"))?;

        // A private instance: own run dir and IPC names, every TCP port of its
        // own. Debian's pushpin leaves the HTTP client (zurl) to a system
        // service, so the runner starts one here.
        let pport = sys::free_port();
        let push_port = sys::free_port();
        let routes = conf.join("routes");
        std::fs::write(&routes, format!("* 127.0.0.1:{lport},over_http\n")).map_err(|e| e.to_string())?;
        let pushpin_conf = conf.join("pushpin.conf");
        std::fs::write(
            &pushpin_conf,
            format!(
                "[global]\n\
                 include={{libdir}}/internal.conf\n\
                 rundir={run}\n\
                 ipc_prefix=bench-\n\
                 port_offset=0\n\
                 [runner]\n\
                 services=condure,zurl,pushpin-proxy,pushpin-handler\n\
                 http_port={pport}\n\
                 logdir={logs}\n\
                 log_level=2\n\
                 client_buffer_size=8192\n\
                 client_maxconn=50000\n\
                 condure_bin=condure\n\
                 zurl_bin=zurl\n\
                 [proxy]\n\
                 routesfile={routes}\n\
                 zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in\n\
                 zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream\n\
                 zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out\n\
                 sig_key=bench\n\
                 updates_check=off\n\
                 [handler]\n\
                 push_in_spec=ipc://{{rundir}}/{{ipc_prefix}}push-in\n\
                 push_in_sub_specs=ipc://{{rundir}}/{{ipc_prefix}}push-in-sub\n\
                 push_in_http_addr=127.0.0.1\n\
                 push_in_http_port={push_port}\n\
                 stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats\n\
                 command_spec=ipc://{{rundir}}/{{ipc_prefix}}command\n\
                 message_rate=2500\n\
                 message_hwm=25000\n",
                run = run.display(),
                logs = logs.display(),
                routes = routes.display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = Command::new("pushpin");
        cmd.arg("--config")
            .arg(&pushpin_conf)
            .arg("--port")
            .arg(format!("127.0.0.1:{pport}"))
            .arg("--merge-output")
            .stdin(Stdio::null())
            .stdout(log_file(&logs, "pushpin"))
            .stderr(Stdio::null());
        let pushpin = Proc::spawn("pushpin", &mut cmd, libc::SIGTERM, Duration::from_secs(5))?;
        let addr: SocketAddr = format!("127.0.0.1:{pport}").parse().expect("addr");
        wait_listening(addr, Duration::from_secs(20)).map_err(|e| format!("pushpin: {e}"))?;
        // Its processes talk over ZeroMQ sockets that connect in the
        // background; a request sent before they have is stuck for 20 s.
        std::thread::sleep(Duration::from_millis(2000));
        Ok(Pushpin { pushpin, lighttpd, addr })
    }
}

/// The fan-out baseline: this same binary in `__broadcast-server` mode.
pub struct Broadcaster {
    /// Held so that dropping the struct stops it.
    #[allow(dead_code)]
    pub proc: Proc,
    pub addr: SocketAddr,
    pub trigger: SocketAddr,
}

/// Starts this same binary in a baseline server `mode`; returns it and the
/// words of its start-up line.
fn start_self(mode: &str, args: &[&OsStr], what: &str, log_dir: &Path) -> Result<(Proc, Vec<String>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let log = format!("{}{}", mode.trim_start_matches('_'), if args.is_empty() { "" } else { "-spawn" });
    let mut all = vec![OsStr::new(mode)];
    all.extend_from_slice(args);
    start_baseline(&exe, &all, what, &log, log_dir)
}

/// Starts baseline server `exe ARGS` (logging to LOG.log); returns it and
/// the words of its start-up line.
fn start_baseline(
    exe: &Path,
    args: &[&OsStr],
    what: &str,
    log: &str,
    log_dir: &Path,
) -> Result<(Proc, Vec<String>), String> {
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log_file(log_dir, log));
    let mut proc = Proc::spawn(what, &mut cmd, libc::SIGKILL, Duration::from_millis(100))?;
    let out = proc.child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).map_err(|e| e.to_string())?;
    Ok((proc, line.split_whitespace().map(str::to_owned).collect()))
}

fn addr_at(words: &[String], i: usize, what: &str) -> Result<SocketAddr, String> {
    let w = words.get(i).ok_or_else(|| format!("{what}: unexpected start-up line {words:?}"))?;
    w.parse().map_err(|e| format!("{what}: {w}: {e}"))
}

impl Broadcaster {
    pub fn start(log_dir: &Path) -> Result<Broadcaster, String> {
        // "ws ADDR trigger ADDR"
        let what = "broadcast baseline";
        let (proc, words) = start_self("__broadcast-server", &[], what, log_dir)?;
        Ok(Broadcaster { addr: addr_at(&words, 1, what)?, trigger: addr_at(&words, 3, what)?, proc })
    }
}

/// Workload 1's bare servers: the transport floor and the stack floor (this
/// same binary in `__echo-server` mode), the threads floor
/// (`__threads-server`) and the tokio floor (bench/floors/).
pub struct EchoServer {
    /// Held so that dropping the struct stops it.
    #[allow(dead_code)]
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl EchoServer {
    /// Echoes each message itself, or (`spawn`) through one run of `spawn`.
    pub fn start(log_dir: &Path, spawn: Option<&Path>) -> Result<EchoServer, String> {
        // "ws ADDR"
        let what = "echo baseline";
        let args: Vec<&OsStr> = match spawn {
            Some(p) => vec![OsStr::new("spawn"), p.as_os_str()],
            None => Vec::new(),
        };
        let (proc, words) = start_self("__echo-server", &args, what, log_dir)?;
        Ok(EchoServer { addr: addr_at(&words, 1, what)?, proc })
    }

    /// The threads floor: this binary's `__threads-server PROGRAM`.
    pub fn threads(log_dir: &Path, program: &Path) -> Result<EchoServer, String> {
        let what = "threads floor";
        let extra: Vec<std::ffi::OsString> = crate::throughput::BASELINE_ENV
            .get()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}").into())
            .collect();
        let mut args = vec![program.as_os_str()];
        args.extend(extra.iter().map(|a| a.as_os_str()));
        let (proc, words) = start_self("__threads-server", &args, what, log_dir)?;
        Ok(EchoServer { addr: addr_at(&words, 1, what)?, proc })
    }

    /// The tokio floor: `ws2http-floor-tokio PROGRAM` (bench/floors/).
    pub fn tokio(bin: &Path, log_dir: &Path, program: &Path) -> Result<EchoServer, String> {
        let what = "tokio floor";
        let (proc, words) = start_baseline(bin, &[program.as_os_str()], what, "floor-tokio", log_dir)?;
        Ok(EchoServer { addr: addr_at(&words, 1, what)?, proc })
    }
}

pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]).map(|d| d.join(prog)).find(
        |p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        },
    )
}

fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not listening on {addr} after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A php-fpm pool of its own: `pm = static` with `children` workers on
/// 127.0.0.1:PORT (docs/BACKENDS.md).
pub struct PhpFpm {
    /// Held so that dropping the struct stops it.
    #[allow(dead_code)]
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl PhpFpm {
    pub fn binary() -> Option<PathBuf> {
        which("php-fpm8.2").or_else(|| which("php-fpm"))
    }

    pub fn start(dir: &Path, tag: &str, children: usize) -> Result<PhpFpm, String> {
        let bin = Self::binary().ok_or("php-fpm not installed")?;
        let port = sys::free_port();
        let conf = dir.join(format!("php-fpm-{tag}.conf"));
        std::fs::write(
            &conf,
            format!(
                "[global]\n\
                 pid = {dir}/php-fpm-{tag}.pid\n\
                 error_log = {dir}/php-fpm-{tag}.log\n\
                 daemonize = no\n\
                 [bench]\n\
                 listen = 127.0.0.1:{port}\n\
                 pm = static\n\
                 pm.max_children = {children}\n\
                 catch_workers_output = yes\n",
                dir = dir.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg("-R")
            .arg("-F")
            .arg("-y")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(dir, &format!("php-fpm-{tag}-stderr")));
        let proc = Proc::spawn("php-fpm", &mut cmd, libc::SIGTERM, Duration::from_secs(3))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        wait_listening(addr, Duration::from_secs(10)).map_err(|e| format!("php-fpm: {e}"))?;
        Ok(PhpFpm { proc, addr })
    }
}

/// A private redis-server (no persistence) for cluster mode.
pub struct Redis {
    /// Held so that dropping the struct stops it.
    #[allow(dead_code)]
    pub proc: Proc,
    pub url: String,
}

impl Redis {
    pub fn available() -> bool {
        which("redis-server").is_some()
    }

    pub fn start(dir: &Path) -> Result<Redis, String> {
        let port = sys::free_port();
        let mut cmd = Command::new(which("redis-server").unwrap_or_else(|| "redis-server".into()));
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_file(dir, "redis"))
            .stderr(Stdio::null());
        let proc = Proc::spawn("redis-server", &mut cmd, libc::SIGTERM, Duration::from_secs(3))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        wait_listening(addr, Duration::from_secs(10)).map_err(|e| format!("redis-server: {e}"))?;
        Ok(Redis { proc, url: format!("redis://127.0.0.1:{port}/0") })
    }
}
