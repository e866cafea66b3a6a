//! `profile`: where ws2http spends its time during workload 1 (C echo, many
//! connections). Two views:
//!
//! - `perf record -e cpu-clock -g` attached to the running server: sampled
//!   CPU time, kernel included (process spawning is mostly kernel work).
//!   Software clock sampling works where hardware counters do not (VMs).
//! - `valgrind --tool=callgrind`: exact instruction counts per function of
//!   the server's own user-space code (much slower, so fewer events).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::client;
use crate::common::Ctx;
use crate::servers::{which, Ws2http, Ws2httpOpts};
use crate::sys;

/// Drives `conns` connections with back-to-back echo round trips until
/// `dur` has passed or `max_events` were sent; returns the event count.
async fn drive(addr: std::net::SocketAddr, conns: usize, dur: Duration, max_events: usize) -> Result<usize, String> {
    let wss = client::connect_many(addr, |_| "/echo".into(), conns, 8).await?;
    let deadline = Instant::now() + dur;
    let per = max_events.div_ceil(conns);
    let tasks: Vec<_> = wss
        .into_iter()
        .enumerate()
        .map(|(c, mut ws)| {
            async_std::task::spawn(async move {
                let mut n = 0;
                while Instant::now() < deadline && n < per {
                    client::round_trip(&mut ws, &format!("profile {c} {n}")).await?;
                    n += 1;
                }
                client::close(ws).await;
                Ok::<usize, String>(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    Ok(total)
}

/// A callgrind_annotate line without the noise: toolchain and registry
/// path prefixes, the trailing `[object file]`.
fn shorten(line: &str) -> String {
    let mut l = line.to_owned();
    if let Some(i) = l.rfind(" [") {
        if l.ends_with(']') {
            l.truncate(i);
        }
    }
    while let Some(i) = l.find("/rustc/") {
        let end = l[i + 7..].find('/').map_or(l.len(), |j| i + 7 + j + 1);
        l.replace_range(i..end, "");
    }
    while let Some(i) = l.find("/root/.cargo/registry/src/").or_else(|| l.find(".cargo/registry/src/")) {
        let start = l[..i].rfind(' ').map_or(0, |j| j + 1);
        let after = l[i..].find("/src/").map(|j| i + j + 5).unwrap_or(i);
        let end = l[after..].find('/').map_or(l.len(), |j| after + j + 1);
        l.replace_range(start..end, "");
    }
    l.replace("./malloc/./malloc/", "glibc ").replace("./string/../sysdeps/x86_64/multiarch/", "glibc ")
}

/// Lines of a `perf report --stdio` that carry a percentage, at most `n`.
fn top_lines(report: &str, n: usize) -> String {
    report
        .lines()
        .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()) && l.contains('%'))
        .take(n)
        .collect::<Vec<_>>()
        .join("\n")
}

fn perf(ctx: &Ctx, conns: usize, secs: u64) -> Result<String, String> {
    let server = ctx.ws2http("perf", 1000, Some(conns))?;
    let pid = server.proc.pid();
    let data = ctx.dir.join("perf.data");
    // Warm up before attaching.
    async_std::task::block_on(drive(server.addr, conns, Duration::from_secs(1), 200))?;
    let mut rec = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "2999", "-g", "-p", &pid.to_string(), "-o"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("perf record: {e}"))?;
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let events = async_std::task::block_on(drive(server.addr, conns, Duration::from_secs(secs), usize::MAX))?;
    let took = t.elapsed();
    sys::kill(rec.id() as i32, libc::SIGINT);
    let _ = rec.wait();
    let report = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("perf")
            .arg("report")
            .arg("-i")
            .arg(&data)
            .args(["--stdio", "--no-children", "-g", "none", "--percent-limit", "0.3"])
            .args(args)
            .output()
            .map_err(|e| format!("perf report: {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let by_comm = report(&["--sort", "comm,dso"])?;
    let by_sym = report(&["--pid", &pid.to_string(), "--sort", "dso,sym"])?;
    drop(server);
    Ok(format!(
        "### perf: CPU time by process and library\n\n\
         `perf record -e cpu-clock -g -p <ws2http>` during {events} events ({:.0} events/s, {conns} connections, \
         C echo); children inherit the recording, so the scripts show up under their own names.\n\n\
         ```\n{}\n```\n\n\
         ### perf: hot spots inside the ws2http process (its threads, kernel included)\n\n\
         ```\n{}\n```\n",
        events as f64 / took.as_secs_f64(),
        top_lines(&by_comm, 25),
        top_lines(&by_sym, 40)
    ))
}

fn callgrind(ctx: &Ctx, conns: usize, events: usize) -> Result<String, String> {
    let out = ctx.dir.join("callgrind.out");
    let server = Ws2http::start(&Ws2httpOpts {
        bin: &ctx.ws2http_bin,
        cgi_bin: &ctx.fx.cgi_bin,
        log_dir: &ctx.dir,
        max_connections: 1000,
        max_procs: Some(conns),
        wrapper: vec!["valgrind".into(), "--tool=callgrind".into(), format!("--callgrind-out-file={}", out.display())],
        tag: "callgrind",
        env: &ctx.ws2http_env,
        args: &[],
    })?;
    let n = async_std::task::block_on(drive(server.addr, conns, Duration::from_secs(300), events))?;
    // A graceful stop makes callgrind write its profile.
    let pid = server.proc.pid();
    sys::kill(pid as i32, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && std::fs::metadata(&out).is_err() {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(server);
    let ann = Command::new("callgrind_annotate").arg(&out).output().map_err(|e| format!("callgrind_annotate: {e}"))?;
    let text = String::from_utf8_lossy(&ann.stdout);
    let total = text.lines().find(|l| l.contains("PROGRAM TOTALS")).unwrap_or("").trim().to_owned();
    let top: Vec<String> = text
        .lines()
        .skip_while(|l| !l.contains("file:function"))
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .take(30)
        .map(shorten)
        .collect();
    // Inclusive costs, without the executor and runtime frames every task
    // passes through: what each piece of ws2http's own work costs in total.
    let inc = Command::new("callgrind_annotate")
        .args(["--inclusive=yes"])
        .arg(&out)
        .output()
        .map_err(|e| format!("callgrind_annotate: {e}"))?;
    let inc = String::from_utf8_lossy(&inc.stdout);
    let plumbing = [
        "thread::local",
        "__rust_begin_short_backtrace",
        "start_thread",
        "thread_start",
        "call_once",
        "async_global_executor",
        "async_task::",
        "futures_lite::future::Or",
        "task_locals_wrapper",
        "core::future::future",
        "future/future.rs",
        "PROGRAM TOTALS",
        "alloc/src/alloc.rs:<core::pin::Pin",
        "boxed.rs:<core::pin::Pin",
        "async_executor",
        "driver.rs",
    ];
    let inclusive: Vec<String> = inc
        .lines()
        .skip_while(|l| !l.contains("file:function"))
        .skip(2)
        .filter(|l| !l.trim().is_empty() && !plumbing.iter().any(|p| l.contains(p)))
        .take(30)
        .map(shorten)
        .collect();
    Ok(format!(
        "### callgrind: instructions per function (self), ws2http process only\n\n\
         {n} message events over {conns} connections (plus their open and close events) under \
         `valgrind --tool=callgrind`; {total}.\n\n```\n{}\n```\n\n\
         ### callgrind: inclusive (function and everything it calls), runtime plumbing left out\n\n\
         ```\n{}\n```\n",
        top.join("\n"),
        inclusive.join("\n")
    ))
}

/// Heap per idle connection by allocation site: ws2http under massif holds
/// `n` idle connections; a detailed snapshot (taken through vgdb) is folded
/// to the first frame of a crate of interest on each allocation path.
fn massif(ctx: &Ctx, n: usize) -> Result<String, String> {
    let out = ctx.dir.join("massif.out");
    let snap = ctx.dir.join("massif-snapshot.txt");
    let server = Ws2http::start(&Ws2httpOpts {
        bin: &ctx.ws2http_bin,
        cgi_bin: &ctx.fx.cgi_bin,
        log_dir: &ctx.dir,
        max_connections: n + 100,
        max_procs: None,
        wrapper: vec!["valgrind".into(), "--tool=massif".into(), format!("--massif-out-file={}", out.display())],
        tag: "massif",
        env: &ctx.ws2http_env,
        args: &[],
    })?;
    let conns = async_std::task::block_on(client::connect_many(server.addr, |_| "/echo".into(), n, 8))?;
    std::thread::sleep(Duration::from_secs(2));
    let st = Command::new("vgdb")
        .arg(format!("--pid={}", server.proc.pid()))
        .arg("detailed_snapshot")
        .arg(&snap)
        .output()
        .map_err(|e| format!("vgdb: {e}"))?;
    if !st.status.success() {
        return Err(format!("vgdb detailed_snapshot failed: {}", String::from_utf8_lossy(&st.stderr)));
    }
    drop(server);
    drop(conns);
    let text = std::fs::read_to_string(&snap).map_err(|e| format!("{}: {e}", snap.display()))?;
    let heap: u64 = text.lines().find_map(|l| l.strip_prefix("mem_heap_B=")?.trim().parse().ok()).unwrap_or(0);
    let extra: u64 = text.lines().find_map(|l| l.strip_prefix("mem_heap_extra_B=")?.trim().parse().ok()).unwrap_or(0);
    const CRATES: [&str; 13] = [
        "ws2http::",
        "tungstenite::",
        "async_h1::",
        "async_channel::",
        "concurrent_queue::",
        "async_std::",
        "async_task::",
        "async_io::",
        "tide::",
        "http_types::",
        "async_process::",
        "bytes::",
        "futures_lite::",
    ];
    let site = |desc: &str| -> Option<String> {
        let at = CRATES.iter().filter_map(|c| desc.find(c)).min()?;
        let sym: String = desc[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || "_:<>".contains(*c)).collect();
        let loc = desc.rfind('(').map(|i| desc[i + 1..].trim_end_matches(')').to_owned()).unwrap_or_default();
        Some(format!("{sym}  ({loc})"))
    };
    // Lines: "<depth spaces>n<children>: <bytes> <desc>".
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let mut sites: std::collections::HashMap<String, u64> = Default::default();
    for line in text.lines() {
        let depth = line.len() - line.trim_start().len();
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix('n') else { continue };
        let Some((_, rest)) = rest.split_once(": ") else { continue };
        let Some((bytes, desc)) = rest.split_once(' ') else { continue };
        let Ok(bytes) = bytes.parse::<u64>() else { continue };
        while stack.last().is_some_and(|(d, _)| *d >= depth) {
            stack.pop();
        }
        let ancestor_matched = stack.iter().any(|(_, m)| *m);
        let here = if ancestor_matched { None } else { site(desc) };
        if let Some(k) = &here {
            *sites.entry(k.clone()).or_default() += bytes;
        }
        stack.push((depth, ancestor_matched || here.is_some()));
    }
    let mut v: Vec<(String, u64)> = sites.into_iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    let rows: Vec<String> = v
        .iter()
        .take(15)
        .map(|(k, b)| {
            format!("{:>8.0} B/conn  {:>5.1}%  {k}", *b as f64 / n as f64, *b as f64 * 100.0 / heap.max(1) as f64)
        })
        .collect();
    Ok(format!(
        "### massif: heap per idle connection, by allocation site\n\n\
         {n} idle connections under `valgrind --tool=massif`: heap {:.0} B per connection \
         (+ {:.0} B malloc overhead), start-up heap included.\n\n```\n{}\n```\n",
        heap as f64 / n as f64,
        extra as f64 / n as f64,
        rows.join("\n")
    ))
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let smoke = ctx.mode == crate::common::Mode::Smoke;
    let conns = ctx.sizes.tp_many_conns;
    let mut out = String::from("## Profile (workload 1: C echo, many connections)\n\n");
    let perf_ok = which("perf").is_some()
        && Command::new("perf").args(["stat", "-e", "cpu-clock", "true"]).output().is_ok_and(|o| o.status.success());
    if perf_ok {
        ctx.note("profile: perf record");
        out.push_str(&perf(ctx, conns, if smoke { 2 } else { 15 })?);
    } else {
        out.push_str("perf: not available here\n\n");
    }
    if which("valgrind").is_some() && which("callgrind_annotate").is_some() {
        ctx.note("profile: callgrind (slow)");
        out.push_str(&callgrind(ctx, conns.min(4), if smoke { 20 } else { 1000 })?);
        ctx.note("profile: massif (idle connections)");
        out.push('\n');
        out.push_str(&massif(ctx, if smoke { 20 } else { 1000 })?);
    } else {
        out.push_str("callgrind, massif: valgrind is not installed\n");
    }
    Ok(out)
}
