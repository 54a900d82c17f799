//! Where memory is placed and how it behaves: committing and prefaulting a range up front,
//! locking it in RAM (`mlock`), binding it to NUMA nodes (`mbind`), transparent huge pages
//! (`MADV_HUGEPAGE`) and explicit huge pages (`MAP_HUGETLB`). Each call returns the OS's
//! `errno` when it refuses, so the caller can say what failed; none allocates.

use core::ptr;

/// `madvise` advice that faults a range in, writable, in one call (Linux 5.14).
pub(crate) const MADV_POPULATE_WRITE: libc::c_int = 23;
/// `mlock2` flag: lock pages as they are faulted in, not now.
const MLOCK_ONFAULT: libc::c_uint = 1;
/// The node bits `mbind` is given (one word).
const MAX_NODES: usize = 64;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Faults every page of `[p, p + len)` in, writable (`MADV_POPULATE_WRITE`), so that no
/// later access takes a page fault. On kernels without it: a write of each page's first
/// byte, rewriting what it holds; or, with `in_use` (others may be writing the range), a
/// read of it, which maps the page without changing a byte.
///
/// # Safety
/// The range is mapped readable and writable and page aligned; unless `in_use`, nobody
/// else writes it meanwhile.
pub(crate) unsafe fn prefault(p: *mut u8, len: usize, in_use: bool) -> Result<(), i32> {
    // SAFETY: the caller's range.
    if unsafe { libc::madvise(p.cast(), len, MADV_POPULATE_WRITE) } == 0 {
        return Ok(());
    }
    match errno() {
        // Unknown advice (an older kernel): touch each page instead.
        libc::EINVAL => {}
        e => return Err(e),
    }
    let page = super::kernel_page_size();
    for at in (0..len).step_by(page) {
        // SAFETY: in the caller's range; read, or (nobody writes meanwhile) the same byte
        // written back.
        unsafe {
            let q = p.add(at);
            let byte = q.read_volatile();
            if !in_use {
                q.write_volatile(byte);
            }
        }
    }
    Ok(())
}

/// Locks `[p, p + len)` in RAM: its pages now (`mlock`), or as they are first touched
/// with `on_fault` (`mlock2(MLOCK_ONFAULT)`: a lazily committed region's blocks are locked
/// when committed and used). `ENOMEM` or `EPERM` when `RLIMIT_MEMLOCK` is too small.
///
/// # Safety
/// The range is a mapping of ours, page aligned.
pub(crate) unsafe fn lock(p: *mut u8, len: usize, on_fault: bool) -> Result<(), i32> {
    // SAFETY: the caller's range; locking changes no contents.
    let rc = unsafe {
        if on_fault {
            libc::mlock2(p.cast(), len, MLOCK_ONFAULT)
        } else {
            libc::mlock(p.cast(), len)
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Binds `[p, p + len)` to the NUMA nodes of `nodes` (bit `n` for node `n`, nodes below
/// 64): its pages are allocated there only (`mbind(MPOL_BIND)`, pages already there moved).
/// `EINVAL` for a node the machine does not have (or this process may not use: `mbind`
/// alone would drop such a node when another is there), `ENOSYS` without NUMA support.
///
/// # Safety
/// The range is a mapping of ours, page aligned.
pub(crate) unsafe fn bind(p: *mut u8, len: usize, nodes: u64) -> Result<(), i32> {
    const MPOL_MF_MOVE: libc::c_ulong = 1 << 1;
    if nodes & !allowed_nodes()? != 0 {
        return Err(libc::EINVAL);
    }
    let mask: [libc::c_ulong; 1] = [nodes as libc::c_ulong];
    // SAFETY: the caller's range; `mask` holds MAX_NODES bits. (maxnode counts one more
    // than the bits the kernel reads.)
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            p,
            len,
            libc::MPOL_BIND,
            mask.as_ptr(),
            MAX_NODES + 1,
            MPOL_MF_MOVE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// The NUMA nodes below 64 this process may allocate on (`get_mempolicy` with
/// `MPOL_F_MEMS_ALLOWED`), bit `n` for node `n`.
fn allowed_nodes() -> Result<u64, i32> {
    const MPOL_F_MEMS_ALLOWED: libc::c_ulong = 1 << 2;
    // Room for 1024 nodes: the kernel refuses a mask shorter than its node count.
    let mut mask = [0 as libc::c_ulong; 16];
    let mut mode: libc::c_int = 0;
    // SAFETY: the out-parameters are ours; `mask` holds 1024 bits (maxnode counts one
    // more).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            &mut mode as *mut libc::c_int,
            mask.as_mut_ptr(),
            16 * 64 + 1,
            core::ptr::null_mut::<libc::c_void>(),
            MPOL_F_MEMS_ALLOWED,
        )
    };
    if rc == 0 {
        Ok(mask[0])
    } else {
        Err(errno())
    }
}

/// Asks for transparent huge pages over `[p, p + len)` (`MADV_HUGEPAGE`): 2 MiB blocks,
/// aligned to their size, fit them exactly. `EINVAL` when the kernel has no THP.
///
/// # Safety
/// The range is a mapping of ours, page aligned.
pub(crate) unsafe fn advise_huge(p: *mut u8, len: usize) -> Result<(), i32> {
    // SAFETY: the caller's range; the advice changes no contents.
    if unsafe { libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Maps `len` bytes (a multiple of 2 MiB) of private memory in explicit 2 MiB huge pages
/// (`MAP_HUGETLB`), aligned to 2 MiB, reading zero. `ENOMEM` when the machine has too few
/// huge pages reserved (`/proc/sys/vm/nr_hugepages`).
pub(crate) fn map_huge(len: usize) -> Result<*mut u8, i32> {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choice.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(p.cast())
    }
}

/// `RLIMIT_MEMLOCK`'s soft limit in bytes (`u64::MAX` when unlimited or unknown).
pub(crate) fn memlock_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is ours to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return u64::MAX;
    }
    r.rlim_cur
}
