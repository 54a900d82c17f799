//! Red-team attack (session 19) on `Pool::check_after_fork` (RED-81's fix): a fork child
//! probes a caller-memory region's *state page* (`mincore`, then the layout word) to tell
//! whether it got the region; a region whose blocks (not its header and state) were
//! advised `MADV_DONTFORK` or `MADV_WIPEONFORK` (an RDMA library advises the range it
//! registers: the objects' part of a buffer, one of several registrations, a range grown
//! later) passes the probe, and the child goes on in memory it does not have (a fault) or
//! that reads zero under a state that says otherwise.

mod red_team_common;

use cohort::{Cohort, RegionOptions};
use red_team_common::{aligned_anonymous, child_with_stderr};

cohort::lifetime_classes! {
    enum Life { Short }
}

const CAP: usize = 16 << 20;
const UNIT: usize = 2 << 20;

/// A `format_in` region of `CAP` bytes in fresh anonymous memory (`shared` or private)
/// holding one live 64-byte object, whose memory from that object's block to its end is
/// advised `advice`: (region, object).
fn partly_advised(advice: libc::c_int, shared: bool) -> (Cohort<Life>, *mut u8) {
    let f = Cohort::<Life>::footprint(CAP).expect("footprint");
    let mem = aligned_anonymous(f.bytes, f.align, shared);
    // SAFETY: fresh memory of `f.bytes`, aligned, this region's for the rest of the process.
    let region = unsafe { Cohort::<Life>::format_in(mem, f.bytes, &RegionOptions::new(CAP)) }
        .expect("format_in");
    let p = region.malloc(64, Life::Short);
    assert!(!p.is_null());
    let block = (p as usize) & !(UNIT - 1);
    let end = mem as usize + f.bytes;
    assert!(block > mem as usize, "the state comes before the blocks");
    // SAFETY: our mapping; the advice changes what a fork child gets, not its bytes.
    assert_eq!(
        unsafe { libc::madvise(block as *mut libc::c_void, end - block, advice) },
        0
    );
    (region, p)
}

/// A call of the child: the region and the parent's object.
type Call = fn(&Cohort<Life>, *mut u8);

/// The child's calls, each in a child of its own: what a child of a process with the
/// region does with it (its own objects; the parent's object, freed).
fn calls() -> Vec<(&'static str, Call)> {
    vec![
        ("malloc and free", |r, _| {
            let q = r.malloc(64, Life::Short);
            assert!(!q.is_null());
            // SAFETY: allocated above with this size and class.
            unsafe { r.free(q, 64, Life::Short) };
        }),
        // SAFETY: the parent's live object, the child's copy of it, freed once.
        ("free of the parent's object", |r, p| unsafe {
            r.free(p, 64, Life::Short)
        }),
        ("verify", |r, _| {
            // SAFETY: the child's only thread.
            if let Err(e) = unsafe { r.verify() } {
                panic!("verify: {e}");
            }
        }),
    ]
}

/// RED-92: on main 97872eb each call in the child of a region whose blocks (only) it did
/// not get faults (SIGSEGV) for `MADV_DONTFORK`, private or shared memory; for
/// `MADV_WIPEONFORK` see the failures listed. Expected: the region is lost to the child
/// (each call aborts naming it, as for a region advised whole), or works.
#[test]
fn a_child_without_the_regions_blocks_is_stopped_with_a_message() {
    let mut failed = Vec::new();
    for (advice, shared) in [
        (libc::MADV_DONTFORK, false),
        (libc::MADV_DONTFORK, true),
        (libc::MADV_WIPEONFORK, false),
    ] {
        for (name, call) in calls() {
            let (region, p) = partly_advised(advice, shared);
            let (ended, stderr) = child_with_stderr(|| call(&region, p));
            let named = ended == Err(libc::SIGABRT) && stderr.contains("is not in this process");
            if ended != Ok(0) && !named {
                let said = stderr.lines().next().unwrap_or("");
                failed.push(format!(
                    "advice {advice}, shared {shared}, {name}: {ended:?} {said}"
                ));
            }
            core::mem::forget(region);
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
