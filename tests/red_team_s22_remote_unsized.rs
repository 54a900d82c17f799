//! Red-team attacks of session 22 on the remote free's quick way as `free_unsized` reaches
//! it (the C ABI's `free` is this call: the size and lifetime class found from the
//! address, then the sized free, which aborts on misuse): double frees from another
//! thread while the block's chain in the freeing thread's batch holds slots, of the
//! chain's first after ten frees, of the block's remote list's first (a chain pushed by
//! `stats`), of the owner's local list's first (the owner alive, its free the last thing
//! it did). Each runs in a fork child, which must die of `SIGABRT` after the misuse hook
//! saw a double free of that pointer; before the double free, every object freed keeps
//! its pattern. Small sizes of chains of 64, 8 and 2 slots. A test that found a defect is
//! `#[ignore]`d with its number (RED-n) and the exact failure.

mod red_team_common;
mod red_team_s22_common;

use cohort::{set_misuse_hook, Cohort, Misuse, Problem};
use red_team_common::{in_child, shared_words, wait};
use red_team_s22_common::{check, from_a_live_owner, make, Object};
use std::sync::atomic::{AtomicU64, Ordering};

cohort::lifetime_classes! {
    enum Life { A, B }
}

static A: Cohort<Life> = Cohort::new();

/// Shared with the children: [the pointer freed twice, the pointer the hook saw, its
/// lifetime class, 1 when it was a double free].
static SEEN: std::sync::OnceLock<&'static [AtomicU64]> = std::sync::OnceLock::new();

fn seen() -> &'static [AtomicU64] {
    SEEN.get_or_init(|| shared_words(4))
}

/// The hook: writes what it saw to the shared words (the abort follows).
fn record(m: &Misuse) {
    let s = seen();
    s[1].store(m.ptr as u64, Ordering::SeqCst);
    s[2].store(m.life as u64, Ordering::SeqCst);
    s[3].store(
        u64::from(m.problem == Problem::DoubleFree),
        Ordering::SeqCst,
    );
}

/// Frees `o` with `free_unsized`, after checking its pattern.
fn free(o: Object, what: &str) {
    check(o, what);
    // SAFETY: a live object of A, freed once.
    unsafe { A.free_unsized(o.0 as *mut u8) }.expect("free_unsized");
}

/// Objects of `size` made by a thread that stays alive, in one block; `free_first`: that
/// thread freed the first itself ([`from_a_live_owner`]).
fn owners(size: usize, free_first: bool) -> Vec<Object> {
    let make = move || {
        (0..40)
            .map(|i| make(&A, size, Life::A, i as u8, "owner"))
            .collect()
    };
    let free_it: fn(Object) = |o| free(o, "owner");
    from_a_live_owner(make, |o| o.0, free_first.then_some(free_it))
}

/// One case in a fork child: the objects freed before the double free, and the one freed
/// twice.
fn double_free_in_child(case: &str, size: usize) -> Result<(), String> {
    let s = seen();
    for w in s {
        w.store(0, Ordering::SeqCst);
    }
    let what = format!("{case}, size {size}");
    let child = in_child(30, || {
        set_misuse_hook(Some(record));
        let twice = match case {
            "chain first" => {
                let same = owners(size, false);
                let n = same.len().min(10);
                same[..n].iter().for_each(|&o| free(o, &what));
                same[n - 1]
            }
            "remote first" => {
                let same = owners(size, false);
                free(same[0], &what);
                let _ = A.stats();
                free(same[1], &what);
                free(same[2], &what);
                same[0]
            }
            "local first" => {
                let same = owners(size, true);
                free(same[1], &what);
                free(same[2], &what);
                same[0]
            }
            _ => unreachable!("{case}"),
        };
        s[0].store(twice.0 as u64, Ordering::SeqCst);
        // SAFETY: deliberately a double free: the process must abort.
        let _ = unsafe { A.free_unsized(twice.0 as *mut u8) };
        panic!("{what}: the double free returned");
    });
    let ended = wait(child);
    let (twice, ptr, life, double) = (
        s[0].load(Ordering::SeqCst),
        s[1].load(Ordering::SeqCst),
        s[2].load(Ordering::SeqCst),
        s[3].load(Ordering::SeqCst),
    );
    if ended != Err(libc::SIGABRT) || twice == 0 || (ptr, life, double) != (twice, 0, 1) {
        return Err(format!(
            "{what}: the child ended {ended:?} (wanted SIGABRT); freed twice {twice:#x}, the \
             hook saw {ptr:#x}, class {life}, a double free: {double}"
        ));
    }
    Ok(())
}

#[test]
fn double_frees_of_each_lists_first_through_free_unsized_abort_naming_the_pointer() {
    // A heap of this thread first (the children's frees batch on their thread's heap).
    let keep = A.malloc(24, Life::B);
    let mut failures = Vec::new();
    for size in [16usize, 1000, 4000] {
        for case in ["chain first", "remote first", "local first"] {
            if let Err(e) = double_free_in_child(case, size) {
                failures.push(e);
            }
        }
    }
    // SAFETY: allocated above, freed once.
    unsafe { A.free(keep, 24, Life::B) };
    assert!(failures.is_empty(), "{failures:#?}");
}
