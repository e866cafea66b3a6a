//! Fault test of resumable sessions (issue 17; docs/PROTOCOL.md "Resumable
//! sessions"): 500 session connections (`ws2http.session.v1`) in 10 rooms,
//! cut at random while room messages (`POST /rooms/{room}`), API sends
//! (`POST /send/{id}`) and their own echoed messages flow, and resumed. A cut
//! is one of: the socket closed (the kernel sends FIN, or RST when unread
//! data is waiting), a TCP reset (SO_LINGER 0), or the socket abandoned open
//! and silent while the client resumes on a new one (the server has not
//! noticed: the usual case after a network switch; it must take over).
//!
//! Every client checks its three streams as they arrive: each message
//! exactly once and in order (a duplicate, a gap or a swap fails at once),
//! re-sending what the server's `received` count says it did not read. At
//! the end most clients close cleanly and 50 vanish for good: every open had
//! exactly one close event (the vanished ones with `resume-expired` after
//! the grace, the others `client`), no connection opened twice, the resume
//! counter agrees with the clients, and the server's memory is back near
//! its baseline (taken after a warm-up round of the same load). Figures go
//! to stdout (`--nocapture`). Bounded: about 40 s on 2 busy cores.

mod common;
mod procfs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_util::StreamExt;
use procfs::*;

const CONNS: usize = 500;
const ROOMS: usize = 10;
/// Clients of the measured round that vanish at the end (never resume).
const VANISH: usize = 50;
const GRACE_SECS: u64 = 8;
/// How long traffic flows (warm-up round, measured round).
const WARM_TRAFFIC: Duration = Duration::from_secs(4);
const TRAFFIC: Duration = Duration::from_secs(12);
/// Messages each client sends (each one runs a message event).
const WARM_SENDS: usize = 1;
const SENDS: usize = 3;
/// Pacing (the load, not correctness): a round of room posts, API sends.
const ROOM_EVERY: Duration = Duration::from_millis(100);
const SEND_EVERY: Duration = Duration::from_millis(4);
/// How long one awaited message may take under full load.
const WAIT: Duration = Duration::from_secs(40);
const RSS_SLACK_KIB: u64 = 16 * 1024;
const SESSION: &str = "ws2http.session.v1";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faults")
}

fn flags() -> Vec<String> {
    let g = GRACE_SECS.to_string();
    let n = (4 * CONNS).to_string();
    let args = ["--resume-grace", &g, "--max-connections", &n, "--max-connections-per-ip", &n];
    args.iter().map(|s| s.to_string()).chain(["--max-http-connections-per-ip".into(), "100000".into()]).collect()
}

/// A small deterministic generator (xorshift64*): the run is reproducible
/// from its seed, printed on failure.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

/// What the round's traffic generators and clients share.
struct Round {
    server: Arc<Server>,
    seed: u64,
    sends: usize,
    /// Connection ids, by client index, once open.
    ids: Mutex<Vec<Option<String>>>,
    opened: AtomicUsize,
    /// Traffic flows (clients send, posters post) while set.
    traffic: AtomicBool,
    /// Which clients vanish at the end instead of closing.
    vanish: usize,
    resumes: AtomicU64,
    cuts: [AtomicU64; 3],
    /// Messages the clients sent (each echoed once).
    sent: AtomicU64,
}

/// A client's session and its view of its three streams.
struct Client {
    idx: usize,
    room: usize,
    id: String,
    token: String,
    /// Data messages received on the session (session messages not counted).
    received: u64,
    sent: Vec<String>,
    /// Next expected sequence number: room posts, API sends, echoes.
    next_r: u64,
    next_s: u64,
    next_e: usize,
    /// The totals the test announced with `fin` (API sends, room posts).
    fin: Option<(u64, u64)>,
    /// Sockets abandoned open by a take-over cut, dropped at the next action.
    abandoned: Vec<Ws>,
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    async_std::future::timeout(WAIT, f).await.map_err(|_| format!("timed out waiting for {what}"))
}

/// The session message: (kind, id, token, received, replayed). A close
/// frame instead (a refusal) is an error naming its code.
async fn session_message(ws: &mut Ws) -> Result<(String, String, String, u64, u64), String> {
    loop {
        match within("the session message", ws.next()).await? {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).map_err(|e| format!("{t:?}: {e}"))?;
                let s = |k: &str| v[k].as_str().map(str::to_owned).ok_or(format!("no {k} in {t}"));
                let n = |k: &str| v[k].as_u64().unwrap_or(0);
                return Ok((s("ws2http")?, s("id")?, s("token")?, n("received"), n("replayed")));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(f))) => return Err(format!("refused: {f:?}")),
            other => return Err(format!("expected the session message, got {other:?}")),
        }
    }
}

/// A handshake offering `protocols`; the server must select the session's.
async fn handshake(url: &str, protocols: &str) -> Result<Ws, String> {
    let (ws, resp) = within("a handshake", connect_with(url, &[("Sec-WebSocket-Protocol", protocols)]))
        .await?
        .map_err(|e| format!("handshake: {e}"))?;
    let chosen = resp.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
    match chosen == Some(SESSION) {
        true => Ok(ws),
        false => Err(format!("the server selected {chosen:?}, not {SESSION}")),
    }
}

impl Client {
    /// A new session in room `idx % ROOMS`; echo.sh says `id ID` on open.
    async fn open(r: &Round, idx: usize) -> Result<(Client, Ws), String> {
        let room = idx % ROOMS;
        let mut ws = handshake(&r.server.url(&format!("/echo.sh?room=r{room}")), SESSION).await?;
        let (kind, id, token, _, _) = session_message(&mut ws).await?;
        if kind != "session" {
            return Err(format!("a new session got {kind:?}"));
        }
        let mut c = Client {
            idx,
            room,
            id,
            token,
            received: 0,
            sent: Vec::new(),
            next_r: 0,
            next_s: 0,
            next_e: 0,
            fin: None,
            abandoned: Vec::new(),
        };
        let hello = c.recv(&mut ws).await?;
        if hello != format!("id {}", c.id) {
            return Err(format!("client {idx}: the open script said {hello:?}, the session is {}", c.id));
        }
        Ok((c, ws))
    }

    /// The next data message, counted.
    async fn recv(&mut self, ws: &mut Ws) -> Result<String, String> {
        loop {
            match within("a message", ws.next()).await? {
                Some(Ok(Message::Text(t))) => {
                    self.received += 1;
                    return Ok(t.to_string());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => return Err(format!("client {} ({}): expected a message, got {other:?}", self.idx, self.id)),
            }
        }
    }

    /// Checks one message against the streams: exactly once, in order.
    fn check(&mut self, m: &str) -> Result<(), String> {
        let fail = |what: &str| Err(format!("client {} ({}): {what}: {m:?}", self.idx, self.id));
        let num = |s: &str| s.parse::<u64>().ok();
        if let Some(rest) = m.strip_prefix("fin ") {
            let mut it = rest.split(' ').filter_map(num);
            self.fin = Some((it.next().unwrap_or(0), it.next().unwrap_or(0)));
            if self.fin != Some((self.next_s, self.next_r)) {
                return fail(&format!("at fin, had {} API sends and {} room posts", self.next_s, self.next_r));
            }
            return Ok(());
        }
        let (kind, rest) = m.split_at(1);
        let (who, seq) = rest.split_once('-').unwrap_or(("", ""));
        let (want_who, next) = match kind {
            "r" => (self.room.to_string(), &mut self.next_r),
            "s" => (self.idx.to_string(), &mut self.next_s),
            "e" => (self.idx.to_string(), &mut 0),
            _ => return fail("unknown message"),
        };
        if who != want_who {
            return fail("someone else's message");
        }
        if kind == "e" {
            if self.sent.get(self.next_e).map(String::as_str) != Some(m) {
                return fail(&format!("echo out of order (expected {:?})", self.sent.get(self.next_e)));
            }
            self.next_e += 1;
            return Ok(());
        }
        match num(seq) {
            Some(n) if n == *next => {
                *next += 1;
                Ok(())
            }
            Some(n) if n < *next => fail(&format!("duplicate (expected #{next})")),
            _ => fail(&format!("lost or out of order (expected #{next})")),
        }
    }
}

/// A cut, then a resume on a new socket: the server's counts are checked
/// and what it did not read from us is sent again.
async fn cut_and_resume(r: &Round, c: &mut Client, ws: Ws, rng: &mut Rng) -> Result<Ws, String> {
    c.abandoned.clear();
    let kind = rng.below(3) as usize;
    r.cuts[kind].fetch_add(1, Ordering::Relaxed);
    match kind {
        0 => drop(ws),
        1 => reset(ws),
        _ => c.abandoned.push(ws),
    }
    async_std::task::sleep(rng.ms(0, 300)).await; // the blip
    let offer = format!("{SESSION}, ws2http.resume.{}.{}", c.token, c.received);
    let mut ws = handshake(&r.server.url(&format!("/echo.sh?room=r{}", c.room)), &offer).await?;
    let (kind, id, token, received, _replayed) =
        session_message(&mut ws).await.map_err(|e| format!("client {} ({}): resume {e}", c.idx, c.id))?;
    if kind != "resumed" || id != c.id {
        return Err(format!("client {} ({}): resume answered {kind:?} for {id:?}", c.idx, c.id));
    }
    let received = received as usize;
    if received > c.sent.len() {
        return Err(format!("client {}: the server read {received} messages, {} were sent", c.idx, c.sent.len()));
    }
    c.token = token;
    for m in &c.sent[received..] {
        ws.send(Message::text(m.clone())).await.map_err(|e| format!("re-send: {e}"))?;
    }
    r.resumes.fetch_add(1, Ordering::Relaxed);
    Ok(ws)
}

/// Closes the socket with a TCP reset (SO_LINGER 0), no close frame.
fn reset(ws: Ws) {
    use std::os::fd::AsRawFd;
    let fd = ws.get_ref().as_raw_fd();
    let off = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on an open socket with a valid linger struct.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &off as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(ws);
}

/// One client of a round: open, report the id, then read, send and cut at
/// random until `fin` and every echo arrived; then close or vanish.
/// Returns the connection id.
async fn client(r: Arc<Round>, idx: usize) -> Result<String, String> {
    let mut rng = Rng::new(r.seed ^ (idx as u64 + 1));
    let (mut c, mut ws) = Client::open(&r, idx).await?;
    r.ids.lock().unwrap()[idx] = Some(c.id.clone());
    r.opened.fetch_add(1, Ordering::Relaxed);
    let mut next_action = Instant::now() + rng.ms(200, 2500);
    while c.fin.is_none() || c.next_e < c.sent.len() {
        let wait = next_action.saturating_duration_since(Instant::now());
        match async_std::future::timeout(wait, c.recv(&mut ws)).await {
            Ok(m) => c.check(&m?)?,
            Err(_) => {
                next_action = Instant::now() + rng.ms(200, 2500);
                let send = r.traffic.load(Ordering::Relaxed) && c.sent.len() < r.sends && rng.below(2) == 0;
                if send {
                    let m = format!("e{idx}-{}", c.sent.len());
                    c.sent.push(m.clone());
                    r.sent.fetch_add(1, Ordering::Relaxed);
                    ws.send(Message::text(m)).await.map_err(|e| format!("client {idx}: send: {e}"))?;
                } else {
                    ws = cut_and_resume(&r, &mut c, ws, &mut rng).await?;
                }
            }
        }
    }
    c.abandoned.clear();
    if idx < r.vanish {
        reset(ws);
    } else {
        let bye = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        ws.close(Some(bye)).await.map_err(|e| e.to_string())?;
        within("the end of the stream", async { while let Some(Ok(_)) = ws.next().await {} }).await?;
    }
    Ok(c.id)
}

/// Posts to the rooms (one round per ROOM_EVERY) until traffic stops;
/// the number of posts per room.
fn room_poster(r: Arc<Round>) -> Result<Vec<u64>, String> {
    let mut counts = vec![0u64; ROOMS];
    let mut next = Instant::now();
    while r.traffic.load(Ordering::Relaxed) {
        for (room, n) in counts.iter_mut().enumerate() {
            let resp = post(&r.server.api(&format!("/rooms/r{room}")), &format!("r{room}-{n}"));
            if resp.status != 200 {
                return Err(format!("POST /rooms/r{room}: {} {}", resp.status, resp.body));
            }
            *n += 1;
        }
        next += ROOM_EVERY;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(counts)
}

/// API sends to clients `part, part + 2, ...` in turn until traffic stops;
/// the number sent to each client (by index).
fn sender(r: Arc<Round>, part: usize, ids: Arc<Vec<String>>) -> Result<HashMap<usize, u64>, String> {
    let mut counts = HashMap::new();
    let mut idx = part;
    while r.traffic.load(Ordering::Relaxed) {
        let n = counts.entry(idx).or_insert(0u64);
        let resp = post(&r.server.api(&format!("/send/{}", ids[idx])), &format!("s{idx}-{n}"));
        if resp.status != 200 {
            return Err(format!("POST /send/{} (client {idx}): {} {}", ids[idx], resp.status, resp.body));
        }
        *n += 1;
        idx = (idx + 2) % CONNS;
        std::thread::sleep(SEND_EVERY);
    }
    Ok(counts)
}

/// Figures of one round.
struct Totals {
    ids: Vec<String>,
    room_posts: u64,
    api_sends: u64,
    resumes: u64,
    cuts: [u64; 3],
    client_msgs: u64,
}

/// One round: CONNS clients, `traffic` long, then `fin` to everyone.
async fn round(server: Arc<Server>, seed: u64, traffic: Duration, sends: usize, vanish: usize) -> Totals {
    let r = Arc::new(Round {
        server,
        seed,
        sends,
        ids: Mutex::new(vec![None; CONNS]),
        opened: AtomicUsize::new(0),
        traffic: AtomicBool::new(false),
        vanish,
        resumes: AtomicU64::new(0),
        cuts: Default::default(),
        sent: AtomicU64::new(0),
    });
    let clients: Vec<_> = (0..CONNS).map(|i| async_std::task::spawn(client(r.clone(), i))).collect();
    let members = CONNS / ROOMS;
    let rooms_full = || {
        let rooms = get(&r.server.api("/rooms")).json();
        (0..ROOMS).all(|i| rooms[format!("r{i}")] == members)
    };
    wait_until(WAIT, || (r.opened.load(Ordering::Relaxed) == CONNS && rooms_full()).then_some(()).ok_or(()))
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: only {} of {CONNS} opened", r.opened.load(Ordering::Relaxed)));
    let ids: Arc<Vec<String>> = Arc::new(r.ids.lock().unwrap().iter().map(|i| i.clone().unwrap()).collect());
    r.traffic.store(true, Ordering::Relaxed);
    let poster = std::thread::spawn({
        let r = r.clone();
        move || room_poster(r)
    });
    let senders: Vec<_> = (0..2)
        .map(|p| {
            let (r, ids) = (r.clone(), ids.clone());
            std::thread::spawn(move || sender(r, p, ids))
        })
        .collect();
    async_std::task::sleep(traffic).await; // the round's length, not a correctness wait
    r.traffic.store(false, Ordering::Relaxed);
    let posts = poster.join().unwrap().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let mut sent = HashMap::new();
    for s in senders {
        sent.extend(s.join().unwrap().unwrap_or_else(|e| panic!("seed {seed}: {e}")));
    }
    // Every post above was applied: `fin` comes after all of them.
    let fins = {
        let (server, ids) = (r.server.clone(), ids.clone());
        async_std::task::spawn_blocking(move || {
            let mut errors = Vec::new();
            for (idx, id) in ids.iter().enumerate() {
                let body = format!("fin {} {}", sent.get(&idx).copied().unwrap_or(0), posts[idx % ROOMS]);
                let resp = post(&server.api(&format!("/send/{id}")), &body);
                if resp.status != 200 {
                    errors.push(format!("fin to client {idx} ({id}): {} {}", resp.status, resp.body));
                }
            }
            (posts, sent, errors)
        })
    };
    let (posts, sent, mut failures) = fins.await;
    // A client's own error first: it explains a failed fin.
    for c in clients {
        if let Err(e) = c.await {
            failures.insert(0, e);
        }
    }
    assert!(failures.is_empty(), "seed {seed}: {} failures:\n{}", failures.len(), failures.join("\n"));
    let cuts = [0, 1, 2].map(|k| r.cuts[k].load(Ordering::Relaxed));
    Totals {
        ids: ids.to_vec(),
        room_posts: posts.iter().sum(),
        api_sends: sent.values().sum(),
        resumes: r.resumes.load(Ordering::Relaxed),
        cuts,
        client_msgs: r.sent.load(Ordering::Relaxed),
    }
}

/// Each connection id's close events, as (code, cause).
type Closes = HashMap<String, Vec<(String, String)>>;

/// (open count, closes) per connection id, from the events log.
fn opens_and_closes(s: &Server) -> (HashMap<String, usize>, Closes) {
    let (mut opens, mut closes) = (HashMap::new(), HashMap::<_, Vec<_>>::new());
    for l in s.events() {
        let w: Vec<&str> = l.split(' ').collect();
        match w.as_slice() {
            ["open", id] => *opens.entry(id.to_string()).or_insert(0) += 1,
            ["close", id, code, cause] => {
                closes.entry(id.to_string()).or_default().push((code.to_string(), cause.to_string()))
            }
            _ => {}
        }
    }
    (opens, closes)
}

/// No connection, no session waiting, no script running.
async fn idle(s: &Server, env_var: &str, limit: Duration) -> Result<(), String> {
    let pid = s.child.id();
    wait_until(limit, || {
        let conns = get(&s.api("/connections")).json().as_array().map_or(usize::MAX, Vec::len);
        let detached = s.metric("ws2http_sessions_detached").unwrap_or(0);
        let scripts = processes_with_env(env_var, pid).len();
        (conns == 0 && detached == 0 && scripts == 0)
            .then_some(())
            .ok_or(format!("{conns} connections, {detached} sessions detached, {scripts} scripts running"))
    })
    .await
}

#[async_std::test]
async fn sessions_cut_at_random_lose_nothing() {
    let seed: u64 = std::env::var("WS2HTTP_RESUME_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(17);
    let flags = flags();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let s = Arc::new(Server::start_in(&fixtures(), &args));
    let pid = s.child.id();
    let env_var = format!("EVENTS_LOG={}", s.dir.join("events.log").display());
    let t0 = Instant::now();

    // Warm-up: a round of the same load, everyone closing cleanly; the
    // baseline is the idle server after it (the allocator keeps what a
    // burst this size needed).
    let warm = round(s.clone(), seed.wrapping_add(1000), WARM_TRAFFIC, WARM_SENDS, 0).await;
    idle(&s, &env_var, WAIT).await.expect("idle after the warm-up");
    let (base_rss, base_fds) = (rss_kib(pid), fd_count(pid));
    let warm_secs = t0.elapsed().as_secs_f64();
    let resumes_before = s.metric("ws2http_resumes_total{result=\"ok\"}").unwrap_or(0);

    let t1 = Instant::now();
    let sampler = Sampler::start(pid, Duration::from_millis(200));
    let tot = round(s.clone(), seed, TRAFFIC, SENDS, VANISH).await;
    let round_secs = t1.elapsed().as_secs_f64();
    // The vanished sessions expire after the grace; then all is idle.
    idle(&s, &env_var, Duration::from_secs(GRACE_SECS) + WAIT).await.expect("idle after expiry");
    let samples = sampler.stop();
    let rss_after = wait_until(Duration::from_secs(10), || {
        let r = rss_kib(pid);
        (r <= base_rss + RSS_SLACK_KIB).then_some(r).ok_or(r)
    })
    .await
    .unwrap_or_else(|r| r);
    let fds_after = fd_count(pid);

    let (opens, closes) = opens_and_closes(&s);
    let ids = warm.ids.iter().chain(&tot.ids);
    let mut bad = Vec::new();
    for (n, id) in ids.enumerate() {
        let vanished = n >= CONNS && n - CONNS < VANISH;
        let want = if vanished { ("1006", "resume-expired") } else { ("1000", "client") };
        let got = closes.get(id).cloned().unwrap_or_default();
        let ok = opens.get(id) == Some(&1) && got.len() == 1 && (got[0].0.as_str(), got[0].1.as_str()) == want;
        if !ok {
            bad.push(format!("{id}: {:?} opens, closes {got:?} (want one {want:?})", opens.get(id)));
        }
    }
    let resumes_ok = s.metric("ws2http_resumes_total{result=\"ok\"}").unwrap_or(0) - resumes_before;
    let refused = s.metric("ws2http_resumes_total{result=\"expired\"}").unwrap_or(0)
        + s.metric("ws2http_resumes_total{result=\"bad\"}").unwrap_or(0);
    println!(
        "SUMMARY resume faults (seed {seed}): {CONNS} sessions in {ROOMS} rooms, {:.1} s (warm-up {warm_secs:.1} s): \
         {} cuts (closed {}, reset {}, abandoned {}), {} resumes (server: {resumes_ok}, refused {refused}); \
         {} room posts, {} API sends, {} client messages echoed; {VANISH} vanished and expired \
         | RSS baseline={:.1} MiB peak={:.1} MiB after={:.1} MiB (slack {:.0}) | fds baseline={base_fds} after={fds_after} \
         | opens={} closes={} bad={}",
        round_secs,
        tot.cuts.iter().sum::<u64>(),
        tot.cuts[0],
        tot.cuts[1],
        tot.cuts[2],
        tot.resumes,
        tot.room_posts,
        tot.api_sends,
        tot.client_msgs,
        mib(base_rss),
        mib(samples.iter().map(|x| x.rss_kib).max().unwrap_or(0)),
        mib(rss_after),
        mib(RSS_SLACK_KIB),
        opens.values().sum::<usize>(),
        closes.values().map(Vec::len).sum::<usize>(),
        bad.len(),
    );
    assert!(bad.is_empty(), "opens without exactly one close of the right cause:\n{}", bad.join("\n"));
    assert!(tot.resumes > CONNS as u64, "too few resumes to mean anything: {}", tot.resumes);
    assert_eq!(resumes_ok, tot.resumes, "the server counted other resumes than the clients made");
    assert_eq!(refused, 0, "resumes refused");
    assert!(
        rss_after <= base_rss + RSS_SLACK_KIB,
        "RSS {:.1} MiB after, baseline {:.1} MiB",
        mib(rss_after),
        mib(base_rss)
    );
    assert!(fds_after <= base_fds + 4, "fds: {base_fds} before, {fds_after} after");
    assert!(zombies_of(pid).is_empty(), "zombies");
}
