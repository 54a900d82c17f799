//! Helpers of the red-team tests on regions shared between processes: children under an
//! alarm, a driver process that reports its failure through a shared page, kill -9.
#![allow(dead_code)]

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a child process ended: `Ok(exit code)` or `Err(signal)`.
pub type Ended = Result<i32, i32>;

// `in_child(secs, f)`: `f` in a forked child under an alarm of `secs` seconds, which exits
// 0 when `f` returns, 1 when it panics, and dies of SIGALRM when it hangs (the tests'
// common helper).
#[path = "../common/processes.rs"]
mod processes;
pub use processes::in_child;
use processes::waitid_unreaped;

// Seccomp filters: a thread stopped at a chosen system call (`trap_in_this_thread`), the
// calls refused (`refuse_wipe_on_fork`).
#[path = "../common/seccomp.rs"]
pub mod seccomp;
#[allow(unused_imports)]
pub use seccomp::{on_sigsys, trap_in_this_thread, Trap};

// Helper threads stopped however a test ends (`StopOnDrop`), and waits for their progress
// that give up when they have ended (`yield_until`).
#[path = "../common/threads.rs"]
pub mod threads;
#[allow(unused_imports)]
pub use threads::{yield_until, CountOnDrop, StopOnDrop};

/// This test binary's test `test` again, in a process of its own, with `envs` set
/// (`processes::rerun`).
pub fn rerun(test: &str, envs: &[(&str, &str)]) -> std::process::Output {
    processes::rerun(test, envs)
}

/// Waits for child `pid`: how it ended.
pub fn wait(pid: libc::pid_t) -> Ended {
    let status = processes::wait_status(pid);
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(libc::WTERMSIG(status))
    }
}

/// The page a driver process writes its failure message to (shared with the test's
/// process, which prints it).
pub struct Report(pub *mut u8);

pub const REPORT_BYTES: usize = 4096;

impl Report {
    pub fn new() -> Report {
        // SAFETY: a fresh shared anonymous mapping, no preconditions.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                REPORT_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Report(p.cast())
    }

    /// Writes `msg` and leaves the driver at once (no destructor runs: leaving a region
    /// whose lock a dead process holds would wait for ever).
    pub fn fail(&self, msg: &str) -> ! {
        let n = msg.len().min(REPORT_BYTES - 1);
        // SAFETY: the page holds REPORT_BYTES bytes; the message ends with a zero (a shorter
        // message than one written before leaves none of that one's tail).
        unsafe {
            core::ptr::copy_nonoverlapping(msg.as_ptr(), self.0, n);
            self.0.add(n).write(0);
        }
        // SAFETY: leaves the driver without running anything else.
        unsafe { libc::_exit(1) };
    }

    pub fn message(&self) -> String {
        // SAFETY: the page holds REPORT_BYTES bytes, zero-terminated by its last one.
        let bytes = unsafe { std::slice::from_raw_parts(self.0, REPORT_BYTES) };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(REPORT_BYTES);
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }
}

/// Runs the scenario `f` in a driver process of its own under an alarm of `secs` seconds
/// (its region's lock may be left held by a killed process: the test's own threads must
/// not touch it, nor exit with a heap in it), and panics with what it reported, or with
/// the signal it died of.
pub fn isolated(secs: u32, f: impl FnOnce(&Report)) {
    let report = Report::new();
    let driver = in_child(secs, || {
        f(&report);
        // SAFETY: leaves the driver without its destructors (see `Report::fail`).
        unsafe { libc::_exit(0) };
    });
    match wait(driver) {
        Ok(0) => {}
        Ok(_) => panic!("{}", report.message()),
        Err(sig) => panic!(
            "the driver died of signal {sig} (14 is SIGALRM: it hung for {secs} s); it \
             reported: {:?}",
            report.message()
        ),
    }
}

pub fn kill9(pid: libc::pid_t) {
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(wait(pid), Err(libc::SIGKILL));
}

/// Waits until `count` passes `at_least`, which child `pid` advances. Bounded by events,
/// not by time (a loaded machine may run the child for seconds without its getting far):
/// fails at once when the child ended first, saying how and what it reported; a child that
/// hangs ends by its own alarm ([`in_child`]'s), which this sees the same way. The child
/// is not reaped (a caller may count on it staying a zombie).
pub fn until(count: &AtomicU64, at_least: u64, pid: libc::pid_t, report: &Report, what: &str) {
    loop {
        if count.load(Ordering::Acquire) > at_least {
            return;
        }
        if let Some(ended) = ended_unreaped(pid) {
            // It may have got there just before it ended.
            let at = count.load(Ordering::Acquire);
            if at > at_least {
                return;
            }
            let alarm = if ended == Err(libc::SIGALRM) {
                " (SIGALRM: it hung until its alarm)"
            } else {
                ""
            };
            report.fail(&format!(
                "{what}: the child ended at {at} of {at_least}: {ended:?}{alarm}: {}",
                report.message()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts program `path` (no arguments, an empty environment) through glibc's
/// `posix_spawn` (a vfork-style clone that shares this process's memory until it execs,
/// and runs no fork handler): its pid, or the error the spawn gave.
pub fn posix_spawn_of(path: &std::ffi::CStr) -> Result<libc::pid_t, i32> {
    let argv = [path.as_ptr() as *mut libc::c_char, core::ptr::null_mut()];
    let envp = [core::ptr::null_mut::<libc::c_char>()];
    let mut pid: libc::pid_t = 0;
    // SAFETY: a NUL-terminated path, argument and environment list; no file actions or
    // attributes.
    let e = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            core::ptr::null(),
            core::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    if e != 0 {
        return Err(e);
    }
    Ok(pid)
}

/// Forks a child that leaves at once (`_exit(0)`, nothing else), waits for it: how it
/// ended. For a fork inside a fork handler, whose child is to do nothing.
pub fn fork_a_child_that_leaves() -> Ended {
    // SAFETY: the child leaves through `_exit` at once.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: leaves the child.
        unsafe { libc::_exit(0) };
    }
    wait(pid)
}

/// Waits until child `pid` ends, and leaves it to be waited for (a zombie till then):
/// how it ended.
pub fn wait_unreaped(pid: libc::pid_t) -> Ended {
    loop {
        if let Some(ended) = waitid_unreaped(pid, 0) {
            return ended;
        }
    }
}

/// Waits for child `pid` at most `secs` seconds (a guard against a hang: it polls), then
/// kills it: how it ended, or `None` when it was still running then (killed and reaped).
pub fn wait_at_most(pid: libc::pid_t, secs: u64) -> Option<Ended> {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if ended_unreaped(pid).is_some() {
            return Some(wait(pid));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: our own child, not reaped yet.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    match wait(pid) {
        Err(libc::SIGKILL) => None,
        ended => Some(ended),
    }
}

/// How child `pid` ended, if it has, leaving it to be waited for (`waitid` with
/// `WNOWAIT`).
pub fn ended_unreaped(pid: libc::pid_t) -> Option<Ended> {
    waitid_unreaped(pid, libc::WNOHANG)
}

/// The message of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// [`in_child`], and a panic of `f` writes its message to `report` (the child's captured
/// output is lost with it).
pub fn in_child_reporting(secs: u32, report: &Report, f: impl FnOnce()) -> libc::pid_t {
    in_child(secs, || {
        if let Err(e) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
            report.fail(&panic_message(&*e));
        }
    })
}

/// Waits for `pid`, a child of [`in_child_reporting`], and fails `report` with `what` and
/// how it ended (with its panic's message) unless it exited 0.
pub fn wait_ok(pid: libc::pid_t, report: &Report, what: &str) {
    let ended = wait(pid);
    if ended != Ok(0) {
        report.fail(&format!("{what}: {ended:?}: {}", report.message()));
    }
}

/// `n` words of memory shared with the children forked after (outside any region).
pub fn shared_words(n: usize) -> &'static [AtomicU64] {
    // SAFETY: a fresh shared anonymous mapping, no preconditions.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            n.max(1) * 8,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: n zeroed words, mapped for the rest of the process.
    unsafe { std::slice::from_raw_parts(p.cast(), n) }
}

/// `len` bytes of anonymous memory aligned to `align` (a power of two), shared with the
/// children forked after (`shared`) or private; never unmapped (the test's for its life).
pub fn aligned_anonymous(len: usize, align: usize, shared: bool) -> *mut u8 {
    let kind = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    // SAFETY: a fresh anonymous mapping, no preconditions.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len + align,
            libc::PROT_READ | libc::PROT_WRITE,
            kind | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    (p as usize).next_multiple_of(align) as *mut u8
}
/// The alarm (seconds) of a fork child that only allocates and checks a little, for
/// [`first_failed_fork`]: far past its time on a loaded machine (5 s was missed once at a
/// load of 400), far below CI's hour; a hang still fails its test, within a minute.
pub const FORK_CHILD_SECS: u32 = 60;

/// Forks up to `rounds` children one after the other, each running `child` under an alarm
/// of `secs` seconds (`before(round)` runs in the parent first); returns the first that did
/// not exit 0: (round, how it ended, its panic's message).
pub fn first_failed_fork(
    rounds: usize,
    secs: u32,
    mut before: impl FnMut(usize),
    child: impl Fn(),
) -> Option<(usize, Ended, String)> {
    let report = Report::new();
    for round in 0..rounds {
        before(round);
        let pid = in_child_reporting(secs, &report, &child);
        let ended = wait(pid);
        if ended != Ok(0) {
            return Some((round, ended, report.message()));
        }
    }
    None
}

/// The byte an object at offset `off` is filled with.
pub fn tag_of(off: u64) -> u8 {
    (off.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 | 1
}

/// Allocates up to `n` objects of `size` bytes in class `life` of `r`, writing zeros, then
/// counts the objects at `offs` (each `size` bytes filled with its [`tag_of`]) whose bytes
/// changed: objects a torn state handed out again.
pub fn overwritten_by_new_allocations<L: cohort::Lifetime>(
    r: &cohort::SharedCohort<L>,
    life: L,
    n: usize,
    size: usize,
    offs: impl IntoIterator<Item = u64>,
) -> usize {
    for _ in 0..n {
        let q = r.malloc(size, life);
        if q.is_null() {
            break;
        }
        // SAFETY: fresh, `size` bytes.
        unsafe { q.write_bytes(0, size) };
    }
    offs.into_iter()
        .filter(|&off| {
            let q = r.ptr(cohort::Off::<u8>::new(off).expect("an offset"));
            // SAFETY: an object of `size` bytes the caller allocated and never freed.
            let bytes = unsafe { std::slice::from_raw_parts(q, size) };
            bytes.iter().any(|&b| b != tag_of(off))
        })
        .count()
}

/// Makes region file `path` with a block of `size`-byte slots of class `life` (100
/// allocated, the last 8 freed: a local free list past the block's first page), and 10
/// slots of `other` bytes when given (a block of another class, whole), leaves it, and
/// writes garbage (`0x4000_0000`) over the free list's first link while nobody has it
/// open (damage at rest, RED-77). Returns the damaged link's offset in the region.
pub fn garbage_link_file<L: cohort::Lifetime + Copy>(
    path: &std::path::Path,
    life: L,
    size: usize,
    other: Option<usize>,
) -> u64 {
    let _ = std::fs::remove_file(path);
    let at = {
        let options = cohort::CreateOptions::new(64 << 20);
        let r =
            cohort::SharedCohort::<L>::create(cohort::Place::File(path), options).expect("create");
        let ps: Vec<_> = (0..100).map(|_| r.malloc(size, life)).collect();
        if let Some(other) = other {
            assert!((0..10).all(|_| !r.malloc(other, life).is_null()));
        }
        for &p in &ps[92..] {
            // SAFETY: allocated above with this size and class, freed once.
            unsafe { r.free(p, size, life) };
        }
        assert!(ps[99] as usize % (2 << 20) >= 4096, "past the first page");
        r.offset_of(ps[99]).unwrap().get()
    };
    damage_at_rest(path, at, |_: [u8; 4]| 0x4000_0000u32.to_ne_bytes());
    at
}

/// Damages region file `path` while nobody has it open (damage at rest): its `N` bytes at
/// offset `at` become `change` of what they were.
pub fn damage_at_rest<const N: usize>(
    path: &std::path::Path,
    at: u64,
    change: impl FnOnce([u8; N]) -> [u8; N],
) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("the region file");
    let mut bytes = [0u8; N];
    file.read_exact_at(&mut bytes, at).expect("read");
    file.write_all_at(&change(bytes), at).expect("damage");
}

/// Runs the caller's test alone among those of its binary that take it: a fork child of
/// one test's thread has every region the process has open, so tests of named regions run
/// one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    test_support::serial()
}

/// A path in the temporary directory unique to this process and `tag`, removed first.
pub fn region_path(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-red10-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Opens the region file `p`, waiting at most 10 s.
pub fn open_region<L: cohort::Lifetime>(
    p: &std::path::Path,
) -> Result<cohort::SharedCohort<L>, cohort::RegionError> {
    cohort::SharedCohort::<L>::open(
        cohort::Place::File(p),
        cohort::OpenOptions::new().timeout(Duration::from_secs(10)),
    )
}

/// Runs a subprocess the way a server does: fork, then exec `/bin/true` (`exec`) or
/// `_exit` at once; waits for it and returns how it ended.
pub fn subprocess(exec: bool) -> Ended {
    // SAFETY: the child execs a program at once (or ends): it touches nothing.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        if exec {
            let argv = [c"/bin/true".as_ptr(), core::ptr::null()];
            // SAFETY: a NUL-terminated path and argument list.
            unsafe { libc::execv(c"/bin/true".as_ptr(), argv.as_ptr()) };
        }
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(0) };
    }
    wait(child)
}

/// Writes a backup of the region file `p` over the file itself, as `cp backup region`
/// writes it (the same inode): its first `split` bytes from `first` (the file as read
/// earlier, while a process had the region open), the rest as the file is now (as `cp`
/// reads a file: its start first, the rest later).
pub fn restore_over(p: &std::path::Path, first: &[u8], split: usize) {
    use std::os::unix::fs::FileExt;
    let mut backup = std::fs::read(p).expect("read");
    backup[..split].copy_from_slice(&first[..split]);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .expect("the file");
    file.write_all_at(&backup, 0).expect("restore");
}

/// Creates the region file `p` of `capacity` bytes and leaves it (formatted, nobody has it
/// open).
pub fn created_and_left<L: cohort::Lifetime>(p: &std::path::Path, capacity: usize) {
    cohort::SharedCohort::<L>::create(cohort::Place::File(p), cohort::CreateOptions::new(capacity))
        .expect("create")
        .leave()
        .expect("leave");
}

/// Reads the region file `p` as a backup's first part, across a holder's work, and kills
/// the holder: waits for `words[0]` (the holder is ready), reads the file, sets `words[1]`
/// (the holder goes on), waits for `words[2]` (it is done), then kill -9. Returns what
/// was read.
pub fn read_then_kill(
    p: &std::path::Path,
    words: &[AtomicU64],
    holder: libc::pid_t,
    report: &Report,
) -> Vec<u8> {
    until(&words[0], 0, holder, report, "the holder");
    let first = std::fs::read(p).expect("read");
    words[1].store(1, Ordering::Relaxed);
    until(&words[2], 0, holder, report, "the holder");
    kill9(holder);
    first
}

/// The end of a run: region `r` verifies, and every object at `kept` (see
/// [`changed_object`]) is whole; else the test fails through `report`.
///
/// # Safety
/// No other process or thread uses the region meanwhile (as [`cohort::SharedCohort::verify`]).
pub unsafe fn verify_with_kept<L: cohort::Lifetime>(
    report: &Report,
    r: &cohort::SharedCohort<L>,
    kept: &[(u64, usize)],
) {
    // SAFETY: the caller's.
    if let Err(e) = unsafe { r.verify() } {
        report.fail(&format!("verify: {e:?}"));
    }
    if let Some((off, size)) = changed_object(r, kept) {
        report.fail(&format!("a kept object at {off:#x} ({size} bytes) changed"));
    }
}

/// The first of the objects at `kept` (offset, size: each filled with its [`tag_of`]) of
/// region `r` whose bytes changed.
pub fn changed_object<L: cohort::Lifetime>(
    r: &cohort::SharedCohort<L>,
    kept: &[(u64, usize)],
) -> Option<(u64, usize)> {
    kept.iter().copied().find(|&(off, size)| {
        let q = r.ptr(cohort::Off::<u8>::new(off).expect("an offset"));
        // SAFETY: the callers pass objects of `size` bytes allocated and never freed.
        let bytes = unsafe { std::slice::from_raw_parts(q, size) };
        bytes.iter().any(|&b| b != tag_of(off))
    })
}

/// A `format_in` region of `cap` bytes in fresh anonymous memory (`shared` or private)
/// advised `advice` (`MADV_DONTFORK`, `MADV_WIPEONFORK`: what a fork child gets of it).
pub fn advised_region<L: cohort::Lifetime>(
    advice: libc::c_int,
    shared: bool,
    cap: usize,
) -> cohort::Cohort<L> {
    let f = cohort::Cohort::<L>::footprint(cap).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, shared);
    // SAFETY: our fresh mapping; the advice changes what a fork child gets, not its bytes.
    assert_eq!(unsafe { libc::madvise(mem.cast(), f.bytes, advice) }, 0);
    // SAFETY: fresh memory of `f.bytes`, aligned, this region's for the rest of the process.
    unsafe { cohort::Cohort::<L>::format_in(mem, f.bytes, &cohort::RegionOptions::new(cap)) }
        .expect("format_in")
}

/// Writes `text` and a newline to standard error itself (the test harness captures
/// `eprintln!` and panic messages).
pub fn say(text: &str) {
    let line = format!("{text}\n");
    // SAFETY: writes our own bytes to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Runs `f` in a fork child whose standard error goes to an unlinked temporary file (a
/// panic's message too); returns how the child ended and what it wrote there.
pub fn child_with_stderr(f: impl FnOnce()) -> (Ended, String) {
    use std::io::{Read, Seek};
    use std::os::fd::AsRawFd;
    let mut file = unlinked_file("child-stderr");
    let fd = file.as_raw_fd();
    let pid = in_child(10, || {
        // SAFETY: fd is an open file of this process.
        unsafe { libc::dup2(fd, 2) };
        // A panic's message goes to the file too (the test harness captures `eprintln!`).
        if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
            say(&panic_message(&*payload));
            std::panic::resume_unwind(payload);
        }
    });
    let ended = wait(pid);
    let mut text = String::new();
    // The child's writes moved the offset the two processes share.
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.read_to_string(&mut text).unwrap();
    (ended, text)
}

/// Registers `pthread_atfork(prepare, parent, child)` from an ELF constructor of a higher
/// priority than cohort's (`.init_array.00100`, which the static linker sorts before
/// cohort's `.init_array.00101`): the test binary's handlers are registered first, as
/// another library's under `LD_PRELOAD` are (RED-100's setting), so their `prepare` runs
/// after cohort's and their `parent` and `child` before cohort's.
#[allow(unused_macros)]
macro_rules! register_fork_handlers_first {
    ($prepare:expr, $parent:expr, $child:expr) => {
        #[used]
        #[link_section = ".init_array.00100"]
        static REGISTER_FIRST: extern "C" fn() = register_first;

        extern "C" fn register_first() {
            // SAFETY: plain functions, valid for the life of the process.
            unsafe { libc::pthread_atfork($prepare, $parent, $child) };
        }
    };
}
#[allow(unused_imports)]
pub(crate) use register_fork_handlers_first;

/// Runs `misuse` in a child process: `None` when it stopped with cohort's report (an abort,
/// or a panic: the sized frees' report, and a message naming cohort on standard error),
/// else how it ended and what it said, as one line.
pub fn unreported(misuse: impl FnOnce()) -> Option<String> {
    let (ended, stderr) = child_with_stderr(|| {
        misuse();
        say("returned");
    });
    let reported = matches!(ended, Err(libc::SIGABRT) | Ok(1));
    (!reported || !stderr.contains("cohort"))
        .then(|| format!("{ended:?} {}", stderr.replace('\n', " | ")))
}

/// A child forked before its parent allocates: the parent allocates an object of each of
/// `sizes` after the fork (`alloc`, which returns it) and hands it over through shared
/// words; the child (its view of the memory made at the fork) passes each to `take`
/// (object, size), under an alarm of 20 s. Panics unless the child took them all.
pub fn hand_over_to_a_fork_child(
    sizes: &[usize],
    alloc: impl Fn(usize) -> *mut u8,
    take: impl Fn(*mut u8, usize),
) {
    let words = shared_words(2 + 2 * sizes.len());
    let pid = in_child(20, || {
        while words[0].load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        for i in 0..sizes.len() {
            let p = words[2 + 2 * i].load(Ordering::Relaxed) as *mut u8;
            take(p, words[3 + 2 * i].load(Ordering::Relaxed) as usize);
        }
        words[1].store(1, Ordering::Release);
    });
    for (i, &size) in sizes.iter().enumerate() {
        let p = alloc(size);
        assert!(!p.is_null(), "{size}");
        words[2 + 2 * i].store(p as u64, Ordering::Relaxed);
        words[3 + 2 * i].store(size as u64, Ordering::Relaxed);
    }
    words[0].store(1, Ordering::Release);
    assert_eq!(wait(pid), Ok(0), "the child failed");
    assert_eq!(words[1].load(Ordering::Acquire), 1);
}

/// A fresh file in the temporary directory, unlinked (named by `what`, the process and
/// the thread while it is made).
pub fn unlinked_file(what: &str) -> std::fs::File {
    let path = std::env::temp_dir().join(format!(
        "cohort-{what}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

/// Writes `text` (at most `words.len() * 8` bytes of it) into `words` (shared words: a
/// child's report to its parent).
pub fn words_say(words: &[AtomicU64], text: &str) {
    for (w, chunk) in words.iter().zip(text.as_bytes().chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        w.store(u64::from_le_bytes(b), Ordering::SeqCst);
    }
}

/// The text [`words_say`] wrote.
pub fn words_read(words: &[AtomicU64]) -> String {
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| w.load(Ordering::SeqCst).to_le_bytes())
        .collect();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\0')
        .to_owned()
}

/// The block of slot `p` (blocks are 2 MiB, aligned).
pub fn block_of(p: u64) -> u64 {
    p & !((2 << 20) - 1)
}

/// A region and a join of it the calling process leaked for its fork handlers
/// ([`handlers_region`], [`handlers_join`]; `*const` as words), used by the thread that
/// made them and its copies in fork children.
static HANDLERS_REGION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static HANDLERS_JOIN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Leaks `region` and a join of it for [`handlers_region`] and [`handlers_join`].
pub fn leak_for_handlers(region: cohort::Cohort<()>) {
    let a: &'static cohort::Cohort<()> = Box::leak(Box::new(region));
    let j = Box::leak(Box::new(a.join(0).expect("a join")));
    HANDLERS_REGION.store(std::ptr::from_ref(a) as usize, Ordering::SeqCst);
    HANDLERS_JOIN.store(std::ptr::from_ref(j) as usize, Ordering::SeqCst);
}

/// The region [`leak_for_handlers`] leaked.
pub fn handlers_region() -> &'static cohort::Cohort<()> {
    let p = HANDLERS_REGION.load(Ordering::SeqCst) as *const cohort::Cohort<()>;
    assert!(!p.is_null(), "leak_for_handlers first");
    // SAFETY: leaked (live for the process's life).
    unsafe { &*p }
}

/// The join [`leak_for_handlers`] leaked (one thread's: see `HANDLERS_JOIN`).
pub fn handlers_join() -> &'static cohort::Join<'static, ()> {
    let p = HANDLERS_JOIN.load(Ordering::SeqCst) as *const cohort::Join<'static, ()>;
    assert!(!p.is_null(), "leak_for_handlers first");
    // SAFETY: leaked; used by the thread that made it and its copies in fork children.
    unsafe { &*p }
}

/// Set for a rerun of a test under a filter refusing `MADV_WIPEONFORK` (cohort then has no
/// fork mark: [`refuse_wipe_on_fork_when_set`]).
pub const NO_WIPE_ON_FORK: &str = "COHORT_TEST_REFUSE_WIPE_ON_FORK";

/// Defines a constructor that installs a filter refusing `MADV_WIPEONFORK` before cohort's
/// own constructor (priority 00101) makes its fork mark, when [`NO_WIPE_ON_FORK`] is set.
#[allow(unused_macros)]
macro_rules! refuse_wipe_on_fork_when_set {
    () => {
        #[used]
        #[link_section = ".init_array.00100"]
        static REFUSE_FIRST: extern "C" fn() = refuse_first;

        extern "C" fn refuse_first() {
            // `getenv`, not `std::env`: no allocation (cohort may be the global allocator,
            // and its first allocation would make the mark before the filter is in).
            // SAFETY: a constant string with its zero; nothing sets the environment yet.
            if !unsafe { libc::getenv(c"COHORT_TEST_REFUSE_WIPE_ON_FORK".as_ptr()) }.is_null() {
                red_team_common::seccomp::refuse_wipe_on_fork();
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use refuse_wipe_on_fork_when_set;

/// Runs test `test` of this binary again under a filter refusing `MADV_WIPEONFORK` (the
/// binary has [`refuse_wipe_on_fork_when_set`]): it must pass, and run (not skip).
pub fn passes_without_wipe_on_fork(test: &str) {
    let out = rerun(test, &[(NO_WIPE_ON_FORK, "1")]);
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("1 passed") && !said.contains("skipped"),
        "{test} under a filter refusing MADV_WIPEONFORK: {said}"
    );
}

/// Reaps every child of this process: true when each exited 0.
pub fn reap_children() -> bool {
    let mut all_ok = true;
    loop {
        let mut status = 0;
        // SAFETY: waits for any child of ours.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            return all_ok;
        }
        all_ok &= libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    }
}
