//! Red-team attacks of session 11 on medium requests made resident at allocation: a program
//! that allocates medium buffers and touches only their first page (a sparse use: a read
//! buffer sized for the worst case, a hash table's buckets) must not pay the whole buffers
//! in resident memory. A test that found a defect is `#[ignore]`d with its number (RED-n),
//! its owner and the exact failure.

use cohort::Cohort;
use test_support::rss;

cohort::lifetime_classes! { enum Life { A, B } }

const MIB: usize = 1 << 20;

/// The tests measure the process's resident size: they take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
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

/// RED-55's siblings: medium buffers made by `calloc`, grown by `remalloc` and by
/// `recalloc` (from 40 KiB), at sizes across the medium range, each written only in its
/// first byte (and the grown part not at all), in fresh blocks: the resident size may grow
/// by the pages touched, the moved 40 KiB and the blocks' metadata, not by what was asked.
/// (A `calloc` or `recalloc` into freed, written granules zeroes them by writing, as the
/// peers' do: not asserted here.)
#[test]
fn medium_buffers_made_zeroed_or_grown_stay_mostly_unresident() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<Life>::new();
    let before = rss();
    let sizes = [70 << 10, 300 << 10, 600 << 10, 1000 << 10];
    let make = |i: usize| -> (*mut u8, usize) {
        let size = sizes[i % sizes.len()];
        let p = match i % 3 {
            0 => a.calloc(size, Life::A),
            way => {
                let small = a.malloc(40 << 10, Life::A);
                assert!(!small.is_null());
                // SAFETY: a live allocation of 40 KiB, grown (and given up) once.
                unsafe {
                    small.write(1);
                    if way == 1 {
                        a.remalloc(small, 40 << 10, size, Life::A)
                    } else {
                        a.recalloc(small, 40 << 10, size, Life::A)
                    }
                }
            }
        };
        assert!(!p.is_null(), "buffer {i} of {size} B");
        // SAFETY: a live allocation of `size` bytes.
        unsafe { p.write(1) };
        (p, size)
    };
    let ps: Vec<(*mut u8, usize)> = (0..120).map(make).collect();
    let asked = ps.iter().map(|&(_, n)| n).sum::<usize>();
    let grown = rss().saturating_sub(before);
    for (p, size) in ps {
        // SAFETY: live, freed once.
        unsafe { a.free(p, size, Life::A) };
    }
    eprintln!(
        "resident growth: {} KiB of {} KiB asked",
        grown >> 10,
        asked >> 10
    );
    assert!(
        grown <= 20 * MIB,
        "medium buffers made by calloc, remalloc and recalloc, one byte written in each, made \
         {} MiB resident ({} MiB asked)",
        grown / MIB,
        asked / MIB
    );
}

/// A churn of 600 buffers of 900 KiB, 200 live at a time (the oldest freed), each written
/// in its first 4 KiB and its last 32 KiB only (a header and a trailer: a buffer sized for
/// the worst case whose end the program also writes): the resident size may grow by the
/// pages written and the blocks' metadata (about 7 MiB written), not by the buffers'
/// middles, which nobody writes, whatever evidence of writing the buffers' ends give.
#[test]
fn medium_buffers_written_at_both_ends_stay_mostly_unresident() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<Life>::new();
    let before = rss();
    let size = 900 << 10;
    let mut live = std::collections::VecDeque::new();
    for _ in 0..600 {
        let p = a.malloc(size, Life::A);
        assert!(!p.is_null());
        // SAFETY: a live allocation of `size` bytes.
        unsafe {
            p.write_bytes(1, 4 << 10);
            p.add(size - (32 << 10)).write_bytes(2, 32 << 10);
        }
        live.push_back(p);
        if live.len() > 200 {
            // SAFETY: live, freed once.
            unsafe { a.free(live.pop_front().unwrap(), size, Life::A) };
        }
    }
    let grown = rss().saturating_sub(before);
    eprintln!("resident growth: {} KiB", grown >> 10);
    for p in live {
        // SAFETY: live, freed once.
        unsafe { a.free(p, size, Life::A) };
    }
    assert!(
        grown <= 40 * MIB,
        "a churn of 900 KiB buffers (200 live), each written in its first 4 KiB and its last \
         32 KiB, made {} MiB resident",
        grown / MIB
    );
}

/// 200 long-lived medium buffers of 900 KiB (class A) written in their first byte only,
/// each after two scratch buffers of the same size written whole and freed at once (class
/// B), with the decay delay `delay` (the default when `None`); returns the resident growth
/// with the long-lived ones live.
fn long_lived_beside_scratch(delay: Option<std::time::Duration>) -> usize {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let a = Cohort::<Life>::new();
    if let Some(delay) = delay {
        a.set_retention(cohort::Retention {
            delay,
            ..cohort::Retention::DEFAULT
        });
    }
    let before = rss();
    let size = 900 << 10;
    let mut long = Vec::new();
    for _ in 0..200 {
        for _ in 0..2 {
            let s = a.malloc(size, Life::B);
            assert!(!s.is_null());
            // SAFETY: a live allocation of `size` bytes, written whole, freed once.
            unsafe {
                s.write_bytes(3, size);
                a.free(s, size, Life::B);
            }
        }
        let p = a.malloc(size, Life::A);
        assert!(!p.is_null());
        // SAFETY: a live allocation of `size` bytes.
        unsafe { p.write(1) };
        long.push(p);
    }
    let grown = rss().saturating_sub(before);
    eprintln!("resident growth: {} KiB", grown >> 10);
    for p in long {
        // SAFETY: live, freed once.
        unsafe { a.free(p, size, Life::A) };
    }
    grown
}

/// A program with two kinds of medium buffers of the same size: scratch buffers written
/// whole and freed at once, and long-lived buffers written in their first byte only (a read
/// buffer sized for the worst case, a table's reserve; in blocks of their own, another
/// lifetime class, so never in a scratch buffer's written pages): the scratch buffers'
/// writes say nothing of the long-lived ones, whose pages must stay unresident: the growth
/// is the touched pages, the few scratch runs and the metadata, not the long-lived
/// buffers' 176 MiB.
#[test]
fn sparse_long_lived_buffers_beside_dense_scratch_ones_stay_mostly_unresident() {
    let grown = long_lived_beside_scratch(None);
    assert!(
        grown <= 40 * MIB,
        "200 long-lived medium buffers of 900 KiB written in one byte each, beside scratch \
         buffers written whole, made {} MiB resident",
        grown / MIB
    );
}

/// The same with a decay delay of 0: the scratch buffers' pages go back at once, so every
/// scratch buffer is made of clean pages again (a probe, whose free is dense evidence).
///
/// RED-61 (owner medium: the evidence-based populate, src/medium_block/written.rs, merged
/// on main in eec6e3f): passed on main 921aec8 (2 128 KiB resident growth); fails on
/// medium ad4e772 and main eec6e3f: `200 long-lived medium buffers of 900 KiB written in
/// one byte each, beside scratch buffers written whole (no decay delay), made 83 MiB
/// resident` (85 648 KiB; 81 MiB on main): the scratch buffers' frees keep the evidence
/// dense and the credit full, so the long-lived buffers' never-written pages are faulted
/// in, far past one credit (`live / 32 + 8 MiB`). With the default delay: 25 MiB (the test
/// above, bound 40 MiB).
#[test]
fn sparse_long_lived_buffers_beside_dense_scratch_ones_stay_mostly_unresident_with_no_delay() {
    let grown = long_lived_beside_scratch(Some(std::time::Duration::ZERO));
    assert!(
        grown <= 40 * MIB,
        "200 long-lived medium buffers of 900 KiB written in one byte each, beside scratch \
         buffers written whole (no decay delay), made {} MiB resident",
        grown / MIB
    );
}
