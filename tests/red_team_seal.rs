//! Red-team attacks of session 9 on what session 8 landed for named regions: the state
//! seal (a fork child that goes on working in a region its parent left), `salvage` of a
//! region file this process may only read. A test that found a defect is `#[ignore]`d with
//! its number (RED-n), its owner and the exact failure.

mod red_team_common;

use cohort::{CreateOptions, Off, Place, RegionError, SharedCohort};
use red_team_common::*;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

/// RED-32 (every build; owner: lead, persist/attach): a fork child has its parent's view of a
/// named region (a SharedCohort is Sync, and a child of a process that has the region open
/// uses it as its parent would: its thread joins afresh on its first allocation, as the
/// fork module says). The child never claims an attach slot of its own. When the parent
/// leaves, no slot is held, so the parent seals the state; the child then allocates and
/// frees in the region it still maps, which changes the sealed state. After the child
/// exits, nothing is wrong with the region, yet every open refuses it as `StateDamaged`
/// (a healthy region made unopenable by ordinary use; only `salvage` reads it any more).
/// Wanted: the child's use counted as an attach (a slot of its own, claimed at its first
/// use of the region, or the parent's leave not sealing while a child has the view), or
/// the child's use refused. Exact failure: `a region a fork child worked in after its
/// parent left cannot be opened: the region's state was damaged while nobody had it open:
/// it hashes to 0xcca3e066592bd90c, its last process left it hashing to 0x0203a9911a83b48f`.
#[test]
fn a_fork_child_working_in_a_region_its_parent_left_leaves_it_openable() {
    let _serial = serial();
    let p = region_path("forkleft");
    isolated(60, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(32 << 20))
            .expect("create");
        let keep = r.new_in([7u8; 100], Life::Long).expect("room");
        r.set_root(0, Some(keep));
        let go = shared_words(1);
        let child = in_child_reporting(30, report, || {
            while go[0].load(Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // The parent has left: the child works in the region it still maps.
            let live: Vec<_> = (0..200)
                .map(|i| (r.malloc(24 + i, Life::Short), 24 + i))
                .collect();
            for (q, size) in live {
                assert!(!q.is_null(), "the child's malloc({size})");
                // SAFETY: allocated above, freed once, with its size and class.
                unsafe { r.free(q, size, Life::Short) };
            }
            // The child's own copy of the view goes, as a program's would at its end.
            // SAFETY: the child's copy of the parent's value, dropped once, here.
            drop(unsafe { core::ptr::read(&r) });
        });
        r.leave().expect("leave");
        go[0].store(1, Relaxed);
        wait_ok(child, report, "the child");
        match open_region::<Life>(&p) {
            Ok(r) => {
                let root: Off<[u8; 100]> = r.root(0).expect("the root");
                // SAFETY: the record stored above; nobody else has the region.
                if unsafe { *r.get(root) } != [7u8; 100] {
                    report.fail("the record changed");
                }
                // SAFETY: no other process has the region open.
                if let Err(e) = unsafe { r.verify() } {
                    report.fail(&format!("verify after the child: {e:?}"));
                }
                r.destroy().expect("destroy");
            }
            Err(e) => {
                let _ = std::fs::remove_file(&p);
                report.fail(&format!(
                    "a region a fork child worked in after its parent left cannot be opened: {e}"
                ))
            }
        }
    });
}

/// RED-33 (every build; owner: lead, persist/salvage): `salvage` is the way out of a region
/// that cannot be opened (a copy made while it was in use, a file a crash left) and
/// promises to write nothing, but it opens the file read-write. The copies it exists for
/// are backups and snapshots, which are read-only as often as not (a file system snapshot,
/// a backup owned by another user, a read-only mount): there it fails with
/// `RegionError::Os` (EACCES, EROFS) and the data cannot be read, although a read-only
/// mapping is all it needs. Made here as a file of mode 0444 read by an unprivileged
/// user (the test drops root in a child when run as root). Exact failure: `salvage of a
/// region file readable but not writable by this user: open the region failed: Permission
/// denied (os error 13)`.
#[test]
fn salvage_reads_a_region_file_it_may_only_read() {
    let _serial = serial();
    let p = region_path("readonly");
    let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(32 << 20))
        .expect("create");
    let record: [u8; 64] = core::array::from_fn(|i| i as u8 ^ 0x3c);
    let off = r.new_in(record, Life::Long).expect("room");
    r.set_root(2, Some(off));
    r.leave().expect("leave");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let report = Report::new();
    let child = in_child(30, || {
        // SAFETY: getuid/setgid/setuid have no preconditions; the child drops root (when
        // it is root) so that the file's mode applies to it.
        unsafe {
            if libc::geteuid() == 0 && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                report.fail("could not drop root");
            }
        }
        match SharedCohort::<Life>::salvage(Place::File(&p)) {
            Ok(s) => {
                let mut got = [0u8; 64];
                let root = s.root::<[u8; 64]>(2);
                if root != Some(off) || !s.read(off, &mut got) || got != record {
                    report.fail(&format!("the salvaged root {root:?} or record differs"));
                }
            }
            Err(e) => report.fail(&format!(
                "salvage of a region file readable but not writable by this user: {e}"
            )),
        }
    });
    let ended = wait(child);
    let _ = std::fs::remove_file(&p);
    assert_eq!(ended, Ok(0), "{}", report.message());
}

/// The attach table's generation word in a region file.
const GEN_AT: u64 = 2048;

/// The little-endian word at `at` of the file `f`.
fn word_at(f: &std::fs::File, at: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut w = [0u8; 8];
    f.read_exact_at(&mut w, at).expect("read");
    u64::from_le_bytes(w)
}

/// The fork cost noticed in session 9 (session 10): every fork child claims a slot in every
/// named region its parent has open, in the fork handler, and wrote three pages of a file
/// region to disk doing so; now the claim is one mark and no system call (measured with
/// strace: no msync in the children). What stays to check: 20 children that exec or end
/// without leaving keep their slots, and the parent, leaving last, frees them and seals the
/// state (`SEAL_GEN = GEN`).
#[test]
fn a_parent_of_many_short_lived_children_leaves_the_region_sealed() {
    let _serial = serial();
    let p = region_path("forkcost");
    isolated(60, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(32 << 20))
            .expect("create");
        assert!(!r.malloc(100, Life::Long).is_null());
        let file = std::fs::File::open(&p).expect("the file");
        for i in 0..20 {
            // SAFETY: the child execs a program at once, or ends: it touches nothing.
            let child = unsafe { libc::fork() };
            assert!(child >= 0, "fork");
            if child == 0 {
                if i % 2 == 0 {
                    let argv = [c"/bin/true".as_ptr(), core::ptr::null()];
                    // SAFETY: a NUL-terminated path and argument list.
                    unsafe { libc::execv(c"/bin/true".as_ptr(), argv.as_ptr()) };
                }
                // SAFETY: _exit has no preconditions.
                unsafe { libc::_exit(0) };
            }
            assert_eq!(wait(child), Ok(0), "the subprocess");
        }
        r.leave().expect("leave");
        let (gen, seal_gen) = (word_at(&file, GEN_AT), word_at(&file, GEN_AT + 5 * 8));
        if gen != seal_gen {
            report.fail(&format!(
                "the parent of 20 children that ran a program or ended left the region unsealed \
                 (GEN {gen:#x}, SEAL_GEN {seal_gen:#x})"
            ));
        }
    });
    let _ = std::fs::remove_file(&p);
}

/// RED-48's sibling (session 10): children that write to the region claim a slot each, and
/// when they end without leaving (`_exit`, a crash) their slots stay held until an opener
/// or the last leaver frees them: 260 such children fill the attach table (249 slots). A
/// worker forked after them then found no slot, its parent's leave sealed the region under
/// it, and the next open refused the healthy region as `StateDamaged`. Now a child that
/// finds every slot held frees dead processes' slots first. (The worker's first write comes
/// while the table is full, before its parent leaves.) Exact failure before: `after
/// 260 children that wrote to the region and ended without leaving, a worker forked then
/// worked in it after its parent left; the region cannot be opened: the region's state was
/// damaged while nobody had it open...`.
#[test]
fn a_worker_forked_after_many_children_that_wrote_and_ended_keeps_the_region_openable() {
    let _serial = serial();
    let p = region_path("manywriters");
    isolated(120, |report| {
        let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(32 << 20))
            .expect("create");
        for _ in 0..260 {
            let child = in_child(30, || {
                let q = r.malloc(64, Life::Short);
                assert!(!q.is_null());
                // SAFETY: allocated above, freed once.
                unsafe { r.free(q, 64, Life::Short) };
                // SAFETY: _exit has no preconditions: the child ends without leaving.
                unsafe { libc::_exit(0) };
            });
            assert_eq!(wait(child), Ok(0), "a writing child");
        }
        // [the worker's first write done, the parent left]
        let go = shared_words(2);
        let worker = in_child_reporting(60, report, || {
            // The first write claims a slot while the table is full of dead children's.
            let live: Vec<_> = (0..8).map(|_| r.malloc(200, Life::Short)).collect();
            assert!(live.iter().all(|q| !q.is_null()));
            go[0].store(1, Relaxed);
            while go[1].load(Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Fast paths only (the current block's list): no write of the state marks them.
            for q in live {
                // SAFETY: allocated above, freed once.
                unsafe { r.free(q, 200, Life::Short) };
            }
            // The worker ends without leaving (a crash, `_exit`): it wrote with a slot.
        });
        until(&go[0], 0, worker, report, "the worker");
        r.leave().expect("leave");
        go[1].store(1, Relaxed);
        wait_ok(worker, report, "the worker");
        if let Err(e) = open_region::<Life>(&p) {
            report.fail(&format!(
                "after 260 children that wrote to the region and ended without leaving, a \
                 worker forked then worked in it after its parent left; the region cannot be \
                 opened: {e}"
            ));
        }
    });
    let _ = std::fs::remove_file(&p);
}

/// RED-35 (every build; owner: lead, persist/attach): an open bumps `GEN`, then stores it
/// in the two seal pages. A process killed between the two (kill -9 of a process that is
/// opening a region: the documentation says a killed process is not a crash, and the
/// region opens as usual) leaves `GEN` one ahead of its seals, and every later open refuses
/// the region as `Unclean` ("its pages are of different moments"), although it was never
/// copied and the machine never stopped: a healthy region made unopenable by one kill. On
/// a file the window is two page faults wide (the leave's `msync` made the seal pages
/// clean, so the stores fault to make them writable again). Found here by stopping a
/// process that opens and leaves a region in a loop at random moments until `GEN` and the
/// tail seal differ, then killing it. Wanted: an open that never leaves the seals behind
/// `GEN` (store the seals with the new value first, then bump, or let a next opener tell
/// a dead opener's half-done bump from a copy: the lock word names the dead opener).
/// Exact failure (found within 8 to 432 samples in five runs): `after kill -9 of an opener
/// stopped with GEN 0x25 and its tail seal 0x24 (sample 292): the region was not left
/// cleanly and is refused: its pages are of different moments (a copy made while a process
/// had it open)`.
#[test]
fn an_opener_killed_at_any_moment_leaves_the_region_openable() {
    let _serial = serial();
    let p = region_path("killopen");
    created_and_left::<Life>(&p, 32 << 20);
    let file = std::fs::File::open(&p).expect("the file");
    let len = file.metadata().expect("len").len();
    // The tail seal is the file's last page (of this kernel's page size).
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let tail_at = len - page.max(4096);
    let report = Report::new();
    let opener = in_child_reporting(60, &report, || loop {
        let r = open_region::<Life>(&p).expect("the opener's open");
        let q = r.malloc(100, Life::Short);
        assert!(!q.is_null());
        // SAFETY: allocated above, freed once.
        unsafe { r.free(q, 100, Life::Short) };
        r.leave().expect("the opener's leave");
    });
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut caught = None;
    for sample in 0..30_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 200));
        // SAFETY: our own child; waited for until it stops.
        unsafe {
            libc::kill(opener, libc::SIGSTOP);
            let mut status = 0;
            assert_eq!(libc::waitpid(opener, &mut status, libc::WUNTRACED), opener);
            assert!(
                libc::WIFSTOPPED(status),
                "the opener ended: {:?}",
                report.message()
            );
        }
        let (gen, tail) = (word_at(&file, GEN_AT), word_at(&file, tail_at));
        if gen != tail {
            caught = Some((sample, gen, tail));
            break;
        }
        // SAFETY: our own child.
        unsafe { libc::kill(opener, libc::SIGCONT) };
    }
    kill9(opener);
    let Some((sample, gen, tail)) = caught else {
        let _ = std::fs::remove_file(&p);
        return; // the window was never seen: nothing to say
    };
    let opened = open_region::<Life>(&p);
    let what = format!(
        "after kill -9 of an opener stopped with GEN {gen:#x} and its tail seal {tail:#x} \
         (sample {sample})"
    );
    match opened {
        Ok(r) => {
            // SAFETY: nobody else has the region open.
            let verified = unsafe { r.verify() };
            r.destroy().expect("destroy");
            assert!(verified.is_ok(), "{what}: verify: {verified:?}");
        }
        Err(e) => {
            let _ = std::fs::remove_file(&p);
            panic!("{what}: {e}");
        }
    }
}

/// Where root slot `slot` lies in a region file (header word 19 on).
fn root_at(slot: usize) -> u64 {
    (19 + slot as u64) * 8
}

/// RED-36 (every build; owner: lead, persist/salvage): `salvage` validates the header as an
/// open does, which includes the root slots: one root word that names no place in the
/// region (a flipped bit in the header page, which neither the header's checksum nor the
/// state seal covers) makes it refuse the whole region with `RegionError::Root`, an error
/// its documentation does not list, although `Salvage::root` bounds-checks each slot on
/// its own. The other fifteen roots and every byte of the blocks are then unreachable, on
/// the one path meant for damaged regions. Wanted: salvage reads the roots one by one (a
/// bad one is `None`). Exact failure: `salvage refused a region for its root slot 7: root
/// slot 7 holds offset 0x400000000000, outside the region's 33558528 bytes`.
#[test]
fn salvage_reads_the_other_roots_of_a_region_with_one_damaged_root() {
    let _serial = serial();
    let p = region_path("badroot");
    let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(32 << 20))
        .expect("create");
    let record: [u8; 32] = core::array::from_fn(|i| i as u8 ^ 0x77);
    let off = r.new_in(record, Life::Long).expect("room");
    r.set_root(0, Some(off));
    r.leave().expect("leave");
    // One byte of root slot 7's word damaged at rest: it names a place far beyond the file.
    damage_at_rest(&p, root_at(7) + 5, |_| [0x40]);
    let salvaged = SharedCohort::<Life>::salvage(Place::File(&p));
    let _ = std::fs::remove_file(&p);
    let s = match salvaged {
        Ok(s) => s,
        Err(e) => panic!("salvage refused a region for its root slot 7: {e}"),
    };
    assert_eq!(s.root::<u8>(7), None, "the damaged root");
    let mut got = [0u8; 32];
    assert_eq!(s.root::<[u8; 32]>(0), Some(off));
    assert!(
        s.read(off, &mut got) && got == record,
        "the record of root 0"
    );
}

/// Set (to the region's path) in the program [`a_program_exec_d_by_a_process_that_has_the_region_open_uses_it_too`]
/// execs.
const EXEC_OPENER: &str = "COHORT_RED_EXEC_OPENER";

/// A process with a region open forks and execs a program (this test binary again) that
/// opens the same region, allocates, keeps some, and leaves, while the parent goes on
/// allocating; the exec'd program is a process of its own (the fork child's copy of the
/// parent's view went with the exec). After both left, the region opens, verifies, and
/// holds what each kept.
#[test]
fn a_program_exec_d_by_a_process_that_has_the_region_open_uses_it_too() {
    let _serial = serial();
    if let Some(p) = std::env::var_os(EXEC_OPENER) {
        let r = open_region::<Life>(Path::new(&p)).expect("the exec'd program's open");
        let kept = r.new_in([0x5au8; 48], Life::Long).expect("room");
        r.set_root(1, Some(kept));
        for i in 0..500 {
            let q = r.malloc(8 + i % 300, Life::Short);
            assert!(!q.is_null());
            // SAFETY: allocated above, freed once.
            unsafe { r.free(q, 8 + i % 300, Life::Short) };
        }
        r.leave().expect("the exec'd program's leave");
        return;
    }
    let p = region_path("exec");
    let r = SharedCohort::<Life>::create(Place::File(&p), CreateOptions::new(32 << 20))
        .expect("create");
    let mine = r.new_in([0xa5u8; 48], Life::Long).expect("room");
    r.set_root(0, Some(mine));
    let mut program = std::process::Command::new(std::env::current_exe().expect("the binary"))
        .args([
            "--exact",
            "a_program_exec_d_by_a_process_that_has_the_region_open_uses_it_too",
            "--test-threads=1",
        ])
        .env(EXEC_OPENER, &p)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("fork and exec");
    let mut live = Vec::new();
    let status = loop {
        for i in 0..50 {
            let q = r.malloc(16 + i * 8, Life::Short);
            assert!(!q.is_null());
            live.push((q as usize, 16 + i * 8));
        }
        for (q, size) in live.drain(..) {
            // SAFETY: allocated above, freed once.
            unsafe { r.free(q as *mut u8, size, Life::Short) };
        }
        if let Some(status) = program.try_wait().expect("wait") {
            break status;
        }
    };
    assert!(status.success(), "the exec'd program failed: {status}");
    r.leave().expect("leave");
    let r = open_region::<Life>(&p).expect("the region after both left");
    // SAFETY: nobody else has the region open.
    let verified = unsafe { r.verify() };
    let theirs: Option<Off<[u8; 48]>> = r.root(1);
    // SAFETY: the records stored above, alive; nobody else has the region.
    let (a, b) = unsafe { (*r.get(mine), theirs.map(|t| *r.get(t))) };
    r.destroy().expect("destroy");
    assert!(verified.is_ok(), "{verified:?}");
    assert_eq!((a, b), ([0xa5; 48], Some([0x5a; 48])));
}

/// RED-38 (every build; owner: lead, persist/salvage): `salvage` of a region whose creator
/// is still formatting it (its header's state word says INITIALISING, its creator runs)
/// answers `NotReady` with `creator_alive: false` whatever the creator's state, and the
/// error's message tells the user the creator "died while formatting it (destroy it and
/// create it again)": advice that, followed, deletes a region its live creator is about
/// to publish. `open` tells the two apart (it waits for a live creator). Made here by
/// setting the state word (outside the header's checksum) of a region this process made
/// back to INITIALISING. Wanted: the creator's liveness as `open` reads it. Exact failure:
/// `salvage of a region whose creator (this process) is alive: the region was not ready
/// after 0ns: process 25833 died while formatting it (destroy it and create it again)`.
#[test]
fn salvage_of_a_region_being_formatted_names_its_live_creator_alive() {
    let _serial = serial();
    let p = region_path("initialising");
    created_and_left::<Life>(&p, 32 << 20);
    // Header word 2, the state: 1 is INITIALISING (the creator's mark until it publishes).
    damage_at_rest(&p, 2 * 8, |_| 1u64.to_le_bytes());
    let salvaged = SharedCohort::<Life>::salvage(Place::File(&p));
    let _ = std::fs::remove_file(&p);
    match salvaged {
        Err(e @ RegionError::NotReady { creator_alive, .. }) => assert!(
            creator_alive,
            "salvage of a region whose creator (this process) is alive: {e}"
        ),
        other => panic!("{other:?}"),
    }
}

/// RED-41 (every build; owner: lead, persist/attach): since RED-32's fix a fork child
/// claims an attach slot of its own in the fork handler. A child that execs a program (a
/// subprocess run by fork and exec) or ends with `_exit` never leaves: its slot stays
/// held by a dead process until some later opener clears it. The parent's leave then
/// finds a slot held and writes no seal, so the state seal does not protect a region whose
/// last process ran one subprocess: one byte damaged at rest (here a live block's header,
/// which the allocation paths follow) is opened as if healthy. Wanted: a leave that clears
/// (or ignores) the slots of dead processes before it decides whether it is the last.
/// The control (no fork) is `persist_unclean`'s RED-18 test; before RED-32's fix (main
/// e5d3c7d) the child claimed no slot and the seal was written. Exact failure on main
/// fd19090: `a region left by a process that ran a subprocess (fork + exec /bin/true) with
/// a damaged block header: opened (the state seal was not written)`.
#[test]
fn a_region_left_by_a_process_that_ran_a_subprocess_is_sealed() {
    let _serial = serial();
    for exec in [true, false] {
        let p = region_path(if exec { "forkexec" } else { "forkexit" });
        // In a driver process of its own: a fork by another test of this binary while the
        // region is open would give that test's child a slot in it too (a live process:
        // the region rightly stays unsealed while it runs).
        isolated(60, |report| {
            subprocess_then_leave_then_damage(&p, exec, report)
        });
        let _ = std::fs::remove_file(&p);
    }
}

/// [`a_region_left_by_a_process_that_ran_a_subprocess_is_sealed`] for one way of running a
/// subprocess (`exec`, or `_exit`), in the calling (driver) process.
fn subprocess_then_leave_then_damage(p: &Path, exec: bool, report: &Report) {
    let r =
        SharedCohort::<Life>::create(Place::File(p), CreateOptions::new(32 << 20)).expect("create");
    let q = r.malloc(200, Life::Short);
    assert!(!q.is_null());
    let header = r.offset_of(q).expect("in the region").get() & !((2 << 20) - 1);
    if subprocess(exec) != Ok(0) {
        report.fail("the subprocess failed");
    }
    r.leave().expect("leave");
    // One byte of the live block's header (its list links) damaged at rest.
    damage_at_rest(p, header + 40, |[b]| [b ^ 0x40]);
    // Opened in a child: a damaged state may send the opener anywhere.
    let opened = Report::new();
    let opener = in_child(20, || match open_region::<Life>(p) {
        Err(RegionError::StateDamaged { .. }) => {}
        Err(e) => opened.fail(&format!("refused otherwise: {e}")),
        Ok(_) => opened.fail("opened"),
    });
    let ended = wait(opener);
    if ended != Ok(0) {
        let how = if exec {
            "fork + exec /bin/true"
        } else {
            "fork + _exit"
        };
        report.fail(&format!(
            "a region left by a process that ran a subprocess ({how}) with a damaged block \
             header: {} ({ended:?}: the state seal was not written)",
            opened.message()
        ));
    }
}

/// Allocates one object of `size` bytes in class Short of `r` per word of `offs`, fills it
/// with its [`tag_of`] and stores its offset there.
fn allocate_tagged(r: &SharedCohort<Life>, offs: &[std::sync::atomic::AtomicU64], size: usize) {
    for w in offs {
        let q = r.malloc(size, Life::Short);
        assert!(!q.is_null());
        let off = r.offset_of(q).unwrap().get();
        // SAFETY: `size` bytes of ours.
        unsafe { q.write_bytes(tag_of(off), size) };
        w.store(off, Relaxed);
    }
}

/// Opens the region file `p` (`None`: refused) and counts the objects of
/// [`allocate_tagged`] at `offs` that the opener's new allocations of as many objects
/// overwrote.
fn overwritten_after_open(
    p: &Path,
    offs: &[std::sync::atomic::AtomicU64],
    size: usize,
) -> Option<usize> {
    let r = open_region::<Life>(p).ok()?;
    let offs = offs.iter().map(|w| w.load(Relaxed));
    Some(overwritten_by_new_allocations(
        &r,
        Life::Short,
        offs.len(),
        size,
        offs,
    ))
}

/// RED-42 (every build; owner: lead, persist/attach): a backup of a region file taken while
/// a process has it open holds pages of different moments (`cp` reads the header and
/// state first, the blocks later). At its own path such a copy is refused (its attach
/// table names another file). Restored over the region's own file, as `cp backup region`
/// does (the same inode: `cp` truncates and writes the existing file), it names the right
/// device and inode, its seals agree (no open came between the reads), and its attached
/// slot is a process that has exited since: it is taken for a region whose process was
/// killed, and opened. Its state does not know the blocks carved after the header was
/// read, and hands them out again over live objects, silently (RED-16 through a restore).
/// Built here as `cp` reads: the header and state while the process has the region open,
/// the blocks after it allocated more and left. Wanted: a restored copy refused (the seals
/// or the table could carry something a restore in place cannot fake, e.g. the file's
/// change time or a per-attach random nonce kept also in the blocks' seal page). Exact
/// failure: `a backup taken while the region was open, restored over its file, opened:
/// the opener's allocations overwrote 20000 of the 20000 objects allocated after the
/// backup's header was read`.
#[test]
fn a_backup_taken_while_open_and_restored_in_place_is_refused() {
    let _serial = serial();
    backup_restored_in_place("restored", false);
}

/// RED-44 (every build; owner: lead, persist/attach): RED-42 when the process that had the
/// region open while the backup was read is killed instead of leaving. No leave bumps
/// `GEN`, so the restored backup's seals agree; its slot names a dead process, so it is
/// taken for a region whose process was killed, and opened. But the documentation says a
/// killed process's live allocations stay allocated ("any process may free it"): the
/// backup's state, read before the process allocated them, hands them out again. Wanted:
/// a restored region whose state does not describe its blocks refused (or repaired) at
/// open, e.g. a unit free in the state whose first page holds a block header written
/// after the state's generation. Exact failure: `a backup taken while the region was open
/// (its process killed), restored over its file, opened: the opener's allocations
/// overwrote 20000 of the 20000 objects allocated after the backup's header was read`.
#[test]
fn a_backup_taken_while_open_restored_after_its_process_was_killed_is_refused() {
    let _serial = serial();
    backup_restored_in_place("restored-killed", true);
}

/// RED-44's sibling through the root slots (session 10; fails without the marks of a
/// root's store): the roots are in the header page, read first. A process that has the
/// region open publishes a new structure and frees the old one between the backup's two
/// reads, with only fast-path allocations and frees (no slow path, no pool lock), and is
/// killed. Restored in place, the backup's root names the freed object. Exact failure
/// before: `a backup read across a root's store, restored in place, opened: its root names
/// 0x... (freed after the backup's header was read), not 0x...`.
#[test]
fn a_backup_read_across_a_root_store_restored_in_place_is_refused() {
    let _serial = serial();
    let p = region_path("root");
    isolated(120, |report| {
        created_and_left::<Life>(&p, 32 << 20);
        // [ready, backed up, done, the old root, the new root]
        let words = shared_words(5);
        let holder = in_child_reporting(60, report, || {
            let r = open_region::<Life>(&p).expect("open");
            // A current block of the class with room: what follows takes no slow path.
            let warm: Vec<_> = (0..4).map(|_| r.malloc(64, Life::Long)).collect();
            let old = r.new_in([1u64; 8], Life::Long).expect("old");
            r.set_root(0, Some(old));
            words[3].store(old.get(), Relaxed);
            words[0].store(1, Relaxed);
            while words[1].load(Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let new = r.new_in([2u64; 8], Life::Long).expect("new");
            r.set_root(0, Some(new));
            // SAFETY: `old` was allocated above in Long and nothing refers to it now.
            unsafe { r.free_in(old, Life::Long) };
            words[4].store(new.get(), Relaxed);
            drop(warm);
            words[2].store(1, Relaxed);
            loop {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let first = read_then_kill(&p, words, holder, report);
        restore_in_place(&p, &first);
        let opener = in_child_reporting(60, report, || {
            let Ok(r) = open_region::<Life>(&p) else {
                return; // refused: fine
            };
            let root = r.root::<[u64; 8]>(0).map_or(0, Off::get);
            let (old, new) = (words[3].load(Relaxed), words[4].load(Relaxed));
            assert_eq!(
                root, new,
                "a backup read across a root's store, restored in place, opened: its root \
                 names {root:#x} (the old one, freed after the backup's header was read, is \
                 {old:#x}), not {new:#x}"
            );
        });
        wait_ok(opener, report, "the restored file's opener");
    });
    let _ = std::fs::remove_file(&p);
}

/// Completes a backup of the region file `p` whose header and state were read as `first`
/// (everything before the blocks) with the file's blocks as they are now, as `cp` reads a
/// file, and restores it over the region's own file, as `cp backup region` writes it (the
/// same inode).
fn restore_in_place(p: &Path, first: &[u8]) {
    // The blocks' offset: word 12 of the header.
    let blocks = u64::from_le_bytes(first[12 * 8..13 * 8].try_into().unwrap()) as usize;
    restore_over(p, first, blocks);
}

/// A backup of a region file read as `cp` reads it, the header and state while a process
/// has the region open, the blocks after that process allocated `N` more objects and
/// left (or was `killed`); restored over the region's own file (the same inode), it is
/// refused at open, or keeps those objects allocated.
fn backup_restored_in_place(tag: &str, killed: bool) {
    const N: usize = 20_000;
    const SIZE: usize = 1000;
    let p = region_path(tag);
    isolated(120, |report| {
        created_and_left::<Life>(&p, 128 << 20);
        let words = shared_words(3);
        let offs = shared_words(N);
        let holder = in_child_reporting(60, report, || {
            let r = open_region::<Life>(&p).expect("open");
            for _ in 0..1000 {
                assert!(!r.malloc(64, Life::Long).is_null());
            }
            words[0].store(1, Relaxed);
            while words[1].load(Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            allocate_tagged(&r, offs, SIZE);
            if killed {
                words[2].store(1, Relaxed);
                loop {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            r.leave().expect("leave");
        });
        while words[0].load(Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The backup reads the header and the state while the holder has the region open...
        let first = std::fs::read(&p).expect("read");
        words[1].store(1, Relaxed);
        if killed {
            until(&words[2], 0, holder, report, "the holder");
            kill9(holder);
        } else {
            wait_ok(holder, report, "the holder");
        }
        // ...and the blocks after it allocated more and left (or was killed).
        restore_in_place(&p, &first);
        let opener = in_child_reporting(60, report, || {
            let Some(overwritten) = overwritten_after_open(&p, offs, SIZE) else {
                return; // refused: fine
            };
            let how = if killed { " (its process killed)" } else { "" };
            assert_eq!(
                overwritten, 0,
                "a backup taken while the region was open{how}, restored over its file, \
                 opened: the opener's allocations overwrote {overwritten} of the {N} objects \
                 allocated after the backup's header was read"
            );
        });
        wait_ok(opener, report, "the restored file's opener");
    });
    let _ = std::fs::remove_file(&p);
}

/// RED-43 (every build; owner: lead, persist/attach; a regression of RED-35's fix 7201260):
/// an opener that takes the attach lock over from a dead holder no longer refuses seals
/// apart from `GEN`, trusting the boot and file checks to tell a copy "because the dead
/// holder had claimed its slot". A leaving process holds the lock with its slot already
/// freed (while it hashes the state for the seal, milliseconds), and its seal's generation
/// not yet written. A backup whose header page is read in that window (the lock names the
/// leaver, no slot held, `SEAL_GEN` older than `GEN`) and whose last pages are read after
/// another process opened and worked in the region has seals apart: refused before the
/// fix, accepted now at any path (no slot held: no boot or file check; an old seal: no
/// state check), and its state hands the later blocks out again. Built here as such a
/// backup reads (the window's two header words set as the leaver had them, its process
/// gone since). Exact failure: `a backup whose header was read while a process was
/// leaving opened: the opener's allocations overwrote 20000 of the 20000 objects
/// allocated after the header was read`.
#[test]
fn a_backup_read_while_a_process_was_leaving_is_refused() {
    let _serial = serial();
    const N: usize = 20_000;
    const SIZE: usize = 1000;
    const LOCK_AT: usize = 2048 + 4 * 8;
    const SEAL_GEN_AT: usize = 2048 + 5 * 8;
    let (p, copy) = (region_path("leaving"), region_path("leaving-copy"));
    isolated(120, |report| {
        created_and_left::<Life>(&p, 128 << 20);
        let offs = shared_words(N);
        // The leaver of the window: a process that had the region open and left it.
        let leaver = in_child_reporting(60, report, || {
            let r = open_region::<Life>(&p).expect("open");
            for _ in 0..1000 {
                assert!(!r.malloc(64, Life::Long).is_null());
            }
            r.leave().expect("leave");
        });
        wait_ok(leaver, report, "the leaver");
        // The backup's first pages, as read while the leaver held the lock (its slot freed,
        // its seal's generation not yet stored): the lock names it, SEAL_GEN is older.
        let mut first = std::fs::read(&p).expect("read");
        let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let gen = word(&first, GEN_AT as usize);
        first[LOCK_AT..LOCK_AT + 8].copy_from_slice(&((leaver as u64) << 42).to_le_bytes());
        first[SEAL_GEN_AT..SEAL_GEN_AT + 8].copy_from_slice(&(gen - 1).to_le_bytes());
        // Another process opens, allocates in new blocks and leaves; the backup's last
        // pages are read after.
        let worker = in_child_reporting(60, report, || {
            let r = open_region::<Life>(&p).expect("open");
            allocate_tagged(&r, offs, SIZE);
            r.leave().expect("leave");
        });
        wait_ok(worker, report, "the worker");
        let mut backup = std::fs::read(&p).expect("read");
        let blocks = word(&backup, 12 * 8) as usize;
        backup[..blocks].copy_from_slice(&first[..blocks]);
        std::fs::write(&copy, &backup).expect("write the backup");
        let opener = in_child_reporting(60, report, || {
            let Some(overwritten) = overwritten_after_open(&copy, offs, SIZE) else {
                return; // refused: fine
            };
            assert_eq!(
                overwritten, 0,
                "a backup whose header was read while a process was leaving opened: the \
                 opener's allocations overwrote {overwritten} of the {N} objects allocated \
                 after the header was read"
            );
        });
        wait_ok(opener, report, "the backup's opener");
    });
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_file(&copy);
}
