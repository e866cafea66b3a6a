//! Every process group a script starts, from its spawn until its last
//! process is gone: a child process never outlives its budget.
//!
//! Each script runs as the leader of a process group of its own. The group
//! has a budget: `--timeout` from the start of its event or request. When the
//! budget ends, or on any other kill path (`--max-output`, an invalid CGI
//! header block, a background job holding stdout, shutdown), the whole group
//! gets SIGTERM, then SIGKILL once the grace period is over, whether or not
//! the script itself already exited. A background job of a script that exited
//! normally keeps running until the budget ends (`cgi-bin/clock.sh`), then gets
//! the same. A job that leaves the group (`setsid`) is not tracked.
//!
//! The hard part is signalling a group by its id (`kill(-pgid)`) without ever
//! hitting a stranger: once the last process of a group is reaped, its id is
//! free and a new process may get it. ws2http therefore makes sure it reaps
//! the last process of each of its groups itself, and signals a group only
//! while it holds an unreaped member:
//! - ws2http is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`): a process
//!   whose parent exits (a script's background job) becomes ws2http's child,
//!   not init's. So the last process of a group always dies as a child of
//!   ws2http (or of a live member of the group), and its id stays allocated
//!   until ws2http reaps it.
//! - `waitid(P_PGID, pgid, WEXITED|WNOHANG)` reaps the zombies of a group
//!   and says whether live children remain: the exact "is the group empty"
//!   test. (`kill(-pgid, 0)` cannot be used while the leader is an unreaped
//!   zombie: the kernel still counts it as a member, so it never fails.)
//! - Every reap and every signal happens under one lock, so a group is never
//!   reaped between the check and the signal.
//!
//! The per-event cost is one map insert at the spawn and one removal plus
//! one `waitid` at the exit; no task and no timer. Groups still running past
//! their leader's exit, and pending SIGKILLs, are watched by one thread,
//! which also reaps the adopted processes that left their group, so no
//! zombie accumulates. Linux only (like pidfd in [`super::spawn`]).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use crate::runtime;

/// How long a group may live: until `until`, then SIGTERM, and SIGKILL
/// `grace` later.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub until: Instant,
    pub grace: Duration,
}

impl Budget {
    /// A budget of `timeout` from now.
    pub fn from_now(timeout: Duration, grace: Duration) -> Self {
        Budget::starting_at(Instant::now(), timeout, grace)
    }

    /// A budget of `timeout` from `start`.
    pub fn starting_at(start: Instant, timeout: Duration, grace: Duration) -> Self {
        let far = start + Duration::from_secs(86_400 * 365);
        Budget { until: start.checked_add(timeout).unwrap_or(far), grace }
    }
}

struct Group {
    budget: Budget,
    /// SIGTERM was sent; SIGKILL is due then.
    kill_at: Option<Instant>,
    killed: bool,
    /// The script (the leader) is not reaped yet: its task waits for it.
    leader: bool,
    /// The run that started it, for the log (set when the leader is reaped
    /// with processes left; empty otherwise).
    label: String,
}

impl Group {
    fn name(&self, pgid: i32) -> String {
        if self.label.is_empty() {
            format!("process group {pgid}")
        } else {
            format!("{}: process group {pgid}", self.label)
        }
    }
}

struct Registry {
    groups: BTreeMap<i32, Group>,
    /// Shutting down: a group started from now on is killed at once.
    closed: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { groups: BTreeMap::new(), closed: false });
/// Wakes the watcher when a deadline it does not know of is set.
static WAKE: Condvar = Condvar::new();
/// Spawns between `posix_spawn` and [`started`]: a zombie child that is in no
/// group yet may be a script whose task will reap it.
static SPAWNING: AtomicUsize = AtomicUsize::new(0);
static INIT: Once = Once::new();

/// How often the watcher looks at groups whose leader exited (to reap their
/// zombies and notice they ended); idle, how often it reaps strays.
const POLL: Duration = Duration::from_millis(200);
const IDLE_POLL: Duration = Duration::from_secs(2);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn kill(pgid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names
    // a process group that, by the callers' contract, holds an unreaped member.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// SIGTERM, and SIGCONT so that a stopped member handles it too.
fn term(pgid: i32) {
    kill(pgid, libc::SIGTERM);
    kill(pgid, libc::SIGCONT);
}

/// Reaps the zombie children of ws2http in group `pgid`; `true` while live
/// children remain in it (the group is not over).
fn members_alive(pgid: i32) -> bool {
    loop {
        // SAFETY: waitid fills a siginfo_t we own; zeroed, si_pid stays 0
        // when no child has changed state.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::__WALL;
        // SAFETY: as above.
        let r = unsafe { libc::waitid(libc::P_PGID, pgid as libc::id_t, &mut info, flags) };
        if r != 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return false, // ECHILD: no child of ours left in the group
            }
        }
        // SAFETY: waitid filled (or left zeroed) the struct.
        if unsafe { info.si_pid() } == 0 {
            return true;
        }
    }
}

/// Once per process: makes ws2http the reaper of its scripts' orphans and
/// starts the watcher thread.
fn init() {
    INIT.call_once(|| {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            log::error!(
                "cannot adopt the orphans of scripts (PR_SET_CHILD_SUBREAPER: {}); \
                 background jobs may outlive their --timeout",
                io::Error::last_os_error()
            );
        }
        if let Err(e) = std::thread::Builder::new().name("ws2http-groups".into()).spawn(watch) {
            log::error!("cannot start the process group watcher ({e}); background jobs may outlive their --timeout");
        }
    });
}

/// Held across a spawn (see [`SPAWNING`]).
pub(crate) struct Spawning(());

impl Drop for Spawning {
    fn drop(&mut self) {
        SPAWNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Call before spawning a script; keep the guard until [`started`].
pub(crate) fn spawning() -> Spawning {
    init();
    SPAWNING.fetch_add(1, Ordering::SeqCst);
    Spawning(())
}

/// Records the group a script just started (its pid is the group id).
pub(crate) fn started(pid: i32, budget: Budget) {
    let mut reg = registry();
    let killed = reg.closed;
    if killed {
        kill(pid, libc::SIGKILL);
    }
    reg.groups.insert(pid, Group { budget, kill_at: None, killed, leader: true, label: String::new() });
}

/// Reaps the script `pid` if it has exited. Its group is then over when no
/// other process is left in it; otherwise the rest runs on its budget, and
/// the log calls it `label`.
pub(crate) fn reap(pid: i32, label: &str) -> io::Result<Option<ExitStatus>> {
    let mut reg = registry();
    let mut raw = 0;
    // SAFETY: waitpid writes one int through a valid pointer.
    let r = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) };
    if r == 0 {
        return Ok(None);
    }
    if r != pid {
        let e = io::Error::last_os_error();
        reg.groups.remove(&pid);
        return Err(e);
    }
    if members_alive(pid) {
        if let Some(g) = reg.groups.get_mut(&pid) {
            g.leader = false;
            g.label = label.to_owned();
            match g.kill_at {
                Some(_) => log::debug!("{}: the script ended; what it left gets SIGKILL when due", g.name(pid)),
                None => log::debug!("{}: the script exited; what it left runs until its budget ends", g.name(pid)),
            }
            WAKE.notify_one();
        }
    } else {
        reg.groups.remove(&pid);
    }
    Ok(Some(ExitStatus::from_raw(raw)))
}

/// Sends `sig` to group `pgid` if it is still one of ours and not over.
/// Returns the group, or `None` (then it is forgotten).
fn signal_locked(reg: &mut Registry, pgid: i32, sig: i32) -> Option<&mut Group> {
    let leader = reg.groups.get(&pgid)?.leader;
    if !leader && !members_alive(pgid) {
        reg.groups.remove(&pgid);
        return None;
    }
    if sig == libc::SIGTERM {
        term(pgid);
    } else {
        kill(pgid, sig);
    }
    reg.groups.get_mut(&pgid)
}

/// SIGKILL to group `pgid` at once (`--max-output`).
pub fn kill_now(pgid: i32) {
    if let Some(g) = signal_locked(&mut registry(), pgid, libc::SIGKILL) {
        g.killed = true;
    }
}

/// SIGTERM to group `pgid` now, SIGKILL after its grace period (the watcher
/// sends it, whether or not the script has exited by then).
pub fn terminate(pgid: i32) {
    let mut reg = registry();
    if reg.groups.get(&pgid).is_none_or(|g| g.kill_at.is_some()) {
        return;
    }
    if let Some(g) = signal_locked(&mut reg, pgid, libc::SIGTERM) {
        g.kill_at = Some(Instant::now() + g.budget.grace);
        WAKE.notify_one();
    }
}

/// Groups still running (their script, or processes it left).
pub fn count() -> usize {
    registry().groups.len()
}

/// Graceful shutdown: no new script runs; every group gets SIGTERM, and
/// SIGKILL after `grace`. Returns once all are gone (or a few seconds after
/// the SIGKILL at most, which no process survives), with how many groups
/// were still running.
pub async fn stop_all(grace: Duration) -> usize {
    let n = {
        let mut reg = registry();
        reg.closed = true;
        let pgids: Vec<i32> = reg.groups.keys().copied().collect();
        let kill_at = Instant::now() + grace;
        for pgid in pgids {
            if let Some(g) = signal_locked(&mut reg, pgid, libc::SIGTERM) {
                g.kill_at = Some(g.kill_at.map_or(kill_at, |k| k.min(kill_at)));
            }
        }
        WAKE.notify_one();
        reg.groups.len()
    };
    if n == 0 {
        return 0;
    }
    log::info!("stopping {n} process group(s) still running: SIGTERM, SIGKILL in {grace:?}");
    let limit = Instant::now() + grace + Duration::from_secs(3);
    while count() > 0 && Instant::now() < limit {
        runtime::sleep(Duration::from_millis(20)).await;
    }
    let left = count();
    if left > 0 {
        log::warn!("{left} process group(s) still not reaped after SIGKILL");
    }
    n
}

/// A second signal: SIGKILL to every group at once. Returns how many.
pub fn kill_all() -> usize {
    let mut reg = registry();
    reg.closed = true;
    let pgids: Vec<i32> = reg.groups.keys().copied().collect();
    let mut n = 0;
    for pgid in pgids {
        if let Some(g) = signal_locked(&mut reg, pgid, libc::SIGKILL) {
            g.killed = true;
            n += 1;
        }
    }
    n
}

/// The watcher: enforces the budget of groups whose script exited, sends
/// the SIGKILLs that are due, and reaps what ws2http adopted.
fn watch() {
    loop {
        let now = Instant::now();
        let due: Vec<i32> = {
            let reg = registry();
            reg.groups
                .iter()
                .filter(|(_, g)| !g.leader || g.kill_at.is_some_and(|k| k <= now))
                .map(|(p, _)| *p)
                .collect()
        };
        for pgid in due {
            step(pgid, now);
        }
        reap_strays();
        let reg = registry();
        let wait = next_wake(&reg, Instant::now());
        drop(WAKE.wait_timeout(reg, wait).unwrap_or_else(|e| e.into_inner()));
    }
}

/// One look at one group.
fn step(pgid: i32, now: Instant) {
    let mut reg = registry();
    let Some(g) = reg.groups.get(&pgid) else { return };
    if !g.leader && !members_alive(pgid) {
        log::debug!("{}: every process ended", g.name(pgid));
        reg.groups.remove(&pgid);
        return;
    }
    let Some(g) = reg.groups.get_mut(&pgid) else { return };
    match g.kill_at {
        Some(at) if at <= now && !g.killed => {
            // The limit that led here already logged its warning.
            log::info!(
                "{}: still running {:?} after SIGTERM; SIGKILL to the whole group",
                g.name(pgid),
                g.budget.grace
            );
            kill(pgid, libc::SIGKILL);
            g.killed = true;
        }
        Some(_) => {}
        None if !g.leader && g.budget.until <= now => {
            log::warn!(
                "{}: processes left by the script still run at the end of its budget (--timeout); \
                 SIGTERM to the group, SIGKILL in {:?}",
                g.name(pgid),
                g.budget.grace
            );
            term(pgid);
            g.kill_at = Some(now + g.budget.grace);
        }
        None => {}
    }
}

/// How long the watcher may sleep.
fn next_wake(reg: &Registry, now: Instant) -> Duration {
    let mut next = IDLE_POLL;
    for g in reg.groups.values() {
        let at = match g.kill_at {
            Some(_) if g.killed => None,
            Some(at) => Some(at),
            None if g.leader => None,
            None => Some(g.budget.until),
        };
        if let Some(at) = at {
            next = next.min(at.saturating_duration_since(now));
        }
        if !g.leader {
            next = next.min(POLL);
        }
    }
    next
}

/// Reaps zombie children that no task waits for: processes adopted from
/// scripts (members of a group, or jobs that left it with `setsid`). Stops
/// at a script whose task will reap it.
fn reap_strays() {
    loop {
        // SAFETY: waitid fills a siginfo_t we own.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT | libc::__WALL;
        // SAFETY: as above; WNOWAIT only looks.
        if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) } != 0 {
            return;
        }
        // SAFETY: filled by waitid (or zeroed).
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            return;
        }
        let reg = registry();
        if reg.groups.get(&pid).is_some_and(|g| g.leader) || SPAWNING.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut raw = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        if unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) } != pid {
            return;
        }
        drop(reg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgi::spawn::{spawn, EnvBlock};
    use crate::event::Target;

    fn tracked(pgid: i32) -> bool {
        registry().groups.contains_key(&pgid)
    }

    /// A script that exits at once, leaving a child that ignores SIGTERM:
    /// the group outlives the script until its budget ends, then the child
    /// is killed (SIGKILL after the grace), reaped, and the group forgotten.
    #[test]
    fn a_group_outlives_its_script_until_the_budget_then_is_killed_and_reaped() {
        let target = Target {
            filename: "/bin/sh".into(),
            script_name: String::new(),
            path_info: String::new(),
            // `sh -c CMD` gets the script path as $0.
            interpreter: Some(
                vec!["/bin/sh".to_owned(), "-c".to_owned(), "trap '' TERM; sleep 30 >/dev/null & echo $!".to_owned()]
                    .into(),
            ),
        };
        let mut env = EnvBlock::default();
        crate::cgi::env::EnvSink::set(&mut env, "PATH", "/usr/bin:/bin");
        runtime::block_on(async {
            use futures_lite::AsyncReadExt;
            let budget = Budget::from_now(Duration::from_millis(300), Duration::from_millis(200));
            let mut child = spawn(&target, &env, budget).expect("spawn sh");
            let pgid = child.id();
            let mut out = String::new();
            child.stdout.take().expect("stdout").read_to_string(&mut out).await.expect("read");
            let job: i32 = out.trim().parse().expect("the job's pid");
            assert!(child.status("test").await.expect("status").success());
            assert!(tracked(pgid), "the job keeps the group alive after the script exited");
            let deadline = Instant::now() + Duration::from_secs(10);
            while tracked(pgid) && Instant::now() < deadline {
                runtime::sleep(Duration::from_millis(20)).await;
            }
            assert!(!tracked(pgid), "the group is over once its budget and grace have passed");
            // SAFETY: signal 0 only checks whether the pid exists.
            let gone = unsafe { libc::kill(job, 0) } != 0;
            assert!(gone, "the job that ignored SIGTERM was killed and reaped");
        });
    }
}
