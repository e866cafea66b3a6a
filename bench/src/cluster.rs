//! Workload 7, cluster mode: two ws2http instances tied together by Redis
//! (`--redis`), the room's members split between them, every post sent to
//! the first instance's control API. Figures: the time until the last
//! member on either instance has the message (as workload 3), and the rate
//! of a sustained stream of room posts delivered to every member. Baseline:
//! the same members on one instance without `--redis`, same clients.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client;
use crate::common::{missing_tools, Ctx};
use crate::fanout::{start_receiver, wait_round, Recorder};
use crate::servers::{Redis, Ws2http};
use crate::stats::{self, percentile, Spread, Table};

const ROOM: &str = "clroom";
/// Concurrent posters in the sustained stream.
const POSTERS: usize = 4;
/// Unmeasured rounds first (they also prove every member is reachable).
const WARMUP: usize = 3;

/// One side's results: round times per run, stream messages/s per run.
struct Side {
    rounds: Vec<Vec<f64>>,
    stream: Vec<f64>,
}

async fn post(server: &Ws2http, i: usize, r: usize) -> Result<(), String> {
    let conn = client::tcp(server.api, i).await.map_err(|e| format!("control API: {e}"))?;
    let (status, reply) = client::http_post(conn, server.api, &format!("/rooms/{ROOM}"), &format!("f {r}")).await?;
    if status != 200 {
        return Err(format!("POST /rooms/{ROOM}: {status} {reply}"));
    }
    Ok(())
}

fn phase(ctx: &Ctx, servers: &[Ws2http], name: &str) -> Result<Side, String> {
    let z = &ctx.sizes;
    let members = z.cl_members;
    let total = WARMUP + z.runs * (z.cl_rounds + z.cl_stream);
    let rec = Arc::new(Recorder {
        t0: Instant::now(),
        rounds: (0..total).map(|_| (AtomicUsize::new(0), AtomicU64::new(0))).collect(),
    });
    ctx.note(format!("cluster: opening {members} connections to {name}"));
    let mut conns = Vec::new();
    for (s, server) in servers.iter().enumerate() {
        let n = members / servers.len() + usize::from(s < members % servers.len());
        let path = format!("/join?{ROOM}");
        conns.extend(async_std::task::block_on(client::connect_many(server.addr, |_| path.clone(), n, 32))?);
    }
    let receiver = start_receiver(conns, &rec)?;
    for s in servers {
        crate::sys::quiesce(s.proc.pid(), Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let first = &servers[0];
    let mut r = 0;
    for _ in 0..WARMUP {
        let t = rec.now();
        async_std::task::block_on(async {
            post(first, 0, r).await?;
            wait_round(&rec, r, members, t).await
        })?;
        r += 1;
    }
    let mut side = Side { rounds: Vec::new(), stream: Vec::new() };
    for k in 0..z.runs {
        ctx.note(format!(
            "cluster: {name}, {} rounds + a stream of {}, run {}/{}",
            z.cl_rounds,
            z.cl_stream,
            k + 1,
            z.runs
        ));
        let mut times = Vec::new();
        for _ in 0..z.cl_rounds {
            let t = rec.now();
            times.push(async_std::task::block_on(async {
                post(first, 0, r).await?;
                wait_round(&rec, r, members, t).await
            })?);
            r += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        side.rounds.push(times);
        // The stream: POSTERS loops posting back to back; done when every
        // member has every message.
        let (start, n) = (r, z.cl_stream);
        let t = rec.now();
        let last = async_std::task::block_on(async {
            let loops = (0..POSTERS).map(|p| async move {
                for m in (p..n).step_by(POSTERS) {
                    post(first, p, start + m).await?;
                }
                Ok::<_, String>(())
            });
            for res in futures_util::future::join_all(loops).await {
                res?;
            }
            let mut last = 0.0f64;
            for m in 0..n {
                last = last.max(wait_round(&rec, start + m, members, t).await?);
            }
            Ok::<_, String>(last)
        })?;
        r += n;
        side.stream.push(n as f64 / last);
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(receiver);
    Ok(side)
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let header = "## Workload 7: cluster (two instances + Redis) vs one instance\n\n";
    if !Redis::available() {
        return missing_tools(header, &["redis-server"]);
    }
    let members = z.cl_members;
    // One side at a time: the same clients, the same receiver thread.
    let single = {
        let s = ctx.ws2http("cluster-single", members + 100, None)?;
        phase(ctx, std::slice::from_ref(&s), "one instance")?
    };
    let redis = Redis::start(&ctx.dir)?;
    let args = vec!["--redis".to_owned(), redis.url.clone()];
    let servers = vec![
        ctx.ws2http_args("cluster-a", members + 100, None, &args)?,
        ctx.ws2http_args("cluster-b", members + 100, None, &args)?,
    ];
    // Let both instances announce themselves before the clients arrive.
    std::thread::sleep(Duration::from_millis(500));
    let cluster = phase(ctx, &servers, "two instances with Redis")?;
    drop(servers);
    drop(redis);

    let pct =
        |s: &Side, p: f64| Spread::of(&s.rounds.iter().map(|r| percentile(&mut r.clone(), p)).collect::<Vec<_>>());
    let lat_ratio = Spread::of(
        &cluster
            .rounds
            .iter()
            .zip(&single.rounds)
            .map(|(c, s)| percentile(&mut c.clone(), 50.0) / percentile(&mut s.clone(), 50.0))
            .collect::<Vec<_>>(),
    );
    let rate_ratio = Spread::of(&cluster.stream.iter().zip(&single.stream).map(|(c, s)| c / s).collect::<Vec<_>>());
    let mut table = Table::new(&[
        "setup",
        "members",
        "last delivery p50 / p99",
        "÷ one instance (p50)",
        "stream messages/s (to every member)",
        "÷ one instance (messages/s)",
        "goal",
        "result",
    ]);
    let half = members / 2;
    for (name, side, lr, rr) in [
        (format!("one instance, {members} members"), &single, "1".to_owned(), "1".to_owned()),
        (
            format!("two instances + Redis, {} + {half} members, posts to the first", members - half),
            &cluster,
            lat_ratio.fmt(stats::ratio),
            rate_ratio.fmt(stats::ratio),
        ),
    ] {
        table.row(vec![
            name,
            members.to_string(),
            format!("{} / {}", pct(side, 50.0).fmt(stats::dur), pct(side, 99.0).fmt(stats::dur)),
            lr,
            Spread::of(&side.stream).fmt(stats::rate),
            rr,
            "none (report)".into(),
            "—".into(),
        ]);
    }
    Ok(format!(
        "{header}Members join room `{ROOM}` on open (`join` fixture); every `POST /rooms/{ROOM}` goes to the \
         first instance's control API. Latency: time from sending the POST until the last member, on \
         either instance, has the message (one epoll thread reads every client socket, as in workload 3); \
         p50/p99 over {} rounds per run. Stream: {} posts from {POSTERS} concurrent posters, back to back; \
         messages/s = posts ÷ time until every member has every post. Redis: {}. The issue sets no number \
         here: the figures are the cost of crossing instances.\n\n{}",
        z.cl_rounds,
        z.cl_stream,
        redis_version(),
        table.render()
    ))
}

fn redis_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
