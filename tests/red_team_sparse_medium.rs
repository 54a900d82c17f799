//! Red-team attacks of session 11 on medium requests made resident at allocation: a program
//! that allocates medium buffers and touches only their first page (a sparse use: a read
//! buffer sized for the worst case, a hash table's buckets) must not pay the whole buffers
//! in resident memory. A test that found a defect is `#[ignore]`d with its number (RED-n),
//! its owner and the exact failure.

use cohort::Cohort;
use test_support::rss;

cohort::lifetime_classes! { enum Life { A } }

const MIB: usize = 1 << 20;

/// 200 buffers of 900 KiB (180 MiB asked), each written only in its first byte: the
/// resident size may grow by the pages touched and the blocks' metadata, not by what was
/// asked.
///
/// RED-55 (owner medium: plain medium requests' clean granules populated at allocation,
/// `os::populate`, merged on main in e066d00): passed on main 9b7e77c (1 392 KiB resident
/// growth at 4 KiB pages, 1 456 at 64 KiB); fails since (medium ca0fe4a, and main e066d00):
/// `200 medium buffers of 900 KiB, one byte written in each, made 176 MiB resident`
/// (180 592 KiB: every page asked for). Every peer maps such sizes lazily.
#[test]
fn medium_buffers_touched_in_one_page_stay_mostly_unresident() {
    let a = Cohort::<Life>::new();
    let before = rss();
    let size = 900 << 10;
    let ps: Vec<*mut u8> = (0..200)
        .map(|_| {
            let p = a.malloc(size, Life::A);
            assert!(!p.is_null());
            // SAFETY: a live allocation of `size` bytes.
            unsafe { p.write(1) };
            p
        })
        .collect();
    let grown = rss().saturating_sub(before);
    eprintln!("resident growth: {} KiB", grown >> 10);
    for p in ps {
        // SAFETY: live, freed once.
        unsafe { a.free(p, size, Life::A) };
    }
    assert!(
        grown <= 40 * MIB,
        "200 medium buffers of 900 KiB, one byte written in each, made {} MiB resident",
        grown / MIB
    );
}
