//! Workload 3, fan-out: N clients joined to a room (the `join` fixture
//! joins the rooms named in the query string on open); one
//! `POST /rooms/{room}` to the control API; the figure is the time from
//! sending the request until the last client has the message. Baseline: the
//! bench's own minimal broadcaster (see broadcast.rs) with the same clients.

use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Async;
use futures_util::{AsyncBufReadExt, AsyncWriteExt};

use crate::client::{self, Ws};
use crate::common::Ctx;
use crate::servers::Broadcaster;
use crate::stats::{self, percentile, verdict, Spread, Table};

/// Deliveries per round: how many clients have it and when the last got it.
pub(crate) struct Recorder {
    pub(crate) t0: Instant,
    pub(crate) rounds: Vec<(AtomicUsize, AtomicU64)>,
}

impl Recorder {
    pub(crate) fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
    fn record(&self, round: usize) {
        if let Some((n, last)) = self.rounds.get(round) {
            last.fetch_max(self.now(), Ordering::Relaxed);
            n.fetch_add(1, Ordering::Release);
        }
    }
}

/// The clients' receiving side. Handshakes go through async-tungstenite;
/// afterwards one thread reads every socket through one level-triggered
/// epoll set and parses frames by hand. The instrument must cost much less
/// than what it measures: 10,000 async tasks waking on two cores took
/// ~15 µs per client, longer than the server's own work.
pub(crate) struct Receiver {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Parses complete server frames at the front of `buf`: records text
/// frames "f ROUND", answers pings (masked pong, zero key), drops the rest.
fn parse_frames(buf: &mut Vec<u8>, fd: i32, rec: &Recorder) {
    let mut at = 0;
    loop {
        let b = &buf[at..];
        if b.len() < 2 {
            break;
        }
        let (op, len7) = (b[0] & 0x0f, (b[1] & 0x7f) as usize);
        let (hdr, len) = match len7 {
            126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
            127 if b.len() >= 10 => (10, u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")) as usize),
            126 | 127 => break,
            n => (2, n),
        };
        if b.len() < hdr + len {
            break;
        }
        let payload = &b[hdr..hdr + len];
        match op {
            1 => {
                if let Some(r) = std::str::from_utf8(payload).ok().and_then(|t| t.strip_prefix("f ")?.parse().ok()) {
                    rec.record(r);
                }
            }
            9 if len <= 125 => {
                let mut pong = vec![0x8a, 0x80 | len as u8, 0, 0, 0, 0];
                pong.extend_from_slice(payload);
                // SAFETY: write(2) from a valid buffer to an fd we own.
                unsafe {
                    libc::write(fd, pong.as_ptr().cast(), pong.len());
                }
            }
            _ => {}
        }
        at += hdr + len;
    }
    buf.drain(..at);
}

pub(crate) fn start_receiver(conns: Vec<Ws>, rec: &Arc<Recorder>) -> Result<Receiver, String> {
    use std::os::fd::AsRawFd;
    let streams: Vec<TcpStream> = conns
        .into_iter()
        .map(|ws| ws.into_inner().into_inner())
        .collect::<std::io::Result<_>>()
        .map_err(|e| format!("taking the sockets back: {e}"))?;
    // SAFETY: epoll_create1 has no preconditions.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(format!("epoll_create1: {}", std::io::Error::last_os_error()));
    }
    for (i, s) in streams.iter().enumerate() {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: valid epoll fd, socket fd and event struct.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) } != 0 {
            return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
        }
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, rec) = (stop.clone(), rec.clone());
    let thread = std::thread::spawn(move || {
        let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); streams.len()];
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        let mut tmp = [0u8; 4096];
        while !stop2.load(Ordering::Relaxed) {
            // SAFETY: events has room for 1024 entries.
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 50) };
            for ev in events.iter().take(n.max(0) as usize) {
                let i = ev.u64 as usize;
                let fd = streams[i].as_raw_fd();
                loop {
                    // SAFETY: read(2) into a stack buffer of the given size.
                    let got = unsafe { libc::read(fd, tmp.as_mut_ptr().cast(), tmp.len()) };
                    if got <= 0 {
                        if got == 0 {
                            // Closed: stop watching it.
                            // SAFETY: valid fds; a null event is allowed for DEL.
                            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
                        }
                        break;
                    }
                    bufs[i].extend_from_slice(&tmp[..got as usize]);
                    parse_frames(&mut bufs[i], fd, &rec);
                    if (got as usize) < tmp.len() {
                        break;
                    }
                }
            }
        }
        // SAFETY: closing our epoll fd; the sockets close when `streams` drops.
        unsafe { libc::close(ep) };
        drop(streams);
    });
    Ok(Receiver { stop, thread: Some(thread) })
}

/// Waits until round `r` reached `expected` clients; the time of the last
/// delivery after `t_sent` (ns on the recorder's clock).
pub(crate) async fn wait_round(rec: &Recorder, r: usize, expected: usize, t_sent: u64) -> Result<f64, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = rec.rounds[r].0.load(Ordering::Acquire);
        if got >= expected {
            let last = rec.rounds[r].1.load(Ordering::Relaxed);
            return Ok(last.saturating_sub(t_sent) as f64 / 1e9);
        }
        if Instant::now() > deadline {
            return Err(format!("fan-out round {r}: only {got} of {expected} clients got the message within 20 s"));
        }
        async_std::task::sleep(Duration::from_micros(500)).await;
    }
}

/// Members of the small room also join the large one.
fn path(i: usize, small: usize) -> String {
    if i < small {
        "/join?fan1k+fan10k".into()
    } else {
        "/join?fan10k".into()
    }
}

/// How a round is triggered on one side.
enum Side {
    Ws2http(crate::servers::Ws2http),
    Baseline(Broadcaster, futures_util::io::BufReader<Async<TcpStream>>),
}

impl Side {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Side::Ws2http(s) => s.addr,
            Side::Baseline(b, _) => b.addr,
        }
    }

    /// Sends round `r` to `room`; returns when all `members` have it.
    async fn round(&mut self, rec: &Recorder, room: &str, members: usize, r: usize) -> Result<f64, String> {
        let body = format!("f {r}");
        match self {
            Side::Ws2http(server) => {
                let conn = client::tcp(server.api, 0).await.map_err(|e| format!("control API: {e}"))?;
                let t_sent = rec.now();
                let (status, reply) = client::http_post(conn, server.api, &format!("/rooms/{room}"), &body).await?;
                if status != 200 || !reply.contains(&format!("\"delivered\":{members}")) {
                    return Err(format!("POST /rooms/{room}: {status} {reply}"));
                }
                wait_round(rec, r, members, t_sent).await
            }
            Side::Baseline(_, trigger) => {
                let t_sent = rec.now();
                trigger
                    .get_mut()
                    .write_all(format!("{room} {body}\n").as_bytes())
                    .await
                    .map_err(|e| format!("baseline trigger: {e}"))?;
                let took = wait_round(rec, r, members, t_sent).await?;
                let mut line = String::new();
                trigger.read_line(&mut line).await.map_err(|e| format!("baseline trigger: {e}"))?;
                if line.trim() != format!("ok {members}") {
                    return Err(format!("baseline delivered {line:?}, expected {members}"));
                }
                Ok(took)
            }
        }
    }
}

/// Round times of each run.
type Runs = Vec<Vec<f64>>;

/// All runs of one side: `[group][run]` → round times.
fn phase(ctx: &Ctx, mut side: Side, name: &str, groups: &[(&str, usize)]) -> Result<Vec<Runs>, String> {
    let z = &ctx.sizes;
    let (small, large) = (groups[0].1, groups[1].1);
    let rounds_total = z.runs * groups.len() * z.fan_rounds + 4;
    let rec = Arc::new(Recorder {
        t0: Instant::now(),
        rounds: (0..rounds_total).map(|_| (AtomicUsize::new(0), AtomicU64::new(0))).collect(),
    });
    ctx.note(format!("fan-out: opening {large} connections to {name}"));
    let t = Instant::now();
    let conns = async_std::task::block_on(client::connect_many(side.addr(), |i| path(i, small), large, 32))?;
    ctx.note(format!("fan-out: {large} connections open after {:.1?}", t.elapsed()));
    let receiver = start_receiver(conns, &rec)?;
    if let Side::Ws2http(s) = &side {
        crate::sys::quiesce(s.proc.pid(), Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut out = vec![Vec::new(); groups.len()];
    let mut r = 0;
    for k in 0..z.runs {
        for (g, &(room, members)) in groups.iter().enumerate() {
            ctx.note(format!("fan-out: {name}, {members} members, {} rounds, run {}/{}", z.fan_rounds, k + 1, z.runs));
            let mut times = Vec::new();
            for _ in 0..z.fan_rounds {
                times.push(async_std::task::block_on(side.round(&rec, room, members, r))?);
                r += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            out[g].push(times);
        }
    }
    drop(side);
    drop(receiver);
    Ok(out)
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let z = &ctx.sizes;
    let (small, large) = (z.fan_small, z.fan_large);
    let groups = [("fan1k", small), ("fan10k", large)];
    // One side at a time: the bench's descriptors allow one set of clients.
    let ws = phase(ctx, Side::Ws2http(ctx.ws2http("fanout", large + 100, None)?), "ws2http", &groups)?;
    let base = Broadcaster::start(&ctx.dir)?;
    let trigger = async_std::task::block_on(async {
        let s = Async::<TcpStream>::connect(base.trigger).await.map_err(|e| format!("baseline trigger: {e}"))?;
        Ok::<_, String>(futures_util::io::BufReader::new(s))
    })?;
    let bl = phase(ctx, Side::Baseline(base, trigger), "the baseline broadcaster", &groups)?;
    let results: Vec<(Runs, Runs)> = ws.into_iter().zip(bl).collect();

    let mut table = Table::new(&[
        "members",
        "ws2http last delivery p50 / p99",
        "baseline p50 / p99",
        "ws2http ÷ baseline (p50)",
        "ws2http ÷ baseline (p99)",
        "goal",
        "result",
    ]);
    let pct =
        |runs: &[Vec<f64>], p: f64| Spread::of(&runs.iter().map(|r| percentile(&mut r.clone(), p)).collect::<Vec<_>>());
    for (g, &(_, members)) in groups.iter().enumerate() {
        let (w, b) = &results[g];
        let (w50, b50) = (pct(w, 50.0), pct(b, 50.0));
        // Per run: ws2http's percentile ÷ the baseline's in the same run.
        let ratio = |p: f64| {
            Spread::of(
                &w.iter()
                    .zip(b)
                    .map(|(x, y)| percentile(&mut x.clone(), p) / percentile(&mut y.clone(), p))
                    .collect::<Vec<_>>(),
            )
        };
        let (r50, r99) = (ratio(50.0), ratio(99.0));
        let (goal, result) = if members == large {
            (
                "last delivery p50 and p99 ≤ 0.6 × baseline (at 10,000)",
                verdict(r50.median <= 0.6 && r99.median <= 0.6).to_owned(),
            )
        } else {
            ("none (report)", "—".to_owned())
        };
        table.row(vec![
            members.to_string(),
            format!("{} / {}", w50.fmt(stats::dur), pct(w, 99.0).fmt(stats::dur)),
            format!("{} / {}", b50.fmt(stats::dur), pct(b, 99.0).fmt(stats::dur)),
            r50.fmt(stats::ratio),
            r99.fmt(stats::ratio),
            goal.into(),
            result,
        ]);
    }
    Ok(format!(
        "## Workload 3: fan-out\n\n\
         One `POST /rooms/ROOM` (control API, connection already open) → time until the last member \
         has the message, as stamped by the client that received it last (one epoll thread reads \
         all client sockets); p50/p99 over {} rounds per run. Baseline: a minimal broadcaster on the same stack (async-std, async-tungstenite \
         handshake) writing one pre-encoded frame to each socket in turn from one task (single-threaded), same clients; \
         ratios per run. \
         The members of the small room are also members of the large one.\n\n{}{}",
        z.fan_rounds,
        table.render(),
        ctx.fd_notes
            .iter()
            .filter(|n| n.contains("fan-out"))
            .map(|n| format!("\nFewer members than the issue asks: {n}.\n"))
            .collect::<String>()
    ))
}
