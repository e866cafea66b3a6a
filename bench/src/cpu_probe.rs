//! `ws2http-bench __cpu-probe PID ADDR PATH CONNS MSGS`: the server's CPU per
//! event (docs/BENCHMARKS.md, "Issue 14"). Opens CONNS WebSocket connections to
//! `ws://ADDR{PATH}` and warms them up, then reads the server process PID's
//! CPU time (user and system, `/proc/PID/stat`, all its threads, children
//! excluded) and context switches (`/proc/PID/task/*/status`), sends MSGS
//! echo round trips per connection as workload 1 does, reads them again
//! before closing, and prints the differences per event. The wall-clock
//! workload measures rates; this measures what each event costs the server,
//! which a noisy machine disturbs far less.

use std::net::SocketAddr;

use crate::client;

/// (user ticks, system ticks, voluntary + involuntary context switches).
fn sample(pid: u32) -> Result<(u64, u64, u64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may hold spaces), 1-based from state = 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i - 3).and_then(|s| s.parse::<u64>().ok()).ok_or("bad stat field");
    let (utime, stime) = (num(14)?, num(15)?);
    let mut switches = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("status")) else { continue };
        for l in s.lines() {
            if let Some(v) =
                l.strip_prefix("voluntary_ctxt_switches:").or(l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok((utime, stime, switches))
}

async fn probe(pid: u32, addr: SocketAddr, path: &str, conns: usize, msgs: usize) -> Result<String, String> {
    let mut wss = client::connect_many(addr, |_| path.to_owned(), conns, 16).await?;
    for (c, ws) in wss.iter_mut().enumerate() {
        for i in 0..3 {
            client::round_trip(ws, &format!("warm {c} {i}")).await?;
        }
    }
    let before = sample(pid)?;
    let t0 = std::time::Instant::now();
    let tasks: Vec<_> = wss
        .into_iter()
        .enumerate()
        .map(|(c, mut ws)| {
            async_std::task::spawn(async move {
                for i in 0..msgs {
                    client::round_trip(&mut ws, &format!("bench message {c} {i}")).await?;
                }
                Ok::<_, String>(ws)
            })
        })
        .collect();
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await?);
    }
    let wall = t0.elapsed();
    let after = sample(pid)?;
    futures_util::future::join_all(done.into_iter().map(client::close)).await;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let events = (conns * msgs) as f64;
    let us = |ticks: u64| ticks as f64 / hz * 1e6 / events;
    let (user, sys) = (us(after.0 - before.0), us(after.1 - before.1));
    Ok(format!(
        "events {events} wall {:.2}s rate {:.0}/s cpu/event {:.0} us (user {user:.0} sys {sys:.0}) switches/event {:.2}",
        wall.as_secs_f64(),
        events / wall.as_secs_f64(),
        user + sys,
        (after.2 - before.2) as f64 / events
    ))
}

pub fn run() {
    let a: Vec<String> = std::env::args().skip(2).collect();
    let parsed = (|| {
        let pid = a.first()?.parse().ok()?;
        let addr = a.get(1)?.parse().ok()?;
        Some((pid, addr, a.get(2)?.clone(), a.get(3)?.parse().ok()?, a.get(4)?.parse().ok()?))
    })();
    let Some((pid, addr, path, conns, msgs)) = parsed else {
        eprintln!("usage: ws2http-bench __cpu-probe PID ADDR PATH CONNS MSGS");
        std::process::exit(2);
    };
    match async_std::task::block_on(probe(pid, addr, &path, conns, msgs)) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("cpu-probe: {e}");
            std::process::exit(1);
        }
    }
}
