//! ws2http-bench: the benchmark harness of issue 5. One command runs every
//! workload and prints one markdown table per workload, each figure as the
//! median (min–max) over K runs and as a ratio against a baseline measured
//! in the same run. See docs/BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p ws2http-bench                 # everything, K=5 (~10 min)
//! cargo run --release -p ws2http-bench -- --quick      # K=3, fewer events (~3 min)
//! cargo run --release -p ws2http-bench -- --smoke      # seconds; CI
//! cargo run --release -p ws2http-bench -- throughput   # one workload
//! cargo run --release -p ws2http-bench -- profile      # perf + callgrind hot spots
//!                                                      # (of target/profiling/ws2http)
//! ```

mod broadcast;
mod churn;
mod client;
mod cluster;
mod common;
mod cpu_probe;
mod echo_server;
mod fanout;
mod fastcgi;
mod fixtures;
mod idle;
mod per_connection;
mod profile;
mod pushpin;
mod resume;
mod servers;
mod session;
mod stats;
mod sys;
mod threads_server;
mod throughput;
mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use common::{Ctx, Mode, Sizes};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Workloads 1-8.
    All,
    /// 1: N connections x M messages vs the spawn limit.
    Throughput,
    /// 2: 10,000 idle connections: RSS and fds per connection, vs websocketd.
    Idle,
    /// 3: one POST /rooms/{room} to 1k and 10k members.
    Fanout,
    /// 4: connect, one message, close: connections/s vs websocketd.
    Churn,
    /// 5: event -> script -> reply through Pushpin + lighttpd CGI vs ws2http.
    Pushpin,
    /// 6: PHP events through php-fpm (--fastcgi) vs php-cgi vs php-fpm directly.
    Fastcgi,
    /// 7: two instances with --redis: cross-instance fan-out vs one instance.
    Cluster,
    /// 8: --per-connection vs websocketd: idle memory, stream, echo, churn (issue 15).
    PerConnection,
    /// perf and callgrind hot spots of ws2http during workload 1 (not in `all`).
    Profile,
    /// Issue 16: full TLS handshakes/s vs plain and vs nginx in front, idle
    /// wss:// vs ws:// memory (not in `all`: needs nginx and openssl).
    Tls,
    /// Issue 17: resumable sessions: resume latency, 1,000 resumes at once
    /// vs 1,000 fresh connects, idle session vs plain memory (not in `all`).
    Resume,
}

#[derive(Parser, Debug)]
#[command(name = "ws2http-bench", about = "Benchmarks for ws2http (docs/BENCHMARKS.md)")]
struct Cli {
    /// Which workload to run.
    #[arg(value_enum, default_value = "all")]
    workload: Workload,
    /// K=3 runs and smaller sizes (~3 minutes).
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// K=1 and tiny sizes (seconds): proves the harness works, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Runs per figure (K); overrides the mode's default.
    #[arg(long)]
    runs: Option<usize>,
    /// The ws2http binary; default: build and use target/release/ws2http
    /// (target/profiling/ws2http for `profile`: it needs symbols).
    #[arg(long, env = "WS2HTTP_BIN")]
    ws2http: Option<PathBuf>,
    /// Do not build first: neither `cargo build --profile release|profiling
    /// --bin ws2http` nor workload 1's tokio floor (bench/floors/).
    #[arg(long)]
    no_build: bool,
    /// Idle connections for workload 2 (ws2http).
    #[arg(long)]
    idle: Option<usize>,
    /// Idle connections for workload 2 (websocketd); 0 skips websocketd.
    #[arg(long)]
    idle_websocketd: Option<usize>,
    /// Idle connections of the `tls` workload (each of ws:// and wss://).
    #[arg(long)]
    tls_idle: Option<usize>,
    /// Idle connections of the `resume` workload (each of session and plain).
    #[arg(long)]
    resume_idle: Option<usize>,
    /// Members of the large room in workload 3.
    #[arg(long)]
    fanout: Option<usize>,
    /// Keep the temporary directory (fixtures, configs, server logs).
    #[arg(long)]
    keep: bool,
    /// Extra environment variable for every ws2http started, e.g.
    /// `--server-env RUST_LOG=warn` (repeatable; for A/B experiments).
    #[arg(long, value_name = "KEY=VALUE")]
    server_env: Vec<String>,
    /// Extra environment variable for each spawn of workload 1's spawn
    /// limit and threads floor, which pass only PATH by default, e.g. the
    /// CGI variables ws2http passes, to measure what they cost
    /// (repeatable; for A/B experiments).
    #[arg(long, value_name = "KEY=VALUE")]
    baseline_env: Vec<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ lives in the workspace").to_path_buf()
}

/// The Cargo profile of the measured binary: `release` (what users run),
/// or `profiling` for the `profile` workload (release with symbols and line
/// tables, so perf and callgrind can name functions).
fn build_profile(workload: Workload) -> &'static str {
    if workload == Workload::Profile {
        "profiling"
    } else {
        "release"
    }
}

/// The ws2http binary: given, or target/PROFILE/ws2http (built first).
fn locate_ws2http(cli: &Cli) -> Result<PathBuf, String> {
    if let Some(p) = &cli.ws2http {
        return p.canonicalize().map_err(|e| format!("--ws2http {}: {e}", p.display()));
    }
    let profile = build_profile(cli.workload);
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let bin = target.join(profile).join("ws2http");
    let build = format!("cargo build --profile {profile} --bin ws2http");
    if !cli.no_build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("building ws2http: {build}");
        let st = Command::new(cargo)
            .args(["build", "--profile", profile, "--bin", "ws2http"])
            .current_dir(&root)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !st.success() {
            return Err(format!("{build} failed: {st}"));
        }
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} not found: run `{build}` or pass --ws2http PATH", bin.display()))
    }
}

/// Workload 1's tokio floor, bench/floors/: a workspace of its own, so that
/// tokio's runtime never reaches the product's build (its Cargo.toml says
/// why). Built first unless `--no-build`.
fn locate_tokio_floor(cli: &Cli) -> Result<PathBuf, String> {
    let root = workspace_root();
    let manifest = root.join("bench").join("floors").join("Cargo.toml");
    // Where cargo puts it: CARGO_TARGET_DIR, else the floors' own target/.
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("bench/floors/target"));
    let bin = target.join("release").join(throughput::TOKIO_FLOOR_BIN);
    if !cli.no_build {
        eprintln!("building the tokio floor: {}", throughput::TOKIO_FLOOR_BUILD);
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--release", "--locked", "--manifest-path"])
            .arg(&manifest)
            .current_dir(&root)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !st.success() {
            return Err(format!("{} failed: {st}", throughput::TOKIO_FLOOR_BUILD));
        }
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "workload 1's tokio floor {} is not built: run `{}` in {}",
            bin.display(),
            throughput::TOKIO_FLOOR_BUILD,
            root.display()
        ))
    }
}

/// Which ws2http is measured: path, build time, and the git commit of the
/// workspace (with `-dirty` when src/ has uncommitted changes).
fn describe(bin: &Path) -> String {
    let built = bin
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| {
            let out =
                Command::new("date").args(["-u", "-d", &format!("@{}", d.as_secs()), "+%Y-%m-%d %H:%M UTC"]).output();
            out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
        })
        .unwrap_or_default();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown commit".into());
    let dirty = git(&["status", "--porcelain", "--", "src", "Cargo.toml"]).is_some_and(|s| !s.is_empty());
    format!("{} (built {built}; workspace at {commit}{})", bin.display(), if dirty { ", src/ modified" } else { "" })
}

fn main() {
    // The fan-out baseline runs as a child process of this same binary.
    match std::env::args().nth(1).as_deref() {
        Some("__broadcast-server") => return broadcast::run(),
        Some("__echo-server") => return echo_server::run(),
        Some("__threads-server") => return threads_server::run(),
        Some("__cpu-probe") => return cpu_probe::run(),
        _ => {}
    }
    let cli = Cli::parse();
    let mode = if cli.smoke {
        Mode::Smoke
    } else if cli.quick {
        Mode::Quick
    } else {
        Mode::Full
    };
    let mut sizes = Sizes::of(mode);
    if let Some(k) = cli.runs {
        sizes.runs = k.max(1);
    }
    if let Some(n) = cli.idle {
        sizes.idle_conns = n;
    }
    if let Some(n) = cli.idle_websocketd {
        sizes.idle_wsd_conns = n;
    }
    if let Some(n) = cli.tls_idle {
        sizes.tls_idle = n;
    }
    if let Some(n) = cli.resume_idle {
        sizes.resume_idle = n;
    }
    if let Some(n) = cli.fanout {
        sizes.fan_large = n;
        sizes.fan_small = sizes.fan_small.min(n);
    }

    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        servers::kill_all();
        prev(info);
    }));
    // Never hang (CI included): past the limit, stop every server and fail.
    let limit = Duration::from_secs(match mode {
        Mode::Smoke => 300,
        Mode::Quick => 1200,
        Mode::Full => 3600,
    });
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("ws2http-bench: still running after {limit:?}; giving up");
        servers::kill_all();
        std::process::exit(3);
    });

    let need =
        4 * sizes.idle_conns.max(sizes.idle_wsd_conns).max(sizes.fan_large).max(sizes.tls_idle).max(sizes.resume_idle)
            as u64
            + 4096;
    let nofile = sys::raise_nofile(need.max(65536));
    sys::become_subreaper();

    let ws2http_bin = match locate_ws2http(&cli) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ws2http-bench: {e}");
            std::process::exit(2);
        }
    };
    // Only workload 1 runs the tokio floor: built and located only for it.
    let tokio_floor = matches!(cli.workload, Workload::All | Workload::Throughput).then(|| {
        locate_tokio_floor(&cli).unwrap_or_else(|e| {
            eprintln!("ws2http-bench: {e}");
            std::process::exit(2)
        })
    });
    let dir = std::env::temp_dir().join(format!("ws2http-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("ws2http-bench: {}: {e}", dir.display());
        std::process::exit(2);
    }
    let fx = match fixtures::build(&dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ws2http-bench: {e}");
            std::process::exit(2);
        }
    };
    // A private copy: a rebuild of target/release/ws2http during the run
    // must not change what is measured half-way.
    let pinned = dir.join("ws2http");
    if let Err(e) = std::fs::copy(&ws2http_bin, &pinned) {
        eprintln!("ws2http-bench: copying {}: {e}", ws2http_bin.display());
        std::process::exit(2);
    }
    let version = describe(&ws2http_bin);
    let ws2http_env = throughput::env_pairs(cli.server_env.iter().cloned());
    let _ = throughput::BASELINE_ENV.set(throughput::env_pairs(cli.baseline_env.iter().cloned()));
    let ctx = Ctx {
        mode,
        sizes,
        ws2http_bin: pinned,
        tokio_floor,
        fx,
        dir: dir.clone(),
        started: Instant::now(),
        fd_notes: Vec::new(),
        ws2http_env,
    };

    // File descriptors: every client connection costs the bench one, and the
    // server one (websocketd four: the socket and its process's three pipes).
    // Without the right to raise the hard limit, use fewer connections.
    let mut ctx = ctx;
    let room = nofile.saturating_sub(1000) as usize;
    let caps = [
        (&mut ctx.sizes.idle_conns, room, "ws2http idle connections"),
        (&mut ctx.sizes.idle_wsd_conns, room.saturating_sub(1000) / 4, "websocketd idle connections"),
        (&mut ctx.sizes.fan_large, room, "fan-out members"),
    ];
    for (n, cap, what) in caps {
        if *n > cap {
            let note =
                format!("{what}: {cap} instead of {n}, because RLIMIT_NOFILE is {nofile} here and cannot be raised");
            eprintln!("ws2http-bench: {note}");
            ctx.fd_notes.push(note);
            *n = cap;
        }
    }
    ctx.sizes.fan_small = ctx.sizes.fan_small.min(ctx.sizes.fan_large);

    println!("# ws2http benchmarks\n");
    println!(
        "Mode: {} (K = {} runs per figure; cells are median (min–max) over the runs).  ",
        match mode {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::Smoke => "smoke (tiny sizes: the numbers mean nothing)",
        },
        ctx.sizes.runs
    );
    println!("Machine: {}.  ", sys::machine());
    println!("ws2http: {version}.  ");
    if !ctx.ws2http_env.is_empty() {
        println!("ws2http environment: {:?}.  ", ctx.ws2http_env);
    }
    println!();

    let all = [
        Workload::Throughput,
        Workload::Idle,
        Workload::Fanout,
        Workload::Churn,
        Workload::Pushpin,
        Workload::Fastcgi,
        Workload::Cluster,
        Workload::PerConnection,
    ];
    let selected: Vec<Workload> = if cli.workload == Workload::All { all.to_vec() } else { vec![cli.workload] };
    let mut failed = false;
    for w in selected {
        let t = Instant::now();
        let r = match w {
            Workload::Throughput => throughput::run(&ctx),
            Workload::Idle => idle::run(&ctx),
            Workload::Fanout => fanout::run(&ctx),
            Workload::Churn => churn::run(&ctx),
            Workload::Pushpin => pushpin::run(&ctx),
            Workload::Fastcgi => fastcgi::run(&ctx),
            Workload::Cluster => cluster::run(&ctx),
            Workload::PerConnection => per_connection::run(&ctx),
            Workload::Profile => profile::run(&ctx),
            Workload::Tls => tls::run(&ctx),
            Workload::Resume => resume::run(&ctx),
            Workload::All => unreachable!(),
        };
        match r {
            Ok(report) => {
                println!("{report}");
                println!("_({:?}: {:.0} s)_\n", w, t.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed = true;
                println!("{:?}: FAILED: {e}\n", w);
                eprintln!("ws2http-bench: {w:?} failed: {e} (logs in {})", dir.display());
            }
        }
    }
    servers::kill_all();
    eprintln!("total {:.0} s", ctx.started.elapsed().as_secs_f64());
    if !cli.keep && !failed {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
    std::process::exit(i32::from(failed));
}
