//! The operating system's side of the harness: file descriptor limits,
//! memory accounting from /proc, process groups, orphan reaping.

use std::collections::HashSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Raises RLIMIT_NOFILE for this process (and so for every server it starts)
/// to at least `want` when allowed; returns the soft limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a stack struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_max < want {
            // Only root may raise the hard limit; try, then fall back.
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(want);
            let raised = libc::rlimit { rlim_cur: want.min(nr_open), rlim_max: want.min(nr_open) };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur = lim.rlim_max.min(want.max(lim.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// Orphans of the servers we kill (websocketd's per-connection processes,
/// Pushpin's helpers) are re-parented to us and reaped by [`reap_orphans`],
/// instead of piling up as zombies under an init that may not reap them.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// A free loopback TCP port (for servers that cannot report the one they got).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(field)?.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

/// CPU time (user + system) of `pid` so far, in seconds (from
/// /proc/PID/stat, clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rfind(')').map(|i| &s[i + 1..]).unwrap_or("");
    // state is field 3; utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (tick(11) + tick(12)) as f64 / hz
}

/// VmRSS in bytes.
pub fn rss(pid: u32) -> u64 {
    status_field(pid, "VmRSS:").unwrap_or(0) * 1024
}

/// VmHWM (peak RSS) in bytes.
pub fn hwm(pid: u32) -> u64 {
    status_field(pid, "VmHWM:").unwrap_or(0) * 1024
}

/// Proportional set size in bytes (shared pages divided among their users).
pub fn pss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:")?.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Open file descriptors.
pub fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

/// (pid, ppid, state) of every process.
fn processes() -> Vec<(u32, u32, char)> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return v };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) S ppid ..." — comm may contain spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut it = rest.split_whitespace();
        let state = it.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        v.push((pid, ppid, state));
    }
    v
}

/// Live (non-zombie) direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    processes().into_iter().filter(|&(_, pp, st)| pp == pid && st != 'Z').map(|(p, _, _)| p).collect()
}

/// `pid` and all its live descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let procs = processes();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(procs.iter().filter(|&&(_, pp, st)| pp == parent && st != 'Z').map(|&(p, _, _)| p));
        i += 1;
    }
    out
}

/// Waits until `pid` has had no child process for a moment (its scripts are
/// done), at most `limit`.
pub fn quiesce(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut calm = 0;
    while Instant::now() < deadline && calm < 3 {
        if children(pid).is_empty() {
            calm += 1;
        } else {
            calm = 0;
        }
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// Reaps zombie children of ours that nobody else waits for (orphans
/// re-parented to us), leaving the processes in `managed` alone.
pub fn reap_orphans(managed: &HashSet<u32>) -> usize {
    let me = std::process::id();
    let mut n = 0;
    for (pid, ppid, state) in processes() {
        if ppid == me && state == 'Z' && !managed.contains(&pid) {
            // SAFETY: waitpid on a specific zombie child of ours.
            unsafe {
                let mut status = 0;
                if libc::waitpid(pid as i32, &mut status, libc::WNOHANG) > 0 {
                    n += 1;
                }
            }
        }
    }
    n
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// One line about the machine, for the report header.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned())))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} RAM, Linux {}", kernel.trim())
}
