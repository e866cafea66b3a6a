//! glibc malloc settings for a server that holds many idle connections.
//!
//! Every handshake allocates short-lived things (the request head, tide's
//! request and response, the open event's environment) in between the
//! connection's long-lived ones, and frees them when the `101` is out. With
//! glibc's defaults the small ones go to "fastbins", which are never merged
//! with their free neighbours until a large request forces it: after 10,000
//! handshakes the executor threads' arenas are full of small holes that the
//! next connections' objects do not fit, and each idle connection costs
//! ~0.6 KiB of resident memory that no object uses (docs/bench-notes/idle2.md).
//! Without fastbins a freed chunk merges with its free neighbours at once
//! and the next handshake reuses the space; glibc's per-thread cache (tcache)
//! still serves the hot small sizes without a lock.
//!
//! glibc also gives up to 8 arenas per core, one per allocating thread: the
//! executor threads, the reactor, the blocking pool's threads each grow
//! their own heap with its own holes. One arena per core (the executor has
//! one thread per core) keeps contention what it was and shares the holes.
//!
//! Only the server process is tuned: scripts are other programs and get
//! glibc's defaults. Elsewhere (musl, other systems) this does nothing.

/// Applies the settings; call first thing in `main`, before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only changes the allocator's parameters (it takes
        // the arena's lock itself); M_MXFAST = 0 (no fastbins) and a
        // positive M_ARENA_MAX are documented values.
        unsafe {
            libc::mallopt(libc::M_MXFAST, 0);
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Bytes in freed chunks held apart in fastbins, over every arena.
    fn in_fastbins() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.fsmblks
    }

    #[test]
    fn after_tune_freed_small_chunks_are_not_kept_apart_in_fastbins() {
        super::tune();
        // Other tests' threads may have filled fastbins before: from now on
        // nothing goes there, so the figure can only stay or fall.
        let before = in_fastbins();
        // More than the thread cache keeps (7 per size), so the rest are freed to the arena.
        let chunks: Vec<Box<[u8; 40]>> = (0..64).map(|i| Box::new([i as u8; 40])).collect();
        let kept = chunks.iter().map(|c| c[0] as usize).sum::<usize>();
        assert_eq!(kept, (0..64).sum::<usize>());
        drop(chunks);
        assert!(in_fastbins() <= before, "fastbins grew from {before} to {} bytes", in_fastbins());
    }
}
