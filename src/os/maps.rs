//! What this process has mapped over a range of addresses, as `/proc/self/maps` lists it:
//! whether the range is mapped privately (caller memory: a fork child gets a copy of it),
//! and the holes in it, filled with read-only zeros (a fork child's range of memory its
//! parent advised `MADV_DONTFORK`). Nothing here allocates: the file is read through a
//! buffer on the stack, so these run in a fork child's handler too.
//!
//! Invariant: [`fill_holes`] never changes a byte of a mapping that exists; after it returns
//! true, every kernel page of its range is mapped (`holes(range) = ∅`).

use super::kernel_page_size;

/// Calls `f(lo, hi, private)` for each mapping `/proc/self/maps` lists that overlaps `[p,
/// end)`, in address order, until `f` returns false. False when the file could not be read
/// as far as `end` (it cannot be opened, a read fails, a line is longer than the buffer).
fn mappings_over(p: usize, end: usize, mut f: impl FnMut(usize, usize, bool) -> bool) -> bool {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 8192];
    let mut kept = 0;
    let read_all = 'read: loop {
        // SAFETY: reads into the unfilled part of `buf`.
        let n = unsafe { libc::read(fd, buf[kept..].as_mut_ptr().cast(), buf.len() - kept) };
        if n <= 0 {
            break n == 0; // The end of the file: every line was seen.
        }
        let filled = kept + n as usize;
        let mut start = 0;
        while let Some(nl) = buf[start..filled].iter().position(|&b| b == b'\n') {
            if let Some((lo, hi, private)) = maps_line(&buf[start..start + nl]) {
                // The lines are in address order: none after this one overlaps.
                if lo >= end {
                    break 'read true;
                }
                if hi > p && !f(lo, hi, private) {
                    break 'read true;
                }
            }
            start += nl + 1;
        }
        if start == 0 && filled == buf.len() {
            break false; // A line longer than the buffer: unknown.
        }
        buf.copy_within(start..filled, 0);
        kept = filled - start;
    };
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    read_all
}

/// True when every page of `[p, p + len)` is mapped privately in this process (a `p` in the
/// permissions of each mapping `/proc/self/maps` lists over it: copy-on-write, so no other
/// process ever sees a write to it, and a fork child gets a copy); false when some of it is
/// shared, unmapped, or the file cannot be read (then it may be shared).
pub(crate) fn is_private_mapping(p: usize, len: usize) -> bool {
    let end = p.saturating_add(len);
    // Where the private part met so far ends.
    let mut covered = p;
    let mut private = true;
    let read = mappings_over(p, end, |lo, hi, is_private| {
        private &= is_private && lo <= covered;
        covered = covered.max(hi);
        private
    });
    read && private && covered >= end
}

/// True when `/proc/self/maps` shows a page of `[p, p + len)` that no mapping covers; false
/// when none does, or the file cannot be read (then none is known).
pub(crate) fn has_hole(p: usize, len: usize) -> bool {
    let end = p.saturating_add(len);
    let mut covered = p;
    let mut hole = false;
    let read = mappings_over(p, end, |lo, hi, _| {
        hole |= lo > covered;
        covered = covered.max(hi);
        !hole
    });
    hole || read && covered < end
}

/// The most holes [`fill_holes`] notes in one read of the file (it reads it again for more).
const HOLES: usize = 32;

/// Maps private read-only zeros (`MAP_FIXED_NOREPLACE`: never over a mapping) on every
/// kernel page of `[p, p + len)` that no mapping covers, leaving the mapped ones as they
/// are: the range then reads zero wherever this process has nothing there, and no later
/// mapping of the process lands in it. One `mmap` when the whole range is a hole; else the
/// holes are found in `/proc/self/maps`. True when every hole was filled (false: the OS
/// refused a mapping, or the file could not be read).
pub(crate) fn fill_holes(p: usize, len: usize) -> bool {
    let page = kernel_page_size();
    let first = p.next_multiple_of(page);
    let end = p.saturating_add(len) & !(page - 1);
    if end <= first || map_hole(first, end - first) {
        return true;
    }
    // The holes are noted first and mapped once the file is closed: the file is not read
    // while its list changes. Each pass fills at least one hole, or ends.
    loop {
        let mut holes = [(0, 0); HOLES];
        let mut count = 0;
        let mut at = first;
        let read = mappings_over(first, end, |lo, hi, _| {
            if lo > at {
                holes[count] = (at, lo);
                count += 1;
            }
            at = at.max(hi);
            count < HOLES
        });
        if read && count < HOLES && at < end {
            holes[count] = (at, end);
            count += 1;
        }
        let filled = holes[..count].iter().all(|&(lo, hi)| map_hole(lo, hi - lo));
        if !read || !filled || count < HOLES {
            return read && filled;
        }
    }
}

/// Maps private read-only zeros exactly on `[p, p + len)` (whole kernel pages) if no
/// mapping covers any of it: true when it did.
fn map_hole(p: usize, len: usize) -> bool {
    // SAFETY: `MAP_FIXED_NOREPLACE` maps nothing over an existing mapping (it fails with
    // `EEXIST`); a kernel before Linux 4.17 ignores the flag and takes `p` as a hint, and
    // a mapping it made elsewhere is unmapped below, untouched.
    let got = unsafe {
        libc::mmap(
            p as *mut libc::c_void,
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if got == libc::MAP_FAILED {
        return false;
    }
    if got as usize != p {
        // SAFETY: the mapping just made at the kernel's choice, ours and unused.
        unsafe { libc::munmap(got, len) };
        return false;
    }
    true
}

/// The (start, end, private) of a `/proc/self/maps` line (`start-end perms ...`, hex
/// addresses; the permissions' fourth letter is `p` for a private mapping, `s` shared).
fn maps_line(line: &[u8]) -> Option<(usize, usize, bool)> {
    let hex = |s: &[u8]| {
        s.iter().try_fold(0usize, |v, &c| {
            let d = (c as char).to_digit(16)?;
            v.checked_mul(16)?.checked_add(d as usize)
        })
    };
    let mut fields = line.split(|&b| b == b' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let (lo, hi) = (hex(&range[..dash])?, hex(&range[dash + 1..])?);
    Some((lo, hi, *perms.get(3)? == b'p'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ptr;

    fn anonymous(len: usize, flags: libc::c_int) -> *mut u8 {
        // SAFETY: a fresh anonymous mapping at the kernel's choice.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p.cast()
    }

    #[test]
    fn private_and_shared_mappings_are_told_apart() {
        let len = 4 * kernel_page_size();
        for (flags, private) in [(libc::MAP_PRIVATE, true), (libc::MAP_SHARED, false)] {
            let p = anonymous(len, flags);
            assert_eq!(is_private_mapping(p as usize, len), private, "{flags:#x}");
            assert_eq!(is_private_mapping(p as usize + 4096, 4096), private);
            // SAFETY: ours, unused.
            unsafe { libc::munmap(p.cast(), len) };
        }
        // No mapping: not known private. (Not the address just unmapped: the tests' other
        // threads may map it again meanwhile. The first page above 0 is below the lowest
        // address a program may map.)
        let unmapped = kernel_page_size();
        assert!(
            !is_private_mapping(unmapped, len),
            "unmapped: not known private"
        );
        assert_eq!(
            maps_line(b"7f00-7f10 rw-s 0 00:01 1 /dev/zero"),
            Some((0x7f00, 0x7f10, false))
        );
        assert_eq!(maps_line(b"garbage"), None);
    }

    /// Holes punched in a mapping (a page at each end, and more than one pass's worth in
    /// between) are filled with zeros; the pages left mapped keep their bytes and stay
    /// writable. In a fork child, whose only thread maps nothing into the holes meanwhile
    /// (the test harness's other threads would); its exit code names the check that failed.
    #[test]
    fn holes_read_zero_and_mapped_pages_are_kept() {
        // SAFETY: the child runs `punch_and_fill` on its only thread, which allocates
        // nothing, and leaves through `_exit`.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::alarm(10);
                libc::_exit(punch_and_fill());
            }
        }
        let mut status = 0;
        // SAFETY: our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "the check that failed");
    }

    /// [`holes_read_zero_and_mapped_pages_are_kept`]'s checks: 0, or the failed one's number.
    fn punch_and_fill() -> i32 {
        let page = kernel_page_size();
        let pages = 4 * HOLES + 4;
        let len = pages * page;
        let p = anonymous(len, libc::MAP_PRIVATE);
        // Every other page unmapped (the first and the last among them), the others written.
        let written = |i: usize| i % 2 == 1 && i != pages - 1;
        for i in 0..pages {
            // SAFETY: pages of our mapping.
            unsafe {
                if !written(i) {
                    libc::munmap(p.add(i * page).cast(), page);
                } else {
                    p.add(i * page).write_bytes(0xa5, page);
                }
            }
        }
        if is_private_mapping(p as usize, len) || !has_hole(p as usize, len) {
            return 1;
        }
        if !fill_holes(p as usize, len) {
            return 2;
        }
        if !is_private_mapping(p as usize, len) || has_hole(p as usize, len) {
            return 3; // a page left unmapped
        }
        for i in 0..pages {
            // SAFETY: every page of the range is mapped readable now.
            let bytes = unsafe { core::slice::from_raw_parts(p.add(i * page), page) };
            let want = if written(i) { 0xa5 } else { 0 };
            if bytes.iter().any(|&b| b != want) {
                return 4;
            }
            if written(i) {
                // SAFETY: a page of ours, still writable.
                unsafe { p.add(i * page).write(1) };
            }
        }
        // Filled already: nothing to do, and true.
        if !fill_holes(p as usize, len) {
            return 5;
        }
        0
    }
}
