//! Workload 6, PHP through FastCGI: the same N connections x M messages as
//! workload 1, to a PHP echo (bench/scripts/echo.php), three ways: ws2http
//! spawning `php-cgi` per event (`--handler php=php-cgi`), ws2http sending
//! each event to a php-fpm pool (`--fastcgi`), and the limit: the bench
//! itself calling the same php-fpm pool directly in a loop (one kept-alive
//! FastCGI connection per loop, the same parallelism, the same parameters
//! and stdin as ws2http sends).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fastcgi_client::{Client, Params, Request};

use crate::common::{missing_tools, settle, Ctx};
use crate::servers::{which, PhpFpm};
use crate::stats::{self, verdict, Spread, Table};
use crate::throughput::{p50s, p99s, rates, ws_run, Run};

const WARMUP: usize = 3;

fn payload(conn: usize, i: usize) -> String {
    format!("bench message {conn} {i}")
}

/// The FastCGI parameters ws2http sends for a message event to
/// `/fpm/echo.php`: `params.php` prints the ones it received (through
/// ws2http and the same pool), with its own name changed to echo.php.
async fn captured_params(ws2http: SocketAddr) -> Result<HashMap<String, String>, String> {
    let mut ws = crate::client::connect(ws2http, "/fpm/params.php", 0).await?;
    ws.send(async_tungstenite::tungstenite::Message::text("x")).await.map_err(|e| format!("send: {e}"))?;
    let line =
        crate::client::timeout(crate::client::STEP_TIMEOUT, "params.php", crate::client::recv_text(&mut ws)).await?;
    crate::client::close(ws).await;
    let params: HashMap<String, String> = line
        .trim_end()
        .split('\x1f')
        .filter_map(|kv| kv.split_once('\x1e'))
        .map(|(k, v)| (k.to_owned(), v.replace("params.php", "echo.php")))
        .collect();
    if !params.contains_key("SCRIPT_FILENAME") {
        return Err(format!("params.php: no SCRIPT_FILENAME in {line:?}"));
    }
    Ok(params)
}

/// One FastCGI request on a kept-alive connection; checks the echo.
async fn fcgi_once(
    client: &mut Client<async_std::net::TcpStream, fastcgi_client::conn::KeepAlive>,
    base: &HashMap<String, String>,
    body: &str,
) -> Result<(), String> {
    let mut params = Params::default();
    for (k, v) in base {
        params = params.custom(k.clone(), v.clone());
    }
    params = params.custom("CONTENT_LENGTH", body.len().to_string());
    let resp =
        client.execute(Request::new(params, body.as_bytes())).await.map_err(|e| format!("php-fpm (direct): {e}"))?;
    let out = String::from_utf8_lossy(resp.stdout.as_deref().unwrap_or_default()).into_owned();
    let reply = out.split_once("\r\n\r\n").map_or(out.as_str(), |(_, b)| b);
    if reply.trim_end() != body {
        return Err(format!("php-fpm (direct): expected the echo {body:?}, got {out:?}"));
    }
    Ok(())
}

/// The limit: `conns` loops, each with its own kept-alive connection to
/// php-fpm, sending `msgs` requests one at a time.
async fn fpm_limit(fpm: SocketAddr, base: &HashMap<String, String>, conns: usize, msgs: usize) -> Result<Run, String> {
    let mut clients = Vec::new();
    for c in 0..conns {
        let s = async_std::net::TcpStream::connect(fpm).await.map_err(|e| format!("php-fpm {fpm}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut client = Client::new_keep_alive(s);
        for i in 0..WARMUP {
            fcgi_once(&mut client, base, &payload(c, i)).await?;
        }
        clients.push(client);
    }
    let t0 = Instant::now();
    let loops = clients.into_iter().enumerate().map(|(c, mut client)| async move {
        let mut lat = Vec::with_capacity(msgs);
        for i in 0..msgs {
            let t = Instant::now();
            fcgi_once(&mut client, base, &payload(c, i)).await?;
            lat.push(t.elapsed());
        }
        Ok::<_, String>(lat)
    });
    let results = futures_util::future::join_all(loops).await;
    let wall = t0.elapsed();
    let mut all: Vec<Duration> = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(Run { events: all.len(), wall, lat: stats::Lat::of(&all) })
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let header = "## Workload 6: PHP through FastCGI (php-fpm) vs php-cgi\n\n";
    let mut missing = Vec::new();
    if PhpFpm::binary().is_none() {
        missing.push("php-fpm8.2 (or php-fpm)");
    }
    if which("php-cgi").is_none() {
        missing.push("php-cgi");
    }
    if !missing.is_empty() {
        return missing_tools(header, &missing);
    }
    let mut table = Table::new(&[
        "path",
        "conns",
        "events/s",
        "p50 / p99",
        "php-fpm via ws2http ÷ this (events/s)",
        "goal",
        "result",
    ]);
    for (conns, msgs) in [(1, z.fcgi_one_msgs), (z.fcgi_many_conns, z.fcgi_many_msgs)] {
        // Pools of as many workers as loops: one for ws2http, an identical
        // one for the limit (php-fpm binds a worker to each kept-alive
        // connection, and ws2http keeps its connections).
        let fpm = PhpFpm::start(&ctx.dir, &format!("c{conns}"), conns)?;
        let fpm_direct = PhpFpm::start(&ctx.dir, &format!("c{conns}-direct"), conns)?;
        let args = vec![
            "--handler".to_owned(),
            "php=php-cgi".to_owned(),
            "--fastcgi".to_owned(),
            format!("/fpm={}", fpm.addr),
        ];
        let server = ctx.ws2http_args(&format!("fastcgi-c{conns}"), 1000, Some(conns), &args)?;
        let params = async_std::task::block_on(captured_params(server.addr))?;
        let (mut cgi, mut fcgi, mut lim): (Vec<Run>, Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..z.runs {
            ctx.note(format!("fastcgi: {conns} conn(s) x {msgs} msgs, run {}/{}", k + 1, z.runs));
            // Rotate which side goes first, so drift hits all alike.
            for side in 0..3 {
                settle(server.proc.pid());
                match (side + k) % 3 {
                    0 => cgi.push(async_std::task::block_on(ws_run(server.addr, "/echo.php", conns, msgs))?),
                    1 => fcgi.push(async_std::task::block_on(ws_run(server.addr, "/fpm/echo.php", conns, msgs))?),
                    _ => lim.push(async_std::task::block_on(fpm_limit(fpm_direct.addr, &params, conns, msgs))?),
                }
            }
        }
        drop(server);
        drop(fpm);
        drop(fpm_direct);
        let over = |o: &[Run]| Spread::of(&fcgi.iter().zip(o).map(|(a, b)| a.rate() / b.rate()).collect::<Vec<_>>());
        let (vs_cgi, vs_limit) = (over(&cgi), over(&lim));
        let lat = |r: &[Run]| format!("{} / {}", p50s(r).fmt(stats::dur), p99s(r).fmt(stats::dur));
        table.row(vec![
            "ws2http --fastcgi → php-fpm".into(),
            conns.to_string(),
            rates(&fcgi).fmt(stats::rate),
            lat(&fcgi),
            "1".into(),
            "".into(),
            "".into(),
        ]);
        table.row(vec![
            "ws2http → php-cgi per event".into(),
            conns.to_string(),
            rates(&cgi).fmt(stats::rate),
            lat(&cgi),
            vs_cgi.fmt(stats::ratio),
            "≥ 10×".into(),
            verdict(vs_cgi.median >= 10.0).into(),
        ]);
        table.row(vec![
            "limit: bench → php-fpm directly".into(),
            conns.to_string(),
            rates(&lim).fmt(stats::rate),
            lat(&lim),
            vs_limit.fmt(stats::ratio),
            "none (report: how close to the limit)".into(),
            "—".into(),
        ]);
    }
    Ok(format!(
        "{header}One message at a time per connection, as in workload 1, to `echo.php` \
         (`<?php echo file_get_contents('php://input'), \"\\n\";`). ws2http runs with \
         `--handler php=php-cgi --fastcgi /fpm=127.0.0.1:PORT --max-procs N`; the php-fpm pool is \
         `pm = static`, `pm.max_children` = N (connections) ({}). The limit is the bench calling \
         an identical pool of its own (php-fpm ties a worker to each kept-alive connection): N loops, each on one kept-alive connection (fastcgi-client), with the \
         parameters ws2http sent (captured through `params.php`) and the same stdin. Latency: the \
         client's round trip (ws2http) or one FastCGI request (limit).\n\n{}",
        php_version(),
        table.render()
    ))
}

fn php_version() -> String {
    PhpFpm::binary()
        .and_then(|b| std::process::Command::new(b).arg("-v").output().ok())
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())
        .unwrap_or_default()
}
