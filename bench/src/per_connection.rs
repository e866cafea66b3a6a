//! Workload `per-connection` (issue 15): one process per connection,
//! `ws2http --per-connection '*'` against websocketd running the same
//! scripts, each figure measured on both in the same run, alternating:
//! - idle: N connections to `exec cat` held open; the server's own RSS (not
//!   its children's) after minus before, per connection;
//! - stream: one connection to `exec seq 1 L`: messages per second until the
//!   process exits;
//! - echo: one connection to `exec cat`: M messages, 64 in flight, each
//!   echoed back: round trips per second through one long-lived process;
//! - churn: C clients, each connecting, sending one message to `exec cat`,
//!   waiting for its echo and closing, again and again: connections/s.
//!
//! Goals (issue 15, "Performance"): server memory ≤ 1/10 of websocketd's per
//! connection; stream, echo and churn ≥ websocketd.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};

use crate::client;
use crate::common::{settle, Ctx, Mode};
use crate::servers::{Websocketd, Ws2http, Ws2httpOpts};
use crate::stats::{self, verdict, Spread, Table};
use crate::sys;

/// How big each measurement is.
struct Sizes {
    idle: usize,
    lines: usize,
    echo: usize,
    clients: usize,
    cycles: usize,
}

impl Sizes {
    fn of(mode: Mode) -> Sizes {
        match mode {
            Mode::Full => Sizes { idle: 1000, lines: 200_000, echo: 50_000, clients: 8, cycles: 100 },
            Mode::Quick => Sizes { idle: 500, lines: 100_000, echo: 20_000, clients: 8, cycles: 40 },
            Mode::Smoke => Sizes { idle: 10, lines: 100, echo: 100, clients: 2, cycles: 3 },
        }
    }
}

/// Messages in flight in the echo measurement.
const WINDOW: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Ws2http,
    Websocketd,
}

/// The measurements, in the order of the table.
const WHAT: [&str; 4] = ["idle", "stream", "echo", "churn"];

/// Writes `cat.sh` and `seq.sh` into `dir/per-connection`.
fn scripts(dir: &Path, lines: usize) -> Result<PathBuf, String> {
    let d = dir.join("per-connection");
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    for (name, body) in [("cat.sh", "exec cat".to_string()), ("seq.sh", format!("exec seq 1 {lines}"))] {
        let p = d.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    }
    Ok(d)
}

/// A started server: its address, the URL path of `script`, its pid.
enum Running {
    Ws2http(Ws2http),
    Websocketd(Websocketd),
}

impl Running {
    fn start(ctx: &Ctx, side: Server, dir: &Path, script: &str, tag: &str) -> Result<Running, String> {
        Ok(match side {
            Server::Ws2http => {
                let args: Vec<String> =
                    ["--per-connection", "*", "--max-connection-procs", "100000"].map(String::from).to_vec();
                Running::Ws2http(Ws2http::start(&Ws2httpOpts {
                    bin: &ctx.ws2http_bin,
                    cgi_bin: dir,
                    log_dir: &ctx.dir,
                    max_connections: 100_000,
                    max_procs: None,
                    wrapper: Vec::new(),
                    tag,
                    env: &ctx.ws2http_env,
                    args: &args,
                })?)
            }
            Server::Websocketd => Running::Websocketd(Websocketd::start(&dir.join(script), &ctx.dir, tag)?),
        })
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Running::Ws2http(s) => s.addr,
            Running::Websocketd(s) => s.addr,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Running::Ws2http(s) => s.proc.pid(),
            Running::Websocketd(s) => s.proc.pid(),
        }
    }

    fn path(&self, script: &str) -> String {
        match self {
            Running::Ws2http(_) => format!("/{script}"),
            Running::Websocketd(_) => "/".into(),
        }
    }
}

/// Server RSS (not its children) per idle connection, in bytes.
async fn idle(addr: SocketAddr, path: &str, pid: u32, n: usize) -> Result<f64, String> {
    let mut warm = client::connect(addr, path, 0).await?;
    client::round_trip(&mut warm, "warm up").await?;
    async_std::task::sleep(Duration::from_millis(300)).await;
    let before = sys::rss(pid);
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        let batch = (n - conns.len()).min(100);
        conns.extend(client::connect_many(addr, |_| path.to_owned(), batch, 16).await?);
        // websocketd answers before its process runs: let them keep up.
        let deadline = Instant::now() + Duration::from_secs(30);
        while sys::children(pid).len() < conns.len() + 1 && Instant::now() < deadline {
            async_std::task::sleep(Duration::from_millis(20)).await;
        }
    }
    async_std::task::sleep(Duration::from_secs(1)).await;
    let after = sys::rss(pid);
    let per = (after as f64 - before as f64) / n as f64;
    for ws in conns.into_iter().chain([warm]) {
        client::close(ws).await;
    }
    Ok(per)
}

/// Messages per second from `seq 1 lines` until it exits.
async fn stream(addr: SocketAddr, path: &str, lines: usize) -> Result<f64, String> {
    let t = Instant::now();
    let mut ws = client::connect(addr, path, 0).await?;
    let mut got = 0usize;
    while let Some(Ok(m)) = ws.next().await {
        if m.is_text() {
            got += 1;
        }
        if m.is_close() {
            break;
        }
    }
    let took = t.elapsed().as_secs_f64();
    if got + 1 < lines {
        return Err(format!("stream: got {got} of {lines} lines"));
    }
    Ok(got as f64 / took)
}

/// Round trips per second through one `cat`, `WINDOW` in flight.
async fn echo(addr: SocketAddr, path: &str, n: usize) -> Result<f64, String> {
    let mut ws = client::connect(addr, path, 0).await?;
    client::round_trip(&mut ws, "warm up").await?;
    let t = Instant::now();
    let (mut sent, mut recv) = (0usize, 0usize);
    while recv < n {
        while sent < n && sent - recv < WINDOW {
            let m = tungstenite_text(format!("message {sent}"));
            ws.feed(m).await.map_err(|e| format!("send: {e}"))?;
            sent += 1;
        }
        ws.flush().await.map_err(|e| format!("send: {e}"))?;
        client::timeout(Duration::from_secs(10), "echo", client::recv_text(&mut ws)).await?;
        recv += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    client::close(ws).await;
    Ok(rate)
}

fn tungstenite_text(s: String) -> async_tungstenite::tungstenite::Message {
    async_tungstenite::tungstenite::Message::text(s)
}

/// One measurement on a fresh server.
fn measure(ctx: &Ctx, z: &Sizes, dir: &Path, side: Server, what: &str, k: usize) -> Result<f64, String> {
    let script = if what == "stream" { "seq.sh" } else { "cat.sh" };
    let name = if side == Server::Ws2http { "ws2http" } else { "websocketd" };
    let server = Running::start(ctx, side, dir, script, &format!("pc-{what}-{k}"))?;
    let (addr, path, pid) = (server.addr(), server.path(script), server.pid());
    settle(pid);
    let v = async_std::task::block_on(async {
        match what {
            "idle" => idle(addr, &path, pid, z.idle).await,
            "stream" => stream(addr, &path, z.lines).await,
            "echo" => echo(addr, &path, z.echo).await,
            _ => crate::churn::timed(addr, &path, z.clients, z.cycles).await,
        }
    })?;
    ctx.note(format!("per-connection: {what} {name} run {}: {v:.1}", k + 1));
    Ok(v)
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    if !Websocketd::available() {
        return crate::common::missing_tools("## Per-connection processes vs websocketd\n\n", &["websocketd"]);
    }
    let z = Sizes::of(ctx.mode);
    let dir = scripts(&ctx.dir, z.lines)?;
    // [what][side]: values over the runs; sides alternate, first rotating.
    let mut got: [[Vec<f64>; 2]; 4] = Default::default();
    for k in 0..ctx.sizes.runs {
        for (w, what) in WHAT.iter().enumerate() {
            for i in 0..2 {
                let s = (i + k) % 2;
                let side = if s == 0 { Server::Ws2http } else { Server::Websocketd };
                got[w][s].push(measure(ctx, &z, &dir, side, what, k)?);
            }
        }
    }
    Ok(report(&z, &got))
}

fn report(z: &Sizes, got: &[[Vec<f64>; 2]; 4]) -> String {
    let mut table = Table::new(&["measurement", "ws2http", "websocketd", "ws2http ÷ websocketd", "goal", "result"]);
    let rows = [
        (format!("server RSS per idle connection ({} to `cat`)", z.idle), "≤ 0.10"),
        (format!("stream: messages/s from one `seq 1 {}`", z.lines), "≥ 1"),
        (format!("echo: round trips/s through one `cat` ({WINDOW} in flight)"), "≥ 1"),
        (format!("churn: connections/s ({} clients, connect + one echo + close)", z.clients), "≥ 1"),
    ];
    for (w, (label, goal)) in rows.iter().enumerate() {
        let [a, b] = &got[w];
        let fmt = |v: &[f64]| {
            let s = Spread::of(v);
            if w == 0 {
                s.fmt(stats::bytes)
            } else {
                s.fmt(stats::rate)
            }
        };
        let r = Spread::of(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>());
        let pass = if w == 0 { r.median <= 0.10 } else { r.median >= 1.0 };
        table.row(vec![label.clone(), fmt(a), fmt(b), r.fmt(stats::ratio), (*goal).into(), verdict(pass).into()]);
    }
    format!(
        "## Per-connection processes vs websocketd (issue 15)\n\n\
         `ws2http --per-connection '*'` and websocketd run the same scripts (`exec cat`, `exec seq`), \
         a fresh server per figure, alternating. Memory is the server process's own RSS, not its \
         children's.\n\n{}",
        table.render()
    )
}
