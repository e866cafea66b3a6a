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
//! the same. A job that leaves the group (`setsid`, or `setpgid`: a shell with
//! job control, `timeout(1)`) is not tracked.
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
//! - A caller names a group by a [`GroupId`]: its id *and* the token
//!   [`started`] gave it. A task that signals late (its script was reaped, the
//!   group ended, and a new script got the same pid) reaches nobody.
//!
//! The per-event cost is one map insert at the spawn and one removal plus
//! one `waitid` at the exit; no task and no timer. Everything else is done by
//! one watcher thread: it sends the SIGKILLs that are due, ends the budget of
//! groups whose script exited, kills a group whose script still runs a grace
//! period past its budget when nothing stopped it (a backstop: the event's
//! task normally does it first), and reaps what scripts left, so no zombie
//! accumulates. Its cost must not grow with the square of the load (with a
//! `sleep 3 &` per event, it once did: every exit woke it, and every wake-up
//! tested every group whose script had exited, each test a `waitid` that walks
//! all of ws2http's children). So it is woken only by a deadline earlier than
//! the one it sleeps until, and every [`POLL`] it reaps the zombies, testing a
//! group only when one of its processes died. Linux only (like pidfd in
//! [`super::child`]).

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

/// Names one group a script started: its id and the token [`started`] gave
/// it. Pids are reused, so a group id alone may, once its group is over,
/// name the group of a later script; a `GroupId` never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupId {
    pgid: i32,
    token: u64,
}

struct Group {
    /// Tells this group from an earlier one with the same id.
    token: u64,
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

    /// When the watcher must act on this group next (besides its regular
    /// looks for zombies and groups that ended): the SIGKILL after a SIGTERM, the end of
    /// the budget of what an exited script left, or, while the script runs,
    /// the backstop a grace period past the budget (by then its task should
    /// have sent SIGTERM at the budget's end and SIGKILL after the grace).
    fn deadline(&self) -> Option<Instant> {
        match self.kill_at {
            _ if self.killed => None,
            Some(at) => Some(at),
            None if self.leader => Some(self.budget.until.checked_add(self.budget.grace).unwrap_or(self.budget.until)),
            None => Some(self.budget.until),
        }
    }
}

struct Registry {
    groups: BTreeMap<i32, Group>,
    /// Shutting down: a group started from now on is killed at once.
    closed: bool,
    /// When the sleeping watcher wakes up; `None` while it is awake (it
    /// looks at the registry again before it sleeps).
    wake_at: Option<Instant>,
    /// The last token given to a group.
    tokens: u64,
}

impl Registry {
    /// Wakes the watcher if `at` is earlier than the time it sleeps until.
    fn wake_by(&mut self, at: Instant) {
        if self.wake_at.is_some_and(|w| at < w) {
            self.wake_at = None;
            #[cfg(test)]
            tests::NOTIFIED.fetch_add(1, Ordering::SeqCst);
            WAKE.notify_one();
        }
    }

    /// The group `id` names, if it is still registered.
    fn get_mut(&mut self, id: GroupId) -> Option<&mut Group> {
        self.groups.get_mut(&id.pgid).filter(|g| g.token == id.token)
    }
}

static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { groups: BTreeMap::new(), closed: false, wake_at: None, tokens: 0 });
/// Wakes the watcher when a deadline earlier than its own is set.
static WAKE: Condvar = Condvar::new();
/// Spawns between `posix_spawn` and [`started`]: a zombie child that is in no
/// group yet may be a script whose task will reap it.
static SPAWNING: AtomicUsize = AtomicUsize::new(0);
static INIT: Once = Once::new();

/// How often the watcher reaps zombies (and so notices the groups that
/// ended) while a script has left processes; idle, how often it reaps strays.
const POLL: Duration = Duration::from_millis(200);
const IDLE_POLL: Duration = Duration::from_secs(2);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A log line formatted under the registry lock and written after it is
/// released: a slow or blocked stderr must not hold up every spawn and exit.
struct Note(log::Level, String);

impl Note {
    /// `text()` is only called when the level is logged.
    fn new(level: log::Level, text: impl FnOnce() -> String) -> Option<Note> {
        log::log_enabled!(level).then(|| Note(level, text()))
    }

    fn write(note: Option<Note>) {
        if let Some(Note(level, text)) = note {
            log::log!(level, "{text}");
        }
    }
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
/// children remain in it (the group is not over). Never call it while the
/// group's leader is unreaped: it would take the script's exit status from
/// its task.
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
pub(crate) fn started(pid: i32, budget: Budget) -> GroupId {
    let mut reg = registry();
    reg.tokens += 1;
    let token = reg.tokens;
    let killed = reg.closed;
    if killed {
        kill(pid, libc::SIGKILL);
    }
    let group = Group { token, budget, kill_at: None, killed, leader: true, label: String::new() };
    if let Some(at) = group.deadline() {
        reg.wake_by(at);
    }
    reg.groups.insert(pid, group);
    GroupId { pgid: pid, token }
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
    let mut note = None;
    if !members_alive(pid) {
        reg.groups.remove(&pid);
    } else if let Some(g) = reg.groups.get_mut(&pid) {
        g.leader = false;
        g.label = label.to_owned();
        note = Note::new(log::Level::Debug, || match g.kill_at {
            Some(_) => format!("{}: the script ended; what it left gets SIGKILL when due", g.name(pid)),
            None => format!("{}: the script exited; what it left runs until its budget ends", g.name(pid)),
        });
        // The watcher looks at it within POLL (it already does if other
        // scripts left processes: then this wakes nobody).
        let look = Instant::now() + POLL;
        let at = g.deadline().map_or(look, |d| d.min(look));
        reg.wake_by(at);
    }
    drop(reg);
    Note::write(note);
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

/// SIGKILL to the group at once (`--max-output`), if it is still running;
/// `false` if it was over.
pub fn kill_now(id: GroupId) -> bool {
    let mut reg = registry();
    if reg.get_mut(id).is_none() {
        return false;
    }
    match signal_locked(&mut reg, id.pgid, libc::SIGKILL) {
        Some(g) => {
            g.killed = true;
            true
        }
        None => false,
    }
}

/// SIGINT to the group now, if it is still running (the first step that
/// ends a per-connection process; nothing is scheduled); `false` if it was
/// over (or already killed).
pub fn interrupt(id: GroupId) -> bool {
    signal_now(id, libc::SIGINT)
}

/// SIGTERM to the group now, if it is still running, and nothing scheduled:
/// the per-connection escalation keeps its own timer for the SIGKILL.
/// `false` if it was over (or already killed).
pub fn term_now(id: GroupId) -> bool {
    signal_now(id, libc::SIGTERM)
}

fn signal_now(id: GroupId, sig: i32) -> bool {
    let mut reg = registry();
    if reg.get_mut(id).is_none_or(|g| g.killed) {
        return false;
    }
    signal_locked(&mut reg, id.pgid, sig).is_some()
}

/// SIGTERM to the group now, SIGKILL after its grace period (the watcher
/// sends it, whether or not the script has exited by then). Nothing if the
/// group is over, or already stopping.
pub fn terminate(id: GroupId) {
    let mut reg = registry();
    if reg.get_mut(id).is_none_or(|g| g.kill_at.is_some() || g.killed) {
        return;
    }
    if let Some(g) = signal_locked(&mut reg, id.pgid, libc::SIGTERM) {
        let at = Instant::now() + g.budget.grace;
        g.kill_at = Some(at);
        reg.wake_by(at);
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
        reg.wake_by(kill_at);
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

/// What the watcher does on one wake-up.
struct Round {
    /// Groups whose deadline has passed.
    due: Vec<i32>,
    /// Time to reap zombies: what scripts left, and strays.
    look: bool,
    /// Else how long to sleep.
    wait: Duration,
}

impl Round {
    fn plan(reg: &Registry, now: Instant, last_look: Instant) -> Round {
        let exited = reg.groups.values().any(|g| !g.leader);
        let next_look = last_look + if exited { POLL } else { IDLE_POLL };
        let due = reg.groups.iter().filter(|(_, g)| g.deadline().is_some_and(|d| d <= now)).map(|(p, _)| *p).collect();
        let next = reg.groups.values().filter_map(Group::deadline).fold(next_look, Instant::min);
        Round { due, look: next_look <= now, wait: next.saturating_duration_since(now) }
    }
}

/// The watcher: enforces the budget of every group, sends the SIGKILLs that
/// are due, and reaps what ws2http adopted.
fn watch() {
    let mut last_look = Instant::now();
    let mut reg = registry();
    loop {
        let now = Instant::now();
        let round = Round::plan(&reg, now, last_look);
        if round.due.is_empty() && !round.look {
            reg.wake_at = Some(now + round.wait);
            reg = WAKE.wait_timeout(reg, round.wait).unwrap_or_else(|e| e.into_inner()).0;
            reg.wake_at = None;
            continue;
        }
        drop(reg);
        for pgid in round.due {
            step(pgid, now);
        }
        if round.look {
            last_look = now;
            reap_zombies();
            forget_empty();
        }
        reg = registry();
    }
}

/// Forgets the groups whose script exited and that have no process left,
/// not even a zombie: their processes left the group (`setsid`, `setpgid`)
/// or died as the children of a process outside it. With the leader reaped,
/// `kill(-pgid, 0)` tells exactly that, sends nothing, and costs no walk
/// through ws2http's children.
fn forget_empty() {
    let exited: Vec<i32> = registry().groups.iter().filter(|(_, g)| !g.leader).map(|(p, _)| *p).collect();
    for pgid in exited {
        let mut reg = registry();
        let Some(g) = reg.groups.get(&pgid).filter(|g| !g.leader) else { continue };
        // SAFETY: kill(2) with signal 0 only checks that the group exists.
        let empty =
            unsafe { libc::kill(-pgid, 0) } != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if empty {
            let note = Note::new(log::Level::Debug, || format!("{}: every process ended or left", g.name(pgid)));
            reg.groups.remove(&pgid);
            drop(reg);
            Note::write(note);
        }
    }
}

/// What a group whose deadline passed gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Due {
    /// SIGKILL, a grace period after SIGTERM.
    Kill,
    /// SIGKILL: the script still runs a grace period past its budget, and
    /// nothing sent it SIGTERM.
    Backstop,
    /// SIGTERM: what the script left still runs at the end of its budget.
    End,
}

impl Due {
    fn of(g: &Group, now: Instant) -> Option<Due> {
        g.deadline().filter(|&d| d <= now)?;
        Some(match (g.kill_at, g.leader) {
            (Some(_), _) => Due::Kill,
            (None, true) => Due::Backstop,
            (None, false) => Due::End,
        })
    }

    fn note(self, g: &Group, pgid: i32) -> Option<Note> {
        let (name, grace) = (|| g.name(pgid), g.budget.grace);
        match self {
            // The limit that led here already logged its warning.
            Due::Kill => Note::new(log::Level::Info, || {
                format!("{}: still running {grace:?} after SIGTERM; SIGKILL to the whole group", name())
            }),
            Due::Backstop => Note::new(log::Level::Warn, || {
                format!(
                    "{}: the script still runs {grace:?} past the end of its budget (--timeout) and nothing \
                     stopped it; SIGKILL to the whole group",
                    name()
                )
            }),
            Due::End => Note::new(log::Level::Warn, || {
                format!(
                    "{}: processes left by the script still run at the end of its budget (--timeout); \
                     SIGTERM to the group, SIGKILL in {grace:?}",
                    name()
                )
            }),
        }
    }
}

/// One look at one group: is it over, and is one of its deadlines due? The
/// line that says what is done is logged first (outside the lock), then it
/// is done, if the group is still as it was: the log tells why a script's
/// output ended before the event's own line does.
fn step(pgid: i32, now: Instant) {
    let mut reg = registry();
    let Some(g) = reg.groups.get(&pgid) else { return };
    if !g.leader && !members_alive(pgid) {
        let note = Note::new(log::Level::Debug, || format!("{}: every process ended", g.name(pgid)));
        reg.groups.remove(&pgid);
        drop(reg);
        return Note::write(note);
    }
    let Some(due) = Due::of(g, now) else { return };
    let (id, note) = (GroupId { pgid, token: g.token }, due.note(g, pgid));
    drop(reg);
    Note::write(note);
    let mut reg = registry();
    if reg.get_mut(id).is_none_or(|g| Due::of(g, now) != Some(due)) {
        return; // it changed meanwhile: the next round sees it as it is now
    }
    let sig = if due == Due::End { libc::SIGTERM } else { libc::SIGKILL };
    if let Some(g) = signal_locked(&mut reg, pgid, sig) {
        match due {
            Due::End => g.kill_at = Some(now + g.budget.grace),
            Due::Kill | Due::Backstop => g.killed = true,
        }
    }
}

/// Reaps the zombie children that no task waits for: what scripts left
/// (in their group, or in one of its own after `setsid`/`setpgid`). A zombie
/// of a group whose script exited is reaped with the rest of its group, and
/// the group is forgotten if that was its last process; so a group whose
/// processes die is seen to end here, with one exact test (`waitid(P_PGID)`)
/// each time one of its processes dies, instead of a test of every group at
/// every look. ([`forget_empty`] sees the groups that end otherwise.)
///
/// It stops at a zombie that may be a script (its task reaps it): one that
/// leads a registered group, or one that leads a group of its own while a
/// spawn is between `posix_spawn` and [`started`]. `waitid(P_ALL, WNOWAIT)`
/// always shows the first zombie, so there is no skipping it. That is benign:
/// a script is a zombie only until its task, woken by its pidfd, reaps it (a
/// moment), and the zombies behind it are reaped by the next look, POLL
/// later (or IDLE_POLL when no script left anything).
fn reap_zombies() {
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
        let mut reg = registry();
        // SAFETY: getpgid takes a pid; a zombie still has its group.
        let pgid = unsafe { libc::getpgid(pid) };
        let maybe_script = pgid == pid && SPAWNING.load(Ordering::SeqCst) > 0;
        if pgid < 0 || maybe_script || reg.groups.get(&pid).is_some_and(|g| g.leader) {
            return;
        }
        if reg.groups.get(&pgid).is_some_and(|g| !g.leader) {
            if members_alive(pgid) {
                continue;
            }
            let note = reg
                .groups
                .remove(&pgid)
                .and_then(|g| Note::new(log::Level::Debug, || format!("{}: every process ended", g.name(pgid))));
            drop(reg);
            Note::write(note);
            continue;
        }
        let mut raw = 0;
        // SAFETY: waitpid writes one int through a valid pointer.
        if unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) } != pid {
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::spawn::child::{spawn, Child, EnvBlock};
    use crate::event::Target;

    /// How many times the watcher was woken before its time.
    pub(super) static NOTIFIED: AtomicUsize = AtomicUsize::new(0);
    /// The tests below count wake-ups and install a logger: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    pub(crate) fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn tracked(pgid: i32) -> bool {
        registry().groups.contains_key(&pgid)
    }

    /// Runs `sh -c CMD` as a script with a budget of `timeout`, grace `grace`.
    fn sh(cmd: &str, timeout: Duration, grace: Duration) -> Child {
        let target = Target {
            filename: "/bin/sh".into(),
            script_name: String::new(),
            path_info: String::new(),
            // `sh -c CMD` gets the script path as $0.
            interpreter: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), cmd.to_owned()].into()),
        };
        let mut env = EnvBlock::default();
        crate::backend::env::EnvSink::set(&mut env, "PATH", "/usr/bin:/bin");
        spawn(&target, &env, Budget::from_now(timeout, grace)).expect("spawn sh")
    }

    async fn until_untracked(pgid: i32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tracked(pgid) && Instant::now() < deadline {
            runtime::sleep(Duration::from_millis(20)).await;
        }
    }

    fn gone(pid: i32) -> bool {
        // SAFETY: signal 0 only checks whether the pid exists.
        unsafe { libc::kill(pid, 0) != 0 }
    }

    /// Fails when a record of this module is written while the registry
    /// lock is held: another thread must be able to take it meanwhile.
    struct LockChecker;

    static LOGGED_UNDER_LOCK: AtomicUsize = AtomicUsize::new(0);
    static LOGGED: AtomicUsize = AtomicUsize::new(0);

    impl log::Log for LockChecker {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }

        fn log(&self, record: &log::Record) {
            if !record.target().starts_with(module_path!().trim_end_matches("::tests")) {
                return;
            }
            LOGGED.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || tx.send(count()));
            if rx.recv_timeout(Duration::from_secs(5)).is_err() {
                LOGGED_UNDER_LOCK.fetch_add(1, Ordering::SeqCst);
            }
        }

        fn flush(&self) {}
    }

    /// A script that exits at once, leaving a child that ignores SIGTERM:
    /// the group outlives the script until its budget ends, then the child
    /// is killed (SIGKILL after the grace), reaped, and the group forgotten.
    /// Every log line on the way is written outside the registry lock.
    #[test]
    fn a_group_outlives_its_script_until_the_budget_then_is_killed_and_reaped() {
        let _serial = serial();
        static LOGGER: LockChecker = LockChecker;
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
        let logged = LOGGED.load(Ordering::SeqCst);
        runtime::block_on(async {
            use futures_lite::AsyncReadExt;
            let (timeout, grace) = (Duration::from_millis(300), Duration::from_millis(200));
            let mut child = sh("trap '' TERM; sleep 30 >/dev/null & echo $!", timeout, grace);
            let pgid = child.id();
            let mut out = String::new();
            child.stdout.take().expect("stdout").read_to_string(&mut out).await.expect("read");
            let job: i32 = out.trim().parse().expect("the job's pid");
            assert!(child.status("test").await.expect("status").success());
            assert!(tracked(pgid), "the job keeps the group alive after the script exited");
            until_untracked(pgid).await;
            let under_lock = LOGGED_UNDER_LOCK.load(Ordering::SeqCst);
            assert_eq!(under_lock, 0, "log lines written under the registry lock (each held it 5 s)");
            assert!(!tracked(pgid), "the group is over once its budget and grace have passed");
            assert!(gone(job), "the job that ignored SIGTERM was killed and reaped");
        });
        // The script exited, the budget ended, SIGKILL, every process ended.
        assert!(LOGGED.load(Ordering::SeqCst) - logged >= 4, "the lines were logged");
    }

    /// A group whose last process leaves it without dying (`setsid`) is
    /// forgotten within a look, long before its budget ends; the job that
    /// left is not signalled, and is reaped as a stray once it ends.
    #[test]
    fn a_group_whose_processes_left_it_is_forgotten() {
        let _serial = serial();
        runtime::block_on(async {
            use futures_lite::AsyncReadExt;
            let cmd = "sh -c 'sleep 0.3; exec setsid sleep 30' </dev/null >/dev/null 2>&1 & echo $!";
            let mut child = sh(cmd, Duration::from_secs(30), Duration::from_secs(2));
            let pgid = child.id();
            let mut out = String::new();
            child.stdout.take().expect("stdout").read_to_string(&mut out).await.expect("read");
            let job: i32 = out.trim().parse().expect("the job's pid");
            assert!(child.status("test").await.expect("status").success());
            until_untracked(pgid).await;
            assert!(!tracked(pgid), "the empty group is forgotten before its budget ends");
            assert!(!gone(job), "the job that left the group was not signalled");
            // SAFETY: our own job, which left the group.
            unsafe { libc::kill(job, libc::SIGKILL) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while !gone(job) && Instant::now() < deadline {
                runtime::sleep(Duration::from_millis(20)).await;
            }
            assert!(gone(job), "the stray was reaped");
        });
    }

    /// A script whose task is gone (a spawn error after the process started,
    /// a dropped `Child`) is still stopped: the watcher kills its group a
    /// grace period past its budget, and the orphaned reaper reaps it.
    #[test]
    fn a_script_nobody_stops_is_killed_a_grace_period_past_its_budget() {
        let _serial = serial();
        let child = sh("exec sleep 30", Duration::from_millis(300), Duration::from_millis(200));
        let pid = child.id();
        runtime::block_on(async {
            drop(child);
            until_untracked(pid).await;
        });
        assert!(!tracked(pid), "the group is over a grace period after its budget");
        assert!(gone(pid), "the script was killed and reaped");
    }

    /// A task that signals its group after the group ended must not reach a
    /// later group with the same id (a new script that reused the pid).
    #[test]
    fn a_stale_group_id_reaches_nobody() {
        let _serial = serial();
        runtime::block_on(async {
            let mut child = sh("exec sleep 30", Duration::from_secs(30), Duration::from_secs(2));
            let stale = child.group();
            // As if this group had ended and a new script had got its pid.
            let budget = Budget::from_now(Duration::from_secs(30), Duration::from_secs(2));
            registry().groups.remove(&stale.pgid);
            let new = started(stale.pgid, budget);
            assert_ne!(new, stale);
            kill_now(stale);
            terminate(stale);
            let untouched = registry().groups.get(&new.pgid).is_some_and(|g| g.kill_at.is_none() && !g.killed);
            assert!(untouched, "a stale id changed the new group");
            terminate(new);
            let status = child.status("test").await.expect("status");
            assert_eq!(status.signal(), Some(libc::SIGTERM), "stopped by its own SIGTERM, not a stale SIGKILL");
        });
    }

    /// Scripts that exit leaving processes behind wake the watcher once at
    /// most (it then looks at all of them every POLL), not once each.
    #[test]
    fn scripts_that_leave_jobs_do_not_wake_the_watcher_each() {
        let _serial = serial();
        runtime::block_on(async {
            let before = NOTIFIED.load(Ordering::SeqCst);
            let mut left = Vec::new();
            for _ in 0..10 {
                let mut child =
                    sh("sleep 30 </dev/null >/dev/null 2>&1 &", Duration::from_secs(30), Duration::from_secs(2));
                assert!(child.status("test").await.expect("status").success());
                assert!(tracked(child.id()), "the job keeps its group");
                left.push(child.group());
            }
            let wakes = NOTIFIED.load(Ordering::SeqCst) - before;
            for g in &left {
                terminate(*g);
            }
            for g in &left {
                until_untracked(g.pgid).await;
                assert!(!tracked(g.pgid), "the job was stopped");
            }
            assert!(wakes <= 1, "10 scripts that left a job woke the watcher {wakes} times");
        });
    }
}
