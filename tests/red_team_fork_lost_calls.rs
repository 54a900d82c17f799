//! Red team (session 18): a fork child of a process whose `format_in` region is in memory the
//! child gets no copy of (`MADV_DONTFORK`) or gets zeroed (`MADV_WIPEONFORK`): every public
//! call of the lost instance in the child either works or aborts with cohort's message
//! ("is not in this process"); none dies of a fault or walks zeros. Each call runs in a
//! fork child of its own.

mod red_team_common;

use cohort::{Cohort, Join, RegionOptions};
use red_team_common::{aligned_anonymous, in_child, wait};
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;

cohort::lifetime_classes! {
    enum Life { Short }
}

const CAP: usize = 16 << 20;

/// A `format_in` region in fresh anonymous memory (`shared` or private) advised `advice`.
fn advised_region(advice: libc::c_int, shared: bool) -> Cohort<Life> {
    let f = Cohort::<Life>::footprint(CAP).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, shared);
    // SAFETY: our fresh mapping; the advice changes what a fork child gets, not its bytes.
    assert_eq!(unsafe { libc::madvise(mem.cast(), f.bytes, advice) }, 0);
    // SAFETY: fresh memory of `f.bytes`, aligned, this region's for the rest of the process.
    unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(CAP)) }.expect("format_in")
}

/// What the parent made before the fork: a small and a medium object, and a join holding
/// one small object of its own.
struct Parent<'a> {
    region: &'a Cohort<Life>,
    small: *mut u8,
    medium: *mut u8,
    join: Join<'a, Life>,
    joined: *mut u8,
}

const SMALL: usize = 64;
const MEDIUM: usize = 100_000;

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
        ("free_unsized", |p| {
            let _ = unsafe { p.region.free_unsized(p.small) };
        }),
        ("realloc_unsized", |p| {
            let _ = unsafe { p.region.realloc_unsized(p.small, 2 * SMALL, 8) };
        }),
        ("usable_size_at", |p| {
            let _ = p.region.usable_size_at(p.small);
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

/// Runs `f` in a fork child whose standard error goes to a file; returns how the child
/// ended and what it wrote there.
fn child_with_stderr(f: impl FnOnce()) -> (red_team_common::Ended, String) {
    let path = std::env::temp_dir().join(format!(
        "cohort-red-lost-calls-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let fd = file.as_raw_fd();
    let pid = in_child(10, || {
        // SAFETY: fd is an open file of this process.
        unsafe { libc::dup2(fd, 2) };
        f();
    });
    let ended = wait(pid);
    let mut text = String::new();
    file.seek(std::io::SeekFrom::Start(0)).unwrap();
    file.read_to_string(&mut text).unwrap();
    (ended, text)
}

/// Every call of `cases` in a child of a process whose region is advised `advice`: the
/// failures (a signal other than cohort's abort, or an abort without the message).
fn failures(advice: libc::c_int, shared: bool, only: &[&str]) -> Vec<String> {
    // Kept for the rest of the process (the parent's memory, its children's copies).
    let region: &'static Cohort<Life> = Box::leak(Box::new(advised_region(advice, shared)));
    let join = region.join(3).expect("join");
    let parent = Parent {
        region,
        small: region.malloc(SMALL, Life::Short),
        medium: region.malloc(MEDIUM, Life::Short),
        joined: join.malloc(SMALL, Life::Short),
        join,
    };
    assert!(!parent.small.is_null() && !parent.medium.is_null() && !parent.joined.is_null());
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
#[ignore = "RED-85: a join of a region lost in a fork child (MADV_DONTFORK) faults in the child"]
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

/// Every call of the instance itself in the child.
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
            .filter(|name| !name.starts_with("parent's join"))
            .collect();
        failed.extend(failures(advice, shared, &instance));
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
