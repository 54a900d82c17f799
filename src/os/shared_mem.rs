//! System calls of regions shared between processes: the shared-anonymous mapping that fork
//! children inherit, giving a shared range's memory back (`MADV_REMOVE`: unlike
//! `MADV_DONTNEED`, which only drops this process's view of a shared page, it frees the page
//! for every process), a second mapping of the same memory at another address, and the
//! start time of a process (to tell a live process from a dead one whose pid was reused).

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

/// Maps `len` bytes (a multiple of `align`, a power of two at least the kernel's page) of
/// zeroed memory shared with the children this process forks (`MAP_SHARED |
/// MAP_ANONYMOUS`), aligned to `align`. Null when the OS refuses.
pub(crate) fn map_shared_anonymous(len: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && len.is_multiple_of(align));
    // SAFETY: MAP_FIXED over the reservation `over_reservation` just made and owns:
    // nothing else lives in it.
    over_reservation(len, align, |hole| unsafe {
        libc::mmap(
            hole.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
            -1,
            0,
        )
    })
}

/// Reserves an aligned range of `len` bytes and lets `place` put a mapping over it
/// (returning what `mmap` or `mremap` did); unreserves it when `place` fails. Null when
/// either fails.
fn over_reservation(
    len: usize,
    align: usize,
    place: impl FnOnce(*mut u8) -> *mut libc::c_void,
) -> *mut u8 {
    let hole = super::reserve(len, align);
    if hole.is_null() {
        return hole;
    }
    let p = place(hole);
    if p == libc::MAP_FAILED {
        // SAFETY: the reservation above, unused.
        unsafe { super::unmap(hole, len) };
        return ptr::null_mut();
    }
    p.cast()
}

/// Maps the shared memory of `[old, old + len)` a second time, at a fresh address aligned
/// to `align` (the first mapping stays). Null when the OS refuses.
///
/// # Safety
/// `[old, old + len)` is a shared mapping of this process (`MAP_SHARED`), page aligned.
#[cfg(test)]
pub(crate) unsafe fn map_again(old: *mut u8, len: usize, align: usize) -> *mut u8 {
    // SAFETY: `mremap` with an old size of 0 duplicates a shared mapping (the caller's);
    // MREMAP_FIXED places the copy over the reservation just made, which nothing uses.
    over_reservation(len, align, |hole| unsafe {
        libc::mremap(
            old.cast(),
            0,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            hole.cast::<libc::c_void>(),
        )
    })
}

/// Frees the memory of a page-aligned range of a shared mapping: every process then reads
/// zeros there. Returns false when the kernel cannot (the caller must not assume zeros).
///
/// # Safety
/// `[ptr, ptr + len)` is a page-aligned range of a shared mapping of ours whose contents no
/// process needs.
pub(crate) unsafe fn remove_shared(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: the caller's guarantee.
    unsafe { libc::madvise(ptr.cast(), len, libc::MADV_REMOVE) == 0 }
}

/// 32 random bits from the kernel (`getrandom`), or, should it fail, bits of the time and
/// the pid.
pub(crate) fn random_u32() -> u32 {
    let mut v = 0u32;
    // SAFETY: writes at most 4 bytes into `v`.
    let got = unsafe { libc::getrandom(ptr::addr_of_mut!(v).cast(), 4, 0) };
    if got == 4 {
        return v;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_nsec as u32) ^ (ts.tv_sec as u32).rotate_left(16) ^ pid() as u32
}

/// This process's id.
pub(crate) fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Bits of a process word ([`process_word`]) holding the start time.
const START_BITS: u32 = 40;

/// This process's word, cached (`pid << 40 | start time`, see [`process_word_of`]): the
/// cache is checked against `getpid` on every call, so a forked child computes its own.
pub(crate) fn process_word() -> u64 {
    static CACHE: AtomicU64 = AtomicU64::new(0);
    let me = pid();
    let cached = CACHE.load(Ordering::Relaxed);
    if cached != 0 && cached >> START_BITS == me as u64 {
        return cached;
    }
    let word = process_word_of(me).unwrap_or((me as u64) << START_BITS);
    CACHE.store(word, Ordering::Relaxed);
    word
}

/// The word naming process `pid` for the machine's uptime: `pid << 40 | start time` (the
/// start time's low 40 bits: 348 years of clock ticks at 100 Hz). `None` when there is no
/// such process.
pub(crate) fn process_word_of(pid: i32) -> Option<u64> {
    let start = process_start_time(pid)?;
    Some((pid as u64) << START_BITS | (start & ((1 << START_BITS) - 1)))
}

/// True when the process a [`process_word`] names is alive: its pid is in use by a
/// process with the same start time (a pid reused by another process is not).
pub(crate) fn is_alive(word: u64) -> bool {
    let pid = (word >> START_BITS) as i32;
    process_word_of(pid) == Some(word)
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), `None` when there is no such process (or it cannot be read). With the
/// pid it names one process for the machine's uptime: a reused pid has another start
/// time. Reads the file with system calls only (no allocation).
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    let mut path = [0u8; 32];
    let mut n = 0;
    for &b in b"/proc/" {
        path[n] = b;
        n += 1;
    }
    let mut digits = [0u8; 12];
    let mut d = 0;
    let mut v = u32::try_from(pid).ok()?;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        path[n] = digits[d];
        n += 1;
    }
    for &b in b"/stat\0" {
        path[n] = b;
        n += 1;
    }
    let mut buf = [0u8; 1024];
    // SAFETY: `path` is NUL-terminated; `buf` is ours; the descriptor is closed below.
    let len = unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let len = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        len
    };
    let text = buf.get(..usize::try_from(len).ok()?)?;
    // The command (field 2) is in parentheses and may hold spaces or ')': fields 3 on start
    // after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let field = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(22 - 3)?;
    let mut t: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        t = t.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_has_a_start_time_and_a_missing_one_none() {
        let me = process_start_time(pid()).expect("this process is alive");
        assert_eq!(process_start_time(pid()), Some(me), "stable");
        assert!(is_alive(process_word()));
        assert_eq!(process_word(), process_word_of(pid()).unwrap());
        assert_eq!(process_start_time(i32::MAX), None);
        assert_eq!(process_start_time(-1), None);
    }

    #[test]
    fn a_second_mapping_sees_the_same_memory() {
        let len = 4 << 20;
        let a = map_shared_anonymous(len, 2 << 20);
        assert!(!a.is_null());
        assert_eq!(a as usize % (2 << 20), 0);
        // SAFETY: a is a shared mapping of len bytes.
        let b = unsafe { map_again(a, len, 2 << 20) };
        assert!(!b.is_null() && b != a);
        // SAFETY: both map the same len bytes.
        unsafe {
            a.add(12345).write(7);
            assert_eq!(b.add(12345).read(), 7);
            assert!(remove_shared(a, 1 << 20));
            assert_eq!(b.add(12345).read(), 0, "removed for every mapping");
            super::super::unmap(a, len);
            super::super::unmap(b, len);
        }
    }
}
