//! Red team (session 18): a fork child of a process whose `format_in` region is in memory the
//! child gets no copy of (`MADV_DONTFORK`) or gets zeroed (`MADV_WIPEONFORK`): every public
//! call of the lost instance in the child either works or aborts with cohort's message
//! ("is not in this process"); none dies of a fault or walks zeros. Each call runs in a
//! fork child of its own.

mod red_team_common;

use cohort::{Cohort, Join};
use red_team_common::{advised_region, child_with_stderr, in_child, wait};
use test_support::raw_thread;

cohort::lifetime_classes! {
    enum Life { Short }
}

const CAP: usize = 16 << 20;

/// What the parent made before the fork: a small, a medium, a large and a tiny object, and
/// a join holding one small object of its own.
struct Parent<'a> {
    region: &'a Cohort<Life>,
    small: *mut u8,
    medium: *mut u8,
    large: *mut u8,
    tiny: *mut u8,
    join: Join<'a, Life>,
    joined: *mut u8,
}

const SMALL: usize = 64;
const MEDIUM: usize = 100_000;
/// A run of the region's units (above the medium sizes' 1 MiB).
const LARGE: usize = 3 << 20;
/// A 1-byte slot of a tiny block's run.
const TINY: usize = 1;

type Case = fn(&Parent<'_>);

/// Every public call of the lost instance (and of a join of it) a child might make.
fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("malloc", |p| {
            p.region.malloc(SMALL, Life::Short);
        }),
        ("medium malloc", |p| {
            p.region.malloc(MEDIUM, Life::Short);
        }),
        ("calloc", |p| {
            p.region.calloc(SMALL, Life::Short);
        }),
        // SAFETY (all frees below): the parent's live objects, freed once in this child.
        ("free small", |p| unsafe {
            p.region.free(p.small, SMALL, Life::Short)
        }),
        ("free medium", |p| unsafe {
            p.region.free(p.medium, MEDIUM, Life::Short)
        }),
        ("free large", |p| unsafe {
            p.region.free(p.large, LARGE, Life::Short)
        }),
        ("free tiny", |p| unsafe {
            p.region.free(p.tiny, TINY, Life::Short)
        }),
        ("free_unsized", |p| {
            let _ = unsafe { p.region.free_unsized(p.small) };
        }),
        ("realloc_unsized", |p| {
            let _ = unsafe { p.region.realloc_unsized(p.small, 2 * SMALL, 8) };
        }),
        ("usable_size_at", |p| {
            let _ = p.region.usable_size_at(p.small);
        }),
        ("usable_size_at medium", |p| {
            let _ = p.region.usable_size_at(p.medium);
        }),
        ("usable_size_at large", |p| {
            let _ = p.region.usable_size_at(p.large);
        }),
        ("free_unsized large", |p| {
            let _ = unsafe { p.region.free_unsized(p.large) };
        }),
        ("allocation_at", |p| {
            let _ = p.region.allocation_at(p.small);
        }),
        ("stats", |p| {
            let _ = p.region.stats();
        }),
        ("is_empty", |p| {
            let _ = p.region.is_empty();
        }),
        ("compact", |p| {
            p.region.compact();
        }),
        ("verify", |p| {
            // SAFETY: the child's only thread.
            let _ = unsafe { p.region.verify() };
        }),
        ("release_class", |p| {
            // SAFETY: nothing of the class is used after.
            unsafe { p.region.release_class(Life::Short) };
        }),
        ("try_free", |p| {
            let _ = unsafe { p.region.try_free(p.small, SMALL, Life::Short) };
        }),
        ("remalloc", |p| {
            unsafe { p.region.remalloc(p.small, SMALL, 4 * SMALL, Life::Short) };
        }),
        ("remalloc tiny", |p| {
            unsafe { p.region.remalloc(p.tiny, TINY, SMALL, Life::Short) };
        }),
        ("remalloc large", |p| {
            unsafe { p.region.remalloc(p.large, LARGE, 2 * LARGE, Life::Short) };
        }),
        ("recalloc medium", |p| {
            unsafe { p.region.recalloc(p.medium, MEDIUM, 2 * MEDIUM, Life::Short) };
        }),
        ("GlobalAlloc dealloc", |p| unsafe {
            let layout = core::alloc::Layout::from_size_align(SMALL, 8).unwrap();
            core::alloc::GlobalAlloc::dealloc(p.region, p.small, layout)
        }),
        ("GlobalAlloc realloc", |p| unsafe {
            let layout = core::alloc::Layout::from_size_align(SMALL, 8).unwrap();
            core::alloc::GlobalAlloc::realloc(p.region, p.small, layout, 4 * SMALL);
        }),
        ("GlobalAlloc alloc", |p| unsafe {
            let layout = core::alloc::Layout::from_size_align(SMALL, 8).unwrap();
            core::alloc::GlobalAlloc::alloc(p.region, layout);
        }),
        ("for_each_block", |p| {
            p.region.for_each_block(|_| {});
        }),
        ("scope", |p| {
            p.region.scope(|s| {
                let _ = allocator_api2::alloc::Allocator::allocate(
                    &s,
                    core::alloc::Layout::from_size_align(SMALL, 8).unwrap(),
                );
            });
        }),
        ("handle allocate", |p| {
            let h = p.region.handle(Life::Short);
            let _ = allocator_api2::alloc::Allocator::allocate(
                &h,
                core::alloc::Layout::from_size_align(SMALL, 8).unwrap(),
            );
        }),
        ("handle deallocate", |p| {
            let h = p.region.handle(Life::Short);
            let layout = core::alloc::Layout::from_size_align(SMALL, 8).unwrap();
            let small = core::ptr::NonNull::new(p.small).unwrap();
            // SAFETY: the parent's live object of this class and layout, freed once.
            unsafe { allocator_api2::alloc::Allocator::deallocate(&h, small, layout) };
        }),
        ("handle grow", |p| {
            let h = p.region.handle(Life::Short);
            let layout = core::alloc::Layout::from_size_align(SMALL, 8).unwrap();
            let grown = core::alloc::Layout::from_size_align(4 * SMALL, 8).unwrap();
            let small = core::ptr::NonNull::new(p.small).unwrap();
            // SAFETY: as above.
            let _ = unsafe { allocator_api2::alloc::Allocator::grow(&h, small, layout, grown) };
        }),
        ("retention", |p| {
            p.region.set_retention(p.region.retention());
        }),
        ("join", |p| {
            let _ = p.region.join(7);
        }),
        ("parent's join malloc", |p| {
            p.join.malloc(SMALL, Life::Short);
        }),
        ("parent's join free", |p| unsafe {
            p.join.free(p.joined, SMALL, Life::Short)
        }),
        ("parent's join debug", |p| {
            let _ = format!("{:?}", p.join);
        }),
        ("parent's join drop", |p| {
            // SAFETY: the child's copy of the join, dropped once here.
            drop(unsafe { std::ptr::read(&p.join) });
        }),
    ]
}

/// Every call of `cases` in a child of a process whose region is advised `advice`: the
/// failures (a signal other than cohort's abort, or an abort without the message).
fn failures(advice: libc::c_int, shared: bool, only: &[&str]) -> Vec<String> {
    // Kept for the rest of the process (the parent's memory, its children's copies).
    let region: &'static Cohort<Life> = Box::leak(Box::new(advised_region(advice, shared, CAP)));
    let join = region.join(3).expect("join");
    let parent = Parent {
        region,
        small: region.malloc(SMALL, Life::Short),
        medium: region.malloc(MEDIUM, Life::Short),
        large: region.malloc(LARGE, Life::Short),
        tiny: region.malloc(TINY, Life::Short),
        joined: join.malloc(SMALL, Life::Short),
        join,
    };
    let made = [
        parent.small,
        parent.medium,
        parent.large,
        parent.tiny,
        parent.joined,
    ];
    assert!(made.iter().all(|p| !p.is_null()));
    let mut failed = Vec::new();
    for (name, case) in cases() {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let (ended, stderr) = child_with_stderr(|| case(&parent));
        let fine = match ended {
            Ok(0) => true,
            Err(libc::SIGABRT) => stderr.contains("is not in this process"),
            _ => false,
        };
        if !fine {
            // The report or the panic's place and message, without a backtrace.
            let said: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).take(3).collect();
            let last = said.join(" / ");
            failed.push(format!(
                "advice {advice} shared {shared}: {name}: {ended:?} {last}"
            ));
        }
    }
    core::mem::forget(parent.join);
    failed
}

/// The parent's join of the lost instance, used or dropped in the child, reads its heap
/// (the region's memory) to see whether this process holds it.
#[test]
fn a_join_of_a_lost_region_aborts_with_a_message_in_the_child() {
    let joins = [
        "parent's join malloc",
        "parent's join free",
        "parent's join debug",
        "parent's join drop",
    ];
    let mut failed = Vec::new();
    for (advice, shared) in [
        (libc::MADV_DONTFORK, false),
        (libc::MADV_DONTFORK, true),
        (libc::MADV_WIPEONFORK, false),
    ] {
        failed.extend(failures(advice, shared, &joins));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The calls whose fast path reads the freed object's block header first: in a release
/// build they faulted in a child without the region (debug builds abort with the message).
const SIZED_FREES: [&str; 8] = [
    "free small",
    "free tiny",
    "remalloc",
    "remalloc tiny",
    "GlobalAlloc dealloc",
    "GlobalAlloc realloc",
    "handle deallocate",
    "handle grow",
];

/// The child frees (or resizes) the parent's small object of the lost region with its
/// size, as a child dropping what it inherited does.
#[test]
fn a_sized_free_into_a_lost_region_aborts_with_a_message() {
    let mut failed = Vec::new();
    for (advice, shared) in [
        (libc::MADV_DONTFORK, false),
        (libc::MADV_DONTFORK, true),
        (libc::MADV_WIPEONFORK, false),
    ] {
        failed.extend(failures(advice, shared, &SIZED_FREES));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Every other call of the instance itself in the child.
#[test]
fn every_call_of_a_lost_region_aborts_with_a_message_or_works() {
    let mut failed = Vec::new();
    for (advice, shared) in [
        (libc::MADV_DONTFORK, false),
        (libc::MADV_DONTFORK, true),
        (libc::MADV_WIPEONFORK, false),
    ] {
        let instance: Vec<&str> = cases()
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !name.starts_with("parent's join") && !SIZED_FREES.contains(name))
            .collect();
        failed.extend(failures(advice, shared, &instance));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// How many other instances the forking thread has heaps of: more than the 64 heaps of
/// its list the fork's `prepare` copies.
const MANY: usize = 80;

/// The lost region's heap at `at` of the thread's list of `MANY + 1` heaps (0: the newest,
/// the list's first; `MANY`: the oldest, past the copied part); every other instance keeps
/// its objects in the child, serves it without handing them out again, and verifies; the
/// lost one aborts naming the region.
fn many_instances(advice: libc::c_int, at: usize) -> Vec<String> {
    const SIZE: usize = 48;
    const KEPT: usize = 3;
    // A heap made later goes first on the thread's list.
    let mut region = None;
    let mut others = Vec::new();
    for i in 0..=MANY {
        if i == MANY - at {
            let r: &'static Cohort<Life> = Box::leak(Box::new(advised_region(advice, false, CAP)));
            assert!(!r.malloc(SIZE, Life::Short).is_null());
            region = Some(r);
            continue;
        }
        let c: &'static Cohort<Life> = Box::leak(Box::new(Cohort::with_reservation(8 << 20)));
        let kept: Vec<usize> = (0..KEPT)
            .map(|k| {
                let p = c.malloc(SIZE, Life::Short);
                assert!(!p.is_null());
                // SAFETY: SIZE bytes of ours.
                unsafe { p.write_bytes(tag(others.len(), k), SIZE) };
                p as usize
            })
            .collect();
        others.push((c, kept));
    }
    let region = region.expect("made");
    let mut failed = Vec::new();
    let (ended, stderr) = child_with_stderr(|| {
        for (i, (c, kept)) in others.iter().enumerate() {
            say(&format!("instance {i}\n"));
            for (k, &p) in kept.iter().enumerate() {
                // SAFETY: the parent's live object, copied into the child.
                let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, SIZE) };
                assert!(
                    bytes.iter().all(|&b| b == tag(i, k)),
                    "instance {i} object {k}"
                );
            }
            let fresh: Vec<*mut u8> = (0..200).map(|_| c.malloc(SIZE, Life::Short)).collect();
            for &q in &fresh {
                assert!(!q.is_null(), "instance {i}");
                assert!(
                    !kept.contains(&(q as usize)),
                    "instance {i} handed out a live {q:?}"
                );
            }
            let mut sorted = fresh.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                fresh.len(),
                "instance {i} handed out one twice"
            );
            for q in fresh {
                // SAFETY: allocated above with this size and class.
                unsafe { c.free(q, SIZE, Life::Short) };
            }
            // SAFETY: the child's only thread.
            if let Err(e) = unsafe { c.verify() } {
                panic!("instance {i}: verify: {e}");
            }
            for &p in kept {
                // SAFETY: the parent's live objects, freed once in the child.
                unsafe { c.free(p as *mut u8, SIZE, Life::Short) };
            }
            assert!(c.is_empty(), "instance {i} not empty");
        }
        say("others fine\n");
        region.malloc(SIZE, Life::Short);
    });
    let fine = ended == Err(libc::SIGABRT)
        && stderr.contains("others fine")
        && stderr.contains("is not in this process");
    if !fine {
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.is_empty())
            .skip_while(|l| l.starts_with("instance "))
            .take(3)
            .collect();
        let done = stderr
            .lines()
            .filter(|l| l.starts_with("instance "))
            .count();
        failed.push(format!(
            "advice {advice}, region's heap {at} of {} (in instance {done}): {ended:?} {}",
            MANY + 1,
            said.join(" / ")
        ));
    }
    failed
}

/// Writes `text` to standard error itself (the test harness captures `eprintln!`).
fn say(text: &str) {
    // SAFETY: a valid buffer of text.len() bytes.
    unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
}

/// The byte instance `i`'s object `k` is filled with.
fn tag(i: usize, k: usize) -> u8 {
    (i * 7 + k + 1) as u8
}

/// A thread with more heaps than the fork copies, the lost region's among them at either
/// end and in the middle.
#[test]
fn a_thread_with_many_instances_forks_without_the_region() {
    let mut failed = Vec::new();
    for advice in [libc::MADV_DONTFORK, libc::MADV_WIPEONFORK] {
        for at in [0, 40, 63, 64, MANY] {
            failed.extend(many_instances(advice, at));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A grandchild: the child (which lost the region) forks again, from a thread of its own
/// too; the grandchild's other instances work and verify, and its use of the region aborts
/// naming it, as in the child.
#[test]
fn a_grandchild_of_a_child_without_the_region_goes_on() {
    let mut failed = Vec::new();
    for advice in [libc::MADV_DONTFORK, libc::MADV_WIPEONFORK] {
        for from_thread in [false, true] {
            let region: &'static Cohort<Life> =
                Box::leak(Box::new(advised_region(advice, false, CAP)));
            let others: Vec<&'static Cohort<Life>> = (0..3)
                .map(|_| &*Box::leak(Box::new(Cohort::with_reservation(8 << 20))))
                .collect();
            let kept: Vec<usize> = others
                .iter()
                .map(|c| c.malloc(SIZE_G, Life::Short) as usize)
                .collect();
            assert!(!region.malloc(SIZE_G, Life::Short).is_null());
            let (ended, stderr) = child_with_stderr(|| {
                let grandchild = || {
                    let pid = in_child(10, || {
                        for (c, &p) in others.iter().zip(&kept) {
                            for _ in 0..100 {
                                let q = c.malloc(SIZE_G, Life::Short);
                                assert!(!q.is_null() && q as usize != p);
                                // SAFETY: allocated above with this size and class.
                                unsafe { c.free(q, SIZE_G, Life::Short) };
                            }
                            // SAFETY: the parent's object, freed once here.
                            unsafe { c.free(p as *mut u8, SIZE_G, Life::Short) };
                            // SAFETY: the grandchild's only thread.
                            assert!(unsafe { c.verify() }.is_ok());
                            assert!(c.is_empty());
                        }
                        say("others fine\n");
                        region.malloc(SIZE_G, Life::Short);
                    });
                    wait(pid)
                };
                let ended = if from_thread {
                    raw_thread::scope(|s| s.spawn(grandchild).join().unwrap())
                } else {
                    grandchild()
                };
                say(&format!("grandchild {ended:?}\n"));
            });
            let fine = ended == Ok(0)
                && stderr.contains("others fine")
                && stderr.contains("is not in this process")
                && stderr.contains(&format!("grandchild Err({})", libc::SIGABRT));
            if !fine {
                failed.push(format!(
                    "advice {advice}, from a thread {from_thread}: {ended:?} {stderr}"
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The grandchild test's object size.
const SIZE_G: usize = 48;
