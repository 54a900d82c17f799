//! Red-team attacks of session 11 on the large cache's ranges: frees of addresses that lie
//! in a cached range joined from two buffers (a double free of either buffer, of its
//! interior, with its own size or the joined size), and of the buffers a joined range is
//! split into again; zeroed requests taken from joined and split ranges at every page
//! count near the boundaries. Every misuse must be reported and change nothing: the next
//! allocations must not overlap a live buffer. A test that found a defect is `#[ignore]`d
//! with its number (RED-n), its owner and the exact failure.

use cohort::{Cohort, Retention};
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A, B } }

const MIB: usize = 1 << 20;

fn roomy() -> Cohort<Life> {
    let a = Cohort::<Life>::new();
    a.set_retention(Retention {
        large_cache_bytes: 1 << 30,
        large_cache_mappings: Retention::MAX_LARGE_CACHE_MAPPINGS,
        empty_block_bytes: 256 << 20,
        delay: Duration::from_secs(60),
    });
    a
}

/// A buffer of `n` bytes taken from the head of a cached range of `2 n`, and where that
/// range began (the same address: the head is taken).
fn head_of_cached(a: &Cohort<Life>, n: usize) -> *mut u8 {
    let whole = a.malloc(2 * n, Life::A);
    assert!(!whole.is_null());
    // SAFETY: live, freed once.
    unsafe { a.free(whole, 2 * n, Life::A) };
    let x = a.malloc(n, Life::A);
    assert_eq!(
        x, whole,
        "a shorter request takes the head of the cached range"
    );
    x
}

/// Every free that names an address of a cached range joined from two freed buffers is
/// misuse, reported without changing anything.
#[test]
fn frees_into_a_joined_cached_range_are_reported() {
    // The allocator's page (`COHORT_PAGE_SIZE`), as red_team_large_growth finds it.
    let page =
        Cohort::<Life>::new().usable_size(std::alloc::Layout::from_size_align(1, 8192).unwrap());
    for n in [4 * MIB, 3 * MIB + 4096, 5 * MIB + 12345] {
        // An instance of its own: an empty cache.
        let a = roomy();
        let x = head_of_cached(&a, n);
        // SAFETY: live, freed once: it joins the cached tail again.
        unsafe { a.free(x, n, Life::A) };
        let y = x.wrapping_add(n.next_multiple_of(page));
        let tries: [(*mut u8, usize, &str); 6] = [
            (x, n, "the head buffer again"),
            (y, n, "the tail buffer again"),
            (x, 2 * n, "the joined range at its start, joined size"),
            // SAFETY (of the adds): inside the joined range.
            (unsafe { x.add(4096) }, n, "inside the head"),
            (unsafe { y.add(4096) }, n - 4096, "inside the tail"),
            (y, 2 * n, "the tail with the joined size"),
        ];
        for (p, size, what) in tries {
            // SAFETY: misuse the allocator must report (cached ranges are the cache's).
            let r = unsafe { a.try_free(p, size, Life::A) };
            assert!(
                r.is_err(),
                "n = {n}: try_free of {what} ({p:p}, {size}) in a joined cached range accepted"
            );
        }
        // The joined range serves one buffer of 2 n; the old addresses inside it must still
        // be refused.
        let w = a.malloc(2 * n, Life::B);
        assert!(!w.is_null());
        // SAFETY: live buffer of 2 n bytes.
        unsafe { w.write_bytes(0x77, 2 * n) };
        let base = w as usize;
        for (p, size, what) in [
            (base + n, n, "its second half, as the old tail"),
            (base, n, "its start with the old head's size"),
            (base, 2 * n, "its start with the other lifetime class"),
        ] {
            // SAFETY: misuse the allocator must report.
            let r = unsafe { a.try_free(p as *mut u8, size, Life::A) };
            assert!(
                r.is_err(),
                "n = {n}: try_free of {what} ({p:#x}, {size}) accepted"
            );
        }
        // SAFETY: every byte of the live buffer.
        let bytes = unsafe { std::slice::from_raw_parts(w, 2 * n) };
        assert!(bytes.iter().all(|&b| b == 0x77), "the buffer changed");
        // SAFETY: live, freed once.
        unsafe { a.free(w, 2 * n, Life::B) };
    }
}

/// Zeroed requests from a cached range whose pages were all written: every page count
/// from 1 to 40 either side of 1 MiB (where zeroing switches to residence) and of 2 MiB
/// (huge-page alignment), each from the head of a longer written range, must read zero.
#[test]
fn zeroed_requests_from_written_cached_ranges_read_zero_at_every_length() {
    let a = roomy();
    let page = 4096;
    let mut lens: Vec<usize> = Vec::new();
    for mid in [MIB, 2 * MIB, 4 * MIB] {
        for k in 0..40 {
            lens.push(mid - 20 * page + k * page);
            lens.push(mid - 20 * page + k * page + 1);
        }
    }
    for &n in &lens {
        let big = n + 3 * MIB;
        let p = a.malloc(big, Life::A);
        assert!(!p.is_null());
        // SAFETY: live buffer of `big` bytes.
        unsafe { p.write_bytes(0xa5, big) };
        // SAFETY: live, freed once.
        unsafe { a.free(p, big, Life::A) };
        let q = a.calloc(n, Life::A);
        assert!(!q.is_null());
        // SAFETY: live buffer of at least n bytes.
        let bytes = unsafe { std::slice::from_raw_parts(q, n) };
        if let Some(k) = bytes.iter().position(|&b| b != 0) {
            panic!("calloc({n}) from a written cached range of {big}: byte {k} is not zero");
        }
        // SAFETY: live buffer of at least n bytes.
        unsafe { q.write_bytes(0x3c, n) };
        // SAFETY: live, resized once.
        let r = unsafe { a.recalloc(q, n, n + 2 * MIB + 4096, Life::A) };
        assert!(!r.is_null());
        // SAFETY: live buffer of n + 2 MiB + 4096 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(r, n + 2 * MIB + 4096) };
        assert!(
            bytes[..n].iter().all(|&b| b == 0x3c),
            "recalloc kept its bytes"
        );
        if let Some(k) = bytes[n..].iter().position(|&b| b != 0) {
            panic!(
                "recalloc({n} -> {}) byte {} is not zero",
                n + 2 * MIB + 4096,
                n + k
            );
        }
        // SAFETY: live, freed once.
        unsafe { a.free(r, n + 2 * MIB + 4096, Life::A) };
    }
}
