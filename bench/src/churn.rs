//! Workload 4, connection churn: C clients, each repeatedly connecting,
//! sending one message, waiting for the echo and closing cleanly →
//! connections per second. ws2http vs websocketd, same echo program.
//! ws2http is measured twice: by default one connection is three events
//! (open, message, close), hence three processes; with `--events message`
//! (a script that needs no open or close event) it is one process, as for
//! websocketd, which runs the program once per connection.

use std::net::SocketAddr;
use std::time::Instant;

use crate::client;
use crate::common::{settle, Ctx};
use crate::servers::Websocketd;
use crate::stats::{self, verdict, Spread, Table};

async fn churn(addr: SocketAddr, path: &str, clients: usize, cycles: usize) -> Result<f64, String> {
    // One warm-up cycle per client, untimed.
    for c in 0..clients {
        let mut ws = client::connect(addr, path, c).await?;
        client::round_trip(&mut ws, "churn warm up").await?;
        client::close(ws).await;
    }
    timed(addr, path, clients, cycles).await
}

/// Connections per second: `clients` loops of connect, one echo, close
/// (workload 4, and workload 8's churn).
pub async fn timed(addr: SocketAddr, path: &str, clients: usize, cycles: usize) -> Result<f64, String> {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let path = path.to_owned();
            async_std::task::spawn(async move {
                for i in 0..cycles {
                    let mut ws = client::connect(addr, &path, c + i * clients).await?;
                    client::round_trip(&mut ws, &format!("churn {c} {i}")).await?;
                    client::close(ws).await;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    Ok((clients * cycles) as f64 / t0.elapsed().as_secs_f64())
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let (clients, cycles) = (z.churn_clients, z.churn_cycles);
    let all = ctx.ws2http("churn", 1000, None)?;
    let message_only = ctx.ws2http_args("churn-message", 1000, None, &["--events".into(), "message".into()])?;
    let wsd =
        if Websocketd::available() { Some(Websocketd::start(&ctx.fx.echo_c(), &ctx.dir, "churn")?) } else { None };
    // Rates per side: ws2http (3 events), ws2http (message only), websocketd.
    let mut rates: [Vec<f64>; 3] = Default::default();
    for k in 0..z.runs {
        ctx.note(format!("churn: {clients} clients x {cycles} connections, run {}/{}", k + 1, z.runs));
        // Rotate which side goes first.
        for i in 0..3 {
            let side = (i + k) % 3;
            let (addr, path, pid) = match (side, &wsd) {
                (0, _) => (all.addr, "/echo", all.proc.pid()),
                (1, _) => (message_only.addr, "/echo", message_only.proc.pid()),
                (_, Some(w)) => (w.addr, "/", w.proc.pid()),
                (_, None) => continue,
            };
            settle(pid);
            rates[side].push(async_std::task::block_on(churn(addr, path, clients, cycles))?);
            // ws2http's last close events may still be running: wait for
            // them, so they are not billed to the next measurement.
            settle(pid);
        }
    }
    let mut table = Table::new(&[
        "server",
        "script",
        "processes per connection",
        "clients",
        "connections/s",
        "÷ websocketd",
        "goal",
        "result",
    ]);
    let sides = [("ws2http", "3 (open, message, close)"), ("ws2http --events message", "1 (message)")];
    for (side, (name, procs)) in sides.iter().enumerate() {
        let rate = Spread::of(&rates[side]).fmt(stats::rate);
        let (ratio, result) = if wsd.is_some() {
            let r = Spread::of(&rates[side].iter().zip(&rates[2]).map(|(a, b)| a / b).collect::<Vec<_>>());
            (r.fmt(stats::ratio), verdict(r.median > 1.0).to_string())
        } else {
            ("n/a".into(), "skipped: websocketd is not installed".into())
        };
        table.row(vec![
            (*name).into(),
            "C echo".into(),
            (*procs).into(),
            clients.to_string(),
            rate,
            ratio,
            "more connections/s than websocketd".into(),
            result,
        ]);
    }
    if wsd.is_some() {
        table.row(vec![
            "websocketd".into(),
            "C echo".into(),
            "1 (per connection)".into(),
            clients.to_string(),
            Spread::of(&rates[2]).fmt(stats::rate),
            "1".into(),
            "".into(),
            "".into(),
        ]);
    }
    drop((all, message_only, wsd));
    Ok(format!(
        "## Workload 4: connection churn\n\n\
         Each client: connect, send one message, wait for the echo, close (close handshake), repeat. \
         ws2http by default runs three processes per connection (open, message, close events); with \
         `--events message` one, like websocketd.\n\n{}",
        table.render()
    ))
}
