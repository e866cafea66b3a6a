//! What every workload shares: the run context and the sizes of each mode.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::fixtures::Fixtures;
use crate::servers::{Ws2http, Ws2httpOpts};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Quick,
    Smoke,
}

/// How big each workload is in each mode.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub runs: usize,
    /// Workload 1: messages for the single connection; connections and
    /// messages per connection for "many".
    pub tp_one_msgs: usize,
    pub tp_many_conns: usize,
    pub tp_many_msgs: usize,
    /// Workload 2: idle connections held open (ws2http, websocketd).
    pub idle_conns: usize,
    pub idle_wsd_conns: usize,
    /// Workload 3: members of the small and the large room; rounds per run.
    pub fan_small: usize,
    pub fan_large: usize,
    pub fan_rounds: usize,
    /// Workload 4: concurrent clients, connect-message-close cycles each.
    pub churn_clients: usize,
    pub churn_cycles: usize,
    /// Workload 5: as workload 1, through Pushpin.
    pub pp_one_msgs: usize,
    pub pp_many_conns: usize,
    pub pp_many_msgs: usize,
    /// Workload 6 (fastcgi): as workload 1, PHP through php-cgi, php-fpm
    /// and a direct FastCGI client.
    pub fcgi_one_msgs: usize,
    pub fcgi_many_conns: usize,
    pub fcgi_many_msgs: usize,
    /// Workload 7 (cluster): room members (split over two instances),
    /// latency rounds per run, room posts in the sustained stream.
    pub cl_members: usize,
    pub cl_rounds: usize,
    pub cl_stream: usize,
    /// The `tls` workload: concurrent clients and full handshakes each per
    /// measurement; idle connections held (ws:// and wss://).
    pub tls_clients: usize,
    pub tls_cycles: usize,
    pub tls_idle: usize,
    /// The `resume` workload: latency samples per run (each of: resume with
    /// nothing buffered, resume with `resume_buffered` messages waiting,
    /// fresh connect), connections cut and resumed at once, idle connections.
    pub resume_samples: usize,
    pub resume_buffered: usize,
    pub resume_mass: usize,
    pub resume_idle: usize,
}

impl Sizes {
    pub fn of(mode: Mode) -> Sizes {
        match mode {
            Mode::Full => Sizes {
                runs: 5,
                tp_one_msgs: 1000,
                tp_many_conns: 16,
                tp_many_msgs: 100,
                idle_conns: 10_000,
                idle_wsd_conns: 10_000,
                fan_small: 1_000,
                fan_large: 10_000,
                fan_rounds: 15,
                churn_clients: 8,
                churn_cycles: 100,
                pp_one_msgs: 300,
                pp_many_conns: 16,
                pp_many_msgs: 30,
                fcgi_one_msgs: 500,
                fcgi_many_conns: 8,
                fcgi_many_msgs: 100,
                cl_members: 1_000,
                cl_rounds: 15,
                cl_stream: 500,
                tls_clients: 16,
                tls_cycles: 60,
                tls_idle: 5_000,
                resume_samples: 100,
                resume_buffered: 100,
                resume_mass: 1_000,
                resume_idle: 5_000,
            },
            Mode::Quick => Sizes {
                runs: 3,
                tp_one_msgs: 300,
                tp_many_conns: 16,
                tp_many_msgs: 30,
                idle_conns: 10_000,
                idle_wsd_conns: 2_000,
                fan_small: 1_000,
                fan_large: 10_000,
                fan_rounds: 10,
                churn_clients: 8,
                churn_cycles: 30,
                pp_one_msgs: 150,
                pp_many_conns: 16,
                pp_many_msgs: 15,
                fcgi_one_msgs: 200,
                fcgi_many_conns: 8,
                fcgi_many_msgs: 40,
                cl_members: 1_000,
                cl_rounds: 10,
                cl_stream: 200,
                tls_clients: 16,
                tls_cycles: 30,
                tls_idle: 2_000,
                resume_samples: 50,
                resume_buffered: 100,
                resume_mass: 1_000,
                resume_idle: 2_000,
            },
            Mode::Smoke => Sizes {
                runs: 1,
                tp_one_msgs: 10,
                tp_many_conns: 2,
                tp_many_msgs: 5,
                idle_conns: 20,
                idle_wsd_conns: 20,
                fan_small: 5,
                fan_large: 20,
                fan_rounds: 2,
                churn_clients: 2,
                churn_cycles: 3,
                pp_one_msgs: 5,
                pp_many_conns: 2,
                pp_many_msgs: 3,
                fcgi_one_msgs: 5,
                fcgi_many_conns: 2,
                fcgi_many_msgs: 3,
                cl_members: 20,
                cl_rounds: 2,
                cl_stream: 5,
                tls_clients: 2,
                tls_cycles: 3,
                tls_idle: 20,
                resume_samples: 3,
                resume_buffered: 5,
                resume_mass: 20,
                resume_idle: 20,
            },
        }
    }
}

pub struct Ctx {
    pub mode: Mode,
    pub sizes: Sizes,
    pub ws2http_bin: PathBuf,
    /// Workload 1's tokio floor (bench/floors/), when workload 1 runs.
    pub tokio_floor: Option<PathBuf>,
    pub fx: Fixtures,
    /// Temporary directory: fixtures, configs, server logs.
    pub dir: PathBuf,
    pub started: Instant,
    /// Sizes lowered because of the file descriptor limit, for the report.
    pub fd_notes: Vec<String>,
    /// Extra environment for every ws2http started (`--server-env`).
    pub ws2http_env: Vec<(String, String)>,
}

impl Ctx {
    pub fn ws2http(&self, tag: &str, max_connections: usize, max_procs: Option<usize>) -> Result<Ws2http, String> {
        self.ws2http_args(tag, max_connections, max_procs, &[])
    }

    /// As `ws2http`, with extra command-line arguments.
    pub fn ws2http_args(
        &self,
        tag: &str,
        max_connections: usize,
        max_procs: Option<usize>,
        args: &[String],
    ) -> Result<Ws2http, String> {
        Ws2http::start(&Ws2httpOpts {
            bin: &self.ws2http_bin,
            cgi_bin: &self.fx.cgi_bin,
            log_dir: &self.dir,
            max_connections,
            max_procs,
            wrapper: Vec::new(),
            tag,
            env: &self.ws2http_env,
            args,
        })
    }

    /// Progress on stderr (stdout carries only the report).
    pub fn note(&self, msg: impl AsRef<str>) {
        eprintln!("[{:>6.1}s] {}", self.started.elapsed().as_secs_f64(), msg.as_ref());
    }
}

/// A workload's tool is missing: under CI (`CI=true`) that is a failure,
/// elsewhere the workload prints why it skipped.
pub fn missing_tools(header: &str, missing: &[&str]) -> Result<String, String> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci {
        Err(format!("not installed (required under CI): {}", missing.join(", ")))
    } else {
        Ok(format!("{header}skipped: not installed: {}\n", missing.join(", ")))
    }
}

/// Between measurements: let the servers' scripts finish and the machine settle.
pub fn settle(pid: u32) {
    crate::sys::quiesce(pid, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(100));
}
