//! Growing large allocations: a buffer grown by small steps remaps rarely (each remap maps
//! an eighth more, which the next steps grow into), and a growing buffer takes a longer
//! cached mapping, whose pages are resident, and grows in place in it. Contents survive
//! every move; `recalloc`'s new bytes read zero even in a reused mapping.

use cohort::Cohort;

const MIB: usize = 1 << 20;
const STEP: usize = 4096;

fn system_calls(a: &Cohort) -> u64 {
    a.stats().large_system_calls
}

/// Byte `i` of a patterned buffer.
fn byte(i: usize) -> u8 {
    (i % 251) as u8
}

fn fill(p: *mut u8, from: usize, to: usize) {
    for i in from..to {
        // SAFETY: the caller's buffer holds `to` bytes.
        unsafe { p.add(i).write(byte(i)) };
    }
}

fn check(p: *const u8, len: usize) {
    for i in (0..len).step_by(509) {
        // SAFETY: the caller's buffer holds `len` bytes.
        assert_eq!(unsafe { p.add(i).read() }, byte(i), "byte {i} of {len}");
    }
}

#[test]
fn a_buffer_grown_by_small_steps_remaps_rarely() {
    let a: Cohort = Cohort::new();
    let mut len = MIB;
    let mut p = a.malloc(len, ());
    assert!(!p.is_null());
    fill(p, 0, len);
    let before = system_calls(&a);
    const STEPS: usize = 2048;
    for _ in 0..STEPS {
        // SAFETY: `p` holds `len` bytes of this instance's class.
        p = unsafe { a.remalloc(p, len, len + STEP, ()) };
        assert!(!p.is_null());
        fill(p, len, len + STEP);
        len += STEP;
    }
    check(p, len);
    let calls = system_calls(&a) - before;
    // Each remap maps an eighth more: from 1 MiB to 9 MiB that is about
    // ln(9) / ln(9/8) = 19 remaps, against one per step before: 20 calls at 4 KiB pages,
    // in every run. At 64 KiB pages emulated on a 4 KiB kernel (COHORT_PAGE_SIZE) a remap
    // cannot move (the kernel would move it to a 4 KiB boundary), so the count varies with
    // the address-space layout, 21 to 60 in runs: where the free gap after the mapping (a
    // fresh mapping's alignment trim leaves one of random length) is shorter than the
    // eighth, each new 64 KiB page costs a refused room and a growth by the page (two
    // calls); and a mapping grown into the cached range after it may span two kernel
    // mappings of different flags (huge-page advice), which refuse any remap (EFAULT,
    // twice) before the buffer moves by a copy. The bound is an order of magnitude under
    // one call per step.
    assert!(
        calls <= STEPS as u64 / 16,
        "{calls} system calls for {STEPS} steps"
    );
    // SAFETY: allocated above with this size.
    unsafe { a.free(p, len, ()) };
}

#[test]
fn a_growing_buffer_takes_a_longer_cached_mapping() {
    let a: Cohort = Cohort::new();
    // Cached mappings stay for the test's length.
    a.set_retention(cohort::Retention {
        delay: std::time::Duration::from_secs(60),
        ..cohort::Retention::DEFAULT
    });
    // A 32 MiB buffer, written and freed: its mapping goes to the cache, resident.
    let big = 32 * MIB;
    let q = a.malloc(big, ());
    assert!(!q.is_null());
    // SAFETY: a fresh allocation of `big` bytes.
    unsafe { q.write_bytes(0xEE, big) };
    // SAFETY: allocated above with this size, not used after.
    unsafe { a.free(q, big, ()) };
    assert_eq!(a.stats().large_cached, 1);
    let mut len = 3 * MIB;
    let mut p = a.malloc(len, ());
    fill(p, 0, len);
    // Growing past its mapping, to 4 MiB (32 MiB is within 16 times that): it moves into
    // the cached mapping, with one copy and no system call; or, when the OS placed the
    // 3 MiB mapping right below the cached one, it grows in place into it.
    let before = system_calls(&a);
    let old = p;
    // SAFETY: `p` holds `len` bytes of this instance's class.
    p = unsafe { a.recalloc(p, len, 4 * MIB, ()) };
    assert!(
        p == q || (p == old && old as usize + len == q as usize),
        "the cached mapping was taken: {p:?}, cached {q:?}, old {old:?}"
    );
    check(p, len);
    for i in (len..4 * MIB).step_by(4093) {
        // SAFETY: `p` holds 4 MiB.
        assert_eq!(unsafe { p.add(i).read() }, 0, "recalloc's new byte {i}");
    }
    len = 4 * MIB;
    // And grows in place in it from then on.
    for new in [8 * MIB, 16 * MIB, big] {
        fill(p, 0, len);
        // SAFETY: `p` holds `len` bytes.
        let r = unsafe { a.recalloc(p, len, new, ()) };
        assert_eq!(r, p, "in place up to the mapping's length");
        check(p, len);
        // The new bytes lie in the cached mapping's pages, dirty (0xEE): zeroed.
        for i in (len..new).step_by(4093) {
            // SAFETY: `p` holds `new` bytes.
            assert_eq!(unsafe { p.add(i).read() }, 0, "recalloc's new byte {i}");
        }
        len = new;
    }
    assert_eq!(system_calls(&a), before, "no system call while it grew");
    // SAFETY: allocated above with this size.
    unsafe { a.free(p, len, ()) };
    assert!(a.is_empty());
}
