//! The OS layer: every system call of the allocator lives here (a Windows backend would be
//! one more file beside this one), what it reads from the process's environment
//! ([`env`]), what is mapped over a range ([`maps`]), and the memory other processes see:
//! named shared memory, files, shared anonymous memory, and process start times
//! ([`shared_mem`]).
//!
//! Vocabulary: **reserve** takes address space without memory nor access (`PROT_NONE`), **commit**
//! makes a reserved range usable (`PROT_READ | PROT_WRITE`; pages still cost RAM only when
//! touched), **decommit** gives a range's pages back while keeping the range
//! (`MADV_DONTNEED`: the next touch reads zeros), **unmap** gives the range back
//! (`munmap`). No function here allocates through Rust's global allocator.
//!
//! The **page** is the granularity of every mapping, commit and decommit: the kernel's page
//! size (`sysconf(_SC_PAGESIZE)`: 4 KiB on x86-64, 4, 16 or 64 KiB on arm64), or a multiple
//! of it set by `COHORT_PAGE_SIZE` ([`env`]), read once per process. Invariants:
//! `page_size()` is the same on every call and a multiple of the kernel's page; an instance
//! starts only when `page_size_supported()`: a power of two with
//! `MIN_PAGE <= page_size() <= MAX_PAGE`; every length this module maps, commits or
//! decommits is a multiple of it, at an address aligned to it.

// cohort needs Linux's `mremap` and `MAP_NORESERVE`, and a 64-bit address space for its
// reservation (256 GiB by default).
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!(
    "cohort supports Linux on 64-bit targets only (it uses mremap and MAP_NORESERVE, and \
     reserves 256 GiB of address space); this target is not one"
);

pub(crate) mod env;
pub(crate) mod maps;
pub(crate) mod moves;
pub(crate) mod placement;
pub(crate) mod shared_mem;

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The smallest page size cohort supports (and the smallest Linux has).
pub const MIN_PAGE: usize = 4096;

/// The largest page size cohort supports: checked mode decommits its live bits in ranges
/// of `BLOCK_SIZE / 8` bytes (256 KiB), which must be whole pages.
pub const MAX_PAGE: usize = 256 << 10;

/// The page size, once read (0 before).
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The page size the allocator maps, commits and decommits by (see the module docs): read
/// once, on the first call, from the kernel and `COHORT_PAGE_SIZE`.
#[inline]
pub fn page_size() -> usize {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => read_page_size(),
        page => page,
    }
}

#[cold]
#[inline(never)]
fn read_page_size() -> usize {
    let kernel = kernel_page_size();
    let (page, complaint) = env::page_size(kernel);
    // Threads racing here compute the same page; the first to store it says what was wrong
    // with the variable, if anything.
    match PAGE_SIZE.compare_exchange(0, page, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => {
            if let Some(complaint) = complaint {
                complaint.write();
            }
            page
        }
        Err(first) => first,
    }
}

/// The kernel's page size (`sysconf`; 1, which is not supported, if it does not say).
fn kernel_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(0).max(1)
}

/// True when the page size is one cohort supports (a power of two from [`MIN_PAGE`] to
/// [`MAX_PAGE`]); an instance refuses to start otherwise (every allocation returns null).
pub fn page_size_supported() -> bool {
    let page = page_size();
    page.is_power_of_two() && (MIN_PAGE..=MAX_PAGE).contains(&page)
}

/// Rounds `len` up to whole pages, or `None` on overflow.
#[inline]
pub fn page_round(len: usize) -> Option<usize> {
    let page = page_size();
    len.checked_add(page - 1).map(|l| l & !(page - 1))
}

fn mmap(len: usize, prot: libc::c_int, flags: libc::c_int) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choice touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Maps `len` bytes (rounded up to whole pages) of zeroed read-write memory, aligned to
/// `align` (a power of two) or to a page, whichever is larger. Returns null when the OS refuses. The over-reservation used to
/// reach the alignment is trimmed, so exactly `len` bytes stay mapped.
pub fn map(len: usize, align: usize) -> *mut u8 {
    map_with(
        len,
        align,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_NORESERVE,
    )
}

/// As [`map`], but charged against the system's commit limit at once (no
/// `MAP_NORESERVE`): under strict overcommit a mapping the OS cannot back is refused now,
/// rather than its user killed when it first touches a page.
pub fn map_accounted(len: usize, align: usize) -> *mut u8 {
    map_with(len, align, libc::PROT_READ | libc::PROT_WRITE, 0)
}

/// The transparent huge page that [`map_large`] aligns to and asks for: 2 MiB, the size a
/// page table's middle level maps with 4 KiB pages.
pub const HUGE_PAGE: usize = 2 << 20;

/// Whether transparent huge pages can back a mapping that asks for them: 0 not read yet,
/// 1 no, 2 yes.
static HUGE_ON_ADVICE: AtomicUsize = AtomicUsize::new(0);

/// True when the kernel backs a mapping advised `MADV_HUGEPAGE` with transparent huge
/// pages (`/sys/kernel/mm/transparent_hugepage/enabled` reads `[always]` or `[madvise]`,
/// not `[never]`) and its page is 4 KiB (its huge page then [`HUGE_PAGE`]). Read once per
/// process, without allocating; false when the file cannot be read.
pub fn huge_pages_on_advice() -> bool {
    match HUGE_ON_ADVICE.load(Ordering::Relaxed) {
        0 => {
            let on = kernel_page_size() == MIN_PAGE && read_huge_on_advice();
            HUGE_ON_ADVICE.store(1 + on as usize, Ordering::Relaxed);
            on
        }
        state => state == 2,
    }
}

#[cold]
fn read_huge_on_advice() -> bool {
    let path = c"/sys/kernel/mm/transparent_hugepage/enabled";
    // SAFETY: a valid C string; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is writable for its length; `fd` is open.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: opened above, closed once.
    unsafe { libc::close(fd) };
    let read = &buf[..usize::try_from(n).unwrap_or(0)];
    let says = |mode: &[u8]| read.windows(mode.len()).any(|w| w == mode);
    says(b"[always]") || says(b"[madvise]")
}

/// As [`map`], for a large buffer: from [`HUGE_PAGE`] on, where the kernel backs advised
/// mappings with transparent huge pages ([`huge_pages_on_advice`]), the mapping is aligned
/// to a huge page and advised `MADV_HUGEPAGE`, so that its huge-page-aligned part fits
/// huge pages and the kernel makes room for them at the first touch rather than falling
/// back to 4 KiB pages: one fault per 2 MiB touched, not 512. Its resident size then grows
/// by huge pages (a buffer touched in one part is resident up to the huge pages around
/// it). A process that turned huge pages off (`prctl(PR_SET_THP_DISABLE)`) gets 4 KiB pages.
pub fn map_large(len: usize, align: usize) -> *mut u8 {
    if len < HUGE_PAGE || !huge_pages_on_advice() {
        return map(len, align);
    }
    let p = map(len, align.max(HUGE_PAGE));
    if !p.is_null() {
        // SAFETY: the mapping just made; the advice changes no contents, and a refusal (a
        // kernel without huge pages) leaves it as `map` made it.
        unsafe { libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE) };
    }
    p
}

/// Reserves `len` bytes of address space aligned to `align`, without memory and with no
/// access at all, never locked nor populated (see [`map_unlocked`]), not even by a later
/// `mlockall(MCL_CURRENT)`, which populates every accessible mapping (a 256 GiB readable
/// reservation: 512 MiB of page tables). [`commit`] makes parts of it usable, as they are
/// needed; nothing may read a part before. A private mapping without write access is not
/// charged against the commit limit, and its untouched pages are left out of core dumps.
/// (`len` is rounded up to whole pages, as for [`map`].)
pub fn reserve(len: usize, align: usize) -> *mut u8 {
    map_unlocked(len, align)
}

/// True when the last reservation was born locked: the process locks its future mappings
/// (`mlockall(MCL_FUTURE)`), and [`commit`] locks what it commits.
static LOCKS_FUTURE: AtomicBool = AtomicBool::new(false);

/// Maps `len` bytes (`MAP_NORESERVE`) with no access, aligned as [`map`] does, without
/// locking them. In a process that called `mlockall(MCL_FUTURE)` every new mapping is born
/// locked (the kernel populates a locked mapping only when it is accessible: nothing here),
/// and [`commit`] would then make a range usable locked, populating it at once; so the
/// range is unlocked at once. Whether it was born locked is remembered ([`LOCKS_FUTURE`]):
/// the program asked for its memory locked, and [`commit`] locks what it commits.
fn map_unlocked(len: usize, align: usize) -> *mut u8 {
    let p = map_with(len, align, libc::PROT_NONE, libc::MAP_NORESERVE);
    let Some(len) = page_round(len).filter(|_| !p.is_null()) else {
        return ptr::null_mut();
    };
    // SAFETY: the mapping just made, ours. `MADV_DONTNEED` on a page of it (nothing there
    // to drop) fails exactly when the mapping is locked.
    let ok = unsafe {
        let locked = libc::madvise(p.cast(), kernel_page_size(), libc::MADV_DONTNEED) != 0;
        LOCKS_FUTURE.store(locked, Ordering::Relaxed);
        !locked || libc::munlock(p.cast(), len) == 0
    };
    if !ok {
        // SAFETY: the mapping just made, unused.
        unsafe { unmap(p, len) };
        return ptr::null_mut();
    }
    p
}

fn map_with(len: usize, align: usize, prot: libc::c_int, flags: libc::c_int) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    let Some(len) = page_round(len) else {
        return ptr::null_mut();
    };
    // The kernel aligns a mapping to its own page; a larger alignment (or a page larger
    // than the kernel's, set by COHORT_PAGE_SIZE) is reached by mapping more and trimming.
    let align = align.max(page_size());
    let kernel_page = kernel_page_size();
    if align <= kernel_page {
        return mmap(len, prot, flags);
    }
    let Some(over) = len.checked_add(align - kernel_page) else {
        return ptr::null_mut();
    };
    let raw = mmap(over, prot, flags);
    if raw.is_null() {
        return raw;
    }
    let start = (raw as usize + align - 1) & !(align - 1);
    let head = start - raw as usize;
    let tail = over - head - len;
    // SAFETY: both trimmed ranges lie inside the mapping just made, outside [start,
    // start + len), which is what the caller receives; both are whole kernel pages (`raw`,
    // `start` and `over` are kernel-page aligned) and unmapped exactly (not rounded up to
    // `page_size()`, which could reach past the mapping).
    unsafe {
        if head > 0 {
            libc::munmap(raw.cast(), head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    start as *mut u8
}

/// Makes a reserved range readable and writable (and locked, in a process that locks its
/// future mappings: see [`map_unlocked`]). Returns false when the OS refuses (out of memory
/// under strict overcommit).
///
/// # Safety
/// `[ptr, ptr + len)` lies in a reservation made by [`reserve`], page aligned.
pub unsafe fn commit(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: the caller guarantees the range is ours.
    let ok = unsafe { libc::mprotect(ptr.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 };
    if ok && LOCKS_FUTURE.load(Ordering::Relaxed) {
        // A program that locks its memory has what it commits locked (and so populated),
        // as its other mappings are; best effort (the range is usable either way).
        // SAFETY: as above.
        unsafe { libc::mlock(ptr.cast(), len) };
    }
    ok
}

/// Gives the pages of a committed range back to the OS; the range stays usable and reads
/// zeros when next touched. Where the OS keeps the pages (locked memory: a process that
/// called `mlockall`, whose `MADV_DONTNEED` fails), the range is written with zeros
/// instead: it reads zero either way, which every caller relies on.
///
/// # Safety
/// `[ptr, ptr + len)` is a page-aligned range of ours, writable, whose contents nobody
/// needs.
pub unsafe fn decommit(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is ours and dead.
    let rc = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED) };
    if rc != 0 {
        // SAFETY: as above, and writable (the caller's guarantee).
        unsafe { ptr::write_bytes(ptr, 0, len) };
    }
}

/// False once the kernel refused `MADV_POPULATE_WRITE` as unknown advice (before Linux
/// 5.14): [`populate`] then never asks again.
static POPULATES: AtomicBool = AtomicBool::new(true);

/// Faults in, writable, the pages of the page-aligned range `[ptr, ptr + len)` in one call
/// (`MADV_POPULATE_WRITE`): for memory the caller is about to write whole, cheaper than a
/// page fault per page (no trap per page). Contents do not change (a page already resident
/// stays as it is). Best effort: where the kernel refuses (an older one, never asked again;
/// out of memory) the pages fault in when written, as they would have.
///
/// # Safety
/// `[ptr, ptr + len)` is a page-aligned range of ours, mapped readable and writable.
pub unsafe fn populate(ptr: *mut u8, len: usize) {
    if len == 0 || !POPULATES.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: the caller's range; the advice changes no contents.
    let rc = unsafe { libc::madvise(ptr.cast(), len, placement::MADV_POPULATE_WRITE) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        POPULATES.store(false, Ordering::Relaxed);
    }
}

/// Unmaps a range, rounded up to whole pages (so the `len` given to [`map`] unmaps what it
/// mapped).
///
/// # Safety
/// `[ptr, ptr + len)`, rounded up to whole pages, is a page-aligned range mapped by this
/// module, and nothing uses it.
pub unsafe fn unmap(ptr: *mut u8, len: usize) {
    let len = page_round(len).unwrap_or(len);
    // SAFETY: the caller guarantees the range is ours and unused.
    unsafe {
        libc::munmap(ptr.cast(), len);
    }
}

/// Resizes a mapping made by [`map`] with an alignment of at most a page, in place when the
/// OS can, else by moving it (the result stays page aligned). Returns null, leaving the
/// mapping as it was, when the OS refuses.
///
/// # Safety
/// `[ptr, ptr + old)` is a mapping of ours; both lengths are page multiples.
pub unsafe fn remap(ptr: *mut u8, old: usize, new: usize) -> *mut u8 {
    // The kernel moves a mapping to an address aligned to its own page only: with a larger
    // page (COHORT_PAGE_SIZE) the mapping is resized in place or not at all (the caller then
    // moves the allocation itself).
    let flags = match page_size() == kernel_page_size() {
        true => libc::MREMAP_MAYMOVE,
        false => 0,
    };
    // SAFETY: the caller guarantees the mapping is ours; mremap keeps its contents.
    let p = unsafe { libc::mremap(ptr.cast(), old, new, flags) };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Grows the mapping `[ptr, ptr + old)` to `new` bytes where it is, when the address space
/// after it is free: true when it did (the new part reads zero); false leaves it as it was.
///
/// # Safety
/// `[ptr, ptr + old)` is a mapping of ours (or a range of one); both lengths are page
/// multiples.
pub unsafe fn grow_in_place(ptr: *mut u8, old: usize, new: usize) -> bool {
    // SAFETY: the caller guarantees the range is ours; without MREMAP_MAYMOVE nothing moves.
    unsafe { libc::mremap(ptr.cast(), old, new, 0) != libc::MAP_FAILED }
}

/// Bytes of `[ptr, ptr + len)` resident in RAM now (`mincore`, by the kernel's pages), or 0
/// if the OS refuses.
///
/// # Safety
/// The range is page aligned and mapped.
pub unsafe fn resident_bytes(ptr: *const u8, len: usize) -> usize {
    let mut resident = 0;
    // SAFETY: the caller's guarantee.
    let read = unsafe {
        residence_runs(ptr, len, |_, run, present| {
            if present {
                resident += run;
            }
        })
    };
    if read {
        resident
    } else {
        0
    }
}

/// Makes the page-aligned range `[ptr, ptr + len)` read zero at the least cost: its pages
/// resident in RAM that hold anything but zeros are written with zeros (no fault when next
/// touched, no system call but the residence read), the others are given back
/// ([`decommit`]: an untouched page reads zero already, a swapped-out one must be dropped).
/// A page only read so far (the kernel's shared zero page, which counts as resident) reads
/// zero already: a run of [`CLEAN_RUN`] or more such pages is given back too (the range
/// ends no more resident than it was, and a sparse table read all over gets its pages
/// back), a shorter one is left as it is. If the OS will not say which pages are resident,
/// all are given back.
///
/// # Safety
/// `[ptr, ptr + len)` is a page-aligned range of ours, writable, whose contents nobody
/// needs; `len` is a page multiple.
pub unsafe fn zero_pages(ptr: *mut u8, len: usize) {
    // SAFETY: the caller's guarantee; every run lies inside the range.
    let read = unsafe {
        residence_runs(ptr, len, |at, run, present| match present {
            // A page swapped out between the residence read and these writes is read back
            // (and written): it reads zero either way.
            true => zero_written(ptr.add(at), run),
            false => decommit(ptr.add(at), run),
        })
    };
    if !read {
        // SAFETY: the caller's guarantee.
        unsafe { decommit(ptr, len) };
    }
}

/// The fewest kernel pages of zeros in a row that [`zero_pages`] gives back (64 KiB with
/// 4 KiB pages): it makes at most one system call per this many pages.
const CLEAN_RUN: usize = 16;

/// Writes zeros over the kernel pages of `[ptr, ptr + len)` that hold anything else, and
/// gives back each run of [`CLEAN_RUN`] or more pages that hold only zeros.
///
/// # Safety
/// The range is a page-aligned, writable range of ours whose contents nobody needs; `len`
/// is a page multiple.
unsafe fn zero_written(ptr: *mut u8, len: usize) {
    let page = kernel_page_size();
    // The run of pages of zeros that ends at the page looked at.
    let mut clean_from = 0;
    let give_back = |from: usize, to: usize| {
        if to - from >= CLEAN_RUN * page {
            // SAFETY: whole pages inside the range (the caller's guarantee).
            unsafe { decommit(ptr.add(from), to - from) };
        }
    };
    for at in (0..len).step_by(page) {
        // SAFETY: a whole kernel page inside the range, aligned for u64 reads.
        let words = unsafe { core::slice::from_raw_parts(ptr.add(at).cast::<u64>(), page / 8) };
        if words.iter().any(|&w| w != 0) {
            give_back(clean_from, at);
            clean_from = at + page;
            // SAFETY: as above, and writable (the caller's guarantee); the slice is not
            // used after this write.
            unsafe { ptr::write_bytes(ptr.add(at), 0, page) };
        }
    }
    give_back(clean_from, len);
}

/// Calls `f(offset, len, resident)` for each longest run of kernel pages of `[ptr, ptr +
/// len)` that are all resident in RAM or all not (`mincore`), in address order; false when
/// the OS refused to say (runs before the refusal were reported).
///
/// # Safety
/// The range is page aligned and mapped.
unsafe fn residence_runs(
    ptr: *const u8,
    len: usize,
    mut f: impl FnMut(usize, usize, bool),
) -> bool {
    let page = kernel_page_size();
    let pages = len / page;
    let mut vec = [0u8; 1024];
    // The run being measured: its first page and whether it is resident.
    let mut run: Option<(usize, bool)> = None;
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(vec.len());
        // SAFETY: the range is ours (caller) and `vec` holds `n` entries.
        let rc = unsafe {
            libc::mincore(
                ptr.add(done * page) as *mut libc::c_void,
                n * page,
                vec.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return false;
        }
        for (i, v) in vec[..n].iter().enumerate() {
            let (at, present) = (done + i, v & 1 != 0);
            match run {
                Some((_, was)) if was == present => {}
                Some((start, was)) => {
                    f(start * page, (at - start) * page, was);
                    run = Some((at, present));
                }
                None => run = Some((at, present)),
            }
        }
        done += n;
    }
    if let Some((start, was)) = run {
        f(start * page, (pages - start) * page, was);
    }
    true
}

/// Milliseconds of the system's monotonic clock (`CLOCK_MONOTONIC_COARSE`: the same clock in
/// every process, never going back, with the kernel tick's resolution (1 to 10 ms), read
/// cheaply: the precise clock costs over 100 ns a read on some virtual machines);
/// 0 if the OS refuses, which it does not on Linux.
pub fn now_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) } != 0 {
        return 0;
    }
    (t.tv_sec as u64).wrapping_mul(1000) + (t.tv_nsec as u64) / 1_000_000
}

/// `membarrier`'s commands (linux/membarrier.h).
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Registers the process for [`membarrier`] (`MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED`):
/// true when it may use it from now on (Linux 4.14 and later, unless a seccomp filter
/// refuses the call). Harmless when registered already.
pub fn membarrier_register() -> bool {
    // SAFETY: membarrier takes integers and touches no memory of the caller's.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
            0,
        ) == 0
    }
}

/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`: when it returns true, every other thread
/// of the process that was running has executed a full memory barrier (a thread not
/// running executes one when it is scheduled), and so has the caller. False when refused
/// (the process is not registered: [`membarrier_register`]).
pub fn membarrier() -> bool {
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

/// True when the kernel's page holding `p` is mapped in this process (`mincore`, which
/// fails with `ENOMEM` for an address no mapping covers). For memory the process may not
/// have: a fork child gets no copy of a mapping advised `MADV_DONTFORK`.
pub fn is_mapped(p: *const u8) -> bool {
    let page = kernel_page_size();
    let mut resident = 0u8;
    // SAFETY: asks about one page; the kernel writes one byte into `resident`.
    unsafe {
        libc::mincore(
            (p as usize & !(page - 1)) as *mut libc::c_void,
            1,
            &mut resident,
        ) == 0
    }
}

/// Registers the fork handlers (`pthread_atfork`).
pub fn at_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) -> bool {
    // SAFETY: the handlers are plain functions valid for the life of the process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// Writes `bytes` to standard error with one `write` call (a short write is not retried:
/// this is for a last message before [`abort`]). Never allocates.
pub fn write_stderr(bytes: &[u8]) {
    // SAFETY: writes from a valid buffer of `bytes.len()` bytes to fd 2.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// Writes `message` to standard error as a line (at most 512 bytes of it, formatted on the
/// stack: nothing is allocated) and ends the process ([`abort`]).
#[cold]
#[inline(never)]
pub fn abort_with(message: core::fmt::Arguments) -> ! {
    /// The message's bytes, cut at the buffer's end.
    struct StackBuf {
        buf: [u8; 512],
        len: usize,
    }
    impl core::fmt::Write for StackBuf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let n = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut out = StackBuf {
        buf: [0; 512],
        len: 0,
    };
    let _ = core::fmt::write(&mut out, message);
    // One line: the message ends with a newline, given or not.
    if out.buf[..out.len].last() != Some(&b'\n') {
        out.len = out.len.min(out.buf.len() - 1);
        out.buf[out.len] = b'\n';
        out.len += 1;
    }
    write_stderr(&out.buf[..out.len]);
    abort()
}

/// Ends the process at once (`abort`): no unwinding, no allocation.
pub fn abort() -> ! {
    // SAFETY: abort has no precondition.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_aligned_zeroed_and_trimmed() {
        let page = page_size();
        let align = 1 << 21;
        let p = map(3 * page, align);
        assert!(!p.is_null());
        assert_eq!(p as usize % align, 0);
        // SAFETY: p maps 3 pages.
        unsafe {
            *p = 7;
            assert_eq!(
                resident_bytes(p, 3 * page),
                kernel_page_size(),
                "only the touched page is resident"
            );
            assert_eq!(*p.add(3 * page - 1), 0);
            decommit(p, 3 * page);
            assert_eq!(*p, 0, "decommitted memory reads zeros");
            unmap(p, 3 * page);
        }
    }

    #[test]
    fn reserve_then_commit() {
        let page = page_size();
        let p = reserve(1 << 20, 1 << 20);
        assert!(!p.is_null());
        // SAFETY: p reserves 1 MiB.
        unsafe {
            assert!(commit(p, page));
            *p.add(page - 1) = 1;
            assert_eq!(resident_bytes(p, page), kernel_page_size());
            unmap(p, 1 << 20);
        }
        assert!(page_size_supported());
    }
}
