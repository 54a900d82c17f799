//! Memory a test provides to a region ([`cohort::Cohort::format_in`]): an anonymous file,
//! mapped shared at an address aligned to a block, as many times as wanted (each mapping
//! at another address).

/// A shared mapping of `fd`'s first `len` bytes at an address aligned to 2 MiB.
pub fn map_aligned(fd: i32, len: usize) -> *mut u8 {
    const ALIGN: usize = 2 << 20;
    // SAFETY: a fresh reservation, then the file mapped over an aligned part of it.
    unsafe {
        let raw = libc::mmap(
            std::ptr::null_mut(),
            len + ALIGN,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        assert_ne!(raw, libc::MAP_FAILED);
        let at = (raw as usize).next_multiple_of(ALIGN);
        let p = libc::mmap(
            at as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            0,
        );
        assert_eq!(p as usize, at);
        p.cast()
    }
}

/// An anonymous file of `len` bytes.
pub fn memfd(len: usize) -> i32 {
    // SAFETY: a new anonymous file of ours, sized.
    unsafe {
        let fd = libc::memfd_create(c"cohort-test-memory".as_ptr(), 0);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
        fd
    }
}

/// An anonymous file of `len` bytes mapped as [`map_aligned`] does, every byte garbage
/// (`0xee`): memory a region formatted in must not assume reads zero. Returns (file, mapping).
pub fn garbage_mapping(len: usize) -> (i32, *mut u8) {
    let fd = memfd(len);
    let p = map_aligned(fd, len);
    // SAFETY: the mapping is ours, `len` bytes.
    unsafe { p.write_bytes(0xee, len) };
    (fd, p)
}

/// A private anonymous mapping of `len` bytes at an address aligned to 2 MiB (memory shared
/// with no other process: a region formatted in it is this process's alone), never
/// unmapped.
pub fn private_aligned(len: usize) -> *mut u8 {
    const ALIGN: usize = 2 << 20;
    // SAFETY: a fresh private mapping, of which an aligned part is used.
    unsafe {
        let raw = libc::mmap(
            std::ptr::null_mut(),
            len + ALIGN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        assert_ne!(raw, libc::MAP_FAILED);
        (raw as usize).next_multiple_of(ALIGN) as *mut u8
    }
}
