//! Workload 4, connection churn: C clients, each repeatedly connecting,
//! sending one message, waiting for the echo and closing cleanly →
//! connections per second. ws2http vs websocketd, same echo program. (For
//! ws2http one connection is three events — open, message, close — hence
//! three processes; for websocketd it is one process.)

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
    let server = ctx.ws2http("churn", 1000, None)?;
    let wsd =
        if Websocketd::available() { Some(Websocketd::start(&ctx.fx.echo_c(), &ctx.dir, "churn")?) } else { None };
    let (mut ws_rates, mut wsd_rates) = (Vec::new(), Vec::new());
    for k in 0..z.runs {
        ctx.note(format!("churn: {clients} clients x {cycles} connections, run {}/{}", k + 1, z.runs));
        let order = if k % 2 == 0 { [true, false] } else { [false, true] };
        for ws_side in order {
            settle(server.proc.pid());
            if ws_side {
                ws_rates.push(async_std::task::block_on(churn(server.addr, "/echo", clients, cycles))?);
                // The last close events are still running: wait for them, so
                // they are not billed to the next measurement.
                settle(server.proc.pid());
            } else if let Some(w) = &wsd {
                settle(w.proc.pid());
                wsd_rates.push(async_std::task::block_on(churn(w.addr, "/", clients, cycles))?);
            }
        }
    }
    let mut table =
        Table::new(&["server", "script", "clients", "connections/s", "ws2http ÷ websocketd", "goal", "result"]);
    let ws = Spread::of(&ws_rates);
    if wsd.is_some() {
        let ratio = Spread::of(&ws_rates.iter().zip(&wsd_rates).map(|(a, b)| a / b).collect::<Vec<_>>());
        table.row(vec![
            "ws2http".into(),
            "C echo".into(),
            clients.to_string(),
            ws.fmt(stats::rate),
            ratio.fmt(stats::ratio),
            "more connections/s than websocketd".into(),
            verdict(ratio.median > 1.0).into(),
        ]);
        table.row(vec![
            "websocketd".into(),
            "C echo".into(),
            clients.to_string(),
            Spread::of(&wsd_rates).fmt(stats::rate),
            "1".into(),
            "".into(),
            "".into(),
        ]);
    } else {
        table.row(vec![
            "ws2http".into(),
            "C echo".into(),
            clients.to_string(),
            ws.fmt(stats::rate),
            "n/a".into(),
            "more connections/s than websocketd".into(),
            "skipped: websocketd is not installed".into(),
        ]);
    }
    drop(server);
    drop(wsd);
    Ok(format!(
        "## Workload 4: connection churn\n\n\
         Each client: connect, send one message, wait for the echo, close (close handshake), repeat. \
         ws2http runs three processes per connection (open, message, close events), websocketd one.\n\n{}",
        table.render()
    ))
}
