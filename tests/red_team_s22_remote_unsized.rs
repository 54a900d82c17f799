//! Red-team attacks of session 22 on the remote free's quick way as the C ABI's frees reach
//! it, made here with the Rust calls they make: `free` is `free_unsized` (the size and
//! lifetime class found from the address, then the sized free, which aborts on misuse),
//! `free_sized` is `check_slot_start` then the sized free through `GlobalAlloc`. Double
//! frees from another thread while the block's chain in the freeing thread's batch holds
//! slots, of the chain's first after ten frees, of the block's remote list's first (a
//! chain pushed by `stats`), of the owner's local list's first (the owner alive, its free
//! the last thing it did). Each runs in a fork child, which must die of `SIGABRT` after the
//! misuse hook saw a double free of that pointer; before the double free, every object
//! freed keeps its pattern. Small sizes of chains of 64, 8 and 2 slots. A test that found
//! a defect is `#[ignore]`d with its number (RED-n) and the exact failure.

mod red_team_common;
mod red_team_s22_common;

use cohort::{set_misuse_hook, Cohort, Misuse, Problem};
use red_team_common::{in_child, shared_words, wait};
use red_team_s22_common::{check, from_a_live_owner, make, patterned, Object};
use std::alloc::{GlobalAlloc, Layout};
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

/// How the test frees: the C ABI's two frees, as the Rust calls they make.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    /// `free`: `free_unsized` (objects of class A made by `malloc`).
    Unsized,
    /// `free_sized`: `check_slot_start`, then the sized free through `GlobalAlloc` (objects
    /// made through `GlobalAlloc`).
    Sized,
}

/// The layout of `GlobalAlloc`'s objects of `size` bytes.
fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("layout")
}

/// Frees `o` as `api` does, after checking its pattern.
fn free(api: Api, o: Object, what: &str) {
    check(o, what);
    free_unchecked(api, o);
}

/// Frees `o` as `api` does.
fn free_unchecked(api: Api, o: Object) {
    let p = o.0 as *mut u8;
    match api {
        // SAFETY: a live object of A, freed once (or a double free under test).
        Api::Unsized => unsafe { A.free_unsized(p) }.expect("free_unsized"),
        Api::Sized => {
            A.check_slot_start(p);
            // SAFETY: a live object made through GlobalAlloc with this layout, freed once
            // (or a double free under test).
            unsafe { GlobalAlloc::dealloc(&A, p, layout(o.1)) }
        }
    }
}

/// Objects of `size` made by a thread that stays alive, in one block; `free_first`: that
/// thread freed the first itself ([`from_a_live_owner`]).
fn owners(api: Api, size: usize, free_first: bool) -> Vec<Object> {
    let make = move || {
        (0..40)
            .map(|i| match api {
                Api::Unsized => make(&A, size, Life::A, i as u8, "owner"),
                Api::Sized => {
                    // SAFETY: a non-zero size.
                    let p = unsafe { GlobalAlloc::alloc(&A, layout(size)) } as usize;
                    assert_ne!(p, 0, "alloc({size})");
                    patterned(p, size, i as u8)
                }
            })
            .collect()
    };
    let free_it: fn(Object) = match api {
        Api::Unsized => |o| free(Api::Unsized, o, "owner"),
        Api::Sized => |o| free(Api::Sized, o, "owner"),
    };
    from_a_live_owner(make, |o| o.0, free_first.then_some(free_it))
}

/// One case in a fork child: the objects freed before the double free, and the one freed
/// twice.
fn double_free_in_child(api: Api, case: &str, size: usize) -> Result<(), String> {
    let s = seen();
    for w in s {
        w.store(0, Ordering::SeqCst);
    }
    let what = format!("{api:?}, {case}, size {size}");
    let child = in_child(30, || {
        set_misuse_hook(Some(record));
        let twice = match case {
            "chain first" => {
                let same = owners(api, size, false);
                let n = same.len().min(10);
                same[..n].iter().for_each(|&o| free(api, o, &what));
                same[n - 1]
            }
            "remote first" => {
                let same = owners(api, size, false);
                free(api, same[0], &what);
                let _ = A.stats();
                free(api, same[1], &what);
                free(api, same[2], &what);
                same[0]
            }
            "local first" => {
                let same = owners(api, size, true);
                free(api, same[1], &what);
                free(api, same[2], &what);
                same[0]
            }
            _ => unreachable!("{case}"),
        };
        s[0].store(twice.0 as u64, Ordering::SeqCst);
        // Deliberately a double free: the process must abort.
        free_unchecked(api, twice);
        panic!("{what}: the double free returned");
    });
    let ended = wait(child);
    let (twice, ptr, life, double) = (
        s[0].load(Ordering::SeqCst),
        s[1].load(Ordering::SeqCst),
        s[2].load(Ordering::SeqCst),
        s[3].load(Ordering::SeqCst),
    );
    // GlobalAlloc's objects are of its own lifetime class.
    let class_named = api == Api::Sized || life == 0;
    if ended != Err(libc::SIGABRT) || twice == 0 || (ptr, double) != (twice, 1) || !class_named {
        return Err(format!(
            "{what}: the child ended {ended:?} (wanted SIGABRT); freed twice {twice:#x}, the \
             hook saw {ptr:#x}, class {life}, a double free: {double}"
        ));
    }
    Ok(())
}

#[test]
fn double_frees_of_each_lists_first_through_the_c_abis_frees_abort_naming_the_pointer() {
    // A heap of this thread first (the children's frees batch on their thread's heap).
    let keep = A.malloc(24, Life::B);
    let mut failures = Vec::new();
    for api in [Api::Unsized, Api::Sized] {
        for size in [16usize, 1000, 4000] {
            for case in ["chain first", "remote first", "local first"] {
                if let Err(e) = double_free_in_child(api, case, size) {
                    failures.push(e);
                }
            }
        }
    }
    // SAFETY: allocated above, freed once.
    unsafe { A.free(keep, 24, Life::B) };
    assert!(failures.is_empty(), "{failures:#?}");
}
