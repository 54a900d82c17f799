//! Processes named across a region's users: a process word (`pid << 42 | image << 34 |
//! start time`), the pid namespace it is read in, and whether the process it names is
//! known to be dead (from `/proc/PID/stat`; what cannot be told counts as alive).
//!
//! A pid names one process at a time; with its start time, one process for the machine's
//! uptime. A process that `exec`s another program keeps both, but the program that held
//! heaps is gone: the word's `image` (8 bits hashed from the program's code and stack
//! addresses, which every exec lays out anew, at random under address-space
//! randomisation) tells the images apart. With randomisation off, an exec of a program laid
//! out at the same addresses (one time in 256 otherwise) keeps the same image: its old
//! heaps count as alive until the process exits (kept, never handed out twice).

use super::{check, Fd};
use core::sync::atomic::{AtomicU64, Ordering};
use std::io;

/// This process's id.
pub fn pid() -> i32 {
    // SAFETY: getpid has no precondition.
    unsafe { libc::getpid() }
}

/// The calling thread's id (unique among the live threads of every process).
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no precondition.
    unsafe { libc::gettid() }
}

/// Where a process word's pid starts (pids are below `2^22`, the kernel's limit).
const PID_SHIFT: u32 = 42;
/// Where its image starts, and its 8 bits (0: unknown).
const IMAGE_SHIFT: u32 = 34;
const IMAGE_MASK: u64 = 0xff << IMAGE_SHIFT;
/// Its start-time bits: the start time's low 34 bits (5.4 years of clock ticks at 100 Hz;
/// compared modulo that: two processes of one pid started a multiple of it apart are
/// the only confusion).
const START_MASK: u64 = (1 << IMAGE_SHIFT) - 1;

/// This process's word, cached (`pid << 42 | image << 34 | start time`, see
/// [`process_word_of`]): the cache is checked against `getpid` on every call, so a forked
/// child computes its own (an exec'd program starts with an empty cache). When the start
/// time cannot be read now (out of file descriptors, say) the word has neither it nor the
/// image (`pid << 42`, never cached): such a word names its process by pid alone
/// ([`same_process`], [`is_alive`]).
pub fn process_word() -> u64 {
    static CACHE: AtomicU64 = AtomicU64::new(0);
    let me = pid();
    let cached = CACHE.load(Ordering::Relaxed);
    if cached != 0 && cached >> PID_SHIFT == me as u64 {
        return cached;
    }
    match process_word_of(me) {
        Some(word) => {
            CACHE.store(word, Ordering::Relaxed);
            word
        }
        None => (me as u64) << PID_SHIFT,
    }
}

/// The process word of `pid` started at `start` running the program image `image` (see
/// [`process_word_of`]; 0: unknown).
pub fn word_of(pid: i32, image: u8, start: u64) -> u64 {
    (pid as u64) << PID_SHIFT | u64::from(image) << IMAGE_SHIFT | (start & START_MASK)
}

/// The pid a process word names.
pub fn pid_of_word(word: u64) -> u64 {
    word >> PID_SHIFT
}

/// True when process words `a` and `b` name one process (and program image): equal, or of
/// one pid where either has no start time (see [`process_word`]).
pub fn same_process(a: u64, b: u64) -> bool {
    let bare = |w: u64| w & (START_MASK | IMAGE_MASK) == 0;
    a == b || (a >> PID_SHIFT == b >> PID_SHIFT && (bare(a) || bare(b)))
}

/// This process's pid namespace (the inode of `/proc/self/ns/pid`), cached per pid (a
/// forked child may be in another namespace: its parent's `unshare` moves the children);
/// 0 when it cannot be read. Pids, and so process words, compare only within one
/// namespace.
pub fn pid_namespace() -> u64 {
    static CACHED_PID: AtomicU64 = AtomicU64::new(0);
    static CACHED_NS: AtomicU64 = AtomicU64::new(0);
    let me = pid() as u64;
    if CACHED_PID.load(Ordering::Acquire) == me {
        return CACHED_NS.load(Ordering::Relaxed);
    }
    // SAFETY: a zeroed stat is a valid out-parameter; the path is NUL-terminated.
    let ns = unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::stat(c"/proc/self/ns/pid".as_ptr(), &mut st) == 0 {
            st.st_ino
        } else {
            0
        }
    };
    // Threads of one process store the same pair; the pid is stored after the namespace.
    CACHED_NS.store(ns, Ordering::Relaxed);
    CACHED_PID.store(me, Ordering::Release);
    ns
}

/// The word naming process `pid` (running its current program) for the machine's uptime:
/// `pid << 42 | image << 34 | start time` (see the module docs; the image is 0 when this
/// process may not read the other's addresses). `None` when there is no such process (or
/// its start time cannot be read).
pub fn process_word_of(pid: i32) -> Option<u64> {
    match stat_of(pid) {
        Stat::Present { start, image, .. } => Some(word_of(pid, image, start)),
        _ => None,
    }
}

/// False only when the process a [`process_word`] names is known to be dead: its pid is
/// unused, or used by a process with another start time (the pid was reused), or names a
/// process that has exited and waits for its parent (a zombie), or one that runs another
/// program image now (it exec'd). Whatever cannot be told (`/proc` unreadable: out of file
/// descriptors, not mounted; the image of a process this one may not inspect) counts as
/// alive: taking a live process's heap would hand its slots out twice, leaving a dead
/// one's costs memory. A word without start time is alive while its pid is.
pub fn is_alive(word: u64) -> bool {
    let pid = (word >> PID_SHIFT) as i32;
    match stat_of(pid) {
        Stat::Gone => false,
        Stat::Unknown => true,
        Stat::Present {
            start,
            zombie,
            image,
        } => {
            let word_image = ((word & IMAGE_MASK) >> IMAGE_SHIFT) as u8;
            !zombie
                && (word & START_MASK == 0 || start & START_MASK == word & START_MASK)
                && (word_image == 0 || image == 0 || image == word_image)
        }
    }
}

/// What `/proc/PID/stat` says of a process.
enum Stat {
    /// No such process (the file does not exist, and `/proc/self/stat` does).
    Gone,
    /// It exists: its start time, whether it has exited (zombie or dead state), and the
    /// image of the program it runs (0: unknown).
    Present { start: u64, zombie: bool, image: u8 },
    /// Nothing can be told.
    Unknown,
}

/// Reads `/proc/PID/stat` (see [`Stat`]). Allocates nothing.
fn stat_of(pid: i32) -> Stat {
    if pid <= 0 {
        return Stat::Gone;
    }
    let mut buf = [0u8; 1024];
    match read_stat(pid, &mut buf) {
        Ok(n) => match parse_stat(&buf[..n]) {
            Some((start, state, image)) => Stat::Present {
                start,
                zombie: matches!(state, b'Z' | b'X' | b'x'),
                image,
            },
            None => Stat::Unknown,
        },
        Err(e) if e == libc::ENOENT || e == libc::ESRCH => {
            // SAFETY: the path is NUL-terminated.
            let proc_mounted =
                unsafe { libc::access(c"/proc/self/stat".as_ptr(), libc::R_OK) } == 0;
            if proc_mounted {
                Stat::Gone
            } else {
                Stat::Unknown
            }
        }
        Err(_) => Stat::Unknown,
    }
}

/// True when a process `pid` exists (`kill(pid, 0)`: delivered, or refused for want of
/// permission), whatever it is: a pid alone may have been reused (a process word names one
/// process, [`process_word_of`]).
pub fn pid_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 checks the target without sending anything.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Reads `/proc/PID/stat` into `buf`: the bytes read, or the errno of the open.
fn read_stat(pid: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // "/proc/" + at most 10 digits + "/stat" + NUL.
    let mut path = [0u8; 32];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        path[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(b"/proc/");
    let mut digits = [0u8; 10];
    let mut first = digits.len();
    let mut n = pid as u32;
    loop {
        first -= 1;
        digits[first] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(&digits[first..]);
    put(b"/stat");
    // SAFETY: `path` is NUL-terminated (the buffer is longer than what was written).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    let fd = Fd(check(fd).map_err(|e| e.raw_os_error().unwrap_or(0))?);
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: reads into the unfilled part of `buf`.
        let n = unsafe { libc::read(fd.0, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
    Ok(filled)
}

/// Field 22 (`starttime`), field 3 (`state`) and the program image (see [`image_of`]) of a
/// `/proc/PID/stat` line.
fn parse_stat(stat: &[u8]) -> Option<(u64, u8, u8)> {
    let state = *stat_fields(stat)?.next()?.first()?;
    Some((field_of_stat(stat, 22)?, state, image_of(stat)))
}

/// The fields of a `/proc/PID/stat` line from field 3 (`state`) on. The second field, the
/// command name in parentheses, may hold spaces and parentheses itself: fields are counted
/// after its last `)`.
fn stat_fields(stat: &[u8]) -> Option<impl Iterator<Item = &[u8]>> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    Some(
        stat[close + 1..]
            .split(|&b| b == b' ' || b == b'\n')
            .filter(|f| !f.is_empty()),
    )
}

/// Field `n` (from 3, counted as `proc(5)` does) of a `/proc/PID/stat` line, a number.
fn field_of_stat(stat: &[u8], n: usize) -> Option<u64> {
    let field = stat_fields(stat)?.nth(n.checked_sub(3)?)?;
    let mut v: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// The program image of a `/proc/PID/stat` line: 8 bits (1 to 255) hashed from fields 26,
/// 27 and 28 (`startcode`, `endcode`, `startstack`: laid out anew by every exec); 0 when
/// the line does not show them (the reader may not inspect the process: the kernel shows
/// 1, 1 and 0; or it has no memory: 0, 0, 0).
fn image_of(stat: &[u8]) -> u8 {
    let (Some(code), Some(end), Some(stack)) = (
        field_of_stat(stat, 26),
        field_of_stat(stat, 27),
        field_of_stat(stat, 28),
    ) else {
        return 0;
    };
    if stack == 0 {
        return 0;
    }
    let mixed =
        (code ^ end.rotate_left(21) ^ stack.rotate_left(42)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed >> 56) as u8).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_a_pid_that_is_not_running_has_none() {
        let mine = process_word_of(pid()).unwrap();
        assert_eq!(process_word_of(pid()), Some(mine));
        // Pids above the kernel's limit (at most 2^22) never exist.
        assert_eq!(process_word_of(i32::MAX), None);
        assert_eq!(process_word_of(0), None);
        assert!(pid_exists(pid()) && pid_exists(1));
        assert!(is_alive(process_word()));
        assert_eq!(process_word(), process_word_of(pid()).unwrap());
        assert!(
            !is_alive(process_word() + 1),
            "another start time: a reused pid"
        );
        assert!(!pid_exists(i32::MAX) && !pid_exists(0) && !pid_exists(-1));
        assert_eq!(process_word_of(-1), None);
        let line = b"42 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19";
        assert_eq!(field_of_stat(line, 22), Some(777));
        assert_eq!(image_of(line), 0, "no addresses shown");
        assert_eq!(field_of_stat(b"42 (x", 22), None);
    }

    #[test]
    fn only_what_proc_shows_dead_is_dead() {
        let me = process_word();
        // A word without start time (read out of file descriptors) names its pid.
        let pid_only = me >> PID_SHIFT << PID_SHIFT;
        assert!(is_alive(pid_only) && same_process(pid_only, me) && same_process(me, pid_only));
        assert!(!same_process(me, me + 1));
        // A child that exited and was not waited for yet (a zombie) is dead.
        // SAFETY: the child leaves at once through _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        let word = loop {
            if let Some(w) = process_word_of(child) {
                break w;
            }
        };
        while matches!(stat_of(child), Stat::Present { zombie: false, .. }) {
            std::thread::yield_now();
        }
        assert!(!is_alive(word), "a zombie is dead");
        let mut status = 0;
        // SAFETY: our own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(!is_alive(word), "a reaped child is dead");
        assert_ne!(pid_namespace(), 0, "this process's pid namespace");
    }

    /// A process that exec'd another program keeps its pid and start time, not its image:
    /// a word of this pid and start time with another image is dead, and names another
    /// process than this one; a word whose image is unknown (0) is alive.
    #[test]
    fn another_program_image_of_a_live_pid_is_dead() {
        let me = process_word();
        let image = ((me & IMAGE_MASK) >> IMAGE_SHIFT) as u8;
        assert_ne!(image, 0, "this process reads its own image");
        let start = me & START_MASK;
        let other = word_of(pid(), image.wrapping_add(1).max(1), start);
        assert!(!is_alive(other), "another image of this pid and start time");
        assert!(!same_process(me, other) && !same_process(other, me));
        let unknown = word_of(pid(), 0, start);
        assert!(is_alive(unknown), "an unknown image is alive");
        // A fork child runs the same image (read while it runs: a zombie shows none).
        // SAFETY: the child only waits to be killed.
        let child = unsafe { libc::fork() };
        if child == 0 {
            loop {
                // SAFETY: pause has no precondition.
                unsafe { libc::pause() };
            }
        }
        let word = loop {
            if let Some(w) = process_word_of(child) {
                break w;
            }
        };
        // SAFETY: our own child, killed and waited for.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, core::ptr::null_mut(), 0);
        }
        assert_eq!(word & IMAGE_MASK, me & IMAGE_MASK, "a fork child's image");
        // The kernel shows 1, 1, 0 for the addresses of a process the reader may not
        // inspect: unknown.
        let hidden = b"7 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20 21 1 1 0 9";
        assert_eq!(image_of(hidden), 0);
        let shown =
            b"7 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20 21 4096 8192 65536 9";
        assert_ne!(image_of(shown), 0);
        assert_eq!(field_of_stat(shown, 22), Some(777));
    }
}
