//! Red-team attacks on resizes across size-class, medium and large boundaries with every
//! alignment: the `Allocator` handles' `grow`, `grow_zeroed` and `shrink` (whose new
//! layout may ask a larger or smaller alignment than the old one), `Cohort::realloc`, and
//! `remalloc` / `recalloc` back and forth between small, medium and large sizes.
//!
//! Each result must be aligned to its new layout, keep `min(old, new)` bytes, read zero
//! past the old size for the zeroing forms (up to the length the handle returned), and
//! be freed with the new layout and with any size up to the length returned; the instance
//! must then verify and be empty.

use cohort::allocator_api2::alloc::Allocator;
use cohort::Cohort;
use core::alloc::Layout;
use core::ptr::NonNull;

cohort::lifetime_classes! { enum Life { A } }

/// Sizes around the small classes' strides, the medium range's ends (16 KiB, 1 MiB) and a
/// large allocation.
const SIZES: &[usize] = &[
    0,
    1,
    7,
    8,
    9,
    15,
    16,
    17,
    24,
    31,
    33,
    48,
    63,
    64,
    65,
    100,
    127,
    129,
    255,
    257,
    1000,
    1025,
    2047,
    2049,
    4095,
    4096,
    4097,
    8191,
    8193,
    16383,
    16384,
    16385,
    32768,
    65537,
    200_000,
    (1 << 20) - 1,
    1 << 20,
    (1 << 20) + 1,
    (2 << 20) + 12_345,
];

const ALIGNS: &[usize] = &[1, 2, 8, 16, 32, 64, 256, 4096, 8192, 65536, 2 << 20];

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(131) >> 3) as u8 ^ 0x5a
}

/// Fills `len` bytes at `p` with the pattern.
///
/// # Safety
/// `p` is valid for `len` bytes of writes.
unsafe fn fill(p: *mut u8, len: usize) {
    for i in 0..len {
        // SAFETY: caller.
        unsafe { p.add(i).write(pattern(i)) };
    }
}

/// The first index below `len` whose byte at `p` is not the pattern.
///
/// # Safety
/// `p` is valid for `len` bytes of reads.
unsafe fn first_wrong(p: *const u8, len: usize) -> Option<usize> {
    // SAFETY: caller.
    (0..len).find(|&i| unsafe { p.add(i).read() } != pattern(i))
}

/// Whether the layout pair is worth a case: large-to-large and huge-alignment pairs are
/// sampled (each is a mapping).
fn wanted(old: Layout, new: Layout) -> bool {
    // A debug build (every free fully checked) takes one pair in four.
    let mix = old.size() * 31 + new.size() * 17 + old.align() * 3 + new.align();
    if cfg!(debug_assertions) && !mix.is_multiple_of(4) {
        return false;
    }
    let big = |l: Layout| l.size() > (1 << 20) || l.align() > 4096;
    !(big(old) && big(new)) || (old.size() + new.size() + old.align()).is_multiple_of(7)
}

fn layouts() -> Vec<Layout> {
    let mut out = Vec::new();
    for &size in SIZES {
        for &align in ALIGNS {
            out.push(Layout::from_size_align(size, align).unwrap());
        }
    }
    out
}

/// `grow`, `grow_zeroed` and `shrink` of a handle between every two layouts (the new
/// alignment may differ from the old): the result is aligned, keeps the bytes, zeroes the
/// growth, and frees with the new layout or with the whole length returned.
#[test]
fn handle_resizes_between_alignments_keep_their_contract() {
    let a: Cohort<Life> = Cohort::new();
    let h = a.handle(Life::A);
    let all = layouts();
    let mut wrong = Vec::new();
    let mut cases = 0usize;
    for (n, &old) in all.iter().enumerate() {
        for &new in &all {
            if !wanted(old, new) {
                continue;
            }
            cases += 1;
            let op = match new.size().cmp(&old.size()) {
                core::cmp::Ordering::Greater if (n + cases).is_multiple_of(2) => "grow_zeroed",
                core::cmp::Ordering::Greater | core::cmp::Ordering::Equal => "grow",
                core::cmp::Ordering::Less => "shrink",
            };
            let p = h.allocate(old).expect("allocate");
            let got = p.len();
            let p = p.cast::<u8>();
            if got < old.size() || !(p.as_ptr() as usize).is_multiple_of(old.align()) {
                wrong.push(format!(
                    "allocate {old:?}: {:p} of length {got}",
                    p.as_ptr()
                ));
                // SAFETY: live with layout old.
                unsafe { h.deallocate(p, old) };
                continue;
            }
            // SAFETY: `got` bytes are the allocation's.
            unsafe { fill(p.as_ptr(), old.size()) };
            // SAFETY: p is live with layout `old`; new.size() >= old.size() for the grows,
            // <= for the shrink.
            let q = unsafe {
                match op {
                    "grow_zeroed" => h.grow_zeroed(p, old, new),
                    "grow" => h.grow(p, old, new),
                    _ => h.shrink(p, old, new),
                }
            };
            let Ok(q) = q else {
                wrong.push(format!("{op} {old:?} -> {new:?}: AllocError"));
                // SAFETY: a failed resize leaves p live with `old`.
                unsafe { h.deallocate(p, old) };
                continue;
            };
            let len = q.len();
            let q: NonNull<u8> = q.cast();
            let kept = old.size().min(new.size());
            if len < new.size() {
                wrong.push(format!("{op} {old:?} -> {new:?}: length {len}"));
            }
            if !(q.as_ptr() as usize).is_multiple_of(new.align()) {
                wrong.push(format!(
                    "{op} {old:?} -> {new:?}: {:p} is not aligned to {}",
                    q.as_ptr(),
                    new.align()
                ));
            }
            // SAFETY: q is live for `len` >= kept bytes.
            if let Some(i) = unsafe { first_wrong(q.as_ptr(), kept) } {
                wrong.push(format!("{op} {old:?} -> {new:?}: byte {i} not kept"));
            }
            if op == "grow_zeroed" {
                // SAFETY: q is live for `len` bytes.
                let nonzero = (old.size()..len).find(|&i| unsafe { q.as_ptr().add(i).read() } != 0);
                if let Some(i) = nonzero {
                    wrong.push(format!(
                        "{op} {old:?} -> {new:?}: byte {i} of {len} not zero"
                    ));
                }
            }
            // Writes over the whole length returned, then frees with it (alternately with
            // the new layout itself).
            // SAFETY: q is live for `len` bytes.
            unsafe { q.as_ptr().write_bytes(0xee, len) };
            let free_as = if cases.is_multiple_of(2) {
                Layout::from_size_align(len, new.align()).unwrap()
            } else {
                new
            };
            // SAFETY: q is live with `new`, and any size up to its length fits.
            unsafe { h.deallocate(q, free_as) };
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cases} cases wrong: {wrong:#?}",
        wrong.len()
    );
    // SAFETY: no other thread uses `a`.
    let verified = unsafe { a.verify() };
    assert!(verified.is_ok(), "verify after the resizes: {verified:?}");
    assert!(a.is_empty(), "everything was freed: {}", a.stats());
}

/// `remalloc` and `recalloc` along a walk up and down through the small, medium and large
/// sizes, each step checking the kept bytes and (recalloc) the zeroed growth, with the
/// usable size as the next step's old size every other time.
#[test]
fn remalloc_walks_through_every_range_and_back() {
    let a: Cohort<Life> = Cohort::new();
    let mut walk: Vec<usize> = SIZES.to_vec();
    walk.extend(SIZES.iter().rev());
    walk.extend(SIZES.iter().step_by(3));
    walk.extend(SIZES.iter().rev().step_by(2));
    walk.extend([0, 100, 0, 0, 3 << 20, 0, 16, 0]);
    let mut wrong = Vec::new();
    for zero in [false, true] {
        let (mut p, mut size) = a.malloc_at_least(walk[0], Life::A);
        assert!(!p.is_null());
        // SAFETY: `size` bytes are the allocation's.
        unsafe { fill(p, size) };
        for (step, &next) in walk.iter().enumerate().skip(1) {
            // SAFETY: p is live with `size` (from malloc_at_least, or a step's request, or
            // its usable size).
            let q = unsafe {
                if zero {
                    a.recalloc(p, size, next, Life::A)
                } else {
                    a.remalloc(p, size, next, Life::A)
                }
            };
            assert!(!q.is_null(), "step {step}: {size} -> {next}: null");
            let kept = size.min(next);
            // SAFETY: q is live for `next` bytes.
            if let Some(i) = unsafe { first_wrong(q, kept) } {
                wrong.push(format!(
                    "zero {zero}, step {step}: {size} -> {next}: byte {i}"
                ));
            }
            if zero {
                // SAFETY: as above.
                let nz = (size..next).find(|&i| unsafe { q.add(i).read() } != 0);
                if let Some(i) = nz {
                    wrong.push(format!(
                        "recalloc step {step}: {size} -> {next}: byte {i} not zero"
                    ));
                }
            }
            let usable = a.usable_size(Layout::from_size_align(next, 1).unwrap());
            size = if step % 2 == 0 {
                usable.max(next)
            } else {
                next
            };
            // SAFETY: q is live for its usable size.
            unsafe { fill(q, size) };
            p = q;
        }
        // SAFETY: live with `size`.
        unsafe { a.free(p, size, Life::A) };
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // SAFETY: no other thread uses `a`.
    let verified = unsafe { a.verify() };
    assert!(verified.is_ok(), "verify after the walk: {verified:?}");
    assert!(a.is_empty(), "everything was freed: {}", a.stats());
}
