//! Workload 1, event throughput: N connections each send M messages, one at
//! a time (send, wait for the echo, send the next), to a trivial script.
//! Baseline, the spawn limit: N threads that each spawn the same program M
//! times with the same plumbing (stdin, stdout and stderr piped; payload
//! written, stdout read to EOF, the exit status waited for).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::client::{self, Ws};
use crate::common::{settle, Ctx};
use crate::servers::EchoServer;
use crate::stats::{self, Lat, Spread, Table};

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

/// Spawns `prog` once the way ws2http does (minus everything ws2http adds).
fn spawn_once(prog: &Path, path_env: &str, input: &[u8]) -> Result<(), String> {
    let mut child = Command::new(prog)
        .env_clear()
        .env("PATH", path_env)
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
    Ok(())
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
                        r = r.and_then(|_| spawn_once(prog, path_env, payload(c, i).as_bytes()));
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

/// ws2http's and the baseline's runs of one configuration (and, in
/// workload 1, the transport floor's: a bare echo server).
pub struct Pair {
    pub ws: Vec<Run>,
    pub base: Vec<Run>,
    pub transport: Vec<Run>,
    /// A bare server on the same stack spawning the program per message.
    pub floor: Vec<Run>,
}

impl Pair {
    pub fn ratio(&self) -> Spread {
        Spread::of(&self.ws.iter().zip(&self.base).map(|(w, b)| w.rate() / b.rate()).collect::<Vec<_>>())
    }
    pub fn added_p50(&self) -> Spread {
        Spread::of(&self.ws.iter().zip(&self.base).map(|(w, b)| w.lat.p50 - b.lat.p50).collect::<Vec<_>>())
    }
    /// Added p50 minus the WebSocket round trip itself, per run.
    pub fn own_p50(&self) -> Spread {
        let own = self.ws.iter().zip(&self.base).zip(&self.transport);
        Spread::of(&own.map(|((w, b), t)| w.lat.p50 - b.lat.p50 - t.lat.p50).collect::<Vec<_>>())
    }
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

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let many = z.tp_many_conns;
    // The same parallelism on both sides: ws2http may run as many scripts at
    // once as there are connections, like the baseline's threads.
    let server = ctx.ws2http("throughput", 1000, Some(many))?;
    let pid = server.proc.pid();
    let echo = EchoServer::start(&ctx.dir, None)?;
    let scripts = [("C echo", "/echo", ctx.fx.echo_c()), ("sh echo.sh", "/echo.sh", ctx.fx.echo_sh())];
    let configs = [(1, z.tp_one_msgs), (many, z.tp_many_msgs)];
    let mut table = Table::new(&[
        "script",
        "conns",
        "ws2http events/s",
        "spawn limit events/s",
        "ws2http ÷ limit",
        "ws2http p50 / p99",
        "spawn p50 / p99",
        "added p50",
        "of which WebSocket round trip (bare echo server p50)",
        "ws2http's own p50",
        "stack floor p50 (bare server spawning per message)",
        "goal",
        "result",
    ]);
    for (name, path, prog) in &scripts {
        let floor = EchoServer::start(&ctx.dir, Some(prog))?;
        for &(conns, msgs) in &configs {
            let mut pair = Pair { ws: Vec::new(), base: Vec::new(), transport: Vec::new(), floor: Vec::new() };
            for k in 0..z.runs {
                ctx.note(format!("throughput: {name}, {conns} conn(s) x {msgs} msgs, run {}/{}", k + 1, z.runs));
                // Alternate which side goes first, so drift hits both alike.
                let order = if k % 2 == 0 { [false, true] } else { [true, false] };
                for ws_side in order {
                    settle(pid);
                    if ws_side {
                        pair.ws.push(async_std::task::block_on(ws_run(server.addr, path, conns, msgs))?);
                    } else {
                        pair.base.push(spawn_limit(prog, conns, msgs)?);
                    }
                }
                pair.transport.push(async_std::task::block_on(ws_run(echo.addr, "/", conns, msgs))?);
                pair.floor.push(async_std::task::block_on(ws_run(floor.addr, "/", conns, msgs))?);
            }
            let (ratio, added) = (pair.ratio(), pair.added_p50());
            let pass_rate = ratio.median >= 0.9;
            let pass_lat = added.median < 100e-6;
            let result = match (pass_rate, pass_lat) {
                (true, true) => "PASS".to_owned(),
                (false, true) => "MISS (rate)".into(),
                (true, false) => "MISS (latency)".into(),
                (false, false) => "MISS (rate, latency)".into(),
            };
            table.row(vec![
                name.to_string(),
                conns.to_string(),
                rates(&pair.ws).fmt(stats::rate),
                rates(&pair.base).fmt(stats::rate),
                ratio.fmt(stats::ratio),
                format!("{} / {}", p50s(&pair.ws).fmt(stats::dur), p99s(&pair.ws).fmt(stats::dur)),
                format!("{} / {}", p50s(&pair.base).fmt(stats::dur), p99s(&pair.base).fmt(stats::dur)),
                added.fmt(stats::dur),
                p50s(&pair.transport).fmt(stats::dur),
                pair.own_p50().fmt(stats::dur),
                p50s(&pair.floor).fmt(stats::dur),
                "≥ 0.90 × limit, added p50 < 100 µs".into(),
                result,
            ]);
        }
    }
    Ok(format!(
        "## Workload 1: event throughput\n\n\
         Each connection sends one message, waits for the echo, sends the next. \
         Spawn limit: {many} (or 1) threads spawning the same program with the same pipes. \
         ws2http runs with --max-procs {many}. Latency is the client's round trip \
         (ws2http) or spawn-to-exit (limit); added p50 = ws2http p50 − spawn p50, of which the \
         WebSocket round trip is what a bare echo server on the same stack takes (same client, \
         same connections, no script); ws2http's own p50 = added − that. The verdict is on the \
         whole added p50. The stack floor is a bare server on the same stack that spawns the \
         program per message with ws2http's spawn primitive and nothing else (no environment, \
         hub, parsing, logging or limits).\n\n{}",
        table.render()
    ))
}
