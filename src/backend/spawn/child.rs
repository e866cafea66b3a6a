//! Starts one script process and waits for it, with as little as possible
//! between the event and the `exec`.
//!
//! Why not `std::process::Command` + `async-process`: the benchmarks
//! (docs/BENCHMARKS.md, workload 1) showed ws2http spending ~0.3 ms per event
//! on top of the spawn itself, mostly in hand-offs between threads: the
//! async-process reaper thread reaps every child, and each event needed two
//! more tasks (stdin writer, stderr reader). Here a child is started with
//! `posix_spawn` (glibc: `clone(CLONE_VM|CLONE_VFORK)` + `exec`, the same
//! path std takes) from an environment block built in one buffer, and waited
//! for through a pidfd: in a worker's blocking `ppoll` for events
//! ([`spawn_fds`], [`super::worker`]), on the reactor for pages ([`spawn`]).
//! No reaper thread, no SIGCHLD handler. A payload that fits the pipe is
//! written at once.
//!
//! The child gets: stdin/stdout/stderr pipes, exactly the given environment,
//! the script's directory as its working directory, a process group of its
//! own (so a timeout can stop its children too; [`super::groups`] keeps
//! account of every group until its last process is gone), an empty signal
//! mask and SIGPIPE back at its default (Rust ignores it in the server).

use std::fs::File;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::runtime::Async;
use bytes::Bytes;
use futures_lite::AsyncWriteExt;

use super::groups::{self, Budget, GroupId};
use crate::backend::env::EnvSink;
use crate::event::Target;
use crate::runtime;
use crate::stackbuf::StackVec;

/// One end of a pipe to or from the child, registered with the reactor.
pub type Pipe = Async<File>;

/// A started script. Dropping it without waiting leaves a background task
/// that reaps it when it ends: no zombies. Reaping goes through
/// [`groups::reap`], which also decides what becomes of the processes the
/// script leaves in its group.
pub struct Child {
    pid: i32,
    group: GroupId,
    /// `None` on kernels without pidfd (before 5.3): waiting polls instead.
    pidfd: Option<Async<OwnedFd>>,
    status: Option<ExitStatus>,
    /// Without a pidfd: the pause before [`Child::poll_status`] looks again.
    nap: Option<runtime::Timer>,
    /// Raw and blocking-free until used: most payloads are written in one go.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<Pipe>,
    pub stderr: Option<Pipe>,
}

impl Child {
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// The script's process group, to signal it through [`groups`].
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The exit status, if the child has ended (reaps it). `label` names the
    /// run in the log if processes it started outlive it.
    pub fn try_status(&mut self, label: &str) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        self.status = groups::reap(self.pid, label)?;
        Ok(self.status)
    }

    /// Waits until the child ends. Cancel-safe: may be called again.
    pub async fn status(&mut self, label: &str) -> io::Result<ExitStatus> {
        let mut nap = Duration::from_millis(1);
        loop {
            if let Some(s) = self.try_status(label)? {
                return Ok(s);
            }
            match &self.pidfd {
                Some(fd) => fd.readable().await?,
                None => {
                    runtime::sleep(nap).await;
                    nap = (nap * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
}

impl Child {
    /// As [`Child::status`], polled, for a future that waits for many
    /// things at once and for a long time (a per-connection process): the
    /// pidfd's waker stays registered between polls, so a poll before the
    /// exit costs neither a system call nor an allocation.
    pub fn poll_status(&mut self, cx: &mut Context<'_>, label: &str) -> Poll<io::Result<ExitStatus>> {
        loop {
            if let Some(s) = self.status {
                return Poll::Ready(Ok(s));
            }
            match &self.pidfd {
                Some(fd) => ready!(fd.poll_readable(cx))?,
                None => {
                    let nap = self.nap.get_or_insert_with(|| runtime::Timer::after(Duration::from_millis(20)));
                    ready!(Pin::new(nap).poll(cx));
                    self.nap = None;
                }
            }
            if let Some(s) = self.try_status(label)? {
                return Poll::Ready(Ok(s));
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.try_status("") {
            let (pid, group, pidfd) = (self.pid, self.group, self.pidfd.take());
            runtime::spawn(async move {
                let mut rest =
                    Child { pid, group, pidfd, status: None, nap: None, stdin: None, stdout: None, stderr: None };
                let _ = rest.status("").await;
            });
        }
    }
}

/// A script's environment as `execve` wants it: `KEY=VALUE\0` entries in
/// one buffer, filled variable by variable (see [`EnvSink`]), no `String`
/// per variable. Entries that cannot be passed (a NUL byte, `=` in a name)
/// are left out.
#[derive(Default)]
pub struct EnvBlock {
    buf: Vec<u8>,
    starts: Vec<usize>,
    /// Whose variables the block starts with ([`Self::reused_for`]).
    prefix: Option<Prefix>,
}

/// The start of a kept block: one connection's variables (the same for
/// every event of that connection: its request, its script), so that the
/// connection's next event on this thread appends only its own
/// (docs/bench-notes/cpu21.md: a third of an event's instructions went into
/// building those again).
struct Prefix {
    /// Held weakly: the connection's allocation (not its contents) stays
    /// while the block is kept, so no other connection can have its address.
    conn: std::sync::Weak<crate::event::ConnInfo>,
    /// What else the variables depend on ([`Self::reused_for`]'s `tag`).
    tag: u64,
    bytes: usize,
    vars: usize,
}

/// The size of the block a thread keeps for its next event
/// ([`EnvBlock::recycle`]): what `Spawn::exchange` asks for. A block is
/// made at this size once and kept only while it never grew, so a kept
/// block is never reallocated among the connections' objects (the
/// fragmentation in docs/bench-notes/alloc19.md, cpu20.md).
pub const SPARE_BYTES: usize = 4096;
pub const SPARE_VARS: usize = 48;

thread_local! {
    /// An event's environment block given back after its spawn, for the
    /// next event run on this thread (a follower: the event and its spawn
    /// run on the same thread).
    static SPARE_ENV: std::cell::Cell<EnvBlock> = const { std::cell::Cell::new(EnvBlock { buf: Vec::new(), starts: Vec::new(), prefix: None }) };
}

impl EnvBlock {
    pub fn with_capacity(bytes: usize, vars: usize) -> Self {
        EnvBlock { buf: Vec::with_capacity(bytes), starts: Vec::with_capacity(vars), prefix: None }
    }

    /// The block this thread gave back last ([`Self::recycle`]), still
    /// holding the variables of `conn` when it starts with them, made with
    /// the same `tag` (the settings and method they were made with: the
    /// caller names them); `true` then, and only the event's own variables
    /// are to be added. Otherwise an empty block of the kept size: no
    /// allocation per event on a follower.
    pub fn reused_for(conn: &Arc<crate::event::ConnInfo>, tag: u64) -> (Self, bool) {
        let Some(mut block) = Self::kept() else { return (EnvBlock::with_capacity(SPARE_BYTES, SPARE_VARS), false) };
        match block.prefix.take() {
            Some(p)
                if p.tag == tag && std::ptr::eq(p.conn.as_ptr(), Arc::as_ptr(conn)) && p.bytes <= block.buf.len() =>
            {
                block.buf.truncate(p.bytes);
                block.starts.truncate(p.vars);
                block.prefix = Some(p);
                (block, true)
            }
            _ => {
                block.clear();
                (block, false)
            }
        }
    }

    /// What the block holds now are `conn`'s variables made with `tag`
    /// ([`Self::reused_for`]).
    pub fn mark_prefix(&mut self, conn: &Arc<crate::event::ConnInfo>, tag: u64) {
        let conn = Arc::downgrade(conn);
        self.prefix = Some(Prefix { conn, tag, bytes: self.buf.len(), vars: self.starts.len() });
    }

    /// The variables, `KEY=VALUE` each, in order.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<String> {
        let mut ends = self.starts.iter().skip(1).copied().chain([self.buf.len()]);
        self.starts
            .iter()
            .map(|&s| String::from_utf8_lossy(&self.buf[s..ends.next().unwrap_or(s) - 1]).into_owned())
            .collect()
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.starts.clear();
        self.prefix = None;
    }

    /// An empty block of the kept size, the one this thread gave back if any.
    #[cfg(test)]
    fn reused() -> Self {
        match Self::kept() {
            Some(mut block) => {
                block.clear();
                block
            }
            None => EnvBlock::with_capacity(SPARE_BYTES, SPARE_VARS),
        }
    }

    /// The block this thread gave back, as it was (only a block of the
    /// kept size is kept: [`Self::recycle`]).
    fn kept() -> Option<Self> {
        let block = SPARE_ENV.take();
        (block.buf.capacity() == SPARE_BYTES).then_some(block)
    }

    /// Keeps this block for this thread's next [`Self::reused_for`] if it has
    /// the kept size ([`SPARE_BYTES`]) and never grew; otherwise frees it.
    pub fn recycle(self) {
        if self.buf.capacity() == SPARE_BYTES && self.starts.capacity() == SPARE_VARS {
            SPARE_ENV.set(self);
        }
    }

    /// The `envp` array, null-terminated, appended to `ptrs`; valid while
    /// `self` is neither changed nor dropped.
    fn pointers_into<const N: usize>(&self, ptrs: &mut StackVec<*mut libc::c_char, N>) {
        for &s in &self.starts {
            ptrs.push(self.buf[s..].as_ptr().cast_mut().cast::<libc::c_char>());
        }
        ptrs.push(std::ptr::null_mut());
    }
}

/// A spawn's C strings and its `argv` + `envp` array, on the stack of
/// [`spawn_argv`] (a long path or a big environment takes the heap for that
/// spawn only): three allocations per event less, no buffer kept per
/// thread (docs/bench-notes/cpu20.md). Never moved while its pointers are used.
struct Scratch {
    strings: CStrings,
    ptrs: StackVec<*mut libc::c_char, 64>,
}

/// The C strings of one spawn (its argv entries, the program, the
/// directory) in one buffer.
struct CStrings {
    buf: StackVec<u8, 256>,
    starts: StackVec<usize, 8>,
}

impl CStrings {
    /// Adds `bytes` as a C string; its index. An error names `what`
    /// cannot be passed to a program (a NUL byte in it).
    fn push(&mut self, bytes: &[u8], what: &str) -> io::Result<usize> {
        if bytes.contains(&0) {
            return Err(io::Error::new(ErrorKind::InvalidInput, format!("{what} contains a NUL byte")));
        }
        self.starts.push(self.buf.len());
        self.buf.extend_from_slice(bytes);
        self.buf.push(0);
        Ok(self.starts.len() - 1)
    }

    /// String `i`; valid while `self` is neither changed, moved nor dropped.
    fn ptr(&self, i: usize) -> *mut libc::c_char {
        self.buf.as_slice()[self.starts.as_slice()[i]..].as_ptr().cast_mut().cast()
    }
}

impl EnvSink for EnvBlock {
    fn set(&mut self, key: &str, value: &str) {
        // Bytes, not `contains([..])` over chars: this runs ~30 times per
        // event. The key 8 bytes at a time ([`nul_or_equals`]), the value
        // through memchr (`[u8]::contains`).
        if nul_or_equals(key.as_bytes()) || value.as_bytes().contains(&0) {
            return;
        }
        self.starts.push(self.buf.len());
        // Room once, then copies: each `push` checked the capacity again.
        self.buf.reserve(key.len() + value.len() + 2);
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"=");
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.extend_from_slice(b"\0");
    }
}

/// `true` if `bytes` has a NUL or an `=`: 8 bytes per step (a zero byte in
/// the word, or in the word xor `=`s), ~5 instructions per byte less than
/// a byte loop over an event's ~30 keys (docs/bench-notes/cpu21.md).
fn nul_or_equals(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const EQUALS: u64 = u64::from_ne_bytes([b'='; 8]);
    // Exact for "any byte is zero" (which byte may be misreported: unused).
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_ne_bytes([word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7]]);
        if zero_byte(x) || zero_byte(x ^ EQUALS) {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b == 0 || b == b'=')
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array; we own them after.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Checks a posix_spawn* return value (an errno, not -1).
fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// File actions and attributes, destroyed whatever happens.
struct SpawnSetup {
    actions: libc::posix_spawn_file_actions_t,
    attr: libc::posix_spawnattr_t,
}

impl SpawnSetup {
    fn new() -> io::Result<Self> {
        let mut actions = std::mem::MaybeUninit::uninit();
        let mut attr = std::mem::MaybeUninit::uninit();
        // SAFETY: the init calls fill in the structs; each is used only once
        // initialised, and the first is destroyed if the second fails. Both
        // are plain C data (glibc keeps the actions on the heap): they may move.
        unsafe {
            check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
            let mut actions = actions.assume_init();
            if let Err(e) = check(libc::posix_spawnattr_init(attr.as_mut_ptr())) {
                libc::posix_spawn_file_actions_destroy(&mut actions);
                return Err(e);
            }
            Ok(SpawnSetup { actions, attr: attr.assume_init() })
        }
    }
}

impl Drop for SpawnSetup {
    fn drop(&mut self) {
        // SAFETY: both were initialised by `new`.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
            libc::posix_spawnattr_destroy(&mut self.attr);
        }
    }
}

/// A process just started, with the parent's ends of its pipes (blocking,
/// close-on-exec), not yet tied to a reactor: the worker threads read them
/// with blocking calls ([`super::worker`]), [`spawn`] makes them async.
pub struct Spawned {
    pub pid: i32,
    pub group: GroupId,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Starts `target` (through its interpreter when it has one) with exactly
/// `env`, in the script's directory, with piped stdio, for the reactor.
/// Its process group lives within `budget` (see [`groups`]).
pub fn spawn(target: &Target, env: &EnvBlock, budget: Budget) -> io::Result<Child> {
    spawn_with_args(target, &Launch::PLAIN, env, budget)
}

/// How a script is started beyond its path: the arguments after it (the
/// single script's `COMMAND ARGS...`), and under websocketd's command line
/// its argv[0] as typed (`sh`, not `/usr/bin/dash`: multi-call programs
/// choose by it) and the server's working directory (websocketd's, so
/// `websocketd python3 ./chat.py` finds `./chat.py`) instead of the
/// script's.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub args: Vec<String>,
    pub argv0: Option<String>,
    pub keep_cwd: bool,
}

impl Launch {
    /// The script alone, in its own directory.
    pub const PLAIN: Launch = Launch { args: Vec::new(), argv0: None, keep_cwd: false };
}

/// [`spawn`], with `args` after the script on its command line.
pub fn spawn_with_args(target: &Target, launch: &Launch, env: &EnvBlock, budget: Budget) -> io::Result<Child> {
    let Spawned { pid, group, stdin, stdout, stderr } = spawn_argv(target, launch, env, budget)?;
    let pidfd = pidfd_open(pid).and_then(|fd| Async::new(fd).ok());
    let mut child =
        Child { pid, group, pidfd, status: None, nap: None, stdin: Some(stdin), stdout: None, stderr: None };
    match (Async::new(File::from(stdout)), Async::new(File::from(stderr))) {
        (Ok(out), Ok(err)) => {
            child.stdout = Some(out);
            child.stderr = Some(err);
            Ok(child)
        }
        (Err(e), _) | (_, Err(e)) => {
            // The script runs, but nobody can read it (the pipes could not
            // join the reactor): stop its group now. Dropping `child` reaps it.
            groups::kill_now(group);
            Err(e)
        }
    }
}

/// Starts `target` as [`spawn`] does; the pipes stay plain descriptors.
pub fn spawn_fds(target: &Target, env: &EnvBlock, budget: Budget) -> io::Result<Spawned> {
    spawn_argv(target, &Launch::PLAIN, env, budget)
}

/// [`spawn_fds`], started as `launch` says.
pub fn spawn_argv(target: &Target, launch: &Launch, env: &EnvBlock, budget: Budget) -> io::Result<Spawned> {
    let mut scratch =
        Scratch { strings: CStrings { buf: StackVec::new(), starts: StackVec::new() }, ptrs: StackVec::new() };
    spawn_with(target, launch, env, budget, &mut scratch)
}

/// [`spawn_argv`], with `scratch`'s buffers (empty) for the C strings.
fn spawn_with(
    target: &Target,
    launch: &Launch,
    env: &EnvBlock,
    budget: Budget,
    scratch: &mut Scratch,
) -> io::Result<Spawned> {
    let script = target.filename.as_os_str().as_bytes();
    let Scratch { strings, ptrs } = scratch;
    if let Some(interp) = &target.interpreter {
        for a in interp.iter() {
            strings.push(a.as_bytes(), "the handler command")?;
        }
    }
    strings.push(script, "the script path")?;
    for a in &launch.args {
        strings.push(a.as_bytes(), "a script argument")?;
    }
    let argc = strings.starts.len();
    // The program run is argv[0]'s (string 0); only its name as shown may
    // change, to string `argc` (an event's spawn shows it as it is).
    let shown = match (&target.interpreter, &launch.argv0) {
        (None, Some(name)) => Some(strings.push(name.as_bytes(), "the command name")?),
        _ => None,
    };
    // A bare handler name ("php-cgi") is looked up in PATH, like a shell would.
    let first = target.interpreter.as_ref().and_then(|i| i.first()).map_or(script, |p| p.as_bytes());
    let search = target.interpreter.is_some() && !first.contains(&b'/');
    let dir = match target.filename.parent().filter(|d| !d.as_os_str().is_empty() && !launch.keep_cwd) {
        Some(d) => Some(strings.push(d.as_os_str().as_bytes(), "the script directory")?),
        None => None,
    };
    // argv, then envp, in one array (`strings` no longer changes).
    for i in 0..argc {
        ptrs.push(strings.ptr(if i == 0 { shown.unwrap_or(0) } else { i }));
    }
    ptrs.push(std::ptr::null_mut());
    env.pointers_into(ptrs);
    let ptrs = ptrs.as_slice();
    let (program, argv, envp) = (strings.ptr(0), ptrs.as_ptr(), ptrs[argc + 1..].as_ptr());
    let dir = dir.map(|d| strings.ptr(d));

    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;

    let mut s = SpawnSetup::new()?;
    let mut pid: libc::pid_t = 0;
    let spawning = groups::spawning();
    // SAFETY: every pointer passed is valid for the duration of the call
    // (argv, envp and the path strings point into `strings`, `ptrs` and
    // `env`, owned above and not changed since),
    // and the descriptors stay open until after posix_spawn returns.
    unsafe {
        let fa = &mut s.actions;
        check(libc::posix_spawn_file_actions_adddup2(fa, in_r.as_raw_fd(), 0))?;
        check(libc::posix_spawn_file_actions_adddup2(fa, out_w.as_raw_fd(), 1))?;
        check(libc::posix_spawn_file_actions_adddup2(fa, err_w.as_raw_fd(), 2))?;
        if let Some(d) = dir {
            check(libc::posix_spawn_file_actions_addchdir_np(fa, d))?;
        }
        let at = &mut s.attr;
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check(libc::posix_spawnattr_setsigmask(at, &set))?;
        libc::sigaddset(&mut set, libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigdefault(at, &set))?;
        check(libc::posix_spawnattr_setpgroup(at, 0))?;
        let flags = libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        check(libc::posix_spawnattr_setflags(at, flags as libc::c_short))?;
        let (fa, at) = (&s.actions, &s.attr);
        check(match search {
            true => libc::posix_spawnp(&mut pid, program, fa, at, argv, envp),
            false => libc::posix_spawn(&mut pid, program, fa, at, argv, envp),
        })?;
    }
    let group = groups::started(pid, budget);
    drop((spawning, in_r, out_w, err_w));
    Ok(Spawned { pid, group, stdin: in_w, stdout: out_r, stderr: err_r })
}

/// Makes `fd` non-blocking (a read or write returns `WouldBlock` instead
/// of waiting).
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor the caller owns, for its flags only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A script started without a [`Child`] (its pipes and pidfd handled
/// elsewhere), taken back to be waited for: dropped unreaped, it is reaped
/// in the background like any other.
pub fn adopt(pid: i32, group: GroupId, pidfd: Option<OwnedFd>) -> Child {
    let pidfd = pidfd.and_then(|fd| Async::new(fd).ok());
    Child { pid, group, pidfd, status: None, nap: None, stdin: None, stdout: None, stderr: None }
}

/// A pidfd for `pid`, to wait for its exit with `poll` or on the reactor;
/// `None` on kernels without pidfd (waiting then polls).
pub fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor that nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Writes `data` to the child's stdin and closes it. What fits the pipe
/// (64 KiB by default) is written at once; a bigger payload is finished by a
/// background task while the caller reads the output. A script that exits
/// without reading is fine.
pub fn feed(stdin: OwnedFd, data: Bytes) {
    if data.is_empty() {
        return;
    }
    let fd = stdin.as_raw_fd();
    let mut written = 0;
    // SAFETY: fcntl/write on a descriptor we own; the buffer is valid.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        while written < data.len() {
            let n = libc::write(fd, data[written..].as_ptr().cast(), data.len() - written);
            if n <= 0 {
                break;
            }
            written += n as usize;
        }
    }
    let blocked = io::Error::last_os_error().kind() == ErrorKind::WouldBlock;
    if written < data.len() && blocked {
        if let Ok(mut pipe) = Async::new(File::from(stdin)) {
            runtime::spawn(async move {
                let _ = pipe.write_all(&data[written..]).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(b: &EnvBlock) -> Vec<String> {
        // Two entries on the stack: the spill to the heap is covered too.
        let mut ptrs: StackVec<_, 2> = StackVec::new();
        b.pointers_into(&mut ptrs);
        ptrs.as_slice()
            .iter()
            .take_while(|p| !p.is_null())
            // SAFETY: each pointer is a NUL-terminated entry inside `b`.
            .map(|&p| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn env_block_holds_what_execve_can_take() {
        let mut block = EnvBlock::default();
        for (k, v) in [("A", "1"), ("BAD=NAME", "x"), ("NUL", "a\0b"), ("EMPTY", ""), ("B", "x=y")] {
            block.set(k, v);
        }
        assert_eq!(entries(&block), ["A=1", "EMPTY=", "B=x=y"]);
    }

    #[test]
    fn a_nul_or_equals_sign_anywhere_in_a_key_is_found() {
        for len in 0..26 {
            let key = "K".repeat(len);
            assert!(!nul_or_equals(key.as_bytes()), "{len}");
            for at in 0..len {
                for bad in [0u8, b'='] {
                    let mut k = key.clone().into_bytes();
                    k[at] = bad;
                    assert!(nul_or_equals(&k), "{len} {at} {bad}");
                }
            }
        }
        // Bytes next to the two: never taken for them.
        assert!(!nul_or_equals(b"\x01<>>\x7f\x80\xbd\xff\x01<>>\x7f\x80\xbd\xff"));
    }

    /// Every byte value at every place of keys up to 24 bytes, on
    /// backgrounds next to `=` and NUL: found exactly when it is one of them.
    #[test]
    fn nul_or_equals_is_exact_for_every_byte_anywhere() {
        for background in [b'K', b'<', b'>', 0x01, 0x7f, 0x80, 0xbd, 0xff] {
            for len in 1..25 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut k = vec![background; len];
                        k[at] = b;
                        assert_eq!(nul_or_equals(&k), b == 0 || b == b'=', "{background} {len} {at} {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_spawned_child_sees_exactly_the_block() {
        let target = Target {
            filename: "/usr/bin/env".into(),
            script_name: String::new(),
            path_info: String::new(),
            interpreter: None,
        };
        let mut block = EnvBlock::default();
        block.set("ONLY", "this");
        runtime::block_on(async {
            use futures_lite::AsyncReadExt;
            let budget = Budget::from_now(Duration::from_secs(30), Duration::from_secs(2));
            let mut child = spawn(&target, &block, budget).expect("spawn /usr/bin/env");
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
            assert!(child.status("env").await.unwrap().success());
            assert_eq!(out, "ONLY=this\n");
        });
    }

    /// Two spawns on one thread share its buffers (the environment block
    /// given back, the argv scratch), never what the first put in them.
    #[test]
    fn a_threads_next_spawn_reuses_the_buffers_but_not_their_contents() {
        let env = |program: &str| Target {
            filename: program.into(),
            script_name: String::new(),
            path_info: String::new(),
            interpreter: None,
        };
        let run = |target: &Target, block: &EnvBlock| {
            runtime::block_on(async {
                use futures_lite::AsyncReadExt;
                let budget = Budget::from_now(Duration::from_secs(30), Duration::from_secs(2));
                let mut child = spawn(target, block, budget).expect("spawn");
                let mut out = String::new();
                child.stdout.take().expect("stdout").read_to_string(&mut out).await.expect("read");
                assert!(child.status("env").await.expect("status").success());
                out
            })
        };
        let mut first = EnvBlock::reused();
        for i in 0..20 {
            first.set(&format!("FIRST_{i}"), &"x".repeat(100));
        }
        assert_eq!(run(&env("/usr/bin/env"), &first).lines().count(), 20);
        first.recycle();
        let mut second = EnvBlock::reused();
        assert!(second.buf.is_empty() && second.starts.is_empty(), "given back empty");
        assert!(second.buf.capacity() >= 20 * 100, "the first block's buffer, kept");
        second.set("ONLY", "this");
        assert_eq!(run(&env("/usr/bin/printenv"), &second), "ONLY=this\n");
        // A block that had to grow is not kept: a kept block is never
        // reallocated (docs/bench-notes/cpu20.md).
        second.set("BIG", &"y".repeat(2 * SPARE_BYTES));
        second.recycle();
        let third = EnvBlock::reused();
        assert_eq!((third.buf.capacity(), third.starts.capacity()), (SPARE_BYTES, SPARE_VARS), "a new block");
    }
}
