//! Red-team guards of session 8 on the slow-path event counters (`Stats::events`) under
//! threads, on labels, and on the `try_` allocations (never promote) racing other threads.

use cohort::{Cohort, Label, LABEL_BYTES};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

// Helper threads stopped however a test ends.
#[path = "common/threads.rs"]
mod threads;

cohort::lifetime_classes! {
    enum Life { A, B }
}

fn remote_frees(a: &Cohort<Life>, stride: usize, life: usize) -> u64 {
    a.stats()
        .events
        .iter()
        .find(|e| e.stride == stride && e.life == life)
        .map_or(0, |e| e.remote_frees)
}

/// Frees from four threads at once of one thread's objects: each is one remote free, and
/// the counter (relaxed adds from every thread) says exactly how many.
#[test]
fn remote_frees_from_many_threads_are_counted_exactly() {
    let a: Cohort<Life> = Cohort::new();
    // Two blocks' worth: the frees land in a full block and the current one.
    let v: Vec<usize> = (0..140_000)
        .map(|_| a.malloc(16, Life::A) as usize)
        .collect();
    assert!(v.iter().all(|&p| p != 0));
    let before = remote_frees(&a, 16, 0);
    let frees = 4 * 20_000;
    std::thread::scope(|s| {
        for chunk in v[..frees].chunks(20_000) {
            let a = &a;
            s.spawn(move || {
                for &p in chunk {
                    // SAFETY: allocated above, freed once.
                    unsafe { a.free(p as *mut u8, 16, Life::A) };
                }
            });
        }
    });
    assert_eq!(remote_frees(&a, 16, 0) - before, frees as u64);
    for &p in &v[frees..] {
        // SAFETY: as above.
        unsafe { a.free(p as *mut u8, 16, Life::A) };
    }
    assert!(a.is_empty());
}

/// Counters only grow, whatever threads do at once (a reader never sees one go down).
#[test]
fn counters_never_go_down_while_threads_churn() {
    let a: Cohort<Life> = Cohort::new();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..3 {
            let (a, stop) = (&a, &stop);
            s.spawn(move || {
                let mut held = Vec::new();
                let mut i = 0usize;
                while !stop.load(Relaxed) {
                    i += 1;
                    let size = 8 + (i * 7 + t) % 3000;
                    held.push((a.malloc(size, Life::B) as usize, size));
                    if held.len() > 5000 {
                        for (p, size) in held.drain(..) {
                            // SAFETY: allocated above, freed once.
                            unsafe { a.free(p as *mut u8, size, Life::B) };
                        }
                    }
                }
                for (p, size) in held {
                    // SAFETY: as above.
                    unsafe { a.free(p as *mut u8, size, Life::B) };
                }
            });
        }
        // Stops the threads however this test ends (a failed assertion panics here).
        let stop_threads = threads::StopOnDrop(&stop);
        let mut last: std::collections::HashMap<usize, [u64; 6]> = Default::default();
        for _ in 0..200 {
            for e in a.stats().events {
                let now = [
                    e.alloc_slow,
                    e.free_slow,
                    e.remote_frees,
                    e.blocks_taken,
                    e.blocks_given_back,
                    e.promoted,
                ];
                if let Some(was) = last.insert(e.life * 1000 + e.size_class, now) {
                    assert!(
                        was.iter().zip(&now).all(|(w, n)| w <= n),
                        "class {} life {}: {was:?} -> {now:?}",
                        e.size_class,
                        e.life
                    );
                }
            }
        }
        drop(stop_threads);
    });
}

/// A label is cut to at most `LABEL_BYTES` bytes at a character boundary, as long as it
/// can be: for texts of 1-, 2-, 3- and 4-byte characters at every offset.
#[test]
fn labels_are_cut_at_the_longest_character_boundary() {
    for pad in 0..8 {
        for ch in ['a', 'é', '€', '𝄞'] {
            let text: String = "x".repeat(pad) + &ch.to_string().repeat(40);
            let l = Label::new(&text);
            let s = l.as_str();
            assert!(
                s.len() <= LABEL_BYTES && text.starts_with(s),
                "{text:?} -> {s:?}"
            );
            let next = text[s.len()..].chars().next().map_or(0, char::len_utf8);
            assert!(
                s.len() + next > LABEL_BYTES,
                "{text:?} -> {s:?}: one more character fits"
            );
        }
    }
    let a: Cohort<Life> = Cohort::new().labelled("render");
    let p = a.malloc(64, Life::A);
    // SAFETY: a wrong size: reported, nothing freed.
    let m = unsafe { a.try_free(p, 4096, Life::A) }.unwrap_err();
    assert!(m.to_string().contains("render"), "{m}");
    // SAFETY: live, freed once.
    unsafe { a.free(p, 64, Life::A) };
}

/// `try_malloc` never promotes, even while other threads free and take slots of the
/// request's class in a full region: every result is a slot of the request's own class,
/// and no promoted slot ever exists.
#[test]
fn try_malloc_never_promotes_while_other_threads_churn() {
    let a: Cohort<Life> = Cohort::with_reservation(4 << 20);
    let bigs: Vec<usize> = (0..100).map(|_| a.malloc(32, Life::A) as usize).collect();
    let mut smalls = Vec::new();
    loop {
        let p = a.try_malloc(16, Life::A);
        if p.is_null() {
            break;
        }
        smalls.push(p as usize);
    }
    let promoted = |a: &Cohort<Life>| -> usize { a.stats().heads.iter().map(|h| h.promoted).sum() };
    let freed = std::sync::Mutex::new(smalls.split_off(smalls.len() - 4000));
    std::thread::scope(|s| {
        for _ in 0..3 {
            let (a, freed) = (&a, &freed);
            s.spawn(move || {
                let mut mine = Vec::new();
                for i in 0..3000 {
                    if i % 2 == 0 {
                        if let Some(p) = freed.lock().unwrap().pop() {
                            // SAFETY: a live 16-byte allocation, freed once.
                            unsafe { a.free(p as *mut u8, 16, Life::A) };
                        }
                    }
                    let p = a.try_malloc(16, Life::A);
                    if !p.is_null() {
                        let found = a.allocation_at(p).expect("an allocation");
                        assert_eq!(
                            found.usable, 16,
                            "try_malloc(16) gave a {}-byte slot",
                            found.usable
                        );
                        mine.push(p as usize);
                    }
                }
                freed.lock().unwrap().extend(mine);
            });
        }
        for _ in 0..100 {
            assert_eq!(
                promoted(&a),
                0,
                "a promoted slot while only try_malloc allocates"
            );
        }
    });
    assert_eq!(promoted(&a), 0);
    for p in freed.into_inner().unwrap().into_iter().chain(smalls) {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, 16, Life::A) };
    }
    for p in bigs {
        // SAFETY: live, freed once.
        unsafe { a.free(p as *mut u8, 32, Life::A) };
    }
    assert!(a.is_empty());
}
