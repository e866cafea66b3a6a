//! Workload 2, idle connections: open N WebSocket connections to the echo
//! script and hold them; server memory per connection is
//! (VmRSS with N+1 connections − VmRSS with 1) ÷ N, from /proc. websocketd
//! holds the same connections to the same program: it runs one process per
//! connection, so its figure is the sum over websocketd and its children.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{self, Ws};
use crate::common::Ctx;
use crate::servers::Websocketd;
use crate::stats::{self, verdict, Spread, Table};
use crate::sys;

#[derive(Clone, Debug, Default)]
struct Sample {
    rss_per_conn: f64,
    pss_per_conn: f64,
    fds_per_conn: f64,
    rss_before: f64,
    rss_after: f64,
    hwm: f64,
    procs: f64,
    open_rate: f64,
}

/// Memory of `pid` and its live descendants: (RSS, PSS, processes).
fn footprint(pid: u32, with_pss: bool) -> (u64, u64, usize) {
    let t = sys::tree(pid);
    let rss = t.iter().map(|&p| sys::rss(p)).sum();
    let pss = if with_pss { t.iter().map(|&p| sys::pss(p)).sum() } else { 0 };
    (rss, pss, t.len())
}

/// Opens `n` connections after one warm-up connection; measures before and after.
fn measure(addr: SocketAddr, pid: u32, n: usize, whole_tree: bool) -> Result<(Sample, Vec<Ws>), String> {
    async_std::task::block_on(async {
        let mut warm = client::connect(addr, "/echo", 0).await?;
        client::round_trip(&mut warm, "warm up").await?;
        async_std::task::sleep(Duration::from_millis(300)).await;
        let (rss0, pss0, procs0) = if whole_tree { footprint(pid, true) } else { (sys::rss(pid), sys::pss(pid), 1) };
        let fds0 = sys::fds(pid);
        let t = Instant::now();
        let mut conns = Vec::with_capacity(n + 1);
        if whole_tree {
            // websocketd answers the handshake before its process runs; let
            // the processes keep up, or half-started ones pile up descriptors.
            while conns.len() < n {
                let batch = (n - conns.len()).min(100);
                conns.extend(client::connect_many(addr, |_| "/echo".into(), batch, 32).await?);
                let deadline = Instant::now() + Duration::from_secs(30);
                while sys::children(pid).len() < conns.len() + 1 && Instant::now() < deadline {
                    async_std::task::sleep(Duration::from_millis(20)).await;
                }
            }
        } else {
            conns = client::connect_many(addr, |_| "/echo".into(), n, 32).await?;
        }
        let open_rate = n as f64 / t.elapsed().as_secs_f64();
        // Let the open events' processes finish and the server settle.
        if !whole_tree {
            sys::quiesce(pid, Duration::from_secs(10));
        }
        async_std::task::sleep(Duration::from_secs(1)).await;
        let (rss1, pss1, procs1) = if whole_tree { footprint(pid, true) } else { (sys::rss(pid), sys::pss(pid), 1) };
        let fds1 = sys::fds(pid);
        conns.push(warm);
        let nf = n as f64;
        Ok((
            Sample {
                rss_per_conn: (rss1 as f64 - rss0 as f64) / nf,
                pss_per_conn: (pss1 as f64 - pss0 as f64) / nf,
                fds_per_conn: (fds1 as f64 - fds0 as f64) / nf,
                rss_before: rss0 as f64,
                rss_after: rss1 as f64,
                hwm: sys::hwm(pid) as f64,
                procs: (procs1 as f64 - procs0 as f64) / nf,
                open_rate,
            },
            conns,
        ))
    })
}

fn spread(v: &[Sample], f: impl Fn(&Sample) -> f64) -> Spread {
    Spread::of(&v.iter().map(f).collect::<Vec<_>>())
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let n = z.idle_conns;
    let mut ws = Vec::new();
    let mut wsd = Vec::new();
    let wsd_ok = Websocketd::available();
    for k in 0..z.runs {
        ctx.note(format!("idle: ws2http, {n} connections, run {}/{}", k + 1, z.runs));
        {
            let server = ctx.ws2http(&format!("idle-{k}"), n + 100, None)?;
            let (s, conns) = measure(server.addr, server.proc.pid(), n, false)?;
            ctx.note(format!(
                "idle: ws2http {:.1} KiB/conn, {:.2} fds/conn, opened {:.0} conn/s",
                s.rss_per_conn / 1024.0,
                s.fds_per_conn,
                s.open_rate
            ));
            ws.push(s);
            // Stop the server first: no close events to wait for.
            drop(server);
            drop(conns);
        }
        if wsd_ok && z.idle_wsd_conns > 0 {
            let m = z.idle_wsd_conns;
            ctx.note(format!("idle: websocketd, {m} connections, run {}/{}", k + 1, z.runs));
            let server = Websocketd::start(&ctx.fx.echo_c(), &ctx.dir, &format!("idle-{k}"))?;
            let (s, conns) = measure(server.addr, server.proc.pid(), m, true)?;
            ctx.note(format!(
                "idle: websocketd {:.1} KiB/conn RSS, {:.1} KiB/conn PSS, {:.2} processes/conn",
                s.rss_per_conn / 1024.0,
                s.pss_per_conn / 1024.0,
                s.procs
            ));
            if s.procs < 0.99 {
                return Err(format!(
                    "websocketd runs only {:.0} processes for {m} connections: it could not start them all \
                     (see websocketd-idle-{k}.log)",
                    s.procs * m as f64
                ));
            }
            wsd.push(s);
            drop(server);
            drop(conns);
        }
    }
    let mut table = Table::new(&[
        "server",
        "connections",
        "memory per connection",
        "fds per connection",
        "processes per connection",
        "RSS before → after",
        "websocketd ÷ ws2http",
        "goal",
        "result",
    ]);
    let ws_rss = spread(&ws, |s| s.rss_per_conn);
    table.row(vec![
        "ws2http (VmRSS)".into(),
        n.to_string(),
        ws_rss.fmt(stats::bytes),
        spread(&ws, |s| s.fds_per_conn).fmt(stats::plain),
        "0".into(),
        format!(
            "{} → {}",
            spread(&ws, |s| s.rss_before).fmt(stats::bytes),
            spread(&ws, |s| s.rss_after).fmt(stats::bytes)
        ),
        "1".into(),
        "≤ 4 KiB per connection (at 10,000)".into(),
        verdict(ws_rss.median <= 4.0 * 1024.0).into(),
    ]);
    let mut notes = format!(
        "ws2http peak RSS (VmHWM) {}; connections opened at {} conn/s (each runs the open event).\n",
        spread(&ws, |s| s.hwm).fmt(stats::bytes),
        spread(&ws, |s| s.open_rate).fmt(stats::rate)
    );
    if wsd.is_empty() {
        let why = match wsd_ok {
            true => "skipped: --idle-websocketd 0",
            false => "skipped: websocketd is not installed",
        };
        table.row(vec!["websocketd".into(), why.into()]);
    } else {
        let per_rss = spread(&wsd, |s| s.rss_per_conn);
        let per_pss = spread(&wsd, |s| s.pss_per_conn);
        let ratio =
            |f: &dyn Fn(&Sample) -> f64| Spread::of(&wsd.iter().zip(&ws).map(|(a, b)| f(a) / f(b)).collect::<Vec<_>>());
        for (label, per, r) in [
            ("websocketd + children (Σ VmRSS)", per_rss, ratio(&|s: &Sample| s.rss_per_conn)),
            ("websocketd + children (Σ PSS)", per_pss, {
                // ws2http is one process: its PSS per connection ≈ its RSS per connection.
                Spread::of(&wsd.iter().zip(&ws).map(|(a, b)| a.pss_per_conn / b.rss_per_conn).collect::<Vec<_>>())
            }),
        ] {
            table.row(vec![
                label.into(),
                z.idle_wsd_conns.to_string(),
                per.fmt(stats::bytes),
                spread(&wsd, |s| s.fds_per_conn).fmt(stats::plain),
                spread(&wsd, |s| s.procs).fmt(stats::plain),
                format!(
                    "{} → {}",
                    spread(&wsd, |s| s.rss_before).fmt(stats::bytes),
                    spread(&wsd, |s| s.rss_after).fmt(stats::bytes)
                ),
                r.fmt(stats::ratio),
                "report the ratio".into(),
                "—".into(),
            ]);
        }
        notes.push_str(&format!(
            "websocketd opened connections at {} conn/s. Its fds column counts websocketd's own descriptors; \
             every connection also has a process with its own three pipes.\n",
            spread(&wsd, |s| s.open_rate).fmt(stats::rate)
        ));
    }
    for n in &ctx.fd_notes {
        if n.contains("idle") {
            notes.push_str(&format!("Fewer connections than the issue asks: {n}.\n"));
        }
    }
    Ok(format!(
        "## Workload 2: idle connections\n\n\
         Memory per connection = (after − before) ÷ connections, from /proc/PID/status \
         (VmRSS) and /proc/PID/smaps_rollup (PSS: shared pages split among the processes \
         that map them). Before = one warm connection, after = all of them, idle for 1 s.\n\n{}\n{}",
        table.render(),
        notes
    ))
}
