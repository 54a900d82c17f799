//! Red-team attacks of session 9 on the growth of large allocations (mappings of their
//! own, above the medium sizes): buffers grown by small steps and by doubling beside freed (cached) mappings of
//! both lifetime classes, shrunk, zero-grown, freed with wrong sizes, and released by
//! class while the other class's mappings must stay whole. A test that found a defect is
//! `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use cohort::Cohort;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The byte a buffer of tag `t` holds at `i`.
fn pat(t: u8, i: usize) -> u8 {
    t ^ (i / 4096) as u8 ^ (i as u8).rotate_left(3)
}

fn fill(p: *mut u8, from: usize, to: usize, t: u8) {
    // The bytes `bad` samples (multiples of 509), and the last.
    for i in (from.next_multiple_of(509)..to)
        .step_by(509)
        .chain(to.checked_sub(1))
    {
        if i >= from {
            // SAFETY: the callers pass live buffers of at least `to` bytes.
            unsafe { p.add(i).write(pat(t, i)) };
        }
    }
}

/// The first sampled byte (a multiple of 509) of `[0, n)` at `p` that is not tag `t`'s.
fn bad(p: *const u8, n: usize, t: u8) -> Option<usize> {
    (0..n)
        .step_by(509)
        // SAFETY: the callers pass live buffers of at least `n` bytes.
        .find(|&i| unsafe { p.add(i).read() } != pat(t, i))
}

/// Buffers of both classes grown (small steps, doubling, zeroed growth), shrunk and freed
/// in a random order, with freed mappings of every size in the cache; each buffer's
/// sampled bytes are checked after every step, and the zero-grown tails read zero. Then
/// Short is released: every Long buffer is whole; Long is freed by its sizes and the
/// instance is empty. Every free with a size of another page count is misuse first.
#[test]
fn large_buffers_grown_beside_cached_mappings_keep_their_bytes_and_their_class() {
    let a = Cohort::<Life>::new();
    // The allocator's page (`COHORT_PAGE_SIZE`): sizes within one page of each other share
    // a mapping's length, so a free with another size of the same length is no misuse.
    let page = a.usable_size(std::alloc::Layout::from_size_align(1, 8192).unwrap());
    let mut seed = 0x600d_5eed_u64;
    // (pointer, size, life, tag)
    let mut bufs: Vec<(usize, usize, Life, u8)> = Vec::new();
    let mut tag = 1u8;
    for step in 0..2000 {
        let r = next(&mut seed) % 16;
        if bufs.len() < 12 && r < 4 {
            let n = MIB + 1 + next(&mut seed) as usize % (3 * MIB);
            let life = if r.is_multiple_of(2) {
                Life::Short
            } else {
                Life::Long
            };
            let p = a.malloc(n, life);
            assert!(!p.is_null());
            tag = tag.wrapping_add(1).max(1);
            fill(p, 0, n, tag);
            bufs.push((p as usize, n, life, tag));
            continue;
        }
        if bufs.is_empty() {
            continue;
        }
        let k = next(&mut seed) as usize % bufs.len();
        let (p, n, life, t) = bufs[k];
        let p = p as *mut u8;
        assert_eq!(bad(p, n, t), None, "step {step}: buffer of {n} B changed");
        match r {
            4..=8 => {
                // Growth by a small step (a page or an eighth) or by doubling.
                let to = match r {
                    4 => n + 4096,
                    5 => n + n / 8,
                    6 => n + 1 + next(&mut seed) as usize % 9000,
                    _ => n * 2,
                }
                .min(16 * MIB);
                let zero = r == 8;
                // SAFETY: live, n bytes of `life`.
                let q = unsafe {
                    if zero {
                        a.recalloc(p, n, to, life)
                    } else {
                        a.remalloc(p, n, to, life)
                    }
                };
                assert!(!q.is_null());
                assert_eq!(bad(q, n, t), None, "step {step}: grown {n} -> {to}: kept");
                if zero {
                    // SAFETY: `to` bytes of ours.
                    let tail = unsafe { std::slice::from_raw_parts(q.add(n), to - n) };
                    let at = tail.iter().position(|&b| b != 0);
                    assert_eq!(at, None, "step {step}: recalloc {n} -> {to}: tail");
                }
                fill(q, n, to, t);
                bufs[k] = (q as usize, to, life, t);
            }
            9..=10 => {
                let to = (n / 2).max(MIB + 1);
                // SAFETY: live, n bytes of `life`.
                let q = unsafe { a.remalloc(p, n, to, life) };
                assert!(!q.is_null());
                assert_eq!(bad(q, to, t), None, "step {step}: shrunk {n} -> {to}");
                bufs[k] = (q as usize, to, life, t);
            }
            _ => {
                let wrong = n.next_multiple_of(page) + page * (1 + next(&mut seed) as usize % 3);
                // SAFETY: misuse of a live allocation: reported, nothing freed.
                let m = unsafe { a.try_free(p, wrong, life) };
                assert!(m.is_err(), "step {step}: a {n} B buffer freed as {wrong} B");
                // SAFETY: live, freed once with its size.
                unsafe { a.free(p, n, life) };
                bufs.swap_remove(k);
            }
        }
    }
    // SAFETY: Short's buffers are dropped and never used again.
    let released = unsafe { a.release_class(Life::Short) };
    let shorts = bufs.iter().filter(|b| matches!(b.2, Life::Short)).count();
    assert_eq!(released.large, shorts, "{released:?}");
    for &(p, n, life, t) in &bufs {
        if matches!(life, Life::Long) {
            assert_eq!(
                bad(p as *const u8, n, t),
                None,
                "a Long buffer after Short's release"
            );
            // SAFETY: live, freed once.
            unsafe { a.free(p as *mut u8, n, life) };
        }
    }
    assert!(a.is_empty(), "{:?}", a.stats());
}

/// The large cache at its bound hands out its nearest mapping to be trimmed or grown for a
/// request of another length. With a small bound, hundreds of large requests of random
/// lengths and alignments (8 bytes to 2 MiB), some zeroed, against mappings freed dirty:
/// each comes back aligned, zeroed when asked, apart from every live one, and keeps its
/// bytes; the instance ends empty.
#[test]
fn large_requests_served_by_resized_cached_mappings_are_aligned_zeroed_and_apart() {
    use core::alloc::Layout;
    let a = Cohort::<Life>::new();
    a.set_retention(cohort::Retention {
        large_cache_bytes: 24 * MIB,
        large_cache_mappings: 6,
        ..cohort::Retention::DEFAULT
    });
    let mut seed = 0xcace_u64;
    let mut live: Vec<(usize, Layout, u8)> = Vec::new();
    for step in 0..400 {
        if live.len() >= 6 || (!live.is_empty() && next(&mut seed).is_multiple_of(3)) {
            let (p, l, t) = live.swap_remove(next(&mut seed) as usize % live.len());
            assert_eq!(
                bad(p as *const u8, l.size(), t),
                None,
                "step {step}: {l:?} changed"
            );
            // SAFETY: live, freed once with its layout.
            unsafe { a.dealloc(p as *mut u8, l, Life::Short) };
            continue;
        }
        let n = MIB + 1 + next(&mut seed) as usize % (7 * MIB);
        let align = [8, 4096, 64 << 10, 2 << 20][next(&mut seed) as usize % 4];
        let l = Layout::from_size_align(n, align).unwrap();
        let zero = next(&mut seed).is_multiple_of(2);
        let p = if zero {
            a.alloc_zeroed(l, Life::Short)
        } else {
            a.alloc(l, Life::Short)
        };
        assert!(!p.is_null(), "step {step}: {l:?}");
        assert!(
            (p as usize).is_multiple_of(align),
            "step {step}: {l:?} at {p:p}"
        );
        if zero {
            // SAFETY: n bytes of ours.
            let bytes = unsafe { std::slice::from_raw_parts(p, n) };
            let at = bytes.iter().position(|&b| b != 0);
            assert_eq!(at, None, "step {step}: alloc_zeroed({l:?})");
        }
        for &(q, m, _) in &live {
            assert!(
                p as usize + n <= q || q + m.size() <= p as usize,
                "step {step}: {l:?} at {p:p} overlaps a live one"
            );
        }
        let t = (step as u8) | 1;
        // Every byte written: the next user of its pages finds them dirty.
        // SAFETY: n bytes of ours.
        unsafe { p.write_bytes(0xff, n) };
        fill(p, 0, n, t);
        live.push((p as usize, l, t));
    }
    for (p, l, t) in live {
        assert_eq!(bad(p as *const u8, l.size(), t), None);
        // SAFETY: live, freed once with its layout.
        unsafe { a.dealloc(p as *mut u8, l, Life::Short) };
    }
    assert!(a.is_empty(), "{:?}", a.stats());
}
