//! Plain medium requests' clean pages faulted in at allocation, on evidence only: a freed
//! buffer the program wrote whole turns it on, a freed buffer written in part turns it
//! off, and what it may fault in without new evidence is bounded (the credit: 8 MiB plus a
//! 32nd of the live medium bytes). Buffers written in part stay sparse (RED-55); buffers
//! written whole cost one call a range instead of a page fault a page.
//!
//! Residence is read per buffer (`mincore`), never process-wide, so the tests may run at
//! once. On a kernel without `MADV_POPULATE_WRITE` (before Linux 5.14) nothing is faulted in
//! ahead: the test that expects it says so and checks the rest only.

mod common;

use cohort::Cohort;
use common::kernel_view::resident_bytes;
use std::alloc::Layout;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The kernel's page: what one written byte brings in.
const KERNEL_PAGE: usize = 4096;

/// The allocator's page (`COHORT_PAGE_SIZE`): a populated range is whole such pages.
fn page(a: &Cohort<()>) -> usize {
    a.usable_size(Layout::from_size_align(1, 8192).unwrap())
}

/// Whether the kernel faults a range in on request (`MADV_POPULATE_WRITE`, Linux 5.14).
fn kernel_populates() -> bool {
    // SAFETY: a fresh private mapping of one page, advised, then unmapped.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            KERNEL_PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let ok = libc::madvise(p, KERNEL_PAGE, 23) == 0;
        libc::munmap(p, KERNEL_PAGE);
        ok
    }
}

/// A buffer of `size` bytes written whole.
fn written_whole(a: &Cohort<()>, size: usize) -> *mut u8 {
    let p = a.malloc(size, ());
    assert!(!p.is_null());
    // SAFETY: p holds size bytes.
    unsafe { p.write_bytes(7, size) };
    p
}

/// A buffer of `size` bytes written in its first byte only.
fn written_in_one_byte(a: &Cohort<()>, size: usize) -> *mut u8 {
    let p = a.malloc(size, ());
    assert!(!p.is_null());
    // SAFETY: p holds size bytes.
    unsafe { p.write(7) };
    p
}

fn free_all(a: &Cohort<()>, ps: &[*mut u8], size: usize) {
    for &p in ps {
        // SAFETY: live, of `size` bytes, freed once.
        unsafe { a.free(p, size, ()) };
    }
}

/// Evidence first: before any buffer was freed, a new one is left to fault in; once a
/// buffer written whole is freed, the next ones are handed out resident (but for the
/// probes among them).
#[test]
fn buffers_are_faulted_in_once_a_freed_one_shows_the_program_writes_them_whole() {
    let a = Cohort::<()>::new();
    let size = 512 * KIB;
    let page = page(&a);
    let mut first: Vec<*mut u8> = (0..4).map(|_| written_whole(&a, size)).collect();
    let p = a.malloc(size, ());
    let before = resident_bytes(p, size);
    assert!(before <= 2 * page, "no evidence yet: {before} B resident");
    // SAFETY: p holds size bytes.
    unsafe { p.write_bytes(7, size) };
    first.push(p);
    // SAFETY: live, freed once.
    unsafe { a.free(first.remove(0), size, ()) };
    let next: Vec<*mut u8> = (0..8).map(|_| a.malloc(size, ())).collect();
    let whole = next
        .iter()
        .filter(|&&p| resident_bytes(p, size) + 2 * page >= size)
        .count();
    if kernel_populates() {
        // The first reuses the freed one's granules (resident), the next is a probe, the
        // other six are faulted in.
        assert!(whole >= 6, "{whole} of 8 buffers resident when handed out");
    } else {
        eprintln!("the kernel does not populate: {whole} of 8 resident");
    }
    for &p in &next {
        // SAFETY: p holds size bytes: the contents are the program's to write.
        unsafe { p.write_bytes(7, size) };
    }
    free_all(&a, &next, size);
    free_all(&a, &first, size);
    assert!(a.is_empty());
}

/// A program that writes its buffers from their start but not whole (all but their last
/// 64 KiB, as a buffer sized for the worst case): a freed one shows it (its end unwritten),
/// and nothing is faulted in ahead.
#[test]
fn buffers_written_but_for_their_end_are_not_faulted_in() {
    let a = Cohort::<()>::new();
    let size = 512 * KIB;
    let written = size - 64 * KIB;
    let mut bufs = Vec::new();
    for round in 0..3 {
        for _ in 0..4 {
            let p = a.malloc(size, ());
            assert!(!p.is_null());
            let resident = resident_bytes(p, size);
            assert!(
                resident <= written + 2 * KERNEL_PAGE,
                "round {round}: {} KiB of a buffer written in {} KiB resident when handed out",
                resident / KIB,
                written / KIB
            );
            // SAFETY: p holds size bytes.
            unsafe { p.write_bytes(7, written) };
            bufs.push(p);
        }
        // SAFETY: live, freed once.
        unsafe { a.free(bufs.remove(0), size, ()) };
    }
    free_all(&a, &bufs, size);
    assert!(a.is_empty());
}

/// A program that wrote its buffers whole, then allocates 200 buffers of 900 KiB and writes
/// one byte of each (RED-55's pattern after dense evidence): what is faulted in beyond
/// the written pages is at most the credit, not the 176 MiB asked.
#[test]
fn a_program_that_turns_sparse_has_at_most_the_credit_faulted_in() {
    let a = Cohort::<()>::new();
    let whole: Vec<*mut u8> = (0..4).map(|_| written_whole(&a, 512 * KIB)).collect();
    free_all(&a, &whole[..1], 512 * KIB);
    let live = 3 * 512 * KIB;
    let size = 900 * KIB;
    let sparse: Vec<*mut u8> = (0..200).map(|_| written_in_one_byte(&a, size)).collect();
    let resident: usize = sparse.iter().map(|&p| resident_bytes(p, size)).sum();
    let credit = 8 * MIB + live / 32;
    let bound = credit + sparse.len() * 2 * KERNEL_PAGE + MIB;
    assert!(
        resident <= bound,
        "200 buffers of 900 KiB written in one byte each: {} KiB resident, bound {} KiB",
        resident / KIB,
        bound / KIB
    );
    free_all(&a, &sparse, size);
    free_all(&a, &whole[1..], 512 * KIB);
    assert!(a.is_empty());
}

/// A program that frees and allocates buffers it writes in one byte each: its first freed
/// buffer shows it, and nothing is faulted in ahead, ever.
#[test]
fn buffers_written_in_one_byte_are_never_faulted_in() {
    let a = Cohort::<()>::new();
    let size = 900 * KIB;
    let mut live: Vec<*mut u8> = (0..20).map(|_| written_in_one_byte(&a, size)).collect();
    let mut rng = common::Rng::new(5);
    for _ in 0..300 {
        let i = rng.below(live.len());
        // SAFETY: live, freed once.
        unsafe { a.free(live[i], size, ()) };
        live[i] = written_in_one_byte(&a, size);
    }
    let resident: usize = live.iter().map(|&p| resident_bytes(p, size)).sum();
    // Each buffer's own written page, and pages earlier buffers wrote in its granules.
    let bound = live.len() * 4 * KERNEL_PAGE;
    assert!(
        resident <= bound,
        "20 buffers of 900 KiB written in one byte each: {} KiB resident",
        resident / KIB
    );
    free_all(&a, &live, size);
    assert!(a.is_empty());
}
