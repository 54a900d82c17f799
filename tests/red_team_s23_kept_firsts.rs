//! RED-132's siblings (session 23): a block emptied in place (a release, or the idle look)
//! keeps both lists' firsts until its next allocation, the owner's local list's (`own`, the
//! main thread O's last free into the block) and the remote list's (`x`, thread F's last),
//! and a double free of either by a thread that does not own the block is reported in
//! every build, whichever way it comes: the C ABI's `free` (`free_unsized`) and
//! `free_sized` (`check_slot_start`, then `GlobalAlloc::dealloc`) and `GlobalAlloc::dealloc`
//! itself, which abort naming the pointer; a thread of a fork child made after the reset.
//! And a guard: a region file left by a process gone while a block kept both firsts
//! opens with every list checked.

mod red_team_common;
mod red_team_s22_common;

use cohort::{
    set_misuse_hook, Cohort, CreateOptions, Misuse, OpenOptions, Place, Problem, Retention,
    SharedCohort,
};
use red_team_common::{in_child, shared_words, wait};
use red_team_s22_common::{
    double_free_reported, fresh_objects_once, make, patterned, raise, unmake, Object,
};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use test_support::raw_thread;

cohort::lifetime_classes! {
    enum Life { A, B }
}

/// The instance of the C ABI's and `GlobalAlloc`'s cases (used in their children only).
static C: Cohort<Life> = Cohort::new();

/// Objects of the block; the first [`OWN`] are freed by O, the others by F.
const N: usize = 300;
const OWN: usize = 5;
const SIZE: usize = 64;

/// How the block is emptied in place.
#[derive(Clone, Copy, Debug)]
enum Emptied {
    /// `release_class` of class A.
    Release,
    /// The idle look of O's slow paths of class B (no decay delay), 200 rounds.
    Idle,
}

/// Which kept first is freed again.
#[derive(Clone, Copy, Debug)]
enum Which {
    /// O's last free (the local list's first).
    Own,
    /// F's last free (the remote list's first).
    Remote,
}

/// How the objects are made and freed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    /// `malloc` of class A and the sized free.
    Sized,
    /// `malloc` of class A and the C ABI's `free`: `free_unsized`.
    Unsized,
    /// `GlobalAlloc` (its own lifetime class) and the C ABI's `free_sized`:
    /// `check_slot_start`, then `GlobalAlloc::dealloc`.
    CFreeSized,
    /// `GlobalAlloc::alloc` and `GlobalAlloc::dealloc`.
    Global,
}

const LAYOUT: Layout = match Layout::from_size_align(SIZE, 8) {
    Ok(l) => l,
    Err(_) => panic!("layout"),
};

fn alloc(a: &Cohort<Life>, api: Api, i: usize, what: &str) -> Object {
    match api {
        Api::Sized | Api::Unsized => make(a, SIZE, Life::A, i as u8, what),
        Api::CFreeSized | Api::Global => {
            // SAFETY: a non-zero size.
            let p = unsafe { GlobalAlloc::alloc(a, LAYOUT) } as usize;
            assert_ne!(p, 0, "{what}: alloc");
            patterned(p, SIZE, i as u8)
        }
    }
}

/// Frees `o` as `api` does (once, or a double free under test).
fn release(a: &Cohort<Life>, api: Api, o: Object) {
    let p = o.0 as *mut u8;
    match api {
        // SAFETY: a live object of class A (or a double free under test).
        Api::Sized => unsafe { a.free(p, SIZE, Life::A) },
        // SAFETY: as above.
        Api::Unsized => unsafe { a.free_unsized(p) }.expect("free_unsized"),
        Api::CFreeSized => {
            a.check_slot_start(p);
            // SAFETY: a live object made by GlobalAlloc with this layout (or a double
            // free under test).
            unsafe { GlobalAlloc::dealloc(a, p, LAYOUT) }
        }
        // SAFETY: as above.
        Api::Global => unsafe { GlobalAlloc::dealloc(a, p, LAYOUT) },
    }
}

/// O (the calling thread) makes [`N`] objects, frees the first [`OWN`]; F frees the others
/// (remote frees, its chain pushed by `stats`); then O empties the block in place. Returns
/// O's last free and F's: the local and the remote list's firsts at the reset.
fn emptied_with_both_firsts(
    a: &Cohort<Life>,
    api: Api,
    emptied: Emptied,
    what: &str,
) -> (Object, Object) {
    a.set_retention(Retention {
        delay: Duration::ZERO,
        ..Retention::DEFAULT
    });
    let all: Vec<Object> = (0..N).map(|i| alloc(a, api, i, what)).collect();
    for &o in &all[..OWN] {
        red_team_s22_common::check(o, what);
        release(a, api, o);
    }
    raw_thread::scope(|s| {
        s.spawn(|| {
            for &o in &all[OWN..] {
                red_team_s22_common::check(o, what);
                release(a, api, o);
            }
            let _ = a.stats();
        });
    });
    match emptied {
        Emptied::Release => {
            assert_ne!(api, Api::Global, "GlobalAlloc's class is not released");
            // SAFETY: every object of class A is dead (freed above), nobody uses A.
            let _ = unsafe { a.release_class(Life::A) };
        }
        Emptied::Idle => {
            for _ in 0..200 {
                let other: Vec<Object> = (0..N)
                    .map(|i| make(a, 1000, Life::B, i as u8, what))
                    .collect();
                other.into_iter().for_each(|o| unmake(a, o, Life::B, what));
            }
        }
    }
    (all[OWN - 1], all[N - 1])
}

/// Shared with the children: [the pointer freed twice, the pointer the hook saw, 1 when it
/// was a double free].
fn seen() -> &'static [AtomicU64] {
    static SEEN: std::sync::OnceLock<&'static [AtomicU64]> = std::sync::OnceLock::new();
    SEEN.get_or_init(|| shared_words(3))
}

/// The hook of the aborting cases: writes what it saw (the abort follows).
fn record(m: &Misuse) {
    let s = seen();
    s[1].store(m.ptr as u64, Ordering::SeqCst);
    s[2].store(
        u64::from(m.problem == Problem::DoubleFree),
        Ordering::SeqCst,
    );
}

/// One aborting case, in a fork child: after the reset, another thread frees `which`
/// again through `api`; the child must die of `SIGABRT` after the hook saw a double free
/// of that pointer.
fn aborts(api: Api, emptied: Emptied, which: Which) -> Result<(), String> {
    let what = format!("{api:?}, emptied by {emptied:?}, {which:?} first freed again");
    let s = seen();
    s.iter().for_each(|w| w.store(0, Ordering::SeqCst));
    let child = in_child(60, || {
        set_misuse_hook(Some(record));
        let (own, x) = emptied_with_both_firsts(&C, api, emptied, &what);
        let twice = match which {
            Which::Own => own,
            Which::Remote => x,
        };
        s[0].store(twice.0 as u64, Ordering::SeqCst);
        raw_thread::scope(|t| {
            t.spawn(|| release(&C, api, twice));
        });
        panic!("{what}: the double free returned");
    });
    let ended = wait(child);
    let (twice, ptr, double) = (
        s[0].load(Ordering::SeqCst),
        s[1].load(Ordering::SeqCst),
        s[2].load(Ordering::SeqCst),
    );
    if ended != Err(libc::SIGABRT) || twice == 0 || (ptr, double) != (twice, 1) {
        return Err(format!(
            "{what}: the child ended {ended:?} (wanted SIGABRT); freed twice {twice:#x}, the \
             hook saw {ptr:#x}, a double free: {double}"
        ));
    }
    Ok(())
}

/// The C ABI's frees and `GlobalAlloc::dealloc` (which abort on misuse) report another
/// thread's double free of either kept first after a release or an idle reset (before the
/// fix, of `x`: the child exits 1 on the panic after the double free returned).
#[test]
fn double_frees_of_either_kept_first_through_aborting_frees_abort_naming_the_pointer() {
    let mut failures = Vec::new();
    let cases = [
        (Api::Unsized, Emptied::Release),
        (Api::Unsized, Emptied::Idle),
        (Api::CFreeSized, Emptied::Idle),
        (Api::Global, Emptied::Idle),
    ];
    for (api, emptied) in cases {
        for which in [Which::Own, Which::Remote] {
            if let Err(e) = aborts(api, emptied, which) {
                failures.push(e);
            }
        }
    }
    assert_eq!(failures, Vec::<String>::new());
}

/// A thread of a fork child made after the reset (the forking thread is O, the block's
/// owner: its heap and the block's kept firsts go on in the child) frees either kept
/// first again: reported, nothing changed; the child's instance then verifies, hands out
/// fresh objects once each, and is empty. A private instance, and a shared-anonymous region
/// (whose frees are pushed at once; the child's are the parent's too, so the parent waits).
#[test]
fn a_fork_childs_double_free_of_either_kept_first_is_reported() {
    for shared in [false, true] {
        for emptied in [Emptied::Release, Emptied::Idle] {
            let what = format!("fork child, emptied by {emptied:?}, shared: {shared}");
            let a = if shared {
                Cohort::<Life>::shared_anonymous(64 << 20).expect("shared anonymous")
            } else {
                Cohort::<Life>::new()
            };
            let (own, x) = emptied_with_both_firsts(&a, Api::Sized, emptied, &what);
            let child = in_child(60, || {
                let before = set_misuse_hook(Some(raise));
                raw_thread::scope(|s| {
                    s.spawn(|| {
                        double_free_reported(&a, x, Life::A, &format!("{what}: x"));
                        double_free_reported(&a, own, Life::A, &format!("{what}: own"));
                    });
                });
                set_misuse_hook(before);
                // SAFETY: no other thread uses `a`.
                unsafe { a.verify() }.expect("verify in the child");
                fresh_objects_once(&a, &[SIZE], N, Life::A, &what);
                assert!(a.is_empty(), "{what}: not empty in the child");
            });
            assert_eq!(wait(child), Ok(0), "{what}: the child failed");
            // SAFETY: no other thread uses `a`.
            unsafe { a.verify() }.expect("verify in the parent");
            assert!(a.is_empty(), "{what}: not empty in the parent");
        }
    }
}

/// Guard (passes before RED-132's fix too): a region file left by a process gone without
/// leaving the region while a block of it kept both firsts opens in another process with
/// every list walked at open, verifies, and hands out fresh objects once each (the dead
/// process's heap is taken over first: its hand-over forgets the kept firsts).
#[test]
fn a_region_file_left_with_both_firsts_kept_opens_checked() {
    let path = std::env::temp_dir().join(format!("cohort-kept-firsts-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let place = Place::File(&path);
    let left = in_child(60, || {
        let r = SharedCohort::<Life>::create(place, CreateOptions::new(64 << 20)).expect("create");
        let _ = emptied_with_both_firsts(&r, Api::Sized, Emptied::Release, "left");
        // Gone without leaving the region: its heap and the block stay as they are.
        std::mem::forget(r);
    });
    assert_eq!(wait(left), Ok(0), "the process that left the file failed");
    let opener = in_child(60, || {
        let options = OpenOptions::new().check_lists_at_open(true);
        let r = SharedCohort::<Life>::open(place, options).expect("the file opens, checked");
        // SAFETY: no other thread uses the region.
        unsafe { r.verify() }.expect("verify after the open");
        fresh_objects_once(&r, &[SIZE], N, Life::A, "after the open");
        // SAFETY: as above.
        unsafe { r.verify() }.expect("verify at the end");
    });
    let ended = wait(opener);
    let _ = std::fs::remove_file(&path);
    assert_eq!(ended, Ok(0), "the process that opened the file failed");
}
