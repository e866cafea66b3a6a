//! Scratch buffers on the caller's stack, with a heap fallback: for the
//! short-lived work of one event (its log line, its header variables, a
//! spawn's C strings) without an allocation per event, and without a
//! buffer kept per thread.
//!
//! Why not per-thread heap buffers (docs/bench-notes/alloc19.md): kept
//! buffers, grown in place the first time among the connections' long-lived
//! objects, left holes in glibc's arenas that idle connections' objects did
//! not fill (+110-144 B of free arena space per idle connection at 10,000,
//! live heap unchanged). A stack buffer is gone when the call returns and
//! never touches the heap; only a rare oversized line or environment takes
//! the fallback, which is one ordinary allocation freed at once
//! (docs/bench-notes/cpu20.md).

/// Up to `N` items of `T` on the stack, then on the heap: the whole content
/// moves to one heap buffer the first time it does not fit (smallvec's
/// `SmallVec`). The stack part is not initialised up front (zeroing a few
/// KiB per event cost as many instructions as the allocations it saved:
/// callgrind, cpu20.md).
pub type StackVec<T, const N: usize> = smallvec::SmallVec<[T; N]>;

/// Text on the stack ([`StackVec`] of bytes), written with `write!`; only
/// whole `str`s go in, so it is always UTF-8.
pub struct StackStr<const N: usize>(StackVec<u8, N>);

impl<const N: usize> StackStr<N> {
    #[inline(always)]
    pub fn new() -> Self {
        StackStr(StackVec::new())
    }

    pub fn push_str(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// One ASCII byte (a header name's, already a token); anything else
    /// becomes `?`, so the text stays UTF-8.
    pub fn push_ascii(&mut self, b: u8) {
        self.0.push(if b.is_ascii() { b } else { b'?' });
    }

    pub fn as_str(&self) -> &str {
        // Whole `str`s only (push_str, write_str), so this never fails.
        std::str::from_utf8(self.0.as_slice()).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn spilled(&self) -> bool {
        self.0.spilled()
    }
}

impl<const N: usize> Default for StackStr<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> std::fmt::Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{StackStr, StackVec};
    use std::fmt::Write as _;

    #[test]
    fn content_is_the_same_on_the_stack_and_after_the_spill() {
        let mut v: StackVec<usize, 4> = StackVec::new();
        v.extend_from_slice(&[1, 2, 3]);
        assert!(!v.spilled());
        assert_eq!(v.as_slice(), [1, 2, 3]);
        v.extend_from_slice(&[4, 5]);
        v.push(6);
        assert!(v.spilled(), "six items do not fit in four");
        assert_eq!(v.as_slice(), [1, 2, 3, 4, 5, 6]);
        v.as_mut_slice().reverse();
        assert_eq!(v.as_slice(), [6, 5, 4, 3, 2, 1]);
        v.clear();
        assert!(v.is_empty());
        v.push(9);
        assert_eq!(v.as_slice(), [9]);
    }

    #[test]
    fn text_is_whole_however_it_was_written() {
        let mut s: StackStr<8> = StackStr::new();
        let ab = "ab";
        write!(s, "{ab}-{}", 12).expect("write");
        assert_eq!((s.as_str(), s.spilled()), ("ab-12", false));
        s.push_str("é✓ and more");
        s.push_ascii(b'!');
        s.push_ascii(0xff);
        assert_eq!((s.as_str(), s.spilled()), ("ab-12é✓ and more!?", true));
        assert_eq!(s.len(), "ab-12é✓ and more!?".len());
    }

    /// The spawn's use: C strings pushed, pointers into them taken, then
    /// more pointers pushed (a spill of the pointer buffer), then read.
    #[test]
    fn pointers_into_the_stacked_part_stay_valid() {
        for extra in [0usize, 3, 70] {
            let mut strings: StackVec<u8, 16> = StackVec::new();
            let mut starts: StackVec<usize, 2> = StackVec::new();
            for s in [&b"/bin/sh"[..], b"-c", b"a long argument over sixteen bytes"] {
                starts.push(strings.len());
                strings.extend_from_slice(s);
                strings.push(0);
            }
            let mut ptrs: StackVec<*const u8, 4> = StackVec::new();
            for &s in starts.as_slice() {
                ptrs.push(strings.as_slice()[s..].as_ptr());
            }
            for _ in 0..extra {
                ptrs.push(std::ptr::null());
            }
            // SAFETY: NUL-terminated strings inside `strings`, unchanged since.
            let first = unsafe { std::ffi::CStr::from_ptr(ptrs.as_slice()[0].cast()) };
            assert_eq!(first.to_bytes(), b"/bin/sh");
            // SAFETY: as above.
            let third = unsafe { std::ffi::CStr::from_ptr(ptrs.as_slice()[2].cast()) };
            assert_eq!(third.to_bytes(), b"a long argument over sixteen bytes");
        }
    }

    #[test]
    fn every_path_reads_only_written_items() {
        let mut v: StackVec<u64, 3> = StackVec::new();
        assert!(v.as_slice().is_empty());
        v.extend_from_slice(&[]);
        v.push(1);
        v.extend_from_slice(&[2, 3]);
        v.as_mut_slice()[0] = 7;
        assert_eq!(v.as_slice(), [7, 2, 3]);
        v.clear();
        v.extend_from_slice(&[4]);
        assert_eq!(v.as_slice(), [4]);
        v.extend_from_slice(&[5, 6, 7]);
        assert!(v.spilled());
        v.clear();
        assert!(v.as_slice().is_empty());
        v.push(8);
        assert_eq!(v.as_mut_slice(), [8]);
        let mut z: StackVec<u8, 0> = StackVec::new();
        z.push(1);
        assert_eq!(z.as_slice(), [1]);
        let mut s: StackStr<4> = StackStr::new();
        let (e, ticks) = ("é", "✓✓");
        write!(s, "{e}").expect("write");
        s.push_ascii(200);
        write!(s, "{ticks}").expect("write");
        assert_eq!(s.as_str(), "é?✓✓");
    }
}
