//! Memory that other processes see: named POSIX shared memory (`shm_open`), files on disk
//! and shared anonymous memory (inherited by `fork` children), mapped `MAP_SHARED` at an address aligned to a block, wherever the kernel finds
//! room (so the same region sits at different addresses in different processes); and the
//! start time of a process, which tells a live process from a later one that reuses its pid.
//! Beside them: a second mapping of shared memory at another address (`mremap`), giving a
//! shared range's memory back for every process (`MADV_REMOVE`: `MADV_DONTNEED` only drops
//! this process's view of a shared page, and does not zero it for the others), and random
//! bits from the kernel.
//!
//! Names are turned into C strings in a buffer on the stack ([`CName`]): nothing here
//! allocates, like the rest of [`crate::os`].
//!
//! Invariants: a [`Fd`] owns its descriptor and closes it once, when dropped; a mapping made
//! by [`map_shared`] is exactly `len` bytes at an address `a` with `a % align == 0`, and
//! nothing else of the over-reservation it was carved from stays mapped.

use core::ffi::CStr;
use core::ptr;
use std::io;

mod process;
pub use process::*;

/// The longest name (in bytes, without the terminating NUL) a [`CName`] holds: Linux's
/// `PATH_MAX` less one.
pub const NAME_MAX_BYTES: usize = 4095;

/// Which namespace a name lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// POSIX named shared memory: `shm_open` names (on Linux, files of `/dev/shm`), which
    /// live until unlinked or the machine restarts.
    SharedMemory,
    /// A file on disk, which lives until deleted.
    File,
}

/// A NUL-terminated copy of a name, on the stack.
pub struct CName {
    bytes: [u8; NAME_MAX_BYTES + 1],
}

impl CName {
    /// The name `bytes` as a C string, or `None` when it is empty, holds a NUL byte or is
    /// longer than [`NAME_MAX_BYTES`].
    pub fn new(bytes: &[u8]) -> Option<CName> {
        if bytes.is_empty() || bytes.len() > NAME_MAX_BYTES || bytes.contains(&0) {
            return None;
        }
        let mut name = CName {
            bytes: [0; NAME_MAX_BYTES + 1],
        };
        name.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(name)
    }

    /// The C string.
    pub fn as_c_str(&self) -> &CStr {
        // The buffer ends with at least one NUL (the name is shorter than the buffer).
        CStr::from_bytes_until_nul(&self.bytes).expect("a CName holds a NUL")
    }
}

/// An open file descriptor, closed when dropped.
#[derive(Debug)]
pub struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed only here.
        unsafe { libc::close(self.0) };
    }
}

/// The result of a system call returning -1 on failure, as an [`io::Result`].
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn open_flags(kind: Kind, name: &CName, flags: libc::c_int) -> io::Result<Fd> {
    let flags = flags | libc::O_CLOEXEC;
    let mode: libc::mode_t = 0o600;
    // SAFETY: the name is a NUL-terminated string that outlives the call.
    let fd = unsafe {
        match kind {
            Kind::SharedMemory => libc::shm_open(name.as_c_str().as_ptr(), flags, mode),
            Kind::File => libc::open(name.as_c_str().as_ptr(), flags, libc::c_uint::from(mode)),
        }
    };
    check(fd).map(Fd)
}

/// Creates `name`, failing with `AlreadyExists` when it exists: of processes racing to
/// create the same name, exactly one succeeds. Read-write, for this user only.
pub fn create_exclusive(kind: Kind, name: &CName) -> io::Result<Fd> {
    open_flags(kind, name, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)
}

/// Opens the existing `name` read-write (`NotFound` when there is none).
pub fn open_existing(kind: Kind, name: &CName) -> io::Result<Fd> {
    open_flags(kind, name, libc::O_RDWR)
}

/// Opens the existing `name` for reading only (`NotFound` when there is none): enough for
/// [`map_read_only`], and possible where the caller may not write it.
pub fn open_read_only(kind: Kind, name: &CName) -> io::Result<Fd> {
    open_flags(kind, name, libc::O_RDONLY)
}

/// Deletes `name` (`shm_unlink` or `unlink`): mappings of it stay valid until unmapped, and
/// the memory goes when the last one does.
pub fn unlink(kind: Kind, name: &CName) -> io::Result<()> {
    // SAFETY: the name is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        match kind {
            Kind::SharedMemory => libc::shm_unlink(name.as_c_str().as_ptr()),
            Kind::File => libc::unlink(name.as_c_str().as_ptr()),
        }
    };
    check(rc).map(drop)
}

impl Fd {
    /// The length of what the descriptor names, in bytes (`fstat`).
    pub fn len(&self) -> io::Result<u64> {
        // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: the descriptor is open and `st` is a writable stat.
        check(unsafe { libc::fstat(self.0, &mut st) })?;
        Ok(st.st_size as u64)
    }

    /// The device and inode of what the descriptor names (`fstat`): a copy has others.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: the descriptor is open and `st` is a writable stat.
        check(unsafe { libc::fstat(self.0, &mut st) })?;
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// Sets the length (`ftruncate`): the new bytes read zero and take no memory or disk
    /// until written.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        let len =
            libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: the descriptor is open.
        check(unsafe { libc::ftruncate(self.0, len) }).map(drop)
    }
}

impl Fd {
    /// Allocates the storage of the first `len` bytes now (`posix_fallocate`), so that
    /// writing them later cannot fail for lack of space (which a mapping reports as
    /// `SIGBUS`). Fails with the OS's error (`ENOSPC` when there is no room).
    pub fn allocate(&self, len: u64) -> io::Result<()> {
        let len =
            libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: the descriptor is open; posix_fallocate returns the error number.
        match unsafe { libc::posix_fallocate(self.0, 0, len) } {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Another descriptor of what this one names (`F_DUPFD_CLOEXEC`).
    pub fn try_clone(&self) -> io::Result<Fd> {
        // SAFETY: the descriptor is open; the new one is ours to close.
        check(unsafe { libc::fcntl(self.0, libc::F_DUPFD_CLOEXEC, 0) }).map(Fd)
    }

    /// The parts of `[from, to)` that may hold bytes other than zero, in order: everything
    /// but the file's holes (`SEEK_DATA`, `SEEK_HOLE`), or the whole range where the file
    /// system cannot tell.
    pub fn data_extents(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        let seek = |at: u64, whence| -> Option<u64> {
            let at = libc::off_t::try_from(at).ok()?;
            // SAFETY: the descriptor is open; lseek only moves its offset.
            let r = unsafe { libc::lseek(self.0, at, whence) };
            u64::try_from(r).ok()
        };
        let mut extents = Vec::new();
        let mut at = from;
        while at < to {
            let Some(data) = seek(at, libc::SEEK_DATA) else {
                if io::Error::last_os_error().raw_os_error() != Some(libc::ENXIO) {
                    extents.push((at, to)); // cannot tell: all of it
                }
                break; // ENXIO: no data after `at`
            };
            if data >= to {
                break;
            }
            let hole = seek(data, libc::SEEK_HOLE).map_or(to, |h| h.min(to));
            let hole = if hole > data { hole } else { to };
            extents.push((data, hole));
            at = hole;
        }
        extents
    }

    /// Bytes of storage allocated to what the descriptor names (`st_blocks * 512`).
    #[cfg(test)]
    pub fn allocated(&self) -> io::Result<u64> {
        // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        // SAFETY: the descriptor is open and `st` is a writable stat.
        check(unsafe { libc::fstat(self.0, &mut st) })?;
        Ok(st.st_blocks as u64 * 512)
    }
}

/// Maps the first `len` bytes of `fd` read-only at an address of the kernel's choice, to
/// read a header without the power to change it.
pub fn map_read_only(fd: &Fd, len: usize) -> io::Result<*const u8> {
    // SAFETY: a new mapping at an address of the kernel's choice touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.0,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast_const().cast())
}

/// Maps the first `len` bytes of `fd` read-write and shared (every process mapping them
/// sees every write), at an address aligned to `align` (a power of two, a multiple of the
/// kernel's page) that the kernel picks. The descriptor may be closed afterwards: the
/// mapping stays.
pub fn map_shared(fd: &Fd, len: usize, align: usize) -> io::Result<*mut u8> {
    map_aligned(len, align, libc::MAP_SHARED, fd.0)
}

/// Maps `len` bytes of zeroed shared anonymous memory (`MAP_SHARED | MAP_ANONYMOUS`) at an
/// address aligned to `align` (as for [`map_shared`]): a `fork` child shares it with its
/// parent rather than getting a copy. Null when the OS refuses.
pub fn map_shared_anonymous(len: usize, align: usize) -> *mut u8 {
    map_aligned(len, align, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1).unwrap_or(ptr::null_mut())
}

/// `len` bytes read-write with `flags` (and `fd`, or -1), at an address aligned to `align`:
/// an inaccessible reservation of `len + align` bytes holds the place, the mapping replaces
/// its aligned part, and the rest of the reservation is given back.
fn map_aligned(
    len: usize,
    align: usize,
    flags: libc::c_int,
    fd: libc::c_int,
) -> io::Result<*mut u8> {
    debug_assert!(align.is_power_of_two() && align >= super::MIN_PAGE);
    let over = len
        .checked_add(align)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: a new mapping at an address of the kernel's choice touches no existing memory.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            over,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = (raw as usize + align - 1) & !(align - 1);
    // SAFETY: [start, start + len) lies inside the reservation just made, which nothing else
    // uses: MAP_FIXED replaces part of it.
    let p = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_FIXED,
            fd,
            0,
        )
    };
    let error = (p == libc::MAP_FAILED).then(io::Error::last_os_error);
    let head = start - raw as usize;
    let tail = over - head - len;
    // SAFETY: the trimmed ranges are the reservation's own, outside [start, start + len);
    // on failure the whole reservation goes.
    unsafe {
        if error.is_some() {
            libc::munmap(raw, over);
        } else {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(start as *mut u8),
    }
}

/// Maps the shared memory of `[old, old + len)` a second time, at a fresh address aligned
/// to `align` (the first mapping stays). Null when the OS refuses.
///
/// # Safety
/// `[old, old + len)` is a shared mapping of this process (`MAP_SHARED`), page aligned.
#[cfg(test)]
pub unsafe fn map_again(old: *mut u8, len: usize, align: usize) -> *mut u8 {
    let hole = super::reserve(len, align);
    if hole.is_null() {
        return hole;
    }
    // SAFETY: `mremap` with an old size of 0 duplicates a shared mapping (the caller's);
    // MREMAP_FIXED places the copy over the reservation just made, which nothing uses.
    let p = unsafe {
        libc::mremap(
            old.cast(),
            0,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            hole.cast::<libc::c_void>(),
        )
    };
    if p == libc::MAP_FAILED {
        // SAFETY: the reservation above, unused.
        unsafe { super::unmap(hole, len) };
        return ptr::null_mut();
    }
    p.cast()
}

/// Frees the memory of a page-aligned range of a shared mapping: every process then reads
/// zeros there. Returns false when the kernel cannot (the caller must not assume zeros).
///
/// # Safety
/// `[ptr, ptr + len)` is a page-aligned range of a shared mapping of ours whose contents no
/// process needs.
pub unsafe fn remove_shared(ptr: *mut u8, len: usize) -> bool {
    // SAFETY: the caller's guarantee.
    unsafe { libc::madvise(ptr.cast(), len, libc::MADV_REMOVE) == 0 }
}

/// 32 random bits from the kernel (`getrandom`), or, should it fail, bits of the time and
/// the pid.
pub fn random_u32() -> u32 {
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

/// Writes the mapping's changed pages to the file and waits until they are written
/// (`msync(MS_SYNC)`).
///
/// # Safety
/// `[ptr, ptr + len)` is a mapping made by [`map_shared`].
pub unsafe fn sync(ptr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is a shared mapping of ours.
    check(unsafe { libc::msync(ptr.cast(), len, libc::MS_SYNC) }).map(drop)
}

/// Leaves a mapping made by [`map_shared`] or [`map_shared_anonymous`]: writes its changed
/// pages to the file first when `sync` (a file's region; the error of that write, if any,
/// is returned, and the mapping is gone either way), then unmaps it.
///
/// # Safety
/// `[ptr, ptr + len)` is such a mapping, and nothing uses it any more.
pub unsafe fn leave(ptr: *mut u8, len: usize, sync: bool) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is a shared mapping of ours, now unused.
    unsafe {
        let synced = if sync { self::sync(ptr, len) } else { Ok(()) };
        unmap_shared(ptr, len);
        synced
    }
}

/// Unmaps a mapping made by [`map_shared`], [`map_shared_anonymous`] or [`map_read_only`].
///
/// # Safety
/// `[ptr, ptr + len)` is such a mapping, and nothing uses it any more.
pub unsafe fn unmap_shared(ptr: *const u8, len: usize) {
    // SAFETY: the caller guarantees the mapping is ours and unused.
    unsafe { libc::munmap(ptr.cast_mut().cast(), len) };
}

/// A hash of this boot's id (`/proc/sys/kernel/random/boot_id`, new at every start of the
/// machine), never 0.
pub fn boot_id_hash() -> io::Result<u64> {
    let path = c"/proc/sys/kernel/random/boot_id";
    // SAFETY: a NUL-terminated path.
    let fd = Fd(check(unsafe {
        libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)
    })?);
    let mut buf = [0u8; 64];
    // SAFETY: reads into `buf`.
    let n = unsafe { libc::read(fd.0, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Err(if n == 0 {
            io::Error::from_raw_os_error(libc::EIO)
        } else {
            io::Error::last_os_error()
        });
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &buf[..n as usize] {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    Ok(h.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_name(tag: &str) -> Vec<u8> {
        format!("/cohort-os-test-{tag}-{}", pid()).into_bytes()
    }

    #[test]
    fn names_are_checked() {
        assert!(CName::new(b"").is_none());
        assert!(CName::new(b"a\0b").is_none());
        assert!(CName::new(&[b'a'; NAME_MAX_BYTES + 1]).is_none());
        let n = CName::new(&[b'a'; NAME_MAX_BYTES]).unwrap();
        assert_eq!(n.as_c_str().to_bytes().len(), NAME_MAX_BYTES);
    }

    #[test]
    fn exclusive_create_then_open_map_twice_and_unlink() {
        let name = CName::new(&temp_name("map")).unwrap();
        let _ = unlink(Kind::SharedMemory, &name);
        let fd = create_exclusive(Kind::SharedMemory, &name).unwrap();
        let again = create_exclusive(Kind::SharedMemory, &name).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        let len = 4 << 20;
        fd.set_len(len as u64).unwrap();
        assert_eq!(fd.len().unwrap(), len as u64);
        let align = 2 << 20;
        let a = map_shared(&fd, len, align).unwrap();
        let other = open_existing(Kind::SharedMemory, &name).unwrap();
        let b = map_shared(&other, len, align).unwrap();
        drop((fd, other));
        assert_ne!(a, b, "two mappings of one object, at two addresses");
        assert_eq!(a as usize % align, 0);
        assert_eq!(b as usize % align, 0);
        // SAFETY: both map `len` bytes of the same object.
        unsafe {
            a.add(len - 1).write_volatile(7);
            assert_eq!(
                b.add(len - 1).read_volatile(),
                7,
                "one memory, two addresses"
            );
            unmap_shared(a, len);
            unmap_shared(b, len);
        }
        unlink(Kind::SharedMemory, &name).unwrap();
        let gone = open_existing(Kind::SharedMemory, &name).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn shared_anonymous_memory_is_aligned_zeroed_and_shared_with_a_fork_child() {
        let (len, align) = (4 << 20, 2 << 20);
        let p = map_shared_anonymous(len, align);
        assert!(!p.is_null());
        assert_eq!(p as usize % align, 0);
        // SAFETY: p maps len bytes; the child only writes one byte and exits.
        unsafe {
            assert_eq!(p.add(len - 1).read_volatile(), 0);
            let child = libc::fork();
            assert!(child >= 0);
            if child == 0 {
                p.add(len - 1).write_volatile(42);
                libc::_exit(0);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(child, &mut status, 0), child);
            assert_eq!(
                p.add(len - 1).read_volatile(),
                42,
                "the child's write is seen"
            );
            leave(p, len, false).unwrap();
        }
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
