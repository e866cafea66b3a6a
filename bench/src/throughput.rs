//! Workload 1, event throughput: N connections each send M messages, one at
//! a time (send, wait for the echo, send the next), to a trivial script.
//! Baseline, the spawn limit: N threads that each spawn the same program M
//! times with the same plumbing (stdin, stdout and stderr piped; payload
//! written, stdout read to EOF, the exit status waited for).
//!
//! Next to it, in the same run, with the same client, N, M and program, and
//! taking turns with ws2http and the limit: minimal WebSocket servers that
//! each spawn the program per message, so that every figure is stated
//! against the best minimal server on any stack, not only against our own
//! (issue 14). The *threads floor* (blocking tungstenite + std::process, a
//! thread per connection, `threads_server.rs`), the *tokio floor* (tokio +
//! tokio-tungstenite + tokio::process, bench/floors/), the *stack floor*
//! (async-std + ws2http's spawn primitive, `echo_server.rs`), and the bare
//! WebSocket round trip with no spawn at all.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::client::{self, Ws};
use crate::common::{settle, Ctx};
use crate::servers::{EchoServer, Ws2http};
use crate::stats::{self, verdict, Lat, Spread, Table};

/// One measured run.
#[derive(Clone, Debug)]
pub struct Run {
    pub events: usize,
    pub wall: Duration,
    pub lat: Lat,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.wall.as_secs_f64()
    }
}

/// Messages sent before the clock starts, per connection.
const WARMUP: usize = 3;

fn payload(conn: usize, i: usize) -> String {
    format!("bench message {conn} {i}")
}

/// The tokio floor's binary, built by `TOKIO_FLOOR_BUILD` (from the
/// workspace root) into bench/floors/target/release/ (or CARGO_TARGET_DIR).
pub const TOKIO_FLOOR_BIN: &str = "ws2http-floor-tokio";
pub const TOKIO_FLOOR_BUILD: &str = "cargo build --release --locked --manifest-path bench/floors/Cargo.toml";

/// Extra environment for every spawn of [`spawn_once`] (`--baseline-env`):
/// by default the spawn limit and the threads floor pass `PATH` only, where
/// ws2http passes some 30 CGI variables; with those given here, the
/// baselines pay what the CGI contract costs a spawn too (an experiment:
/// the published figures use the default).
pub static BASELINE_ENV: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// `KEY=VALUE` words as pairs (words without `=` are left out).
pub fn env_pairs(words: impl IntoIterator<Item = String>) -> Vec<(String, String)> {
    words.into_iter().filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect()
}

/// Spawns `prog` once the way ws2http does (minus everything ws2http adds);
/// its stdout. The spawn limit and the threads floor both spawn with it.
pub fn spawn_once(prog: &Path, path_env: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(prog)
        .env_clear()
        .env("PATH", path_env)
        .envs(BASELINE_ENV.get().into_iter().flatten().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", prog.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    // A script may exit without reading its stdin.
    let _ = stdin.write_all(input);
    drop(stdin);
    let mut out = Vec::new();
    child.stdout.take().ok_or("no stdout")?.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let mut err = Vec::new();
    child.stderr.take().ok_or("no stderr")?.read_to_end(&mut err).map_err(|e| e.to_string())?;
    let st = child.wait().map_err(|e| e.to_string())?;
    if !st.success() || out.is_empty() {
        return Err(format!("{} failed: {st}, output {:?}", prog.display(), String::from_utf8_lossy(&out)));
    }
    Ok(out)
}

/// The spawn limit with `conns` parallel loops of `msgs` spawns each.
pub fn spawn_limit(prog: &Path, conns: usize, msgs: usize) -> Result<Run, String> {
    let path_env = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let barrier = Barrier::new(conns + 1);
    let (wall, lats) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|c| {
                let (barrier, path_env) = (&barrier, &path_env);
                s.spawn(move || -> Result<Vec<Duration>, String> {
                    let mut r = Ok(());
                    for i in 0..WARMUP {
                        r = r.and_then(|_| spawn_once(prog, path_env, payload(c, i).as_bytes()).map(drop));
                    }
                    barrier.wait();
                    r?;
                    let mut lat = Vec::with_capacity(msgs);
                    for i in 0..msgs {
                        let p = payload(c, i);
                        let t = Instant::now();
                        spawn_once(prog, path_env, p.as_bytes())?;
                        lat.push(t.elapsed());
                    }
                    Ok(lat)
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let mut all = Vec::new();
        let mut err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(l)) => all.extend(l),
                Ok(Err(e)) => err = Some(e),
                Err(_) => err = Some("a spawn thread panicked".into()),
            }
        }
        (t0.elapsed(), err.map_or(Ok(all), Err))
    });
    let lats = lats?;
    Ok(Run { events: lats.len(), wall, lat: Lat::of(&lats) })
}

/// `conns` connections to `addr{path}`, each sending `msgs` messages one
/// at a time. Connection set-up (open events) is not timed.
pub async fn ws_run(addr: SocketAddr, path: &str, conns: usize, msgs: usize) -> Result<Run, String> {
    let mut wss = client::connect_many(addr, |_| path.to_owned(), conns, 16).await?;
    for (c, ws) in wss.iter_mut().enumerate() {
        for i in 0..WARMUP {
            client::round_trip(ws, &payload(c, i)).await?;
        }
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = wss
        .into_iter()
        .enumerate()
        .map(|(c, mut ws)| {
            async_std::task::spawn(async move {
                let mut lat = Vec::with_capacity(msgs);
                for i in 0..msgs {
                    lat.push(client::round_trip(&mut ws, &payload(c, i)).await?);
                }
                Ok::<(Vec<Duration>, Ws), String>((lat, ws))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut done = Vec::new();
    let mut err = None;
    for t in tasks {
        match t.await {
            Ok((l, ws)) => {
                all.extend(l);
                done.push(ws);
            }
            Err(e) => err = Some(e),
        }
    }
    let wall = t0.elapsed();
    futures_util::future::join_all(done.into_iter().map(client::close)).await;
    if let Some(e) = err {
        return Err(e);
    }
    Ok(Run { events: all.len(), wall, lat: Lat::of(&all) })
}

pub fn rates(r: &[Run]) -> Spread {
    Spread::of(&r.iter().map(Run::rate).collect::<Vec<_>>())
}

pub fn p50s(r: &[Run]) -> Spread {
    Spread::of(&r.iter().map(|r| r.lat.p50).collect::<Vec<_>>())
}

pub fn p99s(r: &[Run]) -> Spread {
    Spread::of(&r.iter().map(|r| r.lat.p99).collect::<Vec<_>>())
}

/// What workload 1 measures, once each per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ws2http,
    /// The spawn limit (no server).
    Limit,
    Threads,
    Tokio,
    /// The bare WebSocket round trip (no spawn).
    Echo,
    /// The stack floor: async-std + ws2http's spawn primitive.
    Stack,
}

impl Side {
    const ALL: [Side; 6] = [Side::Ws2http, Side::Limit, Side::Threads, Side::Tokio, Side::Echo, Side::Stack];

    /// Run `k`'s order: each run starts one further along, so drift hits
    /// every side alike and each takes every place in turn.
    fn order(k: usize) -> [Side; 6] {
        let mut o = Side::ALL;
        o.rotate_left(k % Side::ALL.len());
        o
    }
}

/// The servers of one script.
struct Servers<'a> {
    ws2http: &'a Ws2http,
    /// ws2http's URL path of the script.
    path: &'a str,
    program: &'a Path,
    echo: &'a EchoServer,
    stack: EchoServer,
    threads: EchoServer,
    tokio: EchoServer,
}

impl Servers<'_> {
    fn measure(&self, side: Side, conns: usize, msgs: usize) -> Result<Run, String> {
        let ws = |addr, path| async_std::task::block_on(ws_run(addr, path, conns, msgs));
        match side {
            Side::Ws2http => ws(self.ws2http.addr, self.path),
            Side::Limit => spawn_limit(self.program, conns, msgs),
            Side::Threads => ws(self.threads.addr, "/"),
            Side::Tokio => ws(self.tokio.addr, "/"),
            Side::Echo => ws(self.echo.addr, "/"),
            Side::Stack => ws(self.stack.addr, "/"),
        }
    }

    /// Waits for the children `side` may still be reaping, then a pause.
    fn settle_after(&self, side: Side) {
        let server = match side {
            Side::Ws2http => Some(self.ws2http.proc.pid()),
            Side::Limit => None,
            Side::Threads => Some(self.threads.proc.pid()),
            Side::Tokio => Some(self.tokio.proc.pid()),
            Side::Echo => Some(self.echo.proc.pid()),
            Side::Stack => Some(self.stack.proc.pid()),
        };
        match server {
            Some(pid) => settle(pid),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Every side's runs of one row (script × connections); run k of each side
/// was measured in the same round, so ratios are taken per run.
#[derive(Default)]
pub struct Row {
    pub ws: Vec<Run>,
    pub limit: Vec<Run>,
    pub threads: Vec<Run>,
    pub tokio: Vec<Run>,
    /// The bare WebSocket round trip.
    pub echo: Vec<Run>,
    pub stack: Vec<Run>,
}

/// `f(a[k], b[k])` for every run k, as a spread.
fn per_run(a: &[Run], b: &[Run], f: impl Fn(&Run, &Run) -> f64) -> Spread {
    Spread::of(&a.iter().zip(b).map(|(x, y)| f(x, y)).collect::<Vec<_>>())
}

impl Row {
    fn runs(&mut self, side: Side) -> &mut Vec<Run> {
        match side {
            Side::Ws2http => &mut self.ws,
            Side::Limit => &mut self.limit,
            Side::Threads => &mut self.threads,
            Side::Tokio => &mut self.tokio,
            Side::Echo => &mut self.echo,
            Side::Stack => &mut self.stack,
        }
    }
    /// ws2http's events/s ÷ `other`'s.
    pub fn ratio(&self, other: &[Run]) -> Spread {
        per_run(&self.ws, other, |w, o| w.rate() / o.rate())
    }
    /// `server`'s p50 − the spawn limit's p50: what the server adds.
    pub fn added_p50(&self, server: &[Run]) -> Spread {
        per_run(server, &self.limit, |s, l| s.lat.p50 - l.lat.p50)
    }
    /// ws2http's added p50 minus the WebSocket round trip itself, per run.
    pub fn own_p50(&self) -> Spread {
        let own = self.ws.iter().zip(&self.limit).zip(&self.echo);
        Spread::of(&own.map(|((w, b), t)| w.lat.p50 - b.lat.p50 - t.lat.p50).collect::<Vec<_>>())
    }
    /// ws2http's added p50 − the threads floor's (= ws2http p50 − threads p50).
    fn over_threads_p50(&self) -> Spread {
        per_run(&self.ws, &self.threads, |w, t| w.lat.p50 - t.lat.p50)
    }
}

/// `+12 µs` / `-3 µs`.
fn signed(s: f64) -> String {
    if s >= 0.0 {
        format!("+{}", stats::dur(s))
    } else {
        stats::dur(s)
    }
}

/// Issue 14's goal for a row, and the verdict: at one connection, added
/// p50 ≤ the threads floor's + 30 µs; at many, ≥ 0.95 × the threads floor's
/// events/s and ≥ 0.90 × the limit's.
fn judge(row: &Row, conns: usize) -> (String, String) {
    if conns == 1 {
        let over = row.over_threads_p50();
        let goal = "added p50 ≤ threads floor's + 30 µs";
        return (goal.into(), format!("{} ({} over)", verdict(over.median <= 30e-6), signed(over.median)));
    }
    let goal = "≥ 0.95 × threads floor and ≥ 0.90 × limit (events/s)";
    let misses: Vec<&str> =
        [(row.ratio(&row.threads).median >= 0.95, "threads floor"), (row.ratio(&row.limit).median >= 0.90, "limit")]
            .into_iter()
            .filter_map(|(pass, what)| (!pass).then_some(what))
            .collect();
    let result = if misses.is_empty() { "PASS".to_owned() } else { format!("MISS ({})", misses.join(", ")) };
    (goal.into(), result)
}

const COLUMNS: [&str; 21] = [
    "script",
    "conns",
    "ws2http events/s",
    "spawn limit events/s",
    "threads floor events/s",
    "tokio floor events/s",
    "ws2http ÷ limit",
    "ws2http ÷ threads floor",
    "ws2http ÷ tokio floor",
    "ws2http p50 / p99",
    "spawn p50 / p99",
    "threads floor p50",
    "tokio floor p50",
    "added p50",
    "threads floor added p50",
    "tokio floor added p50",
    "of which WebSocket round trip (bare echo server p50)",
    "ws2http's own p50",
    "stack floor p50 (bare server spawning per message)",
    "goal",
    "result",
];

fn table_row(name: &str, conns: usize, row: &Row) -> Vec<String> {
    let dur = |s: Spread| s.fmt(stats::dur);
    let lat = |r: &[Run]| format!("{} / {}", dur(p50s(r)), dur(p99s(r)));
    let (goal, result) = judge(row, conns);
    vec![
        name.to_string(),
        conns.to_string(),
        rates(&row.ws).fmt(stats::rate),
        rates(&row.limit).fmt(stats::rate),
        rates(&row.threads).fmt(stats::rate),
        rates(&row.tokio).fmt(stats::rate),
        row.ratio(&row.limit).fmt(stats::ratio),
        row.ratio(&row.threads).fmt(stats::ratio),
        row.ratio(&row.tokio).fmt(stats::ratio),
        lat(&row.ws),
        lat(&row.limit),
        dur(p50s(&row.threads)),
        dur(p50s(&row.tokio)),
        dur(row.added_p50(&row.ws)),
        dur(row.added_p50(&row.threads)),
        dur(row.added_p50(&row.tokio)),
        dur(p50s(&row.echo)),
        dur(row.own_p50()),
        dur(p50s(&row.stack)),
        goal,
        result,
    ]
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let many = z.tp_many_conns;
    let tokio_bin = ctx.tokio_floor.as_deref().ok_or("the tokio floor was not located (a bug of the bench)")?;
    // The same parallelism on both sides: ws2http may run as many scripts at
    // once as there are connections, like the baseline's threads.
    let server = ctx.ws2http("throughput", 1000, Some(many))?;
    let echo = EchoServer::start(&ctx.dir, None)?;
    let scripts = [("C echo", "/echo", ctx.fx.echo_c()), ("sh echo.sh", "/echo.sh", ctx.fx.echo_sh())];
    let configs = [(1, z.tp_one_msgs), (many, z.tp_many_msgs)];
    let mut table = Table::new(&COLUMNS);
    for (name, path, prog) in &scripts {
        let servers = Servers {
            ws2http: &server,
            path,
            program: prog,
            echo: &echo,
            stack: EchoServer::start(&ctx.dir, Some(prog))?,
            threads: EchoServer::threads(&ctx.dir, prog)?,
            tokio: EchoServer::tokio(tokio_bin, &ctx.dir, prog)?,
        };
        for &(conns, msgs) in &configs {
            let mut row = Row::default();
            for k in 0..z.runs {
                ctx.note(format!("throughput: {name}, {conns} conn(s) x {msgs} msgs, run {}/{}", k + 1, z.runs));
                for side in Side::order(k) {
                    let r = servers.measure(side, conns, msgs).map_err(|e| format!("{side:?}: {e}"))?;
                    row.runs(side).push(r);
                    servers.settle_after(side);
                }
            }
            table.row(table_row(name, conns, &row));
        }
    }
    Ok(format!(
        "## Workload 1: event throughput\n\n\
         Each connection sends one message, waits for the echo, sends the next. \
         Spawn limit: {many} (or 1) threads spawning the same program with the same pipes. \
         ws2http runs with --max-procs {many}. Latency is the client's round trip \
         (servers) or spawn-to-exit (limit); added p50 = server p50 − spawn p50, of which the \
         WebSocket round trip is what a bare echo server on ws2http's stack takes (same client, \
         same connections, no script); ws2http's own p50 = added − that. \
         The floors are minimal servers that spawn the program per message (same client, \
         connections and messages, taking turns with ws2http and the limit in every run): \
         the threads floor (blocking tungstenite + std::process, a thread per connection, \
         the limit's spawn code), the tokio floor (tokio + tokio-tungstenite + tokio::process, \
         multi-thread runtime) and the stack floor (async-std + async-tungstenite + ws2http's \
         spawn primitive). Goals (issue 14): at {many} connections ws2http ≥ 0.95 × the threads \
         floor and ≥ 0.90 × the limit in events/s; at 1 connection ws2http's added p50 ≤ the \
         threads floor's + 30 µs (\"over\" = ws2http p50 − threads floor p50, per run).\n\n{}",
        table.render()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, p50_us: f64) -> Run {
        let lat = Lat { p50: p50_us * 1e-6, p99: 2.0 * p50_us * 1e-6 };
        Run { events: rate as usize, wall: Duration::from_secs(1), lat }
    }

    /// `--baseline-env`: the spawn limit's and threads floor's spawns get
    /// the extra variables beside `PATH`, and nothing else of ours.
    #[test]
    fn baseline_env_reaches_every_spawn_beside_path_only() {
        let pairs = env_pairs(["WS_EVENT=message".into(), "CONTENT_TYPE=text/plain; a=b".into(), "no-equals".into()]);
        assert_eq!(pairs.len(), 2, "a word without '=' is left out");
        let _ = BASELINE_ENV.set(pairs);
        let out = spawn_once(Path::new("/usr/bin/env"), "/usr/bin:/bin", b"").expect("env runs");
        let mut lines: Vec<&str> = std::str::from_utf8(&out).expect("UTF-8").lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["CONTENT_TYPE=text/plain; a=b", "PATH=/usr/bin:/bin", "WS_EVENT=message"]);
    }

    #[test]
    fn every_side_runs_once_per_run_and_takes_every_place() {
        for k in 0..Side::ALL.len() {
            let o = Side::order(k);
            assert!(Side::ALL.iter().all(|s| o.contains(s)), "run {k}: {o:?}");
        }
        let firsts: Vec<Side> = (0..Side::ALL.len()).map(|k| Side::order(k)[0]).collect();
        assert_eq!(firsts, Side::ALL);
    }

    #[test]
    fn goals_are_issue_14s() {
        let row = |ws: Run, limit: Run, threads: Run| Row {
            ws: vec![ws],
            limit: vec![limit],
            threads: vec![threads],
            ..Row::default()
        };
        // Many connections: 0.95 × threads and 0.9 × limit, both needed.
        assert_eq!(judge(&row(run(950.0, 1.0), run(1000.0, 1.0), run(1000.0, 1.0)), 16).1, "PASS");
        assert_eq!(judge(&row(run(940.0, 1.0), run(1000.0, 1.0), run(900.0, 1.0)), 16).1, "PASS");
        assert_eq!(judge(&row(run(900.0, 1.0), run(1000.0, 1.0), run(1000.0, 1.0)), 16).1, "MISS (threads floor)");
        assert_eq!(judge(&row(run(890.0, 1.0), run(1000.0, 1.0), run(800.0, 1.0)), 16).1, "MISS (limit)");
        // One connection: ws2http p50 − threads floor p50 ≤ 30 µs.
        assert_eq!(judge(&row(run(1.0, 530.0), run(1.0, 400.0), run(1.0, 500.0)), 1).1, "PASS (+30 µs over)");
        assert_eq!(judge(&row(run(1.0, 531.0), run(1.0, 400.0), run(1.0, 500.0)), 1).1, "MISS (+31 µs over)");
        assert_eq!(judge(&row(run(1.0, 480.0), run(1.0, 400.0), run(1.0, 500.0)), 1).1, "PASS (-20 µs over)");
    }
}
