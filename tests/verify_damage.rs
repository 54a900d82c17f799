//! `verify` on damaged list links and block metadata: every damage written through the
//! memory of a block (a stray write into a header, a run table or a slot) is reported as
//! a `VerifyError`, never a panic, a hang or a fault of `verify` itself. Each case runs in
//! a forked child under an alarm: a fault or a hang fails the test, never the binary.

#[path = "common/processes.rs"]
#[allow(dead_code)]
mod processes;

use cohort::Cohort;

cohort::lifetime_classes! { enum Life { A } }

const BLOCK: usize = 2 << 20;
/// Byte offsets in a block header (`src/block.rs`, `repr(C)`).
const NEXT: usize = 32;
const PREV: usize = 36;
/// The allocation list's first slot.
const FREE: usize = 8;
/// The local free list's first slot (where a slot freed by its owner waits).
const LOCAL: usize = 28;
const BUMP: usize = 12;
const BUMP_END: usize = 16;
const NONE: u32 = u32::MAX;

/// Writes damage into the blocks at the bases given.
type Damage = fn(&[usize]);

fn base_of(p: *mut u8) -> usize {
    p as usize & !(BLOCK - 1)
}

/// # Safety
/// `at` is a mapped, aligned word of a block this test damages.
unsafe fn word(at: usize) -> *mut u32 {
    at as *mut u32
}

/// Blocks of 1000-byte objects of which the first two are partly freed (listed on the
/// heap's partial list, or the pool's once `exit_first` lets the thread's heap go): their
/// bases.
fn two_listed_blocks(a: &Cohort<Life>, exit_first: bool) -> Vec<usize> {
    std::thread::scope(|s| {
        let run = || {
            let ps: Vec<_> = (0..5000).map(|_| a.malloc(1000, Life::A)).collect();
            assert!(ps.iter().all(|p| !p.is_null()));
            let mut bases: Vec<usize> = ps.iter().map(|&p| base_of(p)).collect();
            bases.dedup();
            assert!(bases.len() >= 3, "{bases:x?}");
            // One object freed in each of the first two (full) blocks: both listed.
            for b in &bases[..2] {
                let p = *ps.iter().find(|&&p| base_of(p) == *b).unwrap();
                // SAFETY: allocated above with this size and class, freed once.
                unsafe { a.free(p, 1000, Life::A) };
            }
            bases[..2].to_vec()
        };
        if exit_first {
            s.spawn(run).join().unwrap()
        } else {
            run()
        }
    })
}

/// The block of a 100 KiB (medium) allocation: its base.
fn a_medium_block(a: &Cohort<Life>) -> Vec<usize> {
    let p = a.malloc(100 << 10, Life::A);
    assert!(!p.is_null());
    vec![base_of(p)]
}

/// In a forked child: builds an allocator's blocks with `setup`, damages them with
/// `damage(bases)`, and checks that `verify` returns an error within the child's alarm.
fn verify_reports_after(what: &str, setup: impl Fn(&Cohort<Life>) -> Vec<usize>, damage: Damage) {
    let pid = processes::in_child(60, || {
        let a = Cohort::<Life>::new();
        let bases = setup(&a);
        // SAFETY: no other thread uses `a`.
        let before = unsafe { a.verify() };
        assert!(
            before.is_ok(),
            "{what}: damaged before the damage: {before:?}"
        );
        damage(&bases);
        // SAFETY: as above.
        let after = unsafe { a.verify() };
        // The instance is damaged: never dropped.
        std::mem::forget(a);
        match after {
            Err(e) => eprintln!("{what}: {e}"),
            Ok(v) => panic!("{what}: verify found nothing: {v:?}"),
        }
    });
    let status = processes::wait_status(pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what}: verify did not return an error: {}",
        if libc::WIFSIGNALED(status) {
            format!(
                "killed by signal {} (SIGALRM 14: a hang)",
                libc::WTERMSIG(status)
            )
        } else {
            format!("the child failed (status {status:#x}; see its output)")
        }
    );
}

/// [`verify_reports_after`] on [`two_listed_blocks`].
fn verify_reports(what: &str, exit_first: bool, damage: Damage) {
    verify_reports_after(what, |a| two_listed_blocks(a, exit_first), damage);
}

/// Both listed blocks' `next` links name a unit far beyond the region.
fn next_beyond_the_region(bases: &[usize]) {
    for &b in bases {
        // SAFETY: the header of a block in use.
        unsafe { word(b + NEXT).write_volatile(0x00ff_fff0) };
    }
}

/// The list's last block links back to the one before it: a cycle.
fn a_cycle(bases: &[usize]) {
    for &b in bases {
        // SAFETY: as above.
        unsafe {
            if word(b + NEXT).read_volatile() == NONE {
                word(b + NEXT).write_volatile(word(b + PREV).read_volatile());
            }
        }
    }
}

/// The two listed blocks, first and second on their list.
fn in_list_order(bases: &[usize]) -> (usize, usize) {
    // SAFETY: headers of blocks in use.
    let is_first = |b: usize| unsafe { word(b + PREV).read_volatile() } == NONE;
    match *bases {
        [a, b] if is_first(a) && !is_first(b) => (a, b),
        [a, b] if is_first(b) && !is_first(a) => (b, a),
        _ => panic!("the two blocks are not one list: {bases:x?}"),
    }
}

/// The list's first block links to itself (its successor's `prev` names it).
fn a_self_cycle(bases: &[usize]) {
    // SAFETY: as above.
    unsafe {
        let (first, second) = in_list_order(bases);
        word(first + NEXT).write_volatile(word(second + PREV).read_volatile());
    }
}

/// The local free list's first slot links to itself.
fn a_free_list_cycle(bases: &[usize]) {
    for &b in bases {
        // SAFETY: as above; the local free list's first slot is in the block.
        unsafe {
            let off = word(b + LOCAL).read_volatile() as usize;
            assert_ne!(off, 0, "block {b:#x} has no free slot");
            word(b + off).write_volatile(off as u32);
        }
    }
}

/// The allocation list starts beyond the block.
fn a_free_list_beyond_the_block(bases: &[usize]) {
    for &b in bases {
        // SAFETY: as above.
        unsafe { word(b + FREE).write_volatile(0xffff_fff0) };
    }
}

/// The local free list starts beyond the block.
fn a_local_list_beyond_the_block(bases: &[usize]) {
    for &b in bases {
        // SAFETY: as above.
        unsafe { word(b + LOCAL).write_volatile(0xffff_fff0) };
    }
}

/// The bump offset and the bump window's end are garbage.
fn bump_garbage(bases: &[usize]) {
    for &b in bases {
        // SAFETY: as above.
        unsafe {
            word(b + BUMP).write_volatile(0xffff_fff0);
            word(b + BUMP_END).write_volatile(0xffff_ff00);
        }
    }
}

/// The list's two blocks link to each other both ways: a cycle every back link agrees
/// with (first -> second -> first).
fn a_cycle_linked_both_ways(bases: &[usize]) {
    // SAFETY: as above.
    unsafe {
        let (first, second) = in_list_order(bases);
        word(second + NEXT).write_volatile(word(second + PREV).read_volatile());
        word(first + PREV).write_volatile(word(first + NEXT).read_volatile());
    }
}

/// The first block's successor's `prev` names a unit beyond the region.
fn prev_beyond_the_region(bases: &[usize]) {
    for &b in bases {
        // SAFETY: as above.
        unsafe { word(b + PREV).write_volatile(0x00ff_fff0) };
    }
}

#[test]
fn a_heap_list_link_beyond_the_region_is_reported() {
    verify_reports("heap list, next beyond", false, next_beyond_the_region);
    verify_reports("heap list, prev beyond", false, prev_beyond_the_region);
}

#[test]
fn a_pool_list_link_beyond_the_region_is_reported() {
    verify_reports("pool list, next beyond", true, next_beyond_the_region);
    verify_reports("pool list, prev beyond", true, prev_beyond_the_region);
}

#[test]
fn a_cycle_in_a_heap_list_is_reported() {
    verify_reports("heap list, cycle", false, a_cycle);
    verify_reports("heap list, self cycle", false, a_self_cycle);
    verify_reports(
        "heap list, cycle both ways",
        false,
        a_cycle_linked_both_ways,
    );
}

#[test]
fn a_damaged_slot_free_list_is_reported() {
    verify_reports("local free list, cycle", false, a_free_list_cycle);
    verify_reports(
        "allocation list, beyond",
        false,
        a_free_list_beyond_the_block,
    );
    verify_reports(
        "local free list, beyond",
        false,
        a_local_list_beyond_the_block,
    );
}

#[test]
fn garbage_bump_offsets_are_reported() {
    verify_reports("bump garbage", false, bump_garbage);
}

/// A medium block's run table (`src/medium_block.rs`, after the header: four counts, the
/// word summary, the `used` and `clean` bitmaps of 16 words each, then a `u16` length per
/// granule) and its `Starts` bytes (one per granule, after the table).
const COUNTS: usize = 64;
const SUMMARY: usize = COUNTS + 16;
const USED: usize = SUMMARY + 8;
const CLEAN: usize = USED + 16 * 8;
const LENS: usize = CLEAN + 16 * 8;
const STARTS: usize = LENS + 1024 * 2;

fn fill(at: usize, len: usize, byte: u8) {
    // SAFETY: inside the metadata of a medium block in use (the damage under test).
    unsafe { core::ptr::write_bytes(at as *mut u8, byte, len) };
}

#[test]
fn a_medium_blocks_garbage_metadata_is_reported() {
    let cases: [(&str, Damage); 6] = [
        ("medium, every granule clean", |b| {
            fill(b[0] + CLEAN, 128, 0xff)
        }),
        ("medium, every granule used", |b| {
            fill(b[0] + USED, 128, 0xff)
        }),
        ("medium, garbage lengths", |b| fill(b[0] + LENS, 2048, 0xff)),
        ("medium, garbage counts", |b| fill(b[0] + COUNTS, 16, 0xff)),
        // A summary of no word: the searches would find nothing free.
        ("medium, a summary of no word", |b| {
            fill(b[0] + SUMMARY, 8, 0)
        }),
        ("medium, garbage start bytes", |b| {
            fill(b[0] + STARTS, 1024, 0xff)
        }),
    ];
    for (what, damage) in cases {
        verify_reports_after(what, a_medium_block, damage);
    }
}

/// The remote free list's word (`offset | count << 32 | FULL`) in the header.
const REMOTE: usize = 56;

/// Three 1000-byte objects of this thread's current block, freed by another thread: the
/// block's remote list holds them once `verify` flushed the batches. The block's base.
fn a_remote_list(a: &Cohort<Life>) -> Vec<usize> {
    let ps: Vec<usize> = (0..3).map(|_| a.malloc(1000, Life::A) as usize).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for &p in &ps {
                // SAFETY: allocated above with this size and class, freed once.
                unsafe { a.free(p as *mut u8, 1000, Life::A) };
            }
        });
    });
    vec![base_of(ps[0] as *mut u8)]
}

#[test]
fn a_damaged_remote_list_is_reported() {
    let cases: [(&str, Damage); 2] = [
        ("remote list, cycle", |b| {
            // SAFETY: the remote list's first slot, in the block.
            unsafe {
                let off = word(b[0] + REMOTE).read_volatile() as usize;
                assert_ne!(off, 0, "the remote list is empty");
                word(b[0] + off).write_volatile(off as u32);
            }
        }),
        ("remote list, beyond", |b| {
            // SAFETY: the header of a block in use.
            unsafe { word(b[0] + REMOTE).write_volatile(0xffff_fff0) };
        }),
    ];
    for (what, damage) in cases {
        verify_reports_after(what, a_remote_list, damage);
    }
}
