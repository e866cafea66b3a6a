//! What /proc says about the server under test: resident memory, open file
//! descriptors, zombie children, and processes left over from its scripts.
//! Linux only, like the rest of the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, ...), in KiB. An
/// unreadable file or a missing field panics: a reading of 0 would make
/// every "memory stays below" check pass without measuring anything.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{path} has no {field} field in kB"))
}

/// Resident memory now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Peak resident memory since the process started, in KiB.
pub fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// Open file descriptors (panics when /proc/PID/fd cannot be listed,
/// rather than reporting 0 open descriptors).
pub fn fd_count(pid: u32) -> usize {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path).unwrap_or_else(|e| panic!("cannot list {path}: {e}")).count()
}

/// The process table, or a panic: an unreadable /proc would otherwise look
/// like a machine with no zombies and no leftover processes.
/// Our own entries must be readable too (a `hidepid` mount or a ptrace
/// policy hides other processes' `stat` and `environ` from us), since the
/// loops below skip an entry they cannot read.
fn proc_dir() -> std::fs::ReadDir {
    for own in ["/proc/self/stat", "/proc/self/environ"] {
        std::fs::read(own).unwrap_or_else(|e| panic!("cannot read {own}: {e}"));
    }
    std::fs::read_dir("/proc").unwrap_or_else(|e| panic!("cannot list /proc: {e}"))
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `(pid, state, ppid)` of every process we can see.
fn all_stats() -> Vec<(u32, char, u32)> {
    let mut out = Vec::new();
    for e in proc_dir().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        // A process may exit between the listing and this read.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        out.push((pid, state, ppid));
    }
    out
}

/// Children of `parent` that have exited but were not reaped.
pub fn zombies_of(parent: u32) -> Vec<u32> {
    all_stats().into_iter().filter(|&(_, st, ppid)| st == 'Z' && ppid == parent).map(|(p, _, _)| p).collect()
}

/// Children of `parent`, whatever their state.
pub fn children_of(parent: u32) -> Vec<u32> {
    all_stats().into_iter().filter(|&(_, _, ppid)| ppid == parent).map(|(p, _, _)| p).collect()
}

/// Live processes (not `except`) whose environment holds exactly
/// `NAME=VALUE`, with their command lines. Scripts of one test server share a
/// unique `EVENTS_LOG`, and so does everything they start (background jobs
/// included), so this finds whatever a server's scripts left behind.
pub fn processes_with_env(var: &str, except: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for e in proc_dir().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == except {
            continue;
        }
        // Gone since the listing, or another user's (scripts run as us).
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
        if !env.split(|&b| b == 0).any(|kv| kv == var.as_bytes()) {
            continue;
        }
        // A zombie keeps no environment, so a hit is a live process.
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ").trim().to_owned();
        found.push((pid, cmd));
    }
    found
}

/// One reading of the server's resources.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Duration,
    pub rss_kib: u64,
    pub fds: usize,
}

pub fn sample(pid: u32, since: Instant) -> Sample {
    Sample { at: since.elapsed(), rss_kib: rss_kib(pid), fds: fd_count(pid) }
}

/// Samples a process every `every` on a thread of its own until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut samples = vec![sample(pid, t0)];
            let mut next = t0 + every;
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= next {
                    samples.push(sample(pid, t0));
                    next += every;
                } else {
                    // Pacing only: wake up often enough to stop promptly.
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                }
            }
            samples
        });
        Sampler { stop, handle }
    }

    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler thread")
    }
}

/// Polls `f` (without blocking the async executor) until it returns `Some`;
/// `Err` with the last value seen when `limit` passes first.
pub async fn wait_until<T, L>(limit: Duration, mut f: impl FnMut() -> Result<T, L>) -> Result<T, L> {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => async_std::task::sleep(Duration::from_millis(25)).await,
        }
    }
}
