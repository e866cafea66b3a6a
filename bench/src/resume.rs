//! The `resume` workload (issue 17): what resumable sessions cost and how
//! fast they come back. Not part of `all`: `ws2http-bench resume`.
//!
//! - **Resume latency**: one session connection to `/hello` (a C script
//!   whose open event says `hello`) is cut over and over (TCP reset, no close
//!   frame); once the server has noticed (`ws2http_sessions_detached`), B
//!   messages are sent to it through `POST /send/{id}` (B = 0 or the
//!   workload's buffer size, alternating), then it resumes with its token
//!   and count. Figures: from the new TCP connect to the `resumed` message,
//!   and to the last replayed message; for reference, a fresh session
//!   connect to its open script's `hello`.
//! - **Mass resume** (the "load balancer reloaded" case): N session
//!   connections cut at once, then resumed all together: time until the
//!   last is resumed, and server CPU (ws2http and its scripts) from the cut
//!   until it is idle again. Side by side in the same run, taking turns:
//!   what happens today, N plain connections cut at once (their close events
//!   run) and N fresh connects running the same open script.
//! - **Idle cost**: N idle session connections vs N idle plain ones (fresh
//!   servers taking turns), server VmRSS delta ÷ N (goal: ≤ 2 × plain);
//!   then all cut: VmRSS while detached, and after the grace has expired
//!   and their close events have run; then a second wave the same way
//!   (goal: it grows VmRSS by ≤ 10% of the first: the first was freed).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{self, Ws};
use crate::common::{settle, Ctx};
use crate::servers::Ws2http;
use crate::session::{self, Session};
use crate::stats::{self, verdict, Lat, Spread, Table};
use crate::sys;

const HEADER: &str = "## Issue 17: resumable sessions\n\n";
const PATH: &str = "/hello";
/// `--resume-grace` of the idle part: short, so the expiry is seen soon.
const IDLE_GRACE: &str = "5";
/// Longest wait for the server to notice cuts, or for sessions to expire.
const NOTICE: Duration = Duration::from_secs(60);

/// Flags of every server here: many handshakes at once from few addresses.
fn args(grace: &str) -> Vec<String> {
    ["--resume-grace", grace, "--max-http-connections-per-ip", "100000"].iter().map(|s| s.to_string()).collect()
}

/// `GET path` on the control API; the body.
async fn api_get(api: SocketAddr, path: &str) -> Result<String, String> {
    use futures_util::{AsyncReadExt, AsyncWriteExt};
    let mut conn = client::tcp(api, 0).await.map_err(|e| format!("control API: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.map_err(|e| format!("GET {path}: {e}"))?;
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await.map_err(|e| format!("GET {path}: {e}"))?;
    let text = String::from_utf8_lossy(&resp).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!("GET {path}: {}", text.lines().next().unwrap_or("no answer"))),
    }
}

/// The value of an unlabelled metric in `/metrics`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls metric `name` until `ok` holds for it; its last value.
async fn wait_metric(api: SocketAddr, name: &str, ok: impl Fn(f64) -> bool) -> Result<f64, String> {
    let deadline = Instant::now() + NOTICE;
    loop {
        let body = api_get(api, "/metrics").await?;
        let v = metric(&body, name).ok_or_else(|| format!("/metrics has no {name}: a build without sessions?"))?;
        if ok(v) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("{name} is still {v} after {NOTICE:?}"));
        }
        async_std::task::sleep(Duration::from_millis(5)).await;
    }
}

async fn send(api: SocketAddr, id: &str, body: &str) -> Result<(), String> {
    let conn = client::tcp(api, 0).await.map_err(|e| format!("control API: {e}"))?;
    let (status, reply) = client::http_post(conn, api, &format!("/send/{id}"), body).await?;
    if status != 200 {
        return Err(format!("POST /send/{id}: {status} {reply}"));
    }
    Ok(())
}

/// CPU seconds of `pid` and of its children it has reaped (its scripts).
fn cpu_with_scripts(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rfind(')').map(|i| &s[i + 1..]).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14 to 17 (11 to 14 after the name).
    let ticks: u64 = (11..=14).filter_map(|i| f.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// A new session to PATH whose open script has said hello.
async fn open_hello(addr: SocketAddr, i: usize) -> Result<(Ws, Session), String> {
    let (mut ws, mut s) = session::open(addr, PATH, i).await?;
    expect(&session::recv(&mut ws, &mut s).await?, "hello")?;
    Ok((ws, s))
}

fn expect(got: &str, want: &str) -> Result<(), String> {
    match got.trim_end() == want {
        true => Ok(()),
        false => Err(format!("expected {want:?}, got {got:?}")),
    }
}

/// One run of part (a): per sample, the time to `resumed` and to the last
/// replayed message (alternately with nothing and with `buffered` waiting),
/// and a fresh connect's time to hello.
#[derive(Default)]
struct LatRun {
    resumed_empty: Vec<Duration>,
    resumed_full: Vec<Duration>,
    replayed_full: Vec<Duration>,
    fresh: Vec<Duration>,
}

async fn latency_run(server: &Ws2http, samples: usize, buffered: usize) -> Result<LatRun, String> {
    let mut out = LatRun::default();
    let (mut ws, mut s) = open_hello(server.addr, 0).await?;
    for i in 0..samples * 2 {
        let k = if i % 2 == 0 { 0 } else { buffered };
        session::cut(ws);
        wait_metric(server.api, "ws2http_sessions_detached", |v| v >= 1.0).await?;
        for j in 0..k {
            send(server.api, &s.id, &format!("m{i}-{j}")).await?;
        }
        let (mut w, hello, t0) = session::resume(server.addr, &mut s, i + 1).await?;
        let to_resumed = t0.elapsed();
        // The client sent nothing: the server has read none of its messages;
        // `replayed` counts the window and the messages queued while detached:
        // all k, which come next, in order.
        if hello.received != 0 || hello.replayed != k as u64 {
            return Err(format!("resume {i}: {hello:?}, with {k} messages buffered and none sent"));
        }
        for j in 0..k {
            expect(&session::recv(&mut w, &mut s).await?, &format!("m{i}-{j}"))?;
        }
        if k == 0 {
            out.resumed_empty.push(to_resumed);
        } else {
            out.resumed_full.push(to_resumed);
            out.replayed_full.push(t0.elapsed());
        }
        ws = w;
    }
    client::close(ws).await;
    for i in 0..samples {
        let t0 = Instant::now();
        let (ws, _) = open_hello(server.addr, i).await?;
        out.fresh.push(t0.elapsed());
        client::close(ws).await;
    }
    Ok(out)
}

/// Part (a): K runs on one server (default grace).
fn latency_table(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let (samples, buffered) = (z.resume_samples, z.resume_buffered);
    let server = ctx.ws2http_args("resume-latency", 1000, None, &args("30"))?;
    let mut runs = Vec::new();
    for k in 0..z.runs {
        ctx.note(format!(
            "resume: latency, {samples} + {samples} resumes and {samples} connects, run {}/{}",
            k + 1,
            z.runs
        ));
        runs.push(async_std::task::block_on(latency_run(&server, samples, buffered))?);
        settle(server.proc.pid());
    }
    drop(server);
    let mut t = Table::new(&["what", "samples per run", "p50", "p99"]);
    type Samples = fn(&LatRun) -> &Vec<Duration>;
    let rows: [(&str, Samples); 4] = [
        ("resume, nothing buffered: TCP connect → `resumed`", |r| &r.resumed_empty),
        ("resume, B buffered: TCP connect → `resumed`", |r| &r.resumed_full),
        ("resume, B buffered: TCP connect → last replayed message", |r| &r.replayed_full),
        ("fresh session connect: TCP connect → open script's message", |r| &r.fresh),
    ];
    for (name, f) in rows {
        let lats: Vec<Lat> = runs.iter().map(|r| Lat::of(f(r))).collect();
        t.row(vec![
            name.replace('B', &buffered.to_string()),
            samples.to_string(),
            Spread::of(&lats.iter().map(|l| l.p50).collect::<Vec<_>>()).fmt(stats::dur),
            Spread::of(&lats.iter().map(|l| l.p99).collect::<Vec<_>>()).fmt(stats::dur),
        ]);
    }
    Ok(format!(
        "### Resume latency\n\n\
         One session connection to `{PATH}` (a C script; its open event says `hello`), cut (TCP reset, no close \
         frame) and resumed over and over; before every other resume, {buffered} messages are sent to it with \
         `POST /send/{{id}}` once the server has noticed the cut (`ws2http_sessions_detached`). Times from the \
         new TCP connect. Cells: median (min–max) over the runs of each run's percentile.\n\n{}",
        t.render()
    ))
}

/// Opens `n` connections to PATH (sessions or plain), each past its hello.
async fn open_many(addr: SocketAddr, n: usize, sessions: bool) -> Result<Vec<(Ws, Option<Session>)>, String> {
    use futures_util::StreamExt;
    let futs = (0..n).map(|i| async move {
        if sessions {
            let (ws, s) = open_hello(addr, i).await?;
            return Ok((ws, Some(s)));
        }
        let mut ws = client::connect(addr, PATH, i).await?;
        expect(&client::timeout(client::STEP_TIMEOUT, "hello", client::recv_text(&mut ws)).await?, "hello")?;
        Ok::<_, String>((ws, None))
    });
    let all: Vec<Result<_, String>> = futures_util::stream::iter(futs).buffered(32).collect().await;
    all.into_iter().collect()
}

/// Reconnects every one of `conns` at once (resume, or a fresh plain
/// connect); returns the new sockets and the time until the last is back.
async fn reconnect_all(addr: SocketAddr, conns: Vec<Option<Session>>) -> Result<(Vec<Ws>, Duration), String> {
    let t0 = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            async_std::task::spawn(async move {
                match s {
                    Some(mut s) => Ok(session::resume(addr, &mut s, i).await?.0),
                    None => {
                        let mut ws = client::connect(addr, PATH, i).await?;
                        expect(&client::recv_text(&mut ws).await?, "hello")?;
                        Ok::<_, String>(ws)
                    }
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await?);
    }
    Ok((out, t0.elapsed()))
}

/// One side of part (b): (seconds until all are back, server CPU seconds).
async fn mass_once(server: &Ws2http, n: usize, sessions: bool) -> Result<(f64, f64), String> {
    let pid = server.proc.pid();
    let conns = open_many(server.addr, n, sessions).await?;
    settle(pid);
    let c0 = cpu_with_scripts(pid);
    let mut kept = Vec::with_capacity(n);
    for (ws, s) in conns {
        session::cut(ws);
        kept.push(s);
    }
    // Reconnect once the server has noticed every cut (plain: removed them).
    match sessions {
        true => wait_metric(server.api, "ws2http_sessions_detached", |v| v >= n as f64).await?,
        false => wait_metric(server.api, "ws2http_connections", |v| v == 0.0).await?,
    };
    let (back, took) = reconnect_all(server.addr, kept).await?;
    settle(pid);
    let spent = cpu_with_scripts(pid) - c0;
    for ws in back {
        client::close(ws).await;
    }
    wait_metric(server.api, "ws2http_connections", |v| v == 0.0).await?;
    settle(pid);
    Ok((took.as_secs_f64(), spent))
}

/// Part (b): resume and fresh side by side, taking turns, same server.
fn mass_table(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let n = z.resume_mass;
    let server = ctx.ws2http_args("resume-mass", 2 * n + 100, None, &args("30"))?;
    let mut sides: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for k in 0..z.runs {
        for i in 0..2 {
            let side = (i + k) % 2;
            let what = ["resume", "fresh"][side];
            ctx.note(format!("resume: mass, {n} connections cut, {what}, run {}/{}", k + 1, z.runs));
            let (took, cpu) = async_std::task::block_on(mass_once(&server, n, side == 0))?;
            sides[side].0.push(took);
            sides[side].1.push(cpu);
        }
    }
    drop(server);
    let mut t = Table::new(&[
        "after the cut",
        "connections",
        "time until all are back",
        "server CPU",
        "CPU per connection",
        "÷ fresh (CPU)",
    ]);
    let names =
        ["all resume their sessions (no script runs)", "today: close events, then fresh connects (open scripts)"];
    for (side, name) in names.iter().enumerate() {
        let (took, cpu) = &sides[side];
        let ratio = Spread::of(&cpu.iter().zip(&sides[1].1).map(|(a, b)| a / b).collect::<Vec<_>>());
        t.row(vec![
            name.to_string(),
            n.to_string(),
            Spread::of(took).fmt(stats::dur),
            Spread::of(cpu).fmt(|v| format!("{v:.2} s")),
            Spread::of(&cpu.iter().map(|c| c / n as f64).collect::<Vec<_>>()).fmt(stats::dur),
            ratio.fmt(stats::ratio),
        ]);
    }
    Ok(format!(
        "### Mass resume (\"the load balancer reloaded\")\n\n\
         {n} connections to `{PATH}` cut at once (TCP reset); once the server has noticed them all, all {n} \
         reconnect at once (one task each). Time: from the first reconnect until the last is back (`resumed`, or \
         the open script's `hello`). Server CPU: /proc utime + stime of ws2http and of its reaped scripts \
         (cutime + cstime), from the cut until the server is idle again, so the fresh side includes the close \
         events of the cut connections. Same server, the sides taking turns.\n\n{}",
        t.render()
    ))
}

/// One idle measurement, in bytes: per connection, baseline, with n, detached, after expiry, after a second wave.
#[derive(Clone, Copy, Default)]
struct Idle {
    per: f64,
    before: f64,
    held: f64,
    detached: f64,
    after: f64,
    /// After a second wave of n (opened, cut, expired or closed).
    second: f64,
}

/// Cuts every one of `conns` and waits until the server let them go:
/// sessions detached (VmRSS then returned), expired and closed; plain
/// connections closed. Returns VmRSS while detached (NaN for plain).
async fn cut_and_expire(server: &Ws2http, conns: Vec<(Ws, Option<Session>)>, sessions: bool) -> Result<f64, String> {
    let (pid, n) = (server.proc.pid(), conns.len());
    conns.into_iter().for_each(|(ws, _)| session::cut(ws));
    let mut detached = f64::NAN;
    if sessions {
        wait_metric(server.api, "ws2http_sessions_detached", |v| v >= n as f64).await?;
        detached = sys::rss(pid) as f64;
        wait_metric(server.api, "ws2http_sessions_detached", |v| v == 0.0).await?;
    }
    wait_metric(server.api, "ws2http_connections", |v| v <= 1.0).await?;
    sys::quiesce(pid, Duration::from_secs(30));
    async_std::task::sleep(Duration::from_secs(1)).await;
    Ok(detached)
}

async fn idle_once(server: &Ws2http, n: usize, sessions: bool) -> Result<Idle, String> {
    let pid = server.proc.pid();
    let warm = open_many(server.addr, 1, sessions).await?;
    sys::quiesce(pid, Duration::from_secs(10));
    async_std::task::sleep(Duration::from_millis(300)).await;
    let before = sys::rss(pid) as f64;
    let conns = open_many(server.addr, n, sessions).await?;
    sys::quiesce(pid, Duration::from_secs(10));
    async_std::task::sleep(Duration::from_secs(1)).await;
    let held = sys::rss(pid) as f64;
    let detached = cut_and_expire(server, conns, sessions).await?;
    let after = sys::rss(pid) as f64;
    // glibc keeps freed memory in the process: a second wave shows whether
    // the first's was freed (reused: no growth) or kept (it grows again).
    let again = open_many(server.addr, n, sessions).await?;
    cut_and_expire(server, again, sessions).await?;
    let second = sys::rss(pid) as f64;
    drop(warm);
    Ok(Idle { per: (held - before) / n as f64, before, held, detached, after, second })
}

/// Part (c): idle session vs plain connections, fresh servers taking turns.
fn idle_table(ctx: &Ctx) -> Result<String, String> {
    let n = ctx.sizes.resume_idle;
    let mut sides: [Vec<Idle>; 2] = Default::default();
    for k in 0..ctx.sizes.runs {
        for i in 0..2 {
            let side = (i + k) % 2;
            let what = ["session", "plain"][side];
            ctx.note(format!("resume: idle, {n} {what} connections, run {}/{}", k + 1, ctx.sizes.runs));
            let server = ctx.ws2http_args(&format!("resume-idle-{what}-{k}"), n + 100, None, &args(IDLE_GRACE))?;
            sides[side].push(async_std::task::block_on(idle_once(&server, n, side == 0))?);
        }
    }
    let col = |side: usize, f: fn(&Idle) -> f64| Spread::of(&sides[side].iter().map(f).collect::<Vec<_>>());
    let plain = col(1, |s| s.per).median;
    let mut t = Table::new(&[
        "connections",
        "RSS per idle connection",
        "goal",
        "result",
        "RSS: baseline → with them → all cut (detached) → after expiry → after a second wave",
        "second wave − after the first",
        "goal",
        "result",
    ]);
    for (side, name) in ["session (`ws2http.session.v1`)", "plain"].iter().enumerate() {
        let per = col(side, |s| s.per);
        let grew = col(side, |s| s.second - s.after);
        let (goal, result) = match side {
            0 => {
                (format!("≤ 2 × plain = {}", stats::bytes(2.0 * plain)), verdict(per.median <= 2.0 * plain).to_owned())
            }
            _ => (String::new(), String::new()),
        };
        let path = [
            col(side, |s| s.before),
            col(side, |s| s.held),
            col(side, |s| s.detached),
            col(side, |s| s.after),
            col(side, |s| s.second),
        ];
        // Freed, not kept: a second wave grows RSS by at most 10% of what the first added.
        let back = grew.median <= 0.1 * per.median * n as f64;
        t.row(vec![
            format!("{n} {name}"),
            per.fmt(stats::bytes),
            goal,
            result,
            path.iter().map(|p| p.fmt(stats::bytes)).collect::<Vec<_>>().join(" → "),
            grew.fmt(stats::bytes),
            "≤ 10% of the first wave's".into(),
            verdict(back).into(),
        ]);
    }
    Ok(format!(
        "### Idle cost\n\n\
         {n} idle connections to `{PATH}`, server VmRSS delta ÷ {n} after 1 s idle (baseline: one warm connection \
         of the same kind), on fresh servers taking turns (`--resume-grace {IDLE_GRACE}`). Then all are cut \
         (TCP reset): sessions detach (VmRSS read once all have), expire after the grace and run their close \
         events; plain connections run their close events at once (VmRSS once the server has no connection left \
         but the warm one and no script running, plus 1 s). glibc keeps freed memory in the process, so VmRSS \
         does not drop back: a second wave of {n}, opened, cut and let go the same way, shows whether the first \
         wave's memory was freed (reused: no growth) or kept.\n\n{}",
        t.render()
    ))
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let a = latency_table(ctx)?;
    let b = mass_table(ctx)?;
    let c = idle_table(ctx)?;
    Ok(format!("{HEADER}{a}\n{b}\n{c}"))
}
