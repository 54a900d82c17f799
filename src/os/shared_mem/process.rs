//! Processes named across a region's users: a process word (`pid << 40 | start time`),
//! the pid namespace it is read in, and whether the process it names is known to be dead
//! (from `/proc/PID/stat`; what cannot be told counts as alive).

use super::{check, Fd};
use core::sync::atomic::{AtomicU64, Ordering};
use std::io;

/// This process's id.
pub fn pid() -> i32 {
    // SAFETY: getpid has no precondition.
    unsafe { libc::getpid() }
}

/// Bits of a process word ([`process_word`]) holding the start time.
const START_BITS: u32 = 40;

/// This process's word, cached (`pid << 40 | start time`, see [`process_word_of`]): the
/// cache is checked against `getpid` on every call, so a forked child computes its own.
/// When the start time cannot be read now (out of file descriptors, say) the word has none
/// (`pid << 40`, never cached): such a word names its process by pid alone
/// ([`same_process`], [`is_alive`]).
pub fn process_word() -> u64 {
    static CACHE: AtomicU64 = AtomicU64::new(0);
    let me = pid();
    let cached = CACHE.load(Ordering::Relaxed);
    if cached != 0 && cached >> START_BITS == me as u64 {
        return cached;
    }
    match process_word_of(me) {
        Some(word) => {
            CACHE.store(word, Ordering::Relaxed);
            word
        }
        None => (me as u64) << START_BITS,
    }
}

/// The process word of `pid` started at `start` (see [`process_word_of`]).
pub fn word_of(pid: i32, start: u64) -> u64 {
    (pid as u64) << START_BITS | (start & START_MASK)
}

/// The pid a process word names.
pub fn pid_of_word(word: u64) -> u64 {
    word >> START_BITS
}

/// The start-time bits of a process word.
const START_MASK: u64 = (1 << START_BITS) - 1;

/// True when process words `a` and `b` name one process: equal, or of one pid where either
/// has no start time (see [`process_word`]).
pub fn same_process(a: u64, b: u64) -> bool {
    a == b || (a >> START_BITS == b >> START_BITS && (a & START_MASK == 0 || b & START_MASK == 0))
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

/// The word naming process `pid` for the machine's uptime: `pid << 40 | start time` (the
/// start time's low 40 bits: 348 years of clock ticks at 100 Hz). `None` when there is no
/// such process (or its start time cannot be read).
pub fn process_word_of(pid: i32) -> Option<u64> {
    let start = process_start_time(pid)?;
    Some(word_of(pid, start))
}

/// False only when the process a [`process_word`] names is known to be dead: its pid is
/// unused, or used by a process with another start time (the pid was reused), or names a
/// process that has exited and waits for its parent (a zombie). Whatever cannot be told
/// (`/proc` unreadable: out of file descriptors, not mounted) counts as alive: taking a
/// live process's heap would hand its slots out twice, leaving a dead one's costs memory.
/// A word without start time is alive while its pid is.
pub fn is_alive(word: u64) -> bool {
    let pid = (word >> START_BITS) as i32;
    match stat_of(pid) {
        Stat::Gone => false,
        Stat::Unknown => true,
        Stat::Present { start, zombie } => {
            !zombie && (word & START_MASK == 0 || start & START_MASK == word & START_MASK)
        }
    }
}

/// What `/proc/PID/stat` says of a process.
enum Stat {
    /// No such process (the file does not exist, and `/proc/self/stat` does).
    Gone,
    /// It exists: its start time, and whether it has exited (zombie or dead state).
    Present { start: u64, zombie: bool },
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
            Some((start, state)) => Stat::Present {
                start,
                zombie: matches!(state, b'Z' | b'X' | b'x'),
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
/// permission), whatever it is: a pid alone may have been reused, see
/// [`process_start_time`].
pub fn pid_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 checks the target without sending anything.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`), or
/// `None` when there is no such process (or `/proc` cannot be read). A pid is reused once
/// its process is gone, by a process that started later: `(pid, start time)` names one
/// process for the life of the machine.
pub fn process_start_time(pid: i32) -> Option<u64> {
    match stat_of(pid) {
        Stat::Present { start, .. } => Some(start),
        _ => None,
    }
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

/// Field 22 (`starttime`) and field 3 (`state`) of a `/proc/PID/stat` line.
fn parse_stat(stat: &[u8]) -> Option<(u64, u8)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let state = *stat[close + 1..].iter().find(|&&b| b != b' ')?;
    Some((start_time_of_stat(stat)?, state))
}

/// Field 22 (`starttime`) of a `/proc/PID/stat` line. The second field, the command name in
/// parentheses, may hold spaces and parentheses itself: fields are counted after its last
/// `)`.
fn start_time_of_stat(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    // After ")": field 3 (state) is the first; starttime is field 22, the 20th after it.
    let field = stat[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    let mut n: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_a_pid_that_is_not_running_has_none() {
        let mine = process_start_time(pid()).unwrap();
        assert_eq!(process_start_time(pid()), Some(mine));
        // Pids above the kernel's limit (at most 2^22) never exist.
        assert_eq!(process_start_time(i32::MAX), None);
        assert_eq!(process_start_time(0), None);
        assert!(pid_exists(pid()) && pid_exists(1));
        assert!(is_alive(process_word()));
        assert_eq!(process_word(), process_word_of(pid()).unwrap());
        assert!(
            !is_alive(process_word() + 1),
            "another start time: a reused pid"
        );
        assert!(!pid_exists(i32::MAX) && !pid_exists(0) && !pid_exists(-1));
        assert_eq!(process_start_time(-1), None);
        let line = b"42 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19";
        assert_eq!(start_time_of_stat(line), Some(777));
        assert_eq!(start_time_of_stat(b"42 (x"), None);
    }

    #[test]
    fn only_what_proc_shows_dead_is_dead() {
        let me = process_word();
        // A word without start time (read out of file descriptors) names its pid.
        let pid_only = me >> START_BITS << START_BITS;
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
}
