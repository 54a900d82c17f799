//! Red-team attacks of session 10 on the large cache keeping ranges (a shorter request takes
//! the head of a longer cached range and leaves its tail cached; a freed range joins the
//! cached ranges it touches, across mappings; a longer request grows the longest range):
//! threads allocating, zeroing, growing, shrinking and freeing large buffers of random
//! lengths, handing them to each other, with wrong-size frees and frees of addresses
//! inside buffers, in instances with a roomy and a tight cache. No two live buffers may
//! overlap, every buffer keeps its bytes, every zeroed byte reads zero, and every misuse
//! is reported without changing anything. A test that found a defect is `#[ignore]`d with
//! its number (RED-n), its owner and the exact failure.

use cohort::{Cohort, Retention};
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::sync::{mpsc, Mutex};

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

/// A large size: whole allocator pages sometimes (exact fits and splits), odd otherwise.
fn large_size(seed: &mut u64, page: usize) -> usize {
    let n = MIB + 1 + next(seed) as usize % (14 * MIB);
    match next(seed) % 3 {
        0 => n.next_multiple_of(page),
        1 => n.next_multiple_of(MIB),
        _ => n,
    }
}

/// The byte buffer `t` holds at `i` (sampled: the first byte of every 4 KiB and the last).
fn pat(t: u8, i: usize) -> u8 {
    t ^ (i >> 12) as u8
}

fn stamp(p: usize, n: usize, t: u8) {
    for i in (0..n).step_by(4096).chain([n - 1]) {
        // SAFETY: the callers pass live buffers of n bytes.
        unsafe { (p as *mut u8).add(i).write(pat(t, i)) };
    }
}

/// The first stamped byte of a buffer of `n` bytes of tag `t` below `limit` that changed.
fn stamped_below(p: usize, n: usize, t: u8, limit: usize) -> Option<usize> {
    (0..n)
        .step_by(4096)
        .chain([n - 1])
        .filter(|&i| i < limit)
        // SAFETY: the callers pass live buffers of n bytes.
        .find(|&i| unsafe { (p as *const u8).add(i).read() } != pat(t, i))
}

/// The first byte of `[from, to)` at `p` that is not zero (4 KiB compares at a time).
fn stamped(p: usize, n: usize, t: u8) -> Option<usize> {
    stamped_below(p, n, t, n)
}

fn first_nonzero(p: usize, from: usize, to: usize) -> Option<usize> {
    const ZERO: [u8; 4096] = [0; 4096];
    let mut i = from;
    while i < to {
        let n = (to - i).min(4096);
        // SAFETY: the callers pass live buffers of at least `to` bytes.
        let got = unsafe { std::slice::from_raw_parts((p as *const u8).add(i), n) };
        if got != &ZERO[..n] {
            return got.iter().position(|&b| b != 0).map(|k| i + k);
        }
        i += n;
    }
    None
}

struct Live(Mutex<BTreeMap<usize, usize>>);

/// Every operation: (thread, step, what, address, length) of the buffer it made or ended.
static LOG: Mutex<Vec<Event>> = Mutex::new(Vec::new());

/// (thread, step, what, address, length).
type Event = (u64, usize, &'static str, usize, usize);

fn log(t: u64, step: usize, what: &'static str, p: usize, n: usize) {
    LOG.lock().unwrap().push((t, step, what, p, n));
}

/// The logged operations on buffers that overlap `[p, p + n)`, the last 12.
fn history(p: usize, n: usize) -> String {
    let log = LOG.lock().unwrap();
    let hits: Vec<String> = log
        .iter()
        .filter(|e| e.3 < p + n && p < e.3 + e.4)
        .map(|e| format!("t{} s{} {} [{:#x}, +{:#x})", e.0, e.1, e.2, e.3, e.4))
        .collect();
    hits[hits.len().saturating_sub(12)..].join("; ")
}

impl Live {
    /// Records `[p, p + n)`; the overlapping live buffer if any.
    fn add(&self, p: usize, n: usize) -> Result<(), String> {
        let mut m = self.0.lock().unwrap();
        if let Some((&s, &e)) = m.range(..p + n).next_back() {
            if e > p {
                return Err(format!(
                    "[{p:#x}, +{n:#x}) overlaps live [{s:#x}, {e:#x}); history: {}",
                    history(s, e - s)
                ));
            }
        }
        m.insert(p, p + n);
        Ok(())
    }

    fn remove(&self, p: usize) {
        self.0.lock().unwrap().remove(&p);
    }
}

type Buf = (usize, usize, Life, u8);

/// One thread's walk: 300 steps over its buffers and those handed to it.
fn walk(
    a: &Cohort<Life>,
    live: &Live,
    t: u64,
    tx: mpsc::Sender<Vec<Buf>>,
    rx: &mpsc::Receiver<Vec<Buf>>,
) -> Result<(), String> {
    let page = a.usable_size(Layout::from_size_align(1, 8192).unwrap());
    let usable = |n: usize| n.next_multiple_of(page);
    let mut seed = 0xa11c_e5ed ^ (t << 32 | 1);
    let mut mine: Vec<Buf> = Vec::new();
    let mut tag = (t as u8) << 6;
    for step in 0..300 {
        if let Ok(more) = rx.try_recv() {
            mine.extend(more);
        }
        let r = next(&mut seed) % 12;
        tag = tag.wrapping_add(1).max(1);
        let at = |what: &str| format!("thread {t}, step {step}: {what}");
        if mine.len() < 3 || r < 3 {
            let n = large_size(&mut seed, page);
            let life = if r.is_multiple_of(2) {
                Life::Short
            } else {
                Life::Long
            };
            let zero = next(&mut seed).is_multiple_of(2);
            let p = if zero {
                a.calloc(n, life)
            } else {
                a.malloc(n, life)
            } as usize;
            if p == 0 {
                return Err(at(&format!("alloc({n}) null")));
            }
            live.add(p, usable(n))
                .map_err(|e| at(&format!("alloc({n}): {e}")))?;
            if zero {
                if let Some(k) = first_nonzero(p, 0, usable(n)) {
                    return Err(at(&format!("calloc({n}) byte {k} is not zero")));
                }
            }
            stamp(p, n, tag);
            mine.push((p, n, life, tag));
        } else if r < 7 {
            let i = next(&mut seed) as usize % mine.len();
            let (p, n, life, t0) = mine[i];
            if let Some(k) = stamped(p, n, t0) {
                return Err(at(&format!(
                    "a {n}-byte buffer changed at {k} before its resize"
                )));
            }
            let m = match next(&mut seed) % 4 {
                0 => n + page,
                1 => n * 2,
                2 => (n / 2).max(MIB + 1),
                _ => large_size(&mut seed, page),
            };
            let zero = r.is_multiple_of(2);
            live.remove(p);
            // SAFETY: live, n bytes of `life`.
            let q = unsafe {
                if zero {
                    a.recalloc(p as *mut u8, n, m, life)
                } else {
                    a.remalloc(p as *mut u8, n, m, life)
                }
            } as usize;
            if q == 0 {
                return Err(at(&format!("resize {n} -> {m} null")));
            }
            live.add(q, usable(m))
                .map_err(|e| at(&format!("resize {n} -> {m}: {e}")))?;
            let kept = n.min(m);
            if let Some(k) = stamped_below(q, n, t0, kept) {
                return Err(at(&format!(
                    "resize {n} -> {m} (moved: {}) lost byte {k}",
                    q != p
                )));
            }
            if zero && m > n {
                if let Some(k) = first_nonzero(q, n, usable(m)) {
                    return Err(at(&format!(
                        "recalloc {n} -> {m} (moved: {}) byte {k} is not zero",
                        q != p
                    )));
                }
            }
            stamp(q, m, tag);
            mine[i] = (q, m, life, tag);
        } else if r < 8 && mine.len() > 2 {
            // Two buffers to the other thread.
            let give: Vec<Buf> = mine.split_off(mine.len() - 2);
            for b in &give {
                log(t, step, "handed over", b.0, usable(b.1));
            }
            let _ = tx.send(give);
        } else {
            let i = next(&mut seed) as usize % mine.len();
            let (p, n, life, t0) = mine.swap_remove(i);
            if let Some(k) = stamped(p, n, t0) {
                return Err(at(&format!("a {n}-byte buffer changed at {k}")));
            }
            let other = if life == Life::Short {
                Life::Long
            } else {
                Life::Short
            };
            // Misuse first: each must be reported and change nothing.
            // SAFETY: wrong sizes, class and pointers of a live buffer: misuse, reported.
            unsafe {
                for (q, size, l) in [
                    (p, n + 2 * page, life),
                    (p, n.saturating_sub(page).max(MIB + 1), life),
                    (p, n, other),
                    (p + page, n - page, life),
                    (p + n / 2 / page * page, MIB + 1, life),
                ] {
                    if usable(size) == usable(n) && q == p && l == life {
                        continue;
                    }
                    if a.try_free(q as *mut u8, size, l).is_ok() {
                        return Err(at(&format!(
                            "try_free({:#x} = start + {:#x}, {size}) of a live {n}-byte buffer accepted",
                            q,
                            q - p
                        )));
                    }
                }
            }
            match a.allocation_at(p as *const u8) {
                Some(found) if found.usable == usable(n) => {}
                other => {
                    return Err(at(&format!(
                        "allocation_at of a live {n}-byte buffer: {other:?}"
                    )))
                }
            }
            live.remove(p);
            log(t, step, "free", p, usable(n));
            // SAFETY: live, freed once with its size and class.
            unsafe { a.free(p as *mut u8, n, life) };
        }
    }
    free_all(a, live, mine.into_iter().chain(rx.try_iter().flatten()))
}

/// Checks and frees `bufs`.
fn free_all(a: &Cohort<Life>, live: &Live, bufs: impl Iterator<Item = Buf>) -> Result<(), String> {
    for (p, n, life, t0) in bufs {
        if let Some(k) = stamped(p, n, t0) {
            return Err(format!("at the end: a {n}-byte buffer changed at {k}"));
        }
        live.remove(p);
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, n, life) };
    }
    Ok(())
}

fn three_threads(a: &Cohort<Life>, what: &str) {
    LOG.lock().unwrap().clear();
    let live = Live(Mutex::new(BTreeMap::new()));
    let (tx0, rx0) = mpsc::channel();
    let (tx1, rx1) = mpsc::channel();
    let (tx2, rx2) = mpsc::channel();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let hs: Vec<_> = [(0, tx0, rx2), (1, tx1, rx0), (2, tx2, rx1)]
            .into_iter()
            .map(|(t, tx, rx)| {
                let live = &live;
                s.spawn(move || {
                    let r = walk(a, live, t, tx, &rx);
                    (r, rx)
                })
            })
            .collect();
        let ended: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        // Buffers handed over after their receiver's last look.
        ended
            .into_iter()
            .map(|(r, rx)| r.and_then(|()| free_all(a, &live, rx.try_iter().flatten())))
            .collect()
    });
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{what}: {failures:#?}");
    assert!(a.is_empty(), "{what}: {:?}", a.stats().large_allocations);
    // SAFETY: no other thread uses the instance.
    unsafe { a.verify() }.expect("verifies");
}

#[test]
fn large_buffers_from_split_and_joined_cached_ranges_stay_apart_whole_and_zeroed() {
    three_threads(&Cohort::<Life>::new(), "default cache");
    let tight = Cohort::<Life>::new();
    tight.set_retention(Retention {
        large_cache_bytes: 24 * MIB,
        large_cache_mappings: 3,
        ..Retention::DEFAULT
    });
    three_threads(&tight, "cache of 24 MiB, 3 ranges");
    let zero_delay = Cohort::<Life>::new();
    zero_delay.set_retention(Retention {
        delay: std::time::Duration::ZERO,
        ..Retention::DEFAULT
    });
    three_threads(&zero_delay, "delay 0");
}
