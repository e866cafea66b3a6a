//! The `tls` workload (issue 16): what HTTPS built into ws2http costs, next
//! to what users ran before it, nginx terminating TLS in front of a plain
//! ws2http. Not part of `all` (it needs nginx and takes a minute of its own):
//! `ws2http-bench tls`.
//!
//! - **Full handshakes/s**: C clients, each in a loop: a new TCP connection,
//!   a full TLS handshake (the client never resumes: no session cache, no
//!   tickets), `GET /hello.txt` (a 6-byte static file, `Connection: close`),
//!   the whole response read. Plain ws2http (no TLS: the ceiling), ws2http
//!   with `--tls-cert`, nginx (Debian's, one worker per core, kept-alive
//!   upstream connections) in front of that plain ws2http, all with the same
//!   certificate, for an ECDSA P-256 and an RSA 2048 certificate. The sides
//!   take turns within each run. Server CPU per connection is measured from
//!   /proc (ws2http; nginx's master and workers plus the ws2http behind it),
//!   which the load on the machine disturbs less than the rate.
//! - **Idle memory**: N idle `wss://` and N idle `ws://` WebSocket
//!   connections to the echo script, server VmRSS delta ÷ N, as workload 2.
//! - **rustls's per-session state**: bytes of heap a `rustls::ServerConnection`
//!   keeps after a handshake and one small record each way, measured in this
//!   process (glibc `mallinfo2`, main arena, one thread) with ws2http's own
//!   TLS settings (`ws2http::tls::server_config`).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{AsyncReadExt, AsyncWriteExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::client;
use crate::common::{missing_tools, settle, Ctx};
use crate::servers::Nginx;
use crate::stats::{self, verdict, Spread, Table};
use crate::sys;

const HEADER: &str = "## Issue 16: TLS\n\n";

/// The two certificates measured: (name, `openssl req -newkey` arguments).
const KEYS: [(&str, &[&str]); 2] = [
    ("ECDSA P-256", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
    ("RSA 2048", &["-newkey", "rsa:2048"]),
];

/// A self-signed certificate for 127.0.0.1 and its key, made by `openssl`.
fn make_cert(dir: &Path, tag: &str, newkey: &[&str]) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join(format!("{tag}.crt")), dir.join(format!("{tag}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(newkey)
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl req ({tag}): {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok((cert, key))
}

/// Accepts the server's certificate without a chain (it is self-signed) but
/// checks its handshake signature, so the client does the signature work a
/// browser does.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The bench's TLS client: ring, TLS 1.2 and 1.3, never resuming.
fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

type TlsClient = futures_rustls::client::TlsStream<async_io::Async<std::net::TcpStream>>;

async fn tls_connect(cfg: &Arc<ClientConfig>, addr: SocketAddr, i: usize) -> Result<TlsClient, String> {
    let tcp = client::tcp(addr, i).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let name = ServerName::IpAddress(addr.ip().into());
    futures_rustls::TlsConnector::from(cfg.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))
}

/// Sends the GET and reads the response's head and body (Content-Length).
async fn get<S: futures_util::AsyncRead + futures_util::AsyncWrite + Unpin>(
    s: &mut S,
    addr: SocketAddr,
) -> Result<(), String> {
    let req = format!("GET /hello.txt HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| format!("GET: {e}"))?;
    s.flush().await.map_err(|e| format!("GET: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("GET response: {e}"))?;
        if n == 0 {
            return Err(format!("GET: the connection ended after {} bytes", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("GET /hello.txt: {}", head.lines().next().unwrap_or("")));
        }
        let len = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or("GET /hello.txt: no Content-Length")?;
        if body.len() >= len {
            return Ok(());
        }
    }
}

/// Connections per second: `clients` loops of connect (+ TLS), GET, close.
async fn handshakes(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    clients: usize,
    cycles: usize,
) -> Result<f64, String> {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let tls = tls.clone();
            async_std::task::spawn(async move {
                for i in 0..cycles {
                    let step = async {
                        match &tls {
                            Some(cfg) => get(&mut tls_connect(cfg, addr, c + i * clients).await?, addr).await,
                            None => {
                                let mut tcp = client::tcp(addr, c + i * clients).await.map_err(|e| e.to_string())?;
                                get(&mut tcp, addr).await
                            }
                        }
                    };
                    client::timeout(client::STEP_TIMEOUT, "handshake + GET", step).await?;
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

/// One side of the handshake table: where it listens, which client, which
/// processes' CPU is its cost.
struct Side {
    name: String,
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    pids: Vec<u32>,
}

fn cpu(pids: &[u32]) -> f64 {
    pids.iter().flat_map(|&p| sys::tree(p)).map(sys::cpu_seconds).sum()
}

#[derive(Default)]
struct Samples {
    rate: Vec<f64>,
    cpu_us: Vec<f64>,
}

fn root_dir(ctx: &Ctx) -> Result<PathBuf, String> {
    let root = ctx.dir.join("tls-root");
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    std::fs::write(root.join("hello.txt"), "hello\n").map_err(|e| e.to_string())?;
    Ok(root)
}

fn tls_args(root: &Path, cert: Option<(&Path, &Path)>) -> Vec<String> {
    let mut a = vec!["--root".to_owned(), root.display().to_string()];
    if let Some((c, k)) = cert {
        a.extend(["--tls-cert".into(), c.display().to_string(), "--tls-key".into(), k.display().to_string()]);
    }
    a
}

/// Part (a): the handshake table, one row per side per certificate.
fn handshake_table(ctx: &Ctx, certs: &[(PathBuf, PathBuf)], root: &Path) -> Result<String, String> {
    let z = &ctx.sizes;
    let (clients, cycles) = (z.tls_clients, z.tls_cycles);
    let plain = ctx.ws2http_args("tls-plain", 1000, None, &tls_args(root, None))?;
    let cfg = client_config();
    let mut servers = Vec::new();
    let mut nginxes = Vec::new();
    let mut sides = vec![Side {
        name: "ws2http, plain http (no TLS)".into(),
        addr: plain.addr,
        tls: None,
        pids: vec![plain.proc.pid()],
    }];
    for (i, ((cert, key), (kname, _))) in certs.iter().zip(KEYS).enumerate() {
        let w = ctx.ws2http_args(&format!("tls-{i}"), 1000, None, &tls_args(root, Some((cert, key))))?;
        sides.push(Side {
            name: format!("ws2http --tls-cert, {kname}"),
            addr: w.addr,
            tls: Some(cfg.clone()),
            pids: vec![w.proc.pid()],
        });
        servers.push(w);
        let n = Nginx::start(&ctx.dir, &i.to_string(), cert, key, plain.addr)?;
        sides.push(Side {
            name: format!("nginx (TLS) → plain ws2http, {kname}"),
            addr: n.addr,
            tls: Some(cfg.clone()),
            pids: vec![n.proc.pid(), plain.proc.pid()],
        });
        nginxes.push(n);
    }
    // Warm up every side (nginx's upstream connections, caches).
    for s in &sides {
        async_std::task::block_on(handshakes(s.addr, s.tls.clone(), clients, 2))?;
    }
    let mut samples: Vec<Samples> = sides.iter().map(|_| Samples::default()).collect();
    for k in 0..z.runs {
        ctx.note(format!("tls: {clients} clients x {cycles} handshakes per side, run {}/{}", k + 1, z.runs));
        for i in 0..sides.len() {
            let s = &sides[(i + k) % sides.len()];
            let out = &mut samples[(i + k) % sides.len()];
            s.pids.iter().for_each(|&p| settle(p));
            let c0 = cpu(&s.pids);
            let rate = async_std::task::block_on(handshakes(s.addr, s.tls.clone(), clients, cycles))?;
            let spent = cpu(&s.pids) - c0;
            out.rate.push(rate);
            out.cpu_us.push(spent * 1e6 / (clients * cycles) as f64);
        }
    }
    drop((servers, nginxes, plain));
    Ok(format!(
        "### Full TLS handshakes\n\n\
         Each client in a loop: new TCP connection, full TLS handshake (no resumption), `GET /hello.txt` \
         (6 bytes, `Connection: close`), response read. {cycles} connections per client per run; the sides \
         take turns. Server CPU: /proc utime + stime of ws2http, or of nginx (master and workers) plus the \
         plain ws2http behind it.\n\n{}",
        render(&sides, &samples, clients)
    ))
}

/// The handshake table: rate, CPU per connection, and each ws2http TLS row
/// against the nginx row after it (same certificate), per run.
fn render(sides: &[Side], samples: &[Samples], clients: usize) -> String {
    let mut t = Table::new(&[
        "server",
        "clients",
        "connections/s",
        "server CPU per connection",
        "÷ nginx (connections/s)",
        "goal",
        "result",
    ]);
    for (i, s) in sides.iter().enumerate() {
        let m = &samples[i];
        // ws2http TLS rows (1, 3) against nginx with the same key (2, 4).
        let (ratio, goal, result) = if i % 2 == 1 {
            let r = Spread::of(&m.rate.iter().zip(&samples[i + 1].rate).map(|(a, b)| a / b).collect::<Vec<_>>());
            (r.fmt(stats::ratio), "≥ nginx's".to_owned(), verdict(r.median >= 1.0).to_owned())
        } else {
            (String::new(), String::new(), String::new())
        };
        t.row(vec![
            s.name.clone(),
            clients.to_string(),
            Spread::of(&m.rate).fmt(stats::rate),
            Spread::of(&m.cpu_us).fmt(|v| format!("{v:.0} µs")),
            ratio,
            goal,
            result,
        ]);
    }
    t.render()
}

type Held = Vec<Box<dyn std::any::Any + Send>>;

/// Opens `n` WebSocket connections to /echo (over TLS when `tls`).
async fn open_idle(addr: SocketAddr, tls: Option<Arc<ClientConfig>>, n: usize) -> Result<Held, String> {
    use futures_util::StreamExt;
    let futs = (0..n).map(|i| {
        let tls = tls.clone();
        async move {
            let held: Box<dyn std::any::Any + Send> = match tls {
                None => Box::new(client::connect(addr, "/echo", i).await?),
                Some(cfg) => {
                    let s = tls_connect(&cfg, addr, i).await?;
                    let url = format!("wss://{addr}/echo");
                    let (ws, _) =
                        async_tungstenite::client_async(url, s).await.map_err(|e| format!("wss handshake: {e}"))?;
                    Box::new(ws)
                }
            };
            Ok::<_, String>(held)
        }
    });
    let all: Vec<Result<_, String>> = futures_util::stream::iter(futs).buffered(32).collect().await;
    all.into_iter().collect()
}

/// Server VmRSS delta ÷ n after n idle connections (after one warm-up).
fn idle_once(ctx: &Ctx, tag: &str, args: &[String], tls: Option<Arc<ClientConfig>>, n: usize) -> Result<f64, String> {
    let server = ctx.ws2http_args(tag, n + 100, None, args)?;
    let pid = server.proc.pid();
    let (addr, held) = (server.addr, async_std::task::block_on(open_idle(server.addr, tls.clone(), 1))?);
    sys::quiesce(pid, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = sys::rss(pid);
    let conns = async_std::task::block_on(open_idle(addr, tls, n))?;
    sys::quiesce(pid, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let per = (sys::rss(pid) as f64 - rss0 as f64) / n as f64;
    drop(server);
    drop((conns, held));
    Ok(per)
}

/// Heap bytes in use in this thread's arena (glibc).
fn heap_in_use() -> f64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as f64
}

#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Moves every pending TLS byte from `a` to `b`.
fn pump(
    from: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<usize>,
    to: &mut dyn FnMut(&mut dyn Read) -> std::io::Result<usize>,
) {
    let mut buf = Vec::new();
    while from(&mut buf).unwrap_or(0) > 0 {}
    let mut r: &[u8] = &buf;
    while !r.is_empty() && to(&mut r).unwrap_or(0) > 0 {}
}

/// One in-memory session: handshake, "ping" and "pong"; the server's side is kept.
fn session(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>) -> Result<rustls::ServerConnection, String> {
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut c = rustls::ClientConnection::new(client.clone(), name).map_err(|e| e.to_string())?;
    let mut s = rustls::ServerConnection::new(server.clone()).map_err(|e| e.to_string())?;
    c.writer().write_all(b"ping").map_err(|e| e.to_string())?;
    for _ in 0..10 {
        pump(&mut |w| c.write_tls(w), &mut |r| s.read_tls(r));
        s.process_new_packets().map_err(|e| format!("server: {e}"))?;
        pump(&mut |w| s.write_tls(w), &mut |r| c.read_tls(r));
        c.process_new_packets().map_err(|e| format!("client: {e}"))?;
        if !s.is_handshaking() && !c.is_handshaking() {
            break;
        }
    }
    let mut got = [0u8; 4];
    s.reader().read_exact(&mut got).map_err(|e| format!("server read: {e}"))?;
    s.writer().write_all(b"pong").map_err(|e| e.to_string())?;
    pump(&mut |w| s.write_tls(w), &mut |r| c.read_tls(r));
    Ok(s)
}

/// Part (b)'s figure: heap bytes per idle rustls `ServerConnection` with
/// ws2http's settings (its session cache filled first: it is bounded and
/// shared, not per session).
fn rustls_session_bytes(cert: &Path, key: &Path, n: usize) -> Result<f64, String> {
    let pair = ws2http::tls::files::load(cert, key)?;
    let server = ws2http::tls::server_config(Arc::new(OneCert(pair)), false);
    let client = client_config();
    for _ in 0..300 {
        session(&server, &client)?;
    }
    let mut kept = Vec::with_capacity(n);
    let before = heap_in_use();
    for _ in 0..n {
        kept.push(session(&server, &client)?);
    }
    let per = (heap_in_use() - before) / n as f64;
    drop(kept);
    Ok(per)
}

/// Part (b): idle ws:// vs wss:// (ECDSA certificate), alternating.
fn idle_table(ctx: &Ctx, cert: &Path, key: &Path, root: &Path) -> Result<String, String> {
    let n = ctx.sizes.tls_idle;
    let session = rustls_session_bytes(cert, key, n.clamp(10, 2000))?;
    let cfg = client_config();
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    for k in 0..ctx.sizes.runs {
        ctx.note(format!("tls: idle, {n} ws:// and {n} wss:// connections, run {}/{}", k + 1, ctx.sizes.runs));
        for i in 0..2 {
            if (i + k) % 2 == 0 {
                plain.push(idle_once(ctx, &format!("tls-idle-plain-{k}"), &tls_args(root, None), None, n)?);
            } else {
                let args = tls_args(root, Some((cert, key)));
                tls.push(idle_once(ctx, &format!("tls-idle-tls-{k}"), &args, Some(cfg.clone()), n)?);
            }
        }
    }
    let (p, w) = (Spread::of(&plain), Spread::of(&tls));
    let limit = 2.0 * p.median + session;
    let mut t = Table::new(&["connection", "server RSS per idle connection", "goal", "result"]);
    t.row(vec!["ws://".into(), p.fmt(stats::bytes), String::new(), String::new()]);
    t.row(vec![
        "wss:// (ECDSA P-256)".into(),
        w.fmt(stats::bytes),
        format!("≤ 2 × ws:// + rustls session = {}", stats::bytes(limit)),
        verdict(w.median <= limit).into(),
    ]);
    t.row(vec![
        "rustls `ServerConnection` (heap, in-process)".into(),
        stats::bytes(session),
        String::new(),
        String::new(),
    ]);
    Ok(format!(
        "### Idle connections\n\n{n} idle WebSocket connections to `/echo`, server VmRSS delta ÷ {n} (as workload 2), \
         ws:// and wss:// on separate servers taking turns. rustls's per-session state: heap bytes a \
         `rustls::ServerConnection` keeps after a handshake and one small record each way, with ws2http's TLS \
         settings, measured in the bench process (glibc `mallinfo2`).\n\n{}",
        t.render()
    ))
}

pub fn run(ctx: &Ctx) -> Result<String, String> {
    let mut missing = Vec::new();
    if !Nginx::available() {
        missing.push("nginx");
    }
    if sys_has("openssl").is_none() {
        missing.push("openssl");
    }
    if !missing.is_empty() {
        return missing_tools(HEADER, &missing);
    }
    let certs = KEYS
        .iter()
        .map(|(name, args)| make_cert(&ctx.dir, &name.replace(' ', "-"), args))
        .collect::<Result<Vec<_>, _>>()?;
    let root = root_dir(ctx)?;
    let a = handshake_table(ctx, &certs, &root)?;
    let b = idle_table(ctx, &certs[0].0, &certs[0].1, &root)?;
    Ok(format!("{HEADER}{a}\n{b}"))
}

fn sys_has(prog: &str) -> Option<PathBuf> {
    crate::servers::which(prog)
}
