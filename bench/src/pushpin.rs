//! Workload 5, versus Pushpin: the same "event → script → reply" job as
//! workload 1 (C echo), through Pushpin in front of lighttpd running the
//! echo as a WebSocket-over-HTTP CGI origin (bench/scripts/wsoh.c), vs
//! ws2http alone.

use crate::common::{settle, Ctx};
use crate::servers::Pushpin;
use crate::stats::{self, verdict, Spread, Table};
use crate::throughput::{p50s, p99s, rates, ws_run, Run};

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let header = "## Workload 5: versus Pushpin\n\n";
    let missing = Pushpin::available();
    if !missing.is_empty() {
        return Ok(format!("{header}skipped: not installed: {}\n", missing.join(", ")));
    }
    let many = z.pp_many_conns;
    let server = ctx.ws2http("pushpin", 1000, Some(many))?;
    ctx.note("pushpin: starting lighttpd and pushpin");
    let pp = Pushpin::start(&ctx.dir, &ctx.fx.origin_root)?;
    // Pushpin's first requests are slow (route and zurl warm-up).
    async_std::task::block_on(ws_run(pp.addr, "/ws.cgi", 2, 5))?;
    let mut table =
        Table::new(&["path", "conns", "events/s", "p50 / p99", "ws2http ÷ Pushpin (events/s)", "goal", "result"]);
    for (conns, msgs) in [(1, z.pp_one_msgs), (many, z.pp_many_msgs)] {
        let (mut w, mut p): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
        for k in 0..z.runs {
            ctx.note(format!("pushpin: {conns} conn(s) x {msgs} msgs, run {}/{}", k + 1, z.runs));
            let order = if k % 2 == 0 { [true, false] } else { [false, true] };
            for ws_side in order {
                settle(server.proc.pid());
                if ws_side {
                    w.push(async_std::task::block_on(ws_run(server.addr, "/echo", conns, msgs))?);
                } else {
                    settle(pp.lighttpd.pid());
                    p.push(async_std::task::block_on(ws_run(pp.addr, "/ws.cgi", conns, msgs))?);
                }
            }
        }
        let ratio = Spread::of(&w.iter().zip(&p).map(|(a, b)| a.rate() / b.rate()).collect::<Vec<_>>());
        table.row(vec![
            "ws2http → echo".into(),
            conns.to_string(),
            rates(&w).fmt(stats::rate),
            format!("{} / {}", p50s(&w).fmt(stats::dur), p99s(&w).fmt(stats::dur)),
            ratio.fmt(stats::ratio),
            "win: ratio > 1".into(),
            verdict(ratio.median > 1.0).into(),
        ]);
        table.row(vec![
            "Pushpin → lighttpd → CGI echo".into(),
            conns.to_string(),
            rates(&p).fmt(stats::rate),
            format!("{} / {}", p50s(&p).fmt(stats::dur), p99s(&p).fmt(stats::dur)),
            "1".into(),
            "".into(),
            "".into(),
        ]);
    }
    drop(pp);
    drop(server);
    Ok(format!(
        "{header}One message at a time per connection, as in workload 1. Pushpin {} turns each \
         WebSocket event into a WebSocket-over-HTTP POST to lighttpd, which runs the CGI echo; \
         ws2http runs the echo itself. Default log levels on all servers. The issue sets no \
         number here; the goal is to win.\n\n{}",
        pushpin_version(),
        table.render()
    ))
}

fn pushpin_version() -> String {
    std::process::Command::new("pushpin")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().trim_start_matches("pushpin ").to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_default()
}
