//! Fork children that check objects: the objects' fill (each holds a byte made of its
//! address), the check that none overlap and each holds its bytes, and a run of forks,
//! each child's status collected.

/// The byte object `p` is filled with: its address's bits 4..11, never 0.
pub fn byte_of(p: usize) -> u8 {
    (p >> 4) as u8 | 1
}

/// `n` objects from `malloc` (which returns `size` bytes, or null), of `sizes` in turn
/// from `sizes[first % sizes.len()]` on, each filled with [`byte_of`] its address, as
/// (address, size); `None` when one is null.
///
/// # Safety
/// `malloc(size)` returns null or `size` writable bytes nobody else uses.
pub unsafe fn fill(
    n: usize,
    sizes: &[usize],
    first: usize,
    malloc: impl Fn(usize) -> *mut u8,
) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let size = sizes[(first + i) % sizes.len()];
        let p = malloc(size);
        if p.is_null() {
            return None;
        }
        // SAFETY: `size` writable bytes of ours (the caller's).
        unsafe { p.write_bytes(byte_of(p as usize), size) };
        out.push((p as usize, size));
    }
    Some(out)
}

/// 0 when no two of `objects` (address, size) overlap and each holds [`byte_of`] its
/// address in every byte; 2 (overlap) or 5 (a byte changed) otherwise. Sorts `objects`.
/// Allocates nothing: a fork child may use it.
///
/// # Safety
/// Each of `objects` is `size` readable bytes at its address (the caller's live objects).
pub unsafe fn apart_and_whole(objects: &mut [(usize, usize)]) -> i32 {
    objects.sort_unstable();
    if objects.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
        return 2;
    }
    for &(p, size) in objects.iter() {
        // SAFETY: the caller's: `size` readable bytes (checked apart above).
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, size) };
        if bytes.iter().any(|&b| b != byte_of(p)) {
            return 5;
        }
    }
    0
}

/// Writes `s` to the standard error with one system call (a fork child's: a test
/// harness's capture is lost at its `_exit`).
pub fn say(s: &str) {
    // SAFETY: writes bytes of `s`.
    unsafe { libc::write(2, s.as_ptr().cast(), s.len()) };
}

/// Forks `forks` children of the calling thread, one at a time: child `round` runs
/// `child(round)` under an alarm of `alarm` seconds (a hung child dies of it) and leaves
/// with `_exit` and its code, without the parent's exit hooks. Returns the wait statuses
/// that were not 0. The caller's other threads go on meanwhile.
pub fn fork_children(forks: usize, alarm: u32, child: impl Fn(usize) -> i32) -> Vec<i32> {
    let mut bad = Vec::new();
    for round in 0..forks {
        // SAFETY: the child runs `child` and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::alarm(alarm);
                libc::_exit(child(round));
            }
        }
        let mut status = 0;
        // SAFETY: our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if status != 0 {
            bad.push(status);
        }
    }
    bad
}
